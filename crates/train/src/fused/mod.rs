//! The CPU training step for the feed-forward networks, fused: forward, loss, backward and AdamW over
//! preallocated buffers, with the matrix products in the `gemm` kernel candle's CPU backend uses. candle's
//! autograd allocates a tensor per operation and walks a graph per step, which at these sizes costs more than
//! the arithmetic (see docs/benchmarks.md); the CUDA path stays on candle. The mathematics is candle's and
//! PyTorch's: `nn.Linear` layout, BCE-with-logits with `pos_weight`, inverted dropout, AdamW as candle-nn
//! defines it. A test checks the gradients against candle's autograd.
//!
//! Deterministic whatever the thread count: a batch is cut into fixed chunks of [`CHUNK`] rows, each chunk's
//! gradient is computed on its own (in parallel) and the chunks are summed in order; dropout masks come from
//! a counter-seeded generator per (step, chunk, layer).

pub(crate) mod gemm;

use gemm::{View, matmul};
use rayon::prelude::*;
use trialflow_core::config::Activation;

/// Rows per unit of parallel work (and of the fixed summation order); 128 to 1024 measured alike at batch
/// 4096, 128 lets batch 256 use both cores.
const CHUNK: usize = 128;

/// Parameters of one network, flat: per layer the weight `[out][in]` then the bias `[out]`.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// Layer widths from the input to the single logit.
    dims: Vec<usize>,
    activation: Activation,
    /// Dropout probability after each hidden layer.
    dropout: Vec<f32>,
    pub params: Vec<f32>,
}

/// AdamW's state, as candle-nn's `AdamW` keeps it.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub lr: f64,
    pub weight_decay: f64,
    m: Vec<f32>,
    v: Vec<f32>,
    step: i32,
}

impl AdamW {
    pub fn new(params: usize, lr: f64, weight_decay: f64) -> Self {
        Self {
            lr,
            weight_decay,
            m: vec![0.0; params],
            v: vec![0.0; params],
            step: 0,
        }
    }

    fn update(&mut self, theta: &mut [f32], grad: &[f32]) {
        const BETA1: f64 = 0.9;
        const BETA2: f64 = 0.999;
        const EPS: f32 = 1e-8;
        self.step += 1;
        let scale_m = (1.0 / (1.0 - BETA1.powi(self.step))) as f32;
        let scale_v = (1.0 / (1.0 - BETA2.powi(self.step))) as f32;
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let lr = self.lr as f32;
        let (b1, b2) = (BETA1 as f32, BETA2 as f32);
        for (((t, m), v), g) in theta
            .iter_mut()
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
            .zip(grad)
        {
            *m = *m * b1 + g * (1.0 - b1);
            *v = *v * b2 + g * g * (1.0 - b2);
            let adjusted = (*m * scale_m) / ((*v * scale_v).sqrt() + EPS);
            *t = *t * decay - adjusted * lr;
        }
    }
}

/// Buffers for one chunk's forward and backward pass, reused across steps.
#[derive(Debug, Default)]
struct Work {
    /// Layer inputs: `h[0]` the gathered features, `h[l]` the (masked) activations of hidden layer `l`.
    h: Vec<Vec<f32>>,
    /// Per hidden layer, ∂h/∂a: the activation's derivative times the dropout scale (0 where dropped).
    gate: Vec<Vec<f32>>,
    /// Pre-activations of the current layer, then its upstream gradient.
    a: Vec<Vec<f32>>,
    z: Vec<f32>,
    /// The chunk's outcomes.
    y: Vec<f32>,
    /// Dropout's random draws for one layer.
    uniforms: Vec<u16>,
    grad: Vec<f32>,
    loss: f64,
}

/// wyrand: one multiply per 64 random bits; seeded per (step, chunk, layer) so masks do not depend on threads.
struct Wy(u64);

impl Wy {
    fn new(seed: u64, step: u64, chunk: u64, layer: u64) -> Self {
        let mut s = Wy(seed ^ 0x9e37_79b9_7f4a_7c15);
        for v in [step, chunk, layer] {
            s.0 ^= v.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            s.next();
        }
        s
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }
}

