//! The `gate`, `promote` and `render` tasks. The gate and the promotion depend on the model repository,
//! outside the lake: they declare it as external state, so a changed repository (a rollback, a version
//! promoted by hand) re-runs them.

use std::sync::Arc;

use serde_json::json;
use trialflow_core::fingerprint::sha256_hex;
use trialflow_core::{Error, lake};
use trialflow_dag::{StageContext, StageTask, Task, TaskIo, TaskKind, TaskSpec, summary};

use crate::manifests::{self, Files};

pub const TASKS: &[TaskKind] = &[
    TaskKind {
        name: "gate",
        build: build_gate,
    },
    TaskKind {
        name: "promote",
        build: build_promote,
    },
    TaskKind {
        name: "render",
        build: build_render,
    },
];

/// Every candidate of the config (the gate and the promotion read the chosen one's files).
fn candidate_dirs(ctx: &StageContext) -> Vec<String> {
    ctx.cfg
        .models
        .keys()
        .map(|m| lake::candidate_dir(m))
        .collect()
}

/// The served model's version folders (paths and sizes), outside the lake's own bookkeeping.
async fn repository_state(ctx: &StageContext) -> Result<Vec<(String, u64)>, Error> {
    let name = &ctx.cfg.serving.model_name;
    Ok(ctx
        .models
        .list(&format!("{name}/"))
        .await?
        .into_iter()
        .filter(|e| !e.path.contains("/_lock") && !e.path.contains("/_history/"))
        .map(|e| (e.path, e.size))
        .collect())
}

struct Gate(Arc<StageContext>);

fn build_gate(_: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    Ok(Arc::new(Gate(ctx.clone())))
}

impl StageTask for Gate {
    async fn io(&self) -> Result<TaskIo, Error> {
        let c = &self.0.cfg;
        // the newest blessed version, from a listing (io stays cheap: no file is read)
        let served = lake::model_versions(&self.0.models, &c.serving.model_name)
            .await?
            .into_iter()
            .rev()
            .find(|(_, blessed)| *blessed)
            .map(|(v, _)| v);
        let mut inputs = vec![
            lake::EVALUATION.to_string(),
            // the served version is re-scored on the test split
            format!("{}split=test/", lake::FEATURES),
        ];
        inputs.extend(candidate_dirs(&self.0));
        Ok(TaskIo {
            inputs,
            outputs: vec![lake::GATE.into(), lake::BLESSINGS.into()],
            fingerprint_extra: json!({"deployment": c.section_json("deployment"), "training": c.section_json("training"), "model_name": c.serving.model_name}),
            // Regressions are measured against the version served now.
            external_state: json!({"served_version": served}),
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        let c = &self.0;
        summary(&crate::gate(&c.cfg, &c.lake, &c.models).await?)
    }
}

struct Promote(Arc<StageContext>);

fn build_promote(_: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    Ok(Arc::new(Promote(ctx.clone())))
}

impl StageTask for Promote {
    async fn io(&self) -> Result<TaskIo, Error> {
        let c = &self.0.cfg;
        let name = &c.serving.model_name;
        let mut inputs = vec![
            lake::GATE.to_string(),
            lake::BLESSINGS.to_string(),
            lake::PHENOTYPES_MODEL.to_string(),
        ];
        inputs.extend(candidate_dirs(&self.0));
        Ok(TaskIo {
            inputs,
            outputs: vec![format!("{}{name}/", lake::DEPLOYMENTS)],
            fingerprint_extra: json!({"model_name": name, "repository": self.0.models.url()}),
            // The repository is outside the lake: a changed repository re-checks the promotion.
            external_state: summary(&repository_state(&self.0).await?)?,
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        let c = &self.0;
        summary(&crate::promote(&c.cfg, &c.lake, &c.models).await?)
    }
}

/// Kustomize overlays rendered into the lake, from `dir` or the manifests built into the binary.
struct Render {
    ctx: Arc<StageContext>,
    dir: Option<std::path::PathBuf>,
    overlays: Vec<String>,
}

fn build_render(spec: &TaskSpec, ctx: &Arc<StageContext>) -> Result<Arc<dyn Task>, Error> {
    let dir: Option<std::path::PathBuf> = spec.arg_opt("dir", "a directory path")?;
    let overlays: Vec<String> = spec.arg("overlays", "a list of names")?;
    let files = manifest_files(&dir);
    for o in &overlays {
        let k = format!("overlays/{o}/kustomization.yaml");
        if files.read(&k).is_none() {
            return Err(spec.arg_error(
                "overlays",
                format!("no overlay `{o}`: {} does not exist", files.describe(&k)),
            ));
        }
    }
    Ok(Arc::new(Render {
        ctx: ctx.clone(),
        dir,
        overlays,
    }))
}

impl StageTask for Render {
    async fn io(&self) -> Result<TaskIo, Error> {
        Ok(TaskIo {
            inputs: vec![],
            outputs: self
                .overlays
                .iter()
                .map(|o| format!("{}{o}.yaml", lake::MANIFESTS))
                .collect(),
            fingerprint_extra: json!({"overlays": self.overlays, "code_version": self.ctx.code_version}),
            external_state: match &self.dir {
                Some(d) => json!(manifests_digest(d)?),
                None => json!("embedded"),
            },
            ..Default::default()
        })
    }

    async fn run(&self, _run_id: &str) -> Result<serde_json::Value, Error> {
        let lake = &self.ctx.lake;
        let mut written = Vec::new();
        for o in &self.overlays {
            let yaml = manifests::render(&*manifest_files(&self.dir), o, &self.ctx.code_version)?;
            let rel = format!("{}{o}.yaml", lake::MANIFESTS);
            lake.put(&rel, yaml).await?;
            written.push(lake.display(&rel));
        }
        Ok(json!({"manifests": written}))
    }
}

fn manifest_files(dir: &Option<std::path::PathBuf>) -> Box<dyn Files> {
    match dir {
        Some(d) => Box::new(manifests::Disk(d.clone())),
        None => Box::new(manifests::Embedded),
    }
}

/// A content hash of every file under the manifests directory, so that an edited manifest re-renders.
fn manifests_digest(dir: &std::path::Path) -> Result<String, Error> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else {
                out.push((p.display().to_string(), sha256_hex(&std::fs::read(&p)?)));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| {
        Error::config(
            dir.display().to_string(),
            "tasks.render.with.dir",
            format!("cannot read: {e}"),
        )
    })?;
    files.sort();
    Ok(sha256_hex(summary(&files)?.to_string().as_bytes()))
}
