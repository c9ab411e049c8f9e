//! Harness for the server tests: a model repository built from a small trial-like feature spec, an
//! in-process server on an ephemeral port, and a raw HTTP/1.1 client (the tests exercise the server, not a
//! client library's quirks; the real client libraries have their own test, clients.rs).

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use candle_core::Device;
use trialflow_core::Storage;
use trialflow_core::config::{Activation, Endpoint, ModelConfig, ServingConfig, VersionPolicy};
use trialflow_core::features::{CategoricalFeature, FeatureSpec, NumericFeature, OnInvalid};
use trialflow_model::{ModelCard, Network};

pub fn spec() -> FeatureSpec {
    let num = |name: &str, mean: f64, std: f64, min: Option<f64>, max: Option<f64>, on_invalid| {
        NumericFeature {
            name: name.into(),
            impute: mean,
            mean,
            std,
            min,
            max,
            on_invalid,
            derived: None,
        }
    };
    let mut numeric = vec![
        num(
            "age",
            60.0,
            10.0,
            Some(18.0),
            Some(100.0),
            OnInvalid::Reject,
        ),
        num(
            "weight_kg",
            80.0,
            15.0,
            Some(30.0),
            Some(300.0),
            OnInvalid::Impute,
        ),
        num(
            "height_cm",
            170.0,
            10.0,
            Some(120.0),
            Some(230.0),
            OnInvalid::Impute,
        ),
        num("bmi", 27.0, 4.0, None, None, OnInvalid::Impute),
    ];
    numeric[3].derived = Some("weight_kg / ((height_cm / 100.0) * (height_cm / 100.0))".into());
    let cat = |name: &str, levels: &[&str], syn: &[(&str, &str)]| CategoricalFeature {
        name: name.into(),
        levels: levels.iter().map(|s| s.to_string()).collect(),
        canonical: syn
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .chain(levels.iter().map(|l| (l.to_lowercase(), l.to_string())))
            .collect(),
        unseen: Default::default(),
    };
    let categorical = vec![
        cat("arm", &["placebo", "treatment"], &[("control", "placebo")]),
        cat("sex", &["F", "M"], &[("female", "F"), ("male", "M")]),
        cat("smoker", &["no", "yes"], &[]),
    ];
    let columns = FeatureSpec::build_columns(&numeric, &categorical);
    FeatureSpec {
        numeric,
        categorical,
        columns,
        train_rows: 100,
        arm_field: "arm".into(),
    }
}

/// The fixture architecture with weights drawn from `seed`.
fn network(seed: u64) -> Network {
    let arch = ModelConfig {
        hidden: vec![16, 8],
        dropout: vec![],
        activation: Activation::Relu,
    };
    Network::init(&arch, spec().width(), seed, &Device::Cpu).unwrap()
}

/// Writes `<root>/<model>/<version>/` with weights from `seed`, blessed unless `blessed` is false.
pub fn write_version(root: &Path, model: &str, version: u64, seed: u64, blessed: bool) {
    write_endpoint_version(root, model, version, seed, blessed, Endpoint::Binary, None);
}

/// A time-to-event version: the network's output is the risk score, with a baseline hazard
/// H₀(t) = 0.1·t stepping at t = 1, 2, 3 and default times 1 and 2.
pub fn write_survival_version(root: &Path, model: &str, version: u64, seed: u64) {
    let head = trialflow_model::SurvivalHead {
        baseline: trialflow_model::survival::BaselineHazard {
            times: vec![1.0, 2.0, 3.0],
            cumulative_hazard: vec![0.1, 0.2, 0.3],
        },
        times: vec![1.0, 2.0],
    };
    write_endpoint_version(
        root,
        model,
        version,
        seed,
        true,
        Endpoint::TimeToEvent,
        Some(head),
    );
}

pub fn write_endpoint_version(
    root: &Path,
    model: &str,
    version: u64,
    seed: u64,
    blessed: bool,
    endpoint: Endpoint,
    survival: Option<trialflow_model::SurvivalHead>,
) {
    let spec = spec();
    let net = network(seed);
    let arch = net.config.clone();
    let card = ModelCard {
        endpoint,
        targets: vec!["outcome".into()],
        survival,
        name: model.into(),
        architecture: arch,
        input_dim: spec.width(),
        feature_spec: spec,
        metrics: serde_json::json!({"roc_auc": 0.7}),
        data_fingerprint: "d".into(),
        config_fingerprint: "c".into(),
        code_version: "test".into(),
        seed,
    };
    let dir = root.join(model).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), net.to_safetensors().unwrap()).unwrap();
    std::fs::write(dir.join("model.json"), serde_json::to_vec(&card).unwrap()).unwrap();
    if blessed {
        std::fs::write(dir.join("BLESSED"), "{}").unwrap();
    }
}

