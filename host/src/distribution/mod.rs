//! The OCI Distribution API (v1.1) over HTTP.
//!
//! One `/v2/{*rest}` route hands the raw path to a tested parser
//! ([`path::parse`]) that yields a typed [`path::Route`]; handlers per
//! concern (blobs and uploads, manifests, listings) turn a route plus method
//! into a storage call. Handlers never touch the filesystem: storage does.
//! Errors leave as the OCI envelope ([`error::ApiError`]); internal causes go
//! to the log from the middleware here, never to the client.

pub mod artifacts;
pub mod error;
pub mod path;

mod blobs;
mod listing;
pub(crate) mod manifests;
mod token;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use self::error::{ApiError, ErrorCode, InternalCause};
use self::path::{PathError, Route};
use crate::auth::access::{Action, ActionSet};
use crate::auth::{Auth, AuthFailure, Caller, Credentials};
use crate::oci::RepoName;
use crate::storage::Storage;

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    /// The authentication in force; `None`: an open registry (no `[auth]`),
    /// where everyone may do everything. A configuration reload swaps it
    /// whole: each request reads it once and finishes on what it read.
    auth: Arc<ArcSwapOption<Auth>>,
}

impl AppState {
    pub fn new(storage: Arc<dyn Storage>, auth: Option<Arc<Auth>>) -> AppState {
        AppState {
            storage,
            auth: Arc::new(ArcSwapOption::new(auth)),
        }
    }

    /// The authentication in force now.
    pub fn auth(&self) -> Option<Arc<Auth>> {
        self.auth.load_full()
    }

    /// Puts `auth` in force for every request that starts from now on.
    pub fn set_auth(&self, auth: Option<Arc<Auth>>) {
        self.auth.store(auth);
    }
}

/// The registry's HTTP application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/auth/token", any(token_endpoint))
        .route("/gantry/v1/tenants/{name}", get(tenant_status))
        // `/v2` and everything under it: the fallback, not a `{*rest}`
        // route, because `v2` parses the path itself and a wildcard
        // route would copy it into URL parameters on every request.
        .fallback(v2_or_not_found)
        .with_state(state)
        .layer(middleware::from_fn(log_and_stamp))
}

/// `/auth/token`, while `[auth]` is configured.
async fn token_endpoint(State(state): State<AppState>, req: Request) -> Response {
    match state.auth() {
        Some(auth) => token::token(auth, req).await,
        None => ApiError::unsupported(
            StatusCode::NOT_FOUND,
            "this registry has no [auth]: there is no token endpoint",
        )
        .into_response(),
    }
}

/// `GET /gantry/v1/tenants/{name}`: a tenant's policies (active and
/// shadow digests, since when, decisions since then) and its last refused
/// push, as JSON; for the tenant's admins and `admin_policy` identities.
async fn tenant_status(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(auth) = state.auth() else {
        return ApiError::unsupported(
            StatusCode::NOT_FOUND,
            "this registry has no [auth] and no tenants",
        )
        .into_response();
    };
    let caller = match auth.authenticate(credentials(&headers)).await {
        Ok((c, _)) => c,
        Err(failure) => return challenge(&auth, &[], Challenge::Refused(&failure)).into_response(),
    };
    match auth.tenant_status(&caller, &name) {
        Ok(Some(status)) => axum::Json(status).into_response(),
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            format!("no tenant `{name}`"),
        )
        .into_response(),
        Err(crate::auth::TenantStatusRefused::Anonymous) => {
            challenge(&auth, &[], Challenge::Login).into_response()
        }
        Err(crate::auth::TenantStatusRefused::Forbidden) => ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            format!("only tenant `{name}`'s admins and registry admins may read its status"),
        )
        .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for the store: an object store that is
