//! The statistics themselves, as plain functions over counts and (time, event) pairs.

use serde::{Deserialize, Serialize};

const Z95: f64 = 1.959_963_984_540_054;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Estimate {
    pub estimate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Rows: arm (events a, non-events b) versus reference (events c, non-events d).
#[derive(Debug, Clone, Copy)]
pub struct TwoByTwo {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub d: u64,
}

impl TwoByTwo {
    fn f(&self) -> (f64, f64, f64, f64) {
        (self.a as f64, self.b as f64, self.c as f64, self.d as f64)
    }

    pub fn risk_difference(&self) -> Estimate {
        let (a, b, c, d) = self.f();
        let (p1, p0) = (a / (a + b), c / (c + d));
        let se = (p1 * (1.0 - p1) / (a + b) + p0 * (1.0 - p0) / (c + d)).sqrt();
        Estimate {
            estimate: p1 - p0,
            ci_low: p1 - p0 - Z95 * se,
            ci_high: p1 - p0 + Z95 * se,
        }
    }

    pub fn risk_ratio(&self) -> Estimate {
        let (a, b, c, d) = self.f();
        let rr = (a / (a + b)) / (c / (c + d));
        let se = (1.0 / a - 1.0 / (a + b) + 1.0 / c - 1.0 / (c + d)).sqrt();
        Estimate {
            estimate: rr,
            ci_low: rr * (-Z95 * se).exp(),
            ci_high: rr * (Z95 * se).exp(),
        }
    }

    pub fn odds_ratio(&self) -> Estimate {
        let (a, b, c, d) = self.f();
        let or = (a * d) / (b * c);
        let se = (1.0 / a + 1.0 / b + 1.0 / c + 1.0 / d).sqrt();
        Estimate {
            estimate: or,
            ci_low: or * (-Z95 * se).exp(),
            ci_high: or * (Z95 * se).exp(),
        }
    }

    /// Pearson chi-square without continuity correction and its p-value (1 df).
    pub fn chi_square(&self) -> (f64, f64) {
        let (a, b, c, d) = self.f();
        let n = a + b + c + d;
        let denom = (a + b) * (c + d) * (a + c) * (b + d);
        if denom == 0.0 {
            return (f64::NAN, f64::NAN);
        }
        let x = n * (a * d - b * c).powi(2) / denom;
        (x, chi2_sf(x, 1))
    }
}

/// Survival function of the chi-square distribution: Q(df/2, x/2), the regularized upper incomplete gamma.
pub fn chi2_sf(x: f64, df: usize) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if df == 1 {
        return libm::erfc((x / 2.0).sqrt());
    }
    gamma_q(df as f64 / 2.0, x / 2.0)
}

