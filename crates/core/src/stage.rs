//! Raw objects → batches of the `staged` table: every contract column as trimmed text (empty = NULL), plus the
//! lineage columns `_row` (global input order), `_source` (source URL), `_line` (line of the record in its
//! file) and `_rowhash` (hash of the record's contract fields, to tell exact duplicates from repeated ids).
//! Objects are read as streams and handed on in batches of [`BATCH_ROWS`], so memory does not grow with them:
//! a record longer than `preprocessing.max_record_bytes` is an error (file and line), and Parquet is read a row
//! group at a time from a local spool file. Line endings are normalized first (CRLF and a lone CR are line
//! ends, so `_line` counts lines as an editor does), lines of nothing but whitespace are not records, and
//! every value is NFC-composed and stripped of invisible characters (`core::text`), counted for the report.

use std::hash::{BuildHasher, Hash, Hasher};
use std::io::Read;
use std::sync::Arc;

use crate::lake::CurrentObject;
use crate::{Error, Result};
pub use arrow::array::RecordBatch;
use arrow::array::{ArrayRef, Int64Builder, StringArray, StringBuilder, UInt64Builder};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Rows per staged batch: large enough to amortize per-batch work in DataFusion, small enough that a few
/// batches in flight stay in the tens of megabytes.
pub const BATCH_ROWS: usize = 32 * 1024;

pub fn staged_schema(columns: &[String]) -> SchemaRef {
    let mut fields = vec![
        Field::new("_row", DataType::Int64, false),
        Field::new("_source", DataType::Utf8, false),
        Field::new("_line", DataType::Int64, false),
        Field::new("_rowhash", DataType::UInt64, false),
        // Why the record itself is malformed (ragged, not UTF-8): such rows are quarantined whole.
        Field::new("_defect", DataType::Utf8, true),
    ];
    fields.extend(columns.iter().map(|c| Field::new(c, DataType::Utf8, true)));
    Arc::new(Schema::new(fields))
}

/// Receives each staged batch as soon as it is full.
pub type Emit<'a> = dyn FnMut(RecordBatch) -> Result<()> + 'a;

/// The staged table's builders: lineage columns plus one text column per contract column.
struct Stager<'a> {
    url: String,
    schema: SchemaRef,
    row: Int64Builder,
    line: Int64Builder,
    hash: UInt64Builder,
    defect: StringBuilder,
    cols: Vec<StringBuilder>,
    next: i64,
    pending: usize,
    /// Values that NFC or the removal of invisible characters changed.
    normalized: u64,
    missing: Vec<String>,
    /// Contract column → the source's label for it (SAS transport and Dataset-JSON files declare them).
    labels: Vec<(String, String)>,
    emit: &'a mut Emit<'a>,
}

/// What staging one object produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedObject {
    /// The global row number after the object's last row.
    pub next_row: i64,
    pub normalized: u64,
    /// Contract column → the variable label the file declares for it, where it declares one.
    pub labels: Vec<(String, String)>,
}

/// Bounds of the staging readers.
#[derive(Debug, Clone, Copy)]
pub struct StageLimits {
    pub max_record_bytes: usize,
}

impl<'a> Stager<'a> {
    fn new(url: &str, columns: &[String], first_row: i64, emit: &'a mut Emit<'a>) -> Self {
        Self {
            url: url.to_string(),
            schema: staged_schema(columns),
            row: Int64Builder::new(),
            line: Int64Builder::new(),
            hash: UInt64Builder::new(),
            defect: StringBuilder::new(),
            cols: columns.iter().map(|_| StringBuilder::new()).collect(),
            next: first_row,
            pending: 0,
            normalized: 0,
            missing: Vec::new(),
            labels: Vec::new(),
            emit,
        }
    }

    /// Field texts read as NULL besides the empty one (`NA`, `.`): the source's `missing_values`.
    fn missing_values(mut self, tokens: &[String]) -> Self {
        self.missing = tokens
            .iter()
            .map(|t| crate::text::normalize(t.trim()).trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        self
    }

    /// One record: `values[i]` is contract column i as text (trimmed here; empty or a missing-value token =
    /// NULL).
    fn push<'v>(
        &mut self,
        line: u64,
        values: impl Iterator<Item = Option<&'v str>>,
        defect: Option<&str>,
    ) -> Result<()> {
        self.push_record(line, values, defect, false)
    }

    /// [`Stager::push`] for a record whose bytes are all printable ASCII (`printable`, checked once for the
    /// whole record by the caller): every value then is already normalized, and is not checked again.
    fn push_record<'v>(
        &mut self,
        line: u64,
        values: impl Iterator<Item = Option<&'v str>>,
        defect: Option<&str>,
        printable: bool,
    ) -> Result<()> {
        // Only compared within one run (exact duplicate or not), so any fixed-seed hash will do.
        let mut h = foldhash::fast::FixedState::with_seed(0x7269_616c_666c_6f77).build_hasher();
        for (b, v) in self.cols.iter_mut().zip(values) {
            let raw = v.map(trim).unwrap_or("");
            let v = match printable {
                true => std::borrow::Cow::Borrowed(raw),
                false => crate::text::normalize(raw),
            };
            // Only a changed value can have gained outer spaces (an invisible character removed).
            let mut v = match &v {
                std::borrow::Cow::Borrowed(b) => *b,
                std::borrow::Cow::Owned(o) => {
                    self.normalized += 1;
                    o.trim()
                }
            };
            if !self.missing.is_empty() && self.missing.iter().any(|m| m == v) {
                v = "";
            }
            v.hash(&mut h);
            if v.is_empty() {
                b.append_null()
            } else {
                b.append_value(v)
            }
        }
        self.row.append_value(self.next);
        self.line.append_value(line as i64);
        self.hash.append_value(h.finish());
        self.defect.append_option(defect);
        self.next += 1;
        self.pending += 1;
        if self.pending >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.row.finish()),
            Arc::new(repeated(&self.url, rows)?),
            Arc::new(self.line.finish()),
            Arc::new(self.hash.finish()),
            Arc::new(self.defect.finish()),
        ];
        for b in &mut self.cols {
            let column = b.finish();
            // The next batch's text is about as long as this one's: sized once, its buffer is never
            // re-allocated and copied while it fills (nor its fresh pages faulted in twice).
            let bytes = column.value_data().len();
            *b = StringBuilder::with_capacity(BATCH_ROWS, bytes + bytes / 8);
            arrays.push(Arc::new(column));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(Error::bug)?;
        (self.emit)(batch)
    }

    /// Flushes the last batch.
    fn finish(mut self) -> Result<StagedObject> {
        self.flush()?;
        Ok(StagedObject {
            next_row: self.next,
            normalized: self.normalized,
            labels: self.labels,
        })
    }
}

