//! The CPU training loop around the fused step of [`crate::fused`]: seeded shuffles, AdamW, early stopping and
//! best-epoch restore, over splits in memory or streamed from the lake by row group.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use trialflow_core::features::FeatureSpec;
use trialflow_model::Network;

use crate::autograd::{FitError, Fitted};
use crate::early_stopping::{EarlyStopping, Verdict};
use crate::{Arrays, Epoch, StreamStats, fused, metrics, stream};

/// Where the fused loop's rows come from: visits `(x, y, row order)` blocks for an epoch's training (shuffled
/// by the seeded generator) and `(x, y)` blocks for validation.
/// Visits one block of training rows: features, outcomes, the row order to batch them in.
pub(crate) type TrainVisit<'v> =
    dyn FnMut(&[f32], &[f32], &[u32]) -> std::result::Result<(), FitError> + 'v;

/// Visits one block of validation rows: features, outcomes.
pub(crate) type BlockVisit<'v> =
    dyn FnMut(&[f32], &[f32]) -> std::result::Result<(), FitError> + 'v;

pub(crate) trait Rows {
    fn rows(&self) -> usize;
    fn train_epoch(
        &mut self,
        rng: &mut StdRng,
        visit: &mut TrainVisit<'_>,
    ) -> std::result::Result<(), FitError>;
    fn validation(&self, visit: &mut BlockVisit<'_>) -> std::result::Result<(), FitError>;
}

/// Splits in memory: one block, the whole split, shuffled as a whole.
pub(crate) struct InMemory<'a> {
    pub(crate) train: Arrays<'a>,
    pub(crate) val: Arrays<'a>,
    pub(crate) order: Vec<u32>,
}

impl Rows for InMemory<'_> {
    fn rows(&self) -> usize {
        self.train.rows
    }

    fn train_epoch(
        &mut self,
        rng: &mut StdRng,
        visit: &mut TrainVisit<'_>,
    ) -> std::result::Result<(), FitError> {
        self.order.shuffle(rng);
        visit(self.train.x, self.train.y, &self.order)
    }

    fn validation(&self, visit: &mut BlockVisit<'_>) -> std::result::Result<(), FitError> {
        visit(self.val.x, self.val.y)
    }
}

/// Splits streamed from the lake (see [`stream`]).
pub(crate) struct Streamed<'a> {
    /// Target values per row.
    pub(crate) width: usize,
    pub(crate) train: &'a stream::StreamedSplit,
    pub(crate) val: &'a stream::StreamedSplit,
    pub(crate) spec: &'a FeatureSpec,
    pub(crate) block_rows: usize,
    pub(crate) stats: StreamStats,
}

impl Rows for Streamed<'_> {
    fn rows(&self) -> usize {
        self.train.rows
    }

    fn train_epoch(
        &mut self,
        rng: &mut StdRng,
        visit: &mut TrainVisit<'_>,
    ) -> std::result::Result<(), FitError> {
        let mut units = self.train.units();
        units.shuffle(rng);
        let mut order = Vec::new();
        let (mut blocks, mut largest) = (0, 0);
        self.train
            .for_each_block(self.spec, &units, self.block_rows, &mut |x, y| {
                blocks += 1;
                largest = largest.max(y.len() / self.width);
                order.clear();
                order.extend(0..(y.len() / self.width) as u32);
                order.shuffle(rng);
                visit(x, y, &order)
            })?;
        self.stats = StreamStats {
            row_groups: units.len(),
            blocks_per_epoch: blocks,
            largest_block_rows: largest.max(self.stats.largest_block_rows),
        };
        Ok(())
    }

    fn validation(&self, visit: &mut BlockVisit<'_>) -> std::result::Result<(), FitError> {
        let split = if self.val.rows > 0 {
            self.val
        } else {
            self.train
        };
        split.for_each_block(self.spec, &split.units(), self.block_rows, visit)
    }
}

