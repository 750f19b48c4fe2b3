//! The face: the `gantry` commands. `serve` (run the registry, reload its
//! configuration live; `--dev` for a self-contained trial with its own
//! OIDC issuer), `config check` (validate a file exactly as a start or a
//! reload would), `policy test` (try a claim policy on claims) and `dev
//! token` (mint a token from a running `serve --dev`), `policy push` and
//! `tenant status` (a tenant's side, against a running registry).
//!
//! Everything here is argument handling, wiring and printing; the runtime
//! parts (storage, auth, policy, server) know nothing of the command line.

pub mod check;
pub mod client;
pub mod dev;
pub mod gc;
pub mod import;
pub mod policy;
pub mod serve;
pub mod tenant;

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
        #[arg(long, conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Dev mode, for trying Gantry out: auth on, an OIDC issuer inside
        /// the process, and a printed token with the login lines that use it.
        #[arg(long)]
        dev: bool,
        /// With --dev: listen here instead of the default 127.0.0.1:5000.
        #[arg(long, requires = "dev")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Tools for `gantry serve --dev`.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Collect garbage once: blobs no manifest references, links of
    /// removed content, expired upload sessions (and untagged manifests
    /// with --untagged). Safe while servers run on the same storage.
    Gc {
        /// Configuration file (its [storage]); without it the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove manifests no tag reaches (nor an index or subject of
        /// one that a tag reaches), once older than the grace.
        #[arg(long)]
        untagged: bool,
    },
    /// Claim-policy tools.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Tenant tools.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Print a tenant's policies (active and shadow digests, since when,
    /// decisions since then) and its last refused push, from a running
    /// registry; for the tenant's admins and registry admins.
    Status(tenant::StatusArgs),
}

#[derive(Subcommand)]
enum DevCommand {
    /// Mint a token from the running dev issuer and print it.
    Token {
        /// The token's `sub` (the identity is `dev:<sub>`).
        #[arg(long)]
        sub: String,
        /// An extra claim, NAME=VALUE (VALUE as JSON, or else a string); repeatable.
        #[arg(long = "claim")]
        claims: Vec<String>,
        /// The dev issuer's URL; default: the one `gantry serve --dev`
        /// recorded under the storage root of the current directory.
        #[arg(long)]
        issuer: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parse and validate FILE, loading everything it names (TLS files,
    /// htpasswd, each issuer's policy with its settings); print every
    /// problem; exit non-zero if any. Then print the lints (G1xx: settings
    /// that are valid but have let workloads in where they should not).
    Check {
        file: PathBuf,
        /// Exit 1 when any lint is a warning.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print another registry's configuration as Gantry TOML; what cannot
    /// be converted is listed on stderr by key.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
}

#[derive(Subcommand)]
enum ImportFrom {
    /// A zot configuration (JSON or YAML).
    Zot { file: PathBuf },
    /// A Kubernetes AuthenticationConfiguration (apiserver.config.k8s.io/v1).
    Kubernetes { file: PathBuf },
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve {
        config: None,
        dev: false,
        listen: None,
    }) {
        Command::Serve {
            config, dev: false, ..
        } => serve::serve(config),
        Command::Serve {
            dev: true, listen, ..
        } => serve::serve_dev(listen),
        Command::Dev {
            command:
                DevCommand::Token {
                    sub,
                    claims,
                    issuer,
                },
        } => dev::token_command(&sub, &claims, issuer),
        Command::Config {
            command:
                ConfigCommand::Check {
                    file,
                    deny_warnings,
                },
        } => check::check(&file, deny_warnings),
        Command::Config {
            command:
                ConfigCommand::Import {
                    from: ImportFrom::Zot { file },
                },
        } => import::run_zot(&file),
        Command::Config {
            command:
                ConfigCommand::Import {
                    from: ImportFrom::Kubernetes { file },
                },
        } => import::run_kubernetes(&file),
        Command::Gc {
            config,
            dry_run,
            untagged,
        } => gc::run(config, dry_run, untagged),
        Command::Policy { command } => policy::run(command),
        Command::Tenant {
            command: TenantCommand::Status(args),
        } => tenant::status(&args),
    }
}

/// The configuration at `path` (or the embedded default) with telemetry
/// set up from it, and a runtime to run on; or the exit code after saying
/// why not.
fn load_and_start(
    path: Option<&std::path::Path>,
) -> Result<(crate::config::Config, tokio::runtime::Runtime), ExitCode> {
    let config = match path {
        Some(p) => crate::config::Config::load(p),
        None => crate::config::Config::embedded_default(),
    };
    let config = config.map_err(|e| {
        eprint!("{e}");
        ExitCode::FAILURE
    })?;
    crate::telemetry::init(
        config.log.level.as_str(),
        config.log.format == crate::config::LogFormat::Json,
    );
    Ok((config, runtime()?))
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
