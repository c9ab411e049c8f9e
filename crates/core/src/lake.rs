//! Paths and small documents of the lake layout: the contract between stages (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

pub const RAW_MANIFEST: &str = "raw/_manifest.jsonl";
pub const RAW_CURRENT: &str = "raw/_current.json";
pub const CLEAN: &str = "processed/clean/";
pub const CLEAN_FILE: &str = "processed/clean/part-0.parquet";
pub const QUARANTINE: &str = "processed/quarantine/";
pub const QUARANTINE_FILE: &str = "processed/quarantine/part-0.parquet";
pub const CLEAN_REPORT: &str = "processed/clean_report.json";
/// Generated SQL, one folder per task so that tasks never share an output prefix.
pub const SQL_CLEAN: &str = "processed/sql/clean/";
pub const SQL_FEATURES: &str = "processed/sql/features/";
pub const FEATURES: &str = "processed/features/";
pub const FEATURE_SPEC: &str = "processed/feature_spec.json";
pub const QUALITY_REPORT: &str = "processed/quality_report.json";
pub const CANDIDATES: &str = "candidates/";
pub const EVALUATION: &str = "candidates/evaluation.json";
pub const GATE: &str = "candidates/gate.json";
/// `reports/<run>/report.html` and `analysis.json`, one folder per run that analysed.
pub const REPORTS: &str = "reports/";
pub const DEPLOYMENTS: &str = "deployments/";
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

pub fn features_file(split: &str) -> String {
    format!("{FEATURES}split={split}/part-0.parquet")
}

pub fn report_dir(run_id: &str) -> String {
    format!("{REPORTS}{run_id}/")
}

pub fn candidate_dir(model: &str) -> String {
    format!("{CANDIDATES}{model}/")
}

/// The raw objects that currently stand for each source file (`raw/_current.json`), written by ingest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Current {
    pub objects: Vec<CurrentObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentObject {
    pub source: String,
    pub url: String,
    pub object: String,
    pub sha256: String,
    pub rows: u64,
}
