//! Parquet files in storage handled a row group at a time: the footer read by range, one row group's bytes
//! fetched and decoded, or its column chunks copied into another file as they are, without decoding or
//! encoding them again (a table written once can then be laid out a second time for little more than the I/O).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowSchemaConverter, ProjectionMask, add_encoded_arrow_schema_to_metadata};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{Type, TypePtr};

use crate::table::{
    abort_upload, complete_upload, open_upload, untrusted_parquet_options, writer_properties,
};
use crate::{Error, Result, Storage};

/// One stretch of a Parquet file's bytes, read at the file's own offsets (what the parquet reader and
/// [`SerializedRowGroupWriter::append_column`](parquet::file::writer::SerializedRowGroupWriter::append_column)
/// ask for); an offset outside the stretch is an error, never a panic.
#[derive(Clone)]
pub struct FileSlice {
    start: u64,
    bytes: Bytes,
    file_len: u64,
}

impl FileSlice {
    fn range(&self, start: u64, len: Option<usize>) -> parquet::errors::Result<Bytes> {
        let outside = || {
            ParquetError::EOF(format!(
                "offset {start} is outside the {} bytes read from {}",
                self.bytes.len(),
                self.start
            ))
        };
        let from = start
            .checked_sub(self.start)
            .and_then(|f| usize::try_from(f).ok())
            .filter(|f| *f <= self.bytes.len())
            .ok_or_else(outside)?;
        let to = match len {
            Some(n) => from
                .checked_add(n)
                .filter(|t| *t <= self.bytes.len())
                .ok_or_else(outside)?,
            None => self.bytes.len(),
        };
        Ok(self.bytes.slice(from..to))
    }
}

impl Length for FileSlice {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for FileSlice {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.range(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.range(start, Some(length))
    }
}

/// A Parquet object whose footer has been read (two range reads) and checked against its size. Its texts
/// decode as `Utf8View`.
#[derive(Clone)]
pub struct ParquetFile {
    rel: String,
    len: u64,
    meta: ArrowReaderMetadata,
}

const FOOTER_TAIL: u64 = 8;

impl ParquetFile {
    pub async fn open(store: &Storage, rel: &str) -> Result<Self> {
        let bad = |why: String| Error::bad_data(store.display(rel), why);
        let len = store
            .head(rel)
            .await?
            .ok_or_else(|| bad("no such object".into()))?
            .size;
        if len < 12 {
            return Err(bad(format!("{len} bytes: too short for a Parquet file")));
        }
        let tail = store.get_range(rel, len - FOOTER_TAIL..len).await?;
        if &tail[4..] != b"PAR1" {
            return Err(bad("no Parquet magic at its end".into()));
        }
        let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        let Some(footer_start) = len.checked_sub(FOOTER_TAIL + footer).filter(|s| *s >= 4) else {
            return Err(bad(format!(
                "its footer declares {footer} bytes, more than the file's {len}"
            )));
        };
        let slice = FileSlice {
            start: footer_start,
            bytes: store.get_range(rel, footer_start..len).await?,
            file_len: len,
        };
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&slice)
            .map_err(|e| bad(format!("not a readable Parquet footer: {e}")))?;
        crate::table::check_parquet_layout(&meta, len).map_err(bad)?;
        let meta = ArrowReaderMetadata::try_new(Arc::new(meta), untrusted_parquet_options())
            .map_err(|e| bad(format!("not a readable Parquet schema: {e}")))?;
        // Texts as views: what DataFusion reads them as, and what the statistics read them as.
        let views = Schema::new(
            meta.schema()
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 => {
                        f.as_ref().clone().with_data_type(DataType::Utf8View)
                    }
                    _ => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        );
        let meta = ArrowReaderMetadata::try_new(
            meta.metadata().clone(),
            untrusted_parquet_options().with_schema(Arc::new(views)),
        )
        .map_err(|e| bad(format!("not a readable Parquet schema: {e}")))?;
        Ok(Self {
            rel: rel.to_string(),
            len,
            meta,
        })
    }

    pub fn metadata(&self) -> &parquet::file::metadata::ParquetMetaData {
        self.meta.metadata()
    }

