//! The model repository on S3: a real S3 API server (moto, from the test clients' environment, on
//! 127.0.0.1), the `trialflow-server` binary configured by the standard `AWS_*` environment, a version
//! promoted into the bucket picked up while serving; a bucket that does not exist keeps the server unready.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command};
use std::time::Duration;

use crate::common::*;
use serde_json::json;

use trialflow_testkit::Moto;

fn server_on(moto: &Moto, models: &str) -> (Child, u16) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_trialflow-server"));
    c.current_dir(dir.path())
        .args(["--port", "0", "--models", models])
        .env("AWS_ENDPOINT", moto.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("TRIALFLOW_SERVING__POLL_SECONDS", "1");
    spawn_server(c)
}

fn predict(port: u16, rec: &serde_json::Value) -> (u16, f32) {
    let r = http(
        port,
        "POST",
        "/v1/models/cv:predict",
        &[],
        json!({ "instances": [rec] }).to_string().as_bytes(),
    );
    let p = if r.status == 200 {
        r.json()["predictions"][0][0].as_f64().unwrap() as f32
    } else {
        f32::NAN
    };
    (r.status, p)
}

#[test]
fn serves_from_an_s3_repository_and_picks_up_a_promoted_version() {
    let moto = Moto::start();
    moto.create_bucket("models");
    let local = tempfile::tempdir().unwrap();
    write_version(local.path(), "cv", 1, 11, true);
    moto.upload(local.path(), "models", "repo");
    let (mut child, port) = server_on(&moto, "s3://models/repo");
    let rec = record(61.0, "F");
    let (code, p) = predict(port, &rec);
    assert_eq!(code, 200);
    assert!((p - expected(11, &encoded(&rec))[0]).abs() < 1e-6);

    let v2 = tempfile::tempdir().unwrap();
    write_version(v2.path(), "cv", 2, 22, true);
    moto.upload(v2.path(), "models", "repo");
    let want2 = expected(22, &encoded(&rec))[0];
    wait_until("version 2 from S3", || {
        let (code, p) = predict(port, &rec);
        code == 200 && (p - want2).abs() < 1e-6
    });
    let st = http(port, "GET", "/v1/models/cv", &[], b"").json();
    assert_eq!(st["model_version_status"][0]["version"], "2", "{st}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_missing_bucket_keeps_the_server_unready_and_counts_failed_scans() {
    let moto = Moto::start();
    let (mut child, port) = server_on(&moto, "s3://no-such-bucket/repo");
    let r = http(port, "GET", "/v2/health/ready", &[], b"");
    assert_eq!(r.status, 503, "{}", r.text());
    wait_until("a failed scan to be counted", || {
        let m = http(port, "GET", "/metrics", &[], b"").text();
        m.lines().any(|l| {
            l.strip_prefix("trialflow_repository_scan_failures_total ")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n >= 1)
        })
    });
    std::thread::sleep(Duration::from_millis(10));
    let _ = child.kill();
    let _ = child.wait();
}
