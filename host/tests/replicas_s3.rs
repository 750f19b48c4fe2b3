//! Stateless replicas: two `gantry serve` processes on one bucket of a real
//! S3 API (moto), no sticky routing, behaving as one registry (issue 11):
//! an upload moves between replicas, a tag moved (or a manifest deleted) on
//! one is served by the other within the cache bound, two replicas moving
//! one tag at once end with one winner that both serve, tokens minted by
//! one are accepted by the other, a replica killed mid-upload loses only
//! the unacknowledged chunk, and `/readyz` follows the bucket's reachability.

mod support;

use std::io::Write;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use support::{
    Gantry, Launch, Moto, Noise, blob, connect, finish, open_session, patch, push_manifest, sha256,
    upload_range,
};

/// The bound on how stale another replica's view of a tag can be
/// (`storage::s3::CACHE_TTL`), plus a margin for the request itself.
const VISIBLE_WITHIN: Duration = Duration::from_millis(1000 + 250);

/// Two replicas (own local roots) on one fresh bucket of the shared moto,
/// with `sections` appended to both configs.
fn two_replicas(
    work: &std::path::Path,
    sections: Option<&dyn Fn(u16) -> String>,
) -> (Gantry, Gantry) {
    let moto = Moto::shared();
    let bucket = format!("replicas-{}", uuid_like());
    moto.create_bucket(&bucket);
    let start = |name: &str| {
        Gantry::launch(
            &work.join(name),
            Launch {
                sections,
                bucket: Some((&moto.endpoint, &bucket)),
                ..Launch::default()
            },
        )
    };
    (start("a"), start("b"))
}

fn uuid_like() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{}", n, std::process::id())
}

