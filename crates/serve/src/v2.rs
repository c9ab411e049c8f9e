//! Open Inference Protocol v2 (KServe, Seldon, Triton clients): server and model metadata, readiness, and
//! `POST /v2/models/{m}[/versions/{v}]/infer` with JSON tensors or Triton's binary tensor extension
//! (`Inference-Header-Content-Length`: a JSON header followed by raw little-endian tensor bytes).

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::input::{FEATURES_INPUT, InputLabel, Rows, Tensor, TensorData, v2_rows};
use crate::json::UniqueMap;
use crate::ops::served;
use crate::repository::{LoadedVersion, Selector};
use crate::scan::Scanner;
use crate::tfserving::{ModelPath, RestPath, lookup, parse_model_path, resolve_post};
use crate::{AppState, read_body};

const HEADER_LEN: &str = "inference-header-content-length";

pub async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "trialflow",
        "version": trialflow_core::CODE_VERSION,
        "extensions": ["binary_tensor_data", "model_repository_readonly"],
    }))
    .into_response()
}

pub async fn live() -> Response {
    axum::Json(json!({"live": true})).into_response()
}

pub async fn ready(State(s): State<AppState>) -> Response {
    let ready = s.is_ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({"ready": ready, "loaded_versions": s.repo.loaded_count()})),
    )
        .into_response()
}

fn v2_path(rest: &str) -> ApiResult<ModelPath> {
    let p = parse_model_path(rest)?;
    if matches!(p.selector, Selector::Label(_)) {
        return Err(ApiError::not_found(
            "resource: labels are a TF Serving route; use /v2/models/{model}/versions/{v}",
        ));
    }
    Ok(p)
}

