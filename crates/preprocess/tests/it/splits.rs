//! Split assignment, data first: a generated trial of 600 subjects in 12 sites goes through `clean` and
//! `features` under each split mode, and the splits are checked for what each mode promises.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use crate::util;

use std::collections::{BTreeMap, BTreeSet};

use trialflow_core::features::FeatureSpec;
use trialflow_core::lake;
use trialflow_core::table::{self, read_parquet_prefix};
use trialflow_core::{Config, Storage};
use trialflow_preprocess::udf;

const SUBJECTS: usize = 600;

/// Subjects with a deterministic pseudo-random outcome (about 20% events) and site.
fn csv() -> String {
    let mut out = String::from("pid,trt,site,age,sex,dead\n");
    let mut state: u64 = 12345;
    for i in 0..SUBJECTS {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let r = (state >> 33) as usize;
        let arm = if r.is_multiple_of(2) {
            "placebo"
        } else {
            "active"
        };
        let dead = u8::from(r % 100 < 20);
        out.push_str(&format!(
            "P{i:04},{arm},S{:02},{},{},{dead}\n",
            (r >> 8) % 12,
            40 + (r >> 4) % 40,
            if (r >> 12).is_multiple_of(2) {
                "F"
            } else {
                "M"
            }
        ));
    }
    out
}

fn yaml(dir: &std::path::Path, split: &str) -> String {
    format!(
        r#"
storage: {{lake: "file://{d}/lake", models: "file://{d}/models"}}
dataset:
  name: splits
  sources: [{{name: t, url: "file://{d}/t.csv"}}]
  id: pid
  arm: {{column: trt, reference: placebo}}
  site: site
  outcome: {{column: dead}}
  numeric: [age]
  categorical: [sex]
  rules:
    sex: {{allowed: [F, M]}}
    trt: {{allowed: [placebo, active]}}
privacy: {{key_env: TRIALFLOW_TEST_UNSET_KEY, dev_key: k, allow_dev_key: true}}
preprocessing: {{split: {{train: 0.6, val: 0.2, test: 0.2, salt: s{split}}}}}
{tail}
"#,
        tail = util::CONFIG_TAIL,
        d = dir.display()
    )
}

fn config(dir: &std::path::Path, split: &str) -> Config {
    Config::from_yaml(&yaml(dir, split), "splits.yaml", &[]).unwrap()
}

/// (split, site, outcome) of every subject, by pseudonymized id.
async fn assign(split: &str) -> BTreeMap<String, (String, String, i64)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), csv()).unwrap();
    let cfg = config(dir.path(), split);
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    util::put_raw(&lake, &csv(), SUBJECTS as u64).await;
    trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
    trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    let mut out = BTreeMap::new();
    for s in lake::SPLITS {
        let b = read_parquet_prefix(&lake, &format!("{}split={s}/", lake::FEATURES))
            .await
            .unwrap();
        let ids = table::strings(&b, "subject_id").unwrap();
        let sites = table::strings(&b, "site").unwrap();
        let outcomes = table::ints(&b, "outcome").unwrap();
        for ((id, site), y) in ids.into_iter().zip(sites).zip(outcomes) {
            out.insert(id.unwrap(), (s.to_string(), site.unwrap(), y.unwrap()));
        }
    }
    assert_eq!(out.len(), SUBJECTS, "every subject in exactly one split");
    out
}

/// The feature spec that `clean` + `features` compute from `csv` under the default split.
async fn spec_of(csv: &str) -> FeatureSpec {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    let cfg = config(dir.path(), "");
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    util::put_raw(&lake, csv, SUBJECTS as u64).await;
    trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
    trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    lake.get_json(lake::FEATURE_SPEC).await.unwrap()
}

