//! The Open Inference Protocol body clients send nearly always, one tensor per raw feature
//! (`{"inputs": [{"name": "age", "shape": [n], "datatype": "FP64", "data": [...]}, ...]}`, optionally with an
//! `id`), read straight into encoded rows: no tensor structs, shapes or element lists of their own, and no
//! second pass to decode them (on a single-row request those were a third of the body's cost). As with
//! [`crate::instances`], anything else, and every body with something wrong in it, is left to the general
//! reader (`v2::infer`), so this path only ever answers with the rows and `id` that reader would have given.

use std::borrow::Cow;

use trialflow_model::RawValue;

use crate::input::{FEATURES_INPUT, Rows, check_rows};
use crate::repository::LoadedVersion;
use crate::scan::Scanner;
use crate::v2::{Scalar, elem_size, flat_elements};

/// The encoded rows of a common body, and its `id`; `None` where the general reader is to read it.
pub(crate) fn common_rows(
    model: &LoadedVersion,
    json: &[u8],
    max_rows: usize,
) -> Option<(Rows, Option<String>)> {
    let text = std::str::from_utf8(json).ok()?;
    let mut s = Scanner::new(text);
    let mut columns = Columns {
        values: Vec::new(),
        by_input: vec![None; model.encoder.inputs().len()],
        rows: None,
        max_rows,
    };
    let (mut id, mut inputs) = (None, false);
    s.skip_ws();
    s.object(|s, key| {
        match key {
            "inputs" if !inputs => {
                inputs = true;
                s.eat(b'[')?;
                loop {
                    s.skip_ws();
                    columns.tensor(s, model)?;
                    if s.end_of(b']')? {
                        break;
                    }
                }
            }
            "id" if id.is_none() => id = Some(s.text()?.to_string()),
            _ => return None,
        }
        Some(())
    })?;
    (inputs && s.at_end()).then_some(())?;
    Some((columns.encode(model)?, id))
}

/// The tensors read so far: every element as the value a record field takes, tensor after tensor, and
/// where each model input's tensor starts.
struct Columns<'a> {
    values: Vec<RawValue<'a>>,
    by_input: Vec<Option<usize>>,
    /// The rows every tensor so far holds.
    rows: Option<usize>,
    /// `serving.max_rows`.
    max_rows: usize,
}

/// The kinds of element a tensor holds, one bit each, checked against its datatype once it is known (a client
/// may send `data` before `datatype`).
const NUMBER: u8 = 1;
const TEXT: u8 = 2;
const NULL: u8 = 4;
const BOOL: u8 = 8;
/// An element no datatype takes here (a text the scanner did not borrow).
const OTHER: u8 = 16;

impl<'a> Columns<'a> {
    /// One tensor: a model input not given before, `[rows]` or `[rows, 1]` like the others, as many elements,
    /// each of its datatype.
    fn tensor(&mut self, s: &mut Scanner<'a>, model: &LoadedVersion) -> Option<()> {
        let (mut name, mut shape, mut datatype, mut data) = (None, None, None, false);
        let (from, mut kinds) = (self.values.len(), 0u8);
        // in the order clients that sort keys write them
        s.object_of(&["data", "datatype", "name", "shape"], |s, key| {
            match key {
                0 if !data => {
                    data = true;
                    let values = &mut self.values;
                    flat_elements(s, &mut |e| values.push(value(e, &mut kinds)), 0)?;
                }
                1 if datatype.is_none() => datatype = Some(s.text()?),
                2 if name.is_none() => name = Some(s.text()?),
                3 if shape.is_none() => shape = Some(raw_shape(s)?),
                _ => return None,
            }
            Some(())
        })?;
        let (name, rows, datatype) = (name?, shape?, datatype?);
        // `features` carries transformed rows, whatever the model's inputs are called
        if !data || name == FEATURES_INPUT || self.values.len() - from != rows {
            return None;
        }
        match self.rows {
            Some(r) if r != rows => return None,
            Some(_) => {}
            None => {
                // room for the other inputs' elements, so that the list is not copied as it grows: rows the body
                // holds (counted above), within the limit, before anything is sized by them
                if rows > self.max_rows {
                    return None;
                }
                self.rows = Some(rows);
                self.values
                    .reserve(rows * self.by_input.len().saturating_sub(1));
            }
        }
        let taken = match datatype {
            "BYTES" => TEXT | NULL,
            "BOOL" => BOOL,
            _ if elem_size(datatype).is_some() => NUMBER,
            _ => return None,
        };
        if kinds & !taken != 0 {
            return None;
        }
        let slot = self.by_input.get_mut(model.encoder.position(name)?)?;
        slot.replace(from).is_none().then_some(())
    }