pub async fn get(State(s): State<AppState>, RestPath(rest): RestPath) -> Response {
    let r = (|| -> ApiResult<Value> {
        let p = v2_path(&rest)?;
        let loaded = lookup(&s, &p)?;
        match p.tail.as_str() {
            "" => Ok(model_metadata(&s, &loaded, &p)),
            "ready" => Ok(json!({"name": loaded.model, "ready": true})),
            _ => Err(ApiError::not_found(
                "resource: expected /v2/models/{model}[/versions/{v}][/ready]",
            )),
        }
    })();
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn model_metadata(s: &AppState, loaded: &LoadedVersion, p: &ModelPath) -> Value {
    let versions: Vec<String> = match p.selector {
        Selector::Latest => s
            .repo
            .versions(&p.model)
            .iter()
            .map(u64::to_string)
            .collect(),
        _ => vec![loaded.version.to_string()],
    };
    let inputs: Vec<Value> = loaded
        .encoder
        .inputs()
        .iter()
        .map(|f| {
            json!({"name": f.name, "datatype": if f.numeric {"FP64"} else {"BYTES"}, "shape": [-1],
                   "parameters": {"required": f.required}})
        })
        .collect();
    json!({
        "name": loaded.model,
        "versions": versions,
        "platform": "trialflow_candle",
        "inputs": inputs,
        "outputs": crate::head::declared(loaded)
            .into_iter()
            .map(|(name, columns)| {
                let datatype = if name == "cluster" { "INT64" } else { "FP32" };
                json!({"name": name, "datatype": datatype, "shape": [-1, columns.map_or(-1, |c| c as i64)]})
            })
            .collect::<Vec<_>>(),
        "parameters": {
            "endpoint": loaded.card.endpoint,
            "survival_times": crate::head::default_times(&loaded.card),
            "transformed_input": {"name": FEATURES_INPUT, "datatype": "FP32", "shape": [-1, loaded.card.feature_spec.width()],
                                   "columns": loaded.card.feature_spec.columns},
        },
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    /// Sent by KServe's client; must agree with the path when present.
    #[serde(default)]
    model_name: Option<String>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    parameters: Option<UniqueMap>,
    #[serde(borrow)]
    inputs: Vec<InputTensor<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

/// Names, datatypes and texts are borrowed from the body where they hold no escapes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputTensor<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    shape: Vec<i64>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<UniqueMap>,
    #[serde(default, borrow)]
    data: Option<FlatData<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<UniqueMap>,
}

/// serde's messages quote offending values ("invalid type: string \"x\""): keep the path and the expectation.
/// A repeated key is named by its path, as a body's repeated key is everywhere else.
fn sanitize(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.inner();
    let msg = inner.to_string();
    if let Some(twice) = crate::json::duplicate_field(&path, &msg) {
        return twice;
    }
    let msg = msg.split(" at line ").next().unwrap_or_default();
    let what = match msg.find("expected") {
        Some(i) if msg.starts_with("invalid") => &msg[i..],
        _ if inner.is_syntax() || inner.is_eof() => "not valid JSON",
        _ => msg,
    };
    ApiError::bad(if path == "." {
        format!("request body: {what}")
    } else {
        format!("{path}: {what}")
    })
}

/// The request: the common body by the byte scanner ([`common_request`]); any other read once by serde
/// without tracking where it is (that costs a string per key), and a body that fails read again with the path
/// tracked, for an error that says where. A body that is UTF-8 as a whole (checked in one fast pass) is read
/// as text, so that serde_json does not check each string again.
fn infer_request(json: &[u8]) -> ApiResult<InferRequest<'_>> {
    let text = std::str::from_utf8(json).ok();
    if let Some(req) = text.and_then(common_request) {
        return Ok(req);
    }
    let first = match text {
        Some(text) => serde_json::from_str(text),
        None => serde_json::from_slice(json),
    };
    if let Ok(req) = first {
        return Ok(req);
    }
    let de = &mut serde_json::Deserializer::from_slice(json);
    Err(
        match serde_path_to_error::deserialize::<_, InferRequest>(de) {
            Err(e) => sanitize(&e),
            // the typed read stops where the object ends; the first read also refused what follows it
            Ok(_) => ApiError::bad("request body: not valid JSON (something follows the object)"),
        },
    )
}

/// The request as the typed read gives it, for the common body that [`crate::tensors`] does not take
/// (transformed `features` rows, or a body it leaves for an error): `inputs`, each with a `name`, a `shape`, a
/// `datatype` and its `data` (in any order), and optionally an `id`. Read by the byte scanner (`crate::scan`),
/// without serde_json's call per element: on a 1,000-row request of thirteen features that call was a quarter
/// of the server's instructions. Anything else is left to the typed read,
/// and so is every body with something wrong in it: this answers only with the request that read gives.
fn common_request(text: &str) -> Option<InferRequest<'_>> {
    let mut s = Scanner::new(text);
    let (mut id, mut inputs) = (None, None);
    s.skip_ws();
    s.object(|s, key| {
        match key {
            "inputs" if inputs.is_none() => inputs = Some(s.list(input_tensor)?),
            "id" if id.is_none() => id = Some(s.text()?.to_string()),
            _ => return None,
        }
        Some(())
    })?;
    s.at_end().then_some(())?;
    Some(InferRequest {
        id,
        model_name: None,
        model_version: None,
        parameters: None,
        inputs: inputs?,
        outputs: None,
    })
}

fn input_tensor<'a>(s: &mut Scanner<'a>) -> Option<InputTensor<'a>> {
    let (mut name, mut shape, mut datatype, mut data) = (None, None, None, None);
    s.object(|s, key| {
        match key {
            "name" if name.is_none() => name = Some(s.text()?),
            "datatype" if datatype.is_none() => datatype = Some(s.text()?),
            "shape" if shape.is_none() => shape = Some(s.list(Scanner::size)?),
            "data" if data.is_none() => {
                let mut elements = Vec::new();
                flat_elements(s, &mut |e| elements.push(e), 0)?;
                data = Some(elements);
            }
            _ => return None,
        }
        Some(())
    })?;
    Some(InputTensor {
        name: Cow::Borrowed(name?),
        shape: shape?,
        datatype: Cow::Borrowed(datatype?),
        parameters: None,
        data: Some(FlatData(data?)),
    })
}

/// Lists nested deeper than this are left to the typed read.
const NESTED: usize = 8;

/// A `data` list's elements, nested lists flattened row-major, as [`Flatten`] reads them (a bare scalar and an
/// object are left to it), each given to `out` in turn.
pub(crate) fn flat_elements<'a>(
    s: &mut Scanner<'a>,
    out: &mut impl FnMut(Scalar<'a>),
    depth: usize,
) -> Option<()> {
    if depth >= NESTED {
        return None;
    }
    s.eat(b'[')?;
    s.skip_ws();
    if s.eat_if(b']') {
        return Some(());
    }
    loop {
        let element = match s.peek()? {
            b'"' => Scalar::Text(Cow::Borrowed(s.text()?)),
            b'-' | b'0'..=b'9' => Scalar::Number(s.number()?),
            b'n' => s.word("null", Scalar::Null)?,
            b't' => s.word("true", Scalar::Bool(true))?,
            b'f' => s.word("false", Scalar::Bool(false))?,
            b'[' => {
                flat_elements(s, out, depth + 1)?;
                if s.end_of(b']')? {
                    return Some(());
                }
                s.skip_ws();
                continue;
            }
            _ => return None,
        };
        out(element);
        if s.end_of(b']')? {
            return Some(());
        }
        s.skip_ws();
    }
}

