//! The filesystem storage backend.
//!
//! Layout under the root (every name below is built from a validated
//! `RepoName`, `Digest`, `Tag` or `UploadId`, never from raw input):
//!
//! ```text
//! blobs/<alg>/<hex[..2]>/<hex>                         content, stored once per registry
//! repositories/<name…>/_layers/<alg>/<hex>             blob linked into a repository
//! repositories/<name…>/_manifests/revisions/<alg>/<hex> manifest in a repository (JSON: media type, subject)
//! repositories/<name…>/_manifests/tags/<tag>           tag → digest
//! repositories/<name…>/_referrers/<alg>/<subject hex>/<alg>-<hex>  referrer descriptor
//! uploads/<id>/{info.json,data,offset}                  upload session
//! tmp/                                                  temporary files, emptied at start
//! gc/<alg>-<hex>                                        content the collector is about to remove
//! ```
//!
//! Name components cannot start with `_`, so `_layers` and friends never
//! collide with a nested repository. Blocking filesystem calls run on
//! tokio's blocking pool (`tokio::fs` or `spawn_blocking`), never on a
//! reactor thread.

mod atomic;
mod fileio;
mod upload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;

use super::cache::ManifestCache;
use super::{
    BlobRead, ByteRange, ByteStream, Referrer, Storage, StorageError, StoredManifest, UploadLimits,
    check_len,
};
use crate::oci::{Digest, Hasher, Reference, RepoName, Tag, UploadId};
use crate::telemetry::metrics::metrics;

/// Filesystem-backed storage rooted at one directory.
pub struct FsStorage {
    root: PathBuf,
    cache: ManifestCache,
    uploads: Mutex<upload::Sessions>,
    upload_limits: UploadLimits,
    /// Tag moves, one at a time (the check and the write are one step).
    tag_moves: tokio::sync::Mutex<()>,
}

/// What a revision file records about a manifest in a repository.
#[derive(serde::Serialize, serde::Deserialize)]
struct Revision {
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
}

impl FsStorage {
    /// Opens (creating if needed) a storage root with the default upload
    /// limits.
    pub async fn open(root: &Path) -> Result<FsStorage, StorageError> {
        FsStorage::open_with(root, UploadLimits::default()).await
    }

    /// Opens (creating if needed) a storage root, clears temporary files a
    /// previous crash may have left, and counts the upload sessions already
    /// open against their owners.
    pub async fn open_with(root: &Path, limits: UploadLimits) -> Result<FsStorage, StorageError> {
        FsStorage::open_as(root, limits, true).await
    }

    /// Opens a root a server may be running on (`gantry gc`): its
    /// temporary files are that server's writes in progress, left alone.
    pub async fn open_beside_server(
        root: &Path,
        limits: UploadLimits,
    ) -> Result<FsStorage, StorageError> {
        FsStorage::open_as(root, limits, false).await
    }

    async fn open_as(
        root: &Path,
        limits: UploadLimits,
        owner: bool,
    ) -> Result<FsStorage, StorageError> {
        let root = root.to_path_buf();
        let r = root.clone();
        let sessions = run_blocking("opening the storage root", move || {
            for dir in ["blobs", "repositories", "uploads", "tmp", "gc"] {
                std::fs::create_dir_all(r.join(dir))?;
            }
            if owner {
                for entry in std::fs::read_dir(r.join("tmp"))? {
                    let entry = entry?;
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            upload::count_existing(&r)
        })
        .await?;
        Ok(FsStorage {
            root,
            // Another process may change the root (`gantry gc`): entries
            // are re-read after the same bound as on object storage.
            cache: ManifestCache::with_ttl(super::s3::CACHE_TTL),
            uploads: Mutex::new(sessions),
            upload_limits: limits,
            tag_moves: tokio::sync::Mutex::new(()),
        })
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        let mut p = self.root.join("repositories");
        p.extend(repo.components());
        p
    }

    fn layer_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_layers")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    fn revision_path(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_manifests/revisions")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    fn tags_dir(&self, repo: &RepoName) -> PathBuf {
        self.repo_dir(repo).join("_manifests/tags")
    }

    fn referrers_dir(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_referrers")
            .join(subject.algorithm().as_str())
            .join(subject.hex())
    }

    /// Streams `body` into a new temporary file, hashing as it goes.
    /// Returns the temp path, the byte count and the digest.
    async fn spool(
        &self,
        body: ByteStream,
        algorithm: crate::oci::Algorithm,
    ) -> Result<(TempFile, u64, Digest), StorageError> {
        let tmp = TempFile(Some(atomic::temp_path(&self.tmp_dir())));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp.path())
            .await
            .map_err(StorageError::io("creating a temporary file"))?;
        let mut hasher = algorithm.hasher();
        let result = async {
            let (file, n) = copy_stream(body, file, &mut hasher, None, true).await?;
            file.sync_all()
                .await
                .map_err(StorageError::io("syncing a blob"))?;
            Ok(n)
        }
        .await;
        // On error the guard removes the file.
        result.map(|n| (tmp, n, hasher.finish()))
    }

