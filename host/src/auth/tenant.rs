//! Tenants' confinement: identities named by a tenant's issuers act only
//! inside the tenant's namespace, whatever access control grants; a
//! tenant's admins manage `<namespace>/policies/**`; the status a tenant's
//! admins can read about their policies; and where a tenant's policies run.
//!
//! # Why a thread per tenant, at a lower CPU priority
//!
//! A tenant's policy is code the operator did not write. Its time budget
//! bounds one call, not how many calls a busy tenant makes: a policy that
//! loops to its budget on every new token, at 20 tokens/s and a 100 ms
//! budget, asks for two cores' worth of CPU. Run on the request workers
//! (as operators' policies are, on a fiber of the calling task), it would
//! take both cores of a small machine from every other tenant's requests.
//! So each tenant's evaluations run on one thread of its own, with a
//! current-thread runtime, at [`NICE`]: a tenant can never use more than
//! one core, and the kernel gives request handling (and other tenants'
//! threads, which sleep more) the CPU first. The price is one hand-off
//! between threads on the new-token path of a tenant's issuers (a cached
//! decision never gets here).

use std::sync::Mutex;

use crate::config::tenant::{TenantConfig, within};
use crate::oci::{Action, ActionSet, Digest, RepoName};
use crate::policy::{Decision, Identity, Limits, LoadedPolicy, PolicyError};

/// The nice value of a tenant's policy thread: below request handling (0).
pub const NICE: i32 = 10;

/// A tenant's policy thread: a current-thread runtime on a thread of its
/// own, which ends when this value is dropped (the configuration that made
/// the tenant is replaced).
#[derive(Debug)]
pub struct Executor {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Executor {
    pub fn start(tenant: &str) -> std::io::Result<Executor> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, handle) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("gantry-tenant-{tenant}"))
            .spawn(move || {
                // Best effort: where the priority cannot be lowered, the
                // one-core bound still holds.
                if let Err(e) =
                    rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE)
                {
                    tracing::warn!(error = %e, "cannot lower the priority of a tenant's policy thread");
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => {
                        let _ = ready.send(Ok(rt.handle().clone()));
                        let _ = rt.block_on(stopped);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })?;
        // Waits (well under a millisecond) for the thread to run, so the
        // tenant's policies never start on a thread whose priority is not
        // lowered yet.
        let handle = handle.recv().map_err(|_| {
            std::io::Error::other("the tenant's policy thread ended before it started")
        })??;
        Ok(Executor {
            handle,
            _stop: stop,
        })
    }

    /// Evaluates `claims` with `policy` on the tenant's thread.
    pub async fn evaluate(
        &self,
        policy: &LoadedPolicy,
        claims: &str,
    ) -> Result<Decision, PolicyError> {
        let (policy, claims) = (policy.clone(), claims.to_owned());
        self.handle
            .spawn(async move { policy.evaluate_json(&claims).await })
            .await
            .unwrap_or_else(|e| Err(PolicyError::Engine(format!("tenant policy thread: {e}"))))
    }
}

/// Evaluates `claims` with `policy` where `tenant`'s policies run: on the
/// tenant's thread, or, for an operator's issuer (no tenant), on the
/// calling task.
pub async fn evaluate(
    tenant: Option<&Tenant>,
    policy: &LoadedPolicy,
    claims: &str,
) -> Result<Decision, PolicyError> {
    match tenant {
        Some(t) => t.executor.evaluate(policy, claims).await,
        None => policy.evaluate_json(claims).await,
    }
}

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
    /// Where its policies' evaluations run.
    pub executor: Executor,
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
    pub fn new(cfg: &TenantConfig) -> std::io::Result<Tenant> {
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
        Ok(Tenant {
            name: cfg.name.clone(),
            namespace: cfg.namespace.clone(),
            policies,
            admins: cfg.admins.clone(),
            ceilings,
            last_refused: Mutex::new(None),
            executor: Executor::start(&cfg.name)?,
        })
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
        .expect("tenant")
    }

    /// The nice value of the thread named `comm` (the kernel keeps 15
    /// bytes of a name: "gantry-tenant-9" is whole), if it is alive.
    fn nice_of(comm: &str) -> Option<i64> {
        let tasks = std::fs::read_dir("/proc/self/task").expect("tasks");
        tasks.flatten().find_map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if name.trim() != comm {
                return None;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the command's closing parenthesis: nice is 19th
            // of the whole line, the 17th after it.
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.split(' ').nth(16)?.parse().ok()
        })
    }

    #[test]
    fn a_tenant_runs_on_a_thread_of_its_own_below_request_handling() {
        let executor = Executor::start("9").expect("executor");
        assert_eq!(nice_of("gantry-tenant-9"), Some(i64::from(NICE)));
        drop(executor);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while nice_of("gantry-tenant-9").is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread outlived its tenant"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
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
