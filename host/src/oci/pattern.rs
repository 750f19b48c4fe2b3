//! Repository glob patterns, as access control writes them: `**` crosses
//! `/`, `*` and `?` do not. A `RepoPattern` can only be built by parsing,
//! so one that exists is compiled and valid.

use std::fmt;
use std::str::FromStr;

use globset::GlobMatcher;

use super::RepoName;

/// A compiled repository pattern.
#[derive(Debug, Clone)]
pub struct RepoPattern {
    text: String,
    matcher: Matcher,
}

/// How a pattern is matched: `**` (the common catch-all) without a regex.
#[derive(Debug, Clone)]
enum Matcher {
    Everything,
    Glob(GlobMatcher),
}

/// Why a pattern does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl RepoPattern {
    /// Every repository.
    pub fn everything() -> RepoPattern {
        RepoPattern {
            text: "**".into(),
            matcher: Matcher::Everything,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `repo` is one the pattern names.
    pub fn is_match(&self, repo: &RepoName) -> bool {
        match &self.matcher {
            Matcher::Everything => true,
            Matcher::Glob(g) => g.is_match(repo.as_str()),
        }
    }
}

impl FromStr for RepoPattern {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<RepoPattern, PatternError> {
        if pattern == "**" {
            return Ok(RepoPattern::everything());
        }
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| PatternError {
                pattern: pattern.to_string(),
                reason: e.kind().to_string(),
            })?;
        Ok(RepoPattern {
            text: pattern.to_string(),
            matcher: Matcher::Glob(glob.compile_matcher()),
        })
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        s.parse().expect("repo")
    }

    #[test]
    fn stars_stay_inside_one_component_and_double_stars_cross() {
        let one: RepoPattern = "team-a/*".parse().expect("pattern");
        assert!(one.is_match(&repo("team-a/app")));
        assert!(!one.is_match(&repo("team-a/x/y")));
        assert!(!one.is_match(&repo("team-ab/app")));
        let deep: RepoPattern = "team-a/**".parse().expect("pattern");
        assert!(deep.is_match(&repo("team-a/x/y")));
        assert!(RepoPattern::everything().is_match(&repo("anything/at/all")));
        let bad = "[bad".parse::<RepoPattern>().expect_err("unclosed class");
        assert_eq!(bad.pattern, "[bad");
        assert!(bad.to_string().contains("[bad"), "{bad}");
    }
}
