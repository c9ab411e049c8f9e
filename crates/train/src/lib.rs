//! Training and evaluation with candle: the training loop (Adam, binary cross-entropy on logits, early stopping
//! with best-epoch restore, seeded), test-split metrics, candidate artifacts under `candidates/<model>/`, and
//! the leaderboard of all candidates (`candidates/evaluation.json`).
//!
//! Invariants: reads the processed Parquet with arrow/parquet (no DataFusion); transforms records only through
//! `trialflow_model::encode`, the code serving uses.

pub mod fused;
pub mod stream;
mod task;
pub mod tracking;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use trialflow_core::config::{Config, DeviceChoice};
use trialflow_core::contracts;
use trialflow_core::features::FeatureSpec;
use trialflow_core::fingerprint::{Fingerprinter, sha256_hex};
use trialflow_core::lake;
use trialflow_core::{Error, Result, Storage};
use trialflow_model::{ModelCard, Network};

pub use task::TASKS;
pub use trialflow_core::contracts::{
    Epoch, EvaluationReport, Importance, StreamStats, TrainReport,
};
pub use trialflow_model::metrics;
pub use trialflow_model::split::{Arrays, SLICE_COLUMNS, Split, load_split};

/// Input fields and their model input columns: a numeric field is one column, a categorical one its levels.
fn field_columns(spec: &FeatureSpec) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = spec
        .numeric
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), vec![i]))
        .collect();
    let mut next = spec.numeric.len();
    for c in &spec.categorical {
        out.push((c.name.clone(), (next..next + c.levels.len()).collect()));
        next += c.levels.len();
    }
    out
}

fn permutation_importance(
    dense: &trialflow_model::DenseCpu,
    spec: &FeatureSpec,
    test: &Split,
    repeats: usize,
    seed: u64,
) -> Vec<Importance> {
    let dim = spec.width();
    let base = metrics::roc_auc(&test.y, &dense.predict_proba(&test.x));
    if !base.is_finite() {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(2));
    let mut out = Vec::new();
    let mut x = test.x.clone();
    for (feature, cols) in field_columns(spec) {
        let mut drops = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let mut perm: Vec<usize> = (0..test.rows).collect();
            perm.shuffle(&mut rng);
            for (r, &from) in perm.iter().enumerate() {
                for &c in &cols {
                    x[r * dim + c] = test.x[from * dim + c];
                }
            }
            drops.push(base - metrics::roc_auc(&test.y, &dense.predict_proba(&x)));
        }
        for r in 0..test.rows {
            for &c in &cols {
                x[r * dim + c] = test.x[r * dim + c];
            }
        }
        let mean = drops.iter().sum::<f64>() / repeats as f64;
        let var = drops.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / repeats as f64;
        out.push(Importance {
            feature,
            auc_drop_mean: mean,
            auc_drop_std: var.sqrt(),
        });
    }
    out.sort_by(|a, b| b.auc_drop_mean.total_cmp(&a.auc_drop_mean));
    out
}

fn device(cfg: &Config) -> Result<Device> {
    match cfg.training.device {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if cfg!(feature = "cuda") => {
            Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu))
        }
        DeviceChoice::Auto => Ok(Device::Cpu),
        DeviceChoice::Cuda if cfg!(feature = "cuda") => {
            Device::new_cuda(0).map_err(|e| Error::infra("cuda:0", format!("no usable GPU: {e}")))
        }
        DeviceChoice::Cuda => Err(Error::config(
            &cfg.source_file,
            "training.device",
            "`cuda` needs a binary built with `--features cuda`; this one is CPU-only",
        )),
    }
}

fn ce(e: candle_core::Error) -> Error {
    Error::Internal(format!("candle: {e}"))
}

