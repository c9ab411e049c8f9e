//! The time to event stratified as the protocol pre-specifies (`analysis.strata`): the log-rank test summed over
//! strata and the Cox model of the arm with a baseline hazard per stratum, as R's `survdiff(… + strata(s))` and
//! `coxph(… + strata(s))`.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stratified {
    /// The stratification columns; a stratum is one combination of their levels.
    pub strata: Vec<String>,
    /// (stratum, rows) for every stratum, its levels joined by " / ".
    pub levels: Vec<(String, u64)>,
    pub logrank_chi_square: f64,
    pub logrank_df: usize,
    pub logrank_p_value: f64,
    pub cox: CoxModel,
    /// Rows without a stratum (left out), strata of one subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Each row's stratum (`None` where a stratification value is missing).
fn strata_of(data: &Data, columns: &[String]) -> Vec<Option<String>> {
    (0..data.arm.len())
        .map(|i| {
            columns
                .iter()
                .map(|c| match data.columns.get(c) {
                    Some(Column::Categorical(v)) => v[i].clone(),
                    Some(Column::Numeric(v)) => v[i].map(|x| x.to_string()),
                    None => None,
                })
                .collect::<Option<Vec<String>>>()
                .map(|levels| levels.join(" / "))
        })
        .collect()
}

pub(crate) fn stratified(cfg: &Config, data: &Data) -> Option<Stratified> {
    let columns = &cfg.analysis.strata;
    if columns.is_empty() {
        return None;
    }
    let (times, events) = data.tte.as_ref()?;
    let strata = strata_of(data, columns);
    let mut by_stratum: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut missing = 0u64;
    for (i, s) in strata.iter().enumerate() {
        match s {
            Some(s) => by_stratum.entry(s.clone()).or_default().push(i),
            None => missing += 1,
        }
    }
    let mut notes = Vec::new();
    if missing > 0 {
        notes.push(format!(
            "{missing} rows have no value for a stratification column: left out of the stratified analyses"
        ));
    }
    for (s, rows) in &by_stratum {
        if rows.len() == 1 {
            notes.push(format!(
                "stratum `{s}` has one subject: it adds nothing to the stratified test or model"
            ));
        }
    }
    let k = data.arms.len();
    let (mut o_minus_e, mut var) = (vec![0.0; k], vec![vec![0.0; k]; k]);
    for rows in by_stratum.values() {
        let groups: Vec<Vec<(f64, bool)>> = data
            .arms
            .iter()
            .map(|a| {
                rows.iter()
                    .filter(|&&i| &data.arm[i] == a)
                    .map(|&i| (times[i], events[i]))
                    .collect()
            })
            .collect();
        stats::logrank_add(&groups, &mut o_minus_e, &mut var);
    }
    let (chi, df, p) = stats::logrank_statistic(&o_minus_e, &var);
    Some(Stratified {
        strata: columns.clone(),
        levels: by_stratum
            .iter()
            .map(|(s, rows)| (s.clone(), rows.len() as u64))
            .collect(),
        logrank_chi_square: chi,
        logrank_df: df,
        logrank_p_value: p,
        cox: stratified_cox(cfg, data, (times, events), &by_stratum),
        notes,
    })
}

/// One stratum's times, events and arm indicators.
type StratumRows = (Vec<f64>, Vec<bool>, Vec<Vec<f64>>);

