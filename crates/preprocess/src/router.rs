//! Routes each row that `clean.sql` yields, in input order: to the quarantine when a quarantine check fired,
//! when the row filter excluded it, or when its subject was already accepted (the first row per subject is
//! kept: "exact duplicate" when all its contract fields equal that first row's, else "repeated subject id");
//! to the clean table otherwise. Memory: 30 bytes per input row (a 24-byte slot per accepted subject, at most
//! 4/5 of the slots in use), nothing per column.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Builder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt64Type};
use trialflow_core::config::RepeatedIds;
use trialflow_core::{Error, Result};

use crate::sql::CHECK_PREFIX;

const ROUTING: [&str; 3] = ["_row", "_rowhash", "_keep"];

pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("subject_id", DataType::Utf8, true),
        Field::new("column", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ]))
}

/// A fired check: `action|column|rule|reason`.
struct Check<'a> {
    quarantine: bool,
    action: &'a str,
    column: &'a str,
    rule: &'a str,
    reason: &'a str,
}

fn parse_check<'a>(check_column: &str, label: &'a str) -> Result<Check<'a>> {
    let mut parts = label.splitn(4, '|');
    let (Some(action), Some(column), Some(rule), Some(reason)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::bad_data(
            format!("clean.sql: column `{check_column}`"),
            "a check yields NULL or `action|column|rule|reason` (action `quarantine` or `null`)",
        ));
    };
    let quarantine = match action {
        "quarantine" => true,
        "null" => false,
        _ => {
            return Err(Error::bad_data(
                format!("clean.sql: column `{check_column}`"),
                "a check's action is `quarantine` or `null`",
            ));
        }
    };
    Ok(Check {
        quarantine,
        action,
        column,
        rule,
        reason,
    })
}

#[derive(Default)]
pub(crate) struct QuarantineBuilder {
    source: StringBuilder,
    line: Int64Builder,
    subject: StringBuilder,
    column: StringBuilder,
    rule: StringBuilder,
    reason: StringBuilder,
    len: usize,
}

impl QuarantineBuilder {
    pub(crate) fn push(
        &mut self,
        source: &str,
        line: i64,
        subject: Option<&str>,
        column: &str,
        rule: &str,
        reason: &str,
    ) {
        self.source.append_value(source);
        self.line.append_value(line);
        self.subject.append_option(subject);
        self.column.append_value(column);
        self.rule.append_value(rule);
        self.reason.append_value(reason);
        self.len += 1;
    }

    pub(crate) fn take(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(self.source.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.subject.finish()),
            Arc::new(self.column.finish()),
            Arc::new(self.rule.finish()),
            Arc::new(self.reason.finish()),
        ];
        RecordBatch::try_new(quarantine_schema(), arrays).map_err(Error::bug)
    }
}

/// Counts for the clean report.
#[derive(Debug, Default)]
pub struct Tally {
    pub rows: u64,
    pub accepted: u64,
    pub quarantined: u64,
    pub excluded_by_filter: u64,
    pub exact_duplicates: u64,
    pub repeated_ids: u64,
    /// (column, rule, action) → rows.
    pub violations: BTreeMap<(String, String, String), u64>,
    /// source → (accepted, quarantined).
    pub per_source: BTreeMap<String, (u64, u64)>,
    /// Rows dropped for a reason the contract does not state (see [`UNSTATED_RULES`]) or as repeats of an
    /// accepted id (exact duplicates included).
    pub unstated: u64,
    /// The first quarantined rows: (source, line, column, rule), never a value.
    pub first_quarantined: Vec<(String, i64, String, String)>,
}

/// Quarantine rules that the contract did not ask for: the data did not match what the config says it is
/// (a number that is not one, a missing value spelt otherwise than declared, an outcome or event code not
/// listed, a broken record). Range and level rules, the filter and the required columns are the contract's.
pub const UNSTATED_RULES: [&str; 5] = ["malformed", "parse", "missing_token", "outcome", "event"];

/// How many quarantined rows the clean task names when it fails.
const FIRST_QUARANTINED: usize = 5;

/// Where the routing columns are in clean.sql's result.
struct RoutingColumns {
    subject: usize,
    source: usize,
    line: usize,
    rowhash: usize,
    keep: usize,
}