/// Numerically stable mean binary cross-entropy on logits with a positive-class weight `w` (PyTorch's
/// `BCEWithLogitsLoss(pos_weight=w)`): (1 − y)·z + (1 + (w − 1)·y)·softplus(−z), where
/// softplus(−z) = max(−z, 0) + log(1 + exp(−|z|)).
fn bce_with_logits(z: &Tensor, y: &Tensor, pos_weight: f64) -> candle_core::Result<Tensor> {
    let softplus_neg = (z.neg()?.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let negative_part = y.affine(-1.0, 1.0)?.mul(z)?;
    let weight = y.affine(pos_weight - 1.0, 1.0)?;
    (negative_part + weight.mul(&softplus_neg)?)?.mean_all()
}

/// Refuses features that are not finite, naming the split and the model input column.
fn check_finite(split: &Split, name: &str, spec: &FeatureSpec, location: &str) -> Result<()> {
    let dim = spec.width().max(1);
    if let Some(i) = split.x.iter().position(|v| !v.is_finite()) {
        return Err(Error::bad_data(
            location,
            format!(
                "the {name} split has a NaN or infinite value in feature `{}` (row {} of the split); \
                 expected finite numbers after imputation",
                spec.columns.get(i % dim).map_or("?", String::as_str),
                i / dim + 1
            ),
        ));
    }
    Ok(())
}

/// A split must hold both outcomes to learn from (train) or to be scored by AUC (test).
fn check_both_classes(split: &Split, name: &str, location: &str) -> Result<()> {
    let positives = split.y.iter().filter(|v| **v > 0.5).count();
    if positives == 0 || positives == split.rows {
        return Err(Error::bad_data(
            location,
            format!(
                "the {name} split has one outcome class only ({} rows, {positives} positive); expected both",
                split.rows
            ),
        ));
    }
    Ok(())
}

/// Why training stopped without a model.
#[derive(Debug)]
pub enum FitError {
    Candle(candle_core::Error),
    /// Reading a streamed split failed, or it held a value training cannot use.
    Data(Error),
    /// The loss became NaN or infinite (epoch, batch; batch 0 = the validation loss).
    Diverged(usize, usize),
}

impl From<Error> for FitError {
    fn from(e: Error) -> Self {
        FitError::Data(e)
    }
}

impl From<candle_core::Error> for FitError {
    fn from(e: candle_core::Error) -> Self {
        FitError::Candle(e)
    }
}

/// A trained network with its best epoch restored.
#[derive(Debug)]
pub struct Fitted {
    pub network: Network,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_val_loss: f64,
    pub history: Vec<Epoch>,
}

fn dropout_masks(
    net: &Network,
    rows: usize,
    rng: &mut StdRng,
    device: &Device,
) -> candle_core::Result<Vec<Option<Tensor>>> {
    net.config
        .hidden
        .iter()
        .enumerate()
        .map(|(i, &width)| {
            let p = net.config.dropout.get(i).copied().unwrap_or(0.0);
            if p <= 0.0 {
                return Ok(None);
            }
            let keep = 1.0 / (1.0 - p);
            let m: Vec<f32> = (0..rows * width)
                .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
                .collect();
            Tensor::from_vec(m, (rows, width), device).map(Some)
        })
        .collect()
}

/// The logistic baseline (`hidden: []`) is fitted to its optimum, as a statistician (or scikit-learn's
/// `LogisticRegression(penalty=None)`) would: Newton–Raphson on the mean (positive-weighted) cross-entropy plus
/// `weight_decay/2·‖w‖²` (the intercept unpenalized), with step halving. Returns `[bias, w…]` and one history
/// entry per iteration. Deterministic; early stopping does not apply.
fn fit_logistic(
    train: &Arrays,
    val: &Arrays,
    dim: usize,
    pos_weight: f64,
    l2: f64,
) -> (Vec<f64>, Vec<Epoch>) {
    let k = dim + 1;
    let n = train.rows as f64;
    let row = |x: &[f32], i: usize| -> Vec<f64> {
        std::iter::once(1.0)
            .chain(x[i * dim..(i + 1) * dim].iter().map(|v| f64::from(*v)))
            .collect()
    };
    let rows: Vec<Vec<f64>> = (0..train.rows).map(|i| row(train.x, i)).collect();
    let weight = |y: f32| if y > 0.5 { pos_weight } else { 1.0 };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    // Mean weighted cross-entropy of logits z against y, stable for large |z|.
    let xent = |z: f64, y: f32| {
        let softplus_neg = (-z).max(0.0) + (-z.abs()).exp().ln_1p();
        (1.0 - f64::from(y)) * z + softplus_neg
    };
    let objective = |theta: &[f64]| {
        let data: f64 = rows
            .iter()
            .zip(train.y)
            .map(|(r, &y)| weight(y) * xent(dot(r, theta), y))
            .sum::<f64>()
            / n;
        data + l2 / 2.0 * theta[1..].iter().map(|w| w * w).sum::<f64>()
    };
    let eval_split = |theta: &[f64], s: &Arrays| -> (f64, Option<f64>) {
        if s.rows == 0 {
            return (f64::NAN, None);
        }
        let z: Vec<f32> = (0..s.rows)
            .map(|i| dot(&row(s.x, i), theta) as f32)
            .collect();
        let loss = z
            .iter()
            .zip(s.y)
            .map(|(&z, &y)| weight(y) * xent(f64::from(z), y))
            .sum::<f64>()
            / s.rows as f64;
        (
            loss,
            Some(metrics::roc_auc(s.y, &z)).filter(|a| a.is_finite()),
        )
    };
    let mut theta = vec![0.0; k];
    let mut history = Vec::new();
    let mut current = objective(&theta);
    for iteration in 1..=100 {
        let mut g = vec![0.0; k];
        let mut h = vec![0.0; k * k];
        for (r, &y) in rows.iter().zip(train.y) {
            let p = 1.0 / (1.0 + (-dot(r, &theta)).exp());
            let s = weight(y);
            let resid = s * (p - f64::from(y)) / n;
            let curv = s * p * (1.0 - p) / n;
            for a in 0..k {
                g[a] += resid * r[a];
                for b in 0..=a {
                    h[a * k + b] += curv * r[a] * r[b];
                }
            }
        }
        for a in 0..k {
            for b in 0..a {
                h[b * k + a] = h[a * k + b];
            }
            // the ridge keeps the system solvable when a column is constant or levels are separated
            h[a * k + a] += if a == 0 { 1e-10 } else { l2 + 1e-10 };
            if a > 0 {
                g[a] += l2 * theta[a];
            }
        }
        let step = cholesky_solve(&h, &g, k);
        let mut t = 1.0;
        let mut next: Vec<f64> = theta.iter().zip(&step).map(|(a, d)| a - d).collect();
        let mut value = objective(&next);
        while value > current + 1e-15 && t > 1e-9 {
            t /= 2.0;
            next = theta.iter().zip(&step).map(|(a, d)| a - t * d).collect();
            value = objective(&next);
        }
        let moved = step.iter().map(|d| (t * d).abs()).fold(0.0, f64::max);
        theta = next;
        let improvement = current - value;
        current = value;
        let (val_loss, val_auc) = eval_split(&theta, if val.rows > 0 { val } else { train });
        history.push(Epoch {
            epoch: iteration,
            train_loss: eval_split(&theta, train).0,
            val_loss,
            val_auc,
        });
        if moved < 1e-9 || improvement.abs() < 1e-15 {
            break;
        }
    }
    (theta, history)
}

/// Solves `a·x = b` for a symmetric positive definite `a` (k×k, row-major).
fn cholesky_solve(a: &[f64], b: &[f64], k: usize) -> Vec<f64> {
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|m| l[i * k + m] * l[j * k + m]).sum();
            if i == j {
                l[i * k + i] = (a[i * k + i] - sum).max(1e-300).sqrt();
            } else {
                l[i * k + j] = (a[i * k + j] - sum) / l[j * k + j];
            }
        }
    }
    let mut y = vec![0.0; k];
    for i in 0..k {
        let sum: f64 = (0..i).map(|m| l[i * k + m] * y[m]).sum();
        y[i] = (b[i] - sum) / l[i * k + i];
    }
    let mut x = vec![0.0; k];
    for i in (0..k).rev() {
        let sum: f64 = (i + 1..k).map(|m| l[m * k + i] * x[m]).sum();
        x[i] = (y[i] - sum) / l[i * k + i];
    }
    x
}