/// Rewrites the age, sex and arm of the rows whose subject `pick` selects (the id stays, so does the split).
fn rewrite(csv: &str, pick: impl Fn(&str) -> bool) -> (String, usize) {
    let mut changed = 0;
    let mut out = String::new();
    for (i, line) in csv.lines().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        if i > 0 && pick(f[0]) {
            changed += 1;
            let arm = if f[1] == "placebo" {
                "active"
            } else {
                "placebo"
            };
            let sex = if f[4] == "F" { "M" } else { "F" };
            out.push_str(&format!("{},{arm},{},99,{sex},{}\n", f[0], f[2], f[5]));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, changed)
}

#[tokio::test]
async fn the_feature_spec_comes_from_train_rows_only() {
    // The default split: the salted hash of the pseudonym, cut at 0.6 (config: key `k`, salt `s`).
    let in_train = |id: &str| udf::split_unit("s", &udf::pseudonym(b"k", id)) < 0.6;
    let base = spec_of(&csv()).await;
    assert_eq!(
        base.train_rows as usize,
        csv().lines().skip(1).filter(|l| in_train(&l[..5])).count()
    );

    let (held_out, changed) = rewrite(&csv(), |id| !in_train(id));
    assert!(changed > SUBJECTS / 4, "{changed} val/test rows rewritten");
    assert_eq!(
        spec_of(&held_out).await,
        base,
        "a val or test row moved a statistic"
    );

    // The check can fail: one train row's values do move the statistics.
    let first_train = csv()
        .lines()
        .skip(1)
        .map(|l| l[..5].to_string())
        .find(|id| in_train(id))
        .unwrap();
    let (one_train, changed) = rewrite(&csv(), |id| id == first_train);
    assert_eq!(changed, 1);
    let moved = spec_of(&one_train).await;
    assert_ne!(moved.numeric[0].mean, base.numeric[0].mean);
}

#[tokio::test]
async fn the_quality_report_describes_the_written_split_tables() {
    // Some ages and sexes blank, so that nulls are counted too.
    let data: String = csv()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut f: Vec<&str> = l.split(',').collect();
            if i > 0 && i % 7 == 0 {
                f[3] = "";
            }
            if i > 0 && i % 11 == 0 {
                f[4] = "";
            }
            format!("{}\n", f.join(","))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), &data).unwrap();
    let cfg = config(dir.path(), "");
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    util::put_raw(&lake, &data, SUBJECTS as u64).await;
    trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
    trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    let report = trialflow_preprocess::quality(&lake).await.unwrap();

    // The same figures computed here from the split tables as written.
    let mut ages: BTreeMap<(String, String), Vec<Option<f64>>> = BTreeMap::new();
    let mut sexes: BTreeMap<(String, String, Option<String>), u64> = BTreeMap::new();
    let mut rows: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for s in lake::SPLITS {
        let b = read_parquet_prefix(&lake, &format!("{}split={s}/", lake::FEATURES))
            .await
            .unwrap();
        let arm = table::strings(&b, "arm").unwrap();
        let age = table::floats(&b, "age").unwrap();
        let sex = table::strings(&b, "sex").unwrap();
        let outcome = table::ints(&b, "outcome").unwrap();
        for i in 0..arm.len() {
            let key = (s.to_string(), arm[i].clone().unwrap());
            ages.entry(key.clone()).or_default().push(age[i]);
            *sexes.entry((key.0, key.1, sex[i].clone())).or_default() += 1;
            let r = rows.entry(s.to_string()).or_default();
            r.0 += 1;
            r.1 += outcome[i].unwrap() as u64;
        }
    }
    let got: Vec<_> = report
        .numeric
        .iter()
        .filter(|n| n.column == "age")
        .collect();
    assert_eq!(got.len(), ages.len());
    let mut nulls_seen = 0;
    for n in got {
        let values = &ages[&(n.split.clone(), n.arm.clone())];
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let mean = present.iter().sum::<f64>() / present.len() as f64;
        let var = present.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / present.len() as f64;
        assert_eq!(n.count as usize, present.len());
        assert_eq!(n.nulls as usize, values.len() - present.len());
        nulls_seen += n.nulls;
        assert_eq!(n.min, present.iter().copied().reduce(f64::min));
        assert_eq!(n.max, present.iter().copied().reduce(f64::max));
        assert!((n.mean.unwrap() - mean).abs() < 1e-9, "{n:?}");
        assert!((n.std.unwrap() - var.sqrt()).abs() < 1e-9, "{n:?}");
    }
    assert!(nulls_seen > 0);
    let levels: BTreeMap<(String, String, Option<String>), u64> = report
        .categorical
        .iter()
        .filter(|c| c.column == "sex")
        .map(|c| ((c.split.clone(), c.arm.clone(), c.level.clone()), c.count))
        .collect();
    assert_eq!(levels, sexes);
    assert!(
        levels.keys().any(|k| k.2.is_none()),
        "blank sexes are a level of their own"
    );
    let splits: BTreeMap<String, (u64, u64)> = report
        .splits
        .iter()
        .map(|s| (s.split.clone(), (s.rows, s.outcome_events)))
        .collect();
    assert_eq!(splits, rows);
}

