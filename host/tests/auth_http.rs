//! Workload identity at the HTTP layer: the registry app with `[auth]`
//! configured, driven without a socket (`Router::oneshot`), against a real
//! in-process OIDC issuer (discovery + JWKS over loopback HTTP, keys made at
//! test time) and the real `builtin:cel` policy component.
//!
//! Every refused credential must be a 401 with a Bearer challenge and must
//! store nothing; an authenticated caller without permission gets 403.

mod issuer;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use gantry::auth::Auth;
use gantry::auth::oidc::FetchOptions;
use gantry::config::Config;
use gantry::distribution::AppState;
use gantry::policy::{EngineOptions, PolicyEngine};
use gantry::storage::fs::FsStorage;
use http_body_util::BodyExt;
use issuer::{Algorithm, IssuerOptions, SignOpts, TestIssuer};
use serde_json::{Value, json};
use sha2::Digest as _;
use tower::ServiceExt;

const AUD: &str = "https://gantry.example";

/// Short fetch timings so "issuer comes up later" resolves in well under a second.
fn fetch_options() -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(2),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        kid_miss_cooldown: Duration::from_millis(0),
        ..FetchOptions::default()
    }
}

fn engine() -> PolicyEngine {
    // One compilation cache for the whole test binary: the CEL component is
    // compiled once, then each test deserializes it.
    let cache = std::env::temp_dir().join("gantry-test-policy-cache");
    PolicyEngine::new(EngineOptions {
        cache_dir: Some(cache),
        ..EngineOptions::default()
    })
    .expect("engine")
}

struct Registry {
    app: Router,
    _dir: tempfile::TempDir,
}

/// A registry whose config is `[auth]` (issuer block from `issuers`) plus `rest`.
async fn registry(issuers: &str, rest: &str) -> Registry {
    let dir = tempfile::tempdir().expect("tmp");
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("admin:{}\n", bcrypt::hash("adminpw", 4).expect("bcrypt")),
    )
    .expect("write");
    let text = format!(
        "[storage]\nroot = \"{root}\"\n[auth]\npublic_url = \"http://registry.test\"\nhtpasswd_file = \"{ht}\"\n{issuers}\n{rest}",
        root = dir.path().join("data").display(),
        ht = htpasswd.display(),
    );
    let config =
        Config::from_toml_str(&text, "test", dir.path()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let storage = FsStorage::open(&config.storage.root)
        .await
        .expect("storage");
    let auth_cfg = config.auth.as_ref().expect("auth");
    let auth = Auth::build(
        auth_cfg,
        config.access_control.clone(),
        &config.tenants,
        &config.storage.root,
        &engine(),
        fetch_options(),
        None,
    )
    .await
    .unwrap_or_else(|p| panic!("{p:?}"));
    auth.start();
    let state = AppState::new(Arc::new(storage), Some(Arc::new(auth)));
    Registry {
        app: gantry::app(state),
        _dir: dir,
    }
}

