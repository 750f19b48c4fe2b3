//! Registered-claim checks on a token whose signature has verified:
//! audience, expiry, not-before, issued-at and maximum lifetime.

use serde_json::{Map, Value};

use super::error::{VerifyError, echo};

/// The issuer-specific rules the claims are checked against.
pub(crate) struct ClaimRules<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub leeway: u64,
    pub max_lifetime: Option<u64>,
}

/// Checks the claims at time `now` (unix seconds); returns `exp`.
pub(crate) fn check(
    claims: &Map<String, Value>,
    rules: &ClaimRules<'_>,
    now: u64,
) -> Result<u64, VerifyError> {
    let issuer = || rules.issuer.to_owned();
    let leeway = rules.leeway;

    let got = audiences(claims)?;
    if !got
        .iter()
        .any(|aud| rules.audiences.iter().any(|want| want == aud))
    {
        return Err(VerifyError::WrongAudience {
            issuer: issuer(),
            got: got.iter().take(8).map(|a| echo(a)).collect(),
            expected: rules.audiences.to_vec(),
        });
    }

    let exp = numeric_date(claims, "exp")?.ok_or(VerifyError::MissingClaim("exp"))?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;

    // RFC 7519 §4.1.4: must be refused "on or after" exp.
    if now >= exp.saturating_add(leeway) {
        return Err(VerifyError::Expired {
            issuer: issuer(),
            exp,
            now,
            leeway,
        });
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err(VerifyError::NotYetValid {
            issuer: issuer(),
            nbf,
            now,
            leeway,
        });
    }
    if let Some(iat) = iat
        && iat > now.saturating_add(leeway)
    {
        return Err(VerifyError::IssuedInFuture {
            issuer: issuer(),
            iat,
            now,
            leeway,
        });
    }
    if let Some(max) = rules.max_lifetime {
        // iat is when the token was made; without it nbf is the best start.
        let start = iat.or(nbf).ok_or(VerifyError::MissingClaim("iat"))?;
        let lifetime = exp.saturating_sub(start);
        if lifetime > max {
            return Err(VerifyError::LifetimeTooLong {
                issuer: issuer(),
                lifetime,
                max,
            });
        }
    }
    Ok(exp)
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
fn audiences(claims: &Map<String, Value>) -> Result<Vec<&str>, VerifyError> {
    match claims.get("aud") {
        None => Err(VerifyError::MissingClaim("aud")),
        Some(Value::String(aud)) => Ok(vec![aud]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    VerifyError::Malformed("claim \"aud\" holds a non-string".into())
                })
            })
            .collect(),
        Some(_) => Err(VerifyError::Malformed(
            "claim \"aud\" is neither a string nor an array".into(),
        )),
    }
}

