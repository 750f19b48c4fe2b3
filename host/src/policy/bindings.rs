//! The one `bindgen!` site: Rust types and call stubs generated from
//! `wit/gantry-policy@0.1.0/policy.wit` (world `gantry:policy/claim-policy`).
//!
//! Owns: the generated types (`Identity`, `Decision`, log `Level`) and the
//! typed `ClaimPolicy` / `ClaimPolicyPre` handles. Must not: hold any logic.
//! Everything else in `policy/` talks to a guest through these types only, so
//! a new WIT version means a second generated module beside this one and a
//! match in `engine.rs`, never hand-written canonical-ABI code.

wasmtime::component::bindgen!({
    path: "../wit/gantry-policy@0.1.0",
    world: "gantry:policy/claim-policy",
    // Exports run on a fiber so the epoch callback can yield to the tokio
    // executor between ticks (see the module docs of `policy`).
    exports: { default: async },
});
