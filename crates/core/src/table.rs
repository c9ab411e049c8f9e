//! Parquet tables in storage: the format stages hand each other. Written whole (zstd) and put atomically.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};

use crate::{Error, Result, Storage};

pub(crate) fn writer_properties() -> WriterProperties {
    writer_properties_builder().build()
}

fn writer_properties_builder() -> WriterPropertiesBuilder {
    use parquet::file::properties::EnabledStatistics;
    use parquet::schema::types::ColumnPath;
    let (id, source, line) = (
        ColumnPath::from("subject_id"),
        ColumnPath::from("_source"),
        ColumnPath::from("_line"),
    );
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        // Pseudonyms are unique per row: a dictionary only costs time before the writer gives it up, and
        // their min/max prune nothing (a comparison per row for no use).
        .set_column_dictionary_enabled(id.clone(), false)
        .set_column_statistics_enabled(id, EnabledStatistics::None)
        // The lineage columns: one long URL repeated (its min/max cost a full comparison per row and
        // prune nothing), and line numbers that mostly step by one (a delta each, almost no bits).
        .set_column_statistics_enabled(source, EnabledStatistics::None)
        .set_column_dictionary_enabled(line.clone(), false)
        .set_column_encoding(line, parquet::basic::Encoding::DELTA_BINARY_PACKED)
}

/// Rows of a table's first batch looked at to choose each column's encoding.
const DICTIONARY_SAMPLE_ROWS: usize = 4096;

/// The writer properties for a table whose first batch is `first`: as [`writer_properties`], and no
/// dictionary for a column whose first values are mostly distinct (a derived ratio such as BMI, a
/// measurement with many decimals). There a dictionary holds about every value once more: each row costs a
/// hash lookup in a table that outgrows the cache, and the pages come out no smaller. Chosen from the data,
/// not from the contract, so any trial's export gets it; the same first batch gives the same choice, so
/// the same batches still give the same bytes.
pub(crate) fn writer_properties_for(first: Option<&RecordBatch>) -> WriterProperties {
    let mut props = writer_properties_builder();
    if let Some(first) = first {
        for (field, column) in first.schema().fields().iter().zip(first.columns()) {
            if mostly_distinct(column.as_ref()) {
                props = props.set_column_dictionary_enabled(
                    parquet::schema::types::ColumnPath::from(field.name().as_str()),
                    false,
                );
            }
        }
    }
    props.build()
}

/// Whether more than three quarters of the first [`DICTIONARY_SAMPLE_ROWS`] values of `column` that are
/// not NULL are distinct (at least 256 of them; fewer tell nothing). Only flat columns of numbers or text:
/// anything else keeps the writer's default.
fn mostly_distinct(column: &dyn arrow::array::Array) -> bool {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type};
    let sample = column.slice(0, column.len().min(DICTIONARY_SAMPLE_ROWS));
    let values = sample.len() - sample.null_count();
    if values < 256 {
        return false;
    }
    let distinct = match sample.data_type() {
        DataType::Float64 => distinct_count(
            sample
                .as_primitive::<Float64Type>()
                .iter()
                .flatten()
                .map(f64::to_bits),
        ),
        DataType::Float32 => distinct_count(
            sample
                .as_primitive::<Float32Type>()
                .iter()
                .flatten()
                .map(f32::to_bits),
        ),
        DataType::Int64 => distinct_count(sample.as_primitive::<Int64Type>().iter().flatten()),
        DataType::Int32 => distinct_count(sample.as_primitive::<Int32Type>().iter().flatten()),
        DataType::Utf8 => distinct_count(sample.as_string::<i32>().iter().flatten()),
        DataType::LargeUtf8 => distinct_count(sample.as_string::<i64>().iter().flatten()),
        DataType::Utf8View => distinct_count(sample.as_string_view().iter().flatten()),
        _ => return false,
    };
    distinct * 4 > values * 3
}

fn distinct_count<T: std::hash::Hash + Eq>(values: impl Iterator<Item = T>) -> usize {
    let mut seen = std::collections::HashSet::with_capacity_and_hasher(
        DICTIONARY_SAMPLE_ROWS,
        foldhash::fast::FixedState::default(),
    );
    for v in values {
        seen.insert(v);
    }
    seen.len()
}

