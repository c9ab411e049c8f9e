//! The `trialflow` binary end to end on the bundled sample and the public colon trial.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use crate::util;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use crate::util::{Project, Server, text};

fn summary_counts(out: &str) -> (usize, usize) {
    // "… — R ran, U up to date, …"
    let line = out
        .lines()
        .find(|l| l.starts_with("trialflow: pipeline"))
        .expect("summary line");
    let num = |label: &str| -> usize {
        let i = line.find(label).unwrap();
        line[..i]
            .trim_end()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num(" ran"), num(" up to date"))
}

fn csv_records(p: &Project) -> u64 {
    [
        "data/raw/clinical_trial_data_1.csv",
        "data/raw/clinical_trial_data_2.csv",
    ]
    .iter()
    .map(|f| {
        let text = std::fs::read_to_string(p.path(f)).unwrap();
        // the sample has no quoted newlines, so records = lines - header
        text.lines().count() as u64 - 1
    })
    .sum()
}

#[test]
fn sample_pipeline_runs_end_to_end_caches_and_serves() {
    let p = Project::sample();
    let o = p.run(&["pipeline", "full"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(summary_counts(&out), (13, 0), "{out}");
    for needle in [
        "Rows (read / accepted / quarantined)",
        "clinical_trial_data_1.csv",
        "Splits: train",
        "Models (test): baseline roc_auc",
        "Promoted: cv_outcome version 1",
    ] {
        assert!(out.contains(needle), "summary lacks `{needle}`:\n{out}");
    }

    // the summary says which key made the pseudonyms
    assert!(
        out.contains(
            "Pseudonyms keyed by privacy.dev_key (a development key: not for real trials)"
        ),
        "{out}"
    );

    // rows reconcile exactly, overall and per source
    let clean = p.read_json("data/lake/processed/clean_report.json");
    let (rows_in, accepted, quarantined) = (
        clean["rows_in"].as_u64().unwrap(),
        clean["accepted"].as_u64().unwrap(),
        clean["quarantined"].as_u64().unwrap(),
    );
    assert_eq!(rows_in, csv_records(&p));
    assert_eq!(rows_in, accepted + quarantined);
    assert!(quarantined > 0 && clean["exact_duplicates"].as_u64().unwrap() > 0);
    for s in clean["per_source"].as_array().unwrap() {
        assert_eq!(
            s["rows_in"].as_u64(),
            Some(s["accepted"].as_u64().unwrap() + s["quarantined"].as_u64().unwrap())
        );
    }
    // no raw subject id survives the clean stage
    let clean_parquet = std::fs::read(p.path("data/lake/processed/clean/part-0.parquet")).unwrap();
    assert!(
        !String::from_utf8_lossy(&clean_parquet).contains("CVT-"),
        "raw subject ids in the clean table"
    );

    // every model learned something; the true treatment effect shows in the analysis
    let ev = p.read_json("data/lake/candidates/evaluation.json");
    for m in ev["leaderboard"].as_array().unwrap() {
        let auc = m["metrics"]["roc_auc"].as_f64().unwrap();
        assert!(auc > 0.65 && auc < 0.95, "{}: AUC {auc}", m["model"]);
    }
    let a = p.report_json("data/lake");
    let rr = a["comparisons"][0]["risk_ratio"]["estimate"]
        .as_f64()
        .unwrap();
    assert!(
        rr < 0.9,
        "the generator's protective treatment effect should be recovered, got RR {rr}"
    );
    assert!(a["survival"]["logrank_p_value"].as_f64().unwrap() < 0.01);
    assert!(p.path("models/cv_outcome/1/BLESSED").exists());
    assert!(p.path("data/lake/processed/quality_report.json").exists());
    let html = std::fs::read_to_string(p.latest_report("data/lake").join("report.html")).unwrap();
    assert!(html.contains("<svg"));
    // the time unit in the labels, censoring ticks with the legend beside the chart, CI bands, AUCs with CIs
    for part in [
        "Median (95% CI), days",
        "time (days)",
        "| censored",
        "fill-opacity=\"0.15\"",
        "ROC AUC (95% bootstrap CI)",
    ] {
        assert!(html.contains(part), "the report has no `{part}`");
    }
    let auc = &a["models"][0]["roc_auc_ci"];
    assert!(auc[0].as_f64().unwrap() < auc[1].as_f64().unwrap(), "{auc}");

    // again at once: the gate runs again, now against the version the first run promoted (its regression check
    // is measured against the served version, state outside the lake), and the promotion re-checks; the
    // verdict is the same, so nothing new is published
    let out = text(&p.run(&["pipeline", "full"]));
    assert_eq!(summary_counts(&out), (2, 11), "{out}");
    assert!(out.contains("task=gate status=succeeded"), "{out}");
    assert!(out.contains("compared with served version 1"), "{out}");
    assert!(!p.path("models/cv_outcome/2").exists());
    // and once more: everything is up to date
    let out = text(&p.run(&["pipeline", "full"]));
    assert_eq!(summary_counts(&out), (0, 13), "{out}");

    // touching a raw file re-lists the source but changes nothing downstream
    let f = p.path("data/raw/clinical_trial_data_1.csv");
    let now = std::time::SystemTime::now() + Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(now)
        .unwrap();
    let out = text(&p.run(&["pipeline", "full"]));
    assert_eq!(summary_counts(&out), (1, 12), "{out}");
    assert!(out.contains("task=ingest status=succeeded"), "{out}");

    // --dry-run after a content change plans ingest and everything downstream, runs nothing
    let mut csv = std::fs::read_to_string(&f).unwrap();
    csv.push_str(
        "CVT-99-99999,SITE01,placebo,70,F,70,165,140,85,120,50,1.0,5.6,no,no,2020-01-01,400,1,0\n",
    );
    std::fs::write(&f, csv).unwrap();
    let o = p.run(&["pipeline", "full", "--dry-run"]);
    let out = text(&o);
    assert!(out.contains("would run (dry run)"), "{out}");
    let o = p.run(&["pipeline", "full"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("task=clean status=succeeded"), "{out}");
    assert!(out.contains("Promoted: cv_outcome version 2"), "{out}");
    assert!(out.contains("Promoted: cv_outcome version 2"), "{out}");
    let clean = p.read_json("data/lake/processed/clean_report.json");
    assert_eq!(clean["rows_in"].as_u64().unwrap(), rows_in + 1);

    // serving: a raw subject record gets a probability; malformed requests get a 400 naming the field
    let server = Server::start(&p, &[]);
    let (code, body) = server.request("GET", "/v2/health/ready", "");
    assert_eq!(code, 200, "{body}");
    let (code, body) = server.request("GET", "/v1/models/cv_outcome", "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("AVAILABLE"), "{body}");
    let record = r#"{"instances": [{"arm": "Treatment", "age": 67, "sex": "male", "weight_kg": 88.5, "height_cm": 176,
        "systolic_bp": 148, "diastolic_bp": 88, "ldl_mg_dl": 131, "hdl_mg_dl": 41, "creatinine_mg_dl": 1.1,
        "hba1c_pct": 6.1, "smoker": "yes", "diabetic": "no"}, {"arm": "placebo", "age": 55, "sex": null,
        "weight_kg": null, "height_cm": null, "systolic_bp": null, "diastolic_bp": null, "ldl_mg_dl": null,
        "hdl_mg_dl": null, "creatinine_mg_dl": null, "hba1c_pct": null, "smoker": null, "diabetic": null}]}"#;
    let (code, body) = server.request("POST", "/v1/models/cv_outcome:predict", record);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    for pr in preds {
        let x = pr[0].as_f64().unwrap();
        assert!(x > 0.0 && x < 1.0, "{body}");
    }
    let (code, body) = server.request(
        "POST",
        "/v1/models/cv_outcome/versions/2:predict",
        r#"{"instances": [{"age": "sixty"}]}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("instances[0].age") && !body.contains("sixty"),
        "{body}"
    );
    let (code, body) = server.request(
        "POST",
        "/v1/models/cv_outcome:predict",
        r#"{"instances": [{"agee": 60}]}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("agee"), "{body}");
    let (code, _) = server.request("POST", "/v1/models/cv_outcome:predict", "{not json");
    assert_eq!(code, 400);
    let (code, _) = server.request(
        "POST",
        "/v1/models/nope:predict",
        r#"{"instances": [{"age": 60}]}"#,
    );
    assert_eq!(code, 404);
    let (code, body) = server.request("GET", "/metrics", "");
    assert_eq!(code, 200);
    assert!(
        body.contains(
            // the appended row changed the data: the retrained model is version 2, now the latest
            "trialflow_requests_total{api=\"v1\",model=\"cv_outcome\",version=\"2\",code=\"200\"} 1"
        ),
        "{body}"
    );

    // batch scoring and the server reproduce the training run's probabilities for the whole test split
    let gate = p.read_json("data/lake/candidates/gate.json");
    let chosen = gate["chosen"].as_str().unwrap();
    let trained = test_predictions(&p.path(&format!(
        "data/lake/candidates/{chosen}/test_predictions.parquet"
    )));
    let o = p.run(&[
        "predict",
        "--input",
        "data/lake/processed/features/split=test/part-0.parquet",
        "--output",
        "scored/test.csv",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "{} rows, {} scored, 0 not scored",
            trained.len(),
            trained.len()
        )),
        "{out}"
    );
    let mut rdr = csv::Reader::from_path(p.path("scored/test.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), trained.len());
    for (r, (id, p_train)) in rows.iter().zip(&trained) {
        assert_eq!(&r[col("subject_id")], id);
        let p_batch: f32 = r[col("probability")].parse().unwrap();
        assert!(
            (p_batch - p_train).abs() < 1e-6,
            "{id}: batch {p_batch} vs trained {p_train}"
        );
    }
    let (_, md) = server.request("GET", "/v1/models/cv_outcome/metadata", "");
    let md: serde_json::Value = serde_json::from_str(&md).unwrap();
    let fields: Vec<String> =
        md["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
    let mut served = Vec::new();
    for chunk in rows.chunks(400) {
        let instances: Vec<serde_json::Value> = chunk
            .iter()
            .map(|r| {
                fields
                    .iter()
                    .map(|f| {
                        let cell = &r[col(f)];
                        let v = if cell.is_empty() {
                            serde_json::Value::Null
                        } else if let Ok(x) = cell.parse::<f64>() {
                            serde_json::json!(x)
                        } else {
                            serde_json::json!(cell)
                        };
                        (f.clone(), v)
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            })
            .collect();
        let (code, body) = server.request(
            "POST",
            "/v1/models/cv_outcome:predict",
            &serde_json::json!({ "instances": instances }).to_string(),
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        served.extend(
            v["predictions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[0].as_f64().unwrap() as f32),
        );
    }
    assert_eq!(served.len(), trained.len());
    for ((id, p_train), p_served) in trained.iter().zip(&served) {
        assert!(
            (p_served - p_train).abs() < 1e-6,
            "{id}: served {p_served} vs trained {p_train}"
        );
    }
}

/// `(subject_id, probability)` rows of a training run's test_predictions.parquet.
fn test_predictions(path: &std::path::Path) -> Vec<(String, f32)> {
    use arrow::array::{AsArray, Float32Array};
    let mut out = Vec::new();
    for b in util::parquet_batches(path) {
        let ids = b
            .column_by_name("subject_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let p = b
            .column_by_name("probability")
            .unwrap()
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            out.push((ids.value(i).to_string(), p.value(i)));
        }
    }
    out
}

fn lake_digest(p: &Project) -> BTreeMap<String, String> {
    // Everything the pipeline produces except records of when it ran.
    let mut out = BTreeMap::new();
    for root in ["data/lake", "models"] {
        for path in walk(&p.path(root)) {
            let rel = path
                .strip_prefix(&p.dir.path().display().to_string())
                .unwrap_or(&path)
                .to_string();
            // reports are kept per run (reports/<run>/): compared by content below
            let skip = [
                "/runs/",
                "/deployments/",
                "/reports/",
                "/_history/",
                "_manifest.jsonl",
                "#",
            ];
            if !skip.iter().any(|s| rel.contains(s)) {
                let mut bytes = std::fs::read(&path).unwrap();
                // deployment records and blessings say when they were written: compare the rest
                if rel.ends_with("BLESSED") || rel.ends_with("deployment.json") {
                    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    for k in ["at", "blessed_at"] {
                        v.as_object_mut().unwrap().remove(k);
                    }
                    bytes = v.to_string().into_bytes();
                }
                out.insert(rel, format!("{:x}", md5ish(&bytes)));
            }
        }
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

fn md5ish(b: &[u8]) -> u64 {
    // FNV-1a: enough to compare two runs' files.
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn sigkill_at_any_point_then_rerun_gives_identical_outputs() {
    let p = Project::sample();
    let o = p.run(&["pipeline", "full"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let reference = lake_digest(&p);
    let reference_analysis =
        std::fs::read(p.latest_report("data/lake").join("analysis.json")).unwrap();
    std::fs::remove_dir_all(p.path("data/lake")).unwrap();
    std::fs::remove_dir_all(p.path("models")).unwrap();

    for delay_ms in [150u64, 400, 800, 1300, 2000, 2800] {
        let mut child = p
            .cmd(&["pipeline", "full"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let o = p.run(&["pipeline", "full"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the lock must not stay stuck: {}",
        text(&o)
    );
    let after = lake_digest(&p);
    let leftovers: Vec<String> = walk(&p.path(""))
        .into_iter()
        .filter(|f| f.contains('#'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging files left behind: {leftovers:?}"
    );
    // every report a (possibly interrupted) run finished holds the same numbers
    for dir in std::fs::read_dir(p.path("data/lake/reports")).unwrap() {
        let json = dir.unwrap().path().join("analysis.json");
        if json.exists() {
            assert_eq!(
                std::fs::read(&json).unwrap(),
                reference_analysis,
                "{}",
                json.display()
            );
        }
    }
    assert_eq!(
        reference.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (k, v) in &reference {
        assert_eq!(Some(v), after.get(k), "{k} differs after interrupted runs");
    }
    assert!(
        !p.path("models/cv_outcome/2").exists(),
        "an interrupted promotion must not create a second version"
    );
}

#[test]
fn config_errors_name_file_key_and_expectation() {
    let p = Project::sample();
    let base = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    let cases: [(&str, String, &str); 9] = [
        (
            "unknown key",
            base.replace("  id: subject_id", "  idd: subject_id"),
            "dataset.idd: unknown field `idd`",
        ),
        (
            "wrong type",
            base.replace("  epochs: 60", "  epochs: many"),
            "training.epochs: invalid type",
        ),
        (
            "bad SQL",
            base.replace("filter: followup_days > 0", "filter: followup_days >"),
            "dataset.filter: not a valid SQL expression",
        ),
        (
            "missing data file",
            base.replace("clinical_trial_data_*.csv", "nothing_*.csv"),
            "dataset.sources[0].url: no file matches",
        ),
        (
            "bad reference arm",
            base.replace("reference: placebo", "reference: plasebo"),
            "dataset.arm.reference: expected one of",
        ),
        // what only the pipeline used to find: check-config plans the SQL and checks what serving evaluates
        (
            "a filter on a column that does not exist",
            base.replace("filter: followup_days > 0", "filter: follow_up_days > 0"),
            "dataset: the SQL generated for step `derived` does not run: Schema error: No field named follow_up_days",
        ),
        (
            "a filter comparing a number with text",
            base.replace(
                "filter: followup_days > 0",
                "filter: followup_days > 'long'",
            ),
            "dataset: the SQL does not plan",
        ),
        (
            "a derived column serving cannot compute",
            base.replace(
                "bmi: weight_kg / ((height_cm / 100.0) * (height_cm / 100.0))",
                "bmi: ln(weight_kg)",
            ),
            "dataset.derived.bmi: unsupported expression",
        ),
        (
            "a misspelt gate metric",
            base.replace("metric: ece, max", "metric: calibration_error, max"),
            "deployment.checks[1].metric: no metric `calibration_error`",
        ),
    ];
    for (what, yaml, expect) in cases {
        p.write("bad.yaml", &yaml);
        let o = p.run(&["check-config", "--config", "bad.yaml"]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {out}");
        assert!(
            out.contains(&format!("bad.yaml: {expect}")),
            "{what}: {out}"
        );
    }
    let o = p.run(&["check-config", "--config", "missing.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("missing.yaml: <file>: cannot read the config file"),
        "{}",
        text(&o)
    );

    // environment overrides, typed like the file
    let o = p
        .cmd(&["check-config"])
        .env("TRIALFLOW_STORAGE__LAKE", "file:///tmp/elsewhere")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains("file:///tmp/elsewhere"));
    let o = p
        .cmd(&["check-config"])
        .env("TRIALFLOW_TRAINING__EPOCHS", "lots")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("training.epochs"), "{}", text(&o));

    // SQL that parses but names no column fails when the pipeline plans it, as a config error
    p.write(
        "bad.yaml",
        &base.replace("filter: followup_days > 0", "filter: no_such_column > 0"),
    );
    let o = p.run(&["pipeline", "data", "--config", "bad.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no_such_column"), "{}", text(&o));
}

#[test]
fn bad_data_exits_3_naming_source_and_column_and_real_keys_are_required() {
    let p = Project::sample();
    let f = p.path("data/raw/clinical_trial_data_2.csv");
    let csv = std::fs::read_to_string(&f)
        .unwrap()
        .replacen("subject_id,", "subject,", 1);
    std::fs::write(&f, csv).unwrap();
    let o = p.run(&["pipeline", "data"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("clinical_trial_data_2.csv") && out.contains("`subject_id`"),
        "{out}"
    );

    // a source with a header and no data: a clear message, exit 3, nothing panics
    let p = Project::sample();
    let header = std::fs::read_to_string(p.path("data/raw/clinical_trial_data_1.csv")).unwrap();
    let header = header.lines().next().unwrap().to_string() + "\n";
    std::fs::write(p.path("data/raw/clinical_trial_data_1.csv"), &header).unwrap();
    std::fs::write(p.path("data/raw/clinical_trial_data_2.csv"), &header).unwrap();
    let o = p.run(&["pipeline", "data"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("the sources hold no data rows"),
        "{}",
        text(&o)
    );

    // a config without a development key needs the key in the environment
    let p = Project::sample();
    let base = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    p.write(
        "nokey.yaml",
        &base.replace("  dev_key: trialflow-sample-development-key\n", ""),
    );
    let o = p.run(&["pipeline", "data", "--config", "nokey.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("TRIALFLOW_PSEUDONYM_KEY"), "{}", text(&o));
    // a copy of an example (no development key) refuses to run without the real key, and so does a key
    // too short to be secret or a development key the config does not allow
    p.write(
        "notallowed.yaml",
        &base.replace("  allow_dev_key: true\n", ""),
    );
    let o = p.run(&["pipeline", "data", "--config", "notallowed.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("allow_dev_key: true"), "{}", text(&o));
    let o = p
        .cmd(&["pipeline", "data", "--config", "nokey.yaml"])
        .env("TRIALFLOW_PSEUDONYM_KEY", "   ")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("3 bytes of blanks"), "{}", text(&o));
}

#[test]
fn colon_example_runs_with_config_only() {
    let p = Project::sample();
    let root = util::repo_root();
    std::fs::create_dir_all(p.path("config/examples")).unwrap();
    std::fs::create_dir_all(p.path("data/examples")).unwrap();
    std::fs::copy(
        root.join("config/examples/colon.yaml"),
        p.path("config/examples/colon.yaml"),
    )
    .unwrap();
    std::fs::copy(
        root.join("data/examples/colon.csv"),
        p.path("data/examples/colon.csv"),
    )
    .unwrap();
    let o = p.run_keyed(&["pipeline", "full", "--config", "config/examples/colon.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let a = p.report_json("data/lake-colon");
    assert_eq!(a["analyzed_rows"], 929);
    assert_eq!(a["arms"].as_array().unwrap().len(), 3);
    // R: survdiff(Surv(time, status) ~ rx, data = colon, subset = etype == 2) → Chisq = 11.7 on 2 df, p = 0.003
    let chi = a["survival"]["logrank_chi_square"].as_f64().unwrap();
    assert!((chi - 11.7).abs() < 0.05, "{chi}");
    assert_eq!(a["survival"]["logrank_df"], 2);
    assert!(p.path("models-colon/colon_death/1/BLESSED").exists());
}

/// `trialflow ingest` writes the raw zone as a pipeline's ingest task does, so it takes the lake's lock too: a
/// second writer exits 5 and leaves the lake alone.
#[test]
fn a_standalone_ingest_takes_the_lake_lock() {
    let p = Project::sample();
    let lake = trialflow_core::Storage::open(&format!("file://{}", p.path("data/lake").display()))
        .unwrap();
    let held = util::block_on(trialflow_dag::RunLock::acquire(
        &lake,
        trialflow_dag::LockSettings::default(),
    ))
    .unwrap();
    let o = p.run(&["ingest"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(!p.path("data/lake/raw/_current.json").exists());
    // a dry run writes nothing: it needs no lock
    let o = p.run(&["ingest", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    drop(held);
    let o = p.run(&["ingest"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(p.path("data/lake/raw/_current.json").exists());
}

#[test]
fn a_training_failure_does_not_keep_the_analysis_from_its_report() {
    let p = Project::sample();
    let cfg = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    // no subject has the outcome: every model refuses to train, the trial can still be described
    let broken = cfg.replacen(
        "    column: event            # 1 = major adverse cardiovascular event during follow-up",
        "    expression: \"followup_days < 0\"",
        1,
    );
    assert_ne!(cfg, broken);
    p.write("config/config.yaml", &broken);
    let o = p.run(&["pipeline", "full"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("task=train") && out.contains("status=failed"),
        "{out}"
    );
    assert!(out.contains("task=analyze status=succeeded"), "{out}");
    let a = p.report_json("data/lake");
    assert!(a["models"].as_array().unwrap().is_empty(), "{a}");
    assert!(a["survival"]["logrank_p_value"].as_f64().is_some());
}

/// With JSON logs (`TRIALFLOW_JSON_LOGS`, as the cluster manifests set it) a log collector gets JSON lines only,
/// from the pipeline and from the server's access log at info; and no patient value reaches any output: the
/// subject ids and dates of the sample appear nowhere in a whole run's output or in the server's log of a
/// request.
#[test]
fn json_logs_are_json_lines_only_and_carry_no_patient_values() {
    let p = Project::sample();
    let o = p
        .cmd(&["pipeline", "full"])
        .env("TRIALFLOW_JSON_LOGS", "1")
        .env("TRIALFLOW_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() > 20, "{stderr}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(
        stderr.contains("\"task finished\""),
        "progress lines are JSON too"
    );

    // every raw subject id and date of the sample, against the whole output
    let mut secrets = BTreeSet::new();
    for f in ["clinical_trial_data_1.csv", "clinical_trial_data_2.csv"] {
        let raw = std::fs::read_to_string(p.path(&format!("data/raw/{f}"))).unwrap();
        let header: Vec<&str> = raw.lines().next().unwrap().split(',').collect();
        let id = header.iter().position(|h| *h == "subject_id").unwrap();
        let date = header.iter().position(|h| *h == "enrollment_date").unwrap();
        for line in raw.lines().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            for i in [id, date] {
                if let Some(v) = cells.get(i).map(|c| c.trim()).filter(|c| c.len() >= 8) {
                    secrets.insert(v.to_string());
                }
            }
        }
    }
    assert!(secrets.len() > 6000, "{}", secrets.len());
    let all = text(&o);
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|s| all.contains(s.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "patient values in the run's output: {:?}",
        &leaked[..leaked.len().min(5)]
    );

    // the server's access log: JSON at info, without the request's values
    let log = p.path("server.log");
    let mut server = p
        .cmd(&["serve", "--port", "0"])
        .env("TRIALFLOW_JSON_LOGS", "true")
        .env("TRIALFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let port: u16 = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(v) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["address"].is_string())
        {
            break v["fields"]["address"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no address announced: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let srv = Server::attach(port);
    let body = r#"{"instances": [{"age": 61.98765, "sex": "F", "weight_kg": 71.23456, "height_cm": 165,
        "systolic_bp": 133, "diastolic_bp": 81, "ldl_mg_dl": 111, "hdl_mg_dl": 51, "creatinine_mg_dl": 0.93,
        "hba1c_pct": 5.7, "smoker": "no", "diabetic": "no", "arm": "placebo"}]}"#;
    let (status, answer) = srv.request("POST", "/v1/models/cv_outcome:predict", body);
    assert_eq!(status, 200, "{answer}");
    std::thread::sleep(Duration::from_millis(300));
    let _ = server.kill();
    let _ = server.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let access: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v: &serde_json::Value| v["target"] == "trialflow::access")
        .collect();
    assert_eq!(access.len(), 1, "{text}");
    assert_eq!(access[0]["fields"]["status"], 200);
    for value in ["61.98765", "71.23456"] {
        assert!(
            !text.contains(value),
            "a request value in the server log: {text}"
        );
    }
}

/// `trialflow config-schema`: every bundled config validates against the JSON Schema (Python's `jsonschema`, a
/// real validator), and the schema refuses what reading refuses (an unknown key, a wrong type).
#[test]
fn the_config_schema_accepts_every_bundled_config_and_refuses_typos() {
    let p = Project::sample();
    let o = p.run(&["config-schema"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schema.json"), &o.stdout).unwrap();
    let root = util::repo_root();
    let mut configs = vec![root.join("config/config.yaml")];
    for e in std::fs::read_dir(root.join("config/examples")).unwrap() {
        configs.push(e.unwrap().path());
    }
    configs.sort();
    let as_json = |yaml: &str| -> serde_json::Value { serde_yaml_ng::from_str(yaml).unwrap() };
    let mut names = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let v = as_json(&std::fs::read_to_string(c).unwrap());
        let name = format!("{i:02}-{}.json", c.file_stem().unwrap().to_string_lossy());
        std::fs::write(dir.path().join(&name), v.to_string()).unwrap();
        names.push(name);
    }
    let sample = as_json(&std::fs::read_to_string(root.join("config/config.yaml")).unwrap());
    let mut typo = sample.clone();
    typo["training"]["epoch"] = 3.into();
    std::fs::write(dir.path().join("bad-typo.json"), typo.to_string()).unwrap();
    let mut wrong_type = sample;
    wrong_type["training"]["epochs"] = "many".into();
    std::fs::write(dir.path().join("bad-type.json"), wrong_type.to_string()).unwrap();

    let script = r#"
import json, sys, pathlib, jsonschema
d = pathlib.Path(sys.argv[1])
schema = json.loads((d / "schema.json").read_text())
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for f in sorted(d.glob("*.json")):
    if f.name == "schema.json":
        continue
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(json.loads(f.read_text()))]
    print(f.name, "ok" if not errors else "invalid", errors[:2])
"#;
    let o = std::process::Command::new(util::test_python())
        .args(["-c", script])
        .arg(dir.path())
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for name in &names {
        assert!(out.contains(&format!("{name} ok")), "{name}: {out}");
    }
    assert!(
        out.contains("bad-typo.json invalid") && out.contains("epoch"),
        "{out}"
    );
    assert!(
        out.contains("bad-type.json invalid") && out.contains("training/epochs"),
        "{out}"
    );
}

/// `trialflow completions bash` is a script bash loads, completing the subcommands.
#[test]
fn shell_completions_load_in_bash() {
    let p = Project::sample();
    let o = p.run(&["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let script = p.path("trialflow.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let check = format!(
        "source {} && complete -p trialflow && COMP_WORDS=(trialflow pip); COMP_CWORD=1; COMP_LINE='trialflow pip'; \
         COMP_POINT=13; _trialflow trialflow pip trialflow && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let o = std::process::Command::new("bash")
        .args(["-c", &check])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.lines().any(|l| l.trim() == "pipeline"), "{out}");
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let o = p.run(&["completions", shell]);
        assert!(
            o.status.success() && o.stdout.len() > 500,
            "{shell}: {}",
            text(&o)
        );
    }
}
