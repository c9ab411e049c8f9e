//! The analysis of every public example trial against lifelines / statsmodels / scipy, run through the real
//! binary and its config (`config/examples/<trial>.yaml`). Reference numbers: crates/analysis/tests/reference/
//! public_trials.py → public_trials.json.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use crate::util;

use crate::util::{Project, text};
use serde_json::Value;

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1e-12);
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, want {want} (relative tolerance {rel})"
    );
}

fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

/// Runs the data pipeline and the analysis task for one example and returns its analysis.json.
fn run_example(trial: &str) -> Value {
    run_example_on(trial, trial)
}

/// [`run_example`] for `config/examples/<config>.yaml` over `data/examples/<data>.csv`.
fn run_example_on(config: &str, data: &str) -> Value {
    let p = Project::sample();
    let root = util::repo_root();
    let cfg = format!("config/examples/{config}.yaml");
    std::fs::create_dir_all(p.path("config/examples")).unwrap();
    std::fs::create_dir_all(p.path("data/examples")).unwrap();
    std::fs::copy(root.join(&cfg), p.path(&cfg)).unwrap();
    std::fs::copy(
        root.join(format!("data/examples/{data}.csv")),
        p.path(&format!("data/examples/{data}.csv")),
    )
    .unwrap();
    let o = p.run_keyed(&["pipeline", "data", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = p.run_keyed(&["pipeline", "full", "--only", "analyze", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lake = std::fs::read_dir(p.path("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| d.join("reports").exists())
        .unwrap();
    p.report_json(&format!(
        "data/{}",
        lake.file_name().unwrap().to_string_lossy()
    ))
}

fn reference(trial: &str) -> Value {
    let path = util::repo_root().join("crates/analysis/tests/reference/public_trials.json");
    let all: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    all[trial].clone()
}

/// The keys of a reference object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// `field` of every element of the array `v`, sorted.
fn field(v: &Value, name: &str) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x[name].as_str().unwrap_or_default().to_string())
        .collect();
    k.sort();
    k
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// Everything the reference holds is in trialflow's output too: the value checks below walk trialflow's
/// output, so an item it dropped would otherwise fail nothing.
fn check_coverage(trial: &str, a: &Value, r: &Value) {
    assert_eq!(field(&a["arms"], "arm"), keys(&r["arms"]), "{trial}: arms");
    assert_eq!(
        field(&a["comparisons"], "arm"),
        keys(&r["comparisons"]),
        "{trial}: comparisons"
    );
    assert_eq!(
        field(&a["table1"]["numeric"], "variable"),
        keys(&r["table1"]),
        "{trial}: Table 1 numeric rows"
    );
    assert_eq!(
        field(&a["subgroups"], "variable"),
        keys(&r["subgroups"]),
        "{trial}: subgroups"
    );
    for sg in a["subgroups"].as_array().into_iter().flatten() {
        let v = sg["variable"].as_str().unwrap_or_default();
        let mut got: Vec<String> = sg["effects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}|{}",
                    e["level"].as_str().unwrap_or(""),
                    e["arm"].as_str().unwrap_or("")
                )
            })
            .collect();
        got.sort();
        let want = keys(&r["subgroups"][v]["effects"]);
        assert!(
            want.iter().all(|k| got.contains(k)),
            "{trial} {v}: subgroup effects {got:?}, reference {want:?}"
        );
    }
    let Some(want) = r.get("survival") else {
        return;
    };
    let s = &a["survival"];
    assert_eq!(
        field(&s["medians"], "arm"),
        keys(&want["medians"]),
        "{trial}: medians"
    );
    let mut at: Vec<String> = s["at_times"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}|{}",
                t["arm"].as_str().unwrap_or(""),
                t["time"].as_f64().unwrap_or(f64::NAN) as i64
            )
        })
        .collect();
    at.sort();
    let mut want_at: Vec<String> = keys(&want["at_times"])
        .iter()
        .flat_map(|arm| {
            keys(&want["at_times"][arm])
                .into_iter()
                .map(move |t| format!("{arm}|{t}"))
        })
        .collect();
    want_at.sort();
    assert_eq!(at, want_at, "{trial}: survival at times");
    assert_eq!(
        len(&s["cox"]["terms"]),
        len(&want["cox"]["coef"]),
        "{trial}: Cox terms"
    );
    assert_eq!(
        len(&s["cox"]["ph_test"]),
        len(&want["ph"]["chi2"]),
        "{trial}: PH tests"
    );
    assert_eq!(
        len(&s["cox"]["ph_test"]),
        len(&want["ph"]["p"]),
        "{trial}: PH p-values"
    );
    if let Some(wa) = want.get("cox_adjusted") {
        assert_eq!(
            len(&s["cox_adjusted"]["terms"]),
            len(&wa["coef"]),
            "{trial}: adjusted Cox terms"
        );
    }
}

fn check(trial: &str) {
    let a = run_example(trial);
    let r = reference(trial);
    check_analysis(trial, &a, &r);
}

