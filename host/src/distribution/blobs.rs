//! Blob reads (with `Range`), deletes, and upload sessions: monolithic
//! `POST ?digest=`, chunked `PATCH` with `Content-Range`, `PUT ?digest=` to
//! complete, status, cancel, and cross-repository mount.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode, upload_range};
use super::{body_stream, content_length, header_value, query_get, query_pairs};
use crate::oci::{Digest, RepoName, UploadId};
use crate::storage::{ByteRange, Storage};

/// Parses a `Range: bytes=a-b` / `bytes=a-` / `bytes=-n` request header
/// against a blob of `size` bytes. `Ok(None)` means "whole blob".
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<ByteRange>, ()> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?.trim();
    let spec = value.strip_prefix("bytes=").ok_or(())?;
    // One range only; multipart byteranges are not worth their complexity here.
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (a, b) => (
            a.parse().map_err(|_| ())?,
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1)),
        ),
    };
    if start >= size || end < start {
        return Err(());
    }
    Ok(Some(ByteRange { start, end }))
}

pub async fn get(
    s: &dyn Storage,
    repo: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let Some(size) = s.blob_size(repo, digest).await? else {
        return Err(crate::storage::StorageError::BlobUnknown(digest.clone()).into());
    };
    // `[storage.s3] redirect_blobs`: a GET fetches the content (ranges
    // included) from the store itself, with a URL that expires. A HEAD is
    // answered here: the size is already known.
    if !head && let Some(url) = s.blob_redirect(digest).await? {
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, header_value(url.as_str()))
            .header(super::CONTENT_DIGEST, header_value(&digest.to_string()))
            .body(Body::empty())
            .map_err(ApiError::internal);
    }
    let range = parse_range(headers, size).map_err(|()| {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BlobUploadInvalid,
            "requested range not satisfiable",
        )
        .with_header(
            header::CONTENT_RANGE,
            header_value(&format!("bytes */{size}")),
        )
    })?;
    let digest_text = header_value(&digest.to_string());
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(super::CONTENT_DIGEST, digest_text.clone())
        .header(header::ETAG, header_value(&format!("\"{digest}\"")));
    let len = match range {
        Some(r) => {
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {}-{}/{size}", r.start, r.end)),
            );
            r.len()
        }
        None => size,
    };
    builder = builder.header(header::CONTENT_LENGTH, len);
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(s.read_blob(repo, digest, range).await?.body)
    };
    builder.body(body).map_err(ApiError::internal)
}

pub async fn delete(
    s: &dyn Storage,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Response, ApiError> {
    s.delete_blob(repo, digest).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

fn created_blob(repo: &RepoName, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                header_value(&format!("/v2/{repo}/blobs/{digest}")),
            ),
            (super::CONTENT_DIGEST, header_value(&digest.to_string())),
            (header::CONTENT_LENGTH, header_value("0")),
        ],
    )
        .into_response()
}

fn upload_accepted(status: StatusCode, repo: &RepoName, id: UploadId, offset: u64) -> Response {
    (
        status,
        [
            (
                header::LOCATION,
                header_value(&format!("/v2/{repo}/blobs/uploads/{id}")),
            ),
            (header::RANGE, upload_range(offset)),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                header_value(&id.to_string()),
            ),
            (header::CONTENT_LENGTH, header_value("0")),
        ],
    )
        .into_response()
}

