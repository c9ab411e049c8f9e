"""The model behind the serving peers of `cargo xtask bench serve` (MLServer and KServe runtimes): one version of
trialflow's model repository (model.json + model.safetensors) with the same feature transform as trialflow-server
(derive, range rules, impute, standardize, one-hot), column-wise in numpy, and the network's forward pass in
float32 numpy. Both request shapes end here: TF Serving's rows (`instances`) and the Open Inference Protocol's
columns (one input tensor per raw feature).
"""

import json
import math
import os
import struct

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64}


def load_safetensors(path):
    """The tensors of a .safetensors file: an 8-byte little-endian header length, a JSON header, raw data."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        tensors[name] = np.frombuffer(data[lo:hi], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return tensors


class BadRequest(ValueError):
    """A request the model refuses: the runtime answers 400 with the message."""


class ServingModel:
    def __init__(self, model_dir):
        card = json.load(open(os.path.join(model_dir, "model.json")))
        self.spec = card["feature_spec"]
        arch = card["architecture"]
        weights = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        n_layers = len(arch["hidden"]) + 1
        # (in, out) matrices so a batch is x @ w + b
        self.layers = [(np.ascontiguousarray(weights[f"layers.{i}.weight"].T, dtype=np.float32),
                        weights[f"layers.{i}.bias"].astype(np.float32)) for i in range(n_layers)]
        self.relu = arch.get("activation", "relu") == "relu"
        self.numeric = self.spec["numeric"]
        self.categorical = self.spec["categorical"]
        self.fields = [f["name"] for f in self.numeric if f["derived"] is None] + [c["name"] for c in self.categorical]

    def forward(self, x):
        h = x
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0) if self.relu else np.tanh(h)
        return (1.0 / (1.0 + np.exp(-h))).astype(np.float32)

    def _derived(self, expr, cols, n):
        names = [f["name"] for f in self.numeric if f["derived"] is None and f["name"] in expr]
        env = {k: cols[k] for k in names}
        with np.errstate(all="ignore"):
            v = eval(expr, {"__builtins__": {}}, env)  # the sample's derived features are arithmetic (BMI)
        return np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))

    def encode(self, columns, n):
        """Model inputs from raw columns: numbers as float64 arrays (NaN = missing), categories as lists."""
        numbers = {}
        out = []
        for f in self.numeric:
            name = f["name"]
            v = self._derived(f["derived"], numbers, n).copy() if f["derived"] else columns[name]
            numbers[name] = v
            bad = np.zeros(n, dtype=bool)
            if f["min"] is not None:
                bad |= v < f["min"]
            if f["max"] is not None:
                bad |= v > f["max"]
            if f["on_invalid"] == "reject" and bad.any():
                raise BadRequest(f"{name}[{int(np.argmax(bad))}]: outside the valid range")
            v = np.where(bad | np.isnan(v), f["impute"], v)
            out.append((v - f["mean"]) / f["std"])
        for c in self.categorical:
            canon = c["canonical"]
            raw = columns[c["name"]]
            levels = [None if x is None else canon.get(str(x).strip().lower(), str(x).strip()) for x in raw]
            for level in c["levels"]:
                out.append(np.fromiter((l == level for l in levels), dtype=np.float64, count=n))
        return np.stack(out, axis=1).astype(np.float32)

    def predict_rows(self, instances):
        """TF Serving's `instances`: a list of records."""
        if not isinstance(instances, list) or not instances:
            raise BadRequest("instances: expected a list of rows")
        n = len(instances)
        columns = {}
        for name in self.fields:
            try:
                values = [rec[name] for rec in instances]
            except (KeyError, TypeError):
                raise BadRequest(f"instances: required feature {name} is missing")
            columns[name] = values
        for f in self.numeric:
            if f["derived"] is None:
                try:
                    columns[f["name"]] = np.array([math.nan if v is None else float(v) for v in columns[f["name"]]])
                except (TypeError, ValueError):
                    raise BadRequest(f"{f['name']}: expected numbers")
        return self.forward(self.encode(columns, n))

    def predict_columns(self, columns):
        """The Open Inference Protocol's inputs: one array (numbers) or list (texts) per raw feature."""
        missing = [f for f in self.fields if f not in columns]
        if missing:
            raise BadRequest(f"inputs: required feature {missing[0]} is missing")
        n = len(columns[self.fields[0]])
        cols = {}
        for f in self.numeric:
            if f["derived"] is None:
                cols[f["name"]] = np.asarray(columns[f["name"]], dtype=np.float64).reshape(-1)
        for c in self.categorical:
            cols[c["name"]] = [x.decode() if isinstance(x, bytes) else x for x in columns[c["name"]]]
        if any(len(v) != n for v in cols.values()):
            raise BadRequest("inputs: every input needs the same number of rows")
        return self.forward(self.encode(cols, n))
