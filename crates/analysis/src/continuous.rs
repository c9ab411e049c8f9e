//! Continuous endpoints (`analysis.continuous`): the endpoint by arm, and the arms compared by ANCOVA (least
//! squares of the endpoint on the arm and the adjustment covariates, complete cases), as R's `lm` reports it.

use super::*;
use trialflow_core::config::Multiplicity;

/// One arm against the reference: the difference in adjusted means.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearTerm {
    pub term: String,
    pub estimate: f64,
    pub se: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p: f64,
}

/// An arm's least-squares mean: the model's prediction for the arm at the mean of each numeric covariate and
/// averaged with equal weights over each factor's levels (R `emmeans`' reference grid).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LsMean {
    pub arm: String,
    pub estimate: f64,
    pub se: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// An arm's least-squares mean minus the reference arm's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmDifference {
    pub arm: String,
    pub reference: String,
    pub estimate: f64,
    pub se: f64,
    pub t: f64,
    /// The CI at the adjusted level (`multiplicity`): simultaneous for Bonferroni and Dunnett.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Unadjusted two-sided p-value.
    pub p: f64,
    /// Two-sided p-value adjusted for the comparisons (equal to `p` under `none`).
    pub p_adjusted: f64,
}

/// A linear trend across the arms' least-squares means, the centred dose scores as the contrast.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trend {
    /// (arm, score, contrast coefficient) in arm order.
    pub coefficients: Vec<(String, f64, f64)>,
    pub estimate: f64,
    pub se: f64,
    pub t: f64,
    pub df: f64,
    pub p: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ancova {
    /// Complete cases in the model.
    pub n: u64,
    /// Residual degrees of freedom (of the t intervals and tests).
    pub df: f64,
    /// Every coefficient but the intercept: the arms first, then the adjustment terms.
    pub terms: Vec<LinearTerm>,
    /// Per arm in the model, reference first.
    #[serde(default)]
    pub lsmeans: Vec<LsMean>,
    /// Each other arm against the reference.
    #[serde(default)]
    pub differences: Vec<ArmDifference>,
    /// `none`, `bonferroni` or `dunnett`.
    #[serde(default)]
    pub multiplicity: String,
    /// The multiplier of the differences' standard errors in their CIs.
    #[serde(default)]
    pub critical_value: f64,
    #[serde(default)]
    pub trend: Option<Trend>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContinuousResult {
    pub column: String,
    /// The population it is computed over (none: every accepted row).
    pub population: Option<String>,
    pub adjust: Vec<String>,
    /// Per arm, reference first.
    pub arms: Vec<(String, Describe)>,
    /// `None` when the model cannot be estimated; `notes` says why.
    pub ancova: Option<Ancova>,
    /// What was left out or could not be computed, and why (an arm without complete cases, a singular design,
    /// trend scores that do not name every arm).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The endpoint `column` of `data` by arm, and its ANCOVA.
pub(crate) fn continuous(
    data: &Data,
    endpoint: &trialflow_core::config::ContinuousEndpoint,
    population: Option<&str>,
) -> ContinuousResult {
    let values = match data.columns.get(&endpoint.column) {
        Some(Column::Numeric(v)) => v.clone(),
        _ => vec![None; data.arm.len()],
    };
    let arms = data
        .arms
        .iter()
        .map(|a| {
            let v: Vec<Option<f64>> = (0..data.arm.len())
                .filter(|&i| &data.arm[i] == a)
                .map(|i| values[i])
                .collect();
            (a.clone(), stats::describe(&v))
        })
        .collect();
    let mut notes = Vec::new();
    let ancova = ancova(data, &values, endpoint, &mut notes);
    ContinuousResult {
        column: endpoint.column.clone(),
        population: population.map(str::to_string),
        adjust: endpoint.adjust.clone(),
        arms,
        ancova,
        notes,
    }
}

/// The model's rows: complete cases of the endpoint and every adjustment covariate.
struct Design {
    /// Arms with at least one complete case, reference first.
    arms: Vec<String>,
    /// Names of the columns after the intercept and the arm indicators.
    covariates: Vec<String>,
    /// The reference grid's value of each covariate column (numeric: its mean; a factor's indicator: one over
    /// its number of levels).
    grid: Vec<f64>,
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
}

fn design(
    data: &Data,
    y: &[Option<f64>],
    adjust: &[String],
    notes: &mut Vec<String>,
) -> Option<Design> {
    let mut covariates = Vec::new();
    let mut terms: Vec<TermFn<'_>> = Vec::new();
    let mut levels = Vec::new();
    for a in adjust {
        let (n, f) = survival::covariate_terms(data, a);
        let factor_levels = match data.columns.get(a) {
            Some(Column::Categorical(_)) => Some(n.len() + 1),
            _ => None,
        };
        levels.extend(std::iter::repeat_n(factor_levels, n.len()));
        covariates.extend(n);
        terms.push(f);
    }
    let mut rows = Vec::new();
    'rows: for (i, yi) in y.iter().enumerate() {
        let Some(yi) = yi else { continue };
        let mut cov = Vec::new();
        for t in &terms {
            match t(i) {
                Some(v) => cov.extend(v),
                None => continue 'rows,
            }
        }
        rows.push((i, *yi, cov));
    }
    let arms: Vec<String> = data
        .arms
        .iter()
        .filter(|a| rows.iter().any(|(i, _, _)| &data.arm[*i] == *a))
        .cloned()
        .collect();
    for a in data.arms.iter().filter(|a| !arms.contains(a)) {
        notes.push(format!(
            "arm `{a}` has no complete case (endpoint and covariates): left out of the ANCOVA"
        ));
    }
    if arms.first() != data.arms.first() || arms.len() < 2 {
        notes.push(
            "the ANCOVA needs complete cases in the reference arm and in one other arm: not estimated".into(),
        );
        return None;
    }
    let n = rows.len() as f64;
    let grid = levels
        .iter()
        .enumerate()
        .map(|(j, l)| match l {
            Some(count) => 1.0 / *count as f64,
            None => rows.iter().map(|(_, _, c)| c[j]).sum::<f64>() / n,
        })
        .collect();
    let mut x = Vec::with_capacity(rows.len());
    let mut ys = Vec::with_capacity(rows.len());
    for (i, yi, cov) in rows {
        let mut row = vec![1.0];
        row.extend(
            arms[1..]
                .iter()
                .map(|a| f64::from(u8::from(&data.arm[i] == a))),
        );
        row.extend(cov);
        x.push(row);
        ys.push(yi);
    }
    Some(Design {
        arms,
        covariates,
        grid,
        x,
        y: ys,
    })
}

/// Why a design has no least-squares fit: a column with one value among the complete cases, else collinear
/// columns.
fn singular_reason(d: &Design) -> String {
    let names: Vec<String> = d.arms[1..]
        .iter()
        .map(|a| format!("arm={a}"))
        .chain(d.covariates.iter().cloned())
        .collect();
    if d.x.len() <= names.len() + 1 {
        return format!(
            "{} complete cases for {} coefficients leave no residual degree of freedom",
            d.x.len(),
            names.len() + 1
        );
    }
    let constant: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(j, _)| d.x.iter().all(|r| r[j + 1] == d.x[0][j + 1]))
        .map(|(_, n)| n.as_str())
        .collect();
    if constant.is_empty() {
        "the design is singular: its columns are collinear (e.g. a factor level that occurs with one arm only \
         and duplicates another column)"
            .into()
    } else {
        format!(
            "the design is singular: {} takes one value among the complete cases",
            constant.join(", ")
        )
    }
}

