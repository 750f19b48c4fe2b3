//! The OIDC verifier against an in-process issuer: every verification rule
//! and the attack matrix of issue 4, each refused with its precise error.
//! Nothing here sleeps for a fixed time and then asserts: waits poll a
//! condition with a generous deadline.

mod issuer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry::auth::oidc::{
    DEFAULT_ALGORITHMS, FetchOptions, IssuerConfig, MAX_TOKEN_BYTES, OidcVerifier, VerifyError,
    unverified_issuer,
};
use issuer::{
    Algorithm, IssuerOptions, KeySet, PublicKeyForm, SignOpts, TestIssuer, b64, forge, now,
};
use serde_json::{Value, json};

const AUD: &str = "gantry";

/// Short timings so background behaviour shows within a test.
fn fast() -> FetchOptions {
    FetchOptions {
        timeout: Duration::from_secs(5),
        max_response_bytes: 64 * 1024,
        refresh_interval: Duration::from_secs(3600),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        kid_miss_cooldown: Duration::from_secs(3600),
    }
}

fn config(issuer: &str) -> IssuerConfig {
    IssuerConfig::new(issuer, vec![AUD.to_owned(), "other".to_owned()])
}

fn verifier(configs: Vec<IssuerConfig>, opts: FetchOptions) -> OidcVerifier {
    OidcVerifier::new(configs, opts).unwrap_or_else(|p| panic!("config refused: {p:?}"))
}

/// A verifier for `issuer`, started, with keys loaded.
async fn ready(issuer: &TestIssuer, opts: FetchOptions) -> OidcVerifier {
    let v = verifier(vec![config(&issuer.issuer())], opts);
    v.start();
    wait_for("keys loaded", || {
        let v = v.clone();
        async move { v.status().iter().all(|s| s.keys_loaded > 0) }
    })
    .await;
    v
}

async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("object").remove(key);
    claims
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, VerifyError>,
    matches: impl Fn(&VerifyError) -> bool,
) {
    match result {
        Err(e) if matches(&e) => {
            // The log text never contains a token, and clients get a generic text.
            assert!(!e.client_message().is_empty());
        }
        other => panic!("unexpected result: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Accepted tokens

#[tokio::test]
async fn valid_tokens_of_every_algorithm_are_accepted_with_their_claims() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let claims = issuer.claims(AUD);
        let token = issuer.sign(claims.clone(), SignOpts::alg(alg));
        let verified = v
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg:?} refused: {e}"));
        assert_eq!(verified.issuer, issuer.issuer());
        assert_eq!(
            verified.subject.as_deref(),
            Some("system:serviceaccount:team-a:pusher")
        );
        assert_eq!(verified.expires_at, claims["exp"].as_u64().expect("exp"));
        let passed_on: Value =
            serde_json::from_str(&verified.claims_json).expect("the claims' JSON text");
        assert_eq!(passed_on, claims, "{alg:?}");
    }
}

#[tokio::test]
async fn audience_may_be_a_list_containing_one_configured_audience() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    let claims = with(
        issuer.claims(AUD),
        "aud",
        json!(["https://elsewhere", "other"]),
    );
    assert!(
        v.verify(&issuer.sign(claims, SignOpts::default()))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn token_without_kid_is_checked_against_keys_of_its_algorithm() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let token = issuer.sign(issuer.claims(AUD), SignOpts::alg(alg).no_kid());
        assert!(v.verify(&token).await.is_ok(), "{alg:?}");
    }
}

#[tokio::test]
async fn typ_may_be_absent_jwt_or_at_jwt_and_nothing_else() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    for typ in [
        None,
        Some("JWT"),
        Some("jwt"),
        Some("at+jwt"),
        Some("application/at+jwt"),
    ] {
        let token = issuer.sign(issuer.claims(AUD), SignOpts::default().typ(typ));
        assert!(v.verify(&token).await.is_ok(), "typ {typ:?}");
    }
    for typ in ["JOSE", "dpop+jwt", "logout+jwt", ""] {
        let token = issuer.sign(issuer.claims(AUD), SignOpts::default().typ(Some(typ)));
        assert_refused(
            v.verify(&token).await,
            |e| matches!(e, VerifyError::BadType(t) if t == typ),
        );
    }
}

#[tokio::test]
async fn unverified_issuer_reads_iss_only() {
    let issuer = TestIssuer::start().await;
    let token = issuer.sign(issuer.claims(AUD), SignOpts::default());
    assert_eq!(unverified_issuer(&token), Ok(issuer.issuer()));
    // Forged tokens still name an issuer: routing is not verification.
    assert_eq!(
        unverified_issuer(&forge(&json!({"alg": "none"}), &json!({"iss": "x"}), "")),
        Ok("x".into())
    );
    assert_eq!(
        unverified_issuer("garbage").map_err(|e| e.client_message()),
        Err("malformed token")
    );
}

// ---------------------------------------------------------------------------
// The attack matrix