/// The digest `g` serves for `repo:reference`, or `None` on 404.
fn served(g: &Gantry, repo: &str, reference: &str) -> Option<String> {
    let r = g
        .client()
        .get(g.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", support::OCI_MANIFEST)
        .send()
        .expect("GET manifest");
    match r.status().as_u16() {
        200 => Some(
            r.headers()["docker-content-digest"]
                .to_str()
                .expect("digest")
                .to_string(),
        ),
        404 => None,
        other => panic!("GET manifest: {other}"),
    }
}

#[test]
fn an_upload_started_on_one_replica_continues_and_completes_on_the_other() {
    let work = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_replicas(work.path(), None);
    // Chunks on both sides of S3's 5 MiB part minimum, alternating replicas.
    let data = Noise::new(11).bytes(21 * 1024 * 1024 + 333);
    let cuts = [1_000, 9 * 1024 * 1024, 9 * 1024 * 1024 + 1, data.len()];
    let loc = open_session(&a, "team/app");
    let mut at = 0;
    for (i, &end) in cuts.iter().enumerate() {
        let g = if i % 2 == 0 { &b } else { &a };
        let r = patch(g, &loc, at, &data[at..end]);
        assert_eq!(r.status(), 202, "chunk {i}");
        assert_eq!(
            upload_range(if i % 2 == 0 { &a } else { &b }, &loc),
            format!("0-{}", end - 1)
        );
        at = end;
    }
    let digest = sha256(&data);
    finish(&b, &loc, &digest);
    assert!(
        blob(&a, "team/app", &digest) == data,
        "A serves other bytes"
    );
    assert!(
        blob(&b, "team/app", &digest) == data,
        "B serves other bytes"
    );
}

#[test]
fn tags_moved_and_manifests_deleted_on_one_replica_reach_the_other_within_the_bound() {
    let work = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_replicas(work.path(), None);
    let first = push_manifest(&a, "team/app", "v1", "one");
    assert_eq!(
        served(&b, "team/app", "v1").as_deref(),
        Some(first.as_str())
    );
    // B has v1 cached now; A moves it.
    let second = push_manifest(&a, "team/app", "v1", "two");
    assert_eq!(
        served(&a, "team/app", "v1").as_deref(),
        Some(second.as_str())
    );
    std::thread::sleep(VISIBLE_WITHIN);
    assert_eq!(
        served(&b, "team/app", "v1").as_deref(),
        Some(second.as_str()),
        "B still serves the old tag past the bound"
    );
    // A deletes the manifest B has cached (by digest and by tag).
    assert!(served(&b, "team/app", &second).is_some());
    let r = a
        .client()
        .delete(a.url(&format!("/v2/team/app/manifests/{second}")))
        .send()
        .expect("DELETE");
    assert_eq!(r.status(), 202);
    std::thread::sleep(VISIBLE_WITHIN);
    assert_eq!(
        served(&b, "team/app", &second),
        None,
        "deleted, yet served by B"
    );
    assert_eq!(served(&b, "team/app", "v1"), None, "its tag went with it");
}

#[test]
fn two_replicas_moving_one_tag_at_once_end_with_one_winner_both_serve() {
    let work = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_replicas(work.path(), None);
    for round in 0..5 {
        let (da, db) = std::thread::scope(|s| {
            let ta = s.spawn(|| push_manifest(&a, "race/app", "latest", &format!("a{round}")));
            let tb = s.spawn(|| push_manifest(&b, "race/app", "latest", &format!("b{round}")));
            (ta.join().expect("a"), tb.join().expect("b"))
        });
        std::thread::sleep(VISIBLE_WITHIN);
        let (sa, sb) = (
            served(&a, "race/app", "latest"),
            served(&b, "race/app", "latest"),
        );
        assert_eq!(sa, sb, "round {round}: the replicas disagree");
        let winner = sa.expect("the tag exists");
        assert!(
            winner == da || winner == db,
            "round {round}: {winner} is neither push"
        );
        // The loser's manifest is still there by digest.
        let loser = if winner == da { &db } else { &da };
        assert!(served(&a, "race/app", loser).is_some());
    }
}

/// Gantry's own tokens: minted by A, accepted by B (one key in the bucket).
#[test]
fn tokens_minted_by_one_replica_are_accepted_by_the_other() {
    let work = tempfile::tempdir().expect("tempdir");
    let htpasswd = work.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("ci:{}\n", bcrypt::hash("ci-pass", 4).expect("bcrypt")),
    )
    .expect("htpasswd");
    let sections = move |_: u16| {
        format!(
            r#"
[auth]
htpasswd_file = {htpasswd:?}
# Behind one load balancer: one public URL, so one token issuer.
public_url = "https://registry.example.com"
[access_control.repositories."team/**"]
[[access_control.repositories."team/**".policies]]
users = ["ci"]
actions = ["read", "create", "update", "delete"]
"#
        )
    };
    let (a, b) = two_replicas(work.path(), Some(&sections));
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:ci-pass")
    );
    let r = a
        .client()
        .get(a.url("/auth/token?service=gantry&scope=repository:team/app:pull,push"))
        .header("authorization", &basic)
        .send()
        .expect("token");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().expect("json");
    let token = body["token"].as_str().expect("token").to_string();
    for g in [&a, &b] {
        let r = g
            .client()
            .get(g.url("/v2/team/app/tags/list"))
            .bearer_auth(&token)
            .send()
            .expect("tags");
        assert_ne!(r.status(), 401, "a token from A refused on {}", g.host());
        let r = g
            .client()
            .get(g.url("/v2/team/app/tags/list"))
            .bearer_auth(format!("{token}x"))
            .send()
            .expect("tags");
        assert_eq!(r.status(), 401, "a damaged token accepted");
    }
}

