//! The `train` task (one model of `config.models`, `with: {model: NAME}`), the `evaluate` task (the
//! leaderboard of `with: {models: [NAME, …]}`) and the `cluster` task (`clustering`).

use std::sync::Arc;

use serde_json::json;
use trialflow_core::contracts;
use trialflow_core::{Error, lake};
use trialflow_dag::{StageContext, StageTask, Task, TaskIo, TaskKind, TaskSpec, summary};

pub const TASKS: &[TaskKind] = &[
    TaskKind {
        name: "train",
        build: build_train,
    },
    TaskKind {
        name: "evaluate",
        build: build_evaluate,
    },
    TaskKind {
        name: "cluster",
        build: build_cluster,
    },
];

/// Clusters of baseline phenotypes (`clustering`); without that section it removes an earlier config's and
/// writes `phenotypes/none.json`.
struct Cluster {
    ctx: Arc<StageContext>,
}

fn build_cluster(_spec: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    Ok(Arc::new(Cluster { ctx: ctx.clone() }))
}

impl StageTask for Cluster {
    async fn io(&self) -> Result<TaskIo, Error> {
        let c = &self.ctx.cfg;
        Ok(TaskIo {
            inputs: vec![lake::FEATURES.into(), lake::FEATURE_SPEC.into()],
            outputs: vec![lake::PHENOTYPES.into()],
            fingerprint_extra: json!({
                "clustering": c.section_json("clustering"),
                "seed": c.training.seed,
                "endpoint": c.training.endpoint,
                "targets": c.target_columns(),
                "reference": c.dataset.arm.reference,
            }),
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        let c = &self.ctx;
        if c.cfg.clustering.is_none() {
            // a clustering an earlier config asked for must not be reported or promoted with this one's models
            for stale in [lake::PHENOTYPES_MODEL, lake::PHENOTYPES_REPORT] {
                c.lake.delete(stale).await?;
            }
            let none = contracts::ClusterSummary {
                configured: false,
                k: None,
                ari_mean: None,
            };
            c.lake.put_json(lake::PHENOTYPES_NONE, &none).await?;
            return summary(&none);
        }
        c.lake.delete(lake::PHENOTYPES_NONE).await?;
        let r = crate::phenotypes::cluster(&c.cfg, &c.lake).await?;
        summary(&contracts::ClusterSummary {
            configured: true,
            k: Some(r.k),
            ari_mean: r.stability.map(|s| s.ari_mean),
        })
    }
}

struct Train {
    ctx: Arc<StageContext>,
    model: String,
}

fn build_train(spec: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    let model: String = spec.arg("model", "a model name")?;
    if !ctx.cfg.models.contains_key(&model) {
        return Err(spec.arg_error(
            "model",
            format!(
                "`{model}` is not in the config's `models` ({:?})",
                ctx.cfg.models.keys().collect::<Vec<_>>()
            ),
        ));
    }
    Ok(Arc::new(Train {
        ctx: ctx.clone(),
        model,
    }))
}

impl StageTask for Train {
    async fn io(&self) -> Result<TaskIo, Error> {
        let c = &self.ctx.cfg;
        Ok(TaskIo {
            inputs: vec![lake::FEATURES.into(), lake::FEATURE_SPEC.into()],
            outputs: vec![lake::candidate_dir(&self.model)],
            fingerprint_extra: json!({"model": summary(&c.models.get(&self.model))?, "training": c.section_json("training")}),
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        let c = &self.ctx;
        summary(&crate::train(&c.cfg, &c.lake, &self.model, &c.code_version).await?)
    }
}

struct Evaluate {
    ctx: Arc<StageContext>,
    models: Vec<String>,
}

fn build_evaluate(spec: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    Ok(Arc::new(Evaluate {
        ctx: ctx.clone(),
        models: spec.arg("models", "a list of names")?,
    }))
}

impl StageTask for Evaluate {
    async fn io(&self) -> Result<TaskIo, Error> {
        Ok(TaskIo {
            inputs: self
                .models
                .iter()
                .map(|m| contracts::candidate_metrics(m))
                .collect(),
            outputs: vec![lake::EVALUATION.into()],
            fingerprint_extra: json!({"models": self.models}),
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        summary(&crate::evaluate(&self.ctx.lake, &self.models).await?)
    }
}
