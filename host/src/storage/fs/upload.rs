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

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Mutex as AsyncMutex;

use super::{FsStorage, atomic, check_len, copy_stream, run_blocking};
use crate::oci::{Digest, Hasher, RepoName, UploadId};
use crate::storage::{ByteStream, StorageError};

/// A live session: its owner, and its state behind its own mutex.
pub struct Handle {
    pub repo: RepoName,
    pub state: AsyncMutex<Session>,
}

/// A session's mutable state.
pub struct Session {
    pub offset: u64,
    /// sha256 of `data[..offset]`, when known without re-reading.
    hasher: Option<Hasher>,
    /// Set once the session is completed or cancelled, so a request that was
    /// waiting on the mutex sees it gone.
    closed: bool,
}

#[derive(Default)]
pub struct Sessions {
    live: HashMap<UploadId, Arc<Handle>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Info {
    repository: String,
}

fn dir(s: &FsStorage, id: UploadId) -> PathBuf {
    s.root.join("uploads").join(id.to_string())
}

pub async fn start(s: &FsStorage, repo: &RepoName) -> Result<UploadId, StorageError> {
    let id = UploadId::new_random();
    let d = dir(s, id);
    let tmp_dir = s.tmp_dir();
    let info = serde_json::to_vec(&Info {
        repository: repo.to_string(),
    })
    .map_err(|e| StorageError::io("encoding an upload session")(io::Error::other(e)))?;
    run_blocking("opening an upload session", move || {
        std::fs::create_dir_all(&d)?;
        std::fs::File::create(d.join("data"))?.sync_all()?;
        atomic::write_file(&tmp_dir, &d.join("offset"), b"0")?;
        // info.json last: a session without it is not a session.
        atomic::write_file(&tmp_dir, &d.join("info.json"), &info)
    })
    .await?;
    let session = Session {
        offset: 0,
        hasher: Some(crate::oci::Algorithm::Sha256.hasher()),
        closed: false,
    };
    lock_map(s).live.insert(
        id,
        Arc::new(Handle {
            repo: repo.clone(),
            state: AsyncMutex::new(session),
        }),
    );
    Ok(id)
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
    let existing = lock_map(s).live.get(&id).cloned();
    let session = match existing {
        Some(sess) => sess,
        None => {
            let d = dir(s, id);
            let loaded = run_blocking("loading an upload session", move || {
                let Some(info) = atomic::read_optional(&d.join("info.json"))? else {
                    return Ok(None);
                };
                let Some(offset) = atomic::read_optional(&d.join("offset"))? else {
                    return Ok(None);
                };
                let info: Info = serde_json::from_slice(&info).map_err(io::Error::other)?;
                let offset: u64 = String::from_utf8_lossy(&offset)
                    .trim()
                    .parse()
                    .map_err(io::Error::other)?;
                Ok(Some((info, offset)))
            })
            .await?;
            let Some((info, offset)) = loaded else {
                return Err(StorageError::UploadUnknown);
            };
            let Ok(owner) = info.repository.parse::<RepoName>() else {
                return Err(StorageError::UploadUnknown);
            };
            let state = AsyncMutex::new(Session {
                offset,
                hasher: None,
                closed: false,
            });
            let fresh = Arc::new(Handle { repo: owner, state });
            lock_map(s).live.entry(id).or_insert(fresh).clone()
        }
    };
    // A session is only visible through the repository that opened it.
    if &session.repo != repo {
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
    let copied = async {
        let n = copy_stream(body, &mut file, &mut hasher).await?;
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
            let _ = file.set_len(state.offset).await;
            return Err(e);
        }
    };
    drop(file);
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
    append_locked(s, id, &mut state, body, expected_len).await
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
    lock_map(s).live.remove(&id);
    Ok(size)
}

pub async fn cancel(s: &FsStorage, repo: &RepoName, id: UploadId) -> Result<(), StorageError> {
    let session = session(s, repo, id).await?;
    let mut state = session.state.lock().await;
    if state.closed {
        return Err(StorageError::UploadUnknown);
    }
    state.closed = true;
    let d = dir(s, id);
    run_blocking("removing an upload session", move || {
        std::fs::remove_dir_all(&d)
    })
    .await?;
    lock_map(s).live.remove(&id);
    Ok(())
}
