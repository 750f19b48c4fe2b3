//! Typed configuration, loaded from one TOML file.
//!
//! Every field has a default, unknown keys are rejected, and loading reports
//! *every* problem at once (key path + reason) instead of stopping at the
//! first, so `gantry config check` can show an operator the whole list.
//!
//! Sections are read by hand through [`Section`] rather than by a derived
//! `Deserialize`: serde stops at the first error, and we want them all.
//! A later section (`[auth]`, `[access_control]`) slots in as one more
//! `read_*` function called from [`Config::from_toml_str`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

pub mod access;
pub mod auth;
pub mod issuer;
pub mod lints;
pub mod tenant;

/// The configuration compiled into the binary; `gantry serve` without
/// `--config` runs with exactly this.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/gantry.toml");

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    /// `[auth]`; `None` runs an open registry.
    pub auth: Option<auth::AuthConfig>,
    /// `[access_control]`; `None` with auth means "authenticated: all, anonymous: nothing".
    pub access_control: Option<access::AccessControlConfig>,
    /// `[[tenants]]`, in file order.
    pub tenants: Vec<tenant::TenantConfig>,
}

/// `[server]`: where and how Gantry listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// HTTPS when both files are set; validated (readable, matching) at load.
    pub tls: Option<TlsFiles>,
    /// How connections are bounded in time and number.
    pub limits: ConnectionLimits,
    /// How often the config file is checked for a change (which reloads
    /// it); 0: only SIGHUP reloads.
    pub reload_poll_seconds: u64,
    /// Where `/metrics` is served (Prometheus text format); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// `[server]` bounds on connections, so that slow or idle clients cannot
/// hold the registry's file descriptors (see `server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection must deliver a whole request head (after the TLS
    /// handshake, which counts too) within this long.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// The window of the request-body progress rule.
    pub body_timeout: Duration,
    /// Each `body_timeout` spent waiting for a request body must bring at
    /// least `body_timeout × body_min_bytes_per_second` bytes.
    pub body_min_bytes_per_second: u64,
    /// Connections served at once; 0: half the process's open-file limit.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            body_min_bytes_per_second: 1024,
            max_connections: 0,
        }
    }
}

/// PEM certificate chain and private key for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[storage]`: where blobs and metadata live.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// fs: all content; s3: only this replica's local caches (compiled
    /// policies, a copy of the token signing key).
    pub root: PathBuf,
    /// `backend` and, for `"s3"`, `[storage.s3]`.
    pub backend: Backend,
    /// `max_uploads_per_identity` and `[storage.gc] upload_ttl`.
    pub uploads: crate::storage::UploadLimits,
    /// `[storage.gc] interval` and `grace`.
    pub gc: GcConfig,
}

/// `[storage.gc]`: the online collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcConfig {
    /// How often the server collects; `None` ("0"): only `gantry gc`.
    pub interval: Option<Duration>,
    /// Content younger than this is never collected.
    pub grace: Duration,
}

impl GcConfig {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
}

/// `[storage] backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Fs,
    S3(S3Config),
}

/// `[storage.s3]` (defined beside the backend that reads it).
pub use crate::storage::s3::S3Config;

/// `[log]`: verbosity and output format.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// One problem in a configuration: where (a dotted key path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// Where the configuration came from (a path, or "embedded default").
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} problem{}",
            self.source_name,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_toml_str(EMBEDDED_DEFAULT, "embedded default", Path::new(""))
    }

    /// Loads and validates a file; relative paths inside it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            problems: vec![Problem {
                path: String::new(),
                reason: format!("cannot read file: {e}"),
            }],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::from_toml_str(&text, &name, &base)
    }

    /// Parses and validates TOML text. `base` resolves relative file paths.
    pub fn from_toml_str(
        text: &str,
        source_name: &str,
        base: &Path,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            source_name: source_name.to_string(),
            problems,
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            fail(vec![Problem {
                path: String::new(),
                reason: format!("invalid TOML: {}", e.message()),
            }])
        })?;
        let mut problems = Vec::new();
        let mut root = Section::new(String::new(), table, &mut problems);
        let server = read_server(root.section("server"), base);
        let storage = read_storage(root.section("storage"), base);
        let log = read_log(root.section("log"));
        let auth = auth::read_config(&mut root, base, server.listen);
        let access_control = access::read_config(&mut root);
        let tenants = tenant::read_config(&mut root);
        tenant::check_issuers(&mut root, &tenants, auth.as_ref());
        if auth.is_none() && access_control.is_some() {
            root.problem(
                "access_control",
                "has no effect without [auth]: the registry would be open to everyone".into(),
            );
        }
        root.finish();
        if problems.is_empty() {
            Ok(Config {
                server,
                storage,
                log,
                auth,
                access_control,
                tenants,
            })
        } else {
            Err(fail(problems))
        }
    }
}

