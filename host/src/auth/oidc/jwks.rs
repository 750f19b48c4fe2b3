//! Turning a JWKS document (untrusted bytes from the network or a file) into
//! verification keys.
//!
//! Only public signature keys survive: RSA (2048–8192 bits), EC P-256/P-384,
//! OKP Ed25519. Symmetric (`oct`) keys, encryption keys (`use` other than
//! `sig`), keys whose declared `alg` we do not allow, and malformed keys are
//! skipped with a reason the caller logs. Each key remembers its family so
//! that an algorithm is only ever used with a key of its own family — the
//! check `jsonwebtoken::decode` would do, and that calling
//! `jsonwebtoken::crypto::verify` directly leaves to us.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::signature::{ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::config::issuer::asymmetric_algorithm;

/// Most keys kept from one JWKS. Real issuers publish 1–4 (current, next,
/// previous); the cap bounds parsing work and the keys tried for a kid-less
/// token.
pub const MAX_KEYS: usize = 100;

/// The key families, with the curve where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// Whether `alg` is computed with a key of this family (and curve).
    pub fn supports(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// One usable public key.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it pins one.
    pub alg: Option<Algorithm>,
    key: Key,
}

/// What checks a signature.
#[derive(Clone)]
enum Key {
    /// RSA: parsed by the crypto backend once per algorithm, then kept.
    Rsa(Arc<RsaKey>),
    /// EC and Ed25519, through `jsonwebtoken`.
    Other(DecodingKey),
}

/// An RSA public key as the crypto backend holds it, built on its first
/// use with each algorithm and kept: building it (and its Montgomery
/// constants) on every token was a tenth of a new token's CPU. The
/// algorithms' parameters (2048–8192-bit keys) are those `jsonwebtoken`
/// verifies with, on the same backend.
struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
    /// By [`rsa_params`]' index.
    parsed: [OnceLock<Option<ParsedPublicKey>>; 6],
}

