//! The model server: loads blessed versions from the model repository by the version policy (and watches
//! it), answers the TF Serving REST API (`/v1/models/…`), the Open Inference Protocol v2 (`/v2/…`) and
//! `/metrics`; and batch scoring of files for researchers ([`batch`]).
//!
//! Invariants: the only crate that knows HTTP; inference goes through `trialflow_model` (the training
//! transform and forward pass); client errors are 4xx with a JSON body naming the field, never a row value;
//! limits refuse (413, 503) rather than queue.

pub mod batch;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod head;
mod input;
mod instances;
mod json;
mod listener;
mod ops;
mod process;
mod repository;
mod scan;
mod tensors;
mod testing;
mod tfserving;
mod v2;

pub use error::ApiError;
pub use repository::{LoadedVersion, Repository, Selector, load_version};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use tokio::sync::Semaphore;
use trialflow_core::config::{Config, ServingConfig};
use trialflow_core::{Error, Result, Storage};

use crate::error::ApiResult;
use crate::ops::{Limits, Metrics};

#[derive(Clone)]
pub struct AppState {
    repo: Arc<Repository>,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutting_down: Arc<AtomicBool>,
}

impl AppState {
    /// Ready: at least one version loaded and not draining for shutdown.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Relaxed) && self.repo.loaded_count() > 0
    }
}

/// Reads the whole body, refusing more than `serving.max_body_bytes` (413) before buffering them, and a body
/// that takes longer than `serving.body_read_timeout_ms` to arrive (408).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: &Limits,
) -> ApiResult<Bytes> {
    let max = limits.max_body_bytes;
    let too_large = || {
        ApiError::too_large(format!(
            "request body: larger than {max} bytes (serving.max_body_bytes)"
        ))
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    let read = tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, max))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body: not received within {} ms (serving.body_read_timeout_ms)",
                    limits.body_timeout.as_millis()
                ),
            )
        })?;
    read.map_err(|e| {
        if e.into_inner().is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            ApiError::bad("request body: could not be read")
        }
    })
}

pub fn router(state: AppState) -> Router {
    let models = Router::new()
        .route(
            "/v1/models/{*rest}",
            get(tfserving::get).post(tfserving::post),
        )
        .route("/v2/models/{*rest}", get(v2::get).post(v2::post))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::guard,
        ));
    Router::new()
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/metrics", get(ops::metrics))
        .merge(models)
        .fallback(|| async {
            ApiError::not_found(
                "path: no such route; expected /v1/models/…, /v2/…, /v2/health/{live,ready} or /metrics",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method: not allowed on this route (GET for status and metadata, POST for :predict and /infer)",
            )
        })
        .with_state(state)
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
    poll: Duration,
    connections: listener::ConnectionLimits,
    workers: listener::ConnectionWorkers,
}

impl Server {
    /// Scans the repository once, then binds `addr`. A bearer token named by `serving.auth_token_env` must
    /// be set in the environment.
    pub async fn bind(
        sc: &ServingConfig,
        config_file: &str,
        models: Storage,
        addr: SocketAddr,
    ) -> Result<Self> {
        let token = match &sc.auth_token_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.trim().is_empty() => Some(Arc::<str>::from(t.trim())),
                _ => {
                    return Err(Error::config(
                        config_file,
                        "serving.auth_token_env",
                        format!("the environment variable `{var}` must hold the bearer token"),
                    ));
                }
            },
        };
        let repo = Arc::new(Repository::new(
            models,
            sc.version_policy.clone(),
            sc.labels.clone(),
        ));
        match repo.refresh().await {
            Ok(r) => tracing::info!(changes = ?r, "model repository scanned"),
            // Not fatal: readiness stays false until a scan succeeds, as a probe should see it.
            Err(e) => tracing::warn!(error = %e, "model repository scan failed; retrying"),
        }
        if repo.loaded_count() == 0 {
            tracing::warn!(repository = %repo.location(), "no blessed model version yet: not ready");
        }
        let state = AppState {
            repo,
            limits: Limits {
                max_rows: sc.max_rows,
                max_body_bytes: sc.max_body_bytes,
                max_concurrent: sc.max_concurrent_requests,
                timeout: Duration::from_millis(sc.request_timeout_ms),
                body_timeout: Duration::from_millis(sc.body_read_timeout_ms),
                out_of_range_sd: sc.out_of_range_sd,
                token,
                concurrency: Arc::new(Semaphore::new(sc.max_concurrent_requests)),
            },
            metrics: Arc::new(Metrics::default()),
            shutting_down: Arc::new(AtomicBool::new(false)),
        };
        let workers = listener::ConnectionWorkers::per_runtime_worker().map_err(|e| {
            Error::infra(
                addr.to_string(),
                format!("cannot start the connection workers: {e}"),
            )
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::infra(addr.to_string(), format!("cannot listen: {e}")))?;
        Ok(Self {
            listener,
            state,
            poll: Duration::from_secs(sc.poll_seconds.max(1)),
            connections: listener::ConnectionLimits {
                max_connections: sc.max_connections,
                header_read_timeout: Duration::from_millis(sc.header_read_timeout_ms),
                write_timeout: Duration::from_millis(sc.write_timeout_ms),
            },
            workers,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::infra("listener", e.to_string()))
    }

    /// Serves until `shutdown` resolves, then stops accepting, reports not-ready, and drains in-flight
    /// requests before returning.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let local = self.local_addr()?;
        let repo = self.state.repo.clone();
        let poll = self.poll;
        let watcher = tokio::spawn(async move {
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
        });
        let flag = self.state.shutting_down.clone();
        let metrics = self.state.metrics.clone();
        let app = router(self.state);
        tracing::info!(address = %local, "serving");
        trialflow_core::binary::say(
            "INFO",
            &format!("serving on http://{local}"),
            &format!("serving on http://{local}"),
            &[("address", format!("http://{local}").into())],
        );
        let served = listener::serve(
            self.listener,
            app,
            self.connections,
            metrics,
            self.workers,
            async move {
                shutdown.await;
                flag.store(true, Ordering::Relaxed);
                trialflow_core::binary::say(
                    "INFO",
                    "shutting down: draining in-flight requests",
                    "shutting down: draining in-flight requests",
                    &[],
                );
            },
        )
        .await;
        watcher.abort();
        served.map_err(|e| Error::infra(local.to_string(), format!("cannot serve: {e}")))
    }
}

/// The address to listen on: `serving.host`/`serving.port` unless given on the command line.
pub fn listen_addr(cfg: &Config, host: Option<&str>, port: Option<u16>) -> Result<SocketAddr> {
    let host = host.unwrap_or(&cfg.serving.host);
    format!("{host}:{}", port.unwrap_or(cfg.serving.port))
        .parse()
        .map_err(|_| {
            Error::config(
                &cfg.source_file,
                "serving.host",
                format!("`{host}` is not an IP address"),
            )
        })
}

/// Binds and serves until `shutdown` resolves.
pub async fn serve(
    cfg: &Config,
    models: Storage,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Server::bind(&cfg.serving, &cfg.source_file, models, addr)
        .await?
        .run(shutdown)
        .await
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before it kills a pod).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
