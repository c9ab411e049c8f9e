//! The `trialflow-server` binary as a container runs it: config file plus environment, bearer-token auth,
//! SIGTERM with a request in flight (drained, exit 0), and a missing token refused at start (exit 2).

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use serde_json::json;

fn config_file(dir: &Path) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = dir.join("config.yaml");
    std::fs::copy(root.join("config/config.yaml"), &p).unwrap();
    p
}

fn server(dir: &Path, repo: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trialflow-server"));
    c.current_dir(dir)
        .arg("--config")
        .arg(config_file(dir))
        .args(["--port", "0", "--models"])
        .arg(format!("file://{}", repo.display()))
        .env_remove("TRIALFLOW_SERVING__AUTH_TOKEN_ENV");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

#[test]
fn bearer_token_guards_model_routes_and_sigterm_drains() {
    let dir = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    write_version(repo.path(), "cv", 1, 11, true);
    let (mut child, port) = spawn_server(server(
        dir.path(),
        repo.path(),
        &[
            ("TRIALFLOW_SERVING__AUTH_TOKEN_ENV", "TF_TOKEN"),
            ("TF_TOKEN", "s3cret-token"),
        ],
    ));
    let body = json!({ "instances": [record(60.0, "F")] }).to_string();
    let r = http(port, "POST", "/v1/models/cv:predict", &[], body.as_bytes());
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(!r.text().contains("s3cret"));
    let r = http(
        port,
        "POST",
        "/v1/models/cv:predict",
        &[("Authorization", "Bearer wrong-token!")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);
    let auth = [("Authorization", "Bearer s3cret-token")];
    let r = http(
        port,
        "POST",
        "/v1/models/cv:predict",
        &auth,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(port, "GET", "/v2/models/cv", &auth, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // the scheme is case-insensitive; a token alone or another scheme is not enough
    for (header, status) in [
        ("bearer s3cret-token", 200),
        ("BEARER s3cret-token", 200),
        ("s3cret-token", 401),
        ("Basic s3cret-token", 401),
        ("Bearers3cret-token", 401),
    ] {
        let r = http(
            port,
            "POST",
            "/v1/models/cv:predict",
            &[("Authorization", header)],
            body.as_bytes(),
        );
        assert_eq!(r.status, status, "{header}: {}", r.text());
    }
    // probes and scrapers need no token
    assert_eq!(http(port, "GET", "/v2/health/ready", &[], b"").status, 200);
    assert_eq!(http(port, "GET", "/metrics", &[], b"").status, 200);

    // SIGTERM with a request half sent: it is answered, then the process exits 0
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "POST /v1/models/cv:predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (first, rest) = body.split_at(10);
    c.write_all(first.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(300));
    c.write_all(rest.as_bytes()).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 200, "{}", r.text());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_configured_token_variable_that_is_unset_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let out = server(
        dir.path(),
        repo.path(),
        &[("TRIALFLOW_SERVING__AUTH_TOKEN_ENV", "TF_TOKEN_UNSET_HERE")],
    )
    .env_remove("TF_TOKEN_UNSET_HERE")
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("serving.auth_token_env") && err.contains("TF_TOKEN_UNSET_HERE"),
        "{err}"
    );
}
