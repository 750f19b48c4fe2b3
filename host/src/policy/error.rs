//! Errors of the policy runtime.
//!
//! Owns: `PolicyError`, the one error type the rest of Gantry sees from a
//! policy. Every variant that concerns a loaded module names its owner (the
//! issuer) so an operator reading a log line knows whose policy failed.
//! Must not: carry guest-controlled text unbounded (callers truncate it first),
//! or be shown to registry clients (the HTTP edge answers generically).

use std::fmt;
use std::time::Duration;

/// Which guest call an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Instantiating the component (start functions, WASI adapter set-up).
    Instantiate,
    /// The `init(settings)` export.
    Init,
    /// The `evaluate(claims)` export.
    Evaluate,
    /// The `explain(claims)` export of `gantry:cel/explain`.
    Explain,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Instantiate => "instantiation",
            Phase::Init => "init",
            Phase::Evaluate => "evaluate",
            Phase::Explain => "explain",
        })
    }
}

/// Everything that can go wrong loading or running a claim policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The `wasmtime` engine could not be set up (bad cache directory, host
    /// CPU not supported by the compiler settings, ...).
    #[error("policy runtime: {0}")]
    Engine(String),

    /// A module name in config that is neither `builtin:<known>` nor a path.
    #[error("unknown policy module {name:?}: the built-in modules are {known}")]
    UnknownBuiltin {
        /// What the config said.
        name: String,
        /// The accepted names, for the message.
        known: &'static str,
    },

    /// The module file could not be read.
    #[error("policy for issuer {owner}: cannot read module {module}: {reason}")]
    ReadModule {
        /// The issuer whose policy this is.
        owner: String,
        /// The module as named in config.
        module: String,
        /// The I/O problem.
        reason: String,
    },

    /// The bytes are not a component implementing `gantry:policy/claim-policy`.
    #[error("policy for issuer {owner}: module {module} refused: {reason}")]
    ModuleRefused {
        /// The issuer whose policy this is.
        owner: String,
        /// The module as named in config.
        module: String,
        /// What is wrong with it (core module, missing export, unknown import, ...).
        reason: String,
    },

    /// The module's `init` rejected the settings.
    #[error("policy for issuer {owner}: module {module} refused its settings: {message}")]
    SettingsRefused {
        /// The issuer whose policy this is.
        owner: String,
        /// The module as named in config.
        module: String,
        /// The module's own message (truncated to a bound).
        message: String,
    },

    /// Settings or claims larger than the configured limit.
    #[error("policy for issuer {owner}: {what} is {size} bytes, over the limit of {limit} bytes")]
    InputTooLarge {
        /// The issuer whose policy this is.
        owner: String,
        /// `"settings"` or `"claims"`.
        what: &'static str,
        /// Size of the serialized JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// The guest trapped (including a Rust panic, which aborts with a trap).
    #[error("policy for issuer {owner}: {phase} trapped: {detail}")]
    Trap {
        /// The issuer whose policy this is.
        owner: String,
        /// Where.
        phase: Phase,
        /// The trap message, and the tail of the guest's stderr if it wrote one.
        detail: String,
    },

    /// The guest ran past its time budget and was interrupted.
    #[error("policy for issuer {owner}: {phase} timed out: exceeded its time budget of {limit:?}")]
    Timeout {
        /// The issuer whose policy this is.
        owner: String,
        /// Where.
        phase: Phase,
        /// The budget.
        limit: Duration,
    },

    /// The guest tried to grow its memory (or tables) past the cap.
    #[error("policy for issuer {owner}: {phase} hit the memory limit of {limit} bytes")]
    MemoryLimit {
        /// The issuer whose policy this is.
        owner: String,
        /// Where.
        phase: Phase,
        /// The cap.
        limit: usize,
    },

    /// `evaluate` returned something the host does not accept (empty or
    /// oversized username, too many groups, control characters, ...).
    #[error("policy for issuer {owner}: bad output from evaluate: {reason}")]
    BadOutput {
        /// The issuer whose policy this is.
        owner: String,
        /// What is wrong with it.
        reason: String,
    },
}
