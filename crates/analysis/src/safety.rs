//! The safety tables (`analysis.safety`): from a record table such as ADAE, over the subjects of a population,
//! the subjects and events by arm — an overview (any event, then each configured flag), by system organ class
//! and preferred term sorted by overall frequency with each arm's risk difference against the reference, by
//! maximum severity, and exposure-adjusted incidence rates with exact Poisson intervals.

use std::collections::{HashMap, HashSet};

use arrow::array::Array;

use super::*;
use trialflow_core::config::flag_column;
use trialflow_core::table::read_parquet_file;

/// One row of a safety table: subjects with at least one counted record, and the records, per arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SafetyRow {
    pub label: String,
    /// Per arm, in `Safety::arms` order.
    pub subjects: Vec<u64>,
    pub events: Vec<u64>,
    /// Subjects over every arm.
    pub total_subjects: u64,
    /// Each other arm's proportion of subjects minus the reference's, Wald 95% CI; `None` for an arm without
    /// subjects in the population.
    pub risk_differences: Vec<Option<Estimate>>,
    /// Per arm, subjects with a counted record per 100 patient-years of exposure with its exact Poisson 95%
    /// CI (with `exposure`); `None` for an arm without exposure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rates: Vec<Option<Estimate>>,
}

/// A system organ class and its preferred terms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocRows {
    pub soc: SafetyRow,
    pub terms: Vec<SafetyRow>,
}

/// Subjects by the worst severity among their counted records, per arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeverityRows {
    pub column: String,
    pub levels: Vec<String>,
    /// `subjects[level][arm]`.
    pub subjects: Vec<Vec<u64>>,
    /// Counted records whose severity is missing or not among `levels` (not in the table).
    pub unknown_records: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Safety {
    pub table: String,
    pub population: Option<String>,
    /// The flag of the counted records (`None`: every record).
    pub events: Option<String>,
    /// Subjects per arm in the population (the denominators), reference first.
    pub arms: Vec<(String, u64)>,
    /// Patient-years of exposure per arm (with `exposure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patient_years: Vec<f64>,
    /// Records of the table; of them, those of subjects outside the population, and those counted.
    pub records: u64,
    pub outside_population: u64,
    pub counted: u64,
    pub overview: Vec<SafetyRow>,
    pub by_soc: Vec<SocRows>,
    pub severity: Option<SeverityRows>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A counted record: its subject's arm (index), and the columns the tables read.
struct Record {
    subject: usize,
    arm: usize,
    soc: Option<String>,
    term: Option<String>,
    severity: Option<String>,
    flags: Vec<bool>,
}

/// The population's subjects: id → (subject number, arm index), and per arm the count and exposure.
pub(crate) struct Subjects {
    pub(crate) index: HashMap<String, (usize, usize)>,
    pub(crate) per_arm: Vec<u64>,
    years: Vec<f64>,
    missing_exposure: u64,
}

fn years_per_unit(unit: &str) -> f64 {
    match unit {
        "weeks" => 7.0 / 365.25,
        "months" => 1.0 / 12.0,
        "years" => 1.0,
        _ => 1.0 / 365.25,
    }
}

/// The population's subjects (`rows`), numbered, with their arm; and per arm their exposure in years from
/// `exposure` (column, unit) when given.
pub(crate) fn subjects(
    rows: &[arrow::array::RecordBatch],
    arms: &[String],
    exposure: Option<(&str, &str)>,
) -> Result<Subjects> {
    let ids = strings(rows, "subject_id")?;
    let arm = strings(rows, "arm")?;
    let (exposure, unit) = match exposure {
        Some((c, unit)) => (Some(floats(rows, &table_column(c))?), unit),
        None => (None, "days"),
    };
    let per_year = years_per_unit(unit);
    let mut out = Subjects {
        index: HashMap::new(),
        per_arm: vec![0; arms.len()],
        years: vec![0.0; arms.len()],
        missing_exposure: 0,
    };
    for (i, (id, a)) in ids.iter().zip(&arm).enumerate() {
        let (Some(id), Some(a)) = (id, a) else {
            continue;
        };
        let Some(k) = arms.iter().position(|x| x == a) else {
            continue;
        };
        out.per_arm[k] += 1;
        match exposure.as_ref().map(|e| e[i]) {
            Some(Some(v)) => out.years[k] += v * per_year,
            Some(None) => out.missing_exposure += 1,
            None => {}
        }
        let n = out.index.len();
        out.index.insert(id.clone(), (n, k));
    }
    Ok(out)
}

pub(crate) fn flags_of(
    batches: &[arrow::array::RecordBatch],
    name: &str,
    table: &str,
) -> Result<Vec<bool>> {
    let column = flag_column(name);
    let mut out = Vec::new();
    for b in batches {
        let a = b
            .column_by_name(&column)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::BooleanArray>())
            .ok_or_else(|| {
                bad(format!(
                    "record table `{table}` has no flag column `{column}`: run the clean task again"
                ))
            })?;
        out.extend((0..a.len()).map(|i| a.is_valid(i) && a.value(i)));
    }
    Ok(out)
}

