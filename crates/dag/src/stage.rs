//! How stage crates declare their tasks: each exports its [`TaskKind`]s (the name pipeline files use and a
//! constructor), and the cli only registers them. A task's inputs, outputs and fingerprint material live in
//! its stage crate, beside the code that reads and writes them.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use trialflow_core::config::Config;
use trialflow_core::{Error, Storage};

use crate::{Task, TaskSpec};

/// What every stage task is built from: the resolved config and the two storage roots.
#[derive(Debug)]
pub struct StageContext {
    pub cfg: Config,
    pub lake: Storage,
    /// The model repository (outside the lake).
    pub models: Storage,
    pub code_version: String,
}

/// Builds one task of a kind from its pipeline entry, checking its `with` arguments against the config.
pub type BuildTask = fn(&TaskSpec, &Arc<StageContext>) -> Result<Arc<dyn Task>, Error>;

/// A task kind as a stage crate exports it.
#[derive(Clone, Copy)]
pub struct TaskKind {
    /// The `run:` name in pipeline files.
    pub name: &'static str,
    pub build: BuildTask,
}

impl std::fmt::Debug for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskKind")
            .field("name", &self.name)
            .finish()
    }
}

impl TaskSpec {
    fn arg_key(&self, key: &str) -> String {
        format!("tasks.{}.with.{key}", self.name)
    }

    /// A required `with` argument read as `T`; errors name the pipeline file and the key.
    pub fn arg<T: DeserializeOwned>(&self, key: &str, expected: &str) -> Result<T, Error> {
        let v = self
            .with
            .get(key)
            .ok_or_else(|| Error::config(&self.file, self.arg_key(key), "required"))?;
        serde_json::from_value(v.clone()).map_err(|e| {
            Error::config(
                &self.file,
                self.arg_key(key),
                format!("expected {expected}: {e}"),
            )
        })
    }

    /// An optional `with` argument read as `T`.
    pub fn arg_opt<T: DeserializeOwned>(
        &self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, Error> {
        if self.with.contains_key(key) {
            self.arg(key, expected).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A config error about argument `key` of this task.
    pub fn arg_error(&self, key: &str, message: impl Into<String>) -> Error {
        Error::config(&self.file, self.arg_key(key), message)
    }
}

/// Every registered kind, by name; a kind registered twice is a bug in the registration.
#[derive(Debug, Default)]
pub struct Registry {
    kinds: Vec<TaskKind>,
}

impl Registry {
    pub fn new(groups: &[&[TaskKind]]) -> Self {
        let kinds: Vec<TaskKind> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        let mut names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a task kind is registered twice");
        Self { kinds }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name).collect()
    }

    /// One task object per task of `pipeline`.
    pub fn build(
        &self,
        pipeline: &crate::Pipeline,
        ctx: &Arc<StageContext>,
    ) -> Result<std::collections::HashMap<String, Arc<dyn Task>>, Error> {
        let mut out = std::collections::HashMap::new();
        for t in &pipeline.tasks {
            let kind = self.kinds.iter().find(|k| k.name == t.run).ok_or_else(|| {
                Error::config(
                    &t.file,
                    format!("tasks.{}.run", t.name),
                    format!(
                        "unknown kind `{}`, expected one of {:?}",
                        t.run,
                        self.names()
                    ),
                )
            })?;
            out.insert(t.name.clone(), (kind.build)(t, ctx)?);
        }
        Ok(out)
    }
}

/// A stage task written with `async fn`s and the core error type; every one is a [`Task`].
pub trait StageTask: Send + Sync + 'static {
    fn io(&self) -> impl Future<Output = Result<crate::TaskIo, Error>> + Send;
    /// Does the work; the summary is the stage contract the task returns (see `core::contracts`).
    fn run(&self, run_id: &str) -> impl Future<Output = Result<serde_json::Value, Error>> + Send;
}

impl<T: StageTask> Task for T {
    fn io(&self) -> crate::BoxFuture<'_, Result<crate::TaskIo, crate::TaskError>> {
        Box::pin(async move { StageTask::io(self).await.map_err(crate::TaskError::from) })
    }

    fn run<'a>(
        &'a self,
        run_id: &'a str,
    ) -> crate::BoxFuture<'a, Result<serde_json::Value, crate::TaskError>> {
        Box::pin(async move {
            StageTask::run(self, run_id)
                .await
                .map_err(crate::TaskError::from)
        })
    }
}

/// A task summary from its contract type.
pub fn summary<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::Internal(format!("a task summary: {e}")))
}
