//! `gantry policy ...`: tools for policy authors.
//!
//! Owns: `gantry policy test`, which loads a module with a settings file,
//! evaluates a claims file, prints the decision and checks expectations.
//! Must not: start the registry, touch its config or storage, or print a
//! stack trace for a user mistake: every failure is one message naming the
//! file and the problem. Exit codes: 0 success, 1 an expectation failed, 2 a
//! usage, file, load or evaluation error.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Decision, EngineOptions, Limits, LoadedPolicy, ModuleSource, PolicyEngine};

/// `gantry policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Evaluate a claims file against a policy module and print the decision.
    ///
    /// Example: gantry policy test --module builtin:cel --settings team-a.toml
    /// --claims k8s-token.json --expect allow --username system:serviceaccount:ns:sa
    Test(TestArgs),
}

/// Arguments of `gantry policy test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The policy: `builtin:cel` or the path of a `.wasm` component.
    #[arg(long, value_name = "builtin:cel|PATH.wasm")]
    pub module: String,
    /// The module's settings, as TOML or JSON (by file extension). Omitted: `{}`.
    #[arg(long, value_name = "SETTINGS.toml|SETTINGS.json")]
    pub settings: Option<PathBuf>,
    /// The verified claims to evaluate: a JSON object.
    #[arg(long, value_name = "CLAIMS.json")]
    pub claims: PathBuf,
    /// Fail (exit 1) unless the decision is this.
    #[arg(long, value_enum)]
    pub expect: Option<Expect>,
    /// Fail (exit 1) unless the policy allows with this username.
    #[arg(long)]
    pub username: Option<String>,
    /// Fail (exit 1) unless the policy allows with exactly these groups
    /// (comma-separated, in any order; `--groups ''` expects none).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub groups: Option<Vec<String>>,
    /// Keep compiled modules here so the next run skips the JIT.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Time budget per guest call, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
}

/// The decision `--expect` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Expect {
    /// The policy allows.
    Allow,
    /// The policy denies.
    Deny,
}

/// Runs a `gantry policy` subcommand; returns the process exit code.
pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Test(args) => match test(&args) {
            Ok(report) => {
                print!("{}", report.text);
                if report.failures.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    for failure in &report.failures {
                        eprintln!("expectation failed: {failure}");
                    }
                    ExitCode::from(1)
                }
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
        },
    }
}

/// What `test` prints, and the expectations that failed.
struct TestReport {
    text: String,
    failures: Vec<String>,
}

fn test(args: &TestArgs) -> Result<TestReport, String> {
    let source: ModuleSource = args.module.parse().map_err(|e| format!("--module: {e}"))?;
    let settings = match &args.settings {
        Some(path) => read_settings(path)?,
        None => serde_json::Value::Object(serde_json::Map::new()),
    };
    let claims = read_claims(&args.claims)?;
    let mut limits = Limits::default();
    if let Some(ms) = args.timeout_ms {
        limits.timeout = std::time::Duration::from_millis(ms);
    }
    // One evaluation: a single-threaded runtime is all this needs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let engine = PolicyEngine::new(EngineOptions {
        cache_dir: args.cache_dir.clone(),
        ..EngineOptions::default()
    })
    .map_err(|e| e.to_string())?;
    let owner = "gantry-policy-test";
    let (policy, decision) = runtime.block_on(async {
        let policy: LoadedPolicy = engine
            .load(owner, &source, &settings, limits)
            .await
            .map_err(|e| e.to_string())?;
        let decision = policy.evaluate(&claims).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((policy, decision))
    })?;

    let mut text = String::new();
    let report = policy.report();
    let _ = writeln!(
        text,
        "module:   {source} (sha256:{}, {:?}, loaded in {:.1} ms, init {:.1} ms)",
        &report.digest[..12.min(report.digest.len())],
        report.origin,
        report.compile_time.as_secs_f64() * 1e3,
        report.init_time.as_secs_f64() * 1e3,
    );
    match &decision {
        Decision::Allow(identity) => {
            let _ = writeln!(text, "decision: allow");
            let _ = writeln!(text, "username: {}", identity.username);
            let _ = writeln!(text, "groups:   [{}]", identity.groups.join(", "));
        }
        Decision::Deny(reason) => {
            let _ = writeln!(text, "decision: deny");
            let _ = writeln!(text, "reason:   {reason}");
        }
    }
    Ok(TestReport {
        text,
        failures: check_expectations(args, &decision),
    })
}

/// Every expectation that the decision does not meet.
fn check_expectations(args: &TestArgs, decision: &Decision) -> Vec<String> {
    let mut failures = Vec::new();
    let got = match decision {
        Decision::Allow(_) => "allow",
        Decision::Deny(_) => "deny",
    };
    let wants_allow = args.username.is_some() || args.groups.is_some();
    match (args.expect, decision) {
        (Some(Expect::Allow), Decision::Deny(_)) => {
            failures.push(format!("expected allow, got {got}"))
        }
        (Some(Expect::Deny), Decision::Allow(_)) => {
            failures.push(format!("expected deny, got {got}"))
        }
        (None, Decision::Deny(_)) if wants_allow => {
            failures.push("expected allow (--username/--groups), got deny".to_owned());
        }
        _ => {}
    }
    if let Decision::Allow(identity) = decision {
        if let Some(username) = &args.username
            && &identity.username != username
        {
            failures.push(format!(
                "expected username {username:?}, got {:?}",
                identity.username
            ));
        }
        if let Some(groups) = &args.groups {
            let mut want: Vec<&str> = groups
                .iter()
                .map(String::as_str)
                .filter(|g| !g.is_empty())
                .collect();
            let mut have: Vec<&str> = identity.groups.iter().map(String::as_str).collect();
            want.sort_unstable();
            have.sort_unstable();
            if want != have {
                failures.push(format!("expected groups {want:?}, got {have:?}"));
            }
        }
    }
    failures
}

