//! Access control: what an identity (or nobody) may do to a repository.
//!
//! zot's vocabulary and semantics: repository glob patterns (`**` crosses
//! `/`, `*` and `?` do not); the *longest* matching pattern alone decides
//! for a repository; within it, user policies, then group policies, then
//! `default_policy` (any authenticated identity) grant actions, additively;
//! anonymous callers get only `anonymous_policy`. `admin_policy` applies to
//! every repository on top. Nothing here knows how a caller authenticated.

use std::fmt;

use globset::GlobMatcher;

use crate::config::Section;
use crate::oci::RepoName;
use crate::policy::Identity;

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Pull: manifests, blobs, tags, referrers.
    Read,
    /// Push new content: blobs, manifests, new tags.
    Create,
    /// Move an existing tag to another manifest.
    Update,
    /// Delete manifests, tags, blobs.
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Create, Action::Update, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Read => 1,
            Action::Create => 2,
            Action::Update => 4,
            Action::Delete => 8,
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ActionSet(u8);

impl ActionSet {
    pub const NONE: ActionSet = ActionSet(0);
    pub const ALL: ActionSet = ActionSet(15);

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn insert(&mut self, a: Action) {
        self.0 |= a.bit();
    }

    pub fn union(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 | other.0)
    }

    pub fn intersect(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Action> for ActionSet {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        let mut s = ActionSet::NONE;
        for a in iter {
            s.insert(a);
        }
        s
    }
}

/// One `policies` entry (or `admin_policy`): who, and which actions.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub actions: ActionSet,
}

impl Grant {
    fn matches_user(&self, id: &Identity) -> bool {
        self.users.iter().any(|u| u == &id.username)
    }

    fn matches_group(&self, id: &Identity) -> bool {
        self.groups.iter().any(|g| id.groups.contains(g))
    }
}

/// How a pattern is matched: `**` (the common catch-all) without a regex.
#[derive(Debug, Clone)]
enum Matcher {
    Everything,
    Glob(GlobMatcher),
}

impl Matcher {
    fn is_match(&self, name: &str) -> bool {
        match self {
            Matcher::Everything => true,
            Matcher::Glob(g) => g.is_match(name),
        }
    }
}

/// The rules for the repositories one pattern matches.
#[derive(Debug, Clone)]
pub struct RepoRules {
    pub pattern: String,
    matcher: Matcher,
    pub policies: Vec<Grant>,
    pub default_policy: ActionSet,
    pub anonymous_policy: ActionSet,
}

/// The whole access-control configuration.
#[derive(Debug, Clone)]
pub struct AccessControl {
    pub admin: Option<Grant>,
    /// Sorted longest pattern first, so the first match decides.
    pub repositories: Vec<RepoRules>,
}

impl AccessControl {
    /// No rules at all: used when authentication is configured but
    /// `[access_control]` is absent. Authenticated callers may do everything,
    /// anonymous ones nothing.
    pub fn authenticated_only() -> AccessControl {
        let mut ac = AccessControl {
            admin: None,
            repositories: Vec::new(),
        };
        if let Ok(rules) = RepoRules::new("**", Vec::new(), ActionSet::ALL, ActionSet::NONE) {
            ac.repositories.push(rules);
        }
        ac
    }

    /// What `who` (None: anonymous) may do to `repo`.
    pub fn allowed(&self, who: Option<&Identity>, repo: &RepoName) -> ActionSet {
        let mut set = ActionSet::NONE;
        if let (Some(id), Some(admin)) = (who, &self.admin)
            && (admin.matches_user(id) || admin.matches_group(id))
        {
            set = set.union(admin.actions);
        }
        let Some(rules) = self
            .repositories
            .iter()
            .find(|r| r.matcher.is_match(repo.as_str()))
        else {
            return set;
        };
        match who {
            None => set.union(rules.anonymous_policy),
            Some(id) => {
                for g in &rules.policies {
                    if g.matches_user(id) || g.matches_group(id) {
                        set = set.union(g.actions);
                    }
                }
                set.union(rules.default_policy)
            }
        }
    }
}

impl RepoRules {
    pub fn new(
        pattern: &str,
        policies: Vec<Grant>,
        default_policy: ActionSet,
        anonymous_policy: ActionSet,
    ) -> Result<RepoRules, String> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("invalid repository pattern `{pattern}`: {}", e.kind()))?;
        let matcher = if pattern == "**" {
            Matcher::Everything
        } else {
            Matcher::Glob(glob.compile_matcher())
        };
        Ok(RepoRules {
            pattern: pattern.to_string(),
            matcher,
            policies,
            default_policy,
            anonymous_policy,
        })
    }
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
pub fn read_config(root: &mut Section<'_>) -> Option<AccessControl> {
    if !root.has("access_control") {
        return None;
    }
    let mut s = root.section("access_control");
    let admin = s
        .has("admin_policy")
        .then(|| read_grant(s.section("admin_policy")));
    let mut repositories = Vec::new();
    let mut repos = s.section("repositories");
    for pattern in repos.keys() {
        let mut r = repos.section(&pattern);
        let default_policy = read_actions(&mut r, "default_policy");
        let anonymous_policy = read_actions(&mut r, "anonymous_policy");
        let mut policies = Vec::new();
        for (i, entry) in r.array_of_tables("policies").into_iter().enumerate() {
            policies.push(read_grant(r.table_at("policies", i, entry)));
        }
        match RepoRules::new(&pattern, policies, default_policy, anonymous_policy) {
            Ok(rules) => repositories.push(rules),
            Err(reason) => r.problem("", reason),
        }
        r.finish();
    }
    repos.finish();
    s.finish();
    // Longest pattern first; ties broken by the pattern text for determinism.
    repositories.sort_by(|a, b| {
        b.pattern
            .len()
            .cmp(&a.pattern.len())
            .then_with(|| a.pattern.cmp(&b.pattern))
    });
    Some(AccessControl {
        admin,
        repositories,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ac = read_config(&mut root).expect("present");
        root.finish();
        assert!(problems.is_empty(), "{problems:?}");
        ac
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
