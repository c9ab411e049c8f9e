//! The exact median, mean and population standard deviation of a column's train values in memory that does
//! not grow with the trial: each distinct value is held once with its count (a measurement has few distinct
//! values: ages, pressures, lab values to their precision), and a column with too many distinct values
//! writes its counts to an unnamed temporary file, which the order statistics then read in four passes of
//! 16 bits each (radix selection). Nothing is left on disk when the process ends, killed or not.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use trialflow_core::{Error, Result};

/// One record of the spill file: the value's order key and its count, little-endian.
const RECORD_BYTES: usize = 16;
const DIGIT_BITS: u32 = 16;

/// A fixed seed: the map's order, and so the order in which the squares are summed and the spill file's
/// records, is the same on every run over the same values (a random seed moves the standard deviation's
/// last bit from run to run).
type Counts = HashMap<u64, u64, foldhash::fast::FixedState>;

fn empty_counts() -> Counts {
    Counts::with_hasher(foldhash::fast::FixedState::with_seed(0x7472_6961_6c66_6c6f))
}

/// What [`ValueCounts::finish`] gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub median: f64,
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
}

/// Values counted in the map before it is judged whether the column's values are mostly distinct.
const JUDGED_AFTER: u64 = 1 << 16;

/// Counts of distinct values, some of them possibly on disk.
pub(crate) struct ValueCounts {
    /// Keyed by [`order_key`]: -0.0 and 0.0, and NaNs of different payloads, stay apart as `f64::total_cmp`
    /// keeps them.
    counts: Counts,
    /// The order keys as they came, for a column whose first [`JUDGED_AFTER`] values were more than three
    /// quarters distinct (a derived ratio such as BMI): there nearly every value would take an entry of its
    /// own, a cache miss each once the map outgrows the cache. They are sorted and counted when spilled.
    raw: Option<Vec<u64>>,
    spill: Option<BufWriter<File>>,
    n: u64,
    /// In input order: the mean is the one a sequential sum of the values gives.
    sum: f64,
}

impl Default for ValueCounts {
    fn default() -> Self {
        Self {
            counts: empty_counts(),
            raw: None,
            spill: None,
            n: 0,
            sum: 0.0,
        }
    }
}

/// `f64::total_cmp`'s order as unsigned integers: negatives flipped whole, positives with the sign bit set.
fn order_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

fn spill_error(e: std::io::Error) -> Error {
    Error::infra("temporary file of the feature spec's values", e.to_string())
}

impl ValueCounts {
    pub(crate) fn extend(&mut self, values: impl IntoIterator<Item = f64>) {
        let before = self.n;
        match &mut self.raw {
            Some(raw) => {
                for v in values {
                    self.sum += v;
                    self.n += 1;
                    raw.push(order_key(v));
                }
            }
            None => {
                for v in values {
                    self.sum += v;
                    self.n += 1;
                    *self.counts.entry(order_key(v)).or_insert(0) += 1;
                }
                // Judged only while the map holds every value so far.
                let judged_now =
                    before < JUDGED_AFTER && self.n >= JUDGED_AFTER && self.spill.is_none();
                if judged_now && self.counts.len() as u64 * 4 > self.n * 3 {
                    self.raw = Some(Vec::new());
                }
            }
        }
    }

    fn take_counts(&mut self) -> Counts {
        std::mem::replace(&mut self.counts, empty_counts())
    }

    /// Distinct values held in memory (at most: the raw keys are counted as if each were distinct).
    pub(crate) fn distinct_in_memory(&self) -> usize {
        self.counts.len() + self.raw.as_ref().map_or(0, Vec::len)
    }

    /// Moves the counts held in memory to the spill file and frees their memory.
    pub(crate) fn spill(&mut self) -> Result<()> {
        let counts = self.take_counts();
        let file = match &mut self.spill {
            Some(f) => f,
            None => self
                .spill
                .insert(BufWriter::new(tempfile::tempfile().map_err(spill_error)?)),
        };
        write_counts(file, counts)?;
        if let Some(raw) = &mut self.raw {
            // Kept allocated: the next keys fill the same buffer.
            raw.sort_unstable();
            for run in raw.chunk_by(|a, b| a == b) {
                write_record(file, run[0], run.len() as u64)?;
            }
            raw.clear();
        }
        Ok(())
    }

