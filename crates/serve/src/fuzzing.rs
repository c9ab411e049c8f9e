//! What the fuzz targets (`fuzz/`, cargo feature `fuzzing`) drive: the whole router in process, over a small
//! fixture model in a temporary repository, so that a fuzzed request meets every layer a client's does (the
//! guard, path parsing, the media type check, both APIs' decoders, the transform and the forward pass).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use candle_core::Device;
use tokio::sync::Semaphore;
use tower_service::Service;
use trialflow_core::config::{Activation, ModelConfig, VersionPolicy};
use trialflow_core::features::{CategoricalFeature, FeatureSpec, NumericFeature, OnInvalid};
use trialflow_core::{Error, Result, Storage};
use trialflow_model::{ModelCard, Network};

use crate::ops::{Limits, Metrics};
use crate::{AppState, Repository, router};

/// The served model's name in the fixture repository.
pub const MODEL: &str = "cv";

/// A router over a one-version repository, and the runtime that drives its requests.
pub struct Harness {
    app: Router,
    rt: tokio::runtime::Runtime,
    _repo: tempfile::TempDir,
}

fn spec() -> FeatureSpec {
    let numeric = vec![
        NumericFeature {
            name: "age".into(),
            impute: 60.0,
            mean: 60.0,
            std: 10.0,
            min: Some(18.0),
            max: Some(100.0),
            on_invalid: OnInvalid::Reject,
            derived: None,
        },
        NumericFeature {
            name: "weight_kg".into(),
            impute: 80.0,
            mean: 80.0,
            std: 15.0,
            min: Some(30.0),
            max: Some(300.0),
            on_invalid: OnInvalid::Impute,
            derived: None,
        },
        NumericFeature {
            name: "bmi".into(),
            impute: 27.0,
            mean: 27.0,
            std: 4.0,
            min: None,
            max: None,
            on_invalid: OnInvalid::Impute,
            derived: Some("weight_kg / 3.0".into()),
        },
    ];
    let categorical = vec![CategoricalFeature {
        name: "arm".into(),
        levels: vec!["placebo".into(), "treatment".into()],
        canonical: [
            ("placebo".to_string(), "placebo".to_string()),
            ("treatment".to_string(), "treatment".to_string()),
        ]
        .into(),
        unseen: Default::default(),
    }];
    let columns = FeatureSpec::build_columns(&numeric, &categorical);
    FeatureSpec {
        numeric,
        categorical,
        columns,
        train_rows: 100,
        arm_field: "arm".into(),
    }
}

fn fixture_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("fuzz fixture: {e}"))
}

/// Writes version 1 of [`MODEL`], blessed, under `root`.
fn write_fixture(root: &std::path::Path) -> Result<()> {
    let spec = spec();
    let architecture = ModelConfig {
        hidden: vec![4],
        dropout: vec![],
        activation: Activation::Relu,
    };
    let net = Network::init(&architecture, spec.width(), 7, &Device::Cpu).map_err(fixture_error)?;
    let card = ModelCard {
        name: MODEL.into(),
        architecture,
        input_dim: spec.width(),
        feature_spec: spec,
        metrics: serde_json::json!({}),
        data_fingerprint: "fuzz".into(),
        config_fingerprint: "fuzz".into(),
        code_version: "fuzz".into(),
        seed: 7,
        endpoint: trialflow_core::config::Endpoint::Binary,
        targets: vec!["outcome".into()],
        survival: None,
    };
    let dir = root.join(MODEL).join("1");
    std::fs::create_dir_all(&dir).map_err(fixture_error)?;
    std::fs::write(
        dir.join("model.safetensors"),
        net.to_safetensors().map_err(fixture_error)?,
    )
    .map_err(fixture_error)?;
    std::fs::write(
        dir.join("model.json"),
        serde_json::to_vec(&card).map_err(fixture_error)?,
    )
    .map_err(fixture_error)?;
    std::fs::write(dir.join("BLESSED"), "{}").map_err(fixture_error)?;
    Ok(())
}

impl Harness {
    pub fn new() -> Result<Self> {
        let repo_dir = tempfile::tempdir().map_err(fixture_error)?;
        write_fixture(repo_dir.path())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(fixture_error)?;
        let store = Storage::open(&format!("file://{}", repo_dir.path().display()))?;
        let repo = Repository::new(store, VersionPolicy::Latest, BTreeMap::new());
        rt.block_on(repo.refresh())?;
        if repo.loaded_count() != 1 {
            return Err(fixture_error("the fixture version did not load"));
        }
        let state = AppState {
            repo: Arc::new(repo),
            limits: Limits {
                max_rows: 64,
                max_body_bytes: 1 << 20,
                max_concurrent: 4,
                timeout: Duration::from_secs(5),
                body_timeout: Duration::from_secs(5),
                out_of_range_sd: 10.0,
                token: None,
                concurrency: Arc::new(Semaphore::new(4)),
            },
            metrics: Arc::new(Metrics::default()),
            shutting_down: Arc::new(AtomicBool::new(false)),
        };
        Ok(Self {
            app: router(state),
            rt,
            _repo: repo_dir,
        })
    }

    /// The status `/infer` answers to a fuzz input of the `oip_v2` target: a mode byte, then a JSON body (even
    /// mode) or a JSON header, a NUL that is not sent, and binary tensors, with the header's length in
    /// `Inference-Header-Content-Length`. None for an empty input.
    pub fn infer(&self, data: &[u8]) -> Option<u16> {
        let (mode, rest) = data.split_first()?;
        let path = "/v2/models/cv/infer";
        if mode & 1 == 0 {
            let json = [("content-type", "application/json")];
            return Some(self.status("POST", path, &json, rest.to_vec()));
        }
        let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let mut body = rest[..split].to_vec();
        body.extend_from_slice(rest.get(split + 1..).unwrap_or_default());
        let len = split.to_string();
        let headers = [
            ("content-type", "application/octet-stream"),
            ("inference-header-content-length", len.as_str()),
        ];
        Some(self.status("POST", path, &headers, body))
    }

    /// The status `:predict` answers to a JSON body.
    pub fn predict(&self, body: &[u8]) -> u16 {
        let json = [("content-type", "application/json")];
        self.status("POST", "/v1/models/cv:predict", &json, body.to_vec())
    }

    /// The status the server answers `method path` with these headers and body. A panic anywhere on the
    /// way is the fuzzer's finding; so is a 5xx, which the caller asserts against.
    pub fn status(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> u16 {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let Ok(req) = req.body(Body::from(body)) else {
            // not a request a client could send (a method or path the HTTP parser would refuse)
            return 400;
        };
        let mut app = self.app.clone();
        match self.rt.block_on(app.call(req)) {
            Ok(resp) => resp.status().as_u16(),
            Err(never) => match never {},
        }
    }
}
