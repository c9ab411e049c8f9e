//! TF Serving REST API: `GET /v1/models/{m}[/versions/{v}|/labels/{l}]` (version status),
//! `GET …/metadata` (signature), `POST …:predict` with `instances` or `inputs`.

use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::input::tf_request;
use crate::ops::served;
use crate::repository::{LoadedVersion, Selector};
use crate::{AppState, read_body};

/// The path after `/v1/models/` or `/v2/models/`, percent-decoded; one that does not decode to UTF-8 is a
/// JSON 400 like every other client error (axum's own rejection is plain text).
pub struct RestPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RestPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| RestPath(p))
            .map_err(|_| ApiError::bad("path: not valid UTF-8 once percent-decoded"))
    }
}

/// A parsed model path: `m`, `m/versions/{v}`, `m/labels/{l}`, then an optional `/{tail}`.
#[derive(Debug, PartialEq, Eq)]
pub struct ModelPath {
    pub model: String,
    pub selector: Selector,
    pub tail: String,
}

pub fn parse_model_path(rest: &str) -> ApiResult<ModelPath> {
    let (model, after) = rest.split_once('/').unwrap_or((rest, ""));
    if !trialflow_core::config::is_model_name(model) {
        return Err(ApiError::bad(
            "model: expected a model name of letters, digits, `_`, `-` or `.` (not a path)",
        ));
    }
    let (selector, tail) = if let Some(r) = after.strip_prefix("versions/") {
        let (v, tail) = r.split_once('/').unwrap_or((r, ""));
        let v = v
            .parse::<u64>()
            .map_err(|_| ApiError::bad("version: expected a non-negative integer"))?;
        (Selector::Version(v), tail)
    } else if let Some(r) = after.strip_prefix("labels/") {
        let (l, tail) = r.split_once('/').unwrap_or((r, ""));
        if !trialflow_core::config::is_model_name(l) {
            return Err(ApiError::bad(
                "label: expected letters, digits, `_`, `-` or `.`",
            ));
        }
        (Selector::Label(l.to_string()), tail)
    } else {
        (Selector::Latest, after)
    };
    Ok(ModelPath {
        model: model.to_string(),
        selector,
        tail: tail.to_string(),
    })
}

/// The version a POST addresses: the path must parse and end in `tail`, else 404 with `usage`.
pub fn resolve_post(
    s: &AppState,
    path: ApiResult<ModelPath>,
    tail: &str,
    usage: &str,
) -> ApiResult<std::sync::Arc<LoadedVersion>> {
    let p = path?;
    if p.tail != tail {
        return Err(ApiError::not_found(usage));
    }
    lookup(s, &p)
}

pub fn lookup(s: &AppState, p: &ModelPath) -> ApiResult<std::sync::Arc<LoadedVersion>> {
    s.repo
        .get(&p.model, &p.selector)
        .map_err(|e| ApiError::not_found(e.to_string()))
}

pub async fn get(State(s): State<AppState>, RestPath(rest): RestPath) -> Response {
    match get_inner(&s, &rest) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn get_inner(s: &AppState, rest: &str) -> ApiResult<Value> {
    let p = parse_model_path(rest)?;
    let loaded = lookup(s, &p)?;
    match p.tail.as_str() {
        "" => {
            let versions = match p.selector {
                Selector::Latest => s.repo.versions(&p.model),
                _ => vec![loaded.version],
            };
            let status: Vec<Value> = versions
                .iter()
                .rev()
                .map(|v| {
                    json!({"version": v.to_string(), "state": "AVAILABLE",
                           "status": {"error_code": "OK", "error_message": ""}})
                })
                .collect();
            Ok(json!({ "model_version_status": status }))
        }
        "metadata" => Ok(metadata(&loaded, &s.repo.labels_of(&p.model))),
        _ => Err(ApiError::not_found(
            "resource: expected /v1/models/{model}[/versions/{v}|/labels/{l}][/metadata]",
        )),
    }
}

fn metadata(loaded: &LoadedVersion, labels: &std::collections::BTreeMap<String, u64>) -> Value {
    let spec = &loaded.card.feature_spec;
    let mut inputs = Map::new();
    for f in loaded.encoder.inputs() {
        let mut info = Map::new();
        info.insert(
            "dtype".into(),
            json!(if f.numeric { "DT_DOUBLE" } else { "DT_STRING" }),
        );
        info.insert("tensor_shape".into(), json!({"dim": [{"size": "-1"}]}));
        info.insert("required".into(), json!(f.required));
        if let Some(n) = spec.numeric.iter().find(|n| n.name == f.name) {
            info.insert("valid_range".into(), json!([n.min, n.max]));
            if let Some(d) = &n.derived {
                info.insert("derived_from".into(), json!(d));
            }
        }
        if let Some(c) = spec.categorical.iter().find(|c| c.name == f.name) {
            info.insert("levels".into(), json!(c.levels));
        }
        inputs.insert(f.name.clone(), Value::Object(info));
    }
    let mut outputs = Map::new();
    for (name, columns) in crate::head::declared(loaded) {
        let columns = columns.map_or("-1".to_string(), |c| c.to_string());
        outputs.insert(
            name.into(),
            json!({"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": columns}]}}),
        );
    }
    json!({
        "model_spec": {"name": loaded.model, "signature_name": "", "version": loaded.version.to_string()},
        "metadata": {"signature_def": {"signature_def": {"serving_default": {
            "inputs": inputs,
            "outputs": outputs,
            "method_name": "tensorflow/serving/predict",
            "feature_columns": spec.columns,
        }}}},
        "labels": labels,
        "endpoint": loaded.card.endpoint,
        "survival_times": crate::head::default_times(&loaded.card),
        "training": {
            "metrics": loaded.card.metrics,
            "data_fingerprint": loaded.card.data_fingerprint,
            "config_fingerprint": loaded.card.config_fingerprint,
            "code_version": loaded.card.code_version,
        },
    })
}

