//! Record tables (`dataset.tables`): ADaM-shaped records joined to the subject table on the subject id, their
//! pivots as subject columns, each record accepted or quarantined with its reason, and the contract mistakes
//! (a condition that picks two records, a condition naming an unread column) as errors that name them.

use crate::util;

use trialflow_core::lake::{self, CurrentObject, SourceFormat};
use trialflow_core::table::{self, read_parquet_prefix};
use trialflow_core::{Config, ErrorKind, Storage};

/// ADSL-like: one row per subject; S4 is outside the safety population.
const SUBJECTS: &str = "\
USUBJID,TRT01A,SAFFL,AGE
S1,Placebo,Y,60
S2,Drug,Y,70
S3,Drug,Y,65
S4,Placebo,N,50
";

/// ADTTE-like: two parameters; S3 has no TTDE record, S9 is no subject of the subject table, one record has no id.
const TTE: &str = "\
USUBJID,PARAMCD,AVAL,CNSR
S1,TTDE,30,0
S1,TTOS,200,1
S2,TTDE,12,1
S2,TTOS,150,0
S3,TTOS,90,1
S4,TTDE,5,0
S9,TTDE,7,0
,TTDE,8,0
";

/// ADAE-like: S1 two events, one serious; S2 none; S3 one.
const AE: &str = "\
USUBJID,AEDECOD,AESER,TRTEMFL
S1,HEADACHE,N,Y
S1,SYNCOPE,Y,Y
S1,RASH,N,
S3,NAUSEA,N,Y
";

fn yaml(dir: &std::path::Path, tables: &str) -> String {
    for (name, text) in [("adsl", SUBJECTS), ("adtte", TTE), ("adae", AE)] {
        std::fs::write(dir.join(format!("{name}.csv")), text).unwrap();
    }
    let src = |n: &str| format!("{{name: {n}, url: \"file://{}/{n}.csv\"}}", dir.display());
    format!(
        r#"
storage: {{lake: "file://{d}/lake", models: "file://{d}/models"}}
dataset:
  name: records
  sources: [{a}, {b}, {c}]
  id: USUBJID
  arm: {{column: TRT01A, reference: Placebo}}
  outcome: {{expression: "TRT01A = 'Drug' AND SAFFL = 'Y'"}}
  time_to_event: {{time: TTDE_DAYS, event: TTDE_CNSR, convention: cdisc_cnsr}}
  numeric: [AGE, N_TEAE, N_SAE]
  extra: {{SAFFL: string}}
  filter: SAFFL = 'Y'
  tables:
{tables}
privacy: {{key_env: TRIALFLOW_TEST_UNSET_KEY, dev_key: k, allow_dev_key: true}}
preprocessing: {{split: {{train: 0.6, val: 0.2, test: 0.2, salt: s}}}}
{tail}
"#,
        a = src("adsl"),
        b = src("adtte"),
        c = src("adae"),
        tail = util::CONFIG_TAIL,
        d = dir.display()
    )
}

const TABLES: &str = r#"    adtte:
      sources: [adtte]
      columns: [PARAMCD, AVAL, CNSR]
      pivot:
        TTDE_DAYS: {where: "PARAMCD = 'TTDE'", value: AVAL, label: Days to the first event}
        TTDE_CNSR: {where: "PARAMCD = 'TTDE'", value: CNSR}
    adae:
      sources: [adae]
      columns: [AEDECOD, AESER, TRTEMFL]
      pivot:
        N_TEAE: {where: "TRTEMFL = 'Y'", count: true}
        N_SAE: {where: "TRTEMFL = 'Y' AND AESER = 'Y'", count: true}"#;

fn config(dir: &std::path::Path, tables: &str) -> Config {
    Config::from_yaml(&yaml(dir, tables), "records.yaml", &[]).unwrap()
}

/// The three files as the current raw objects, as ingest would leave them.
async fn put_sources(lake: &Storage) {
    put_files(lake, &[("adsl", SUBJECTS), ("adtte", TTE), ("adae", AE)]).await;
}

