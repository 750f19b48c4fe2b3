//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`), one per
//! parser that reads untrusted input: each takes raw bytes as a client, an
//! issuer or an operator would hand them and runs the same code the server
//! runs on them. None may panic, whatever the input; errors are the
//! expected outcome for almost every input.

use std::path::Path;

use crate::auth::oidc::{claims, fetch, jwks, token};
use crate::config::Config;
use crate::config::issuer::DEFAULT_ALGORITHMS;
use crate::distribution::manifests::Parsed;

/// The `/v2/...` path parser, on the path after `/v2/`.
pub fn v2_path(data: &[u8]) {
    let Ok(rest) = std::str::from_utf8(data) else {
        return;
    };
    use crate::distribution::path::{Route, parse};
    if let Ok(route) = parse(rest) {
        let _ = route.repository();
        if let Route::BadManifestRef(_, bad) = &route {
            let _ = (bad.put_error(), bad.lookup_error());
        }
    }
}

/// A bearer token: the compact JWS split and decoded, its header rules,
/// its signature part, then the registered-claim checks (audience, expiry,
/// not-before, issued-at, lifetime) at a fixed time.
pub fn jwt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = token::unverified_issuer(text);
    let Ok(parsed) = token::parse(text) else {
        return;
    };
    let _ = (parsed.issuer(), parsed.alg(), parsed.kid());
    let _ = token::check_type(&parsed.header);
    let _ = token::decode_signature(parsed.signature);
    let audiences = ["gantry".to_owned()];
    for (max_lifetime, now) in [(Some(3600), 1_700_000_000), (None, u64::MAX)] {
        let rules = claims::ClaimRules {
            issuer: "https://issuer.example",
            audiences: &audiences,
            leeway: 60,
            max_lifetime,
        };
        let _ = claims::check(&parsed.claims, &rules, now);
    }
}

/// What an issuer serves: its discovery document and its JWKS.
pub fn issuer_documents(data: &[u8]) {
    let _ = fetch::parse_discovery(data, "https://issuer.example");
    let _ = jwks::parse_jwks(data, DEFAULT_ALGORITHMS);
}

/// Manifest validation, as on a manifest `PUT`. The first byte picks the
/// `Content-Type` the client sent (or none).
pub fn manifest(data: &[u8]) {
    const TYPES: &[&str] = &[
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/json",
    ];
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let content_type = TYPES.get(usize::from(pick) % (TYPES.len() + 1)).copied();
    let _ = Parsed::from_bytes(content_type, bytes);
}

/// The config loader on a whole file: TOML, every section's rules, the
/// policy settings' conversion, the lints' inputs. Relative paths resolve
/// under a directory that does not exist, so nothing is read.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml_str(text, "fuzz.toml", Path::new("/nonexistent-gantry-fuzz"));
}
