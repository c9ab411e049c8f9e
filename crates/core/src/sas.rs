//! SAS values as the staged table's text: IBM hexadecimal floating point (the transport file's number),
//! SAS missing values (`.`, `._`, `.A`–`.Z`, all read as NULL) and dates, datetimes and times (days, or
//! seconds, since 1960-01-01) written as ISO 8601 text when the variable's format says what they are. SAS
//! stores a date as a plain number: only its display format tells it from a count of days, so the format
//! decides here as it does in SAS.

/// What a numeric variable's display format makes of its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberKind {
    Number,
    /// Days since 1960-01-01 → `YYYY-MM-DD`.
    Date,
    /// Seconds since 1960-01-01T00:00:00 → `YYYY-MM-DDTHH:MM:SS`.
    Datetime,
    /// Seconds since midnight → `HH:MM:SS`.
    Time,
}

/// The kind a SAS format name (`DATE9.`, `E8601DT`, `yymmdd10`; width and decimals ignored) gives its values.
pub fn number_kind(format: &str) -> NumberKind {
    let name: String = format
        .trim()
        .trim_start_matches('$')
        .chars()
        .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
        .collect::<String>()
        .to_ascii_uppercase();
    // ISO names end in digits that are part of the name (E8601DA): read them whole first.
    let iso: String = format
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_uppercase();
    const ISO: [(&str, NumberKind); 11] = [
        ("E8601DA", NumberKind::Date),
        ("B8601DA", NumberKind::Date),
        ("IS8601DA", NumberKind::Date),
        ("E8601DT", NumberKind::Datetime),
        ("B8601DT", NumberKind::Datetime),
        ("IS8601DT", NumberKind::Datetime),
        ("E8601DN", NumberKind::Date),
        ("B8601DN", NumberKind::Date),
        ("E8601TM", NumberKind::Time),
        ("B8601TM", NumberKind::Time),
        ("IS8601TM", NumberKind::Time),
    ];
    if let Some((_, k)) = ISO.iter().find(|(n, _)| iso.starts_with(n)) {
        return *k;
    }
    const DATES: [&str; 14] = [
        "DATE", "DDMMYY", "MMDDYY", "YYMMDD", "MONYY", "YYMON", "YYQ", "WEEKDATE", "WORDDATE",
        "JULIAN", "NENGO", "EURDFDE", "NLDATE", "MINGUO",
    ];
    const DATETIMES: [&str; 4] = ["DATETIME", "DATEAMPM", "DTDATE", "NLDATM"];
    const TIMES: [&str; 4] = ["TIME", "HHMM", "TOD", "TIMEAMPM"];
    // DATETIME starts with DATE: the longer names are tried first.
    if DATETIMES.iter().any(|n| name.starts_with(n)) {
        NumberKind::Datetime
    } else if TIMES.iter().any(|n| name == *n || name.starts_with(n)) {
        NumberKind::Time
    } else if DATES.iter().any(|n| name.starts_with(n)) {
        NumberKind::Date
    } else {
        NumberKind::Number
    }
}

/// A SAS missing value in the transport file's 8 bytes (or fewer, for a shortened number): `.`, `._` or
/// `.A`–`.Z` in the first byte, zeros after.
pub fn is_missing(bytes: &[u8]) -> bool {
    match bytes.split_first() {
        Some((&first, rest)) => {
            (first == b'.' || first == b'_' || first.is_ascii_uppercase())
                && rest.iter().all(|&b| b == 0)
        }
        None => true,
    }
}

