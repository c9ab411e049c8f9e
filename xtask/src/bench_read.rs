//! `cargo xtask bench read` (also the end of `bench ingest`): trialflow's SAS transport and Dataset-JSON
//! readers beside pyreadstat, pandas.read_sas and Python's json module on the same generated files (the CDISC
//! pilot's ADSL repeated to about `--mb` megabytes, 1000 by default), every reader checked to see the same rows
//! and the same sum of AGE. trialflow's row is `trialflow-read-bench`: every value decoded and staged as the
//! clean task stages it (text batches, normalized, hashed), on one thread.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::bench::{Opts, median, run_measured};
use crate::{root, status, venv};

fn seen(stdout: &str, what: &str) -> Result<(u64, f64)> {
    let v: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("{what}: expected a JSON line, got {stdout:?}"))?;
    Ok((
        v["rows"].as_u64().context("rows")?,
        v["sum"].as_f64().context("sum")?,
    ))
}

pub fn read(o: &Opts) -> Result<()> {
    let root = root();
    let python = venv("read", &root.join("xtask/bench/requirements-read.txt"))?;
    let bin = crate::bench::build_release("trialflow-ingest", "trialflow-read-bench")?;
    let pilot = root.join("data/examples/cdiscpilot");
    let dir = root.join("target/bench/read");
    let peers = root.join("xtask/bench/read_peers.py");
    let mut g = Command::new(&python);
    g.arg(&peers)
        .arg("gen")
        .arg(pilot.join("adsl.xpt"))
        .arg(pilot.join("adsl.ndjson"))
        .arg(&dir)
        .arg(o.mb.to_string());
    status(g, "generating the files (read_peers.py gen)")?;
    let back: Value = serde_json::from_slice(&std::fs::read(pilot.join("readback.json"))?)?;
    let columns: Vec<String> = back["columns"]
        .as_array()
        .context("readback.json: columns")?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let ours = |file: &str, format: &str| {
        let mut c = Command::new(&bin);
        c.arg(dir.join(file)).args([format, "AGE"]).args(&columns);
        c
    };
    let peer = |name: &str, file: &str| {
        let mut c = Command::new(&python);
        c.arg(&peers).arg(name).arg(dir.join(file)).arg("AGE");
        c
    };
    type Make<'a> = Box<dyn Fn() -> Command + 'a>;
    let rows: Vec<(&str, &str, Make)> = vec![
        (
            "trialflow (XPT v5)",
            "big.xpt",
            Box::new(|| ours("big.xpt", "xpt")),
        ),
        (
            "pyreadstat.read_xport (whole file)",
            "big.xpt",
            Box::new(|| peer("pyreadstat", "big.xpt")),
        ),
        (
            "pyreadstat.read_file_in_chunks (100k rows)",
            "big.xpt",
            Box::new(|| peer("pyreadstat-chunks", "big.xpt")),
        ),
        (
            "pandas.read_sas xport (chunksize 100k)",
            "big.xpt",
            Box::new(|| peer("pandas", "big.xpt")),
        ),
        (
            "trialflow (Dataset-JSON)",
            "big.json",
            Box::new(|| ours("big.json", "dataset-json")),
        ),
        (
            "Python json.load (Dataset-JSON)",
            "big.json",
            Box::new(|| peer("json", "big.json")),
        ),
        (
            "trialflow (Dataset-JSON NDJSON)",
            "big.ndjson",
            Box::new(|| ours("big.ndjson", "dataset-ndjson")),
        ),
        (
            "Python json.loads per line (NDJSON)",
            "big.ndjson",
            Box::new(|| peer("ndjson", "big.ndjson")),
        ),
    ];
    let mut table = Vec::new();
    let mut truth: std::collections::BTreeMap<&str, (u64, f64)> = Default::default();
    for (name, file, make) in &rows {
        let mut secs = Vec::new();
        let mut peaks = Vec::new();
        for _ in 0..o.runs {
            let (s, peak, out, _) = run_measured(make(), name)?;
            let got = seen(&out, name)?;
            let want = *truth.entry(file).or_insert(got);
            if got.0 != want.0 || (got.1 - want.1).abs() > 1e-6 * want.1.abs() {
                bail!("{name} read {got:?} from {file}; the first reader read {want:?}");
            }
            secs.push(s);
            peaks.push(peak);
        }
        let size = std::fs::metadata(dir.join(file))?.len() as f64;
        table.push((*name, *file, size, median(secs), median(peaks)));
        eprintln!("xtask: read {name}: done");
    }
    print_table(&dir, &truth, &table, o.runs);
    Ok(())
}

fn print_table(
    dir: &Path,
    truth: &std::collections::BTreeMap<&str, (u64, f64)>,
    table: &[(&str, &str, f64, f64, f64)],
    runs: usize,
) {
    println!(
        "\nReading every value ({runs} runs, medians; files in {}; rows: {}):\n",
        dir.display(),
        truth
            .iter()
            .map(|(f, (r, _))| format!("{f} {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| reader | file | MB | seconds | MB/s | peak RSS MiB | vs trialflow |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (name, file, size, secs, peak) in table {
        let ours = table
            .iter()
            .find(|r| r.1 == *file && r.0.starts_with("trialflow"))
            .map_or(*secs, |r| r.3);
        println!(
            "| {name} | {file} | {:.0} | {secs:.2} | {:.0} | {peak:.0} | {:.1}× |",
            size / 1e6,
            size / 1e6 / secs,
            secs / ours
        );
    }
}
