//! Turns the verified claims (a JSON object) into the CEL value bound to
//! `claims`.
//!
//! Values borrow the strings of the parsed JSON rather than copying them: an
//! evaluation is a few microseconds, and a token's claims are mostly strings.

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use serde_json::Value as Json;
use std::collections::HashMap;

/// The CEL value of a JSON value.
///
/// Integers become `int` (`uint` only past `i64::MAX`), as they do for
/// Kubernetes' CEL over JSON: operators compare `claims.exp > 1700000000`
/// with `int` literals, and CEL has no `int + uint` overload.
pub fn to_cel(json: &Json) -> Box<dyn Val + '_> {
    match json {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                // Not an integer: serde_json without `arbitrary_precision`
                // always has an f64 for it.
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => Box::new(CelList::from(items.iter().map(to_cel).collect::<Vec<_>>())),
        Json::Object(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), to_cel(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::{Context, Env, Value};
    use std::sync::Arc;

    fn eval(claims: &Json, expr: &str) -> Value {
        let env = Arc::new(Env::stdlib());
        let mut ctx = Context::with_env(Arc::clone(&env));
        ctx.add_variable_as_val("claims", to_cel(claims));
        let program = env.compile(expr).expect("compiles");
        program.execute(&ctx).expect("evaluates")
    }

    #[test]
    fn json_types_map_to_cel_types() {
        let claims = serde_json::json!({
            "i": 1700000000, "neg": -3, "big": u64::MAX, "f": 1.5, "b": true, "n": null,
            "s": "x", "l": [1, "two"], "m": {"k": {"deep": "v"}}, "kubernetes.io": {"namespace": "ns"},
        });
        assert_eq!(
            eval(
                &claims,
                "type(claims.i) == int && claims.i + 1 == 1700000001"
            ),
            Value::Bool(true)
        );
        assert_eq!(eval(&claims, "claims.neg < 0"), Value::Bool(true));
        assert_eq!(eval(&claims, "type(claims.big) == uint"), Value::Bool(true));
        assert_eq!(eval(&claims, "claims.f > 1.0"), Value::Bool(true));
        assert_eq!(
            eval(&claims, "claims.b && claims.n == null"),
            Value::Bool(true)
        );
        assert_eq!(
            eval(&claims, "claims.l[1] == 'two' && size(claims.l) == 2"),
            Value::Bool(true)
        );
        assert_eq!(eval(&claims, "claims.m.k.deep"), Value::from("v"));
        assert_eq!(
            eval(&claims, "claims['kubernetes.io'].namespace"),
            Value::from("ns")
        );
    }
}
