//! The documents one stage writes and another reads, each a type beside its lake path. Writers and readers
//! go through the same type ([`save`], [`load`], [`read`]), so a field renamed on one side is an error
//! naming the file and the field on the other, never a silent zero.
//!
//! Task summaries in the run record are these same types: [`from_summary`] reads them back.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::features::FeatureSpec;
use crate::lake;
use crate::storage::Storage;

/// A document with one fixed place in the lake.
pub trait Document: Serialize + DeserializeOwned + Send + Sync {
    const PATH: &'static str;
}

/// Parses `bytes` as a `T`; an error names `location` and the path of the offending field.
pub fn parse<T: DeserializeOwned>(location: &str, bytes: &[u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| field_error(location, e))
}

fn field_error(location: &str, e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let field = e.path().to_string();
    let inner = e.into_inner();
    if field == "." {
        Error::bad_data(location, format!("not the expected document: {inner}"))
    } else {
        Error::bad_data(
            location,
            format!("field `{field}`: not the expected document: {inner}"),
        )
    }
}

/// Reads the document at `rel` (a path that is not fixed, such as a candidate's `metrics.json`).
pub async fn read<T: DeserializeOwned>(store: &Storage, rel: &str) -> Result<T> {
    let bytes = store.get(rel).await?;
    parse(&store.display(rel), &bytes)
}

/// [`read`], `Ok(None)` when the object does not exist.
pub async fn read_opt<T: DeserializeOwned>(store: &Storage, rel: &str) -> Result<Option<T>> {
    match store.get_opt(rel).await? {
        Some(bytes) => parse(&store.display(rel), &bytes).map(Some),
        None => Ok(None),
    }
}

pub async fn load<T: Document>(lake: &Storage) -> Result<T> {
    read(lake, T::PATH).await
}

pub async fn load_opt<T: Document>(lake: &Storage) -> Result<Option<T>> {
    read_opt(lake, T::PATH).await
}

pub async fn save<T: Document>(lake: &Storage, doc: &T) -> Result<()> {
    lake.put_json(T::PATH, doc).await
}

/// A task's summary in the run record, read back as the document its task returned.
pub fn from_summary<T: DeserializeOwned>(task: &str, summary: &serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(summary).map_err(|e| {
        let field = e.path().to_string();
        Error::bad_data(
            format!("the run record's summary of task `{task}`"),
            format!("field `{field}`: {}", e.into_inner()),
        )
    })
}

impl Document for lake::Current {
    const PATH: &'static str = lake::RAW_CURRENT;
}

impl Document for FeatureSpec {
    const PATH: &'static str = lake::FEATURE_SPEC;
}

// ---- clean: processed/clean_report.json ------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceCounts {
    pub source: String,
    pub rows_in: u64,
    pub accepted: u64,
    pub quarantined: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViolationCount {
    pub column: String,
    pub rule: String,
    pub action: String,
    pub rows: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanReport {
    pub rows_in: u64,
    pub accepted: u64,
    pub quarantined: u64,
    pub per_source: Vec<SourceCounts>,
    /// Every rule violation, including those whose action only nulled a value.
    pub violations: Vec<ViolationCount>,
    pub excluded_by_filter: u64,
    pub exact_duplicates: u64,
    pub repeated_ids: u64,
    /// Values that were NFC-composed or stripped of invisible characters (a byte-order mark, a zero-width
    /// space, a NUL) as they were staged, so that look-alike ids and levels are one.
    #[serde(default)]
    pub normalized_values: u64,
    /// Where the pseudonymization key came from (never the key).
    pub key_source: String,
    /// Contract column → the label its source file declares (SAS transport and Dataset-JSON files): the
    /// report prints it beside the name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The record tables of `dataset.tables`: for each, records in = accepted + quarantined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableCounts>,
}

/// One record table's accounting in the clean report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableCounts {
    pub table: String,
    pub rows_in: u64,
    pub accepted: u64,
    pub quarantined: u64,
    /// Quarantine rule → records.
    pub quarantine_rules: BTreeMap<String, u64>,
    pub pivots: Vec<PivotCount>,
}

