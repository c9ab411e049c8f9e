//! `cargo xtask bench preprocess [--rows N] [--runs N] [--only trialflow,duckdb,…]`: the data pipeline's preprocessing (`clean`, `features`,
//! `quality` of `trialflow pipeline data`, release build) against the same job in DuckDB, Polars and pandas
//! (xtask/bench/preprocess_peers.py, installed into target/py/bench), side by side in one run, on the sample
//! trial generated at N rows (default 5M; cached under target/bench/preprocess/<N>). Prints wall time, peak
//! memory and trialflow's ratios as a markdown table.
//!
//! trialflow's raw copy (`ingest`: copy + sha256 of the sources) runs once before the timed runs, which then
//! re-run everything after it (`--from clean`); the peers read the same CSV files directly.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Result;

use crate::bench::{Opts, build_release, median, run_measured};
use crate::{root, status, venv};

/// Rows written: trialflow's quality report (rows per split), a peer's JSON line.
fn rows_out(tool: &str, dir: &Path, stdout: &str) -> u64 {
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap_or_default();
    if tool == "trialflow" {
        let report = std::fs::read_to_string(dir.join("data/lake/processed/quality_report.json"))
            .unwrap_or_default();
        parse(&report)["splits"]
            .as_array()
            .map(|s| s.iter().filter_map(|p| p["rows"].as_u64()).sum())
            .unwrap_or(0)
    } else {
        let line = stdout.lines().last().unwrap_or_default();
        parse(line)["rows"]
            .as_object()
            .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
            .unwrap_or(0)
    }
}

/// `task=<name> status=succeeded seconds=<s>` lines of a pipeline run.
pub(crate) fn task_seconds(log: &str, task: &str) -> Option<f64> {
    log.lines()
        .filter(|l| l.contains(&format!("task={task} ")) && l.contains("status=succeeded"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("seconds="))
                .and_then(|v| v.parse().ok())
        })
}

/// target/bench/preprocess/<rows>: the sample trial generated at `rows` rows in two files (once; cached) and the
/// sample config, the project both preprocessing benches run in.
pub(crate) fn sample_project(bin: &Path, rows: usize) -> Result<std::path::PathBuf> {
    let root = root();
    let dir = root.join(format!("target/bench/preprocess/{rows}"));
    let raw = dir.join("data/raw");
    if !raw.join(".complete").exists() {
        let mut g = Command::new(bin);
        g.args([
            "generate",
            "--rows",
            &rows.to_string(),
            "--files",
            "2",
            "--out",
        ])
        .arg(&raw)
        .stdout(Stdio::null());
        status(g, &format!("trialflow generate --rows {rows}"))?;
        std::fs::write(raw.join(".complete"), "")?;
    }
    std::fs::create_dir_all(dir.join("config"))?;
    std::fs::copy(
        root.join("config/config.yaml"),
        dir.join("config/config.yaml"),
    )?;
    Ok(dir)
}

pub(crate) fn preprocess(o: &Opts) -> Result<()> {
    let root = root();
    let python = venv("bench", &root.join("xtask/bench/requirements-bench.txt"))?;
    let bin = build_release("trialflow-cli", "trialflow")?;
    let dir = sample_project(&bin, o.rows)?;
    let raw = dir.join("data/raw");
    let trialflow = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.current_dir(&dir).arg("pipeline").arg("data").args(args);
        c
    };
    status(trialflow(&[]), "trialflow pipeline data (ingest once)")?;
    let glob = raw.join("clinical_trial_data_*.csv");
    let peers = root.join("xtask/bench/preprocess_peers.py");
    let tools = ["trialflow", "duckdb", "polars", "pandas"];
    let mut rows = Vec::new();
    for tool in tools {
        // trialflow always runs: the table is its ratios.
        if tool != "trialflow" && !o.only.is_empty() && !o.only.iter().any(|t| t == tool) {
            continue;
        }
        let (mut secs, mut peaks, mut parts) = (Vec::new(), Vec::new(), Vec::new());
        let mut written = 0;
        for run in 0..o.runs {
            let out = dir.join(format!("out-{tool}"));
            let _ = std::fs::remove_dir_all(&out);
            let cmd = if tool == "trialflow" {
                trialflow(&["--from", "clean"])
            } else {
                let mut c = Command::new(&python);
                c.arg(&peers).arg(tool).arg(&glob).arg(&out);
                c
            };
            let (s, peak, stdout, log) = run_measured(cmd, &format!("{tool} run {}", run + 1))?;
            written = rows_out(tool, &dir, &stdout);
            eprintln!(
                "xtask: {tool:<9} run {}: {s:.2} s, peak {peak:.0} MiB",
                run + 1
            );
            if tool == "trialflow" {
                parts.push(
                    ["clean", "features", "quality"]
                        .map(|t| task_seconds(&format!("{stdout}\n{log}"), t).unwrap_or(f64::NAN)),
                );
            }
            secs.push(s);
            peaks.push(peak);
        }
        rows.push((tool, median(secs), median(peaks), parts, written));
    }
    let ours = rows[0].1;
    let fastest = rows[1..].iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    let fastest_peak = rows[1..].iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
    println!(
        "\n## Preprocessing, {} generated rows (median of {} run(s))\n",
        o.rows, o.runs
    );
    println!(
        "| tool | rows out | wall s | peak MiB | trialflow time / tool time | trialflow memory / tool memory |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (tool, s, peak, _, written) in &rows {
        println!(
            "| {tool} | {written} | {s:.2} | {peak:.0} | {:.2}× | {:.2}× |",
            ours / s,
            rows[0].2 / peak
        );
    }
    if let Some(p) = rows[0].3.first() {
        println!(
            "\ntrialflow per task (first run): clean {:.2} s, features {:.2} s, quality {:.2} s. Goal: time ≤ 0.8× the \
             fastest peer ({:.2} s here: {}), peak < 2 GiB ({:.0} MiB: {}; least peer memory {fastest_peak:.0} MiB).",
            p[0],
            p[1],
            p[2],
            0.8 * fastest,
            if ours <= 0.8 * fastest {
                "met"
            } else {
                "not met"
            },
            rows[0].2,
            if rows[0].2 < 2048.0 { "met" } else { "not met" },
        );
    }
    Ok(())
}
