//! The black-box suite of `blackbox.rs`, every test again, with the server
//! on the s3 backend: a real S3 API (`moto_server`, installed by `.ci/run`),
//! one bucket per storage root. See `support::ON_S3`.

#[path = "blackbox.rs"]
mod suite;
