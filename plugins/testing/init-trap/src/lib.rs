//! Test guest `init-trap`: `init` executes the `unreachable` instruction, so
//! the module never gets as far as a first evaluation: a load (or a policy
//! push the registry validates) must fail in the init phase, naming the trap.
#![allow(unsafe_code)] // the generated bindings

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

struct InitTrap;

impl Guest for InitTrap {
    fn init(_settings: String) -> Result<(), String> {
        core::arch::wasm32::unreachable()
    }

    fn evaluate(_claims: String) -> Decision {
        Decision::Deny("init-trap: never initialised".to_owned())
    }
}

export!(InitTrap);
