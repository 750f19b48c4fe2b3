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

// --- Fixtures, --explain, --config/--issuer: golden output ------------------
//
// The inputs live in tests/golden/ beside the expected outputs (`*.txt`, the
// exact stdout). The binary runs there with relative paths, so the output
// holds no temporary directory. `GANTRY_BLESS=1 cargo test -p gantry --test
// policy_cli` rewrites the outputs; review them with `git diff`.

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Runs `gantry policy test ARGS` in tests/golden/.
fn policy_test(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .current_dir(golden_dir())
        .args(["policy", "test"])
        .args(args)
        .arg("--cache-dir")
        .arg(shared_cache())
        .args(["--timeout-ms", "5000"])
        .output()
        .unwrap_or_else(|e| panic!("running gantry: {e}"))
}

/// Checks `actual` against tests/golden/`name`, or rewrites it when
/// `GANTRY_BLESS` is set. A mismatch fails with a line diff.
fn assert_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("GANTRY_BLESS").is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\n(create it with GANTRY_BLESS=1 cargo test -p gantry --test policy_cli)\n\
             actual output:\n{actual}",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "output differs from {} (- expected, + actual); if the change is intended, \
             rerun with GANTRY_BLESS=1 and review the diff:\n{}",
            path.display(),
            line_diff(&expected, actual)
        );
    }
}

/// A unified-style line diff (longest common subsequence): enough for
/// outputs of a few hundred lines.
fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the final newline differs)\n");
    }
    out
}