/// Numerically stable per-row BCE on logits with positive weight `w` and its derivative in `z`:
/// (1 − y)·z + (1 + (w − 1)·y)·softplus(−z).
fn bce(z: f32, y: f32, w: f32) -> (f64, f32) {
    let weight = 1.0 + (w - 1.0) * y;
    // f32 like the logits themselves (candle's loss is f32 too); summed in f64 by the callers
    let e = (-z.abs()).exp();
    let softplus_neg = (-z).max(0.0) + e.ln_1p();
    let loss = (1.0 - y) * z + weight * softplus_neg;
    // σ(−z) from the same exponential: e/(1+e) for z ≥ 0, 1/(1+e) for z < 0
    let sigmoid_neg = if z >= 0.0 {
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + e)
    };
    (f64::from(loss), (1.0 - y) - weight * sigmoid_neg)
}

/// The loss of one row (for validation).
pub fn bce_loss(z: f32, y: f32, pos_weight: f32) -> f64 {
    bce(z, y, pos_weight).0
}

/// What the network's single output is trained against, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Binary cross-entropy on the logit with a positive-class weight (PyTorch's `BCEWithLogitsLoss`).
    Bce { pos_weight: f32 },
    /// Squared error of the output against the standardized target (y − mean)/sd (PyTorch's `MSELoss`); the
    /// output is put back on the target's scale after training.
    Squared { mean: f32, sd: f32 },
    /// Huber's loss on the standardized target (PyTorch's `HuberLoss(delta)`).
    Huber { mean: f32, sd: f32, delta: f32 },
    /// The Cox negative log partial likelihood of the output as a log hazard ratio, with each batch's rows as
    /// the risk sets (as pycox's `CoxPHLoss`), divided by the batch's events; targets are (time, event).
    Cox { efron: bool },
}

impl Objective {
    /// Target values per row.
    pub fn width(self) -> usize {
        match self {
            Objective::Cox { .. } => 2,
            _ => 1,
        }
    }

    /// The loss of one row and its derivative in the output (every objective but Cox's).
    fn row(self, z: f32, y: &[f32]) -> (f64, f32) {
        match self {
            Objective::Bce { pos_weight } => bce(z, y[0], pos_weight),
            Objective::Squared { mean, sd } => {
                let r = z - (y[0] - mean) / sd;
                (f64::from(r * r), 2.0 * r)
            }
            Objective::Huber { mean, sd, delta } => {
                let r = z - (y[0] - mean) / sd;
                if r.abs() <= delta {
                    (f64::from(0.5 * r * r), r)
                } else {
                    (
                        f64::from(delta * (r.abs() - 0.5 * delta)),
                        delta * r.signum(),
                    )
                }
            }
            Objective::Cox { .. } => (0.0, 0.0),
        }
    }

    /// The mean loss of `z` against row-major targets `y`, and its gradient in each output into `dz`.
    pub fn loss_and_gradient(self, z: &[f32], y: &[f32], dz: &mut Vec<f32>) -> f64 {
        dz.clear();
        dz.resize(z.len(), 0.0);
        match self {
            Objective::Cox { efron } => cox(z, y, efron, dz),
            _ => {
                let w = self.width();
                let n = z.len().max(1) as f32;
                let mut sum = 0.0;
                for ((d, &zi), yi) in dz.iter_mut().zip(z).zip(y.chunks_exact(w)) {
                    let (loss, grad) = self.row(zi, yi);
                    sum += loss;
                    *d = grad / n;
                }
                sum / f64::from(n)
            }
        }
    }

    /// The mean loss alone (validation).
    pub fn loss(self, z: &[f32], y: &[f32]) -> f64 {
        self.loss_and_gradient(z, y, &mut Vec::new())
    }
}