#[tokio::test]
async fn alg_none_is_refused() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    let before = issuer.hit_count();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = issuer::unsigned_token(alg, &issuer.claims(AUD));
        assert_refused(
            v.verify(&token).await,
            |e| matches!(e, VerifyError::AlgorithmNotAllowed { alg: a, issuer: None } if a == alg),
        );
        // Same with a signature part that is not empty.
        let token = format!("{token}c2lnbmF0dXJl");
        assert_refused(v.verify(&token).await, |e| {
            matches!(e, VerifyError::AlgorithmNotAllowed { .. })
        });
    }
    // Refused before any key lookup: no refresh was triggered.
    assert_eq!(issuer.hit_count(), before);
}

#[tokio::test]
async fn hs256_signed_with_the_issuers_public_key_is_refused() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    for form in PublicKeyForm::ALL {
        let token = issuer.hs256_with_public_key(&issuer.claims(AUD), form);
        assert_refused(
            v.verify(&token).await,
            |e| matches!(e, VerifyError::AlgorithmNotAllowed { alg, .. } if alg == "HS256"),
        );
    }
    for alg in ["HS384", "HS512"] {
        let token = forge(
            &json!({"alg": alg, "kid": "rsa-1"}),
            &issuer.claims(AUD),
            "c2ln",
        );
        assert_refused(v.verify(&token).await, |e| {
            matches!(e, VerifyError::AlgorithmNotAllowed { .. })
        });
    }
}

#[tokio::test]
async fn unknown_issuer_is_refused_without_any_fetch() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    let before = issuer.hit_count();
    for iss in [
        "https://evil.example",
        &format!("{}/", issuer.issuer()),
        &issuer.issuer().to_uppercase(),
    ] {
        let token = issuer.sign(
            with(issuer.claims(AUD), "iss", json!(iss)),
            SignOpts::default(),
        );
        assert_refused(
            v.verify(&token).await,
            |e| matches!(e, VerifyError::UnknownIssuer(i) if i == iss),
        );
    }
    let token = issuer.sign(without(issuer.claims(AUD), "iss"), SignOpts::default());
    assert_refused(v.verify(&token).await, |e| {
        *e == VerifyError::MissingClaim("iss")
    });
    assert_eq!(issuer.hit_count(), before);
}

#[tokio::test]
async fn issuer_a_claims_signed_with_issuer_b_key_are_refused() {
    let a = TestIssuer::start_with(IssuerOptions {
        rsa_slot: 0,
        ..Default::default()
    })
    .await;
    let b = TestIssuer::start_with(IssuerOptions {
        rsa_slot: 1,
        ..Default::default()
    })
    .await;
    let v = verifier(vec![config(&a.issuer()), config(&b.issuer())], fast());
    v.start();
    wait_for("both issuers' keys", || {
        let v = v.clone();
        async move { v.status().iter().all(|s| s.keys_loaded > 0) }
    })
    .await;
    // Both issuers' own tokens are fine.
    assert!(
        v.verify(&a.sign(a.claims(AUD), SignOpts::default()))
            .await
            .is_ok()
    );
    assert!(
        v.verify(&b.sign(b.claims(AUD), SignOpts::default()))
            .await
            .is_ok()
    );
    // A's claims under B's keys: B's kids are the same names as A's ("rsa-1",
    // "ec-1"), so only the key material differs.
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let token = b.sign(a.claims(AUD), SignOpts::alg(alg));
        assert_refused(
            v.verify(&token).await,
            |e| matches!(e, VerifyError::BadSignature { issuer, .. } if *issuer == a.issuer()),
        );
        let token = b.sign(a.claims(AUD), SignOpts::alg(alg).no_kid());
        assert_refused(v.verify(&token).await, |e| {
            matches!(e, VerifyError::BadSignature { .. })
        });
    }
    // A kid only B has is unknown to A.
    let kid = b.rotate_in_new_key();
    let token = b.sign(a.claims(AUD), SignOpts::alg(Algorithm::ES256).kid(&kid));
    assert_refused(
        v.verify(&token).await,
        |e| matches!(e, VerifyError::UnknownKey { issuer, kid: Some(k), .. } if *issuer == a.issuer() && *k == kid),
    );
}

#[tokio::test]
async fn algorithm_outside_the_issuers_allow_list_is_refused() {
    let issuer = TestIssuer::start().await;
    let mut cfg = config(&issuer.issuer());
    cfg.algorithms = vec![Algorithm::ES256];
    let v = verifier(vec![cfg], fast());
    v.start();
    let ok = issuer.sign(issuer.claims(AUD), SignOpts::alg(Algorithm::ES256));
    wait_for("ES256 accepted", || {
        let (v, ok) = (v.clone(), ok.clone());
        async move { v.verify(&ok).await.is_ok() }
    })
    .await;
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let token = issuer.sign(issuer.claims(AUD), SignOpts::alg(alg));
        assert_refused(v.verify(&token).await, |e| {
            matches!(
                e,
                VerifyError::AlgorithmNotAllowed {
                    issuer: Some(_),
                    ..
                }
            )
        });
    }
    // An ES256 token naming the Ed25519 key's kid: never tried with that key.
    let header = json!({"alg": "ES256", "kid": "ed-1"})
        .as_object()
        .cloned()
        .expect("object");
    let token = issuer
        .key("ec-1")
        .sign_with_header(Algorithm::ES256, &header, &issuer.claims(AUD));
    assert_refused(v.verify(&token).await, |e| {
        matches!(e, VerifyError::UnknownKey { .. })
    });
}

