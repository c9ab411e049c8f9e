//! The disposition of every subject (`analysis.disposition`): completed, and discontinued by reason, per arm,
//! over the randomized subjects (or a population).

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DispositionRow {
    pub label: String,
    /// A reason under the discontinued row above it.
    pub reason: bool,
    /// Per arm, in `Disposition::arms` order.
    pub subjects: Vec<u64>,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disposition {
    pub status: String,
    pub reason: Option<String>,
    pub population: Option<String>,
    /// Subjects per arm (the denominators), reference first.
    pub arms: Vec<(String, u64)>,
    /// Completed, then each other status with its reasons (most frequent first), then subjects without a
    /// status.
    pub rows: Vec<DispositionRow>,
}

fn row(label: &str, reason: bool, subjects: Vec<u64>) -> DispositionRow {
    DispositionRow {
        label: label.to_string(),
        reason,
        total: subjects.iter().sum(),
        subjects,
    }
}

/// Counts per arm of each value of `values` among `rows`, most frequent first, then by value.
fn tally(
    arms: &[String],
    arm: &[Option<String>],
    values: impl Iterator<Item = (usize, String)>,
) -> Vec<(String, Vec<u64>)> {
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (i, v) in values {
        if let Some(k) = arm[i]
            .as_ref()
            .and_then(|a| arms.iter().position(|x| x == a))
        {
            counts.entry(v).or_insert_with(|| vec![0; arms.len()])[k] += 1;
        }
    }
    let mut out: Vec<(String, Vec<u64>)> = counts.into_iter().collect();
    out.sort_by(|a, b| {
        let (ta, tb): (u64, u64) = (a.1.iter().sum(), b.1.iter().sum());
        tb.cmp(&ta).then_with(|| a.0.cmp(&b.0))
    });
    out
}

pub(crate) fn disposition(
    cfg: &Config,
    batches: &[arrow::array::RecordBatch],
    arms: &[String],
) -> Result<Option<Disposition>> {
    let Some(dp) = &cfg.analysis.disposition else {
        return Ok(None);
    };
    let rows = rows_of(batches, dp.population.as_deref())?;
    let arm = strings(&rows, "arm")?;
    let status = strings(&rows, &table_column(&dp.status))?;
    let reason = match &dp.reason {
        Some(r) => Some(strings(&rows, &table_column(r))?),
        None => None,
    };
    let per_arm: Vec<u64> = arms
        .iter()
        .map(|a| arm.iter().filter(|x| x.as_deref() == Some(a)).count() as u64)
        .collect();
    let is_completed = |s: &str| {
        dp.completed
            .iter()
            .any(|c| trialflow_core::codes::same(c, s))
    };
    let mut out = Vec::new();
    let completed = tally(
        arms,
        &arm,
        status
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_deref().is_some_and(is_completed))
            .map(|(i, _)| (i, "Completed".to_string())),
    );
    out.push(row(
        "Completed",
        false,
        completed
            .into_iter()
            .next()
            .map_or(vec![0; arms.len()], |c| c.1),
    ));
    let others = tally(
        arms,
        &arm,
        status.iter().enumerate().filter_map(|(i, s)| {
            s.as_ref()
                .filter(|s| !is_completed(s))
                .map(|s| (i, s.clone()))
        }),
    );
    for (value, counts) in others {
        out.push(row(&value, false, counts));
        if let Some(reason) = &reason {
            let reasons = tally(
                arms,
                &arm,
                status
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.as_deref() == Some(value.as_str()))
                    .map(|(i, _)| {
                        (
                            i,
                            reason[i]
                                .clone()
                                .unwrap_or_else(|| "Reason not recorded".into()),
                        )
                    }),
            );
            out.extend(reasons.into_iter().map(|(r, c)| row(&r, true, c)));
        }
    }
    let missing = tally(
        arms,
        &arm,
        status
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(i, _)| (i, String::new())),
    );
    if let Some((_, counts)) = missing.into_iter().next() {
        out.push(row("Status not recorded", false, counts));
    }
    Ok(Some(Disposition {
        status: dp.status.clone(),
        reason: dp.reason.clone(),
        population: dp.population.clone(),
        arms: arms.iter().cloned().zip(per_arm).collect(),
        rows: out,
    }))
}
