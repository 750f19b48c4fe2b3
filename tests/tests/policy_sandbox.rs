//! The policy runtime against the test-only guests of `plugins/testing/`:
//! each misbehaving guest fails its own evaluation with a clear reason, in
//! bounded time, and leaves the engine, its own policy and other policies
//! usable.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry::policy::{
    ArtifactOrigin, Decision, EngineOptions, Identity, Limits, LoadedPolicy, ModuleSource, Phase,
    PolicyEngine, PolicyError,
};
use serde_json::{Value, json};

/// One engine for the tests that do not look at engine-wide counters, so
/// each guest is compiled once per test binary.
fn engine() -> PolicyEngine {
    gantry_tests::shared_engine()
}

/// Limits for tests that do not test time: the production default budget
/// (100 ms) with room for a debug build of wasmtime on two busy cores, where
/// instantiating and flooding the log (`chatty`) can take longer.
fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

fn guest(path: &str) -> ModuleSource {
    ModuleSource::Path(PathBuf::from(path))
}

macro_rules! guest {
    ($name:literal) => {
        guest(env!(concat!("GANTRY_TEST_GUEST_", $name)))
    };
}

async fn load(owner: &str, source: &ModuleSource, settings: Value, limits: Limits) -> LoadedPolicy {
    engine()
        .load(owner, source, &settings, limits)
        .await
        .unwrap_or_else(|e| panic!("loading {source} for {owner}: {e}"))
}

async fn load_err(owner: &str, source: &ModuleSource, settings: Value) -> PolicyError {
    match engine().load(owner, source, &settings, limits()).await {
        Ok(p) => panic!("loading {source} should fail, got {p:?}"),
        Err(e) => e,
    }
}

fn k8s_claims() -> Value {
    json!({
        "aud": ["gantry"],
        "exp": 1_900_000_000,
        "iat": 1_700_000_000,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:team-a:pusher",
        "kubernetes.io": {
            "namespace": "team-a",
            "pod": {"name": "pusher-7d9f", "uid": "1b2c"},
            "serviceaccount": {"name": "pusher", "uid": "3d4e"}
        }
    })
}

async fn allow_all(owner: &str) -> LoadedPolicy {
    load(owner, &guest!("ALLOW_ALL"), json!({}), limits()).await
}

async fn assert_allows(policy: &LoadedPolicy) {
    match policy.evaluate(&k8s_claims()).await {
        Ok(Decision::Allow(_)) => {}
        other => panic!("{} should allow, got {other:?}", policy.owner()),
    }
}

#[tokio::test]
async fn allow_all_allows_and_deny_all_denies() {
    let allow = allow_all("https://allow.example").await;
    assert_eq!(
        allow.evaluate(&k8s_claims()).await.ok(),
        Some(Decision::Allow(Identity {
            username: "anyone".into(),
            groups: vec![]
        }))
    );
    let deny = load(
        "https://deny.example",
        &guest!("DENY_ALL"),
        json!({}),
        limits(),
    )
    .await;
    match deny.evaluate(&k8s_claims()).await {
        Ok(Decision::Deny(reason)) => assert!(!reason.is_empty()),
        other => panic!("expected deny, got {other:?}"),
    }
}

#[tokio::test]
async fn trap_fails_the_call_then_a_fresh_instance_serves_the_next() {
    let owner = "https://trap.example";
    let policy = load(owner, &guest!("TRAP"), json!({}), limits()).await;
    let neighbour = allow_all("https://neighbour.example").await;
    for round in 1..=2 {
        match policy.evaluate(&k8s_claims()).await {
            Err(
                e @ PolicyError::Trap {
                    phase: Phase::Evaluate,
                    ..
                },
            ) => {
                let text = e.to_string();
                println!("{text}");
                assert!(
                    text.contains(owner) && text.contains("trapped"),
                    "round {round}: {text}"
                );
            }
            other => panic!("round {round}: expected a trap, got {other:?}"),
        }
    }
    let stats = policy.stats();
    assert_eq!(stats.discarded, 2, "{stats:?}");
    assert_eq!(
        stats.created, 2,
        "the second call ran on a fresh instance: {stats:?}"
    );
    assert_allows(&neighbour).await;
}

