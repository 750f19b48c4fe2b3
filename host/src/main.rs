//! The `gantry` command: `serve`, `config check`, `policy ...`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use gantry::config::Config;

#[derive(Parser)]
#[command(name = "gantry", version, about = "An OCI registry for machines, with OIDC workload identity")]
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
        Command::Config { command: ConfigCommand::Check { file } } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Policy { command } => gantry::policy::cli::run(command),
    }
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
    tracing::warn!("no authentication is configured: this is an OPEN registry; anyone who can reach it may push, pull and delete");
    let storage = gantry::storage::fs::FsStorage::open(&config.storage.root)
        .await
        .with_context(|| format!("opening storage root {}", config.storage.root.display()))?;
    tracing::info!(root = %config.storage.root.display(), "storage ready");
    let tls = match &config.server.tls {
        Some(files) => Some(gantry::server::load_tls(files).map_err(|(field, reason)| anyhow::anyhow!("server.{field}: {reason}"))?),
        None => None,
    };
    let state = gantry::distribution::AppState { storage: Arc::new(storage) };
    let listener = std::net::TcpListener::bind(config.server.listen)
        .with_context(|| format!("binding {}", config.server.listen))?;
    listener.set_nonblocking(true)?;
    gantry::server::serve(listener, gantry::app(state), tls).await?;
    tracing::info!("stopped");
    Ok(())
}
