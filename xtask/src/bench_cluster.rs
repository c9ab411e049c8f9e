//! `cargo xtask bench cluster [--rows N] [--runs N]`: the data pipeline's preprocessing (`clean`, `features`,
//! `quality`, `--from clean`, release build with `--features ballista`) on the local engine and on a Ballista
//! cluster of our own `trialflow cluster` processes on this machine with one and with two executor task slots
//! (one slot per executor), on the sample trial generated at N rows (default 1M; shared with `bench preprocess`
//! under target/bench/preprocess/<N>). Prints the times, and the serial and parallel parts of the cluster time
//! fitted to `T(n) = S + P / n` (Amdahl) from the two cluster points, which is what an extrapolation to more
//! executors can honestly rest on.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::bench::{Opts, free_port, median, run_measured};
use crate::bench_preprocess::task_seconds;
use crate::{cargo, status};

/// Kills the cluster's processes when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for_port(port: u16) -> Result<()> {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("nothing listens on 127.0.0.1:{port}")
}

/// A scheduler and `executors` executors of one task slot each; returns the engine URL.
fn start_cluster(bin: &Path, executors: usize, work: &Path) -> Result<(Processes, String)> {
    let port = free_port()?;
    let bind = format!("127.0.0.1:{port}");
    let quiet = |c: &mut Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    };
    let mut procs = Processes(Vec::new());
    let mut s = Command::new(bin);
    s.args(["cluster", "scheduler", "--bind", &bind]);
    quiet(&mut s);
    procs.0.push(s.spawn().context("ballista scheduler")?);
    wait_for_port(port)?;
    for i in 0..executors {
        let dir = work.join(format!("executor-{i}"));
        std::fs::create_dir_all(&dir)?;
        let (flight, grpc) = (free_port()?, free_port()?);
        let mut e = Command::new(bin);
        e.args([
            "cluster",
            "executor",
            "--scheduler",
            &bind,
            "--flight-port",
            &flight.to_string(),
            "--grpc-port",
            &grpc.to_string(),
            "--concurrent-tasks",
            "1",
            "--work-dir",
        ])
        .arg(&dir);
        quiet(&mut e);
        procs.0.push(e.spawn().context("ballista executor")?);
        wait_for_port(flight)?;
    }
    Ok((procs, format!("df://{bind}")))
}

pub(crate) fn cluster(o: &Opts) -> Result<()> {
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "trialflow-cli",
        "--features",
        "ballista",
        "--bin",
        "trialflow",
    ]);
    status(
        build,
        "cargo build --release --features ballista --bin trialflow",
    )?;
    let bin = crate::built("release", "trialflow")?;
    let dir = crate::bench_preprocess::sample_project(&bin, o.rows)?;
    let pipeline = |engine: Option<&str>, args: &[&str]| {
        let mut c = Command::new(&bin);
        c.current_dir(&dir).arg("pipeline").arg("data").args(args);
        if let Some(e) = engine {
            c.env("TRIALFLOW_EXECUTION__ENGINE", e);
        }
        c
    };
    status(pipeline(None, &[]), "trialflow pipeline data (ingest once)")?;
    let work = dir.join("cluster-work");
    let mut rows = Vec::new();
    for (label, slots) in [
        ("local engine", 0usize),
        ("cluster, 1 executor", 1),
        ("cluster, 2 executors", 2),
    ] {
        let _ = std::fs::remove_dir_all(&work);
        let (procs, engine) = if slots == 0 {
            (Processes(Vec::new()), None)
        } else {
            let (p, e) = start_cluster(&bin, slots, &work)?;
            (p, Some(e))
        };
        let (mut secs, mut clean, mut features) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..o.runs {
            let (s, peak, stdout, log) = run_measured(
                pipeline(engine.as_deref(), &["--from", "clean"]),
                &format!("{label} run {}", run + 1),
            )?;
            let text = format!("{stdout}\n{log}");
            eprintln!(
                "xtask: {label:<22} run {}: {s:.2} s, client peak {peak:.0} MiB",
                run + 1
            );
            secs.push(s);
            clean.push(task_seconds(&text, "clean").unwrap_or(f64::NAN));
            features.push(task_seconds(&text, "features").unwrap_or(f64::NAN));
        }
        drop(procs);
        rows.push((label, slots, median(secs), median(clean), median(features)));
    }
    println!(
        "\n## Preprocessing on a Ballista cluster, {} generated rows (median of {} run(s))\n",
        o.rows, o.runs
    );
    println!("| engine | task slots | wall s | clean s | features s | rows/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, slots, s, c, f) in &rows {
        println!(
            "| {label} | {slots} | {s:.2} | {c:.2} | {f:.2} | {:.0} |",
            o.rows as f64 / s
        );
    }
    let (t1, t2) = (rows[1].2, rows[2].2);
    let serial = (2.0 * t2 - t1).max(0.0);
    let parallel = (2.0 * (t1 - t2)).max(0.0);
    println!(
        "\nAmdahl fit from the two cluster points: T(n slots) = {serial:.2} s + {parallel:.2} s / n at {} rows \
         (serial share {:.0}%). Per 100M rows, if both parts grow linearly with the rows: \
         {:.0} s + {:.0} s / n.",
        o.rows,
        100.0 * serial / (serial + parallel).max(f64::MIN_POSITIVE),
        serial * 1e8 / o.rows as f64,
        parallel * 1e8 / o.rows as f64,
    );
    Ok(())
}
