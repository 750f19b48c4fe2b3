//! `[[tenants]]`: teams that share the registry, each with a repository
//! namespace, the identities that manage its policies, and the ceilings on
//! what its policies may use. The issuers of a tenant name it with
//! `[[auth.oidc]] tenant`; the rules tying the two are checked in
//! [`check_issuers`], once every section is read.

use super::Section;
use super::auth::{AuthConfig, PolicySource};
use crate::oci::{OciSource, RepoName};

/// Default and largest `max_memory_mib`: what one policy instance of a
/// tenant may hold.
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 64;
pub const LIMIT_MAX_MEMORY_MIB: u64 = 1024;
/// Default and largest `max_timeout_ms`: one guest call's time budget.
pub const DEFAULT_MAX_TIMEOUT_MS: u64 = 100;
pub const LIMIT_MAX_TIMEOUT_MS: u64 = 10_000;

/// One `[[tenants]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    /// `[a-z0-9][a-z0-9-]*`; also the prefix (`<name>:`) of every name its
    /// issuers mint.
    pub name: String,
    /// The tenant's repositories: this one and everything below it.
    pub namespace: RepoName,
    /// Final identities (usernames after prefixes) that manage the tenant's
    /// policies in `<namespace>/policies/**`.
    pub admins: Vec<String>,
    pub max_memory_mib: u64,
    pub max_timeout_ms: u64,
}

impl TenantConfig {
    /// Whether `repo` is the namespace or lies below it.
    pub fn contains(&self, repo: &RepoName) -> bool {
        within(&self.namespace, repo)
    }
}

