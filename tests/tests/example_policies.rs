//! The Kubernetes example policies of `examples/policies/`, in Python
//! (componentize-py), JavaScript (componentize-js) and `builtin:cel` (with
//! `kubernetes-cel/settings.toml`), through the host's policy runtime:
//!
//! - every case of the shared fixture file `fixtures/kubernetes.toml` meets
//!   its expectation in all three, and all three decide identically (same
//!   allow/deny, username and groups; Python and JavaScript give the same
//!   deny reasons byte for byte);
//! - the settings files of the three say the same thing;
//! - bad settings are refused at load, naming the field, identically in
//!   Python and JavaScript;
//! - the components load with the runtime's default limits (so they import
//!   nothing but the `gantry:policy` host interface and WASI p2, and fit in
//!   64 MiB), and what loading and evaluating them costs.
//!
//! `tests/build.rs` builds the two components (`GANTRY_EXAMPLE_KUBERNETES_*`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use gantry::policy::{
    Decision, EngineOptions, Limits, LoadedPolicy, ModuleSource, PolicyEngine, PolicyError,
};
use gantry_tests::{Case, check, repo_root, toml_file};
use serde_json::{Value, json};

const PYTHON_WASM: &str = env!("GANTRY_EXAMPLE_KUBERNETES_PYTHON_WASM");
const JS_WASM: &str = env!("GANTRY_EXAMPLE_KUBERNETES_JS_WASM");

/// Time budget of a guest call in these tests, wider than the default
/// 100 ms: the tests run a debug build of wasmtime, several at once on two
/// cores, and creating an instance of an interpreter (tens of MiB of
/// snapshot) takes 30-80 ms there, 5-16 ms in a release build. Nothing here
/// tests timing; the memory cap stays the default.
const TEST_TIMEOUT: Duration = Duration::from_secs(5);

fn limits() -> Limits {
    Limits {
        timeout: TEST_TIMEOUT,
        ..Limits::default()
    }
}

/// One engine for the whole file, with an on-disk artifact cache so a rerun
/// does not JIT the interpreters again (~20 s each).
fn engine() -> PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let options = EngineOptions {
                cache_dir: Some(
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-policies-cache"),
                ),
                ..EngineOptions::default()
            };
            PolicyEngine::new(options).unwrap_or_else(|e| panic!("engine: {e}"))
        })
        .clone()
}

/// Loaded policies kept alive for the whole run: the engine keeps a compiled
/// module only while a policy uses it, and the tests run one after another.
fn keep(policy: &LoadedPolicy) {
    static KEPT: Mutex<Vec<LoadedPolicy>> = Mutex::new(Vec::new());
    KEPT.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(policy.clone());
}

/// The three implementations of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Python,
    Js,
    Cel,
}

impl Lang {
    const ALL: [Lang; 3] = [Lang::Python, Lang::Js, Lang::Cel];
    const WASM: [Lang; 2] = [Lang::Python, Lang::Js];

