//! Listening: plain HTTP or HTTPS (rustls, PEM files), HTTP/1.1 and HTTP/2,
//! connection limits, and graceful shutdown on SIGTERM/SIGINT — in-flight
//! requests finish, new connections stop. Nothing half-written becomes
//! visible on shutdown because storage only ever publishes complete files
//! (see `storage::fs`).
//!
//! Our own accept loop (hyper-util's connection builder under it) rather
//! than `axum::serve`, because every connection must be bounded
//! ([`ConnectionLimits`]) or a few hundred idle sockets hold every file
//! descriptor and nothing else gets in:
//! - a connection must finish its TLS handshake and its first request head
//!   within `header_read_timeout`, and is closed once it has been idle
//!   (no request in flight) for `idle_timeout` ([`conn`]);
//! - a request body must keep a minimum rate ([`body`]);
//! - at most `max_connections` are served at once, capped at half the
//!   open-file limit; at the cap, the oldest connection with no request in
//!   flight is closed to make room, so a flood of half-sent requests can
//!   never lock out a client that sends a whole one.

mod body;
mod conn;
pub mod follow;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::sync::{Semaphore, watch};

use self::conn::ConnState;
use crate::config::{ConnectionLimits, TlsFiles};

/// The TLS configuration new connections are accepted with; a reload
/// swaps it (certificate rotation) without touching open connections.
pub type LiveTls = Arc<arc_swap::ArcSwap<rustls::ServerConfig>>;

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A TLS file that cannot serve: which `[server]` key names it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TlsError {
    /// `tls_cert_file` or `tls_key_file`.
    pub field: &'static str,
    pub reason: String,
}

