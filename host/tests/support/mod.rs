//! Black-box test support: the real `gantry` binary on a free loopback
//! port, a small HTTP toolkit (reqwest for ordinary requests, raw sockets
//! for the malformed ones), skopeo, OCI image layouts built at test time, and
//! test certificates from the `openssl` CLI.
//!
//! Waits are for liveness only (generous deadlines); no test asserts on time.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sha2::Digest as _;

pub mod demo;
pub mod provider;

/// A blocking HTTP client for tests: no proxy, liveness-bounded.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(LIVENESS)
        .build()
        .expect("client")
}

/// A test-only policy guest of `plugins/testing/NAME`, as the
/// `gantry-tests` crate's build script builds it (`cargo test --workspace`
/// builds that crate before any test runs).
pub fn test_guest(name: &str) -> PathBuf {
    let path = repo_root()
        .join("target/plugins/wasm32-wasip2/release")
        .join(format!("test_{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: the gantry-tests crate's build script builds the test guests \
         (run `cargo test --workspace`, or `cargo build -p gantry-tests --tests`)",
        path.display()
    );
    path
}

/// Whether this test binary runs its servers on the s3 backend: a test file
/// named `*_s3.rs` includes a suite written for the filesystem (`#[path]`)
/// and runs every one of its tests again against a real S3 API (moto,
/// [`Moto`]). Everything else here works the same on both.
pub const ON_S3: bool = env_ends_with(env!("CARGO_CRATE_NAME"), "_s3");

const fn env_ends_with(name: &str, suffix: &str) -> bool {
    let (n, s) = (name.as_bytes(), suffix.as_bytes());
    if n.len() < s.len() {
        return false;
    }
    let mut i = 0;
    while i < s.len() {
        if n[n.len() - s.len() + i] != s[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// How long anything may take before a test calls it hung.
pub const LIVENESS: Duration = Duration::from_secs(120);

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Where the binary under test is: this build's, or the one named by
/// `GANTRY_UNDER_TEST` (to run a regression test against an older build
/// and see it fail).
pub fn gantry_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("GANTRY_UNDER_TEST").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gantry").into())
    })
}

/// The repository root (for `config/` and `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// TLS material for a server: PEM certificate chain and key, and the CA
/// that signed them.
#[derive(Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// How to start a `gantry serve` beyond its storage root.
#[derive(Default)]
pub struct Launch<'a> {
    /// HTTPS with this material.
    pub tls: Option<Tls>,
    /// Sections appended to the config (`[auth]`, `[access_control]`…) given
    /// the port; the file must then pass `gantry config check`.
    pub sections: Option<&'a dyn Fn(u16) -> String>,
    /// More `[server]` keys, as TOML lines.
    pub server_keys: &'a str,
    /// More `[storage]` keys, as TOML lines.
    pub storage_keys: &'a str,
    /// The process's open-file limit (`ulimit -n`), as an operator's shell
    /// would set it.
    pub fd_limit: Option<u64>,
    /// On s3: this bucket at this endpoint instead of the storage root's
    /// own bucket on the shared moto (replicas share one).
    pub bucket: Option<(&'a str, &'a str)>,
    /// On s3: more `[storage.s3]` keys, as TOML lines.
    pub s3_keys: &'a str,
}