fn read_server(mut s: Section<'_>, base: &Path) -> ServerConfig {
    let listen = s.get("listen", || "127.0.0.1:5000".to_string());
    let listen = match listen.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            s.problem(
                "listen",
                format!("`{listen}` is not an address like 127.0.0.1:5000 or [::]:5000"),
            );
            SocketAddr::from(([127, 0, 0, 1], 5000))
        }
    };
    let cert: Option<String> = s.get("tls_cert_file", || None);
    let key: Option<String> = s.get("tls_key_file", || None);
    let tls = match (cert, key) {
        (Some(c), Some(k)) => {
            // Read and checked (PEM, matching key) once, where they are
            // loaded: `cli::check::build`, at start, check and reload.
            Some(TlsFiles {
                cert_file: base.join(c),
                key_file: base.join(k),
            })
        }
        (Some(_), None) => {
            s.problem(
                "tls_key_file",
                "must be set when tls_cert_file is set".into(),
            );
            None
        }
        (None, Some(_)) => {
            s.problem(
                "tls_cert_file",
                "must be set when tls_key_file is set".into(),
            );
            None
        }
        (None, None) => None,
    };
    let d = ConnectionLimits::default();
    let limits = ConnectionLimits {
        header_read_timeout: s.duration("header_read_timeout", d.header_read_timeout),
        idle_timeout: s.duration("idle_timeout", d.idle_timeout),
        body_timeout: s.duration("body_timeout", d.body_timeout),
        body_min_bytes_per_second: s
            .get("body_min_bytes_per_second", || d.body_min_bytes_per_second),
        max_connections: s.get("max_connections", || d.max_connections),
    };
    let reload_poll_seconds = s.get("reload_poll_seconds", || 10);
    let metrics_text: Option<String> = s.get("metrics_listen", || None);
    let metrics_listen = metrics_text.and_then(|t| match t.parse::<SocketAddr>() {
        Ok(addr) if addr == listen => {
            s.problem(
                "metrics_listen",
                format!("`{t}` is server.listen itself: give metrics their own port"),
            );
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            s.problem(
                "metrics_listen",
                format!("`{t}` is not an address like 127.0.0.1:9090"),
            );
            None
        }
    });
    s.finish();
    ServerConfig {
        listen,
        tls,
        limits,
        reload_poll_seconds,
        metrics_listen,
    }
}

