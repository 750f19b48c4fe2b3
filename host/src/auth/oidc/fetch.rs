//! Fetching discovery documents and JWKS over HTTP(S).
//!
//! The issuer's server is trusted for its keys, not for its behaviour: every
//! request has a timeout, every body is read in chunks and abandoned past the
//! size cap, redirects are few, never leave HTTPS (except on loopback) and
//! never leave the host, every address is one the issuer may reach
//! ([`super::reach`]: never link-local or metadata, private only for an
//! issuer on the private network), and the documents are parsed as
//! untrusted JSON. Nothing here ever fetches a
//! URL taken from a token (`jku`, `x5u`): only the configured discovery URL
//! and the `jwks_uri` it names.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::config::FetchOptions;
use super::reach::{GuardedResolver, Reach};
use crate::config::issuer::{check_url, is_loopback};

/// Redirects followed per request; discovery behind a CDN or a moved path
/// needs one or two.
const MAX_REDIRECTS: usize = 3;

/// One issuer's HTTP client and what it may reach.
pub(crate) struct Fetcher {
    client: reqwest::Client,
    reach: Reach,
}

/// Host and port of a URL: a redirect must keep both.
fn origin(url: &url::Url) -> (Option<&str>, Option<u16>) {
    (url.host_str(), url.port_or_known_default())
}

/// Builds one issuer's client: its extra CA roots, timeouts, a strict
/// redirect policy, a resolver that keeps only addresses `reach` allows.
pub(crate) fn build_client(
    roots: Vec<reqwest::Certificate>,
    opts: &FetchOptions,
    reach: Reach,
) -> Result<Fetcher, String> {
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        let first = attempt.previous().first().map(origin);
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if attempt.url().scheme() != "https" && !is_loopback(attempt.url()) {
            attempt.error("redirect away from https")
        } else if first.is_some_and(|o| o != origin(attempt.url())) {
            let to = attempt.url().host_str().unwrap_or("").to_owned();
            attempt.error(format!("redirect to another host ({to}) is not followed"))
        } else if let Err(why) = reach.check_url(attempt.url()) {
            attempt.error(why)
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout)
        .redirect(redirects)
        .dns_resolver(GuardedResolver::new(reach));
    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {}", error_chain(&e)))?;
    Ok(Fetcher { client, reach })
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
    fetcher: &Fetcher,
    url: &str,
    max: usize,
) -> Result<Vec<u8>, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("GET {url}: {e}"))?;
    fetcher
        .reach
        .check_url(&parsed)
        .map_err(|why| format!("GET {url}: {why}"))?;
    let mut response = fetcher
        .client
        .get(parsed)
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
    client: Fetcher,
    max_bytes: usize,
    jwks_uri: Mutex<Option<String>>,
}

impl HttpSource {
    pub fn new(issuer: String, discovery_url: String, client: Fetcher, max_bytes: usize) -> Self {
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

/// `delay` spread by ±20 %, so that replicas (and issuers) started together
/// do not fetch together, nor retry a struggling issuer in lockstep.
pub(crate) fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.8 + 0.4 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_within_a_fifth() {
        let base = Duration::from_secs(100);
        let delays: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
        assert!(
            delays
                .iter()
                .all(|d| (Duration::from_secs(80)..=Duration::from_secs(120)).contains(d)),
            "{delays:?}"
        );
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "no spread: {distinct:?}");
    }

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
