//! JSON bodies with every object's keys unique. serde_json keeps the last of two equal keys, and a client (or
//! a proxy that read the first) would never know which value was scored; here a repeated key is an error
//! naming it by its path (`instances[3].age`). The path is assembled only on that error, as it unwinds.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::ApiError;

/// Why a body did not parse.
#[derive(Debug)]
pub enum JsonError {
    /// A key given twice, by its path.
    Duplicate(String),
    Syntax(serde_json::Error),
}

impl JsonError {
    pub fn duplicate(path: &str) -> ApiError {
        ApiError::bad(format!("{path}: the key is given twice"))
    }
}

/// Parses `body` into a value, refusing a repeated key, in one pass (no second walk over the body).
pub fn parse_unique(body: &[u8]) -> Result<Value, JsonError> {
    match std::str::from_utf8(body) {
        Ok(text) => parse_unique_from(serde_json::Deserializer::from_str(text)),
        Err(_) => parse_unique_from(serde_json::Deserializer::from_slice(body)),
    }
}

/// Reading bytes, serde_json checks each string's UTF-8 on its own; a body checked whole first (one fast
/// pass) is read as text, without those checks. A body that is not UTF-8 is read as bytes, for the error
/// that says where.
fn parse_unique_from<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> Result<Value, JsonError> {
    let trail = Trail::default();
    let parsed = Build { trail: &trail }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| match trail.path() {
        Some(path) => JsonError::Duplicate(path),
        None => JsonError::Syntax(e),
    })
}

/// A free-form object in a typed request (`parameters`), with unique keys at every depth. A typed struct
/// refuses its own repeated fields (serde's derive does); this keeps the objects inside it to the same rule.
/// A repeated key fails as serde's `duplicate field` does.
#[derive(Debug, Default)]
pub struct UniqueMap(pub Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let trail = Trail::default();
        match d.deserialize_any(Build { trail: &trail }) {
            Ok(Value::Object(m)) => Ok(UniqueMap(m)),
            Ok(_) => Err(de::Error::invalid_type(
                de::Unexpected::Other("not an object"),
                &"a map",
            )),
            // The deserializer tracks where it is (serde_path_to_error's path ends at the object that
            // holds the key): the key alone completes it.
            Err(e) => match trail.repeated_key() {
                Some(key) => Err(de::Error::custom(format!("duplicate field `{key}`"))),
                None => Err(e),
            },
        }
    }
}

/// The message for a repeated key, from serde's `duplicate field `key`` error at `path` (`.` for the top),
/// when that is what `message` is.
pub fn duplicate_field(path: &str, message: &str) -> Option<ApiError> {
    let key = message
        .strip_prefix("duplicate field `")?
        .split_once('`')?
        .0;
    Some(JsonError::duplicate(&match path {
        "." => key.to_string(),
        p if p.ends_with(&format!(".{key}")) => p.to_string(),
        p => format!("{p}.{key}"),
    }))
}

enum Segment {
    Index(usize),
    Key(String),
}

/// Set when a repeated key is found; each enclosing value adds its own segment as the error unwinds.
#[derive(Default)]
struct Trail(RefCell<Option<Vec<Segment>>>);

impl Trail {
    fn found(&self, key: String) {
        *self.0.borrow_mut() = Some(vec![Segment::Key(key)]);
    }

    fn enclose(&self, s: Segment) {
        if let Some(path) = self.0.borrow_mut().as_mut() {
            path.push(s);
        }
    }

    /// The repeated key itself, without the path to it.
    fn repeated_key(&self) -> Option<String> {
        match self.0.borrow_mut().take()?.into_iter().next()? {
            Segment::Key(k) => Some(k),
            Segment::Index(_) => None,
        }
    }

    fn path(&self) -> Option<String> {
        let segments = self.0.borrow_mut().take()?;
        let mut out = String::new();
        for s in segments.iter().rev() {
            match s {
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
            }
        }
        Some(out)
    }
}

fn duplicate<E: de::Error>() -> E {
    E::custom("a key is given twice")
}

/// Keys an object gathers as a list before it becomes a map (see `visit_map`).
const SMALL_OBJECT: usize = 32;

/// Builds a `serde_json::Value`.
#[derive(Clone, Copy)]
struct Build<'t> {
    trail: &'t Trail,
}

