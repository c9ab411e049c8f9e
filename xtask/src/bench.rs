//! `cargo xtask bench serve`: trialflow-server (release build) against the serving stacks a platform team would
//! pick instead — Seldon's MLServer 1.7 (a custom runtime, Open Inference Protocol v2), KServe 0.21's Python
//! ModelServer (a custom `kserve.Model`, v1 and v2) — and a FastAPI + PyTorch app, all serving the same model_2
//! weights with the same feature transform (their probabilities are checked equal to trialflow's first), side by
//! side in one run, loaded by wrk on 127.0.0.1, single-row and 1,000-row bodies on each protocol a server speaks.
//! Every server is up for the whole bench and the runs go round them in turn; prints a markdown table with
//! medians over the runs and the ratio to the best peer on the same protocol, then the ratios paired by round.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{cargo, ensure_apt, root, status, venv};

pub(crate) struct Opts {
    pub(crate) runs: usize,
    seconds: u64,
    connections: usize,
    /// Rows of the generated trial (`bench preprocess`).
    pub(crate) rows: usize,
    /// Several trial sizes, one table each and a scaling table (`bench preprocess --sizes 1000000,5000000`).
    pub(crate) sizes: Vec<usize>,
    /// Only these tools (`bench preprocess --only trialflow,duckdb`); empty = all.
    pub(crate) only: Vec<String>,
    /// Megabytes of each generated file (`bench read`, and `bench ingest`'s reading rows).
    pub(crate) mb: u64,
    /// `bench serve`: the load generator on CPU 0 (one wrk thread), every server on the other CPUs.
    pin: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        runs: 3,
        seconds: 10,
        connections: 32,
        rows: 5_000_000,
        sizes: Vec::new(),
        only: Vec::new(),
        mb: 1000,
        pin: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<u64> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name}: expected a number"))
        };
        match a.as_str() {
            "--runs" => o.runs = val("--runs")?.max(1) as usize,
            "--seconds" => o.seconds = val("--seconds")?.max(1),
            "--connections" => o.connections = val("--connections")?.max(1) as usize,
            "--rows" => o.rows = val("--rows")?.max(1000) as usize,
            "--mb" => o.mb = val("--mb")?.max(1),
            "--pin" => o.pin = true,
            "--sizes" => {
                let list = it
                    .next()
                    .context("--sizes: expected a comma-separated list of row counts")?;
                o.sizes = list
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().map(|n| n.max(1000)))
                    .collect::<Result<_, _>>()
                    .context("--sizes: expected numbers")?;
            }
            "--only" => {
                let list = it
                    .next()
                    .context("--only: expected a comma-separated tool list")?;
                o.only = list.split(',').map(str::to_string).collect();
            }
            other => bail!(
                "unknown option `{other}` (expected --runs, --seconds, --connections, --pin, --rows, --sizes, --only, --mb)"
            ),
        }
    }
    Ok(o)
}

pub fn bench(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("serve") => serve(&parse_opts(&args[1..])?),
        Some("ingest") => {
            let o = parse_opts(&args[1..])?;
            ingest(&o)?;
            crate::bench_read::read(&o)
        }
        Some("read") => crate::bench_read::read(&parse_opts(&args[1..])?),
        Some("train") => train(&parse_opts(&args[1..])?),
        Some("preprocess") => crate::bench_preprocess::preprocess(&parse_opts(&args[1..])?),
        Some("cluster") => {
            let mut o = parse_opts(&args[1..])?;
            if !args.iter().any(|a| a == "--rows") {
                o.rows = 1_000_000;
            }
            crate::bench_cluster::cluster(&o)
        }
        _ => bail!(
            "usage: cargo xtask bench serve [--runs N] [--seconds S] [--connections C] [--pin] [--only mlserver,kserve,fastapi]\n       cargo xtask bench ingest [--runs N] [--mb MB]\n       cargo xtask bench read [--runs N] [--mb MB]\n       cargo xtask bench train [--runs N] [--only auc|endpoints|clustering]\n       cargo xtask bench preprocess [--rows N | --sizes N,N,…] [--runs N] [--only polars,duckdb,…]\n       cargo xtask bench cluster [--rows N] [--runs N]"
        ),
    }
}

/// A scratch project with the sample trial, trained once (the pipeline's cache makes re-runs instant).
fn trained_model(dir: &Path) -> Result<PathBuf> {
    let root = root();
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::create_dir_all(dir.join("data/raw"))?;
    std::fs::copy(
        root.join("config/config.yaml"),
        dir.join("config/config.yaml"),
    )?;
    for f in ["clinical_trial_data_1.csv", "clinical_trial_data_2.csv"] {
        std::fs::copy(root.join("data/raw").join(f), dir.join("data/raw").join(f))?;
    }
    let mut c = Command::new(crate::built("debug", "trialflow")?);
    c.current_dir(dir)
        .args(["pipeline", "full"])
        .stdout(Stdio::null());
    status(c, "trialflow pipeline full (sample trial, for model_2)")?;
    let cand = dir.join("data/lake/candidates/model_2");
    let repo = dir.join("bench-models");
    let version = repo.join("model_2/1");
    std::fs::create_dir_all(&version)?;
    for f in ["model.safetensors", "model.json"] {
        std::fs::copy(cand.join(f), version.join(f)).with_context(|| format!("copying {f}"))?;
    }
    std::fs::write(version.join("BLESSED"), "{\"benchmark\": true}")?;
    Ok(repo)
}

/// A record of the sample's raw fields, varied by `i` so batches are not one row repeated.
fn record(i: usize) -> Value {
    json!({
        "age": 40 + (i * 7) % 45, "sex": if i.is_multiple_of(2) { "male" } else { "F" },
        "weight_kg": 60.0 + ((i * 13) % 50) as f64, "height_cm": 150 + (i * 11) % 45,
        "systolic_bp": 110 + (i * 17) % 60, "diastolic_bp": 70 + (i * 5) % 25,
        "ldl_mg_dl": 90 + (i * 19) % 90, "hdl_mg_dl": 35 + (i * 3) % 35,
        "creatinine_mg_dl": 0.7 + ((i * 7) % 10) as f64 / 10.0, "hba1c_pct": 5.0 + ((i * 3) % 30) as f64 / 10.0,
        "smoker": if i.is_multiple_of(3) { "yes" } else { "no" }, "diabetic": if i.is_multiple_of(4) { "yes" } else { "no" },
        "arm": if i.is_multiple_of(2) { "Treatment" } else { "placebo" },
    })
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn post(port: u16, path: &str, body: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

struct Server {
    name: String,
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(port: u16, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(
                s,
                "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            if r.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{name} did not become ready on port {port}")
}

/// Peak resident memory (VmHWM) of `pid` and its descendants, in MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    let mut total_kib = 0u64;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/status"))
            && let Some(line) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            total_kib += line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                    stack.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
                }
            }
        }
    }
    total_kib as f64 / 1024.0
}

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn parse_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

