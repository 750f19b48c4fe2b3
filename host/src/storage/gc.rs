//! Garbage collection, on any backend, while the registry serves pushes.
//!
//! One run:
//! 1. removes upload sessions idle past `upload_ttl` (the sweep);
//! 2. marks: every manifest revision of every repository is read, and what
//!    it references (config, layers, blobs, child manifests) is kept, with
//!    the manifests themselves. With `untagged`, manifests no tag reaches
//!    (directly, through an index, or as a referrer of a kept manifest) and
//!    older than the grace are deleted first;
//! 3. unlinks, per repository, blobs no manifest of that repository
//!    references, once the link is older than the grace;
//! 4. sets aside (quarantines) blob content no manifest anywhere references,
//!    older than the grace, with no link younger than the grace;
//! 5. reads again every revision written since the run began minus the
//!    grace (and a minute's margin for the store's clock): a push that raced the run and references something set aside
//!    or unlinked gets it back (content restored, link rewritten);
//! 6. removes the content still set aside.
//!
//! Why a racing push cannot end with a manifest referencing collected
//! content: a manifest `PUT` writes its revision and then checks again that
//! the manifest reads back and every blob it references is still linked and
//! stored (rolling the manifest back if not). Either that check ran before step 3 or 4 touched the blob, and then
//! the revision exists before step 5 reads the revisions again, which
//! restores the blob; or it ran after, saw the blob gone, and the push
//! failed (the client uploads the blob again). Content younger than the
//! grace is never touched, so an upload in progress keeps its blobs; a run
//! must take less than the grace for the re-read of step 5 to cover it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use super::{Storage, StorageError};
use crate::oci::{Digest, Reference, RepoName};

/// What a run may do.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Report only; change nothing.
    pub dry_run: bool,
    /// Also delete manifests no tag reaches.
    pub untagged: bool,
    /// Nothing written more recently than this is collected.
    pub grace: Duration,
}

/// What a run removed (or, dry, would remove).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub manifests: Vec<(String, String)>,
    pub links: Vec<(String, String)>,
    pub blobs: Vec<(String, u64)>,
    pub uploads: usize,
    pub bytes_freed: u64,
    /// Set aside, then given back to a push that raced the run.
    pub restored: Vec<String>,
    /// Links written again: for a push that raced this run, or one a run
    /// that stopped part-way had taken.
    pub relinked: Vec<(String, String)>,
    /// Unreferenced, but younger than the grace.
    pub kept_young: usize,
}

/// The digests a manifest references: blobs, and child manifests.
#[derive(Debug, Default)]
struct Refs {
    blobs: Vec<Digest>,
    children: Vec<Digest>,
    subject: Option<Digest>,
}

fn digest_at(v: &serde_json::Value) -> Option<Digest> {
    v.get("digest")?.as_str()?.parse().ok()
}

/// Reads what a stored manifest references; unreadable JSON references
/// nothing (it was validated when pushed, so that is never expected).
fn refs_of(bytes: &[u8]) -> Refs {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Refs::default();
    };
    let mut r = Refs::default();
    if let Some(c) = v.get("config").and_then(digest_at) {
        r.blobs.push(c);
    }
    for key in ["layers", "blobs"] {
        for d in v.get(key).and_then(|l| l.as_array()).into_iter().flatten() {
            if let Some(d) = digest_at(d) {
                r.blobs.push(d);
            }
        }
    }
    for m in v
        .get("manifests")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(d) = digest_at(m) {
            r.children.push(d);
        }
    }
    r.subject = v.get("subject").and_then(digest_at);
    r
}

/// How far the store's clock (and its rounding of modification times) may
/// be from this process's.
const CLOCK_MARGIN: Duration = Duration::from_secs(60);

fn older_than(modified: SystemTime, cutoff: SystemTime) -> bool {
    modified < cutoff
}

