//! The `analyze` task: the trial analysis of the clean table, one report folder per run.

use std::sync::Arc;

use serde_json::json;
use trialflow_core::contracts::AnalysisSummary;
use trialflow_core::{Error, lake};
use trialflow_dag::{StageContext, StageTask, Task, TaskIo, TaskKind, TaskSpec, summary};

pub const TASKS: &[TaskKind] = &[TaskKind {
    name: "analyze",
    build,
}];

struct Analyze(Arc<StageContext>);

fn build(_: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    Ok(Arc::new(Analyze(ctx.clone())))
}

impl StageTask for Analyze {
    async fn io(&self) -> Result<TaskIo, Error> {
        let c = &self.0.cfg;
        Ok(TaskIo {
            inputs: vec![
                lake::CLEAN.into(),
                // the safety tables read a record table's clean records
                lake::TABLES.into(),
                lake::CLEAN_REPORT.into(),
                lake::EVALUATION.into(),
                lake::PHENOTYPES_REPORT.into(),
            ],
            outputs: vec![lake::REPORTS.into()],
            fingerprint_extra: json!({"dataset": c.section_json("dataset"), "analysis": c.section_json("analysis")}),
            ..Default::default()
        })
    }

    async fn run(&self, run_id: &str) -> Result<serde_json::Value, Error> {
        let lake = &self.0.lake;
        let dir = lake::report_dir(run_id);
        let a = crate::analyze(&self.0.cfg, lake, &dir).await?;
        summary(&AnalysisSummary {
            analyzed_rows: a.analyzed_rows,
            report: lake.display(&format!("{dir}report.html")),
        })
    }
}
