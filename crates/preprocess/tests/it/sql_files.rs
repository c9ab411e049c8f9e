//! The preprocessing SQL as files a person edits (`preprocessing.sql_dir`, written by `trialflow sql`): the
//! files run instead of the generated SQL, an edit changes the result, and a broken file is an error that
//! names the file and the position.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use crate::util;

use trialflow_core::table::{self, read_parquet_prefix};
use trialflow_core::{Config, ErrorKind, Storage, lake};

const OUTCOME: &str = "{column: status, positive: [dead], negative: [alive]}";

/// (clean lines, quarantine (line, rule)) of a clean run.
async fn clean_run(cfg: &Config) -> trialflow_core::Result<(Vec<i64>, Vec<(i64, String)>)> {
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    util::put_raw(&lake, util::TINY_CSV, 12).await;
    trialflow_preprocess::clean(cfg, &lake).await?;
    let clean = read_parquet_prefix(&lake, lake::CLEAN).await.unwrap();
    let q = read_parquet_prefix(&lake, lake::QUARANTINE).await.unwrap();
    let lines = table::ints(&clean, "_line")
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let mut reasons: Vec<(i64, String)> = table::ints(&q, "line")
        .unwrap()
        .into_iter()
        .zip(table::strings(&q, "rule").unwrap())
        .map(|(l, r)| (l.unwrap(), r.unwrap()))
        .collect();
    reasons.sort();
    Ok((lines, reasons))
}

/// A tiny trial whose config runs the SQL in `<tmp>/sql`, written from its own contract.
fn with_sql_dir() -> (tempfile::TempDir, Config, std::path::PathBuf) {
    let (dir, generated) = util::tiny(OUTCOME, "");
    let sql = dir.path().join("sql");
    let files = trialflow_preprocess::write_sql_dir(&generated, &sql).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "typed.sql",
            "checked.sql",
            "accepted.sql",
            "derived.sql",
            "clean.sql",
            "split.sql"
        ]
    );
    let yaml = util::tiny_yaml(
        dir.path(),
        OUTCOME,
        &format!(", sql_dir: \"{}\"", sql.display()),
    );
    let cfg = Config::from_yaml(&yaml, "tiny.yaml", &[]).unwrap();
    (dir, cfg, sql)
}

fn edit(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test]
async fn the_written_files_run_as_the_generated_sql_does() {
    let (_d, generated) = util::tiny(OUTCOME, "");
    let expected = clean_run(&generated).await.unwrap();
    let (_dir, cfg, _) = with_sql_dir();
    assert_eq!(clean_run(&cfg).await.unwrap(), expected);
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    trialflow_preprocess::features(&cfg, &lake).await.unwrap();
}

#[tokio::test]
async fn an_edited_check_changes_what_is_quarantined() {
    let (_dir, cfg, sql) = with_sql_dir();
    let (lines, _) = clean_run(&cfg).await.unwrap();
    assert_eq!(lines, [2, 3, 5]);
    // a new rule, written by hand: subjects over 55 are quarantined (P2, line 3, is 60; P4, line 5, is 150)
    edit(
        &sql.join("checked.sql"),
        "\nFROM typed",
        ",\n  CASE WHEN \"age\" > 55 THEN 'quarantine|age|senior|older than 55' END AS \"_check_senior\"\nFROM typed",
    );
    edit(
        &sql.join("accepted.sql"),
        "\nFROM checked",
        ",\n  \"_check_senior\"\nFROM checked",
    );
    edit(
        &sql.join("clean.sql"),
        "\nFROM derived",
        ",\n  \"_check_senior\"\nFROM derived",
    );
    let (lines, reasons) = clean_run(&cfg).await.unwrap();
    assert_eq!(lines, [2]);
    assert!(reasons.contains(&(3, "senior".to_string())), "{reasons:?}");
    assert!(reasons.contains(&(5, "senior".to_string())), "{reasons:?}");
    // the stage records the SQL that ran, from the file
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    let ran = lake
        .get(&format!("{}checked.sql", lake::SQL_CLEAN))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&ran).contains("_check_senior"));
}

