//! Manifests by tag or digest: `GET`/`HEAD`/`PUT`/`DELETE`.
//!
//! A pushed manifest is validated before anything is stored: size (4 MiB),
//! JSON shape, media type (OCI image manifest and index, Docker schema 2
//! manifest and manifest list), the digest when pushed by digest, and that
//! every blob an image manifest references (and every manifest an index
//! references) exists in the repository.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use super::error::{ApiError, ErrorCode};
use super::{content_length, header_value, shared_value};
use crate::auth::access::Action;
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag, media};
use crate::storage::{Referrer, Storage, StoredManifest};

/// Largest manifest accepted. The spec suggests at least 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub async fn get(
    s: &dyn Storage,
    repo: &RepoName,
    reference: &Reference,
    head: bool,
) -> Result<Response, ApiError> {
    let Some(m) = s.get_manifest(repo, reference).await? else {
        return Err(crate::storage::StorageError::ManifestUnknown(reference.to_string()).into());
    };
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::from(m.bytes.clone())
    });
    let h = resp.headers_mut();
    // Shared bytes made when the manifest was read: no formatting here.
    h.insert(header::CONTENT_TYPE, shared_value(m.media_type_text()));
    h.insert(header::CONTENT_LENGTH, m.bytes.len().into());
    h.insert(super::CONTENT_DIGEST, shared_value(m.digest_text()));
    h.insert(header::ETAG, shared_value(m.quoted_digest()));
    Ok(resp)
}

pub async fn delete(
    s: &dyn Storage,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Response, ApiError> {
    match reference {
        Reference::Digest(d) => s.delete_manifest(repo, d).await?,
        Reference::Tag(t) => s.delete_tag(repo, t).await?,
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

fn too_big() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::ManifestInvalid,
        format!("manifest is larger than {MAX_MANIFEST_BYTES} bytes"),
    )
}

/// Points `tag` at `digest` if it still points where the authorization
/// decision saw it (`seen`). When another push moved it meanwhile, the
/// decision is made again against the tag as it is now (moving an existing
/// tag needs `update`), a few times, before answering 409.
async fn move_tag(
    s: &dyn Storage,
    access: &super::Access,
    repo: &RepoName,
    tag: &crate::oci::Tag,
    mut seen: Option<Digest>,
    digest: &Digest,
) -> Result<(), ApiError> {
    let mut last = None;
    for _ in 0..3 {
        match s.move_tag(repo, tag, seen.as_ref(), digest).await {
            Ok(()) => return Ok(()),
            Err(e @ crate::storage::StorageError::TagMoved { .. }) => {
                let now = s.tag_target(repo, tag).await?;
                let moves = now.as_ref().is_some_and(|old| old != digest);
                access.require(
                    if moves {
                        Action::Update
                    } else {
                        Action::Create
                    },
                    repo,
                )?;
                seen = now;
                last = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last
        .map(ApiError::from)
        .unwrap_or_else(|| ApiError::internal("tag move")))
}

fn unknown_in(repo: &RepoName, d: &Digest) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::ManifestBlobUnknown,
        format!("blob {d} is not in repository {repo}"),
    )
    .with_detail(serde_json::json!({ "digest": d.to_string() }))
}

pub async fn put(
    s: &dyn Storage,
    access: &super::Access,
    repo: &RepoName,
    reference: &Reference,
    req: Request,
) -> Result<Response, ApiError> {
    if content_length(req.headers()).is_some_and(|n| n > MAX_MANIFEST_BYTES as u64) {
        return Err(too_big());
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let bytes = axum::body::to_bytes(req.into_body(), MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| {
            // `to_bytes` reports both an over-limit body and a broken one.
            if caused_by_length_limit(&e) {
                too_big()
            } else {
                ApiError::manifest_invalid("the manifest body could not be read")
            }
        })?;
    let algorithm = match reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => Algorithm::Sha256,
    };
    let digest = Digest::compute(algorithm, &bytes);
    if let Reference::Digest(expected) = reference
        && expected != &digest
    {
        return Err(ApiError::digest_invalid(format!(
            "manifest digest is {digest}, not {expected}"
        ))
        .with_detail(
            serde_json::json!({ "expected": expected.to_string(), "actual": digest.to_string() }),
        ));
    }
    let parsed = Parsed::from_bytes(content_type.as_deref(), &bytes)?;
    parsed.check_references(s, repo).await?;
    let referrer = parsed.referrer(&digest, bytes.len());
    let subject = referrer.as_ref().map(|r| r.subject.clone());
    let tag = match reference {
        Reference::Tag(t) => Some(t),
        Reference::Digest(_) => None,
    };
    // Moving an existing tag is `update`; anything else a push does is `create`.
    let previous_target = match tag {
        Some(t) => s.tag_target(repo, t).await?,
        None => None,
    };
    let moves_tag = previous_target.as_ref().is_some_and(|old| old != &digest);
    access.require(
        if moves_tag {
            Action::Update
        } else {
            Action::Create
        },
        repo,
    )?;
    let followed = access
        .auth
        .as_ref()
        .filter(|auth| auth.follows_repository(repo));
    if let Some(auth) = followed {
        validate_policy(s, auth, repo, tag, &digest, &bytes).await?;
    }
    let manifest = StoredManifest::new(
        digest.clone(),
        parsed.media_type.clone(),
        Bytes::clone(&bytes),
    );
    let existed = s
        .get_manifest(repo, &Reference::Digest(digest.clone()))
        .await?
        .is_some();
    s.put_manifest(repo, manifest, None, referrer).await?;
    if let Some(t) = tag {
        move_tag(s, access, repo, t, previous_target.clone(), &digest).await?;
    }
    // A garbage collection may have taken a referenced blob between the
    // check above and the write: look again now that the manifest is
    // visible (the collector gives back what visible manifests reference),
    // and undo the push if one is gone.
    let readable = s
        .get_manifest(repo, &Reference::Digest(digest.clone()))
        .await?
        .is_some();
    let still = if readable {
        match parsed.check_blobs(s, repo).await {
            Ok(()) => parsed.check_content(s, repo).await,
            Err(e) => Err(e),
        }
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ManifestInvalid,
            "the manifest was collected while it was being stored: push it again",
        ))
    };
    if let Err(e) = still {
        if !existed {
            let _ = s.delete_manifest(repo, &digest).await;
            if let (Some(t), Some(old)) = (tag, previous_target) {
                // Back to where it was, unless another push moved it since.
                let _ = s.move_tag(repo, t, None, &old).await;
            }
        }
        return Err(e);
    }
    if let (Some(auth), Some(_)) = (followed, tag) {
        // The follower swaps the issuer's policy now, not at its next poll.
        auth.policy_pushed.notify_one();
    }
    let mut resp = (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                header_value(&format!("/v2/{repo}/manifests/{digest}")),
            ),
            (super::CONTENT_DIGEST, header_value(&digest.to_string())),
            (header::CONTENT_LENGTH, header_value("0")),
        ],
    )
        .into_response();
    if let Some(subject) = subject {
        resp.headers_mut()
            .insert("oci-subject", header_value(&subject.to_string()));
    }
    Ok(resp)
}

