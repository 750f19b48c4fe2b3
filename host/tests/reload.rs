//! Live configuration reload against the real binary: a constant load of
//! authenticated pulls (htpasswd Basic and a Gantry bearer token) while the
//! file is reloaded 20 times — by SIGHUP and by the file poll — alternating
//! two valid versions and a broken one. No request may fail, each valid
//! version's rules must be in force right after its reload, and a broken
//! version must change nothing.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest as _;
use support::{Gantry, LIVENESS, Launch, sha256};

const PASS: &str = "secret";

fn basic(user: &str) -> String {
    let raw = format!("{user}:{PASS}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The `[auth]` and `[access_control]` of a version: `pullbot` may always
/// read and push; `bonly` may read only in version B. The broken version is
/// B plus an issuer whose CEL does not compile, which only loading the
/// policy finds.
fn sections(htpasswd: &Path, version: char) -> String {
    let bonly = if version == 'A' {
        ""
    } else {
        "[[access_control.repositories.\"**\".policies]]\nusers = [\"bonly\"]\nactions = [\"read\"]\n"
    };
    let broken = if version == 'X' {
        r#"
[[auth.oidc]]
issuer = "https://broken.example"
audiences = ["gantry"]
[auth.oidc.policy.settings]
username = "claims.sub +"
"#
    } else {
        ""
    };
    format!(
        r#"
[auth]
htpasswd_file = {htpasswd:?}
{broken}
[access_control.repositories."**"]
[[access_control.repositories."**".policies]]
users = ["pullbot"]
actions = ["read", "create", "update"]
{bonly}"#
    )
}

/// Writes `text` to `path` atomically (a reader never sees half a file).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn content_tag(text: &str) -> String {
    format!(
        "sha256={}",
        &hex::encode(sha2::Sha256::digest(text.as_bytes()))[..16]
    )
}

#[test]
fn twenty_reloads_under_load_drop_no_request_and_apply_each_valid_version() {
    let conf = tempfile::tempdir().expect("tmp");
    let htpasswd = conf.path().join("htpasswd");
    let lines: String = ["pullbot", "bonly"]
        .iter()
        .map(|u| format!("{u}:{}\n", bcrypt::hash(PASS, 4).expect("bcrypt")))
        .collect();
    std::fs::write(&htpasswd, lines).expect("htpasswd");
    let data = tempfile::tempdir().expect("tmp");
    let start_sections = sections(&htpasswd, 'A');
    let g = Gantry::launch(
        data.path(),
        Launch {
            sections: Some(&|_| start_sections.clone()),
            server_keys: "reload_poll_seconds = 1\n",
            ..Launch::default()
        },
    );
    let config_path = g.config_path();
    let base_text = std::fs::read_to_string(&config_path).expect("config");
    let base_text = base_text
        .strip_suffix(&start_sections)
        .expect("sections at the end")
        .to_string();

    // Something to pull.
    let c = g.client();
    let config_blob = b"{}";
    let r = c
        .post(g.url(&format!(
            "/v2/app/blobs/uploads/?digest={}",
            sha256(config_blob)
        )))
        .header("authorization", basic("pullbot"))
        .body(config_blob.to_vec())
        .send()
        .expect("blob");
    assert_eq!(r.status(), 201);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": support::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config_blob), "size": config_blob.len()},
        "layers": [],
    }))
    .expect("json");
    let r = c
        .put(g.url("/v2/app/manifests/v1"))
        .header("authorization", basic("pullbot"))
        .header("content-type", support::OCI_MANIFEST)
        .body(manifest)
        .send()
        .expect("manifest");
    assert_eq!(r.status(), 201);
    let r = c
        .get(format!(
            "{}?service=gantry&scope=repository:app:pull",
            g.url("/auth/token")
        ))
        .header("authorization", basic("pullbot"))
        .send()
        .expect("token");
    let token: serde_json::Value = r.json().expect("json");
    let bearer = format!("Bearer {}", token["token"].as_str().expect("token"));

    // The load: pulls on keep-alive connections, Basic and Bearer in turn.
    let stop = Arc::new(AtomicBool::new(false));
    let pulls = Arc::new(AtomicUsize::new(0));
    let url = g.url("/v2/app/manifests/v1");
    let loaders: Vec<_> = [basic("pullbot"), bearer]
        .into_iter()
        .map(|authorization| {
            let (stop, pulls, url, client) = (stop.clone(), pulls.clone(), url.clone(), g.client());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .get(&url)
                        .header("authorization", &authorization)
                        .header("accept", support::OCI_MANIFEST)
                        .send()
                    {
                        Ok(r) if r.status() == 200 => {
                            pulls.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures.push(format!("status {}", r.status())),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();

    let bonly_status = || {
        c.get(&url)
            .header("authorization", basic("bonly"))
            .header("accept", support::OCI_MANIFEST)
            .send()
            .expect("bonly pull")
            .status()
            .as_u16()
    };
    assert_eq!(bonly_status(), 403, "version A at start");
    let mut in_force = 'A';
    for i in 0..20 {
        let version = ['B', 'X', 'A'][i % 3];
        let text = format!("{base_text}{}", sections(&htpasswd, version));
        let tag = content_tag(&text);
        let event = if version == 'X' {
            "configuration reload refused"
        } else {
            "configuration reloaded"
        };
        // A version seen before has its event in the log already: wait for
        // one more.
        let events = || {
            g.log()
                .lines()
                .filter(|l| l.contains(event) && l.contains(&tag))
                .count()
        };
        let before = events();
        write_atomically(&config_path, &text);
        // Even rounds: SIGHUP; odd rounds: the file poll notices.
        if i % 2 == 0 {
            g.sighup();
        }
        let deadline = Instant::now() + LIVENESS;
        while events() <= before {
            assert!(
                Instant::now() < deadline,
                "round {i}: no `{event}` for {tag}:\n{}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if version != 'X' {
            in_force = version;
        }
        let expected = if in_force == 'B' { 200 } else { 403 };
        assert_eq!(
            bonly_status(),
            expected,
            "round {i}: after version {version}, version {in_force} must be in force"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = loaders
        .into_iter()
        .flat_map(|l| l.join().expect("loader"))
        .collect();
    let total = pulls.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {total} pulls failed: {failures:?}",
        failures.len()
    );
    assert!(
        total >= 100,
        "the load was not constant: only {total} pulls"
    );
    // The broken version's problem was named with its key path.
    assert!(
        g.log().contains("auth.oidc[0].policy"),
        "the broken policy's key path is not in the log:\n{}",
        g.log()
    );
}

/// A client that trusts only the CA at `ca`.
fn client_trusting(ca: &Path) -> reqwest::blocking::Client {
    let pem = std::fs::read(ca).expect("read CA");
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(LIVENESS)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
        .build()
        .expect("client")
}

/// The status of GET `url` from a client trusting only `ca`; `None` when
/// the TLS handshake (or anything else) fails.
fn status_trusting(ca: &Path, url: &str) -> Option<u16> {
    client_trusting(ca)
        .get(url)
        .send()
        .ok()
        .map(|r| r.status().as_u16())
}

/// Certificate rotation without a restart: after SIGHUP, new connections
/// get the certificate the file now names.
#[test]
fn sighup_rotates_the_tls_certificate() {
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (old, new) = (
        support::make_certs(d1.path()),
        support::make_certs(d2.path()),
    );
    let data = tempfile::tempdir().expect("tmp");
    let g = Gantry::launch(
        data.path(),
        Launch {
            tls: Some(old.clone()),
            server_keys: "reload_poll_seconds = 0\n",
            ..Launch::default()
        },
    );
    let url = g.url("/v2/");
    assert_eq!(status_trusting(&old.ca, &url), Some(200), "old CA");
    assert_eq!(
        status_trusting(&new.ca, &url),
        None,
        "new CA before the rotation"
    );

    let path = g.config_path();
    let text = std::fs::read_to_string(&path)
        .expect("config")
        .replace(
            old.cert.to_str().expect("utf-8"),
            new.cert.to_str().expect("utf-8"),
        )
        .replace(
            old.key.to_str().expect("utf-8"),
            new.key.to_str().expect("utf-8"),
        );
    write_atomically(&path, &text);
    g.sighup();
    g.wait_for_log(&content_tag(&text));
    assert!(g.log().contains("configuration reloaded"), "{}", g.log());
    assert_eq!(status_trusting(&new.ca, &url), Some(200), "new CA");
    assert_eq!(
        status_trusting(&old.ca, &url),
        None,
        "old CA after the rotation"
    );
}
