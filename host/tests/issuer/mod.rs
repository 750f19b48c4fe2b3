//! An in-process OIDC issuer for integration tests: discovery and JWKS served
//! by an axum server on 127.0.0.1 (plain HTTP, or HTTPS with a generated CA),
//! keys generated at test time, plus helpers to forge the tokens an attacker
//! would send.
//!
//! Use from a test crate with `mod issuer;`. Typical use:
//!
//! ```ignore
//! let issuer = issuer::TestIssuer::start().await;
//! let token = issuer.sign(issuer.claims("gantry"), issuer::SignOpts::default());
//! ```
//!
//! RSA key generation is slow in debug builds, so RSA keys come from a small
//! per-process pool of slots generated once; issuers that must hold
//! *different* RSA keys (issuer A vs issuer B, the attacker) use different
//! slots via [`IssuerOptions::rsa_slot`]. EC and Ed25519 keys are generated
//! fresh (ring, microseconds).
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::EncodingKey;
use ring::rand::SystemRandom;
use ring::signature::{self as ring_sig, KeyPair as _};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------
// Keys

/// A signing key and its public JWK.
pub struct TestKey {
    pub kid: String,
    /// The algorithm this key signs with by default.
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK as served in the JWKS.
    pub jwk: Value,
    /// RSA only: the public key in forms an attacker could use as an HMAC secret.
    pub rsa_public: Option<RsaPublicForms>,
}

/// An RSA public key in every encoding an HS256-confusion attacker might
/// feed to a naive verifier as the HMAC secret.
#[derive(Clone)]
pub struct RsaPublicForms {
    pub spki_pem: String,
    pub pkcs1_pem: String,
    pub spki_der: Vec<u8>,
    pub modulus: Vec<u8>,
}

struct RsaMaterial {
    pkcs1_der: Vec<u8>,
    n: Vec<u8>,
    e: Vec<u8>,
    public: RsaPublicForms,
}

const RSA_SLOTS: usize = 4;
static RSA_POOL: [OnceLock<RsaMaterial>; RSA_SLOTS] = [const { OnceLock::new() }; RSA_SLOTS];

fn rsa_material(slot: usize) -> &'static RsaMaterial {
    RSA_POOL[slot % RSA_SLOTS].get_or_init(|| {
        use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        use rsa::traits::PublicKeyParts as _;
        let private =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
        let public = private.to_public_key();
        RsaMaterial {
            pkcs1_der: private
                .to_pkcs1_der()
                .expect("PKCS#1 DER")
                .as_bytes()
                .to_vec(),
            n: public.n().to_bytes_be(),
            e: public.e().to_bytes_be(),
            public: RsaPublicForms {
                spki_pem: public.to_public_key_pem(LineEnding::LF).expect("SPKI PEM"),
                pkcs1_pem: public.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 PEM"),
                spki_der: public
                    .to_public_key_der()
                    .expect("SPKI DER")
                    .as_bytes()
                    .to_vec(),
                modulus: public.n().to_bytes_be(),
            },
        }
    })
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn alg_name(alg: Algorithm) -> String {
    match serde_json::to_value(alg) {
        Ok(Value::String(s)) => s,
        other => panic!("algorithm name: {other:?}"),
    }
}

