//! Logging a training run to MLflow over its REST API (the client is [`crate::tracking`]).

use serde::Serialize;
use trialflow_core::config::Config;
use trialflow_core::{Error, Result, contracts::TrainReport};
use trialflow_model::ModelCard;

use crate::tracking;

/// Logs the run when `tracking.mlflow_uri` is set: where it was logged, or (unless `tracking.required`) why it
/// could not be, for `metrics.json`.
pub(crate) async fn track(
    cfg: &Config,
    model: &str,
    report: &TrainReport,
    card: &ModelCard,
    weights: Vec<u8>,
    started: std::time::SystemTime,
) -> Result<Option<serde_json::Value>> {
    let Some(uri) = &cfg.tracking.mlflow_uri else {
        return Ok(None);
    };
    let files = [
        ("model.safetensors", weights),
        ("model.json", json_bytes(card)),
        ("metrics.json", json_bytes(report)),
    ];
    Ok(Some(
        match log_to_mlflow(cfg, uri, report, card, &files, started).await {
            Ok(run) => serde_json::json!({"mlflow": run}),
            Err(e) if !cfg.tracking.required => {
                tracing::warn!(model, error = %e, "the run could not be logged to MLflow; training goes on (tracking.required: false)");
                serde_json::json!({"error": e.to_string()})
            }
            Err(e) => return Err(e),
        },
    ))
}

pub(crate) fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

pub(crate) fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One MLflow run per training run: params (architecture and training settings), per-epoch loss and AUC,
/// the final test metrics with their intervals, tags (code version, data and config fingerprints), and the
/// artifacts. A run that fails half-way is marked FAILED on the server.
pub(crate) async fn log_to_mlflow(
    cfg: &Config,
    uri: &str,
    report: &TrainReport,
    card: &ModelCard,
    files: &[(&str, Vec<u8>)],
    started: std::time::SystemTime,
) -> Result<tracking::RunRef> {
    use tracking::{Metric, param};
    let client = tracking::Mlflow::new(uri)?;
    let experiment = cfg
        .tracking
        .experiment
        .clone()
        .unwrap_or_else(|| cfg.dataset.name.clone());
    let experiment_id = client.experiment(&experiment).await?;
    let (run_id, artifact_uri) = client
        .create_run(&experiment_id, &report.model, unix_ms(started))
        .await?;
    let now = unix_ms(std::time::SystemTime::now());
    let t = &cfg.training;
    let a = &card.architecture;
    let params = vec![
        param("model", &report.model),
        param("hidden", format!("{:?}", a.hidden)),
        param("dropout", format!("{:?}", a.dropout)),
        param("activation", format!("{:?}", a.activation).to_lowercase()),
        param("input_dim", card.input_dim),
        param("seed", card.seed),
        param("epochs", t.epochs),
        param("batch_size", t.batch_size),
        param("learning_rate", t.learning_rate),
        param("weight_decay", t.weight_decay),
        param("patience", t.patience),
        param("monitor", format!("{:?}", t.monitor)),
        param("pos_weight", t.pos_weight.unwrap_or(1.0)),
        param("threshold", t.threshold),
        param("bootstrap_resamples", t.bootstrap_resamples),
        param("train_rows", report.train_rows),
        param("val_rows", report.val_rows),
        param("test_rows", report.test_rows),
    ];
    let tags = vec![
        param("trialflow.code_version", &card.code_version),
        param("trialflow.data_fingerprint", &card.data_fingerprint),
        param("trialflow.config_fingerprint", &card.config_fingerprint),
        param("trialflow.dataset", &cfg.dataset.name),
        param("mlflow.source.name", "trialflow"),
        param("mlflow.source.type", "JOB"),
    ];
    let mut metrics = Vec::new();
    for e in &report.history {
        let step = e.epoch as i64;
        let mut push = |key: &str, value: Option<f64>| {
            if let Some(value) = value.filter(|v| v.is_finite()) {
                metrics.push(Metric {
                    key: key.into(),
                    value,
                    step,
                    timestamp: now,
                });
            }
        };
        push("train_loss", Some(e.train_loss));
        push("val_loss", Some(e.val_loss));
        push("val_auc", e.val_auc);
    }
    for name in trialflow_core::contracts::ModelMetrics::names(report.metrics.endpoint()) {
        if let Some(v) = report
            .metrics
            .get(&name)
            .flatten()
            .filter(|v| v.is_finite())
        {
            metrics.push(Metric {
                key: format!("test_{name}"),
                value: v,
                step: 0,
                timestamp: now,
            });
        }
    }
    metrics.push(Metric {
        key: "best_epoch".into(),
        value: report.best_epoch as f64,
        step: 0,
        timestamp: now,
    });
    let logged = async {
        client.log(&run_id, &metrics, &params, &tags).await?;
        for (name, bytes) in files {
            client.upload(&artifact_uri, name, bytes.clone()).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    let end = unix_ms(std::time::SystemTime::now());
    client
        .finish(
            &run_id,
            if logged.is_ok() { "FINISHED" } else { "FAILED" },
            end,
        )
        .await?;
    logged?;
    Ok(tracking::RunRef {
        tracking_uri: uri.to_string(),
        experiment_id,
        run_id,
        artifact_uri,
    })
}
