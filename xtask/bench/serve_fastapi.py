"""The Python peer of `cargo xtask bench serve`: FastAPI + PyTorch serving the same model version
(model.safetensors + model.json from trialflow's model repository) over the same TF Serving predict route,
with the same feature transform (impute, range rules, standardize, one-hot), vectorized with numpy.

    uvicorn serve_fastapi:app  (MODEL_DIR=<repo>/<model>/<version>, MODEL_NAME=<model>)
"""

import json
import math
import os

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import ORJSONResponse, Response
from safetensors.torch import load_file

torch.set_num_threads(1)  # one core per worker: the request path is latency-bound, not FLOP-bound

MODEL_DIR = os.environ["MODEL_DIR"]
MODEL_NAME = os.environ.get("MODEL_NAME", "model_2")
card = json.load(open(os.path.join(MODEL_DIR, "model.json")))
spec = card["feature_spec"]
arch = card["architecture"]
weights = load_file(os.path.join(MODEL_DIR, "model.safetensors"))

layers = []
n_layers = len(arch["hidden"]) + 1
act = torch.nn.ReLU if arch.get("activation", "relu") == "relu" else torch.nn.Tanh
for i in range(n_layers):
    w = weights[f"layers.{i}.weight"]
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    lin.weight.data.copy_(w)
    lin.bias.data.copy_(weights[f"layers.{i}.bias"])
    layers.append(lin)
    if i < n_layers - 1:
        layers.append(act())
net = torch.nn.Sequential(*layers).eval()

numeric = spec["numeric"]
categorical = spec["categorical"]
fields = [f["name"] for f in numeric if f["derived"] is None] + [c["name"] for c in categorical]


def derive(expr, rec):
    # The sample's derived features are plain arithmetic over record fields (e.g. BMI).
    try:
        return float(eval(expr, {"__builtins__": {}}, {k: (float(v) if v is not None else math.nan) for k, v in rec.items() if k in expr}))
    except Exception:
        return math.nan


def encode(instances):
    n = len(instances)
    cols = []
    for f in numeric:
        v = np.empty(n)
        for i, rec in enumerate(instances):
            x = rec.get(f["name"])
            if x is None and f["derived"]:
                x = derive(f["derived"], rec)
            try:
                v[i] = math.nan if x is None else float(x)
            except (TypeError, ValueError):
                raise HTTPException(400, f"instances[{i}].{f['name']}: expected a number")
        lo, hi = f["min"], f["max"]
        bad = np.zeros(n, dtype=bool)
        if lo is not None:
            bad |= v < lo
        if hi is not None:
            bad |= v > hi
        if f["on_invalid"] == "reject" and bad.any():
            raise HTTPException(400, f"instances[{int(np.argmax(bad))}].{f['name']}: outside the valid range")
        v[bad | np.isnan(v)] = f["impute"]
        cols.append((v - f["mean"]) / f["std"])
    for c in categorical:
        canon = c["canonical"]
        levels = [(canon.get(str(rec.get(c["name"], "")).strip().lower(), str(rec.get(c["name"], "")).strip())
                   if rec.get(c["name"]) is not None else None) for rec in instances]
        for level in c["levels"]:
            cols.append(np.array([1.0 if l == level else 0.0 for l in levels]))
    return torch.from_numpy(np.stack(cols, axis=1).astype(np.float32))


app = FastAPI()


@app.post(f"/v1/models/{MODEL_NAME}:predict")
async def predict(request: Request):
    body = await request.json()
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise HTTPException(400, "instances: expected a list of rows")
    for i, rec in enumerate(instances):
        missing = [f for f in fields if f not in rec]
        if missing:
            raise HTTPException(400, f"instances[{i}].{missing[0]}: required feature is missing")
    x = encode(instances)
    with torch.inference_mode():
        p = torch.sigmoid(net(x)).numpy()
    return ORJSONResponse({"predictions": p.tolist()})


@app.get("/v2/health/ready")
async def ready():
    return {"ready": True}