fn counts(a: &BTreeMap<String, (String, String, i64)>) -> BTreeMap<(String, i64), usize> {
    let mut c = BTreeMap::new();
    for (s, _, y) in a.values() {
        *c.entry((s.clone(), *y)).or_insert(0) += 1;
    }
    c
}

#[tokio::test]
async fn stratified_splits_cut_each_outcome_class_at_the_fractions() {
    let a = assign(", stratify: true").await;
    let c = counts(&a);
    for y in [0, 1] {
        let class: usize = ["train", "val", "test"]
            .iter()
            .map(|s| c.get(&(s.to_string(), y)).copied().unwrap_or(0))
            .sum();
        for (s, f) in [("train", 0.6), ("val", 0.2), ("test", 0.2)] {
            let n = c.get(&(s.to_string(), y)).copied().unwrap_or(0) as f64;
            assert!(
                (n - f * class as f64).abs() <= 1.0,
                "outcome {y}, {s}: {n} of {class} (expected {f} of them to one subject)"
            );
        }
    }
    // deterministic: the same input gives the same assignment
    assert_eq!(a, assign(", stratify: true").await);
}

#[tokio::test]
async fn grouped_splits_keep_each_site_in_one_split_and_the_default_does_not() {
    let a = assign(", group_by: site").await;
    let mut split_of_site: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (s, site, _) in a.values() {
        split_of_site.entry(site).or_default().insert(s);
    }
    assert_eq!(split_of_site.len(), 12);
    assert!(
        split_of_site.values().all(|s| s.len() == 1),
        "{split_of_site:?}"
    );
    let used: BTreeSet<&str> = split_of_site.values().flatten().copied().collect();
    assert!(used.contains("train") && used.len() >= 2, "{used:?}");

    let plain = assign("").await;
    let mut mixed = BTreeMap::<&str, BTreeSet<&str>>::new();
    for (s, site, _) in plain.values() {
        mixed.entry(site).or_default().insert(s);
    }
    assert!(
        mixed.values().any(|s| s.len() > 1),
        "the id hash spreads a site over splits"
    );
}

#[test]
fn stratify_with_group_by_and_an_unknown_group_column_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), csv()).unwrap();
    let error = |split: &str| {
        Config::from_yaml(&yaml(dir.path(), split), "splits.yaml", &[])
            .err()
            .map(|e| e.to_string())
    };
    let both = error(", stratify: true, group_by: site").unwrap();
    assert!(
        both.contains("splits.yaml")
            && both.contains("preprocessing.split")
            && both.contains("either stratify or group_by"),
        "{both}"
    );
    let unknown = error(", group_by: region").unwrap();
    assert!(
        unknown.contains("preprocessing.split.group_by") && unknown.contains("\"site\""),
        "{unknown}"
    );
    assert_eq!(error(", group_by: sex"), None);
}

