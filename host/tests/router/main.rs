//! Router tests: the whole OCI Distribution v1.1 API driven through
//! `tower::ServiceExt::oneshot`, no socket, on a real filesystem store in a
//! temporary directory. Every bad input asserts the exact status and OCI
//! error code; every response is checked for the API version header and for
//! never leaking the storage root.
//!
//! This file holds the harness; each module covers one part of the API.

mod blobs;
mod digests;
mod listing;
mod manifests;
mod names;
mod referrers;
mod robustness;
mod uploads;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use gantry::distribution::AppState;
use gantry::oci::{Algorithm, Digest, media};
use gantry::storage::fs::FsStorage;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

struct Registry {
    app: axum::Router,
    root: PathBuf,
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `errors[0].code` of an OCI error envelope.
    fn code(&self) -> String {
        let v = self.json();
        let errors = v["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no `errors` array: {v}"));
        assert_eq!(errors.len(), 1, "{v}");
        assert!(errors[0]["message"].is_string(), "{v}");
        errors[0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code: {v}"))
            .to_string()
    }

    #[track_caller]
    fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    /// Asserts the status and the OCI error code together.
    #[track_caller]
    fn expect_error(&self, status: StatusCode, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(
            self.code(),
            code,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

impl Registry {
    async fn new() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("storage");
        let storage = FsStorage::open(&root).await.expect("open storage");
        // No `[auth]`: an open registry, as the embedded default config runs.
        let app = gantry::app(AppState::new(Arc::new(storage), None));
        Registry { app, root, dir }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let is_v2 = req.uri().path().starts_with("/v2");
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        if is_v2 {
            assert_eq!(
                reply.header("docker-distribution-api-version"),
                Some("registry/2.0"),
                "{reply:?}"
            );
        }
        // No response, error or not, may reveal where the data lives.
        let text = String::from_utf8_lossy(&reply.body);
        let root = self.root.to_str().expect("utf-8 root");
        assert!(
            !text.contains(root),
            "response leaks the storage root: {text}"
        );
        assert!(
            !text.contains(self.dir.path().to_str().expect("utf-8")),
            "response leaks a path: {text}"
        );
        reply
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(body.into()).expect("request")).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, &[], Body::empty()).await
    }

    async fn head(&self, uri: &str) -> Reply {
        self.call(Method::HEAD, uri, &[], Body::empty()).await
    }

    async fn delete(&self, uri: &str) -> Reply {
        self.call(Method::DELETE, uri, &[], Body::empty()).await
    }

    /// Monolithic upload; returns the digest.
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        self.call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[("content-length", &bytes.len().to_string())],
            bytes.to_vec(),
        )
        .await
        .expect(StatusCode::CREATED);
        digest
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Reply {
        self.call(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[
                ("content-type", media_type),
                ("content-length", &bytes.len().to_string()),
            ],
            bytes.to_vec(),
        )
        .await
    }

    /// Opens an upload session; returns its path (the Location).
    async fn open_session(&self, repo: &str) -> String {
        let r = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Body::empty(),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        let location = r.header("location").expect("Location").to_string();
        assert!(
            location.starts_with(&format!("/v2/{repo}/blobs/uploads/")),
            "{location}"
        );
        assert_eq!(r.header("range"), Some("0-0"));
        assert!(
            r.header("docker-upload-uuid")
                .is_some_and(|id| location.ends_with(id)),
            "{r:?}"
        );
        location
    }

    async fn patch(&self, location: &str, range: Option<(u64, u64)>, bytes: &[u8]) -> Reply {
        let range_text;
        let len = bytes.len().to_string();
        let mut headers = vec![
            ("content-type", "application/octet-stream"),
            ("content-length", len.as_str()),
        ];
        if let Some((a, b)) = range {
            range_text = format!("{a}-{b}");
            headers.push(("content-range", &range_text));
        }
        self.call(Method::PATCH, location, &headers, bytes.to_vec())
            .await
    }

    /// Pushes a config and `layers` layers; returns an image manifest over them.
    async fn image(&self, repo: &str, media_type: &str, seed: u8, layers: usize) -> Vec<u8> {
        let (config_type, layer_type) = if media_type == media::DOCKER_MANIFEST {
            (DOCKER_CONFIG, DOCKER_LAYER)
        } else {
            (OCI_CONFIG, OCI_LAYER)
        };
        let config =
            format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let config_digest = self.push_blob(repo, &config).await;
        let mut descriptors = Vec::new();
        for i in 0..layers {
            let layer = vec![seed.wrapping_add(i as u8); 1000 + i];
            let d = self.push_blob(repo, &layer).await;
            descriptors.push(json!({"mediaType": layer_type, "digest": d, "size": layer.len()}));
        }
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .expect("json")
    }
}

fn index_of(media_type: &str, child_type: &str, children: &[(&[u8], &str)]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(bytes, arch)| {
            json!({
                "mediaType": child_type,
                "digest": Digest::sha256_of(bytes),
                "size": bytes.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}),
    )
    .expect("json")
}

/// Pushes a manifest by tag, then reads it back by tag and digest (GET and
/// HEAD), checking body, type, length and `Docker-Content-Digest`.
async fn check_manifest_round_trip(
    r: &Registry,
    repo: &str,
    tag: &str,
    media_type: &str,
    bytes: &[u8],
) -> Digest {
    let digest = Digest::sha256_of(bytes);
    let put = r.put_manifest(repo, tag, media_type, bytes).await;
    put.expect(StatusCode::CREATED);
    assert_eq!(
        put.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(
        put.header("location"),
        Some(format!("/v2/{repo}/manifests/{digest}").as_str())
    );
    for reference in [tag.to_string(), digest.to_string()] {
        let uri = format!("/v2/{repo}/manifests/{reference}");
        let g = r.get(&uri).await;
        g.expect(StatusCode::OK);
        assert_eq!(g.body, bytes, "{uri}");
        assert_eq!(g.header("content-type"), Some(media_type), "{uri}");
        assert_eq!(
            g.header("docker-content-digest"),
            Some(digest.to_string().as_str()),
            "{uri}"
        );
        let h = r.head(&uri).await;
        h.expect(StatusCode::OK);
        assert!(h.body.is_empty());
        assert_eq!(h.header("content-type"), Some(media_type), "{uri}");
        assert_eq!(
            h.header("content-length"),
            Some(bytes.len().to_string().as_str()),
            "{uri}"
        );
        assert_eq!(
            h.header("docker-content-digest"),
            Some(digest.to_string().as_str()),
            "{uri}"
        );
    }
    digest
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

// ---------------------------------------------------------------- base

#[tokio::test]
async fn base_endpoint_answers_with_the_api_version() {
    let r = Registry::new().await;
    for uri in ["/v2/", "/v2"] {
        let reply = r.get(uri).await;
        reply.expect(StatusCode::OK);
        assert_eq!(reply.json(), json!({}));
    }
    r.head("/v2/").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn health_and_readiness() {
    let r = Registry::new().await;
    r.get("/healthz").await.expect(StatusCode::OK);
    r.get("/readyz").await.expect(StatusCode::OK);
}