fn read_storage(mut s: Section<'_>, base: &Path) -> StorageConfig {
    use crate::storage::UploadLimits;
    let root: String = s.get("root", || "./gantry-data".to_string());
    if root.is_empty() {
        s.problem("root", "must not be empty".into());
    }
    let max_per_owner = s.get("max_uploads_per_identity", || {
        UploadLimits::DEFAULT_MAX_PER_OWNER
    });
    let backend_name: String = s.get("backend", || "fs".to_string());
    let mut s3 = s.section("s3");
    let s3_given = !s3.keys().is_empty();
    let s3_config = read_s3(&mut s3, base);
    s3.finish();
    let backend = match backend_name.as_str() {
        "fs" => {
            if s3_given {
                s.problem(
                    "s3",
                    "is set but `backend` is \"fs\": set `backend = \"s3\"` or remove [storage.s3]"
                        .into(),
                );
            }
            Backend::Fs
        }
        "s3" => {
            if s3_config.bucket.is_empty() {
                s.problem_raw(
                    "s3.bucket",
                    "must name the bucket (an existing one) when `backend` is \"s3\"".into(),
                );
            }
            Backend::S3(s3_config)
        }
        other => {
            s.problem(
                "backend",
                format!("`{other}` is not a storage backend: use \"fs\" or \"s3\""),
            );
            Backend::Fs
        }
    };
    let mut gc = s.section("gc");
    let ttl = gc.duration("upload_ttl", UploadLimits::DEFAULT_TTL);
    let interval = match gc.get::<Option<String>>("interval", || None) {
        None => Some(GcConfig::DEFAULT_INTERVAL),
        Some(text) => match parse_duration(&text) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                gc.problem("interval", format!("{e} (\"0\" turns the schedule off)"));
                Some(GcConfig::DEFAULT_INTERVAL)
            }
        },
    };
    let grace = match gc.get::<Option<String>>("grace", || None) {
        None => GcConfig::DEFAULT_GRACE,
        Some(text) => match parse_duration(&text) {
            Ok(d) => d,
            Err(e) => {
                gc.problem("grace", e.to_string());
                GcConfig::DEFAULT_GRACE
            }
        },
    };
    gc.finish();
    s.finish();
    StorageConfig {
        root: base.join(root),
        backend,
        uploads: UploadLimits { ttl, max_per_owner },
        gc: GcConfig { interval, grace },
    }
}

fn read_s3(s: &mut Section<'_>, base: &Path) -> S3Config {
    let bucket: String = s.get("bucket", String::new);
    let prefix: String = s.get("prefix", String::new);
    let region: String = s.get("region", || "us-east-1".to_string());
    let endpoint: Option<String> = s.get("endpoint", || None);
    let allow_http: bool = s.get("allow_http", || false);
    let access_key_id: Option<String> = s.get("access_key_id", || None);
    let secret: Option<String> = s.get("secret_access_key_file", || None);
    let redirect_blobs: bool = s.get("redirect_blobs", || false);
    let redirect_seconds: u64 = s.get("redirect_seconds", || 300);
    let checksum: String = s.get("checksum", || "sha256".to_string());
    let checksum = match checksum.as_str() {
        "sha256" => true,
        "none" => false,
        other => {
            s.problem(
                "checksum",
                format!("`{other}` is not a checksum: use \"sha256\" (the default) or \"none\""),
            );
            true
        }
    };
    let prefix = prefix.trim_matches('/').to_string();
    if prefix.split('/').any(|p| p == "." || p == "..")
        || prefix.contains("//")
        || prefix.chars().any(|c| c.is_control() || c == '\\')
    {
        s.problem(
            "prefix",
            format!("`{prefix}` is not a key prefix: use `/`-separated names without `.`, `..` or empty parts"),
        );
    }
    if region.is_empty() {
        s.problem("region", "must not be empty".into());
    }
    if let Some(e) = &endpoint {
        match url::Url::parse(e) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" => {
                if !allow_http {
                    s.problem(
                        "endpoint",
                        format!("`{e}` is plain http: set `allow_http = true` to allow it (credentials and content then travel unencrypted)"),
                    );
                }
            }
            Ok(_) | Err(_) => s.problem(
                "endpoint",
                format!("`{e}` is not an http(s) URL like http://127.0.0.1:9000"),
            ),
        }
    }
    match (&access_key_id, &secret) {
        (Some(_), None) => s.problem(
            "secret_access_key_file",
            "must be set when access_key_id is set".into(),
        ),
        (None, Some(_)) => s.problem(
            "access_key_id",
            "must be set when secret_access_key_file is set".into(),
        ),
        _ => {}
    }
    if redirect_seconds == 0 || redirect_seconds > 7 * 24 * 3600 {
        s.problem(
            "redirect_seconds",
            "must be between 1 and 604800 (a presigned URL lives at most 7 days)".into(),
        );
    }
    S3Config {
        bucket,
        prefix,
        region,
        endpoint,
        allow_http,
        access_key_id,
        secret_access_key_file: secret.map(|p| base.join(p)),
        redirect_blobs,
        redirect_seconds,
        checksum,
    }
}