    /// `None` when no value came.
    pub(crate) fn finish(mut self) -> Result<Option<Summary>> {
        if self.n == 0 {
            return Ok(None);
        }
        if self.raw.is_some() {
            self.spill()?;
        }
        let mut source = match self.spill.take() {
            None => Source::Memory(self.take_counts()),
            Some(mut file) => {
                write_counts(&mut file, self.take_counts())?;
                Source::File(file.into_inner().map_err(|e| spill_error(e.into_error()))?)
            }
        };
        let n = self.n;
        let mean = self.sum / n as f64;
        let mut squares = 0.0;
        source.each(&mut |key, count| {
            let d = from_order_key(key) - mean;
            squares += d * d * count as f64;
        })?;
        // The middle value, or the two middle ones when the count is even (SQL's `median` averages them).
        let [lo, hi] = order_statistics(&mut source, [(n - 1) / 2, n / 2])?;
        Ok(Some(Summary {
            median: if lo == hi { lo } else { (lo + hi) / 2.0 },
            mean,
            std: (squares / n as f64).sqrt(),
        }))
    }
}

fn write_counts(file: &mut BufWriter<File>, counts: Counts) -> Result<()> {
    for (key, count) in counts {
        write_record(file, key, count)?;
    }
    Ok(())
}

fn write_record(file: &mut BufWriter<File>, key: u64, count: u64) -> Result<()> {
    let mut record = [0u8; RECORD_BYTES];
    record[..8].copy_from_slice(&key.to_le_bytes());
    record[8..].copy_from_slice(&count.to_le_bytes());
    file.write_all(&record).map_err(spill_error)
}

enum Source {
    Memory(Counts),
    File(File),
}

impl Source {
    fn each(&mut self, f: &mut dyn FnMut(u64, u64)) -> Result<()> {
        match self {
            Source::Memory(counts) => {
                for (&key, &count) in counts.iter() {
                    f(key, count);
                }
                Ok(())
            }
            Source::File(file) => {
                file.seek(SeekFrom::Start(0)).map_err(spill_error)?;
                let mut reader = BufReader::with_capacity(1 << 16, &*file);
                let mut record = [0u8; RECORD_BYTES];
                loop {
                    match reader.read_exact(&mut record) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                        Err(e) => return Err(spill_error(e)),
                    }
                    let (key, count) = record.split_at(8);
                    let word = |b: &[u8]| b.try_into().map(u64::from_le_bytes).unwrap_or(0);
                    f(word(key), word(count));
                }
            }
        }
    }
}

