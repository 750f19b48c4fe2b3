//! The policy's settings document: what an operator writes under an issuer's
//! `policy.settings`, as the JSON the host hands to `init`.
//!
//! This module only reads the document; compiling the expressions in it is
//! `policy`'s job. Unknown keys are refused so that a misspelt field
//! (`validation`, `usernme`) fails the load instead of silently not applying.

use serde::Deserialize;

/// Expression used for the username when the settings name none.
pub const DEFAULT_USERNAME: &str = "claims.sub";

/// The settings of one CEL policy instance.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Named values computed in order; each is visible to the expressions
    /// after it as `vars.<name>`.
    #[serde(default)]
    pub variables: Vec<Variable>,
    /// Rules that must all evaluate to `true`; the first `false` one denies
    /// the token with its message.
    #[serde(default)]
    pub validations: Vec<Validation>,
    /// Expression yielding the workload's username, a non-empty string.
    #[serde(default = "default_username")]
    pub username: String,
    /// Expression yielding the workload's groups, a list of strings. No
    /// expression means no groups.
    #[serde(default)]
    pub groups: Option<String>,
}

/// `variables[i]`: a name bound to the value of an expression.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// The name, referred to as `vars.<name>`.
    pub name: String,
    /// The CEL expression computing the value.
    pub expression: String,
}

/// `validations[i]`: a rule every accepted token satisfies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// A CEL expression that must evaluate to a bool.
    pub expression: String,
    /// Why the token is refused when the expression is `false`.
    pub message: String,
}

/// serde_json's message without its "at line L column C": the host builds
/// this JSON from the operator's TOML, so a JSON position means nothing to
/// them; the field path does.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => message,
    }
}

fn default_username() -> String {
    DEFAULT_USERNAME.to_owned()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            variables: Vec::new(),
            validations: Vec::new(),
            username: default_username(),
            groups: None,
        }
    }
}

impl Settings {
    /// Reads settings from JSON. An empty document (or `null`) means "all
    /// defaults": an issuer configured with no settings maps `sub` to the
    /// username and checks nothing beyond what the host verified.
    ///
    /// The error names the path of the offending field, e.g.
    /// `settings.validations[1]: unknown field `mesage``.
    pub fn from_json(json: &str) -> Result<Settings, String> {
        let trimmed = json.trim();
        if trimmed.is_empty() || trimmed == "null" {
            return Ok(Settings::default());
        }
        // serde would also read a struct from a positional array; settings
        // are only ever an object of named fields.
        if !trimmed.starts_with('{') {
            return Err("settings: must be a JSON object".to_owned());
        }
        let mut de = serde_json::Deserializer::from_str(trimmed);
        let settings: Settings = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let mut path: Vec<String> =
                e.path().iter().map(|segment| segment.to_string()).collect();
            let inner = e.into_inner();
            let message = without_position(&inner);
            // For an unknown key the path ends with that key, which the
            // message names already: point at the object holding it.
            if message.starts_with("unknown field") {
                path.pop();
            }
            let at = path
                .iter()
                .fold(String::from("settings"), |mut at, segment| {
                    if !segment.starts_with('[') {
                        at.push('.');
                    }
                    at.push_str(segment);
                    at
                });
            format!("{at}: {message}")
        })?;
        de.end()
            .map_err(|e| format!("settings: {}", without_position(&e)))?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_null_mean_defaults() {
        for doc in ["", "  ", "null", "{}"] {
            let s = Settings::from_json(doc).expect("defaults");
            assert_eq!(s.username, DEFAULT_USERNAME);
            assert!(s.variables.is_empty() && s.validations.is_empty());
            assert!(s.groups.is_none());
        }
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let err = Settings::from_json(r#"{"usernme": "claims.email"}"#).expect_err("unknown key");
        assert!(
            err.starts_with("settings: unknown field `usernme`"),
            "{err}"
        );
        assert!(err.contains("`username`"), "lists the known fields: {err}");
    }

    #[test]
    fn unknown_nested_key_names_its_path() {
        let err = Settings::from_json(
            r#"{"validations": [{"expression": "true", "message": "m"},
                                {"expression": "true", "mesage": "m"}]}"#,
        )
        .expect_err("unknown key");
        assert!(
            err.starts_with("settings.validations[1]: unknown field `mesage`"),
            "{err}"
        );
    }

    #[test]
    fn missing_message_and_wrong_types_are_refused() {
        let err = Settings::from_json(r#"{"validations": [{"expression": "true"}]}"#)
            .expect_err("message is required");
        assert!(
            err.contains("validations[0]") && err.contains("missing field `message`"),
            "{err}"
        );

        let err =
            Settings::from_json(r#"{"groups": ["a"]}"#).expect_err("groups is one expression");
        assert!(err.starts_with("settings.groups:"), "{err}");

        let err = Settings::from_json("[[], [], \"claims.sub\"]").expect_err("not an object");
        assert_eq!(err, "settings: must be a JSON object");

        let err = Settings::from_json("{} {}").expect_err("trailing data");
        assert!(err.starts_with("settings:"), "{err}");
    }
}
