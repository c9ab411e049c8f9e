//! The contract every stage shares: typed configuration and the dataset contract, storage URLs resolved to
//! `object_store`, content fingerprints, and the error kinds that decide exit codes and retries.
//!
//! Invariant: nothing here knows DataFusion, candle or HTTP.

pub mod binary;
pub mod codes;
pub mod config;
pub mod contracts;
pub mod dsjson;
pub mod error;
pub mod expr;
pub mod features;
pub mod fingerprint;
pub mod lake;
pub mod progress;
pub mod recording;
pub mod row_group;
pub mod sas;
pub mod stage;
pub mod storage;
pub mod table;
pub mod text;
pub mod xport;

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use storage::Storage;

/// Version of the code that produced an artifact; part of every task fingerprint.
pub const CODE_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("TRIALFLOW_GIT_SHA"));
