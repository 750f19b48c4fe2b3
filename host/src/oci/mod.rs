//! Typed OCI values shared by the API, auth, config and storage layers:
//! repository names and patterns, tags, references, digests, upload ids,
//! and the actions a request does to a repository.
//!
//! Each type can only be built by parsing, so a value that exists is valid:
//! a `RepoName` can never hold `..`, a `/` at either end, or a `%`, which is
//! what makes path traversal in storage impossible by construction.

mod action;
mod digest;
mod name;
mod pattern;
mod source;

pub use action::{Action, ActionSet};
pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use name::{NameError, Reference, RepoName, Tag, UploadId};
pub use pattern::{PatternError, RepoPattern};
pub use source::{OciSource, OciSourceError};

/// Media types Gantry knows by name.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
}
