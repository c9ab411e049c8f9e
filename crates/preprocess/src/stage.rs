//! Raw CSV objects → the `staged` table: every contract column as trimmed text (empty = NULL), plus the
//! lineage columns `_row` (global input order), `_source` (source URL), `_line` (line of the record in its
//! file) and `_rowhash` (hash of the record's contract fields, to tell exact duplicates from repeated ids).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sha2::{Digest, Sha256};
use trialflow_core::{Error, Result};

pub fn staged_schema(columns: &[String]) -> SchemaRef {
    let mut fields = vec![
        Field::new("_row", DataType::Int64, false),
        Field::new("_source", DataType::Utf8, false),
        Field::new("_line", DataType::Int64, false),
        Field::new("_rowhash", DataType::Utf8, false),
        // Why the record itself is malformed (ragged, not UTF-8): such rows are quarantined whole.
        Field::new("_defect", DataType::Utf8, true),
    ];
    fields.extend(columns.iter().map(|c| Field::new(c, DataType::Utf8, true)));
    Arc::new(Schema::new(fields))
}

/// The staged table's builders: lineage columns plus one text column per contract column.
struct Stager {
    url: String,
    row: Int64Builder,
    source: StringBuilder,
    line: Int64Builder,
    hash: StringBuilder,
    defect: StringBuilder,
    cols: Vec<StringBuilder>,
    next: i64,
}

impl Stager {
    fn new(url: &str, columns: &[String], first_row: i64) -> Self {
        Self {
            url: url.to_string(),
            row: Int64Builder::new(),
            source: StringBuilder::new(),
            line: Int64Builder::new(),
            hash: StringBuilder::new(),
            defect: StringBuilder::new(),
            cols: columns.iter().map(|_| StringBuilder::new()).collect(),
            next: first_row,
        }
    }

    /// One record: `values[i]` is contract column i as text (trimmed here; empty = NULL).
    fn push<'a>(
        &mut self,
        line: u64,
        values: impl Iterator<Item = Option<&'a str>>,
        defect: Option<&str>,
    ) {
        let mut h = Sha256::new();
        for (b, v) in self.cols.iter_mut().zip(values) {
            let v = v.map(str::trim).unwrap_or("");
            h.update((v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
            if v.is_empty() {
                b.append_null()
            } else {
                b.append_value(v)
            }
        }
        self.row.append_value(self.next);
        self.source.append_value(&self.url);
        self.line.append_value(line as i64);
        self.hash.append_value(hex::encode(&h.finalize()[..12]));
        self.defect.append_option(defect);
        self.next += 1;
    }

    fn finish(mut self, columns: &[String]) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.row.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.hash.finish()),
            Arc::new(self.defect.finish()),
        ];
        arrays.extend(
            self.cols
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        RecordBatch::try_new(staged_schema(columns), arrays)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

fn missing(url: &str, c: &str, what: &str) -> Error {
    Error::bad_data(
        url,
        format!("required column `{c}` is missing from the {what}"),
    )
}

/// Stages one raw object of any source format. `first_row` numbers rows globally across sources.
pub fn stage_object(
    o: &trialflow_core::lake::CurrentObject,
    bytes: &[u8],
    columns: &[String],
    first_row: i64,
) -> Result<RecordBatch> {
    use trialflow_core::lake::SourceFormat;
    let url = o.url.as_str();
    let (delimiter, quote) = (o.delimiter as u8, o.quote as u8);
    match o.format {
        SourceFormat::Csv => stage_csv_with(url, bytes, columns, first_row, delimiter, quote),
        SourceFormat::CsvGzip => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes), &mut text)
                .map_err(|e| Error::bad_data(url, format!("truncated or corrupt gzip: {e}")))?;
            stage_csv_with(url, &text, columns, first_row, delimiter, quote)
        }
        SourceFormat::CsvZstd => {
            let text = zstd::stream::decode_all(bytes)
                .map_err(|e| Error::bad_data(url, format!("truncated or corrupt zstd: {e}")))?;
            stage_csv_with(url, &text, columns, first_row, delimiter, quote)
        }
        SourceFormat::Ndjson => stage_ndjson(url, bytes, columns, first_row),
        SourceFormat::Parquet => stage_parquet(url, bytes, columns, first_row),
    }
}

