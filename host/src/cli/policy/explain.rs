//! `gantry policy test --explain`: what each expression of `builtin:cel`
//! settings yielded for one claim set, and which one decided.
//!
//! The explanation comes from the policy component itself: its
//! `gantry:cel/explain` export, run in the same sandbox on the same settings
//! and claims text as `evaluate`, and recorded while the one evaluation code
//! path of the CEL policy runs. So what it shows is what the server
//! decides. The decision it carries is still compared with `evaluate`'s:
//! if they ever differ, [`disagreement`] says so.

use std::fmt::Write as _;

use crate::policy::explanation::{Explained, Explanation, Outcome, Step, WitDecision};
use crate::policy::{Decision, validate_decision};

/// Longest rendered value shown; the rest is counted, not printed.
const MAX_VALUE_CHARS: usize = 300;

/// The explanation's decision as the host accepts one from `evaluate`: the
/// same deny-reason bound, the same identity checks.
pub fn as_host_decision(
    explanation: &Explanation,
    max_output_bytes: usize,
) -> Result<Decision, String> {
    validate_decision(
        Decision::from(explanation.decision.clone()),
        max_output_bytes,
    )
}

/// `None` when `evaluate` and the explanation agree; otherwise the warning
/// to print. `component` is `evaluate`'s outcome (an error as text),
/// `explained` the explanation's decision, put through the host's checks.
pub fn disagreement(
    component: Result<&Decision, &str>,
    explained: Result<&Decision, &str>,
) -> Option<String> {
    let agree = match (component, explained) {
        (Ok(a), Ok(b)) => a == b,
        // The host refused the identity both produced (control characters,
        // sizes): the messages differ in framing, the refusal is the same.
        (Err(_), Err(_)) => true,
        _ => false,
    };
    if agree {
        return None;
    }
    let show = |outcome: Result<&Decision, &str>| match outcome {
        Ok(Decision::Allow(identity)) => {
            format!("allow as {}", crate::policy::fixtures::describe(identity))
        }
        Ok(Decision::Deny(reason)) => format!("deny: {reason:?}"),
        Err(error) => format!("error: {error}"),
    };
    Some(format!(
        "WARNING: THE EXPLANATION DISAGREES WITH THE POLICY'S DECISION\n\
         \x20 evaluate (what the server runs): {}\n\
         \x20 explain (the same component):    {}\n\
         \x20 The decision shown is evaluate's; the explanation above does not describe it.\n\
         \x20 This is a bug in Gantry: please report it with these settings and claims.",
        show(component),
        show(explained),
    ))
}

/// The explanation as text: variables, validations, username and groups,
/// each with its expression and what it yielded, the deciding one marked.
pub fn render(explanation: &Explanation) -> String {
    let mut labels: Vec<String> = explanation
        .variables
        .iter()
        .map(|v| v.label.clone())
        .collect();
    labels.extend((0..explanation.validations.len()).map(|i| format!("[{i}]")));
    let width = labels
        .iter()
        .map(|l| l.chars().count())
        .chain([USERNAME.len(), GROUPS.len()])
        .max()
        .unwrap_or(0);

    let mut out = String::new();
    let deciding = explanation.deciding;
    let item = |out: &mut String, indent: &str, label: &str, e: &Explained, step: Step| {
        let step = Some(step);
        let pad = width + 2 - label.chars().count();
        let cont = format!("{indent}{}", " ".repeat(width + 2));
        let _ = writeln!(
            out,
            "{indent}{label}{}{}",
            " ".repeat(pad),
            e.expression.trim().replace('\n', &format!("\n{cont}"))
        );
        let mut line = match &e.outcome {
            Outcome::Skipped => "(not evaluated: evaluation stopped earlier)".to_owned(),
            Outcome::Value(value) => format!("= {}", shorten(value)),
            Outcome::Error(error) => format!("! error: {}", shorten(&super::printable(error))),
        };
        if deciding == step {
            line.push_str("   <- denies");
            if let (Some(Step::Validation(_)), Outcome::Value(v)) = (&step, &e.outcome)
                && v == "false"
            {
                let _ = write!(line, ": {:?}", e.label);
            }
        }
        let _ = writeln!(out, "{cont}{line}");
    };

    let _ = writeln!(out, "variables:{}", none(explanation.variables.is_empty()));
    for (i, v) in explanation.variables.iter().enumerate() {
        item(&mut out, "  ", &v.label, v, Step::Variable(index(i)));
    }
    let _ = writeln!(
        out,
        "validations:{}",
        none(explanation.validations.is_empty())
    );
    for (i, v) in explanation.validations.iter().enumerate() {
        item(
            &mut out,
            "  ",
            &format!("[{i}]"),
            v,
            Step::Validation(index(i)),
        );
    }
    let _ = writeln!(out, "identity:");
    item(
        &mut out,
        "  ",
        USERNAME,
        &explanation.username,
        Step::Username,
    );
    match &explanation.groups {
        Some(groups) => item(&mut out, "  ", GROUPS, groups, Step::Groups),
        None => {
            let _ = writeln!(out, "  {GROUPS:width$}  (no groups expression: no groups)");
        }
    }
    if explanation.deciding.is_none()
        && let WitDecision::Deny(reason) = &explanation.decision
    {
        let _ = writeln!(
            out,
            "  (no expression ran: the claims were refused: {reason:?})"
        );
    }
    out
}