    fn name(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::Cel => "cel",
        }
    }

    fn module(self) -> ModuleSource {
        let text = match self {
            Lang::Python => PYTHON_WASM,
            Lang::Js => JS_WASM,
            Lang::Cel => "builtin:cel",
        };
        text.parse()
            .unwrap_or_else(|e| panic!("module {text}: {e}"))
    }

    fn dir(self) -> PathBuf {
        repo_root().join("examples/policies").join(match self {
            Lang::Python => "kubernetes-python",
            Lang::Js => "kubernetes-js",
            Lang::Cel => "kubernetes-cel",
        })
    }

    /// The settings file of the example, as the JSON `init` receives.
    fn settings(self) -> Value {
        toml_file(&self.dir().join("settings.toml"))
    }

    fn owner(self, test: &str) -> String {
        format!("https://{}.{test}.example.com", self.name())
    }

    async fn load(self, test: &str, settings: &Value, limits: Limits) -> LoadedPolicy {
        let owner = self.owner(test);
        let policy = engine()
            .load(&owner, &self.module(), settings, limits)
            .await
            .unwrap_or_else(|e| panic!("loading the {} policy with {settings}: {e}", self.name()));
        keep(&policy);
        policy
    }

    /// Loads the example once and keeps it, so that the loads of a test that
    /// all fail (refused settings, too little memory) find the module
    /// compiled instead of each compiling it again.
    async fn warm(self) {
        self.load("warm", &self.settings(), limits()).await;
    }

    /// The message of a load that `init` must refuse.
    async fn refused(self, settings: &Value) -> String {
        let owner = self.owner("bad-settings");
        match engine()
            .load(&owner, &self.module(), settings, limits())
            .await
        {
            Ok(policy) => {
                keep(&policy);
                panic!(
                    "the {} policy accepted the settings {settings}",
                    self.name()
                )
            }
            Err(PolicyError::SettingsRefused { message, .. }) => message,
            Err(other) => panic!(
                "the {} policy should refuse the settings {settings}, got {other}",
                self.name()
            ),
        }
    }
}

fn fixtures() -> Vec<Case> {
    gantry_tests::fixtures(&repo_root().join("examples/policies/fixtures/kubernetes.toml"))
}

// --- The shared fixtures -----------------------------------------------------

