//! Black-box tests: the real `gantry` binary on a free loopback port, driven
//! by real clients (skopeo, and raw sockets for what no polite client sends).
//!
//! skopeo is required: without it these tests fail and say how to install it.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    DOCKER_MANIFEST, Gantry, LIVENESS, Layout, Noise, OCI_INDEX, OCI_MANIFEST, ON_S3,
    assert_same_blobs, blob, connect, finish, gantry_bin, make_certs, make_other_key, open_session,
    patch, raw_request, read_response, repo_root, sha256, skopeo, skopeo_raw, stored_under,
    upload_range,
};

/// Layers of a few hundred KiB: enough for several reads and writes per
/// blob, small enough to keep the suite quick.
const LAYER_SIZE: usize = 384 * 1024;

fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// A layout holding a three-layer image tagged `v1`.
fn single_image_layout(dir: &Path, seed: u64) -> (Layout, support::Image) {
    let layout = Layout::create(dir);
    let image = layout.add_image(&mut Noise::new(seed), "amd64", 3, LAYER_SIZE);
    layout.tag(&image.manifest, "v1");
    (layout, image)
}

fn push(src: &Path, dest: &str, extra: &[&str]) {
    let src = oci_ref(src, "v1");
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    args.extend_from_slice(extra);
    args.extend([src.as_str(), dest]);
    skopeo(&args);
}

fn pull(src: &str, out: &Path, extra: &[&str]) -> Layout {
    let dest = oci_ref(out, "v1");
    let mut args = vec!["copy", "--src-tls-verify=false"];
    args.extend_from_slice(extra);
    args.extend([src, dest.as_str()]);
    skopeo(&args);
    Layout {
        dir: out.to_path_buf(),
    }
}

fn get_json(g: &Gantry, path: &str) -> (reqwest::header::HeaderMap, serde_json::Value) {
    let r = g
        .client()
        .get(g.url(path))
        .header(
            "accept",
            format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}"),
        )
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200, "GET {path}");
    let headers = r.headers().clone();
    (headers, r.json().expect("JSON body"))
}

/// This binary runs on the backend it says it does (blackbox_s3.rs runs
/// this file again on s3), and on s3 the content lands in the bucket.
#[test]
fn the_server_runs_on_the_backend_this_binary_names() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let g = Gantry::start(&root);
    let expected = if ON_S3 {
        "backend=\"s3\""
    } else {
        "backend=\"fs\""
    };
    g.wait_for_log(expected);
    let data = b"where does this go";
    let digest = sha256(data);
    let r = g
        .client()
        .post(g.url(&format!("/v2/where/blobs/uploads/?digest={digest}")))
        .body(data.to_vec())
        .send()
        .expect("POST");
    assert_eq!(r.status(), 201);
    let hex = digest.trim_start_matches("sha256:");
    let stored = stored_under(&root, "blobs");
    assert!(
        stored.iter().any(|k| k.ends_with(hex)),
        "the blob is not in the store: {stored:?}"
    );
    assert_eq!(root.join("blobs").exists(), !ON_S3, "local blobs/ on s3");
}

// ---------------------------------------------------------------- skopeo push and pull

