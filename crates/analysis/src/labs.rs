//! Lab shift tables (`analysis.lab_shifts`): per parameter of a BDS record table such as ADLBC, each subject's
//! baseline reference-range indicator (BNRIND) against the worst indicator (ANRIND) among its post-baseline
//! records, by arm, and the new abnormalities (normal at baseline, abnormal after).

use std::collections::HashMap;

use super::*;
use crate::safety::{flags_of, record_table, subjects};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabShift {
    pub parameter: String,
    /// `subjects[baseline][worst][arm]`: baseline rows are the levels then "missing"; worst columns the levels.
    pub subjects: Vec<Vec<Vec<u64>>>,
    /// Per arm: subjects normal at baseline (the first level) whose worst post-baseline level is another, and
    /// the subjects normal at baseline with a post-baseline value (the denominator).
    pub new_abnormal: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabShifts {
    pub table: String,
    pub population: Option<String>,
    pub levels: Vec<String>,
    /// Subjects per arm in the population, reference first.
    pub arms: Vec<(String, u64)>,
    pub parameters: Vec<LabShift>,
    /// Counted records whose indicator is none of the levels (left out), subjects whose baseline indicator
    /// differs between their records (the first is kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One subject's parameter: its baseline level (index; `levels.len()` = missing) and worst level so far.
struct Shift {
    arm: usize,
    baseline: usize,
    worst: Option<usize>,
}

pub(crate) async fn lab_shifts(
    cfg: &Config,
    lake: &Storage,
    batches: &[arrow::array::RecordBatch],
    arms: &[String],
) -> Result<Option<LabShifts>> {
    let Some(l) = &cfg.analysis.lab_shifts else {
        return Ok(None);
    };
    let population = l
        .population
        .as_deref()
        .or(cfg.analysis.population.as_deref());
    let rows = rows_of(batches, population)?;
    let subjects = subjects(&rows, arms, None)?;
    let table = record_table(lake, &l.table, "the lab shift tables").await?;
    let ids = strings(&table, "subject_id")?;
    let (parameter, baseline, value) = (
        strings(&table, &l.parameter)?,
        strings(&table, &l.baseline)?,
        strings(&table, &l.value)?,
    );
    let counted = match &l.records {
        Some(f) => Some(flags_of(&table, f, &l.table)?),
        None => None,
    };
    let level = |v: &Option<String>| {
        v.as_ref().and_then(|v| {
            l.levels
                .iter()
                .position(|x| trialflow_core::codes::same(x, v))
        })
    };
    let missing = l.levels.len();
    let mut shifts: BTreeMap<String, HashMap<usize, Shift>> = BTreeMap::new();
    let (mut unknown, mut conflicting) = (0u64, 0u64);
    for i in 0..ids.len() {
        let Some(&(subject, arm)) = ids[i].as_ref().and_then(|id| subjects.index.get(id)) else {
            continue;
        };
        if counted.as_ref().is_some_and(|f| !f[i]) {
            continue;
        }
        let Some(p) = &parameter[i] else { continue };
        let here = level(&value[i]);
        if here.is_none() && value[i].is_some() {
            unknown += 1;
        }
        let base = level(&baseline[i]).unwrap_or(missing);
        let s = shifts
            .entry(p.clone())
            .or_default()
            .entry(subject)
            .or_insert(Shift {
                arm,
                baseline: base,
                worst: None,
            });
        if s.baseline != base {
            conflicting += 1;
        }
        s.worst = s.worst.max(here);
    }
    let mut notes = Vec::new();
    if unknown > 0 {
        notes.push(format!(
            "{unknown} counted records have an indicator that is none of {}: left out",
            l.levels.join(", ")
        ));
    }
    if conflicting > 0 {
        notes.push(format!(
            "{conflicting} records carry another baseline indicator than their subject's first record of the \
             parameter: the first is kept"
        ));
    }
    let k = arms.len();
    let parameters = shifts
        .into_iter()
        .map(|(parameter, by_subject)| {
            let mut table = vec![vec![vec![0u64; k]; l.levels.len()]; l.levels.len() + 1];
            let mut new_abnormal = vec![(0u64, 0u64); k];
            for s in by_subject.values() {
                let Some(worst) = s.worst else { continue };
                table[s.baseline][worst][s.arm] += 1;
                if s.baseline == 0 {
                    new_abnormal[s.arm].1 += 1;
                    if worst > 0 {
                        new_abnormal[s.arm].0 += 1;
                    }
                }
            }
            LabShift {
                parameter,
                subjects: table,
                new_abnormal,
            }
        })
        .collect();
    Ok(Some(LabShifts {
        table: l.table.clone(),
        population: population.map(str::to_string),
        levels: l.levels.clone(),
        arms: arms
            .iter()
            .cloned()
            .zip(subjects.per_arm.iter().copied())
            .collect(),
        parameters,
        notes,
    }))
}
