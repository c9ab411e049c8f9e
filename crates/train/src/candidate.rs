//! What a training run leaves under `candidates/<model>/`: the test split scored (metrics with intervals,
//! slices, permutation importance), the model card with its data and config fingerprints, the weights and the
//! test predictions serving must reproduce.

use trialflow_core::config::{Config, Endpoint, ModelConfig, TrainingConfig};
use trialflow_core::contracts::{self, Importance, ModelMetrics, Slice};
use trialflow_core::features::FeatureSpec;
use trialflow_core::fingerprint::Fingerprinter;
use trialflow_core::{Error, Result, Storage, lake};
use trialflow_model::metrics::Scoring;
use trialflow_model::survival::{BaselineHazard, Censoring, Observed};
use trialflow_model::{ModelCard, Network, SurvivalHead};

use crate::data::Inputs;
use crate::{Split, device::ce, evaluation, importance, metrics};

/// The test split as the trained network scores it.
pub(crate) struct TestScores {
    /// Probabilities, predicted values or risk scores (see `DenseCpu::predict`).
    pub(crate) p: Vec<f32>,
    pub(crate) metrics: ModelMetrics,
    pub(crate) slices: Vec<Slice>,
    pub(crate) importance: Vec<Importance>,
    /// A time-to-event model's baseline hazard and default times.
    pub(crate) survival: Option<SurvivalHead>,
}

pub(crate) fn score_test(
    cfg: &Config,
    net: &Network,
    inputs: &Inputs,
    spec: &FeatureSpec,
    seed: u64,
) -> Result<TestScores> {
    let t = &cfg.training;
    let test = &inputs.test;
    let dense = trialflow_model::DenseCpu::from_network(net).map_err(ce)?;
    let p = dense.predict(t.endpoint, &test.x);
    let how = evaluation(t);
    // a time-to-event model's train split: its Breslow baseline hazard and censoring distribution
    let train_survival =
        (t.endpoint == Endpoint::TimeToEvent).then(|| survival_observed(inputs.train_targets()));
    let survival = match &train_survival {
        Some(observed) => Some(SurvivalHead {
            baseline: BaselineHazard::breslow(
                observed.as_observed(),
                &train_outputs(&dense, inputs, spec)?,
            ),
            times: t.horizons.clone(),
        }),
        None => None,
    };
    let censoring = train_survival
        .as_ref()
        .map(|observed| Censoring::fit(observed.as_observed()));
    let scoring = match (&survival, &censoring) {
        (Some(head), Some(censoring)) => Scoring::TimeToEvent {
            censoring,
            baseline: &head.baseline,
            horizons: &t.horizons,
        },
        _ if t.endpoint == Endpoint::Continuous => Scoring::Continuous,
        _ => Scoring::Binary,
    };
    let rank = |predicted: &[f32]| {
        let m = metrics::evaluate_model(
            scoring,
            &test.y,
            predicted,
            &metrics::Evaluation {
                resamples: 0,
                ..how
            },
        );
        m.ranking().1.unwrap_or(f64::NAN)
    };
    let importance = if t.importance_repeats > 0 {
        importance::permutation_importance(
            &dense,
            t.endpoint,
            spec,
            test,
            t.importance_repeats,
            seed,
            &rank,
        )
    } else {
        Vec::new()
    };
    Ok(TestScores {
        metrics: metrics::evaluate_model(scoring, &test.y, &p, &how),
        slices: metrics::slices_model(scoring, &test.slices, &test.y, &p, &how),
        importance,
        p,
        survival,
    })
}

/// Times and events of interleaved survival targets, owned.
struct Survival {
    time: Vec<f64>,
    event: Vec<bool>,
}

impl Survival {
    fn as_observed(&self) -> Observed<'_> {
        Observed {
            time: &self.time,
            event: &self.event,
        }
    }
}

fn survival_observed(targets: &[f32]) -> Survival {
    let (time, event) = trialflow_model::survival::observed(targets);
    Survival { time, event }
}

