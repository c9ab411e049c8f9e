//! HTTP routes. TF Serving REST: `GET /v1/models/{m}[/versions/{v}]`, `GET …/metadata`,
//! `POST /v1/models/{m}[/versions/{v}]:predict`. KServe v2 health: `/v2/health/live`, `/v2/health/ready`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use candle_core::Device;
use serde_json::{Value, json};
use trialflow_model::{FieldError, RawValue, encode};

use crate::repository::Repository;

#[derive(Clone)]
pub struct AppState {
    repo: Arc<Repository>,
    max_rows: usize,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Metrics {
    /// (model, version, code) → count
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency_us_sum: AtomicU64,
    latency_count: AtomicU64,
    rows: AtomicU64,
}

impl AppState {
    pub fn new(repo: Arc<Repository>, max_rows: usize) -> Self {
        Self {
            repo,
            max_rows,
            metrics: Arc::new(Metrics::default()),
        }
    }
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/models/{*rest}", get(model_get).post(model_post))
        .route(
            "/v2/health/live",
            get(|| async { axum::Json(json!({"live": true})) }),
        )
        .route("/v2/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// `m`, `m/versions/v`, optionally followed by `/metadata` (GET) — returns (model, version, rest).
fn parse_path(rest: &str) -> Result<(String, Option<u64>, String), ApiError> {
    let mut parts = rest.splitn(2, '/');
    let model = parts.next().unwrap_or_default().to_string();
    let tail = parts.next().unwrap_or_default();
    if let Some(after) = tail.strip_prefix("versions/") {
        let (v, extra) = after.split_once('/').unwrap_or((after, ""));
        let version = v
            .parse::<u64>()
            .map_err(|_| bad("version: expected a positive integer in /versions/{version}"))?;
        return Ok((model, Some(version), extra.to_string()));
    }
    Ok((model, None, tail.to_string()))
}

fn not_found(model: &str, version: Option<u64>) -> ApiError {
    let what = match version {
        Some(v) => format!("Servable not found for request: Specific({model}, {v})"),
        None => format!("Servable not found for request: Latest({model})"),
    };
    ApiError(StatusCode::NOT_FOUND, what)
}

async fn model_get(
    State(s): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    let (model, version, extra) = parse_path(&rest)?;
    let loaded = s
        .repo
        .get(&model, version)
        .ok_or_else(|| not_found(&model, version))?;
    match extra.as_str() {
        "" => {
            let versions = match version {
                Some(v) => vec![v],
                None => s.repo.versions(&model).unwrap_or_default(),
            };
            let status: Vec<Value> = versions
                .iter()
                .rev()
                .map(|v| json!({"version": v.to_string(), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}))
                .collect();
            Ok(axum::Json(json!({ "model_version_status": status })).into_response())
        }
        "metadata" => {
            let spec = &loaded.card.feature_spec;
            let mut inputs = serde_json::Map::new();
            for n in &spec.numeric {
                inputs.insert(n.name.clone(), json!({"dtype": "DT_DOUBLE", "derived": n.derived, "valid_range": [n.min, n.max]}));
            }
            for c in &spec.categorical {
                inputs.insert(
                    c.name.clone(),
                    json!({"dtype": "DT_STRING", "levels": c.levels}),
                );
            }
            Ok(axum::Json(json!({
                "model_spec": {"name": model, "signature_name": "", "version": loaded.version.to_string()},
                "metadata": {"signature_def": {"signature_def": {"serving_default": {
                    "inputs": inputs,
                    "outputs": {"probability": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "1"}]}}},
                    "method_name": "tensorflow/serving/predict",
                    "feature_columns": spec.columns,
                }}}}
            }))
            .into_response())
        }
        other => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown resource `{other}`"),
        )),
    }
}

