//! Running a demo script of `examples/` as a test: it must exit 0 within
//! its time limit, number its steps 1..N with every one PASS, print `all N
//! steps passed`, and show each required step.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `bash examples/<script>` from the repository root against this
/// build's `gantry` (`GANTRY_BIN`), with `env` set and `unset` removed,
/// and checks its report; prints the report (`--nocapture` shows it).
pub fn run(
    script: &str,
    env: &[(&str, &str)],
    unset: &[&str],
    required: &[&str],
    hung_after: Duration,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("examples").join(script))
        .current_dir(root)
        .env("GANTRY_BIN", env!("CARGO_BIN_EXE_gantry"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung run can be stopped whole.
        .process_group(0);
    for name in unset {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("run bash examples/{script}: {e}"));

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
        if started.elapsed() > hung_after && !hung {
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
        "the demo ran longer than {hung_after:?} and was stopped\n{report}"
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
    for required in required {
        assert!(
            steps.iter().any(|(_, _, d)| d.contains(required)),
            "no step `{required}` in the demo\n{report}"
        );
    }
}
