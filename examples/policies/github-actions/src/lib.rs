//! A Gantry claim policy for GitHub Actions OIDC tokens.
//!
//! A token is accepted when its repository belongs to one of the owners
//! named by id in the settings, its ref matches one of the allowed ref
//! patterns, and it does not come from a pull request (unless the settings
//! allow them). The workload is then `repository` (`octo-org/payments-api`)
//! in the group `repository_owner` (`octo-org`); Gantry prepends the
//! issuer's prefixes.
//!
//! - [`settings`]: reading and checking the settings (`init`);
//! - [`policy`]: the decision (`evaluate`);
//! - `guest`: the component's exports, compiled for wasm32 only.
//!
//! Everything but `guest` is plain Rust, unit-tested natively:
//! `cargo test` in this directory.

mod glob;
pub mod policy;
pub mod settings;

pub use policy::{Decision, Policy};

// The generated bindings and `export!` use `unsafe` (raw canonical-ABI
// pointers); they are confined to this module.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod guest;
