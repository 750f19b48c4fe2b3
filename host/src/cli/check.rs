//! `gantry config check FILE`, and the one validation that a start and a
//! live reload share with it.

use std::path::Path;
use std::process::ExitCode;

use crate::auth::Auth;
use crate::auth::oidc::FetchOptions;
use crate::config::{Config, ConfigError, Problem};
use crate::policy::{EngineOptions, PolicyEngine};

/// What a configuration needs built before it can serve: its authentication
/// (issuers with their policies loaded and initialised, htpasswd, access
/// control) and its TLS server configuration.
pub struct Built {
    pub auth: Option<Auth>,
    pub tls: Option<rustls::ServerConfig>,
}

/// Builds what `config` names, reporting every problem with its key path.
/// `storage_root` is where Gantry's token key lives (a scratch directory
/// for a check); `previous` is the authentication in force, whose unchanged
/// issuers keep their keys.
pub async fn build(
    config: &Config,
    engine: &PolicyEngine,
    storage_root: &Path,
    previous: Option<&Auth>,
) -> Result<Built, Vec<Problem>> {
    let mut problems = Vec::new();
    let tls = match &config.server.tls {
        None => None,
        Some(files) => match crate::server::load_tls(files) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(Problem {
                    path: format!("server.{}", e.field),
                    reason: e.reason,
                });
                None
            }
        },
    };
    let auth = match &config.auth {
        None => None,
        Some(auth) => match Auth::build(
            auth,
            config.access_control.clone(),
            &config.tenants,
            storage_root,
            engine,
            FetchOptions::default(),
            previous,
        )
        .await
        {
            Ok(a) => Some(a),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        },
    };
    if problems.is_empty() {
        Ok(Built { auth, tls })
    } else {
        Err(problems)
    }
}

/// `gantry config check FILE`: parses, validates, and loads what the file
/// names (TLS files, htpasswd, policy modules with their settings) without
/// touching the storage root; prints every problem.
pub fn check(file: &Path, deny_warnings: bool) -> ExitCode {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    // A scratch root, so checking never creates keys in the real one.
    let scratch = std::env::temp_dir().join(format!("gantry-check-{}", std::process::id()));
    let result = runtime.block_on(async {
        let engine = PolicyEngine::new(EngineOptions::default()).map_err(|e| {
            vec![Problem {
                path: "auth".into(),
                reason: e.to_string(),
            }]
        })?;
        build(&config, &engine, &scratch, None).await.map(|_| ())
    });
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(problems) = result {
        let e = ConfigError {
            source_name: file.display().to_string(),
            problems,
        };
        eprint!("{e}");
        return ExitCode::FAILURE;
    }
    println!("{}: ok", file.display());
    let lints = crate::config::lints::lint(&config);
    for l in &lints {
        println!("{l}");
    }
    let warnings = lints
        .iter()
        .filter(|l| l.severity == crate::config::lints::Severity::Warning)
        .count();
    if warnings > 0 {
        println!(
            "{warnings} warning{}{}",
            if warnings == 1 { "" } else { "s" },
            if deny_warnings {
                " (--deny-warnings)"
            } else {
                ""
            }
        );
    }
    if deny_warnings && warnings > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values are the loader's (reported at parse, with the other problems);
    /// files are read once, when the configuration is built, and each
    /// problem is reported once, under its key.
    #[tokio::test]
    async fn each_issuer_problem_is_found_once_where_it_belongs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing_ca = dir.path().join("absent-ca.pem");
        let text = format!(
            r#"
            [auth]
            [[auth.oidc]]
            issuer = "https://ca.example"
            audiences = ["gantry"]
            ca_file = "{}"
            "#,
            missing_ca.display()
        );
        // Parsing reads no file an issuer names.
        let config = Config::from_toml_str(&text, "t.toml", dir.path()).expect("values are fine");
        let engine = PolicyEngine::new(EngineOptions::default()).expect("engine");
        let problems = match build(&config, &engine, dir.path(), None).await {
            Ok(_) => panic!("a missing ca_file was accepted"),
            Err(p) => p,
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "auth.oidc[0].ca_file");
        assert!(problems[0].reason.contains("absent-ca.pem"), "{problems:?}");

        // A value problem is the loader's, once, beside the file's others.
        let bad = text.replace(
            "audiences = [\"gantry\"]",
            "audiences = [\"gantry\"]\n            algorithms = [\"HS256\"]\n            leeway_seconds = 86400",
        ) + "\n[server]\nlisten = \"nowhere\"\n";
        let err = Config::from_toml_str(&bad, "t.toml", dir.path()).expect_err("HS256 accepted");
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.listen",
                "auth.oidc[0].algorithms",
                "auth.oidc[0].leeway_seconds"
            ],
            "{err}"
        );
    }
}
