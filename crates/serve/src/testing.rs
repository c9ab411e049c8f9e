//! What the unit tests of this crate share: a seeded generator, random edits of a request body, and a small
//! model to read bodies for.
#![cfg(test)]

use std::sync::Arc;

use candle_core::Device;
use trialflow_core::config::{Activation, Endpoint, ModelConfig};
use trialflow_core::features::{CategoricalFeature, FeatureSpec, NumericFeature, OnInvalid};
use trialflow_model::{DenseCpu, Encoder, ModelCard, Network};

use crate::repository::LoadedVersion;

/// xorshift64: the same sequence from the same seed, so that a test's random cases are the same every run.
pub(crate) struct Random(u64);

impl Random {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn bits(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.bits() % n as u64) as usize
    }

    /// A copy of `body` with one to three characters replaced, removed or inserted, the new ones from
    /// `alphabet`.
    pub(crate) fn edit(&mut self, body: &[u8], alphabet: &[u8]) -> Vec<u8> {
        let mut edited = body.to_vec();
        for _ in 0..=self.below(3) {
            let at = self.below(edited.len());
            match self.below(3) {
                0 => edited[at] = alphabet[self.below(alphabet.len())],
                1 => {
                    edited.remove(at);
                }
                _ => edited.insert(at, alphabet[self.below(alphabet.len())]),
            }
        }
        edited
    }
}

fn numeric(name: &str, derived: Option<&str>, on_invalid: OnInvalid) -> NumericFeature {
    NumericFeature {
        name: name.into(),
        impute: 50.0,
        mean: 50.0,
        std: 10.0,
        min: Some(1.0),
        max: Some(200.0),
        on_invalid,
        derived: derived.map(Into::into),
    }
}

/// [`model_for`] a binary endpoint.
pub(crate) fn model() -> LoadedVersion {
    model_for(Endpoint::Binary)
}

/// A model of three numeric features (one derived) and one categorical, for `endpoint`.
pub(crate) fn model_for(endpoint: Endpoint) -> LoadedVersion {
    let numeric = vec![
        numeric("age", None, OnInvalid::Reject),
        numeric("weight_kg", None, OnInvalid::Impute),
        numeric("bmi", Some("weight_kg / 3.0"), OnInvalid::Impute),
    ];
    let categorical = vec![CategoricalFeature {
        name: "arm".into(),
        levels: vec!["placebo".into(), "treatment".into()],
        canonical: [
            ("placebo".to_string(), "placebo".to_string()),
            ("pbo".to_string(), "placebo".to_string()),
            ("treatment".to_string(), "treatment".to_string()),
        ]
        .into(),
        unseen: Default::default(),
    }];
    let columns = FeatureSpec::build_columns(&numeric, &categorical);
    let spec = FeatureSpec {
        numeric,
        categorical,
        columns,
        train_rows: 100,
        arm_field: "arm".into(),
    };
    let architecture = ModelConfig {
        hidden: vec![4],
        dropout: vec![],
        activation: Activation::Relu,
    };
    let net = Network::init(&architecture, spec.width(), 7, &Device::Cpu).unwrap();
    LoadedVersion {
        model: "m".into(),
        model_key: Arc::from("m"),
        version: 1,
        scorer: DenseCpu::from_network(&net).unwrap(),
        encoder: Encoder::new(&spec).unwrap(),
        card: ModelCard {
            name: "m".into(),
            architecture,
            input_dim: spec.width(),
            feature_spec: spec,
            metrics: serde_json::json!({}),
            data_fingerprint: "t".into(),
            config_fingerprint: "t".into(),
            code_version: "t".into(),
            seed: 7,
            endpoint,
            targets: vec!["outcome".into()],
            survival: None,
        },
        phenotypes: None,
    }
}
