//! Dunnett's many-to-one comparisons: the distribution of the largest |t| among k correlated t statistics
//! that share one residual variance, for adjusted p-values and simultaneous confidence intervals.
//!
//! The comparisons' correlation is taken in product form, ρ_ij = λ_i λ_j, which reduces the k-dimensional
//! multivariate t to a double integral (over the common normal factor and the variance's chi). Product form is
//! exact for two comparisons and for a one-way design; for more comparisons under covariate adjustment the λ
//! are fitted to the actual correlations (see [`lambdas`]).

/// Nodes per panel of the composite Gauss–Legendre rule; the integrands are smooth, so a fixed rule reaches
/// ~1e-13 where adaptive ones spent thousands of evaluations on round-off.
const NODES: usize = 16;
/// Panels of the inner (common normal factor) and outer (variance) integrals.
const PANELS: usize = 12;

fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Gauss–Legendre nodes and weights on [-1, 1], by Newton's method on the Legendre polynomial.
fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
    (1..=n)
        .map(|i| {
            let mut x = (std::f64::consts::PI * (i as f64 - 0.25) / (n as f64 + 0.5)).cos();
            let mut derivative = 1.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for k in 2..=n {
                    let k = k as f64;
                    let p2 = ((2.0 * k - 1.0) * x * p1 - (k - 1.0) * p0) / k;
                    p0 = p1;
                    p1 = p2;
                }
                derivative = n as f64 * (x * p1 - p0) / (x * x - 1.0);
                let step = p1 / derivative;
                x -= step;
                if step.abs() < 1e-16 {
                    break;
                }
            }
            (x, 2.0 / ((1.0 - x * x) * derivative * derivative))
        })
        .collect()
}

/// ∫ f over [a, b] by the composite rule.
fn integrate(rule: &[(f64, f64)], f: &dyn Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let width = (b - a) / PANELS as f64;
    (0..PANELS)
        .map(|p| {
            let mid = a + (p as f64 + 0.5) * width;
            rule.iter()
                .map(|(x, w)| w * f(mid + 0.5 * width * x))
                .sum::<f64>()
                * 0.5
                * width
        })
        .sum()
}

/// P(|Z_i| ≤ c for every i) for standard normals with correlation λ_i λ_j: given the common factor z, the
/// comparisons are independent.
fn normal_box(rule: &[(f64, f64)], c: f64, lambda: &[f64]) -> f64 {
    let inner = |z: f64| {
        let mut p = normal_pdf(z);
        for &l in lambda {
            let s = (1.0 - l * l).max(0.0).sqrt();
            p *= if s == 0.0 {
                f64::from(u8::from((l * z).abs() <= c))
            } else {
                normal_cdf((c - l * z) / s) - normal_cdf((-c - l * z) / s)
            };
        }
        p
    };
    integrate(rule, &inner, -9.0, 9.0)
}

/// P(max_i |T_i| ≤ c), T_i = Z_i / S with S² ~ χ²_df / df independent of Z: the normal box probability
/// averaged over the density of w = ln S (smooth, and narrow for large df).
pub fn cdf(c: f64, lambda: &[f64], df: f64) -> f64 {
    let rule = gauss_legendre(NODES);
    if c <= 0.0 {
        return 0.0;
    }
    if !df.is_finite() {
        return normal_box(&rule, c, lambda);
    }
    let half = df / 2.0;
    let log_front = std::f64::consts::LN_2 + half * half.ln() - libm::lgamma(half);
    let density = |w: f64| (log_front + df * w - half * (2.0 * w).exp()).exp();
    let f = |w: f64| density(w) * normal_box(&rule, c * w.exp(), lambda);
    let spread = 9.0 / (2.0 * df).sqrt();
    let lo = -(spread + 45.0 / df);
    let hi = spread.max(0.5 * (1.0 + 200.0 / df).ln());
    // Split at the mode (w = 0) so that a narrow density gets its share of the panels.
    integrate(&rule, &f, lo, 0.0) + integrate(&rule, &f, 0.0, hi)
}

/// The two-sided adjusted p-value of |t| among the comparisons.
pub fn p_value(t: f64, lambda: &[f64], df: f64) -> f64 {
    (1.0 - cdf(t.abs(), lambda, df)).clamp(0.0, 1.0)
}