/// The clean records of record table `table`, which `what` reads.
pub(crate) async fn record_table(
    lake: &Storage,
    table: &str,
    what: &str,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let path = lake::table_clean_file(table);
    if lake.head(&path).await?.is_none() {
        return Err(bad(format!(
            "{what} read record table `{table}`, which has no clean records ({}): run the clean task again",
            lake.display(&path)
        )));
    }
    read_parquet_file(lake, &path).await
}

/// The safety tables over `rows` (the population's rows of the clean table), with `arms` from the whole clean
/// table so that an arm without subjects in the population is shown, and said.
pub(crate) async fn safety(
    cfg: &Config,
    lake: &Storage,
    batches: &[arrow::array::RecordBatch],
    arms: &[String],
) -> Result<Option<Safety>> {
    let Some(s) = &cfg.analysis.safety else {
        return Ok(None);
    };
    let population = s
        .population
        .as_deref()
        .or(cfg.analysis.population.as_deref());
    let rows = rows_of(batches, population)?;
    let exposure = s.exposure.as_deref().map(|c| (c, s.exposure_unit.as_str()));
    let subjects = subjects(&rows, arms, exposure)?;
    let table = record_table(lake, &s.table, "the safety tables").await?;
    let ids = strings(&table, "subject_id")?;
    let column = |c: &str| strings(&table, c);
    let (soc, term) = (column(&s.soc)?, column(&s.term)?);
    let severity = match &s.severity {
        Some(v) => Some(column(&v.column)?),
        None => None,
    };
    let counted_flag = match &s.events {
        Some(f) => Some(flags_of(&table, f, &s.table)?),
        None => None,
    };
    let overview_flags = s
        .overview
        .iter()
        .map(|f| flags_of(&table, f, &s.table))
        .collect::<Result<Vec<_>>>()?;
    let mut records = Vec::new();
    let mut outside = 0u64;
    for (i, id) in ids.iter().enumerate() {
        let Some(&(subject, arm)) = id.as_ref().and_then(|id| subjects.index.get(id)) else {
            outside += 1;
            continue;
        };
        if counted_flag.as_ref().is_some_and(|f| !f[i]) {
            continue;
        }
        records.push(Record {
            subject,
            arm,
            soc: soc[i].clone(),
            term: term[i].clone(),
            severity: severity.as_ref().and_then(|v| v[i].clone()),
            flags: overview_flags.iter().map(|f| f[i]).collect(),
        });
    }
    let mut notes = Vec::new();
    for (a, n) in arms.iter().zip(&subjects.per_arm) {
        if *n == 0 {
            notes.push(format!(
                "arm `{a}` has no subject in the {}: its percentages and comparisons are not computed",
                population.map_or("analysis".to_string(), |p| format!("{p} population"))
            ));
        }
    }
    if outside > 0 {
        notes.push(format!(
            "{outside} records of `{}` belong to subjects outside the {} and are not counted",
            s.table,
            population.map_or("clean table".to_string(), |p| format!("{p} population"))
        ));
    }
    if subjects.missing_exposure > 0 {
        notes.push(format!(
            "{} subjects have no exposure (`{}`): they add no patient-years to the incidence rates",
            subjects.missing_exposure,
            s.exposure.as_deref().unwrap_or_default()
        ));
    }
    let tally = Tally {
        per_arm: &subjects.per_arm,
        years: s.exposure.as_ref().map(|_| subjects.years.as_slice()),
    };
    let mut overview = vec![tally.row("any event".into(), records.iter())];
    for (k, f) in s.overview.iter().enumerate() {
        overview.push(tally.row(f.clone(), records.iter().filter(|r| r.flags[k])));
    }
    let by_soc = by_soc(&tally, &records, &mut notes);
    let severity = s.severity.as_ref().map(|v| {
        let (subjects, unknown_records) = worst_severity(&records, &v.levels, arms.len());
        SeverityRows {
            column: v.column.clone(),
            levels: v.levels.clone(),
            subjects,
            unknown_records,
        }
    });
    Ok(Some(Safety {
        table: s.table.clone(),
        population: population.map(str::to_string),
        events: s.events.clone(),
        arms: arms
            .iter()
            .cloned()
            .zip(subjects.per_arm.iter().copied())
            .collect(),
        patient_years: if s.exposure.is_some() {
            subjects.years.clone()
        } else {
            Vec::new()
        },
        records: ids.len() as u64,
        outside_population: outside,
        counted: records.len() as u64,
        overview,
        by_soc,
        severity,
        notes,
    }))
}

