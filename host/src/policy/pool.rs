//! One owner's loaded policy: a small pool of initialised instances of one
//! module with one settings document.
//!
//! Owns: instantiating + `init`, running `evaluate` under the time budget and
//! memory cap, classifying failures (trap / timeout / memory / bad output),
//! and discarding an instance after any failure so the next call gets a fresh
//! one. Must not: hand an instance to another owner (a pool belongs to one
//! `LoadedPolicy`, which belongs to one issuer), put a failed or cancelled
//! instance back, or run more than `pool_size` guest calls at once.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use super::bindings::ClaimPolicy;
use super::engine::{CompiledModule, EngineInner, LoadReport};
use super::error::Phase;
use super::explanation::Explanation;
use super::limits::{truncate, validate_decision};
use super::sandbox::HostState;
use super::{Decision, Limits, ModuleSource, PolicyError};

/// Longest message from `init` kept in an error.
const MAX_SETTINGS_MESSAGE_BYTES: usize = 4096;

/// A policy ready to evaluate claims for one issuer. Cheap to clone (the
/// clones share the pool).
#[derive(Clone)]
pub struct LoadedPolicy {
    inner: Arc<PolicyInner>,
}

impl fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("owner", &self.inner.owner)
            .field("module", &self.inner.module_name)
            .field("report", &self.inner.report)
            .finish_non_exhaustive()
    }
}

/// Instance counters of one `LoadedPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Instances created (instantiated + initialised), the first included.
    pub created: u64,
    /// Instances thrown away after a trap, timeout, limit, bad output or
    /// cancelled call.
    pub discarded: u64,
    /// Instances idle in the pool right now.
    pub idle: usize,
}

struct PolicyInner {
    engine: Arc<EngineInner>,
    module: Arc<CompiledModule>,
    owner: Arc<str>,
    source: ModuleSource,
    /// `source` as text, for errors and logs.
    module_name: String,
    settings: String,
    limits: Limits,
    report: LoadReport,
    idle: Mutex<Vec<Instance>>,
    /// `pool_size` permits: bounds both the instances alive and the guest
    /// calls of this policy running at once.
    permits: tokio::sync::Semaphore,
    created: AtomicU64,
    discarded: AtomicU64,
    metrics: crate::telemetry::metrics::PolicyHandles,
}

/// One initialised guest: its own store (memory, tables, WASI context).
struct Instance {
    store: Store<HostState>,
    bindings: ClaimPolicy,
    /// The instance itself, to reach exports beyond the claim-policy world.
    raw: wasmtime::component::Instance,
}

impl LoadedPolicy {
    pub(crate) async fn new(
        engine: Arc<EngineInner>,
        module: Arc<CompiledModule>,
        owner: &str,
        source: &ModuleSource,
        settings: String,
        limits: Limits,
        mut report: LoadReport,
    ) -> Result<Self, PolicyError> {
        let inner = PolicyInner {
            permits: tokio::sync::Semaphore::new(limits.pool_size),
            engine,
            module,
            owner: Arc::from(owner),
            module_name: source.to_string(),
            source: source.clone(),
            settings,
            limits,
            report: report.clone(),
            idle: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            metrics: crate::telemetry::metrics::metrics().policy(owner),
        };
        // The first instance validates the settings now, at load time.
        let started = Instant::now();
        let first = inner.new_instance().await?;
        report.init_time = started.elapsed();
        let inner = PolicyInner { report, ..inner };
        inner.put_back(first);
        Ok(LoadedPolicy {
            inner: Arc::new(inner),
        })
    }

    /// Runs `evaluate(claims)` on an idle instance (or a fresh one). Waits
    /// while `pool_size` evaluations of this policy are running. Must run
    /// inside a tokio runtime with timers enabled (the time budget's
    /// backstop is a `tokio::time::timeout`).
    pub async fn evaluate(&self, claims: &serde_json::Value) -> Result<Decision, PolicyError> {
        // `Value`'s `Display` is its compact JSON and cannot fail.
        self.evaluate_json(&claims.to_string()).await
    }

    /// [`LoadedPolicy::evaluate`] of claims already in JSON text (a JSON
    /// object: the verified payload of a token, as signed).
    pub async fn evaluate_json(&self, claims: &str) -> Result<Decision, PolicyError> {
        let started = Instant::now();
        let result = self.evaluate_json_unmetered(claims).await;
        // Indices of `telemetry::metrics::OUTCOMES`.
        let outcome = match &result {
            Ok(Decision::Allow(_)) => 0,
            Ok(Decision::Deny(_)) => 1,
            Err(PolicyError::Trap { .. }) => 2,
            Err(PolicyError::Timeout { .. }) => 3,
            Err(PolicyError::MemoryLimit { .. }) => 4,
            Err(_) => 5,
        };
        self.inner
            .metrics
            .evaluation(outcome, started.elapsed().as_secs_f64());
        result
    }

