//! Continuous endpoints (`analysis.continuous`): the endpoint by arm, and the arms compared by ANCOVA (least
//! squares of the endpoint on the arm and the adjustment covariates, complete cases), as R's `lm` reports it.

use super::*;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ancova {
    /// Complete cases in the model.
    pub n: u64,
    /// Residual degrees of freedom (of the t intervals and tests).
    pub df: f64,
    /// Every coefficient but the intercept: the arms first, then the adjustment terms.
    pub terms: Vec<LinearTerm>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContinuousResult {
    pub column: String,
    /// The population it is computed over (none: every accepted row).
    pub population: Option<String>,
    pub adjust: Vec<String>,
    /// Per arm, reference first.
    pub arms: Vec<(String, Describe)>,
    /// `None` when the design is singular or leaves no degree of freedom.
    pub ancova: Option<Ancova>,
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
    ContinuousResult {
        column: endpoint.column.clone(),
        population: population.map(str::to_string),
        adjust: endpoint.adjust.clone(),
        arms,
        ancova: ancova(data, &values, &endpoint.adjust),
    }
}

fn ancova(data: &Data, y: &[Option<f64>], adjust: &[String]) -> Option<Ancova> {
    let mut names: Vec<String> = data.arms[1..].iter().map(|a| format!("arm={a}")).collect();
    let mut terms: Vec<TermFn<'_>> = Vec::new();
    for a in adjust {
        let (n, f) = survival::covariate_terms(data, a);
        names.extend(n);
        terms.push(f);
    }
    let mut x = Vec::new();
    let mut ys = Vec::new();
    'rows: for (i, yi) in y.iter().enumerate() {
        let Some(yi) = yi else { continue };
        let mut row = vec![1.0];
        row.extend(arm_terms(data, i));
        for t in &terms {
            match t(i) {
                Some(v) => row.extend(v),
                None => continue 'rows,
            }
        }
        x.push(row);
        ys.push(*yi);
    }
    let fit = stats::ols(&x, &ys)?;
    let q = stats::t_quantile(0.975, fit.df);
    let terms = names
        .into_iter()
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
    Some(Ancova {
        n: ys.len() as u64,
        df: fit.df,
        terms,
    })
}
