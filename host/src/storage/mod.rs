//! Where registry content lives: content-addressed blobs stored once per
//! registry, linked into repositories, plus manifests, tags, upload sessions
//! and referrers.
//!
//! The [`Storage`] trait is the only way the API layer touches content;
//! handlers never see a path. Blobs move as byte streams in both directions,
//! so memory stays flat whatever their size. Writes are atomic: a reader sees
//! either nothing or the whole verified object, even across a crash.
//!
//! Implementations: [`fs::FsStorage`] (the filesystem). An object-store
//! backend fits behind the same trait.

mod cache;
pub mod fs;
pub mod gc;
pub mod s3;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::oci::{Digest, Reference, RepoName, Tag, UploadId};

/// A stream of bytes, for blob bodies in either direction.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Errors of the storage layer. The API layer maps each to an OCI error
/// code; `Io` details go to the log, never to a client.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob {0} is unknown to this repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is unknown to this repository")]
    ManifestUnknown(String),
    #[error("repository is unknown")]
    NameUnknown,
    #[error("upload session is unknown")]
    UploadUnknown,
    #[error("too many open upload sessions (at most {limit} per identity)")]
    TooManyUploads { limit: usize },
    #[error("chunk does not start where the upload ends (upload has {have} bytes)")]
    OffsetMismatch { have: u64 },
    #[error("content has digest {actual}, not the declared {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("body has {actual} bytes, but {expected} were declared")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("tag {tag} was moved by another request meanwhile")]
    TagMoved { tag: String },
    #[error("the request body could not be read: {0}")]
    Body(io::Error),
    #[error("storage failure while {context}: {source}")]
    Io { context: String, source: io::Error },
}

impl StorageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> StorageError {
        let context = context.into();
        move |source| StorageError::Io { context, source }
    }
}

/// The digest a tag object holds (its text, trimmed).
pub(crate) fn tag_text(tag: &Tag, bytes: &[u8]) -> Result<Digest, StorageError> {
    String::from_utf8_lossy(bytes)
        .trim()
        .parse()
        .map_err(|e| StorageError::Io {
            context: format!("reading tag {tag}"),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
}

/// Checks a body's length against the one declared, if any.
pub(crate) fn check_len(expected: Option<u64>, actual: u64) -> Result<(), StorageError> {
    match expected {
        Some(expected) if expected != actual => {
            Err(StorageError::SizeMismatch { expected, actual })
        }
        _ => Ok(()),
    }
}

/// Bounds on upload sessions (`[storage] max_uploads_per_identity`,
/// `[storage.gc] upload_ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// A session with no new chunk for longer than this is gone.
    pub ttl: Duration,
    /// Open sessions one owner may hold at once; 0: no limit.
    pub max_per_owner: usize,
}

impl UploadLimits {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_MAX_PER_OWNER: usize = 100;

    /// How often the sweep looks for expired sessions: a quarter of the
    /// TTL, between one second and ten minutes, so a session is removed at
    /// most a quarter TTL after it expired (it answers 404 from the moment
    /// it expires, sweep or not).
    pub fn sweep_interval(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            ttl: Self::DEFAULT_TTL,
            max_per_owner: Self::DEFAULT_MAX_PER_OWNER,
        }
    }
}

/// A byte range of a blob, both ends inclusive, already checked against
/// the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Never zero: both ends are inclusive.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// What a blob read returns: the blob's whole size and a stream of the
/// requested bytes.
pub struct BlobRead {
    pub size: u64,
    pub body: ByteStream,
}

/// A manifest as stored: its bytes, their digest and the media type it was
/// pushed with.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
    /// `"<digest>"` (quoted), written once when the manifest is read or
    /// stored: a cached manifest is served many times, and each response
    /// takes its digest and entity tag from here without formatting.
    quoted_digest: Bytes,
    /// The media type as shared bytes, for the same reason.
    media_type_text: Bytes,
}

impl StoredManifest {
    pub fn new(digest: Digest, media_type: String, bytes: Bytes) -> StoredManifest {
        let quoted_digest = Bytes::from(format!("\"{digest}\""));
        let media_type_text = Bytes::copy_from_slice(media_type.as_bytes());
        StoredManifest {
            digest,
            media_type,
            bytes,
            quoted_digest,
            media_type_text,
        }
    }

    /// The digest's text (`sha256:…`), shared, not copied.
    pub fn digest_text(&self) -> Bytes {
        self.quoted_digest
            .slice(1..self.quoted_digest.len().saturating_sub(1))
    }

    /// The digest's text in double quotes (an entity tag), shared.
    pub fn quoted_digest(&self) -> Bytes {
        self.quoted_digest.clone()
    }

    /// The media type's text, shared.
    pub fn media_type_text(&self) -> Bytes {
        self.media_type_text.clone()
    }
}

/// A manifest that points at another (`subject`), with the descriptor the
/// referrers API lists for it.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub subject: Digest,
    pub descriptor: serde_json::Value,
}

/// An object the collector looks at: what it is, its size, when it was
/// last written.
#[derive(Debug, Clone)]
pub struct Stored {
    pub digest: Digest,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// The storage contract. Every method is safe to call concurrently.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Fails unless new content can be written right now (for `/readyz`).
    async fn check_writable(&self) -> Result<(), StorageError>;