pub(crate) fn elem_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

/// An input's `data`: its elements in row-major order, nested lists flattened as they are read (no tree of
/// values per request). A bare scalar is one element.
#[derive(Debug)]
struct FlatData<'a>(Vec<Scalar<'a>>);

#[derive(Debug)]
pub(crate) enum Scalar<'a> {
    Number(f64),
    Text(Cow<'a, str>),
    Bool(bool),
    Null,
    /// An object: no tensor element.
    Object,
}

impl<'de: 'a, 'a> Deserialize<'de> for FlatData<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        serde::de::DeserializeSeed::deserialize(Flatten(&mut out), d)?;
        Ok(FlatData(out))
    }
}

/// Appends one value's elements to the vector it holds.
struct Flatten<'v, 'a>(&'v mut Vec<Scalar<'a>>);

impl<'de: 'a, 'a> serde::de::DeserializeSeed<'de> for Flatten<'_, 'a> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for Flatten<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of tensor elements")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Scalar::Bool(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Scalar::Number(v as f64));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(Scalar::Number(v as f64));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Scalar::Number(v));
        Ok(())
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Scalar::Text(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Scalar::Text(Cow::Owned(v.to_string())));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Scalar::Text(Cow::Owned(v)));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Scalar::Null);
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        self.0.push(Scalar::Object);
        Ok(())
    }
}