impl TestKey {
    /// An RSA key from pool slot `slot` (same slot, same key). Its JWK pins
    /// no `alg`, so it verifies RS* and PS* alike.
    pub fn rsa(kid: &str, slot: usize) -> TestKey {
        let m = rsa_material(slot);
        TestKey {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&m.pkcs1_der),
            jwk: json!({"kty": "RSA", "use": "sig", "kid": kid, "n": b64(&m.n), "e": b64(&m.e)}),
            rsa_public: Some(m.public.clone()),
        }
    }

    /// A fresh EC key: P-256 (ES256) or P-384 (ES384).
    pub fn ec(kid: &str, alg: Algorithm) -> TestKey {
        let (signing, crv, len) = match alg {
            Algorithm::ES256 => (&ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
            Algorithm::ES384 => (&ring_sig::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
            other => panic!("not an EC algorithm: {other:?}"),
        };
        let rng = SystemRandom::new();
        let pkcs8 =
            ring_sig::EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("EC key generation");
        let pair =
            ring_sig::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("EC key");
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        let (x, y) = point[1..].split_at(len);
        TestKey {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "use": "sig", "alg": alg_name(alg), "crv": crv, "kid": kid, "x": b64(x), "y": b64(y)}),
            rsa_public: None,
        }
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = ring_sig::Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key generation");
        let pair = ring_sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key");
        TestKey {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key().as_ref())}),
            rsa_public: None,
        }
    }

    /// A key for `alg` (RSA keys from pool slot `rsa_slot`).
    pub fn for_alg(kid: &str, alg: Algorithm, rsa_slot: usize) -> TestKey {
        match alg {
            Algorithm::ES256 | Algorithm::ES384 => TestKey::ec(kid, alg),
            Algorithm::EdDSA => TestKey::ed25519(kid),
            _ => TestKey::rsa(kid, rsa_slot),
        }
    }

    /// Signs `claims` with `alg` under exactly `header` (its `alg` is
    /// overwritten with `alg`'s name unless `header` already has one).
    pub fn sign_with_header(
        &self,
        alg: Algorithm,
        header: &Map<String, Value>,
        claims: &Value,
    ) -> String {
        let mut header = header.clone();
        header
            .entry("alg")
            .or_insert_with(|| Value::String(alg_name(alg)));
        let input = format!(
            "{}.{}",
            b64(Value::Object(header).to_string()),
            b64(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, alg).expect("signing");
        format!("{input}.{signature}")
    }
}

/// A set of keys without a server: for static `jwks_file` issuers.
pub struct KeySet {
    pub keys: Vec<Arc<TestKey>>,
}

impl KeySet {
    /// RSA (kid `rsa-1`, pool slot `rsa_slot`), ES256 (`ec-1`), ES384
    /// (`ec384-1`), Ed25519 (`ed-1`).
    pub fn generate(rsa_slot: usize) -> KeySet {
        KeySet {
            keys: vec![
                Arc::new(TestKey::rsa("rsa-1", rsa_slot)),
                Arc::new(TestKey::ec("ec-1", Algorithm::ES256)),
                Arc::new(TestKey::ec("ec384-1", Algorithm::ES384)),
                Arc::new(TestKey::ed25519("ed-1")),
            ],
        }
    }

    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }

    pub fn key(&self, kid: &str) -> Arc<TestKey> {
        self.keys
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
            .unwrap_or_else(|| panic!("no key {kid}"))
    }

    /// The default key for `alg`: RSA for RS*/PS*, else the matching EC/Ed key.
    pub fn key_for(&self, alg: Algorithm) -> Arc<TestKey> {
        let kid = match alg {
            Algorithm::ES256 => "ec-1",
            Algorithm::ES384 => "ec384-1",
            Algorithm::EdDSA => "ed-1",
            _ => "rsa-1",
        };
        self.key(kid)
    }

    pub fn sign(&self, claims: &Value, opts: &SignOpts) -> String {
        let key = match &opts.kid {
            Some(kid) if self.keys.iter().any(|k| &k.kid == kid) => self.key(kid),
            _ => self.key_for(opts.alg),
        };
        // An unknown kid still goes in the header (signed by the default key).
        let kid = opts.kid.clone().unwrap_or_else(|| key.kid.clone());
        key.sign_with_header(opts.alg, &opts.header_for(&kid), claims)
    }
}

/// How to sign a test token.
#[derive(Clone, Debug)]
pub struct SignOpts {
    pub alg: Algorithm,
    /// The signing key's kid; `None` picks the issuer's default key for `alg`.
    pub kid: Option<String>,
    /// Leave `kid` out of the header.
    pub omit_kid: bool,
    /// `typ` header; `None` leaves it out.
    pub typ: Option<String>,
    /// Extra header fields (`jku`, `x5u`, `jwk`, `crit`, …).
    pub extra_header: Map<String, Value>,
}

