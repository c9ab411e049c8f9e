//! The integration tests of the server, one test binary for all; `common` is their harness.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

mod api;
mod batch;
mod binary;
mod clients;
mod fuzz_seeds;
mod hostile;
mod s3;
