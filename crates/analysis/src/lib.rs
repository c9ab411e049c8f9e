//! Trial statistics and the report: outcome by arm (risk difference, risk ratio, odds ratio, chi-square),
//! Kaplan–Meier per arm and the log-rank test when the contract has time-to-event columns. Writes
//! `reports/analysis/analysis.json` (every number) and `report.html` (self-contained, inline SVG).
//!
//! Invariant: no candle; reads the clean table only, so the analysis population is exactly the accepted rows.

pub mod report;
pub mod stats;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trialflow_core::config::Config;
use trialflow_core::lake;
use trialflow_core::table::read_parquet_prefix;
use trialflow_core::{Error, Result, Storage};

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
    pub risk_difference: stats::Estimate,
    pub risk_ratio: stats::Estimate,
    pub odds_ratio: stats::Estimate,
    /// Pearson chi-square on the 2×2 table, no continuity correction.
    pub chi_square: f64,
    pub p_value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Survival {
    pub curves: Vec<stats::KmCurve>,
    pub logrank_chi_square: f64,
    pub logrank_df: usize,
    pub logrank_p_value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analysis {
    pub dataset: String,
    pub reference_arm: String,
    pub analyzed_rows: u64,
    pub arms: Vec<ArmOutcome>,
    pub comparisons: Vec<Comparison>,
    pub survival: Option<Survival>,
    /// Definitional choices, also printed in the report.
    pub methods: Vec<String>,
}

fn strings(batches: &[arrow::array::RecordBatch], col: &str) -> Result<Vec<Option<String>>> {
    trialflow_core::table::strings(batches, col)
        .map_err(|e| Error::bad_data(lake::CLEAN, e.to_string()))
}

fn numbers(batches: &[arrow::array::RecordBatch], col: &str) -> Result<Vec<Option<f64>>> {
    trialflow_core::table::floats(batches, col)
        .map_err(|e| Error::bad_data(lake::CLEAN, e.to_string()))
}

/// Computes the analysis over `processed/clean/` and writes the JSON and HTML report.
pub async fn analyze(cfg: &Config, lake: &Storage) -> Result<Analysis> {
    let batches = read_parquet_prefix(lake, lake::CLEAN).await?;
    let arms = strings(&batches, "arm")?;
    let outcome = numbers(&batches, "outcome")?;
    let reference = cfg.dataset.arm.reference.clone();
    let mut by_arm: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (a, y) in arms.iter().zip(&outcome) {
        if let (Some(a), Some(y)) = (a, y) {
            let e = by_arm.entry(a.clone()).or_default();
            e.0 += 1;
            e.1 += u64::from(*y > 0.5);
        }
    }
    if !by_arm.contains_key(&reference) {
        return Err(Error::bad_data(
            lake.display(lake::CLEAN),
            format!(
                "the reference arm `{reference}` (dataset.arm.reference) has no analyzed subject"
            ),
        ));
    }
    let arm_rows: Vec<ArmOutcome> = by_arm
        .iter()
        .map(|(a, (n, e))| ArmOutcome {
            arm: a.clone(),
            n: *n,
            events: *e,
            risk: *e as f64 / *n as f64,
        })
        .collect();
    let (rn, re) = by_arm[&reference];
    let comparisons = by_arm
        .iter()
        .filter(|(a, _)| **a != reference)
        .map(|(a, (n, e))| {
            let t = stats::TwoByTwo {
                a: *e,
                b: n - e,
                c: re,
                d: rn - re,
            };
            let (chi_square, p_value) = t.chi_square();
            Comparison {
                arm: a.clone(),
                reference: reference.clone(),
                risk_difference: t.risk_difference(),
                risk_ratio: t.risk_ratio(),
                odds_ratio: t.odds_ratio(),
                chi_square,
                p_value,
            }
        })
        .collect();
    let survival = if cfg.dataset.time_to_event.is_some() {
        let time = numbers(&batches, "time")?;
        let event = numbers(&batches, "event")?;
        let mut groups: BTreeMap<String, Vec<(f64, bool)>> = BTreeMap::new();
        for ((a, t), e) in arms.iter().zip(&time).zip(&event) {
            if let (Some(a), Some(t), Some(e)) = (a, t, e) {
                groups.entry(a.clone()).or_default().push((*t, *e > 0.5));
            }
        }
        let curves = groups
            .iter()
            .map(|(a, obs)| stats::kaplan_meier(a, obs))
            .collect();
        let (chi, df, p) = stats::logrank(&groups.into_values().collect::<Vec<_>>());
        Some(Survival {
            curves,
            logrank_chi_square: chi,
            logrank_df: df,
            logrank_p_value: p,
        })
    } else {
        None
    };
    let analysis = Analysis {
        dataset: cfg.dataset.name.clone(),
        reference_arm: reference,
        analyzed_rows: arms.len() as u64,
        arms: arm_rows,
        comparisons,
        survival,
        methods: vec![
            "Analysis population: every accepted row of processed/clean (after validation, the row filter and de-duplication).".into(),
            "Risk difference: Wald 95% CI. Risk ratio and odds ratio: 95% CI on the log scale (Katz; Woolf).".into(),
            "Chi-square: Pearson, 1 df, no continuity correction.".into(),
            "Kaplan–Meier: product-limit estimate; Greenwood variance; 95% CI with the log(-log) transform.".into(),
            "Log-rank: k-sample test, (k-1) df, ties handled as in R survival::survdiff (rho = 0).".into(),
        ],
    };
    lake.put_json(&format!("{}analysis.json", lake::ANALYSIS), &analysis)
        .await?;
    lake.put(
        &format!("{}report.html", lake::ANALYSIS),
        report::html(&analysis),
    )
    .await?;
    Ok(analysis)
}
