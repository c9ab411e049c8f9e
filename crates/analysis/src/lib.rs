//! Trial statistics and the report: CONSORT-style flow, Table 1, the binary outcome by arm (RD, RR, OR, χ²,
//! Fisher), Kaplan–Meier, log-rank, Cox (unadjusted and adjusted) with a proportional-hazards check, subgroup
//! effects with interaction tests, and the models' ROC and calibration curves. Writes
//! `reports/<run>/analysis.json` (every number) and `report.html` (self-contained, inline SVG).
//!
//! Also: ANCOVA with least-squares means and multiplicity adjustments, stratified and restricted-mean survival,
//! the adverse-event and lab shift tables from record tables, the disposition, and every number as a record
//! (`results.json`/`.csv`) with the tables as CSV and RTF.
//!
//! Invariant: no candle; every analysis population is the clean table (accepted rows) or a population of it
//! (`dataset.populations`), as its analysis names; the safety and lab tables count the record tables' clean
//! records of that population's subjects.

mod comparisons;
mod continuous;
mod disposition;
pub mod dunnett;
pub mod export;
mod labs;
pub mod report;
pub mod results;
mod rmst;
mod safety;
pub mod stats;
mod stratified;
mod subgroups;
mod survival;
mod table1;
mod task;

pub use task::TASKS;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use trialflow_core::config::{Config, CoxTies};
use trialflow_core::contracts::{self, CleanReport, EvaluationReport, TrainReport};
use trialflow_core::features::table_column;
use trialflow_core::lake;
use trialflow_core::table::{floats, read_parquet_prefix, strings};
use trialflow_core::{Error, Result, Storage};

use comparisons::comparisons;
pub use continuous::{Ancova, ArmDifference, ContinuousResult, LinearTerm, LsMean, Trend};
pub use disposition::{Disposition, DispositionRow};
pub use labs::{LabShift, LabShifts};
pub use rmst::{ArmContrast, Milestone, Rmst, RmstArm};
pub use safety::{Safety, SafetyRow, SeverityRows, SocRows};
use stats::{Describe, Estimate, KmCurve, Ties, TwoByTwo};
pub use stratified::Stratified;
use subgroups::subgroup;
use survival::TermFn;
use survival::{arm_terms, diverges, hazard_ratios, survival, ties};
use table1::table1;

const Z95: f64 = 1.959_963_984_540_054;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub rows_ingested: u64,
    /// Rows quarantined per (column, rule); a row breaking several rules appears under each.
    pub excluded_by_rule: Vec<(String, String, u64)>,
    pub excluded_by_filter: u64,
    pub duplicates_removed: u64,
    pub rows_excluded: u64,
    pub analyzed: u64,
    pub analyzed_per_arm: Vec<(String, u64)>,
    /// Values NFC-composed or stripped of invisible characters when staged (ids and levels among them).
    #[serde(default)]
    pub normalized_values: u64,
    /// Each population of `dataset.populations`: its rows, per arm, and what is computed over it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub populations: Vec<PopulationCount>,
}

