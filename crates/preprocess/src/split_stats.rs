//! Per split and arm statistics of the split tables, gathered while `features` writes them (the quality
//! report's numbers): every batch that goes into a split file passes through [`SplitStats::observe`], so the
//! figures describe exactly the written tables without a second scan of them.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use trialflow_core::Result;
use trialflow_core::config::Config;

use crate::{LevelCount, NumericSummary, SplitCounts, SplitSummary, sql};

/// Count, nulls, extremes and moments of one column in one group, merged batch by batch (Chan et al.).
#[derive(Clone, Copy)]
struct Moments {
    n: u64,
    nulls: u64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Self {
            n: 0,
            nulls: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
        }
    }
}

impl Moments {
    fn merge(&mut self, o: &Moments) {
        self.nulls += o.nulls;
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            let nulls = self.nulls;
            *self = *o;
            self.nulls = nulls;
            return;
        }
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        self.mean += delta * o.n as f64 / n as f64;
        self.m2 += o.m2 + delta * delta * (self.n as f64 * o.n as f64) / n as f64;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.n = n;
    }
}

/// A text of at most 15 bytes as one number (its bytes, and its length + 1 in the last byte, so that no
/// text maps to 0, the key of NULL): comparing two numbers is cheaper than comparing two texts.
pub(crate) fn short_key(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() > 15 {
        return None;
    }
    let mut k = [0u8; 16];
    k[..b.len()].copy_from_slice(b);
    k[15] = b.len() as u8 + 1;
    Some(u128::from_le_bytes(k))
}

struct Group {
    numeric: Vec<Moments>,
    /// Per categorical column: level (NULL as `None`) → rows.
    levels: Vec<BTreeMap<Option<String>, u64>>,
}

impl Group {
    fn new(numeric: usize, categorical: usize) -> Self {
        Self {
            numeric: vec![Moments::default(); numeric],
            levels: vec![BTreeMap::new(); categorical],
        }
    }
}

pub(crate) struct SplitStats {
    origin: String,
    numeric: Vec<(String, String)>,
    categorical: Vec<(String, String)>,
    /// (split, arm) → statistics.
    groups: BTreeMap<(String, String), Group>,
}

impl SplitStats {
    /// `origin` names the SQL whose result the batches are (in errors about its columns).
    pub(crate) fn new(cfg: &Config, origin: &str) -> Self {
        let d = &cfg.dataset;
        let cols = |names: &[String]| {
            names
                .iter()
                .map(|c| (c.clone(), sql::table_column(c)))
                .collect::<Vec<_>>()
        };
        Self {
            origin: origin.to_string(),
            numeric: cols(&d.numeric),
            categorical: cols(&d.categorical),
            groups: BTreeMap::new(),
        }
    }

    /// The columns [`Self::observe`] reads.
    pub(crate) fn columns(&self) -> impl Iterator<Item = &str> {
        std::iter::once("arm").chain(
            self.numeric
                .iter()
                .chain(&self.categorical)
                .map(|(_, c)| c.as_str()),
        )
    }

