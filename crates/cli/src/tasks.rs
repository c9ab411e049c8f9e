//! The task kinds of every stage, registered: each stage crate declares its tasks (inputs, outputs,
//! fingerprint material, the function) beside its code; this is the one list of them.

use trialflow_dag::{Registry, TaskKind};

const STAGES: &[&[TaskKind]] = &[
    trialflow_ingest::TASKS,
    trialflow_preprocess::TASKS,
    trialflow_train::TASKS,
    trialflow_analysis::TASKS,
    trialflow_deploy::TASKS,
];

pub fn registry() -> Registry {
    Registry::new(STAGES)
}

#[cfg(test)]
mod tests {
    //! Every task of the full pipeline, run in order over a lake and a model repository that record every
    //! access: a task that reads a lake path it did not declare (as an input, an output, or a read its inputs
    //! pin), writes or deletes one outside its outputs, or touches the model repository without declaring
    //! it as external state, fails the test naming the task and the path.

    use std::path::Path;
    use std::sync::Arc;

    use trialflow_core::recording::{Access, Op, Recorder};
    use trialflow_core::{Config, Storage};
    use trialflow_dag::{PipelineSet, StageContext, TaskIo};

    fn repo() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    fn config(dir: &Path) -> Config {
        let text = std::fs::read_to_string(repo().join("config/config.yaml"))
            .expect("the sample config")
            .replace(
                "file://data/raw/clinical_trial_data_*.csv",
                &format!("file://{}/raw/*.csv", dir.display()),
            );
        let env: Vec<(String, String)> = [
            ("STORAGE__LAKE", format!("file://{}/lake", dir.display())),
            (
                "STORAGE__MODELS",
                format!("file://{}/models", dir.display()),
            ),
            ("TRAINING__EPOCHS", "3".into()),
            ("TRAINING__BOOTSTRAP_RESAMPLES", "20".into()),
            // the gate must bless something for the promotion to run; its own checks have their tests
            ("DEPLOYMENT__CHECKS", "[]".into()),
            ("DEPLOYMENT__SLICE_CHECKS", "[]".into()),
            (
                "DEPLOYMENT__REGRESSION",
                "{metric: roc_auc, margin: 1.0}".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (format!("TRIALFLOW_{k}"), v))
        .collect();
        Config::from_yaml(&text, "config/config.yaml", &env).expect("a valid config")
    }

    fn under(path: &str, prefixes: &[String]) -> bool {
        prefixes.iter().any(|p| path.starts_with(p.as_str()))
    }

    /// Accesses of one task that its declaration does not cover.
    fn undeclared(io: &TaskIo, lake: Vec<Access>, models: Vec<Access>) -> Vec<String> {
        let readable: Vec<String> = io
            .inputs
            .iter()
            .chain(&io.outputs)
            .chain(&io.pinned_reads)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for a in lake {
            let ok = match a.op {
                Op::Read => under(&a.path, &readable),
                // a listing names a folder without its trailing slash
                Op::List => under(&format!("{}/", a.path), &readable) || under(&a.path, &readable),
                Op::Write | Op::Delete => under(&a.path, &io.outputs),
            };
            if !ok {
                out.push(format!("lake {:?} {}", a.op, a.path));
            }
        }
        if io.external_state.is_null() {
            out.extend(models.into_iter().map(|a| {
                format!(
                    "model repository {:?} {} (no external state declared)",
                    a.op, a.path
                )
            }));
        }
        out
    }

    async fn run_task(
        ctx: &Arc<StageContext>,
        set: &PipelineSet,
        name: &str,
        recorders: (&Recorder, &Recorder),
    ) -> Vec<String> {
        let registry = super::registry();
        let pipeline = set
            .resolve("full", &registry.names())
            .expect("the full pipeline");
        let tasks = registry.build(&pipeline, ctx).expect("tasks");
        let task = &tasks[name];
        let io = task.io().await.expect("io");
        recorders.0.take();
        recorders.1.take();
        let summary = task.run("r1").await;
        assert!(summary.is_ok(), "{name}: {summary:?}");
        undeclared(&io, recorders.0.take(), recorders.1.take())
            .into_iter()
            .map(|a| format!("{name}: {a}"))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_task_reads_and_writes_only_what_it_declares() {
        let tmp = tempfile::tempdir().expect("tempdir");
        crate::generate::generate(1500, 3, 2, &tmp.path().join("raw")).expect("sample data");
        let cfg = config(tmp.path());
        let (lake, lake_rec) = Storage::open(&cfg.storage.lake).expect("lake").recording();
        let (models, models_rec) = Storage::open(&cfg.storage.models)
            .expect("models")
            .recording();
        let ctx = Arc::new(StageContext {
            cfg,
            lake,
            models,
            code_version: "test".into(),
        });
        let set = PipelineSet::load_dir(&repo().join("pipelines")).expect("pipelines");
        let order: Vec<String> = set
            .resolve("full", &super::registry().names())
            .expect("the full pipeline")
            .tasks
            .iter()
            .map(|t| t.name.clone())
            .collect();
        assert!(order.len() >= 10, "{order:?}");
        let mut found = Vec::new();
        for name in &order {
            found.extend(run_task(&ctx, &set, name, (&lake_rec, &models_rec)).await);
        }
        // again, now that a version is served: the gate re-scores it on the test split
        for name in ["gate", "promote"] {
            found.extend(run_task(&ctx, &set, name, (&lake_rec, &models_rec)).await);
        }
        assert!(
            found.is_empty(),
            "undeclared accesses:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn an_undeclared_read_is_found() {
        let io = TaskIo {
            inputs: vec!["candidates/evaluation.json".into()],
            outputs: vec!["candidates/gate.json".into()],
            ..Default::default()
        };
        let lake = vec![
            Access {
                op: Op::Read,
                path: "candidates/evaluation.json".into(),
            },
            Access {
                op: Op::Read,
                path: "processed/features/split=test/part-0.parquet".into(),
            },
            Access {
                op: Op::Write,
                path: "candidates/gate.json".into(),
            },
        ];
        let models = vec![Access {
            op: Op::List,
            path: "cv_outcome".into(),
        }];
        let found = undeclared(&io, lake, models);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("split=test"), "{found:?}");
        assert!(found[1].contains("model repository"), "{found:?}");
    }
}
