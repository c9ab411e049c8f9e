//! Batch scoring for researchers: a CSV or Parquet file in, the same rows with `probability` (and `error`
//! for rows that cannot be scored) out, in CSV or Parquet. Streams in chunks, so memory does not grow with
//! the file; the output appears only when complete (written beside it, then renamed).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use trialflow_core::{Error, Result};
use trialflow_model::{FieldError, encode_batch};

use crate::repository::LoadedVersion;

/// Rows per chunk: memory is bounded by this many rows in flight.
pub const CHUNK_ROWS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    pub fn of(path: &Path) -> Result<Self> {
        let name = path.to_string_lossy().to_lowercase();
        if name.ends_with(".csv") {
            Ok(Format::Csv)
        } else if name.ends_with(".parquet") || name.ends_with(".pq") {
            Ok(Format::Parquet)
        } else {
            Err(Error::config(
                path.display().to_string(),
                "<path>",
                "expected a .csv or .parquet file name",
            ))
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchReport {
    pub model: String,
    pub version: u64,
    pub rows: u64,
    pub scored: u64,
    /// Rows that could not be scored (their `error` column says why), first few reasons by field.
    pub failed: u64,
    pub output: String,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::bad_data(path.display().to_string(), msg)
}

/// Scores `input` with `model` into `output`.
pub fn score_file(model: &LoadedVersion, input: &Path, output: &Path) -> Result<BatchReport> {
    let in_fmt = Format::of(input)?;
    let out_fmt = Format::of(output)?;
    let spec = &model.card.feature_spec;
    let staged = staged_path(output);
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::infra(
                dir.display().to_string(),
                format!("cannot create the folder: {e}"),
            )
        })?;
    }
    let result = (|| -> Result<BatchReport> {
        let mut sink: Option<Sink> = None;
        let mut report = BatchReport {
            model: model.model.clone(),
            version: model.version,
            rows: 0,
            scored: 0,
            failed: 0,
            output: output.display().to_string(),
        };
        let mut checked = false;
        let mut each = |batch: RecordBatch| -> Result<()> {
            let schema = batch.schema();
            if !checked {
                check_columns(model, &schema, input)?;
                checked = true;
            }
            // A column named as the feature wins; otherwise the lake's name for it (scoring a features table).
            let rename = |f: &str| {
                if schema.column_with_name(f).is_some() {
                    f.to_string()
                } else {
                    spec.table_column(f)
                }
            };
            let mut x = Vec::with_capacity(batch.num_rows() * spec.width());
            let errors = encode_batch(&model.encoder, &batch, &rename, &mut x)
                .map_err(|e| bad(input, format!("column `{}`: {}", e.field, e.message)))?;
            let scores = score_columns(model, &x, &errors);
            let error: StringArray = errors
                .iter()
                .map(|e| e.as_ref().map(|e: &FieldError| e.to_string()))
                .collect();
            report.rows += batch.num_rows() as u64;
            report.failed += error.len() as u64 - error.null_count() as u64;
            let out = with_scores(&batch, scores, Arc::new(error), input)?;
            if sink.is_none() {
                sink = Some(Sink::create(out_fmt, &staged, out.schema())?);
            }
            if let Some(s) = sink.as_mut() {
                s.write(&out, &staged)?;
            }
            Ok(())
        };
        match in_fmt {
            Format::Csv => read_csv(input, &mut each)?,
            Format::Parquet => read_parquet(input, &mut each)?,
        }
        match sink {
            Some(s) => s.finish(&staged)?,
            None => return Err(bad(input, "no data rows to score")),
        }
        report.scored = report.rows - report.failed;
        Ok(report)
    })();
    match result {
        Ok(r) => {
            std::fs::rename(&staged, output).map_err(|e| {
                Error::infra(output.display().to_string(), format!("cannot publish: {e}"))
            })?;
            Ok(r)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            Err(e)
        }
    }
}

