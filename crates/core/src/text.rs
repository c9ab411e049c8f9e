//! Text values as the cleaning path keeps them: NFC-composed and without invisible characters, so that an
//! identifier or a level typed twice (once with a byte-order mark, a zero-width space, a NUL, or decomposed
//! accents) is one subject or one level, not two that look the same. Also what counts as a blank record.

use std::borrow::Cow;

use icu_normalizer::ComposingNormalizerBorrowed;

/// Characters that print as nothing: format characters such as the byte-order mark and zero-width spaces,
/// the soft hyphen, and control characters.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    ) || c.is_control()
}

/// `v` without invisible characters and in Unicode NFC; borrowed when it already is (plain ASCII text,
/// nearly always, is checked in one pass).
pub fn normalize(v: &str) -> Cow<'_, str> {
    if printable_ascii(v.as_bytes()) {
        return Cow::Borrowed(v);
    }
    let nfc = ComposingNormalizerBorrowed::new_nfc();
    if !v.chars().any(is_invisible) && nfc.is_normalized(v) {
        return Cow::Borrowed(v);
    }
    let visible: String = v.chars().filter(|c| !is_invisible(*c)).collect();
    Cow::Owned(nfc.normalize(&visible).into_owned())
}

/// Every byte a printable ASCII character (space to `~`). Tested 16 bytes at a time without stopping early
/// inside a block, which the compiler turns into vector compares; a byte-by-byte `all` stops at each byte.
pub(crate) fn printable_ascii(bytes: &[u8]) -> bool {
    let outside = |b: &u8| !(0x20..0x7f).contains(b);
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(false, |any, b| any | outside(b)) {
            return false;
        }
    }
    !blocks.remainder().iter().any(outside)
}

/// A record that is only whitespace and invisible characters (a line of spaces, a stray byte-order mark):
/// not a record at all, for the count at ingestion and for staging alike.
pub fn is_blank(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.chars().all(|c| c.is_whitespace() || is_invisible(c)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_the_byte_by_byte_test_at_every_length_and_position() {
        for len in 0..50 {
            let clean = vec![b'a'; len];
            assert!(printable_ascii(&clean), "{len}");
            for at in 0..len {
                for bad in [0x00, 0x1f, 0x7f, 0x80, 0xc3, 0xff] {
                    let mut text = clean.clone();
                    text[at] = bad;
                    assert!(!printable_ascii(&text), "{len} {at} {bad:#x}");
                }
                let mut edge = clean.clone();
                edge[at] = if at % 2 == 0 { b' ' } else { b'~' };
                assert!(printable_ascii(&edge), "{len} {at}");
            }
        }
    }

    #[test]
    fn look_alike_identifiers_become_one() {
        let plain = "Zoë-001";
        let decomposed = "Zoe\u{0308}-001";
        for v in [
            decomposed,
            "\u{FEFF}Zoë-001",
            "Zo\u{200B}ë-001",
            "Zoë-001\u{0}",
            "Zoë\u{00AD}-001",
        ] {
            assert_eq!(normalize(v), plain, "{v:?}");
        }
        assert!(matches!(normalize("S-001"), Cow::Borrowed(_)));
        assert!(matches!(normalize(plain), Cow::Borrowed(_)));
        // tabs inside a value are control characters too: a level never holds one on purpose
        assert_eq!(normalize("a\tb"), "ab");
    }

    #[test]
    fn blank_records() {
        assert!(is_blank(b"   "));
        assert!(is_blank(b" \t\r"));
        assert!(is_blank("\u{FEFF}  \u{200B}".as_bytes()));
        assert!(!is_blank(b" x "));
        assert!(!is_blank(&[0xff, 0x20]));
    }
}