    /// The footer's value for `key`, if it has one.
    pub fn key_value(&self, key: &str) -> Option<&str> {
        self.metadata()
            .file_metadata()
            .key_value_metadata()?
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_deref()
    }

    /// The bytes of row group `g`'s column chunks (one range read).
    pub async fn read_row_group(&self, store: &Storage, g: usize) -> Result<FileSlice> {
        let rg = self.metadata().row_group(g);
        let (mut start, mut end) = (u64::MAX, 0u64);
        for c in rg.columns() {
            // check_parquet_layout (at open) put every chunk inside the file
            let from = c.dictionary_page_offset().unwrap_or(c.data_page_offset()) as u64;
            start = start.min(from);
            end = end.max(from + c.compressed_size() as u64);
        }
        if start >= end {
            return Ok(FileSlice {
                start: 0,
                bytes: Bytes::new(),
                file_len: self.len,
            });
        }
        Ok(FileSlice {
            start,
            bytes: store.get_range(&self.rel, start..end).await?,
            file_len: self.len,
        })
    }

    /// Row group `g` decoded from its bytes (`slice`, from [`Self::read_row_group`]), leaf columns `columns`
    /// only, in batches of at most `batch_rows`.
    pub fn decode(
        &self,
        slice: FileSlice,
        g: usize,
        columns: &[usize],
        batch_rows: usize,
    ) -> Result<Vec<RecordBatch>> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::bad_data(self.rel.clone(), format!("row group {g}: {e}"))
        };
        let mask = ProjectionMask::leaves(
            self.metadata().file_metadata().schema_descr(),
            columns.iter().copied(),
        );
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(slice, self.meta.clone())
            .with_row_groups(vec![g])
            .with_projection(mask)
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| fail(&e))?;
        reader
            .map(|b| b.map_err(|e| fail(&e)))
            .collect::<Result<Vec<_>>>()
    }
}

/// Where a column chunk of a copied row group comes from.
pub enum ChunkSource {
    /// A chunk of the source file, copied as it is (its column must have the same Parquet type here).
    Copy(ColumnChunkMetaData),
    /// One text repeated on every row, encoded here.
    Text(String),
}

/// One row group of the file being written: `rows` rows, a [`ChunkSource`] per column in the file's order.
pub struct RowGroupCopy {
    pub source: FileSlice,
    pub rows: u64,
    pub columns: Vec<ChunkSource>,
}

enum CopyMessage {
    RowGroup(RowGroupCopy),
    Finish,
}

/// A Parquet object assembled from row groups of other files ([`RowGroupCopy`]), written on a blocking
/// thread as a multipart upload. Like [`ParquetSink`](crate::table::ParquetSink), the object appears only when
/// [`Self::finish`] completes, and a sink dropped or failed before that leaves the previous object in place.
pub struct ParquetCopySink {
    tx: Option<tokio::sync::mpsc::Sender<CopyMessage>>,
    done: tokio::task::JoinHandle<Result<u64>>,
    location: String,
}

/// The Parquet schema of a file whose columns are `columns` (each a Parquet field, e.g. a source file's
/// `schema_descr().column(i).self_type_ptr()`).
pub fn parquet_schema(columns: Vec<TypePtr>) -> Result<TypePtr> {
    Type::group_type_builder("arrow_schema")
        .with_fields(columns)
        .build()
        .map(Arc::new)
        .map_err(Error::bug)
}

/// The Parquet field the Arrow writer would write for `field`.
pub fn parquet_field(field: &arrow::datatypes::Field) -> Result<TypePtr> {
    let descr = ArrowSchemaConverter::new()
        .convert(&Schema::new(vec![field.clone()]))
        .map_err(Error::bug)?;
    let root = descr.root_schema_ptr();
    root.get_fields()
        .first()
        .cloned()
        .ok_or_else(|| Error::Internal(format!("no Parquet field for `{}`", field.name())))
}

const TEXT_BLOCK: usize = 8192;

