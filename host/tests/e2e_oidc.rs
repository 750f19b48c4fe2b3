//! End to end with a real OpenID provider: npm `oidc-provider`
//! (`examples/e2e/provider/provider.mjs`, run by node) issues
//! client_credentials JWT access tokens shaped like Kubernetes
//! service-account tokens; the real `gantry` binary verifies them through
//! discovery and JWKS, maps them with the `builtin:cel` claim policy, and
//! skopeo pushes and pulls with them — as a raw bearer and through the
//! token endpoint.
//!
//! node, the provider's `node_modules` (`npm ci --prefix
//! examples/e2e/provider`) and skopeo are required: without them these
//! tests fail and say how to install them. Waits are for liveness only.

mod support;

use support::http;
use support::provider::Provider;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use support::{
    Image, LIVENESS, Layout, Noise, OCI_MANIFEST, assert_same_blobs, raw_request, skopeo,
    skopeo_raw,
};

/// The resource indicator the provider puts in `aud`, and Gantry's audience.
const AUDIENCE: &str = support::provider::AUDIENCE;
const PUSHER: &str = "system:serviceaccount:team-a:pusher";
const READER: &str = "system:serviceaccount:team-a:reader";
/// Authenticates at the provider; Gantry's claim policy refuses its namespace.
const OUTSIDER: &str = "system:serviceaccount:team-b:builder";
/// The provider's access-token lifetime; Gantry's own token TTL is longer,
/// so the token endpoint must cut its tokens to the OIDC token's life.
const PROVIDER_TTL: u64 = support::provider::TTL;
const GANTRY_TTL: u64 = 3600;

const LAYER_SIZE: usize = 256 * 1024;

// ---------------------------------------------------------------- gantry with auth

/// `gantry serve` with `[auth]` trusting the provider; killed on drop.
struct Registry(support::Gantry);

/// The identity the claim policy gives `client`, with the issuer's prefix.
fn username(p: &Provider, client: &str) -> String {
    format!("{}/{client}", p.issuer)
}

/// The `[auth]` and `[access_control]` sections for a gantry on `port`.
fn config_text(p: &Provider, port: u16) -> String {
    let iss = &p.issuer;
    let pusher = username(p, PUSHER);
    format!(
        r#"
[auth]
service = "gantry"
public_url = "http://127.0.0.1:{port}"

[auth.token]
ttl_seconds = {GANTRY_TTL}

[[auth.oidc]]
issuer = "{iss}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256"]

[auth.oidc.policy]
module = "builtin:cel"

[auth.oidc.policy.settings]
username = "claims.sub"
groups = "['namespace:' + claims['kubernetes.io'].namespace]"

[[auth.oidc.policy.settings.validations]]
expression = "claims['kubernetes.io'].namespace == 'team-a'"
message = "only team-a's service accounts"

[[auth.oidc.policy.settings.validations]]
expression = "has(claims['kubernetes.io'].pod) && size(claims['kubernetes.io'].pod.name) > 0"
message = "only tokens bound to a pod"

[access_control.repositories."team-a/**"]
[[access_control.repositories."team-a/**".policies]]
users = ["{pusher}"]
actions = ["read", "create", "update"]

# Longest pattern decides: here the reader may pull (through its namespace
# group), and the pusher may still push.
[access_control.repositories."team-a/shared"]
[[access_control.repositories."team-a/shared".policies]]
users = ["{pusher}"]
actions = ["read", "create", "update"]
[[access_control.repositories."team-a/shared".policies]]
groups = ["{iss}/namespace:team-a"]
actions = ["read"]
"#
    )
}

impl Registry {
    fn start(p: &Provider, root: &Path) -> Registry {
        Registry(support::Gantry::start_configured(root, &|port| {
            config_text(p, port)
        }))
    }