#[test]
fn line_diff_marks_changes() {
    assert_eq!(line_diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
    assert_eq!(line_diff("a\n", "a\nb\n"), "  a\n+ b\n");
}

#[test]
fn fixtures_all_passing_print_the_table_and_exit_0() {
    let out = policy_test(&[
        "--module",
        "builtin:cel",
        "--settings",
        "settings.toml",
        "--fixtures",
        "cases.toml",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.ends_with("5 passed, 0 failed\n"), "{stdout}");
    assert_golden("fixtures-pass.txt", &stdout);
}

#[test]
fn a_failing_fixture_exits_1_showing_what_differed() {
    let out = policy_test(&[
        "--module",
        "builtin:cel",
        "--settings",
        "settings.toml",
        "--fixtures",
        "failing.json",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.ends_with("1 passed, 4 failed\n"), "{stdout}");
    assert!(
        stdout.contains(r#"username: expected "team-b:pusher", got "team-a:pusher""#),
        "{stdout}"
    );
    assert_golden("fixtures-fail.txt", &stdout);
}

#[test]
fn explain_an_allow() {
    let out = policy_test(&[
        "--module",
        "builtin:cel",
        "--settings",
        "settings.toml",
        "--claims",
        "allow.json",
        "--explain",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_golden("explain-allow.txt", &stdout);
}

#[test]
fn explain_a_deny_marks_the_failed_validation() {
    let out = policy_test(&[
        "--module",
        "builtin:cel",
        "--settings",
        "settings.toml",
        "--claims",
        "deny.json",
        "--explain",
        "--expect",
        "deny",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(r#"= false   <- denies: "namespace is not allowed""#),
        "{stdout}"
    );
    assert_golden("explain-deny.txt", &stdout);
}

#[test]
fn explain_every_fixture_case() {
    let out = policy_test(&[
        "--module",
        "builtin:cel",
        "--settings",
        "settings.toml",
        "--fixtures",
        "cases.toml",
        "--explain",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_golden("explain-fixtures.txt", &stdout);
}

#[test]
fn issuer_from_config_shows_the_final_prefixed_names() {
    let out = policy_test(&[
        "--config",
        "gantry.toml",
        "--issuer",
        "https://oidc.prod.example.com",
        "--claims",
        "allow.json",
        "--username",
        "prod:team-a:pusher",
        "--groups",
        "prod:ns:team-a",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("username: prod:team-a:pusher\n"),
        "{stdout}"
    );
    assert_golden("issuer-claims.txt", &stdout);

    // The default prefix is the issuer and a slash.
    let out = policy_test(&[
        "--config",
        "gantry.toml",
        "--issuer",
        "https://oidc.staging.example.com",
        "--claims",
        "allow.json",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("username: https://oidc.staging.example.com/team-a:pusher\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("groups:   [https://oidc.staging.example.com/ns:team-a]\n"),
        "{stdout}"
    );
}

#[test]
fn issuer_fixtures_compare_final_names_and_explain() {
    let out = policy_test(&[
        "--config",
        "gantry.toml",
        "--issuer",
        "https://oidc.prod.example.com",
        "--fixtures",
        "issuer-cases.toml",
        "--explain",
    ]);
    let (stdout, stderr) = text(&out);
    // The second case expects the policy's own, unprefixed name: it fails.
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.ends_with("2 passed, 1 failed\n"), "{stdout}");
    assert_golden("issuer-fixtures.txt", &stdout);
}

#[test]
fn unknown_issuer_lists_the_configured_ones() {
    let out = policy_test(&[
        "--config",
        "gantry.toml",
        "--issuer",
        "https://oidc.dev.example.com",
        "--claims",
        "allow.json",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("--issuer https://oidc.dev.example.com")
            && stderr.contains("gantry.toml")
            && stderr.contains("https://oidc.prod.example.com, https://oidc.staging.example.com"),
        "{stderr}"
    );
}

#[test]
fn a_config_that_does_not_load_exits_2_with_its_problems() {
    let f = Fixture::new();
    f.write(
        "bad-gantry.toml",
        "[auth]\n[[auth.oidc]]\nissuer = \"http://example.com\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "policy",
            "test",
            "--issuer",
            "http://example.com",
            "--config",
        ])
        .arg(f.path("bad-gantry.toml"))
        .arg("--claims")
        .arg(f.path("claims.json"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad-gantry.toml") && stderr.contains("auth.oidc[0].issuer"),
        "{stderr}"
    );
}

#[test]
fn bad_fixture_files_exit_2_naming_the_file_and_the_problem() {
    let f = Fixture::new();
    let cases = [
        (
            "syntax.toml",
            "[[case]]\nname = \"a\"\nexpect = \n",
            &["syntax.toml", "invalid TOML", "line 3"][..],
        ),
        (
            "syntax.json",
            "{\"case\": [\n  {\"name\": \"a\",}\n]}",
            &["syntax.json", "invalid JSON", "line 2 column"][..],
        ),
        (
            "no-expect.toml",
            "[[case]]\nname = \"first\"\nexpect = \"allow\"\nclaims = {}\n\n[[case]]\nname = \"second\"\nclaims = {}\n",
            &[
                "no-expect.toml",
                "case #2 (\"second\")",
                "missing field `expect`",
            ][..],
        ),
        (
            "typo.json",
            "[{\"name\": \"a\", \"claims\": {}, \"expect\": \"allow\", \"usernme\": \"x\"}]",
            &["typo.json", "case #1 (\"a\")", "unknown field `usernme`"][..],
        ),
        (
            "empty.toml",
            "# nothing yet\n",
            &["empty.toml", "no cases"][..],
        ),
    ];
    for (name, contents, wanted) in cases {
        f.write(name, contents);
        let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["policy", "test", "--module", "builtin:cel", "--fixtures"])
            .arg(f.path(name))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {stdout}{stderr}");
        for w in wanted {
            assert!(stderr.contains(w), "{name}: wanted {w:?} in {stderr}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["policy", "test", "--module", "builtin:cel", "--fixtures"])
        .arg(f.path("missing.toml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("missing.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--module", "builtin:cel"][..],
        &["--claims", "c.json"][..],
        &["--config", "g.toml", "--claims", "c.json"][..],
        &[
            "--module",
            "builtin:cel",
            "--fixtures",
            "f.toml",
            "--expect",
            "allow",
        ][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["policy", "test"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    }
}

#[test]
fn help_mentions_the_authoring_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["policy", "test", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (stdout, _) = text(&out);
    for flag in [
        "--fixtures",
        "--explain",
        "--config",
        "--issuer",
        "reason_contains",
        "--verbose",
    ] {
        assert!(stdout.contains(flag), "{flag} not in:\n{stdout}");
    }
}

/// `gantry config check` prints lints after "ok"; `--deny-warnings` makes a
/// warning fail the check; `allow_lints` with a reason silences one.
#[test]
fn config_check_lints_and_deny_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gantry.toml");
    let config = |extra: &str| {
        format!(
            r#"
[auth]
[[auth.oidc]]
issuer = "https://k8s.example.com"
audiences = ["sts.amazonaws.com"]
max_token_lifetime_seconds = 3600
username_prefix = "k8s:"
groups_prefix = "k8s:"
{extra}
"#
        )
    };
    let check = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["config", "check"])
            .arg(&file)
            .args(args)
            .output()
            .expect("gantry config check")
    };
    std::fs::write(&file, config("")).expect("write");
    let out = check(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning G102: auth.oidc[0].audiences (https://k8s.example.com)"),
        "{stdout}"
    );
    assert!(stdout.contains("fix: "), "{stdout}");
    let out = check(&["--deny-warnings"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    std::fs::write(
        &file,
        config(r#"allow_lints = [{ id = "G102", reason = "one trust boundary with our AWS federation" }]"#),
    )
    .expect("write");
    let out = check(&["--deny-warnings"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("G102"), "{stdout}");

    // An allow without a reason, or of an unknown id, is a config error.
    std::fs::write(
        &file,
        config(r#"allow_lints = [{ id = "G999", reason = "" }]"#),
    )
    .expect("write");
    let out = check(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("auth.oidc[0].allow_lints[0].id"),
        "{stderr}"
    );
    assert!(
        stderr.contains("auth.oidc[0].allow_lints[0].reason"),
        "{stderr}"
    );
}

/// An artifact directory as `oras pull` leaves it (`config.json`, the
/// config blob; `fixtures.toml`, the bundled cases) for `builtin:cel` with
/// the golden settings, bundling `cases`.
fn artifact_dir(cases: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings: toml::Table = std::fs::read_to_string(golden_dir().join("settings.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let config = serde_json::json!({ "module": "builtin:cel", "settings": settings });
    std::fs::write(dir.path().join("config.json"), config.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("fixtures.toml"), cases).unwrap_or_else(|e| panic!("{e}"));
    dir
}

#[test]
fn an_artifact_runs_every_bundled_case() {
    // Regression: only the first bundled case used to be checked, so an
    // artifact whose later cases fail passed.
    let cases =
        std::fs::read_to_string(golden_dir().join("cases.toml")).unwrap_or_else(|e| panic!("{e}"));
    let dir = artifact_dir(&cases);
    let out = policy_test(&["--artifact", dir.path().to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.ends_with("5 passed, 0 failed\n"), "{stdout}");

    // The last case now expects a reason it cannot get: it alone fails.
    let flipped = cases.replace(
        "reason_contains = \"variables[0].expression\"",
        "reason_contains = \"no such reason\"",
    );
    assert_ne!(flipped, cases);
    let dir = artifact_dir(&flipped);
    let out = policy_test(&["--artifact", dir.path().to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.ends_with("4 passed, 1 failed\n"), "{stdout}");
}
