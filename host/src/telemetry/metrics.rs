//! Prometheus metrics: one process-wide set of families, fed where things
//! happen (HTTP edge, auth, policy pools, storage, reload) and encoded in
//! the text format by `/metrics` on `[server] metrics_listen`.
//!
//! Every label set is bounded: a route class, a method, a status, an
//! issuer as configured, an outcome or reason class — never a repository,
//! tag, subject or token. Values only known at scrape time (issuer key
//! state, cache entries, pool sizes) are set by [`Metrics::encode`]'s
//! caller just before encoding.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteMethod {
    pub route: &'static str,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub issuer: String,
    pub result: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabel {
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub issuer: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabel {
    pub hash: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Route classes and methods, the HTTP label values, by index.
const ROUTES: [&str; 8] = [
    "manifest",
    "blob",
    "upload",
    "tags",
    "catalog",
    "referrers",
    "token",
    "other",
];
const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "other"];
/// Statuses whose request counters are cached per route and method (the
/// rest are looked up in the family).
const STATUSES: [u16; 9] = [200, 201, 202, 204, 206, 307, 401, 403, 404];

/// Handles of the HTTP families, made on first use and kept, so a request
/// costs atomic adds, not label-set hashing and a lock.
struct HttpHandles {
    requests: Vec<OnceLock<Counter>>,
    duration: Vec<OnceLock<Histogram>>,
    request_bytes: Vec<OnceLock<Counter>>,
    response_bytes: Vec<OnceLock<Counter>>,
}

fn slots<T>(n: usize) -> Vec<OnceLock<T>> {
    (0..n).map(|_| OnceLock::new()).collect()
}

/// One request's route class and method, as indices of the label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpClass {
    route: usize,
    method: usize,
}

impl HttpClass {
    pub fn of(path: &str, method: &http::Method) -> HttpClass {
        HttpClass {
            route: {
                let class = route_class(path);
                ROUTES
                    .iter()
                    .position(|r| *r == class)
                    .unwrap_or(ROUTES.len() - 1)
            },
            method: METHODS[..METHODS.len() - 1]
                .iter()
                .position(|m| *m == method.as_str())
                .unwrap_or(METHODS.len() - 1),
        }
    }

    pub fn route(self) -> &'static str {
        ROUTES[self.route]
    }
}

/// Policy outcomes, the `outcome` label values, by index.
pub const OUTCOMES: [&str; 6] = ["allow", "deny", "trap", "timeout", "memory", "invalid"];

/// One loaded policy's metric handles: its issuer label is built once, at
/// load, and each series is looked up once, at first use, so an evaluation
/// costs atomic adds.
pub struct PolicyHandles {
    metrics: &'static Metrics,
    issuer: String,
    outcomes: [OnceLock<Counter>; 6],
    duration: OnceLock<Histogram>,
    waits: OnceLock<Counter>,
}

