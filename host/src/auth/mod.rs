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
pub mod tenant;
pub mod token;

mod cache;
mod slot;

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use self::access::{AccessControl, ActionSet};
use self::cache::DecisionCache;
use self::htpasswd::Htpasswd;
use self::slot::{Counts, Slot};
use self::tenant::{RefusedPush, Tenant};
use self::token::{GantryToken, TokenService};
use crate::config::access::AccessControlConfig;
use crate::config::auth::{AuthConfig, PolicySource};
use crate::config::tenant::TenantConfig;
use crate::oci::{Digest, OciSource, Reference, RepoName, Tag};
use crate::policy::artifact::{ArtifactError, PolicyArtifact};
use crate::policy::{Decision, Identity, Limits, PolicyEngine};

/// Who is making a request, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None`: anonymous. Shared, so a cached decision is cloned without
    /// copying names on the hot path.
    pub identity: Option<Arc<Identity>>,
    /// Set when the caller presented a Gantry token: its scope is a ceiling.
    pub token: Option<Arc<GantryToken>>,
    /// Set when a tenant's issuer named the caller: confined to the
    /// tenant's namespace, whatever access control grants.
    pub tenant: Option<Arc<Tenant>>,
    /// The OIDC issuer whose policy named the caller: its cached decisions
    /// are dropped when that policy changes.
    pub issuer: Option<Arc<str>>,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            identity: None,
            token: None,
            tenant: None,
            issuer: None,
        }
    }

    fn named(identity: Identity) -> Caller {
        Caller {
            identity: Some(Arc::new(identity)),
            ..Caller::anonymous()
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
    /// The issuer follows an artifact that is not published (or not valid).
    #[error("issuer {issuer} has no policy: {reason}")]
    NoPolicy { issuer: String, reason: String },
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
            AuthFailure::NoPolicy { .. } => "the issuer's claim policy is not published",
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
            AuthFailure::NoPolicy { .. } => "no_policy",
        }
    }
}

/// How one bearer token fared: the caller, the token's expiry and its
/// subject; or why it was refused (with the subject when it was known).
type Outcome = Result<(Caller, u64, Option<String>), (AuthFailure, Option<String>)>;

/// What auth attaches to each OIDC issuer of the verifier (which holds its
/// rules and keys): one value per issuer, found by one lookup.
struct IssuerRuntime {
    issuer: Arc<str>,
    /// The policy in force, swapped when a followed tag moves.
    active: Slot,
    /// A candidate evaluated beside it (`shadow`), never deciding.
    shadow: Option<Slot>,
    username_prefix: String,
    groups_prefix: String,
    tenant: Option<Arc<Tenant>>,
    /// The most an artifact of this issuer may use (its tenant's ceilings
    /// under the issuer's configured limits).
    ceilings: Limits,
}

/// Which of an issuer's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    Active,
    Shadow,
}

/// An `oci://` source a configuration follows, and what is loaded from it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub issuer: String,
    pub kind: SlotKind,
    pub source: OciSource,
}

/// Why a tenant's status is not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatusRefused {
    /// No credentials: log in.
    Anonymous,
    /// Neither the tenant's admin nor an `admin_policy` identity.
    Forbidden,
}