/// The point of [lo, hi] where the increasing `cdf` reaches `p`, by bisection to `scale`'s last bit.
fn invert(cdf: impl Fn(f64) -> f64, p: f64, (mut lo, mut hi): (f64, f64), scale: f64) -> f64 {
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= f64::EPSILON * mid.abs().max(scale) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// The `p` quantile of the gamma distribution of shape `a` and scale 1, by bisection on [`gamma_q`].
pub fn gamma_quantile(p: f64, a: f64) -> f64 {
    invert(
        |x| 1.0 - gamma_q(a, x),
        p,
        (0.0, a + 10.0 * a.sqrt() + 50.0),
        1e-300,
    )
}

/// The exact (Garwood) 95% interval of a Poisson mean from `n` observed events, R's `poisson.test`.
pub fn poisson_ci(n: u64) -> (f64, f64) {
    let n = n as f64;
    let lower = if n == 0.0 {
        0.0
    } else {
        gamma_quantile(0.025, n)
    };
    (lower, gamma_quantile(0.975, n + 1.0))
}

fn gamma_q(a: f64, x: f64) -> f64 {
    let gln = libm::lgamma(a);
    if x < a + 1.0 {
        // series for P, then Q = 1 - P
        let (mut sum, mut del, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        1.0 - sum * (-x + a * x.ln() - gln).exp()
    } else {
        // Lentz's continued fraction for Q
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x + a * x.ln() - gln).exp() * h
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KmPoint {
    pub time: f64,
    pub at_risk: u64,
    pub events: u64,
    pub censored: u64,
    pub survival: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KmCurve {
    pub arm: String,
    pub n: u64,
    pub events: u64,
    /// Smallest time with survival <= 0.5, if reached.
    pub median: Option<f64>,
    pub points: Vec<KmPoint>,
}

/// Kaplan–Meier with Greenwood variance and log(-log) 95% CIs (lifelines' and R's `conf.type = "log-log"`).
pub fn kaplan_meier(arm: &str, obs: &[(f64, bool)]) -> KmCurve {
    let mut v = obs.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut at_risk = v.len() as u64;
    let (mut s, mut greenwood) = (1.0f64, 0.0f64);
    let mut points = Vec::new();
    let mut median = None;
    let mut i = 0;
    while i < v.len() {
        let t = v[i].0;
        let (mut d, mut c) = (0u64, 0u64);
        while i < v.len() && v[i].0 == t {
            if v[i].1 {
                d += 1
            } else {
                c += 1
            }
            i += 1;
        }
        if d > 0 {
            let n = at_risk as f64;
            s *= 1.0 - d as f64 / n;
            if at_risk > d {
                greenwood += d as f64 / (n * (n - d as f64));
            }
        }
        let (lo, hi) = if s > 0.0 && s < 1.0 {
            let se = greenwood.sqrt() / s.ln().abs();
            let l = (-s.ln()).ln();
            ((-(l + Z95 * se).exp()).exp(), (-(l - Z95 * se).exp()).exp())
        } else {
            (s, s)
        };
        if median.is_none() && s <= 0.5 {
            median = Some(t);
        }
        points.push(KmPoint {
            time: t,
            at_risk,
            events: d,
            censored: c,
            survival: s,
            ci_low: lo,
            ci_high: hi,
        });
        at_risk -= d + c;
    }
    KmCurve {
        arm: arm.to_string(),
        n: obs.len() as u64,
        events: obs.iter().filter(|o| o.1).count() as u64,
        median,
        points,
    }
}

/// k-sample log-rank test: (chi-square, df, p-value).
pub fn logrank(groups: &[Vec<(f64, bool)>]) -> (f64, usize, f64) {
    let k = groups.len();
    if k < 2 {
        return (f64::NAN, 0, f64::NAN);
    }
    let mut o_minus_e = vec![0.0; k];
    let mut var = vec![vec![0.0; k]; k];
    logrank_add(groups, &mut o_minus_e, &mut var);
    logrank_statistic(&o_minus_e, &var)
}

/// Adds the observed-minus-expected events of each group and their covariance over the event times of
/// `groups` (one stratum) to `o_minus_e` and `var`.
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with explicit indices
pub(crate) fn logrank_add(
    groups: &[Vec<(f64, bool)>],
    o_minus_e: &mut [f64],
    var: &mut [Vec<f64>],
) {
    let k = groups.len();
    let mut times: Vec<f64> = groups
        .iter()
        .flatten()
        .filter(|o| o.1)
        .map(|o| o.0)
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    for &t in &times {
        let n: Vec<f64> = groups
            .iter()
            .map(|g| g.iter().filter(|o| o.0 >= t).count() as f64)
            .collect();
        let d: Vec<f64> = groups
            .iter()
            .map(|g| g.iter().filter(|o| o.0 == t && o.1).count() as f64)
            .collect();
        let (nt, dt): (f64, f64) = (n.iter().sum(), d.iter().sum());
        if nt <= 1.0 {
            for j in 0..k {
                o_minus_e[j] += d[j] - dt * n[j] / nt.max(1.0);
            }
            continue;
        }
        let f = dt * (nt - dt) / (nt * nt * (nt - 1.0));
        for j in 0..k {
            o_minus_e[j] += d[j] - dt * n[j] / nt;
            for l in 0..k {
                let delta = if j == l { 1.0 } else { 0.0 };
                var[j][l] += f * n[j] * (nt * delta - n[l]);
            }
        }
    }
}

/// The log-rank chi-square of accumulated (O - E) and covariance: (chi-square, df, p-value).
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with explicit indices
pub(crate) fn logrank_statistic(o_minus_e: &[f64], var: &[Vec<f64>]) -> (f64, usize, f64) {
    let k = o_minus_e.len();
    // Drop the last group; solve V x = (O - E) on the rest.
    let m = k - 1;
    let mut a: Vec<Vec<f64>> = (0..m)
        .map(|i| {
            let mut row = var[i][..m].to_vec();
            row.push(o_minus_e[i]);
            row
        })
        .collect();
    for col in 0..m {
        let pivot = (col..m)
            .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        let p = a[col][col];
        if p.abs() < 1e-300 {
            return (f64::NAN, m, f64::NAN);
        }
        for r in 0..m {
            if r != col {
                let factor = a[r][col] / p;
                for c in col..=m {
                    a[r][c] -= factor * a[col][c];
                }
            }
        }
    }
    let chi: f64 = (0..m).map(|i| o_minus_e[i] * a[i][m] / a[i][i]).sum();
    (chi, m, chi2_sf(chi, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2_sf_known_values() {
        // scipy.stats.chi2.sf(3.841458820694124, 1) = 0.05; chi2.sf(5.991464547107979, 2) = 0.05
        assert!((chi2_sf(3.841_458_820_694_124, 1) - 0.05).abs() < 1e-12);
        assert!((chi2_sf(5.991_464_547_107_979, 2) - 0.05).abs() < 1e-10);
        assert!((chi2_sf(20.0, 5) - 0.001_249_730_563_417_881_5).abs() < 1e-12);
    }

    #[test]
    fn km_product_limit_by_hand() {
        // times 1(e) 2(c) 3(e) 3(e) 4(c): S(1)=4/5, S(3)=4/5*(1-2/3)=4/15
        let c = kaplan_meier(
            "x",
            &[
                (1.0, true),
                (2.0, false),
                (3.0, true),
                (3.0, true),
                (4.0, false),
            ],
        );
        assert!((c.points[0].survival - 0.8).abs() < 1e-12);
        assert!((c.points[2].survival - 4.0 / 15.0).abs() < 1e-12);
        assert_eq!(c.median, Some(3.0));
    }

    #[test]
    fn logrank_two_groups_matches_closed_form() {
        // Two groups, one event each at distinct times: computed by hand from survdiff's formulas.
        let g1 = vec![(1.0, true), (3.0, false)];
        let g2 = vec![(2.0, true), (4.0, false)];
        let (chi, df, p) = logrank(&[g1, g2]);
        // t=1: n=(2,2) d=(1,0): O-E=0.5, V=0.25; t=2: n=(1,2) d=(0,1): O-E=-1/3, V=2/9
        let expect = (0.5f64 - 1.0 / 3.0).powi(2) / (0.25 + 2.0 / 9.0);
        assert_eq!(df, 1);
        assert!((chi - expect).abs() < 1e-12, "{chi} vs {expect}");
        assert!((p - chi2_sf(expect, 1)).abs() < 1e-12);
    }
}

/// Fisher's exact test, two-sided, for the 2×2 table `[[a, b], [c, d]]`: the probability of every table with the
/// same margins that is no more likely than the observed one (relative tolerance 1e-7, as scipy).
pub fn fisher_exact(t: &TwoByTwo) -> f64 {
    let (a, b, c, d) = (t.a, t.b, t.c, t.d);
    let (row1, col1, n) = (a + b, a + c, a + b + c + d);
    let ln_choose = |n: u64, k: u64| {
        libm::lgamma(n as f64 + 1.0)
            - libm::lgamma(k as f64 + 1.0)
            - libm::lgamma((n - k) as f64 + 1.0)
    };
    let ln_total = ln_choose(n, col1);
    let ln_p = |x: u64| ln_choose(row1, x) + ln_choose(n - row1, col1 - x) - ln_total;
    let lo = col1.saturating_sub(n - row1);
    let hi = row1.min(col1);
    let observed = ln_p(a);
    let p: f64 = (lo..=hi)
        .map(ln_p)
        .filter(|lp| *lp <= observed + (1e-7f64).ln_1p())
        .map(f64::exp)
        .sum();
    p.min(1.0)
}

impl KmCurve {
    /// S(t): the estimate just after the last event time <= t.
    pub fn survival_at(&self, t: f64) -> f64 {
        self.points
            .iter()
            .take_while(|p| p.time <= t)
            .last()
            .map(|p| p.survival)
            .unwrap_or(1.0)
    }

    /// Subjects still at risk at time t (time >= t).
    pub fn at_risk_at(&self, t: f64) -> u64 {
        self.points
            .iter()
            .find(|p| p.time >= t)
            .map(|p| p.at_risk)
            .unwrap_or(0)
    }

    /// 95% CI of the median: the first times where the upper and lower confidence curves reach 0.5
    /// (lifelines' `median_survival_times(confidence_interval_)`).
    pub fn median_ci(&self) -> (Option<f64>, Option<f64>) {
        let first =
            |f: &dyn Fn(&KmPoint) -> f64| self.points.iter().find(|p| f(p) <= 0.5).map(|p| p.time);
        (first(&|p| p.ci_low), first(&|p| p.ci_high))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ties {
    Efron,
    Breslow,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoxFit {
    pub ties: Ties,
    pub names: Vec<String>,
    pub coef: Vec<f64>,
    pub se: Vec<f64>,
    pub log_likelihood: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// Pearson's chi-square of independence on a k × 2 table of (events, non-events) per group, no continuity
/// correction: (statistic, df, p). `None` when a column total is zero.
pub fn chi_square_k_by_2(groups: &[(u64, u64)]) -> Option<(f64, usize, f64)> {
    let n: f64 = groups.iter().map(|(e, f)| (e + f) as f64).sum();
    let events: f64 = groups.iter().map(|(e, _)| *e as f64).sum();
    if groups.len() < 2 || events == 0.0 || events == n {
        return None;
    }
    let mut chi = 0.0;
    for (e, f) in groups {
        let row = (e + f) as f64;
        if row == 0.0 {
            return None;
        }
        for (observed, total) in [(*e as f64, events), (*f as f64, n - events)] {
            let expected = row * total / n;
            chi += (observed - expected).powi(2) / expected;
        }
    }
    let df = groups.len() - 1;
    Some((chi, df, chi2_sf(chi, df)))
}

/// Solves `a x = b` for a symmetric positive definite `a` by Gauss–Jordan with partial pivoting; also returns
/// the inverse. `None` when singular.
fn solve_and_invert(a: &[Vec<f64>], b: &[f64]) -> Option<(Vec<f64>, Vec<Vec<f64>>)> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut row = a[i].clone();
            row.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
            row.push(b[i]);
            row
        })
        .collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))?;
        m.swap(col, pivot);
        let p = m[col][col];
        if p.abs() < 1e-12 {
            return None;
        }
        for v in m[col].iter_mut() {
            *v /= p;
        }
        let pivot_row = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col];
                for (x, pv) in row.iter_mut().zip(&pivot_row) {
                    *x -= f * pv;
                }
            }
        }
    }
    let x = m.iter().map(|r| r[2 * n]).collect();
    let inv = m.iter().map(|r| r[n..2 * n].to_vec()).collect();
    Some((x, inv))
}

/// Row indices from the latest time to the earliest: walked so, the risk set only grows.
fn latest_first(times: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|&a, &b| times[b].total_cmp(&times[a]));
    order
}