/// The Cox negative log partial likelihood of log hazard ratios `z` with targets `[time, event]` per row,
/// Efron's or Breslow's handling of tied event times, divided by the number of events (0 without events);
/// its gradient into `dz`. For a group of d events at one time with D the sum of their eᶻ and S that of the
/// risk set, Efron's denominators are S − (l/d)·D for l = 0…d−1 (R's `coxph` default), Breslow's S each.
fn cox(z: &[f32], y: &[f32], efron: bool, dz: &mut [f32]) -> f64 {
    let n = z.len();
    let time = |i: usize| y[2 * i];
    let died = |i: usize| y[2 * i + 1] > 0.5;
    let events = (0..n).filter(|&i| died(i)).count();
    if events == 0 {
        return 0.0;
    }
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = z.iter().map(|&v| f64::from(v - m).exp()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| time(b).total_cmp(&time(a)));
    // groups of equal time, latest first: (members, A = Σ_l 1/den_l, B = Σ_l (l/d)/den_l)
    let mut groups: Vec<(std::ops::Range<usize>, f64, f64)> = Vec::new();
    let (mut risk, mut loss) = (0.0f64, 0.0f64);
    let mut i = 0;
    while i < n {
        let start = i;
        let t = time(order[i]);
        let (mut d, mut tied, mut zsum) = (0usize, 0.0f64, 0.0f64);
        while i < n && time(order[i]) == t {
            let k = order[i];
            risk += w[k];
            if died(k) {
                d += 1;
                tied += w[k];
                zsum += f64::from(z[k] - m);
            }
            i += 1;
        }
        let (mut a, mut b) = (0.0, 0.0);
        for l in 0..d {
            let share = if efron { l as f64 / d as f64 } else { 0.0 };
            let den = risk - share * tied;
            loss += den.ln();
            a += 1.0 / den;
            b += share / den;
        }
        loss -= zsum;
        groups.push((start..i, a, b));
    }
    // ∂/∂zₖ = −δₖ + wₖ·(Σ of A over the groups at or before tₖ − δₖ·B of its own group)
    let scale = 1.0 / events as f64;
    let mut cumulative = 0.0;
    for (members, a, b) in groups.iter().rev() {
        cumulative += a;
        for &k in &order[members.clone()] {
            let own = if died(k) { *b } else { 0.0 };
            let delta = if died(k) { 1.0 } else { 0.0 };
            dz[k] = ((w[k] * (cumulative - own) - delta) * scale) as f32;
        }
    }
    loss * scale
}

impl Mlp {
    /// From per-layer `(weight [out][in], bias [out])` as `Network` holds them.
    pub fn from_layers(
        layers: &[(Vec<f32>, Vec<f32>)],
        input: usize,
        activation: Activation,
        dropout: &[f32],
    ) -> Self {
        let mut dims = vec![input];
        let mut params = Vec::new();
        for (w, b) in layers {
            dims.push(b.len());
            params.extend(w);
            params.extend(b);
        }
        let hidden = dims.len().saturating_sub(2);
        Self {
            dims,
            activation,
            dropout: (0..hidden)
                .map(|i| dropout.get(i).copied().unwrap_or(0.0))
                .collect(),
            params,
        }
    }

    /// Per-layer `(weight, bias)` copies.
    pub fn layers(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        let mut at = 0;
        self.dims
            .windows(2)
            .map(|d| {
                let w = self.params[at..at + d[0] * d[1]].to_vec();
                at += d[0] * d[1];
                let b = self.params[at..at + d[1]].to_vec();
                at += d[1];
                (w, b)
            })
            .collect()
    }

    fn layer_count(&self) -> usize {
        self.dims.len() - 1
    }

    /// Offsets of layer `l`'s weight and bias in `params`.
    fn offsets(&self, l: usize) -> (usize, usize) {
        let mut at = 0;
        for d in self.dims.windows(2).take(l) {
            at += d[0] * d[1] + d[1];
        }
        (at, at + self.dims[l] * self.dims[l + 1])
    }

