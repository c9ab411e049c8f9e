//! Request payloads → model input rows. Raw records go through the model's own feature spec
//! (`trialflow_model::Encoder`, the training transform); already-transformed rows are checked for width and
//! finiteness. Every error names the field (`instances[3].age`, `inputs[1] (sex)[0]`) and never echoes a value.

use std::borrow::Cow;

use serde_json::Value;
use trialflow_model::RawValue;

use crate::error::{ApiError, ApiResult};
use crate::repository::LoadedVersion;

/// Encoded rows, row-major, ready for the forward pass.
#[derive(Debug, Default)]
pub struct Rows {
    pub x: Vec<f32>,
    pub n: usize,
}

pub fn check_rows(n: usize, max: usize, field: &str) -> ApiResult<()> {
    if n == 0 {
        return Err(ApiError::bad(format!("{field}: expected at least one row")));
    }
    if n > max {
        return Err(ApiError::too_large(format!(
            "{field}: {n} rows exceed the limit of {max} per request (serving.max_rows)"
        )));
    }
    Ok(())
}

fn json_raw<'v>(field: &dyn std::fmt::Display, v: &'v Value) -> ApiResult<RawValue<'v>> {
    Ok(match v {
        Value::Null => RawValue::Missing,
        Value::Number(n) => RawValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => RawValue::Text(s),
        Value::Bool(b) => RawValue::Text(if *b { "true" } else { "false" }),
        _ => {
            return Err(ApiError::bad(format!(
                "{field}: expected a number, a string or null"
            )));
        }
    })
}

impl Rows {
    /// Encodes one raw record, given as its fields by position in the model's inputs (`None`: the record
    /// does not name that field); `field(name)` is how errors name a field of this record.
    pub(crate) fn push_record(
        &mut self,
        model: &LoadedVersion,
        fields: &[Option<RawValue<'_>>],
        field: &dyn Fn(&str) -> String,
    ) -> ApiResult<()> {
        // Values first: a wrong value is named even when another field is also missing.
        self.encode(model, &|k| fields[k].unwrap_or(RawValue::Missing), field)?;
        if let Some(e) = model.encoder.missing_field(&|k| fields[k].is_some()) {
            return Err(ApiError::bad(format!("{}: {}", field(&e.field), e.message)));
        }
        self.n += 1;
        Ok(())
    }

    /// Encodes one record of a request whose records all give the same fields, checked once for all of them
    /// (`Encoder::missing_field`) rather than per record; `get(k)` is the value of the model's k-th input.
    pub(crate) fn push_complete<'v>(
        &mut self,
        model: &LoadedVersion,
        get: &dyn Fn(usize) -> RawValue<'v>,
        field: &dyn Fn(&str) -> String,
    ) -> ApiResult<()> {
        self.encode(model, get, field)?;
        self.n += 1;
        Ok(())
    }

    fn encode<'v>(
        &mut self,
        model: &LoadedVersion,
        get: &dyn Fn(usize) -> RawValue<'v>,
        field: &dyn Fn(&str) -> String,
    ) -> ApiResult<()> {
        model
            .encoder
            .encode(get, &mut self.x)
            .map_err(|e| ApiError::bad(format!("{}: {}", field(&e.field), e.message)))
    }

    fn push_numeric(&mut self, width: usize, field: &str, values: &[Value]) -> ApiResult<()> {
        if values.len() != width {
            return Err(ApiError::bad(format!(
                "{field}: expected {width} numbers (a transformed feature row, see the metadata's feature_columns), got {}",
                values.len()
            )));
        }
        for (j, v) in values.iter().enumerate() {
            let f = v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| ApiError::bad(format!("{field}[{j}]: expected a finite number")))?;
            self.x.push(f as f32);
        }
        self.n += 1;
        Ok(())
    }

    pub fn push_transformed(&mut self, width: usize, field: &str, values: &[f64]) -> ApiResult<()> {
        if let Some(j) = values.iter().position(|v| !v.is_finite()) {
            return Err(ApiError::bad(format!(
                "{field}[{j}]: expected a finite number (transformed rows cannot carry missing values)"
            )));
        }
        debug_assert_eq!(values.len() % width.max(1), 0);
        self.x.extend(values.iter().map(|v| *v as f32));
        self.n += values.len() / width.max(1);
        Ok(())
    }
}