/// Each row's risk score exp(xβ).
fn risk_scores(beta: &[f64], x: &[Vec<f64>]) -> Vec<f64> {
    x.iter()
        .map(|xi| xi.iter().zip(beta).map(|(a, b)| a * b).sum::<f64>().exp())
        .collect()
}

/// Log partial likelihood, score and information at `beta`.
pub(crate) fn cox_derivs(
    times: &[f64],
    events: &[bool],
    x: &[Vec<f64>],
    beta: &[f64],
    ties: Ties,
) -> (f64, Vec<f64>, Vec<Vec<f64>>) {
    let p = beta.len();
    let n = times.len();
    let order = latest_first(times);
    let eta: Vec<f64> = x
        .iter()
        .map(|xi| xi.iter().zip(beta).map(|(a, b)| a * b).sum())
        .collect();
    let (mut ll, mut u, mut info) = (0.0, vec![0.0; p], vec![vec![0.0; p]; p]);
    let (mut s0, mut s1, mut s2) = (0.0, vec![0.0; p], vec![vec![0.0; p]; p]);
    let mut i = 0;
    while i < n {
        let t = times[order[i]];
        let (mut d0, mut d1, mut d2, mut m) = (0.0, vec![0.0; p], vec![vec![0.0; p]; p], 0usize);
        while i < n && times[order[i]] == t {
            let k = order[i];
            let w = eta[k].exp();
            s0 += w;
            for a in 0..p {
                s1[a] += w * x[k][a];
                for b in 0..p {
                    s2[a][b] += w * x[k][a] * x[k][b];
                }
            }
            if events[k] {
                m += 1;
                d0 += w;
                ll += eta[k];
                for a in 0..p {
                    d1[a] += w * x[k][a];
                    u[a] += x[k][a];
                    for b in 0..p {
                        d2[a][b] += w * x[k][a] * x[k][b];
                    }
                }
            }
            i += 1;
        }
        for l in 0..m {
            let f = match ties {
                Ties::Efron => l as f64 / m as f64,
                Ties::Breslow => 0.0,
            };
            let z0 = s0 - f * d0;
            ll -= z0.ln();
            for a in 0..p {
                let z1a = s1[a] - f * d1[a];
                u[a] -= z1a / z0;
                for b in 0..p {
                    let z1b = s1[b] - f * d1[b];
                    let z2 = s2[a][b] - f * d2[a][b];
                    info[a][b] += z2 / z0 - z1a * z1b / (z0 * z0);
                }
            }
        }
    }
    (ll, u, info)
}

