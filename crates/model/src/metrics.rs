//! Test-split metrics, each with a seeded bootstrap 95% interval. Definitions follow scikit-learn: ROC AUC is
//! the Mann–Whitney statistic with ties counted one half (`roc_auc_score`), PR AUC is average precision
//! (`average_precision_score`), the reliability curve uses ten equal-width bins (`calibration_curve`), and the
//! expected calibration error weighs each bin's |mean predicted − observed| by its share of rows.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
pub use trialflow_core::contracts::{
    CalibrationBin, Metrics, ModelMetrics, RegressionMetrics, SCALAR_METRICS, Slice,
    SurvivalMetrics,
};

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

/// How the metrics are computed: the decision threshold and the bootstrap.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation {
    pub threshold: f64,
    pub resamples: usize,
    pub seed: u64,
}

impl Default for Evaluation {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            resamples: 1000,
            seed: 0,
        }
    }
}

/// The scalar metrics of one sample, in `SCALAR_METRICS` order; NaN where undefined.
fn scalars(y: &[f32], p: &[f32], threshold: f64) -> [f64; 8] {
    let n = y.len();
    let (mut brier, mut ll) = (0.0, 0.0);
    let (mut tp, mut tn, mut pos) = (0usize, 0usize, 0usize);
    for (&yi, &pi) in y.iter().zip(p) {
        let (yv, pv) = (f64::from(yi), f64::from(pi));
        brier += (pv - yv).powi(2);
        let pc = pv.clamp(1e-15, 1.0 - 1e-15);
        ll -= yv * pc.ln() + (1.0 - yv) * (1.0 - pc).ln();
        let (actual, predicted) = (yi > 0.5, pv >= threshold);
        pos += usize::from(actual);
        tp += usize::from(actual && predicted);
        tn += usize::from(!actual && !predicted);
    }
    let ratio = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    let d = n.max(1) as f64;
    [
        roc_auc(y, p),
        average_precision(y, p),
        brier / d,
        ll / d,
        ratio(tp + tn, n),
        ratio(tp, pos),
        ratio(tn, n - pos),
        ece(&calibration_bins(y, p), n),
    ]
}

fn defined(v: f64) -> Option<f64> {
    Some(v).filter(|v| v.is_finite())
}

/// Metrics at threshold 0.5 without intervals.
pub fn compute(y: &[f32], p: &[f32]) -> Metrics {
    evaluate(
        y,
        p,
        &Evaluation {
            resamples: 0,
            ..Default::default()
        },
    )
}

pub fn evaluate(y: &[f32], p: &[f32], how: &Evaluation) -> Metrics {
    let n = y.len();
    let s = scalars(y, p, how.threshold);
    Metrics {
        n,
        positives: y.iter().filter(|v| **v > 0.5).count(),
        roc_auc: defined(s[0]),
        pr_auc: defined(s[1]),
        brier: s[2],
        log_loss: s[3],
        threshold: how.threshold,
        accuracy: if n == 0 { 0.0 } else { s[4] },
        sensitivity: defined(s[5]),
        specificity: defined(s[6]),
        ece: s[7],
        ci: bootstrap(y, p, how),
        bootstrap: how.resamples,
        roc: roc_curve(y, p),
        calibration: calibration_bins(y, p),
    }
}

/// Percentile intervals from `how.resamples` resamples drawn with replacement; a resample in which a metric
/// is undefined (e.g. one class only) does not count for that metric.
fn bootstrap(y: &[f32], p: &[f32], how: &Evaluation) -> BTreeMap<String, [f64; 2]> {
    let (mut ys, mut ps) = (vec![0f32; y.len()], vec![0f32; y.len()]);
    resampled(y.len(), how, &SCALAR_METRICS, |idx| {
        for (k, &i) in idx.iter().enumerate() {
            ys[k] = y[i];
            ps[k] = p[i];
        }
        scalars(&ys, &ps, how.threshold).to_vec()
    })
}

/// numpy's default (linear) percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Σ over bins of (rows in bin / rows) · |mean predicted − observed rate|.
fn ece(bins: &[CalibrationBin], n: usize) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    bins.iter()
        .map(|b| b.n as f64 / n as f64 * (b.mean_predicted - b.observed).abs())
        .sum()
}

/// Average precision: Σ (Rₖ − Rₖ₋₁)·Pₖ over the distinct thresholds, highest first. NaN without positives.
pub fn average_precision(y: &[f32], p: &[f32]) -> f64 {
    let pos = y.iter().filter(|v| **v > 0.5).count() as f64;
    if pos == 0.0 {
        return f64::NAN;
    }
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    for (k, &i) in idx.iter().enumerate() {
        if y[i] > 0.5 {
            tp += 1.0
        } else {
            fp += 1.0
        }
        if idx.get(k + 1).is_none_or(|&j| p[j] != p[i]) {
            let recall = tp / pos;
            ap += (recall - last_recall) * tp / (tp + fp);
            last_recall = recall;
        }
    }
    ap
}

