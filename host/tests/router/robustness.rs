//! Concurrency, internal failures, and regressions of the storage core.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_the_same_and_different_blobs() {
    let r = Arc::new(Registry::new().await);
    let shared = pattern(50_000);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let r = r.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            // Half monolithic, half chunked; all the same content, four repositories.
            let repo = format!("con/r{}", i % 4);
            let d = Digest::sha256_of(&shared);
            if i % 2 == 0 {
                r.push_blob(&repo, &shared).await;
            } else {
                let loc = r.open_session(&repo).await;
                for (n, chunk) in shared.chunks(10_000).enumerate() {
                    let start = (n * 10_000) as u64;
                    r.patch(&loc, Some((start, start + chunk.len() as u64 - 1)), chunk)
                        .await
                        .expect(StatusCode::ACCEPTED);
                }
                r.call(
                    Method::PUT,
                    &format!("{loc}?digest={d}"),
                    &[],
                    Body::empty(),
                )
                .await
                .expect(StatusCode::CREATED);
            }
            // And one blob of its own.
            let own = format!("own blob {i}").into_bytes();
            let od = r.push_blob(&repo, &own).await;
            (repo, d, od, own)
        }));
    }
    for t in tasks {
        let (repo, d, od, own) = t.await.expect("task");
        assert_eq!(r.get(&format!("/v2/{repo}/blobs/{d}")).await.body, shared);
        assert_eq!(r.get(&format!("/v2/{repo}/blobs/{od}")).await.body, own);
    }
}

#[tokio::test]
async fn internal_failures_are_unknown_500_without_detail() {
    let r = Registry::new().await;
    // Break the store under the running registry: its temporary directory
    // becomes a file, so every write fails.
    let tmp = r.root.join("tmp");
    std::fs::remove_dir_all(&tmp).expect("remove tmp");
    std::fs::write(&tmp, b"not a directory").expect("write");
    let d = Digest::sha256_of(b"x");
    let e = r
        .call(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={d}"),
            &[],
            b"x".to_vec(),
        )
        .await;
    e.expect_error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN");
    let text = String::from_utf8_lossy(&e.body);
    assert!(
        !text.contains("tmp") && !text.contains("os error"),
        "internal detail leaked: {text}"
    );
    r.get("/readyz")
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE);
    r.get("/healthz").await.expect(StatusCode::OK);
}

/// Regression: completing an upload published the session's whole data file,
/// including bytes past the acknowledged offset that a cut-off chunk had
/// written before its request died. The blob then held the garbage after
/// the verified content (its digest check had only hashed `offset` bytes).
#[tokio::test]
async fn regression_bytes_of_a_cut_off_chunk_never_reach_the_blob() {
    let r = Arc::new(Registry::new().await);
    let loc = r.open_session("a").await;
    r.patch(&loc, Some((0, 4)), b"hello")
        .await
        .expect(StatusCode::ACCEPTED);
    let id = loc.rsplit('/').next().expect("id").to_string();
    let data_file = r.root.join("uploads").join(&id).join("data");

    // A streamed chunk: some bytes arrive, then the request dies (its future
    // is dropped, as when a connection is cut or the task is cancelled).
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(&loc)
        .body(Body::from_stream(body))
        .expect("request");
    let app = r.app.clone();
    let task = tokio::spawn(async move { app.oneshot(req).await });
    tx.send(Bytes::from_static(b"GARBAGE")).await.expect("send");
    wait_for_len(&data_file, 12).await;
    task.abort();
    assert!(task.await.is_err(), "the request was cut off");
    drop(tx);

    assert_eq!(r.get(&loc).await.header("range"), Some("0-4"));
    let d = Digest::sha256_of(b"hello");
    r.call(
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[("content-length", "0")],
        Body::empty(),
    )
    .await
    .expect(StatusCode::CREATED);
    let blob = r.get(&format!("/v2/a/blobs/{d}")).await;
    assert_eq!(&blob.body[..], b"hello");
    assert_eq!(
        r.head(&format!("/v2/a/blobs/{d}"))
            .await
            .header("content-length"),
        Some("5")
    );
}

/// Waits (liveness only, generous) until a file reaches `len` bytes.
async fn wait_for_len(path: &Path, len: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) >= len {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never reached {len} bytes",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
