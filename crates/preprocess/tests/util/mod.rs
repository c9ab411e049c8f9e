//! Shared set-up of the preprocess tests.

use trialflow_core::Storage;
use trialflow_core::lake::{self, Current, CurrentObject};

/// Puts `csv` into the lake as the one current raw object of source `t`, as `ingest` would.
pub async fn put_raw(lake: &Storage, csv: &str, rows: u64) {
    lake.put("raw/t/x.csv", csv.to_string()).await.unwrap();
    let current = Current {
        objects: vec![CurrentObject {
            source: "t".into(),
            url: "file:///t.csv".into(),
            object: "raw/t/x.csv".into(),
            format: lake::SourceFormat::Csv,
            delimiter: ',',
            quote: '"',
            sha256: String::new(),
            rows,
        }],
    };
    lake.put_json(lake::RAW_CURRENT, &current).await.unwrap();
}
