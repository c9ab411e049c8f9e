//! Raw record → model input row, by the feature spec: derived columns, range checks, median imputation,
//! standardization, one-hot categories (a missing or unseen level encodes as all zeros).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use trialflow_core::expr::eval_numeric_with;
use trialflow_core::features::{FeatureSpec, OnInvalid, UnseenLevel, canonical_level};

/// One raw field of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Missing,
    Number(f64),
    Text(String),
}

/// A field that cannot be encoded; `field` is the record key, `message` says what was expected (no value).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn as_number(field: &str, v: &RawValue) -> Result<Option<f64>, FieldError> {
    let x = match v {
        RawValue::Missing => return Ok(None),
        RawValue::Number(x) => *x,
        RawValue::Text(s) if s.trim().is_empty() => return Ok(None),
        RawValue::Text(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| field_err(field, "expected a number"))?,
    };
    if x.is_finite() {
        Ok(Some(x))
    } else {
        Err(field_err(field, "expected a finite number"))
    }
}

fn as_level(v: &RawValue) -> Option<String> {
    match v {
        RawValue::Missing => None,
        RawValue::Text(s) if s.trim().is_empty() => None,
        RawValue::Text(s) => Some(s.clone()),
        RawValue::Number(x) if x.fract() == 0.0 && x.abs() < 1e15 => Some(format!("{}", *x as i64)),
        RawValue::Number(x) => Some(x.to_string()),
    }
}

/// What a record must carry, for request validation and the serving signature.
#[derive(Debug, Clone, PartialEq)]
pub struct InputField {
    pub name: String,
    /// Numbers, or text levels for a categorical feature.
    pub numeric: bool,
    /// A required field must be present in every record (its value may be null: then it is imputed). A
    /// derived feature is optional: absent, it is computed from its inputs.
    pub required: bool,
}

/// The record fields the spec reads, in column order: covariates, then inputs of derived features that are
/// not covariates themselves.
pub fn input_fields(spec: &FeatureSpec) -> Vec<InputField> {
    let mut out: Vec<InputField> = Vec::new();
    for f in &spec.numeric {
        out.push(InputField {
            name: f.name.clone(),
            numeric: true,
            required: f.derived.is_none(),
        });
    }
    for f in &spec.numeric {
        let Some(expr) = &f.derived else { continue };
        for c in trialflow_core::expr::columns(expr).unwrap_or_default() {
            if !out.iter().any(|i| i.name == c) {
                out.push(InputField {
                    name: c,
                    numeric: true,
                    required: false,
                });
            }
        }
    }
    for c in &spec.categorical {
        out.push(InputField {
            name: c.name.clone(),
            numeric: false,
            required: true,
        });
    }
    out
}

