//! `cargo xtask …`: the project's commands, runnable the same way locally and in CI.
//!
//! - `cargo xtask pipeline <name> [args]`: build the workspace binaries and run `trialflow pipeline <name>`.
//! - `cargo xtask test`: fmt check, clippy with warnings denied, every test of the workspace.
//!
//! Both build with the dev profile (dependencies' hot numeric kernels optimized, see Cargo.toml), so a new user
//! compiles the dependency set once for running and testing.

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

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
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
        _ => {
            eprintln!(
                "usage: cargo xtask pipeline <data|training|deployment|full> [trialflow args]\n       cargo xtask test"
            );
            bail!("unknown or missing command")
        }
    }
}

fn pipeline(args: &[String]) -> Result<()> {
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    status(build, "cargo build --workspace --bins")?;
    let bin = root().join("target/debug/trialflow");
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

fn test() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    status(fmt, "cargo fmt --check")?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    status(clippy, "cargo clippy --workspace --all-targets -D warnings")?;
    // The end-to-end tests run the real binary; build it with the same features first.
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    status(build, "cargo build --workspace --bins")?;
    if has_nextest() {
        let mut t = cargo();
        t.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        status(t, "cargo nextest run --workspace")?;
    } else {
        let mut t = cargo();
        t.args(["test", "--workspace", "--no-fail-fast"]);
        status(t, "cargo test --workspace")?;
    }
    Ok(())
}
