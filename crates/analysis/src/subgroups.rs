//! Subgroup analyses: the treatment effect within each level of a subgroup column (hazard ratios for time to
//! event, odds ratios otherwise) and the test of the arm × level interaction.

use super::*;

/// Subgroup level of every row (None = missing), and the levels in order.
fn subgroup_levels(data: &Data, column: &str, bands: &[f64]) -> (Vec<Option<String>>, Vec<String>) {
    match &data.columns[column] {
        Column::Categorical(v) => (v.clone(), levels_of(v)),
        Column::Numeric(v) => {
            let fmt = |x: f64| {
                if x.fract() == 0.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x}")
                }
            };
            let mut labels = Vec::new();
            for k in 0..=bands.len() {
                labels.push(match (k.checked_sub(1).map(|j| bands[j]), bands.get(k)) {
                    (None, Some(hi)) => format!("< {}", fmt(*hi)),
                    (Some(lo), Some(hi)) => format!("{}–{}", fmt(lo), fmt(*hi)),
                    (Some(lo), None) => format!(">= {}", fmt(lo)),
                    (None, None) => "all".into(),
                });
            }
            let lv = v
                .iter()
                .map(|x| x.map(|x| labels[bands.iter().filter(|b| x >= **b).count()].clone()))
                .collect();
            (lv, labels)
        }
    }
}

pub(crate) fn subgroup(
    cfg: &Config,
    data: &Data,
    sg: &trialflow_core::config::SubgroupConfig,
) -> Subgroup {
    let (lv, levels) = subgroup_levels(data, &sg.column, &sg.bands);
    let measure = if data.tte.is_some() { "HR" } else { "OR" };
    let cap = cfg.analysis.max_subgroup_levels;
    if levels.len() > cap {
        return Subgroup {
            variable: sg.column.clone(),
            prespecified: sg.prespecified,
            measure: measure.into(),
            effects: Vec::new(),
            interaction_chi_square: None,
            interaction_df: 0,
            interaction_p: None,
            not_estimable: Some(format!(
                "skipped: {} levels, more than analysis.max_subgroup_levels ({cap})",
                levels.len()
            )),
        };
    }
    let mut effects = Vec::new();
    for l in &levels {
        let rows: Vec<usize> = (0..lv.len())
            .filter(|&i| lv[i].as_ref() == Some(l))
            .collect();
        for a in &data.arms[1..] {
            effects.push(subgroup_effect(cfg, data, &rows, l, a, measure));
        }
    }
    let mut out = Subgroup {
        variable: sg.column.clone(),
        prespecified: sg.prespecified,
        measure: measure.into(),
        effects,
        interaction_chi_square: None,
        interaction_df: (data.arms.len() - 1) * levels.len().saturating_sub(1),
        interaction_p: None,
        not_estimable: None,
    };
    match interaction_test(cfg, data, &lv, &levels) {
        Ok((chi, p)) => {
            out.interaction_chi_square = Some(chi);
            out.interaction_p = Some(p);
        }
        Err(why) => out.not_estimable = Some(why.into()),
    }
    out
}

/// Arm `a` against the reference within one subgroup level's `rows`: a hazard ratio (time to event) or an
/// odds ratio, or why it is not estimable.
fn subgroup_effect(
    cfg: &Config,
    data: &Data,
    rows: &[usize],
    level: &str,
    a: &str,
    measure: &str,
) -> SubgroupEffect {
    let members: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|&i| data.arm[i] == a || data.arm[i] == data.arms[0])
        .collect();
    let events = match &data.tte {
        Some((_, ev)) => members.iter().filter(|&&i| ev[i]).count() as u64,
        None => members.iter().filter(|&&i| data.outcome[i] > 0.5).count() as u64,
    };
    let result = match &data.tte {
        Some((t, ev)) => subgroup_hazard_ratio(cfg, data, &members, a, t, ev, events),
        None => subgroup_odds_ratio(data, &members, a),
    };
    let (estimate, not_estimable) = match result {
        Ok(e) => (Some(e), None),
        Err(why) => (None, Some(why)),
    };
    SubgroupEffect {
        level: level.to_string(),
        arm: a.to_string(),
        n: members.len() as u64,
        events,
        measure: measure.into(),
        estimate,
        not_estimable,
    }
}

