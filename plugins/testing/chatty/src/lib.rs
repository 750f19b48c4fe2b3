//! Test guest `chatty`: on every call writes a 1 MiB line to stdout and to
//! stderr and a 1 MiB message to the host log, then allows as `chatty`. The
//! host must cap what reaches its log and must not stall on it.
#![allow(unsafe_code)] // the generated bindings

use std::io::Write;

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

use gantry::policy::host::{Level, log};

const MIB: usize = 1 << 20;

fn flood(what: &str) {
    let line = format!("chatty {what}: {}\n", "o".repeat(MIB));
    // Write errors are ignored: a host that closes the stream is fine too.
    let _ = std::io::stdout().write_all(line.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(line.as_bytes());
    log(Level::Info, &format!("chatty {what}: {}", "x".repeat(MIB)));
}

struct Chatty;

impl Guest for Chatty {
    fn init(_settings: String) -> Result<(), String> {
        flood("init");
        Ok(())
    }

    fn evaluate(_claims: String) -> Decision {
        flood("evaluate");
        Decision::Allow(Identity {
            username: "chatty".to_owned(),
            groups: Vec::new(),
        })
    }
}

export!(Chatty);