#[tokio::test]
async fn wrong_or_missing_audience_is_refused() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    for aud in [
        json!("someone-else"),
        json!(["a", "b"]),
        json!([]),
        json!("GANTRY"),
    ] {
        let token = issuer.sign(
            with(issuer.claims(AUD), "aud", aud.clone()),
            SignOpts::default(),
        );
        assert_refused(
            v.verify(&token).await,
            |e| matches!(e, VerifyError::WrongAudience { expected, .. } if expected == &["gantry", "other"]),
        );
    }
    let token = issuer.sign(without(issuer.claims(AUD), "aud"), SignOpts::default());
    assert_refused(v.verify(&token).await, |e| {
        *e == VerifyError::MissingClaim("aud")
    });
}

#[tokio::test]
async fn expiry_is_required_and_checked_with_the_leeway() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await; // default leeway: 60 s
    let claims = |exp: u64| with(issuer.claims(AUD), "exp", json!(exp));
    let t = now();
    assert!(
        v.verify(&issuer.sign(claims(t - 30), SignOpts::default()))
            .await
            .is_ok(),
        "within leeway"
    );
    assert_refused(
        v.verify(&issuer.sign(claims(t - 120), SignOpts::default()))
            .await,
        |e| matches!(e, VerifyError::Expired { exp, leeway: 60, .. } if *exp == t - 120),
    );
    let token = issuer.sign(without(issuer.claims(AUD), "exp"), SignOpts::default());
    assert_refused(v.verify(&token).await, |e| {
        *e == VerifyError::MissingClaim("exp")
    });
    let token = issuer.sign(
        with(issuer.claims(AUD), "exp", json!("tomorrow")),
        SignOpts::default(),
    );
    assert_refused(v.verify(&token).await, |e| {
        matches!(e, VerifyError::Malformed(_))
    });
}

#[tokio::test]
async fn not_before_and_issued_at_in_the_future_are_refused() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    let t = now();
    let future = |claim: &str, at: u64| {
        let c = with(issuer.claims(AUD), claim, json!(at));
        with(c, "exp", json!(at + 300))
    };
    assert!(
        v.verify(&issuer.sign(future("nbf", t + 30), SignOpts::default()))
            .await
            .is_ok(),
        "within leeway"
    );
    assert_refused(
        v.verify(&issuer.sign(future("nbf", t + 600), SignOpts::default()))
            .await,
        |e| matches!(e, VerifyError::NotYetValid { .. }),
    );
    assert_refused(
        v.verify(&issuer.sign(future("iat", t + 600), SignOpts::default()))
            .await,
        |e| matches!(e, VerifyError::IssuedInFuture { .. }),
    );
}