    /// Every row through the model's encoder; a row that does not encode is the general reader's to name.
    fn encode(&self, model: &LoadedVersion) -> Option<Rows> {
        let n = self.rows?;
        check_rows(n, self.max_rows, "inputs").ok()?;
        // every row gives the inputs that have a tensor: checked once, not per row
        let given = |k: usize| self.by_input.get(k).is_some_and(Option::is_some);
        if model.encoder.missing_field(&given).is_some() {
            return None;
        }
        let mut rows = Rows::default();
        rows.x.reserve(n * model.card.feature_spec.width());
        for r in 0..n {
            let value = |k: usize| match self.by_input.get(k).copied().flatten() {
                Some(from) => self
                    .values
                    .get(from + r)
                    .copied()
                    .unwrap_or(RawValue::Missing),
                None => RawValue::Missing,
            };
            rows.push_complete(model, &value, &|f| f.to_string()).ok()?;
        }
        Some(rows)
    }
}

/// A shape of one raw feature, `[rows]` or `[rows, 1]`: its rows.
fn raw_shape(s: &mut Scanner<'_>) -> Option<usize> {
    s.eat(b'[')?;
    s.skip_ws();
    let rows = s.size()?;
    if !s.end_of(b']')? {
        s.skip_ws();
        (s.size()? == 1 && s.end_of(b']')?).then_some(())?;
    }
    usize::try_from(rows).ok()
}

