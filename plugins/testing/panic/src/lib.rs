//! Test guest `panic`: `evaluate` panics. On wasm32 a panic prints its
//! message to stderr and aborts, i.e. traps: the host should report the
//! message it captured.
#![allow(unsafe_code)] // the generated bindings

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

struct Panic;

impl Guest for Panic {
    fn init(_settings: String) -> Result<(), String> {
        Ok(())
    }

    fn evaluate(claims: String) -> Decision {
        panic!(
            "test-panic: evaluate panicked on purpose ({} bytes of claims)",
            claims.len()
        )
    }
}

export!(Panic);