/// Numeric features that lie more than `sd` training standard deviations from the training mean in some
/// row, with how many rows: the model extrapolates there, so the caller is told (the rows are still scored).
pub fn out_of_range<'m>(model: &'m LoadedVersion, rows: &Rows, sd: f64) -> Vec<(&'m str, u64)> {
    let spec = &model.card.feature_spec;
    let width = spec.width();
    if width == 0 {
        return Vec::new();
    }
    // numeric features come first in the encoded row, already standardized
    spec.numeric
        .iter()
        .enumerate()
        .filter_map(|(j, f)| {
            let n = rows
                .x
                .chunks_exact(width)
                .filter(|r| f64::from(r[j]).abs() > sd)
                .count() as u64;
            (n > 0).then_some((f.name.as_str(), n))
        })
        .collect()
}

/// `inputs[i] (name)`: how errors name an input tensor of a v2 request; formatted only when one is named.
#[derive(Clone, Copy)]
pub struct InputLabel<'a> {
    pub index: usize,
    pub name: &'a str,
}

impl std::fmt::Display for InputLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inputs[{}] ({})", self.index, self.name)
    }
}

/// The position of the record field `name` among the model's inputs, or an error naming `field`.
fn position(model: &LoadedVersion, name: &str, field: &dyn std::fmt::Display) -> ApiResult<usize> {
    if let Some(k) = model.encoder.position(name) {
        return Ok(k);
    }
    let names: Vec<&str> = model
        .encoder
        .inputs()
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    Err(ApiError::bad(format!(
        "{field}: unknown feature; expected one of {names:?}"
    )))
}

/// A TF Serving predict request: its rows, the key the answer uses (`predictions` for rows, `outputs` for
/// columns) and, for a time-to-event model, the survival times it asks for (top-level `times`).
pub struct TfRequest {
    pub rows: Rows,
    pub key: &'static str,
    pub times: Option<Vec<f64>>,
}

/// Reads a predict body: the common `instances` body in one pass ([`crate::instances`]), any other body, and
/// every body with an error, through [`tf_rows`].
pub fn tf_request(model: &LoadedVersion, body: &[u8], max_rows: usize) -> ApiResult<TfRequest> {
    if let Some((rows, times)) = crate::instances::common_instances(model, body, max_rows) {
        return Ok(TfRequest {
            rows,
            key: "predictions",
            times,
        });
    }
    let (rows, key, times) = tf_rows(model, body, max_rows)?;
    Ok(TfRequest { rows, key, times })
}

