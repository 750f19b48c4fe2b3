//! The default claim policy's settings, as `init` receives them (JSON), and,
//! when they compile, one evaluation and one explanation over a claim set.
//! Input: settings JSON, then optionally a NUL byte and the claims JSON.
#![no_main]

const CLAIMS: &str = r#"{"iss":"https://issuer.example","sub":"system:serviceaccount:ns:sa","aud":["gantry"],"exp":1700003600,"iat":1700000000,"email":"a@example.com","email_verified":true,"groups":["dev","ops"],"kubernetes.io":{"namespace":"ns","serviceaccount":{"name":"sa","uid":"u-1"}}}"#;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (settings, claims) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, CLAIMS.as_bytes()),
    };
    let (Ok(settings), Ok(claims)) = (std::str::from_utf8(settings), std::str::from_utf8(claims))
    else {
        return;
    };
    if let Ok(policy) = cel_policy::Policy::new(settings) {
        let _ = policy.summary();
        let _ = policy.evaluate(claims);
        let _ = policy.explain(claims);
    }
});