fn decode_tensor<'a>(
    t: InputTensor<'a>,
    index: usize,
    binary: &mut &'a [u8],
) -> ApiResult<Tensor<'a>> {
    let field = InputLabel {
        index,
        name: &t.name,
    };
    let mut count: usize = 1;
    for (d, dim) in t.shape.iter().enumerate() {
        if *dim < 0 {
            return Err(ApiError::bad(format!(
                "{field}.shape[{d}]: expected a non-negative size"
            )));
        }
        count = count
            .checked_mul(*dim as usize)
            .ok_or_else(|| ApiError::bad(format!("{field}.shape: too large")))?;
    }
    let datatype: &str = &t.datatype;
    if datatype != "BYTES" && elem_size(datatype).is_none() {
        return Err(ApiError::bad(format!(
            "{field}.datatype: expected BOOL, INT8…INT64, UINT8…UINT64, FP32, FP64 or BYTES (FP16/BF16 are not accepted)"
        )));
    }
    let binary_size = param(&t.parameters, "binary_data_size")
        .map(|v| {
            v.as_u64().map(|n| n as usize).ok_or_else(|| {
                ApiError::bad(format!(
                    "{field}.parameters.binary_data_size: expected a byte count"
                ))
            })
        })
        .transpose()?;
    let data = match (binary_size, t.data) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(format!(
                "{field}: give `data` or parameters.binary_data_size, not both"
            )));
        }
        (None, None) => return Err(ApiError::bad(format!("{field}.data: missing"))),
        (Some(n), None) => {
            if binary.len() < n {
                return Err(ApiError::bad(format!(
                    "{field}.parameters.binary_data_size: {n} bytes announced, {} left in the body",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(n);
            *binary = rest;
            decode_binary(datatype, mine, count, &field)?
        }
        (None, Some(FlatData(flat))) => {
            if flat.len() != count {
                return Err(ApiError::bad(format!(
                    "{field}: shape {:?} holds {count} elements but data has {}",
                    t.shape,
                    flat.len()
                )));
            }
            match datatype {
                "BYTES" => TensorData::Texts(
                    flat.into_iter()
                        .enumerate()
                        .map(|(j, v)| match v {
                            Scalar::Text(s) => Ok(Some(s)),
                            Scalar::Null => Ok(None),
                            _ => Err(ApiError::bad(format!(
                                "{field}.data[{j}]: expected a string (BYTES)"
                            ))),
                        })
                        .collect::<ApiResult<_>>()?,
                ),
                "BOOL" => TensorData::Texts(
                    flat.into_iter()
                        .enumerate()
                        .map(|(j, v)| match v {
                            Scalar::Bool(b) => Ok(Some(Cow::Borrowed(bool_text(b)))),
                            _ => Err(ApiError::bad(format!(
                                "{field}.data[{j}]: expected true or false"
                            ))),
                        })
                        .collect::<ApiResult<_>>()?,
                ),
                _ => TensorData::Numbers(
                    flat.into_iter()
                        .enumerate()
                        .map(|(j, v)| match v {
                            Scalar::Number(x) => Ok(x),
                            _ => Err(ApiError::bad(format!(
                                "{field}.data[{j}]: expected a number ({datatype})"
                            ))),
                        })
                        .collect::<ApiResult<_>>()?,
                ),
            }
        }
    };
    if data.len() != count {
        return Err(ApiError::bad(format!(
            "{field}: shape {:?} holds {count} elements but the data has {}",
            t.shape,
            data.len()
        )));
    }
    Ok(Tensor {
        name: t.name,
        shape: t.shape,
        data,
    })
}

fn decode_binary<'a>(
    datatype: &str,
    b: &'a [u8],
    count: usize,
    field: &InputLabel<'_>,
) -> ApiResult<TensorData<'a>> {
    // The shape is the client's word; the bytes are what arrived. Check one against the other before
    // allocating anything sized by the shape.
    if datatype == "BYTES" {
        // every element carries a 4-byte length prefix
        if count > b.len() / 4 {
            return Err(ApiError::bad(format!(
                "{field}: the shape declares {count} BYTES elements, {} binary bytes hold at most {}",
                b.len(),
                b.len() / 4
            )));
        }
        let mut out = Vec::with_capacity(count);
        let mut rest = b;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(ApiError::bad(format!(
                    "{field}: BYTES element {} has a truncated length prefix",
                    out.len()
                )));
            }
            let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if rest.len() < 4 + n {
                return Err(ApiError::bad(format!(
                    "{field}: BYTES element {} is shorter than its length prefix",
                    out.len()
                )));
            }
            let s = std::str::from_utf8(&rest[4..4 + n]).map_err(|_| {
                ApiError::bad(format!(
                    "{field}: BYTES element {} is not UTF-8 text",
                    out.len()
                ))
            })?;
            out.push(Some(Cow::Borrowed(s)));
            rest = &rest[4 + n..];
        }
        return Ok(TensorData::Texts(out));
    }
    let size = elem_size(datatype).unwrap_or(1);
    if count.checked_mul(size) != Some(b.len()) {
        return Err(ApiError::bad(format!(
            "{field}: {} binary bytes for {count} {datatype} elements of {size} bytes",
            b.len()
        )));
    }
    let v: Vec<f64> = b
        .chunks_exact(size)
        .map(|c| match datatype {
            "BOOL" | "UINT8" => f64::from(c[0]),
            "INT8" => f64::from(c[0] as i8),
            "INT16" => f64::from(i16::from_le_bytes([c[0], c[1]])),
            "UINT16" => f64::from(u16::from_le_bytes([c[0], c[1]])),
            "INT32" => f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "UINT32" => f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "FP32" => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "INT64" => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
            "UINT64" => u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
            _ => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
        })
        .collect();
    if datatype == "BOOL" {
        return Ok(TensorData::Texts(
            v.iter()
                .map(|x| Some(Cow::Borrowed(bool_text(*x != 0.0))))
                .collect(),
        ));
    }
    Ok(TensorData::Numbers(v))
}

/// A BOOL element as the text level a categorical feature reads.
fn bool_text(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// The answer's JSON: the keys in the order serde_json's maps keep (sorted), serialized straight from the
/// outputs (no tree of values).
#[derive(Serialize)]
struct Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    model_name: &'a str,
    model_version: String,
    outputs: Vec<Described<'a>>,
}

#[derive(Serialize)]
struct Described<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Elements<'a>>,
    datatype: &'static str,
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    shape: [usize; 2],
}

#[derive(Serialize)]
#[serde(untagged)]
enum Elements<'a> {
    Floats(&'a [f32]),
    Integers(Vec<i64>),
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// A request's, an input's or an output's `parameters[key]`, when it has parameters and that one.
fn param<'p>(params: &'p Option<UniqueMap>, key: &str) -> Option<&'p Value> {
    params.as_ref().and_then(|p| p.0.get(key))
}

