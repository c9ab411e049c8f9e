//! The model server: loads blessed versions from the model repository (and watches it), answers the TF Serving
//! REST API (`/v1/models/…`), the Open Inference Protocol health endpoints and `/metrics`.
//!
//! Invariants: the only crate that knows HTTP; inference goes through `trialflow_model` (the training
//! transform); client errors are 4xx with a JSON body naming the field, never a row value.

mod api;
mod repository;

pub use api::{AppState, router};
pub use repository::{LoadedVersion, Repository};

use std::sync::Arc;
use std::time::Duration;

use trialflow_core::config::Config;
use trialflow_core::{Error, Result, Storage};

/// Serves until `shutdown` resolves; in-flight requests are drained first.
pub async fn serve(
    cfg: &Config,
    models: Storage,
    addr: std::net::SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let repo = Arc::new(Repository::new(models));
    let report = repo.refresh().await?;
    tracing::info!(loaded = ?report, "model repository scanned");
    let poll = Duration::from_secs(cfg.serving.poll_seconds.max(1));
    let watcher = {
        let repo = repo.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.tick().await;
            loop {
                tick.tick().await;
                match repo.refresh().await {
                    Ok(r) if !r.is_empty() => {
                        tracing::info!(changes = ?r, "model repository changed")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "model repository scan failed; keeping the loaded versions")
                    }
                }
            }
        })
    };
    let state = AppState::new(repo, cfg.serving.max_rows);
    let app = router(state, cfg.serving.max_body_bytes);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::infra(addr.to_string(), format!("cannot listen: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::infra(addr.to_string(), e.to_string()))?;
    tracing::info!(address = %local, "serving");
    eprintln!("serving on http://{local}");
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::infra(local.to_string(), format!("server: {e}")));
    watcher.abort();
    res
}
