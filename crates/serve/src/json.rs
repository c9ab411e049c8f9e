//! A pass over a JSON body that refuses an object with the same key twice. serde_json keeps the last
//! value and a client (or a proxy that read the first) would never know which one was scored.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{ApiError, ApiResult};

/// Fails naming the first repeated key by its path (`instances[3].age`). Syntax errors are left to the
/// parser that follows, which names them better.
pub fn reject_duplicate_keys(body: &[u8]) -> ApiResult<()> {
    let mut path = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    match (Walk { path: &mut path }).deserialize(&mut de) {
        Err(e) if e.is_data() => Err(ApiError::bad(e_message(&e))),
        _ => Ok(()),
    }
}

/// The message without serde_json's position suffix, which the path replaces.
fn e_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

enum Segment<'de> {
    Index(usize),
    Key(Cow<'de, str>),
}

fn render(path: &[Segment<'_>], key: &str) -> String {
    let mut out = String::new();
    for s in path {
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
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(key);
    out
}

struct Walk<'p, 'de> {
    path: &'p mut Vec<Segment<'de>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            self.path.push(Segment::Index(i));
            let more = seq.next_element_seed(Walk { path: self.path })?;
            self.path.pop();
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Key(k)) = map.next_key()? {
            if seen.contains(&k) {
                return Err(de::Error::custom(format!(
                    "{}: the key is given twice",
                    render(self.path, &k)
                )));
            }
            self.path.push(Segment::Key(k.clone()));
            map.next_value_seed(Walk { path: self.path })?;
            self.path.pop();
            seen.insert(k);
        }
        Ok(())
    }
}

/// An object key, borrowed from the body unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_named_by_its_path_and_distinct_keys_pass() {
        let e = reject_duplicate_keys(
            br#"{"instances": [{"age": 1}, {"age": 2, "sex": "F", "age": 3}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.message, "instances[1].age: the key is given twice");
        let e = reject_duplicate_keys(br#"{"inputs": 1, "inputs": 2}"#).unwrap_err();
        assert_eq!(e.message, "inputs: the key is given twice");
        // the same key in sibling objects, and an escaped spelling of a different key, are fine
        reject_duplicate_keys(br#"{"a": {"x": 1}, "b": {"x": 1}, "c": [{"x": 1}, {"x": 2}]}"#)
            .unwrap();
        let e = reject_duplicate_keys(br#"{"a\u0062": 1, "ab": 2}"#).unwrap_err();
        assert_eq!(e.message, "ab: the key is given twice");
        // syntax errors are for the parser that follows
        reject_duplicate_keys(b"{\"a\": ").unwrap();
    }
}
