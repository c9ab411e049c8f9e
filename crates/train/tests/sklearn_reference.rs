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

/// R's lung data as survival_metrics.py split it: (split, time, event, [age, sex, ph.ecog], ph.karno, the
/// reference risk score).
struct LungRow {
    test: bool,
    time: f64,
    event: bool,
    x: [f32; 3],
    karno: f32,
    risk: f64,
}

fn lung() -> Vec<LungRow> {
    include_str!("reference/survival_fixture.csv")
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let num = |i: usize| f[i].parse::<f64>().unwrap();
            LungRow {
                test: f[0] == "test",
                time: num(1),
                event: num(2) == 1.0,
                x: [num(3) as f32, num(4) as f32, num(5) as f32],
                karno: num(6) as f32,
                risk: num(7),
            }
        })
        .collect()
}

fn survival_reference() -> serde_json::Value {
    serde_json::from_str(include_str!("reference/survival_metrics.json")).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(ours: f64, theirs: f64, tol: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= tol * theirs.abs().max(1.0),
        "{what}: trialflow {ours} vs reference {theirs}"
    );
}

/// A training section with every optional key at its default.
fn training() -> trialflow_core::config::TrainingConfig {
    serde_json::from_value(serde_json::json!({
        "seed": 1, "epochs": 10, "batch_size": 64, "learning_rate": 0.01, "patience": 10,
    }))
    .unwrap()
}

fn split_arrays(
    rows: &[LungRow],
    test: bool,
    target: &dyn Fn(&LungRow) -> Vec<f32>,
) -> (Vec<f32>, Vec<f32>) {
    let chosen: Vec<&LungRow> = rows.iter().filter(|r| r.test == test).collect();
    (
        chosen.iter().flat_map(|r| r.x).collect(),
        chosen.iter().flat_map(|r| target(r)).collect(),
    )
}

