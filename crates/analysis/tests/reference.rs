//! trialflow's statistics against lifelines / scipy / statsmodels on the colon trial (death records), and its
//! cluster-robust standard errors against R (tests/reference/clustered.R).
//! The reference numbers come from tests/reference/make_reference.py, committed with their versions.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;

use serde_json::Value;
use trialflow_analysis::stats::{self, Ties, TwoByTwo};

struct Colon {
    rx: Vec<String>,
    time: Vec<f64>,
    status: Vec<bool>,
}

fn colon() -> Colon {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/examples/colon.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let idx = |c: &str| header.iter().position(|h| *h == c).unwrap();
    let (irx, itime, istatus, ietype) = (idx("rx"), idx("time"), idx("status"), idx("etype"));
    let mut c = Colon {
        rx: vec![],
        time: vec![],
        status: vec![],
    };
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        if f[ietype] == "2" {
            c.rx.push(f[irx].to_string());
            c.time.push(f[itime].parse().unwrap());
            c.status.push(f[istatus] == "1");
        }
    }
    c
}

fn reference() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/colon.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1e-12);
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} (relative tolerance {rel})"
    );
}

fn groups(c: &Colon) -> BTreeMap<String, Vec<(f64, bool)>> {
    let mut g: BTreeMap<String, Vec<(f64, bool)>> = BTreeMap::new();
    for i in 0..c.rx.len() {
        g.entry(c.rx[i].clone())
            .or_default()
            .push((c.time[i], c.status[i]));
    }
    g
}

#[test]
fn kaplan_meier_matches_lifelines() {
    let c = colon();
    let r = reference();
    for (arm, obs) in groups(&c) {
        let km = stats::kaplan_meier(&arm, &obs);
        let want = &r["km"][&arm];
        assert_eq!(km.n, want["n"].as_u64().unwrap());
        assert_eq!(km.events, want["events"].as_u64().unwrap());
        assert_eq!(km.median, want["median"].as_f64(), "{arm} median");
        let (lo, hi) = km.median_ci();
        assert_eq!(
            (lo, hi),
            (want["median_ci"][0].as_f64(), want["median_ci"][1].as_f64()),
            "{arm} median CI"
        );
        for (t, s) in want["survival_at"].as_object().unwrap() {
            close(
                km.survival_at(t.parse().unwrap()),
                s.as_f64().unwrap(),
                1e-9,
                &format!("{arm} S({t})"),
            );
        }
        let p = km
            .points
            .iter()
            .take_while(|p| p.time <= 1825.0)
            .last()
            .unwrap();
        close(
            p.ci_low,
            want["ci_at_1825"][0].as_f64().unwrap(),
            1e-6,
            &format!("{arm} lower CI at 1825"),
        );
        close(
            p.ci_high,
            want["ci_at_1825"][1].as_f64().unwrap(),
            1e-6,
            &format!("{arm} upper CI at 1825"),
        );
    }
}

#[test]
fn logrank_matches_lifelines() {
    let c = colon();
    let r = &reference()["logrank"];
    let (chi, df, p) = stats::logrank(&groups(&c).into_values().collect::<Vec<_>>());
    close(
        chi,
        r["chi_square"].as_f64().unwrap(),
        1e-9,
        "log-rank chi-square",
    );
    assert_eq!(df as u64, r["df"].as_u64().unwrap());
    close(p, r["p"].as_f64().unwrap(), 1e-8, "log-rank p");
}

#[test]
fn cox_efron_and_breslow_match_lifelines_and_statsmodels() {
    let c = colon();
    let x: Vec<Vec<f64>> =
        c.rx.iter()
            .map(|a| {
                vec![
                    f64::from(u8::from(a == "Lev")),
                    f64::from(u8::from(a == "Lev+5FU")),
                ]
            })
            .collect();
    for (ties, key) in [(Ties::Efron, "efron"), (Ties::Breslow, "breslow")] {
        let fit = stats::cox_ph(
            vec!["Lev".into(), "Lev+5FU".into()],
            &c.time,
            &c.status,
            &x,
            ties,
            50,
        )
        .unwrap();
        assert!(fit.converged, "{key}: {} iterations", fit.iterations);
        let want = &reference()["cox_rx"][key];
        for j in 0..2 {
            close(
                fit.coef[j],
                want["coef"][j].as_f64().unwrap(),
                1e-6,
                &format!("{key} coef {j}"),
            );
            close(
                fit.se[j],
                want["se"][j].as_f64().unwrap(),
                1e-6,
                &format!("{key} se {j}"),
            );
        }
        close(
            fit.log_likelihood,
            want["log_likelihood"].as_f64().unwrap(),
            1e-8,
            &format!("{key} log-likelihood"),
        );
    }
}

