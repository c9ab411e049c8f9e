//! What every trialflow binary does around its work: logs on stderr (`TRIALFLOW_LOG`, JSON on request), an
//! async runtime, and an error printed once and mapped to the documented exit code.

use std::future::Future;

/// Logs on stderr at `TRIALFLOW_LOG` (default `warn`), as JSON lines with `json`.
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIALFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json { b.json().init() } else { b.init() }
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
            eprintln!("error: cannot start the async runtime: {e}");
            1
        }
    }
}