/// How many subjects of the subject table a pivot column has a record for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PivotCount {
    pub column: String,
    /// Subjects (of any table's ids) with at least one matching record.
    pub subjects: u64,
    /// Matching records beyond a subject's first (quarantined under `repeated: first`).
    pub repeats: u64,
}

impl Document for CleanReport {
    const PATH: &'static str = lake::CLEAN_REPORT;
}

// ---- features: the split counts, processed/split_stats.json -----------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitCounts {
    pub split: String,
    pub rows: u64,
    pub outcome_events: u64,
}

/// The features task's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesReport {
    pub splits: Vec<SplitCounts>,
    pub feature_columns: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericSummary {
    pub column: String,
    pub split: String,
    pub arm: String,
    pub count: u64,
    pub nulls: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelCount {
    pub column: String,
    pub split: String,
    pub arm: String,
    pub level: Option<String>,
    pub count: u64,
}

/// What the quality report takes from the split tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSummary {
    pub splits: Vec<SplitCounts>,
    pub numeric: Vec<NumericSummary>,
    pub categorical: Vec<LevelCount>,
}

impl Document for SplitSummary {
    const PATH: &'static str = lake::SPLIT_STATS;
}

// ---- quality: processed/quality_report.json ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityReport {
    pub clean: CleanReport,
    pub splits: Vec<SplitCounts>,
    pub numeric: Vec<NumericSummary>,
    pub categorical: Vec<LevelCount>,
}

impl Document for QualityReport {
    const PATH: &'static str = lake::QUALITY_REPORT;
}

/// The quality task's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySummary {
    pub splits: Vec<SplitCounts>,
    /// Where the report is, for people.
    pub report: String,
}

// ---- train: candidates/<model>/metrics.json ---------------------------------------------------------------

/// The scalar metrics, by the names the quality gate and metrics.json use. Their `<name>_ci_lower` and
/// `<name>_ci_upper` are the bootstrap interval's bounds.
pub const SCALAR_METRICS: [&str; 8] = [
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "accuracy",
    "sensitivity",
    "specificity",
    "ece",
];

/// Test metrics of one model (computed by `trialflow_model::metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub positives: usize,
    /// `None` when the test split holds one class only (AUC undefined).
    pub roc_auc: Option<f64>,
    /// Average precision; `None` without positives.
    pub pr_auc: Option<f64>,
    pub brier: f64,
    pub log_loss: f64,
    /// Probability at or above which a prediction counts as positive.
    pub threshold: f64,
    /// At `threshold`.
    pub accuracy: f64,
    /// True-positive rate at `threshold`; `None` without positives.
    pub sensitivity: Option<f64>,
    /// True-negative rate at `threshold`; `None` without negatives.
    pub specificity: Option<f64>,
    /// Expected calibration error over the reliability curve's bins.
    pub ece: f64,
    /// Percentile bootstrap 95% intervals `[lower, upper]` by metric name (resamples in `bootstrap`).
    pub ci: BTreeMap<String, [f64; 2]>,
    /// Bootstrap resamples behind `ci` (0: no intervals).
    pub bootstrap: usize,
    /// ROC curve points (false positive rate, true positive rate), at most ~100.
    pub roc: Vec<(f64, f64)>,
    /// Reliability curve: ten equal-width bins of predicted probability.
    pub calibration: Vec<CalibrationBin>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub n: usize,
    pub mean_predicted: f64,
    pub observed: f64,
}