/// Encodes batches as one Parquet file (zstd). Deterministic: the same batches give the same bytes.
pub fn encode_parquet(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let props = writer_properties_for(batches.first());
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(Error::bug)?;
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

/// How a Parquet file someone else wrote is opened: without the Arrow schema embedded in its footer (an IPC
/// message arrow-ipc decodes with `unimplemented!` for types it does not know); the columns' own Parquet types
/// are read instead.
pub fn untrusted_parquet_options() -> parquet::arrow::arrow_reader::ArrowReaderOptions {
    parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_skip_arrow_metadata(true)
}

/// Checks what a Parquet footer declares against the file it came with, before any page is read: every
/// column chunk's offset and length non-negative and inside the file's `file_len` bytes, row counts not
/// negative. The parquet crate asserts (panics) on some of these and sizes reads from the others.
pub fn check_parquet_layout(
    meta: &parquet::file::metadata::ParquetMetaData,
    file_len: u64,
) -> std::result::Result<(), String> {
    for (g, rg) in meta.row_groups().iter().enumerate() {
        if rg.num_rows() < 0 {
            return Err(format!("row group {g} declares a negative row count"));
        }
        for c in rg.columns() {
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let len = c.compressed_size();
            let inside = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(s, l)| s.checked_add(l))
                .is_some_and(|end| end <= file_len);
            if !inside || c.data_page_offset() < 0 {
                return Err(format!(
                    "row group {g}, column `{}`: the footer places its data outside the file's {file_len} bytes",
                    c.column_path()
                ));
            }
        }
    }
    Ok(())
}

/// Reads every Parquet object under `prefix` (sorted by path) into batches.
pub async fn read_parquet_prefix(store: &Storage, prefix: &str) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for e in store.list(prefix).await? {
        if e.path.ends_with(".parquet") {
            out.extend(read_parquet_file(store, &e.path).await?);
        }
    }
    Ok(out)
}

/// Every batch of the Parquet file at `path`.
pub async fn read_parquet_file(store: &Storage, path: &str) -> Result<Vec<RecordBatch>> {
    let bytes = store.get(path).await?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|err| {
            Error::bad_data(
                store.display(path),
                format!("not a readable Parquet file: {err}"),
            )
        })?;
    reader
        .map(|batch| {
            batch.map_err(|err| {
                Error::bad_data(store.display(path), format!("reading Parquet: {err}"))
            })
        })
        .collect()
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