fn staged_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// Every required feature must be a column (its cells may be empty: those are imputed).
fn check_columns(model: &LoadedVersion, schema: &SchemaRef, input: &Path) -> Result<()> {
    let spec = &model.card.feature_spec;
    let has = |f: &str| {
        schema.column_with_name(f).is_some()
            || schema.column_with_name(&spec.table_column(f)).is_some()
    };
    let inputs = model.encoder.inputs();
    if let Some(e) = model.encoder.missing_field(&|k| has(&inputs[k].name)) {
        return Err(bad(
            input,
            format!(
                "column `{}`: {} (an empty column is allowed)",
                e.field, e.message
            ),
        ));
    }
    for name in ["probability", "error"] {
        if schema.column_with_name(name).is_some() {
            return Err(bad(
                input,
                format!("column `{name}`: the output adds this column; rename it in the input"),
            ));
        }
    }
    Ok(())
}

/// The model's outputs as columns (NULL on a row that could not be encoded): `probability`,
/// `prediction`, or `risk_score` and `survival_<t>` per default time of a time-to-event model.
fn score_columns(
    model: &LoadedVersion,
    x: &[f32],
    errors: &[Option<FieldError>],
) -> Vec<(String, ArrayRef)> {
    let mut out = Vec::new();
    let times = crate::head::default_times(&model.card).to_vec();
    for o in crate::head::outputs(model, x, None) {
        for c in 0..o.columns {
            let name = if o.columns == 1 && o.name != "survival" {
                o.name.to_string()
            } else {
                format!("{}_{}", o.name, times.get(c).copied().unwrap_or(c as f64))
            };
            let values: Float32Array = errors
                .iter()
                .enumerate()
                .map(|(r, e)| e.is_none().then(|| o.data[r * o.columns + c]))
                .collect();
            out.push((name, Arc::new(values) as ArrayRef));
        }
    }
    out
}

fn with_scores(
    batch: &RecordBatch,
    scores: Vec<(String, ArrayRef)>,
    error: ArrayRef,
    input: &Path,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    let mut cols = batch.columns().to_vec();
    for (name, values) in scores {
        fields.push(Arc::new(Field::new(name, DataType::Float32, true)));
        cols.push(values);
    }
    fields.push(Arc::new(Field::new("error", DataType::Utf8, true)));
    cols.push(error);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| bad(input, format!("cannot assemble the output: {e}")))
}

/// A file's Parquet batches to `each`; the parquet crate's assertions on a malformed page (see
/// `core::stage`) are the file's problem, reported as such.
fn read_parquet(input: &Path, each: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_parquet_batches(input, each)
    }))
    .unwrap_or_else(|_| {
        Err(bad(
            input,
            "not a readable Parquet file: the Parquet reader failed on its structure",
        ))
    })
}

fn read_parquet_batches(
    input: &Path,
    each: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let file = File::open(input).map_err(|e| bad(input, format!("cannot open: {e}")))?;
    let file_len = file
        .metadata()
        .map_err(|e| bad(input, format!("cannot open: {e}")))?
        .len();
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        file,
        trialflow_core::table::untrusted_parquet_options(),
    )
    .map_err(|e| bad(input, format!("not a readable Parquet file: {e}")))?;
    trialflow_core::table::check_parquet_layout(builder.metadata(), file_len)
        .map_err(|m| bad(input, format!("not a readable Parquet file: {m}")))?;
    let reader = builder
        .with_batch_size(CHUNK_ROWS)
        .build()
        .map_err(|e| bad(input, format!("not a readable Parquet file: {e}")))?;
    for b in reader {
        each(b.map_err(|e| bad(input, format!("cannot read a row group: {e}")))?)?;
    }
    Ok(())
}

/// CSV → all-text batches (the feature spec parses numbers, so the scorer sees what the clean stage saw).
fn read_csv(input: &Path, each: &mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()> {
    let file = File::open(input).map_err(|e| bad(input, format!("cannot open: {e}")))?;
    let mut rdr = csv::ReaderBuilder::new().from_reader(std::io::BufReader::new(file));
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| bad(input, format!("cannot read the header: {}", csv_reason(&e))))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(bad(input, "the file has no header row"));
    }
    let schema = Arc::new(Schema::new(
        headers
            .iter()
            .map(|h| Field::new(h, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let mut cols: Vec<Vec<Option<String>>> = vec![Vec::new(); headers.len()];
    let mut flush = |cols: &mut Vec<Vec<Option<String>>>| -> Result<()> {
        if cols[0].is_empty() {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = cols
            .iter_mut()
            .map(|c| Arc::new(StringArray::from(std::mem::take(c))) as ArrayRef)
            .collect();
        let b =
            RecordBatch::try_new(schema.clone(), arrays).map_err(|e| bad(input, e.to_string()))?;
        each(b)
    };
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                for (c, v) in cols.iter_mut().zip(record.iter()) {
                    c.push((!v.trim().is_empty()).then(|| v.to_string()));
                }
                if cols[0].len() >= CHUNK_ROWS {
                    flush(&mut cols)?;
                }
            }
            Err(e) => return Err(bad(input, csv_reason(&e))),
        }
    }
    flush(&mut cols)
}

/// The csv crate's messages can quote field contents; keep the position and the kind of problem.
fn csv_reason(e: &csv::Error) -> String {
    let at = e
        .position()
        .map(|p| format!("line {}: ", p.line()))
        .unwrap_or_default();
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{at}expected {expected_len} fields like the header, found {len}"),
        csv::ErrorKind::Utf8 { .. } => format!("{at}not UTF-8 text"),
        csv::ErrorKind::Io(io) => format!("{at}read error: {io}"),
        _ => format!("{at}malformed CSV"),
    }
}