    /// Moves a verified temporary file into the blob store (or drops it if
    /// the blob is already there) and links the blob into `repo`.
    /// What publishing `digest` into `repo` needs, for use inside one
    /// blocking task.
    fn blob_commit(&self, repo: &RepoName, digest: &Digest) -> BlobCommit {
        BlobCommit {
            dest: self.blob_path(digest),
            link: self.layer_link(repo, digest),
            tmp_dir: self.tmp_dir(),
        }
    }

    async fn manifest_from_disk(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>, StorageError> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => match self.tag_target(repo, t).await? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        let revision = self.revision_path(repo, &digest);
        let blob = self.blob_path(&digest);
        let found = run_blocking("reading a manifest", move || {
            let Some(rev) = atomic::read_optional(&revision)? else {
                return Ok(None);
            };
            let rev: Revision = serde_json::from_slice(&rev).map_err(io::Error::other)?;
            let Some(bytes) = atomic::read_optional(&blob)? else {
                return Ok(None);
            };
            Ok(Some((rev.media_type, bytes)))
        })
        .await?;
        Ok(found
            .map(|(media_type, bytes)| StoredManifest::new(digest, media_type, Bytes::from(bytes))))
    }
}

/// Publishing a verified temporary file as a blob linked into a repository.
struct BlobCommit {
    dest: PathBuf,
    link: PathBuf,
    tmp_dir: PathBuf,
}

impl BlobCommit {
    /// Blocking: moves `tmp` into the blob store (or drops it when the blob
    /// is already there), then links it.
    fn run(&self, tmp: &Path) -> io::Result<()> {
        if self.dest.exists() {
            std::fs::remove_file(tmp)?;
        } else {
            atomic::publish(tmp, &self.dest)?;
        }
        // The link is written after the blob is durable, so a visible link
        // always points at a complete blob.
        atomic::write_file(&self.tmp_dir, &self.link, b"")
    }
}

