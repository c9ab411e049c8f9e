//! Stage functions wrapped as DAG tasks: what each reads and writes in the lake, and what else its
//! fingerprint covers.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use trialflow_core::config::Config;
use trialflow_core::fingerprint::sha256_hex;
use trialflow_core::{Error, Storage, lake};
use trialflow_dag::{BoxFuture, Pipeline, Task, TaskError, TaskIo};

pub const KINDS: &[&str] = &[
    "ingest", "clean", "features", "quality", "train", "evaluate", "analyze", "gate", "promote",
    "render",
];

pub struct Ctx {
    pub cfg: Config,
    pub lake: Storage,
    pub models: Storage,
    pub code_version: String,
}

enum Kind {
    Ingest,
    Clean,
    Features,
    Quality,
    Train(String),
    Evaluate(Vec<String>),
    Analyze,
    Gate,
    Promote,
    /// Kustomize overlays rendered into the lake, from `dir` or the manifests built into the binary.
    Render {
        dir: Option<std::path::PathBuf>,
        overlays: Vec<String>,
    },
}

struct StageTask {
    ctx: Arc<Ctx>,
    kind: Kind,
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Builds one task object per task of `pipeline`, checking task arguments against the config.
pub fn build(pipeline: &Pipeline, ctx: Arc<Ctx>) -> Result<HashMap<String, Arc<dyn Task>>, Error> {
    let mut out: HashMap<String, Arc<dyn Task>> = HashMap::new();
    for t in &pipeline.tasks {
        let arg = |key: &str| -> Result<&Value, Error> {
            t.with.get(key).ok_or_else(|| {
                Error::config(&t.file, format!("tasks.{}.with.{key}", t.name), "required")
            })
        };
        let kind = match t.run.as_str() {
            "ingest" => Kind::Ingest,
            "clean" => Kind::Clean,
            "features" => Kind::Features,
            "quality" => Kind::Quality,
            "train" => {
                let m = arg("model")?.as_str().unwrap_or_default().to_string();
                if !ctx.cfg.models.contains_key(&m) {
                    return Err(Error::config(
                        &t.file,
                        format!("tasks.{}.with.model", t.name),
                        format!(
                            "`{m}` is not in the config's `models` ({:?})",
                            ctx.cfg.models.keys().collect::<Vec<_>>()
                        ),
                    ));
                }
                Kind::Train(m)
            }
            "evaluate" => {
                let models: Vec<String> =
                    serde_json::from_value(arg("models")?.clone()).map_err(|e| {
                        Error::config(
                            &t.file,
                            format!("tasks.{}.with.models", t.name),
                            format!("expected a list of names: {e}"),
                        )
                    })?;
                Kind::Evaluate(models)
            }
            "analyze" => Kind::Analyze,
            "gate" => {
                trialflow_deploy::validate(&ctx.cfg)?;
                Kind::Gate
            }
            "promote" => Kind::Promote,
            "render" => {
                let key = |k: &str| format!("tasks.{}.with.{k}", t.name);
                let dir = match t.with.get("dir") {
                    None => None,
                    Some(v) => Some(std::path::PathBuf::from(v.as_str().ok_or_else(|| {
                        Error::config(&t.file, key("dir"), "expected a directory path")
                    })?)),
                };
                let overlays: Vec<String> = serde_json::from_value(arg("overlays")?.clone())
                    .map_err(|e| {
                        Error::config(
                            &t.file,
                            key("overlays"),
                            format!("expected a list of names: {e}"),
                        )
                    })?;
                let files = manifest_files(&dir);
                for o in &overlays {
                    let k = format!("overlays/{o}/kustomization.yaml");
                    if files.read(&k).is_none() {
                        return Err(Error::config(
                            &t.file,
                            key("overlays"),
                            format!("no overlay `{o}`: {} does not exist", files.describe(&k)),
                        ));
                    }
                }
                Kind::Render { dir, overlays }
            }
            other => {
                return Err(Error::config(
                    &t.file,
                    format!("tasks.{}.run", t.name),
                    format!("unknown kind `{other}`"),
                ));
            }
        };
        out.insert(
            t.name.clone(),
            Arc::new(StageTask {
                ctx: ctx.clone(),
                kind,
            }),
        );
    }
    Ok(out)
}

impl StageTask {
    async fn io_inner(&self) -> Result<TaskIo, Error> {
        let c = &self.ctx.cfg;
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Ok(match &self.kind {
            Kind::Ingest => TaskIo {
                inputs: vec![],
                outputs: strs(&["raw/"]),
                // Re-listed on every run (cheap), so new or changed source files are never missed.
                fingerprint_extra: json!({"dataset": c.section_json("dataset"), "listing": to_json(&trialflow_ingest::list_sources(c).await?)}),
                ..Default::default()
            },
            Kind::Clean => {
                let key = trialflow_preprocess::pseudonym_key(c)?;
                TaskIo {
                    inputs: strs(&[lake::RAW_CURRENT]),
                    outputs: strs(&[
                        lake::CLEAN,
                        lake::QUARANTINE,
                        lake::CLEAN_REPORT,
                        lake::SQL_CLEAN,
                    ]),
                    // The key itself never reaches the state files, only a hash of it.
                    fingerprint_extra: json!({"dataset": c.section_json("dataset"), "sql": trialflow_preprocess::sql_fingerprint(c)?, "key": sha256_hex(&[b"trialflow-key:".as_slice(), &key].concat())}),
                    ..Default::default()
                }
            }
            Kind::Features => TaskIo {
                inputs: strs(&[lake::CLEAN]),
                outputs: strs(&[
                    lake::FEATURES,
                    lake::FEATURE_SPEC,
                    lake::SPLIT_STATS,
                    lake::SQL_FEATURES,
                ]),
                fingerprint_extra: json!({"dataset": c.section_json("dataset"), "preprocessing": c.section_json("preprocessing"), "sql": trialflow_preprocess::sql_fingerprint(c)?}),
                ..Default::default()
            },
            Kind::Quality => TaskIo {
                inputs: strs(&[lake::SPLIT_STATS, lake::CLEAN_REPORT]),
                outputs: strs(&[lake::QUALITY_REPORT]),
                fingerprint_extra: json!({"dataset": c.section_json("dataset")}),
                ..Default::default()
            },
            Kind::Train(m) => TaskIo {
                inputs: strs(&[lake::FEATURES, lake::FEATURE_SPEC]),
                outputs: vec![lake::candidate_dir(m)],
                fingerprint_extra: json!({"model": to_json(&c.models.get(m)), "training": c.section_json("training")}),
                ..Default::default()
            },
            Kind::Evaluate(models) => TaskIo {
                inputs: models
                    .iter()
                    .map(|m| format!("{}metrics.json", lake::candidate_dir(m)))
                    .collect(),
                outputs: strs(&[lake::EVALUATION]),
                fingerprint_extra: json!({"models": models}),
                ..Default::default()
            },
            Kind::Analyze => TaskIo {
                inputs: strs(&[lake::CLEAN, lake::CLEAN_REPORT, lake::EVALUATION]),
                outputs: strs(&[lake::REPORTS]),
                fingerprint_extra: json!({"dataset": c.section_json("dataset"), "analysis": c.section_json("analysis")}),
                ..Default::default()
            },
            Kind::Gate => TaskIo {
                inputs: strs(&[lake::EVALUATION]),
                outputs: strs(&[lake::GATE, lake::BLESSINGS]),
                fingerprint_extra: json!({"deployment": c.section_json("deployment"), "training": c.section_json("training"), "model_name": c.serving.model_name}),
                ..Default::default()
            },
            Kind::Render { dir, overlays } => TaskIo {
                inputs: vec![],
                outputs: overlays
                    .iter()
                    .map(|o| format!("{}{o}.yaml", lake::MANIFESTS))
                    .collect(),
                fingerprint_extra: json!({"overlays": overlays, "code_version": self.ctx.code_version}),
                external_state: match dir {
                    Some(d) => json!(manifests_digest(d)?),
                    None => json!("embedded"),
                },
            },
            Kind::Promote => {
                let name = &c.serving.model_name;
                let repo = self.repository_state().await?;
                TaskIo {
                    inputs: {
                        let mut v = strs(&[lake::GATE, lake::BLESSINGS]);
                        v.extend(c.models.keys().map(|m| lake::candidate_dir(m)));
                        v
                    },
                    outputs: vec![format!("{}{name}/", lake::DEPLOYMENTS)],
                    fingerprint_extra: json!({"model_name": name, "repository": self.ctx.models.url()}),
                    // The repository is outside the lake: a changed repository re-checks the promotion.
                    external_state: to_json(&repo),
                }
            }
        })
    }

