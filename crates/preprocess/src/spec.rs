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

/// [`TrainStats`] on a thread of its own: the train split's statistics and those of every split
/// (`SplitStats`) are gathered side by side, each over the same batches in the same order as before.
pub(crate) struct TrainStatsThread {
    tx: Option<std::sync::mpsc::SyncSender<RecordBatch>>,
    handle: Option<std::thread::JoinHandle<Result<TrainStats>>>,
    done: Option<TrainStats>,
}

impl TrainStatsThread {
    /// One batch of the train split (shared, not copied).
    pub(crate) fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        match &self.tx {
            Some(tx) if tx.send(batch.clone()).is_ok() => Ok(()),
            // The thread stopped at an error: that error.
            _ => self
                .join()
                .and(Err(Error::Internal("the train statistics stopped".into()))),
        }
    }

    /// Waits for every batch observed to be counted: the thread's error, if it stopped at one.
    pub(crate) fn drain(&mut self) -> Result<()> {
        if self.done.is_none() {
            self.done = Some(self.join()?);
        }
        Ok(())
    }

    /// The statistics of every batch observed.
    pub(crate) fn finish(mut self) -> Result<TrainStats> {
        match self.done.take() {
            Some(stats) => Ok(stats),
            None => self.join(),
        }
    }

    fn join(&mut self) -> Result<TrainStats> {
        self.tx = None;
        let handle = self
            .handle
            .take()
            .ok_or_else(|| Error::Internal("the train statistics already ended".into()))?;
        handle
            .join()
            .map_err(|_| Error::Internal("the train statistics panicked".into()))?
    }
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
            let a = a.as_string_view();
            let mut seen: Vec<u128> = Vec::new();
            for (r, view) in a.views().iter().enumerate() {
                if a.is_null(r) {
                    continue;
                }
                let key = crate::split_stats::view_key(*view);
                if key.is_some_and(|k| seen.contains(&k)) {
                    continue;
                }
                let v = a.value(r);
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

    /// Gathers on a thread of its own from here on: see [`TrainStatsThread`].
    pub(crate) fn spawn(self) -> Result<TrainStatsThread> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(4);
        let mut stats = self;
        let handle = std::thread::Builder::new()
            .name("train-stats".into())
            .spawn(move || {
                for batch in rx {
                    stats.observe(&batch)?;
                }
                Ok(stats)
            })
            .map_err(|e| Error::Internal(format!("starting the train statistics: {e}")))?;
        Ok(TrainStatsThread {
            tx: Some(tx),
            handle: Some(handle),
            done: None,
        })
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
