//! Test guest `infinite-loop`: `evaluate` spins forever without calling the
//! host, so only the host's CPU budget (epoch interruption) can stop it.
#![allow(unsafe_code)] // the generated bindings

use std::hint::black_box;

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

struct InfiniteLoop;

impl Guest for InfiniteLoop {
    fn init(_settings: String) -> Result<(), String> {
        Ok(())
    }

    fn evaluate(_claims: String) -> Decision {
        // `black_box` keeps the optimiser from proving the loop does nothing
        // and from hoisting the counter out of it.
        let mut spins: u64 = 0;
        loop {
            spins = black_box(spins).wrapping_add(1);
        }
    }
}

export!(InfiniteLoop);
