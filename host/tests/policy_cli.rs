//! `gantry policy test`, run as the real binary the way a policy author runs
//! it: exit codes 0 (ok), 1 (expectation failed), 2 (usage or load error).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const K8S_CLAIMS: &str = r#"{
  "aud": ["gantry"],
  "exp": 1900000000,
  "iss": "https://kubernetes.default.svc.cluster.local",
  "sub": "system:serviceaccount:team-a:pusher",
  "kubernetes.io": {
    "namespace": "team-a",
    "serviceaccount": {"name": "pusher", "uid": "3d4e"}
  }
}"#;

const SETTINGS_TOML: &str = r#"
username = "claims.sub"
groups = "['ns:' + vars.ns]"

[[variables]]
name = "ns"
expression = "claims['kubernetes.io'].namespace"

[[validations]]
expression = "vars.ns == 'team-a'"
message = "only team-a may push"
"#;

const SETTINGS_JSON: &str = r#"{
  "variables": [{"name": "ns", "expression": "claims['kubernetes.io'].namespace"}],
  "validations": [{"expression": "vars.ns == 'team-a'", "message": "only team-a may push"}],
  "username": "claims.sub",
  "groups": "['ns:' + vars.ns]"
}"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let fixture = Fixture {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        };
        fixture.write("claims.json", K8S_CLAIMS);
        fixture.write("settings.toml", SETTINGS_TOML);
        fixture.write("settings.json", SETTINGS_JSON);
        fixture
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, settings: &str, claims: &str, extra: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
        cmd.args(["policy", "test", "--module", "builtin:cel", "--settings"])
            .arg(self.path(settings))
            .arg("--claims")
            .arg(self.path(claims))
            // Each test compiles the CEL component once; share the artifacts.
            .arg("--cache-dir")
            .arg(shared_cache())
            // A debug build on two busy cores: room beyond the 100 ms default.
            .args(["--timeout-ms", "5000"])
            .args(extra);
        cmd.output()
            .unwrap_or_else(|e| panic!("running gantry: {e}"))
    }
}

fn shared_cache() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn allow_prints_the_identity_with_toml_settings() {
    let f = Fixture::new();
    let out = f.run("settings.toml", "claims.json", &["--expect", "allow"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("decision: allow"), "{stdout}");
    assert!(
        stdout.contains("username: system:serviceaccount:team-a:pusher"),
        "{stdout}"
    );
    assert!(stdout.contains("groups:   [ns:team-a]"), "{stdout}");
}

#[test]
fn json_settings_give_the_same_answer() {
    let f = Fixture::new();
    let out = f.run(
        "settings.json",
        "claims.json",
        &[
            "--username",
            "system:serviceaccount:team-a:pusher",
            "--groups",
            "ns:team-a",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
}

#[test]
fn deny_prints_the_reason() {
    let f = Fixture::new();
    f.write(
        "other.json",
        &K8S_CLAIMS.replace("\"team-a\"", "\"team-b\""),
    );
    let out = f.run("settings.toml", "other.json", &["--expect", "deny"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("decision: deny"), "{stdout}");
    assert!(stdout.contains("only team-a may push"), "{stdout}");
}

#[test]
fn expectation_mismatch_exits_1() {
    let f = Fixture::new();
    let out = f.run("settings.toml", "claims.json", &["--expect", "deny"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("expected deny, got allow"), "{stderr}");

    let out = f.run(
        "settings.toml",
        "claims.json",
        &["--username", "someone-else"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("someone-else"), "{stderr}");
}

#[test]
fn unparsable_settings_exit_2_naming_the_file() {
    let f = Fixture::new();
    f.write("broken.toml", "[[validations]\nexpression = ");
    let out = f.run("broken.toml", "claims.json", &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("broken.toml") && stderr.contains("invalid TOML"),
        "{stderr}"
    );
}

#[test]
fn unreadable_settings_exit_2_naming_the_file() {
    let f = Fixture::new();
    let out = f.run("missing.toml", "claims.json", &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("missing.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn settings_the_policy_refuses_exit_2_with_its_message() {
    let f = Fixture::new();
    f.write("bad-cel.toml", "username = \"claims.sub +\"\n");
    let out = f.run("bad-cel.toml", "claims.json", &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("refused its settings") && stderr.contains("username"),
        "{stderr}"
    );
}

#[test]
fn unknown_builtin_and_bad_module_files_exit_2() {
    let f = Fixture::new();
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["policy", "test", "--module", "builtin:nope", "--claims"])
        .arg(f.path("claims.json"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("builtin:nope"), "{stderr}");

    let garbage = f.write("garbage.wasm", "not wasm at all");
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["policy", "test", "--module"])
        .arg(&garbage)
        .arg("--claims")
        .arg(f.path("claims.json"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a WebAssembly binary"), "{stderr}");
}