/// Every number of `r` (a reference in public_trials.json's layout) against trialflow's analysis `a`.
fn check_analysis(trial: &str, a: &Value, r: &Value) {
    check_coverage(trial, a, r);
    assert_eq!(a["analyzed_rows"], r["n"], "{trial}: population");
    // subjects without the outcome are described, not dropped (opt: 9)
    assert_eq!(
        a["outcome_missing"], r["outcome_missing"],
        "{trial}: without the outcome"
    );
    // outcome by arm
    for arm in a["arms"].as_array().unwrap() {
        let name = arm["arm"].as_str().unwrap();
        assert_eq!(arm["n"], r["arms"][name]["n"], "{trial} {name} n");
        assert_eq!(
            arm["events"], r["arms"][name]["events"],
            "{trial} {name} events"
        );
    }
    for c in a["comparisons"].as_array().unwrap() {
        let want = &r["comparisons"][c["arm"].as_str().unwrap()];
        let what = format!("{trial} {}", c["arm"]);
        close(
            f(&c["risk_difference"]["estimate"]),
            f(&want["rd"]),
            1e-9,
            &format!("{what} RD"),
        );
        close(
            f(&c["risk_difference"]["ci_low"]),
            f(&want["rd_ci"][0]),
            1e-9,
            &format!("{what} RD low"),
        );
        close(
            f(&c["risk_difference"]["ci_high"]),
            f(&want["rd_ci"][1]),
            1e-9,
            &format!("{what} RD high"),
        );
        for (mine, theirs) in [("risk_ratio", "rr"), ("odds_ratio", "or")] {
            if want[theirs].is_null() {
                assert!(c[mine].is_null(), "{what} {mine} should be not estimable");
                continue;
            }
            close(
                f(&c[mine]["estimate"]),
                f(&want[theirs]),
                1e-9,
                &format!("{what} {mine}"),
            );
            close(
                f(&c[mine]["ci_low"]),
                f(&want[&format!("{theirs}_ci")][0]),
                1e-9,
                &format!("{what} {mine} low"),
            );
            close(
                f(&c[mine]["ci_high"]),
                f(&want[&format!("{theirs}_ci")][1]),
                1e-9,
                &format!("{what} {mine} high"),
            );
        }
        if !want["chi2"].is_null() {
            close(
                f(&c["chi_square"]),
                f(&want["chi2"]),
                1e-9,
                &format!("{what} chi2"),
            );
            close(
                f(&c["chi_square_p"]),
                f(&want["chi2_p"]),
                1e-8,
                &format!("{what} chi2 p"),
            );
        }
        close(
            f(&c["fisher_p"]),
            f(&want["fisher_p"]),
            1e-6,
            &format!("{what} Fisher p"),
        );
    }
    // Table 1, numeric rows
    for row in a["table1"]["numeric"].as_array().unwrap() {
        let v = row["variable"].as_str().unwrap();
        let want = &r["table1"][v];
        for (arm, d) in row["arms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x[0].as_str().unwrap(), &x[1]))
        {
            assert_eq!(d["n"], want[arm]["n"], "{trial} {v} {arm} n");
            assert_eq!(
                d["missing"], want["missing"][arm],
                "{trial} {v} {arm} missing"
            );
            for k in ["mean", "sd", "median", "q1", "q3"] {
                close(
                    f(&d[k]),
                    f(&want[arm][k]),
                    1e-9,
                    &format!("{trial} {v} {arm} {k}"),
                );
            }
        }
        for s in row["smd"].as_array().unwrap() {
            close(
                f(&s[1]),
                f(&want["smd"][s[0].as_str().unwrap()]),
                1e-9,
                &format!("{trial} {v} SMD"),
            );
        }
    }
    // time to event
    if let Some(want) = r.get("survival") {
        let s = &a["survival"];
        for m in s["medians"].as_array().unwrap() {
            let w = &want["medians"][m["arm"].as_str().unwrap()];
            assert_eq!(
                (
                    m["median"].as_f64(),
                    m["ci_low"].as_f64(),
                    m["ci_high"].as_f64()
                ),
                (w[0].as_f64(), w[1].as_f64(), w[2].as_f64()),
                "{trial} median"
            );
        }
        for t in s["at_times"].as_array().unwrap() {
            let w =
                &want["at_times"][t["arm"].as_str().unwrap()][format!("{}", f(&t["time"]) as i64)];
            if t["survival"].is_null() {
                // past the arm's last follow-up nothing is estimated: nobody is at risk there
                assert_eq!(
                    w["at_risk"], 0,
                    "{trial}: {t} left out with subjects at risk"
                );
                continue;
            }
            close(
                f(&t["survival"]),
                f(&w["s"]),
                1e-9,
                &format!("{trial} S(t)"),
            );
            close(
                f(&t["ci_low"]),
                f(&w["ci"][0]),
                1e-6,
                &format!("{trial} S(t) low"),
            );
            close(
                f(&t["ci_high"]),
                f(&w["ci"][1]),
                1e-6,
                &format!("{trial} S(t) high"),
            );
            assert_eq!(t["at_risk"], w["at_risk"], "{trial} at risk");
        }
        close(
            f(&s["logrank_chi_square"]),
            f(&want["logrank"][0]),
            1e-9,
            &format!("{trial} log-rank"),
        );
        close(
            f(&s["logrank_p_value"]),
            f(&want["logrank"][1]),
            1e-8,
            &format!("{trial} log-rank p"),
        );
        for (j, term) in s["cox"]["terms"].as_array().unwrap().iter().enumerate() {
            close(
                f(&term["coef"]),
                f(&want["cox"]["coef"][j]),
                1e-6,
                &format!("{trial} Cox coef"),
            );
            close(
                f(&term["se"]),
                f(&want["cox"]["se"][j]),
                1e-6,
                &format!("{trial} Cox se"),
            );
            close(
                f(&term["p"]),
                f(&want["cox"]["p"][j]),
                1e-6,
                &format!("{trial} Cox p"),
            );
            close(
                s["cox"]["ph_test"][j][1].as_f64().unwrap(),
                f(&want["ph"]["chi2"][j]),
                1e-6,
                &format!("{trial} PH chi2"),
            );
            close(
                s["cox"]["ph_test"][j][2].as_f64().unwrap(),
                f(&want["ph"]["p"][j]),
                1e-6,
                &format!("{trial} PH p"),
            );
        }
        if let Some(wa) = want.get("cox_adjusted") {
            let adj = &s["cox_adjusted"];
            assert_eq!(adj["n"], wa["n"], "{trial} adjusted n (complete cases)");
            for (j, term) in adj["terms"].as_array().unwrap().iter().enumerate() {
                close(
                    f(&term["coef"]),
                    f(&wa["coef"][j]),
                    1e-6,
                    &format!("{trial} adjusted coef {j}"),
                );
                close(
                    f(&term["se"]),
                    f(&wa["se"][j]),
                    1e-6,
                    &format!("{trial} adjusted se {j}"),
                );
            }
        }
    }
    // subgroups
    for sg in a["subgroups"].as_array().unwrap() {
        let v = sg["variable"].as_str().unwrap();
        let want = &r["subgroups"][v];
        for e in sg["effects"].as_array().unwrap() {
            let key = format!(
                "{}|{}",
                e["level"].as_str().unwrap(),
                e["arm"].as_str().unwrap()
            );
            let w = &want["effects"][&key];
            assert!(
                !w.is_null() || e["estimate"].is_null(),
                "{trial} {v} {key}: reference says not estimable"
            );
            if w.is_null() {
                assert!(
                    e["not_estimable"].is_string(),
                    "{trial} {v} {key}: a reason is given"
                );
                continue;
            }
            let tol = if e["measure"] == "HR" { 1e-6 } else { 1e-9 };
            close(
                f(&e["estimate"]["estimate"]),
                f(&w[0]),
                tol,
                &format!("{trial} {v} {key} effect"),
            );
            close(
                f(&e["estimate"]["ci_low"]),
                f(&w[1]),
                tol,
                &format!("{trial} {v} {key} low"),
            );
            close(
                f(&e["estimate"]["ci_high"]),
                f(&w[2]),
                tol,
                &format!("{trial} {v} {key} high"),
            );
        }
        if want["interaction"].is_null() {
            assert!(
                sg["interaction_p"].is_null(),
                "{trial} {v}: interaction should be not estimable"
            );
        } else {
            close(
                f(&sg["interaction_chi_square"]),
                f(&want["interaction"][0]),
                1e-6,
                &format!("{trial} {v} interaction"),
            );
            close(
                f(&sg["interaction_p"]),
                f(&want["interaction"][1]),
                1e-6,
                &format!("{trial} {v} interaction p"),
            );
        }
    }
}

#[test]
fn indomethacin_trial() {
    check("indo_rct");
}

#[test]
fn streptomycin_trial() {
    check("strep_tb");
}

#[test]
fn supraclavicular_trial_with_censoring_flag_convention() {
    let a = run_example("supraclavicular");
    check_analysis("supraclavicular", &a, &reference("supraclavicular"));
    check_ancova("supraclavicular", &a["continuous"][0]);
}

#[test]
fn respiratory_trial_month_4() {
    check("respiratory");
}

#[test]
fn colon_trial_three_arms_adjusted_cox() {
    let a = run_example("colon");
    check_analysis("colon", &a, &reference("colon"));
    check_survival_more("colon", &a["survival"]);
}

/// The stratified log-rank test and Cox model, the restricted mean survival times and their differences, and
/// the survival differences at the milestone times against R's survival (crates/analysis/tests/reference/
/// survival_more.R → survival_more.json).
fn check_survival_more(trial: &str, s: &Value) {
    let path = util::repo_root().join("crates/analysis/tests/reference/survival_more.json");
    let all: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let r = &all[trial];
    let st = &s["stratified"];
    assert_eq!(
        st["levels"].as_array().unwrap().len() as u64,
        r["strata"].as_u64().unwrap()
    );
    close(
        f(&st["logrank_chi_square"]),
        f(&r["logrank"]["chi_square"]),
        1e-9,
        &format!("{trial}: stratified log-rank"),
    );
    assert_eq!(st["logrank_df"], r["logrank"]["df"]);
    for (j, t) in st["cox"]["terms"].as_array().unwrap().iter().enumerate() {
        close(
            f(&t["coef"]),
            nth(&r["cox"]["coef"], j),
            1e-6,
            "stratified Cox coef",
        );
        close(
            f(&t["se"]),
            nth(&r["cox"]["se"], j),
            1e-6,
            "stratified Cox se",
        );
    }
    let rm = &s["rmst"];
    assert_eq!(rm["horizon"].as_f64(), r["rmst"]["horizon"].as_f64());
    for (i, arm) in rm["arms"].as_array().unwrap().iter().enumerate() {
        close(f(&arm["rmst"]), f(&r["rmst"]["rmean"][i]), 1e-9, "RMST");
        close(f(&arm["se"]), f(&r["rmst"]["se"][i]), 1e-9, "RMST se");
    }
    for (i, d) in rm["differences"].as_array().unwrap().iter().enumerate() {
        close(
            f(&d["estimate"]),
            nth(&r["rmst"]["difference"], i),
            1e-9,
            "RMST difference",
        );
        close(
            f(&d["se"]),
            nth(&r["rmst"]["difference_se"], i),
            1e-9,
            "RMST difference se",
        );
    }
    let got = s["milestones"].as_array().unwrap();
    let want = r["milestones"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{trial}: milestones");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (g["time"].as_f64(), &g["arm"]),
            (w["time"].as_f64(), &w["arm"])
        );
        close(
            f(&g["estimate"]),
            f(&w["estimate"]),
            1e-9,
            "milestone difference",
        );
        close(f(&g["se"]), f(&w["se"]), 1e-9, "milestone se");
    }
}

