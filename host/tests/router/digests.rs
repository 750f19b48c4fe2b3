//! sha512 alongside sha256.

use super::*;

#[tokio::test]
async fn sha512_blobs_and_manifests() {
    let r = Registry::new().await;
    let data = pattern(2048);
    let d512 = Digest::compute(Algorithm::Sha512, &data);
    assert!(d512.to_string().starts_with("sha512:"));
    r.call(
        Method::POST,
        &format!("/v2/a/blobs/uploads/?digest={d512}"),
        &[],
        data.clone(),
    )
    .await
    .expect(StatusCode::CREATED);
    let g = r.get(&format!("/v2/a/blobs/{d512}")).await;
    g.expect(StatusCode::OK);
    assert_eq!(g.body, data);
    assert_eq!(
        g.header("docker-content-digest"),
        Some(d512.to_string().as_str())
    );

    // Through a session (the running sha256 state cannot help: rehashed).
    let other = pattern(777);
    let o512 = Digest::compute(Algorithm::Sha512, &other);
    let loc = r.open_session("a").await;
    r.patch(&loc, Some((0, 776)), &other)
        .await
        .expect(StatusCode::ACCEPTED);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={o512}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(r.get(&format!("/v2/a/blobs/{o512}")).await.body, other);

    // A manifest referencing sha512 blobs, pushed by its sha512 digest.
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": o512, "size": other.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": d512, "size": data.len()}],
    }))
    .expect("json");
    let m512 = Digest::compute(Algorithm::Sha512, &manifest);
    let put = r
        .put_manifest("a", &m512.to_string(), media::OCI_MANIFEST, &manifest)
        .await;
    put.expect(StatusCode::CREATED);
    assert_eq!(
        put.header("docker-content-digest"),
        Some(m512.to_string().as_str())
    );
    let g = r.get(&format!("/v2/a/manifests/{m512}")).await;
    g.expect(StatusCode::OK);
    assert_eq!(g.body, manifest);
    assert_eq!(
        g.header("docker-content-digest"),
        Some(m512.to_string().as_str())
    );
    let wrong = Digest::compute(Algorithm::Sha512, b"other");
    r.put_manifest("a", &wrong.to_string(), media::OCI_MANIFEST, &manifest)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}
