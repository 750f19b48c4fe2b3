//! The policy artifact: a claim policy shipped as an OCI image manifest
//! (`artifactType: application/vnd.gantry.policy.v1`) with a config blob
//! (module choice, settings, limits asked for), at most one Wasm component
//! layer and an optional fixtures layer.
//!
//! Owns: the artifact's media types, parsing its manifest and config,
//! turning what it asks for into limits under a ceiling, and loading it —
//! compile, instantiate, `init`, every bundled fixture — as one policy.
//! Must not: read storage (the caller hands the blobs over as bytes), or
//! decide which artifacts are followed (auth does).

use std::fmt;

use serde::Deserialize;

use super::fixtures::{self, Case};
use super::{BuiltinModule, Limits, LoadedPolicy, ModuleSource, PolicyEngine, PolicyError};
use crate::oci::Digest;

/// `artifactType` of a policy artifact's manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.gantry.policy.v1";
/// Media type of its config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.gantry.policy.config.v1+json";
/// Media type of its module layer (a WebAssembly component).
pub const MODULE_MEDIA_TYPE: &str = "application/vnd.gantry.policy.module.v1+wasm";
/// Media type of its fixtures layer (TOML, the `--fixtures` format).
pub const FIXTURES_MEDIA_TYPE: &str = "application/vnd.gantry.policy.fixtures.v1+toml";

/// Largest module layer: componentize-py output (~40 MB) fits; what does
/// not is refused before a byte of it is read.
pub const MAX_MODULE_LAYER_BYTES: u64 = 64 << 20;
/// Largest config blob (it holds the settings, themselves capped at 64 KiB).
pub const MAX_CONFIG_BYTES: u64 = 128 << 10;
/// Largest fixtures layer.
pub const MAX_FIXTURES_BYTES: u64 = 1 << 20;

/// Where validating an artifact failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactPhase {
    /// The manifest's shape: media types, layers, sizes.
    Manifest,
    /// The config blob: JSON, keys, limits.
    Config,
    /// Reading a blob the manifest names.
    Fetch,
    /// Compiling the component (not a component, not the world).
    Compile,
    /// Instantiating it and `init(settings)`.
    Init,
    /// A bundled fixture failed, or the fixtures do not parse.
    Fixtures,
}

impl fmt::Display for ArtifactPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArtifactPhase::Manifest => "manifest",
            ArtifactPhase::Config => "config",
            ArtifactPhase::Fetch => "fetch",
            ArtifactPhase::Compile => "compile",
            ArtifactPhase::Init => "init",
            ArtifactPhase::Fixtures => "fixtures",
        })
    }
}

/// Why an artifact cannot become a policy: the phase and the problem, as
/// the author is told it (in the 400 of the push, and in the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy artifact refused at {phase}: {message}")]
pub struct ArtifactError {
    pub phase: ArtifactPhase,
    pub message: String,
}

impl ArtifactError {
    pub fn new(phase: ArtifactPhase, message: impl Into<String>) -> Self {
        ArtifactError {
            phase,
            message: message.into(),
        }
    }
}

/// One blob the manifest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

/// A policy artifact's manifest, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactManifest {
    pub config: BlobRef,
    pub module: Option<BlobRef>,
    pub fixtures: Option<BlobRef>,
}

/// Whether a manifest says it is a policy artifact (by `artifactType`, or
/// by its config's media type, as clients that predate `artifactType`
/// write it).
pub fn is_policy(manifest: &serde_json::Value) -> bool {
    manifest.get("artifactType").and_then(|t| t.as_str()) == Some(ARTIFACT_TYPE)
        || manifest
            .pointer("/config/mediaType")
            .and_then(|t| t.as_str())
            == Some(CONFIG_MEDIA_TYPE)
}

