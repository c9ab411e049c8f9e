//! The `ingest` task: copies new or changed sources into `raw/`.

use std::sync::Arc;

use serde_json::json;
use trialflow_core::Error;
use trialflow_dag::{StageContext, StageTask, Task, TaskIo, TaskKind, TaskSpec, summary};

pub const TASKS: &[TaskKind] = &[TaskKind {
    name: "ingest",
    build,
}];

struct Ingest(Arc<StageContext>);

fn build(_: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    Ok(Arc::new(Ingest(ctx.clone())))
}

impl StageTask for Ingest {
    async fn io(&self) -> Result<TaskIo, Error> {
        let c = &self.0.cfg;
        Ok(TaskIo {
            inputs: vec![],
            outputs: vec!["raw/".into()],
            // Re-listed on every run (cheap), so new or changed source files are never missed.
            fingerprint_extra: json!({"dataset": c.section_json("dataset"), "listing": summary(&crate::list_sources(c).await?)?}),
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        summary(&crate::ingest(&self.0.cfg, &self.0.lake, false).await?)
    }
}
