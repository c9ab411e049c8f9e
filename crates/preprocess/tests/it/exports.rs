//! Trial exports as R and SAS write them, configured by the contract alone: missing-value tokens, event codes
//! other than 0/1 (R's 1/2, a competing event, `1.0` for `1`), files without an id, several records per
//! patient, and the guard that refuses to analyse a population other than the one described.

use crate::util;

use trialflow_core::table::{self, read_parquet_prefix};
use trialflow_core::{Config, ErrorKind, Storage, lake};

/// An R export (`write.csv(..., na = "NA")`): R's 1 = censored / 2 = dead status, 3 = transplant (competing),
/// `NA` in a number and in a category, a status written `2.0` by another tool.
const R_EXPORT: &str = "\
pid,eye,trt,status,days,age,sex
1,L,A,2,100,50,M
1,R,A,2,100,50,M
2,L,B,1,200,NA,F
2,R,B,1,200,NA,F
3,L,A,3,50,61,NA
3,R,A,3,50,61,NA
4,L,B,2.0,80,70,F
4,R,B,1,80,70,F
";

/// The dataset section's keys after `sources`, and the preprocessing section's extra keys.
fn config(dir: &std::path::Path, dataset: &str, preprocessing: &str) -> Config {
    Config::from_yaml(&yaml(dir, dataset, preprocessing), "export.yaml", &[]).unwrap()
}

fn yaml(dir: &std::path::Path, dataset: &str, preprocessing: &str) -> String {
    // the source must exist for the config to load; the tests put their rows into the lake themselves
    std::fs::write(dir.join("t.csv"), R_EXPORT).unwrap();
    format!(
        r#"
storage: {{lake: "file://{d}/lake", models: "file://{d}/models"}}
dataset:
  name: export
  sources: [{{name: t, url: "file://{d}/t.csv"}}]
  arm: {{column: trt, reference: B}}
  outcome: {{expression: "days > 60"}}
  numeric: [age]
  categorical: [sex]
{dataset}
privacy: {{key_env: TRIALFLOW_TEST_UNSET_KEY, dev_key: k, allow_dev_key: true}}
preprocessing: {{split: {{train: 0.6, val: 0.2, test: 0.2, salt: s}}{preprocessing}}}
{tail}
"#,
        tail = util::CONFIG_TAIL,
        d = dir.display()
    )
}

struct Run {
    clean: Vec<arrow::array::RecordBatch>,
    /// (line, column, rule, reason) per quarantined row, by line.
    quarantine: Vec<(i64, String, String, String)>,
    report: trialflow_preprocess::CleanReport,
}

async fn clean(cfg: &Config, csv: &str) -> trialflow_core::Result<Run> {
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    util::put_raw(&lake, csv, csv.lines().count() as u64 - 1).await;
    let report = trialflow_preprocess::clean(cfg, &lake).await?;
    let clean = util::by_line(read_parquet_prefix(&lake, lake::CLEAN).await.unwrap());
    let q = read_parquet_prefix(&lake, lake::QUARANTINE).await.unwrap();
    let strings = |c: &str| table::strings(&q, c).unwrap().into_iter().flatten();
    let mut quarantine: Vec<_> = table::ints(&q, "line")
        .unwrap()
        .into_iter()
        .flatten()
        .zip(strings("column"))
        .zip(strings("rule"))
        .zip(strings("reason"))
        .map(|(((l, c), r), why)| (l, c, r, why))
        .collect();
    quarantine.sort();
    assert_eq!(
        report.rows_in,
        report.accepted + report.quarantined,
        "rows in = accepted + quarantined"
    );
    Ok(Run {
        clean,
        quarantine,
        report,
    })
}

fn ints(r: &Run, c: &str) -> Vec<i64> {
    table::ints(&r.clean, c)
        .unwrap()
        .into_iter()
        .map(|v| v.unwrap())
        .collect()
}

const COMPOSITE: &str = "  id: [pid, eye]\n  cluster: pid\n";

/// The R export's natural config: `NA` declared, one row per eye, `events` as its time-to-event line.
fn declared(dir: &std::path::Path, events: &str, preprocessing: &str) -> Config {
    config(
        dir,
        &format!("  missing_values: [NA]\n{COMPOSITE}{events}"),
        preprocessing,
    )
}
const EVENTS: &str =
    "  time_to_event: {time: days, event: status, event_values: [2], competing_values: [3]}\n";

