//! The claim-policy runtime: sandboxed WebAssembly components that turn an
//! issuer's verified claims into an identity, or refuse them.
//!
//! Owns: loading a module (`builtin:cel` or a `.wasm` path) for one owner (an
//! issuer), compiling it once per digest, keeping a small pool of initialised
//! instances per owner, and running `evaluate` under a time budget, a memory
//! cap and size limits. Must not: see a token (only verified claims), give a
//! guest any capability beyond the `gantry:policy` host interface and an empty
//! WASI context, share an instance between owners, or let a guest block a
//! tokio worker unbounded. Prefixing names per issuer is the caller's job
//! (the host, not the policy, has the last word on names).
//!
//! Layout: `bindings` (the one `bindgen!`), `engine` (wasmtime engine, epoch
//! ticker, compile cache, load), `pool` (`LoadedPolicy`: instances, calls,
//! failure classification), `sandbox` (store data: WASI deny-all context,
//! output capture, memory cap, `host.log`), `limits`, `source`, `error`.
//! The `gantry policy` commands are the face's (`cli::policy`), not this
//! runtime's.
//!
//! # Why async wasmtime with epoch yielding (and not `spawn_blocking`)
//!
//! A warm evaluation costs a few microseconds, about what a `spawn_blocking`
//! round trip to the blocking pool costs, so a thread hop per call would
//! double the hot path. Instead guests run on a wasmtime fiber inside the
//! calling task: the epoch ticker (one thread per engine, every
//! `EngineOptions::epoch_tick`, 2 ms by default) makes a running guest call
//! back into the host on every tick, where it either yields the worker to
//! tokio (`UpdateDeadline::YieldCustom` with `tokio::task::yield_now`) or,
//! past its budget, is interrupted. So a looping guest holds a worker for at
//! most one tick at a time, and for at most `Limits::timeout` in total. A
//! guest waiting in a host call (a WASI timer) is bounded by a
//! `tokio::time::timeout` backstop. Per policy, a semaphore of `pool_size`
//! permits bounds how many of its calls run at once. WASI p2 in wasmtime is
//! async-native anyway, so this is also the configuration it is written for.
//! Compilation, which takes ~0.5 s for the CEL component, runs in
//! `spawn_blocking`. A tenant's policies are the exception: auth runs
//! their calls on the tenant's own low-priority thread (`auth::tenant`),
//! since a tenant's code must not take the request workers' cores.

pub mod artifact;
mod bindings;
mod engine;
mod error;
pub mod fixtures;
mod limits;
mod pool;
mod sandbox;
mod source;

pub use engine::{ArtifactOrigin, EngineOptions, EngineStats, LoadReport, PolicyEngine, WORLD};
pub use error::{Phase, PolicyError};
pub use limits::{
    Limits, LimitsError, MAX_DENY_REASON_BYTES, MAX_GROUP_BYTES, MAX_GROUPS, MAX_LOG_LINE_BYTES,
    MAX_USERNAME_BYTES, validate_decision,
};
pub use pool::{LoadedPolicy, PoolStats};

/// What `LoadedPolicy::explain` returns: the `gantry:cel/explain` types.
pub mod explanation {
    /// The WIT's decision (`gantry:policy/types.decision`), as a guest
    /// answered it: not yet checked by the host.
    pub use super::bindings::Decision as WitDecision;
    pub use super::bindings::explainer::exports::gantry::cel::explain::{
        Explained, Explanation, Outcome, Step,
    };
}

/// A guest's decision in the host's type, before the host's checks
/// (`validate_decision`): what `evaluate` and `explain` both answer.
impl From<bindings::Decision> for Decision {
    fn from(decision: bindings::Decision) -> Decision {
        match decision {
            bindings::Decision::Allow(identity) => Decision::Allow(Identity {
                username: identity.username,
                groups: identity.groups,
            }),
            bindings::Decision::Deny(reason) => Decision::Deny(reason),
        }
    }
}
pub use source::{BuiltinModule, MAX_MODULE_BYTES, ModuleSource};

/// Who a workload is, as its issuer's policy decided. The caller adds the
/// issuer's prefixes before anything else sees these names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// Never empty, no control characters, at most `MAX_USERNAME_BYTES`.
    pub username: String,
    /// At most `MAX_GROUPS`, each like a username.
    pub groups: Vec<String>,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Accepted, as this identity.
    Allow(Identity),
    /// Refused; the reason is for logs and policy authors, not for clients.
    Deny(String),
}

/// TOML to JSON (policy settings and claim fixtures are handed on as JSON);
/// a datetime becomes its RFC 3339 text.
pub fn toml_to_json(value: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}
