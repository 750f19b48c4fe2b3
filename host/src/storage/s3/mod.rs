//! The object-storage backend: one bucket (and key prefix) on S3 or an
//! S3-compatible store, through the `object_store` crate, shared by any
//! number of stateless replicas.
//!
//! Layout under the prefix (every name is built from a validated
//! `RepoName`, `Digest`, `Tag` or `UploadId`, never from raw input):
//!
//! ```text
//! blobs/<alg>/<hex>                                    content, stored once per bucket
//! repositories/<name…>/_layers/<alg>/<hex>             blob linked into a repository (its size)
//! repositories/<name…>/_manifests/revisions/<alg>/<hex> manifest in a repository (JSON: media type, subject)
//! repositories/<name…>/_manifests/tags/<tag>           tag → digest
//! repositories/<name…>/_referrers/<alg>/<subject hex>/<alg>-<hex>  referrer descriptor
//! uploads/<id>/state                                   upload session (JSON), replaced by conditional writes
//! uploads/<id>/tail-<n>                                bytes received that are not in a part yet
//! uploads/<id>/data                                    the session's multipart upload
//! upload-owners/<owner hash>/<id>                      one marker per open session, to count them
//! auth/token-signing-key.p8                            Gantry's token key, shared by every replica
//! readyz/<replica>                                     the readiness probe's object
//! ```
//!
//! No object's key is a prefix of another's followed by `/` (some stores
//! cannot hold `a` beside `a/b`): name components cannot start with `_`,
//! and every leaf sits under a `_`-named or fixed directory.
//!
//! Visibility, which is what replicas rely on: an object appears whole or
//! not at all (S3 `PUT` and `CompleteMultipartUpload` are atomic). A blob's
//! content is verified before it is written under `blobs/` (a multipart
//! upload is only completed once the digest matches); a link is written
//! after its blob, a revision after its manifest's bytes, a tag after its
//! revision. Reads are strongly consistent on S3 (and on moto); a replica's
//! manifest cache serves an entry for at most [`CACHE_TTL`].

mod resume;
mod upload;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    WriteMultipart,
};

use super::cache::ManifestCache;
use super::{
    BlobRead, ByteRange, ByteStream, Referrer, Storage, StorageError, StoredManifest, UploadLimits,
    check_len,
};
use crate::oci::{Digest, Reference, RepoName, Tag, UploadId};
use crate::telemetry::metrics::metrics;

/// How long a replica serves a manifest or tag from memory before asking
/// the store again: the bound on how stale a tag moved (or a manifest
/// deleted) by another replica can be here.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// Bodies are sent to the store in parts of this size (S3 wants at least
/// 5 MiB for every part but the last). Smaller blobs are one `PUT`.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one upload in flight at once: enough to keep the store busy
/// while the next part arrives, and a bound on memory (about this many
/// parts, plus the one being filled, per upload).
const PARTS_IN_FLIGHT: usize = 3;

/// What an object store must offer: objects, and multipart uploads that can
/// be continued by another process (S3's `UploadPart` by upload id).
pub trait Store: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> Store for T {}

/// Object-store-backed storage.
pub struct S3Storage {
    store: Arc<dyn Store>,
    /// Blob reads stream for as long as the client takes, so they go
    /// through a client without a whole-request timeout.
    reads: Arc<dyn ObjectStore>,
    /// Signs redirect URLs when `redirect_blobs` is set.
    signer: Option<(Arc<dyn object_store::signer::Signer>, Duration)>,
    prefix: Path,
    cache: ManifestCache,
    upload_limits: UploadLimits,
    /// This process's requests on each session, one at a time.
    sessions: Mutex<std::collections::HashMap<UploadId, Arc<tokio::sync::Mutex<()>>>>,
    replica: String,
}

/// What a revision object records about a manifest in a repository.
#[derive(serde::Serialize, serde::Deserialize)]
struct Revision {
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
}

