//! Shared set-up of the preprocess tests.

// Each test binary uses part of this module.
#![allow(dead_code)]

use trialflow_core::Storage;
use trialflow_core::lake::{self, Current, CurrentObject};

/// Puts `csv` into the lake as the one current raw object of source `t`, as `ingest` would.
pub async fn put_raw(lake: &Storage, csv: &str, rows: u64) {
    lake.put("raw/t/x.csv", csv.to_string()).await.unwrap();
    let current = Current {
        objects: vec![CurrentObject {
            source: "t".into(),
            url: "file:///t.csv".into(),
            object: "raw/t/x.csv".into(),
            format: lake::SourceFormat::Csv,
            delimiter: ',',
            quote: '"',
            sha256: String::new(),
            rows,
        }],
    };
    lake.put_json(lake::RAW_CURRENT, &current).await.unwrap();
}

/// A tiny trial with one of each problem the clean stage handles (see `clean.rs` for what each row tests).
pub const TINY_CSV: &str = "\
pid,trt,cnsr,days,age,sex,status,grp
P1,Active,0,100,50,m,dead,a
P2,placebo,1,200,60,F,alive,b
P3,PBO,0,50,abc,F,alive,a
P4,active,1,300,150,M,alive,a
P5,Active,0,80,40,X,alive,a
P6,placebo,1,90,45,M,maybe,a
P1,Active,0,100,50,m,dead,a
P7,placebo,0,10,70,F,dead,z
P8,placebo,-1,10,70,F,dead,a
,placebo,0,10,70,F,dead,a
P2,placebo,1,999,61,F,alive,b
P9,placebo,1,-5,61,F,alive,a
";

/// The tiny trial's config: `outcome` is the contract's outcome mapping, `preprocessing` extra keys of that
/// section (e.g. `, sql_dir: …`).
pub fn tiny_yaml(dir: &std::path::Path, outcome: &str, preprocessing: &str) -> String {
    format!(
        r#"
storage: {{lake: "file://{d}/lake", models: "file://{d}/models"}}
dataset:
  name: tiny
  sources: [{{name: t, url: "file://{d}/t.csv"}}]
  id: pid
  arm: {{column: trt, reference: placebo}}
  outcome: {outcome}
  time_to_event: {{time: days, event: cnsr, convention: cdisc_cnsr}}
  numeric: [age]
  categorical: [sex]
  extra: {{grp: string}}
  rules:
    age: {{min: 18, max: 100, action: "null"}}
    sex: {{allowed: [F, M]}}
    trt: {{allowed: [placebo, active], synonyms: {{pbo: placebo}}}}
  filter: grp <> 'z'
privacy: {{key_env: TRIALFLOW_TEST_UNSET_KEY, dev_key: k, allow_dev_key: true}}
preprocessing: {{split: {{train: 0.6, val: 0.2, test: 0.2, salt: s}}, max_dropped_share: 1.0{preprocessing}}}
{tail}
"#,
        tail = CONFIG_TAIL,
        d = dir.display()
    )
}

/// A temporary directory holding the tiny trial's source file and its config.
pub fn tiny(outcome: &str, preprocessing: &str) -> (tempfile::TempDir, trialflow_core::Config) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), TINY_CSV).unwrap();
    let cfg = trialflow_core::Config::from_yaml(
        &tiny_yaml(dir.path(), outcome, preprocessing),
        "tiny.yaml",
        &[],
    )
    .unwrap();
    (dir, cfg)
}

/// The config sections the preprocessing tests do not exercise (models, training, serving, deployment).
pub const CONFIG_TAIL: &str = "models: {m: {hidden: []}}
training: {seed: 1, epochs: 1, batch_size: 4, learning_rate: 0.01, patience: 1}
serving: {host: 127.0.0.1, port: 1, model_name: m, poll_seconds: 1, max_body_bytes: 1000, max_rows: 10}
deployment: {checks: [{metric: roc_auc, min: 0.5}]}";

/// The clean table's rows in input order (one source: by `_line`). The table itself keeps input order only
/// within each split: its row groups each hold one split's rows (see `layout.rs`).
pub fn by_line(batches: Vec<arrow::array::RecordBatch>) -> Vec<arrow::array::RecordBatch> {
    let Some(first) = batches.first() else {
        return batches;
    };
    let all = arrow::compute::concat_batches(&first.schema(), &batches).unwrap();
    let line = all.column_by_name("_line").unwrap();
    let order = arrow::compute::sort_to_indices(line, None, None).unwrap();
    vec![arrow::compute::take_record_batch(&all, &order).unwrap()]
}
