//! `[access_control]`: repository patterns × users and groups × actions,
//! read and checked once (each pattern compiled here). `auth::access` turns
//! the result into the rules it evaluates.

use super::Section;
use crate::oci::{Action, ActionSet, RepoPattern};

/// The whole `[access_control]` section, in file order.
#[derive(Debug, Clone, Default)]
pub struct AccessControlConfig {
    pub admin_policy: Option<Grant>,
    pub repositories: Vec<RepositoryRules>,
}

/// One `policies` entry (or `admin_policy`): who, and which actions.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub actions: ActionSet,
}

/// `[access_control.repositories."<pattern>"]`.
#[derive(Debug, Clone)]
pub struct RepositoryRules {
    pub pattern: RepoPattern,
    pub policies: Vec<Grant>,
    /// What any authenticated identity may do.
    pub default_policy: ActionSet,
    /// What a caller without credentials may do.
    pub anonymous_policy: ActionSet,
}

fn read_actions(s: &mut Section<'_>, key: &str) -> ActionSet {
    let names: Vec<String> = s.get(key, Vec::new);
    let mut set = ActionSet::NONE;
    for name in names {
        match Action::parse(&name) {
            Some(a) => set.insert(a),
            None => s.problem(
                key,
                format!("unknown action `{name}` (read, create, update, delete)"),
            ),
        }
    }
    set
}

fn read_grant(mut s: Section<'_>) -> Grant {
    let users = s.get("users", Vec::new);
    let groups = s.get("groups", Vec::new);
    let actions = read_actions(&mut s, "actions");
    s.finish();
    Grant {
        users,
        groups,
        actions,
    }
}

/// Reads `[access_control]`; `None` when the section is absent.
pub fn read_config(root: &mut Section<'_>) -> Option<AccessControlConfig> {
    if !root.has("access_control") {
        return None;
    }
    let mut s = root.section("access_control");
    let admin_policy = s
        .has("admin_policy")
        .then(|| read_grant(s.section("admin_policy")));
    let mut repositories = Vec::new();
    let mut repos = s.section("repositories");
    for text in repos.keys() {
        let mut r = repos.section(&text);
        let default_policy = read_actions(&mut r, "default_policy");
        let anonymous_policy = read_actions(&mut r, "anonymous_policy");
        let mut policies = Vec::new();
        for (i, entry) in r.array_of_tables("policies").into_iter().enumerate() {
            policies.push(read_grant(r.table_at("policies", i, entry)));
        }
        match text.parse::<RepoPattern>() {
            Ok(pattern) => repositories.push(RepositoryRules {
                pattern,
                policies,
                default_policy,
                anonymous_policy,
            }),
            Err(e) => r.problem("", e.to_string()),
        }
        r.finish();
    }
    repos.finish();
    s.finish();
    Some(AccessControlConfig {
        admin_policy,
        repositories,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_actions_and_patterns_are_reported_with_their_path() {
        let table: toml::Table = r#"
            [access_control.repositories."[bad"]
            default_policy = ["read"]
            [access_control.repositories."ok/**"]
            default_policy = ["fly"]
        "#
        .parse()
        .expect("toml");
        let mut problems = Vec::new();
        let mut root = Section::new(String::new(), table, &mut problems);
        let _ = read_config(&mut root);
        root.finish();
        let paths: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
        assert!(paths.iter().any(|p| p.contains("[bad")), "{problems:?}");
        assert!(
            paths.iter().any(|p| p.ends_with("ok/**\".default_policy")),
            "{problems:?}"
        );
    }
}
