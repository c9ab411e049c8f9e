"""scikit-learn's logistic regression on exactly trialflow's train split and encoded features, scored on the
test split: the reference for trialflow's logistic baseline (crates/cli/tests/it/real_trials.rs).

Usage: sklearn_logistic.py DIR DIM   (DIR holds x_train.f32, y_train.f32, x_test.f32, y_test.f32)
Prints JSON {"roc_auc", "log_loss", "probabilities" (test rows in split order), "coef", "intercept", "sklearn"}.
"""

import json
import sys

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

d, dim = sys.argv[1], int(sys.argv[2])
load = lambda name, width: np.fromfile(f"{d}/{name}.f32", dtype="<f4").astype(np.float64).reshape(-1, width)
x_train, y_train = load("x_train", dim), load("y_train", 1)[:, 0]
x_test, y_test = load("x_test", dim), load("y_test", 1)[:, 0]
# Unpenalized, as trialflow's baseline (no weight decay): the maximum-likelihood fit, by Newton's method (as
# trialflow's) to a tight tolerance so that the reference is the optimum itself, not an approximation of it.
model = LogisticRegression(penalty=None, solver="newton-cholesky", max_iter=1_000, tol=1e-12).fit(x_train, y_train)
p = model.predict_proba(x_test)[:, 1]
print(json.dumps({
    "roc_auc": roc_auc_score(y_test, p),
    "log_loss": log_loss(y_test, p),
    "probabilities": p.tolist(),
    "coef": model.coef_[0].tolist(),
    "intercept": float(model.intercept_[0]),
    "sklearn": sklearn.__version__,
}))
