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
    ];
    fields.extend(columns.iter().map(|c| Field::new(c, DataType::Utf8, true)));
    Arc::new(Schema::new(fields))
}

/// Parses one CSV object. `first_row` numbers rows globally across sources.
pub fn stage_csv(
    url: &str,
    bytes: &[u8],
    columns: &[String],
    first_row: i64,
) -> Result<RecordBatch> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::bad_data(format!("{url}:1"), format!("unreadable CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| {
            headers.iter().position(|h| h == c).ok_or_else(|| {
                Error::bad_data(
                    url,
                    format!("required column `{c}` is missing from the header"),
                )
            })
        })
        .collect::<Result<_>>()?;
    let mut row = Int64Builder::new();
    let mut source = StringBuilder::new();
    let mut line = Int64Builder::new();
    let mut hash = StringBuilder::new();
    let mut cols: Vec<StringBuilder> = columns.iter().map(|_| StringBuilder::new()).collect();
    let mut rec = csv::StringRecord::new();
    let mut n = first_row;
    loop {
        let pos_line = rdr.position().line();
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let l = e.position().map(|p| p.line()).unwrap_or(pos_line);
                // The message says what is wrong (bad UTF-8, broken quoting), never the cell's content.
                let what = match e.kind() {
                    csv::ErrorKind::Utf8 { err, .. } => {
                        format!("field {} is not valid UTF-8", err.field() + 1)
                    }
                    _ => "malformed CSV record".to_string(),
                };
                return Err(Error::bad_data(format!("{url}:{l}"), what));
            }
        }
        let record_line = rec.position().map(|p| p.line()).unwrap_or(pos_line);
        let mut h = Sha256::new();
        for (b, &i) in cols.iter_mut().zip(&idx) {
            let v = rec.get(i).map(str::trim).unwrap_or("");
            h.update((v.len() as u64).to_le_bytes());
            h.update(v.as_bytes());
            if v.is_empty() {
                b.append_null()
            } else {
                b.append_value(v)
            }
        }
        row.append_value(n);
        source.append_value(url);
        line.append_value(record_line as i64);
        hash.append_value(hex::encode(&h.finalize()[..12]));
        n += 1;
    }
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(row.finish()),
        Arc::new(source.finish()),
        Arc::new(line.finish()),
        Arc::new(hash.finish()),
    ];
    arrays.extend(cols.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    RecordBatch::try_new(staged_schema(columns), arrays).map_err(|e| Error::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

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
    fn missing_column_is_bad_data_naming_it() {
        let e = stage_csv("file:///t.csv", b"a\n1\n", &["b".to_string()], 0).unwrap_err();
        assert!(e.to_string().contains("file:///t.csv") && e.to_string().contains("`b`"));
    }
}
