//! The `gantry` command: `serve`, `config check`, `policy ...`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use gantry::config::Config;

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "An OCI registry for machines, with OIDC workload identity"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (the default when no command is given).
    Serve {
        /// Configuration file; without it the embedded default is used.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Claim-policy tools.
    Policy {
        #[command(subcommand)]
        command: gantry::policy::cli::PolicyCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate FILE; print every problem; exit non-zero if any.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check(&file),
        Command::Policy { command } => gantry::policy::cli::run(command),
    }
}

/// `gantry config check FILE`: parses, validates, and loads what the file
/// names (TLS files, htpasswd, policy modules with their settings) without
/// touching the storage root; prints every problem.
fn check(file: &std::path::Path) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(auth) = &config.auth {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        // A scratch root, so checking never creates keys in the real one.
        let scratch = std::env::temp_dir().join(format!("gantry-check-{}", std::process::id()));
        let result = runtime.block_on(async {
            let engine =
                gantry::policy::PolicyEngine::new(gantry::policy::EngineOptions::default())
                    .map_err(|e| {
                        vec![gantry::config::Problem {
                            path: "auth".into(),
                            reason: e.to_string(),
                        }]
                    })?;
            gantry::auth::Auth::build(
                auth,
                config.access_control.clone(),
                &scratch,
                &engine,
                Default::default(),
            )
            .await
            .map(|_| ())
        });
        let _ = std::fs::remove_dir_all(&scratch);
        if let Err(problems) = result {
            let e = gantry::config::ConfigError {
                source_name: file.display().to_string(),
                problems,
            };
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    }
    println!("{}: ok", file.display());
    ExitCode::SUCCESS
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match &path {
        Some(p) => Config::load(p),
        None => Config::embedded_default(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    gantry::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
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

async fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    use anyhow::Context;
    match &path {
        Some(p) => tracing::info!(config = %p.display(), "configuration loaded"),
        None => tracing::info!("using the embedded default configuration"),
    }
    let storage =
        gantry::storage::fs::FsStorage::open_with(&config.storage.root, config.storage.uploads)
            .await
            .with_context(|| format!("opening storage root {}", config.storage.root.display()))?;
    let storage: Arc<dyn gantry::storage::Storage> = Arc::new(storage);
    tracing::info!(root = %config.storage.root.display(), "storage ready");
    gantry::storage::spawn_upload_sweep(storage.clone(), config.storage.uploads);
    let auth = match &config.auth {
        None => {
            tracing::warn!(
                "no [auth] is configured: this is an OPEN registry; anyone who can reach it may push, pull and delete"
            );
            None
        }
        Some(auth_config) => {
            let engine = gantry::policy::PolicyEngine::new(gantry::policy::EngineOptions {
                cache_dir: Some(config.storage.root.join("policy-cache")),
                ..Default::default()
            })?;
            let auth = gantry::auth::Auth::build(
                auth_config,
                config.access_control.clone(),
                &config.storage.root,
                &engine,
                Default::default(),
            )
            .await
            .map_err(|problems| {
                let e = gantry::config::ConfigError {
                    source_name: "configuration".into(),
                    problems,
                };
                anyhow::anyhow!("{e}")
            })?;
            auth.start();
            tracing::info!(issuers = auth_config.oidc.len(), realm = %auth.realm, "authentication ready");
            Some(Arc::new(auth))
        }
    };
    let tls = match &config.server.tls {
        Some(files) => Some(
            gantry::server::load_tls(files)
                .map_err(|(field, reason)| anyhow::anyhow!("server.{field}: {reason}"))?,
        ),
        None => None,
    };
    let state = gantry::distribution::AppState { storage, auth };
    let listener = std::net::TcpListener::bind(config.server.listen)
        .with_context(|| format!("binding {}", config.server.listen))?;
    listener.set_nonblocking(true)?;
    gantry::server::serve(listener, gantry::app(state), tls, config.server.limits).await?;
    tracing::info!("stopped");
    Ok(())
}
