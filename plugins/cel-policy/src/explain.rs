//! What an evaluation did, expression by expression: the report
//! [`Policy::explain`](crate::Policy::explain) returns for policy authors
//! (`gantry policy test --explain`).
//!
//! The report is recorded while the one evaluation code path runs (see
//! `policy::Observer`), so it cannot drift from what the component decides.
//! Values are rendered as text while they are alive (they borrow the
//! claims); maps with their keys sorted, so the text is stable.

use crate::policy::{Decision, Observer, Step};
use cel::ExecutionError;
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelInt, CelMap, CelNull, CelOptional, CelString, CelType,
    CelUInt, Kind,
};
use cel::common::value::Val;
use std::fmt::Write as _;

/// One evaluation, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Every variable of the settings, in order.
    pub variables: Vec<Explained>,
    /// Every validation of the settings, in order.
    pub validations: Vec<Explained>,
    pub username: Explained,
    /// `None` when the settings have no `groups` expression.
    pub groups: Option<Explained>,
    /// For a deny, the expression that caused it (a `false` validation, or
    /// one that failed or yielded the wrong type); `None` for an allow, or
    /// when the claims themselves were refused before any expression ran.
    pub deciding: Option<Step>,
    /// The decision, identical to what `evaluate` returns.
    pub decision: Decision,
}

/// One expression of the settings and what it yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The settings field, e.g. `validations[2].expression`.
    pub field: String,
    /// A variable's name, a validation's message, or `username`/`groups`.
    pub label: String,
    /// The CEL source.
    pub expression: String,
    pub outcome: Outcome,
}

/// What one expression yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not evaluated: evaluation stopped at an earlier expression.
    Skipped,
    /// Its value, rendered as by [`render`].
    Value(String),
    /// It failed: CEL's message.
    Error(String),
}

impl Explanation {
    /// The explained expression at `step`.
    pub fn step(&self, step: Step) -> Option<&Explained> {
        match step {
            Step::Variable(i) => self.variables.get(i),
            Step::Validation(i) => self.validations.get(i),
            Step::Username => Some(&self.username),
            Step::Groups => self.groups.as_ref(),
        }
    }
}

/// The observer behind `explain`: each outcome, rendered, in order.
#[derive(Default)]
pub(crate) struct Recorder {
    ran: Vec<(Step, Outcome)>,
}

impl Recorder {
    pub(crate) fn outcome(&self, step: Step) -> Outcome {
        self.ran
            .iter()
            .find(|(s, _)| *s == step)
            .map_or(Outcome::Skipped, |(_, outcome)| outcome.clone())
    }

    pub(crate) fn last(&self) -> Option<Step> {
        self.ran.last().map(|(step, _)| *step)
    }
}

impl Observer for Recorder {
    fn ran(&mut self, step: Step, result: Result<&dyn Val, &ExecutionError>) {
        let outcome = match result {
            Ok(value) => Outcome::Value(render(value)),
            Err(e) => Outcome::Error(e.to_string()),
        };
        self.ran.push((step, outcome));
    }
}

/// A CEL value as text, close to the CEL literal that would produce it:
/// `"s"` (JSON escapes, so control characters show), `42`, `42u`, `1.5`,
/// `true`, `null`, `b"..."`, `[...]`, `{"k": v}` with keys sorted,
/// `optional.of(v)`, and a type by its name (`string`).
pub fn render(value: &dyn Val) -> String {
    let mut out = String::new();
    render_into(&mut out, value);
    out
}

