//! Paths and small documents of the lake layout: the contract between stages (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

/// The raw zone: content-addressed copies of the sources.
pub const RAW: &str = "raw/";
pub const RAW_MANIFEST: &str = "raw/_manifest.jsonl";
pub const RAW_CURRENT: &str = "raw/_current.json";
/// The current raw objects staged as one Parquet table (typed as staging reads them, raw ids included), for a
/// Ballista cluster to read; removed when the clean task ends.
pub const STAGED_FILE: &str = "raw/_staged.parquet";
pub const CLEAN: &str = "processed/clean/";
pub const CLEAN_FILE: &str = "processed/clean/part-0.parquet";
pub const QUARANTINE: &str = "processed/quarantine/";
pub const QUARANTINE_FILE: &str = "processed/quarantine/part-0.parquet";
pub const CLEAN_REPORT: &str = "processed/clean_report.json";
/// `processed/tables/<name>/{clean,quarantine}.parquet`: the record tables of `dataset.tables`, cleaned.
pub const TABLES: &str = "processed/tables/";
/// Generated SQL, one folder per task so that tasks never share an output prefix.
pub const SQL_CLEAN: &str = "processed/sql/clean/";
pub const SQL_FEATURES: &str = "processed/sql/features/";
pub const FEATURES: &str = "processed/features/";
pub const FEATURE_SPEC: &str = "processed/feature_spec.json";
pub const QUALITY_REPORT: &str = "processed/quality_report.json";
/// Per split and arm statistics of the split tables, gathered while `features` writes them; the quality
/// report's figures.
pub const SPLIT_STATS: &str = "processed/split_stats.json";
pub const CANDIDATES: &str = "candidates/";
pub const EVALUATION: &str = "candidates/evaluation.json";
/// The clustering of baseline phenotypes (`cluster` task): `model.json` and `clusters.json`.
pub const PHENOTYPES: &str = "phenotypes/";
pub const PHENOTYPES_MODEL: &str = "phenotypes/model.json";
pub const PHENOTYPES_REPORT: &str = "phenotypes/clusters.json";
/// Written instead of the two when the config has no `clustering`: no stale clustering stays to be promoted.
pub const PHENOTYPES_NONE: &str = "phenotypes/none.json";
pub const GATE: &str = "candidates/gate.json";
/// `gate/<candidate>/BLESSED`: the gate's verdict on one candidate's weights.
pub const BLESSINGS: &str = "gate/";
/// `deployments/manifests/<overlay>.yaml`: Kubernetes manifests rendered by the deployment pipeline.
pub const MANIFESTS: &str = "deployments/manifests/";
/// `reports/<run>/report.html` and `analysis.json`, one folder per run that analysed.
pub const REPORTS: &str = "reports/";
pub const DEPLOYMENTS: &str = "deployments/";
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// A record table's accepted records (pseudonymized subject id, its columns as text, source and line).
pub fn table_clean_file(table: &str) -> String {
    format!("{TABLES}{table}/clean.parquet")
}

/// A record table's quarantined records, with the quarantine's columns.
pub fn table_quarantine_file(table: &str) -> String {
    format!("{TABLES}{table}/quarantine.parquet")
}

pub fn features_file(split: &str) -> String {
    format!("{FEATURES}split={split}/part-0.parquet")
}

pub fn report_dir(run_id: &str) -> String {
    format!("{REPORTS}{run_id}/")
}

/// Versions under `<name>/` in a model repository (`<name>/<version>/…`, servable once `BLESSED` exists):
/// `(version, blessed)`, ascending.
pub async fn model_versions(
    models: &crate::Storage,
    name: &str,
) -> crate::Result<Vec<(u64, bool)>> {
    let mut out: std::collections::BTreeMap<u64, bool> = Default::default();
    for e in models.list(name).await? {
        let mut parts = e.path.split('/');
        if let (Some(m), Some(v), Some(file)) = (parts.next(), parts.next(), parts.next())
            && m == name
            && let Ok(v) = v.parse::<u64>()
        {
            *out.entry(v).or_default() |= file == "BLESSED";
        }
    }
    Ok(out.into_iter().collect())
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
    #[serde(default)]
    pub format: SourceFormat,
    /// CSV dialect of the source (for the CSV formats).
    #[serde(default = "comma")]
    pub delimiter: char,
    #[serde(default = "double_quote")]
    pub quote: char,
    /// SHA-256 of the copy's bytes (`object` is named by their BLAKE3).
    pub sha256: String,
    pub rows: u64,
}