/// A temporary file removed when dropped unless kept: a request dropped
/// mid-upload (client gone, server shutting down) leaves nothing behind.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // One unlink of a file we created: cheap enough for any thread.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The entries of `dir/<alg>/` named by a digest's hex, as [`Stored`]
/// (`nested`: content under a two-character fan-out directory).
fn stored_in(dir: &Path, nested: bool) -> io::Result<Vec<super::Stored>> {
    let mut out = Vec::new();
    for alg in ["sha256", "sha512"] {
        let base = dir.join(alg);
        let mut dirs = vec![base.clone()];
        if nested {
            dirs.clear();
            match std::fs::read_dir(&base) {
                Ok(entries) => {
                    for e in entries {
                        dirs.push(e?.path());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        for d in dirs {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in entries {
                let e = e?;
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(digest) = format!("{alg}:{name}").parse::<Digest>() else {
                    continue;
                };
                // Gone since the listing (a push withdrawn, a blob set
                // aside): not there, which is what the listing means.
                let meta = match e.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if !meta.is_file() {
                    continue;
                }
                out.push(super::Stored {
                    digest,
                    size: meta.len(),
                    modified: meta.modified()?,
                });
            }
        }
    }
    Ok(out)
}

/// Runs blocking filesystem work on the blocking pool.
async fn run_blocking<T: Send + 'static>(
    context: &'static str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(StorageError::io(context)),
        Err(join) => Err(StorageError::Io {
            context: context.into(),
            source: io::Error::other(join),
        }),
    }
}

/// Bytes of a body queued between a request and its blocking writer when
/// it appends chunks to an existing file (a `PATCH`), so that the network
/// and the hash run ahead while the disk writes.
const WRITE_QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// Direct-write blocks per new file: one being written while the other is
/// filled from the body. The next block is complete when the disk finishes
/// one, so the disk never waits for the network (with a queue of a few
/// chunks, every block waited for its own bytes to arrive, and a push took
/// network + disk time instead of the slower of the two).
const SPOOL_BLOCKS: usize = 2;

/// The writer's side of [`copy_stream`]: it hands the file back.
type WriterTask = tokio::task::JoinHandle<io::Result<std::fs::File>>;

/// Streams `body` into `file`, hashing it on the way (a body error is the
/// client's, a write error is ours). The writes run on the
/// blocking pool while the next bytes arrive and are hashed, so network,
/// hash and disk overlap; an upload holds 16 MiB at most, whatever its
/// size. Returns the file and the bytes written (not yet synced).
/// `released` is dropped when the writer lets go of the file, even if this
/// future is dropped midway, so whoever writes the file next can wait for
/// the writes still queued. `new_file`: `file` is new and empty, so it may
/// be written with `O_DIRECT` (see [`fileio::Writer::direct`]).
async fn copy_stream(
    mut body: ByteStream,
    file: tokio::fs::File,
    hasher: &mut Hasher,
    released: Option<tokio::sync::oneshot::Sender<()>>,
    new_file: bool,
) -> Result<(tokio::fs::File, u64), StorageError> {
    let file = file.into_std().await;
    let (mut sink, writer) = if new_file {
        Sink::blocks(file, released)
    } else {
        Sink::chunks(file, released)
    };
    let mut n = 0u64;
    let fed = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StorageError::Body)?;
            hasher.update(&chunk);
            n += chunk.len() as u64;
            if !sink.send(chunk).await {
                // The writer stopped on an error, reported below.
                break;
            }
        }
        sink.close().await;
        Ok(())
    }
    .await;
    let written = match writer.await {
        Ok(r) => r.map_err(StorageError::io("writing a blob")),
        Err(e) => Err(StorageError::io("writing a blob")(io::Error::other(e))),
    };
    fed?;
    Ok((tokio::fs::File::from_std(written?), n))
}

/// Where [`copy_stream`] hands the body on to its blocking writer.
enum Sink {
    /// A new file: the body is copied into aligned blocks here, and the
    /// writer writes each whole block directly.
    Blocks {
        tx: tokio::sync::mpsc::Sender<fileio::Block>,
        /// Blocks the writer is done with.
        free: tokio::sync::mpsc::UnboundedReceiver<fileio::Block>,
        filling: Option<fileio::Block>,
        allocated: usize,
    },
    /// An existing file (an upload's next `PATCH`): chunks are queued as
    /// they came, each holding permits for its length until it is written,
    /// and written buffered at the file's position.
    Chunks {
        tx: tokio::sync::mpsc::UnboundedSender<(Bytes, tokio::sync::OwnedSemaphorePermit)>,
        budget: Arc<tokio::sync::Semaphore>,
    },
}

impl Sink {
    fn blocks(
        file: std::fs::File,
        released: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> (Sink, WriterTask) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<fileio::Block>(1);
        let (free_tx, free) = tokio::sync::mpsc::unbounded_channel::<fileio::Block>();
        let writer = tokio::task::spawn_blocking(move || {
            let _released = released;
            let mut out = fileio::Writer::direct(file);
            while let Some(mut block) = rx.blocking_recv() {
                out.write_block(&block)?;
                block.clear();
                let _ = free_tx.send(block);
            }
            out.finish()
        });
        let sink = Sink::Blocks {
            tx,
            free,
            filling: None,
            allocated: 0,
        };
        (sink, writer)
    }

