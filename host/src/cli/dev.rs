//! `gantry serve --dev` and `gantry dev token`: the whole workload-identity
//! story on one machine, for trying Gantry out. An OIDC issuer runs in the
//! process on a loopback port (a P-256 key made at start, discovery and
//! JWKS served, and a `POST /token` that mints a token for any subject),
//! `[auth]` trusts it with a CEL policy, and the start prints a token and
//! the client login lines that use it.
//!
//! Never enabled by a configuration file: only the `--dev` flag turns it
//! on, and it says loudly that anyone on this machine can mint tokens.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::auth::token::SigningKey;
use crate::config::Config;

/// The audience dev tokens carry and the dev issuer's `[auth]` accepts.
pub const AUDIENCE: &str = "gantry";
/// How long a dev token lives.
const TOKEN_SECONDS: u64 = 12 * 3600;
/// Where, under the storage root, the running dev issuer's URL is written
/// for `gantry dev token`.
const ISSUER_FILE: &str = "dev-issuer-url";

struct Issuer {
    url: String,
    key: SigningKey,
}

/// The dev issuer, running.
pub struct DevIssuer {
    issuer: Arc<Issuer>,
}

impl DevIssuer {
    /// Starts the issuer on a free loopback port.
    pub async fn start() -> anyhow::Result<DevIssuer> {
        let key = SigningKey::generate().map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let issuer = Arc::new(Issuer { url, key });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(mint))
            .with_state(issuer.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the dev issuer stopped");
            }
        });
        Ok(DevIssuer { issuer })
    }

    pub fn url(&self) -> &str {
        &self.issuer.url
    }

    /// A token for `sub` with `claims` added.
    pub fn token(&self, sub: &str, claims: Map<String, Value>) -> anyhow::Result<String> {
        sign(&self.issuer, sub, claims)
    }

    /// The `[auth]` and `[access_control]` that trust this issuer: usernames
    /// and groups are prefixed `dev:`, everyone authenticated may do
    /// everything, anonymous callers nothing.
    pub fn sections(&self) -> String {
        format!(
            r#"
[auth]
[[auth.oidc]]
issuer = "{url}"
audiences = ["{AUDIENCE}"]
username_prefix = "dev:"
groups_prefix = "dev:"
[auth.oidc.policy.settings]
username = "claims.sub"
groups = "['developers']"
[access_control.repositories."**"]
default_policy = ["read", "create", "update", "delete"]
"#,
            url = self.issuer.url
        )
    }

    /// Records the issuer's URL under `root` for `gantry dev token`.
    pub fn record(&self, root: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(root)?;
        std::fs::write(root.join(ISSUER_FILE), &self.issuer.url)
    }
}

fn sign(issuer: &Issuer, sub: &str, mut claims: Map<String, Value>) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for (k, v) in [
        ("iss", json!(issuer.url)),
        ("aud", json!(AUDIENCE)),
        ("sub", json!(sub)),
        ("iat", json!(now)),
        ("exp", json!(now + TOKEN_SECONDS)),
    ] {
        claims.insert(k.into(), v);
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(issuer.key.kid.clone());
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &issuer.key.encoding_key(),
    )?)
}

async fn discovery(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(json!({
        "issuer": issuer.url,
        "jwks_uri": format!("{}/jwks", issuer.url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(json!({ "keys": [issuer.key.jwk()] }))
}

/// `POST /token` with `{"sub": "...", "claims": {...}}`: the token, as text.
async fn mint(State(issuer): State<Arc<Issuer>>, Json(body): Json<Value>) -> Response {
    let Some(sub) = body
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "a non-empty \"sub\" string is required\n",
        )
            .into_response();
    };
    let claims = match body.get("claims") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return (StatusCode::BAD_REQUEST, "\"claims\" must be an object\n").into_response();
        }
    };
    match sign(&issuer, sub, claims) {
        Ok(token) => (StatusCode::OK, token).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The dev configuration: the embedded default plus the dev issuer's
/// sections.
pub fn config(
    issuer: &DevIssuer,
    listen: Option<std::net::SocketAddr>,
) -> Result<Config, crate::config::ConfigError> {
    let text = format!("{}\n{}", crate::config::EMBEDDED_DEFAULT, issuer.sections());
    let mut config = Config::from_toml_str(&text, "dev mode", Path::new(""))?;
    if let Some(addr) = listen {
        config.server.listen = addr;
        if let Some(auth) = &mut config.auth {
            auth.public_url = format!("http://{addr}");
        }
    }
    Ok(config)
}

/// What `--dev` prints on start: the warning, a token, and the lines that
/// log clients in with it.
pub fn banner(config: &Config, issuer: &DevIssuer, token: &str) -> String {
    let registry = config.server.listen.to_string();
    format!(
        r#"
==============================================================================
  GANTRY DEV MODE — for trying Gantry out, never for real use.
  An OIDC issuer runs inside this process at {issuer}: anyone on this
  machine can mint tokens it accepts (gantry dev token --sub NAME).
==============================================================================

A token for subject "dev-user" (identity dev:dev-user, valid 12 h):

{token}

Log in with it (the username is ignored; the token is the password):

  docker login {registry} -u dev -p {token}
  skopeo login --tls-verify=false -u dev -p {token} {registry}
  skopeo copy --dest-creds dev:{token} --dest-tls-verify=false oci:DIR docker://{registry}/demo/app:v1
  oras login --plain-http -u dev -p {token} {registry}

More tokens:  gantry dev token --sub ci-job --claim repository=demo/app
"#,
        issuer = issuer.url(),
    )
}

/// `gantry dev token`: asks the running dev issuer for a token.
pub fn token_command(sub: &str, claims: &[String], issuer: Option<String>) -> ExitCode {
    let url = match issuer {
        Some(u) => u,
        None => {
            let root = match Config::embedded_default() {
                Ok(c) => c.storage.root,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let file: PathBuf = root.join(ISSUER_FILE);
            match std::fs::read_to_string(&file) {
                Ok(u) => u.trim().to_owned(),
                Err(e) => {
                    eprintln!(
                        "no running dev issuer found ({}: {e}); start `gantry serve --dev` in this directory, or pass --issuer URL",
                        file.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let mut extra = Map::new();
    for c in claims {
        let Some((k, v)) = c.split_once('=') else {
            eprintln!("--claim {c:?}: write it as NAME=VALUE (VALUE is JSON, or else a string)");
            return ExitCode::FAILURE;
        };
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        extra.insert(k.to_owned(), value);
    }
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let response = runtime.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{}/token", url.trim_end_matches('/')))
            .json(&json!({ "sub": sub, "claims": extra }))
            .send()
            .await?;
        let status = r.status();
        r.text().await.map(|t| (status, t))
    });
    match response {
        Ok((status, token)) if status.is_success() => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("the dev issuer at {url} answered {status}: {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cannot reach the dev issuer at {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