    /// Forward over `rows` rows already in `w.h[0]`; logits land in `w.z`. With `dropout = Some(rng seed)`
    /// the hidden layers are masked and their gates kept for the backward pass.
    fn forward(&self, w: &mut Work, rows: usize, mut dropout: Option<Wy>) {
        let layers = self.layer_count();
        w.h.resize_with(layers, Vec::new);
        w.a.resize_with(layers, Vec::new);
        w.gate.resize_with(layers, Vec::new);
        for l in 0..layers {
            let (input, out) = (self.dims[l], self.dims[l + 1]);
            let (wo, bo) = self.offsets(l);
            let weight = &self.params[wo..bo];
            let bias = &self.params[bo..bo + out];
            let a = &mut w.a[l];
            a.resize(rows * out, 0.0);
            for row in a.chunks_exact_mut(out) {
                row.copy_from_slice(bias);
            }
            matmul(
                a,
                View::dense(rows, out),
                true,
                &w.h[l],
                View::dense(rows, input),
                weight,
                View::dense(out, input).t(),
            );
            if l + 1 == layers {
                w.z.clear();
                w.z.extend_from_slice(&a[..rows]);
                break;
            }
            let p = self.dropout[l];
            let next = &mut w.h[l + 1];
            next.resize(rows * out, 0.0);
            let gate = &mut w.gate[l];
            gate.resize(rows * out, 0.0);
            match self.activation {
                Activation::Relu => {
                    for ((h, g), &v) in next.iter_mut().zip(gate.iter_mut()).zip(a.iter()) {
                        let on = if v > 0.0 { 1.0 } else { 0.0 };
                        *h = v * on;
                        *g = on;
                    }
                }
                Activation::Tanh => {
                    for ((h, g), &v) in next.iter_mut().zip(gate.iter_mut()).zip(a.iter()) {
                        let t = v.tanh();
                        *h = t;
                        *g = 1.0 - t * t;
                    }
                }
            }
            if let (Some(rng), true) = (dropout.as_mut(), p > 0.0) {
                // 16-bit uniforms, four per draw: P(drop) = ⌊p·65536⌋/65536. Drawn first, applied in a
                // second, branch-free pass that the compiler vectorizes.
                let cut = (f64::from(p) * 65536.0) as u16;
                let keep = 1.0 / (1.0 - p);
                let uniforms = &mut w.uniforms;
                uniforms.clear();
                uniforms.reserve(next.len() + 4);
                while uniforms.len() < next.len() {
                    let bits = rng.next();
                    uniforms.extend_from_slice(&[
                        bits as u16,
                        (bits >> 16) as u16,
                        (bits >> 32) as u16,
                        (bits >> 48) as u16,
                    ]);
                }
                for ((h, g), &u) in next.iter_mut().zip(gate.iter_mut()).zip(uniforms.iter()) {
                    let scale = if u < cut { 0.0 } else { keep };
                    *h *= scale;
                    *g *= scale;
                }
            }
        }
    }

    /// ∂loss/∂z of each row of one chunk into `a[last]`, scaled by `1/total` (the batch's mean); the chunk's
    /// summed loss into `w.loss`. For the objectives with a loss per row.
    fn row_losses(&self, w: &mut Work, rows: usize, objective: Objective, total: usize) {
        let layers = self.layer_count();
        w.loss = 0.0;
        let scale = 1.0 / total as f32;
        let width = objective.width();
        let dz = &mut w.a[layers - 1];
        dz.resize(rows, 0.0);
        for ((d, &z), t) in dz.iter_mut().zip(&w.z).zip(w.y.chunks_exact(width)) {
            let (loss, grad) = objective.row(z, t);
            w.loss += loss;
            *d = grad * scale;
        }
    }

    /// Gradient of the loss over one chunk into `w.grad`, from ∂loss/∂z in `a[last]`.
    fn backward(&self, w: &mut Work, rows: usize) {
        let layers = self.layer_count();
        w.grad.resize(self.params.len(), 0.0);
        for l in (0..layers).rev() {
            let (input, out) = (self.dims[l], self.dims[l + 1]);
            let (wo, bo) = self.offsets(l);
            let (gw, rest) = w.grad[wo..].split_at_mut(bo - wo);
            let da = std::mem::take(&mut w.a[l]);
            matmul(
                gw,
                View::dense(out, input),
                false,
                &da,
                View::dense(rows, out).t(),
                &w.h[l],
                View::dense(rows, input),
            );
            let gb = &mut rest[..out];
            gb.fill(0.0);
            for row in da.chunks_exact(out) {
                for (g, d) in gb.iter_mut().zip(row) {
                    *g += d;
                }
            }
            if l > 0 {
                let below = &mut w.a[l - 1];
                below.resize(rows * input, 0.0);
                matmul(
                    below,
                    View::dense(rows, input),
                    false,
                    &da,
                    View::dense(rows, out),
                    &self.params[wo..bo],
                    View::dense(out, input),
                );
                for (d, g) in below.iter_mut().zip(&w.gate[l - 1]) {
                    *d *= g;
                }
            }
            w.a[l] = da;
        }
    }

