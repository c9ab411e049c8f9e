//! Deployment: the quality gate over the evaluated candidates, and promotion of the chosen one into the model
//! repository as a new TF-Serving-style version folder, `BLESSED` written last so that a half-copied version
//! is never servable.

use serde::{Deserialize, Serialize};
use trialflow_core::config::Config;
use trialflow_core::fingerprint::sha256_hex;
use trialflow_core::lake;
use trialflow_core::{Error, Result, Storage};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub model: String,
    pub check: String,
    /// `None` when the metric is undefined (e.g. AUC on a one-class test split).
    pub value: Option<f64>,
    pub threshold: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateDecision {
    /// The best candidate that passed every check.
    pub chosen: Option<String>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Deserialize)]
struct Leaderboard {
    leaderboard: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    model: String,
    metrics: EntryMetrics,
}

#[derive(Debug, Deserialize)]
struct EntryMetrics {
    roc_auc: Option<f64>,
}

/// Applies the configured checks to every candidate; refuses (bad-data exit) when none passes.
pub async fn gate(cfg: &Config, lake: &Storage) -> Result<GateDecision> {
    let ev: Leaderboard = lake.get_json(lake::EVALUATION).await?;
    let min = cfg.deployment.min_test_auc;
    let checks: Vec<Check> = ev
        .leaderboard
        .iter()
        .map(|e| Check {
            model: e.model.clone(),
            check: "test_roc_auc >= deployment.min_test_auc".into(),
            value: e.metrics.roc_auc,
            threshold: min,
            passed: e.metrics.roc_auc.is_some_and(|a| a >= min), // undefined AUC never passes
        })
        .collect();
    // The leaderboard is sorted best first, so the first passing candidate is the best one.
    let chosen = checks.iter().find(|c| c.passed).map(|c| c.model.clone());
    let decision = GateDecision {
        chosen: chosen.clone(),
        checks,
    };
    lake.put_json(lake::GATE, &decision).await?;
    if chosen.is_none() {
        let failed: Vec<String> = decision
            .checks
            .iter()
            .map(|c| {
                let value = c
                    .value
                    .map(|v| format!("{v:.4}"))
                    .unwrap_or_else(|| "undefined".into());
                format!("{}: test ROC AUC {value} < {:.4}", c.model, c.threshold)
            })
            .collect();
        return Err(Error::bad_data(
            lake.display(lake::GATE),
            format!(
                "quality gate refused every candidate ({}); nothing promoted",
                failed.join("; ")
            ),
        ));
    }
    Ok(decision)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promotion {
    pub model_name: String,
    pub version: u64,
    pub candidate: String,
    /// False when an identical blessed version already existed (nothing copied).
    pub new_version: bool,
    pub location: String,
}

const FILES: [&str; 3] = ["model.safetensors", "model.json", "metrics.json"];

/// Copies the gate's choice into `<models>/<serving.model_name>/<version>/`.
pub async fn promote(cfg: &Config, lake: &Storage, models: &Storage) -> Result<Promotion> {
    let decision: GateDecision = lake.get_json(lake::GATE).await?;
    let candidate = decision
        .chosen
        .clone()
        .ok_or_else(|| Error::bad_data(lake.display(lake::GATE), "the gate chose no candidate"))?;
    let name = cfg.serving.model_name.clone();
    models.sweep_staged()?; // promotion runs under the lake's run lock
    let dir = lake::candidate_dir(&candidate);
    let weights = lake.get(&format!("{dir}model.safetensors")).await?;
    let sha = sha256_hex(&weights);
    let existing = lake::model_versions(models, &name).await?;
    for (v, blessed) in &existing {
        if *blessed
            && let Some(w) = models
                .get_opt(&format!("{name}/{v}/model.safetensors"))
                .await?
            && sha256_hex(&w) == sha
        {
            return Ok(Promotion {
                model_name: name.clone(),
                version: *v,
                candidate,
                new_version: false,
                location: models.display(&format!("{name}/{v}/")),
            });
        }
    }
    // A version folder without BLESSED is a promotion that was interrupted: finish it in place.
    let version = match existing.last() {
        Some((v, false)) => *v,
        Some((v, true)) => v + 1,
        None => 1,
    };
    let target = format!("{name}/{version}/");
    for f in FILES {
        let bytes = if f == "model.safetensors" {
            weights.clone()
        } else {
            lake.get(&format!("{dir}{f}")).await?
        };
        models.put(&format!("{target}{f}"), bytes).await?;
    }
    let blessed = serde_json::json!({
        "candidate": candidate,
        "weights_sha256": sha,
        "checks": decision.checks.iter().filter(|c| c.model == candidate).collect::<Vec<_>>(),
    });
    models
        .put_json(&format!("{target}BLESSED"), &blessed)
        .await?;
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let record = serde_json::json!({
        "model_name": name, "version": version, "candidate": candidate, "weights_sha256": sha,
        "promoted_at": now, "repository": models.url(),
    });
    lake.put_json(
        &format!("{}{name}/{version}.json", lake::DEPLOYMENTS),
        &record,
    )
    .await?;
    Ok(Promotion {
        model_name: name,
        version,
        candidate,
        new_version: true,
        location: models.display(&target),
    })
}