impl<'de> DeserializeSeed<'de> for Build<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Build<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // the hint is the client's to give: capped, so that it cannot size an allocation
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return Ok(Value::Array(out)),
                Err(e) => {
                    self.trail.enclose(Segment::Index(out.len()));
                    return Err(e);
                }
            }
        }
    }

    /// A small object (a record's fields) is gathered as a list, each key compared with those before it,
    /// and sorted into a map once at its end: cheaper than a search and an insertion per key. Past
    /// [`SMALL_OBJECT`] keys the map takes over, so that a large object costs no more than a map.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut small: Vec<(String, Value)> = Vec::new();
        let mut large: Option<Map<String, Value>> = None;
        while let Some(k) = map.next_key::<String>()? {
            let repeated = match &large {
                Some(m) => m.contains_key(&k),
                None => small.iter().any(|(seen, _)| *seen == k),
            };
            if repeated {
                self.trail.found(k);
                return Err(duplicate());
            }
            match map.next_value_seed(self) {
                Ok(v) => match &mut large {
                    Some(m) => {
                        m.insert(k, v);
                    }
                    None if small.len() < SMALL_OBJECT => small.push((k, v)),
                    None => {
                        let mut m: Map<String, Value> = small.drain(..).collect();
                        m.insert(k, v);
                        large = Some(m);
                    }
                },
                Err(e) => {
                    self.trail.enclose(Segment::Key(k));
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(match large {
            Some(m) => m,
            None => small.into_iter().collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(body: &[u8]) -> String {
        match parse_unique(body) {
            Err(JsonError::Duplicate(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_is_named_by_its_path_and_distinct_keys_pass() {
        let body = br#"{"instances": [{"age": 1}, {"age": 2, "sex": "F", "age": 3}]}"#;
        assert_eq!(dup(body), "instances[1].age");
        assert_eq!(dup(br#"{"inputs": 1, "inputs": 2}"#), "inputs");
        assert_eq!(dup(br#"{"a\u0062": 1, "ab": 2}"#), "ab");
        // the same key in sibling objects is fine, and the value is the one serde_json builds
        let ok =
            br#"{"a": {"x": 1}, "b": {"x": -1.5e3}, "c": [{"x": "y"}, {"x": null, "z": [true]}]}"#;
        assert_eq!(
            parse_unique(ok).unwrap(),
            serde_json::from_slice::<Value>(ok).unwrap()
        );
        // past the small-object list: every key kept, a repeat still found
        let many: Vec<String> = (0..3 * SMALL_OBJECT)
            .map(|i| format!("\"k{i}\": {i}"))
            .collect();
        let body = format!("{{{}}}", many.join(", "));
        assert_eq!(
            parse_unique(body.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(&body).unwrap()
        );
        for repeat in [1, SMALL_OBJECT, 2 * SMALL_OBJECT] {
            let body = format!("{{{}, \"k{repeat}\": 0}}", many.join(", "));
            assert_eq!(dup(body.as_bytes()), format!("k{repeat}"));
        }
        // syntax errors stay syntax errors, trailing bytes included
        assert!(matches!(
            parse_unique(b"{\"a\": "),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(parse_unique(b"{} x"), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn a_unique_map_refuses_a_repeated_key_at_any_depth() {
        let map = |body: &str| serde_json::from_str::<UniqueMap>(body).map(|m| m.0);
        assert_eq!(
            map(r#"{"a": {"x": 1}, "b": [{"x": 2}]}"#).unwrap(),
            serde_json::from_str::<Map<String, Value>>(r#"{"a": {"x": 1}, "b": [{"x": 2}]}"#)
                .unwrap()
        );
        let e = map(r#"{"a": 1, "b": {"x": [{"y": 1, "y": 2}]}}"#).unwrap_err();
        assert!(e.to_string().starts_with("duplicate field `y`"), "{e}");
        assert!(
            map("[1]")
                .unwrap_err()
                .to_string()
                .contains("expected a map")
        );
        let m = |path: &str, msg: &str| duplicate_field(path, msg).map(|e| e.message);
        let twice = |p: &str| Some(format!("{p}: the key is given twice"));
        assert_eq!(m(".", "duplicate field `inputs`"), twice("inputs"));
        assert_eq!(
            m("inputs[0]", "duplicate field `shape`"),
            twice("inputs[0].shape")
        );
        assert_eq!(
            m("inputs[0].shape", "duplicate field `shape`"),
            twice("inputs[0].shape")
        );
        assert_eq!(m("inputs[0]", "missing field `shape`"), None);
    }
}
