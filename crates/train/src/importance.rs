//! Permutation feature importance on the test split: how much the endpoint's ranking metric (ROC AUC, R²,
//! Harrell's C) drops when one input field's values are shuffled across rows.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use trialflow_core::features::FeatureSpec;

use crate::{Importance, Split};

/// Input fields and their model input columns: a numeric field is one column, a categorical one its levels.
pub(crate) fn field_columns(spec: &FeatureSpec) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = spec
        .numeric
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), vec![i]))
        .collect();
    let mut next = spec.numeric.len();
    for c in &spec.categorical {
        out.push((c.name.clone(), (next..next + c.levels.len()).collect()));
        next += c.levels.len();
    }
    out
}

/// `score` rates the test split's predictions (higher is better).
pub(crate) fn permutation_importance(
    dense: &trialflow_model::DenseCpu,
    endpoint: trialflow_core::config::Endpoint,
    spec: &FeatureSpec,
    test: &Split,
    repeats: usize,
    seed: u64,
    score: &dyn Fn(&[f32]) -> f64,
) -> Vec<Importance> {
    let dim = spec.width();
    let base = score(&dense.predict(endpoint, &test.x));
    if !base.is_finite() {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(2));
    let mut out = Vec::new();
    let mut x = test.x.clone();
    for (feature, cols) in field_columns(spec) {
        let mut drops = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let mut perm: Vec<usize> = (0..test.rows).collect();
            perm.shuffle(&mut rng);
            for (r, &from) in perm.iter().enumerate() {
                for &c in &cols {
                    x[r * dim + c] = test.x[from * dim + c];
                }
            }
            drops.push(base - score(&dense.predict(endpoint, &x)));
        }
        for r in 0..test.rows {
            for &c in &cols {
                x[r * dim + c] = test.x[r * dim + c];
            }
        }
        let mean = drops.iter().sum::<f64>() / repeats as f64;
        let var = drops.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / repeats as f64;
        out.push(Importance {
            feature,
            auc_drop_mean: mean,
            auc_drop_std: var.sqrt(),
        });
    }
    out.sort_by(|a, b| b.auc_drop_mean.total_cmp(&a.auc_drop_mean));
    out
}