#[tokio::test]
async fn a_syntax_error_names_the_file_and_the_position() {
    let (_dir, cfg, sql) = with_sql_dir();
    edit(&sql.join("derived.sql"), "\nSELECT\n", "\nSELEC\n");
    let e = clean_run(&cfg).await.unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Config, "{msg}");
    assert!(msg.contains("derived.sql"), "{msg}");
    // the header comments are lines 1 and 2
    assert!(msg.contains("Line: 3, Column: 1"), "{msg}");
}

#[tokio::test]
async fn a_missing_directory_or_a_missing_routing_column_is_an_error_naming_it() {
    let (_dir, cfg, sql) = with_sql_dir();
    std::fs::remove_dir_all(&sql).unwrap();
    let msg = clean_run(&cfg).await.unwrap_err().to_string();
    assert!(
        msg.contains("preprocessing.sql_dir") && msg.contains("trialflow sql"),
        "{msg}"
    );

    let (_dir, cfg, sql) = with_sql_dir();
    edit(&sql.join("clean.sql"), "\"_keep\",", "");
    let e = clean_run(&cfg).await.unwrap_err();
    assert!(e.to_string().contains("`_keep`"), "{e}");
}

#[test]
fn the_committed_pipelines_sql_is_what_the_sample_contract_generates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The sample's sources are relative to the repository root, as `cargo xtask pipeline` runs it.
    std::env::set_current_dir(&root).unwrap();
    let text = std::fs::read_to_string(root.join("config/config.yaml")).unwrap();
    let cfg = Config::from_yaml(&text, "config/config.yaml", &[]).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    for f in trialflow_preprocess::write_sql_dir(&cfg, fresh.path()).unwrap() {
        let name = f.file_name().unwrap();
        let committed =
            std::fs::read_to_string(root.join("pipelines/sql").join(name)).unwrap_or_default();
        assert_eq!(
            committed,
            std::fs::read_to_string(&f).unwrap(),
            "pipelines/sql/{} is not what config/config.yaml generates: refresh it with \
             `cargo run --bin trialflow -- sql` (then review the diff)",
            name.to_string_lossy()
        );
    }
}

#[tokio::test]
async fn a_view_without_a_file_runs_as_generated() {
    let (_d, generated) = util::tiny(OUTCOME, "");
    let expected = clean_run(&generated).await.unwrap();
    let (_dir, cfg, sql) = with_sql_dir();
    // only `checked` is overridden, and edited: the other views are generated from the contract
    for name in ["typed", "accepted", "derived", "clean", "split"] {
        std::fs::remove_file(sql.join(format!("{name}.sql"))).unwrap();
    }
    assert_eq!(clean_run(&cfg).await.unwrap(), expected);
    edit(
        &sql.join("checked.sql"),
        "\nFROM typed",
        ",\n  CASE WHEN \"age\" > 55 THEN 'quarantine|age|senior|older than 55' END AS \"_check_1\"\nFROM typed",
    );
    // the edit replaces the first check (malformed records) by a rule of its own
    edit(
        &sql.join("checked.sql"),
        "END AS \"_check_1\",",
        "END AS \"_check_unused\",",
    );
    let (lines, _) = clean_run(&cfg).await.unwrap();
    assert_eq!(lines, [2]);
}

#[tokio::test]
async fn a_contract_change_since_the_files_were_written_names_the_files_to_regenerate() {
    let (dir, _cfg, sql) = with_sql_dir();
    // the contract widens a range rule: `checked` and `accepted` (which nulls the values outside) change
    let yaml = util::tiny_yaml(
        dir.path(),
        OUTCOME,
        &format!(", sql_dir: \"{}\"", sql.display()),
    )
    .replace("age: {min: 18, max: 100,", "age: {min: 18, max: 110,");
    let changed = Config::from_yaml(&yaml, "tiny.yaml", &[]).unwrap();
    let e = clean_run(&changed).await.unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Config, "{msg}");
    assert!(
        msg.contains("checked.sql")
            && msg.contains("accepted.sql")
            && msg.contains("another contract")
            && msg.contains("trialflow sql"),
        "{msg}"
    );
    assert!(
        !msg.contains("typed.sql") && !msg.contains("split.sql"),
        "only the stale files: {msg}"
    );
    // regenerated, it runs
    trialflow_preprocess::write_sql_dir(&changed, &sql).unwrap();
    clean_run(&changed).await.unwrap();
}
