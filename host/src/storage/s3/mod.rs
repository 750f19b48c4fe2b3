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
const PARTS_IN_FLIGHT: usize = 6;

/// What an object store must offer: objects, and multipart uploads that can
/// be continued by another process (S3's `UploadPart` by upload id).
pub trait Store: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> Store for T {}

/// `[storage.s3]`: one bucket (and key prefix) on an S3-compatible store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without a trailing `/` ("" for none).
    pub prefix: String,
    pub region: String,
    /// `None`: AWS.
    pub endpoint: Option<String>,
    pub allow_http: bool,
    /// Static credentials; both or neither. Neither: the standard `AWS_*`
    /// environment variables (and the rest of the AWS credential chain).
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<std::path::PathBuf>,
    /// Blob `GET`/`HEAD` answer 307 to a presigned URL.
    pub redirect_blobs: bool,
    pub redirect_seconds: u64,
    /// Send each object's and each part's SHA-256 as an S3 checksum
    /// (`x-amz-checksum-sha256`), so the store verifies every byte it
    /// keeps; `false` for stores that refuse the checksum headers.
    pub checksum: bool,
}

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
    let wrap = StorageError::io(context);
    move |e| wrap(io::Error::other(e))
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

fn encode_err(context: &'static str) -> impl FnOnce(serde_json::Error) -> StorageError {
    let wrap = StorageError::io(context);
    move |e| wrap(io::Error::other(e))
}