impl Metrics {
    /// A scalar metric by name (`SCALAR_METRICS`, or one with `_ci_lower`/`_ci_upper`): `None` for a name
    /// that does not exist, `Some(None)` for a metric undefined on this sample.
    pub fn get(&self, name: &str) -> Option<Option<f64>> {
        scalar(&SCALAR_METRICS, &self.ci, name, |m| match m {
            "roc_auc" => self.roc_auc,
            "pr_auc" => self.pr_auc,
            "brier" => Some(self.brier),
            "log_loss" => Some(self.log_loss),
            "accuracy" => Some(self.accuracy),
            "sensitivity" => self.sensitivity,
            "specificity" => self.specificity,
            _ => Some(self.ece),
        })
    }

    /// Every name `get` accepts.
    pub fn names() -> Vec<String> {
        with_bounds(&SCALAR_METRICS)
    }
}

/// The scalar metrics of a continuous endpoint (`_ci_lower`/`_ci_upper` too).
pub const REGRESSION_METRICS: [&str; 5] = [
    "rmse",
    "mae",
    "r2",
    "calibration_slope",
    "calibration_intercept",
];

/// Test metrics of a continuous endpoint (scikit-learn's definitions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionMetrics {
    pub n: usize,
    pub rmse: f64,
    pub mae: f64,
    /// 1 − residual / total sum of squares; `None` for a constant target.
    pub r2: Option<f64>,
    /// Of the observed on the predicted value (ordinary least squares): 1 and 0 when calibrated.
    pub calibration_slope: Option<f64>,
    pub calibration_intercept: Option<f64>,
    pub ci: BTreeMap<String, [f64; 2]>,
    pub bootstrap: usize,
}

/// The scalar metrics of a time-to-event endpoint (`_ci_lower`/`_ci_upper` too).
pub const SURVIVAL_METRICS: [&str; 4] = [
    "c_index_harrell",
    "c_index_uno",
    "mean_auc",
    "integrated_brier",
];

/// Test metrics of a time-to-event endpoint (scikit-survival's definitions, the censoring distribution
/// estimated on the train split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurvivalMetrics {
    pub n: usize,
    pub events: usize,
    /// Harrell's concordance of the risk score; `None` without a comparable pair.
    pub c_index_harrell: Option<f64>,
    /// Uno's IPCW concordance, pairs whose earlier time is before the last horizon.
    pub c_index_uno: Option<f64>,
    /// The evaluation times (`training.horizons`).
    pub horizons: Vec<f64>,
    /// Cumulative/dynamic AUC at each horizon (`None` where undefined, e.g. no case yet).
    pub auc: Vec<Option<f64>>,
    /// Its mean weighted by the test split's Kaplan–Meier drop between the horizons.
    pub mean_auc: Option<f64>,
    /// IPCW Brier score of the predicted survival at each horizon.
    pub brier: Vec<Option<f64>>,
    /// The Brier scores integrated over the horizons (trapezoid) per unit time; `None` below two horizons.
    pub integrated_brier: Option<f64>,
    /// Predicted against Kaplan–Meier survival at the last horizon, by tenths of predicted survival.
    pub calibration: Vec<SurvivalCalibrationBin>,
    pub ci: BTreeMap<String, [f64; 2]>,
    pub bootstrap: usize,
}

/// One group of a survival calibration: rows whose predicted survival at the horizon falls in the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurvivalCalibrationBin {
    pub n: usize,
    pub mean_predicted: f64,
    /// The group's Kaplan–Meier survival at the horizon.
    pub observed: f64,
}

/// Test metrics of a model of any endpoint, tagged `endpoint` in JSON (absent = binary, as before
/// endpoints).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "endpoint", rename_all = "snake_case")]
pub enum ModelMetrics {
    Binary(Metrics),
    Continuous(RegressionMetrics),
    TimeToEvent(SurvivalMetrics),
}