/// Trains one architecture on `train`, early-stopping on `val` (or on `train` when `val` is empty): the
/// logistic baseline by Newton–Raphson, networks with AdamW in mini-batches (on the CPU by the fused step of
/// [`fused`], on a GPU by candle's autograd). Deterministic for a seed on the CPU.
pub fn fit(
    arch: &trialflow_core::config::ModelConfig,
    t: &trialflow_core::config::TrainingConfig,
    train: Arrays,
    val: Arrays,
    dim: usize,
    seed: u64,
    dev: &Device,
) -> std::result::Result<Fitted, FitError> {
    let pos_weight = t.pos_weight.unwrap_or(1.0);
    let monitor_auc = t.monitor == trialflow_core::config::Monitor::ValAuc && val.rows > 0;
    if arch.hidden.is_empty() {
        let (theta, history) = fit_logistic(&train, &val, dim, pos_weight, t.weight_decay);
        if theta.iter().any(|v| !v.is_finite()) {
            return Err(FitError::Diverged(history.len(), 1));
        }
        let net = Network::init(arch, dim, seed, dev)?;
        let (w, b) = &net.layers[0];
        let wv: Vec<f32> = theta[1..].iter().map(|v| *v as f32).collect();
        w.set(&Tensor::from_vec(wv, (1, dim), dev)?)?;
        b.set(&Tensor::from_vec(vec![theta[0] as f32], 1, dev)?)?;
        let last = history.last().map_or(f64::NAN, |e| e.val_loss);
        return Ok(Fitted {
            network: net,
            epochs_run: history.len(),
            best_epoch: history.len(),
            best_val_loss: last,
            history,
        });
    }
    let net = Network::init(arch, dim, seed, dev)?;
    if dev.is_cpu() {
        let mut data = InMemory {
            train,
            val: if val.rows > 0 { val } else { train },
            order: (0..train.rows as u32).collect(),
        };
        return fit_fused(net, t, &mut data, val.rows > 0, seed);
    }
    let mut opt = AdamW::new(
        net.vars(),
        ParamsAdamW {
            lr: t.learning_rate,
            weight_decay: t.weight_decay,
            ..Default::default()
        },
    )?;
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    let xs = Tensor::from_slice(train.x, (train.rows, dim), dev)?;
    let ys = Tensor::from_slice(train.y, train.rows, dev)?;
    let (vx, vy) = if val.rows > 0 {
        (
            Tensor::from_slice(val.x, (val.rows, dim), dev)?,
            Tensor::from_slice(val.y, val.rows, dev)?,
        )
    } else {
        (xs.clone(), ys.clone()) // no validation split configured: stop on training loss
    };
    let mut order: Vec<u32> = (0..train.rows as u32).collect();
    let mut stopping = EarlyStopping {
        best: (f64::INFINITY, 0, f64::INFINITY),
        patience: t.patience,
        monitor_auc,
    };
    let mut best = net.snapshot()?;
    let mut epochs_run = 0;
    let mut history = Vec::new();
    for epoch in 1..=t.epochs {
        epochs_run = epoch;
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for (b, chunk) in order.chunks(t.batch_size).enumerate() {
            let idx = Tensor::from_slice(chunk, chunk.len(), dev)?;
            let bx = xs.index_select(&idx, 0)?;
            let by = ys.index_select(&idx, 0)?;
            let masks = dropout_masks(&net, chunk.len(), &mut rng, dev)?;
            let loss = bce_with_logits(&net.logits(&bx, Some(&masks))?, &by, pos_weight)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(FitError::Diverged(epoch, b + 1));
            }
            loss_sum += f64::from(value) * chunk.len() as f64;
            opt.backward_step(&loss)?;
        }
        let val_logits = net.logits(&vx, None)?;
        let val_loss =
            f64::from(bce_with_logits(&val_logits, &vy, pos_weight)?.to_scalar::<f32>()?);
        if !val_loss.is_finite() {
            return Err(FitError::Diverged(epoch, 0));
        }
        let val_auc = if val.rows > 0 {
            Some(metrics::roc_auc(val.y, &val_logits.to_vec1::<f32>()?)).filter(|a| a.is_finite())
        } else {
            None
        };
        let e = Epoch {
            epoch,
            train_loss: loss_sum / train.rows as f64,
            val_loss,
            val_auc,
        };
        let verdict = stopping.observe(&e);
        history.push(e);
        match verdict {
            Verdict::Improved => best = net.snapshot()?,
            Verdict::Continue => {}
            Verdict::Stop => break,
        }
    }
    net.restore(&best)?;
    Ok(Fitted {
        network: net,
        epochs_run,
        best_epoch: stopping.best.1,
        best_val_loss: stopping.best.2,
        history,
    })
}