/// How the servers and the load generator share the CPUs.
#[derive(Clone, Copy)]
enum Cpus {
    /// Everything on every CPU, wrk with two threads.
    Shared,
    /// wrk (one thread) on CPU 0, the server and its workers on CPUs 1 to `last`.
    Pinned { last: usize },
}

impl Cpus {
    fn of(o: &Opts) -> Result<Self> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        if !o.pin {
            return Ok(Cpus::Shared);
        }
        if n < 2 {
            bail!("--pin needs two CPUs or more (this machine has {n})");
        }
        Ok(Cpus::Pinned { last: n - 1 })
    }

    /// `program` started on the server's CPUs.
    fn server(self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Cpus::Shared => Command::new(program),
            Cpus::Pinned { last } => {
                let mut c = Command::new("taskset");
                c.args(["-c", &format!("1-{last}")]).arg(program);
                c
            }
        }
    }

    fn describe(self) -> String {
        match self {
            Cpus::Shared => "wrk -t2; server and wrk share the machine's CPUs (not pinned)".into(),
            Cpus::Pinned { last } => format!(
                "wrk -t1 pinned to CPU 0, each server (all its processes) pinned to CPUs 1-{last} (`--pin`)"
            ),
        }
    }
}

fn wrk(
    cpus: Cpus,
    port: u16,
    path: &str,
    body_file: &Path,
    conns: usize,
    seconds: u64,
) -> Result<Load> {
    let script = body_file.with_extension("lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nlocal f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\n",
            body_file.display()
        ),
    )?;
    let mut command = match cpus {
        Cpus::Shared => {
            let mut c = Command::new("wrk");
            c.arg("-t2");
            c
        }
        Cpus::Pinned { .. } => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", "wrk", "-t1"]);
            c
        }
    };
    let out = command
        .args([
            &format!("-c{conns}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut l = Load::default();
    for line in text.lines() {
        let t = line.trim();
        let mut w = t.split_whitespace();
        match (w.next(), w.next()) {
            (Some("50%"), Some(v)) => l.p50_ms = parse_ms(v).unwrap_or(f64::NAN),
            (Some("99%"), Some(v)) => l.p99_ms = parse_ms(v).unwrap_or(f64::NAN),
            (Some("Requests/sec:"), Some(v)) => l.rps = v.parse().unwrap_or(0.0),
            _ => {}
        }
        if let Some(n) = t.strip_prefix("Non-2xx or 3xx responses:") {
            l.errors += n.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = t.strip_prefix("Socket errors:") {
            l.errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok(l)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Row {
    name: String,
    protocol: Protocol,
    single: Vec<Load>,
    batch: Vec<Load>,
    peak_mib: f64,
}

fn predictions(body: &str) -> Result<Vec<f64>> {
    let v: Value = serde_json::from_str(body).context("response is not JSON")?;
    v["predictions"]
        .as_array()
        .context("no predictions")?
        .iter()
        .map(|p| p[0].as_f64().or_else(|| p.as_f64()).context("not a number"))
        .collect()
}

/// The debug workspace binaries (the pipeline trains the sample trial's models) and one release binary, the
/// thing measured. Returns the release binary's path.
fn build_for_bench(package: &str, bin: &str) -> Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    status(
        build,
        "cargo build --workspace --bins (the pipeline, for the sample trial)",
    )?;
    build_release(package, bin)
}

/// One release binary, the thing a benchmark measures. Returns its path.
pub(crate) fn build_release(package: &str, bin: &str) -> Result<PathBuf> {
    let mut rel = cargo();
    rel.args(["build", "--release", "-p", package, "--bin", bin]);
    status(rel, &format!("cargo build --release --bin {bin}"))?;
    crate::built("release", bin)
}

/// A record's fields as Open Inference Protocol input tensors (one per raw feature: FP64 numbers, BYTES texts).
fn v2_body(records: &[Value]) -> String {
    let Some(first) = records.first().and_then(Value::as_object) else {
        return json!({ "inputs": [] }).to_string();
    };
    let inputs: Vec<Value> = first
        .iter()
        .map(|(name, v)| {
            let data: Vec<Value> = records.iter().map(|r| r[name].clone()).collect();
            let datatype = if v.is_string() { "BYTES" } else { "FP64" };
            json!({ "name": name, "datatype": datatype, "shape": [records.len()], "data": data })
        })
        .collect();
    json!({ "inputs": inputs }).to_string()
}

fn v2_predictions(body: &str) -> Result<Vec<f64>> {
    let v: Value = serde_json::from_str(body).context("response is not JSON")?;
    let out = v["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "probability"))
        .context("no `probability` output")?;
    out["data"]
        .as_array()
        .context("no data")?
        .iter()
        .map(|p| p.as_f64().context("not a number"))
        .collect()
}

/// The two protocols a server may speak: TF Serving's REST predict (v1) and the Open Inference Protocol (v2).
#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    TfServing,
    V2,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::TfServing => "TF Serving / KServe v1",
            Protocol::V2 => "Open Inference v2",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Protocol::TfServing => "/v1/models/model_2:predict",
            Protocol::V2 => "/v2/models/model_2/infer",
        }
    }
    fn predictions(self, body: &str) -> Result<Vec<f64>> {
        match self {
            Protocol::TfServing => predictions(body),
            Protocol::V2 => v2_predictions(body),
        }
    }
}

/// A server of the serving bench: how to start it and which protocols it speaks.
struct Setup<'a> {
    name: &'static str,
    protocols: &'a [Protocol],
    start: Box<dyn Fn() -> Result<Server> + 'a>,
}

fn serve(o: &Opts) -> Result<()> {
    ensure_apt("wrk", "wrk")?;
    let cpus = Cpus::of(o)?;
    let root = root();
    let python = venv("bench", &root.join("xtask/bench/requirements-bench.txt"))?;
    let mlserver = venv(
        "mlserver",
        &root.join("xtask/bench/requirements-mlserver.txt"),
    )?;
    let kserve = venv("kserve", &root.join("xtask/bench/requirements-kserve.txt"))?;
    // Release only for the server binary: it does not link DataFusion, so this stays a short build.
    build_for_bench("trialflow-serve", "trialflow-server")?;
    let dir = root.join("target/bench/serve");
    let repo = trained_model(&dir)?;
    let model_dir = repo.join("model_2/1");
    let records_single = vec![record(1)];
    let records_batch: Vec<Value> = (0..1000).map(record).collect();
    let mut bodies = Vec::new();
    for (protocol, tag) in [(Protocol::TfServing, "v1"), (Protocol::V2, "v2")] {
        let (single, batch) = match protocol {
            Protocol::TfServing => (
                json!({ "instances": records_single }).to_string(),
                json!({ "instances": records_batch }).to_string(),
            ),
            Protocol::V2 => (v2_body(&records_single), v2_body(&records_batch)),
        };
        let (single_file, batch_file) = (
            dir.join(format!("single-{tag}.json")),
            dir.join(format!("batch-{tag}.json")),
        );
        std::fs::write(&single_file, &single)?;
        std::fs::write(&batch_file, &batch)?;
        bodies.push((protocol, single_file, batch_file, batch));
    }
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    };
    let bench_dir = root.join("xtask/bench");
    let setups: Vec<Setup> = vec![
        Setup {
            name: "trialflow-server (axum, release)",
            protocols: &[Protocol::TfServing, Protocol::V2],
            start: Box::new(|| {
                let port = free_port()?;
                let mut c = cpus.server(crate::built("release", "trialflow-server")?);
                c.current_dir(&dir)
                    .args(["--port", &port.to_string(), "--models"])
                    .arg(format!("file://{}", repo.display()));
                quiet(&mut c);
                let child = c.spawn().context("starting trialflow-server")?;
                Ok(Server {
                    name: "trialflow-server".into(),
                    child,
                    port,
                })
            }),
        },
        Setup {
            name: "FastAPI + PyTorch, uvicorn + uvloop + httptools (2 workers)",
            protocols: &[Protocol::TfServing],
            start: Box::new(|| {
                let port = free_port()?;
                let mut c = cpus.server(&python);
                c.current_dir(&bench_dir)
                    .args(["-m", "uvicorn", "serve_fastapi:app", "--host", "127.0.0.1"])
                    .args([
                        "--port",
                        &port.to_string(),
                        "--log-level",
                        "warning",
                        "--no-access-log",
                    ])
                    .args(["--loop", "uvloop", "--http", "httptools", "--workers", "2"])
                    .env("MODEL_DIR", &model_dir)
                    .env("MODEL_NAME", "model_2");
                quiet(&mut c);
                let child = c.spawn().context("starting uvicorn")?;
                Ok(Server {
                    name: "FastAPI".into(),
                    child,
                    port,
                })
            }),
        },
        Setup {
            name: "MLServer 1.7 (custom runtime, numpy)",
            protocols: &[Protocol::V2],
            start: Box::new(|| {
                let port = free_port()?;
                let settings = dir.join("mlserver");
                std::fs::create_dir_all(&settings)?;
                // parallel_workers 0: inference in the server process (its worker pool does not start on this
                // Python); metrics and gRPC on ports of their own, unused
                std::fs::write(
                    settings.join("settings.json"),
                    json!({ "http_port": port, "grpc_port": free_port()?, "metrics_port": free_port()?,
                            "parallel_workers": 0, "debug": false, "load_models_at_startup": true })
                    .to_string(),
                )?;
                std::fs::write(
                    settings.join("model-settings.json"),
                    json!({ "name": "model_2", "implementation": "serve_mlserver.TrialflowRuntime",
                            "parameters": { "uri": model_dir } })
                    .to_string(),
                )?;
                let mut c = cpus.server(mlserver.with_file_name("mlserver"));
                c.current_dir(&bench_dir)
                    .arg("start")
                    .arg(&settings)
                    .env("PYTHONPATH", &bench_dir);
                quiet(&mut c);
                let child = c.spawn().context("starting mlserver")?;
                Ok(Server {
                    name: "MLServer".into(),
                    child,
                    port,
                })
            }),
        },
        Setup {
            name: "KServe 0.21 ModelServer (custom Model, numpy)",
            protocols: &[Protocol::TfServing, Protocol::V2],
            start: Box::new(|| {
                let port = free_port()?;
                let mut c = cpus.server(&kserve);
                c.current_dir(&bench_dir)
                    .arg("serve_kserve.py")
                    .arg("--model_dir")
                    .arg(&model_dir)
                    .args(["--model_name", "model_2", "--http_port", &port.to_string()]);
                quiet(&mut c);
                let child = c.spawn().context("starting the KServe model server")?;
                Ok(Server {
                    name: "KServe".into(),
                    child,
                    port,
                })
            }),
        },
    ];
    // Every chosen server is started first and the runs go round them in turn (each round starting one server
    // further on), so that a drift of this machine's speed over minutes falls on every server alike instead of
    // on whichever runs last; each round's ratios are taken between loads about a minute apart at most.
    let chosen: Vec<&Setup> = setups
        .iter()
        .filter(|setup| {
            o.only.is_empty()
                || setup.name == setups[0].name
                || o.only
                    .iter()
                    .any(|w| setup.name.to_lowercase().contains(&w.to_lowercase()))
        })
        .collect();
    let mut servers = Vec::new();
    for setup in &chosen {
        let s = (setup.start)()?;
        wait_ready(s.port, &s.name)?;
        servers.push(s);
    }
    let mut reference: Vec<Option<Vec<f64>>> = vec![None, None];
    let mut rows = Vec::new();
    let mut loads = Vec::new();
    for (server, (setup, s)) in chosen.iter().zip(&servers).enumerate() {
        for (k, (protocol, single_file, batch_file, batch)) in bodies.iter().enumerate() {
            if !setup.protocols.contains(protocol) {
                continue;
            }
            let path = protocol.path();
            let (code, body) = post(s.port, path, batch)?;
            if code != 200 {
                bail!(
                    "{}: the 1,000-row {} request failed ({code}): {body:.300}",
                    setup.name,
                    protocol.label()
                );
            }
            let p = protocol.predictions(&body)?;
            match &reference[k] {
                None => reference[k] = Some(p),
                Some(r) => {
                    let worst = r
                        .iter()
                        .zip(&p)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    if r.len() != p.len() || worst > 1e-5 {
                        bail!(
                            "{} ({}) disagrees with trialflow (max |Δp| {worst:e}): not comparable",
                            setup.name,
                            protocol.label()
                        );
                    }
                    eprintln!(
                        "xtask: {} ({}) agrees with trialflow (max |Δp| {worst:.1e})",
                        setup.name,
                        protocol.label()
                    );
                }
            }
            wrk(cpus, s.port, path, single_file, o.connections, 2)?; // warm-up
            rows.push(Row {
                name: setup.name.to_string(),
                protocol: *protocol,
                single: Vec::new(),
                batch: Vec::new(),
                peak_mib: 0.0,
            });
            loads.push((server, s.port, path, single_file, batch_file));
        }
    }
    for run in 0..o.runs {
        for turn in 0..rows.len() {
            let i = (run + turn) % rows.len();
            let (_, port, path, single_file, _) = loads[i];
            let a = wrk(cpus, port, path, single_file, o.connections, o.seconds)?;
            rows[i].single.push(a);
        }
        for turn in 0..rows.len() {
            let i = (run + turn) % rows.len();
            let (_, port, path, _, batch_file) = loads[i];
            let b = wrk(cpus, port, path, batch_file, 4, o.seconds)?;
            rows[i].batch.push(b);
        }
        for r in &rows {
            eprintln!(
                "xtask: {} {} run {}: single {:.0} req/s p99 {:.2} ms; batch {:.1} req/s p99 {:.1} ms",
                r.name,
                r.protocol.label(),
                run + 1,
                r.single[run].rps,
                r.single[run].p99_ms,
                r.batch[run].rps,
                r.batch[run].p99_ms
            );
        }
    }
    for (row, (server, ..)) in rows.iter_mut().zip(&loads) {
        row.peak_mib = peak_rss_mib(servers[*server].child.id());
    }
    print_table(&rows, o, cpus);
    print_paired(&rows);
    Ok(())
}

fn print_table(rows: &[Row], o: &Opts, cpus: Cpus) {
    let med = |v: &[Load], f: fn(&Load) -> f64| median(v.iter().map(f).collect());
    println!(
        "\nSingle-row predict, {} connections, {} s × {} runs (medians); 1,000-row requests, 4 connections; {}.\n",
        o.connections,
        o.seconds,
        o.runs,
        cpus.describe()
    );
    println!(
        "| server | protocol | single req/s | p50 ms | p99 ms | × best peer | 1,000-row req/s | rows/s | p50 ms | p99 ms | × best peer | non-2xx | peak RSS MiB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let peers = rows
            .iter()
            .filter(|p| p.protocol == r.protocol && p.name != rows[0].name);
        let best = peers
            .clone()
            .map(|p| med(&p.single, |l| l.rps))
            .fold(0.0, f64::max);
        let best_batch = peers.map(|p| med(&p.batch, |l| l.rps)).fold(0.0, f64::max);
        let s_rps = med(&r.single, |l| l.rps);
        let b_rps = med(&r.batch, |l| l.rps);
        let errors: u64 = r.single.iter().chain(&r.batch).map(|l| l.errors).sum();
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {:.0} |",
            r.name,
            r.protocol.label(),
            s_rps,
            med(&r.single, |l| l.p50_ms),
            med(&r.single, |l| l.p99_ms),
            s_rps / best,
            b_rps,
            b_rps * 1000.0,
            med(&r.batch, |l| l.p50_ms),
            med(&r.batch, |l| l.p99_ms),
            b_rps / best_batch,
            errors,
            r.peak_mib
        );
    }
}