/// A settings index as the WIT carries it.
fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

const USERNAME: &str = "username";
const GROUPS: &str = "groups";

fn none(empty: bool) -> &'static str {
    if empty { " (none)" } else { "" }
}

/// `text` cut to [`MAX_VALUE_CHARS`] characters, saying how many were cut.
fn shorten(text: &str) -> String {
    let total = text.chars().count();
    if total <= MAX_VALUE_CHARS {
        return text.to_owned();
    }
    let kept: String = text.chars().take(MAX_VALUE_CHARS).collect();
    format!("{kept}… ({} more characters)", total - MAX_VALUE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        BuiltinModule, EngineOptions, Identity, Limits, ModuleSource, PolicyEngine,
    };

    /// The built-in CEL component's own explanation.
    fn explain(settings: &str, claims: &str) -> Explanation {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let settings: serde_json::Value =
            serde_json::from_str(settings).unwrap_or_else(|e| panic!("{e}"));
        runtime.block_on(async {
            let engine =
                PolicyEngine::new(EngineOptions::default()).unwrap_or_else(|e| panic!("{e}"));
            let policy = engine
                .load(
                    "https://issuer.example",
                    &ModuleSource::Builtin(BuiltinModule::Cel),
                    &settings,
                    Limits::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(policy.can_explain());
            policy
                .explain(claims)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("builtin:cel exports explain"))
        })
    }
    #[test]
    fn a_deny_marks_the_validation_and_skips_the_rest() {
        let e = explain(
            r#"{"variables": [{"name": "ns", "expression": "claims.ns"}],
                "validations": [{"expression": "vars.ns == 'a'", "message": "only a"},
                                {"expression": "true", "message": "never"}],
                "groups": "[vars.ns]"}"#,
            r#"{"sub": "s", "ns": "b"}"#,
        );
        let text = render(&e);
        assert_eq!(
            text,
            "variables:
  ns        claims.ns
            = \"b\"
validations:
  [0]       vars.ns == 'a'
            = false   <- denies: \"only a\"
  [1]       true
            (not evaluated: evaluation stopped earlier)
identity:
  username  claims.sub
            (not evaluated: evaluation stopped earlier)
  groups    [vars.ns]
            (not evaluated: evaluation stopped earlier)
"
        );
    }

    #[test]
    fn errors_long_values_and_refused_claims() {
        let e = explain(r#"{"username": "claims.missing"}"#, r#"{"sub": "s"}"#);
        let text = render(&e);
        assert!(
            text.contains("! error: No such key: missing   <- denies"),
            "{text}"
        );
        assert!(
            text.contains("variables: (none)\nvalidations: (none)\n"),
            "{text}"
        );
        assert!(text.contains("(no groups expression: no groups)"), "{text}");

        let long = "x".repeat(1000);
        let e = explain("{}", &format!(r#"{{"sub": "{long}"}}"#));
        let text = render(&e);
        assert!(text.contains("… (702 more characters)"), "{text}");

        let e = explain("{}", "[1]");
        assert!(render(&e).contains("(no expression ran: the claims were refused"));
    }

    #[test]
    fn agreement_and_disagreement() {
        let allow = Decision::Allow(Identity {
            username: "u".into(),
            groups: vec![],
        });
        let deny = Decision::Deny("no".into());
        assert!(disagreement(Ok(&allow), Ok(&allow)).is_none());
        assert!(disagreement(Err("bad name"), Err("other words")).is_none());
        let warning = disagreement(Ok(&allow), Ok(&deny)).unwrap_or_default();
        assert!(warning.starts_with("WARNING"), "{warning}");
        assert!(warning.contains("allow as \"u\"") && warning.contains("deny: \"no\""));
        assert!(disagreement(Ok(&deny), Err("x")).is_some());
    }

    #[test]
    fn the_explained_decision_goes_through_the_hosts_checks() {
        let e = explain(r#"{"username": "claims.sub"}"#, r#"{"sub": "a\u0007b"}"#);
        let err = as_host_decision(&e, 64 << 10).err().unwrap_or_default();
        assert!(err.contains("control characters"), "{err}");
    }
}