/// A running `gantry serve`; killed (SIGKILL) on drop if still running.
pub struct Gantry {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub root: PathBuf,
    tls: Option<Tls>,
    log: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gantry {
    /// Starts plain HTTP on `root`.
    pub fn start(root: &Path) -> Gantry {
        Gantry::launch(root, Launch::default())
    }

    /// Starts HTTPS with `tls`.
    pub fn start_tls(root: &Path, tls: &Tls) -> Gantry {
        Gantry::launch(
            root,
            Launch {
                tls: Some(tls.clone()),
                ..Launch::default()
            },
        )
    }

    /// Starts plain HTTP on `root` with `sections(port)` appended to the
    /// config (`[auth]`, `[access_control]`…), once `gantry config check`
    /// has accepted the file.
    pub fn start_configured(root: &Path, sections: &dyn Fn(u16) -> String) -> Gantry {
        Gantry::launch(
            root,
            Launch {
                sections: Some(sections),
                ..Launch::default()
            },
        )
    }

    /// Starts with everything [`Launch`] can say.
    pub fn launch(root: &Path, options: Launch<'_>) -> Gantry {
        let Launch {
            tls,
            sections,
            server_keys,
            storage_keys,
            fd_limit,
            bucket,
            s3_keys,
        } = options;
        // A port found free can be taken before gantry binds it: retry.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("gantry.toml");
            let tls_lines = match &tls {
                Some(t) => format!(
                    "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                    t.cert.to_str().expect("utf-8"),
                    t.key.to_str().expect("utf-8")
                ),
                None => String::new(),
            };
            let s3_lines = if let Some((endpoint, bucket)) = bucket {
                Moto::storage_lines_at(endpoint, bucket) + s3_keys
            } else if ON_S3 {
                Moto::shared().storage_lines(&Moto::bucket_for(root)) + s3_keys
            } else {
                String::new()
            };
            let mut text = format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n{tls_lines}{server_keys}\n[storage]\nroot = {:?}\n{storage_keys}\n{s3_lines}\n[log]\nlevel = \"debug\"\n",
                root.to_str().expect("utf-8 root")
            );
            if let Some(sections) = sections {
                text.push_str(&sections(port));
            }
            fs::write(&config, text).expect("write config");
            if sections.is_some() || !server_keys.is_empty() || !storage_keys.is_empty() || ON_S3 {
                let check = Command::new(gantry_bin())
                    .args(["config", "check"])
                    .arg(&config)
                    .output()
                    .expect("gantry config check");
                assert!(
                    check.status.success(),
                    "gantry config check refused the config:\n{}{}",
                    String::from_utf8_lossy(&check.stdout),
                    String::from_utf8_lossy(&check.stderr)
                );
            }
            let log = dir.path().join("gantry.log");
            let log_file = fs::File::create(&log).expect("log file");
            let mut command = match fd_limit {
                None => Command::new(gantry_bin()),
                Some(n) => {
                    let mut sh = Command::new("sh");
                    sh.arg("-c")
                        .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                        .arg(gantry_bin());
                    sh
                }
            };
            let child = command
                .args(["serve", "--config"])
                .arg(&config)
                .env_remove("RUST_LOG")
                .envs(Moto::credentials_env())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("dup log"))
                .stderr(log_file)
                .spawn()
                .expect("spawn gantry");
            let mut g = Gantry {
                child: Some(child),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                root: root.to_path_buf(),
                tls: tls.clone(),
                log,
                config: config.clone(),
                _dir: dir,
            };
            if g.wait_ready() {
                return g;
            }
            last_log = g.log();
            if !last_log.contains("binding") {
                panic!("gantry did not start:\n{last_log}");
            }
        }
        panic!("gantry could not bind a free port:\n{last_log}");
    }

    /// Polls `/healthz` until it answers 200; false if the process exited.
    fn wait_ready(&mut self) -> bool {
        let client = self.client_with_timeout(Duration::from_secs(5));
        let deadline = Instant::now() + LIVENESS;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if let Ok(r) = client.get(self.url("/healthz")).send()
                && r.status() == 200
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "gantry never became healthy:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `127.0.0.1:<port>`, as skopeo wants it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.addr)
    }

    pub fn client(&self) -> reqwest::blocking::Client {
        self.client_with_timeout(LIVENESS)
    }

    fn client_with_timeout(&self, timeout: Duration) -> reqwest::blocking::Client {
        let mut b = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(timeout);
        if let Some(t) = &self.tls {
            let pem = fs::read(&t.ca).expect("read CA");
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
        }
        b.build().expect("client")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + LIVENESS;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the log never said {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The configuration file it runs with (rewrite it to test reloads).
    pub fn config_path(&self) -> PathBuf {
        self.config.clone()
    }

    /// Sends SIGHUP: reload the configuration.
    pub fn sighup(&self) {
        self.signal(rustix::process::Signal::HUP);
    }

    /// SIGKILL, as a crash would: nothing runs after it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let child = self.child.as_ref().expect("running");
        rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)
            .unwrap_or_else(|e| panic!("{signal:?}: {e}"));
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + LIVENESS;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gantry did not exit:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait; asserts a clean exit (code 0).
    pub fn stop(&mut self) {
        self.sigterm();
        let status = self.wait_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "gantry exited with {status}:\n{}",
            self.log()
        );
    }
}

impl Drop for Gantry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- gantry log ----\n{}\n---- end of gantry log ----",
                self.log()
            );
        }
    }
}

// ---------------------------------------------------------------- S3 (moto)