/// trialflow-server's rate over the best peer's on the same protocol, round by round (the rounds load every
/// server in turn), for single-row and 1,000-row bodies: the median and the range over the rounds.
fn print_paired(rows: &[Row]) {
    println!(
        "\nPaired by round: trialflow-server's req/s over the best peer's on the same protocol in the same round (median, range over the rounds):\n"
    );
    println!("| protocol | single-row | 1,000-row |");
    println!("|---|---:|---:|");
    for ours in rows.iter().filter(|r| r.name == rows[0].name) {
        let peers: Vec<&Row> = rows
            .iter()
            .filter(|p| p.protocol == ours.protocol && p.name != ours.name)
            .collect();
        if peers.is_empty() {
            continue;
        }
        let cell = |of: fn(&Row) -> &[Load]| {
            let rates = |r: &Row| of(r).iter().map(|l| l.rps).collect::<Vec<_>>();
            let theirs: Vec<Vec<f64>> = peers.iter().map(|p| rates(p)).collect();
            let theirs: Vec<&[f64]> = theirs.iter().map(Vec::as_slice).collect();
            summary(&paired_ratios(&rates(ours), &theirs, f64::max))
        };
        println!(
            "| {} | {} | {} |",
            ours.protocol.label(),
            cell(|r| &r.single),
            cell(|r| &r.batch)
        );
    }
}

