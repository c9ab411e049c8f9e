//! What a model answers, by its endpoint: a probability (binary), a predicted value (continuous), or a risk
//! score and survival probabilities at requested times (time to event; the card's `training.horizons` by
//! default); and the row's phenotype cluster when a clustering was promoted with the version. Both protocols
//! and batch scoring name and shape the outputs from here, and the metadata declares them.

use serde_json::Value;
use trialflow_core::config::Endpoint;
use trialflow_model::ModelCard;

use crate::error::{ApiError, ApiResult};
use crate::repository::LoadedVersion;

/// At most this many survival times per request: each costs one value per row in the answer.
pub const MAX_TIMES: usize = 64;

/// One named output: `columns` values per row, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: &'static str,
    pub columns: usize,
    pub data: Vec<f32>,
    /// Whole numbers (a cluster): INT64 in OIP v2.
    pub integer: bool,
}

/// The output names and their columns per row (`None`: as many as the request's times) of a model, and
/// `cluster` when a clustering of baseline phenotypes was promoted with it.
pub fn declared(loaded: &LoadedVersion) -> Vec<(&'static str, Option<usize>)> {
    let mut out = match loaded.card.endpoint {
        Endpoint::Binary => vec![("probability", Some(1))],
        Endpoint::Continuous => vec![("prediction", Some(1))],
        Endpoint::TimeToEvent => vec![("risk_score", Some(1)), ("survival", None)],
    };
    if loaded.phenotypes.is_some() {
        out.push(("cluster", Some(1)));
    }
    out
}

/// The default survival times of a model (empty for the other endpoints).
pub fn default_times(card: &ModelCard) -> &[f64] {
    card.survival.as_ref().map_or(&[], |s| &s.times[..])
}

/// Survival times a request names under `field`: a non-empty list of at most [`MAX_TIMES`] finite numbers
/// not below 0. Refused for a model that is not time-to-event.
pub fn requested_times(card: &ModelCard, value: &Value, field: &str) -> ApiResult<Vec<f64>> {
    if card.endpoint != Endpoint::TimeToEvent {
        return Err(ApiError::bad(format!(
            "{field}: only a time-to-event model takes survival times"
        )));
    }
    let Value::Array(items) = value else {
        return Err(ApiError::bad(format!("{field}: expected a list of times")));
    };
    if items.is_empty() || items.len() > MAX_TIMES {
        return Err(ApiError::bad(format!(
            "{field}: expected 1 to {MAX_TIMES} times, got {}",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_f64() {
            Some(t) if t.is_finite() && t >= 0.0 => Ok(t),
            _ => Err(ApiError::bad(format!(
                "{field}[{i}]: expected a finite time, 0 or more"
            ))),
        })
        .collect()
}

/// The model's outputs for encoded rows `x`; `times` for a time-to-event model's survival (the defaults
/// when `None`).
pub fn outputs(loaded: &LoadedVersion, x: &[f32], times: Option<&[f64]>) -> Vec<Output> {
    let card = &loaded.card;
    let values = loaded.scorer.predict(card.endpoint, x);
    let mut out = head_outputs(loaded, values, times);
    if let Some(p) = &loaded.phenotypes {
        // numbered from 1, as the report's clusters
        out.push(Output {
            name: "cluster",
            columns: 1,
            data: p.assign(x).into_iter().map(|c| (c + 1) as f32).collect(),
            integer: true,
        });
    }
    out
}

/// The endpoint's own outputs of the head's values.
fn head_outputs(loaded: &LoadedVersion, values: Vec<f32>, times: Option<&[f64]>) -> Vec<Output> {
    let card = &loaded.card;
    match (&card.survival, card.endpoint) {
        (Some(head), Endpoint::TimeToEvent) => {
            let times = times.unwrap_or(&head.times);
            let survival = values
                .iter()
                .flat_map(|&r| head.baseline.survival(r, times))
                .map(|s| s as f32)
                .collect();
            vec![
                Output {
                    name: "risk_score",
                    columns: 1,
                    data: values,
                    integer: false,
                },
                Output {
                    name: "survival",
                    columns: times.len(),
                    data: survival,
                    integer: false,
                },
            ]
        }
        _ => vec![Output {
            name: declared(loaded)[0].0,
            columns: 1,
            data: values,
            integer: false,
        }],
    }
}