    /// One batch of split `split`.
    pub(crate) fn observe(&mut self, split: &str, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let origin = &self.origin;
        let column =
            |name: &str, to| crate::split_column(batch, name, to, origin, "the quality report");
        // Arms are a handful of levels: a row's group is found by comparing with the levels seen in this batch.
        let arm = column("arm", &DataType::Utf8View)?;
        let arm = arm.as_string_view();
        let mut arms: Vec<(Option<u128>, &str)> = Vec::new();
        let gid: Vec<usize> = (0..arm.len())
            .map(|r| {
                let a = if arm.is_valid(r) { arm.value(r) } else { "" };
                let key = short_key(a);
                let found = match key {
                    Some(k) => arms.iter().position(|x| x.0 == Some(k)),
                    None => arms.iter().position(|x| x.0.is_none() && x.1 == a),
                };
                found.unwrap_or_else(|| {
                    arms.push((key, a));
                    arms.len() - 1
                })
            })
            .collect();
        let (nn, nc) = (self.numeric.len(), self.categorical.len());
        let mut local: Vec<Group> = arms.iter().map(|_| Group::new(nn, nc)).collect();
        for (k, (_, col)) in self.numeric.iter().enumerate() {
            let a = column(col, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            // Two passes over the batch: count, extremes and sum, then squares about the batch's mean.
            let mut m = vec![Moments::default(); arms.len()];
            for (r, &g) in gid.iter().enumerate() {
                let m = &mut m[g];
                if a.is_valid(r) {
                    let x = a.value(r);
                    m.n += 1;
                    m.mean += x;
                    m.min = m.min.min(x);
                    m.max = m.max.max(x);
                } else {
                    m.nulls += 1;
                }
            }
            for m in &mut m {
                m.mean /= m.n.max(1) as f64;
            }
            for (r, &g) in gid.iter().enumerate() {
                if a.is_valid(r) {
                    let d = a.value(r) - m[g].mean;
                    m[g].m2 += d * d;
                }
            }
            for (g, m) in m.into_iter().enumerate() {
                local[g].numeric[k] = m;
            }
        }
        for (k, (_, col)) in self.categorical.iter().enumerate() {
            let a = column(col, &DataType::Utf8View)?;
            let a = a.as_string_view();
            // Levels are usually few and short: each row's level is one number compared with the first
            // ones seen in this batch; longer or further levels are hashed.
            let mut seen: Vec<(usize, u128, u64, Option<&str>)> = Vec::new();
            let mut many: HashMap<(usize, Option<&str>), u64, foldhash::fast::RandomState> =
                HashMap::default();
            for (r, &g) in gid.iter().enumerate() {
                let v = a.is_valid(r).then(|| a.value(r));
                let key = match v {
                    None => Some(0),
                    Some(v) => short_key(v),
                };
                match key {
                    Some(key) => {
                        if let Some(e) = seen.iter_mut().find(|e| e.0 == g && e.1 == key) {
                            e.2 += 1;
                        } else if seen.len() < 32 {
                            seen.push((g, key, 1, v));
                        } else {
                            *many.entry((g, v)).or_default() += 1;
                        }
                    }
                    None => *many.entry((g, v)).or_default() += 1,
                }
            }
            for (g, v, n) in seen
                .into_iter()
                .map(|(g, _, n, v)| (g, v, n))
                .chain(many.into_iter().map(|((g, v), n)| (g, v, n)))
            {
                *local[g].levels[k].entry(v.map(str::to_string)).or_default() += n;
            }
        }
        for ((_, a), l) in arms.iter().zip(local) {
            let group = self
                .groups
                .entry((split.to_string(), a.to_string()))
                .or_insert_with(|| Group::new(nn, nc));
            for (m, o) in group.numeric.iter_mut().zip(&l.numeric) {
                m.merge(o);
            }
            for (m, o) in group.levels.iter_mut().zip(l.levels) {
                for (v, n) in o {
                    *m.entry(v).or_default() += n;
                }
            }
        }
        Ok(())
    }

    /// The summary in the report's order: by column, then split and arm (and level, NULL last).
    pub(crate) fn finish(self, splits: &[SplitCounts]) -> SplitSummary {
        let mut out = SplitSummary {
            splits: splits.iter().filter(|s| s.rows > 0).cloned().collect(),
            ..Default::default()
        };
        out.splits.sort_by(|a, b| a.split.cmp(&b.split));
        for (k, (name, _)) in self.numeric.iter().enumerate() {
            for ((split, arm), g) in &self.groups {
                let m = g.numeric[k];
                let some = |x: f64| (m.n > 0).then_some(x);
                out.numeric.push(NumericSummary {
                    column: name.clone(),
                    split: split.clone(),
                    arm: arm.clone(),
                    count: m.n,
                    nulls: m.nulls,
                    min: some(m.min),
                    max: some(m.max),
                    mean: some(m.mean),
                    std: some((m.m2 / m.n.max(1) as f64).sqrt()),
                });
            }
        }
        for (k, (name, _)) in self.categorical.iter().enumerate() {
            for ((split, arm), g) in &self.groups {
                let levels = g.levels[k].iter();
                // NULL last, as SQL's ascending order puts it.
                let (nulls, values): (Vec<_>, Vec<_>) = levels.partition(|(v, _)| v.is_none());
                for (level, n) in values.into_iter().chain(nulls) {
                    out.categorical.push(LevelCount {
                        column: name.clone(),
                        split: split.clone(),
                        arm: arm.clone(),
                        level: level.clone(),
                        count: *n,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(xs: &[f64]) -> Moments {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        Moments {
            n: xs.len() as u64,
            nulls: 0,
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean,
            m2: xs.iter().map(|x| (x - mean) * (x - mean)).sum(),
        }
    }

    #[test]
    fn short_keys_tell_texts_apart_and_never_equal_nulls() {
        let keys: Vec<Option<u128>> = ["", "a", "a\0", "placebo", "treatment", "fifteen-bytes!!"]
            .iter()
            .map(|s| short_key(s))
            .collect();
        assert!(keys.iter().all(|k| k.is_some_and(|k| k != 0)));
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(short_key("sixteen-bytes!!!"), None);
    }

    #[test]
    fn merged_moments_equal_those_of_the_whole() {
        let xs = [1.0, 2.0, 4.0, 8.0, 16.0, 3.0, 5.0];
        let mut m = Moments {
            nulls: 2,
            ..Default::default()
        };
        m.merge(&moments(&xs[..3]));
        m.merge(&Moments {
            nulls: 1,
            ..Default::default()
        });
        m.merge(&moments(&xs[3..]));
        let whole = moments(&xs);
        assert_eq!((m.n, m.nulls, m.min, m.max), (7, 3, 1.0, 16.0));
        assert!((m.mean - whole.mean).abs() < 1e-12);
        assert!((m.m2 - whole.m2).abs() < 1e-9);
    }
}