/// A policy artifact pushed into a repository that a configured `oci://`
/// source names is loaded as the server would run it — module read from
/// storage (capped), compiled, instantiated under the follower's ceilings,
/// `init` with its settings, every bundled fixture checked — before it is
/// stored or a tag moves. A refusal is 400 `MANIFEST_INVALID` naming the
/// phase and the problem. Other manifests pass untouched, except onto a
/// tag that a source follows: that tag holds policies only.
async fn validate_policy(
    s: &dyn Storage,
    auth: &crate::auth::Auth,
    repo: &RepoName,
    tag: Option<&Tag>,
    digest: &Digest,
    bytes: &[u8],
) -> Result<(), ApiError> {
    use crate::policy::artifact::{ARTIFACT_TYPE, ArtifactError, ArtifactPhase, is_policy};
    let refused = |e: ArtifactError| {
        ApiError::manifest_invalid(e.to_string()).with_detail(
            serde_json::json!({ "phase": e.phase.to_string(), "digest": digest.to_string() }),
        )
    };
    let json = serde_json::from_slice::<Value>(bytes)
        .ok()
        .filter(is_policy);
    let Some(json) = json else {
        let Some(source) = tag.and_then(|t| auth.following_tag(repo, t)) else {
            return Ok(());
        };
        let e = ArtifactError::new(
            ArtifactPhase::Manifest,
            format!(
                "{source} is followed as a claim policy: only a policy artifact \
                 (artifactType {ARTIFACT_TYPE}) may be tagged there"
            ),
        );
        auth.refused(repo, digest, &e.to_string());
        return Err(refused(e));
    };
    let artifact = match super::artifacts::assemble(s, repo, digest.clone(), &json).await {
        Ok(a) => a,
        Err(e) => {
            auth.refused(repo, digest, &e.to_string());
            return Err(refused(e));
        }
    };
    auth.validate_artifact(repo, &artifact)
        .await
        .map_err(refused)?;
    tracing::info!(repository = %repo, %digest, "policy artifact validated");
    Ok(())
}

