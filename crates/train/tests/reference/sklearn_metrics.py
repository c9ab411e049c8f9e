"""Reference test-split metrics for crates/train/tests/sklearn_reference.rs, computed with scikit-learn.

Input: test_predictions.csv (outcome, probability; model_2's test split on the bundled sample trial, written by
`trialflow pipeline full`). Output: sklearn_metrics.json. Run with the other references,
`cargo xtask references sklearn_metrics`, or from any folder:

    python -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn==1.9.1 numpy
    /tmp/skl/bin/python sklearn_metrics.py

Bootstrap intervals cannot be reproduced draw for draw (different generators); the reference uses 20,000
resamples so that its own Monte Carlo error is small, and the test allows for trialflow's 1,000.
"""

import json
from pathlib import Path

import numpy as np
import sklearn
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    log_loss,
    recall_score,
    roc_auc_score,
)

HERE = Path(__file__).parent
data = np.loadtxt(HERE / "test_predictions.csv", delimiter=",", skiprows=1)
y, p = data[:, 0].astype(int), data[:, 1]
THRESHOLD = 0.5
N_BINS = 10


def ece(y, p):
    prob_true, prob_pred = calibration_curve(y, p, n_bins=N_BINS, strategy="uniform")
    bins = np.linspace(0.0, 1.0, N_BINS + 1)
    counts = np.bincount(np.searchsorted(bins[1:-1], p, side="right"), minlength=N_BINS)
    counts = counts[counts > 0]
    return float(np.sum(counts / len(p) * np.abs(prob_true - prob_pred))), prob_true, prob_pred, counts


def metrics(y, p):
    pred = (p >= THRESHOLD).astype(int)
    return {
        "roc_auc": roc_auc_score(y, p),
        "pr_auc": average_precision_score(y, p),
        "brier": brier_score_loss(y, p),
        "log_loss": log_loss(y, p),
        "accuracy": accuracy_score(y, pred),
        "sensitivity": recall_score(y, pred, pos_label=1),
        "specificity": recall_score(y, pred, pos_label=0),
        "ece": ece(y, p)[0],
    }


point = metrics(y, p)
_, prob_true, prob_pred, counts = ece(y, p)
rng = np.random.default_rng(20261126)
draws = {k: [] for k in point}
for _ in range(20000):
    i = rng.integers(0, len(y), len(y))
    yb, pb = y[i], p[i]
    if yb.min() == yb.max():
        continue
    for k, v in metrics(yb, pb).items():
        draws[k].append(v)
ci = {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}
out = {
    "sklearn": sklearn.__version__,
    "n": int(len(y)),
    "positives": int(y.sum()),
    "threshold": THRESHOLD,
    "metrics": {k: float(v) for k, v in point.items()},
    "reliability": [
        {"mean_predicted": float(a), "observed": float(b), "n": int(c)}
        for a, b, c in zip(prob_pred, prob_true, counts)
    ],
    "ci95": ci,
}
with open(HERE / "sklearn_metrics.json", "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
print(json.dumps(out["metrics"], indent=2))