fn ancova(
    data: &Data,
    y: &[Option<f64>],
    endpoint: &trialflow_core::config::ContinuousEndpoint,
    notes: &mut Vec<String>,
) -> Option<Ancova> {
    let d = design(data, y, &endpoint.adjust, notes)?;
    let Some(fit) = stats::ols(&d.x, &d.y) else {
        notes.push(format!("ANCOVA not estimable: {}", singular_reason(&d)));
        return None;
    };
    let q = stats::t_quantile(0.975, fit.df);
    let names = d.arms[1..]
        .iter()
        .map(|a| format!("arm={a}"))
        .chain(d.covariates.iter().cloned());
    let terms = names
        .enumerate()
        .map(|(j, term)| {
            let (b, se) = (fit.coef[j + 1], fit.se[j + 1]);
            LinearTerm {
                term,
                estimate: b,
                se,
                ci_low: b - q * se,
                ci_high: b + q * se,
                p: 2.0 * stats::t_sf((b / se).abs(), fit.df),
            }
        })
        .collect();
    let k = d.arms.len() - 1;
    // The reference grid's row for each arm.
    let grid_rows: Vec<Vec<f64>> = (0..=k)
        .map(|a| {
            let mut row = vec![1.0];
            row.extend((1..=k).map(|b| f64::from(u8::from(a == b))));
            row.extend(&d.grid);
            row
        })
        .collect();
    let lsmeans = d
        .arms
        .iter()
        .zip(&grid_rows)
        .map(|(arm, l)| {
            let (estimate, se) = linear(&fit, l);
            LsMean {
                arm: arm.clone(),
                estimate,
                se,
                ci_low: estimate - q * se,
                ci_high: estimate + q * se,
            }
        })
        .collect();
    let multiplicity = endpoint.multiplicity;
    let (critical_value, adjust): (f64, Box<dyn Fn(f64, f64) -> f64>) = match multiplicity {
        Multiplicity::None => (q, Box::new(|_, p| p)),
        Multiplicity::Bonferroni => (
            stats::t_quantile(1.0 - 0.025 / k as f64, fit.df),
            Box::new(move |_, p| (p * k as f64).min(1.0)),
        ),
        Multiplicity::Dunnett => {
            let corr: Vec<Vec<f64>> = (1..=k)
                .map(|a| {
                    (1..=k)
                        .map(|b| fit.cov[a][b] / (fit.cov[a][a] * fit.cov[b][b]).sqrt())
                        .collect()
                })
                .collect();
            let lambda = dunnett::lambdas(&corr);
            let df = fit.df;
            (
                dunnett::quantile(0.95, &lambda, df),
                Box::new(move |t, _| dunnett::p_value(t, &lambda, df)),
            )
        }
    };
    let differences = (1..=k)
        .map(|a| {
            let (b, se) = (fit.coef[a], fit.se[a]);
            let t = b / se;
            let p = 2.0 * stats::t_sf(t.abs(), fit.df);
            ArmDifference {
                arm: d.arms[a].clone(),
                reference: d.arms[0].clone(),
                estimate: b,
                se,
                t,
                ci_low: b - critical_value * se,
                ci_high: b + critical_value * se,
                p,
                p_adjusted: adjust(t, p),
            }
        })
        .collect();
    let trend = endpoint
        .trend
        .as_ref()
        .and_then(|scores| trend(&fit, &d.arms, &grid_rows, scores, notes));
    Some(Ancova {
        n: d.y.len() as u64,
        df: fit.df,
        terms,
        lsmeans,
        differences,
        multiplicity: multiplicity.name().into(),
        critical_value,
        trend,
    })
}

