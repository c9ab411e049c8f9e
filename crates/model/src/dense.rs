//! The forward pass in plain f32 loops over weights read straight from safetensors: what serving, batch
//! scoring and the gate use, with no tensor library.

use safetensors::{Dtype, SafeTensors};
use trialflow_core::config::{Activation, ModelConfig};

/// The forward pass in plain f32 loops, for scoring on the CPU. Per-request tensor set-up costs more than
/// the arithmetic for the small batches a server sees, so serving and batch scoring use this copy of the
/// weights; a test keeps it equal to the candle forward pass.
#[derive(Debug, Clone)]
pub struct DenseCpu {
    /// Per layer: weights transposed to `[in][out]` (so the inner loop is a vectorizable axpy), bias,
    /// input and output widths.
    layers: Vec<(Vec<f32>, Vec<f32>, usize, usize)>,
    activation: Activation,
    /// The widest vector instructions this CPU has (AVX-512, else AVX2, where there is one), found once: the
    /// loops are compiled for them as well as for the baseline, and run as the CPU allows.
    arch: pulp::Arch,
}

impl DenseCpu {
    pub(crate) fn from_layers(
        layers: Vec<(Vec<f32>, Vec<f32>, usize, usize)>,
        activation: Activation,
    ) -> Self {
        Self {
            layers,
            activation,
            arch: pulp::Arch::new(),
        }
    }

    /// The weights of a `model.safetensors` file written for the architecture `config`, read without
    /// candle (the gate and serving score with this copy). Shapes are checked against each other and
    /// against `config`.
    pub fn from_safetensors(config: &ModelConfig, bytes: &[u8]) -> Result<Self, String> {
        let file =
            SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let mut layers = Vec::new();
        let mut expected_in: Option<usize> = None;
        for i in 0..=config.hidden.len() {
            let (w, w_shape) = tensor_f32(&file, &format!("layers.{i}.weight"))?;
            let (b, b_shape) = tensor_f32(&file, &format!("layers.{i}.bias"))?;
            let [out_dim, in_dim] = w_shape[..] else {
                return Err(format!(
                    "tensor `layers.{i}.weight` has shape {w_shape:?}, expected [out, in]"
                ));
            };
            let want_out = config.hidden.get(i).copied().unwrap_or(1);
            if out_dim != want_out
                || b_shape != [out_dim]
                || expected_in.is_some_and(|e| e != in_dim)
            {
                return Err(format!(
                    "layer {i}: weight {w_shape:?} and bias {b_shape:?} do not fit the architecture (hidden {:?})",
                    config.hidden
                ));
            }
            expected_in = Some(out_dim);
            // `[out][in]` → `[in][out]`
            let mut wt = vec![0f32; w.len()];
            for o in 0..out_dim {
                for k in 0..in_dim {
                    wt[k * out_dim + o] = w[o * in_dim + k];
                }
            }
            layers.push((wt, b, in_dim, out_dim));
        }
        Ok(Self::from_layers(layers, config.activation))
    }

    pub fn input_dim(&self) -> usize {
        self.layers.first().map(|l| l.2).unwrap_or(0)
    }

    /// Probabilities for a row-major matrix `x` of `x.len() / input_dim` rows.
    pub fn predict_proba(&self, x: &[f32]) -> Vec<f32> {
        let mut out = self.outputs(x);
        for z in &mut out {
            *z = 1.0 / (1.0 + (-*z).exp());
        }
        out
    }

    /// The head's value per row as the endpoint reads it: a probability (binary), the predicted value
    /// (continuous), the risk score, a log hazard ratio (time to event).
    pub fn predict(&self, endpoint: trialflow_core::config::Endpoint, x: &[f32]) -> Vec<f32> {
        match endpoint {
            trialflow_core::config::Endpoint::Binary => self.predict_proba(x),
            _ => self.outputs(x),
        }
    }

    /// The last layer's single output (the logit of a binary model) for each row of `x`.
    pub fn outputs(&self, x: &[f32]) -> Vec<f32> {
        self.arch.dispatch(Forward { net: self, x })
    }
}

/// The forward pass over every row of `x`, as one function that the dispatch compiles per instruction set.
/// Each lane does the plain loop's fused multiply-add (one rounding, `f32::mul_add`): an instruction on every
/// CPU the dispatch vectorizes for (AVX2 comes with FMA; so does every 64-bit ARM), correctly rounded in
/// software elsewhere, so every instruction set gives the same bits.
struct Forward<'a> {
    net: &'a DenseCpu,
    x: &'a [f32],
}

