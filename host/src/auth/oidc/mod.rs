//! OIDC ID-token verification for several configured issuers.
//!
//! Owns: choosing the issuer from the token's unverified `iss` (exact match
//! among configured issuers, nothing else is read before the signature
//! checks), each issuer's keys (discovery + JWKS fetched in the background
//! with backoff, or a static JWKS file), the signature check with the
//! issuer's algorithm allow-list, and the registered claims (`aud`, `exp`,
//! `nbf`, `iat`, maximum lifetime) with a leeway.
//!
//! Must not: decide who a workload *is* (the issuer's policy does), touch
//! HTTP requests or responses (the auth layer does), fetch any URL named by a
//! token (`jku`, `x5u` and `jwk` headers are never read), or put a token in a
//! log. Errors carry the precise reason for the log; clients get
//! [`VerifyError::client_message`].
//!
//! Modelled on crates.io's trusted publishing (`crates_io_trustpub`):
//! `unverified` reads only `iss`, a per-issuer key store caches the JWKS with
//! a refresh cool-down, validation pins the algorithm and requires
//! `iss`/`aud`/`exp`.

pub(crate) mod claims;
mod config;
mod error;
pub(crate) mod fetch;
pub(crate) mod jwks;
mod keystore;
mod reach;
pub(crate) mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jsonwebtoken::Algorithm;
use serde_json::Value;

pub use crate::config::issuer::{
    DEFAULT_ALGORITHMS, DEFAULT_LEEWAY, IssuerConfig, IssuerProblem, MAX_LEEWAY,
};
pub use config::{FetchOptions, ValidIssuer};
pub use error::VerifyError;
pub use jwks::MAX_KEYS;
pub use keystore::IssuerStatus;
pub use token::{MAX_TOKEN_BYTES, UnverifiedToken, parse, unverified_issuer};

use super::now;
use keystore::{KeyStore, Trigger};

/// A token whose signature and registered claims have been verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The configured issuer that signed it (equal to the `iss` claim).
    pub issuer: String,
    /// The payload's JSON text as the issuer signed it, for the issuer's
    /// policy (free of repeated member names: see [`parse`]).
    pub claims_json: String,
    /// `sub`, when it is a string.
    pub subject: Option<String>,
    /// `exp`, unix seconds: a cached decision must not outlive it.
    pub expires_at: u64,
}

/// Verifies OIDC tokens of the configured issuers. Cheap to clone (one `Arc`).
///
/// `P` is what the owner attaches to each issuer (the auth layer: its claim
/// policy and prefixes), so one map lookup by `iss` finds the rules, the
/// keys and everything else of that issuer.
pub struct OidcVerifier<P = ()> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for OidcVerifier<P> {
    fn clone(&self) -> Self {
        OidcVerifier {
            inner: self.inner.clone(),
        }
    }
}

struct Issuer<P> {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    max_token_lifetime: Option<u64>,
    store: Arc<KeyStore>,
    /// Static JWKS: already loaded, the background loop only re-reads it.
    from_file: bool,
    /// As configured, to tell an unchanged issuer at a reload.
    config: IssuerConfig,
    /// The store came from the verifier this one replaces: it has keys
    /// already, so the background loop starts with a wait, not a fetch.
    adopted: bool,
    attached: P,
}

