//! Train and validation splits larger than memory (`training.max_in_memory_mib`): read from the lake one
//! Parquet row group at a time through object_store (ranged reads, any backend), encoded by the transform
//! serving uses, and handed to the training loop in blocks of at most `training.stream_block_rows` rows.
//! Shuffling is two-level and seeded: the order of row groups each epoch, then the rows within a block. Memory
//! holds one block and one row group's compressed column chunks, whatever the split's size.

use std::ops::Range;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{
    AsyncFileReader, ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use trialflow_core::features::FeatureSpec;
use trialflow_core::{Error, Result, Storage, lake};

/// One Parquet object of a split and what its footer says.
struct Object {
    path: String,
    size: u64,
    meta: ArrowReaderMetadata,
}

/// A split read lazily from the lake.
pub struct StreamedSplit {
    pub name: String,
    /// The columns the model predicts, read into each block's targets.
    targets: Vec<String>,
    lake: Storage,
    objects: Vec<Object>,
    pub rows: usize,
}

impl std::fmt::Debug for StreamedSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedSplit")
            .field("name", &self.name)
            .field("objects", &self.objects.len())
            .field("rows", &self.rows)
            .finish()
    }
}

/// A row group: (object index, row group index).
pub type Unit = (usize, usize);

/// Receives one block of encoded rows: features (row-major), targets (row-major).
pub type Visit<'v, E> = dyn FnMut(&[f32], &[f32]) -> std::result::Result<(), E> + 'v;

impl StreamedSplit {
    /// Reads the footers only: the row count and the row groups, and checks the columns against the spec.
    pub async fn open(
        lake: &Storage,
        spec: &FeatureSpec,
        split: &str,
        targets: &[String],
    ) -> Result<Self> {
        let prefix = format!("{}split={split}/", lake::FEATURES);
        let mut objects = Vec::new();
        let mut rows = 0;
        for e in lake.list(&prefix).await? {
            if !e.path.ends_with(".parquet") {
                continue;
            }
            let meta = ArrowReaderMetadata::load_async(
                &mut reader(lake, &e.path, e.size)?,
                ArrowReaderOptions::default(),
            )
            .await
            .map_err(|err| {
                Error::bad_data(
                    lake.display(&e.path),
                    format!("not a readable Parquet file: {err}"),
                )
            })?;
            trialflow_model::split::check_columns(spec, meta.schema(), &lake.display(&e.path))?;
            rows += meta.metadata().file_metadata().num_rows().max(0) as usize;
            objects.push(Object {
                path: e.path,
                size: e.size,
                meta,
            });
        }
        Ok(Self {
            name: split.to_string(),
            targets: targets.to_vec(),
            lake: lake.clone(),
            objects,
            rows,
        })
    }

    /// Every row group, in storage order.
    pub fn units(&self) -> Vec<Unit> {
        self.objects
            .iter()
            .enumerate()
            .flat_map(|(i, o)| (0..o.meta.metadata().num_row_groups()).map(move |g| (i, g)))
            .collect()
    }

    /// A fingerprint of what is read: each object's path, size and footer.
    pub fn fingerprint(&self) -> String {
        let mut fp = trialflow_core::fingerprint::Fingerprinter::new();
        for o in &self.objects {
            fp.part(&o.path, o.size.to_string().as_bytes()).part(
                "rows",
                o.meta
                    .metadata()
                    .file_metadata()
                    .num_rows()
                    .to_string()
                    .as_bytes(),
            );
        }
        fp.finish()
    }

