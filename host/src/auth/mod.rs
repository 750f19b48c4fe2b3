//! Authentication and authorization.
//!
//! Authentication turns a request's credentials into a [`Caller`]: nobody
//! (anonymous), an htpasswd user, a workload whose OIDC token was verified
//! (`oidc`) and named by its issuer's claim policy (with the issuer's
//! prefixes enforced here, by the host), or the bearer of a token Gantry
//! minted itself (`token`). Authorization is separate: [`access`] decides
//! what a caller may do to a repository, and a Gantry token's scope is a
//! ceiling on top.
//!
//! Decisions for bearer tokens are cached by a SHA-256 of the token until
//! the token expires, so repeated requests with one token cost a lookup.
//! Raw tokens and passwords never reach a log: the audit event
//! (`target: "gantry::audit"`) carries a hash prefix instead.

pub mod access;
pub mod htpasswd;
pub mod oidc;
pub mod token;

mod cache;

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use self::access::{AccessControl, ActionSet};
use self::cache::DecisionCache;
use self::htpasswd::Htpasswd;
use self::token::{GantryToken, TokenService};
use crate::config::access::AccessControlConfig;
use crate::config::auth::AuthConfig;
use crate::oci::RepoName;
use crate::policy::{Decision, Identity, LoadedPolicy, PolicyEngine};

/// Who is making a request, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None`: anonymous. Shared, so a cached decision is cloned without
    /// copying names on the hot path.
    pub identity: Option<Arc<Identity>>,
    /// Set when the caller presented a Gantry token: its scope is a ceiling.
    pub token: Option<Arc<GantryToken>>,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            identity: None,
            token: None,
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }
}

/// What a request presented as credentials: its `Authorization` header
/// values, taken from HTTP by the API layer.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// No `Authorization` header: an anonymous caller.
    None,
    /// More than one: refused, never guessed between.
    Several,
    /// One header value, as sent.
    Header(&'a [u8]),
}

/// Why credentials were refused. The `Display` text is for the log; the
/// client is told [`AuthFailure::client_message`] only.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("more than one Authorization header")]
    MultipleHeaders,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("unsupported authorization scheme")]
    UnsupportedScheme,
    #[error("invalid username or password")]
    BadPassword,
    #[error("token of an issuer that is not configured: {0}")]
    UnknownIssuer(String),
    #[error("{0}")]
    InvalidToken(String),
    /// The issuer's keys could not be fetched: not the client's fault, and
    /// worth a retry.
    #[error("{0}")]
    IssuerUnavailable(String),
    #[error("claim policy of {issuer} denied the token: {reason}")]
    PolicyDenied { issuer: String, reason: String },
    #[error("claim policy of {issuer} failed: {reason}")]
    PolicyFailed { issuer: String, reason: String },
}

impl AuthFailure {
    /// What the client may learn: the class of the refusal, never the
    /// detail (which claims, which key, what the policy said).
    pub fn client_message(&self) -> &'static str {
        match self {
            AuthFailure::MultipleHeaders
            | AuthFailure::Malformed(_)
            | AuthFailure::UnsupportedScheme => "malformed credentials",
            AuthFailure::BadPassword => "invalid username or password",
            AuthFailure::UnknownIssuer(_) | AuthFailure::InvalidToken(_) => "invalid token",
            AuthFailure::IssuerUnavailable(_) => "token issuer unavailable, try again",
            AuthFailure::PolicyDenied { .. } => "token refused by the issuer's claim policy",
            AuthFailure::PolicyFailed { .. } => "claim policy failed, try again",
        }
    }

    /// The reason class, a bounded metric label.
    pub fn class(&self) -> &'static str {
        match self {
            AuthFailure::MultipleHeaders
            | AuthFailure::Malformed(_)
            | AuthFailure::UnsupportedScheme => "malformed",
            AuthFailure::BadPassword => "bad_password",
            AuthFailure::UnknownIssuer(_) => "unknown_issuer",
            AuthFailure::InvalidToken(_) => "invalid_token",
            AuthFailure::IssuerUnavailable(_) => "issuer_unavailable",
            AuthFailure::PolicyDenied { .. } => "policy_denied",
            AuthFailure::PolicyFailed { .. } => "policy_failed",
        }
    }
}