/// l'β and its standard error √(l' V l).
fn linear(fit: &stats::OlsFit, l: &[f64]) -> (f64, f64) {
    let estimate = l.iter().zip(&fit.coef).map(|(a, b)| a * b).sum();
    let mut var = 0.0;
    for (i, li) in l.iter().enumerate() {
        for (j, lj) in l.iter().enumerate() {
            var += li * lj * fit.cov[i][j];
        }
    }
    (estimate, var.sqrt())
}

fn trend(
    fit: &stats::OlsFit,
    arms: &[String],
    grid_rows: &[Vec<f64>],
    scores: &BTreeMap<String, f64>,
    notes: &mut Vec<String>,
) -> Option<Trend> {
    let missing: Vec<&str> = arms
        .iter()
        .filter(|a| !scores.keys().any(|s| trialflow_core::codes::same(s, a)))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "the trend test needs a score for every arm in the model; `trend` has none for {}: not tested",
            missing.join(", ")
        ));
        return None;
    }
    let score = |a: &String| {
        scores
            .iter()
            .find(|(s, _)| trialflow_core::codes::same(s, a))
            .map_or(0.0, |(_, v)| *v)
    };
    let mean = arms.iter().map(score).sum::<f64>() / arms.len() as f64;
    let coefficients: Vec<(String, f64, f64)> = arms
        .iter()
        .map(|a| (a.clone(), score(a), score(a) - mean))
        .collect();
    if coefficients.iter().all(|c| c.2 == 0.0) {
        notes.push("the trend scores are equal in every arm: no trend to test".into());
        return None;
    }
    let mut l = vec![0.0; fit.coef.len()];
    for ((_, _, c), row) in coefficients.iter().zip(grid_rows) {
        for (lj, r) in l.iter_mut().zip(row) {
            *lj += c * r;
        }
    }
    let (estimate, se) = linear(fit, &l);
    let t = estimate / se;
    Some(Trend {
        coefficients,
        estimate,
        se,
        t,
        df: fit.df,
        p: 2.0 * stats::t_sf(t.abs(), fit.df),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trialflow_core::config::ContinuousEndpoint;

    /// Three arms of four; `y` the endpoint, `g` a factor, `x` a numeric covariate.
    fn data(y: Vec<Option<f64>>, g: Vec<&str>) -> Data {
        let arm: Vec<String> = ["P", "P", "P", "P", "H", "H", "H", "H", "L", "L", "L", "L"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let x = (0..12).map(|i| Some(f64::from(i % 5))).collect();
        Data {
            arms: vec!["P".into(), "H".into(), "L".into()],
            outcome: vec![0.0; 12],
            has_outcome: vec![true; 12],
            arm,
            tte: None,
            columns: [
                ("y".to_string(), Column::Numeric(y)),
                ("x".to_string(), Column::Numeric(x)),
                (
                    "g".to_string(),
                    Column::Categorical(g.into_iter().map(|s| Some(s.to_string())).collect()),
                ),
            ]
            .into(),
            references: BTreeMap::new(),
            competing: Vec::new(),
            clusters: None,
        }
    }

    fn endpoint(adjust: &[&str], trend: Option<&[(&str, f64)]>) -> ContinuousEndpoint {
        ContinuousEndpoint {
            column: "y".into(),
            adjust: adjust.iter().map(|s| s.to_string()).collect(),
            population: None,
            multiplicity: Multiplicity::Dunnett,
            trend: trend.map(|t| t.iter().map(|(a, s)| (a.to_string(), *s)).collect()),
        }
    }

    fn values() -> Vec<Option<f64>> {
        [3.0, 4.0, 2.5, 5.0, 1.0, 2.0, 0.5, 1.5, 2.0, 3.0, 2.2, 2.8]
            .into_iter()
            .map(Some)
            .collect()
    }

    #[test]
    fn a_factor_level_that_is_one_arm_is_a_note_not_a_nan() {
        // g = "b" exactly in arm L: its indicator duplicates L's, the design is singular
        let g = vec!["a", "a", "a", "a", "a", "a", "a", "a", "b", "b", "b", "b"];
        let r = continuous(&data(values(), g), &endpoint(&["g"], None), None);
        assert!(r.ancova.is_none());
        assert!(
            r.notes.iter().any(|n| n.contains("singular")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn an_arm_without_complete_cases_is_left_out_and_said() {
        let mut y = values();
        for v in &mut y[8..] {
            *v = None;
        }
        let g = vec!["a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "a", "b"];
        let r = continuous(&data(y, g), &endpoint(&["x"], None), None);
        let m = r.ancova.as_ref().expect("P and H are compared");
        assert_eq!(m.lsmeans.len(), 2);
        assert_eq!(m.differences.len(), 1);
        assert!(m.differences.iter().all(|d| d.p_adjusted.is_finite()));
        assert!(
            r.notes.iter().any(|n| n.contains("arm `L`")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn a_reference_without_complete_cases_is_not_estimated() {
        let mut y = values();
        for v in &mut y[..4] {
            *v = None;
        }
        let g = vec!["a"; 12];
        let r = continuous(&data(y, g), &endpoint(&[], None), None);
        assert!(r.ancova.is_none());
        assert!(r.notes.iter().any(|n| n.contains("reference arm")));
    }

    #[test]
    fn trend_scores_must_name_every_arm() {
        let g = vec!["a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "a", "b"];
        let d = data(values(), g);
        let r = continuous(&d, &endpoint(&["x"], Some(&[("P", 0.0), ("H", 2.0)])), None);
        assert!(r.ancova.as_ref().unwrap().trend.is_none());
        assert!(
            r.notes.iter().any(|n| n.contains("none for L")),
            "{:?}",
            r.notes
        );
        // with every arm scored, the one-way trend contrast equals the LS means' weighted sum
        let r = continuous(
            &d,
            &endpoint(&[], Some(&[("P", 0.0), ("H", 2.0), ("L", 1.0)])),
            None,
        );
        let m = r.ancova.unwrap();
        let t = m.trend.unwrap();
        let by_hand: f64 = m
            .lsmeans
            .iter()
            .zip(&t.coefficients)
            .map(|(l, c)| l.estimate * c.2)
            .sum();
        assert!((t.estimate - by_hand).abs() < 1e-12);
        assert_eq!(t.coefficients[1].2, 1.0);
    }
}
