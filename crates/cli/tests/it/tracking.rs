//! Experiment tracking against a real MLflow tracking server (`mlflow server` from the environment
//! `cargo xtask test` installs, on 127.0.0.1): experiment created once although three training tasks race to
//! create it, one run per model with params, per-epoch metrics, test metrics, tags and artifacts; an
//! unreachable server is reported and, unless tracking.required, does not stop training.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Project, free_port, repo_root, text};
use serde_json::{Value, json};

/// `mlflow server` with a SQLite store and proxied artifacts in a scratch folder; stopped (with its workers)
/// when dropped.
struct MlflowServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    /// The `Authorization` header of this test's own requests (basic-auth servers).
    auth: Option<String>,
}

/// The admin of MLflow's basic-auth app in [`MlflowServer::start_with_auth`].
const ADMIN: (&str, &str) = ("admin", "trialflow-test-admin-42");

impl MlflowServer {
    fn start() -> Self {
        Self::launch(false)
    }

    /// MLflow's own basic-auth app (`--app-name basic-auth`): every request needs credentials.
    fn start_with_auth() -> Self {
        Self::launch(true)
    }

    fn launch(auth: bool) -> Self {
        let bin = std::env::var_os("TRIALFLOW_TEST_MLFLOW")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/py/mlflow/bin/mlflow"));
        assert!(
            bin.exists(),
            "{} is missing: run the tests with `cargo xtask test`, which installs MLflow",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(&bin);
        if auth {
            let ini = dir.path().join("basic_auth.ini");
            std::fs::write(
                &ini,
                format!(
                    "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{}\nadmin_username = {}\n\
                     admin_password = {}\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                    dir.path().join("auth.db").display(),
                    ADMIN.0,
                    ADMIN.1
                ),
            )
            .unwrap();
            cmd.env("MLFLOW_AUTH_CONFIG_PATH", &ini)
                .env("MLFLOW_FLASK_SERVER_SECRET_KEY", "trialflow-test-only");
        }
        let child = cmd
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
            ])
            .args(if auth {
                &["--app-name", "basic-auth"][..]
            } else {
                &[]
            })
            .arg("--backend-store-uri")
            .arg(format!(
                "sqlite:///{}",
                dir.path().join("mlflow.db").display()
            ))
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        use base64::Engine as _;
        let s = Self {
            child,
            port,
            _dir: dir,
            auth: auth.then(|| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", ADMIN.0, ADMIN.1))
                )
            }),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while s.get("/health").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "mlflow server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        s
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn request(&self, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, Vec::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let auth = self
            .auth
            .as_ref()
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = Vec::new();
        if s.read_to_end(&mut resp).is_err() {
            return (0, Vec::new());
        }
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(resp.len());
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut payload = resp[(split + 4).min(resp.len())..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            payload = dechunk(&payload);
        }
        (status, payload)
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        self.request("GET", path, "")
    }

    fn json(&self, method: &str, path: &str, body: &Value) -> Value {
        let (status, bytes) = self.request(method, path, &body.to_string());
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).unwrap()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        // The server and its workers share the process group the server leads. (`pkill -g` names the group
        // explicitly: `kill -TERM -<pgid>` can be read by some `kill` binaries as a signal number.)
        let _ = Command::new("pkill")
            .args(["-TERM", "-g", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_tracking(p: &Project, uri: &str) {
    let cfg = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    p.write(
        "config/config.yaml",
        &format!(
            "{cfg}\ntracking: {{mlflow_uri: \"{uri}\", experiment: cv-trial, required: false}}\n"
        ),
    );
}

#[test]
fn training_runs_are_logged_to_a_real_mlflow_server() {
    let ml = MlflowServer::start();
    let p = Project::sample();
    with_tracking(&p, &ml.uri());
    let out = p.run(&["pipeline", "full"]);
    assert!(out.status.success(), "{}", text(&out));

    // Three training tasks raced to create the experiment: there is one, with three finished runs.
    let exp = ml.json(
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=cv-trial",
        &json!({}),
    );
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let all = ml.json(
        "POST",
        "/api/2.0/mlflow/experiments/search",
        &json!({"max_results": 100}),
    );
    let named: Vec<&Value> = all["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "cv-trial")
        .collect();
    assert_eq!(named.len(), 1);
    let runs = ml.json(
        "POST",
        "/api/2.0/mlflow/runs/search",
        &json!({"experiment_ids": [exp_id], "max_results": 100}),
    );
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    for run in runs {
        let info = &run["info"];
        let model = info["run_name"].as_str().unwrap();
        assert_eq!(info["status"], "FINISHED", "{model}");
        let run_id = info["run_id"].as_str().unwrap();
        let dir = p.path(&format!("data/lake/candidates/{model}"));
        let report: Value =
            serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
        let card: Value =
            serde_json::from_slice(&std::fs::read(dir.join("model.json")).unwrap()).unwrap();
        assert_eq!(
            report["tracking"]["mlflow"]["run_id"], run_id,
            "the lake records the run"
        );

        let data = &run["data"];
        let kv = |list: &str, key: &str| -> Option<String> {
            data[list]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["key"] == key)
                .map(|x| {
                    x["value"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x["value"].to_string())
                })
        };
        assert_eq!(kv("params", "batch_size").as_deref(), Some("64"));
        assert_eq!(kv("params", "model").as_deref(), Some(model));
        assert_eq!(
            kv("tags", "trialflow.data_fingerprint"),
            card["data_fingerprint"].as_str().map(str::to_string)
        );
        assert_eq!(
            kv("tags", "trialflow.code_version"),
            card["code_version"].as_str().map(str::to_string)
        );
        let auc: f64 = kv("metrics", "test_roc_auc").unwrap().parse().unwrap();
        assert!((auc - report["metrics"]["roc_auc"].as_f64().unwrap()).abs() < 1e-12);
        assert!(kv("metrics", "test_roc_auc_ci_lower").is_some());

        // One val_loss per epoch, in order, equal to the lake's history.
        let hist = ml.json(
            "GET",
            &format!("/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=val_loss&max_results=1000"),
            &json!({}),
        );
        let mut points: Vec<(i64, f64)> = hist["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["step"].as_i64().unwrap(), m["value"].as_f64().unwrap()))
            .collect();
        points.sort_by_key(|p| p.0);
        let local: Vec<(i64, f64)> = report["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["epoch"].as_i64().unwrap(),
                    e["val_loss"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            points.len(),
            report["epochs_run"].as_u64().unwrap() as usize
        );
        assert_eq!(points, local);

        // The artifacts, through the server's proxy, byte for byte.
        let listed = ml.json(
            "GET",
            &format!("/api/2.0/mlflow/artifacts/list?run_id={run_id}"),
            &json!({}),
        );
        let files: Vec<&str> = listed["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        for f in ["model.safetensors", "model.json", "metrics.json"] {
            assert!(files.contains(&f), "{model}: {files:?}");
        }
        let (status, weights) = ml.get(&format!(
            "/get-artifact?path=model.safetensors&run_uuid={run_id}"
        ));
        assert_eq!(status, 200);
        assert_eq!(
            weights,
            std::fs::read(dir.join("model.safetensors")).unwrap()
        );
    }

    // MLflow unreachable: training finishes and the failure is recorded; with tracking.required it fails.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let train_baseline = |required: &str| {
        p.cmd(&[
            "pipeline",
            "training",
            "--only",
            "train_baseline",
            "--force",
        ])
        .env("TRIALFLOW_TRACKING__MLFLOW_URI", &closed)
        .env("TRIALFLOW_TRACKING__REQUIRED", required)
        .output()
        .unwrap()
    };
    let o = train_baseline("false");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("could not be logged to MLflow"),
        "{}",
        text(&o)
    );
    let report: Value = serde_json::from_slice(
        &std::fs::read(p.path("data/lake/candidates/baseline/metrics.json")).unwrap(),
    )
    .unwrap();
    assert!(
        report["tracking"]["error"]
            .as_str()
            .unwrap()
            .contains("MLflow"),
        "{report}"
    );
    let o = train_baseline("true");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
}

/// An MLflow server that requires credentials (MLflow's basic-auth app): a run without them is refused, and
/// fails the training when tracking is required; with MLflow's own variables (`MLFLOW_TRACKING_USERNAME` and
/// `MLFLOW_TRACKING_PASSWORD`) every run is logged.
#[test]
fn mlflow_credentials_come_from_mlflows_own_variables() {
    let ml = MlflowServer::start_with_auth();
    let p = Project::sample();
    let cfg = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    p.write(
        "config/config.yaml",
        &format!(
            "{cfg}\ntracking: {{mlflow_uri: \"{}\", experiment: guarded, required: true}}\n",
            ml.uri()
        ),
    );
    let out = p.run(&["pipeline", "data"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = p.run(&["pipeline", "training"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("401"), "{}", text(&out));

    let out = p
        .cmd(&["pipeline", "training"])
        .env("MLFLOW_TRACKING_USERNAME", ADMIN.0)
        .env("MLFLOW_TRACKING_PASSWORD", ADMIN.1)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(ADMIN.1),
        "the password never reaches the output"
    );
    let exp = ml.json(
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=guarded",
        &json!({}),
    );
    let runs = ml.json(
        "POST",
        "/api/2.0/mlflow/runs/search",
        &json!({"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 100}),
    );
    let finished = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["info"]["status"] == "FINISHED")
        .count();
    assert_eq!(finished, 3, "{runs}");
}
