//! A SHA-256 whose state can be written down and picked up again by another
//! process: an upload session on object storage may receive its chunks on
//! different replicas, and none of them can afford to re-read what the
//! session already holds to finish the digest.
//!
//! The compression function is `sha2`'s own (with its CPU-specific
//! implementations); only the bookkeeping around it (the partial block and
//! the final padding of FIPS 180-4, section 5.1.1) lives here.

use sha2::digest::generic_array::GenericArray;

const BLOCK: usize = 64;
const INITIAL: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A running SHA-256 over a byte stream, serialisable between chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far, the partial block included.
    len: u64,
    /// The bytes of the block not yet compressed (fewer than 64).
    partial: Vec<u8>,
}

/// The written-down form: the eight state words and the partial block in
/// hex, and the length.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedSha256 {
    pub state: String,
    pub len: u64,
    pub partial: String,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256 {
            state: INITIAL,
            len: 0,
            partial: Vec::with_capacity(BLOCK),
        }
    }
}

impl ResumableSha256 {
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.partial.is_empty() {
            let take = (BLOCK - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < BLOCK {
                return;
            }
            let block = *GenericArray::from_slice(&self.partial);
            sha2::compress256(&mut self.state, &[block]);
            self.partial.clear();
        }
        let whole = bytes.len() / BLOCK * BLOCK;
        // One block per call, borrowed in place: no copy of the input.
        for block in bytes[..whole].chunks_exact(BLOCK) {
            sha2::compress256(
                &mut self.state,
                std::slice::from_ref(GenericArray::from_slice(block)),
            );
        }
        self.partial.extend_from_slice(&bytes[whole..]);
    }

    /// Bytes hashed so far.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The digest of everything given to `update`, as 32 bytes.
    pub fn finish(&self) -> [u8; 32] {
        let mut state = self.state;
        let mut tail = self.partial.clone();
        tail.push(0x80);
        while tail.len() % BLOCK != BLOCK - 8 {
            tail.push(0);
        }
        tail.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        let blocks: Vec<GenericArray<u8, _>> = tail
            .chunks_exact(BLOCK)
            .map(|c| *GenericArray::from_slice(c))
            .collect();
        sha2::compress256(&mut state, &blocks);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    pub fn save(&self) -> SavedSha256 {
        let mut words = Vec::with_capacity(32);
        for w in self.state {
            words.extend_from_slice(&w.to_be_bytes());
        }
        SavedSha256 {
            state: hex::encode(words),
            len: self.len,
            partial: hex::encode(&self.partial),
        }
    }

    /// Picks up a saved state; `None` when it is not one this type wrote
    /// (wrong sizes, or a partial block that disagrees with the length).
    pub fn restore(saved: &SavedSha256) -> Option<ResumableSha256> {
        let words = hex::decode(&saved.state).ok()?;
        let partial = hex::decode(&saved.partial).ok()?;
        if words.len() != 32
            || partial.len() >= BLOCK
            || saved.len % BLOCK as u64 != partial.len() as u64
        {
            return None;
        }
        let mut state = [0u32; 8];
        for (s, w) in state.iter_mut().zip(words.chunks_exact(4)) {
            *s = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        }
        let mut p = Vec::with_capacity(BLOCK);
        p.extend_from_slice(&partial);
        Some(ResumableSha256 {
            state,
            len: saved.len,
            partial: p,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sha2::Digest as _;

    use super::*;

    #[test]
    fn known_answers() {
        let empty = ResumableSha256::default().finish();
        assert_eq!(
            hex::encode(empty),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = ResumableSha256::default();
        h.update(b"abc");
        assert_eq!(
            hex::encode(h.finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    proptest! {
        /// Any split of any input, saved and restored between every piece,
        /// gives sha2's answer.
        #[test]
        fn split_save_restore_matches_sha2(data in proptest::collection::vec(any::<u8>(), 0..700),
                                           cuts in proptest::collection::vec(0usize..700, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut h = ResumableSha256::default();
            let mut at = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                h.update(&data[at..c]);
                at = c;
                h = ResumableSha256::restore(&h.save()).expect("restores");
            }
            prop_assert_eq!(h.len(), data.len() as u64);
            prop_assert_eq!(h.finish().to_vec(), sha2::Sha256::digest(&data).to_vec());
        }
    }

    #[test]
    fn a_state_that_disagrees_with_its_length_is_refused() {
        let mut h = ResumableSha256::default();
        h.update(&[7u8; 70]);
        let mut saved = h.save();
        saved.len += 1;
        assert!(ResumableSha256::restore(&saved).is_none());
        saved.len -= 1;
        saved.state.pop();
        assert!(ResumableSha256::restore(&saved).is_none());
    }
}
