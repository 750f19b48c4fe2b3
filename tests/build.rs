//! Builds every test-only guest of `plugins/testing/` (and the CEL policy)
//! for wasm32-wasip2 and hands their paths to the tests as
//! `GANTRY_TEST_GUEST_<NAME>` (`plugins/testing/infinite-loop` →
//! `GANTRY_TEST_GUEST_INFINITE_LOOP`) and `GANTRY_CEL_POLICY_WASM`.
//!
//! Guests are discovered, not listed: a new directory under
//! `plugins/testing/` is built and exported without touching this file. One
//! that no test under `tests/tests/` names gets a build warning, since a
//! guest nobody loads proves nothing.

#[path = "../plugins/guest_build.rs"]
mod guest_build;

use std::fs;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let root = guest_build::repo_root();
    let testing = root.join("plugins").join("testing");
    let cel = root.join("plugins").join("cel-policy");
    // The directory itself, so a new or removed guest reruns this script.
    guest_build::rerun_if_changed(&testing);
    guest_build::rerun_if_changed(&cel.join("Cargo.toml"));
    guest_build::rerun_if_changed(&cel.join("src"));

    let mut names: Vec<String> = fs::read_dir(&testing)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", testing.display()))
        .filter_map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", testing.display()));
            let path = entry.path();
            path.join("Cargo.toml")
                .is_file()
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();

    let mut packages: Vec<String> = names.iter().map(|name| format!("test-{name}")).collect();
    packages.push("cel-policy".to_owned());
    let built = guest_build::build(&packages);

    let tests_source = read_tests(&root.join("tests").join("tests"));
    for (name, guest) in names.iter().zip(&built) {
        let var = format!(
            "GANTRY_TEST_GUEST_{}",
            name.to_uppercase().replace('-', "_")
        );
        println!("cargo:rustc-env={var}={}", guest.wasm.display());
        // Tests spell it `env!("GANTRY_TEST_GUEST_X")` or, through a macro,
        // `guest!("X")`: look for the bare suffix too.
        let suffix = &var["GANTRY_TEST_GUEST_".len()..];
        if !tests_source.contains(&var) && !tests_source.contains(&format!("\"{suffix}\"")) {
            println!(
                "cargo:warning=test guest plugins/testing/{name} is built but no test in tests/tests/ loads it ({var})"
            );
        }
    }
    if let Some(cel_policy) = built.last() {
        println!(
            "cargo:rustc-env=GANTRY_CEL_POLICY_WASM={}",
            cel_policy.wasm.display()
        );
    }
}

/// The text of every test file, to check each guest is used; the files are
/// watched so adding a test refreshes the check.
fn read_tests(dir: &Path) -> String {
    guest_build::rerun_if_changed(dir);
    let Ok(entries) = fs::read_dir(dir) else {
        return String::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| fs::read_to_string(path).ok())
        .collect::<Vec<_>>()
        .join("\n")
}
