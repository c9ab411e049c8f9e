"""scikit-learn's least squares on exactly trialflow's train split and encoded features, scored on the test
split: the reference for trialflow's least-squares baseline (crates/cli/tests/it/real_trials.rs).

Usage: sklearn_linear.py DIR DIM   (DIR holds x_train.f32, y_train.f32, x_test.f32, y_test.f32)
Prints JSON {"predictions" (test rows in split order), "rmse", "mae", "r2"}.
"""

import json
import sys

import numpy as np
import sklearn
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

d, dim = sys.argv[1], int(sys.argv[2])
load = lambda name, width: np.fromfile(f"{d}/{name}.f32", dtype="<f4").astype(np.float64).reshape(-1, width)
x_train, y_train = load("x_train", dim), load("y_train", 1)[:, 0]
x_test, y_test = load("x_test", dim), load("y_test", 1)[:, 0]
# the one-hot levels of a field are collinear with the intercept: the minimum-norm least-squares solution
# (lstsq) gives the unique fitted values
p = LinearRegression().fit(x_train, y_train).predict(x_test)
print(json.dumps({
    "predictions": p.tolist(),
    "rmse": float(np.sqrt(mean_squared_error(y_test, p))),
    "mae": float(mean_absolute_error(y_test, p)),
    "r2": float(r2_score(y_test, p)),
    "sklearn": sklearn.__version__,
}))