    async fn batches(
        &self,
        (object, group): Unit,
        targets_only: bool,
    ) -> Result<ParquetRecordBatchStream<ObjectReader>> {
        let o = &self.objects[object];
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
            reader(&self.lake, &o.path, o.size)?,
            o.meta.clone(),
        )
        .with_row_groups(vec![group])
        .with_batch_size(8192);
        if targets_only {
            let mask = ProjectionMask::columns(
                builder.parquet_schema(),
                self.targets.iter().map(String::as_str),
            );
            builder = builder.with_projection(mask);
        }
        builder.build().map_err(|e| {
            Error::bad_data(self.lake.display(&o.path), format!("reading Parquet: {e}"))
        })
    }

    /// Every row's targets, reading the target columns only (row-major, as blocks hold them): the checks and
    /// the target's scale before a streamed fit.
    pub async fn read_targets(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for unit in self.units() {
            let location = self.lake.display(&self.objects[unit.0].path);
            let mut stream = self.batches(unit, true).await?;
            while let Some(b) = next(&mut stream, &location).await? {
                out.extend(trialflow_model::split::target_values(
                    &b,
                    &self.targets,
                    &location,
                )?);
            }
        }
        Ok(out)
    }

    /// Reads `units` in the order given and calls `visit(x, y)` with blocks of at most `block_rows` encoded
    /// rows (a block may span row groups). Blocking: call from a thread that may block inside a tokio runtime
    /// (`block_in_place`).
    pub fn for_each_block<E: From<Error>>(
        &self,
        spec: &FeatureSpec,
        units: &[Unit],
        block_rows: usize,
        visit: &mut Visit<'_, E>,
    ) -> std::result::Result<(), E> {
        let handle = tokio::runtime::Handle::current();
        let dim = spec.width();
        let mut x: Vec<f32> = Vec::with_capacity(block_rows * dim);
        let width = self.targets.len().max(1);
        let mut y: Vec<f32> = Vec::with_capacity(block_rows * width);
        for &unit in units {
            let location = self.lake.display(&self.objects[unit.0].path);
            let mut stream = handle.block_on(self.batches(unit, false))?;
            let mut row_in_group = 0;
            while let Some(b) = handle.block_on(next(&mut stream, &location))? {
                let (bx, rows) = trialflow_model::split::encode(
                    spec,
                    std::slice::from_ref(&b),
                    &format!("{location} (row group {}, from row {row_in_group})", unit.1),
                )?;
                if let Some(i) = bx.iter().position(|v| !v.is_finite()) {
                    return Err(Error::bad_data(
                        &location,
                        format!(
                            "the {} split has a NaN or infinite value in feature `{}` (row group {}, row {}); \
                             expected finite numbers after imputation",
                            self.name,
                            spec.columns.get(i % dim.max(1)).map_or("?", String::as_str),
                            unit.1,
                            row_in_group + i / dim.max(1) + 1
                        ),
                    )
                    .into());
                }
                row_in_group += rows;
                let by = trialflow_model::split::target_values(&b, &self.targets, &location)?;
                // fill the block up to block_rows, hand it over, continue with the rest of the batch
                let mut at = 0;
                while at < rows {
                    let take = (block_rows - y.len() / width).min(rows - at);
                    x.extend_from_slice(&bx[at * dim..(at + take) * dim]);
                    y.extend_from_slice(&by[at * width..(at + take) * width]);
                    at += take;
                    if y.len() == block_rows * width {
                        visit(&x, &y)?;
                        x.clear();
                        y.clear();
                    }
                }
            }
        }
        if !y.is_empty() {
            visit(&x, &y)?;
        }
        Ok(())
    }
}

/// Ranged reads of one object through the lake's store (any object_store backend).
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

fn parquet_err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(parquet_err)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

fn reader(lake: &Storage, path: &str, size: u64) -> Result<ObjectReader> {
    let p = ObjectPath::parse(path)
        .map_err(|e| Error::bad_data(lake.display(path), format!("invalid object path: {e}")))?;
    Ok(ObjectReader {
        store: lake.object_store(),
        path: p,
        size,
    })
}

async fn next(
    stream: &mut ParquetRecordBatchStream<ObjectReader>,
    location: &str,
) -> Result<Option<RecordBatch>> {
    stream
        .try_next()
        .await
        .map_err(|e| Error::bad_data(location, format!("reading Parquet: {e}")))
}