/// `v` without leading and trailing whitespace (Unicode's, as `str::trim`), with a fast path for the common
/// value that starts and ends with a visible ASCII character: two byte tests instead of decoding a character
/// at each end (`str::trim` was 1.7% of a preprocessing run's instructions).
fn trim(v: &str) -> &str {
    match (v.as_bytes().first(), v.as_bytes().last()) {
        (Some(a), Some(b)) if a.is_ascii_graphic() && b.is_ascii_graphic() => v,
        _ => v.trim(),
    }
}

/// `text` on each of `rows` rows, built in one piece: the source URL is the same on every row of a batch.
fn repeated(text: &str, rows: usize) -> Result<StringArray> {
    let too_long = || {
        Error::bad_data(
            text,
            "the source URL is too long to repeat on every row of a batch",
        )
    };
    let len = i32::try_from(text.len()).map_err(|_| too_long())?;
    let offsets = (0..=rows)
        .map(|i| i32::try_from(i).ok().and_then(|i| i.checked_mul(len)))
        .collect::<Option<Vec<i32>>>()
        .ok_or_else(too_long)?;
    Ok(StringArray::new(
        OffsetBuffer::new(offsets.into()),
        text.repeat(rows).into_bytes().into(),
        None,
    ))
}

fn missing(url: &str, c: &str, what: &str) -> Error {
    Error::bad_data(
        url,
        format!("required column `{c}` is missing from the {what}"),
    )
}

/// Stages one raw object of any source format read from `reader`. `first_row` numbers rows globally across
/// sources; `missing` are the source's missing-value tokens (read as NULL, as an empty field is).
pub fn stage_object<'a>(
    o: &CurrentObject,
    reader: impl Read,
    columns: &[String],
    first_row: i64,
    limits: StageLimits,
    missing: &[String],
    emit: &'a mut Emit<'a>,
) -> Result<StagedObject> {
    use crate::lake::SourceFormat;
    let url = o.url.as_str();
    let dialect = Dialect {
        delimiter: o.delimiter as u8,
        quote: o.quote as u8,
        max_record_bytes: limits.max_record_bytes,
    };
    let st = Stager::new(url, columns, first_row, emit).missing_values(missing);
    match o.format {
        SourceFormat::Csv => stage_csv_with(st, reader, columns, dialect),
        SourceFormat::CsvGzip => stage_csv_with(
            st,
            flate2::read::MultiGzDecoder::new(reader),
            columns,
            dialect,
        ),
        SourceFormat::CsvZstd => {
            let dec = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| Error::bad_data(url, format!("corrupt zstd: {e}")))?;
            stage_csv_with(st, dec, columns, dialect)
        }
        SourceFormat::Ndjson => stage_ndjson(
            st,
            std::io::BufReader::new(LineEndings::new(reader)),
            columns,
            limits.max_record_bytes,
        ),
        SourceFormat::Xpt => stage_xpt(st, reader, columns),
        SourceFormat::DatasetJson => {
            let mut rows = DatasetRows::new(st, columns);
            crate::dsjson::read_json(url, reader, limits.max_record_bytes, &mut rows)?;
            rows.st.finish()
        }
        SourceFormat::DatasetNdjson => {
            let mut rows = DatasetRows::new(st, columns);
            // NDJSON lines end in LF (a CR before it is JSON whitespace): no line-end rewriting needed.
            crate::dsjson::read_ndjson(
                url,
                std::io::BufReader::with_capacity(1 << 16, reader),
                limits.max_record_bytes,
                &mut rows,
            )?;
            rows.st.finish()
        }
        SourceFormat::Parquet => {
            let spool = spool(url, reader)?;
            // The parquet and arrow crates still assert on some malformed files the checks before do not
            // catch (a data page, found by fuzzing): such a file is bad data, not a crash of the task. This
            // needs `panic = "unwind"`, the profiles' default.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                stage_parquet(st, spool, columns, limits.max_record_bytes)
            }))
            .unwrap_or_else(|_| {
                Err(Error::bad_data(
                    url,
                    "not a readable Parquet file: the Parquet reader failed on its structure",
                ))
            })
        }
    }
}

/// A transport file's observations: `_line` is the observation's number (from 1). A number is the shortest
/// text of its double (a date, datetime or time as ISO 8601 text when its format says so); a SAS missing
/// value (`.`, `.A`–`.Z`, `._`) and a blank character value are NULL.
fn stage_xpt(
    mut st: Stager<'_>,
    mut reader: impl Read,
    columns: &[String],
) -> Result<StagedObject> {
    let url = st.url.clone();
    let mut stream = crate::xport::XptStream::new(&url);
    let mut idx: Option<Vec<usize>> = None;
    let mut numbers: Vec<String> = vec![String::new(); columns.len()];
    let mut on_record = |h: &crate::xport::Header, n: u64, record: &[u8]| -> Result<()> {
        let idx = match &idx {
            Some(i) => i,
            None => {
                let names: Vec<String> = h.variables.iter().map(|v| v.name.clone()).collect();
                idx.insert(header_positions(&url, &names, columns)?)
            }
        };
        let mut defect: Option<String> = None;
        let mut texts: Vec<Option<&str>> = Vec::with_capacity(columns.len());
        for ((c, &i), number) in columns.iter().zip(idx.iter()).zip(numbers.iter_mut()) {
            match crate::xport::value_text(&h.variables[i], record, number) {
                Ok(v) => texts.push(v),
                Err(why) => {
                    defect.get_or_insert_with(|| format!("field `{c}` {why}"));
                    texts.push(None);
                }
            }
        }
        st.push(n, texts.into_iter(), defect.as_deref())
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::bad_data(
                    url.as_str(),
                    format!("cannot read the object (storage failed): {e}"),
                ));
            }
        };
        stream.feed(&buf[..n], &mut on_record)?;
    }
    let header = stream.header().cloned();
    stream.finish(&mut on_record)?;
    let header = header.ok_or_else(|| Error::bad_data(url.as_str(), "no header"))?;
    let names: Vec<String> = header.variables.iter().map(|v| v.name.clone()).collect();
    // A file without observations has its columns checked all the same.
    header_positions(&url, &names, columns)?;
    st.labels = labels_of(
        columns,
        header.variables.iter().map(|v| (&v.name, &v.label)),
    );
    st.finish()
}