/// Tracks the best epoch and decides when to stop: the one early-stopping rule of both training paths.
struct EarlyStopping {
    /// (score to minimize: val loss, or −AUC; epoch; val loss at that epoch)
    best: (f64, usize, f64),
    patience: usize,
    monitor_auc: bool,
}

enum Verdict {
    Improved,
    Continue,
    Stop,
}

impl EarlyStopping {
    fn observe(&mut self, e: &Epoch) -> Verdict {
        let score = if self.monitor_auc {
            -e.val_auc.unwrap_or(f64::NAN)
        } else {
            e.val_loss
        };
        if score < self.best.0 - 1e-6 {
            self.best = (score, e.epoch, e.val_loss);
            Verdict::Improved
        } else if e.epoch - self.best.1 >= self.patience {
            Verdict::Stop
        } else {
            Verdict::Continue
        }
    }
}

/// Where the fused loop's rows come from: visits `(x, y, row order)` blocks for an epoch's training (shuffled
/// by the seeded generator) and `(x, y)` blocks for validation.
/// Visits one block of training rows: features, outcomes, the row order to batch them in.
type TrainVisit<'v> = dyn FnMut(&[f32], &[f32], &[u32]) -> std::result::Result<(), FitError> + 'v;
/// Visits one block of validation rows: features, outcomes.
type BlockVisit<'v> = dyn FnMut(&[f32], &[f32]) -> std::result::Result<(), FitError> + 'v;

