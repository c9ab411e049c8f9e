//! The runner's behaviour with small fake tasks over a real local lake: caching, --force, --only, --from,
//! failure propagation, retries, concurrency bounds, the lock and exit codes.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use trialflow_core::{ErrorKind, Storage};
use trialflow_dag::{
    BoxFuture, DagError, LockSettings, PipelineSet, RunLock, RunOptions, RunRecord, Task,
    TaskError, TaskIo, TaskStatus, execute,
};

/// Writes the concatenation of its input objects with its own name appended. It declares exactly the objects
/// it reads, so "up to date" is earned by hashing them, never by an input left undeclared.
struct Fake {
    name: String,
    inputs: Vec<String>,
    lake: Storage,
    runs: AtomicUsize,
    /// Errors returned by the first attempts, in order.
    failures: Mutex<Vec<ErrorKind>>,
    sleep_ms: u64,
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Task for Fake {
    fn io(&self) -> BoxFuture<'_, Result<TaskIo, TaskError>> {
        Box::pin(async move {
            Ok(TaskIo {
                inputs: self.inputs.clone(),
                outputs: vec![format!("out/{}", self.name)],
                fingerprint_extra: Value::Null,
                external_state: Value::Null,
                ..Default::default()
            })
        })
    }

    fn run<'a>(&'a self, _run_id: &'a str) -> BoxFuture<'a, Result<Value, TaskError>> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
            self.active.fetch_sub(1, Ordering::SeqCst);
            if let Some(kind) = { self.failures.lock().unwrap().pop() } {
                return Err(TaskError {
                    kind,
                    message: format!("{} failed on purpose", self.name),
                });
            }
            let mut data = Vec::new();
            for i in &self.inputs {
                data.extend_from_slice(&self.lake.get(i).await?);
            }
            data.extend_from_slice(self.name.as_bytes());
            self.lake.put(&format!("out/{}", self.name), data).await?;
            Ok(json!({"task": self.name}))
        })
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    lake: Storage,
    tasks: HashMap<String, Arc<Fake>>,
    set: PipelineSet,
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

/// a → b → d, a → c → d ; e independent.
const PIPE: &str = "tasks:\n  a: {run: k}\n  b: {run: k, after: [a]}\n  c: {run: k, after: [a]}\n  d: {run: k, after: [b, c]}\n  e: {run: k}\n";

fn harness(sleep_ms: u64) -> Harness {
    harness_with(PIPE, sleep_ms)
}

fn harness_with(pipe: &str, sleep_ms: u64) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let lake = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
    let set = PipelineSet::parse(&[("p".into(), "p.yaml".into(), pipe.into())]).unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let inputs: [(&str, &[&str]); 5] = [
        ("a", &["src"]),
        ("b", &["out/a"]),
        ("c", &["out/a"]),
        ("d", &["out/b", "out/c"]),
        ("e", &["src"]),
    ];
    let tasks = inputs
        .iter()
        .map(|(n, i)| {
            let f = Fake {
                name: n.to_string(),
                inputs: i.iter().map(|s| s.to_string()).collect(),
                lake: lake.clone(),
                runs: AtomicUsize::new(0),
                failures: Mutex::new(Vec::new()),
                sleep_ms,
                active: active.clone(),
                peak: peak.clone(),
            };
            (n.to_string(), Arc::new(f))
        })
        .collect();
    Harness {
        _dir: dir,
        lake,
        tasks,
        set,
        active,
        peak,
    }
}

fn opts() -> RunOptions {
    RunOptions {
        force: false,
        only: None,
        from: None,
        dry_run: false,
        max_parallel: 4,
        retries: 2,
        backoff: Duration::from_millis(1),
        code_version: "test".into(),
        lock: LockSettings::default(),
    }
}

impl Harness {
    async fn run(&self, o: &RunOptions) -> Result<RunRecord, DagError> {
        let p = self.set.resolve("p", &["k"]).unwrap();
        let tasks: HashMap<String, Arc<dyn Task>> = self
            .tasks
            .iter()
            .map(|(k, v)| (k.clone(), v.clone() as Arc<dyn Task>))
            .collect();
        execute(&p, &tasks, &self.lake, o).await
    }