impl From<(&'static str, String)> for TlsError {
    fn from((field, reason): (&'static str, String)) -> TlsError {
        TlsError { field, reason }
    }
}

/// Loads PEM certificate chain and key into a rustls server config,
/// checking that the key belongs to the certificate.
pub fn load_tls(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    load_tls_files(files).map_err(TlsError::from)
}

fn load_tls_files(files: &TlsFiles) -> Result<rustls::ServerConfig, (&'static str, String)> {
    let certs = read_pem(&files.cert_file, "tls_cert_file", |r| {
        rustls_pemfile::certs(r).collect::<Result<Vec<_>, _>>()
    })?;
    if certs.is_empty() {
        return Err((
            "tls_cert_file",
            format!("{}: no PEM certificate found", files.cert_file.display()),
        ));
    }
    let key = read_pem(&files.key_file, "tls_key_file", rustls_pemfile::private_key)?.ok_or_else(
        || {
            (
                "tls_key_file",
                format!("{}: no PEM private key found", files.key_file.display()),
            )
        },
    )?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls_cert_file", e.to_string()))?
        .with_no_client_auth();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            (
                "tls_key_file",
                format!("{}: unusable private key: {e}", files.key_file.display()),
            )
        })?;
    let certified = rustls::sign::CertifiedKey::new(certs.clone(), signing_key);
    if let Err(e) = certified.keys_match() {
        return Err((
            "tls_key_file",
            format!(
                "{} does not match the certificate in {}: {e}",
                files.key_file.display(),
                files.cert_file.display()
            ),
        ));
    }
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        (
            "tls_cert_file",
            format!("{}: {e}", files.cert_file.display()),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_pem<T>(
    path: &Path,
    field: &'static str,
    parse: impl FnOnce(&mut dyn std::io::BufRead) -> std::io::Result<T>,
) -> Result<T, (&'static str, String)> {
    let bytes =
        std::fs::read(path).map_err(|e| (field, format!("cannot read {}: {e}", path.display())))?;
    parse(&mut bytes.as_slice())
        .map_err(|e| (field, format!("{}: not valid PEM: {e}", path.display())))
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// How many connections to serve at once: the configured number (0: no
/// preference), never more than half the open-file limit, so that storage,
/// policy and issuer traffic always find a descriptor.
fn connection_cap(configured: usize) -> usize {
    let fd_limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    // An unlimited process still gets a bound a semaphore can hold.
    let ceiling = usize::try_from(fd_limit / 2)
        .unwrap_or(usize::MAX)
        .clamp(1, 1 << 20);
    match configured {
        0 => ceiling,
        n if n > ceiling => {
            tracing::warn!(
                max_connections = n,
                open_file_limit = fd_limit,
                using = ceiling,
                "server.max_connections is above half the open-file limit; capped"
            );
            ceiling
        }
        n => n,
    }
}

/// The connections being served, oldest first (for shedding at the cap).
#[derive(Default)]
struct Registry {
    next_id: u64,
    live: BTreeMap<u64, Arc<ConnState>>,
}

impl Registry {
    /// Asks the oldest connection with no request in flight to close;
    /// false when every connection is busy.
    fn shed_oldest_idle(&self) -> bool {
        match self.live.values().find(|c| c.sheddable()) {
            Some(c) => {
                c.shed();
                true
            }
            None => false,
        }
    }
}

/// Runs when a connection's task ends, however it ends (finished, or
/// aborted by its watchdog): frees its slot and ends its watchdog.
struct Ended {
    registry: Arc<Mutex<Registry>>,
    state: Arc<ConnState>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Ended {
    fn drop(&mut self) {
        lock(&self.registry).live.remove(&self.state.id);
        self.state.ended();
    }
}

fn lock(registry: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves `app` on `listener` until a shutdown signal, over TLS when given,
/// within `limits`.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<LiveTls>,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let cap = connection_cap(limits.max_connections);
    tracing::info!(
        %addr,
        scheme = if tls.is_some() { "https" } else { "http" },
        max_connections = cap,
        "listening"
    );
    let mut builder = Builder::new(TokioExecutor::new());
    // No hyper header timer: it re-arms a timer for every request head,
    // which costs the hot path about a tenth. The connection watchdog
    // enforces `header_read_timeout` up to the first request and
    // `idle_timeout` between requests (a trickled later head included).
    builder.http1().header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let body_rule = body::Rule::new(&limits);
    let permits = Arc::new(Semaphore::new(cap));
    let registry = Arc::new(Mutex::new(Registry::default()));
    let (stop_tx, stop_rx) = watch::channel(false);

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At the cap: make room by closing the oldest idle (or
                // still-silent) connection, else wait for one to end.
                lock(&registry).shed_oldest_idle();
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = {
            let mut r = lock(&registry);
            r.next_id += 1;
            let id = r.next_id;
            let state = Arc::new(ConnState::new(id));
            r.live.insert(id, state.clone());
            state
        };
        let task = conn::Connection {
            app: app.clone(),
            builder: builder.clone(),
            tls: tls
                .as_ref()
                .map(|t| tokio_rustls::TlsAcceptor::from(t.load_full())),
            body_rule,
            state,
            stop: stop_rx.clone(),
        };
        let state = task.state.clone();
        let ended = Ended {
            registry: registry.clone(),
            state: state.clone(),
            _permit: permit,
        };
        let connection = tokio::spawn(async move {
            // Dropped when the task ends or is aborted by its watchdog.
            let _ended = ended;
            task.run(stream, peer).await;
        });
        tokio::spawn(conn::watchdog(state, limits, connection.abort_handle()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: all permits back means
    // all connections done.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the shutdown grace period; closing them"
        );
    }
    Ok(())
}

/// An accept that failed. Out of descriptors (EMFILE/ENFILE) would fail
/// again at once: pause so the loop does not spin while connections end.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted => {}
        _ => {
            tracing::warn!(error = %e, "accept failed; pausing 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_tls_files_are_named_where_they_are_loaded() {
        // Parsing keeps the paths; loading them (start, check, reload)
        // reports the unreadable file under its key.
        let c = crate::config::Config::from_toml_str(
            "[server]\ntls_cert_file = \"/nonexistent/c.pem\"\ntls_key_file = \"/nonexistent/k.pem\"\n",
            "test.toml",
            std::path::Path::new("/etc/gantry"),
        )
        .expect("parses");
        let files = c.server.tls.expect("tls");
        let e = load_tls(&files).expect_err("unreadable");
        assert_eq!(e.field, "tls_cert_file");
        assert!(e.reason.contains("cannot read"), "{e}");
    }
}