async fn put_files(lake: &Storage, files: &[(&str, &str)]) {
    let mut objects = Vec::new();
    for &(name, text) in files {
        let object = format!("raw/{name}/x.csv");
        lake.put(&object, text.to_string()).await.unwrap();
        objects.push(CurrentObject {
            source: name.into(),
            url: format!("file:///{name}.csv"),
            object,
            format: SourceFormat::Csv,
            delimiter: ',',
            quote: '"',
            sha256: String::new(),
            rows: text.lines().count() as u64 - 1,
        });
    }
    lake.put_json(lake::RAW_CURRENT, &lake::Current { objects })
        .await
        .unwrap();
}

async fn clean(cfg: &Config) -> trialflow_core::Result<trialflow_preprocess::CleanReport> {
    cfg.validate()?;
    trialflow_preprocess::check_sql(cfg).await?;
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    put_sources(&lake).await;
    trialflow_preprocess::clean(cfg, &lake).await
}

fn strings(b: &[arrow::array::RecordBatch], c: &str) -> Vec<Option<String>> {
    table::strings(b, c).unwrap()
}

#[tokio::test]
async fn pivots_join_each_subject_and_every_record_is_accepted_or_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), TABLES);
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    // a table an earlier contract had
    lake.put(&lake::table_clean_file("gone"), "stale".to_string())
        .await
        .unwrap();
    let report = clean(&cfg).await.unwrap();
    assert!(
        lake.head(&lake::table_clean_file("gone"))
            .await
            .unwrap()
            .is_none(),
        "a table the contract no longer has is removed"
    );

    // the subject table: S4 excluded by the filter; S3 has no TTDE record, so no time (quarantined there)
    let rows = read_parquet_prefix(&lake, lake::CLEAN).await.unwrap();
    let key = trialflow_preprocess::pseudonym_key(&cfg).unwrap();
    let id = |s: &str| Some(trialflow_preprocess::udf::pseudonym(&key, s));
    assert_eq!(strings(&rows, "subject_id"), vec![id("S1"), id("S2")]);
    assert_eq!(
        table::floats(&rows, "time").unwrap(),
        vec![Some(30.0), Some(12.0)]
    );
    assert_eq!(
        table::floats(&rows, "event").unwrap(),
        vec![Some(1.0), Some(0.0)],
        "CNSR 0 is the event"
    );
    assert_eq!(
        table::floats(&rows, "N_TEAE").unwrap(),
        vec![Some(2.0), Some(0.0)],
        "a subject without records counts 0; a record without TRTEMFL = Y is not counted"
    );
    assert_eq!(
        table::floats(&rows, "N_SAE").unwrap(),
        vec![Some(1.0), Some(0.0)]
    );
    assert_eq!(report.rows_in, 4);
    assert_eq!(report.accepted, 2);
    assert_eq!(report.excluded_by_filter, 1, "S4");
    assert_eq!(
        report.labels.get("TTDE_DAYS").map(String::as_str),
        Some("Days to the first event")
    );

    // each record table: in = accepted + quarantined, with the reason per record
    let tte = report.tables.iter().find(|t| t.table == "adtte").unwrap();
    assert_eq!((tte.rows_in, tte.accepted, tte.quarantined), (8, 4, 4));
    assert_eq!(tte.quarantine_rules.get("subject"), Some(&3), "S3, S4, S9");
    assert_eq!(tte.quarantine_rules.get("required"), Some(&1), "no id");
    let ttde = tte.pivots.iter().find(|p| p.column == "TTDE_DAYS").unwrap();
    assert_eq!((ttde.subjects, ttde.repeats), (4, 0), "S1, S2, S4, S9");
    let ae = report.tables.iter().find(|t| t.table == "adae").unwrap();
    assert_eq!(
        (ae.rows_in, ae.accepted, ae.quarantined),
        (4, 3, 1),
        "S3 is not in the clean table"
    );

    let kept = read_parquet_prefix(&lake, &lake::table_clean_file("adtte"))
        .await
        .unwrap();
    assert_eq!(
        strings(&kept, "subject_id"),
        vec![id("S1"), id("S1"), id("S2"), id("S2")],
        "the same key pseudonymizes every table"
    );
    assert_eq!(
        strings(&kept, "PARAMCD"),
        ["TTDE", "TTOS", "TTDE", "TTOS"].map(|s| Some(s.to_string()))
    );
    let q = read_parquet_prefix(&lake, &lake::table_quarantine_file("adtte"))
        .await
        .unwrap();
    assert_eq!(
        table::ints(&q, "line").unwrap(),
        vec![Some(6), Some(7), Some(8), Some(9)]
    );
    let reasons = strings(&q, "reason");
    assert!(
        reasons[0]
            .as_deref()
            .unwrap()
            .contains("not in the clean subject table"),
        "{reasons:?}"
    );
    assert_eq!(reasons[3].as_deref(), Some("the record has no subject id"));
}

