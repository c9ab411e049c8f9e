//! `trialflow-ingest`: ingestion alone (no DataFusion, no candle), for a lean ingestion job and for the
//! ingestion benchmark. Same config and output as `trialflow ingest`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use trialflow_core::{CODE_VERSION, Config, Storage};

/// Every chunk read and every part sent is a fresh multi-MiB buffer; glibc's malloc hands such buffers back to
/// the kernel and takes them again, and the page faults cost more system time than the reads themselves
/// (`cargo xtask bench ingest`, docs/benchmarks.md). mimalloc keeps them, as for `trialflow` and the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "trialflow-ingest", version = CODE_VERSION, about = "Copy new or changed trial source files into the lake's raw zone")]
struct Cli {
    /// Config file (default: config/config.yaml, else the embedded sample config).
    #[arg(long, env = "TRIALFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// List what would be copied and why, without copying.
    #[arg(long)]
    dry_run: bool,
    /// Every line on stderr as JSON (logs, the listening address, the final error), for log collectors.
    #[arg(long, env = "TRIALFLOW_JSON_LOGS", value_parser = clap::builder::BoolishValueParser::new())]
    json_logs: bool,
}

fn main() {
    let cli = Cli::parse();
    trialflow_core::binary::init_logs(cli.json_logs);
    std::process::exit(trialflow_core::binary::run_main(None, run(cli)));
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = Config::load(cli.config.as_deref())?;
    let lake = Storage::open_with(&cfg.storage.lake, &cfg.storage.client)?;
    // one writer per lake, as for `trialflow ingest` and pipeline runs
    let lock = if cli.dry_run {
        None
    } else {
        let settings = trialflow_dag::LockSettings::from_config(&cfg.dag);
        match trialflow_dag::RunLock::acquire(&lake, settings).await {
            Ok(l) => Some(l),
            Err(e @ trialflow_dag::DagError::Locked { .. }) => {
                trialflow_core::error::report_with_code(&e.to_string(), e.exit_code());
                std::process::exit(e.exit_code());
            }
            Err(e) => return Err(e.into()),
        }
    };
    let r = trialflow_ingest::ingest(&cfg, &lake, cli.dry_run).await;
    // the copy's own error first: a store that went away fails the release too
    let released = match lock {
        Some(lock) => lock.release().await,
        None => Ok(()),
    };
    let r = r?;
    released?;
    for f in &r.files {
        println!("{f}");
    }
    Ok(())
}
