//! The robustness suite of `security.rs`, every test again, with the server
//! on the s3 backend (`moto_server`; see `support::ON_S3`).

#[path = "security.rs"]
mod suite;
