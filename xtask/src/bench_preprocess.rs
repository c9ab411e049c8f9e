//! `cargo xtask bench preprocess [--rows N | --sizes N,N,…] [--runs N] [--only polars,duckdb,…]`: the data
//! pipeline's preprocessing (`clean`, `features`, `quality` of `trialflow pipeline data`, release build) against
//! the same job written as each peer's experts write it (xtask/bench/preprocess_peers.py, installed into
//! target/py/preprocess): Polars as one lazy plan on the streaming engine (and the same expressions run eagerly,
//! a second row), DuckDB as one plan with one materialisation, pandas on its pyarrow engine. Side by side in one
//! run, on the sample trial generated at N rows (default 5M; cached under target/bench/preprocess/<N>). Prints
//! wall time, peak memory and trialflow's ratios as a markdown table; with `--sizes`, one table per size and a
//! scaling table.
//!
//! Before anything is timed, each peer runs once and its split files are checked against trialflow's
//! (`preprocess_peers.py check`: rows per split, the subjects in each split, every model input's mean to 1e-6):
//! a peer that computes something else stops the bench. trialflow's raw copy (`ingest`: copy + sha256 and BLAKE3 of the
//! sources) runs once before the timed runs, which then re-run everything after it (`--from clean`); the peers
//! read the same CSV files directly. A peer whose peak memory, scaled from the last size, would pass 3/4 of the
//! machine's memory is not run at a larger size (said in the table).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Result;

use crate::bench::{Opts, build_release, median, paired_ratios, run_measured, summary};
use crate::{root, status, venv};
use anyhow::{Context, bail};

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

/// The peers, in the order of the table: each a `preprocess_peers.py` job.
const PEERS: [&str; 4] = ["polars", "polars-eager", "duckdb", "pandas"];

/// One trial size of the scaling table: its rows, then trialflow's and each peer's (seconds, peak MiB), `None`
/// where the tool was not run.
type ScalingRow = (usize, Vec<Option<(f64, f64)>>);

/// One tool at one size: median seconds and peak MiB, rows written; `None` when it was not run.
struct Measured {
    tool: &'static str,
    secs: f64,
    /// Seconds of each round, in round order.
    runs: Vec<f64>,
    peak: f64,
    written: u64,
    /// trialflow's clean, features and quality task seconds (first run).
    tasks: Option<[f64; 3]>,
}

