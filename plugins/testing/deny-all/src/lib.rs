//! Test guest `deny-all`: refuses every token with a fixed reason.
#![allow(unsafe_code)] // the generated bindings

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

struct DenyAll;

impl Guest for DenyAll {
    fn init(_settings: String) -> Result<(), String> {
        Ok(())
    }

    fn evaluate(_claims: String) -> Decision {
        Decision::Deny("deny-all: every token is refused".to_owned())
    }
}

export!(DenyAll);