/// Per-level binary metrics for every slice column; rows with a missing level are left out.
pub fn slices(
    columns: &[(String, Vec<Option<String>>)],
    y: &[f32],
    p: &[f32],
    how: &Evaluation,
) -> Vec<Slice> {
    slices_model(Scoring::Binary, columns, y, p, how)
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
        let m = compute(&y, &p);
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
        let s = slices(&[("arm".into(), arm)], &y, &p, &Evaluation::default());
        assert_eq!(s.len(), 2);
        assert_eq!(
            (
                s[0].level.as_str(),
                s[0].metrics.n(),
                s[0].metrics.get("roc_auc").flatten()
            ),
            ("a", 2, Some(1.0))
        );
        assert_eq!(
            (
                s[1].level.as_str(),
                s[1].metrics.n(),
                s[1].metrics.get("roc_auc").flatten()
            ),
            ("b", 1, None),
            "one class: AUC undefined"
        );
        // 0.8 (positive): recall ½ at precision 1; the tie at 0.4 adds the other positive and a negative: recall 1 at ⅔
        assert!((average_precision(&y, &p) - (0.5 * 1.0 + 0.5 * (2.0 / 3.0))).abs() < 1e-12);
        assert_eq!(m.get("sensitivity"), Some(Some(0.5)));
        assert_eq!(m.get("specificity"), Some(Some(1.0)));
        assert_eq!(m.get("no_such_metric"), None);
        assert_eq!(
            m.get("roc_auc_ci_lower"),
            Some(None),
            "no bootstrap asked for"
        );
    }

    #[test]
    fn bootstrap_intervals_are_seeded_and_bracket_the_estimate() {
        let n = 400;
        let y: Vec<f32> = (0..n).map(|i| f32::from(i % 3 == 0)).collect();
        let p: Vec<f32> = (0..n)
            .map(|i| 0.6 * (i * 37 % 100) as f32 / 100.0 + 0.4 * y[i])
            .collect();
        let how = Evaluation {
            seed: 7,
            ..Default::default()
        };
        let a = evaluate(&y, &p, &how);
        let b = evaluate(&y, &p, &how);
        assert_eq!(a.ci, b.ci, "same seed, same intervals");
        for name in SCALAR_METRICS {
            let v = a.get(name).flatten().expect(name);
            let [lo, hi] = a.ci[name];
            assert!(lo <= v && v <= hi && lo < hi, "{name}: {lo} {v} {hi}");
        }
        let other = evaluate(&y, &p, &Evaluation { seed: 8, ..how });
        assert_ne!(a.ci, other.ci);
    }
}

/// How a model's predictions become metrics: by its endpoint, a time-to-event one with the train split's
/// censoring distribution, its baseline hazard and the evaluation times.
#[derive(Debug, Clone, Copy)]
pub enum Scoring<'a> {
    Binary,
    Continuous,
    TimeToEvent {
        censoring: &'a crate::survival::Censoring,
        baseline: &'a crate::survival::BaselineHazard,
        horizons: &'a [f64],
    },
}

/// Test metrics of any endpoint: `targets` as a split holds them (interleaved time and event for time to
/// event), `predicted` as [`crate::DenseCpu::predict`] gives them.
pub fn evaluate_model(
    scoring: Scoring<'_>,
    targets: &[f32],
    predicted: &[f32],
    how: &Evaluation,
) -> ModelMetrics {
    use trialflow_core::contracts::{REGRESSION_METRICS, SURVIVAL_METRICS};
    match scoring {
        Scoring::Binary => ModelMetrics::Binary(evaluate(targets, predicted, how)),
        Scoring::Continuous => {
            let s = crate::continuous::scalars(targets, predicted);
            let ci = resampled(targets.len(), how, &REGRESSION_METRICS, |idx| {
                let y: Vec<f32> = idx.iter().map(|&i| targets[i]).collect();
                let p: Vec<f32> = idx.iter().map(|&i| predicted[i]).collect();
                crate::continuous::scalars(&y, &p).to_vec()
            });
            ModelMetrics::Continuous(RegressionMetrics {
                n: targets.len(),
                rmse: s[0],
                mae: s[1],
                r2: defined(s[2]),
                calibration_slope: defined(s[3]),
                calibration_intercept: defined(s[4]),
                ci,
                bootstrap: how.resamples,
            })
        }
        Scoring::TimeToEvent {
            censoring,
            baseline,
            horizons,
        } => {
            let (time, event) = crate::survival::observed(targets);
            let full = survival_scalars(
                &time, &event, predicted, censoring, baseline, horizons, true,
            );
            let ci = resampled(time.len(), how, &SURVIVAL_METRICS, |idx| {
                let t: Vec<f64> = idx.iter().map(|&i| time[i]).collect();
                let e: Vec<bool> = idx.iter().map(|&i| event[i]).collect();
                let r: Vec<f32> = idx.iter().map(|&i| predicted[i]).collect();
                let m = survival_scalars(&t, &e, &r, censoring, baseline, horizons, false);
                SURVIVAL_METRICS
                    .iter()
                    .map(|name| m.get(name).flatten().unwrap_or(f64::NAN))
                    .collect()
            });
            ModelMetrics::TimeToEvent(SurvivalMetrics {
                ci,
                bootstrap: how.resamples,
                ..full
            })
        }
    }
}

