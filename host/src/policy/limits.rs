//! Per-module limits and the checks on what crosses the host/guest boundary.
//!
//! Owns: `Limits` (time, memory, sizes, pool size) with safe defaults, the
//! validation of a guest's `Decision`, and the byte-bounded truncation used on
//! every guest-supplied string before it reaches a log or an error.
//! Must not: call into a guest or know about wasmtime; this is plain data so
//! it can be unit-tested and filled from config.

use std::time::Duration;

use super::{Decision, Identity};

/// Longest accepted username, in bytes. Kubernetes service-account names
/// (`system:serviceaccount:<63>:<253>`) fit with room to spare.
pub const MAX_USERNAME_BYTES: usize = 1024;
/// Longest accepted group name, in bytes.
pub const MAX_GROUP_BYTES: usize = 1024;
/// Most groups one decision may carry. Access control walks them per request.
pub const MAX_GROUPS: usize = 256;
/// Longest deny reason kept (longer ones are truncated, not refused: the
/// outcome is a deny either way).
pub const MAX_DENY_REASON_BYTES: usize = 1024;
/// Longest single `log` line kept from a guest.
pub const MAX_LOG_LINE_BYTES: usize = 1024;

/// Limits for one loaded module. Every field has a safe default; config
/// overrides them per issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time budget for one guest call (`init` or `evaluate`). Wall-clock time
    /// of the call, which bounds its CPU time; enforced at the granularity of
    /// the engine's epoch tick.
    pub timeout: Duration,
    /// Cap on the linear memory of one instance (all its memories together).
    pub memory_limit_bytes: usize,
    /// Largest settings document (serialized JSON) accepted by `load`.
    pub max_settings_bytes: usize,
    /// Largest claim set (serialized JSON) accepted by `evaluate`.
    pub max_claims_bytes: usize,
    /// Largest decision (username + groups, or deny reason) accepted from the
    /// guest, and the per-call cap on what it may write to stdout, stderr and
    /// the host log (beyond it output is dropped and counted, not an error).
    pub max_output_bytes: usize,
    /// Initialised instances kept for this module; also the number of
    /// evaluations of this module that run at once (others wait their turn).
    pub pool_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // An evaluation takes microseconds; 100 ms is three orders of
            // magnitude of headroom and still stops a loop before a client
            // times out.
            timeout: Duration::from_millis(100),
            // The CEL policy runs in ~2 MiB; 64 MiB fits interpreters
            // (componentize-py, jco) without letting one issuer starve the host.
            memory_limit_bytes: 64 << 20,
            max_settings_bytes: 64 << 10,
            max_claims_bytes: 64 << 10,
            max_output_bytes: 64 << 10,
            // Two cores: more instances than that only adds memory.
            pool_size: 2,
        }
    }
}

impl Limits {
    /// Checks the limits themselves, naming the first bad field.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.timeout.is_zero() {
            return Err(LimitsError::ZeroTimeout);
        }
        if self.memory_limit_bytes < (1 << 20) {
            return Err(LimitsError::MemoryTooSmall);
        }
        if self.pool_size == 0 {
            return Err(LimitsError::ZeroPool);
        }
        if self.max_output_bytes < 1024 {
            return Err(LimitsError::OutputTooSmall);
        }
        Ok(())
    }
}

/// Why a set of [`Limits`] cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("timeout must be greater than zero")]
    ZeroTimeout,
    #[error("memory limit must be at least 1 MiB")]
    MemoryTooSmall,
    #[error("pool_size must be at least 1")]
    ZeroPool,
    #[error("max_output_bytes must be at least 1024")]
    OutputTooSmall,
}

impl LimitsError {
    /// The `[auth.oidc.policy]` key an operator sets to fix it (`None`: not
    /// an operator setting).
    pub fn config_key(self) -> Option<&'static str> {
        match self {
            LimitsError::ZeroTimeout => Some("timeout_ms"),
            LimitsError::MemoryTooSmall => Some("memory_limit_mib"),
            LimitsError::ZeroPool => Some("pool_size"),
            LimitsError::OutputTooSmall => None,
        }
    }
}