/// One analysis population of the flow (CONSORT's "analysed" boxes, one per population).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PopulationCount {
    pub name: String,
    /// Its definition, the contract's SQL condition.
    pub condition: String,
    pub rows: u64,
    /// Per arm, reference first.
    pub per_arm: Vec<(String, u64)>,
    /// The analyses (`table1`, `outcome`, `survival`, `subgroups`) and `models` computed over it.
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NumericRow {
    pub variable: String,
    pub overall: Describe,
    /// Per arm, reference first.
    pub arms: Vec<(String, Describe)>,
    /// Each non-reference arm against the reference.
    pub smd: Vec<(String, Option<f64>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CategoricalRow {
    pub variable: String,
    pub levels: Vec<String>,
    /// Counts per level (same order as `levels`) and missing, overall and per arm.
    pub overall: (Vec<u64>, u64),
    pub arms: Vec<(String, Vec<u64>, u64)>,
    pub smd: Vec<(String, Option<f64>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table1 {
    pub numeric: Vec<NumericRow>,
    pub categorical: Vec<CategoricalRow>,
    /// Variable → the label its source file declares (a SAS or Dataset-JSON label), shown beside the name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmOutcome {
    pub arm: String,
    pub n: u64,
    pub events: u64,
    pub risk: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub arm: String,
    pub reference: String,
    pub risk_difference: Estimate,
    pub risk_ratio: Option<Estimate>,
    pub odds_ratio: Option<Estimate>,
    /// Pearson chi-square on the 2×2 table, no continuity correction.
    pub chi_square: Option<f64>,
    pub chi_square_p: Option<f64>,
    pub fisher_p: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SurvivalAt {
    pub arm: String,
    pub time: f64,
    /// `None` past the arm's last follow-up: the curve says nothing there.
    pub survival: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub at_risk: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HazardRatio {
    pub term: String,
    pub coef: f64,
    pub se: f64,
    pub hr: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoxModel {
    pub ties: String,
    pub covariates: Vec<String>,
    pub n: u64,
    pub events: u64,
    pub converged: bool,
    pub iterations: usize,
    pub terms: Vec<HazardRatio>,
    /// Proportional-hazards check per term: (term, chi-square, p).
    pub ph_test: Vec<(String, f64, f64)>,
    /// Why the model could not be estimated, when it could not.
    pub not_estimable: Option<String>,
    /// How the standard errors were estimated: `model` (inverse information) or `cluster-robust` (the
    /// sandwich over `dataset.cluster`, R's `cluster(id)`).
    pub variance: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverallTest {
    pub chi_square: f64,
    pub df: usize,
    pub p_value: f64,
}

/// The binary outcome by arm as a logistic model with cluster-robust standard errors, when records are
/// clustered within patients (`dataset.cluster`): the 2×2 comparisons assume independent rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusteredOutcome {
    pub clusters: u64,
    pub rows: u64,
    /// Odds ratios against the reference arm, with sandwich 95% CIs and Wald p-values.
    pub odds_ratios: Vec<HazardRatio>,
    pub not_estimable: Option<String>,
}

/// Median survival with its 95% CI; `None` = not reached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Median {
    pub arm: String,
    pub median: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// R's `survfit` median where it differs: when the curve lies exactly on 0.5 over an interval, R takes the
    /// interval's midpoint, where this (and lifelines) take its start.
    pub r_median: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Survival {
    /// `time_to_event.unit`, for the labels.
    pub time_unit: Option<String>,
    /// Whether the chart shows each curve's 95% band (`analysis.km_ci_bands`).
    pub ci_bands: bool,
    pub curves: Vec<KmCurve>,
    pub medians: Vec<Median>,
    pub at_times: Vec<SurvivalAt>,
    pub logrank_chi_square: f64,
    pub logrank_df: usize,
    pub logrank_p_value: f64,
    pub cox: CoxModel,
    pub cox_adjusted: Option<CoxModel>,
    /// With `analysis.strata`: the log-rank test and the Cox model stratified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stratified: Option<Stratified>,
    /// With `analysis.rmst_horizon`: the restricted mean survival time per arm and its differences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmst: Option<Rmst>,
    /// Each arm's survival minus the reference's at every `analysis.survival_times` within both curves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<Milestone>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubgroupEffect {
    pub level: String,
    pub arm: String,
    pub n: u64,
    pub events: u64,
    /// "OR" (binary outcome) or "HR" (time to event).
    pub measure: String,
    pub estimate: Option<Estimate>,
    pub not_estimable: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subgroup {
    pub variable: String,
    pub prespecified: bool,
    pub measure: String,
    pub effects: Vec<SubgroupEffect>,
    /// Wald test of the arm × subgroup interaction terms.
    pub interaction_chi_square: Option<f64>,
    pub interaction_df: usize,
    pub interaction_p: Option<f64>,
    pub not_estimable: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCurves {
    pub model: String,
    pub roc_auc: Option<f64>,
    pub brier: f64,
    /// The bootstrap 95% interval of the test ROC AUC.
    pub roc_auc_ci: Option<(f64, f64)>,
    pub roc: Vec<(f64, f64)>,
    pub calibration: Vec<(f64, f64, usize)>,
    /// Test metrics by arm and site, from training: (column, level, n, positives, ROC AUC).
    pub slices: Vec<(String, String, u64, u64, Option<f64>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analysis {
    pub dataset: String,
    pub reference_arm: String,
    /// Every row of the clean table: Table 1 and the time-to-event analyses describe them all.
    pub analyzed_rows: u64,
    /// Rows without the binary outcome: in Table 1, not in the outcome analyses or the models.
    pub outcome_missing: u64,
    pub flow: Option<Flow>,
    pub table1: Table1,
    pub arms: Vec<ArmOutcome>,
    pub comparisons: Vec<Comparison>,
    /// With three or more arms: Pearson's chi-square across all arms (k × 2), beside the pairwise comparisons.
    pub overall_chi_square: Option<OverallTest>,
    pub survival: Option<Survival>,
    pub subgroups: Vec<Subgroup>,
    /// With `dataset.cluster`: the outcome by arm with cluster-robust standard errors.
    pub clustered_outcome: Option<ClusteredOutcome>,
    pub models: Vec<ModelCurves>,
    /// The clusters of baseline phenotypes (the `cluster` task's `phenotypes/clusters.json`), exploratory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phenotypes: Option<trialflow_core::contracts::PhenotypeReport>,
    /// Definitional choices, also printed in the report.
    pub methods: Vec<String>,
    /// The population each analysis is computed over (`table1`, `outcome`, `survival`, `subgroups` → a
    /// population of `dataset.populations`); an analysis not listed covers every accepted row.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub analysis_populations: BTreeMap<String, String>,
    /// The continuous endpoints (`analysis.continuous`), each over its population.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continuous: Vec<ContinuousResult>,
    /// The secondary time-to-event endpoints (`dataset.secondary_time_to_event`), over the survival
    /// analysis's population.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary_survival: Vec<SecondaryEndpoint>,
    /// The adverse-event tables (`analysis.safety`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<Safety>,
    /// Completed and discontinued subjects by reason (`analysis.disposition`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<Disposition>,
    /// Baseline against worst post-baseline lab indicators (`analysis.lab_shifts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab_shifts: Option<LabShifts>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecondaryEndpoint {
    pub name: String,
    /// Rows of the survival analysis's population.
    pub rows: u64,
    /// Of those, rows without a valid time or event for this endpoint.
    pub left_out: u64,
    pub survival: Option<Survival>,
}

/// `batches` with `time` and `event` taken from the secondary endpoint `name`, its rows without one dropped:
/// the rows the primary endpoint's analyses can run on. Returns them and the rows left out.
fn secondary_rows(
    batches: &[arrow::array::RecordBatch],
    name: &str,
) -> Result<(Vec<arrow::array::RecordBatch>, u64)> {
    use arrow::datatypes::{Field, Schema};
    let (tc, ec) = (format!("time_{name}"), format!("event_{name}"));
    let mut out = Vec::new();
    let mut left_out = 0u64;
    for b in batches {
        let column = |c: &str| {
            b.column_by_name(c).cloned().ok_or_else(|| {
                bad(format!(
                    "the clean table has no column `{c}` for endpoint `{name}`: run the clean task again"
                ))
            })
        };
        let (time, event) = (column(&tc)?, column(&ec)?);
        let keep = arrow::compute::and(
            &arrow::compute::is_not_null(&time).map_err(|e| bad(e.to_string()))?,
            &arrow::compute::is_not_null(&event).map_err(|e| bad(e.to_string()))?,
        )
        .map_err(|e| bad(e.to_string()))?;
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (f, c) in b.schema().fields().iter().zip(b.columns()) {
            if !matches!(f.name().as_str(), "time" | "event" | "event_state") {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
        fields.push(Field::new("time", time.data_type().clone(), true));
        fields.push(Field::new("event", event.data_type().clone(), true));
        columns.extend([time, event]);
        let renamed =
            arrow::array::RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
                .map_err(|e| bad(e.to_string()))?;
        let kept =
            arrow::compute::filter_record_batch(&renamed, &keep).map_err(|e| bad(e.to_string()))?;
        left_out += (b.num_rows() - kept.num_rows()) as u64;
        out.push(kept);
    }
    Ok((out, left_out))
}

/// Each secondary time-to-event endpoint analysed as the primary one is, over the survival population.
fn secondary_survival(
    cfg: &Config,
    batches: &[arrow::array::RecordBatch],
) -> Result<Vec<SecondaryEndpoint>> {
    let rows = rows_of(batches, cfg.analysis.population_of("survival"))?;
    let total: usize = rows.iter().map(|b| b.num_rows()).sum();
    let mut out = Vec::new();
    for (name, t) in &cfg.dataset.secondary_time_to_event {
        let (kept, left_out) = secondary_rows(&rows, name)?;
        let cfg2 = cfg.with_time_to_event(t);
        let survival = if left_out as usize == total {
            None
        } else {
            let data = load(&cfg2, &kept).map_err(|e| bad(format!("endpoint `{name}`: {e}")))?;
            survival(&cfg2, &data)
        };
        out.push(SecondaryEndpoint {
            name: name.clone(),
            rows: total as u64,
            left_out,
            survival,
        });
    }
    Ok(out)
}

/// The analyses of the report that name a population.
const SECTIONS: [&str; 4] = ["table1", "outcome", "survival", "subgroups"];

/// The rows of `batches` in `population` (all of them for `None`).
fn rows_of(
    batches: &[arrow::array::RecordBatch],
    population: Option<&str>,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let Some(p) = population else {
        return Ok(batches.to_vec());
    };
    let column = trialflow_core::config::population_column(p);
    batches
        .iter()
        .map(|b| {
            let flags = b
                .column_by_name(&column)
                .and_then(|c| c.as_any().downcast_ref::<arrow::array::BooleanArray>())
                .ok_or_else(|| {
                    bad(format!(
                        "the clean table has no boolean column `{column}` for population `{p}`: run the clean \
                         task again"
                    ))
                })?;
            arrow::compute::filter_record_batch(b, flags).map_err(|e| bad(e.to_string()))
        })
        .collect()
}

/// The clean table's rows once per population the analyses name.
struct Populations {
    all: Data,
    named: BTreeMap<String, Data>,
}

impl Populations {
    fn load(cfg: &Config, batches: &[arrow::array::RecordBatch]) -> Result<Self> {
        let mut named = BTreeMap::new();
        let endpoints = cfg
            .analysis
            .continuous
            .iter()
            .map(|c| (c.column.as_str(), continuous_population(cfg, c)));
        let sections = SECTIONS
            .iter()
            .map(|s| (*s, cfg.analysis.population_of(s)))
            .chain(endpoints);
        for (section, population) in sections {
            if let Some(p) = population
                && !named.contains_key(p)
            {
                let rows = rows_of(batches, Some(p))?;
                let data = load(cfg, &rows)
                    .map_err(|e| bad(format!("population `{p}` (analysis `{section}`): {e}")))?;
                named.insert(p.to_string(), data);
            }
        }
        Ok(Self {
            all: load(cfg, batches)?,
            named,
        })
    }

    /// The rows analysis `section` is computed over.
    fn of(&self, cfg: &Config, section: &str) -> &Data {
        self.named_or_all(cfg.analysis.population_of(section))
    }

    fn named_or_all(&self, population: Option<&str>) -> &Data {
        population
            .and_then(|p| self.named.get(p))
            .unwrap_or(&self.all)
    }
}

/// A continuous endpoint's population: its own, else `analysis.population`.
fn continuous_population<'a>(
    cfg: &'a Config,
    c: &'a trialflow_core::config::ContinuousEndpoint,
) -> Option<&'a str> {
    c.population
        .as_deref()
        .or(cfg.analysis.population.as_deref())
}

/// Each population's rows per arm, and what is computed over it.
fn population_counts(
    cfg: &Config,
    batches: &[arrow::array::RecordBatch],
    arms: &[String],
) -> Result<Vec<PopulationCount>> {
    let mut out = Vec::new();
    for (name, condition) in &cfg.dataset.populations {
        let rows = rows_of(batches, Some(name))?;
        let arm = strings(&rows, "arm")?;
        let per_arm = arms
            .iter()
            .map(|a| {
                let n = arm
                    .iter()
                    .filter(|x| x.as_deref() == Some(a.as_str()))
                    .count();
                (a.clone(), n as u64)
            })
            .collect();
        let mut used_by: Vec<String> = SECTIONS
            .iter()
            .filter(|s| cfg.analysis.population_of(s) == Some(name.as_str()))
            .map(|s| s.to_string())
            .collect();
        used_by.extend(
            cfg.analysis
                .continuous
                .iter()
                .filter(|c| continuous_population(cfg, c) == Some(name.as_str()))
                .map(|c| c.column.clone()),
        );
        // Two endpoints of one column (e.g. two models of it) are one use.
        let mut seen = BTreeSet::new();
        used_by.retain(|u| seen.insert(u.clone()));
        if cfg.training.population.as_deref() == Some(name.as_str()) {
            used_by.push("models".into());
        }
        out.push(PopulationCount {
            name: name.clone(),
            condition: condition.clone(),
            rows: arm.len() as u64,
            per_arm,
            used_by,
        });
    }
    Ok(out)
}

enum Column {
    Numeric(Vec<Option<f64>>),
    Categorical(Vec<Option<String>>),
}

/// The clean table, column by column.
struct Data {
    arm: Vec<String>,
    /// Reference first, then the others sorted.
    arms: Vec<String>,
    /// The binary outcome, 0 where it is missing (see `has_outcome`).
    outcome: Vec<f64>,
    /// Whether the row has the binary outcome: Table 1 describes every row, the outcome analyses these.
    has_outcome: Vec<bool>,
    tte: Option<(Vec<f64>, Vec<bool>)>,
    columns: BTreeMap<String, Column>,
    /// Categorical covariate → its reference level in the adjusted models (`dataset.reference_levels`).
    references: BTreeMap<String, String>,
    /// Rows whose event was a competing one (`event_state` 2), per arm in `arms` order.
    competing: Vec<u64>,
    /// The cluster (patient) of each row, numbered, when records are clustered (`dataset.cluster`).
    clusters: Option<Vec<usize>>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_data(lake::CLEAN, msg)
}

fn load(cfg: &Config, batches: &[arrow::array::RecordBatch]) -> Result<Data> {
    let d = &cfg.dataset;
    let arm: Vec<String> = strings(batches, "arm")?
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.ok_or_else(|| bad(format!("row {i}: the arm is missing"))))
        .collect::<Result<_>>()?;
    let reference = d.arm.reference.clone();
    let levels: BTreeSet<&String> = arm.iter().collect();
    if levels.len() < 2 {
        return Err(bad(format!(
            "the arm column `{}` has {} level(s) among the analyzed rows; a comparison needs two",
            d.arm.column,
            levels.len()
        )));
    }
    if !levels.contains(&reference) {
        return Err(bad(format!(
            "the reference arm `{reference}` (dataset.arm.reference) has no analyzed subject; arms are {levels:?}"
        )));
    }
    let mut arms = vec![reference.clone()];
    arms.extend(levels.into_iter().filter(|a| **a != reference).cloned());
    let outcome_values = floats(batches, "outcome")?;
    let has_outcome = outcome_values.iter().map(Option::is_some).collect();
    let outcome = outcome_values
        .into_iter()
        .map(|v| v.unwrap_or(0.0))
        .collect();
    let tte = if d.time_to_event.is_some() {
        let t = floats(batches, "time")?;
        let e = floats(batches, "event")?;
        let mut times = Vec::with_capacity(t.len());
        for (i, v) in t.iter().enumerate() {
            match v {
                Some(x) if *x >= 0.0 => times.push(*x),
                _ => return Err(bad(format!("row {i}: expected a non-negative time"))),
            }
        }
        Some((times, e.iter().map(|v| v.unwrap_or(0.0) > 0.5).collect()))
    } else {
        None
    };
    let mut columns = BTreeMap::new();
    for c in &d.numeric {
        columns.insert(
            c.clone(),
            Column::Numeric(floats(batches, &table_column(c))?),
        );
    }
    for c in &d.categorical {
        columns.insert(
            c.clone(),
            Column::Categorical(strings(batches, &table_column(c))?),
        );
    }
    if let Some(site) = &d.site {
        columns.insert(site.clone(), Column::Categorical(strings(batches, "site")?));
    }
    let competing_rows = d
        .time_to_event
        .as_ref()
        .is_some_and(|t| !t.competing_values.is_empty());
    let competing = if competing_rows {
        let state = floats(batches, "event_state")?;
        arms.iter()
            .map(|a| {
                arm.iter()
                    .zip(&state)
                    .filter(|(x, s)| *x == a && **s == Some(2.0))
                    .count() as u64
            })
            .collect()
    } else {
        Vec::new()
    };
    let clusters = match &d.cluster {
        None => None,
        Some(_) => {
            let mut numbers: BTreeMap<String, usize> = BTreeMap::new();
            let ids = strings(batches, "cluster")?;
            let mut out = Vec::with_capacity(ids.len());
            for (i, c) in ids.into_iter().enumerate() {
                let c = c.ok_or_else(|| bad(format!("row {i}: the cluster is missing")))?;
                let next = numbers.len();
                out.push(*numbers.entry(c).or_insert(next));
            }
            Some(out)
        }
    };
    Ok(Data {
        arm,
        arms,
        outcome,
        has_outcome,
        tte,
        columns,
        references: d.reference_levels.clone(),
        competing,
        clusters,
    })
}

/// The outcome by arm as a logistic model with cluster-robust standard errors (when rows are clustered).
fn clustered_outcome(cfg: &Config, data: &Data) -> Option<ClusteredOutcome> {
    let clusters = data.clusters.as_ref()?;
    let x: Vec<Vec<f64>> = (0..data.arm.len())
        .map(|i| {
            let mut row = vec![1.0];
            row.extend(survival::arm_terms(data, i));
            row
        })
        .collect();
    let mut out = ClusteredOutcome {
        clusters: clusters.iter().collect::<BTreeSet<_>>().len() as u64,
        rows: x.len() as u64,
        odds_ratios: Vec::new(),
        not_estimable: None,
    };
    match stats::logistic(&x, &data.outcome, cfg.analysis.max_iterations) {
        Some(fit) if fit.converged => {
            let cov = stats::logistic_robust_covariance(&fit, &x, &data.outcome, clusters);
            let names: Vec<String> = data.arms[1..].iter().map(|a| format!("arm={a}")).collect();
            let robust = stats::CoxFit {
                ties: stats::Ties::Efron,
                names,
                coef: fit.coef[1..].to_vec(),
                se: (1..fit.coef.len())
                    .map(|j| cov[j][j].max(0.0).sqrt())
                    .collect(),
                log_likelihood: 0.0,
                iterations: fit.iterations,
                converged: true,
            };
            out.odds_ratios = survival::hazard_ratios(&robust, robust.names.len());
        }
        _ => {
            out.not_estimable =
                Some("the logistic model did not converge (an arm without events?)".into())
        }
    }
    Some(out)
}

impl Data {
    /// The rows with the binary outcome: what its analyses (and the models) use.
    fn with_outcome(&self) -> Data {
        let keep = |i: &usize| self.has_outcome[*i];
        let rows: Vec<usize> = (0..self.arm.len()).filter(keep).collect();
        let pick = |v: &[f64]| rows.iter().map(|&i| v[i]).collect::<Vec<_>>();
        Data {
            arm: rows.iter().map(|&i| self.arm[i].clone()).collect(),
            arms: self.arms.clone(),
            outcome: pick(&self.outcome),
            has_outcome: vec![true; rows.len()],
            tte: self
                .tte
                .as_ref()
                .map(|(t, e)| (pick(t), rows.iter().map(|&i| e[i]).collect())),
            columns: self
                .columns
                .iter()
                .map(|(k, c)| {
                    let c = match c {
                        Column::Numeric(v) => Column::Numeric(rows.iter().map(|&i| v[i]).collect()),
                        Column::Categorical(v) => {
                            Column::Categorical(rows.iter().map(|&i| v[i].clone()).collect())
                        }
                    };
                    (k.clone(), c)
                })
                .collect(),
            references: self.references.clone(),
            competing: self.competing.clone(),
            clusters: self
                .clusters
                .as_ref()
                .map(|c| rows.iter().map(|&i| c[i]).collect()),
        }
    }
}

/// What the report says about competing events: how many per arm, and how the analyses counted them.
fn competing_note(cfg: &Config, data: &Data) -> Option<String> {
    let t = cfg.dataset.time_to_event.as_ref()?;
    if t.competing_values.is_empty() {
        return None;
    }
    let per_arm: Vec<String> = data
        .arms
        .iter()
        .zip(&data.competing)
        .map(|(a, n)| format!("{a} {n}"))
        .collect();
    let how = match t.competing_as {
        trialflow_core::config::CompetingAs::Censored => {
            "censored at their time in the Kaplan–Meier curves, the log-rank test and the Cox models (the \
             cause-specific hazard of the event; the Kaplan–Meier complement then overstates the cumulative \
             incidence)"
        }
        trialflow_core::config::CompetingAs::Event => {
            "counted as events (a composite endpoint) in the Kaplan–Meier curves, the log-rank test and the Cox \
             models"
        }
    };
    Some(format!(
        "Competing events (codes [{}] of `{}`): {}; {how}. The clean table keeps them as event_state 2.",
        t.competing_values.join(", "),
        t.event,
        per_arm.join(", ")
    ))
}

/// The models' curves, when an evaluation of this clean table exists: an evaluation older than the clean
/// table belongs to an earlier run whose training this run did not repeat (it failed, or was not asked for).
async fn current_model_curves(lake: &Storage) -> Result<(Vec<ModelCurves>, Option<String>)> {
    let evaluated = lake.head(lake::EVALUATION).await?;
    let cleaned = lake.head(lake::CLEAN_FILE).await?;
    match (evaluated, cleaned) {
        (Some(e), Some(c)) if e.last_modified < c.last_modified => Ok((
            Vec::new(),
            Some(
                "Models: the evaluation in the lake predates this clean table (training did not finish \
                 on it), so the model section is left out."
                    .into(),
            ),
        )),
        _ => Ok((model_curves(lake).await?, None)),
    }
}

/// The phenotype clusters, when the cluster task ran on this clean table's features (a report older than the
/// clean table belongs to an earlier run and is left out).
async fn current_phenotypes(
    lake: &Storage,
) -> Result<Option<trialflow_core::contracts::PhenotypeReport>> {
    let clustered = lake.head(lake::PHENOTYPES_REPORT).await?;
    let cleaned = lake.head(lake::CLEAN_FILE).await?;
    match (clustered, cleaned) {
        (Some(p), Some(c)) if p.last_modified >= c.last_modified => contracts::load_opt(lake).await,
        _ => Ok(None),
    }
}

fn levels_of(v: &[Option<String>]) -> Vec<String> {
    v.iter()
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

async fn model_curves(lake: &Storage) -> Result<Vec<ModelCurves>> {
    let Some(ev) = contracts::load_opt::<EvaluationReport>(lake).await? else {
        return Ok(Vec::new());
    };
    Ok(ev.leaderboard.iter().filter_map(model_curve).collect())
}

/// A binary model's curves for the report (the other endpoints' metrics are in their metrics.json).
fn model_curve(m: &TrainReport) -> Option<ModelCurves> {
    let met = m.metrics.binary()?;
    let bound = |name: &str| met.get(name).flatten();
    Some(ModelCurves {
        model: m.model.clone(),
        roc_auc: met.roc_auc,
        roc_auc_ci: bound("roc_auc_ci_lower").zip(bound("roc_auc_ci_upper")),
        brier: met.brier,
        roc: met.roc.clone(),
        calibration: met
            .calibration
            .iter()
            .map(|b| (b.mean_predicted, b.observed, b.n))
            .collect(),
        slices: m
            .slices
            .iter()
            .filter_map(|s| {
                let b = s.metrics.binary()?;
                Some((
                    s.column.clone(),
                    s.level.clone(),
                    b.n as u64,
                    b.positives as u64,
                    b.roc_auc,
                ))
            })
            .collect(),
    })
}

/// The labels the sources declared for Table 1's variables (none before a clean report exists).
async fn source_labels(lake: &Storage, cfg: &Config) -> Result<BTreeMap<String, String>> {
    let report = contracts::load_opt::<CleanReport>(lake).await?;
    let shown: BTreeSet<&String> = cfg
        .dataset
        .numeric
        .iter()
        .chain(&cfg.dataset.categorical)
        .collect();
    Ok(report
        .map(|r| r.labels)
        .unwrap_or_default()
        .into_iter()
        .filter(|(variable, _)| shown.contains(variable))
        .collect())
}

async fn flow(
    lake: &Storage,
    data: &Data,
    populations: Vec<PopulationCount>,
) -> Result<Option<Flow>> {
    let Some(r) = contracts::load_opt::<CleanReport>(lake).await? else {
        return Ok(None);
    };
    let excluded_by_rule = r
        .violations
        .iter()
        .filter(|v| v.action == "quarantine")
        .map(|v| (v.column.clone(), v.rule.clone(), v.rows))
        .collect();
    let per_arm = data
        .arms
        .iter()
        .map(|a| {
            (
                a.clone(),
                data.arm.iter().filter(|x| *x == a).count() as u64,
            )
        })
        .collect();
    Ok(Some(Flow {
        rows_ingested: r.rows_in,
        excluded_by_rule,
        excluded_by_filter: r.excluded_by_filter,
        duplicates_removed: r.exact_duplicates + r.repeated_ids,
        rows_excluded: r.quarantined,
        analyzed: r.accepted,
        analyzed_per_arm: per_arm,
        normalized_values: r.normalized_values,
        populations,
    }))
}

/// Computes the analysis over `processed/clean/` and writes `analysis.json` and `report.html` into `dir`.
pub async fn analyze(cfg: &Config, lake: &Storage, dir: &str) -> Result<Analysis> {
    let batches = read_parquet_prefix(lake, lake::CLEAN).await?;
    let populations = Populations::load(cfg, &batches)?;
    let data = &populations.all;
    let counts = population_counts(cfg, &batches, &data.arms)?;
    let binary = populations.of(cfg, "outcome").with_outcome();
    if binary.arm.is_empty() {
        return Err(bad(
            "no analysed row has the binary outcome (every one is missing): check `dataset.outcome`",
        ));
    }
    let (arms, comparisons) = comparisons(&binary);
    let ties_name = format!("{:?}", cfg.analysis.ties);
    let mut analysis = Analysis {
        dataset: cfg.dataset.name.clone(),
        reference_arm: data.arms[0].clone(),
        analyzed_rows: data.arm.len() as u64,
        outcome_missing: {
            let outcome_rows = populations.of(cfg, "outcome");
            (outcome_rows.arm.len() - binary.arm.len()) as u64
        },
        flow: flow(lake, data, counts).await?,
        table1: Table1 {
            labels: source_labels(lake, cfg).await?,
            ..table1(cfg, populations.of(cfg, "table1"))
        },
        overall_chi_square: (arms.len() >= 3)
            .then(|| {
                let table: Vec<(u64, u64)> = arms.iter().map(|a| (a.events, a.n - a.events)).collect();
                stats::chi_square_k_by_2(&table)
            })
            .flatten()
            .map(|(chi_square, df, p_value)| OverallTest {
                chi_square,
                df,
                p_value,
            }),
        arms,
        comparisons,
        survival: survival(cfg, populations.of(cfg, "survival")),
        // with a time to event the subgroups compare hazards, over every row; else odds, over the rows with
        // the outcome
        subgroups: {
            let all = populations.of(cfg, "subgroups");
            let with_outcome;
            let rows = if all.tte.is_some() {
                all
            } else {
                with_outcome = all.with_outcome();
                &with_outcome
            };
            cfg.analysis.subgroups.iter().map(|s| subgroup(cfg, rows, s)).collect()
        },
        clustered_outcome: clustered_outcome(cfg, &binary),
        models: Vec::new(),
        phenotypes: None,
        analysis_populations: BTreeMap::new(),
        secondary_survival: secondary_survival(cfg, &batches)?,
        safety: safety::safety(cfg, lake, &batches, &data.arms).await?,
        disposition: disposition::disposition(cfg, &batches, &data.arms)?,
        lab_shifts: labs::lab_shifts(cfg, lake, &batches, &data.arms).await?,
        continuous: cfg
            .analysis
            .continuous
            .iter()
            .map(|c| {
                let population = continuous_population(cfg, c);
                continuous::continuous(populations.named_or_all(population), c, population)
            })
            .collect(),
        methods: vec![
            "Analysis population: every accepted row of processed/clean (after validation, the row filter and de-duplication); see the flow. Table 1 and the time-to-event analyses describe every row; the binary-outcome analyses and the models use the rows with the outcome (the rest are counted as missing).".into(),
            "Table 1: mean ± SD (n − 1), median [IQR] with linear quantile interpolation (R type 7); standardized mean differences against the reference arm (categorical: Yang & Dalton).".into(),
            "Risk difference: Wald 95% CI. Risk ratio and odds ratio: 95% CI on the log scale (Katz; Woolf).".into(),
            "Chi-square: Pearson, 1 df, no continuity correction. Fisher's exact test: two-sided, tables no more likely than the observed one.".into(),
            "Kaplan–Meier: product-limit estimate; Greenwood variance; 95% CI with the log(−log) transform (lifelines' default); median CI where the CI curves cross 0.5.".into(),
            "Log-rank: k-sample test with (k − 1) df (R survdiff, rho = 0).".into(),
            format!("Cox proportional hazards: {ties_name} ties, Newton–Raphson; Wald 95% CI and p. Adjusted model on complete cases; categorical covariates as indicators against their reference level (dataset.reference_levels, else the first in sort order)."),
            "Proportional hazards: Grambsch–Therneau test on scaled Schoenfeld residuals against 1 − KM(t) (lifelines' proportional_hazard_test, time_transform = km).".into(),
            "Continuous endpoints: mean ± SD by arm; ANCOVA by least squares of the endpoint on the arm (indicators against the reference) and the adjustment covariates, complete cases; t 95% CIs and two-sided t tests on the residual degrees of freedom (R's lm and confint).".into(),
            "Stratified time to event (analysis.strata): the log-rank (O − E) and its covariance summed over the strata (R survdiff with strata()); the Cox model of the arm with a baseline hazard per stratum (R coxph with strata()), rows without a stratum left out. Restricted mean survival time (analysis.rmst_horizon): the area under each arm's Kaplan–Meier curve to the horizon, its standard error as R's survmean (print(survfit, rmean = τ)); differences against the reference with normal 95% CIs for independent arms. Milestone differences: survival minus the reference's at each analysis.survival_times inside both curves, Greenwood standard errors, normal 95% CIs.".into(),
            "Safety tables (analysis.safety): subjects with at least one counted record and the records, per arm, over the population's subjects (the denominators); risk differences against the reference arm with Wald 95% CIs (R prop.test, no continuity correction); system organ classes and preferred terms sorted by subjects over all arms, then by name; each subject once at its worst severity; exposure-adjusted incidence = subjects with a counted record per 100 patient-years of the arm's total exposure (365.25 days a year), exact Poisson 95% CI (R poisson.test).".into(),
            "Subgroups: OR (binary outcome, Woolf CI) or HR (Cox) within each level; interaction by a Wald test of the arm × subgroup terms (logistic or Cox model). Estimates with an empty 2×2 cell or no events are reported as not estimable.".into(),
        ],
    };
    analysis.methods.extend(competing_note(cfg, data));
    analysis.analysis_populations = SECTIONS
        .iter()
        .filter_map(|s| {
            cfg.analysis
                .population_of(s)
                .map(|p| (s.to_string(), p.to_string()))
        })
        .collect();
    if !cfg.dataset.populations.is_empty() {
        analysis.methods.push(format!(
            "Analysis populations (dataset.populations), each a condition on the accepted rows: {}. {}",
            cfg.dataset
                .populations
                .iter()
                .map(|(n, c)| format!("{n}: {c}"))
                .collect::<Vec<_>>()
                .join("; "),
            SECTIONS
                .iter()
                .map(|s| format!(
                    "{s} over {}",
                    cfg.analysis
                        .population_of(s)
                        .map_or("every accepted row".to_string(), |p| format!("the {p} population"))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(c) = &cfg.dataset.cluster {
        analysis.methods.push(format!(
            "Records are clustered within patients (dataset.cluster: `{c}`): the Cox models' and the clustered \
             outcome model's standard errors are the cluster-robust sandwich without a small-sample factor (R's \
             coxph(... + cluster(id)), lifelines' cluster_col; sandwich::vcovCL(type = \"HC0\", cadjust = \
             FALSE)). The 2×2 comparisons, Kaplan–Meier intervals, the log-rank test and the subgroup tests \
             assume independent rows and understate their uncertainty."
        ));
    }
    let (models, note) = current_model_curves(lake).await?;
    analysis.models = models;
    analysis.methods.extend(note);
    analysis.phenotypes = current_phenotypes(lake).await?;
    lake.put_json(&format!("{dir}analysis.json"), &analysis)
        .await?;
    write_results_and_tables(lake, dir, &analysis).await?;
    lake.put(&format!("{dir}report.html"), report::html(&analysis))
        .await?;
    Ok(analysis)
}

/// Every number as a record (`results.json`, `results.csv`) and the tables as `tables.rtf` and
/// `tables/<name>.csv`, in the report's folder `dir`.
async fn write_results_and_tables(lake: &Storage, dir: &str, a: &Analysis) -> Result<()> {
    let records = results::results(a)?;
    lake.put_json(&format!("{dir}results.json"), &records)
        .await?;
    lake.put(&format!("{dir}results.csv"), results::to_csv(&records))
        .await?;
    let tables = export::tables(a);
    for t in &tables {
        lake.put(&format!("{dir}tables/{}.csv", t.name), export::csv(t))
            .await?;
    }
    lake.put(
        &format!("{dir}tables.rtf"),
        export::rtf(&format!("Trial analysis: {}", a.dataset), &tables),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::survival::cox_model;

    pub(crate) fn config(dir: &std::path::Path, extra: &str) -> Config {
        std::fs::write(dir.join("t.csv"), "id\n").unwrap();
        let yaml = format!(
            r#"
storage: {{lake: "file://{d}/lake", models: "file://{d}/models"}}
dataset:
  name: t
  sources: [{{name: t, url: "file://{d}/t.csv"}}]
  id: id
  arm: {{column: arm, reference: A}}
  outcome: {{column: y}}
  time_to_event: {{time: t, event: e}}
  categorical: [g]
privacy: {{key_env: X_UNSET, dev_key: k, allow_dev_key: true}}
preprocessing: {{split: {{train: 0.6, val: 0.2, test: 0.2, salt: s}}}}
models: {{m: {{hidden: []}}}}
training: {{seed: 1, epochs: 1, batch_size: 4, learning_rate: 0.01, patience: 1}}
serving: {{host: 127.0.0.1, port: 1, model_name: m, poll_seconds: 1, max_body_bytes: 1000, max_rows: 10}}
deployment: {{checks: [{{metric: roc_auc, min: 0.5}}]}}
{extra}
"#,
            d = dir.display()
        );
        Config::from_yaml(&yaml, "t.yaml", &[]).unwrap()
    }

    /// Arm A has events only in level g=1; arm B has no events at all in level g=2.
    fn data() -> Data {
        let arm: Vec<String> = ["A", "A", "A", "A", "B", "B", "B", "B", "A", "B"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let g: Vec<Option<String>> = ["1", "1", "2", "2", "1", "1", "2", "2", "1", "1"]
            .iter()
            .map(|s| Some(s.to_string()))
            .collect();
        let e = vec![
            true, false, false, false, true, true, false, false, true, false,
        ];
        let t = vec![5.0, 9.0, 3.0, 8.0, 2.0, 4.0, 6.0, 7.0, 1.0, 10.0];
        Data {
            arms: vec!["A".into(), "B".into()],
            outcome: e.iter().map(|v| f64::from(u8::from(*v))).collect(),
            arm,
            tte: Some((t, e)),
            columns: [("g".to_string(), Column::Categorical(g))].into(),
            references: BTreeMap::new(),
            competing: Vec::new(),
            clusters: None,
            has_outcome: vec![true; 10],
        }
    }

    #[test]
    fn a_configured_reference_level_is_the_one_left_out_of_the_indicators() {
        let mut d = data();
        {
            let (names, terms) = crate::survival::covariate_terms(&d, "g");
            assert_eq!(
                (names, terms(0)),
                (vec!["g=2".to_string()], Some(vec![0.0]))
            );
        }
        // written as the number it is (`reference_levels: {g: 2.0}` reads as "2.0"), it still matches "2"
        d.references.insert("g".into(), "2.0".into());
        let (names, terms) = crate::survival::covariate_terms(&d, "g");
        assert_eq!(
            (names, terms(0)),
            (vec!["g=1".to_string()], Some(vec![1.0]))
        );
    }

    #[test]
    fn a_subgroup_without_events_is_not_estimable_never_nan() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "analysis: {subgroups: [{column: g}]}");
        let s = subgroup(&cfg, &data(), &cfg.analysis.subgroups[0]);
        let lvl2 = s.effects.iter().find(|e| e.level == "2").unwrap();
        assert!(lvl2.estimate.is_none());
        assert_eq!(lvl2.not_estimable.as_deref(), Some("no events"));
        // the interaction model has no events in a whole level: reported as not estimable, not NaN
        assert!(
            s.interaction_p.is_none() && s.not_estimable.is_some(),
            "{s:?}"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            !json.contains("NaN") && !json.contains("null,\"ci"),
            "{json}"
        );
    }

    #[test]
    fn a_subgroup_with_more_levels_than_the_cap_is_skipped_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = data();
        // every row its own site: ten levels
        let sites: Vec<Option<String>> = (0..10).map(|i| Some(format!("S{i}"))).collect();
        d.columns.insert("g".into(), Column::Categorical(sites));
        let cfg = config(
            dir.path(),
            "analysis: {subgroups: [{column: g}], max_subgroup_levels: 5}",
        );
        let s = subgroup(&cfg, &d, &cfg.analysis.subgroups[0]);
        assert!(s.effects.is_empty() && s.interaction_p.is_none(), "{s:?}");
        assert_eq!(
            s.not_estimable.as_deref(),
            Some("skipped: 10 levels, more than analysis.max_subgroup_levels (5)")
        );
        // within the cap, the same column is analysed
        let cfg = config(dir.path(), "analysis: {subgroups: [{column: g}]}");
        assert_eq!(
            subgroup(&cfg, &d, &cfg.analysis.subgroups[0]).effects.len(),
            10
        );
    }

    #[test]
    fn cox_that_cannot_be_estimated_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "");
        let mut d = data();
        // every event in arm A: the arm coefficient runs off to -infinity
        if let Some((_, e)) = &mut d.tte {
            for (i, v) in e.iter_mut().enumerate() {
                *v = d.arm[i] == "A" && i % 2 == 0;
            }
        }
        let m = cox_model(&cfg, &d, &[]);
        assert!(
            m.not_estimable
                .as_deref()
                .is_some_and(|w| w.contains("diverges")),
            "{m:?}"
        );
        // and a fit stopped by the iteration limit says so, with the count
        let cfg = config(dir.path(), "analysis: {max_iterations: 1}");
        let m = cox_model(&cfg, &data(), &[]);
        assert!(!m.converged);
        assert_eq!(
            m.not_estimable.as_deref(),
            Some("did not converge within 1 iterations (analysis.max_iterations)"),
            "{m:?}"
        );
    }

    #[test]
    fn one_arm_or_a_missing_reference_is_a_clear_error() {
        use arrow::array::{Float64Array, RecordBatch, StringArray};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "");
        let batch = |arms: Vec<&str>| {
            let n = arms.len();
            RecordBatch::try_from_iter(vec![
                (
                    "arm",
                    Arc::new(StringArray::from(arms)) as arrow::array::ArrayRef,
                ),
                ("outcome", Arc::new(Float64Array::from(vec![0.0; n]))),
                ("time", Arc::new(Float64Array::from(vec![1.0; n]))),
                ("event", Arc::new(Float64Array::from(vec![0.0; n]))),
                ("g", Arc::new(StringArray::from(vec!["1"; n]))),
            ])
            .unwrap()
        };
        let e = load(&cfg, &[batch(vec!["A", "A"])]).err().unwrap();
        assert_eq!(e.kind(), trialflow_core::ErrorKind::BadData);
        assert!(e.to_string().contains("`arm` has 1 level(s)"), "{e}");
        let e = load(&cfg, &[batch(vec!["B", "C"])]).err().unwrap();
        assert!(e.to_string().contains("reference arm `A`"), "{e}");
    }
}
