//! Decoding a compact JWS *without* trusting it.
//!
//! Everything here is attacker-controlled input: sizes are capped before any
//! decoding, base64url must be canonical and unpadded (RFC 7515 §2), header
//! and payload must be JSON objects. Nothing decoded here is believed until
//! the signature has been checked, except `iss`, which only selects the
//! issuer whose keys will check it (and `alg`/`kid`, which only select among
//! that issuer's keys).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::error::{VerifyError, echo};

/// Largest token accepted, in bytes. Real OIDC tokens are 1–2 KiB (GitHub's
/// are ~1.2 KiB, Kubernetes' ~1 KiB); 16 KiB leaves room for large custom
/// claims while bounding base64/JSON work per request.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token split and decoded, not yet verified.
pub(crate) struct UnverifiedToken<'a> {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `base64(header) "." base64(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The signature part, still base64url (may be empty: `alg: none`).
    pub signature: &'a str,
}

impl UnverifiedToken<'_> {
    /// The `iss` claim. Trust it only to choose whose keys verify the token.
    pub fn issuer(&self) -> Result<&str, VerifyError> {
        match self.claims.get("iss") {
            Some(Value::String(iss)) => Ok(iss),
            Some(_) => Err(VerifyError::Malformed(
                "claim \"iss\" is not a string".into(),
            )),
            None => Err(VerifyError::MissingClaim("iss")),
        }
    }

    /// The `alg` header value as written (it may name an algorithm we refuse).
    pub fn alg(&self) -> Result<&str, VerifyError> {
        match self.header.get("alg") {
            Some(Value::String(alg)) => Ok(alg),
            Some(_) => Err(VerifyError::Malformed(
                "header \"alg\" is not a string".into(),
            )),
            None => Err(VerifyError::Malformed("header has no \"alg\"".into())),
        }
    }

    /// The `kid` header, if any.
    pub fn kid(&self) -> Result<Option<&str>, VerifyError> {
        match self.header.get("kid") {
            None => Ok(None),
            Some(Value::String(kid)) => Ok(Some(kid)),
            Some(_) => Err(VerifyError::Malformed(
                "header \"kid\" is not a string".into(),
            )),
        }
    }
}

/// Splits and decodes a compact JWS. Checks only its shape.
pub(crate) fn parse(token: &str) -> Result<UnverifiedToken<'_>, VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // JWE (5 parts) and anything else is refused here.
        return Err(VerifyError::Malformed(
            "not a compact JWS (expected 3 dot-separated parts)".into(),
        ));
    };
    let header = decode_object(header, "header")?;
    let claims = decode_object(payload, "payload")?;
    let signing_input = &token[..token.len() - signature.len() - 1];
    Ok(UnverifiedToken {
        header,
        claims,
        signing_input,
        signature,
    })
}

fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, VerifyError> {
    if part.is_empty() {
        return Err(VerifyError::Malformed(format!("empty {what}")));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| VerifyError::Malformed(format!("{what} is not base64url: {e}")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(VerifyError::Malformed(format!(
            "{what} is not a JSON object"
        ))),
        Err(e) => Err(VerifyError::Malformed(format!("{what} is not JSON: {e}"))),
    }
}

/// Decodes the signature part (base64url, canonical, unpadded).
pub(crate) fn decode_signature(signature: &str) -> Result<Vec<u8>, VerifyError> {
    if signature.is_empty() {
        return Err(VerifyError::Malformed("empty signature".into()));
    }
    URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| VerifyError::Malformed(format!("signature is not base64url: {e}")))
}

