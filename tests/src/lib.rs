//! Test support for Gantry end-to-end tests.
