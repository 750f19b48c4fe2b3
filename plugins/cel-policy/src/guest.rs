//! The component's exports: `init` and `evaluate` of the `claim-policy`
//! world, delegating to [`Policy`]. Nothing else lives here.

use crate::Policy;
use std::cell::RefCell;

wit_bindgen::generate!({
    path: "../../wit/gantry-policy@0.1.0",
    world: "claim-policy",
});

use gantry::policy::host::{Level, log};

thread_local! {
    /// The policy `init` compiled. A component instance is single-threaded
    /// and the host calls `init` before any `evaluate`.
    static POLICY: RefCell<Option<Policy>> = const { RefCell::new(None) };
}

struct CelPolicy;

impl Guest for CelPolicy {
    fn init(settings: String) -> Result<(), String> {
        // A failed `init` leaves no policy behind: `evaluate` then denies
        // rather than run a previous configuration.
        POLICY.with_borrow_mut(|slot| *slot = None);
        let policy = Policy::new(&settings)?;
        log(
            Level::Debug,
            &format!("cel-policy ready: {}", policy.summary()),
        );
        POLICY.with_borrow_mut(|slot| *slot = Some(policy));
        Ok(())
    }

    fn evaluate(claims: String) -> Decision {
        let decision = POLICY.with_borrow(|slot| match slot {
            Some(policy) => policy.evaluate(&claims),
            None => crate::Decision::Deny(
                "cel-policy: evaluate called before a successful init".to_owned(),
            ),
        });
        match decision {
            crate::Decision::Allow { username, groups } => {
                Decision::Allow(Identity { username, groups })
            }
            crate::Decision::Deny(reason) => Decision::Deny(reason),
        }
    }
}

export!(CelPolicy);