impl<'de> Deserialize<'de> for ModelMetrics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut v = serde_json::Value::deserialize(d)?;
        let endpoint = match v.as_object_mut().and_then(|o| o.remove("endpoint")) {
            None => "binary".to_string(),
            Some(serde_json::Value::String(s)) => s,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "field `endpoint`: expected a string, found {other}"
                )));
            }
        };
        match endpoint.as_str() {
            "binary" => serde_json::from_value(v).map(ModelMetrics::Binary),
            "continuous" => serde_json::from_value(v).map(ModelMetrics::Continuous),
            "time_to_event" => serde_json::from_value(v).map(ModelMetrics::TimeToEvent),
            other => {
                return Err(D::Error::custom(format!(
                    "field `endpoint`: unknown endpoint `{other}`, expected binary, continuous or time_to_event"
                )));
            }
        }
        .map_err(D::Error::custom)
    }
}

/// A scalar of `names` by name, or its interval's bound (`_ci_lower`, `_ci_upper`) from `ci`.
fn scalar(
    names: &[&str],
    ci: &BTreeMap<String, [f64; 2]>,
    name: &str,
    value: impl Fn(&str) -> Option<f64>,
) -> Option<Option<f64>> {
    let (base, bound) = match name
        .strip_suffix("_ci_lower")
        .map(|b| (b, 0))
        .or_else(|| name.strip_suffix("_ci_upper").map(|b| (b, 1)))
    {
        Some((b, i)) => (b, Some(i)),
        None => (name, None),
    };
    if !names.contains(&base) {
        return None;
    }
    Some(match bound {
        Some(i) => ci.get(base).map(|c| c[i]),
        None => value(base),
    })
}

/// Every name a scalar getter accepts: the names and their interval bounds.
fn with_bounds(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .flat_map(|m| {
            [
                m.to_string(),
                format!("{m}_ci_lower"),
                format!("{m}_ci_upper"),
            ]
        })
        .collect()
}

impl RegressionMetrics {
    pub fn get(&self, name: &str) -> Option<Option<f64>> {
        scalar(&REGRESSION_METRICS, &self.ci, name, |m| match m {
            "rmse" => Some(self.rmse),
            "mae" => Some(self.mae),
            "r2" => self.r2,
            "calibration_slope" => self.calibration_slope,
            _ => self.calibration_intercept,
        })
    }
}

impl SurvivalMetrics {
    pub fn get(&self, name: &str) -> Option<Option<f64>> {
        scalar(&SURVIVAL_METRICS, &self.ci, name, |m| match m {
            "c_index_harrell" => self.c_index_harrell,
            "c_index_uno" => self.c_index_uno,
            "mean_auc" => self.mean_auc,
            _ => self.integrated_brier,
        })
    }
}

impl ModelMetrics {
    pub fn endpoint(&self) -> crate::config::Endpoint {
        match self {
            ModelMetrics::Binary(_) => crate::config::Endpoint::Binary,
            ModelMetrics::Continuous(_) => crate::config::Endpoint::Continuous,
            ModelMetrics::TimeToEvent(_) => crate::config::Endpoint::TimeToEvent,
        }
    }

    /// A scalar metric by name: `None` for a name this endpoint does not have, `Some(None)` for a metric
    /// undefined on this sample.
    pub fn get(&self, name: &str) -> Option<Option<f64>> {
        match self {
            ModelMetrics::Binary(m) => m.get(name),
            ModelMetrics::Continuous(m) => m.get(name),
            ModelMetrics::TimeToEvent(m) => m.get(name),
        }
    }

