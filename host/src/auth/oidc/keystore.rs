//! One issuer's cached keys and how they are refreshed.
//!
//! Readers take an `Arc` snapshot of the key list (never waiting on the
//! network). Refreshes are single-flight: a `tokio::sync::Mutex` serialises
//! them and a completed-attempt counter lets every waiter of a concurrent
//! burst of unknown-`kid` tokens reuse the one fetch that ran while it
//! waited. Refreshes caused by tokens (unknown `kid`, no keys yet) are
//! further limited to one per `kid_miss_cooldown`, so a stream of forged
//! tokens costs the issuer at most one request per cool-down. A failed
//! fetch never replaces keys that worked.
//!
//! Where keys come from is a closed set (HTTP discovery or a static file), so
//! it is an enum rather than a trait object: tests drive the real HTTP path
//! against an in-process issuer instead of mocking it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;

use super::config::{FetchOptions, SourceConfig};
use super::fetch::{HttpSource, backoff, jittered};
use super::jwks::{self, ParsedJwks, VerifyingKey};

/// Why a refresh is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The background loop: always fetches, re-reads discovery.
    Background,
    /// A token needs a key we do not have: rate-limited, shared.
    Miss,
}

enum Source {
    Http(HttpSource),
    File(PathBuf),
}

#[derive(Default)]
struct State {
    last_attempt: Option<SystemTime>,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    consecutive_failures: u32,
    fetches: u64,
    /// When the last token-triggered refresh started (for the cool-down).
    last_miss_refresh: Option<Instant>,
}

/// What `status()` reports for one issuer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssuerStatus {
    pub issuer: String,
    /// `discovery <url>` or `file <path>`.
    pub source: String,
    pub keys_loaded: usize,
    /// Unix seconds of the last successful fetch (or file read).
    pub last_success: Option<u64>,
    /// Unix seconds of the last attempt, successful or not.
    pub last_attempt: Option<u64>,
    /// The last attempt's error; `None` once an attempt succeeds.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Fetch attempts so far.
    pub fetches: u64,
}

pub(crate) struct KeyStore {
    pub issuer: String,
    algorithms: Vec<Algorithm>,
    source: Source,
    max_bytes: usize,
    cooldown: Duration,
    keys: RwLock<Arc<Vec<VerifyingKey>>>,
    state: Mutex<State>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Completed refresh attempts; a waiter that sees it move knows a fetch
    /// ran while it waited and uses that fetch's result.
    attempts: AtomicU64,
}

impl KeyStore {
    pub fn new(
        issuer: &str,
        algorithms: &[Algorithm],
        source: SourceConfig,
        opts: &FetchOptions,
    ) -> Self {
        let mut state = State::default();
        let (source, keys) = match source {
            SourceConfig::Http {
                discovery_url,
                client,
            } => (
                Source::Http(HttpSource::new(
                    issuer.to_owned(),
                    discovery_url,
                    client,
                    opts.max_response_bytes,
                )),
                Vec::new(),
            ),
            SourceConfig::File { path, initial } => {
                // Read once during validation: usable without start().
                log_skipped(issuer, &initial);
                state.last_success = Some(SystemTime::now());
                state.last_attempt = state.last_success;
                (Source::File(path), initial.keys)
            }
        };
        KeyStore {
            issuer: issuer.to_owned(),
            algorithms: algorithms.to_vec(),
            source,
            max_bytes: opts.max_response_bytes,
            cooldown: opts.kid_miss_cooldown,
            keys: RwLock::new(Arc::new(keys)),
            state: Mutex::new(state),
            refresh_lock: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
        }
    }

