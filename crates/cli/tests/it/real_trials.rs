//! Every model on the public trials with a binary outcome, beside scikit-learn's logistic regression on the
//! identical split and features: trialflow's logistic baseline must give scikit-learn's test probabilities
//! (each within 1e-5) and so its log loss and AUC.
//! (scikit-learn comes from the MLflow test environment `cargo xtask test` installs.)

#![allow(clippy::unwrap_used)]

use crate::util;

use std::path::PathBuf;

use crate::util::{Project, parquet_batches, repo_root, text};
use serde_json::Value;

fn sklearn_python() -> PathBuf {
    let mlflow = std::env::var_os("TRIALFLOW_TEST_MLFLOW")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/py/mlflow/bin/mlflow"));
    let python = mlflow.with_file_name("python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask test`",
        python.display()
    );
    python
}

fn write_f32(path: PathBuf, v: &[f32]) {
    std::fs::write(
        path,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}

/// A trial's example config run through the data and training pipelines in a fresh project, with the train
/// and test splits written for a reference script: `x_<split>.f32` (encoded features, the transform serving
/// uses) and `y_<split>.f32` (the `targets` columns, row-major). Returns the project, its lake, the folder and
/// the model input width.
fn trained(
    config: &str,
    data: &str,
    targets: &[&str],
) -> (Project, PathBuf, tempfile::TempDir, usize) {
    let p = Project::sample();
    let cfg = format!("config/examples/{config}.yaml");
    std::fs::create_dir_all(p.path("config/examples")).unwrap();
    std::fs::create_dir_all(p.path("data/examples")).unwrap();
    std::fs::copy(repo_root().join(&cfg), p.path(&cfg)).unwrap();
    std::fs::copy(
        repo_root().join(format!("data/examples/{data}.csv")),
        p.path(&format!("data/examples/{data}.csv")),
    )
    .unwrap();
    for pipeline in ["data", "training"] {
        let o = p.run_keyed(&["--config", &cfg, "pipeline", pipeline]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let lake = {
        let c: Value =
            serde_json::from_slice(&p.run_keyed(&["--config", &cfg, "check-config"]).stdout)
                .unwrap();
        let url = c["storage"]["lake"].as_str().unwrap().to_string();
        p.path(url.trim_start_matches("file://"))
    };
    let spec: trialflow_core::features::FeatureSpec =
        serde_json::from_slice(&std::fs::read(lake.join("processed/feature_spec.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        let batches =
            parquet_batches(&lake.join(format!("processed/features/split={split}/part-0.parquet")));
        let (x, _) =
            trialflow_model::encode_batches(&spec, &batches, &|n| spec.table_column(n)).unwrap();
        let columns: Vec<Vec<f32>> = targets
            .iter()
            .map(|t| util::f32_column(&batches, t))
            .collect();
        let y: Vec<f32> = (0..columns[0].len())
            .flat_map(|r| columns.iter().map(move |c| c[r]))
            .collect();
        write_f32(dir.path().join(format!("x_{split}.f32")), &x);
        write_f32(dir.path().join(format!("y_{split}.f32")), &y);
    }
    (p, lake, dir, spec.width())
}

/// A reference script's JSON answer over the prepared splits.
fn reference_script(script: &str, dir: &std::path::Path, args: &[String]) -> Value {
    let o = std::process::Command::new(sklearn_python())
        .arg(repo_root().join(format!("crates/cli/tests/python/{script}")))
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn compare(trial: &str) -> Vec<(String, f64)> {
    let (_p, lake, dir, width) = trained(trial, trial, &["outcome"]);
    let sk = reference_script("sklearn_logistic.py", dir.path(), &[width.to_string()]);
    let sk_auc = sk["roc_auc"].as_f64().unwrap();
    let mut out = vec![("scikit-learn LogisticRegression".to_string(), sk_auc)];
    for m in ["baseline", "model_1", "model_2"] {
        let r: Value = serde_json::from_slice(
            &std::fs::read(lake.join(format!("candidates/{m}/metrics.json"))).unwrap(),
        )
        .unwrap();
        out.push((m.to_string(), r["metrics"]["roc_auc"].as_f64().unwrap()));
    }
    println!("{trial}: {out:?}");
    // The same maximum-likelihood fit: the same probability for every test row (weights are stored as f32,
    // so ~1e-7 apart at best), hence the same log loss and AUC.
    let ours = util::f32_column(
        &parquet_batches(&lake.join("candidates/baseline/test_predictions.parquet")),
        "probability",
    );
    let theirs: Vec<f64> = serde_json::from_value(sk["probabilities"].clone()).unwrap();
    assert_eq!(ours.len(), theirs.len(), "{trial}: test rows");
    assert!(ours.len() >= 20, "{trial}: {} test rows", ours.len());
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-5,
        "{trial}: trialflow's baseline probabilities differ from scikit-learn's by up to {worst:e}"
    );
    let baseline: Value = serde_json::from_slice(
        &std::fs::read(lake.join("candidates/baseline/metrics.json")).unwrap(),
    )
    .unwrap();
    let (ll, sk_ll) = (
        baseline["metrics"]["log_loss"].as_f64().unwrap(),
        sk["log_loss"].as_f64().unwrap(),
    );
    assert!(
        (ll - sk_ll).abs() <= 1e-5 * sk_ll.max(1.0),
        "{trial}: log loss {ll} vs scikit-learn's {sk_ll}"
    );
    let auc = out[1].1;
    // (rows whose probabilities are closer than the difference above could swap ranks)
    assert!(
        (auc - sk_auc).abs() <= 1e-3,
        "{trial}: trialflow's baseline test AUC {auc} vs scikit-learn's {sk_auc}"
    );
    out
}

#[test]
fn colon_trial_death() {
    compare("colon");
}

#[test]
fn indomethacin_trial_post_ercp_pancreatitis() {
    compare("indo_rct");
}

fn metrics_of(lake: &std::path::Path, model: &str) -> Value {
    let r: Value = serde_json::from_slice(
        &std::fs::read(lake.join(format!("candidates/{model}/metrics.json"))).unwrap(),
    )
    .unwrap();
    r["metrics"].clone()
}

/// The colon trial's time-to-event models (config/examples/colon_survival.yaml): the linear Cox baseline gives
/// scikit-survival's `CoxPHSurvivalAnalysis` risk scores on the identical split and features (up to the
/// constant a Cox model cannot see), and its test metrics are scikit-survival's on those scores.
#[test]
fn colon_trial_time_to_death_cox_baseline_against_scikit_survival() {
    let (_p, lake, dir, width) = trained("colon_survival", "colon", &["time", "event"]);
    let horizons = "365,1095,1825".to_string();
    let sk = reference_script("sksurv_cox.py", dir.path(), &[width.to_string(), horizons]);
    let centred = |v: Vec<f64>| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.into_iter().map(|x| x - m).collect::<Vec<f64>>()
    };
    let ours = centred(
        util::f32_column(
            &parquet_batches(&lake.join("candidates/baseline/test_predictions.parquet")),
            "risk_score",
        )
        .into_iter()
        .map(f64::from)
        .collect(),
    );
    let theirs = centred(serde_json::from_value(sk["risk_scores"].clone()).unwrap());
    assert_eq!(ours.len(), theirs.len());
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-3,
        "risk scores differ from scikit-survival's by up to {worst:e}"
    );
    let m = metrics_of(&lake, "baseline");
    assert_eq!(m["endpoint"], "time_to_event");
    for name in ["c_index_harrell", "c_index_uno", "mean_auc"] {
        let (a, b) = (m[name].as_f64().unwrap(), sk[name].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 2e-3,
            "{name}: trialflow {a} vs scikit-survival {b}"
        );
    }
    // every model learned something, and the networks are no worse than chance
    for model in ["baseline", "model_1", "model_2"] {
        let c = metrics_of(&lake, model)["c_index_harrell"]
            .as_f64()
            .unwrap();
        assert!(c > 0.6, "{model}: Harrell's C {c}");
    }
}

/// The OPT trial's continuous models (config/examples/opt_continuous.yaml): the least-squares baseline gives
/// scikit-learn's `LinearRegression` predictions on the identical split and features, and its test metrics
/// are scikit-learn's.
#[test]
fn opt_trial_pocket_depth_least_squares_against_scikit_learn() {
    let (_p, lake, dir, width) = trained("opt_continuous", "opt", &["V5.PD.avg"]);
    let sk = reference_script("sklearn_linear.py", dir.path(), &[width.to_string()]);
    let ours = util::f32_column(
        &parquet_batches(&lake.join("candidates/baseline/test_predictions.parquet")),
        "prediction",
    );
    let theirs: Vec<f64> = serde_json::from_value(sk["predictions"].clone()).unwrap();
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-4,
        "predictions differ from scikit-learn's by up to {worst:e}"
    );
    let m = metrics_of(&lake, "baseline");
    assert_eq!(m["endpoint"], "continuous");
    for name in ["rmse", "mae", "r2"] {
        let (a, b) = (m[name].as_f64().unwrap(), sk[name].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{name}: trialflow {a} vs scikit-learn {b}"
        );
    }
    for model in ["model_1", "model_2"] {
        let r2 = metrics_of(&lake, model)["r2"].as_f64().unwrap();
        assert!(r2 > 0.3, "{model}: R² {r2}");
    }
}

/// The colon trial's phenotype clusters (`clustering` in config/examples/colon_survival.yaml): on the same train
/// rows and columns, scikit-learn's silhouette of trialflow's clusters equals trialflow's, trialflow's k-means
/// is as tight as scikit-learn's `KMeans` at every k (inertia), agrees with it at the chosen k and chooses the
/// k scikit-learn's silhouettes choose; scikit-learn gives the Gaussian mixture the same BIC and its EM, started
/// from it, hardly moves it (it is converged); every row of every split is in one cluster.
#[test]
fn colon_trial_phenotype_clusters_against_scikit_learn() {
    let (p, lake, dir, width) = trained("colon_survival", "colon", &["time", "event"]);
    let read = |rel: &str| -> Value {
        serde_json::from_slice(&std::fs::read(lake.join(rel)).unwrap()).unwrap()
    };
    let model: trialflow_model::clustering::Phenotypes =
        serde_json::from_value(read("phenotypes/model.json")).unwrap();
    let spec = &model.feature_spec;
    let train = parquet_batches(&lake.join("processed/features/split=train/part-0.parquet"));
    let (x, _) = trialflow_model::encode_batches(spec, &train, &|n| spec.table_column(n)).unwrap();
    let labels: Vec<u8> = model
        .assign(&x)
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("labels.i64"), labels).unwrap();
    let columns: Vec<String> = model.columns.iter().map(usize::to_string).collect();
    assert!(
        !model.names.iter().any(|n| n.starts_with("rx=")),
        "the arm is no phenotype"
    );
    let sk = std::process::Command::new(sklearn_python())
        .arg(repo_root().join("crates/cli/tests/python/sklearn_clusters.py"))
        .arg("kmeans")
        .arg(dir.path())
        .args([width.to_string(), columns.join(","), "2".into(), "6".into()])
        .output()
        .unwrap();
    assert!(sk.status.success(), "{}", text(&sk));
    let sk: Value = serde_json::from_slice(&sk.stdout).unwrap();
    let report = read("phenotypes/clusters.json");
    let k = report["k"].as_u64().unwrap();
    let tried = report["tried"].as_array().unwrap();
    let at = |k: u64| tried.iter().find(|t| t["k"] == k).unwrap();
    let ours = at(k)["silhouette"].as_f64().unwrap();
    let theirs = sk["silhouette_of_trialflow"].as_f64().unwrap();
    assert!(
        (ours - theirs).abs() < 1e-9,
        "silhouette {ours} vs scikit-learn's {theirs}"
    );
    for r in sk["per_k"].as_array().unwrap() {
        let inertia = at(r["k"].as_u64().unwrap())["fit"].as_f64().unwrap();
        let want = r["inertia"].as_f64().unwrap();
        assert!(
            inertia <= want * 1.005,
            "k={}: inertia {inertia} vs KMeans {want}",
            r["k"]
        );
    }
    assert_eq!(k, sk["k_by_silhouette"].as_u64().unwrap(), "{report}");
    let ari = sk["ari_with_kmeans_at_k"].as_f64().unwrap();
    assert!(ari > 0.9, "ARI with KMeans {ari}");
    let rows: u64 = report["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rows"].as_u64().unwrap())
        .sum();
    let split_rows: usize = ["train", "val", "test"]
        .iter()
        .map(|s| {
            parquet_batches(&lake.join(format!("processed/features/split={s}/part-0.parquet")))
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(rows as usize, split_rows);
    assert!(
        report["stability"]["ari_mean"].as_f64().unwrap() > 0.5,
        "{report}"
    );

    let cfg = "config/examples/colon_survival.yaml";
    let mut c = p.cmd(&[
        "--config", cfg, "pipeline", "training", "--only", "cluster", "--force",
    ]);
    c.env("TRIALFLOW_CLUSTERING__METHOD", "gmm");
    c.env("TRIALFLOW_CLUSTERING__BOOTSTRAP", "3");
    c.env("TRIALFLOW_PSEUDONYM_KEY", util::TEST_KEY);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let report = read("phenotypes/clusters.json");
    let k = report["k"].as_u64().unwrap();
    let mixture = std::process::Command::new(sklearn_python())
        .arg(repo_root().join("crates/cli/tests/python/sklearn_clusters.py"))
        .arg("mixture")
        .arg(dir.path())
        .args([width.to_string(), columns.join(",")])
        .arg(lake.join("phenotypes/model.json"))
        .output()
        .unwrap();
    assert!(mixture.status.success(), "{}", text(&mixture));
    let sk: Value = serde_json::from_slice(&mixture.stdout).unwrap();
    assert_eq!(sk["k"].as_u64().unwrap(), k);
    // the same likelihood and BIC of the same parameters, and a solution scikit-learn's EM hardly improves
    let chosen = report["tried"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["k"] == k)
        .unwrap()
        .clone();
    let (bic, want) = (chosen["bic"].as_f64().unwrap(), sk["bic"].as_f64().unwrap());
    assert!(
        (bic - want).abs() <= 1e-6 * want.abs(),
        "BIC {bic} vs scikit-learn's {want}"
    );
    let (ll, refit) = (
        sk["mean_log_likelihood"].as_f64().unwrap(),
        sk["refit_mean_log_likelihood"].as_f64().unwrap(),
    );
    assert!(
        refit - ll < 0.05,
        "scikit-learn's EM moved the mixture from {ll} to {refit} per row"
    );

    // the gate on the time-to-event metrics, and the promotion carries the clustering the server answers with
    let o = p.run_keyed(&["--config", cfg, "pipeline", "deployment"]);
    assert!(o.status.success(), "{}", text(&o));
    let gate = read("candidates/gate.json");
    assert!(
        gate["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["metric"] == "c_index_uno" && c["passed"] == true),
        "{gate}"
    );
    let models: Value =
        serde_json::from_slice(&p.run_keyed(&["--config", cfg, "check-config"]).stdout).unwrap();
    let repo = p.path(
        models["storage"]["models"]
            .as_str()
            .unwrap()
            .trim_start_matches("file://"),
    );
    let version = repo.join("colon_death_survival/1");
    let card: Value =
        serde_json::from_slice(&std::fs::read(version.join("model.json")).unwrap()).unwrap();
    assert_eq!(card["endpoint"], "time_to_event");
    assert!(
        card["survival"]["baseline"]["times"]
            .as_array()
            .unwrap()
            .len()
            > 10
    );
    assert!(
        version.join("phenotypes.json").exists(),
        "the clustering is promoted with the model"
    );

    // more clusters than train rows is bad data naming the key; fewer than two a config error
    for (k, code, says) in [
        (
            "[2, 100000]",
            3,
            "100000 clusters asked for but the train split has",
        ),
        ("[1, 3]", 2, "clustering.k"),
    ] {
        let o = p
            .cmd(&[
                "--config", cfg, "pipeline", "training", "--only", "cluster", "--force",
            ])
            .env("TRIALFLOW_CLUSTERING__K", k)
            .env("TRIALFLOW_PSEUDONYM_KEY", util::TEST_KEY)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code), "{k}: {}", text(&o));
        assert!(text(&o).contains(says), "{k}: {}", text(&o));
    }
}
