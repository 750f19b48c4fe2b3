//! The garbage-collection tests of `gc.rs`, again on the s3 backend
//! (`moto_server`; see `support::ON_S3`).

#[path = "gc.rs"]
mod suite;