/// Shadow evaluations running at once, over all issuers; beyond it a
/// candidate evaluation is dropped (and counted), never queued.
const SHADOW_IN_FLIGHT: usize = 4;

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
    tenants: Vec<Arc<Tenant>>,
    /// Loads the artifacts that followed tags move to.
    engine: PolicyEngine,
    shadow_permits: Arc<tokio::sync::Semaphore>,
    /// Woken when a push may have moved a followed tag.
    pub policy_pushed: tokio::sync::Notify,
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
        tenants: &[TenantConfig],
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
        let mut started = Vec::with_capacity(tenants.len());
        for (i, t) in tenants.iter().enumerate() {
            match Tenant::new(t) {
                Ok(t) => started.push(Arc::new(t)),
                Err(e) => problems.push(Problem {
                    path: format!("tenants[{i}]"),
                    reason: format!("cannot start the tenant's policy thread: {e}"),
                }),
            }
        }
        let tenants = started;
        let mut runtimes = Vec::with_capacity(cfg.oidc.len());
        for entry in &cfg.oidc {
            let owner = &entry.verifier.issuer;
            let tenant = entry
                .tenant
                .as_ref()
                .and_then(|name| tenants.iter().find(|t| &t.name == name))
                .cloned();
            // A tenant's ceilings bound its issuers; where the issuer sets
            // no limit of its own, the tenant's ceiling is the limit.
            let mut ceilings = entry.policy.limits.clone();
            if let Some(t) = &tenant {
                let p = &entry.policy;
                ceilings.timeout = match p.timeout_given {
                    true => ceilings.timeout.min(t.ceilings.timeout),
                    false => t.ceilings.timeout,
                };
                ceilings.memory_limit_bytes = match p.memory_given {
                    true => ceilings
                        .memory_limit_bytes
                        .min(t.ceilings.memory_limit_bytes),
                    false => t.ceilings.memory_limit_bytes,
                };
            }
            // An artifact is looked up by the follower before the first
            // request (and whenever its tag moves); a module loads now.
            let active = match &entry.policy.source {
                PolicySource::Oci(source) => Slot::unpublished(source.clone()),
                PolicySource::Module(module) => match engine
                    .load(
                        owner,
                        module,
                        &entry.policy.settings,
                        entry.policy.limits.clone(),
                    )
                    .await
                {
                    Ok(policy) => Slot::fixed(policy),
                    Err(e) => {
                        problems.push(Problem {
                            path: format!("auth.oidc[{}].policy", entry.index),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                },
            };
            runtimes.push(IssuerRuntime {
                issuer: Arc::from(owner.as_str()),
                active,
                shadow: entry.policy.shadow.clone().map(Slot::unpublished),
                username_prefix: entry.username_prefix.clone(),
                groups_prefix: entry.groups_prefix.clone(),
                tenant,
                ceilings,
            });
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
            tenants,
            engine: engine.clone(),
            shadow_permits: Arc::new(tokio::sync::Semaphore::new(SHADOW_IN_FLIGHT)),
            policy_pushed: tokio::sync::Notify::new(),
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
            if let Some(policy) = &rt.active.load().policy {
                m.policy_pool_size
                    .get_or_create(&IssuerLabel {
                        issuer: issuer.to_owned(),
                    })
                    .set(policy.pool_size() as i64);
            }
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
        let id = caller.identity();
        let mut set = self.access.allowed(id, repo);
        // Confinement, whatever access control says: nothing outside the
        // namespace.
        if let Some(t) = &caller.tenant
            && !t.contains(repo)
        {
            return ActionSet::NONE;
        }
        // A tenant's policy repositories decide what its issuers' tokens
        // become: writing there takes the tenant's admins, an operator
        // admin, or a rule written for them, never a broad one such as
        // `**` (which would let any team rewrite another's policy).
        if let Some(t) = self.tenants.iter().find(|t| t.holds_policies(repo)) {
            let operator = id.is_some_and(|id| self.access.is_admin(id));
            if !operator && !self.access.decided_within(repo, t.policies_prefix()) {
                set = tenant::policy_repo_actions(set);
            }
            let own = caller.tenant.as_ref().is_none_or(|c| Arc::ptr_eq(c, t));
            if own && id.is_some_and(|id| t.is_admin(id)) {
                set = set.union(tenant::ADMIN_ACTIONS);
            }
        }
        set
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
                Ok((Caller::named(identity), None))
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
            self.oidc_token(parsed, &fingerprint).await
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
        // A token minted for a tenant's identity stays confined; a tenant
        // that a reload removed takes its tokens with it.
        let tenant = match &t.tenant {
            None => None,
            Some(name) => match self.tenants.iter().find(|x| &x.name == name) {
                Some(x) => Some(x.clone()),
                None => {
                    return Err((
                        AuthFailure::InvalidToken(format!(
                            "token of tenant `{name}`, which is not configured"
                        )),
                        subject,
                    ));
                }
            },
        };
        Ok((
            Caller {
                identity: t.identity.clone().map(Arc::new),
                token: Some(Arc::new(t)),
                tenant,
                issuer: None,
            },
            exp,
            subject,
        ))
    }

    async fn oidc_token(&self, token: oidc::UnverifiedToken<'_>, fingerprint: &str) -> Outcome {
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
        let state = rt.active.load();
        let Some(policy) = &state.policy else {
            Counts::add(&state.counts.failures);
            let reason = state.missing.clone().unwrap_or_default();
            return Err((
                AuthFailure::NoPolicy {
                    issuer: verified.issuer,
                    reason,
                },
                subject,
            ));
        };
        let decision = tenant::evaluate(rt.tenant.as_deref(), policy, &verified.claims_json).await;
        state.counts.record(&decision);
        if let Some(shadow) = &rt.shadow {
            self.shadow_evaluate(
                rt,
                shadow,
                &state,
                &verified.claims_json,
                &decision,
                fingerprint,
            );
        }
        match decision {
            Ok(Decision::Allow(id)) => {
                let identity = apply_prefixes(&rt.username_prefix, &rt.groups_prefix, &id);
                Ok((
                    Caller {
                        identity: Some(Arc::new(identity)),
                        token: None,
                        tenant: rt.tenant.clone(),
                        issuer: Some(rt.issuer.clone()),
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

    /// Evaluates the shadow candidate on the same claims, off the response
    /// path: a spawned task, at most [`SHADOW_IN_FLIGHT`] at once over all
    /// issuers (beyond that it is dropped, never queued). A disagreement
    /// with the active decision is one `gantry::shadow` event and counted.
    fn shadow_evaluate(
        &self,
        rt: &IssuerRuntime,
        shadow: &Slot,
        active: &Arc<slot::SlotState>,
        claims: &str,
        decision: &Result<Decision, crate::policy::PolicyError>,
        fingerprint: &str,
    ) {
        let candidate = shadow.load();
        let Some(policy) = candidate.policy.clone() else {
            return;
        };
        let metrics = crate::telemetry::metrics::metrics();
        let Ok(permit) = self.shadow_permits.clone().try_acquire_owned() else {
            metrics.shadow_dropped(&rt.issuer);
            return;
        };
        let active_text = describe_decision(decision);
        let (claims, issuer, active, fingerprint) = (
            claims.to_owned(),
            rt.issuer.clone(),
            active.clone(),
            fingerprint.to_owned(),
        );
        let candidate_digest = candidate.digest.clone();
        let tenant = rt.tenant.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let theirs = tenant::evaluate(tenant.as_deref(), &policy, &claims).await;
            candidate.counts.record(&theirs);
            let candidate_text = describe_decision(&theirs);
            if candidate_text == active_text {
                return;
            }
            Counts::add(&active.counts.disagreements);
            Counts::add(&candidate.counts.disagreements);
            metrics.shadow_disagreement(&issuer);
            tracing::info!(
                target: "gantry::shadow",
                issuer = %issuer,
                token_sha256 = %fingerprint,
                active_digest = %active.digest.as_ref().map(ToString::to_string).unwrap_or_default(),
                candidate_digest = %candidate_digest.as_ref().map(ToString::to_string).unwrap_or_default(),
                active = %active_text,
                candidate = %candidate_text,
                "shadow policy disagrees"
            );
        });
    }

    /// Every `oci://` source this configuration follows or pins, with the
    /// digest loaded from it last.
    pub fn followed(&self) -> Vec<Followed> {
        let mut out = Vec::new();
        for (issuer, rt) in self.oidc.attachments() {
            let slots = [
                (SlotKind::Active, Some(&rt.active)),
                (SlotKind::Shadow, rt.shadow.as_ref()),
            ];
            for (kind, slot) in slots {
                if let Some(slot) = slot
                    && let Some(source) = &slot.source
                {
                    out.push(Followed {
                        issuer: issuer.to_owned(),
                        kind,
                        source: source.clone(),
                    });
                }
            }
        }
        out
    }

    fn runtime(&self, issuer: &str) -> Option<&IssuerRuntime> {
        self.oidc
            .attachments()
            .find(|(name, _)| *name == issuer)
            .map(|(_, rt)| rt)
    }

    fn slot(rt: &IssuerRuntime, kind: SlotKind) -> Option<&Slot> {
        match kind {
            SlotKind::Active => Some(&rt.active),
            SlotKind::Shadow => rt.shadow.as_ref(),
        }
    }

    /// Whether the follower should load `digest` into `issuer`'s slot now
    /// (see [`Slot::should_load`]).
    pub fn wants(&self, issuer: &str, kind: SlotKind, digest: &Digest) -> bool {
        self.runtime(issuer)
            .and_then(|rt| Self::slot(rt, kind))
            .is_some_and(|slot| slot.should_load(digest))
    }

    /// Puts `artifact` in force as `issuer`'s active or shadow policy:
    /// loaded for this issuer alone under its ceilings, fixtures checked.
    /// Requests in flight finish on the old policy; the issuer's cached
    /// decisions are dropped. On failure a policy in force stays in force
    /// (the artifact validated when it was pushed, so this is a load that
    /// failed now, such as an `init` out of time on a busy machine); with
    /// none in force the issuer refuses its tokens with the reason (an
    /// artifact stored before this configuration followed it, or pinned).
    /// Either way the follower tries again after [`slot::RETRY_AFTER`].
    pub async fn activate(
        &self,
        issuer: &str,
        kind: SlotKind,
        artifact: &PolicyArtifact,
    ) -> Result<(), ArtifactError> {
        let Some(rt) = self.runtime(issuer) else {
            return Ok(());
        };
        let Some(slot) = Self::slot(rt, kind) else {
            return Ok(());
        };
        let source = slot.source_text();
        let name = format!(
            "oci://{}@{}",
            slot.source
                .as_ref()
                .map(|s| s.repository.as_str())
                .unwrap_or_default(),
            artifact.digest
        );
        let owner = match kind {
            SlotKind::Active => issuer.to_owned(),
            SlotKind::Shadow => format!("{issuer} [shadow]"),
        };
        let loaded = self
            .engine
            .load_artifact(&owner, &name, artifact, &rt.ceilings)
            .await;
        match loaded {
            Ok(policy) => {
                slot.set(Some(policy), Some(artifact.digest.clone()), None);
                tracing::info!(issuer, slot = ?kind, %source, digest = %artifact.digest, "policy activated");
                if kind == SlotKind::Active {
                    self.cache.drop_issuer(issuer);
                }
                Ok(())
            }
            Err(e) => {
                self.refuse_artifact(issuer, kind, &artifact.digest, &e);
                Err(e)
            }
        }
    }

    /// The artifact at `digest` cannot be put in force in `issuer`'s slot
    /// (it failed to load, or could not be read). A policy in force stays
    /// in force; with none, the issuer refuses its tokens saying why.
    /// Either way the follower tries it again after [`slot::RETRY_AFTER`].
    pub fn refuse_artifact(
        &self,
        issuer: &str,
        kind: SlotKind,
        digest: &Digest,
        error: &ArtifactError,
    ) {
        let Some(slot) = self.runtime(issuer).and_then(|rt| Self::slot(rt, kind)) else {
            return;
        };
        let source = slot.source_text();
        slot.failed(digest, error.to_string());
        if slot.load().policy.is_some() {
            tracing::warn!(issuer, slot = ?kind, %source, %digest, %error,
                "policy artifact could not be put in force: the policy in force stays");
            return;
        }
        tracing::warn!(issuer, slot = ?kind, %source, %digest, %error, "policy artifact refused");
        slot.set(
            None,
            Some(digest.clone()),
            Some(format!(
                "the policy at {source} ({digest}) is not valid: {error}"
            )),
        );
        if kind == SlotKind::Active {
            self.cache.drop_issuer(issuer);
        }
    }

    /// Marks `issuer`'s slot as having nothing published (its tag does not
    /// exist, or was deleted): the issuer refuses its tokens until it is.
    pub fn unpublish(&self, issuer: &str, kind: SlotKind) {
        let Some(rt) = self.runtime(issuer) else {
            return;
        };
        let Some(slot) = Self::slot(rt, kind) else {
            return;
        };
        let state = slot.load();
        if state.policy.is_none() && state.digest.is_none() {
            return;
        }
        let source = slot.source_text();
        tracing::warn!(issuer, slot = ?kind, %source, "followed policy tag is gone");
        slot.set(None, None, Some(format!("no policy published at {source}")));
        if kind == SlotKind::Active {
            self.cache.drop_issuer(issuer);
        }
    }

    /// The issuers with a configured `oci://` source in `repo`, each with
    /// its runtime and the sources (active, shadow) that lie there.
    fn followers<'a>(
        &'a self,
        repo: &'a RepoName,
    ) -> impl Iterator<Item = (&'a str, &'a IssuerRuntime, Vec<&'a OciSource>)> + 'a {
        self.oidc.attachments().filter_map(move |(issuer, rt)| {
            let sources: Vec<&OciSource> = [Some(&rt.active), rt.shadow.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|slot| slot.source.as_ref())
                .filter(|s| &s.repository == repo)
                .collect();
            (!sources.is_empty()).then_some((issuer, rt, sources))
        })
    }

    /// Whether a configured `oci://` source names `repo`: a policy artifact
    /// pushed there is validated before it is stored.
    pub fn follows_repository(&self, repo: &RepoName) -> bool {
        self.followers(repo).next().is_some()
    }

    /// The source that follows tag `tag` of `repo`, if one does: only a
    /// policy artifact may be tagged there (anything else would leave its
    /// issuer without a policy).
    pub fn following_tag(&self, repo: &RepoName, tag: &Tag) -> Option<OciSource> {
        self.followers(repo)
            .flat_map(|(_, _, sources)| sources)
            .find(|s| matches!(&s.reference, Reference::Tag(t) if t == tag))
            .cloned()
    }

    /// Validates an artifact pushed into `repo` as every issuer that
    /// follows `repo` would load it (its own ceilings), without putting it
    /// in force. A refusal is recorded for the status of the tenant whose
    /// namespace holds `repo`.
    pub async fn validate_artifact(
        &self,
        repo: &RepoName,
        artifact: &PolicyArtifact,
    ) -> Result<(), ArtifactError> {
        let result = self.validate_for_followers(repo, artifact).await;
        if let Err(e) = &result {
            self.refused(repo, &artifact.digest, &e.to_string());
        }
        result
    }

    async fn validate_for_followers(
        &self,
        repo: &RepoName,
        artifact: &PolicyArtifact,
    ) -> Result<(), ArtifactError> {
        let name = format!("oci://{repo}@{}", artifact.digest);
        for (issuer, rt, _) in self.followers(repo) {
            let owner = format!("{issuer} [validation]");
            self.engine
                .load_artifact(&owner, &name, artifact, &rt.ceilings)
                .await?;
        }
        Ok(())
    }

    /// Records a refused policy push (validation, or a manifest that could
    /// not even be read as an artifact) for its tenant's status.
    pub fn refused(&self, repo: &RepoName, digest: &Digest, reason: &str) {
        tracing::info!(repository = %repo, %digest, reason, "policy push refused");
        if let Some(t) = self.tenants.iter().find(|t| t.contains(repo)) {
            t.record_refused(RefusedPush {
                repository: repo.to_string(),
                digest: digest.to_string(),
                at: now(),
                reason: reason.to_owned(),
            });
        }
    }

    /// The status of tenant `name` for `caller`: `Ok(None)` when there is
    /// no such tenant, `Err(())` when the caller may not see it (only the
    /// tenant's admins and `admin_policy` identities may).
    pub fn tenant_status(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Option<serde_json::Value>, TenantStatusRefused> {
        let Some(tenant) = self.tenants.iter().find(|t| t.name == name) else {
            return match caller.identity() {
                Some(_) => Ok(None),
                None => Err(TenantStatusRefused::Anonymous),
            };
        };
        let Some(id) = caller.identity() else {
            return Err(TenantStatusRefused::Anonymous);
        };
        let own = caller
            .tenant
            .as_ref()
            .is_none_or(|c| Arc::ptr_eq(c, tenant));
        if (!own || !tenant.is_admin(id)) && !self.access.is_admin(id) {
            return Err(TenantStatusRefused::Forbidden);
        }
        let slot_json = |slot: &Slot| {
            let st = slot.load();
            serde_json::json!({
                "source": slot.source.as_ref().map(ToString::to_string),
                "digest": tenant::digest_text(st.digest.as_ref()),
                "loaded": st.policy.is_some(),
                "problem": st.missing,
                "since": st.since,
                "allows": Counts::get(&st.counts.allows),
                "denies": Counts::get(&st.counts.denies),
                "failures": Counts::get(&st.counts.failures),
                "shadow_disagreements": Counts::get(&st.counts.disagreements),
                "last_failed_activation": slot.failure(),
            })
        };
        let issuers: Vec<serde_json::Value> = self
            .oidc
            .attachments()
            .filter(|(_, rt)| rt.tenant.as_ref().is_some_and(|t| Arc::ptr_eq(t, tenant)))
            .map(|(issuer, rt)| {
                serde_json::json!({
                    "issuer": issuer,
                    "active": slot_json(&rt.active),
                    "shadow": rt.shadow.as_ref().map(slot_json),
                })
            })
            .collect();
        Ok(Some(serde_json::json!({
            "tenant": tenant.name,
            "namespace": tenant.namespace.as_str(),
            "issuers": issuers,
            "last_refused_push": tenant.last_refused(),
        })))
    }

    /// Mints a Gantry token for `caller` (token endpoint); a tenant's
    /// identity keeps its tenant in the token.
    pub fn mint(
        &self,
        caller: &Caller,
        access: Vec<token::AccessEntry>,
        not_after: Option<u64>,
    ) -> Result<(String, u64, u64), token::TokenError> {
        let tenant = caller.tenant.as_ref().map(|t| t.name.as_str());
        self.tokens.mint(
            caller.identity(),
            tenant,
            access,
            self.ttl_seconds,
            not_after,
        )
    }
}

/// A decision as one comparable line: `allow as NAME [GROUPS]`, `deny:
/// REASON`, or `error`.
fn describe_decision(d: &Result<Decision, crate::policy::PolicyError>) -> String {
    match d {
        Ok(Decision::Allow(id)) => format!("allow as {:?} {:?}", id.username, id.groups),
        Ok(Decision::Deny(reason)) => format!("deny: {reason}"),
        // Both failing is agreement, whatever each one's message says.
        Err(_) => "error".to_owned(),
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