#[tokio::test]
async fn panic_fails_the_call_with_the_panic_message() {
    let owner = "https://panic.example";
    let policy = load(owner, &guest!("PANIC"), json!({}), limits()).await;
    for _ in 0..2 {
        match policy.evaluate(&k8s_claims()).await {
            Err(e @ PolicyError::Trap { .. }) => {
                let text = e.to_string();
                println!("{text}");
                assert!(text.contains(owner) && text.contains("panicked"), "{text}");
            }
            other => panic!("expected a trap, got {other:?}"),
        }
    }
    assert_allows(&allow_all("https://neighbour.example").await).await;
}

/// Also the proof that a guest never holds a tokio worker: on a
/// single-threaded runtime, a well-behaved policy finishes while the looping
/// one is still running.
#[tokio::test(flavor = "current_thread")]
async fn infinite_loop_times_out_without_blocking_the_runtime() {
    let owner = "https://loop.example";
    let budget = Duration::from_millis(1500);
    let looping = load(
        owner,
        &guest!("INFINITE_LOOP"),
        json!({}),
        Limits {
            timeout: budget,
            ..limits()
        },
    )
    .await;
    let neighbour = allow_all("https://neighbour.example").await;

    let claims = k8s_claims();
    let started = Instant::now();
    let (looped, neighbour_done) = tokio::join!(looping.evaluate(&claims), async {
        // Let the loop start first.
        tokio::task::yield_now().await;
        assert_allows(&neighbour).await;
        started.elapsed()
    });
    let loop_done = started.elapsed();
    match looped {
        Err(e @ PolicyError::Timeout { .. }) => {
            let text = e.to_string();
            println!("{text} after {loop_done:?}; neighbour done after {neighbour_done:?}");
            assert!(text.contains(owner) && text.contains("timed out"), "{text}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        loop_done >= budget,
        "interrupted before its budget: {loop_done:?}"
    );
    assert!(
        loop_done < Duration::from_secs(5),
        "timeout took {loop_done:?}"
    );
    assert!(
        neighbour_done < budget / 2,
        "the neighbour waited for the loop ({neighbour_done:?}): the guest blocked the runtime"
    );
    // The same policy is still usable (and times out again, quickly).
    let again = Instant::now();
    assert!(matches!(
        looping.evaluate(&k8s_claims()).await,
        Err(PolicyError::Timeout { .. })
    ));
    assert!(again.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn unbounded_alloc_hits_the_memory_limit() {
    let owner = "https://alloc.example";
    let policy = load(
        owner,
        &guest!("UNBOUNDED_ALLOC"),
        json!({}),
        Limits {
            memory_limit_bytes: 16 << 20,
            ..limits()
        },
    )
    .await;
    let started = Instant::now();
    match policy.evaluate(&k8s_claims()).await {
        Err(e @ PolicyError::MemoryLimit { limit, .. }) => {
            println!("{e}");
            assert_eq!(limit, 16 << 20);
            assert!(e.to_string().contains(owner), "{e}");
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        policy.evaluate(&k8s_claims()).await,
        Err(PolicyError::MemoryLimit { .. })
    ));
    assert_allows(&allow_all("https://neighbour.example").await).await;
}

#[tokio::test]
async fn bad_settings_fail_the_load_with_the_module_message() {
    let owner = "https://bad-settings.example";
    match load_err(owner, &guest!("BAD_SETTINGS"), json!({"anything": true})).await {
        e @ PolicyError::SettingsRefused { .. } => {
            let text = e.to_string();
            println!("{text}");
            assert!(text.contains(owner), "{text}");
            assert!(
                text.contains("bad-settings"),
                "the module's own message is kept: {text}"
            );
        }
        other => panic!("expected SettingsRefused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_trap_in_init_fails_the_load_in_the_init_phase() {
    let owner = "https://init-trap.example";
    match load_err(owner, &guest!("INIT_TRAP"), json!({})).await {
        e @ PolicyError::Trap {
            phase: Phase::Init, ..
        } => {
            let text = e.to_string();
            println!("{text}");
            assert!(text.contains(owner) && text.contains("init"), "{text}");
        }
        other => panic!("expected a trap in init, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_world_is_refused_naming_the_missing_export() {
    let owner = "https://wrong-world.example";
    match load_err(owner, &guest!("WRONG_WORLD"), json!({})).await {
        e @ PolicyError::ModuleRefused { .. } => {
            let text = e.to_string();
            println!("{text}");
            assert!(
                text.contains(owner) && text.contains("missing export"),
                "{text}"
            );
            assert!(
                text.contains("`evaluate`") || text.contains("`init`"),
                "{text}"
            );
        }
        other => panic!("expected ModuleRefused, got {other:?}"),
    }
}

async fn refused_bytes(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("policy.wasm");
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    match load_err(
        "https://bytes.example",
        &ModuleSource::Path(path),
        json!({}),
    )
    .await
    {
        e @ PolicyError::ModuleRefused { .. } => {
            println!("{e}");
            e.to_string()
        }
        other => panic!("expected ModuleRefused, got {other:?}"),
    }
}

#[tokio::test]
async fn core_module_is_refused_as_not_a_component() {
    let text = refused_bytes(b"\0asm\x01\0\0\0").await;
    assert!(text.contains("core module, not a component"), "{text}");
}

#[tokio::test]
async fn garbage_is_refused() {
    let text = refused_bytes(b"#!/bin/sh\necho not wasm\n").await;
    assert!(text.contains("not a WebAssembly binary"), "{text}");
    let text = refused_bytes(b"\0asm\x0d\0\x01\0\xff\xff\xff\xff garbage").await;
    assert!(text.contains("not a valid component"), "{text}");
}

#[tokio::test]
async fn missing_module_file_names_the_path() {
    let source = ModuleSource::Path(PathBuf::from("/nonexistent/policy.wasm"));
    match load_err("https://missing.example", &source, json!({})).await {
        e @ PolicyError::ReadModule { .. } => {
            assert!(e.to_string().contains("/nonexistent/policy.wasm"), "{e}")
        }
        other => panic!("expected ReadModule, got {other:?}"),
    }
}

/// The probe quotes whatever it manages to reach as `LEAK(...)`.
#[tokio::test]
async fn sandbox_probe_finds_nothing() {
    let policy = load(
        "https://probe.example",
        &guest!("SANDBOX_PROBE"),
        json!({}),
        limits(),
    )
    .await;
    let report = match policy.evaluate(&k8s_claims()).await {
        Ok(Decision::Deny(report)) => report,
        other => panic!("the probe reports through a deny, got {other:?}"),
    };
    println!("sandbox probe: {report}");
    // wasi-libc answers `getcwd` with "/" when the host sets no initial cwd
    // (we set none): a constant of the guest's libc, not the host's cwd, and
    // with no preopened directory behind it (see `fs=`/`dir=`).
    let report = report.replace("cwd=LEAK(/) ", "cwd=none ");
    assert!(!report.contains("LEAK"), "{report}");
    for expected in ["env=none", "args=[]", "cwd=none", "stdin=empty", "clock=0s"] {
        assert!(
            report.contains(expected),
            "{expected} missing from {report}"
        );
    }
    for capability in ["fs=", "dir=", "net="] {
        assert!(
            report.contains(&format!("{capability}denied(")),
            "{capability} not denied: {report}"
        );
    }
}

#[tokio::test]
async fn echo_claims_receives_the_claims_intact() {
    let policy = load(
        "https://echo.example",
        &guest!("ECHO_CLAIMS"),
        json!({}),
        limits(),
    )
    .await;
    let claims = json!({
        "sub": "repo:acme/wïdget:ref:refs/heads/main",
        "zeta": [1, 2.5, null, {"deep": true}],
        "alpha": "\u{1F680} \"quoted\" \\ back",
        "kubernetes.io": {"namespace": "team-a"}
    });
    match policy.evaluate(&claims).await {
        Ok(Decision::Allow(identity)) => {
            assert_eq!(identity.username, "repo:acme/wïdget:ref:refs/heads/main");
            assert_eq!(identity.groups, ["alpha", "kubernetes.io", "sub", "zeta"]);
        }
        other => panic!("expected allow, got {other:?}"),
    }
}

#[tokio::test]
async fn input_larger_than_the_limits_is_refused() {
    let limits = Limits {
        max_claims_bytes: 1024,
        max_settings_bytes: 1024,
        ..limits()
    };
    let policy = load(
        "https://small.example",
        &guest!("ALLOW_ALL"),
        json!({}),
        limits.clone(),
    )
    .await;
    let big = json!({"sub": "x", "padding": "y".repeat(2000)});
    assert!(matches!(
        policy.evaluate(&big).await,
        Err(PolicyError::InputTooLarge { what: "claims", .. })
    ));
    let err = engine()
        .load("https://small.example", &guest!("ALLOW_ALL"), &big, limits)
        .await
        .err();
    assert!(
        matches!(
            err,
            Some(PolicyError::InputTooLarge {
                what: "settings",
                ..
            })
        ),
        "{err:?}"
    );
}

/// Collects what `tracing` writes, to look at the guest's captured output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn chatty_output_is_capped_and_does_not_hang() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cap = 4096;
    let policy = load(
        "https://chatty.example",
        &guest!("CHATTY"),
        json!({}),
        Limits {
            max_output_bytes: cap,
            ..limits()
        },
    )
    .await;
    let started = Instant::now();
    assert_allows(&policy).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let log =
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let guest_lines = log
        .lines()
        .filter(|l| l.contains("gantry::policy::guest"))
        .collect::<Vec<_>>();
    assert!(
        !guest_lines.is_empty(),
        "the guest's output reaches the log: {log}"
    );
    assert!(
        guest_lines
            .iter()
            .all(|l| l.contains("https://chatty.example")),
        "every line is tagged with the issuer"
    );
    assert!(log.contains("dropped"), "the overflow is reported: {log}");
    // Two evaluations' worth of output (load + evaluate), plus per-line
    // prefixes: far below what the guest wrote.
    assert!(
        log.len() < 8 * cap + 64 * guest_lines.len(),
        "{} bytes logged",
        log.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_evaluations_on_a_pool_of_two() {
    let policy = load(
        "https://parallel.example",
        &guest!("ECHO_CLAIMS"),
        json!({}),
        Limits {
            pool_size: 2,
            ..limits()
        },
    )
    .await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let policy = policy.clone();
            tokio::spawn(async move {
                policy
                    .evaluate(&json!({"sub": format!("workload-{i}")}))
                    .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(Decision::Allow(identity))) => {
                assert_eq!(identity.username, format!("workload-{i}"))
            }
            other => panic!("evaluation {i}: {other:?}"),
        }
    }
    let stats = policy.stats();
    assert!(
        stats.created <= 2,
        "never more instances than the pool: {stats:?}"
    );
    assert_eq!(stats.discarded, 0, "{stats:?}");
}

/// `allow-all` keeps the username from its settings in instance state, so an
/// instance shared between issuers would answer with the other's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_never_shared_between_owners() {
    let source = guest!("ALLOW_ALL");
    let a = load(
        "https://a.example",
        &source,
        json!({"username": "a"}),
        limits(),
    )
    .await;
    let b = load(
        "https://b.example",
        &source,
        json!({"username": "b"}),
        limits(),
    )
    .await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (policy, want) = if i % 2 == 0 {
                (a.clone(), "a")
            } else {
                (b.clone(), "b")
            };
            tokio::spawn(async move { (want, policy.evaluate(&json!({})).await) })
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok((want, Ok(Decision::Allow(identity)))) => assert_eq!(identity.username, want),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn artifact_cache_skips_the_compile_on_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let opts = EngineOptions {
        cache_dir: Some(dir.path().join("artifacts")),
        ..EngineOptions::default()
    };
    let source = guest!("ALLOW_ALL");

    let first = PolicyEngine::new(opts.clone()).unwrap_or_else(|e| panic!("{e}"));
    let policy = first
        .load("https://cache.example", &source, &json!({}), limits())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.report().origin, ArtifactOrigin::Compiled);
    let again = first
        .load("https://other.example", &source, &json!({}), limits())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.report().origin, ArtifactOrigin::InProcess);
    assert_eq!(first.stats().compiled, 1);
    drop((policy, again, first));

    // A "restart": a new engine with the same cache directory.
    let second = PolicyEngine::new(opts).unwrap_or_else(|e| panic!("{e}"));
    let policy = second
        .load("https://cache.example", &source, &json!({}), limits())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.report().origin, ArtifactOrigin::ArtifactCache);
    assert_eq!(second.stats().compiled, 0);
    assert_eq!(second.stats().artifact_cache_hits, 1);
    assert_allows(&policy).await;
}

#[tokio::test]
async fn builtin_cel_policy_loads_and_decides() {
    let settings = json!({
        "validations": [{"expression": "claims['kubernetes.io'].namespace == 'team-a'", "message": "wrong namespace"}],
        "username": "claims.sub",
    });
    let policy = load(
        "https://kubernetes.default.svc",
        &"builtin:cel".parse().unwrap_or_else(|e| panic!("{e}")),
        settings,
        limits(),
    )
    .await;
    match policy.evaluate(&k8s_claims()).await {
        Ok(Decision::Allow(identity)) => {
            assert_eq!(identity.username, "system:serviceaccount:team-a:pusher")
        }
        other => panic!("{other:?}"),
    }
    let mut other_ns = k8s_claims();
    other_ns["kubernetes.io"]["namespace"] = json!("team-b");
    match policy.evaluate(&other_ns).await {
        Ok(Decision::Deny(reason)) => assert!(reason.contains("wrong namespace"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// `explain` is an optional export: the built-in CEL policy has it and
/// answers with the same decision as `evaluate`, from a fresh instance that
/// never joins the pool; a component without it is told apart at load.
#[tokio::test]
async fn only_components_that_export_explain_can_explain() {
    let allow = allow_all("https://explain-none.example").await;
    assert!(!allow.can_explain());
    assert!(matches!(allow.explain("{}").await, Ok(None)));

    let cel = load(
        "https://explain-cel.example",
        &ModuleSource::Builtin(gantry::policy::BuiltinModule::Cel),
        json!({"username": "claims.sub", "groups": "[claims['kubernetes.io'].namespace]"}),
        limits(),
    )
    .await;
    assert!(cel.can_explain());
    let claims = k8s_claims().to_string();
    let explained = cel
        .explain(&claims)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("builtin:cel exports explain"));
    let evaluated = cel
        .evaluate_json(&claims)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(Decision::from(explained.decision), evaluated);
    assert_eq!(
        explained.username.outcome,
        gantry::policy::explanation::Outcome::Value(
            "\"system:serviceaccount:team-a:pusher\"".into()
        )
    );
    // Explaining took a fresh instance and gave nothing back to the pool.
    assert_eq!(cel.stats().idle, 1);

    // Oversized claims are refused before any guest runs, as for evaluate.
    let big = format!("{{\"sub\": \"{}\"}}", "x".repeat(2 << 20));
    assert!(matches!(
        cel.explain(&big).await,
        Err(PolicyError::InputTooLarge { .. })
    ));
}