    /// Logits for row-major `x` (no dropout), in parallel chunks.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let dim = self.dims[0];
        let rows = x.len() / dim.max(1);
        let mut out = vec![0.0; rows];
        out.par_chunks_mut(CHUNK * 4)
            .zip(x.par_chunks(CHUNK * 4 * dim.max(1)))
            .for_each(|(z, xs)| {
                let mut w = Work::default();
                w.h.push(xs.to_vec());
                self.forward(&mut w, z.len(), None);
                z.copy_from_slice(&w.z);
            });
        out
    }

    /// Mean loss and gradient of a batch given by row indices into `x`/`y`, without dropout: for the checks.
    pub fn loss_and_gradient(
        &self,
        x: &[f32],
        y: &[f32],
        rows: &[u32],
        objective: Objective,
    ) -> (f64, Vec<f32>) {
        let mut trainer = Trainer::new(self, 0);
        trainer.gradient(self, x, y, rows, objective, None);
        (trainer.loss, trainer.grad)
    }
}

/// A training run's reusable state: per-chunk buffers and the summed gradient.
#[derive(Debug)]
pub struct Trainer {
    works: Vec<Work>,
    grad: Vec<f32>,
    loss: f64,
    seed: u64,
    step: u64,
}

impl Trainer {
    pub fn new(mlp: &Mlp, seed: u64) -> Self {
        Self {
            works: Vec::new(),
            grad: vec![0.0; mlp.params.len()],
            loss: 0.0,
            seed,
            step: 0,
        }
    }

    /// Gradient of the mean loss over `batch` (indices into `x` rows / `y` rows of the objective's width)
    /// into `self.grad`; the mean loss into `self.loss`. `dropout_step` seeds the masks (None: no dropout).
    /// A loss per row is fused into one parallel pass per chunk; Cox's couples the batch's rows, so its
    /// forward passes run first, then the batch's loss, then the backward passes.
    fn gradient(
        &mut self,
        mlp: &Mlp,
        x: &[f32],
        y: &[f32],
        batch: &[u32],
        objective: Objective,
        dropout_step: Option<u64>,
    ) {
        let dim = mlp.dims[0];
        let width = objective.width();
        let chunks = batch.len().div_ceil(CHUNK).max(1);
        self.works.resize_with(chunks, Work::default);
        let total = batch.len();
        let seed = self.seed;
        let per_row = !matches!(objective, Objective::Cox { .. });
        let forward = |(c, w): (usize, &mut Work)| {
            let ids = &batch[(c * CHUNK).min(total)..((c + 1) * CHUNK).min(total)];
            w.h.resize_with(1, Vec::new);
            let input = &mut w.h[0];
            input.clear();
            w.y.clear();
            for &i in ids {
                let i = i as usize;
                input.extend_from_slice(&x[i * dim..(i + 1) * dim]);
                w.y.extend_from_slice(&y[i * width..(i + 1) * width]);
            }
            let rng = dropout_step.map(|s| Wy::new(seed, s, c as u64, 0));
            mlp.forward(w, ids.len(), rng);
            if per_row {
                mlp.row_losses(w, ids.len(), objective, total);
                mlp.backward(w, ids.len());
            }
        };
        self.for_each_chunk(chunks, forward);
        if per_row {
            self.loss =
                self.works[..chunks].iter().map(|w| w.loss).sum::<f64>() / total.max(1) as f64;
        } else {
            self.batch_loss(mlp, chunks, objective);
            self.for_each_chunk(chunks, |(_, w): (usize, &mut Work)| {
                let rows = w.z.len();
                mlp.backward(w, rows);
            });
        }
        self.grad.copy_from_slice(&self.works[0].grad);
        for w in &self.works[1..chunks] {
            for (g, d) in self.grad.iter_mut().zip(&w.grad) {
                *g += d;
            }
        }
    }

    /// Runs `run` on the first `chunks` work buffers, in parallel when there are several.
    fn for_each_chunk(&mut self, chunks: usize, run: impl Fn((usize, &mut Work)) + Sync + Send) {
        if chunks > 1 {
            self.works[..chunks]
                .par_iter_mut()
                .enumerate()
                .for_each(run);
        } else {
            run((0, &mut self.works[0]));
        }
    }

    /// A loss over the whole batch: its outputs gathered from the chunks, the loss into `self.loss`, each
    /// output's derivative put back in its chunk's `a[last]`.
    fn batch_loss(&mut self, mlp: &Mlp, chunks: usize, objective: Objective) {
        let last = mlp.layer_count() - 1;
        let (mut z, mut y) = (Vec::new(), Vec::new());
        for w in &self.works[..chunks] {
            z.extend_from_slice(&w.z);
            y.extend_from_slice(&w.y);
        }
        let mut dz = Vec::new();
        self.loss = objective.loss_and_gradient(&z, &y, &mut dz);
        let mut at = 0;
        for w in &mut self.works[..chunks] {
            let rows = w.z.len();
            w.a[last].clear();
            w.a[last].extend_from_slice(&dz[at..at + rows]);
            at += rows;
        }
    }

