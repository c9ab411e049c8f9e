//! Time to event: Kaplan–Meier curves, medians and survival at configured times, the log-rank test, Cox models
//! (unadjusted and adjusted, Efron or Breslow ties) with the Schoenfeld-residual proportional-hazards test.

use super::*;

pub(crate) fn ties(cfg: &Config) -> Ties {
    match cfg.analysis.ties {
        CoxTies::Efron => Ties::Efron,
        CoxTies::Breslow => Ties::Breslow,
    }
}

pub(crate) type TermFn<'a> = Box<dyn Fn(usize) -> Option<Vec<f64>> + 'a>;

/// Design-matrix columns for covariate `name` of row `i`: numbers as they are, categories as indicators of
/// every level but the reference (`dataset.reference_levels`, else the first in sort order). `None` when the
/// value is missing.
pub(crate) fn covariate_terms<'a>(data: &'a Data, name: &str) -> (Vec<String>, TermFn<'a>) {
    match &data.columns[name] {
        Column::Numeric(v) => (
            vec![name.to_string()],
            Box::new(move |i| v[i].map(|x| vec![x])),
        ),
        Column::Categorical(v) => {
            let mut levels = levels_of(v);
            if let Some(r) = data.references.get(name)
                && let Some(at) = levels
                    .iter()
                    .position(|l| trialflow_core::codes::same(l, r))
            {
                let reference = levels.remove(at);
                levels.insert(0, reference);
            }
            let names = levels[1..].iter().map(|l| format!("{name}={l}")).collect();
            let f = move |i: usize| {
                v[i].as_ref().map(|x| {
                    levels[1..]
                        .iter()
                        .map(|l| f64::from(u8::from(x == l)))
                        .collect()
                })
            };
            (names, Box::new(f))
        }
    }
}

pub(crate) fn arm_terms(data: &Data, i: usize) -> Vec<f64> {
    data.arms[1..]
        .iter()
        .map(|a| f64::from(u8::from(&data.arm[i] == a)))
        .collect()
}

pub(crate) fn hazard_ratios(fit: &stats::CoxFit, upto: usize) -> Vec<HazardRatio> {
    (0..upto.min(fit.coef.len()))
        .map(|j| {
            let (b, se) = (fit.coef[j], fit.se[j]);
            HazardRatio {
                term: fit.names[j].clone(),
                coef: b,
                se,
                hr: b.exp(),
                ci_low: (b - Z95 * se).exp(),
                ci_high: (b + Z95 * se).exp(),
                p: libm::erfc((b / se).abs() / std::f64::consts::SQRT_2),
            }
        })
        .collect()
}

pub(crate) fn cox_model(cfg: &Config, data: &Data, adjust: &[String]) -> CoxModel {
    let Some((times, events)) = &data.tte else {
        unreachable!("cox_model needs time-to-event data")
    };
    let mut names: Vec<String> = data.arms[1..].iter().map(|a| format!("arm={a}")).collect();
    let terms: Vec<_> = adjust.iter().map(|c| covariate_terms(data, c)).collect();
    for (n, _) in &terms {
        names.extend(n.iter().cloned());
    }
    let (mut t, mut e, mut x) = (Vec::new(), Vec::new(), Vec::new());
    'rows: for i in 0..data.arm.len() {
        let mut row = arm_terms(data, i);
        for (_, f) in &terms {
            match f(i) {
                Some(v) => row.extend(v),
                None => continue 'rows, // complete cases only
            }
        }
        t.push(times[i]);
        e.push(events[i]);
        x.push(row);
    }
    let n_events = e.iter().filter(|v| **v).count() as u64;
    let mut model = CoxModel {
        ties: format!("{:?}", cfg.analysis.ties).to_lowercase(),
        covariates: adjust.to_vec(),
        n: t.len() as u64,
        events: n_events,
        converged: false,
        iterations: 0,
        terms: Vec::new(),
        ph_test: Vec::new(),
        not_estimable: None,
    };
    if n_events == 0 {
        model.not_estimable = Some("no events".into());
        return model;
    }
    match stats::cox_ph(
        names.clone(),
        &t,
        &e,
        &x,
        ties(cfg),
        cfg.analysis.max_iterations,
    ) {
        None => {
            model.not_estimable = Some(
                "the information matrix is singular (a covariate is constant or collinear)".into(),
            )
        }
        Some(fit) => {
            model.converged = fit.converged;
            model.iterations = fit.iterations;
            if !fit.converged {
                model.not_estimable = Some(format!(
                    "did not converge within {} iterations (analysis.max_iterations)",
                    fit.iterations
                ));
            } else if diverges(&fit.coef) {
                model.not_estimable = Some(
                    "a coefficient diverges (monotone likelihood: an arm or level without events?)"
                        .into(),
                );
            }
            model.terms = hazard_ratios(&fit, names.len());
            if let Some(ph) = stats::ph_test(&fit, &t, &e, &x) {
                model.ph_test = names
                    .iter()
                    .cloned()
                    .zip(ph)
                    .map(|(n, (c, p))| (n, c, p))
                    .collect();
            }
        }
    }
    model
}

pub(crate) fn survival(cfg: &Config, data: &Data) -> Option<Survival> {
    let (times, events) = data.tte.as_ref()?;
    let curves: Vec<KmCurve> = data
        .arms
        .iter()
        .map(|a| {
            let obs: Vec<(f64, bool)> = (0..times.len())
                .filter(|&i| &data.arm[i] == a)
                .map(|i| (times[i], events[i]))
                .collect();
            stats::kaplan_meier(a, &obs)
        })
        .collect();
    let medians = curves.iter().map(|c| {
        let (ci_low, ci_high) = c.median_ci();
        Median {
            arm: c.arm.clone(),
            median: c.median,
            ci_low,
            ci_high,
        }
    });
    let mut at_times = Vec::new();
    for c in &curves {
        for &t in &cfg.analysis.survival_times {
            let p = c.points.iter().take_while(|p| p.time <= t).last();
            at_times.push(SurvivalAt {
                arm: c.arm.clone(),
                time: t,
                survival: c.survival_at(t),
                ci_low: p.map(|p| p.ci_low).unwrap_or(1.0),
                ci_high: p.map(|p| p.ci_high).unwrap_or(1.0),
                at_risk: c.at_risk_at(t),
            });
        }
    }
    let groups: Vec<Vec<(f64, bool)>> = data
        .arms
        .iter()
        .map(|a| {
            (0..times.len())
                .filter(|&i| &data.arm[i] == a)
                .map(|i| (times[i], events[i]))
                .collect()
        })
        .collect();
    let (chi, df, p) = stats::logrank(&groups);
    let adjusted =
        (!cfg.analysis.adjust.is_empty()).then(|| cox_model(cfg, data, &cfg.analysis.adjust));
    Some(Survival {
        medians: medians.collect(),
        curves,
        at_times,
        logrank_chi_square: chi,
        logrank_df: df,
        logrank_p_value: p,
        cox: cox_model(cfg, data, &[]),
        cox_adjusted: adjusted,
    })
}

/// A coefficient this large means the likelihood is monotone (an empty cell, an arm without events): the
/// estimate and its Wald test are meaningless, so they are reported as not estimable.
pub(crate) fn diverges(coef: &[f64]) -> bool {
    coef.iter().any(|b| !b.is_finite() || b.abs() > 15.0)
}
