//! Gantry's own bearer tokens, minted by the token endpoint (`/auth/token`)
//! for clients that speak the Docker token flow (`docker login`, podman,
//! skopeo `--creds`, oras, crane).
//!
//! ES256, signed with a P-256 key that is generated on first start and kept
//! in the storage root (or read from `[auth.token] key_file`). A token names
//! its subject and groups and the access it was granted, which is a ceiling:
//! each request is still checked against access control as configured now.

use super::now;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::access::{Action, ActionSet};
use crate::oci::RepoName;
use crate::policy::Identity;

/// One `access` entry: the Docker token format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    /// The tenant whose issuer named `sub`: the token stays confined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(default)]
    access: Vec<AccessEntry>,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
}

/// A verified Gantry token.
#[derive(Debug, Clone)]
pub struct GantryToken {
    pub identity: Option<Identity>,
    /// The tenant of the identity, when a tenant's issuer named it.
    pub tenant: Option<String>,
    pub access: Vec<AccessEntry>,
    pub expires_at: u64,
}

impl GantryToken {
    /// The ceiling this token puts on `repo`.
    pub fn ceiling(&self, repo: &RepoName) -> ActionSet {
        let mut set = ActionSet::NONE;
        for e in self
            .access
            .iter()
            .filter(|e| e.kind == "repository" && e.name == repo.as_str())
        {
            for a in &e.actions {
                set = set.union(scope_actions(a));
            }
        }
        set
    }

    /// Whether this token's scope lists the catalog (`registry:catalog:*`).
    pub fn grants_catalog(&self) -> bool {
        self.access
            .iter()
            .any(|e| e.kind == "registry" && e.name == "catalog" && !e.actions.is_empty())
    }
}

/// Docker scope action words → our actions.
pub fn scope_actions(word: &str) -> ActionSet {
    match word {
        "pull" => [Action::Read].into_iter().collect(),
        "push" => [Action::Create, Action::Update].into_iter().collect(),
        "delete" => [Action::Delete].into_iter().collect(),
        "*" => ActionSet::ALL,
        _ => ActionSet::NONE,
    }
}

/// Our actions → the Docker scope words that grant them.
pub fn scope_words(set: ActionSet) -> Vec<String> {
    let mut words = Vec::new();
    if set.contains(Action::Read) {
        words.push("pull".to_string());
    }
    if set.contains(Action::Create) || set.contains(Action::Update) {
        words.push("push".to_string());
    }
    if set.contains(Action::Delete) {
        words.push("delete".to_string());
    }
    words
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token signing key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("gantry token refused: {0}")]
    Invalid(String),
}

/// Mints and verifies Gantry tokens.
pub struct TokenService {
    issuer: String,
    audience: String,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// A P-256 signing key (ES256) with its public JWK coordinates and a kid
/// derived from the public key.
pub struct SigningKey {
    /// PKCS#8 DER of the private key.
    pub pkcs8: Vec<u8>,
    /// The public point's coordinates, base64url (JWK `x`, `y`).
    pub x: String,
    pub y: String,
    pub kid: String,
}

impl SigningKey {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<SigningKey, String> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate a key".to_string())?;
        SigningKey::from_pkcs8(doc.as_ref().to_vec())
    }

    /// A key from its PKCS#8 DER.
    pub fn from_pkcs8(pkcs8: Vec<u8>) -> Result<SigningKey, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|e| format!("not a PKCS#8 P-256 private key: {e}"))?;
        // Uncompressed point: 0x04 || x (32) || y (32).
        let public = pair.public_key().as_ref();
        if public.len() != 65 {
            return Err("unexpected public key encoding".into());
        }
        let kid = {
            use sha2::Digest as _;
            let h = sha2::Sha256::digest(public);
            URL_SAFE_NO_PAD.encode(&h[..12])
        };
        Ok(SigningKey {
            x: URL_SAFE_NO_PAD.encode(&public[1..33]),
            y: URL_SAFE_NO_PAD.encode(&public[33..]),
            kid,
            pkcs8,
        })
    }

    /// The public key as a JWK (for a JWKS).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": self.kid, "x": self.x, "y": self.y,
        })
    }

    /// The key jsonwebtoken signs with.
    pub fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_ec_der(&self.pkcs8)
    }
}