/// unreachable is retried for longer than any probe waits, and a probe
/// that times out tells the load balancer less than a prompt 503.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(READY_WITHIN, state.storage.check_writable()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: storage is not writable");
            (StatusCode::SERVICE_UNAVAILABLE, "storage not writable\n").into_response()
        }
        Err(_) => {
            tracing::warn!(within = ?READY_WITHIN, "not ready: storage did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "storage not writable\n").into_response()
        }
    }
}

/// The API version header every `/v2` response carries.
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
/// `Docker-Content-Digest`, on every response that is about one object.
pub(crate) const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// A request body that counts the bytes it delivers into a metric.
struct CountedBody {
    inner: Body,
    counter: prometheus_client::metrics::counter::Counter,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Logs each request (debug; warn/error for failures with their internal
/// cause), counts it in the metrics, and stamps the API version header on
/// `/v2` responses.
async fn log_and_stamp(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    // A cheap clone (shared bytes): the hot path allocates no path string.
    let uri = req.uri().clone();
    let path = uri.path();
    let metrics = crate::telemetry::metrics::metrics();
    let class = crate::telemetry::metrics::HttpClass::of(path, &method);
    let req = if matches!(method, Method::GET | Method::HEAD) {
        req
    } else {
        let counter = metrics.request_bytes(class);
        req.map(|inner| Body::new(CountedBody { inner, counter }))
    };
    let mut resp = next.run(req).await;
    if path.starts_with("/v2") {
        resp.headers_mut()
            .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    }
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let latency_us = elapsed.as_micros() as u64;
    let declared = if method == Method::HEAD {
        None
    } else {
        http_body::Body::size_hint(resp.body())
            .exact()
            .or_else(|| content_length(resp.headers()))
    };
    metrics.request(class, status, elapsed.as_secs_f64(), declared);
    match resp.extensions().get::<InternalCause>() {
        Some(InternalCause(cause)) if status >= 500 => {
            tracing::error!(%method, %path, status, latency_us, cause = %cause, "request failed");
        }
        Some(InternalCause(cause)) => {
            tracing::info!(%method, %path, status, latency_us, cause = %cause, "request refused")
        }
        None => tracing::debug!(%method, %path, status, latency_us, "request"),
    }
    resp
}

/// Every path no other route matches: the registry API under `/v2`, 404
/// elsewhere.
async fn v2_or_not_found(state: State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    if path == "/v2" || path.starts_with("/v2/") {
        v2(state, req).await
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn v2(State(state): State<AppState>, req: Request) -> Response {
    let rest = req.uri().path().strip_prefix("/v2").unwrap_or_default();
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let route = match path::parse(rest) {
        Ok(r) => r,
        Err(PathError::Invalid(e)) => return e.into_response(),
        Err(PathError::NotFound) => {
            return ApiError::unsupported(StatusCode::NOT_FOUND, "no such endpoint")
                .into_response();
        }
    };
    let access = match authorize(
        &state,
        &route,
        req.method(),
        req.headers(),
        req.uri().query(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            // A refused push (401 challenge, 403) still lets the client
            // reuse its connection for the retry with credentials.
            let declared = content_length(req.headers());
            drain_unread(req.into_body(), declared).await;
            return e.into_response();
        }
    };
    match dispatch(&state, &access, route, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// What the caller of one request may do.
pub(crate) struct Access {
    auth: Option<Arc<Auth>>,
    caller: Caller,
    /// Actions allowed on the route's repository (all, for an open registry).
    pub here: ActionSet,
    /// The source of a cross-repository mount: a challenge asks for `pull`
    /// on it too, so the token the client fetches can mount.
    mount_from: Option<RepoName>,
}

impl Access {
    /// Whether the caller may read `repo` (catalog filtering, mount sources).
    pub fn can_read(&self, repo: &RepoName) -> bool {
        match &self.auth {
            None => true,
            Some(auth) => auth.allowed(&self.caller, repo).contains(Action::Read),
        }
    }

    /// Whose budget of upload sessions a new session counts against: the
    /// identity's name, or "" for every anonymous caller together.
    pub fn upload_owner(&self) -> &str {
        self.caller.identity().map_or("", |id| id.username.as_str())
    }

    /// Refuses `action` on `repo` unless allowed: 401 with a challenge for
    /// anonymous callers, 403 for authenticated ones.
    pub fn require(&self, action: Action, repo: &RepoName) -> Result<(), ApiError> {
        match &self.auth {
            None => Ok(()),
            Some(_) if self.here.contains(action) => Ok(()),
            Some(auth) => Err(self.refuse(auth, action, repo)),
        }
    }

    /// 401 with a challenge for an anonymous caller, and for a Gantry token
    /// whose scope alone refuses what access control grants its identity
    /// (`error="insufficient_scope"`: the client fetches a token for this
    /// scope and retries); 403 `DENIED` for an identity that may not.
    fn refuse(&self, auth: &Auth, action: Action, repo: &RepoName) -> ApiError {
        let scopes = self.scopes(repo, action);
        match &self.caller.identity {
            None => challenge(auth, &scopes, Challenge::Login),
            Some(_)
                if self.caller.token.is_some()
                    && auth.granted(&self.caller, repo).contains(action) =>
            {
                challenge(auth, &scopes, Challenge::InsufficientScope)
            }
            Some(id) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                format!("{} may not {action} repository {repo}", id.username),
            )
            .with_detail(
                serde_json::json!({ "action": action.as_str(), "repository": repo.as_str() }),
            ),
        }
    }

    /// The scopes a challenge for `action` on `repo` names.
    fn scopes<'a>(&'a self, repo: &'a RepoName, action: Action) -> Vec<(&'a RepoName, Action)> {
        let mut scopes = vec![(repo, action)];
        scopes.extend(self.mount_from.as_ref().map(|from| (from, Action::Read)));
        scopes
    }
}

/// The source repository of `POST /v2/<name>/blobs/uploads/?mount=…&from=…`.
fn mount_source(route: &Route, method: &Method, query: Option<&str>) -> Option<RepoName> {
    if !matches!(route, Route::UploadStart(_)) || *method != Method::POST {
        return None;
    }
    let q = query_pairs(query);
    query_get(&q, "mount")?;
    query_get(&q, "from")?.parse().ok()
}

/// The action a route needs up front. A manifest PUT needs `create` or
/// `update`; its handler decides which once it knows whether a tag moves.
fn required_action(route: &Route, method: &Method) -> Option<Action> {
    match (route, method) {
        (Route::Base | Route::Catalog, _) => None,
        (_, &Method::GET | &Method::HEAD) => Some(Action::Read),
        (_, &Method::DELETE) => match route {
            // Cancelling one's own upload session is part of pushing.
            Route::Upload(..) => Some(Action::Create),
            _ => Some(Action::Delete),
        },
        _ => Some(Action::Create),
    }
}

async fn authorize(
    state: &AppState,
    route: &Route,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Access, ApiError> {
    let Some(auth) = state.auth() else {
        return Ok(Access {
            auth: None,
            caller: Caller::anonymous(),
            here: ActionSet::ALL,
            mount_from: None,
        });
    };
    let repo = route.repository();
    let needed = required_action(route, method);
    let mut access = Access {
        auth: Some(auth.clone()),
        caller: Caller::anonymous(),
        here: ActionSet::NONE,
        mount_from: mount_source(route, method, query),
    };
    // Boxed: a new token's verification is a large future, and held inline
    // it would make every request's future (anonymous reads too) that large
    // to move.
    access.caller = match Box::pin(auth.authenticate(credentials(headers))).await {
        Ok((c, _)) => c,
        Err(failure) => {
            let scopes = match (repo, needed) {
                (Some(r), Some(a)) => access.scopes(r, a),
                _ => Vec::new(),
            };
            return Err(challenge(&auth, &scopes, Challenge::Refused(&failure)));
        }
    };
    access.here = repo
        .map(|r| auth.allowed(&access.caller, r))
        .unwrap_or_default();
    match (route, repo, needed) {
        // `/v2/` is how clients discover that they must log in.
        (Route::Base, _, _) if access.caller.identity.is_none() => {
            Err(challenge(&auth, &[], Challenge::Login))
        }
        (Route::Manifest(..) | Route::BadManifestRef(..), Some(r), Some(Action::Create))
            if *method == Method::PUT =>
        {
            if access.here.contains(Action::Create) || access.here.contains(Action::Update) {
                Ok(access)
            } else {
                Err(access.refuse(&auth, Action::Create, r))
            }
        }
        (_, Some(r), Some(action)) => {
            access.require(action, r)?;
            // A mount whose source a Gantry token's scope leaves out, where
            // the identity may read it: ask for a token that covers both
            // (distribution does the same), rather than fall back to an
            // upload the client did not need.
            if let Some(from) = &access.mount_from
                && access.caller.token.is_some()
                && !auth.allowed(&access.caller, from).contains(Action::Read)
                && auth.granted(&access.caller, from).contains(Action::Read)
            {
                return Err(challenge(
                    &auth,
                    &access.scopes(r, action),
                    Challenge::InsufficientScope,
                ));
            }
            Ok(access)
        }
        _ => Ok(access),
    }
}

/// The request's `Authorization` header values, for auth.
fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Credentials::None,
        (Some(_), Some(_)) => Credentials::Several,
        (Some(v), None) => Credentials::Header(v.as_bytes()),
    }
}

/// Why a request gets a 401 challenge.
enum Challenge<'a> {
    /// No credentials: log in.
    Login,
    /// Credentials refused: `error="invalid_token"` and the class of the
    /// refusal (an issuer that is down reads "token issuer unavailable, try
    /// again", not "invalid token").
    Refused(&'a AuthFailure),
    /// A Gantry token whose scope does not cover the request, which access
    /// control would allow: `error="insufficient_scope"`.
    InsufficientScope,
}

/// The 401 challenge: Bearer, naming the scopes the request needs
/// (space-separated in one `scope`, as distribution writes them).
fn challenge(auth: &Auth, scopes: &[(&RepoName, Action)], why: Challenge<'_>) -> ApiError {
    let mut value = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        auth.realm, auth.service
    );
    if !scopes.is_empty() {
        let words: Vec<String> = scopes
            .iter()
            .map(|(repo, action)| {
                let words = match action {
                    Action::Read => "pull",
                    Action::Create | Action::Update => "pull,push",
                    Action::Delete => "delete",
                };
                format!("repository:{repo}:{words}")
            })
            .collect();
        value.push_str(&format!(",scope=\"{}\"", words.join(" ")));
    }
    let message = match &why {
        Challenge::Login => "authentication required",
        Challenge::Refused(f) => {
            value.push_str(",error=\"invalid_token\"");
            f.client_message()
        }
        Challenge::InsufficientScope => {
            value.push_str(",error=\"insufficient_scope\"");
            "the token's scope does not cover this request: fetch a token for the scope named in the challenge"
        }
    };
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message);
    if let Ok(v) = HeaderValue::from_str(&value) {
        e = e.with_header(header::WWW_AUTHENTICATE, v);
    }
    if let Challenge::Refused(f) = why {
        e.internal = Some(f.to_string());
    }
    e
}

async fn dispatch(
    state: &AppState,
    access: &Access,
    route: Route,
    req: Request,
) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let s = &*state.storage;
    // Every arm but the hot one (a manifest read) is boxed, so this
    // future, which every request moves, is only as large as that one.
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        (Route::Catalog, Method::GET) => {
            Box::pin(listing::catalog(s, access, req.uri().query())).await
        }
        (Route::Tags(repo), Method::GET) => {
            Box::pin(listing::tags(s, &repo, req.uri().query())).await
        }
        (Route::Referrers(repo, digest), Method::GET) => {
            Box::pin(listing::referrers(s, &repo, &digest, req.uri().query())).await
        }
        (Route::Manifest(repo, r), m @ (Method::GET | Method::HEAD)) => {
            manifests::get(s, &repo, &r, m == Method::HEAD).await
        }
        (Route::Manifest(repo, r), Method::PUT) => {
            Box::pin(manifests::put(s, access, &repo, &r, req)).await
        }
        (Route::Manifest(repo, r), Method::DELETE) => {
            Box::pin(manifests::delete(s, &repo, &r)).await
        }
        (Route::BadManifestRef(_, bad), Method::PUT) => Err(bad.put_error()),
        (Route::BadManifestRef(_, bad), Method::GET | Method::HEAD | Method::DELETE) => {
            Err(bad.lookup_error())
        }
        (Route::Blob(repo, d), m @ (Method::GET | Method::HEAD)) => {
            Box::pin(blobs::get(s, &repo, &d, req.headers(), m == Method::HEAD)).await
        }
        (Route::Blob(repo, d), Method::DELETE) => Box::pin(blobs::delete(s, &repo, &d)).await,
        (Route::UploadStart(repo), Method::POST) => {
            Box::pin(blobs::start_upload(s, access, &repo, req)).await
        }
        (Route::Upload(repo, id), Method::GET) => {
            Box::pin(blobs::upload_status(s, &repo, id)).await
        }
        (Route::Upload(repo, id), Method::PATCH) => {
            Box::pin(blobs::patch_upload(s, &repo, id, req)).await
        }
        (Route::Upload(repo, id), Method::PUT) => {
            Box::pin(blobs::finish_upload(s, &repo, id, req)).await
        }
        (Route::Upload(repo, id), Method::DELETE) => {
            Box::pin(blobs::cancel_upload(s, &repo, id)).await
        }
        (_, m) => Err(ApiError::unsupported(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {m} is not supported here"),
        )),
    }
}

