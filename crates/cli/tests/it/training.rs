//! Training end to end: the saved weights reproduce trialflow's test probabilities in numpy (loaded with the
//! Python safetensors package), and bad training inputs are clear errors that save no model.

#![allow(clippy::unwrap_used)]

use crate::util;

use std::path::Path;
use std::sync::Arc;

use crate::util::{Project, parquet_batches, repo_root, test_python, text};
use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch};

fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    let schema = batches[0].schema();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn write_row_groups_of_100(path: &Path, batches: &[RecordBatch]) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn split_file(p: &Project, split: &str) -> std::path::PathBuf {
    p.path(&format!(
        "data/lake/processed/features/split={split}/part-0.parquet"
    ))
}

/// Replaces column `name` of every batch of a split with `f(old column)`.
fn rewrite_column(p: &Project, split: &str, name: &str, f: &dyn Fn(&ArrayRef) -> ArrayRef) {
    let path = split_file(p, split);
    let batches: Vec<RecordBatch> = parquet_batches(&path)
        .into_iter()
        .map(|b| {
            let i = b.schema().index_of(name).unwrap();
            let mut cols = b.columns().to_vec();
            cols[i] = f(&cols[i]);
            RecordBatch::try_new(b.schema(), cols).unwrap()
        })
        .collect();
    write_parquet(&path, &batches);
}

#[test]
fn saved_weights_reproduce_the_test_probabilities_in_numpy() {
    let p = Project::sample();
    let out = p.run(&["pipeline", "full"]);
    assert!(out.status.success(), "{}", text(&out));
    let spec: trialflow_core::features::FeatureSpec = serde_json::from_slice(
        &std::fs::read(p.path("data/lake/processed/feature_spec.json")).unwrap(),
    )
    .unwrap();
    let batches = parquet_batches(&split_file(&p, "test"));
    let (x, rows) =
        trialflow_model::encode_batches(&spec, &batches, &|n| spec.table_column(n)).unwrap();
    let x_path = p.path("x.f32");
    std::fs::write(
        &x_path,
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    for model in ["model_1", "model_2", "baseline"] {
        let dir = p.path(&format!("data/lake/candidates/{model}"));
        let out_path = p.path(&format!("{model}.f32"));
        let o = std::process::Command::new(test_python())
            .arg(repo_root().join("crates/cli/tests/python/numpy_forward.py"))
            .arg(&dir)
            .arg(&x_path)
            .arg(rows.to_string())
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{model}: {}", text(&o));
        let numpy: Vec<f32> = std::fs::read(&out_path)
            .unwrap()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let preds = parquet_batches(&dir.join("test_predictions.parquet"));
        let ours = util::f32_column(&preds, "probability");
        assert_eq!(numpy.len(), ours.len(), "{model}");
        let worst = numpy
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-5,
            "{model}: numpy and trialflow differ by up to {worst}"
        );
    }
}