impl Default for SignOpts {
    fn default() -> Self {
        SignOpts {
            alg: Algorithm::RS256,
            kid: None,
            omit_kid: false,
            typ: Some("JWT".into()),
            extra_header: Map::new(),
        }
    }
}

impl SignOpts {
    pub fn alg(alg: Algorithm) -> SignOpts {
        SignOpts {
            alg,
            ..SignOpts::default()
        }
    }
    pub fn kid(mut self, kid: &str) -> SignOpts {
        self.kid = Some(kid.into());
        self
    }
    pub fn no_kid(mut self) -> SignOpts {
        self.omit_kid = true;
        self
    }
    pub fn typ(mut self, typ: Option<&str>) -> SignOpts {
        self.typ = typ.map(str::to_owned);
        self
    }
    pub fn header(mut self, name: &str, value: Value) -> SignOpts {
        self.extra_header.insert(name.into(), value);
        self
    }

    fn header_for(&self, kid: &str) -> Map<String, Value> {
        let mut h = Map::new();
        h.insert("alg".into(), Value::String(alg_name(self.alg)));
        if let Some(typ) = &self.typ {
            h.insert("typ".into(), Value::String(typ.clone()));
        }
        if !self.omit_kid {
            h.insert("kid".into(), Value::String(kid.into()));
        }
        for (k, v) in &self.extra_header {
            h.insert(k.clone(), v.clone());
        }
        h
    }
}

// ---------------------------------------------------------------------------
// Forged tokens

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `b64(header).b64(claims).signature` with no signing at all.
pub fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string()),
        b64(claims.to_string())
    )
}

/// An `alg` (e.g. `none`) token with an empty signature.
pub fn unsigned_token(alg: &str, claims: &Value) -> String {
    forge(&json!({"alg": alg, "typ": "JWT"}), claims, "")
}

/// An HS256 token whose HMAC secret is `secret` (e.g. the issuer's public key).
pub fn hs256_token(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": "HS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(secret).expect("a non-empty HMAC secret"),
        Algorithm::HS256,
    )
    .expect("HMAC");
    format!("{input}.{sig}")
}

/// A 127.0.0.1 port that was free a moment ago, for an issuer started later.
pub fn reserve_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------
// The server

/// Options for [`TestIssuer::start_with`].
#[derive(Clone, Debug, Default)]
pub struct IssuerOptions {
    /// Listen on this port (e.g. from [`reserve_port`]); 0 picks one.
    pub port: u16,
    /// RSA pool slot for `rsa-1`; issuers that must differ use different slots.
    pub rsa_slot: usize,
    /// Serve HTTPS with a certificate from a freshly generated CA.
    pub tls: bool,
    /// The `issuer` the discovery document names (and `claims()` puts in
    /// `iss`); default: the server's own URL. Kubernetes-style setups name an
    /// issuer that is not where discovery is served.
    pub issuer: Option<String>,
}

struct Shared {
    issuer: String,
    base_url: String,
    keys: Mutex<Vec<Arc<TestKey>>>,
    published: Mutex<HashSet<String>>,
    down: AtomicBool,
    /// Replaces the JWKS body (status 200) when set: garbage, empty sets…
    jwks_body: Mutex<Option<String>>,
    delay_ms: AtomicU64,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
    all_hits: AtomicUsize,
}

struct Tls {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

/// A running (or stopped) test issuer.
pub struct TestIssuer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<Tls>,
    server: Mutex<Option<(axum_server::Handle, tokio::task::JoinHandle<()>)>>,
}

impl TestIssuer {
    /// Plain HTTP on a free port, RSA slot 0.
    pub async fn start() -> TestIssuer {
        Self::start_with(IssuerOptions::default()).await
    }

