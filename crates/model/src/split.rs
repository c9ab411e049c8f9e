//! The lake's feature splits as model inputs: read, checked against the feature spec, encoded by the one
//! transform training and serving share.

use trialflow_core::features::FeatureSpec;
use trialflow_core::lake;
use trialflow_core::table::read_parquet_prefix;
use trialflow_core::{Error, Result, Storage};

use crate::encode_batches;

/// Encoded inputs (row-major, `rows × dim`) and targets (row-major, `rows × ` the endpoint's target width:
/// the 0/1 outcome, the value, or time and event): what the fitting functions take.
#[derive(Debug, Clone, Copy)]
pub struct Arrays<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub rows: usize,
}

impl Split {
    pub fn arrays(&self) -> Arrays<'_> {
        Arrays {
            x: &self.x,
            y: &self.y,
            rows: self.rows,
        }
    }
}

/// One split of the lake's feature tables, encoded for a model.
#[derive(Debug, Clone)]
pub struct Split {
    pub x: Vec<f32>,
    /// The target columns' values, row-major (see [`Arrays`]).
    pub y: Vec<f32>,
    pub rows: usize,
    /// Slice columns (`arm`, `site`) per row, for sliced metrics.
    pub slices: Vec<(String, Vec<Option<String>>)>,
    /// Pseudonymized subject ids, in row order.
    pub ids: Vec<Option<String>>,
}

/// Columns the test metrics are always sliced by, when the table has them.
pub const SLICE_COLUMNS: [&str; 2] = ["arm", "site"];

/// Reads `processed/features/split=<split>/` and encodes it through the transform serving uses; `targets`
/// are the columns the model predicts (`Config::target_columns`, a card's `targets`).
pub async fn load_split(
    lake: &Storage,
    spec: &FeatureSpec,
    split: &str,
    extra_slices: &[String],
    targets: &[String],
) -> Result<Split> {
    let prefix = format!("{}split={split}/", lake::FEATURES);
    let batches = read_parquet_prefix(lake, &prefix).await?;
    if let Some(first) = batches.first() {
        check_columns(spec, &first.schema(), &lake.display(&prefix))?;
    }
    let (x, rows) = encode(spec, &batches, &lake.display(&prefix))?;
    let mut y = Vec::with_capacity(rows);
    for b in &batches {
        y.extend(target_values(b, targets, &lake.display(&prefix))?);
    }
    let has = |c: &str| {
        batches
            .first()
            .is_some_and(|b| b.column_by_name(c).is_some())
    };
    if let Some(missing) = extra_slices.iter().find(|c| !batches.is_empty() && !has(c)) {
        return Err(Error::bad_data(
            lake.display(&prefix),
            format!("slice column `{missing}` (training.slices) is not in the processed table"),
        ));
    }
    let slices = SLICE_COLUMNS
        .iter()
        .copied()
        .filter(|c| has(c))
        .chain(extra_slices.iter().map(String::as_str))
        .map(|c| Ok((c.to_string(), trialflow_core::table::strings(&batches, c)?)))
        .collect::<Result<_>>()?;
    let ids = if batches
        .first()
        .is_some_and(|b| b.column_by_name("subject_id").is_some())
    {
        trialflow_core::table::strings(&batches, "subject_id")?
    } else {
        vec![None; rows]
    };
    Ok(Split {
        x,
        y,
        rows,
        slices,
        ids,
    })
}

/// The processed table must have every column the feature spec reads.
pub fn check_columns(
    spec: &FeatureSpec,
    schema: &arrow::datatypes::Schema,
    location: &str,
) -> Result<()> {
    let fields = spec
        .numeric
        .iter()
        .filter(|n| n.derived.is_none())
        .map(|n| &n.name)
        .chain(spec.categorical.iter().map(|c| &c.name));
    let missing: Vec<String> = fields
        .map(|f| spec.table_column(f))
        .filter(|c| schema.column_with_name(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(Error::bad_data(
            location,
            format!(
                "the feature spec ({}) names columns the table does not have: {}; re-run the features task",
                lake::FEATURE_SPEC,
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Model inputs of `batches` through the one transform serving uses.
pub fn encode(
    spec: &FeatureSpec,
    batches: &[arrow::record_batch::RecordBatch],
    location: &str,
) -> Result<(Vec<f32>, usize)> {
    encode_batches(spec, batches, &|name| spec.table_column(name))
        .map_err(|e| Error::bad_data(location, format!("cannot encode features: {e}")))
}

/// The target columns of a batch, row-major (one value per column per row) as `f32`. A missing column, a
/// NULL or a value that is not finite is bad data naming the column and the row of the batch.
pub fn target_values(
    batch: &arrow::record_batch::RecordBatch,
    columns: &[String],
    location: &str,
) -> Result<Vec<f32>> {
    use arrow::array::Array;
    let mut per_column = Vec::with_capacity(columns.len());
    for name in columns {
        let col = batch.column_by_name(name).ok_or_else(|| {
            Error::bad_data(
                location,
                format!(
                    "column `{name}` (the model's target) is missing; re-run the features task"
                ),
            )
        })?;
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Float64)
            .map_err(|e| Error::bad_data(location, format!("column `{name}`: {e}")))?;
        let col = col
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .ok_or_else(|| Error::Internal("cast".into()))?
            .clone();
        if let Some(row) = (0..col.len()).find(|&i| col.is_null(i) || !col.value(i).is_finite()) {
            return Err(Error::bad_data(
                location,
                format!(
                    "target column `{name}` has {} at row {} of a batch; a model's target must be a finite number",
                    if col.is_null(row) {
                        "no value"
                    } else {
                        "a NaN or infinite value"
                    },
                    row + 1
                ),
            ));
        }
        per_column.push(col);
    }
    let rows = batch.num_rows();
    let mut out = Vec::with_capacity(rows * columns.len());
    for r in 0..rows {
        out.extend(per_column.iter().map(|c| c.value(r) as f32));
    }
    Ok(out)
}
