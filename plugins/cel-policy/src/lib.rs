//! Gantry's default claim policy: CEL rules over a token's verified claims.
//!
//! The operator's settings (see [`settings`]) hold `variables`,
//! `validations`, a `username` and optional `groups` expression, in the
//! vocabulary of Kubernetes' structured authentication configuration. `init`
//! compiles them all once ([`Policy::new`]); `evaluate` runs them against one
//! claim set ([`Policy::evaluate`]). [`Policy::explain`] runs that same
//! evaluation and reports what each expression yielded (for
//! `gantry policy test --explain`).
//!
//! Everything but the thin export glue in `guest` is plain Rust with no
//! dependency on the component model, so it is unit-tested natively:
//! `cargo test --manifest-path plugins/Cargo.toml -p cel-policy`.

mod check;
mod claims;
pub mod explain;
mod policy;
mod regex;
pub mod settings;

pub use explain::{Explained, Explanation, Outcome};
pub use policy::{Decision, Policy, Step};

// The generated bindings and `export!` use `unsafe` (raw canonical-ABI
// pointers); they are confined to this module.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod guest;

#[cfg(test)]
mod tests;