/// Largest request body read off (and dropped) before a refusal that did
/// not need it goes out. A response sent while the body is still unread
/// makes the server close the connection, and a client that reuses it (Go's
/// does) sees its next request fail with EOF. A larger body, or one of
/// unknown length, is not worth reading: its connection closes.
const DRAIN_LIMIT: u64 = 1024 * 1024;

/// Reads off and drops a request body of `declared` length when it is at
/// most [`DRAIN_LIMIT`]; slow bodies are bounded by the connection layer's
/// progress rule.
async fn drain_unread(body: Body, declared: Option<u64>) {
    if declared.is_some_and(|n| n > 0 && n <= DRAIN_LIMIT) {
        let _ = axum::body::to_bytes(body, DRAIN_LIMIT as usize).await;
    }
}

/// Parses the request's query string into pairs (percent-decoded).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The declared `Content-Length`, if any and well-formed.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body as a storage byte stream.
fn body_stream(body: Body) -> crate::storage::ByteStream {
    use futures_util::TryStreamExt;
    Box::pin(body.into_data_stream().map_err(body_error))
}

/// A body error as an `io::Error` that keeps the kind of an `io::Error`
/// inside it: the connection layer's progress rule fails a slow body with
/// `TimedOut`, which is answered 408.
fn body_error(e: axum::Error) -> std::io::Error {
    let kind = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .find_map(|e| e.downcast_ref::<std::io::Error>())
    .map_or(std::io::ErrorKind::Other, std::io::Error::kind);
    std::io::Error::new(kind, e)
}

fn header_value(s: &str) -> HeaderValue {
    // Our values are built from validated names and digests; fall back
    // rather than panic if that ever changes.
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid"))
}

/// [`header_value`] over shared bytes: checked, not copied.
fn shared_value(b: bytes::Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(b).unwrap_or(HeaderValue::from_static("invalid"))
}
