//! Upload sessions on object storage, resumable on any replica.
//!
//! A session is `uploads/<id>/state` (JSON, below) plus an S3 multipart
//! upload to `uploads/<id>/data` created when the session starts. Chunks
//! may have any size, but S3 parts must have at least 5 MiB (all but the
//! last), so what a chunk brings is cut into parts of [`PART_SIZE`] and
//! the remainder is written as a tail object, which the next chunk
//! prepends. Nothing acknowledged lives only in memory.
//!
//! The state is the source of truth: it lists the parts (with the ETags
//! the store answered), the current tail, the offset and the running
//! SHA-256 ([`ResumableSha256`]), and it is replaced only by a conditional
//! write against the version it was read at. A chunk is acknowledged after
//! that write, so a replica killed mid-chunk loses exactly the
//! unacknowledged chunk: parts it uploaded are not in the state (the next
//! chunk overwrites their part numbers), and its tail object is never
//! referenced. Two replicas writing one session at once cannot both win;
//! the loser answers 416 with the offset the winner left, and because the
//! state records every part's ETag, a part overwritten by the loser makes
//! the final `CompleteMultipartUpload` fail rather than assemble wrong bytes.
//!
//! Completing verifies the digest before anything is visible (a session
//! whose whole body comes with the final `PUT` streams straight to its blob
//! key, like a monolithic upload): sha256 from
//! the saved state (no re-read), sha512 by reading the assembled data back.
//! Small blobs (no full part ever) are written with one `PUT`; the rest are
//! assembled by completing the multipart upload and copied (server-side)
//! to `blobs/`.
//!
//! Open sessions per owner are counted across replicas by marker objects
//! under `upload-owners/`. Expiry: a session idle past the TTL answers 404
//! at once; the sweep removes its objects and its marker (freeing the slot)
//! and aborts its multipart upload.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::resume::{ResumableSha256, SavedSha256};
use super::{PART_SIZE, PARTS_IN_FLIGHT, S3Storage, encode_err, is_not_found, store_err};
use crate::oci::{Algorithm, Digest, RepoName, UploadId};
use crate::storage::{ByteStream, StorageError, check_len};

/// S3 allows at most this many parts; parts grow past the first thousand so
/// a session can reach several hundred GiB.
const MAX_PARTS: usize = 10_000;

/// Beyond this a server-side copy is refused by S3 (`CopyObject`); larger
/// blobs are copied by streaming them through.
const COPY_OBJECT_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Part {
    etag: String,
    size: u64,
}

/// `uploads/<id>/state`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct State {
    repository: String,
    owner: String,
    /// Milliseconds since the Unix epoch of the last chunk (or the start).
    touched_ms: u64,
    offset: u64,
    multipart: String,
    parts: Vec<Part>,
    /// The bytes at the end of `offset` that are in no part yet: the tail
    /// object of that name holds them (`tail-<random>`: every state has
    /// its own, so a request that loses the race to save its state never
    /// leaves its bytes in the winner's tail).
    tail: Option<String>,
    tail_size: u64,
    sha256: SavedSha256,
}

