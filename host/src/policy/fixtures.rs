//! Claim fixtures: the cases of `gantry policy test --fixtures` and of a
//! policy artifact's fixtures layer, and checking a decision against a
//! case's expectations. Shared by the CLI and by the server, which runs an
//! artifact's fixtures before the artifact becomes visible.
//!
//! A fixture file is TOML or JSON (by extension). TOML: a `[[case]]` array
//! of tables. JSON: `{"case": [...]}` or a bare list. Each case:
//! `{ name, claims, expect = "allow"|"deny", username?, groups?,
//! reason_contains? }`, `claims` a table/object or a string holding a JSON
//! object (TOML has no null). Unknown keys are refused, so a misspelt
//! expectation cannot silently check nothing.

use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use super::{Decision, Identity};

/// The decision a case (or `--expect`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The policy allows.
    Allow,
    /// The policy denies.
    Deny,
}

/// Why fixtures could not be read; the message names the file (or layer)
/// and the case.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FixtureError(pub String);

impl std::ops::Deref for FixtureError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// One set of claims to evaluate and what should come of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    /// A JSON object.
    pub claims: serde_json::Value,
    pub expect: Expectation,
}

/// What a case expects. Nothing set: any decision passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectation {
    pub decision: Option<Expect>,
    /// The exact username of an allow.
    pub username: Option<String>,
    /// The groups of an allow, in any order.
    pub groups: Option<Vec<String>>,
    /// Text the reason of a deny contains.
    pub reason_contains: Option<String>,
}

/// One way a decision differs from its case's expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `decision`, `username`, `groups` or `reason`.
    pub aspect: &'static str,
    /// `expected ..., got ...`.
    pub message: String,
}

/// What evaluating a case produced: a decision, or an error (a guest trap,
/// a time-out, an identity the host refuses).
pub type Outcome<'a> = Result<&'a Decision, &'a str>;

impl Expectation {
    /// Every way `outcome` differs from this expectation; empty: it passes.
    pub fn check(&self, outcome: Outcome<'_>) -> Vec<Mismatch> {
        let mut found = Vec::new();
        let mut miss = |aspect, message| found.push(Mismatch { aspect, message });
        let decision = match outcome {
            Ok(decision) => decision,
            Err(error) => {
                miss("decision", format!("evaluation failed: {error}"));
                return found;
            }
        };
        let wants_allow = self.username.is_some() || self.groups.is_some();
        match (self.decision, decision) {
            (Some(Expect::Allow), Decision::Deny(reason)) => {
                miss("decision", format!("expected allow, got deny: {reason:?}"));
            }
            (Some(Expect::Deny), Decision::Allow(identity)) => {
                miss(
                    "decision",
                    format!("expected deny, got allow as {}", describe(identity)),
                );
            }
            (None, Decision::Deny(reason)) if wants_allow => {
                miss(
                    "decision",
                    format!(
                        "expected allow (a username or groups are expected), got deny: {reason:?}"
                    ),
                );
            }
            _ => {}
        }
        match decision {
            Decision::Allow(identity) => {
                if let Some(username) = &self.username
                    && &identity.username != username
                {
                    miss(
                        "username",
                        format!("expected {username:?}, got {:?}", identity.username),
                    );
                }
                if let Some(groups) = &self.groups {
                    let mut want: Vec<&str> = groups
                        .iter()
                        .map(String::as_str)
                        .filter(|g| !g.is_empty())
                        .collect();
                    let mut have: Vec<&str> = identity.groups.iter().map(String::as_str).collect();
                    want.sort_unstable();
                    have.sort_unstable();
                    if want != have {
                        miss("groups", format!("expected {want:?}, got {have:?}"));
                    }
                }
            }
            Decision::Deny(reason) => {
                if let Some(text) = &self.reason_contains
                    && !reason.contains(text.as_str())
                {
                    miss(
                        "reason",
                        format!("expected it to contain {text:?}, got {reason:?}"),
                    );
                }
            }
        }
        found
    }
}

/// `"name" with groups ["a", "b"]`, for messages.
pub fn describe(identity: &Identity) -> String {
    let mut text = format!("{:?}", identity.username);
    if !identity.groups.is_empty() {
        let _ = write!(text, " with groups {:?}", identity.groups);
    }
    text
}

/// A case as written in a fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    claims: serde_json::Value,
    expect: Expect,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    reason_contains: Option<String>,
}