/// Parses one CSV object with its dialect.
fn stage_csv_with(
    url: &str,
    bytes: &[u8],
    columns: &[String],
    first_row: i64,
    delimiter: u8,
    quote: u8,
) -> Result<RecordBatch> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .delimiter(delimiter)
        .quote(quote)
        .from_reader(bytes);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::bad_data(format!("{url}:1"), format!("unreadable CSV header: {e}")))?
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
    let mut st = Stager::new(url, columns, first_row);
    let mut rec = csv::ByteRecord::new();
    let mut texts: Vec<Option<String>> = Vec::with_capacity(columns.len());
    loop {
        let pos_line = rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let l = e.position().map(|p| p.line()).unwrap_or(pos_line);
                // The message says what is wrong, never the cell's content.
                return Err(Error::bad_data(
                    format!("{url}:{l}"),
                    "malformed CSV record",
                ));
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
        texts.clear();
        for (c, &i) in columns.iter().zip(&idx) {
            let v = match rec.get(i).map(std::str::from_utf8) {
                None => None,
                Some(Ok(v)) => Some(v.to_string()),
                Some(Err(_)) => {
                    defect.get_or_insert_with(|| format!("field `{c}` is not UTF-8 text"));
                    None
                }
            };
            texts.push(v);
        }
        st.push(
            record_line,
            texts.iter().map(|v| v.as_deref()),
            defect.as_deref(),
        );
    }
    st.finish(columns)
}

/// One JSON object per line; values become text as the CSV path sees them (numbers as written, booleans as
/// `true`/`false`, null as NULL). Nested values are refused, naming the line and key.
fn stage_ndjson(
    url: &str,
    bytes: &[u8],
    columns: &[String],
    first_row: i64,
) -> Result<RecordBatch> {
    let mut st = Stager::new(url, columns, first_row);
    let mut values: Vec<Option<String>> = Vec::with_capacity(columns.len());
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i as u64 + 1;
        let at = || format!("{url}:{line}");
        let text = std::str::from_utf8(raw).map_err(|_| Error::bad_data(at(), "not UTF-8 text"))?;
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
        st.push(line, values.iter().map(|v| v.as_deref()), None);
    }
    st.finish(columns)
}

/// Parquet columns cast to text; `_line` is the row's position in the file (1-based).
fn stage_parquet(
    url: &str,
    bytes: &[u8],
    columns: &[String],
    first_row: i64,
) -> Result<RecordBatch> {
    use arrow::array::{Array, AsArray};
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::copy_from_slice(bytes),
    )
    .and_then(|b| b.with_batch_size(8192).build())
    .map_err(|e| Error::bad_data(url, format!("not a readable Parquet file: {e}")))?;
    let mut st = Stager::new(url, columns, first_row);
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
            );
        }
    }
    st.finish(columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn trims_nulls_empties_and_numbers_lines() {
        let cols = vec!["id".to_string(), "age".to_string()];
        let b = stage_csv_with(
            "u",
            b"age,id,x\n 61 ,a,z\n,b,z\n\"7\n\",c,z\n",
            &cols,
            10,
            b',',
            b'"',
        )
        .unwrap();
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
    fn missing_column_is_bad_data_naming_it() {
        let e = stage_csv_with(
            "file:///t.csv",
            b"a\n1\n",
            &["b".to_string()],
            0,
            b',',
            b'"',
        )
        .unwrap_err();
        assert!(e.to_string().contains("file:///t.csv") && e.to_string().contains("`b`"));
    }
}
