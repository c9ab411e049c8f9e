//! Executes a resolved pipeline: fingerprints each task from its config, its code version and the content of
//! its inputs (taken just before it runs), skips what is up to date, runs the rest concurrently (bounded),
//! retries infrastructure failures with backoff, and writes `runs/<id>/run.json`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use trialflow_core::Storage;
use trialflow_core::fingerprint::{Fingerprinter, sha256_hex};
use trialflow_core::storage::Entry;

use crate::{DagError, LockSettings, Pipeline, RunLock, TaskSpec, def_err};
pub use trialflow_core::contracts::{RunRecord, TaskError, TaskRecord, TaskStatus};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a task reads and writes in the lake, plus fingerprint material that is not a lake object (its config
/// section, the listing of an external source).
#[derive(Debug, Clone, Default)]
pub struct TaskIo {
    /// Lake path prefixes whose content the task reads.
    pub inputs: Vec<String>,
    /// Lake prefixes the task also reads whose content an input already pins (content-addressed objects an
    /// input names): allowed reads, not hashed.
    pub pinned_reads: Vec<String>,
    /// Lake path prefixes the task writes (checked to still exist for a task to be up to date).
    pub outputs: Vec<String>,
    pub fingerprint_extra: serde_json::Value,
    /// State outside the lake that the task writes (e.g. the model repository), compared after the fact:
    /// recorded when the task succeeds, and the task is out of date once it differs.
    pub external_state: serde_json::Value,
}

/// A unit of work. `io` must be cheap (listings, no heavy reads); `run` does the work and returns a summary.
pub trait Task: Send + Sync {
    fn io(&self) -> BoxFuture<'_, Result<TaskIo, TaskError>>;
    /// `run_id` names this pipeline run (for outputs kept per run, such as reports).
    fn run<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<serde_json::Value, TaskError>>;
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub force: bool,
    pub only: Option<String>,
    pub from: Option<String>,
    pub dry_run: bool,
    pub max_parallel: usize,
    pub retries: u32,
    pub backoff: Duration,
    pub code_version: String,
    pub lock: LockSettings,
}

/// What the runner remembers about a task's last success: `runs/_state/<task>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TaskState {
    fingerprint: String,
    /// Input objects with their content hash; reused while size and etag are unchanged.
    inputs: BTreeMap<String, HashedEntry>,
    outputs: Vec<OutputEntry>,
    #[serde(default)]
    external_state: serde_json::Value,
    summary: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HashedEntry {
    size: u64,
    e_tag: Option<String>,
    sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OutputEntry {
    path: String,
    size: u64,
    e_tag: Option<String>,
}

fn state_path(task: &str) -> String {
    format!("runs/_state/{task}.json")
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Runs `pipeline` with the task objects in `tasks` (one per task name). Takes the lake lock for the run and
/// gives it back whatever the outcome; a lock another run broke meanwhile fails the run.
pub async fn execute(
    pipeline: &Pipeline,
    tasks: &HashMap<String, Arc<dyn Task>>,
    lake: &Storage,
    opts: &RunOptions,
) -> Result<RunRecord, DagError> {
    if opts.dry_run {
        return execute_locked(pipeline, tasks, lake, opts).await;
    }
    let lock = RunLock::acquire(lake, opts.lock).await?;
    let out = execute_locked(pipeline, tasks, lake, opts).await;
    let released = lock.release().await;
    let out = out?;
    released?;
    Ok(out)
}

async fn execute_locked(
    pipeline: &Pipeline,
    tasks: &HashMap<String, Arc<dyn Task>>,
    lake: &Storage,
    opts: &RunOptions,
) -> Result<RunRecord, DagError> {
    if !opts.dry_run {
        let swept = lake.sweep_staged()?;
        if swept > 0 {
            tracing::info!(
                files = swept,
                "removed staging files left by an interrupted run"
            );
        }
    }
    let started_at = now_rfc3339();
    // e.g. 20261126T174502Z-b89a63: sortable by time, unique per process
    let stamp: String = started_at
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let run_id = format!(
        "{stamp}Z-{}",
        &sha256_hex(format!("{started_at}{}", std::process::id()).as_bytes())[..6]
    );
    let (selected, forced) = select(pipeline, opts)?;
    let progress = Progress::new();
    progress.plan(pipeline, &selected);

    let specs: BTreeMap<String, TaskSpec> = pipeline
        .tasks
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let sem = Arc::new(Semaphore::new(opts.max_parallel.max(1)));
    let mut records: BTreeMap<String, TaskRecord> = BTreeMap::new();
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut set: JoinSet<TaskRecord> = JoinSet::new();
    loop {
        for name in &selected {
            if records.contains_key(name) || running.contains(name) {
                continue;
            }
            let spec = &specs[name];
            let deps: Vec<&String> = spec
                .after
                .iter()
                .filter(|d| selected.contains(*d))
                .collect();
            if deps.iter().any(|d| !records.contains_key(*d)) {
                continue;
            }
            let failed_dep = deps.iter().find(|d| {
                !spec.after_done.contains(**d)
                    && matches!(
                        records[**d].status,
                        TaskStatus::Failed | TaskStatus::Skipped
                    )
            });
            if let Some(d) = failed_dep {
                let rec = skipped(spec, format!("upstream task `{d}` did not succeed"));
                progress.finished(&rec);
                records.insert(name.clone(), rec);
                continue;
            }
            let upstream_would_run = deps
                .iter()
                .any(|d| records[*d].status == TaskStatus::WouldRun);
            let Some(task) = tasks.get(name).cloned() else {
                return Err(def_err(
                    &spec.file,
                    format!("tasks.{name}"),
                    "no implementation for this task",
                ));
            };
            running.insert(name.clone());
            let ctx = RunCtx {
                spec: spec.clone(),
                task,
                lake: lake.clone(),
                opts: opts.clone(),
                forced: forced.contains(name),
                upstream_would_run,
                run_id: run_id.clone(),
                sem: sem.clone(),
                progress: progress.clone(),
            };
            set.spawn(ctx.run());
        }
        match set.join_next().await {
            Some(Ok(rec)) => {
                running.remove(&rec.name);
                progress.finished(&rec);
                records.insert(rec.name.clone(), rec);
            }
            Some(Err(join)) => {
                return Err(DagError::Core(trialflow_core::Error::Internal(format!(
                    "task panicked: {join}"
                ))));
            }
            None => break,
        }
    }
    let tasks: Vec<TaskRecord> = pipeline
        .tasks
        .iter()
        .filter_map(|t| records.remove(&t.name))
        .collect();
    let worst = tasks
        .iter()
        .filter_map(|t| t.error.as_ref().map(|e| e.kind))
        .max_by_key(|k| k.severity());
    let record = RunRecord {
        run_id: run_id.clone(),
        pipeline: pipeline.name.clone(),
        code_version: opts.code_version.clone(),
        started_at,
        finished_at: now_rfc3339(),
        dry_run: opts.dry_run,
        exit_code: worst.map(|k| k.exit_code()).unwrap_or(0),
        tasks,
    };
    if !opts.dry_run {
        lake.put_json(&trialflow_core::contracts::run_record(&run_id), &record)
            .await?;
    }
    Ok(record)
}

/// The tasks to consider and those to run regardless of their fingerprint.
fn select(p: &Pipeline, opts: &RunOptions) -> Result<(Vec<String>, BTreeSet<String>), DagError> {
    let names: Vec<String> = p.tasks.iter().map(|t| t.name.clone()).collect();
    let check = |t: &str, flag: &str| {
        if names.iter().any(|n| n == t) {
            Ok(())
        } else {
            Err(def_err(
                &format!("--{flag}"),
                t,
                format!("no such task in pipeline `{}`: {names:?}", p.name),
            ))
        }
    };
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let (selected, mut forced) = if let Some(only) = &opts.only {
        check(only, "only")?;
        (vec![only.clone()], BTreeSet::new())
    } else if let Some(from) = &opts.from {
        check(from, "from")?;
        let mut down: BTreeSet<String> = BTreeSet::from([from.clone()]);
        for t in &p.tasks {
            if t.after.iter().any(|d| down.contains(d)) {
                down.insert(t.name.clone());
            }
        }
        (
            names
                .iter()
                .filter(|n| down.contains(*n))
                .cloned()
                .collect(),
            down,
        )
    } else {
        (names, BTreeSet::new())
    };
    if opts.force {
        forced = all;
    }
    Ok((selected, forced))
}

fn skipped(spec: &TaskSpec, reason: String) -> TaskRecord {
    TaskRecord {
        name: spec.name.clone(),
        run: spec.run.clone(),
        status: TaskStatus::Skipped,
        reason,
        fingerprint: None,
        attempts: 0,
        duration_ms: 0,
        error: None,
        summary: serde_json::Value::Null,
    }
}

struct RunCtx {
    spec: TaskSpec,
    task: Arc<dyn Task>,
    lake: Storage,
    opts: RunOptions,
    forced: bool,
    upstream_would_run: bool,
    run_id: String,
    sem: Arc<Semaphore>,
    progress: Progress,
}

impl RunCtx {
    async fn run(self) -> TaskRecord {
        let _permit = self.sem.clone().acquire_owned().await;
        let start = Instant::now();
        let mut rec = TaskRecord {
            name: self.spec.name.clone(),
            run: self.spec.run.clone(),
            status: TaskStatus::Failed,
            reason: String::new(),
            fingerprint: None,
            attempts: 0,
            duration_ms: 0,
            error: None,
            summary: serde_json::Value::Null,
        };
        match self.run_inner(&mut rec).await {
            Ok(()) => {}
            Err(e) => {
                rec.status = TaskStatus::Failed;
                rec.error = Some(e);
            }
        }
        rec.duration_ms = start.elapsed().as_millis() as u64;
        rec
    }

    async fn run_inner(&self, rec: &mut TaskRecord) -> Result<(), TaskError> {
        let previous: Option<TaskState> =
            match self.lake.get_opt(&state_path(&self.spec.name)).await? {
                Some(b) => serde_json::from_slice(&b).ok(), // an unreadable state only costs a re-run
                None => None,
            };
        if self.opts.dry_run && self.upstream_would_run {
            rec.status = TaskStatus::WouldRun;
            rec.reason = "an upstream task would run".into();
            return Ok(());
        }
        let io = self.task.io().await?;
        let (fingerprint, inputs) = self.fingerprint(&io, previous.as_ref()).await?;
        rec.fingerprint = Some(fingerprint.clone());
        let outputs = self.list_outputs(&io).await?;
        let reason = match &previous {
            _ if self.forced => Some("forced"),
            None => Some("never ran"),
            Some(p) if p.fingerprint != fingerprint => Some("inputs, config or code changed"),
            Some(p) if p.external_state != io.external_state => {
                Some("state outside the lake changed")
            }
            Some(p) if p.outputs != outputs || outputs.is_empty() => {
                Some("outputs missing or modified")
            }
            Some(_) => None,
        };
        let Some(reason) = reason else {
            rec.status = TaskStatus::UpToDate;
            rec.reason = "up to date".into();
            rec.summary = previous.map(|p| p.summary).unwrap_or_default();
            return Ok(());
        };
        rec.reason = reason.into();
        if self.opts.dry_run {
            rec.status = TaskStatus::WouldRun;
            return Ok(());
        }
        self.progress.started(&self.spec.name, reason);
        let summary = loop {
            rec.attempts += 1;
            match self.task.run(&self.run_id).await {
                Ok(s) => break s,
                Err(e) if e.kind.is_retryable() && rec.attempts <= self.opts.retries => {
                    let wait = self.opts.backoff * 2u32.saturating_pow(rec.attempts - 1);
                    self.progress
                        .retrying(&self.spec.name, rec.attempts, &e, wait);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        };
        let after = self.task.io().await?;
        let state = TaskState {
            fingerprint,
            inputs,
            outputs: self.list_outputs(&after).await?,
            external_state: after.external_state,
            summary: summary.clone(),
        };
        self.lake
            .put_json(&state_path(&self.spec.name), &state)
            .await?;
        rec.status = TaskStatus::Succeeded;
        rec.summary = summary;
        Ok(())
    }

    async fn fingerprint(
        &self,
        io: &TaskIo,
        previous: Option<&TaskState>,
    ) -> Result<(String, BTreeMap<String, HashedEntry>), TaskError> {
        let mut fp = Fingerprinter::new();
        fp.part("task", self.spec.name.as_bytes())
            .part("run", self.spec.run.as_bytes())
            .part(
                "with",
                serde_json::to_string(&self.spec.with)
                    .unwrap_or_default()
                    .as_bytes(),
            )
            .part("code", self.opts.code_version.as_bytes())
            .part(
                "extra",
                serde_json::to_string(&io.fingerprint_extra)
                    .unwrap_or_default()
                    .as_bytes(),
            );
        let mut hashed = BTreeMap::new();
        for prefix in &io.inputs {
            let entries = self.lake.list(prefix).await?;
            fp.part("input", prefix.as_bytes());
            for e in entries {
                let known = previous
                    .and_then(|p| p.inputs.get(&e.path))
                    .filter(|h| h.size == e.size && h.e_tag == e.e_tag && e.e_tag.is_some());
                let sha = match known {
                    Some(h) => h.sha256.clone(),
                    None => self.lake.sha256_hex(&e.path).await?,
                };
                fp.part(&e.path, sha.as_bytes());
                hashed.insert(
                    e.path.clone(),
                    HashedEntry {
                        size: e.size,
                        e_tag: e.e_tag,
                        sha256: sha,
                    },
                );
            }
        }
        Ok((fp.finish(), hashed))
    }

    async fn list_outputs(&self, io: &TaskIo) -> Result<Vec<OutputEntry>, TaskError> {
        let mut out = Vec::new();
        for prefix in &io.outputs {
            let entries: Vec<Entry> = self.lake.list(prefix).await?;
            out.extend(entries.into_iter().map(|e| OutputEntry {
                path: e.path,
                size: e.size,
                e_tag: e.e_tag,
            }));
        }
        Ok(out)
    }
}

/// Progress on stderr: symbols and timings on a terminal, `key=value` lines otherwise (CI, a file), one JSON
/// object per line with JSON logs (log collectors).
#[derive(Clone)]
struct Progress {
    style: Style,
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Terminal,
    KeyValue,
    Json,
}

impl Progress {
    fn new() -> Self {
        let style = if trialflow_core::binary::json_logs() {
            Style::Json
        } else if std::io::stderr().is_terminal() {
            Style::Terminal
        } else {
            Style::KeyValue
        };
        Self { style }
    }

    fn json(&self, message: &str, fields: &[(&str, serde_json::Value)]) {
        trialflow_core::binary::say("INFO", "", message, fields);
    }

    fn plan(&self, p: &Pipeline, selected: &[String]) {
        match self.style {
            Style::Terminal => trialflow_core::progress::eprint_line(&format!(
                "pipeline {} — {} task(s)",
                p.name,
                selected.len()
            )),
            Style::KeyValue => eprintln!("pipeline={} tasks={}", p.name, selected.len()),
            Style::Json => self.json(
                "pipeline planned",
                &[
                    ("pipeline", p.name.clone().into()),
                    ("tasks", selected.len().into()),
                ],
            ),
        }
    }

    fn started(&self, name: &str, reason: &str) {
        match self.style {
            Style::Terminal => {
                trialflow_core::progress::eprint_line(&format!("  ▶ {name} ({reason})"))
            }
            Style::KeyValue => eprintln!("task={name} status=started reason={reason:?}"),
            Style::Json => self.json(
                "task started",
                &[
                    ("task", name.into()),
                    ("status", "started".into()),
                    ("reason", reason.into()),
                ],
            ),
        }
    }

    fn retrying(&self, name: &str, attempt: u32, e: &TaskError, wait: Duration) {
        if self.style == Style::Json {
            return self.json(
                "task retrying",
                &[
                    ("task", name.into()),
                    ("status", "retrying".into()),
                    ("attempt", attempt.into()),
                    ("wait_ms", (wait.as_millis() as u64).into()),
                    ("error", e.message.clone().into()),
                ],
            );
        }
        eprintln!(
            "task={name} status=retrying attempt={attempt} wait_ms={} error={:?}",
            wait.as_millis(),
            e.message
        );
    }

    fn finished(&self, r: &TaskRecord) {
        let secs = r.duration_ms as f64 / 1000.0;
        let status = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        match self.style {
            Style::Terminal => {
                let mark = match r.status {
                    TaskStatus::Succeeded => "✓",
                    TaskStatus::UpToDate => "=",
                    TaskStatus::Failed => "✗",
                    TaskStatus::Skipped => "-",
                    TaskStatus::WouldRun => "?",
                };
                let detail = match (&r.error, r.status) {
                    (Some(e), _) => format!(" — {} error: {}", e.kind, e.message),
                    (None, TaskStatus::WouldRun | TaskStatus::Skipped) => {
                        format!(" — {}", r.reason)
                    }
                    _ => String::new(),
                };
                trialflow_core::progress::eprint_line(&format!(
                    "  {mark} {:<16} {:>7.2}s{detail}",
                    r.name, secs
                ));
            }
            Style::KeyValue => {
                let mut line = format!(
                    "task={} status={status} seconds={secs:.2} attempts={}",
                    r.name, r.attempts
                );
                if let Some(e) = &r.error {
                    line.push_str(&format!(
                        " error_kind={:?} error={:?}",
                        e.kind.to_string(),
                        e.message
                    ));
                } else if matches!(r.status, TaskStatus::WouldRun | TaskStatus::Skipped) {
                    line.push_str(&format!(" reason={:?}", r.reason));
                }
                eprintln!("{line}");
            }
            Style::Json => {
                let mut fields = vec![
                    ("task", r.name.clone().into()),
                    ("status", status.into()),
                    ("seconds", secs.into()),
                    ("attempts", r.attempts.into()),
                ];
                if let Some(e) = &r.error {
                    fields.push(("error_kind", e.kind.to_string().into()));
                    fields.push(("error", e.message.clone().into()));
                } else if matches!(r.status, TaskStatus::WouldRun | TaskStatus::Skipped) {
                    fields.push(("reason", r.reason.clone().into()));
                }
                self.json("task finished", &fields);
            }
        }
    }
}