struct Inner<P> {
    issuers: HashMap<String, Issuer<P>>,
    /// Configuration order, for `status()`.
    order: Vec<String>,
    opts: FetchOptions,
    started: AtomicBool,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl<P> Drop for Inner<P> {
    fn drop(&mut self) {
        // A replaced configuration must not leave its fetch loops running.
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl OidcVerifier {
    /// Checks the issuers' values ([`crate::config::issuer::problems_of_all`],
    /// what the loader checks), then validates them ([`OidcVerifier::validate`])
    /// and reports every problem at once; attaches nothing to the issuers.
    pub fn new(issuers: Vec<IssuerConfig>, opts: FetchOptions) -> Result<Self, Vec<IssuerProblem>> {
        OidcVerifier::new_reusing(issuers, opts, None)
    }

    /// As [`OidcVerifier::new`], reusing the key stores of `previous` (see
    /// [`OidcVerifier::assemble`]).
    pub fn new_reusing(
        issuers: Vec<IssuerConfig>,
        opts: FetchOptions,
        previous: Option<&OidcVerifier>,
    ) -> Result<Self, Vec<IssuerProblem>> {
        let mut problems = crate::config::issuer::problems_of_all(&issuers);
        let valid = OidcVerifier::validate(issuers, &opts).map_err(|e| problems.extend(e));
        let (Ok(valid), true) = (valid, problems.is_empty()) else {
            return Err(problems);
        };
        Ok(OidcVerifier::assemble(
            valid.into_iter().map(|v| (v, ())).collect(),
            opts,
            previous,
        ))
    }

    /// Turns issuers whose values the loader checked into what the verifier
    /// runs, reporting every problem at once: an unreadable or invalid
    /// `ca_file` / `jwks_file`. Reads those files; fetches nothing, spawns
    /// nothing. The result, in configuration order, is what
    /// [`OidcVerifier::assemble`] takes, so nothing is validated twice.
    pub fn validate(
        issuers: Vec<IssuerConfig>,
        opts: &FetchOptions,
    ) -> Result<Vec<ValidIssuer>, Vec<IssuerProblem>> {
        config::validate(issuers, opts)
    }
}

impl<P> OidcVerifier<P> {
    /// Builds the verifier from validated issuers, each with what its owner
    /// attaches to it. An issuer configured exactly as in `previous` (with
    /// the same fetch options) shares its key store, so a configuration
    /// reload neither drops its keys nor refetches them.
    pub fn assemble<Q>(
        valid: Vec<(ValidIssuer, P)>,
        opts: FetchOptions,
        previous: Option<&OidcVerifier<Q>>,
    ) -> Self {
        let mut map = HashMap::with_capacity(valid.len());
        let mut order = Vec::with_capacity(valid.len());
        for (v, attached) in valid {
            let ValidIssuer {
                config: configured,
                issuer,
                audiences,
                algorithms,
                leeway,
                max_token_lifetime,
                source,
            } = v;
            let from_file = matches!(source, config::SourceConfig::File { .. });
            let reused = previous
                .filter(|p| p.inner.opts == opts)
                .and_then(|p| p.inner.issuers.get(&issuer))
                .filter(|old| old.config == configured)
                .map(|old| old.store.clone());
            let adopted = reused.is_some();
            let store = reused
                .unwrap_or_else(|| Arc::new(KeyStore::new(&issuer, &algorithms, source, &opts)));
            order.push(issuer.clone());
            map.insert(
                issuer.clone(),
                Issuer {
                    issuer,
                    audiences,
                    algorithms,
                    leeway,
                    max_token_lifetime,
                    store,
                    from_file,
                    config: configured,
                    adopted,
                    attached,
                },
            );
        }
        OidcVerifier {
            inner: Arc::new(Inner {
                issuers: map,
                order,
                opts,
                started: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts one background fetch loop per issuer on the current tokio
    /// runtime. Never blocks; idempotent. An issuer that is down stops
    /// nothing: it is retried with exponential backoff
    /// (`min_backoff`..`max_backoff`) and refreshed every `refresh_interval`
    /// once up; a failed refresh keeps the last good keys. The loops end when
    /// the last clone of the verifier is dropped.
    pub fn start(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                "OidcVerifier::start called outside a tokio runtime; keys are fetched on demand only"
            );
            return;
        };
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for name in &self.inner.order {
            let Some(issuer) = self.inner.issuers.get(name) else {
                continue;
            };
            let task = runtime.spawn(keystore::run(
                Arc::downgrade(&issuer.store),
                self.inner.opts.clone(),
                issuer.from_file || issuer.adopted,
            ));
            tasks.push(task.abort_handle());
        }
    }

    /// Per issuer, in configuration order: what its owner attached to it.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, &P)> {
        self.inner
            .order
            .iter()
            .filter_map(|name| self.inner.issuers.get(name))
            .map(|issuer| (issuer.issuer.as_str(), &issuer.attached))
    }

    /// Per issuer, in configuration order: keys loaded, last fetch, last error.
    pub fn status(&self) -> Vec<IssuerStatus> {
        self.inner
            .order
            .iter()
            .filter_map(|name| self.inner.issuers.get(name))
            .map(|issuer| issuer.store.status())
            .collect()
    }

    /// Verifies a compact JWS from a configured issuer.
    ///
    /// Order matters: size, shape and `alg` (never `none`/HMAC) are checked
    /// before the issuer is chosen by `iss`; then the issuer's allow-list,
    /// `typ`, its key by `kid` (an unknown `kid` causes at most one shared,
    /// rate-limited JWKS refresh), the signature, and only then the claims.
    ///
    /// Latency: with keys cached this is CPU only (one signature check).
    /// Only a token whose key is missing (unknown `kid`, or no keys yet)
    /// waits on the network, at most once per `kid_miss_cooldown` per issuer
    /// and for at most `timeout`; tokens arriving meanwhile share that wait.
    /// This is what lets an issuer that was down serve tokens as soon as it
    /// answers instead of at the next backoff tick.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let t = token::parse(token)?;
        self.verify_parsed(t).await.map(|(verified, _)| verified)
    }

    /// [`OidcVerifier::verify`] of a token already parsed (the caller read
    /// its `iss` to route it), returning what is attached to its issuer.
    pub async fn verify_parsed(
        &self,
        t: UnverifiedToken<'_>,
    ) -> Result<(VerifiedToken, &P), VerifyError> {
        let alg_name = t.alg()?;
        let Some(alg) = crate::config::issuer::asymmetric_algorithm(alg_name) else {
            return Err(VerifyError::AlgorithmNotAllowed {
                issuer: None,
                alg: error::echo(alg_name),
            });
        };
        if t.header.contains_key("crit") {
            // RFC 7515 §4.1.11: extensions we do not implement must be refused.
            return Err(VerifyError::Malformed(
                "header \"crit\" names extensions we do not support".into(),
            ));
        }
        let iss = t.issuer()?;
        let Some(issuer) = self.inner.issuers.get(iss) else {
            return Err(VerifyError::UnknownIssuer(error::echo(iss)));
        };
        if !issuer.algorithms.contains(&alg) {
            return Err(VerifyError::AlgorithmNotAllowed {
                issuer: Some(issuer.issuer.clone()),
                alg: alg_name.into(),
            });
        }
        token::check_type(&t.header)?;
        let kid = t.kid()?;
        // Decoded only to refuse bad base64 as malformed, not as a bad signature.
        token::decode_signature(t.signature)?;

        self.check_signature(issuer, alg, kid, t.signature, t.signing_input.as_bytes())
            .await?;

        let rules = claims::ClaimRules {
            issuer: &issuer.issuer,
            audiences: &issuer.audiences,
            leeway: issuer.leeway,
            max_lifetime: issuer.max_token_lifetime,
        };
        let expires_at = claims::check(&t.claims, &rules, now())?;
        let subject = t
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok((
            VerifiedToken {
                issuer: issuer.issuer.clone(),
                claims_json: t.claims_json,
                subject,
                expires_at,
            },
            &issuer.attached,
        ))
    }

    async fn check_signature(
        &self,
        issuer: &Issuer<P>,
        alg: Algorithm,
        kid: Option<&str>,
        signature: &str,
        message: &[u8],
    ) -> Result<(), VerifyError> {
        let mut refreshed = false;
        loop {
            let keys = issuer.store.keys();
            let candidates: Vec<_> = keys
                .iter()
                .filter(|k| k.accepts(alg) && (kid.is_none() || k.kid.as_deref() == kid))
                .collect();
            if candidates.is_empty() {
                if !refreshed {
                    // Rotation (or keys never fetched): one shared, rate-limited refresh.
                    tracing::debug!(issuer = %issuer.issuer, kid = ?kid.map(error::echo), "no matching key; refreshing JWKS");
                    issuer.store.refresh(Trigger::Miss).await;
                    refreshed = true;
                    continue;
                }
                if keys.is_empty() {
                    return Err(VerifyError::KeysUnavailable {
                        issuer: issuer.issuer.clone(),
                    });
                }
                return Err(VerifyError::UnknownKey {
                    issuer: issuer.issuer.clone(),
                    kid: kid.map(error::echo),
                    alg: format!("{alg:?}"),
                });
            }
            // With a kid this is (almost always) one key; without one, every
            // key of the right family is tried (bounded by MAX_KEYS).
            if candidates
                .iter()
                .any(|key| key.verify(alg, signature, message))
            {
                return Ok(());
            }
            return Err(VerifyError::BadSignature {
                issuer: issuer.issuer.clone(),
                kid: kid.map(error::echo),
            });
        }
    }
}

impl<P> std::fmt::Debug for OidcVerifier<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuers", &self.inner.order)
            .finish_non_exhaustive()
    }
}