/// Every split file, its batches in one.
async fn split_tables(lake: &Storage) -> Vec<arrow::array::RecordBatch> {
    let mut out = Vec::new();
    for s in lake::SPLITS {
        let b = read_parquet_prefix(lake, &format!("{}split={s}/", lake::FEATURES))
            .await
            .unwrap();
        out.push(arrow::compute::concat_batches(&b[0].schema(), &b).unwrap());
    }
    out
}

/// Whether the train file was copied from the clean table's row groups (copied chunks carry no page index;
/// the Arrow writer writes one for every chunk).
async fn copied(lake: &Storage) -> bool {
    let file = trialflow_core::row_group::ParquetFile::open(lake, &lake::features_file("train"))
        .await
        .unwrap();
    file.metadata()
        .row_group(0)
        .column(0)
        .offset_index_offset()
        .is_none()
}

#[tokio::test]
async fn split_files_copied_from_the_laid_out_clean_table_equal_those_split_by_sql() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), csv()).unwrap();
    let cfg = config(dir.path(), "");
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    util::put_raw(&lake, &csv(), SUBJECTS as u64).await;
    trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
    let clean = trialflow_core::row_group::ParquetFile::open(&lake, lake::CLEAN_FILE)
        .await
        .unwrap();
    assert!(clean.key_value("trialflow.split_row_groups").is_some());
    // every row group holds one split's rows
    let layout = read_parquet_prefix(&lake, lake::CLEAN).await.unwrap();
    let report = trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    assert!(copied(&lake).await, "the default split copies row groups");
    let (tables, spec, stats) = (
        split_tables(&lake).await,
        lake.get(lake::FEATURE_SPEC).await.unwrap(),
        lake.get(lake::SPLIT_STATS).await.unwrap(),
    );

    // The same clean rows without the layout's footer: split by SQL.
    let schema = layout[0].schema();
    table::write_parquet(&lake, lake::CLEAN_FILE, schema, &layout)
        .await
        .unwrap();
    let by_sql = trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    assert!(
        !copied(&lake).await,
        "a table without the footer is split by SQL"
    );
    assert_eq!(report, by_sql);
    assert_eq!(split_tables(&lake).await, tables);
    assert_eq!(lake.get(lake::FEATURE_SPEC).await.unwrap(), spec);
    assert_eq!(lake.get(lake::SPLIT_STATS).await.unwrap(), stats);
    assert_eq!(
        report.splits.iter().map(|s| s.rows).sum::<u64>(),
        SUBJECTS as u64
    );
}

#[tokio::test]
async fn an_edited_split_sql_is_run_as_sql_over_a_laid_out_table() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), csv()).unwrap();
    let sql_dir = dir.path().join("sql");
    let mut cfg = config(dir.path(), "");
    cfg.preprocessing.sql_dir = Some(sql_dir.display().to_string());
    trialflow_preprocess::write_sql_dir(&cfg, &sql_dir).unwrap();
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    util::put_raw(&lake, &csv(), SUBJECTS as u64).await;
    trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
    // the generated file, as written: the layout stands for it
    trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    assert!(copied(&lake).await);
    // an edit (sites S00 and S01 left out) after the clean table was written
    let path = sql_dir.join("split.sql");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "WHERE \"outcome\" IS NOT NULL",
            "WHERE \"outcome\" IS NOT NULL AND \"site\" NOT IN ('S00', 'S01')",
        ),
    )
    .unwrap();
    let report = trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    assert!(!copied(&lake).await);
    let sites: BTreeSet<String> = split_tables(&lake)
        .await
        .iter()
        .flat_map(|b| table::strings(std::slice::from_ref(b), "site").unwrap())
        .flatten()
        .collect();
    assert!(!sites.contains("S00") && !sites.contains("S01") && sites.len() == 10);
    assert!(report.splits.iter().map(|s| s.rows).sum::<u64>() < SUBJECTS as u64);
}
