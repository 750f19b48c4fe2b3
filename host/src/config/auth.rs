//! `[auth]`: the token endpoint's service and URL, htpasswd users, Gantry's
//! own tokens, and the OIDC issuers with their claim policies.
//!
//! Parsing here checks shapes and values, once; `auth::Auth::build` then
//! turns the result into the running authentication, checking only what
//! needs the outside world (files, policy modules), and reports those
//! problems with the same key paths.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Section;
use super::issuer::{self, IssuerConfig};
use crate::oci::OciSource;
use crate::policy::{Limits, ModuleSource};

/// The whole `[auth]` section.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `service` of challenges and tokens.
    pub service: String,
    /// Where clients reach the registry; the realm is `<public_url>/auth/token`.
    pub public_url: String,
    pub htpasswd_file: Option<PathBuf>,
    pub token: TokenConfig,
    pub oidc: Vec<IssuerEntry>,
}

/// `[auth.token]`: tokens minted by the token endpoint.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub ttl_seconds: u64,
    /// PKCS#8 P-256 key; default: generated in `<storage root>/auth/`.
    pub key_file: Option<PathBuf>,
}

/// One `[[auth.oidc]]` issuer.
#[derive(Debug, Clone)]
pub struct IssuerEntry {
    /// Index in the `[[auth.oidc]]` array, for key paths in errors.
    pub index: usize,
    pub verifier: IssuerConfig,
    /// `tenant`: the `[[tenants]]` entry this issuer belongs to; its
    /// identities are confined to the tenant's namespace.
    pub tenant: Option<String>,
    pub username_prefix: String,
    pub groups_prefix: String,
    pub policy: PolicyEntry,
    /// Lints (`config::lints`) this issuer silences, each with its reason.
    pub allow_lints: Vec<AllowedLint>,
}

/// One `allow_lints` entry.
#[derive(Debug, Clone)]
pub struct AllowedLint {
    pub id: String,
    pub reason: String,
}

/// `[auth.oidc.policy]`.
#[derive(Debug, Clone)]
pub struct PolicyEntry {
    pub source: PolicySource,
    /// `shadow`: a candidate evaluated beside the active policy.
    pub shadow: Option<OciSource>,
    /// The settings of a `module`; an `oci://` artifact carries its own.
    pub settings: serde_json::Value,
    /// For a module, its limits; for an `oci://` artifact, the ceilings on
    /// what the artifact may ask (lowered further by its tenant's).
    pub limits: Limits,
    /// Whether `timeout_ms` and `memory_limit_mib` were given here: a
    /// tenant's issuer that leaves one out gets its tenant's ceiling, not
    /// the default.
    pub timeout_given: bool,
    pub memory_given: bool,
}

/// `module`: built in, a file, or an artifact in this registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Module(ModuleSource),
    Oci(OciSource),
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::Module(m) => write!(f, "{m}"),
            PolicySource::Oci(s) => write!(f, "{s}"),
        }
    }
}

impl AuthConfig {
    /// The realm clients fetch tokens from.
    pub fn realm(&self) -> String {
        format!("{}/auth/token", self.public_url.trim_end_matches('/'))
    }
}

fn default_prefix(issuer: &str) -> String {
    format!("{}/", issuer.trim_end_matches('/'))
}

