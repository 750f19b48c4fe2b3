//! The end-to-end demo, `examples/e2e/run.sh`, as part of the test run: it
//! runs against this build's `gantry` (`GANTRY_BIN`), must exit 0, and every
//! step it numbers must have printed PASS, the matrix's steps among them.
//!
//! The script needs node with the provider's `node_modules`, skopeo, podman,
//! curl, python3 and componentize-py (`.ci/run` and `scripts/test.sh`
//! install them); without them its first step fails and says what is
//! missing. `cargo test -p gantry --test e2e_demo -- --nocapture` shows its
//! report.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the whole demo may take before the test calls it hung: it
/// builds the Python policy (~20 s) and a debug build compiles it twice
/// (`config check`, then `serve`).
const HUNG: Duration = Duration::from_secs(20 * 60);

/// Steps the demo must show; each a substring of one step's description.
const REQUIRED: &[&str] = &[
    "gantry config check",
    "push without a token: 401",
    "push with cluster 1's team-a:pusher token",
    "another audience: 401",
    "team-a:reader authenticates but gets 403 on push",
    "team-a:reader's _catalog is empty",
    "raw bearer (--src-registry-token): blobs identical",
    "token endpoint (--src-creds): blobs identical",
    "podman login",
    "podman push",
    "podman pull",
    "team-b:builder pushes team-b/app via the Python policy",
    "team-b:builder gets 403 on team-a/app",
    "audit log",
];

#[test]
fn the_end_to_end_demo_passes_every_step() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent");
    let script = root.join("examples/e2e/run.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .current_dir(root)
        .env("GANTRY_BIN", env!("CARGO_BIN_EXE_gantry"))
        .env_remove("PYTHON_POLICY_WASM")
        .env_remove("GANTRY_E2E_KEEP")
        // The Python policy's README: a debug build of gantry takes 30-80 ms
        // to create an instance, so raise `timeout_ms` there (the script's
        // default is the production 100 ms).
        .env(
            "GANTRY_E2E_POLICY_TIMEOUT_MS",
            if cfg!(debug_assertions) {
                "1000"
            } else {
                "100"
            },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung run can be stopped whole.
        .process_group(0)
        .spawn()
        .expect("run bash examples/e2e/run.sh");

    let mut stdout_pipe = child.stdout.take().expect("piped stdout");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });

    let started = Instant::now();
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for run.sh") {
            break status;
        }
        if started.elapsed() > HUNG && !hung {
            // SIGTERM lets the script's trap stop its servers and remove
            // its files; SIGKILL follows if that does not end it.
            hung = true;
            let group = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
            std::thread::sleep(Duration::from_secs(10));
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    println!("{stdout}");
    let report = format!("---- run.sh stdout ----\n{stdout}\n---- run.sh stderr ----\n{stderr}");

    assert!(
        !hung,
        "the demo ran longer than {HUNG:?} and was stopped\n{report}"
    );
    assert!(status.success(), "the demo failed ({status})\n{report}");

    // `PASS  12  description` / `FAIL  12  description`, numbered from 1.
    let mut steps = Vec::new();
    for line in stdout.lines() {
        let Some((verdict, rest)) = line.split_once(' ') else {
            continue;
        };
        if verdict != "PASS" && verdict != "FAIL" {
            continue;
        }
        let rest = rest.trim_start();
        let (number, description) = rest.split_once(' ').unwrap_or((rest, ""));
        let number: usize = number
            .parse()
            .unwrap_or_else(|_| panic!("a step line without a number: {line}\n{report}"));
        steps.push((verdict, number, description.trim().to_string()));
    }
    assert!(!steps.is_empty(), "the demo printed no step\n{report}");
    for (i, (verdict, number, description)) in steps.iter().enumerate() {
        assert_eq!(*number, i + 1, "steps are not numbered 1..N\n{report}");
        assert_eq!(
            *verdict, "PASS",
            "step {number} ({description}) failed\n{report}"
        );
    }
    let summary = format!("all {} steps passed", steps.len());
    assert!(
        stdout.lines().any(|l| l.trim() == summary),
        "no `{summary}` line\n{report}"
    );
    for required in REQUIRED {
        assert!(
            steps.iter().any(|(_, _, d)| d.contains(required)),
            "no step `{required}` in the demo\n{report}"
        );
    }
}
