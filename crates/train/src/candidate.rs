//! What a training run leaves under `candidates/<model>/`: the test split scored (metrics with intervals,
//! slices, permutation importance), the model card with its data and config fingerprints, the weights and the
//! test predictions serving must reproduce.

use candle_core::Device;
use trialflow_core::config::{Config, ModelConfig, TrainingConfig};
use trialflow_core::contracts::{self, Importance, Metrics, Slice};
use trialflow_core::features::FeatureSpec;
use trialflow_core::fingerprint::Fingerprinter;
use trialflow_core::{Error, Result, Storage, lake};
use trialflow_model::{ModelCard, Network};

use crate::data::Inputs;
use crate::{Split, device::ce, evaluation, importance, metrics};

/// The test split as the trained network scores it.
pub(crate) struct TestScores {
    pub(crate) p: Vec<f32>,
    pub(crate) metrics: Metrics,
    pub(crate) slices: Vec<Slice>,
    pub(crate) importance: Vec<Importance>,
}

pub(crate) fn score_test(
    cfg: &Config,
    net: &Network,
    test: &Split,
    spec: &FeatureSpec,
    seed: u64,
    dev: &Device,
) -> Result<TestScores> {
    let t = &cfg.training;
    let p = net.predict_proba(&test.x, test.rows, dev).map_err(ce)?;
    let how = evaluation(t);
    let importance = if t.importance_repeats > 0 {
        let dense = trialflow_model::DenseCpu::from_network(net).map_err(ce)?;
        importance::permutation_importance(&dense, spec, test, t.importance_repeats, seed)
    } else {
        Vec::new()
    };
    Ok(TestScores {
        metrics: metrics::evaluate(&test.y, &p, &how),
        slices: metrics::slices(&test.slices, &test.y, &p, &how),
        importance,
        p,
    })
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
        test,
        &scores.p,
    )
    .await?;
    Ok(weights)
}

pub(crate) async fn write_test_predictions(
    lake: &Storage,
    rel: &str,
    test: &Split,
    p: &[f32],
) -> Result<()> {
    use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("subject_id", DataType::Utf8, true),
        Field::new("outcome", DataType::Float32, false),
        Field::new("probability", DataType::Float32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(test.ids.clone())) as ArrayRef,
            Arc::new(Float32Array::from(test.y.clone())),
            Arc::new(Float32Array::from(p.to_vec())),
        ],
    )
    .map_err(Error::bug)?;
    trialflow_core::table::write_parquet(lake, rel, schema, &[batch]).await
}

pub(crate) fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