/// Reads every case of a fixture file. Errors name the file and, for a
/// case, its number (from 1) and name.
pub fn read(path: &Path) -> Result<Vec<Case>, FixtureError> {
    let at = |problem: String| FixtureError(format!("fixture file {}: {problem}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| at(format!("cannot read: {e}")))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("toml") => parse_toml(&text).map_err(at),
        Some("json") => {
            let document =
                serde_json::from_str(&text).map_err(|e| at(format!("invalid JSON: {e}")))?;
            parse(document).map_err(at)
        }
        _ => Err(at("unknown format: name it .toml or .json".to_owned())),
    }
}

/// The cases of a TOML fixture document (a file, or an artifact's
/// fixtures layer). Errors name the case.
pub fn parse_toml(text: &str) -> Result<Vec<Case>, String> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| format!("invalid TOML: {}", e.to_string().trim_end()))?;
    parse(super::toml_to_json(toml::Value::Table(table)))
}

/// The cases of a fixture document, already converted to JSON.
fn parse(document: serde_json::Value) -> Result<Vec<Case>, String> {
    let list = match document {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(mut top) => {
            if let Some(key) = top.keys().find(|k| *k != "case") {
                return Err(format!(
                    "unknown top-level key `{key}`: cases go in a `case` list (`[[case]]` in TOML)"
                ));
            }
            match top.remove("case") {
                Some(serde_json::Value::Array(list)) => list,
                Some(_) => {
                    return Err("`case` must be a list of cases (`[[case]]` in TOML)".to_owned());
                }
                None => Vec::new(),
            }
        }
        _ => return Err("must hold a list of cases".to_owned()),
    };
    if list.is_empty() {
        return Err("no cases: add `[[case]]` tables (TOML) or a `case` list (JSON)".to_owned());
    }
    list.into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let label = match raw.get("name").and_then(|n| n.as_str()) {
                Some(name) => format!("case #{} ({name:?})", i + 1),
                None => format!("case #{}", i + 1),
            };
            case(raw).map_err(|e| format!("{label}: {e}"))
        })
        .collect()
}

