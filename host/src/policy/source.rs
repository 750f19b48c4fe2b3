//! Where a policy module comes from: `builtin:<name>` or a path.
//!
//! Owns: parsing the `module = "..."` config value and reading the bytes,
//! including the modules embedded in the binary. Must not: inspect or compile
//! the bytes (the engine does), or read a file on a tokio worker thread.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::PolicyError;

/// The CEL policy component, built from `plugins/cel-policy` by
/// `host/build.rs` and embedded so `builtin:cel` needs no file at run time.
static CEL_POLICY_WASM: &[u8] = include_bytes!(env!("GANTRY_CEL_POLICY_WASM"));

/// Largest module file `load` reads. The CEL component is ~1 MB;
/// componentize-py output is ~40 MB.
pub const MAX_MODULE_BYTES: u64 = 128 << 20;

/// A module shipped inside the `gantry` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinModule {
    /// `builtin:cel`: the default policy, CEL expressions from the settings.
    Cel,
}

impl BuiltinModule {
    /// Names accepted after `builtin:`, for error messages.
    pub const KNOWN: &'static str = "builtin:cel";

    /// The component's bytes.
    pub fn wasm(self) -> &'static [u8] {
        match self {
            BuiltinModule::Cel => CEL_POLICY_WASM,
        }
    }

    /// The name after `builtin:`.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinModule::Cel => "cel",
        }
    }
}

/// A policy module as named in config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModuleSource {
    /// Embedded in the binary.
    Builtin(BuiltinModule),
    /// A `.wasm` component on disk.
    Path(PathBuf),
    /// The module layer of a policy artifact (`oci://REPO@DIGEST`), whose
    /// bytes the caller read from storage and hands to the engine.
    Artifact(String),
}

impl FromStr for ModuleSource {
    type Err = PolicyError;

    /// `builtin:cel`, or anything else as a path. An unknown `builtin:` name
    /// is an error rather than a path, so a typo never silently looks for a
    /// file called `builtin:cell`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix("builtin:") {
            return match name {
                "cel" => Ok(ModuleSource::Builtin(BuiltinModule::Cel)),
                _ => Err(PolicyError::UnknownBuiltin {
                    name: s.to_owned(),
                    known: BuiltinModule::KNOWN,
                }),
            };
        }
        if s.trim().is_empty() {
            return Err(PolicyError::UnknownBuiltin {
                name: s.to_owned(),
                known: BuiltinModule::KNOWN,
            });
        }
        Ok(ModuleSource::Path(PathBuf::from(s)))
    }
}

impl fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleSource::Builtin(b) => write!(f, "builtin:{}", b.name()),
            ModuleSource::Path(p) => write!(f, "{}", p.display()),
            ModuleSource::Artifact(name) => f.write_str(name),
        }
    }
}

impl ModuleSource {
    /// The module's bytes: borrowed from the binary for a builtin, read with
    /// `tokio::fs` (bounded in size) for a path.
    pub(crate) async fn bytes(
        &self,
        owner: &str,
    ) -> Result<std::borrow::Cow<'static, [u8]>, PolicyError> {
        let read_error = |reason: String| PolicyError::ReadModule {
            owner: owner.to_owned(),
            module: self.to_string(),
            reason,
        };
        let path = match self {
            ModuleSource::Builtin(b) => return Ok(std::borrow::Cow::Borrowed(b.wasm())),
            ModuleSource::Path(p) => p,
            ModuleSource::Artifact(_) => {
                return Err(read_error(
                    "an artifact's module is read from storage by its caller".into(),
                ));
            }
        };
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| read_error(e.to_string()))?;
        if !meta.is_file() {
            return Err(read_error("not a regular file".into()));
        }
        if meta.len() > MAX_MODULE_BYTES {
            return Err(read_error(format!(
                "{} bytes, over the limit of {MAX_MODULE_BYTES}",
                meta.len()
            )));
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| read_error(e.to_string()))?;
        Ok(std::borrow::Cow::Owned(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_builtin_cel() {
        assert_eq!(
            "builtin:cel".parse::<ModuleSource>().ok(),
            Some(ModuleSource::Builtin(BuiltinModule::Cel))
        );
    }

    #[test]
    fn unknown_builtin_is_an_error_naming_the_known_ones() {
        let err = "builtin:cell"
            .parse::<ModuleSource>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("builtin:cell") && err.contains("builtin:cel"),
            "{err}"
        );
    }

    #[test]
    fn anything_else_is_a_path() {
        assert_eq!(
            "policies/team-a.wasm".parse::<ModuleSource>().ok(),
            Some(ModuleSource::Path(PathBuf::from("policies/team-a.wasm")))
        );
        assert!("".parse::<ModuleSource>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["builtin:cel", "/etc/gantry/p.wasm"] {
            assert_eq!(
                s.parse::<ModuleSource>()
                    .map(|m| m.to_string())
                    .ok()
                    .as_deref(),
                Some(s)
            );
        }
    }

    #[test]
    fn embedded_cel_policy_is_a_component() {
        let wasm = BuiltinModule::Cel.wasm();
        assert_eq!(&wasm[..4], b"\0asm");
        assert_eq!(&wasm[6..8], &[1, 0], "layer 1 = component");
    }
}