#[tokio::test]
async fn lifetime_over_the_maximum_is_refused() {
    let issuer = TestIssuer::start().await;
    let mut cfg = config(&issuer.issuer());
    cfg.max_token_lifetime = Some(Duration::from_secs(600));
    let v = verifier(vec![cfg], fast());
    v.start();
    let t = now();
    let at_t = with(with(issuer.claims(AUD), "iat", json!(t)), "nbf", json!(t));
    let ok = issuer.sign(
        with(at_t.clone(), "exp", json!(t + 600)),
        SignOpts::default(),
    );
    wait_for("keys", || {
        let (v, ok) = (v.clone(), ok.clone());
        async move { v.verify(&ok).await.is_ok() }
    })
    .await;
    let long = with(at_t, "exp", json!(t + 3600));
    assert_refused(
        v.verify(&issuer.sign(long.clone(), SignOpts::default()))
            .await,
        |e| {
            matches!(
                e,
                VerifyError::LifetimeTooLong {
                    lifetime: 3600,
                    max: 600,
                    ..
                }
            )
        },
    );
    // Without iat, nbf marks the start; with neither, the lifetime is unknown.
    let token = issuer.sign(without(long.clone(), "iat"), SignOpts::default());
    assert_refused(v.verify(&token).await, |e| {
        matches!(e, VerifyError::LifetimeTooLong { .. })
    });
    let token = issuer.sign(without(without(long, "iat"), "nbf"), SignOpts::default());
    assert_refused(v.verify(&token).await, |e| {
        *e == VerifyError::MissingClaim("iat")
    });
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_decoding() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    assert_refused(v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).await, |e| {
        *e == VerifyError::TooLarge
    });
    let padding = "x".repeat(MAX_TOKEN_BYTES);
    let token = issuer.sign(
        with(issuer.claims(AUD), "padding", json!(padding)),
        SignOpts::default(),
    );
    assert_refused(v.verify(&token).await, |e| *e == VerifyError::TooLarge);
    // Large but under the cap is fine.
    let padding = "x".repeat(MAX_TOKEN_BYTES / 2);
    let token = issuer.sign(
        with(issuer.claims(AUD), "padding", json!(padding)),
        SignOpts::default(),
    );
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    let good = issuer.sign(issuer.claims(AUD), SignOpts::default());
    let parts: Vec<&str> = good.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let header = b64(json!({"alg": "RS256", "kid": "rsa-1"}).to_string());
    let malformed = [
        String::new(),
        "not-a-token".into(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.extra"),
        format!("{h}.{p}.{s}.a.b"),                // JWE shape
        format!("{h}=.{p}.{s}"),                   // padded base64
        format!("{h}.{p}.{s}=="),                  // padded signature
        format!("{h}.{p}*.{s}"),                   // not base64url
        format!("{h}.{p}.{}+", &s[..s.len() - 1]), // not base64url
        format!(" {good}"),                        // whitespace
        format!("{h}.{}.{s}", b64("{\"iss\": ")),  // truncated JSON
        format!("{h}.{}.{s}", b64("[\"iss\"]")),   // not an object
        format!("{}.{p}.{s}", b64("\"RS256\"")),   // header not an object
        format!("{}.{p}.{s}", b64(json!({"alg": 256}).to_string())),
        format!("{}.{p}.{s}", b64(json!({"kid": "rsa-1"}).to_string())), // no alg
        format!(
            "{}.{p}.{s}",
            b64(json!({"alg": "RS256", "kid": 1}).to_string())
        ),
        format!("{header}.{p}."), // empty signature
        format!(
            "{}.{p}.{s}",
            b64(json!({"alg": "RS256", "crit": ["exp"], "exp": 1}).to_string())
        ),
        format!("{}.{}.{s}", header, b64(json!({"iss": 42}).to_string())),
    ];
    for token in &malformed {
        assert_refused(v.verify(token).await, |e| {
            matches!(e, VerifyError::Malformed(_))
        });
    }
    // A signature that decodes but is wrong, and a valid one on altered claims.
    let flipped = format!(
        "{h}.{p}.{}",
        if s.starts_with('A') {
            s.replacen('A', "B", 1)
        } else {
            format!("A{}", &s[1..])
        }
    );
    assert_refused(v.verify(&flipped).await, |e| {
        matches!(e, VerifyError::BadSignature { .. })
    });
    let altered = b64(with(issuer.claims(AUD), "sub", json!("admin")).to_string());
    assert_refused(v.verify(&format!("{h}.{altered}.{s}")).await, |e| {
        matches!(e, VerifyError::BadSignature { .. })
    });
}

#[tokio::test]
async fn jku_x5u_and_jwk_headers_are_never_followed() {
    let issuer = TestIssuer::start_with(IssuerOptions {
        rsa_slot: 0,
        ..Default::default()
    })
    .await;
    let attacker = TestIssuer::start_with(IssuerOptions {
        rsa_slot: 1,
        ..Default::default()
    })
    .await;
    let v = ready(&issuer, fast()).await;
    let evil = attacker.url();
    let forge_opts = |alg: Algorithm, kid: &str| {
        SignOpts::alg(alg)
            .kid(kid)
            .header("jku", json!(format!("{evil}/jwks")))
            .header("x5u", json!(format!("{evil}/cert.pem")))
            .header("jwk", attacker.key(kid).jwk.clone())
    };
    // The attacker's keys under the attacker's kids, and under the issuer's
    // kid names ("rsa-1", "ec-1" exist at both).
    let rotated = attacker.rotate_in_new_key();
    let token = attacker.sign(issuer.claims(AUD), forge_opts(Algorithm::ES256, &rotated));
    assert_refused(v.verify(&token).await, |e| {
        matches!(e, VerifyError::UnknownKey { .. })
    });
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
    ] {
        let token = attacker.sign(issuer.claims(AUD), forge_opts(alg, kid));
        assert_refused(v.verify(&token).await, |e| {
            matches!(e, VerifyError::BadSignature { .. })
        });
    }
    // The same headers on a genuine token change nothing either.
    let genuine = issuer.sign(
        issuer.claims(AUD),
        SignOpts::default()
            .header("jku", json!(format!("{evil}/jwks")))
            .header("x5u", json!(evil)),
    );
    assert!(v.verify(&genuine).await.is_ok());
    assert_eq!(
        attacker.hit_count(),
        0,
        "the attacker's server was contacted"
    );
}

// ---------------------------------------------------------------------------
// Keys: rotation, refresh limits, outages

