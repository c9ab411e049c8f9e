//! Test-split metrics. ROC AUC is the Mann–Whitney statistic with ties counted one half, as scikit-learn's
//! `roc_auc_score` computes it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub positives: usize,
    /// `None` when the test split holds one class only (AUC undefined).
    pub roc_auc: Option<f64>,
    pub brier: f64,
    pub log_loss: f64,
    /// At threshold 0.5.
    pub accuracy: f64,
    /// ROC curve points (false positive rate, true positive rate), at most ~100.
    #[serde(default)]
    pub roc: Vec<(f64, f64)>,
    /// Reliability curve: ten equal-width bins of predicted probability.
    #[serde(default)]
    pub calibration: Vec<CalibrationBin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub n: usize,
    pub mean_predicted: f64,
    pub observed: f64,
}

/// ROC points at every distinct threshold, thinned to about 100 for plotting.
pub fn roc_curve(y: &[f32], p: &[f32]) -> Vec<(f64, f64)> {
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let pos = y.iter().filter(|v| **v > 0.5).count() as f64;
    let neg = y.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return Vec::new();
    }
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in idx.iter().enumerate() {
        if y[i] > 0.5 {
            tp += 1.0
        } else {
            fp += 1.0
        }
        let last_of_tie = idx.get(k + 1).is_none_or(|&j| p[j] != p[i]);
        if last_of_tie {
            pts.push((fp / neg, tp / pos));
        }
    }
    let step = pts.len().div_ceil(100).max(1);
    let mut thinned: Vec<(f64, f64)> = pts.iter().step_by(step).copied().collect();
    if thinned.last() != pts.last() {
        thinned.extend(pts.last().copied());
    }
    thinned
}

pub fn calibration_bins(y: &[f32], p: &[f32]) -> Vec<CalibrationBin> {
    (0..10)
        .filter_map(|b| {
            let (lo, hi) = (b as f64 / 10.0, (b + 1) as f64 / 10.0);
            let members: Vec<usize> = (0..p.len())
                .filter(|&i| {
                    let v = f64::from(p[i]);
                    v >= lo && (v < hi || (b == 9 && v <= hi))
                })
                .collect();
            if members.is_empty() {
                return None;
            }
            let n = members.len();
            let mean_predicted = members.iter().map(|&i| f64::from(p[i])).sum::<f64>() / n as f64;
            let observed = members.iter().map(|&i| f64::from(y[i])).sum::<f64>() / n as f64;
            Some(CalibrationBin {
                lower: lo,
                upper: hi,
                n,
                mean_predicted,
                observed,
            })
        })
        .collect()
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
            roc_auc: Some(roc_auc(y, p)).filter(|a| a.is_finite()),
            brier: brier / d,
            log_loss: ll / d,
            accuracy: correct as f64 / d,
            roc: roc_curve(y, p),
            calibration: calibration_bins(y, p),
        }
    }
}

/// Metrics of one level of a slice column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slice {
    pub column: String,
    pub level: String,
    pub n: usize,
    pub positives: usize,
    pub roc_auc: Option<f64>,
    pub brier: f64,
}

/// Per-level metrics for every slice column; rows with a missing level are left out.
pub fn slices(columns: &[(String, Vec<Option<String>>)], y: &[f32], p: &[f32]) -> Vec<Slice> {
    let mut out = Vec::new();
    for (col, values) in columns {
        let mut levels: Vec<&String> = values.iter().flatten().collect();
        levels.sort();
        levels.dedup();
        for level in levels {
            let idx: Vec<usize> = (0..values.len())
                .filter(|&i| values[i].as_ref() == Some(level))
                .collect();
            let ys: Vec<f32> = idx.iter().map(|&i| y[i]).collect();
            let ps: Vec<f32> = idx.iter().map(|&i| p[i]).collect();
            let m = Metrics::compute(&ys, &ps);
            out.push(Slice {
                column: col.clone(),
                level: level.clone(),
                n: m.n,
                positives: m.positives,
                roc_auc: m.roc_auc,
                brier: m.brier,
            });
        }
    }
    out
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
        assert_eq!(m.roc, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        let bins: Vec<(usize, f64)> = m.calibration.iter().map(|b| (b.n, b.observed)).collect();
        assert_eq!(bins, vec![(1, 0.0), (2, 0.5), (1, 1.0)]);
        let arm = vec![
            Some("a".to_string()),
            Some("a".into()),
            Some("b".into()),
            None,
        ];
        let s = slices(&[("arm".into(), arm)], &y, &p);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].level.as_str(), s[0].n, s[0].roc_auc),
            ("a", 2, Some(1.0))
        );
        assert_eq!(
            (s[1].level.as_str(), s[1].n, s[1].roc_auc),
            ("b", 1, None),
            "one class: AUC undefined"
        );
    }
}