pub struct Router {
    id_column: String,
    repeated_ids: RepeatedIds,
    routing: RoutingColumns,
    clean_columns: Vec<usize>,
    clean_schema: SchemaRef,
    checks: Vec<(usize, String)>,
    first_rows: FirstRows,
    quarantine: QuarantineBuilder,
    pub tally: Tally,
}

/// The first row's hash per accepted subject key: open addressing with linear probing over one flat array.
/// Keys are uniform 128-bit values (pseudonyms), so their low word scaled to the table's length is the slot
/// (any length: no rounding up to a power of two, which at 50 million rows would waste 1.5 GB). One slot holds
/// key and value together: a lookup costs one cache line, and [`FirstRows::touch`] can load that line ahead
/// of use.
struct FirstRows {
    /// `[key high, key low, row hash]`; the all-zero key marks an empty slot.
    slots: Vec<[u64; 3]>,
    len: usize,
    /// The all-zero key itself, kept aside.
    zero: Option<u64>,
}

enum FirstRow {
    New,
    Seen(u64),
}

/// `slots` with every page written once. A zeroed allocation this large is only mapped: each page would
/// otherwise be faulted in (and zeroed by the kernel) at its first write during routing, scattered over the run
/// on the routing thread (150 MB at 5M rows: 4% of the clean task's CPU samples). The clean task builds its
/// router while the first batch is being staged, when that thread would wait anyway.
fn faulted_in(mut slots: Vec<[u64; 3]>) -> Vec<[u64; 3]> {
    // The compiler knows the allocation is zeroed and could drop stores of zero into it.
    let written = std::hint::black_box(&mut slots);
    for slot in written
        .iter_mut()
        .step_by(4096 / std::mem::size_of::<[u64; 3]>())
    {
        *slot = [0; 3];
    }
    slots
}

/// At most 4/5 full: an insert then probes three slots on average over the whole fill.
fn over_full(len: usize, slots: usize) -> bool {
    len * 5 > slots * 4
}

/// Where a lookup of a key whose low word is `lo` starts, in a table of `slots` slots.
fn home_of(lo: u64, slots: usize) -> usize {
    ((u128::from(lo) * slots as u128) >> 64) as usize
}

impl FirstRows {
    fn with_capacity(rows: usize) -> Self {
        let slots = rows.max(1024) * 5 / 4 + 1;
        Self {
            slots: faulted_in(vec![[0; 3]; slots]),
            len: 0,
            zero: None,
        }
    }

    fn home(&self, key: u128) -> usize {
        home_of(key as u64, self.slots.len())
    }

    /// Loads the slot where a lookup of `key` starts, so that the lookup finds it in cache.
    fn touch(&self, key: u128) -> u64 {
        let slot = &self.slots[self.home(key)];
        slot[0] ^ slot[2]
    }

