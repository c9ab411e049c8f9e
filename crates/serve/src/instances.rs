//! The TF Serving body clients send nearly always, `{"instances": [{field: value, …}, …]}` (and optionally
//! `"signature_name": "serving_default"`, and `times` for a time-to-event model), read straight into encoded
//! rows in one pass over the bytes, without building a JSON tree first. A record's keys are mostly compared with
//! the record before's, in its order, as bytes. Anything else, and every body with something wrong in it, is
//! left to the general reader (`input::tf_request`), which reads the whole body first and so names the same
//! first error whatever the order of the body's parts: this path only ever answers with rows that reader would
//! have given. Where the JSON grammar or serde_json's reading of it takes a turn this path does not need (an
//! escape in a text, a significand past 2⁶⁴ or a power of ten past 22), it gives up too.

use trialflow_model::RawValue;

use crate::input::Rows;
use crate::repository::LoadedVersion;
use crate::scan::Scanner;

/// The encoded rows of `body` when it is the common shape and every record encodes, with the survival
/// times it asks for (`times`, a time-to-event model's); `None` otherwise.
pub fn common_instances(
    model: &LoadedVersion,
    body: &[u8],
    max_rows: usize,
) -> Option<(Rows, Option<Vec<f64>>)> {
    // bytes that are not UTF-8 are the general reader's to report
    let text = std::str::from_utf8(body).ok()?;
    let mut s = Scanner::new(text);
    let mut rows = Rows::default();
    let (mut instances, mut signature, mut times) = (false, false, None);
    s.skip_ws();
    s.object(|s, key| {
        match key {
            "instances" if !instances => {
                instances = true;
                records(s, model, max_rows, &mut rows)?;
            }
            "signature_name" if !signature => {
                signature = true;
                if s.text()? != "serving_default" {
                    return None;
                }
            }
            "times" if times.is_none() => {
                // a list of numbers, checked as the general reader checks it
                let list = s.list(Scanner::number)?;
                let value = serde_json::Value::Array(list.into_iter().map(Into::into).collect());
                times = Some(crate::head::requested_times(&model.card, &value, "times").ok()?);
            }
            _ => return None,
        }
        Some(())
    })?;
    (instances && s.at_end()).then_some((rows, times))
}

/// The `instances` list, each record encoded as soon as it is read.
fn records<'a>(
    s: &mut Scanner<'a>,
    model: &LoadedVersion,
    max_rows: usize,
    rows: &mut Rows,
) -> Option<()> {
    let mut fields: Vec<Option<RawValue<'a>>> = vec![None; model.encoder.inputs().len()];
    let mut order = Vec::with_capacity(fields.len());
    s.eat(b'[')?;
    loop {
        s.skip_ws();
        fields.fill(None);
        record(s, model, &mut fields, &mut order)?;
        if rows.n >= max_rows {
            return None;
        }
        rows.push_record(model, &fields, &|f| f.to_string()).ok()?;
        if s.end_of(b']')? {
            return Some(());
        }
    }
}

