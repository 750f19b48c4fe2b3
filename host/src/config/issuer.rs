//! `[[auth.oidc]]` issuer settings and their value rules.
//!
//! The rules here need nothing but the values (URLs, audiences, algorithms,
//! leeway, lifetime): the loader checks them once, with every other problem
//! of the file. What needs the outside world — reading `ca_file` and
//! `jwks_file`, building the issuer's HTTP client — is the verifier's, done
//! once when it turns these settings into a running issuer
//! (`auth::oidc::OidcVerifier::validate`).

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;

/// Accepted clock skew between the issuer and us when checking `exp`, `nbf`
/// and `iat`. A minute covers ordinary NTP drift; more widens the window in
/// which an expired token still works.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// A leeway above this is refused: it would keep expired tokens usable for
/// longer than most tokens live (GitHub's live 5 minutes, Kubernetes' 1 hour).
pub const MAX_LEEWAY: Duration = Duration::from_secs(600);

/// The asymmetric algorithms Gantry verifies, by their JOSE names. `none`
/// and `HS*` are not in this list, so neither a configuration nor a token
/// header can ever select them: HMAC "verification" with an issuer's public
/// key as the secret is impossible by construction. A list of what is
/// allowed, not of what is not: `Algorithm` is non-exhaustive, and an
/// algorithm added upstream must stay refused.
const ASYMMETRIC: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Allowed algorithms when the configuration names none: every asymmetric
/// algorithm Gantry verifies.
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    ASYMMETRIC[0].1,
    ASYMMETRIC[1].1,
    ASYMMETRIC[2].1,
    ASYMMETRIC[3].1,
    ASYMMETRIC[4].1,
    ASYMMETRIC[5].1,
    ASYMMETRIC[6].1,
    ASYMMETRIC[7].1,
    ASYMMETRIC[8].1,
];

/// The asymmetric algorithm named `name` (exactly, case-sensitively).
pub fn asymmetric_algorithm(name: &str) -> Option<Algorithm> {
    ASYMMETRIC
        .iter()
        .find(|(known, _)| *known == name)
        .map(|&(_, alg)| alg)
}

/// True for the algorithms [`asymmetric_algorithm`] can return.
pub fn is_asymmetric(alg: Algorithm) -> bool {
    ASYMMETRIC.iter().any(|&(_, known)| known == alg)
}

/// One trusted OIDC issuer, as configured.
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
    /// Allow-list; never HS* (see [`IssuerConfig::problems`]).
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    /// When set, `exp - iat` (or `exp - nbf` without `iat`) must not exceed it.
    pub max_token_lifetime: Option<Duration>,
    /// Discovery and JWKS may be fetched from private addresses although the
    /// issuer's URL does not name one (an in-cluster issuer behind a private
    /// DNS name). Link-local and metadata addresses stay unreachable.
    pub allow_private_network: bool,
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
            allow_private_network: false,
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

    /// Every value problem of this issuer: a non-https issuer or discovery
    /// URL (plain http only on loopback), no or empty audiences, no or
    /// symmetric algorithms, too much leeway, a zero lifetime cap, and
    /// settings that exclude each other. Reads nothing.
    pub fn problems(&self) -> Vec<IssuerProblem> {
        let iss = self.issuer.as_str();
        let mut out = Vec::new();
        let mut problem =
            |field: &str, reason: String| out.push(IssuerProblem::new(iss, field, reason));
        if let Err(why) = check_url(iss) {
            problem("issuer", why.to_string());
        }
        if self.audiences.is_empty() {
            problem("audiences", "must list at least one audience".into());
        }
        if self.audiences.iter().any(String::is_empty) {
            problem("audiences", "an audience is the empty string".into());
        }
        if self.algorithms.is_empty() {
            problem("algorithms", "must list at least one algorithm".into());
        }
        for alg in self.algorithms.iter().filter(|a| !is_asymmetric(**a)) {
            problem(
                "algorithms",
                format!(
                    "{alg:?} is not allowed: only asymmetric algorithms (RS*, PS*, ES256, ES384, EdDSA)"
                ),
            );
        }
        if self.leeway > MAX_LEEWAY {
            problem(
                "leeway_seconds",
                format!(
                    "{} s is more than the maximum {} s",
                    self.leeway.as_secs(),
                    MAX_LEEWAY.as_secs()
                ),
            );
        }
        if self.max_token_lifetime.is_some_and(|d| d.as_secs() == 0) {
            problem(
                "max_token_lifetime_seconds",
                "must be at least 1 second".into(),
            );
        }
        if let Some(url) = &self.discovery_url
            && let Err(why) = check_url(url)
        {
            problem("discovery_url", why.to_string());
        }
        if self.jwks_file.is_some() {
            if self.discovery_url.is_some() {
                problem(
                    "discovery_url",
                    "cannot be combined with jwks_file (a static JWKS needs no discovery)".into(),
                );
            }
            if self.ca_file.is_some() {
                problem(
                    "ca_file",
                    "cannot be combined with jwks_file (a static JWKS needs no HTTPS)".into(),
                );
            }
        }
        out
    }
}