/// A NumericDate claim: non-negative seconds, fractions truncated.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, VerifyError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let not_a_date = || VerifyError::Malformed(format!("claim {name:?} is not a NumericDate"));
    let Value::Number(n) = value else {
        return Err(not_a_date());
    };
    if let Some(secs) = n.as_u64() {
        return Ok(Some(secs));
    }
    match n.as_f64() {
        // Past u64 seconds the value is absurd; saturate rather than wrap.
        Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
        _ => Err(not_a_date()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn rules(max_lifetime: Option<u64>) -> (Vec<String>, Option<u64>) {
        (vec!["gantry".to_owned(), "other".to_owned()], max_lifetime)
    }

    fn run(claims: Value, max_lifetime: Option<u64>) -> Result<u64, VerifyError> {
        let (audiences, max_lifetime) = rules(max_lifetime);
        let rules = ClaimRules {
            issuer: "https://i",
            audiences: &audiences,
            leeway: 60,
            max_lifetime,
        };
        let Value::Object(map) = claims else {
            panic!("object")
        };
        check(&map, &rules, NOW)
    }

    #[test]
    fn audience_forms() {
        assert!(run(json!({"aud": "gantry", "exp": NOW + 10}), None).is_ok());
        assert!(run(json!({"aud": ["x", "other"], "exp": NOW + 10}), None).is_ok());
        assert!(matches!(
            run(json!({"aud": ["x"], "exp": NOW + 10}), None),
            Err(VerifyError::WrongAudience { .. })
        ));
        assert!(matches!(
            run(json!({"aud": [], "exp": NOW + 10}), None),
            Err(VerifyError::WrongAudience { .. })
        ));
        assert!(matches!(
            run(json!({"aud": "Gantry", "exp": NOW + 10}), None),
            Err(VerifyError::WrongAudience { .. })
        ));
        assert!(matches!(
            run(json!({"aud": ["gantry", 1], "exp": NOW + 10}), None),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            run(json!({"aud": {"a": 1}, "exp": NOW + 10}), None),
            Err(VerifyError::Malformed(_))
        ));
        assert_eq!(
            run(json!({"exp": NOW + 10}), None),
            Err(VerifyError::MissingClaim("aud"))
        );
    }

    #[test]
    fn times_with_leeway() {
        let ok = |c: Value| run(c, None);
        assert_eq!(ok(json!({"aud": "gantry", "exp": NOW + 1})), Ok(NOW + 1));
        assert!(
            ok(json!({"aud": "gantry", "exp": NOW - 59})).is_ok(),
            "within leeway"
        );
        assert!(matches!(
            ok(json!({"aud": "gantry", "exp": NOW - 60})),
            Err(VerifyError::Expired { .. })
        ));
        assert_eq!(
            ok(json!({"aud": "gantry"})),
            Err(VerifyError::MissingClaim("exp"))
        );
        assert!(ok(json!({"aud": "gantry", "exp": NOW + 100, "nbf": NOW + 60})).is_ok());
        assert!(matches!(
            ok(json!({"aud": "gantry", "exp": NOW + 100, "nbf": NOW + 61})),
            Err(VerifyError::NotYetValid { .. })
        ));
        assert!(ok(json!({"aud": "gantry", "exp": NOW + 100, "iat": NOW + 60})).is_ok());
        assert!(matches!(
            ok(json!({"aud": "gantry", "exp": NOW + 100, "iat": NOW + 61})),
            Err(VerifyError::IssuedInFuture { .. })
        ));
        assert!(ok(json!({"aud": "gantry", "exp": (NOW + 10) as f64 + 0.5})).is_ok());
        for bad in [json!("soon"), json!(-1), json!(null), json!(-1.5)] {
            assert!(matches!(
                ok(json!({"aud": "gantry", "exp": bad})),
                Err(VerifyError::Malformed(_))
            ));
        }
    }

    #[test]
    fn max_lifetime() {
        let c = |iat: Option<u64>, nbf: Option<u64>| {
            let mut v = json!({"aud": "gantry", "exp": NOW + 300});
            if let Some(iat) = iat {
                v["iat"] = json!(iat);
            }
            if let Some(nbf) = nbf {
                v["nbf"] = json!(nbf);
            }
            v
        };
        assert!(run(c(Some(NOW - 300), None), Some(600)).is_ok());
        assert!(matches!(
            run(c(Some(NOW - 301), None), Some(600)),
            Err(VerifyError::LifetimeTooLong {
                lifetime: 601,
                max: 600,
                ..
            })
        ));
        // iat wins over an earlier nbf (GitHub sets nbf before iat).
        assert!(run(c(Some(NOW), Some(NOW - 1000)), Some(600)).is_ok());
        assert!(matches!(
            run(c(None, Some(NOW - 1000)), Some(600)),
            Err(VerifyError::LifetimeTooLong { .. })
        ));
        assert_eq!(
            run(c(None, None), Some(600)),
            Err(VerifyError::MissingClaim("iat"))
        );
        assert!(run(c(None, None), None).is_ok());
    }
}