#[test]
fn skopeo_pushes_and_pulls_a_multi_layer_oci_image() {
    let work = tempfile::tempdir().expect("tempdir");
    let g = Gantry::start(&work.path().join("root"));
    let (src, image) = single_image_layout(&work.path().join("src"), 1);

    let dest = format!("docker://{}/team/app:v1", g.host());
    push(&src.dir, &dest, &[]);
    let out = pull(&dest, &work.path().join("out"), &[]);
    assert_same_blobs(&src, &out);

    // The registry serves the manifest exactly as pushed.
    let (headers, manifest) = get_json(&g, "/v2/team/app/manifests/v1");
    assert_eq!(
        headers["docker-content-digest"],
        image.manifest.digest.as_str()
    );
    assert_eq!(headers["content-type"], OCI_MANIFEST);
    assert_eq!(manifest["layers"].as_array().expect("layers").len(), 3);
    let (_, tags) = get_json(&g, "/v2/team/app/tags/list");
    assert_eq!(
        tags,
        serde_json::json!({"name": "team/app", "tags": ["v1"]})
    );

    // HEAD over the wire keeps the length and digest (clients size blobs
    // and check manifests with HEAD alone).
    for (path, d) in [
        ("/v2/team/app/manifests/v1".to_string(), &image.manifest),
        (
            format!("/v2/team/app/blobs/{}", image.layers[0].digest),
            &image.layers[0],
        ),
    ] {
        let head = raw_request(
            g.addr,
            format!(
                "HEAD {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                g.host()
            )
            .as_bytes(),
        );
        assert_eq!(head.status, 200, "HEAD {path}");
        assert_eq!(
            head.header("content-length"),
            Some(d.size.to_string()),
            "HEAD {path}"
        );
        assert_eq!(
            head.header("docker-content-digest").as_deref(),
            Some(d.digest.as_str()),
            "HEAD {path}"
        );
        assert_eq!(
            head.header("docker-distribution-api-version").as_deref(),
            Some("registry/2.0")
        );
        assert!(head.body.is_empty());
    }
}

#[test]
fn skopeo_pushes_and_pulls_docker_schema2() {
    let work = tempfile::tempdir().expect("tempdir");
    let g = Gantry::start(&work.path().join("root"));
    let (src, image) = single_image_layout(&work.path().join("src"), 2);

    let dest = format!("docker://{}/team/docker:v1", g.host());
    push(&src.dir, &dest, &["--format", "v2s2"]);

    let (headers, manifest) = get_json(&g, "/v2/team/docker/manifests/v1");
    assert_eq!(headers["content-type"], DOCKER_MANIFEST);
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["digest"], image.config.digest);
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest"))
        .collect();
    let want: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layers, want);

    // Pull into a `dir:` copy, which keeps the manifest and every blob as
    // the registry served them (no conversion back to OCI).
    let out = work.path().join("out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("dir:{}", out.display()),
    ]);
    let served = g
        .client()
        .get(g.url("/v2/team/docker/manifests/v1"))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .expect("GET");
    let served = served.bytes().expect("body");
    assert_eq!(
        fs::read(out.join("manifest.json")).expect("manifest.json"),
        served.as_ref()
    );
    for d in image.layers.iter().chain([&image.config]) {
        let got =
            fs::read(out.join(d.hex())).unwrap_or_else(|e| panic!("pulled blob {}: {e}", d.digest));
        assert!(
            got == src.blob(&d.digest),
            "blob {} differs after the round trip",
            d.digest
        );
    }
}

