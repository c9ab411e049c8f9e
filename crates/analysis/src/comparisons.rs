//! The binary outcome by arm and each arm against the reference: risk difference, risk ratio and odds ratio
//! with 95% CIs, χ² and Fisher's exact test.

use super::*;

pub(crate) fn comparisons(data: &Data) -> (Vec<ArmOutcome>, Vec<Comparison>) {
    let mut counts: BTreeMap<&String, (u64, u64)> = BTreeMap::new();
    for (a, y) in data.arm.iter().zip(&data.outcome) {
        let e = counts.entry(a).or_default();
        e.0 += 1;
        e.1 += u64::from(*y > 0.5);
    }
    let arms = data
        .arms
        .iter()
        .map(|a| {
            let (n, e) = counts[a];
            ArmOutcome {
                arm: a.clone(),
                n,
                events: e,
                risk: e as f64 / n as f64,
            }
        })
        .collect();
    let (rn, re) = counts[&data.arms[0]];
    let comps = data.arms[1..]
        .iter()
        .map(|a| {
            let (n, e) = counts[a];
            let t = TwoByTwo {
                a: e,
                b: n - e,
                c: re,
                d: rn - re,
            };
            let (chi, p) = t.chi_square();
            let finite = |x: Estimate| {
                (x.estimate.is_finite() && x.ci_low.is_finite() && x.ci_high.is_finite())
                    .then_some(x)
            };
            Comparison {
                arm: a.clone(),
                reference: data.arms[0].clone(),
                risk_difference: t.risk_difference(),
                risk_ratio: finite(t.risk_ratio()),
                odds_ratio: finite(t.odds_ratio()),
                chi_square: chi.is_finite().then_some(chi),
                chi_square_p: p.is_finite().then_some(p),
                fisher_p: stats::fisher_exact(&t),
            }
        })
        .collect();
    (arms, comps)
}