    /// The pool size this policy runs with.
    pub fn pool_size(&self) -> usize {
        self.inner.limits.pool_size
    }

    async fn evaluate_json_unmetered(&self, claims: &str) -> Result<Decision, PolicyError> {
        let inner = &*self.inner;
        let _permit = inner.admit(claims).await?;
        let instance = match inner.take_idle() {
            Some(instance) => instance,
            None => inner.new_instance().await?,
        };
        // If this future is dropped mid-call, `instance` is dropped with it:
        // a cancelled instance is never put back.
        let (instance, result) = inner.run_evaluate(instance, claims).await;
        match instance {
            Some(instance) => inner.put_back(instance),
            None => {
                inner.discarded.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err(e) = &result {
            tracing::warn!(issuer = &*inner.owner, module = %inner.source, error = %e, "claim policy evaluation failed; instance discarded");
        }
        result
    }

    /// Whether the module exports `gantry:cel/explain` (the built-in CEL
    /// policy does).
    pub fn can_explain(&self) -> bool {
        self.inner.module.explainer.is_some()
    }

    /// Runs the module's `explain(claims)` (of `gantry:cel/explain`) in a
    /// fresh instance, under the limits of `evaluate`: what each expression
    /// of the settings yielded for these claims, and the decision. For
    /// policy authors (`gantry policy test --explain`); the instance is not
    /// kept. `Ok(None)`: the module does not export `explain`.
    pub async fn explain(&self, claims: &str) -> Result<Option<Explanation>, PolicyError> {
        let inner = &*self.inner;
        let Some(indices) = &inner.module.explainer else {
            return Ok(None);
        };
        let _permit = inner.admit(claims).await?;
        let Instance { mut store, raw, .. } = inner.new_instance().await?;
        store.data_mut().begin_call(inner.limits.timeout);
        store.set_epoch_deadline(1);
        let explainer = match indices.load(&mut store, &raw) {
            Ok(explainer) => explainer,
            Err(e) => return Err(inner.classify(&mut store, Phase::Explain, e)),
        };
        let outcome = inner
            .bounded(
                explainer
                    .gantry_cel_explain()
                    .call_explain(&mut store, claims),
            )
            .await;
        match outcome {
            Some(Ok(explanation)) => {
                store.data_mut().end_call(Phase::Explain);
                Ok(Some(explanation))
            }
            Some(Err(e)) => Err(inner.classify(&mut store, Phase::Explain, e)),
            None => Err(inner.timeout(&mut store, Phase::Explain)),
        }
    }

    /// The issuer this policy belongs to.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The module, as named in config.
    pub fn module(&self) -> &ModuleSource {
        &self.inner.source
    }

    /// How the module was loaded: digest, artifact origin, timings.
    pub fn report(&self) -> &LoadReport {
        &self.inner.report
    }

    /// Instance counters.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            created: self.inner.created.load(Ordering::Relaxed),
            discarded: self.inner.discarded.load(Ordering::Relaxed),
            idle: self.inner.idle.lock().map(|v| v.len()).unwrap_or(0),
        }
    }
}

