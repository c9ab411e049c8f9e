"""scikit-learn's logistic regression on exactly trialflow's train split and encoded features, scored on the
test split: the reference for trialflow's logistic baseline (crates/cli/tests/real_trials.rs).

Usage: sklearn_logistic.py DIR DIM   (DIR holds x_train.f32, y_train.f32, x_test.f32, y_test.f32)
Prints JSON {"roc_auc": …, "sklearn": version}.
"""

import json
import sys

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

d, dim = sys.argv[1], int(sys.argv[2])
load = lambda name, width: np.fromfile(f"{d}/{name}.f32", dtype="<f4").astype(np.float64).reshape(-1, width)
x_train, y_train = load("x_train", dim), load("y_train", 1)[:, 0]
x_test, y_test = load("x_test", dim), load("y_test", 1)[:, 0]
# Unpenalized, as trialflow's baseline (no weight decay): the maximum-likelihood fit.
model = LogisticRegression(penalty=None, max_iter=10_000, tol=1e-10).fit(x_train, y_train)
print(json.dumps({"roc_auc": roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]), "sklearn": sklearn.__version__}))