/// Round by round, `ours` over the best of the peers' values of that round (`best`: `f64::max` for rates,
/// `f64::min` for times). Loads run side by side share the machine's speed of the moment, which on these VMs
/// drifts by a fifth or more within minutes: a ratio of medians taken minutes apart carries that drift, the
/// round's ratio does not. A round without any peer's value gives no ratio.
pub(crate) fn paired_ratios(ours: &[f64], peers: &[&[f64]], best: fn(f64, f64) -> f64) -> Vec<f64> {
    ours.iter()
        .enumerate()
        .filter_map(|(k, v)| {
            let b = peers
                .iter()
                .filter_map(|p| p.get(k).copied())
                .reduce(best)?;
            Some(v / b)
        })
        .collect()
}

/// `median× (min–max)` of ratios, as the paired tables print them.
pub(crate) fn summary(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return "no rounds".into();
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2}× ({lo:.2}–{hi:.2})", median(ratios.to_vec()))
}

/// Runs `cmd` to completion, sampling its peak resident memory; returns (seconds, peak MiB).
fn measured(cmd: Command, what: &str) -> Result<(f64, f64)> {
    let (secs, peak, _, _) = run_measured(cmd, what)?;
    Ok((secs, peak))
}

/// Seconds, peak RSS in MiB (the process and its children), stdout and stderr of a command that must succeed.
pub(crate) fn run_measured(mut cmd: Command, what: &str) -> Result<(f64, f64, String, String)> {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().context("stdout")?));
    let err = drain(Box::new(child.stderr.take().context("stderr")?));
    let mut peak = 0.0f64;
    let status = loop {
        peak = peak.max(peak_rss_mib(child.id()));
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if !status.success() {
        bail!("{what} failed ({status}): {err}");
    }
    Ok((secs, peak, out, err))
}

struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(python: &Path) -> Result<Self> {
        let port = free_port()?;
        let bin = python
            .parent()
            .context("python has no folder")?
            .join("moto_server");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("moto did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        write!(
            s,
            "PUT /lake HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut r = String::new();
        s.read_to_string(&mut r)?;
        Ok(Self { child, port })
    }

    fn env(&self, c: &mut Command) {
        c.env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ≥ 1 GiB CSV made of the sample trial's records, repeated (kept between runs).
fn big_csv(dir: &Path) -> Result<(PathBuf, u64)> {
    let path = dir.join("data/raw/clinical_trial_data_big.csv");
    if let Ok(m) = std::fs::metadata(&path)
        && m.len() >= 1 << 30
    {
        return Ok((path, m.len()));
    }
    std::fs::create_dir_all(dir.join("data/raw"))?;
    let sample = std::fs::read_to_string(root().join("data/raw/clinical_trial_data_1.csv"))?;
    let (header, body) = sample.split_once('\n').context("empty sample")?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(w, "{header}")?;
    let mut size = header.len() as u64 + 1;
    while size < 1 << 30 {
        w.write_all(body.as_bytes())?;
        size += body.len() as u64;
    }
    w.flush()?;
    Ok((path, size))
}

fn ingest(o: &Opts) -> Result<()> {
    let root = root();
    let python = venv("serve", &root.join("xtask/requirements-serve.txt"))?;
    let bin = build_release("trialflow-ingest", "trialflow-ingest")?;
    let dir = root.join("target/bench/ingest");
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::write(
        dir.join("config/config.yaml"),
        std::fs::read_to_string(root.join("config/config.yaml"))?
            .replace("clinical_trial_data_*.csv", "clinical_trial_data_big.csv"),
    )?;
    let (file, size) = big_csv(&dir)?;
    let mib = size as f64 / (1 << 20) as f64;
    let mut rows: Vec<(&str, Vec<(f64, f64)>)> = vec![
        ("trialflow-ingest: local → local lake", vec![]),
        ("cp (local copy, no hashing or checks)", vec![]),
        ("trialflow-ingest: local → S3 lake (moto)", vec![]),
        ("boto3 upload_file: local → S3 (moto)", vec![]),
    ];
    for run in 0..o.runs {
        let lake = dir.join("lake-local");
        let _ = std::fs::remove_dir_all(&lake);
        let mut c = Command::new(&bin);
        c.current_dir(&dir).env(
            "TRIALFLOW_STORAGE__LAKE",
            format!("file://{}", lake.display()),
        );
        rows[0].1.push(measured(c, "trialflow-ingest (local)")?);
        let copy = dir.join("copy.csv");
        let mut c = Command::new("cp");
        c.arg(&file).arg(&copy);
        rows[1].1.push(measured(c, "cp")?);
        let _ = std::fs::remove_file(&copy);
        // A fresh S3 server per upload: moto keeps objects in memory. The two uploads swap places every run:
        // the first upload of a series ran slowest here.
        let ours = |run: usize| -> Result<(f64, f64)> {
            let moto = Moto::start(&python)?;
            let mut c = Command::new(&bin);
            c.current_dir(&dir)
                .env("TRIALFLOW_STORAGE__LAKE", format!("s3://lake/run{run}"));
            moto.env(&mut c);
            measured(c, "trialflow-ingest (S3)")
        };
        let boto3 = || -> Result<(f64, f64)> {
            let moto = Moto::start(&python)?;
            let mut c = Command::new(&python);
            c.args([
                "-c",
                "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1]).upload_file(sys.argv[2], 'lake', 'peer.csv')",
                &format!("http://127.0.0.1:{}", moto.port),
            ])
            .arg(&file);
            moto.env(&mut c);
            measured(c, "boto3 upload_file")
        };
        if run % 2 == 0 {
            rows[2].1.push(ours(run)?);
            rows[3].1.push(boto3()?);
        } else {
            rows[3].1.push(boto3()?);
            rows[2].1.push(ours(run)?);
        }
        eprintln!(
            "xtask: ingest run {}: local {:.1} s, S3 {:.1} s",
            run + 1,
            rows[0].1[run].0,
            rows[2].1[run].0
        );
    }
    println!(
        "\n{:.0} MiB CSV ({} runs, medians). trialflow-ingest hashes (sha256 and its BLAKE3 content address), scans every record and checks the header while it copies.\n",
        mib, o.runs
    );
    println!("| what | seconds | MB/s | peak RSS MiB |");
    println!("|---|---:|---:|---:|");
    let mut secs = Vec::new();
    for (name, v) in &rows {
        let s = median(v.iter().map(|x| x.0).collect());
        let peak = median(v.iter().map(|x| x.1).collect());
        println!(
            "| {name} | {s:.2} | {:.0} | {peak:.0} |",
            size as f64 / 1e6 / s
        );
        secs.push(s);
    }
    let ratio = secs[3] / secs[2];
    let seconds = |row: usize| rows[row].1.iter().map(|x| x.0).collect::<Vec<_>>();
    println!(
        "\nPaired by run: boto3's seconds over trialflow-ingest's in the same run, {} (median, range over the runs).",
        summary(&paired_ratios(&seconds(3), &[&seconds(2)], f64::min))
    );
    println!(
        "\ntrialflow-ingest into S3 at {ratio:.2}× boto3 upload_file's speed (goal ≥ 1×: {}); it reads the file twice \
         (its BLAKE3 content address first, on every core, then the upload to that address, with the record scan, its sha256 and the address checked again) where boto3 reads it once \
         and checks nothing; both send each part's checksum (SHA-256 here, CRC32 for boto3).",
        if ratio >= 1.0 { "met" } else { "not met" }
    );
    Ok(())
}

/// Test AUCs of trialflow, PyTorch and Keras on the sample trial's splits (same architecture, optimizer, batch
/// and epochs, the last epoch's weights in all three), checked with [`check_aucs`], then printed.
fn sample_aucs(bin: &Path, python: &Path, peers: &Path, sample: &Path) -> Result<()> {
    let frameworks = ["trialflow", "torch", "keras"];
    let mut aucs = Vec::new();
    for model in ["model_1", "model_2"] {
        let mut row = Vec::new();
        for fw in frameworks {
            let mut c = if fw == "trialflow" {
                let mut c = Command::new(bin);
                c.arg("auc")
                    .arg("--data")
                    .arg(sample)
                    .args(["--model", model, "--batch", "64", "--epochs", "20"]);
                c
            } else {
                let mut c = Command::new(python);
                c.arg(peers)
                    .args(["auc", fw])
                    .arg(sample)
                    .args([model, "64", "20"]);
                c
            };
            c.stderr(Stdio::null());
            let v = json_line(c, &format!("{fw} {model} sample AUC"))?;
            row.push(v["test_auc"].as_f64().unwrap_or(f64::NAN));
        }
        aucs.push((model, row));
    }
    check_aucs(&aucs)?;
    println!(
        "\n## Test ROC AUC on the sample trial (20 epochs, batch 64, Adam 1e-3, no early stopping, last epoch's \
         weights in all three)\n"
    );
    println!("| model | trialflow | PyTorch | Keras |");
    println!("|---|---|---|---|");
    for (model, row) in &aucs {
        println!(
            "| {model} | {:.4} | {:.4} | {:.4} |",
            row[0], row[1], row[2]
        );
    }
    Ok(())
}

/// The frameworks train the same architecture on the same splits with the same optimizer, so their test AUCs
/// agree up to seeds and kernels: trialflow's must lie within [`AUC_TOLERANCE`] of the peers' range, or the
/// throughput table compares a model that learns something else.
const AUC_TOLERANCE: f64 = 0.02;

fn check_aucs(aucs: &[(&str, Vec<f64>)]) -> Result<()> {
    for (model, row) in aucs {
        let peers = &row[1..];
        let lo = peers.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = peers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ours = row[0];
        if !row.iter().all(|a| a.is_finite())
            || ours < lo - AUC_TOLERANCE
            || ours > hi + AUC_TOLERANCE
        {
            bail!(
                "{model}: trialflow's test AUC {ours:.4} is not within {AUC_TOLERANCE} of the peers' [{lo:.4}, {hi:.4}]"
            );
        }
    }
    Ok(())
}

/// The sample trial's encoded splits (`x_{split}.f32`, `y_{split}.f32`, `dim`) in `dir/sample`, from a scratch
/// project that ran the pipeline, exported by `bin` (a CPU build of trialflow-train-bench).
fn export_sample(bin: &Path, dir: &Path) -> Result<PathBuf> {
    trained_model(dir)?;
    let sample = dir.join("sample");
    let mut c = Command::new(bin);
    c.args(["export", "--lake"])
        .arg(format!("file://{}", dir.join("data/lake").display()))
        .arg("--out")
        .arg(&sample);
    json_line(c, "exporting the sample trial's splits")?;
    Ok(sample)
}

/// [`export_sample`] with the release CPU bench binary, for the GPU bundle.
pub(crate) fn sample_splits() -> Result<PathBuf> {
    let bin = build_for_bench("trialflow-train", "trialflow-train-bench")?;
    export_sample(&bin, &root().join("target/bench/train"))
}

/// The last line of a command's stdout as JSON.
fn json_line(mut cmd: Command, what: &str) -> Result<Value> {
    let out = cmd.output().with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what}: not JSON: {line}"))
}

/// Training FLOPs per sample (forward 2, backward 4 per weight): the ceiling comparison's unit.
fn train_flops(model: &str, dim: usize) -> f64 {
    let weights = match model {
        "model_1" => dim * 64 + 64,
        _ => dim * 128 + 128 * 64 + 64,
    };
    6.0 * weights as f64
}

/// `cargo xtask bench train`: samples/s of the brief's two networks at batch 32, 256 and 4096 on 1M rows × 20
/// features, trialflow (the fused CPU step, release) beside PyTorch and Keras (TensorFlow CPU), and the test AUC each
/// reaches on the sample trial with the same protocol.
fn train(o: &Opts) -> Result<()> {
    const ROWS: usize = 1_000_000;
    const DIM: usize = 20;
    const CEILING_GFLOPS: f64 = 300.0;
    let root = root();
    let python = venv("bench", &root.join("xtask/bench/requirements-bench.txt"))?;
    let bin = build_for_bench("trialflow-train", "trialflow-train-bench")?;
    let dir = root.join("target/bench/train");
    let sample = export_sample(&bin, &dir)?;
    let synthetic = dir.join("synthetic");
    if !synthetic.join("y_survival.f32").exists() {
        let mut c = Command::new(&bin);
        c.args([
            "gen",
            "--rows",
            &ROWS.to_string(),
            "--dim",
            &DIM.to_string(),
            "--out",
        ])
        .arg(&synthetic);
        json_line(c, "generating 1M rows")?;
    }
    let peers = root.join("xtask/bench/train_peers.py");
    if o.only.iter().any(|t| t == "endpoints") {
        return train_endpoints(o, &bin, &python, &peers, &synthetic);
    }
    if o.only.iter().any(|t| t == "clustering") {
        return clustering(o, &bin, &python, &peers, &synthetic);
    }
    // the models must learn the same thing before their speed is compared
    sample_aucs(&bin, &python, &peers, &sample)?;
    if o.only.iter().any(|t| t == "auc") {
        return Ok(());
    }
    let frameworks = ["trialflow", "torch", "keras"];
    let mut rows_out = Vec::new();
    for model in ["model_1", "model_2"] {
        for batch in [32usize, 256, 4096] {
            let rows = (batch * 1500).clamp(65_536, ROWS);
            let mut medians = Vec::new();
            for fw in frameworks {
                let mut samples = Vec::new();
                for _ in 0..o.runs {
                    let mut c = if fw == "trialflow" {
                        let mut c = Command::new(&bin);
                        c.arg("throughput")
                            .arg("--data")
                            .arg(&synthetic)
                            .args(["--dim", &DIM.to_string(), "--model", model])
                            .args(["--batch", &batch.to_string(), "--rows", &rows.to_string()]);
                        c
                    } else {
                        let mut c = Command::new(&python);
                        c.arg(&peers)
                            .args(["throughput", fw])
                            .arg(&synthetic)
                            .args([
                                &DIM.to_string(),
                                model,
                                &batch.to_string(),
                                &rows.to_string(),
                            ]);
                        c
                    };
                    c.stderr(Stdio::null());
                    let v = json_line(c, &format!("{fw} {model} batch {batch}"))?;
                    samples.push(v["samples_per_s"].as_f64().unwrap_or(0.0));
                }
                let m = median(samples);
                eprintln!("xtask: {model} batch {batch:>4} {fw:<9} {m:>12.0} samples/s");
                medians.push(m);
            }
            rows_out.push((model, batch, rows, medians));
        }
    }
    println!(
        "\n## Training throughput (samples/s, median of {} run(s); 1 epoch after a 20-batch warm-up)\n",
        o.runs
    );
    println!(
        "| model | batch | rows timed | trialflow | PyTorch | Keras | trialflow / best peer | trialflow % of {CEILING_GFLOPS:.0} GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (model, batch, rows, m) in &rows_out {
        let best = m[1].max(m[2]);
        let flops = m[0] * train_flops(model, DIM) / 1e9;
        println!(
            "| {model} | {batch} | {rows} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.1}% |",
            m[0],
            m[1],
            m[2],
            m[0] / best,
            100.0 * flops / CEILING_GFLOPS
        );
    }
    train_endpoints(o, &bin, &python, &peers, &synthetic)?;
    clustering(o, &bin, &python, &peers, &synthetic)
}

/// k-means of the 1M × 20 synthetic rows (k = 8, k-means++ seeding, one run, float32 rows) beside
/// scikit-learn's `KMeans`, one seed per run (the same seeds for both): wall time, iterations, and the inertia
/// each reaches (checked within 1% of each other: the same job, not a cheaper one). Alone with
/// `--only clustering`.
fn clustering(o: &Opts, bin: &Path, python: &Path, peers: &Path, synthetic: &Path) -> Result<()> {
    const K: &str = "8";
    const ROWS: &str = "1000000";
    let mut runs: [Vec<(f64, f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for seed in 0..o.runs {
        for (t, fw) in ["trialflow", "sklearn"].iter().enumerate() {
            let mut c = if *fw == "trialflow" {
                let mut c = Command::new(bin);
                c.arg("kmeans").arg("--data").arg(synthetic).args([
                    "--dim",
                    "20",
                    "--k",
                    K,
                    "--rows",
                    ROWS,
                    "--seed",
                    &seed.to_string(),
                ]);
                c
            } else {
                let mut c = Command::new(python);
                c.arg(peers)
                    .args(["kmeans", "sklearn"])
                    .arg(synthetic)
                    .args(["20", K, ROWS, &seed.to_string()]);
                c
            };
            c.stderr(Stdio::null());
            let v = json_line(c, &format!("{fw} k-means seed {seed}"))?;
            let (secs, inertia, iterations) = (
                v["seconds"].as_f64().unwrap_or(f64::NAN),
                v["inertia"].as_f64().unwrap_or(f64::NAN),
                v["iterations"].as_f64().unwrap_or(f64::NAN),
            );
            eprintln!(
                "xtask: k-means seed {seed} {fw:<9} {secs:>7.2} s, {iterations} iterations, inertia {inertia:.0}"
            );
            runs[t].push((secs, inertia, iterations));
        }
    }
    let med =
        |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| median(v.iter().map(f).collect());
    let (ours, theirs) = (&runs[0], &runs[1]);
    let inertia = (med(ours, |r| r.1), med(theirs, |r| r.1));
    if ((inertia.0 - inertia.1) / inertia.1).abs() > 0.01 {
        bail!(
            "k-means: trialflow's median inertia {:.0} and scikit-learn's {:.0} differ by more than 1%",
            inertia.0,
            inertia.1
        );
    }
    let per_iteration = |v: &[(f64, f64, f64)]| median(v.iter().map(|r| r.0 / r.2).collect());
    println!(
        "\n## Clustering: k-means of 1M × 20 float32 rows, k = 8 (median of {} seeds)\n",
        o.runs
    );
    println!("| | wall s | iterations | ms per iteration | inertia |");
    println!("|---|---|---|---|---|");
    for (name, v) in [("trialflow", ours), ("scikit-learn KMeans", theirs)] {
        println!(
            "| {name} | {:.2} | {:.0} | {:.1} | {:.0} |",
            med(v, |r| r.0),
            med(v, |r| r.2),
            1000.0 * per_iteration(v),
            med(v, |r| r.1)
        );
    }
    println!(
        "\ntrialflow / scikit-learn: {:.2}× by wall time, {:.2}× per iteration",
        med(theirs, |r| r.0) / med(ours, |r| r.0),
        per_iteration(theirs) / per_iteration(ours)
    );
    Ok(())
}

/// The continuous and time-to-event heads (model_2's body with the squared error, and with the Cox loss over
/// each batch's risk sets) beside PyTorch (pycox's loss written in PyTorch), samples/s at batch 256 and 4096
/// on the 1M synthetic rows, and Harrell's C each reaches on held-out rows with the same protocol. Alone with
/// `--only endpoints`.
fn train_endpoints(
    o: &Opts,
    bin: &Path,
    python: &Path,
    peers: &Path,
    synthetic: &Path,
) -> Result<()> {
    const DIM: usize = 20;
    let mut rows_out = Vec::new();
    for endpoint in ["time_to_event", "continuous"] {
        for batch in [256usize, 4096] {
            let rows = (batch * 1500).clamp(65_536, 1_000_000);
            let mut medians = Vec::new();
            for fw in ["trialflow", "torch"] {
                let mut samples = Vec::new();
                for _ in 0..o.runs {
                    let mut c = if fw == "trialflow" {
                        let mut c = Command::new(bin);
                        c.arg("throughput")
                            .arg("--data")
                            .arg(synthetic)
                            .args(["--dim", &DIM.to_string(), "--model", "model_2"])
                            .args(["--batch", &batch.to_string(), "--rows", &rows.to_string()])
                            .args(["--endpoint", endpoint]);
                        c
                    } else {
                        let mut c = Command::new(python);
                        c.arg(peers).args(["throughput", fw]).arg(synthetic).args([
                            &DIM.to_string(),
                            "model_2",
                            &batch.to_string(),
                            &rows.to_string(),
                            endpoint,
                        ]);
                        c
                    };
                    c.stderr(Stdio::null());
                    let v = json_line(c, &format!("{fw} {endpoint} batch {batch}"))?;
                    samples.push(v["samples_per_s"].as_f64().unwrap_or(0.0));
                }
                let m = median(samples);
                eprintln!("xtask: model_2 {endpoint} batch {batch:>4} {fw:<9} {m:>12.0} samples/s");
                medians.push(m);
            }
            rows_out.push((endpoint, batch, rows, medians));
        }
    }
    let (epochs, batch) = (5, 256);
    let mut cindex = Vec::new();
    for fw in ["trialflow", "torch"] {
        let mut c = if fw == "trialflow" {
            let mut c = Command::new(bin);
            c.arg("cindex").arg("--data").arg(synthetic).args([
                "--dim",
                &DIM.to_string(),
                "--model",
                "model_2",
                "--batch",
                &batch.to_string(),
                "--epochs",
                &epochs.to_string(),
            ]);
            c
        } else {
            let mut c = Command::new(python);
            c.arg(peers).args(["cindex", "torch"]).arg(synthetic).args([
                &DIM.to_string(),
                "model_2",
                &batch.to_string(),
                &epochs.to_string(),
            ]);
            c
        };
        c.stderr(Stdio::null());
        let v = json_line(c, &format!("{fw} held-out C-index"))?;
        cindex.push(v["c_index"].as_f64().unwrap_or(f64::NAN));
    }
    println!(
        "\n## Continuous and time-to-event heads (model_2, samples/s, median of {} run(s); 1 epoch after a 20-batch warm-up)\n",
        o.runs
    );
    println!(
        "| endpoint | loss | batch | rows timed | trialflow | PyTorch | trialflow / PyTorch |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (endpoint, batch, rows, m) in &rows_out {
        let loss = if *endpoint == "time_to_event" {
            "Cox partial likelihood, batch risk sets"
        } else {
            "squared error (standardized target)"
        };
        println!(
            "| {endpoint} | {loss} | {batch} | {rows} | {:.0} | {:.0} | {:.2}× |",
            m[0],
            m[1],
            m[0] / m[1]
        );
    }
    println!(
        "\nHarrell's C on 5,000 held-out synthetic rows (model_2, {epochs} epochs, batch {batch}, Adam 1e-3, 100k train rows): \
         trialflow {:.4}, PyTorch {:.4} (difference {:+.4})",
        cindex[0],
        cindex[1],
        cindex[0] - cindex[1]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auc_outside_the_peers_range_or_not_a_number_stops_the_bench() {
        assert!(check_aucs(&[("model_1", vec![0.71, 0.70, 0.72])]).is_ok());
        assert!(check_aucs(&[("model_1", vec![0.735, 0.70, 0.72])]).is_ok());
        assert!(check_aucs(&[("model_1", vec![0.75, 0.70, 0.72])]).is_err());
        assert!(check_aucs(&[("model_1", vec![0.65, 0.70, 0.72])]).is_err());
        assert!(check_aucs(&[("model_2", vec![f64::NAN, 0.70, 0.72])]).is_err());
        assert!(check_aucs(&[("model_2", vec![0.71, f64::NAN, 0.72])]).is_err());
    }

    #[test]
    fn paired_ratios_compare_each_round_with_that_rounds_best_peer() {
        // the machine slows to half speed in the second round, for everyone: the paired ratio does not move
        let ours = [100.0, 50.0, 100.0];
        let (a, b) = ([10.0, 5.0, 8.0], [4.0, 2.0, 10.0]);
        assert_eq!(
            paired_ratios(&ours, &[&a, &b], f64::max),
            vec![10.0, 10.0, 10.0]
        );
        // times: the smaller peer's is the best; a round a peer lacks is judged by the others
        let ours = [6.0, 12.0];
        let (a, b) = ([10.0, 20.0], [12.0]);
        assert_eq!(paired_ratios(&ours, &[&a, &b], f64::min), vec![0.6, 0.6]);
        assert!(paired_ratios(&ours, &[], f64::min).is_empty());
        assert_eq!(summary(&[0.5, 0.7, 0.6]), "0.60× (0.50–0.70)");
        assert_eq!(summary(&[]), "no rounds");
    }

    #[test]
    fn v2_bodies_carry_one_typed_tensor_per_field() {
        let body: Value = serde_json::from_str(&v2_body(&[record(1), record(2)])).unwrap();
        let inputs = body["inputs"].as_array().unwrap();
        assert_eq!(inputs.len(), record(1).as_object().unwrap().len());
        let age = inputs.iter().find(|t| t["name"] == "age").unwrap();
        assert_eq!(age["datatype"], "FP64");
        assert_eq!(age["shape"], json!([2]));
        assert_eq!(age["data"], json!([record(1)["age"], record(2)["age"]]));
        let sex = inputs.iter().find(|t| t["name"] == "sex").unwrap();
        assert_eq!(sex["datatype"], "BYTES");
        assert_eq!(
            v2_predictions(r#"{"outputs":[{"name":"probability","data":[0.25,0.5]}]}"#).unwrap(),
            vec![0.25, 0.5]
        );
    }
}
