//! The logistic baseline fitted to its optimum by Newton–Raphson, with a Cholesky solve.

use crate::{Arrays, Epoch, metrics};

/// The logistic baseline (`hidden: []`) is fitted to its optimum, as a statistician (or scikit-learn's
/// `LogisticRegression(penalty=None)`) would: Newton–Raphson on the mean (positive-weighted) cross-entropy plus
/// `weight_decay/2·‖w‖²` (the intercept unpenalized), with step halving. Returns `[bias, w…]` and one history
/// entry per iteration. Deterministic; early stopping does not apply.
pub(crate) fn fit_logistic(
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
pub(crate) fn cholesky_solve(a: &[f64], b: &[f64], k: usize) -> Vec<f64> {
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