impl S3Storage {
    /// Opens the bucket described by `config`: credentials from the config
    /// or the standard `AWS_*` environment, and a first request to make
    /// sure the bucket answers.
    pub async fn open(config: &S3Config, limits: UploadLimits) -> Result<S3Storage, StorageError> {
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
            if config.checksum {
                // The payload's SHA-256 is computed for the signature
                // anyway; sent as a checksum it costs nothing more here.
                b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
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
            if let Some(w) = upload
                && let Err(abort) = w.abort().await
            {
                tracing::warn!(error = %abort, %digest, "aborting a refused blob upload failed; the store's lifecycle rule for incomplete multipart uploads removes it");
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

    /// A secret every replica must share (Gantry's token signing key):
    /// read from `rel` in the bucket, or created there from `fresh` exactly
    /// once (a conditional create: when replicas race on first start, one
    /// value wins and all of them use it).
    pub async fn shared_secret(
        &self,
        rel: &str,
        fresh: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Vec<u8>, StorageError> {
        let key = self.key(rel);
        if let Some(bytes) = self.get_optional(&key, rel).await? {
            return Ok(bytes.to_vec());
        }
        let value = fresh().map_err(|e| StorageError::Io {
            context: format!("creating {rel}"),
            source: io::Error::other(e),
        })?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(value.clone()), opts)
            .await
        {
            Ok(_) => {
                tracing::info!(key = %key, "shared secret created in the bucket");
                Ok(value)
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => self
                .get_optional(&key, rel)
                .await?
                .map(|b| b.to_vec())
                .ok_or_else(|| StorageError::Io {
                    context: format!("reading {rel}"),
                    source: io::Error::other("it was created and is gone again"),
                }),
            Err(e) => Err(store_err(format!("creating {rel}"))(e)),
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
        Ok(Some(StoredManifest::new(digest, rev.media_type, bytes)))
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
            .signed_url(reqwest::Method::GET, &self.blob_key(digest), *ttl)
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
        self.cache
            .read_through(repo, reference, self.manifest_from_store(repo, reference))
            .await
    }

    async fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        let Some(bytes) = self.get_optional(&self.tag_key(repo, tag), "a tag").await? else {
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

    async fn move_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expected: Option<&Digest>,
        to: &Digest,
    ) -> Result<(), StorageError> {
        let key = self.tag_key(repo, tag);
        let moved = || StorageError::TagMoved {
            tag: tag.to_string(),
        };
        let mode = match self.store.get(&key).await {
            Ok(got) => {
                let version = object_store::UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let bytes = got.bytes().await.map_err(store_err("reading a tag"))?;
                let now = Some(super::tag_text(tag, &bytes)?);
                if now.as_ref() != expected {
                    return Err(moved());
                }
                PutMode::Update(version)
            }
            Err(e) if is_not_found(&e) => {
                if expected.is_some() {
                    return Err(moved());
                }
                PutMode::Create
            }
            Err(e) => return Err(store_err("reading a tag")(e)),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(to.to_string()), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::AlreadyExists { .. }) => return Err(moved()),
            Err(e) => return Err(store_err("writing a tag")(e)),
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
        self.walk_repositories(false).await
    }

    async fn all_repositories(&self) -> Result<Vec<RepoName>, StorageError> {
        self.walk_repositories(true).await
    }

    async fn list_blob_content(&self) -> Result<Vec<super::Stored>, StorageError> {
        self.stored_under(&self.key("blobs"), 1).await
    }

    async fn list_revisions(&self, repo: &RepoName) -> Result<Vec<super::Stored>, StorageError> {
        let dir = self.key(&format!("{}/_manifests/revisions", Self::repo_rel(repo)));
        self.stored_under(&dir, 1).await
    }

    async fn list_links(&self, repo: &RepoName) -> Result<Vec<super::Stored>, StorageError> {
        let dir = self.key(&format!("{}/_layers", Self::repo_rel(repo)));
        self.stored_under(&dir, 1).await
    }

    async fn blob_content_exists(&self, digest: &Digest) -> Result<bool, StorageError> {
        self.exists(&self.blob_key(digest), "a blob").await
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StorageError> {
        self.link(repo, digest, size).await
    }

    async fn quarantine_blob(&self, digest: &Digest) -> Result<bool, StorageError> {
        let (from, to) = (self.blob_key(digest), self.quarantine_key(digest));
        match self.store.copy(&from, &to).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(store_err("setting a blob aside")(e)),
        }
        self.delete_quietly(&from, "a blob").await?;
        Ok(true)
    }

    async fn restore_blob(&self, digest: &Digest) -> Result<(), StorageError> {
        let (from, to) = (self.quarantine_key(digest), self.blob_key(digest));
        // Stored again meanwhile: that copy is as good.
        if !self.exists(&to, "a blob").await? {
            match self.store.copy(&from, &to).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(store_err("restoring a blob")(e)),
            }
        }
        self.delete_quietly(&from, "a set-aside blob").await
    }

    async fn list_quarantined(&self) -> Result<Vec<Digest>, StorageError> {
        Ok(self
            .stored_under(&self.key("gc-quarantine"), 1)
            .await?
            .into_iter()
            .map(|s| s.digest)
            .collect())
    }

    async fn purge_quarantined(&self, digest: &Digest) -> Result<(), StorageError> {
        self.delete_quietly(&self.quarantine_key(digest), "a blob")
            .await
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

impl S3Storage {
    fn quarantine_key(&self, d: &Digest) -> Path {
        self.key(&format!(
            "gc-quarantine/{}/{}",
            d.algorithm().as_str(),
            d.hex()
        ))
    }

    /// Objects `<dir>/<alg>/<hex>` (`depth` levels of algorithm directory
    /// below `dir`) as [`Stored`](super::Stored).
    async fn stored_under(
        &self,
        dir: &Path,
        depth: usize,
    ) -> Result<Vec<super::Stored>, StorageError> {
        let skip = dir.parts().count();
        let mut out = Vec::new();
        for meta in self.list_all(dir, "stored objects").await? {
            let parts: Vec<String> = meta
                .location
                .parts()
                .skip(skip)
                .map(|p| p.as_ref().to_string())
                .collect();
            if parts.len() != depth + 1 {
                continue;
            }
            let Ok(digest) = format!("{}:{}", parts[0], parts[depth]).parse::<Digest>() else {
                continue;
            };
            let modified = std::time::UNIX_EPOCH
                + Duration::from_millis(meta.last_modified.timestamp_millis().max(0) as u64);
            out.push(super::Stored {
                digest,
                size: meta.size,
                modified,
            });
        }
        Ok(out)
    }

    /// Repositories: those with manifests, or (`all`) also those holding
    /// only blob links.
    async fn walk_repositories(&self, all: bool) -> Result<Vec<RepoName>, StorageError> {
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
                if part == "_manifests" || (all && part == "_layers") {
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
}

#[cfg(test)]
mod tests {
    //! The backend against `object_store`'s in-memory store: two
    //! `S3Storage` values on one store behave as two replicas on one bucket
    //! (each with its own cache and session locks). The same code runs
    //! against a real S3 API (moto) in the black-box tests.

    use std::time::Duration;

    use object_store::memory::InMemory;

    use super::*;

    fn replicas(limits: UploadLimits) -> (Arc<InMemory>, S3Storage, S3Storage) {
        let store = Arc::new(InMemory::new());
        let a = S3Storage::in_memory(store.clone(), limits);
        let b = S3Storage::in_memory(store.clone(), limits);
        (store, a, b)
    }

    fn body(bytes: &[u8], chunk: usize) -> ByteStream {
        let pieces: Vec<io::Result<Bytes>> = bytes
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures_util::stream::iter(pieces))
    }

    fn noise(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
            .collect()
    }

    async fn read_all(s: &S3Storage, repo: &RepoName, d: &Digest) -> Vec<u8> {
        let mut got = Vec::new();
        let mut read = s.read_blob(repo, d, None).await.expect("read").body;
        while let Some(c) = read.next().await {
            got.extend_from_slice(&c.expect("chunk"));
        }
        got
    }

    async fn keys_under(store: &InMemory, prefix: &str) -> Vec<String> {
        store
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list")
    }

    /// Chunks of every size, sent alternately to two replicas, cross part
    /// boundaries and leave tails; the blob assembled is exactly the bytes
    /// acknowledged, and the session leaves nothing behind.
    #[tokio::test]
    async fn a_session_continues_on_another_replica_with_chunks_of_any_size() {
        let (store, a, b) = replicas(UploadLimits::default());
        let repo: RepoName = "team/app".parse().expect("name");
        let data = noise(PART_SIZE * 2 + 12_345, 1);
        // Chunk lengths: a small one, one past a part, one byte, one that
        // fills the second part's tail, then the rest.
        let lens = [3_000, PART_SIZE + 5, 1, PART_SIZE - 2_000];
        let mut cuts: Vec<usize> = lens
            .iter()
            .scan(0, |at, l| {
                *at += l;
                Some(*at)
            })
            .collect();
        cuts.push(data.len());
        let id = a.start_upload(&repo, "alice").await.expect("start");
        let mut at = 0;
        for (i, &end) in cuts.iter().enumerate() {
            let s = if i % 2 == 0 { &a } else { &b };
            let piece = &data[at..end];
            let offset = s
                .append_upload(
                    &repo,
                    id,
                    Some(at as u64),
                    body(piece, 64 * 1024),
                    Some(piece.len() as u64),
                )
                .await
                .expect("append");
            assert_eq!(offset, end as u64);
            assert_eq!(
                a.upload_offset(&repo, id).await.expect("offset"),
                end as u64
            );
            at = end;
        }
        let digest = Digest::sha256_of(&data);
        let size = b
            .complete_upload(&repo, id, &digest, None, None)
            .await
            .expect("complete");
        assert_eq!(size, data.len() as u64);
        assert!(read_all(&a, &repo, &digest).await == data, "other bytes");
        assert!(keys_under(&store, "uploads").await.is_empty());
        assert!(keys_under(&store, "upload-owners").await.is_empty());
    }

    /// A wrong digest, or a chunk shorter than declared, is refused and
    /// leaves the session exactly where it was.
    #[tokio::test]
    async fn refused_requests_leave_the_session_as_it_was() {
        let (_store, a, b) = replicas(UploadLimits::default());
        let repo: RepoName = "team/app".parse().expect("name");
        let data = noise(PART_SIZE + 777, 2);
        let id = a.start_upload(&repo, "").await.expect("start");
        a.append_upload(&repo, id, Some(0), body(&data[..1000], 100), None)
            .await
            .expect("append");
        let short = b
            .append_upload(
                &repo,
                id,
                Some(1000),
                body(&data[1000..], 4096),
                Some(data.len() as u64),
            )
            .await;
        assert!(
            matches!(short, Err(StorageError::SizeMismatch { .. })),
            "{short:?}"
        );
        assert_eq!(b.upload_offset(&repo, id).await.expect("offset"), 1000);
        let wrong = Digest::sha256_of(b"not this");
        let refused = b
            .complete_upload(&repo, id, &wrong, Some(body(&data[1000..], 4096)), None)
            .await;
        assert!(
            matches!(refused, Err(StorageError::DigestMismatch { .. })),
            "{refused:?}"
        );
        assert_eq!(a.upload_offset(&repo, id).await.expect("offset"), 1000);
        let stale = a
            .append_upload(&repo, id, Some(0), body(b"x", 1), None)
            .await;
        assert!(
            matches!(stale, Err(StorageError::OffsetMismatch { have: 1000 })),
            "{stale:?}"
        );
        let digest = Digest::sha256_of(&data);
        a.complete_upload(&repo, id, &digest, Some(body(&data[1000..], 4096)), None)
            .await
            .expect("complete");
        assert!(read_all(&b, &repo, &digest).await == data);
        // Another repository does not see the session, nor the blob.
        let other: RepoName = "team/other".parse().expect("name");
        assert_eq!(b.blob_size(&other, &digest).await.expect("size"), None);
    }

    /// Two replicas appending at the same offset at once: exactly one is
    /// acknowledged, the other answers 416 with the winner's offset, and
    /// the blob is the winner's bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_chunks_on_two_replicas_have_one_winner() {
        let (_store, a, b) = replicas(UploadLimits::default());
        let repo: RepoName = "race/app".parse().expect("name");
        let id = a.start_upload(&repo, "").await.expect("start");
        let (x, y) = (noise(300_000, 3), noise(300_000, 4));
        let (ra, rb) = tokio::join!(
            a.append_upload(&repo, id, Some(0), body(&x, 1000), None),
            b.append_upload(&repo, id, Some(0), body(&y, 1000), None),
        );
        let winner = match (&ra, &rb) {
            (Ok(_), Err(StorageError::OffsetMismatch { have })) => {
                assert_eq!(*have, x.len() as u64);
                &x
            }
            (Err(StorageError::OffsetMismatch { have }), Ok(_)) => {
                assert_eq!(*have, y.len() as u64);
                &y
            }
            other => panic!("not one winner: {other:?}"),
        };
        let digest = Digest::sha256_of(winner);
        a.complete_upload(&repo, id, &digest, None, None)
            .await
            .expect("complete with the winner's digest");
        assert!(&read_all(&b, &repo, &digest).await == winner);
    }

    /// A monolithic upload is verified before anything appears under
    /// `blobs/`, on the one-PUT path and on the multipart path alike.
    #[tokio::test]
    async fn nothing_unverified_becomes_visible() {
        let (store, a, _b) = replicas(UploadLimits::default());
        let repo: RepoName = "team/app".parse().expect("name");
        for len in [10, PART_SIZE * 2 + 1] {
            let data = noise(len, 5);
            let wrong = Digest::sha256_of(b"something else");
            let refused = a
                .put_blob(&repo, &wrong, body(&data, 256 * 1024), None)
                .await;
            assert!(
                matches!(refused, Err(StorageError::DigestMismatch { .. })),
                "{refused:?}"
            );
            assert!(keys_under(&store, "blobs").await.is_empty(), "len {len}");
            assert_eq!(a.blob_size(&repo, &wrong).await.expect("size"), None);
        }
        let data = noise(PART_SIZE * 2 + 1, 6);
        let digest = Digest::sha256_of(&data);
        a.put_blob(
            &repo,
            &digest,
            body(&data, 256 * 1024),
            Some(data.len() as u64),
        )
        .await
        .expect("put");
        assert!(read_all(&a, &repo, &digest).await == data);
        // Pushed again elsewhere: linked, not stored twice, still verified.
        let other: RepoName = "team/other".parse().expect("name");
        a.put_blob(&other, &digest, body(&data, 1 << 20), None)
            .await
            .expect("put again");
        assert_eq!(keys_under(&store, "blobs").await.len(), 1);
    }

    /// sha512 sessions are verified by reading the assembled data back.
    #[tokio::test]
    async fn a_sha512_session_is_verified_too() {
        let (_store, a, b) = replicas(UploadLimits::default());
        let repo: RepoName = "team/app".parse().expect("name");
        let data = noise(PART_SIZE + 10, 7);
        let digest = Digest::compute(crate::oci::Algorithm::Sha512, &data);
        let id = a.start_upload(&repo, "").await.expect("start");
        a.append_upload(&repo, id, None, body(&data, 1 << 20), None)
            .await
            .expect("append");
        b.complete_upload(&repo, id, &digest, None, None)
            .await
            .expect("complete");
        assert!(read_all(&a, &repo, &digest).await == data);
        let small = Digest::compute(crate::oci::Algorithm::Sha512, b"tiny");
        let id = a.start_upload(&repo, "").await.expect("start");
        a.complete_upload(&repo, id, &small, Some(body(b"tiny", 2)), None)
            .await
            .expect("complete small");
        assert_eq!(read_all(&b, &repo, &small).await, b"tiny");
    }

    /// Sessions idle past the TTL answer unknown at once; the sweep removes
    /// their objects and frees their owner's slot (counted across replicas).
    #[tokio::test]
    async fn idle_sessions_expire_and_slots_are_shared_across_replicas() {
        let limits = UploadLimits {
            ttl: Duration::from_millis(300),
            max_per_owner: 2,
        };
        let (store, a, b) = replicas(limits);
        let repo: RepoName = "team/app".parse().expect("name");
        let first = a.start_upload(&repo, "bob").await.expect("first");
        let _second = b.start_upload(&repo, "bob").await.expect("second");
        let third = a.start_upload(&repo, "bob").await;
        assert!(
            matches!(third, Err(StorageError::TooManyUploads { limit: 2 })),
            "{third:?}"
        );
        a.start_upload(&repo, "carol").await.expect("another owner");
        b.cancel_upload(&repo, first).await.expect("cancel");
        let id = a.start_upload(&repo, "bob").await.expect("slot freed");
        a.append_upload(&repo, id, Some(0), body(b"abc", 1), None)
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(
            b.upload_offset(&repo, id).await,
            Err(StorageError::UploadUnknown)
        ));
        let removed = b.sweep_uploads().await.expect("sweep");
        assert_eq!(removed, 3);
        assert!(keys_under(&store, "uploads").await.is_empty());
        assert!(keys_under(&store, "upload-owners").await.is_empty());
    }

    /// A tag moved or a manifest deleted on one replica is seen on the
    /// other within the cache's time to live (and at once on the replica
    /// that wrote).
    #[tokio::test]
    async fn other_replicas_see_tag_moves_and_deletes_within_the_cache_ttl() {
        let (_store, a, b) = replicas(UploadLimits::default());
        let repo: RepoName = "team/app".parse().expect("name");
        let tag: Tag = "v1".parse().expect("tag");
        let by_tag = Reference::Tag(tag.clone());
        let manifest = |body: &'static [u8]| {
            StoredManifest::new(
                Digest::sha256_of(body),
                crate::oci::media::OCI_MANIFEST.into(),
                Bytes::from_static(body),
            )
        };
        let (one, two) = (manifest(b"{\"one\":1}"), manifest(b"{\"two\":2}"));
        a.put_manifest(&repo, one.clone(), Some(&tag), None)
            .await
            .expect("put");
        let seen = b
            .get_manifest(&repo, &by_tag)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(seen.digest, one.digest);
        a.put_manifest(&repo, two.clone(), Some(&tag), None)
            .await
            .expect("move");
        assert_eq!(
            a.get_manifest(&repo, &by_tag)
                .await
                .expect("get")
                .expect("found")
                .digest,
            two.digest,
            "the writing replica reads its own write"
        );
        tokio::time::sleep(CACHE_TTL + Duration::from_millis(50)).await;
        let seen = b
            .get_manifest(&repo, &by_tag)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(seen.digest, two.digest);
        let by_digest = Reference::Digest(two.digest.clone());
        assert!(
            b.get_manifest(&repo, &by_digest)
                .await
                .expect("get")
                .is_some()
        );
        a.delete_manifest(&repo, &two.digest).await.expect("delete");
        tokio::time::sleep(CACHE_TTL + Duration::from_millis(50)).await;
        assert!(
            b.get_manifest(&repo, &by_digest)
                .await
                .expect("get")
                .is_none()
        );
        assert!(b.get_manifest(&repo, &by_tag).await.expect("get").is_none());
        assert_eq!(b.tags(&repo).await.expect("tags"), Some(vec![]));
        assert_eq!(b.repositories().await.expect("catalog"), vec![repo.clone()]);
    }

    /// Two replicas starting at once create one shared secret between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_share_one_secret() {
        let (_store, a, b) = replicas(UploadLimits::default());
        let rel = "auth/token-signing-key.p8";
        let (ka, kb) = tokio::join!(
            a.shared_secret(rel, || Ok(b"from a".to_vec())),
            b.shared_secret(rel, || Ok(b"from b".to_vec()))
        );
        let (ka, kb) = (ka.expect("key a"), kb.expect("key b"));
        assert_eq!(ka, kb);
        let again = a.shared_secret(rel, || Ok(b"from a again".to_vec()));
        assert_eq!(again.await.expect("again"), ka);
    }
}
