//! Builds the default claim policy, `plugins/cel-policy`, for wasm32-wasip2
//! and hands its path to the crate as `GANTRY_CEL_POLICY_WASM`, which
//! `policy::source` embeds with `include_bytes!` as `builtin:cel`. So a plain
//! `cargo build` on a fresh clone produces a binary with its policy inside.

#[path = "../plugins/guest_build.rs"]
mod guest_build;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let root = guest_build::repo_root();
    let cel = root.join("plugins").join("cel-policy");
    guest_build::rerun_if_changed(&cel.join("Cargo.toml"));
    guest_build::rerun_if_changed(&cel.join("src"));

    let built = guest_build::build(&["cel-policy".to_owned()]);
    for guest in built {
        println!("cargo:rustc-env=GANTRY_CEL_POLICY_WASM={}", guest.display());
    }
}