fn write_row_group<W: std::io::Write + Send>(
    w: &mut SerializedFileWriter<W>,
    rg: RowGroupCopy,
) -> parquet::errors::Result<()> {
    let mut out = w.next_row_group()?;
    for column in rg.columns {
        match column {
            ChunkSource::Copy(metadata) => out.append_column(
                &rg.source,
                ColumnCloseResult {
                    bytes_written: metadata.compressed_size() as u64,
                    rows_written: rg.rows,
                    metadata,
                    bloom_filter: None,
                    column_index: None,
                    offset_index: None,
                },
            )?,
            ChunkSource::Text(text) => {
                let mut col = out
                    .next_column()?
                    .ok_or_else(|| ParquetError::General("more columns than the schema".into()))?;
                let value = ByteArray::from(text.into_bytes());
                let mut left = rg.rows as usize;
                let values = vec![value; left.min(TEXT_BLOCK)];
                let levels = vec![1i16; left.min(TEXT_BLOCK)];
                while left > 0 {
                    let n = left.min(TEXT_BLOCK);
                    col.typed::<ByteArrayType>().write_batch(
                        &values[..n],
                        Some(&levels[..n]),
                        None,
                    )?;
                    left -= n;
                }
                col.close()?;
            }
        }
    }
    out.close()?;
    Ok(())
}