    pub async fn start_with(opts: IssuerOptions) -> TestIssuer {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", opts.port)).expect("bind test issuer");
        let addr = listener.local_addr().expect("local addr");
        let scheme = if opts.tls { "https" } else { "http" };
        let base_url = format!("{scheme}://127.0.0.1:{}", addr.port());
        let set = KeySet::generate(opts.rsa_slot);
        let published = set.keys.iter().map(|k| k.kid.clone()).collect();
        let shared = Arc::new(Shared {
            issuer: opts.issuer.clone().unwrap_or_else(|| base_url.clone()),
            base_url,
            keys: Mutex::new(set.keys),
            published: Mutex::new(published),
            down: AtomicBool::new(false),
            jwks_body: Mutex::new(None),
            delay_ms: AtomicU64::new(0),
            jwks_hits: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
            all_hits: AtomicUsize::new(0),
        });
        let tls = opts.tls.then(generate_tls);
        let issuer = TestIssuer {
            addr,
            shared,
            tls,
            server: Mutex::new(None),
        };
        issuer.serve(listener);
        issuer
    }

    fn serve(&self, listener: std::net::TcpListener) {
        listener.set_nonblocking(true).expect("nonblocking");
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .fallback(fallback)
            .with_state(self.shared.clone());
        let handle = axum_server::Handle::new();
        let task = match &self.tls {
            None => {
                let server = axum_server::from_tcp(listener).handle(handle.clone());
                tokio::spawn(async move {
                    let _ = server.serve(app.into_make_service()).await;
                })
            }
            Some(tls) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_config(tls.server.clone());
                let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
                tokio::spawn(async move {
                    let _ = server.serve(app.into_make_service()).await;
                })
            }
        };
        *self.server.lock().expect("lock") = Some((handle, task));
    }

    /// Stops listening (connections are refused until [`Self::restart`]).
    pub async fn stop(&self) {
        let running = self.server.lock().expect("lock").take();
        if let Some((handle, task)) = running {
            handle.shutdown();
            let _ = task.await;
        }
    }

    /// Listens again on the same port, with the same keys.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = std::net::TcpListener::bind(self.addr).expect("rebind test issuer");
        self.serve(listener);
    }

    /// The server's base URL (`http://127.0.0.1:PORT`, or https).
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The issuer named in discovery and in `claims()` (the URL by default).
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.shared.base_url)
    }

    /// PEM of the CA that signed the HTTPS certificate (TLS issuers only).
    pub fn ca_pem(&self) -> String {
        self.tls.as_ref().expect("a TLS issuer").ca_pem.clone()
    }

    /// Typical claims: `iss`, `sub`, `aud`, `iat`/`nbf` now, `exp` in 5 min.
    pub fn claims(&self, aud: &str) -> Value {
        let now = now();
        json!({
            "iss": self.shared.issuer,
            "sub": "system:serviceaccount:team-a:pusher",
            "aud": aud,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "pusher"}},
        })
    }

    pub fn key(&self, kid: &str) -> Arc<TestKey> {
        let keys = self.shared.keys.lock().expect("lock");
        keys.iter()
            .find(|k| k.kid == kid)
            .cloned()
            .unwrap_or_else(|| panic!("no key {kid}"))
    }

    /// Signs `claims` with the key `opts.kid` (default: this issuer's key for
    /// `opts.alg`), published or not.
    pub fn sign(&self, claims: Value, opts: SignOpts) -> String {
        let set = KeySet {
            keys: self.shared.keys.lock().expect("lock").clone(),
        };
        set.sign(&claims, &opts)
    }

    /// Adds a key (for `alg`) that tokens can be signed with but the JWKS does
    /// not serve until [`Self::publish_key`]. Returns its kid.
    pub fn add_unpublished_key(&self, alg: Algorithm) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let kid = format!("rotated-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        // Rotated RSA keys come from slot 3, never an issuer's default slot.
        let key = TestKey::for_alg(&kid, alg, RSA_SLOTS - 1);
        self.shared.keys.lock().expect("lock").push(Arc::new(key));
        kid
    }

    pub fn publish_key(&self, kid: &str) {
        self.shared
            .published
            .lock()
            .expect("lock")
            .insert(kid.into());
    }

    pub fn unpublish_key(&self, kid: &str) {
        self.shared.published.lock().expect("lock").remove(kid);
    }

    /// Adds an ES256 key and serves it at once; returns its kid.
    pub fn rotate_in_new_key(&self) -> String {
        let kid = self.add_unpublished_key(Algorithm::ES256);
        self.publish_key(&kid);
        kid
    }

    /// The JWKS as currently served.
    pub fn jwks(&self) -> Value {
        jwks_value(&self.shared)
    }

    /// Answer every request with 503 while `down`.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Serve this body (HTTP 200) instead of the JWKS; `None` restores it.
    pub fn set_jwks_body(&self, body: Option<&str>) {
        *self.shared.jwks_body.lock().expect("lock") = body.map(str::to_owned);
    }

    /// Delay every response (to make concurrent requests overlap).
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// JWKS requests so far (answered or not).
    pub fn fetch_count(&self) -> usize {
        self.shared.jwks_hits.load(Ordering::SeqCst)
    }

    /// Discovery requests so far.
    pub fn discovery_count(&self) -> usize {
        self.shared.discovery_hits.load(Ordering::SeqCst)
    }

    /// Every request so far, any path.
    pub fn hit_count(&self) -> usize {
        self.shared.all_hits.load(Ordering::SeqCst)
    }

    /// An HS256 token signed with this issuer's RSA public key (in `form`)
    /// as the HMAC secret — the classic algorithm-confusion attack.
    pub fn hs256_with_public_key(&self, claims: &Value, form: PublicKeyForm) -> String {
        let key = self.key("rsa-1");
        let public = key.rsa_public.as_ref().expect("RSA key");
        let secret: Vec<u8> = match form {
            PublicKeyForm::SpkiPem => public.spki_pem.clone().into_bytes(),
            PublicKeyForm::Pkcs1Pem => public.pkcs1_pem.clone().into_bytes(),
            PublicKeyForm::SpkiDer => public.spki_der.clone(),
            PublicKeyForm::Modulus => public.modulus.clone(),
            PublicKeyForm::JwkJson => key.jwk.to_string().into_bytes(),
        };
        hs256_token(&secret, Some("rsa-1"), claims)
    }
}

