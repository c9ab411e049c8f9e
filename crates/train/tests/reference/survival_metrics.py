"""Reference numbers for the time-to-event and continuous endpoints (crates/train/tests/sklearn_reference.rs),
computed with scikit-survival 0.28, lifelines 0.30 and scikit-learn 1.9 on R's survival::lung
(../shared/data/survival__cancer.csv, the copy in data/examples/lung.csv).

The split is fixed: every third complete row (age, sex, ph.ecog, ph.karno) is a test row, the rest train.
- Time to event: the linear Cox model (Efron ties, no penalty) fitted by lifelines on the train rows, its
  linear predictor (not centred) as the risk score, the Breslow baseline cumulative hazard (scikit-survival's
  BreslowEstimator) and every metric trialflow reports, the censoring distribution from the train rows.
- Continuous: least squares of ph.karno on age, sex and ph.ecog on the train rows (numpy), scored on the test
  rows by scikit-learn.

Writes survival_fixture.csv (the rows, their split and the reference risk scores and predictions) and
survival_metrics.json. Run from the repository root:  cargo xtask references survival_metrics
"""

import json
from pathlib import Path

import lifelines
import numpy as np
import pandas as pd
import sklearn
import sksurv
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sksurv.linear_model.coxph import BreslowEstimator
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

HERE = Path(__file__).parent
HORIZONS = [180.0, 365.0, 540.0]
FEATURES = ["age", "sex", "ph.ecog"]

lung = pd.read_csv("data/examples/lung.csv")
lung = lung.dropna(subset=FEATURES + ["ph.karno"]).reset_index(drop=True)
lung["event"] = (lung["status"] == 2).astype(int)
lung["split"] = np.where(lung.index % 3 == 0, "test", "train")
train, test = lung[lung.split == "train"], lung[lung.split == "test"]

cph = lifelines.CoxPHFitter().fit(
    train[FEATURES + ["time", "event"]], duration_col="time", event_col="event"
)
coef = cph.params_[FEATURES].to_numpy()
lp_train = train[FEATURES].to_numpy() @ coef
lp_test = test[FEATURES].to_numpy() @ coef
y_train = Surv.from_arrays(train.event.astype(bool), train.time.astype(float))
y_test = Surv.from_arrays(test.event.astype(bool), test.time.astype(float))
breslow = BreslowEstimator().fit(lp_train, train.event.to_numpy(), train.time.to_numpy())
surv = np.array([[fn(t) for t in HORIZONS] for fn in breslow.get_survival_function(lp_test)])

harrell = concordance_index_censored(y_test["event"], y_test["time"], lp_test)[0]
uno = concordance_index_ipcw(y_train, y_test, lp_test, tau=HORIZONS[-1])[0]
auc, mean_auc = cumulative_dynamic_auc(y_train, y_test, lp_test, HORIZONS)
_, brier = brier_score(y_train, y_test, surv, HORIZONS)
ibs = integrated_brier_score(y_train, y_test, surv, HORIZONS)

x_train = np.column_stack([np.ones(len(train)), train[FEATURES].to_numpy()])
ols, *_ = np.linalg.lstsq(x_train, train["ph.karno"].to_numpy(), rcond=None)
predicted = np.column_stack([np.ones(len(test)), test[FEATURES].to_numpy()]) @ ols
observed = test["ph.karno"].to_numpy()
slope, intercept = np.polyfit(predicted, observed, 1)

fixture = lung[["split", "time", "event"] + FEATURES + ["ph.karno"]].copy()
fixture["risk_score"] = np.r_[lp_train, lp_test][np.argsort(np.r_[train.index, test.index])]
fixture.to_csv(HERE / "survival_fixture.csv", index=False, float_format="%.17g")

out = {
    "versions": {
        "scikit-survival": sksurv.__version__,
        "lifelines": lifelines.__version__,
        "scikit-learn": sklearn.__version__,
    },
    "horizons": HORIZONS,
    "cox": {
        "coef": coef.tolist(),
        "log_likelihood": cph.log_likelihood_,
        "events": int(train.event.sum()),
    },
    "baseline_cumulative_hazard": [float(breslow.cum_baseline_hazard_(t)) for t in HORIZONS],
    "test_survival_first_rows": surv[:5].tolist(),
    "survival": {
        "c_index_harrell": harrell,
        "c_index_uno": uno,
        "auc": auc.tolist(),
        "mean_auc": mean_auc,
        "brier": brier.tolist(),
        "integrated_brier": ibs,
    },
    "least_squares": {"coef": ols.tolist()},
    "continuous": {
        "rmse": float(np.sqrt(mean_squared_error(observed, predicted))),
        "mae": float(mean_absolute_error(observed, predicted)),
        "r2": float(r2_score(observed, predicted)),
        "calibration_slope": float(slope),
        "calibration_intercept": float(intercept),
    },
}
(HERE / "survival_metrics.json").write_text(json.dumps(out, indent=2) + "\n")