#[test]
fn chi_square_and_fisher_match_scipy() {
    let r = &reference()["binary_lev5fu_vs_obs"];
    let t = &r["table"];
    let n = |i: usize, j: usize| t[i][j].as_u64().unwrap();
    let tab = TwoByTwo {
        a: n(0, 0),
        b: n(0, 1),
        c: n(1, 0),
        d: n(1, 1),
    };
    let (chi, p) = tab.chi_square();
    close(chi, r["chi_square"].as_f64().unwrap(), 1e-9, "chi-square");
    close(p, r["chi_p"].as_f64().unwrap(), 1e-8, "chi-square p");
    close(
        stats::fisher_exact(&tab),
        r["fisher_p"].as_f64().unwrap(),
        1e-6,
        "Fisher p",
    );
}

fn colon_full() -> (Colon, Vec<BTreeMap<String, f64>>) {
    // the other columns of the death records, by name
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/examples/colon.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let mut rows = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let row: BTreeMap<String, f64> = header
            .iter()
            .zip(&f)
            .filter_map(|(h, v)| v.parse::<f64>().ok().map(|x| (h.clone(), x)))
            .collect();
        if row["etype"] == 2.0 {
            rows.push(row);
        }
    }
    (colon(), rows)
}

fn rx_dummies(c: &Colon) -> Vec<Vec<f64>> {
    c.rx.iter()
        .map(|a| {
            vec![
                f64::from(u8::from(a == "Lev")),
                f64::from(u8::from(a == "Lev+5FU")),
            ]
        })
        .collect()
}

#[test]
fn ph_test_matches_lifelines_km_transform() {
    let c = colon();
    let x = rx_dummies(&c);
    let fit = stats::cox_ph(
        vec!["Lev".into(), "Lev+5FU".into()],
        &c.time,
        &c.status,
        &x,
        Ties::Efron,
        50,
    )
    .unwrap();
    let ph = stats::ph_test(&fit, &c.time, &c.status, &x).unwrap();
    let r = &reference()["ph_test_km"];
    for j in 0..2 {
        close(
            ph[j].0,
            r["chi_square"][j].as_f64().unwrap(),
            1e-6,
            &format!("PH chi-square {j}"),
        );
        close(
            ph[j].1,
            r["p"][j].as_f64().unwrap(),
            1e-6,
            &format!("PH p {j}"),
        );
    }
}