fn caused_by_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Image,
    Index,
}

/// What validation learned about a manifest.
#[derive(Debug)]
pub(crate) struct Parsed {
    media_type: String,
    kind: Kind,
    /// Blobs (config, layers) an image manifest needs in the repository.
    blobs: Vec<(Digest, Option<u64>)>,
    /// Manifests an index needs in the repository.
    children: Vec<Digest>,
    subject: Option<Digest>,
    artifact_type: Option<String>,
    annotations: Option<Value>,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => Some(Kind::Image),
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// A descriptor's digest (and size), naming the field on error.
fn descriptor(v: &Value, field: &str) -> Result<(Digest, Option<u64>), ApiError> {
    let obj = v.as_object().ok_or_else(|| {
        ApiError::manifest_invalid(format!("`{field}` must be a descriptor object"))
    })?;
    let digest = obj
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::manifest_invalid(format!("`{field}.digest` is required")))?;
    let digest = digest.parse().map_err(|e: crate::oci::DigestError| {
        ApiError::manifest_invalid(format!("`{field}.digest`: {e}"))
    })?;
    let size = obj.get("size").and_then(Value::as_u64);
    Ok((digest, size))
}

/// Layers that are never pushed to a registry (Windows foreign layers, and
/// anything served from `urls`) are not required to exist.
fn is_external_layer(v: &Value) -> bool {
    let foreign = v
        .get("mediaType")
        .and_then(Value::as_str)
        .is_some_and(|m| m.contains("foreign") || m.contains("nondistributable"));
    foreign
        || v.get("urls")
            .and_then(Value::as_array)
            .is_some_and(|u| !u.is_empty())
}

