//! The feature spec from the train split's rows, gathered while `features` writes them: the statistics see
//! the train batches and nothing else, so no val or test value can reach them. Gathering them here instead
//! of re-reading the written split saves a scan and the aggregates' copies of every value.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use trialflow_core::config::{Config, RuleAction};
use trialflow_core::features::{CategoricalFeature, FeatureSpec, NumericFeature, OnInvalid};
use trialflow_core::{Error, Result};

use crate::sql;

struct NumericColumn {
    name: String,
    column: String,
    values: Vec<f64>,
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
    /// `origin` is the SQL file whose result the batches are (named when a column is missing);
    /// `expected_rows` sizes the value buffers (a hint: growing them copies every value).
    pub(crate) fn new(cfg: &Config, origin: &str, expected_rows: usize) -> Self {
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
                values: Vec::with_capacity(expected_rows),
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
                values.extend_from_slice(a.values());
            } else {
                values.extend(a.iter().flatten());
            }
        }
        for i in 0..self.categorical.len() {
            let a = column(&self.categorical[i].column, &DataType::Utf8View)?;
            let levels = &mut self.categorical[i].levels;
            for v in a.as_string_view().iter().flatten() {
                if !levels.contains(v) {
                    levels.insert(v.to_string());
                }
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
        let numeric: Vec<NumericFeature> = self
            .numeric
            .into_iter()
            .map(|mut c| {
                let m = moments(&c.values);
                let rule = d.rules.get(&c.name);
                NumericFeature {
                    impute: median(&mut c.values).unwrap_or(0.0),
                    mean: m.map_or(0.0, |m| m.0),
                    std: m.map(|m| m.1).filter(|s| *s > 0.0).unwrap_or(1.0),
                    min: rule.and_then(|r| r.min),
                    max: rule.and_then(|r| r.max),
                    on_invalid: match rule.map(|r| r.action) {
                        Some(RuleAction::Quarantine) => OnInvalid::Reject,
                        _ => OnInvalid::Impute,
                    },
                    derived: d.derived.get(&c.name).cloned(),
                    name: c.name,
                }
            })
            .collect();
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

/// The median as SQL's `median` gives it: the middle value, or the mean of the two middle values.
fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (lower, mid, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let hi = *mid;
    if n % 2 == 1 {
        return Some(hi);
    }
    let lo = lower.iter().copied().max_by(f64::total_cmp)?;
    Some((lo + hi) / 2.0)
}

/// Mean and population standard deviation, two-pass (no cancellation of large squares).
fn moments(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    Some((mean, var.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_as_sql_gives_it() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [5.0]), Some(5.0));
    }

    #[test]
    fn moments_are_the_population_ones() {
        let (m, s) = moments(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!((m, s), (5.0, 2.0));
        // Large offsets keep their precision (a one-pass sum of squares would lose it).
        let (m, s) = moments(&[1e9 + 1.0, 1e9 + 3.0]).unwrap();
        assert_eq!((m, s), (1e9 + 2.0, 1.0));
    }
}