    /// The scalar names of an endpoint (without interval bounds).
    pub fn scalars(endpoint: crate::config::Endpoint) -> &'static [&'static str] {
        match endpoint {
            crate::config::Endpoint::Binary => &SCALAR_METRICS,
            crate::config::Endpoint::Continuous => &REGRESSION_METRICS,
            crate::config::Endpoint::TimeToEvent => &SURVIVAL_METRICS,
        }
    }

    /// Every name `get` accepts for an endpoint.
    pub fn names(endpoint: crate::config::Endpoint) -> Vec<String> {
        with_bounds(Self::scalars(endpoint))
    }

    /// Rows scored.
    pub fn n(&self) -> usize {
        match self {
            ModelMetrics::Binary(m) => m.n,
            ModelMetrics::Continuous(m) => m.n,
            ModelMetrics::TimeToEvent(m) => m.n,
        }
    }

    /// The metric candidates are ranked by (higher is better): ROC AUC, R², Harrell's C.
    pub fn ranking(&self) -> (&'static str, Option<f64>) {
        match self {
            ModelMetrics::Binary(m) => ("roc_auc", m.roc_auc),
            ModelMetrics::Continuous(m) => ("r2", m.r2),
            ModelMetrics::TimeToEvent(m) => ("c_index_harrell", m.c_index_harrell),
        }
    }

    /// The binary metrics, when these are.
    pub fn binary(&self) -> Option<&Metrics> {
        match self {
            ModelMetrics::Binary(m) => Some(m),
            _ => None,
        }
    }
}

/// Metrics of one level of a slice column (without the curves).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    pub column: String,
    pub level: String,
    #[serde(flatten)]
    pub metrics: ModelMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    /// `None` when the validation split holds one class.
    pub val_auc: Option<f64>,
}

/// How much the test ROC AUC drops when one input field's values are shuffled across rows (all one-hot
/// columns of a categorical field together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Importance {
    pub feature: String,
    pub auc_drop_mean: f64,
    pub auc_drop_std: f64,
}

/// How a streamed training run read its train split (in `metrics.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamStats {
    /// Parquet row groups of the train split (the unit shuffled each epoch).
    pub row_groups: usize,
    /// Blocks handed to the training loop per epoch.
    pub blocks_per_epoch: usize,
    /// The most rows held at once (at most `training.stream_block_rows`).
    pub largest_block_rows: usize,
}

/// `candidates/<model>/metrics.json` (and `metrics.json` of a promoted version): the train task's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainReport {
    pub model: String,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_val_loss: f64,
    pub train_rows: usize,
    pub val_rows: usize,
    pub test_rows: usize,
    /// Set when the train and validation splits were streamed from the lake (`training.max_in_memory_mib`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamStats>,
    pub metrics: ModelMetrics,
    /// Test metrics within each level of the slice columns (arm, site).
    pub slices: Vec<Slice>,
    /// Permutation feature importance on the test split, largest first.
    pub importance: Vec<Importance>,
    /// Loss and validation AUC per epoch.
    pub history: Vec<Epoch>,
    /// Where the run was logged: `{"mlflow": {…}}`, or `{"error": "…"}` when MLflow could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<serde_json::Value>,
}

/// A candidate's `metrics.json`.
pub fn candidate_metrics(model: &str) -> String {
    format!("{}metrics.json", lake::candidate_dir(model))
}

/// The test split's probabilities as trained, keyed by pseudonymized subject id in split row order: the
/// reference that serving and batch scoring must reproduce.
pub const TEST_PREDICTIONS: &str = "test_predictions.parquet";

// ---- evaluate: candidates/evaluation.json -----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationReport {
    /// Candidates, best test ROC AUC first.
    pub leaderboard: Vec<TrainReport>,
}

impl Document for EvaluationReport {
    const PATH: &'static str = lake::EVALUATION;
}

// ---- cluster: phenotypes/clusters.json -------------------------------------------------------------------

