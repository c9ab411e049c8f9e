//! trialflow's statistics against lifelines / scipy / statsmodels on the colon trial (death records).
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
    let mut c = Colon { rx: vec![], time: vec![], status: vec![] };
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
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want} (relative tolerance {rel})");
}

fn groups(c: &Colon) -> BTreeMap<String, Vec<(f64, bool)>> {
    let mut g: BTreeMap<String, Vec<(f64, bool)>> = BTreeMap::new();
    for i in 0..c.rx.len() {
        g.entry(c.rx[i].clone()).or_default().push((c.time[i], c.status[i]));
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
        assert_eq!((lo, hi), (want["median_ci"][0].as_f64(), want["median_ci"][1].as_f64()), "{arm} median CI");
        for (t, s) in want["survival_at"].as_object().unwrap() {
            close(km.survival_at(t.parse().unwrap()), s.as_f64().unwrap(), 1e-9, &format!("{arm} S({t})"));
        }
        let p = km.points.iter().take_while(|p| p.time <= 1825.0).last().unwrap();
        close(p.ci_low, want["ci_at_1825"][0].as_f64().unwrap(), 1e-6, &format!("{arm} lower CI at 1825"));
        close(p.ci_high, want["ci_at_1825"][1].as_f64().unwrap(), 1e-6, &format!("{arm} upper CI at 1825"));
    }
}

#[test]
fn logrank_matches_lifelines() {
    let c = colon();
    let r = &reference()["logrank"];
    let (chi, df, p) = stats::logrank(&groups(&c).into_values().collect::<Vec<_>>());
    close(chi, r["chi_square"].as_f64().unwrap(), 1e-9, "log-rank chi-square");
    assert_eq!(df as u64, r["df"].as_u64().unwrap());
    close(p, r["p"].as_f64().unwrap(), 1e-8, "log-rank p");
}

#[test]
fn cox_efron_and_breslow_match_lifelines_and_statsmodels() {
    let c = colon();
    let x: Vec<Vec<f64>> = c
        .rx
        .iter()
        .map(|a| vec![f64::from(u8::from(a == "Lev")), f64::from(u8::from(a == "Lev+5FU"))])
        .collect();
    for (ties, key) in [(Ties::Efron, "efron"), (Ties::Breslow, "breslow")] {
        let fit = stats::cox_ph(vec!["Lev".into(), "Lev+5FU".into()], &c.time, &c.status, &x, ties, 50).unwrap();
        assert!(fit.converged, "{key}: {} iterations", fit.iterations);
        let want = &reference()["cox_rx"][key];
        for j in 0..2 {
            close(fit.coef[j], want["coef"][j].as_f64().unwrap(), 1e-4, &format!("{key} coef {j}"));
            close(fit.se[j], want["se"][j].as_f64().unwrap(), 1e-4, &format!("{key} se {j}"));
        }
        close(fit.log_likelihood, want["log_likelihood"].as_f64().unwrap(), 1e-8, &format!("{key} log-likelihood"));
    }
}

#[test]
fn chi_square_and_fisher_match_scipy() {
    let r = &reference()["binary_lev5fu_vs_obs"];
    let t = &r["table"];
    let n = |i: usize, j: usize| t[i][j].as_u64().unwrap();
    let tab = TwoByTwo { a: n(0, 0), b: n(0, 1), c: n(1, 0), d: n(1, 1) };
    let (chi, p) = tab.chi_square();
    close(chi, r["chi_square"].as_f64().unwrap(), 1e-9, "chi-square");
    close(p, r["chi_p"].as_f64().unwrap(), 1e-8, "chi-square p");
    close(stats::fisher_exact(&tab), r["fisher_p"].as_f64().unwrap(), 1e-6, "Fisher p");
}