#[test]
fn skopeo_pushes_and_pulls_a_two_platform_index() {
    let work = tempfile::tempdir().expect("tempdir");
    let g = Gantry::start(&work.path().join("root"));
    let src = Layout::create(&work.path().join("src"));
    let mut noise = Noise::new(3);
    let amd = src.add_image(&mut noise, "amd64", 3, LAYER_SIZE / 2);
    let arm = src.add_image(&mut noise, "arm64", 3, LAYER_SIZE / 2);
    let index = src.add_index(&[(&amd, "amd64"), (&arm, "arm64")]);
    src.tag(&index, "v1");

    let dest = format!("docker://{}/team/multi:v1", g.host());
    push(&src.dir, &dest, &["--all"]);
    let (headers, served) = get_json(&g, "/v2/team/multi/manifests/v1");
    assert_eq!(headers["content-type"], OCI_INDEX);
    assert_eq!(headers["docker-content-digest"], index.digest.as_str());
    let platforms: Vec<&str> = served["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);

    let out = pull(&dest, &work.path().join("out"), &["--all"]);
    assert_same_blobs(&src, &out);
}

// ---------------------------------------------------------------- bad inputs on the wire

#[test]
fn a_truncated_chunk_does_not_move_the_upload_offset() {
    let work = tempfile::tempdir().expect("tempdir");
    let g = Gantry::start(&work.path().join("root"));
    let data = Noise::new(4).bytes(300);
    let loc = open_session(&g, "cut/off");
    assert_eq!(patch(&g, &loc, 0, &data[..100]).status(), 202);

    // Declares 1000 bytes, sends 10, and hangs up: with a Content-Range, and
    // streamed without one.
    for content_range in ["Content-Range: 100-1099\r\n", ""] {
        let mut s = connect(g.addr);
        write!(
            s,
            "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n{content_range}Content-Length: 1000\r\n\r\n",
            g.host()
        )
        .expect("head");
        s.write_all(&[0xAB; 10]).expect("partial body");
        drop(s);
        assert_eq!(
            upload_range(&g, &loc),
            "0-99",
            "the cut-off bytes were counted"
        );
    }

    // The next chunk fits exactly where the last good one ended, and the
    // blob holds no byte of the cut-off ones.
    assert_eq!(patch(&g, &loc, 100, &data[100..]).status(), 202);
    assert_eq!(upload_range(&g, &loc), "0-299");
    let digest = sha256(&data);
    finish(&g, &loc, &digest);
    assert_eq!(blob(&g, "cut/off", &digest), data);
}

#[test]
fn traversal_in_the_request_line_never_reaches_a_file() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let g = Gantry::start(&root);
    // A file outside the store that a traversal would reach.
    fs::write(work.path().join("secret"), b"TOP SECRET").expect("secret");
    let d = sha256(b"x");
    let targets = [
        "/v2/../../etc/passwd/manifests/x".to_string(),
        "/v2/../../../secret/tags/list".to_string(),
        "/v2/%2e%2e/%2e%2e/etc/passwd/manifests/x".to_string(),
        "/v2/..%2f..%2fsecret/tags/list".to_string(),
        "/v2/a%2F..%2F..%2Fsecret/manifests/latest".to_string(),
        format!("/v2/../../secret/blobs/{d}"),
        "/v2/..;/..;/etc/passwd/manifests/x".to_string(),
        "/../../etc/passwd".to_string(),
        "/v2/a/blobs/sha256:..%2f..%2f..%2fsecret".to_string(),
    ];
    for target in &targets {
        let resp = raw_request(
            g.addr,
            format!(
                "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                g.host()
            )
            .as_bytes(),
        );
        assert!(
            matches!(resp.status, 400 | 404),
            "GET {target}: {} {:?}",
            resp.status,
            resp.head
        );
        let body = String::from_utf8_lossy(&resp.body);
        assert!(
            !body.contains("root:") && !body.contains("TOP SECRET"),
            "GET {target} served a file: {body}"
        );
        assert!(
            !body.contains(root.to_str().expect("utf-8")),
            "GET {target} leaked the root: {body}"
        );
        if target.starts_with("/v2/") && !target.contains("/blobs/sha256:") {
            let code: serde_json::Value = serde_json::from_slice(&resp.body)
                .unwrap_or_else(|_| panic!("GET {target}: {body}"));
            assert_eq!(code["errors"][0]["code"], "NAME_INVALID", "GET {target}");
        }
    }
}

// ---------------------------------------------------------------- restart and shutdown

#[test]
fn content_and_upload_sessions_survive_a_restart() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let (src, _) = single_image_layout(&work.path().join("src"), 5);
    let big = Noise::new(6).bytes(200_000);
    let big_digest = sha256(&big);

    let mut first = Gantry::start(&root);
    push(
        &src.dir,
        &format!("docker://{}/team/app:v1", first.host()),
        &[],
    );
    let loc = open_session(&first, "team/app");
    assert_eq!(patch(&first, &loc, 0, &big[..80_000]).status(), 202);
    first.stop();

    let second = Gantry::start(&root);
    let out = pull(
        &format!("docker://{}/team/app:v1", second.host()),
        &work.path().join("out"),
        &[],
    );
    assert_same_blobs(&src, &out);
    assert_eq!(upload_range(&second, &loc), "0-79999");
    assert_eq!(patch(&second, &loc, 80_000, &big[80_000..]).status(), 202);
    finish(&second, &loc, &big_digest);
    assert_eq!(blob(&second, "team/app", &big_digest), big);
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(p)
            }
        }
    }
    out
}

