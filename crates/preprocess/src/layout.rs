//! The clean table laid out for its splits, so that `features` copies the split files out of it instead of
//! encoding every row a second time.
//!
//! When the split is a function of each row alone — the generated `split.sql` with neither `stratify`,
//! `group_by`, a cluster nor a training population — `clean` computes each accepted row's split as it writes the
//! table and gives every row group the rows of one split only (or of none: rows without the endpoint's values),
//! in input order within each split. The footer records each row group's split and row count with a fingerprint
//! of the split statement and its salt. `features` then copies each row group's column chunks into its split's
//! file as they are, adds the `split` column, and decodes the rows only for the statistics it gathers. Any other
//! case (an edited `split.sql`, another split mode, a table without that footer or with another fingerprint)
//! runs `split.sql` over the table as before.

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use trialflow_core::config::Config;
use trialflow_core::row_group::{
    ChunkSource, FileSlice, ParquetCopySink, ParquetFile, RowGroupCopy,
};
use trialflow_core::{Error, Result, Storage, lake};

use crate::{SqlStep, split_sql, sql_step, udf};

/// The footer key of the clean table's split layout.
pub const LAYOUT_KEY: &str = "trialflow.split_row_groups";

/// Rows gathered per split before they are written as one row group.
const GROUP_ROWS: usize = 64 * 1024;

/// The row groups' labels: the three splits, then rows in no split.
const NONE: &str = "none";

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Footer {
    /// Of the split statement and its salt: a table laid out for another split is split by SQL.
    fingerprint: String,
    /// Per row group, in order: its split (or `none`) and its rows.
    row_groups: Vec<(String, u64)>,
}

/// Whether the split of a row depends on that row alone, as `SplitLayout` computes it.
fn row_local(cfg: &Config) -> bool {
    let s = &cfg.preprocessing.split;
    !s.stratify
        && s.group_by.is_none()
        && cfg.dataset.cluster.is_none()
        && cfg.training.population.is_none()
}