fn blob_ref(value: &serde_json::Value, what: &str) -> Result<BlobRef, ArtifactError> {
    let bad = |m: String| ArtifactError::new(ArtifactPhase::Manifest, format!("{what}: {m}"));
    let digest = value
        .get("digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("no digest".into()))?
        .parse::<Digest>()
        .map_err(|e| bad(e.to_string()))?;
    let size = value
        .get("size")
        .and_then(|s| s.as_u64())
        .ok_or_else(|| bad("no size".into()))?;
    Ok(BlobRef { digest, size })
}

/// Checks a policy artifact's manifest: an OCI image manifest whose config
/// is a policy config, with at most one module layer (under
/// [`MAX_MODULE_LAYER_BYTES`]) and at most one fixtures layer, and nothing
/// else.
pub fn parse_manifest(manifest: &serde_json::Value) -> Result<ArtifactManifest, ArtifactError> {
    let bad = |m: String| ArtifactError::new(ArtifactPhase::Manifest, m);
    if let Some(t) = manifest.get("mediaType").and_then(|t| t.as_str())
        && t != crate::oci::media::OCI_MANIFEST
    {
        return Err(bad(format!(
            "mediaType {t:?}: a policy artifact is an OCI image manifest ({})",
            crate::oci::media::OCI_MANIFEST
        )));
    }
    let config = manifest
        .get("config")
        .ok_or_else(|| bad("no config descriptor".into()))?;
    let config_type = config.get("mediaType").and_then(|t| t.as_str());
    if config_type != Some(CONFIG_MEDIA_TYPE) {
        return Err(bad(format!(
            "config mediaType {:?}: must be {CONFIG_MEDIA_TYPE}",
            config_type.unwrap_or("")
        )));
    }
    let config = blob_ref(config, "config")?;
    if config.size > MAX_CONFIG_BYTES {
        return Err(bad(format!(
            "config blob is {} bytes, over the cap of {MAX_CONFIG_BYTES}",
            config.size
        )));
    }
    let (mut module, mut fixtures) = (None, None);
    let layers = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, layer) in layers.iter().enumerate() {
        let media_type = layer
            .get("mediaType")
            .and_then(|t| t.as_str())
            .unwrap_or("");
        let what = format!("layer {i} ({media_type})");
        let (slot, cap) = match media_type {
            // The placeholder of a manifest without layers: nothing to load.
            crate::oci::media::OCI_EMPTY => continue,
            MODULE_MEDIA_TYPE => (&mut module, MAX_MODULE_LAYER_BYTES),
            FIXTURES_MEDIA_TYPE => (&mut fixtures, MAX_FIXTURES_BYTES),
            other => {
                return Err(bad(format!(
                    "layer {i} has media type {other:?}: a policy artifact holds one \
                     {MODULE_MEDIA_TYPE} layer and at most one {FIXTURES_MEDIA_TYPE} layer"
                )));
            }
        };
        if slot.is_some() {
            return Err(bad(format!(
                "{what}: more than one layer of this media type"
            )));
        }
        let blob = blob_ref(layer, &what)?;
        if blob.size > cap {
            return Err(bad(format!(
                "{what} is {} bytes, over the cap of {cap} bytes",
                blob.size
            )));
        }
        *slot = Some(blob);
    }
    Ok(ArtifactManifest {
        config,
        module,
        fixtures,
    })
}

