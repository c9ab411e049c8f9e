//! Batch scoring (`trialflow predict`): CSV and Parquet in and out, rows that cannot be scored marked with
//! their reason, whole-file problems as errors naming the file, the line or the column; no partial output.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use arrow::array::Array;

use crate::common::*;
use trialflow_core::Storage;
use trialflow_serve::batch::score_file;

fn model(repo: &Path) -> std::sync::Arc<trialflow_serve::LoadedVersion> {
    let store = Storage::open(&format!("file://{}", repo.display())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(trialflow_serve::load_version(&store, "cv", None))
        .unwrap()
}

const HEADER: &str = "subject,age,weight_kg,height_cm,arm,sex,smoker";

#[test]
fn csv_and_parquet_scoring_with_row_level_errors() {
    let repo = tempfile::tempdir().unwrap();
    write_version(repo.path(), "cv", 1, 11, true);
    write_version(repo.path(), "cv", 2, 22, true);
    let m = model(repo.path());
    assert_eq!(m.version, 2, "the newest blessed version");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        format!(
            "\u{feff}{HEADER}\r\nS1,67,82.5,176,Treatment,male,no\r\nS2,sixty,82.5,176,Treatment,F,no\r\nS3,45,,176,Treatment,F,no\r\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("out/scored.csv");
    let r = score_file(&m, &input, &out).unwrap();
    assert_eq!((r.rows, r.scored, r.failed), (3, 2, 1));
    let mut rdr = csv::Reader::from_path(&out).unwrap();
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "subject",
            "age",
            "weight_kg",
            "height_cm",
            "arm",
            "sex",
            "smoker",
            "probability",
            "error"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let a = record(67.0, "male");
    let mut c = record(45.0, "F");
    c["weight_kg"] = serde_json::Value::Null;
    let want = expected(22, &[encoded(&a), encoded(&c)].concat());
    let p0: f32 = rows[0][7].parse().unwrap();
    let p2: f32 = rows[2][7].parse().unwrap();
    assert!((p0 - want[0]).abs() < 1e-6 && (p2 - want[1]).abs() < 1e-6);
    assert_eq!(&rows[1][7], "");
    assert_eq!(&rows[1][8], "age: expected a number");

    // Parquet out, and back in: the same probabilities
    let pq = dir.path().join("scored.parquet");
    score_file(&m, &input, &pq).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&pq).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let b = reader.into_iter().next().unwrap().unwrap();
    let probs = b
        .column_by_name("probability")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Float32Array>()
        .unwrap()
        .clone();
    assert_eq!(probs.len(), 3);
    assert!(probs.is_null(1));
    assert!((probs.value(0) - want[0]).abs() < 1e-6 && (probs.value(2) - want[1]).abs() < 1e-6);
    let again = dir.path().join("again.csv");
    let err = score_file(&m, &pq, &again).unwrap_err();
    assert!(err.to_string().contains("column `probability`"), "{err}");
}

#[test]
fn whole_file_problems_are_errors_and_leave_no_output() {
    let repo = tempfile::tempdir().unwrap();
    write_version(repo.path(), "cv", 1, 11, true);
    let m = model(repo.path());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let cases = [
        (
            "no_sex.csv",
            "subject,age,weight_kg,height_cm,arm,smoker\nS1,60,80,170,placebo,no\n".to_string(),
            "column `sex`",
        ),
        (
            "ragged.csv",
            format!("{HEADER}\nS1,60,80,170,placebo,F,no\nS2,61,80\n"),
            "line 3: expected 7 fields",
        ),
        ("empty.csv", String::new(), "no header"),
        ("header_only.csv", format!("{HEADER}\n"), "no data rows"),
        (
            "bad.parquet",
            "not parquet".to_string(),
            "not a readable Parquet file",
        ),
    ];
    for (name, text, needle) in cases {
        let input = dir.path().join(name);
        std::fs::write(&input, text).unwrap();
        let err = score_file(&m, &input, &out).unwrap_err().to_string();
        assert!(err.contains(needle), "{name}: {err}");
        assert!(
            err.contains(name),
            "{name}: the error names the file: {err}"
        );
        assert!(!out.exists(), "{name}: partial output left behind");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    let err = score_file(&m, &dir.path().join("x.txt"), &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains(".csv or .parquet"), "{err}");
}

/// A time-to-event model scores a file into its risk score and the survival probability at each of its
/// default times (`survival_<t>`), empty on a row that could not be scored.
#[test]
fn time_to_event_scoring_writes_risk_and_survival_columns() {
    let repo = tempfile::tempdir().unwrap();
    write_survival_version(repo.path(), "cv", 1, 44);
    let m = model(repo.path());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        format!("{HEADER}\nS1,67,82.5,176,Treatment,male,no\nS2,sixty,82.5,176,Treatment,F,no\n"),
    )
    .unwrap();
    let out = dir.path().join("scored.csv");
    let r = score_file(&m, &input, &out).unwrap();
    assert_eq!((r.rows, r.scored, r.failed), (2, 1, 1));
    let mut rdr = csv::Reader::from_path(&out).unwrap();
    let headers: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers[7..],
        ["risk_score", "survival_1", "survival_2", "error"]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let risk = expected_outputs(44, &encoded(&record(67.0, "male")))[0];
    let got: Vec<f32> = (7..10).map(|i| rows[0][i].parse().unwrap()).collect();
    let want = [
        risk,
        (-0.1 * f64::from(risk).exp()).exp() as f32,
        (-0.2 * f64::from(risk).exp()).exp() as f32,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    assert!((7..10).all(|i| rows[1][i].is_empty()));
}
