//! Test guest `echo-claims`: allows with the `sub` claim as the username and
//! the sorted names of the top-level claims as groups, so a test can see
//! exactly which JSON the host passed in.
#![allow(unsafe_code)] // the generated bindings

use serde_json::{Map, Value};

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

struct EchoClaims;

impl Guest for EchoClaims {
    fn init(_settings: String) -> Result<(), String> {
        Ok(())
    }

    fn evaluate(claims: String) -> Decision {
        let claims: Map<String, Value> = match serde_json::from_str(&claims) {
            Ok(claims) => claims,
            Err(e) => {
                return Decision::Deny(format!("echo-claims: claims are not a JSON object: {e}"));
            }
        };
        let Some(Value::String(sub)) = claims.get("sub") else {
            return Decision::Deny("echo-claims: no string `sub` claim".to_owned());
        };
        let mut groups: Vec<String> = claims.keys().cloned().collect();
        groups.sort();
        Decision::Allow(Identity {
            username: sub.clone(),
            groups,
        })
    }
}

export!(EchoClaims);
