//! What every trialflow binary does around its work: logs on stderr (`TRIALFLOW_LOG`, JSON on request), an
//! async runtime, and an error printed once and mapped to the documented exit code.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Logs on stderr at `TRIALFLOW_LOG` (default `warn`), as JSON lines with `json`. With `json`, every other line
/// a binary writes on stderr ([`say`]: progress, the listening address, the final error) is a JSON line too,
/// so that a log collector never receives a line it cannot parse.
pub fn init_logs(json: bool) {
    JSON_LOGS.store(json, Ordering::Relaxed);
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIALFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json { b.json().init() } else { b.init() }
}

/// Whether stderr carries JSON lines only.
pub fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// A line for the operator on stderr, whatever the log filter: `plain` as written, or with JSON logs one
/// object shaped as tracing's JSON lines are (`timestamp`, `level`, `target`, `fields` with `message` and
/// `fields`'s entries).
pub fn say(level: &str, plain: &str, message: &str, fields: &[(&str, Value)]) {
    if json_logs() {
        eprintln!("{}", json_line(level, message, fields));
    } else {
        eprintln!("{plain}");
    }
}

fn json_line(level: &str, message: &str, fields: &[(&str, Value)]) -> String {
    let mut f = Map::new();
    f.insert("message".into(), message.into());
    for (k, v) in fields {
        f.insert((*k).into(), v.clone());
    }
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut line = Map::new();
    line.insert("timestamp".into(), timestamp.into());
    line.insert("level".into(), level.into());
    line.insert("fields".into(), Value::Object(f));
    line.insert("target".into(), "trialflow".into());
    Value::Object(line).to_string()
}

/// Runs `main` on a multi-threaded runtime (`worker_threads`, default one per core) and returns the exit
/// code: 0, or the code of the error's kind after printing it (see [`crate::error::report`]).
pub fn run_main<F, E>(worker_threads: Option<usize>, main: F) -> i32
where
    F: Future<Output = std::result::Result<(), E>>,
    E: AsRef<dyn std::error::Error + 'static>,
{
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        rt.worker_threads(n.max(1));
    }
    match rt.enable_all().build() {
        Ok(rt) => match rt.block_on(main) {
            Ok(()) => 0,
            Err(e) => crate::error::report(e.as_ref()),
        },
        Err(e) => {
            say(
                "ERROR",
                &format!("error: cannot start the async runtime: {e}"),
                "cannot start the async runtime",
                &[("error", e.to_string().into())],
            );
            1
        }
    }
}