/// Cox proportional hazards by Newton–Raphson with step halving (as R's coxph): converged when the log partial
/// likelihood changes by less than 1e-9 relative.
pub fn cox_ph(
    names: Vec<String>,
    times: &[f64],
    events: &[bool],
    x: &[Vec<f64>],
    ties: Ties,
    max_iter: usize,
) -> Option<CoxFit> {
    cox_ph_with(
        names,
        |beta| cox_derivs(times, events, x, beta, ties),
        ties,
        max_iter,
    )
}

/// The log partial likelihood, its score and information at a β.
pub(crate) type CoxDerivs = (f64, Vec<f64>, Vec<Vec<f64>>);

/// [`cox_ph`] over any partial likelihood `derivs` (one risk set, or one per stratum summed).
pub(crate) fn cox_ph_with(
    names: Vec<String>,
    derivs: impl Fn(&[f64]) -> CoxDerivs,
    ties: Ties,
    max_iter: usize,
) -> Option<CoxFit> {
    let p = names.len();
    let mut beta = vec![0.0; p];
    let (mut ll, mut u, mut info) = derivs(&beta);
    let mut iterations = 0;
    let mut converged = false;
    while iterations < max_iter {
        iterations += 1;
        let (step, _) = solve_and_invert(&info, &u)?;
        let mut scale = 1.0;
        let (new_beta, new) = loop {
            let nb: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b + scale * s).collect();
            let d = derivs(&nb);
            if d.0 >= ll - 1e-12 || scale < 1e-6 {
                break (nb, d);
            }
            scale /= 2.0;
        };
        let change = (new.0 - ll).abs();
        beta = new_beta;
        (ll, u, info) = new;
        if change <= 1e-9 * ll.abs().max(1.0) {
            converged = true;
            break;
        }
    }
    let (_, inv) = solve_and_invert(&info, &vec![0.0; p])?;
    let se = (0..p).map(|a| inv[a][a].max(0.0).sqrt()).collect();
    Some(CoxFit {
        ties,
        names,
        coef: beta,
        se,
        log_likelihood: ll,
        iterations,
        converged,
    })
}