impl Parsed {
    pub(crate) fn from_bytes(content_type: Option<&str>, bytes: &[u8]) -> Result<Parsed, ApiError> {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::manifest_invalid(format!("manifest is not valid JSON: {e}")))?;
        let obj = doc
            .as_object()
            .ok_or_else(|| ApiError::manifest_invalid("manifest must be a JSON object"))?;
        if obj.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
            return Err(ApiError::manifest_invalid("`schemaVersion` must be 2"));
        }
        let declared = obj.get("mediaType").and_then(Value::as_str);
        // A generic or missing Content-Type defers to the document's own mediaType.
        let header = content_type.filter(|ct| kind_of(ct).is_some());
        if let (Some(h), Some(d)) = (header, declared)
            && h != d
        {
            return Err(ApiError::manifest_invalid(format!(
                "Content-Type `{h}` does not match the manifest's mediaType `{d}`"
            )));
        }
        let media_type = match header.or(declared) {
            Some(m) => m.to_string(),
            // OCI allows omitting mediaType; tell the two OCI kinds apart by shape.
            None if obj.contains_key("manifests") => media::OCI_INDEX.to_string(),
            None if obj.contains_key("config") => media::OCI_MANIFEST.to_string(),
            None => return Err(ApiError::manifest_invalid("manifest media type is missing")),
        };
        let Some(kind) = kind_of(&media_type) else {
            return Err(ApiError::manifest_invalid(format!(
                "manifest media type `{media_type}` is not supported"
            )));
        };
        let mut parsed = Parsed {
            media_type,
            kind,
            blobs: Vec::new(),
            children: Vec::new(),
            subject: None,
            artifact_type: obj
                .get("artifactType")
                .and_then(Value::as_str)
                .map(str::to_string),
            annotations: obj.get("annotations").filter(|a| a.is_object()).cloned(),
        };
        match parsed.kind {
            Kind::Image => {
                let config = obj
                    .get("config")
                    .ok_or_else(|| ApiError::manifest_invalid("`config` is required"))?;
                parsed.blobs.push(descriptor(config, "config")?);
                if parsed.artifact_type.is_none() {
                    parsed.artifact_type = config
                        .get("mediaType")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                let layers = match obj.get("layers") {
                    None => &Vec::new(),
                    Some(l) => l
                        .as_array()
                        .ok_or_else(|| ApiError::manifest_invalid("`layers` must be an array"))?,
                };
                for (i, layer) in layers.iter().enumerate() {
                    let d = descriptor(layer, &format!("layers[{i}]"))?;
                    if !is_external_layer(layer) {
                        parsed.blobs.push(d);
                    }
                }
            }
            Kind::Index => {
                let manifests = obj
                    .get("manifests")
                    .and_then(Value::as_array)
                    .ok_or_else(|| ApiError::manifest_invalid("`manifests` must be an array"))?;
                for (i, m) in manifests.iter().enumerate() {
                    parsed
                        .children
                        .push(descriptor(m, &format!("manifests[{i}]"))?.0);
                }
            }
        }
        if let Some(subject) = obj.get("subject") {
            parsed.subject = Some(descriptor(subject, "subject")?.0);
        }
        Ok(parsed)
    }

    async fn check_references(&self, s: &dyn Storage, repo: &RepoName) -> Result<(), ApiError> {
        self.check_blobs(s, repo).await?;
        for d in &self.children {
            if s.get_manifest(repo, &Reference::Digest(d.clone()))
                .await?
                .is_none()
            {
                return Err(unknown_in(repo, d));
            }
        }
        Ok(())
    }

    /// Every blob the manifest references has its content stored (a link
    /// can outlive content a collection is removing).
    async fn check_content(&self, s: &dyn Storage, repo: &RepoName) -> Result<(), ApiError> {
        for (d, _) in &self.blobs {
            if !s.blob_content_exists(d).await? {
                return Err(unknown_in(repo, d));
            }
        }
        Ok(())
    }

    /// Every blob the manifest references is linked into `repo`, with the
    /// size its descriptor declares.
    async fn check_blobs(&self, s: &dyn Storage, repo: &RepoName) -> Result<(), ApiError> {
        let unknown = |d: &Digest| unknown_in(repo, d);
        for (d, declared) in &self.blobs {
            match s.blob_size(repo, d).await? {
                None => return Err(unknown(d)),
                Some(actual) if declared.is_some_and(|n| n != actual) => {
                    return Err(ApiError::manifest_invalid(format!(
                        "descriptor of {d} says {} bytes, the blob has {actual}",
                        declared.unwrap_or_default()
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The descriptor the referrers API lists for this manifest, if it has a subject.
    fn referrer(&self, digest: &Digest, size: usize) -> Option<Referrer> {
        let subject = self.subject.clone()?;
        let mut d = serde_json::json!({
            "mediaType": self.media_type,
            "digest": digest.to_string(),
            "size": size,
        });
        if let Some(t) = &self.artifact_type {
            d["artifactType"] = Value::String(t.clone());
        }
        if let Some(a) = &self.annotations {
            d["annotations"] = a.clone();
        }
        Some(Referrer {
            subject,
            descriptor: d,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn docker_schema2_is_accepted_by_content_type() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{CFG}","size":2}},"layers":[]}}"#,
            media::DOCKER_MANIFEST
        );
        let p = Parsed::from_bytes(Some(media::DOCKER_MANIFEST), m.as_bytes()).expect("valid");
        assert_eq!(p.kind, Kind::Image);
        assert_eq!(p.blobs.len(), 1);
    }

    #[test]
    fn mismatched_content_type_is_refused() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media::OCI_INDEX
        );
        let e = Parsed::from_bytes(Some(media::OCI_MANIFEST), m.as_bytes()).expect_err("mismatch");
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
    }

    #[test]
    fn bad_shapes_name_the_field() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{CFG}"}},"layers":[{{"digest":"nope"}}]}}"#
        );
        let e = Parsed::from_bytes(None, m.as_bytes()).expect_err("bad layer");
        assert!(e.message.contains("layers[0].digest"), "{}", e.message);
        let e = Parsed::from_bytes(None, b"[1,2]").expect_err("not an object");
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
        let e = Parsed::from_bytes(None, br#"{"schemaVersion":1}"#).expect_err("schema 1");
        assert!(e.message.contains("schemaVersion"));
    }

    #[test]
    fn artifact_type_falls_back_to_config_media_type() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.example.sbom","digest":"{CFG}","size":2}},"layers":[],"subject":{{"mediaType":"{}","digest":"{CFG}","size":2}}}}"#,
            media::OCI_MANIFEST
        );
        let p = Parsed::from_bytes(None, m.as_bytes()).expect("valid");
        let r = p
            .referrer(&Digest::sha256_of(m.as_bytes()), m.len())
            .expect("has subject");
        assert_eq!(r.descriptor["artifactType"], "application/vnd.example.sbom");
    }
}
