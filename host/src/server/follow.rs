//! Following policy tags: every `oci://` source of the configuration in
//! force is looked up in storage at start, after a reload, whenever a push
//! may have moved one (woken by the manifest handler), and at least every
//! [`POLL`] (a push taken by another replica); when a followed tag points
//! at another artifact, that issuer's policy is swapped to it.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Auth;
use crate::distribution::AppState;
use crate::oci::Reference;
use crate::storage::Storage;

/// How often followed tags are looked up without a push on this replica:
/// with the manifest cache's 1 s, a tag moved on another replica is in
/// force here within 1.5 s; on the replica that took the push, at once.
pub const POLL: Duration = Duration::from_millis(500);

/// Looks up every followed source once and swaps what moved.
pub async fn follow_once(storage: &dyn Storage, auth: &Auth) {
    for f in auth.followed() {
        let repo = &f.source.repository;
        let target = match &f.source.reference {
            Reference::Tag(tag) => storage.tag_target(repo, tag).await,
            Reference::Digest(d) => Ok(Some(d.clone())),
        };
        let digest = match target {
            Ok(Some(d)) => d,
            Ok(None) => {
                auth.unpublish(&f.issuer, f.kind);
                continue;
            }
            Err(e) => {
                // Storage away: keep what is in force, look again later.
                tracing::warn!(issuer = %f.issuer, source = %f.source, error = %e, "cannot look up a followed policy");
                continue;
            }
        };
        if !auth.wants(&f.issuer, f.kind, &digest) {
            continue;
        }
        match crate::distribution::artifacts::read(storage, repo, &digest).await {
            Ok(Some(artifact)) => {
                // A refusal is logged and put in force as the issuer's
                // reason by `activate`.
                let _ = auth.activate(&f.issuer, f.kind, &artifact).await;
            }
            Ok(None) => auth.unpublish(&f.issuer, f.kind),
            Err(e) => auth.refuse_artifact(&f.issuer, f.kind, &digest, &e),
        }
    }
}

/// Follows the sources of whatever authentication is in force, for the
/// life of the process.
pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        loop {
            let Some(auth) = state.auth() else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            follow_once(&*state.storage, &auth).await;
            let pushed = auth.policy_pushed.notified();
            tokio::select! {
                () = pushed => {}
                () = tokio::time::sleep(POLL) => {}
            }
            drop::<Arc<Auth>>(auth);
        }
    });
}
