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
        println!("cargo:rustc-env={var}={}", guest.display());
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
            cel_policy.display()
        );
    }

    example_policies::build(&root);
    example_rust::build(&root);
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

/// The example policies written in other languages than Rust
/// (`examples/policies/kubernetes-python`, `examples/policies/kubernetes-js`),
/// built with their own tools into `<root>/target/examples/` and handed to
/// the tests as `GANTRY_EXAMPLE_KUBERNETES_PYTHON_WASM` and
/// `GANTRY_EXAMPLE_KUBERNETES_JS_WASM`.
///
/// - The tools come from PyPI and npm, installed by `.ci/run`; one that is
///   missing, or not the version the example pins, fails the build with the
///   command that installs it. Nothing is skipped.
/// - Each component is rebuilt only when what it is built from changed (its
///   sources, the WIT package, the tool's version): a fingerprint of those is
///   kept beside it, so a rerun of this script for another reason (a guest of
///   `plugins/` changed) costs no componentize run (10-30 s each).
/// - One directory for every profile, like `target/plugins`; a component is
///   written under a temporary name and renamed, so two builds running at
///   once never see half a file.
mod example_policies {
    use super::guest_build;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    struct Example {
        /// `examples/policies/<dir>`.
        dir: &'static str,
        /// The component's file name in `target/examples/`.
        wasm: &'static str,
        /// The variable the tests read its path from.
        var: &'static str,
        /// Files of `dir` it is built from.
        sources: &'static [&'static str],
        /// What installs its tool, for messages.
        install: &'static str,
    }

    const PYTHON: Example = Example {
        dir: "kubernetes-python",
        wasm: "kubernetes_python.wasm",
        var: "GANTRY_EXAMPLE_KUBERNETES_PYTHON_WASM",
        sources: &["app.py", "build.sh", "requirements.txt"],
        install: "pip install -r examples/policies/kubernetes-python/requirements.txt",
    };

    const JS: Example = Example {
        dir: "kubernetes-js",
        wasm: "kubernetes_js.wasm",
        var: "GANTRY_EXAMPLE_KUBERNETES_JS_WASM",
        sources: &[
            "policy.js",
            "build.mjs",
            "package.json",
            "package-lock.json",
        ],
        install: "npm ci --prefix examples/policies/kubernetes-js",
    };

    pub fn build(root: &Path) {
        let examples = root.join("examples").join("policies");
        let out_dir = root.join("target").join("examples");
        fs::create_dir_all(&out_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_dir.display()));
        for example in [&PYTHON, &JS] {
            for source in example.sources {
                guest_build::rerun_if_changed(&examples.join(example.dir).join(source));
            }
        }

        // Check both tools before building either, so one run names every
        // missing install.
        let python_tool = componentize_py_version(root, &examples.join(PYTHON.dir));
        let js_tool = componentize_js_version(root, &examples.join(JS.dir));

        // The two builds are mostly single-threaded: run them side by side.
        let (python, js) = std::thread::scope(|scope| {
            let python = scope.spawn(|| {
                build_one(
                    root,
                    &examples,
                    &out_dir,
                    &PYTHON,
                    &python_tool,
                    |dir, out| {
                        let mut cmd = Command::new("bash");
                        cmd.arg(dir.join("build.sh")).arg(out);
                        cmd
                    },
                )
            });
            let js = scope.spawn(|| {
                build_one(root, &examples, &out_dir, &JS, &js_tool, |dir, out| {
                    let mut cmd = Command::new("node");
                    cmd.arg(dir.join("build.mjs")).arg(out);
                    cmd
                })
            });
            (join(python), join(js))
        });
        println!("cargo:rustc-env={}={}", PYTHON.var, python.display());
        println!("cargo:rustc-env={}={}", JS.var, js.display());
    }

    fn join(handle: std::thread::ScopedJoinHandle<'_, PathBuf>) -> PathBuf {
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// `componentize-py --version`, which must be the version pinned in
    /// `requirements.txt`.
    fn componentize_py_version(root: &Path, dir: &Path) -> String {
        let requirements = dir.join("requirements.txt");
        let fix = format!("pip install -r {}", relative(root, &requirements).display());
        let text = fs::read_to_string(&requirements)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", requirements.display()));
        let pinned = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("componentize-py=="))
            .map(str::trim)
            .unwrap_or_else(|| {
                panic!(
                    "{} must pin componentize-py (componentize-py==X.Y.Z)",
                    requirements.display()
                )
            });
        let output = Command::new("componentize-py")
            .arg("--version")
            .stdin(Stdio::null())
            .output();
        let version = match output {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
            Ok(out) => panic!(
                "\n\n`componentize-py --version` failed ({}): {}\n\
                 componentize-py builds the Python example policy that the tests load.\n\
                 Fix: {fix}\n\n",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!(
                "\n\ncomponentize-py is not installed ({e}); it builds the Python example \
                 policy that the tests load.\nFix: {fix}\n\n"
            ),
        };
        if version.split_whitespace().last() != Some(pinned) {
            panic!(
                "\n\n`componentize-py --version` says {version:?}, but {} pins {pinned}.\n\
                 Fix: {fix}\n\n",
                relative(root, &requirements).display()
            );
        }
        version
    }

    /// The installed `@bytecodealliance/componentize-js`, which must be the
    /// version `package-lock.json` pins; and Node must run.
    fn componentize_js_version(root: &Path, dir: &Path) -> String {
        let fix = format!("npm ci --prefix {}", relative(root, dir).display());
        match Command::new("node")
            .arg("--version")
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            _ => panic!(
                "\n\nNode.js is not installed; it builds the JavaScript example policy that \
                 the tests load.\nFix: apt-get install -y nodejs npm && {fix}\n\n"
            ),
        }
        // Every package the example's package.json names directly, at the
        // version package-lock.json locks: an install that predates a change
        // of the lock fails here, with the fix, not halfway through a build.
        let manifest = dir.join("package.json");
        let names = dev_dependencies(&manifest)
            .unwrap_or_else(|| panic!("{} has no devDependencies", manifest.display()));
        let mut tool = String::new();
        for name in names {
            let package = format!("node_modules/{name}");
            let locked = package_version(&dir.join("package-lock.json"), Some(&package))
                .unwrap_or_else(|| {
                    panic!("{}/package-lock.json does not lock {name}", dir.display())
                });
            match package_version(&dir.join(&package).join("package.json"), None) {
                Some(installed) if installed == locked => {}
                Some(installed) => panic!(
                    "\n\n{name} {installed} is installed in {}, but package-lock.json locks {locked}.\n\
                     Fix: {fix}\n\n",
                    relative(root, dir).display()
                ),
                None => panic!(
                    "\n\n{name} is not installed in {}; it builds the JavaScript example policy \
                     that the tests load.\nFix: {fix}\n\n",
                    relative(root, dir).display()
                ),
            }
            if !tool.is_empty() {
                tool.push_str(", ");
            }
            tool.push_str(&format!("{name} {locked}"));
        }
        tool
    }

    /// The package names under `"devDependencies"` of a package.json (same
    /// small scan as `package_version`).
    fn dev_dependencies(path: &Path) -> Option<Vec<String>> {
        let text = fs::read_to_string(path).ok()?;
        let from = text.find("\"devDependencies\"")?;
        let body = &text[from..];
        let body = &body[body.find('{')? + 1..];
        let body = &body[..body.find('}')?];
        let names: Vec<String> = body
            .split(',')
            .filter_map(|entry| {
                let entry = entry.trim().strip_prefix('"')?;
                Some(entry[..entry.find('"')?].to_owned())
            })
            .collect();
        (!names.is_empty()).then_some(names)
    }

    /// The `"version"` of a package.json, or of `packages[key]` of a
    /// package-lock.json. A small scan, since this crate has no JSON parser
    /// among its build dependencies: the first `"version": "..."` after the
    /// key.
    fn package_version(path: &Path, key: Option<&str>) -> Option<String> {
        let text = fs::read_to_string(path).ok()?;
        let from = match key {
            Some(key) => text.find(&format!("\"{key}\":"))?,
            None => 0,
        };
        let rest = &text[from..];
        let at = rest.find("\"version\"")? + "\"version\"".len();
        let rest = rest[at..].trim_start().strip_prefix(':')?.trim_start();
        let rest = rest.strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_owned())
    }

    fn build_one(
        root: &Path,
        examples: &Path,
        out_dir: &Path,
        example: &Example,
        tool: &str,
        command: impl Fn(&Path, &Path) -> Command,
    ) -> PathBuf {
        let dir = examples.join(example.dir);
        let wasm = out_dir.join(example.wasm);
        let stamp = out_dir.join(format!("{}.fingerprint", example.wasm));
        let fingerprint = fingerprint(root, &dir, example, tool);
        let fresh =
            wasm.is_file() && fs::read_to_string(&stamp).is_ok_and(|old| old == fingerprint);
        if fresh {
            return wasm;
        }

        let tmp = out_dir.join(format!("{}.{}.tmp", example.wasm, std::process::id()));
        let mut cmd = command(&dir, &tmp);
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            // Cargo reads `cargo:` directives from this script's stdout.
            .stdout(Stdio::from(std::io::stderr()));
        let started = std::time::Instant::now();
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?} to build {}: {e}", example.dir));
        if !status.success() || !tmp.is_file() {
            let _ = fs::remove_file(&tmp);
            panic!(
                "\n\nbuilding the example policy examples/policies/{} failed ({status}): {cmd:?}; \
                 its output is above.\nIf it says a module or package is missing: {}\n\n",
                example.dir, example.install
            );
        }
        fs::rename(&tmp, &wasm)
            .unwrap_or_else(|e| panic!("cannot move {} to {}: {e}", tmp.display(), wasm.display()));
        fs::write(&stamp, &fingerprint)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", stamp.display()));
        eprintln!(
            "built {} with {tool} in {:.1} s",
            wasm.display(),
            started.elapsed().as_secs_f64()
        );
        wasm
    }

    /// What a component is built from, hashed (FNV-1a, 64 bits): the tool's
    /// version, the example's sources and every file of the WIT package.
    fn fingerprint(root: &Path, dir: &Path, example: &Example, tool: &str) -> String {
        let mut files: Vec<PathBuf> = example.sources.iter().map(|s| dir.join(s)).collect();
        collect_files(&root.join("wit"), &mut files);
        let mut hash = Fnv::default();
        hash.write(tool.as_bytes());
        for file in &files {
            let bytes =
                fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            hash.write(relative(root, file).to_string_lossy().as_bytes());
            hash.write(&(bytes.len() as u64).to_le_bytes());
            hash.write(&bytes);
        }
        format!("{tool}\n{:016x}\n", hash.0)
    }

    fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                collect_files(&path, files);
            } else {
                files.push(path);
            }
        }
    }

    fn relative<'p>(root: &Path, path: &'p Path) -> &'p Path {
        path.strip_prefix(root).unwrap_or(path)
    }

    struct Fnv(u64);

    impl Default for Fnv {
        fn default() -> Self {
            Fnv(0xcbf2_9ce4_8422_2325)
        }
    }

    impl Fnv {
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 ^= u64::from(b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
}

/// The example policy written in Rust, `examples/policies/github-actions`,
/// handed to the tests as `GANTRY_EXAMPLE_GITHUB_ACTIONS_WASM`. It is its own
/// cargo workspace with its own `Cargo.lock` (an example is meant to be
/// copied out of the repo), so it is built by a nested cargo of its own, like
/// the guests of `plugins/` (release, `--locked`, the outer build's settings
/// scrubbed), into `<root>/target/examples/github-actions`. Cargo's
/// fingerprints keep it cached: when nothing changed the nested build is a
/// no-op, and this script reruns only when the crate or the WIT changed.
mod example_rust {
    use super::guest_build;
    use std::path::Path;
    use std::process::{Command, Stdio};

    pub fn build(root: &Path) {
        let dir = root
            .join("examples")
            .join("policies")
            .join("github-actions");
        for source in ["Cargo.toml", "Cargo.lock", "src"] {
            guest_build::rerun_if_changed(&dir.join(source));
        }
        let target_dir = root.join("target").join("examples").join("github-actions");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&dir)
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                guest_build::TARGET,
            ])
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"));
        guest_build::scrub_outer_build_env(&mut cmd);
        cmd.env("CARGO_TARGET_DIR", &target_dir)
            .stdin(Stdio::null())
            // Cargo reads `cargo:` directives from this script's stdout.
            .stdout(Stdio::from(std::io::stderr()));
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?} to build the Rust example policy: {e}"));
        if !status.success() {
            panic!(
                "building the example policy examples/policies/github-actions failed ({status}); \
                 cargo's output is above. If it says the lock file needs to be updated, run \
                 `cargo update --manifest-path examples/policies/github-actions/Cargo.toml --workspace` \
                 and commit its Cargo.lock."
            );
        }
        let wasm = target_dir
            .join(guest_build::TARGET)
            .join("release")
            .join("github_actions_policy.wasm");
        if !wasm.is_file() {
            panic!(
                "cargo built examples/policies/github-actions but {} is missing",
                wasm.display()
            );
        }
        println!(
            "cargo:rustc-env=GANTRY_EXAMPLE_GITHUB_ACTIONS_WASM={}",
            wasm.display()
        );
    }
}
