//! The DAG runner: pipeline definitions, graph validation, concurrent execution with fingerprint caching,
//! retries, run records and the per-lake run lock.
//!
//! Invariant: knows no stage. Tasks are trait objects that stage crates export as [`TaskKind`]s and the cli
//! registers; they declare the lake paths they read and write, and the runner decides from content hashes
//! whether they must run.

mod lock;
mod pipeline;
mod runner;
mod stage;

pub use lock::{LockSettings, RunLock};
pub use pipeline::{Pipeline, PipelineSet, TaskSpec};
pub use runner::{
    BoxFuture, RunOptions, RunRecord, Task, TaskError, TaskIo, TaskRecord, TaskStatus, execute,
};
pub use stage::{BuildTask, Registry, StageContext, StageTask, TaskKind, summary};

/// Errors of the runner itself (a task's own failure is recorded in the run record, not returned).
#[derive(Debug, thiserror::Error)]
pub enum DagError {
    #[error("{file}: {key}: {message}")]
    Definition {
        file: String,
        key: String,
        message: String,
    },
    #[error(
        "another pipeline run holds the lock on this lake ({path}: {holder}); wait for it to finish"
    )]
    Locked { path: String, holder: String },
    #[error("the lake lock {path}: {message}")]
    LockObject { path: String, message: String },
    #[error(
        "another run broke this run's lake lock ({path}) after missed heartbeats: both may have written the \
         lake; re-run the pipeline once the other run has finished"
    )]
    LockLost { path: String },
    #[error(transparent)]
    Core(#[from] trialflow_core::Error),
}

impl DagError {
    pub fn exit_code(&self) -> i32 {
        match self {
            DagError::Definition { .. } => trialflow_core::ErrorKind::Config.exit_code(),
            DagError::Locked { .. } | DagError::LockObject { .. } | DagError::LockLost { .. } => 5,
            DagError::Core(e) => e.kind().exit_code(),
        }
    }
}

fn def_err(file: &str, key: impl Into<String>, message: impl Into<String>) -> DagError {
    DagError::Definition {
        file: file.to_string(),
        key: key.into(),
        message: message.into(),
    }
}