pub async fn post(
    State(s): State<AppState>,
    RestPath(rest): RestPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(path) = rest.strip_suffix(":predict") else {
        let what = if rest.ends_with(":classify") || rest.ends_with(":regress") {
            "method: only :predict is served (classify and regress need tf.Example signatures)"
        } else {
            "resource: expected POST /v1/models/{model}[/versions/{v}|/labels/{l}]:predict"
        };
        return ApiError::not_found(what).into_response();
    };
    let loaded = match resolve_post(
        &s,
        parse_model_path(path),
        "",
        "resource: expected POST /v1/models/{model}[/versions/{v}|/labels/{l}]:predict",
    ) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let result = predict(&s, &loaded, &headers, body).await;
    served(&loaded, result)
}

async fn predict(
    s: &AppState,
    loaded: &LoadedVersion,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Response, usize)> {
    let bytes = read_body(headers, body, &s.limits).await?;
    let req = tf_request(loaded, &bytes, s.limits.max_rows)?;
    let rows = req.rows;
    let outputs = crate::head::outputs(loaded, &rows.x, req.times.as_deref());
    let out = render(&outputs, rows.n, req.key);
    let mut resp = (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response();
    crate::ops::flag_out_of_range(s, loaded, &rows, &mut resp);
    Ok((resp, rows.n))
}

/// The answer's JSON. One output keeps TF Serving's single-output shape, `{"predictions": [[v], …]}` (or
/// `"outputs"`); several are named per row, `{"predictions": [{"risk_score": r, "survival": [s…]}, …]}`, or per
/// column, `{"outputs": {"risk_score": [r…], "survival": [[s…], …]}}`, as TF Serving answers a signature with
/// several outputs.
fn render(outputs: &[crate::head::Output], n: usize, key: &str) -> String {
    // Display prints the shortest round-trip decimal, never an exponent: valid JSON.
    let row = |out: &mut String, o: &crate::head::Output, r: usize| {
        out.push('[');
        for (j, v) in o.data[r * o.columns..(r + 1) * o.columns]
            .iter()
            .enumerate()
        {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "{v}");
        }
        out.push(']');
    };
    let mut out = String::with_capacity(16 + n * 16 * outputs.len());
    let _ = write!(out, "{{\"{key}\":");
    match outputs {
        [one] => {
            out.push('[');
            for r in 0..n {
                if r > 0 {
                    out.push(',');
                }
                row(&mut out, one, r);
            }
            out.push(']');
        }
        _ if key == "predictions" => {
            out.push('[');
            for r in 0..n {
                out.push_str(if r > 0 { ",{" } else { "{" });
                for (k, o) in outputs.iter().enumerate() {
                    let _ = write!(out, "{}\"{}\":", if k > 0 { "," } else { "" }, o.name);
                    if o.columns == 1 {
                        let _ = write!(out, "{}", o.data[r]);
                    } else {
                        row(&mut out, o, r);
                    }
                }
                out.push('}');
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for (k, o) in outputs.iter().enumerate() {
                let _ = write!(out, "{}\"{}\":[", if k > 0 { "," } else { "" }, o.name);
                for r in 0..n {
                    if r > 0 {
                        out.push(',');
                    }
                    if o.columns == 1 {
                        let _ = write!(out, "{}", o.data[r]);
                    } else {
                        row(&mut out, o, r);
                    }
                }
                out.push(']');
            }
            out.push('}');
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_paths() {
        let p = parse_model_path("m/versions/3/metadata").unwrap();
        assert_eq!(
            (p.model.as_str(), &p.selector, p.tail.as_str()),
            ("m", &Selector::Version(3), "metadata")
        );
        let p = parse_model_path("m/labels/stable").unwrap();
        assert_eq!(p.selector, Selector::Label("stable".into()));
        assert_eq!(parse_model_path("m").unwrap().selector, Selector::Latest);
        for bad in ["..", "../etc", "", "m/versions/x", "m/labels/..", "a b"] {
            let e = parse_model_path(bad).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