pub(crate) fn preprocess(o: &Opts) -> Result<()> {
    let root = root();
    let python = venv(
        "preprocess",
        &root.join("xtask/bench/requirements-preprocess.txt"),
    )?;
    let bin = build_release("trialflow-cli", "trialflow")?;
    let sizes = if o.sizes.is_empty() {
        vec![o.rows]
    } else {
        o.sizes.clone()
    };
    let memory_mib = total_memory_mib();
    let mut scaling: Vec<ScalingRow> = Vec::new();
    // The last size's peak of each peer, to leave out a peer that would not fit at the next size.
    let mut last_peak: Vec<Option<(usize, f64)>> = vec![None; PEERS.len()];
    for &rows in &sizes {
        let wanted: Vec<(usize, &'static str)> = PEERS
            .iter()
            .enumerate()
            .filter(|(_, t)| o.only.is_empty() || o.only.iter().any(|w| w == *t))
            .filter(|(i, t)| {
                let fits = last_peak[*i]
                    .is_none_or(|(n, peak)| peak * rows as f64 / n as f64 <= 0.75 * memory_mib);
                if !fits {
                    eprintln!("xtask: {t} left out at {rows} rows: its memory at the last size, scaled, would not fit");
                }
                fits
            })
            .map(|(i, t)| (i, *t))
            .collect();
        let table = one_size(
            o,
            &python,
            &bin,
            rows,
            &wanted.iter().map(|w| w.1).collect::<Vec<_>>(),
        )?;
        print_table(o, rows, &table);
        let mut row = vec![None; 1 + PEERS.len()];
        row[0] = Some((table[0].secs, table[0].peak));
        for (m, (i, _)) in table[1..].iter().zip(&wanted) {
            row[1 + i] = Some((m.secs, m.peak));
            last_peak[*i] = Some((rows, m.peak));
        }
        scaling.push((rows, row));
    }
    if scaling.len() > 1 {
        print_scaling(&scaling);
    }
    Ok(())
}

fn one_size(
    o: &Opts,
    python: &Path,
    bin: &Path,
    rows: usize,
    peers: &[&'static str],
) -> Result<Vec<Measured>> {
    let root = root();
    let dir = sample_project(bin, rows)?;
    let raw = dir.join("data/raw");
    let trialflow = |args: &[&str]| {
        let mut c = Command::new(bin);
        c.current_dir(&dir).arg("pipeline").arg("data").args(args);
        c
    };
    status(trialflow(&[]), "trialflow pipeline data (ingest once)")?;
    let glob = raw.join("clinical_trial_data_*.csv");
    let script = root.join("xtask/bench/preprocess_peers.py");
    let peer = |tool: &str, out: &Path| {
        let mut c = Command::new(python);
        c.arg(&script).arg(tool).arg(&glob).arg(out);
        c
    };
    for tool in peers {
        let out = dir.join(format!("out-{tool}"));
        let _ = std::fs::remove_dir_all(&out);
        status(
            peer(tool, &out),
            &format!("{tool} (the run that is checked)"),
        )?;
        let mut check = Command::new(python);
        check
            .arg(&script)
            .arg("check")
            .arg(dir.join("data/lake/processed"))
            .arg(&out);
        let checked = check
            .output()
            .with_context(|| format!("checking {tool}'s output"))?;
        if !checked.status.success() {
            bail!(
                "{tool}'s output differs from trialflow's at {rows} rows, so timing it would compare different jobs: {}{}",
                String::from_utf8_lossy(&checked.stdout),
                String::from_utf8_lossy(&checked.stderr)
            );
        }
        eprintln!(
            "xtask: {tool}'s split files equal trialflow's (rows, subjects, model-input means)"
        );
    }
    // Round by round, every tool once per round (each round starting one tool further on): this machine's speed
    // drifts by a fifth or more within minutes, and rounds put that drift on every tool alike where runs of one
    // tool after another put it on whichever ran last.
    let tools: Vec<&'static str> = std::iter::once("trialflow")
        .chain(peers.iter().copied())
        .collect();
    let mut table: Vec<Measured> = tools
        .iter()
        .map(|&tool| Measured {
            tool,
            secs: f64::NAN,
            runs: Vec::new(),
            peak: f64::NAN,
            written: 0,
            tasks: None,
        })
        .collect();
    let mut peaks = vec![Vec::new(); tools.len()];
    for run in 0..o.runs {
        for turn in 0..tools.len() {
            let t = (run + turn) % tools.len();
            let tool = tools[t];
            let out = dir.join(format!("out-{tool}"));
            let _ = std::fs::remove_dir_all(&out);
            let cmd = if tool == "trialflow" {
                trialflow(&["--from", "clean"])
            } else {
                peer(tool, &out)
            };
            let (s, peak, stdout, log) = run_measured(cmd, &format!("{tool} run {}", run + 1))?;
            let m = &mut table[t];
            m.written = rows_out(tool, &dir, &stdout);
            eprintln!(
                "xtask: {tool:<12} {rows} rows, run {}: {s:.2} s, peak {peak:.0} MiB",
                run + 1
            );
            if tool == "trialflow" && m.tasks.is_none() {
                m.tasks = Some(
                    ["clean", "features", "quality"]
                        .map(|t| task_seconds(&format!("{stdout}\n{log}"), t).unwrap_or(f64::NAN)),
                );
            }
            m.runs.push(s);
            peaks[t].push(peak);
        }
    }
    for (m, p) in table.iter_mut().zip(peaks) {
        m.secs = median(m.runs.clone());
        m.peak = median(p);
    }
    Ok(table)
}

fn print_table(o: &Opts, rows: usize, table: &[Measured]) {
    let ours = &table[0];
    println!(
        "\n## Preprocessing, {rows} generated rows (median of {} run(s))\n",
        o.runs
    );
    println!(
        "| tool | rows out | wall s | peak MiB | trialflow time / tool time | trialflow memory / tool memory |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for m in table {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2}× | {:.2}× |",
            m.tool,
            m.written,
            m.secs,
            m.peak,
            ours.secs / m.secs,
            ours.peak / m.peak
        );
    }
    let best = table[1..].iter().min_by(|a, b| a.secs.total_cmp(&b.secs));
    if let (Some(t), Some(best)) = (ours.tasks, best) {
        let ratio = ours.secs / best.secs;
        println!(
            "\ntrialflow per task (first run): clean {:.2} s, features {:.2} s, quality {:.2} s. Against the fastest \
             peer ({}, {:.2} s): {ratio:.2}× its time (goal ≤ 0.6×: {}); peak {:.0} MiB (goal < 2 GiB: {}).",
            t[0],
            t[1],
            t[2],
            best.tool,
            best.secs,
            if ratio <= 0.6 { "met" } else { "not met" },
            ours.peak,
            if ours.peak < 2048.0 { "met" } else { "not met" },
        );
    }
    let peers: Vec<&[f64]> = table[1..].iter().map(|m| m.runs.as_slice()).collect();
    if !peers.is_empty() {
        println!(
            "Paired by round: trialflow's time over the fastest peer's in the same round, {} (median, range over the rounds).",
            summary(&paired_ratios(&ours.runs, &peers, f64::min))
        );
    }
}

fn print_scaling(scaling: &[ScalingRow]) {
    println!("\n## Preprocessing by trial size (medians; s / peak MiB)\n");
    println!("| rows | trialflow | {} |", PEERS.join(" | "));
    println!("|---:|{}", "---:|".repeat(1 + PEERS.len()));
    for (rows, cells) in scaling {
        let cells: Vec<String> = cells
            .iter()
            .map(|c| match c {
                Some((s, p)) => format!("{s:.2} s / {p:.0} MiB"),
                None => "not run".to_string(),
            })
            .collect();
        println!("| {rows} | {} |", cells.join(" | "));
    }
}

/// MemTotal of /proc/meminfo in MiB (a large number when unreadable: no peer is left out then).
fn total_memory_mib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(f64::INFINITY, |kib| kib / 1024.0)
}
