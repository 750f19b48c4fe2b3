//! One connection: TLS handshake, HTTP/1.1 or HTTP/2 (hyper-util's auto
//! builder), and the watchdog that closes it when it says nothing for too
//! long or when the accept loop needs its slot.
//!
//! The watchdog is a task of its own that aborts the connection's task:
//! polling timers beside the connection on every wake-up would cost each
//! request, the watchdog costs nothing until a deadline.
//!
//! "Nothing for too long" is measured from the connection's last finished
//! request (or its start): `header_read_timeout` until the first request
//! head has arrived, `idle_timeout` after. A connection with a request in
//! flight is never idle; the request body rule ([`super::body`]) bounds a
//! request that stalls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tower::ServiceExt as _;

use super::body::{Progress, Rule, Tracked};
use crate::config::ConnectionLimits;

/// `last_done_ms` of a connection that has finished no request yet.
const NONE_DONE: u64 = u64::MAX;

/// What the accept loop and the watchdog know of one connection.
pub struct ConnState {
    pub id: u64,
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request finished;
    /// [`NONE_DONE`] until one has.
    last_done_ms: AtomicU64,
    shed_requested: AtomicBool,
    done: AtomicBool,
    /// Wakes the watchdog: a shed request, or the connection's end.
    wake: Notify,
}

impl ConnState {
    pub fn new(id: u64) -> ConnState {
        ConnState {
            id,
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(NONE_DONE),
            shed_requested: AtomicBool::new(false),
            done: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Whether the accept loop may close this connection to make room: no
    /// request in flight, and not already asked to.
    pub fn sheddable(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.shed_requested.load(Ordering::Acquire)
    }

    /// Asks the connection to close now.
    pub fn shed(&self) {
        self.shed_requested.store(true, Ordering::Release);
        // notify_one keeps a permit when nobody waits yet.
        self.wake.notify_one();
    }

    /// The connection's task has ended: its watchdog may go.
    pub fn ended(&self) {
        self.done.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// How long the connection has been without a request (since its
    /// last one finished, or since it opened), and the limit that applies:
    /// `idle_timeout` after a request, `header_read_timeout` before any.
    fn idle(&self, limits: &ConnectionLimits) -> (Duration, Duration) {
        match self.last_done_ms.load(Ordering::Acquire) {
            NONE_DONE => (self.started.elapsed(), limits.header_read_timeout),
            last => (
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last)),
                limits.idle_timeout,
            ),
        }
    }

    /// How long until the watchdog should look again.
    fn until_deadline(&self, limits: &ConnectionLimits) -> Duration {
        let (idle, limit) = self.idle(limits);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return limit;
        }
        limit.saturating_sub(idle)
    }

    fn expired(&self, limits: &ConnectionLimits) -> bool {
        let (idle, limit) = self.idle(limits);
        self.in_flight.load(Ordering::Acquire) == 0 && idle >= limit
    }
}

/// Held by a request from its head's arrival until its response body is
/// dropped (sent, or the connection gone).
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let s = &self.0;
        let now = u64::try_from(s.started.elapsed().as_millis()).unwrap_or(NONE_DONE - 1);
        s.last_done_ms.store(now, Ordering::Release);
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything one connection task needs.
pub struct Connection {
    pub app: Router,
    pub builder: Arc<Builder<TokioExecutor>>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub body_rule: Rule,
    pub state: Arc<ConnState>,
    pub stop: watch::Receiver<bool>,
}

impl Connection {
    pub async fn run(self, stream: TcpStream, peer: SocketAddr) {
        let Some(acceptor) = self.tls.clone() else {
            return self.serve(TokioIo::new(stream), peer).await;
        };
        // The watchdog's header deadline covers the handshake too: a
        // client that opens a socket and says nothing is a slowloris over
        // TLS as well.
        match acceptor.accept(stream).await {
            Ok(tls) => self.serve(TokioIo::new(tls), peer).await,
            Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        }
    }

    async fn serve<I>(self, io: I, peer: SocketAddr)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let rule = self.body_rule;
        let state = self.state.clone();
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = state.begin();
            let req = req.map(|body| axum::body::Body::new(Progress::new(body, rule)));
            let app = app.clone();
            async move {
                let resp = app
                    .oneshot(req)
                    .await
                    .unwrap_or_else(|never| match never {});
                Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, guard)))
            }
        });
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let mut stop = self.stop.clone();
        let mut stopping = *stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                biased;
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Closes the connection whose task `connection` is once it has been
/// silent or idle past its deadline, or when the accept loop asks for its
/// slot; ends when the connection does.
pub async fn watchdog(
    state: Arc<ConnState>,
    limits: ConnectionLimits,
    connection: tokio::task::AbortHandle,
) {
    loop {
        let wait = state.until_deadline(&limits);
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                if state.expired(&limits) {
                    tracing::debug!("closing a silent or idle connection");
                    connection.abort();
                    return;
                }
            }
            () = state.wake.notified() => {
                if state.done.load(Ordering::Acquire) {
                    return;
                }
                if state.shed_requested.load(Ordering::Acquire) {
                    tracing::debug!("closing an idle connection to make room for a new one");
                    connection.abort();
                    return;
                }
            }
        }
    }
}