fn case(raw: serde_json::Value) -> Result<Case, String> {
    if !raw.is_object() {
        return Err("must be a table with name, claims and expect".to_owned());
    }
    let raw: RawCase = serde_json::from_value(raw).map_err(|e| e.to_string())?;
    let claims = match raw.claims {
        serde_json::Value::String(text) => {
            serde_json::from_str(&text).map_err(|e| format!("claims: invalid JSON: {e}"))?
        }
        other => other,
    };
    if !claims.is_object() {
        return Err("claims: must be a JSON object (a table, or a string holding one)".to_owned());
    }
    let allow_only = [
        ("username", raw.username.is_some()),
        ("groups", raw.groups.is_some()),
    ];
    match raw.expect {
        Expect::Deny => {
            if let Some((key, _)) = allow_only.iter().find(|(_, set)| *set) {
                return Err(format!("`{key}` is only checked when expect = \"allow\""));
            }
        }
        Expect::Allow => {
            if raw.reason_contains.is_some() {
                return Err("`reason_contains` is only checked when expect = \"deny\"".to_owned());
            }
        }
    }
    Ok(Case {
        name: raw.name,
        claims,
        expect: Expectation {
            decision: Some(raw.expect),
            username: raw.username,
            groups: raw.groups,
            reason_contains: raw.reason_contains,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allow(username: &str, groups: &[&str]) -> Decision {
        Decision::Allow(Identity {
            username: username.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        })
    }

    fn expectation(
        decision: Option<Expect>,
        username: Option<&str>,
        groups: Option<&[&str]>,
    ) -> Expectation {
        Expectation {
            decision,
            username: username.map(str::to_owned),
            groups: groups.map(|g| g.iter().map(|s| (*s).to_owned()).collect()),
            reason_contains: None,
        }
    }

    fn aspects(found: &[Mismatch]) -> Vec<&str> {
        found.iter().map(|m| m.aspect).collect()
    }

    #[test]
    fn no_expectation_always_passes() {
        let none = Expectation::default();
        assert!(none.check(Ok(&Decision::Deny("no".into()))).is_empty());
        assert!(none.check(Ok(&allow("u", &[]))).is_empty());
    }

    #[test]
    fn decision_mismatches_say_what_came_instead() {
        let f =
            expectation(Some(Expect::Allow), None, None).check(Ok(&Decision::Deny("no".into())));
        assert_eq!(f[0].message, "expected allow, got deny: \"no\"");
        let f = expectation(Some(Expect::Deny), None, None).check(Ok(&allow("u", &["g"])));
        assert_eq!(
            f[0].message,
            "expected deny, got allow as \"u\" with groups [\"g\"]"
        );
        let f = expectation(Some(Expect::Deny), None, None).check(Err("trap"));
        assert_eq!(f[0].message, "evaluation failed: trap");
    }

    #[test]
    fn username_and_groups_are_checked_groups_in_any_order() {
        let d = allow("alice", &["b", "a"]);
        assert!(
            expectation(None, Some("alice"), Some(&["a", "b"]))
                .check(Ok(&d))
                .is_empty()
        );
        let f = expectation(None, Some("bob"), Some(&["a"])).check(Ok(&d));
        assert_eq!(aspects(&f), ["username", "groups"]);
        let f = expectation(None, Some("alice"), None).check(Ok(&Decision::Deny("x".into())));
        assert_eq!(aspects(&f), ["decision"]);
    }

    #[test]
    fn empty_groups_expect_none() {
        let e = expectation(None, None, Some(&[""]));
        assert!(e.check(Ok(&allow("u", &[]))).is_empty());
        assert_eq!(e.check(Ok(&allow("u", &["g"]))).len(), 1);
    }

    #[test]
    fn reason_contains_is_checked_on_a_deny() {
        let e = Expectation {
            decision: Some(Expect::Deny),
            reason_contains: Some("team".into()),
            ..Expectation::default()
        };
        assert!(
            e.check(Ok(&Decision::Deny("only team-a".into())))
                .is_empty()
        );
        assert_eq!(
            aspects(&e.check(Ok(&Decision::Deny("nope".into())))),
            ["reason"]
        );
    }

    #[test]
    fn cases_from_json_in_both_shapes_with_string_or_object_claims() {
        let case = json!({"name": "a", "claims": {"sub": "s"}, "expect": "allow", "username": "s"});
        let string_claims = json!({"name": "b", "claims": "{\"sub\": \"t\"}", "expect": "deny"});
        let bare = parse(json!([case, string_claims])).unwrap_or_else(|e| panic!("{e}"));
        let wrapped =
            parse(json!({"case": [case, string_claims]})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bare, wrapped);
        assert_eq!(bare[0].claims, json!({"sub": "s"}));
        assert_eq!(bare[1].claims, json!({"sub": "t"}));
        assert_eq!(bare[0].expect.username.as_deref(), Some("s"));
        assert_eq!(bare[1].expect.decision, Some(Expect::Deny));
    }

    #[test]
    fn bad_cases_name_their_number_and_name() {
        let err = |doc| parse(doc).err().unwrap_or_default();
        let ok = json!({"name": "ok", "claims": {}, "expect": "allow"});
        let e = err(json!([ok, {"name": "second", "claims": {}}]));
        assert!(
            e.starts_with("case #2 (\"second\"): missing field `expect`"),
            "{e}"
        );
        let e = err(json!([{"claims": {}, "expect": "deny"}]));
        assert!(e.starts_with("case #1: missing field `name`"), "{e}");
        let e = err(json!([{"name": "x", "claims": {}, "expect": "allow", "usernme": "u"}]));
        assert!(e.contains("unknown field `usernme`"), "{e}");
        let e = err(json!([{"name": "x", "claims": {}, "expect": "maybe"}]));
        assert!(e.contains("unknown variant `maybe`"), "{e}");
        let e = err(json!([{"name": "x", "claims": "{\"a\": ", "expect": "deny"}]));
        assert!(
            e.contains("claims: invalid JSON") && e.contains("line 1"),
            "{e}"
        );
        let e = err(json!([{"name": "x", "claims": [1], "expect": "deny"}]));
        assert!(e.contains("claims: must be a JSON object"), "{e}");
        let e = err(json!([{"name": "x", "claims": {}, "expect": "deny", "username": "u"}]));
        assert!(
            e.contains("`username` is only checked when expect = \"allow\""),
            "{e}"
        );
        let e =
            err(json!([{"name": "x", "claims": {}, "expect": "allow", "reason_contains": "u"}]));
        assert!(e.contains("`reason_contains` is only checked"), "{e}");
        assert!(err(json!({"cases": []})).contains("unknown top-level key `cases`"));
        assert!(err(json!({})).starts_with("no cases"));
        assert!(err(json!("x")).contains("list of cases"));
    }

    #[test]
    fn toml_files_with_tables_datetimes_and_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let good = dir.path().join("cases.toml");
        std::fs::write(
            &good,
            "[[case]]\nname = \"t\"\nexpect = \"allow\"\ngroups = []\n[case.claims]\nsub = \"s\"\nwhen = 2026-01-01T00:00:00Z\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let cases = read(&good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cases[0].claims,
            json!({"sub": "s", "when": "2026-01-01T00:00:00Z"})
        );
        assert_eq!(cases[0].expect.groups, Some(vec![]));

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[case]]\nname = \"t\"\nexpect = \n")
            .unwrap_or_else(|e| panic!("{e}"));
        let e = read(&bad).err().unwrap_or_default();
        assert!(
            e.contains("bad.toml") && e.contains("invalid TOML") && e.contains("line 3"),
            "{e}"
        );

        let other = dir.path().join("cases.yaml");
        std::fs::write(&other, "").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            read(&other)
                .err()
                .unwrap_or_default()
                .contains("unknown format")
        );
        let missing = read(&dir.path().join("nope.json"))
            .err()
            .unwrap_or_default();
        assert!(
            missing.contains("nope.json") && missing.contains("cannot read"),
            "{missing}"
        );
    }
}
