//! One evaluation of the default CEL policy, in Wasm and natively.
//!
//! - `warm/wasm/<claims>`: `LoadedPolicy::evaluate` on an initialised
//!   instance: the host's whole hot path (serialize claims, pool checkout,
//!   guest call under the time budget, output validation).
//! - `warm/native/<claims>`: the same settings and claims through the same
//!   `cel-policy` code (and `cel` crate) linked natively, claims serialized
//!   the same way: the baseline for the Wasm/native ratio.
//! - `cold/wasm/<claims>`: a new instance: instantiate + `init` (compiling
//!   every expression), as `LoadReport::init_time` measures it.
//!
//! After criterion's report, a summary measures each call on its own and
//! prints p50/p99 and the Wasm/native ratio (targets: p50 warm < 20 µs,
//! ratio ≤ 3). Run:
//! `cargo bench -p gantry --bench policy -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use gantry::policy::{Decision, EngineOptions, Limits, LoadedPolicy, ModuleSource, PolicyEngine};
use serde_json::Value;

/// Kubernetes projected service-account token: 3 variables, 3 validations,
/// username, groups.
const K8S_SETTINGS: &str = r#"{
  "variables": [
    {"name": "ns", "expression": "claims['kubernetes.io'].namespace"},
    {"name": "sa", "expression": "claims['kubernetes.io'].serviceaccount.name"},
    {"name": "team", "expression": "vars.ns.split('-')[1].lowerAscii()"}
  ],
  "validations": [
    {"expression": "'https://registry.example.com' in claims.aud", "message": "wrong audience"},
    {"expression": "vars.ns.startsWith('team-') && vars.ns != 'team-admin'", "message": "only team namespaces may push"},
    {"expression": "has(claims['kubernetes.io'].pod) && claims['kubernetes.io'].pod.name.startsWith(vars.sa)", "message": "token not bound to a pod of this service account"}
  ],
  "username": "'system:serviceaccount:' + vars.ns + ':' + vars.sa",
  "groups": "['system:serviceaccounts', 'system:serviceaccounts:' + vars.ns, 'team:' + vars.team]"
}"#;

/// GitHub Actions token: the same shape of settings.
const GITHUB_SETTINGS: &str = r#"{
  "variables": [
    {"name": "owner", "expression": "claims.repository_owner"},
    {"name": "repo", "expression": "claims.repository.split('/')[1]"},
    {"name": "release", "expression": "claims.ref_type == 'tag' && claims.ref.startsWith('refs/tags/v')"}
  ],
  "validations": [
    {"expression": "claims.repository_owner_id == '65432109'", "message": "not an octo-org repository"},
    {"expression": "vars.release || claims.ref == 'refs/heads/main'", "message": "only main and release tags may push"},
    {"expression": "claims.job_workflow_ref.matches('^octo-org/octo-automation/\\\\.github/workflows/[a-z-]+\\\\.ya?ml@refs/heads/main$')", "message": "only the shared publish workflow may push"}
  ],
  "username": "'github:' + claims.repository",
  "groups": "['github:' + vars.owner, 'github:' + vars.owner + '/' + vars.repo] + (vars.release ? ['releasers'] : [])"
}"#;

const K8S_CLAIMS: &str = include_str!("../../tests/fixtures/claims/kubernetes.json");
const GITHUB_CLAIMS: &str = include_str!("../../tests/fixtures/claims/github-actions.json");

struct Case {
    name: &'static str,
    settings: Value,
    claims: Value,
    wasm: LoadedPolicy,
    native: cel_policy::Policy,
}

fn parse(what: &str, json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn cases(rt: &tokio::runtime::Runtime, engine: &PolicyEngine) -> Vec<Case> {
    [
        ("k8s", K8S_SETTINGS, K8S_CLAIMS),
        ("github", GITHUB_SETTINGS, GITHUB_CLAIMS),
    ]
    .into_iter()
    .map(|(name, settings, claims)| {
        let settings = parse(name, settings);
        let claims = parse(name, claims);
        let wasm = rt
            .block_on(engine.load(
                name,
                &ModuleSource::Builtin(gantry::policy::BuiltinModule::Cel),
                &settings,
                Limits::default(),
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        let native = cel_policy::Policy::new(&settings.to_string())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Both sides must decide the same, and allow: a bench of a deny
        // would measure an early exit.
        let wasm_decision = rt
            .block_on(wasm.evaluate(&claims))
            .unwrap_or_else(|e| panic!("{e}"));
        let native_decision = native.evaluate(&claims.to_string());
        match (&wasm_decision, &native_decision) {
            (Decision::Allow(id), cel_policy::Decision::Allow { username, groups })
                if &id.username == username && &id.groups == groups => {}
            _ => panic!("{name}: wasm {wasm_decision:?} vs native {native_decision:?}"),
        }
        Case {
            name,
            settings,
            claims,
            wasm,
            native,
        }
    })
    .collect()
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, engine: &PolicyEngine, cases: &[Case]) {
    let mut warm = c.benchmark_group("warm");
    for case in cases {
        warm.bench_function(format!("wasm/{}", case.name), |b| {
            b.iter(|| rt.block_on(case.wasm.evaluate(black_box(&case.claims))))
        });
        warm.bench_function(format!("native/{}", case.name), |b| {
            b.iter(|| case.native.evaluate(&black_box(&case.claims).to_string()))
        });
    }
    warm.finish();

    let mut cold = c.benchmark_group("cold");
    cold.sample_size(20);
    for case in cases {
        cold.bench_function(format!("wasm/{}", case.name), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let policy = rt
                            .block_on(engine.load(
                                case.name,
                                case.wasm.module(),
                                &case.settings,
                                Limits::default(),
                            ))
                            .unwrap_or_else(|e| panic!("{e}"));
                        policy.report().init_time
                    })
                    .sum()
            })
        });
    }
    cold.finish();
}

/// Per-call percentiles, measured call by call.
fn percentiles(mut f: impl FnMut(), calls: usize) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..calls)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort_unstable();
    (times[calls / 2], times[calls * 99 / 100])
}

fn summary(rt: &tokio::runtime::Runtime, cases: &[Case]) {
    println!("\nsummary (per call, {} calls each):", 20_000);
    for case in cases {
        let (wasm_p50, wasm_p99) = percentiles(
            || {
                let _ = black_box(rt.block_on(case.wasm.evaluate(&case.claims)));
            },
            20_000,
        );
        let (native_p50, native_p99) = percentiles(
            || {
                black_box(case.native.evaluate(&case.claims.to_string()));
            },
            20_000,
        );
        println!(
            "  {:<7} wasm p50 {:>7.2} µs p99 {:>7.2} µs | native p50 {:>6.2} µs p99 {:>6.2} µs | ratio {:.2} | cold start (instantiate+init) {:.2} ms",
            case.name,
            wasm_p50.as_secs_f64() * 1e6,
            wasm_p99.as_secs_f64() * 1e6,
            native_p50.as_secs_f64() * 1e6,
            native_p99.as_secs_f64() * 1e6,
            wasm_p50.as_secs_f64() / native_p50.as_secs_f64(),
            case.wasm.report().init_time.as_secs_f64() * 1e3,
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let engine = PolicyEngine::new(EngineOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let cases = cases(&rt, &engine);
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &rt, &engine, &cases);
    c.final_summary();
    // `cargo test --benches` runs this in test mode: skip the long summary.
    if !std::env::args().any(|a| a == "--test" || a == "--list") {
        summary(&rt, &cases);
    }
}
