//! Tenants' confinement: identities named by a tenant's issuers act only
//! inside the tenant's namespace, whatever access control grants; a
//! tenant's admins manage `<namespace>/policies/**`; and the status a
//! tenant's admins can read about their policies.

use std::sync::Mutex;

use crate::config::tenant::{TenantConfig, within};
use crate::oci::{Action, ActionSet, Digest, RepoName};
use crate::policy::{Identity, Limits};

/// One configured tenant, as auth enforces it.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    pub namespace: RepoName,
    /// `<namespace>/policies`: where the tenant's policy artifacts live.
    policies: RepoName,
    admins: Vec<String>,
    /// The ceilings on its policies: `max_timeout_ms`, `max_memory_mib`.
    pub ceilings: Limits,
    /// The last policy push the registry refused, for the status.
    last_refused: Mutex<Option<RefusedPush>>,
}

/// A policy push that validation refused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefusedPush {
    pub repository: String,
    pub digest: String,
    /// Unix seconds.
    pub at: u64,
    pub reason: String,
}

impl Tenant {
    pub fn new(cfg: &TenantConfig) -> Tenant {
        let policies = format!("{}/policies", cfg.namespace)
            .parse()
            .unwrap_or_else(|_| cfg.namespace.clone());
        let ceilings = Limits {
            timeout: std::time::Duration::from_millis(cfg.max_timeout_ms),
            memory_limit_bytes: usize::try_from(cfg.max_memory_mib)
                .unwrap_or(usize::MAX)
                .saturating_mul(1 << 20),
            ..Limits::default()
        };
        Tenant {
            name: cfg.name.clone(),
            namespace: cfg.namespace.clone(),
            policies,
            admins: cfg.admins.clone(),
            ceilings,
            last_refused: Mutex::new(None),
        }
    }

    /// Whether `repo` is the namespace or below it.
    pub fn contains(&self, repo: &RepoName) -> bool {
        within(&self.namespace, repo)
    }

    /// Whether `repo` is a policy repository of this tenant:
    /// `<namespace>/policies/…` (below it, not `policies` itself).
    pub fn holds_policies(&self, repo: &RepoName) -> bool {
        repo != &self.policies && within(&self.policies, repo)
    }

    /// The `<namespace>/policies` prefix, for access rules written for it.
    pub fn policies_prefix(&self) -> &str {
        self.policies.as_str()
    }

    /// Whether `id` is one of this tenant's admins (by final username).
    pub fn is_admin(&self, id: &Identity) -> bool {
        self.admins.iter().any(|a| a == &id.username)
    }

    pub fn record_refused(&self, push: RefusedPush) {
        *self.last_refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(push);
    }

    pub fn last_refused(&self) -> Option<RefusedPush> {
        self.last_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a tenant's admins may do in its policy repositories on top of
/// access control: everything.
pub const ADMIN_ACTIONS: ActionSet = ActionSet::ALL;

/// What anyone but the tenant's admins and the operator's may do in the
/// tenant's policy repositories when access control grants it only through
/// a rule not written for them (such as `**`): read. Writing a policy is
/// the admins' (or a rule's for `<namespace>/policies/…` itself).
pub fn policy_repo_actions(granted: ActionSet) -> ActionSet {
    granted.intersect([Action::Read].into_iter().collect())
}

/// A digest as text for the status, or `null`.
pub fn digest_text(d: Option<&Digest>) -> Option<String> {
    d.map(ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        Tenant::new(&TenantConfig {
            name: "team-a".into(),
            namespace: "team-a".parse().expect("ns"),
            admins: vec!["ops:team-a-admin".into()],
            max_memory_mib: 16,
            max_timeout_ms: 50,
        })
    }

    #[test]
    fn policy_repositories_are_below_policies() {
        let t = tenant();
        let r = |s: &str| s.parse::<RepoName>().expect("repo");
        assert!(t.holds_policies(&r("team-a/policies/k8s")));
        assert!(!t.holds_policies(&r("team-a/policies")));
        assert!(!t.holds_policies(&r("team-a/policiesx/k8s")));
        assert!(!t.holds_policies(&r("team-b/policies/k8s")));
        assert_eq!(t.ceilings.memory_limit_bytes, 16 << 20);
        assert!(t.is_admin(&Identity {
            username: "ops:team-a-admin".into(),
            groups: vec![]
        }));
    }
}