/// `schema` with every field nullable: execution may relax what a plan promised, and a Parquet file has one
/// schema for all its batches.
pub fn nullable(schema: &arrow::datatypes::Schema) -> SchemaRef {
    std::sync::Arc::new(arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

enum SinkMessage {
    Batch(RecordBatch),
    EndRowGroup,
    Finish(Vec<(String, String)>),
}

/// A Parquet object written batch by batch (zstd, as [`write_parquet`]) while the producer goes on: encoding
/// runs on a blocking thread and the bytes go up as a multipart upload, so memory stays at about one row
/// group whatever the table's size. The object appears only when [`ParquetSink::finish`] completes the
/// upload; a sink dropped (or failed) before that aborts it and leaves the previous object in place.
pub struct ParquetSink {
    schema: SchemaRef,
    tx: Option<tokio::sync::mpsc::Sender<SinkMessage>>,
    done: tokio::task::JoinHandle<Result<u64>>,
    location: String,
}

/// `std::io::Write` over the multipart upload, for the encoder's thread.
pub(crate) struct BlockingUpload {
    handle: tokio::runtime::Handle,
    writer: object_store::buffered::BufWriter,
}

impl std::io::Write for BlockingUpload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncWriteExt;
        self.handle.block_on(self.writer.write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const UPLOAD_PART_BYTES: usize = 16 << 20;

/// The encoder's side of a multipart upload: opened, completed (the object appears) or aborted.
pub(crate) type Upload = std::io::BufWriter<BlockingUpload>;

/// Opens the upload of `rel`; call from a runtime, write from a blocking thread.
pub(crate) fn open_upload(store: &Storage, rel: &str) -> Result<Upload> {
    let writer = object_store::buffered::BufWriter::with_capacity(
        store.object_store(),
        store.path(rel)?,
        UPLOAD_PART_BYTES,
    );
    let handle = tokio::runtime::Handle::current();
    // Large writes: each one into the upload is a trip through the runtime.
    Ok(std::io::BufWriter::with_capacity(
        4 << 20,
        BlockingUpload { handle, writer },
    ))
}

/// Completes `upload`: the object appears whole.
pub(crate) fn complete_upload(upload: Upload, location: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::infra(location.to_string(), format!("{what}: {e}"))
    };
    let mut up = upload
        .into_inner()
        .map_err(|e| fail("writing parquet", e.error()))?;
    let h = up.handle.clone();
    h.block_on(up.writer.shutdown())
        .map_err(|e| fail("completing the upload", &e))
}

/// Never published: aborting only frees the staged parts (best effort).
pub(crate) fn abort_upload(upload: &mut Upload) {
    let up = upload.get_mut();
    let h = up.handle.clone();
    let _ = h.block_on(up.writer.abort());
}
const SINK_BATCHES: usize = 8;

impl ParquetSink {
    /// Every batch written is taken as having `schema` (same columns; see [`nullable`]).
    pub fn create(store: &Storage, rel: &str, schema: SchemaRef) -> Result<Self> {
        let location = store.display(rel);
        let upload = open_upload(store, rel)?;
        // Room for a row group's worth of batches: a producer that gathers rows by split hands one over at once.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SinkMessage>(SINK_BATCHES);
        let at = location.clone();
        let encoder_schema = schema.clone();
        let done = tokio::task::spawn_blocking(move || {
            let fail = |what: &str, e: &dyn std::fmt::Display| {
                Error::infra(at.clone(), format!("{what}: {e}"))
            };
            // Opened at the first batch, whose values choose the columns' encodings.
            let mut upload = Some(upload);
            let mut writer: Option<ArrowWriter<Upload>> = None;
            let open = |first: Option<&RecordBatch>, upload: &mut Option<Upload>| {
                let upload = upload
                    .take()
                    .ok_or_else(|| Error::Internal(format!("{at}: the encoder opened twice")))?;
                ArrowWriter::try_new(
                    upload,
                    encoder_schema.clone(),
                    Some(writer_properties_for(first)),
                )
                .map_err(|e| fail("encoding parquet", &e))
            };
            let mut rows = 0u64;
            let mut finished = false;
            let mut failure = None;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    SinkMessage::Batch(b) => {
                        rows += b.num_rows() as u64;
                        let w = match &mut writer {
                            Some(w) => w,
                            None => match open(Some(&b), &mut upload) {
                                Ok(w) => writer.insert(w),
                                Err(e) => {
                                    failure = Some(e);
                                    break;
                                }
                            },
                        };
                        if let Err(e) = w.write(&b) {
                            failure = Some(fail("encoding parquet", &e));
                            break;
                        }
                    }
                    SinkMessage::EndRowGroup => {
                        if let Some(Err(e)) = writer.as_mut().map(|w| w.flush()) {
                            failure = Some(fail("encoding parquet", &e));
                            break;
                        }
                    }
                    SinkMessage::Finish(metadata) => {
                        let w = match &mut writer {
                            Some(w) => w,
                            None => match open(None, &mut upload) {
                                Ok(w) => writer.insert(w),
                                Err(e) => {
                                    failure = Some(e);
                                    break;
                                }
                            },
                        };
                        for (key, value) in metadata {
                            w.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                                key, value,
                            ));
                        }
                        finished = true;
                        break;
                    }
                }
            }
            if finished
                && failure.is_none()
                && let Some(w) = writer.take()
            {
                let upload = w.into_inner().map_err(|e| fail("encoding parquet", &e))?;
                complete_upload(upload, &at)?;
                return Ok(rows);
            }
            match (&mut writer, &mut upload) {
                (Some(w), _) => abort_upload(w.inner_mut()),
                (None, Some(u)) => abort_upload(u),
                (None, None) => {}
            }
            Err(failure.unwrap_or_else(|| fail("writing parquet", &"the producer stopped")))
        });
        Ok(Self {
            schema,
            tx: Some(tx),
            done,
            location,
        })
    }

    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
            .map_err(|e| Error::Internal(format!("{}: {e}", self.location)))?;
        self.send(SinkMessage::Batch(batch)).await
    }

    /// Ends the row group being written: the rows written since the last one form one row group (none when
    /// there are none). The writer also ends one by itself at its maximum row-group size.
    pub async fn end_row_group(&mut self) -> Result<()> {
        self.send(SinkMessage::EndRowGroup).await
    }

    async fn send(&mut self, msg: SinkMessage) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The encoder stopped early: its error says why.
        self.tx = None;
        Err(self.wait().await.err().unwrap_or_else(|| {
            Error::Internal(format!("{}: the parquet encoder stopped", self.location))
        }))
    }

    async fn wait(&mut self) -> Result<u64> {
        (&mut self.done)
            .await
            .map_err(|e| Error::Internal(format!("{}: parquet encoder: {e}", self.location)))?
    }

    /// Completes the object; returns the rows written.
    pub async fn finish(self) -> Result<u64> {
        self.finish_with(Vec::new()).await
    }

    /// Completes the object with `metadata` (key, value) in its footer; returns the rows written.
    pub async fn finish_with(mut self, metadata: Vec<(String, String)>) -> Result<u64> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(SinkMessage::Finish(metadata)).await;
        }
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn columns_of_mostly_distinct_values_are_told_from_repeated_levels() {
        let unique: Vec<f64> = (0..4096).map(|i| f64::from(i) / 7.0).collect();
        assert!(mostly_distinct(&Float64Array::from(unique.clone())));
        // Beyond the sample, repeats change nothing: only the first rows are looked at.
        let mut long = unique;
        long.extend(std::iter::repeat_n(1.0, 10_000));
        assert!(mostly_distinct(&Float64Array::from(long)));
        let levels: Vec<i64> = (0..4096).map(|i| i % 40).collect();
        assert!(!mostly_distinct(&Int64Array::from(levels)));
        let ids: Vec<String> = (0..1000).map(|i| format!("id-{i}")).collect();
        assert!(mostly_distinct(&StringArray::from(ids.clone())));
        // Three quarters distinct (749 ids and "x") is not enough; a few more is.
        let mut three_quarters: Vec<String> = ids[..749].to_vec();
        three_quarters.extend(std::iter::repeat_n("x".to_string(), 251));
        assert!(!mostly_distinct(&StringArray::from(three_quarters)));
        let mut more: Vec<String> = ids[..752].to_vec();
        more.extend(std::iter::repeat_n("x".to_string(), 248));
        assert!(mostly_distinct(&StringArray::from(more)));
        // Too few values to judge, NULLs not counted, and types it does not look at keep the default.
        assert!(!mostly_distinct(&Float64Array::from(vec![1.0, 2.0, 3.0])));
        let sparse: Vec<Option<f64>> = (0..4096)
            .map(|i| (i % 20 == 0).then_some(f64::from(i)))
            .collect();
        assert!(!mostly_distinct(&Float64Array::from(sparse)));
        let flags: Vec<bool> = (0..4096).map(|i| i % 2 == 0).collect();
        assert!(!mostly_distinct(&BooleanArray::from(flags)));
    }

    /// Which columns of the file's first row group have a dictionary page.
    fn with_dictionary(bytes: Vec<u8>) -> Vec<(String, bool)> {
        let reader =
            parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        use parquet::file::reader::FileReader;
        let rg = reader.metadata().row_group(0);
        rg.columns()
            .iter()
            .map(|c| {
                (
                    c.column_path().string(),
                    c.dictionary_page_offset().is_some(),
                )
            })
            .collect()
    }

    #[test]
    fn a_tables_first_batch_chooses_which_columns_get_a_dictionary() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ratio", DataType::Float64, true),
            Field::new("level", DataType::Utf8, true),
            Field::new("code", DataType::Int64, true),
        ]));
        let rows = 5000;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| f64::from(i) / 3.0),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| ["F", "M"][i as usize % 2]),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|i| i64::from(i % 7)),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let bytes = encode_parquet(schema.clone(), std::slice::from_ref(&batch)).unwrap();
        assert_eq!(
            with_dictionary(bytes.clone()),
            vec![
                ("ratio".to_string(), false),
                ("level".to_string(), true),
                ("code".to_string(), true)
            ]
        );
        // The same batches, the same bytes; and the rows read back as written.
        assert_eq!(
            bytes,
            encode_parquet(schema.clone(), std::slice::from_ref(&batch)).unwrap()
        );
        let back = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap()
            .collect::<std::result::Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(
            arrow::compute::concat_batches(&schema, &back).unwrap(),
            batch
        );
    }

    #[tokio::test]
    async fn a_sink_chooses_from_its_first_batch_and_an_empty_one_still_writes_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("ratio", DataType::Float64, true),
            Field::new("code", DataType::Int64, true),
        ]));
        let batch = |from: i32| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Float64Array::from_iter_values(
                        (from..from + 3000).map(|i| f64::from(i) / 3.0),
                    )) as ArrayRef,
                    Arc::new(Int64Array::from_iter_values(
                        (from..from + 3000).map(|i| i64::from(i % 5)),
                    )),
                ],
            )
            .unwrap()
        };
        let mut sink = ParquetSink::create(&store, "a.parquet", schema.clone()).unwrap();
        sink.write(batch(0)).await.unwrap();
        sink.write(batch(3000)).await.unwrap();
        assert_eq!(sink.finish().await.unwrap(), 6000);
        let bytes = std::fs::read(dir.path().join("a.parquet")).unwrap();
        assert_eq!(
            with_dictionary(bytes.clone()),
            vec![("ratio".to_string(), false), ("code".to_string(), true)]
        );
        assert_eq!(
            bytes,
            encode_parquet(schema.clone(), &[batch(0), batch(3000)]).unwrap()
        );

        let empty = ParquetSink::create(&store, "empty.parquet", schema.clone()).unwrap();
        assert_eq!(empty.finish().await.unwrap(), 0);
        let bytes = std::fs::read(dir.path().join("empty.parquet")).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(reader.schema().as_ref(), schema.as_ref());
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    }
}
