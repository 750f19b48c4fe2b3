//! Access control: what an identity (or nobody) may do to a repository.
//!
//! zot's vocabulary and semantics: repository glob patterns (`**` crosses
//! `/`, `*` and `?` do not); the *longest* matching pattern alone decides
//! for a repository; within it, user policies, then group policies, then
//! `default_policy` (any authenticated identity) grant actions, additively;
//! anonymous callers get only `anonymous_policy`. `admin_policy` applies to
//! every repository on top. Nothing here knows how a caller authenticated.
//! The rules come from `config::access`, read and checked there.

pub use crate::config::access::{AccessControlConfig, Grant, RepositoryRules};
use crate::oci::RepoName;
pub use crate::oci::{Action, ActionSet, RepoPattern};
use crate::policy::Identity;

/// Whether `grant` names `id`, by username or by one of its groups.
fn names(grant: &Grant, id: &Identity) -> bool {
    grant.users.iter().any(|u| u == &id.username)
        || grant.groups.iter().any(|g| id.groups.contains(g))
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct AccessControl {
    admin: Option<Grant>,
    /// Sorted longest pattern first, so the first match decides.
    repositories: Vec<RepositoryRules>,
}

impl AccessControl {
    /// The rules of a configuration, ordered for evaluation.
    pub fn new(cfg: AccessControlConfig) -> AccessControl {
        let mut repositories = cfg.repositories;
        // Longest pattern first; ties broken by the pattern text for determinism.
        repositories.sort_by(|a, b| {
            let (a, b) = (a.pattern.as_str(), b.pattern.as_str());
            b.len().cmp(&a.len()).then_with(|| a.cmp(b))
        });
        AccessControl {
            admin: cfg.admin_policy,
            repositories,
        }
    }

    /// No rules at all: used when authentication is configured but
    /// `[access_control]` is absent. Authenticated callers may do everything,
    /// anonymous ones nothing.
    pub fn authenticated_only() -> AccessControl {
        AccessControl::new(AccessControlConfig {
            admin_policy: None,
            repositories: vec![RepositoryRules {
                pattern: RepoPattern::everything(),
                policies: Vec::new(),
                default_policy: ActionSet::ALL,
                anonymous_policy: ActionSet::NONE,
            }],
        })
    }

    /// Whether the rule that decides for `repo` was written for `prefix`
    /// or below it (its pattern starts with `prefix/`, or is `prefix`),
    /// rather than for something wider such as `**`.
    pub fn decided_within(&self, repo: &RepoName, prefix: &str) -> bool {
        self.repositories
            .iter()
            .find(|r| r.pattern.is_match(repo))
            .is_some_and(|r| {
                let p = r.pattern.as_str();
                p == prefix
                    || p.strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }

    /// Whether `id` is named by `admin_policy`.
    pub fn is_admin(&self, id: &Identity) -> bool {
        self.admin.as_ref().is_some_and(|a| names(a, id))
    }

    /// What `who` (None: anonymous) may do to `repo`.
    pub fn allowed(&self, who: Option<&Identity>, repo: &RepoName) -> ActionSet {
        let mut set = ActionSet::NONE;
        if let (Some(id), Some(admin)) = (who, &self.admin)
            && names(admin, id)
        {
            set = set.union(admin.actions);
        }
        let Some(rules) = self.repositories.iter().find(|r| r.pattern.is_match(repo)) else {
            return set;
        };
        match who {
            None => set.union(rules.anonymous_policy),
            Some(id) => {
                for g in &rules.policies {
                    if names(g, id) {
                        set = set.union(g.actions);
                    }
                }
                set.union(rules.default_policy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Section;

    fn id(user: &str, groups: &[&str]) -> Identity {
        Identity {
            username: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn repo(s: &str) -> RepoName {
        s.parse().expect("repo")
    }

    fn acl(toml_text: &str) -> AccessControl {
        let table: toml::Table = toml_text.parse().expect("toml");
        let mut problems = Vec::new();
        let mut root = Section::new(String::new(), table, &mut problems);
        let cfg = crate::config::access::read_config(&mut root).expect("present");
        root.finish();
        assert!(problems.is_empty(), "{problems:?}");
        AccessControl::new(cfg)
    }

    const RULES: &str = r#"
        [access_control.admin_policy]
        users = ["admin"]
        actions = ["read", "create", "update", "delete"]
        [access_control.repositories."**"]
        default_policy = ["read"]
        anonymous_policy = []
        [access_control.repositories."public/**"]
        anonymous_policy = ["read"]
        default_policy = ["read"]
        [access_control.repositories."team-a/*"]
        default_policy = []
        [[access_control.repositories."team-a/*".policies]]
        users = ["alice"]
        actions = ["read", "create"]
        [[access_control.repositories."team-a/*".policies]]
        groups = ["team-a-admins"]
        actions = ["update", "delete"]
    "#;

    #[test]
    fn longest_pattern_decides() {
        let ac = acl(RULES);
        let bob = id("bob", &[]);
        // `**` grants read to any authenticated identity...
        assert!(
            ac.allowed(Some(&bob), &repo("misc/x"))
                .contains(Action::Read)
        );
        // ...but `team-a/*` is longer and its default grants nothing.
        assert!(ac.allowed(Some(&bob), &repo("team-a/app")).is_empty());
        // `*` does not cross `/`, so team-a/x/y falls back to `**`.
        assert_eq!(
            ac.allowed(Some(&bob), &repo("team-a/x/y")),
            [Action::Read].into_iter().collect()
        );
    }

    #[test]
    fn users_then_groups_then_default_add_up() {
        let ac = acl(RULES);
        let alice = id("alice", &["team-a-admins"]);
        let got = ac.allowed(Some(&alice), &repo("team-a/app"));
        assert_eq!(got, ActionSet::ALL);
        let carol = id("carol", &["team-a-admins"]);
        let got = ac.allowed(Some(&carol), &repo("team-a/app"));
        assert_eq!(got, [Action::Update, Action::Delete].into_iter().collect());
    }

    #[test]
    fn anonymous_gets_only_anonymous_policy() {
        let ac = acl(RULES);
        assert_eq!(
            ac.allowed(None, &repo("public/tools")),
            [Action::Read].into_iter().collect()
        );
        assert!(ac.allowed(None, &repo("misc/x")).is_empty());
        assert!(ac.allowed(None, &repo("team-a/app")).is_empty());
    }

    #[test]
    fn admin_applies_everywhere() {
        let ac = acl(RULES);
        assert_eq!(
            ac.allowed(Some(&id("admin", &[])), &repo("team-a/app")),
            ActionSet::ALL
        );
    }

    #[test]
    fn default_without_section_is_authenticated_everything_anonymous_nothing() {
        let ac = AccessControl::authenticated_only();
        assert_eq!(
            ac.allowed(Some(&id("x", &[])), &repo("a/b")),
            ActionSet::ALL
        );
        assert!(ac.allowed(None, &repo("a/b")).is_empty());
    }
}
