//! Parquet tables in storage: the format stages hand each other. Written whole (zstd) and put atomically.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::{Error, Result, Storage};

/// Encodes batches as one Parquet file (zstd). Deterministic: the same batches give the same bytes.
pub fn encode_parquet(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))
        .map_err(|e| Error::Internal(e.to_string()))?;
    for b in batches {
        w.write(b)
            .map_err(|e| Error::Internal(format!("encoding parquet: {e}")))?;
    }
    w.close()
        .map_err(|e| Error::Internal(format!("encoding parquet: {e}")))?;
    Ok(buf)
}

pub async fn write_parquet(
    store: &Storage,
    rel: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let bytes = encode_parquet(schema, batches)?;
    store.put(rel, bytes).await
}

/// Reads every Parquet object under `prefix` (sorted by path) into batches.
pub async fn read_parquet_prefix(store: &Storage, prefix: &str) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for e in store.list(prefix).await? {
        if !e.path.ends_with(".parquet") {
            continue;
        }
        let bytes = store.get(&e.path).await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|err| {
                Error::bad_data(
                    store.display(&e.path),
                    format!("not a readable Parquet file: {err}"),
                )
            })?;
        for batch in reader {
            out.push(batch.map_err(|err| {
                Error::bad_data(store.display(&e.path), format!("reading Parquet: {err}"))
            })?);
        }
    }
    Ok(out)
}

fn cast_column(
    batch: &RecordBatch,
    col: &str,
    to: &arrow::datatypes::DataType,
) -> Result<arrow::array::ArrayRef> {
    let a = batch
        .column_by_name(col)
        .ok_or_else(|| Error::bad_data("table", format!("column `{col}` is missing")))?;
    arrow::compute::cast(a, to)
        .map_err(|e| Error::bad_data("table", format!("column `{col}`: {e}")))
}

/// Column `col` of every batch as text (NULL → `None`).
pub fn strings(batches: &[RecordBatch], col: &str) -> Result<Vec<Option<String>>> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for b in batches {
        let a = cast_column(b, col, &arrow::datatypes::DataType::Utf8)?;
        let s = a.as_string::<i32>();
        out.extend((0..s.len()).map(|i| (!s.is_null(i)).then(|| s.value(i).to_string())));
    }
    Ok(out)
}

/// Column `col` of every batch as f64 (NULL → `None`).
pub fn floats(batches: &[RecordBatch], col: &str) -> Result<Vec<Option<f64>>> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for b in batches {
        let a = cast_column(b, col, &arrow::datatypes::DataType::Float64)?;
        let s = a.as_primitive::<arrow::datatypes::Float64Type>();
        out.extend((0..s.len()).map(|i| (!s.is_null(i)).then(|| s.value(i))));
    }
    Ok(out)
}

/// Column `col` of every batch as i64 (NULL → `None`).
pub fn ints(batches: &[RecordBatch], col: &str) -> Result<Vec<Option<i64>>> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for b in batches {
        let a = cast_column(b, col, &arrow::datatypes::DataType::Int64)?;
        let s = a.as_primitive::<arrow::datatypes::Int64Type>();
        out.extend((0..s.len()).map(|i| (!s.is_null(i)).then(|| s.value(i))));
    }
    Ok(out)
}
