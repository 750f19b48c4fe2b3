//! Shared support for Gantry's policy tests: the repository's paths, TOML
//! files as JSON, and the shared claim-fixture format of `examples/policies/`
//! (read by `gantry policy test --fixtures` too; this reads it through the
//! same parser, `gantry::policy::fixtures`, so the two cannot drift).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use gantry::policy::fixtures::Expect;
use gantry::policy::{Decision, EngineOptions, Limits, PolicyEngine};
use serde_json::Value;

/// Time budget of a guest call in tests that do not test time: wider than
/// the default 100 ms, because tests run a debug build of wasmtime, several
/// at once on two cores. The memory cap stays the default.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The default limits with [`TEST_TIMEOUT`].
pub fn test_limits() -> Limits {
    Limits {
        timeout: TEST_TIMEOUT,
        ..Limits::default()
    }
}

/// One engine per test binary, so each component is compiled once.
pub fn shared_engine() -> PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            PolicyEngine::new(EngineOptions::default()).unwrap_or_else(|e| panic!("engine: {e}"))
        })
        .clone()
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| panic!("tests/ has a parent"))
        .to_path_buf()
}

/// A TOML file as JSON (settings are handed to policies as JSON).
pub fn toml_file(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One `[[case]]` of a fixture file.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub claims: Value,
    /// `"allow"` or `"deny"`.
    pub expect: String,
    pub username: Option<String>,
    pub groups: Option<Vec<String>>,
    pub reason_contains: Option<String>,
}

/// Every case of a fixture file; panics naming the file and the problem.
pub fn fixtures(path: &Path) -> Vec<Case> {
    let cases =
        gantry::policy::fixtures::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    cases
        .into_iter()
        .map(|c| Case {
            expect: match c.expect.decision {
                Some(Expect::Allow) => "allow".into(),
                Some(Expect::Deny) => "deny".into(),
                None => panic!("{}: case {:?} has no expect", path.display(), c.name),
            },
            name: c.name,
            claims: c.claims,
            username: c.expect.username,
            groups: c.expect.groups,
            reason_contains: c.expect.reason_contains,
        })
        .collect()
}

/// Whether `decision` meets `case` exactly (groups in order); the problem if not.
pub fn check(case: &Case, decision: &Decision) -> Result<(), String> {
    match (case.expect.as_str(), decision) {
        ("allow", Decision::Allow(identity)) => {
            if let Some(username) = &case.username
                && &identity.username != username
            {
                return Err(format!(
                    "username {:?}, expected {username:?}",
                    identity.username
                ));
            }
            if let Some(groups) = &case.groups
                && &identity.groups != groups
            {
                return Err(format!("groups {:?}, expected {groups:?}", identity.groups));
            }
            Ok(())
        }
        ("deny", Decision::Deny(reason)) => match &case.reason_contains {
            Some(part) if !reason.contains(part.as_str()) => {
                Err(format!("deny reason {reason:?} does not contain {part:?}"))
            }
            _ => Ok(()),
        },
        (expect, other) => Err(format!("expected {expect}, got {other:?}")),
    }
}
