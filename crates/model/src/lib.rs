//! The contract shared by training and serving: the feature transform of raw records, the network
//! architectures and their forward pass, and the model artifact (safetensors weights + `model.json`).
//!
//! Also the evaluation of a model's predictions by endpoint (`metrics`, `continuous`, `survival`: the Breslow
//! baseline hazard that turns a risk score into survival probabilities, and scikit-survival's metrics), the
//! clustering of baseline phenotypes as a model that assigns rows (`clustering`), and a model's scoring on a
//! split of the lake (`score`),
//! which need no tensor library: the candle network (`network`) is behind the default feature `candle`, so the
//! gate's crate scores models without depending on candle.
//!
//! Invariants: no DataFusion, no HTTP. Training and serving call the same [`encode`], so a record is
//! transformed identically in both.

pub mod clustering;
pub mod continuous;
pub mod dense;
pub mod encode;
pub mod metrics;
#[cfg(feature = "candle")]
pub mod network;
pub mod score;
pub mod split;
pub mod survival;

pub use dense::DenseCpu;
pub use encode::{
    Encoder, FieldError, InputField, RawValue, encode_batch, encode_batches, input_fields,
};
#[cfg(feature = "candle")]
pub use network::{Network, load_safetensors};

use serde::{Deserialize, Serialize};
use trialflow_core::config::ModelConfig;
use trialflow_core::features::FeatureSpec;

/// `model.json`: everything needed to use a set of weights and to know where they came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub architecture: ModelConfig,
    pub input_dim: usize,
    pub feature_spec: FeatureSpec,
    /// Test-split metrics at training time.
    pub metrics: serde_json::Value,
    /// Content fingerprint of the training data (features + spec).
    pub data_fingerprint: String,
    /// Fingerprint of the `models.<name>` and `training` config sections.
    pub config_fingerprint: String,
    pub code_version: String,
    pub seed: u64,
    /// What the head predicts; absent in cards from before endpoints: binary.
    #[serde(default)]
    pub endpoint: trialflow_core::config::Endpoint,
    /// The processed table's columns the model was trained to predict (`outcome`; a value; time and event).
    #[serde(default = "outcome_target")]
    pub targets: Vec<String>,
    /// A time-to-event model's Breslow baseline cumulative hazard (train split) and the times at which it
    /// reports survival unless a request names others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survival: Option<SurvivalHead>,
}

fn outcome_target() -> Vec<String> {
    vec!["outcome".into()]
}

/// What turns a risk score into survival probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurvivalHead {
    pub baseline: survival::BaselineHazard,
    /// Default times of the served survival probabilities (`training.horizons`).
    pub times: Vec<f64>,
}