    /// The size of a blob linked into `repo`, or `None`.
    async fn blob_size(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, StorageError>;

    /// Streams a blob linked into `repo`; `range` selects part of it. The
    /// caller has checked the range against `blob_size` (which is also what
    /// checks the link: a backend may skip that check here).
    async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead, StorageError>;

    /// A URL the client may `GET` the blob from directly (a presigned
    /// object-store URL), for a `307` instead of streaming it through;
    /// `None` (the default) streams. The caller has checked the link.
    async fn blob_redirect(&self, _digest: &Digest) -> Result<Option<url::Url>, StorageError> {
        Ok(None)
    }

    /// Stores a whole blob from `body` (monolithic upload), verifying its
    /// digest (and `expected_len` when given), and links it into `repo`.
    async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<u64, StorageError>;

    /// Links a blob that `from` has into `repo`; `None` when `from` lacks it.
    async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, StorageError>;

    /// Unlinks a blob from `repo`; other repositories keep it.
    async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError>;

    /// Opens an upload session for `repo` on behalf of `owner` (an
    /// identity's name; "" for every anonymous caller together), refused
    /// with `TooManyUploads` when the owner holds its limit of open sessions.
    async fn start_upload(&self, repo: &RepoName, owner: &str) -> Result<UploadId, StorageError>;

    /// Removes upload sessions idle past their TTL; returns how many.
    async fn sweep_uploads(&self) -> Result<usize, StorageError>;

    /// How many bytes the session has durably received.
    async fn upload_offset(&self, repo: &RepoName, id: UploadId) -> Result<u64, StorageError>;

    /// Appends a chunk. `start`, when given, must equal the current offset;
    /// `expected_len`, when given, must equal the chunk's length. On any
    /// failure the session is left exactly as it was before the call.
    async fn append_upload(
        &self,
        repo: &RepoName,
        id: UploadId,
        start: Option<u64>,
        body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<u64, StorageError>;

    /// Appends an optional last chunk, verifies the digest and makes the
    /// blob visible in `repo`. Returns the blob's size.
    async fn complete_upload(
        &self,
        repo: &RepoName,
        id: UploadId,
        digest: &Digest,
        body: Option<ByteStream>,
        expected_len: Option<u64>,
    ) -> Result<u64, StorageError>;

    /// Abandons an upload session.
    async fn cancel_upload(&self, repo: &RepoName, id: UploadId) -> Result<(), StorageError>;

    /// A manifest by tag or digest, or `None`.
    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Arc<StoredManifest>>, StorageError>;

    /// What `tag` points at now, if anything (to tell `create` from `update`).
    async fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError>;

    /// Stores a manifest (already validated and authorized by the caller,
    /// which reads `tag_target` itself to tell `create` from `update`),
    /// optionally tags it, and records it as a referrer of its subject.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: StoredManifest,
        tag: Option<&Tag>,
        referrer: Option<Referrer>,
    ) -> Result<(), StorageError>;

    /// Points `tag` at `to` (a manifest already stored), but only if it
    /// still points at `expected` (`None`: no such tag yet), checked and
    /// written as one step (a conditional write on s3); `TagMoved`
    /// otherwise. The caller authorized `create` or `update` against
    /// `expected`, so a racing move can never slip past that decision.
    async fn move_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        expected: Option<&Digest>,
        to: &Digest,
    ) -> Result<(), StorageError>;

    /// Deletes a manifest and every tag pointing at it.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError>;

    /// Deletes a tag; the manifest stays reachable by digest.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<(), StorageError>;

    /// The tags of `repo`, sorted; `None` when the repository is unknown.
    async fn tags(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError>;

    /// Every repository, sorted.
    async fn repositories(&self) -> Result<Vec<RepoName>, StorageError>;

    /// Descriptors of the manifests in `repo` whose subject is `subject`.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<serde_json::Value>, StorageError>;

    // ------------------------------------------------ for the collector (gc)

    /// Every repository holding anything (manifests or only blob links), sorted.
    async fn all_repositories(&self) -> Result<Vec<RepoName>, StorageError>;

    /// Every blob whose content is stored (manifests' bytes included).
    async fn list_blob_content(&self) -> Result<Vec<Stored>, StorageError>;

    /// Every manifest revision of `repo` (size: of the revision record).
    async fn list_revisions(&self, repo: &RepoName) -> Result<Vec<Stored>, StorageError>;

    /// Every blob link of `repo` (size: 0).
    async fn list_links(&self, repo: &RepoName) -> Result<Vec<Stored>, StorageError>;

    /// Whether the blob's content is stored (whatever links it has): what
    /// a manifest `PUT` checks once more after writing, against a racing
    /// collection.
    async fn blob_content_exists(&self, digest: &Digest) -> Result<bool, StorageError>;

    /// Links a blob whose content is stored into `repo` (the collector
    /// restoring a link a racing push relied on).
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StorageError>;

    /// Moves a blob's content out of sight (reads and pushes see it gone);
    /// `false` when it was not there.
    async fn quarantine_blob(&self, digest: &Digest) -> Result<bool, StorageError>;

    /// Puts quarantined content back (unless the blob was stored again
    /// meanwhile, which wins).
    async fn restore_blob(&self, digest: &Digest) -> Result<(), StorageError>;

    /// What is quarantined now (a run that stopped part-way leaves some).
    async fn list_quarantined(&self) -> Result<Vec<Digest>, StorageError>;

    /// Removes quarantined content for good.
    async fn purge_quarantined(&self, digest: &Digest) -> Result<(), StorageError>;
}

/// Runs the upload-session sweep every [`UploadLimits::sweep_interval`]
/// for as long as the process lives.
pub fn spawn_upload_sweep(storage: Arc<dyn Storage>, limits: UploadLimits) {
    let every = limits.sweep_interval();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match storage.sweep_uploads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired upload sessions removed"),
                Err(e) => tracing::warn!(error = %e, "upload session sweep failed"),
            }
        }
    });
}
