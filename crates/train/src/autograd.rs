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
use crate::fused;
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

/// The mean loss of `objective` in candle ops (autograd on a GPU), equal to the fused step's: `z` the batch's
/// outputs, `y` its targets (`rows × width`, row-major) on the device, `host_y` the same targets on the host
/// (Cox's risk sets are ordered there).
pub(crate) fn objective_loss(
    objective: fused::Objective,
    z: &Tensor,
    y: &Tensor,
    host_y: &[f32],
) -> candle_core::Result<Tensor> {
    use fused::Objective;
    match objective {
        Objective::Bce { pos_weight } => bce_with_logits(z, y, f64::from(pos_weight)),
        Objective::Squared { mean, sd } => {
            let r = (z - y.affine(1.0 / f64::from(sd), -f64::from(mean) / f64::from(sd))?)?;
            r.sqr()?.mean_all()
        }
        Objective::Huber { mean, sd, delta } => {
            let r = (z - y.affine(1.0 / f64::from(sd), -f64::from(mean) / f64::from(sd))?)?;
            let a = r.abs()?;
            let d = f64::from(delta);
            // 0.5·min(|r|, δ)² + δ·max(|r| − δ, 0): Huber's loss in ops with gradients everywhere
            let inner = a.clamp(0.0, d)?;
            let outer = (a - d)?.relu()?;
            ((inner.sqr()? * 0.5)? + (outer * d)?)?.mean_all()
        }
        Objective::Cox { efron } => cox_loss(z, host_y, efron),
    }
}

/// The Cox negative log partial likelihood over the batch divided by its events (see
/// [`fused::Objective::Cox`]), in candle ops: rows ordered latest first, the risk sets as a cumulative sum, a
/// tied group's risk set read at its last row, Efron's share of the group's deaths from a cumulative sum over
/// the deaths.
fn cox_loss(z: &Tensor, host_y: &[f32], efron: bool) -> candle_core::Result<Tensor> {
    let dev = z.device();
    let n = host_y.len() / 2;
    let time = |i: usize| host_y[2 * i];
    let died = |i: usize| host_y[2 * i + 1] > 0.5;
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| time(b as usize).total_cmp(&time(a as usize)));
    // per death, in order: its position, the last position of its time group, its group's first and last
    // death (positions in the list of deaths), its share l/d
    let (mut death_at, mut group_end, mut first, mut last, mut share) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut p = 0;
    while p < n {
        let t = time(order[p] as usize);
        let mut end = p;
        while end < n && time(order[end] as usize) == t {
            end += 1;
        }
        let deaths: Vec<usize> = (p..end).filter(|&q| died(order[q] as usize)).collect();
        let (lo, d) = (death_at.len() as u32, deaths.len());
        for (l, q) in deaths.into_iter().enumerate() {
            death_at.push(q as u32);
            group_end.push((end - 1) as u32);
            first.push(lo);
            last.push(lo + d as u32);
            share.push(if efron { l as f32 / d as f32 } else { 0.0 });
        }
        p = end;
    }
    let events = death_at.len();
    if events == 0 {
        return z.sum_all()?.affine(0.0, 0.0);
    }
    let idx = |v: Vec<u32>| Tensor::from_vec(v, events, dev);
    let sorted = z.index_select(&Tensor::from_vec(order, n, dev)?, 0)?;
    let m = sorted.max_keepdim(0)?.detach();
    let w = sorted.broadcast_sub(&m)?.exp()?;
    let risk = w.cumsum(0)?.index_select(&idx(group_end)?, 0)?;
    let dying = w.index_select(&idx(death_at.clone())?, 0)?;
    let cumulative = Tensor::cat(&[Tensor::zeros(1, w.dtype(), dev)?, dying.cumsum(0)?], 0)?;
    let tied =
        (cumulative.index_select(&idx(last)?, 0)? - cumulative.index_select(&idx(first)?, 0)?)?;
    let share = Tensor::from_vec(share, events, dev)?;
    let den = (risk - tied.mul(&share)?)?;
    let z_dying = sorted.index_select(&idx(death_at)?, 0)?.broadcast_sub(&m)?;
    (den.log()? - z_dying)?
        .sum_all()?
        .affine(1.0 / events as f64, 0.0)
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

/// Trains one architecture on `train` for `objective`, early-stopping on `val` (or on `train` when `val` is
/// empty): the linear baselines (`hidden: []`) to their optimum (logistic and Cox by Newton–Raphson, least
/// squares in closed form), networks with AdamW in mini-batches (on the CPU by the fused step of [`fused`], on
/// a GPU by candle's autograd). A continuous endpoint's network learns the standardized target and its last
/// layer is put back on the target's scale. Deterministic for a seed on the CPU.
#[allow(clippy::too_many_arguments)] // what a fit needs: the model, the run, the loss, the data, where
pub fn fit(
    arch: &trialflow_core::config::ModelConfig,
    t: &trialflow_core::config::TrainingConfig,
    objective: fused::Objective,
    train: Arrays,
    val: Arrays,
    dim: usize,
    seed: u64,
    dev: &Device,
) -> std::result::Result<Fitted, FitError> {
    if arch.hidden.is_empty() {
        return fit_baseline(arch, t, objective, train, val, dim, seed, dev);
    }
    let net = Network::init(arch, dim, seed, dev)?;
    let fitted = if dev.is_cpu() {
        let mut data = InMemory {
            train,
            val: if val.rows > 0 { val } else { train },
            order: (0..train.rows as u32).collect(),
        };
        fit_fused(net, t, objective, &mut data, val.rows > 0, seed)?
    } else {
        fit_autograd(net, t, objective, train, val, dim, seed, dev)?
    };
    rescale_output(&fitted.network, objective)?;
    Ok(fitted)
}

