"""The peers of `cargo xtask bench train`: the brief's two networks in PyTorch and in Keras (TensorFlow, CPU),
on the same float32 arrays trialflow trains on (written by trialflow-train-bench).

  train_peers.py throughput FRAMEWORK DATA_DIR DIM MODEL BATCH ROWS [ENDPOINT]
  train_peers.py auc FRAMEWORK DATA_DIR MODEL BATCH EPOCHS
  train_peers.py cindex torch DATA_DIR DIM MODEL BATCH EPOCHS
  train_peers.py kmeans sklearn DATA_DIR DIM K ROWS SEED

Same protocol as trialflow: Adam (lr 1e-3), shuffled mini-batches, a warm-up of 20 batches, then one timed
epoch over ROWS rows. Both frameworks are limited to the machine's cores. The loss is the endpoint's:
binary cross-entropy on logits; the squared error on the standardized target (continuous); the Cox negative
log partial likelihood over each batch's rows as risk sets, as pycox's `CoxPHLoss` writes it (time to event,
PyTorch only: sort the batch by time, log-cumsum-exp of the risk scores, mean over the events).
Prints one JSON line.
"""

import json
import os
import sys
import time

import numpy as np

THREADS = os.cpu_count() or 1


def load(path, shape=None):
    a = np.fromfile(path, dtype="<f4")
    return a.reshape(shape) if shape else a


def torch_model(name, dim):
    import torch
    from torch import nn

    torch.manual_seed(42)
    if name == "model_1":
        return nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 1))
    return nn.Sequential(
        nn.Linear(dim, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1)
    )


def cox_ph_loss(log_h, durations, events):
    """pycox's cox_ph_loss: the batch sorted by time (latest first), log-cumsum-exp of the risk scores."""
    import torch

    idx = durations.sort(descending=True)[1]
    events = events[idx]
    log_h = log_h[idx]
    gamma = log_h.max()
    log_cumsum_h = log_h.sub(gamma).exp().cumsum(0).add(1e-7).log().add(gamma)
    return -log_h.sub(log_cumsum_h).mul(events).sum().div(events.sum().clamp(min=1.0))


def torch_loss(endpoint, y):
    """The endpoint's loss of (model output, batch targets)."""
    import torch

    if endpoint == "continuous":
        mean, sd = y.mean(), y.std(unbiased=False)
        return lambda out, t: torch.nn.functional.mse_loss(out, (t - mean) / sd)
    if endpoint == "time_to_event":
        return lambda out, t: cox_ph_loss(out, t[:, 0], t[:, 1])
    bce = torch.nn.BCEWithLogitsLoss()
    return bce


def torch_epoch(model, opt, x, y, batch, rows, lossf=None):
    import torch

    lossf = lossf or torch.nn.BCEWithLogitsLoss()
    model.train()
    perm = torch.randperm(rows)
    for i in range(0, rows, batch):
        idx = perm[i : i + batch]
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(x[idx]).squeeze(1), y[idx])
        loss.backward()
        opt.step()


def keras_model(name, dim):
    import keras

    keras.utils.set_random_seed(42)
    layers = [keras.Input((dim,)), keras.layers.Dense(64 if name == "model_1" else 128, activation="relu")]
    if name == "model_2":
        layers += [keras.layers.Dropout(0.5), keras.layers.Dense(64, activation="relu")]
    layers.append(keras.layers.Dense(1))
    m = keras.Sequential(layers)
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return m


def setup(framework):
    if framework == "torch":
        import torch

        torch.set_num_threads(THREADS)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)


TARGETS = {"binary": ("y.f32", None), "continuous": ("y_value.f32", None), "time_to_event": ("y_survival.f32", (-1, 2))}


def throughput(framework, data, dim, model, batch, rows, endpoint="binary"):
    setup(framework)
    x = load(f"{data}/x.f32", (-1, dim))
    name, shape = TARGETS[endpoint]
    y = load(f"{data}/{name}", shape)
    rows = min(rows, len(y))
    x, y = x[:rows], y[:rows]
    warm = min(batch * 20, rows)
    if framework == "torch":
        import torch

        m = torch_model(model, dim)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        lossf = torch_loss(endpoint, yt)
        torch_epoch(m, opt, xt, yt, batch, warm, lossf)
        start = time.perf_counter()
        torch_epoch(m, opt, xt, yt, batch, rows, lossf)
    else:
        if endpoint != "binary":
            raise SystemExit("the Keras peer is binary only")
        m = keras_model(model, dim)
        m.fit(x[:warm], y[:warm], batch_size=batch, epochs=1, shuffle=True, verbose=0)
        start = time.perf_counter()
        m.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0)
    secs = time.perf_counter() - start
    return {"samples_per_s": rows / secs, "seconds": secs, "rows": rows}