fn read_policy(mut s: Section<'_>, base: &Path) -> PolicyEntry {
    let module_text: String = s.get("module", || "builtin:cel".to_string());
    let fallback = PolicySource::Module(ModuleSource::Builtin(crate::policy::BuiltinModule::Cel));
    let source = if module_text.starts_with("oci://") {
        match module_text.parse::<OciSource>() {
            Ok(o) => PolicySource::Oci(o),
            Err(e) => {
                s.problem("module", e.to_string());
                fallback
            }
        }
    } else {
        match module_text.parse::<ModuleSource>() {
            Ok(ModuleSource::Path(p)) => PolicySource::Module(ModuleSource::Path(base.join(p))),
            Ok(m) => PolicySource::Module(m),
            Err(e) => {
                s.problem("module", e.to_string());
                fallback
            }
        }
    };
    let shadow_text: Option<String> = s.get("shadow", || None);
    let shadow = shadow_text.and_then(|t| match t.parse::<OciSource>() {
        Ok(o) => Some(o),
        Err(e) => {
            s.problem("shadow", format!("{e} (a shadow is an oci:// artifact)"));
            None
        }
    });
    let mut limits = Limits::default();
    let timeout_given: Option<u64> = s.get("timeout_ms", || None);
    let memory_given: Option<u64> = s.get("memory_limit_mib", || None);
    let timeout_ms = timeout_given.unwrap_or(limits.timeout.as_millis() as u64);
    let memory_mib = memory_given.unwrap_or((limits.memory_limit_bytes >> 20) as u64);
    let pool_size: usize = s.get("pool_size", || limits.pool_size);
    limits.timeout = Duration::from_millis(timeout_ms);
    limits.memory_limit_bytes = usize::try_from(memory_mib)
        .unwrap_or(usize::MAX)
        .saturating_mul(1 << 20);
    limits.pool_size = pool_size;
    if let Err(e) = limits.validate() {
        s.problem(e.config_key().unwrap_or(""), e.to_string());
    }
    let settings = match s.take_raw("settings") {
        None => serde_json::Value::Object(Default::default()),
        Some(_) if matches!(source, PolicySource::Oci(_)) => {
            s.problem(
                "settings",
                "an oci:// artifact carries its own settings (its config blob): remove them here"
                    .into(),
            );
            serde_json::Value::Null
        }
        Some(v @ toml::Value::Table(_)) => crate::policy::toml_to_json(v),
        Some(other) => {
            s.problem(
                "settings",
                format!("must be a table, found {}", other.type_str()),
            );
            serde_json::Value::Null
        }
    };
    s.finish();
    PolicyEntry {
        source,
        shadow,
        settings,
        limits,
        timeout_given: timeout_given.is_some(),
        memory_given: memory_given.is_some(),
    }
}

fn read_issuer(mut s: Section<'_>, index: usize, base: &Path) -> Option<IssuerEntry> {
    let issuer: String = s.get("issuer", String::new);
    if issuer.is_empty() {
        s.problem("issuer", "is required".into());
    }
    let audiences: Vec<String> = s.get("audiences", Vec::new);
    let discovery_url: Option<String> = s.get("discovery_url", || None);
    let ca_file: Option<String> = s.get("ca_file", || None);
    let jwks_file: Option<String> = s.get("jwks_file", || None);
    let alg_names: Option<Vec<String>> = s.get("algorithms", || None);
    let mut algorithms = Vec::new();
    match alg_names {
        None => algorithms.extend_from_slice(issuer::DEFAULT_ALGORITHMS),
        Some(names) => {
            for name in names {
                // Which algorithms are allowed is checked with the issuer's
                // other values (below).
                match name.parse::<jsonwebtoken::Algorithm>() {
                    Ok(a) => algorithms.push(a),
                    Err(_) => s.problem("algorithms", format!("unknown algorithm `{name}`")),
                }
            }
        }
    }
    let leeway: u64 = s.get("leeway_seconds", || 60);
    let max_lifetime: Option<u64> = s.get("max_token_lifetime_seconds", || None);
    let allow_private_network: bool = s.get("allow_private_network", || false);
    let tenant: Option<String> = s.get("tenant", || None);
    // A tenant's issuer names everyone `<tenant>:…` (checked against the
    // tenants in `config::tenant`); others are named after their URL.
    let default = match &tenant {
        Some(t) => format!("{t}:"),
        None => default_prefix(&issuer),
    };
    let username_prefix: String = s.get("username_prefix", || default.clone());
    let groups_prefix: String = s.get("groups_prefix", || default.clone());
    let policy = read_policy(s.section("policy"), base);
    let mut allow_lints = Vec::new();
    for (i, table) in s.array_of_tables("allow_lints").into_iter().enumerate() {
        let mut t = s.table_at("allow_lints", i, table);
        let id: String = t.get("id", String::new);
        let reason: String = t.get("reason", String::new);
        if !super::lints::IDS.contains(&id.as_str()) {
            t.problem(
                "id",
                format!("`{id}` is not a lint id ({})", super::lints::IDS.join(", ")),
            );
        }
        if reason.trim().is_empty() {
            t.problem("reason", "say why the lint does not apply".into());
        }
        t.finish();
        allow_lints.push(AllowedLint { id, reason });
    }
    let verifier = IssuerConfig {
        issuer,
        audiences,
        discovery_url,
        ca_file: ca_file.map(|p| base.join(p)),
        jwks_file: jwks_file.map(|p| base.join(p)),
        algorithms,
        leeway: Duration::from_secs(leeway),
        max_token_lifetime: max_lifetime.map(Duration::from_secs),
        allow_private_network,
    };
    // The issuer's value rules, checked here once; the verifier trusts them.
    for p in verifier.problems() {
        if !(verifier.issuer.is_empty() && p.field == "issuer") {
            s.problem(&p.field, p.reason);
        }
    }
    s.finish();
    Some(IssuerEntry {
        index,
        verifier,
        tenant,
        username_prefix,
        groups_prefix,
        policy,
        allow_lints,
    })
}