/// kill -9 of A in the middle of a chunk: B sees the durable offset (the
/// acknowledged chunks only), continues and completes; the blob is exactly
/// what was acknowledged plus what B received.
#[test]
fn a_replica_killed_mid_upload_loses_only_the_unacknowledged_chunk() {
    let work = tempfile::tempdir().expect("tempdir");
    let (mut a, b) = two_replicas(work.path(), None);
    let first = Noise::new(12).bytes(3 * 1024 * 1024 + 7);
    let loc = open_session(&a, "crash/app");
    assert_eq!(patch(&a, &loc, 0, &first).status(), 202);

    // A chunk past one part, cut off by the crash: A has sent a part to the
    // store by the time it dies, and none of it may count.
    let doomed = Noise::new(13).bytes(12 * 1024 * 1024);
    let mut s = connect(a.addr);
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: {}-{}\r\nContent-Length: {}\r\n\r\n",
        a.host(),
        first.len(),
        first.len() + doomed.len() - 1,
        doomed.len()
    )
    .expect("head");
    s.write_all(&doomed[..10 * 1024 * 1024])
        .expect("most of the chunk");
    s.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(500));
    a.kill9();
    drop(s);

    assert_eq!(upload_range(&b, &loc), format!("0-{}", first.len() - 1));
    let rest = Noise::new(14).bytes(9 * 1024 * 1024 + 5);
    assert_eq!(patch(&b, &loc, first.len(), &rest).status(), 202);
    let mut data = first.clone();
    data.extend_from_slice(&rest);
    let digest = sha256(&data);
    finish(&b, &loc, &digest);
    assert!(
        blob(&b, "crash/app", &digest) == data,
        "the blob holds other bytes"
    );
}

/// `/readyz` answers 503 while the bucket cannot be reached, and the
/// replica serves again once the store is back.
#[test]
fn readyz_follows_the_bucket_and_the_replica_survives_an_outage() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut moto = Moto::own(None);
    moto.moto.create_bucket("outage");
    let port = moto.moto.port;
    let endpoint = moto.moto.endpoint.clone();
    let g = Gantry::launch(
        &work.path().join("root"),
        Launch {
            bucket: Some((&endpoint, "outage")),
            ..Launch::default()
        },
    );
    let ready = |g: &Gantry| {
        g.client()
            .get(g.url("/readyz"))
            .send()
            .expect("readyz")
            .status()
    };
    assert_eq!(ready(&g), 200);
    push_manifest(&g, "team/app", "v1", "before");
    moto.kill();
    assert_eq!(ready(&g), 503, "ready while the bucket is unreachable");
    assert_eq!(
        g.client()
            .get(g.url("/healthz"))
            .send()
            .expect("healthz")
            .status(),
        200
    );
    let r = g
        .client()
        .get(g.url("/v2/team/app/tags/list"))
        .send()
        .expect("tags during the outage");
    assert!(r.status().is_server_error(), "{}", r.status());

    // The store comes back (moto keeps nothing: a fresh bucket).
    let back = Moto::own(Some(port));
    back.moto.create_bucket("outage");
    let deadline = std::time::Instant::now() + support::LIVENESS;
    while ready(&g) != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        std::thread::sleep(Duration::from_millis(200));
    }
    let digest = push_manifest(&g, "team/app", "v2", "after");
    assert_eq!(
        served(&g, "team/app", "v2").as_deref(),
        Some(digest.as_str())
    );
}

/// `redirect_blobs`: a blob `GET` answers 307 to a presigned URL of the
/// bucket, which real clients follow (skopeo, curl); `HEAD` is answered
/// by Gantry itself. (moto does not check signatures, so whether the store
/// refuses a tampered URL is not something this test can see.)
#[test]
fn redirected_blob_reads_are_followed_by_real_clients() {
    let work = tempfile::tempdir().expect("tempdir");
    let g = Gantry::launch(
        &work.path().join("root"),
        Launch {
            s3_keys: "redirect_blobs = true\nredirect_seconds = 60\n",
            ..Launch::default()
        },
    );
    let data = Noise::new(21).bytes(3 * 1024 * 1024 + 11);
    let digest = support::push_blob(&g, "team/app", &data);
    let no_follow = reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_follow
        .get(g.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(location.starts_with(&Moto::shared().endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let head = no_follow
        .head(g.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        data.len().to_string().as_str()
    );
    // curl follows the redirect, ranges included.
    let out = std::process::Command::new("curl")
        .args(["-fsSL", "-r", "5-9"])
        .arg(g.url(&format!("/v2/team/app/blobs/{digest}")))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, data[5..10]);
    // skopeo pulls a whole image through redirects.
    let layout = support::Layout::create(&work.path().join("src"));
    let image = layout.add_image(&mut Noise::new(22), "amd64", 2, 256 * 1024);
    layout.tag(&image.manifest, "v1");
    let dest = format!("docker://{}/team/img:v1", g.host());
    support::skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.dir.display()),
        &dest,
    ]);
    let out_dir = work.path().join("out");
    support::skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:v1", out_dir.display()),
    ]);
    support::assert_same_blobs(&layout, &support::Layout { dir: out_dir });
}