/// The labels of the contract's columns, from (name, label) pairs; blank labels are no labels.
fn labels_of<'n>(
    columns: &[String],
    vars: impl Iterator<Item = (&'n String, &'n String)>,
) -> Vec<(String, String)> {
    let vars: Vec<(&String, &String)> = vars.collect();
    columns
        .iter()
        .filter_map(|c| {
            vars.iter()
                .find(|(n, l)| *n == c && !l.trim().is_empty())
                .map(|(_, l)| (c.clone(), crate::text::normalize(l.trim()).into_owned()))
        })
        .collect()
}

/// Dataset-JSON rows staged as they are read; `_line` is the row's number (its line in the NDJSON form). A
/// row with more or fewer values than `columns` is quarantined with that reason.
struct DatasetRows<'a, 'c> {
    st: Stager<'a>,
    columns: &'c [String],
    idx: Vec<usize>,
    width: usize,
}

impl<'a, 'c> DatasetRows<'a, 'c> {
    fn new(st: Stager<'a>, columns: &'c [String]) -> Self {
        Self {
            st,
            columns,
            idx: Vec::new(),
            width: 0,
        }
    }
}

impl crate::dsjson::Rows for DatasetRows<'_, '_> {
    fn columns(&mut self, declared: &[crate::dsjson::Column]) -> Result<()> {
        let names: Vec<String> = declared.iter().map(|c| c.name.trim().to_string()).collect();
        self.idx = header_positions(&self.st.url, &names, self.columns)?;
        self.width = declared.len();
        self.st.labels = labels_of(self.columns, declared.iter().map(|c| (&c.name, &c.label)));
        Ok(())
    }

    fn row(&mut self, line: u64, row: &crate::dsjson::Row) -> Result<()> {
        let defect = (row.len() != self.width).then(|| {
            format!(
                "the row has {} values; the dataset has {} columns",
                row.len(),
                self.width
            )
        });
        let idx = &self.idx;
        self.st
            .push(line, idx.iter().map(|&i| row.get(i)), defect.as_deref())
    }
}

/// Copies a Parquet object to an anonymous local file: its footer is at the end, and the reader then
/// fetches one row group at a time from it instead of holding the whole object in memory.
fn spool(url: &str, mut reader: impl Read) -> Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let failed = |e: std::io::Error| {
        Error::infra(
            url,
            format!("cannot spool the Parquet object to a local temporary file: {e}"),
        )
    };
    let mut file = tempfile::tempfile().map_err(failed)?;
    std::io::copy(&mut reader, &mut file)
        .map_err(|e| Error::bad_data(url, format!("cannot read: {e}")))?;
    file.seek(SeekFrom::Start(0)).map_err(failed)?;
    Ok(file)
}

#[derive(Debug, Clone, Copy)]
struct Dialect {
    delimiter: u8,
    quote: u8,
    max_record_bytes: usize,
}

/// Line ends as an editor counts them: CRLF, LF and a lone CR each end one line, and come out as LF (inside a
/// quoted value too), so that the CSV reader's line numbers are right for files saved with old Mac endings
/// or a mix.
struct LineEndings<R> {
    inner: R,
    after_cr: bool,
}

impl<R> LineEndings<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            after_cr: false,
        }
    }
}

impl<R: Read> Read for LineEndings<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            // Most files have no CR at all: the bytes before the first one (all of them, mostly) stay as read.
            let first = if self.after_cr {
                0
            } else {
                match memchr::memchr(b'\r', &buf[..n]) {
                    Some(at) => at,
                    None => return Ok(n),
                }
            };
            let mut out = first;
            for i in first..n {
                let b = buf[i];
                if b == b'\n' && self.after_cr {
                    self.after_cr = false;
                    continue; // the LF of a CRLF: its CR already ended the line
                }
                self.after_cr = b == b'\r';
                buf[out] = if self.after_cr { b'\n' } else { b };
                out += 1;
            }
            // A read that held only the LF of a CRLF gave nothing: 0 would read as the end of the data.
            if out > 0 {
                return Ok(out);
            }
        }
    }
}

/// Counts the bytes read since the record being parsed began and fails the read once they pass the
/// record bound plus the parser's buffer: the CSV parser would otherwise grow one record without limit.
struct RecordBound<R> {
    inner: R,
    read: u64,
    record_start: std::rc::Rc<std::cell::Cell<u64>>,
    limit: u64,
}

/// The marker inside the I/O error `RecordBound` raises.
#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("record too long")
    }
}

impl std::error::Error for RecordTooLong {}

impl<R: Read> Read for RecordBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read.saturating_sub(self.record_start.get()) > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RecordTooLong,
            ));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

fn too_long(url: &str, line: u64, max: usize) -> Error {
    Error::bad_data(
        format!("{url}:{line}"),
        format!(
            "a record longer than {max} bytes (preprocessing.max_record_bytes): not read, so that memory stays bounded"
        ),
    )
}

/// A decoder or transport failure inside the CSV reader, told apart from a malformed record.
fn io_failure(url: &str, line: u64, e: &csv::Error) -> Option<Error> {
    match e.kind() {
        csv::ErrorKind::Io(io) => Some(Error::bad_data(
            format!("{url}:{line}"),
            format!(
                "cannot read the object (truncated or corrupt compression, or storage failed): {io}"
            ),
        )),
        _ => None,
    }
}

/// The CSV reader's buffer: the record bound allows this much read-ahead past the record's start.
const CSV_BUFFER: usize = 1 << 20;