/// A state as read, with the version to replace it against.
struct Loaded {
    state: State,
    version: UpdateVersion,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn dir(s: &S3Storage, id: UploadId) -> Path {
    s.key(&format!("uploads/{id}"))
}

fn state_key(s: &S3Storage, id: UploadId) -> Path {
    dir(s, id).join("state")
}

fn data_key(s: &S3Storage, id: UploadId) -> Path {
    dir(s, id).join("data")
}

fn tail_key(s: &S3Storage, id: UploadId, name: &str) -> Path {
    dir(s, id).join(name)
}

/// Owners are names of identities: hashed, so any name makes a key.
fn owner_dir(s: &S3Storage, owner: &str) -> Path {
    let h = Digest::sha256_of(owner.as_bytes());
    s.key(&format!("upload-owners/{}", &h.hex()[..32]))
}

fn part_size(parts_so_far: usize) -> usize {
    PART_SIZE * (1 + parts_so_far / 1000)
}

/// Holds this process's lock on session `id` for as long as it lives.
struct SessionLock {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

async fn lock(s: &S3Storage, id: UploadId) -> SessionLock {
    let m = {
        let mut map = s.sessions.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds (or waits for) any more.
        map.retain(|_, m| Arc::strong_count(m) > 1);
        map.entry(id).or_default().clone()
    };
    SessionLock {
        _guard: m.lock_owned().await,
    }
}

async fn load(s: &S3Storage, id: UploadId) -> Result<Option<Loaded>, StorageError> {
    let got = match s.store.get(&state_key(s, id)).await {
        Ok(g) => g,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(store_err("reading an upload session")(e)),
    };
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    let bytes = got
        .bytes()
        .await
        .map_err(store_err("reading an upload session"))?;
    let state: State =
        serde_json::from_slice(&bytes).map_err(encode_err("reading an upload session"))?;
    Ok(Some(Loaded { state, version }))
}

/// The session `id` of `repo`, or `UploadUnknown` (also once it expired).
async fn session(s: &S3Storage, repo: &RepoName, id: UploadId) -> Result<Loaded, StorageError> {
    let Some(loaded) = load(s, id).await? else {
        return Err(StorageError::UploadUnknown);
    };
    if loaded.state.repository != repo.as_str() {
        return Err(StorageError::UploadUnknown);
    }
    let idle = now_ms().saturating_sub(loaded.state.touched_ms);
    if u128::from(idle) > s.upload_limits.ttl.as_millis() {
        return Err(StorageError::UploadUnknown);
    }
    Ok(loaded)
}

pub async fn start(s: &S3Storage, repo: &RepoName, owner: &str) -> Result<UploadId, StorageError> {
    let limit = s.upload_limits.max_per_owner;
    let owners = owner_dir(s, owner);
    if limit > 0 {
        let open = s.list_all(&owners, "upload sessions").await?.len();
        if open >= limit {
            return Err(StorageError::TooManyUploads { limit });
        }
    }
    let id = UploadId::new_random();
    let multipart = s
        .store
        .create_multipart(&data_key(s, id))
        .await
        .map_err(store_err("starting an upload session"))?;
    let state = State {
        repository: repo.to_string(),
        owner: owner.to_string(),
        touched_ms: now_ms(),
        offset: 0,
        multipart,
        parts: Vec::new(),
        tail: None,
        tail_size: 0,
        sha256: ResumableSha256::default().save(),
    };
    // The marker first: a session is never uncounted.
    s.put_bytes(
        &owners.clone().join(id.to_string()),
        Bytes::new(),
        "an upload marker",
    )
    .await?;
    let body = serde_json::to_vec(&state).map_err(encode_err("encoding an upload session"))?;
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    s.store
        .put_opts(&state_key(s, id), PutPayload::from(body), opts)
        .await
        .map_err(store_err("opening an upload session"))?;
    Ok(id)
}

pub async fn offset(s: &S3Storage, repo: &RepoName, id: UploadId) -> Result<u64, StorageError> {
    Ok(session(s, repo, id).await?.state.offset)
}

/// What a body brought: parts already uploaded, the bytes left over (less
/// than a part), the running hash and the byte count.
struct Fed {
    parts: Vec<Part>,
    rest: Vec<Bytes>,
    hasher: ResumableSha256,
    n: u64,
}

/// Reads the session's tail and then `body`, cutting full parts off as
/// they fill (a few in flight at once).
async fn feed(
    s: &S3Storage,
    id: UploadId,
    state: &State,
    body: Option<ByteStream>,
    expected_len: Option<u64>,
) -> Result<Fed, StorageError> {
    let mut hasher = ResumableSha256::restore(&state.sha256).ok_or_else(|| StorageError::Io {
        context: format!("reading upload session {id}"),
        source: std::io::Error::other("its saved hash state is damaged"),
    })?;
    let mut rest: Vec<Bytes> = Vec::new();
    let mut rest_len = 0usize;
    if let Some(name) = &state.tail {
        let tail = s
            .get_optional(&tail_key(s, id, name), "an upload's tail")
            .await?
            .ok_or_else(|| StorageError::Io {
                context: format!("reading upload session {id}"),
                source: std::io::Error::other("its tail object is missing"),
            })?;
        if tail.len() as u64 != state.tail_size {
            return Err(StorageError::Io {
                context: format!("reading upload session {id}"),
                source: std::io::Error::other("its tail object has the wrong size"),
            });
        }
        rest_len = tail.len();
        rest.push(tail);
    }
    let data = data_key(s, id);
    let mut next_index = state.parts.len();
    let mut in_flight = FuturesOrdered::new();
    let mut parts = Vec::new();
    let mut n = 0u64;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StorageError::Body)?;
            hasher.update(&chunk);
            n += chunk.len() as u64;
            rest_len += chunk.len();
            rest.push(chunk);
            if rest_len >= part_size(next_index) {
                if next_index >= MAX_PARTS {
                    return Err(StorageError::Io {
                        context: format!("upload session {id}"),
                        source: std::io::Error::other("the upload has too many parts"),
                    });
                }
                let payload: PutPayload = std::mem::take(&mut rest).into_iter().collect();
                let size = rest_len as u64;
                rest_len = 0;
                let (store, data, multipart) =
                    (s.store.clone(), data.clone(), state.multipart.clone());
                let index = next_index;
                next_index += 1;
                in_flight.push_back(async move {
                    store
                        .put_part(&data, &multipart, index, payload)
                        .await
                        .map(|p| Part {
                            etag: p.content_id,
                            size,
                        })
                });
                if in_flight.len() >= PARTS_IN_FLIGHT
                    && let Some(done) = in_flight.next().await
                {
                    parts.push(done.map_err(store_err("uploading a part"))?);
                }
            }
        }
    }
    while let Some(done) = in_flight.next().await {
        parts.push(done.map_err(store_err("uploading a part"))?);
    }
    check_len(expected_len, n)?;
    Ok(Fed {
        parts,
        rest,
        hasher,
        n,
    })
}