/// What the bucket reports for the blob `digest` when asked for its
/// checksum (boto3's `head_object` with `ChecksumMode="ENABLED"`, signed:
/// moto refuses anonymous reads of objects): (algorithm, SHA-256 value).
fn stored_checksum(bucket: &str, digest: &str) -> (Option<String>, Option<String>) {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let script = "import sys, boto3\n\
        s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1')\n\
        h = s3.head_object(Bucket=sys.argv[2], Key=sys.argv[3], ChecksumMode='ENABLED')\n\
        m = h['ResponseMetadata']['HTTPHeaders']\n\
        print(m.get('x-amz-checksum-algorithm', ''))\n\
        print(m.get('x-amz-checksum-sha256', ''))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &Moto::shared().endpoint, bucket])
        .arg(format!("blobs/sha256/{hex}"))
        .envs(Moto::credentials_env())
        .output()
        .expect("python3 with boto3 (moto brings it)");
    assert!(
        out.status.success(),
        "head_object of blob {digest} in bucket {bucket}: {}\nthe bucket holds {:?}",
        String::from_utf8_lossy(&out.stderr),
        Moto::shared().keys(bucket, "")
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(|l| (!l.is_empty()).then(|| l.to_string()));
    (lines.next().flatten(), lines.next().flatten())
}

#[test]
fn the_store_is_given_every_blobs_sha256_to_verify() {
    let work = tempfile::tempdir().expect("tempdir");
    let moto = Moto::shared();
    let bucket = format!("checksums-{}", uuid_like());
    moto.create_bucket(&bucket);
    let g = Gantry::launch(
        &work.path().join("g"),
        Launch {
            bucket: Some((&moto.endpoint, &bucket)),
            ..Launch::default()
        },
    );
    // Multipart (a monolithic push; a chunked session):
    // each upload is created for SHA-256 checksums and every part carries
    // its own, so the store checks every byte. (A blob small enough for
    // one PUT carries `x-amz-checksum-sha256` too; moto does not record
    // that for clients other than the AWS SDKs, so it is not asked here.)
    let big = Noise::new(22).bytes(17 * 1024 * 1024 + 5);
    let digest = support::push_blob(&g, "team/app", &big);
    let (algorithm, value) = stored_checksum(&bucket, &digest);
    assert_eq!(algorithm.as_deref(), Some("SHA256"), "a multipart blob");
    assert!(value.is_some(), "a multipart blob has no SHA-256 checksum");
    let chunked = Noise::new(23).bytes(13 * 1024 * 1024 + 7);
    let loc = open_session(&g, "team/app");
    assert_eq!(
        patch(&g, &loc, 0, &chunked[..6 * 1024 * 1024]).status(),
        202
    );
    let rest = &chunked[6 * 1024 * 1024..];
    assert_eq!(patch(&g, &loc, 6 * 1024 * 1024, rest).status(), 202);
    let digest = sha256(&chunked);
    finish(&g, &loc, &digest);
    assert_eq!(
        stored_checksum(&bucket, &digest).0.as_deref(),
        Some("SHA256"),
        "a blob uploaded in chunks"
    );
    assert!(blob(&g, "team/app", &digest) == chunked);
}