#[test]
fn sigterm_lets_an_in_flight_upload_finish() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let mut g = Gantry::start(&root);
    let data = Noise::new(7).bytes(4 * 64 * 1024);
    let loc = open_session(&g, "slow/upload");
    let id = loc.rsplit('/').next().expect("id").to_string();

    // A chunked PATCH: the first quarter, then SIGTERM, then the rest.
    let mut s = connect(g.addr);
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        g.host()
    )
    .expect("head");
    let mut chunks = data.chunks(64 * 1024);
    let first = chunks.next().expect("chunk");
    write!(s, "{:x}\r\n", first.len()).expect("size");
    s.write_all(first).expect("chunk");
    s.write_all(b"\r\n").expect("crlf");
    s.flush().expect("flush");
    // The request is in the handler once its bytes reach the session file.
    // (On s3 a chunk smaller than a part stays in memory until the request
    // ends, so there is nothing to watch: give the request a moment.)
    if ON_S3 {
        std::thread::sleep(Duration::from_millis(500));
    } else {
        let data_file = root.join("uploads").join(&id).join("data");
        let deadline = Instant::now() + LIVENESS;
        while fs::metadata(&data_file).map(|m| m.len()).unwrap_or(0) < first.len() as u64 {
            assert!(
                Instant::now() < deadline,
                "the first chunk never reached the upload"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    g.sigterm();
    g.wait_for_log("shutdown signal received");
    for chunk in chunks {
        write!(s, "{:x}\r\n", chunk.len()).expect("size");
        s.write_all(chunk).expect("chunk");
        s.write_all(b"\r\n").expect("crlf");
    }
    s.write_all(b"0\r\n\r\n").expect("last chunk");
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 202, "{resp:?}");
    assert_eq!(
        resp.header("range").as_deref(),
        Some(format!("0-{}", data.len() - 1).as_str())
    );
    let status = g.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}:\n{}", g.log());

    // Nothing half-written is visible: no blob, no temporary file.
    assert_eq!(stored_under(&root, "blobs"), Vec::<String>::new());
    assert_eq!(stored_under(&root, "tmp"), Vec::<String>::new());
    // And what was acknowledged is durable: the session completes after a restart.
    let g = Gantry::start(&root);
    assert_eq!(upload_range(&g, &loc), format!("0-{}", data.len() - 1));
    let digest = sha256(&data);
    finish(&g, &loc, &digest);
    assert_eq!(blob(&g, "slow/upload", &digest), data);
}

#[test]
fn an_upload_abandoned_at_shutdown_leaves_nothing_visible() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let mut g = Gantry::start(&root);
    let data = Noise::new(8).bytes(128 * 1024);
    let digest = sha256(&data);

    // A monolithic upload that stops half-way; the server is told to stop;
    // the client gives up.
    let mut s = connect(g.addr);
    write!(
        s,
        "POST /v2/half/done/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        g.host(),
        data.len()
    )
    .expect("head");
    s.write_all(&data[..data.len() / 2]).expect("half");
    s.flush().expect("flush");
    if ON_S3 {
        // Held in memory until it fills a part: nothing to watch.
        std::thread::sleep(Duration::from_millis(500));
    } else {
        let deadline = Instant::now() + LIVENESS;
        while files_under(&root.join("tmp")).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the upload never started spooling"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    g.sigterm();
    g.wait_for_log("shutdown signal received");
    drop(s);
    let status = g.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}:\n{}", g.log());
    assert_eq!(stored_under(&root, "blobs"), Vec::<String>::new());
    assert_eq!(
        stored_under(&root, "repositories/half"),
        Vec::<String>::new(),
        "the repository must not have a link to a partial blob"
    );

    let g = Gantry::start(&root);
    assert_eq!(
        stored_under(&root, "tmp"),
        Vec::<String>::new(),
        "startup clears temporary files"
    );
    let r = g
        .client()
        .get(g.url(&format!("/v2/half/done/blobs/{digest}")))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404);
}