    /// Discovery and JWKS are fetched in the background: waits until a
    /// token of `client` is accepted on `/v2/`.
    fn wait_trusts(&self, token: &str) {
        let deadline = Instant::now() + LIVENESS;
        loop {
            let r = http()
                .get(self.url("/v2/"))
                .bearer_auth(token)
                .send()
                .expect("GET /v2/");
            if r.status() == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gantry never accepted the provider's token (last: {}):\n{}",
                r.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn host(&self) -> String {
        self.0.host()
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    fn log(&self) -> String {
        self.0.log()
    }

    /// The audit events logged so far.
    fn audit_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("gantry::audit"))
            .map(str::to_string)
            .collect()
    }
}

/// Both processes, the provider's clients and a registry trusting it.
struct World {
    work: tempfile::TempDir,
    provider: Provider,
    gantry: Registry,
}

fn world() -> World {
    let work = tempfile::tempdir().expect("tempdir");
    let provider = Provider::start(&[PUSHER, READER, OUTSIDER]);
    let gantry = Registry::start(&provider, &work.path().join("root"));
    gantry.wait_trusts(&provider.token(PUSHER));
    World {
        work,
        provider,
        gantry,
    }
}

// ---------------------------------------------------------------- helpers

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The payload of a compact JWT, unverified.
fn jwt_payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

fn jwt_header(token: &str) -> serde_json::Value {
    let part = token.split('.').next().expect("a JWT has a header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url header");
    serde_json::from_slice(&bytes).expect("JSON header")
}

/// An OCI layout holding a three-layer image tagged `v1`.
fn image_layout(dir: &Path, seed: u64) -> Layout {
    image_layout_with(dir, seed).0
}

fn image_layout_with(dir: &Path, seed: u64) -> (Layout, Image) {
    let layout = Layout::create(dir);
    let image = layout.add_image(&mut Noise::new(seed), "amd64", 3, LAYER_SIZE);
    layout.tag(&image.manifest, "v1");
    (layout, image)
}

fn oci_ref(dir: &Path) -> String {
    format!("oci:{}:v1", dir.display())
}

/// `skopeo copy` from an OCI layout to the registry with `auth` flags.
fn push(src: &Layout, dest: &str, auth: &[&str]) -> std::process::Output {
    let src = oci_ref(&src.dir);
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    args.extend_from_slice(auth);
    args.extend([src.as_str(), dest]);
    skopeo_raw(&args)
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `skopeo copy` from the registry into a fresh OCI layout.
fn pull(src: &str, out: &Path, auth: &[&str]) -> Layout {
    let dest = oci_ref(out);
    let mut args = vec!["copy", "--src-tls-verify=false"];
    args.extend_from_slice(auth);
    args.extend([src, dest.as_str()]);
    skopeo(&args);
    Layout {
        dir: out.to_path_buf(),
    }
}

/// The tags of `repo` as `token`'s holder sees them (None: 404).
fn tags(g: &Registry, repo: &str, token: &str) -> Option<Vec<String>> {
    let r = http()
        .get(g.url(&format!("/v2/{repo}/tags/list")))
        .bearer_auth(token)
        .send()
        .expect("GET tags");
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 200, "tags of {repo}");
    let body: serde_json::Value = r.json().expect("JSON");
    Some(
        body["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t.as_str().expect("tag").to_string())
                    .collect()
            })
            .unwrap_or_default(),
    )
}

fn catalog(g: &Registry, token: &str) -> Vec<String> {
    let r = http()
        .get(g.url("/v2/_catalog"))
        .bearer_auth(token)
        .send()
        .expect("GET _catalog");
    assert_eq!(r.status(), 200, "_catalog");
    let body: serde_json::Value = r.json().expect("JSON");
    body["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|t| t.as_str().expect("name").to_string())
        .collect()
}

fn error_codes(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not a JSON error body: {}", String::from_utf8_lossy(body)));
    v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["code"].as_str().expect("code").to_string())
        .collect()
}

