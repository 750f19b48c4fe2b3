//! Builds Wasm guests of the `plugins/` workspace for a build script of the
//! root workspace. `host/build.rs` (the embedded CEL policy) and
//! `tests/build.rs` (the test-only guests) both include this file with
//! `#[path = "../plugins/guest_build.rs"] mod guest_build;`.
//!
//! The guests are built by a nested `cargo build --release --target
//! wasm32-wasip2` into `<root>/target/plugins`:
//! - its own target directory, because the outer build holds the lock of the
//!   outer profile directory for as long as this script runs; one directory
//!   shared by debug and release host builds, so the guests build once;
//! - always `--release`: the guest's speed is what the benchmarks measure,
//!   and a debug component is ten times larger and slower to JIT;
//! - with the outer build's configuration removed from the environment
//!   (`CARGO_ENCODED_RUSTFLAGS`, `CARGO_CFG_*`, `CARGO_PROFILE_*`, a
//!   `cargo clippy` wrapper, ...), which targets the host, not Wasm.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target every guest is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The repository root: the parent of the crate whose build script runs.
pub fn repo_root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("CARGO_MANIFEST_DIR is not set: run this through cargo"));
    match manifest_dir.parent() {
        Some(root) => root.to_path_buf(),
        None => panic!("{} has no parent directory", manifest_dir.display()),
    }
}

/// Builds `packages` of the `plugins/` workspace in one cargo invocation and
/// returns the absolute paths of their components, in the same order. Emits
/// `rerun-if-changed` for what they are built from.
pub fn build(packages: &[String]) -> Vec<PathBuf> {
    let root = repo_root();
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("plugins");

    for path in [
        plugins.join("Cargo.toml"),
        plugins.join("Cargo.lock"),
        plugins.join("guest_build.rs"),
        root.join("wit"),
    ] {
        rerun_if_changed(&path);
    }

    let guest_toolchain = guest_toolchain();
    let mut cmd = match &guest_toolchain {
        Some(toolchain) => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", toolchain, "cargo"]);
            cmd
        }
        None => {
            ensure_target_installed();
            Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        }
    };
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"));
    for package in packages {
        cmd.args(["-p", package]);
    }
    scrub_outer_build_env(&mut cmd);
    if guest_toolchain.is_some() {
        // The outer toolchain's compiler and proxy choice, not the guests'.
        for key in ["RUSTC", "RUSTDOC", "RUSTC_WRAPPER", "RUSTUP_TOOLCHAIN"] {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_TARGET_DIR", &target_dir)
        // Cargo reads `cargo:` directives from this script's stdout; the
        // nested build's output goes to stderr, shown when a build fails.
        .stdout(Stdio::from(std::io::stderr()));

    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the Wasm guests ({cmd:?}): {e}"));
    if !status.success() {
        panic!(
            "building the Wasm guests {packages:?} failed ({status}); cargo's output is above.\n\
             If it says the lock file needs to be updated, run \
             `cargo update --manifest-path plugins/Cargo.toml --workspace` and commit plugins/Cargo.lock."
        );
    }

    let out_dir = target_dir.join(TARGET).join("release");
    packages
        .iter()
        .map(|package| {
            let wasm = out_dir.join(format!("{}.wasm", package.replace('-', "_")));
            if !wasm.is_file() {
                panic!("cargo built {package} but {} is missing", wasm.display());
            }
            wasm
        })
        .collect()
}

/// Tells cargo to rerun the build script when `path` (a file, or any file
/// under a directory) changes.
pub fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}

/// The rustup toolchain to build the guests with when it is not the one
/// running this build: `GANTRY_GUEST_TOOLCHAIN`. The fuzz targets build the
/// host with `cargo +nightly fuzz`, and a nightly may have no Wasm target
/// to install; `GANTRY_GUEST_TOOLCHAIN=1.95.0` builds the guests (the same
/// ones, into the same directory) with the pinned toolchain instead.
fn guest_toolchain() -> Option<String> {
    println!("cargo:rerun-if-env-changed=GANTRY_GUEST_TOOLCHAIN");
    env::var("GANTRY_GUEST_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty())
}

/// Makes sure the toolchain has the guests' target. When it is missing and
/// rustup is at hand, installs it for the toolchain this build runs on
/// (`rust-toolchain.toml` pins it) and says so in a build warning, so a
/// fresh clone builds with `cargo run --release` alone; without rustup the
/// build stops, saying the one command that fixes it.
fn ensure_target_installed() {
    if target_libdir_exists() {
        return;
    }
    // Set by rustup's proxies for the toolchain they picked.
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok();
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Some(t) = &toolchain {
        rustup.args(["--toolchain", t]);
    }
    // rustup's progress goes to stderr, shown when the build fails.
    rustup.stdout(Stdio::from(std::io::stderr()));
    let shown = format!(
        "rustup target add {TARGET}{}",
        toolchain
            .as_deref()
            .map(|t| format!(" --toolchain {t}"))
            .unwrap_or_default()
    );
    match rustup.status() {
        Ok(status) if status.success() && target_libdir_exists() => {
            println!(
                "cargo:warning=installed the Rust target {TARGET}, which Gantry's policy plugins are built for (ran `{shown}`)"
            );
        }
        Ok(status) => panic!(
            "\n\nThe Rust target `{TARGET}` is not installed, and Gantry's policy plugins are built for it.\n\
             Installing it with `{shown}` failed ({status}); its output is above.\n\
             Fix: run `{shown}` yourself, then build again.\n\n"
        ),
        Err(e) => panic!(
            "\n\nThe Rust target `{TARGET}` is not installed, and Gantry's policy plugins are built for it.\n\
             rustup is not available to install it ({e}).\n\
             Fix: install the target for your toolchain (with rustup: `rustup target add {TARGET}`), then build again.\n\n"
        ),
    }
}

/// Whether rustc has the standard library of the guests' target.
fn target_libdir_exists() -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .is_some_and(|dir| dir.is_dir())
}

/// Removes what the outer cargo set for *this* build (host target flags,
/// profile, features, a clippy or coverage wrapper) so the nested build
/// reads only `plugins/Cargo.toml`. Kept: where cargo's home and registries
/// are, network settings, and the jobserver, so both builds share the same
/// CPU budget instead of each taking every core. Public for a build of
/// another workspace (`tests/build.rs`'s Rust example policy).
pub fn scrub_outer_build_env(cmd: &mut Command) {
    const KEEP_EXACT: &[&str] = &["CARGO_HOME", "CARGO_MAKEFLAGS"];
    const KEEP_PREFIX: &[&str] = &[
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRY_",
        "CARGO_REGISTRIES_",
        "CARGO_TERM_",
    ];
    const REMOVE_EXACT: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "TARGET",
        "HOST",
        "OUT_DIR",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
        "NUM_JOBS",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer_cargo = key.starts_with("CARGO")
            && !KEEP_EXACT.contains(&key)
            && !KEEP_PREFIX.iter().any(|prefix| key.starts_with(prefix));
        if outer_cargo || REMOVE_EXACT.contains(&key) {
            cmd.env_remove(key);
        }
    }
}