/// The Cox model of the arm alone, its partial likelihood summed over the strata's own risk sets.
fn stratified_cox(
    cfg: &Config,
    data: &Data,
    (times, events): (&[f64], &[bool]),
    by_stratum: &BTreeMap<String, Vec<usize>>,
) -> CoxModel {
    let names: Vec<String> = data.arms[1..].iter().map(|a| format!("arm={a}")).collect();
    let parts: Vec<StratumRows> = by_stratum
        .values()
        .map(|rows| {
            (
                rows.iter().map(|&i| times[i]).collect(),
                rows.iter().map(|&i| events[i]).collect(),
                rows.iter().map(|&i| arm_terms(data, i)).collect(),
            )
        })
        .collect();
    let n: usize = parts.iter().map(|p| p.0.len()).sum();
    let all_events: Vec<bool> = parts.iter().flat_map(|p| p.1.iter().copied()).collect();
    let mut model = crate::survival::unfitted(cfg, &[], n, &all_events);
    if model.events == 0 {
        return model;
    }
    let ties = ties(cfg);
    let p = names.len();
    let derivs = |beta: &[f64]| {
        let mut total: stats::CoxDerivs = (0.0, vec![0.0; p], vec![vec![0.0; p]; p]);
        for (t, e, x) in &parts {
            let (ll, u, info) = stats::cox_derivs(t, e, x, beta, ties);
            total.0 += ll;
            for (a, b) in total.1.iter_mut().zip(u) {
                *a += b;
            }
            for (ra, rb) in total.2.iter_mut().zip(info) {
                for (a, b) in ra.iter_mut().zip(rb) {
                    *a += b;
                }
            }
        }
        total
    };
    match stats::cox_ph_with(names.clone(), derivs, ties, cfg.analysis.max_iterations) {
        None => {
            model.not_estimable = Some(
                "the information matrix is singular (an arm without events in every stratum?)"
                    .into(),
            )
        }
        Some(fit) => {
            crate::survival::record_fit(&mut model, &fit);
            model.terms = hazard_ratios(&fit, p);
        }
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(stratum: Vec<Option<&str>>) -> Data {
        let arm: Vec<String> = ["A", "B", "A", "B", "A", "B", "A", "B"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let t = vec![5.0, 3.0, 8.0, 2.0, 6.0, 4.0, 9.0, 1.0];
        let e = vec![true, true, false, true, true, true, true, false];
        Data {
            arms: vec!["A".into(), "B".into()],
            outcome: vec![0.0; 8],
            has_outcome: vec![true; 8],
            arm,
            tte: Some((t, e)),
            columns: [(
                "s".to_string(),
                Column::Categorical(stratum.into_iter().map(|v| v.map(str::to_string)).collect()),
            )]
            .into(),
            references: BTreeMap::new(),
            competing: Vec::new(),
            clusters: None,
        }
    }

    fn config() -> Config {
        let dir = tempfile::tempdir().unwrap();
        let mut c = crate::tests::config(dir.path(), "");
        c.analysis.strata = vec!["s".into()];
        c
    }

    #[test]
    fn one_stratum_is_the_plain_log_rank() {
        let d = data(vec![Some("x"); 8]);
        let st = stratified(&config(), &d).unwrap();
        let groups: Vec<Vec<(f64, bool)>> = ["A", "B"]
            .iter()
            .map(|a| {
                let (t, e) = d.tte.as_ref().unwrap();
                (0..8)
                    .filter(|&i| d.arm[i] == *a)
                    .map(|i| (t[i], e[i]))
                    .collect()
            })
            .collect();
        let (chi, _, _) = stats::logrank(&groups);
        assert!((st.logrank_chi_square - chi).abs() < 1e-12);
        assert!(st.notes.is_empty());
    }

    #[test]
    fn a_stratum_of_one_and_rows_without_a_stratum_are_said() {
        let d = data(vec![
            Some("x"),
            Some("x"),
            Some("x"),
            Some("x"),
            Some("y"),
            None,
            Some("x"),
            Some("x"),
        ]);
        let st = stratified(&config(), &d).unwrap();
        assert!(st.logrank_chi_square.is_finite());
        assert!(
            st.notes
                .iter()
                .any(|n| n.contains("stratum `y` has one subject"))
        );
        assert!(
            st.notes
                .iter()
                .any(|n| n.starts_with("1 rows have no value"))
        );
        assert_eq!(st.levels, vec![("x".to_string(), 6), ("y".to_string(), 1)]);
    }
}
