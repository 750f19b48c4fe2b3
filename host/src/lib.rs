//! Gantry: an OCI registry for machines.
//!
//! Workloads authenticate with the OIDC token their platform gives them; a
//! sandboxed WebAssembly claim policy per issuer decides who they are.
//!
//! Module map: `cli` (the `gantry` commands: serve with live reload, config
//! check, policy test), `config` (typed configuration, every problem
//! reported at once), `storage` (content-addressed blobs behind a trait),
//! `distribution` (the OCI Distribution API over HTTP), `auth` (credentials
//! to callers, access control), `policy` (the Wasm claim-policy runtime),
//! `server` (listeners, TLS, connection limits, graceful shutdown),
//! `telemetry` (logging).

pub mod auth;
pub mod cli;
pub mod config;
pub mod distribution;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod oci;
pub mod policy;
pub mod server;
pub mod storage;
pub mod telemetry;

pub use distribution::app;