impl TokenService {
    /// Loads the PKCS#8 P-256 key at `path`, or generates and stores one
    /// there (mode 0600) when `generate` is set and the file is absent.
    pub fn open(
        issuer: String,
        audience: String,
        path: &Path,
        generate: bool,
    ) -> Result<TokenService, TokenError> {
        let err = |reason: String| TokenError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let key = match std::fs::read(path) {
            Ok(bytes) => SigningKey::from_pkcs8(bytes).map_err(err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
                let key = SigningKey::generate().map_err(err)?;
                write_private(path, &key.pkcs8).map_err(|e| err(format!("cannot write: {e}")))?;
                key
            }
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        let decoding = DecodingKey::from_ec_components(&key.x, &key.y)
            .map_err(|e| err(format!("public key: {e}")))?;
        let (kid, pkcs8) = (key.kid, key.pkcs8);
        Ok(TokenService {
            issuer,
            audience,
            kid,
            encoding: EncodingKey::from_ec_der(&pkcs8),
            decoding,
        })
    }

    /// The `iss` of every token we mint; never a configured OIDC issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Mints a token for `identity` (None: anonymous) with `access`, valid
    /// for `ttl_seconds` but never past `not_after` (the OIDC token's `exp`).
    pub fn mint(
        &self,
        identity: Option<&Identity>,
        tenant: Option<&str>,
        access: Vec<AccessEntry>,
        ttl_seconds: u64,
        not_after: Option<u64>,
    ) -> Result<(String, u64, u64), TokenError> {
        let iat = now();
        let mut exp = iat + ttl_seconds;
        if let Some(limit) = not_after {
            exp = exp.min(limit);
        }
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: identity.map(|i| i.username.clone()),
            groups: identity.map(|i| i.groups.clone()).unwrap_or_default(),
            tenant: tenant.map(str::to_owned),
            access,
            iat,
            nbf: iat,
            exp,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        Ok((token, iat, exp))
    }

    /// Verifies a token we minted.
    pub fn verify(&self, token: &str) -> Result<GantryToken, TokenError> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "nbf"]);
        v.validate_nbf = true;
        // Our own clock signs and checks: a small leeway covers rounding.
        v.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let c = data.claims;
        let identity = c.sub.map(|username| Identity {
            username,
            groups: c.groups,
        });
        Ok(GantryToken {
            identity,
            tenant: c.tenant,
            access: c.access,
            expires_at: c.exp,
        })
    }
}

/// Writes a private key file (mode 0600) in place of whatever is at
/// `path`, atomically: a copy of the bucket's shared key, on s3.
pub fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &Path) -> TokenService {
        TokenService::open(
            "http://127.0.0.1:5000/auth/token".into(),
            "gantry".into(),
            &dir.join("key.p8"),
            true,
        )
        .expect("key")
    }

    #[test]
    fn mint_then_verify_round_trips_and_key_persists() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = service(dir.path());
        let who = Identity {
            username: "ci/app".into(),
            groups: vec!["ci/team".into()],
        };
        let access = vec![AccessEntry {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
        }];
        let (tok, iat, exp) = s
            .mint(Some(&who), None, access, 300, Some(now() + 60))
            .expect("mint");
        assert!(exp <= iat + 60, "capped by the OIDC token's expiry");
        // A second service over the same key file verifies it (restart).
        let again = service(dir.path());
        let t = again.verify(&tok).expect("verify");
        assert_eq!(t.identity, Some(who));
        let repo: RepoName = "a/b".parse().expect("repo");
        assert_eq!(t.ceiling(&repo), [Action::Read].into_iter().collect());
        assert!(t.ceiling(&"other".parse().expect("repo")).is_empty());
    }

    #[test]
    fn tampered_and_foreign_tokens_are_refused() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        let (tok, _, _) = service(a.path())
            .mint(None, None, vec![], 300, None)
            .expect("mint");
        assert!(service(b.path()).verify(&tok).is_err(), "another key");
        let mut parts: Vec<String> = tok.split('.').map(str::to_string).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"iss":"x","aud":"gantry","exp":99999999999,"nbf":0,"iat":0,"jti":"x","access":[]}"#);
        assert!(
            service(a.path()).verify(&parts.join(".")).is_err(),
            "tampered payload"
        );
    }
}