#[tokio::test]
async fn undeclared_missing_tokens_are_quarantined_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!("{COMPOSITE}{EVENTS}"),
        ", max_dropped_share: 1.0",
    );
    let r = clean(&cfg, R_EXPORT).await.unwrap();
    let rules: Vec<(i64, &str, &str)> = r
        .quarantine
        .iter()
        .map(|(l, c, rule, _)| (*l, c.as_str(), rule.as_str()))
        .collect();
    // `NA` in a number and in a category: neither a parse failure nor a level named "NA"
    assert_eq!(
        rules,
        [
            (4, "age", "missing_token"),
            (5, "age", "missing_token"),
            (6, "sex", "missing_token"),
            (7, "sex", "missing_token")
        ]
    );
    assert!(
        r.quarantine
            .iter()
            .all(|(.., why)| why.contains("dataset.missing_values")),
        "{:?}",
        r.quarantine
    );
    // with the token declared, the rows are accepted and the values missing
    let cfg = declared(dir.path(), EVENTS, "");
    let r = clean(&cfg, R_EXPORT).await.unwrap();
    assert_eq!((r.report.accepted, r.report.quarantined), (8, 0));
    let age = table::floats(&r.clean, "age").unwrap();
    assert_eq!(age.iter().filter(|a| a.is_none()).count(), 2);
    let sex = table::strings(&r.clean, "sex").unwrap();
    assert_eq!(sex.iter().filter(|s| s.is_none()).count(), 2);
    assert!(!sex.contains(&Some("NA".to_string())));
    // a source's own list replaces the dataset's
    let text = yaml(
        dir.path(),
        &format!("  missing_values: [NA]\n{COMPOSITE}{EVENTS}"),
        ", max_dropped_share: 1.0",
    )
    .replace(
        "sources: [{name: t, url: ",
        "sources: [{name: t, missing_values: ['.'], url: ",
    );
    let cfg = Config::from_yaml(&text, "export.yaml", &[]).unwrap();
    assert_eq!(clean(&cfg, R_EXPORT).await.unwrap().report.quarantined, 4);
}

#[tokio::test]
async fn r_status_codes_a_competing_event_and_numbers_written_otherwise_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = declared(dir.path(), EVENTS, "");
    let r = clean(&cfg, R_EXPORT).await.unwrap();
    // 2 (and 2.0) = dead, 1 = censored, 3 = transplant: censored for KM/Cox, state 2 in the clean table
    assert_eq!(ints(&r, "event"), [1, 1, 0, 0, 0, 0, 1, 0]);
    assert_eq!(ints(&r, "event_state"), [1, 1, 0, 0, 2, 2, 1, 0]);
    // counted as an event when the config says so (a composite endpoint)
    let cfg = declared(
        dir.path(),
        &EVENTS.replace("[3]}", "[3], competing_as: event}"),
        "",
    );
    let r = clean(&cfg, R_EXPORT).await.unwrap();
    assert_eq!(ints(&r, "event"), [1, 1, 0, 0, 1, 1, 1, 0]);
    // a code no list names is quarantined, naming every code the config knows
    let cfg = declared(
        dir.path(),
        &EVENTS.replace(", competing_values: [3]", ""),
        ", max_dropped_share: 1.0",
    );
    let r = clean(&cfg, R_EXPORT).await.unwrap();
    assert_eq!(
        r.quarantine
            .iter()
            .map(|(l, c, rule, why)| (*l, c.as_str(), rule.as_str(), why.as_str()))
            .collect::<Vec<_>>(),
        [
            (
                6,
                "status",
                "event",
                "expected one of the event codes [2, 1]"
            ),
            (
                7,
                "status",
                "event",
                "expected one of the event codes [2, 1]"
            )
        ]
    );
}

#[tokio::test]
async fn a_composite_id_keeps_every_record_and_names_its_patient_as_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = declared(dir.path(), EVENTS, "");
    let r = clean(&cfg, R_EXPORT).await.unwrap();
    let ids = table::strings(&r.clean, "subject_id").unwrap();
    let clusters = table::strings(&r.clean, "cluster").unwrap();
    let distinct = |v: &[Option<String>]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!((ids.len(), distinct(&ids), distinct(&clusters)), (8, 8, 4));
    assert_eq!(clusters[0], clusters[1]);
    // pseudonyms, never the raw patient number
    assert!(clusters.iter().flatten().all(|c| c.len() == 32));
}