/// Asserts that no raw token (nor its signature alone) ever reached the log.
fn assert_not_logged(g: &Registry, tokens: &[&str]) {
    let log = g.log();
    for t in tokens {
        let signature = t.rsplit('.').next().expect("signature");
        assert!(
            !log.contains(t) && !log.contains(signature),
            "a raw token reached gantry's log"
        );
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn the_provider_issues_kubernetes_shaped_rs256_access_tokens() {
    let p = Provider::start(&[PUSHER]);
    let before = now();
    let token = p.token(PUSHER);
    let header = jwt_header(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    let claims = jwt_payload(&token);
    assert_eq!(claims["iss"], p.issuer.as_str());
    assert_eq!(claims["sub"], PUSHER);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["kubernetes.io"]["namespace"], "team-a");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "pusher");
    assert!(claims["kubernetes.io"]["serviceaccount"]["uid"].is_string());
    assert!(claims["kubernetes.io"]["pod"]["name"].is_string());
    assert!(claims["kubernetes.io"]["pod"]["uid"].is_string());
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp >= before + PROVIDER_TTL - 5 && exp <= now() + PROVIDER_TTL + 5);

    // Discovery and JWKS as a verifier fetches them; no private parts.
    let discovery: serde_json::Value = http()
        .get(format!("{}/.well-known/openid-configuration", p.issuer))
        .send()
        .expect("discovery")
        .json()
        .expect("JSON");
    assert_eq!(discovery["issuer"], p.issuer.as_str());
    let jwks: serde_json::Value = http()
        .get(discovery["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .expect("jwks")
        .json()
        .expect("JSON");
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(
        keys.iter()
            .any(|k| k["kid"] == header["kid"] && k["kty"] == "RSA")
    );
    assert!(keys.iter().all(|k| k.get("d").is_none()));

    // Any absolute URI may be requested as the audience; a wrong secret may not.
    assert_eq!(
        jwt_payload(&p.token_for(PUSHER, "https://other.example"))["aud"],
        "https://other.example"
    );
    let r = http()
        .post(format!("{}/token", p.issuer))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", PUSHER),
            ("client_secret", "wrong"),
            ("resource", AUDIENCE),
        ])
        .send()
        .expect("token request");
    assert_eq!(r.status(), 401);
}

#[test]
fn skopeo_pushes_and_pulls_with_a_raw_oidc_bearer_and_through_the_token_endpoint() {
    let w = world();
    let (p, g) = (&w.provider, &w.gantry);
    let token = p.token(PUSHER);

    // Raw bearer: skopeo sends the OIDC JWT as is on every request.
    let src = image_layout(&w.work.path().join("src"), 1);
    let dest = format!("docker://{}/team-a/app:v1", g.host());
    let out = push(&src, &dest, &["--dest-registry-token", &token]);
    assert_ok(&out, "skopeo push with --dest-registry-token");
    let pulled = pull(
        &dest,
        &w.work.path().join("pulled-bearer"),
        &["--src-registry-token", &token],
    );
    assert_same_blobs(&src, &pulled);

    // Token endpoint: skopeo logs in with `oidc:<JWT>` and uses the token
    // Gantry mints.
    let src2 = image_layout(&w.work.path().join("src2"), 2);
    let creds = format!("oidc:{token}");
    let dest2 = format!("docker://{}/team-a/tools:v1", g.host());
    let out = push(&src2, &dest2, &["--dest-creds", &creds]);
    assert_ok(&out, "skopeo push with --dest-creds");
    let pulled2 = pull(
        &dest2,
        &w.work.path().join("pulled-creds"),
        &["--src-creds", &creds],
    );
    assert_same_blobs(&src2, &pulled2);
    // The other image, too, through the other flow.
    let pulled3 = pull(
        &dest,
        &w.work.path().join("pulled-creds-app"),
        &["--src-creds", &creds],
    );
    assert_same_blobs(&src, &pulled3);

    // Moving an existing tag is `update`, which the pusher has.
    let (src3, image3) = image_layout_with(&w.work.path().join("src3"), 3);
    let out = push(&src3, &dest, &["--dest-registry-token", &token]);
    assert_ok(&out, "skopeo re-push (tag update)");
    let r = http()
        .get(g.url("/v2/team-a/app/manifests/v1"))
        .bearer_auth(&token)
        .header("accept", OCI_MANIFEST)
        .send()
        .expect("GET manifest");
    assert_eq!(r.status(), 200);
    let served = r.bytes().expect("body");
    assert!(
        served.as_ref() == src3.blob(&image3.manifest.digest).as_slice(),
        "the moved tag does not serve the new manifest"
    );

    assert_eq!(
        catalog(g, &token),
        ["team-a/app".to_string(), "team-a/tools".to_string()]
    );

    // The audit log names the workload (prefixed by its issuer), its `sub`
    // and its group, and never carries the token.
    let audit = g.audit_lines();
    let who = username(p, PUSHER);
    let fields = [
        "method=\"oidc\"".to_string(),
        format!("issuer=\"{}\"", p.issuer),
        format!("sub=\"{PUSHER}\""),
        format!("username=\"{who}\""),
        format!("groups={}/namespace:team-a", p.issuer),
        "outcome=\"allow\"".to_string(),
        "token_sha256=\"".to_string(),
    ];
    assert!(
        audit
            .iter()
            .any(|l| fields.iter().all(|f| l.contains(f.as_str()))),
        "no audit event with {fields:?}:\n{}",
        audit.join("\n")
    );
    assert_not_logged(g, &[&token]);
}

