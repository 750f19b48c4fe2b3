//! The component's exports: `init` and `evaluate` of the `claim-policy`
//! world of `gantry:policy@0.1.0`, delegating to [`Policy`]. Nothing else
//! lives here.

use crate::Policy;
use std::cell::RefCell;

// Generates the Rust side of the world from the WIT package: a `Guest`
// trait with `init` and `evaluate`, the `Decision` and `Identity` types,
// the imported `gantry::policy::host::log`, and `export!`.
wit_bindgen::generate!({
    path: "../../../wit/gantry-policy@0.1.0",
    world: "claim-policy",
});

use gantry::policy::host::{Level, log};

thread_local! {
    /// The policy `init` built. An instance is single-threaded, and the
    /// host calls `init` once per instance, before any `evaluate`.
    static POLICY: RefCell<Option<Policy>> = const { RefCell::new(None) };
}

struct GithubActions;

impl Guest for GithubActions {
    fn init(settings: String) -> Result<(), String> {
        let policy = Policy::from_settings_json(&settings)?;
        log(
            Level::Debug,
            &format!("github-actions policy ready: {}", policy.summary()),
        );
        POLICY.with_borrow_mut(|slot| *slot = Some(policy));
        Ok(())
    }

    fn evaluate(claims: String) -> Decision {
        let decision = POLICY.with_borrow(|slot| match slot {
            Some(policy) => policy.evaluate(&claims),
            // The host never does this; deny rather than guess.
            None => crate::Decision::Deny("evaluate called before a successful init".to_owned()),
        });
        match decision {
            crate::Decision::Allow { username, groups } => {
                Decision::Allow(Identity { username, groups })
            }
            crate::Decision::Deny(reason) => Decision::Deny(reason),
        }
    }
}

export!(GithubActions);
