//! The integration tests of the preprocessing stage, one test binary for all; `util` is their shared set-up.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod util;

mod bad_input;
mod clean;
mod exports;
mod golden;
mod splits;
mod sql_files;
mod tables;
