//! Upload sessions on disk: `uploads/<id>/info.json` (owning repository),
//! `data` (received bytes) and `offset` (how many of them are durable and
//! acknowledged).
//!
//! `offset` is the source of truth: it is rewritten atomically only after
//! `data` is fsynced, and every append first truncates `data` to it, so a
//! chunk torn by a crash or a dropped connection is never counted. Sessions
//! survive restarts; the running hash is kept in memory as an optimisation
//! and recomputed from `data` when missing (after a restart).
//!
//! Each session has its own async mutex, so concurrent requests on one
//! session are serialised while different sessions proceed in parallel.
//!
//! Sessions are bounded two ways ([`UploadLimits`]): one idle longer than
//! the TTL is gone (404 `BLOB_UPLOAD_UNKNOWN`, and [`sweep`] removes its
//! files), and each owner (an identity, or every anonymous caller together)
//! holds at most so many open sessions. Idle time is measured from the last
//! change of `offset`, so it survives a restart.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Mutex as AsyncMutex;

use super::{FsStorage, atomic, check_len, copy_stream, run_blocking};
use crate::oci::{Digest, Hasher, RepoName, UploadId};
use crate::storage::{ByteStream, StorageError};

/// A live session: its repository, when it last made progress, and its
/// state behind its own mutex. (Its owner is only needed for counting, in
/// [`Sessions`].)
pub struct Handle {
    pub repo: RepoName,
    /// Milliseconds since the Unix epoch of the last append (or the start).
    /// Outside the mutex so the sweep can read it without waiting on a
    /// chunk in flight.
    touched_ms: AtomicU64,
    pub state: AsyncMutex<Session>,
}

impl Handle {
    fn touch(&self) {
        self.touched_ms
            .store(millis(SystemTime::now()), Ordering::Relaxed);
    }