    /// One AdamW step on `batch`; returns the batch's mean loss.
    pub fn step(
        &mut self,
        mlp: &mut Mlp,
        opt: &mut AdamW,
        x: &[f32],
        y: &[f32],
        batch: &[u32],
        objective: Objective,
    ) -> f64 {
        self.step += 1;
        self.gradient(mlp, x, y, batch, objective, Some(self.step));
        opt.update(&mut mlp.params, &self.grad);
        self.loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use trialflow_core::config::ModelConfig;

    fn network(hidden: Vec<usize>, activation: Activation, dim: usize) -> trialflow_model::Network {
        let cfg = ModelConfig {
            hidden,
            dropout: vec![],
            activation,
        };
        trialflow_model::Network::init(&cfg, dim, 5, &Device::Cpu).unwrap()
    }

    fn layers_of(net: &trialflow_model::Network) -> Vec<(Vec<f32>, Vec<f32>)> {
        net.layers
            .iter()
            .map(|(w, b)| {
                (
                    w.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                    b.as_tensor().to_vec1().unwrap(),
                )
            })
            .collect()
    }

    /// The fused gradients equal candle autograd's on the same weights and batch (more rows than one chunk,
    /// so the chunked sum is covered), for ReLU and tanh, one and two hidden layers, with a positive weight.
    #[test]
    fn gradients_equal_candle_autograd() {
        let dim = 7;
        let rows = CHUNK + 37;
        let x: Vec<f32> = (0..rows * dim)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0)
            .collect();
        let y: Vec<f32> = (0..rows).map(|i| f32::from(i % 3 == 0)).collect();
        let batch: Vec<u32> = (0..rows as u32).rev().collect();
        for (hidden, act) in [
            (vec![16], Activation::Relu),
            (vec![12, 8], Activation::Relu),
            (vec![9], Activation::Tanh),
        ] {
            let net = network(hidden, act, dim);
            let mlp = Mlp::from_layers(&layers_of(&net), dim, act, &[]);
            let (loss, grad) =
                mlp.loss_and_gradient(&x, &y, &batch, Objective::Bce { pos_weight: 2.5 });
            // candle: the same rows in the same order
            let idx: Vec<f32> = batch
                .iter()
                .flat_map(|&i| x[i as usize * dim..(i as usize + 1) * dim].to_vec())
                .collect();
            let ys: Vec<f32> = batch.iter().map(|&i| y[i as usize]).collect();
            let xt = Tensor::from_vec(idx, (rows, dim), &Device::Cpu).unwrap();
            let yt = Tensor::from_vec(ys, rows, &Device::Cpu).unwrap();
            let l = crate::autograd::bce_with_logits(&net.logits(&xt, None).unwrap(), &yt, 2.5)
                .unwrap();
            assert!((f64::from(l.to_scalar::<f32>().unwrap()) - loss).abs() < 1e-5);
            let grads = l.backward().unwrap();
            let mut want = Vec::new();
            for (w, b) in &net.layers {
                for v in [w, b] {
                    let g = grads.get(v.as_tensor()).unwrap();
                    want.extend(g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                }
            }
            assert_eq!(want.len(), grad.len());
            for (i, (g, w)) in grad.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-5 + 1e-4 * w.abs(),
                    "param {i}: {g} vs {w}"
                );
            }
        }
    }

    /// Every objective's fused loss and gradients equal candle autograd's (the GPU path) on the same batch:
    /// squared error and Huber on a standardized target, Cox with Efron's and Breslow's ties (times tied in
    /// groups, some rows censored), over more rows than one chunk.
    #[test]
    fn every_objective_equals_candle_autograd() {
        let dim = 5;
        let rows = CHUNK + 21;
        let x: Vec<f32> = (0..rows * dim)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0)
            .collect();
        let value: Vec<f32> = (0..rows)
            .map(|i| (i * 37 % 11) as f32 * 1.5 - 3.0)
            .collect();
        let survival: Vec<f32> = (0..rows)
            .flat_map(|i| [(i * 13 % 17) as f32, f32::from(i % 3 != 0)])
            .collect();
        let batch: Vec<u32> = (0..rows as u32).rev().collect();
        let net = network(vec![8], Activation::Tanh, dim);
        let mlp = Mlp::from_layers(&layers_of(&net), dim, Activation::Tanh, &[]);
        for (objective, y) in [
            (Objective::Squared { mean: 0.5, sd: 2.0 }, &value),
            (
                Objective::Huber {
                    mean: 0.5,
                    sd: 2.0,
                    delta: 0.3,
                },
                &value,
            ),
            (Objective::Cox { efron: true }, &survival),
            (Objective::Cox { efron: false }, &survival),
        ] {
            let (loss, grad) = mlp.loss_and_gradient(&x, y, &batch, objective);
            let width = objective.width();
            let xs: Vec<f32> = batch
                .iter()
                .flat_map(|&i| x[i as usize * dim..(i as usize + 1) * dim].to_vec())
                .collect();
            let ys: Vec<f32> = batch
                .iter()
                .flat_map(|&i| y[i as usize * width..(i as usize + 1) * width].to_vec())
                .collect();
            let xt = Tensor::from_vec(xs, (rows, dim), &Device::Cpu).unwrap();
            let yt = if width == 1 {
                Tensor::from_vec(ys.clone(), rows, &Device::Cpu).unwrap()
            } else {
                Tensor::from_vec(ys.clone(), (rows, width), &Device::Cpu).unwrap()
            };
            let l = crate::autograd::objective_loss(
                objective,
                &net.logits(&xt, None).unwrap(),
                &yt,
                &ys,
            )
            .unwrap();
            let want_loss = f64::from(l.to_scalar::<f32>().unwrap());
            assert!(
                (want_loss - loss).abs() < 1e-5 * want_loss.abs().max(1.0),
                "{objective:?}: {loss} vs {want_loss}"
            );
            let grads = l.backward().unwrap();
            let mut want = Vec::new();
            for (w, b) in &net.layers {
                for v in [w, b] {
                    let g = grads.get(v.as_tensor()).unwrap();
                    want.extend(g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                }
            }
            for (i, (g, w)) in grad.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-5 + 1e-4 * w.abs(),
                    "{objective:?} param {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn adamw_equals_candle_nn() {
        use candle_nn::Optimizer;
        let theta = vec![0.5f32, -1.0, 2.0];
        let grads = [vec![0.1f32, -0.2, 0.3], vec![-0.05, 0.4, 0.0]];
        let var = candle_core::Var::from_vec(theta.clone(), 3, &Device::Cpu).unwrap();
        let mut reference = candle_nn::AdamW::new(
            vec![var.clone()],
            candle_nn::ParamsAdamW {
                lr: 0.01,
                weight_decay: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        let mut ours = AdamW::new(3, 0.01, 0.1);
        let mut mine = theta;
        for g in &grads {
            // a loss whose gradient is g: Σ g·θ
            let gt = Tensor::from_vec(g.clone(), 3, &Device::Cpu).unwrap();
            let loss = var.as_tensor().mul(&gt).unwrap().sum_all().unwrap();
            reference.backward_step(&loss).unwrap();
            ours.update(&mut mine, g);
        }
        let want: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        for (a, b) in mine.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn dropout_drops_about_p_and_rescales() {
        let dim = 4;
        let net = network(vec![512], Activation::Relu, dim);
        let mut mlp = Mlp::from_layers(&layers_of(&net), dim, Activation::Relu, &[0.5]);
        // a bias large enough that every unit is active: only dropout zeroes a unit
        let (_, bo) = mlp.offsets(0);
        mlp.params[bo..bo + 512].fill(10.0);
        let mut w = Work::default();
        let rows = 64;
        w.h.push(vec![0.0; rows * dim]);
        mlp.forward(&mut w, rows, Some(Wy::new(1, 1, 0, 0)));
        let h = &w.h[1];
        let dropped = h.iter().filter(|v| **v == 0.0).count() as f64 / h.len() as f64;
        assert!((dropped - 0.5).abs() < 0.02, "dropped {dropped}");
        assert!(h.iter().all(|v| *v == 0.0 || (*v - 20.0).abs() < 1e-4));
    }
}