/// Parses one CSV object with its dialect.
fn stage_csv_with(
    mut st: Stager<'_>,
    reader: impl Read,
    columns: &[String],
    dialect: Dialect,
) -> Result<StagedObject> {
    let url = st.url.clone();
    let url = url.as_str();
    let record_start = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let bounded = RecordBound {
        inner: LineEndings::new(reader),
        read: 0,
        record_start: record_start.clone(),
        limit: (dialect.max_record_bytes + CSV_BUFFER) as u64,
    };
    let max = dialect.max_record_bytes;
    let read_error = |line: u64, e: &csv::Error| -> Error {
        if let csv::ErrorKind::Io(io) = e.kind()
            && io.get_ref().is_some_and(|i| i.is::<RecordTooLong>())
        {
            return too_long(url, line, max);
        }
        io_failure(url, line, e).unwrap_or_else(|| {
            // The message says what is wrong, never the cell's content.
            Error::bad_data(format!("{url}:{line}"), "malformed CSV record")
        })
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .delimiter(dialect.delimiter)
        .quote(dialect.quote)
        .buffer_capacity(CSV_BUFFER)
        .from_reader(bounded);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| match e.kind() {
            csv::ErrorKind::Io(_) => read_error(1, &e),
            _ => Error::bad_data(format!("{url}:1"), format!("unreadable CSV header: {e}")),
        })?
        .iter()
        .map(|h| crate::text::normalize(h.trim()).trim().to_string())
        .collect();
    let idx = header_positions(url, &headers, columns)?;
    let mut rec = csv::ByteRecord::new();
    loop {
        let pos = rdr.position().clone();
        record_start.set(pos.byte());
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let l = e.position().map(|p| p.line()).unwrap_or(pos.line());
                return Err(read_error(l, &e));
            }
        }
        if rec.len() == 1 && crate::text::is_blank(&rec[0]) {
            continue; // a line of spaces is no record (ingestion does not count it either)
        }
        if rec.as_slice().len() > max {
            return Err(too_long(url, pos.line(), max));
        }
        let record_line = rec.position().map(|p| p.line()).unwrap_or(pos.line());
        // Row-level defects quarantine the row (with this reason) instead of failing the file.
        let mut defect = (rec.len() != headers.len()).then(|| {
            format!(
                "the record has {} fields; the header has {}",
                rec.len(),
                headers.len()
            )
        });
        let mut texts: Vec<Option<&str>> = Vec::with_capacity(columns.len());
        // One UTF-8 check for the whole record, then each field a slice of it (a slice that would split a
        // character is refused by `get`, and the field is checked alone below).
        let whole = std::str::from_utf8(rec.as_slice()).ok();
        for (c, &i) in columns.iter().zip(&idx) {
            let checked = whole.and_then(|w| rec.range(i).and_then(|r| w.get(r)));
            texts.push(match checked {
                Some(v) => Some(v),
                None => match rec.get(i).map(std::str::from_utf8) {
                    None => None,
                    Some(Ok(v)) => Some(v),
                    Some(Err(_)) => {
                        defect.get_or_insert_with(|| format!("field `{c}` is not UTF-8 text"));
                        None
                    }
                },
            });
        }
        // Nearly every record is plain ASCII: one check for all its values instead of one per value.
        let printable = crate::text::printable_ascii(rec.as_slice());
        st.push_record(record_line, texts.into_iter(), defect.as_deref(), printable)?;
    }
    st.finish()
}

/// Where each contract column is in the header; a contract column named twice is an error, as the file
/// does not say which of the two is meant.
fn header_positions(url: &str, headers: &[String], columns: &[String]) -> Result<Vec<usize>> {
    columns
        .iter()
        .map(|c| {
            let mut at = headers.iter().enumerate().filter(|(_, h)| *h == c);
            let first = at.next().map(|(i, _)| i);
            if let Some((second, _)) = at.next() {
                return Err(Error::bad_data(
                    format!("{url}:1"),
                    format!(
                        "column `{c}` is in the header twice (columns {} and {}): which one holds the data is not known",
                        first.unwrap_or(0) + 1,
                        second + 1
                    ),
                ));
            }
            first.ok_or_else(|| missing(url, c, "header"))
        })
        .collect()
}

/// One JSON object per line; values become text as the CSV path sees them (numbers as written, booleans as
/// `true`/`false`, null as NULL). Nested values are refused, naming the line and key.
fn stage_ndjson(
    mut st: Stager<'_>,
    mut reader: impl std::io::BufRead,
    columns: &[String],
    max_record_bytes: usize,
) -> Result<StagedObject> {
    let url = st.url.clone();
    let url = url.as_str();
    let mut values: Vec<Option<String>> = Vec::with_capacity(columns.len());
    let mut raw = Vec::new();
    let mut line = 0u64;
    loop {
        raw.clear();
        line += 1;
        let at = || format!("{url}:{line}");
        use std::io::BufRead as _;
        let n = std::io::Read::by_ref(&mut reader)
            .take(max_record_bytes as u64 + 1)
            .read_until(b'\n', &mut raw)
            .map_err(|e| Error::bad_data(at(), format!("cannot read the object: {e}")))?;
        if n == 0 {
            break;
        }
        if raw.len() > max_record_bytes {
            return Err(too_long(url, line, max_record_bytes));
        }
        let text =
            std::str::from_utf8(&raw).map_err(|_| Error::bad_data(at(), "not UTF-8 text"))?;
        if crate::text::is_blank(text.as_bytes()) {
            continue;
        }
        let text = text.trim_start_matches('\u{feff}').trim();
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            Error::bad_data(at(), format!("not a JSON object (column {})", e.column()))
        })?;
        let serde_json::Value::Object(map) = v else {
            return Err(Error::bad_data(at(), "expected a JSON object per line"));
        };
        values.clear();
        for c in columns {
            values.push(match map.get(c) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                Some(_) => {
                    return Err(Error::bad_data(
                        at(),
                        format!("key `{c}`: expected a string, number, boolean or null"),
                    ));
                }
            });
        }
        st.push(line, values.iter().map(|v| v.as_deref()), None)?;
    }
    st.finish()
}