/// The probabilities version `seed`'s network gives for already-encoded rows.
pub fn expected(seed: u64, x: &[f32]) -> Vec<f32> {
    network(seed)
        .predict_proba(x, x.len() / spec().width(), &Device::Cpu)
        .unwrap()
}

pub fn serving(poll_seconds: u64) -> ServingConfig {
    ServingConfig {
        host: "127.0.0.1".into(),
        port: 0,
        model_name: "cv".into(),
        poll_seconds,
        max_body_bytes: 64 * 1024,
        max_rows: 100,
        request_timeout_ms: 2000,
        max_concurrent_requests: 64,
        max_connections: 128,
        header_read_timeout_ms: 5000,
        body_read_timeout_ms: 5000,
        write_timeout_ms: 5000,
        out_of_range_sd: 10.0,
        auth_token_env: None,
        version_policy: VersionPolicy::Latest,
        labels: BTreeMap::new(),
    }
}

pub struct TestServer {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    pub repo: PathBuf,
}

impl TestServer {
    pub fn start(cfg: ServingConfig, repo: &Path) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let url = format!("file://{}", repo.display());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let store = Storage::open(&url).map_err(|e| e.to_string())?;
                let addr = "127.0.0.1:0".parse().unwrap();
                let server = trialflow_serve::Server::bind(&cfg, "test.yaml", store, addr)
                    .await
                    .map_err(|e| e.to_string());
                let server = match server {
                    Ok(s) => s,
                    Err(e) => {
                        port_tx.send(Err(e.clone())).unwrap();
                        return Err(e);
                    }
                };
                port_tx
                    .send(Ok(server.local_addr().unwrap().port()))
                    .unwrap();
                server
                    .run(async move {
                        let _ = rx.await;
                    })
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        let port = port_rx.recv().unwrap().unwrap();
        Self {
            port,
            stop: Some(tx),
            thread: Some(thread),
            repo: repo.to_path_buf(),
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        http(self.port, "GET", path, &[], b"")
    }

    /// Asserts that /metrics has every one of `lines`.
    pub fn assert_metrics(&self, lines: &[&str]) {
        let m = self.get("/metrics").text();
        for line in lines {
            assert!(m.contains(line), "metrics lack `{line}`:\n{m}");
        }
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        http(self.port, "POST", path, &[], body.as_bytes())
    }

    /// Begins a graceful shutdown and waits for the server to return.
    pub fn shutdown(mut self) -> Result<(), String> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.thread.take().unwrap().join().unwrap()
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub fn join(mut self) -> Result<(), String> {
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.text()))
            .to_string()
    }
}

pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

pub fn read_response(s: &mut TcpStream) -> Resp {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let n =
                usize::from_str_radix(std::str::from_utf8(&rest[..i]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[i + 2..i + 2 + n]);
            rest = &rest[i + 2 + n + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// A complete record of the fixture spec's raw fields.
pub fn record(age: f64, sex: &str) -> serde_json::Value {
    serde_json::json!({"age": age, "weight_kg": 82.5, "height_cm": 176, "arm": "Treatment",
                       "sex": sex, "smoker": "no"})
}

/// Encoded row of [`record`], computed by the model crate's transform.
pub fn encoded(rec: &serde_json::Value) -> Vec<f32> {
    let encoder = trialflow_model::Encoder::new(&spec()).unwrap();
    let mut out = Vec::new();
    encoder
        .encode(
            &|k| match rec.get(&encoder.inputs()[k].name) {
                Some(serde_json::Value::Number(n)) => {
                    trialflow_model::RawValue::Number(n.as_f64().unwrap())
                }
                Some(serde_json::Value::String(s)) => trialflow_model::RawValue::Text(s),
                _ => trialflow_model::RawValue::Missing,
            },
            &mut out,
        )
        .unwrap();
    out
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub use trialflow_testkit::test_python as python;

/// Spawns a `trialflow-server` command and waits for the port it announces.
pub fn spawn_server(c: Command) -> (Child, u16) {
    trialflow_testkit::spawn_announced(c)
}

/// The raw outputs (logits, risk scores) of version `seed`'s network for already-encoded rows.
pub fn expected_outputs(seed: u64, x: &[f32]) -> Vec<f32> {
    trialflow_model::DenseCpu::from_network(&network(seed))
        .unwrap()
        .outputs(x)
}

/// A k-means clustering of the spec's first column (centres −1 and 1) beside version `version`.
pub fn write_phenotypes(root: &Path, model: &str, version: u64, spec: FeatureSpec) {
    let p = trialflow_model::clustering::Phenotypes {
        method: trialflow_core::config::ClusterMethod::Kmeans,
        columns: vec![0],
        names: vec![spec.columns[0].clone()],
        centers: vec![vec![-1.0], vec![1.0]],
        weights: vec![],
        covariances: vec![],
        feature_spec: spec,
    };
    let dir = root.join(model).join(version.to_string());
    std::fs::write(dir.join("phenotypes.json"), serde_json::to_vec(&p).unwrap()).unwrap();
}