/// A `moto_server` (PyPI `moto[server]`) on a free loopback port: a real
/// S3 API with atomic conditional writes. One per test binary, started on
/// first use; every storage root gets its own bucket, so tests never see
/// each other's content and a restart on the same root finds its bucket.
/// A watchdog shell ends the server when the test process is gone.
pub struct Moto {
    pub endpoint: String,
    pub port: u16,
}

impl Moto {
    pub fn shared() -> &'static Moto {
        static MOTO: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
        MOTO.get_or_init(Moto::start)
    }

    fn start() -> Moto {
        let port = free_port();
        let script = format!(
            "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; kill $m 2>/dev/null",
            parent = std::process::id()
        );
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .spawn()
            .expect("sh for moto_server");
        // Reaped when it ends (with the test process, or moto).
        std::thread::spawn(move || watchdog.wait());
        let endpoint = format!("http://127.0.0.1:{port}");
        Moto::wait_until_up(&endpoint);
        Moto { endpoint, port }
    }

    /// Polls until the server at `endpoint` answers.
    fn wait_until_up(endpoint: &str) {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.get(format!("{endpoint}/")).send().is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start at {endpoint}: install it with `pip install 'moto[server]'` (.ci/run does)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// moto accepts any credentials; the server still signs its requests.
    pub fn credentials_env() -> Vec<(&'static str, &'static str)> {
        if ON_S3 {
            vec![
                ("AWS_ACCESS_KEY_ID", "gantry-test"),
                ("AWS_SECRET_ACCESS_KEY", "gantry-test-secret"),
                ("AWS_REGION", "us-east-1"),
            ]
        } else {
            Vec::new()
        }
    }

    /// The bucket of a storage root (created on first use).
    pub fn bucket_for(root: &Path) -> String {
        let h = hex::encode(&sha2::Sha256::digest(root.to_string_lossy().as_bytes())[..10]);
        let bucket = format!("gantry-{h}");
        Moto::shared().create_bucket(&bucket);
        bucket
    }

    pub fn create_bucket(&self, bucket: &str) {
        let r = reqwest::blocking::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .expect("create bucket");
        assert!(
            r.status().is_success() || r.status() == 409,
            "creating bucket {bucket}: {}",
            r.status()
        );
    }

    /// `backend = "s3"` and `[storage.s3]` for `bucket`.
    pub fn storage_lines(&self, bucket: &str) -> String {
        Moto::storage_lines_at(&self.endpoint, bucket)
    }

    pub fn storage_lines_at(endpoint: &str, bucket: &str) -> String {
        format!(
            "backend = \"s3\"\n[storage.s3]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\nallow_http = true\n"
        )
    }

    /// A moto of the test's own, on `port` (or a free one), to stop and
    /// start again; killed when dropped.
    pub fn own(port: Option<u16>) -> OwnMoto {
        let port = port.unwrap_or_else(free_port);
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server: install it with `pip install 'moto[server]'` (.ci/run does)");
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        };
        Moto::wait_until_up(&moto.endpoint);
        OwnMoto {
            moto,
            child: Some(child),
        }
    }

    /// Every key in `bucket` under `prefix`, sorted (ListObjectsV2, all pages).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let client = reqwest::blocking::Client::new();
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{bucket}?list-type=2&prefix={prefix}", self.endpoint);
            if let Some(t) = &token {
                url.push_str("&continuation-token=");
                url.push_str(&url_escape(t));
            }
            let text = client.get(url).send().expect("list").text().expect("body");
            for piece in text.split("<Key>").skip(1) {
                if let Some(end) = piece.find("</Key>") {
                    keys.push(piece[..end].to_string());
                }
            }
            token = text
                .split("<NextContinuationToken>")
                .nth(1)
                .and_then(|t| t.split("</NextContinuationToken>").next())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }
}

/// A moto the test started itself ([`Moto::own`]).
pub struct OwnMoto {
    pub moto: Moto,
    child: Option<Child>,
}

impl OwnMoto {
    /// Kills the server (its content is gone with it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What a storage root holds under `dir` (`uploads`, `blobs`…): files on
/// fs, object keys in the root's bucket on s3; relative to `dir`.
pub fn stored_under(root: &Path, dir: &str) -> Vec<String> {
    if ON_S3 {
        let prefix = format!("{dir}/");
        return Moto::shared()
            .keys(&Moto::bucket_for(root), &prefix)
            .into_iter()
            .map(|k| k[prefix.len()..].to_string())
            .collect();
    }
    let base = root.join(dir);
    let mut out = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(&base) {
                out.push(rel.to_string_lossy().to_string());
            }
        }
    }
    out.sort();
    out
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------- raw HTTP