/// The manifest of a policy artifact with these blobs (what `gantry
/// policy push` sends): `artifactType`, the config, then the module and
/// fixtures layers, each titled so that `oras pull` names its file.
pub fn manifest_json(
    config: &BlobRef,
    module: Option<&BlobRef>,
    fixtures: Option<&BlobRef>,
) -> Vec<u8> {
    let descriptor = |media_type: &str, b: &BlobRef, title: Option<&str>| {
        let mut d = serde_json::json!({
            "mediaType": media_type,
            "digest": b.digest.to_string(),
            "size": b.size,
        });
        if let Some(t) = title {
            d["annotations"] = serde_json::json!({ "org.opencontainers.image.title": t });
        }
        d
    };
    let mut layers = Vec::new();
    if let Some(m) = module {
        layers.push(descriptor(MODULE_MEDIA_TYPE, m, Some("policy.wasm")));
    }
    if let Some(f) = fixtures {
        layers.push(descriptor(FIXTURES_MEDIA_TYPE, f, Some("fixtures.toml")));
    }
    if layers.is_empty() {
        // An image manifest has at least one layer: the empty descriptor
        // (OCI image spec 1.1, "Guidance for an empty descriptor").
        layers.push(serde_json::json!({
            "mediaType": crate::oci::media::OCI_EMPTY,
            "digest": EMPTY_DIGEST,
            "size": 2,
            "data": "e30=",
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::media::OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(CONFIG_MEDIA_TYPE, config, None),
        "layers": layers,
    });
    // `Value`'s `Display` is compact JSON and cannot fail.
    manifest.to_string().into_bytes()
}

/// The digest of `{}`, the empty descriptor's content.
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// The config blob as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    module: Option<String>,
    #[serde(default)]
    settings: Option<serde_json::Value>,
    #[serde(default)]
    limits: Option<RawLimits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    memory_limit_mib: Option<u64>,
}

/// A policy artifact's config, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactConfig {
    /// `module = "builtin:cel"`: no module layer, the built-in CEL policy.
    pub builtin: Option<BuiltinModule>,
    /// A JSON object (`{}` when absent).
    pub settings: serde_json::Value,
    /// What the policy asks for; the host caps it.
    pub timeout_ms: Option<u64>,
    pub memory_limit_mib: Option<u64>,
}

/// Parses a config blob.
pub fn parse_config(bytes: &[u8]) -> Result<ArtifactConfig, ArtifactError> {
    let bad = |m: String| ArtifactError::new(ArtifactPhase::Config, m);
    let raw: RawConfig =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a policy config: {e}")))?;
    let builtin = match raw.module.as_deref() {
        None => None,
        Some(text) => match text.parse::<ModuleSource>() {
            Ok(ModuleSource::Builtin(b)) => Some(b),
            _ => {
                return Err(bad(format!(
                    "module {text:?}: the only value allowed is a built-in module ({}); a \
                     component goes in a {MODULE_MEDIA_TYPE} layer",
                    BuiltinModule::KNOWN
                )));
            }
        },
    };
    let settings = raw
        .settings
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if !settings.is_object() {
        return Err(bad("settings: must be a JSON object".into()));
    }
    let limits = raw.limits.unwrap_or(RawLimits {
        timeout_ms: None,
        memory_limit_mib: None,
    });
    if limits.timeout_ms == Some(0) {
        return Err(bad("limits.timeout_ms: must be at least 1".into()));
    }
    if limits.memory_limit_mib == Some(0) {
        return Err(bad("limits.memory_limit_mib: must be at least 1".into()));
    }
    Ok(ArtifactConfig {
        builtin,
        settings,
        timeout_ms: limits.timeout_ms,
        memory_limit_mib: limits.memory_limit_mib,
    })
}

/// An artifact's content, fetched: what [`PolicyEngine::load_artifact`]
/// turns into a policy.
#[derive(Debug, Clone)]
pub struct PolicyArtifact {
    /// The manifest's digest.
    pub digest: Digest,
    pub config: ArtifactConfig,
    /// The component, unless the config names a built-in module.
    pub module: Option<Vec<u8>>,
    pub fixtures: Vec<Case>,
}

