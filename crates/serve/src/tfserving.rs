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
    let row = |out: &mut String, o: &crate::head::Output, r: usize| {
        out.push('[');
        for (j, v) in o.data[r * o.columns..(r + 1) * o.columns]
            .iter()
            .enumerate()
        {
            if j > 0 {
                out.push(',');
            }
            push_f32(out, *v);
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
                        push_f32(&mut out, o.data[r]);
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
                        push_f32(&mut out, o.data[r]);
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

/// `v` as `Display` writes it, the shortest decimal that reads back as `v`, never with an exponent (valid
/// JSON, and the text clients have been reading), by ryu where its text is the same: the same digits, several
/// times faster than `core::fmt`.
fn push_f32(out: &mut String, v: f32) {
    if v.is_finite() && !may_tie(v) {
        let mut buf = ryu::Buffer::new();
        let text = buf.format_finite(v);
        if !text.contains('e') {
            // ryu writes a whole number with `.0`, Display without
            out.push_str(text.strip_suffix(".0").unwrap_or(text));
            return;
        }
    }
    let _ = write!(out, "{v}");
}

/// Whether `v` may lie exactly halfway between its two nearest shortest decimals, where ryu rounds to the
/// even one and Display away from zero. A midpoint has one digit more than the shortest decimal (at most 9
/// for an f32), so `v`'s exact decimal would have at most 10 significant digits; `v = m·2⁻ᶠ` with `m` odd has
/// as many as `m·5ᶠ`, more than 10 once `f ≥ 15`. So only values with at most 14 binary places (a whole
/// number, 0.5, 312985.125) are left to Display: a model's probabilities nearly never are.
fn may_tie(v: f32) -> bool {
    let bits = v.to_bits() & 0x7fff_ffff;
    let biased = (bits >> 23) as i32;
    let (m, e) = if biased == 0 {
        (bits, -149)
    } else {
        ((bits & 0x7f_ffff) | 0x80_0000, biased - 150)
    };
    m == 0 || e + m.trailing_zeros() as i32 >= -14
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

    /// The fast float text is Display's, character for character: on edge values, on random bit patterns
    /// of every magnitude and on random probabilities (what a binary model answers).
    #[test]
    fn floats_are_written_as_display_writes_them() {
        let mut random = crate::testing::Random::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || random.bits();
        let edges = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            0.5,
            0.1,
            1e-6,
            9.99e-6,
            1e-7,
            1.5e-45,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            1e13,
            1e16,
            123456.79,
            f32::from_bits(0x4898_d324), // 312985.125: a tie, 312985.12 or 312985.13
            2f32.powi(-14),
            f32::NAN,
            f32::INFINITY,
        ];
        let random_bits: Vec<f32> = (0..200_000)
            .map(|_| f32::from_bits(next() as u32))
            .collect();
        let probabilities: Vec<f32> = (0..200_000)
            .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32)
            .collect();
        for v in edges.into_iter().chain(random_bits).chain(probabilities) {
            let mut fast = String::new();
            push_f32(&mut fast, v);
            assert_eq!(fast, v.to_string(), "{:#010x}", v.to_bits());
        }
    }
}
