//! Blob reads (whole and ranged) and deletes.

use super::*;

#[tokio::test]
async fn blob_ranges_are_206_and_unsatisfiable_is_416() {
    let r = Registry::new().await;
    let data = pattern(100);
    let d = r.push_blob("a", &data).await;
    let uri = format!("/v2/a/blobs/{d}");

    for (range, start, end) in [
        ("bytes=10-19", 10, 19),
        ("bytes=90-", 90, 99),
        ("bytes=-5", 95, 99),
        ("bytes=50-1000", 50, 99),
    ] {
        let g = r
            .call(Method::GET, &uri, &[("range", range)], Body::empty())
            .await;
        g.expect(StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            g.header("content-range"),
            Some(format!("bytes {start}-{end}/100").as_str()),
            "{range}"
        );
        assert_eq!(
            g.header("content-length"),
            Some((end - start + 1).to_string().as_str())
        );
        assert_eq!(g.body, data[start..=end], "{range}");
        let h = r
            .call(Method::HEAD, &uri, &[("range", range)], Body::empty())
            .await;
        h.expect(StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            h.header("content-range"),
            Some(format!("bytes {start}-{end}/100").as_str())
        );
    }
    for range in [
        "bytes=100-",
        "bytes=200-300",
        "bytes=20-10",
        "lines=0-1",
        "bytes=0-1,5-6",
    ] {
        let g = r
            .call(Method::GET, &uri, &[("range", range)], Body::empty())
            .await;
        g.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
        assert_eq!(g.header("content-range"), Some("bytes */100"), "{range}");
    }
    let whole = r.get(&uri).await;
    whole.expect(StatusCode::OK);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
}

#[tokio::test]
async fn deleting_a_blob_in_one_repository_leaves_the_others() {
    let r = Registry::new().await;
    let d = r.push_blob("repo/a", b"in both").await;
    r.push_blob("repo/b", b"in both").await;
    r.call(
        Method::POST,
        &format!("/v2/repo/c/blobs/uploads/?mount={d}&from=repo/a"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);

    r.delete(&format!("/v2/repo/a/blobs/{d}"))
        .await
        .expect(StatusCode::ACCEPTED);
    r.get(&format!("/v2/repo/a/blobs/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    r.head(&format!("/v2/repo/a/blobs/{d}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    for repo in ["repo/b", "repo/c"] {
        assert_eq!(
            &r.get(&format!("/v2/{repo}/blobs/{d}")).await.body[..],
            b"in both",
            "{repo}"
        );
    }
    r.delete(&format!("/v2/repo/a/blobs/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}