fn wants_binary(params: &Option<UniqueMap>) -> Option<bool> {
    param(params, "binary_data").and_then(Value::as_bool)
}

pub async fn post(
    State(s): State<AppState>,
    RestPath(rest): RestPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let loaded = match resolve_post(
        &s,
        v2_path(&rest),
        "infer",
        "resource: expected POST /v2/models/{model}[/versions/{v}]/infer",
    ) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let result = infer(&s, &loaded, &headers, body).await;
    served(&loaded, result)
}

async fn infer(
    s: &AppState,
    loaded: &LoadedVersion,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Response, usize)> {
    let bytes = read_body(headers, body, &s.limits).await?;
    let (json_part, binary) = match headers.get(HEADER_LEN) {
        Some(v) => {
            let n = v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad("Inference-Header-Content-Length: expected a byte count")
                })?;
            if n > bytes.len() {
                return Err(ApiError::bad(format!(
                    "Inference-Header-Content-Length: {n} is larger than the body ({} bytes)",
                    bytes.len()
                )));
            }
            (&bytes[..n], &bytes[n..])
        }
        None => (&bytes[..], &[][..]),
    };
    let common = binary
        .is_empty()
        .then(|| crate::tensors::common_rows(loaded, json_part, s.limits.max_rows))
        .flatten();
    let asked = match common {
        Some((rows, id)) => Asked {
            rows,
            id,
            wanted: all_outputs(loaded, false),
            times: None,
        },
        None => asked(loaded, json_part, binary, s.limits.max_rows)?,
    };
    answer(s, loaded, asked)
}

/// What the answer needs from a request: its rows, its `id` and the outputs it carries, each in binary or
/// JSON.
#[derive(Debug)]
pub(crate) struct Asked {
    pub(crate) rows: Rows,
    pub(crate) id: Option<String>,
    pub(crate) wanted: Vec<(&'static str, bool)>,
    /// A time-to-event model's survival times, where the request asks for its own.
    pub(crate) times: Option<Vec<f64>>,
}

/// Every output the model declares, each in binary or in JSON as `binary` says: what a request that names no
/// outputs is answered with.
fn all_outputs(loaded: &LoadedVersion, binary: bool) -> Vec<(&'static str, bool)> {
    crate::head::declared(loaded)
        .iter()
        .map(|(name, _)| (*name, binary))
        .collect()
}

/// Any request, read by the typed read (or the scanner that answers as it does) and checked field by field.
pub(crate) fn asked<'a>(
    loaded: &LoadedVersion,
    json_part: &'a [u8],
    mut binary: &'a [u8],
    max_rows: usize,
) -> ApiResult<Asked> {
    let req = infer_request(json_part)?;
    if req.model_name.as_ref().is_some_and(|m| *m != loaded.model) {
        return Err(ApiError::bad(
            "model_name: does not match the model in the path",
        ));
    }
    if req
        .model_version
        .as_ref()
        .is_some_and(|v| !v.is_empty() && *v != loaded.version.to_string())
    {
        return Err(ApiError::bad(
            "model_version: does not match the version served for this path",
        ));
    }
    if req.inputs.is_empty() {
        return Err(ApiError::bad("inputs: expected at least one input tensor"));
    }
    let mut tensors = Vec::with_capacity(req.inputs.len());
    for (i, t) in req.inputs.into_iter().enumerate() {
        tensors.push(decode_tensor(t, i, &mut binary)?);
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!(
            "body: {} bytes of binary data follow the JSON header that no input claims",
            binary.len()
        )));
    }
    let default_binary = wants_binary(&req.parameters).unwrap_or(false)
        || param(&req.parameters, "binary_data_output")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let declared = crate::head::declared(loaded);
    // which outputs the answer carries (all unless the request names some), each in binary or JSON
    let mut wanted: Vec<(&'static str, bool)> = Vec::new();
    match &req.outputs {
        None => wanted = all_outputs(loaded, default_binary),
        Some(outs) => {
            if outs.is_empty() {
                return Err(ApiError::bad(
                    "outputs: expected at least one output, or leave it out",
                ));
            }
            for (i, o) in outs.iter().enumerate() {
                let Some((name, _)) = declared.iter().find(|(name, _)| *name == o.name) else {
                    let names: Vec<&str> = declared.iter().map(|(name, _)| *name).collect();
                    return Err(ApiError::bad(format!(
                        "outputs[{i}].name: unknown output; the model has `{}`",
                        names.join("`, `")
                    )));
                };
                let bin = wants_binary(&o.parameters).unwrap_or(default_binary);
                wanted.push((name, bin));
            }
        }
    }
    let times = param(&req.parameters, "times")
        .map(|t| crate::head::requested_times(&loaded.card, t, "parameters.times"))
        .transpose()?;
    let rows = v2_rows(loaded, &tensors, max_rows)?;
    Ok(Asked {
        rows,
        id: req.id,
        wanted,
        times,
    })
}