    /// The current keys (a snapshot).
    pub fn keys(&self) -> Arc<Vec<VerifyingKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refreshes the keys. Returns whether the store holds keys from a
    /// successful fetch made by this call or by a concurrent one.
    pub async fn refresh(&self, trigger: Trigger) -> bool {
        let seen = self.attempts.load(Ordering::Acquire);
        let _flight = self.refresh_lock.lock().await;
        if trigger == Trigger::Miss {
            if self.attempts.load(Ordering::Acquire) != seen {
                // Someone fetched while we queued: their result is ours.
                return self.state().consecutive_failures == 0;
            }
            let mut state = self.state();
            if state
                .last_miss_refresh
                .is_some_and(|t| t.elapsed() < self.cooldown)
            {
                tracing::debug!(issuer = %self.issuer, "unknown key: JWKS refresh skipped (cool-down)");
                return false;
            }
            state.last_miss_refresh = Some(Instant::now());
        }
        let result = self.fetch(trigger).await;
        let ok = self.record(result, trigger);
        self.attempts.fetch_add(1, Ordering::Release);
        ok
    }

    async fn fetch(&self, trigger: Trigger) -> Result<ParsedJwks, String> {
        let bytes = match &self.source {
            Source::Http(http) => http.fetch(trigger == Trigger::Background).await?,
            Source::File(path) => read_file_bounded(path, self.max_bytes).await?,
        };
        jwks::parse_jwks(&bytes, &self.algorithms)
    }

    fn record(&self, result: Result<ParsedJwks, String>, trigger: Trigger) -> bool {
        let now = SystemTime::now();
        let mut state = self.state();
        state.fetches += 1;
        state.last_attempt = Some(now);
        match result {
            Ok(parsed) => {
                log_skipped(&self.issuer, &parsed);
                tracing::info!(
                    issuer = %self.issuer,
                    keys = parsed.keys.len(),
                    ?trigger,
                    "OIDC signing keys loaded"
                );
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(parsed.keys);
                state.last_success = Some(now);
                state.last_error = None;
                state.consecutive_failures = 0;
                true
            }
            Err(error) => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let kept = self.keys.read().unwrap_or_else(|p| p.into_inner()).len();
                tracing::warn!(
                    issuer = %self.issuer,
                    %error,
                    failures = state.consecutive_failures,
                    kept_keys = kept,
                    ?trigger,
                    "OIDC key refresh failed; keeping the last good keys"
                );
                state.last_error = Some(error);
                false
            }
        }
    }

    pub fn status(&self) -> IssuerStatus {
        let state = self.state();
        IssuerStatus {
            issuer: self.issuer.clone(),
            source: match &self.source {
                Source::Http(http) => http.describe(),
                Source::File(path) => format!("file {}", path.display()),
            },
            keys_loaded: self.keys().len(),
            last_success: state.last_success.map(unix),
            last_attempt: state.last_attempt.map(unix),
            last_error: state.last_error.clone(),
            consecutive_failures: state.consecutive_failures,
            fetches: state.fetches,
        }
    }

    /// The delay before the next background refresh, with jitter.
    fn next_delay(&self, opts: &FetchOptions) -> Duration {
        jittered(match self.state().consecutive_failures {
            0 => opts.refresh_interval,
            failures => backoff(failures, opts.min_backoff, opts.max_backoff),
        })
    }
}

/// The background loop of one issuer: fetch, then wait `refresh_interval`
/// after a success or an exponential backoff after a failure. Holds only a
/// weak reference while sleeping, so dropping the verifier ends it (the
/// verifier also aborts it).
pub(crate) async fn run(store: std::sync::Weak<KeyStore>, opts: FetchOptions, skip_first: bool) {
    let mut first = true;
    loop {
        let delay = {
            let Some(store) = store.upgrade() else { return };
            if !(first && skip_first) {
                store.refresh(Trigger::Background).await;
            }
            store.next_delay(&opts)
        };
        first = false;
        tokio::time::sleep(delay).await;
    }
}

async fn read_file_bounded(path: &PathBuf, max: usize) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > max {
        return Err(format!("{}: larger than {max} bytes", path.display()));
    }
    Ok(bytes)
}

fn log_skipped(issuer: &str, parsed: &ParsedJwks) {
    for why in &parsed.skipped {
        tracing::warn!(issuer = %issuer, reason = %why, "OIDC JWKS key skipped");
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