#[tokio::test]
async fn repeated_ids_beyond_the_share_fail_the_run_instead_of_analysing_other_patients() {
    let dir = tempfile::tempdir().unwrap();
    // the natural first config: `id: pid` on a file with one row per eye
    let cfg = config(
        dir.path(),
        &format!("  missing_values: [NA]\n  id: pid\n{EVENTS}"),
        "",
    );
    let e = clean(&cfg, R_EXPORT).await.err().unwrap();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::BadData, "{msg}");
    for part in [
        "4 of the 8 rows",
        "3 of them identical",
        "max_dropped_share",
        "id: [pid, eye]",
        "dataset.cluster",
    ] {
        assert!(msg.contains(part), "`{part}` in: {msg}");
    }
    // `repeated_ids: error` stops at the first repeat, naming its file and line
    let cfg = config(
        dir.path(),
        &format!("  missing_values: [NA]\n  id: pid\n  repeated_ids: error\n{EVENTS}"),
        ", max_dropped_share: 1.0",
    );
    let msg = clean(&cfg, R_EXPORT).await.err().unwrap().to_string();
    assert!(
        msg.contains("t.csv:3") && msg.contains("repeated_ids"),
        "{msg}"
    );
    // a share above the repeats lets the run through, every repeat counted
    let cfg = config(
        dir.path(),
        &format!("  missing_values: [NA]\n  id: pid\n{EVENTS}"),
        ", max_dropped_share: 0.5",
    );
    let r = clean(&cfg, R_EXPORT).await.unwrap();
    assert_eq!(
        (
            r.report.accepted,
            r.report.exact_duplicates,
            r.report.repeated_ids
        ),
        (4, 3, 1)
    );
}

#[tokio::test]
async fn a_file_without_an_id_has_one_subject_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "trt,status,days,age,sex\nA,2,1,50,M\nA,2,1,50,M\nB,1,2,61,F\n";
    let cfg = config(dir.path(), &format!("  id: null\n{EVENTS}"), "");
    let r = clean(&cfg, csv).await.unwrap();
    // two identical rows are two patients, not a duplicate
    assert_eq!((r.report.accepted, r.report.exact_duplicates), (3, 0));
    let ids = table::strings(&r.clean, "subject_id").unwrap();
    assert!(
        ids[0] != ids[1]
            && ids
                .iter()
                .all(|i| i.as_ref().is_some_and(|i| i.len() == 32))
    );
    // the same rows get the same ids on a re-run (the row's file and line, pseudonymized)
    let again = clean(&cfg, csv).await.unwrap();
    assert_eq!(table::strings(&again.clean, "subject_id").unwrap(), ids);
}

#[tokio::test]
async fn the_records_of_one_patient_land_in_one_split() {
    let dir = tempfile::tempdir().unwrap();
    // 40 patients, two eyes each: a split by record would part most of them
    let mut csv = String::from("pid,eye,trt,status,days,age,sex\n");
    for p in 0..40 {
        for eye in ["L", "R"] {
            let arm = if p % 2 == 0 { "A" } else { "B" };
            csv.push_str(&format!(
                "{p},{eye},{arm},{},{},{},F\n",
                1 + p % 2,
                30 + p,
                40 + p
            ));
        }
    }
    let cfg = declared(dir.path(), EVENTS, "");
    clean(&cfg, &csv).await.unwrap();
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    let mut split_of: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for split in ["train", "val", "test"] {
        let rows = read_parquet_prefix(&lake, &format!("{}split={split}/", lake::FEATURES))
            .await
            .unwrap();
        for c in table::strings(&rows, "cluster")
            .unwrap()
            .into_iter()
            .flatten()
        {
            split_of.entry(c).or_default().insert(split.to_string());
        }
    }
    assert_eq!(split_of.len(), 40);
    assert!(split_of.values().all(|s| s.len() == 1), "{split_of:?}");
    let used: std::collections::BTreeSet<_> = split_of.values().flatten().collect();
    assert!(
        used.len() >= 2,
        "the patients spread over the splits: {used:?}"
    );
}