/// How one bearer token fared: the caller, the token's expiry and its
/// subject; or why it was refused (with the subject when it was known).
type Outcome = Result<(Caller, u64, Option<String>), (AuthFailure, Option<String>)>;

/// What auth attaches to each OIDC issuer of the verifier (which holds its
/// rules and keys): one value per issuer, found by one lookup.
struct IssuerRuntime {
    policy: LoadedPolicy,
    username_prefix: String,
    groups_prefix: String,
}

/// Everything authentication and authorization need, built once at start.
pub struct Auth {
    pub service: String,
    pub realm: String,
    ttl_seconds: u64,
    htpasswd: Option<Htpasswd>,
    tokens: TokenService,
    oidc: oidc::OidcVerifier<IssuerRuntime>,
    access: AccessControl,
    cache: DecisionCache,
}

/// The identity the registry uses for a policy's decision: the policy's
/// names behind its issuer's `username_prefix` and `groups_prefix`. The host
/// has the last word on names: the prefixes keep one tenant's policy from
/// minting another's. `gantry policy test --issuer` shows the same names.
pub fn apply_prefixes(
    username_prefix: &str,
    groups_prefix: &str,
    policy_identity: &Identity,
) -> Identity {
    Identity {
        username: format!("{username_prefix}{}", policy_identity.username),
        groups: policy_identity
            .groups
            .iter()
            .map(|g| format!("{groups_prefix}{g}"))
            .collect(),
    }
}

/// Seconds since the Unix epoch: the one clock of token checks.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first 16 hex digits of a SHA-256: enough to correlate log lines,
/// useless for replay.
fn fingerprint(key: &[u8; 32]) -> String {
    hex::encode(&key[..8])
}

