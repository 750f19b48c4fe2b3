//! Fetching discovery documents and JWKS over HTTP(S).
//!
//! The issuer's server is trusted for its keys, not for its behaviour: every
//! request has a timeout, every body is read in chunks and abandoned past the
//! size cap, redirects are few and never leave HTTPS (except on loopback), and
//! the documents are parsed as untrusted JSON. Nothing here ever fetches a
//! URL taken from a token (`jku`, `x5u`): only the configured discovery URL
//! and the `jwks_uri` it names.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::config::FetchOptions;
use crate::config::issuer::{check_url, is_loopback};

/// Redirects followed per request; discovery behind a CDN or a moved path
/// needs one or two.
const MAX_REDIRECTS: usize = 3;

/// Builds one issuer's client: its extra CA roots, timeouts, a strict
/// redirect policy.
pub(crate) fn build_client(
    roots: Vec<reqwest::Certificate>,
    opts: &FetchOptions,
) -> Result<reqwest::Client, String> {
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if attempt.url().scheme() != "https" && !is_loopback(attempt.url()) {
            attempt.error("redirect away from https")
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout)
        .redirect(redirects);
    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {}", error_chain(&e)))
}

/// `error: cause: cause` — reqwest's own `Display` hides the useful part
/// ("connection refused", "certificate not trusted").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// GET `url`, expecting 200 and at most `max` bytes of body.
pub(crate) async fn get_bounded(
    client: &reqwest::Client,
    url: &str,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(format!("GET {url}: response larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("GET {url}: response larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Discovery + JWKS for one issuer. Remembers the `jwks_uri` so that a
/// refresh caused by an unknown `kid` costs one request, not two.
pub(crate) struct HttpSource {
    issuer: String,
    discovery_url: String,
    client: reqwest::Client,
    max_bytes: usize,
    jwks_uri: Mutex<Option<String>>,
}

impl HttpSource {
    pub fn new(
        issuer: String,
        discovery_url: String,
        client: reqwest::Client,
        max_bytes: usize,
    ) -> Self {
        HttpSource {
            issuer,
            discovery_url,
            client,
            max_bytes,
            jwks_uri: Mutex::new(None),
        }
    }

    pub fn describe(&self) -> String {
        format!("discovery {}", self.discovery_url)
    }

    /// Fetches the JWKS bytes; `rediscover` re-reads the discovery document
    /// first (background refreshes do, kid-miss refreshes reuse the last one).
    pub async fn fetch(&self, rediscover: bool) -> Result<Vec<u8>, String> {
        let cached = if rediscover {
            None
        } else {
            self.cached_jwks_uri()
        };
        let jwks_uri = match cached {
            Some(uri) => uri,
            None => {
                let uri = self.discover().await?;
                *self.jwks_uri.lock().unwrap_or_else(|p| p.into_inner()) = Some(uri.clone());
                uri
            }
        };
        let result = get_bounded(&self.client, &jwks_uri, self.max_bytes).await;
        if result.is_err() {
            // The next attempt starts over from discovery: the JWKS may have moved.
            *self.jwks_uri.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        result
    }

    fn cached_jwks_uri(&self) -> Option<String> {
        self.jwks_uri
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn discover(&self) -> Result<String, String> {
        let body = get_bounded(&self.client, &self.discovery_url, self.max_bytes).await?;
        parse_discovery(&body, &self.issuer).map_err(|e| format!("{}: {e}", self.discovery_url))
    }
}

/// Extracts `jwks_uri` from a discovery document, checking that the document
/// names the configured issuer (OpenID Connect Discovery §4.3).
pub(crate) fn parse_discovery(body: &[u8], issuer: &str) -> Result<String, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("discovery document is not JSON: {e}"))?;
    match doc.get("issuer") {
        Some(Value::String(named)) if named == issuer => {}
        Some(Value::String(named)) => {
            return Err(format!(
                "discovery document names issuer {:?}, not the configured {issuer:?}",
                super::error::echo(named)
            ));
        }
        _ => return Err("discovery document has no \"issuer\" string".into()),
    }
    let Some(Value::String(jwks_uri)) = doc.get("jwks_uri") else {
        return Err("discovery document has no \"jwks_uri\" string".into());
    };
    check_url(jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
    Ok(jwks_uri.clone())
}

/// Delay before retry number `failures` (1-based): `min · 2^(failures-1)`,
/// capped at `max`.
pub(crate) fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1).min(31))
        .unwrap_or(u32::MAX);
    min.checked_mul(factor).unwrap_or(max).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_must_name_the_issuer_and_a_safe_jwks_uri() {
        let ok = br#"{"issuer":"https://i.example","jwks_uri":"https://i.example/keys"}"#;
        assert_eq!(
            parse_discovery(ok, "https://i.example").as_deref(),
            Ok("https://i.example/keys")
        );
        assert!(parse_discovery(ok, "https://other.example").is_err());
        let http = br#"{"issuer":"https://i.example","jwks_uri":"http://evil.example/keys"}"#;
        assert!(parse_discovery(http, "https://i.example").is_err());
        assert!(
            parse_discovery(br#"{"issuer":"https://i.example"}"#, "https://i.example").is_err()
        );
        assert!(parse_discovery(b"<html>", "https://i.example").is_err());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(backoff(1, min, max), Duration::from_secs(1));
        assert_eq!(backoff(2, min, max), Duration::from_secs(2));
        assert_eq!(backoff(5, min, max), Duration::from_secs(16));
        assert_eq!(backoff(10, min, max), max);
        assert_eq!(backoff(u32::MAX, min, max), max);
    }
}