/// Encodings of an RSA public key tried as an HMAC secret.
#[derive(Clone, Copy, Debug)]
pub enum PublicKeyForm {
    SpkiPem,
    Pkcs1Pem,
    SpkiDer,
    Modulus,
    JwkJson,
}

impl PublicKeyForm {
    pub const ALL: [PublicKeyForm; 5] = [
        PublicKeyForm::SpkiPem,
        PublicKeyForm::Pkcs1Pem,
        PublicKeyForm::SpkiDer,
        PublicKeyForm::Modulus,
        PublicKeyForm::JwkJson,
    ];
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Ok(mut running) = self.server.lock()
            && let Some((handle, _task)) = running.take()
        {
            handle.shutdown();
        }
    }
}

fn jwks_value(shared: &Shared) -> Value {
    let published = shared.published.lock().expect("lock").clone();
    let keys = shared.keys.lock().expect("lock");
    json!({"keys": keys.iter().filter(|k| published.contains(&k.kid)).map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

/// Counts the request, applies the delay, and answers 503 when down.
async fn enter(shared: &Shared) -> Option<Response> {
    shared.all_hits.fetch_add(1, Ordering::SeqCst);
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    shared
        .down
        .load(Ordering::SeqCst)
        .then(|| (StatusCode::SERVICE_UNAVAILABLE, "down").into_response())
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(down) = enter(&shared).await {
        return down;
    }
    axum::Json(json!({
        "issuer": shared.issuer,
        "jwks_uri": format!("{}/jwks", shared.base_url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "ES384", "EdDSA"],
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(down) = enter(&shared).await {
        return down;
    }
    if let Some(body) = shared.jwks_body.lock().expect("lock").clone() {
        return body.into_response();
    }
    axum::Json(jwks_value(&shared)).into_response()
}

async fn fallback(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(down) = enter(&shared).await {
        return down;
    }
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn generate_tls() -> Tls {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Gantry test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("leaf params");
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server certificate");
    Tls {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}
