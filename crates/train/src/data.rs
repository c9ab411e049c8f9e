//! The splits a training run reads: the train split in memory or, above `training.max_in_memory_mib`, streamed
//! from the lake; the validation split alike; the test split always in memory. Checked before any fitting, and
//! fitted by the path their size and the device call for.

use candle_core::Device;
use trialflow_core::config::{Config, ModelConfig};
use trialflow_core::features::FeatureSpec;
use trialflow_core::{Error, Result, Storage, lake};

use crate::checks::{check_both_classes, check_finite};
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
}

impl Inputs {
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
    let train_stream = stream::StreamedSplit::open(lake, spec, "train").await?;
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
    let (train, val, val_stream) = if streamed {
        check_streamed_classes(&train_stream, &at).await?;
        let val_stream = stream::StreamedSplit::open(lake, spec, "val").await?;
        (empty(), empty(), Some(val_stream))
    } else {
        (
            load_split(lake, spec, "train", &[]).await?,
            load_split(lake, spec, "val", &[]).await?,
            None,
        )
    };
    let test = load_split(lake, spec, "test", &t.slices).await?;
    let inputs = Inputs {
        train_stream,
        val_stream,
        train,
        val,
        test,
    };
    check(&inputs, spec, &at)?;
    Ok(inputs)
}

/// A streamed train split, counted without holding it: not empty, both outcome classes.
async fn check_streamed_classes(train: &stream::StreamedSplit, at: &str) -> Result<()> {
    if train.rows == 0 {
        return Err(Error::bad_data(at, "the train split is empty"));
    }
    let (rows, positives) = train.count_outcomes().await?;
    if positives == 0 || positives == rows {
        return Err(Error::bad_data(
            at,
            format!(
                "the train split has one outcome class only ({rows} rows, {positives} positive); expected both"
            ),
        ));
    }
    Ok(())
}

/// The splits in memory: the train and test splits not empty with both classes, every input finite.
fn check(inputs: &Inputs, spec: &FeatureSpec, at: &str) -> Result<()> {
    let mut checked = vec![("test", &inputs.test)];
    if !inputs.streamed() {
        checked.insert(0, ("train", &inputs.train));
    }
    for (name, split) in checked {
        if split.rows == 0 {
            return Err(Error::bad_data(at, format!("the {name} split is empty")));
        }
        check_both_classes(split, name, at)?;
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
    let trained = tokio::task::block_in_place(|| match &inputs.val_stream {
        Some(val_stream) => fit_streamed(arch, t, &inputs.train_stream, val_stream, spec, seed)
            .map(|(fitted, stats)| (fitted, Some(stats))),
        None => fit(
            arch,
            t,
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