/// Parquet columns cast to text, a row group at a time from the spooled file; `_line` is the row's position in
/// the file (1-based).
fn stage_parquet(
    mut st: Stager<'_>,
    file: std::fs::File,
    columns: &[String],
    max_record_bytes: usize,
) -> Result<StagedObject> {
    use arrow::array::{Array, AsArray};
    let url = st.url.clone();
    let url = url.as_str();
    let file_len = file
        .metadata()
        .map_err(|e| Error::infra(url, format!("the spooled copy: {e}")))?
        .len();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new_with_options(
            file,
            crate::table::untrusted_parquet_options(),
        )
        .map_err(|e| Error::bad_data(url, format!("not a readable Parquet file: {e}")))?;
    crate::table::check_parquet_layout(builder.metadata(), file_len)
        .map_err(|m| Error::bad_data(url, format!("not a readable Parquet file: {m}")))?;
    let mut first_row = 1i64;
    for rg in builder.metadata().row_groups() {
        // Declared sizes, checked before a row group is decoded: an average row beyond the record bound.
        let rows = rg.num_rows().max(1);
        if rg.total_byte_size() / rows > max_record_bytes as i64 {
            return Err(too_long(url, first_row as u64, max_record_bytes));
        }
        first_row += rg.num_rows();
    }
    let reader = builder
        .with_batch_size(8192)
        .build()
        .map_err(|e| Error::bad_data(url, format!("not a readable Parquet file: {e}")))?;
    let mut line = 0u64;
    for batch in reader {
        let batch =
            batch.map_err(|e| Error::bad_data(url, format!("cannot read a row group: {e}")))?;
        let texts: Vec<ArrayRef> = columns
            .iter()
            .map(|c| {
                let col = batch
                    .column_by_name(c)
                    .ok_or_else(|| missing(url, c, "Parquet schema"))?;
                arrow::compute::cast(col, &DataType::Utf8).map_err(|_| {
                    Error::bad_data(
                        url,
                        format!(
                            "column `{c}` is {} and cannot be read as text",
                            col.data_type()
                        ),
                    )
                })
            })
            .collect::<Result<_>>()?;
        let texts: Vec<&arrow::array::StringArray> =
            texts.iter().map(|a| a.as_string::<i32>()).collect();
        for r in 0..batch.num_rows() {
            line += 1;
            st.push(
                line,
                texts.iter().map(|a| (!a.is_null(r)).then(|| a.value(r))),
                None,
            )?;
        }
    }
    st.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn trim_is_str_trim() {
        for v in [
            "",
            " ",
            "a",
            "ab",
            " a",
            "a ",
            " a b ",
            "\ta\n",
            "\u{a0}a",
            "a\u{3000}",
            "\u{2003}",
            "é",
            " é ",
            "ab\u{85}",
            "\u{feff}a",
            "a\u{200b}",
            "~x!",
            "1.5",
        ] {
            assert_eq!(trim(v), v.trim(), "{v:?}");
        }
    }

    #[test]
    fn the_source_column_repeats_the_url_on_every_row() {
        let a = repeated("file:///trial/a.csv", 3).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a.null_count(), 0);
        assert!(a.iter().all(|v| v == Some("file:///trial/a.csv")));
        assert_eq!(repeated("x", 0).unwrap().len(), 0);
        // Offsets past i32: an error naming the source, not a panic.
        let long = "u".repeat(1 << 20);
        let e = repeated(&long, 4096).unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
    }

    fn stage_csv(url: &str, bytes: &[u8], cols: &[String], first_row: i64) -> Result<RecordBatch> {
        let mut out = Vec::new();
        let mut emit = |b: RecordBatch| {
            out.push(b);
            Ok(())
        };
        let st = Stager::new(url, cols, first_row, &mut emit);
        let dialect = Dialect {
            delimiter: b',',
            quote: b'"',
            max_record_bytes: 4096,
        };
        stage_csv_with(st, bytes, cols, dialect)?;
        arrow::compute::concat_batches(&staged_schema(cols), &out).map_err(Error::bug)
    }

    /// A current object at `url` in `format`, with the default CSV dialect.
    fn object(url: &str, format: crate::lake::SourceFormat) -> CurrentObject {
        CurrentObject {
            source: "t".into(),
            url: url.into(),
            object: "raw/t/x".into(),
            format,
            delimiter: ',',
            quote: '"',
            sha256: String::new(),
            rows: 0,
        }
    }

    fn lines(b: &RecordBatch) -> Vec<i64> {
        let l = b
            .column_by_name("_line")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        l.values().to_vec()
    }

    fn texts(b: &RecordBatch, c: &str) -> Vec<Option<String>> {
        let a = b.column_by_name(c).unwrap().as_string::<i32>();
        a.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn cr_crlf_and_lf_endings_each_end_one_line_even_mixed_and_split_across_reads() {
        let cols = vec!["id".to_string()];
        for data in [
            &b"id\ra\rb\rc\r"[..],
            b"id\r\na\r\nb\r\nc\r\n",
            b"id\na\rb\r\nc",
        ] {
            let b = stage_csv("u", data, &cols, 0).unwrap();
            assert_eq!(
                lines(&b),
                vec![2, 3, 4],
                "{:?}",
                String::from_utf8_lossy(data)
            );
            assert_eq!(
                texts(&b, "id"),
                vec![Some("a".into()), Some("b".into()), Some("c".into())]
            );
        }
        // a CRLF split between two reads is still one line end
        let mut one_byte = LineEndings::new(std::io::Cursor::new(b"a\r\nb\rc".to_vec()));
        let mut out = Vec::new();
        let mut buf = [0u8; 1];
        loop {
            let n = one_byte.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"a\nb\nc");
        // every read size, so that CRs, CRLFs and LFs fall at every place in a read and across reads
        let mixed = b"id\r\na\rb\n\r\nc\r\r\nd\n\ne\r".to_vec();
        let want = b"id\na\nb\n\nc\n\nd\n\ne\n".to_vec();
        for size in 1..=mixed.len() {
            let mut r = LineEndings::new(std::io::Cursor::new(mixed.clone()));
            let (mut out, mut buf) = (Vec::new(), vec![0u8; size]);
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, want, "reads of {size} bytes");
        }
    }

    #[test]
    fn a_contract_column_twice_in_the_header_is_an_error_naming_both() {
        let cols = vec!["id".to_string(), "age".to_string()];
        let e = stage_csv("file:///t.csv", b"id,age,x,age\na,1,2,3\n", &cols, 0).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("file:///t.csv:1") && m.contains("`age`") && m.contains("columns 2 and 4"),
            "{m}"
        );
        // a repeated column the contract does not use is harmless
        stage_csv("u", b"id,age,x,x\na,1,2,3\n", &cols, 0).unwrap();
    }

    #[test]
    fn lines_of_spaces_are_not_records() {
        let cols = vec!["id".to_string(), "age".to_string()];
        let b = stage_csv("u", b"id,age\na,1\n   \n\t\nb,2\n \n", &cols, 0).unwrap();
        assert_eq!(texts(&b, "id"), vec![Some("a".into()), Some("b".into())]);
        assert_eq!(lines(&b), vec![2, 5]);
    }

    #[test]
    fn look_alike_ids_and_levels_stage_as_one_and_are_counted() {
        let cols = vec!["id".to_string(), "site".to_string()];
        let data = "\u{FEFF}id,site\nS-1,Zoë\n\u{FEFF}S-1,Zoe\u{0308}\nS\u{200B}-1,Zoë\u{0}\n";
        let mut out = Vec::new();
        let mut emit = |b: RecordBatch| {
            out.push(b);
            Ok(())
        };
        let st = Stager::new("u", &cols, 0, &mut emit);
        let dialect = Dialect {
            delimiter: b',',
            quote: b'"',
            max_record_bytes: 4096,
        };
        let staged = stage_csv_with(st, data.as_bytes(), &cols, dialect).unwrap();
        let b = arrow::compute::concat_batches(&staged_schema(&cols), &out).unwrap();
        assert_eq!(texts(&b, "id"), vec![Some("S-1".into()); 3]);
        assert_eq!(texts(&b, "site"), vec![Some("Zoë".into()); 3]);
        assert_eq!(staged.normalized, 4);
        let hash = b
            .column_by_name("_rowhash")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt64Type>();
        assert!(
            hash.values().iter().all(|h| *h == hash.value(0)),
            "exact duplicates once normalized"
        );
    }

    #[test]
    fn a_record_longer_than_the_bound_is_an_error_naming_its_line_not_an_allocation() {
        let cols = vec!["id".to_string(), "note".to_string()];
        // an unterminated quote: the parser would read the rest of the file into one record
        let mut data = b"id,note\na,short\nb,\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', 4 << 20));
        let e = stage_csv("file:///t.csv", &data, &cols, 0).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("file:///t.csv:3") && m.contains("max_record_bytes"),
            "{m}"
        );
        let mut ndjson = b"{\"id\": \"a\", \"note\": \"".to_vec();
        ndjson.extend(std::iter::repeat_n(b'x', 10_000));
        let mut emit = |_b: RecordBatch| Ok(());
        let st = Stager::new("file:///t.ndjson", &cols, 0, &mut emit);
        let e = stage_ndjson(st, std::io::BufReader::new(&ndjson[..]), &cols, 4096).unwrap_err();
        assert!(e.to_string().contains("file:///t.ndjson:1"), "{e}");
    }

    /// The stage fuzz target's seeds (fuzz/seeds/stage: the sample's first 24 records in every format, and
    /// with CRLF + BOM and CR-only endings) all stage the same 24 records, as the target reads them (a format
    /// byte, then the object).
    #[test]
    fn the_fuzz_seeds_stage_the_same_records_in_every_format() {
        let formats = crate::lake::SourceFormat::ALL;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/stage");
        let cols = vec!["id".to_string(), "age".to_string()];
        let mut seen = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let o = object("file:///t", formats[usize::from(data[0]) % formats.len()]);
            let mut ids = Vec::new();
            let mut emit = |b: RecordBatch| {
                ids.extend(texts(&b, "id"));
                Ok(())
            };
            let limits = StageLimits {
                max_record_bytes: 1 << 20,
            };
            let staged = stage_object(&o, &data[1..], &cols, 0, limits, &[], &mut emit)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // cr_blank.csv has one record replaced by spaces
            let want = if path.ends_with("cr_blank.csv") {
                23
            } else {
                24
            };
            assert_eq!(
                (staged.next_row, ids.len()),
                (want, want as usize),
                "{}",
                path.display()
            );
            assert!(
                ids.iter()
                    .all(|id| id.as_deref().is_some_and(|i| i.starts_with("CVT-")))
            );
            seen += 1;
        }
        assert_eq!(seen, 10);
    }

    /// Every value of every column of `path` (data/examples/cdiscpilot/), staged, with the labels.
    fn stage_pilot(name: &str, columns: &[String]) -> (Vec<Vec<Option<String>>>, StagedObject) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/examples/cdiscpilot")
            .join(name);
        let data = std::fs::read(&path).unwrap();
        let format = crate::lake::SourceFormat::from_name(name)
            .unwrap_or(crate::lake::SourceFormat::DatasetNdjson);
        let format = if name.ends_with(".ndjson") {
            crate::lake::SourceFormat::DatasetNdjson
        } else {
            format
        };
        let o = object(&format!("file:///{name}"), format);
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        let mut emit = |b: RecordBatch| {
            let cols: Vec<Vec<Option<String>>> = columns.iter().map(|c| texts(&b, c)).collect();
            for r in 0..b.num_rows() {
                rows.push(cols.iter().map(|c| c[r].clone()).collect());
            }
            Ok(())
        };
        let limits = StageLimits {
            max_record_bytes: 1 << 20,
        };
        let staged = stage_object(&o, &data[..], columns, 0, limits, &[], &mut emit).unwrap();
        (rows, staged)
    }

    fn same_value(a: &Option<String>, b: &Option<String>) -> bool {
        match (a, b) {
            (Some(x), Some(y)) => {
                x == y || matches!((x.parse::<f64>(), y.parse::<f64>()), (Ok(p), Ok(q)) if p == q)
            }
            (None, None) => true,
            _ => false,
        }
    }

    /// The CDISC pilot's ADSL (254 subjects × 49 variables) as a SAS transport file written by pyreadstat
    /// reads exactly as pyreadstat reads it back (readback.json, by make.py), and as the same data in
    /// Parquet and in both Dataset-JSON forms; its numbers equal R's foreign::read.xport (readback_r.csv).
    #[test]
    fn the_pilot_adsl_reads_alike_from_xpt_dataset_json_and_parquet_and_as_pyreadstat_and_r_read_it()
     {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/examples/cdiscpilot");
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("readback.json")).unwrap()).unwrap();
        let columns: Vec<String> = back["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(columns.len(), 49);
        let (xpt, staged) = stage_pilot("adsl.xpt", &columns);
        assert_eq!(xpt.len(), 254);
        let want: Vec<Vec<Option<String>>> = back["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .collect();
        assert_eq!(
            xpt, want,
            "trialflow and pyreadstat read the transport file alike, text for text"
        );
        let labels: std::collections::BTreeMap<String, String> =
            staged.labels.into_iter().collect();
        assert_eq!(labels.len(), 49);
        for (c, l) in back["labels"].as_object().unwrap() {
            assert_eq!(
                labels.get(c).map(String::as_str),
                l.as_str(),
                "label of {c}"
            );
        }
        assert_eq!(labels["TRTSDT"], "Date of First Exposure to Treatment");
        for other in ["adsl.json", "adsl.ndjson", "adsl.parquet"] {
            let (rows, staged) = stage_pilot(other, &columns);
            assert_eq!(rows.len(), 254, "{other}");
            for (i, (a, b)) in xpt.iter().zip(&rows).enumerate() {
                for (j, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!(
                        same_value(x, y),
                        "{other} row {} {}: xpt {x:?}, {other} {y:?}",
                        i + 1,
                        columns[j]
                    );
                }
            }
            // Parquet's labels sit in the embedded Arrow schema, which staging does not trust (see
            // `table::untrusted_parquet_options`)
            let want = if other == "adsl.parquet" { 0 } else { 49 };
            assert_eq!(staged.labels.len(), want, "{other}: labels");
        }
        // R: numbers as doubles (dates as day counts, as read.xport applies no format)
        let mut r = csv::Reader::from_path(dir.join("readback_r.csv")).unwrap();
        let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
        assert_eq!(header, columns);
        let header = crate::xport::parse_header("t", &std::fs::read(dir.join("adsl.xpt")).unwrap())
            .unwrap()
            .unwrap();
        let days = |t: &str| -> f64 {
            // days since 1960-01-01 of an ISO date, as the staged text holds it
            let d: Vec<i64> = t.split('-').map(|x| x.parse().unwrap()).collect();
            let (y, m) = if d[1] <= 2 {
                (d[0] - 1, d[1] + 9)
            } else {
                (d[0], d[1] - 3)
            };
            let era = y.div_euclid(400);
            let yoe = y - era * 400;
            let doy = (153 * m + 2) / 5 + d[2] - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            (era * 146_097 + doe - 719_468 + 3653) as f64
        };
        let mut compared = 0;
        for (i, rec) in r.records().enumerate() {
            let rec = rec.unwrap();
            for (j, v) in header.variables.iter().enumerate() {
                let theirs = rec[j].trim();
                let ours = xpt[i][j].as_deref();
                match (v.numeric, ours) {
                    (_, None) => {
                        assert!(theirs.is_empty(), "row {} {}: R {theirs:?}", i + 1, v.name)
                    }
                    (true, Some(t)) => {
                        let x = if v.kind == crate::sas::NumberKind::Date {
                            days(t)
                        } else {
                            t.parse().unwrap()
                        };
                        assert_eq!(
                            x,
                            theirs.parse::<f64>().unwrap(),
                            "row {} {}",
                            i + 1,
                            v.name
                        );
                        compared += 1;
                    }
                    (false, Some(t)) => assert_eq!(t, theirs, "row {} {}", i + 1, v.name),
                }
            }
        }
        assert!(compared > 254 * 15, "{compared} numbers compared with R");
    }

    /// Damaged copies of the pilot's transport and Dataset-JSON files (bytes overwritten, cut, or repeated,
    /// from a fixed seed: the same 3,000 every run) stage or fail with an error, never a panic; the fuzz
    /// target `stage` does the same without end.
    #[test]
    fn damaged_transport_and_dataset_json_files_are_errors_never_panics() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/examples/cdiscpilot");
        let cols: Vec<String> = ["USUBJID", "AGE", "TRTSDT", "SEX"]
            .map(String::from)
            .to_vec();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut failed, mut read) = (0, 0);
        let v8 = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/xpt/small_v8.xpt");
        for (file, format) in [
            ("adsl.xpt", crate::lake::SourceFormat::Xpt),
            ("adsl.json", crate::lake::SourceFormat::DatasetJson),
            ("adsl.ndjson", crate::lake::SourceFormat::DatasetNdjson),
            (v8.to_str().unwrap(), crate::lake::SourceFormat::Xpt),
        ] {
            let good = std::fs::read(dir.join(file)).unwrap();
            for _ in 0..1000 {
                let mut bad = good.clone();
                // mostly in the header, where a byte decides how the rest is read
                let span = if next() % 2 == 0 {
                    4096.min(bad.len())
                } else {
                    bad.len()
                };
                match next() % 3 {
                    0 => {
                        for _ in 0..1 + next() % 8 {
                            let at = (next() as usize) % span;
                            bad[at] = next() as u8;
                        }
                    }
                    1 => bad.truncate((next() as usize) % bad.len()),
                    _ => {
                        let at = (next() as usize) % span;
                        let piece =
                            bad[at..(at + 1 + (next() as usize) % 200).min(bad.len())].to_vec();
                        bad.splice(at..at, piece);
                    }
                }
                let o = object(&format!("file:///{file}"), format);
                let mut emit = |_b: RecordBatch| Ok(());
                let limits = StageLimits {
                    max_record_bytes: 1 << 16,
                };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    stage_object(&o, &bad[..], &cols, 0, limits, &[], &mut emit).is_ok()
                }));
                match outcome {
                    Ok(true) => read += 1,
                    Ok(false) => failed += 1,
                    Err(_) => panic!("{file}: a damaged copy panicked"),
                }
            }
        }
        assert!(failed > 1500 && read > 100, "{failed} refused, {read} read");
    }

    /// Found by `cargo xtask fuzz` (stage): a Parquet footer placing a column chunk at a negative offset
    /// made the parquet crate assert ("column start and length should not be negative") and abort.
    #[test]
    fn fuzz_finding_a_footer_placing_data_outside_the_file_is_an_error_not_a_panic() {
        let data =
            include_bytes!("../tests/fixtures/fuzz/stage-parquet-negative-column-offset.bin");
        let cols = vec!["id".to_string(), "age".to_string()];
        let file = spool("file:///t.parquet", &data[1..]).unwrap();
        let mut emit = |_b: RecordBatch| Ok(());
        let st = Stager::new("file:///t.parquet", &cols, 0, &mut emit);
        let e = stage_parquet(st, file, &cols, 1 << 20).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("file:///t.parquet") && m.contains("outside the file"),
            "{m}"
        );
    }

    /// Found by `cargo xtask fuzz` (stage): a file whose embedded Arrow schema (the `ARROW:schema` key of
    /// the footer) names a type arrow-ipc does not know made it hit `unimplemented!`. The embedded schema is
    /// not read (every column is read as text anyway).
    #[test]
    fn fuzz_finding_an_unknown_embedded_arrow_type_is_read_without_the_embedded_schema() {
        let data =
            include_bytes!("../tests/fixtures/fuzz/stage-parquet-bad-embedded-arrow-schema.bin");
        let cols = vec!["id".to_string(), "age".to_string()];
        let file = spool("file:///t.parquet", &data[1..]).unwrap();
        let mut emit = |_b: RecordBatch| Ok(());
        let st = Stager::new("file:///t.parquet", &cols, 0, &mut emit);
        // read or refused, but answered
        let _ = stage_parquet(st, file, &cols, 1 << 20);
    }

    /// Found by `cargo xtask fuzz` (stage): a data page on which parquet 59's bit unpacker asserts
    /// (`bit_util.rs`, "num_bits <= BIT_CAPACITY"); nothing in the footer tells it beforehand, so the staging
    /// entry point turns the decoder's panic into bad data.
    #[test]
    fn fuzz_finding_a_page_the_parquet_decoder_asserts_on_is_bad_data() {
        let data = include_bytes!(
            "../tests/fixtures/fuzz/stage-parquet-page-that-asserts-in-the-decoder.bin"
        );
        let cols = vec!["id".to_string(), "age".to_string()];
        let o = object("file:///t.parquet", crate::lake::SourceFormat::Parquet);
        let mut emit = |_b: RecordBatch| Ok(());
        let limits = StageLimits {
            max_record_bytes: 1 << 20,
        };
        let e = stage_object(&o, &data[1..], &cols, 0, limits, &[], &mut emit).unwrap_err();
        assert!(e.to_string().contains("file:///t.parquet"), "{e}");
    }

    #[test]
    fn parquet_is_read_from_a_spooled_file_row_group_by_row_group() {
        use parquet::arrow::ArrowWriter;
        use parquet::file::properties::WriterProperties;
        let cols = vec!["id".to_string()];
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let mut bytes = Vec::new();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(10))
            .build();
        let mut w = ArrowWriter::try_new(&mut bytes, schema.clone(), Some(props)).unwrap();
        let ids: Vec<String> = (0..35).map(|i| format!("S-{i}")).collect();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(ids))]).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let file = spool("u", &bytes[..]).unwrap();
        let mut out = Vec::new();
        let mut emit = |b: RecordBatch| {
            out.push(b);
            Ok(())
        };
        let st = Stager::new("u", &cols, 0, &mut emit);
        let staged = stage_parquet(st, file, &cols, 4096).unwrap();
        assert_eq!(staged.next_row, 35);
        let b = arrow::compute::concat_batches(&staged_schema(&cols), &out).unwrap();
        assert_eq!(lines(&b), (1..=35).collect::<Vec<i64>>());
        // a row group whose rows average more than the bound is refused before it is decoded
        let file = spool("u", &bytes[..]).unwrap();
        let mut emit = |_b: RecordBatch| Ok(());
        let st = Stager::new("file:///t.parquet", &cols, 0, &mut emit);
        let e = stage_parquet(st, file, &cols, 1).unwrap_err();
        assert!(e.to_string().contains("max_record_bytes"), "{e}");
    }

    #[test]
    fn trims_nulls_empties_and_numbers_lines() {
        let cols = vec!["id".to_string(), "age".to_string()];
        let b = stage_csv("u", b"age,id,x\n 61 ,a,z\n,b,z\n\"7\n\",c,z\n", &cols, 10).unwrap();
        assert_eq!(b.num_rows(), 3);
        let age = b.column_by_name("age").unwrap().as_string::<i32>();
        assert_eq!(age.value(0), "61");
        assert!(age.is_null(1));
        let line = b
            .column_by_name("_line")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!((line.value(0), line.value(1), line.value(2)), (2, 3, 4));
        let row = b
            .column_by_name("_row")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(row.value(2), 12);
    }

    #[test]
    fn a_character_split_across_two_fields_is_a_defect_though_the_record_reads_as_utf8() {
        let cols = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // "é" is C3 A9: the record's bytes are valid UTF-8 only when the fields are joined.
        let b = stage_csv("u", b"a,b,c\nx,\xC3,\xA9\ny,\xC3\xA9,z\n", &cols, 0).unwrap();
        let defect = b.column_by_name("_defect").unwrap().as_string::<i32>();
        assert!(
            defect.value(0).contains("field `b` is not UTF-8"),
            "{}",
            defect.value(0)
        );
        assert!(defect.is_null(1));
        let bcol = b.column_by_name("b").unwrap().as_string::<i32>();
        assert_eq!(bcol.value(1), "é");
    }

    #[test]
    fn missing_column_is_bad_data_naming_it() {
        let e = stage_csv("file:///t.csv", b"a\n1\n", &["b".to_string()], 0).unwrap_err();
        assert!(e.to_string().contains("file:///t.csv") && e.to_string().contains("`b`"));
    }
}