#[test]
fn the_reader_is_refused_with_403_and_sees_only_what_it_may_read() {
    let w = world();
    let (p, g) = (&w.provider, &w.gantry);
    let pusher = p.token(PUSHER);
    let reader = p.token(READER);

    let src = image_layout(&w.work.path().join("src"), 4);
    for repo in ["team-a/app", "team-a/shared"] {
        let out = push(
            &src,
            &format!("docker://{}/{repo}:v1", g.host()),
            &["--dest-registry-token", &pusher],
        );
        assert_ok(&out, &format!("pusher's push to {repo}"));
    }

    // The reader authenticates (its token is valid) but may only pull
    // team-a/shared, through its namespace group.
    let pulled = pull(
        &format!("docker://{}/team-a/shared:v1", g.host()),
        &w.work.path().join("pulled"),
        &["--src-registry-token", &reader],
    );
    assert_same_blobs(&src, &pulled);
    assert_eq!(catalog(g, &reader), ["team-a/shared".to_string()]);
    assert_eq!(
        catalog(g, &pusher),
        ["team-a/app".to_string(), "team-a/shared".to_string()]
    );

    // skopeo pushes as the reader fail, with either kind of credentials.
    let mine = image_layout(&w.work.path().join("mine"), 5);
    for (repo, flags) in [
        (
            "team-a/app:evil",
            vec!["--dest-registry-token", reader.as_str()],
        ),
        (
            "team-a/shared:evil",
            vec!["--dest-registry-token", reader.as_str()],
        ),
        (
            "team-a/reader-new:v1",
            vec!["--dest-registry-token", reader.as_str()],
        ),
    ] {
        let out = push(&mine, &format!("docker://{}/{repo}", g.host()), &flags);
        assert!(!out.status.success(), "the reader pushed {repo}");
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            stderr.contains("denied") || stderr.contains("403"),
            "the reader's push to {repo} failed for another reason:\n{stderr}"
        );
    }
    let creds = format!("oidc:{reader}");
    let out = push(
        &mine,
        &format!("docker://{}/team-a/app:evil", g.host()),
        &["--dest-creds", &creds],
    );
    assert!(
        !out.status.success(),
        "the reader pushed through the token endpoint"
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("denied") || stderr.contains("403"),
        "the reader's push through the token endpoint failed for another reason:\n{stderr}"
    );

    // On the wire: 403 DENIED naming the action and repository, never 401.
    let who = username(p, READER);
    for (method, repo, rest) in [
        ("POST", "team-a/app", "blobs/uploads/"),
        ("PUT", "team-a/app", "manifests/evil"),
        ("POST", "team-a/shared", "blobs/uploads/"),
        ("DELETE", "team-a/shared", "manifests/v1"),
        ("GET", "team-a/app", "manifests/v1"),
    ] {
        let path = format!("/v2/{repo}/{rest}");
        let body = if method == "PUT" { "{}" } else { "" };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {reader}\r\n\
             Content-Type: {OCI_MANIFEST}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            g.host(),
            body.len()
        );
        let r = raw_request(g.0.addr, req.as_bytes());
        assert_eq!(r.status, 403, "{method} {path} as the reader: {}", r.head);
        assert_eq!(error_codes(&r.body), ["DENIED"], "{method} {path}");
        let text = String::from_utf8_lossy(&r.body);
        assert!(
            text.contains(&who) && text.contains(repo),
            "the 403 does not name the caller and repository: {text}"
        );
    }

    // Nothing the reader tried was stored.
    assert_eq!(tags(g, "team-a/app", &pusher), Some(vec!["v1".to_string()]));
    assert_eq!(
        tags(g, "team-a/shared", &pusher),
        Some(vec!["v1".to_string()])
    );
    assert_eq!(tags(g, "team-a/reader-new", &pusher), None);

    // The token endpoint narrows the reader's scope to what it may do.
    let r = http()
        .get(g.url(
            "/auth/token?service=gantry&scope=repository:team-a/app:pull,push\
             &scope=repository:team-a/shared:pull,push",
        ))
        .basic_auth("x", Some(&reader))
        .send()
        .expect("token endpoint");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().expect("JSON");
    let minted = jwt_payload(body["token"].as_str().expect("token"));
    assert_eq!(minted["sub"], who.as_str());
    assert_eq!(
        minted["access"],
        serde_json::json!([{"type": "repository", "name": "team-a/shared", "actions": ["pull"]}])
    );

    let audit = g.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l.contains(&format!("username=\"{who}\"")) && l.contains("outcome=\"allow\"")),
        "no audit event for {who}:\n{}",
        audit.join("\n")
    );
    assert_not_logged(g, &[&reader, &pusher]);
}