/// A parsed HTTP/1.1 response from a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIVENESS)).expect("timeout");
    s.set_write_timeout(Some(LIVENESS)).expect("timeout");
    s
}

/// Reads one response (the server closes after it: requests say
/// `Connection: close`). Chunked bodies are decoded.
pub fn read_response(s: &mut TcpStream) -> RawResponse {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete HTTP response head in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let mut body = raw[split + 4..].to_vec();
    let r = RawResponse {
        status,
        head,
        body: Vec::new(),
    };
    if r.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    RawResponse { body, ..r }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 2 + size + 2).min(b.len())..];
    }
}

/// Sends `request` as is and reads the response.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = connect(addr);
    s.write_all(request).expect("write request");
    read_response(&mut s)
}

// ---------------------------------------------------------------- skopeo

/// Runs skopeo (the real registry client); fails the test when it is not
/// installed, or when the command fails.
pub fn skopeo(args: &[&str]) -> Output {
    let out = skopeo_raw(args);
    assert!(
        out.status.success(),
        "skopeo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs skopeo and returns its output whatever the exit status.
pub fn skopeo_raw(args: &[&str]) -> Output {
    let mut cmd = Command::new("skopeo");
    // No system trust policy needed; bounded run time; no proxy for loopback.
    cmd.args(["--insecure-policy", "--command-timeout", "300s"])
        .args(args)
        .stdin(Stdio::null());
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "skopeo is not installed, and the black-box tests need it as the real registry client: \
             apt-get install skopeo (.ci/run does this)"
        ),
        Err(e) => panic!("cannot run skopeo: {e}"),
    }
}

// ---------------------------------------------------------------- OCI layouts

/// A small deterministic-per-seed, random-looking byte source (xorshift64*),
/// so layers do not compress and runs differ.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Noise((seed ^ t ^ u64::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            out.extend_from_slice(&self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A content descriptor.
#[derive(Clone, Debug)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
}

impl Descriptor {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }

    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").expect("sha256 digest")
    }
}

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
}

/// What an image is made of, for checks after a round trip.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Layout {
    pub fn create(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dirs");
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn add_blob(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let digest = sha256(bytes);
        let path = self
            .dir
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..]);
        fs::write(path, bytes).expect("write blob");
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: bytes.len(),
        }
    }

    /// An image of `layers` gzip-compressed tar layers with `layer_size`
    /// random bytes each, for `arch`.
    pub fn add_image(
        &self,
        noise: &mut Noise,
        arch: &str,
        layers: usize,
        layer_size: usize,
    ) -> Image {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for i in 0..layers {
            let tar = tar_of(
                &format!("layer{i}/data-{arch}.bin"),
                &noise.bytes(layer_size),
            );
            diff_ids.push(sha256(&tar));
            let gz = gzip(&tar);
            descriptors.push(self.add_blob("application/vnd.oci.image.layer.v1.tar+gzip", &gz));
        }
        let config = serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": (0..layers).map(|i| serde_json::json!({"created_by": format!("layer {i}")})).collect::<Vec<_>>(),
        });
        let config = self.add_blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).expect("json"),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.json(),
            "layers": descriptors.iter().map(Descriptor::json).collect::<Vec<_>>(),
        });
        let manifest = self.add_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).expect("json"));
        Image {
            manifest,
            config,
            layers: descriptors,
        }
    }

    /// An image index over `images`, each with its platform.
    pub fn add_index(&self, images: &[(&Image, &str)]) -> Descriptor {
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .map(|(img, arch)| {
                let mut d = img.manifest.json();
                d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.add_blob(OCI_INDEX, &serde_json::to_vec(&index).expect("json"))
    }

    /// Writes `index.json` naming `target` as `tag`.
    pub fn tag(&self, target: &Descriptor, tag: &str) {
        let mut d = target.json();
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d]});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).expect("json"),
        )
        .expect("index.json");
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        fs::read(self.dir.join("blobs/sha256").join(hex))
            .unwrap_or_else(|e| panic!("blob {digest} in {}: {e}", self.dir.display()))
    }

    /// Every blob's digest in the layout.
    pub fn blob_digests(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.dir.join("blobs/sha256"))
            .expect("blobs dir")
            .map(|e| format!("sha256:{}", e.expect("entry").file_name().to_string_lossy()))
            .collect();
        v.sort();
        v
    }
}

