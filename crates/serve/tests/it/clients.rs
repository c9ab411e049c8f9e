//! The real client libraries against the server: Triton's `tritonclient[http]` (binary tensor extension
//! and JSON), KServe's `InferenceRESTClient`, and `prometheus_client`'s parser for /metrics. `cargo xtask
//! test` installs them (pinned, xtask/requirements-serve.txt) under target/py/serve; without them this test
//! fails: a missing client is a failure, not a skip.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use serde_json::json;

#[test]
fn tritonclient_kserve_and_prometheus_parser_agree_with_the_server() {
    let repo = tempfile::tempdir().unwrap();
    write_version(repo.path(), "cv", 5, 55, true);
    let s = TestServer::start(serving(60), repo.path());
    let mut records = vec![
        record(67.0, "male"),
        record(45.0, "F"),
        record(80.0, "female"),
    ];
    records[2]["weight_kg"] = serde_json::Value::Null; // imputed, as in training
    records[1]["smoker"] = json!("yes");
    let x: Vec<f32> = records.iter().flat_map(encoded).collect();
    let cases = json!({
        "model": "cv",
        "records": records,
        "expected": expected(55, &x),
        "numeric": ["age", "weight_kg", "height_cm"],
        "categorical": ["arm", "sex", "smoker"],
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, cases.to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/check_clients.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(format!("127.0.0.1:{}", s.port))
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all client checks passed"), "{text}");
    assert!(
        text.contains("ok   triton binary in/out (defaults)"),
        "{text}"
    );
    assert!(
        text.contains("ok   kserve infer (binary inputs: True)"),
        "{text}"
    );
}