impl PolicyArtifact {
    /// Puts the fetched blobs together, checking that they fit each other:
    /// a module layer, or `module = "builtin:cel"`, not both and not
    /// neither; fixtures that parse.
    pub fn assemble(
        digest: Digest,
        config: &[u8],
        module: Option<Vec<u8>>,
        fixtures: Option<&[u8]>,
    ) -> Result<PolicyArtifact, ArtifactError> {
        let config = parse_config(config)?;
        match (&config.builtin, &module) {
            (Some(b), Some(_)) => {
                return Err(ArtifactError::new(
                    ArtifactPhase::Manifest,
                    format!(
                        "the config names builtin:{} and the manifest has a module layer: \
                         keep one",
                        b.name()
                    ),
                ));
            }
            (None, None) => {
                return Err(ArtifactError::new(
                    ArtifactPhase::Manifest,
                    format!(
                        "no {MODULE_MEDIA_TYPE} layer, and the config does not name a built-in \
                         module (\"module\": \"builtin:cel\")"
                    ),
                ));
            }
            _ => {}
        }
        let fixtures = match fixtures {
            None => Vec::new(),
            Some(bytes) => {
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    ArtifactError::new(ArtifactPhase::Fixtures, "the fixtures layer is not UTF-8")
                })?;
                fixtures::parse_toml(text)
                    .map_err(|e| ArtifactError::new(ArtifactPhase::Fixtures, e))?
            }
        };
        Ok(PolicyArtifact {
            digest,
            config,
            module,
            fixtures,
        })
    }

    /// The limits this artifact runs with: what it asks for, never more
    /// than `ceilings` (time budget and memory; the rest is the ceiling's).
    pub fn limits(&self, ceilings: &Limits) -> Limits {
        let mut limits = ceilings.clone();
        if let Some(ms) = self.config.timeout_ms {
            limits.timeout = limits.timeout.min(std::time::Duration::from_millis(ms));
        }
        if let Some(mib) = self.config.memory_limit_mib {
            let asked = usize::try_from(mib)
                .unwrap_or(usize::MAX)
                .saturating_mul(1 << 20);
            limits.memory_limit_bytes = limits.memory_limit_bytes.min(asked);
        }
        limits
    }
}