/// `step` is the statement `split_sql` generates (a file of `sql_dir` may be the generated text, comments aside).
fn runs_as_generated(step: &SqlStep, generated: &str) -> bool {
    if !step.edited {
        return true;
    }
    let body: String = step
        .text
        .lines()
        .skip_while(|l| l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.trim().trim_end_matches(';').trim() == generated.trim()
}

fn fingerprint(cfg: &Config, generated: &str) -> String {
    let salt = &cfg.preprocessing.split.salt;
    trialflow_core::fingerprint::sha256_hex(format!("{generated}\0{salt}").as_bytes())
}

/// The fingerprint of the split the layout can stand for, when it can stand for the configured one.
fn layout_fingerprint(cfg: &Config) -> Option<String> {
    if !row_local(cfg) {
        return None;
    }
    let generated = split_sql(cfg);
    // A stale or unreadable file is `features`' error to report; here it only means no layout.
    let step = sql_step(cfg, "split", generated.clone()).ok()?;
    runs_as_generated(&step, &generated).then(|| fingerprint(cfg, &generated))
}

/// The clean task's side: each accepted batch's rows gathered by split, a row group written per split when it
/// has [`GROUP_ROWS`].
pub(crate) struct SplitLayout {
    fingerprint: String,
    salt: String,
    train: f64,
    train_val: f64,
    subject: usize,
    targets: Vec<usize>,
    group_rows: usize,
    pending: [Vec<RecordBatch>; 4],
    rows: [usize; 4],
    written: Vec<(String, u64)>,
}

const LABELS: [&str; 4] = [lake::SPLITS[0], lake::SPLITS[1], lake::SPLITS[2], NONE];

impl SplitLayout {
    /// The layout for `cfg`'s split over the clean table `schema`, when its split is row-local.
    pub(crate) fn new(cfg: &Config, schema: &Schema) -> Option<Self> {
        let fingerprint = layout_fingerprint(cfg)?;
        let text = |name: &str| {
            schema
                .column_with_name(name)
                .filter(|(_, f)| f.data_type() == &DataType::Utf8)
                .map(|(i, _)| i)
        };
        let targets = cfg
            .target_columns()
            .iter()
            .map(|t| schema.index_of(t).ok())
            .collect::<Option<Vec<_>>>()?;
        let s = &cfg.preprocessing.split;
        Some(Self {
            fingerprint,
            salt: s.salt.clone(),
            train: s.train,
            // the same sum split.sql is generated with
            train_val: s.train + s.val,
            subject: text("subject_id")?,
            targets,
            group_rows: GROUP_ROWS,
            pending: Default::default(),
            rows: [0; 4],
            written: Vec::new(),
        })
    }

    /// Each row's label, as `split.sql` assigns it: no split without the endpoint's values; `split_unit` of
    /// the pseudonym cut at the fractions (a NULL id, whose unit is NULL, falls through to `test`).
    fn labels(&self, batch: &RecordBatch) -> Vec<usize> {
        let id = batch.column(self.subject).as_string::<i32>();
        let targets: Vec<&dyn Array> = self
            .targets
            .iter()
            .map(|&t| batch.column(t).as_ref())
            .collect();
        (0..batch.num_rows())
            .map(|r| {
                if targets.iter().any(|t| t.is_null(r)) {
                    3
                } else if id.is_null(r) {
                    2
                } else {
                    let u = udf::split_unit(&self.salt, id.value(r));
                    if u < self.train {
                        0
                    } else if u < self.train_val {
                        1
                    } else {
                        2
                    }
                }
            })
            .collect()
    }

    /// Gathers `batch`'s rows (those `accepted` marks, or all) by split.
    pub(crate) fn add(
        &mut self,
        batch: &RecordBatch,
        accepted: Option<&BooleanArray>,
    ) -> Result<()> {
        let mut rows: [Vec<u32>; 4] = Default::default();
        for (r, l) in self.labels(batch).into_iter().enumerate() {
            if accepted.is_none_or(|a| a.value(r)) {
                rows[l].push(r as u32);
            }
        }
        for (l, idx) in rows.into_iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let part = if idx.len() == batch.num_rows() {
                batch.clone()
            } else {
                arrow::compute::take_record_batch(batch, &UInt32Array::from(idx))
                    .map_err(Error::bug)?
            };
            self.rows[l] += part.num_rows();
            self.pending[l].push(part);
        }
        Ok(())
    }

    /// A split with a row group's worth of rows gathered, if one has.
    pub(crate) fn full(&self) -> Option<usize> {
        self.rows.iter().position(|&n| n >= self.group_rows)
    }

    /// Writes the rows gathered for label `l` as one row group.
    pub(crate) async fn write(
        &mut self,
        l: usize,
        sink: &mut trialflow_core::table::ParquetSink,
    ) -> Result<()> {
        let rows = std::mem::take(&mut self.rows[l]);
        if rows == 0 {
            return Ok(());
        }
        for b in std::mem::take(&mut self.pending[l]) {
            sink.write(b).await?;
        }
        sink.end_row_group().await?;
        self.written.push((LABELS[l].to_string(), rows as u64));
        Ok(())
    }

    /// Writes what is left, every label in turn; the footer entry that records the layout.
    pub(crate) async fn finish(
        mut self,
        sink: &mut trialflow_core::table::ParquetSink,
    ) -> Result<(String, String)> {
        for l in 0..LABELS.len() {
            self.write(l, sink).await?;
        }
        let footer = Footer {
            fingerprint: self.fingerprint,
            row_groups: self.written,
        };
        let json = serde_json::to_string(&footer).map_err(Error::bug)?;
        Ok((LAYOUT_KEY.to_string(), json))
    }
}

/// The features task's side: the clean table, when it is laid out for `cfg`'s split, with each column of the
/// split files (`schema`, `split.sql`'s result) found in it.
pub(crate) struct LaidOut {
    file: ParquetFile,
    row_groups: Vec<(usize, u64)>,
    /// Per column of the split files: the clean table's column, or `None` for `split`.
    columns: Vec<Option<usize>>,
    /// The clean table's columns the statistics read (those of `read` in the split files).
    decoded: Vec<usize>,
    parquet_schema: parquet::schema::types::TypePtr,
    schema: SchemaRef,
}

/// One row group of the clean table, read and decoded.
struct Decoded {
    g: usize,
    split: usize,
    rows: u64,
    slice: FileSlice,
    batches: Vec<RecordBatch>,
}

