"""scikit-learn's KMeans and GaussianMixture on exactly the rows and columns trialflow clustered (the train
split's encoded inputs but the arm): the reference for trialflow's `cluster` task
(crates/cli/tests/it/real_trials.rs).

Usage: sklearn_clusters.py kmeans DIR DIM COLUMNS K_FROM K_TO
  (DIR holds x_train.f32 and labels.i64, trialflow's clusters of the train rows; COLUMNS comma-separated
  indices of the clustered columns.) Prints JSON: the silhouette of trialflow's labels by scikit-learn; per k,
  KMeans' (k-means++, n_init=10) inertia and silhouette; the k the silhouettes choose; the adjusted Rand index
  of trialflow's clusters with KMeans' at that k.
Usage: sklearn_clusters.py mixture DIR DIM COLUMNS MODEL_JSON
  Prints JSON: trialflow's Gaussian mixture (phenotypes/model.json) as a GaussianMixture: its BIC and mean
  log-likelihood by scikit-learn, and the mean log-likelihood scikit-learn's EM reaches started from it.
"""

import json
import sys

import numpy as np
import sklearn
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky


def rows(d, dim, columns):
    return np.fromfile(f"{d}/x_train.f32", dtype="<f4").astype(np.float64).reshape(-1, dim)[:, columns]


def kmeans_check(d, dim, columns, k_from, k_to):
    x = rows(d, dim, columns)
    labels = np.fromfile(f"{d}/labels.i64", dtype="<i8")
    out = {"silhouette_of_trialflow": float(silhouette_score(x, labels)), "per_k": [], "sklearn": sklearn.__version__}
    fits = {}
    for k in range(k_from, k_to + 1):
        km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(x)
        fits[k] = km.labels_
        out["per_k"].append({"k": k, "inertia": float(km.inertia_), "silhouette": float(silhouette_score(x, km.labels_))})
    out["k_by_silhouette"] = max(out["per_k"], key=lambda r: r["silhouette"])["k"]
    out["ari_with_kmeans_at_k"] = float(adjusted_rand_score(labels, fits[len(set(labels.tolist()))]))
    return out


def mixture_check(d, dim, columns, model_path):
    x = rows(d, dim, columns)
    m = json.load(open(model_path))
    k = len(m["weights"])
    covs = np.array([np.array(c).reshape(len(columns), len(columns)) for c in m["covariances"]])
    gm = GaussianMixture(n_components=k, covariance_type="full")
    gm.weights_, gm.means_, gm.covariances_ = np.array(m["weights"]), np.array(m["centers"]), covs
    gm.precisions_cholesky_ = _compute_precision_cholesky(covs, "full")
    refit = GaussianMixture(
        n_components=k,
        covariance_type="full",
        weights_init=gm.weights_,
        means_init=gm.means_,
        precisions_init=np.array([c @ c.T for c in gm.precisions_cholesky_]),
    ).fit(x)
    return {
        "k": k,
        "bic": float(gm.bic(x)),
        "mean_log_likelihood": float(gm.score(x)),
        "refit_mean_log_likelihood": float(refit.score(x)),
        "sklearn": sklearn.__version__,
    }


if __name__ == "__main__":
    d, dim, columns = sys.argv[2], int(sys.argv[3]), [int(c) for c in sys.argv[4].split(",")]
    if sys.argv[1] == "mixture":
        out = mixture_check(d, dim, columns, sys.argv[5])
    else:
        out = kmeans_check(d, dim, columns, int(sys.argv[5]), int(sys.argv[6]))
    print(json.dumps(out))