    async fn run_inner(&self, run_id: &str) -> Result<Value, Error> {
        let Ctx {
            cfg,
            lake,
            models,
            code_version,
        } = &*self.ctx;
        Ok(match &self.kind {
            Kind::Ingest => to_json(&trialflow_ingest::ingest(cfg, lake, false).await?),
            Kind::Clean => to_json(&trialflow_preprocess::clean(cfg, lake).await?),
            Kind::Features => to_json(&trialflow_preprocess::features(cfg, lake).await?),
            Kind::Quality => {
                let q = trialflow_preprocess::quality(lake).await?;
                json!({"splits": q.splits, "report": lake.display(lake::QUALITY_REPORT)})
            }
            Kind::Train(m) => to_json(&trialflow_train::train(cfg, lake, m, code_version).await?),
            Kind::Evaluate(models) => to_json(&trialflow_train::evaluate(lake, models).await?),
            Kind::Analyze => {
                let dir = lake::report_dir(run_id);
                let a = trialflow_analysis::analyze(cfg, lake, &dir).await?;
                json!({"analyzed_rows": a.analyzed_rows, "report": lake.display(&format!("{dir}report.html"))})
            }
            Kind::Gate => to_json(&trialflow_deploy::gate(cfg, lake, models).await?),
            Kind::Render { dir, overlays } => {
                let mut written = Vec::new();
                for o in overlays {
                    let yaml = trialflow_deploy::manifests::render(
                        &*manifest_files(dir),
                        o,
                        code_version,
                    )?;
                    let rel = format!("{}{o}.yaml", lake::MANIFESTS);
                    lake.put(&rel, yaml).await?;
                    written.push(lake.display(&rel));
                }
                json!({"manifests": written})
            }
            Kind::Promote => to_json(&trialflow_deploy::promote(cfg, lake, models).await?),
        })
    }
}

impl StageTask {
    /// The served model's version folders (paths and sizes), outside the lake's own bookkeeping.
    async fn repository_state(&self) -> Result<Vec<(String, u64)>, Error> {
        let name = &self.ctx.cfg.serving.model_name;
        Ok(self
            .ctx
            .models
            .list(&format!("{name}/"))
            .await?
            .into_iter()
            .filter(|e| !e.path.contains("/_lock") && !e.path.contains("/_history/"))
            .map(|e| (e.path, e.size))
            .collect())
    }
}

fn manifest_files(dir: &Option<std::path::PathBuf>) -> Box<dyn trialflow_deploy::manifests::Files> {
    match dir {
        Some(d) => Box::new(trialflow_deploy::manifests::Disk(d.clone())),
        None => Box::new(trialflow_deploy::manifests::Embedded),
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
    Ok(sha256_hex(to_json(&files).to_string().as_bytes()))
}

impl Task for StageTask {
    fn io(&self) -> BoxFuture<'_, Result<TaskIo, TaskError>> {
        Box::pin(async move { self.io_inner().await.map_err(TaskError::from) })
    }

    fn run<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Value, TaskError>> {
        Box::pin(async move { self.run_inner(run_id).await.map_err(TaskError::from) })
    }
}
