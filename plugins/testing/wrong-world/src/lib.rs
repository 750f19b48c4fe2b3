//! Test guest `wrong-world`: a valid component of another world (`run`
//! instead of `init`/`evaluate`), which the host must refuse at load naming
//! the missing export.
#![allow(unsafe_code)] // the generated bindings

wit_bindgen::generate!({ path: "wit", world: "other" });

struct WrongWorld;

impl Guest for WrongWorld {
    fn run() -> u32 {
        42
    }
}

export!(WrongWorld);
