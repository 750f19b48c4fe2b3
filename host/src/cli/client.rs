//! A small registry client for the commands that talk to a running Gantry
//! (`policy push`, `tenant status`): credentials as any client sends them
//! (`--token` as a Bearer token; `--username`/`--password` as Basic, which
//! Gantry accepts on every request), blob upload, manifest push.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};

use crate::oci::Digest;

/// How a command authenticates.
#[derive(Debug, Clone, clap::Args)]
pub struct Credentials {
    /// A token to send as `Authorization: Bearer` (an OIDC token of a
    /// configured issuer, or a Gantry token).
    #[arg(long, conflicts_with_all = ["username", "password"])]
    pub token: Option<String>,
    /// An htpasswd user (or any name, with an OIDC token as the password).
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    #[arg(long, requires = "username")]
    pub password: Option<String>,
}

impl Credentials {
    fn header(&self) -> Option<String> {
        use base64::Engine as _;
        match (&self.token, &self.username, &self.password) {
            (Some(t), _, _) => Some(format!("Bearer {t}")),
            (None, Some(u), Some(p)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )),
            _ => None,
        }
    }
}

/// Why a registry request failed: what was asked, and what came back
/// (the registry's own error message when it sent one).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ClientError {
    pub what: String,
    pub reason: String,
}

/// One registry at a base URL.
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Option<String>,
}

impl Client {
    pub fn new(registry: &str, credentials: &Credentials) -> Result<Client, ClientError> {
        let base = registry.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError {
                what: format!("--registry {registry}"),
                reason: "must be an http:// or https:// URL".into(),
            });
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| ClientError {
                what: "HTTP client".into(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            http,
            base,
            auth: credentials.header(),
        })
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.auth {
            Some(h) => req.header(AUTHORIZATION, h),
            None => req,
        }
    }

    /// The registry's message for a failed response: its OCI error
    /// envelope's first message (and detail), or the status and body.
    async fn failure(what: String, resp: reqwest::Response) -> ClientError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let e = v.pointer("/errors/0")?;
                let code = e.get("code")?.as_str()?.to_owned();
                let message = e.get("message")?.as_str()?.to_owned();
                Some(format!("{code}: {message}"))
            })
            .unwrap_or_else(|| body.trim().chars().take(500).collect());
        ClientError {
            what,
            reason: format!("{status}: {message}"),
        }
    }

    fn send_error(what: &str, e: reqwest::Error) -> ClientError {
        ClientError {
            what: what.to_owned(),
            reason: e.to_string(),
        }
    }

    /// Uploads `bytes` as a blob of `repo` unless it is there already;
    /// returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: Vec<u8>) -> Result<Digest, ClientError> {
        let digest = Digest::sha256_of(&bytes);
        let what = format!("blob {digest}");
        let head = self
            .request(
                reqwest::Method::HEAD,
                &format!("{}/v2/{repo}/blobs/{digest}", self.base),
            )
            .send()
            .await
            .map_err(|e| Self::send_error(&what, e))?;
        if head.status() == StatusCode::OK {
            return Ok(digest);
        }
        let start = self
            .request(
                reqwest::Method::POST,
                &format!("{}/v2/{repo}/blobs/uploads/", self.base),
            )
            .send()
            .await
            .map_err(|e| Self::send_error(&what, e))?;
        if start.status() != StatusCode::ACCEPTED {
            return Err(Self::failure(format!("{what}: starting the upload"), start).await);
        }
        let location = start
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError {
                what: what.clone(),
                reason: "the registry sent no upload Location".into(),
            })?
            .to_owned();
        let mut url = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let put = self
            .request(reqwest::Method::PUT, &url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(|e| Self::send_error(&what, e))?;
        if put.status() != StatusCode::CREATED {
            return Err(Self::failure(what, put).await);
        }
        Ok(digest)
    }

    /// Pushes an OCI image manifest under `reference`; returns the digest
    /// the registry stored it as.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        manifest: &[u8],
    ) -> Result<String, ClientError> {
        let what = format!("manifest {repo}:{reference}");
        let resp = self
            .request(
                reqwest::Method::PUT,
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
            )
            .header(CONTENT_TYPE, crate::oci::media::OCI_MANIFEST)
            .body(manifest.to_vec())
            .send()
            .await
            .map_err(|e| Self::send_error(&what, e))?;
        if resp.status() != StatusCode::CREATED {
            return Err(Self::failure(what, resp).await);
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| Digest::sha256_of(manifest).to_string()))
    }

    /// `GET` of a Gantry API path as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let resp = self
            .request(reqwest::Method::GET, &format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| Self::send_error(path, e))?;
        if resp.status() != StatusCode::OK {
            return Err(Self::failure(path.to_owned(), resp).await);
        }
        resp.json().await.map_err(|e| Self::send_error(path, e))
    }
}