#[tokio::test]
async fn a_condition_that_picks_two_records_of_a_subject_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let loose = TABLES.replace(
        "TTDE_DAYS: {where: \"PARAMCD = 'TTDE'\"",
        "TTDE_DAYS: {where: \"AVAL IS NOT NULL\"",
    );
    let e = clean(&config(dir.path(), &loose)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadData);
    let m = e.to_string();
    assert!(
        m.contains("file:///adtte.csv:2 and file:///adtte.csv:3"),
        "{m}"
    );
    assert!(
        m.contains("pivot `TTDE_DAYS`") && m.contains("repeated: first"),
        "{m}"
    );

    // `repeated: first` keeps the first and quarantines the repeat
    let first = loose.replace("value: AVAL, label", "value: AVAL, repeated: first, label");
    let dir = tempfile::tempdir().unwrap();
    let report = clean(&config(dir.path(), &first)).await.unwrap();
    let tte = report.tables.iter().find(|t| t.table == "adtte").unwrap();
    let days = tte.pivots.iter().find(|p| p.column == "TTDE_DAYS").unwrap();
    assert_eq!(
        days.repeats, 2,
        "S1, S2: TTOS after TTDE; S3's TTOS is its first"
    );
    assert_eq!(
        tte.quarantine_rules.get("repeated"),
        Some(&2),
        "S1's and S2's TTOS"
    );
    assert_eq!(tte.rows_in, tte.accepted + tte.quarantined);
}

#[tokio::test]
async fn contract_mistakes_in_tables_are_config_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let unread = TABLES.replace("AESER = 'Y'", "AESEV = 'SEVERE'");
    let e = clean(&config(dir.path(), &unread)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string()
            .contains("dataset.tables.adae.pivot.N_SAE.where"),
        "{e}"
    );

    for (from, to, key) in [
        (
            "sources: [adae]",
            "sources: [adverse]",
            "dataset.tables.adae.sources[0]",
        ),
        (
            "sources: [adae]",
            "sources: [adtte]",
            "already feeds another table",
        ),
        (
            "N_SAE: {where: \"TRTEMFL = 'Y' AND AESER = 'Y'\", count: true}",
            "N_SAE: {where: \"TRTEMFL = 'Y'\", count: true, value: AESER}",
            "exactly one of `value: <column>` and `count: true`",
        ),
        ("N_SAE:", "TRT01A:", "the id, cluster or arm column"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = yaml(dir.path(), &TABLES.replace(from, to));
        let e = Config::from_yaml(&text, "records.yaml", &[])
            .and_then(|c| c.validate().map(|()| c))
            .err();
        let e = e.unwrap_or_else(|| panic!("{from} → {to} passed"));
        assert!(e.to_string().contains(key), "{from} → {to}: {e}");
    }
}