impl PolicyEngine {
    /// Loads an artifact for `owner` as the server runs it: compiled once
    /// per module digest, instantiated and initialised for this owner alone
    /// under `ceilings` (lowered to what the artifact asks), and every
    /// bundled fixture evaluated and checked. `name` is how logs and errors
    /// call it (`oci://REPO@DIGEST`).
    pub async fn load_artifact(
        &self,
        owner: &str,
        name: &str,
        artifact: &PolicyArtifact,
        ceilings: &Limits,
    ) -> Result<LoadedPolicy, ArtifactError> {
        let limits = artifact.limits(ceilings);
        let loaded = match (&artifact.config.builtin, &artifact.module) {
            (Some(b), _) => {
                self.load(
                    owner,
                    &ModuleSource::Builtin(*b),
                    &artifact.config.settings,
                    limits,
                )
                .await
            }
            (None, Some(bytes)) => {
                let source = ModuleSource::Artifact(name.to_owned());
                self.load_bytes(
                    owner,
                    &source,
                    std::borrow::Cow::Owned(bytes.clone()),
                    &artifact.config.settings,
                    limits,
                )
                .await
            }
            (None, None) => Err(PolicyError::ModuleRefused {
                owner: owner.to_owned(),
                module: name.to_owned(),
                reason: "no module".into(),
            }),
        };
        let policy = loaded.map_err(|e| {
            let phase = match e {
                PolicyError::ModuleRefused { .. } => ArtifactPhase::Compile,
                _ => ArtifactPhase::Init,
            };
            ArtifactError::new(phase, e.to_string())
        })?;
        let mut failures = Vec::new();
        for (i, case) in artifact.fixtures.iter().enumerate() {
            let mismatches = match policy.evaluate(&case.claims).await {
                Ok(decision) => case.expect.check(Ok(&decision)),
                Err(e) => case.expect.check(Err(&e.to_string())),
            };
            if !mismatches.is_empty() {
                let text: Vec<String> = mismatches.into_iter().map(|m| m.message).collect();
                failures.push(format!(
                    "case #{} ({:?}): {}",
                    i + 1,
                    case.name,
                    text.join("; ")
                ));
            }
        }
        if !failures.is_empty() {
            return Err(ArtifactError::new(
                ArtifactPhase::Fixtures,
                format!(
                    "{} of {} fixtures failed: {}",
                    failures.len(),
                    artifact.fixtures.len(),
                    failures.join(" | ")
                ),
            ));
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn manifest(layers: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::oci::media::OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest('a'), "size": 10},
            "layers": layers,
        })
    }

    #[test]
    fn a_module_and_fixtures_manifest_parses() {
        let m = manifest(serde_json::json!([
            {"mediaType": MODULE_MEDIA_TYPE, "digest": digest('b'), "size": 100},
            {"mediaType": FIXTURES_MEDIA_TYPE, "digest": digest('c'), "size": 5},
        ]));
        assert!(is_policy(&m));
        let parsed = parse_manifest(&m).expect("parses");
        assert_eq!(parsed.module.map(|b| b.size), Some(100));
        assert_eq!(parsed.fixtures.map(|b| b.size), Some(5));
    }

    #[test]
    fn manifest_refusals_name_the_problem() {
        let cases = [
            (
                serde_json::json!([{"mediaType": "application/x-other", "digest": digest('b'), "size": 1}]),
                "application/x-other",
            ),
            (
                serde_json::json!([
                    {"mediaType": MODULE_MEDIA_TYPE, "digest": digest('b'), "size": 1},
                    {"mediaType": MODULE_MEDIA_TYPE, "digest": digest('c'), "size": 1},
                ]),
                "more than one",
            ),
            (
                serde_json::json!([{"mediaType": MODULE_MEDIA_TYPE, "digest": digest('b'), "size": MAX_MODULE_LAYER_BYTES + 1}]),
                "over the cap",
            ),
        ];
        for (layers, needle) in cases {
            let e = parse_manifest(&manifest(layers)).expect_err(needle);
            assert_eq!(e.phase, ArtifactPhase::Manifest);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn the_pushed_manifest_parses_back() {
        let blob = |c: char, size| BlobRef {
            digest: digest(c).parse().expect("digest"),
            size,
        };
        let bytes = manifest_json(&blob('a', 10), Some(&blob('b', 20)), None);
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert!(is_policy(&value));
        let m = parse_manifest(&value).expect("parses");
        assert_eq!(m.module, Some(blob('b', 20)));
        let cel_only = manifest_json(&blob('a', 10), None, None);
        let value: serde_json::Value = serde_json::from_slice(&cel_only).expect("json");
        let m = parse_manifest(&value).expect("the empty layer is skipped");
        assert_eq!((m.module, m.fixtures), (None, None));
        assert_eq!(
            Digest::sha256_of(b"{}").to_string(),
            EMPTY_DIGEST,
            "the empty descriptor's digest"
        );
    }

    #[test]
    fn config_rules() {
        let c = parse_config(
            br#"{"module":"builtin:cel","settings":{"a":1},"limits":{"timeout_ms":20}}"#,
        )
        .expect("parses");
        assert_eq!(c.builtin, Some(BuiltinModule::Cel));
        assert_eq!(c.timeout_ms, Some(20));
        for (bad, needle) in [
            (&br#"{"modul":"builtin:cel"}"#[..], "modul"),
            (br#"{"module":"policy.wasm"}"#, "policy.wasm"),
            (br#"{"settings":[1]}"#, "settings"),
            (br#"{"limits":{"timeout_ms":0}}"#, "timeout_ms"),
            (b"not json", "not a policy config"),
        ] {
            let e = parse_config(bad).expect_err(needle);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn limits_never_exceed_the_ceiling() {
        let artifact = PolicyArtifact::assemble(
            digest('a').parse().expect("digest"),
            br#"{"module":"builtin:cel","limits":{"timeout_ms":5000,"memory_limit_mib":8}}"#,
            None,
            None,
        )
        .expect("assembles");
        let ceiling = Limits::default();
        let l = artifact.limits(&ceiling);
        assert_eq!(l.timeout, ceiling.timeout, "asked more than the ceiling");
        assert_eq!(l.memory_limit_bytes, 8 << 20, "asked less");
    }

    #[test]
    fn module_and_builtin_exclude_each_other() {
        let d: Digest = digest('a').parse().expect("digest");
        let e = PolicyArtifact::assemble(d.clone(), b"{}", None, None).expect_err("neither");
        assert!(e.message.contains("no "), "{e}");
        let e = PolicyArtifact::assemble(
            d.clone(),
            br#"{"module":"builtin:cel"}"#,
            Some(vec![0]),
            None,
        )
        .expect_err("both");
        assert!(e.message.contains("keep one"), "{e}");
        let e = PolicyArtifact::assemble(
            d,
            br#"{"module":"builtin:cel"}"#,
            None,
            Some(b"[[case]]\nname=1"),
        )
        .expect_err("bad fixtures");
        assert_eq!(e.phase, ArtifactPhase::Fixtures);
    }
}
