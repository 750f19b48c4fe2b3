//! From configured issuers to running ones: reads the CA and JWKS files
//! (small, once, at configuration time) and builds each issuer's HTTP
//! client; fetches nothing and spawns nothing. The settings and their value
//! rules are `config::issuer`'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::jwks::{self, ParsedJwks};
use crate::config::issuer::{IssuerConfig, IssuerProblem};

/// Largest CA bundle read from `ca_file`.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// How keys are fetched. Tests shorten the durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Whole-request timeout (connect, headers and body) for discovery and JWKS.
    pub timeout: Duration,
    /// Largest discovery document or JWKS accepted (also for `jwks_file`).
    pub max_response_bytes: usize,
    /// Interval between background refreshes once keys are loaded.
    pub refresh_interval: Duration,
    /// First retry delay after a failed fetch; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// At most one JWKS fetch per issuer per this interval is caused by
    /// tokens with an unknown `kid` (concurrent misses share one fetch).
    pub kid_miss_cooldown: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
            refresh_interval: Duration::from_secs(3600),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            kid_miss_cooldown: Duration::from_secs(30),
        }
    }
}

/// Where an issuer's keys come from, once validated.
pub(crate) enum SourceConfig {
    Http {
        discovery_url: String,
        client: super::fetch::Fetcher,
    },
    File {
        path: PathBuf,
        initial: ParsedJwks,
    },
}

/// One issuer's configuration, checked: what [`super::OidcVerifier::assemble`]
/// builds from.
pub struct ValidIssuer {
    /// As configured, to tell an unchanged issuer at a reload.
    pub(crate) config: IssuerConfig,
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) leeway: u64,
    pub(crate) max_token_lifetime: Option<u64>,
    pub(crate) source: SourceConfig,
}

/// Turns issuers into what the verifier runs, collecting every problem:
/// reads each `ca_file` and `jwks_file` and builds each HTTP client. The
/// value rules ([`IssuerConfig::problems`]) are the loader's and are not
/// checked again here; [`super::OidcVerifier::new`], which takes issuers
/// that did not come through the loader, checks them first.
pub(super) fn validate(
    issuers: Vec<IssuerConfig>,
    opts: &FetchOptions,
) -> Result<Vec<ValidIssuer>, Vec<IssuerProblem>> {
    let mut problems = Vec::new();
    let mut valid = Vec::new();
    for cfg in issuers {
        let before = problems.len();
        if let Some(v) = validate_one(cfg, opts, &mut problems)
            && problems.len() == before
        {
            valid.push(v);
        }
    }
    if problems.is_empty() {
        Ok(valid)
    } else {
        Err(problems)
    }
}

fn validate_one(
    cfg: IssuerConfig,
    opts: &FetchOptions,
    problems: &mut Vec<IssuerProblem>,
) -> Option<ValidIssuer> {
    let iss = cfg.issuer.as_str();
    let mut problem =
        |field: &str, reason: String| problems.push(IssuerProblem::new(iss, field, reason));

    let source = match &cfg.jwks_file {
        Some(path) => match load_jwks_file(path, &cfg.algorithms, opts.max_response_bytes) {
            Ok(initial) => Some(SourceConfig::File {
                path: path.clone(),
                initial,
            }),
            Err(why) => {
                problem("jwks_file", why);
                None
            }
        },
        None => {
            let roots = match &cfg.ca_file {
                Some(path) => match load_ca_file(path) {
                    Ok(certs) => certs,
                    Err(why) => {
                        problem("ca_file", why);
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            match super::fetch::build_client(roots, opts, super::reach::Reach::of(&cfg)) {
                Ok(client) => Some(SourceConfig::Http {
                    discovery_url: cfg.effective_discovery_url(),
                    client,
                }),
                Err(why) => {
                    problem("ca_file", why);
                    None
                }
            }
        }
    };

    let source = source?;
    Some(ValidIssuer {
        config: cfg.clone(),
        issuer: cfg.issuer,
        audiences: cfg.audiences,
        algorithms: cfg.algorithms,
        leeway: cfg.leeway.as_secs(),
        max_token_lifetime: cfg.max_token_lifetime.map(|d| d.as_secs()),
        source,
    })
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{}: larger than {max} bytes", path.display()));
    }
    Ok(bytes)
}

/// Reads and parses a static JWKS file.
pub(crate) fn load_jwks_file(
    path: &Path,
    allowed: &[Algorithm],
    max: usize,
) -> Result<ParsedJwks, String> {
    let bytes = read_bounded(path, max as u64)?;
    jwks::parse_jwks(&bytes, allowed).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads the PEM certificates of a CA bundle; each must parse as a trust anchor.
fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let bytes = read_bounded(path, MAX_CA_FILE_BYTES)?;
    let ders = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM: {e}", path.display()))?;
    if ders.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    let mut store = rustls::RootCertStore::empty();
    let mut certs = Vec::with_capacity(ders.len());
    for (i, der) in ders.into_iter().enumerate() {
        store.add(der.clone()).map_err(|e| {
            format!(
                "{}: certificate {i} is not a usable CA certificate: {e}",
                path.display()
            )
        })?;
        certs.push(
            reqwest::Certificate::from_der(&der)
                .map_err(|e| format!("{}: certificate {i}: {e}", path.display()))?,
        );
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").expect("write");
        assert!(
            load_ca_file(&empty)
                .expect_err("no cert")
                .contains("no PEM certificate")
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        assert!(load_ca_file(&garbage).is_err());
        assert!(load_ca_file(&dir.path().join("missing.pem")).is_err());
    }

    #[test]
    fn client_builds_without_a_runtime() {
        // Validation runs at configuration time, possibly before any runtime.
        let opts = FetchOptions::default();
        let issuers = vec![IssuerConfig::new("https://i.example", vec!["a".into()])];
        assert!(validate(issuers, &opts).is_ok());
    }
}