/// One run; see the module documentation.
pub async fn collect(s: &dyn Storage, opts: GcOptions) -> Result<GcReport, StorageError> {
    let started = SystemTime::now();
    let cutoff = started
        .checked_sub(opts.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    if !opts.dry_run {
        report.uploads = s.sweep_uploads().await?;
        // A run that stopped part-way (killed, store gone) left content set
        // aside that a racing push may rely on: put it back, and decide
        // about it afresh below.
        for d in s.list_quarantined().await? {
            s.restore_blob(&d).await?;
        }
    }

    // Mark.
    let repos = s.all_repositories().await?;
    let mut referenced: HashMap<RepoName, BTreeSet<Digest>> = HashMap::new();
    let mut everywhere: BTreeSet<Digest> = BTreeSet::new();
    let mut manifests_of: HashMap<RepoName, BTreeSet<Digest>> = HashMap::new();
    for repo in &repos {
        let revisions = s.list_revisions(repo).await?;
        let mut refs: BTreeMap<Digest, (Refs, SystemTime)> = BTreeMap::new();
        for rev in revisions {
            if let Some(m) = s
                .get_manifest(repo, &Reference::Digest(rev.digest.clone()))
                .await?
            {
                refs.insert(rev.digest, (refs_of(&m.bytes), rev.modified));
            }
        }
        if opts.untagged {
            let doomed = untagged(s, repo, &refs, cutoff).await?;
            for d in doomed {
                if !opts.dry_run {
                    match s.delete_manifest(repo, &d).await {
                        Ok(()) | Err(StorageError::ManifestUnknown(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                report.manifests.push((repo.to_string(), d.to_string()));
                refs.remove(&d);
            }
        }
        manifests_of
            .entry(repo.clone())
            .or_default()
            .extend(refs.keys().cloned());
        let kept = referenced.entry(repo.clone()).or_default();
        for (d, (r, _)) in &refs {
            kept.insert(d.clone());
            kept.extend(r.blobs.iter().cloned());
            kept.extend(r.children.iter().cloned());
        }
        everywhere.extend(kept.iter().cloned());
    }

    // Unlink, per repository; note the youngest link of every blob.
    let mut young_link: BTreeSet<Digest> = BTreeSet::new();
    let mut unlinked: BTreeSet<(RepoName, Digest)> = BTreeSet::new();
    // One listing of the content for the whole run: content stored after
    // it is younger than the grace anyway.
    let listed: Vec<super::Stored> = s.list_blob_content().await?;
    let stored: BTreeMap<Digest, u64> = listed.iter().map(|b| (b.digest.clone(), b.size)).collect();
    for repo in &repos {
        let kept = referenced.get(repo);
        let links = s.list_links(repo).await?;
        // A link a manifest needs and lacks (a run that stopped part-way
        // took it): written again where the content is there.
        if !opts.dry_run
            && let Some(kept) = kept
        {
            let linked: BTreeSet<&Digest> = links.iter().map(|l| &l.digest).collect();
            for d in kept {
                let is_manifest = manifests_of.get(repo).is_some_and(|m| m.contains(d));
                if !linked.contains(d)
                    && !is_manifest
                    && let Some(size) = stored.get(d)
                {
                    s.link_blob(repo, d, *size).await?;
                    report.relinked.push((repo.to_string(), d.to_string()));
                }
            }
        }
        for link in links {
            if kept.is_some_and(|k| k.contains(&link.digest)) {
                continue;
            }
            if !older_than(link.modified, cutoff) {
                young_link.insert(link.digest);
                report.kept_young += 1;
                continue;
            }
            if !opts.dry_run {
                match s.delete_blob(repo, &link.digest).await {
                    Ok(()) | Err(StorageError::BlobUnknown(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            report
                .links
                .push((repo.to_string(), link.digest.to_string()));
            unlinked.insert((repo.clone(), link.digest));
        }
    }

    // Set content aside.
    let mut aside: BTreeMap<Digest, u64> = BTreeMap::new();
    for blob in listed {
        if everywhere.contains(&blob.digest) || young_link.contains(&blob.digest) {
            continue;
        }
        if !older_than(blob.modified, cutoff) {
            report.kept_young += 1;
            continue;
        }
        if opts.dry_run || s.quarantine_blob(&blob.digest).await? {
            aside.insert(blob.digest, blob.size);
        }
    }

    // Give back what a racing push relies on. The window reaches back a
    // margin before the cutoff: stores keep coarse modification times
    // (S3: whole seconds) and their clocks are not this process's.
    let rescan_from = cutoff
        .checked_sub(CLOCK_MARGIN)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if !opts.dry_run && (!aside.is_empty() || !unlinked.is_empty()) {
        for repo in s.all_repositories().await? {
            for rev in s.list_revisions(&repo).await? {
                if older_than(rev.modified, rescan_from) {
                    continue;
                }
                // The manifest's own bytes are content too.
                if aside.remove(&rev.digest).is_some() {
                    s.restore_blob(&rev.digest).await?;
                    report.restored.push(rev.digest.to_string());
                }
                let Some(m) = s
                    .get_manifest(&repo, &Reference::Digest(rev.digest.clone()))
                    .await?
                else {
                    continue;
                };
                for d in refs_of(&m.bytes).blobs {
                    if let Some(size) = aside.remove(&d) {
                        s.restore_blob(&d).await?;
                        report.restored.push(d.to_string());
                        s.link_blob(&repo, &d, size).await?;
                    } else if unlinked.remove(&(repo.clone(), d.clone()))
                        && let Some(size) = stored.get(&d)
                    {
                        s.link_blob(&repo, &d, *size).await?;
                        report.relinked.push((repo.to_string(), d.to_string()));
                    }
                }
            }
        }
    }

    report.links.retain(|l| !report.relinked.contains(l));
    // Remove for good.
    for (d, size) in aside {
        if !opts.dry_run {
            s.purge_quarantined(&d).await?;
        }
        report.blobs.push((d.to_string(), size));
        report.bytes_freed += size;
    }
    Ok(report)
}

/// Manifests of `repo` that no tag reaches and that are older than the
/// cutoff. Reached: a tag's target, the children of a reached index, and
/// the referrers (signatures, SBOMs) of a reached manifest.
async fn untagged(
    s: &dyn Storage,
    repo: &RepoName,
    refs: &BTreeMap<Digest, (Refs, SystemTime)>,
    cutoff: SystemTime,
) -> Result<Vec<Digest>, StorageError> {
    let mut reached: BTreeSet<Digest> = BTreeSet::new();
    let mut todo: Vec<Digest> = Vec::new();
    for tag in s.tags(repo).await?.unwrap_or_default() {
        if let Ok(t) = tag.parse()
            && let Some(d) = s.tag_target(repo, &t).await?
        {
            todo.push(d);
        }
    }
    loop {
        while let Some(d) = todo.pop() {
            if reached.insert(d.clone())
                && let Some((r, _)) = refs.get(&d)
            {
                todo.extend(r.children.iter().cloned());
            }
        }
        // Referrers of anything reached are reached too.
        for (d, (r, _)) in refs {
            if !reached.contains(d) && r.subject.as_ref().is_some_and(|s| reached.contains(s)) {
                todo.push(d.clone());
            }
        }
        if todo.is_empty() {
            break;
        }
    }
    Ok(refs
        .iter()
        .filter(|(d, (_, modified))| !reached.contains(*d) && older_than(*modified, cutoff))
        .map(|(d, _)| d.clone())
        .collect())
}

/// Runs [`collect`] every `every` for as long as the process lives, with
/// one `gantry::gc` log event per run.
pub fn spawn_schedule(storage: std::sync::Arc<dyn Storage>, every: Duration, grace: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: wait one period after start.
        tick.tick().await;
        loop {
            tick.tick().await;
            let opts = GcOptions {
                dry_run: false,
                untagged: false,
                grace,
            };
            let _ = run_logged(storage.as_ref(), opts, "schedule").await;
        }
    });
}

/// One run, logged as one `gantry::gc` event and counted in the metrics.
pub async fn run_logged(
    s: &dyn Storage,
    opts: GcOptions,
    trigger: &'static str,
) -> Result<GcReport, StorageError> {
    let began = std::time::Instant::now();
    let result = collect(s, opts).await;
    let seconds = began.elapsed().as_secs_f64();
    let freed = result
        .as_ref()
        .map_or(0, |r| if r.dry_run { 0 } else { r.bytes_freed });
    crate::telemetry::metrics::metrics().gc_run(result.is_ok(), seconds, freed);
    match &result {
        Ok(r) => tracing::info!(
            target: "gantry::gc",
            trigger,
            dry_run = r.dry_run,
            blobs = r.blobs.len(),
            links = r.links.len(),
            manifests = r.manifests.len(),
            uploads = r.uploads,
            bytes_freed = r.bytes_freed,
            restored = r.restored.len(),
            kept_young = r.kept_young,
            seconds,
            "garbage collection finished"
        ),
        Err(e) => {
            tracing::warn!(target: "gantry::gc", trigger, error = %e, seconds, "garbage collection failed")
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_of_images_indexes_and_artifacts() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let image = serde_json::json!({
            "config": {"digest": d('a')},
            "layers": [{"digest": d('b')}, {"digest": d('c')}],
            "subject": {"digest": d('e')},
        });
        let r = refs_of(&serde_json::to_vec(&image).expect("json"));
        assert_eq!(r.blobs.len(), 3);
        assert_eq!(r.subject.map(|s| s.to_string()), Some(d('e')));
        let index = serde_json::json!({"manifests": [{"digest": d('f')}]});
        let r = refs_of(&serde_json::to_vec(&index).expect("json"));
        assert_eq!(r.children.len(), 1);
        assert!(refs_of(b"not json").blobs.is_empty());
    }
}

#[cfg(test)]
mod store_tests {
    //! Runs on both backends: the filesystem in a temporary directory, and
    //! the object-store backend on `object_store`'s in-memory store.

    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::storage::{ByteStream, StoredManifest, UploadLimits};

    async fn backends() -> Vec<(&'static str, Arc<dyn Storage>, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = crate::storage::fs::FsStorage::open(dir.path())
            .await
            .expect("fs");
        let mem = Arc::new(object_store::memory::InMemory::new());
        let s3 = crate::storage::s3::S3Storage::in_memory(mem, UploadLimits::default());
        vec![
            ("fs", Arc::new(fs) as Arc<dyn Storage>, Some(dir)),
            ("s3", Arc::new(s3) as Arc<dyn Storage>, None),
        ]
    }

    fn body(b: &[u8]) -> ByteStream {
        let b = Bytes::copy_from_slice(b);
        Box::pin(futures_util::stream::iter([Ok(b)]))
    }

    async fn blob(s: &dyn Storage, repo: &RepoName, content: &[u8]) -> Digest {
        let d = Digest::sha256_of(content);
        s.put_blob(repo, &d, body(content), None)
            .await
            .expect("blob");
        d
    }

    fn manifest(config: &Digest, layers: &[&Digest]) -> StoredManifest {
        let layers: Vec<_> = layers
            .iter()
            .map(|d| serde_json::json!({"mediaType": "application/octet-stream", "digest": d.to_string(), "size": 1}))
            .collect();
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::oci::media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 1},
            "layers": layers,
        }))
        .expect("json");
        StoredManifest::new(
            Digest::sha256_of(&bytes),
            crate::oci::media::OCI_MANIFEST.into(),
            Bytes::from(bytes),
        )
    }

    fn now_grace() -> GcOptions {
        GcOptions {
            dry_run: false,
            untagged: false,
            grace: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn collected_and_kept_and_a_dry_run_changes_nothing() {
        for (name, s, _dir) in backends().await {
            let s = s.as_ref();
            let (a, b): (RepoName, RepoName) =
                ("team/a".parse().expect("a"), "team/b".parse().expect("b"));
            let config = blob(s, &a, b"config").await;
            let kept = blob(s, &a, b"kept layer").await;
            let orphan = blob(s, &a, b"orphan layer").await;
            s.mount_blob(&b, &a, &kept).await.expect("mount");
            let m = manifest(&config, &[&kept]);
            let tag = "v1".parse().expect("tag");
            s.put_manifest(&a, m.clone(), Some(&tag), None)
                .await
                .expect("manifest");
            // Untagged, referencing its own layer.
            let lonely_layer = blob(s, &a, b"lonely layer").await;
            let lonely = manifest(&config, &[&lonely_layer]);
            s.put_manifest(&a, lonely.clone(), None, None)
                .await
                .expect("untagged");
            tokio::time::sleep(Duration::from_millis(20)).await;

            let dry = collect(
                s,
                GcOptions {
                    dry_run: true,
                    ..now_grace()
                },
            )
            .await
            .expect("dry");
            assert_eq!(
                dry.blobs.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
                vec![orphan.to_string()],
                "{name}"
            );
            assert_eq!(
                dry.links.len(),
                2,
                "{name}: a's orphan, b's unreferenced mount: {:?}",
                dry.links
            );
            assert_eq!(
                s.blob_size(&a, &orphan).await.expect("size"),
                Some(12),
                "{name}: dry run removed"
            );
            assert_eq!(
                s.blob_size(&b, &kept).await.expect("size"),
                Some(10),
                "{name}: dry run unlinked"
            );

            let real = collect(s, now_grace()).await.expect("gc");
            assert_eq!(real.blobs.len(), 1, "{name}");
            assert_eq!(real.bytes_freed, 12, "{name}");
            assert_eq!(
                s.blob_size(&a, &orphan).await.expect("size"),
                None,
                "{name}"
            );
            assert!(
                s.list_blob_content()
                    .await
                    .expect("list")
                    .iter()
                    .all(|x| x.digest != orphan),
                "{name}"
            );
            assert_eq!(
                s.blob_size(&b, &kept).await.expect("size"),
                None,
                "{name}: b's link stays"
            );
            assert_eq!(
                s.blob_size(&a, &kept).await.expect("size"),
                Some(10),
                "{name}: referenced"
            );
            assert!(
                s.get_manifest(&a, &Reference::Tag(tag.clone()))
                    .await
                    .expect("get")
                    .is_some()
            );
            assert!(
                s.get_manifest(&a, &Reference::Digest(lonely.digest.clone()))
                    .await
                    .expect("get")
                    .is_some(),
                "{name}: untagged kept without --untagged"
            );

            let untagged = collect(
                s,
                GcOptions {
                    untagged: true,
                    ..now_grace()
                },
            )
            .await
            .expect("gc");
            assert_eq!(
                untagged.manifests,
                vec![(a.to_string(), lonely.digest.to_string())],
                "{name}"
            );
            assert_eq!(
                s.blob_size(&a, &lonely_layer).await.expect("size"),
                None,
                "{name}"
            );
            assert_eq!(
                s.blob_size(&a, &config).await.expect("size"),
                Some(6),
                "{name}: still referenced by v1"
            );

            // Young content is never collected.
            let young = blob(s, &a, b"young").await;
            let r = collect(
                s,
                GcOptions {
                    grace: Duration::from_secs(3600),
                    ..now_grace()
                },
            )
            .await
            .expect("gc");
            assert!(r.blobs.is_empty() && r.links.is_empty(), "{name}: {r:?}");
            assert!(r.kept_young >= 1, "{name}");
            assert_eq!(s.blob_size(&a, &young).await.expect("size"), Some(5));
        }
    }

    /// A tag moves only from where the caller saw it; of two racing moves
    /// from the same place, exactly one wins (both backends).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tags_move_only_from_where_they_were_seen() {
        for (name, s, _dir) in backends().await {
            let s = s.as_ref();
            let repo: RepoName = "cas/app".parse().expect("name");
            let config = blob(s, &repo, b"config").await;
            let ms: Vec<StoredManifest> = (0..4u8)
                .map(|i| manifest(&config, &[&Digest::sha256_of(&[i])]))
                .collect();
            for m in &ms {
                s.put_manifest(&repo, m.clone(), None, None)
                    .await
                    .expect("manifest");
            }
            let (m0, m1, m2, m3) = (&ms[0].digest, &ms[1].digest, &ms[2].digest, &ms[3].digest);
            let tag: crate::oci::Tag = "latest".parse().expect("tag");
            let moved =
                |r: Result<(), StorageError>| matches!(r, Err(StorageError::TagMoved { .. }));
            s.move_tag(&repo, &tag, None, m0).await.expect("create");
            assert!(
                moved(s.move_tag(&repo, &tag, None, m1).await),
                "{name}: created twice"
            );
            assert!(
                moved(s.move_tag(&repo, &tag, Some(m1), m1).await),
                "{name}: from a stale view"
            );
            s.move_tag(&repo, &tag, Some(m0), m1).await.expect("move");
            let (a, b) = futures_util::join!(
                s.move_tag(&repo, &tag, Some(m1), m2),
                s.move_tag(&repo, &tag, Some(m1), m3)
            );
            assert!(
                a.is_ok() != b.is_ok(),
                "{name}: not one winner: {a:?} {b:?}"
            );
            let now = s.tag_target(&repo, &tag).await.expect("target");
            let winner = if a.is_ok() { m2 } else { m3 };
            assert_eq!(now.as_ref(), Some(winner), "{name}");
        }
    }

    /// A run that stopped part-way (content set aside, a link taken) is
    /// repaired by the next: what a manifest references comes back.
    #[tokio::test]
    async fn the_next_run_repairs_a_run_that_stopped_part_way() {
        for (name, s, _dir) in backends().await {
            let s = s.as_ref();
            let repo: RepoName = "stopped/app".parse().expect("name");
            let config = blob(s, &repo, b"config").await;
            let layer = blob(s, &repo, b"layer").await;
            let m = manifest(&config, &[&layer]);
            let tag = "v1".parse().expect("tag");
            s.put_manifest(&repo, m, Some(&tag), None)
                .await
                .expect("manifest");
            // What a killed run may leave: the layer unlinked, the config set aside.
            s.delete_blob(&repo, &layer).await.expect("unlink");
            assert!(s.quarantine_blob(&config).await.expect("aside"), "{name}");
            assert!(
                !s.blob_content_exists(&config).await.expect("exists"),
                "{name}"
            );
            let r = collect(s, now_grace()).await.expect("gc");
            assert!(r.blobs.is_empty(), "{name}: {r:?}");
            assert_eq!(
                r.relinked,
                vec![(repo.to_string(), layer.to_string())],
                "{name}"
            );
            assert_eq!(
                s.blob_size(&repo, &layer).await.expect("size"),
                Some(5),
                "{name}"
            );
            assert_eq!(
                s.blob_size(&repo, &config).await.expect("size"),
                Some(6),
                "{name}"
            );
            assert!(
                s.list_quarantined().await.expect("aside").is_empty(),
                "{name}"
            );
        }
    }

    /// Pushes race collections (with no grace at all): a push checks its
    /// blobs, writes its manifest, checks again and withdraws the manifest
    /// if a blob went (what `PUT /manifests` does). No manifest left behind
    /// ever references missing content.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_racing_a_collection_never_leaves_a_dangling_manifest() {
        for (name, s, _dir) in backends().await {
            let repo: RepoName = "race/app".parse().expect("name");
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let collector = {
                let (s, stop) = (s.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut runs = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        collect(s.as_ref(), now_grace()).await.expect("gc");
                        runs += 1;
                    }
                    runs
                })
            };
            let mut withdrawn = 0;
            for i in 0..60u32 {
                let config = blob(s.as_ref(), &repo, format!("config {i}").as_bytes()).await;
                let layer = blob(s.as_ref(), &repo, format!("layer {i}").as_bytes()).await;
                let m = manifest(&config, &[&layer]);
                let present = |d: Digest| {
                    let (s, repo) = (s.clone(), repo.clone());
                    async move { s.blob_size(&repo, &d).await.expect("size").is_some() }
                };
                if !(present(config.clone()).await && present(layer.clone()).await) {
                    continue; // refused before writing: MANIFEST_BLOB_UNKNOWN
                }
                s.put_manifest(&repo, m.clone(), None, None)
                    .await
                    .expect("manifest");
                let readable = s
                    .get_manifest(&repo, &Reference::Digest(m.digest.clone()))
                    .await
                    .expect("get")
                    .is_some();
                let stored = |d: Digest| {
                    let s = s.clone();
                    async move { s.blob_content_exists(&d).await.expect("exists") }
                };
                let still = readable
                    && present(config.clone()).await
                    && present(layer.clone()).await
                    && stored(config.clone()).await
                    && stored(layer.clone()).await;
                if !still {
                    s.delete_manifest(&repo, &m.digest).await.expect("withdraw");
                    withdrawn += 1;
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let runs = collector.await.expect("collector");
            // One more run after the pushes stopped; then check every manifest.
            collect(s.as_ref(), now_grace()).await.expect("gc");
            let blobs: BTreeSet<Digest> = s
                .list_blob_content()
                .await
                .expect("list")
                .into_iter()
                .map(|b| b.digest)
                .collect();
            for rev in s.list_revisions(&repo).await.expect("revisions") {
                let m = s
                    .get_manifest(&repo, &Reference::Digest(rev.digest.clone()))
                    .await
                    .expect("get")
                    .expect("manifest");
                for d in refs_of(&m.bytes).blobs {
                    assert!(
                        blobs.contains(&d),
                        "{name}: manifest {} references collected {d}",
                        rev.digest
                    );
                    assert!(
                        s.blob_size(&repo, &d).await.expect("size").is_some(),
                        "{name}: {d} unlinked under {}",
                        rev.digest
                    );
                }
            }
            assert!(runs > 0, "{name}: the collector never ran");
            eprintln!("{name}: {runs} collections raced 60 pushes; {withdrawn} pushes withdrawn");
        }
    }
}
