//! `gantry policy push`: builds a policy artifact from a module (or
//! `--cel`), settings and fixtures, and pushes it to a registry like any
//! client; prints the manifest digest. The registry validates it before the
//! tag moves and answers why not.

use std::path::PathBuf;

use crate::cli::client::{Client, ClientError, Credentials};
use crate::policy::artifact::{self, BlobRef};

/// Arguments of `gantry policy push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The registry's base URL, e.g. http://127.0.0.1:5000.
    #[arg(long, value_name = "URL")]
    pub registry: String,
    /// Where the artifact goes, e.g. team-a/policies/k8s.
    #[arg(long, value_name = "REPOSITORY")]
    pub repository: String,
    /// The tag to push (a followed tag such as `live`, or a candidate such
    /// as `next`).
    #[arg(long)]
    pub tag: String,
    /// The policy component (.wasm).
    #[arg(
        long,
        value_name = "P.wasm",
        required_unless_present = "cel",
        conflicts_with = "cel"
    )]
    pub module: Option<PathBuf>,
    /// The built-in CEL policy (`"module": "builtin:cel"`, no module layer).
    #[arg(long)]
    pub cel: bool,
    /// The policy's settings, TOML or JSON (by extension).
    #[arg(long, value_name = "S.toml")]
    pub settings: PathBuf,
    /// Cases the registry runs before the artifact becomes visible (TOML,
    /// the `gantry policy test --fixtures` format).
    #[arg(long, value_name = "F.toml")]
    pub fixtures: Option<PathBuf>,
    /// Ask for a smaller time budget than the tenant's ceiling.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Ask for a smaller memory cap than the tenant's ceiling.
    #[arg(long, value_name = "MIB")]
    pub memory_limit_mib: Option<u64>,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// Why a push did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Registry(#[from] ClientError),
}

/// The config blob for these arguments.
fn config_blob(args: &PushArgs, settings: serde_json::Value) -> Vec<u8> {
    let mut config = serde_json::json!({ "settings": settings });
    if args.cel {
        config["module"] = "builtin:cel".into();
    }
    let mut limits = serde_json::Map::new();
    if let Some(ms) = args.timeout_ms {
        limits.insert("timeout_ms".into(), ms.into());
    }
    if let Some(mib) = args.memory_limit_mib {
        limits.insert("memory_limit_mib".into(), mib.into());
    }
    if !limits.is_empty() {
        config["limits"] = serde_json::Value::Object(limits);
    }
    config.to_string().into_bytes()
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, PushError> {
    std::fs::read(path).map_err(|e| PushError::Input(format!("{what} {}: {e}", path.display())))
}

/// Pushes the artifact; returns its manifest digest.
pub async fn push(args: &PushArgs) -> Result<String, PushError> {
    let settings = super::read_settings(&args.settings).map_err(PushError::Input)?;
    let config = config_blob(args, settings);
    // Checked here too, so a typo is caught before anything is uploaded.
    artifact::parse_config(&config).map_err(|e| PushError::Input(e.to_string()))?;
    let module = match &args.module {
        Some(p) => Some(read(p, "module")?),
        None => None,
    };
    let fixtures = match &args.fixtures {
        Some(p) => {
            let bytes = read(p, "fixtures")?;
            let text = String::from_utf8(bytes.clone())
                .map_err(|_| PushError::Input(format!("fixtures {}: not UTF-8", p.display())))?;
            crate::policy::fixtures::parse_toml(&text)
                .map_err(|e| PushError::Input(format!("fixtures {}: {e}", p.display())))?;
            Some(bytes)
        }
        None => None,
    };
    let client = Client::new(&args.registry, &args.credentials)?;
    let repo = &args.repository;
    let upload = |bytes: Vec<u8>| async {
        let size = bytes.len() as u64;
        let digest = client.push_blob(repo, bytes).await?;
        Ok::<_, ClientError>(BlobRef { digest, size })
    };
    let config = upload(config).await?;
    let module = match module {
        Some(b) => Some(upload(b).await?),
        None => None,
    };
    let fixtures = match fixtures {
        Some(b) => Some(upload(b).await?),
        None => None,
    };
    if module.is_none() && fixtures.is_none() {
        // The empty descriptor stands in for the layers.
        upload(b"{}".to_vec()).await?;
    }
    let manifest = artifact::manifest_json(&config, module.as_ref(), fixtures.as_ref());
    Ok(client.push_manifest(repo, &args.tag, &manifest).await?)
}
