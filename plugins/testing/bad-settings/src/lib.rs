//! Test guest `bad-settings`: `init` refuses whatever settings it is given,
//! the way a policy validating its settings reports a missing field.
#![allow(unsafe_code)] // the generated bindings

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

struct BadSettings;

impl Guest for BadSettings {
    fn init(_settings: String) -> Result<(), String> {
        Err("bad-settings: field `x` is required".to_owned())
    }

    fn evaluate(_claims: String) -> Decision {
        Decision::Deny("bad-settings: evaluate called although init failed".to_owned())
    }
}

export!(BadSettings);
