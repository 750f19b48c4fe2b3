//! The decision: from one GitHub Actions token's claims to an identity, or a
//! reason to refuse it.
//!
//! Checks, in this order, the first failing one denying:
//!
//! 1. the claims the policy reads are present and non-empty strings
//!    (`repository`, `repository_owner`, `repository_owner_id`, `ref`,
//!    `event_name`); every bad one is named;
//! 2. `repository_owner_id` is one of `allowed_owner_ids`. The owner's
//!    *name* is never trusted: an organisation can be renamed and its old
//!    name registered by someone else, the id stays with the organisation;
//! 3. `repository` is `<repository_owner>/<name>`;
//! 4. pull requests (`event_name` `pull_request` or `pull_request_target`,
//!    or a `refs/pull/...` ref) only with `allow_pull_requests`;
//! 5. `ref` matches one of `allowed_refs` (a pull-request ref needs no
//!    pattern once pull requests are allowed).
//!
//! Then the workload is `repository`, in the group `repository_owner`.

use serde_json::{Map, Value};

use crate::settings::{Settings, quote, type_name};

/// The claims the policy reads; each must be a non-empty string.
pub const REQUIRED_CLAIMS: [&str; 5] = [
    "repository",
    "repository_owner",
    "repository_owner_id",
    "ref",
    "event_name",
];

/// `event_name`s of pull-request workflows.
const PULL_REQUEST_EVENTS: [&str; 2] = ["pull_request", "pull_request_target"];

/// The outcome of one evaluation (the WIT `decision`, without the bindings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        username: String,
        groups: Vec<String>,
    },
    Deny(String),
}

/// A policy with checked settings, ready to evaluate claims.
#[derive(Debug, Clone)]
pub struct Policy {
    settings: Settings,
}

impl Policy {
    /// `init`: reads and checks the settings.
    pub fn from_settings_json(json: &str) -> Result<Policy, String> {
        Settings::from_json(json).map(|settings| Policy { settings })
    }

    /// One line for the log: what this instance allows.
    pub fn summary(&self) -> String {
        let s = &self.settings;
        let refs: Vec<&str> = s.allowed_refs.iter().map(|(p, _)| p.as_str()).collect();
        format!(
            "owner ids [{}], refs [{}], pull requests {}",
            s.allowed_owner_ids.join(", "),
            refs.join(", "),
            if s.allow_pull_requests {
                "allowed"
            } else {
                "denied"
            }
        )
    }

    /// `evaluate`: decides on one claim set (a JSON object).
    pub fn evaluate(&self, claims: &str) -> Decision {
        match self.decide(claims) {
            Ok((username, groups)) => Decision::Allow { username, groups },
            Err(reason) => Decision::Deny(reason),
        }
    }

