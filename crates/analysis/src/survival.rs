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

/// A Cox model of `n` rows with `events` before its fit; without an event it is not estimable.
pub(crate) fn unfitted(cfg: &Config, covariates: &[String], n: usize, events: &[bool]) -> CoxModel {
    let events = events.iter().filter(|v| **v).count() as u64;
    CoxModel {
        ties: format!("{:?}", cfg.analysis.ties).to_lowercase(),
        covariates: covariates.to_vec(),
        n: n as u64,
        events,
        converged: false,
        iterations: 0,
        terms: Vec::new(),
        ph_test: Vec::new(),
        not_estimable: (events == 0).then(|| "no events".into()),
        variance: "model".into(),
    }
}

/// The fit's convergence into `model`, and why its estimates are not usable when they are not.
pub(crate) fn record_fit(model: &mut CoxModel, fit: &stats::CoxFit) {
    model.converged = fit.converged;
    model.iterations = fit.iterations;
    if !fit.converged {
        model.not_estimable = Some(format!(
            "did not converge within {} iterations (analysis.max_iterations)",
            fit.iterations
        ));
    } else if diverges(&fit.coef) {
        model.not_estimable = Some(
            "a coefficient diverges (monotone likelihood: an arm or level without events?)".into(),
        );
    }
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
    let (mut t, mut e, mut x, mut cl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
        cl.extend(data.clusters.as_ref().map(|c| c[i]));
    }
    let mut model = unfitted(cfg, adjust, t.len(), &e);
    if model.events == 0 {
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
        Some(mut fit) => {
            record_fit(&mut model, &fit);
            // The PH test scales residuals by the model-based variance, so it runs before the robust one.
            if let Some(ph) = stats::ph_test(&fit, &t, &e, &x) {
                model.ph_test = names
                    .iter()
                    .cloned()
                    .zip(ph)
                    .map(|(n, (c, p))| (n, c, p))
                    .collect();
            }
            if data.clusters.is_some() {
                match stats::cox_robust_covariance(&fit, &t, &e, &x, &cl) {
                    Some(cov) => {
                        fit.se = (0..fit.coef.len())
                            .map(|j| cov[j][j].max(0.0).sqrt())
                            .collect();
                        model.variance = "cluster-robust".into();
                    }
                    None => {
                        model.not_estimable =
                            Some("the cluster-robust variance cannot be computed".into())
                    }
                }
            }
            model.terms = hazard_ratios(&fit, names.len());
        }
    }
    model
}

/// R's median when the curve lies exactly on 0.5 from one event time to the next: the midpoint of the two
/// times (`survfit`'s rule); `None` when the curve does not sit on 0.5.
fn r_median(c: &stats::KmCurve) -> Option<f64> {
    let at = c
        .points
        .iter()
        .position(|p| p.events > 0 && p.survival <= 0.5)?;
    if (c.points[at].survival - 0.5).abs() > 1e-12 {
        return None;
    }
    let next = c.points[at + 1..]
        .iter()
        .find(|p| p.events > 0 && p.survival < 0.5)?;
    Some((c.points[at].time + next.time) / 2.0)
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
            r_median: r_median(c),
        }
    });
    let mut at_times = Vec::new();
    for c in &curves {
        let last = c.points.last().map(|p| p.time).unwrap_or(0.0);
        for &t in &cfg.analysis.survival_times {
            let p = c.points.iter().take_while(|p| p.time <= t).last();
            let within = t <= last;
            at_times.push(SurvivalAt {
                arm: c.arm.clone(),
                time: t,
                survival: within.then(|| c.survival_at(t)),
                ci_low: within.then(|| p.map(|p| p.ci_low).unwrap_or(1.0)),
                ci_high: within.then(|| p.map(|p| p.ci_high).unwrap_or(1.0)),
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
        time_unit: cfg
            .dataset
            .time_to_event
            .as_ref()
            .and_then(|t| t.unit.clone()),
        ci_bands: cfg.analysis.km_ci_bands,
        medians: medians.collect(),
        at_times,
        logrank_chi_square: chi,
        logrank_df: df,
        logrank_p_value: p,
        cox: cox_model(cfg, data, &[]),
        cox_adjusted: adjusted,
        stratified: crate::stratified::stratified(cfg, data),
        rmst: cfg
            .analysis
            .rmst_horizon
            .map(|tau| crate::rmst::rmst(&curves, tau)),
        milestones: crate::rmst::milestones(&curves, &cfg.analysis.survival_times),
        curves,
    })
}

/// A coefficient this large means the likelihood is monotone (an empty cell, an arm without events): the
/// estimate and its Wald test are meaningless, so they are reported as not estimable.
pub(crate) fn diverges(coef: &[f64]) -> bool {
    coef.iter().any(|b| !b.is_finite() || b.abs() > 15.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_curve_lying_on_one_half_gives_r_its_midpoint_median() {
        // S = 0.75 after t = 1, 0.5 from t = 2 to t = 4 (a censoring at 3), then 0: R's survfit says 3
        let km = stats::kaplan_meier("a", &[(1.0, true), (2.0, true), (3.0, false), (4.0, true)]);
        assert_eq!((km.median, r_median(&km)), (Some(2.0), Some(3.0)));
        // a curve that steps over 0.5 has one median for everyone
        let km = stats::kaplan_meier("b", &[(1.0, true), (2.0, true), (3.0, true)]);
        assert_eq!((km.median, r_median(&km)), (Some(2.0), None));
    }
}