/// TF Serving's `instances` (row objects or numeric rows) or `inputs` (columns, or numeric rows), read
/// from the whole body parsed first. Returns the rows, the response key (`predictions` or `outputs`) and the
/// requested survival times.
pub(crate) fn tf_rows(
    model: &LoadedVersion,
    body: &[u8],
    max_rows: usize,
) -> ApiResult<(Rows, &'static str, Option<Vec<f64>>)> {
    let req = crate::json::parse_unique(body).map_err(|e| match e {
        crate::json::JsonError::Duplicate(path) => crate::json::JsonError::duplicate(&path),
        crate::json::JsonError::Syntax(e) => ApiError::bad(format!(
            "request body: not valid JSON (line {}, column {}): {}",
            e.line(),
            e.column(),
            json_error_class(&e)
        )),
    })?;
    let Value::Object(req) = req else {
        return Err(ApiError::bad(
            "request body: expected a JSON object with `instances` or `inputs`",
        ));
    };
    for k in req.keys() {
        if !["instances", "inputs", "signature_name", "times"].contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "{k}: unknown top-level key; expected `instances` or `inputs` (and optionally `signature_name`, \
                 and `times` for a time-to-event model)"
            )));
        }
    }
    let times = req
        .get("times")
        .map(|t| crate::head::requested_times(&model.card, t, "times"))
        .transpose()?;
    if let Some(sig) = req.get("signature_name")
        && sig.as_str() != Some("serving_default")
    {
        return Err(ApiError::bad(
            "signature_name: the only signature is `serving_default`",
        ));
    }
    let width = model.card.feature_spec.width();
    let mut rows = Rows::default();
    match (req.get("instances"), req.get("inputs")) {
        (Some(_), Some(_)) => Err(ApiError::bad(
            "instances, inputs: send one of them, not both",
        )),
        (None, None) => Err(ApiError::bad(
            "request body: expected `instances` (rows) or `inputs` (columns)",
        )),
        (Some(instances), None) => {
            let Value::Array(items) = instances else {
                return Err(ApiError::bad("instances: expected a list of rows"));
            };
            check_rows(items.len(), max_rows, "instances")?;
            rows.x.reserve(items.len() * width);
            let mut fields: Vec<Option<RawValue>> = vec![None; model.encoder.inputs().len()];
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(rec) => {
                        fields.fill(None);
                        for (k, v) in rec {
                            let f = format_args!("instances[{i}].{k}");
                            let at = position(model, k, &f)?;
                            fields[at] = Some(json_raw(&f, v)?);
                        }
                        rows.push_record(model, &fields, &|f| format!("instances[{i}].{f}"))?;
                    }
                    Value::Array(nums) => {
                        rows.push_numeric(width, &format!("instances[{i}]"), nums)?
                    }
                    _ => {
                        return Err(ApiError::bad(format!(
                            "instances[{i}]: expected an object of named features or a list of {width} numbers"
                        )));
                    }
                }
            }
            Ok((rows, "predictions", times))
        }
        (None, Some(Value::Object(cols))) => {
            let mut n = None;
            let mut columns: Vec<(usize, &str, &Vec<Value>)> = Vec::with_capacity(cols.len());
            for (k, v) in cols {
                let at = position(model, k, &format_args!("inputs.{k}"))?;
                let Value::Array(vals) = v else {
                    return Err(ApiError::bad(format!(
                        "inputs.{k}: expected a list (one value per row)"
                    )));
                };
                match n {
                    None => n = Some(vals.len()),
                    Some(m) if m != vals.len() => {
                        return Err(ApiError::bad(format!(
                            "inputs.{k}: expected {m} values like the other inputs, got {}",
                            vals.len()
                        )));
                    }
                    _ => {}
                }
                columns.push((at, k, vals));
            }
            let n = n.unwrap_or(0);
            check_rows(n, max_rows, "inputs")?;
            let mut fields: Vec<Option<RawValue>> = vec![None; model.encoder.inputs().len()];
            for i in 0..n {
                for (at, k, vals) in &columns {
                    fields[*at] = Some(json_raw(&format_args!("inputs.{k}[{i}]"), &vals[i])?);
                }
                rows.push_record(model, &fields, &|f| format!("inputs.{f}[{i}]"))?;
            }
            Ok((rows, "outputs", times))
        }
        (None, Some(Value::Array(list))) => {
            check_rows(list.len(), max_rows, "inputs")?;
            for (i, r) in list.iter().enumerate() {
                let Value::Array(nums) = r else {
                    return Err(ApiError::bad(format!(
                        "inputs[{i}]: expected a list of {width} numbers"
                    )));
                };
                rows.push_numeric(width, &format!("inputs[{i}]"), nums)?;
            }
            Ok((rows, "outputs", times))
        }
        (None, Some(_)) => Err(ApiError::bad(
            "inputs: expected an object of feature lists or a list of numeric rows",
        )),
    }
}

/// serde_json's message for a syntax error can quote the input; keep only its class.
fn json_error_class(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "read error",
    }
}

/// One decoded tensor of an Open Inference Protocol request.
#[derive(Debug)]
pub enum TensorData<'a> {
    Numbers(Vec<f64>),
    /// Texts borrowed from the request body where they could be.
    Texts(Vec<Option<Cow<'a, str>>>),
}

impl TensorData<'_> {
    pub fn len(&self) -> usize {
        match self {
            TensorData::Numbers(v) => v.len(),
            TensorData::Texts(v) => v.len(),
        }
    }
}