#[test]
fn fixture_file_is_well_formed() {
    let cases = fixtures();
    assert!(cases.len() >= 12, "only {} cases", cases.len());
    let mut names = BTreeSet::new();
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
                case.username.is_none() && case.groups.is_none(),
                "deny case {:?} names no identity",
                case.name
            ),
            other => panic!(
                "case {:?}: expect = {other:?}, not allow or deny",
                case.name
            ),
        }
    }
    let allows = cases.iter().filter(|c| c.expect == "allow").count();
    assert!(
        allows >= 3 && cases.len() - allows >= 9,
        "{allows} allow cases"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_js_and_cel_decide_every_fixture_identically() {
    let mut policies = Vec::new();
    for lang in Lang::ALL {
        policies.push((
            lang,
            lang.load("fixtures", &lang.settings(), limits()).await,
        ));
    }
    let cases = fixtures();
    let mut failures = Vec::new();
    for case in &cases {
        let mut decisions = Vec::new();
        for (lang, policy) in &policies {
            let decision = policy
                .evaluate(&case.claims)
                .await
                .unwrap_or_else(|e| panic!("{} on case {:?}: {e}", lang.name(), case.name));
            if let Err(problem) = check(case, &decision) {
                failures.push(format!("{:?} / {}: {problem}", case.name, lang.name()));
            }
            decisions.push((*lang, decision));
        }
        // All three: the same outcome and identity. Python and JavaScript:
        // the same deny reason too (CEL's messages are fixed text).
        let [(_, python), (_, js), (_, cel)] = &decisions[..] else {
            unreachable!("three policies")
        };
        let shape = |d: &Decision| match d {
            Decision::Allow(identity) => Some(identity.clone()),
            Decision::Deny(_) => None,
        };
        if shape(python) != shape(cel) || shape(js) != shape(cel) {
            failures.push(format!(
                "{:?}: the policies disagree: python {python:?}, js {js:?}, cel {cel:?}",
                case.name
            ));
        } else if python != js {
            failures.push(format!(
                "{:?}: python and js deny with different reasons: {python:?} vs {js:?}",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixture checks failed:\n  {}",
        failures.len(),
        cases.len() * 3,
        failures.join("\n  ")
    );
    // Every evaluation ran on the instance `init` made: no trap, no discard.
    for (lang, policy) in &policies {
        assert_eq!(policy.stats().discarded, 0, "{}", lang.name());
    }
}

/// The fixtures' deny reasons name the offending value exactly where the
/// Python and JavaScript policies promise to (CEL's messages cannot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_js_deny_reasons_quote_the_claims() {
    let token = |ns: &str, sa: &str, sub: &str| json!({ "sub": sub, "kubernetes.io": { "namespace": ns, "serviceaccount": { "name": sa } } });
    let expected = [
        (
            token(
                "kube-system",
                "default",
                "system:serviceaccount:kube-system:default",
            ),
            r#"namespace "kube-system" is not allowed"#,
        ),
        (
            token("ci", "deployer", "system:serviceaccount:ci:deployer"),
            r#"service account "ci:deployer" is not allowed"#,
        ),
        (
            token("ci", "builder", "system:serviceaccount:ci:deployer"),
            r#"sub does not match kubernetes.io: "system:serviceaccount:ci:deployer" is not "system:serviceaccount:ci:builder""#,
        ),
        // Control characters of a claim are escaped, not written to the log.
        (
            token(
                "ci\n\u{1b}[0m",
                "builder",
                "system:serviceaccount:ci\n\u{1b}[0m:builder",
            ),
            r#"namespace "ci\n\u001b[0m" is not allowed"#,
        ),
        (
            json!({ "sub": "x", "kubernetes.io": { "namespace": 42 } }),
            "not a Kubernetes service-account token: kubernetes.io.namespace must be a string, got number",
        ),
        (
            json!({ "sub": "x", "kubernetes.io": [] }),
            "not a Kubernetes service-account token: kubernetes.io must be an object, got list",
        ),
    ];
    for lang in Lang::WASM {
        let policy = lang.load("reasons", &lang.settings(), limits()).await;
        for (claims, reason) in &expected {
            assert_eq!(
                policy
                    .evaluate(claims)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
                Decision::Deny((*reason).to_owned()),
                "{} on {claims}",
                lang.name()
            );
        }
    }
}

/// Without `allowed_service_accounts` every service account of an allowed
/// namespace is accepted; in CEL, that is the settings without their last
/// validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omitting_allowed_service_accounts_allows_every_account_of_the_namespaces() {
    let mut cel = Lang::Cel.settings();
    let validations = cel["validations"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("kubernetes-cel/settings.toml has validations"));
    let last = validations.pop().unwrap_or_default();
    assert_eq!(last["message"], "service account is not allowed", "{last}");
    let settings = |lang: Lang| match lang {
        Lang::Cel => cel.clone(),
        _ => json!({ "allowed_namespaces": ["team-payments", "team-search", "ci"] }),
    };
    let token = |ns: &str, sa: &str| {
        json!({
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "kubernetes.io": { "namespace": ns, "serviceaccount": { "name": sa } },
        })
    };
    let cases = [
        (
            token("team-payments", "default"),
            Some("team-payments:default"),
        ),
        (token("ci", "anything-at-all"), Some("ci:anything-at-all")),
        (token("kube-system", "default"), None),
    ];
    for lang in Lang::ALL {
        let policy = lang.load("any-account", &settings(lang), limits()).await;
        for (claims, username) in &cases {
            let decision = policy
                .evaluate(claims)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            match (username, &decision) {
                (Some(username), Decision::Allow(identity)) => {
                    assert_eq!(&identity.username, username, "{}", lang.name());
                    assert_eq!(identity.groups.len(), 1, "{}", lang.name());
                }
                (None, Decision::Deny(reason)) => {
                    assert!(
                        reason.contains("is not allowed"),
                        "{}: {reason}",
                        lang.name()
                    );
                }
                _ => panic!("{} on {claims}: {decision:?}", lang.name()),
            }
        }
    }
}

// --- Settings ----------------------------------------------------------------

/// The Python and JavaScript examples take the same settings file, and the
/// CEL settings spell out the same lists.
#[test]
fn the_three_settings_files_agree() {
    let python = Lang::Python.settings();
    assert_eq!(
        python,
        Lang::Js.settings(),
        "kubernetes-python/ and kubernetes-js/ settings.toml"
    );
    let list = |key: &str| -> Vec<String> {
        python[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is a list"))
            .iter()
            .map(|v| format!("'{}'", v.as_str().unwrap_or_default()))
            .collect()
    };
    let cel = Lang::Cel.settings();
    let validation = |message: &str| -> String {
        cel["validations"]
            .as_array()
            .and_then(|all| all.iter().find(|v| v["message"] == message))
            .and_then(|v| v["expression"].as_str())
            .unwrap_or_else(|| panic!("the CEL settings have a validation {message:?}"))
            .to_owned()
    };
    assert_eq!(
        validation("namespace is not allowed"),
        format!("vars.ns in [{}]", list("allowed_namespaces").join(", "))
    );
    assert_eq!(
        validation("service account is not allowed"),
        format!(
            "vars.account in [{}]",
            list("allowed_service_accounts").join(", ")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_naming_the_field() {
    let ok_ns = || json!(["team-a"]);
    let cases = [
        (json!({}), "settings.allowed_namespaces: required"),
        (
            json!({ "allowed_namespaces": "team-a" }),
            "settings.allowed_namespaces: must be a list of strings, got string",
        ),
        (
            json!({ "allowed_namespaces": [] }),
            "settings.allowed_namespaces: must not be empty",
        ),
        (
            json!({ "allowed_namespaces": ["team-a", 7] }),
            "settings.allowed_namespaces[1]: must be a string, got number",
        ),
        (
            json!({ "allowed_namespaces": ["Team_A"] }),
            "settings.allowed_namespaces[0]: \"Team_A\" is not a Kubernetes namespace name",
        ),
        (
            json!({ "allowed_namespaces": ok_ns(), "allowed_serviceaccounts": [] }),
            "settings: unknown field \"allowed_serviceaccounts\"",
        ),
        (
            json!({ "allowed_namespaces": ok_ns(), "allowed_service_accounts": [] }),
            "settings.allowed_service_accounts: must not be empty",
        ),
        (
            json!({ "allowed_namespaces": ok_ns(), "allowed_service_accounts": { "team-a": "x" } }),
            "settings.allowed_service_accounts: must be a list of strings, got object",
        ),
        (
            json!({ "allowed_namespaces": ok_ns(), "allowed_service_accounts": ["pusher"] }),
            "settings.allowed_service_accounts[0]: \"pusher\" is not \"<namespace>:<name>\"",
        ),
        (
            json!({ "allowed_namespaces": ok_ns(), "allowed_service_accounts": ["team-a:Pusher"] }),
            "settings.allowed_service_accounts[0]: \"Pusher\" is not a Kubernetes service account name",
        ),
        (
            json!({ "allowed_namespaces": ok_ns(), "allowed_service_accounts": ["team-b:pusher"] }),
            "settings.allowed_service_accounts[0]: namespace \"team-b\" is not in allowed_namespaces",
        ),
    ];
    for lang in Lang::WASM {
        lang.warm().await;
    }
    for (settings, expected) in &cases {
        let python = Lang::Python.refused(settings).await;
        let js = Lang::Js.refused(settings).await;
        assert!(
            python.starts_with(expected),
            "python on {settings}: {python}"
        );
        assert_eq!(python, js, "python and js on {settings}");
    }
}

// --- Loading, limits, cost ---------------------------------------------------

/// Both components load with the runtime's default memory cap (64 MiB):
/// they import nothing the runtime does not provide, and fit. Prints what
/// loading and evaluating cost (`--nocapture` shows it); the time budget is
/// the tests' wider one, since timings of a debug build under a parallel
/// test run prove nothing (the READMEs give release numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_load_with_the_default_memory_cap() {
    let claims = fixtures()
        .into_iter()
        .next()
        .map(|case| case.claims)
        .unwrap_or_default();
    for lang in Lang::WASM {
        let size = std::fs::metadata(match lang {
            Lang::Python => PYTHON_WASM,
            _ => JS_WASM,
        })
        .map(|m| m.len())
        .unwrap_or_default();
        let settings = lang.settings();
        // The compiled module comes from this process or the artifact cache
        // (the first load of the file may JIT, which the default budget does
        // not cover: compiling is not a guest call).
        let policy = lang.load("defaults", &settings, limits()).await;
        assert_eq!(
            limits().memory_limit_bytes,
            Limits::default().memory_limit_bytes
        );
        let report = policy.report().clone();

        let started = Instant::now();
        let first = policy.evaluate(&claims).await;
        let first_eval = started.elapsed();
        assert!(
            matches!(first, Ok(Decision::Allow(_))),
            "{}: {first:?}",
            lang.name()
        );
        let mut warm = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            let decision = policy.evaluate(&claims).await;
            warm.push(started.elapsed());
            assert!(matches!(decision, Ok(Decision::Allow(_))), "{decision:?}");
        }
        warm.sort();
        println!(
            "{}: {:.1} MB component; code {:?} in {:.0} ms; instantiate+init {:.1} ms; \
             first evaluate {:.2} ms; warm evaluate p50 {:.0} µs, max {:.0} µs",
            lang.name(),
            size as f64 / 1e6,
            report.origin,
            report.compile_time.as_secs_f64() * 1e3,
            report.init_time.as_secs_f64() * 1e3,
            first_eval.as_secs_f64() * 1e3,
            warm[warm.len() / 2].as_secs_f64() * 1e6,
            warm[warm.len() - 1].as_secs_f64() * 1e6,
        );
        assert_eq!(policy.stats().discarded, 0, "{}", lang.name());
    }
}

/// The memory cap binds the interpreters too: under a cap it does not fit
/// in, a component is refused at load with the memory error, not run
/// partially. And the default cap leaves room: the smallest cap (in MiB)
/// each loads and evaluates under is found and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cap_binds_and_the_default_leaves_room() {
    let claims = fixtures()
        .into_iter()
        .next()
        .map(|case| case.claims)
        .unwrap_or_default();
    for lang in Lang::WASM {
        lang.warm().await;
        // Whether the component loads and evaluates a few times in `mib`.
        let fits = |mib: usize| {
            let claims = claims.clone();
            async move {
                let capped = Limits {
                    memory_limit_bytes: mib << 20,
                    pool_size: 1,
                    ..limits()
                };
                let owner = lang.owner(&format!("cap-{mib}"));
                match engine()
                    .load(&owner, &lang.module(), &lang.settings(), capped)
                    .await
                {
                    Ok(policy) => {
                        keep(&policy);
                        for _ in 0..20 {
                            match policy.evaluate(&claims).await {
                                Ok(Decision::Allow(_)) => {}
                                Err(PolicyError::MemoryLimit { .. }) => return false,
                                other => panic!("{} in {mib} MiB: {other:?}", lang.name()),
                            }
                        }
                        true
                    }
                    Err(PolicyError::MemoryLimit { limit, .. }) => {
                        assert_eq!(limit, mib << 20);
                        false
                    }
                    Err(other) => panic!(
                        "{} in {mib} MiB: expected a memory-limit error, got {other}",
                        lang.name()
                    ),
                }
            }
        };
        assert!(!fits(2).await, "{} fits in 2 MiB", lang.name());
        let default_mib = Limits::default().memory_limit_bytes >> 20;
        let (mut low, mut high) = (2, default_mib);
        assert!(
            fits(high).await,
            "{} does not fit in {high} MiB",
            lang.name()
        );
        while high - low > 1 {
            let mid = (low + high) / 2;
            if fits(mid).await {
                high = mid;
            } else {
                low = mid;
            }
        }
        println!(
            "{}: loads and evaluates in {high} MiB (default cap {default_mib} MiB)",
            lang.name()
        );
        assert!(
            high * 4 <= default_mib * 3,
            "{} needs {high} MiB: less than a quarter of the default cap is left",
            lang.name()
        );
    }
}
