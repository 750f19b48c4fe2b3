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
//!
//! Refresh ahead: once an entry is past half its time to live, the first
//! reader to see it reloads it from the store while every other reader
//! keeps the cached copy (still within the bound). Without this, every
//! request arriving while an expired entry was being reloaded went to the
//! store itself, and a hot manifest stalled its readers once per period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    repos: HashMap<RepoName, HashMap<Reference, Entry>>,
    entries: usize,
    bytes: usize,
}

impl Inner {
    /// Takes an entry that left the maps out of the counts.
    fn uncount(&mut self, e: &Entry) {
        self.entries -= 1;
        self.bytes -= e.manifest.bytes.len();
    }
}

struct Entry {
    read_at: Instant,
    manifest: Arc<StoredManifest>,
    /// A reader is reloading this entry (refresh ahead): the others serve it.
    refreshing: Arc<AtomicBool>,
}

/// What a lookup found.
enum Lookup {
    /// Serve this.
    Fresh(Arc<StoredManifest>),
    /// Past half its time to live, and this reader won the reload: serve
    /// what the store says now, or this copy if the store cannot answer.
    Refresh(Arc<StoredManifest>, Arc<AtomicBool>),
    /// Absent or expired: read the store.
    Miss,
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

    #[cfg(test)]
    fn get(&self, repo: &RepoName, reference: &Reference) -> Option<Arc<StoredManifest>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let e = inner.repos.get(repo)?.get(reference)?;
        match self.ttl {
            Some(ttl) if e.read_at.elapsed() >= ttl => None,
            _ => Some(e.manifest.clone()),
        }
    }

    fn lookup(&self, repo: &RepoName, reference: &Reference) -> Lookup {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let Some(e) = inner.repos.get(repo).and_then(|r| r.get(reference)) else {
            return Lookup::Miss;
        };
        let Some(ttl) = self.ttl else {
            return Lookup::Fresh(e.manifest.clone());
        };
        let age = e.read_at.elapsed();
        if age >= ttl {
            Lookup::Miss
        } else if age >= ttl / 2
            && e.refreshing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            Lookup::Refresh(e.manifest.clone(), e.refreshing.clone())
        } else {
            Lookup::Fresh(e.manifest.clone())
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
        if let Some(old) = inner.repos.entry(repo.clone()).or_default().insert(
            reference,
            Entry {
                read_at,
                manifest: m,
                refreshing: Arc::new(AtomicBool::new(false)),
            },
        ) {
            inner.uncount(&old);
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
        let generation = self.generation();
        let loaded = match self.lookup(repo, reference) {
            Lookup::Fresh(m) => {
                metrics().read(m.bytes.len() as u64);
                return Ok(Some(m));
            }
            Lookup::Miss => load.await?,
            Lookup::Refresh(cached, refreshing) => match load.await {
                Ok(loaded) => {
                    // Another reload may start once this one is in (or,
                    // for a manifest that is gone, the entry is dropped).
                    refreshing.store(false, Ordering::Release);
                    if loaded.is_none() {
                        self.remove(repo, reference);
                    }
                    loaded
                }
                Err(e) => {
                    // The copy is still within its time to live: serve
                    // it, and let a later reader try the store again.
                    tracing::debug!(error = %e, %repo, "refreshing a cached manifest failed; serving the cached copy");
                    refreshing.store(false, Ordering::Release);
                    metrics().read(cached.bytes.len() as u64);
                    return Ok(Some(cached));
                }
            },
        };
        let Some(m) = loaded else {
            return Ok(None);
        };
        let m = Arc::new(m);
        metrics().read(m.bytes.len() as u64);
        self.insert(generation, repo, reference.clone(), m.clone());
        Ok(Some(m))
    }

    /// Drops one entry (a reload found the manifest or tag gone).
    fn remove(&self, repo: &RepoName, reference: &Reference) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let removed = inner
            .repos
            .get_mut(repo)
            .and_then(|entries| entries.remove(reference));
        if let Some(old) = removed {
            inner.uncount(&old);
        }
    }

    pub fn invalidate(&self, repo: &RepoName) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = inner.repos.remove(repo) {
            for e in entries.values() {
                inner.uncount(e);
            }
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

    /// Past half its time to live, one reader reloads an entry while the
    /// others are served the cached copy without touching the store; the
    /// reload's result is what is served afterwards.
    #[tokio::test]
    async fn one_reader_refreshes_ahead_while_the_others_are_served() {
        let cache = Arc::new(ManifestCache::with_ttl(Duration::from_secs(4)));
        let repo: RepoName = "a/b".parse().expect("name");
        let reference = Reference::Tag("v1".parse().expect("tag"));
        let old = manifest(b"{\"old\":1}");
        let new = manifest(b"{\"new\":2}");
        cache.insert(cache.generation(), &repo, reference.clone(), old.clone());
        let never =
            || async { panic!("the store was read although the cached copy was fresh enough") };
        // Young: served, no reload.
        let got = cache
            .read_through(&repo, &reference, never())
            .await
            .expect("read");
        assert_eq!(got.map(|m| m.digest.clone()), Some(old.digest.clone()));

        tokio::time::sleep(Duration::from_millis(2100)).await;
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let refresher = {
            let (cache, repo, reference, new) =
                (cache.clone(), repo.clone(), reference.clone(), new.clone());
            tokio::spawn(async move {
                cache
                    .read_through(&repo, &reference, async move {
                        let _ = released.await;
                        Ok(Some(StoredManifest::clone(&new)))
                    })
                    .await
            })
        };
        // Let the refresher take the reload, then read beside it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = cache
            .read_through(&repo, &reference, never())
            .await
            .expect("read")
            .expect("cached");
        assert_eq!(got.digest, old.digest, "served the cached copy meanwhile");
        release.send(()).expect("refresher waiting");
        let refreshed = refresher.await.expect("task").expect("read").expect("some");
        assert_eq!(refreshed.digest, new.digest);
        let got = cache
            .read_through(&repo, &reference, never())
            .await
            .expect("read")
            .expect("cached");
        assert_eq!(got.digest, new.digest, "the reload replaced the entry");
    }

    /// A reload the store cannot answer serves the cached copy (still
    /// within its time to live), and a later reader tries again.
    #[tokio::test]
    async fn a_failed_refresh_serves_the_cached_copy() {
        let cache = ManifestCache::with_ttl(Duration::from_secs(4));
        let repo: RepoName = "a/b".parse().expect("name");
        let reference = Reference::Tag("v1".parse().expect("tag"));
        let old = manifest(b"{}");
        cache.insert(cache.generation(), &repo, reference.clone(), old.clone());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let failing = || async {
            Err(crate::storage::StorageError::Io {
                context: "the store is away".into(),
                source: std::io::Error::other("down"),
            })
        };
        for _ in 0..2 {
            let got = cache
                .read_through(&repo, &reference, failing())
                .await
                .expect("served from the cache")
                .expect("cached");
            assert_eq!(got.digest, old.digest);
        }
    }
}