/// The CPU path of [`fit`]: the same loop (seeded shuffle, AdamW, early stopping, best-epoch restore) around
/// the fused step of [`fused`], over rows in memory or streamed.
pub(crate) fn fit_fused(
    net: Network,
    t: &trialflow_core::config::TrainingConfig,
    objective: fused::Objective,
    data: &mut dyn Rows,
    has_val: bool,
    seed: u64,
) -> std::result::Result<Fitted, FitError> {
    let binary = matches!(objective, fused::Objective::Bce { .. });
    let monitor_auc = t.monitor == trialflow_core::config::Monitor::ValAuc && has_val && binary;
    let dim = net.layers[0].0.as_tensor().dims2()?.1;
    let layers = net
        .layers
        .iter()
        .map(|(w, b)| {
            Ok((
                w.as_tensor().flatten_all()?.to_vec1::<f32>()?,
                b.as_tensor().to_vec1::<f32>()?,
            ))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut mlp = fused::Mlp::from_layers(&layers, dim, net.config.activation, &net.config.dropout);
    let mut opt = fused::AdamW::new(mlp.params.len(), t.learning_rate, t.weight_decay);
    let mut trainer = fused::Trainer::new(&mlp, seed.wrapping_add(1));
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let mut stopping = EarlyStopping {
        best: (f64::INFINITY, 0, f64::INFINITY),
        patience: t.patience,
        monitor_auc,
    };
    let mut best_params = mlp.params.clone();
    let mut epochs_run = 0;
    let mut history = Vec::new();
    let progress = trialflow_core::progress::Progress::new(
        format!("train hidden {:?}", net.config.hidden),
        t.epochs as u64,
        trialflow_core::progress::Unit::Epochs,
    );
    for epoch in 1..=t.epochs {
        epochs_run = epoch;
        progress.set(epoch as u64 - 1);
        let mut loss_sum = 0.0;
        let mut batch_no = 0;
        data.train_epoch(&mut rng, &mut |x, y, order| {
            for chunk in order.chunks(t.batch_size) {
                batch_no += 1;
                let loss = trainer.step(&mut mlp, &mut opt, x, y, chunk, objective);
                if !loss.is_finite() {
                    return Err(FitError::Diverged(epoch, batch_no));
                }
                loss_sum += loss * chunk.len() as f64;
            }
            Ok(())
        })?;
        let (mut val_logits, mut val_y) = (Vec::new(), Vec::new());
        data.validation(&mut |x, y| {
            val_logits.extend(mlp.logits(x));
            val_y.extend_from_slice(y);
            Ok(())
        })?;
        let val_loss = objective.loss(&val_logits, &val_y);
        if !val_loss.is_finite() || mlp.params.iter().any(|p| !p.is_finite()) {
            return Err(FitError::Diverged(epoch, 0));
        }
        let val_auc = if has_val && binary {
            Some(metrics::roc_auc(&val_y, &val_logits)).filter(|a| a.is_finite())
        } else {
            None
        };
        let e = Epoch {
            epoch,
            train_loss: loss_sum / data.rows().max(1) as f64,
            val_loss,
            val_auc,
        };
        let verdict = stopping.observe(&e);
        history.push(e);
        match verdict {
            Verdict::Improved if t.restore_best => best_params.clone_from(&mlp.params),
            Verdict::Improved | Verdict::Continue => {}
            Verdict::Stop => break,
        }
    }
    if t.restore_best {
        mlp.params = best_params;
    }
    for ((w, b), (wv, bv)) in net.layers.iter().zip(mlp.layers()) {
        w.set(&Tensor::from_vec(wv, w.as_tensor().shape(), &Device::Cpu)?)?;
        b.set(&Tensor::from_vec(bv, b.as_tensor().shape(), &Device::Cpu)?)?;
    }
    Ok(Fitted {
        network: net,
        epochs_run,
        best_epoch: stopping.best.1,
        best_val_loss: stopping.best.2,
        history,
    })
}

/// [`fit`] for splits streamed from the lake (CPU only), by the fused loop. The logistic baseline is then fitted
/// by AdamW like the networks: its Newton steps would need every row at once.
pub fn fit_streamed(
    arch: &trialflow_core::config::ModelConfig,
    t: &trialflow_core::config::TrainingConfig,
    objective: fused::Objective,
    train: &stream::StreamedSplit,
    val: &stream::StreamedSplit,
    spec: &FeatureSpec,
    seed: u64,
) -> std::result::Result<(Fitted, StreamStats), FitError> {
    let net = Network::init(arch, spec.width(), seed, &Device::Cpu)?;
    let mut data = Streamed {
        width: objective.width(),
        train,
        val,
        spec,
        block_rows: t.stream_block_rows,
        stats: StreamStats::default(),
    };
    let fitted = fit_fused(net, t, objective, &mut data, val.rows > 0, seed)?;
    crate::autograd::rescale_output(&fitted.network, objective)?;
    Ok((fitted, data.stats))
}
