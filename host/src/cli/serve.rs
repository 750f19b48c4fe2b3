//! `gantry serve`: config → telemetry → storage → auth → listener, and the
//! live reload of the configuration file.
//!
//! A reload (SIGHUP, or a change of the file's content seen by the poll
//! every `server.reload_poll_seconds`) validates the new file exactly as
//! `gantry config check` does, building everything it names. Any problem:
//! each is logged with its key path and nothing changes. Otherwise the new
//! authentication (issuers, policies, htpasswd, access control, with a fresh
//! decision cache) and TLS certificate are swapped in atomically: requests in
//! flight finish on what they started with, new ones see the new
//! configuration. Unchanged policy modules are not recompiled (the engine's
//! cache is by digest and the old policies are alive while the new ones
//! load) and unchanged issuers keep their keys and refresh schedule.
//! What cannot change live (`server.listen`, the connection limits, TLS on or
//! off, `storage.*`, `log.*`) is reported as "restart to apply".

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::config::{Config, ConfigError, Problem};
use crate::distribution::AppState;
use crate::policy::{EngineOptions, PolicyEngine};
use crate::server::LiveTls;

pub fn serve(path: Option<PathBuf>) -> ExitCode {
    let (config, runtime) = match super::load_and_start(path.as_deref()) {
        Ok(started) => started,
        Err(code) => return code,
    };
    match runtime.block_on(run(config, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gantry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `gantry serve --dev`: starts the dev issuer, then the registry with the
/// embedded default configuration plus the issuer's `[auth]`.
pub fn serve_dev(listen: Option<std::net::SocketAddr>) -> ExitCode {
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let issuer = super::dev::DevIssuer::start().await?;
        let config =
            super::dev::config(&issuer, listen).map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::telemetry::init(
            config.log.level.as_str(),
            config.log.format == crate::config::LogFormat::Json,
        );
        issuer.record(&config.storage.root)?;
        let token = issuer.token("dev-user", Default::default())?;
        tracing::warn!(issuer = %issuer.url(), "DEV MODE: an in-process OIDC issuer mints tokens for anyone on this machine; never use this for real");
        println!("{}", super::dev::banner(&config, &issuer, &token));
        run(config, None).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gantry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the configured backend. On s3 the token signing key lives in the
/// bucket (so every replica signs and verifies with the same one): unless
/// `[auth.token] key_file` names one, it is fetched (or created once) there
/// and kept in `<root>/auth/`, where the token service reads it, replacing
/// whatever an earlier start left there.
async fn open_storage(config: &Config) -> anyhow::Result<Arc<dyn crate::storage::Storage>> {
    open_backend(config, true).await
}

/// Opens the configured backend. `serving`: this process owns the root
/// (fs: clears its temporary files) and needs the shared token key (s3);
/// otherwise (`gantry gc`) a server may be running on the same storage.
pub(super) async fn open_backend(
    config: &Config,
    serving: bool,
) -> anyhow::Result<Arc<dyn crate::storage::Storage>> {
    use crate::config::Backend;
    match &config.storage.backend {
        Backend::Fs => {
            let (root, limits) = (&config.storage.root, config.storage.uploads);
            let storage = if serving {
                crate::storage::fs::FsStorage::open_with(root, limits).await
            } else {
                crate::storage::fs::FsStorage::open_beside_server(root, limits).await
            }
            .with_context(|| format!("opening storage root {}", config.storage.root.display()))?;
            tracing::info!(backend = "fs", root = %config.storage.root.display(), "storage ready");
            Ok(Arc::new(storage))
        }
        Backend::S3(s3) => {
            let storage = crate::storage::s3::S3Storage::open(s3, config.storage.uploads)
                .await
                .with_context(|| format!("opening storage.s3 bucket `{}`", s3.bucket))?;
            tokio::fs::create_dir_all(&config.storage.root)
                .await
                .with_context(|| {
                    format!("creating storage root {}", config.storage.root.display())
                })?;
            let needs_key = serving
                && config
                    .auth
                    .as_ref()
                    .is_some_and(|a| a.token.key_file.is_none());
            if needs_key {
                let key = storage
                    .shared_secret("auth/token-signing-key.p8", || {
                        crate::auth::token::SigningKey::generate().map(|k| k.pkcs8)
                    })
                    .await
                    .context("getting the token signing key from the bucket")?;
                let path = config
                    .storage
                    .root
                    .join("auth")
                    .join("token-signing-key.p8");
                crate::auth::token::replace_private(&path, &key)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            tracing::info!(backend = "s3", bucket = %s3.bucket, prefix = %s3.prefix, endpoint = ?s3.endpoint, "storage ready");
            Ok(Arc::new(storage))
        }
    }
}

async fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    match &path {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("using the embedded default configuration"),
    }
    let storage = open_storage(&config).await?;
    if let Some(every) = config.storage.gc.interval {
        crate::storage::gc::spawn_schedule(storage.clone(), every, config.storage.gc.grace);
        tracing::info!(every = ?every, grace = ?config.storage.gc.grace, "garbage collection scheduled");
    }
    crate::storage::spawn_upload_sweep(storage.clone(), config.storage.uploads);

    // One engine for the life of the process, so a reload reuses compiled
    // modules.
    let engine = PolicyEngine::new(EngineOptions {
        cache_dir: Some(config.storage.root.join("policy-cache")),
        ..Default::default()
    })?;
    let built = super::check::build(&config, &engine, &config.storage.root, None)
        .await
        .map_err(|problems| {
            let e = ConfigError {
                source_name: source_name(path.as_deref()),
                problems,
            };
            anyhow::anyhow!("{e}")
        })?;
    let auth = built.auth.map(Arc::new);
    match &auth {
        None => tracing::warn!(
            "no [auth] is configured: this is an OPEN registry; anyone who can reach it may push, pull and delete"
        ),
        Some(auth) => {
            auth.start();
            tracing::info!(realm = %auth.realm, "authentication ready");
        }
    }
    let tls: Option<LiveTls> = built
        .tls
        .map(|t| Arc::new(arc_swap::ArcSwap::from_pointee(t)));
    if let Some(auth) = &auth {
        // Published policies are in force before the first request.
        crate::server::follow::follow_once(&*storage, auth).await;
    }
    let state = AppState::new(storage, auth);
    crate::server::follow::spawn(state.clone());
    let listener = std::net::TcpListener::bind(config.server.listen)
        .with_context(|| format!("binding {}", config.server.listen))?;
    listener.set_nonblocking(true)?;
    let text = match &path {
        Some(p) => tokio::fs::read_to_string(p).await,
        None => Ok(crate::config::EMBEDDED_DEFAULT.to_owned()),
    };
    let text_hash = hash_of(&text);
    crate::telemetry::metrics::metrics().config_in_force(&short_hash(text_hash));
    if let Some(addr) = config.server.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding server.metrics_listen {addr}"))?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        tokio::spawn(serve_metrics(metrics, state.clone()));
    }
    let limits = config.server.limits;
    if let Some(path) = path {
        let reloader = Reloader {
            text_hash,
            path,
            running: config,
            engine,
            state: state.clone(),
            tls: tls.clone(),
            generation: 0,
        };
        tokio::spawn(reloader.watch());
    } else {
        // Without a handler SIGHUP would end the process.
        tokio::spawn(async {
            let Ok(mut hangup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hangup.recv().await.is_some() {
                tracing::warn!(
                    "SIGHUP: running the embedded default configuration, there is no file to reload"
                );
            }
        });
    }
    crate::server::serve(listener, crate::app(state), tls, limits).await?;
    tracing::info!("stopped");
    Ok(())
}

fn source_name(path: Option<&Path>) -> String {
    path.map_or("embedded default".into(), |p| p.display().to_string())
}

/// The SHA-256 of a configuration file's text, when it could be read.
fn reload_counted(result: &'static str) {
    crate::telemetry::metrics::metrics()
        .config_reloads
        .get_or_create(&crate::telemetry::metrics::ResultLabel { result })
        .inc();
}

/// `/metrics` on `[server] metrics_listen`: the Prometheus text format,
/// with the values known only now (issuer keys, cache, pools) set first.
async fn serve_metrics(listener: tokio::net::TcpListener, state: AppState) {
    use axum::response::IntoResponse as _;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let state = state.clone();
            async move {
                if let Some(auth) = state.auth() {
                    auth.export_metrics();
                }
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    crate::telemetry::metrics::metrics().encode(),
                )
                    .into_response()
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

/// The first 16 hex digits of a configuration hash ("" without one): what
/// logs and `gantry_config_info` name a configuration by.
fn short_hash(hash: Option<[u8; 32]>) -> String {
    hash.map(|h| hex::encode(&h[..8])).unwrap_or_default()
}

fn hash_of(text: &std::io::Result<String>) -> Option<[u8; 32]> {
    text.as_ref()
        .ok()
        .map(|t| Sha256::digest(t.as_bytes()).into())
}

/// Watches one configuration file and applies its valid versions.
struct Reloader {
    path: PathBuf,
    /// Of the content last seen (applied or refused), so a broken file is
    /// reported once, not at every poll.
    text_hash: Option<[u8; 32]>,
    /// The configuration in force.
    running: Config,
    engine: PolicyEngine,
    state: AppState,
    tls: Option<LiveTls>,
    generation: u64,
}

impl Reloader {
    async fn watch(mut self) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; only the file poll reloads");
                None
            }
        };
        loop {
            let poll = self.running.server.reload_poll_seconds;
            let sighup = async {
                match hangup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sighup => {
                    let text = tokio::fs::read_to_string(&self.path).await;
                    self.reload("SIGHUP", text).await;
                }
                () = tokio::time::sleep(Duration::from_secs(poll.max(1))), if poll > 0 => {
                    // Read once: the text that changed is the text applied.
                    let text = tokio::fs::read_to_string(&self.path).await;
                    if hash_of(&text) != self.text_hash {
                        self.reload("file changed", text).await;
                    }
                }
            }
        }
    }

    async fn reload(&mut self, trigger: &'static str, text: std::io::Result<String>) {
        self.text_hash = hash_of(&text);
        // Names the content in the log, so an operator (or a test) can tell
        // which version a reload event is about.
        let sha256 = short_hash(self.text_hash);
        let name = self.path.display().to_string();
        let result = match text {
            Err(e) => Err(vec![Problem {
                path: String::new(),
                reason: format!("cannot read file: {e}"),
            }]),
            Ok(text) => self.validate(&text, &name).await,
        };
        match result {
            Err(problems) => {
                for p in &problems {
                    tracing::error!(key = %p.path, reason = %p.reason, config = %name, "configuration problem");
                }
                tracing::error!(
                    trigger,
                    config = %name,
                    sha256 = %sha256,
                    problems = problems.len(),
                    "configuration reload refused; the running configuration stays"
                );
                reload_counted("refused");
            }
            Ok((config, built)) => {
                self.report_restart_only(&config);
                let auth = built.auth.map(Arc::new);
                if let Some(a) = &auth {
                    a.start();
                    crate::server::follow::follow_once(&*self.state.storage, a).await;
                }
                if let (Some(live), Some(new)) = (&self.tls, built.tls) {
                    live.store(Arc::new(new));
                }
                self.state.set_auth(auth);
                self.generation += 1;
                // Keep what could not change live as it is running.
                let kept = self.running.clone();
                self.running = Config {
                    server: crate::config::ServerConfig {
                        reload_poll_seconds: config.server.reload_poll_seconds,
                        ..kept.server
                    },
                    storage: kept.storage,
                    log: kept.log,
                    auth: config.auth,
                    access_control: config.access_control,
                    tenants: config.tenants,
                };
                tracing::info!(
                    trigger,
                    config = %name,
                    sha256 = %sha256,
                    generation = self.generation,
                    "configuration reloaded"
                );
                reload_counted("applied");
                crate::telemetry::metrics::metrics().config_in_force(&sha256);
            }
        }
    }

    async fn validate(
        &self,
        text: &str,
        name: &str,
    ) -> Result<(Config, super::check::Built), Vec<Problem>> {
        let base = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let config = Config::from_toml_str(text, name, &base).map_err(|e| e.problems)?;
        let current = self.state.auth();
        let built = super::check::build(
            &config,
            &self.engine,
            &self.running.storage.root,
            current.as_deref(),
        )
        .await?;
        Ok((config, built))
    }

    /// Logs each setting that differs from the running one but only takes
    /// effect at a restart.
    fn report_restart_only(&self, new: &Config) {
        let old = &self.running;
        let mut pending = Vec::new();
        if new.server.listen != old.server.listen {
            pending.push("server.listen");
        }
        if new.server.metrics_listen != old.server.metrics_listen {
            pending.push("server.metrics_listen");
        }
        if new.server.tls.is_some() != old.server.tls.is_some() {
            pending.push("server.tls_cert_file / server.tls_key_file (TLS on or off)");
        }
        if new.server.limits != old.server.limits {
            pending.push("server connection limits (header_read_timeout, idle_timeout, body_*, max_connections)");
        }
        if new.storage.root != old.storage.root
            || new.storage.uploads != old.storage.uploads
            || new.storage.backend != old.storage.backend
            || new.storage.gc != old.storage.gc
        {
            pending.push("storage.*");
        }
        if new.log.level != old.log.level || new.log.format != old.log.format {
            pending.push("log.*");
        }
        for key in pending {
            tracing::warn!(key, "changed in the configuration file; restart to apply");
        }
    }
}
