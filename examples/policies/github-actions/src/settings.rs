//! The policy's settings: what an operator writes under the issuer's
//! `[auth.oidc.policy.settings]`, as the JSON document `init` receives.
//!
//! ```toml
//! allowed_owner_ids = ["65432109"]                   # required
//! allowed_refs = ["refs/heads/main", "refs/tags/v*"] # default ["refs/heads/main"]
//! allow_pull_requests = false                        # the default
//! ```
//!
//! Every problem is refused at load, naming the field: an unknown key (a
//! misspelt `allowed_ref` must not silently leave the default in force), a
//! wrong type, an owner *name* where an id belongs, a ref pattern that could
//! never match.

use serde_json::{Map, Value};

use crate::glob::Glob;

/// The keys `init` accepts.
pub const KNOWN_KEYS: [&str; 3] = ["allowed_owner_ids", "allowed_refs", "allow_pull_requests"];

/// `allowed_refs` when the settings leave it out.
pub const DEFAULT_REFS: [&str; 1] = ["refs/heads/main"];

/// The settings, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `repository_owner_id`s whose repositories may authenticate: decimal
    /// digits, as GitHub writes them (a JSON string).
    pub allowed_owner_ids: Vec<String>,
    /// Ref patterns, as written and compiled.
    pub allowed_refs: Vec<(String, Glob)>,
    /// Whether tokens of pull-request workflows are accepted.
    pub allow_pull_requests: bool,
}

impl Settings {
    /// Reads and checks the settings document. The error starts with the
    /// path of the offending field: `settings.allowed_refs[1]: ...`.
    pub fn from_json(json: &str) -> Result<Settings, String> {
        let document: Value = match json.trim() {
            // No settings at all: the same message as a missing key.
            "" => Value::Object(Map::new()),
            text => serde_json::from_str(text)
                .map_err(|e| format!("settings: not a JSON document: {e}"))?,
        };
        let object = match document {
            Value::Object(object) => object,
            Value::Null => Map::new(),
            other => {
                return Err(format!(
                    "settings: must be a table of keys, got {}",
                    type_name(&other)
                ));
            }
        };

        let unknown: Vec<String> = object
            .keys()
            .filter(|key| !KNOWN_KEYS.contains(&key.as_str()))
            .map(|key| quote(key))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "settings: unknown key{} {} (the keys are {})",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", "),
                KNOWN_KEYS.join(", ")
            ));
        }

        Ok(Settings {
            allowed_owner_ids: owner_ids(object.get("allowed_owner_ids"))?,
            allowed_refs: refs(object.get("allowed_refs"))?,
            allow_pull_requests: match object.get("allow_pull_requests") {
                None => false,
                Some(Value::Bool(allow)) => *allow,
                Some(other) => {
                    return Err(format!(
                        "settings.allow_pull_requests: must be true or false, got {}",
                        type_name(other)
                    ));
                }
            },
        })
    }
}

fn owner_ids(value: Option<&Value>) -> Result<Vec<String>, String> {
    const FIELD: &str = "settings.allowed_owner_ids";
    const WHAT: &str = "a non-empty list of GitHub owner ids (the tokens' `repository_owner_id`, \
                        e.g. [\"65432109\"])";
    let items = match value {
        None => return Err(format!("{FIELD}: required: {WHAT}")),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(format!("{FIELD}: is empty: {WHAT}"));
        }
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("{FIELD}: must be {WHAT}, got {}", type_name(other))),
    };
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = match item {
            Value::String(id) => id,
            // TOML `[65432109]`: say how to write it rather than guess.
            Value::Number(n) => {
                return Err(format!(
                    "{FIELD}[{i}]: must be a string, as GitHub writes the claim: write \"{n}\""
                ));
            }
            other => {
                return Err(format!(
                    "{FIELD}[{i}]: must be a string, got {}",
                    type_name(other)
                ));
            }
        };
        if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{FIELD}[{i}]: {} is not an owner id: use the owner's numeric `repository_owner_id` \
                 (`gh api users/NAME --jq .id`), not its name, which can be renamed and \
                 re-registered by someone else",
                quote(id)
            ));
        }
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    Ok(ids)
}