enum Sink {
    Csv(csv::Writer<BufWriter<File>>),
    Parquet(ArrowWriter<File>),
}

impl Sink {
    fn create(fmt: Format, path: &Path, schema: SchemaRef) -> Result<Self> {
        let file = File::create(path)
            .map_err(|e| Error::infra(path.display().to_string(), format!("cannot create: {e}")))?;
        Ok(match fmt {
            Format::Csv => {
                let mut w = csv::Writer::from_writer(BufWriter::new(file));
                w.write_record(schema.fields().iter().map(|f| f.name().as_str()))
                    .map_err(|e| Error::infra(path.display().to_string(), e.to_string()))?;
                Sink::Csv(w)
            }
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Sink::Parquet(ArrowWriter::try_new(file, schema, Some(props)).map_err(Error::bug)?)
            }
        })
    }

    fn write(&mut self, b: &RecordBatch, path: &Path) -> Result<()> {
        let io = |e: String| Error::infra(path.display().to_string(), e);
        match self {
            Sink::Parquet(w) => w.write(b).map_err(|e| io(e.to_string())),
            Sink::Csv(w) => {
                let opts = FormatOptions::default().with_null("");
                let fmts: Vec<ArrayFormatter> = b
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(Error::bug)?;
                let text: Vec<bool> = b
                    .columns()
                    .iter()
                    .map(|c| {
                        matches!(
                            c.data_type(),
                            arrow::datatypes::DataType::Utf8
                                | arrow::datatypes::DataType::LargeUtf8
                                | arrow::datatypes::DataType::Utf8View
                        )
                    })
                    .collect();
                let mut cells: Vec<String> = Vec::with_capacity(fmts.len());
                for i in 0..b.num_rows() {
                    cells.clear();
                    cells.extend(fmts.iter().zip(&text).map(|(f, &is_text)| {
                        let v = f.value(i).to_string();
                        if is_text { spreadsheet_safe(v) } else { v }
                    }));
                    w.write_record(&cells).map_err(|e| io(e.to_string()))?;
                }
                Ok(())
            }
        }
    }

    fn finish(self, path: &Path) -> Result<()> {
        let io = |e: String| Error::infra(path.display().to_string(), e);
        match self {
            Sink::Parquet(w) => w.close().map(|_| ()).map_err(|e| io(e.to_string())),
            Sink::Csv(w) => {
                let mut inner = w.into_inner().map_err(|e| io(e.to_string()))?;
                inner.flush().map_err(|e| io(e.to_string()))?;
                inner
                    .into_inner()
                    .map_err(|e| io(e.to_string()))?
                    .sync_all()
                    .map_err(|e| io(e.to_string()))
            }
        }
    }
}

/// A text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a tab or carriage return first)
/// gets a leading `'`, as OWASP advises for CSV exports: the scored file carries the input's own values.
fn spreadsheet_safe(v: String) -> String {
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_defused() {
        assert_eq!(
            spreadsheet_safe("=cmd|' /C calc'!A0".into()),
            "'=cmd|' /C calc'!A0"
        );
        for v in ["+1", "-x", "@SUM(A1)", "\tx"] {
            assert!(spreadsheet_safe(v.into()).starts_with('\''), "{v}");
        }
        assert_eq!(spreadsheet_safe("treatment".into()), "treatment");
    }
}