#[tokio::test]
async fn populations_and_secondary_endpoints_are_columns_of_the_clean_table() {
    let dir = tempfile::tempdir().unwrap();
    let text = yaml(dir.path(), TABLES)
        .replace(
            "  filter: SAFFL = 'Y'\n",
            "  populations: {safety: \"SAFFL = 'Y'\", all_drug: \"TRT01A = 'Drug'\"}\n",
        )
        .replace("patience: 1}", "patience: 1, population: safety}")
        .replace(
            "  tables:\n",
            "  secondary_time_to_event: {os: {time: TTOS_DAYS, event: TTOS_CNSR, convention: cdisc_cnsr}}\n  tables:\n",
        )
        .replace(
            "        TTDE_CNSR: {where: \"PARAMCD = 'TTDE'\", value: CNSR}",
            "        TTDE_CNSR: {where: \"PARAMCD = 'TTDE'\", value: CNSR}\n        TTOS_DAYS: {where: \"PARAMCD = 'TTOS'\", value: AVAL}\n        TTOS_CNSR: {where: \"PARAMCD = 'TTOS'\", value: CNSR}",
        );
    let cfg = Config::from_yaml(&text, "records.yaml", &[]).unwrap();
    let report = clean(&cfg).await.unwrap();
    assert_eq!(report.excluded_by_filter, 0, "a population excludes nobody");
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    let rows = read_parquet_prefix(&lake, lake::CLEAN).await.unwrap();
    let flags = |c: &str| -> Vec<bool> {
        rows.iter()
            .flat_map(|b| {
                let a = b.column_by_name(c).unwrap();
                let a = a
                    .as_any()
                    .downcast_ref::<arrow::array::BooleanArray>()
                    .unwrap();
                a.iter().map(|v| v.unwrap()).collect::<Vec<_>>()
            })
            .collect()
    };
    // S1, S2, S4 (S3 has no time to event)
    assert_eq!(flags("population_safety"), [true, true, false]);
    assert_eq!(flags("population_all_drug"), [false, true, false]);
    // a secondary endpoint: S4 has no TTOS record, and keeps its row without it
    assert_eq!(
        table::floats(&rows, "time_os").unwrap(),
        vec![Some(200.0), Some(150.0), None]
    );
    assert_eq!(
        table::ints(&rows, "event_os").unwrap(),
        vec![Some(0), Some(1), None],
        "CNSR 1 is censored"
    );

    let features = trialflow_preprocess::features(&cfg, &lake).await.unwrap();
    let split_rows: u64 = features.splits.iter().map(|s| s.rows).sum();
    assert_eq!(split_rows, 2, "S4 is outside the models' population");
    let train = read_parquet_prefix(&lake, lake::FEATURES).await.unwrap();
    assert!(
        train[0].column_by_name("population_safety").is_none(),
        "a population flag is no model input"
    );

    let unknown = text.replace("population: safety}", "population: efficacy}");
    let e = Config::from_yaml(&unknown, "records.yaml", &[])
        .and_then(|c| c.validate())
        .unwrap_err();
    assert!(
        e.to_string().contains("training.population") && e.to_string().contains("efficacy"),
        "{e}"
    );
}

/// SDTM-like vital signs: S1 weighed before, on and after its first dose day; S2 only after, and once undated.
const VS: &str = "\
USUBJID,VSTESTCD,VSSTRESN,VSDTC
S1,WEIGHT,80,2014-01-01
S1,WEIGHT,81,2014-01-05T08:00
S1,WEIGHT,79,2014-02-01
S2,WEIGHT,70,2014-03-01
S2,WEIGHT,71,
S1,HEIGHT,170,2014-01-01
";