/// A network trained on the standardized target predicts (y − mean)/sd: its last layer times sd plus mean
/// predicts y.
pub(crate) fn rescale_output(
    net: &Network,
    objective: fused::Objective,
) -> candle_core::Result<()> {
    if let fused::Objective::Squared { mean, sd } | fused::Objective::Huber { mean, sd, .. } =
        objective
        && let Some((w, b)) = net.layers.last()
    {
        w.set(&w.as_tensor().affine(f64::from(sd), 0.0)?)?;
        b.set(&b.as_tensor().affine(f64::from(sd), f64::from(mean))?)?;
    }
    Ok(())
}

/// The linear baseline of the objective, fitted to its optimum; early stopping does not apply.
#[allow(clippy::too_many_arguments)]
fn fit_baseline(
    arch: &trialflow_core::config::ModelConfig,
    t: &trialflow_core::config::TrainingConfig,
    objective: fused::Objective,
    train: Arrays,
    val: Arrays,
    dim: usize,
    seed: u64,
    dev: &Device,
) -> std::result::Result<Fitted, FitError> {
    let (theta, history) = match objective {
        fused::Objective::Bce { pos_weight } => {
            fit_logistic(&train, &val, dim, f64::from(pos_weight), t.weight_decay)
        }
        fused::Objective::Squared { .. } | fused::Objective::Huber { .. } => {
            crate::baselines::fit_least_squares(&train, &val, dim, objective, t.weight_decay)
        }
        fused::Objective::Cox { .. } => {
            crate::baselines::fit_cox(&train, &val, dim, objective, t.weight_decay)
        }
    };
    if theta.iter().any(|v| !v.is_finite()) {
        return Err(FitError::Diverged(history.len(), 1));
    }
    let net = Network::init(arch, dim, seed, dev)?;
    let (w, b) = &net.layers[0];
    let wv: Vec<f32> = theta[1..].iter().map(|v| *v as f32).collect();
    w.set(&Tensor::from_vec(wv, (1, dim), dev)?)?;
    b.set(&Tensor::from_vec(vec![theta[0] as f32], 1, dev)?)?;
    let last = history.last().map_or(f64::NAN, |e| e.val_loss);
    Ok(Fitted {
        network: net,
        epochs_run: history.len(),
        best_epoch: history.len(),
        best_val_loss: last,
        history,
    })
}

/// The GPU path: candle's autograd with AdamW, dropout, early stopping and best-epoch restore.
#[allow(clippy::too_many_arguments)]
fn fit_autograd(
    net: Network,
    t: &trialflow_core::config::TrainingConfig,
    objective: fused::Objective,
    train: Arrays,
    val: Arrays,
    dim: usize,
    seed: u64,
    dev: &Device,
) -> std::result::Result<Fitted, FitError> {
    let binary = matches!(objective, fused::Objective::Bce { .. });
    let monitor_auc =
        t.monitor == trialflow_core::config::Monitor::ValAuc && val.rows > 0 && binary;
    let width = objective.width();
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
    let targets = |y: &[f32], rows: usize| -> candle_core::Result<Tensor> {
        if width == 1 {
            Tensor::from_slice(y, rows, dev)
        } else {
            Tensor::from_slice(y, (rows, width), dev)
        }
    };
    let ys = targets(train.y, train.rows)?;
    let (vx, vy, val_host) = if val.rows > 0 {
        (
            Tensor::from_slice(val.x, (val.rows, dim), dev)?,
            targets(val.y, val.rows)?,
            val.y,
        )
    } else {
        (xs.clone(), ys.clone(), train.y) // no validation split configured: stop on training loss
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
    let mut host_batch = Vec::new();
    let progress = trialflow_core::progress::Progress::new(
        format!("train hidden {:?}", net.config.hidden),
        t.epochs as u64,
        trialflow_core::progress::Unit::Epochs,
    );
    for epoch in 1..=t.epochs {
        epochs_run = epoch;
        progress.set(epoch as u64 - 1);
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for (b, chunk) in order.chunks(t.batch_size).enumerate() {
            let idx = Tensor::from_slice(chunk, chunk.len(), dev)?;
            let bx = xs.index_select(&idx, 0)?;
            let by = ys.index_select(&idx, 0)?;
            host_batch.clear();
            for &i in chunk {
                let i = i as usize;
                host_batch.extend_from_slice(&train.y[i * width..(i + 1) * width]);
            }
            let masks = dropout_masks(&net, chunk.len(), &mut rng, dev)?;
            let loss =
                objective_loss(objective, &net.logits(&bx, Some(&masks))?, &by, &host_batch)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(FitError::Diverged(epoch, b + 1));
            }
            loss_sum += f64::from(value) * chunk.len() as f64;
            opt.backward_step(&loss)?;
        }
        let val_logits = net.logits(&vx, None)?;
        let val_loss =
            f64::from(objective_loss(objective, &val_logits, &vy, val_host)?.to_scalar::<f32>()?);
        if !val_loss.is_finite() {
            return Err(FitError::Diverged(epoch, 0));
        }
        let val_auc = if val.rows > 0 && binary {
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
            Verdict::Improved if t.restore_best => best = net.snapshot()?,
            Verdict::Improved | Verdict::Continue => {}
            Verdict::Stop => break,
        }
    }
    if t.restore_best {
        net.restore(&best)?;
    }
    Ok(Fitted {
        network: net,
        epochs_run,
        best_epoch: stopping.best.1,
        best_val_loss: stopping.best.2,
        history,
    })
}
