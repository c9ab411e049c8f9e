//! Summaries of the Kaplan–Meier curves that need no proportional hazards: the restricted mean survival time
//! per arm up to a horizon (`analysis.rmst_horizon`) and its differences against the reference, as R's
//! `print(survfit(…), rmean = τ)`; and the differences in survival at the milestone times
//! (`analysis.survival_times`) with Greenwood standard errors, as R's `summary(survfit(…), times)`.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RmstArm {
    pub arm: String,
    pub rmst: f64,
    pub se: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// An arm's value minus the reference's, with a normal 95% CI and a two-sided p-value (independent arms).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmContrast {
    pub arm: String,
    pub reference: String,
    pub estimate: f64,
    pub se: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rmst {
    pub horizon: f64,
    pub arms: Vec<RmstArm>,
    pub differences: Vec<ArmContrast>,
    /// Arms whose follow-up ends before the horizon: their curve is carried flat to it (as R does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Survival at a milestone time: an arm minus the reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Milestone {
    pub time: f64,
    #[serde(flatten)]
    pub difference: ArmContrast,
}

fn contrast(arm: &str, reference: &str, (a, sa): (f64, f64), (r, sr): (f64, f64)) -> ArmContrast {
    let estimate = a - r;
    let se = (sa * sa + sr * sr).sqrt();
    ArmContrast {
        arm: arm.to_string(),
        reference: reference.to_string(),
        estimate,
        se,
        ci_low: estimate - Z95 * se,
        ci_high: estimate + Z95 * se,
        p: libm::erfc((estimate / se).abs() / std::f64::consts::SQRT_2),
    }
}

/// The area under the curve from 0 to `tau`, and its standard error: Σ A_i² d_i / (n_i (n_i − d_i)) over the
/// event times t_i ≤ τ, A_i the area from t_i to τ (R's survmean).
fn restricted_mean(c: &KmCurve, tau: f64) -> (f64, f64) {
    // (start of a step, survival on it)
    let mut steps = vec![(0.0, 1.0)];
    steps.extend(
        c.points
            .iter()
            .filter(|p| p.events > 0 && p.time < tau)
            .map(|p| (p.time, p.survival)),
    );
    let area_from = |i: usize| -> f64 {
        (i..steps.len())
            .map(|j| {
                let end = steps.get(j + 1).map_or(tau, |s| s.0);
                steps[j].1 * (end - steps[j].0)
            })
            .sum()
    };
    let mut var = 0.0;
    let mut event_index = 0;
    for p in c.points.iter().filter(|p| p.events > 0 && p.time <= tau) {
        event_index += 1;
        let (n, d) = (p.at_risk as f64, p.events as f64);
        if n > d {
            // the step that starts at this event time is steps[event_index] (or none at τ)
            let a = if p.time < tau {
                area_from(event_index)
            } else {
                0.0
            };
            var += a * a * d / (n * (n - d));
        }
    }
    (area_from(0), var.sqrt())
}

pub(crate) fn rmst(curves: &[KmCurve], tau: f64) -> Rmst {
    let arms: Vec<RmstArm> = curves
        .iter()
        .map(|c| {
            let (rmst, se) = restricted_mean(c, tau);
            RmstArm {
                arm: c.arm.clone(),
                rmst,
                se,
                ci_low: rmst - Z95 * se,
                ci_high: rmst + Z95 * se,
            }
        })
        .collect();
    let notes = curves
        .iter()
        .filter(|c| c.points.last().is_none_or(|p| p.time < tau))
        .map(|c| {
            format!(
                "arm `{}`: follow-up ends before the horizon {tau}; its curve is carried flat to it",
                c.arm
            )
        })
        .collect();
    let differences = arms[1..]
        .iter()
        .map(|a| {
            contrast(
                &a.arm,
                &arms[0].arm,
                (a.rmst, a.se),
                (arms[0].rmst, arms[0].se),
            )
        })
        .collect();
    Rmst {
        horizon: tau,
        arms,
        differences,
        notes,
    }
}

/// Survival and its Greenwood standard error at `t`; `None` past the curve's last time.
fn survival_se(c: &KmCurve, t: f64) -> Option<(f64, f64)> {
    if c.points.last().is_none_or(|p| p.time < t) {
        return None;
    }
    let s = c.survival_at(t);
    let greenwood: f64 = c
        .points
        .iter()
        .filter(|p| p.time <= t && p.events > 0 && p.at_risk > p.events)
        .map(|p| p.events as f64 / (p.at_risk as f64 * (p.at_risk - p.events) as f64))
        .sum();
    Some((s, s * greenwood.sqrt()))
}

pub(crate) fn milestones(curves: &[KmCurve], times: &[f64]) -> Vec<Milestone> {
    let mut out = Vec::new();
    for &t in times {
        let Some(reference) = survival_se(&curves[0], t) else {
            continue;
        };
        for c in &curves[1..] {
            if let Some(arm) = survival_se(c, t) {
                out.push(Milestone {
                    time: t,
                    difference: contrast(&c.arm, &curves[0].arm, arm, reference),
                });
            }
        }
    }
    out
}