/// The value of an IBM System/360 double (sign, base-16 exponent biased by 64, 56-bit fraction), big-endian,
/// possibly shortened to fewer than 8 bytes (the missing low bytes are zeros). Every IEEE double in the IBM
/// range has an exact IBM form, so a file written from IEEE values reads back bit for bit.
pub fn ibm_to_f64(bytes: &[u8]) -> f64 {
    let mut full = [0u8; 8];
    let n = bytes.len().min(8);
    full[..n].copy_from_slice(&bytes[..n]);
    let v = u64::from_be_bytes(full);
    let fraction = v & 0x00ff_ffff_ffff_ffff;
    if fraction == 0 {
        return 0.0;
    }
    let exponent = ((v >> 56) & 0x7f) as i32 - 64;
    // fraction × 16^exponent / 2^56. The power of two, from -312 to 196, is a normal double: built from its
    // bits, exactly (and without a call to a power function per value).
    let power = f64::from_bits(((4 * exponent - 56 + 1023) as u64) << 52);
    let magnitude = fraction as f64 * power;
    if v >> 63 == 1 { -magnitude } else { magnitude }
}

/// The IBM double of `x` (the inverse of [`ibm_to_f64`]), for the writers of test files. Values beyond
/// IBM's range saturate; those below it become 0.
pub fn f64_to_ibm(x: f64) -> [u8; 8] {
    if x == 0.0 || !x.is_finite() {
        return [0; 8];
    }
    let sign = if x < 0.0 { 0x80u8 } else { 0 };
    let mut m = x.abs();
    let mut exponent = 0i32;
    while m >= 1.0 {
        m /= 16.0;
        exponent += 1;
    }
    while m < 1.0 / 16.0 {
        m *= 16.0;
        exponent -= 1;
    }
    if exponent + 64 > 127 {
        return [sign | 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    }
    if exponent + 64 < 0 {
        return [0; 8];
    }
    let fraction = (m * 2f64.powi(56)) as u64 & 0x00ff_ffff_ffff_ffff;
    let mut out = fraction.to_be_bytes();
    out[0] = sign | (exponent + 64) as u8;
    out
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days_since_1970: i64) -> (i64, u32, u32) {
    let z = days_since_1970 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days from 1960-01-01 to 1970-01-01.
const SAS_EPOCH_TO_UNIX_DAYS: i64 = 3653;

/// SAS dates run from 1582 to 20000 AD: beyond that a "date" is not one, and is written as the number.
const MAX_DAYS: f64 = 6_589_335.0;

fn date_text(days: i64, out: &mut String) {
    let (y, m, d) = civil(days - SAS_EPOCH_TO_UNIX_DAYS);
    if (0..=9999).contains(&y) {
        // The common case, written digit by digit: the formatter costs more than the rest of the value.
        let y = y as u32;
        let digits = [
            y / 1000,
            y / 100 % 10,
            y / 10 % 10,
            y % 10,
            10,
            m / 10,
            m % 10,
            10,
            d / 10,
            d % 10,
        ];
        out.extend(digits.iter().map(|&c| {
            if c == 10 {
                '-'
            } else {
                char::from(b'0' + c as u8)
            }
        }));
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{y:04}-{m:02}-{d:02}");
    }
}

fn clock_text(seconds: f64) -> String {
    let whole = seconds.floor();
    let s = whole as i64;
    let (h, mi, se) = (s / 3600, (s / 60) % 60, s % 60);
    let fraction = seconds - whole;
    if fraction > 0.0 {
        // Milliseconds at most: SAS keeps about that much of a datetime in a double.
        let ms = ((fraction * 1000.0).round() as i64).min(999);
        format!("{h:02}:{mi:02}:{se:02}.{ms:03}")
    } else {
        format!("{h:02}:{mi:02}:{se:02}")
    }
}

/// A number as the staged table's text: dates and times as ISO 8601 when `kind` says so (and the value is
/// one), every other number as the shortest text that reads back to the same double.
pub fn number_text(x: f64, kind: NumberKind, out: &mut String) {
    out.clear();
    match kind {
        NumberKind::Date if x.abs() <= MAX_DAYS => date_text(x.floor() as i64, out),
        NumberKind::Datetime if (x / 86_400.0).abs() <= MAX_DAYS => {
            let days = (x / 86_400.0).floor();
            date_text(days as i64, out);
            out.push('T');
            out.push_str(&clock_text(x - days * 86_400.0));
        }
        NumberKind::Time if (0.0..86_400.0 * 100.0).contains(&x) => out.push_str(&clock_text(x)),
        _ => shortest(x, out),
    }
}

/// The shortest text that reads back to `x`: whole numbers as integers (most of a trial's values), others
/// by Ryu, exponent and all (`1e-7`), which every reader parses back.
fn shortest(x: f64, out: &mut String) {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        let mut n = x.abs() as u64;
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if x < 0.0 {
            out.push('-');
        }
        // ASCII digits only
        out.extend(digits[i..].iter().map(|&b| char::from(b)));
    } else {
        out.push_str(ryu::Buffer::new().format(x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibm_round_trips_doubles_exactly() {
        for x in [
            1.0,
            -1.0,
            0.1,
            65.0,
            123_456.789,
            -0.000_123,
            1e70,
            5.4e-79,
            f64::EPSILON,
            std::f64::consts::PI,
        ] {
            assert_eq!(ibm_to_f64(&f64_to_ibm(x)), x, "{x}");
        }
        // 1.0 is 0x41 10 00.. in IBM form (16^1 × 1/16)
        assert_eq!(f64_to_ibm(1.0), [0x41, 0x10, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ibm_to_f64(&[0x41, 0x10]), 1.0);
        assert_eq!(ibm_to_f64(&[0xc2, 0x64]), -100.0);
    }

    #[test]
    fn missing_values_are_the_dot_and_the_letters() {
        assert!(is_missing(&[b'.', 0, 0, 0, 0, 0, 0, 0]));
        assert!(is_missing(&[b'A', 0, 0]));
        assert!(is_missing(&[b'Z', 0, 0, 0, 0, 0, 0, 0]));
        assert!(is_missing(&[b'_', 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_missing(&f64_to_ibm(1.0)));
        // 0x41 is `A` in ASCII and also the exponent byte of numbers from 1 to 16: the zeros tell them apart
        assert!(!is_missing(&[b'A', 0x10, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn dates_follow_the_format() {
        let mut s = String::new();
        assert_eq!(number_kind("DATE9."), NumberKind::Date);
        assert_eq!(number_kind("yymmdd10"), NumberKind::Date);
        assert_eq!(number_kind("E8601DA."), NumberKind::Date);
        assert_eq!(number_kind("DATETIME20."), NumberKind::Datetime);
        assert_eq!(number_kind("IS8601DT"), NumberKind::Datetime);
        assert_eq!(number_kind("TIME8."), NumberKind::Time);
        assert_eq!(number_kind("BEST12."), NumberKind::Number);
        assert_eq!(number_kind(""), NumberKind::Number);
        number_text(0.0, NumberKind::Date, &mut s);
        assert_eq!(s, "1960-01-01");
        number_text(-1.0, NumberKind::Date, &mut s);
        assert_eq!(s, "1959-12-31");
        // 2014-01-02 is day 19725 (R: as.numeric(as.Date("2014-01-02") - as.Date("1960-01-01")))
        number_text(19725.0, NumberKind::Date, &mut s);
        assert_eq!(s, "2014-01-02");
        number_text(19725.0 * 86_400.0 + 3_723.5, NumberKind::Datetime, &mut s);
        assert_eq!(s, "2014-01-02T01:02:03.500");
        number_text(45_296.0, NumberKind::Time, &mut s);
        assert_eq!(s, "12:34:56");
        number_text(65.0, NumberKind::Number, &mut s);
        assert_eq!(s, "65");
        number_text(1e12, NumberKind::Date, &mut s);
        assert_eq!(s, "1000000000000", "not a date: the number");
        for (x, text) in [
            (-3.0, "-3"),
            (0.0, "0"),
            (25.1, "25.1"),
            (-0.5, "-0.5"),
            (1e-7, "1e-7"),
            (1e20, "1e20"),
        ] {
            number_text(x, NumberKind::Number, &mut s);
            assert_eq!(s, text);
            assert_eq!(s.parse::<f64>().unwrap(), x);
        }
    }
}
