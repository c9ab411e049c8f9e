//! Feed-forward networks over the feature vector: `hidden` Dense layers (activation, optional dropout), then
//! one logit; no hidden layer is logistic regression. Weights follow PyTorch's `nn.Linear` layout
//! (`layers.{i}.weight` is `[out, in]`), so `safetensors` files load in PyTorch and numpy unchanged.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trialflow_core::config::{Activation, ModelConfig};

use crate::DenseCpu;

#[derive(Debug)]
pub struct Network {
    pub config: ModelConfig,
    /// `(weight [out, in], bias [out])` per layer, the last one producing the logit.
    pub layers: Vec<(Var, Var)>,
}

impl Network {
    /// PyTorch's default `nn.Linear` initialization, U(-1/sqrt(in), 1/sqrt(in)), from a seeded generator so
    /// that two runs with the same seed start from the same weights.
    pub fn init(
        config: &ModelConfig,
        input_dim: usize,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut dims = vec![input_dim];
        dims.extend(&config.hidden);
        dims.push(1);
        let mut layers = Vec::new();
        for w in dims.windows(2) {
            let (fan_in, fan_out) = (w[0], w[1]);
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let weight = Tensor::from_vec(draw(fan_in * fan_out), (fan_out, fan_in), device)?;
            let bias = Tensor::from_vec(draw(fan_out), fan_out, device)?;
            layers.push((Var::from_tensor(&weight)?, Var::from_tensor(&bias)?));
        }
        Ok(Self {
            config: config.clone(),
            layers,
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    /// Logits `[n]` for inputs `[n, input_dim]`. `dropout_masks`, when training, holds one pre-scaled
    /// mask `[n, width]` per hidden layer with dropout.
    pub fn logits(
        &self,
        x: &Tensor,
        dropout_masks: Option<&[Option<Tensor>]>,
    ) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            if i < last {
                h = match self.config.activation {
                    Activation::Relu => h.relu()?,
                    Activation::Tanh => h.tanh()?,
                };
                if let Some(Some(mask)) = dropout_masks.and_then(|m| m.get(i)) {
                    h = h.mul(mask)?;
                }
            }
        }
        h.squeeze(1)
    }

    /// Probabilities for a row-major matrix of `rows` rows.
    pub fn predict_proba(
        &self,
        x: &[f32],
        rows: usize,
        device: &Device,
    ) -> candle_core::Result<Vec<f32>> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        let dim = x.len() / rows;
        let t = Tensor::from_slice(x, (rows, dim), device)?;
        candle_nn_free_sigmoid(&self.logits(&t, None)?)?.to_vec1::<f32>()
    }

    /// Named tensors for safetensors (PyTorch names and layout).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            out.push((format!("layers.{i}.weight"), w.as_tensor().clone()));
            out.push((format!("layers.{i}.bias"), b.as_tensor().clone()));
        }
        out
    }

    pub fn to_safetensors(&self) -> Result<Vec<u8>, String> {
        let named = self.named_tensors();
        safetensors::tensor::serialize(named.iter().map(|(k, v)| (k.as_str(), v)), None)
            .map_err(|e| e.to_string())
    }

    /// Copies of the current weights (to restore the best epoch later).
    pub fn snapshot(&self) -> candle_core::Result<Vec<Tensor>> {
        self.vars().iter().map(|v| v.as_tensor().copy()).collect()
    }

    pub fn restore(&self, snap: &[Tensor]) -> candle_core::Result<()> {
        for (v, t) in self.vars().iter().zip(snap) {
            v.set(t)?;
        }
        Ok(())
    }
}

impl DenseCpu {
    pub fn from_network(net: &Network) -> candle_core::Result<Self> {
        let mut layers = Vec::new();
        for (w, b) in &net.layers {
            let (out_dim, in_dim) = w.as_tensor().dims2()?;
            let wt: Vec<f32> = w.as_tensor().t()?.contiguous()?.flatten_all()?.to_vec1()?;
            layers.push((wt, b.as_tensor().to_vec1::<f32>()?, in_dim, out_dim));
        }
        Ok(Self::from_layers(layers, net.config.activation))
    }
}

fn candle_nn_free_sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    // 1 / (1 + exp(-x)); kept here so that the model crate needs candle-core only.
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Loads weights saved by [`Network::to_safetensors`] for the architecture in `config`.
pub fn load_safetensors(
    config: &ModelConfig,
    bytes: &[u8],
    device: &Device,
) -> Result<Network, String> {
    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut layers = Vec::new();
    for i in 0..=config.hidden.len() {
        let get = |name: String| -> Result<Var, String> {
            let t = tensors
                .get(&name)
                .ok_or_else(|| format!("tensor `{name}` is missing"))?;
            let t = t.to_dtype(DType::F32).map_err(|e| e.to_string())?;
            Var::from_tensor(&t).map_err(|e| e.to_string())
        };
        layers.push((
            get(format!("layers.{i}.weight"))?,
            get(format!("layers.{i}.bias"))?,
        ));
    }
    Ok(Network {
        config: config.clone(),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_init_and_safetensors_roundtrip() {
        let cfg = ModelConfig {
            hidden: vec![4],
            dropout: vec![],
            activation: Activation::Relu,
        };
        let a = Network::init(&cfg, 3, 1, &Device::Cpu).unwrap();
        let b = Network::init(&cfg, 3, 1, &Device::Cpu).unwrap();
        assert_eq!(a.to_safetensors().unwrap(), b.to_safetensors().unwrap());
        let x = [0.5f32, -1.0, 2.0, 0.0, 0.0, 0.0];
        let p = a.predict_proba(&x, 2, &Device::Cpu).unwrap();
        let loaded = load_safetensors(&cfg, &a.to_safetensors().unwrap(), &Device::Cpu).unwrap();
        assert_eq!(p, loaded.predict_proba(&x, 2, &Device::Cpu).unwrap());
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn dense_cpu_equals_the_candle_forward_pass() {
        for (hidden, activation) in [
            (vec![], Activation::Relu),
            (vec![64], Activation::Relu),
            (vec![128, 64], Activation::Relu),
            (vec![8], Activation::Tanh),
        ] {
            let cfg = ModelConfig {
                hidden,
                dropout: vec![],
                activation,
            };
            let net = Network::init(&cfg, 18, 7, &Device::Cpu).unwrap();
            let mut rng = StdRng::seed_from_u64(3);
            let x: Vec<f32> = (0..18 * 257)
                .map(|i| {
                    if i % 5 == 0 {
                        0.0
                    } else {
                        rng.random_range(-3.0..3.0)
                    }
                })
                .collect();
            let want = net.predict_proba(&x, 257, &Device::Cpu).unwrap();
            let got = DenseCpu::from_network(&net).unwrap().predict_proba(&x);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-6, "{g} vs {w}");
            }
        }
    }
}