#[test]
fn opt_trial_messy_export() {
    let a = run_example("opt");
    check_analysis("opt", &a, &reference("opt"));
    check_ancova("opt", &a["continuous"][0]);
}

/// A reference value that R's JSON writer may have unboxed: element `i` of an array, or the number itself.
fn nth(v: &Value, i: usize) -> f64 {
    match v {
        Value::Array(a) => f(&a[i]),
        other => {
            assert_eq!(i, 0, "a scalar where an array was expected: {other}");
            f(other)
        }
    }
}

/// A continuous endpoint's ANCOVA (least-squares means, differences against the reference with their
/// multiplicity adjustment, the trend) against R's `lm` + `emmeans` (+ `mvtnorm` for Dunnett):
/// crates/analysis/tests/reference/ancova.R → ancova.json.
fn check_ancova(trial: &str, c: &Value) {
    let path = util::repo_root().join("crates/analysis/tests/reference/ancova.json");
    let all: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let (m, w) = (&c["ancova"], &all[trial]);
    assert!(m.is_object(), "{trial}: no ANCOVA: {c}");
    assert_eq!(m["n"], w["n"], "{trial}: complete cases");
    assert_eq!(m["df"].as_f64(), w["df"].as_f64(), "{trial}: residual df");
    assert_eq!(m["multiplicity"], w["multiplicity"]);
    // 1e-9 where the numbers are closed form; the Dunnett ones come from numerical integration (ours and
    // TVPACK's), 1e-7.
    let rel = |what: &str| {
        if w["multiplicity"] == "dunnett" && what != "p" {
            1e-7
        } else {
            1e-9
        }
    };
    close(
        f(&m["critical_value"]),
        f(&w["critical_value"]),
        rel("critical"),
        &format!("{trial}: critical value"),
    );
    let ls = m["lsmeans"].as_array().unwrap();
    assert_eq!(ls.len(), w["arms"].as_array().unwrap().len());
    for (i, l) in ls.iter().enumerate() {
        assert_eq!(l["arm"], w["arms"][i]);
        for (mine, theirs) in [
            ("estimate", "estimate"),
            ("se", "se"),
            ("ci_low", "lower"),
            ("ci_high", "upper"),
        ] {
            close(
                f(&l[mine]),
                nth(&w["lsmean"][theirs], i),
                1e-9,
                &format!("{trial}: LS mean {mine} of {}", l["arm"]),
            );
        }
    }
    let wd = &w["difference"];
    for (i, d) in m["differences"].as_array().unwrap().iter().enumerate() {
        let arm = match &wd["arm"] {
            Value::Array(a) => a[i].clone(),
            other => other.clone(),
        };
        assert_eq!(d["arm"], arm);
        for (mine, theirs) in [
            ("estimate", "estimate"),
            ("se", "se"),
            ("t", "t"),
            ("p", "p"),
            ("p_adjusted", "p_adjusted"),
            ("ci_low", "lower"),
            ("ci_high", "upper"),
        ] {
            close(
                f(&d[mine]),
                nth(&wd[theirs], i),
                rel(mine),
                &format!("{trial}: difference {mine} of {arm}"),
            );
        }
    }
    match (&m["trend"], &w["trend"]) {
        (Value::Null, Value::Null) => {}
        (t, r) => {
            for (j, c) in t["coefficients"].as_array().unwrap().iter().enumerate() {
                close(
                    f(&c[2]),
                    nth(&r["coefficients"], j),
                    1e-12,
                    "trend contrast",
                );
            }
            for key in ["estimate", "se", "t", "df", "p"] {
                close(
                    f(&t[key]),
                    f(&r[key]),
                    1e-9,
                    &format!("{trial}: trend {key}"),
                );
            }
        }
    }
}