#[tokio::test]
async fn the_last_value_before_the_first_dose_is_taken_by_date() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vs.csv"), VS).unwrap();
    let subjects = SUBJECTS
        .replace(
            "USUBJID,TRT01A,SAFFL,AGE",
            "USUBJID,TRT01A,SAFFL,AGE,RFXSTDTC",
        )
        .replace("S1,Placebo,Y,60", "S1,Placebo,Y,60,2014-01-05")
        .replace("S2,Drug,Y,70", "S2,Drug,Y,70,2014-02-01")
        .replace("S3,Drug,Y,65", "S3,Drug,Y,65,")
        .replace("S4,Placebo,N,50", "S4,Placebo,N,50,");
    let vs = r#"
    vs:
      sources: [vs]
      columns: [VSTESTCD]
      pivot:
        WT_PRE: {where: "VSTESTCD = 'WEIGHT'", value: VSSTRESN, order_by: VSDTC, take: last, before: RFXSTDTC}
        WT_FIRST: {where: "VSTESTCD = 'WEIGHT'", value: VSSTRESN, order_by: VSDTC, take: first}
        N_WT: {where: "VSTESTCD = 'WEIGHT'", count: true}"#;
    let text = yaml(dir.path(), &format!("{TABLES}{vs}"))
        .replace(
            "sources: [{name: adsl",
            &format!(
                "sources: [{{name: vs, url: \"file://{}/vs.csv\"}}, {{name: adsl",
                dir.path().display()
            ),
        )
        .replace(
            "numeric: [AGE, N_TEAE, N_SAE]",
            "numeric: [AGE, N_TEAE, N_SAE, WT_PRE, WT_FIRST, N_WT]",
        )
        .replace(
            "extra: {SAFFL: string}",
            "extra: {SAFFL: string, RFXSTDTC: string}",
        );
    let cfg = Config::from_yaml(&text, "records.yaml", &[]).unwrap();
    cfg.validate().unwrap();
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    put_files(
        &lake,
        &[
            ("adsl", &subjects),
            ("adtte", TTE),
            ("adae", AE),
            ("vs", VS),
        ],
    )
    .await;
    let report = trialflow_preprocess::clean(&cfg, &lake).await.unwrap();
    let rows = read_parquet_prefix(&lake, lake::CLEAN).await.unwrap();
    let col = |c: &str| table::floats(&rows, c).unwrap();
    // S1 and S2 are the clean subjects
    assert_eq!(
        col("WT_PRE"),
        vec![Some(81.0), None],
        "S1: the first dose day's weight counts as before it; S2: weighed only after"
    );
    assert_eq!(
        col("WT_FIRST"),
        vec![Some(80.0), Some(70.0)],
        "an undated record is never taken"
    );
    assert_eq!(col("N_WT"), vec![Some(3.0), Some(2.0)]);
    let vs = report.tables.iter().find(|t| t.table == "vs").unwrap();
    assert_eq!(
        (vs.rows_in, vs.accepted, vs.quarantined),
        (6, 6, 0),
        "records not taken are no repeats"
    );

    // `take` without `order_by` cannot say which record is first
    let e = Config::from_yaml(
        &text.replace(", order_by: VSDTC, take: first", ", take: first"),
        "records.yaml",
        &[],
    )
    .and_then(|c| c.validate())
    .unwrap_err();
    assert!(
        e.to_string().contains("dataset.tables.vs.pivot.WT_FIRST"),
        "{e}"
    );
}

/// `flags`: each a boolean column of the table's clean records, false (never NULL) where the condition is
/// NULL; a flag reading a column the table does not keep is a config error naming the flag.
#[tokio::test]
async fn flags_are_boolean_columns_of_the_clean_records() {
    let flagged =
        format!("{TABLES}\n      flags: {{teae: \"TRTEMFL = 'Y'\", serious: \"AESER = 'Y'\"}}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &flagged);
    clean(&cfg).await.unwrap();
    let lake = Storage::open(&cfg.storage.lake).unwrap();
    let kept = read_parquet_prefix(&lake, &lake::table_clean_file("adae"))
        .await
        .unwrap();
    let flag = |name: &str| -> Vec<bool> {
        let mut out = Vec::new();
        for b in &kept {
            let a = b
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .unwrap();
            assert_eq!(
                arrow::array::Array::null_count(a),
                0,
                "{name}: no NULL flag"
            );
            out.extend(a.iter().map(|v| v.unwrap()));
        }
        out
    };
    let (teae, serious) = (flag("flag_teae"), flag("flag_serious"));
    let (trtemfl, aeser) = (strings(&kept, "TRTEMFL"), strings(&kept, "AESER"));
    assert!(!teae.is_empty());
    for i in 0..teae.len() {
        assert_eq!(teae[i], trtemfl[i].as_deref() == Some("Y"), "record {i}");
        assert_eq!(serious[i], aeser[i].as_deref() == Some("Y"), "record {i}");
    }
    assert!(
        teae.contains(&false),
        "the record without TRTEMFL is flagged false"
    );

    let unread = flagged.replace("serious: \"AESER = 'Y'\"", "serious: \"AESEV = 'SEVERE'\"");
    let dir = tempfile::tempdir().unwrap();
    let e = clean(&config(dir.path(), &unread)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.to_string().contains("dataset.tables.adae.flags.serious"),
        "{e}"
    );
}