/// An issuer block with the CEL policy: namespace `team-a` only, username =
/// `sub`, groups = ["ns:<namespace>"].
fn issuer_block(issuer: &TestIssuer) -> String {
    format!(
        r#"
[[auth.oidc]]
issuer = "{iss}"
audiences = ["{AUD}"]
[auth.oidc.policy]
module = "builtin:cel"
# A debug build on two cores shared by parallel tests: no evaluation here
# is about the time budget, so give it room beyond the 100 ms default.
timeout_ms = 5000
[auth.oidc.policy.settings]
validations = [{{ expression = "claims['kubernetes.io'].namespace == 'team-a'", message = "only team-a" }}]
username = "claims.sub"
groups = "['ns:' + claims['kubernetes.io'].namespace]"
"#,
        iss = issuer.issuer()
    )
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

fn code(r: &Reply) -> &str {
    r.body["errors"][0]["code"].as_str().unwrap_or("")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Monolithic blob upload with optional credentials.
async fn push_blob(app: &Router, repo: &str, blob: &[u8], auth: Option<&str>) -> Reply {
    let mut req = Request::post(format!("/v2/{repo}/blobs/uploads/?digest={}", digest(blob)));
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    send(app, req.body(Body::from(blob.to_vec())).expect("request")).await
}

async fn head_blob(app: &Router, repo: &str, blob: &[u8], auth: &str) -> StatusCode {
    let req = Request::head(format!("/v2/{repo}/blobs/{}", digest(blob)))
        .header(header::AUTHORIZATION, auth);
    send(app, req.body(Body::empty()).expect("request"))
        .await
        .status
}

/// Waits until the issuer's keys are loaded (the background fetch is async).
async fn until_accepted(app: &Router, token: &str) {
    for _ in 0..200 {
        let req = Request::get("/v2/")
            .header(header::AUTHORIZATION, bearer(token))
            .body(Body::empty())
            .expect("req");
        if send(app, req).await.status == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("token never accepted");
}

fn assert_challenge(r: &Reply, scope: Option<&str>) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(code(r), "UNAUTHORIZED");
    let challenge = r
        .headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        challenge
            .starts_with("Bearer realm=\"http://registry.test/auth/token\",service=\"gantry\""),
        "{challenge}"
    );
    if let Some(scope) = scope {
        assert!(
            challenge.contains(&format!("scope=\"{scope}\"")),
            "{challenge}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_matrix_is_refused_with_401_and_stores_nothing() {
    let a = TestIssuer::start().await;
    let b = TestIssuer::start_with(IssuerOptions {
        rsa_slot: 1,
        ..IssuerOptions::default()
    })
    .await;
    let reg = registry(&issuer_block(&a), "").await;
    let good = a.sign(a.claims(AUD), SignOpts::alg(Algorithm::RS256));
    until_accepted(&reg.app, &good).await;

    let rsa = a.key("rsa-1");
    let public = rsa.rsa_public.as_ref().expect("rsa key").clone();
    let mut claims = a.claims(AUD);
    let mut attacks: Vec<(&str, String)> = vec![
        ("alg none", issuer::unsigned_token("none", &claims)),
        ("HS256 keyed with the issuer's public key", issuer::hs256_token(public.spki_pem.as_bytes(), Some(&rsa.kid), &claims)),
        ("A's claims signed with B's key", b.sign(claims.clone(), SignOpts::alg(Algorithm::RS256))),
        ("oversized", a.sign(json!({"iss": a.issuer(), "aud": AUD, "exp": issuer::now() + 60, "pad": "x".repeat(40_000)}), SignOpts::alg(Algorithm::RS256))),
        ("malformed base64", "eyJhbGciOiJSUzI1NiJ9.%%%%.c2ln".to_string()),
        ("malformed JSON", format!("{}.{}.c2ln", issuer::b64(r#"{"alg":"RS256","kid":"rsa-1"}"#), issuer::b64("{not json"))),
    ];
    claims["aud"] = json!("https://other.example");
    attacks.push((
        "wrong aud",
        a.sign(claims.clone(), SignOpts::alg(Algorithm::RS256)),
    ));
    let mut claims = a.claims(AUD);
    claims["iss"] = json!("https://unknown.example");
    attacks.push((
        "unknown issuer",
        a.sign(claims, SignOpts::alg(Algorithm::RS256)),
    ));
    let mut claims = a.claims(AUD);
    claims["exp"] = json!(issuer::now() - 600);
    claims["iat"] = json!(issuer::now() - 900);
    attacks.push(("expired", a.sign(claims, SignOpts::alg(Algorithm::RS256))));
    let mut claims = a.claims(AUD);
    claims["nbf"] = json!(issuer::now() + 600);
    attacks.push((
        "nbf in the future",
        a.sign(claims, SignOpts::alg(Algorithm::RS256)),
    ));
    let unpublished = a.add_unpublished_key(Algorithm::RS256);
    let unknown_kid = a.sign(
        a.claims(AUD),
        SignOpts::alg(Algorithm::RS256).kid(&unpublished),
    );
    attacks.push(("unknown kid", unknown_kid.clone()));
    let mut claims = a.claims(AUD);
    claims["kubernetes.io"]["namespace"] = json!("team-b");
    attacks.push((
        "denied by the claim policy",
        a.sign(claims, SignOpts::alg(Algorithm::RS256)),
    ));

    for (i, (name, token)) in attacks.iter().enumerate() {
        let blob = format!("attack blob {i}");
        let r = push_blob(
            &reg.app,
            "team-a/app",
            blob.as_bytes(),
            Some(&bearer(token)),
        )
        .await;
        assert_challenge(&r, Some("repository:team-a/app:pull,push"));
        assert!(
            r.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap_or("")
                .contains("invalid_token"),
            "{name}"
        );
        // Nothing stored: the blob is unknown even to a legitimate caller.
        assert_eq!(
            head_blob(&reg.app, "team-a/app", blob.as_bytes(), &bearer(&good)).await,
            StatusCode::NOT_FOUND,
            "{name}"
        );
        // The same token as a Basic password fails the same way.
        let r = push_blob(
            &reg.app,
            "team-a/app",
            blob.as_bytes(),
            Some(&basic("x", token)),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name} via basic");
    }

    // The unknown kid is accepted once the issuer rotates that key in.
    a.publish_key(&unpublished);
    let r = push_blob(
        &reg.app,
        "team-a/app",
        b"after rotation",
        Some(&bearer(&unknown_kid)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_challenge_asks_for_pull_on_the_source_too() {
    let a = TestIssuer::start().await;
    let reg = registry(&issuer_block(&a), &team_rules(&a)).await;
    let req = Request::post(format!(
        "/v2/team-a/app/blobs/uploads/?mount={}&from=team-a/base",
        digest(b"x")
    ))
    .body(Body::empty())
    .expect("req");
    let r = send(&reg.app, req).await;
    assert_challenge(
        &r,
        Some("repository:team-a/app:pull,push repository:team-a/base:pull"),
    );
    // Without `mount`, `from` means nothing: one scope.
    let req = Request::post("/v2/team-a/app/blobs/uploads/?from=team-a/base")
        .body(Body::empty())
        .expect("req");
    assert_challenge(
        &send(&reg.app, req).await,
        Some("repository:team-a/app:pull,push"),
    );

    // A Gantry token for the target only, where the identity may read the
    // source: 401 insufficient_scope naming both, and a token for both mounts.
    let oidc = a.sign(a.claims(AUD), SignOpts::alg(Algorithm::RS256));
    until_accepted(&reg.app, &oidc).await;
    assert_eq!(
        push_blob(&reg.app, "team-a/base", b"x", Some(&bearer(&oidc)))
            .await
            .status,
        StatusCode::CREATED
    );
    let token_for = |scopes: &'static str| {
        let app = reg.app.clone();
        let oidc = oidc.clone();
        async move {
            let req = Request::get(format!("/auth/token?service=gantry&{scopes}"))
                .header(header::AUTHORIZATION, basic("x", &oidc))
                .body(Body::empty())
                .expect("req");
            let r = send(&app, req).await;
            r.body["token"].as_str().expect("token").to_string()
        }
    };
    let mount = |token: String| {
        Request::post(format!(
            "/v2/team-a/app/blobs/uploads/?mount={}&from=team-a/base",
            digest(b"x")
        ))
        .header(header::AUTHORIZATION, bearer(&token))
        .body(Body::empty())
        .expect("req")
    };
    let narrow = token_for("scope=repository:team-a/app:pull,push").await;
    let r = send(&reg.app, mount(narrow)).await;
    assert_challenge(
        &r,
        Some("repository:team-a/app:pull,push repository:team-a/base:pull"),
    );
    let both =
        token_for("scope=repository:team-a/app:pull,push&scope=repository:team-a/base:pull").await;
    let r = send(&reg.app, mount(both)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_refused_not_guessed() {
    let a = TestIssuer::start().await;
    let reg = registry(&issuer_block(&a), "").await;
    let good = a.sign(a.claims(AUD), SignOpts::alg(Algorithm::RS256));
    until_accepted(&reg.app, &good).await;
    let req = Request::post(format!(
        "/v2/team-a/app/blobs/uploads/?digest={}",
        digest(b"x")
    ))
    .header(header::AUTHORIZATION, bearer(&good))
    .header(header::AUTHORIZATION, basic("admin", "adminpw"))
    .body(Body::from("x"))
    .expect("req");
    let r = send(&reg.app, req).await;
    assert_challenge(&r, None);
    assert_eq!(
        head_blob(&reg.app, "team-a/app", b"x", &bearer(&good)).await,
        StatusCode::NOT_FOUND
    );
}

const TEAM_RULES: &str = r#"
[access_control.admin_policy]
users = ["admin"]
actions = ["read", "create", "update", "delete"]
[access_control.repositories."**"]
anonymous_policy = ["read"]
default_policy = []
[access_control.repositories."team-a/**"]
anonymous_policy = []
[[access_control.repositories."team-a/**".policies]]
groups = ["ISSUER/ns:team-a"]
actions = ["read", "create"]
"#;

fn team_rules(issuer: &TestIssuer) -> String {
    TEAM_RULES.replace("ISSUER", &issuer.issuer())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_give_403_to_identities_and_401_to_anonymous() {
    let a = TestIssuer::start().await;
    let reg = registry(&issuer_block(&a), &team_rules(&a)).await;
    let good = a.sign(a.claims(AUD), SignOpts::alg(Algorithm::RS256));
    until_accepted(&reg.app, &good).await;

    // The team may create in team-a/**: new blob, new manifest, new tag.
    assert_eq!(
        push_blob(&reg.app, "team-a/app", b"{}", Some(&bearer(&good)))
            .await
            .status,
        StatusCode::CREATED
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(b"{}"), "size": 2},
        "layers": []
    });
    let put = |tag: &str, body: Value, auth: Option<String>| {
        let mut req = Request::put(format!("/v2/team-a/app/manifests/{tag}")).header(
            header::CONTENT_TYPE,
            "application/vnd.oci.image.manifest.v1+json",
        );
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.body(Body::from(body.to_string())).expect("req")
    };
    let r = send(&reg.app, put("v1", manifest.clone(), Some(bearer(&good)))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    // Moving the tag is `update`, which the team lacks: 403 naming it.
    let mut moved = manifest.clone();
    moved["annotations"] = json!({"v": "2"});
    let r = send(&reg.app, put("v1", moved.clone(), Some(bearer(&good)))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(code(&r), "DENIED");
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("may not update repository team-a/app"),
        "{:?}",
        r.body
    );
    // Re-pushing the same manifest under the same tag is not a move.
    assert_eq!(
        send(&reg.app, put("v1", manifest.clone(), Some(bearer(&good))))
            .await
            .status,
        StatusCode::CREATED
    );

    // Deleting needs `delete`: 403 for the team, allowed for the admin.
    let del = |auth: String| {
        Request::delete("/v2/team-a/app/manifests/v1")
            .header(header::AUTHORIZATION, auth)
            .body(Body::empty())
            .expect("req")
    };
    assert_eq!(
        send(&reg.app, del(bearer(&good))).await.status,
        StatusCode::FORBIDDEN
    );

    // Anonymous: 401 with a challenge in team-a (nothing granted), read elsewhere.
    let r = send(
        &reg.app,
        Request::get("/v2/team-a/app/manifests/v1")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_challenge(&r, Some("repository:team-a/app:pull"));
    let r = push_blob(&reg.app, "public/tool", b"anon", None).await;
    assert_challenge(&r, Some("repository:public/tool:pull,push"));

    // A token of another namespace is denied by the policy → 401, not 403.
    let mut claims = a.claims(AUD);
    claims["kubernetes.io"]["namespace"] = json!("team-b");
    let other = a.sign(claims, SignOpts::alg(Algorithm::RS256));
    assert_eq!(
        push_blob(&reg.app, "team-a/app", b"{}", Some(&bearer(&other)))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // The admin (htpasswd) may do everything, including what the team may not.
    let r = send(&reg.app, put("v1", moved, Some(basic("admin", "adminpw")))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(
        send(&reg.app, del(basic("admin", "adminpw"))).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send(&reg.app, del(basic("admin", "wrong"))).await.status,
        StatusCode::UNAUTHORIZED
    );

    // The catalog only lists what the caller may read.
    let cat = |auth: Option<String>| {
        let mut req = Request::get("/v2/_catalog");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.body(Body::empty()).expect("req")
    };
    assert_eq!(
        send(&reg.app, cat(Some(bearer(&good)))).await.body["repositories"],
        json!(["team-a/app"])
    );
    assert_eq!(
        send(&reg.app, cat(None)).await.body["repositories"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_cannot_mint_names_outside_its_issuer_prefix() {
    let a = TestIssuer::start().await;
    // The tenant's policy claims to be the admin.
    let block = issuer_block(&a).replace("username = \"claims.sub\"", "username = \"'admin'\"");
    let reg = registry(&block, &team_rules(&a)).await;
    let token = a.sign(a.claims(AUD), SignOpts::alg(Algorithm::RS256));
    until_accepted(&reg.app, &token).await;
    // It is `<issuer>/admin`, not `admin`: no admin rights outside team-a.
    let r = push_blob(&reg.app, "platform/base", b"evil", Some(&bearer(&token))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let msg = r.body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(&format!("{}/admin may not create", a.issuer())),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_mints_narrowed_short_lived_tokens() {
    let a = TestIssuer::start().await;
    let reg = registry(&issuer_block(&a), &team_rules(&a)).await;
    let oidc = a.sign(a.claims(AUD), SignOpts::alg(Algorithm::RS256));
    until_accepted(&reg.app, &oidc).await;

    let ask = |scope: &str, auth: Option<String>| {
        let mut req = Request::get(format!("/auth/token?service=gantry&scope={scope}"));
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        req.body(Body::empty()).expect("req")
    };
    // Asks for pull,push,delete; access control grants read+create only.
    let r = send(
        &reg.app,
        ask(
            "repository:team-a/app:pull,push,delete",
            Some(basic("anything", &oidc)),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let token = r.body["token"].as_str().expect("token").to_string();
    assert_eq!(r.body["access_token"], r.body["token"]);
    let expires_in = r.body["expires_in"].as_u64().expect("expires_in");
    assert!(expires_in <= 300, "ttl cap: {expires_in}");
    assert!(
        r.body["issued_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    let payload = token.split('.').nth(1).expect("jwt");
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(
        payload["access"],
        json!([{"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}])
    );
    assert_eq!(
        payload["sub"],
        json!(format!(
            "{}/system:serviceaccount:team-a:pusher",
            a.issuer()
        ))
    );

    // The minted token works on /v2 within its scope...
    assert_eq!(
        push_blob(&reg.app, "team-a/app", b"via token", Some(&bearer(&token)))
            .await
            .status,
        StatusCode::CREATED
    );
    // ...and nowhere else, even where the identity itself could act: there
    // the client is told to fetch a token for the scope it needs (401
    // insufficient_scope, which clients answer by asking for one)...
    let r = push_blob(
        &reg.app,
        "team-a/other",
        b"via token",
        Some(&bearer(&token)),
    )
    .await;
    assert_challenge(&r, Some("repository:team-a/other:pull,push"));
    let challenge = r.headers[header::WWW_AUTHENTICATE].to_str().expect("ascii");
    assert!(
        challenge.ends_with(",error=\"insufficient_scope\""),
        "{challenge}"
    );
    // ...and a token for that scope does it.
    let r = send(
        &reg.app,
        ask(
            "repository:team-a/other:pull,push",
            Some(basic("anything", &oidc)),
        ),
    )
    .await;
    let wider = r.body["token"].as_str().expect("token").to_string();
    assert_eq!(
        push_blob(
            &reg.app,
            "team-a/other",
            b"via token",
            Some(&bearer(&wider))
        )
        .await
        .status,
        StatusCode::CREATED
    );
    // Where access control refuses the identity itself, no token could
    // help: 403 DENIED.
    let r = push_blob(
        &reg.app,
        "elsewhere/app",
        b"via token",
        Some(&bearer(&token)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(code(&r), "DENIED");

    // An OIDC token about to expire caps the minted token's lifetime.
    let mut claims = a.claims(AUD);
    claims["exp"] = json!(issuer::now() + 30);
    let short = a.sign(claims, SignOpts::alg(Algorithm::RS256));
    let r = send(
        &reg.app,
        ask("repository:team-a/app:pull", Some(basic("x", &short))),
    )
    .await;
    assert!(
        r.body["expires_in"].as_u64().is_some_and(|n| n <= 30),
        "{:?}",
        r.body
    );

    // The OAuth2 POST form.
    let form = format!(
        "grant_type=password&username=x&password={oidc}&service=gantry&scope=repository%3Ateam-a%2Fapp%3Apull"
    );
    let req = Request::post("/auth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("req");
    let r = send(&reg.app, req).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body["access_token"].is_string());

    // Anonymous callers get a token scoped to what anonymous may do.
    let r = send(&reg.app, ask("repository:public/tool:pull,push", None)).await;
    let payload = r.body["token"]
        .as_str()
        .and_then(|t| t.split('.').nth(1))
        .expect("token");
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(
        payload["access"],
        json!([{"type": "repository", "name": "public/tool", "actions": ["pull"]}])
    );

    // An identity token (`oras login --identity-token`): the form's
    // refresh_token, taken as a Bearer would be.
    let form = |body: String| {
        Request::post("/auth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .expect("req")
    };
    let r = send(
        &reg.app,
        form(format!(
            "grant_type=refresh_token&refresh_token={oidc}&service=gantry&scope=repository%3Ateam-a%2Fapp%3Apull"
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body["access_token"].is_string());

    // Bad credentials: 401; a bad grant type: 400.
    let r = send(
        &reg.app,
        ask("repository:team-a/app:pull", Some(basic("admin", "nope"))),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(
        &reg.app,
        form("grant_type=refresh_token&refresh_token=x".into()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&reg.app, form("grant_type=client_credentials".into())).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_down_at_startup_then_up_without_restart() {
    let port = issuer::reserve_port();
    // Configure an issuer on a port where nothing listens yet.
    let placeholder = format!("http://127.0.0.1:{port}");
    let block = format!(
        "[[auth.oidc]]\nissuer = \"{placeholder}\"\naudiences = [\"{AUD}\"]\n[auth.oidc.policy.settings]\nusername = \"claims.sub\"\n"
    );
    let reg = registry(&block, "[access_control.repositories.\"**\"]\nanonymous_policy = [\"read\"]\ndefault_policy = [\"read\", \"create\"]\n").await;

    // htpasswd and anonymous access keep working while the issuer is down.
    assert_eq!(
        push_blob(
            &reg.app,
            "a/b",
            b"by admin",
            Some(&basic("admin", "adminpw"))
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let r = send(
        &reg.app,
        Request::get(format!("/v2/a/b/blobs/{}", digest(b"by admin")))
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // A token of the issuer that is down is refused with a message that
    // says so (retry), not as an invalid token; an unknown issuer's token
    // reads "invalid token".
    let jwt = |iss: &str| {
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.{}",
            b64(json!({"alg": "RS256", "kid": "k1"})),
            b64(json!({"iss": iss, "aud": AUD, "sub": "x", "exp": 4_000_000_000u64})),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 256])
        )
    };
    for (iss, message) in [
        (placeholder.as_str(), "token issuer unavailable, try again"),
        ("https://unknown.example", "invalid token"),
    ] {
        let r = send(
            &reg.app,
            Request::get("/v2/")
                .header(header::AUTHORIZATION, bearer(&jwt(iss)))
                .body(Body::empty())
                .expect("req"),
        )
        .await;
        assert_challenge(&r, None);
        assert_eq!(r.body["errors"][0]["message"], message, "{iss}");
    }

    let issuer = TestIssuer::start_with(IssuerOptions {
        port,
        ..IssuerOptions::default()
    })
    .await;
    let token = issuer.sign(issuer.claims(AUD), SignOpts::alg(Algorithm::RS256));
    // Accepted once the background fetch (with backoff) reaches it.
    until_accepted(&reg.app, &token).await;
    assert_eq!(
        push_blob(&reg.app, "a/b", b"by workload", Some(&bearer(&token)))
            .await
            .status,
        StatusCode::CREATED
    );
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_valid_tokens_stays_bounded() {
    // 100,000 valid tokens of 100,000 distinct identities, each seen once:
    // every one is verified and cached, and the cache keeps at most its
    // bound (docs/workload-identity.md: 100,000 decisions, < 64 MiB).
    const TOKENS: usize = 100_000;
    let a = Arc::new(TestIssuer::start().await);
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        "[storage]\nroot = \"{}\"\n[auth]\n{}",
        dir.path().display(),
        issuer_block(&a)
    );
    let config = Config::from_toml_str(&text, "test", dir.path()).expect("config");
    let auth = Arc::new(
        Auth::build(
            config.auth.as_ref().expect("auth"),
            None,
            &[],
            dir.path(),
            &engine(),
            fetch_options(),
            None,
        )
        .await
        .unwrap_or_else(|p| panic!("{p:?}")),
    );
    auth.start();
    fn token(a: &TestIssuer, i: usize) -> String {
        let mut claims = a.claims(AUD);
        claims["sub"] = json!(format!("system:serviceaccount:team-a:workload-{i:06}"));
        a.sign(claims, SignOpts::alg(Algorithm::ES256))
    }
    let first = token(&a, 0);
    for _ in 0..100 {
        if auth.bearer(&first).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm up allocator and policy pool before the baseline.
    for i in 1..2_000 {
        auth.bearer(&token(&a, i)).await.expect("valid token");
    }
    let before = rss_kib();
    // Each token is made, presented and dropped: what stays is the cache's.
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (auth, a) = (auth.clone(), a.clone());
            tokio::spawn(async move {
                for i in 0..TOKENS / 2 {
                    let t = token(&a, 2_000 + 2 * i + w);
                    auth.bearer(&t).await.expect("valid token");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    let cached = auth.cached_decisions();
    eprintln!("{TOKENS} distinct tokens: {cached} decisions cached, RSS grew {grown_mib} MiB");
    assert!(cached <= 100_000, "{cached} decisions cached");
    assert!(cached >= 50_000, "the cache kept too little: {cached}");
    assert!(grown_mib < 64, "RSS grew {grown_mib} MiB");

    // Refused tokens are never cached: forged ones leave the count as it was.
    let held = auth.cached_decisions();
    for i in 0..1_000 {
        let forged = format!("{}x", token(&a, TOKENS + 10_000 + i));
        assert!(auth.bearer(&forged).await.is_err());
    }
    assert_eq!(auth.cached_decisions(), held);
}
