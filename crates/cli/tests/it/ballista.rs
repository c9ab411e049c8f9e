//! `execution.engine: df://host:port`: the data pipeline on a real Ballista scheduler and executor (our own
//! `trialflow cluster …` processes on 127.0.0.1) gives the local engine's outputs row for row.

#![cfg(feature = "ballista")]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::{Child, Stdio};

use crate::util::{Project, free_port, parquet_batches, text, wait_for_port};

/// A scheduler and its executors, killed on drop.
struct Cluster {
    scheduler: Child,
    executors: Vec<Child>,
    port: u16,
    work_dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start(p: &Project) -> Self {
        Self::start_with(p, 1, &[])
    }

    /// A scheduler and `executors` executors, each process with `env` (e.g. the lake's object-store
    /// credentials).
    fn start_with(p: &Project, executors: usize, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let spawn = |args: &[&str]| {
            let mut c = p.cmd(args);
            c.stdout(Stdio::null()).stderr(Stdio::null());
            for (k, v) in env {
                c.env(k, v);
            }
            c.spawn().unwrap()
        };
        let scheduler = spawn(&["cluster", "scheduler", "--bind", &bind]);
        wait_for_port(port, "the Ballista scheduler");
        let mut cluster = Self {
            scheduler,
            executors: Vec::new(),
            port,
            work_dirs: Vec::new(),
        };
        for _ in 0..executors {
            let work_dir = tempfile::tempdir().unwrap();
            let (flight, grpc) = (free_port(), free_port());
            cluster.executors.push(spawn(&[
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
            ]));
            wait_for_port(flight, "the Ballista executor");
            cluster.work_dirs.push(work_dir);
        }
        cluster
    }

