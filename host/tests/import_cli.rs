//! `gantry config import zot FILE`: zot's configuration (as zot's docs
//! write it, in JSON and in YAML) becomes a Gantry TOML that loads and
//! keeps every setting the mapping covers; what has no equivalent is listed
//! on stderr by key.

use std::path::PathBuf;
use std::process::Command;

use gantry::config::Config;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/zot")
        .join(name)
}

fn import(file: &PathBuf) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["config", "import", "zot"])
        .arg(file)
        .output()
        .expect("gantry config import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

#[test]
fn a_zot_config_imports_key_by_key_from_json_and_yaml() {
    let (json_toml, json_err) = import(&fixture("config.json"));
    let (yaml_toml, yaml_err) = import(&fixture("config.yaml"));
    // The same configuration in both forms imports the same.
    assert_eq!(
        json_toml.lines().skip(1).collect::<Vec<_>>(),
        yaml_toml.lines().skip(1).collect::<Vec<_>>()
    );
    assert_eq!(json_err, yaml_err);

    let c = Config::from_toml_str(&json_toml, "imported", std::path::Path::new("/"))
        .unwrap_or_else(|e| panic!("the import does not load: {e}\n{json_toml}"));
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:5000");
    let tls = c.server.tls.as_ref().expect("tls");
    assert_eq!(tls.cert_file, PathBuf::from("/etc/zot/tls/server.crt"));
    assert_eq!(tls.key_file, PathBuf::from("/etc/zot/tls/server.key"));
    assert_eq!(c.storage.root, PathBuf::from("/var/lib/zot"));
    let auth = c.auth.as_ref().expect("auth");
    assert_eq!(auth.htpasswd_file, Some(PathBuf::from("/etc/zot/htpasswd")));
    assert_eq!(auth.public_url, "https://registry.example.com");
    assert_eq!(auth.service, "registry.example.com");
    assert_eq!(auth.oidc.len(), 2);
    let k8s = &auth.oidc[0];
    assert_eq!(k8s.verifier.issuer, "https://oidc.prod-eu.example.com");
    assert_eq!(k8s.verifier.audiences, ["https://registry.example.com"]);
    assert_eq!(
        k8s.verifier.ca_file,
        Some(PathBuf::from("/etc/zot/prod-eu-ca.crt"))
    );
    // An explicit mapping keeps zot's names: no prefixes.
    assert_eq!(
        (k8s.username_prefix.as_str(), k8s.groups_prefix.as_str()),
        ("", "")
    );
    let s = &k8s.policy.settings;
    assert_eq!(s["variables"][0]["name"], "ns");
    assert_eq!(s["validations"][0]["message"], "namespace not allowed");
    assert!(
        s["username"]
            .as_str()
            .is_some_and(|u| u.contains("serviceaccount"))
    );
    assert_eq!(s["groups"], "['ns:' + vars.ns]");
    // Without a mapping, zot's default name is iss/sub: Gantry's default prefix.
    let gh = &auth.oidc[1];
    assert_eq!(
        gh.username_prefix,
        "https://token.actions.githubusercontent.com/"
    );
    let ac = c.access_control.as_ref().expect("access control");
    let admin = ac.admin_policy.as_ref().expect("admin policy");
    assert_eq!(admin.users, ["admin"]);
    assert_eq!(admin.actions, gantry::oci::ActionSet::ALL);
    let team = ac
        .repositories
        .iter()
        .find(|r| r.pattern.as_str() == "team-a/**")
        .expect("team-a/**");
    assert_eq!(team.policies.len(), 2);
    assert_eq!(team.policies[0].users, ["team-a:pusher"]);
    assert_eq!(team.policies[1].groups, ["ns:team-a"]);
    let all = ac
        .repositories
        .iter()
        .find(|r| r.pattern.as_str() == "**")
        .expect("**");
    assert!(all.anonymous_policy.contains(gantry::oci::Action::Read));
    assert!(all.default_policy.contains(gantry::oci::Action::Read));

    // Everything without an equivalent is named by its key.
    for key in [
        "storage.dedupe",
        "http.auth.bearer.oidc[1].skipIssuerVerification",
        "http.accessControl.groups",
        "(top level).extensions",
    ] {
        assert!(
            json_err.contains(&format!("not converted: {key}")),
            "{key} missing from stderr:\n{json_err}"
        );
    }
    assert!(!json_err.contains("distSpecVersion"), "{json_err}");
}

#[test]
fn a_file_that_is_neither_json_nor_yaml_is_refused_with_both_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ \"http\": [unclosed").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["config", "import", "zot"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither JSON") && err.contains("YAML"),
        "{err}"
    );
}

