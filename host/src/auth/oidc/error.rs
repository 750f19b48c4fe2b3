//! Why a token was refused, and why a configuration was refused.
//!
//! `Display` is the precise reason for the log (issuer, kid, audiences,
//! times); it never contains the token. Values copied from the unverified
//! token (issuer, kid, alg, typ, audiences) are attacker-controlled: they are
//! truncated when stored and printed with `{:?}` so control characters are
//! escaped. Clients get [`VerifyError::client_message`], never `Display`.

/// The longest attacker-controlled string kept in an error (in bytes, cut on a
/// char boundary): enough to recognise a value in a log, too short to flood it.
const MAX_ECHO: usize = 128;

/// Copies at most [`MAX_ECHO`] bytes of an untrusted value, for logs.
pub(crate) fn echo(value: &str) -> String {
    if value.len() <= MAX_ECHO {
        return value.to_owned();
    }
    let mut end = MAX_ECHO;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// A refused token. Every variant maps to HTTP 401 at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token is larger than {} bytes", super::token::MAX_TOKEN_BYTES)]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token issuer {0:?} is not configured")]
    UnknownIssuer(String),
    /// `issuer` is `None` when the algorithm is refused before the issuer is
    /// looked up (`none`, HMAC and unknown names are refused for everyone).
    #[error("algorithm {alg:?} is not allowed{}", issuer_suffix(issuer))]
    AlgorithmNotAllowed { issuer: Option<String>, alg: String },
    #[error("token type {0:?} is not accepted (absent, \"JWT\" or \"at+jwt\" only)")]
    BadType(String),
    #[error(
        "no signing keys loaded yet for issuer {issuer:?} (discovery/JWKS not fetched successfully)"
    )]
    KeysUnavailable { issuer: String },
    #[error("issuer {issuer:?} has no {alg} key{}", kid_suffix(kid))]
    UnknownKey {
        issuer: String,
        kid: Option<String>,
        alg: String,
    },
    #[error(
        "signature does not verify with issuer {issuer:?}'s key{}",
        kid_suffix(kid)
    )]
    BadSignature { issuer: String, kid: Option<String> },
    #[error("issuer {issuer:?}: audience {got:?} contains none of the configured {expected:?}")]
    WrongAudience {
        issuer: String,
        got: Vec<String>,
        expected: Vec<String>,
    },
    #[error("issuer {issuer:?}: token expired at {exp} (now {now}, leeway {leeway}s)")]
    Expired {
        issuer: String,
        exp: u64,
        now: u64,
        leeway: u64,
    },
    #[error("issuer {issuer:?}: token not valid before {nbf} (now {now}, leeway {leeway}s)")]
    NotYetValid {
        issuer: String,
        nbf: u64,
        now: u64,
        leeway: u64,
    },
    #[error("issuer {issuer:?}: token issued in the future at {iat} (now {now}, leeway {leeway}s)")]
    IssuedInFuture {
        issuer: String,
        iat: u64,
        now: u64,
        leeway: u64,
    },
    #[error("issuer {issuer:?}: token lifetime {lifetime}s exceeds the maximum {max}s")]
    LifetimeTooLong {
        issuer: String,
        lifetime: u64,
        max: u64,
    },
    #[error("token has no {0:?} claim")]
    MissingClaim(&'static str),
}

fn issuer_suffix(issuer: &Option<String>) -> String {
    issuer
        .as_ref()
        .map(|i| format!(" for issuer {i:?}"))
        .unwrap_or_default()
}

fn kid_suffix(kid: &Option<String>) -> String {
    match kid {
        Some(kid) => format!(" with kid {kid:?}"),
        None => " (token has no kid)".to_owned(),
    }
}

impl VerifyError {
    /// A generic text for the client. The detail goes to the log only: telling
    /// a caller *which* check failed helps an attacker more than a user.
    pub fn client_message(&self) -> &'static str {
        match self {
            VerifyError::TooLarge => "token too large",
            VerifyError::Malformed(_) => "malformed token",
            VerifyError::Expired { .. } => "token expired",
            VerifyError::KeysUnavailable { .. } => "token issuer unavailable, try again later",
            _ => "invalid token",
        }
    }

    /// True when the same token may verify later without any change to it
    /// (the issuer's keys could not be fetched): such a refusal must not be
    /// cached as a decision.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            VerifyError::KeysUnavailable { .. } | VerifyError::UnknownKey { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_truncates_on_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let cut = echo(&long);
        assert!(cut.len() <= MAX_ECHO + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(echo("short"), "short");
    }

    #[test]
    fn display_escapes_control_characters() {
        let e = VerifyError::UnknownIssuer("evil\n[INFO] forged".to_owned());
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn client_message_is_generic() {
        let e = VerifyError::WrongAudience {
            issuer: "https://issuer".into(),
            got: vec!["x".into()],
            expected: vec!["gantry".into()],
        };
        assert_eq!(e.client_message(), "invalid token");
        assert!(!e.client_message().contains("gantry"));
    }
}