    fn chunks(
        file: std::fs::File,
        released: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> (Sink, WriterTask) {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(Bytes, tokio::sync::OwnedSemaphorePermit)>();
        let writer = tokio::task::spawn_blocking(move || {
            let _released = released;
            let mut out = fileio::Writer::new(file);
            while let Some((chunk, permit)) = rx.blocking_recv() {
                out.write(&chunk)?;
                drop(permit);
            }
            out.finish()
        });
        let budget = Arc::new(tokio::sync::Semaphore::new(WRITE_QUEUE_BYTES));
        (Sink::Chunks { tx, budget }, writer)
    }

    /// Hands `chunk` on; false once the writer has stopped (on an error,
    /// which its task reports).
    async fn send(&mut self, chunk: Bytes) -> bool {
        match self {
            Sink::Blocks {
                tx,
                free,
                filling,
                allocated,
            } => {
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let mut block = match filling.take() {
                        Some(block) => block,
                        None => match free.try_recv() {
                            Ok(block) => block,
                            Err(_) if *allocated < SPOOL_BLOCKS => {
                                *allocated += 1;
                                fileio::Block::new()
                            }
                            Err(_) => match free.recv().await {
                                Some(block) => block,
                                None => return false,
                            },
                        },
                    };
                    rest = block.fill(rest);
                    if !block.is_full() {
                        *filling = Some(block);
                    } else if tx.send(block).await.is_err() {
                        return false;
                    }
                }
                true
            }
            Sink::Chunks { tx, budget } => {
                // A chunk larger than the whole budget takes all of it. The
                // semaphore is never closed; a writer that stopped dropped
                // what it had queued (and those permits), and the send fails.
                let want = u32::try_from(chunk.len().min(WRITE_QUEUE_BYTES)).unwrap_or(u32::MAX);
                match Arc::clone(budget).acquire_many_owned(want).await {
                    Ok(permit) => tx.send((chunk, permit)).is_ok(),
                    Err(_) => false,
                }
            }
        }
    }

    /// Sends what is still held: a new file's last, partial block.
    async fn close(self) {
        if let Sink::Blocks {
            tx,
            filling: Some(tail),
            ..
        } = self
            && !tail.is_empty()
        {
            let _ = tx.send(tail).await;
        }
    }
}

fn file_len(path: &Path) -> io::Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[async_trait::async_trait]
impl Storage for FsStorage {
    async fn check_writable(&self) -> Result<(), StorageError> {
        let tmp = self.tmp_dir();
        run_blocking("checking the storage root is writable", move || {
            let probe = atomic::temp_path(&tmp);
            std::fs::write(&probe, b"ready")?;
            std::fs::remove_file(&probe)
        })
        .await
    }

    async fn blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, StorageError> {
        let link = self.layer_link(repo, digest);
        let blob = self.blob_path(digest);
        run_blocking("looking up a blob", move || {
            if file_len(&link)?.is_none() {
                return Ok(None);
            }
            file_len(&blob)
        })
        .await
    }