/// The clustering of baseline phenotypes: how the number of clusters was chosen, how stable it is, and each
/// cluster's profile and outcome by arm. Exploratory: clusters found in the data, not randomized groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhenotypeReport {
    pub method: crate::config::ClusterMethod,
    /// The model input columns clustered (standardized numbers and one-hot levels; never the arm).
    pub columns: Vec<String>,
    pub train_rows: usize,
    /// Each number of clusters tried, with its criterion.
    pub tried: Vec<ClusterChoice>,
    /// The chosen number of clusters.
    pub k: usize,
    pub stability: Option<ClusterStability>,
    /// What `ArmOutcome::value` is: a proportion with the outcome, a mean of the target, or events per 100
    /// units of follow-up time.
    pub outcome_measure: String,
    pub clusters: Vec<ClusterProfile>,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterChoice {
    pub k: usize,
    /// Mean silhouette of the train rows (or a seeded sample of them).
    pub silhouette: Option<f64>,
    /// Bayesian information criterion of the Gaussian mixture (lower is better).
    pub bic: Option<f64>,
    /// k-means: the sum of squared distances to the centres; Gaussian mixture: the mean log-likelihood.
    pub fit: f64,
}

/// Adjusted Rand index of the clustering refitted on bootstrap resamples of the train split against the
/// chosen one, over every train row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterStability {
    pub resamples: usize,
    pub ari_mean: f64,
    pub ari_min: f64,
    pub ari_max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterProfile {
    pub cluster: usize,
    pub train_rows: usize,
    /// Rows of every split assigned to it.
    pub rows: usize,
    /// Mean of each numeric input on its own scale.
    pub numeric: BTreeMap<String, f64>,
    /// Share of rows at each level of each categorical input.
    pub levels: BTreeMap<String, BTreeMap<String, f64>>,
    /// The outcome in each arm within the cluster.
    pub outcome: Vec<ArmOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmOutcome {
    pub arm: String,
    pub n: usize,
    pub value: Option<f64>,
    /// `value` minus the reference arm's in the same cluster.
    pub difference: Option<f64>,
}

impl Document for PhenotypeReport {
    const PATH: &'static str = lake::PHENOTYPES_REPORT;
}

/// The cluster task's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSummary {
    /// False when the config has no `clustering` section (the task then writes nothing).
    pub configured: bool,
    pub k: Option<usize>,
    pub ari_mean: Option<f64>,
}

// ---- analyze: reports/<run>/ ----------------------------------------------------------------------------

/// The analyze task's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSummary {
    pub analyzed_rows: u64,
    /// Where `report.html` is, for people.
    pub report: String,
}

// ---- gate: candidates/gate.json, gate/<model>/BLESSED -----------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub model: String,
    /// The metric as configured, e.g. `roc_auc_ci_lower`.
    pub metric: String,
    /// What the metric was computed on: `test`, `slice site=SITE03`, or `served version 3`.
    pub scope: String,
    /// `None` when the metric is undefined there (e.g. AUC on one class).
    pub value: Option<f64>,
    /// `>=` or `<=`.
    pub op: String,
    pub bound: f64,
    pub passed: bool,
    /// Why a check was not applied or how it was computed, when that is not the plain case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Check {
    pub fn describe(&self) -> String {
        let value = self
            .value
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "undefined".into());
        format!(
            "{} {} = {value}, expected {} {:.4}",
            self.scope, self.metric, self.op, self.bound
        )
    }
}

/// `candidates/gate.json`: the gate task's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateDecision {
    /// The best candidate that passed every check.
    pub chosen: Option<String>,
    /// The version served when the gate ran (what regressions are measured against).
    pub served_version: Option<u64>,
    pub checks: Vec<Check>,
}

impl Document for GateDecision {
    const PATH: &'static str = lake::GATE;
}

/// The `gate/<model>/BLESSED` marker: the gate's verdict on exactly these weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blessing {
    pub candidate: String,
    pub weights_sha256: String,
    pub blessed_at: String,
    pub checks: Vec<Check>,
}

pub fn blessing_path(candidate: &str) -> String {
    format!("{}{candidate}/BLESSED", lake::BLESSINGS)
}

// ---- promote: the promote task's summary ------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    pub model_name: String,
    pub version: u64,
    /// The candidate (pipeline promotion) or `version N` (a copy of an existing version).
    pub source: String,
    /// False when the version was already the served one (nothing written).
    pub new_version: bool,
    pub forced: bool,
    pub location: String,
    /// Why nothing was published, when that is not because the version is already served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