#[tokio::test]
async fn derived_columns_can_be_the_time_the_event_and_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    // a counting-process export: the time is tstop − tstart, the status R's 1/2
    let csv = "pid,trt,tstart,tstop,status,age,sex\n1,A,10,110,2,50,M\n2,B,0,200,1,61,F\n3,A,5,4,2,70,F\n";
    let dataset = "  id: pid\n  extra: {tstart: number, tstop: number, status: number}\n  derived: {t_days: tstop - tstart, dead: status - 1}\n  time_to_event: {time: t_days, event: dead}\n";
    let text = yaml(dir.path(), dataset, ", max_dropped_share: 1.0").replace(
        "outcome: {expression: \"days > 60\"}",
        "outcome: {column: dead}",
    );
    let cfg = Config::from_yaml(&text, "export.yaml", &[]).unwrap();
    // check-config plans the SQL over the contract's columns: the derived roles are there
    trialflow_preprocess::check_sql(&cfg).await.unwrap();
    let r = clean(&cfg, csv).await.unwrap();
    assert_eq!(
        table::floats(&r.clean, "time").unwrap(),
        [Some(100.0), Some(200.0)]
    );
    assert_eq!(ints(&r, "event"), [1, 0]);
    assert_eq!(ints(&r, "outcome"), [1, 0]);
    // a negative derived time is quarantined like any other
    assert_eq!(
        r.quarantine
            .iter()
            .map(|(l, c, rule, _)| (*l, c.as_str(), rule.as_str()))
            .collect::<Vec<_>>(),
        [(4, "t_days", "time")]
    );
    // the arm cannot be derived (derived columns are numbers): a config error, not a missing column later
    let text = yaml(
        dir.path(),
        "  id: pid\n  extra: {tstart: number}\n  derived: {grp: tstart * 2}\n",
        "",
    )
    .replace(
        "arm: {column: trt, reference: B}",
        "arm: {column: grp, reference: \"0\"}",
    );
    let e = Config::from_yaml(&text, "export.yaml", &[]).unwrap_err();
    assert!(e.to_string().contains("dataset.arm.column"), "{e}");
}

#[tokio::test]
async fn a_subject_without_the_outcome_is_kept_described_and_left_out_of_the_splits() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("pid,trt,days,age,sex\n");
    for p in 0..30 {
        // every tenth subject has no outcome (the expression reads an empty field)
        let days = if p % 10 == 0 {
            String::new()
        } else {
            format!("{}", 30 + 3 * p)
        };
        csv.push_str(&format!("{p},{},{days},{},F\n", ["A", "B"][p % 2], 40 + p));
    }
    let cfg = config(dir.path(), "  id: pid\n  extra: {days: number}\n", "");
    let r = clean(&cfg, &csv).await.unwrap();
    assert_eq!((r.report.accepted, r.report.quarantined), (30, 0));
    let outcome = table::ints(&r.clean, "outcome").unwrap();
    assert_eq!(outcome.iter().filter(|o| o.is_none()).count(), 3);
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    let report = trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    let in_splits: u64 = report.splits.iter().map(|s| s.rows).sum();
    assert_eq!(
        in_splits, 27,
        "no model trains or is scored on a missing outcome"
    );
}

#[tokio::test]
async fn the_arm_and_the_site_can_be_derived_text() {
    let dir = tempfile::tempdir().unwrap();
    // a SAS export: the arm as a numeric code, the centre inside the subject id
    let csv =
        "usubjid,trtcd,days,age,sex\nC01-001,1,100,50,M\nC01-002,2,200,61,F\nC02-001,1,70,70,F\n";
    let dataset = "  id: usubjid\n  extra: {trtcd: number}\n  derived_text: {arm_label: \"CASE WHEN trtcd = 1 THEN 'A' ELSE 'B' END\", center: \"substr(usubjid, 1, 3)\"}\n  site: center\n  extra: {trtcd: number, days: number}\n";
    let text = yaml(dir.path(), dataset, "")
        .replace(
            "arm: {column: trt, reference: B}",
            "arm: {column: arm_label, reference: B}",
        )
        .replace("  extra: {trtcd: number}\n", "");
    let cfg = Config::from_yaml(&text, "export.yaml", &[]).unwrap();
    trialflow_preprocess::check_sql(&cfg).await.unwrap();
    let r = clean(&cfg, csv).await.unwrap();
    assert_eq!(
        table::strings(&r.clean, "arm").unwrap(),
        [Some("A".into()), Some("B".into()), Some("A".into())]
    );
    assert_eq!(
        table::strings(&r.clean, "site").unwrap(),
        [Some("C01".into()), Some("C01".into()), Some("C02".into())]
    );
    // a derived text column that is no role would be a model input serving cannot compute: refused
    let text = yaml(
        dir.path(),
        "  id: usubjid\n  extra: {trtcd: number}\n  derived_text: {label: \"'x'\"}\n",
        "",
    );
    let e = Config::from_yaml(&text, "export.yaml", &[]).unwrap_err();
    assert!(e.to_string().contains("dataset.derived_text.label"), "{e}");
}
