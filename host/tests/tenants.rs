//! Tenants end to end: two real OpenID providers (two tenants' clusters),
//! htpasswd tenant admins, and the real `gantry` binary with
//! `access_control` granting everything to every authenticated identity.
//! Admins ship their claim policies as OCI artifacts — team-a a CEL policy
//! with the PyPI oras client (oras-py), team-b a Rust component with
//! `gantry policy push` — and the registry validates, follows, swaps,
//! shadows and confines.
//!
//! node with `examples/e2e/provider`'s packages, python3 with
//! `tests/tenants/requirements.txt`, and the test guests of the
//! `gantry-tests` crate are required (`.ci/run` installs them; `cargo test
//! --workspace` builds the guests). Waits are for liveness only: no test
//! asserts on time.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use support::provider::{AUDIENCE, Provider};
use support::{Gantry, LIVENESS, OCI_MANIFEST, gantry_bin, http, repo_root, sha256, test_guest};

const A_CI: &str = "system:serviceaccount:team-a:ci";
const B_CI: &str = "system:serviceaccount:team-b:ci";
const A_ADMIN: &str = "team-a-admin";
const B_ADMIN: &str = "team-b-admin";
const PASSWORD: &str = "tenant-admin-pw";
const LIVE_A: &str = "team-a/policies/k8s:live";

/// Both providers, the admins' htpasswd and a registry of two tenants.
struct World {
    a: Provider,
    b: Provider,
    gantry: Gantry,
    dir: tempfile::TempDir,
}

fn config(a: &Provider, b: &Provider, htpasswd: &Path, port: u16) -> String {
    format!(
        r#"
[auth]
public_url = "http://127.0.0.1:{port}"
htpasswd_file = {htpasswd:?}

[[tenants]]
name = "team-a"
namespace = "team-a"
admins = ["{A_ADMIN}"]
max_timeout_ms = 2000

[[tenants]]
name = "team-b"
namespace = "team-b"
admins = ["{B_ADMIN}"]
max_memory_mib = 32
max_timeout_ms = 300

[[auth.oidc]]
issuer = "{a_iss}"
audiences = ["{AUDIENCE}"]
tenant = "team-a"
[auth.oidc.policy]
module = "oci://{LIVE_A}"
shadow = "oci://team-a/policies/k8s:next"

[[auth.oidc]]
issuer = "{b_iss}"
audiences = ["{AUDIENCE}"]
tenant = "team-b"
[auth.oidc.policy]
module = "oci://team-b/policies/k8s:live"

# Operator admins: a tenant's policy answering `admin` must never be one.
[access_control.admin_policy]
users = ["admin"]
actions = ["read", "create", "update", "delete"]

# Everything, to everyone authenticated: confinement is the host's.
[access_control.repositories."**"]
default_policy = ["read", "create", "update", "delete"]
"#,
        htpasswd = htpasswd.to_str().expect("utf-8"),
        a_iss = a.issuer,
        b_iss = b.issuer,
    )
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    std::fs::write(&htpasswd, format!("{A_ADMIN}:{hash}\n{B_ADMIN}:{hash}\n")).expect("htpasswd");
    let a = Provider::start(&[A_CI]);
    let b = Provider::start(&[B_CI]);
    let root = dir.path().join("data");
    let gantry = Gantry::start_configured(&root, &|port| config(&a, &b, &htpasswd, port));
    World { a, b, gantry, dir }
}

impl World {
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// `/v2/` with `token`: the status (200 once the issuer's policy allows).
    fn v2(&self, token: &str) -> u16 {
        http()
            .get(self.gantry.url("/v2/"))
            .bearer_auth(token)
            .send()
            .expect("GET /v2/")
            .status()
            .as_u16()
    }

