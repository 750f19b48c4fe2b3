//! What a guest instance can touch: the per-instance host state.
//!
//! Owns: `HostState` (the `T` of every `Store`), the memory cap
//! (`ResourceLimiter`), the per-call time budget flags, the `host.log` import,
//! and the deny-all WASI p2 context with its capped stdout/stderr capture.
//! Must not: hand a guest any real capability. No preopened directory, no
//! environment, no arguments, no stdin, no sockets or name lookups, and clocks
//! frozen at zero (a policy decides on its claims and settings only). Every
//! byte a guest writes is bounded before it reaches `tracing`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::gantry::policy::host::{Host, Level};
use super::error::Phase;
use super::limits::{MAX_LOG_LINE_BYTES, truncate};

/// Most core instances / tables / memories one component may create. A
/// `wasm32-wasip2` Rust component uses a handful; these stop a module that
/// instantiates without bound.
const MAX_INSTANCES: usize = 32;
const MAX_TABLES: usize = 32;
const MAX_MEMORIES: usize = 8;
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Most WASI resources (streams, pollables, ...) an instance may hold at
/// once: they live in host memory, which the memory cap does not see. A
/// policy needs a handful.
const MAX_WASI_RESOURCES: usize = 1024;

/// How much of the guest's stderr tail a trap error quotes (a Rust panic
/// message lands there just before the trap).
const STDERR_TAIL_BYTES: usize = 512;

/// The data of one guest's `Store`.
pub(crate) struct HostState {
    owner: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryCap,
    pub(crate) budget: Budget,
    output: Output,
}

impl HostState {
    pub(crate) fn new(owner: Arc<str>, memory_limit_bytes: usize, max_output_bytes: usize) -> Self {
        let output = Output::new(max_output_bytes);
        HostState {
            owner,
            wasi: deny_all_wasi(&output),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_WASI_RESOURCES);
                table
            },
            limiter: MemoryCap::new(memory_limit_bytes),
            budget: Budget::default(),
            output,
        }
    }

    /// Starts a guest call: arms the time budget and clears the per-call flags
    /// and output counters.
    pub(crate) fn begin_call(&mut self, timeout: Duration) {
        self.budget = Budget {
            deadline: Some(Instant::now() + timeout),
            timed_out: false,
        };
        self.limiter.hit = false;
        self.output.reset();
    }

    /// Ends a guest call: sends what it wrote to the log, tagged with the
    /// owner, and returns the tail of its stderr (for a trap message).
    pub(crate) fn end_call(&mut self, phase: Phase) -> String {
        self.budget.deadline = None;
        self.output.flush(&self.owner, phase)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The `types` interface has no functions; the trait is a marker.
impl super::bindings::gantry::policy::types::Host for HostState {}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let owner = &*self.owner;
        let Some(line) = self.output.admit_log_line(&message) else {
            return;
        };
        // `tracing` needs the level at compile time, hence one arm per level.
        match level {
            Level::Debug => {
                tracing::debug!(target: "gantry::policy::guest", issuer = owner, "{line}")
            }
            Level::Info => {
                tracing::info!(target: "gantry::policy::guest", issuer = owner, "{line}")
            }
            Level::Warn => {
                tracing::warn!(target: "gantry::policy::guest", issuer = owner, "{line}")
            }
            Level::Error => {
                tracing::error!(target: "gantry::policy::guest", issuer = owner, "{line}")
            }
        }
    }
}

/// The time budget of the current call, checked by the epoch callback.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// `None` between calls.
    pub(crate) deadline: Option<Instant>,
    /// Set by the epoch callback when it interrupts the guest, so the error
    /// can be reported as a timeout rather than a generic trap.
    pub(crate) timed_out: bool,
}

impl Budget {
    /// Called on every epoch tick while the guest runs: `true` to interrupt.
    pub(crate) fn expired(&mut self) -> bool {
        let expired = self.deadline.is_some_and(|d| Instant::now() >= d);
        self.timed_out |= expired;
        expired
    }
}

/// Caps the linear memory of one instance: all its memories together.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    limit: usize,
    used: usize,
    /// A growth was refused during the current call. A guest may survive a
    /// failed `memory.grow`; if it traps afterwards, this names the cause.
    pub(crate) hit: bool,
}