/// Looks like a compact JWS (three base64url parts).
fn looks_like_jwt(s: &str) -> bool {
    s.len() > 16
        && s.split('.').count() == 3
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl Auth {
    /// Builds the runtime from config: opens the token key (generating it
    /// under `storage_root` when no key file is set), reads htpasswd,
    /// validates issuers and loads every issuer's claim policy (running its
    /// `init`). Returns every problem, each naming its config key.
    /// Issuers configured exactly as in `previous` (the authentication a
    /// reload replaces) share its key stores: their keys and refresh
    /// schedule carry over.
    pub async fn build(
        cfg: &AuthConfig,
        access: Option<AccessControlConfig>,
        storage_root: &Path,
        engine: &PolicyEngine,
        fetch: oidc::FetchOptions,
        previous: Option<&Auth>,
    ) -> Result<Auth, Vec<crate::config::Problem>> {
        use crate::config::Problem;
        let mut problems = Vec::new();
        let htpasswd = match &cfg.htpasswd_file {
            None => None,
            Some(path) => match Htpasswd::load(path) {
                Ok(h) => Some(h),
                Err(errs) => {
                    for e in errs {
                        problems.push(Problem {
                            path: "auth.htpasswd_file".into(),
                            reason: format!("{}: {e}", path.display()),
                        });
                    }
                    None
                }
            },
        };
        let (key_path, generate) = match &cfg.token.key_file {
            Some(p) => (p.clone(), false),
            None => (storage_root.join("auth").join("token-signing-key.p8"), true),
        };
        let tokens = match TokenService::open(cfg.realm(), cfg.service.clone(), &key_path, generate)
        {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(Problem {
                    path: "auth.token.key_file".into(),
                    reason: e.to_string(),
                });
                None
            }
        };
        let valid = match oidc::OidcVerifier::validate(
            cfg.oidc.iter().map(|e| e.verifier.clone()).collect(),
            &fetch,
        ) {
            Ok(v) => Some(v),
            Err(errs) => {
                for p in errs {
                    let index = cfg
                        .oidc
                        .iter()
                        .position(|e| e.verifier.issuer == p.issuer)
                        .unwrap_or(0);
                    problems.push(Problem {
                        path: format!("auth.oidc[{index}].{}", p.field),
                        reason: p.reason,
                    });
                }
                None
            }
        };
        let mut runtimes = Vec::with_capacity(cfg.oidc.len());
        for entry in &cfg.oidc {
            let owner = &entry.verifier.issuer;
            match engine
                .load(
                    owner,
                    &entry.policy.module,
                    &entry.policy.settings,
                    entry.policy.limits.clone(),
                )
                .await
            {
                Ok(policy) => runtimes.push(IssuerRuntime {
                    policy,
                    username_prefix: entry.username_prefix.clone(),
                    groups_prefix: entry.groups_prefix.clone(),
                }),
                Err(e) => problems.push(Problem {
                    path: format!("auth.oidc[{}].policy", entry.index),
                    reason: e.to_string(),
                }),
            }
        }
        let (Some(tokens), Some(valid), true) = (tokens, valid, problems.is_empty()) else {
            return Err(problems);
        };
        // Validation keeps configuration order, and every policy loaded: the
        // two lists pair up one to one.
        let oidc = oidc::OidcVerifier::assemble(
            valid.into_iter().zip(runtimes).collect(),
            fetch,
            previous.map(|p| &p.oidc),
        );
        Ok(Auth {
            service: cfg.service.clone(),
            realm: cfg.realm(),
            ttl_seconds: cfg.token.ttl_seconds,
            htpasswd,
            tokens,
            oidc,
            access: access.map_or_else(AccessControl::authenticated_only, AccessControl::new),
            cache: DecisionCache::default(),
        })
    }

    /// Sets the metrics known only at scrape time: cache entries, and per
    /// issuer its keys, refresh state and policy pool size.
    pub fn export_metrics(&self) {
        use crate::telemetry::metrics::{IssuerLabel, metrics};
        let m = metrics();
        m.cache_entries.set(self.cache.len() as i64);
        // Issuers removed by a reload disappear from the families.
        m.issuer_keys.clear();
        m.issuer_failures.clear();
        m.issuer_last_refresh.clear();
        m.policy_pool_size.clear();
        for s in self.oidc.status() {
            let label = IssuerLabel {
                issuer: s.issuer.clone(),
            };
            m.issuer_keys
                .get_or_create(&label)
                .set(s.keys_loaded as i64);
            m.issuer_failures
                .get_or_create(&label)
                .set(i64::from(s.consecutive_failures));
            if let Some(t) = s.last_success {
                m.issuer_last_refresh.get_or_create(&label).set(t as i64);
            }
        }
        for (issuer, rt) in self.oidc.attachments() {
            m.policy_pool_size
                .get_or_create(&IssuerLabel {
                    issuer: issuer.to_owned(),
                })
                .set(rt.policy.pool_size() as i64);
        }
    }

    /// Decisions held in the cache now (bounded: see `cache`).
    pub fn cached_decisions(&self) -> usize {
        self.cache.len()
    }

    /// Starts background discovery/JWKS fetching for every issuer.
    pub fn start(&self) {
        self.oidc.start();
    }

    /// What `caller` may do to `repo` now: access control, capped by the
    /// scope of a Gantry token.
    pub fn allowed(&self, caller: &Caller, repo: &RepoName) -> ActionSet {
        let set = self.granted(caller, repo);
        match &caller.token {
            Some(t) => set.intersect(t.ceiling(repo)),
            None => set,
        }
    }

    /// What access control grants `caller`'s identity on `repo`, whatever
    /// the scope of the token it came with: a request that a token's scope
    /// alone refuses can succeed with a token for a wider scope.
    pub fn granted(&self, caller: &Caller, repo: &RepoName) -> ActionSet {
        self.access.allowed(caller.identity(), repo)
    }

    /// Authenticates a request's credentials: the caller and, for a token,
    /// its expiry. No credentials is an anonymous caller, not an error.
    pub async fn authenticate(
        &self,
        credentials: Credentials<'_>,
    ) -> Result<(Caller, Option<u64>), AuthFailure> {
        let value = match credentials {
            Credentials::None => return Ok((Caller::anonymous(), None)),
            Credentials::Several => return Err(AuthFailure::MultipleHeaders),
            Credentials::Header(v) => v,
        };
        let value = std::str::from_utf8(value).map_err(|_| AuthFailure::Malformed("not ASCII"))?;
        let (scheme, rest) = value
            .split_once(' ')
            .ok_or(AuthFailure::Malformed("no scheme"))?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(rest)
                .await
                .map(|(caller, exp)| (caller, Some(exp)))
        } else if scheme.eq_ignore_ascii_case("basic") {
            self.basic(rest).await
        } else {
            Err(AuthFailure::UnsupportedScheme)
        }
    }

    /// Basic credentials: an htpasswd user, or any username with an OIDC
    /// token (or Gantry token) as the password. Returns the caller and, for
    /// tokens, their expiry.
    pub async fn basic(&self, encoded: &str) -> Result<(Caller, Option<u64>), AuthFailure> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| AuthFailure::Malformed("basic credentials are not base64"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| AuthFailure::Malformed("basic credentials are not UTF-8"))?;
        let (user, password) = text
            .split_once(':')
            .ok_or(AuthFailure::Malformed("basic credentials have no ':'"))?;
        if let Some(h) = &self.htpasswd
            && h.has_user(user)
        {
            let started = Instant::now();
            let ok = h.verify(user, password).await;
            audit_static(user, ok, started);
            return if ok {
                let identity = Identity {
                    username: user.to_string(),
                    groups: Vec::new(),
                };
                Ok((
                    Caller {
                        identity: Some(Arc::new(identity)),
                        token: None,
                    },
                    None,
                ))
            } else {
                Err(AuthFailure::BadPassword)
            };
        }
        if looks_like_jwt(password) {
            return self.bearer(password).await.map(|(c, exp)| (c, Some(exp)));
        }
        audit_static(user, false, Instant::now());
        Err(AuthFailure::BadPassword)
    }

    /// A bearer token: a Gantry token or an OIDC token. Returns the caller
    /// and the token's expiry.
    pub async fn bearer(&self, token: &str) -> Result<(Caller, u64), AuthFailure> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now();
        let metrics = crate::telemetry::metrics::metrics();
        if let Some((caller, exp)) = self.cache.get(&key, now) {
            metrics.cache_hits.inc();
            return Ok((caller, exp));
        }
        metrics.cache_misses.inc();
        // The audit names the token by a prefix of the hash keying the cache.
        let fingerprint = fingerprint(&key);
        let started = Instant::now();
        // The one parse of the token: `iss` routes it, and an OIDC token is
        // verified and handed to its policy from this same parse.
        let parsed = oidc::parse(token).and_then(|t| {
            let issuer = t.issuer()?.to_owned();
            Ok((t, issuer))
        });
        let (parsed, issuer) = parsed.map_err(|e| {
            let failure = AuthFailure::InvalidToken(e.to_string());
            audit_token(&Audit {
                method: "bearer",
                issuer: "",
                subject: None,
                fingerprint: &fingerprint,
                identity: None,
                reason: &failure.to_string(),
                class: failure.class(),
                started,
            });
            failure
        })?;
        let gantry = issuer == self.tokens.issuer();
        let outcome = if gantry {
            self.gantry_token(token)
        } else {
            self.oidc_token(parsed).await
        };
        let (caller, exp, subject, reason, class) = match outcome {
            Ok((caller, exp, subject)) => (Ok(caller), exp, subject, String::new(), "none"),
            Err((failure, subject)) => {
                let (reason, class) = (failure.to_string(), failure.class());
                (Err(failure), 0, subject, reason, class)
            }
        };
        audit_token(&Audit {
            method: if gantry { "gantry-token" } else { "oidc" },
            issuer: &issuer,
            subject: subject.as_deref(),
            fingerprint: &fingerprint,
            identity: caller.as_ref().ok().and_then(|c| c.identity()),
            reason: &reason,
            class,
            started,
        });
        let caller = caller?;
        self.cache.insert(key, caller.clone(), exp, now);
        Ok((caller, exp))
    }

    fn gantry_token(&self, token: &str) -> Outcome {
        let t = self
            .tokens
            .verify(token)
            .map_err(|e| (AuthFailure::InvalidToken(e.to_string()), None))?;
        let exp = t.expires_at;
        let subject = t.identity.as_ref().map(|i| i.username.clone());
        Ok((
            Caller {
                identity: t.identity.clone().map(Arc::new),
                token: Some(Arc::new(t)),
            },
            exp,
            subject,
        ))
    }

    async fn oidc_token(&self, token: oidc::UnverifiedToken<'_>) -> Outcome {
        let (verified, rt) = self.oidc.verify_parsed(token).await.map_err(|e| {
            let failure = match e {
                oidc::VerifyError::UnknownIssuer(_) => AuthFailure::UnknownIssuer(e.to_string()),
                oidc::VerifyError::KeysUnavailable { .. } => {
                    AuthFailure::IssuerUnavailable(e.to_string())
                }
                _ => AuthFailure::InvalidToken(e.to_string()),
            };
            (failure, None)
        })?;
        let subject = verified.subject.clone();
        match rt.policy.evaluate_json(&verified.claims_json).await {
            Ok(Decision::Allow(id)) => {
                let identity = apply_prefixes(&rt.username_prefix, &rt.groups_prefix, &id);
                Ok((
                    Caller {
                        identity: Some(Arc::new(identity)),
                        token: None,
                    },
                    verified.expires_at,
                    subject,
                ))
            }
            Ok(Decision::Deny(reason)) => Err((
                AuthFailure::PolicyDenied {
                    issuer: verified.issuer,
                    reason,
                },
                subject,
            )),
            Err(e) => Err((
                AuthFailure::PolicyFailed {
                    issuer: verified.issuer,
                    reason: e.to_string(),
                },
                subject,
            )),
        }
    }

    /// Mints a Gantry token (token endpoint).
    pub fn mint(
        &self,
        identity: Option<&Identity>,
        access: Vec<token::AccessEntry>,
        not_after: Option<u64>,
    ) -> Result<(String, u64, u64), token::TokenError> {
        self.tokens
            .mint(identity, access, self.ttl_seconds, not_after)
    }
}