/// Why a duration does not parse (the message names the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

/// Parses a duration written as a whole number and a unit: `"500ms"`,
/// `"30s"`, `"15m"`, `"24h"`, `"7d"`; `"0"` alone is zero.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    parse_duration_text(text).map_err(DurationError)
}

fn parse_duration_text(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("`{text}` has no unit: write it like \"30s\", \"15m\" or \"24h\"")
    })?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like \"30s\", \"15m\" or \"24h\""))?;
    let seconds_per = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
            ));
        }
    };
    n.checked_mul(seconds_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

fn read_log(mut s: Section<'_>) -> LogConfig {
    let level = s.get("level", || LogLevel::Info);
    let format = s.get("format", || LogFormat::Text);
    s.finish();
    LogConfig { level, format }
}

thread_local! {
    /// While [`known_keys`] runs: every key path a `Section` was asked for.
    static KNOWN: std::cell::RefCell<Option<std::collections::BTreeSet<String>>> = const { std::cell::RefCell::new(None) };
}

/// Every key the loader knows, as dotted paths with array indices and
/// repository patterns generalised (`auth.oidc[].policy.timeout_ms`,
/// `access_control.repositories."<glob>".policies[].users`). The
/// configuration reference is checked against this list by a test, so a
/// key cannot be added without being documented.
pub fn known_keys() -> Vec<String> {
    // Every table present (with one array entry each) and no leaves, so the
    // loader visits every key it knows.
    const SKELETON: &str = r#"
        [server]
        [storage]
        [storage.s3]
        [storage.gc]
        [log]
        [auth]
        [auth.token]
        [[auth.oidc]]
        [auth.oidc.policy]
        [access_control.admin_policy]
        [access_control.repositories."GLOB"]
        [[access_control.repositories."GLOB".policies]]
        [[tenants]]
    "#;
    KNOWN.with(|k| *k.borrow_mut() = Some(Default::default()));
    let _ = Config::from_toml_str(SKELETON, "skeleton", Path::new(""));
    let set = KNOWN.with(|k| k.borrow_mut().take()).unwrap_or_default();
    let mut keys: Vec<String> = set
        .into_iter()
        .map(|k| {
            let k = k.replace(".GLOB", ".\"<glob>\"");
            // `oidc[0]` → `oidc[]`
            let mut out = String::with_capacity(k.len());
            let mut in_index = false;
            for c in k.chars() {
                match c {
                    '[' => {
                        in_index = true;
                        out.push('[');
                    }
                    ']' => {
                        in_index = false;
                        out.push(']');
                    }
                    c if in_index && c.is_ascii_digit() => {}
                    c => out.push(c),
                }
            }
            out
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A TOML table being read: each `get` removes its key, `finish` reports
/// whatever is left as unknown. Problems accumulate in the shared list.
pub struct Section<'p> {
    path: String,
    table: toml::Table,
    problems: &'p mut Vec<Problem>,
}

impl<'p> Section<'p> {
    pub fn new(path: String, table: toml::Table, problems: &'p mut Vec<Problem>) -> Self {
        Section {
            path,
            table,
            problems,
        }
    }

    fn key_path(&self, key: &str) -> String {
        // Keys that are not bare TOML keys (repository globs) are quoted, as
        // an operator would write them.
        let bare = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let key = if bare || key.is_empty() || key.ends_with(']') {
            key.to_string()
        } else {
            format!("\"{key}\"")
        };
        match (self.path.is_empty(), key.is_empty()) {
            (_, true) => self.path.clone(),
            (true, false) => key,
            (false, false) => format!("{}.{key}", self.path),
        }
    }

    /// Notes that `key` is one the loader knows (see [`known_keys`]).
    fn record(&self, key: &str) {
        KNOWN.with(|k| {
            if let Some(set) = k.borrow_mut().as_mut() {
                set.insert(self.key_path(key));
            }
        });
    }

    /// Records a problem at a dotted sub-path written out already (`oidc[1].issuer`).
    pub fn problem_raw(&mut self, sub_path: &str, reason: String) {
        let path = if self.path.is_empty() {
            sub_path.to_string()
        } else {
            format!("{}.{sub_path}", self.path)
        };
        self.problems.push(Problem { path, reason });
    }

    /// Whether `key` is present (and not yet taken).
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The keys not yet taken, sorted (for tables keyed by user data).
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.table.keys().cloned().collect();
        k.sort();
        k
    }

    /// Takes an array of tables (`[[key]]`); anything else is a problem.
    pub fn array_of_tables(&mut self, key: &str) -> Vec<toml::Table> {
        self.record(key);
        match self.table.remove(key) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        toml::Value::Table(t) => out.push(t),
                        other => {
                            let path = self.key_path(&format!("{key}[{i}]"));
                            self.problems.push(Problem {
                                path,
                                reason: format!("must be a table, found {}", other.type_str()),
                            });
                        }
                    }
                }
                out
            }
            Some(other) => {
                self.problem(
                    key,
                    format!("must be an array of tables, found {}", other.type_str()),
                );
                Vec::new()
            }
        }
    }

    /// A section for element `i` of an array of tables taken with `array_of_tables`.
    pub fn table_at(&mut self, key: &str, i: usize, table: toml::Table) -> Section<'_> {
        let path = self.key_path(&format!("{key}[{i}]"));
        Section {
            path,
            table,
            problems: self.problems,
        }
    }

    /// Takes a value as raw TOML (for settings handed on as JSON).
    pub fn take_raw(&mut self, key: &str) -> Option<toml::Value> {
        self.record(key);
        self.table.remove(key)
    }

    /// Records a problem at `key` of this section.
    pub fn problem(&mut self, key: &str, reason: String) {
        let path = self.key_path(key);
        self.problems.push(Problem { path, reason });
    }

    /// Takes `key`, or the default when absent; a value of the wrong type is
    /// a problem (and the default stands in so reading can go on).
    pub fn get<T: DeserializeOwned>(&mut self, key: &str, default: impl FnOnce() -> T) -> T {
        self.record(key);
        match self.table.remove(key) {
            None => default(),
            Some(value) => match value.try_into::<T>() {
                Ok(v) => v,
                Err(e) => {
                    self.problem(key, e.message().trim().to_string());
                    default()
                }
            },
        }
    }

    /// Takes a positive duration (see [`parse_duration`]), or the default
    /// when absent.
    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let Some(text) = self.get::<Option<String>>(key, || None) else {
            return default;
        };
        match parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                self.problem(key, "must be longer than zero".into());
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(key, e.to_string());
                default
            }
        }
    }

    /// A nested table (`[server]` inside the root, say); absent means empty.
    pub fn section(&mut self, key: &str) -> Section<'_> {
        self.record(key);
        let path = self.key_path(key);
        let table = match self.table.remove(key) {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                self.problems.push(Problem {
                    path: path.clone(),
                    reason: format!("must be a table, found {}", other.type_str()),
                });
                toml::Table::new()
            }
        };
        Section {
            path,
            table,
            problems: self.problems,
        }
    }

    /// Reports every key nobody asked for.
    pub fn finish(self) {
        for key in self.keys() {
            let path = self.key_path(&key);
            self.problems.push(Problem {
                path,
                reason: "unknown key".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "test.toml", Path::new("/etc/gantry"))
    }

    #[test]
    fn embedded_default_is_an_open_loopback_registry() {
        let c = Config::embedded_default().expect("embedded default must be valid");
        assert_eq!(c.server.listen, "127.0.0.1:5000".parse().expect("addr"));
        assert!(c.server.tls.is_none());
        assert_eq!(c.storage.root, Path::new("./gantry-data"));
        assert_eq!(c.log.level, LogLevel::Info);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn empty_file_gets_every_default() {
        let c = parse("").expect("empty config is valid");
        assert_eq!(c.server.listen.port(), 5000);
        assert_eq!(c.storage.root, Path::new("/etc/gantry/./gantry-data"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = parse(
            r#"
            colour = "blue"
            [server]
            listen = "not-an-address"
            tls_cert_file = "/nonexistent/cert.pem"
            [storage]
            root = 7
            [log]
            level = "loud"
            format = "xml"
            extra = 1
            "#,
        )
        .expect_err("invalid");
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.listen",
                "server.tls_key_file",
                "storage.root",
                "log.level",
                "log.format",
                "log.extra",
                "colour"
            ],
            "{err}"
        );
        assert!(err.to_string().contains("7 problems"), "{err}");
    }

    #[test]
    fn known_keys_cover_every_section() {
        let keys = known_keys();
        for expected in [
            "server.listen",
            "storage.root",
            "log.format",
            "auth.token.ttl_seconds",
            "auth.oidc[].policy.settings",
            "auth.oidc[].username_prefix",
            "access_control.admin_policy.actions",
            "access_control.repositories.\"<glob>\".policies[].groups",
        ] {
            assert!(
                keys.iter().any(|k| k == expected),
                "{expected} missing from {keys:#?}"
            );
        }
    }

    /// The configuration reference documents every key the loader knows:
    /// each appears in backticks, either as its full path, as a dotted
    /// suffix of it (`admin_policy.users`), or as its bare name under its
    /// section's heading.
    #[test]
    fn configuration_reference_documents_every_key() {
        let doc = include_str!("../../../docs/configuration.md");
        let keys = known_keys();
        let sections: Vec<&String> = keys
            .iter()
            .filter(|k| {
                keys.iter()
                    .any(|o| o.starts_with(&format!("{k}.")) || o.starts_with(&format!("{k}[")))
            })
            .collect();
        let mut missing = Vec::new();
        for key in keys.iter().filter(|k| !sections.contains(k)) {
            let parts: Vec<&str> = key.split('.').collect();
            let documented = (0..parts.len()).any(|i| {
                let suffix = parts[i..].join(".");
                if !doc.contains(&format!("`{suffix}`")) {
                    return false;
                }
                if i + 1 < parts.len() || i == 0 {
                    return true;
                }
                // A bare name needs its section's heading.
                let section = parts[..i].join(".").replace("[]", "");
                doc.contains(&format!("`[{section}]`")) || doc.contains(&format!("`[[{section}]]`"))
            });
            if !documented {
                missing.push(key.clone());
            }
        }
        assert!(
            missing.is_empty(),
            "docs/configuration.md does not document: {missing:#?}"
        );
    }

    #[test]
    fn a_section_that_is_not_a_table_is_named() {
        let err = parse("server = 3").expect_err("invalid");
        assert_eq!(err.problems[0].path, "server");
        assert!(err.problems[0].reason.contains("must be a table"));
    }

    #[test]
    fn durations_parse_with_their_unit_and_bad_ones_are_named() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("15m", Duration::from_secs(900)),
            ("24h", Duration::from_secs(86_400)),
            ("7d", Duration::from_secs(604_800)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["10", "5x", "", "h", "-1s", "99999999999999999999d"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        let err = parse("[storage.gc]\nupload_ttl = \"0\"\n[server]\nidle_timeout = \"1y\"\n")
            .expect_err("invalid");
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["server.idle_timeout", "storage.gc.upload_ttl"],
            "{err}"
        );
    }

    #[test]
    fn s3_checksums_are_on_unless_turned_off() {
        let s3 = |extra: &str| {
            parse(&format!(
                "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\n{extra}"
            ))
        };
        let checksum = |c: Config| match c.storage.backend {
            Backend::S3(s3) => s3.checksum,
            Backend::Fs => panic!("an s3 config read as fs"),
        };
        assert!(checksum(s3("").expect("default")));
        assert!(checksum(s3("checksum = \"sha256\"").expect("sha256")));
        assert!(!checksum(s3("checksum = \"none\"").expect("none")));
        let err = s3("checksum = \"md5\"").expect_err("md5 is not offered");
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].path, "storage.s3.checksum", "{err}");
        assert!(err.to_string().contains("`md5`"), "{err}");
    }
}
