//! The process-wide policy engine: one `wasmtime::Engine`, its epoch ticker,
//! the linker, and the compile-once table of modules.
//!
//! Owns: engine configuration, compiling a module (once per SHA-256 digest in
//! this process; through wasmtime's artifact cache across restarts), checking
//! that it is a component implementing `gantry:policy/claim-policy`, and
//! handing out `LoadedPolicy` pools. Must not: share an instance or a store
//! between owners (that is `pool.rs`'s job to never do), compile on a tokio
//! worker thread (compiles run in `spawn_blocking`), or start more than one
//! ticker per engine.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};

use super::bindings::explainer::ExplainerIndices;
use super::bindings::{ClaimPolicy, ClaimPolicyIndices};
use super::pool::LoadedPolicy;
use super::sandbox::HostState;
use super::{Limits, ModuleSource, PolicyError};

/// The world every module must implement, for messages.
pub const WORLD: &str = "gantry:policy/claim-policy@0.1.0";
/// The exports that world requires.
const REQUIRED_EXPORTS: [&str; 2] = ["init", "evaluate"];

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where compiled artifacts are kept between runs (wasmtime's cache,
    /// keyed by the module bytes, the wasmtime version and the engine
    /// configuration). `None`: compile on every start.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch ticker advances the engine's clock. The time
    /// budget of a call is enforced at this granularity, and a running guest
    /// yields its tokio worker once per tick.
    pub epoch_tick: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: None,
            // 2 ms: a looping guest gives its worker back 500 times a second,
            // for ~500 ticker wake-ups a second of overhead.
            epoch_tick: Duration::from_millis(2),
        }
    }
}

/// Where a load found its compiled code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactOrigin {
    /// JIT-compiled now (and written to the artifact cache, if configured).
    Compiled,
    /// Loaded from the on-disk artifact cache: no JIT.
    ArtifactCache,
    /// Already compiled by this engine for another load.
    InProcess,
}

/// What `PolicyEngine::load` did, for logs and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Hex SHA-256 of the module bytes.
    pub digest: String,
    /// Where the compiled code came from.
    pub origin: ArtifactOrigin,
    /// Time spent getting compiled code (compile, cache load, or lookup).
    pub compile_time: Duration,
    /// Time spent instantiating the first instance and running `init`.
    pub init_time: Duration,
}

/// Counters over the engine's lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    /// Modules JIT-compiled.
    pub compiled: u64,
    /// Modules loaded from the on-disk artifact cache.
    pub artifact_cache_hits: u64,
    /// Loads that reused a module already compiled in this process.
    pub in_process_hits: u64,
}

/// The claim-policy runtime. Cheap to clone; one per process.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<EngineInner>,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A compiled module, linked and ready to instantiate. Shared by every
/// `LoadedPolicy` of the same bytes; instances are not.
pub(crate) struct CompiledModule {
    pub(crate) instance_pre: InstancePre<HostState>,
    pub(crate) indices: ClaimPolicyIndices,
    /// Set when the component also exports `gantry:cel/explain`.
    pub(crate) explainer: Option<ExplainerIndices>,
}

pub(crate) struct EngineInner {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) epoch_tick: Duration,
    linker: Linker<HostState>,
    cache: Option<wasmtime::Cache>,
    /// Weak so a module no policy uses any more is freed.
    modules: Mutex<HashMap<[u8; 32], Weak<CompiledModule>>>,
    /// One compile at a time: the compiler already uses every core, and this
    /// makes the cache-hit counter around a compile exact.
    compile_lock: tokio::sync::Mutex<()>,
    compiled: AtomicU64,
    artifact_cache_hits: AtomicU64,
    in_process_hits: AtomicU64,
}