/// Rows that go through the layers together: the units past the last whole block (the output unit, at
/// least) sum as one dependent chain per row, and eight rows' chains side by side keep the adders busy.
const GROUP: usize = 8;

impl pulp::WithSimd for Forward<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Vec<f32> {
        // 64 accumulators take eight of AVX's sixteen registers; with narrower vectors, 32 already fill half
        let wide = S::F32_LANES >= 8;
        // With 16 lanes (AVX-512) a block of 64 units is only four registers: four dependent chains cannot
        // keep two FMA units of four cycles' latency busy. Two rows per weight load give eight chains (and
        // half the weight loads). In AVX's sixteen registers two rows' 64 sums would not fit, but two rows'
        // 32 do: eight chains again, with each weight load feeding two rows.
        let pairs = S::F32_LANES >= 8;
        let Forward { net, x } = self;
        let dim = net.input_dim().max(1);
        let rows = x.len() / dim;
        let widest = net.layers.iter().map(|l| l.3).max().unwrap_or(1);
        // room for the rows a group really has: one row's request zeroes one row's activations
        let held = rows.clamp(1, GROUP);
        let mut a = vec![0f32; held * widest];
        let mut b = vec![0f32; held * widest];
        let last = net.layers.len().saturating_sub(1);
        let mut out = Vec::with_capacity(rows);
        for first in (0..rows).step_by(GROUP) {
            let n = (rows - first).min(GROUP);
            for (i, (wt, bias, in_dim, out_dim)) in net.layers.iter().enumerate() {
                // a group short of eight rows repeats its last row in the chains; those sums are not read
                let inputs: [&[f32]; GROUP] = std::array::from_fn(|g| {
                    let g = g.min(n - 1);
                    if i == 0 {
                        &x[(first + g) * dim..(first + g + 1) * dim]
                    } else {
                        &a[g * widest..g * widest + in_dim]
                    }
                });
                let whole = if wide {
                    out_dim - out_dim % 64
                } else {
                    out_dim - out_dim % 32
                };
                let mut g = 0;
                while g < n {
                    if pairs && g + 1 < n {
                        let (this, next) = b.split_at_mut((g + 1) * widest);
                        let rows = [
                            &mut this[g * widest..g * widest + whole],
                            &mut next[..whole],
                        ];
                        if S::F32_LANES >= 16 {
                            dense_blocks_pair::<64>(
                                [inputs[g], inputs[g + 1]],
                                wt,
                                &bias[..whole],
                                *out_dim,
                                rows,
                            );
                        } else {
                            dense_blocks_pair::<32>(
                                [inputs[g], inputs[g + 1]],
                                wt,
                                &bias[..whole],
                                *out_dim,
                                rows,
                            );
                        }
                        g += 2;
                        continue;
                    }
                    let h = &mut b[g * widest..g * widest + whole];
                    if wide {
                        dense_blocks::<64>(inputs[g], wt, &bias[..whole], *out_dim, h);
                    } else {
                        dense_blocks::<32>(inputs[g], wt, &bias[..whole], *out_dim, h);
                    }
                    g += 1;
                }
                if n == 1 {
                    // one row: a single chain, without seven copies of it beside
                    dense_units_by_row::<1>(&[inputs[0]], wt, bias, whole, &mut b, widest);
                } else {
                    dense_units_by_row::<GROUP>(&inputs, wt, bias, whole, &mut b, widest);
                }
                if i < last {
                    for g in 0..n {
                        let h = &mut b[g * widest..g * widest + out_dim];
                        match net.activation {
                            Activation::Relu => h.iter_mut().for_each(|v| *v = v.max(0.0)),
                            Activation::Tanh => h.iter_mut().for_each(|v| *v = v.tanh()),
                        }
                    }
                }
                std::mem::swap(&mut a, &mut b);
            }
            out.extend((0..n).map(|g| a[g * widest]));
        }
        out
    }
}

