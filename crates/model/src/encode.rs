//! Raw record → model input row, by the feature spec: derived columns, range checks, median imputation,
//! standardization, one-hot categories (a missing or unseen level encodes as all zeros).

use std::borrow::Cow;
use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use trialflow_core::expr::Compiled;
use trialflow_core::features::{FeatureSpec, OnInvalid, UnseenLevel};

/// One raw field of a record, its text borrowed from wherever the record is held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue<'a> {
    Missing,
    Number(f64),
    Text(&'a str),
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

/// Numeric features (or derived features' inputs) a record's values are gathered for on the stack.
const SMALL: usize = 32;

/// `n` empty values: the first `n` of `on_stack` when they fit, else `on_heap` grown to `n`.
fn scratch<'b>(
    n: usize,
    on_stack: &'b mut [Option<f64>; SMALL],
    on_heap: &'b mut Vec<Option<f64>>,
) -> &'b mut [Option<f64>] {
    if n <= SMALL {
        &mut on_stack[..n]
    } else {
        on_heap.resize(n, None);
        on_heap
    }
}

/// A categorical feature with at most this many spellings is looked up in a list, not a map.
const FEW_SPELLINGS: usize = 16;

/// Categorical text up to this many bytes is lower-cased on the stack.
const SHORT_TEXT: usize = 64;

fn as_number(field: &str, v: &RawValue) -> Result<Option<f64>, FieldError> {
    let x = match v {
        RawValue::Missing => return Ok(None),
        RawValue::Number(x) => *x,
        RawValue::Text(s) => match trim(s) {
            "" => return Ok(None),
            t => t
                .parse::<f64>()
                .map_err(|_| field_err(field, "expected a number"))?,
        },
    };
    if x.is_finite() {
        Ok(Some(x))
    } else {
        Err(field_err(field, "expected a finite number"))
    }
}

/// `s.trim()`, without decoding characters from both ends when `s` starts and ends with a visible ASCII
/// character: no whitespace, Unicode's included, is one.
fn trim(s: &str) -> &str {
    let visible = |b: &u8| (0x21..0x7f).contains(b);
    let bytes = s.as_bytes();
    if bytes.first().is_some_and(visible) && bytes.last().is_some_and(visible) {
        s
    } else {
        s.trim()
    }
}