impl PolicyHandles {
    /// One evaluation with outcome `OUTCOMES[outcome]`, that took `seconds`.
    pub fn evaluation(&self, outcome: usize, seconds: f64) {
        let m = self.metrics;
        self.outcomes[outcome]
            .get_or_init(|| {
                m.policy_evaluations
                    .get_or_create(&OutcomeLabels {
                        issuer: self.issuer.clone(),
                        outcome: OUTCOMES[outcome],
                    })
                    .clone()
            })
            .inc();
        self.duration
            .get_or_init(|| {
                m.policy_duration
                    .get_or_create(&IssuerLabel {
                        issuer: self.issuer.clone(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    /// One evaluation that waited for a free instance.
    pub fn waited(&self) {
        self.waits
            .get_or_init(|| {
                self.metrics
                    .policy_pool_waits
                    .get_or_create(&IssuerLabel {
                        issuer: self.issuer.clone(),
                    })
                    .clone()
            })
            .inc();
    }
}

/// Every family Gantry exports.
pub struct Metrics {
    registry: Registry,
    http: HttpHandles,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteMethod, Histogram, fn() -> Histogram>,
    pub http_request_bytes: Family<RouteLabel, Counter>,
    pub http_response_bytes: Family<RouteLabel, Counter>,
    pub auth_decisions: Family<DecisionLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
    pub policy_evaluations: Family<OutcomeLabels, Counter>,
    pub policy_duration: Family<IssuerLabel, Histogram, fn() -> Histogram>,
    pub policy_pool_size: Family<IssuerLabel, Gauge>,
    pub policy_pool_waits: Family<IssuerLabel, Counter>,
    pub shadow_disagreements: Family<IssuerLabel, Counter>,
    pub shadow_dropped: Family<IssuerLabel, Counter>,
    pub issuer_last_refresh: Family<IssuerLabel, Gauge>,
    pub issuer_failures: Family<IssuerLabel, Gauge>,
    pub issuer_keys: Family<IssuerLabel, Gauge>,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub config_info: Family<HashLabel, Gauge>,
    pub storage_bytes_written: Counter,
    pub storage_bytes_read: Counter,
    pub storage_objects_written: Counter,
    pub storage_objects_read: Counter,
    pub gc_runs: Family<ResultLabel, Counter>,
    pub gc_bytes_freed: Counter,
    pub gc_duration: Histogram,
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            http_request_bytes: Family::default(),
            http_response_bytes: Family::default(),
            auth_decisions: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_entries: Gauge::default(),
            policy_evaluations: Family::default(),
            policy_duration: Family::new_with_constructor(latency_histogram),
            policy_pool_size: Family::default(),
            policy_pool_waits: Family::default(),
            shadow_disagreements: Family::default(),
            shadow_dropped: Family::default(),
            issuer_last_refresh: Family::default(),
            issuer_failures: Family::default(),
            issuer_keys: Family::default(),
            config_reloads: Family::default(),
            config_info: Family::default(),
            storage_bytes_written: Counter::default(),
            storage_bytes_read: Counter::default(),
            storage_objects_written: Counter::default(),
            storage_objects_read: Counter::default(),
            gc_runs: Family::default(),
            gc_bytes_freed: Counter::default(),
            // 10 ms .. ~2.9 h
            gc_duration: Histogram::new(exponential_buckets(0.01, 4.0, 11)),
            registry: Registry::default(),
            http: HttpHandles {
                requests: slots(ROUTES.len() * METHODS.len() * STATUSES.len()),
                duration: slots(ROUTES.len() * METHODS.len()),
                request_bytes: slots(ROUTES.len()),
                response_bytes: slots(ROUTES.len()),
            },
        };
        // Counters get their `_total` suffix from the encoder.
        r.register(
            "gantry_http_requests",
            "HTTP requests by route class, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "gantry_http_request_duration_seconds",
            "HTTP request duration (until the response head) by route class and method",
            m.http_duration.clone(),
        );
        r.register(
            "gantry_http_request_bytes",
            "Request body bytes received, by route class",
            m.http_request_bytes.clone(),
        );
        r.register(
            "gantry_http_response_bytes",
            "Response body bytes sent (as declared by the response), by route class",
            m.http_response_bytes.clone(),
        );
        r.register(
            "gantry_auth_decisions",
            "Authentication decisions by issuer, result and reason class",
            m.auth_decisions.clone(),
        );
        r.register(
            "gantry_auth_cache_hits",
            "Bearer tokens answered from the decision cache",
            m.cache_hits.clone(),
        );
        r.register(
            "gantry_auth_cache_misses",
            "Bearer tokens not in the decision cache",
            m.cache_misses.clone(),
        );
        r.register(
            "gantry_auth_cache_entries",
            "Decisions held in the cache",
            m.cache_entries.clone(),
        );
        r.register(
            "gantry_policy_evaluations",
            "Claim-policy evaluations by issuer and outcome (allow, deny, trap, timeout, memory, invalid)",
            m.policy_evaluations.clone(),
        );
        r.register(
            "gantry_policy_evaluation_duration_seconds",
            "Claim-policy evaluation duration by issuer, waiting for an instance included",
            m.policy_duration.clone(),
        );
        r.register(
            "gantry_policy_pool_size",
            "Instances a policy may run at once (pool_size), by issuer",
            m.policy_pool_size.clone(),
        );
        r.register(
            "gantry_policy_pool_waits",
            "Evaluations that waited for a free instance, by issuer",
            m.policy_pool_waits.clone(),
        );
        r.register(
            "gantry_policy_shadow_disagreements",
            "Tokens on which the issuer's shadow policy decided otherwise than its active one",
            m.shadow_disagreements.clone(),
        );
        r.register(
            "gantry_policy_shadow_dropped",
            "Shadow evaluations dropped because too many were running, by issuer",
            m.shadow_dropped.clone(),
        );
        r.register(
            "gantry_issuer_last_key_refresh_timestamp_seconds",
            "Unix time of the issuer's last successful key fetch",
            m.issuer_last_refresh.clone(),
        );
        r.register(
            "gantry_issuer_key_refresh_failures",
            "Consecutive failed key fetches of the issuer",
            m.issuer_failures.clone(),
        );
        r.register(
            "gantry_issuer_keys",
            "Signing keys held for the issuer",
            m.issuer_keys.clone(),
        );
        r.register(
            "gantry_config_reloads",
            "Configuration reloads by result (applied, refused)",
            m.config_reloads.clone(),
        );
        r.register(
            "gantry_config_info",
            "The configuration in force: 1, labelled with a SHA-256 prefix of its text",
            m.config_info.clone(),
        );
        r.register(
            "gantry_storage_bytes_written",
            "Bytes written to storage (blobs, upload chunks, manifests)",
            m.storage_bytes_written.clone(),
        );
        r.register(
            "gantry_storage_bytes_read",
            "Bytes read from storage (blob ranges served, manifests)",
            m.storage_bytes_read.clone(),
        );
        r.register(
            "gantry_storage_objects_written",
            "Blobs and manifests stored",
            m.storage_objects_written.clone(),
        );
        r.register(
            "gantry_storage_objects_read",
            "Blobs and manifests read",
            m.storage_objects_read.clone(),
        );
        r.register(
            "gantry_gc_runs",
            "Garbage-collection runs by result (ok, failed)",
            m.gc_runs.clone(),
        );
        r.register(
            "gantry_gc_bytes_freed",
            "Bytes of blob content garbage collection removed",
            m.gc_bytes_freed.clone(),
        );
        r.register(
            "gantry_gc_duration_seconds",
            "How long garbage-collection runs took",
            m.gc_duration.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The counter of request body bytes of `class`'s route.
    pub fn request_bytes(&self, class: HttpClass) -> Counter {
        self.http.request_bytes[class.route]
            .get_or_init(|| {
                self.http_request_bytes
                    .get_or_create(&RouteLabel {
                        route: class.route(),
                    })
                    .clone()
            })
            .clone()
    }

    /// One answered request: its status, time to the response head and
    /// declared response body length.
    pub fn request(&self, class: HttpClass, status: u16, seconds: f64, body: Option<u64>) {
        let (route, method) = (ROUTES[class.route], METHODS[class.method]);
        let labels = || HttpLabels {
            route,
            method,
            status,
        };
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                let slot = (class.route * METHODS.len() + class.method) * STATUSES.len() + i;
                self.http.requests[slot]
                    .get_or_init(|| self.http_requests.get_or_create(&labels()).clone())
                    .inc();
            }
            None => {
                self.http_requests.get_or_create(&labels()).inc();
            }
        }
        self.http.duration[class.route * METHODS.len() + class.method]
            .get_or_init(|| {
                self.http_duration
                    .get_or_create(&RouteMethod { route, method })
                    .clone()
            })
            .observe(seconds);
        if let Some(bytes) = body {
            self.http.response_bytes[class.route]
                .get_or_init(|| {
                    self.http_response_bytes
                        .get_or_create(&RouteLabel { route })
                        .clone()
                })
                .inc_by(bytes);
        }
    }

    /// One authentication decision.
    pub fn decision(&self, issuer: &str, allowed: bool, reason: &'static str) {
        self.auth_decisions
            .get_or_create(&DecisionLabels {
                issuer: issuer.to_owned(),
                result: if allowed { "allow" } else { "deny" },
                reason,
            })
            .inc();
    }

    /// The handles of one issuer's policy, made when the policy loads.
    /// One shadow disagreement of `issuer`.
    pub fn shadow_disagreement(&self, issuer: &str) {
        self.shadow_disagreements
            .get_or_create(&IssuerLabel {
                issuer: issuer.to_owned(),
            })
            .inc();
    }

    /// One shadow evaluation of `issuer` dropped under load.
    pub fn shadow_dropped(&self, issuer: &str) {
        self.shadow_dropped
            .get_or_create(&IssuerLabel {
                issuer: issuer.to_owned(),
            })
            .inc();
    }

    pub fn policy(&'static self, issuer: &str) -> PolicyHandles {
        PolicyHandles {
            metrics: self,
            issuer: issuer.to_owned(),
            outcomes: Default::default(),
            duration: OnceLock::new(),
            waits: OnceLock::new(),
        }
    }

    /// Something written to storage.
    pub fn wrote(&self, bytes: u64, object: bool) {
        self.storage_bytes_written.inc_by(bytes);
        if object {
            self.storage_objects_written.inc();
        }
    }

    /// Something read from storage.
    pub fn read(&self, bytes: u64) {
        self.storage_bytes_read.inc_by(bytes);
        self.storage_objects_read.inc();
    }

    /// One garbage-collection run.
    pub fn gc_run(&self, ok: bool, seconds: f64, bytes_freed: u64) {
        self.gc_runs
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
        self.gc_duration.observe(seconds);
        self.gc_bytes_freed.inc_by(bytes_freed);
    }

    /// The configuration in force, by a hash of its text.
    pub fn config_in_force(&self, hash: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&HashLabel {
                hash: hash.to_owned(),
            })
            .set(1);
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The route class of a request path (a bounded label).
pub fn route_class(path: &str) -> &'static str {
    if path == "/auth/token" {
        return "token";
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return "other";
    };
    if rest == "_catalog" {
        return "catalog";
    }
    // The route's keyword sits just before the last segment (a repository
    // name may hold any of them as a component of its own): one scan from
    // the right, no substring search.
    let mut from_right = rest.rsplit('/');
    let last = from_right.next().unwrap_or_default();
    let keyword = from_right.next().unwrap_or_default();
    match keyword {
        "manifests" => "manifest",
        "blobs" if last == "uploads" => "upload",
        "blobs" => "blob",
        "uploads" if from_right.next() == Some("blobs") => "upload",
        "tags" if last == "list" => "tags",
        "referrers" => "referrers",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_in_their_class() {
        for (path, class) in [
            ("/v2/a/b/manifests/latest", "manifest"),
            ("/v2/a/blobs/sha256:00", "blob"),
            ("/v2/a/blobs/uploads/", "upload"),
            ("/v2/a/blobs/uploads/123", "upload"),
            ("/v2/a/tags/list", "tags"),
            ("/v2/_catalog", "catalog"),
            ("/v2/a/referrers/sha256:00", "referrers"),
            ("/auth/token", "token"),
            ("/v2/", "other"),
            ("/healthz", "other"),
            // A repository component that reads like a route keyword.
            ("/v2/manifests/blobs/sha256:00", "blob"),
            ("/v2/blobs/manifests/latest", "manifest"),
            ("/v2/a/blobs/uploads/blobs/uploads", "upload"),
            ("/v2/tags/list/manifests/list", "manifest"),
            ("/v2/a/referrers/manifests/x/tags/list", "tags"),
        ] {
            assert_eq!(route_class(path), class, "{path}");
        }
    }

    #[test]
    fn families_encode_with_their_names() {
        let m = Metrics::new();
        m.decision("https://i.example", true, "none");
        m.wrote(10, true);
        let text = m.encode();
        assert!(text.contains("gantry_auth_decisions_total{issuer=\"https://i.example\",result=\"allow\",reason=\"none\"} 1"), "{text}");
        assert!(
            text.contains("gantry_storage_bytes_written_total 10"),
            "{text}"
        );
    }
}
