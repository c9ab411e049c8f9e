//! The quality gate: configured checks over every evaluated candidate; the best candidate that passes all of
//! them is blessed (`gate/<model>/BLESSED` lists the checks and their values).

use trialflow_core::config::{Config, RegressionCheck};
use trialflow_core::contracts::{self, EvaluationReport, ModelMetrics, TrainReport};
use trialflow_core::fingerprint::sha256_hex;
use trialflow_core::lake;
use trialflow_core::{Error, Result, Storage};
use trialflow_model::ModelCard;
use trialflow_model::metrics::{self, Evaluation};

use crate::repository::{self, Versions};

pub use trialflow_core::contracts::{Blessing, Check, GateDecision, blessing_path};

/// Lower Brier score, log loss and calibration error are better; higher everything else.
fn higher_is_better(metric: &str) -> bool {
    !["brier", "log_loss", "ece"]
        .iter()
        .any(|m| metric.starts_with(m))
}

fn bound_checks(
    model: &str,
    scope: &str,
    metrics: &ModelMetrics,
    metric: &str,
    min: Option<f64>,
    max: Option<f64>,
) -> Vec<Check> {
    let value = metrics.get(metric).flatten();
    let mut out = Vec::new();
    for (op, bound) in [(">=", min), ("<=", max)] {
        let Some(bound) = bound else { continue };
        out.push(Check {
            model: model.into(),
            metric: metric.into(),
            scope: scope.into(),
            value,
            op: op.into(),
            bound,
            passed: value.is_some_and(|v| if op == ">=" { v >= bound } else { v <= bound }),
            note: None,
        });
    }
    out
}

/// A served version's metrics on this test split, by its endpoint; a time-to-event model's IPCW metrics
/// use this train split's censoring distribution, as its candidates' do.
async fn rescore(
    lake: &Storage,
    card: &ModelCard,
    weights: &[u8],
    how: &Evaluation,
) -> Result<ModelMetrics> {
    use trialflow_core::config::Endpoint;
    let (y, p) = trialflow_model::score::score_split(lake, card, weights, "test").await?;
    Ok(match (card.endpoint, &card.survival) {
        (Endpoint::Binary, _) => metrics::evaluate_model(metrics::Scoring::Binary, &y, &p, how),
        (Endpoint::Continuous, _) => {
            metrics::evaluate_model(metrics::Scoring::Continuous, &y, &p, how)
        }
        (Endpoint::TimeToEvent, Some(head)) => {
            let train = trialflow_model::split::load_split(
                lake,
                &card.feature_spec,
                "train",
                &[],
                &card.targets,
            )
            .await?;
            let (time, event) = trialflow_model::survival::observed(&train.y);
            let censoring =
                trialflow_model::survival::Censoring::fit(trialflow_model::survival::Observed {
                    time: &time,
                    event: &event,
                });
            let scoring = metrics::Scoring::TimeToEvent {
                censoring: &censoring,
                baseline: &head.baseline,
                horizons: &head.times,
            };
            metrics::evaluate_model(scoring, &y, &p, how)
        }
        (Endpoint::TimeToEvent, None) => {
            return Err(Error::bad_data(
                format!("model `{}`", card.name),
                "a time-to-event model without its baseline hazard (model.json `survival`)",
            ));
        }
    })
}

/// The served version, scored on this test split (or, when its features no longer fit the split, its own
/// recorded test metrics).
struct Served {
    version: u64,
    metrics: ModelMetrics,
    note: Option<String>,
}

async fn served_metrics(
    cfg: &Config,
    lake: &Storage,
    models: &Storage,
    versions: &Versions,
) -> Result<Option<Served>> {
    let Some(version) = versions.served() else {
        return Ok(None);
    };
    let name = &cfg.serving.model_name;
    let card: ModelCard = models
        .get_json(&format!("{name}/{version}/model.json"))
        .await?;
    let weights = models
        .get(&format!("{name}/{version}/model.safetensors"))
        .await?;
    let how = Evaluation {
        threshold: cfg.training.threshold,
        resamples: 0,
        seed: 0,
    };
    match rescore(lake, &card, &weights, &how).await {
        Ok(metrics) => Ok(Some(Served {
            version,
            metrics,
            note: Some(format!(
                "served version {version} re-scored on this test split"
            )),
        })),
        Err(e) if e.kind() == trialflow_core::ErrorKind::BadData => {
            let report: TrainReport =
                contracts::read(models, &format!("{name}/{version}/metrics.json")).await?;
            tracing::warn!(version, error = %e, "the served version cannot score this test split; comparing recorded test metrics");
            Ok(Some(Served {
                version,
                metrics: report.metrics,
                note: Some(format!(
                    "served version {version}'s features do not fit this split; its recorded test metrics are compared"
                )),
            }))
        }
        Err(e) => Err(e),
    }
}