/// The denominators of every row.
struct Tally<'a> {
    per_arm: &'a [u64],
    years: Option<&'a [f64]>,
}

impl Tally<'_> {
    fn row<'r>(&self, label: String, records: impl Iterator<Item = &'r Record>) -> SafetyRow {
        let arms = self.per_arm.len();
        let mut seen = HashSet::new();
        let (mut subjects, mut events) = (vec![0u64; arms], vec![0u64; arms]);
        for r in records {
            events[r.arm] += 1;
            if seen.insert(r.subject) {
                subjects[r.arm] += 1;
            }
        }
        let n = |k: usize| self.per_arm[k];
        let risk_differences = (1..arms)
            .map(|k| {
                (n(k) > 0 && n(0) > 0).then(|| {
                    TwoByTwo {
                        a: subjects[k],
                        b: n(k) - subjects[k],
                        c: subjects[0],
                        d: n(0) - subjects[0],
                    }
                    .risk_difference()
                })
            })
            .collect();
        let rates = self
            .years
            .map(|years| {
                (0..arms)
                    .map(|k| {
                        (years[k] > 0.0).then(|| {
                            let (lo, hi) = stats::poisson_ci(subjects[k]);
                            let per = 100.0 / years[k];
                            Estimate {
                                estimate: subjects[k] as f64 * per,
                                ci_low: lo * per,
                                ci_high: hi * per,
                            }
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        SafetyRow {
            label,
            total_subjects: subjects.iter().sum(),
            subjects,
            events,
            risk_differences,
            rates,
        }
    }
}

/// Rows sorted by subjects over every arm, most first, then by label (byte order).
fn by_frequency(rows: &mut [SafetyRow]) {
    rows.sort_by(|a, b| {
        b.total_subjects
            .cmp(&a.total_subjects)
            .then_with(|| a.label.cmp(&b.label))
    });
}

fn by_soc(tally: &Tally<'_>, records: &[Record], notes: &mut Vec<String>) -> Vec<SocRows> {
    let mut groups: BTreeMap<&str, BTreeMap<&str, Vec<&Record>>> = BTreeMap::new();
    let mut uncoded = 0u64;
    for r in records {
        match (&r.soc, &r.term) {
            (Some(s), Some(t)) => groups
                .entry(s.as_str())
                .or_default()
                .entry(t.as_str())
                .or_default()
                .push(r),
            _ => uncoded += 1,
        }
    }
    if uncoded > 0 {
        notes.push(format!(
            "{uncoded} counted records have no system organ class or preferred term: in the overview, not in \
             the tables by term"
        ));
    }
    let mut out: Vec<SocRows> = groups
        .into_iter()
        .map(|(soc, terms)| {
            let all = terms.values().flatten().copied();
            let soc_row = tally.row(soc.to_string(), all);
            let mut term_rows: Vec<SafetyRow> = terms
                .into_iter()
                .map(|(t, rs)| tally.row(t.to_string(), rs.into_iter()))
                .collect();
            by_frequency(&mut term_rows);
            SocRows {
                soc: soc_row,
                terms: term_rows,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.soc
            .total_subjects
            .cmp(&a.soc.total_subjects)
            .then_with(|| a.soc.label.cmp(&b.soc.label))
    });
    out
}

/// `subjects[level][arm]` by each subject's worst level, and the records whose level is unknown.
fn worst_severity(records: &[Record], levels: &[String], arms: usize) -> (Vec<Vec<u64>>, u64) {
    let mut worst: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut unknown = 0u64;
    for r in records {
        let level = r.severity.as_ref().and_then(|v| {
            levels
                .iter()
                .position(|l| trialflow_core::codes::same(l, v))
        });
        let Some(level) = level else {
            unknown += 1;
            continue;
        };
        let e = worst.entry(r.subject).or_insert((level, r.arm));
        e.0 = e.0.max(level);
    }
    let mut table = vec![vec![0u64; arms]; levels.len()];
    for (level, arm) in worst.into_values() {
        table[level][arm] += 1;
    }
    (table, unknown)
}