/// The first field a record lacks: a required feature, or an input of a derived feature the record does
/// not give itself. `has` says whether the record names a field (with any value, null included).
pub fn missing_field(spec: &FeatureSpec, has: &dyn Fn(&str) -> bool) -> Option<FieldError> {
    for f in &spec.numeric {
        match &f.derived {
            None if !has(&f.name) => {
                return Some(field_err(
                    &f.name,
                    "required feature is missing (send null for an unknown value)",
                ));
            }
            Some(expr) if !has(&f.name) => {
                for c in trialflow_core::expr::columns(expr).unwrap_or_default() {
                    if !has(&c) {
                        return Some(field_err(
                            &c,
                            format!(
                                "missing: `{}` is derived from it (send `{}` itself, or null for an unknown value)",
                                f.name, f.name
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    spec.categorical.iter().find(|c| !has(&c.name)).map(|c| {
        field_err(
            &c.name,
            "required feature is missing (send null for an unknown value)",
        )
    })
}

/// Appends the encoded row for the record behind `get` to `out`.
pub fn encode(
    spec: &FeatureSpec,
    get: &dyn Fn(&str) -> RawValue,
    out: &mut Vec<f32>,
) -> Result<(), FieldError> {
    // Values of the measured (non-derived) features, by spec position.
    let mut measured: Vec<Option<f64>> = Vec::with_capacity(spec.numeric.len());
    for f in &spec.numeric {
        measured.push(match f.derived {
            None => as_number(&f.name, &get(&f.name))?,
            Some(_) => None,
        });
    }
    for (i, f) in spec.numeric.iter().enumerate() {
        let value = match &f.derived {
            None => measured[i],
            Some(expr) => match as_number(&f.name, &get(&f.name))? {
                Some(given) => Some(given),
                None => {
                    // Inputs of the derived expression that are not covariates come from the record too.
                    let inputs =
                        trialflow_core::expr::columns(expr).map_err(|m| field_err(&f.name, m))?;
                    let mut vars: Vec<(&str, Option<f64>)> = Vec::with_capacity(inputs.len());
                    for c in &inputs {
                        let v = match spec
                            .numeric
                            .iter()
                            .position(|g| g.derived.is_none() && g.name == *c)
                        {
                            Some(j) => measured[j],
                            None => as_number(c, &get(c))?,
                        };
                        vars.push((c.as_str(), v));
                    }
                    eval_numeric_with(expr, &|name| {
                        vars.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
                    })
                    .map_err(|m| field_err(&f.name, m))?
                }
            },
        };
        let value = match value {
            Some(x) if f.min.is_some_and(|lo| x < lo) || f.max.is_some_and(|hi| x > hi) => {
                match f.on_invalid {
                    OnInvalid::Impute => None,
                    OnInvalid::Reject => {
                        return Err(field_err(
                            &f.name,
                            format!(
                                "outside the valid range [{}, {}]",
                                f.min.map(|v| v.to_string()).unwrap_or("-inf".into()),
                                f.max.map(|v| v.to_string()).unwrap_or("inf".into())
                            ),
                        ));
                    }
                }
            }
            other => other,
        };
        let x = value.unwrap_or(f.impute);
        out.push(((x - f.mean) / f.std) as f32);
    }
    for c in &spec.categorical {
        let level = as_level(&get(&c.name)).map(|l| canonical_level(&c.canonical, &l));
        if let Some(l) = &level
            && c.unseen == UnseenLevel::Error
            && !c.levels.contains(l)
        {
            // The record's level is not repeated: the message lists what the model knows.
            return Err(field_err(
                &c.name,
                format!(
                    "a level the training data never had (known: {}); preprocessing.unseen_level is `error`",
                    c.levels.join(", ")
                ),
            ));
        }
        for l in &c.levels {
            out.push(if level.as_deref() == Some(l.as_str()) {
                1.0
            } else {
                0.0
            });
        }
    }
    Ok(())
}

/// Encodes every row of `batches` (columns named as in the clean table). `rename` maps a spec field name
/// to its column name where they differ. Returns the row-major matrix and the row count.
pub fn encode_batches(
    spec: &FeatureSpec,
    batches: &[RecordBatch],
    rename: &dyn Fn(&str) -> String,
) -> Result<(Vec<f32>, usize), FieldError> {
    let mut out = Vec::new();
    let mut rows = 0;
    for b in batches {
        let errors = encode_batch(spec, b, rename, &mut out)?;
        if let Some((i, e)) = errors
            .into_iter()
            .enumerate()
            .find_map(|(i, e)| e.map(|e| (i, e)))
        {
            return Err(FieldError {
                field: e.field,
                message: format!("row {}: {}", rows + i, e.message),
            });
        }
        rows += b.num_rows();
    }
    Ok((out, rows))
}

/// Encodes each row of `batch`, appending one row per input row to `out`: a row that cannot be encoded
/// gets zeros and its error in the returned list (`None` for rows that encoded). Fails only when a column
/// cannot be read as its feature's type.
pub fn encode_batch(
    spec: &FeatureSpec,
    batch: &RecordBatch,
    rename: &dyn Fn(&str) -> String,
    out: &mut Vec<f32>,
) -> Result<Vec<Option<FieldError>>, FieldError> {
    let mut cols: BTreeMap<String, ColumnReader> = BTreeMap::new();
    let names = spec
        .numeric
        .iter()
        .map(|f| f.name.clone())
        .chain(spec.categorical.iter().map(|c| c.name.clone()))
        .chain(
            spec.numeric
                .iter()
                .filter_map(|f| f.derived.as_deref())
                .flat_map(|e| trialflow_core::expr::columns(e).unwrap_or_default()),
        );
    for name in names {
        if cols.contains_key(&name) {
            continue;
        }
        let col = rename(&name);
        let reader = match batch.column_by_name(&col) {
            None => ColumnReader::Absent,
            Some(a) => match a.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    let s = arrow::compute::cast(a, &DataType::Utf8)
                        .map_err(|e| field_err(&col, e.to_string()))?;
                    ColumnReader::Text(s)
                }
                _ => {
                    let n = arrow::compute::cast(a, &DataType::Float64)
                        .map_err(|e| field_err(&col, e.to_string()))?;
                    ColumnReader::Number(n)
                }
            },
        };
        cols.insert(name, reader);
    }
    let width = spec.width();
    let mut errors = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let get = |name: &str| {
            cols.get(name)
                .map(|c| c.get(i))
                .unwrap_or(RawValue::Missing)
        };
        let before = out.len();
        match encode(spec, &get, out) {
            Ok(()) => errors.push(None),
            Err(e) => {
                out.truncate(before);
                out.resize(before + width, 0.0);
                errors.push(Some(e));
            }
        }
    }
    Ok(errors)
}

enum ColumnReader {
    Absent,
    Text(arrow::array::ArrayRef),
    Number(arrow::array::ArrayRef),
}

impl ColumnReader {
    fn get(&self, i: usize) -> RawValue {
        match self {
            ColumnReader::Absent => RawValue::Missing,
            ColumnReader::Text(a) if a.is_null(i) => RawValue::Missing,
            ColumnReader::Number(a) if a.is_null(i) => RawValue::Missing,
            ColumnReader::Text(a) => RawValue::Text(a.as_string::<i32>().value(i).to_string()),
            ColumnReader::Number(a) => RawValue::Number(a.as_primitive::<Float64Type>().value(i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trialflow_core::features::{CategoricalFeature, NumericFeature};

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
                name: "w".into(),
                impute: 80.0,
                mean: 80.0,
                std: 20.0,
                min: Some(30.0),
                max: Some(300.0),
                on_invalid: OnInvalid::Impute,
                derived: None,
            },
            NumericFeature {
                name: "h".into(),
                impute: 1.8,
                mean: 1.7,
                std: 0.1,
                min: None,
                max: None,
                on_invalid: OnInvalid::Impute,
                derived: None,
            },
            NumericFeature {
                name: "bmi".into(),
                impute: 25.0,
                mean: 25.0,
                std: 5.0,
                min: None,
                max: None,
                on_invalid: OnInvalid::Impute,
                derived: Some("w / (h * h)".into()),
            },
        ];
        let categorical = vec![CategoricalFeature {
            name: "sex".into(),
            levels: vec!["F".into(), "M".into()],
            canonical: [
                ("female".to_string(), "F".to_string()),
                ("f".into(), "F".into()),
                ("m".into(), "M".into()),
            ]
            .into(),
            unseen: UnseenLevel::Zeros,
        }];
        let columns = FeatureSpec::build_columns(&numeric, &categorical);
        FeatureSpec {
            numeric,
            categorical,
            columns,
            train_rows: 1,
            arm_field: "arm".into(),
        }
    }

    fn enc(rec: &[(&str, RawValue)]) -> Result<Vec<f32>, FieldError> {
        let m: BTreeMap<String, RawValue> = rec
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let mut out = Vec::new();
        encode(
            &spec(),
            &|k| m.get(k).cloned().unwrap_or(RawValue::Missing),
            &mut out,
        )?;
        Ok(out)
    }

    #[test]
    fn standardizes_imputes_derives_and_one_hots() {
        let v = enc(&[
            ("age", RawValue::Number(70.0)),
            ("w", RawValue::Text("100".into())),
            ("h", RawValue::Number(2.0)),
            ("sex", RawValue::Text(" Female ".into())),
        ])
        .unwrap();
        assert_eq!(v, vec![1.0, 1.0, 3.0, 0.0, 1.0, 0.0]);
        // missing → median; out of range with impute → median; unseen level → zeros
        let v = enc(&[
            ("w", RawValue::Number(9999.0)),
            ("sex", RawValue::Text("X".into())),
        ])
        .unwrap();
        assert_eq!(v[..2], [0.0, 0.0]);
        assert_eq!(v[4..], [0.0, 0.0]);
    }

    #[test]
    fn an_unseen_level_is_refused_when_the_spec_says_error() {
        let mut strict = spec();
        strict.categorical[0].unseen = UnseenLevel::Error;
        let m: BTreeMap<String, RawValue> =
            [("sex".to_string(), RawValue::Text("X".into()))].into();
        let mut out = Vec::new();
        let e = encode(
            &strict,
            &|k| m.get(k).cloned().unwrap_or(RawValue::Missing),
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.field, "sex");
        assert!(
            e.message.contains("F, M") && !e.message.contains('X'),
            "{}",
            e.message
        );
        // known levels (any spelling) and missing values still encode
        let m: BTreeMap<String, RawValue> =
            [("sex".to_string(), RawValue::Text("female".into()))].into();
        out.clear();
        encode(
            &strict,
            &|k| m.get(k).cloned().unwrap_or(RawValue::Missing),
            &mut out,
        )
        .unwrap();
        assert_eq!(out[4..], [1.0, 0.0]);
        out.clear();
        encode(&strict, &|_| RawValue::Missing, &mut out).unwrap();
        assert_eq!(out[4..], [0.0, 0.0]);
    }

    #[test]
    fn required_fields_and_derived_inputs() {
        let names: Vec<(String, bool)> = input_fields(&spec())
            .into_iter()
            .map(|f| (f.name, f.required))
            .collect();
        assert_eq!(
            names,
            [
                ("age", true),
                ("w", true),
                ("h", true),
                ("bmi", false),
                ("sex", true)
            ]
            .map(|(n, r)| (n.to_string(), r))
        );
        let all = ["age", "w", "h", "sex"];
        assert_eq!(missing_field(&spec(), &|f| all.contains(&f)), None);
        let e = missing_field(&spec(), &|f| f != "sex").unwrap();
        assert_eq!(e.field, "sex");
        // bmi given: its inputs are still covariates here, so `h` is still required
        let e = missing_field(&spec(), &|f| f != "h").unwrap();
        assert_eq!(e.field, "h");
    }

    #[test]
    fn errors_name_the_field_not_the_value() {
        let e = enc(&[("age", RawValue::Text("sixty".into()))]).unwrap_err();
        assert_eq!(e.field, "age");
        assert!(!e.message.contains("sixty"));
        let e = enc(&[("age", RawValue::Number(250.0))]).unwrap_err();
        assert!(
            e.to_string().starts_with("age: outside the valid range"),
            "{e}"
        );
    }
}
