//! Manifests of all four kinds, by tag and by digest, and every way a push
//! can be refused.

use super::*;

#[tokio::test]
async fn all_four_manifest_kinds_by_tag_and_digest() {
    let r = Registry::new().await;
    let oci_amd = r.image("multi", media::OCI_MANIFEST, 1, 2).await;
    let oci_arm = r.image("multi", media::OCI_MANIFEST, 2, 2).await;
    check_manifest_round_trip(&r, "multi", "oci-amd64", media::OCI_MANIFEST, &oci_amd).await;
    // By digest, no tag.
    let arm_digest = Digest::sha256_of(&oci_arm);
    let put = r
        .put_manifest(
            "multi",
            &arm_digest.to_string(),
            media::OCI_MANIFEST,
            &oci_arm,
        )
        .await;
    put.expect(StatusCode::CREATED);
    assert_eq!(
        put.header("docker-content-digest"),
        Some(arm_digest.to_string().as_str())
    );
    let index = index_of(
        media::OCI_INDEX,
        media::OCI_MANIFEST,
        &[(&oci_amd, "amd64"), (&oci_arm, "arm64")],
    );
    check_manifest_round_trip(&r, "multi", "oci-index", media::OCI_INDEX, &index).await;

    let docker_amd = r.image("multi", media::DOCKER_MANIFEST, 3, 3).await;
    let docker_arm = r.image("multi", media::DOCKER_MANIFEST, 4, 1).await;
    check_manifest_round_trip(
        &r,
        "multi",
        "docker-amd64",
        media::DOCKER_MANIFEST,
        &docker_amd,
    )
    .await;
    check_manifest_round_trip(
        &r,
        "multi",
        "docker-arm64",
        media::DOCKER_MANIFEST,
        &docker_arm,
    )
    .await;
    let list = index_of(
        media::DOCKER_MANIFEST_LIST,
        media::DOCKER_MANIFEST,
        &[(&docker_amd, "amd64"), (&docker_arm, "arm64")],
    );
    check_manifest_round_trip(
        &r,
        "multi",
        "docker-list",
        media::DOCKER_MANIFEST_LIST,
        &list,
    )
    .await;

    let tags = r.get("/v2/multi/tags/list").await;
    tags.expect(StatusCode::OK);
    assert_eq!(
        tags.json(),
        json!({"name": "multi", "tags": ["docker-amd64", "docker-arm64", "docker-list", "oci-amd64", "oci-index"]})
    );
}

#[tokio::test]
async fn moving_a_tag_is_seen_by_the_next_read() {
    let r = Registry::new().await;
    let one = r.image("a", media::OCI_MANIFEST, 1, 1).await;
    let two = r.image("a", media::OCI_MANIFEST, 2, 1).await;
    r.put_manifest("a", "latest", media::OCI_MANIFEST, &one)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.get("/v2/a/manifests/latest").await.body, one);
    r.put_manifest("a", "latest", media::OCI_MANIFEST, &two)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(r.get("/v2/a/manifests/latest").await.body, two);
    let d1 = Digest::sha256_of(&one);
    assert_eq!(
        r.get(&format!("/v2/a/manifests/{d1}")).await.body,
        one,
        "the old manifest stays by digest"
    );
}

