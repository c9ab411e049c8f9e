//! Clusters of baseline phenotypes (exploratory), the `cluster` task: k-means (k-means++ seeding, seeded,
//! Lloyd's iterations; scikit-learn's `KMeans`) or a Gaussian mixture with full covariances fitted by EM from
//! the k-means clusters (scikit-learn's `GaussianMixture`: `reg_covar` 1e-6, tolerance 1e-3 on the mean
//! log-likelihood) over the standardized model inputs but the arm, on the train split. The number of
//! clusters is chosen over `clustering.k` by the mean silhouette (k-means) or the BIC (mixture); its
//! stability is the adjusted Rand index of refits on bootstrap resamples. Every split's rows are assigned, and
//! each cluster is described: its inputs on their own scale, and the outcome in each arm.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use trialflow_core::config::{ClusterMethod, ClusteringConfig, Config, Endpoint};
use trialflow_core::contracts::{
    self, ArmOutcome, ClusterChoice, ClusterProfile, ClusterStability, PhenotypeReport,
};
use trialflow_core::features::FeatureSpec;
use trialflow_core::{Error, Result, Storage, lake};
use trialflow_model::clustering::{Component, Phenotypes, baseline_columns, distance2};

use crate::fused::gemm::{View, matmul};

/// Rows as a flat row-major matrix, in f64 (the mixture, the silhouettes) and as the f32 they were encoded
/// in (k-means, as scikit-learn runs it on float32 rows: half the memory to stream every iteration).
#[derive(Debug, Clone, Copy)]
pub struct Points<'a> {
    pub x: &'a [f64],
    pub x32: &'a [f32],
    pub d: usize,
}

impl Points<'_> {
    pub fn n(&self) -> usize {
        self.x32.len() / self.d.max(1)
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    fn row32(&self, i: usize) -> &[f32] {
        &self.x32[i * self.d..(i + 1) * self.d]
    }
}

/// A k-means solution.
#[derive(Debug, Clone)]
pub struct Kmeans {
    pub centers: Vec<Vec<f64>>,
    pub labels: Vec<usize>,
    pub inertia: f64,
    /// Lloyd iterations of the run kept.
    pub iterations: usize,
}

/// Rows per unit of parallel work in a k-means pass.
const PASS_CHUNK: usize = 8192;