async fn read_and_decode(
    file: &ParquetFile,
    lake: &Storage,
    g: usize,
    columns: &[usize],
) -> Result<(FileSlice, Vec<RecordBatch>)> {
    let slice = file.read_row_group(lake, g).await?;
    let (file, columns, s) = (file.clone(), columns.to_vec(), slice.clone());
    let batches =
        tokio::task::spawn_blocking(move || file.decode(s, g, &columns, crate::stage::BATCH_ROWS))
            .await
            .map_err(|e| Error::Internal(format!("decoding the clean table: {e}")))??;
    Ok((slice, batches))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LaidOut {
    /// `None` when the split has to run as SQL: see the module's doc.
    pub(crate) async fn open(
        cfg: &Config,
        lake: &Storage,
        step: &SqlStep,
        schema: &SchemaRef,
        read: &std::collections::BTreeSet<String>,
    ) -> Result<Option<Self>> {
        let generated = split_sql(cfg);
        if !row_local(cfg) || !runs_as_generated(step, &generated) {
            return Ok(None);
        }
        let objects: Vec<_> = lake
            .list(lake::CLEAN)
            .await?
            .into_iter()
            .filter(|e| e.path.ends_with(".parquet"))
            .collect();
        if objects.len() != 1 || objects[0].path != lake::CLEAN_FILE {
            return Ok(None);
        }
        let file = ParquetFile::open(lake, lake::CLEAN_FILE).await?;
        let Some(footer) = file
            .key_value(LAYOUT_KEY)
            .and_then(|v| serde_json::from_str::<Footer>(v).ok())
        else {
            return Ok(None);
        };
        let meta = file.metadata();
        let matches = footer.fingerprint == fingerprint(cfg, &generated)
            && footer.row_groups.len() == meta.num_row_groups()
            && footer
                .row_groups
                .iter()
                .zip(meta.row_groups())
                .all(|((_, n), rg)| i64::try_from(*n).ok() == Some(rg.num_rows()));
        let Some(row_groups) = footer
            .row_groups
            .iter()
            .map(|(l, n)| LABELS.iter().position(|x| x == l).map(|i| (i, *n)))
            .collect::<Option<Vec<_>>>()
            .filter(|_| matches)
        else {
            return Ok(None);
        };
        let descr = meta.file_metadata().schema_descr();
        // Only flat tables: a leaf's position is then its column's.
        if descr.num_columns() != descr.root_schema().get_fields().len() {
            return Ok(None);
        }
        let leaf = |name: &str| (0..descr.num_columns()).find(|&i| descr.column(i).name() == name);
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for f in schema.fields() {
            if f.name() == "split" {
                columns.push(None);
                fields.push(trialflow_core::row_group::parquet_field(f)?);
                continue;
            }
            let Some(i) = leaf(f.name()) else {
                return Ok(None);
            };
            columns.push(Some(i));
            fields.push(descr.column(i).self_type_ptr());
        }
        if columns.iter().filter(|c| c.is_none()).count() != 1 {
            return Ok(None);
        }
        let decoded = schema
            .fields()
            .iter()
            .zip(&columns)
            .filter(|(f, _)| read.contains(f.name()))
            .filter_map(|(_, c)| *c)
            .collect();
        Ok(Some(Self {
            parquet_schema: trialflow_core::row_group::parquet_schema(fields)?,
            file,
            row_groups,
            columns,
            decoded,
            schema: schema.clone(),
        }))
    }

    /// Copies every row group into its split's file; `observe(Some((split, batch)))` sees each one's rows (the
    /// columns `open` was given to read) first, and `observe(None)` comes after the last, before any split
    /// file is published (an error then publishes none). Returns the rows written per split.
    pub(crate) async fn copy(
        self,
        lake: &Storage,
        mut observe: impl FnMut(Option<(usize, &RecordBatch)>) -> Result<()>,
    ) -> Result<[u64; 3]> {
        let mut sinks = Vec::new();
        for split in lake::SPLITS {
            sinks.push(ParquetCopySink::create(
                lake,
                &lake::features_file(split),
                &self.schema,
                self.parquet_schema.clone(),
            )?);
        }
        // Row groups read and decoded on a thread of their own, up to two ahead of the statistics.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Decoded>>(2);
        let reader = {
            let (file, lake, wanted, decoded) = (
                self.file.clone(),
                lake.clone(),
                self.row_groups.clone(),
                self.decoded.clone(),
            );
            tokio::spawn(async move {
                for (g, &(l, rows)) in wanted.iter().enumerate() {
                    if l >= lake::SPLITS.len() {
                        continue;
                    }
                    let next =
                        read_and_decode(&file, &lake, g, &decoded)
                            .await
                            .map(|(slice, batches)| Decoded {
                                g,
                                split: l,
                                rows,
                                slice,
                                batches,
                            });
                    let failed = next.is_err();
                    if tx.send(next).await.is_err() || failed {
                        break;
                    }
                }
            })
        };
        let _stop_reader = AbortOnDrop(reader);
        while let Some(next) = rx.recv().await {
            let d = next?;
            for b in &d.batches {
                observe(Some((d.split, b)))?;
            }
            let chunks = self.file.metadata().row_group(d.g).columns();
            let columns = self
                .columns
                .iter()
                .map(|c| match c {
                    Some(i) => ChunkSource::Copy(chunks[*i].clone()),
                    None => ChunkSource::Text(LABELS[d.split].to_string()),
                })
                .collect();
            sinks[d.split]
                .append(RowGroupCopy {
                    source: d.slice,
                    rows: d.rows,
                    columns,
                })
                .await?;
        }
        observe(None)?;
        let mut written = [0u64; 3];
        for (w, sink) in written.iter_mut().zip(sinks) {
            *w = sink.finish().await?;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::Arc;

    fn config(dir: &std::path::Path) -> Config {
        std::fs::write(dir.join("t.csv"), "pid,trt,dead,x\n").unwrap();
        let yaml = format!(
            r#"
storage: {{lake: "file://{d}/lake", models: "file://{d}/models"}}
dataset:
  name: layout
  sources: [{{name: t, url: "file://{d}/t.csv"}}]
  id: pid
  arm: {{column: trt, reference: A}}
  outcome: {{column: dead}}
  numeric: [x]
privacy: {{key_env: TRIALFLOW_TEST_UNSET_KEY, dev_key: k, allow_dev_key: true}}
preprocessing: {{split: {{train: 0.5, val: 0.25, test: 0.25, salt: s}}}}
models: {{m: {{hidden: []}}}}
training: {{seed: 1, epochs: 1, batch_size: 4, learning_rate: 0.01, patience: 1}}
serving: {{host: 127.0.0.1, port: 1, model_name: m, poll_seconds: 1, max_body_bytes: 1000, max_rows: 10}}
deployment: {{checks: [{{metric: roc_auc, min: 0.5}}]}}
"#,
            d = dir.display()
        );
        Config::from_yaml(&yaml, "layout.yaml", &[]).unwrap()
    }

    #[test]
    fn the_train_statistics_thread_counts_every_batch_and_reports_its_error_when_drained() {
        use arrow::array::{Float64Array, StringArray};
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let batch = |with_x: bool| {
            let mut cols: Vec<(&str, arrow::array::ArrayRef)> =
                vec![("arm", Arc::new(StringArray::from(vec!["A", "B", "A"])))];
            if with_x {
                cols.push(("x", Arc::new(Float64Array::from(vec![1.0, 2.0, 4.0]))));
            }
            RecordBatch::try_from_iter(cols).unwrap()
        };
        let mut train = crate::spec::TrainStats::new(&cfg, "split.sql")
            .spawn()
            .unwrap();
        for _ in 0..10 {
            train.observe(&batch(true)).unwrap();
        }
        train.drain().unwrap();
        let spec = train.finish().unwrap().finish(&cfg).unwrap();
        assert_eq!(spec.train_rows, 30);
        assert_eq!(spec.numeric[0].impute, 2.0);

        let mut train = crate::spec::TrainStats::new(&cfg, "split.sql")
            .spawn()
            .unwrap();
        let mut failed = Ok(());
        for _ in 0..10 {
            failed = failed.and(train.observe(&batch(false)));
        }
        let err = failed.and(train.drain()).unwrap_err().to_string();
        assert!(err.contains("no column `x`"), "{err}");
    }

    /// Rows of `n` subjects: an id, an outcome (missing for every seventh), a number.
    fn rows(schema: &SchemaRef, from: usize, n: usize) -> RecordBatch {
        use arrow::array::{Float64Array, Int64Array, StringArray};
        let ids: Vec<String> = (from..from + n).map(|i| format!("p{i}")).collect();
        let outcome: Vec<Option<i64>> = (from..from + n)
            .map(|i| (i % 7 != 0).then_some((i % 2) as i64))
            .collect();
        let x: Vec<f64> = (from..from + n).map(|i| i as f64).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Int64Array::from(outcome)),
                Arc::new(Float64Array::from(x)),
                Arc::new(Int64Array::from_iter_values(
                    (from..from + n).map(|i| i as i64),
                )),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn row_groups_of_one_split_each_are_copied_into_the_split_files_in_input_order() {
        use arrow::datatypes::Field;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let lake = Storage::open(&cfg.storage.lake).unwrap();
        let clean = Arc::new(Schema::new(vec![
            Field::new("subject_id", DataType::Utf8, true),
            Field::new("outcome", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("_line", DataType::Int64, true),
        ]));
        let mut layout = SplitLayout::new(&cfg, &clean).unwrap();
        layout.group_rows = 5;
        let mut sink =
            trialflow_core::table::ParquetSink::create(&lake, lake::CLEAN_FILE, clean.clone())
                .unwrap();
        for from in (0..60).step_by(12) {
            layout.add(&rows(&clean, from, 12), None).unwrap();
            while let Some(l) = layout.full() {
                layout.write(l, &mut sink).await.unwrap();
            }
        }
        let footer = layout.finish(&mut sink).await.unwrap();
        sink.finish_with(vec![footer]).await.unwrap();

        // what split.sql would give: rows with the outcome, by split_unit of the id, in input order
        let mut expected: [Vec<i64>; 3] = Default::default();
        for i in (0..60).filter(|i| i % 7 != 0) {
            let u = udf::split_unit("s", &format!("p{i}"));
            let s = if u < 0.5 {
                0
            } else if u < 0.75 {
                1
            } else {
                2
            };
            expected[s].push(i as i64);
        }
        let file = ParquetFile::open(&lake, lake::CLEAN_FILE).await.unwrap();
        assert!(
            file.metadata().num_row_groups() > 4,
            "several row groups per split"
        );

        let split = Arc::new(Schema::new(vec![
            Field::new("subject_id", DataType::Utf8, true),
            Field::new("outcome", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("split", DataType::Utf8, true),
        ]));
        let step = SqlStep {
            name: "split",
            text: split_sql(&cfg),
            origin: "x".into(),
            edited: false,
        };
        let read = ["outcome".to_string(), "x".to_string()].into();
        let laid_out = LaidOut::open(&cfg, &lake, &step, &split, &read)
            .await
            .unwrap()
            .unwrap();
        let (mut seen, mut seen_all) = ([0usize; 3], 0);
        let written = laid_out
            .copy(&lake, |seen_rows| {
                let Some((s, b)) = seen_rows else {
                    seen_all += 1;
                    return Ok(());
                };
                assert_eq!(seen_all, 0, "rows after the last");
                assert_eq!(b.num_columns(), 2, "the columns asked for");
                seen[s] += b.num_rows();
                Ok(())
            })
            .await
            .unwrap();
        for (s, name) in lake::SPLITS.iter().enumerate() {
            assert_eq!(written[s] as usize, expected[s].len());
            assert_eq!(seen[s], expected[s].len());
            let b = trialflow_core::table::read_parquet_file(&lake, &lake::features_file(name))
                .await
                .unwrap();
            let x = trialflow_core::table::floats(&b, "x").unwrap();
            let want: Vec<Option<f64>> = expected[s].iter().map(|&i| Some(i as f64)).collect();
            assert_eq!(x, want, "{name}");
            let labels = trialflow_core::table::strings(&b, "split").unwrap();
            assert!(labels.iter().all(|l| l.as_deref() == Some(*name)));
            let ids = trialflow_core::table::strings(&b, "subject_id").unwrap();
            assert_eq!(ids[0], Some(format!("p{}", expected[s][0])));
        }

        // another salt: the footer no longer stands for the split
        let mut other = cfg.clone();
        other.preprocessing.split.salt = "t".into();
        let step = SqlStep {
            text: split_sql(&other),
            ..step
        };
        assert!(
            LaidOut::open(&other, &lake, &step, &split, &read)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_footer_reads_back_as_written() {
        let f = Footer {
            fingerprint: "ab".into(),
            row_groups: vec![("train".into(), 3), (NONE.into(), 1)],
        };
        let text = serde_json::to_string(&f).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Footer>(&text).ok(), Some(f));
    }

    #[test]
    fn a_file_is_the_generated_split_only_when_its_statement_is_the_generated_one() {
        let generated = "SELECT * FROM clean";
        let step = |edited: bool, text: &str| SqlStep {
            name: "split",
            text: text.into(),
            origin: "x".into(),
            edited,
        };
        assert!(runs_as_generated(&step(false, ""), generated));
        assert!(runs_as_generated(
            &step(true, "-- header\n-- contract: 1\nSELECT * FROM clean"),
            generated
        ));
        assert!(runs_as_generated(
            &step(true, "SELECT * FROM clean;\n"),
            generated
        ));
        assert!(!runs_as_generated(
            &step(true, "-- header\nSELECT * FROM clean WHERE age > 1"),
            generated
        ));
        assert!(!runs_as_generated(
            &step(true, "SELECT * FROM clean -- a comment"),
            generated
        ));
    }
}
