//! Test guest `unbounded-alloc`: `evaluate` grows a buffer until memory runs
//! out, i.e. until the host's memory cap refuses `memory.grow` and the
//! allocator aborts.
#![allow(unsafe_code)] // the generated bindings

use std::hint::black_box;

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

struct UnboundedAlloc;

impl Guest for UnboundedAlloc {
    fn init(_settings: String) -> Result<(), String> {
        Ok(())
    }

    fn evaluate(_claims: String) -> Decision {
        let chunk = [0xA5u8; 64 * 1024];
        let mut hoard: Vec<u8> = Vec::new();
        loop {
            // Written, not just reserved, and observed, so none of it can be
            // optimised away.
            hoard.extend_from_slice(&chunk);
            black_box(&mut hoard);
        }
    }
}

export!(UnboundedAlloc);
