//! The splits a training run reads: the train split in memory or, above `training.max_in_memory_mib`, streamed
//! from the lake; the validation split alike; the test split always in memory. Checked before any fitting, and
//! fitted by the path their size and the device call for.

use candle_core::Device;
use trialflow_core::config::{Config, CoxTies, Endpoint, ModelConfig, RegressionLoss};
use trialflow_core::features::FeatureSpec;
use trialflow_core::{Error, Result, Storage, lake};

use crate::checks::{check_finite, check_targets};
use crate::fused::Objective;
use crate::{FitError, Fitted, Split, StreamStats, device, fit, fit_streamed, load_split, stream};

/// What a training run fits on and is scored on.
pub(crate) struct Inputs {
    /// Opened always: its footers say how large the train split is.
    pub(crate) train_stream: stream::StreamedSplit,
    /// Set when the train and validation splits are streamed (then `train` and `val` are empty).
    pub(crate) val_stream: Option<stream::StreamedSplit>,
    pub(crate) train: Split,
    pub(crate) val: Split,
    pub(crate) test: Split,
    /// The train split's targets when streamed (the in-memory split holds its own): the checks and the
    /// objective's scale read them.
    pub(crate) streamed_targets: Vec<f32>,
    /// The processed table's columns the targets come from.
    pub(crate) target_columns: Vec<String>,
}

impl Inputs {
    /// The train split's targets, wherever they are held.
    pub(crate) fn train_targets(&self) -> &[f32] {
        if self.streamed() {
            &self.streamed_targets
        } else {
            &self.train.y
        }
    }

    pub(crate) fn streamed(&self) -> bool {
        self.val_stream.is_some()
    }

    pub(crate) fn val_rows(&self) -> usize {
        self.val_stream.as_ref().map_or(self.val.rows, |v| v.rows)
    }
}

fn empty() -> Split {
    Split {
        x: Vec::new(),
        y: Vec::new(),
        rows: 0,
        slices: Vec::new(),
        ids: Vec::new(),
    }
}

/// Opens the splits, streamed or in memory by their encoded size, and checks them.
pub(crate) async fn load(
    cfg: &Config,
    lake: &Storage,
    spec: &FeatureSpec,
    dev: &Device,
) -> Result<Inputs> {
    let t = &cfg.training;
    let at = lake.display(lake::FEATURES);
    // the footers say how large the train split is; above the limit it is streamed, never loaded whole
    let targets = cfg.target_columns();
    let train_stream = stream::StreamedSplit::open(lake, spec, "train", &targets).await?;
    let encoded = train_stream.rows as u64 * spec.width() as u64 * 4;
    let streamed = encoded > t.max_in_memory_mib.saturating_mul(1 << 20);
    if streamed && !dev.is_cpu() {
        return Err(Error::config(
            &cfg.source_file,
            "training.device",
            format!(
                "the train split ({} MiB encoded) is above training.max_in_memory_mib ({}): it is \
                 streamed, and streamed training runs on the CPU only",
                encoded >> 20,
                t.max_in_memory_mib
            ),
        ));
    }
    let (train, val, val_stream, streamed_targets) = if streamed {
        let val_stream = stream::StreamedSplit::open(lake, spec, "val", &targets).await?;
        let train_targets = train_stream.read_targets().await?;
        (empty(), empty(), Some(val_stream), train_targets)
    } else {
        (
            load_split(lake, spec, "train", &[], &targets).await?,
            load_split(lake, spec, "val", &[], &targets).await?,
            None,
            Vec::new(),
        )
    };
    let test = load_split(lake, spec, "test", &t.slices, &targets).await?;
    let inputs = Inputs {
        train_stream,
        val_stream,
        train,
        val,
        test,
        streamed_targets,
        target_columns: targets,
    };
    check(cfg, &inputs, spec, &at)?;
    Ok(inputs)
}

/// The train and test splits not empty with targets a model can learn from and be scored on, every input
/// finite.
fn check(cfg: &Config, inputs: &Inputs, spec: &FeatureSpec, at: &str) -> Result<()> {
    let endpoint = cfg.training.endpoint;
    for (name, targets) in [
        ("train", inputs.train_targets()),
        ("test", &inputs.test.y[..]),
    ] {
        if targets.is_empty() {
            return Err(Error::bad_data(at, format!("the {name} split is empty")));
        }
        check_targets(endpoint, targets, name, at)?;
    }
    for (name, split) in [
        ("train", &inputs.train),
        ("val", &inputs.val),
        ("test", &inputs.test),
    ] {
        check_finite(split, name, spec, at)?;
    }
    Ok(())
}

/// Fits `arch` on the inputs (streamed or in memory); a diverged loss is a config error naming the learning
/// rate, with nothing saved.
pub(crate) fn fit_inputs(
    cfg: &Config,
    model: &str,
    arch: &ModelConfig,
    inputs: &Inputs,
    spec: &FeatureSpec,
    seed: u64,
    dev: &Device,
) -> Result<(Fitted, Option<StreamStats>)> {
    let t = &cfg.training;
    let objective = objective(cfg, inputs.train_targets());
    let trained = tokio::task::block_in_place(|| match &inputs.val_stream {
        Some(val_stream) => fit_streamed(
            arch,
            t,
            objective,
            &inputs.train_stream,
            val_stream,
            spec,
            seed,
        )
        .map(|(fitted, stats)| (fitted, Some(stats))),
        None => fit(
            arch,
            t,
            objective,
            inputs.train.arrays(),
            inputs.val.arrays(),
            spec.width(),
            seed,
            dev,
        )
        .map(|f| (f, None)),
    });
    match trained {
        Ok(f) => Ok(f),
        Err(FitError::Candle(e)) => Err(device::ce(e)),
        Err(FitError::Data(e)) => Err(e),
        Err(FitError::Diverged(epoch, batch)) => {
            let when = if batch == 0 {
                format!("on the validation split after epoch {epoch}")
            } else {
                format!("at epoch {epoch}, batch {batch}")
            };
            Err(Error::config(
                &cfg.source_file,
                "training.learning_rate",
                format!(
                    "training of `{model}` diverged: the loss became NaN or infinite {when}; nothing was \
                     saved. Lower the learning rate (or check the features' scale)"
                ),
            ))
        }
    }
}

/// The endpoint's loss; a continuous one on the train split's standardized target (its sd is not 0: the
/// checks refuse a constant target).
pub(crate) fn objective(cfg: &Config, train_targets: &[f32]) -> Objective {
    let t = &cfg.training;
    match t.endpoint {
        Endpoint::Binary => Objective::Bce {
            pos_weight: t.pos_weight.unwrap_or(1.0) as f32,
        },
        Endpoint::Continuous => {
            let n = train_targets.len().max(1) as f64;
            let mean = train_targets.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
            let var = train_targets
                .iter()
                .map(|v| (f64::from(*v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let (mean, sd) = (mean as f32, var.sqrt().max(f64::MIN_POSITIVE) as f32);
            match t.loss {
                RegressionLoss::Mse => Objective::Squared { mean, sd },
                RegressionLoss::Huber => Objective::Huber {
                    mean,
                    sd,
                    delta: t.huber_delta as f32,
                },
            }
        }
        Endpoint::TimeToEvent => Objective::Cox {
            efron: t.ties == CoxTies::Efron,
        },
    }
}