/// Every value problem of a list of issuers: each one's
/// [`IssuerConfig::problems`], and an issuer configured more than once.
pub fn problems_of_all(issuers: &[IssuerConfig]) -> Vec<IssuerProblem> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for cfg in issuers {
        if !seen.insert(cfg.issuer.as_str()) {
            out.push(IssuerProblem::new(
                &cfg.issuer,
                "issuer",
                "configured more than once",
            ));
        }
        out.extend(cfg.problems());
    }
    out
}

/// One problem in one issuer's configuration. `field` uses the names of the
/// TOML configuration (`issuer`, `audiences`, `algorithms`, `discovery_url`,
/// `ca_file`, `jwks_file`, `leeway_seconds`, `max_token_lifetime_seconds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerProblem {
    pub issuer: String,
    pub field: String,
    pub reason: String,
}

impl IssuerProblem {
    pub fn new(issuer: &str, field: &str, reason: impl Into<String>) -> Self {
        IssuerProblem {
            issuer: issuer.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for IssuerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OIDC issuer {:?}: {}: {}",
            self.issuer, self.field, self.reason
        )
    }
}

impl std::error::Error for IssuerProblem {}

/// Why a URL cannot be an issuer's (or a key set's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not a URL: {1}")]
    NotAUrl(String, String),
    #[error("{0:?} must not have a query or fragment")]
    QueryOrFragment(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{0:?} must not contain credentials")]
    Credentials(String),
    #[error("{0:?} must use https (plain http only on 127.0.0.1, [::1] or localhost)")]
    PlainHttp(String),
    #[error("{0:?}: scheme {1:?} is not https")]
    Scheme(String, String),
}

/// An issuer, discovery or JWKS URL must be `https://`, except on loopback
/// where plain `http://` is accepted for tests and sidecars.
pub fn check_url(raw: &str) -> Result<(), UrlError> {
    let url = url::Url::parse(raw).map_err(|e| UrlError::NotAUrl(raw.into(), e.to_string()))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(UrlError::QueryOrFragment(raw.into()));
    }
    if url.host().is_none() {
        return Err(UrlError::NoHost(raw.into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials(raw.into()));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(UrlError::PlainHttp(raw.into())),
        other => Err(UrlError::Scheme(raw.into(), other.into())),
    }
}

/// Whether a URL's host is loopback (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
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
            "https://127.0.0.1",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://issuer.example",
            "http://10.0.0.1",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.com",
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
    fn only_asymmetric_algorithms_have_names() {
        for name in [
            "none", "None", "HS256", "HS384", "HS512", "rs256", "", "ES512",
        ] {
            assert_eq!(asymmetric_algorithm(name), None, "{name}");
        }
        for name in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ] {
            let alg = asymmetric_algorithm(name).expect(name);
            assert!(is_asymmetric(alg));
            assert!(DEFAULT_ALGORITHMS.contains(&alg), "{name} is not a default");
        }
        assert_eq!(DEFAULT_ALGORITHMS.len(), ASYMMETRIC.len());
    }

    #[test]
    fn value_problems_name_their_field() {
        let mut cfg = IssuerConfig::new("http://issuer.example", vec![]);
        cfg.algorithms = vec![Algorithm::HS256];
        cfg.jwks_file = Some("/k.json".into());
        cfg.discovery_url = Some("https://issuer.example/d".into());
        let fields: Vec<String> = cfg.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["issuer", "audiences", "algorithms", "discovery_url"],
            "{fields:?}"
        );
        let twice = [
            IssuerConfig::new("https://a.example", vec!["x".into()]),
            IssuerConfig::new("https://a.example", vec!["x".into()]),
        ];
        let all = problems_of_all(&twice);
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].reason.contains("more than once"));
    }
}
