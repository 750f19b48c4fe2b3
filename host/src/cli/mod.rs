//! The face: the `gantry` commands. `serve` (run the registry, reload its
//! configuration live), `config check` (validate a file exactly as a start
//! or a reload would) and `policy test` (try a claim policy on claims).
//!
//! Everything here is argument handling, wiring and printing; the runtime
//! parts (storage, auth, policy, server) know nothing of the command line.

pub mod check;
pub mod policy;
pub mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        /// SIGHUP, or a change of the file's content, reloads it live.
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
        command: policy::PolicyCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate FILE, loading everything it names (TLS files,
    /// htpasswd, each issuer's policy with its settings); print every
    /// problem; exit non-zero if any.
    Check { file: PathBuf },
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve::serve(config),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check::check(&file),
        Command::Policy { command } => policy::run(command),
    }
}

/// A multi-threaded tokio runtime, or the reason there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}