/// x·y in f32 with eight running sums, so that the compiler keeps them in vector lanes (one sum in order
/// would not be reassociated).
fn dot8(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xs.zip(ys) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// ‖x − y‖² in f32.
fn distance32(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    for (a, b) in xs.zip(ys) {
        for l in 0..8 {
            acc[l] += (a[l] - b[l]) * (a[l] - b[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Greedy k-means++ seeding (scikit-learn's: 2 + ⌊ln k⌋ candidates per centre drawn ∝ D², the one that
/// lowers the total most kept). Returns the centres, row-major k × d.
fn seed_centers(p: Points<'_>, k: usize, rng: &mut StdRng) -> Vec<f32> {
    let n = p.n();
    let trials = 2 + (k as f64).ln().floor() as usize;
    let first = rng.random_range(0..n);
    let mut centers = p.row32(first).to_vec();
    let mut closest: Vec<f32> = (0..n)
        .into_par_iter()
        .with_min_len(PASS_CHUNK)
        .map(|i| distance32(p.row32(first), p.row32(i)))
        .collect();
    while centers.len() < k * p.d {
        let total: f64 = closest.iter().map(|v| f64::from(*v)).sum();
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        for _ in 0..trials {
            let mut target = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, d) in closest.iter().enumerate() {
                target -= f64::from(*d);
                if target <= 0.0 {
                    pick = i;
                    break;
                }
            }
            let updated: Vec<f32> = (0..n)
                .into_par_iter()
                .with_min_len(PASS_CHUNK)
                .map(|i| closest[i].min(distance32(p.row32(pick), p.row32(i))))
                .collect();
            let potential: f64 = updated.iter().map(|v| f64::from(*v)).sum();
            if best.as_ref().is_none_or(|b| potential < b.0) {
                best = Some((potential, pick, updated));
            }
        }
        if let Some((_, pick, updated)) = best {
            centers.extend_from_slice(p.row32(pick));
            closest = updated;
        }
    }
    centers
}

/// One Lloyd pass's totals: per cluster the sum of its rows and their count, the inertia, whether a row
/// changed cluster.
struct Pass {
    sums: Vec<f64>,
    counts: Vec<usize>,
    inertia: f64,
    changed: bool,
    /// The row farthest from its centre and that distance (a centre for an emptied cluster).
    farthest: (usize, f32),
}

impl Pass {
    fn new(k: usize, d: usize) -> Self {
        Self {
            sums: vec![0.0; k * d],
            counts: vec![0; k],
            inertia: 0.0,
            changed: false,
            farthest: (0, -1.0),
        }
    }

    fn merge(mut self, other: Self) -> Self {
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.inertia += other.inertia;
        self.changed |= other.changed;
        if other.farthest.1 > self.farthest.1 {
            self.farthest = other.farthest;
        }
        self
    }
}

/// Assigns every row to its nearest centre (into `labels`) and sums the clusters (in f64), in parallel
/// chunks merged in order.
fn lloyd_pass(p: Points<'_>, row_norms: &[f32], centers: &[f32], labels: &mut [usize]) -> Pass {
    let d = p.d;
    let k = centers.len() / d.max(1);
    // ‖x − c‖² = ‖x‖² − 2x·c + ‖c‖²: the nearest centre minimizes ‖c‖² − 2x·c
    let norms: Vec<f32> = centers.chunks_exact(d).map(|c| dot8(c, c)).collect();
    labels
        .par_chunks_mut(PASS_CHUNK)
        .enumerate()
        .map(|(chunk, labels)| {
            let mut pass = Pass::new(k, d);
            // the chunk's products with every centre as one matrix product (the gemm kernel of training)
            let first = chunk * PASS_CHUNK;
            let rows = labels.len();
            let mut dots = vec![0.0f32; rows * k];
            matmul(
                &mut dots,
                View::dense(rows, k),
                false,
                &p.x32[first * d..(first + rows) * d],
                View::dense(rows, d),
                centers,
                View::dense(k, d).t(),
            );
            for (r, label) in labels.iter_mut().enumerate() {
                let i = first + r;
                let row = p.row32(i);
                let mut best = (0, f32::INFINITY);
                for (j, dot) in dots[r * k..(r + 1) * k].iter().enumerate() {
                    let v = norms[j] - 2.0 * dot;
                    if v < best.1 {
                        best = (j, v);
                    }
                }
                let j = best.0;
                let dist = (row_norms[i] + best.1).max(0.0);
                pass.changed |= *label != j;
                *label = j;
                pass.counts[j] += 1;
                pass.inertia += f64::from(dist);
                if dist > pass.farthest.1 {
                    pass.farthest = (i, dist);
                }
                for (s, v) in pass.sums[j * d..(j + 1) * d].iter_mut().zip(row) {
                    *s += f64::from(*v);
                }
            }
            pass
        })
        .reduce(|| Pass::new(k, d), Pass::merge)
}

/// Lloyd's iterations from `centers` until no row changes cluster or the centres move less than `tol`
/// (scikit-learn's: 1e-4 × the mean variance of the columns), at most 300; an emptied cluster takes the row
/// farthest from its centre.
fn lloyd(p: Points<'_>, row_norms: &[f32], mut centers: Vec<f32>, tol: f64) -> Kmeans {
    let (n, d) = (p.n(), p.d);
    let k = centers.len() / d.max(1);
    let mut labels = vec![usize::MAX; n];
    let mut iterations = 0;
    for _ in 0..300 {
        iterations += 1;
        let pass = lloyd_pass(p, row_norms, &centers, &mut labels);
        let mut shift = 0.0;
        for j in 0..k {
            let next: Vec<f32> = if pass.counts[j] == 0 {
                p.row32(pass.farthest.0).to_vec()
            } else {
                pass.sums[j * d..(j + 1) * d]
                    .iter()
                    .map(|s| (s / pass.counts[j] as f64) as f32)
                    .collect()
            };
            shift += f64::from(distance32(&next, &centers[j * d..(j + 1) * d]));
            centers[j * d..(j + 1) * d].copy_from_slice(&next);
        }
        if !pass.changed || shift <= tol {
            break;
        }
    }
    let pass = lloyd_pass(p, row_norms, &centers, &mut labels);
    Kmeans {
        labels,
        inertia: pass.inertia,
        iterations,
        centers: centers
            .chunks_exact(d)
            .map(|c| c.iter().map(|v| f64::from(*v)).collect())
            .collect(),
    }
}

/// The mean of the columns' variances, times 1e-4: scikit-learn's absolute tolerance.
fn tolerance(p: Points<'_>) -> f64 {
    let n = p.n().max(1) as f64;
    let (mut sum, mut squares) = (vec![0.0; p.d], vec![0.0; p.d]);
    for i in 0..p.n() {
        for ((s, q), v) in sum.iter_mut().zip(squares.iter_mut()).zip(p.row32(i)) {
            let v = f64::from(*v);
            *s += v;
            *q += v * v;
        }
    }
    let total: f64 = sum
        .iter()
        .zip(&squares)
        .map(|(s, q)| (q / n - (s / n) * (s / n)).max(0.0))
        .sum();
    1e-4 * total / p.d.max(1) as f64
}

/// The best (lowest inertia) of `n_init` seeded k-means runs.
pub fn kmeans(p: Points<'_>, k: usize, seed: u64, n_init: usize) -> Kmeans {
    let tol = tolerance(p);
    let row_norms: Vec<f32> = (0..p.n())
        .into_par_iter()
        .with_min_len(PASS_CHUNK)
        .map(|i| dot8(p.row32(i), p.row32(i)))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut best: Option<Kmeans> = None;
    for _ in 0..n_init.max(1) {
        let fit = lloyd(p, &row_norms, seed_centers(p, k, &mut rng), tol);
        if best.as_ref().is_none_or(|b| fit.inertia < b.inertia) {
            best = Some(fit);
        }
    }
    best.unwrap_or(Kmeans {
        centers: Vec::new(),
        labels: Vec::new(),
        inertia: f64::NAN,
        iterations: 0,
    })
}

/// Mean silhouette over `rows` (Euclidean; scikit-learn's `silhouette_score` on those rows): a row alone in
/// its cluster scores 0. `None` with fewer than two clusters among them.
pub fn silhouette(p: Points<'_>, labels: &[usize], rows: &[usize]) -> Option<f64> {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let mut sizes = vec![0usize; k];
    for &i in rows {
        sizes[labels[i]] += 1;
    }
    if sizes.iter().filter(|s| **s > 0).count() < 2 {
        return None;
    }
    let scores: Vec<f64> = rows
        .par_iter()
        .map(|&i| {
            let mut sums = vec![0.0; k];
            for &j in rows {
                if j != i {
                    sums[labels[j]] += distance2(p.row(i), p.row(j)).sqrt();
                }
            }
            let own = labels[i];
            if sizes[own] <= 1 {
                return 0.0;
            }
            let a = sums[own] / (sizes[own] - 1) as f64;
            let b = (0..k)
                .filter(|&c| c != own && sizes[c] > 0)
                .map(|c| sums[c] / sizes[c] as f64)
                .fold(f64::INFINITY, f64::min);
            (b - a) / a.max(b)
        })
        .collect();
    Some(scores.iter().sum::<f64>() / scores.len() as f64)
}

/// A Gaussian mixture solution.
#[derive(Debug, Clone)]
pub struct Mixture {
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    pub covariances: Vec<Vec<f64>>,
    pub labels: Vec<usize>,
    /// Mean log-likelihood per row.
    pub log_likelihood: f64,
    pub bic: f64,
}

/// Weights, means and covariances (plus `reg` on the diagonal) from responsibilities (n × k).
fn m_step(
    p: Points<'_>,
    resp: &[Vec<f64>],
    k: usize,
    reg: f64,
) -> (Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let (n, d) = (p.n(), p.d);
    let mut weights = vec![0.0; k];
    let mut means = vec![vec![0.0; d]; k];
    for (i, r) in resp.iter().enumerate() {
        for j in 0..k {
            weights[j] += r[j];
            for (m, v) in means[j].iter_mut().zip(p.row(i)) {
                *m += r[j] * v;
            }
        }
    }
    let covariances = (0..k)
        .into_par_iter()
        .map(|j| {
            let nk = weights[j] + 10.0 * f64::EPSILON;
            let mean: Vec<f64> = means[j].iter().map(|m| m / nk).collect();
            let mut cov = vec![0.0; d * d];
            for (i, r) in resp.iter().enumerate() {
                let w = r[j];
                if w == 0.0 {
                    continue;
                }
                let row = p.row(i);
                for a in 0..d {
                    let da = w * (row[a] - mean[a]);
                    for b in 0..=a {
                        cov[a * d + b] += da * (row[b] - mean[b]);
                    }
                }
            }
            for a in 0..d {
                for b in 0..a {
                    cov[a * d + b] /= nk;
                    cov[b * d + a] = cov[a * d + b];
                }
                cov[a * d + a] = cov[a * d + a] / nk + reg;
            }
            cov
        })
        .collect();
    for j in 0..k {
        let nk = weights[j] + 10.0 * f64::EPSILON;
        for m in &mut means[j] {
            *m /= nk;
        }
        weights[j] = nk / n as f64;
    }
    (weights, means, covariances)
}

/// Responsibilities and the mean log-likelihood; `None` when a covariance is not positive definite.
fn e_step(
    p: Points<'_>,
    weights: &[f64],
    means: &[Vec<f64>],
    covariances: &[Vec<f64>],
) -> Option<(Vec<Vec<f64>>, f64)> {
    let components: Vec<Component> = (0..weights.len())
        .map(|j| Component::new(&means[j], &covariances[j], weights[j]))
        .collect::<Option<_>>()?;
    let rows: Vec<(Vec<f64>, f64)> = (0..p.n())
        .into_par_iter()
        .with_min_len(256)
        .map(|i| {
            let logs: Vec<f64> = components.iter().map(|c| c.log_density(p.row(i))).collect();
            let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total = m + logs.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
            (logs.iter().map(|l| (l - total).exp()).collect(), total)
        })
        .collect();
    let mean = rows.iter().map(|(_, t)| t).sum::<f64>() / p.n().max(1) as f64;
    Some((rows.into_iter().map(|(r, _)| r).collect(), mean))
}

/// EM from the hard clusters `init` until the mean log-likelihood changes by less than 1e-3 (at most 100
/// iterations). `None` when a component collapses.
pub fn mixture(p: Points<'_>, k: usize, init: &[usize]) -> Option<Mixture> {
    const REG: f64 = 1e-6;
    let (n, d) = (p.n(), p.d);
    let mut resp: Vec<Vec<f64>> = init
        .iter()
        .map(|&j| (0..k).map(|c| f64::from(u8::from(c == j))).collect())
        .collect();
    let (mut weights, mut means, mut covariances) = m_step(p, &resp, k, REG);
    let mut previous = f64::NEG_INFINITY;
    let mut log_likelihood = f64::NEG_INFINITY;
    for _ in 0..100 {
        let (r, ll) = e_step(p, &weights, &means, &covariances)?;
        resp = r;
        log_likelihood = ll;
        (weights, means, covariances) = m_step(p, &resp, k, REG);
        if (ll - previous).abs() < 1e-3 {
            break;
        }
        previous = ll;
    }
    // the final parameters' own likelihood and labels, as scikit-learn's fit leaves them
    let (resp, ll) = e_step(p, &weights, &means, &covariances)?;
    log_likelihood = if ll.is_finite() { ll } else { log_likelihood };
    let labels = resp
        .iter()
        .map(|r| (0..k).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap_or(0))
        .collect();
    let parameters = (k * d + k * d * (d + 1) / 2 + k - 1) as f64;
    Some(Mixture {
        bic: -2.0 * log_likelihood * n as f64 + parameters * (n as f64).ln(),
        weights,
        means,
        covariances,
        labels,
        log_likelihood,
    })
}

/// The adjusted Rand index of two labelings of the same rows (Hubert and Arabie; scikit-learn's
/// `adjusted_rand_score`).
pub fn adjusted_rand(a: &[usize], b: &[usize]) -> f64 {
    let ka = a.iter().max().map_or(0, |m| m + 1);
    let kb = b.iter().max().map_or(0, |m| m + 1);
    let mut table = vec![0u64; ka * kb];
    for (&x, &y) in a.iter().zip(b) {
        table[x * kb + y] += 1;
    }
    let pairs = |v: u64| (v * v.saturating_sub(1)) as f64 / 2.0;
    let index: f64 = table.iter().map(|&v| pairs(v)).sum();
    let rows: f64 = (0..ka)
        .map(|i| pairs(table[i * kb..(i + 1) * kb].iter().sum()))
        .sum();
    let cols: f64 = (0..kb)
        .map(|j| pairs((0..ka).map(|i| table[i * kb + j]).sum()))
        .sum();
    let expected = rows * cols / pairs(a.len() as u64);
    let max = (rows + cols) / 2.0;
    if (max - expected).abs() < f64::EPSILON {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

/// One fitted clustering with k clusters: its labels, criterion and the model that assigns new rows.
struct Fit {
    labels: Vec<usize>,
    choice: ClusterChoice,
    centers: Vec<Vec<f64>>,
    weights: Vec<f64>,
    covariances: Vec<Vec<f64>>,
}

/// Seeded k-means runs per fit, the best kept (scikit-learn's classic `n_init=10`).
const N_INIT: usize = 10;

fn fit_k(
    p: Points<'_>,
    c: &ClusteringConfig,
    k: usize,
    seed: u64,
    sample: &[usize],
) -> Result<Fit> {
    let km = kmeans(p, k, seed, N_INIT);
    match c.method {
        ClusterMethod::Kmeans => Ok(Fit {
            choice: ClusterChoice {
                k,
                silhouette: silhouette(p, &km.labels, sample),
                bic: None,
                fit: km.inertia,
            },
            labels: km.labels,
            centers: km.centers,
            weights: Vec::new(),
            covariances: Vec::new(),
        }),
        ClusterMethod::Gmm => {
            let m = mixture(p, k, &km.labels).ok_or_else(|| {
                Error::bad_data(
                    "clustering",
                    format!("the Gaussian mixture with {k} components collapsed (a covariance is singular)"),
                )
            })?;
            Ok(Fit {
                choice: ClusterChoice {
                    k,
                    silhouette: silhouette(p, &m.labels, sample),
                    bic: Some(m.bic),
                    fit: m.log_likelihood,
                },
                labels: m.labels,
                centers: m.means,
                weights: m.weights,
                covariances: m.covariances,
            })
        }
    }
}

/// Clusters `p` for every k of the range and keeps the best by the method's criterion.
fn choose(p: Points<'_>, c: &ClusteringConfig, seed: u64) -> Result<(Fit, Vec<ClusterChoice>)> {
    let n = p.n();
    if c.k[1] > n {
        return Err(Error::bad_data(
            "clustering.k",
            format!(
                "{} clusters asked for but the train split has {n} rows",
                c.k[1]
            ),
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5111);
    let sample = sample_rows(n, c.silhouette_rows, &mut rng);
    let mut best: Option<Fit> = None;
    let mut tried = Vec::new();
    for k in c.k[0]..=c.k[1] {
        let fit = fit_k(p, c, k, seed, &sample)?;
        tried.push(fit.choice.clone());
        let better = |a: &Fit, b: &Fit| match c.method {
            ClusterMethod::Kmeans => {
                a.choice.silhouette.unwrap_or(f64::NEG_INFINITY)
                    > b.choice.silhouette.unwrap_or(f64::NEG_INFINITY)
            }
            ClusterMethod::Gmm => {
                a.choice.bic.unwrap_or(f64::INFINITY) < b.choice.bic.unwrap_or(f64::INFINITY)
            }
        };
        if best.as_ref().is_none_or(|b| better(&fit, b)) {
            best = Some(fit);
        }
    }
    let best =
        best.ok_or_else(|| Error::bad_data("clustering.k", "no number of clusters to try"))?;
    Ok((best, tried))
}

/// At most `limit` distinct row indices, seeded (all rows, in order, when there are no more).
fn sample_rows(n: usize, limit: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    if n <= limit {
        return all;
    }
    for i in 0..limit {
        let j = rng.random_range(i..n);
        all.swap(i, j);
    }
    all.truncate(limit);
    all.sort_unstable();
    all
}

/// The chosen clustering refitted on bootstrap resamples, each refit's assignment of every row against the
/// chosen labels.
fn stability(
    p: Points<'_>,
    c: &ClusteringConfig,
    chosen: &Fit,
    seed: u64,
) -> Result<Option<ClusterStability>> {
    if c.bootstrap == 0 {
        return Ok(None);
    }
    let (n, d, k) = (p.n(), p.d, chosen.centers.len());
    let mut rng = StdRng::seed_from_u64(seed ^ 0xb007);
    let mut aris = Vec::with_capacity(c.bootstrap);
    for b in 0..c.bootstrap {
        let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
        let x: Vec<f64> = rows.iter().flat_map(|&i| p.row(i).to_vec()).collect();
        let x32: Vec<f32> = rows.iter().flat_map(|&i| p.row32(i).to_vec()).collect();
        let resample = Points {
            x: &x,
            x32: &x32,
            d,
        };
        let refit = fit_k(resample, c, k, seed.wrapping_add(b as u64 + 1), &[])?;
        let model = Phenotypes {
            method: c.method,
            columns: Vec::new(),
            names: Vec::new(),
            centers: refit.centers,
            weights: refit.weights,
            covariances: refit.covariances,
            feature_spec: empty_spec(),
        };
        let labels = assign_points(&model, p);
        aris.push(adjusted_rand(&chosen.labels, &labels));
    }
    Ok(Some(ClusterStability {
        resamples: aris.len(),
        ari_mean: aris.iter().sum::<f64>() / aris.len() as f64,
        ari_min: aris.iter().copied().fold(f64::INFINITY, f64::min),
        ari_max: aris.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }))
}

fn empty_spec() -> FeatureSpec {
    FeatureSpec {
        numeric: Vec::new(),
        categorical: Vec::new(),
        columns: Vec::new(),
        train_rows: 0,
        arm_field: String::new(),
    }
}

/// A model's clusters of rows already selected (the clustered columns, f64).
fn assign_points(model: &Phenotypes, p: Points<'_>) -> Vec<usize> {
    let rows: Vec<Vec<f64>> = (0..p.n()).map(|i| p.row(i).to_vec()).collect();
    model.assign_selected(&rows)
}

/// The `cluster` task: fits on the train split, assigns every split, writes `phenotypes/model.json` and
/// `phenotypes/clusters.json`.
pub async fn cluster(cfg: &Config, lake: &Storage) -> Result<PhenotypeReport> {
    let c = cfg.clustering.as_ref().ok_or_else(|| {
        Error::config(
            &cfg.source_file,
            "clustering",
            "the cluster task needs a `clustering` section",
        )
    })?;
    let spec: FeatureSpec = contracts::load(lake).await?;
    let targets = cfg.target_columns();
    let mut splits = Vec::new();
    for name in lake::SPLITS {
        splits.push(trialflow_model::split::load_split(lake, &spec, name, &[], &targets).await?);
    }
    let columns = baseline_columns(&spec);
    let mut model = Phenotypes {
        method: c.method,
        names: columns.iter().map(|&i| spec.columns[i].clone()).collect(),
        columns,
        centers: Vec::new(),
        weights: Vec::new(),
        covariances: Vec::new(),
        feature_spec: spec.clone(),
    };
    let train_x: Vec<f64> = model.select(&splits[0].x).into_iter().flatten().collect();
    let train_x32: Vec<f32> = train_x.iter().map(|v| *v as f32).collect();
    let p = Points {
        x: &train_x,
        x32: &train_x32,
        d: model.columns.len(),
    };
    if model.columns.is_empty() || p.n() == 0 {
        return Err(Error::bad_data(
            lake.display(lake::FEATURES),
            "nothing to cluster: the train split is empty or has no model input but the arm",
        ));
    }
    let seed = cfg.training.seed;
    let (chosen, tried) = tokio::task::block_in_place(|| choose(p, c, seed))?;
    let stability = tokio::task::block_in_place(|| stability(p, c, &chosen, seed))?;
    model.centers = chosen.centers.clone();
    model.weights = chosen.weights.clone();
    model.covariances = chosen.covariances.clone();
    let report = PhenotypeReport {
        method: c.method,
        columns: model.names.clone(),
        train_rows: p.n(),
        k: chosen.centers.len(),
        tried,
        stability,
        outcome_measure: outcome_measure(cfg).into(),
        clusters: profiles(cfg, &model, &splits, &chosen.labels),
        note: "exploratory: clusters found in the baseline data, not randomized groups; the outcome by arm within \
               a cluster is descriptive, without tests or intervals"
            .into(),
    };
    lake.put_json(lake::PHENOTYPES_MODEL, &model).await?;
    contracts::save(lake, &report).await?;
    Ok(report)
}

fn outcome_measure(cfg: &Config) -> &'static str {
    match cfg.training.endpoint {
        Endpoint::Binary => "proportion with the outcome",
        Endpoint::Continuous => "mean of the target",
        Endpoint::TimeToEvent => "events per 100 units of follow-up time",
    }
}

/// Each cluster's inputs on their own scale (train rows) and outcome by arm (every split's rows).
fn profiles(
    cfg: &Config,
    model: &Phenotypes,
    splits: &[trialflow_model::split::Split],
    train_labels: &[usize],
) -> Vec<ClusterProfile> {
    let spec = &model.feature_spec;
    let width = spec.width().max(1);
    let k = model.centers.len();
    let target_width = cfg.training.endpoint.target_width();
    // (cluster, arm, targets) of every row of every split
    let mut rows: Vec<(usize, Option<String>, Vec<f32>)> = Vec::new();
    for s in splits {
        let labels = model.assign(&s.x);
        let arms = s
            .slices
            .iter()
            .find(|(c, _)| c == "arm")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| vec![None; s.rows]);
        for (i, label) in labels.into_iter().enumerate() {
            rows.push((
                label,
                arms[i].clone(),
                s.y[i * target_width..(i + 1) * target_width].to_vec(),
            ));
        }
    }
    let train = &splits[0];
    (0..k)
        .map(|j| {
            let members: Vec<usize> = (0..train_labels.len())
                .filter(|&i| train_labels[i] == j)
                .collect();
            let mean_of = |col: usize| {
                members
                    .iter()
                    .map(|&i| f64::from(train.x[i * width + col]))
                    .sum::<f64>()
                    / members.len().max(1) as f64
            };
            let numeric = spec
                .numeric
                .iter()
                .enumerate()
                .map(|(c, f)| (f.name.clone(), f.mean + f.std * mean_of(c)))
                .collect();
            let mut next = spec.numeric.len();
            let mut levels = std::collections::BTreeMap::new();
            for f in &spec.categorical {
                let shares = f
                    .levels
                    .iter()
                    .enumerate()
                    .map(|(l, level)| (level.clone(), mean_of(next + l)))
                    .collect();
                next += f.levels.len();
                if f.name != spec.arm_field {
                    levels.insert(f.name.clone(), shares);
                }
            }
            let in_cluster: Vec<&(usize, Option<String>, Vec<f32>)> =
                rows.iter().filter(|r| r.0 == j).collect();
            ClusterProfile {
                cluster: j,
                train_rows: members.len(),
                rows: in_cluster.len(),
                numeric,
                levels,
                outcome: arm_outcomes(cfg, &in_cluster),
            }
        })
        .collect()
}

/// The outcome in each arm of one cluster, and its difference from the reference arm's.
fn arm_outcomes(cfg: &Config, rows: &[&(usize, Option<String>, Vec<f32>)]) -> Vec<ArmOutcome> {
    let mut arms: Vec<String> = rows.iter().filter_map(|r| r.1.clone()).collect();
    arms.sort();
    arms.dedup();
    let value = |arm: &str| -> (usize, Option<f64>) {
        let ys: Vec<&Vec<f32>> = rows
            .iter()
            .filter(|r| r.1.as_deref() == Some(arm))
            .map(|r| &r.2)
            .collect();
        let n = ys.len();
        if n == 0 {
            return (0, None);
        }
        let v = match cfg.training.endpoint {
            Endpoint::TimeToEvent => {
                let time: f64 = ys.iter().map(|y| f64::from(y[0])).sum();
                let events: f64 = ys.iter().map(|y| f64::from(y[1])).sum();
                (time > 0.0).then(|| 100.0 * events / time)
            }
            _ => Some(ys.iter().map(|y| f64::from(y[0])).sum::<f64>() / n as f64),
        };
        (n, v)
    };
    let reference = value(&cfg.dataset.arm.reference).1;
    arms.iter()
        .map(|arm| {
            let (n, v) = value(arm);
            ArmOutcome {
                arm: arm.clone(),
                n,
                value: v,
                difference: v.zip(reference).map(|(a, b)| a - b),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three well-separated blobs: k-means finds them (ARI 1 against the truth), the silhouette peaks at 3,
    /// the mixture's BIC too, and the ARI of a relabelling is 1, of an unrelated labelling about 0.
    #[test]
    fn three_blobs_are_found_by_both_methods() {
        let mut rng = StdRng::seed_from_u64(4);
        let centres = [[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]];
        let mut x = Vec::new();
        let mut truth = Vec::new();
        for i in 0..300 {
            let c = i % 3;
            truth.push(c);
            for v in centres[c] {
                x.push(v + rng.random_range(-1.0..1.0));
            }
        }
        let x32: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let p = Points {
            x: &x,
            x32: &x32,
            d: 2,
        };
        let km = kmeans(p, 3, 1, 2);
        assert!((adjusted_rand(&truth, &km.labels) - 1.0).abs() < 1e-12);
        let all: Vec<usize> = (0..300).collect();
        let sil = |k| silhouette(p, &kmeans(p, k, 1, 2).labels, &all).unwrap();
        assert!(
            sil(3) > sil(2) && sil(3) > sil(4),
            "{} {} {}",
            sil(2),
            sil(3),
            sil(4)
        );
        let bic = |k| mixture(p, k, &kmeans(p, k, 1, 2).labels).unwrap().bic;
        assert!(bic(3) < bic(2) && bic(3) < bic(4));
        let relabelled: Vec<usize> = truth.iter().map(|c| (c + 1) % 3).collect();
        assert!((adjusted_rand(&truth, &relabelled) - 1.0).abs() < 1e-12);
        let unrelated: Vec<usize> = (0..300).map(|i| (i / 3) % 3).collect();
        assert!(adjusted_rand(&truth, &unrelated).abs() < 0.05);
    }
}
