//! Issuer configuration and its validation. Validation reads the CA and JWKS
//! files (small, once, at configuration time) and builds each issuer's HTTP
//! client; it fetches nothing and spawns nothing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::error::IssuerProblem;
use super::jwks::{self, ParsedJwks};
use super::token::is_asymmetric;

/// Accepted clock skew between the issuer and us when checking `exp`, `nbf`
/// and `iat`. A minute covers ordinary NTP drift; more widens the window in
/// which an expired token still works.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// A leeway above this is refused: it would keep expired tokens usable for
/// longer than most tokens live (GitHub's live 5 minutes, Kubernetes' 1 hour).
pub const MAX_LEEWAY: Duration = Duration::from_secs(600);

/// Allowed algorithms when the configuration names none: every asymmetric
/// algorithm we implement. HMAC and `none` cannot be listed at all.
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Largest CA bundle read from `ca_file`.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// One trusted OIDC issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    /// The exact `iss` value, e.g. `https://token.actions.githubusercontent.com`.
    pub issuer: String,
    /// Non-empty; the token's `aud` must contain one of them.
    pub audiences: Vec<String>,
    /// Where discovery is served; default `<issuer>/.well-known/openid-configuration`.
    pub discovery_url: Option<String>,
    /// Extra PEM CA certificate(s) trusted for this issuer's HTTPS.
    pub ca_file: Option<PathBuf>,
    /// A static JWKS (air-gapped clusters): no network at all for this issuer.
    pub jwks_file: Option<PathBuf>,
    /// Allow-list; never HS* (refused by [`super::OidcVerifier::new`]).
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    /// When set, `exp - iat` (or `exp - nbf` without `iat`) must not exceed it.
    pub max_token_lifetime: Option<Duration>,
}

impl IssuerConfig {
    /// An issuer with every optional field at its default.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            audiences,
            discovery_url: None,
            ca_file: None,
            jwks_file: None,
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            leeway: DEFAULT_LEEWAY,
            max_token_lifetime: None,
        }
    }

    /// The discovery URL in effect.
    pub fn effective_discovery_url(&self) -> String {
        match &self.discovery_url {
            Some(url) => url.clone(),
            None => format!(
                "{}/.well-known/openid-configuration",
                self.issuer.trim_end_matches('/')
            ),
        }
    }
}

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
        client: reqwest::Client,
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

/// Every problem of one issuer's configuration (URLs, audiences,
/// algorithms, leeway, CA and JWKS files), without fetching anything: the
/// configuration loader reports these with its other problems.
pub(crate) fn problems_of(cfg: &IssuerConfig) -> Vec<IssuerProblem> {
    let mut problems = Vec::new();
    let _ = validate_one(cfg.clone(), &FetchOptions::default(), &mut problems);
    problems
}

/// Validates every issuer, collecting every problem.
pub(super) fn validate(
    issuers: Vec<IssuerConfig>,
    opts: &FetchOptions,
) -> Result<Vec<ValidIssuer>, Vec<IssuerProblem>> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut valid = Vec::new();
    for cfg in issuers {
        let before = problems.len();
        if !seen.insert(cfg.issuer.clone()) {
            problems.push(IssuerProblem::new(
                &cfg.issuer,
                "issuer",
                "configured more than once",
            ));
        }
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

    if let Err(why) = check_url(iss) {
        problem("issuer", why);
    }
    if cfg.audiences.is_empty() {
        problem("audiences", "must list at least one audience".into());
    }
    if cfg.audiences.iter().any(String::is_empty) {
        problem("audiences", "an audience is the empty string".into());
    }
    if cfg.algorithms.is_empty() {
        problem("algorithms", "must list at least one algorithm".into());
    }
    for alg in cfg.algorithms.iter().filter(|a| !is_asymmetric(**a)) {
        problem(
            "algorithms",
            format!(
                "{alg:?} is not allowed: only asymmetric algorithms (RS*, PS*, ES256, ES384, EdDSA)"
            ),
        );
    }
    if cfg.leeway > MAX_LEEWAY {
        problem(
            "leeway_seconds",
            format!(
                "{} s is more than the maximum {} s",
                cfg.leeway.as_secs(),
                MAX_LEEWAY.as_secs()
            ),
        );
    }
    if cfg.max_token_lifetime.is_some_and(|d| d.as_secs() == 0) {
        problem(
            "max_token_lifetime_seconds",
            "must be at least 1 second".into(),
        );
    }
    if let Some(url) = &cfg.discovery_url
        && let Err(why) = check_url(url)
    {
        problem("discovery_url", why);
    }

    let source = match &cfg.jwks_file {
        Some(path) => {
            if cfg.discovery_url.is_some() {
                problem(
                    "discovery_url",
                    "cannot be combined with jwks_file (a static JWKS needs no discovery)".into(),
                );
            }
            if cfg.ca_file.is_some() {
                problem(
                    "ca_file",
                    "cannot be combined with jwks_file (a static JWKS needs no HTTPS)".into(),
                );
            }
            match load_jwks_file(path, &cfg.algorithms, opts.max_response_bytes) {
                Ok(initial) => Some(SourceConfig::File {
                    path: path.clone(),
                    initial,
                }),
                Err(why) => {
                    problem("jwks_file", why);
                    None
                }
            }
        }
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
            match super::fetch::build_client(roots, opts) {
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

/// An issuer or discovery URL must be `https://`, except on loopback where
/// plain `http://` is accepted for tests and sidecars.
pub(crate) fn check_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{raw:?} must not have a query or fragment"));
    }
    if url.host().is_none() {
        return Err(format!("{raw:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{raw:?} must not contain credentials"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(format!(
            "{raw:?} must use https (plain http only on 127.0.0.1, [::1] or localhost)"
        )),
        other => Err(format!("{raw:?}: scheme {other:?} is not https")),
    }
}

pub(crate) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
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
    fn url_rules() {
        for ok in [
            "https://token.actions.githubusercontent.com",
            "https://kubernetes.default.svc.cluster.local",
            "https://issuer.example/tenant/v2.0",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:9000/realms/x",
            "http://[::1]:80",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://issuer.example",
            "http://10.0.0.1",
            "http://localhost.evil.example",
            "ftp://issuer.example",
            "issuer.example",
            "",
            "https://issuer.example?x=1",
            "https://issuer.example#f",
            "https://user:pw@issuer.example",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn discovery_default_has_one_slash() {
        let cfg = IssuerConfig::new("https://i.example/", vec!["a".into()]);
        assert_eq!(
            cfg.effective_discovery_url(),
            "https://i.example/.well-known/openid-configuration"
        );
    }

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
