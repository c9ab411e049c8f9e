//! Training and evaluation with candle: the training loop for the endpoint's objective (AdamW; binary
//! cross-entropy on logits, squared error or Huber on a standardized target, the Cox partial likelihood over
//! batch risk sets; early stopping with best-epoch restore, seeded), test-split metrics, candidate artifacts
//! under `candidates/<model>/`, the leaderboard of all candidates (`candidates/evaluation.json`), and the
//! clusters of baseline phenotypes (`phenotypes/`).
//!
//! One job a module: `data` reads and checks the splits, `device` picks where to train, `autograd`,
//! `logistic`, `baselines`, `fused_fit` and `early_stopping` fit, `importance` and `candidate` make the
//! candidate, `mlflow` logs it, `leaderboard` compares candidates, `phenotypes` clusters; [`train`] reads as
//! those steps.
//!
//! Invariants: reads the processed Parquet with arrow/parquet (no DataFusion); transforms records only through
//! `trialflow_model::encode`, the code serving uses.

mod autograd;
mod baselines;
mod candidate;
mod checks;
mod data;
mod device;
mod early_stopping;
pub mod fused;
mod fused_fit;
mod importance;
mod leaderboard;
mod logistic;
mod mlflow;
pub mod phenotypes;
pub mod stream;
mod task;
pub mod tracking;

use trialflow_core::config::{Config, ModelConfig};
use trialflow_core::contracts;
use trialflow_core::features::FeatureSpec;
use trialflow_core::fingerprint::sha256_hex;
use trialflow_core::{Error, Result, Storage};

pub use autograd::{FitError, Fitted, fit};
pub use fused_fit::fit_streamed;
pub use leaderboard::{evaluate, evaluation};
pub use task::TASKS;
pub use trialflow_core::contracts::{
    Epoch, EvaluationReport, Importance, StreamStats, TrainReport,
};
pub use trialflow_model::metrics;
pub use trialflow_model::split::{Arrays, SLICE_COLUMNS, Split, load_split};

/// Trains `model` from `config.models`, writes `candidates/<model>/{model.safetensors, model.json,
/// metrics.json}`. Deterministic for a seed on the CPU.
pub async fn train(
    cfg: &Config,
    lake: &Storage,
    model: &str,
    code_version: &str,
) -> Result<TrainReport> {
    let arch = architecture(cfg, model)?;
    let started = std::time::SystemTime::now();
    let spec: FeatureSpec = contracts::load(lake).await?;
    let dev = device::device(cfg)?;
    let inputs = data::load(cfg, lake, &spec, &dev).await?;
    let seed = model_seed(cfg.training.seed, model);
    let (fitted, stream_stats) = data::fit_inputs(cfg, model, &arch, &inputs, &spec, seed, &dev)?;
    let test = candidate::score_test(cfg, &fitted.network, &inputs, &spec, seed)?;
    let card = candidate::card(
        model,
        &cfg.training,
        arch,
        spec,
        &inputs,
        &test,
        code_version,
        seed,
    );
    let weights =
        candidate::write(lake, model, &fitted.network, &card, &inputs.test, &test).await?;
    let mut report = TrainReport {
        model: model.to_string(),
        epochs_run: fitted.epochs_run,
        best_epoch: fitted.best_epoch,
        best_val_loss: fitted.best_val_loss,
        train_rows: inputs.train_stream.rows,
        val_rows: inputs.val_rows(),
        test_rows: inputs.test.rows,
        stream: stream_stats,
        metrics: test.metrics,
        slices: test.slices,
        importance: test.importance,
        history: fitted.history,
        tracking: None,
    };
    report.tracking = mlflow::track(cfg, model, &report, &card, weights, started).await?;
    lake.put_json(&contracts::candidate_metrics(model), &report)
        .await?;
    Ok(report)
}

fn architecture(cfg: &Config, model: &str) -> Result<ModelConfig> {
    cfg.models
        .get(model)
        .cloned()
        .ok_or_else(|| Error::config(&cfg.source_file, format!("models.{model}"), "no such model"))
}

/// Each model's own seed: the training seed mixed with the model's name, so that models differ.
fn model_seed(seed: u64, model: &str) -> u64 {
    seed ^ u64::from_le_bytes(
        sha256_hex(model.as_bytes()).as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    )
}

