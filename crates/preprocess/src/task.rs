//! The `clean`, `features` and `quality` tasks: what each reads and writes in the lake.

use std::sync::Arc;

use serde_json::json;
use trialflow_core::contracts::{self, QualitySummary};
use trialflow_core::fingerprint::sha256_hex;
use trialflow_core::{Error, lake};
use trialflow_dag::{StageContext, StageTask, Task, TaskIo, TaskKind, TaskSpec, summary};

pub const TASKS: &[TaskKind] = &[
    TaskKind {
        name: "clean",
        build: build_clean,
    },
    TaskKind {
        name: "features",
        build: build_features,
    },
    TaskKind {
        name: "quality",
        build: build_quality,
    },
];

fn build_clean(_: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    Ok(Arc::new(Clean(ctx.clone())))
}

fn build_features(_: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    Ok(Arc::new(Features(ctx.clone())))
}

fn build_quality(_: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    Ok(Arc::new(Quality(ctx.clone())))
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct Clean(Arc<StageContext>);

impl StageTask for Clean {
    async fn io(&self) -> Result<TaskIo, Error> {
        let c = &self.0.cfg;
        let key = crate::pseudonym_key(c)?;
        Ok(TaskIo {
            inputs: strs(&[lake::RAW_CURRENT]),
            // The raw objects `_current.json` names are content-addressed: its hash pins theirs.
            pinned_reads: strs(&[lake::RAW]),
            outputs: strs(&[
                lake::CLEAN,
                lake::QUARANTINE,
                lake::CLEAN_REPORT,
                lake::TABLES,
                lake::SQL_CLEAN,
                // the raw rows staged for a cluster; a local run removes one a killed cluster run left
                lake::STAGED_FILE,
            ]),
            // The key itself never reaches the state files, only a hash of it.
            fingerprint_extra: json!({"dataset": c.section_json("dataset"), "sql": crate::sql_fingerprint(c)?, "key": sha256_hex(&[b"trialflow-key:".as_slice(), &key].concat())}),
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        summary(&crate::clean(&self.0.cfg, &self.0.lake).await?)
    }
}

struct Features(Arc<StageContext>);

impl StageTask for Features {
    async fn io(&self) -> Result<TaskIo, Error> {
        let c = &self.0.cfg;
        Ok(TaskIo {
            // The clean report only sizes the buffers.
            inputs: strs(&[lake::CLEAN, lake::CLEAN_REPORT]),
            outputs: strs(&[
                lake::FEATURES,
                lake::FEATURE_SPEC,
                lake::SPLIT_STATS,
                lake::SQL_FEATURES,
            ]),
            fingerprint_extra: json!({"dataset": c.section_json("dataset"), "preprocessing": c.section_json("preprocessing"), "sql": crate::sql_fingerprint(c)?}),
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        summary(&crate::features(&self.0.cfg, &self.0.lake).await?)
    }
}

struct Quality(Arc<StageContext>);

impl StageTask for Quality {
    async fn io(&self) -> Result<TaskIo, Error> {
        Ok(TaskIo {
            inputs: strs(&[lake::SPLIT_STATS, lake::CLEAN_REPORT]),
            outputs: strs(&[lake::QUALITY_REPORT]),
            fingerprint_extra: json!({"dataset": self.0.cfg.section_json("dataset")}),
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        let lake = &self.0.lake;
        let q = crate::quality(lake).await?;
        summary(&QualitySummary {
            splits: q.splits,
            report: lake.display(<contracts::QualityReport as contracts::Document>::PATH),
        })
    }
}