/// The verification parameters of an RSA algorithm, and its slot in
/// [`RsaKey::parsed`].
fn rsa_params(alg: Algorithm) -> Option<(usize, &'static RsaParameters)> {
    use aws_lc_rs::signature as sig;
    Some(match alg {
        Algorithm::RS256 => (0, &sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => (1, &sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => (2, &sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => (3, &sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => (4, &sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => (5, &sig::RSA_PSS_2048_8192_SHA512),
        _ => return None,
    })
}

impl RsaKey {
    fn verify(&self, alg: Algorithm, signature_b64: &str, message: &[u8]) -> bool {
        let Some((slot, params)) = rsa_params(alg) else {
            return false;
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else {
            return false;
        };
        let key = self.parsed[slot].get_or_init(|| {
            RsaPublicKeyComponents {
                n: &self.n,
                e: &self.e,
            }
            .to_parsed_public_key(params)
            .ok()
        });
        key.as_ref()
            .is_some_and(|key| key.verify_sig(message, &signature).is_ok())
    }
}

impl VerifyingKey {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.supports(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }

    /// Checks `signature` over `message`. Only reached with `accepts(alg)`
    /// true, so the key's family always matches the algorithm's.
    pub fn verify(&self, alg: Algorithm, signature_b64: &str, message: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        match &self.key {
            Key::Rsa(rsa) => rsa.verify(alg, signature_b64, message),
            Key::Other(key) => {
                jsonwebtoken::crypto::verify(signature_b64, message, key, alg).unwrap_or(false)
            }
        }
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The keys of a JWKS, and why others were skipped.
#[derive(Debug)]
pub(crate) struct ParsedJwks {
    pub keys: Vec<VerifyingKey>,
    pub skipped: Vec<String>,
}

/// Parses a JWKS, keeping keys usable with one of `allowed`. An error means
/// the document as a whole is unusable (not JSON, no `keys`, too many keys,
/// or no usable key at all — treated as a failed fetch so the last good keys
/// stay in place).
pub(crate) fn parse_jwks(bytes: &[u8], allowed: &[Algorithm]) -> Result<ParsedJwks, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let Some(Value::Array(entries)) = doc.get("keys") else {
        return Err("JWKS has no \"keys\" array".into());
    };
    if entries.len() > MAX_KEYS {
        return Err(format!(
            "JWKS has {} keys, more than the {MAX_KEYS} accepted",
            entries.len()
        ));
    }
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let label = match entry.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("key {i} (kid {:?})", super::error::echo(kid)),
            None => format!("key {i}"),
        };
        match parse_jwk(entry) {
            Ok(key) if allowed.iter().any(|&alg| key.accepts(alg)) => keys.push(key),
            Ok(key) => skipped.push(format!(
                "{label}: {:?} key{} usable with none of the allowed algorithms",
                key.kind,
                key.alg
                    .map(|a| format!(" pinned to {a:?}"))
                    .unwrap_or_default()
            )),
            Err(why) => skipped.push(format!("{label}: {why}")),
        }
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            "it is empty".to_owned()
        } else {
            skipped.join("; ")
        };
        return Err(format!("JWKS has no usable signing key: {why}"));
    }
    Ok(ParsedJwks { keys, skipped })
}

fn parse_jwk(entry: &Value) -> Result<VerifyingKey, String> {
    let Value::Object(jwk) = entry else {
        return Err("not a JSON object".into());
    };
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(other) => return Err(format!("\"use\" is {other}, not \"sig\"")),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op == "verify"));
        if !verifies {
            return Err("\"key_ops\" does not include \"verify\"".into());
        }
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => match asymmetric_algorithm(name) {
            Some(alg) => Some(alg),
            None => {
                return Err(format!(
                    "\"alg\" {:?} is not an asymmetric signature algorithm",
                    super::error::echo(name)
                ));
            }
        },
        Some(_) => return Err("\"alg\" is not a string".into()),
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("\"kid\" is not a string".into()),
    };
    let kty = field_str(jwk, "kty")?;
    let (kind, key) = match kty {
        "RSA" => {
            let n = field_bytes(jwk, "n")?;
            let e = field_bytes(jwk, "e")?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            // Gantry's rule, whatever the crypto backend would accept:
            // shorter keys are breakable, longer ones cost seconds per
            // verification. Refusing them here makes the log say why.
            let bits = n.len() * 8;
            if !(2048..=8192).contains(&bits) {
                return Err(format!("RSA modulus of {bits} bits (2048–8192 accepted)"));
            }
            if e.is_empty() || e.len() > 4 {
                return Err("RSA exponent out of range".into());
            }
            let key = RsaKey {
                n: n.to_vec(),
                e: e.to_vec(),
                parsed: Default::default(),
            };
            (KeyKind::Rsa, Key::Rsa(Arc::new(key)))
        }
        "EC" => {
            let (kind, len) = match field_str(jwk, "crv")? {
                "P-256" => (KeyKind::EcP256, 32),
                "P-384" => (KeyKind::EcP384, 48),
                other => {
                    return Err(format!(
                        "unsupported EC curve {:?}",
                        super::error::echo(other)
                    ));
                }
            };
            let x = field_bytes(jwk, "x")?;
            let y = field_bytes(jwk, "y")?;
            if x.len() != len || y.len() != len {
                return Err(format!("EC coordinates must be {len} bytes"));
            }
            let (x, y) = (field_str(jwk, "x")?, field_str(jwk, "y")?);
            let key =
                DecodingKey::from_ec_components(x, y).map_err(|e| format!("bad EC key: {e}"))?;
            (kind, Key::Other(key))
        }
        "OKP" => {
            match field_str(jwk, "crv")? {
                "Ed25519" => {}
                other => {
                    return Err(format!(
                        "unsupported OKP curve {:?}",
                        super::error::echo(other)
                    ));
                }
            }
            if field_bytes(jwk, "x")?.len() != 32 {
                return Err("Ed25519 public key must be 32 bytes".into());
            }
            let key = DecodingKey::from_ed_components(field_str(jwk, "x")?)
                .map_err(|e| format!("bad Ed25519 key: {e}"))?;
            (KeyKind::Ed25519, Key::Other(key))
        }
        "oct" => return Err("symmetric (oct) keys are never used".into()),
        other => return Err(format!("unsupported kty {:?}", super::error::echo(other))),
    };
    if let Some(alg) = alg
        && !kind.supports(alg)
    {
        return Err(format!("\"alg\" {alg:?} does not match a {kind:?} key"));
    }
    Ok(VerifyingKey {
        kid,
        kind,
        alg,
        key,
    })
}

fn field_str<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match jwk.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{name:?} is not a string")),
        None => Err(format!("missing {name:?}")),
    }
}