impl PolicyEngine {
    /// Creates the engine and starts its epoch ticker thread.
    pub fn new(opts: EngineOptions) -> Result<Self, PolicyError> {
        let engine_error =
            |what: &str, e: &dyn fmt::Display| PolicyError::Engine(format!("{what}: {e}"));
        if opts.epoch_tick.is_zero() {
            return Err(PolicyError::Engine(
                "epoch_tick must be greater than zero".into(),
            ));
        }
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        // Interrupts for the time budget. Epochs, not fuel: a counter load
        // per loop header instead of fuel accounting on every block, and the
        // budget we want is time, not instructions.
        config.epoch_interruption(true);
        let cache = match &opts.cache_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| engine_error(&format!("cache dir {}", dir.display()), &e))?;
                let dir = std::path::absolute(dir)
                    .map_err(|e| engine_error(&format!("cache dir {}", dir.display()), &e))?;
                let mut cache_config = wasmtime::CacheConfig::new();
                cache_config.with_directory(dir);
                let cache = wasmtime::Cache::new(cache_config)
                    .map_err(|e| engine_error("artifact cache", &e))?;
                config.cache(Some(cache.clone()));
                Some(cache)
            }
            None => None,
        };
        let engine =
            wasmtime::Engine::new(&config).map_err(|e| engine_error("wasmtime engine", &e))?;

        let mut linker = Linker::new(&engine);
        // Every module gets the WASI p2 interfaces, backed by the deny-all
        // context of `sandbox.rs`: toolchains import them even when the
        // policy never touches a file.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| engine_error("linking WASI", &e))?;
        ClaimPolicy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| engine_error("linking the host interface", &e))?;

        start_ticker(engine.weak(), opts.epoch_tick)?;
        Ok(PolicyEngine {
            inner: Arc::new(EngineInner {
                engine,
                epoch_tick: opts.epoch_tick,
                linker,
                cache,
                modules: Mutex::new(HashMap::new()),
                compile_lock: tokio::sync::Mutex::new(()),
                compiled: AtomicU64::new(0),
                artifact_cache_hits: AtomicU64::new(0),
                in_process_hits: AtomicU64::new(0),
            }),
        })
    }

    /// Loads `source` for `owner` (the issuer): compiles it unless already
    /// compiled, then instantiates it and runs `init(settings)`, so a bad
    /// module or bad settings fail here, not on the first token.
    pub async fn load(
        &self,
        owner: &str,
        source: &ModuleSource,
        settings: &serde_json::Value,
        limits: Limits,
    ) -> Result<LoadedPolicy, PolicyError> {
        let bytes = source.bytes(owner).await?;
        self.load_bytes(owner, source, bytes, settings, limits)
            .await
    }

    /// [`PolicyEngine::load`] of module bytes the caller read (a policy
    /// artifact's layer); `source` names them in logs and errors.
    pub async fn load_bytes(
        &self,
        owner: &str,
        source: &ModuleSource,
        bytes: std::borrow::Cow<'static, [u8]>,
        settings: &serde_json::Value,
        limits: Limits,
    ) -> Result<LoadedPolicy, PolicyError> {
        limits
            .validate()
            .map_err(|reason| PolicyError::ModuleRefused {
                owner: owner.to_owned(),
                module: source.to_string(),
                reason: format!("invalid limits: {reason}"),
            })?;
        // `Value`'s `Display` is its compact JSON and cannot fail.
        let settings = settings.to_string();
        if settings.len() > limits.max_settings_bytes {
            return Err(PolicyError::InputTooLarge {
                owner: owner.to_owned(),
                what: "settings",
                size: settings.len(),
                limit: limits.max_settings_bytes,
            });
        }
        let started = Instant::now();
        let (module, digest, origin) = self.compile(owner, source, bytes).await?;
        let compile_time = started.elapsed();
        let report = LoadReport {
            digest: hex::encode(digest),
            origin,
            compile_time,
            init_time: Duration::ZERO,
        };
        let policy = LoadedPolicy::new(
            self.inner.clone(),
            module,
            owner,
            source,
            settings,
            limits,
            report,
        )
        .await?;
        tracing::info!(
            issuer = owner,
            module = %source,
            digest = %policy.report().digest,
            origin = ?policy.report().origin,
            compile_ms = policy.report().compile_time.as_secs_f64() * 1e3,
            init_ms = policy.report().init_time.as_secs_f64() * 1e3,
            "claim policy loaded"
        );
        Ok(policy)
    }

    /// Counters over the engine's lifetime.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            compiled: self.inner.compiled.load(Ordering::Relaxed),
            artifact_cache_hits: self.inner.artifact_cache_hits.load(Ordering::Relaxed),
            in_process_hits: self.inner.in_process_hits.load(Ordering::Relaxed),
        }
    }

    async fn compile(
        &self,
        owner: &str,
        source: &ModuleSource,
        bytes: std::borrow::Cow<'static, [u8]>,
    ) -> Result<(Arc<CompiledModule>, [u8; 32], ArtifactOrigin), PolicyError> {
        let refused = |reason: String| PolicyError::ModuleRefused {
            owner: owner.to_owned(),
            module: source.to_string(),
            reason,
        };
        check_header(&bytes).map_err(refused)?;

        let _one_at_a_time = self.inner.compile_lock.lock().await;
        let inner = self.inner.clone();
        let (digest, compiled) = tokio::task::spawn_blocking(move || {
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            if let Some(module) = inner.lookup(&digest) {
                return (digest, Ok((module, ArtifactOrigin::InProcess)));
            }
            (
                digest,
                inner
                    .compile_blocking(&bytes)
                    .map(|(module, origin)| (Arc::new(module), origin)),
            )
        })
        .await
        .map_err(|e| PolicyError::Engine(format!("compile task failed: {e}")))?;
        let (module, origin) = compiled.map_err(refused)?;
        let counter = match origin {
            ArtifactOrigin::Compiled => &self.inner.compiled,
            ArtifactOrigin::ArtifactCache => &self.inner.artifact_cache_hits,
            ArtifactOrigin::InProcess => &self.inner.in_process_hits,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if origin != ArtifactOrigin::InProcess {
            let mut modules = self.inner.modules.lock().unwrap_or_else(|e| e.into_inner());
            modules.retain(|_, m| m.strong_count() > 0);
            modules.insert(digest, Arc::downgrade(&module));
        }
        Ok((module, digest, origin))
    }
}

