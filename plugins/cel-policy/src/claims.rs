//! Reads the verified claims (a JSON object) straight into the CEL value
//! bound to `claims`.
//!
//! Why not `serde_json::Value` first: parsing into it and converting was
//! three quarters of an evaluation, most of it allocating strings. Here the
//! JSON is deserialised directly into CEL values, and strings without escapes
//! borrow the input instead of being copied.

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Parses `json`, which must be an object, into a CEL map. With `only`, the
/// top-level claims not in it are skipped (still checked to be valid JSON):
/// a policy reads a handful of a token's thirty-odd claims.
///
/// Integers become `int` (`uint` only past `i64::MAX`), as they do for
/// Kubernetes' CEL over JSON: operators compare `claims.exp > 1700000000`
/// with `int` literals, and CEL has no `int + uint` overload. Nesting is
/// bounded by serde_json's recursion limit (128).
pub fn parse<'de>(
    json: &'de str,
    only: Option<&BTreeSet<String>>,
) -> Result<Box<dyn Val + 'de>, String> {
    if !json.trim_start().starts_with('{') {
        return Err("claims must be a JSON object".to_owned());
    }
    let invalid = |e: serde_json::Error| format!("claims are not valid JSON: {e}");
    let mut de = serde_json::Deserializer::from_str(json);
    let claims = de.deserialize_map(CelVisitor { only }).map_err(invalid)?;
    de.end().map_err(invalid)?;
    Ok(claims)
}

/// Builds the CEL value of any JSON value, borrowing from the input (`'de`);
/// for an object, only the keys in `only`, if set.
struct CelVisitor<'a> {
    only: Option<&'a BTreeSet<String>>,
}

impl<'de> Visitor<'de> for CelVisitor<'_> {
    type Value = Box<dyn Val + 'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Box::new(CelBool::from(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Box::new(CelInt::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Box::new(CelInt::from(i)),
            Err(_) => Box::new(CelUInt::from(v)),
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Box::new(CelDouble::from(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Box::new(CelString::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Box::new(CelString::from(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Box::new(CelString::from(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Box::new(CelNull))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Seed)? {
            items.push(item);
        }
        Ok(Box::new(CelList::from(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Collected first so the map is allocated once at its final size:
        // serde_json cannot tell how many entries an object has.
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if self.only.is_some_and(|only| !only.contains(key.as_ref())) {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let key = match key {
                Cow::Borrowed(key) => CelMapKey::from(key),
                Cow::Owned(key) => CelMapKey::from(key),
            };
            entries.push((key, map.next_value_seed(Seed)?));
        }
        // A repeated key keeps its last value, as serde_json's own `Value`
        // does.
        Ok(Box::new(CelMap::from(
            entries.into_iter().collect::<HashMap<_, _>>(),
        )))
    }
}

/// An object's key, borrowed from the input unless it has escapes. (serde's
/// own `Cow<str>` always copies: one allocation per claim, skipped or not.)
struct KeySeed;

impl<'de> de::DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
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

/// `CelVisitor` as a seed, for the elements of lists and maps.
struct Seed;

impl<'de> de::DeserializeSeed<'de> for Seed {
    type Value = Box<dyn Val + 'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(CelVisitor { only: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::{Context, Env, Value};
    use std::sync::Arc;

    fn eval(claims: &str, expr: &str) -> Value {
        let env = Arc::new(Env::stdlib());
        let mut ctx = Context::with_env(Arc::clone(&env));
        ctx.add_variable_as_val("claims", parse(claims, None).expect("claims parse"));
        let program = env.compile(expr).expect("compiles");
        program.execute(&ctx).expect("evaluates")
    }

    #[test]
    fn json_types_map_to_cel_types() {
        let claims = serde_json::json!({
            "i": 1700000000, "neg": -3, "big": u64::MAX, "f": 1.5, "b": true, "n": null,
            "s": "x", "esc": "a\"b\u{e9}", "l": [1, "two"], "m": {"k": {"deep": "v"}},
            "kubernetes.io": {"namespace": "ns"}, "k\u{e9}y": 1,
        })
        .to_string();
        let t = |expr| assert_eq!(eval(&claims, expr), Value::Bool(true), "{expr}");
        t("type(claims.i) == int && claims.i + 1 == 1700000001");
        t("claims.neg < 0");
        t("type(claims.big) == uint && claims.big == 18446744073709551615u");
        t("claims.f > 1.0 && type(claims.f) == double");
        t("claims.b && claims.n == null");
        t("claims.s == 'x' && claims.esc == 'a\"b\u{e9}'");
        t("claims.l[1] == 'two' && size(claims.l) == 2");
        t("claims.m.k.deep == 'v'");
        t("claims['kubernetes.io'].namespace == 'ns'");
        t("claims['k\u{e9}y'] == 1");
    }

    #[test]
    fn only_an_object_is_accepted() {
        for (bad, problem) in [
            ("[1]", "claims must be a JSON object"),
            ("\"sub\"", "claims must be a JSON object"),
            ("null", "claims must be a JSON object"),
            ("", "claims must be a JSON object"),
            ("{", "claims are not valid JSON"),
            ("{} x", "claims are not valid JSON"),
        ] {
            let err = parse(bad, None)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(err.starts_with(problem), "{bad:?}: {err}");
        }
    }

    #[test]
    fn keys_with_escapes_are_read() {
        assert_eq!(
            eval(r#"{"a\"b\u00e9": 1}"#, "claims['a\"b\u{e9}']"),
            Value::Int(1)
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        assert_eq!(eval(r#"{"a": 1, "a": 2}"#, "claims.a"), Value::Int(2));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&deep, None).is_err());
    }

    #[test]
    fn only_the_claims_asked_for_are_converted() {
        let only: BTreeSet<String> = ["sub".to_owned(), "missing".to_owned()].into();
        let claims = r#"{"sub": "x", "aud": ["a"], "nested": {"deep": [1, {"k": null}]}}"#;
        let val = parse(claims, Some(&only)).expect("parses");
        let env = Arc::new(Env::stdlib());
        let mut ctx = Context::with_env(Arc::clone(&env));
        ctx.add_variable_as_val("claims", val);
        let run = |expr| env.compile(expr).expect("compiles").execute(&ctx);
        assert_eq!(run("claims.sub"), Ok(Value::from("x")));
        assert_eq!(run("size(claims)"), Ok(Value::Int(1)));
        assert_eq!(run("has(claims.missing)"), Ok(Value::Bool(false)));
        // Skipped claims are still parsed: invalid JSON is refused as ever.
        assert!(parse(r#"{"sub": "x", "aud": [1,]}"#, Some(&only)).is_err());
    }
}
