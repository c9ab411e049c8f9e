"""scikit-survival's Cox model on exactly trialflow's train split and encoded features, scored on the test
split: the reference for trialflow's linear Cox baseline (crates/cli/tests/it/real_trials.rs).

Usage: sksurv_cox.py DIR DIM HORIZONS   (DIR holds x_train.f32, y_train.f32 (time, event per row), x_test.f32,
y_test.f32; HORIZONS comma-separated)
Prints JSON {"risk_scores" (test rows in split order), "c_index_harrell", "c_index_uno", "auc", "mean_auc"}.
"""

import json
import sys

import numpy as np
import sksurv
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw, cumulative_dynamic_auc
from sksurv.util import Surv

d, dim = sys.argv[1], int(sys.argv[2])
horizons = [float(h) for h in sys.argv[3].split(",")]
load = lambda name, width: np.fromfile(f"{d}/{name}.f32", dtype="<f4").astype(np.float64).reshape(-1, width)
x_train, y_train = load("x_train", dim), load("y_train", 2)
x_test, y_test = load("x_test", dim), load("y_test", 2)
train = Surv.from_arrays(y_train[:, 1] > 0.5, y_train[:, 0])
test = Surv.from_arrays(y_test[:, 1] > 0.5, y_test[:, 0])
# Efron's ties as trialflow's default; the one-hot levels of a field sum to a constant the partial likelihood
# cannot see, so a vanishing ridge makes the optimum unique (the risk scores are unique up to that constant).
model = CoxPHSurvivalAnalysis(alpha=1e-6, ties="efron", n_iter=1000, tol=1e-12).fit(x_train, train)
risk = x_test @ model.coef_
auc, mean_auc = cumulative_dynamic_auc(train, test, risk, horizons)
print(json.dumps({
    "risk_scores": risk.tolist(),
    "c_index_harrell": concordance_index_censored(test["event"], test["time"], risk)[0],
    "c_index_uno": concordance_index_ipcw(train, test, risk, tau=horizons[-1])[0],
    "auc": auc.tolist(),
    "mean_auc": mean_auc,
    "sksurv": sksurv.__version__,
}))
