//! Blob uploads: monolithic, chunked sessions, status, cancel, mount, and
//! every way a client can get a chunk or a digest wrong.

use super::*;

#[tokio::test]
async fn monolithic_upload_then_get_and_head() {
    let r = Registry::new().await;
    let data = pattern(3000);
    let digest = Digest::sha256_of(&data);
    let reply = r
        .call(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
            &[("content-length", "3000")],
            data.clone(),
        )
        .await;
    reply.expect(StatusCode::CREATED);
    assert_eq!(
        reply.header("location"),
        Some(format!("/v2/team/app/blobs/{digest}").as_str())
    );
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );

    let got = r.get(&format!("/v2/team/app/blobs/{digest}")).await;
    got.expect(StatusCode::OK);
    assert_eq!(got.body, data);
    assert_eq!(
        got.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(got.header("content-length"), Some("3000"));

    let head = r.head(&format!("/v2/team/app/blobs/{digest}")).await;
    head.expect(StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("3000"));
    assert_eq!(
        head.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
}

#[tokio::test]
async fn chunked_upload_with_content_range_status_and_put() {
    let r = Registry::new().await;
    let data = pattern(10_000);
    let digest = Digest::sha256_of(&data);
    let loc = r.open_session("team/app").await;

    let p = r.patch(&loc, Some((0, 3999)), &data[..4000]).await;
    p.expect(StatusCode::ACCEPTED);
    assert_eq!(p.header("range"), Some("0-3999"));
    assert_eq!(p.header("location"), Some(loc.as_str()));

    let status = r.get(&loc).await;
    status.expect(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-3999"));
    assert_eq!(status.header("location"), Some(loc.as_str()));

    r.patch(&loc, Some((4000, 9999)), &data[4000..])
        .await
        .expect(StatusCode::ACCEPTED);
    let done = r
        .call(
            Method::PUT,
            &format!("{loc}?digest={digest}"),
            &[("content-length", "0")],
            Body::empty(),
        )
        .await;
    done.expect(StatusCode::CREATED);
    assert_eq!(
        done.header("location"),
        Some(format!("/v2/team/app/blobs/{digest}").as_str())
    );
    assert_eq!(
        done.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(
        r.get(&format!("/v2/team/app/blobs/{digest}")).await.body,
        data
    );

    // The session is gone once completed.
    r.get(&loc)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn final_chunk_may_ride_in_the_put() {
    let r = Registry::new().await;
    let data = pattern(5000);
    let digest = Digest::sha256_of(&data);
    let loc = r.open_session("a").await;
    r.patch(&loc, Some((0, 2999)), &data[..3000])
        .await
        .expect(StatusCode::ACCEPTED);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={digest}"),
        &[("content-range", "3000-4999"), ("content-length", "2000")],
        data[3000..].to_vec(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(r.get(&format!("/v2/a/blobs/{digest}")).await.body, data);

    // A whole blob in the PUT of a fresh session, no PATCH at all.
    let loc = r.open_session("a").await;
    let small = b"just the put".to_vec();
    let d = Digest::sha256_of(&small);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[("content-length", "12")],
        small.clone(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(r.get(&format!("/v2/a/blobs/{d}")).await.body, small);
}

#[tokio::test]
async fn streamed_patch_without_content_range_appends() {
    let r = Registry::new().await;
    let loc = r.open_session("a").await;
    r.call(Method::PATCH, &loc, &[], b"hello ".to_vec())
        .await
        .expect(StatusCode::ACCEPTED);
    let p = r.call(Method::PATCH, &loc, &[], b"world".to_vec()).await;
    p.expect(StatusCode::ACCEPTED);
    assert_eq!(p.header("range"), Some("0-10"));
    let d = Digest::sha256_of(b"hello world");
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(
        &r.get(&format!("/v2/a/blobs/{d}")).await.body[..],
        b"hello world"
    );
}

#[tokio::test]
async fn cancelled_upload_is_gone() {
    let r = Registry::new().await;
    let loc = r.open_session("a").await;
    r.patch(&loc, Some((0, 2)), b"abc")
        .await
        .expect(StatusCode::ACCEPTED);
    r.delete(&loc).await.expect(StatusCode::NO_CONTENT);
    r.get(&loc)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.patch(&loc, Some((3, 5)), b"def")
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    let d = Digest::sha256_of(b"abc");
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.delete(&loc)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.get(&format!("/v2/a/blobs/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn out_of_order_and_overlapping_chunks_are_416_with_the_received_range() {
    let r = Registry::new().await;
    let data = pattern(30);
    let loc = r.open_session("a").await;
    r.patch(&loc, Some((0, 9)), &data[..10])
        .await
        .expect(StatusCode::ACCEPTED);

    // A gap: starts past the end.
    let gap = r.patch(&loc, Some((15, 24)), &data[15..25]).await;
    gap.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(gap.header("range"), Some("0-9"));
    // An overlap: starts inside what was received.
    let overlap = r.patch(&loc, Some((5, 14)), &data[5..15]).await;
    overlap.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(overlap.header("range"), Some("0-9"));
    // A final chunk in the PUT is checked the same way.
    let d = Digest::sha256_of(&data);
    let put = r
        .call(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[("content-range", "20-29"), ("content-length", "10")],
            data[20..].to_vec(),
        )
        .await;
    put.expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(put.header("range"), Some("0-9"));
    // A malformed Content-Range.
    r.call(
        Method::PATCH,
        &loc,
        &[("content-range", "ten-twenty")],
        b"x".to_vec(),
    )
    .await
    .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");

    // Nothing of the refused chunks was kept: the right next chunk still fits.
    assert_eq!(r.get(&loc).await.header("range"), Some("0-9"));
    r.patch(&loc, Some((10, 29)), &data[10..])
        .await
        .expect(StatusCode::ACCEPTED);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(r.get(&format!("/v2/a/blobs/{d}")).await.body, data);
}

#[tokio::test]
async fn wrong_digest_is_digest_invalid_and_the_blob_is_not_retrievable() {
    let r = Registry::new().await;
    let data = b"the real content".to_vec();
    let claimed = Digest::sha256_of(b"something else");

    // Monolithic.
    let mono = r
        .call(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={claimed}"),
            &[("content-length", "16")],
            data.clone(),
        )
        .await;
    mono.expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get(&format!("/v2/a/blobs/{claimed}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    r.head(&format!("/v2/a/blobs/{claimed}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    let actual = Digest::sha256_of(&data);
    r.get(&format!("/v2/a/blobs/{actual}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");

    // Session.
    let loc = r.open_session("a").await;
    r.patch(&loc, Some((0, 15)), &data)
        .await
        .expect(StatusCode::ACCEPTED);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={claimed}"),
        &[],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.get(&format!("/v2/a/blobs/{claimed}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    r.get(&format!("/v2/a/blobs/{actual}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    // The session is left as it was: the client may retry with the right digest.
    assert_eq!(r.get(&loc).await.header("range"), Some("0-15"));
    r.call(
        Method::PUT,
        &format!("{loc}?digest={actual}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);

    // A missing or malformed digest parameter.
    let loc = r.open_session("a").await;
    r.call(Method::PUT, &loc, &[], Body::empty())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.call(
        Method::PUT,
        &format!("{loc}?digest=sha256:abc"),
        &[],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    r.call(
        Method::POST,
        "/v2/a/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e",
        &[],
        b"x".to_vec(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

#[tokio::test]
async fn size_mismatch_is_size_invalid_and_changes_nothing() {
    let r = Registry::new().await;
    let data = b"12345".to_vec();
    let d = Digest::sha256_of(&data);
    // Monolithic: declares 10 bytes, sends 5.
    r.call(
        Method::POST,
        &format!("/v2/a/blobs/uploads/?digest={d}"),
        &[("content-length", "10")],
        data.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    r.get(&format!("/v2/a/blobs/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");

    let loc = r.open_session("a").await;
    // Content-Range and Content-Length disagree.
    r.call(
        Method::PATCH,
        &loc,
        &[("content-range", "0-9"), ("content-length", "5")],
        data.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    // Content-Range says 10 bytes, the body has 5.
    r.call(
        Method::PATCH,
        &loc,
        &[("content-range", "0-9")],
        data.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    r.call(
        Method::PATCH,
        &loc,
        &[("content-length", "9")],
        data.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    // Last chunk in a PUT, short as well.
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[("content-range", "0-9")],
        data.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    // The session holds nothing of it.
    assert_eq!(r.get(&loc).await.header("range"), Some("0-0"));
    r.patch(&loc, Some((0, 4)), &data)
        .await
        .expect(StatusCode::ACCEPTED);
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(r.get(&format!("/v2/a/blobs/{d}")).await.body, data);
}

#[tokio::test]
async fn cross_repository_mount() {
    let r = Registry::new().await;
    let d = r.push_blob("source/repo", b"shared layer").await;
    let m = r
        .call(
            Method::POST,
            &format!("/v2/target/repo/blobs/uploads/?mount={d}&from=source/repo"),
            &[],
            Body::empty(),
        )
        .await;
    m.expect(StatusCode::CREATED);
    assert_eq!(
        m.header("location"),
        Some(format!("/v2/target/repo/blobs/{d}").as_str())
    );
    assert_eq!(
        m.header("docker-content-digest"),
        Some(d.to_string().as_str())
    );
    assert_eq!(
        &r.get(&format!("/v2/target/repo/blobs/{d}")).await.body[..],
        b"shared layer"
    );

    // Unknown blob, or a repository that lacks it: fall back to a session.
    let unknown = Digest::sha256_of(b"nobody has this");
    for uri in [
        format!("/v2/target/repo/blobs/uploads/?mount={unknown}&from=source/repo"),
        format!("/v2/target/repo/blobs/uploads/?mount={d}&from=elsewhere"),
    ] {
        let f = r.call(Method::POST, &uri, &[], Body::empty()).await;
        f.expect(StatusCode::ACCEPTED);
        let loc = f.header("location").expect("session location").to_string();
        assert!(loc.starts_with("/v2/target/repo/blobs/uploads/"), "{loc}");
        r.get(&loc).await.expect(StatusCode::NO_CONTENT);
    }
    r.get(&format!("/v2/target/repo/blobs/{unknown}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    // A bad `from` is a name error.
    r.call(
        Method::POST,
        &format!("/v2/target/blobs/uploads/?mount={d}&from=../source"),
        &[],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
}

#[tokio::test]
async fn an_upload_session_belongs_to_its_repository() {
    let r = Registry::new().await;
    let loc = r.open_session("repo/a").await;
    r.patch(&loc, Some((0, 2)), b"abc")
        .await
        .expect(StatusCode::ACCEPTED);
    let id = loc.rsplit('/').next().expect("id");
    let foreign = format!("/v2/repo/b/blobs/uploads/{id}");
    let d = Digest::sha256_of(b"abc");
    r.get(&foreign)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.patch(&foreign, Some((3, 5)), b"def")
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.call(
        Method::PUT,
        &format!("{foreign}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.delete(&foreign)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    r.get(&format!("/v2/repo/b/blobs/{d}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    // The owner's session is untouched.
    assert_eq!(r.get(&loc).await.header("range"), Some("0-2"));
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
}