    /// `pipeline data` (with `args`) of `p` on this cluster, with the test key when `keyed` (as `run_keyed`):
    /// it succeeds and the executors do work.
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
            self.files_written().iter().sum::<usize>() > 0,
            "the executors ran no task: the work did not go to the cluster"
        );
    }

    fn engine(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// Files each executor wrote (shuffle output of the tasks it ran).
    fn files_written(&self) -> Vec<usize> {
        self.work_dirs
            .iter()
            .map(|w| {
                let mut n = 0;
                let mut stack = vec![w.path().to_path_buf()];
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
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.executors.iter_mut().chain([&mut self.scheduler]) {
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

/// Copies the lake's objects under `prefix` (in the bucket) into the project's local lake folder, so that the
/// tables compare with the local engine's as files.
fn mirror(
    moto: &crate::util::Moto,
    bucket: &str,
    key_prefix: &str,
    p: &Project,
    local_prefix: &str,
) {
    use object_store::ObjectStoreExt;
    let store = moto.store(bucket);
    for key in moto.keys(bucket, key_prefix) {
        let rel = key.strip_prefix(key_prefix).unwrap();
        let bytes = crate::util::block_on(async {
            store
                .get(&object_store::path::Path::from(key.as_str()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        let to = p.path(&format!("{local_prefix}{rel}"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
}

/// `pipeline data` of `p` with `env` (the bucket's credentials and endpoint).
fn data_run(p: &Project, env: &[(&str, String)]) -> std::process::Command {
    let mut c = p.cmd(&["pipeline", "data"]);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn lake_in_bucket(p: &Project) {
    let path = p.path("config/config.yaml");
    let cfg = std::fs::read_to_string(&path).unwrap();
    assert!(cfg.contains("lake: file://data/lake"));
    std::fs::write(
        &path,
        cfg.replace("lake: file://data/lake", "lake: s3://lake/trialflow"),
    )
    .unwrap();
}

/// The scaled-out story as deployed: the lake in a bucket (moto's S3 server), a scheduler and two executors
/// of our own CLI that open the bucket from their environment. The outputs equal the local engine's row for
/// row, and the staged raw rows do not outlive the task.
#[test]
fn a_lake_in_a_bucket_on_two_executors_equals_the_local_engine_row_for_row() {
    let local = Project::sample();
    let o = local.run(&["pipeline", "data"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let moto = crate::util::Moto::start();
    moto.create_bucket("lake");
    let remote = Project::sample();
    lake_in_bucket(&remote);
    let env: Vec<(&str, String)> = moto.env();
    let cluster = Cluster::start_with(&remote, 2, &env);
    let mut c = data_run(&remote, &env);
    let o = c
        .env("TRIALFLOW_EXECUTION__ENGINE", cluster.engine())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let written = cluster.files_written();
    assert!(
        written.iter().sum::<usize>() > 0,
        "no task ran on the cluster: {written:?}"
    );
    let keys = moto.keys("lake", "trialflow/");
    assert!(!keys.iter().any(|k| k.contains("_staged")), "{keys:?}");

    mirror(
        &moto,
        "lake",
        "trialflow/processed/",
        &remote,
        "data/lake/processed/",
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
    ] {
        assert_json_close(&json_doc(&local, doc), &json_doc(&remote, doc), doc);
    }
}

/// Executors that cannot reach the lake's store (their S3 endpoint refuses connections) fail the task as an
/// infrastructure error that names the store; nothing is published.
#[test]
fn executors_that_cannot_reach_the_lakes_store_are_an_infrastructure_error_naming_it() {
    let moto = crate::util::Moto::start();
    moto.create_bucket("lake");
    let p = Project::sample();
    lake_in_bucket(&p);
    let env: Vec<(&str, String)> = moto.env();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let unreachable: Vec<(&str, String)> = env
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if *k == "AWS_ENDPOINT" {
                    closed.clone()
                } else {
                    v.clone()
                },
            )
        })
        .collect();
    assert_ne!(env, unreachable, "the moto environment names its endpoint");
    let cluster = Cluster::start_with(&p, 1, &unreachable);
    let mut c = data_run(&p, &env);
    let o = c
        .env("TRIALFLOW_EXECUTION__ENGINE", cluster.engine())
        .env("TRIALFLOW_DAG__RETRIES", "0")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(
        out.contains("s3://lake/trialflow/ on the Ballista cluster df://")
            && out.contains("lake/trialflow/raw/_staged.parquet"),
        "the error does not name the store:\n{out}"
    );
    assert!(
        moto.keys("lake", "trialflow/processed/clean").is_empty(),
        "published"
    );
}

/// A scheduler that dies mid-query: the run fails as infrastructure (exit 4), nothing is published, the staged
/// raw rows are removed, and a re-run on a working cluster completes.
#[test]
fn a_scheduler_dying_mid_query_publishes_nothing_and_a_rerun_completes() {
    let moto = crate::util::Moto::start();
    moto.create_bucket("lake");
    let p = Project::sample();
    lake_in_bucket(&p);
    let env: Vec<(&str, String)> = moto.env();
    for f in ["clinical_trial_data_1.csv", "clinical_trial_data_2.csv"] {
        std::fs::remove_file(p.path(&format!("data/raw/{f}"))).unwrap();
    }
    let o = p.run(&["generate", "--rows", "100000", "--out", "data/raw"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut cluster = Cluster::start_with(&p, 1, &env);
    let mut c = data_run(&p, &env);
    let mut run = c
        .env("TRIALFLOW_EXECUTION__ENGINE", cluster.engine())
        .env("TRIALFLOW_DAG__RETRIES", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the staged table goes to the lake just before the cluster query starts; the query over 100,000 rows
    // runs for seconds
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let staged = || {
        moto.keys("lake", "trialflow/raw")
            .iter()
            .any(|k| k.ends_with("/_staged.parquet"))
    };
    while !staged() {
        assert!(
            std::time::Instant::now() < deadline,
            "the clean task never staged its rows"
        );
        if run.try_wait().unwrap().is_some() {
            panic!(
                "the run ended before the query started:\n{}",
                text(&run.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = cluster.scheduler.kill();
    let _ = cluster.scheduler.wait();
    let o = run.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(
        moto.keys("lake", "trialflow/processed/clean").is_empty(),
        "published: {out}"
    );
    assert!(!staged(), "the raw rows outlived the task");
    drop(cluster);

    let cluster = Cluster::start_with(&p, 1, &env);
    let mut c = data_run(&p, &env);
    let o = c
        .env("TRIALFLOW_EXECUTION__ENGINE", cluster.engine())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!moto.keys("lake", "trialflow/processed/clean").is_empty());
}
