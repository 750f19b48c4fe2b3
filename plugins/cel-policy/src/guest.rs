//! The component's exports: `init` and `evaluate` of the `claim-policy`
//! world, and `explain` of `gantry:cel/explain`, delegating to [`Policy`].
//! Nothing else lives here.

use crate::Policy;
use std::cell::RefCell;

wit_bindgen::generate!({
    path: ["../../wit/gantry-policy@0.1.0", "../../wit/gantry-cel@0.1.0"],
    world: "gantry:cel/cel-policy",
    // The claim-policy package is the second path: generate its interfaces too.
    generate_all,
});

use exports::gantry::cel::explain as wit;
use gantry::policy::host::{Level, log};

thread_local! {
    /// The policy `init` compiled. A component instance is single-threaded
    /// and the host calls `init` before any `evaluate`.
    static POLICY: RefCell<Option<Policy>> = const { RefCell::new(None) };
}

const NOT_READY: &str = "cel-policy: evaluate called before a successful init";

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
            None => crate::Decision::Deny(NOT_READY.to_owned()),
        });
        decision_of(decision)
    }
}

impl wit::Guest for CelPolicy {
    fn explain(claims: String) -> wit::Explanation {
        POLICY.with_borrow(|slot| match slot {
            Some(policy) => explanation_of(policy.explain(&claims)),
            None => wit::Explanation {
                variables: Vec::new(),
                validations: Vec::new(),
                username: wit::Explained {
                    field: "username".to_owned(),
                    label: "username".to_owned(),
                    expression: String::new(),
                    outcome: wit::Outcome::Skipped,
                },
                groups: None,
                deciding: None,
                decision: Decision::Deny(NOT_READY.to_owned()),
            },
        })
    }
}

fn decision_of(decision: crate::Decision) -> Decision {
    match decision {
        crate::Decision::Allow { username, groups } => {
            Decision::Allow(Identity { username, groups })
        }
        crate::Decision::Deny(reason) => Decision::Deny(reason),
    }
}

fn explanation_of(e: crate::Explanation) -> wit::Explanation {
    let explained = |x: crate::Explained| wit::Explained {
        field: x.field,
        label: x.label,
        expression: x.expression,
        outcome: match x.outcome {
            crate::Outcome::Skipped => wit::Outcome::Skipped,
            crate::Outcome::Value(v) => wit::Outcome::Value(v),
            crate::Outcome::Error(m) => wit::Outcome::Error(m),
        },
    };
    // Settings are capped far below u32::MAX expressions.
    let index = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    wit::Explanation {
        variables: e.variables.into_iter().map(explained).collect(),
        validations: e.validations.into_iter().map(explained).collect(),
        username: explained(e.username),
        groups: e.groups.map(explained),
        deciding: e.deciding.map(|step| match step {
            crate::Step::Variable(i) => wit::Step::Variable(index(i)),
            crate::Step::Validation(i) => wit::Step::Validation(index(i)),
            crate::Step::Username => wit::Step::Username,
            crate::Step::Groups => wit::Step::Groups,
        }),
        decision: decision_of(e.decision),
    }
}

export!(CelPolicy);