#[tokio::test]
async fn manifest_put_by_digest_must_match() {
    let r = Registry::new().await;
    let m = r.image("a", media::OCI_MANIFEST, 1, 1).await;
    let wrong = Digest::sha256_of(b"not this manifest");
    r.put_manifest("a", &wrong.to_string(), media::OCI_MANIFEST, &m)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get(&format!("/v2/a/manifests/{wrong}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    let right = Digest::sha256_of(&m);
    r.get(&format!("/v2/a/manifests/{right}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    r.put_manifest("a", "sha256:abc", media::OCI_MANIFEST, &m)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[tokio::test]
async fn oversized_manifest_is_413_manifest_invalid() {
    let r = Registry::new().await;
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    r.put_manifest("a", "big", media::OCI_MANIFEST, &big)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID");
    // Without a Content-Length (a streamed body), the limit still holds.
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/v2/a/manifests/big")
        .header("content-type", media::OCI_MANIFEST)
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    r.send(req)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID");
    r.get("/v2/a/manifests/big")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn manifest_referencing_unknown_content_is_manifest_blob_unknown() {
    let r = Registry::new().await;
    let config = r.push_blob("a", b"{}").await;
    let missing = Digest::sha256_of(b"never pushed");
    let layer_missing = json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": OCI_LAYER, "digest": missing, "size": 12}],
    });
    let bytes = serde_json::to_vec(&layer_missing).expect("json");
    let e = r.put_manifest("a", "v1", media::OCI_MANIFEST, &bytes).await;
    e.expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        e.json()["errors"][0]["detail"]["digest"],
        missing.to_string()
    );
    r.get("/v2/a/manifests/v1")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");

    let config_missing = json!({
        "schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": missing, "size": 12},
        "layers": [],
    });
    r.put_manifest(
        "a",
        "v1",
        media::DOCKER_MANIFEST,
        &serde_json::to_vec(&config_missing).expect("json"),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");

    // A blob in another repository does not count.
    let elsewhere = r.push_blob("b", b"only in b").await;
    let other_repo = json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 2},
        "layers": [{"mediaType": OCI_LAYER, "digest": elsewhere, "size": 9}],
    });
    r.put_manifest(
        "a",
        "v1",
        media::OCI_MANIFEST,
        &serde_json::to_vec(&other_repo).expect("json"),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");

    // A descriptor whose size disagrees with the blob.
    let wrong_size = json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": 3},
        "layers": [],
    });
    r.put_manifest(
        "a",
        "v1",
        media::OCI_MANIFEST,
        &serde_json::to_vec(&wrong_size).expect("json"),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");

    // Indexes: every child manifest must exist in the repository.
    let child = r.image("a", media::OCI_MANIFEST, 9, 1).await;
    for (index_type, child_type) in [
        (media::OCI_INDEX, media::OCI_MANIFEST),
        (media::DOCKER_MANIFEST_LIST, media::DOCKER_MANIFEST),
    ] {
        let index = index_of(index_type, child_type, &[(&child, "amd64")]);
        let e = r.put_manifest("a", "multi", index_type, &index).await;
        e.expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
        assert_eq!(
            e.json()["errors"][0]["detail"]["digest"],
            Digest::sha256_of(&child).to_string()
        );
    }
    r.get("/v2/a/manifests/multi")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn malformed_manifests_are_manifest_invalid() {
    let r = Registry::new().await;
    let config = r.push_blob("a", b"{}").await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (media::OCI_MANIFEST, b"{not json".to_vec()),
        (media::OCI_MANIFEST, b"[1,2,3]".to_vec()),
        (media::OCI_MANIFEST, br#"{"schemaVersion":1,"name":"a","tag":"v1"}"#.to_vec()),
        (media::OCI_MANIFEST, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#.to_vec()),
        (
            "application/vnd.example.unknown",
            format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.example.unknown","config":{{"digest":"{config}","size":2}}}}"#)
                .into_bytes(),
        ),
        // Content-Type says index, the body says image manifest.
        (
            media::OCI_INDEX,
            format!(r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"digest":"{config}","size":2}},"layers":[]}}"#, media::OCI_MANIFEST)
                .into_bytes(),
        ),
        (media::OCI_MANIFEST, format!(r#"{{"schemaVersion":2,"config":{{"digest":"{config}"}},"layers":[{{"digest":"sha256:zz"}}]}}"#).into_bytes()),
    ];
    for (content_type, body) in cases {
        r.put_manifest("a", "bad", content_type, &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    }
    r.get("/v2/a/manifests/bad")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn deleting_a_manifest_by_digest_removes_its_tags() {
    let r = Registry::new().await;
    let m = r.image("a", media::OCI_MANIFEST, 1, 1).await;
    let other = r.image("a", media::OCI_MANIFEST, 2, 1).await;
    let d = Digest::sha256_of(&m);
    for tag in ["v1", "stable"] {
        r.put_manifest("a", tag, media::OCI_MANIFEST, &m)
            .await
            .expect(StatusCode::CREATED);
    }
    r.put_manifest("a", "v2", media::OCI_MANIFEST, &other)
        .await
        .expect(StatusCode::CREATED);
    // Warm the cache so deletion must invalidate it.
    r.get("/v2/a/manifests/v1").await.expect(StatusCode::OK);

    r.delete(&format!("/v2/a/manifests/{d}"))
        .await
        .expect(StatusCode::ACCEPTED);
    for reference in ["v1".to_string(), "stable".to_string(), d.to_string()] {
        r.get(&format!("/v2/a/manifests/{reference}"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        r.head(&format!("/v2/a/manifests/{reference}"))
            .await
            .expect(StatusCode::NOT_FOUND);
    }
    assert_eq!(
        r.get("/v2/a/tags/list").await.json(),
        json!({"name": "a", "tags": ["v2"]})
    );
    r.get("/v2/a/manifests/v2").await.expect(StatusCode::OK);
    r.delete(&format!("/v2/a/manifests/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn deleting_a_tag_keeps_the_manifest() {
    let r = Registry::new().await;
    let m = r.image("a", media::OCI_MANIFEST, 1, 1).await;
    let d = Digest::sha256_of(&m);
    r.put_manifest("a", "v1", media::OCI_MANIFEST, &m)
        .await
        .expect(StatusCode::CREATED);
    r.get("/v2/a/manifests/v1").await.expect(StatusCode::OK);
    r.delete("/v2/a/manifests/v1")
        .await
        .expect(StatusCode::ACCEPTED);
    r.get("/v2/a/manifests/v1")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_eq!(r.get(&format!("/v2/a/manifests/{d}")).await.body, m);
    assert_eq!(
        r.get("/v2/a/tags/list").await.json(),
        json!({"name": "a", "tags": []})
    );
    r.delete("/v2/a/manifests/v1")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}