/// Grambsch–Therneau test of proportional hazards per covariate from scaled Schoenfeld residuals (Efron-weighted
/// means at tied times), time transformed as 1 - KM(t): lifelines' `proportional_hazard_test(time_transform="km")`.
/// Returns (chi-square, p-value) per covariate, 1 df each.
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with explicit indices
pub fn ph_test(
    fit: &CoxFit,
    times: &[f64],
    events: &[bool],
    x: &[Vec<f64>],
) -> Option<Vec<(f64, f64)>> {
    let p = fit.coef.len();
    let n = times.len();
    let order = latest_first(times);
    let score = risk_scores(&fit.coef, x);
    let (mut s0, mut s1) = (0.0, vec![0.0; p]);
    // (time, residual) per event
    let mut resid: Vec<(f64, Vec<f64>)> = Vec::new();
    let mut i = 0;
    while i < n {
        let t = times[order[i]];
        let (mut d0, mut d1, mut deaths) = (0.0, vec![0.0; p], Vec::new());
        while i < n && times[order[i]] == t {
            let k = order[i];
            s0 += score[k];
            for a in 0..p {
                s1[a] += score[k] * x[k][a];
            }
            if events[k] {
                d0 += score[k];
                for a in 0..p {
                    d1[a] += score[k] * x[k][a];
                }
                deaths.push(k);
            }
            i += 1;
        }
        let m = deaths.len() as f64;
        let mut mean = vec![0.0; p];
        for l in 0..deaths.len() {
            let f = l as f64 / m;
            let denom = s0 - f * d0;
            for a in 0..p {
                mean[a] += (s1[a] - f * d1[a]) / (denom * m);
            }
        }
        for k in deaths {
            resid.push((t, (0..p).map(|a| x[k][a] - mean[a]).collect()));
        }
    }
    let d = resid.len();
    if d < 2 {
        return None;
    }
    let (_, var) = solve_and_invert(&info_at(fit, times, events, x), &vec![0.0; p])?;
    // pooled Kaplan–Meier for the time transform
    let pooled: Vec<(f64, bool)> = times.iter().copied().zip(events.iter().copied()).collect();
    let km = kaplan_meier("all", &pooled);
    let g: Vec<f64> = resid
        .iter()
        .map(|(t, _)| 1.0 - km.survival_at(*t))
        .collect();
    let gbar = g.iter().sum::<f64>() / d as f64;
    let ss: f64 = g.iter().map(|v| (v - gbar).powi(2)).sum();
    let mut out = Vec::with_capacity(p);
    for j in 0..p {
        // scaled residual r*_kj = D * sum_a r_ka V_aj
        let num: f64 = resid
            .iter()
            .zip(&g)
            .map(|((_, r), gk)| {
                (gk - gbar) * d as f64 * (0..p).map(|a| r[a] * var[a][j]).sum::<f64>()
            })
            .sum();
        let chi = num * num / (d as f64 * fit.se[j].powi(2) * ss);
        out.push((chi, chi2_sf(chi, 1)));
    }
    Some(out)
}

fn info_at(fit: &CoxFit, times: &[f64], events: &[bool], x: &[Vec<f64>]) -> Vec<Vec<f64>> {
    cox_derivs(times, events, x, &fit.coef, fit.ties).2
}

/// The covariance of a Cox fit's coefficients (inverse information at the estimate).
pub fn cox_covariance(
    fit: &CoxFit,
    times: &[f64],
    events: &[bool],
    x: &[Vec<f64>],
) -> Option<Vec<Vec<f64>>> {
    let p = fit.coef.len();
    solve_and_invert(&info_at(fit, times, events, x), &vec![0.0; p]).map(|(_, inv)| inv)
}

