//! Fitting a network: the entry point [`fit`] (the logistic baseline by Newton–Raphson, networks by the fused
//! CPU step or, on CUDA, candle's autograd loop with Adam, dropout and early stopping), its result and errors.

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use trialflow_core::Error;
use trialflow_model::Network;

use crate::early_stopping::{EarlyStopping, Verdict};
use crate::fused_fit::{InMemory, fit_fused};
use crate::logistic::fit_logistic;
use crate::{Arrays, Epoch, metrics};

/// Numerically stable mean binary cross-entropy on logits with a positive-class weight `w` (PyTorch's
/// `BCEWithLogitsLoss(pos_weight=w)`): (1 − y)·z + (1 + (w − 1)·y)·softplus(−z), where
/// softplus(−z) = max(−z, 0) + log(1 + exp(−|z|)).
pub(crate) fn bce_with_logits(
    z: &Tensor,
    y: &Tensor,
    pos_weight: f64,
) -> candle_core::Result<Tensor> {
    let softplus_neg = (z.neg()?.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let negative_part = y.affine(-1.0, 1.0)?.mul(z)?;
    let weight = y.affine(pos_weight - 1.0, 1.0)?;
    (negative_part + weight.mul(&softplus_neg)?)?.mean_all()
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

pub(crate) fn dropout_masks(
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
