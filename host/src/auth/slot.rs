//! An issuer's policy as a swappable slot: the policy in force (or why
//! there is none), which artifact it came from and since when, and what it
//! decided since then. Requests read the slot once and finish on what they
//! read, so a swap never drops a request in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::oci::{Digest, OciSource};
use crate::policy::LoadedPolicy;

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
}

/// One issuer's active or shadow policy.
pub struct Slot {
    /// The artifact followed or pinned; `None` for a configured module,
    /// which never changes while this configuration is in force.
    pub source: Option<OciSource>,
    state: ArcSwap<SlotState>,
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
        }
    }

    /// The state in force now.
    pub fn load(&self) -> Arc<SlotState> {
        self.state.load_full()
    }

    /// Puts a new state in force; the counts start again.
    pub fn set(
        &self,
        policy: Option<LoadedPolicy>,
        digest: Option<Digest>,
        missing: Option<String>,
    ) {
        self.state.store(Arc::new(SlotState {
            policy,
            digest,
            missing,
            since: super::now(),
            counts: Counts::default(),
        }));
    }
}