fn store_err(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> StorageError {
    let context = context.into();
    move |e| StorageError::Io {
        context,
        source: io::Error::other(e),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

fn encode_err(context: &'static str) -> impl FnOnce(serde_json::Error) -> StorageError {
    move |e| StorageError::Io {
        context: context.into(),
        source: io::Error::other(e),
    }
}

impl S3Storage {
    /// Opens the bucket described by `config`: credentials from the config
    /// or the standard `AWS_*` environment, and a first request to make
    /// sure the bucket answers.
    pub async fn open(
        config: &crate::config::S3Config,
        limits: UploadLimits,
    ) -> Result<S3Storage, StorageError> {
        let secret = match &config.secret_access_key_file {
            Some(path) => Some(
                tokio::fs::read_to_string(path)
                    .await
                    .map(|s| s.trim().to_string())
                    .map_err(|e| StorageError::Io {
                        context: format!(
                            "reading storage.s3.secret_access_key_file {}",
                            path.display()
                        ),
                        source: e,
                    })?,
            ),
            None => None,
        };
        let build = |whole_request_timeout: Option<Duration>| {
            let mut options = object_store::ClientOptions::new()
                .with_allow_http(config.allow_http)
                .with_connect_timeout(Duration::from_secs(5));
            options = match whole_request_timeout {
                Some(t) => options.with_timeout(t),
                None => options.with_timeout_disabled(),
            };
            let retry = object_store::RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(20),
                ..Default::default()
            };
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&config.bucket)
                .with_region(&config.region)
                .with_allow_http(config.allow_http)
                .with_client_options(options)
                .with_retry(retry);
            if let Some(e) = &config.endpoint {
                b = b.with_endpoint(e);
            }
            if let (Some(id), Some(secret)) = (&config.access_key_id, &secret) {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
            }
            b.build().map_err(store_err("configuring the S3 client"))
        };
        let store = Arc::new(build(Some(Duration::from_secs(60)))?);
        let reads = Arc::new(build(None)?);
        let signer: Option<(Arc<dyn object_store::signer::Signer>, Duration)> =
            config.redirect_blobs.then(|| {
                (
                    reads.clone() as Arc<dyn object_store::signer::Signer>,
                    Duration::from_secs(config.redirect_seconds),
                )
            });
        let s = S3Storage::with_store(store, reads, signer, &config.prefix, limits);
        s.check_writable().await.map_err(|e| StorageError::Io {
            context: format!(
                "reaching bucket `{}`{}",
                config.bucket,
                config
                    .endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
            source: io::Error::other(e),
        })?;
        Ok(s)
    }

    /// Storage on any object store (the in-memory one in tests).
    pub fn with_store(
        store: Arc<dyn Store>,
        reads: Arc<dyn ObjectStore>,
        signer: Option<(Arc<dyn object_store::signer::Signer>, Duration)>,
        prefix: &str,
        limits: UploadLimits,
    ) -> S3Storage {
        S3Storage {
            store,
            reads,
            signer,
            prefix: Path::from(prefix),
            cache: ManifestCache::with_ttl(CACHE_TTL),
            upload_limits: limits,
            sessions: Mutex::default(),
            replica: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// In memory, for tests: every replica made from one `InMemory` shares it.
    pub fn in_memory(store: Arc<object_store::memory::InMemory>, limits: UploadLimits) -> Self {
        S3Storage::with_store(store.clone(), store, None, "", limits)
    }

    /// A key under the prefix.
    fn key(&self, rel: &str) -> Path {
        let rel = Path::from(rel);
        self.prefix.parts().chain(rel.parts()).collect()
    }

    fn blob_key(&self, d: &Digest) -> Path {
        self.key(&format!("blobs/{}/{}", d.algorithm().as_str(), d.hex()))
    }

    fn repo_rel(repo: &RepoName) -> String {
        format!("repositories/{repo}")
    }

    fn layer_key(&self, repo: &RepoName, d: &Digest) -> Path {
        self.key(&format!(
            "{}/_layers/{}/{}",
            Self::repo_rel(repo),
            d.algorithm().as_str(),
            d.hex()
        ))
    }

    fn revision_key(&self, repo: &RepoName, d: &Digest) -> Path {
        self.key(&format!(
            "{}/_manifests/revisions/{}/{}",
            Self::repo_rel(repo),
            d.algorithm().as_str(),
            d.hex()
        ))
    }

    fn tags_key(&self, repo: &RepoName) -> Path {
        self.key(&format!("{}/_manifests/tags", Self::repo_rel(repo)))
    }

    fn tag_key(&self, repo: &RepoName, tag: &Tag) -> Path {
        self.tags_key(repo).join(tag.as_str())
    }

    fn referrers_key(&self, repo: &RepoName, subject: &Digest) -> Path {
        self.key(&format!(
            "{}/_referrers/{}/{}",
            Self::repo_rel(repo),
            subject.algorithm().as_str(),
            subject.hex()
        ))
    }

    /// The object's bytes, or `None` when there is none.
    async fn get_optional(&self, key: &Path, what: &str) -> Result<Option<Bytes>, StorageError> {
        match self.store.get(key).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(store_err(format!("reading {what}"))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(store_err(format!("reading {what}"))(e)),
        }
    }

    async fn exists(&self, key: &Path, what: &str) -> Result<bool, StorageError> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(store_err(format!("looking up {what}"))(e)),
        }
    }

    async fn put_bytes(&self, key: &Path, bytes: Bytes, what: &str) -> Result<(), StorageError> {
        self.store
            .put(key, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(store_err(format!("writing {what}")))
    }

    /// Deletes, treating "already gone" as done.
    async fn delete_quietly(&self, key: &Path, what: &str) -> Result<(), StorageError> {
        match self.store.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(store_err(format!("deleting {what}"))(e)),
        }
    }

    /// Every object under `prefix` (recursively).
    async fn list_all(
        &self,
        prefix: &Path,
        what: &str,
    ) -> Result<Vec<object_store::ObjectMeta>, StorageError> {
        self.store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(store_err(format!("listing {what}")))
    }

    /// Writes the link that makes `digest` (of `size` bytes) visible in `repo`.
    async fn link(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<(), StorageError> {
        self.put_bytes(
            &self.layer_key(repo, digest),
            Bytes::from(size.to_string()),
            "a blob link",
        )
        .await
    }

    /// Stores `body` as the blob `digest`, verifying it first: small bodies
    /// are held whole and written with one `PUT`; larger ones go up as a
    /// multipart upload that is completed only if the digest (and length)
    /// match, and aborted otherwise, so nothing unverified ever appears
    /// under `blobs/`. Returns the size.
    async fn store_verified(
        &self,
        digest: &Digest,
        mut body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<u64, StorageError> {
        let key = self.blob_key(digest);
        let mut hasher = digest.algorithm().hasher();
        // Content already there (another repository, another replica) is
        // hashed to answer honestly, and not sent again.
        let known = self.exists(&key, "a blob").await?;
        let mut held: Vec<Bytes> = Vec::new();
        let mut held_len = 0usize;
        let mut n = 0u64;
        let mut upload: Option<WriteMultipart> = None;
        let outcome: Result<(), StorageError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StorageError::Body)?;
                hasher.update(&chunk);
                n += chunk.len() as u64;
                if known {
                    continue;
                }
                if let Some(w) = upload.as_mut() {
                    w.wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(store_err("uploading a blob"))?;
                    w.put(chunk);
                    continue;
                }
                held_len += chunk.len();
                held.push(chunk);
                if held_len > PART_SIZE {
                    let started = self
                        .store
                        .put_multipart(&key)
                        .await
                        .map_err(store_err("starting a blob upload"))?;
                    let mut w = WriteMultipart::new_with_chunk_size(started, PART_SIZE);
                    for c in held.drain(..) {
                        w.put(c);
                    }
                    upload = Some(w);
                }
            }
            Ok(())
        }
        .await;
        let verdict = outcome
            .and_then(|()| check_len(expected_len, n))
            .and_then(|()| {
                let actual = hasher.finish();
                if &actual == digest {
                    Ok(())
                } else {
                    Err(StorageError::DigestMismatch {
                        expected: digest.clone(),
                        actual,
                    })
                }
            });
        if let Err(e) = verdict {
            if let Some(w) = upload {
                if let Err(abort) = w.abort().await {
                    tracing::warn!(error = %abort, %digest, "aborting a refused blob upload failed; the store's lifecycle rule for incomplete multipart uploads removes it");
                }
            }
            return Err(e);
        }
        if known {
            return Ok(n);
        }
        match upload {
            Some(w) => {
                w.finish()
                    .await
                    .map_err(store_err("completing a blob upload"))?;
            }
            None => {
                let payload: PutPayload = held.into_iter().collect();
                self.store
                    .put(&key, payload)
                    .await
                    .map_err(store_err("writing a blob"))?;
            }
        }
        Ok(n)
    }

    /// The shared token signing key (PKCS#8 DER): read from the bucket, or
    /// created there exactly once (a conditional create: when two replicas
    /// race on first start, one key wins and both use it).
    pub async fn shared_signing_key(&self) -> Result<Vec<u8>, StorageError> {
        let key = self.key("auth/token-signing-key.p8");
        if let Some(bytes) = self.get_optional(&key, "the token signing key").await? {
            return Ok(bytes.to_vec());
        }
        let fresh = crate::auth::token::SigningKey::generate().map_err(|e| StorageError::Io {
            context: "generating the token signing key".into(),
            source: io::Error::other(e),
        })?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(fresh.pkcs8.clone()), opts)
            .await
        {
            Ok(_) => {
                tracing::info!(key = %key, "token signing key created in the bucket");
                Ok(fresh.pkcs8)
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => self
                .get_optional(&key, "the token signing key")
                .await?
                .map(|b| b.to_vec())
                .ok_or_else(|| StorageError::Io {
                    context: "reading the token signing key".into(),
                    source: io::Error::other("it was created and is gone again"),
                }),
            Err(e) => Err(store_err("creating the token signing key")(e)),
        }
    }

    async fn manifest_from_store(
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
        let (rev_key, blob_key) = (self.revision_key(repo, &digest), self.blob_key(&digest));
        let (rev, bytes) = futures_util::try_join!(
            self.get_optional(&rev_key, "a manifest revision"),
            self.get_optional(&blob_key, "a manifest"),
        )?;
        let (Some(rev), Some(bytes)) = (rev, bytes) else {
            return Ok(None);
        };
        let rev: Revision =
            serde_json::from_slice(&rev).map_err(encode_err("reading a revision"))?;
        Ok(Some(StoredManifest {
            digest,
            media_type: rev.media_type,
            bytes,
        }))
    }

    /// A name for this process's probe object (one per replica).
    fn probe_key(&self) -> Path {
        self.key(&format!("readyz/{}", self.replica))
    }
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    async fn check_writable(&self) -> Result<(), StorageError> {
        self.put_bytes(
            &self.probe_key(),
            Bytes::from_static(b"ready"),
            "the readiness probe",
        )
        .await
    }

    async fn blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, StorageError> {
        let Some(link) = self
            .get_optional(&self.layer_key(repo, digest), "a blob link")
            .await?
        else {
            return Ok(None);
        };
        if let Some(size) = std::str::from_utf8(&link)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return Ok(Some(size));
        }
        // A link without its size: ask the blob.
        match self.store.head(&self.blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(store_err("looking up a blob")(e)),
        }
    }

    async fn read_blob(
        &self,
        _repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead, StorageError> {
        // The link was checked by `blob_size` (the contract); one request here.
        let opts = GetOptions {
            range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)),
            ..Default::default()
        };
        let got = match self.reads.get_opts(&self.blob_key(digest), opts).await {
            Ok(g) => g,
            Err(e) if is_not_found(&e) => return Err(StorageError::BlobUnknown(digest.clone())),
            Err(e) => return Err(store_err("reading a blob")(e)),
        };
        let size = got.meta.size;
        metrics().read(range.map_or(size, |r| r.len()));
        let body = got.into_stream().map_err(io::Error::other);
        Ok(BlobRead {
            size,
            body: Box::pin(body),
        })
    }

    async fn blob_redirect(&self, digest: &Digest) -> Result<Option<url::Url>, StorageError> {
        let Some((signer, ttl)) = &self.signer else {
            return Ok(None);
        };
        signer
            .signed_url(http::Method::GET, &self.blob_key(digest), *ttl)
            .await
            .map(Some)
            .map_err(store_err("signing a blob URL"))
    }

    async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<u64, StorageError> {
        let n = self.store_verified(digest, body, expected_len).await?;
        self.link(repo, digest, n).await?;
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
        self.link(repo, digest, size).await?;
        Ok(Some(size))
    }

    async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        let link = self.layer_key(repo, digest);
        if !self.exists(&link, "a blob link").await? {
            return Err(StorageError::BlobUnknown(digest.clone()));
        }
        self.delete_quietly(&link, "a blob link").await
    }

    async fn start_upload(&self, repo: &RepoName, owner: &str) -> Result<UploadId, StorageError> {
        upload::start(self, repo, owner).await
    }

    async fn sweep_uploads(&self) -> Result<usize, StorageError> {
        upload::sweep(self).await
    }

    async fn upload_offset(&self, repo: &RepoName, id: UploadId) -> Result<u64, StorageError> {
        upload::offset(self, repo, id).await
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
        if let Some(m) = self.cache.get(repo, reference) {
            metrics().read(m.bytes.len() as u64);
            return Ok(Some(m));
        }
        let generation = self.cache.generation();
        let Some(m) = self.manifest_from_store(repo, reference).await? else {
            return Ok(None);
        };
        let m = Arc::new(m);
        metrics().read(m.bytes.len() as u64);
        self.cache
            .insert(generation, repo, reference.clone(), m.clone());
        Ok(Some(m))
    }

    async fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        let Some(bytes) = self.get_optional(&self.tag_key(repo, tag), "a tag").await? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim().parse().map(Some).map_err(|e| StorageError::Io {
            context: format!("reading tag {tag}"),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: StoredManifest,
        tag: Option<&Tag>,
        referrer: Option<Referrer>,
    ) -> Result<(), StorageError> {
        metrics().wrote(manifest.bytes.len() as u64, true);
        let d = &manifest.digest;
        let rev = Revision {
            media_type: manifest.media_type.clone(),
            subject: referrer.as_ref().map(|r| r.subject.to_string()),
        };
        let rev = serde_json::to_vec(&rev).map_err(encode_err("encoding a revision"))?;
        // Order matters for what other replicas can see mid-way: content,
        // then the revision that makes it reachable by digest, then the
        // referrer entry, then the tag.
        self.put_bytes(&self.blob_key(d), manifest.bytes.clone(), "a manifest")
            .await?;
        self.put_bytes(
            &self.revision_key(repo, d),
            Bytes::from(rev),
            "a manifest revision",
        )
        .await?;
        if let Some(r) = &referrer {
            let desc =
                serde_json::to_vec(&r.descriptor).map_err(encode_err("encoding a referrer"))?;
            let key = self.referrers_key(repo, &r.subject).join(format!(
                "{}-{}",
                d.algorithm().as_str(),
                d.hex()
            ));
            self.put_bytes(&key, Bytes::from(desc), "a referrer")
                .await?;
        }
        if let Some(t) = tag {
            self.put_bytes(&self.tag_key(repo, t), Bytes::from(d.to_string()), "a tag")
                .await?;
        }
        self.cache.invalidate(repo);
        Ok(())
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        let revision = self.revision_key(repo, digest);
        let Some(rev) = self.get_optional(&revision, "a manifest revision").await? else {
            return Err(StorageError::ManifestUnknown(digest.to_string()));
        };
        // Tags first: a failure part-way leaves the manifest reachable by
        // digest, never a tag pointing at nothing.
        let target = digest.to_string();
        for meta in self.list_all(&self.tags_key(repo), "tags").await? {
            if let Some(bytes) = self.get_optional(&meta.location, "a tag").await?
                && bytes.trim_ascii() == target.as_bytes()
            {
                self.delete_quietly(&meta.location, "a tag").await?;
            }
        }
        if let Ok(rev) = serde_json::from_slice::<Revision>(&rev)
            && let Some(subject) = rev.subject.and_then(|s| s.parse::<Digest>().ok())
        {
            let key = self.referrers_key(repo, &subject).join(format!(
                "{}-{}",
                digest.algorithm().as_str(),
                digest.hex()
            ));
            self.delete_quietly(&key, "a referrer").await?;
        }
        self.delete_quietly(&revision, "a manifest revision")
            .await?;
        self.cache.invalidate(repo);
        Ok(())
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<(), StorageError> {
        let key = self.tag_key(repo, tag);
        let existed = self.exists(&key, "a tag").await?;
        if existed {
            self.delete_quietly(&key, "a tag").await?;
        }
        self.cache.invalidate(repo);
        if existed {
            Ok(())
        } else {
            Err(StorageError::ManifestUnknown(tag.to_string()))
        }
    }

    async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError> {
        let dir = self.key(&Self::repo_rel(repo));
        let listing = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(store_err("listing a repository"))?;
        let known = listing
            .common_prefixes
            .iter()
            .any(|p| matches!(p.filename(), Some("_manifests") | Some("_layers")));
        if !known {
            return Ok(None);
        }
        let mut tags: Vec<String> = self
            .list_all(&self.tags_key(repo), "tags")
            .await?
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect();
        tags.sort();
        Ok(Some(tags))
    }

    async fn repositories(&self) -> Result<Vec<RepoName>, StorageError> {
        let mut found = Vec::new();
        let mut stack = vec![(self.key("repositories"), String::new())];
        while let Some((dir, name)) = stack.pop() {
            let listing = self
                .store
                .list_with_delimiter(Some(&dir))
                .await
                .map_err(store_err("listing repositories"))?;
            let mut is_repo = false;
            for p in listing.common_prefixes {
                let Some(part) = p.filename() else { continue };
                if part == "_manifests" {
                    is_repo = true;
                } else if !part.starts_with('_') {
                    let child = if name.is_empty() {
                        part.to_string()
                    } else {
                        format!("{name}/{part}")
                    };
                    stack.push((p.clone(), child));
                }
            }
            if is_repo && let Ok(repo) = name.parse::<RepoName>() {
                found.push(repo);
            }
        }
        found.sort();
        Ok(found)
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<serde_json::Value>, StorageError> {
        let mut metas = self
            .list_all(&self.referrers_key(repo, subject), "referrers")
            .await?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let bodies: Vec<Option<Bytes>> = futures_util::stream::iter(metas)
            .map(|m| async move { self.get_optional(&m.location, "a referrer").await })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(bodies
            .into_iter()
            .flatten()
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect())
    }
}
