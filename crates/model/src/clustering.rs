//! A clustering of baseline phenotypes as a model: which model input columns it reads, its centres and, for
//! a Gaussian mixture, its weights and covariances; a row's cluster is the nearest centre (k-means) or the
//! component of highest posterior (Gaussian mixture), as scikit-learn's `predict`.

use serde::{Deserialize, Serialize};
use trialflow_core::config::ClusterMethod;
use trialflow_core::features::FeatureSpec;

/// `phenotypes/model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phenotypes {
    pub method: ClusterMethod,
    /// Indices of the clustered columns in an encoded row.
    pub columns: Vec<usize>,
    /// Their names (`FeatureSpec::columns`).
    pub names: Vec<String>,
    /// k × columns.
    pub centers: Vec<Vec<f64>>,
    /// Gaussian mixture: the components' weights (empty for k-means).
    #[serde(default)]
    pub weights: Vec<f64>,
    /// Gaussian mixture: each component's covariance, row-major columns × columns.
    #[serde(default)]
    pub covariances: Vec<Vec<f64>>,
    /// The feature spec the encoded rows come from.
    pub feature_spec: FeatureSpec,
}

/// The encoded columns a clustering reads: every model input but the arm's levels (treatment is no
/// baseline phenotype).
pub fn baseline_columns(spec: &FeatureSpec) -> Vec<usize> {
    let arm = format!("{}=", spec.arm_field);
    spec.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.starts_with(&arm))
        .map(|(i, _)| i)
        .collect()
}

/// A Gaussian component ready to score rows: mean, lower Cholesky factor of the covariance, log weight and
/// the normalizing constant.
#[derive(Debug, Clone)]
pub struct Component {
    mean: Vec<f64>,
    chol: Vec<f64>,
    log_norm: f64,
}

impl Component {
    /// `None` when the covariance is not positive definite.
    pub fn new(mean: &[f64], covariance: &[f64], weight: f64) -> Option<Self> {
        let d = mean.len();
        let chol = cholesky(covariance, d)?;
        let log_det: f64 = (0..d).map(|i| chol[i * d + i].ln()).sum::<f64>() * 2.0;
        Some(Self {
            mean: mean.to_vec(),
            chol,
            log_norm: weight.ln() - 0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + log_det),
        })
    }

    /// log(weight · N(x; mean, covariance)).
    #[allow(clippy::needless_range_loop)] // forward substitution reads best with explicit indices
    pub fn log_density(&self, x: &[f64]) -> f64 {
        let d = self.mean.len();
        // solve L·z = x − mean; the Mahalanobis distance is ‖z‖²
        let mut z = vec![0.0; d];
        let mut squared = 0.0;
        for i in 0..d {
            let mut v = x[i] - self.mean[i];
            for j in 0..i {
                v -= self.chol[i * d + j] * z[j];
            }
            z[i] = v / self.chol[i * d + i];
            squared += z[i] * z[i];
        }
        self.log_norm - 0.5 * squared
    }
}

/// Lower Cholesky factor of a d × d symmetric matrix; `None` unless positive definite.
pub fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|m| l[i * d + m] * l[j * d + m]).sum();
            if i == j {
                let v = a[i * d + i] - sum;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - sum) / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// Squared Euclidean distance.
pub fn distance2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

impl Phenotypes {
    /// The clustered columns of encoded rows `x` (row-major, the spec's width), as f64 rows.
    pub fn select(&self, x: &[f32]) -> Vec<Vec<f64>> {
        let width = self.feature_spec.width().max(1);
        x.chunks_exact(width)
            .map(|row| self.columns.iter().map(|&c| f64::from(row[c])).collect())
            .collect()
    }

    /// Each encoded row's cluster (0-based).
    pub fn assign(&self, x: &[f32]) -> Vec<usize> {
        self.assign_selected(&self.select(x))
    }

    /// The cluster (0-based) of rows of the clustered columns alone.
    pub fn assign_selected(&self, rows: &[Vec<f64>]) -> Vec<usize> {
        match self.method {
            ClusterMethod::Kmeans => rows.iter().map(|r| nearest(&self.centers, r)).collect(),
            ClusterMethod::Gmm => {
                let components: Vec<Option<Component>> = self
                    .centers
                    .iter()
                    .zip(&self.covariances)
                    .zip(&self.weights)
                    .map(|((m, c), w)| Component::new(m, c, *w))
                    .collect();
                rows.iter()
                    .map(|r| {
                        let mut best = (0, f64::NEG_INFINITY);
                        for (j, c) in components.iter().enumerate() {
                            if let Some(c) = c {
                                let v = c.log_density(r);
                                if v > best.1 {
                                    best = (j, v);
                                }
                            }
                        }
                        best.0
                    })
                    .collect()
            }
        }
    }
}

/// The index of the nearest centre (the first on a tie).
pub fn nearest(centers: &[Vec<f64>], row: &[f64]) -> usize {
    let mut best = (0, f64::INFINITY);
    for (j, c) in centers.iter().enumerate() {
        let d = distance2(c, row);
        if d < best.1 {
            best = (j, d);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_log_density_is_the_textbook_one() {
        // 2-d, covariance [[2, 0.5], [0.5, 1]], weight 0.3
        let c = Component::new(&[1.0, -1.0], &[2.0, 0.5, 0.5, 1.0], 0.3).unwrap();
        let (x, y) = (0.5 - 1.0, 0.2 + 1.0);
        let det: f64 = 2.0 * 1.0 - 0.25;
        let quad = (1.0 * x * x - 2.0 * 0.5 * x * y + 2.0 * y * y) / det;
        let want = 0.3f64.ln() - (2.0 * std::f64::consts::PI).ln() - 0.5 * det.ln() - 0.5 * quad;
        assert!((c.log_density(&[0.5, 0.2]) - want).abs() < 1e-12);
        assert!(Component::new(&[0.0], &[0.0], 1.0).is_none());
    }
}