/// `h = bias + Σₖ input[k] · wt[k, ·]` for the first `h.len()` units, a multiple of `BLOCK` (`wt`
/// row-major, `input.len() × out_dim`), every unit's sum taken in input order. Units go in blocks of `BLOCK`
/// whose sums stay in vector registers across every input, instead of being loaded and stored once per
/// input; the result is bit for bit the plain loop's, whatever the blocking. Zero inputs (ReLU's, one-hot's)
/// are multiplied like any other: a branch on them costs more in mispredictions than the multiplications it
/// saves, since which ones are zero changes from row to row. Inlined into [`Forward`], so that it is
/// vectorized for the instruction set the dispatch chose.
#[inline(always)]
fn dense_blocks<const BLOCK: usize>(
    input: &[f32],
    wt: &[f32],
    bias: &[f32],
    out_dim: usize,
    h: &mut [f32],
) {
    for start in (0..h.len()).step_by(BLOCK) {
        let mut acc = [0f32; BLOCK];
        acc.copy_from_slice(&bias[start..start + BLOCK]);
        for (&xk, wk) in input.iter().zip(wt.chunks_exact(out_dim)) {
            for (a, wj) in acc.iter_mut().zip(&wk[start..start + BLOCK]) {
                *a = xk.mul_add(*wj, *a);
            }
        }
        h[start..start + BLOCK].copy_from_slice(&acc);
    }
}

/// [`dense_blocks`] for two rows at once: each weight loaded feeds both rows' sums, which are taken exactly as
/// the one-row loop takes them (the same bits). A copy, not one function generic over the row count: written
/// that way (`[[f32; BLOCK]; R]` sums), the one-row AVX2 pass measured 6% slower (215 against 202 µs per
/// 1,000 rows of model_2's shape), the AVX-512 pair 1.5% slower.
#[inline(always)]
fn dense_blocks_pair<const BLOCK: usize>(
    inputs: [&[f32]; 2],
    wt: &[f32],
    bias: &[f32],
    out_dim: usize,
    h: [&mut [f32]; 2],
) {
    let [x0, x1] = inputs;
    let [h0, h1] = h;
    for start in (0..h0.len()).step_by(BLOCK) {
        let mut acc0 = [0f32; BLOCK];
        acc0.copy_from_slice(&bias[start..start + BLOCK]);
        let mut acc1 = acc0;
        for ((&a, &b), wk) in x0.iter().zip(x1).zip(wt.chunks_exact(out_dim)) {
            for ((p, q), wj) in acc0
                .iter_mut()
                .zip(acc1.iter_mut())
                .zip(&wk[start..start + BLOCK])
            {
                *p = a.mul_add(*wj, *p);
                *q = b.mul_add(*wj, *q);
            }
        }
        h0[start..start + BLOCK].copy_from_slice(&acc0);
        h1[start..start + BLOCK].copy_from_slice(&acc1);
    }
}

/// The units from `from` on (fewer than a block) for each of `G` rows, written to row `g`'s slice
/// of `out` at `g * stride` (rows that `out` has no room for are not written): per unit, the rows' sums are independent chains taken side by side, each in
/// input order as the plain loop takes it.
#[inline(always)]
fn dense_units_by_row<const G: usize>(
    inputs: &[&[f32]; G],
    wt: &[f32],
    bias: &[f32],
    from: usize,
    out: &mut [f32],
    stride: usize,
) {
    let out_dim = bias.len();
    let in_dim = inputs[0].len();
    for j in from..out_dim {
        let mut acc = [bias[j]; G];
        for (k, wk) in wt.chunks_exact(out_dim).take(in_dim).enumerate() {
            let w = wk[j];
            for (a, input) in acc.iter_mut().zip(inputs) {
                *a = input[k].mul_add(w, *a);
            }
        }
        for (g, a) in acc.into_iter().enumerate() {
            if let Some(o) = out.get_mut(g * stride + j) {
                *o = a;
            }
        }
    }
}

