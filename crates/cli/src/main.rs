//! `trialflow`: the one binary. Wires the stage crates into DAG tasks and exposes them as commands.

mod generate;
mod summary;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use trialflow_core::{CODE_VERSION, Config, Storage};
use trialflow_dag::{PipelineSet, RunOptions};

/// candle allocates a fresh buffer per tensor op; glibc's malloc hands large ones back to the kernel every time,
/// and the page faults dominated training at large batches (`cargo xtask bench train`, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "trialflow", version = CODE_VERSION, about = "Clinical-trial data → validated dataset, statistics, models and a prediction API")]
struct Cli {
    /// Config file (default: config/config.yaml, else the embedded sample config).
    #[arg(long, global = true, env = "TRIALFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Every line on stderr as JSON (logs, progress, the final error), for log collectors.
    #[arg(long, global = true, env = "TRIALFLOW_JSON_LOGS", value_parser = clap::builder::BoolishValueParser::new())]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline (data, training, deployment, full) from pipelines/*.yaml.
    Pipeline {
        name: String,
        /// Run every selected task even if it is up to date.
        #[arg(long)]
        force: bool,
        /// Run just this task (its inputs must already be in the lake).
        #[arg(long, conflicts_with = "from")]
        only: Option<String>,
        /// Re-run this task and everything downstream of it.
        #[arg(long)]
        from: Option<String>,
        /// Print the plan (what would run and why) without running anything.
        #[arg(long)]
        dry_run: bool,
        /// Directory of pipeline definitions (default: ./pipelines, else the embedded copies).
        #[arg(long)]
        pipelines: Option<PathBuf>,
        /// Training device, overriding training.device: auto (CUDA when built with it and a GPU is present),
        /// cpu or cuda.
        #[arg(long, value_parser = ["auto", "cpu", "cuda"])]
        device: Option<String>,
    },
    /// Print the JSON Schema (draft 2020-12) of the config file, for editors and CI checks of a config.
    ConfigSchema,
    /// Print a completion script for a shell, e.g. `trialflow completions bash > /etc/bash_completion.d/trialflow`.
    Completions { shell: clap_complete::Shell },
    /// Write the synthetic sample trial (CSV files) used as the bundled default.
    Generate {
        #[arg(long, default_value_t = 6000)]
        rows: usize,
        #[arg(long, default_value_t = 20_261_126)]
        seed: u64,
        #[arg(long, default_value_t = 2)]
        files: usize,
        #[arg(long, default_value = "data/raw")]
        out: PathBuf,
    },
    /// Copy new or changed source files into the lake's raw zone.
    Ingest {
        /// List what would be copied and why, without copying.
        #[arg(long)]
        dry_run: bool,
    },
    /// Load and validate the config, print it resolved (environment overrides applied).
    CheckConfig,
    /// Write the preprocessing SQL generated from the dataset contract as files to read and edit; point
    /// `preprocessing.sql_dir` at them to run them instead.
    Sql {
        /// Directory (default: preprocessing.sql_dir, else pipelines/sql).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Serve blessed models over the TF Serving REST API and the Open Inference Protocol v2.
    Serve {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
    },
    /// The model repository: list versions, promote one, roll back the served one.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// A Ballista scheduler or executor that runs trialflow's SQL (for `execution.engine: df://host:port`; in a
    /// build with `--features ballista`).
    Cluster {
        #[command(subcommand)]
        role: ClusterRole,
    },
    /// Score a CSV or Parquet file with a blessed model version (streaming; output CSV or Parquet).
    Predict {
        /// Model name in the repository (default: serving.model_name).
        #[arg(long)]
        model: Option<String>,
        /// Version (default: the newest blessed one).
        #[arg(long)]
        version: Option<u64>,
        #[arg(long)]
        input: PathBuf,
        /// Output file; the input's columns plus `probability` and `error`.
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClusterRole {
    /// The scheduler: plans each query into stages and hands their tasks to executors.
    Scheduler {
        /// Address to listen on (gRPC).
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: std::net::SocketAddr,
    },
    /// An executor: runs tasks and serves their results over Arrow Flight.
    Executor {
        /// The scheduler to serve, `host:port` (a DNS name such as a Kubernetes Service, or an address).
        #[arg(long, default_value = "127.0.0.1:50050")]
        scheduler: String,
        /// Host to listen on and to advertise to the scheduler.
        #[arg(long, default_value = "127.0.0.1")]
        bind_host: String,
        #[arg(long, default_value_t = 50051)]
        flight_port: u16,
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Folder for shuffle files (default: a temporary folder).
        #[arg(long)]
        work_dir: Option<String>,
        /// Tasks at once (default: the machine's cores).
        #[arg(long)]
        concurrent_tasks: Option<usize>,
    },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Versions of a model (default: serving.model_name): state, which one is served, where each came from.
    List {
        model: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve an existing version again (published as a copy under the next version number).
    Promote {
        model: String,
        version: u64,
        /// Promote a version that is not blessed (rolled back, or never passed the gate); recorded as forced.
        #[arg(long)]
        force: bool,
    },
    /// Take the served version out of service; the blessed version before it is served again.
    Rollback { model: String },
}

#[cfg(feature = "ballista")]
async fn cluster(role: ClusterRole) -> Result<i32> {
    use trialflow_preprocess::cluster;
    match role {
        ClusterRole::Scheduler { bind } => {
            println!("trialflow: ballista scheduler on {bind}");
            cluster::run_scheduler(bind, Default::default()).await?;
        }
        ClusterRole::Executor {
            scheduler,
            bind_host,
            flight_port,
            grpc_port,
            work_dir,
            concurrent_tasks,
        } => {
            println!(
                "trialflow: ballista executor on {bind_host}:{flight_port}, scheduler {scheduler}"
            );
            cluster::run_executor(cluster::ExecutorOptions {
                scheduler,
                bind_host,
                flight_port,
                grpc_port,
                work_dir,
                concurrent_tasks,
                client: Default::default(),
            })
            .await?;
        }
    }
    Ok(0)
}

#[cfg(not(feature = "ballista"))]
async fn cluster(_role: ClusterRole) -> Result<i32> {
    Err(trialflow_core::Error::config(
        "trialflow cluster",
        "build",
        "this trialflow was built without Ballista: build it with `--features ballista`",
    )
    .into())
}

/// Maps an error to the documented exit codes: 2 config, 3 bad data, 4 infrastructure, 5 lake locked, 6 gate
/// refused, 1 other.
fn exit_code(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<trialflow_core::Error>() {
            return c.kind().exit_code();
        }
        if let Some(d) = cause.downcast_ref::<trialflow_dag::DagError>() {
            return d.exit_code();
        }
    }
    1
}

fn main() {
    let cli = Cli::parse();
    trialflow_core::binary::init_logs(cli.json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            trialflow_core::error::report_with_code(
                &format!("cannot start the async runtime: {e}"),
                1,
            );
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let code = exit_code(&e);
            trialflow_core::error::report_with_code(
                &trialflow_core::error::describe(e.as_ref()),
                code,
            );
            code
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<i32> {
    if let Command::Generate {
        rows,
        seed,
        files,
        out,
    } = &cli.command
    {
        for f in generate::generate(*rows, *seed, *files, out)? {
            println!("wrote {}", f.display());
        }
        return Ok(0);
    }
    match cli.command {
        Command::ConfigSchema => {
            let schema = serde_json::to_string_pretty(&Config::json_schema())
                .context("the config schema")?;
            println!("{schema}");
            return Ok(0);
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "trialflow", &mut std::io::stdout());
            return Ok(0);
        }
        Command::Cluster { role } => return cluster(role).await,
        Command::Serve { host, port } => {
            let cfg = Config::load_for_serving(cli.config.as_deref())?;
            let models = Storage::open_with(&cfg.storage.models, &cfg.storage.client)?;
            let addr = trialflow_serve::listen_addr(&cfg, host.as_deref(), port)?;
            trialflow_serve::serve(&cfg, models, addr, trialflow_serve::shutdown_signal()).await?;
            return Ok(0);
        }
        Command::Predict {
            model,
            version,
            input,
            output,
        } => {
            let cfg = Config::load_for_serving(cli.config.as_deref())?;
            let models = Storage::open_with(&cfg.storage.models, &cfg.storage.client)?;
            let name = model.unwrap_or_else(|| cfg.serving.model_name.clone());
            let loaded = trialflow_serve::load_version(&models, &name, version).await?;
            let started = std::time::Instant::now();
            let r = tokio::task::spawn_blocking(move || {
                trialflow_serve::batch::score_file(&loaded, &input, &output)
            })
            .await
            .context("batch scoring stopped")??;
            println!(
                "trialflow: predict {} version {}: {} rows, {} scored, {} not scored (see the `error` column) -> {} in {:.2}s",
                r.model,
                r.version,
                r.rows,
                r.scored,
                r.failed,
                r.output,
                started.elapsed().as_secs_f64()
            );
            return Ok(0);
        }
        _ => {}
    }
    // `--device` is one more override of the config, checked with the rest
    let overrides: Vec<(String, String)> = match &cli.command {
        Command::Pipeline {
            device: Some(d), ..
        } => vec![("TRIALFLOW_TRAINING__DEVICE".into(), d.clone())],
        _ => Vec::new(),
    };
    let cfg = Config::load_with(cli.config.as_deref(), &overrides)?;
    match cli.command {
        Command::CheckConfig => {
            // every check the pipeline would make of the config, SQL included, before anything runs
            trialflow_preprocess::check_sql(&cfg).await?;
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            Ok(0)
        }
        // handled above: they need no config
        Command::Generate { .. }
        | Command::Cluster { .. }
        | Command::ConfigSchema
        | Command::Completions { .. } => Ok(0),
        Command::Sql { out } => {
            let dir = out
                .or_else(|| cfg.preprocessing.sql_dir.as_ref().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("pipelines/sql"));
            for f in trialflow_preprocess::write_sql_dir(&cfg, &dir)? {
                println!("wrote {}", f.display());
            }
            Ok(0)
        }
        Command::Ingest { dry_run } => {
            let lake = Storage::open_with(&cfg.storage.lake, &cfg.storage.client)?;
            // writes raw/ as a pipeline's ingest task does: one writer per lake (a held lock exits 5)
            let lock = if dry_run {
                None
            } else {
                let settings = trialflow_dag::LockSettings::from_config(&cfg.dag);
                Some(trialflow_dag::RunLock::acquire(&lake, settings).await?)
            };
            let r = trialflow_ingest::ingest(&cfg, &lake, dry_run).await;
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
            Ok(0)
        }
        Command::Serve { .. } | Command::Predict { .. } => Ok(0), // handled above: serving config only
        Command::Models { action } => {
            let models = open_models(&cfg)?;
            models_command(&cfg, &models, action).await
        }
        Command::Pipeline {
            name,
            force,
            only,
            from,
            dry_run,
            pipelines,
            device: _,
        } => {
            let set = load_pipelines(pipelines)?;
            let registry = tasks::registry();
            let pipeline = set.resolve(&name, &registry.names())?;
            let lake = Storage::open_with(&cfg.storage.lake, &cfg.storage.client)?;
            let models = open_models(&cfg)?;
            let opts = RunOptions {
                force,
                only,
                from,
                dry_run,
                max_parallel: cfg.dag.max_parallel,
                retries: cfg.dag.retries,
                backoff: Duration::from_millis(cfg.dag.backoff_ms),
                code_version: CODE_VERSION.to_string(),
                lock: trialflow_dag::LockSettings::from_config(&cfg.dag),
            };
            let ctx = Arc::new(trialflow_dag::StageContext {
                cfg,
                lake: lake.clone(),
                models: models.clone(),
                code_version: CODE_VERSION.into(),
            });
            let task_objects = registry.build(&pipeline, &ctx)?;
            let started = std::time::Instant::now();
            let result = trialflow_dag::execute(&pipeline, &task_objects, &lake, &opts).await;
            if !dry_run {
                push_summary(&ctx.cfg, &name, &result, started.elapsed()).await;
            }
            let record = result?;
            summary::print(&record, &lake, &models, started.elapsed());
            Ok(record.exit_code)
        }
    }
}

/// The model repository, opened for changes: a local root that cannot be created is a repository that is not
/// writable, which only the configuration (or the mount) can fix.
fn open_models(cfg: &Config) -> Result<Storage, trialflow_core::Error> {
    Storage::open_with(&cfg.storage.models, &cfg.storage.client).map_err(|e| match e {
        trialflow_core::Error::Infra { location, message } => trialflow_core::Error::config(
            location,
            "storage.models",
            format!("the model repository is not writable: {message}"),
        ),
        e => e,
    })
}

/// Reports the run to the Pushgateway when one is configured. A push that fails is logged, not fatal: the
/// pipeline's own result stands.
async fn push_summary(
    cfg: &Config,
    pipeline: &str,
    result: &std::result::Result<trialflow_dag::RunRecord, trialflow_dag::DagError>,
    elapsed: Duration,
) {
    let Some(url) = &cfg.monitoring.pushgateway_url else {
        return;
    };
    let (record, exit_code) = match result {
        Ok(r) => (Some(r), r.exit_code),
        Err(e) => (None, e.exit_code()),
    };
    let mut s = trialflow_deploy::pushgateway::RunSummary {
        pipeline: pipeline.to_string(),
        exit_code,
        finished_unix: time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9,
        duration_seconds: elapsed.as_secs_f64(),
        ..Default::default()
    };
    if let Some(r) = record {
        for t in &r.tasks {
            *s.tasks
                .entry(format!("{:?}", t.status).to_lowercase())
                .or_default() += 1;
        }
        if let Some(clean) = r.task("clean").filter(|t| !t.summary.is_null()) {
            for (kind, key) in [
                ("read", "rows_in"),
                ("accepted", "accepted"),
                ("quarantined", "quarantined"),
            ] {
                if let Some(n) = clean.summary[key].as_u64() {
                    s.rows.insert(kind.into(), n);
                }
            }
        }
    }
    let job = cfg
        .monitoring
        .pushgateway_job
        .as_deref()
        .unwrap_or(trialflow_deploy::pushgateway::DEFAULT_JOB);
    match trialflow_deploy::pushgateway::push(url, job, &s).await {
        Ok(()) => tracing::info!(pipeline, "pushed the run's metrics to the Pushgateway"),
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "could not push the run's metrics to the Pushgateway")
        }
    }
}

async fn models_command(cfg: &Config, models: &Storage, action: ModelsAction) -> Result<i32> {
    match action {
        ModelsAction::List { model, json } => {
            let name = model.unwrap_or_else(|| cfg.serving.model_name.clone());
            let v = trialflow_deploy::scan(models, &name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v.versions)?);
                return Ok(0);
            }
            println!("{} in {}", name, models.display(""));
            println!(
                "  {:<8} {:<10} {:<7} {:<10} {:<26} {:<8} source",
                "VERSION", "STATE", "SERVED", "TEST METRIC", "PROMOTED", "FORCED"
            );
            for i in &v.versions {
                let metrics: Option<trialflow_core::contracts::TrainReport> =
                    trialflow_core::contracts::read_opt(
                        models,
                        &format!("{name}/{}/metrics.json", i.version),
                    )
                    .await?;
                // the endpoint's ranking metric: ROC AUC, R² or Harrell's C
                let ranking = metrics.map(|m| m.metrics.ranking());
                let rec = i.record.as_ref();
                println!(
                    "  {:<8} {:<10} {:<7} {:<10} {:<26} {:<8} {}",
                    i.version,
                    format!("{:?}", i.state).to_lowercase(),
                    if i.served { "yes" } else { "" },
                    ranking
                        .map(|(name, v)| format!(
                            "{name} {}",
                            v.map_or("n/a".into(), |v| format!("{v:.4}"))
                        ))
                        .unwrap_or_default(),
                    rec.map_or("", |r| r.at.as_str()),
                    if rec.is_some_and(|r| r.forced) {
                        "FORCED"
                    } else {
                        ""
                    },
                    rec.map_or("", |r| r.source.as_str())
                );
            }
            if v.versions.is_empty() {
                println!("  (no versions)");
            }
            Ok(0)
        }
        ModelsAction::Promote {
            model,
            version,
            force,
        } => {
            let p = trialflow_deploy::promote_version(cfg, models, &model, version, force).await?;
            if p.new_version {
                println!(
                    "trialflow: {model} version {version} promoted as version {}{} → {}",
                    p.version,
                    if p.forced {
                        " (FORCED: not blessed)"
                    } else {
                        ""
                    },
                    p.location
                );
            } else {
                println!("trialflow: {model} version {version} is already the served version");
            }
            Ok(0)
        }
        ModelsAction::Rollback { model } => {
            let r = trialflow_deploy::rollback(cfg, models, &model).await?;
            println!(
                "trialflow: {model} version {} rolled back; version {} is served again",
                r.revoked, r.serving
            );
            Ok(0)
        }
    }
}

const EMBEDDED_PIPELINES: [(&str, &str); 4] = [
    ("data", include_str!("../../../pipelines/data.yaml")),
    ("training", include_str!("../../../pipelines/training.yaml")),
    (
        "deployment",
        include_str!("../../../pipelines/deployment.yaml"),
    ),
    ("full", include_str!("../../../pipelines/full.yaml")),
];

fn load_pipelines(dir: Option<PathBuf>) -> Result<PipelineSet> {
    let dir = dir.unwrap_or_else(|| PathBuf::from("pipelines"));
    if dir.is_dir() {
        return Ok(PipelineSet::load_dir(&dir)?);
    }
    let sources: Vec<(String, String, String)> = EMBEDDED_PIPELINES
        .iter()
        .map(|(n, t)| {
            (
                n.to_string(),
                format!("<embedded pipelines/{n}.yaml>"),
                t.to_string(),
            )
        })
        .collect();
    Ok(PipelineSet::parse(&sources)?)
}
