//! `oci://REPOSITORY:TAG` and `oci://REPOSITORY@DIGEST`: a policy artifact
//! in this registry, named in config (`[auth.oidc.policy] module`/`shadow`).

use std::fmt;
use std::str::FromStr;

use super::{Reference, RepoName};

/// An artifact in this registry: a repository and a tag to follow or a
/// digest to pin.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OciSource {
    pub repository: RepoName,
    pub reference: Reference,
}

/// Why text is not an `oci://` source (the message quotes it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciSourceError {
    #[error("`{0}` does not start with oci://")]
    Scheme(String),
    #[error(
        "`{0}` names no tag or digest: write oci://REPOSITORY:TAG or oci://REPOSITORY@sha256:HEX"
    )]
    NoReference(String),
    #[error("`{0}`: {1}")]
    Invalid(String, String),
}

impl OciSource {
    /// The tag this source follows; `None` when it pins a digest.
    pub fn followed_tag(&self) -> Option<&super::Tag> {
        match &self.reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }
}

impl FromStr for OciSource {
    type Err = OciSourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| OciSourceError::Scheme(text.to_owned()))?;
        let invalid =
            |e: &dyn fmt::Display| OciSourceError::Invalid(text.to_owned(), e.to_string());
        let (repo, reference) = if let Some((repo, digest)) = rest.split_once('@') {
            (
                repo,
                Reference::Digest(digest.parse().map_err(|e| invalid(&e))?),
            )
        } else {
            // A tag follows the last `:` that comes after the last `/`.
            let slash = rest.rfind('/').map_or(0, |i| i + 1);
            let Some(colon) = rest[slash..].find(':').map(|i| i + slash) else {
                return Err(OciSourceError::NoReference(text.to_owned()));
            };
            let (repo, tag) = (&rest[..colon], &rest[colon + 1..]);
            (repo, Reference::Tag(tag.parse().map_err(|e| invalid(&e))?))
        };
        Ok(OciSource {
            repository: repo.parse().map_err(|e| invalid(&e))?,
            reference,
        })
    }
}

impl fmt::Display for OciSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "oci://{}:{t}", self.repository),
            Reference::Digest(d) => write!(f, "oci://{}@{d}", self.repository),
        }
    }
}

impl fmt::Debug for OciSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests_round_trip() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for text in [
            "oci://team-a/policies/k8s:live".to_string(),
            "oci://p:v1.2".to_string(),
            format!("oci://team-a/policies/k8s@{digest}"),
        ] {
            let s: OciSource = text.parse().expect(&text);
            assert_eq!(s.to_string(), text);
        }
        let s: OciSource = "oci://team-a/policies/k8s:live".parse().expect("parses");
        assert_eq!(s.repository.as_str(), "team-a/policies/k8s");
        assert_eq!(s.followed_tag().map(|t| t.as_str()), Some("live"));
    }

    #[test]
    fn refusals_name_the_text() {
        for bad in [
            "team-a/policies/k8s:live",
            "oci://team-a/policies/k8s",
            "oci://team-a/Policies:live",
            "oci://team-a/p:bad tag",
            "oci://team-a/p@sha256:zz",
            "oci://../x:live",
        ] {
            let e = bad.parse::<OciSource>().expect_err(bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
