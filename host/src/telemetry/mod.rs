//! Telemetry: the logging setup (`tracing` with the level and format of
//! `[log]`; `RUST_LOG`, when set, overrides the level, for debugging) and
//! the metrics every room writes to. A leaf: it reads no other room, so
//! every room may reach it.

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber at `level` (`trace` … `error`), one JSON
/// object per line when `json`; later calls are ignored.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colours only on a terminal: a log file, pipe or journal gets plain
    // `key=value` text that tools (and audit collectors) can match.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
