//! A real OpenID provider for the black-box tests: npm `oidc-provider`
//! (`examples/e2e/provider/provider.mjs`, run by node) issuing
//! client_credentials JWT access tokens shaped like Kubernetes
//! service-account tokens, with keys generated at start.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::{LIVENESS, repo_root};

/// The audience tokens are requested for by default (the resource
/// indicator the provider puts in `aud`).
pub const AUDIENCE: &str = "https://gantry.example";
/// The provider's access-token lifetime.
pub const TTL: u64 = 900;

pub fn secret_of(client: &str) -> String {
    format!("secret-of-{}", client.rsplit(':').next().unwrap_or(client))
}

/// `examples/e2e/provider/provider.mjs` under node; killed on drop.
pub struct Provider {
    child: Option<Child>,
    pub issuer: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Provider {
    pub fn start(clients: &[&str]) -> Provider {
        let dir = repo_root().join("examples/e2e/provider");
        let script = dir.join("provider.mjs");
        assert!(script.is_file(), "{} is missing", script.display());
        assert!(
            dir.join("node_modules/oidc-provider/package.json")
                .is_file(),
            "the e2e OpenID provider's npm packages are not installed: run \
             `npm ci --prefix examples/e2e/provider` (.ci/run does this)"
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let list: Vec<serde_json::Value> = clients
            .iter()
            .map(|c| serde_json::json!({"client_id": c, "client_secret": secret_of(c)}))
            .collect();
        let clients_file = tmp.path().join("clients.json");
        fs::write(&clients_file, serde_json::to_vec(&list).expect("json")).expect("clients file");
        let log = tmp.path().join("provider.log");
        let mut child = match Command::new("node")
            .arg(&script)
            .args(["--port", "0", "--ttl", &TTL.to_string(), "--clients"])
            .arg(&clients_file)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("provider log"))
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "node is not installed; the e2e test runs the OpenID provider with it \
                 (Node 20+, then `npm ci --prefix examples/e2e/provider`)"
            ),
            Err(e) => panic!("cannot run node: {e}"),
        };
        // Its first stdout line is `ready <issuer>`; read it off-thread so a
        // hung provider fails the test instead of blocking it.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines {} // keep draining
        });
        let first = rx.recv_timeout(LIVENESS);
        let mut p = Provider {
            child: Some(child),
            issuer: String::new(),
            log,
            _dir: tmp,
        };
        match first {
            Ok(Some(line)) if line.starts_with("ready http://") => {
                p.issuer = line["ready ".len()..].trim().to_string();
                p
            }
            other => panic!(
                "the OpenID provider did not start ({other:?}); did `npm ci --prefix \
                 examples/e2e/provider` run?\n{}",
                p.log()
            ),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client_credentials access token for `client`, for `resource`.
    pub fn token_for(&self, client: &str, resource: &str) -> String {
        let r = super::http()
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", &secret_of(client)),
                ("resource", resource),
            ])
            .send()
            .expect("token request");
        let status = r.status();
        let body: serde_json::Value = r.json().expect("token response JSON");
        assert_eq!(status, 200, "token for {client}: {body}\n{}", self.log());
        assert_eq!(body["token_type"], "Bearer");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub fn token(&self, client: &str) -> String {
        self.token_for(client, AUDIENCE)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- provider log ----\n{}\n---- end of provider log ----",
                self.log()
            );
        }
    }
}
