//! Body wrappers of the connection layer: [`Progress`] holds a request body
//! to a minimum rate, [`Tracked`] keeps a connection marked busy until its
//! response is sent.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::conn::RequestGuard;
use crate::config::ConnectionLimits;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request-body progress rule: every `window` spent waiting for body
/// bytes must bring at least `min_bytes` of them.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    window: Duration,
    min_bytes: u64,
}

impl Rule {
    pub fn new(limits: &ConnectionLimits) -> Rule {
        let per_window = limits
            .body_min_bytes_per_second
            .saturating_mul(limits.body_timeout.as_secs().max(1));
        Rule {
            window: limits.body_timeout,
            // A rate of zero still means "some progress in every window".
            min_bytes: per_window.max(1),
        }
    }
}

/// A request body under the [`Rule`]. Only time spent *waiting on the
/// client* counts: while the handler is busy elsewhere (hashing, fsync) the
/// body is not polled and its clock does not run, so a slow disk never
/// fails a fast client. Failing yields an `io::ErrorKind::TimedOut` error,
/// which the API answers with 408 and which leaves an upload session at its
/// last acknowledged chunk.
pub struct Progress<B> {
    inner: B,
    rule: Rule,
    /// Waiting time of this window before the current wait.
    waited: Duration,
    bytes: u64,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> Progress<B> {
    pub fn new(inner: B, rule: Rule) -> Progress<B> {
        Progress {
            inner,
            rule,
            waited: Duration::ZERO,
            bytes: 0,
            waiting_since: None,
            timer: None,
        }
    }

    fn too_slow(&self) -> BoxError {
        Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "request body too slow: {} bytes in {:?} of waiting, at least {} required",
                self.bytes, self.rule.window, self.rule.min_bytes
            ),
        ))
    }

    /// Closes the current window if it is full: `Err` when it broke the rule.
    fn judge_window(&mut self) -> Result<(), BoxError> {
        if self.waited < self.rule.window {
            return Ok(());
        }
        if self.bytes < self.rule.min_bytes {
            return Err(self.too_slow());
        }
        self.waited = Duration::ZERO;
        self.bytes = 0;
        Ok(())
    }
}

impl<B> Body for Progress<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                if let Some(Ok(f)) = &frame
                    && let Some(data) = f.data_ref()
                {
                    this.bytes += data.len() as u64;
                }
                if let Err(e) = this.judge_window() {
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let since = *this.waiting_since.get_or_insert_with(Instant::now);
                let deadline = since + this.rule.window.saturating_sub(this.waited);
                let mut timer = this
                    .timer
                    .take()
                    .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    // A whole window of waiting has passed.
                    this.waited = this.rule.window;
                    this.waiting_since = Some(Instant::now());
                    if let Err(e) = this.judge_window() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    timer.as_mut().reset(Instant::now() + this.rule.window);
                    // Registers the waker for the new deadline.
                    let _ = timer.as_mut().poll(cx);
                }
                this.timer = Some(timer);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its request's [`RequestGuard`] until it is
/// dropped, so the connection counts as busy while the response streams.
pub struct Tracked<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, guard: RequestGuard) -> Tracked<B> {
        Tracked {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn rule(window_ms: u64, min_bytes: u64) -> Rule {
        Rule {
            window: Duration::from_millis(window_ms),
            min_bytes,
        }
    }

    /// A body that yields `chunks`, each after `gap` of silence.
    fn trickle(
        chunks: usize,
        size: usize,
        gap: Duration,
    ) -> impl Body<Data = Bytes, Error = io::Error> + Unpin {
        let s = futures_util::stream::unfold(0usize, move |i| async move {
            if i == chunks {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((
                Ok::<_, io::Error>(Frame::data(Bytes::from(vec![b'x'; size]))),
                i + 1,
            ))
        });
        StreamBody::new(Box::pin(s))
    }

    async fn drain<B: Body + Unpin>(mut b: B) -> Result<u64, B::Error> {
        let mut n = 0;
        while let Some(frame) = b.frame().await {
            if let Some(d) = frame?.data_ref() {
                n += d.remaining() as u64;
            }
        }
        Ok(n)
    }

    use bytes::Buf as _;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_the_rate_passes() {
        // 10 bytes every 100 ms against "10 bytes per 500 ms".
        let body = Progress::new(trickle(20, 10, Duration::from_millis(100)), rule(500, 10));
        assert_eq!(drain(body).await.expect("passes"), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_with_timed_out() {
        let body = Progress::new(trickle(3, 10, Duration::from_secs(60)), rule(500, 10));
        let err = drain(body).await.expect_err("stalls");
        let io = err.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io.kind(), io::ErrorKind::TimedOut, "{io}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_rate_fails() {
        // One byte every 100 ms: 5 per window of 500 ms, 50 required.
        let body = Progress::new(trickle(100, 1, Duration::from_millis(100)), rule(500, 50));
        assert!(drain(body).await.is_err());
    }
}
