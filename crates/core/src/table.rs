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