/// The values at the given 0-based ranks of the sorted multiset, both in the same passes: each pass fixes
/// the next 16 bits of each rank's order key by a histogram of the keys that share the bits fixed so far.
fn order_statistics(source: &mut Source, ranks: [u64; 2]) -> Result<[f64; 2]> {
    let mut prefix = [0u64; 2];
    let mut rank = ranks;
    for pass in 0..64 / DIGIT_BITS {
        let known = pass * DIGIT_BITS;
        let shift = 64 - known - DIGIT_BITS;
        let mask = if known == 0 { 0 } else { !0u64 << (64 - known) };
        let mut hist = [0; 2].map(|_| vec![0u64; 1 << DIGIT_BITS]);
        source.each(&mut |key, count| {
            let digit = ((key >> shift) & ((1 << DIGIT_BITS) - 1)) as usize;
            for j in 0..2 {
                if key & mask == prefix[j] {
                    hist[j][digit] += count;
                }
            }
        })?;
        for j in 0..2 {
            let mut below = 0;
            let digit = hist[j].iter().position(|&c| {
                if rank[j] < below + c {
                    return true;
                }
                below += c;
                false
            });
            let digit = digit.ok_or_else(|| {
                Error::Internal("a rank beyond the values counted for the median".into())
            })?;
            rank[j] -= below;
            prefix[j] |= (digit as u64) << shift;
        }
    }
    Ok(prefix.map(from_order_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(values: &[f64], spill_every: Option<usize>) -> Option<Summary> {
        let mut c = ValueCounts::default();
        for (i, v) in values.iter().enumerate() {
            c.extend([*v]);
            if spill_every.is_some_and(|k| (i + 1) % k == 0) {
                c.spill().unwrap();
            }
        }
        c.finish().unwrap()
    }

    /// The reference: sort every value.
    fn sorted_median(values: &[f64]) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    #[test]
    fn order_keys_sort_as_total_cmp() {
        let mut v = vec![
            3.5,
            -0.0,
            0.0,
            -1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-310,
            -2.25,
            7.0,
        ];
        let mut by_key = v.clone();
        v.sort_by(f64::total_cmp);
        by_key.sort_by_key(|x| order_key(*x));
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            by_key.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        for x in v {
            assert_eq!(from_order_key(order_key(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn median_of_odd_and_even_counts_as_sql_gives_it() {
        assert_eq!(summary(&[], None), None);
        let m = |v: &[f64]| summary(v, None).unwrap().median;
        assert_eq!(m(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(m(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(m(&[5.0]), 5.0);
        assert_eq!(m(&[2.0, 2.0, 2.0, 9.0]), 2.0);
        assert_eq!(m(&[-3.0, -1.0]), -2.0);
    }

    #[test]
    fn moments_are_the_population_ones() {
        let s = summary(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], None).unwrap();
        assert_eq!((s.mean, s.std), (5.0, 2.0));
        // Large offsets keep their precision (a one-pass sum of squares would lose it).
        let s = summary(&[1e9 + 1.0, 1e9 + 3.0], None).unwrap();
        assert_eq!((s.mean, s.std), (1e9 + 2.0, 1.0));
    }

    #[test]
    fn mostly_distinct_values_are_kept_raw_and_give_what_sorting_gives() {
        // Distinct ratios with a few repeats, past the point where the column is judged.
        let values: Vec<f64> = (0..(JUDGED_AFTER as usize * 3))
            .map(|i| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 42) as f64 / 16.0 - 1e4)
            .chain([2.5; 1000])
            .collect();
        for spill_every in [None, Some(100_000)] {
            let mut c = ValueCounts::default();
            for chunk in values.chunks(4096) {
                c.extend(chunk.iter().copied());
                if spill_every.is_some_and(|k| c.distinct_in_memory() > k) {
                    c.spill().unwrap();
                }
            }
            assert!(c.raw.is_some(), "judged mostly distinct");
            assert!(c.counts.len() <= JUDGED_AFTER as usize);
            let s = c.finish().unwrap().unwrap();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let std = (values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
            assert_eq!(s.median, sorted_median(&values));
            assert_eq!(s.mean, mean);
            assert!((s.std - std).abs() <= 1e-9 * std);
        }
        // A column of few values stays in the map.
        let mut c = ValueCounts::default();
        c.extend((0..JUDGED_AFTER * 2).map(|i| (i % 90) as f64));
        assert!(c.raw.is_none());
    }

    #[test]
    fn spilled_counts_give_what_memory_gives_and_what_sorting_gives() {
        // Many distinct values, repeats, negatives and ties at the middle, in a fixed pseudo-random order.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values = Vec::new();
        for i in 0..20_001 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = match i % 3 {
                0 => (x % 1000) as f64 / 10.0 - 50.0,
                1 => (x >> 11) as f64 / (1u64 << 53) as f64 * 1e6,
                _ => 42.0,
            };
            values.push(v);
        }
        for n in [values.len(), values.len() - 1] {
            let v = &values[..n];
            let memory = summary(v, None).unwrap();
            let spilled = summary(v, Some(777)).unwrap();
            assert_eq!(memory.median, sorted_median(v), "{n} values");
            assert_eq!(spilled.median, memory.median, "{n} values");
            assert_eq!(spilled.mean, memory.mean, "{n} values");
            assert!(
                (spilled.std - memory.std).abs() <= 1e-9 * memory.std,
                "{} vs {}",
                spilled.std,
                memory.std
            );
            let mean = v.iter().sum::<f64>() / n as f64;
            let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64).sqrt();
            assert_eq!(memory.mean, mean);
            assert!((memory.std - std).abs() <= 1e-9 * std);
        }
    }
}