fn as_level<'a>(v: &RawValue<'a>) -> Option<Cow<'a, str>> {
    match *v {
        RawValue::Missing => None,
        RawValue::Text(s) if trim(s).is_empty() => None,
        RawValue::Text(s) => Some(Cow::Borrowed(s)),
        RawValue::Number(x) if x.fract() == 0.0 && x.abs() < 1e15 => {
            Some(Cow::Owned(format!("{}", x as i64)))
        }
        RawValue::Number(x) => Some(Cow::Owned(x.to_string())),
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

/// The feature spec made ready to encode record after record: each feature's place among the record's
/// fields ([`input_fields`]), derived expressions compiled once. Serving builds one per loaded model; the
/// fields are then found by position, not by name.
#[derive(Debug, Clone)]
pub struct Encoder {
    spec: FeatureSpec,
    inputs: Vec<InputField>,
    /// Each input's position by name: a request names every field it sends.
    by_name: HashMap<String, usize, foldhash::fast::RandomState>,
    numeric: Vec<NumericPlan>,
    categorical: Vec<CategoricalPlan>,
}

/// A categorical feature's field and its levels resolved ahead: the text a record sends is looked up once,
/// instead of going through the synonyms and then comparing with each level.
#[derive(Debug, Clone)]
struct CategoricalPlan {
    input: usize,
    /// Each lower-cased spelling of the dataset rules → the position of its canonical level among the
    /// train levels (`None`: a level the training data never had).
    spellings: HashMap<String, Option<usize>, foldhash::fast::RandomState>,
    /// The same spellings as a list when there are few (a trial's arms, sexes, yes and no): for ASCII text a
    /// handful of length checks and byte comparisons find one faster than a hash of a lower-cased copy.
    few: Option<Vec<(String, Option<usize>)>>,
    /// Per one-hot column, the first position of its level: what a found position is compared with, so
    /// that a level listed twice sets both of its columns, as comparing texts does.
    first: Vec<usize>,
}

impl CategoricalPlan {
    fn new(input: usize, c: &trialflow_core::features::CategoricalFeature) -> Self {
        let position = |level: &str| c.levels.iter().position(|l| l == level);
        let spellings: HashMap<_, _, _> = c
            .canonical
            .iter()
            .map(|(spelling, level)| (spelling.clone(), position(level)))
            .collect();
        Self {
            input,
            few: (spellings.len() <= FEW_SPELLINGS)
                .then(|| spellings.iter().map(|(k, v)| (k.clone(), *v)).collect()),
            spellings,
            first: c
                .levels
                .iter()
                .map(|l| position(l).unwrap_or_default())
                .collect(),
        }
    }

    /// The position of `raw`'s level among the train levels: as [`canonical_level_ref`] resolves it (a
    /// spelling of the rules, matched whatever its case, or the trimmed text itself), then compared exactly.
    fn level(&self, c: &trialflow_core::features::CategoricalFeature, raw: &str) -> Option<usize> {
        let t = trim(raw);
        if !self.spellings.is_empty() {
            let found = if let Some(few) = self.few.as_ref().filter(|_| t.is_ascii()) {
                // the ASCII lower case of `t` equals the spelling: what the lookups below find
                few.iter()
                    .find(|(spelling, _)| {
                        spelling.len() == t.len()
                            && spelling
                                .bytes()
                                .zip(t.bytes())
                                .all(|(s, b)| b.to_ascii_lowercase() == s)
                    })
                    .map(|(_, at)| at)
            } else if t.is_ascii() && !t.bytes().any(|b| b.is_ascii_uppercase()) {
                self.spellings.get(t)
            } else if t.is_ascii() && t.len() <= SHORT_TEXT {
                // short ASCII text lower-cased on the stack, not in a new string
                let mut lower = [0u8; SHORT_TEXT];
                lower[..t.len()].copy_from_slice(t.as_bytes());
                lower[..t.len()].make_ascii_lowercase();
                std::str::from_utf8(&lower[..t.len()])
                    .ok()
                    .and_then(|l| self.spellings.get(l))
            } else {
                self.spellings.get(&t.to_lowercase())
            };
            if let Some(at) = found {
                return *at;
            }
        }
        c.levels.iter().position(|l| l == t)
    }
}

#[derive(Debug, Clone)]
struct NumericPlan {
    /// The feature's own field (a derived feature may be given as it is).
    input: usize,
    derived: Option<DerivedPlan>,
}

#[derive(Debug, Clone)]
struct DerivedPlan {
    expr: Compiled,
    /// Where each of the expression's columns comes from, in its column order.
    args: Vec<Arg>,
}

#[derive(Debug, Clone, Copy)]
enum Arg {
    /// A measured numeric feature (by spec position), read before any derivation.
    Measured(usize),
    /// A record field that is not a measured feature.
    Field(usize),
}

impl Encoder {
    /// An error names a derived feature whose expression this evaluator does not compute (config
    /// validation refuses those before any spec is written).
    pub fn new(spec: &FeatureSpec) -> Result<Self, FieldError> {
        let inputs = input_fields(spec);
        let position = |name: &str| inputs.iter().position(|i| i.name == name);
        let mut numeric = Vec::with_capacity(spec.numeric.len());
        for f in &spec.numeric {
            let input =
                position(&f.name).ok_or_else(|| field_err(&f.name, "not a record field"))?;
            let derived = match &f.derived {
                None => None,
                Some(sql) => {
                    let expr = Compiled::new(sql).map_err(|m| field_err(&f.name, m))?;
                    let args = expr
                        .columns()
                        .iter()
                        .map(|c| {
                            match spec
                                .numeric
                                .iter()
                                .position(|g| g.derived.is_none() && g.name == *c)
                            {
                                Some(j) => Ok(Arg::Measured(j)),
                                None => position(c)
                                    .map(Arg::Field)
                                    .ok_or_else(|| field_err(c, "not a record field")),
                            }
                        })
                        .collect::<Result<_, _>>()?;
                    Some(DerivedPlan { expr, args })
                }
            };
            numeric.push(NumericPlan { input, derived });
        }
        let categorical = spec
            .categorical
            .iter()
            .map(|c| {
                position(&c.name)
                    .map(|at| CategoricalPlan::new(at, c))
                    .ok_or_else(|| field_err(&c.name, "not a record field"))
            })
            .collect::<Result<_, _>>()?;
        // reversed, so that the first of two equal names (there are none in a valid spec) keeps its place
        let by_name = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(k, i)| (i.name.clone(), k))
            .collect();
        Ok(Self {
            spec: spec.clone(),
            by_name,
            inputs,
            numeric,
            categorical,
        })
    }

    /// The record fields, in the order [`Encoder::encode`] reads them by position.
    pub fn inputs(&self) -> &[InputField] {
        &self.inputs
    }

    /// The position of the field `name`, when the spec reads it.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The first field a record lacks: a required feature, or an input of a derived feature the record
    /// does not give itself. `has(position)` says whether the record names that field (with any value,
    /// null included).
    pub fn missing_field(&self, has: &dyn Fn(usize) -> bool) -> Option<FieldError> {
        for (f, plan) in self.spec.numeric.iter().zip(&self.numeric) {
            if has(plan.input) {
                continue;
            }
            let Some(d) = &plan.derived else {
                return Some(field_err(
                    &f.name,
                    "required feature is missing (send null for an unknown value)",
                ));
            };
            for (c, arg) in d.expr.columns().iter().zip(&d.args) {
                let given = match *arg {
                    Arg::Measured(j) => has(self.numeric[j].input),
                    Arg::Field(k) => has(k),
                };
                if !given {
                    return Some(field_err(
                        c,
                        format!(
                            "missing: `{}` is derived from it (send `{}` itself, or null for an unknown value)",
                            f.name, f.name
                        ),
                    ));
                }
            }
        }
        self.spec
            .categorical
            .iter()
            .zip(&self.categorical)
            .find(|(_, plan)| !has(plan.input))
            .map(|(c, _)| {
                field_err(
                    &c.name,
                    "required feature is missing (send null for an unknown value)",
                )
            })
    }

    /// Appends the encoded row of the record whose field at each position is `get(position)` to `out`.
    pub fn encode<'a>(
        &self,
        get: &dyn Fn(usize) -> RawValue<'a>,
        out: &mut Vec<f32>,
    ) -> Result<(), FieldError> {
        let spec = &self.spec;
        // Values of the measured (non-derived) features, by spec position; on the stack for the usual
        // handful of features.
        let (mut on_stack, mut on_heap) = ([None; SMALL], Vec::new());
        let measured = scratch(spec.numeric.len(), &mut on_stack, &mut on_heap);
        for ((f, plan), m) in spec
            .numeric
            .iter()
            .zip(&self.numeric)
            .zip(measured.iter_mut())
        {
            if plan.derived.is_none() {
                *m = as_number(&f.name, &get(plan.input))?;
            }
        }
        for (i, (f, plan)) in spec.numeric.iter().zip(&self.numeric).enumerate() {
            let value = match &plan.derived {
                None => measured[i],
                Some(d) => match as_number(&f.name, &get(plan.input))? {
                    Some(given) => Some(given),
                    None => {
                        let (mut on_stack, mut on_heap) = ([None; SMALL], Vec::new());
                        let vars = scratch(d.args.len(), &mut on_stack, &mut on_heap);
                        for ((c, arg), v) in
                            d.expr.columns().iter().zip(&d.args).zip(vars.iter_mut())
                        {
                            *v = match *arg {
                                Arg::Measured(j) => measured[j],
                                Arg::Field(k) => as_number(c, &get(k))?,
                            };
                        }
                        d.expr.eval(vars)
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
        for (c, plan) in spec.categorical.iter().zip(&self.categorical) {
            let raw = as_level(&get(plan.input));
            let level = raw.as_deref().map(|l| plan.level(c, l));
            if level == Some(None) && c.unseen == UnseenLevel::Error {
                // The record's level is not repeated: the message lists what the model knows.
                return Err(field_err(
                    &c.name,
                    format!(
                        "a level the training data never had (known: {}); preprocessing.unseen_level is `error`",
                        c.levels.join(", ")
                    ),
                ));
            }
            let at = level.flatten();
            out.extend(
                plan.first
                    .iter()
                    .map(|&f| if Some(f) == at { 1.0 } else { 0.0 }),
            );
        }
        Ok(())
    }
}

/// Encodes every row of `batches` (columns named as in the clean table). `rename` maps a spec field name
/// to its column name where they differ. Returns the row-major matrix and the row count.
pub fn encode_batches(
    spec: &FeatureSpec,
    batches: &[RecordBatch],
    rename: &dyn Fn(&str) -> String,
) -> Result<(Vec<f32>, usize), FieldError> {
    let encoder = Encoder::new(spec)?;
    let mut out = Vec::new();
    let mut rows = 0;
    for b in batches {
        let errors = encode_batch(&encoder, b, rename, &mut out)?;
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
    encoder: &Encoder,
    batch: &RecordBatch,
    rename: &dyn Fn(&str) -> String,
    out: &mut Vec<f32>,
) -> Result<Vec<Option<FieldError>>, FieldError> {
    let mut cols: Vec<ColumnReader> = Vec::with_capacity(encoder.inputs().len());
    for input in encoder.inputs() {
        let col = rename(&input.name);
        cols.push(match batch.column_by_name(&col) {
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
        });
    }
    let width = encoder.spec.width();
    let mut errors = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let before = out.len();
        match encoder.encode(&|k| cols[k].get(i), out) {
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
    fn get(&self, i: usize) -> RawValue<'_> {
        match self {
            ColumnReader::Absent => RawValue::Missing,
            ColumnReader::Text(a) if a.is_null(i) => RawValue::Missing,
            ColumnReader::Number(a) if a.is_null(i) => RawValue::Missing,
            ColumnReader::Text(a) => RawValue::Text(a.as_string::<i32>().value(i)),
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

    /// Encodes the record `rec` (fields by name; absent ones missing).
    fn encode_with(
        spec: &FeatureSpec,
        rec: &[(&str, RawValue<'_>)],
    ) -> Result<Vec<f32>, FieldError> {
        let encoder = Encoder::new(spec)?;
        let values: Vec<RawValue<'_>> = encoder
            .inputs()
            .iter()
            .map(|i| {
                rec.iter()
                    .find(|(k, _)| *k == i.name)
                    .map_or(RawValue::Missing, |(_, v)| *v)
            })
            .collect();
        let mut out = Vec::new();
        encoder.encode(&|k| values[k], &mut out)?;
        Ok(out)
    }

    fn enc(rec: &[(&str, RawValue<'_>)]) -> Result<Vec<f32>, FieldError> {
        encode_with(&spec(), rec)
    }

    /// The first missing field of a record that names the fields `has` holds for.
    fn missing_field(spec: &FeatureSpec, has: &dyn Fn(&str) -> bool) -> Option<FieldError> {
        let encoder = Encoder::new(spec).unwrap();
        encoder.missing_field(&|k| has(&encoder.inputs()[k].name))
    }

    #[test]
    fn standardizes_imputes_derives_and_one_hots() {
        let v = enc(&[
            ("age", RawValue::Number(70.0)),
            ("w", RawValue::Text("100")),
            ("h", RawValue::Number(2.0)),
            ("sex", RawValue::Text(" Female ")),
        ])
        .unwrap();
        assert_eq!(v, vec![1.0, 1.0, 3.0, 0.0, 1.0, 0.0]);
        // missing → median; out of range with impute → median; unseen level → zeros
        let v = enc(&[
            ("w", RawValue::Number(9999.0)),
            ("sex", RawValue::Text("X")),
        ])
        .unwrap();
        assert_eq!(v[..2], [0.0, 0.0]);
        assert_eq!(v[4..], [0.0, 0.0]);
    }

    /// More measured features than fit on the stack, and a derived one reading the last of them: gathered
    /// on the heap, with the same results.
    #[test]
    fn many_features_are_gathered_on_the_heap() {
        let mut wide = spec();
        let template = wide.numeric[1].clone();
        for i in 0..SMALL + 8 {
            wide.numeric.push(NumericFeature {
                name: format!("x{i}"),
                min: None,
                max: None,
                ..template.clone()
            });
        }
        let last = format!("x{}", SMALL + 7);
        wide.numeric.push(NumericFeature {
            name: "twice".into(),
            min: None,
            max: None,
            derived: Some(format!("{last} * 2.0")),
            ..template
        });
        let names: Vec<String> = (0..SMALL + 8).map(|i| format!("x{i}")).collect();
        let rec: Vec<(&str, RawValue<'_>)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), RawValue::Number(i as f64)))
            .collect();
        let out = encode_with(&wide, &rec).unwrap();
        let first = spec().numeric.len();
        for i in 0..SMALL + 8 {
            assert_eq!(out[first + i], ((i as f64 - 80.0) / 20.0) as f32, "x{i}");
        }
        let twice = 2.0 * (SMALL + 7) as f64;
        assert_eq!(out[first + SMALL + 8], ((twice - 80.0) / 20.0) as f32);
    }

    /// Longer than the texts lower-cased on the stack: the allocating way, same result.
    const LONG_UPPER: &str =
        "A SPELLING OF A LEVEL LONGER THAN SIXTY-FOUR BYTES, WRITTEN IN CAPITALS";
    const LONG_LOWER: &str =
        "a spelling of a level longer than sixty-four bytes, written in capitals";

    /// A level resolved ahead (one lookup of the spelling) sets the one-hot columns that resolving it
    /// through the rules and comparing texts sets: any case, Unicode, untrimmed text, a synonym of a level
    /// the training data never had, a level listed twice, and no rules at all.
    #[test]
    fn levels_resolved_ahead_set_the_columns_the_rules_give() {
        let feature = |canonical: &[(&str, &str)]| CategoricalFeature {
            name: "sex".into(),
            levels: vec!["F".into(), "M".into(), "other".into(), "F".into()],
            canonical: canonical
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            unseen: UnseenLevel::Zeros,
        };
        let rules = [
            ("f", "F"),
            ("female", "F"),
            ("féminin", "F"),
            ("m", "M"),
            ("x", "X"),
            (LONG_LOWER, "other"),
        ];
        // past FEW_SPELLINGS the spellings are looked up in the map, not the list: both give the rules' level
        let fillers: Vec<(String, &str)> = (0..2 * FEW_SPELLINGS)
            .map(|i| (format!("filler{i}"), "other"))
            .collect();
        let many: Vec<(&str, &str)> = rules
            .iter()
            .copied()
            .chain(fillers.iter().map(|(k, v)| (k.as_str(), *v)))
            .collect();
        for c in [feature(&rules), feature(&many), feature(&[])] {
            let plan = CategoricalPlan::new(0, &c);
            assert_eq!(plan.few.is_some(), c.canonical.len() <= FEW_SPELLINGS);
            for raw in [
                "f",
                "F",
                " Female ",
                "FÉMININ",
                "m",
                "M",
                "x",
                "X",
                "other",
                "Other",
                " other",
                "",
                "?",
                LONG_UPPER,
                LONG_LOWER,
                "\u{b}f",
                "M\u{a0}",
                "\u{2003}Female\t",
                "FILLER3",
                "filler3 ",
            ] {
                let level = trialflow_core::features::canonical_level_ref(&c.canonical, raw);
                let by_text: Vec<bool> = c.levels.iter().map(|l| l == level).collect();
                let at = plan.level(&c, raw);
                let resolved: Vec<bool> = plan.first.iter().map(|&f| Some(f) == at).collect();
                assert_eq!(resolved, by_text, "{raw:?}, rules: {}", c.canonical.len());
            }
        }
    }

    #[test]
    fn the_fast_trim_is_trim() {
        for s in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{b}a",
            "a\u{c}",
            "\u{a0}a",
            "a\u{2003}",
            "\u{85}",
            "~x~",
            "\u{7f}",
            "é",
            "a é",
            "\r\n",
            "1.5",
            " 1.5\t",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
    }

    #[test]
    fn an_unseen_level_is_refused_when_the_spec_says_error() {
        let mut strict = spec();
        strict.categorical[0].unseen = UnseenLevel::Error;
        let e = encode_with(&strict, &[("sex", RawValue::Text("X"))]).unwrap_err();
        assert_eq!(e.field, "sex");
        assert!(
            e.message.contains("F, M") && !e.message.contains('X'),
            "{}",
            e.message
        );
        // known levels (any spelling) and missing values still encode
        let out = encode_with(&strict, &[("sex", RawValue::Text("female"))]).unwrap();
        assert_eq!(out[4..], [1.0, 0.0]);
        let out = encode_with(&strict, &[]).unwrap();
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
        let e = enc(&[("age", RawValue::Text("sixty"))]).unwrap_err();
        assert_eq!(e.field, "age");
        assert!(!e.message.contains("sixty"));
        let e = enc(&[("age", RawValue::Number(250.0))]).unwrap_err();
        assert!(
            e.to_string().starts_with("age: outside the valid range"),
            "{e}"
        );
    }
}
