//! Tags list and catalog, with `n`/`last` pagination and `Link`.

use super::*;

#[tokio::test]
async fn tags_list_paginates_with_link() {
    let r = Registry::new().await;
    let m = r.image("pag/repo", media::OCI_MANIFEST, 1, 1).await;
    for tag in ["t3", "t0", "t4", "t1", "t2"] {
        r.put_manifest("pag/repo", tag, media::OCI_MANIFEST, &m)
            .await
            .expect(StatusCode::CREATED);
    }
    let all = r.get("/v2/pag/repo/tags/list").await;
    assert_eq!(
        all.json(),
        json!({"name": "pag/repo", "tags": ["t0", "t1", "t2", "t3", "t4"]})
    );
    assert_eq!(all.header("link"), None);

    let p1 = r.get("/v2/pag/repo/tags/list?n=2").await;
    assert_eq!(p1.json()["tags"], json!(["t0", "t1"]));
    assert_eq!(
        p1.header("link"),
        Some(r#"</v2/pag/repo/tags/list?n=2&last=t1>; rel="next""#)
    );
    let p2 = r.get("/v2/pag/repo/tags/list?n=2&last=t1").await;
    assert_eq!(p2.json()["tags"], json!(["t2", "t3"]));
    assert_eq!(
        p2.header("link"),
        Some(r#"</v2/pag/repo/tags/list?n=2&last=t3>; rel="next""#)
    );
    let p3 = r.get("/v2/pag/repo/tags/list?n=2&last=t3").await;
    assert_eq!(p3.json()["tags"], json!(["t4"]));
    assert_eq!(p3.header("link"), None);
    let past = r.get("/v2/pag/repo/tags/list?last=t4").await;
    assert_eq!(past.json()["tags"], json!([]));

    r.get("/v2/pag/repo/tags/list?n=many")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "UNSUPPORTED");
    r.get("/v2/never/pushed/tags/list")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_paginates_with_link() {
    let r = Registry::new().await;
    for repo in ["c/three", "a/one", "b/two", "a/one/nested"] {
        let m = r.image(repo, media::OCI_MANIFEST, 1, 1).await;
        r.put_manifest(repo, "v1", media::OCI_MANIFEST, &m)
            .await
            .expect(StatusCode::CREATED);
    }
    let all = r.get("/v2/_catalog").await;
    all.expect(StatusCode::OK);
    assert_eq!(
        all.json(),
        json!({"repositories": ["a/one", "a/one/nested", "b/two", "c/three"]})
    );
    let p1 = r.get("/v2/_catalog?n=3").await;
    assert_eq!(
        p1.json()["repositories"],
        json!(["a/one", "a/one/nested", "b/two"])
    );
    assert_eq!(
        p1.header("link"),
        Some(r#"</v2/_catalog?n=3&last=b%2Ftwo>; rel="next""#)
    );
    let p2 = r.get("/v2/_catalog?n=3&last=b%2Ftwo").await;
    assert_eq!(p2.json()["repositories"], json!(["c/three"]));
    assert_eq!(p2.header("link"), None);
}
