//! The clean stage, data first: a tiny trial table in, the expected accepted rows and quarantine reasons out.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use crate::util;

use arrow::array::RecordBatch;
use trialflow_core::lake;
use trialflow_core::table::{self, read_parquet_prefix};
use trialflow_core::{Config, Storage};

fn config(dir: &std::path::Path, outcome: &str) -> Config {
    Config::from_yaml(&util::tiny_yaml(dir, outcome, ""), "tiny.yaml", &[]).unwrap()
}

async fn run(
    outcome: &str,
) -> (
    Vec<RecordBatch>,
    Vec<RecordBatch>,
    trialflow_preprocess::CleanReport,
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), util::TINY_CSV).unwrap();
    let cfg = config(dir.path(), outcome);
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    util::put_raw(&lake, util::TINY_CSV, 12).await;
    let report = trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
    let clean = read_parquet_prefix(&lake, lake::CLEAN).await.unwrap();
    let quarantine = read_parquet_prefix(&lake, lake::QUARANTINE).await.unwrap();
    (clean, quarantine, report)
}

fn col_str(b: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    table::strings(b, name).unwrap()
}

fn col_i64(b: &[RecordBatch], name: &str) -> Vec<Option<i64>> {
    table::ints(b, name).unwrap()
}

fn col_f64(b: &[RecordBatch], name: &str) -> Vec<Option<f64>> {
    table::floats(b, name).unwrap()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test]
async fn value_mapping_cdisc_events_rules_filter_and_duplicates() {
    let (clean, quarantine, report) =
        run("{column: status, positive: [dead], negative: [alive]}").await;
    // accepted: P1, P2, P4 in input order
    assert_eq!(col_i64(&clean, "_line"), [Some(2), Some(3), Some(5)]);
    assert_eq!(
        col_str(&clean, "arm"),
        [s("active"), s("placebo"), s("active")]
    );
    assert_eq!(col_str(&clean, "sex"), [s("M"), s("F"), s("M")]);
    assert_eq!(col_i64(&clean, "outcome"), [Some(1), Some(0), Some(0)]);
    // CDISC: CNSR 0 = event, 1 = censored
    assert_eq!(col_i64(&clean, "event"), [Some(1), Some(0), Some(0)]);
    assert_eq!(
        col_f64(&clean, "time"),
        [Some(100.0), Some(200.0), Some(300.0)]
    );
    // age 150 breaks a `null` rule: the value is blanked, the row kept
    assert_eq!(col_f64(&clean, "age"), [Some(50.0), Some(60.0), None]);
    // ids are pseudonyms, never the raw ids
    let ids = col_str(&clean, "subject_id");
    assert!(ids.iter().all(|i| {
        i.as_ref()
            .is_some_and(|i| i.len() == 32 && !i.starts_with('P'))
    }));

    let mut reasons: Vec<(i64, String, String)> = col_i64(&quarantine, "line")
        .into_iter()
        .zip(col_str(&quarantine, "column"))
        .zip(col_str(&quarantine, "rule"))
        .map(|((l, c), r)| (l.unwrap(), c.unwrap(), r.unwrap()))
        .collect();
    reasons.sort();
    let expect: Vec<(i64, &str, &str)> = vec![
        (4, "age", "parse"),
        (6, "sex", "allowed"),
        (7, "status", "outcome"),
        (8, "pid", "duplicate"),
        (9, "", "filter"),
        (10, "cnsr", "event"),
        (11, "pid", "required"),
        (12, "pid", "duplicate"),
        (13, "days", "time"),
    ];
    let got: Vec<(i64, &str, &str)> = reasons
        .iter()
        .map(|(l, c, r)| (*l, c.as_str(), r.as_str()))
        .collect();
    assert_eq!(got, expect);
    // messages never carry the offending value
    for r in col_str(&quarantine, "reason").into_iter().flatten() {
        assert!(!r.contains("abc") && !r.contains("maybe"), "{r}");
    }
    assert_eq!(
        (report.rows_in, report.accepted, report.quarantined),
        (12, 3, 9)
    );
    assert_eq!(
        (
            report.exact_duplicates,
            report.repeated_ids,
            report.excluded_by_filter
        ),
        (1, 1, 1)
    );
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.column == "age" && v.rule == "range" && v.action == "null" && v.rows == 1)
    );
}

#[tokio::test]
async fn outcome_as_sql_expression() {
    let (clean, _, report) = run("{expression: \"days < 150\"}").await;
    // the outcome column no longer constrains rows: P6's `maybe` is fine now
    assert_eq!(
        col_i64(&clean, "_line"),
        [Some(2), Some(3), Some(5), Some(7)]
    );
    assert_eq!(
        col_i64(&clean, "outcome"),
        [Some(1), Some(0), Some(0), Some(1)]
    );
    assert_eq!(report.rows_in, report.accepted + report.quarantined);
}

#[tokio::test]
async fn the_feature_spec_carries_the_unseen_level_policy() {
    use trialflow_core::features::{FeatureSpec, UnseenLevel};
    for (extra, expected) in [
        ("", UnseenLevel::Zeros),
        (", unseen_level: error", UnseenLevel::Error),
    ] {
        let (_dir, cfg) = util::tiny(
            "{column: status, positive: [dead], negative: [alive]}",
            extra,
        );
        let lake = Storage::open(&cfg.storage.lake).unwrap();
        util::put_raw(&lake, util::TINY_CSV, 12).await;
        trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
        trialflow_preprocess::features(&cfg, &lake).await.unwrap();
        let spec: FeatureSpec = lake.get_json(lake::FEATURE_SPEC).await.unwrap();
        assert!(!spec.categorical.is_empty());
        assert!(
            spec.categorical.iter().all(|c| c.unseen == expected),
            "{extra}"
        );
    }
}