/// Reads a settings file: TOML or JSON by extension, converted to JSON.
fn read_settings(path: &Path) -> Result<serde_json::Value, String> {
    let text = read_text(path, "settings")?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("toml") => {
            let value: toml::Value = toml::from_str(&text)
                .map_err(|e| format!("settings file {}: invalid TOML: {e}", path.display()))?;
            serde_json::to_value(value).map_err(|e| {
                format!(
                    "settings file {}: cannot convert TOML to JSON: {e}",
                    path.display()
                )
            })
        }
        Some("json") => serde_json::from_str(&text)
            .map_err(|e| format!("settings file {}: invalid JSON: {e}", path.display())),
        _ => Err(format!(
            "settings file {}: unknown format: name it .toml or .json",
            path.display()
        )),
    }
}

/// Reads a claims file: one JSON object.
fn read_claims(path: &Path) -> Result<serde_json::Value, String> {
    let text = read_text(path, "claims")?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("claims file {}: invalid JSON: {e}", path.display()))?;
    if !value.is_object() {
        return Err(format!(
            "claims file {}: must be a JSON object",
            path.display()
        ));
    }
    Ok(value)
}

fn read_text(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{what} file {}: cannot read: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Identity;

    fn args(expect: Option<Expect>, username: Option<&str>, groups: Option<&[&str]>) -> TestArgs {
        TestArgs {
            module: "builtin:cel".into(),
            settings: None,
            claims: PathBuf::from("claims.json"),
            expect,
            username: username.map(str::to_owned),
            groups: groups.map(|g| g.iter().map(|s| (*s).to_owned()).collect()),
            cache_dir: None,
            timeout_ms: None,
        }
    }

    fn allow(username: &str, groups: &[&str]) -> Decision {
        Decision::Allow(Identity {
            username: username.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        })
    }

    #[test]
    fn no_expectation_always_passes() {
        assert!(
            check_expectations(&args(None, None, None), &Decision::Deny("no".into())).is_empty()
        );
    }

    #[test]
    fn expect_mismatch_is_reported() {
        let f = check_expectations(
            &args(Some(Expect::Allow), None, None),
            &Decision::Deny("no".into()),
        );
        assert_eq!(f, ["expected allow, got deny"]);
        let f = check_expectations(&args(Some(Expect::Deny), None, None), &allow("u", &[]));
        assert_eq!(f, ["expected deny, got allow"]);
    }

    #[test]
    fn username_and_groups_are_checked_groups_in_any_order() {
        let d = allow("alice", &["b", "a"]);
        assert!(check_expectations(&args(None, Some("alice"), Some(&["a", "b"])), &d).is_empty());
        let f = check_expectations(&args(None, Some("bob"), Some(&["a"])), &d);
        assert_eq!(f.len(), 2, "{f:?}");
        let f = check_expectations(
            &args(None, Some("alice"), None),
            &Decision::Deny("x".into()),
        );
        assert_eq!(f.len(), 1, "{f:?}");
    }

    #[test]
    fn empty_groups_flag_expects_no_groups() {
        assert!(check_expectations(&args(None, None, Some(&[""])), &allow("u", &[])).is_empty());
        assert_eq!(
            check_expectations(&args(None, None, Some(&[""])), &allow("u", &["g"])).len(),
            1
        );
    }

    #[test]
    fn settings_formats() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let toml_path = dir.path().join("s.toml");
        std::fs::write(
            &toml_path,
            "username = \"claims.sub\"\n[[validations]]\nexpression = \"true\"\nmessage = \"m\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let v = read_settings(&toml_path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["username"], "claims.sub");
        assert_eq!(v["validations"][0]["message"], "m");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "username = ").unwrap_or_else(|e| panic!("{e}"));
        let err = read_settings(&bad).err().unwrap_or_default();
        assert!(
            err.contains("bad.toml") && err.contains("invalid TOML"),
            "{err}"
        );

        let yaml = dir.path().join("s.yaml");
        std::fs::write(&yaml, "a: b").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            read_settings(&yaml)
                .err()
                .unwrap_or_default()
                .contains("unknown format")
        );

        let missing = read_settings(&dir.path().join("nope.json"))
            .err()
            .unwrap_or_default();
        assert!(
            missing.contains("nope.json") && missing.contains("cannot read"),
            "{missing}"
        );
    }

    #[test]
    fn claims_must_be_an_object() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c.json");
        std::fs::write(&path, "[1, 2]").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            read_claims(&path)
                .err()
                .unwrap_or_default()
                .contains("must be a JSON object")
        );
    }
}
