//! CEL's `matches`, registered by the policy rather than taken from the CEL
//! crate, whose version compiles the pattern on every call (tens of
//! microseconds, more than a whole evaluation should cost).
//!
//! Patterns are compiled once and kept in a process-wide cache. `init`
//! compiles every literal pattern up front, so an invalid one refuses the
//! settings with its position instead of denying every token later.
//!
//! The engine is the `regex` crate with its lazy DFA: RE2 syntax, linear-time
//! matching, Unicode-aware `\d`/`\w`/`\s` and `(?i)`. Unicode general
//! categories and scripts (`\p{L}`, `\p{Greek}`) are not compiled in (they
//! would add a megabyte to the component); a pattern using them is refused at
//! load. regex-lite was tried first: a third of the size, but its PikeVM made
//! one `matches` on a workflow ref cost a third of a whole evaluation.

use ::regex::Regex;
use cel::common::types::{CelBool, CelString};
use cel::{DeclarationError, Env, ExecutionError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Patterns built at evaluation (not literals) are cached too, up to this
/// many in all: a pattern taken from the claims must not grow memory without
/// bound.
const MAX_CACHED: usize = 256;

static CACHE: Mutex<BTreeMap<String, Arc<Regex>>> = Mutex::new(BTreeMap::new());

/// Registers `s.matches(re)` and `matches(s, re)` on `env`.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    cel::add_member_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>)?;
    cel::add_overload!(env, fn matches_global: (CelString, CelString) -> Result<CelBool>, name = "matches")?;
    Ok(())
}

/// Compiles `pattern` into the cache, or says why it is not a valid regex.
pub fn precompile(pattern: &str) -> Result<(), String> {
    compiled(pattern).map(|_| ())
}

fn compiled(pattern: &str) -> Result<Arc<Regex>, String> {
    // A panic while holding the lock cannot leave the map inconsistent.
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(re) = cache.get(pattern) {
        return Ok(Arc::clone(re));
    }
    let re = Arc::new(Regex::new(pattern).map_err(|e| e.to_string())?);
    if cache.len() < MAX_CACHED {
        cache.insert(pattern.to_owned(), Arc::clone(&re));
    }
    Ok(re)
}

fn matches(this: &CelString<'_>, re: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let regex = compiled(re.inner()).map_err(|e| {
        ExecutionError::function_error(
            "matches",
            format!("`{}` is not a valid regex: {e}", re.inner()),
        )
    })?;
    Ok(CelBool::from(regex.is_match(this.inner())))
}

fn matches_global(this: &CelString<'_>, re: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    matches(this, re)
}