/// Score residuals of a Cox fit, one row per observation: the score split into each subject's part, with
/// Efron's fractional weights for the subjects of a tied event time (R's `residuals(fit, "score")`, lifelines'
/// `compute_residuals("score")`). Their column sums are the score, zero at the estimate.
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with explicit indices
pub fn cox_score_residuals(
    fit: &CoxFit,
    times: &[f64],
    events: &[bool],
    x: &[Vec<f64>],
) -> Vec<Vec<f64>> {
    let p = fit.coef.len();
    let n = times.len();
    let w = risk_scores(&fit.coef, x);
    let order = latest_first(times);
    // Per group of equal times, walked from the last: Σ_l 1/Z_l, Σ_l x̄_l/Z_l, the mean of the x̄_l, and the
    // parts of the first two that a subject dying at that time does not carry (its weight is 1 − l/m).
    struct Group {
        members: Vec<usize>,
        inv: f64,
        xbar: Vec<f64>,
        mean: Vec<f64>,
        own_inv: f64,
        own_xbar: Vec<f64>,
    }
    let mut groups: Vec<Group> = Vec::new();
    let (mut s0, mut s1) = (0.0, vec![0.0; p]);
    let mut i = 0;
    while i < n {
        let t = times[order[i]];
        let (mut d0, mut d1, mut m, mut members) = (0.0, vec![0.0; p], 0usize, Vec::new());
        while i < n && times[order[i]] == t {
            let k = order[i];
            s0 += w[k];
            for a in 0..p {
                s1[a] += w[k] * x[k][a];
            }
            if events[k] {
                m += 1;
                d0 += w[k];
                for a in 0..p {
                    d1[a] += w[k] * x[k][a];
                }
            }
            members.push(k);
            i += 1;
        }
        let mut g = Group {
            members,
            inv: 0.0,
            xbar: vec![0.0; p],
            mean: vec![0.0; p],
            own_inv: 0.0,
            own_xbar: vec![0.0; p],
        };
        for l in 0..m {
            let f = match fit.ties {
                Ties::Efron => l as f64 / m as f64,
                Ties::Breslow => 0.0,
            };
            let z = s0 - f * d0;
            g.inv += 1.0 / z;
            g.own_inv += f / z;
            for a in 0..p {
                let xbar = (s1[a] - f * d1[a]) / z;
                g.xbar[a] += xbar / z;
                g.own_xbar[a] += f * xbar / z;
                g.mean[a] += xbar / m as f64;
            }
        }
        groups.push(g);
    }
    // From the first time on: the compensator of subject k sums over the event times up to its own.
    let mut resid = vec![vec![0.0; p]; n];
    let (mut h, mut gsum) = (0.0, vec![0.0; p]);
    for g in groups.iter().rev() {
        h += g.inv;
        for a in 0..p {
            gsum[a] += g.xbar[a];
        }
        for &k in &g.members {
            for a in 0..p {
                let mut r = -w[k] * (x[k][a] * h - gsum[a]);
                if events[k] {
                    r += x[k][a] - g.mean[a];
                    r += w[k] * (x[k][a] * g.own_inv - g.own_xbar[a]);
                }
                resid[k][a] = r;
            }
        }
    }
    resid
}

/// The sandwich `A (Σ_c u_c u_cᵀ) A` for the bread `a` (the inverse information) and per-row scores `u`
/// summed within each cluster (`cluster[i]` is row i's cluster), with no small-sample factor.
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with explicit indices
pub fn sandwich(a: &[Vec<f64>], scores: &[Vec<f64>], cluster: &[usize]) -> Vec<Vec<f64>> {
    let p = a.len();
    let mut sums: std::collections::BTreeMap<usize, Vec<f64>> = std::collections::BTreeMap::new();
    for (u, c) in scores.iter().zip(cluster) {
        let s = sums.entry(*c).or_insert_with(|| vec![0.0; p]);
        for j in 0..p {
            s[j] += u[j];
        }
    }
    let mut meat = vec![vec![0.0; p]; p];
    for u in sums.values() {
        for r in 0..p {
            for c in 0..p {
                meat[r][c] += u[r] * u[c];
            }
        }
    }
    let am: Vec<Vec<f64>> = (0..p)
        .map(|r| {
            (0..p)
                .map(|c| (0..p).map(|k| a[r][k] * meat[k][c]).sum())
                .collect()
        })
        .collect();
    (0..p)
        .map(|r| {
            (0..p)
                .map(|c| (0..p).map(|k| am[r][k] * a[k][c]).sum())
                .collect()
        })
        .collect()
}

/// The cluster-robust covariance of a Cox fit (R's `coxph(... + cluster(id))`, lifelines' `cluster_col`).
pub fn cox_robust_covariance(
    fit: &CoxFit,
    times: &[f64],
    events: &[bool],
    x: &[Vec<f64>],
    cluster: &[usize],
) -> Option<Vec<Vec<f64>>> {
    let bread = cox_covariance(fit, times, events, x)?;
    Some(sandwich(
        &bread,
        &cox_score_residuals(fit, times, events, x),
        cluster,
    ))
}

