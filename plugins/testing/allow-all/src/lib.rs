//! Test guest `allow-all`: allows every token. The username is the string
//! `username` of the settings object if there is one, else `anyone`; groups
//! are always empty. The host's tests use it as the well-behaved neighbour of
//! the misbehaving guests.
#![allow(unsafe_code)] // the generated bindings

use std::cell::RefCell;

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

thread_local! {
    static USERNAME: RefCell<String> = RefCell::new("anyone".to_owned());
}

struct AllowAll;

impl Guest for AllowAll {
    fn init(settings: String) -> Result<(), String> {
        let settings: serde_json::Value = serde_json::from_str(&settings)
            .map_err(|e| format!("allow-all: settings are not JSON: {e}"))?;
        if let Some(name) = settings.get("username").and_then(|v| v.as_str()) {
            USERNAME.with_borrow_mut(|u| *u = name.to_owned());
        }
        Ok(())
    }

    fn evaluate(_claims: String) -> Decision {
        Decision::Allow(Identity {
            username: USERNAME.with_borrow(Clone::clone),
            groups: Vec::new(),
        })
    }
}

export!(AllowAll);
