"""Loads trialflow weights with the safetensors package's numpy API (no PyTorch) and runs the forward pass in
numpy: the check that a model.safetensors file means what model.json says it means.

Usage: numpy_forward.py MODEL_DIR X.f32 ROWS OUT.f32
  X.f32: the encoded test split, row-major little-endian float32 (ROWS x input_dim)
  OUT.f32: the probabilities, float32
"""

import json
import sys

import numpy as np
from safetensors.numpy import load_file

model_dir, x_path, rows, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
card = json.load(open(f"{model_dir}/model.json"))
weights = load_file(f"{model_dir}/model.safetensors")
arch = card["architecture"]
hidden = arch.get("hidden", [])
activation = arch.get("activation", "relu")
x = np.fromfile(x_path, dtype="<f4").reshape(rows, card["input_dim"]).astype(np.float64)
h = x
for i in range(len(hidden) + 1):
    w, b = weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"]  # PyTorch nn.Linear: [out, in]
    assert w.dtype == np.float32 and w.shape[1] == h.shape[1], (w.dtype, w.shape, h.shape)
    h = h @ w.T.astype(np.float64) + b.astype(np.float64)
    if i < len(hidden):
        h = np.maximum(h, 0.0) if activation == "relu" else np.tanh(h)
p = 1.0 / (1.0 + np.exp(-h[:, 0]))
p.astype("<f4").tofile(out_path)
print(f"{len(weights)} tensors, {rows} rows")