    fn runs(&self, n: &str) -> usize {
        self.tasks[n].runs.load(Ordering::SeqCst)
    }

    fn status(r: &RunRecord, n: &str) -> TaskStatus {
        r.task(n).unwrap().status
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_is_up_to_date_and_input_change_reruns_downstream_only() {
    let h = harness(0);
    h.lake.put("src", "x").await.unwrap();
    let r = h.run(&opts()).await.unwrap();
    assert_eq!(r.exit_code, 0);
    assert!(r.tasks.iter().all(|t| t.status == TaskStatus::Succeeded));
    assert_eq!(&h.lake.get("out/d").await.unwrap()[..], b"xabxacd");
    // the run record is in the lake
    let rec: RunRecord = h
        .lake
        .get_json(&format!("runs/{}/run.json", r.run_id))
        .await
        .unwrap();
    assert_eq!(rec.tasks.len(), 5);

    let r = h.run(&opts()).await.unwrap();
    assert!(
        r.tasks.iter().all(|t| t.status == TaskStatus::UpToDate),
        "{:?}",
        r.tasks
    );
    assert_eq!(h.runs("a"), 1);

    // c's output is rewritten with other content: c re-runs (outputs modified), d re-runs (input changed)
    h.lake.put("out/c", "tampered").await.unwrap();
    let r = h.run(&opts()).await.unwrap();
    assert_eq!(Harness::status(&r, "c"), TaskStatus::Succeeded);
    assert_eq!(Harness::status(&r, "a"), TaskStatus::UpToDate);
    assert_eq!(Harness::status(&r, "b"), TaskStatus::UpToDate);
    // c restored the same bytes, so d's inputs (b and c, both declared) hash as before: d is up to date
    assert_eq!(Harness::status(&r, "d"), TaskStatus::UpToDate);
    assert_eq!(h.runs("d"), 1);

    // a changed source re-runs everything that reads it, directly or not
    h.lake.put("src", "y").await.unwrap();
    let r = h.run(&opts()).await.unwrap();
    assert!(
        r.tasks.iter().all(|t| t.status == TaskStatus::Succeeded),
        "{:?}",
        r.tasks
    );
    assert_eq!(&h.lake.get("out/d").await.unwrap()[..], b"yabyacd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_only_and_from_select_tasks() {
    let h = harness(0);
    h.lake.put("src", "x").await.unwrap();
    h.run(&opts()).await.unwrap();

    let r = h
        .run(&RunOptions {
            force: true,
            ..opts()
        })
        .await
        .unwrap();
    assert!(r.tasks.iter().all(|t| t.status == TaskStatus::Succeeded));
    assert_eq!(h.runs("e"), 2);

    let r = h
        .run(&RunOptions {
            only: Some("b".into()),
            force: true,
            ..opts()
        })
        .await
        .unwrap();
    assert_eq!(r.tasks.len(), 1);
    assert_eq!(h.runs("b"), 3);
    assert_eq!(h.runs("a"), 2);

    let r = h
        .run(&RunOptions {
            from: Some("c".into()),
            ..opts()
        })
        .await
        .unwrap();
    let names: Vec<&str> = r.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["c", "d"],
        "--from runs the task and its downstream, forced"
    );
    assert!(r.tasks.iter().all(|t| t.status == TaskStatus::Succeeded));

    let e = h
        .run(&RunOptions {
            only: Some("zzz".into()),
            ..opts()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("zzz"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_without_running() {
    let h = harness(0);
    h.lake.put("src", "x").await.unwrap();
    let r = h
        .run(&RunOptions {
            dry_run: true,
            ..opts()
        })
        .await
        .unwrap();
    assert!(r.tasks.iter().all(|t| t.status == TaskStatus::WouldRun));
    assert_eq!(h.runs("a"), 0);
    assert!(
        h.lake.list("runs/").await.unwrap().is_empty(),
        "a dry run writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_skips_dependents_not_independents_and_sets_exit_code() {
    let h = harness(0);
    h.lake.put("src", "x").await.unwrap();
    h.tasks["b"]
        .failures
        .lock()
        .unwrap()
        .push(ErrorKind::BadData);
    let r = h.run(&opts()).await.unwrap();
    assert_eq!(Harness::status(&r, "b"), TaskStatus::Failed);
    assert_eq!(
        r.task("b").unwrap().attempts,
        1,
        "bad data is never retried"
    );
    assert_eq!(Harness::status(&r, "d"), TaskStatus::Skipped);
    assert_eq!(Harness::status(&r, "c"), TaskStatus::Succeeded);
    assert_eq!(Harness::status(&r, "e"), TaskStatus::Succeeded);
    assert_eq!(r.exit_code, ErrorKind::BadData.exit_code());
    // the next run picks up where it failed
    let r = h.run(&opts()).await.unwrap();
    assert_eq!(r.exit_code, 0);
    assert_eq!(Harness::status(&r, "b"), TaskStatus::Succeeded);
    assert_eq!(Harness::status(&r, "c"), TaskStatus::UpToDate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_after_done_waits_for_its_dependency_and_runs_whatever_its_outcome() {
    // e waits for b (the report waits for training) but does not need it to succeed
    let h = harness_with(
        &PIPE.replace("e: {run: k}", "e: {run: k, after_done: [b]}"),
        20,
    );
    h.lake.put("src", "x").await.unwrap();
    h.tasks["b"]
        .failures
        .lock()
        .unwrap()
        .push(ErrorKind::GateRefused);
    let r = h.run(&opts()).await.unwrap();
    assert_eq!(Harness::status(&r, "b"), TaskStatus::Failed);
    assert_eq!(Harness::status(&r, "d"), TaskStatus::Skipped);
    assert_eq!(Harness::status(&r, "e"), TaskStatus::Succeeded);
    // ordered after b, as an `after` dependency is
    let plan = h.set.resolve("p", &["k"]).unwrap();
    let at = |n: &str| plan.tasks.iter().position(|t| t.name == n).unwrap();
    assert!(at("e") > at("b"), "{plan:?}");
    // the run's outcome is b's failure, its own exit code
    assert_eq!(r.exit_code, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_errors_are_retried_with_a_bound() {
    let h = harness(0);
    h.lake.put("src", "x").await.unwrap();
    h.tasks["a"].failures.lock().unwrap().push(ErrorKind::Infra);
    let r = h.run(&opts()).await.unwrap();
    assert_eq!(Harness::status(&r, "a"), TaskStatus::Succeeded);
    assert_eq!(r.task("a").unwrap().attempts, 2);

    let h = harness(0);
    h.lake.put("src", "x").await.unwrap();
    h.tasks["e"]
        .failures
        .lock()
        .unwrap()
        .extend([ErrorKind::Infra; 5]);
    let r = h.run(&opts()).await.unwrap();
    assert_eq!(r.task("e").unwrap().attempts, 3, "1 attempt + 2 retries");
    assert_eq!(r.exit_code, ErrorKind::Infra.exit_code());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_tasks_run_concurrently_within_the_bound() {
    let h = harness(150);
    h.lake.put("src", "x").await.unwrap();
    h.run(&opts()).await.unwrap();
    assert!(
        h.peak.load(Ordering::SeqCst) >= 2,
        "a and e (then b and c) should overlap"
    );
    assert_eq!(h.active.load(Ordering::SeqCst), 0);

    let h = harness(50);
    h.lake.put("src", "x").await.unwrap();
    h.run(&RunOptions {
        max_parallel: 1,
        ..opts()
    })
    .await
    .unwrap();
    assert_eq!(h.peak.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_refuses_a_second_run_and_is_released_on_drop() {
    let h = harness(0);
    h.lake.put("src", "x").await.unwrap();
    let lock = RunLock::acquire(&h.lake, LockSettings::default())
        .await
        .unwrap();
    let e = h.run(&opts()).await.unwrap_err();
    assert!(matches!(e, DagError::Locked { .. }), "{e}");
    assert_eq!(e.exit_code(), 5);
    drop(lock);
    assert_eq!(h.run(&opts()).await.unwrap().exit_code, 0);
}
