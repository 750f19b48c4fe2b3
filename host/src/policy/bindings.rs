//! The `bindgen!` sites: Rust types and call stubs generated from
//! `wit/gantry-policy@0.1.0/policy.wit` (world `gantry:policy/claim-policy`)
//! and, for components that can explain a decision (the built-in CEL
//! policy), `wit/gantry-cel@0.1.0/explain.wit` (world `gantry:cel/explainer`).
//!
//! Owns: the generated types (`Identity`, `Decision`, log `Level`, the
//! explanation records) and the typed handles. Must not: hold any logic.
//! Everything else in `policy/` talks to a guest through these types only, so
//! a new WIT version means a second generated module beside this one and a
//! match in `engine.rs`, never hand-written canonical-ABI code.

wasmtime::component::bindgen!({
    path: "../wit/gantry-policy@0.1.0",
    world: "gantry:policy/claim-policy",
    // Exports run on a fiber so the epoch callback can yield to the tokio
    // executor between ticks (see the module docs of `policy`).
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});

/// The optional `gantry:cel/explain` export. Only its exports are bound:
/// a component is still instantiated through the claim-policy world.
pub mod explainer {
    wasmtime::component::bindgen!({
        path: ["../wit/gantry-policy@0.1.0", "../wit/gantry-cel@0.1.0"],
        world: "gantry:cel/explainer",
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
        // The decision type is the claim-policy world's, not a copy.
        with: { "gantry:policy/types": super::gantry::policy::types },
    });
}