/// One authentication decision, for the audit log.
struct Audit<'a> {
    method: &'static str,
    issuer: &'a str,
    subject: Option<&'a str>,
    fingerprint: &'a str,
    identity: Option<&'a Identity>,
    reason: &'a str,
    /// The reason class (`none` when allowed), the decision metric's label.
    class: &'static str,
    started: Instant,
}

/// Logs one token decision and counts it. The metric's issuer label is
/// bounded: `gantry` for Gantry's tokens, `unknown` for a token of no
/// configured issuer (or none at all), else the configured issuer.
fn audit_token(a: &Audit<'_>) {
    let label = match (a.method, a.class) {
        ("gantry-token", _) => "gantry",
        (_, "unknown_issuer") => "unknown",
        _ if a.issuer.is_empty() => "unknown",
        _ => a.issuer,
    };
    crate::telemetry::metrics::metrics().decision(label, a.reason.is_empty(), a.class);
    let latency_us = a.started.elapsed().as_micros() as u64;
    let (username, groups) = match a.identity {
        Some(id) => (id.username.as_str(), id.groups.join(",")),
        None => ("", String::new()),
    };
    let outcome = if a.reason.is_empty() { "allow" } else { "deny" };
    tracing::info!(
        target: "gantry::audit",
        method = a.method,
        issuer = a.issuer,
        sub = a.subject.unwrap_or(""),
        token_sha256 = a.fingerprint,
        username,
        groups = %groups,
        outcome,
        reason = a.reason,
        latency_us,
        "authentication"
    );
}

fn audit_static(user: &str, ok: bool, started: Instant) {
    crate::telemetry::metrics::metrics().decision(
        "htpasswd",
        ok,
        if ok { "none" } else { "bad_password" },
    );
    tracing::info!(
        target: "gantry::audit",
        method = "htpasswd",
        username = user,
        outcome = if ok { "allow" } else { "deny" },
        reason = if ok { "" } else { "invalid username or password" },
        latency_us = started.elapsed().as_micros() as u64,
        "authentication"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("hunter2"));
        assert!(!looks_like_jwt("a.b.c"));
    }

    #[test]
    fn fingerprint_is_not_the_secret() {
        let f = fingerprint(&Sha256::digest(b"secret-token").into());
        assert_eq!(f.len(), 16);
        assert!(!f.contains("secret"));
    }
}
