//! `gantry serve --dev`, as a new user runs it: the printed token logs
//! skopeo in for a push and a pull, `gantry dev token` mints another that
//! works too, a token from elsewhere does not, and the start says loudly
//! what dev mode is.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Layout, Noise, gantry_bin, skopeo, skopeo_raw};

struct Dev(std::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn the_printed_token_pushes_and_pulls_with_skopeo() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let registry = format!("127.0.0.1:{port}");
    let mut child = Command::new(gantry_bin())
        .args(["serve", "--dev", "--listen", &registry])
        .current_dir(cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gantry serve --dev");
    let stdout = child.stdout.take().expect("stdout");
    let dev = Dev(child);
    // The banner: a warning, the token on its own line, the login lines.
    let mut banner = String::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("banner line");
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("More tokens:") {
            break;
        }
    }
    assert!(banner.contains("GANTRY DEV MODE"), "{banner}");
    assert!(banner.contains("never for real use"), "{banner}");
    let token = banner
        .lines()
        .find(|l| l.starts_with("eyJ") && l.split('.').count() == 3)
        .unwrap_or_else(|| panic!("no token in the banner:\n{banner}"))
        .to_owned();
    for client in ["docker login", "skopeo login", "oras login"] {
        assert!(
            banner
                .lines()
                .any(|l| l.contains(client) && l.contains(&token) && l.contains(&registry)),
            "no {client} line:\n{banner}"
        );
    }

    // The issuer's keys load in the background: wait until the token works.
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = reqwest::blocking::Client::new();
    loop {
        let status = client
            .get(format!("http://{registry}/v2/"))
            .basic_auth("dev", Some(&token))
            .send()
            .map(|r| r.status().as_u16());
        if matches!(status, Ok(200)) {
            break;
        }
        assert!(Instant::now() < deadline, "token not accepted: {status:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Anonymous callers get nothing.
    let anon = client
        .get(format!("http://{registry}/v2/"))
        .send()
        .expect("anonymous");
    assert_eq!(anon.status(), 401);

    // Push and pull with skopeo, the token as the password.
    let src = cwd.path().join("src");
    let layout = Layout::create(&src);
    let image = layout.add_image(&mut Noise::new(7), "amd64", 2, 64 * 1024);
    layout.tag(&image.manifest, "v1");
    let creds = format!("dev:{token}");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{registry}/demo/app:v1"),
    ]);
    let out = cwd.path().join("out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{registry}/demo/app:v1"),
        &format!("oci:{}:v1", out.display()),
    ]);
    support::assert_same_blobs(&layout, &Layout { dir: out.clone() });

    // `gantry dev token` (run where `serve --dev` runs) mints another.
    let minted = Command::new(gantry_bin())
        .args(["dev", "token", "--sub", "ci-job", "--claim", "run=42"])
        .current_dir(cwd.path())
        .output()
        .expect("gantry dev token");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let second = String::from_utf8(minted.stdout).expect("utf-8");
    let second = second.trim();
    assert_ne!(second, token);
    let r = skopeo_raw(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &format!("ci:{second}"),
        &format!("docker://{registry}/demo/app:v1"),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    // A token signed by anything else is refused.
    let last = if token.ends_with('A') { "B" } else { "A" };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    let r = skopeo_raw(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &format!("dev:{forged}"),
        &format!("docker://{registry}/demo/app:v1"),
    ]);
    assert!(!r.status.success(), "a forged token was accepted");
    drop(dev);
}
