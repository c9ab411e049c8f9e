//! The integration tests of the `trialflow` binary, one test binary (one link) for all; each module is one area,
//! `util` their shared set-up.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod util;

mod bad_input;
mod ballista;
mod deployment;
mod e2e;
mod formats;
mod large;
mod manifests;
mod object_stores;
mod ops_tools;
mod public_trials;
mod real_trials;
mod tracking;
mod training;
