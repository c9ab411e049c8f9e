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
    /// The widest vector instructions this CPU has (AVX2 where there is one), found once: the loops are
    /// compiled for it as well as for the baseline, and run as the CPU allows.
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
/// Each lane does the plain loop's multiply and add (no fused multiply-add), so every instruction set gives
/// the same bits.
struct Forward<'a> {
    net: &'a DenseCpu,
    x: &'a [f32],
}

impl pulp::WithSimd for Forward<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Vec<f32> {
        // 64 accumulators take eight of AVX's sixteen registers; with narrower vectors, 32 already fill half
        let wide = S::F32_LANES >= 8;
        let Forward { net, x } = self;
        let dim = net.input_dim().max(1);
        let rows = x.len() / dim;
        let widest = net.layers.iter().map(|l| l.3).max().unwrap_or(1);
        let mut a = vec![0f32; widest];
        let mut b = vec![0f32; widest];
        let last = net.layers.len().saturating_sub(1);
        let mut out = Vec::with_capacity(rows);
        for r in 0..rows {
            let row = &x[r * dim..(r + 1) * dim];
            for (i, (wt, bias, in_dim, out_dim)) in net.layers.iter().enumerate() {
                let input: &[f32] = if i == 0 { row } else { &a[..*in_dim] };
                let h = &mut b[..*out_dim];
                if wide {
                    dense_layer::<64>(input, wt, bias, h);
                } else {
                    dense_layer::<32>(input, wt, bias, h);
                }
                if i < last {
                    match net.activation {
                        Activation::Relu => h.iter_mut().for_each(|v| *v = v.max(0.0)),
                        Activation::Tanh => h.iter_mut().for_each(|v| *v = v.tanh()),
                    }
                }
                std::mem::swap(&mut a, &mut b);
            }
            out.push(a[0]);
        }
        out
    }
}

/// `h = bias + Σₖ input[k] · wt[k, ·]` (`wt` row-major, `input.len() × h.len()`), inputs that are 0 skipped.
/// Units go in blocks of `BLOCK` whose sums stay in vector registers across every input, instead of being
/// loaded and stored once per input. Each unit's sum is taken in input order, so the result is bit for bit
/// the plain loop's, whatever the blocking. Inlined into [`Forward`], so that it is vectorized for the
/// instruction set the dispatch chose.
#[inline(always)]
fn dense_layer<const BLOCK: usize>(input: &[f32], wt: &[f32], bias: &[f32], h: &mut [f32]) {
    let out_dim = h.len();
    let mut start = 0;
    while start + BLOCK <= out_dim {
        let mut acc = [0f32; BLOCK];
        acc.copy_from_slice(&bias[start..start + BLOCK]);
        for (k, &xk) in input.iter().enumerate() {
            if xk != 0.0 {
                let w = &wt[k * out_dim + start..k * out_dim + start + BLOCK];
                for (a, wj) in acc.iter_mut().zip(w) {
                    *a += xk * wj;
                }
            }
        }
        h[start..start + BLOCK].copy_from_slice(&acc);
        start += BLOCK;
    }
    let rest = &mut h[start..];
    rest.copy_from_slice(&bias[start..]);
    for (k, &xk) in input.iter().enumerate() {
        if xk != 0.0 {
            let w = &wt[k * out_dim + start..(k + 1) * out_dim];
            for (hj, wj) in rest.iter_mut().zip(w) {
                *hj += xk * wj;
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

    /// Blocks of 32 or 64 units, and the units past the last whole block, sum as the one plain loop does.
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
                    if xk != 0.0 {
                        for (j, hj) in plain.iter_mut().enumerate() {
                            *hj += xk * wt[k * out_dim + j];
                        }
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let mut blocked = vec![f32::NAN; out_dim];
                dense_layer::<32>(&input, &wt, &bias, &mut blocked);
                assert_eq!(bits(&blocked), bits(&plain), "{in_dim} → {out_dim}, 32");
                let mut blocked = vec![f32::NAN; out_dim];
                dense_layer::<64>(&input, &wt, &bias, &mut blocked);
                assert_eq!(bits(&blocked), bits(&plain), "{in_dim} → {out_dim}, 64");
            }
        }
    }

    /// The dispatched forward pass (AVX2 where the CPU has it) gives the plain scalar loops' bits, on
    /// ragged widths and several rows.
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
        let x: Vec<f32> = (0..5 * widths[0])
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
                        if a[k] != 0.0 {
                            for (j, hj) in h.iter_mut().enumerate() {
                                *hj += a[k] * wt[k * out_dim + j];
                            }
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
    }
}
