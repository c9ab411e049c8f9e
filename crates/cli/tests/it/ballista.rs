//! `execution.engine: df://host:port`: the data pipeline on a real Ballista scheduler and executor (our own
//! `trialflow cluster …` processes on 127.0.0.1) gives the local engine's outputs row for row.

#![cfg(feature = "ballista")]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::{Child, Stdio};

use crate::util::{Project, free_port, parquet_batches, text, wait_for_port};

/// A scheduler and one executor, killed on drop.
struct Cluster {
    scheduler: Child,
    executor: Child,
    port: u16,
    work_dir: tempfile::TempDir,
}

impl Cluster {
    fn start(p: &Project) -> Self {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let quiet = |c: &mut std::process::Command| {
            c.stdout(Stdio::null()).stderr(Stdio::null());
        };
        let mut c = p.cmd(&["cluster", "scheduler", "--bind", &bind]);
        quiet(&mut c);
        let scheduler = c.spawn().unwrap();
        wait_for_port(port, "the Ballista scheduler");
        let work_dir = tempfile::tempdir().unwrap();
        let (flight, grpc) = (free_port(), free_port());
        let mut c = p.cmd(&[
            "cluster",
            "executor",
            "--scheduler",
            &bind,
            "--flight-port",
            &flight.to_string(),
            "--grpc-port",
            &grpc.to_string(),
            "--concurrent-tasks",
            "2",
            "--work-dir",
            work_dir.path().to_str().unwrap(),
        ]);
        quiet(&mut c);
        let executor = c.spawn().unwrap();
        wait_for_port(flight, "the Ballista executor");
        Self {
            scheduler,
            executor,
            port,
            work_dir,
        }
    }

    /// `pipeline data` (with `args`) of `p` on this cluster, with the test key when `keyed` (as `run_keyed`):
    /// it succeeds and the executor does work.
    fn run_data(&self, p: &Project, args: &[&str], keyed: bool) {
        let mut c = p.cmd(&[&["pipeline", "data"], args].concat());
        if keyed {
            c.env("TRIALFLOW_PSEUDONYM_KEY", crate::util::TEST_KEY);
        }
        let o = c
            .env("TRIALFLOW_EXECUTION__ENGINE", self.engine())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            self.files_written() > 0,
            "the executor ran no task: the work did not go to the cluster"
        );
    }

    fn engine(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// Files the executor wrote (shuffle output of the tasks it ran).
    fn files_written(&self) -> usize {
        let mut n = 0;
        let mut stack = vec![self.work_dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    n += 1;
                }
            }
        }
        n
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in [&mut self.executor, &mut self.scheduler] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Parquet table as text, row by row (values printed exactly; string encodings compare equal).
fn table_text(p: &Project, rel: &str) -> (Vec<String>, String) {
    let dir = p.path(rel);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|f| f.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    let batches: Vec<_> = files.iter().flat_map(|f| parquet_batches(f)).collect();
    let names = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let rows = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    (names, without_project_dir(p, &rows))
}

/// Table `rel` has the same columns and rows in both projects, and more than a few rows.
fn assert_same_table(local: &Project, remote: &Project, rel: &str) {
    let (names_l, rows_l) = table_text(local, rel);
    let (names_r, rows_r) = table_text(remote, rel);
    assert_eq!(names_l, names_r, "{rel}: columns");
    assert!(rows_l.lines().count() > 4, "{rel} is empty");
    assert!(rows_l == rows_r, "{rel}: rows differ between engines");
}

/// `_source` names the project's own copy of the sample.
fn without_project_dir(p: &Project, text: &str) -> String {
    text.replace(&p.dir.path().display().to_string(), "<project>")
}

fn json_doc(p: &Project, rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(p.path(rel)).unwrap();
    serde_json::from_str(&without_project_dir(p, &text)).unwrap()
}

/// JSON equal up to floating-point summation order (aggregates merge partitions in another order).
fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                "{at}: {x} vs {y}"
            );
        }
        (V::Array(x), V::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (V::Object(x), V::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}: keys"
            );
            for (k, v) in x {
                assert_json_close(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn the_data_pipeline_on_a_ballista_cluster_equals_the_local_engine_row_for_row() {
    let local = Project::sample();
    let o = local.run(&["pipeline", "data"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let remote = Project::sample();
    let cluster = Cluster::start(&remote);
    cluster.run_data(&remote, &[], false);
    assert!(
        !remote.path("data/lake/raw/_staged.parquet").exists(),
        "the staged table (raw ids) outlived the clean task"
    );

    for table in [
        "data/lake/processed/clean",
        "data/lake/processed/quarantine",
        "data/lake/processed/features/split=train",
        "data/lake/processed/features/split=val",
        "data/lake/processed/features/split=test",
    ] {
        assert_same_table(&local, &remote, table);
    }
    for doc in [
        "data/lake/processed/clean_report.json",
        "data/lake/processed/feature_spec.json",
        "data/lake/processed/quality_report.json",
    ] {
        assert_json_close(&json_doc(&local, doc), &json_doc(&remote, doc), doc);
    }

    // A staged table that a killed cluster run left behind is removed by the next clean, local or not.
    let staged = remote.path("data/lake/raw/_staged.parquet");
    std::fs::write(&staged, b"left by a killed run").unwrap();
    let o = remote.run(&["pipeline", "data", "--from", "clean"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !staged.exists(),
        "a stale staged table survived a local clean"
    );
}

#[test]
fn an_unreachable_scheduler_is_an_infrastructure_error_naming_it() {
    let p = Project::sample();
    let engine = format!("df://127.0.0.1:{}", free_port());
    let o = p
        .cmd(&["pipeline", "data"])
        .env("TRIALFLOW_EXECUTION__ENGINE", &engine)
        .env("TRIALFLOW_DAG__RETRIES", "0")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(
        out.contains(&engine),
        "the error does not name {engine}:\n{out}"
    );
}

#[test]
fn record_tables_on_a_cluster_equal_the_local_engine() {
    // the SDTM example: DM joined to its VS, DS and AE pivots, a filter, record tables with quarantined records
    let cfg = "config/examples/cdiscpilot_sdtm.yaml";
    let data = "data/examples/cdiscpilot/sdtm";
    let projects = [Project::sample(), Project::sample()];
    for p in &projects {
        std::fs::create_dir_all(p.path("config/examples")).unwrap();
        std::fs::create_dir_all(p.path(data)).unwrap();
        let root = crate::util::repo_root();
        std::fs::copy(root.join(cfg), p.path(cfg)).unwrap();
        for domain in ["dm", "vs", "ds", "ae"] {
            let file = format!("{data}/{domain}.parquet");
            std::fs::copy(root.join(&file), p.path(&file)).unwrap();
        }
    }
    let [local, remote] = &projects;
    let o = local.run_keyed(&["pipeline", "data", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let cluster = Cluster::start(remote);
    cluster.run_data(remote, &["--config", cfg], true);
    let lake = "data/lake-cdiscpilot-sdtm";
    for table in [
        "processed/clean",
        "processed/quarantine",
        "processed/tables/ds",
        "processed/features/split=train",
    ] {
        assert_same_table(local, remote, &format!("{lake}/{table}"));
    }
    let doc = format!("{lake}/processed/clean_report.json");
    assert_json_close(&json_doc(local, &doc), &json_doc(remote, &doc), &doc);
}