/// Checks a guest's decision against the host's rules; returns it with the
/// deny reason bounded, or says what is wrong.
pub fn validate_decision(decision: Decision, max_output_bytes: usize) -> Result<Decision, String> {
    match decision {
        Decision::Deny(reason) => Ok(Decision::Deny(truncate(&reason, MAX_DENY_REASON_BYTES))),
        Decision::Allow(identity) => {
            validate_identity(&identity, max_output_bytes).map(|()| Decision::Allow(identity))
        }
    }
}

fn validate_identity(identity: &Identity, max_output_bytes: usize) -> Result<(), String> {
    check_name("username", &identity.username, MAX_USERNAME_BYTES)?;
    if identity.groups.len() > MAX_GROUPS {
        return Err(format!(
            "{} groups, over the limit of {MAX_GROUPS}",
            identity.groups.len()
        ));
    }
    for (i, group) in identity.groups.iter().enumerate() {
        check_name(&format!("groups[{i}]"), group, MAX_GROUP_BYTES)?;
    }
    let total = identity.username.len() + identity.groups.iter().map(String::len).sum::<usize>();
    if total > max_output_bytes {
        return Err(format!(
            "identity is {total} bytes, over the limit of {max_output_bytes}"
        ));
    }
    Ok(())
}

/// Names end up in logs, tokens and access-control matches: no empty names,
/// no control characters (log injection), no unbounded lengths.
fn check_name(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.len() > max {
        return Err(format!(
            "{field} is {} bytes, over the limit of {max}",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "{field} {:?} contains control characters",
            truncate(value, 64)
        ));
    }
    Ok(())
}

/// `s` cut to at most `max` bytes on a character boundary, with a marker
/// saying how much was dropped.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(username: &str, groups: &[&str]) -> Decision {
        Decision::Allow(Identity {
            username: username.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        })
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn zero_pool_and_timeout_are_rejected() {
        let limits = Limits {
            pool_size: 0,
            ..Limits::default()
        };
        assert_eq!(limits.validate(), Err(LimitsError::ZeroPool));
        assert_eq!(LimitsError::ZeroPool.config_key(), Some("pool_size"));
        let limits = Limits {
            timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert_eq!(limits.validate(), Err(LimitsError::ZeroTimeout));
        assert_eq!(LimitsError::ZeroTimeout.config_key(), Some("timeout_ms"));
    }

    #[test]
    fn accepts_a_normal_identity() {
        let d = allow(
            "system:serviceaccount:ns:sa",
            &["system:serviceaccounts", "ns"],
        );
        assert_eq!(validate_decision(d.clone(), 65536), Ok(d));
    }

    #[test]
    fn refuses_empty_or_blank_username() {
        assert!(
            validate_decision(allow("", &[]), 65536)
                .err()
                .unwrap_or_default()
                .contains("username is empty")
        );
        assert!(
            validate_decision(allow("  ", &[]), 65536)
                .err()
                .unwrap_or_default()
                .contains("username is empty")
        );
    }

    #[test]
    fn refuses_control_characters() {
        let err = validate_decision(allow("a\nb", &[]), 65536)
            .err()
            .unwrap_or_default();
        assert!(err.contains("control characters"), "{err}");
        let err = validate_decision(allow("a", &["ok", "x\u{1b}[31m"]), 65536)
            .err()
            .unwrap_or_default();
        assert!(err.contains("groups[1]"), "{err}");
    }

    #[test]
    fn refuses_oversized_names_and_group_lists() {
        let long = "a".repeat(MAX_USERNAME_BYTES + 1);
        assert!(
            validate_decision(allow(&long, &[]), 1 << 20)
                .err()
                .unwrap_or_default()
                .contains("username is 1025 bytes")
        );
        let groups: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        assert!(
            validate_decision(allow("a", &refs), 1 << 20)
                .err()
                .unwrap_or_default()
                .contains("257 groups")
        );
        let err = validate_decision(allow("abcdef", &["ghijkl"]), 8)
            .err()
            .unwrap_or_default();
        assert!(err.contains("over the limit of 8"), "{err}");
    }

    #[test]
    fn deny_reason_is_truncated_not_refused() {
        let reason = "é".repeat(MAX_DENY_REASON_BYTES);
        match validate_decision(Decision::Deny(reason), 65536) {
            Ok(Decision::Deny(r)) => {
                assert!(r.len() < MAX_DENY_REASON_BYTES + 32, "{}", r.len());
                assert!(r.ends_with("more bytes)"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h… (5 more bytes)");
        assert_eq!(truncate("short", 10), "short");
    }
}
