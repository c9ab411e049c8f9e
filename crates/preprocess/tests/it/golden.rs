//! Golden tests of the clean stage's SQL, data first: each `tests/golden/<case>/` holds `contract.yaml` (a
//! dataset contract without name and sources) and `input.csv`; `expected.txt` is what comes out of `clean`:
//! the clean rows, the quarantine and the report's counts. After an intended change, refresh every case with
//!
//!     UPDATE_EXPECT=1 cargo nextest run --workspace -E 'test(golden::)'
//!
//! and review the diff of `expected.txt`. The update mode rewrites the files and then fails (so that a run with
//! it never passes), and it is refused under CI.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use crate::util;

use std::path::{Path, PathBuf};

use datafusion::arrow::util::pretty::pretty_format_batches;
use trialflow_core::table::read_parquet_prefix;
use trialflow_core::{Config, Storage, lake};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("contract.yaml").exists())
        .collect();
    out.sort();
    out
}

fn config(case: &Path, work: &Path) -> Config {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let contract: String = std::fs::read_to_string(case.join("contract.yaml"))
        .unwrap()
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    let yaml = format!(
        r#"
storage: {{lake: "file://{w}/lake", models: "file://{w}/models"}}
dataset:
  name: {name}
  sources: [{{name: t, url: "file://{w}/input.csv"}}]
{contract}
privacy: {{key_env: TRIALFLOW_TEST_UNSET_KEY, dev_key: golden, allow_dev_key: true}}
preprocessing: {{split: {{train: 0.6, val: 0.2, test: 0.2, salt: s}}, max_dropped_share: 1.0}}
{tail}
"#,
        tail = util::CONFIG_TAIL,
        w = work.display()
    );
    Config::from_yaml(&yaml, &format!("{name}/contract.yaml"), &[]).unwrap()
}

/// `clean`'s outputs as text: tables pretty-printed, then the counts.
async fn render(case: &Path) -> String {
    let work = tempfile::tempdir().unwrap();
    let input = std::fs::read_to_string(case.join("input.csv")).unwrap();
    std::fs::write(work.path().join("input.csv"), &input).unwrap();
    let cfg = config(case, work.path());
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    let rows = input.lines().count().saturating_sub(1) as u64;
    util::put_raw(&lake, &input, rows).await;
    let r = trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
    assert_eq!(
        r.rows_in,
        r.accepted + r.quarantined,
        "{}: rows in = accepted + quarantined",
        case.display()
    );
    let table = |batches: Vec<arrow::array::RecordBatch>| {
        // `_source` is the temporary directory: not part of the result.
        let batches: Vec<_> = batches
            .iter()
            .map(|b| {
                let keep: Vec<usize> = (0..b.num_columns())
                    .filter(|&i| {
                        !["_source", "source"].contains(&b.schema().field(i).name().as_str())
                    })
                    .collect();
                b.project(&keep).unwrap()
            })
            .collect();
        pretty_format_batches(&batches).unwrap().to_string()
    };
    let clean = table(util::by_line(
        read_parquet_prefix(&lake, lake::CLEAN).await.unwrap(),
    ));
    let quarantine = table(read_parquet_prefix(&lake, lake::QUARANTINE).await.unwrap());
    let violations: Vec<String> = r
        .violations
        .iter()
        .map(|v| format!("{}/{}/{}: {}", v.column, v.rule, v.action, v.rows))
        .collect();
    format!(
        "clean ({} rows)\n{clean}\n\nquarantine ({} rows)\n{quarantine}\n\nrows in {}, accepted {}, quarantined {}; \
         excluded by the filter {}, exact duplicates {}, repeated ids {}\nviolations: {}\n",
        r.accepted,
        r.quarantined,
        r.rows_in,
        r.accepted,
        r.quarantined,
        r.excluded_by_filter,
        r.exact_duplicates,
        r.repeated_ids,
        violations.join(", ")
    )
}

#[tokio::test]
async fn every_case_gives_its_expected_output() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    assert!(
        !(update && std::env::var_os("CI").is_some()),
        "UPDATE_EXPECT is refused under CI: golden files are reviewed changes, never rewritten by a CI run"
    );
    let cases = cases();
    assert!(cases.len() >= 4, "the golden cases are missing");
    let mut stale = Vec::new();
    let mut rewritten = Vec::new();
    for case in &cases {
        let got = render(case).await;
        let path = case.join("expected.txt");
        if update {
            if std::fs::read_to_string(&path).unwrap_or_default() != got {
                std::fs::write(&path, &got).unwrap();
                rewritten.push(path.display().to_string());
            }
        } else if std::fs::read_to_string(&path).unwrap_or_default() != got {
            eprintln!("--- {} differs; now:\n{got}", path.display());
            stale.push(case.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        !update,
        "UPDATE_EXPECT: rewrote {rewritten:?}; review the diff, then run the tests without UPDATE_EXPECT"
    );
    assert!(
        stale.is_empty(),
        "golden cases {stale:?} differ from expected.txt (output above). If the change is intended: \
         UPDATE_EXPECT=1 cargo nextest run --workspace -E 'test(golden::)', then review the diff"
    );
}
