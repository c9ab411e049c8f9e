//! Bad input to preprocessing, each a clear error: what is wrong and where, never a panic, never a value.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use crate::util;

use trialflow_core::{Config, ErrorKind, Storage, lake};

const OUTCOME: &str = "{column: status, positive: [dead], negative: [alive]}";

fn yaml_with(dir: &std::path::Path, from: &str, to: &str) -> String {
    let yaml = util::tiny_yaml(dir, OUTCOME, "");
    assert!(yaml.contains(from), "{from}");
    yaml.replacen(from, to, 1)
}

fn config_error(dir: &std::path::Path, from: &str, to: &str) -> String {
    std::fs::write(dir.join("t.csv"), util::TINY_CSV).unwrap();
    let e = Config::from_yaml(&yaml_with(dir, from, to), "tiny.yaml", &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    e.to_string()
}

#[test]
fn a_rule_on_a_missing_column_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let msg = config_error(
        dir.path(),
        "    sex: {allowed: [F, M]}",
        "    sex: {allowed: [F, M]}\n    cholesterol: {min: 0}",
    );
    assert!(msg.contains("cholesterol"), "{msg}");
}

#[test]
fn split_fractions_that_do_not_sum_to_one_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let msg = config_error(dir.path(), "test: 0.2, salt", "test: 0.3, salt");
    assert!(msg.contains("preprocessing.split"), "{msg}");
}

async fn clean_error(yaml: &str, dir: &std::path::Path, ingest: bool) -> trialflow_core::Error {
    std::fs::write(dir.join("t.csv"), util::TINY_CSV).unwrap();
    let cfg = Config::from_yaml(yaml, "tiny.yaml", &[]).unwrap();
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    if ingest {
        util::put_raw(&lake, util::TINY_CSV, 12).await;
    }
    trialflow_preprocess::clean(&cfg, &lake).await.unwrap_err()
}

#[tokio::test]
async fn an_outcome_expression_that_is_not_boolean_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = util::tiny_yaml(dir.path(), "{expression: \"days + 1\"}", "");
    let e = clean_error(&yaml, dir.path(), true).await;
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("tiny.yaml"), "{e}");
}

#[tokio::test]
async fn every_row_filtered_out_is_bad_data_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = yaml_with(dir.path(), "filter: grp <> 'z'", "filter: grp = 'nobody'");
    let e = clean_error(&yaml, dir.path(), true).await;
    assert_eq!(e.kind(), ErrorKind::BadData, "{e}");
    assert!(e.to_string().contains("none of the 12 rows"), "{e}");
    // the quarantine still says why, row by row
    let cfg = Config::from_yaml(&yaml, "tiny.yaml", &[]).unwrap();
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    let q = trialflow_core::table::read_parquet_prefix(&lake, lake::QUARANTINE)
        .await
        .unwrap();
    assert_eq!(q.iter().map(|b| b.num_rows()).sum::<usize>(), 12);
}

#[tokio::test]
async fn a_lake_with_nothing_ingested_says_run_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = util::tiny_yaml(dir.path(), OUTCOME, "");
    let e = clean_error(&yaml, dir.path(), false).await;
    assert_eq!(e.kind(), ErrorKind::BadData, "{e}");
    assert!(e.to_string().contains("ingest"), "{e}");
}

#[tokio::test]
async fn a_column_whose_type_changes_between_sources_is_read_as_text_and_checked() {
    use arrow::array::{Float64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let yaml = util::tiny_yaml(dir.path(), OUTCOME, "");
    std::fs::write(dir.path().join("t.csv"), util::TINY_CSV).unwrap();
    let cfg = Config::from_yaml(&yaml, "tiny.yaml", &[]).unwrap();
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    util::put_raw(&lake, util::TINY_CSV, 12).await;
    // a second source, Parquet, where `age` is a float and `days` is text (one unparseable)
    let text = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as arrow::array::ArrayRef;
    let schema = Arc::new(Schema::new(
        ["pid", "trt", "cnsr", "days", "age", "sex", "status", "grp"]
            .iter()
            .map(|c| {
                let t = if *c == "age" {
                    DataType::Float64
                } else {
                    DataType::Utf8
                };
                Field::new(*c, t, true)
            })
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            text(&["Q1", "Q2"]),
            text(&["active", "placebo"]),
            text(&["0", "1"]),
            text(&["12.5", "soon"]),
            Arc::new(Float64Array::from(vec![44.5, 52.0])),
            text(&["F", "M"]),
            text(&["dead", "alive"]),
            text(&["a", "a"]),
        ],
    )
    .unwrap();
    let bytes = trialflow_core::table::encode_parquet(schema, &[batch]).unwrap();
    lake.put("raw/p/x.parquet", bytes).await.unwrap();
    let mut current: lake::Current = lake.get_json(lake::RAW_CURRENT).await.unwrap();
    let mut second = current.objects[0].clone();
    second.source = "p".into();
    second.url = "file:///p.parquet".into();
    second.object = "raw/p/x.parquet".into();
    second.format = lake::SourceFormat::Parquet;
    second.rows = 2;
    current.objects.push(second);
    lake.put_json(lake::RAW_CURRENT, &current).await.unwrap();
    let report = trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
    assert_eq!(report.rows_in, 14);
    assert_eq!(report.accepted, 3 + 1, "Q1 accepted");
    assert_eq!(report.rows_in, report.accepted + report.quarantined);
    let p = report
        .per_source
        .iter()
        .find(|s| s.source == "file:///p.parquet")
        .unwrap();
    assert_eq!((p.rows_in, p.accepted, p.quarantined), (2, 1, 1));
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.column == "days" && v.rule == "parse" && v.rows == 1),
        "{:?}",
        report.violations
    );
}
