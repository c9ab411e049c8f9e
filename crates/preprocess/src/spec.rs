//! The feature spec from the train split's rows, gathered while `features` writes them: the statistics see
//! the train batches and nothing else, so no val or test value can reach them. Gathering them here instead
//! of re-reading the written split saves a scan; counting distinct values instead of keeping every one keeps
//! the memory the same at 50 million rows as at a thousand.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use trialflow_core::config::{Config, RuleAction};
use trialflow_core::features::{CategoricalFeature, FeatureSpec, NumericFeature, OnInvalid};
use trialflow_core::{Error, Result};

use crate::sql;
use crate::value_counts::ValueCounts;

/// Distinct values held in memory over all numeric columns (about 40 bytes each with the map's slack): past
/// it, the column holding the most moves its counts to disk.
const DISTINCT_IN_MEMORY: usize = 1 << 21;

struct NumericColumn {
    name: String,
    column: String,
    values: ValueCounts,
}

struct LevelColumn {
    name: String,
    column: String,
    levels: HashSet<String, foldhash::fast::RandomState>,
}

/// Accumulates the train split, batch by batch.
pub(crate) struct TrainStats {
    origin: String,
    numeric: Vec<NumericColumn>,
    categorical: Vec<LevelColumn>,
    rows: u64,
}

impl TrainStats {
    /// The columns [`Self::observe`] reads.
    pub(crate) fn columns(&self) -> impl Iterator<Item = &str> {
        self.numeric
            .iter()
            .map(|c| c.column.as_str())
            .chain(self.categorical.iter().map(|c| c.column.as_str()))
    }

    /// `origin` is the SQL file whose result the batches are (named when a column is missing).
    pub(crate) fn new(cfg: &Config, origin: &str) -> Self {
        let d = &cfg.dataset;
        // The model inputs only: a covariate described in Table 1 need not be one (`dataset.features`).
        let features = cfg.feature_columns();
        let numeric = d
            .numeric
            .iter()
            .filter(|c| features.contains(c))
            .map(|c| NumericColumn {
                name: c.clone(),
                column: sql::table_column(c),
                values: ValueCounts::default(),
            })
            .collect();
        let arm = [(d.arm.column.clone(), "arm".to_string())];
        let cats = d
            .categorical
            .iter()
            .filter(|c| features.contains(c))
            .map(|c| (c.clone(), sql::table_column(c)));
        let categorical = arm
            .into_iter()
            .chain(cats)
            .map(|(name, column)| LevelColumn {
                name,
                column,
                levels: HashSet::default(),
            })
            .collect();
        Self {
            origin: origin.to_string(),
            numeric,
            categorical,
            rows: 0,
        }
    }

    /// One batch of the train split.
    pub(crate) fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        let origin = &self.origin;
        let column =
            |name: &str, to| crate::split_column(batch, name, to, origin, "the feature spec");
        for i in 0..self.numeric.len() {
            let a = column(&self.numeric[i].column, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            let values = &mut self.numeric[i].values;
            if a.null_count() == 0 {
                values.extend(a.values().iter().copied());
            } else {
                values.extend(a.iter().flatten());
            }
        }
        for i in 0..self.categorical.len() {
            let a = column(&self.categorical[i].column, &DataType::Utf8View)?;
            let levels = &mut self.categorical[i].levels;
            // Levels are few and short: each value is first compared, as one number, with those this batch
            // has already seen.
            let mut seen: Vec<u128> = Vec::new();
            for v in a.as_string_view().iter().flatten() {
                let key = crate::split_stats::short_key(v);
                if key.is_some_and(|k| seen.contains(&k)) {
                    continue;
                }
                if !levels.contains(v) {
                    levels.insert(v.to_string());
                }
                if let Some(k) = key.filter(|_| seen.len() < 32) {
                    seen.push(k);
                }
            }
        }
        self.bound_memory()
    }

    fn bound_memory(&mut self) -> Result<()> {
        let held = |c: &NumericColumn| c.values.distinct_in_memory();
        while self.numeric.iter().map(held).sum::<usize>() > DISTINCT_IN_MEMORY {
            match self.numeric.iter_mut().max_by_key(|c| held(c)) {
                Some(c) => c.values.spill()?,
                None => break,
            }
        }
        Ok(())
    }

    pub(crate) fn finish(self, cfg: &Config) -> Result<FeatureSpec> {
        if self.rows == 0 {
            return Err(Error::bad_data(
                "processed/features/split=train",
                "the train split is empty",
            ));
        }
        let d = &cfg.dataset;
        let mut numeric = Vec::with_capacity(self.numeric.len());
        for c in self.numeric {
            let summary = c.values.finish()?;
            let rule = d.rules.get(&c.name);
            numeric.push(NumericFeature {
                impute: summary.map_or(0.0, |s| s.median),
                mean: summary.map_or(0.0, |s| s.mean),
                std: summary.map(|s| s.std).filter(|s| *s > 0.0).unwrap_or(1.0),
                min: rule.and_then(|r| r.min),
                max: rule.and_then(|r| r.max),
                on_invalid: match rule.map(|r| r.action) {
                    Some(RuleAction::Quarantine) => OnInvalid::Reject,
                    _ => OnInvalid::Impute,
                },
                derived: d.derived.get(&c.name).cloned(),
                name: c.name,
            });
        }
        let categorical: Vec<CategoricalFeature> = self
            .categorical
            .into_iter()
            .map(|c| {
                let mut levels: Vec<String> = c.levels.into_iter().collect();
                levels.sort_unstable();
                CategoricalFeature {
                    canonical: sql::canonical_map(d.rules.get(&c.name))
                        .into_iter()
                        .collect(),
                    levels,
                    unseen: cfg.preprocessing.unseen_level,
                    name: c.name,
                }
            })
            .collect();
        let columns = FeatureSpec::build_columns(&numeric, &categorical);
        Ok(FeatureSpec {
            numeric,
            categorical,
            columns,
            train_rows: self.rows,
            arm_field: d.arm.column.clone(),
        })
    }
}