/// The critical value c with P(max |T_i| ≤ c) = `level`: the half-width multiplier of simultaneous CIs.
/// Bracketed by one comparison's t quantile below and Bonferroni's above (Šidák's inequality), then found by
/// the Illinois variant of regula falsi.
pub fn quantile(level: f64, lambda: &[f64], df: f64) -> f64 {
    let k = lambda.len().max(1) as f64;
    let alpha = 1.0 - level;
    let t = |p: f64| {
        if df.is_finite() {
            crate::stats::t_quantile(p, df)
        } else {
            crate::stats::t_quantile(p, 1e9)
        }
    };
    let (mut a, mut b) = (
        t(1.0 - alpha / 2.0) * 0.999,
        t(1.0 - alpha / (2.0 * k)) * 1.001,
    );
    let g = |c: f64| cdf(c, lambda, df) - level;
    let (mut ga, mut gb) = (g(a), g(b));
    let mut side = 0i8;
    for _ in 0..100 {
        let c = (a * gb - b * ga) / (gb - ga);
        let gc = g(c);
        if gc.abs() < 1e-14 || (b - a).abs() <= 1e-12 * c {
            return c;
        }
        if gc * gb > 0.0 {
            b = c;
            gb = gc;
            if side == -1 {
                ga /= 2.0;
            }
            side = -1;
        } else {
            a = c;
            ga = gc;
            if side == 1 {
                gb /= 2.0;
            }
            side = 1;
        }
    }
    0.5 * (a + b)
}

/// The product-form factors λ of a correlation matrix of k comparisons: for k = 2, λ_1 = λ_2 = √ρ (sign
/// carried by the second); for k ≥ 3, λ_i² is the geometric mean over pairs (j, l) of ρ_ij ρ_il / ρ_jl, exact
/// when the matrix has product form. Correlations ≤ 0 beyond two comparisons fall back to independence.
pub fn lambdas(corr: &[Vec<f64>]) -> Vec<f64> {
    let k = corr.len();
    match k {
        0 => Vec::new(),
        1 => vec![0.0],
        2 => {
            let r = corr[0][1].clamp(-1.0, 1.0);
            vec![r.abs().sqrt(), r.signum() * r.abs().sqrt()]
        }
        _ => (0..k)
            .map(|i| {
                let mut log_sum = 0.0;
                let mut count = 0u32;
                for j in 0..k {
                    for l in (j + 1)..k {
                        if j == i || l == i {
                            continue;
                        }
                        let v = corr[i][j] * corr[i][l] / corr[j][l];
                        if !(v > 0.0 && v.is_finite()) {
                            return 0.0;
                        }
                        log_sum += v.ln();
                        count += 1;
                    }
                }
                (log_sum / f64::from(count)).exp().sqrt().min(1.0)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_comparison_is_students_t() {
        // With one comparison the maximum is |T|: R: 2 * pt(2.1, 20, lower.tail = FALSE); qt(0.975, 20)
        assert!((p_value(2.1, &[0.0], 20.0) - 0.048_617_587_257_557).abs() < 1e-10);
        assert!((quantile(0.95, &[0.0], 20.0) - 2.085_963_447_265_837).abs() < 1e-8);
    }

    #[test]
    fn independent_comparisons_multiply() {
        // Zero correlation and infinite df: P = (2Φ(c) - 1)^k.
        let c: f64 = 2.2;
        let one = 2.0 * normal_cdf(c) - 1.0;
        assert!((cdf(c, &[0.0, 0.0, 0.0], f64::INFINITY) - one.powi(3)).abs() < 1e-11);
    }

    #[test]
    fn equicorrelated_half_matches_mvtnorm() {
        // Two treatments vs control, equal n (ρ = 0.5, λ = √0.5), df = 20. R, mvtnorm's TVPACK by inclusion-
        // exclusion of its one-sided probabilities: 1 - P(|T| ≤ 2.1) = 0.0869605314840548; the 95% critical
        // value by uniroot(tol = 1e-13) = 2.37868998018132 (Dunnett's tables: 2.38).
        let l = 0.5_f64.sqrt();
        assert!((p_value(2.1, &[l, l], 20.0) - 0.086_960_531_484_054_8).abs() < 1e-9);
        let c = quantile(0.95, &[l, l], 20.0);
        assert!((c - 2.378_689_980_181_32).abs() < 1e-8, "{c}");
    }

    #[test]
    fn product_form_is_recovered() {
        let l = [0.3, 0.5, 0.7];
        let corr: Vec<Vec<f64>> = (0..3)
            .map(|i| {
                (0..3)
                    .map(|j| if i == j { 1.0 } else { l[i] * l[j] })
                    .collect()
            })
            .collect();
        for (a, b) in lambdas(&corr).iter().zip(l) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