// ---------------------------------------------------------------- TLS

#[test]
fn tls_with_a_test_ca_push_and_pull() {
    let work = tempfile::tempdir().expect("tempdir");
    let tls = make_certs(&work.path().join("certs"));
    let cert_dir = work.path().join("trust");
    fs::create_dir_all(&cert_dir).expect("trust dir");
    fs::copy(&tls.ca, cert_dir.join("ca.crt")).expect("ca.crt");

    let mut g = Gantry::start_tls(&work.path().join("root"), &tls);
    let (src, _) = single_image_layout(&work.path().join("src"), 9);
    let dest = format!("docker://{}/secure/app:v1", g.host());
    let trust = cert_dir.to_str().expect("utf-8");
    skopeo(&[
        "copy",
        "--dest-tls-verify=true",
        "--dest-cert-dir",
        trust,
        &oci_ref(&src.dir, "v1"),
        &dest,
    ]);
    let out = work.path().join("out");
    skopeo(&[
        "copy",
        "--src-tls-verify=true",
        "--src-cert-dir",
        trust,
        &dest,
        &oci_ref(&out, "v1"),
    ]);
    assert_same_blobs(&src, &Layout { dir: out });

    // Verification is real: without the CA, skopeo refuses the server.
    let untrusted = skopeo_raw(&["inspect", "--tls-verify=true", &dest]);
    assert!(!untrusted.status.success(), "skopeo trusted an unknown CA");

    // Plain HTTP to the TLS port gets no HTTP answer (the server may hang
    // up before the request is even written: that is an answer too).
    let mut s = connect(g.addr);
    let request = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        g.host()
    );
    let _ = s.write_all(request.as_bytes());
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut raw);
    assert!(
        !raw.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was served on the TLS port"
    );
    // And the same through an HTTP client.
    let plain = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(LIVENESS)
        .build()
        .expect("client");
    assert!(
        plain
            .get(format!("http://{}/v2/", g.host()))
            .send()
            .is_err()
    );
    // Graceful shutdown works over TLS too.
    g.stop();
}

fn config_check(file: &Path) -> std::process::Output {
    Command::new(gantry_bin())
        .args(["config", "check"])
        .arg(file)
        .output()
        .expect("run gantry config check")
}

#[test]
fn config_check_refuses_a_key_that_does_not_match_the_certificate() {
    let work = tempfile::tempdir().expect("tempdir");
    let tls = make_certs(&work.path().join("certs"));
    let other = make_other_key(&work.path().join("certs"));
    let good = work.path().join("good.toml");
    fs::write(
        &good,
        format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            tls.cert, tls.key
        ),
    )
    .expect("write");
    let out = config_check(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = work.path().join("bad.toml");
    fs::write(
        &bad,
        format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            tls.cert, other
        ),
    )
    .expect("write");
    let out = config_check(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.tls_key_file"), "{stderr}");
    assert!(stderr.contains("does not match"), "{stderr}");
}

// ---------------------------------------------------------------- configuration

#[test]
fn config_check_accepts_a_valid_file() {
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("gantry.toml");
    fs::write(&file, "[server]\nlisten = \"0.0.0.0:8080\"\n[storage]\nroot = \"data\"\n[log]\nlevel = \"warn\"\nformat = \"json\"\n")
        .expect("write");
    let out = config_check(&file);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn config_check_lists_every_problem() {
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("broken.toml");
    fs::write(
        &file,
        "surprise = 1\n[server]\nlisten = \"localhost\"\ntls_key_file = \"k.pem\"\n[storage]\nroot = \"\"\n\
         [log]\nlevel = \"chatty\"\nformat = \"yaml\"\ncolour = true\n",
    )
    .expect("write");
    let out = config_check(&file);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "server.listen",
        "server.tls_cert_file",
        "storage.root",
        "log.level",
        "log.format",
        "log.colour",
        "surprise",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("- {path}:"))),
            "{path} not reported:\n{stderr}"
        );
    }
    assert!(stderr.contains("7 problems"), "{stderr}");
}

