//! `trialflow-server`: the model server alone, without the pipeline (no DataFusion): the binary of the
//! server container image and of the serving benchmark. Same flags and config as `trialflow serve`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use trialflow_core::{CODE_VERSION, Config, Storage};

/// A request allocates dozens of small objects (the parsed body, labels, the answer); glibc's malloc and free
/// were a sixth of the server's CPU under load (`perf`, `cargo xtask bench serve`), as in the `trialflow` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Threads serving connections, each with a runtime of its own (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Every line on stderr as JSON (logs, the listening address, the final error), for log collectors.
    #[arg(long, env = "TRIALFLOW_JSON_LOGS", value_parser = clap::builder::BoolishValueParser::new())]
    json_logs: bool,
}

fn main() {
    let cli = Cli::parse();
    trialflow_core::binary::init_logs(cli.json_logs);
    let threads = cli.threads;
    std::process::exit(trialflow_core::binary::run_main(threads, run(cli)));
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = Config::load_for_serving(cli.config.as_deref())?;
    let models = Storage::open_with(
        cli.models.as_deref().unwrap_or(&cfg.storage.models),
        &cfg.storage.client,
    )?;
    let addr = trialflow_serve::listen_addr(&cfg, cli.host.as_deref(), cli.port)?;
    trialflow_serve::serve(&cfg, models, addr, trialflow_serve::shutdown_signal()).await?;
    Ok(())
}