fn parse_digest_param(value: &str) -> Result<Digest, ApiError> {
    value
        .parse()
        .map_err(|e: crate::oci::DigestError| ApiError::digest_invalid(e.to_string()))
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic upload, or a new session.
pub async fn start_upload(
    s: &dyn Storage,
    access: &super::Access,
    repo: &RepoName,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query_pairs(req.uri().query());
    if let (Some(mount), Some(from)) = (query_get(&q, "mount"), query_get(&q, "from")) {
        let digest = parse_digest_param(mount)?;
        let from: RepoName = from
            .parse()
            .map_err(|e: crate::oci::NameError| ApiError::name_invalid(e.to_string()))?;
        // Mounting from a repository the caller cannot read would leak its
        // content; that case falls back to an upload, like a missing blob.
        if access.can_read(&from) && s.mount_blob(repo, &from, &digest).await?.is_some() {
            return Ok(created_blob(repo, &digest));
        }
        // Not mountable: the spec says fall back to an upload session.
    } else if let Some(d) = query_get(&q, "digest") {
        let digest = parse_digest_param(d)?;
        let expected = content_length(req.headers());
        s.put_blob(repo, &digest, body_stream(req.into_body()), expected)
            .await?;
        return Ok(created_blob(repo, &digest));
    }
    let id = s.start_upload(repo, access.upload_owner()).await?;
    Ok(upload_accepted(StatusCode::ACCEPTED, repo, id, 0))
}

pub async fn upload_status(
    s: &dyn Storage,
    repo: &RepoName,
    id: UploadId,
) -> Result<Response, ApiError> {
    let offset = s.upload_offset(repo, id).await?;
    Ok(upload_accepted(StatusCode::NO_CONTENT, repo, id, offset))
}

/// Parses `Content-Range: <start>-<end>` (the form registry clients send;
/// a `bytes ` prefix and `/total` suffix are tolerated).
fn parse_content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BlobUploadInvalid,
            "malformed Content-Range",
        )
    };
    let text = v.to_str().map_err(|_| bad())?.trim();
    let text = text
        .strip_prefix("bytes")
        .map(str::trim_start)
        .unwrap_or(text);
    let text = text.strip_prefix('=').unwrap_or(text);
    let text = text.split('/').next().unwrap_or(text);
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = b.trim().parse().map_err(|_| bad())?;
    if end < start {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

/// The chunk's start offset and declared length, from `Content-Range` and
/// `Content-Length`, which must agree when both are present.
fn chunk_bounds(headers: &HeaderMap) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let length = content_length(headers);
    match parse_content_range(headers)? {
        None => Ok((None, length)),
        Some((start, end)) => {
            let range_len = end - start + 1;
            if let Some(l) = length
                && l != range_len
            {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::SizeInvalid,
                    format!("Content-Length {l} does not match Content-Range {start}-{end}"),
                ));
            }
            Ok((Some(start), Some(range_len)))
        }
    }
}

pub async fn patch_upload(
    s: &dyn Storage,
    repo: &RepoName,
    id: UploadId,
    req: Request,
) -> Result<Response, ApiError> {
    let (start, expected) = chunk_bounds(req.headers())?;
    if let Some(start) = start {
        // Checked here too (the append checks again, under the session's
        // lock) so that a refused chunk's body can be read off first.
        let have = s.upload_offset(repo, id).await?;
        if start != have {
            return Err(refuse_unread(req.into_body(), expected, have).await);
        }
    }
    let offset = s
        .append_upload(repo, id, start, body_stream(req.into_body()), expected)
        .await?;
    Ok(upload_accepted(StatusCode::ACCEPTED, repo, id, offset))
}

/// The 416 for a chunk at the wrong offset, after reading off its body
/// (see [`super::drain_unread`]).
async fn refuse_unread(body: Body, expected: Option<u64>, have: u64) -> ApiError {
    super::drain_unread(body, expected).await;
    crate::storage::StorageError::OffsetMismatch { have }.into()
}

pub async fn finish_upload(
    s: &dyn Storage,
    repo: &RepoName,
    id: UploadId,
    req: Request,
) -> Result<Response, ApiError> {
    let q = query_pairs(req.uri().query());
    let Some(d) = query_get(&q, "digest") else {
        return Err(ApiError::digest_invalid(
            "the digest query parameter is required to complete an upload",
        ));
    };
    let digest = parse_digest_param(d)?;
    let (start, expected) = chunk_bounds(req.headers())?;
    if start.is_some() {
        // A last chunk with a position: check it like a PATCH would.
        let have = s.upload_offset(repo, id).await?;
        if start != Some(have) {
            return Err(refuse_unread(req.into_body(), expected, have).await);
        }
    }
    // No body at all (Content-Length: 0) is the common case: skip the append.
    let body = match expected {
        Some(0) => None,
        _ => Some(body_stream(req.into_body())),
    };
    s.complete_upload(repo, id, &digest, body, expected).await?;
    Ok(created_blob(repo, &digest))
}

pub async fn cancel_upload(
    s: &dyn Storage,
    repo: &RepoName,
    id: UploadId,
) -> Result<Response, ApiError> {
    s.cancel_upload(repo, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, size: u64) -> Result<Option<ByteRange>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.parse().expect("header"));
        parse_range(&h, size)
    }

    #[test]
    fn ranges() {
        assert_eq!(
            range("bytes=0-9", 100),
            Ok(Some(ByteRange { start: 0, end: 9 }))
        );
        assert_eq!(
            range("bytes=90-", 100),
            Ok(Some(ByteRange { start: 90, end: 99 }))
        );
        assert_eq!(
            range("bytes=-10", 100),
            Ok(Some(ByteRange { start: 90, end: 99 }))
        );
        assert_eq!(
            range("bytes=50-500", 100),
            Ok(Some(ByteRange { start: 50, end: 99 }))
        );
        assert_eq!(range("bytes=100-", 100), Err(()));
        assert_eq!(range("bytes=5-1", 100), Err(()));
        assert_eq!(range("bytes=0-1,5-6", 100), Err(()));
        assert_eq!(range("items=0-1", 100), Err(()));
    }
}