impl PolicyInner {
    /// Refuses claims over the size limit, then waits for one of the
    /// `pool_size` permits.
    async fn admit(&self, claims: &str) -> Result<tokio::sync::SemaphorePermit<'_>, PolicyError> {
        if claims.len() > self.limits.max_claims_bytes {
            return Err(PolicyError::InputTooLarge {
                owner: self.owner.to_string(),
                what: "claims",
                size: claims.len(),
                limit: self.limits.max_claims_bytes,
            });
        }
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        self.metrics.waited();
        self.permits
            .acquire()
            .await
            .map_err(|e| PolicyError::Engine(format!("policy pool closed: {e}")))
    }

    fn take_idle(&self) -> Option<Instance> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_back(&self, instance: Instance) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.limits.pool_size {
            idle.push(instance);
        }
    }

    /// Instantiates the module in a fresh store and runs `init(settings)`.
    async fn new_instance(&self) -> Result<Instance, PolicyError> {
        let state = HostState::new(
            self.owner.clone(),
            self.limits.memory_limit_bytes,
            self.limits.max_output_bytes,
        );
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            if ctx.data_mut().budget.expired() {
                // The error text is replaced by `classify`; `timed_out` is
                // what marks the cause.
                return Err(wasmtime::format_err!("time budget exceeded"));
            }
            // Give the worker back to tokio once per tick, then carry on.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });

        store.data_mut().begin_call(self.limits.timeout);
        store.set_epoch_deadline(1);
        let instantiated = self
            .bounded(self.module.instance_pre.instantiate_async(&mut store))
            .await;
        let (raw, bindings) = match instantiated {
            Some(Ok(raw)) => match self.module.indices.load(&mut store, &raw) {
                Ok(bindings) => {
                    store.data_mut().end_call(Phase::Instantiate);
                    (raw, bindings)
                }
                Err(e) => return Err(self.classify(&mut store, Phase::Instantiate, e)),
            },
            Some(Err(e)) => return Err(self.classify(&mut store, Phase::Instantiate, e)),
            None => return Err(self.timeout(&mut store, Phase::Instantiate)),
        };

        store.data_mut().begin_call(self.limits.timeout);
        store.set_epoch_deadline(1);
        let init = self
            .bounded(bindings.call_init(&mut store, &self.settings))
            .await;
        match init {
            Some(Ok(Ok(()))) => {
                store.data_mut().end_call(Phase::Init);
            }
            Some(Ok(Err(message))) => {
                store.data_mut().end_call(Phase::Init);
                return Err(PolicyError::SettingsRefused {
                    owner: self.owner.to_string(),
                    module: self.module_name.clone(),
                    message: truncate(&message, MAX_SETTINGS_MESSAGE_BYTES),
                });
            }
            Some(Err(e)) => return Err(self.classify(&mut store, Phase::Init, e)),
            None => return Err(self.timeout(&mut store, Phase::Init)),
        }
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            bindings,
            raw,
        })
    }

    /// Runs `evaluate`; gives the instance back only if it is still healthy.
    async fn run_evaluate(
        &self,
        mut instance: Instance,
        claims: &str,
    ) -> (Option<Instance>, Result<Decision, PolicyError>) {
        let store = &mut instance.store;
        store.data_mut().begin_call(self.limits.timeout);
        store.set_epoch_deadline(1);
        let outcome = self
            .bounded(instance.bindings.call_evaluate(&mut *store, claims))
            .await;
        let decision = match outcome {
            Some(Ok(decision)) => {
                store.data_mut().end_call(Phase::Evaluate);
                decision
            }
            Some(Err(e)) => return (None, Err(self.classify(store, Phase::Evaluate, e))),
            None => return (None, Err(self.timeout(store, Phase::Evaluate))),
        };
        match validate_decision(Decision::from(decision), self.limits.max_output_bytes) {
            Ok(decision) => (Some(instance), Ok(decision)),
            // The instance is healthy, but a module that answers garbage
            // once gets a fresh instance: its state may be what is wrong.
            Err(reason) => (
                None,
                Err(PolicyError::BadOutput {
                    owner: self.owner.to_string(),
                    reason,
                }),
            ),
        }
    }

    /// The wall-clock backstop of the time budget. The epoch callback stops
    /// a guest that *runs* too long; this stops one that waits too long in
    /// a host call (a WASI `poll` on a timer, say). A tick of slack lets
    /// the epoch path, which gives the better message, win the race.
    async fn bounded<F: std::future::Future>(&self, call: F) -> Option<F::Output> {
        let backstop = self.limits.timeout + 2 * self.engine.epoch_tick + Duration::from_millis(10);
        tokio::time::timeout(backstop, call).await.ok()
    }

    fn timeout(&self, store: &mut Store<HostState>, phase: Phase) -> PolicyError {
        store.data_mut().end_call(phase);
        PolicyError::Timeout {
            owner: self.owner.to_string(),
            phase,
            limit: self.limits.timeout,
        }
    }

    /// Turns a wasmtime error into the reason an operator needs.
    fn classify(
        &self,
        store: &mut Store<HostState>,
        phase: Phase,
        error: wasmtime::Error,
    ) -> PolicyError {
        let owner = self.owner.to_string();
        let timed_out = store.data().budget.timed_out;
        let memory_hit = store.data().limiter.hit;
        let stderr_tail = store.data_mut().end_call(phase);
        if timed_out {
            return PolicyError::Timeout {
                owner,
                phase,
                limit: self.limits.timeout,
            };
        }
        if memory_hit {
            return PolicyError::MemoryLimit {
                owner,
                phase,
                limit: self.limits.memory_limit_bytes,
            };
        }
        let mut detail = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            detail = format!("called exit({})", exit.0);
        }
        if !stderr_tail.is_empty() {
            // One line: this ends up in a single log field.
            let stderr_tail = stderr_tail
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" | ");
            detail = format!("{detail} (stderr: {stderr_tail})");
        }
        PolicyError::Trap {
            owner,
            phase,
            detail: truncate(&detail, 2048),
        }
    }
}