/// Reads `[auth]`; `None` when absent (an open registry).
pub fn read_config(
    root: &mut Section<'_>,
    base: &Path,
    listen: std::net::SocketAddr,
) -> Option<AuthConfig> {
    if !root.has("auth") {
        return None;
    }
    let mut s = root.section("auth");
    let service: String = s.get("service", || "gantry".to_string());
    if service.is_empty() {
        s.problem("service", "must not be empty".into());
    }
    let public_url: String = s.get("public_url", || format!("http://{listen}"));
    if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
        s.problem(
            "public_url",
            format!("`{public_url}` must be an http:// or https:// URL"),
        );
    }
    let htpasswd_file: Option<String> = s.get("htpasswd_file", || None);
    let token = {
        let mut t = s.section("token");
        let ttl_seconds: u64 = t.get("ttl_seconds", || 300);
        if ttl_seconds == 0 || ttl_seconds > 86_400 {
            t.problem("ttl_seconds", "must be between 1 and 86400".into());
        }
        let key_file: Option<String> = t.get("key_file", || None);
        t.finish();
        TokenConfig {
            ttl_seconds,
            key_file: key_file.map(|p| base.join(p)),
        }
    };
    let mut oidc = Vec::new();
    for (i, table) in s.array_of_tables("oidc").into_iter().enumerate() {
        if let Some(entry) = read_issuer(s.table_at("oidc", i, table), i, base) {
            oidc.push(entry);
        }
    }
    let realm_issuer = format!("{}/auth/token", public_url.trim_end_matches('/'));
    for (i, entry) in oidc.iter().enumerate() {
        if oidc[..i]
            .iter()
            .any(|e| e.verifier.issuer == entry.verifier.issuer)
        {
            s.problem_raw(
                &format!("oidc[{i}].issuer"),
                format!("issuer `{}` is configured twice", entry.verifier.issuer),
            );
        }
        if entry.verifier.issuer == realm_issuer {
            s.problem_raw(
                &format!("oidc[{i}].issuer"),
                "must differ from Gantry's own token issuer (<public_url>/auth/token)".into(),
            );
        }
    }
    s.finish();
    Some(AuthConfig {
        service,
        public_url,
        htpasswd_file: htpasswd_file.map(|p| base.join(p)),
        token,
        oidc,
    })
}