fn field_bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(field_str(jwk, name)?)
        .map_err(|e| format!("{name:?} is not base64url: {e}"))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[Algorithm] = super::super::DEFAULT_ALGORITHMS;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(bits: usize) -> Value {
        let mut n = vec![0xc5u8; bits / 8];
        n[0] = 0xff;
        json!({"kty": "RSA", "kid": "r", "n": b64(&n), "e": "AQAB"})
    }

    fn ec_jwk() -> Value {
        json!({"kty": "EC", "crv": "P-256", "kid": "e", "x": b64(&[1; 32]), "y": b64(&[2; 32])})
    }

    fn parse(doc: Value) -> Result<ParsedJwks, String> {
        parse_jwks(doc.to_string().as_bytes(), ALL)
    }

    #[test]
    fn keeps_signature_keys_and_says_why_others_are_skipped() {
        let doc = json!({"keys": [
            rsa_jwk(2048),
            ec_jwk(),
            {"kty": "OKP", "crv": "Ed25519", "kid": "d", "x": b64(&[3; 32]), "alg": "EdDSA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_jwk(2048)["n"], "e": "AQAB"},
            {"kty": "RSA", "kid": "weak", "n": rsa_jwk(1024)["n"], "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64(&[3; 32])},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": rsa_jwk(2048)["n"], "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": "mismatch", "alg": "RS256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            {"kty": "EC", "crv": "P-256", "kid": "short", "x": b64(&[1; 31]), "y": b64(&[2; 32])},
            {"kty": "RSA", "kid": "nokeyops", "key_ops": ["encrypt"], "n": rsa_jwk(2048)["n"], "e": "AQAB"},
            "not an object",
        ]});
        let parsed = parse(doc).expect("usable");
        let kids: Vec<_> = parsed
            .keys
            .iter()
            .filter_map(|k| k.kid.as_deref())
            .collect();
        assert_eq!(kids, ["r", "e", "d"]);
        assert_eq!(parsed.skipped.len(), 10, "{:#?}", parsed.skipped);
        assert!(parsed.skipped.iter().any(|s| s.contains("oct")));
        assert!(parsed.skipped.iter().any(|s| s.contains("1024 bits")));
    }

    #[test]
    fn key_family_gates_algorithms() {
        let parsed = parse(json!({"keys": [rsa_jwk(2048), ec_jwk()]})).expect("usable");
        let (rsa, ec) = (&parsed.keys[0], &parsed.keys[1]);
        assert!(rsa.accepts(Algorithm::RS256) && rsa.accepts(Algorithm::PS512));
        assert!(!rsa.accepts(Algorithm::ES256) && !rsa.accepts(Algorithm::HS256));
        assert!(ec.accepts(Algorithm::ES256) && !ec.accepts(Algorithm::ES384));
        assert!(!ec.accepts(Algorithm::HS256));
        // A key of the wrong family never reaches jsonwebtoken (which would
        // panic on an HMAC or EC algorithm with RSA components).
        assert!(!rsa.verify(Algorithm::HS256, "AAAA", b"x"));
        assert!(!rsa.verify(Algorithm::ES256, "AAAA", b"x"));
    }

    #[test]
    fn pinned_alg_is_enforced() {
        let mut jwk = rsa_jwk(2048);
        jwk["alg"] = json!("RS256");
        let parsed = parse(json!({"keys": [jwk]})).expect("usable");
        assert!(parsed.keys[0].accepts(Algorithm::RS256));
        assert!(!parsed.keys[0].accepts(Algorithm::PS256));
    }

    #[test]
    fn whole_document_errors() {
        assert!(parse_jwks(b"not json", ALL).is_err());
        assert!(parse(json!({"nokeys": []})).is_err());
        assert!(parse(json!({"keys": []})).is_err());
        assert!(parse(json!({"keys": [{"kty": "oct", "k": "AA"}]})).is_err());
        let many: Vec<Value> = (0..=MAX_KEYS).map(|_| ec_jwk()).collect();
        assert!(
            parse(json!({"keys": many}))
                .expect_err("too many")
                .contains("more than")
        );
        // Only ES256 allowed: the RSA key is skipped, the document still usable.
        let parsed = parse_jwks(
            json!({"keys": [rsa_jwk(2048), ec_jwk()]})
                .to_string()
                .as_bytes(),
            &[Algorithm::ES256],
        )
        .expect("usable");
        assert_eq!(parsed.keys.len(), 1);
        assert!(
            parse_jwks(
                json!({"keys": [rsa_jwk(2048)]}).to_string().as_bytes(),
                &[Algorithm::ES256]
            )
            .is_err()
        );
    }
}
