//! Codes as trial exports write them: a level, an event code or a missing-value token may be written in YAML
//! as a number (`event_values: [2]`) or a string (`"2"`), and an export may write `1.0` where the codebook says
//! `1`. Config keys that hold codes read any YAML scalar as text; comparisons treat two codes that both parse
//! as numbers as equal when the numbers are.

use serde::{Deserialize, Deserializer};

/// A YAML scalar read as the text a CSV cell would hold (also what the config's JSON Schema says a code is).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => format!("{f}"),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// One code (`reference: 1` or `reference: "1"`).
pub fn code<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Scalar::deserialize(d).map(Scalar::text)
}

/// A list of codes.
pub fn codes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<Scalar>::deserialize(d)?
        .into_iter()
        .map(Scalar::text)
        .collect())
}

/// An optional list of codes.
pub fn opt_codes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<Vec<Scalar>>::deserialize(d)?.map(|v| v.into_iter().map(Scalar::text).collect()))
}

/// A map from code to code (`synonyms: {0: "no", 1: "yes"}`).
pub fn code_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    // YAML keys may be numbers; a map of scalars to scalars reads both sides.
    let pairs = serde_yaml_ng::Mapping::deserialize(d)?;
    pairs
        .into_iter()
        .map(|(k, v)| Ok((scalar_text(k)?, scalar_text(v)?)))
        .collect()
}

fn scalar_text<E: serde::de::Error>(v: serde_yaml_ng::Value) -> Result<String, E> {
    use serde_yaml_ng::Value;
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(match n.as_i64() {
            Some(i) => i.to_string(),
            None => format!("{}", n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(E::custom("expected a code: a string or a number")),
    }
}

/// The number a code stands for, when it is one (`"1"`, `"1.0"`, `" 2 "`).
pub fn number(code: &str) -> Option<f64> {
    code.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Whether `value` is `code`: the same text, or the same number when both are numbers.
pub fn same(value: &str, code: &str) -> bool {
    value == code || matches!((number(value), number(code)), (Some(a), Some(b)) if a == b)
}

/// Spellings R, SAS, Stata, Excel and hand-kept sheets use for "no value". A value that is one of these (any
/// case) and is not configured as missing is quarantined with a reason that names `missing_values`, rather
/// than read as a level or dropped as an unparseable number.
pub const MISSING_LOOKALIKES: [&str; 8] =
    ["NA", "N/A", "#N/A", "NAN", "NULL", "NONE", ".", "NA_NA"];

/// Whether `value` looks like a missing-value token (see [`MISSING_LOOKALIKES`]).
pub fn looks_missing(value: &str) -> bool {
    let v = value.trim().to_uppercase();
    MISSING_LOOKALIKES.contains(&v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, schemars::JsonSchema)]
    struct T {
        #[serde(deserialize_with = "codes")]
        c: Vec<String>,
        #[serde(deserialize_with = "code_map")]
        m: std::collections::BTreeMap<String, String>,
        #[serde(deserialize_with = "code")]
        r: String,
    }

    #[test]
    fn numbers_and_strings_read_as_the_same_codes() {
        let t: T =
            serde_yaml_ng::from_str("c: [1, \"2\", 2.5, true]\nm: {0: no, \"1\": 1}\nr: 1\n")
                .unwrap();
        assert_eq!(t.c, ["1", "2", "2.5", "true"]);
        assert_eq!(t.m.get("0").map(String::as_str), Some("no"));
        assert_eq!(t.m.get("1").map(String::as_str), Some("1"));
        assert_eq!(t.r, "1");
        assert!(same("1.0", "1") && same("2", " 2") && same("Dead", "Dead"));
        assert!(!same("1.5", "1") && !same("one", "1"));
        assert!(looks_missing(" na ") && looks_missing(".") && looks_missing("#N/A"));
        assert!(!looks_missing("N") && !looks_missing("nan-level"));
    }
}