#[test]
fn missing_foreign_and_refused_tokens_get_401_with_the_challenge() {
    let w = world();
    let (p, g) = (&w.provider, &w.gantry);
    let realm = format!("http://{}/auth/token", g.host());

    // No token: 401 with the Bearer challenge naming the scope needed.
    for (method, path, scope) in [
        (
            "GET",
            "/v2/team-a/app/manifests/v1",
            "repository:team-a/app:pull",
        ),
        (
            "POST",
            "/v2/team-a/app/blobs/uploads/",
            "repository:team-a/app:pull,push",
        ),
    ] {
        let r = http()
            .request(method.parse().expect("method"), g.url(path))
            .send()
            .expect("request");
        assert_eq!(r.status(), 401, "{method} {path} without a token");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert_eq!(
            challenge,
            format!("Bearer realm=\"{realm}\",service=\"gantry\",scope=\"{scope}\""),
        );
        assert_eq!(error_codes(&r.bytes().expect("body")), ["UNAUTHORIZED"]);
    }
    let r = http().get(g.url("/v2/")).send().expect("GET /v2/");
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with(&format!("Bearer realm=\"{realm}\",service=\"gantry\""))
    );

    // skopeo without credentials cannot push either.
    let src = image_layout(&w.work.path().join("src"), 6);
    let dest = format!("docker://{}/team-a/app:v1", g.host());
    let out = push(&src, &dest, &[]);
    assert!(!out.status.success(), "an anonymous push succeeded");

    // A token of this very provider for another audience: 401, also for
    // skopeo, and at the token endpoint.
    let foreign = p.token_for(PUSHER, "https://other.example");
    assert_eq!(jwt_payload(&foreign)["aud"], "https://other.example");
    let r = http()
        .post(g.url("/v2/team-a/app/blobs/uploads/"))
        .bearer_auth(&foreign)
        .send()
        .expect("POST");
    assert_eq!(r.status(), 401, "a token for another audience was accepted");
    let challenge = r.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.starts_with(&format!("Bearer realm=\"{realm}\",service=\"gantry\"")));
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let out = push(&src, &dest, &["--dest-registry-token", &foreign]);
    assert!(
        !out.status.success(),
        "skopeo pushed with a foreign-audience token"
    );
    let r = http()
        .get(g.url("/auth/token?service=gantry&scope=repository:team-a/app:pull,push"))
        .basic_auth("x", Some(&foreign))
        .send()
        .expect("token endpoint");
    assert_eq!(r.status(), 401);

    // A token the claim policy refuses (namespace team-b): 401, not 403.
    let outsider = p.token(OUTSIDER);
    let r = http()
        .post(g.url("/v2/team-a/app/blobs/uploads/"))
        .bearer_auth(&outsider)
        .send()
        .expect("POST");
    assert_eq!(r.status(), 401, "the policy's deny must be a 401");
    let audit = g.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l.contains(&format!("sub=\"{OUTSIDER}\""))
                && l.contains("outcome=\"deny\"")
                && l.contains("only team-a's service accounts")),
        "the policy's reason is not in the audit log:\n{}",
        audit.join("\n")
    );

    // A tampered token (signature of another payload): 401.
    let good = p.token(PUSHER);
    let mut parts: Vec<&str> = good.split('.').collect();
    let other_sig = foreign.rsplit('.').next().expect("sig");
    parts[2] = other_sig;
    let tampered = parts.join(".");
    let r = http()
        .get(g.url("/v2/team-a/app/tags/list"))
        .bearer_auth(&tampered)
        .send()
        .expect("GET");
    assert_eq!(r.status(), 401);

    // Nothing was stored by any of it.
    assert_eq!(tags(g, "team-a/app", &good), None);
    assert_not_logged(g, &[&foreign, &outsider, &good]);
}

