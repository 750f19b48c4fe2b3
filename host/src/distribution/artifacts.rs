//! Reading a policy artifact out of storage: the manifest's blobs, each
//! bounded by the cap its media type has, handed to the policy runtime as
//! bytes (the runtime never reads storage itself).

use futures_util::StreamExt as _;

use crate::oci::{Digest, Reference, RepoName};
use crate::policy::artifact::{self, ArtifactError, ArtifactPhase, BlobRef, PolicyArtifact};
use crate::storage::Storage;

fn fetch_error(message: String) -> ArtifactError {
    ArtifactError::new(ArtifactPhase::Fetch, message)
}

/// Reads one blob whole, refusing it past `blob.size` (which the manifest
/// check capped): a blob that is not linked into `repo` or is not the size
/// its descriptor says is an error naming its digest.
async fn read_capped(
    s: &dyn Storage,
    repo: &RepoName,
    blob: &BlobRef,
) -> Result<Vec<u8>, ArtifactError> {
    let size = s
        .blob_size(repo, &blob.digest)
        .await
        .map_err(|e| fetch_error(format!("blob {}: {e}", blob.digest)))?
        .ok_or_else(|| fetch_error(format!("blob {} is not in {repo}", blob.digest)))?;
    if size != blob.size {
        return Err(fetch_error(format!(
            "blob {} is {size} bytes, its descriptor says {}",
            blob.digest, blob.size
        )));
    }
    let read = s
        .read_blob(repo, &blob.digest, None)
        .await
        .map_err(|e| fetch_error(format!("blob {}: {e}", blob.digest)))?;
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut body = read.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| fetch_error(format!("blob {}: {e}", blob.digest)))?;
        if out.len() + chunk.len() > usize::try_from(size).unwrap_or(usize::MAX) {
            return Err(fetch_error(format!(
                "blob {} is longer than {size} bytes",
                blob.digest
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The artifact a manifest (already parsed as JSON) describes, with its
/// blobs read from `repo`.
pub async fn assemble(
    s: &dyn Storage,
    repo: &RepoName,
    digest: Digest,
    manifest: &serde_json::Value,
) -> Result<PolicyArtifact, ArtifactError> {
    let m = artifact::parse_manifest(manifest)?;
    let config = read_capped(s, repo, &m.config).await?;
    let module = match &m.module {
        Some(b) => Some(read_capped(s, repo, b).await?),
        None => None,
    };
    let fixtures = match &m.fixtures {
        Some(b) => Some(read_capped(s, repo, b).await?),
        None => None,
    };
    PolicyArtifact::assemble(digest, &config, module, fixtures.as_deref())
}

/// The artifact stored in `repo` under `digest`; `Ok(None)` when there is
/// no such manifest.
pub async fn read(
    s: &dyn Storage,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<PolicyArtifact>, ArtifactError> {
    let stored = s
        .get_manifest(repo, &Reference::Digest(digest.clone()))
        .await
        .map_err(|e| fetch_error(format!("manifest {digest}: {e}")))?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    let json: serde_json::Value = serde_json::from_slice(&stored.bytes)
        .map_err(|e| ArtifactError::new(ArtifactPhase::Manifest, format!("not JSON: {e}")))?;
    if !artifact::is_policy(&json) {
        return Err(ArtifactError::new(
            ArtifactPhase::Manifest,
            format!(
                "{digest} is not a policy artifact (artifactType {})",
                artifact::ARTIFACT_TYPE
            ),
        ));
    }
    assemble(s, repo, digest.clone(), &json).await.map(Some)
}