/// A Kubernetes AuthenticationConfiguration imports to issuers whose CEL
/// policy decides as the API server does: the same usernames and groups,
/// the same refusals.
#[tokio::test]
async fn a_kubernetes_authentication_config_imports_and_decides_alike() {
    use gantry::policy::{Decision, EngineOptions, Limits, PolicyEngine};
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/kubernetes/authentication-config.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["config", "import", "kubernetes"])
        .arg(&file)
        .output()
        .expect("gantry config import kubernetes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let toml_text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        stderr.contains("not converted: jwt[0].claimMappings.uid"),
        "{stderr}"
    );
    let c = Config::from_toml_str(&toml_text, "imported", std::path::Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    let auth = c.auth.expect("auth");
    assert_eq!(auth.oidc.len(), 2);
    let first = &auth.oidc[0];
    assert_eq!(first.verifier.issuer, "https://issuer.example.com");
    assert_eq!(
        first.verifier.discovery_url.as_deref(),
        Some("https://discovery.example.com/.well-known/openid-configuration")
    );
    assert_eq!(first.verifier.audiences, ["my-app", "my-other-app"]);
    assert_eq!(
        (first.username_prefix.as_str(), first.groups_prefix.as_str()),
        ("", "")
    );

    let engine = PolicyEngine::new(EngineOptions::default()).expect("engine");
    let decide = |i: usize, claims: serde_json::Value| {
        let entry = &auth.oidc[i];
        let engine = &engine;
        let gantry::config::auth::PolicySource::Module(module) = &entry.policy.source else {
            panic!("an imported policy is a module");
        };
        async move {
            let policy = engine
                .load(
                    &entry.verifier.issuer,
                    module,
                    &entry.policy.settings,
                    Limits::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            policy.evaluate(&claims).await.expect("evaluate")
        }
    };
    let ok = serde_json::json!({
        "iss": "https://issuer.example.com", "sub": "alice", "hd": "example.com",
        "nbf": 1000, "exp": 4600, "groups": ["dev", "ops"]
    });
    match decide(0, ok.clone()).await {
        Decision::Allow(id) => {
            assert_eq!(id.username, "alice");
            assert_eq!(id.groups, ["oidc:dev", "oidc:ops"]);
        }
        other => panic!("{other:?}"),
    }
    // Each rule refuses what the API server refuses.
    for (change, needle) in [
        (serde_json::json!({"hd": "evil.com"}), "claim hd must be"),
        (serde_json::json!({"exp": 1000 + 86_401}), "24 hours"),
        (
            serde_json::json!({"sub": "system:admin"}),
            "username cannot use",
        ),
    ] {
        let mut claims = ok.clone();
        for (k, v) in change.as_object().expect("object") {
            claims[k] = v.clone();
        }
        match decide(0, claims).await {
            Decision::Deny(reason) => assert!(reason.contains(needle), "{reason}"),
            other => panic!("{change} was allowed: {other:?}"),
        }
    }
    // Without a groups claim, no groups (the API server's rule).
    let mut no_groups = ok.clone();
    no_groups.as_object_mut().expect("object").remove("groups");
    match decide(0, no_groups).await {
        Decision::Allow(id) => assert!(id.groups.is_empty(), "{id:?}"),
        other => panic!("{other:?}"),
    }
    // Expression mappings are kept as written.
    let second = serde_json::json!({"iss": "https://accounts.example.org", "sub": "x",
        "username": "bob", "roles": "admin,viewer"});
    match decide(1, second).await {
        Decision::Allow(id) => {
            assert_eq!(id.username, "bob:external-user");
            assert_eq!(id.groups, ["admin", "viewer"]);
        }
        other => panic!("{other:?}"),
    }
}
