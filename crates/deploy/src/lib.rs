//! Deployment: the quality gate over the evaluated candidates, the model repository's lifecycle (promotion,
//! rollback, listing), the Kubernetes manifests' composition, and the Pushgateway report of batch runs.
//!
//! Invariants: a version folder is written once with `BLESSED` last and never renumbered; every repository
//! change holds the model's lock object; only the gate blesses, only `--force` bypasses it (and says so).

pub mod gate;
pub mod manifests;
pub mod pushgateway;
pub mod repository;
mod task;

pub use gate::{Blessing, Check, GateDecision, gate};
pub use repository::{
    Promotion, Rollback, State, VersionInfo, Versions, promote, promote_version, rollback, scan,
};
pub use task::TASKS;