/// Replaces the state against the version it was read at; a lost race is
/// the client's offset problem (another request moved the session on).
async fn save(
    s: &S3Storage,
    id: UploadId,
    version: UpdateVersion,
    state: &State,
) -> Result<(), StorageError> {
    let body = serde_json::to_vec(state).map_err(encode_err("encoding an upload session"))?;
    let opts = PutOptions {
        mode: PutMode::Update(version),
        ..Default::default()
    };
    match s
        .store
        .put_opts(&state_key(s, id), PutPayload::from(body), opts)
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::Precondition { .. }) => {
            let have = load(s, id).await?.map_or(0, |l| l.state.offset);
            Err(StorageError::OffsetMismatch { have })
        }
        Err(e) => Err(store_err("recording upload progress")(e)),
    }
}

pub async fn append(
    s: &S3Storage,
    repo: &RepoName,
    id: UploadId,
    start: Option<u64>,
    body: ByteStream,
    expected_len: Option<u64>,
) -> Result<u64, StorageError> {
    let _lock = lock(s, id).await;
    let Loaded { mut state, version } = session(s, repo, id).await?;
    if let Some(start) = start
        && start != state.offset
    {
        return Err(StorageError::OffsetMismatch { have: state.offset });
    }
    let fed = feed(s, id, &state, Some(body), expected_len).await?;
    let old_tail = state.tail.take();
    let rest_len: usize = fed.rest.iter().map(Bytes::len).sum();
    if rest_len > 0 {
        let name = format!("tail-{}", uuid::Uuid::new_v4().simple());
        let payload: PutPayload = fed.rest.into_iter().collect();
        s.store
            .put(&tail_key(s, id, &name), payload)
            .await
            .map_err(store_err("writing an upload's tail"))?;
        state.tail = Some(name);
    }
    state.tail_size = rest_len as u64;
    state.parts.extend(fed.parts);
    state.offset += fed.n;
    state.sha256 = fed.hasher.save();
    state.touched_ms = now_ms();
    save(s, id, version, &state).await?;
    if let Some(old) = old_tail {
        let _ = s
            .delete_quietly(&tail_key(s, id, &old), "an upload's old tail")
            .await;
    }
    Ok(state.offset)
}