async fn model_post(State(s): State<AppState>, Path(rest): Path<String>, body: Bytes) -> Response {
    let start = Instant::now();
    let Some(path) = rest.strip_suffix(":predict") else {
        return ApiError(
            StatusCode::NOT_FOUND,
            "expected POST /v1/models/{model}[/versions/{v}]:predict".into(),
        )
        .into_response();
    };
    let (model, version, _) = match parse_path(path) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = predict(&s, &model, version, &body);
    let (code, version_label) = match &result {
        Ok((_, v)) => (200, v.to_string()),
        Err(ApiError(c, _)) => (
            c.as_u16(),
            version.map(|v| v.to_string()).unwrap_or_default(),
        ),
    };
    if let Ok(mut m) = s.metrics.requests.lock() {
        *m.entry((model.clone(), version_label, code)).or_default() += 1;
    }
    s.metrics
        .latency_us_sum
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    s.metrics.latency_count.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok((v, _)) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn raw_value(field: &str, v: &Value) -> Result<RawValue, ApiError> {
    Ok(match v {
        Value::Null => RawValue::Missing,
        Value::Number(n) => RawValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => RawValue::Text(s.clone()),
        Value::Bool(b) => RawValue::Text(if *b { "true".into() } else { "false".into() }),
        _ => return Err(bad(format!("{field}: expected a number, a string or null"))),
    })
}

fn predict(
    s: &AppState,
    model: &str,
    version: Option<u64>,
    body: &[u8],
) -> Result<(Value, u64), ApiError> {
    let loaded = s
        .repo
        .get(model, version)
        .ok_or_else(|| not_found(model, version))?;
    let spec = &loaded.card.feature_spec;
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(req) = req else {
        return Err(bad("request body: expected a JSON object"));
    };
    let known: Vec<&str> = spec
        .numeric
        .iter()
        .map(|n| n.name.as_str())
        .chain(spec.categorical.iter().map(|c| c.name.as_str()))
        .collect();
    let width = spec.width();
    let mut x: Vec<f32> = Vec::new();
    let (key, rows) = if let Some(instances) = req.get("instances") {
        let Value::Array(items) = instances else {
            return Err(bad("instances: expected a list"));
        };
        check_rows(items.len(), s.max_rows, "instances")?;
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::Object(rec) => {
                    let mut fields = BTreeMap::new();
                    for (k, v) in rec {
                        if !known.contains(&k.as_str()) {
                            return Err(bad(format!(
                                "instances[{i}].{k}: unknown field; expected one of {known:?}"
                            )));
                        }
                        fields.insert(k.as_str(), raw_value(&format!("instances[{i}].{k}"), v)?);
                    }
                    encode(
                        spec,
                        &|f| fields.get(f).cloned().unwrap_or(RawValue::Missing),
                        &mut x,
                    )
                    .map_err(|e: FieldError| bad(format!("instances[{i}].{e}")))?;
                }
                Value::Array(nums) => numeric_row(nums, width, &format!("instances[{i}]"), &mut x)?,
                _ => {
                    return Err(bad(format!(
                        "instances[{i}]: expected an object of named features or a list of {width} numbers"
                    )));
                }
            }
        }
        ("predictions", items.len())
    } else if let Some(inputs) = req.get("inputs") {
        match inputs {
            Value::Object(cols) => {
                let mut n = None;
                for (k, v) in cols {
                    if !known.contains(&k.as_str()) {
                        return Err(bad(format!(
                            "inputs.{k}: unknown field; expected one of {known:?}"
                        )));
                    }
                    let Value::Array(vals) = v else {
                        return Err(bad(format!("inputs.{k}: expected a list")));
                    };
                    match n {
                        None => n = Some(vals.len()),
                        Some(m) if m != vals.len() => {
                            return Err(bad(format!(
                                "inputs.{k}: expected {m} values like the other inputs"
                            )));
                        }
                        _ => {}
                    }
                }
                let n = n.unwrap_or(0);
                check_rows(n, s.max_rows, "inputs")?;
                for i in 0..n {
                    let mut fields = BTreeMap::new();
                    for (k, v) in cols {
                        fields.insert(k.as_str(), raw_value(&format!("inputs.{k}[{i}]"), &v[i])?);
                    }
                    encode(
                        spec,
                        &|f| fields.get(f).cloned().unwrap_or(RawValue::Missing),
                        &mut x,
                    )
                    .map_err(|e| bad(format!("inputs.{}[{i}]: {}", e.field, e.message)))?;
                }
                ("outputs", n)
            }
            Value::Array(rows) => {
                check_rows(rows.len(), s.max_rows, "inputs")?;
                for (i, r) in rows.iter().enumerate() {
                    let Value::Array(nums) = r else {
                        return Err(bad(format!(
                            "inputs[{i}]: expected a list of {width} numbers"
                        )));
                    };
                    numeric_row(nums, width, &format!("inputs[{i}]"), &mut x)?;
                }
                ("outputs", rows.len())
            }
            _ => {
                return Err(bad(
                    "inputs: expected an object of feature lists or a list of rows",
                ));
            }
        }
    } else {
        return Err(bad("request body: expected `instances` or `inputs`"));
    };
    s.metrics.rows.fetch_add(rows as u64, Ordering::Relaxed);
    let p = loaded
        .network
        .predict_proba(&x, rows, &Device::Cpu)
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("inference failed: {e}"),
            )
        })?;
    let out: Vec<Value> = p.iter().map(|v| json!([v])).collect();
    Ok((json!({ key: out }), loaded.version))
}

