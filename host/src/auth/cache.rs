//! Cached authentication decisions, keyed by the SHA-256 of a bearer token
//! and kept until the token expires, so the hot path is one hash and one
//! lookup instead of a signature check and a Wasm call.

use std::collections::HashMap;
use std::sync::RwLock;

use super::Caller;

/// Bound on cached decisions: past it, expired entries are swept, and if
/// that frees nothing the cache starts over (a refill is one verification
/// per live token).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct DecisionCache {
    entries: RwLock<HashMap<[u8; 32], (Caller, u64)>>,
}

impl DecisionCache {
    /// The cached caller and expiry, if present and not expired at `now`.
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<(Caller, u64)> {
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|(_, exp)| *exp > now).cloned()
    }

    pub fn insert(&self, key: [u8; 32], caller: Caller, exp: u64, now: u64) {
        if exp <= now {
            return;
        }
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, e)| *e > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (caller, exp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_with_their_token() {
        let c = DecisionCache::default();
        c.insert([1; 32], Caller::anonymous(), 100, 50);
        assert!(c.get(&[1; 32], 99).is_some());
        assert!(c.get(&[1; 32], 100).is_none());
        c.insert([2; 32], Caller::anonymous(), 10, 50);
        assert!(
            c.get(&[2; 32], 0).is_none(),
            "already expired when inserted"
        );
    }
}