impl ParquetCopySink {
    /// `arrow_schema` is what readers of the file get (embedded as the Arrow writer embeds it); `schema` its
    /// Parquet schema, whose columns the row groups' chunks must match.
    pub fn create(
        store: &Storage,
        rel: &str,
        arrow_schema: &Schema,
        schema: TypePtr,
    ) -> Result<Self> {
        let location = store.display(rel);
        let upload = open_upload(store, rel)?;
        // Copied chunks come without their page indexes, and a file has them for every chunk or for none.
        let mut props = writer_properties()
            .into_builder()
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
            .set_offset_index_disabled(true)
            .build();
        add_encoded_arrow_schema_to_metadata(arrow_schema, &mut props);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<CopyMessage>(2);
        let at = location.clone();
        let done = tokio::task::spawn_blocking(move || {
            let fail = |what: &str, e: &dyn std::fmt::Display| {
                Error::infra(at.clone(), format!("{what}: {e}"))
            };
            let mut w = SerializedFileWriter::new(upload, schema, Arc::new(props))
                .map_err(|e| fail("writing parquet", &e))?;
            let mut rows = 0u64;
            let mut finished = false;
            let mut failure = None;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    CopyMessage::RowGroup(rg) => {
                        rows += rg.rows;
                        if let Err(e) = write_row_group(&mut w, rg) {
                            failure = Some(fail("copying a row group", &e));
                            break;
                        }
                    }
                    CopyMessage::Finish => {
                        finished = true;
                        break;
                    }
                }
            }
            if let (true, None) = (finished, &failure) {
                let upload = w.into_inner().map_err(|e| fail("writing parquet", &e))?;
                complete_upload(upload, &at)?;
                return Ok(rows);
            }
            abort_upload(w.inner_mut());
            Err(failure.unwrap_or_else(|| fail("writing parquet", &"the producer stopped")))
        });
        Ok(Self {
            tx: Some(tx),
            done,
            location,
        })
    }

    pub async fn append(&mut self, rg: RowGroupCopy) -> Result<()> {
        if rg.rows == 0 {
            return Ok(());
        }
        let sent = match &self.tx {
            Some(tx) => tx.send(CopyMessage::RowGroup(rg)).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        self.tx = None;
        Err(self.wait().await.err().unwrap_or_else(|| {
            Error::Internal(format!("{}: the parquet writer stopped", self.location))
        }))
    }

    async fn wait(&mut self) -> Result<u64> {
        (&mut self.done)
            .await
            .map_err(|e| Error::Internal(format!("{}: parquet writer: {e}", self.location)))?
    }

    /// Completes the object; returns the rows written.
    pub async fn finish(mut self) -> Result<u64> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(CopyMessage::Finish).await;
        }
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::table::{ParquetSink, read_parquet_file};
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn batch(schema: &Arc<Schema>, ids: &[&str], xs: &[Option<f64>]) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids.to_vec())),
                Arc::new(Float64Array::from(xs.to_vec())),
            ],
        )
        .unwrap()
    }

    /// A lake in a temporary directory, and the schema of the tests' files (an id and a number).
    fn lake() -> (tempfile::TempDir, Storage, Arc<Schema>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
        ]));
        (dir, store, schema)
    }

    #[tokio::test]
    async fn row_groups_copied_with_a_constant_column_read_back_as_written() {
        let (_dir, store, schema) = lake();
        let mut sink = ParquetSink::create(&store, "a.parquet", schema.clone()).unwrap();
        sink.write(batch(&schema, &["a", "b"], &[Some(1.0), None]))
            .await
            .unwrap();
        sink.end_row_group().await.unwrap();
        sink.write(batch(
            &schema,
            &["c", "d", "e"],
            &[Some(3.0), Some(4.5), None],
        ))
        .await
        .unwrap();
        sink.finish_with(vec![("k".into(), "v".into())])
            .await
            .unwrap();

        let file = ParquetFile::open(&store, "a.parquet").await.unwrap();
        assert_eq!(file.key_value("k"), Some("v"));
        assert_eq!(file.key_value("other"), None);
        assert_eq!(file.metadata().num_row_groups(), 2);
        let slice = file.read_row_group(&store, 1).await.unwrap();
        let decoded = file.decode(slice.clone(), 1, &[1], 2).unwrap();
        let xs: Vec<Option<f64>> = decoded
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(xs, vec![Some(3.0), Some(4.5), None]);

        let out_schema = Schema::new(vec![
            Field::new("x", DataType::Float64, true),
            Field::new("split", DataType::Utf8, true),
        ]);
        let descr = file.metadata().file_metadata().schema_descr();
        let pq = parquet_schema(vec![
            descr.column(1).self_type_ptr(),
            parquet_field(out_schema.field(1)).unwrap(),
        ])
        .unwrap();
        let mut copy = ParquetCopySink::create(&store, "b.parquet", &out_schema, pq).unwrap();
        let rg = file.metadata().row_group(1);
        copy.append(RowGroupCopy {
            source: slice,
            rows: rg.num_rows() as u64,
            columns: vec![
                ChunkSource::Copy(rg.column(1).clone()),
                ChunkSource::Text("train".into()),
            ],
        })
        .await
        .unwrap();
        assert_eq!(copy.finish().await.unwrap(), 3);
        let back = read_parquet_file(&store, "b.parquet").await.unwrap();
        let back = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
        assert_eq!(back.schema().as_ref(), &out_schema);
        let expected = RecordBatch::try_new(
            Arc::new(out_schema),
            vec![
                Arc::new(Float64Array::from(vec![Some(3.0), Some(4.5), None])),
                Arc::new(StringArray::from(vec!["train"; 3])),
            ],
        )
        .unwrap();
        assert_eq!(back, expected);
    }

    #[tokio::test]
    async fn a_chunk_of_another_type_or_a_short_slice_is_an_error_not_a_panic() {
        let (_dir, store, schema) = lake();
        let mut sink = ParquetSink::create(&store, "a.parquet", schema.clone()).unwrap();
        sink.write(batch(&schema, &["a"], &[Some(1.0)]))
            .await
            .unwrap();
        sink.finish().await.unwrap();
        let file = ParquetFile::open(&store, "a.parquet").await.unwrap();
        let slice = file.read_row_group(&store, 0).await.unwrap();
        let rg = file.metadata().row_group(0);
        let descr = file.metadata().file_metadata().schema_descr();
        // the id's chunk where the file declares a number
        let pq = parquet_schema(vec![descr.column(1).self_type_ptr()]).unwrap();
        let out = Schema::new(vec![schema.field(1).clone()]);
        let mut copy = ParquetCopySink::create(&store, "b.parquet", &out, pq).unwrap();
        let sent = copy
            .append(RowGroupCopy {
                source: slice.clone(),
                rows: 1,
                columns: vec![ChunkSource::Copy(rg.column(0).clone())],
            })
            .await;
        let err = match sent {
            Err(e) => e,
            Ok(()) => copy.finish().await.unwrap_err(),
        };
        assert!(err.to_string().contains("mismatch"), "{err}");
        assert!(store.head("b.parquet").await.unwrap().is_none());
        let short = FileSlice {
            start: slice.start + 1,
            bytes: slice.bytes.slice(1..),
            file_len: slice.file_len,
        };
        assert!(short.get_bytes(slice.start, 4).is_err());
        assert!(short.get_read(slice.file_len + 10).is_err());
        assert!(short.get_bytes(short.start, usize::MAX).is_err());
    }
}