pub async fn complete(
    s: &S3Storage,
    repo: &RepoName,
    id: UploadId,
    digest: &Digest,
    body: Option<ByteStream>,
    expected_len: Option<u64>,
) -> Result<u64, StorageError> {
    let _lock = lock(s, id).await;
    let Loaded { state, .. } = session(s, repo, id).await?;
    // The whole blob in this request (POST, then PUT with the body): the
    // digest is known, so it streams straight to its key, verified before
    // it is completed there, with no assembly and no copy.
    if state.offset == 0
        && let Some(body) = body
    {
        let size = s.store_verified(digest, body, expected_len).await?;
        s.link(repo, digest, size).await?;
        remove(s, id, &state).await;
        return Ok(size);
    }
    let fed = feed(s, id, &state, body, expected_len).await?;
    let size = state.offset + fed.n;
    let sha256 = Digest::from_sha256_bytes(fed.hasher.finish());
    if digest.algorithm() == Algorithm::Sha256 && &sha256 != digest {
        // The session stays as it was: the client may retry or cancel.
        return Err(StorageError::DigestMismatch {
            expected: digest.clone(),
            actual: sha256,
        });
    }
    let blob = s.blob_key(digest);
    let mut parts = state.parts.clone();
    parts.extend(fed.parts);
    if parts.is_empty() && digest.algorithm() == Algorithm::Sha256 {
        // Never a full part: the whole blob is in memory, verified.
        let payload: PutPayload = fed.rest.into_iter().collect();
        if !s.exists(&blob, "a blob").await? {
            s.store
                .put(&blob, payload)
                .await
                .map_err(store_err("writing a blob"))?;
        }
    } else {
        let data = data_key(s, id);
        let rest_len: usize = fed.rest.iter().map(Bytes::len).sum();
        if rest_len > 0 || parts.is_empty() {
            let payload: PutPayload = fed.rest.into_iter().collect();
            let last = s
                .store
                .put_part(&data, &state.multipart, parts.len(), payload)
                .await
                .map_err(store_err("uploading the last part"))?;
            parts.push(Part {
                etag: last.content_id,
                size: rest_len as u64,
            });
        }
        let ids = parts
            .iter()
            .map(|p| PartId {
                content_id: p.etag.clone(),
            })
            .collect();
        s.store
            .complete_multipart(&data, &state.multipart, ids)
            .await
            .map_err(store_err("assembling an upload"))?;
        if digest.algorithm() != Algorithm::Sha256 {
            let actual = hash_object(s, &data, digest.algorithm()).await?;
            if &actual != digest {
                // The parts are assembled now: the session cannot go on.
                remove(s, id, &state).await;
                return Err(StorageError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        if !s.exists(&blob, "a blob").await? {
            copy(s, &data, &blob, size).await?;
        }
    }
    s.link(repo, digest, size).await?;
    remove(s, id, &state).await;
    Ok(size)
}

/// Hashes a stored object by reading it back.
async fn hash_object(
    s: &S3Storage,
    key: &Path,
    algorithm: Algorithm,
) -> Result<Digest, StorageError> {
    let got = s
        .reads
        .get(key)
        .await
        .map_err(store_err("reading an upload back"))?;
    let mut stream = got.into_stream();
    let mut hasher = algorithm.hasher();
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk.map_err(store_err("reading an upload back"))?);
    }
    Ok(hasher.finish())
}

/// Copies an assembled upload to its blob key: server-side where the store
/// allows it, else streamed through this process part by part.
async fn copy(s: &S3Storage, from: &Path, to: &Path, size: u64) -> Result<(), StorageError> {
    if size <= COPY_OBJECT_LIMIT {
        return s
            .store
            .copy(from, to)
            .await
            .map_err(store_err("publishing a blob"));
    }
    let got = s
        .reads
        .get(from)
        .await
        .map_err(store_err("reading an upload back"))?;
    let upload = s
        .store
        .put_multipart(to)
        .await
        .map_err(store_err("publishing a blob"))?;
    let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE * 4);
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = w.abort().await;
                return Err(store_err("reading an upload back")(e));
            }
        };
        w.wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(store_err("publishing a blob"))?;
        w.put(chunk);
    }
    w.finish().await.map_err(store_err("publishing a blob"))?;
    Ok(())
}