impl EngineInner {
    fn lookup(&self, digest: &[u8; 32]) -> Option<Arc<CompiledModule>> {
        let modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        modules.get(digest).and_then(Weak::upgrade)
    }

    /// Compiles (or loads from the artifact cache) and links. Blocking: runs
    /// on the blocking pool, under `compile_lock`.
    fn compile_blocking(&self, bytes: &[u8]) -> Result<(CompiledModule, ArtifactOrigin), String> {
        let hits_before = self.cache.as_ref().map(wasmtime::Cache::cache_hits);
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| format!("not a valid component: {e:#}"))?;
        let origin = match (
            hits_before,
            self.cache.as_ref().map(wasmtime::Cache::cache_hits),
        ) {
            (Some(before), Some(after)) if after > before => ArtifactOrigin::ArtifactCache,
            _ => ArtifactOrigin::Compiled,
        };
        check_exports(&component, &self.engine)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("it imports something Gantry does not provide (only the {WORLD} host interface and WASI p2 are available): {e:#}"))?;
        let indices = ClaimPolicyIndices::new(&instance_pre)
            .map_err(|e| format!("its exports do not match the {WORLD} world: {e:#}"))?;
        let explainer = ExplainerIndices::new(&instance_pre).ok();
        Ok((
            CompiledModule {
                instance_pre,
                indices,
                explainer,
            },
            origin,
        ))
    }
}

/// Tells garbage and core modules apart from components before compiling,
/// so the message says which.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly binary (no `\\0asm` header)".into());
    }
    match [bytes[6], bytes[7]] {
        [1, 0] => Ok(()),
        [0, 0] => Err(format!(
            "it is a core module, not a component: a policy must be a component implementing {WORLD} \
             (build it with `cargo build --target wasm32-wasip2`, or wrap it with `wasm-tools component new`)"
        )),
        _ => Err(
            "unsupported WebAssembly binary layer (neither a core module nor a component)".into(),
        ),
    }
}

/// Names the missing exports, which wasmtime's own type check does not.
fn check_exports(component: &Component, engine: &wasmtime::Engine) -> Result<(), String> {
    let mut missing = Vec::new();
    for name in REQUIRED_EXPORTS {
        match component.get_export(None, name) {
            Some((ComponentItem::ComponentFunc(_), _)) => {}
            Some(_) => missing.push(format!("`{name}` (exported, but not as a function)")),
            None => missing.push(format!("`{name}`")),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let exported: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    Err(format!(
        "it does not implement the {WORLD} world: missing export {}; it exports {}",
        missing.join(", "),
        if exported.is_empty() {
            "nothing".to_owned()
        } else {
            exported.join(", ")
        }
    ))
}

/// One thread per engine advancing the epoch; it stops when the engine is
/// dropped. A thread, not a tokio task: it must keep ticking when every
/// worker is busy running guests, since the ticks are what interrupt them.
fn start_ticker(engine: wasmtime::EngineWeak, tick: Duration) -> Result<(), PolicyError> {
    std::thread::Builder::new()
        .name("gantry-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
        .map_err(|e| PolicyError::Engine(format!("cannot start the epoch ticker: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_the_problem() {
        assert!(
            check_header(b"hello world")
                .err()
                .unwrap_or_default()
                .contains("not a WebAssembly binary")
        );
        assert!(
            check_header(b"\0asm")
                .err()
                .unwrap_or_default()
                .contains("not a WebAssembly binary")
        );
        assert!(
            check_header(b"\0asm\x01\0\0\0")
                .err()
                .unwrap_or_default()
                .contains("core module, not a component")
        );
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(
            check_header(b"\0asm\x0d\0\x07\0")
                .err()
                .unwrap_or_default()
                .contains("unsupported")
        );
    }
}
