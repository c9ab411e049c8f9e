//! Raw objects → batches of the `staged` table: every contract column as trimmed text (empty = NULL), plus the
//! lineage columns `_row` (global input order), `_source` (source URL), `_line` (line of the record in its
//! file) and `_rowhash` (hash of the record's contract fields, to tell exact duplicates from repeated ids).
//! Objects are read as streams and handed on in batches of [`BATCH_ROWS`], so memory does not grow with them.

use std::hash::{BuildHasher, Hash, Hasher};
use std::io::Read;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringArray, StringBuilder, UInt64Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use trialflow_core::lake::CurrentObject;
use trialflow_core::{Error, Result};

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
    emit: &'a mut Emit<'a>,
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
            emit,
        }
    }

    /// One record: `values[i]` is contract column i as text (trimmed here; empty = NULL).
    fn push<'v>(
        &mut self,
        line: u64,
        values: impl Iterator<Item = Option<&'v str>>,
        defect: Option<&str>,
    ) -> Result<()> {
        // Only compared within one run (exact duplicate or not), so any fixed-seed hash will do.
        let mut h = foldhash::fast::FixedState::with_seed(0x7269_616c_666c_6f77).build_hasher();
        for (b, v) in self.cols.iter_mut().zip(values) {
            let v = v.map(str::trim).unwrap_or("");
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

    /// Flushes the last batch; returns the next global row number.
    fn finish(mut self) -> Result<i64> {
        self.flush()?;
        Ok(self.next)
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
/// sources; returns the row number after this object's last row.
pub fn stage_object<'a>(
    o: &CurrentObject,
    reader: impl Read,
    columns: &[String],
    first_row: i64,
    emit: &'a mut Emit<'a>,
) -> Result<i64> {
    use trialflow_core::lake::SourceFormat;
    let url = o.url.as_str();
    let (delimiter, quote) = (o.delimiter as u8, o.quote as u8);
    let st = Stager::new(url, columns, first_row, emit);
    match o.format {
        SourceFormat::Csv => stage_csv_with(st, reader, columns, delimiter, quote),
        SourceFormat::CsvGzip => stage_csv_with(
            st,
            flate2::read::MultiGzDecoder::new(reader),
            columns,
            delimiter,
            quote,
        ),
        SourceFormat::CsvZstd => {
            let dec = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| Error::bad_data(url, format!("corrupt zstd: {e}")))?;
            stage_csv_with(st, dec, columns, delimiter, quote)
        }
        SourceFormat::Ndjson => stage_ndjson(st, std::io::BufReader::new(reader), columns),
        SourceFormat::Parquet => {
            let mut bytes = Vec::new();
            let mut reader = reader;
            reader
                .read_to_end(&mut bytes)
                .map_err(|e| Error::bad_data(url, format!("cannot read: {e}")))?;
            stage_parquet(st, bytes, columns)
        }
    }
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

/// Parses one CSV object with its dialect.
fn stage_csv_with(
    mut st: Stager<'_>,
    reader: impl Read,
    columns: &[String],
    delimiter: u8,
    quote: u8,
) -> Result<i64> {
    let url = st.url.clone();
    let url = url.as_str();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .delimiter(delimiter)
        .quote(quote)
        .buffer_capacity(1 << 20)
        .from_reader(reader);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| {
            io_failure(url, 1, &e).unwrap_or_else(|| {
                Error::bad_data(format!("{url}:1"), format!("unreadable CSV header: {e}"))
            })
        })?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| {
            headers
                .iter()
                .position(|h| h == c)
                .ok_or_else(|| missing(url, c, "header"))
        })
        .collect::<Result<_>>()?;
    let mut rec = csv::ByteRecord::new();
    loop {
        let pos_line = rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let l = e.position().map(|p| p.line()).unwrap_or(pos_line);
                // The message says what is wrong, never the cell's content.
                return Err(io_failure(url, l, &e).unwrap_or_else(|| {
                    Error::bad_data(format!("{url}:{l}"), "malformed CSV record")
                }));
            }
        }
        let record_line = rec.position().map(|p| p.line()).unwrap_or(pos_line);
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
        st.push(record_line, texts.into_iter(), defect.as_deref())?;
    }
    st.finish()
}

/// One JSON object per line; values become text as the CSV path sees them (numbers as written, booleans as
/// `true`/`false`, null as NULL). Nested values are refused, naming the line and key.
fn stage_ndjson(
    mut st: Stager<'_>,
    mut reader: impl std::io::BufRead,
    columns: &[String],
) -> Result<i64> {
    let url = st.url.clone();
    let url = url.as_str();
    let mut values: Vec<Option<String>> = Vec::with_capacity(columns.len());
    let mut raw = Vec::new();
    let mut line = 0u64;
    loop {
        raw.clear();
        line += 1;
        let at = || format!("{url}:{line}");
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| Error::bad_data(at(), format!("cannot read the object: {e}")))?;
        if n == 0 {
            break;
        }
        let text =
            std::str::from_utf8(&raw).map_err(|_| Error::bad_data(at(), "not UTF-8 text"))?;
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            continue;
        }
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

/// Parquet columns cast to text; `_line` is the row's position in the file (1-based).
fn stage_parquet(mut st: Stager<'_>, bytes: Vec<u8>, columns: &[String]) -> Result<i64> {
    use arrow::array::{Array, AsArray};
    let url = st.url.clone();
    let url = url.as_str();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .and_then(|b| b.with_batch_size(8192).build())
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
        stage_csv_with(st, bytes, cols, b',', b'"')?;
        arrow::compute::concat_batches(&staged_schema(cols), &out).map_err(Error::bug)
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
