//! `trialflow-server`: the model server alone, without the pipeline (no DataFusion): the binary of the
//! server container image and of the serving benchmark. Same flags and config as `trialflow serve`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use trialflow_core::{CODE_VERSION, Config, Storage};

#[derive(Parser)]
#[command(name = "trialflow-server", version = CODE_VERSION, about = "Serve blessed trialflow models (TF Serving REST, Open Inference Protocol v2, /metrics)")]
struct Cli {
    /// Config file (default: config/config.yaml, else the embedded sample config); only `storage.models`
    /// and `serving` are read.
    #[arg(long, env = "TRIALFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    /// Model repository URL (overrides storage.models).
    #[arg(long)]
    models: Option<String>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Logs as JSON lines on stderr.
    #[arg(long)]
    json_logs: bool,
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIALFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.json_logs {
        b.json().init()
    } else {
        b.init()
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let code = match rt.enable_all().build() {
        Ok(rt) => match rt.block_on(run(cli)) {
            Ok(()) => 0,
            Err(e) => trialflow_core::error::report(e.as_ref()),
        },
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = Config::load_for_serving(cli.config.as_deref())?;
    let models = Storage::open_with(
        cli.models.as_deref().unwrap_or(&cfg.storage.models),
        &cfg.storage.client,
    )?;
    let host = cli.host.unwrap_or_else(|| cfg.serving.host.clone());
    let addr: std::net::SocketAddr = format!("{host}:{}", cli.port.unwrap_or(cfg.serving.port))
        .parse()
        .with_context(|| format!("serving.host `{host}` is not an IP address"))?;
    trialflow_serve::serve(&cfg, models, addr, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