fn regression_check(model: &str, r: &RegressionCheck, m: &ModelMetrics, served: &Served) -> Check {
    let value = m.get(&r.metric).flatten();
    let reference = served.metrics.get(&r.metric).flatten();
    let (op, bound) = match (higher_is_better(&r.metric), reference) {
        (true, Some(s)) => (">=", s - r.margin),
        (false, Some(s)) => ("<=", s + r.margin),
        (_, None) => (">=", f64::NAN),
    };
    Check {
        model: model.into(),
        metric: r.metric.clone(),
        scope: format!("test vs served version {}", served.version),
        value,
        op: op.into(),
        bound,
        passed: match (value, reference) {
            (Some(v), Some(_)) => {
                if op == ">=" {
                    v >= bound
                } else {
                    v <= bound
                }
            }
            // Nothing to regress from.
            (_, None) => true,
            (None, Some(_)) => false,
        },
        note: served.note.clone(),
    }
}

/// Applies the configured checks to every candidate and blesses the best one that passes them all; refuses
/// (bad-data exit, every failed check listed) when none does.
pub async fn gate(cfg: &Config, lake: &Storage, models: &Storage) -> Result<GateDecision> {
    let ev: EvaluationReport = contracts::load(lake).await?;
    let versions = repository::scan(models, &cfg.serving.model_name).await?;
    let served = served_metrics(cfg, lake, models, &versions).await?;
    let d = &cfg.deployment;
    let mut checks = Vec::new();
    for e in &ev.leaderboard {
        for c in &d.checks {
            checks.extend(bound_checks(
                &e.model, "test", &e.metrics, &c.metric, c.min, c.max,
            ));
        }
        for c in &d.slice_checks {
            for s in &e.slices {
                let scope = format!("slice {}={}", s.column, s.level);
                let mut found = bound_checks(&e.model, &scope, &s.metrics, &c.metric, c.min, c.max);
                for check in &mut found {
                    if s.metrics.n() < c.min_rows {
                        check.passed = true;
                        check.note = Some(format!(
                            "{} rows < min_rows {}: not checked",
                            s.metrics.n(),
                            c.min_rows
                        ));
                    } else if check.value.is_none() {
                        check.passed = true;
                        check.note =
                            Some("undefined on this slice (one class): not checked".into());
                    }
                }
                checks.extend(found);
            }
        }
        if let (Some(r), Some(s)) = (&d.regression, &served) {
            checks.push(regression_check(&e.model, r, &e.metrics, s));
        }
    }
    // The leaderboard is sorted best first, so the first candidate without a failed check is the best one.
    let chosen = ev
        .leaderboard
        .iter()
        .find(|e| checks.iter().all(|c| c.model != e.model || c.passed))
        .map(|e| e.model.clone());
    for e in &ev.leaderboard {
        if Some(&e.model) != chosen.as_ref() {
            lake.delete(&blessing_path(&e.model)).await?;
        }
    }
    let decision = GateDecision {
        chosen: chosen.clone(),
        served_version: served.as_ref().map(|s| s.version),
        checks,
    };
    contracts::save(lake, &decision).await?;
    let Some(chosen) = chosen else {
        let mut lines = Vec::new();
        for e in &ev.leaderboard {
            let failed: Vec<String> = decision
                .checks
                .iter()
                .filter(|c| c.model == e.model && !c.passed)
                .map(Check::describe)
                .collect();
            lines.push(format!("{}: {}", e.model, failed.join("; ")));
        }
        return Err(Error::GateRefused(format!(
            "{}: the quality gate refused every candidate, nothing promoted; failed checks — {}",
            lake.display(lake::GATE),
            lines.join(" | ")
        )));
    };
    let weights = lake
        .get(&format!(
            "{}model.safetensors",
            lake::candidate_dir(&chosen)
        ))
        .await?;
    let blessing = Blessing {
        candidate: chosen.clone(),
        weights_sha256: sha256_hex(&weights),
        blessed_at: repository::now(),
        checks: decision
            .checks
            .iter()
            .filter(|c| c.model == chosen)
            .cloned()
            .collect(),
    };
    lake.put_json(&blessing_path(&chosen), &blessing).await?;
    Ok(decision)
}