    fn idle_longer_than(&self, ttl: Duration) -> bool {
        let idle =
            millis(SystemTime::now()).saturating_sub(self.touched_ms.load(Ordering::Relaxed));
        u128::from(idle) > ttl.as_millis()
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A session's mutable state.
pub struct Session {
    pub offset: u64,
    /// sha256 of `data[..offset]`, when known without re-reading.
    hasher: Option<Hasher>,
    /// Set once the session is completed or cancelled, so a request that was
    /// waiting on the mutex sees it gone.
    closed: bool,
    /// Closed when the writer of the last chunk has let go of `data`. A
    /// request cut off mid-chunk leaves writes queued on the blocking pool;
    /// nobody touches `data` again before they are done.
    writer: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Session {
    /// Waits until no writer of an earlier chunk holds `data` any more.
    async fn settle(&mut self) {
        if let Some(released) = self.writer.take() {
            let _ = released.await;
        }
    }
}

/// The sessions this process has touched, and how many open sessions each
/// owner holds (all of them, counted from disk at start).
#[derive(Default)]
pub struct Sessions {
    live: HashMap<UploadId, Arc<Handle>>,
    /// Open sessions (on disk, not completed, cancelled or expired) → owner.
    owner_of: HashMap<UploadId, String>,
    per_owner: HashMap<String, usize>,
}

impl Sessions {
    /// Counts a session against its owner.
    fn count(&mut self, id: UploadId, owner: &str) {
        if self.owner_of.insert(id, owner.to_string()).is_none() {
            *self.per_owner.entry(owner.to_string()).or_default() += 1;
        }
    }

    /// Forgets a session: frees its owner's slot.
    fn forget(&mut self, id: UploadId) {
        self.live.remove(&id);
        if let Some(owner) = self.owner_of.remove(&id)
            && let Some(n) = self.per_owner.get_mut(&owner)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_owner.remove(&owner);
            }
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Info {
    repository: String,
    /// Who opened it ("" for anonymous callers); absent in sessions written
    /// before owners were recorded, which count as anonymous.
    #[serde(default)]
    owner: String,
}

fn dir(s: &FsStorage, id: UploadId) -> PathBuf {
    s.root.join("uploads").join(id.to_string())
}

pub async fn start(s: &FsStorage, repo: &RepoName, owner: &str) -> Result<UploadId, StorageError> {
    let id = UploadId::new_random();
    // Take the slot before any disk work, so concurrent starts cannot
    // overshoot the limit; give it back if the session cannot be written.
    {
        let mut map = lock_map(s);
        let limit = s.upload_limits.max_per_owner;
        if limit > 0 && map.per_owner.get(owner).copied().unwrap_or(0) >= limit {
            return Err(StorageError::TooManyUploads { limit });
        }
        map.count(id, owner);
    }
    let d = dir(s, id);
    let tmp_dir = s.tmp_dir();
    let written = async {
        let info = serde_json::to_vec(&Info {
            repository: repo.to_string(),
            owner: owner.to_string(),
        })
        .map_err(|e| StorageError::io("encoding an upload session")(io::Error::other(e)))?;
        run_blocking("opening an upload session", move || {
            std::fs::create_dir_all(&d)?;
            std::fs::File::create(d.join("data"))?.sync_all()?;
            atomic::write_file(&tmp_dir, &d.join("offset"), b"0")?;
            // info.json last: a session without it is not a session.
            atomic::write_file(&tmp_dir, &d.join("info.json"), &info)
        })
        .await
    }
    .await;
    if let Err(e) = written {
        lock_map(s).forget(id);
        return Err(e);
    }
    let session = Session {
        offset: 0,
        hasher: Some(crate::oci::Algorithm::Sha256.hasher()),
        closed: false,
        writer: None,
    };
    let handle = Arc::new(Handle {
        repo: repo.clone(),
        touched_ms: AtomicU64::new(millis(SystemTime::now())),
        state: AsyncMutex::new(session),
    });
    lock_map(s).live.insert(id, handle);
    Ok(id)
}

/// What `uploads/<id>/` holds on disk: its info and offset, and when the
/// offset last changed. `None` when it is not (or no longer) a session.
fn read_on_disk(d: &Path) -> io::Result<Option<(Info, u64, SystemTime)>> {
    let Some(info) = atomic::read_optional(&d.join("info.json"))? else {
        return Ok(None);
    };
    let offset_path = d.join("offset");
    let Some(offset) = atomic::read_optional(&offset_path)? else {
        return Ok(None);
    };
    let touched = std::fs::metadata(&offset_path)?.modified()?;
    let info: Info = serde_json::from_slice(&info).map_err(io::Error::other)?;
    let offset: u64 = String::from_utf8_lossy(&offset)
        .trim()
        .parse()
        .map_err(io::Error::other)?;
    Ok(Some((info, offset, touched)))
}

/// Every entry of `uploads/`, with its session id when its name is one.
fn entries(root: &Path) -> io::Result<Vec<(Option<UploadId>, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join("uploads"))? {
        let entry = entry?;
        let id = entry.file_name().to_str().and_then(|n| n.parse().ok());
        out.push((id, entry.path()));
    }
    Ok(out)
}

/// Counts the sessions already on disk against their owners (at open).
pub fn count_existing(root: &Path) -> io::Result<Sessions> {
    let mut sessions = Sessions::default();
    for (id, path) in entries(root)? {
        if let Some(id) = id
            && let Ok(Some((info, _, _))) = read_on_disk(&path)
        {
            sessions.count(id, &info.owner);
        }
    }
    Ok(sessions)
}

/// The session `id`, whatever its repository: from memory, or loaded from
/// disk after a restart. `None` when there is no such session.
async fn load(s: &FsStorage, id: UploadId) -> Result<Option<Arc<Handle>>, StorageError> {
    if let Some(handle) = lock_map(s).live.get(&id).cloned() {
        return Ok(Some(handle));
    }
    let d = dir(s, id);
    let Some((info, offset, touched)) =
        run_blocking("loading an upload session", move || read_on_disk(&d)).await?
    else {
        return Ok(None);
    };
    let Ok(repo) = info.repository.parse::<RepoName>() else {
        return Ok(None);
    };
    let fresh = Arc::new(Handle {
        repo,
        touched_ms: AtomicU64::new(millis(touched)),
        state: AsyncMutex::new(Session {
            offset,
            hasher: None,
            closed: false,
            writer: None,
        }),
    });
    let mut map = lock_map(s);
    map.count(id, &info.owner);
    Ok(Some(map.live.entry(id).or_insert(fresh).clone()))
}

/// Ends `handle`'s session if it has been idle past the TTL and no request
/// is working on it: its files are removed and its owner's slot freed.
/// Returns whether it ended.
async fn expire_if_idle(
    s: &FsStorage,
    id: UploadId,
    handle: &Handle,
) -> Result<bool, StorageError> {
    if !handle.idle_longer_than(s.upload_limits.ttl) {
        return Ok(false);
    }
    // A chunk in flight holds the lock: that session is not idle.
    let Ok(mut state) = handle.state.try_lock() else {
        return Ok(false);
    };
    if state.closed {
        return Ok(true);
    }
    state.closed = true;
    let d = dir(s, id);
    run_blocking(
        "removing an expired upload session",
        move || match std::fs::remove_dir_all(&d) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    )
    .await?;
    lock_map(s).forget(id);
    tracing::info!(upload = %id, repository = %handle.repo, "upload session expired");
    Ok(true)
}

/// Removes every session idle longer than the TTL, and leftovers of
/// sessions whose start was cut off (no `info.json`) older than the TTL.
/// Returns how many sessions it removed.
pub async fn sweep(s: &FsStorage) -> Result<usize, StorageError> {
    let root = s.root.clone();
    let ttl = s.upload_limits.ttl;
    // Only sessions whose `offset` has not changed for a TTL are looked at
    // further (memory may know of a later chunk); the rest cost one stat.
    let (ids, leftovers) = run_blocking("listing upload sessions", move || {
        let older_than_ttl = |path: &Path| -> io::Result<bool> {
            Ok(std::fs::metadata(path)?
                .modified()?
                .elapsed()
                .unwrap_or_default()
                > ttl)
        };
        let mut ids = Vec::new();
        let mut leftovers = Vec::new();
        for (id, path) in entries(&root)? {
            match id {
                Some(id) if path.join("info.json").exists() => {
                    if older_than_ttl(&path.join("offset")).unwrap_or(true) {
                        ids.push(id);
                    }
                }
                None | Some(_) => {
                    if older_than_ttl(&path)? {
                        leftovers.push(path);
                    }
                }
            }
        }
        Ok((ids, leftovers))
    })
    .await?;
    let mut removed = 0;
    for id in ids {
        if let Some(handle) = load(s, id).await?
            && expire_if_idle(s, id, &handle).await?
        {
            removed += 1;
        }
    }
    if !leftovers.is_empty() {
        run_blocking("removing incomplete upload sessions", move || {
            for path in leftovers {
                let _ = std::fs::remove_dir_all(path);
            }
            Ok(())
        })
        .await?;
    }
    Ok(removed)
}

fn lock_map(s: &FsStorage) -> std::sync::MutexGuard<'_, Sessions> {
    s.uploads.lock().unwrap_or_else(|p| p.into_inner())
}

/// The session `id` if it belongs to `repo`, loading it from disk after a restart.
pub async fn session(
    s: &FsStorage,
    repo: &RepoName,
    id: UploadId,
) -> Result<Arc<Handle>, StorageError> {
    let Some(session) = load(s, id).await? else {
        return Err(StorageError::UploadUnknown);
    };
    // A session is only visible through the repository that opened it.
    if &session.repo != repo {
        return Err(StorageError::UploadUnknown);
    }
    // Past its TTL a session is gone, even before the sweep comes by.
    if expire_if_idle(s, id, &session).await? {
        return Err(StorageError::UploadUnknown);
    }
    Ok(session)
}

/// Appends `body` at the session's offset; on any failure the session's
/// durable state is unchanged.
async fn append_locked(
    s: &FsStorage,
    id: UploadId,
    state: &mut Session,
    body: ByteStream,
    expected_len: Option<u64>,
) -> Result<u64, StorageError> {
    state.settle().await;
    let d = dir(s, id);
    let data = d.join("data");
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .await
        .map_err(StorageError::io("opening an upload"))?;
    // Drop anything past the acknowledged offset (a torn earlier chunk).
    file.set_len(state.offset)
        .await
        .map_err(StorageError::io("truncating an upload"))?;
    file.seek(io::SeekFrom::Start(state.offset))
        .await
        .map_err(StorageError::io("seeking in an upload"))?;
    let mut hasher = state
        .hasher
        .clone()
        .unwrap_or_else(|| crate::oci::Algorithm::Sha256.hasher());
    let (released, writer) = tokio::sync::oneshot::channel();
    state.writer = Some(writer);
    let copied = async {
        let (file, n) = copy_stream(body, file, &mut hasher, Some(released), false).await?;
        check_len(expected_len, n)?;
        file.sync_all()
            .await
            .map_err(StorageError::io("syncing an upload"))?;
        Ok(n)
    }
    .await;
    let n = match copied {
        Ok(n) => n,
        Err(e) => {
            // The next append truncates to the acknowledged offset anyway;
            // this only frees the space early.
            let offset = state.offset;
            let _ = run_blocking("truncating an upload", move || {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&data)?
                    .set_len(offset)
            })
            .await;
            return Err(e);
        }
    };
    let new_offset = state.offset + n;
    let tmp_dir = s.tmp_dir();
    run_blocking("recording upload progress", move || {
        atomic::write_file(
            &tmp_dir,
            &d.join("offset"),
            new_offset.to_string().as_bytes(),
        )
    })
    .await?;
    state.offset = new_offset;
    if state.hasher.is_some() {
        state.hasher = Some(hasher);
    }
    Ok(new_offset)
}

pub async fn append(
    s: &FsStorage,
    repo: &RepoName,
    id: UploadId,
    start: Option<u64>,
    body: ByteStream,
    expected_len: Option<u64>,
) -> Result<u64, StorageError> {
    let session = session(s, repo, id).await?;
    let mut state = session.state.lock().await;
    if state.closed {
        return Err(StorageError::UploadUnknown);
    }
    if let Some(start) = start
        && start != state.offset
    {
        return Err(StorageError::OffsetMismatch { have: state.offset });
    }
    // Progress is counted from both ends of a chunk: a long chunk that
    // started just inside the TTL is not expired right after it lands.
    session.touch();
    let result = append_locked(s, id, &mut state, body, expected_len).await;
    session.touch();
    result
}

/// Hashes `data[..len]` from disk with `digest`'s algorithm.
async fn rehash(
    path: PathBuf,
    len: u64,
    algorithm: crate::oci::Algorithm,
) -> Result<Digest, StorageError> {
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(StorageError::io("reading an upload"))?;
    let mut reader = file.take(len);
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(StorageError::io("reading an upload"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

pub async fn complete(
    s: &FsStorage,
    repo: &RepoName,
    id: UploadId,
    digest: &Digest,
    body: Option<ByteStream>,
    expected_len: Option<u64>,
) -> Result<u64, StorageError> {
    let session = session(s, repo, id).await?;
    let mut state = session.state.lock().await;
    if state.closed {
        return Err(StorageError::UploadUnknown);
    }
    state.settle().await;
    if let Some(body) = body {
        append_locked(s, id, &mut state, body, expected_len).await?;
    }
    let d = dir(s, id);
    let actual = match &state.hasher {
        Some(h) if h.algorithm() == digest.algorithm() => h.clone().finish(),
        _ => rehash(d.join("data"), state.offset, digest.algorithm()).await?,
    };
    if &actual != digest {
        // The session stays open and unchanged: the client may retry with
        // the right digest or cancel.
        return Err(StorageError::DigestMismatch {
            expected: digest.clone(),
            actual,
        });
    }
    let size = state.offset;
    // Move the data out of the session directory into tmp first, so the blob
    // store only ever receives a file from tmp (same filesystem, atomic).
    let staged = atomic::temp_path(&s.tmp_dir());
    let data = d.join("data");
    let commit = s.blob_commit(repo, digest);
    let session_dir = d.clone();
    // One blocking task from the data file to the published blob: once it
    // starts it finishes even if the request is dropped, so a session is
    // never left half-finished (data moved out, blob not published).
    run_blocking("finishing an upload", move || {
        // `data` can hold bytes past the acknowledged offset: a chunk whose
        // request was cut off (its future dropped, the process killed) after
        // some writes. They were never counted nor hashed, so they must not
        // become part of the blob.
        let file = std::fs::OpenOptions::new().write(true).open(&data)?;
        if file.metadata()?.len() != size {
            file.set_len(size)?;
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&data, &staged)?;
        if let Err(e) = commit.run(&staged) {
            // Put the data back so the session stays usable.
            let _ = std::fs::rename(&staged, &data);
            return Err(e);
        }
        std::fs::remove_dir_all(&session_dir)
    })
    .await?;
    state.closed = true;
    lock_map(s).forget(id);
    Ok(size)
}

pub async fn cancel(s: &FsStorage, repo: &RepoName, id: UploadId) -> Result<(), StorageError> {
    let session = session(s, repo, id).await?;
    let mut state = session.state.lock().await;
    if state.closed {
        return Err(StorageError::UploadUnknown);
    }
    state.settle().await;
    state.closed = true;
    let d = dir(s, id);
    run_blocking("removing an upload session", move || {
        std::fs::remove_dir_all(&d)
    })
    .await?;
    lock_map(s).forget(id);
    Ok(())
}