/// The answer to rows read from a request, with the outputs it asks for.
fn answer(s: &AppState, loaded: &LoadedVersion, asked: Asked) -> ApiResult<(Response, usize)> {
    let Asked {
        rows,
        id,
        wanted,
        times,
    } = asked;
    let outputs = crate::head::outputs(loaded, &rows.x, times.as_deref());
    let n = rows.n;
    let mut described = Vec::with_capacity(wanted.len());
    let mut binary_body: Vec<u8> = Vec::new();
    for (name, bin) in &wanted {
        let Some(o) = outputs.iter().find(|o| o.name == *name) else {
            continue;
        };
        let (datatype, size) = if o.integer { ("INT64", 8) } else { ("FP32", 4) };
        let data = match (*bin, o.integer) {
            (true, false) => {
                for v in &o.data {
                    binary_body.extend_from_slice(&v.to_le_bytes());
                }
                None
            }
            (true, true) => {
                for v in &o.data {
                    binary_body.extend_from_slice(&(*v as i64).to_le_bytes());
                }
                None
            }
            (false, false) => Some(Elements::Floats(&o.data)),
            (false, true) => Some(Elements::Integers(
                o.data.iter().map(|v| *v as i64).collect(),
            )),
        };
        described.push(Described {
            parameters: bin.then_some(BinarySize {
                binary_data_size: o.data.len() * size,
            }),
            data,
            datatype,
            name: o.name,
            shape: [n, o.columns],
        });
    }
    let answer = Answer {
        id,
        model_name: &loaded.model,
        model_version: loaded.version.to_string(),
        outputs: described,
    };
    let head = serde_json::to_vec(&answer).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer could not be written",
        )
    })?;
    let any_binary = wanted.iter().any(|(_, bin)| *bin);
    let mut resp = if any_binary {
        let head_len = head.len();
        let mut body = head;
        body.extend_from_slice(&binary_body);
        let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
        if let Ok(v) = HeaderValue::from_str(&head_len.to_string()) {
            r.headers_mut().insert(HEADER_LEN, v);
        }
        r
    } else {
        ([(header::CONTENT_TYPE, "application/json")], head).into_response()
    };
    crate::ops::flag_out_of_range(s, loaded, &rows, &mut resp);
    Ok((resp, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(input: Value) -> ApiResult<TensorData<'static>> {
        // the tensor borrows from its text, as from a request body
        let text: &'static str = Box::leak(input.to_string().into_boxed_str());
        let t: InputTensor = serde_json::from_str(text).unwrap();
        decode_tensor(t, 0, &mut &[][..]).map(|t| t.data)
    }

    fn numbers(d: TensorData) -> Vec<f64> {
        match d {
            TensorData::Numbers(v) => v,
            TensorData::Texts(_) => panic!("texts"),
        }
    }

    /// Whenever the byte scanner answers, the typed read gives the same request (compared by its debug
    /// text: every name, shape, datatype and element, each number's bits included); whenever the typed read
    /// refuses a body, the scanner leaves it to it. Checked on common bodies and on thousands of copies with
    /// random edits (characters replaced, removed, inserted).
    #[test]
    fn the_scanner_answers_only_with_the_typed_reads_request() {
        let bodies = [
            r#"{"inputs":[{"name":"age","shape":[3],"datatype":"FP64","data":[40,47.5,-0.0]},{"name":"arm","shape":[3,1],"datatype":"BYTES","data":[["Treatment"],["placebo"],[null]]}]}"#,
            r#"{"id":"r-1","inputs":[{"datatype":"BOOL","data":[true,false],"shape":[2],"name":"smoker"}]}"#,
            " { \"inputs\" : [ { \"name\" : \"x\" , \"shape\" : [ 2 , 2 ] ,\n\"datatype\" : \"INT32\" , \"data\" : [ [ 1 , 2 ] , [ 3 , 4e0 ] ] } ] ,\r\n\t\"id\" : \"\" } ",
            r#"{"inputs":[]}"#,
            r#"{"inputs":[{"name":"e","shape":[],"datatype":"FP32","data":[]}]}"#,
        ];
        let mut random = crate::testing::Random::new(0x2545_f491_4f6c_dd1d);
        let alphabet = br#"{}[],:" 0123456789.-eE+nultrsfa\xyzid"#;
        let (mut fast, mut refused) = (0, 0);
        let typed =
            |text: &str| serde_json::from_str::<InferRequest>(text).map(|r| format!("{r:?}"));
        for body in bodies {
            let one = common_request(body).map(|r| format!("{r:?}"));
            assert_eq!(one, Some(typed(body).unwrap()), "{body}");
            for _ in 0..1500 {
                let edited = random.edit(body.as_bytes(), alphabet);
                let text = std::str::from_utf8(&edited).unwrap();
                match (common_request(text).map(|r| format!("{r:?}")), typed(text)) {
                    (Some(one), Ok(all)) => {
                        assert_eq!(one, all, "{text}");
                        fast += 1;
                    }
                    (Some(one), Err(e)) => {
                        panic!("{text}: read as {one}, but the typed read says {e}")
                    }
                    (None, Err(_)) => refused += 1,
                    (None, Ok(_)) => {}
                }
            }
        }
        // both outcomes occur often enough for the check to mean something
        assert!(
            fast > 300 && refused > 3000,
            "{fast} answered, {refused} refused"
        );
    }

    /// What the scanner leaves to the typed read, though the typed read takes it.
    #[test]
    fn what_the_scanner_leaves_to_the_typed_read() {
        for body in [
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1],"parameters":{}}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1]}],"outputs":[{"name":"probability"}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1]}],"model_name":"m"}"#,
            r#"{"inputs":[{"name":"\u0078","shape":[1],"datatype":"FP64","data":[1]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP64","data":[1]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":1}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1e23]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[[[[[[[[[1]]]]]]]]]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64"}]}"#,
            r#"{"id":null,"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1]}]}"#,
        ] {
            assert!(common_request(body).is_none(), "{body}");
            assert!(serde_json::from_str::<InferRequest>(body).is_ok(), "{body}");
        }
    }

    #[test]
    fn data_lists_flatten_row_major_and_each_element_is_checked_by_its_index() {
        let t = |shape: Value, data: Value, datatype: &str| json!({"name": "age", "shape": shape, "datatype": datatype, "data": data});
        let nested = decoded(t(json!([2, 2]), json!([[1, 2.5], [-3, 4]]), "FP64")).unwrap();
        assert_eq!(numbers(nested), vec![1.0, 2.5, -3.0, 4.0]);
        assert_eq!(
            numbers(decoded(t(json!([1]), json!(7), "INT64")).unwrap()),
            vec![7.0]
        );
        let texts = decoded(t(json!([3]), json!(["a", null, "c"]), "BYTES")).unwrap();
        assert!(
            matches!(&texts, TensorData::Texts(v) if v == &[Some("a".into()), None, Some("c".into())])
        );
        let bools = decoded(t(json!([2]), json!([true, false]), "BOOL")).unwrap();
        assert!(
            matches!(&bools, TensorData::Texts(v) if v == &[Some("true".into()), Some("false".into())])
        );
        for (data, datatype, message) in [
            (
                json!([[1], [{"x": 1}]]),
                "FP64",
                "inputs[0] (age).data[1]: expected a number (FP64)",
            ),
            (
                json!([1, "2"]),
                "FP32",
                "inputs[0] (age).data[1]: expected a number (FP32)",
            ),
            (
                json!(["a", 2]),
                "BYTES",
                "inputs[0] (age).data[1]: expected a string (BYTES)",
            ),
            (
                json!([true, 1]),
                "BOOL",
                "inputs[0] (age).data[1]: expected true or false",
            ),
            (
                json!([[1, 2], [3]]),
                "FP64",
                "inputs[0] (age): shape [2, 2] holds 4 elements but data has 3",
            ),
        ] {
            let shape = if message.contains("shape") {
                json!([2, 2])
            } else {
                json!([2])
            };
            let e = decoded(t(shape, data, datatype)).err().unwrap();
            assert_eq!(e.message, message);
        }
    }
}