#[test]
fn adjusted_cox_and_subgroup_interactions_match() {
    let (c, rows) = colon_full();
    let r = reference();
    let adj = &r["cox_adjusted"];
    let names: Vec<String> = adj["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let x: Vec<Vec<f64>> = rx_dummies(&c)
        .into_iter()
        .zip(&rows)
        .map(|(mut d, row)| {
            d.extend(["age", "sex", "obstruct", "node4"].iter().map(|k| row[*k]));
            d
        })
        .collect();
    let fit = stats::cox_ph(names, &c.time, &c.status, &x, Ties::Efron, 50).unwrap();
    for j in 0..6 {
        close(
            fit.coef[j],
            adj["coef"][j].as_f64().unwrap(),
            1e-6,
            &format!("adjusted coef {j}"),
        );
        close(
            fit.se[j],
            adj["se"][j].as_f64().unwrap(),
            1e-6,
            &format!("adjusted se {j}"),
        );
    }

    // Cox with rx x sex interaction: Wald test of the two interaction terms
    let xi: Vec<Vec<f64>> = rx_dummies(&c)
        .into_iter()
        .zip(&rows)
        .map(|(d, row)| vec![d[0], d[1], row["sex"], d[0] * row["sex"], d[1] * row["sex"]])
        .collect();
    let names: Vec<String> = ["Lev", "L5", "sex", "Lev_sex", "L5_sex"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let fit = stats::cox_ph(names, &c.time, &c.status, &xi, Ties::Efron, 50).unwrap();
    let cov = stats::cox_covariance(&fit, &c.time, &c.status, &xi).unwrap();
    let (w, df, p) = stats::wald(&fit.coef, &cov, &[3, 4]).unwrap();
    let want = &r["cox_subgroup_sex"];
    assert_eq!(df, 2);
    close(
        w,
        want["interaction_wald"].as_f64().unwrap(),
        1e-6,
        "Cox interaction Wald",
    );
    close(
        p,
        want["interaction_p"].as_f64().unwrap(),
        1e-6,
        "Cox interaction p",
    );

    // logistic regression death ~ rx * sex
    let xl: Vec<Vec<f64>> = xi.iter().map(|v| [vec![1.0], v.clone()].concat()).collect();
    let y: Vec<f64> = c.status.iter().map(|s| f64::from(u8::from(*s))).collect();
    let fit = stats::logistic(&xl, &y, 50).unwrap();
    assert!(fit.converged);
    let want = &r["logistic_rx_sex"];
    for j in 0..6 {
        close(
            fit.coef[j],
            want["coef"][j].as_f64().unwrap(),
            1e-6,
            &format!("logit coef {j}"),
        );
        close(
            fit.covariance[j][j].sqrt(),
            want["se"][j].as_f64().unwrap(),
            1e-6,
            &format!("logit se {j}"),
        );
    }
    let (w, _, p) = stats::wald(&fit.coef, &fit.covariance, &[4, 5]).unwrap();
    close(
        w,
        want["interaction_wald"].as_f64().unwrap(),
        1e-6,
        "logit interaction Wald",
    );
    close(
        p,
        want["interaction_p"].as_f64().unwrap(),
        1e-6,
        "logit interaction p",
    );
}

#[test]
fn table1_pieces_match_pandas() {
    let (c, rows) = colon_full();
    let r = &reference()["table1"];
    let mut by_arm: BTreeMap<&str, Vec<&BTreeMap<String, f64>>> = BTreeMap::new();
    for (a, row) in c.rx.iter().zip(&rows) {
        by_arm.entry(a.as_str()).or_default().push(row);
    }
    let desc = |arm: &str, col: &str| {
        stats::describe(
            &by_arm[arm]
                .iter()
                .map(|r| r.get(col).copied())
                .collect::<Vec<_>>(),
        )
    };
    for arm in ["Obs", "Lev", "Lev+5FU"] {
        let a = desc(arm, "age");
        let w = &r[arm];
        assert_eq!(a.n, w["age_n"].as_u64().unwrap());
        close(
            a.mean.unwrap(),
            w["age_mean"].as_f64().unwrap(),
            1e-12,
            "mean",
        );
        close(a.sd.unwrap(), w["age_sd"].as_f64().unwrap(), 1e-12, "sd");
        close(
            a.median.unwrap(),
            w["age_median"].as_f64().unwrap(),
            1e-12,
            "median",
        );
        close(a.q1.unwrap(), w["age_q1"].as_f64().unwrap(), 1e-12, "q1");
        close(a.q3.unwrap(), w["age_q3"].as_f64().unwrap(), 1e-12, "q3");
        assert_eq!(
            desc(arm, "nodes").missing,
            w["nodes_missing"].as_u64().unwrap()
        );
    }
    let smd = stats::smd_numeric(&desc("Lev+5FU", "age"), &desc("Obs", "age")).unwrap();
    close(
        smd,
        r["smd_age_lev5fu_vs_obs"].as_f64().unwrap(),
        1e-12,
        "SMD age",
    );
    let prop = |arm: &str| {
        let v = &by_arm[arm];
        let p1 = v.iter().filter(|r| r["sex"] == 1.0).count() as f64 / v.len() as f64;
        vec![1.0 - p1, p1]
    };
    let smd = stats::smd_categorical(&prop("Lev+5FU"), &prop("Obs")).unwrap();
    close(
        smd,
        r["smd_sex_lev5fu_vs_obs"].as_f64().unwrap(),
        1e-12,
        "SMD sex",
    );
}

/// A CSV of the example data as columns of text, by header name.
fn csv_columns(name: &str) -> BTreeMap<String, Vec<String>> {
    let path = format!("{}/../../data/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let mut cols: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines {
        for (h, v) in header.iter().zip(l.split(',')) {
            cols.entry(h.clone()).or_default().push(v.to_string());
        }
    }
    cols
}

fn clustered_reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/clustered.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn cox_cluster_robust_standard_errors_match_r_coxph_cluster() {
    // survival::colon, both records of each patient: two rows per patient, clustered by id (R's coxph with
    // cluster(id) is the reference: lifelines' and statsmodels' score residuals ignore Efron's ties)
    let c = csv_columns("colon.csv");
    let r = &clustered_reference()["cox_colon_both_records"];
    let cluster: Vec<usize> = c["id"].iter().map(|v| v.parse().unwrap()).collect();
    let times: Vec<f64> = c["time"].iter().map(|v| v.parse().unwrap()).collect();
    let events: Vec<bool> = c["status"].iter().map(|v| v == "1").collect();
    for model in ["arm", "adjusted"] {
        let want = &r[model];
        let x: Vec<Vec<f64>> = (0..times.len())
            .map(|i| {
                let mut row = vec![
                    f64::from(u8::from(c["rx"][i] == "Lev")),
                    f64::from(u8::from(c["rx"][i] == "Lev+5FU")),
                ];
                if model == "adjusted" {
                    row.push(c["age"][i].parse().unwrap());
                }
                row
            })
            .collect();
        let names = (0..x[0].len()).map(|j| format!("x{j}")).collect();
        let fit = stats::cox_ph(names, &times, &events, &x, Ties::Efron, 50).unwrap();
        let robust = stats::cox_robust_covariance(&fit, &times, &events, &x, &cluster).unwrap();
        for (j, (&b, (&se, &naive))) in floats(&want["coef"])
            .iter()
            .zip(
                floats(&want["robust_se"])
                    .iter()
                    .zip(&floats(&want["naive_se"])),
            )
            .enumerate()
        {
            close(fit.coef[j], b, 1e-6, &format!("{model} coef {j}"));
            close(
                fit.se[j],
                naive,
                1e-6,
                &format!("{model} model-based se {j}"),
            );
            close(
                robust[j][j].sqrt(),
                se,
                1e-6,
                &format!("{model} robust se {j}"),
            );
        }
        // the score residuals are a decomposition of the score: they sum to it, zero at the estimate (to the
        // fit's tolerance; a wrong decomposition is off by whole units)
        let resid = stats::cox_score_residuals(&fit, &times, &events, &x);
        for j in 0..x[0].len() {
            let total: f64 = resid.iter().map(|r| r[j]).sum();
            assert!(total.abs() < 1e-4, "{model}: score {j} sums to {total}");
        }
    }
}

#[test]
fn logistic_cluster_robust_standard_errors_match_the_r_sandwich() {
    // HSAUR::respiratory, months 1-4: four visits per patient, clustered by subject
    let c = csv_columns("respiratory.csv");
    let r = &clustered_reference()["logistic_respiratory_visits"];
    let (rows, cluster, y) = respiratory_visits(&c);
    assert_eq!(rows.len() as u64, r["rows"].as_u64().unwrap());
    for model in ["arm", "adjusted"] {
        let want = &r[model];
        let x: Vec<Vec<f64>> = rows
            .iter()
            .map(|&i| {
                let mut row = vec![1.0, f64::from(u8::from(c["treatment"][i] == "treatment"))];
                if model == "adjusted" {
                    row.push(c["age"][i].parse().unwrap());
                }
                row
            })
            .collect();
        let fit = stats::logistic(&x, &y, 50).unwrap();
        assert!(fit.converged);
        let robust = stats::logistic_robust_covariance(&fit, &x, &y, &cluster);
        for (j, (&b, (&se, &naive))) in floats(&want["coef"])
            .iter()
            .zip(
                floats(&want["robust_se"])
                    .iter()
                    .zip(&floats(&want["naive_se"])),
            )
            .enumerate()
        {
            close(fit.coef[j], b, 1e-6, &format!("{model} coef {j}"));
            close(
                fit.covariance[j][j].sqrt(),
                naive,
                1e-6,
                &format!("{model} model se {j}"),
            );
            close(
                robust[j][j].sqrt(),
                se,
                1e-6,
                &format!("{model} robust se {j}"),
            );
        }
    }
}

#[test]
fn the_overall_chi_square_across_three_arms_matches_r() {
    let c = colon();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/k_arms.json");
    let want: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let table: Vec<(u64, u64)> = groups(&c)
        .values()
        .map(|obs| {
            let events = obs.iter().filter(|(_, e)| *e).count() as u64;
            (events, obs.len() as u64 - events)
        })
        .collect();
    let (chi, df, p) = stats::chi_square_k_by_2(&table).unwrap();
    close(
        chi,
        want["chi_square"].as_f64().unwrap(),
        1e-9,
        "chi-square",
    );
    assert_eq!(df as u64, want["df"].as_u64().unwrap());
    close(p, want["p"].as_f64().unwrap(), 1e-8, "p");
}

#[test]
fn cluster_robust_standard_errors_match_lifelines_and_statsmodels() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/clustered_python.json"
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // lifelines' score residuals ignore ties: compared on colon with every tie broken the same way
    let c = csv_columns("colon.csv");
    let cluster: Vec<usize> = c["id"].iter().map(|v| v.parse().unwrap()).collect();
    let times: Vec<f64> = (0..cluster.len())
        .map(|i| {
            let (t, etype): (f64, usize) = (
                c["time"][i].parse().unwrap(),
                c["etype"][i].parse().unwrap(),
            );
            t + (2 * cluster[i] + etype) as f64 * 1e-4
        })
        .collect();
    let events: Vec<bool> = c["status"].iter().map(|v| v == "1").collect();
    let x: Vec<Vec<f64>> = c["rx"]
        .iter()
        .map(|rx| {
            vec![
                f64::from(u8::from(rx == "Lev")),
                f64::from(u8::from(rx == "Lev+5FU")),
            ]
        })
        .collect();
    let fit = stats::cox_ph(
        vec!["a".into(), "b".into()],
        &times,
        &events,
        &x,
        Ties::Efron,
        50,
    )
    .unwrap();
    let robust = stats::cox_robust_covariance(&fit, &times, &events, &x, &cluster).unwrap();
    matches_robust(
        &fit.coef,
        &robust,
        &r["cox_colon_untied"],
        "lifelines, untied",
    );
    // statsmodels' GLM with cov_type="cluster", use_correction=False
    let c = csv_columns("respiratory.csv");
    let (rows, cluster, y) = respiratory_visits(&c);
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|&i| vec![1.0, f64::from(u8::from(c["treatment"][i] == "treatment"))])
        .collect();
    let fit = stats::logistic(&x, &y, 50).unwrap();
    let robust = stats::logistic_robust_covariance(&fit, &x, &y, &cluster);
    matches_robust(
        &fit.coef,
        &robust,
        &r["logistic_respiratory_visits"],
        "statsmodels",
    );
}