/// Every survival metric of one sample, without intervals; the calibration groups only `with_calibration`
/// (not in bootstrap resamples, which use the scalars alone).
fn survival_scalars(
    time: &[f64],
    event: &[bool],
    risk: &[f32],
    censoring: &crate::survival::Censoring,
    baseline: &crate::survival::BaselineHazard,
    horizons: &[f64],
    with_calibration: bool,
) -> SurvivalMetrics {
    use crate::survival as s;
    let obs = s::Observed { time, event };
    let tau = horizons.last().copied().unwrap_or(f64::INFINITY);
    let (auc, mean_auc) = s::cumulative_dynamic_auc(obs, risk, censoring, horizons);
    let curves: Vec<Vec<f64>> = risk
        .iter()
        .map(|&r| baseline.survival(r, horizons))
        .collect();
    let brier = s::brier_scores(obs, &curves, censoring, horizons);
    let at_last: Vec<f64> = curves.iter().filter_map(|c| c.last().copied()).collect();
    SurvivalMetrics {
        n: time.len(),
        events: event.iter().filter(|e| **e).count(),
        c_index_harrell: s::harrell_c(obs, risk),
        c_index_uno: s::uno_c(obs, risk, censoring, tau),
        horizons: horizons.to_vec(),
        auc,
        mean_auc,
        integrated_brier: s::integrated_brier(&brier, horizons),
        brier,
        calibration: if with_calibration && at_last.len() == time.len() {
            s::calibration_at(obs, &at_last, tau)
        } else {
            Vec::new()
        },
        ci: BTreeMap::new(),
        bootstrap: 0,
    }
}

/// Percentile intervals of `names` over `how.resamples` resamples of row indices drawn with replacement;
/// `scalars` gives each resample's values in `names` order (NaN: undefined there, not counted).
fn resampled(
    n: usize,
    how: &Evaluation,
    names: &[&str],
    mut scalars: impl FnMut(&[usize]) -> Vec<f64>,
) -> BTreeMap<String, [f64; 2]> {
    if how.resamples == 0 || n == 0 {
        return BTreeMap::new();
    }
    let mut rng = StdRng::seed_from_u64(how.seed);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(how.resamples); names.len()];
    let mut idx = vec![0usize; n];
    for _ in 0..how.resamples {
        for slot in idx.iter_mut() {
            *slot = rng.random_range(0..n);
        }
        for (d, v) in draws.iter_mut().zip(scalars(&idx)) {
            if v.is_finite() {
                d.push(v);
            }
        }
    }
    names
        .iter()
        .zip(draws)
        .filter(|(_, d)| !d.is_empty())
        .map(|(name, mut d)| {
            d.sort_by(f64::total_cmp);
            (
                name.to_string(),
                [percentile(&d, 2.5), percentile(&d, 97.5)],
            )
        })
        .collect()
}

/// Per-level metrics of any endpoint for every slice column; rows with a missing level are left out.
pub fn slices_model(
    scoring: Scoring<'_>,
    columns: &[(String, Vec<Option<String>>)],
    targets: &[f32],
    predicted: &[f32],
    how: &Evaluation,
) -> Vec<Slice> {
    let width = match scoring {
        Scoring::TimeToEvent { .. } => 2,
        _ => 1,
    };
    let mut out = Vec::new();
    for (col, values) in columns {
        let mut levels: Vec<&String> = values.iter().flatten().collect();
        levels.sort();
        levels.dedup();
        for level in levels {
            let idx: Vec<usize> = (0..values.len())
                .filter(|&i| values[i].as_ref() == Some(level))
                .collect();
            let ys: Vec<f32> = idx
                .iter()
                .flat_map(|&i| targets[i * width..(i + 1) * width].iter().copied())
                .collect();
            let ps: Vec<f32> = idx.iter().map(|&i| predicted[i]).collect();
            let mut m = evaluate_model(scoring, &ys, &ps, how);
            match &mut m {
                ModelMetrics::Binary(b) => {
                    b.roc.clear();
                    b.calibration.clear();
                }
                ModelMetrics::TimeToEvent(s) => s.calibration.clear(),
                ModelMetrics::Continuous(_) => {}
            }
            out.push(Slice {
                column: col.clone(),
                level: level.clone(),
                metrics: m,
            });
        }
    }
    out
}