/// The Cox hazard ratio of arm `a` among `members` (the arm and the reference).
fn subgroup_hazard_ratio(
    cfg: &Config,
    data: &Data,
    members: &[usize],
    a: &str,
    t: &[f64],
    ev: &[bool],
    events: u64,
) -> std::result::Result<Estimate, String> {
    let x: Vec<Vec<f64>> = members
        .iter()
        .map(|&i| vec![f64::from(u8::from(data.arm[i] == a))])
        .collect();
    let both_arms = x.iter().any(|v| v[0] == 1.0) && x.iter().any(|v| v[0] == 0.0);
    if events == 0 {
        return Err("no events".into());
    }
    if !both_arms {
        return Err("an arm is empty".into());
    }
    let tt: Vec<f64> = members.iter().map(|&i| t[i]).collect();
    let ee: Vec<bool> = members.iter().map(|&i| ev[i]).collect();
    match stats::cox_ph(
        vec![format!("arm={a}")],
        &tt,
        &ee,
        &x,
        ties(cfg),
        cfg.analysis.max_iterations,
    ) {
        Some(f) if f.converged && !diverges(&f.coef) && f.se[0].is_finite() => {
            let h = &hazard_ratios(&f, 1)[0];
            Ok(Estimate {
                estimate: h.hr,
                ci_low: h.ci_low,
                ci_high: h.ci_high,
            })
        }
        Some(f) => Err(format!(
            "did not converge within {} iterations",
            f.iterations
        )),
        None => Err("singular information matrix".into()),
    }
}

/// The odds ratio of arm `a` among `members` from their 2×2 table.
fn subgroup_odds_ratio(
    data: &Data,
    members: &[usize],
    a: &str,
) -> std::result::Result<Estimate, String> {
    let treated = |i: usize| data.arm[i] == a;
    let cnt = |pred: &dyn Fn(usize) -> bool| members.iter().filter(|&&i| pred(i)).count() as u64;
    let t = TwoByTwo {
        a: cnt(&|i| treated(i) && data.outcome[i] > 0.5),
        b: cnt(&|i| treated(i) && data.outcome[i] <= 0.5),
        c: cnt(&|i| !treated(i) && data.outcome[i] > 0.5),
        d: cnt(&|i| !treated(i) && data.outcome[i] <= 0.5),
    };
    if t.a * t.b * t.c * t.d == 0 {
        return Err("a cell of the 2×2 table is empty".into());
    }
    Ok(t.odds_ratio())
}

/// The interaction test: outcome ~ arm + level + arm × level over the rows with a level, a Wald test on the
/// products; `(chi-square, p)`, or why it could not be estimated.
fn interaction_test(
    cfg: &Config,
    data: &Data,
    lv: &[Option<String>],
    levels: &[String],
) -> std::result::Result<(f64, f64), &'static str> {
    let rows: Vec<usize> = (0..lv.len()).filter(|&i| lv[i].is_some()).collect();
    let na = data.arms.len() - 1;
    let nl = levels.len().saturating_sub(1);
    if nl == 0 {
        return Err("one level only");
    }
    let design = |i: usize| -> Vec<f64> {
        let arm = arm_terms(data, i);
        let lvl: Vec<f64> = levels[1..]
            .iter()
            .map(|l| f64::from(u8::from(lv[i].as_ref() == Some(l))))
            .collect();
        let mut row = arm.clone();
        row.extend(&lvl);
        for a in &arm {
            for l in &lvl {
                row.push(a * l);
            }
        }
        row
    };
    let products: Vec<usize> = (na + nl..na + nl + na * nl).collect();
    let result = match &data.tte {
        Some((t, ev)) => {
            let x: Vec<Vec<f64>> = rows.iter().map(|&i| design(i)).collect();
            let tt: Vec<f64> = rows.iter().map(|&i| t[i]).collect();
            let ee: Vec<bool> = rows.iter().map(|&i| ev[i]).collect();
            let names = (0..x.first().map_or(0, Vec::len))
                .map(|j| format!("x{j}"))
                .collect();
            stats::cox_ph(names, &tt, &ee, &x, ties(cfg), cfg.analysis.max_iterations).and_then(
                |f| {
                    let cov = stats::cox_covariance(&f, &tt, &ee, &x)?;
                    (f.converged && !diverges(&f.coef))
                        .then(|| stats::wald(&f.coef, &cov, &products))
                        .flatten()
                },
            )
        }
        None => {
            let x: Vec<Vec<f64>> = rows
                .iter()
                .map(|&i| [vec![1.0], design(i)].concat())
                .collect();
            let y: Vec<f64> = rows.iter().map(|&i| data.outcome[i]).collect();
            let shifted: Vec<usize> = products.iter().map(|p| p + 1).collect();
            stats::logistic(&x, &y, cfg.analysis.max_iterations).and_then(|f| {
                (f.converged && !diverges(&f.coef))
                    .then(|| stats::wald(&f.coef, &f.covariance, &shifted))
                    .flatten()
            })
        }
    };
    match result {
        Some((chi, _, p)) if chi.is_finite() && p.is_finite() => Ok((chi, p)),
        _ => Err("the interaction model could not be estimated (empty cells or no convergence)"),
    }
}
