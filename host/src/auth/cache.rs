//! Cached authentication decisions, keyed by the SHA-256 of a bearer token
//! and kept until the token expires, so the hot path is one hash and one
//! lookup instead of a signature check and a Wasm call.
//!
//! Only verified tokens are cached (a refused token is never inserted), and
//! the cache is bounded: two generations of at most [`GENERATION`] entries
//! each. New decisions go into the young generation; when it is full it
//! becomes the old one and the previous old generation is dropped; a hit in
//! the old generation moves the entry back into the young one. A flood of
//! distinct tokens thus evicts least-recently-used decisions first and never
//! holds more than `2 × GENERATION` entries, without a sweep or a global
//! clear on the request path.

use std::collections::HashMap;
use std::sync::RwLock;

use super::Caller;

/// Entries per generation: at most twice this many decisions are cached.
/// One entry is a 32-byte key, an expiry and a shared `Caller` (whose names
/// are shared with the copies handed out), about 100 bytes plus the
/// identity's names: 100,000 live tokens of distinct identities hold well
/// under 64 MiB.
pub const GENERATION: usize = 50_000;

type Map = HashMap<[u8; 32], (Caller, u64)>;

#[derive(Default)]
struct Generations {
    young: Map,
    old: Map,
}

#[derive(Default)]
pub struct DecisionCache {
    entries: RwLock<Generations>,
}

impl DecisionCache {
    /// The cached caller and expiry, if present and not expired at `now`.
    pub fn get(&self, key: &[u8; 32], now: u64) -> Option<(Caller, u64)> {
        {
            let g = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = g.young.get(key) {
                return Some(hit.clone()).filter(|(_, exp)| *exp > now);
            }
            if !g.old.contains_key(key) {
                return None;
            }
        }
        // A hit in the old generation: move it to the young one, so that
        // decisions in use survive the next turnover.
        let mut g = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let entry = g.old.remove(key)?;
        if entry.1 <= now {
            return None;
        }
        Self::put(&mut g, *key, entry.clone());
        Some(entry)
    }

    pub fn insert(&self, key: [u8; 32], caller: Caller, exp: u64, now: u64) {
        if exp <= now {
            return;
        }
        let mut g = self.entries.write().unwrap_or_else(|p| p.into_inner());
        g.old.remove(&key);
        Self::put(&mut g, key, (caller, exp));
    }

    fn put(g: &mut Generations, key: [u8; 32], entry: (Caller, u64)) {
        if g.young.len() >= GENERATION && !g.young.contains_key(&key) {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(key, entry);
    }

    /// Drops every decision `issuer`'s policy made (its policy changed).
    pub fn drop_issuer(&self, issuer: &str) {
        let mut g = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let keep = |(caller, _): &mut (Caller, u64)| caller.issuer.as_deref() != Some(issuer);
        g.young.retain(|_, v| keep(v));
        g.old.retain(|_, v| keep(v));
    }

    /// Decisions held now.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        let g = self.entries.read().unwrap_or_else(|p| p.into_inner());
        g.young.len() + g.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> [u8; 32] {
        let mut k = [0; 32];
        k[..8].copy_from_slice(&(i as u64).to_le_bytes());
        k
    }

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

    #[test]
    fn dropping_an_issuer_keeps_the_others() {
        let c = DecisionCache::default();
        let of = |issuer: &str| Caller {
            issuer: Some(issuer.into()),
            ..Caller::anonymous()
        };
        c.insert([1; 32], of("https://a.example"), 100, 1);
        c.insert([2; 32], of("https://b.example"), 100, 1);
        c.insert([3; 32], Caller::anonymous(), 100, 1);
        c.drop_issuer("https://a.example");
        assert!(c.get(&[1; 32], 2).is_none());
        assert!(c.get(&[2; 32], 2).is_some());
        assert!(c.get(&[3; 32], 2).is_some());
    }

    #[test]
    fn a_flood_is_bounded_and_evicts_what_is_not_used() {
        let c = DecisionCache::default();
        c.insert(key(0), Caller::anonymous(), 1_000, 1);
        for i in 1..=5 * GENERATION {
            c.insert(key(i), Caller::anonymous(), 1_000, 1);
            assert!(c.len() <= 2 * GENERATION, "{} entries", c.len());
            // A token in use throughout the flood stays cached.
            if i % (GENERATION / 2) == 0 {
                assert!(c.get(&key(0), 2).is_some(), "evicted while in use at {i}");
            }
        }
        // Tokens not used since the flood began are gone; the newest stay.
        assert!(c.get(&key(1), 2).is_none());
        assert!(c.get(&key(5 * GENERATION), 2).is_some());
        assert!(c.len() >= GENERATION);
    }
}