/// One record into `fields`: each key a field the model reads, each at most once. `order` holds the keys of
/// the record before, in its order, with their positions: a client writes its records alike, so a key is
/// mostly compared with one text instead of looked up.
fn record<'a>(
    s: &mut Scanner<'a>,
    model: &LoadedVersion,
    fields: &mut [Option<RawValue<'a>>],
    order: &mut Vec<(&'a str, usize)>,
) -> Option<()> {
    s.eat(b'{')?;
    s.skip_ws();
    if s.eat_if(b'}') {
        return Some(());
    }
    let mut i = 0;
    loop {
        let at = match order.get(i) {
            Some(&(key, at)) if s.eat_text(key) => at,
            _ => {
                let key = s.text()?;
                let at = model.encoder.position(key)?;
                order.truncate(i);
                order.push((key, at));
                at
            }
        };
        i += 1;
        s.colon()?;
        let slot = fields.get_mut(at)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(s.value()?);
        if s.end_of(b'}')? {
            return Some(());
        }
        s.skip_ws();
    }
}

#[cfg(test)]
mod tests {
    use trialflow_core::config::Endpoint;

    use super::*;
    use crate::testing::{Random, model, model_for};

    const BODIES: [&str; 6] = [
        r#"{"instances":[{"arm":"pbo","age":20,"weight_kg":60},{"weight_kg":61,"arm":"Treatment","age":21},{"age":22,"arm":"placebo","weight_kg":62,"bmi":20},{"age":23,"arm":"placebo","weight_kg":63}]}"#,
        r#"{"instances":[{"age":50,"weight_kg":70.5,"arm":"Placebo"},{"age":null,"weight_kg":"80","arm":" PBO ","bmi":25}]}"#,
        r#"{"signature_name":"serving_default","instances":[{"arm":"treatment","weight_kg":-0.0e0,"age":1e2}]}"#,
        r#"{"instances":[{"age":7,"weight_kg":null,"arm":null}],"signature_name":"serving_default"}"#,
        r#" { "instances" : [ { "age" : 18 , "weight_kg" : 30 , "arm" : true , "bmi" : null } ] } "#,
        // numbers in every form the one-pass reader takes
        "{\"instances\":[{\"age\":12.5E-1,\"weight_kg\":0.1,\"arm\":\"placebo\"},\n\t{\"age\":1.99e2,\"weight_kg\":123456789012345678,\"arm\":\"pbo\",\"bmi\":-0},\r\n{\"age\":100.000,\"weight_kg\":1e22,\"arm\":false,\"bmi\":4.5e+1},{\"age\":7E0,\"weight_kg\":0.30000000000000004,\"arm\":\"treatment\",\"bmi\":-0.0}]}",
    ];

    /// A time-to-event model's bodies, with and without the survival times they ask for.
    const TIMES_BODIES: [&str; 2] = [
        r#"{"instances":[{"age":50,"weight_kg":70,"arm":"placebo"},{"age":60,"weight_kg":80,"arm":"pbo"}],"times":[30,90.5,365]}"#,
        r#"{"times":[0,1e2],"signature_name":"serving_default","instances":[{"age":50,"weight_kg":70,"arm":"treatment"}]}"#,
    ];

    /// Whenever the one-pass reader answers, the general reader gives the same rows, bit for bit, and the
    /// same times; whenever the general reader refuses a body, the one-pass reader leaves it to it. Checked
    /// on the common bodies and on thousands of copies with random edits (characters replaced, removed,
    /// inserted), for a binary and a time-to-event model.
    #[test]
    fn the_one_pass_reader_answers_only_with_the_general_readers_rows() {
        let bits = |r: &Rows| r.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut random = Random::new(0x2545_f491_4f6c_dd1d);
        let alphabet = br#"{}[],:" 0123456789.-eE+nultrsfa\xyz"#;
        let (mut fast, mut refused) = (0, 0);
        let binary = model();
        let survival = model_for(Endpoint::TimeToEvent);
        let cases = BODIES
            .iter()
            .map(|b| (&binary, b))
            .chain(TIMES_BODIES.iter().map(|b| (&survival, b)));
        for (b, (model, body)) in cases.enumerate() {
            let one = common_instances(model, body.as_bytes(), 64);
            let general = crate::input::tf_rows(model, body.as_bytes(), 64);
            let (Some((one, times)), Ok((all, "predictions", all_times))) = (one, general) else {
                panic!("body {b} did not take the one-pass reader, or the general one refused it");
            };
            assert_eq!((one.n, bits(&one)), (all.n, bits(&all)), "body {b}");
            assert_eq!(times, all_times, "body {b}");
            for _ in 0..1500 {
                let edited = random.edit(body.as_bytes(), alphabet);
                let one = common_instances(model, &edited, 64);
                let general = crate::input::tf_rows(model, &edited, 64);
                let text = String::from_utf8_lossy(&edited);
                match (one, general) {
                    (Some((one, times)), Ok((all, key, all_times))) => {
                        assert_eq!((key, times), ("predictions", all_times), "{text}");
                        assert_eq!((one.n, bits(&one)), (all.n, bits(&all)), "{text}");
                        fast += 1;
                    }
                    (Some(_), Err(e)) => {
                        panic!("{text}: answered, but the general reader says {e:?}")
                    }
                    (None, Err(_)) => refused += 1,
                    (None, Ok(_)) => {}
                }
            }
        }
        // both outcomes occur often enough for the check to mean something
        assert!(
            fast > 100 && refused > 2000,
            "{fast} answered, {refused} refused"
        );
    }

    /// More rows than the limit, an empty list, a repeated field, an unknown one, a nested value, an
    /// escaped text, another top-level key: each goes to the general reader.
    #[test]
    fn what_the_one_pass_reader_leaves_to_the_general_one() {
        let model = model();
        let row = r#"{"age":50,"weight_kg":70,"arm":"placebo"}"#;
        let two = format!(r#"{{"instances":[{row},{row}]}}"#);
        assert!(common_instances(&model, two.as_bytes(), 2).is_some());
        for body in [
            two.as_str(),
            r#"{"instances":[]}"#,
            r#"{"instances":[{"age":50,"age":51,"weight_kg":70,"arm":"placebo"}]}"#,
            r#"{"instances":[{"age":50,"height":1,"weight_kg":70,"arm":"placebo"}]}"#,
            r#"{"instances":[{"age":[50],"weight_kg":70,"arm":"placebo"}]}"#,
            r#"{"instances":[{"age":50,"weight_kg":70,"arm":"pla\u0063ebo"}]}"#,
            r#"{"instances":[{"age":50,"weight_kg":1e23,"arm":"placebo"}]}"#,
            r#"{"instances":[{"age":50,"weight_kg":12345678901234567890123,"arm":"placebo"}]}"#,
            r#"{"instances":[{"age":50,"weight_kg":70,"arm":"placebo"}],"times":[1]}"#,
            r#"{"instances":[{"age":50,"weight_kg":70,"arm":"placebo"}],"signature_name":"other"}"#,
            r#"{"instances":[[0,0,0,0,0]]}"#,
            r#"{"inputs":{"age":[50],"weight_kg":[70],"arm":["placebo"]}}"#,
        ] {
            let max = if body == two { 1 } else { 64 };
            assert!(
                common_instances(&model, body.as_bytes(), max).is_none(),
                "{body}"
            );
        }
    }
}
