//! trialflow's test metrics against scikit-learn on the same predictions. The reference numbers and the script
//! that made them are in tests/reference/ (sklearn_metrics.py); re-run it after changing the fixture.

#![allow(clippy::unwrap_used)]

use trialflow_train::metrics::{Evaluation, SCALAR_METRICS};

fn fixture() -> (Vec<f32>, Vec<f32>) {
    let text = include_str!("reference/test_predictions.csv");
    let (mut y, mut p) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let (a, b) = line.split_once(',').unwrap();
        y.push(a.parse::<f32>().unwrap());
        p.push(b.parse::<f32>().unwrap());
    }
    (y, p)
}

fn reference() -> serde_json::Value {
    serde_json::from_str(include_str!("reference/sklearn_metrics.json")).unwrap()
}

#[test]
fn point_metrics_and_reliability_curve_equal_scikit_learn() {
    let (y, p) = fixture();
    let r = reference();
    let m = trialflow_train::metrics::evaluate(
        &y,
        &p,
        &Evaluation {
            threshold: r["threshold"].as_f64().unwrap(),
            resamples: 0,
            seed: 0,
        },
    );
    assert_eq!(m.n as u64, r["n"].as_u64().unwrap());
    assert_eq!(m.positives as u64, r["positives"].as_u64().unwrap());
    for name in SCALAR_METRICS {
        let ours = m.get(name).flatten().unwrap();
        let theirs = r["metrics"][name].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() < 1e-9,
            "{name}: trialflow {ours}, scikit-learn {theirs}"
        );
    }
    let bins = r["reliability"].as_array().unwrap();
    assert_eq!(m.calibration.len(), bins.len());
    for (ours, theirs) in m.calibration.iter().zip(bins) {
        assert_eq!(ours.n as u64, theirs["n"].as_u64().unwrap());
        assert!((ours.mean_predicted - theirs["mean_predicted"].as_f64().unwrap()).abs() < 1e-9);
        assert!((ours.observed - theirs["observed"].as_f64().unwrap()).abs() < 1e-12);
    }
}

#[test]
fn bootstrap_intervals_agree_with_a_numpy_bootstrap() {
    // Different generators: the bounds agree within Monte Carlo error. A 2.5% quantile from 2,000 resamples has a
    // standard error of about 1.5% of a 95% interval's width (the reference's 20,000 add 0.5%), so 8% is five
    // standard errors; an 80% interval (bounds 17% of the width inside) or a 90% one (8.5%) fails.
    let (y, p) = fixture();
    let r = reference();
    let m = trialflow_train::metrics::evaluate(
        &y,
        &p,
        &Evaluation {
            threshold: 0.5,
            resamples: 2000,
            seed: 42,
        },
    );
    for name in SCALAR_METRICS {
        let [lo, hi] = m.ci[name];
        let theirs = &r["ci95"][name];
        let (rlo, rhi) = (theirs[0].as_f64().unwrap(), theirs[1].as_f64().unwrap());
        let tol = 0.08 * (rhi - rlo);
        assert!(
            (lo - rlo).abs() < tol && (hi - rhi).abs() < tol,
            "{name}: trialflow [{lo:.4}, {hi:.4}], numpy [{rlo:.4}, {rhi:.4}]"
        );
        assert!(
            ((hi - lo) / (rhi - rlo) - 1.0).abs() < 0.1,
            "{name}: interval width {:.4} vs numpy's {:.4}",
            hi - lo,
            rhi - rlo
        );
    }
}
