//! Listening: plain HTTP or HTTPS (rustls, PEM files), and graceful shutdown
//! on SIGTERM/SIGINT — in-flight requests finish, new connections stop.
//! Nothing half-written becomes visible on shutdown because storage only
//! ever publishes complete files (see `storage::fs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::config::TlsFiles;

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Loads PEM certificate chain and key into a rustls server config,
/// checking that the key belongs to the certificate.
pub fn load_tls(files: &TlsFiles) -> Result<rustls::ServerConfig, (&'static str, String)> {
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

/// Config-time check of the TLS files (readable, PEM, matching).
pub fn check_tls_files(files: &TlsFiles) -> Result<(), (&'static str, String)> {
    load_tls(files).map(|_| ())
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

/// Serves `app` on `listener` until a shutdown signal, over TLS when given.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    match tls {
        None => {
            tracing::info!(%addr, "listening (http)");
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
        Some(config) => {
            tracing::info!(%addr, "listening (https)");
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                h.graceful_shutdown(Some(SHUTDOWN_GRACE));
            });
            let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            axum_server::from_tcp_rustls(listener, tls)
                .handle(handle)
                .serve(app.into_make_service())
                .await
        }
    }
}