impl MemoryCap {
    fn new(limit: usize) -> Self {
        MemoryCap {
            limit,
            used: 0,
            hit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // `current` is already counted in `used` (creation is a growth from 0).
        let after = self.used.saturating_sub(current).saturating_add(desired);
        if after > self.limit {
            self.hit = true;
            return Ok(false);
        }
        self.used = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// WASI p2 with nothing in it: what a module built by a standard toolchain
/// needs to link, and no capability. Random stays real: it grants no access
/// and Rust's `HashMap` seeds from it.
fn deny_all_wasi(output: &Output) -> WasiCtx {
    let mut builder = WasiCtx::builder();
    builder
        .stdout(output.stream(Stream::Stdout))
        .stderr(output.stream(Stream::Stderr))
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    // No `preopened_dir`, `env`, `args`, `inherit_*`: the defaults are empty,
    // and stdin is closed.
    builder.build()
}

/// Clocks that always read zero: time is not an input to a claim policy
/// (token expiry is checked by the host before the policy runs).
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Everything one instance writes during one call: stdout, stderr and log
/// lines share one byte budget (`max_output_bytes`); beyond it bytes are
/// dropped and counted, never an error, so a chatty guest cannot stall.
#[derive(Clone)]
struct Output {
    inner: Arc<Mutex<OutputState>>,
}

#[derive(Default)]
struct OutputState {
    cap: usize,
    used: usize,
    dropped: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl OutputState {
    /// How many of `len` new bytes fit; counts the rest as dropped.
    fn admit(&mut self, len: usize) -> usize {
        let fits = len.min(self.cap - self.used);
        self.used += fits;
        self.dropped += len - fits;
        fits
    }
}

impl Output {
    fn new(cap: usize) -> Self {
        Output {
            inner: Arc::new(Mutex::new(OutputState {
                cap,
                ..OutputState::default()
            })),
        }
    }

    /// The state, even if a panicking thread poisoned the lock: it holds
    /// plain bytes and counters that stay consistent.
    fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stream(&self, stream: Stream) -> CaptureStream {
        CaptureStream {
            output: self.clone(),
            stream,
        }
    }

    fn reset(&self) {
        let mut state = self.lock();
        state.used = 0;
        state.dropped = 0;
        state.stdout.clear();
        state.stderr.clear();
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.lock();
        let fits = state.admit(bytes.len());
        let buf = match stream {
            Stream::Stdout => &mut state.stdout,
            Stream::Stderr => &mut state.stderr,
        };
        buf.extend_from_slice(&bytes[..fits]);
    }

    /// A log line, truncated, if the call's budget still has room for it.
    fn admit_log_line(&self, message: &str) -> Option<String> {
        let line = truncate(message, MAX_LOG_LINE_BYTES);
        let mut state = self.lock();
        if state.admit(line.len()) < line.len() {
            return None;
        }
        Some(line)
    }

    fn flush(&self, owner: &str, phase: Phase) -> String {
        let mut state = self.lock();
        let stdout = std::mem::take(&mut state.stdout);
        let stderr = std::mem::take(&mut state.stderr);
        let dropped = std::mem::take(&mut state.dropped);
        state.used = 0;
        drop(state);
        if !stdout.is_empty() {
            tracing::info!(target: "gantry::policy::guest", issuer = owner, %phase, stream = "stdout", "{}", String::from_utf8_lossy(&stdout));
        }
        if !stderr.is_empty() {
            tracing::warn!(target: "gantry::policy::guest", issuer = owner, %phase, stream = "stderr", "{}", String::from_utf8_lossy(&stderr));
        }
        if dropped > 0 {
            tracing::warn!(target: "gantry::policy::guest", issuer = owner, %phase, dropped_bytes = dropped, "policy output over its cap was dropped");
        }
        let tail_start = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
        String::from_utf8_lossy(&stderr[tail_start..])
            .trim()
            .to_owned()
    }
}

/// One end of the capture, handed to WASI as stdout or stderr.
struct CaptureStream {
    output: Output,
    stream: Stream,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(CaptureStream {
            output: self.output.clone(),
            stream: self.stream,
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(CaptureStream {
            output: self.output.clone(),
            stream: self.stream,
        })
    }
}

/// Writes always succeed immediately (excess is dropped in `Output::write`),
/// so a guest flooding its stdout never waits on the host.
const WRITE_WINDOW: usize = 64 << 10;

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_WINDOW)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.output.write(self.stream, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memory_cap_counts_all_memories_together() {
        let mut cap = MemoryCap::new(10 << 20);
        assert!(cap.memory_growing(0, 6 << 20, None).unwrap_or(false));
        // A second memory: 6 + 5 > 10.
        assert!(!cap.memory_growing(0, 5 << 20, None).unwrap_or(true));
        assert!(cap.hit);
        // Growing the first memory within the cap is fine.
        assert!(cap.memory_growing(6 << 20, 9 << 20, None).unwrap_or(false));
        assert!(!cap.memory_growing(9 << 20, 11 << 20, None).unwrap_or(true));
    }

    #[test]
    fn output_is_capped_and_counted() {
        let out = Output::new(10);
        out.write(Stream::Stdout, b"hello ");
        out.write(Stream::Stderr, b"world!!");
        assert!(out.admit_log_line("x").is_none());
        let state = out.lock();
        assert_eq!(state.stdout, b"hello ");
        assert_eq!(state.stderr, b"worl");
        assert_eq!(state.dropped, 4);
    }

    #[test]
    fn flush_returns_the_stderr_tail_and_resets() {
        let out = Output::new(4096);
        out.write(Stream::Stderr, b"panicked at src/lib.rs:3:5:\nboom\n");
        let tail = out.flush("https://issuer", Phase::Evaluate);
        assert_eq!(tail, "panicked at src/lib.rs:3:5:\nboom");
        assert_eq!(out.flush("https://issuer", Phase::Evaluate), "");
    }

    #[test]
    fn budget_expires_after_the_deadline() {
        let mut budget = Budget::default();
        assert!(!budget.expired(), "no deadline between calls");
        budget.deadline = Some(Instant::now());
        assert!(budget.expired());
        assert!(budget.timed_out);
    }
}
