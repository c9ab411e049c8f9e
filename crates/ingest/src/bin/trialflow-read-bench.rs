//! `trialflow-read-bench FILE FORMAT SUM_COLUMN COLUMN…`: reads every value of the named columns of one
//! source file the way the clean task stages it (`core::stage`: decoded, normalized, as text batches) and
//! prints the rows and the sum of one numeric column as JSON, for `cargo xtask bench ingest`, which times it
//! beside pyreadstat and pandas on the same file and checks that all of them saw the same rows and sum.

use anyhow::{Context, Result, bail};
use arrow::array::AsArray;
use trialflow_core::lake::{CurrentObject, SourceFormat};
use trialflow_core::stage::{self, RecordBatch, StageLimits};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, format, sum_column, columns @ ..] = args.as_slice() else {
        bail!("usage: trialflow-read-bench FILE FORMAT SUM_COLUMN COLUMN…");
    };
    let format = SourceFormat::parse(format).with_context(|| format!("unknown format {format}"))?;
    let o = CurrentObject {
        source: "bench".into(),
        url: format!("file://{file}"),
        object: String::new(),
        format,
        delimiter: ',',
        quote: '"',
        sha256: String::new(),
        rows: 0,
    };
    let reader = std::fs::File::open(file).with_context(|| format!("opening {file}"))?;
    let (mut rows, mut sum) = (0u64, 0f64);
    let mut emit = |b: RecordBatch| -> trialflow_core::Result<()> {
        rows += b.num_rows() as u64;
        if let Some(c) = b.column_by_name(sum_column) {
            sum += c
                .as_string::<i32>()
                .iter()
                .flatten()
                .filter_map(|v| v.parse::<f64>().ok())
                .sum::<f64>();
        }
        Ok(())
    };
    let limits = StageLimits {
        max_record_bytes: 1 << 20,
    };
    stage::stage_object(&o, reader, columns, 0, limits, &[], &mut emit)?;
    println!("{}", serde_json::json!({"rows": rows, "sum": sum}));
    Ok(())
}