/// Removes a session's objects (state first, so every replica sees it gone
/// at once) and aborts its multipart upload; failures are logged, and what
/// is left is the sweep's.
async fn remove(s: &S3Storage, id: UploadId, state: &State) {
    let _ = s
        .delete_quietly(&state_key(s, id), "an upload session")
        .await;
    let data = data_key(s, id);
    if let Err(e) = s.store.abort_multipart(&data, &state.multipart).await
        && !is_not_found(&e)
    {
        tracing::debug!(upload = %id, error = %e, "aborting an upload's multipart upload");
    }
    if let Ok(objects) = s.list_all(&dir(s, id), "an upload session").await {
        for o in objects {
            let _ = s.delete_quietly(&o.location, "an upload's objects").await;
        }
    }
    let marker = owner_dir(s, &state.owner).join(id.to_string());
    let _ = s.delete_quietly(&marker, "an upload marker").await;
}

pub async fn cancel(s: &S3Storage, repo: &RepoName, id: UploadId) -> Result<(), StorageError> {
    let _lock = lock(s, id).await;
    let Loaded { state, .. } = session(s, repo, id).await?;
    remove(s, id, &state).await;
    Ok(())
}

/// Removes sessions idle past the TTL (and leftovers of sessions whose
/// start was cut off, once older than the TTL); returns how many sessions.
pub async fn sweep(s: &S3Storage) -> Result<usize, StorageError> {
    let ttl_ms = s.upload_limits.ttl.as_millis() as i64;
    let now = now_ms() as i64;
    let root = s.key("uploads");
    let objects = s.list_all(&root, "upload sessions").await?;
    // id → (has a state, newest object's age)
    let mut seen: std::collections::BTreeMap<String, (bool, i64)> = Default::default();
    let skip = root.parts().count();
    for o in &objects {
        let mut parts = o.location.parts().skip(skip);
        let Some(id) = parts.next() else { continue };
        let is_state = parts.next().is_some_and(|p| p.as_ref() == "state");
        let age = now - o.last_modified.timestamp_millis();
        let entry = seen
            .entry(id.as_ref().to_string())
            .or_insert((false, i64::MAX));
        entry.0 |= is_state;
        entry.1 = entry.1.min(age);
    }
    let mut removed = 0;
    for (id_text, (has_state, youngest_age)) in seen {
        let Ok(id) = id_text.parse::<UploadId>() else {
            continue;
        };
        if youngest_age <= ttl_ms {
            continue;
        }
        let _lock = lock(s, id).await;
        if has_state {
            let Some(loaded) = load(s, id).await? else {
                continue;
            };
            if (now - loaded.state.touched_ms as i64) <= ttl_ms {
                continue;
            }
            remove(s, id, &loaded.state).await;
            tracing::info!(upload = %id, repository = %loaded.state.repository, "upload session expired");
            removed += 1;
        } else {
            for o in s.list_all(&dir(s, id), "an upload session").await? {
                let _ = s.delete_quietly(&o.location, "an upload's objects").await;
            }
        }
    }
    // Markers whose session is gone (a start cut off before its state).
    let markers = s
        .list_all(&s.key("upload-owners"), "upload markers")
        .await?;
    for m in markers {
        let age = now - m.last_modified.timestamp_millis();
        if age <= ttl_ms {
            continue;
        }
        if let Some(Ok(id)) = m.location.filename().map(str::parse::<UploadId>)
            && load(s, id).await?.is_none()
        {
            let _ = s.delete_quietly(&m.location, "an upload marker").await;
        }
    }
    Ok(removed)
}
