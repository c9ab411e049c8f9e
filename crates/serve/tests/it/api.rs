//! The server's HTTP contract, in process: TF Serving REST and Open Inference Protocol v2 answers, bad input
//! as 4xx naming the field, version policy and labels, reload under load, limits, metrics, graceful drain.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};
use trialflow_core::config::VersionPolicy;

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
}

fn preds(v: &Value, key: &str) -> Vec<f32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {v}"))
        .iter()
        .map(|r| r[0].as_f64().unwrap() as f32)
        .collect()
}

fn repo_with(versions: &[(u64, u64)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (v, seed) in versions {
        write_version(dir.path(), "cv", *v, *seed, true);
    }
    dir
}

#[test]
fn tf_serving_status_metadata_and_predict_in_every_request_form() {
    let repo = repo_with(&[(1, 11), (2, 22)]);
    let s = TestServer::start(serving(60), repo.path());

    // latest policy: only version 2 serves
    let r = s.get("/v1/models/cv");
    assert_eq!(r.status, 200, "{}", r.text());
    let st = r.json()["model_version_status"].clone();
    assert_eq!(st.as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st[0]["version"], "2");
    assert_eq!(st[0]["state"], "AVAILABLE");
    let r = s.get("/v1/models/cv/versions/1");
    assert_eq!(r.status, 404);
    assert!(r.error().contains("Specific(cv, 1)"), "{}", r.text());

    let r = s.get("/v1/models/cv/metadata");
    assert_eq!(r.status, 200);
    let sig = &r.json()["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["age"]["dtype"], "DT_DOUBLE");
    assert_eq!(sig["inputs"]["age"]["required"], true);
    assert_eq!(sig["inputs"]["bmi"]["required"], false);
    assert_eq!(sig["inputs"]["sex"]["levels"], json!(["F", "M"]));
    assert_eq!(sig["feature_columns"].as_array().unwrap().len(), 10);

    let a = record(67.0, "male");
    let b = record(45.0, "F");
    let mut x = encoded(&a);
    x.extend(encoded(&b));
    let want = expected(22, &x);

    let r = s.post(
        "/v1/models/cv:predict",
        &json!({"signature_name": "serving_default", "instances": [a, b]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    close(&preds(&r.json(), "predictions"), &want);

    // columnar inputs
    let cols: serde_json::Map<String, Value> = a
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.clone(), json!([a[k], b[k]])))
        .collect();
    let r = s.post(
        "/v1/models/cv/versions/2:predict",
        &json!({ "inputs": cols }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    close(&preds(&r.json(), "outputs"), &want);

    // already-transformed rows
    let rows: Vec<Vec<f32>> = x.chunks(10).map(<[f32]>::to_vec).collect();
    let r = s.post(
        "/v1/models/cv:predict",
        &json!({ "instances": rows }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    close(&preds(&r.json(), "predictions"), &want);

    // a null value is imputed (as in training); bmi derived when absent, taken when given
    let mut c = record(60.0, "M");
    c["smoker"] = Value::Null;
    let r = s.post(
        "/v1/models/cv:predict",
        &json!({ "instances": [c] }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    close(
        &preds(&r.json(), "predictions"),
        &expected(22, &encoded(&c)),
    );
}

/// Each case: (method, path, body, status, text the error must contain).
#[test]
fn bad_input_is_a_4xx_json_error_naming_the_field_never_a_5xx() {
    let repo = repo_with(&[(1, 11)]);
    let mut cfg = serving(60);
    cfg.max_rows = 3;
    cfg.max_body_bytes = 4096;
    let s = TestServer::start(cfg, repo.path());
    let ok = record(60.0, "F");
    let mut no_sex = ok.clone();
    no_sex.as_object_mut().unwrap().remove("sex");
    let mut sixty = ok.clone();
    sixty["age"] = json!("sixty");
    let mut too_old = ok.clone();
    too_old["age"] = json!(250);
    let mut extra = ok.clone();
    extra["agee"] = json!(1);
    let mut no_height = ok.clone();
    no_height.as_object_mut().unwrap().remove("height_cm");
    let big = format!(
        "{{\"instances\": [{}]}}",
        vec![ok.to_string(); 60].join(",")
    );
    let v2 = |inputs: Value| json!({ "inputs": inputs }).to_string();
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        ("POST", "/v1/models/cv:predict".into(), "{not json".into(), 400, "not valid JSON"),
        ("POST", "/v1/models/cv:predict".into(), "[1,2]".into(), 400, "expected a JSON object"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instance": [ok]}).to_string(), 400, "instance: unknown top-level key"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": [ok], "inputs": {}}).to_string(), 400, "not both"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": [no_sex]}).to_string(), 400, "instances[0].sex: required feature is missing"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": [no_height]}).to_string(), 400, "instances[0].height_cm"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": [ok, sixty]}).to_string(), 400, "instances[1].age: expected a number"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": [too_old]}).to_string(), 400, "instances[0].age: outside the valid range"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": [extra]}).to_string(), 400, "instances[0].agee: unknown feature"),
        ("POST", "/v1/models/cv:predict".into(), r#"{"instances": [{"age": 1e999}]}"#.into(), 400, "not valid JSON"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": [[1.0, 2.0]]}).to_string(), 400, "instances[0]: expected 10 numbers"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": [{"age": [1]}]}).to_string(), 400, "instances[0].age: expected a number, a string or null"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": []}).to_string(), 400, "at least one row"),
        ("POST", "/v1/models/cv:predict".into(), json!({"inputs": {"age": [1, 2], "sex": ["F"]}}).to_string(), 400, "inputs.sex: expected 2 values"),
        ("POST", "/v1/models/cv:predict".into(), json!({"instances": [ok, ok, ok, ok]}).to_string(), 413, "limit of 3"),
        ("POST", "/v1/models/cv:predict".into(), big, 413, "max_body_bytes"),
        ("POST", "/v1/models/nope:predict".into(), json!({"instances": [ok]}).to_string(), 404, "Latest(nope)"),
        ("POST", "/v1/models/cv/versions/9:predict".into(), json!({"instances": [ok]}).to_string(), 404, "Specific(cv, 9)"),
        ("POST", "/v1/models/cv/labels/stable:predict".into(), json!({"instances": [ok]}).to_string(), 404, "label: stable"),
        ("POST", "/v1/models/cv/versions/x:predict".into(), json!({"instances": [ok]}).to_string(), 400, "version:"),
        ("POST", "/v1/models/../secrets:predict".into(), json!({"instances": [ok]}).to_string(), 400, "model:"),
        ("POST", "/v1/models/%2E%2E%2Fsecrets:predict".into(), json!({"instances": [ok]}).to_string(), 400, "model:"),
        ("GET", "/v1/models/..%2Fcv/metadata".into(), String::new(), 400, "model:"),
        ("POST", "/v1/models/cv:classify".into(), "{}".into(), 404, "only :predict"),
        ("GET", "/v1/models/cv/bogus".into(), String::new(), 404, "resource"),
        ("GET", "/v3/anything".into(), String::new(), 404, "no such route"),
        ("DELETE", "/v2/health/ready".into(), String::new(), 405, "method"),
        // Open Inference Protocol v2
        ("POST", "/v2/models/cv/infer".into(), "{\"inputs\": [".into(), 400, "not valid JSON"),
        ("POST", "/v2/models/cv/infer".into(), "{}".into(), 400, "missing field `inputs`"),
        ("POST", "/v2/models/cv/infer".into(), json!({"inputs": [], "bogus": 1}).to_string(), 400, "unknown field `bogus`"),
        ("POST", "/v2/models/cv/infer".into(), v2(json!([{"name": "age", "shape": [2], "datatype": "FP64", "data": [60.0]}])), 400, "inputs[0] (age): shape [2] holds 2 elements but data has 1"),
        ("POST", "/v2/models/cv/infer".into(), v2(json!([{"name": "age", "shape": ["two"], "datatype": "FP64", "data": [60.0]}])), 400, "inputs[0].shape[0]: expected"),
        ("POST", "/v2/models/cv/infer".into(), v2(json!([{"name": "age", "shape": [1], "datatype": "FP64", "data": ["sixty"]}])), 400, "inputs[0] (age).data[0]: expected a number"),
        ("POST", "/v2/models/cv/infer".into(), v2(json!([{"name": "age", "shape": [1], "datatype": "FP16", "data": [60.0]}])), 400, "inputs[0] (age).datatype"),
        ("POST", "/v2/models/cv/infer".into(), v2(json!([{"name": "age", "shape": [1], "datatype": "FP64", "data": [60.0]}])), 400, "required feature is missing"),
        ("POST", "/v2/models/cv/infer".into(), v2(json!([{"name": "agee", "shape": [1], "datatype": "FP64", "data": [60.0]}])), 400, "inputs[0] (agee).name: unknown feature"),
        ("POST", "/v2/models/cv/infer".into(), v2(json!([{"name": "age", "shape": [1, 2], "datatype": "FP64", "data": [60.0, 1.0]}])), 400, "expected [rows] or [rows, 1]"),
        ("POST", "/v2/models/cv/infer".into(), v2(json!([{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [0.0, 1.0, 2.0]}])), 400, "inputs[0] (features).shape: expected [rows, 10]"),
        ("POST", "/v2/models/cv/infer".into(), json!({"inputs": [{"name": "features", "shape": [1, 10], "datatype": "FP32", "data": vec![0.0; 10]}], "outputs": [{"name": "logits"}]}).to_string(), 400, "outputs[0].name: unknown output"),
        ("POST", "/v2/models/cv/infer".into(), v2(json!([{"name": "features", "shape": [4, 10], "datatype": "FP32", "data": vec![0.0; 40]}])), 413, "limit of 3"),
        ("POST", "/v2/models/nope/infer".into(), v2(json!([])), 404, "Latest(nope)"),
        ("POST", "/v2/models/cv/versions/7/infer".into(), v2(json!([])), 404, "Specific(cv, 7)"),
        ("POST", "/v2/models/..%2Fcv/infer".into(), v2(json!([])), 400, "model:"),
        ("GET", "/v2/models/cv/versions/7/ready".into(), String::new(), 404, "Specific(cv, 7)"),
    ];
    for (method, path, body, status, needle) in &cases {
        let r = http(s.port, method, path, &[], body.as_bytes());
        let text = r.text();
        assert_eq!(r.status, *status, "{method} {path} {body:.80}: {text}");
        let err = r.error();
        assert!(
            err.contains(needle),
            "{method} {path}: `{err}` lacks `{needle}`"
        );
        for secret in ["sixty", "250", "secrets"] {
            if body.contains(secret) && !path.contains(secret) {
                assert!(!err.contains(secret), "{path}: error echoes a value: {err}");
            }
        }
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    }
    // the server is still fine
    let r = s.post(
        "/v1/models/cv:predict",
        &json!({"instances": [ok]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

fn binary_request(json_head: &Value, blobs: &[Vec<u8>]) -> (Vec<u8>, usize) {
    let head = json_head.to_string();
    let mut body = head.as_bytes().to_vec();
    for b in blobs {
        body.extend_from_slice(b);
    }
    (body, head.len())
}

fn post_binary(port: u16, head: &Value, blobs: &[Vec<u8>]) -> Resp {
    let (body, n) = binary_request(head, blobs);
    http(
        port,
        "POST",
        "/v2/models/cv/infer",
        &[("Inference-Header-Content-Length", &n.to_string())],
        &body,
    )
}

fn bytes_tensor(items: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in items {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

#[test]
fn open_inference_protocol_json_binary_and_transformed_tensors() {
    let repo = repo_with(&[(3, 33)]);
    let s = TestServer::start(serving(60), repo.path());
    let r = s.get("/v2");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "trialflow");
    assert!(
        r.json()["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
    assert_eq!(s.get("/v2/health/live").json()["live"], true);
    let r = s.get("/v2/health/ready");
    assert_eq!((r.status, r.json()["ready"].clone()), (200, json!(true)));
    let r = s.get("/v2/models/cv");
    assert_eq!(r.status, 200, "{}", r.text());
    let md = r.json();
    assert_eq!(md["versions"], json!(["3"]));
    assert_eq!(md["outputs"][0]["name"], "probability");
    let names: Vec<&str> = md["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "age",
            "weight_kg",
            "height_cm",
            "bmi",
            "arm",
            "sex",
            "smoker"
        ]
    );
    let r = s.get("/v2/models/cv/versions/3/ready");
    assert_eq!((r.status, r.json()["ready"].clone()), (200, json!(true)));

    let a = record(67.0, "male");
    let b = record(45.0, "F");
    let mut x = encoded(&a);
    x.extend(encoded(&b));
    let want = expected(33, &x);

    // JSON tensors, one per raw feature, `id` echoed, INT64 and [n, 1] shapes accepted
    let req = json!({"id": "req-7", "inputs": [
        {"name": "age", "shape": [2, 1], "datatype": "INT64", "data": [[67], [45]]},
        {"name": "weight_kg", "shape": [2], "datatype": "FP64", "data": [82.5, 82.5]},
        {"name": "height_cm", "shape": [2], "datatype": "FP32", "data": [176, 176]},
        {"name": "arm", "shape": [2], "datatype": "BYTES", "data": ["Treatment", "Treatment"]},
        {"name": "sex", "shape": [2], "datatype": "BYTES", "data": ["male", "F"]},
        {"name": "smoker", "shape": [2], "datatype": "BYTES", "data": ["no", "no"]}
    ]});
    let r = s.post("/v2/models/cv/infer", &req.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"], "req-7");
    assert_eq!(v["model_name"], "cv");
    assert_eq!(v["model_version"], "3");
    let out = &v["outputs"][0];
    assert_eq!(
        (
            out["name"].clone(),
            out["datatype"].clone(),
            out["shape"].clone()
        ),
        (json!("probability"), json!("FP32"), json!([2, 1]))
    );
    let got: Vec<f32> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as f32)
        .collect();
    close(&got, &want);

    // Triton's binary tensor extension both ways; NaN in a numeric tensor means missing
    let f64s = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let blobs = vec![
        f64s(&[67.0, 45.0]),
        f64s(&[82.5, f64::NAN]),
        f64s(&[176.0, 176.0]),
        bytes_tensor(&["Treatment", "Treatment"]),
        bytes_tensor(&["male", "F"]),
        bytes_tensor(&["no", "no"]),
    ];
    let names = ["age", "weight_kg", "height_cm", "arm", "sex", "smoker"];
    let types = ["FP64", "FP64", "FP64", "BYTES", "BYTES", "BYTES"];
    let inputs: Vec<Value> = names
        .iter()
        .zip(types)
        .zip(&blobs)
        .map(|((n, t), b)| json!({"name": n, "shape": [2], "datatype": t, "parameters": {"binary_data_size": b.len()}}))
        .collect();
    let head = json!({"inputs": inputs, "outputs": [{"name": "probability", "parameters": {"binary_data": true}}]});
    let (body, n) = binary_request(&head, &blobs);
    let r = http(
        s.port,
        "POST",
        "/v2/models/cv/versions/3/infer",
        &[
            ("Inference-Header-Content-Length", &n.to_string()),
            ("Content-Type", "application/octet-stream"),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let hl: usize = r
        .header("inference-header-content-length")
        .unwrap()
        .parse()
        .unwrap();
    let head: Value = serde_json::from_slice(&r.body[..hl]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    let got: Vec<f32> = r.body[hl..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut b_missing = b.clone();
    b_missing["weight_kg"] = Value::Null;
    let mut x2 = encoded(&a);
    x2.extend(encoded(&b_missing));
    close(&got, &expected(33, &x2));

    // binary tensors that disagree with their shape, or carry infinities, are refused
    let mut bad_blobs = blobs.clone();
    bad_blobs[0] = f64s(&[67.0]);
    let inputs_bad: Vec<Value> = names
        .iter()
        .zip(types)
        .zip(&bad_blobs)
        .map(|((n, t), b)| json!({"name": n, "shape": [2], "datatype": t, "parameters": {"binary_data_size": b.len()}}))
        .collect();
    let r = post_binary(s.port, &json!({ "inputs": inputs_bad }), &bad_blobs);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("inputs[0] (age)"), "{}", r.error());
    let mut inf_blobs = blobs.clone();
    inf_blobs[0] = f64s(&[f64::INFINITY, 45.0]);
    let r = post_binary(s.port, &json!({ "inputs": inputs }), &inf_blobs);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error()
            .contains("inputs[0] (age)[0]: expected a finite number"),
        "{}",
        r.error()
    );
    let r = http(
        s.port,
        "POST",
        "/v2/models/cv/infer",
        &[("Inference-Header-Content-Length", "999999")],
        b"{}",
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("Inference-Header-Content-Length"));

    // already-transformed rows as one `features` tensor
    let req =
        json!({"inputs": [{"name": "features", "shape": [2, 10], "datatype": "FP32", "data": x}]});
    let r = s.post("/v2/models/cv/infer", &req.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let got: Vec<f32> = r.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as f32)
        .collect();
    close(&got, &want);
}

#[test]
fn version_policy_labels_and_a_broken_version() {
    let repo = repo_with(&[(1, 11), (2, 22)]);
    let mut cfg = serving(60);
    cfg.version_policy = VersionPolicy::All;
    cfg.labels.insert(
        "cv".into(),
        [("stable".to_string(), 1), ("canary".to_string(), 2)].into(),
    );
    let s = TestServer::start(cfg.clone(), repo.path());
    let rec = record(70.0, "M");
    let body = json!({ "instances": [rec] }).to_string();
    for (path, seed) in [
        ("/v1/models/cv/labels/stable:predict", 11),
        ("/v1/models/cv/labels/canary:predict", 22),
        ("/v1/models/cv/versions/1:predict", 11),
        ("/v1/models/cv:predict", 22),
    ] {
        let r = s.post(path, &body);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        close(
            &preds(&r.json(), "predictions"),
            &expected(seed, &encoded(&rec)),
        );
    }
    assert_eq!(
        s.get("/v1/models/cv").json()["model_version_status"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.get("/v1/models/cv/metadata").json()["labels"],
        json!({"canary": 2, "stable": 1})
    );
    drop(s);

    // pinned versions; a blessed version with broken weights is skipped, the others keep serving
    write_version(repo.path(), "cv", 3, 33, true);
    std::fs::write(repo.path().join("cv/3/model.safetensors"), b"garbage").unwrap();
    cfg.version_policy = VersionPolicy::Specific(vec![1, 3]);
    let s = TestServer::start(cfg, repo.path());
    let st = s.get("/v1/models/cv").json();
    assert_eq!(st["model_version_status"][0]["version"], "1", "{st}");
    assert_eq!(st["model_version_status"].as_array().unwrap().len(), 1);
    s.assert_metrics(&["trialflow_model_loads_total{result=\"failed\"} 1"]);
}

#[test]
fn a_version_promoted_under_load_fails_no_request_and_retired_versions_unload() {
    let repo = repo_with(&[(1, 11)]);
    let s = TestServer::start(serving(1), repo.path());
    let port = s.port;
    let rec = record(58.0, "F");
    let body = Arc::new(json!({ "instances": [rec] }).to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen_v2 = Arc::new(AtomicUsize::new(0));
    let want2 = expected(22, &encoded(&rec))[0];
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, body, seen_v2) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                body.clone(),
                seen_v2.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = http(port, "POST", "/v1/models/cv:predict", &[], body.as_bytes());
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let p = r.json()["predictions"][0][0].as_f64().unwrap() as f32;
                        if (p - want2).abs() < 1e-6 {
                            seen_v2.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // promote as `deploy` does: files first, BLESSED last
    write_version(repo.path(), "cv", 2, 22, false);
    std::fs::write(repo.path().join("cv/2/BLESSED"), "{}").unwrap();
    wait_until("version 2 to serve", || {
        seen_v2.load(Ordering::Relaxed) > 20
    });
    // roll back by withdrawing the blessing: version 1 serves again
    std::fs::remove_file(repo.path().join("cv/2/BLESSED")).unwrap();
    wait_until("version 1 to serve again", || {
        s.get("/v1/models/cv").json()["model_version_status"][0]["version"] == "1"
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 50);
    let m = s.get("/metrics").text();
    assert!(m.contains("trialflow_model_unloads_total 2"), "{m}");
    assert!(m.contains("trialflow_model_version_loaded{model=\"cv\",version=\"1\"} 1"));
    assert!(
        !m.contains("trialflow_model_version_loaded{model=\"cv\",version=\"2\"}"),
        "{m}"
    );
}

#[test]
fn readiness_waits_for_a_model() {
    let repo = tempfile::tempdir().unwrap();
    let s = TestServer::start(serving(1), repo.path());
    let r = s.get("/v2/health/ready");
    assert_eq!((r.status, r.json()["ready"].clone()), (503, json!(false)));
    assert_eq!(s.get("/v2/health/live").status, 200);
    assert!(s.get("/metrics").text().contains("trialflow_ready 0"));
    write_version(repo.path(), "cv", 1, 11, true);
    wait_until("ready", || s.get("/v2/health/ready").status == 200);
}

/// Sends the head of a POST and part of its body, leaving the request in flight.
fn start_request(port: u16, path: &str, body: &str) -> (TcpStream, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    c.write_all(first.as_bytes()).unwrap();
    c.flush().unwrap();
    (c, rest.to_string())
}

#[test]
fn concurrency_and_time_limits_refuse_with_503_rather_than_queue() {
    let repo = repo_with(&[(1, 11)]);
    let mut cfg = serving(60);
    cfg.max_concurrent_requests = 2;
    cfg.request_timeout_ms = 1500;
    let s = TestServer::start(cfg, repo.path());
    let body = json!({ "instances": [record(50.0, "F")] }).to_string();
    let mut held: Vec<(TcpStream, String)> = (0..2)
        .map(|_| start_request(s.port, "/v1/models/cv:predict", &body))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = s.post("/v1/models/cv:predict", &body);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("max_concurrent_requests"));
    assert_eq!(r.header("retry-after"), Some("1"));
    // health and metrics are not model routes: they answer while the model routes are saturated
    assert_eq!(s.get("/v2/health/live").status, 200);
    // the held requests finish normally
    for (c, rest) in held.iter_mut() {
        c.write_all(rest.as_bytes()).unwrap();
        let r = read_response(c);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // a request whose body never completes is cut off at the time limit
    let (mut c, _) = start_request(s.port, "/v1/models/cv:predict", &body);
    let r = read_response(&mut c);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("timed out"), "{}", r.text());
    s.assert_metrics(&[
        "trialflow_requests_rejected_total{reason=\"busy\"} 1",
        "trialflow_requests_rejected_total{reason=\"timeout\"} 1",
    ]);
}

#[test]
fn shutdown_drains_in_flight_requests() {
    let repo = repo_with(&[(1, 11)]);
    let mut s = TestServer::start(serving(60), repo.path());
    let body = json!({ "instances": [record(50.0, "F")] }).to_string();
    let (mut c, rest) = start_request(s.port, "/v1/models/cv:predict", &body);
    std::thread::sleep(Duration::from_millis(100));
    s.begin_shutdown();
    std::thread::sleep(Duration::from_millis(300));
    c.write_all(rest.as_bytes()).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.join(), Ok(()));
}

#[test]
fn metrics_count_requests_by_model_version_and_code() {
    let repo = repo_with(&[(4, 44)]);
    let s = TestServer::start(serving(60), repo.path());
    let body = json!({ "instances": [record(50.0, "F"), record(51.0, "M")] }).to_string();
    for _ in 0..3 {
        assert_eq!(s.post("/v1/models/cv:predict", &body).status, 200);
    }
    assert_eq!(s.post("/v1/models/cv:predict", "{").status, 400);
    assert_eq!(
        s.post("/v2/models/cv/infer", r#"{"inputs": []}"#).status,
        400
    );
    let r = s.get("/metrics");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = r.text();
    for line in [
        "trialflow_requests_total{api=\"v1\",model=\"cv\",version=\"4\",code=\"200\"} 3",
        "trialflow_requests_total{api=\"v1\",model=\"cv\",version=\"4\",code=\"400\"} 1",
        "trialflow_requests_total{api=\"v2\",model=\"cv\",version=\"4\",code=\"400\"} 1",
        "trialflow_request_duration_seconds_count{api=\"v1\"} 4",
        "trialflow_batch_rows_bucket{le=\"2\"} 3",
        "trialflow_rows_scored_total 6",
        "trialflow_model_version_loaded{model=\"cv\",version=\"4\"} 1",
        "trialflow_ready 1",
    ] {
        assert!(m.contains(line), "metrics lack `{line}`:\n{m}");
    }
}

/// A shape is what the client declares; the bytes are what it sent. A ~200-byte request declaring 2^50 BYTES
/// elements made the server allocate from the shape and abort; an FP64 shape of 2^61 overflowed the byte
/// count. Both are 400s naming the input, and the server keeps answering.
#[test]
fn a_declared_shape_larger_than_the_bytes_sent_is_a_400_not_a_crash() {
    let repo = repo_with(&[(3, 33)]);
    let s = TestServer::start(serving(60), repo.path());
    let blob = bytes_tensor(&["F"]);
    for (datatype, shape, blob) in [
        ("BYTES", 1u64 << 50, blob.clone()),
        ("FP64", 1u64 << 61, vec![0u8; 8]),
        ("FP32", (1u64 << 62) + 1, vec![0u8; 8]),
    ] {
        let head = json!({"inputs": [{
            "name": "sex", "shape": [shape], "datatype": datatype,
            "parameters": {"binary_data_size": blob.len()}
        }]});
        let r = post_binary(s.port, &head, std::slice::from_ref(&blob));
        assert_eq!(r.status, 400, "{datatype} [{shape}]: {}", r.text());
        assert!(r.error().contains("inputs[0] (sex)"), "{}", r.error());
    }
    assert_eq!(s.get("/v2/health/live").status, 200);
}

/// A time-to-event version answers a risk score and survival probabilities exp(−H₀(t)·eʳ) at the model's
/// default times or those the request names, in both protocols and every TF Serving request form; the
/// metadata declares both outputs; bad times are 400s naming the field, and a binary model refuses times.
#[test]
fn time_to_event_model_serves_risk_and_survival_in_both_protocols() {
    let repo = tempfile::tempdir().unwrap();
    write_survival_version(repo.path(), "cv", 1, 44);
    let s = TestServer::start(serving(60), repo.path());
    let a = record(67.0, "male");
    let b = record(45.0, "F");
    let mut x = encoded(&a);
    x.extend(encoded(&b));
    let risk = expected_outputs(44, &x);
    // H₀ steps 0.1, 0.2, 0.3 at t = 1, 2, 3
    let survival = |r: f32, t: f64| {
        let h = [(1.0, 0.1), (2.0, 0.2), (3.0, 0.3)]
            .iter()
            .rfind(|(s, _)| *s <= t)
            .map_or(0.0, |(_, h)| *h);
        (-h * f64::from(r).exp()).exp() as f32
    };

    let md = s.get("/v1/models/cv/metadata").json();
    let outputs = &md["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"];
    assert!(
        outputs["risk_score"].is_object() && outputs["survival"].is_object(),
        "{outputs}"
    );
    assert_eq!(md["endpoint"], "time_to_event");
    assert_eq!(md["survival_times"], json!([1.0, 2.0]));

    // rows: one object per row; default times 1 and 2
    let r = s.post(
        "/v1/models/cv:predict",
        &json!({"instances": [a, b]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    for (i, row) in v["predictions"].as_array().unwrap().iter().enumerate() {
        close(&[row["risk_score"].as_f64().unwrap() as f32], &[risk[i]]);
        let got: Vec<f32> = row["survival"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap() as f32)
            .collect();
        close(&got, &[survival(risk[i], 1.0), survival(risk[i], 2.0)]);
    }
    // columns, with the request's times
    let cols: serde_json::Map<String, Value> = a
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.clone(), json!([a[k], b[k]])))
        .collect();
    let r = s.post(
        "/v1/models/cv:predict",
        &json!({"inputs": cols, "times": [0.5, 3]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let got: Vec<f32> = v["outputs"]["survival"][1]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap() as f32)
        .collect();
    close(&got, &[1.0, survival(risk[1], 3.0)]);

    // Open Inference Protocol v2: both outputs declared and answered, times as a request parameter, one
    // output asked for in binary
    let md = s.get("/v2/models/cv").json();
    assert_eq!(md["outputs"][0]["name"], "risk_score");
    assert_eq!(md["outputs"][1]["name"], "survival");
    let tensors = two_row_tensors(&a, &b);
    let r = s.post(
        "/v2/models/cv/infer",
        &json!({"inputs": tensors, "parameters": {"times": [2]}}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["outputs"][1]["shape"], json!([2, 1]));
    let got: Vec<f32> = v["outputs"][1]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap() as f32)
        .collect();
    close(&got, &[survival(risk[0], 2.0), survival(risk[1], 2.0)]);
    let r = s.post(
        "/v2/models/cv/infer",
        &json!({"inputs": tensors, "outputs": [{"name": "risk_score"}]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"].as_array().unwrap().len(), 1);

    for (body, field) in [
        (json!({"instances": [a], "times": [-1]}), "times[0]"),
        (json!({"instances": [a], "times": []}), "times"),
        (json!({"instances": [a], "times": "soon"}), "times"),
        (json!({"instances": [a], "times": vec![1; 65]}), "times"),
    ] {
        let r = s.post("/v1/models/cv:predict", &body.to_string());
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.error().starts_with(field), "{}", r.text());
    }
    let r = s.post(
        "/v2/models/cv/infer",
        &json!({"inputs": tensors, "outputs": [{"name": "probability"}]}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("risk_score"), "{}", r.text());

    let binary = tempfile::tempdir().unwrap();
    write_version(binary.path(), "cv", 1, 11, true);
    let s = TestServer::start(serving(60), binary.path());
    let r = s.post(
        "/v1/models/cv:predict",
        &json!({"instances": [a], "times": [1]}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("only a time-to-event model"),
        "{}",
        r.text()
    );
}

/// A clustering promoted with a version adds each row's `cluster` (numbered from 1) to both protocols'
/// answers and metadata; one fitted on other features keeps the version from loading.
#[test]
fn a_promoted_phenotype_clustering_is_served_as_each_rows_cluster() {
    let repo = tempfile::tempdir().unwrap();
    write_version(repo.path(), "cv", 1, 11, true);
    write_phenotypes(repo.path(), "cv", 1, spec());
    let s = TestServer::start(serving(60), repo.path());
    let a = record(67.0, "male");
    let b = record(45.0, "F");
    let want: Vec<i64> = [&a, &b]
        .iter()
        .map(|r| if encoded(r)[0] < 0.0 { 1 } else { 2 })
        .collect();
    assert_ne!(want[0], want[1], "the fixture's rows fall in both clusters");
    let r = s.post(
        "/v1/models/cv:predict",
        &json!({"instances": [a, b]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let got: Vec<i64> = r.json()["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["cluster"].as_i64().unwrap())
        .collect();
    assert_eq!(got, want);
    let md = s.get("/v2/models/cv").json();
    assert_eq!(
        md["outputs"][1],
        json!({"name": "cluster", "datatype": "INT64", "shape": [-1, 1]})
    );
    let tensors = two_row_tensors(&a, &b);
    let r = s.post(
        "/v2/models/cv/infer",
        &json!({"inputs": tensors, "outputs": [{"name": "cluster"}]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["data"], json!(want));

    let mut other = spec();
    other.numeric[0].mean += 1.0;
    let broken = tempfile::tempdir().unwrap();
    write_version(broken.path(), "cv", 1, 11, true);
    write_phenotypes(broken.path(), "cv", 1, other);
    let store =
        trialflow_core::Storage::open(&format!("file://{}", broken.path().display())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(trialflow_serve::load_version(&store, "cv", None))
        .unwrap_err();
    assert!(e.to_string().contains("other features"), "{e}");
}

/// OIP v2 input tensors, one per field, holding records `a` and `b`.
fn two_row_tensors(a: &Value, b: &Value) -> Vec<Value> {
    a.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let datatype = if v.is_number() { "FP64" } else { "BYTES" };
            json!({"name": k, "shape": [2], "datatype": datatype, "data": [a[k], b[k]]})
        })
        .collect()
}