def roc_auc(y, p):
    """Mann–Whitney AUC with ties counted one half (scikit-learn's roc_auc_score)."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sp = p[order]
    i = 0
    while i < len(sp):
        j = i
        while j + 1 < len(sp) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = y > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def sample_auc(framework, data, model, batch, epochs):
    setup(framework)
    dim = int(open(f"{data}/dim").read())
    xs = {s: load(f"{data}/x_{s}.f32", (-1, dim)) for s in ("train", "val", "test")}
    ys = {s: load(f"{data}/y_{s}.f32") for s in ("train", "val", "test")}
    if framework == "torch":
        import torch

        m = torch_model(model, dim)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        xt, yt = torch.from_numpy(xs["train"]), torch.from_numpy(ys["train"])
        for _ in range(epochs):
            torch_epoch(m, opt, xt, yt, batch, len(yt))
        m.eval()
        with torch.no_grad():
            p = m(torch.from_numpy(xs["test"])).squeeze(1).numpy()
    else:
        m = keras_model(model, dim)
        m.fit(xs["train"], ys["train"], batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
        p = m.predict(xs["test"], batch_size=4096, verbose=0)[:, 0]
    return {"test_auc": float(roc_auc(ys["test"], p)), "epochs": epochs}


def harrell_c(time, event, risk):
    """Harrell's C (no tied times in the synthetic data): pairs with an earlier event, the higher risk first."""
    order = np.argsort(time, kind="mergesort")
    time, event, risk = time[order], event[order], risk[order]
    concordant, pairs = 0.0, 0.0
    for i in np.flatnonzero(event > 0.5):
        later = risk[i + 1 :]
        pairs += len(later)
        concordant += (later < risk[i]).sum() + 0.5 * (later == risk[i]).sum()
    return concordant / pairs


def held_out_cindex(data, dim, model, batch, epochs):
    """trialflow's protocol (trialflow-train-bench cindex): rows 0–100k train, 110k–115k test."""
    import torch

    setup("torch")
    x = load(f"{data}/x.f32", (-1, dim))
    y = load(f"{data}/y_survival.f32", (-1, 2))
    m = torch_model(model, dim)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x[:100_000]), torch.from_numpy(y[:100_000])
    lossf = torch_loss("time_to_event", yt)
    for _ in range(epochs):
        torch_epoch(m, opt, xt, yt, batch, len(yt), lossf)
    m.eval()
    with torch.no_grad():
        risk = m(torch.from_numpy(x[110_000:115_000])).squeeze(1).numpy()
    test = y[110_000:115_000]
    return {"c_index": float(harrell_c(test[:, 0], test[:, 1], risk))}


def kmeans(data, dim, k, rows, seed):
    """scikit-learn's KMeans as its users run it: k-means++ seeding, one run (n_init="auto"), Lloyd, on the
    machine's cores (OpenMP), on the float32 rows as they are (an expert does not copy them to float64)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    x = load(f"{data}/x.f32", (-1, dim))[:rows]
    with threadpool_limits(THREADS):
        start = time.perf_counter()
        km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
        secs = time.perf_counter() - start
    return {"seconds": secs, "inertia": float(km.inertia_), "rows": len(x), "iterations": int(km.n_iter_)}


if __name__ == "__main__":
    cmd, framework = sys.argv[1], sys.argv[2]
    if cmd == "throughput":
        data, dim, model, batch, rows = sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
        endpoint = sys.argv[8] if len(sys.argv) > 8 else "binary"
        out = throughput(framework, data, dim, model, batch, rows, endpoint)
    elif cmd == "kmeans":
        data, dim, k, rows, seed = sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
        out = kmeans(data, dim, k, rows, seed)
    elif cmd == "cindex":
        data, dim, model, batch, epochs = sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
        out = held_out_cindex(data, dim, model, batch, epochs)
    else:
        data, model, batch, epochs = sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        out = sample_auc(framework, data, model, batch, epochs)
    print(json.dumps(out))