/// Whether `repo` is `namespace` or below it (`team-a/x`, never `team-ab`).
pub fn within(namespace: &RepoName, repo: &RepoName) -> bool {
    let (ns, r) = (namespace.as_str(), repo.as_str());
    r == ns || (r.len() > ns.len() && r.starts_with(ns) && r.as_bytes()[ns.len()] == b'/')
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Reads every `[[tenants]]` entry, with its value rules: a valid, unique
/// name; a valid namespace that no other tenant's contains or is inside;
/// admins; ceilings in range.
pub fn read_config(root: &mut Section<'_>) -> Vec<TenantConfig> {
    let mut out: Vec<TenantConfig> = Vec::new();
    for (i, table) in root.array_of_tables("tenants").into_iter().enumerate() {
        let mut s = root.table_at("tenants", i, table);
        let name: String = s.get("name", String::new);
        if !valid_name(&name) {
            s.problem(
                "name",
                format!("`{name}` is not a tenant name: [a-z0-9][a-z0-9-]*, at most 63 characters"),
            );
        } else if out.iter().any(|t| t.name == name) {
            s.problem("name", format!("tenant `{name}` is configured twice"));
        }
        let namespace_text: String = s.get("namespace", String::new);
        let namespace = match namespace_text.parse::<RepoName>() {
            Ok(ns) => Some(ns),
            Err(e) => {
                s.problem(
                    "namespace",
                    format!("`{namespace_text}` is not a repository name: {e}"),
                );
                None
            }
        };
        if let Some(ns) = &namespace
            && let Some(other) = out
                .iter()
                .find(|t| within(&t.namespace, ns) || within(ns, &t.namespace))
        {
            s.problem(
                "namespace",
                format!(
                    "`{ns}` overlaps tenant `{}`'s namespace `{}`: namespaces must be disjoint",
                    other.name, other.namespace
                ),
            );
        }
        let admins: Vec<String> = s.get("admins", Vec::new);
        if admins.iter().any(|a| a.trim().is_empty()) {
            s.problem("admins", "an admin is the empty string".into());
        }
        let max_memory_mib: u64 = s.get("max_memory_mib", || DEFAULT_MAX_MEMORY_MIB);
        if !(1..=LIMIT_MAX_MEMORY_MIB).contains(&max_memory_mib) {
            s.problem(
                "max_memory_mib",
                format!("must be between 1 and {LIMIT_MAX_MEMORY_MIB}"),
            );
        }
        let max_timeout_ms: u64 = s.get("max_timeout_ms", || DEFAULT_MAX_TIMEOUT_MS);
        if !(1..=LIMIT_MAX_TIMEOUT_MS).contains(&max_timeout_ms) {
            s.problem(
                "max_timeout_ms",
                format!("must be between 1 and {LIMIT_MAX_TIMEOUT_MS}"),
            );
        }
        s.finish();
        if let Some(namespace) = namespace {
            out.push(TenantConfig {
                name,
                namespace,
                admins,
                max_memory_mib,
                max_timeout_ms,
            });
        }
    }
    out
}

/// The rules between `[[tenants]]` and `[[auth.oidc]]`: an issuer's
/// `tenant` names a configured tenant; its prefixes start with
/// `<tenant>:`; its policy is an `oci://` source inside the tenant's
/// namespace (and so is its `shadow`). Problems go to `root` with the
/// issuer's key path.
pub fn check_issuers(root: &mut Section<'_>, tenants: &[TenantConfig], auth: Option<&AuthConfig>) {
    let Some(auth) = auth else {
        if !tenants.is_empty() {
            root.problem(
                "tenants",
                "has no effect without [auth]: a tenant's issuers are [[auth.oidc]] entries".into(),
            );
        }
        return;
    };
    for entry in &auth.oidc {
        let at = |field: &str| format!("auth.oidc[{}].{field}", entry.index);
        let issuer = &entry.verifier.issuer;
        let Some(name) = &entry.tenant else {
            continue;
        };
        let Some(tenant) = tenants.iter().find(|t| &t.name == name) else {
            root.problem_raw(
                &at("tenant"),
                format!("issuer {issuer:?}: `{name}` is not a configured [[tenants]] name"),
            );
            continue;
        };
        let want = format!("{name}:");
        for (field, prefix) in [
            ("username_prefix", &entry.username_prefix),
            ("groups_prefix", &entry.groups_prefix),
        ] {
            if !prefix.starts_with(&want) {
                root.problem_raw(
                    &at(field),
                    format!(
                        "issuer {issuer:?} belongs to tenant `{name}`: `{prefix}` must start with `{want}`"
                    ),
                );
            }
        }
        let inside = |s: &OciSource| tenant.contains(&s.repository);
        match &entry.policy.source {
            PolicySource::Oci(s) if inside(s) => {}
            PolicySource::Oci(s) => root.problem_raw(
                &at("policy.module"),
                format!(
                    "issuer {issuer:?} belongs to tenant `{name}`: `{s}` lies outside its namespace `{}`",
                    tenant.namespace
                ),
            ),
            PolicySource::Module(m) => root.problem_raw(
                &at("policy.module"),
                format!(
                    "issuer {issuer:?} belongs to tenant `{name}`: its policy must be an oci:// artifact in `{}` (the tenant ships it), not `{m}`",
                    tenant.namespace
                ),
            ),
        }
        if let Some(s) = &entry.policy.shadow
            && !inside(s)
        {
            root.problem_raw(
                &at("policy.shadow"),
                format!(
                    "issuer {issuer:?} belongs to tenant `{name}`: `{s}` lies outside its namespace `{}`",
                    tenant.namespace
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        s.parse().expect("repo")
    }

    #[test]
    fn namespace_contains_itself_and_below_only() {
        let ns = repo("team-a");
        assert!(within(&ns, &repo("team-a")));
        assert!(within(&ns, &repo("team-a/x/y")));
        assert!(!within(&ns, &repo("team-ab")));
        assert!(!within(&ns, &repo("team-ab/x")));
        assert!(!within(&ns, &repo("other/team-a")));
    }

    #[test]
    fn names() {
        for ok in ["team-a", "a", "0x", "a-b-c"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "Team", "a_b", "a:b", "a/b", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