/// The network's outputs on the train split (held, or streamed block by block).
fn train_outputs(
    dense: &trialflow_model::DenseCpu,
    inputs: &Inputs,
    spec: &FeatureSpec,
) -> Result<Vec<f32>> {
    if !inputs.streamed() {
        return Ok(dense.outputs(&inputs.train.x));
    }
    let mut out = Vec::with_capacity(inputs.train_stream.rows);
    let units = inputs.train_stream.units();
    tokio::task::block_in_place(|| {
        inputs.train_stream.for_each_block::<trialflow_core::Error>(
            spec,
            &units,
            65_536,
            &mut |x, _| {
                out.extend(dense.outputs(x));
                Ok(())
            },
        )
    })?;
    Ok(out)
}

/// `model.json`: the architecture, the feature spec, the test metrics and where the weights came from.
#[allow(clippy::too_many_arguments)] // the card gathers everything a training run decided
pub(crate) fn card(
    model: &str,
    t: &TrainingConfig,
    arch: ModelConfig,
    spec: FeatureSpec,
    inputs: &Inputs,
    test: &TestScores,
    code_version: &str,
    seed: u64,
) -> ModelCard {
    let mut data_fp = Fingerprinter::new();
    if inputs.streamed() {
        // what was read, by object: hashing every row would cost another pass over the split
        data_fp.part(
            "train_objects",
            inputs.train_stream.fingerprint().as_bytes(),
        );
    } else {
        data_fp
            .part("train", &bytes_of(&inputs.train.x))
            .part("y", &bytes_of(&inputs.train.y));
    }
    ModelCard {
        endpoint: t.endpoint,
        targets: inputs.target_columns.clone(),
        survival: test.survival.clone(),
        name: model.to_string(),
        input_dim: spec.width(),
        config_fingerprint: config_fingerprint(&arch, t),
        architecture: arch,
        feature_spec: spec,
        metrics: serde_json::to_value(&test.metrics).unwrap_or_default(),
        data_fingerprint: data_fp.finish(),
        code_version: code_version.to_string(),
        seed,
    }
}

/// Of the `models.<name>` and `training` config sections.
pub(crate) fn config_fingerprint(arch: &ModelConfig, t: &TrainingConfig) -> String {
    let mut fp = Fingerprinter::new();
    fp.part(
        "model",
        serde_json::to_string(arch).unwrap_or_default().as_bytes(),
    )
    .part(
        "training",
        serde_json::to_string(t).unwrap_or_default().as_bytes(),
    );
    fp.finish()
}

/// Writes the weights, the card and the test predictions; returns the weights (for tracking).
pub(crate) async fn write(
    lake: &Storage,
    model: &str,
    net: &Network,
    card: &ModelCard,
    test: &Split,
    scores: &TestScores,
) -> Result<Vec<u8>> {
    let dir = lake::candidate_dir(model);
    let weights = net.to_safetensors().map_err(Error::Internal)?;
    lake.put(&format!("{dir}model.safetensors"), weights.clone())
        .await?;
    lake.put_json(&format!("{dir}model.json"), card).await?;
    write_test_predictions(
        lake,
        &format!("{dir}{}", contracts::TEST_PREDICTIONS),
        card,
        test,
        &scores.p,
    )
    .await?;
    Ok(weights)
}

/// The name of a prediction column: what the endpoint's head gives.
pub(crate) fn prediction_column(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Binary => "probability",
        Endpoint::Continuous => "prediction",
        Endpoint::TimeToEvent => "risk_score",
    }
}

/// The test split's ids, targets (under their columns' names) and predictions.
pub(crate) async fn write_test_predictions(
    lake: &Storage,
    rel: &str,
    card: &ModelCard,
    test: &Split,
    p: &[f32],
) -> Result<()> {
    use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let width = card.targets.len().max(1);
    let mut fields = vec![Field::new("subject_id", DataType::Utf8, true)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(test.ids.clone()))];
    for (k, name) in card.targets.iter().enumerate() {
        fields.push(Field::new(name, DataType::Float32, false));
        let values: Vec<f32> = test.y.iter().skip(k).step_by(width).copied().collect();
        columns.push(Arc::new(Float32Array::from(values)));
    }
    fields.push(Field::new(
        prediction_column(card.endpoint),
        DataType::Float32,
        false,
    ));
    columns.push(Arc::new(Float32Array::from(p.to_vec())));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(Error::bug)?;
    trialflow_core::table::write_parquet(lake, rel, schema, &[batch]).await
}

pub(crate) fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