#[test]
fn the_token_endpoint_exchanges_an_oidc_token_for_a_shorter_lived_gantry_token() {
    let w = world();
    let (p, g) = (&w.provider, &w.gantry);
    let oidc = p.token(PUSHER);
    let oidc_exp = jwt_payload(&oidc)["exp"].as_u64().expect("exp");

    let before = now();
    let r = http()
        .get(g.url("/auth/token?service=gantry&scope=repository:team-a/app:pull,push"))
        .basic_auth("x", Some(&oidc))
        .send()
        .expect("token endpoint");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().expect("JSON");
    let token = body["token"].as_str().expect("token").to_string();
    assert_eq!(body["access_token"], token.as_str());
    let expires_in = body["expires_in"].as_u64().expect("expires_in");
    assert!(expires_in > 0);
    assert!(expires_in <= GANTRY_TTL, "expires_in {expires_in} > ttl");
    assert!(
        expires_in <= oidc_exp.saturating_sub(before),
        "expires_in {expires_in} outlives the OIDC token ({} s left)",
        oidc_exp.saturating_sub(before)
    );
    let issued_at = body["issued_at"].as_str().expect("issued_at");
    assert!(
        issued_at.len() == 20 && issued_at.ends_with('Z') && issued_at.as_bytes()[10] == b'T',
        "issued_at is not RFC 3339 UTC: {issued_at}"
    );

    // Gantry's own token, not the OIDC one: issued by Gantry, for the
    // pusher, with the scope asked for and granted; its expiry is the OIDC
    // token's at the latest.
    assert_ne!(token, oidc);
    let minted = jwt_payload(&token);
    assert_ne!(minted["iss"], p.issuer.as_str());
    assert_eq!(minted["sub"], username(p, PUSHER).as_str());
    assert!(minted["exp"].as_u64().expect("exp") <= oidc_exp);
    assert_eq!(
        minted["access"],
        serde_json::json!([{"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}])
    );

    // The OAuth2 POST form says the same.
    let r = http()
        .post(g.url("/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("service", "gantry"),
            ("scope", "repository:team-a/app:pull"),
            ("username", "oidc"),
            ("password", oidc.as_str()),
        ])
        .send()
        .expect("POST token endpoint");
    assert_eq!(r.status(), 200);
    let posted: serde_json::Value = r.json().expect("JSON");
    assert!(posted["expires_in"].as_u64().expect("expires_in") <= oidc_exp.saturating_sub(before));
    assert_eq!(
        jwt_payload(posted["access_token"].as_str().expect("access_token"))["access"],
        serde_json::json!([{"type": "repository", "name": "team-a/app", "actions": ["pull"]}])
    );

    // The minted token works on /v2/ within its scope, and only there.
    let src = image_layout(&w.work.path().join("src"), 7);
    let out = push(
        &src,
        &format!("docker://{}/team-a/app:v1", g.host()),
        &["--dest-registry-token", &token],
    );
    assert_ok(&out, "skopeo push with the minted token");
    let r = http()
        .get(g.url("/v2/team-a/app/tags/list"))
        .bearer_auth(&token)
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
    let r = http()
        .post(g.url("/v2/team-a/other/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .expect("POST");
    assert!(
        r.status() == 401 || r.status() == 403,
        "a minted token worked outside its scope: {}",
        r.status()
    );

    assert_not_logged(g, &[&oidc, &token]);
}
