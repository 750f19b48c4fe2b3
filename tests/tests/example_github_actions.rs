//! The GitHub Actions example policy in Rust, `examples/policies/github-actions`,
//! as the component `tests/build.rs` builds (`GANTRY_EXAMPLE_GITHUB_ACTIONS_WASM`),
//! through the host's policy runtime:
//!
//! - every case of `fixtures.toml` with `settings.toml`, and of
//!   `fixtures.pull-requests.toml` with `settings.pull-requests.toml`, meets
//!   its expectation;
//! - bad settings are refused at load, naming the key;
//! - the component loads with the runtime's default memory cap and stays
//!   small (printing its size and what loading and evaluating it cost).
//!
//! The policy's logic is also unit-tested natively:
//! `cargo test --manifest-path examples/policies/github-actions/Cargo.toml`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gantry::policy::{
    Decision, EngineOptions, Limits, LoadedPolicy, ModuleSource, PolicyEngine, PolicyError,
};
use gantry_tests::{Case, check, toml_file};
use serde_json::{Value, json};

const WASM: &str = env!("GANTRY_EXAMPLE_GITHUB_ACTIONS_WASM");

fn limits() -> Limits {
    gantry_tests::test_limits()
}

fn engine() -> PolicyEngine {
    gantry_tests::shared_engine()
}

fn module() -> ModuleSource {
    ModuleSource::Path(PathBuf::from(WASM))
}

/// Keeps one policy loaded for the whole test binary: the engine keeps a
/// compiled module only while some policy uses it, and the tests run in
/// parallel, each on its own runtime.
async fn keep_compiled() {
    static KEEPER: tokio::sync::OnceCell<LoadedPolicy> = tokio::sync::OnceCell::const_new();
    KEEPER
        .get_or_init(|| async {
            engine()
                .load(
                    "https://keeper.example",
                    &module(),
                    &json!({"allowed_owner_ids": ["1"]}),
                    limits(),
                )
                .await
                .unwrap_or_else(|e| panic!("loading {WASM}: {e}"))
        })
        .await;
}

async fn load(owner: &str, settings: &Value) -> LoadedPolicy {
    keep_compiled().await;
    engine()
        .load(owner, &module(), settings, limits())
        .await
        .unwrap_or_else(|e| panic!("loading {WASM} with {settings}: {e}"))
}

fn example_dir() -> PathBuf {
    gantry_tests::repo_root().join("examples/policies/github-actions")
}

fn fixtures(file: &str) -> Vec<Case> {
    gantry_tests::fixtures(&example_dir().join(file))
}

// --- The fixtures ------------------------------------------------------------