trait Rows {
    fn rows(&self) -> usize;
    fn train_epoch(
        &mut self,
        rng: &mut StdRng,
        visit: &mut TrainVisit<'_>,
    ) -> std::result::Result<(), FitError>;
    fn validation(&self, visit: &mut BlockVisit<'_>) -> std::result::Result<(), FitError>;
}

/// Splits in memory: one block, the whole split, shuffled as a whole.
struct InMemory<'a> {
    train: Arrays<'a>,
    val: Arrays<'a>,
    order: Vec<u32>,
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
struct Streamed<'a> {
    train: &'a stream::StreamedSplit,
    val: &'a stream::StreamedSplit,
    spec: &'a FeatureSpec,
    block_rows: usize,
    stats: StreamStats,
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
                largest = largest.max(y.len());
                order.clear();
                order.extend(0..y.len() as u32);
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
fn fit_fused(
    net: Network,
    t: &trialflow_core::config::TrainingConfig,
    data: &mut dyn Rows,
    has_val: bool,
    seed: u64,
) -> std::result::Result<Fitted, FitError> {
    let pos_weight = t.pos_weight.unwrap_or(1.0) as f32;
    let monitor_auc = t.monitor == trialflow_core::config::Monitor::ValAuc && has_val;
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
    for epoch in 1..=t.epochs {
        epochs_run = epoch;
        let mut loss_sum = 0.0;
        let mut batch_no = 0;
        data.train_epoch(&mut rng, &mut |x, y, order| {
            for chunk in order.chunks(t.batch_size) {
                batch_no += 1;
                let loss = trainer.step(&mut mlp, &mut opt, x, y, chunk, pos_weight);
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
        let val_loss = val_logits
            .iter()
            .zip(&val_y)
            .map(|(&z, &y)| fused::bce_loss(z, y, pos_weight))
            .sum::<f64>()
            / val_y.len().max(1) as f64;
        if !val_loss.is_finite() || mlp.params.iter().any(|p| !p.is_finite()) {
            return Err(FitError::Diverged(epoch, 0));
        }
        let val_auc = if has_val {
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
            Verdict::Improved => best_params.clone_from(&mlp.params),
            Verdict::Continue => {}
            Verdict::Stop => break,
        }
    }
    mlp.params = best_params;
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
    train: &stream::StreamedSplit,
    val: &stream::StreamedSplit,
    spec: &FeatureSpec,
    seed: u64,
) -> std::result::Result<(Fitted, StreamStats), FitError> {
    let net = Network::init(arch, spec.width(), seed, &Device::Cpu)?;
    let mut data = Streamed {
        train,
        val,
        spec,
        block_rows: t.stream_block_rows,
        stats: StreamStats::default(),
    };
    let fitted = fit_fused(net, t, &mut data, val.rows > 0, seed)?;
    Ok((fitted, data.stats))
}

/// Trains `model` from `config.models`, writes `candidates/<model>/{model.safetensors, model.json,
/// metrics.json}`. Deterministic for a seed on the CPU.
pub async fn train(
    cfg: &Config,
    lake: &Storage,
    model: &str,
    code_version: &str,
) -> Result<TrainReport> {
    let arch = cfg
        .models
        .get(model)
        .ok_or_else(|| Error::config(&cfg.source_file, format!("models.{model}"), "no such model"))?
        .clone();
    let started = std::time::SystemTime::now();
    let spec: FeatureSpec = contracts::load(lake).await?;
    let slice_cols = &cfg.training.slices;
    let t = cfg.training.clone();
    let dev = device(cfg)?;
    let dim = spec.width();
    let at = lake.display(lake::FEATURES);
    // the footers say how large the train split is; above the limit it is streamed, never loaded whole
    let train_stream = stream::StreamedSplit::open(lake, &spec, "train").await?;
    let encoded = train_stream.rows as u64 * dim as u64 * 4;
    let encoded_mib = encoded >> 20;
    let streamed = encoded > t.max_in_memory_mib.saturating_mul(1 << 20);
    if streamed && !dev.is_cpu() {
        return Err(Error::config(
            &cfg.source_file,
            "training.device",
            format!(
                "the train split ({encoded_mib} MiB encoded) is above training.max_in_memory_mib ({}): it is \
                 streamed, and streamed training runs on the CPU only",
                t.max_in_memory_mib
            ),
        ));
    }
    let empty = || Split {
        x: Vec::new(),
        y: Vec::new(),
        rows: 0,
        slices: Vec::new(),
        ids: Vec::new(),
    };
    let (train, val, val_stream) = if streamed {
        if train_stream.rows == 0 {
            return Err(Error::bad_data(&at, "the train split is empty"));
        }
        let (rows, positives) = train_stream.count_outcomes().await?;
        if positives == 0 || positives == rows {
            return Err(Error::bad_data(
                &at,
                format!(
                    "the train split has one outcome class only ({rows} rows, {positives} positive); expected both"
                ),
            ));
        }
        let val_stream = stream::StreamedSplit::open(lake, &spec, "val").await?;
        (empty(), empty(), Some(val_stream))
    } else {
        (
            load_split(lake, &spec, "train", &[]).await?,
            load_split(lake, &spec, "val", &[]).await?,
            None,
        )
    };
    let test = load_split(lake, &spec, "test", slice_cols).await?;
    let mut checked = vec![("test", &test)];
    if !streamed {
        checked.insert(0, ("train", &train));
    }
    for (name, split) in checked {
        if split.rows == 0 {
            return Err(Error::bad_data(&at, format!("the {name} split is empty")));
        }
        check_both_classes(split, name, &at)?;
    }
    for (name, split) in [("train", &train), ("val", &val), ("test", &test)] {
        check_finite(split, name, &spec, &at)?;
    }
    let seed = t.seed
        ^ u64::from_le_bytes(
            sha256_hex(model.as_bytes()).as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
    let mut stream_stats = None;
    let trained = tokio::task::block_in_place(|| match &val_stream {
        Some(val_stream) => fit_streamed(&arch, &t, &train_stream, val_stream, &spec, seed).map(
            |(fitted, stats)| {
                stream_stats = Some(stats);
                fitted
            },
        ),
        None => fit(&arch, &t, train.arrays(), val.arrays(), dim, seed, &dev),
    });
    let (net, epochs_run, best_epoch, best_val, history) = match trained {
        Ok(f) => (
            f.network,
            f.epochs_run,
            f.best_epoch,
            f.best_val_loss,
            f.history,
        ),
        Err(FitError::Candle(e)) => return Err(ce(e)),
        Err(FitError::Data(e)) => return Err(e),
        Err(FitError::Diverged(epoch, batch)) => {
            let when = if batch == 0 {
                format!("on the validation split after epoch {epoch}")
            } else {
                format!("at epoch {epoch}, batch {batch}")
            };
            return Err(Error::config(
                &cfg.source_file,
                "training.learning_rate",
                format!(
                    "training of `{model}` diverged: the loss became NaN or infinite {when}; nothing was \
                     saved. Lower the learning rate (or check the features' scale)"
                ),
            ));
        }
    };

    let p_test = net.predict_proba(&test.x, test.rows, &dev).map_err(ce)?;
    let how = evaluation(&t);
    let metrics = metrics::evaluate(&test.y, &p_test, &how);
    let importance = if t.importance_repeats > 0 {
        let dense = trialflow_model::DenseCpu::from_network(&net).map_err(ce)?;
        permutation_importance(&dense, &spec, &test, t.importance_repeats, seed)
    } else {
        Vec::new()
    };
    let slices = metrics::slices(&test.slices, &test.y, &p_test, &how);
    let mut data_fp = Fingerprinter::new();
    if streamed {
        // what was read, by object: hashing every row would cost another pass over the split
        data_fp.part("train_objects", train_stream.fingerprint().as_bytes());
    } else {
        data_fp
            .part("train", &bytes_of(&train.x))
            .part("y", &bytes_of(&train.y));
    }
    let mut cfg_fp = Fingerprinter::new();
    cfg_fp
        .part(
            "model",
            serde_json::to_string(&arch).unwrap_or_default().as_bytes(),
        )
        .part(
            "training",
            serde_json::to_string(&t).unwrap_or_default().as_bytes(),
        );
    let card = ModelCard {
        name: model.to_string(),
        architecture: arch,
        input_dim: dim,
        feature_spec: spec,
        metrics: serde_json::to_value(&metrics).unwrap_or_default(),
        data_fingerprint: data_fp.finish(),
        config_fingerprint: cfg_fp.finish(),
        code_version: code_version.to_string(),
        seed,
    };
    let dir = lake::candidate_dir(model);
    let weights = net.to_safetensors().map_err(Error::Internal)?;
    lake.put(&format!("{dir}model.safetensors"), weights.clone())
        .await?;
    lake.put_json(&format!("{dir}model.json"), &card).await?;
    write_test_predictions(
        lake,
        &format!("{dir}{}", contracts::TEST_PREDICTIONS),
        &test,
        &p_test,
    )
    .await?;
    let mut report = TrainReport {
        model: model.to_string(),
        epochs_run,
        best_epoch,
        best_val_loss: best_val,
        train_rows: train_stream.rows,
        val_rows: val_stream.as_ref().map_or(val.rows, |v| v.rows),
        test_rows: test.rows,
        stream: stream_stats,
        metrics,
        slices,
        importance,
        history,
        tracking: None,
    };
    if let Some(uri) = &cfg.tracking.mlflow_uri {
        let files = [
            ("model.safetensors", weights),
            ("model.json", json_bytes(&card)),
            ("metrics.json", json_bytes(&report)),
        ];
        report.tracking = Some(
            match log_to_mlflow(cfg, uri, &report, &card, &files, started).await {
                Ok(run) => serde_json::json!({"mlflow": run}),
                Err(e) if !cfg.tracking.required => {
                    tracing::warn!(model, error = %e, "the run could not be logged to MLflow; training goes on (tracking.required: false)");
                    serde_json::json!({"error": e.to_string()})
                }
                Err(e) => return Err(e),
            },
        );
    }
    lake.put_json(&contracts::candidate_metrics(model), &report)
        .await?;
    Ok(report)
}

fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One MLflow run per training run: params (architecture and training settings), per-epoch loss and AUC,
/// the final test metrics with their intervals, tags (code version, data and config fingerprints), and the
/// artifacts. A run that fails half-way is marked FAILED on the server.
async fn log_to_mlflow(
    cfg: &Config,
    uri: &str,
    report: &TrainReport,
    card: &ModelCard,
    files: &[(&str, Vec<u8>)],
    started: std::time::SystemTime,
) -> Result<tracking::RunRef> {
    use tracking::{Metric, param};
    let client = tracking::Mlflow::new(uri)?;
    let experiment = cfg
        .tracking
        .experiment
        .clone()
        .unwrap_or_else(|| cfg.dataset.name.clone());
    let experiment_id = client.experiment(&experiment).await?;
    let (run_id, artifact_uri) = client
        .create_run(&experiment_id, &report.model, unix_ms(started))
        .await?;
    let now = unix_ms(std::time::SystemTime::now());
    let t = &cfg.training;
    let a = &card.architecture;
    let params = vec![
        param("model", &report.model),
        param("hidden", format!("{:?}", a.hidden)),
        param("dropout", format!("{:?}", a.dropout)),
        param("activation", format!("{:?}", a.activation).to_lowercase()),
        param("input_dim", card.input_dim),
        param("seed", card.seed),
        param("epochs", t.epochs),
        param("batch_size", t.batch_size),
        param("learning_rate", t.learning_rate),
        param("weight_decay", t.weight_decay),
        param("patience", t.patience),
        param("monitor", format!("{:?}", t.monitor)),
        param("pos_weight", t.pos_weight.unwrap_or(1.0)),
        param("threshold", t.threshold),
        param("bootstrap_resamples", t.bootstrap_resamples),
        param("train_rows", report.train_rows),
        param("val_rows", report.val_rows),
        param("test_rows", report.test_rows),
    ];
    let tags = vec![
        param("trialflow.code_version", &card.code_version),
        param("trialflow.data_fingerprint", &card.data_fingerprint),
        param("trialflow.config_fingerprint", &card.config_fingerprint),
        param("trialflow.dataset", &cfg.dataset.name),
        param("mlflow.source.name", "trialflow"),
        param("mlflow.source.type", "JOB"),
    ];
    let mut metrics = Vec::new();
    for e in &report.history {
        let step = e.epoch as i64;
        let mut push = |key: &str, value: Option<f64>| {
            if let Some(value) = value.filter(|v| v.is_finite()) {
                metrics.push(Metric {
                    key: key.into(),
                    value,
                    step,
                    timestamp: now,
                });
            }
        };
        push("train_loss", Some(e.train_loss));
        push("val_loss", Some(e.val_loss));
        push("val_auc", e.val_auc);
    }
    for name in trialflow_core::contracts::Metrics::names() {
        if let Some(v) = report
            .metrics
            .get(&name)
            .flatten()
            .filter(|v| v.is_finite())
        {
            metrics.push(Metric {
                key: format!("test_{name}"),
                value: v,
                step: 0,
                timestamp: now,
            });
        }
    }
    metrics.push(Metric {
        key: "best_epoch".into(),
        value: report.best_epoch as f64,
        step: 0,
        timestamp: now,
    });
    let logged = async {
        client.log(&run_id, &metrics, &params, &tags).await?;
        for (name, bytes) in files {
            client.upload(&artifact_uri, name, bytes.clone()).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    let end = unix_ms(std::time::SystemTime::now());
    client
        .finish(
            &run_id,
            if logged.is_ok() { "FINISHED" } else { "FAILED" },
            end,
        )
        .await?;
    logged?;
    Ok(tracking::RunRef {
        tracking_uri: uri.to_string(),
        experiment_id,
        run_id,
        artifact_uri,
    })
}

/// Scores a saved model on the lake's current test split, encoded with the model's own feature spec:
/// `(outcomes, probabilities)`. The quality gate compares the served version with a candidate this way.
/// One split's encoded inputs and outcomes, as training sees them: `(x, y, rows)`.
pub async fn load_arrays(
    lake: &Storage,
    spec: &FeatureSpec,
    split: &str,
) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    let s = load_split(lake, spec, split, &[]).await?;
    Ok((s.x, s.y, s.rows))
}

/// The configured threshold and bootstrap, seeded by the training seed.
pub fn evaluation(t: &trialflow_core::config::TrainingConfig) -> metrics::Evaluation {
    metrics::Evaluation {
        threshold: t.threshold,
        resamples: t.bootstrap_resamples,
        seed: t.seed,
    }
}

async fn write_test_predictions(lake: &Storage, rel: &str, test: &Split, p: &[f32]) -> Result<()> {
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
    .map_err(|e| Error::Internal(e.to_string()))?;
    trialflow_core::table::write_parquet(lake, rel, schema, &[batch]).await
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Collects the named candidates' metrics into `candidates/evaluation.json`.
pub async fn evaluate(lake: &Storage, models: &[String]) -> Result<EvaluationReport> {
    let mut leaderboard = Vec::new();
    for name in models {
        let r: TrainReport = contracts::read(lake, &contracts::candidate_metrics(name)).await?;
        leaderboard.push(r);
    }
    leaderboard.sort_by(|a, b| {
        let auc = |r: &TrainReport| r.metrics.roc_auc.unwrap_or(f64::NEG_INFINITY);
        auc(b).total_cmp(&auc(a)).then(a.model.cmp(&b.model))
    });
    let ev = EvaluationReport { leaderboard };
    contracts::save(lake, &ev).await?;
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let got = bce_with_logits(&zt, &yt, w)
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

    /// A training section with the given epochs and batch, every optional key at its default.
    fn training(epochs: usize, batch_size: usize) -> trialflow_core::config::TrainingConfig {
        serde_json::from_value(serde_json::json!({
            "seed": 1, "epochs": epochs, "batch_size": batch_size, "learning_rate": 0.01, "patience": epochs,
        }))
        .unwrap()
    }
}