/// The linear Cox baseline (`hidden: []`, Efron ties) fitted on the train rows has lifelines' coefficients and
/// log partial likelihood; least squares has numpy's coefficients.
#[test]
fn linear_baselines_equal_lifelines_cox_and_least_squares() {
    use trialflow_train::fused::Objective;
    let rows = lung();
    let r = survival_reference();
    let arch = trialflow_core::config::ModelConfig {
        hidden: vec![],
        dropout: vec![],
        activation: trialflow_core::config::Activation::Relu,
    };
    let weights = |objective: Objective, target: &dyn Fn(&LungRow) -> Vec<f32>| {
        let (x, y) = split_arrays(&rows, false, target);
        let n = x.len() / 3;
        let arrays = trialflow_train::Arrays {
            x: &x,
            y: &y,
            rows: n,
        };
        let f = trialflow_train::fit(
            &arch,
            &training(),
            objective,
            arrays,
            arrays,
            3,
            1,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let dense = trialflow_model::DenseCpu::from_network(&f.network).unwrap();
        // the weights by probing: the output at 0 is the bias, at eᵢ the bias plus wᵢ
        let bias = f64::from(dense.outputs(&[0.0, 0.0, 0.0])[0]);
        let mut out = vec![bias];
        for i in 0..3 {
            let mut e = [0.0f32; 3];
            e[i] = 1.0;
            out.push(f64::from(dense.outputs(&e)[0]) - bias);
        }
        (out, f.best_val_loss)
    };
    let survival = |r: &LungRow| vec![r.time as f32, f32::from(u8::from(r.event))];
    let (cox, loss) = weights(Objective::Cox { efron: true }, &survival);
    for (i, want) in floats(&r["cox"]["coef"]).iter().enumerate() {
        close(cox[i + 1], *want, 1e-4, &format!("Cox coefficient {i}"));
    }
    // the loss is −log partial likelihood per event
    let events = r["cox"]["events"].as_f64().unwrap();
    close(
        -loss * events,
        r["cox"]["log_likelihood"].as_f64().unwrap(),
        1e-6,
        "log partial likelihood",
    );
    let karno = |r: &LungRow| vec![r.karno];
    let mean_sd = {
        let (_, y) = split_arrays(&rows, false, &karno);
        let m = y.iter().sum::<f32>() / y.len() as f32;
        let sd = (y.iter().map(|v| (v - m).powi(2)).sum::<f32>() / y.len() as f32).sqrt();
        (m, sd)
    };
    let (ols, _) = weights(
        Objective::Squared {
            mean: mean_sd.0,
            sd: mean_sd.1,
        },
        &karno,
    );
    for (i, want) in floats(&r["least_squares"]["coef"]).iter().enumerate() {
        close(
            ols[i],
            *want,
            1e-4,
            &format!("least-squares coefficient {i}"),
        );
    }
}

/// Every time-to-event metric, the Breslow baseline and the predicted survival, from the reference's own
/// risk scores, equal scikit-survival's.
#[test]
fn survival_metrics_equal_scikit_survival() {
    use trialflow_model::survival::{BaselineHazard, Censoring, Observed};
    let rows = lung();
    let r = survival_reference();
    let horizons = floats(&r["horizons"]);
    let part = |test: bool| -> (Vec<f64>, Vec<bool>, Vec<f32>) {
        let chosen: Vec<&LungRow> = rows.iter().filter(|x| x.test == test).collect();
        (
            chosen.iter().map(|x| x.time).collect(),
            chosen.iter().map(|x| x.event).collect(),
            chosen.iter().map(|x| x.risk as f32).collect(),
        )
    };
    let (train_t, train_e, train_r) = part(false);
    let (test_t, test_e, test_r) = part(true);
    let train = Observed {
        time: &train_t,
        event: &train_e,
    };
    let baseline = BaselineHazard::breslow(train, &train_r);
    for (h, want) in horizons
        .iter()
        .zip(floats(&r["baseline_cumulative_hazard"]))
    {
        close(baseline.at(*h), want, 1e-6, &format!("H₀({h})"));
    }
    for (i, want) in r["test_survival_first_rows"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        for (got, want) in baseline
            .survival(test_r[i], &horizons)
            .iter()
            .zip(floats(want))
        {
            close(*got, want, 1e-6, &format!("S(t) of test row {i}"));
        }
    }
    let censoring = Censoring::fit(train);
    let targets: Vec<f32> = test_t
        .iter()
        .zip(&test_e)
        .flat_map(|(t, e)| [*t as f32, f32::from(u8::from(*e))])
        .collect();
    let m = trialflow_train::metrics::evaluate_model(
        trialflow_train::metrics::Scoring::TimeToEvent {
            censoring: &censoring,
            baseline: &baseline,
            horizons: &horizons,
        },
        &targets,
        &test_r,
        &Evaluation {
            threshold: 0.5,
            resamples: 200,
            seed: 3,
        },
    );
    let trialflow_core::contracts::ModelMetrics::TimeToEvent(s) = &m else {
        panic!("not survival metrics: {m:?}");
    };
    let want = &r["survival"];
    // the risk scores went through f32; the metrics' own arithmetic is f64
    for name in [
        "c_index_harrell",
        "c_index_uno",
        "mean_auc",
        "integrated_brier",
    ] {
        close(
            m.get(name).flatten().unwrap(),
            want[name].as_f64().unwrap(),
            1e-6,
            name,
        );
    }
    for (k, w) in floats(&want["auc"]).iter().enumerate() {
        close(
            s.auc[k].unwrap(),
            *w,
            1e-6,
            &format!("AUC at {}", horizons[k]),
        );
    }
    for (k, w) in floats(&want["brier"]).iter().enumerate() {
        close(
            s.brier[k].unwrap(),
            *w,
            1e-6,
            &format!("Brier at {}", horizons[k]),
        );
    }
    let (lo, hi) = (
        m.get("c_index_harrell_ci_lower").flatten().unwrap(),
        m.get("c_index_harrell_ci_upper").flatten().unwrap(),
    );
    assert!(
        lo < s.c_index_harrell.unwrap() && s.c_index_harrell.unwrap() < hi,
        "{lo} {hi}"
    );
    assert_eq!(
        (s.n, s.events),
        (test_t.len(), test_e.iter().filter(|e| **e).count())
    );
    assert!(!s.calibration.is_empty());
}

/// The continuous metrics of numpy's least-squares predictions equal scikit-learn's.
#[test]
fn continuous_metrics_equal_scikit_learn() {
    let rows = lung();
    let r = survival_reference();
    let coef = floats(&r["least_squares"]["coef"]);
    let test: Vec<&LungRow> = rows.iter().filter(|x| x.test).collect();
    let y: Vec<f32> = test.iter().map(|x| x.karno).collect();
    let p: Vec<f32> = test
        .iter()
        .map(|x| {
            (coef[0]
                + x.x
                    .iter()
                    .zip(&coef[1..])
                    .map(|(a, b)| f64::from(*a) * b)
                    .sum::<f64>()) as f32
        })
        .collect();
    let m = trialflow_train::metrics::evaluate_model(
        trialflow_train::metrics::Scoring::Continuous,
        &y,
        &p,
        &Evaluation {
            threshold: 0.5,
            resamples: 0,
            seed: 0,
        },
    );
    for name in [
        "rmse",
        "mae",
        "r2",
        "calibration_slope",
        "calibration_intercept",
    ] {
        close(
            m.get(name).flatten().unwrap(),
            r["continuous"][name].as_f64().unwrap(),
            1e-5,
            name,
        );
    }
}