fn train_one(p: &Project, env: &[(&str, &str)]) -> (i32, String) {
    let _ = std::fs::remove_dir_all(p.path("data/lake/candidates/model_1"));
    let mut c = p.cmd(&["pipeline", "training", "--only", "train_model_1", "--force"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let saved = p
        .path("data/lake/candidates/model_1/model.safetensors")
        .exists();
    let code = o.status.code().unwrap();
    if code != 0 {
        assert!(!saved, "a failed training saved a model: {}", text(&o));
    }
    (code, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn bad_training_inputs_are_clear_errors_and_save_no_model() {
    let p = Project::sample();
    let out = p.run(&["pipeline", "data"]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, err) = train_one(&p, &[]);
    assert_eq!(code, 0, "{err}");

    // Configuration: an unknown device, CUDA in a CPU build, a layer of width zero, a diverging run.
    let (code, err) = train_one(&p, &[("TRIALFLOW_TRAINING__DEVICE", "tpu")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("training.device"), "{err}");
    let (code, err) = train_one(&p, &[("TRIALFLOW_TRAINING__DEVICE", "cuda")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--features cuda"), "{err}");
    let cfg = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    p.write(
        "config/zero.yaml",
        &cfg.replace("model_1: {hidden: [64]}", "model_1: {hidden: [0]}"),
    );
    let o = p.run(&[
        "--config",
        "config/zero.yaml",
        "pipeline",
        "training",
        "--only",
        "train_model_1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("models.model_1.hidden") && text(&o).contains("widths > 0"),
        "{}",
        text(&o)
    );
    let (code, err) = train_one(&p, &[("TRIALFLOW_TRAINING__LEARNING_RATE", "1e30")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("diverged") && err.contains("nothing was saved"),
        "{err}"
    );

    // Data: an infinite feature value, a one-class split, an empty split, a spec that does not fit the table.
    let backup: Vec<(std::path::PathBuf, Vec<u8>)> = ["train", "test"]
        .iter()
        .map(|s| (split_file(&p, s), std::fs::read(split_file(&p, s)).unwrap()))
        .collect();
    let restore = || {
        for (path, bytes) in &backup {
            std::fs::write(path, bytes).unwrap();
        }
    };
    rewrite_column(&p, "train", "ldl_mg_dl", &|c| {
        let mut v: Vec<Option<f64>> = c
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .iter()
            .collect();
        v[3] = Some(f64::INFINITY);
        Arc::new(Float64Array::from(v))
    });
    let (code, err) = train_one(&p, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("ldl_mg_dl: row 3: expected a finite number"),
        "{err}"
    );
    restore();

    rewrite_column(&p, "train", "outcome", &|c| {
        let zeros: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![0i64; c.len()]));
        arrow::compute::cast(&zeros, c.data_type()).unwrap()
    });
    let (code, err) = train_one(&p, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("the train split has one outcome class only"),
        "{err}"
    );
    restore();

    let test = parquet_batches(&split_file(&p, "test"));
    write_parquet(&split_file(&p, "test"), &[test[0].slice(0, 0)]);
    let (code, err) = train_one(&p, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("the test split is empty"), "{err}");
    restore();

    let spec_path = p.path("data/lake/processed/feature_spec.json");
    let spec_text = std::fs::read_to_string(&spec_path).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&spec_text).unwrap();
    let mut extra = spec["numeric"][0].clone();
    extra["name"] = "tumour_size_mm".into();
    spec["numeric"].as_array_mut().unwrap().push(extra);
    spec["columns"]
        .as_array_mut()
        .unwrap()
        .push("tumour_size_mm".into());
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let (code, err) = train_one(&p, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("tumour_size_mm"), "{err}");
    std::fs::write(&spec_path, spec_text).unwrap();
    let (code, err) = train_one(&p, &[]);
    assert_eq!(code, 0, "{err}");
}

/// A train split above `training.max_in_memory_mib` is streamed in blocks of `stream_block_rows` rows, row group
/// by row group: never held whole, seeded (two runs, one set of weights), as good as the in-memory run, and a
/// bad value in it is still an error that names where it is.
#[test]
fn a_train_split_above_the_memory_limit_is_streamed_in_blocks() {
    let p = Project::sample();
    let out = p.run(&["pipeline", "data"]);
    assert!(out.status.success(), "{}", text(&out));
    let metrics = |p: &Project| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(p.path("data/lake/candidates/model_1/metrics.json")).unwrap(),
        )
        .unwrap()
    };
    let weights = |p: &Project| {
        std::fs::read(p.path("data/lake/candidates/model_1/model.safetensors")).unwrap()
    };
    let (code, err) = train_one(&p, &[]);
    assert_eq!(code, 0, "{err}");
    let in_memory = metrics(&p);
    assert!(in_memory.get("stream").is_none());

    // several row groups, so that their order is shuffled too
    let train = split_file(&p, "train");
    write_row_groups_of_100(&train, &parquet_batches(&train));

    let streaming = [
        ("TRIALFLOW_TRAINING__MAX_IN_MEMORY_MIB", "0"),
        ("TRIALFLOW_TRAINING__STREAM_BLOCK_ROWS", "128"),
    ];
    let (code, err) = train_one(&p, &streaming);
    assert_eq!(code, 0, "{err}");
    let streamed = metrics(&p);
    let first = weights(&p);
    let train_rows = in_memory["train_rows"].as_u64().unwrap();
    assert_eq!(streamed["train_rows"], in_memory["train_rows"]);
    assert_eq!(streamed["test_rows"], in_memory["test_rows"]);
    let stats = &streamed["stream"];
    assert_eq!(
        stats["row_groups"].as_u64().unwrap(),
        train_rows.div_ceil(100)
    );
    assert_eq!(stats["largest_block_rows"].as_u64().unwrap(), 128);
    assert_eq!(
        stats["blocks_per_epoch"].as_u64().unwrap(),
        train_rows.div_ceil(128)
    );
    let auc = |m: &serde_json::Value| m["metrics"]["roc_auc"].as_f64().unwrap();
    assert!(
        (auc(&streamed) - auc(&in_memory)).abs() < 0.03,
        "streamed AUC {} vs in memory {}",
        auc(&streamed),
        auc(&in_memory)
    );
    let (code, err) = train_one(&p, &streaming);
    assert_eq!(code, 0, "{err}");
    assert!(first == weights(&p), "two seeded streamed runs differ");

    // a NaN in the third row group: an error naming the object, the row group and the row
    let mut written = 0;
    let with_nan: Vec<RecordBatch> = parquet_batches(&train)
        .iter()
        .map(|b| {
            let i = b.schema().index_of("ldl_mg_dl").unwrap();
            let mut v: Vec<Option<f64>> = b
                .column(i)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .iter()
                .collect();
            if (written..written + b.num_rows()).contains(&205) {
                v[205 - written] = Some(f64::NAN);
            }
            written += b.num_rows();
            let mut cols = b.columns().to_vec();
            cols[i] = Arc::new(Float64Array::from(v));
            RecordBatch::try_new(b.schema(), cols).unwrap()
        })
        .collect();
    write_row_groups_of_100(&train, &with_nan);
    let (code, err) = train_one(&p, &streaming);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("part-0.parquet (row group 2, from row 0)")
            && err.contains("ldl_mg_dl: row 5"),
        "{err}"
    );
}

/// `config/examples/sample_survival.yaml` over the project's lake.
fn survival_config(p: &Project) -> String {
    let text = std::fs::read_to_string(repo_root().join("config/examples/sample_survival.yaml"))
        .unwrap()
        .replace("file://data/lake-survival", "file://data/lake")
        .replace("file://models-survival", "file://models");
    p.write("config/survival.yaml", &text);
    "config/survival.yaml".into()
}

fn train_with(p: &Project, cfg: &str, model: &str, env: &[(&str, &str)]) -> (i32, String) {
    let _ = std::fs::remove_dir_all(p.path(&format!("data/lake/candidates/{model}")));
    let task = format!("train_{model}");
    let mut c = p.cmd(&[
        "--config", cfg, "pipeline", "training", "--only", &task, "--force",
    ]);
    c.env("TRIALFLOW_TRAINING__BOOTSTRAP_RESAMPLES", "50");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let saved = p
        .path(&format!("data/lake/candidates/{model}/model.safetensors"))
        .exists();
    let code = o.status.code().unwrap();
    assert!(
        code == 0 || !saved,
        "a failed training saved a model: {}",
        text(&o)
    );
    (code, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The sample trial's time-to-event models (config/examples/sample_survival.yaml): every architecture learns
/// a risk score that ranks better than chance, in memory and streamed by row group (the Cox loss over each
/// batch's risk sets); a split without events, a continuous target with a NaN, and endpoints the config
/// cannot have are clear errors that save no model.
#[test]
fn time_to_event_and_continuous_endpoints_and_their_bad_inputs() {
    let p = Project::sample();
    let cfg = survival_config(&p);
    let o = p.run(&["--config", &cfg, "pipeline", "data"]);
    assert!(o.status.success(), "{}", text(&o));
    for model in ["baseline", "model_1"] {
        let (code, err) = train_with(&p, &cfg, model, &[]);
        assert_eq!(code, 0, "{err}");
        let m = p.read_json(&format!("data/lake/candidates/{model}/metrics.json"));
        assert_eq!(m["metrics"]["endpoint"], "time_to_event", "{m}");
        let c = m["metrics"]["c_index_harrell"].as_f64().unwrap();
        assert!(c > 0.6, "{model}: Harrell's C {c}");
        let card = p.read_json(&format!("data/lake/candidates/{model}/model.json"));
        assert_eq!(
            card["survival"]["times"],
            serde_json::json!([365.0, 730.0, 1095.0])
        );
    }
    let in_memory =
        p.read_json("data/lake/candidates/model_1/metrics.json")["metrics"]["c_index_harrell"]
            .as_f64()
            .unwrap();
    let (code, err) = train_with(
        &p,
        &cfg,
        "model_1",
        &[
            ("TRIALFLOW_TRAINING__MAX_IN_MEMORY_MIB", "0"),
            ("TRIALFLOW_TRAINING__STREAM_BLOCK_ROWS", "512"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let m = p.read_json("data/lake/candidates/model_1/metrics.json");
    assert!(m["stream"]["blocks_per_epoch"].as_u64().unwrap() > 1, "{m}");
    let streamed = m["metrics"]["c_index_harrell"].as_f64().unwrap();
    assert!(
        (streamed - in_memory).abs() < 0.05,
        "streamed {streamed} vs in memory {in_memory}"
    );

    // no event in the train split
    let path = split_file(&p, "train");
    let backup = std::fs::read(&path).unwrap();
    rewrite_column(&p, "train", "event", &|c| {
        let zeros: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![0i64; c.len()]));
        arrow::compute::cast(&zeros, c.data_type()).unwrap()
    });
    let (code, err) = train_with(&p, &cfg, "model_1", &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("the train split has no event"), "{err}");
    std::fs::write(&path, backup).unwrap();

    // a continuous endpoint: its target must not be a model input, and a NaN in it is an error naming it
    let survival = std::fs::read_to_string(p.path(&cfg)).unwrap();
    let continuous = survival
        .replace(
            "endpoint: time_to_event",
            "endpoint: continuous\n  target: ldl_mg_dl",
        )
        .replace("c_index_uno_ci_lower", "r2")
        .replace("integrated_brier, max: 0.25", "rmse, max: 100")
        .replace("metric: c_index_harrell", "metric: r2");
    p.write("config/ldl.yaml", &continuous);
    let o = p.run(&["--config", "config/ldl.yaml", "check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("training.target") && text(&o).contains("is a model input"),
        "{}",
        text(&o)
    );
    let inputs = "  # features: [age, bmi, sex]";
    assert!(continuous.contains(inputs));
    p.write(
        "config/ldl.yaml",
        &continuous.replace(
            inputs,
            "  features: [age, weight_kg, height_cm, bmi, systolic_bp, diastolic_bp, hdl_mg_dl, sex, smoker, diabetic]",
        ),
    );
    let o = p.run(&["--config", "config/ldl.yaml", "pipeline", "data"]);
    assert!(o.status.success(), "{}", text(&o));
    let (code, err) = train_with(&p, "config/ldl.yaml", "baseline", &[]);
    assert_eq!(code, 0, "{err}");
    let m = p.read_json("data/lake/candidates/baseline/metrics.json");
    assert_eq!(m["metrics"]["endpoint"], "continuous", "{m}");
    rewrite_column(&p, "train", "ldl_mg_dl", &|c| {
        let mut v: Vec<Option<f64>> = c
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .iter()
            .collect();
        v[5] = Some(f64::NAN);
        Arc::new(Float64Array::from(v))
    });
    let (code, err) = train_with(&p, "config/ldl.yaml", "model_1", &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("target column `ldl_mg_dl` has a NaN"), "{err}");

    // endpoint keys the config cannot have
    for (from, to, key) in [
        (
            "  horizons: [365, 730, 1095]",
            "  horizons: []",
            "training.horizons",
        ),
        (
            "  endpoint: time_to_event",
            "  endpoint: time_to_event\n  target: nosuch",
            "training.target",
        ),
        (
            "metric: c_index_harrell",
            "metric: roc_auc",
            "deployment.slice_checks[0].metric",
        ),
    ] {
        p.write("config/bad.yaml", &survival.replace(from, to));
        let o = p.run(&["--config", "config/bad.yaml", "check-config"]);
        assert_eq!(o.status.code(), Some(2), "{key}: {}", text(&o));
        assert!(text(&o).contains(key), "{key}: {}", text(&o));
    }
}
