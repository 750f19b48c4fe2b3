//! `gantry tenant status`: a tenant's policies as a table, from the
//! registry's `GET /gantry/v1/tenants/{name}`.

use std::fmt::Write as _;
use std::process::ExitCode;

use super::client::{Client, Credentials};

/// Arguments of `gantry tenant status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The registry's base URL, e.g. http://127.0.0.1:5000.
    #[arg(long, value_name = "URL")]
    pub registry: String,
    /// The tenant's name.
    #[arg(long)]
    pub tenant: String,
    /// Print the JSON the registry answered instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// Renders the status document as a table: one row per issuer and slot.
pub fn table(status: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tenant {} (namespace {})",
        text(&status["tenant"]),
        text(&status["namespace"])
    );
    let _ = writeln!(
        out,
        "{:<34} {:<7} {:<20} {:<12} {:>7} {:>7} {:>8} {:>9}  source / problem",
        "issuer", "slot", "digest", "since", "allows", "denies", "failures", "disagree"
    );
    for issuer in status["issuers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        for slot in ["active", "shadow"] {
            let s = &issuer[slot];
            if s.is_null() {
                continue;
            }
            let digest = s["digest"]
                .as_str()
                .map_or("-".to_owned(), |d| d.chars().take(19).collect::<String>());
            let detail = match s["problem"].as_str() {
                Some(p) => p.to_owned(),
                None => text(&s["source"]),
            };
            let _ = writeln!(
                out,
                "{:<34} {:<7} {:<20} {:<12} {:>7} {:>7} {:>8} {:>9}  {}",
                text(&issuer["issuer"]),
                slot,
                digest,
                text(&s["since"]),
                text(&s["allows"]),
                text(&s["denies"]),
                text(&s["failures"]),
                text(&s["shadow_disagreements"]),
                detail
            );
        }
    }
    match status.get("last_refused_push") {
        Some(p) if !p.is_null() => {
            let _ = writeln!(
                out,
                "last refused push: {} {} at {}: {}",
                text(&p["repository"]),
                text(&p["digest"]),
                text(&p["at"]),
                text(&p["reason"])
            );
        }
        _ => {
            let _ = writeln!(out, "last refused push: none");
        }
    }
    out
}

pub fn status(args: &StatusArgs) -> ExitCode {
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let client = Client::new(&args.registry, &args.credentials)?;
        client
            .get_json(&format!("/gantry/v1/tenants/{}", args.tenant))
            .await
    });
    match result {
        Ok(status) if args.json => {
            println!("{status:#}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            print!("{}", table(&status));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
