//! A 1 GiB source file ingested into a lake on a real S3 API server (moto on 127.0.0.1): the copy streams
//! (multipart upload), so the process's peak memory stays under 300 MiB, measured from the kernel's
//! high-water mark while it runs. The raw object has the file's exact size and the manifest its records.

#![allow(clippy::unwrap_used)]

mod util;

use std::io::{BufWriter, Write};
use std::process::Stdio;
use std::time::Duration;

use object_store::ObjectStoreExt;
use util::{Moto, Project};

const GIB: u64 = 1 << 30;
const PEAK_LIMIT_MIB: u64 = 300;

/// VmHWM of a running process in KiB (0 once it has exited).
fn high_water_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_1gib_file_streams_into_an_s3_lake_with_bounded_memory() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let p = Project::sample();
    let sample = std::fs::read_to_string(p.path("data/raw/clinical_trial_data_1.csv")).unwrap();
    let (header, body) = sample.split_once('\n').unwrap();
    let body_records = body.lines().count() as u64;
    for f in ["clinical_trial_data_1.csv", "clinical_trial_data_2.csv"] {
        std::fs::remove_file(p.path(&format!("data/raw/{f}"))).unwrap();
    }
    let big = p.path("data/raw/clinical_trial_data_big.csv");
    let mut w = BufWriter::new(std::fs::File::create(&big).unwrap());
    writeln!(w, "{header}").unwrap();
    let mut size = header.len() as u64 + 1;
    let mut records = 0u64;
    while size < GIB {
        w.write_all(body.as_bytes()).unwrap();
        size += body.len() as u64;
        records += body_records;
    }
    w.flush().unwrap();
    drop(w);
    assert_eq!(std::fs::metadata(&big).unwrap().len(), size);

    let cfg_path = p.path("config/config.yaml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        cfg.replace("lake: file://data/lake", "lake: s3://lake/big"),
    )
    .unwrap();
    let mut cmd = p.cmd(&["ingest"]);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak_kib = 0;
    let status = loop {
        peak_kib = peak_kib.max(high_water_kib(pid));
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "{text}");
    let peak_mib = peak_kib / 1024;
    eprintln!("peak memory of `trialflow ingest` for a {size}-byte file: {peak_mib} MiB");
    assert!(peak_kib > 0, "the process was never sampled");
    assert!(
        peak_mib < PEAK_LIMIT_MIB,
        "peak memory {peak_mib} MiB for a {} MiB file",
        size >> 20
    );
    assert!(
        text.contains(&format!("({records} rows, {size} bytes)")),
        "{text}"
    );
    let keys = moto.keys("lake", "big/raw/trial");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let store = moto.store("lake");
    let meta =
        util::block_on(store.head(&object_store::path::Path::from(keys[0].as_str()))).unwrap();
    assert_eq!(meta.size, size);
}