/// Coefficients and the square roots of the covariance's diagonal against `want`'s `coef` and `robust_se`.
fn matches_robust(coef: &[f64], cov: &[Vec<f64>], want: &Value, what: &str) {
    let (b, se) = (floats(&want["coef"]), floats(&want["robust_se"]));
    assert_eq!((b.len(), se.len()), (coef.len(), coef.len()), "{what}");
    for (j, row) in cov.iter().enumerate() {
        close(coef[j], b[j], 1e-6, &format!("{what}: coef {j}"));
        close(
            row[j].sqrt(),
            se[j],
            1e-6,
            &format!("{what}: robust se {j}"),
        );
    }
}

/// HSAUR::respiratory's follow-up visits (months 1-4): the rows, each row's patient, and the outcome.
fn respiratory_visits(c: &BTreeMap<String, Vec<String>>) -> (Vec<usize>, Vec<usize>, Vec<f64>) {
    let rows: Vec<usize> = (0..c["month"].len())
        .filter(|&i| c["month"][i] != "0")
        .collect();
    let cluster = rows
        .iter()
        .map(|&i| c["subject"][i].parse().unwrap())
        .collect();
    let y = rows
        .iter()
        .map(|&i| f64::from(u8::from(c["status"][i].trim() == "good")))
        .collect();
    (rows, cluster, y)
}