/// The asymmetric algorithms this module knows. `none` and `HS*` are not in
/// this list, so no header can ever select them: HMAC "verification" with an
/// issuer's public key as the secret is impossible by construction.
pub(crate) fn asymmetric_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// True for the algorithms [`asymmetric_algorithm`] can return.
pub(crate) fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// `typ` may be absent, `JWT` or `at+jwt` (RFC 9068 access tokens), compared
/// case-insensitively, with or without the `application/` prefix (RFC 7515
/// §4.1.9 lets producers omit it).
pub(crate) fn check_type(header: &Map<String, Value>) -> Result<(), VerifyError> {
    match header.get("typ") {
        None => Ok(()),
        Some(Value::String(typ)) => {
            let lower = typ.to_ascii_lowercase();
            let short = lower.strip_prefix("application/").unwrap_or(&lower);
            if short == "jwt" || short == "at+jwt" {
                Ok(())
            } else {
                Err(VerifyError::BadType(echo(typ)))
            }
        }
        Some(other) => Err(VerifyError::BadType(echo(&other.to_string()))),
    }
}

/// Reads `iss` from an unverified token, e.g. to route Gantry's own tokens
/// and OIDC tokens to their verifiers. Never trust anything else from it.
pub fn unverified_issuer(token: &str) -> Result<String, VerifyError> {
    Ok(parse(token)?.issuer()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn splits_and_keeps_signing_input() {
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"iss":"https://i"}"#)
        );
        let t = parse(&token).expect("parses");
        assert_eq!(t.signing_input, &token[..token.rfind('.').expect("dot")]);
        assert_eq!(t.signature, "c2ln");
        assert_eq!(t.issuer().expect("iss"), "https://i");
        assert_eq!(t.alg().expect("alg"), "RS256");
    }

    #[test]
    fn refuses_wrong_shapes() {
        let h = b64(r#"{"alg":"RS256"}"#);
        let p = b64(r#"{"iss":"x"}"#);
        for token in [
            String::new(),
            "a.b".into(),
            format!("{h}.{p}.s.x.y"),
            format!("{h}.{p}=.sig"),                 // padding
            format!("{h}.{p}+.sig"),                 // not url-safe alphabet
            format!(".{p}.sig"),                     // empty header
            format!("{h}.{}.sig", b64("[1,2]")),     // not an object
            format!("{h}.{}.sig", b64("{\"iss\":")), // truncated JSON
        ] {
            assert!(
                matches!(parse(&token), Err(VerifyError::Malformed(_))),
                "{token:?}"
            );
        }
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(parse(&big), Err(VerifyError::TooLarge)));
    }

    #[test]
    fn issuer_must_be_a_string() {
        let h = b64(r#"{"alg":"RS256"}"#);
        let token = format!("{h}.{}.s", b64(r#"{"iss":7}"#));
        assert!(matches!(
            unverified_issuer(&token),
            Err(VerifyError::Malformed(_))
        ));
        let token = format!("{h}.{}.s", b64(r#"{"sub":"x"}"#));
        assert_eq!(
            unverified_issuer(&token),
            Err(VerifyError::MissingClaim("iss"))
        );
    }

    #[test]
    fn only_asymmetric_algorithms_have_names() {
        for name in [
            "none", "None", "HS256", "HS384", "HS512", "rs256", "", "ES512",
        ] {
            assert_eq!(asymmetric_algorithm(name), None, "{name}");
        }
        for name in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ] {
            let alg = asymmetric_algorithm(name).expect(name);
            assert!(is_asymmetric(alg));
        }
    }

    #[test]
    fn type_rules() {
        let with = |typ: Value| {
            let mut m = Map::new();
            m.insert("typ".into(), typ);
            check_type(&m)
        };
        assert!(check_type(&Map::new()).is_ok());
        for ok in [
            "JWT",
            "jwt",
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "application/jwt",
        ] {
            assert!(with(Value::String(ok.into())).is_ok(), "{ok}");
        }
        for bad in ["JOSE", "dpop+jwt", "logout+jwt", "", "secevent+jwt"] {
            assert!(
                matches!(
                    with(Value::String(bad.into())),
                    Err(VerifyError::BadType(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            with(Value::Bool(true)),
            Err(VerifyError::BadType(_))
        ));
    }
}