fn clustered_reference() -> Value {
    let path = util::repo_root().join("crates/analysis/tests/reference/clustered.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn colon_both_records_per_patient_with_cluster_robust_cox() {
    // two rows per patient (recurrence, death): a composite id, the patient as the cluster
    let a = run_example_on("colon_records", "colon");
    let r = &clustered_reference()["cox_colon_both_records"];
    assert_eq!(a["analyzed_rows"], r["rows"], "every record analysed");
    let cox = &a["survival"]["cox"];
    assert_eq!(cox["variance"], "cluster-robust");
    for (j, t) in cox["terms"].as_array().unwrap().iter().enumerate() {
        close(f(&t["coef"]), f(&r["arm"]["coef"][j]), 1e-6, "coef");
        close(f(&t["se"]), f(&r["arm"]["robust_se"][j]), 1e-6, "robust se");
    }
    let methods = a["methods"].to_string();
    assert!(methods.contains("cluster-robust sandwich"), "{methods}");
}

#[test]
fn respiratory_every_visit_with_cluster_robust_odds_ratio() {
    let a = run_example_on("respiratory_visits", "respiratory");
    let r = &clustered_reference()["logistic_respiratory_visits"];
    let c = &a["clustered_outcome"];
    assert_eq!((&c["rows"], &c["clusters"]), (&r["rows"], &r["clusters"]));
    let or = &c["odds_ratios"][0];
    close(f(&or["coef"]), f(&r["arm"]["coef"][1]), 1e-6, "log OR");
    close(
        f(&or["se"]),
        f(&r["arm"]["robust_se"][1]),
        1e-6,
        "robust se",
    );
}

/// The Kaplan–Meier medians with their intervals, survival at R's times with its interval and numbers at risk,
/// and the log-rank χ², against an R reference (`survfit` log-log intervals, `summary(fit, times)`, `survdiff`).
fn check_km_and_logrank(s: &Value, r: &Value) {
    for (i, m) in s["medians"].as_array().unwrap().iter().enumerate() {
        for (mine, theirs) in [
            ("median", "median"),
            ("ci_low", "median_ci_low"),
            ("ci_high", "median_ci_high"),
        ] {
            assert_eq!(m[mine].as_f64(), r[theirs][i].as_f64(), "{mine} of {m}");
        }
    }
    let at = &r["at_times"];
    let times = s["at_times"].as_array().unwrap();
    assert_eq!(
        times.len(),
        at["time"].as_array().unwrap().len(),
        "every time"
    );
    for (i, t) in times.iter().enumerate() {
        close(f(&t["time"]), f(&at["time"][i]), 1e-12, "time");
        close(f(&t["survival"]), f(&at["surv"][i]), 1e-9, "S(t)");
        close(f(&t["ci_low"]), f(&at["lower"][i]), 1e-6, "S(t) low");
        close(f(&t["ci_high"]), f(&at["upper"][i]), 1e-6, "S(t) high");
        assert_eq!(t["at_risk"], at["n_risk"][i], "at risk");
    }
    close(
        f(&s["logrank_chi_square"]),
        f(&r["logrank"]["chi_square"]),
        1e-9,
        "log-rank",
    );
}

#[test]
fn lung_export_as_r_writes_it_against_r() {
    // no id column (`id: null`), R's 1/2 status coding, sex coded 1/2 as YAML numbers, empty fields for NA
    let a = run_example_on("lung", "lung");
    check_survival_more("lung", &a["survival"]);
    let notes = a["survival"]["stratified"]["notes"].to_string();
    assert!(notes.contains("stratum `3` has one subject"), "{notes}");
    assert!(notes.contains("1 rows have no value"), "{notes}");
    let path = util::repo_root().join("crates/analysis/tests/reference/lung.json");
    let r: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(
        a["analyzed_rows"], r["n"],
        "every patient, none taken for a repeat"
    );
    let s = &a["survival"];
    check_km_and_logrank(s, &r);
    let cox = &s["cox"]["terms"][0];
    close(f(&cox["coef"]), f(&r["cox"]["coef"]), 1e-6, "Cox coef");
    close(f(&cox["se"]), f(&r["cox"]["se"]), 1e-6, "Cox se");
    let adj = &s["cox_adjusted"];
    assert_eq!(adj["n"], r["cox_adjusted"]["n"], "complete cases");
    for (j, t) in adj["terms"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            t["term"],
            r["cox_adjusted"]["terms"][j]
                .as_str()
                .unwrap()
                .replace("sex=", "arm=")
        );
        close(
            f(&t["coef"]),
            f(&r["cox_adjusted"]["coef"][j]),
            1e-6,
            "adjusted coef",
        );
        close(
            f(&t["se"]),
            f(&r["cox_adjusted"]["se"][j]),
            1e-6,
            "adjusted se",
        );
    }
}

