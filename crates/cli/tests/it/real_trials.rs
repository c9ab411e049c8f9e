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

fn compare(trial: &str) -> Vec<(String, f64)> {
    let p = Project::sample();
    let cfg = format!("config/examples/{trial}.yaml");
    std::fs::create_dir_all(p.path("config/examples")).unwrap();
    std::fs::create_dir_all(p.path("data/examples")).unwrap();
    std::fs::copy(repo_root().join(&cfg), p.path(&cfg)).unwrap();
    std::fs::copy(
        repo_root().join(format!("data/examples/{trial}.csv")),
        p.path(&format!("data/examples/{trial}.csv")),
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
        let y = util::f32_column(&batches, "outcome");
        write_f32(dir.path().join(format!("x_{split}.f32")), &x);
        write_f32(dir.path().join(format!("y_{split}.f32")), &y);
    }
    let o = std::process::Command::new(sklearn_python())
        .arg(repo_root().join("crates/cli/tests/python/sklearn_logistic.py"))
        .arg(dir.path())
        .arg(spec.width().to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let sk: Value = serde_json::from_slice(&o.stdout).unwrap();
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