/// One split's encoded inputs and binary outcomes, as training sees them: `(x, y, rows)`.
pub async fn load_arrays(
    lake: &Storage,
    spec: &FeatureSpec,
    split: &str,
) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    let s = load_split(lake, spec, split, &[], &["outcome".to_string()]).await?;
    Ok((s.x, s.y, s.rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn weighted_bce_matches_pytorchs_definition() {
        let softplus = |v: f64| (1.0 + v.exp()).ln();
        let (z, y) = ([0.5f32, -1.0, 2.0, -30.0], [1.0f32, 0.0, 1.0, 1.0]);
        for w in [1.0, 3.0] {
            // PyTorch: −[w·y·log σ(z) + (1 − y)·log(1 − σ(z))]
            let expected: f64 = z
                .iter()
                .zip(&y)
                .map(|(&z, &y)| {
                    let (z, y) = (f64::from(z), f64::from(y));
                    w * y * softplus(-z) + (1.0 - y) * softplus(z)
                })
                .sum::<f64>()
                / z.len() as f64;
            let zt = Tensor::from_slice(&z, 4, &Device::Cpu).unwrap();
            let yt = Tensor::from_slice(&y, 4, &Device::Cpu).unwrap();
            let got = autograd::bce_with_logits(&zt, &yt, w)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (f64::from(got) - expected).abs() < 1e-5,
                "w={w}: {got} vs {expected}"
            );
        }
    }

    /// The claim of docs/training.md: the fused CPU step gives bit-identical weights whatever the thread count
    /// (fixed chunks summed in order, counter-seeded dropout).
    #[test]
    fn weights_are_bit_identical_whatever_the_thread_count() {
        let (dim, rows) = (6, 700);
        let mut rng = StdRng::seed_from_u64(5);
        let x: Vec<f32> = (0..rows * dim)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let y: Vec<f32> = (0..rows)
            .map(|r| {
                f32::from(x[r * dim] + 0.5 * x[r * dim + 1] + rng.random_range(-1.0..1.0) > 0.0)
            })
            .collect();
        let (tx, ty) = (&x[..500 * dim], &y[..500]);
        let (vx, vy) = (&x[500 * dim..], &y[500..]);
        let arch = trialflow_core::config::ModelConfig {
            hidden: vec![16, 8],
            dropout: vec![0.3, 0.0],
            activation: trialflow_core::config::Activation::Relu,
        };
        let t = training(4, 64);
        let weights_with = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let f = fit(
                    &arch,
                    &t,
                    fused::Objective::Bce { pos_weight: 1.0 },
                    Arrays {
                        x: tx,
                        y: ty,
                        rows: 500,
                    },
                    Arrays {
                        x: vx,
                        y: vy,
                        rows: 200,
                    },
                    dim,
                    9,
                    &Device::Cpu,
                )
                .unwrap();
                f.network.to_safetensors().unwrap()
            })
        };
        let one = weights_with(1);
        assert_eq!(one, weights_with(2), "1 vs 2 threads");
        assert_eq!(one, weights_with(3), "1 vs 3 threads");
    }

    /// `restore_best: false` keeps the last epoch's weights (Keras without `restore_best_weights`); true keeps
    /// the best validation epoch's, which are the weights a run stopped at that epoch ends with.
    #[test]
    fn restore_best_keeps_the_best_epoch_and_off_keeps_the_last() {
        let (dim, rows) = (4, 400);
        let mut rng = StdRng::seed_from_u64(11);
        let x: Vec<f32> = (0..rows * dim)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let y: Vec<f32> = (0..rows)
            .map(|r| f32::from(x[r * dim] + rng.random_range(-2.0..2.0) > 0.0))
            .collect();
        let arch = trialflow_core::config::ModelConfig {
            hidden: vec![32],
            dropout: vec![0.0],
            activation: trialflow_core::config::Activation::Relu,
        };
        let run = |epochs: usize, restore_best: bool| {
            let mut t = training(epochs, 16);
            t.learning_rate = 0.05; // a large step: the validation loss rises after its best epoch
            t.restore_best = restore_best;
            let f = fit(
                &arch,
                &t,
                fused::Objective::Bce { pos_weight: 1.0 },
                Arrays {
                    x: &x[..300 * dim],
                    y: &y[..300],
                    rows: 300,
                },
                Arrays {
                    x: &x[300 * dim..],
                    y: &y[300..],
                    rows: 100,
                },
                dim,
                3,
                &Device::Cpu,
            )
            .unwrap();
            (f.best_epoch, f.network.to_safetensors().unwrap())
        };
        let (best, restored) = run(12, true);
        assert!(
            best < 12,
            "the validation loss must peak before the last epoch to tell the two apart"
        );
        let (_, last) = run(12, false);
        assert_ne!(restored, last);
        assert_eq!(restored, run(best, false).1);
    }

    /// A training section with the given epochs and batch, every optional key at its default.
    fn training(epochs: usize, batch_size: usize) -> trialflow_core::config::TrainingConfig {
        serde_json::from_value(serde_json::json!({
            "seed": 1, "epochs": epochs, "batch_size": batch_size, "learning_rate": 0.01, "patience": epochs,
        }))
        .unwrap()
    }
}
