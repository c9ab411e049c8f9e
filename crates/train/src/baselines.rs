//! The linear baselines of the continuous and time-to-event endpoints (`hidden: []`), fitted to their optimum
//! as a statistician would: ordinary least squares in closed form, and the Cox model by Newton–Raphson on the
//! log partial likelihood (Efron or Breslow ties, as R's `coxph`). Each returns `[bias, w…]` and one history
//! entry per iteration; `weight_decay` adds `weight_decay/2·‖w‖²` to the mean loss, as for the logistic one.

use crate::logistic::cholesky_solve;
use crate::{Arrays, Epoch, fused::Objective};

fn with_intercept(x: &[f32], dim: usize, i: usize) -> Vec<f64> {
    std::iter::once(1.0)
        .chain(x[i * dim..(i + 1) * dim].iter().map(|v| f64::from(*v)))
        .collect()
}

/// The outputs `[bias, w…]` give on a split.
fn outputs(theta: &[f64], s: &Arrays, dim: usize) -> Vec<f32> {
    (0..s.rows)
        .map(|i| {
            with_intercept(s.x, dim, i)
                .iter()
                .zip(theta)
                .map(|(a, b)| a * b)
                .sum::<f64>() as f32
        })
        .collect()
}

/// One history entry: the objective's loss on both splits (the validation split, or the train split
/// without one).
fn epoch(
    iteration: usize,
    theta: &[f64],
    objective: Objective,
    train: &Arrays,
    val: &Arrays,
    dim: usize,
) -> Epoch {
    let loss = |s: &Arrays| objective.loss(&outputs(theta, s, dim), s.y);
    Epoch {
        epoch: iteration,
        train_loss: loss(train),
        val_loss: if val.rows > 0 { loss(val) } else { loss(train) },
        val_auc: None,
    }
}

/// Least squares on the raw target: (XᵀX + n·λ/2·I₋₀)θ = Xᵀy, the intercept unpenalized. The output is the
/// predicted value itself; `objective` (on the standardized scale) only reports the loss.
pub(crate) fn fit_least_squares(
    train: &Arrays,
    val: &Arrays,
    dim: usize,
    objective: Objective,
    l2: f64,
) -> (Vec<f64>, Vec<Epoch>) {
    let k = dim + 1;
    let mut a = vec![0.0; k * k];
    let mut b = vec![0.0; k];
    for i in 0..train.rows {
        let r = with_intercept(train.x, dim, i);
        let y = f64::from(train.y[i]);
        for p in 0..k {
            b[p] += r[p] * y;
            for q in 0..=p {
                a[p * k + q] += r[p] * r[q];
            }
        }
    }
    let ridge = train.rows as f64 * l2 / 2.0;
    for p in 0..k {
        for q in 0..p {
            a[q * k + p] = a[p * k + q];
        }
        // a vanishing ridge keeps the system solvable when a column is constant or two are collinear
        a[p * k + p] += 1e-10 * a[p * k + p].max(1.0) + if p == 0 { 0.0 } else { ridge };
    }
    let theta = cholesky_solve(&a, &b, k);
    let standardized = standardize(&theta, objective);
    let history = vec![epoch(1, &standardized, objective, train, val, dim)];
    (theta, history)
}

/// θ on the standardized target's scale, for the objective's loss: (θ − mean·e₀)/sd.
fn standardize(theta: &[f64], objective: Objective) -> Vec<f64> {
    let (mean, sd) = match objective {
        Objective::Squared { mean, sd } | Objective::Huber { mean, sd, .. } => {
            (f64::from(mean), f64::from(sd))
        }
        _ => (0.0, 1.0),
    };
    theta
        .iter()
        .enumerate()
        .map(|(i, v)| if i == 0 { (v - mean) / sd } else { v / sd })
        .collect()
}

