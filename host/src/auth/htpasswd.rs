//! Static users from an htpasswd file (bcrypt entries only: `user:$2y$...`).
//!
//! bcrypt is slow on purpose (tens of milliseconds), so checks run on the
//! blocking pool and a successful check is remembered for a short while,
//! keyed by a SHA-256 of the password, never the password itself.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How long a successful bcrypt check is remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// Bound on remembered checks; the memo starts over when full.
const MAX_REMEMBERED: usize = 10_000;

pub struct Htpasswd {
    users: HashMap<String, String>,
    memo: Mutex<HashMap<(String, [u8; 32]), Instant>>,
}

impl Htpasswd {
    /// Parses an htpasswd file; every bad line is reported (line number, why).
    pub fn load(path: &Path) -> Result<Htpasswd, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        Htpasswd::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Htpasswd, Vec<String>> {
        let mut users = HashMap::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                problems.push(format!("line {}: expected `user:bcrypt-hash`", i + 1));
                continue;
            };
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                problems.push(format!(
                    "line {}: user `{user}` does not have a bcrypt hash (use `htpasswd -B`)",
                    i + 1
                ));
                continue;
            }
            if users.insert(user.to_string(), hash.to_string()).is_some() {
                problems.push(format!("line {}: user `{user}` appears twice", i + 1));
            }
        }
        if problems.is_empty() {
            Ok(Htpasswd {
                users,
                memo: Mutex::new(HashMap::new()),
            })
        } else {
            Err(problems)
        }
    }

    pub fn has_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Checks a password; `false` for unknown users.
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user).cloned() else {
            return false;
        };
        let key = (user.to_string(), Sha256::digest(password.as_bytes()).into());
        {
            let memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            if memo.get(&key).is_some_and(|t| t.elapsed() < REMEMBER) {
                return true;
            }
        }
        let password = password.to_string();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok {
            let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            if memo.len() >= MAX_REMEMBERED {
                memo.clear();
            }
            memo.insert(key, Instant::now());
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_bcrypt_and_refuses_the_rest() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let h = Htpasswd::parse(&format!("# users\nalice:{hash}\n")).expect("valid");
        assert!(h.verify("alice", "s3cret").await);
        assert!(h.verify("alice", "s3cret").await, "remembered check");
        assert!(!h.verify("alice", "wrong").await);
        assert!(!h.verify("bob", "s3cret").await);
    }

    #[test]
    fn reports_every_bad_line() {
        let err = Htpasswd::parse("alice:{SHA}abc\nnocolon\n")
            .err()
            .expect("invalid");
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].contains("line 1") && err[0].contains("bcrypt"));
    }
}