fn check_rows(n: usize, max: usize, field: &str) -> Result<(), ApiError> {
    if n == 0 {
        return Err(bad(format!("{field}: expected at least one row")));
    }
    if n > max {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{field}: {n} rows exceed the limit of {max} per request"),
        ));
    }
    Ok(())
}

fn numeric_row(
    nums: &[Value],
    width: usize,
    field: &str,
    x: &mut Vec<f32>,
) -> Result<(), ApiError> {
    if nums.len() != width {
        return Err(bad(format!(
            "{field}: expected {width} numbers (the transformed feature row), got {}",
            nums.len()
        )));
    }
    for (j, v) in nums.iter().enumerate() {
        let f = v
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| bad(format!("{field}[{j}]: expected a finite number")))?;
        x.push(f as f32);
    }
    Ok(())
}

async fn ready(State(s): State<AppState>) -> Response {
    let n = s.repo.loaded_count();
    let code = if n > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({"ready": n > 0, "loaded_versions": n})),
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> String {
    let mut out = String::from(
        "# HELP trialflow_requests_total Predict requests by model, version and HTTP status code.\n# TYPE trialflow_requests_total counter\n",
    );
    if let Ok(m) = s.metrics.requests.lock() {
        for ((model, version, code), n) in m.iter() {
            out.push_str(&format!("trialflow_requests_total{{model=\"{model}\",version=\"{version}\",code=\"{code}\"}} {n}\n"));
        }
    }
    let sum = s.metrics.latency_us_sum.load(Ordering::Relaxed) as f64 / 1e6;
    let count = s.metrics.latency_count.load(Ordering::Relaxed);
    out.push_str(&format!(
        "# HELP trialflow_request_seconds Predict request latency.\n# TYPE trialflow_request_seconds summary\n\
         trialflow_request_seconds_sum {sum}\ntrialflow_request_seconds_count {count}\n\
         # HELP trialflow_predicted_rows_total Rows scored.\n# TYPE trialflow_predicted_rows_total counter\n\
         trialflow_predicted_rows_total {}\n\
         # HELP trialflow_loaded_versions Model versions loaded.\n# TYPE trialflow_loaded_versions gauge\n\
         trialflow_loaded_versions {}\n",
        s.metrics.rows.load(Ordering::Relaxed),
        s.repo.loaded_count()
    ));
    out
}