/// Every gantry configuration shipped in `config/` and `examples/` parses.
/// Claim-policy settings (under a `policies/` directory) are another format,
/// checked by the policy tests.
#[test]
fn every_shipped_config_file_parses() {
    let root = repo_root();
    let mut files: Vec<std::path::PathBuf> = fs::read_dir(root.join("config"))
        .expect("config/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.extend(files_under(&root.join("examples")).into_iter().filter(|p| {
        p.extension().is_some_and(|e| e == "toml")
            && !p.components().any(|c| c.as_os_str() == "policies")
    }));
    assert!(
        files.iter().any(|p| p.ends_with("config/gantry.toml")),
        "{files:?}"
    );
    for file in files {
        if let Err(e) = gantry::config::Config::load(&file) {
            panic!("{} does not parse:\n{e}", file.display());
        }
        let out = config_check(&file);
        assert!(
            out.status.success(),
            "gantry config check {}:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------- health

#[test]
fn healthz_and_readyz() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    let g = Gantry::start(&root);
    let client = g.client();
    assert_eq!(
        client
            .get(g.url("/healthz"))
            .send()
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        client
            .get(g.url("/readyz"))
            .send()
            .expect("readyz")
            .status(),
        200
    );

    if ON_S3 {
        // The store is a bucket: replicas_s3.rs takes it away and brings it back.
        return;
    }
    // Make the whole store read-only: permission bits, and for root (whom
    // permission bits do not stop) the immutable attribute where the
    // filesystem and capabilities allow it.
    let dirs = [
        root.clone(),
        root.join("tmp"),
        root.join("blobs"),
        root.join("repositories"),
        root.join("uploads"),
    ];
    let guard = ReadOnly::apply(&dirs);
    let readyz = client
        .get(g.url("/readyz"))
        .send()
        .expect("readyz")
        .status();
    let healthz = client
        .get(g.url("/healthz"))
        .send()
        .expect("healthz")
        .status();
    let observable = guard.effective;
    drop(guard);
    if observable {
        assert_eq!(readyz, 503, "a read-only store must not be ready");
    } else {
        eprintln!(
            "neither permission bits nor the immutable attribute stop writes here: the 503 case is not observable"
        );
    }
    assert_eq!(healthz, 200, "liveness does not depend on storage");
    assert_eq!(
        client
            .get(g.url("/readyz"))
            .send()
            .expect("readyz")
            .status(),
        200
    );
}

/// Makes directories read-only for the lifetime of the guard, and restores
/// them on drop (also when the test fails, so the temporary directory can
/// be removed).
struct ReadOnly {
    dirs: Vec<std::path::PathBuf>,
    immutable: bool,
    /// Whether writing into them really fails now.
    effective: bool,
}

impl ReadOnly {
    fn apply(dirs: &[std::path::PathBuf]) -> ReadOnly {
        use std::os::unix::fs::PermissionsExt;
        for d in dirs {
            fs::set_permissions(d, fs::Permissions::from_mode(0o555)).expect("chmod");
        }
        let mut guard = ReadOnly {
            dirs: dirs.to_vec(),
            immutable: false,
            effective: false,
        };
        guard.effective = !Self::writable(&dirs[1]);
        if !guard.effective {
            // Root: try `chattr +i` (ext4 and friends, CAP_LINUX_IMMUTABLE).
            guard.immutable = Command::new("chattr")
                .arg("+i")
                .args(dirs)
                .output()
                .is_ok_and(|o| o.status.success());
            guard.effective = guard.immutable && !Self::writable(&dirs[1]);
        }
        guard
    }

    fn writable(dir: &Path) -> bool {
        let probe = dir.join("write-probe");
        let ok = fs::write(&probe, b"x").is_ok();
        let _ = fs::remove_file(&probe);
        ok
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").args(&self.dirs).output();
        }
        for d in &self.dirs {
            let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
        }
    }
}