fn comma() -> char {
    ','
}

fn double_quote() -> char {
    '"'
}

/// How a source file is encoded. `auto` (the config default) picks by the file name's extension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceFormat {
    #[default]
    #[serde(rename = "csv")]
    Csv,
    #[serde(rename = "csv.gz")]
    CsvGzip,
    #[serde(rename = "csv.zst")]
    CsvZstd,
    #[serde(rename = "parquet")]
    Parquet,
    #[serde(rename = "ndjson")]
    Ndjson,
    /// SAS transport, version 5 or 8 (`core::xport`).
    #[serde(rename = "xpt")]
    Xpt,
    /// CDISC Dataset-JSON 1.1, one JSON object (`core::dsjson`).
    #[serde(rename = "dataset-json")]
    DatasetJson,
    /// CDISC Dataset-JSON 1.1, the NDJSON form: metadata on line 1, one row per line.
    #[serde(rename = "dataset-ndjson")]
    DatasetNdjson,
}

impl SourceFormat {
    /// Every format; the fuzz targets (and their seeds) choose one by indexing this with their first byte.
    pub const ALL: [SourceFormat; 8] = [
        SourceFormat::Csv,
        SourceFormat::CsvGzip,
        SourceFormat::CsvZstd,
        SourceFormat::Ndjson,
        SourceFormat::Parquet,
        SourceFormat::Xpt,
        SourceFormat::DatasetJson,
        SourceFormat::DatasetNdjson,
    ];

    pub const NAMES: [&str; 8] = [
        "csv",
        "csv.gz",
        "csv.zst",
        "parquet",
        "ndjson",
        "xpt",
        "dataset-json",
        "dataset-ndjson",
    ];

    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Csv => "csv",
            SourceFormat::CsvGzip => "csv.gz",
            SourceFormat::CsvZstd => "csv.zst",
            SourceFormat::Parquet => "parquet",
            SourceFormat::Ndjson => "ndjson",
            SourceFormat::Xpt => "xpt",
            SourceFormat::DatasetJson => "dataset-json",
            SourceFormat::DatasetNdjson => "dataset-ndjson",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "csv" => SourceFormat::Csv,
            "csv.gz" | "gzip" => SourceFormat::CsvGzip,
            "csv.zst" | "zstd" => SourceFormat::CsvZstd,
            "parquet" => SourceFormat::Parquet,
            "ndjson" | "jsonl" => SourceFormat::Ndjson,
            "xpt" | "xport" => SourceFormat::Xpt,
            "dataset-json" => SourceFormat::DatasetJson,
            "dataset-ndjson" => SourceFormat::DatasetNdjson,
            _ => return None,
        })
    }

    /// The format a file name implies, if any.
    pub fn from_name(path: &str) -> Option<Self> {
        let p = path.to_ascii_lowercase();
        let ends = |exts: &[&str]| exts.iter().any(|e| p.ends_with(e));
        Some(if ends(&[".csv.gz", ".gz"]) {
            SourceFormat::CsvGzip
        } else if ends(&[".csv.zst", ".zst"]) {
            SourceFormat::CsvZstd
        } else if ends(&[".parquet", ".pq"]) {
            SourceFormat::Parquet
        } else if ends(&[".ndjson", ".jsonl"]) {
            SourceFormat::Ndjson
        } else if ends(&[".json"]) {
            // A `.json` file is one JSON value; in a trial's data that is Dataset-JSON (NDJSON is `.ndjson`).
            SourceFormat::DatasetJson
        } else if ends(&[".xpt"]) {
            SourceFormat::Xpt
        } else if ends(&[".csv"]) {
            SourceFormat::Csv
        } else {
            return None;
        })
    }
}