    /// Records `hash` as the first row of `key` unless the key has one already, which is returned.
    fn first(&mut self, key: u128, hash: u64) -> FirstRow {
        if key == 0 {
            return match self.zero {
                Some(h) => FirstRow::Seen(h),
                None => {
                    self.zero = Some(hash);
                    FirstRow::New
                }
            };
        }
        let (hi, lo) = ((key >> 64) as u64, key as u64);
        let n = self.slots.len();
        let mut i = self.home(key);
        loop {
            let slot = &mut self.slots[i];
            if slot[0] == hi && slot[1] == lo {
                return FirstRow::Seen(slot[2]);
            }
            if slot[0] == 0 && slot[1] == 0 {
                *slot = [hi, lo, hash];
                self.len += 1;
                if over_full(self.len, n) {
                    self.grow();
                }
                return FirstRow::New;
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    fn grow(&mut self) {
        let doubled = vec![[0; 3]; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        let n = self.slots.len();
        for s in old.into_iter().filter(|s| s[0] != 0 || s[1] != 0) {
            let mut i = home_of(s[1], n);
            while self.slots[i][0] != 0 || self.slots[i][1] != 0 {
                i += 1;
                if i == n {
                    i = 0;
                }
            }
            self.slots[i] = s;
        }
    }
}

/// The subject's key: its pseudonym (128 bits of HMAC as 32 hex digits) read as a number, so de-duplication
/// is exactly as fine as pseudonymization. Any other id text (an edited clean.sql) gets two fixed-seed
/// 64-bit hashes.
pub(crate) fn subject_key(id: &str) -> u128 {
    if let Some(k) = hex_u128(id.as_bytes()) {
        return k;
    }
    let h = |seed: u64| foldhash::fast::FixedState::with_seed(seed).hash_one(id);
    (u128::from(h(1)) << 64) | u128::from(h(2))
}

/// 32 hex digits as a number. Without a branch per digit: digits and letters are equally likely in a
/// pseudonym, so a per-digit branch is mispredicted about every third digit.
fn hex_u128(hex: &[u8]) -> Option<u128> {
    if hex.len() != 32 {
        return None;
    }
    let mut k = 0u128;
    let mut valid = true;
    for &c in hex {
        let digit = c.wrapping_sub(b'0') < 10;
        let letter = (c | 0x20).wrapping_sub(b'a') < 6;
        valid &= digit | letter;
        // '0'..'9' → 0..9; 'a'..'f' and 'A'..'F' (bit 6 set) → 10..15.
        let nibble = (c & 0x0f) + 9 * (c >> 6);
        k = (k << 4) | u128::from(nibble & 0x0f);
    }
    valid.then_some(k)
}

/// Rows whose subject lookups are started together: the map is far larger than the caches, and lookups
/// issued back to back overlap their memory latency where the routing loop would wait for each in turn.
const LOOKAHEAD: usize = 64;

fn count_source(per_source: &mut BTreeMap<String, (u64, u64)>, run: Option<(&str, u64, u64)>) {
    if let Some((src, accepted, quarantined)) = run {
        let counts = per_source.entry(src.to_string()).or_default();
        counts.0 += accepted;
        counts.1 += quarantined;
    }
}

impl Router {
    /// `schema` is clean.sql's result schema: the clean table's columns, then the routing columns.
    /// `id_column` names the subject id in the sources (the quarantine's column for duplicates).
    /// `expected_rows` sizes the subject map up front (growing it re-hashes every key).
    pub fn new(
        schema: &Schema,
        id_column: &str,
        repeated_ids: RepeatedIds,
        expected_rows: usize,
    ) -> Result<Self> {
        let mut clean_columns = Vec::new();
        let mut checks = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if f.name().starts_with(CHECK_PREFIX) {
                if f.data_type() != &DataType::Utf8 {
                    return Err(Error::bad_data(
                        format!("clean.sql: column `{}`", f.name()),
                        format!("a check column is text; found {}", f.data_type()),
                    ));
                }
                checks.push((i, f.name().clone()));
            } else if !ROUTING.contains(&f.name().as_str()) {
                clean_columns.push(i);
            }
        }
        let find = |name: &str, expected: &DataType| match schema.column_with_name(name) {
            Some((i, f)) if f.data_type() == expected => Ok(i),
            Some((_, f)) => Err(Error::bad_data(
                format!("clean.sql: column `{name}`"),
                format!(
                    "a routing column of type {expected}; found {}",
                    f.data_type()
                ),
            )),
            None => Err(Error::bad_data(
                "clean.sql",
                format!("the result has no column `{name}` (the clean task routes rows by it)"),
            )),
        };
        let routing = RoutingColumns {
            subject: find("subject_id", &DataType::Utf8)?,
            source: find("_source", &DataType::Utf8)?,
            line: find("_line", &DataType::Int64)?,
            rowhash: find("_rowhash", &DataType::UInt64)?,
            keep: find("_keep", &DataType::Boolean)?,
        };
        let clean_schema =
            trialflow_core::table::nullable(&schema.project(&clean_columns).map_err(Error::bug)?);
        Ok(Self {
            id_column: id_column.to_string(),
            repeated_ids,
            routing,
            clean_columns,
            clean_schema,
            checks,
            first_rows: FirstRows::with_capacity(expected_rows),
            quarantine: QuarantineBuilder::default(),
            tally: Tally::default(),
        })
    }

    pub fn clean_schema(&self) -> SchemaRef {
        self.clean_schema.clone()
    }

    /// Routes one batch: its rows in the clean table's columns, and which of them are accepted (the caller
    /// copies those out). Quarantine rows collect until [`Router::take_quarantine`].
    pub fn route_rows(&mut self, batch: &RecordBatch) -> Result<(RecordBatch, BooleanArray)> {
        // Types were checked against the plan in `new`; the batches carry the plan's types.
        let c = &self.routing;
        let subject = batch.column(c.subject).as_string::<i32>();
        let source = batch.column(c.source).as_string::<i32>();
        let line = batch.column(c.line).as_primitive::<Int64Type>();
        let rowhash = batch.column(c.rowhash).as_primitive::<UInt64Type>();
        let keep = batch.column(c.keep).as_boolean();
        // Most checks fire on no row of a batch: only the others are looked at row by row.
        let checks: Vec<(&str, &StringArray)> = self
            .checks
            .iter()
            .map(|(i, name)| (name.as_str(), batch.column(*i).as_string::<i32>()))
            .filter(|(_, a)| a.null_count() < a.len())
            .collect();
        // The rows where any check fired: most rows have none, and this spares them a look at every column.
        let any_fired = checks.iter().try_fold(
            arrow::buffer::BooleanBuffer::new_unset(batch.num_rows()),
            |any, (_, a)| a.nulls().map(|valid| &any | valid.inner()),
        );
        let mut accept = Vec::with_capacity(batch.num_rows());
        let mut fired: Vec<Check> = Vec::new();
        let mut run: Option<(&str, u64, u64)> = None;
        let mut keys = [0u128; LOOKAHEAD];
        for r in 0..batch.num_rows() {
            if r % LOOKAHEAD == 0 {
                let end = (r + LOOKAHEAD).min(batch.num_rows());
                for (k, i) in keys.iter_mut().zip(r..end) {
                    *k = match subject.is_valid(i) {
                        true => subject_key(subject.value(i)),
                        false => 0,
                    };
                }
                // The loads back to back, nothing between them: the core keeps many misses in flight only
                // when no long computation (the key parse) sits between two of them.
                let mut found = 0u64;
                for k in &keys[..end - r] {
                    found ^= self.first_rows.touch(*k);
                }
                std::hint::black_box(found);
            }
            self.tally.rows += 1;
            let src = source.value(r);
            let ln = line.value(r);
            let id = subject.is_valid(r).then(|| subject.value(r));
            fired.clear();
            if any_fired.as_ref().is_none_or(|any| any.value(r)) {
                for (name, arr) in &checks {
                    if arr.is_valid(r) {
                        fired.push(parse_check(name, arr.value(r))?);
                    }
                }
            }
            let mut quarantined = false;
            let mut unstated = false;
            if !fired.is_empty() {
                fired.sort_by(|a, b| (a.rule, a.column).cmp(&(b.rule, b.column)));
                let mut counted: Vec<(&str, &str, &str)> = Vec::new();
                for c in &fired {
                    let key = (c.column, c.rule, c.action);
                    if !counted.contains(&key) {
                        counted.push(key);
                        *self
                            .tally
                            .violations
                            .entry((c.column.into(), c.rule.into(), c.action.into()))
                            .or_default() += 1;
                    }
                    if c.quarantine {
                        quarantined = true;
                        unstated |= UNSTATED_RULES.contains(&c.rule);
                        if self.tally.first_quarantined.len() < FIRST_QUARANTINED {
                            self.tally.first_quarantined.push((
                                src.to_string(),
                                ln,
                                c.column.to_string(),
                                c.rule.to_string(),
                            ));
                        }
                        self.quarantine
                            .push(src, ln, id, c.column, c.rule, c.reason);
                    }
                }
            }
            let kept = keep.is_valid(r) && keep.value(r);
            if !quarantined && !kept {
                quarantined = true;
                self.tally.excluded_by_filter += 1;
                self.quarantine
                    .push(src, ln, id, "", "filter", "excluded by the row filter");
            }
            if !quarantined {
                match id {
                    None => {
                        quarantined = true;
                        self.quarantine.push(
                            src,
                            ln,
                            None,
                            &self.id_column,
                            "required",
                            "required value is missing",
                        );
                    }
                    Some(id) => {
                        let hash = rowhash.value(r);
                        match self.first_rows.first(keys[r % LOOKAHEAD], hash) {
                            FirstRow::New => {}
                            FirstRow::Seen(first) => {
                                if self.repeated_ids == RepeatedIds::Error {
                                    return Err(Error::bad_data(
                                        format!("{src}:{ln}"),
                                        format!(
                                            "the subject id (`{}`) of this row is one an earlier row \
                                             already has, and `dataset.repeated_ids` is `error`; if \
                                             rows are several records per patient, make the id the row's \
                                             key (a composite id) and set `dataset.cluster`",
                                            self.id_column
                                        ),
                                    ));
                                }
                                quarantined = true;
                                // An exact duplicate is a dropped row too: a double export, or rows that
                                // differ only in a column the contract does not read (one row per eye).
                                unstated = true;
                                let reason = if first == hash {
                                    self.tally.exact_duplicates += 1;
                                    "exact duplicate of an earlier row"
                                } else {
                                    self.tally.repeated_ids += 1;
                                    "repeated subject id; the first row is kept"
                                };
                                self.quarantine.push(
                                    src,
                                    ln,
                                    Some(id),
                                    &self.id_column,
                                    "duplicate",
                                    reason,
                                );
                            }
                        }
                    }
                }
            }
            if quarantined {
                self.tally.quarantined += 1;
                self.tally.unstated += u64::from(unstated);
            } else {
                self.tally.accepted += 1;
            }
            // Batches hold one source each (the stager flushes at every object's end): count per run of rows.
            match run.as_mut() {
                Some((s, a, q)) if *s == src => {
                    *a += u64::from(!quarantined);
                    *q += u64::from(quarantined);
                }
                _ => {
                    count_source(&mut self.tally.per_source, run.take());
                    run = Some((src, u64::from(!quarantined), u64::from(quarantined)));
                }
            }
            accept.push(!quarantined);
        }
        count_source(&mut self.tally.per_source, run);
        let projected = batch.project(&self.clean_columns).map_err(Error::bug)?;
        Ok((projected, BooleanArray::from(accept)))
    }

    pub fn pending_quarantine(&self) -> usize {
        self.quarantine.len
    }

    pub fn take_quarantine(&mut self) -> Result<RecordBatch> {
        self.quarantine.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_read_as_numbers_and_other_ids_are_hashed() {
        let hex = "00ff10a0b0c0d0e0f00112233445566A";
        assert_eq!(hex_u128(hex.as_bytes()), u128::from_str_radix(hex, 16).ok());
        assert_eq!(hex_u128(b"00ff10a0b0c0d0e0f00112233445566g"), None);
        // Every byte: the branch-free parse agrees with the standard one, digit by digit.
        for b in 0..=255u8 {
            let mut id = *b"0123456789abcdefABCDEF0000000000";
            id[31] = b;
            let text = String::from_utf8_lossy(&id).into_owned();
            let expected = char::from(b)
                .is_ascii_hexdigit()
                .then(|| u128::from_str_radix(&text, 16).ok())
                .flatten();
            assert_eq!(hex_u128(&id), expected, "byte {b}");
        }
        assert_eq!(hex_u128(b"abc"), None);
        assert_ne!(subject_key("P0001"), subject_key("P0002"));
        assert_eq!(subject_key("P0001"), subject_key("P0001"));
    }

    #[test]
    fn first_rows_sized_for_the_input_hold_every_subject_without_growing() {
        let rows = 10_000;
        let mut t = FirstRows::with_capacity(rows);
        let slots = t.slots.len();
        assert!(
            slots * 24 <= rows * 30 + 24,
            "{slots} slots for {rows} rows"
        );
        for i in 1..=rows as u128 {
            let key = i.wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15);
            assert!(matches!(t.first(key, 0), FirstRow::New));
        }
        assert_eq!(t.slots.len(), slots);
    }

    #[test]
    fn first_rows_keep_the_first_hash_through_growth_and_for_the_zero_key() {
        let mut t = FirstRows::with_capacity(0);
        let keys: Vec<u128> = (0..5000u128)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834))
            .collect();
        assert_eq!(keys[0], 0, "the zero key is among them");
        for (i, &k) in keys.iter().enumerate() {
            assert!(matches!(t.first(k, i as u64), FirstRow::New));
        }
        assert!(t.slots.len() > 5000, "grown from its 1024-row start");
        for (i, &k) in keys.iter().enumerate() {
            assert!(matches!(t.first(k, 7), FirstRow::Seen(h) if h == i as u64));
        }
        // Keys that share their low bits still tell apart by the high ones.
        assert!(matches!(t.first(1u128 << 64, 1), FirstRow::New));
        assert!(matches!(t.first(2u128 << 64, 2), FirstRow::New));
        assert!(matches!(t.first(1u128 << 64, 9), FirstRow::Seen(1)));
    }
}
