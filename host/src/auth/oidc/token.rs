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
use std::borrow::Cow;

use serde_json::{Map, Value};

use super::error::{VerifyError, echo};

/// Largest token accepted, in bytes. Real OIDC tokens are 1–2 KiB (GitHub's
/// are ~1.2 KiB, Kubernetes' ~1 KiB); 16 KiB leaves room for large custom
/// claims while bounding base64/JSON work per request.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token split and decoded, not yet verified. Parsed once per token:
/// routing by `iss`, the checks and the policy all use this one parse.
pub struct UnverifiedToken<'a> {
    pub(crate) header: Map<String, Value>,
    /// The payload's [`REGISTERED_CLAIMS`] that are present: the others are
    /// read (and checked for repeated names) but not built.
    pub(crate) claims: Map<String, Value>,
    /// The payload's JSON text as signed, handed to the claim policy as is
    /// (no re-serialisation). Safe to pass on because [`parse`] refused any
    /// object with a repeated member name, at any depth: what the guest's
    /// parser reads is what the host checked, whatever its duplicate rule.
    pub(crate) claims_json: String,
    /// `base64(header) "." base64(payload)`: the bytes the signature covers.
    pub(crate) signing_input: &'a str,
    /// The signature part, still base64url (may be empty: `alg: none`).
    pub(crate) signature: &'a str,
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
pub fn parse(token: &str) -> Result<UnverifiedToken<'_>, VerifyError> {
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
    let (header, _) = decode_object(header, "header", Strict::Build)?;
    let (claims, claims_json) = decode_object(payload, "payload", Strict::Only(REGISTERED_CLAIMS))?;
    let signing_input = &token[..token.len() - signature.len() - 1];
    Ok(UnverifiedToken {
        header,
        claims,
        claims_json,
        signing_input,
        signature,
    })
}

/// The payload claims the host reads itself (routing, RFC 7519 checks, the
/// audit line); the policy reads the rest from the JSON text.
pub(crate) const REGISTERED_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat"];

/// A base64url part as a JSON object (as much of it as `build` asks), and
/// its JSON text. A member not built is still read through, and refused like
/// the rest if it repeats a name.
fn decode_object(
    part: &str,
    what: &str,
    build: Strict<'_>,
) -> Result<(Map<String, Value>, String), VerifyError> {
    if part.is_empty() {
        return Err(VerifyError::Malformed(format!("empty {what}")));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| VerifyError::Malformed(format!("{what} is not base64url: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| VerifyError::Malformed(format!("{what} is not UTF-8")))?;
    if !text.trim_start().starts_with('{') {
        return Err(VerifyError::Malformed(format!(
            "{what} is not a JSON object"
        )));
    }
    let mut de = serde_json::Deserializer::from_str(&text);
    let map =
        serde::Deserializer::deserialize_map(&mut de, build).and_then(|top| de.end().map(|()| top));
    match map {
        Ok(Some(Value::Object(map))) => Ok((map, text)),
        Ok(_) => Err(VerifyError::Malformed(format!(
            "{what} is not a JSON object"
        ))),
        Err(e) => Err(VerifyError::Malformed(format!("{what} is not JSON: {e}"))),
    }
}

/// Reads a JSON value whose objects never repeat a member name (RFC 7519 §4
/// lets a parser either refuse duplicates or keep the last; parsers of other
/// languages keep the first, so refusing is the only rule every policy
/// language agrees with), building as much of it as asked.
#[derive(Clone, Copy)]
enum Strict<'k> {
    /// The whole value.
    Build,
    /// Nothing: the value is read through and yields `None`.
    Skip,
    /// An object of these members only (the top level of a payload).
    Only(&'k [&'k str]),
}

impl<'de> serde::de::DeserializeSeed<'de> for Strict<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Strict<'_> {
    /// `value` unless this reads through.
    fn keep(self, value: impl FnOnce() -> Value) -> Option<Value> {
        match self {
            Strict::Skip => None,
            Strict::Build | Strict::Only(_) => Some(value()),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Strict<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(self.keep(|| Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.keep(|| Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.keep(|| Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.keep(|| Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.keep(|| Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(self.keep(|| Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.keep(|| Value::Null))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        let seed = match self {
            Strict::Skip => Strict::Skip,
            Strict::Build | Strict::Only(_) => Strict::Build,
        };
        while let Some(item) = seq.next_element_seed(seed)? {
            items.extend(item);
        }
        Ok(self.keep(|| Value::Array(items)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Every name is kept (borrowed from the text where it has no
        // escapes) to find repeats, sorted once at the end: linear search
        // would let a 16 KiB token of short names cost millions of compares.
        let mut names: Vec<Cow<'de, str>> = Vec::new();
        let mut object = Map::new();
        while let Some(name) = map.next_key_seed(Name)? {
            let seed = match self {
                Strict::Build => Strict::Build,
                Strict::Only(keep) if keep.contains(&name.as_ref()) => Strict::Build,
                Strict::Only(_) | Strict::Skip => Strict::Skip,
            };
            if let Some(value) = map.next_value_seed(seed)? {
                object.insert(name.to_string(), value);
            }
            names.push(name);
        }
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(serde::de::Error::custom(format_args!(
                "member {:?} appears twice",
                echo(&pair[0])
            )));
        }
        Ok(self.keep(|| Value::Object(object)))
    }
}

/// An object member's name, borrowed from the text unless it has escapes
/// (serde's own `Cow<str>` always copies).
struct Name;

impl<'de> serde::de::DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
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
            format!("{h}.{p}=.sig"),                                // padding
            format!("{h}.{p}+.sig"),                                // not url-safe alphabet
            format!(".{p}.sig"),                                    // empty header
            format!("{h}.{}.sig", b64("[1,2]")),                    // not an object
            format!("{h}.{}.sig", b64("{\"iss\":")),                // truncated JSON
            format!("{h}.{}.sig", b64(r#"{"iss":"x","iss":"y"}"#)), // repeated claim
            format!("{h}.{}.sig", b64(r#"{"iss":"x","k":{"a":1,"a":2}}"#)), // nested
            format!("{h}.{}.sig", b64(r#"{"x":1,"iss":"x","x":[]}"#)), // unread claim
            format!("{h}.{}.sig", b64(r#"{"iss":"x","k":[{"a":1,"\u0061":2}]}"#)), // escaped
            format!("{h}.{}.sig", b64(r#"{"iss":"x","aud":[{"a":1,"a":2}]}"#)),
            format!("{}.{p}.sig", b64(r#"{"alg":"RS256","alg":"none"}"#)), // header
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
    fn builds_only_the_registered_claims_and_passes_the_text_on() {
        let payload = r#"{"iss":"https://i","sub":"s","aud":["a"],"exp":2,"nbf":1,"iat":1,"k":{"n":[1,{"m":"é"}]},"x":"y"}"#;
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(payload)
        );
        let t = parse(&token).expect("parses");
        let built: Vec<&str> = t.claims.keys().map(String::as_str).collect();
        assert_eq!(built, ["aud", "exp", "iat", "iss", "nbf", "sub"]);
        assert_eq!(t.claims["aud"], serde_json::json!(["a"]));
        assert_eq!(t.claims_json, payload);
        assert_eq!(t.kid().expect("kid"), Some("k1"));
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