#[tokio::test]
async fn unknown_kid_is_accepted_once_the_issuer_rotates_it_in() {
    let issuer = TestIssuer::start().await;
    let v = ready(
        &issuer,
        FetchOptions {
            kid_miss_cooldown: Duration::from_secs(2),
            ..fast()
        },
    )
    .await;
    let kid = issuer.add_unpublished_key(Algorithm::ES256);
    let token = issuer.sign(
        issuer.claims(AUD),
        SignOpts::alg(Algorithm::ES256).kid(&kid),
    );

    let fetches = issuer.fetch_count();
    assert_refused(
        v.verify(&token).await,
        |e| matches!(e, VerifyError::UnknownKey { kid: Some(k), .. } if *k == kid),
    );
    assert_eq!(
        issuer.fetch_count(),
        fetches + 1,
        "an unknown kid refreshes the JWKS once"
    );

    issuer.publish_key(&kid);
    // Within the cool-down a second miss causes no fetch.
    assert_refused(v.verify(&token).await, |e| {
        matches!(e, VerifyError::UnknownKey { .. })
    });
    assert_eq!(
        issuer.fetch_count(),
        fetches + 1,
        "second miss within the cool-down fetched"
    );

    // After the cool-down the next miss refreshes and finds the rotated key.
    wait_for("rotated key accepted", || {
        let (v, token) = (v.clone(), token.clone());
        async move { v.verify(&token).await.is_ok() }
    })
    .await;
    let after = issuer.fetch_count();
    assert!(
        after >= fetches + 2,
        "the key can only arrive by another fetch"
    );
    // Now it is cached: no further fetches.
    for _ in 0..10 {
        assert!(v.verify(&token).await.is_ok());
    }
    assert_eq!(issuer.fetch_count(), after);
}

#[tokio::test]
async fn concurrent_unknown_kid_misses_share_one_fetch() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await; // cool-down: 1 h
    let kid = issuer.add_unpublished_key(Algorithm::ES256);
    issuer.publish_key(&kid); // published, but the verifier has not seen it
    let token = Arc::new(issuer.sign(
        issuer.claims(AUD),
        SignOpts::alg(Algorithm::ES256).kid(&kid),
    ));
    // Slow responses make the 50 misses overlap the one fetch.
    issuer.set_delay(Duration::from_millis(300));
    let fetches = issuer.fetch_count();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert!(
            task.await.expect("task").is_ok(),
            "every waiter sees the shared fetch's keys"
        );
    }
    let caused = issuer.fetch_count() - fetches;
    assert!(
        (1..=2).contains(&caused),
        "50 concurrent misses caused {caused} JWKS fetches"
    );

    // Misses of a kid that stays unknown, within the cool-down: no fetch at all.
    issuer.set_delay(Duration::ZERO);
    let fetches = issuer.fetch_count();
    let stranger = issuer.add_unpublished_key(Algorithm::ES256);
    let token = Arc::new(issuer.sign(
        issuer.claims(AUD),
        SignOpts::alg(Algorithm::ES256).kid(&stranger),
    ));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert_refused(task.await.expect("task"), |e| {
            matches!(e, VerifyError::UnknownKey { .. })
        });
    }
    assert_eq!(
        issuer.fetch_count(),
        fetches,
        "misses within the cool-down fetched"
    );
}

#[tokio::test]
async fn issuer_down_at_startup_is_used_as_soon_as_it_answers() {
    // Nothing listens on the port yet: connections are refused.
    let port = issuer::reserve_port();
    let url = format!("http://127.0.0.1:{port}");
    let v = verifier(vec![config(&url)], fast());
    v.start(); // never blocks
    let stray = KeySet::generate(0).sign(
        &json!({"iss": url, "aud": AUD, "exp": now() + 300}),
        &SignOpts::default(),
    );
    assert_refused(
        v.verify(&stray).await,
        |e| matches!(e, VerifyError::KeysUnavailable { issuer } if *issuer == url),
    );
    wait_for("a failed attempt recorded", || {
        let v = v.clone();
        async move { v.status()[0].last_error.is_some() }
    })
    .await;
    let status = &v.status()[0];
    assert_eq!(status.keys_loaded, 0);
    assert!(status.last_success.is_none());

    // The issuer comes up; the backoff loop (not a restart, not a token:
    // the kid-miss cool-down is an hour) loads its keys.
    let issuer = TestIssuer::start_with(IssuerOptions {
        port,
        ..Default::default()
    })
    .await;
    let token = issuer.sign(issuer.claims(AUD), SignOpts::default());
    wait_for("keys loaded by the backoff loop", || {
        let v = v.clone();
        async move { v.status()[0].keys_loaded > 0 }
    })
    .await;
    assert!(v.verify(&token).await.is_ok());
    let status = &v.status()[0];
    assert!(status.last_error.is_none() && status.last_success.is_some());
    assert_eq!(status.consecutive_failures, 0);
}

/// A server on loopback that answers every request with `answer(base URL,
/// path)`; counts the requests.
async fn discovery_server(
    answer: impl Fn(String, String) -> axum::response::Response + Clone + Send + Sync + 'static,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (base, counter) = (url.clone(), hits.clone());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (answer, base, counter) = (answer.clone(), base.clone(), counter.clone());
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer(base, uri.path().to_owned())
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, hits)
}