fn render_into(out: &mut String, value: &dyn Val) {
    if let Some(b) = value.downcast_ref::<CelBool>() {
        let _ = write!(out, "{}", b.inner());
    } else if let Some(i) = value.downcast_ref::<CelInt>() {
        let _ = write!(out, "{}", i.inner());
    } else if let Some(u) = value.downcast_ref::<CelUInt>() {
        let _ = write!(out, "{}u", u.inner());
    } else if let Some(d) = value.downcast_ref::<CelDouble>() {
        // Debug keeps a `.0` on whole numbers: `2.0`, not `2` (an int).
        let _ = write!(out, "{:?}", d.inner());
    } else if let Some(s) = value.downcast_ref::<CelString>() {
        out.push_str(&quote(s.inner()));
    } else if value.downcast_ref::<CelNull>().is_some() {
        out.push_str("null");
    } else if let Some(b) = value.downcast_ref::<CelBytes>() {
        let _ = write!(out, "b\"{}\"", b.inner().escape_ascii());
    } else if let Some(t) = value.downcast_ref::<CelType>() {
        out.push_str(t.name());
    } else if let Some(opt) = value.downcast_ref::<CelOptional>() {
        match opt.option() {
            Some(inner) => {
                out.push_str("optional.of(");
                render_into(out, inner);
                out.push(')');
            }
            None => out.push_str("optional.none()"),
        }
    } else if let Some(map) = value.downcast_ref::<CelMap>() {
        let mut entries: Vec<(String, &dyn Val)> = map
            .inner()
            .iter()
            .map(|(key, value)| (render(key.inner()), value.as_ref()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        out.push('{');
        for (i, (key, value)) in entries.into_iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&key);
            out.push_str(": ");
            render_into(out, value);
        }
        out.push('}');
    } else if let Some(items) = value
        .as_iterable()
        .filter(|_| value.get_type().kind() == Kind::List)
    {
        out.push('[');
        let mut iter = items.iter();
        let mut first = true;
        while let Some(item) = iter.next() {
            if !first {
                out.push_str(", ");
            }
            first = false;
            render_into(out, item);
        }
        out.push(']');
    } else {
        let _ = write!(out, "<{}>", value.get_type().name());
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use serde_json::json;

    fn policy(settings: serde_json::Value) -> Policy {
        Policy::new(&settings.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn value(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Value(v) => v,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    const SETTINGS: &str = r#"{
        "variables": [
            {"name": "ns", "expression": "claims['kubernetes.io'].namespace"},
            {"name": "sa", "expression": "claims['kubernetes.io'].serviceaccount.name"}
        ],
        "validations": [
            {"expression": "vars.ns.startsWith('team-')", "message": "not a team namespace"},
            {"expression": "vars.sa != 'default'", "message": "not the default account"}
        ],
        "username": "vars.ns + ':' + vars.sa",
        "groups": "['ns:' + vars.ns]"
    }"#;

    fn k8s(ns: &str, sa: &str) -> String {
        json!({"sub": "x", "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa}}})
            .to_string()
    }

    #[test]
    fn an_allow_shows_every_value() {
        let p = Policy::new(SETTINGS).unwrap_or_else(|e| panic!("{e}"));
        let claims = k8s("team-a", "pusher");
        let e = p.explain(&claims);
        assert_eq!(e.decision, p.evaluate(&claims));
        assert_eq!(e.deciding, None);
        assert_eq!(e.variables[0].label, "ns");
        assert_eq!(e.variables[0].field, "variables[0].expression");
        assert_eq!(value(&e.variables[0].outcome), "\"team-a\"");
        assert_eq!(value(&e.variables[1].outcome), "\"pusher\"");
        assert_eq!(value(&e.validations[0].outcome), "true");
        assert_eq!(e.validations[1].label, "not the default account");
        assert_eq!(value(&e.username.outcome), "\"team-a:pusher\"");
        let groups = e.groups.as_ref().map(|g| value(&g.outcome));
        assert_eq!(groups, Some("[\"ns:team-a\"]"));
    }

    #[test]
    fn a_false_validation_is_the_deciding_step_and_later_ones_are_skipped() {
        let p = Policy::new(SETTINGS).unwrap_or_else(|e| panic!("{e}"));
        let claims = k8s("kube-system", "pusher");
        let e = p.explain(&claims);
        assert_eq!(e.decision, Decision::Deny("not a team namespace".into()));
        assert_eq!(e.decision, p.evaluate(&claims));
        assert_eq!(e.deciding, Some(Step::Validation(0)));
        assert_eq!(value(&e.validations[0].outcome), "false");
        assert_eq!(e.validations[1].outcome, Outcome::Skipped);
        assert_eq!(e.username.outcome, Outcome::Skipped);
        assert_eq!(e.step(Step::Validation(0)), e.validations.first());
    }

    #[test]
    fn a_failing_expression_shows_cels_error() {
        let p = Policy::new(SETTINGS).unwrap_or_else(|e| panic!("{e}"));
        let claims = json!({"sub": "x"}).to_string();
        let e = p.explain(&claims);
        assert_eq!(e.decision, p.evaluate(&claims));
        assert_eq!(e.deciding, Some(Step::Variable(0)));
        match &e.variables[0].outcome {
            Outcome::Error(message) => assert!(message.contains("kubernetes.io"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.variables[1].outcome, Outcome::Skipped);
    }

    #[test]
    fn a_wrong_type_is_decided_by_the_step_that_yielded_it() {
        let p = policy(json!({"username": "claims.n"}));
        let e = p.explain(r#"{"n": 7}"#);
        assert_eq!(e.deciding, Some(Step::Username));
        assert_eq!(value(&e.username.outcome), "7");
        assert!(matches!(e.decision, Decision::Deny(ref r) if r.contains("a string")));
    }

    #[test]
    fn claims_refused_before_any_expression_decide_nothing() {
        let p = policy(json!({}));
        let e = p.explain("[1]");
        assert_eq!(e.deciding, None);
        assert_eq!(e.username.outcome, Outcome::Skipped);
        assert!(e.groups.is_none());
    }

    #[test]
    fn values_render_like_cel_literals_with_sorted_keys() {
        let p = policy(json!({"variables": [{"name": "v", "expression": "claims.v"}]}));
        let claims = json!({"sub": "s", "v": {
            "z": [1, 2.5, 2.0, true, null, "a\"b\n\u{1b}"], "a": {"y": 18446744073709551615u64, "b": "c"}
        }})
        .to_string();
        let e = p.explain(&claims);
        assert_eq!(
            value(&e.variables[0].outcome),
            r#"{"a": {"b": "c", "y": 18446744073709551615u}, "z": [1, 2.5, 2.0, true, null, "a\"b\n\u001b"]}"#
        );
        let p = policy(json!({"variables": [
            {"name": "t", "expression": "type(claims.sub)"},
            {"name": "b", "expression": "b'\\x00a'"},
            {"name": "l", "expression": "[1, 2].map(x, x * 2)"},
            {"name": "o", "expression": "optional.of(1)"},
            {"name": "n", "expression": "optional.none()"}
        ]}));
        let e = p.explain(r#"{"sub": "s"}"#);
        let rendered: Vec<&str> = e.variables.iter().map(|v| value(&v.outcome)).collect();
        assert_eq!(
            rendered,
            [
                "string",
                "b\"\\x00a\"",
                "[2, 4]",
                "optional.of(1)",
                "optional.none()"
            ]
        );
    }
}
