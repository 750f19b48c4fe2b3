//! The in-memory manifest cache that keeps the hot read path (manifest `GET`
//! and `HEAD`) off the filesystem.
//!
//! Coherence: every write to a repository's manifests or tags bumps a
//! generation and drops that repository's entries *after* the disk write.
//! A reader notes the generation before reading the disk and only inserts
//! if it is unchanged, so a slow reader can never put back a stale entry.
//! That is all one process needs for its own writes. Other writers (replicas
//! sharing a bucket, a `gantry gc` run beside the server) are not seen, so
//! the cache is built with a time to live: an entry is served for at most
//! that long after it was read from the store, which bounds how stale a tag
//! (or a deleted manifest) can be.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::oci::{Reference, RepoName};
use crate::storage::StoredManifest;

/// Bounds on what the cache holds; past either, it starts over empty
/// (simple, and a refill costs one disk read per hot manifest).
const MAX_ENTRIES: usize = 20_000;
const MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
struct Inner {
    repos: HashMap<RepoName, HashMap<Reference, (Instant, Arc<StoredManifest>)>>,
    entries: usize,
    bytes: usize,
}

#[derive(Default)]
pub struct ManifestCache {
    inner: RwLock<Inner>,
    generation: AtomicU64,
    /// `None`: entries live until invalidated (one process owns the store).
    ttl: Option<Duration>,
}

impl ManifestCache {
    /// A cache whose entries are served at most `ttl` after they were read.
    pub fn with_ttl(ttl: Duration) -> ManifestCache {
        ManifestCache {
            ttl: Some(ttl),
            ..ManifestCache::default()
        }
    }

    pub fn get(&self, repo: &RepoName, reference: &Reference) -> Option<Arc<StoredManifest>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (read_at, m) = inner.repos.get(repo)?.get(reference)?;
        match self.ttl {
            Some(ttl) if read_at.elapsed() >= ttl => None,
            _ => Some(m.clone()),
        }
    }

    /// The generation to pass to `insert` after a disk read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Inserts what a read that began at `generation` found. The entry's
    /// age counts from now, never from before the read: callers note the
    /// generation before they read, and the read itself is what is fresh.
    pub fn insert(
        &self,
        generation: u64,
        repo: &RepoName,
        reference: Reference,
        m: Arc<StoredManifest>,
    ) {
        let read_at = Instant::now();
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        // Checked under the write lock: `invalidate` bumps it under the same lock.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if inner.entries >= MAX_ENTRIES || inner.bytes + m.bytes.len() > MAX_BYTES {
            *inner = Inner::default();
        }
        inner.entries += 1;
        inner.bytes += m.bytes.len();
        // Two readers that missed together both insert: count the entry once.
        if let Some(old) = inner
            .repos
            .entry(repo.clone())
            .or_default()
            .insert(reference, (read_at, m))
        {
            inner.entries -= 1;
            inner.bytes -= old.1.bytes.len();
        }
    }

    /// The hot read path of both backends: a cached entry, or what `load`
    /// reads from the store (cached unless a write raced the read). Every
    /// manifest served counts as a storage read.
    pub async fn read_through<F>(
        &self,
        repo: &RepoName,
        reference: &Reference,
        load: F,
    ) -> Result<Option<Arc<StoredManifest>>, crate::storage::StorageError>
    where
        F: std::future::Future<
                Output = Result<Option<StoredManifest>, crate::storage::StorageError>,
            >,
    {
        use crate::telemetry::metrics::metrics;
        if let Some(m) = self.get(repo, reference) {
            metrics().read(m.bytes.len() as u64);
            return Ok(Some(m));
        }
        let generation = self.generation();
        let Some(m) = load.await? else {
            return Ok(None);
        };
        let m = Arc::new(m);
        metrics().read(m.bytes.len() as u64);
        self.insert(generation, repo, reference.clone(), m.clone());
        Ok(Some(m))
    }

    pub fn invalidate(&self, repo: &RepoName) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = inner.repos.remove(repo) {
            inner.entries -= entries.len();
            inner.bytes -= entries.values().map(|(_, m)| m.bytes.len()).sum::<usize>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn manifest(bytes: &'static [u8]) -> Arc<StoredManifest> {
        Arc::new(StoredManifest::new(
            Digest::sha256_of(bytes),
            crate::oci::media::OCI_MANIFEST.into(),
            bytes::Bytes::from_static(bytes),
        ))
    }

    /// Regression: two readers inserting the same key counted it twice, so
    /// the counters drifted up with every concurrent miss and the cache
    /// emptied itself long before its real bounds.
    #[test]
    fn regression_reinserting_a_key_does_not_inflate_the_counters() {
        let cache = ManifestCache::default();
        let repo: RepoName = "a/b".parse().expect("name");
        let reference = Reference::Tag("v1".parse().expect("tag"));
        let g = cache.generation();
        cache.insert(g, &repo, reference.clone(), manifest(b"{}"));
        cache.insert(g, &repo, reference.clone(), manifest(b"{}"));
        {
            let inner = cache.inner.read().expect("lock");
            assert_eq!((inner.entries, inner.bytes), (1, 2));
        }
        cache.invalidate(&repo);
        let inner = cache.inner.read().expect("lock");
        assert_eq!((inner.entries, inner.bytes), (0, 0));
        assert!(cache.get(&repo, &reference).is_none());
    }

    /// With a time to live, an entry stops being served once it is that
    /// old, even though nothing invalidated it (another replica's write).
    #[test]
    fn entries_expire_after_their_time_to_live() {
        let cache = ManifestCache::with_ttl(Duration::from_millis(50));
        let repo: RepoName = "a/b".parse().expect("name");
        let reference = Reference::Tag("v1".parse().expect("tag"));
        cache.insert(
            cache.generation(),
            &repo,
            reference.clone(),
            manifest(b"{}"),
        );
        assert!(cache.get(&repo, &reference).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&repo, &reference).is_none());
    }
}
