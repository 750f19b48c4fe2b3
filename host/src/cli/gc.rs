//! `gantry gc [--config F] [--dry-run] [--untagged]`: one garbage-collection
//! run against the configured storage, safe while servers keep serving it
//! (see `storage::gc`). Prints what it removed (or would remove) and the
//! bytes freed.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::storage::gc::{GcOptions, GcReport, run_logged};

pub fn run(config: Option<PathBuf>, dry_run: bool, untagged: bool) -> ExitCode {
    let (config, runtime) = match super::load_and_start(config.as_deref()) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let storage = super::serve::open_backend(&config, false).await?;
        let opts = GcOptions {
            dry_run,
            untagged,
            grace: config.storage.gc.grace,
        };
        run_logged(storage.as_ref(), opts, "command")
            .await
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(report) => {
            print!("{}", render(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gantry gc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The report as the command prints it: one line per object, then totals.
pub fn render(r: &GcReport) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    for (repo, d) in &r.manifests {
        out.push_str(&format!("{verb} manifest {repo}@{d}\n"));
    }
    for (repo, d) in &r.links {
        out.push_str(&format!("{verb} link {repo} -> {d}\n"));
    }
    for (d, size) in &r.blobs {
        out.push_str(&format!("{verb} blob {d} ({size} bytes)\n"));
    }
    for d in &r.restored {
        out.push_str(&format!(
            "kept blob {d}: a push made while collecting references it\n"
        ));
    }
    out.push_str(&format!(
        "{}: {} blobs, {} links, {} manifests, {} expired upload sessions; {} bytes {}; {} unreferenced objects kept (younger than the grace)\n",
        if r.dry_run { "dry run" } else { "done" },
        r.blobs.len(),
        r.links.len(),
        r.manifests.len(),
        if r.dry_run { "(not counted in a dry run)".to_string() } else { r.uploads.to_string() },
        r.bytes_freed,
        if r.dry_run { "would be freed" } else { "freed" },
        r.kept_young,
    ));
    out
}
