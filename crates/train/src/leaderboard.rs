//! The `evaluate` step: every candidate's metrics in one leaderboard, best first by the endpoint's ranking
//! metric (test ROC AUC, R², Harrell's C).

use trialflow_core::contracts;
use trialflow_core::{Result, Storage};

use crate::{EvaluationReport, TrainReport, metrics};

/// The configured threshold and bootstrap, seeded by the training seed.
pub fn evaluation(t: &trialflow_core::config::TrainingConfig) -> metrics::Evaluation {
    metrics::Evaluation {
        threshold: t.threshold,
        resamples: t.bootstrap_resamples,
        seed: t.seed,
    }
}

/// Collects the named candidates' metrics into `candidates/evaluation.json`.
pub async fn evaluate(lake: &Storage, models: &[String]) -> Result<EvaluationReport> {
    let mut leaderboard = Vec::new();
    for name in models {
        let r: TrainReport = contracts::read(lake, &contracts::candidate_metrics(name)).await?;
        leaderboard.push(r);
    }
    leaderboard.sort_by(|a, b| {
        let rank = |r: &TrainReport| r.metrics.ranking().1.unwrap_or(f64::NEG_INFINITY);
        rank(b).total_cmp(&rank(a)).then(a.model.cmp(&b.model))
    });
    let ev = EvaluationReport { leaderboard };
    contracts::save(lake, &ev).await?;
    Ok(ev)
}