// ---- promote: deployments/<name>/<version>.json, and deployment.json in the version folder ---------------

/// A promotion: what was published where, from which data, config and weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRecord {
    /// `promote`.
    pub action: String,
    pub model_name: String,
    pub version: u64,
    /// The candidate, or `version N` for a copy of an existing version.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<u64>,
    pub weights_sha256: String,
    pub at: String,
    pub data_fingerprint: String,
    pub config_fingerprint: String,
    pub forced: bool,
    /// The version served before.
    pub replaces: Option<u64>,
    /// The lake the candidate came from (pipeline promotions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lake: Option<String>,
    pub repository: String,
}

pub fn deployment_record(model_name: &str, version: u64) -> String {
    format!("{}{model_name}/{version}.json", lake::DEPLOYMENTS)
}

// ---- the runner: runs/<id>/run.json ----------------------------------------------------------------------

pub fn run_record(run_id: &str) -> String {
    format!("runs/{run_id}/run.json")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
/// A task's failure as the run record keeps it: its kind (exit code, retries) and message.
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<crate::Error> for TaskError {
    fn from(e: crate::Error) -> Self {
        Self {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Succeeded,
    UpToDate,
    Failed,
    /// Not run because a task it depends on failed.
    Skipped,
    /// `--dry-run`: would run.
    WouldRun,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRecord {
    pub name: String,
    pub run: String,
    pub status: TaskStatus,
    pub reason: String,
    pub fingerprint: Option<String>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub error: Option<TaskError>,
    pub summary: serde_json::Value,
}

/// `runs/<id>/run.json`: one pipeline run, every task's status, attempts, duration, error and summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub code_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub dry_run: bool,
    pub exit_code: i32,
    pub tasks: Vec<TaskRecord>,
}

impl RunRecord {
    pub fn task(&self, name: &str) -> Option<&TaskRecord> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean_report() -> CleanReport {
        CleanReport {
            rows_in: 3,
            accepted: 2,
            quarantined: 1,
            per_source: vec![SourceCounts {
                source: "a".into(),
                rows_in: 3,
                accepted: 2,
                quarantined: 1,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_document_reads_back_as_written() {
        let bytes = serde_json::to_vec(&clean_report()).unwrap_or_default();
        let back: CleanReport = parse("clean_report.json", &bytes).unwrap_or_default();
        assert_eq!(back, clean_report());
    }

    #[test]
    fn a_missing_field_names_the_file_and_the_field() {
        let mut v = serde_json::to_value(clean_report()).unwrap_or_default();
        if let Some(o) = v["per_source"][0].as_object_mut() {
            o.remove("accepted");
        }
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        let e = parse::<CleanReport>("lake/processed/clean_report.json", &bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("lake/processed/clean_report.json"), "{e}");
        assert!(e.contains("per_source[0]"), "{e}");
        assert!(e.contains("missing field `accepted`"), "{e}");
    }

    #[test]
    fn a_renamed_field_is_an_error_not_a_zero() {
        let mut v = serde_json::to_value(clean_report()).unwrap_or_default();
        if let Some(o) = v.as_object_mut()
            && let Some(x) = o.remove("quarantined")
        {
            o.insert("rejected".into(), x);
        }
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        let e = parse::<CleanReport>("clean_report.json", &bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("rejected") || e.contains("quarantined"), "{e}");
    }

    #[test]
    fn a_summary_with_a_wrong_type_names_the_task_and_field() {
        let v = serde_json::json!({"splits": [{"split": "train", "rows": "many", "outcome_events": 1}], "feature_columns": 3});
        let e = from_summary::<FeaturesReport>("features", &v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("task `features`"), "{e}");
        assert!(e.contains("splits[0].rows"), "{e}");
    }
}