/// The log partial likelihood of `beta`, its gradient and the information matrix (negative Hessian).
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with explicit indices
fn cox_derivatives(
    rows: &[Vec<f64>],
    time: &[f64],
    event: &[bool],
    beta: &[f64],
    efron: bool,
) -> (f64, Vec<f64>, Vec<f64>) {
    let p = beta.len();
    let n = rows.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| time[b].total_cmp(&time[a]));
    let eta: Vec<f64> = rows
        .iter()
        .map(|r| r.iter().zip(beta).map(|(a, b)| a * b).sum())
        .collect();
    let (mut ll, mut u, mut info) = (0.0, vec![0.0; p], vec![0.0; p * p]);
    let (mut s0, mut s1, mut s2) = (0.0, vec![0.0; p], vec![0.0; p * p]);
    let mut i = 0;
    while i < n {
        let t = time[order[i]];
        let (mut d0, mut d1, mut d2, mut deaths) = (0.0, vec![0.0; p], vec![0.0; p * p], 0usize);
        while i < n && time[order[i]] == t {
            let k = order[i];
            let w = eta[k].exp();
            let r = &rows[k];
            s0 += w;
            for a in 0..p {
                s1[a] += w * r[a];
                for b in 0..p {
                    s2[a * p + b] += w * r[a] * r[b];
                }
            }
            if event[k] {
                deaths += 1;
                ll += eta[k];
                d0 += w;
                for a in 0..p {
                    u[a] += r[a];
                    d1[a] += w * r[a];
                    for b in 0..p {
                        d2[a * p + b] += w * r[a] * r[b];
                    }
                }
            }
            i += 1;
        }
        for l in 0..deaths {
            let f = if efron { l as f64 / deaths as f64 } else { 0.0 };
            let z0 = s0 - f * d0;
            ll -= z0.ln();
            for a in 0..p {
                let za = s1[a] - f * d1[a];
                u[a] -= za / z0;
                for b in 0..p {
                    let zb = s1[b] - f * d1[b];
                    info[a * p + b] +=
                        (s2[a * p + b] - f * d2[a * p + b]) / z0 - za * zb / (z0 * z0);
                }
            }
        }
    }
    (ll, u, info)
}

/// The linear Cox model by Newton–Raphson with step halving, stopped as R's `coxph` is (relative change of
/// the log partial likelihood below 1e-9, at most 30 iterations). The bias is 0: a constant cancels from the
/// partial likelihood.
pub(crate) fn fit_cox(
    train: &Arrays,
    val: &Arrays,
    dim: usize,
    objective: Objective,
    l2: f64,
) -> (Vec<f64>, Vec<Epoch>) {
    let efron = matches!(objective, Objective::Cox { efron: true });
    let rows: Vec<Vec<f64>> = (0..train.rows)
        .map(|i| {
            train.x[i * dim..(i + 1) * dim]
                .iter()
                .map(|v| f64::from(*v))
                .collect()
        })
        .collect();
    let (time, event): (Vec<f64>, Vec<bool>) = train
        .y
        .chunks_exact(2)
        .map(|te| (f64::from(te[0]), te[1] > 0.5))
        .unzip();
    let events = event.iter().filter(|e| **e).count().max(1) as f64;
    // the penalized objective per event, as the network's loss: −ll/E + λ/2·‖β‖²
    let penalized = |beta: &[f64]| {
        let (ll, u, info) = cox_derivatives(&rows, &time, &event, beta, efron);
        let value = ll - events * l2 / 2.0 * beta.iter().map(|b| b * b).sum::<f64>();
        let u: Vec<f64> = u
            .iter()
            .zip(beta)
            .map(|(g, b)| g - events * l2 * b)
            .collect();
        (value, u, info)
    };
    let mut beta = vec![0.0; dim];
    let (mut ll, mut u, mut info) = penalized(&beta);
    let mut history = Vec::new();
    let with_bias = |beta: &[f64]| {
        std::iter::once(0.0)
            .chain(beta.iter().copied())
            .collect::<Vec<_>>()
    };
    for iteration in 1..=30 {
        for a in 0..dim {
            // a vanishing ridge keeps the system solvable when the one-hot levels of a field sum to a
            // constant, which the partial likelihood cannot see
            info[a * dim + a] += events * l2 + 1e-9 * info[a * dim + a].max(1e-9);
        }
        let step = cholesky_solve(&info, &u, dim);
        let mut scale = 1.0;
        let (next, next_derivatives) = loop {
            let nb: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b + scale * s).collect();
            let d = penalized(&nb);
            if d.0 >= ll - 1e-12 || scale < 1e-6 {
                break (nb, d);
            }
            scale /= 2.0;
        };
        let change = (next_derivatives.0 - ll).abs();
        beta = next;
        (ll, u, info) = next_derivatives;
        history.push(epoch(
            iteration,
            &with_bias(&beta),
            objective,
            train,
            val,
            dim,
        ));
        if change <= 1e-9 * ll.abs().max(1.0) {
            break;
        }
    }
    (with_bias(&beta), history)
}