/// Runs every case of `fixture_file` with `settings_file`; returns the
/// number of cases, failing with every mismatch at once.
async fn run_fixtures(settings_file: &str, fixture_file: &str) -> usize {
    let settings = toml_file(&example_dir().join(settings_file));
    let policy = load(&format!("https://{fixture_file}.example.com"), &settings).await;
    let cases = fixtures(fixture_file);
    let mut names = BTreeSet::new();
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            names.insert(&case.name),
            "two cases are named {:?}",
            case.name
        );
        match case.expect.as_str() {
            "allow" => assert!(
                case.username.is_some() && case.groups.is_some() && case.reason_contains.is_none(),
                "allow case {:?} names the exact username and groups, and no reason",
                case.name
            ),
            "deny" => assert!(
                case.username.is_none() && case.groups.is_none() && case.reason_contains.is_some(),
                "deny case {:?} names no identity, and the reason it expects",
                case.name
            ),
            other => panic!(
                "case {:?}: expect = {other:?}, not allow or deny",
                case.name
            ),
        }
        let decision = policy
            .evaluate(&case.claims)
            .await
            .unwrap_or_else(|e| panic!("case {:?}: {e}", case.name));
        if let Err(problem) = check(case, &decision) {
            failures.push(format!("{fixture_file}: {:?}: {problem}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        policy.stats().discarded,
        0,
        "no evaluation failed or was cancelled"
    );
    cases.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_meets_its_expectation() {
    let cases = run_fixtures("settings.toml", "fixtures.toml").await;
    assert!(cases >= 10, "fixtures.toml has only {cases} cases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pull_request_fixture_meets_its_expectation() {
    let cases = run_fixtures("settings.pull-requests.toml", "fixtures.pull-requests.toml").await;
    assert!(
        cases >= 4,
        "fixtures.pull-requests.toml has only {cases} cases"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_files_cover_the_deny_reasons() {
    // Every kind of deny reason appears in some fixture, so the fixtures
    // are the policy's documentation as well as its test.
    let reasons: Vec<String> = ["fixtures.toml", "fixtures.pull-requests.toml"]
        .iter()
        .flat_map(|file| fixtures(file))
        .filter_map(|case| case.reason_contains)
        .collect();
    for kind in [
        "is not allowed (allowed_refs:",
        "pull-request workflows are not allowed",
        "pull-request ref",
        "repository owner id",
        "is not a repository of repository_owner",
        "missing claim",
        "must be a string, got",
        "is empty",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(kind)),
            "no fixture expects a deny reason with {kind:?}"
        );
    }
}

// --- Settings ----------------------------------------------------------------

/// The message of a load that `init` must refuse.
async fn refused(settings: Value) -> String {
    keep_compiled().await;
    let owner = "https://bad-settings.example.com";
    match engine().load(owner, &module(), &settings, limits()).await {
        Ok(_) => panic!("the settings {settings} were accepted"),
        Err(e @ PolicyError::SettingsRefused { .. }) => {
            let text = e.to_string();
            assert!(text.contains(owner), "the error names the issuer: {text}");
            match e {
                PolicyError::SettingsRefused { message, .. } => message,
                _ => unreachable!(),
            }
        }
        Err(other) => panic!("the settings {settings} should be refused by init, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_naming_the_key() {
    let ids = json!(["65432109"]);
    let cases: [(Value, &str); 12] = [
        (
            json!({"allowed_owner_ids": ids, "allowed_ref": ["refs/heads/main"]}),
            "settings: unknown key \"allowed_ref\" (the keys are allowed_owner_ids, allowed_refs, allow_pull_requests)",
        ),
        (
            json!({"allowed_owner_ids": ids, "allow_pull_request": true, "owner": "octo-org"}),
            "settings: unknown keys \"allow_pull_request\", \"owner\"",
        ),
        (json!({}), "settings.allowed_owner_ids: required"),
        (
            json!({"allowed_refs": ["refs/heads/main"]}),
            "settings.allowed_owner_ids: required",
        ),
        (
            json!({"allowed_owner_ids": []}),
            "settings.allowed_owner_ids: is empty",
        ),
        (
            json!({"allowed_owner_ids": ["65432109", "octo-org"]}),
            "settings.allowed_owner_ids[1]: \"octo-org\" is not an owner id",
        ),
        (
            json!({"allowed_owner_ids": [65432109]}),
            "settings.allowed_owner_ids[0]: must be a string, as GitHub writes the claim: write \"65432109\"",
        ),
        (
            json!({"allowed_owner_ids": ids, "allowed_refs": "refs/heads/main"}),
            "settings.allowed_refs: must be a non-empty list of ref patterns",
        ),
        (
            json!({"allowed_owner_ids": ids, "allowed_refs": []}),
            "settings.allowed_refs: is empty",
        ),
        (
            json!({"allowed_owner_ids": ids, "allowed_refs": ["refs/heads/main", "main"]}),
            "settings.allowed_refs[1]: \"main\" would never match",
        ),
        (
            json!({"allowed_owner_ids": ids, "allowed_refs": ["refs/pull/*/merge"]}),
            "settings.allowed_refs[0]: \"refs/pull/*/merge\" names pull-request refs: set allow_pull_requests = true instead",
        ),
        (
            json!({"allowed_owner_ids": ids, "allow_pull_requests": "yes"}),
            "settings.allow_pull_requests: must be true or false, got a string",
        ),
    ];
    let mut failures = Vec::new();
    for (settings, expected) in cases {
        let message = refused(settings.clone()).await;
        if !message.starts_with(expected) {
            failures.push(format!(
                "{settings}:\n  got      {message}\n  expected {expected}..."
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_allow_main_only_and_no_pull_requests() {
    let policy = load(
        "https://defaults.example.com",
        &json!({"allowed_owner_ids": ["65432109"]}),
    )
    .await;
    let token = |git_ref: &str, event: &str| {
        json!({
            "repository": "octo-org/app",
            "repository_owner": "octo-org",
            "repository_owner_id": "65432109",
            "ref": git_ref,
            "event_name": event,
        })
    };
    let decide = |claims: Value| {
        let policy = policy.clone();
        async move {
            policy
                .evaluate(&claims)
                .await
                .unwrap_or_else(|e| panic!("{claims}: {e}"))
        }
    };
    match decide(token("refs/heads/main", "push")).await {
        Decision::Allow(identity) => {
            assert_eq!(identity.username, "octo-org/app");
            assert_eq!(identity.groups, ["octo-org"]);
        }
        other => panic!("main: {other:?}"),
    }
    match decide(token("refs/tags/v1.0.0", "push")).await {
        Decision::Deny(reason) => assert_eq!(
            reason,
            "ref \"refs/tags/v1.0.0\" is not allowed (allowed_refs: refs/heads/main)"
        ),
        other => panic!("a tag with the default refs: {other:?}"),
    }
    match decide(token("refs/pull/1/merge", "pull_request")).await {
        Decision::Deny(reason) => {
            assert!(
                reason.starts_with("pull-request workflows are not allowed"),
                "{reason}"
            )
        }
        other => panic!("a pull request by default: {other:?}"),
    }
}

// --- What it costs -----------------------------------------------------------

/// The claims of `tests/fixtures/claims/github-actions.json`, which
/// `settings.toml` allows.
fn release_tag_claims() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/claims/github-actions.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Small, loads under the default limits, and what loading and evaluating
/// cost (`--nocapture` shows it; timings of a debug build under a parallel
/// test run prove nothing, the README gives release numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_is_small_and_cheap() {
    let size = std::fs::metadata(WASM)
        .unwrap_or_else(|e| panic!("{WASM}: {e}"))
        .len();
    // A Rust policy is its logic, serde_json and the bindings: a few hundred
    // KiB at most (an interpreter-based one is tens of MB).
    assert!(size < 512 << 10, "{WASM} is {size} bytes");

    // A fresh engine, so the compile is measured.
    let engine = PolicyEngine::new(EngineOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let settings = toml_file(&example_dir().join("settings.toml"));
    let policy = engine
        .load("https://cost.example.com", &module(), &settings, limits())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let claims = release_tag_claims();
    let allows = |decision: &Result<Decision, PolicyError>| matches!(decision, Ok(Decision::Allow(identity)) if identity.username == "octo-org/payments-api");
    let started = Instant::now();
    let first = policy.evaluate(&claims).await;
    let first_eval = started.elapsed();
    assert!(allows(&first), "{first:?}");
    let mut warm = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let decision = policy.evaluate(&claims).await;
        warm.push(started.elapsed());
        assert!(allows(&decision), "{decision:?}");
    }
    warm.sort();
    let report = policy.report();
    println!(
        "github-actions: {size} bytes; compiled in {:.0} ms; instantiate+init {:.2} ms; \
         first evaluate {:.3} ms; warm evaluate p50 {:.1} µs, max {:.1} µs ({} build)",
        report.compile_time.as_secs_f64() * 1e3,
        report.init_time.as_secs_f64() * 1e3,
        first_eval.as_secs_f64() * 1e3,
        warm[warm.len() / 2].as_secs_f64() * 1e6,
        warm[warm.len() - 1].as_secs_f64() * 1e6,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    assert_eq!(policy.stats().discarded, 0);
}

/// The smallest memory cap (in MiB) the component loads and evaluates
/// under, found and printed; it is far below the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_needed_is_a_fraction_of_the_default_cap() {
    keep_compiled().await;
    let settings = toml_file(&example_dir().join("settings.toml"));
    let claims = release_tag_claims();
    let mut needed = None;
    for mib in 1..=16 {
        let capped = Limits {
            memory_limit_bytes: mib << 20,
            pool_size: 1,
            ..limits()
        };
        let owner = format!("https://cap-{mib}.example.com");
        match engine().load(&owner, &module(), &settings, capped).await {
            Ok(policy) => {
                let mut fits = true;
                for _ in 0..20 {
                    match policy.evaluate(&claims).await {
                        Ok(Decision::Allow(_)) => {}
                        Err(PolicyError::MemoryLimit { .. }) => fits = false,
                        other => panic!("in {mib} MiB: {other:?}"),
                    }
                }
                if fits {
                    needed = Some(mib);
                    break;
                }
            }
            Err(PolicyError::MemoryLimit { .. }) => {}
            Err(other) => panic!("in {mib} MiB: expected a memory-limit error, got {other}"),
        }
    }
    let default_mib = Limits::default().memory_limit_bytes >> 20;
    let needed = needed.unwrap_or_else(|| panic!("does not fit in 16 MiB"));
    println!("github-actions: loads and evaluates in {needed} MiB (default cap {default_mib} MiB)");
    assert!(needed * 8 <= default_mib, "needs {needed} MiB");
}