/// `config/examples/cdiscpilot_adsl.yaml` over `data/examples/cdiscpilot/<file>` (its source URL pointed
/// there): the data pipeline and the analysis; returns analysis.json and report.html.
fn run_cdisc_pilot(file: &str) -> (Value, String) {
    let p = Project::sample();
    let root = util::repo_root();
    let cfg = "config/examples/cdiscpilot_adsl.yaml";
    std::fs::create_dir_all(p.path("config/examples")).unwrap();
    std::fs::create_dir_all(p.path("data/examples/cdiscpilot")).unwrap();
    let text_of = std::fs::read_to_string(root.join(cfg)).unwrap();
    let pointed = text_of.replace("cdiscpilot/adsl.xpt", &format!("cdiscpilot/{file}"));
    assert!(pointed.contains(file));
    std::fs::write(p.path(cfg), pointed).unwrap();
    let data = format!("data/examples/cdiscpilot/{file}");
    std::fs::copy(root.join(&data), p.path(&data)).unwrap();
    let o = p.run_keyed(&["pipeline", "data", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = p.run_keyed(&["pipeline", "full", "--only", "analyze", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report = p.latest_report("data/lake-cdiscpilot");
    (
        p.report_json("data/lake-cdiscpilot"),
        std::fs::read_to_string(report.join("report.html")).unwrap(),
    )
}

/// The CDISC pilot's ADSL read from its SAS transport file and from Dataset-JSON (each reader end to end:
/// ingest, staging, the SQL contract on CDISC's upper-case names, the filter as the safety population)
/// gives R's numbers, as R computes them from the transport file with its own reader (foreign::read.xport):
/// outcome by arm, the comparisons, the overall χ², Table 1 with the file's variable labels.
#[test]
fn cdisc_pilot_adsl_from_sas_transport_and_dataset_json_against_r() {
    let path = util::repo_root().join("crates/analysis/tests/reference/cdiscpilot_adsl.json");
    let r: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for file in ["adsl.xpt", "adsl.json"] {
        let trial = format!("cdiscpilot {file}");
        let (a, html) = run_cdisc_pilot(file);
        check_analysis(&trial, &a, &r);
        let overall = &a["overall_chi_square"];
        let want = &r["overall_chi_square"];
        close(
            f(&overall["chi_square"]),
            f(&want["chi_square"]),
            1e-9,
            &format!("{trial} overall chi2"),
        );
        assert_eq!(overall["df"], want["df"], "{trial} overall df");
        close(
            f(&overall["p_value"]),
            f(&want["p_value"]),
            1e-8,
            &format!("{trial} overall p"),
        );
        let rows = a["table1"]["categorical"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{trial}: categorical rows");
        for row in rows {
            let v = row["variable"].as_str().unwrap();
            let levels: Vec<&str> = row["levels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect();
            for arm in row["arms"].as_array().unwrap() {
                let name = arm[0].as_str().unwrap();
                let want = r["categorical_counts"][v][name].as_object().unwrap();
                let counts = arm[1].as_array().unwrap();
                for (level, n) in levels.iter().zip(counts) {
                    assert_eq!(
                        n.as_u64().unwrap(),
                        want.get(*level).and_then(Value::as_u64).unwrap_or(0),
                        "{trial} {v} {name} {level}"
                    );
                }
                assert_eq!(
                    want.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
                    counts.iter().map(|n| n.as_u64().unwrap()).sum::<u64>(),
                    "{trial} {v} {name}: every level"
                );
            }
        }
        assert_eq!(
            a["table1"]["labels"], r["labels"],
            "{trial}: the file's labels"
        );
        assert!(
            html.contains("Baseline BMI (kg/m^2) <small>(BMIBL)</small>"),
            "{trial}: Table 1 shows the label"
        );
    }
}

/// Runs `pipeline data` and then `analyze` of example `cfg` over `files` of `data` (copied from the repository):
/// the project, the data pipeline's printout, analysis.json and the clean report.
fn run_pilot_example(cfg: &str, data: &str, files: &[&str]) -> (Project, String, Value, Value) {
    let root = util::repo_root();
    let p = Project::sample();
    std::fs::create_dir_all(p.path("config/examples")).unwrap();
    std::fs::create_dir_all(p.path(data)).unwrap();
    std::fs::copy(root.join(cfg), p.path(cfg)).unwrap();
    for file in files {
        let path = format!("{data}/{file}");
        std::fs::copy(root.join(&path), p.path(&path)).unwrap();
    }
    let o = p.run_keyed(&["pipeline", "data", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let printed = text(&o);
    let o = p.run_keyed(&["pipeline", "full", "--only", "analyze", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let text_of = std::fs::read_to_string(root.join(cfg)).unwrap();
    let lake = text_of
        .split("lake: file://")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .unwrap()
        .trim()
        .to_string();
    let a = p.report_json(&lake);
    let report = std::fs::read(p.path(&format!("{lake}/processed/clean_report.json"))).unwrap();
    (p, printed, a, serde_json::from_slice(&report).unwrap())
}

/// `config/examples/cdiscpilot.yaml`: the pilot's ADSL with ADTTE, ADADAS and ADAE as record tables, all four
/// read from SAS transport files, against R, which reads the same files with its own reader and joins them
/// itself: Kaplan–Meier, log-rank and Cox of the time to first dermatologic event by arm, and the pivoted
/// columns (ADAS-Cog at baseline and its change at week 24, treatment-emergent AEs per subject) by arm.
#[test]
fn cdisc_pilot_record_tables_time_to_first_dermatologic_event_against_r() {
    let path = util::repo_root().join("crates/analysis/tests/reference/cdiscpilot_ttde.json");
    let r: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let (p, printed, a, report) = run_pilot_example(
        "config/examples/cdiscpilot.yaml",
        "data/examples/cdiscpilot",
        &[
            "adsl.xpt",
            "adtte.xpt",
            "adadas.xpt",
            "adae.xpt",
            "adlbc.xpt",
        ],
    );
    assert!(
        printed.contains("table adadas (processed/tables/adadas/)")
            && printed.contains("12463 / 12463 / 0"),
        "each record table's rows are printed: {printed}"
    );
    let splits: u64 = printed
        .lines()
        .find_map(|l| l.strip_prefix("Splits: "))
        .unwrap_or_else(|| panic!("no split line: {printed}"))
        .split(" · ")
        .map(|part| part.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let efficacy: u64 = r["populations"]["efficacy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(
        splits, efficacy,
        "the models' population (efficacy) alone is split"
    );
    let html = std::fs::read_to_string(
        p.latest_report("data/lake-cdiscpilot-full")
            .join("report.html"),
    )
    .unwrap();

    // populations: every one counted per arm in the flow, each analysis over its own
    let flow = a["flow"]["populations"].as_array().unwrap();
    assert_eq!(flow.len(), 3);
    for pop in flow {
        let name = pop["name"].as_str().unwrap();
        let per_arm: Vec<u64> = pop["per_arm"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[1].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = r["populations"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .collect();
        assert_eq!(per_arm, want, "population {name} per arm");
    }
    let used = |name: &str| flow.iter().find(|p| p["name"] == name).unwrap()["used_by"].clone();
    assert_eq!(
        used("efficacy"),
        serde_json::json!(["outcome", "ADAS_CHG24", "models"])
    );
    assert_eq!(
        used("safety"),
        serde_json::json!(["table1", "survival", "subgroups"])
    );
    for (i, arm) in a["arms"].as_array().unwrap().iter().enumerate() {
        assert_eq!(arm["n"], r["outcome_efficacy"]["n"][i], "{arm}");
        assert_eq!(arm["events"], r["outcome_efficacy"]["events"][i], "{arm}");
    }
    assert!(
        html.contains("Population: <b>efficacy</b> (<code>EFFFL = 'Y'</code>), 234 rows."),
        "the outcome section names its population"
    );
    for t in report["tables"].as_array().unwrap() {
        assert_eq!(
            t["rows_in"].as_u64(),
            Some(t["accepted"].as_u64().unwrap() + t["quarantined"].as_u64().unwrap()),
            "{t}"
        );
    }

    let arms: Vec<&str> = r["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let s = &a["survival"];
    for (i, curve) in s["curves"].as_array().unwrap().iter().enumerate() {
        assert_eq!(curve["arm"], arms[i]);
        assert_eq!(curve["n"], r["n"][i], "{} n", arms[i]);
        assert_eq!(curve["events"], r["events"][i], "{} events", arms[i]);
    }
    check_km_and_logrank(s, &r);
    assert_eq!(s["logrank_df"], r["logrank"]["df"]);
    for (j, t) in s["cox"]["terms"].as_array().unwrap().iter().enumerate() {
        assert_eq!(t["term"], r["cox"]["terms"][j]);
        close(f(&t["coef"]), f(&r["cox"]["coef"][j]), 1e-6, "Cox coef");
        close(f(&t["se"]), f(&r["cox"]["se"][j]), 1e-6, "Cox se");
    }

    let numeric = a["table1"]["numeric"].as_array().unwrap();
    for (column, want) in r["pivots"].as_object().unwrap() {
        let row = numeric
            .iter()
            .find(|n| n["variable"] == column.as_str())
            .unwrap_or_else(|| panic!("Table 1 has no row {column}"));
        for (i, arm) in row["arms"].as_array().unwrap().iter().enumerate() {
            assert_eq!(arm[0], arms[i]);
            let got = &arm[1];
            assert_eq!(got["n"].as_u64(), want["n"][i].as_u64(), "{column} n");
            close(f(&got["mean"]), f(&want["mean"][i]), 1e-12, column);
            close(f(&got["sd"]), f(&want["sd"][i]), 1e-9, column);
        }
    }
    assert_eq!(
        a["table1"]["labels"]["ADAS_CHG24"], "ADAS-Cog(11) change from baseline at week 24",
        "a pivot's label heads its row"
    );

    // the ADAS-Cog change at week 24 in the efficacy population, by ANCOVA on its baseline
    let c = &a["continuous"][0];
    assert_eq!(c["population"], "efficacy");
    let (m, w) = (&c["ancova"], &r["ancova_adas_chg24"]);
    assert_eq!(m["n"], w["n"]);
    assert_eq!(m["df"].as_f64(), w["df"].as_f64());
    for (j, t) in m["terms"].as_array().unwrap().iter().enumerate() {
        assert_eq!(t["term"], w["terms"][j]);
        for (mine, theirs) in [
            ("estimate", "estimate"),
            ("se", "se"),
            ("ci_low", "ci_low"),
            ("ci_high", "ci_high"),
            ("p", "p"),
        ] {
            close(
                f(&t[mine]),
                f(&w[theirs][j]),
                1e-9,
                &format!("ANCOVA {mine}"),
            );
        }
    }
    assert!(html.contains("<h2>Continuous endpoint: ADAS-Cog(11) change from baseline at week 24"));
    // the SAP's model: baseline and pooled site, Dunnett, the dose trend
    assert_eq!(
        a["continuous"][1]["adjust"],
        serde_json::json!(["ADAS_BL", "SITEGR1"])
    );
    check_ancova("cdiscpilot", &a["continuous"][1]);
    assert!(html.contains("Least-squares means"));
    check_safety(&a["safety"]);
    assert!(html.contains("<h2>Adverse events"));
    check_survival_more("cdiscpilot", &a["survival"]);
    check_disposition(&a["disposition"]);
    check_lab_shifts(&a["lab_shifts"]);
    assert!(html.contains("<h2>Lab shifts"));
    check_results_as_data(&p.latest_report("data/lake-cdiscpilot-full"), &a);
    assert!(html.contains("aria-label=\"CONSORT flow diagram\""));
    assert!(
        html.contains("Completed: 58"),
        "placebo's completers in its CONSORT box"
    );
}

/// Bad input in the safety tables, written as a config a user could: a population in which two of the three
/// arms have no subject. Their columns have counts without percentages and no comparison (never a NaN), and the
/// report says why; the records of subjects outside the population are counted in a note, not in the tables.
#[test]
fn safety_tables_over_a_population_without_some_arms_say_so() {
    let cfg = "config/examples/cdiscpilot.yaml";
    let (p, _, _, _) = run_pilot_example(
        cfg,
        "data/examples/cdiscpilot",
        &[
            "adsl.xpt",
            "adtte.xpt",
            "adadas.xpt",
            "adae.xpt",
            "adlbc.xpt",
        ],
    );
    let edited = std::fs::read_to_string(p.path(cfg))
        .unwrap()
        .replace(
            "    itt: ITTFL = 'Y'\n",
            "    itt: ITTFL = 'Y'\n    placebo: TRT01A = 'Placebo'\n",
        )
        .replace(
            "    population: safety\n    events: teae",
            "    population: placebo\n    events: teae",
        );
    assert!(edited.contains("population: placebo"));
    p.write(cfg, &edited);
    let o = p.run_keyed(&["pipeline", "data", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = p.run_keyed(&["pipeline", "full", "--only", "analyze", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let a = p.report_json("data/lake-cdiscpilot-full");
    let s = &a["safety"];
    assert_eq!(s["arms"][1][1], 0, "{}", s["arms"]);
    let notes: Vec<&str> = s["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n
                .contains("arm `Xanomeline High Dose` has no subject in the placebo population")),
        "{notes:?}"
    );
    let outside = s["outside_population"].as_u64().unwrap();
    assert!(outside > 0);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&format!("{outside} records")))
    );
    let any = &s["overview"][0];
    assert_eq!(any["subjects"][1], 0);
    assert!(any["risk_differences"][0].is_null() && any["risk_differences"][1].is_null());
    assert!(any["rates"][1].is_null());
    let report = std::fs::read_to_string(
        p.latest_report("data/lake-cdiscpilot-full")
            .join("report.html"),
    )
    .unwrap();
    assert!(!report.contains("NaN"), "no NaN in the report");
}

/// Every numeric leaf of a JSON value.
fn numbers(v: &Value) -> usize {
    match v {
        Value::Number(_) => 1,
        Value::Array(a) => a.iter().map(numbers).sum(),
        Value::Object(o) => o.values().map(numbers).sum(),
        _ => 0,
    }
}

/// Results as data: one record per number of analysis.json (each at its JSON pointer, with its analysis,
/// population, arms and statistic), the same as CSV, and the tables as CSV and RTF.
fn check_results_as_data(report: &std::path::Path, a: &Value) {
    let records: Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(
        records.len(),
        numbers(a),
        "one record per number of analysis.json"
    );
    for r in records {
        let at = a.pointer(r["path"].as_str().unwrap()).unwrap();
        assert_eq!(at.as_f64(), r["value"].as_f64(), "{r}");
    }
    let rd = records
        .iter()
        .find(|r| {
            r["analysis"] == "safety.overview"
                && r["parameter"] == "any event"
                && r["statistic"] == "risk_differences.estimate"
                && r["arms"] == "Xanomeline High Dose vs Placebo"
        })
        .expect("the any-event risk difference of the high dose");
    assert_eq!(rd["population"], "safety");
    assert!(
        rd["method"]
            .as_str()
            .unwrap()
            .contains("Wald risk difference")
    );
    let lsmean = records
        .iter()
        .find(|r| {
            r["analysis"] == "continuous"
                && r["arms"] == "Placebo"
                && r["path"].as_str().unwrap().contains("/lsmeans/0/estimate")
        })
        .expect("placebo's LS mean");
    assert_eq!(lsmean["population"], "efficacy");
    let csv = std::fs::read_to_string(report.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), records.len() + 1);
    assert!(csv.starts_with("analysis,population,parameter,arms,statistic,method,value,path\n"));
    let rtf = std::fs::read_to_string(report.join("tables.rtf")).unwrap();
    assert!(rtf.starts_with("{\\rtf1") && rtf.ends_with('}'));
    for title in [
        "Disposition: end-of-study status",
        "Adverse events by system organ class and preferred term",
        "ANCOVA of ADAS_CHG24 adjusted for ADAS_BL, SITEGR1",
        "Time to event",
    ] {
        assert!(rtf.contains(title), "tables.rtf lacks {title}");
    }
    let disposition = std::fs::read_to_string(report.join("tables/disposition.csv")).unwrap();
    assert!(disposition.starts_with("Status,Placebo (N = 86),"));
    assert!(disposition.contains("Completed,58 (67.4%),27 (32.1%),25 (29.8%)"));
}

/// The pilot's lab shifts (ADLBC: baseline against worst post-baseline indicator per parameter and arm, new
/// abnormalities) against R (crates/analysis/tests/reference/labs.R → labs.json).
fn check_lab_shifts(l: &Value) {
    let path = util::repo_root().join("crates/analysis/tests/reference/labs.json");
    let r: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(l["levels"], r["levels"]);
    let got = l["parameters"].as_array().unwrap();
    let want = r["parameters"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "parameters");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["parameter"], w["parameter"]);
        assert_eq!(
            g["subjects"], w["subjects"],
            "shift table of {}",
            w["parameter"]
        );
        assert_eq!(
            g["new_abnormal"], w["new_abnormal"],
            "new abnormalities of {}",
            w["parameter"]
        );
    }
}

/// The pilot's disposition (every ADSL subject: completed, discontinued by reason) against R's counts
/// (crates/analysis/tests/reference/disposition.R → disposition.json), rows in R's order.
fn check_disposition(d: &Value) {
    let path = util::repo_root().join("crates/analysis/tests/reference/disposition.json");
    let r: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let n: Vec<Value> = d["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[1].clone())
        .collect();
    assert_eq!(Value::Array(n), r["n"], "subjects per arm");
    let rows = d["rows"].as_array().unwrap();
    let want = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want.len(), "disposition rows: {d}");
    for (g, w) in rows.iter().zip(want) {
        assert_eq!(
            (&g["label"], &g["reason"], &g["subjects"]),
            (&w["label"], &w["reason"], &w["subjects"])
        );
    }
}

/// One safety row against R's (safety.R's layout): subjects and events per arm, risk differences, rates.
fn check_safety_row(got: &Value, want: &Value, what: &str) {
    assert_eq!(got["subjects"], want["subjects"], "{what}: subjects");
    assert_eq!(got["events"], want["events"], "{what}: events");
    for (mine, theirs) in [("risk_differences", "rd"), ("rates", "rate")] {
        for (k, e) in got[mine].as_array().unwrap().iter().enumerate() {
            for (j, key) in ["estimate", "ci_low", "ci_high"].iter().enumerate() {
                close(
                    f(&e[key]),
                    f(&want[theirs][k][j]),
                    1e-9,
                    &format!("{what}: {mine} {key}"),
                );
            }
        }
    }
}

/// The pilot's adverse-event tables against R (crates/analysis/tests/reference/safety.R → safety.json): every
/// row of the overview, of the system organ classes and their terms in R's order, and the worst severity.
fn check_safety(s: &Value) {
    let path = util::repo_root().join("crates/analysis/tests/reference/safety.json");
    let r: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let arms: Vec<Value> = s["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[0].clone())
        .collect();
    assert_eq!(Value::Array(arms), r["arms"]);
    let n: Vec<Value> = s["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[1].clone())
        .collect();
    assert_eq!(Value::Array(n), r["n"], "denominators");
    assert_eq!(s["counted"], r["records"], "counted records");
    for (k, py) in s["patient_years"].as_array().unwrap().iter().enumerate() {
        close(f(py), f(&r["patient_years"][k]), 1e-12, "patient-years");
    }
    let overview = s["overview"].as_array().unwrap();
    assert_eq!(overview.len(), r["overview"].as_array().unwrap().len());
    for (got, want) in overview.iter().zip(r["overview"].as_array().unwrap()) {
        check_safety_row(got, want, &format!("overview {}", want["label"]));
    }
    let socs = s["by_soc"].as_array().unwrap();
    let want_socs = r["by_soc"].as_array().unwrap();
    assert_eq!(socs.len(), want_socs.len(), "system organ classes");
    for (got, want) in socs.iter().zip(want_socs) {
        assert_eq!(got["soc"]["label"], want["label"], "SOC order");
        check_safety_row(&got["soc"], want, &format!("SOC {}", want["label"]));
        let terms = got["terms"].as_array().unwrap();
        let want_terms = want["terms"].as_array().unwrap();
        assert_eq!(terms.len(), want_terms.len(), "terms of {}", want["label"]);
        for (t, w) in terms.iter().zip(want_terms) {
            assert_eq!(t["label"], w["label"], "term order in {}", want["label"]);
            check_safety_row(t, w, &format!("term {}", w["label"]));
        }
    }
    assert_eq!(
        s["severity"]["subjects"], r["severity"]["subjects"],
        "worst severity"
    );
    assert_eq!(s["severity"]["unknown_records"], 0);
}

/// `config/examples/cdiscpilot_sdtm.yaml`: the pilot from its SDTM domains alone (DM as the subject table; VS,
/// DS and AE as record tables, Parquet), against pandas's own reading of the same files
/// (`data/examples/cdiscpilot/sdtm/make.py` → `expected.json`): the screen failures excluded and their records
/// quarantined by reason, discontinuation from DS by arm, the baseline vital signs (flagged records; the last
/// weight on or before the first dose) and the AE counts by arm.
#[test]
fn cdisc_pilot_from_sdtm_where_adam_is_missing_against_pandas() {
    let root = util::repo_root();
    let want: Value = serde_json::from_slice(
        &std::fs::read(root.join("data/examples/cdiscpilot/sdtm/expected.json")).unwrap(),
    )
    .unwrap();
    let (_, _, a, report) = run_pilot_example(
        "config/examples/cdiscpilot_sdtm.yaml",
        "data/examples/cdiscpilot/sdtm",
        &["dm.parquet", "vs.parquet", "ds.parquet", "ae.parquet"],
    );
    assert_eq!(report["rows_in"], want["screened"]);
    let screen_failures = report["excluded_by_filter"].as_u64().unwrap();
    let ds = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "ds")
        .unwrap();
    assert_eq!(
        ds["quarantine_rules"]["subject"].as_u64(),
        Some(screen_failures),
        "each screen failure's disposition record is quarantined: its subject is not in the clean table"
    );

    let arms: Vec<&str> = want["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for (i, arm) in a["arms"].as_array().unwrap().iter().enumerate() {
        assert_eq!(arm["arm"], arms[i]);
        assert_eq!(arm["n"], want["n"][i], "{arm}");
        assert_eq!(arm["events"], want["discontinued"][i], "{arm}");
    }
    let numeric = a["table1"]["numeric"].as_array().unwrap();
    for (column, w) in want["pivots"].as_object().unwrap() {
        let row = numeric
            .iter()
            .find(|n| n["variable"] == column.as_str())
            .unwrap_or_else(|| panic!("Table 1 has no row {column}"));
        for (i, arm) in row["arms"].as_array().unwrap().iter().enumerate() {
            assert_eq!(arm[1]["n"].as_u64(), w["n"][i].as_u64(), "{column} n");
            close(f(&arm[1]["mean"]), f(&w["mean"][i]), 1e-12, column);
        }
    }
}

/// `config/examples/colon_adtte.yaml`: an ADTTE-shaped record table with two parameters, death (the primary
/// endpoint) and recurrence (a secondary one), each pivoted to its subject by PARAMCD; both analysed by arm as R
/// analyses each from the trial's own file (`crates/analysis/tests/reference/colon_adtte.R`).
#[test]
fn two_adtte_parameters_each_an_endpoint_against_r() {
    let path = util::repo_root().join("crates/analysis/tests/reference/colon_adtte.json");
    let r: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let (_, _, a, _) = run_pilot_example(
        "config/examples/colon_adtte.yaml",
        "data/examples/colon_adtte",
        &["adsl.csv", "adtte.csv"],
    );
    let secondary = &a["secondary_survival"];
    assert_eq!(secondary.as_array().unwrap().len(), 1);
    assert_eq!(secondary[0]["name"], "recurrence");
    assert_eq!(secondary[0]["left_out"], 0);
    for (s, want) in [
        (&a["survival"], &r["death"]),
        (&secondary[0]["survival"], &r["recurrence"]),
    ] {
        for (i, c) in s["curves"].as_array().unwrap().iter().enumerate() {
            assert_eq!(c["arm"], r["arms"][i]);
            assert_eq!(c["n"], want["n"][i], "{c}");
            assert_eq!(c["events"], want["events"][i], "{c}");
        }
        close(
            f(&s["logrank_chi_square"]),
            f(&want["logrank"]),
            1e-9,
            "log-rank",
        );
        assert_eq!(s["logrank_df"], want["df"]);
        for (j, t) in s["cox"]["terms"].as_array().unwrap().iter().enumerate() {
            close(f(&t["coef"]), f(&want["coef"][j]), 1e-6, "Cox coef");
            close(f(&t["se"]), f(&want["se"][j]), 1e-6, "Cox se");
        }
    }
}

/// The safety tables and the disposition on flat CSV exports (a subject file and an adverse-event file, as a
/// trial team exports them from its database, not ADaM), counted by hand: the denominators are the safety
/// population's subjects per arm, a subject with two events of one term counts once, events count each record,
/// a record of a subject outside the population is a note.
#[test]
fn safety_and_disposition_on_flat_exports() {
    let p = Project::sample();
    p.write(
        "data/flat/subjects.csv",
        "subject,arm,treated,days,status,reason\n\
         1,Placebo,yes,100,completed,\n\
         2,Placebo,yes,200,withdrawn,Adverse event\n\
         3,Placebo,no,0,withdrawn,Consent\n\
         4,Active,yes,150,completed,\n\
         5,Active,yes,50,withdrawn,Adverse event\n\
         6,Active,yes,365.25,completed,\n",
    );
    p.write(
        "data/flat/ae.csv",
        "subject,body_system,term,grade,serious\n\
         1,Nervous system,Headache,1,no\n\
         4,Nervous system,Headache,2,no\n\
         4,Nervous system,Headache,3,yes\n\
         5,Gastrointestinal,Nausea,1,no\n\
         6,Nervous system,Dizziness,2,no\n\
         3,Gastrointestinal,Nausea,1,no\n",
    );
    let cfg = "config/flat.yaml";
    p.write(
        cfg,
        r#"
storage: {lake: file://data/lake-flat, models: file://models-flat}
dataset:
  name: flat_safety
  sources:
    - {name: subjects, url: file://data/flat/subjects.csv}
    - {name: ae, url: file://data/flat/ae.csv}
  id: subject
  arm: {column: arm, reference: Placebo}
  outcome: {column: status, positive: [withdrawn], negative: [completed]}
  numeric: [days]
  extra: {treated: string, status: string, reason: string}
  populations: {treated: "treated = 'yes'"}
  tables:
    ae:
      sources: [ae]
      columns: [body_system, term, grade, serious]
      flags: {serious: "serious = 'yes'", grade3: "TRY_CAST(grade AS INT) >= 3"}
privacy: {key_env: TRIALFLOW_PSEUDONYM_KEY}
preprocessing: {split: {train: 0.6, val: 0.2, test: 0.2, salt: s}}
models: {model_1: {hidden: [4]}, model_2: {hidden: [4]}, baseline: {hidden: []}}
training: {seed: 1, epochs: 1, batch_size: 4, learning_rate: 0.01, patience: 1}
serving: {host: 127.0.0.1, port: 8501, model_name: flat, poll_seconds: 5, max_body_bytes: 100000, max_rows: 10}
deployment: {checks: [{metric: roc_auc, min: 0.0}]}
analysis:
  disposition: {status: status, reason: reason, completed: [completed]}
  safety:
    table: ae
    population: treated
    overview: [serious, grade3]
    soc: body_system
    term: term
    severity: {column: grade, levels: ["1", "2", "3"]}
    exposure: days
"#,
    );
    let o = p.run_keyed(&["pipeline", "data", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = p.run_keyed(&["pipeline", "full", "--only", "analyze", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let a = p.report_json("data/lake-flat");
    let s = &a["safety"];
    // arms: reference first; the treated population: Placebo 1, 2; Active 4, 5, 6
    assert_eq!(
        s["arms"],
        serde_json::json!([["Placebo", 2], ["Active", 3]])
    );
    assert_eq!(s["outside_population"], 1, "subject 3 is not treated");
    let any = &s["overview"][0];
    assert_eq!(any["subjects"], serde_json::json!([1, 3]));
    assert_eq!(any["events"], serde_json::json!([1, 4]));
    close(
        f(&any["risk_differences"][0]["estimate"]),
        1.0 - 0.5,
        1e-12,
        "RD",
    );
    // Placebo: 300 days; Active: 565.25 days = 1.5476... years; 3 subjects per 100 patient-years
    close(
        f(&any["rates"][1]["estimate"]),
        300.0 * 365.25 / 565.25,
        1e-12,
        "rate",
    );
    let serious = &s["overview"][1];
    assert_eq!(serious["label"], "serious");
    assert_eq!(serious["subjects"], serde_json::json!([0, 1]));
    assert_eq!(
        s["overview"][2]["subjects"],
        serde_json::json!([0, 1]),
        "grade ≥ 3"
    );
    let nervous = &s["by_soc"][0];
    assert_eq!(
        nervous["soc"]["label"], "Nervous system",
        "the most frequent class first"
    );
    assert_eq!(nervous["soc"]["subjects"], serde_json::json!([1, 2]));
    assert_eq!(nervous["terms"][0]["label"], "Headache");
    assert_eq!(nervous["terms"][0]["subjects"], serde_json::json!([1, 1]));
    assert_eq!(nervous["terms"][0]["events"], serde_json::json!([1, 2]));
    // worst grade per subject: Placebo 1 → 1; Active 4 → 3, 5 → 1, 6 → 2
    assert_eq!(
        s["severity"]["subjects"],
        serde_json::json!([[1, 1], [0, 1], [0, 1]])
    );
    let d = &a["disposition"];
    assert_eq!(
        d["rows"][0]["subjects"],
        serde_json::json!([1, 2]),
        "completed"
    );
    assert_eq!(d["rows"][1]["label"], "withdrawn");
    assert_eq!(d["rows"][1]["subjects"], serde_json::json!([2, 1]));
    assert_eq!(d["rows"][2]["label"], "Adverse event");
    assert_eq!(d["rows"][2]["subjects"], serde_json::json!([1, 1]));

    // contract mistakes in the safety section are config errors (exit 2) naming the key
    let text_of = std::fs::read_to_string(p.path(cfg)).unwrap();
    for (from, to, key) in [
        (
            "overview: [serious, grade3]",
            "overview: [serious, fatal]",
            "analysis.safety.overview[1]",
        ),
        (
            "    term: term\n",
            "    term: preferred\n",
            "analysis.safety.term",
        ),
        (
            "    table: ae\n",
            "    table: adverse\n",
            "analysis.safety.table",
        ),
    ] {
        assert!(text_of.contains(from), "{from}");
        p.write(cfg, &text_of.replace(from, to));
        let o = p.run(&["check-config", "--config", cfg]);
        assert_eq!(o.status.code(), Some(2), "{from} → {to}: {}", text(&o));
        assert!(text(&o).contains(key), "{from} → {to}: {}", text(&o));
    }
}