    /// Waits until `token` gets `status` on `/v2/`.
    fn wait_v2(&self, token: &str, status: u16) {
        let deadline = Instant::now() + LIVENESS;
        loop {
            let got = self.v2(token);
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/v2/ never answered {status} (last {got}):\n{}",
                self.gantry.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// oras-py pushes a CEL artifact: `settings` (JSON) and, if given,
    /// fixtures. Ok(digest) or Err(what oras-py reported).
    fn oras_push(
        &self,
        target: &str,
        settings: serde_json::Value,
        fixtures: Option<&str>,
    ) -> Result<String, String> {
        let work = tempfile::tempdir_in(self.dir.path()).expect("tempdir");
        let config = work.path().join("config.json");
        std::fs::write(
            &config,
            serde_json::json!({"module": "builtin:cel", "settings": settings}).to_string(),
        )
        .expect("config");
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/tenants/oras_push.py"))
            .args(["--registry", &self.gantry.host(), "--target", target])
            .args(["--username", A_ADMIN, "--password", PASSWORD])
            .arg("--config")
            .arg(&config);
        if let Some(text) = fixtures {
            let f = work.path().join("fixtures.toml");
            std::fs::write(&f, text).expect("fixtures");
            cmd.arg("--file").arg(format!(
                "{}:application/vnd.gantry.policy.fixtures.v1+toml",
                f.display()
            ));
        }
        let out = cmd
            .output()
            .expect("python3 oras_push.py (pip install -r tests/tenants/requirements.txt)");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `gantry policy push` as team-b's admin.
    fn gantry_push(
        &self,
        repo: &str,
        tag: &str,
        module: &Path,
        settings: &Path,
        extra: &[&str],
    ) -> Result<String, String> {
        let out = Command::new(gantry_bin())
            .args([
                "policy",
                "push",
                "--registry",
                &self.gantry.url(""),
                "--repository",
                repo,
                "--tag",
                tag,
            ])
            .arg("--module")
            .arg(module)
            .arg("--settings")
            .arg(settings)
            .args(extra)
            .args(["--username", B_ADMIN, "--password", PASSWORD])
            .output()
            .expect("gantry policy push");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The digest `repo:tag` points at now, read as team-a's admin.
    fn tag_digest(&self, repo: &str, tag: &str) -> Option<String> {
        let r = http()
            .head(self.gantry.url(&format!("/v2/{repo}/manifests/{tag}")))
            .basic_auth(A_ADMIN, Some(PASSWORD))
            .header("accept", OCI_MANIFEST)
            .send()
            .expect("HEAD manifest");
        (r.status() == 200).then(|| {
            r.headers()["docker-content-digest"]
                .to_str()
                .expect("digest")
                .to_owned()
        })
    }

    fn status(&self, user: &str) -> (u16, serde_json::Value) {
        let r = http()
            .get(self.gantry.url("/gantry/v1/tenants/team-a"))
            .basic_auth(user, Some(PASSWORD))
            .send()
            .expect("GET status");
        let code = r.status().as_u16();
        (code, r.json().unwrap_or(serde_json::Value::Null))
    }
}

/// Pushes a one-blob image to `repo:tag` with `token`: the manifest PUT's
/// status (a refused blob upload returns its own status).
fn push_image(g: &Gantry, token: &str, repo: &str, tag: &str) -> u16 {
    let data = format!("layer of {repo}:{tag}").into_bytes();
    let d = sha256(&data);
    let r = http()
        .post(g.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .bearer_auth(token)
        .body(data.clone())
        .send()
        .expect("POST blob");
    if r.status() != 201 {
        return r.status().as_u16();
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": data.len()},
        "layers": [],
    })
    .to_string();
    http()
        .put(g.url(&format!("/v2/{repo}/manifests/{tag}")))
        .bearer_auth(token)
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .expect("PUT manifest")
        .status()
        .as_u16()
}

fn get_status(g: &Gantry, token: &str, path: &str) -> u16 {
    http()
        .get(g.url(path))
        .bearer_auth(token)
        .send()
        .expect("GET")
        .status()
        .as_u16()
}

/// team-a's CEL policy: its own namespace's service accounts, by `sub`.
fn team_a_settings(username: &str) -> serde_json::Value {
    serde_json::json!({
        "username": username,
        "validations": [
            {"expression": "claims['kubernetes.io'].namespace == 'team-a'", "message": "only team-a's service accounts"}
        ]
    })
}

const TEAM_A_FIXTURES: &str = r#"
[[case]]
name = "a team-a service account"
claims = { sub = "system:serviceaccount:team-a:ci", "kubernetes.io" = { namespace = "team-a" } }
expect = "allow"
username = "system:serviceaccount:team-a:ci"

[[case]]
name = "another namespace"
claims = { sub = "system:serviceaccount:x:ci", "kubernetes.io" = { namespace = "x" } }
expect = "deny"
reason_contains = "only team-a"
"#;

#[test]
fn tenants_ship_validate_swap_shadow_and_stay_confined() {
    let w = world();
    let g = &w.gantry;
    let a_token = w.a.token(A_CI);
    let b_token = w.b.token(B_CI);

    // Nothing published yet: the issuers refuse, saying so; the rest works.
    w.wait_v2(&a_token, 401);
    g.wait_for_log("no policy published at oci://team-a/policies/k8s:live");
    let r = http()
        .get(g.url("/v2/"))
        .basic_auth(A_ADMIN, Some(PASSWORD))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200, "an htpasswd admin is served meanwhile");

    // team-a's admin ships a CEL policy with oras-py; it becomes active.
    let v1 = w
        .oras_push(LIVE_A, team_a_settings("claims.sub"), Some(TEAM_A_FIXTURES))
        .unwrap_or_else(|e| panic!("oras-py push refused: {e}\n{}", g.log()));
    assert!(v1.starts_with("sha256:"), "{v1}");
    w.wait_v2(&a_token, 200);

    // team-b's admin ships a Rust component with `gantry policy push`.
    let b_settings = w.write("b.toml", "username = \"builder\"\n");
    let b_fixtures = w.write(
        "b-cases.toml",
        "[[case]]\nname = \"anyone\"\nclaims = { sub = \"x\" }\nexpect = \"allow\"\nusername = \"builder\"\n",
    );
    let b1 = w
        .gantry_push(
            "team-b/policies/k8s",
            "live",
            &test_guest("allow-all"),
            &b_settings,
            &["--fixtures", b_fixtures.to_str().expect("utf-8")],
        )
        .unwrap_or_else(|e| panic!("gantry policy push refused: {e}\n{}", g.log()));
    assert!(b1.starts_with("sha256:"), "{b1}");
    w.wait_v2(&b_token, 200);

    // Confinement, with `**` granted to everyone authenticated.
    assert_eq!(push_image(g, &a_token, "team-a/app", "1"), 201);
    assert_eq!(push_image(g, &b_token, "team-b/app", "1"), 201);
    assert_eq!(
        push_image(g, &a_token, "team-b/app", "evil"),
        403,
        "team-a's workload in team-b"
    );
    assert_eq!(
        push_image(g, &b_token, "team-a/app", "evil"),
        403,
        "team-b's workload in team-a"
    );
    assert_eq!(
        push_image(g, &a_token, "elsewhere/app", "1"),
        403,
        "outside every namespace"
    );
    assert_eq!(get_status(g, &a_token, "/v2/team-b/app/manifests/1"), 403);
    assert_eq!(get_status(g, &a_token, "/v2/team-a/app/manifests/1"), 200);
    // A workload may read its policies, never rewrite them through `**`;
    // nor may another tenant's admin, whom `**` grants everything else.
    assert_eq!(push_image(g, &a_token, "team-a/policies/k8s", "mine"), 403);
    let foreign = w
        .gantry_push(
            "team-a/policies/k8s",
            "live",
            &test_guest("allow-all"),
            &b_settings,
            &[],
        )
        .expect_err("team-b's admin rewrote team-a's policy");
    assert!(foreign.contains("DENIED"), "{foreign}");
    let catalog: serde_json::Value = http()
        .get(g.url("/v2/_catalog"))
        .bearer_auth(&a_token)
        .send()
        .expect("catalog")
        .json()
        .expect("json");
    let repos: Vec<&str> = catalog["repositories"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        !repos.is_empty() && repos.iter().all(|r| r.starts_with("team-a/")),
        "{repos:?}"
    );
    // A mount from the other namespace is refused (an upload session instead).
    let b_layer = sha256(b"layer of team-b/app:1");
    let r = http()
        .post(g.url(&format!(
            "/v2/team-a/app/blobs/uploads/?mount={b_layer}&from=team-b/app"
        )))
        .bearer_auth(&a_token)
        .send()
        .expect("mount");
    assert_eq!(r.status(), 202, "mounted across tenants");
    // The token endpoint narrows a scope outside the namespace to nothing.
    let t: serde_json::Value = http()
        .get(g.url("/auth/token?service=gantry&scope=repository:team-b/app:pull,push&scope=repository:team-a/app:pull"))
        .basic_auth("workload", Some(&a_token))
        .send()
        .expect("token")
        .json()
        .expect("json");
    let payload = t["token"]
        .as_str()
        .expect("token")
        .split('.')
        .nth(1)
        .expect("payload");
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("claims");
    let access: Vec<&str> = claims["access"]
        .as_array()
        .expect("access")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(access, ["team-a/app"], "{claims}");
    assert_eq!(claims["tenant"], "team-a");
    // The Gantry token stays confined too.
    let gantry_token = t["token"].as_str().expect("token");
    assert_eq!(
        get_status(g, gantry_token, "/v2/team-b/app/manifests/1"),
        403,
        "confined like its identity"
    );

    // A followed tag holds policies only: an image there would leave the
    // issuer without one. Elsewhere in the repository it is just an image.
    let t: serde_json::Value = http()
        .get(g.url("/auth/token?service=gantry&scope=repository:team-a/policies/k8s:pull,push"))
        .basic_auth(A_ADMIN, Some(PASSWORD))
        .send()
        .expect("token")
        .json()
        .expect("json");
    let admin = t["token"].as_str().expect("token");
    assert_eq!(push_image(g, admin, "team-a/policies/k8s", "live"), 400);
    assert_eq!(push_image(g, admin, "team-a/policies/k8s", "notes"), 201);
    // Broken pushes are refused with their reason and change nothing.
    let bad_cel = w
        .oras_push(LIVE_A, team_a_settings("claims.sub +"), None)
        .expect_err("bad CEL accepted");
    assert!(
        bad_cel.contains("init") && bad_cel.contains("username"),
        "names the phase and field: {bad_cel}"
    );
    let failing = TEAM_A_FIXTURES.replace(
        "expect = \"deny\"\nreason_contains = \"only team-a\"",
        "expect = \"allow\"",
    );
    let bad_fixture = w
        .oras_push(LIVE_A, team_a_settings("claims.sub"), Some(&failing))
        .expect_err("failing fixture accepted");
    assert!(
        bad_fixture.contains("fixtures") && bad_fixture.contains("another namespace"),
        "{bad_fixture}"
    );
    let trap = w
        .gantry_push(
            "team-b/policies/k8s",
            "live",
            &test_guest("init-trap"),
            &b_settings,
            &[],
        )
        .expect_err("init trap accepted");
    assert!(
        trap.contains("MANIFEST_INVALID") && trap.contains("init"),
        "{trap}"
    );
    let huge = w.dir.path().join("huge.wasm");
    let mut bytes = std::fs::read(test_guest("allow-all")).expect("guest");
    bytes.resize(65 << 20, 0);
    std::fs::write(&huge, bytes).expect("huge");
    let too_big = w
        .gantry_push("team-b/policies/k8s", "live", &huge, &b_settings, &[])
        .expect_err("module above the cap accepted");
    assert!(too_big.contains("over the cap"), "{too_big}");
    assert_eq!(
        w.tag_digest("team-a/policies/k8s", "live").as_deref(),
        Some(v1.as_str())
    );
    assert_eq!(w.v2(&a_token), 200, "the active policy is untouched");
    assert_eq!(w.v2(&b_token), 200);

    // A tag move swaps the policy (and drops its cached decisions): v2
    // names workloads differently, and moving the tag back rolls back.
    let v2 = w
        .oras_push(LIVE_A, team_a_settings("'v2-' + claims.sub"), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(v2, v1);
    let deadline = Instant::now() + LIVENESS;
    while !g.log().contains(&format!("username=\"team-a:v2-{A_CI}\"")) {
        assert!(
            Instant::now() < deadline,
            "never swapped to v2:\n{}",
            g.log()
        );
        w.v2(&a_token);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let v1_bytes = http()
        .get(g.url(&format!("/v2/team-a/policies/k8s/manifests/{v1}")))
        .basic_auth(A_ADMIN, Some(PASSWORD))
        .header("accept", OCI_MANIFEST)
        .send()
        .expect("GET v1")
        .bytes()
        .expect("bytes");
    let r = http()
        .put(g.url("/v2/team-a/policies/k8s/manifests/live"))
        .basic_auth(A_ADMIN, Some(PASSWORD))
        .header("content-type", OCI_MANIFEST)
        .body(v1_bytes)
        .send()
        .expect("rollback");
    assert_eq!(r.status(), 201);
    let rolled_back = g
        .log()
        .matches(&format!("username=\"team-a:{A_CI}\""))
        .count();
    let deadline = Instant::now() + LIVENESS;
    while g
        .log()
        .matches(&format!("username=\"team-a:{A_CI}\""))
        .count()
        == rolled_back
    {
        assert!(Instant::now() < deadline, "never rolled back:\n{}", g.log());
        w.v2(&a_token);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A shadow candidate that denies: new tokens still get in, and each
    // disagreement is logged and counted.
    let next_settings = serde_json::json!({
        "username": "claims.sub",
        "validations": [{"expression": "false", "message": "candidate refuses everyone"}]
    });
    let next = w
        .oras_push("team-a/policies/k8s:next", next_settings, None)
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + LIVENESS;
    loop {
        let fresh = w.a.token(A_CI);
        assert_eq!(w.v2(&fresh), 200, "the shadow never decides");
        if g.log().contains("gantry::shadow") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no shadow disagreement logged:\n{}",
            g.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        g.log().contains("candidate refuses everyone"),
        "{}",
        g.log()
    );

    // The status shows it all, to team-a's admin only.
    let (code, status) = w.status(A_ADMIN);
    assert_eq!(code, 200, "{status}");
    let issuer = &status["issuers"][0];
    assert_eq!(issuer["active"]["digest"], v1.as_str(), "{status}");
    assert_eq!(issuer["shadow"]["digest"], next.as_str(), "{status}");
    assert!(issuer["active"]["allows"].as_u64() > Some(0), "{status}");
    assert!(
        issuer["active"]["shadow_disagreements"].as_u64() > Some(0),
        "{status}"
    );
    assert!(
        status["last_refused_push"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("fixtures")),
        "{status}"
    );
    assert_eq!(w.status(B_ADMIN).0, 403, "another tenant's admin");
    let anonymous = http()
        .get(g.url("/gantry/v1/tenants/team-a"))
        .send()
        .expect("GET");
    assert_eq!(anonymous.status(), 401);
    let table = Command::new(gantry_bin())
        .args([
            "tenant",
            "status",
            "--registry",
            &g.url(""),
            "--tenant",
            "team-a",
        ])
        .args(["--username", A_ADMIN, "--password", PASSWORD])
        .output()
        .expect("gantry tenant status");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(
        text.contains(&v1[..19]) && text.contains(&next[..19]) && text.contains("shadow"),
        "{text}"
    );
}

#[test]
fn a_hostile_tenant_costs_only_its_own_requests() {
    let w = world();
    let g = &w.gantry;
    w.oras_push(LIVE_A, team_a_settings("claims.sub"), Some(TEAM_A_FIXTURES))
        .unwrap_or_else(|e| panic!("{e}"));
    let empty = w.write("empty.toml", "");
    let b = |guest: &str, settings: &Path| {
        w.gantry_push(
            "team-b/policies/k8s",
            "live",
            &test_guest(guest),
            settings,
            &[],
        )
        .unwrap_or_else(|e| panic!("{guest}: {e}\n{}", g.log()))
    };
    // Each hostile module in turn: team-b's new tokens fail, team-a's work.
    for (guest, symptom) in [
        ("infinite-loop", "timed out"),
        ("unbounded-alloc", "memory"),
    ] {
        let digest = b(guest, &empty);
        let deadline = Instant::now() + LIVENESS;
        loop {
            let b_token = w.b.token(B_CI);
            let got = w.v2(&b_token);
            let a_token = w.a.token(A_CI);
            assert_eq!(w.v2(&a_token), 200, "team-a suffers from team-b's {guest}");
            if got == 401 && g.log().contains(symptom) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{guest} ({digest}) never failed team-b's tokens:\n{}",
                g.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    // Impersonation: a policy answering `admin` yields `team-b:admin`,
    // which is not the operator's admin and stays in team-b.
    let admin = w.write("admin.toml", "username = \"admin\"\n");
    b("allow-all", &admin);
    let b_token = w.b.token(B_CI);
    w.wait_v2(&b_token, 200);
    assert_eq!(push_image(g, &b_token, "team-b/app", "1"), 201);
    assert_eq!(push_image(g, &b_token, "team-a/app", "1"), 403);
    assert_eq!(
        get_status(g, &b_token, "/v2/team-a/policies/k8s/manifests/live"),
        403
    );
    assert!(g.log().contains("username=\"team-b:admin\""), "{}", g.log());
    // Probing for another issuer's claims: the instance only ever sees its
    // own issuer's tokens.
    b("echo-claims", &empty);
    let deadline = Instant::now() + LIVENESS;
    loop {
        let a_token = w.a.token(A_CI);
        assert_eq!(w.v2(&a_token), 200);
        let b_token = w.b.token(B_CI);
        if w.v2(&b_token) == 200 && g.log().contains(&format!("username=\"team-b:{B_CI}\"")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "echo-claims never served:\n{}",
            g.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !g.log().contains(&format!("username=\"team-b:{A_CI}\"")),
        "team-b's policy saw team-a's claims"
    );
}
