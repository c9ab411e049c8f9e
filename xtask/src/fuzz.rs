//! `cargo xtask fuzz [SECONDS] [TARGET…]`: the coverage-guided fuzz targets of `fuzz/` (cargo fuzz, libFuzzer,
//! the nightly toolchain), each run for SECONDS (default 60) from a corpus under `target/fuzz-corpus/<target>`
//! seeded with `fuzz/seeds/<target>` (the test corpus: request bodies, sample files, the configs). cargo-fuzz
//! is installed under `target/tools/cargo-fuzz` when missing; the build goes to `target/fuzz`. A crash stops
//! the run, and libFuzzer leaves the input in `fuzz/artifacts/<target>/`: it becomes a test beside the code it
//! broke (see the list in docs/benchmarks.md, "Fuzzing").

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{root, status};

/// Every target in fuzz/Cargo.toml.
pub const TARGETS: [&str; 5] = [
    "tf_serving",
    "oip_v2",
    "ingest_scan",
    "stage",
    "config_yaml",
];

const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo_fuzz() -> Result<PathBuf> {
    let dir = root().join("target/tools/cargo-fuzz");
    let bin = dir.join("bin/cargo-fuzz");
    if !bin.exists() {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
            "--root",
        ])
        .arg(&dir);
        status(c, "cargo install cargo-fuzz (into target/tools)")?;
    }
    Ok(bin)
}

/// `cargo +nightly fuzz …` in fuzz/, building into target/fuzz.
fn fuzz_command(bin: &Path) -> Command {
    // rustup's cargo proxy picks the toolchain from `+nightly`; cargo-fuzz runs as its subcommand.
    let mut c = Command::new("cargo");
    c.arg("+nightly").current_dir(root().join("fuzz"));
    if let Some(dir) = bin.parent() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(paths) {
            c.env("PATH", joined);
        }
    }
    c.env("CARGO_TARGET_DIR", root().join("target/fuzz"))
        // the cargo that started xtask is stable; nightly's is wanted here
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN");
    c
}

pub fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut targets: Vec<&str> = Vec::new();
    for a in args {
        if let Ok(s) = a.parse::<u64>() {
            seconds = s;
        } else if let Some(t) = TARGETS.iter().find(|t| **t == a.as_str()) {
            targets.push(t);
        } else {
            bail!("unknown fuzz target `{a}`; the targets are {TARGETS:?}");
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let bin = cargo_fuzz()?;
    let mut build = fuzz_command(&bin);
    build.args(["fuzz", "build", "-O"]);
    status(build, "cargo +nightly fuzz build -O (every target)")?;
    for t in targets {
        let corpus = root().join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&corpus).with_context(|| format!("{}", corpus.display()))?;
        let seeds = root().join("fuzz/seeds").join(t);
        let mut run = fuzz_command(&bin);
        run.args(["fuzz", "run", "-O", t])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // a single input that takes this long is a hang, reported as a crash
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1");
        status(run, &format!("fuzz {t} for {seconds} s"))?;
    }
    Ok(())
}
