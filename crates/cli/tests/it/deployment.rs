//! The deployment pipeline and the model repository's lifecycle, end to end with the real binary: gate →
//! promote → render, a running server picking promotions and rollbacks up live, forced promotions recorded,
//! the refusals (unknown gate metric, failed checks, unblessed version, nothing to roll back to, a held
//! lock, a repository that is not writable), and the Pushgateway report of pipeline runs.

#![allow(clippy::unwrap_used)]

use crate::util;

use std::io::{Read, Write};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::util::{Project, Server, repo_root, text};
use serde_json::Value;

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    text(o)
}

fn fails(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A project whose server polls the repository every second.
fn project() -> Project {
    let p = Project::sample();
    let cfg = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    p.write(
        "config/config.yaml",
        &cfg.replace("poll_seconds: 5", "poll_seconds: 1"),
    );
    p
}

fn versions(p: &Project) -> Vec<Value> {
    let out = p.run(&["models", "list", "--json"]);
    serde_json::from_str::<Value>(&ok(&out))
        .unwrap_or_else(|_| serde_json::from_slice(&out.stdout).unwrap())
        .as_array()
        .unwrap()
        .clone()
}

fn served(p: &Project) -> Option<u64> {
    versions(p)
        .iter()
        .find(|v| v["served"] == true)
        .map(|v| v["version"].as_u64().unwrap())
}

/// Runs one of deployment/scripts with this build's binary.
fn script(p: &Project, name: &str, args: &[&str]) -> Output {
    std::process::Command::new("bash")
        .arg(repo_root().join("deployment/scripts").join(name))
        .args(args)
        .current_dir(p.path(""))
        .env("TRIALFLOW_BIN", env!("CARGO_BIN_EXE_trialflow"))
        .env_remove("TRIALFLOW_PSEUDONYM_KEY")
        .output()
        .unwrap()
}

/// Waits until the server reports exactly `version` of cv_outcome as available.
fn wait_serving(server: &Server, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = server.request("GET", "/v1/models/cv_outcome", "");
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            let live: Vec<String> = v["model_version_status"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["state"] == "AVAILABLE")
                .map(|s| s["version"].as_str().unwrap().to_string())
                .collect();
            if live == [version.to_string()] {
                // And it answers predictions from that version.
                let (s, b) = server.request(
                    "POST",
                    "/v2/models/cv_outcome/infer",
                    r#"{"inputs":[{"name":"age","datatype":"FP32","shape":[1],"data":[64]},{"name":"sex","datatype":"BYTES","shape":[1],"data":["F"]},{"name":"weight_kg","datatype":"FP32","shape":[1],"data":[70]},{"name":"height_cm","datatype":"FP32","shape":[1],"data":[165]},{"name":"systolic_bp","datatype":"FP32","shape":[1],"data":[140]},{"name":"diastolic_bp","datatype":"FP32","shape":[1],"data":[85]},{"name":"ldl_mg_dl","datatype":"FP32","shape":[1],"data":[130]},{"name":"hdl_mg_dl","datatype":"FP32","shape":[1],"data":[50]},{"name":"creatinine_mg_dl","datatype":"FP32","shape":[1],"data":[1.0]},{"name":"hba1c_pct","datatype":"FP32","shape":[1],"data":[6.0]},{"name":"smoker","datatype":"BYTES","shape":[1],"data":["no"]},{"name":"diabetic","datatype":"BYTES","shape":[1],"data":["no"]},{"name":"arm","datatype":"BYTES","shape":[1],"data":["treatment"]}]}"#,
                );
                assert_eq!(s, 200, "{b}");
                let r: Value = serde_json::from_str(&b).unwrap();
                assert_eq!(r["model_version"], version.to_string(), "{b}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server still serves {live:?}, expected {version}"
            );
        }
        // a server that keeps answering something else fails too, not only one that serves the wrong version
        assert!(
            Instant::now() < deadline,
            "the server answered {status} for 30 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn gate_promote_render_then_promotions_and_rollbacks_are_picked_up_live() {
    let p = project();
    ok(&p.run(&["pipeline", "full"]));
    assert_eq!(served(&p), Some(1));

    // The gate's marker lists every check with its value; the version folder records where it came from.
    let gate = p.read_json("data/lake/candidates/gate.json");
    let chosen = gate["chosen"].as_str().unwrap().to_string();
    let blessed = p.read_json(&format!("data/lake/gate/{chosen}/BLESSED"));
    let checks = blessed["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["metric"] == "roc_auc_ci_lower" && c["value"].as_f64().unwrap() > 0.65)
    );
    assert!(
        checks
            .iter()
            .any(|c| c["metric"] == "ece" && c["op"] == "<=")
    );
    assert!(
        checks
            .iter()
            .any(|c| c["scope"].as_str().unwrap().starts_with("slice site="))
    );
    assert!(checks.iter().all(|c| c["passed"] == true));
    let v1 = p.read_json("models/cv_outcome/1/deployment.json");
    assert_eq!(v1["source"], chosen.as_str());
    assert_eq!(v1["forced"], false);
    for k in [
        "data_fingerprint",
        "config_fingerprint",
        "weights_sha256",
        "at",
    ] {
        assert!(v1[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {v1}");
    }
    assert_eq!(
        p.read_json("models/cv_outcome/1/BLESSED")["checks"],
        blessed["checks"]
    );

    // render: both overlays, our images at the tag each overlay pins (the release in prod), never `latest`.
    for o in ["dev", "prod"] {
        let yaml =
            std::fs::read_to_string(p.path(&format!("data/lake/deployments/manifests/{o}.yaml")))
                .unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert!(docs.len() >= 10);
        let expected = if o == "dev" {
            "dev"
        } else {
            env!("CARGO_PKG_VERSION")
        };
        assert!(!yaml.contains(":latest"), "{o}");
        assert!(
            yaml.contains(&format!("ghcr.io/trialflow/trialflow-server:{expected}")),
            "{o}"
        );
    }

    // Re-running the deployment pipeline (through the wrapper script) changes nothing.
    ok(&script(&p, "deploy_model.sh", &[]));
    assert_eq!(versions(&p).len(), 1);

    let server = Server::start(&p, &[]);
    wait_serving(&server, 1);

    // A retrained candidate is gated against the served version (re-scored on this test split) and promoted.
    let out = p
        .cmd(&["pipeline", "full"])
        .env("TRIALFLOW_TRAINING__SEED", "7")
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(served(&p), Some(2));
    let gate = p.read_json("data/lake/candidates/gate.json");
    assert_eq!(gate["served_version"], 1);
    assert!(
        gate["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["scope"] == "test vs served version 1")
    );
    wait_serving(&server, 2);

    // Rollback: version 2 is revoked, version 1 is served again, without a restart.
    let out = ok(&script(&p, "rollback_model.sh", &["cv_outcome"]));
    assert!(
        out.contains("version 2 rolled back; version 1 is served again"),
        "{out}"
    );
    wait_serving(&server, 1);
    let listed = versions(&p);
    assert_eq!(listed[1]["state"], "revoked");
    assert_eq!(listed[1]["marker"]["reason"], "rollback");

    // A version that is not blessed is refused, then promoted with --force and recorded as forced.
    let err = fails(&p.run(&["models", "promote", "cv_outcome", "2"]), 2);
    assert!(
        err.contains("not blessed (it was rolled back)") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(served(&p), Some(1));
    let out = ok(&script(
        &p,
        "promote_version.sh",
        &["cv_outcome", "2", "--force"],
    ));
    assert!(out.contains("promoted as version 3 (FORCED"), "{out}");
    let v3 = p.read_json("models/cv_outcome/3/deployment.json");
    assert_eq!(
        (v3["forced"].as_bool(), v3["copied_from"].as_u64()),
        (Some(true), Some(2))
    );
    let history: Vec<Value> = std::fs::read_dir(p.path("models/cv_outcome/_history"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert!(
        history
            .iter()
            .any(|h| h["forced"] == true && h["version"] == 3)
    );
    assert_eq!(
        std::fs::read(p.path("models/cv_outcome/3/model.safetensors")).unwrap(),
        std::fs::read(p.path("models/cv_outcome/2/model.safetensors")).unwrap()
    );
    wait_serving(&server, 3);
    let listing = ok(&script(&p, "list_models.sh", &[]));
    assert!(listing.contains("FORCED"), "{listing}");

    // Rolling back skips the revoked version 2; then there is nothing left to roll back to.
    ok(&p.run(&["models", "rollback", "cv_outcome"]));
    assert_eq!(served(&p), Some(1));
    wait_serving(&server, 1);
    let err = fails(&p.run(&["models", "rollback", "cv_outcome"]), 2);
    assert!(err.contains("no previous version to roll back to"), "{err}");

    // The pipeline notices the changed repository but does not undo the rollback by re-promoting the same
    // weights; it says so.
    let out = p
        .cmd(&["pipeline", "deployment"])
        .env("TRIALFLOW_TRAINING__SEED", "7")
        .output()
        .unwrap();
    let all = ok(&out);
    assert!(
        all.contains("Promotion: not promoted: candidate") && all.contains("which was rolled back"),
        "{all}"
    );
    // the gate's verdict stands only against the version it was measured against: it last ran when version 1
    // was served, and version 1 is served again, so it is up to date (the e2e test sees it re-run when the
    // served version changes)
    assert!(all.contains("task=gate status=up_to_date"), "{all}");
    assert!(all.contains("compared with served version 1"), "{all}");
    assert_eq!(served(&p), Some(1));
    let versions_now = versions(&p).len();
    let all = ok(&p
        .cmd(&["pipeline", "deployment"])
        .env("TRIALFLOW_TRAINING__SEED", "7")
        .output()
        .unwrap());
    assert!(all.contains("0 ran, 3 up to date"), "{all}");
    assert_eq!(versions(&p).len(), versions_now);
}

#[test]
fn deployment_refusals_are_clear_and_change_nothing() {
    let p = project();
    ok(&p.run(&["pipeline", "full"]));
    let before = versions(&p);
    let cfg = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    let start = cfg.find("deployment:\n").unwrap();
    let end = cfg[start..].find("\nmonitoring:").unwrap() + start;
    let with_gate = |gate: &str| format!("{}deployment:\n{gate}\n{}", &cfg[..start], &cfg[end..]);

    // A gate on a metric that does not exist: a config error before anything runs.
    p.write(
        "config/bad_metric.yaml",
        &with_gate("  checks: [{metric: roc_auc, min: 0.5}, {metric: auroc_lower, min: 0.6}]"),
    );
    let err = fails(
        &p.run(&[
            "--config",
            "config/bad_metric.yaml",
            "pipeline",
            "deployment",
        ]),
        2,
    );
    assert!(err.contains("deployment.checks[1].metric"), "{err}");
    assert!(
        err.contains("no metric `auroc_lower`") && err.contains("roc_auc_ci_lower"),
        "{err}"
    );
    // check-config runs the same check: a config that passes it does not fail later for this reason
    let err = fails(
        &p.run(&["--config", "config/bad_metric.yaml", "check-config"]),
        2,
    );
    assert!(err.contains("deployment.checks[1].metric"), "{err}");

    // Every failed check of every candidate is listed; nothing is promoted.
    p.write(
        "config/strict.yaml",
        &with_gate("  checks: [{metric: roc_auc, min: 0.99}, {metric: ece, max: 0.2}]\n  slice_checks: [{metric: roc_auc, min: 0.9, min_rows: 40}]"),
    );
    let out = p.run(&["--config", "config/strict.yaml", "pipeline", "deployment"]);
    let all = text(&out);
    // a refusal is its own outcome, not bad data
    assert_eq!(out.status.code(), Some(6), "{all}");
    for m in ["baseline", "model_1", "model_2"] {
        assert!(
            all.contains(&format!("{m}: test roc_auc = 0.")),
            "{m}: {all}"
        );
    }
    assert!(
        all.contains("expected >= 0.9900") && all.contains("slice site=SITE"),
        "{all}"
    );
    assert!(
        !all.contains("test ece"),
        "passed checks are not listed as failures: {all}"
    );
    assert_eq!(versions(&p).len(), before.len());
    assert!(
        !p.path("data/lake/gate/baseline/BLESSED").exists(),
        "no candidate stays blessed"
    );

    // Versions that do not exist; nothing to roll back to.
    let err = fails(&p.run(&["models", "promote", "cv_outcome", "9"]), 2);
    assert!(
        err.contains("no version 9 of `cv_outcome` (versions: 1)"),
        "{err}"
    );
    let err = fails(&p.run(&["models", "rollback", "cv_outcome"]), 2);
    assert!(err.contains("no previous version"), "{err}");

    // Two promotions at once: the second finds the lock and says who holds it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lock = format!(
        r#"{{"action":"promotion","pid":4242,"host":"other-host","since":"then","since_unix":{now}}}"#
    );
    p.write("models/cv_outcome/_lock.json", &lock);
    let err = fails(
        &p.run(&["models", "promote", "cv_outcome", "1", "--force"]),
        4,
    );
    assert!(
        err.contains("holds the repository lock (pid 4242 on other-host"),
        "{err}"
    );
    let err = fails(&p.run(&["pipeline", "deployment", "--force"]), 4);
    assert!(err.contains("holds the repository lock"), "{err}");
    assert_eq!(versions(&p).len(), before.len());
    // A lock left by a killed run (older than deployment.lock_stale_seconds) is broken.
    p.write(
        "models/cv_outcome/_lock.json",
        &lock.replace(&now.to_string(), &(now - 3600).to_string()),
    );
    let out = ok(&p.run(&["models", "promote", "cv_outcome", "1"]));
    assert!(out.contains("already the served version"), "{out}");
    assert!(!p.path("models/cv_outcome/_lock.json").exists());

    // A version that never passed the gate (copied in by hand, no BLESSED) ...
    std::fs::create_dir_all(p.path("models/cv_outcome/7")).unwrap();
    for f in ["model.safetensors", "model.json", "metrics.json"] {
        std::fs::copy(
            p.path(&format!("models/cv_outcome/1/{f}")),
            p.path(&format!("models/cv_outcome/7/{f}")),
        )
        .unwrap();
    }
    let err = fails(&p.run(&["models", "promote", "cv_outcome", "7"]), 2);
    assert!(
        err.contains("not blessed (it never passed the quality gate)"),
        "{err}"
    );
    // ... promoted with --force by two processes at once: the lock lets them publish one after the other
    // (or refuses one); never two versions under one number, never a half-written one.
    let children: Vec<_> = (0..2)
        .map(|_| {
            p.cmd(&["models", "promote", "cv_outcome", "7", "--force"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut published = 0;
    for c in children {
        let o = c.wait_with_output().unwrap();
        match o.status.code() {
            Some(0) => published += 1,
            Some(4) => assert!(
                text(&o).contains("holds the repository lock"),
                "{}",
                text(&o)
            ),
            _ => panic!("{}", text(&o)),
        }
    }
    assert!(published >= 1);
    let after = versions(&p);
    assert_eq!(after.len(), before.len() + 1 + published, "{after:?}");
    for v in after.iter().filter(|v| v["version"].as_u64().unwrap() > 7) {
        assert_eq!(v["state"], "blessed");
        assert_eq!(v["record"]["forced"], true);
        let n = v["version"].as_u64().unwrap();
        for f in [
            "model.safetensors",
            "model.json",
            "metrics.json",
            "deployment.json",
        ] {
            assert!(
                p.path(&format!("models/cv_outcome/{n}/{f}")).exists(),
                "{n}/{f}"
            );
        }
    }

    // A repository that is not writable: its root cannot be created, or a model's folder cannot be written.
    std::fs::write(p.path("not-a-dir"), "x").unwrap();
    std::fs::create_dir_all(p.path("ro")).unwrap();
    std::fs::write(
        p.path("ro/cv_outcome"),
        "a file where the model's folder should be",
    )
    .unwrap();
    for (repo, args) in [
        (
            "file://not-a-dir/models",
            ["models", "rollback", "cv_outcome", ""],
        ),
        ("file://ro", ["models", "promote", "cv_outcome", "1"]),
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let out = p
            .cmd(&args)
            .env("TRIALFLOW_STORAGE__MODELS", repo)
            .output()
            .unwrap();
        let err = fails(&out, 2);
        assert!(
            err.contains("the model repository is not writable"),
            "{repo}: {err}"
        );
    }
}

/// Debian's real Pushgateway (`prometheus-pushgateway`, which `cargo xtask test` installs) on 127.0.0.1, without
/// persistence; killed on drop.
struct Pushgateway {
    child: std::process::Child,
    port: u16,
}

impl Pushgateway {
    fn start() -> Self {
        let port = util::free_port();
        let child = std::process::Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(
                "prometheus-pushgateway is missing: `cargo xtask test` installs Debian's package",
            );
        util::wait_for_port(port, "the Pushgateway");
        Self { child, port }
    }

    /// The Pushgateway's own exposition of what it holds.
    fn metrics(&self) -> String {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(conn, "GET /metrics HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n").unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
            "{out}"
        );
        out
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `name` whose labels include every `label="value"` in `labels`.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())?
        })
        .next()
}

#[test]
fn pipeline_runs_push_their_summary_to_the_pushgateway() {
    let gw = Pushgateway::start();
    let p = Project::sample();
    let cfg = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    let url = format!("http://127.0.0.1:{}", gw.port);
    let with_url = |u: &str| cfg.replace("pushgateway_url: null", &format!("pushgateway_url: {u}"));
    p.write("config/config.yaml", &with_url(&url));

    ok(&p.run(&["pipeline", "data"]));
    let body = gw.metrics();
    let data = [("job", "trialflow_pipeline"), ("pipeline", "data")];
    assert_eq!(
        sample(&body, "trialflow_pipeline_success", &data),
        Some(1.0),
        "{body}"
    );
    let last_success = sample(
        &body,
        "trialflow_pipeline_last_success_timestamp_seconds",
        &data,
    )
    .unwrap();
    assert!(last_success > 1.7e9, "{body}");
    let rows = |body: &str, k: &str| {
        sample(
            body,
            "trialflow_pipeline_rows",
            &[data[0], data[1], ("kind", k)],
        )
        .unwrap()
    };
    assert_eq!(
        rows(&body, "read"),
        rows(&body, "accepted") + rows(&body, "quarantined")
    );
    assert!(rows(&body, "read") > 6000.0);
    assert_eq!(
        sample(
            &body,
            "trialflow_pipeline_tasks",
            &[data[0], data[1], ("status", "succeeded")]
        ),
        Some(4.0)
    );

    // A failed run of the same pipeline reports its failure; the push is a POST, which replaces only the
    // metrics it carries, so the group keeps the last success's timestamp.
    let out = p.run(&["pipeline", "deployment", "--only", "gate"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // (a clean task on a lake where nothing was ingested fails while it runs)
    let out = p
        .cmd(&["pipeline", "data", "--only", "clean"])
        .env("TRIALFLOW_STORAGE__LAKE", "file://data/empty-lake")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let body = gw.metrics();
    assert_eq!(
        sample(&body, "trialflow_pipeline_success", &data),
        Some(0.0),
        "{body}"
    );
    assert!(sample(&body, "trialflow_pipeline_exit_code", &data).unwrap() > 0.0);
    assert_eq!(
        sample(
            &body,
            "trialflow_pipeline_last_success_timestamp_seconds",
            &data
        ),
        Some(last_success),
        "{body}"
    );
    let deployment = [("job", "trialflow_pipeline"), ("pipeline", "deployment")];
    assert_eq!(
        sample(&body, "trialflow_pipeline_exit_code", &deployment),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &body,
            "trialflow_pipeline_last_success_timestamp_seconds",
            &deployment
        ),
        None,
        "a pipeline that never succeeded has no last success"
    );

    // An unreachable Pushgateway is reported and does not fail the run.
    let closed = util::free_port();
    p.write(
        "config/config.yaml",
        &with_url(&format!("http://127.0.0.1:{closed}")),
    );
    let out = ok(&p.run(&["pipeline", "data"]));
    assert!(out.contains("could not push the run's metrics"), "{out}");
}

/// The same lifecycle with the model repository in S3 (moto): promotion, the lock object (created with
/// `If-None-Match: *`), rollback.
#[test]
fn the_repository_lifecycle_works_on_object_storage() {
    let moto = util::Moto::start();
    moto.create_bucket("models");
    let p = Project::sample();
    let cfg = std::fs::read_to_string(p.path("config/config.yaml")).unwrap();
    p.write(
        "config/config.yaml",
        &cfg.replace("models: file://models", "models: s3://models/repository"),
    );
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = p.cmd(args);
        for (k, v) in moto.env() {
            c.env(k, v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    ok(&run(&["pipeline", "full"], &[]));
    ok(&run(
        &["pipeline", "full"],
        &[("TRIALFLOW_TRAINING__SEED", "7")],
    ));
    let keys = moto.keys("models", "repository/cv_outcome/");
    for f in [
        "1/BLESSED",
        "2/BLESSED",
        "2/deployment.json",
        "2/model.safetensors",
    ] {
        assert!(
            keys.iter().any(|k| k.ends_with(&format!("cv_outcome/{f}"))),
            "{f}: {keys:?}"
        );
    }
    assert!(
        !keys.iter().any(|k| k.contains("_lock")),
        "the lock is released: {keys:?}"
    );

    // A held lock in the bucket stops a second change.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    moto.put(
        "models",
        "repository/cv_outcome/_lock.json",
        format!(
            r#"{{"action":"rollback","pid":7,"host":"pod-a","since":"now","since_unix":{now}}}"#
        )
        .into_bytes(),
    );
    let o = run(&["models", "rollback", "cv_outcome"], &[]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("pid 7 on pod-a"), "{}", text(&o));
    // Left by a killed run an hour ago: broken, and the rollback goes ahead.
    moto.put(
        "models",
        "repository/cv_outcome/_lock.json",
        format!(
            r#"{{"action":"rollback","pid":7,"host":"pod-a","since":"then","since_unix":{}}}"#,
            now - 3600
        )
        .into_bytes(),
    );

    let out = ok(&run(&["models", "rollback", "cv_outcome"], &[]));
    assert!(
        out.contains("version 2 rolled back; version 1 is served again"),
        "{out}"
    );
    let keys = moto.keys("models", "repository/cv_outcome/2/");
    assert!(
        keys.iter().any(|k| k.ends_with("REVOKED")) && !keys.iter().any(|k| k.ends_with("BLESSED")),
        "{keys:?}"
    );
    let listed = ok(&run(&["models", "list", "--json"], &[]));
    let v: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v[0]["served"], true);
    assert_eq!(v[1]["state"], "revoked");
}