/// Asserts every blob of `src` is in `dst`, byte for byte.
pub fn assert_same_blobs(src: &Layout, dst: &Layout) {
    let digests = src.blob_digests();
    assert!(!digests.is_empty());
    for d in digests {
        let want = src.blob(&d);
        let got = dst.blob(&d);
        assert!(
            got == want,
            "blob {d} differs after the round trip ({} vs {} bytes)",
            got.len(),
            want.len()
        );
        assert_eq!(
            sha256(&got),
            d,
            "blob {d} content does not match its digest"
        );
    }
}

fn tar_of(path: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, content)
        .expect("tar entry");
    builder.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

// ---------------------------------------------------------------- certificates

/// Runs the `openssl` CLI in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = match Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("the openssl CLI is not installed: apt-get install openssl (.ci/run does this)")
        }
        Err(e) => panic!("cannot run openssl: {e}"),
    };
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 (IP SAN) signed by it, in `dir`.
pub fn make_certs(dir: &Path) -> Tls {
    fs::create_dir_all(dir).expect("cert dir");
    fs::write(
        dir.join("openssl.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = Gantry test CA\n\
         [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .expect("openssl.cnf");
    fs::write(
        dir.join("server.ext"),
        "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n\
         authorityKeyIdentifier = keyid\n",
    )
    .expect("server.ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-new",
        "-config",
        "openssl.cnf",
        "-extensions",
        "v3_ca",
        "-days",
        "2",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca);
    let mut csr = vec![
        "req",
        "-new",
        "-config",
        "openssl.cnf",
        "-subj",
        "/CN=127.0.0.1",
    ];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    Tls {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        ca: dir.join("ca.crt"),
    }
}

/// A fresh EC private key that matches no certificate.
pub fn make_other_key(dir: &Path) -> PathBuf {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "other.key",
        ],
    );
    dir.join("other.key")
}

// ---------------------------------------------------------------- the upload API, by hand

/// `POST /v2/<repo>/blobs/uploads/`: a new session's location.
pub fn open_session(g: &Gantry, repo: &str) -> String {
    let r = g
        .client()
        .post(g.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 202);
    r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string()
}

/// One chunk at `start`.
pub fn patch(
    g: &Gantry,
    location: &str,
    start: usize,
    bytes: &[u8],
) -> reqwest::blocking::Response {
    g.client()
        .patch(g.url(location))
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{start}-{}", start + bytes.len() - 1),
        )
        .body(bytes.to_vec())
        .send()
        .expect("PATCH")
}

/// The session's `Range` (204 expected).
pub fn upload_range(g: &Gantry, location: &str) -> String {
    let r = g.client().get(g.url(location)).send().expect("GET status");
    assert_eq!(r.status(), 204);
    r.headers()["range"].to_str().expect("range").to_string()
}

/// Completes the session with `digest` (201 expected).
pub fn finish(g: &Gantry, location: &str, digest: &str) {
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = g
        .client()
        .put(g.url(&format!("{location}{sep}digest={digest}")))
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
}

/// A blob's bytes (200 expected).
pub fn blob(g: &Gantry, repo: &str, digest: &str) -> Vec<u8> {
    let r = g
        .client()
        .get(g.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .expect("GET blob");
    assert_eq!(r.status(), 200);
    r.bytes().expect("body").to_vec()
}

/// A monolithic `POST ?digest=` of `data` (201 expected); its digest.
pub fn push_blob(g: &Gantry, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = g
        .client()
        .post(g.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(data.to_vec())
        .send()
        .expect("POST blob");
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    d
}

/// Pushes `config` as a blob, then an image manifest of it and `layers`
/// (digest, size: blobs already pushed) as `repo:tag` (201 expected).
/// Returns the manifest's digest.
pub fn put_image(
    g: &Gantry,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[(&str, usize)],
) -> String {
    let config_digest = push_blob(g, repo, config);
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, n)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .expect("json");
    let r = g
        .client()
        .put(g.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .expect("PUT manifest");
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    sha256(&manifest)
}

/// A manifest with no layers, made distinct by `seed`, as `repo:tag`.
pub fn push_manifest(g: &Gantry, repo: &str, tag: &str, seed: &str) -> String {
    let config = serde_json::json!({"seed": seed}).to_string().into_bytes();
    put_image(g, repo, tag, &config, &[])
}
