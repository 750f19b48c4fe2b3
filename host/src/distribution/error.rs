//! The one HTTP error type of the API: an OCI error envelope
//! `{"errors":[{"code","message","detail"}]}` with its status and headers.
//!
//! Internal causes (I/O errors, paths) never reach the client: they ride in
//! a response extension that the logging middleware writes to the log.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::storage::StorageError;

/// OCI distribution error codes (plus `UNKNOWN` for our own failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    Toomanyrequests,
    Unknown,
}

/// An internal cause kept for the log, never serialised to the client.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub internal: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            internal: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    pub fn name_invalid(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, reason)
    }

    pub fn digest_invalid(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid, reason)
    }

    pub fn manifest_invalid(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::ManifestInvalid, reason)
    }

    pub fn unsupported(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError::new(status, ErrorCode::Unsupported, reason)
    }

    /// Our own failure: the client learns only that it happened.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unknown,
            "internal error; see the registry log",
        );
        e.internal = Some(cause.to_string());
        e
    }
}

/// The `Range` header value for an upload holding `offset` bytes.
pub fn upload_range(offset: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("0-{}", offset.saturating_sub(1)))
        .unwrap_or(HeaderValue::from_static("0-0"))
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::BlobUnknown(d) => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, "blob unknown to registry")
                .with_detail(serde_json::json!({ "digest": d.to_string() })),
            StorageError::ManifestUnknown(r) => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, "manifest unknown")
                    .with_detail(serde_json::json!({ "reference": r }))
            }
            StorageError::NameUnknown => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NameUnknown, "repository name not known to registry")
            }
            StorageError::UploadUnknown => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::BlobUploadUnknown, "blob upload unknown to registry")
            }
            e @ StorageError::TooManyUploads { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::Toomanyrequests, e.to_string())
                    .with_detail(serde_json::json!({ "hint": "finish or cancel open upload sessions first" }))
            }
            StorageError::OffsetMismatch { have } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUploadInvalid,
                format!("chunk must start at offset {have}"),
            )
            .with_header(http::header::RANGE, upload_range(have)),
            StorageError::DigestMismatch { expected, actual } => {
                ApiError::digest_invalid(format!("content digest {actual} does not match the declared {expected}"))
                    .with_detail(serde_json::json!({ "expected": expected.to_string(), "actual": actual.to_string() }))
            }
            StorageError::SizeMismatch { expected, actual } => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::SizeInvalid,
                format!("received {actual} bytes, but {expected} were declared"),
            ),
            StorageError::Body(err) if err.kind() == std::io::ErrorKind::TimedOut => {
                let mut e = ApiError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::BlobUploadInvalid, "the request body arrived too slowly");
                e.internal = Some(err.to_string());
                e
            }
            StorageError::Body(err) => {
                let mut e = ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BlobUploadInvalid, "the request body ended early or could not be read");
                e.internal = Some(err.to_string());
                e
            }
            e @ StorageError::TagMoved { .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::ManifestInvalid, e.to_string())
            }
            e @ StorageError::Io { .. } => ApiError::internal(e),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    errors: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            errors: [Entry {
                code: self.code,
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        };
        let mut resp = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        if let Some(cause) = self.internal {
            resp.extensions_mut().insert(InternalCause(cause));
        }
        resp
    }
}