fn refs(value: Option<&Value>) -> Result<Vec<(String, Glob)>, String> {
    const FIELD: &str = "settings.allowed_refs";
    const WHAT: &str =
        "a non-empty list of ref patterns (e.g. [\"refs/heads/main\", \"refs/tags/v*\"])";
    let items = match value {
        None => {
            return Ok(DEFAULT_REFS
                .iter()
                .map(|p| ((*p).to_owned(), Glob::new(p)))
                .collect());
        }
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(format!(
                "{FIELD}: is empty, so nothing could ever match: {WHAT}"
            ));
        }
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("{FIELD}: must be {WHAT}, got {}", type_name(other))),
    };
    let mut refs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::String(pattern) = item else {
            return Err(format!(
                "{FIELD}[{i}]: must be a string, got {}",
                type_name(item)
            ));
        };
        if pattern.chars().any(char::is_control) || pattern.contains(' ') {
            return Err(format!(
                "{FIELD}[{i}]: {} contains spaces or control characters, which no ref has",
                quote(pattern)
            ));
        }
        if !pattern.starts_with("refs/") {
            return Err(format!(
                "{FIELD}[{i}]: {} would never match: patterns match the full ref, which starts \
                 with refs/ (refs/heads/<branch>, refs/tags/<tag>)",
                quote(pattern)
            ));
        }
        if pattern.starts_with("refs/pull/") {
            return Err(format!(
                "{FIELD}[{i}]: {} names pull-request refs: set allow_pull_requests = true instead",
                quote(pattern)
            ));
        }
        refs.push((pattern.clone(), Glob::new(pattern)));
    }
    Ok(refs)
}

/// The JSON type of a value, for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// `text` as a JSON string: quoted, control characters escaped. Deny
/// reasons and errors are logged; a value from a token must not be able to
/// forge a log line.
pub fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match Settings::from_json(json) {
            Ok(settings) => panic!("{json} was accepted: {settings:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::from_json(r#"{"allowed_owner_ids": ["1", "22", "1"]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.allowed_owner_ids, ["1", "22"], "duplicates dropped");
        let refs: Vec<&str> = s.allowed_refs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(refs, DEFAULT_REFS);
        assert!(!s.allow_pull_requests);
    }

    #[test]
    fn owner_ids_are_required_and_numeric() {
        for doc in ["", "null", "{}"] {
            assert!(
                err(doc).starts_with("settings.allowed_owner_ids: required"),
                "{doc}: {}",
                err(doc)
            );
        }
        assert!(err(r#"{"allowed_owner_ids": []}"#).contains("is empty"));
        assert!(err(r#"{"allowed_owner_ids": "1"}"#).contains("got a string"));
        let e = err(r#"{"allowed_owner_ids": ["1", "octo-org"]}"#);
        assert!(
            e.starts_with("settings.allowed_owner_ids[1]: \"octo-org\" is not an owner id"),
            "{e}"
        );
        let e = err(r#"{"allowed_owner_ids": [65432109]}"#);
        assert!(e.contains("write \"65432109\""), "{e}");
        assert!(err(r#"{"allowed_owner_ids": [""]}"#).contains("is not an owner id"));
        assert!(err(r#"{"allowed_owner_ids": ["-1"]}"#).contains("is not an owner id"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(r#"{"allowed_owner_ids": ["1"], "allowed_ref": ["refs/heads/x"]}"#);
        assert!(
            e.starts_with("settings: unknown key \"allowed_ref\" (the keys are"),
            "{e}"
        );
        let e = err(r#"{"a": 1, "b\n": 2, "allowed_owner_ids": ["1"]}"#);
        assert!(e.contains("unknown keys \"a\", \"b\\n\""), "{e}");
    }

    #[test]
    fn ref_patterns_are_checked() {
        let with =
            |refs: &str| format!(r#"{{"allowed_owner_ids": ["1"], "allowed_refs": {refs}}}"#);
        assert!(err(&with("[]")).contains("allowed_refs: is empty"));
        assert!(err(&with(r#""refs/heads/main""#)).contains("got a string"));
        assert!(err(&with("[1]")).starts_with("settings.allowed_refs[0]: must be a string"));
        let e = err(&with(r#"["refs/heads/main", "main"]"#));
        assert!(
            e.starts_with("settings.allowed_refs[1]: \"main\" would never match"),
            "{e}"
        );
        assert!(err(&with(r#"["refs/pull/*/merge"]"#)).contains("allow_pull_requests = true"));
        assert!(err(&with(r#"["refs/heads/a b"]"#)).contains("spaces"));
    }

    #[test]
    fn other_shapes_are_refused() {
        assert!(err("[1]").starts_with("settings: must be a table"));
        assert!(err("{").starts_with("settings: not a JSON document"));
        let e = err(r#"{"allowed_owner_ids": ["1"], "allow_pull_requests": "yes"}"#);
        assert!(
            e.starts_with("settings.allow_pull_requests: must be true or false"),
            "{e}"
        );
    }
}