/// A tensor's values as f32 (f32 and f64 files) and its shape.
fn tensor_f32(file: &SafeTensors<'_>, name: &str) -> Result<(Vec<f32>, Vec<usize>), String> {
    let t = file
        .tensor(name)
        .map_err(|_| format!("tensor `{name}` is missing"))?;
    let data = t.data();
    let values: Vec<f32> = match t.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => return Err(format!("tensor `{name}` is {other:?}; expected F32 or F64")),
    };
    Ok((values, t.shape().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-1, 1] in steps of 0.001 from a xorshift generator: repeatable weights and inputs.
    fn uniform(mut state: u64) -> impl FnMut() -> f32 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        }
    }

    /// Blocks of 32 or 64 units, two rows' blocks side by side, and the units past the last whole block, sum as
    /// the one plain loop does.
    #[test]
    fn blocked_layers_equal_the_plain_loop_bit_for_bit() {
        let mut next = uniform(0x2545_f491_4f6c_dd1du64);
        for in_dim in [1, 19, 128] {
            for out_dim in [1, 8, 31, 32, 33, 64, 70, 128, 150] {
                let input: Vec<f32> = (0..in_dim)
                    .map(|k| if k % 4 == 1 { 0.0 } else { next() })
                    .collect();
                let wt: Vec<f32> = (0..in_dim * out_dim).map(|_| next()).collect();
                let bias: Vec<f32> = (0..out_dim).map(|_| next()).collect();
                let mut plain = bias.clone();
                for (k, &xk) in input.iter().enumerate() {
                    for (j, hj) in plain.iter_mut().enumerate() {
                        *hj = xk.mul_add(wt[k * out_dim + j], *hj);
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let layer = |block: usize| {
                    let whole = out_dim - out_dim % block;
                    let mut blocked = vec![f32::NAN; GROUP * out_dim];
                    if block == 64 {
                        dense_blocks::<64>(
                            &input,
                            &wt,
                            &bias[..whole],
                            out_dim,
                            &mut blocked[..whole],
                        );
                    } else {
                        dense_blocks::<32>(
                            &input,
                            &wt,
                            &bias[..whole],
                            out_dim,
                            &mut blocked[..whole],
                        );
                    }
                    let inputs = [&input[..]; GROUP];
                    dense_units_by_row::<GROUP>(&inputs, &wt, &bias, whole, &mut blocked, out_dim);
                    let mut single = blocked[..out_dim].to_vec();
                    dense_units_by_row::<1>(&[&input[..]], &wt, &bias, whole, &mut single, out_dim);
                    assert_eq!(bits(&single), bits(&blocked[..out_dim]));
                    blocked.truncate(out_dim);
                    blocked
                };
                let whole = out_dim - out_dim % 64;
                let other: Vec<f32> = input.iter().map(|v| -v).collect();
                let (mut h0, mut h1) = (vec![f32::NAN; whole], vec![f32::NAN; whole]);
                dense_blocks_pair::<64>(
                    [&input, &other],
                    &wt,
                    &bias[..whole],
                    out_dim,
                    [&mut h0, &mut h1],
                );
                let mut alone = vec![f32::NAN; whole];
                dense_blocks::<64>(&other, &wt, &bias[..whole], out_dim, &mut alone);
                assert_eq!(
                    bits(&h0),
                    bits(&plain[..whole]),
                    "{in_dim} → {out_dim}, pair"
                );
                assert_eq!(
                    bits(&h1),
                    bits(&alone),
                    "{in_dim} → {out_dim}, pair's second row"
                );
                assert_eq!(bits(&layer(32)), bits(&plain), "{in_dim} → {out_dim}, 32");
                assert_eq!(bits(&layer(64)), bits(&plain), "{in_dim} → {out_dim}, 64");
            }
        }
    }

    /// The dispatched forward pass (AVX-512 or AVX2 where the CPU has it) gives the plain scalar loops' bits, on
    /// ragged widths and a group of rows and a part of one.
    #[test]
    fn the_dispatched_forward_pass_equals_plain_loops_bit_for_bit() {
        let mut next = uniform(0x9e37_79b9_7f4a_7c15u64);
        let widths = [19, 150, 70, 33, 1];
        let layers: Vec<(Vec<f32>, Vec<f32>, usize, usize)> = widths
            .windows(2)
            .map(|w| {
                let wt = (0..w[0] * w[1]).map(|_| next()).collect();
                let bias = (0..w[1]).map(|_| next()).collect();
                (wt, bias, w[0], w[1])
            })
            .collect();
        let x: Vec<f32> = (0..13 * widths[0])
            .map(|k| if k % 7 == 3 { 0.0 } else { next() })
            .collect();
        let net = DenseCpu::from_layers(layers.clone(), Activation::Relu);
        let got = net.outputs(&x);
        let plain: Vec<f32> = x
            .chunks_exact(widths[0])
            .map(|row| {
                let mut a = row.to_vec();
                for (i, (wt, bias, in_dim, out_dim)) in layers.iter().enumerate() {
                    let mut h = bias.clone();
                    for k in 0..*in_dim {
                        for (j, hj) in h.iter_mut().enumerate() {
                            *hj = a[k].mul_add(wt[k * out_dim + j], *hj);
                        }
                    }
                    if i + 1 < layers.len() {
                        h.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                    a = h;
                }
                a[0]
            })
            .collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&plain));
        // a request of one row takes its own way through the last units
        let one = net.outputs(&x[..widths[0]]);
        assert_eq!(bits(&one), bits(&plain[..1]));
    }
}
