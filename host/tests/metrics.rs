//! `/metrics` on `[server] metrics_listen`, scraped from a real `gantry
//! serve` after real traffic: every family docs/configuration.md documents
//! is there, and the counts follow what was done (a push, pulls, an
//! htpasswd login and a wrong password, OIDC tokens from a static-JWKS
//! issuer, a cached token, a reload).

mod issuer;
mod support;

use std::net::TcpListener;

use base64::Engine as _;
use serde_json::json;
use support::{Gantry, Launch, sha256};

const ISSUER: &str = "https://k8s.metrics.example";

fn basic(user: &str, pass: &str) -> String {
    let raw = format!("{user}:{pass}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The families docs/configuration.md lists under *Metrics*.
fn documented_families() -> Vec<String> {
    let doc = std::fs::read_to_string(support::repo_root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let section = doc
        .split("## Metrics")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Metrics section");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `gantry_"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("gantry_{name}"))
        .collect()
}

/// The value of the sample `name{labels}` (labels as exposed, in order).
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

#[test]
fn every_documented_family_is_scraped_and_counts_what_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = issuer::KeySet::generate(0);
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, keys.jwks().to_string()).expect("jwks");
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("ci:{}\n", bcrypt::hash("ci-pass", 4).expect("bcrypt")),
    )
    .expect("htpasswd");
    let metrics_port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let server_keys = format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n");
    let sections = |port: u16| {
        format!(
            r#"
[auth]
public_url = "http://127.0.0.1:{port}"
htpasswd_file = "{ht}"
[[auth.oidc]]
issuer = "{ISSUER}"
audiences = ["gantry"]
jwks_file = "{jwks}"
[auth.oidc.policy.settings]
validations = [{{ expression = "claims.sub.startsWith('system:serviceaccount:team-a:')", message = "team-a only" }}]
username = "claims.sub"
[access_control.repositories."**"]
default_policy = ["read", "create", "update", "delete"]
"#,
            ht = htpasswd.display(),
            jwks = jwks.display()
        )
    };
    let data = tempfile::tempdir().expect("data");
    let g = Gantry::launch(
        data.path(),
        Launch {
            sections: Some(&sections),
            server_keys: &server_keys,
            ..Launch::default()
        },
    );
    let client = g.client();
    let scrape = || {
        client
            .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .expect("scrape /metrics")
    };

    // Traffic: a monolithic push and a pull as an htpasswd user, a wrong
    // password, an allowed and a denied OIDC token (the allowed one twice:
    // the second is a cache hit), a missing manifest.
    let blob = b"metrics test blob, 37 bytes long....";
    let digest = sha256(blob);
    let ci = basic("ci", "ci-pass");
    let r = client
        .post(g.url(&format!("/v2/team-a/app/blobs/uploads/?digest={digest}")))
        .header("authorization", &ci)
        .body(blob.to_vec())
        .send()
        .expect("push");
    assert_eq!(r.status(), 201);
    let r = client
        .get(g.url(&format!("/v2/team-a/app/blobs/{digest}")))
        .header("authorization", &ci)
        .send()
        .expect("pull");
    assert_eq!(r.bytes().expect("body").as_ref(), blob);
    let r = client
        .get(g.url("/v2/"))
        .header("authorization", basic("ci", "wrong"))
        .send()
        .expect("wrong password");
    assert_eq!(r.status(), 401);
    let now = issuer::now();
    let token = |sub: &str| {
        keys.sign(
            &json!({"iss": ISSUER, "aud": "gantry", "sub": sub, "iat": now, "exp": now + 300}),
            &issuer::SignOpts::default(),
        )
    };
    let allowed = token("system:serviceaccount:team-a:builder");
    for _ in 0..2 {
        let r = client
            .get(g.url("/v2/team-a/app/manifests/missing"))
            .header("authorization", format!("Bearer {allowed}"))
            .send()
            .expect("oidc");
        assert_eq!(r.status(), 404);
    }
    let denied = token("system:serviceaccount:team-b:builder");
    let r = client
        .get(g.url("/v2/"))
        .header("authorization", format!("Bearer {denied}"))
        .send()
        .expect("denied");
    assert_eq!(r.status(), 401);

    // A reload of a changed file is applied and counted.
    let before_reload = scrape();
    let config = g.config_path();
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n# changed\n");
    std::fs::write(&config, text).expect("write");
    g.sighup();
    g.wait_for_log("configuration reloaded");

    let text = scrape();
    let mut missing = Vec::new();
    let families = documented_families();
    assert!(families.len() >= 21, "{families:?}");
    for family in &families {
        // OpenMetrics names a counter's family without `_total`.
        let base = family.strip_suffix("_total").unwrap_or(family);
        if !text.contains(&format!("# TYPE {base} ")) {
            missing.push(family.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}\n{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("# TYPE gantry_")) {
        let name = line.split(' ').nth(2).unwrap_or("");
        assert!(
            families
                .iter()
                .any(|f| f.strip_suffix("_total").unwrap_or(f) == name),
            "exported but not documented: {name}"
        );
    }

    let at_least = |what: &str, min: f64| {
        let got = sample(&text, what).unwrap_or_else(|| panic!("no sample {what}\n{text}"));
        assert!(got >= min, "{what} = {got}, expected at least {min}");
    };
    at_least(
        r#"gantry_http_requests_total{route="upload",method="POST",status="201"}"#,
        1.0,
    );
    at_least(
        r#"gantry_http_request_bytes_total{route="upload"}"#,
        blob.len() as f64,
    );
    at_least(
        r#"gantry_http_response_bytes_total{route="blob"}"#,
        blob.len() as f64,
    );
    at_least(
        r#"gantry_auth_decisions_total{issuer="htpasswd",result="allow",reason="none"}"#,
        2.0,
    );
    at_least(
        r#"gantry_auth_decisions_total{issuer="htpasswd",result="deny",reason="bad_password"}"#,
        1.0,
    );
    at_least(
        &format!(
            r#"gantry_auth_decisions_total{{issuer="{ISSUER}",result="allow",reason="none"}}"#
        ),
        1.0,
    );
    at_least(
        &format!(
            r#"gantry_auth_decisions_total{{issuer="{ISSUER}",result="deny",reason="policy_denied"}}"#
        ),
        1.0,
    );
    at_least("gantry_auth_cache_hits_total", 1.0);
    at_least("gantry_auth_cache_misses_total", 2.0);
    // A reload drops cached decisions: before it, the allowed token's was held.
    assert!(
        sample(&before_reload, "gantry_auth_cache_entries").is_some_and(|n| n >= 1.0),
        "{before_reload}"
    );
    assert_eq!(sample(&text, "gantry_auth_cache_entries"), Some(0.0));
    at_least(
        &format!(r#"gantry_policy_evaluations_total{{issuer="{ISSUER}",outcome="allow"}}"#),
        1.0,
    );
    at_least(
        &format!(r#"gantry_policy_evaluations_total{{issuer="{ISSUER}",outcome="deny"}}"#),
        1.0,
    );
    at_least(
        &format!(r#"gantry_policy_evaluation_duration_seconds_count{{issuer="{ISSUER}"}}"#),
        2.0,
    );
    at_least(
        &format!(r#"gantry_policy_pool_size{{issuer="{ISSUER}"}}"#),
        1.0,
    );
    at_least(
        &format!(r#"gantry_issuer_keys{{issuer="{ISSUER}"}}"#),
        keys.jwks()["keys"].as_array().map_or(1, Vec::len) as f64,
    );
    at_least(
        &format!(r#"gantry_issuer_last_key_refresh_timestamp_seconds{{issuer="{ISSUER}"}}"#),
        now as f64 - 600.0,
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"gantry_issuer_key_refresh_failures{{issuer="{ISSUER}"}}"#)
        ),
        Some(0.0)
    );
    at_least(r#"gantry_config_reloads_total{result="applied"}"#, 1.0);
    at_least("gantry_storage_bytes_written_total", blob.len() as f64);
    at_least("gantry_storage_objects_written_total", 1.0);
    at_least("gantry_storage_bytes_read_total", blob.len() as f64);
    at_least("gantry_storage_objects_read_total", 1.0);

    // The configuration hash moved with the reload: one info sample, new.
    let info = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("gantry_config_info{"))
            .map(str::to_owned)
            .collect()
    };
    let (old, new) = (info(&before_reload), info(&text));
    assert_eq!((old.len(), new.len()), (1, 1), "{old:?} {new:?}");
    assert_ne!(old, new, "gantry_config_info did not follow the reload");

    // No label carries a repository, a subject or a token.
    for forbidden in ["team-a/app", "builder", &allowed[..20]] {
        assert!(!text.contains(forbidden), "{forbidden} in a label:\n{text}");
    }
}