/// A decoded v2 input: `name`, `shape`, data (already checked against the shape).
#[derive(Debug)]
pub struct Tensor<'a> {
    pub name: Cow<'a, str>,
    pub shape: Vec<i64>,
    pub data: TensorData<'a>,
}

/// The name of the v2 input that carries already-transformed rows `[n, width]`.
pub const FEATURES_INPUT: &str = "features";

/// v2 tensors → rows: either one `features` tensor `[n, width]`, or one tensor per raw feature, each `[n]`
/// or `[n, 1]`. In numeric tensors NaN means missing (imputed, as in training); infinities are refused.
pub fn v2_rows(model: &LoadedVersion, tensors: &[Tensor<'_>], max_rows: usize) -> ApiResult<Rows> {
    let width = model.card.feature_spec.width();
    let label = |i: usize| InputLabel {
        index: i,
        name: &tensors[i].name,
    };
    let mut rows = Rows::default();
    if let Some(i) = tensors.iter().position(|t| t.name == FEATURES_INPUT) {
        if tensors.len() > 1 {
            return Err(ApiError::bad(format!(
                "{}: send either `{FEATURES_INPUT}` alone or one input per raw feature",
                label(i)
            )));
        }
        let t = &tensors[i];
        let [n, w] = t.shape[..] else {
            return Err(ApiError::bad(format!(
                "{}.shape: expected [rows, {width}]",
                label(i)
            )));
        };
        if w as usize != width {
            return Err(ApiError::bad(format!(
                "{}.shape: expected [rows, {width}] (the transformed feature columns)",
                label(i)
            )));
        }
        check_rows(n as usize, max_rows, &label(i).to_string())?;
        let TensorData::Numbers(v) = &t.data else {
            return Err(ApiError::bad(format!(
                "{}.datatype: expected FP32 or FP64",
                label(i)
            )));
        };
        rows.push_transformed(width, &label(i).to_string(), v)?;
        return Ok(rows);
    }
    let mut n: Option<usize> = None;
    // per model input, the tensor that carries it
    let mut by_input: Vec<Option<usize>> = vec![None; model.encoder.inputs().len()];
    for (i, t) in tensors.iter().enumerate() {
        let at = position(model, &t.name, &format_args!("{}.name", label(i)))?;
        if by_input[at].replace(i).is_some() {
            return Err(ApiError::bad(format!(
                "{}.name: this input is given twice",
                label(i)
            )));
        }
        let rows_here = match t.shape[..] {
            [r] | [r, 1] => r as usize,
            _ => {
                return Err(ApiError::bad(format!(
                    "{}.shape: expected [rows] or [rows, 1] for a raw feature",
                    label(i)
                )));
            }
        };
        match n {
            None => n = Some(rows_here),
            Some(m) if m != rows_here => {
                return Err(ApiError::bad(format!(
                    "{}.shape: expected {m} rows like the other inputs",
                    label(i)
                )));
            }
            _ => {}
        }
        if let TensorData::Numbers(v) = &t.data
            && let Some(j) = v.iter().position(|x| x.is_infinite())
        {
            return Err(ApiError::bad(format!(
                "{}[{j}]: expected a finite number or NaN for missing",
                label(i)
            )));
        }
    }
    let n = n.unwrap_or(0);
    check_rows(n, max_rows, "inputs")?;
    rows.x.reserve(n * width);
    let mut fields: Vec<Option<RawValue>> = vec![None; by_input.len()];
    for r in 0..n {
        for (slot, tensor) in fields.iter_mut().zip(&by_input) {
            *slot = tensor.map(|i| match &tensors[i].data {
                TensorData::Numbers(v) if v[r].is_nan() => RawValue::Missing,
                TensorData::Numbers(v) => RawValue::Number(v[r]),
                TensorData::Texts(v) => v[r].as_deref().map_or(RawValue::Missing, RawValue::Text),
            });
        }
        let field = |f: &str| match model.encoder.position(f).and_then(|k| by_input[k]) {
            Some(i) => format!("{}[{r}]", label(i)),
            None => format!("inputs ({f})"),
        };
        rows.push_record(model, &fields, &field)?;
    }
    Ok(rows)
}
