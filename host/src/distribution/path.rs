//! Parses the part of a request path after `/v2/` into a [`Route`].
//!
//! Repository names have any number of `/` segments, so the operation is
//! read from the *end* of the path. The raw (still percent-encoded) path is
//! parsed: a `%` can appear in no valid name, tag, digest or upload id, so
//! `%2e%2e` and friends are refused instead of decoded into `..`.

use crate::oci::{Digest, Reference, RepoName, UploadId};

use super::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/manifests/<text>` where the text is neither a tag nor a
    /// digest. What it answers depends on the method: nothing can be found
    /// there (404 `MANIFEST_UNKNOWN`, as distribution, zot and the v1.1.1
    /// conformance suite expect), and nothing can be stored there (400).
    BadManifestRef(RepoName, BadReference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, UploadId),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

impl Route {
    /// The repository the route is about, if any.
    pub fn repository(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::BadManifestRef(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
        }
    }
}

/// A manifest reference that is neither a valid tag nor a valid digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReference {
    /// As sent (still percent-encoded).
    pub text: String,
    pub reason: String,
}

impl BadReference {
    /// The answer to a `PUT` there: `DIGEST_INVALID` for what tried to be a
    /// digest (it has a `:`), `TAG_INVALID` otherwise.
    pub fn put_error(&self) -> ApiError {
        if self.text.contains(':') {
            ApiError::digest_invalid(self.reason.clone())
        } else {
            ApiError::new(
                http::StatusCode::BAD_REQUEST,
                super::error::ErrorCode::TagInvalid,
                self.reason.clone(),
            )
            .with_detail(serde_json::json!({ "tag": self.text }))
        }
    }

    /// The answer to a read or delete there: nothing by that name.
    pub fn lookup_error(&self) -> ApiError {
        crate::storage::StorageError::ManifestUnknown(self.text.clone()).into()
    }
}

/// Why a path is not a route: unknown shape (404) or a bad part (400).
#[derive(Debug)]
pub enum PathError {
    NotFound,
    Invalid(ApiError),
}

fn name(segments: &[&str]) -> Result<RepoName, PathError> {
    let joined = segments.join("/");
    joined.parse().map_err(|e: crate::oci::NameError| {
        PathError::Invalid(ApiError::name_invalid(e.to_string()))
    })
}

fn digest(s: &str) -> Result<Digest, PathError> {
    s.parse().map_err(|e: crate::oci::DigestError| {
        PathError::Invalid(ApiError::digest_invalid(e.to_string()))
    })
}

/// Parses `rest`, the path after `/v2/`.
pub fn parse(rest: &str) -> Result<Route, PathError> {
    match rest {
        "" => return Ok(Route::Base),
        "_catalog" => return Ok(Route::Catalog),
        _ => {}
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Ok(Route::Tags(name(&segs[..n - 2])?));
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let repo = name(&segs[..n - 3])?;
        return match segs[n - 1] {
            "" => Ok(Route::UploadStart(repo)),
            id => id.parse().map(|id| Route::Upload(repo, id)).map_err(|_| {
                PathError::Invalid(ApiError::new(
                    http::StatusCode::NOT_FOUND,
                    super::error::ErrorCode::BlobUploadUnknown,
                    "blob upload unknown to registry",
                ))
            }),
        };
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Ok(Route::UploadStart(name(&segs[..n - 2])?));
    }
    if n >= 3 {
        let repo = || name(&segs[..n - 2]);
        let last = segs[n - 1];
        match segs[n - 2] {
            "manifests" => {
                let repo = repo()?;
                return Ok(match last.parse() {
                    Ok(reference) => Route::Manifest(repo, reference),
                    Err(reason) => Route::BadManifestRef(
                        repo,
                        BadReference {
                            text: last.to_string(),
                            reason,
                        },
                    ),
                });
            }
            "blobs" => {
                let repo = repo()?;
                return Ok(Route::Blob(repo, digest(last)?));
            }
            "referrers" => {
                let repo = repo()?;
                return Ok(Route::Referrers(repo, digest(last)?));
            }
            _ => {}
        }
    }
    Err(PathError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distribution::error::ErrorCode;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(p: &str) -> Route {
        match parse(p) {
            Ok(r) => r,
            Err(e) => panic!("{p}: {e:?}"),
        }
    }

    fn code(p: &str) -> ErrorCode {
        match parse(p) {
            Err(PathError::Invalid(e)) => e.code,
            other => panic!("{p}: expected an invalid path, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_route_with_multi_segment_names() {
        let repo: RepoName = "a/b/c".parse().expect("name");
        assert_eq!(ok(""), Route::Base);
        assert_eq!(ok("_catalog"), Route::Catalog);
        assert_eq!(ok("a/b/c/tags/list"), Route::Tags(repo.clone()));
        assert_eq!(
            ok("a/b/c/manifests/latest"),
            Route::Manifest(repo.clone(), "latest".parse().expect("tag"))
        );
        assert_eq!(
            ok(&format!("a/b/c/manifests/{D}")),
            Route::Manifest(repo.clone(), D.parse().expect("digest"))
        );
        assert_eq!(
            ok(&format!("a/b/c/blobs/{D}")),
            Route::Blob(repo.clone(), D.parse().expect("digest"))
        );
        assert_eq!(ok("a/b/c/blobs/uploads/"), Route::UploadStart(repo.clone()));
        assert_eq!(ok("a/b/c/blobs/uploads"), Route::UploadStart(repo.clone()));
        let id = UploadId::new_random();
        assert_eq!(
            ok(&format!("a/b/c/blobs/uploads/{id}")),
            Route::Upload(repo.clone(), id)
        );
        assert_eq!(
            ok(&format!("a/b/c/referrers/{D}")),
            Route::Referrers(repo, D.parse().expect("digest"))
        );
    }

    #[test]
    fn names_that_look_like_operations_still_parse() {
        let repo: RepoName = "manifests/blobs/tags".parse().expect("name");
        assert_eq!(
            ok("manifests/blobs/tags/manifests/v1"),
            Route::Manifest(repo, "v1".parse().expect("tag"))
        );
    }

    #[test]
    fn traversal_is_a_name_error() {
        for p in [
            "../etc/manifests/latest",
            "%2e%2e/manifests/latest",
            "a/%2e%2e/b/tags/list",
            "/abs/tags/list",
            "a//b/tags/list",
        ] {
            assert_eq!(code(p), ErrorCode::NameInvalid, "{p}");
        }
    }

    #[test]
    fn bad_digests_and_tags_are_named() {
        assert_eq!(code("a/blobs/sha256:xyz"), ErrorCode::DigestInvalid);
        for bad in ["sha256:00", "-bad", ".INVALID_MANIFEST_NAME"] {
            let Ok(Route::BadManifestRef(_, r)) = parse(&format!("a/manifests/{bad}")) else {
                panic!("{bad}: not a bad manifest reference");
            };
            assert_eq!(r.lookup_error().code, ErrorCode::ManifestUnknown, "{bad}");
            assert_eq!(
                r.lookup_error().status,
                http::StatusCode::NOT_FOUND,
                "{bad}"
            );
        }
        let put = |bad: &str| match parse(&format!("a/manifests/{bad}")) {
            Ok(Route::BadManifestRef(_, r)) => r.put_error().code,
            other => panic!("{bad}: {other:?}"),
        };
        assert_eq!(put("sha256:00"), ErrorCode::DigestInvalid);
        assert_eq!(put("-bad"), ErrorCode::TagInvalid);
        assert_eq!(code("../blobs/uploads/"), ErrorCode::NameInvalid);
        assert!(matches!(
            parse("a/blobs/uploads/../../x"),
            Err(PathError::NotFound)
        ));
        assert_eq!(
            code("a/blobs/uploads/not-a-uuid"),
            ErrorCode::BlobUploadUnknown
        );
    }

    #[test]
    fn unknown_shapes_are_not_found() {
        assert!(matches!(parse("a"), Err(PathError::NotFound)));
        assert!(matches!(parse("a/things/x"), Err(PathError::NotFound)));
    }
}