/// The cluster-robust covariance of a logistic fit: scores (y − μ)x per row.
pub fn logistic_robust_covariance(
    fit: &LogisticFit,
    x: &[Vec<f64>],
    y: &[f64],
    cluster: &[usize],
) -> Vec<Vec<f64>> {
    let scores: Vec<Vec<f64>> = x
        .iter()
        .zip(y)
        .map(|(xi, yi)| {
            let eta: f64 = xi.iter().zip(&fit.coef).map(|(a, b)| a * b).sum();
            let mu = 1.0 / (1.0 + (-eta).exp());
            xi.iter().map(|v| (yi - mu) * v).collect()
        })
        .collect();
    sandwich(&fit.covariance, &scores, cluster)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogisticFit {
    pub coef: Vec<f64>,
    /// Inverse of the information matrix at the estimate.
    pub covariance: Vec<Vec<f64>>,
    pub iterations: usize,
    pub converged: bool,
}

/// Logistic regression by Newton–Raphson (IRLS); `x` rows must include the intercept column. Converged when
/// the deviance changes by less than 1e-10 relative; separation (coefficients running off) stops the fit as not
/// converged.
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with explicit indices
pub fn logistic(x: &[Vec<f64>], y: &[f64], max_iter: usize) -> Option<LogisticFit> {
    let p = x.first()?.len();
    let mut beta = vec![0.0; p];
    let mut dev_old = f64::INFINITY;
    let mut iterations = 0;
    loop {
        iterations += 1;
        let mut grad = vec![0.0; p];
        let mut info = vec![vec![0.0; p]; p];
        let mut dev = 0.0;
        for (xi, &yi) in x.iter().zip(y) {
            let eta: f64 = xi.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let mu = 1.0 / (1.0 + (-eta).exp());
            dev -= 2.0 * (yi * mu.max(1e-300).ln() + (1.0 - yi) * (1.0 - mu).max(1e-300).ln());
            let w = mu * (1.0 - mu);
            for a in 0..p {
                grad[a] += (yi - mu) * xi[a];
                for b in 0..p {
                    info[a][b] += w * xi[a] * xi[b];
                }
            }
        }
        let (step, covariance) = solve_and_invert(&info, &grad)?;
        let converged = (dev_old - dev).abs() <= 1e-10 * dev.abs().max(1.0);
        let diverged = beta.iter().any(|b| !b.is_finite() || b.abs() > 30.0);
        if converged || diverged || iterations >= max_iter {
            return Some(LogisticFit {
                coef: beta,
                covariance,
                iterations,
                converged: converged && !diverged,
            });
        }
        dev_old = dev;
        for a in 0..p {
            beta[a] += step[a];
        }
    }
}

/// Wald chi-square for the coefficients at `idx` being zero: b' V⁻¹ b, with its p-value.
pub fn wald(coef: &[f64], cov: &[Vec<f64>], idx: &[usize]) -> Option<(f64, usize, f64)> {
    let b: Vec<f64> = idx.iter().map(|&i| coef[i]).collect();
    let v: Vec<Vec<f64>> = idx
        .iter()
        .map(|&i| idx.iter().map(|&j| cov[i][j]).collect())
        .collect();
    let (sol, _) = solve_and_invert(&v, &b)?;
    let chi: f64 = b.iter().zip(&sol).map(|(a, s)| a * s).sum();
    Some((chi, idx.len(), chi2_sf(chi, idx.len())))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Describe {
    pub n: u64,
    pub missing: u64,
    pub mean: Option<f64>,
    /// Sample standard deviation (n - 1).
    pub sd: Option<f64>,
    pub median: Option<f64>,
    /// Quartiles by linear interpolation (R type 7, numpy's default).
    pub q1: Option<f64>,
    pub q3: Option<f64>,
}

fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

pub fn describe(values: &[Option<f64>]) -> Describe {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let missing = (values.len() - n) as u64;
    if n == 0 {
        return Describe {
            n: 0,
            missing,
            mean: None,
            sd: None,
            median: None,
            q1: None,
            q3: None,
        };
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = (n > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    Describe {
        n: n as u64,
        missing,
        mean: Some(mean),
        sd,
        median: Some(quantile_sorted(&v, 0.5)),
        q1: Some(quantile_sorted(&v, 0.25)),
        q3: Some(quantile_sorted(&v, 0.75)),
    }
}

/// Standardized mean difference of a numeric variable: (m1 - m0) / sqrt((s1² + s0²) / 2).
pub fn smd_numeric(a: &Describe, reference: &Describe) -> Option<f64> {
    let (m1, m0, s1, s0) = (a.mean?, reference.mean?, a.sd?, reference.sd?);
    let pooled = ((s1 * s1 + s0 * s0) / 2.0).sqrt();
    (pooled > 0.0).then(|| (m1 - m0) / pooled)
}

/// Standardized difference of a categorical variable from level proportions (Yang & Dalton 2012; for two
/// levels it is (p1 - p0) / sqrt((p1(1-p1) + p0(1-p0)) / 2), signed). `p1`, `p0`: proportions of every level.
#[allow(clippy::needless_range_loop)] // matrix arithmetic reads best with explicit indices
pub fn smd_categorical(p1: &[f64], p0: &[f64]) -> Option<f64> {
    let k = p1.len();
    if k < 2 {
        return None;
    }
    if k == 2 {
        let pooled = ((p1[1] * (1.0 - p1[1]) + p0[1] * (1.0 - p0[1])) / 2.0).sqrt();
        return (pooled > 0.0).then(|| (p1[1] - p0[1]) / pooled);
    }
    // drop the first level; S = ((S1 + S0) / 2) with S_ii = p_i(1-p_i), S_ij = -p_i p_j
    let m = k - 1;
    let t: Vec<f64> = (1..k).map(|i| p1[i] - p0[i]).collect();
    let s: Vec<Vec<f64>> = (1..k)
        .map(|i| {
            (1..k)
                .map(|j| {
                    let cov = |p: &[f64]| {
                        if i == j {
                            p[i] * (1.0 - p[i])
                        } else {
                            -p[i] * p[j]
                        }
                    };
                    (cov(p1) + cov(p0)) / 2.0
                })
                .collect()
        })
        .collect();
    let (sol, _) = solve_and_invert(&s, &t)?;
    let q: f64 = (0..m).map(|i| t[i] * sol[i]).sum();
    Some(q.max(0.0).sqrt())
}

/// The regularized incomplete beta function I_x(a, b), by its continued fraction (modified Lentz), on the side
/// of x where the fraction converges fast (the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) otherwise).
fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front =
        libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - beta_inc(b, a, 1.0 - x);
    }
    const TINY: f64 = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..10_000 {
        let m = f64::from(m);
        // the even step, then the odd step, of the fraction's terms
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + numerator / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-16 {
            break;
        }
    }
    ln_front.exp() * f / a
}

/// P(T > t) for Student's t with `df` degrees of freedom.
pub fn t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    let tail = 0.5 * beta_inc(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 { tail } else { 1.0 - tail }
}

/// The `p` quantile of Student's t with `df` degrees of freedom (0 < p < 1), by bisection on [`t_sf`] to the
/// last bit.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    invert(|t| 1.0 - t_sf(t, df), p, (-1e6, 1e6), 1.0)
}

/// An ordinary least squares fit: coefficients, their standard errors, the residual degrees of freedom.
#[derive(Debug, Clone)]
pub struct OlsFit {
    pub coef: Vec<f64>,
    pub se: Vec<f64>,
    pub df: f64,
    /// The coefficients' covariance, σ² (X'X)⁻¹.
    pub cov: Vec<Vec<f64>>,
}

/// Least squares of `y` on the rows of `x` (an intercept is the caller's first column), through the normal
/// equations; `None` when the design is singular or leaves no residual degree of freedom.
pub fn ols(x: &[Vec<f64>], y: &[f64]) -> Option<OlsFit> {
    let p = x.first()?.len();
    let n = x.len();
    if n <= p {
        return None;
    }
    let mut xtx = vec![vec![0.0; p]; p];
    let mut xty = vec![0.0; p];
    for (row, &yi) in x.iter().zip(y) {
        for j in 0..p {
            xty[j] += row[j] * yi;
            for k in 0..p {
                xtx[j][k] += row[j] * row[k];
            }
        }
    }
    let (coef, inv) = solve_and_invert(&xtx, &xty)?;
    let rss: f64 = x
        .iter()
        .zip(y)
        .map(|(row, &yi)| {
            let fitted: f64 = row.iter().zip(&coef).map(|(a, b)| a * b).sum();
            (yi - fitted).powi(2)
        })
        .sum();
    let df = (n - p) as f64;
    let sigma2 = rss / df;
    let cov: Vec<Vec<f64>> = inv
        .iter()
        .map(|r| r.iter().map(|v| sigma2 * v).collect())
        .collect();
    let se = (0..p).map(|j| cov[j][j].sqrt()).collect();
    Some(OlsFit { coef, se, df, cov })
}

#[cfg(test)]
mod t_tests {
    use super::*;

    #[test]
    fn student_t_matches_r() {
        // R: pt(2.1, 7, lower.tail = FALSE); qt(0.975, 231); qt(0.975, 3)
        assert!((t_sf(2.1, 7.0) - 0.036_935_598_106_461_3).abs() < 1e-13);
        assert!((t_quantile(0.975, 231.0) - 1.970_286_659_282_787).abs() < 1e-11);
        assert!((t_quantile(0.975, 3.0) - 3.182_446_305_283_708).abs() < 1e-11);
        assert!((t_sf(-1.0, 10.0) - (1.0 - t_sf(1.0, 10.0))).abs() < 1e-15);
    }

    #[test]
    fn poisson_exact_interval_matches_r() {
        // R: poisson.test(0)$conf.int; poisson.test(2)$conf.int; poisson.test(65)$conf.int
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * b.abs().max(1e-12);
        let (l, u) = poisson_ci(0);
        assert!(l == 0.0 && close(u, 3.688_879_454_113_935), "{u}");
        let (l, u) = poisson_ci(2);
        assert!(
            close(l, 0.242_209_278_543_965) && close(u, 7.224_687_667_723_958),
            "{l} {u}"
        );
        let (l, u) = poisson_ci(65);
        assert!(
            close(l, 50.165_627_729_234_28) && close(u, 82.847_835_815_871_58),
            "{l} {u}"
        );
    }
}
