//! Test guest `trap`: `evaluate` executes the `unreachable` instruction, the
//! plainest trap there is. `init` succeeds, so the trap happens on a live,
//! initialised instance, which the host must then discard.
#![allow(unsafe_code)] // the generated bindings

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

struct Trap;

impl Guest for Trap {
    fn init(_settings: String) -> Result<(), String> {
        Ok(())
    }

    fn evaluate(_claims: String) -> Decision {
        core::arch::wasm32::unreachable()
    }
}

export!(Trap);