    async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead, StorageError> {
        // Only the link is checked here: the open below finds the blob, and
        // its size comes from the open file.
        let link = self.layer_link(repo, digest);
        if run_blocking("looking up a blob", move || file_len(&link))
            .await?
            .is_none()
        {
            return Err(StorageError::BlobUnknown(digest.clone()));
        }
        let path = self.blob_path(digest);
        let opened = run_blocking("opening a blob", move || match std::fs::File::open(&path) {
            Ok(file) => {
                let size = file.metadata()?.len();
                Ok(Some((file, size)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
        let Some((file, size)) = opened else {
            return Err(StorageError::BlobUnknown(digest.clone()));
        };
        let (start, len) = range.map_or((0, size), |r| (r.start, r.len()));
        metrics().read(len);
        let body = fileio::read_stream(file, start, len);
        Ok(BlobRead { size, body })
    }

    async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<u64, StorageError> {
        let (tmp, n, actual) = self.spool(body, digest.algorithm()).await?;
        let verdict = check_len(expected_len, n).and_then(|()| {
            if &actual == digest {
                Ok(())
            } else {
                Err(StorageError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                })
            }
        });
        verdict?;
        // From here the commit runs to completion even if the request is dropped.
        let commit = self.blob_commit(repo, digest);
        let tmp = tmp.keep();
        run_blocking("storing a blob", move || {
            let result = commit.run(&tmp);
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        })
        .await?;
        metrics().wrote(n, true);
        Ok(n)
    }

    async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, StorageError> {
        let Some(size) = self.blob_size(from, digest).await? else {
            return Ok(None);
        };
        let link = self.layer_link(repo, digest);
        let tmp_dir = self.tmp_dir();
        run_blocking("linking a blob", move || {
            atomic::write_file(&tmp_dir, &link, b"")
        })
        .await?;
        Ok(Some(size))
    }

    async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        let link = self.layer_link(repo, digest);
        let existed = run_blocking("unlinking a blob", move || atomic::remove_file(&link)).await?;
        if existed {
            Ok(())
        } else {
            Err(StorageError::BlobUnknown(digest.clone()))
        }
    }

    async fn start_upload(&self, repo: &RepoName, owner: &str) -> Result<UploadId, StorageError> {
        upload::start(self, repo, owner).await
    }

    async fn sweep_uploads(&self) -> Result<usize, StorageError> {
        upload::sweep(self).await
    }

    async fn upload_offset(&self, repo: &RepoName, id: UploadId) -> Result<u64, StorageError> {
        let session = upload::session(self, repo, id).await?;
        let state = session.state.lock().await;
        Ok(state.offset)
    }

    async fn append_upload(
        &self,
        repo: &RepoName,
        id: UploadId,
        start: Option<u64>,
        body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<u64, StorageError> {
        upload::append(self, repo, id, start, body, expected_len).await
    }

    async fn complete_upload(
        &self,
        repo: &RepoName,
        id: UploadId,
        digest: &Digest,
        body: Option<ByteStream>,
        expected_len: Option<u64>,
    ) -> Result<u64, StorageError> {
        let size = upload::complete(self, repo, id, digest, body, expected_len).await?;
        metrics().wrote(size, true);
        Ok(size)
    }

    async fn cancel_upload(&self, repo: &RepoName, id: UploadId) -> Result<(), StorageError> {
        upload::cancel(self, repo, id).await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Arc<StoredManifest>>, StorageError> {
        self.cache
            .read_through(repo, reference, self.manifest_from_disk(repo, reference))
            .await
    }

    async fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        let path = self.tags_dir(repo).join(tag.as_str());
        let Some(bytes) =
            run_blocking("reading a tag", move || atomic::read_optional(&path)).await?
        else {
            return Ok(None);
        };
        super::tag_text(tag, &bytes).map(Some)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: StoredManifest,
        tag: Option<&Tag>,
        referrer: Option<Referrer>,
    ) -> Result<(), StorageError> {
        let tmp_dir = self.tmp_dir();
        metrics().wrote(manifest.bytes.len() as u64, true);
        let blob = self.blob_path(&manifest.digest);
        let revision = self.revision_path(repo, &manifest.digest);
        let tag_path = tag.map(|t| self.tags_dir(repo).join(t.as_str()));
        let referrer_path = referrer.as_ref().map(|r| {
            let d = &manifest.digest;
            self.referrers_dir(repo, &r.subject).join(format!(
                "{}-{}",
                d.algorithm().as_str(),
                d.hex()
            ))
        });
        let rev = Revision {
            media_type: manifest.media_type.clone(),
            subject: referrer.as_ref().map(|r| r.subject.to_string()),
        };
        let rev = serde_json::to_vec(&rev)
            .map_err(|e| StorageError::io("encoding a revision")(io::Error::other(e)))?;
        let descriptor = match &referrer {
            Some(r) => Some(
                serde_json::to_vec(&r.descriptor)
                    .map_err(|e| StorageError::io("encoding a referrer")(io::Error::other(e)))?,
            ),
            None => None,
        };
        let bytes = manifest.bytes.clone();
        let digest_text = manifest.digest.to_string();
        // Order matters for crash safety: content, then the revision that
        // makes it reachable by digest, then the referrer entry, then the tag.
        run_blocking("storing a manifest", move || {
            if !blob.exists() {
                atomic::write_file(&tmp_dir, &blob, &bytes)?;
            }
            atomic::write_file(&tmp_dir, &revision, &rev)?;
            if let (Some(path), Some(desc)) = (referrer_path, descriptor) {
                atomic::write_file(&tmp_dir, &path, &desc)?;
            }
            if let Some(path) = tag_path {
                atomic::write_file(&tmp_dir, &path, digest_text.as_bytes())?;
            }
            Ok(())
        })
        .await?;
        self.cache.invalidate(repo);
        Ok(())
    }

    async fn move_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expected: Option<&Digest>,
        to: &Digest,
    ) -> Result<(), StorageError> {
        let _one_at_a_time = self.tag_moves.lock().await;
        if self.tag_target(repo, tag).await?.as_ref() != expected {
            return Err(StorageError::TagMoved {
                tag: tag.to_string(),
            });
        }
        let path = self.tags_dir(repo).join(tag.as_str());
        let (tmp_dir, text) = (self.tmp_dir(), to.to_string());
        run_blocking("writing a tag", move || {
            atomic::write_file(&tmp_dir, &path, text.as_bytes())
        })
        .await?;
        self.cache.invalidate(repo);
        Ok(())
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        let revision = self.revision_path(repo, digest);
        let tags_dir = self.tags_dir(repo);
        let repo_dir = self.repo_dir(repo);
        let target = digest.to_string();
        let own_name = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
        let existed = run_blocking("deleting a manifest", move || {
            let Some(rev) = atomic::read_optional(&revision)? else {
                return Ok(false);
            };
            // Tags first: a crash part-way leaves the manifest reachable by
            // digest, never a tag pointing at nothing.
            if let Ok(entries) = std::fs::read_dir(&tags_dir) {
                for entry in entries {
                    let entry = entry?;
                    let points_here =
                        std::fs::read(entry.path()).map(|b| b.trim_ascii() == target.as_bytes())?;
                    if points_here {
                        atomic::remove_file(&entry.path())?;
                    }
                }
            }
            if let Ok(rev) = serde_json::from_slice::<Revision>(&rev)
                && let Some(subject) = rev.subject.and_then(|s| s.parse::<Digest>().ok())
            {
                let path = repo_dir
                    .join("_referrers")
                    .join(subject.algorithm().as_str())
                    .join(subject.hex())
                    .join(&own_name);
                atomic::remove_file(&path)?;
            }
            atomic::remove_file(&revision)?;
            Ok(true)
        })
        .await?;
        self.cache.invalidate(repo);
        if existed {
            Ok(())
        } else {
            Err(StorageError::ManifestUnknown(digest.to_string()))
        }
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<(), StorageError> {
        let path = self.tags_dir(repo).join(tag.as_str());
        let existed = run_blocking("deleting a tag", move || atomic::remove_file(&path)).await?;
        self.cache.invalidate(repo);
        if existed {
            Ok(())
        } else {
            Err(StorageError::ManifestUnknown(tag.to_string()))
        }
    }

    async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError> {
        let repo_dir = self.repo_dir(repo);
        let tags_dir = self.tags_dir(repo);
        run_blocking("listing tags", move || {
            if !repo_dir.join("_manifests").is_dir() && !repo_dir.join("_layers").is_dir() {
                return Ok(None);
            }
            let mut tags = Vec::new();
            match std::fs::read_dir(&tags_dir) {
                Ok(entries) => {
                    for entry in entries {
                        if let Ok(name) = entry?.file_name().into_string() {
                            tags.push(name);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            tags.sort();
            Ok(Some(tags))
        })
        .await
    }

    async fn repositories(&self) -> Result<Vec<RepoName>, StorageError> {
        self.walk_repositories(false).await
    }

    async fn all_repositories(&self) -> Result<Vec<RepoName>, StorageError> {
        self.walk_repositories(true).await
    }

    async fn list_blob_content(&self) -> Result<Vec<super::Stored>, StorageError> {
        let dir = self.root.join("blobs");
        run_blocking("listing blobs", move || stored_in(&dir, true)).await
    }

    async fn list_revisions(&self, repo: &RepoName) -> Result<Vec<super::Stored>, StorageError> {
        let dir = self.repo_dir(repo).join("_manifests/revisions");
        run_blocking("listing manifests", move || stored_in(&dir, false)).await
    }

    async fn list_links(&self, repo: &RepoName) -> Result<Vec<super::Stored>, StorageError> {
        let dir = self.repo_dir(repo).join("_layers");
        run_blocking("listing blob links", move || stored_in(&dir, false)).await
    }

    async fn blob_content_exists(&self, digest: &Digest) -> Result<bool, StorageError> {
        let path = self.blob_path(digest);
        run_blocking("looking up a blob", move || {
            file_len(&path).map(|l| l.is_some())
        })
        .await
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        _size: u64,
    ) -> Result<(), StorageError> {
        let link = self.layer_link(repo, digest);
        let tmp_dir = self.tmp_dir();
        run_blocking("linking a blob", move || {
            atomic::write_file(&tmp_dir, &link, b"")
        })
        .await
    }

    async fn quarantine_blob(&self, digest: &Digest) -> Result<bool, StorageError> {
        let from = self.blob_path(digest);
        let to = self.quarantine_path(digest);
        run_blocking("setting a blob aside", move || {
            match std::fs::rename(&from, &to) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn restore_blob(&self, digest: &Digest) -> Result<(), StorageError> {
        let from = self.quarantine_path(digest);
        let to = self.blob_path(digest);
        run_blocking("restoring a blob", move || {
            if to.exists() {
                // Stored again meanwhile: that copy is as good.
                return match std::fs::remove_file(&from) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            match std::fs::rename(&from, &to) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn list_quarantined(&self) -> Result<Vec<Digest>, StorageError> {
        let dir = self.root.join("gc");
        run_blocking("listing set-aside blobs", move || {
            let mut out = Vec::new();
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            };
            for e in entries {
                if let Some(name) = e?.file_name().to_str()
                    && let Some((alg, hex)) = name.split_once('-')
                    && let Ok(d) = format!("{alg}:{hex}").parse::<Digest>()
                {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn purge_quarantined(&self, digest: &Digest) -> Result<(), StorageError> {
        let path = self.quarantine_path(digest);
        run_blocking("removing a blob", move || {
            atomic::remove_file(&path).map(|_| ())
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<serde_json::Value>, StorageError> {
        let dir = self.referrers_dir(repo, subject);
        run_blocking("listing referrers", move || {
            let mut out = Vec::new();
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            };
            let mut paths: Vec<PathBuf> = entries
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<_>>()?;
            paths.sort();
            for path in paths {
                if let Some(bytes) = atomic::read_optional(&path)?
                    && let Ok(v) = serde_json::from_slice(&bytes)
                {
                    out.push(v);
                }
            }
            Ok(out)
        })
        .await
    }
}

impl FsStorage {
    fn quarantine_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("gc")
            .join(format!("{}-{}", d.algorithm().as_str(), d.hex()))
    }

    /// Repositories under `repositories/`: those with manifests, or (`all`)
    /// also those holding only blob links.
    async fn walk_repositories(&self, all: bool) -> Result<Vec<RepoName>, StorageError> {
        let base = self.root.join("repositories");
        run_blocking("listing repositories", move || {
            let mut found = Vec::new();
            let mut stack = vec![(base.clone(), String::new())];
            while let Some((dir, name)) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let mut is_repo = false;
                for entry in entries {
                    let entry = entry?;
                    let Ok(file_name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if file_name == "_manifests" || (all && file_name == "_layers") {
                        is_repo = true;
                    } else if !file_name.starts_with('_') && entry.file_type()?.is_dir() {
                        let child = if name.is_empty() {
                            file_name.clone()
                        } else {
                            format!("{name}/{file_name}")
                        };
                        stack.push((entry.path(), child));
                    }
                }
                if is_repo && let Ok(repo) = name.parse::<RepoName>() {
                    found.push(repo);
                }
            }
            found.sort();
            Ok(found)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;

    fn chunk(i: usize, len: usize) -> Bytes {
        Bytes::from(vec![i as u8; len])
    }

    /// A request cut off mid-chunk acknowledges nothing, and whatever its
    /// writer still had queued never mixes into the next chunk: the blob
    /// read back is exactly the bytes acknowledged, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_off_chunk_never_corrupts_the_next_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Arc::new(FsStorage::open(dir.path()).await.expect("open"));
        let repo: RepoName = "cut/off".parse().expect("name");
        for round in 0..3 {
            let id = s.start_upload(&repo, "").await.expect("start");
            // Many chunks at once, then a body that never ends: the request
            // is dropped while the writer still has chunks queued.
            let flood = futures_util::stream::iter((0..64).map(|i| Ok(chunk(i + 100, 1 << 20))))
                .chain(futures_util::stream::pending());
            let (s2, repo2) = (Arc::clone(&s), repo.clone());
            let cut = tokio::spawn(async move {
                s2.append_upload(&repo2, id, Some(0), Box::pin(flood), None)
                    .await
            });
            tokio::time::sleep(Duration::from_millis(5 + 5 * round)).await;
            cut.abort();
            assert!(cut.await.is_err(), "the cut-off chunk was acknowledged");
            assert_eq!(s.upload_offset(&repo, id).await.expect("offset"), 0);

            let good: Vec<Bytes> = (0..3).map(|i| chunk(i, 4096)).collect();
            let expected: Vec<u8> = good.iter().flat_map(|c| c.iter().copied()).collect();
            let body = futures_util::stream::iter(good.into_iter().map(Ok));
            s.append_upload(&repo, id, Some(0), Box::pin(body), None)
                .await
                .expect("append");
            let digest = Digest::sha256_of(&expected);
            s.complete_upload(&repo, id, &digest, None, None)
                .await
                .expect("complete");
            let read = s.read_blob(&repo, &digest, None).await.expect("read");
            assert_eq!(read.size, expected.len() as u64);
            let mut got = Vec::new();
            let mut body = read.body;
            while let Some(c) = body.next().await {
                got.extend_from_slice(&c.expect("chunk"));
            }
            assert!(got == expected, "round {round}: the blob holds other bytes");
        }
    }

    /// A blob spooled whole through the direct-write blocks, from chunks of
    /// odd sizes that straddle the blocks, holds exactly the bytes sent;
    /// a body that fails midway makes nothing visible.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spooled_blob_holds_the_bytes_sent_across_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FsStorage::open(dir.path()).await.expect("open");
        let repo: RepoName = "spool/app".parse().expect("name");
        let data: Vec<u8> = (0..SPOOL_BLOCKS * fileio::DIRECT_BLOCK * 2 + 12_345)
            .map(|i| (i % 253) as u8)
            .collect();
        let digest = Digest::sha256_of(&data);
        let chunks: Vec<Result<Bytes, _>> = data
            .chunks(1_000_003)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        s.put_blob(
            &repo,
            &digest,
            Box::pin(futures_util::stream::iter(chunks)),
            Some(data.len() as u64),
        )
        .await
        .expect("put");
        let read = s.read_blob(&repo, &digest, None).await.expect("read");
        let mut got = Vec::new();
        let mut body = read.body;
        while let Some(c) = body.next().await {
            got.extend_from_slice(&c.expect("chunk"));
        }
        assert!(
            got == data,
            "{} bytes read back, {} sent",
            got.len(),
            data.len()
        );

        let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
        let other_digest = Digest::sha256_of(&other);
        let sent: Vec<io::Result<Bytes>> = other
            .chunks(3 * 1024 * 1024)
            .take(5)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .chain([Err(io::Error::other("client went away"))])
            .collect();
        let broken = futures_util::stream::iter(sent);
        let put = s
            .put_blob(&repo, &other_digest, Box::pin(broken), None)
            .await;
        assert!(put.is_err(), "a broken body was stored");
        assert_eq!(s.blob_size(&repo, &other_digest).await.expect("size"), None);
    }

    /// Ranges are served from their offset, across chunk boundaries.
    #[tokio::test]
    async fn ranges_read_what_they_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FsStorage::open(dir.path()).await.expect("open");
        let repo: RepoName = "ranges/app".parse().expect("name");
        let data: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
        let digest = Digest::sha256_of(&data);
        let body = futures_util::stream::iter([Ok(Bytes::from(data.clone()))]);
        s.put_blob(&repo, &digest, Box::pin(body), Some(data.len() as u64))
            .await
            .expect("put");
        for (start, end) in [
            (0, 0),
            (5, 1024 * 1024 + 3),
            (1024 * 1024, 3 * 1024 * 1024 + 16),
        ] {
            let range = ByteRange { start, end };
            let read = s
                .read_blob(&repo, &digest, Some(range))
                .await
                .expect("read");
            let mut got = Vec::new();
            let mut body = read.body;
            while let Some(c) = body.next().await {
                got.extend_from_slice(&c.expect("chunk"));
            }
            assert!(
                got == data[start as usize..=end as usize],
                "range {start}-{end}"
            );
        }
    }
}