/// An element as a record field takes it: a BYTES text, NULL a missing BYTES value, a BOOL its text (as the
/// general reader decodes them); its kind noted in `kinds`.
#[inline]
fn value<'a>(e: Scalar<'a>, kinds: &mut u8) -> RawValue<'a> {
    let (kind, value) = match e {
        // the scanner reads finite numbers only; the general reader is the one to refuse others
        Scalar::Number(x) if x.is_finite() => (NUMBER, RawValue::Number(x)),
        Scalar::Text(Cow::Borrowed(t)) => (TEXT, RawValue::Text(t)),
        Scalar::Null => (NULL, RawValue::Missing),
        Scalar::Bool(b) => (BOOL, RawValue::Text(if b { "true" } else { "false" })),
        Scalar::Number(_) | Scalar::Text(Cow::Owned(_)) | Scalar::Object => {
            (OTHER, RawValue::Missing)
        }
    };
    *kinds |= kind;
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Random, model};

    const BODIES: [&str; 4] = [
        r#"{"inputs":[{"name":"age","shape":[3],"datatype":"FP64","data":[40,47.5,1e2]},{"name":"weight_kg","shape":[3,1],"datatype":"FP32","data":[[60],[70.5],[-0.0]]},{"name":"arm","shape":[3],"datatype":"BYTES","data":["pbo","Treatment",null]}]}"#,
        // keys sorted, as clients that sort them write them: the data before the datatype
        r#"{"id":"r-1","inputs":[{"data":[50],"datatype":"INT64","name":"age","shape":[1]},{"data":[true],"datatype":"BOOL","name":"arm","shape":[1]},{"data":[70],"datatype":"FP64","name":"weight_kg","shape":[1]},{"data":[20.25],"datatype":"FP64","name":"bmi","shape":[1]}]}"#,
        " { \"inputs\" : [ { \"name\" : \"age\" , \"shape\" : [ 2 , 1 ] ,\n\"datatype\" : \"UINT8\" , \"data\" : [ [ 18 ] , [ 19 ] ] } ,\r\n\t{ \"name\" : \"weight_kg\" , \"shape\" : [ 2 ] , \"datatype\" : \"FP64\" , \"data\" : [ 12.5E-1 , 0.1 ] } , { \"name\" : \"arm\" , \"shape\" : [ 2 ] , \"datatype\" : \"BYTES\" , \"data\" : [ \" PBO \" , \"placebo\" ] } ] , \"id\" : \"\" } ",
        r#"{"inputs":[{"name":"arm","shape":[1],"datatype":"BYTES","data":["treatment"]},{"name":"weight_kg","shape":[1],"datatype":"FP64","data":[123456789012345678]},{"name":"age","shape":[1],"datatype":"INT32","data":[7E0]}],"id":"x"}"#,
    ];

    /// Whenever the tensor reader answers, the general reader gives the same rows, bit for bit, the same `id`,
    /// every output in JSON and no survival times; whenever the general reader refuses a body, the tensor
    /// reader leaves it to it. Checked on the common bodies and on thousands of copies with random edits.
    #[test]
    fn the_tensor_reader_answers_only_with_the_general_readers_rows() {
        let model = model();
        let bits = |r: &Rows| (r.n, r.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        let mut random = Random::new(0x9e37_79b9_7f4a_7c15);
        let alphabet = br#"{}[],:" 0123456789.-eE+nultrsfa\xyzidBYTESFP"#;
        let (mut fast, mut refused) = (0, 0);
        let all_outputs: Vec<(&str, bool)> = crate::head::declared(&model)
            .iter()
            .map(|(name, _)| (*name, false))
            .collect();
        for body in BODIES {
            let edits = std::iter::repeat_with(|| random.edit(body.as_bytes(), alphabet));
            for (e, edited) in std::iter::once(body.as_bytes().to_vec())
                .chain(edits.take(2000))
                .enumerate()
            {
                let text = String::from_utf8_lossy(&edited);
                let general = crate::v2::asked(&model, &edited, &[], 64);
                match (common_rows(&model, &edited, 64), general) {
                    (Some((rows, id)), Ok(all)) => {
                        assert_eq!(bits(&rows), bits(&all.rows), "{text}");
                        assert_eq!(id, all.id, "{text}");
                        assert_eq!((&all.wanted, &all.times), (&all_outputs, &None), "{text}");
                        fast += 1;
                    }
                    (Some(_), Err(err)) => {
                        panic!("{text}: answered, but the general reader says {err:?}")
                    }
                    (None, general) => {
                        assert!(
                            e > 0,
                            "{text}: the common body was left to the general reader"
                        );
                        refused += usize::from(general.is_err());
                    }
                }
            }
        }
        // both outcomes occur often enough for the check to mean something
        assert!(
            fast > 200 && refused > 3000,
            "{fast} answered, {refused} refused"
        );
    }

    /// Transformed rows, an unknown, repeated or missing input, a shape that is not a raw feature's, rows
    /// that differ, an element its datatype does not take, a value out of range, an escaped text, another
    /// key, more rows than the limit: each goes to the general reader.
    #[test]
    fn what_the_tensor_reader_leaves_to_the_general_one() {
        let model = model();
        let tensor = |name: &str, shape: &str, datatype: &str, data: &str| {
            format!(r#"{{"name":"{name}","shape":{shape},"datatype":"{datatype}","data":{data}}}"#)
        };
        let age = tensor("age", "[2]", "FP64", "[50,60]");
        let weight = tensor("weight_kg", "[2]", "FP64", "[70,80]");
        let arm = tensor("arm", "[2]", "BYTES", r#"["pbo","placebo"]"#);
        let body =
            |tensors: &[&str], more: &str| format!(r#"{{"inputs":[{}]{more}}}"#, tensors.join(","));
        let common = body(&[&age, &weight, &arm], "");
        assert!(common_rows(&model, common.as_bytes(), 2).is_some());
        let left = [
            body(
                &[&tensor(
                    "features",
                    "[2,6]",
                    "FP32",
                    &format!("[{}]", ["0"; 12].join(",")),
                )],
                "",
            ),
            body(
                &[
                    &age,
                    &weight,
                    &arm,
                    &tensor("height", "[2]", "FP64", "[1,2]"),
                ],
                "",
            ),
            body(&[&age, &weight, &arm, &age], ""),
            body(
                &[
                    &age,
                    &weight,
                    &tensor("arm", "[2,2]", "BYTES", r#"["a","b","c","d"]"#),
                ],
                "",
            ),
            body(
                &[&age, &weight, &tensor("arm", "[1]", "BYTES", r#"["pbo"]"#)],
                "",
            ),
            body(
                &[
                    &age,
                    &weight,
                    &tensor("arm", "[2]", "BYTES", r#"["pbo",1]"#),
                ],
                "",
            ),
            body(
                &[
                    &age,
                    &tensor("weight_kg", "[2]", "FP64", r#"[70,"80"]"#),
                    &arm,
                ],
                "",
            ),
            body(
                &[&age, &tensor("weight_kg", "[2]", "FP64", "[70,null]"), &arm],
                "",
            ),
            body(
                &[&age, &tensor("weight_kg", "[2]", "FP16", "[70,80]"), &arm],
                "",
            ),
            body(
                &[&age, &weight, &tensor("arm", "[2]", "BOOL", "[true,1]")],
                "",
            ),
            body(
                &[
                    &age,
                    &weight,
                    &tensor("arm", "[2]", "BYTES", r#"["pbo","pla\u0063ebo"]"#),
                ],
                "",
            ),
            body(
                &[
                    &age,
                    &weight,
                    &tensor("arm", "[2]", "BYTES", r#"["pbo","placebo","pbo"]"#),
                ],
                "",
            ),
            body(
                &[&age, &weight, &arm],
                r#","parameters":{"binary_data_output":true}"#,
            ),
            body(
                &[&age, &weight, &arm],
                r#","outputs":[{"name":"probability"}]"#,
            ),
            body(&[&age, &weight, &arm], r#","id":null"#),
            body(
                &[&tensor("age", "[2]", "FP64", "[50,500]"), &weight, &arm],
                "",
            ),
            body(&[&age, &weight], ""),
            body(&[], ""),
            format!("{common}x"),
        ];
        for body in &left {
            assert!(common_rows(&model, body.as_bytes(), 64).is_none(), "{body}");
        }
        assert!(common_rows(&model, common.as_bytes(), 1).is_none());
    }
}