/// Waits for the first failed fetch of a started verifier and returns its error.
async fn first_fetch_error(v: &OidcVerifier) -> String {
    wait_for("a failed attempt recorded", || {
        let v = v.clone();
        async move { v.status()[0].last_error.is_some() }
    })
    .await;
    v.status()[0].last_error.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_discovery_document_cannot_point_keys_at_the_metadata_service() {
    use axum::response::IntoResponse as _;
    for jwks_uri in [
        "https://169.254.169.254/latest/meta-data/keys",
        "https://[fd00:ec2::254]/keys",
        "https://[fe80::1]/keys",
    ] {
        let (url, _) = discovery_server(move |base, _| {
            axum::Json(json!({"issuer": base, "jwks_uri": jwks_uri})).into_response()
        })
        .await;
        // An issuer on loopback may reach loopback and private addresses,
        // never link-local or metadata ones.
        let v = verifier(vec![config(&url)], fast());
        v.start();
        let error = first_fetch_error(&v).await;
        assert!(
            error.contains("link-local or cloud-metadata"),
            "{jwks_uri}: {error}"
        );
        assert_eq!(v.status()[0].keys_loaded, 0);
    }
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() {
    use axum::response::IntoResponse as _;
    // 127.0.0.2 is loopback too, so only the change of host refuses it.
    let (url, hits) = discovery_server(|base, _| {
        let port = base.rsplit(':').next().unwrap_or("1").to_owned();
        (
            axum::http::StatusCode::FOUND,
            [(
                axum::http::header::LOCATION,
                format!("http://127.0.0.2:{port}/.well-known/openid-configuration"),
            )],
        )
            .into_response()
    })
    .await;
    let v = verifier(vec![config(&url)], fast());
    v.start();
    let error = first_fetch_error(&v).await;
    assert!(error.contains("redirect to another host"), "{error}");
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // A redirect within the same host and port is followed: the keys load.
    let issuer = TestIssuer::start().await;
    let jwks = issuer.jwks();
    let (url, _) = discovery_server(move |base, path| match path.as_str() {
        "/keys" => axum::Json(jwks.clone()).into_response(),
        "/moved" => {
            axum::Json(json!({"issuer": base, "jwks_uri": format!("{base}/keys")})).into_response()
        }
        _ => (
            axum::http::StatusCode::FOUND,
            [(axum::http::header::LOCATION, format!("{base}/moved"))],
        )
            .into_response(),
    })
    .await;
    let v = verifier(vec![config(&url)], fast());
    v.start();
    wait_for("keys loaded through a same-host redirect", || {
        let v = v.clone();
        async move { v.status()[0].keys_loaded > 0 }
    })
    .await;
}

#[tokio::test]
async fn issuer_answering_503_at_startup_recovers_without_restart() {
    let issuer = TestIssuer::start().await;
    issuer.set_down(true);
    let v = verifier(vec![config(&issuer.issuer())], fast());
    v.start();
    let token = issuer.sign(issuer.claims(AUD), SignOpts::default());
    wait_for("backoff retries", || {
        let v = v.clone();
        async move { v.status()[0].consecutive_failures >= 2 }
    })
    .await;
    assert!(
        v.status()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503"))
    );
    assert_refused(v.verify(&token).await, |e| {
        matches!(e, VerifyError::KeysUnavailable { .. })
    });
    issuer.set_down(false);
    wait_for("token accepted", || {
        let (v, token) = (v.clone(), token.clone());
        async move { v.verify(&token).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn keys_are_fetched_on_demand_without_start() {
    let issuer = TestIssuer::start().await;
    let v = verifier(vec![config(&issuer.issuer())], fast());
    let token = issuer.sign(issuer.claims(AUD), SignOpts::default());
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(issuer.fetch_count(), 1);
}

#[tokio::test]
async fn failed_refresh_keeps_the_last_good_keys() {
    let issuer = TestIssuer::start().await;
    let opts = FetchOptions {
        refresh_interval: Duration::from_millis(50),
        ..fast()
    };
    let v = ready(&issuer, opts).await;
    let token = issuer.sign(issuer.claims(AUD), SignOpts::default());
    assert!(v.verify(&token).await.is_ok());

    // Outages of every kind: 503, connection refused, garbage, an empty key set.
    issuer.set_down(true);
    wait_for("failed refresh (503)", || {
        let v = v.clone();
        async move { v.status()[0].consecutive_failures >= 2 }
    })
    .await;
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(v.status()[0].keys_loaded, 4);
    issuer.set_down(false);

    for body in [
        "<html>oops</html>",
        r#"{"keys": []}"#,
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
    ] {
        wait_for("recovered", || {
            let v = v.clone();
            async move { v.status()[0].consecutive_failures == 0 }
        })
        .await;
        issuer.set_jwks_body(Some(body));
        wait_for("failed refresh (bad JWKS)", || {
            let v = v.clone();
            async move { v.status()[0].consecutive_failures >= 2 }
        })
        .await;
        assert!(
            v.verify(&token).await.is_ok(),
            "keys lost after serving {body}"
        );
        issuer.set_jwks_body(None);
    }

    issuer.stop().await;
    wait_for("failed refresh (refused)", || {
        let v = v.clone();
        async move {
            v.status()[0]
                .last_error
                .as_deref()
                .is_some_and(|e| !e.contains("JWKS"))
        }
    })
    .await;
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn responses_over_the_size_cap_are_refused() {
    let issuer = TestIssuer::start().await;
    let opts = FetchOptions {
        max_response_bytes: 4096,
        ..fast()
    };
    let padding = "x".repeat(8192);
    issuer.set_jwks_body(Some(&format!(r#"{{"keys": [], "padding": "{padding}"}}"#)));
    let v = verifier(vec![config(&issuer.issuer())], opts);
    v.start();
    wait_for("failed fetch", || {
        let v = v.clone();
        async move { v.status()[0].last_error.is_some() }
    })
    .await;
    assert!(
        v.status()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("larger than 4096"))
    );
}

#[tokio::test]
async fn static_jwks_file_needs_no_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = KeySet::generate(1);
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, keys.jwks().to_string()).expect("write JWKS");
    let iss = "https://kubernetes.default.svc.cluster.local";
    let mut cfg = config(iss);
    cfg.jwks_file = Some(path.clone());
    // Not started: the file is read at construction.
    let v = verifier(vec![cfg], fast());
    let claims =
        json!({"iss": iss, "sub": "system:serviceaccount:a:b", "aud": [AUD], "exp": now() + 60});
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let verified = v
            .verify(&keys.sign(&claims, &SignOpts::alg(alg)))
            .await
            .expect("verified");
        assert_eq!(
            verified.subject.as_deref(),
            Some("system:serviceaccount:a:b")
        );
    }
    let token = keys.sign(&claims, &SignOpts::alg(Algorithm::ES256).kid("not-in-file"));
    assert_refused(v.verify(&token).await, |e| {
        matches!(e, VerifyError::UnknownKey { .. })
    });
    let status = &v.status()[0];
    assert_eq!(status.keys_loaded, 4);
    assert!(status.source.starts_with("file "));
}

#[tokio::test]
async fn discovery_url_override_for_kubernetes_style_issuers() {
    // The issuer names itself https://kubernetes.default.svc, but discovery
    // is served elsewhere (here: a loopback test server).
    let iss = "https://kubernetes.default.svc";
    let issuer = TestIssuer::start_with(IssuerOptions {
        issuer: Some(iss.into()),
        ..Default::default()
    })
    .await;
    let mut cfg = config(iss);
    cfg.discovery_url = Some(issuer.discovery_url());
    let v = verifier(vec![cfg], fast());
    let token = issuer.sign(issuer.claims(AUD), SignOpts::default());
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(issuer.discovery_count(), 1);

    // A discovery document naming another issuer is refused.
    let mut cfg = config("https://someone-else.example");
    cfg.discovery_url = Some(issuer.discovery_url());
    let v = verifier(vec![cfg], fast());
    v.start();
    wait_for("discovery refused", || {
        let v = v.clone();
        async move {
            v.status()[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("names issuer"))
        }
    })
    .await;
}

#[tokio::test]
async fn https_issuer_with_its_own_ca_file() {
    let issuer = TestIssuer::start_with(IssuerOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    assert!(issuer.url().starts_with("https://"));
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, issuer.ca_pem()).expect("write CA");
    let token = issuer.sign(issuer.claims(AUD), SignOpts::default());

    // Without the CA the certificate is not trusted.
    let v = verifier(vec![config(&issuer.issuer())], fast());
    v.start();
    wait_for("TLS failure recorded", || {
        let v = v.clone();
        async move { v.status()[0].last_error.is_some() }
    })
    .await;
    assert_refused(v.verify(&token).await, |e| {
        matches!(e, VerifyError::KeysUnavailable { .. })
    });
    let error = v.status()[0].last_error.clone().unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    // With it, keys load over HTTPS.
    let mut cfg = config(&issuer.issuer());
    cfg.ca_file = Some(ca);
    let v = verifier(vec![cfg], fast());
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn dropping_the_verifier_stops_its_background_loop() {
    let issuer = TestIssuer::start().await;
    issuer.set_down(true);
    let v = verifier(vec![config(&issuer.issuer())], fast());
    v.start();
    wait_for("retries", || {
        let hits = issuer.hit_count();
        async move { hits >= 2 }
    })
    .await;
    drop(v);
    tokio::time::sleep(Duration::from_millis(300)).await; // let an in-flight attempt end
    let hits = issuer.hit_count();
    tokio::time::sleep(Duration::from_millis(600)).await; // > 2 × max_backoff
    assert_eq!(
        issuer.hit_count(),
        hits,
        "fetching went on after the verifier was dropped"
    );
}

// ---------------------------------------------------------------------------
// Configuration

#[test]
fn every_configuration_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let bad_jwks = dir.path().join("jwks.json");
    std::fs::write(&bad_jwks, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).expect("write");
    let missing = PathBuf::from("/nonexistent/gantry/jwks.json");

    let ok = config("https://token.actions.githubusercontent.com");
    let duplicate = config("https://token.actions.githubusercontent.com");
    let mut hmac = config("https://hmac.example");
    hmac.algorithms = vec![Algorithm::RS256, Algorithm::HS256];
    let empty_aud = IssuerConfig::new("https://noaud.example", vec![]);
    let plain_http = config("http://issuer.example");
    let mut ca = config("https://ca.example");
    ca.ca_file = Some(not_pem);
    let mut missing_ca = config("https://missing-ca.example");
    missing_ca.ca_file = Some(dir.path().join("absent.pem"));
    let mut jwks_missing = config("https://jwks-missing.example");
    jwks_missing.jwks_file = Some(missing);
    let mut jwks_bad = config("https://jwks-bad.example");
    jwks_bad.jwks_file = Some(bad_jwks);
    let mut discovery = config("https://discovery.example");
    discovery.discovery_url = Some("http://10.0.0.1/.well-known/openid-configuration".into());
    let mut leeway = config("https://leeway.example");
    leeway.leeway = Duration::from_secs(86_400);

    let problems = OidcVerifier::new(
        vec![
            ok,
            duplicate,
            hmac,
            empty_aud,
            plain_http,
            ca,
            missing_ca,
            jwks_missing,
            jwks_bad,
            discovery,
            leeway,
        ],
        FetchOptions::default(),
    )
    .expect_err("invalid configuration accepted");
    let found: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.issuer.as_str(), p.field.as_str()))
        .collect();
    for expected in [
        ("https://token.actions.githubusercontent.com", "issuer"),
        ("https://hmac.example", "algorithms"),
        ("https://noaud.example", "audiences"),
        ("http://issuer.example", "issuer"),
        ("https://ca.example", "ca_file"),
        ("https://missing-ca.example", "ca_file"),
        ("https://jwks-missing.example", "jwks_file"),
        ("https://jwks-bad.example", "jwks_file"),
        ("https://discovery.example", "discovery_url"),
        ("https://leeway.example", "leeway_seconds"),
    ] {
        assert!(
            found.contains(&expected),
            "missing {expected:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 10, "{problems:#?}");
    let hmac = problems
        .iter()
        .find(|p| p.issuer == "https://hmac.example")
        .expect("hmac");
    assert!(hmac.reason.contains("HS256"), "{hmac}");
    assert!(hmac.to_string().contains("https://hmac.example"));

    // The defaults are what the issue lists, and none is symmetric.
    assert_eq!(DEFAULT_ALGORITHMS.len(), 9);
    assert!(OidcVerifier::new(vec![config("https://a.example")], FetchOptions::default()).is_ok());
    assert!(OidcVerifier::new(vec![], FetchOptions::default()).is_ok());
}

// ---------------------------------------------------------------------------
// A rough figure, not a test: `cargo test --release -p gantry --test
// oidc_verifier -- --ignored --nocapture verify_throughput`.

#[tokio::test]
#[ignore]
async fn verify_throughput() {
    let issuer = TestIssuer::start().await;
    let v = ready(&issuer, fast()).await;
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let token = issuer.sign(issuer.claims(AUD), SignOpts::alg(alg));
        let n = 2000;
        let started = Instant::now();
        for _ in 0..n {
            v.verify(&token).await.expect("verified");
        }
        let per = started.elapsed() / n;
        println!(
            "{alg:?}: {per:?} per verify ({:.0}/s on one core)",
            1.0 / per.as_secs_f64()
        );
    }
}

/// A configuration reload builds a new verifier: an issuer configured
/// exactly as before keeps its keys (no outage, no refetch), a changed one
/// starts afresh.
#[tokio::test]
async fn a_reload_keeps_the_keys_of_unchanged_issuers_only() {
    let issuer = TestIssuer::start().await;
    let before = ready(&issuer, fast()).await;
    let fetched = before.status()[0].fetches;

    let same = OidcVerifier::new_reusing(vec![config(&issuer.issuer())], fast(), Some(&before))
        .expect("valid");
    // Not started, yet it has the keys and verifies at once.
    let status = &same.status()[0];
    assert!(status.keys_loaded > 0, "{status:?}");
    assert_eq!(
        status.fetches, fetched,
        "no refetch for an unchanged issuer"
    );
    let token = issuer.sign(issuer.claims(AUD), SignOpts::alg(Algorithm::RS256));
    same.verify(&token)
        .await
        .expect("verified with the kept keys");

    let mut changed_cfg = config(&issuer.issuer());
    changed_cfg.audiences = vec![AUD.to_owned()];
    let changed =
        OidcVerifier::new_reusing(vec![changed_cfg], fast(), Some(&before)).expect("valid");
    assert_eq!(
        changed.status()[0].keys_loaded,
        0,
        "a changed issuer starts afresh"
    );
}
