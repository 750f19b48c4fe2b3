//! Repository names (grammar, traversal), unknown things, wrong methods.

use super::*;

#[tokio::test]
async fn invalid_names_and_traversal_are_name_invalid() {
    let r = Registry::new().await;
    let d = Digest::sha256_of(b"x");
    let paths = [
        "/v2/../etc/tags/list".to_string(),
        "/v2/../../etc/passwd/manifests/latest".to_string(),
        "/v2/a/../../b/manifests/latest".to_string(),
        "/v2/%2e%2e/%2e%2e/etc/manifests/latest".to_string(),
        "/v2/a/%2e%2e/b/tags/list".to_string(),
        "/v2/a%2Fb/tags/list".to_string(),
        "/v2/a%2fb/manifests/latest".to_string(),
        "/v2//etc/passwd/tags/list".to_string(),
        "/v2/Upper/tags/list".to_string(),
        "/v2/team/App/manifests/latest".to_string(),
        "/v2/a./tags/list".to_string(),
        "/v2/a__-b/tags/list".to_string(),
        format!("/v2/{}/tags/list", "a".repeat(256)),
        format!("/v2/../../etc/blobs/{d}"),
        "/v2/../blobs/uploads/".to_string(),
        format!("/v2/./a/referrers/{d}"),
    ];
    for path in &paths {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::POST,
        ] {
            let reply = r.call(method.clone(), path, &[], Body::empty()).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}");
            if method != Method::HEAD {
                assert_eq!(reply.code(), "NAME_INVALID", "{method} {path}");
            }
        }
    }
    // Nothing was created outside (or inside) the store by those requests.
    let repos = std::fs::read_dir(r.root.join("repositories"))
        .expect("repositories dir")
        .count();
    assert_eq!(repos, 0);
}

#[tokio::test]
async fn unknown_things_have_their_codes() {
    let r = Registry::new().await;
    let d = Digest::sha256_of(b"unknown");
    r.get("/v2/nope/tags/list")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    r.get("/v2/nope/manifests/latest")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.get(&format!("/v2/nope/manifests/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.delete("/v2/nope/manifests/latest")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.delete(&format!("/v2/nope/manifests/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.get(&format!("/v2/nope/blobs/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    r.head(&format!("/v2/nope/blobs/{d}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    r.delete(&format!("/v2/nope/blobs/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    let id = uuid_like();
    r.get(&format!("/v2/nope/blobs/uploads/{id}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.get("/v2/nope/blobs/uploads/not-an-id")
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.get("/v2/nope/blobs/sha256:short")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    // Neither a tag nor a digest: nothing is found there (404, as the
    // v1.1.1 conformance suite's `.INVALID_MANIFEST_NAME` expects)…
    for bad in ["-bad-tag", ".INVALID_MANIFEST_NAME", "sha256:short"] {
        r.get(&format!("/v2/nope/manifests/{bad}"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        r.head(&format!("/v2/nope/manifests/{bad}"))
            .await
            .expect(StatusCode::NOT_FOUND);
        r.delete(&format!("/v2/nope/manifests/{bad}"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    }
    // …and nothing can be stored there.
    let oci = "application/vnd.oci.image.manifest.v1+json";
    r.put_manifest("nope", ".INVALID_MANIFEST_NAME", oci, b"{}")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "TAG_INVALID");
    r.put_manifest("nope", "sha256:short", oci, b"{}")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get("/v2/nope/things/x")
        .await
        .expect_error(StatusCode::NOT_FOUND, "UNSUPPORTED");
}

fn uuid_like() -> String {
    "0b7c1c52-3f2e-4a4e-9a57-6d5f0e0b1a2c".to_string()
}

#[tokio::test]
async fn wrong_methods_are_405_unsupported() {
    let r = Registry::new().await;
    let d = r.push_blob("a", b"blob").await;
    let loc = r.open_session("a").await;
    let cases = [
        (Method::POST, "/v2/".to_string()),
        (Method::DELETE, "/v2/".to_string()),
        (Method::POST, "/v2/_catalog".to_string()),
        (Method::DELETE, "/v2/a/tags/list".to_string()),
        (Method::POST, "/v2/a/manifests/v1".to_string()),
        (Method::PATCH, "/v2/a/manifests/v1".to_string()),
        (Method::PUT, format!("/v2/a/blobs/{d}")),
        (Method::POST, format!("/v2/a/blobs/{d}")),
        (Method::GET, "/v2/a/blobs/uploads/".to_string()),
        (Method::PATCH, "/v2/a/blobs/uploads/".to_string()),
        (Method::POST, loc.clone()),
        (Method::PUT, format!("/v2/a/referrers/{d}")),
    ];
    for (method, uri) in cases {
        let reply = r.call(method.clone(), &uri, &[], Body::empty()).await;
        reply.expect_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    }
}