    fn decide(&self, claims: &str) -> Result<(String, Vec<String>), String> {
        let settings = &self.settings;
        let claims: Map<String, Value> = match serde_json::from_str(claims) {
            Ok(Value::Object(claims)) => claims,
            Ok(other) => {
                return Err(format!(
                    "claims must be a JSON object, got {}",
                    type_name(&other)
                ));
            }
            Err(e) => return Err(format!("claims are not JSON: {e}")),
        };

        // 1. Every claim the policy reads, all problems at once.
        let mut problems = Vec::new();
        let mut values = Vec::with_capacity(REQUIRED_CLAIMS.len());
        for name in REQUIRED_CLAIMS {
            match claims.get(name) {
                None => problems.push(format!("missing claim {name}")),
                Some(Value::String(s)) if s.is_empty() => {
                    problems.push(format!("claim {name} is empty"));
                }
                Some(Value::String(s)) => values.push(s.as_str()),
                Some(other) => problems.push(format!(
                    "claim {name} must be a string, got {}",
                    type_name(other)
                )),
            }
        }
        if !problems.is_empty() {
            return Err(format!(
                "not a GitHub Actions token: {}",
                problems.join("; ")
            ));
        }
        let [repository, owner, owner_id, git_ref, event] = values[..] else {
            unreachable!("one value per required claim")
        };

        // 2. The owner, by id.
        if !settings.allowed_owner_ids.iter().any(|id| id == owner_id) {
            return Err(format!(
                "repository owner id {} is not allowed (the token names the owner {}, but only \
                 the ids in allowed_owner_ids are trusted: [{}])",
                quote(owner_id),
                quote(owner),
                settings.allowed_owner_ids.join(", ")
            ));
        }

        // 3. The repository belongs to that owner. GitHub always mints it
        //    so; a token where it does not is not what it claims to be.
        let in_owner = repository
            .split_once('/')
            .is_some_and(|(prefix, name)| prefix.eq_ignore_ascii_case(owner) && !name.is_empty());
        if !in_owner {
            return Err(format!(
                "repository {} is not a repository of repository_owner {}",
                quote(repository),
                quote(owner)
            ));
        }

        // 4. Pull requests: their code is whoever opened them.
        let pull_request_ref = git_ref.starts_with("refs/pull/");
        if !settings.allow_pull_requests {
            if PULL_REQUEST_EVENTS.contains(&event) {
                return Err(format!(
                    "pull-request workflows are not allowed (event_name {}, ref {}); \
                     set allow_pull_requests = true to accept them",
                    quote(event),
                    quote(git_ref)
                ));
            }
            if pull_request_ref {
                return Err(format!(
                    "pull-request ref {} is not allowed (event_name {}); \
                     set allow_pull_requests = true to accept it",
                    quote(git_ref),
                    quote(event)
                ));
            }
        }

        // 5. The ref.
        let ref_allowed = (settings.allow_pull_requests && pull_request_ref)
            || settings
                .allowed_refs
                .iter()
                .any(|(_, glob)| glob.matches(git_ref));
        if !ref_allowed {
            let patterns: Vec<&str> = settings
                .allowed_refs
                .iter()
                .map(|(p, _)| p.as_str())
                .collect();
            return Err(format!(
                "ref {} is not allowed (allowed_refs: {})",
                quote(git_ref),
                patterns.join(", ")
            ));
        }

        Ok((repository.to_owned(), vec![owner.to_owned()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(settings: Value) -> Policy {
        Policy::from_settings_json(&settings.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn token(changes: Value) -> String {
        let mut claims = json!({
            "repository": "octo-org/payments-api",
            "repository_owner": "octo-org",
            "repository_owner_id": "65432109",
            "ref": "refs/heads/main",
            "ref_type": "branch",
            "event_name": "push",
            "sub": "repo:octo-org/payments-api:ref:refs/heads/main",
        });
        if let (Value::Object(claims), Value::Object(changes)) = (&mut claims, changes) {
            for (key, value) in changes {
                if value.is_null() {
                    claims.remove(&key);
                } else {
                    claims.insert(key, value);
                }
            }
        }
        claims.to_string()
    }

    fn deny(policy: &Policy, changes: Value) -> String {
        match policy.evaluate(&token(changes)) {
            Decision::Deny(reason) => reason,
            allow => panic!("expected a deny, got {allow:?}"),
        }
    }

    #[test]
    fn allows_main_as_the_repository_in_its_owner_group() {
        let p = policy(json!({"allowed_owner_ids": ["65432109"]}));
        assert_eq!(
            p.evaluate(&token(json!({}))),
            Decision::Allow {
                username: "octo-org/payments-api".into(),
                groups: vec!["octo-org".into()],
            }
        );
    }

    #[test]
    fn owner_is_matched_by_id_not_name() {
        let p = policy(json!({"allowed_owner_ids": ["65432109"]}));
        let reason = deny(&p, json!({"repository_owner_id": "13371337"}));
        assert!(
            reason.starts_with("repository owner id \"13371337\" is not allowed"),
            "{reason}"
        );
    }

    #[test]
    fn missing_and_ill_typed_claims_are_all_named() {
        let p = policy(json!({"allowed_owner_ids": ["65432109"]}));
        let reason = deny(
            &p,
            json!({"ref": null, "repository_owner_id": 65432109, "event_name": ""}),
        );
        assert_eq!(
            reason,
            "not a GitHub Actions token: claim repository_owner_id must be a string, got a number; \
             missing claim ref; claim event_name is empty"
        );
        assert_eq!(
            p.evaluate("[]"),
            Decision::Deny("claims must be a JSON object, got a list".into())
        );
    }

    #[test]
    fn pull_requests_need_the_flag() {
        let p = policy(json!({"allowed_owner_ids": ["65432109"]}));
        let pr = json!({"ref": "refs/pull/7/merge", "event_name": "pull_request"});
        assert!(deny(&p, pr.clone()).starts_with("pull-request workflows are not allowed"));
        let target = json!({"event_name": "pull_request_target"});
        assert!(deny(&p, target.clone()).contains("\"pull_request_target\""));
        let pr_ref = json!({"ref": "refs/pull/7/head", "event_name": "workflow_dispatch"});
        assert!(deny(&p, pr_ref).starts_with("pull-request ref \"refs/pull/7/head\""));

        let p = policy(json!({"allowed_owner_ids": ["65432109"], "allow_pull_requests": true}));
        assert!(matches!(p.evaluate(&token(pr)), Decision::Allow { .. }));
        assert!(matches!(p.evaluate(&token(target)), Decision::Allow { .. }));
        // Allowed pull requests still need an allowed ref, unless it is the
        // pull request's own.
        let reason = deny(
            &p,
            json!({"event_name": "pull_request_target", "ref": "refs/heads/dev"}),
        );
        assert!(
            reason.starts_with("ref \"refs/heads/dev\" is not allowed"),
            "{reason}"
        );
    }

    #[test]
    fn refs_are_matched_against_the_patterns() {
        let p = policy(json!({
            "allowed_owner_ids": ["65432109"],
            "allowed_refs": ["refs/heads/main", "refs/tags/v*"],
        }));
        assert!(matches!(
            p.evaluate(&token(
                json!({"ref": "refs/tags/v1.2.3", "ref_type": "tag"})
            )),
            Decision::Allow { .. }
        ));
        assert_eq!(
            deny(&p, json!({"ref": "refs/heads/feature\nx"})),
            "ref \"refs/heads/feature\\nx\" is not allowed (allowed_refs: refs/heads/main, refs/tags/v*)"
        );
    }

    #[test]
    fn repository_must_belong_to_its_owner() {
        let p = policy(json!({"allowed_owner_ids": ["65432109"]}));
        let reason = deny(&p, json!({"repository": "someone-else/payments-api"}));
        assert!(
            reason.contains("is not a repository of repository_owner"),
            "{reason}"
        );
        assert!(deny(&p, json!({"repository": "octo-org/"})).contains("is not a repository"));
        assert!(matches!(
            p.evaluate(&token(json!({"repository": "Octo-Org/payments-api"}))),
            Decision::Allow { .. }
        ));
    }
}
