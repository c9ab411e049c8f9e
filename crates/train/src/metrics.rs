//! Test-split metrics. ROC AUC is the Mann–Whitney statistic with ties counted one half, as scikit-learn's
//! `roc_auc_score` computes it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub positives: usize,
    pub roc_auc: f64,
    pub brier: f64,
    pub log_loss: f64,
    /// At threshold 0.5.
    pub accuracy: f64,
}

impl Metrics {
    pub fn compute(y: &[f32], p: &[f32]) -> Self {
        let n = y.len();
        let positives = y.iter().filter(|v| **v > 0.5).count();
        let (mut brier, mut ll, mut correct) = (0.0, 0.0, 0usize);
        for (&yi, &pi) in y.iter().zip(p) {
            let (yi, pi) = (f64::from(yi), f64::from(pi));
            brier += (pi - yi).powi(2);
            let pc = pi.clamp(1e-15, 1.0 - 1e-15);
            ll -= yi * pc.ln() + (1.0 - yi) * (1.0 - pc).ln();
            correct += usize::from((pi >= 0.5) == (yi > 0.5));
        }
        let d = n.max(1) as f64;
        Self {
            n,
            positives,
            roc_auc: roc_auc(y, p),
            brier: brier / d,
            log_loss: ll / d,
            accuracy: correct as f64 / d,
        }
    }
}

/// ROC AUC by ranks (average ranks for ties). NaN when only one class is present.
pub fn roc_auc(y: &[f32], p: &[f32]) -> f64 {
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut ranks = vec![0.0f64; y.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && p[idx[j + 1]] == p[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = avg;
        }
        i = j + 1;
    }
    let n_pos = y.iter().filter(|v| **v > 0.5).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let sum_pos: f64 = y
        .iter()
        .zip(&ranks)
        .filter(|(v, _)| **v > 0.5)
        .map(|(_, r)| r)
        .sum();
    (sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values_with_ties() {
        // pairs (pos, neg): (0.8>0.1) (0.8>0.4) (0.4=0.4 → ½) (0.4>0.1) → 3.5 / 4
        let y = [1.0, 0.0, 1.0, 0.0];
        let p = [0.8, 0.4, 0.4, 0.1];
        assert!((roc_auc(&y, &p) - 0.875).abs() < 1e-12);
        assert!(roc_auc(&[1.0, 1.0], &[0.1, 0.2]).is_nan());
        let m = Metrics::compute(&y, &p);
        assert_eq!(m.positives, 2);
        assert!((m.accuracy - 0.75).abs() < 1e-12);
    }
}
