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

/// The moments of the values of `a` at `rows` (in order), in two passes: count, extremes and sum, then squares
/// about the mean.
fn moments_of(a: &arrow::array::Float64Array, rows: &[u32]) -> Moments {
    let values = a.values();
    let valid = |r: usize| a.is_valid(r);
    let mut m = Moments::default();
    let (mut n, mut sum, mut min, mut max) = (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
    for &r in rows {
        let r = r as usize;
        if valid(r) {
            let x = values[r];
            n += 1;
            sum += x;
            min = min.min(x);
            max = max.max(x);
        }
    }
    m.nulls = rows.len() as u64 - n;
    (m.n, m.min, m.max) = (n, min, max);
    m.mean = sum / n.max(1) as f64;
    let mut m2 = 0.0;
    for &r in rows {
        let r = r as usize;
        if valid(r) {
            let d = values[r] - m.mean;
            m2 += d * d;
        }
    }
    m.m2 = m2;
    m
}

/// A text of at most 11 bytes as one number, taken from its string view (`view`: the length in the low 32
/// bits, then the bytes inline) with the unused bytes masked off and the top bit set, so that no text maps to
/// 0, the key of NULL: comparing two numbers is cheaper than comparing two texts, and the view is already in
/// a register (copying the bytes out into a 16-byte key stalled each row on a store the load could not take
/// its value from). `None` for a longer text.
pub(crate) fn view_key(view: u128) -> Option<u128> {
    let len = view as u32;
    (len <= 11).then(|| view & ((1u128 << (32 + 8 * len)) - 1) | 1 << 127)
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
                // NULL is the empty arm
                let (key, text) = match arm.is_valid(r) {
                    true => (view_key(arm.views()[r]), None),
                    false => (view_key(0), Some("")),
                };
                let found = match key {
                    Some(k) => arms.iter().position(|x| x.0 == Some(k)),
                    None => arms
                        .iter()
                        .position(|x| x.0.is_none() && x.1 == arm.value(r)),
                };
                found.unwrap_or_else(|| {
                    arms.push((key, text.unwrap_or_else(|| arm.value(r))));
                    arms.len() - 1
                })
            })
            .collect();
        let (nn, nc) = (self.numeric.len(), self.categorical.len());
        let mut local: Vec<Group> = arms.iter().map(|_| Group::new(nn, nc)).collect();
        // Each group's rows in order, gathered once for every column: a group's sums then stay in registers
        // (indexed by the row's group, each row's sum was a load and a store after the one before).
        let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); arms.len()];
        for (r, &g) in gid.iter().enumerate() {
            rows_of[g].push(r as u32);
        }
        for (k, (_, col)) in self.numeric.iter().enumerate() {
            let a = column(col, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            for (rows, group) in rows_of.iter().zip(local.iter_mut()) {
                group.numeric[k] = moments_of(a, rows);
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
            let views = a.views();
            for (r, &g) in gid.iter().enumerate() {
                let valid = a.is_valid(r);
                let value = || valid.then(|| a.value(r));
                let key = match valid {
                    false => Some(0),
                    true => view_key(views[r]),
                };
                match key {
                    Some(key) => {
                        if let Some(e) = seen.iter_mut().find(|e| e.0 == g && e.1 == key) {
                            e.2 += 1;
                        } else if seen.len() < 32 {
                            seen.push((g, key, 1, value()));
                        } else {
                            *many.entry((g, value())).or_default() += 1;
                        }
                    }
                    None => *many.entry((g, value())).or_default() += 1,
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
    fn view_keys_tell_texts_apart_and_never_equal_nulls() {
        let texts = [
            "",
            "a",
            "a\0",
            "placebo",
            "treatment",
            "eleven-byte",
            "twelve-bytes",
        ];
        let views = arrow::array::StringViewArray::from_iter_values(texts);
        let keys: Vec<Option<u128>> = views.views().iter().map(|v| view_key(*v)).collect();
        assert!(keys[..6].iter().all(|k| k.is_some_and(|k| k != 0)));
        for (i, a) in keys[..6].iter().enumerate() {
            for b in &keys[i + 1..6] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(keys[6], None);
        // Bytes past the text in a view are not part of its key.
        let dirty = views.views()[1] | 0xff << 48;
        assert_eq!(view_key(dirty), keys[1]);
        // The same text in another array has the same key.
        let again = arrow::array::StringViewArray::from_iter_values(["x", "placebo"]);
        assert_eq!(view_key(again.views()[1]), keys[3]);
    }

    #[test]
    fn moments_of_a_groups_rows_skip_other_rows_and_count_nulls() {
        let a = arrow::array::Float64Array::from(vec![
            Some(1.5),
            None,
            Some(-2.0),
            Some(7.25),
            None,
            Some(3.0),
        ]);
        let m = moments_of(&a, &[0, 1, 3, 4, 5]);
        let whole = moments(&[1.5, 7.25, 3.0]);
        assert_eq!((m.n, m.nulls, m.min, m.max), (3, 2, 1.5, 7.25));
        assert_eq!((m.mean, m.m2), (whole.mean, whole.m2));
        let none = moments_of(&a, &[1, 4]);
        assert_eq!((none.n, none.nulls, none.m2), (0, 2, 0.0));
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
