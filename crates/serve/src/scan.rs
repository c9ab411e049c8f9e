//! A reader of JSON bodies for the common request shapes, over the bytes, without a tree of values: it
//! reads texts without escapes, numbers as serde_json reads them (bit for bit) and the structure around them,
//! and gives up (`None`) on anything else, for the general reader to read and, where it is wrong, name.

use trialflow_model::RawValue;

/// 10ⁿ for the powers an f64 holds exactly: a significand of at most 2⁵³ times or over one of them is
/// rounded once, as serde_json rounds it.
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A position in the body. Every method that reads a token returns `None` where the body leaves this path
/// (a syntax error, or a turn it does not take), with the position then of no further use.
pub(crate) struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    /// Whether only whitespace is left.
    #[inline]
    pub(crate) fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.at == self.text.len()
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON's whitespace, as serde_json skips it.
    #[inline]
    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    #[inline]
    pub(crate) fn eat_if(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    #[inline]
    pub(crate) fn eat(&mut self, byte: u8) -> Option<()> {
        self.eat_if(byte).then_some(())
    }

    #[inline]
    pub(crate) fn colon(&mut self) -> Option<()> {
        self.skip_ws();
        self.eat(b':')?;
        self.skip_ws();
        Some(())
    }

    /// After a member or an element: `true` at the `close` that ends the object or list, `false` at a comma.
    #[inline]
    pub(crate) fn end_of(&mut self, close: u8) -> Option<bool> {
        self.skip_ws();
        if self.eat_if(b',') {
            return Some(false);
        }
        self.eat(close)?;
        Some(true)
    }

    /// A text without escapes, borrowed from the body.
    #[inline]
    pub(crate) fn text(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let rest = &self.text.as_bytes()[start..];
        // a control character must be escaped in JSON; an escape is the general reader's to decode
        let len = first_special(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // the quotes are ASCII: the text between them is whole UTF-8
        self.text.get(start..start + len)
    }

    /// Whether the next token is the text `known` (one [`Scanner::text`] read before, so without escapes),
    /// eaten when it is.
    #[inline]
    pub(crate) fn eat_text(&mut self, known: &str) -> bool {
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
    #[inline]
    pub(crate) fn value(&mut self) -> Option<RawValue<'a>> {
        Some(match self.peek()? {
            b'"' => RawValue::Text(self.text()?),
            b'-' | b'0'..=b'9' => RawValue::Number(self.number()?),
            b'n' => self.word("null", RawValue::Missing)?,
            b't' => self.word("true", RawValue::Text("true"))?,
            b'f' => self.word("false", RawValue::Text("false"))?,
            _ => return None,
        })
    }

    /// `value` when the next token is the literal `word` (`null`, `true`, `false`).
    #[inline]
    pub(crate) fn word<T>(&mut self, word: &str, value: T) -> Option<T> {
        self.text.as_bytes()[self.at..]
            .starts_with(word.as_bytes())
            .then(|| {
                self.at += word.len();
                value
            })
    }

    /// An object, each member's value read by `member(scanner, key)` (an empty object is not taken).
    pub(crate) fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        loop {
            self.skip_ws();
            let key = self.text()?;
            self.colon()?;
            member(self, key)?;
            if self.end_of(b'}')? {
                return Some(());
            }
        }
    }

    /// An object whose keys are all among `keys` (texts without escapes), each member's value read by
    /// `member(scanner, the key's index in keys)`: a key is compared with each of them in turn, where reading
    /// it as a text first cost a small tensor's object a third of its instructions.
    #[inline]
    pub(crate) fn object_of(
        &mut self,
        keys: &[&str],
        mut member: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        loop {
            self.skip_ws();
            let key = keys.iter().position(|k| self.eat_text(k))?;
            self.colon()?;
            member(self, key)?;
            if self.end_of(b'}')? {
                return Some(());
            }
        }
    }

    /// A list, each element read by `element`.
    pub(crate) fn list<T>(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Vec<T>> {
        self.eat(b'[')?;
        self.skip_ws();
        let mut out = Vec::new();
        if self.eat_if(b']') {
            return Some(out);
        }
        loop {
            out.push(element(self)?);
            if self.end_of(b']')? {
                return Some(out);
            }
            self.skip_ws();
        }
    }

    /// A size in a shape: a whole number from 0 to 10¹⁸ without a sign, fraction or exponent (serde_json reads
    /// those into an i64 as written; a sign, a fraction or an exponent is left to it).
    #[inline]
    pub(crate) fn size(&mut self) -> Option<i64> {
        let bytes = &self.text.as_bytes()[self.at..];
        let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 18 || (digits > 1 && bytes[0] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = bytes.get(digits) {
            return None;
        }
        self.at += digits;
        Some(
            bytes[..digits]
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')),
        )
    }

    /// A JSON number as serde_json reads it into an f64, bit for bit: an integer converted, a number with a
    /// fraction or an exponent as its decimal significand times or over a power of ten, rounded once.
    #[inline(always)]
    pub(crate) fn number(&mut self) -> Option<f64> {
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

/// The position of the first `"`, `\\` or control character (below 0x20) in `bytes`: eight bytes per step,
/// where a byte-by-byte search cost a request's texts about 15 instructions per byte.
#[inline]
fn first_special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let w = u64::from_le_bytes(word.try_into().ok()?);
        let (quote, backslash) = (w ^ (ONES * u64::from(b'"')), w ^ (ONES * u64::from(b'\\')));
        // a byte's high bit is set where it is zero or below 0x20 (an ASCII byte: `!w` clears the others); a
        // borrow can flag bytes above a true one, never below it, so the lowest flag is exact
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|p| at + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time search finds what the byte-by-byte one finds, at every length and offset, with
    /// every byte value around the byte it must find.
    #[test]
    fn the_first_special_byte_is_found_as_byte_by_byte() {
        let plain = |b: &u8| !(*b == b'"' || *b == b'\\' || *b < 0x20);
        let mut random = crate::testing::Random::new(0x2545_f491_4f6c_dd1d);
        let mut next = move || random.bits();
        for _ in 0..200_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next() % 8 {
                    // mostly visible text, with specials, their neighbours and bytes above 0x7f
                    0 => [
                        b'"', b'\\', 0x1f, 0x00, 0x20, 0x21, 0x5b, 0x5d, 0x80, 0xa2, 0xff,
                    ][(next() % 11) as usize],
                    _ => b' ' + (next() % 95) as u8,
                })
                .collect();
            assert_eq!(
                first_special(&bytes),
                bytes.iter().position(|b| !plain(b)),
                "{bytes:?}"
            );
        }
    }

    /// Every number the scanner reads is serde_json's f64 for the same text, bit for bit; it gives up only on
    /// numbers outside its fast path (a significand past 2⁶⁴, a power of ten past 22) or not JSON.
    #[test]
    fn numbers_are_read_as_serde_json_reads_them() {
        let mut random = crate::testing::Random::new(0x853c_49e6_748f_ea9b);
        let mut next = move |n: u64| random.bits() % n;
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
            let mut s = Scanner::new(&text);
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
            let mut s = Scanner::new(not_json);
            assert!(s.number().is_none() || s.at < not_json.len(), "{not_json}");
        }
    }
}
