//! The referrers API and the `OCI-Subject` header.

use super::*;

#[tokio::test]
async fn referrers_api() {
    let r = Registry::new().await;
    let subject = r.image("app", media::OCI_MANIFEST, 1, 1).await;
    let subject_digest =
        check_manifest_round_trip(&r, "app", "v1", media::OCI_MANIFEST, &subject).await;
    let empty = r.push_blob("app", b"{}").await;
    let sbom_blob = r.push_blob("app", br#"{"sbom":true}"#).await;
    let subject_desc =
        json!({"mediaType": media::OCI_MANIFEST, "digest": subject_digest, "size": subject.len()});

    // An artifact with an explicit artifactType.
    let sbom = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": {"mediaType": media::OCI_EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/json", "digest": sbom_blob, "size": 13}],
        "subject": subject_desc,
        "annotations": {"org.example.kind": "sbom"},
    }))
    .expect("json");
    let sbom_digest = Digest::sha256_of(&sbom);
    let put = r
        .put_manifest("app", &sbom_digest.to_string(), media::OCI_MANIFEST, &sbom)
        .await;
    put.expect(StatusCode::CREATED);
    assert_eq!(
        put.header("oci-subject"),
        Some(subject_digest.to_string().as_str())
    );

    // One whose artifact type comes from its config media type (and whose
    // type has a `+`, which a client percent-encodes).
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.signature+json", "digest": empty, "size": 2},
        "layers": [],
        "subject": subject_desc,
    }))
    .expect("json");
    let sig_digest = Digest::sha256_of(&sig);
    let put = r
        .put_manifest("app", "sig", media::OCI_MANIFEST, &sig)
        .await;
    put.expect(StatusCode::CREATED);
    assert_eq!(
        put.header("oci-subject"),
        Some(subject_digest.to_string().as_str())
    );
    // A manifest without subject has no OCI-Subject.
    let plain = r.image("app", media::OCI_MANIFEST, 2, 1).await;
    assert_eq!(
        r.put_manifest("app", "plain", media::OCI_MANIFEST, &plain)
            .await
            .header("oci-subject"),
        None
    );

    let all = r.get(&format!("/v2/app/referrers/{subject_digest}")).await;
    all.expect(StatusCode::OK);
    assert_eq!(all.header("content-type"), Some(media::OCI_INDEX));
    assert_eq!(all.header("oci-filters-applied"), None);
    let index = all.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], media::OCI_INDEX);
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 2, "{index}");
    let sbom_entry = manifests
        .iter()
        .find(|m| m["digest"] == sbom_digest.to_string())
        .expect("sbom listed");
    assert_eq!(
        *sbom_entry,
        json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": sbom_digest,
            "size": sbom.len(),
            "artifactType": "application/vnd.example.sbom.v1",
            "annotations": {"org.example.kind": "sbom"},
        })
    );
    let sig_entry = manifests
        .iter()
        .find(|m| m["digest"] == sig_digest.to_string())
        .expect("signature listed");
    assert_eq!(
        sig_entry["artifactType"],
        "application/vnd.example.signature+json"
    );

    // Filtered.
    let f = r
        .get(&format!(
            "/v2/app/referrers/{subject_digest}?artifactType=application/vnd.example.sbom.v1"
        ))
        .await;
    f.expect(StatusCode::OK);
    assert_eq!(f.header("oci-filters-applied"), Some("artifactType"));
    let listed: Vec<Value> = f.json()["manifests"].as_array().expect("array").clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["digest"], sbom_digest.to_string());
    let f = r.get(&format!("/v2/app/referrers/{subject_digest}?artifactType=application%2Fvnd.example.signature%2Bjson")).await;
    assert_eq!(f.json()["manifests"].as_array().expect("array").len(), 1);
    assert_eq!(f.json()["manifests"][0]["digest"], sig_digest.to_string());
    let none = r
        .get(&format!(
            "/v2/app/referrers/{subject_digest}?artifactType=application/vnd.example.nothing"
        ))
        .await;
    none.expect(StatusCode::OK);
    assert_eq!(none.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(none.json()["manifests"], json!([]));

    // Unknown subject, and unknown repository: an empty index, not a 404.
    for uri in [
        format!(
            "/v2/app/referrers/{}",
            Digest::sha256_of(b"unknown subject")
        ),
        format!("/v2/nobody/here/referrers/{subject_digest}"),
    ] {
        let e = r.get(&uri).await;
        e.expect(StatusCode::OK);
        assert_eq!(e.header("content-type"), Some(media::OCI_INDEX));
        assert_eq!(
            e.json(),
            json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": []})
        );
    }
    r.get("/v2/app/referrers/sha256:nope")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");

    // Deleting a referrer takes it off the list.
    r.delete(&format!("/v2/app/manifests/{sbom_digest}"))
        .await
        .expect(StatusCode::ACCEPTED);
    let after = r
        .get(&format!("/v2/app/referrers/{subject_digest}"))
        .await
        .json();
    assert_eq!(
        after["manifests"].as_array().expect("array").len(),
        1,
        "{after}"
    );
    assert_eq!(after["manifests"][0]["digest"], sig_digest.to_string());
}
