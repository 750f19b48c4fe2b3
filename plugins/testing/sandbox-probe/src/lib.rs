//! Test guest `sandbox-probe`: `evaluate` tries each capability a policy
//! must not have (files, directory listing, environment, arguments, working
//! directory, stdin, network, clock) and denies with a report of what every
//! attempt got, e.g. `fs=denied(NotFound) dir=denied(NotFound) env=none
//! args=[] cwd=none stdin=empty net=denied(Unsupported) clock=0s`.
//!
//! Whatever leaks is quoted in the report (paths, variables, bytes), so a
//! host test can assert on the report alone.
#![allow(unsafe_code)] // the generated bindings

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({ path: "../../../wit/gantry-policy@0.1.0", world: "claim-policy" });

fn denied(e: &std::io::Error) -> String {
    format!("denied({:?})", e.kind())
}

fn probe_file() -> String {
    match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!(
            "LEAK({:?})",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ),
        Err(e) => denied(&e),
    }
}

fn probe_dir() -> String {
    match std::fs::read_dir("/") {
        Ok(entries) => {
            let names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|entry| format!("/{}", entry.file_name().to_string_lossy()))
                .collect();
            format!("LEAK([{}])", names.join(", "))
        }
        Err(e) => denied(&e),
    }
}

fn probe_env() -> String {
    let mut vars: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    if let Some(home) = std::env::var_os("HOME")
        && vars.is_empty()
    {
        vars.push(format!("HOME={}", home.to_string_lossy()));
    }
    if vars.is_empty() {
        "none".to_owned()
    } else {
        format!("LEAK({})", vars.join(", "))
    }
}

fn probe_args() -> String {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.is_empty() {
        "[]".to_owned()
    } else {
        format!("LEAK({args:?})")
    }
}

fn probe_cwd() -> String {
    match std::env::current_dir() {
        // wasi-libc answers "/" when the host set no working directory.
        Ok(dir) if dir.as_os_str() == "/" => "none".to_owned(),
        Ok(dir) => format!("LEAK({})", dir.display()),
        Err(_) => "none".to_owned(),
    }
}

fn probe_stdin() -> String {
    let mut buf = [0u8; 64];
    match std::io::stdin().read(&mut buf) {
        Ok(0) => "empty".to_owned(),
        Ok(n) => format!("LEAK({:?})", String::from_utf8_lossy(&buf[..n])),
        Err(e) => denied(&e),
    }
}

fn probe_net() -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        Ok(_) => "LEAK(connected to 127.0.0.1:1)".to_owned(),
        // A refused connection means the socket reached the host's network.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "LEAK(connection refused by 127.0.0.1:1)".to_owned()
        }
        Err(e) => denied(&e),
    }
}

fn probe_clock() -> String {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => format!("{}s", since.as_secs()),
        Err(_) => "before-epoch".to_owned(),
    }
}

struct SandboxProbe;

impl Guest for SandboxProbe {
    fn init(_settings: String) -> Result<(), String> {
        Ok(())
    }

    fn evaluate(_claims: String) -> Decision {
        Decision::Deny(format!(
            "fs={} dir={} env={} args={} cwd={} stdin={} net={} clock={}",
            probe_file(),
            probe_dir(),
            probe_env(),
            probe_args(),
            probe_cwd(),
            probe_stdin(),
            probe_net(),
            probe_clock(),
        ))
    }
}

export!(SandboxProbe);
