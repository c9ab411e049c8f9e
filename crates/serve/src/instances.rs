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

/// The encoded rows of `body` when it is the common shape and every record encodes, with the survival
/// times it asks for (`times`, a time-to-event model's); `None` otherwise.
pub fn common_instances(
    model: &LoadedVersion,
    body: &[u8],
    max_rows: usize,
) -> Option<(Rows, Option<Vec<f64>>)> {
    // bytes that are not UTF-8 are the general reader's to report
    let text = std::str::from_utf8(body).ok()?;
    let mut s = Scanner { text, at: 0 };
    let mut rows = Rows::default();
    let (mut instances, mut signature, mut times) = (false, false, None);
    s.skip_ws();
    s.eat(b'{')?;
    loop {
        s.skip_ws();
        let key = s.text()?;
        s.colon()?;
        match key {
            "instances" if !instances => {
                instances = true;
                records(&mut s, model, max_rows, &mut rows)?;
            }
            "signature_name" if !signature => {
                signature = true;
                if s.text()? != "serving_default" {
                    return None;
                }
            }
            "times" if times.is_none() => {
                // a list of numbers, checked as the general reader checks it
                let list = s.numbers()?;
                let value = serde_json::Value::Array(list.into_iter().map(Into::into).collect());
                times = Some(crate::head::requested_times(&model.card, &value, "times").ok()?);
            }
            _ => return None,
        }
        if s.end_of(b'}')? {
            break;
        }
    }
    s.skip_ws();
    (instances && s.at == s.text.len()).then_some((rows, times))
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

/// 10ⁿ for the powers an f64 holds exactly: a significand of at most 2⁵³ times or over one of them is
/// rounded once, as serde_json rounds it.
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A position in the body. Every method that reads a token returns `None` where the body leaves this path
/// (a syntax error, or a turn it does not take), with the position then of no further use.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON's whitespace, as serde_json skips it.
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn eat_if(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.eat_if(byte).then_some(())
    }

    fn colon(&mut self) -> Option<()> {
        self.skip_ws();
        self.eat(b':')?;
        self.skip_ws();
        Some(())
    }

    /// After a member or an element: `true` at the `close` that ends the object or list, `false` at a comma.
    fn end_of(&mut self, close: u8) -> Option<bool> {
        self.skip_ws();
        if self.eat_if(b',') {
            return Some(false);
        }
        self.eat(close)?;
        Some(true)
    }

    /// A text without escapes, borrowed from the body.
    fn text(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let rest = &self.text.as_bytes()[start..];
        // a control character must be escaped in JSON; an escape is the general reader's to decode
        let len = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // the quotes are ASCII: the text between them is whole UTF-8
        self.text.get(start..start + len)
    }

    /// Whether the next token is the text `known` (one [`Scanner::text`] read before, so without escapes),
    /// eaten when it is.
    fn eat_text(&mut self, known: &str) -> bool {
        let rest = &self.text.as_bytes()[self.at..];
        let n = known.len();
        let found = rest.len() > n + 1
            && rest[0] == b'"'
            && rest[n + 1] == b'"'
            && &rest[1..=n] == known.as_bytes();
        if found {
            self.at += n + 2;
        }
        found
    }

    /// A record's field: null, a number, a text, or a boolean as its text (as the general reader takes it).
    fn value(&mut self) -> Option<RawValue<'a>> {
        Some(match self.peek()? {
            b'"' => RawValue::Text(self.text()?),
            b'-' | b'0'..=b'9' => RawValue::Number(self.number()?),
            b'n' => self.word("null", RawValue::Missing)?,
            b't' => self.word("true", RawValue::Text("true"))?,
            b'f' => self.word("false", RawValue::Text("false"))?,
            _ => return None,
        })
    }

    fn word(&mut self, word: &str, value: RawValue<'a>) -> Option<RawValue<'a>> {
        self.text.as_bytes()[self.at..]
            .starts_with(word.as_bytes())
            .then(|| {
                self.at += word.len();
                value
            })
    }

    /// A list of numbers.
    fn numbers(&mut self) -> Option<Vec<f64>> {
        self.eat(b'[')?;
        self.skip_ws();
        let mut out = Vec::new();
        if self.eat_if(b']') {
            return Some(out);
        }
        loop {
            out.push(self.number()?);
            if self.end_of(b']')? {
                return Some(out);
            }
            self.skip_ws();
        }
    }

    /// A JSON number as serde_json reads it into an f64, bit for bit: an integer converted, a number with a
    /// fraction or an exponent as its decimal significand times or over a power of ten, rounded once.
    fn number(&mut self) -> Option<f64> {
        let bytes = &self.text.as_bytes()[self.at..];
        let positive = bytes.first() != Some(&b'-');
        let mut i = usize::from(!positive);
        let (mut significand, mut digits) = (0u64, 0usize);
        let mut take_digits = |i: &mut usize| {
            let from = *i;
            while let Some(d @ b'0'..=b'9') = bytes.get(*i) {
                // 19 digits always fit; more are refused below, before the value is used
                significand = significand
                    .wrapping_mul(10)
                    .wrapping_add(u64::from(d - b'0'));
                *i += 1;
            }
            digits += *i - from;
            *i - from
        };
        let whole = take_digits(&mut i);
        // one leading zero only
        if whole == 0 || (whole > 1 && bytes[i - whole] == b'0') {
            return None;
        }
        let mut exponent: i32 = 0;
        let fraction = bytes.get(i) == Some(&b'.');
        if fraction {
            i += 1;
            let places = take_digits(&mut i);
            if places == 0 {
                return None;
            }
            exponent = -i32::try_from(places).ok()?;
        }
        let written = matches!(bytes.get(i), Some(b'e' | b'E'));
        if written {
            i += 1;
            let negative = bytes.get(i) == Some(&b'-');
            i += usize::from(negative || bytes.get(i) == Some(&b'+'));
            let from = i;
            let mut power: i32 = 0;
            while let Some(d @ b'0'..=b'9') = bytes.get(i) {
                power = power.checked_mul(10)?.checked_add(i32::from(d - b'0'))?;
                i += 1;
            }
            if i == from {
                return None;
            }
            exponent = if negative {
                exponent.saturating_sub(power)
            } else {
                exponent.saturating_add(power)
            };
        }
        if digits > 19 {
            return None;
        }
        self.at += i;
        if !fraction && !written {
            // serde_json keeps an integer as one (`-0` as the float -0.0); the model reads it as an f64
            let x = significand as f64;
            return Some(if positive { x } else { -x });
        }
        let pow = *EXACT_POW10.get(exponent.unsigned_abs() as usize)?;
        let x = if exponent >= 0 {
            significand as f64 * pow
        } else {
            significand as f64 / pow
        };
        x.is_finite().then_some(if positive { x } else { -x })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::Device;
    use trialflow_core::config::{Activation, Endpoint, ModelConfig};
    use trialflow_core::features::{CategoricalFeature, FeatureSpec, NumericFeature, OnInvalid};
    use trialflow_model::{DenseCpu, Encoder, ModelCard, Network};

    use super::*;

    fn numeric(name: &str, derived: Option<&str>, on_invalid: OnInvalid) -> NumericFeature {
        NumericFeature {
            name: name.into(),
            impute: 50.0,
            mean: 50.0,
            std: 10.0,
            min: Some(1.0),
            max: Some(200.0),
            on_invalid,
            derived: derived.map(Into::into),
        }
    }

    fn model() -> LoadedVersion {
        model_for(Endpoint::Binary)
    }

    fn model_for(endpoint: Endpoint) -> LoadedVersion {
        let numeric = vec![
            numeric("age", None, OnInvalid::Reject),
            numeric("weight_kg", None, OnInvalid::Impute),
            numeric("bmi", Some("weight_kg / 3.0"), OnInvalid::Impute),
        ];
        let categorical = vec![CategoricalFeature {
            name: "arm".into(),
            levels: vec!["placebo".into(), "treatment".into()],
            canonical: [
                ("placebo".to_string(), "placebo".to_string()),
                ("pbo".to_string(), "placebo".to_string()),
                ("treatment".to_string(), "treatment".to_string()),
            ]
            .into(),
            unseen: Default::default(),
        }];
        let columns = FeatureSpec::build_columns(&numeric, &categorical);
        let spec = FeatureSpec {
            numeric,
            categorical,
            columns,
            train_rows: 100,
            arm_field: "arm".into(),
        };
        let architecture = ModelConfig {
            hidden: vec![4],
            dropout: vec![],
            activation: Activation::Relu,
        };
        let net = Network::init(&architecture, spec.width(), 7, &Device::Cpu).unwrap();
        LoadedVersion {
            model: "m".into(),
            model_key: Arc::from("m"),
            version: 1,
            scorer: DenseCpu::from_network(&net).unwrap(),
            encoder: Encoder::new(&spec).unwrap(),
            card: ModelCard {
                name: "m".into(),
                architecture,
                input_dim: spec.width(),
                feature_spec: spec,
                metrics: serde_json::json!({}),
                data_fingerprint: "t".into(),
                config_fingerprint: "t".into(),
                code_version: "t".into(),
                seed: 7,
                endpoint,
                targets: vec!["outcome".into()],
                survival: None,
            },
            phenotypes: None,
        }
    }

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
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
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
                let mut edited = body.as_bytes().to_vec();
                for _ in 0..=next(3) {
                    let at = next(edited.len());
                    match next(3) {
                        0 => edited[at] = alphabet[next(alphabet.len())],
                        1 => {
                            edited.remove(at);
                        }
                        _ => edited.insert(at, alphabet[next(alphabet.len())]),
                    }
                }
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

    /// Every number the scanner reads is serde_json's f64 for the same text, bit for bit; it gives up only on
    /// numbers outside its fast path (a significand past 2⁶⁴, a power of ten past 22) or not JSON.
    #[test]
    fn numbers_are_read_as_serde_json_reads_them() {
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let (mut read, mut left) = (0, 0);
        for _ in 0..100_000 {
            let mut text = String::new();
            if next(2) == 0 {
                text.push('-');
            }
            let int_digits = 1 + next(20);
            for d in 0..int_digits {
                let digit = if d == 0 && int_digits > 1 {
                    1 + next(9)
                } else {
                    next(10)
                };
                text.push(char::from(b'0' + digit as u8));
            }
            if next(2) == 0 {
                text.push('.');
                for _ in 0..1 + next(12) {
                    text.push(char::from(b'0' + next(10) as u8));
                }
            }
            if next(3) == 0 {
                text.push(if next(2) == 0 { 'e' } else { 'E' });
                match next(3) {
                    0 => text.push('-'),
                    1 => text.push('+'),
                    _ => {}
                }
                text.push_str(&next(30).to_string());
            }
            let expected = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.as_f64());
            let mut s = Scanner { text: &text, at: 0 };
            match (s.number(), expected) {
                (Some(x), Some(e)) => {
                    assert_eq!(x.to_bits(), e.to_bits(), "{text}");
                    assert_eq!(s.at, text.len(), "{text}");
                    read += 1;
                }
                (Some(x), None) => panic!("{text}: read as {x}, serde_json refuses it"),
                (None, _) => left += 1,
            }
        }
        assert!(read > 60_000 && left > 1_000, "{read} read, {left} left");
        for not_json in ["01", "-", "1.", "1.e3", "1e", "1e+", ".5", "+1", "-a"] {
            let mut s = Scanner {
                text: not_json,
                at: 0,
            };
            assert!(s.number().is_none() || s.at < not_json.len(), "{not_json}");
        }
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
