//! An issuer's policy as a swappable slot: the policy in force (or why
//! there is none), which artifact it came from and since when, and what it
//! decided since then. Requests read the slot once and finish on what they
//! read, so a swap never drops a request in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::oci::{Digest, OciSource};
use crate::policy::{Decision, LoadedPolicy, PolicyError};

/// What one slot holds now.
pub struct SlotState {
    /// `None`: nothing to evaluate (`missing` says why).
    pub policy: Option<LoadedPolicy>,
    /// The artifact's manifest digest (`None` for a configured module, or
    /// while nothing is published).
    pub digest: Option<Digest>,
    /// Why there is no policy: `no policy published at oci://…`, or the
    /// artifact's validation error.
    pub missing: Option<String>,
    /// Unix seconds this state began.
    pub since: u64,
    pub counts: Counts,
}

/// Decisions since the state began.
#[derive(Default)]
pub struct Counts {
    pub allows: AtomicU64,
    pub denies: AtomicU64,
    pub failures: AtomicU64,
    pub disagreements: AtomicU64,
}

impl Counts {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts one decision of the slot's policy.
    pub fn record(&self, decision: &Result<Decision, PolicyError>) {
        Counts::add(match decision {
            Ok(Decision::Allow(_)) => &self.allows,
            Ok(Decision::Deny(_)) => &self.denies,
            Err(_) => &self.failures,
        });
    }
}

/// How long an artifact that could not be put in force waits before the
/// follower tries it again (a transient failure, such as an `init` that
/// ran out of time on a busy machine, heals; a broken one costs a load
/// this often, not every poll).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// An artifact the slot's source points at that could not be put in force.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub digest: Digest,
    pub reason: String,
    /// Unix seconds.
    pub at: u64,
    #[serde(skip)]
    pub retry_at: Instant,
}

/// One issuer's active or shadow policy.
pub struct Slot {
    /// The artifact followed or pinned; `None` for a configured module,
    /// which never changes while this configuration is in force.
    pub source: Option<OciSource>,
    state: ArcSwap<SlotState>,
    /// The last artifact that failed to load, until one loads.
    failure: Mutex<Option<Failure>>,
}

impl Slot {
    /// A configured module, loaded.
    pub fn fixed(policy: LoadedPolicy) -> Slot {
        Slot {
            source: None,
            state: ArcSwap::from_pointee(SlotState {
                policy: Some(policy),
                digest: None,
                missing: None,
                since: super::now(),
                counts: Counts::default(),
            }),
            failure: Mutex::new(None),
        }
    }

    /// An `oci://` source, before the registry has looked it up.
    pub fn unpublished(source: OciSource) -> Slot {
        let missing = Some(format!("no policy published at {source}"));
        Slot {
            source: Some(source),
            state: ArcSwap::from_pointee(SlotState {
                policy: None,
                digest: None,
                missing,
                since: super::now(),
                counts: Counts::default(),
            }),
            failure: Mutex::new(None),
        }
    }

    /// The source as `oci://…` text, for logs and reasons (empty for a
    /// configured module).
    pub fn source_text(&self) -> String {
        self.source
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// The state in force now.
    pub fn load(&self) -> Arc<SlotState> {
        self.state.load_full()
    }

    /// The last artifact that failed to load, if none loaded since.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that the artifact at `digest` failed to load; the follower
    /// tries it again after [`RETRY_AFTER`].
    pub fn failed(&self, digest: &Digest, reason: String) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Failure {
            digest: digest.clone(),
            reason,
            at: super::now(),
            retry_at: Instant::now() + RETRY_AFTER,
        });
    }

    /// Whether the follower should load `digest` now: it is not what the
    /// slot holds, or it failed and its retry is due; never while a retry
    /// of it is still waiting.
    pub fn should_load(&self, digest: &Digest) -> bool {
        let failure = self.failure();
        match failure {
            Some(f) if &f.digest == digest => Instant::now() >= f.retry_at,
            _ => self.load().digest.as_ref() != Some(digest),
        }
    }

    /// Puts a new state in force; the counts start again.
    pub fn set(
        &self,
        policy: Option<LoadedPolicy>,
        digest: Option<Digest>,
        missing: Option<String>,
    ) {
        if policy.is_some() {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        self.state.store(Arc::new(SlotState {
            policy,
            digest,
            missing,
            since: super::now(),
            counts: Counts::default(),
        }));
    }
}
