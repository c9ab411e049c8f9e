//! The deployment files are checked against what the code really is: every Kubernetes manifest, composed as
//! kustomize would, parses into the typed Kubernetes API with no unknown field; ports, probes, selectors,
//! commands and config agree with the server, the CLI and the ConfigMap; the Dockerfiles build packages,
//! binaries and features the workspace has; alert rules and the dashboard name metrics that are exported.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::util::{Project, Server, repo_root, text};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use trialflow_core::{Config, ErrorKind};
use trialflow_deploy::manifests::{self, Disk, Embedded, Files, Resource};

const OVERLAYS: [&str; 2] = ["dev", "prod"];

fn k8s_dir() -> std::path::PathBuf {
    repo_root().join("deployment/kubernetes")
}

fn overlay(name: &str) -> Vec<Resource> {
    manifests::build(&Disk(k8s_dir()), &format!("overlays/{name}")).unwrap()
}

/// Parses a resource into its typed API struct and fails on any field the type does not know (the API server
/// would reject or silently drop it).
fn typed<T: DeserializeOwned + Serialize + k8s_openapi::Resource>(
    r: &Resource,
) -> Result<T, String> {
    let where_ = format!("{} {} ({})", r.kind(), r.name(), r.source);
    if r.doc["apiVersion"] != T::API_VERSION {
        return Err(format!(
            "{where_}: apiVersion {} is not {}",
            r.doc["apiVersion"],
            T::API_VERSION
        ));
    }
    let t: T = serde_json::from_value(r.doc.clone()).map_err(|e| format!("{where_}: {e}"))?;
    let back = serde_json::to_value(&t).unwrap();
    let mut unknown = Vec::new();
    manifests::unknown_fields(&r.doc, &back, "", &mut unknown);
    if unknown.is_empty() {
        Ok(t)
    } else {
        Err(format!("{where_}: unknown fields {unknown:?}"))
    }
}

fn check_typed(r: &Resource) -> Result<(), String> {
    match r.kind() {
        "ConfigMap" => typed::<ConfigMap>(r).map(drop),
        "ServiceAccount" => typed::<ServiceAccount>(r).map(drop),
        "Service" => typed::<Service>(r).map(drop),
        "Deployment" => typed::<Deployment>(r).map(drop),
        "HorizontalPodAutoscaler" => typed::<HorizontalPodAutoscaler>(r).map(drop),
        "PodDisruptionBudget" => typed::<PodDisruptionBudget>(r).map(drop),
        "CronJob" => typed::<CronJob>(r).map(drop),
        "NetworkPolicy" => typed::<NetworkPolicy>(r).map(drop),
        other => Err(format!("{}: kind {other} is not checked here", r.source)),
    }
}

/// Ballista plans carry the pseudonymization key: only the pipeline's pods and the cluster's own reach the
/// scheduler and the executors, on ports their containers declare; everything else is denied by default.
#[test]
fn network_policies_admit_only_the_pipeline_and_the_cluster_to_ballista() {
    for o in OVERLAYS {
        let rs = overlay(o);
        let policies: Vec<NetworkPolicy> = rs
            .iter()
            .filter(|r| r.kind() == "NetworkPolicy")
            .map(|r| typed::<NetworkPolicy>(r).unwrap())
            .collect();
        let deny = policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("trialflow-default-deny-ingress"))
            .unwrap()
            .spec
            .clone()
            .unwrap();
        assert!(
            deny.pod_selector.unwrap_or_default().match_labels.is_none() && deny.ingress.is_none(),
            "{o}"
        );
        for name in [
            "ballista-scheduler",
            "ballista-executor",
            "trialflow-server",
        ] {
            let workload = find(&rs, "Deployment", name);
            let labels = template_labels(workload);
            let spec = policies
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{o}: no NetworkPolicy for {name}"))
                .spec
                .clone()
                .unwrap();
            assert!(
                selects(
                    spec.pod_selector
                        .as_ref()
                        .unwrap()
                        .match_labels
                        .as_ref()
                        .unwrap(),
                    &labels
                ),
                "{o}: {name}"
            );
            let container = &pod_spec(workload).containers[0];
            let declared: Vec<String> = container
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.name.clone())
                .collect();
            for rule in spec.ingress.unwrap() {
                for port in rule.ports.unwrap() {
                    let IntOrString::String(named) = port.port.unwrap() else {
                        panic!("{o}: {name}: ports by name");
                    };
                    assert!(
                        declared.contains(&named),
                        "{o}: {name}: {named} not in {declared:?}"
                    );
                }
                if name.starts_with("ballista") {
                    let from = rule.from.unwrap();
                    let pipeline = from.iter().any(|f| {
                        f.pod_selector
                            .as_ref()
                            .and_then(|s| s.match_labels.as_ref())
                            .is_some_and(|m| {
                                m.get("app.kubernetes.io/component").map(String::as_str)
                                    == Some("pipeline")
                            })
                    });
                    assert!(pipeline, "{o}: {name}: the pipeline must reach it");
                    // the pipeline CronJob's pods carry that label
                    let cj = find(&rs, "CronJob", "trialflow-pipeline");
                    assert_eq!(
                        cj.doc.pointer("/spec/jobTemplate/spec/template/metadata/labels/app.kubernetes.io~1component"),
                        Some(&Value::from("pipeline"))
                    );
                }
            }
        }
    }
}

#[test]
fn every_manifest_parses_into_the_kubernetes_api_with_no_unknown_field() {
    for o in OVERLAYS {
        let resources = overlay(o);
        assert!(resources.len() >= 10, "{o}: {} resources", resources.len());
        for r in &resources {
            check_typed(r).unwrap();
            let ns = r.doc["metadata"]["namespace"].as_str().unwrap_or_default();
            assert!(
                ns.starts_with("trialflow"),
                "{o}: {} has namespace {ns:?}",
                r.name()
            );
        }
    }
    // The check can fail: a misspelt field and a field at the wrong level are caught.
    let mut r = overlay("dev")
        .into_iter()
        .find(|r| r.kind() == "Deployment" && r.name() == "trialflow-server")
        .unwrap();
    r.doc["spec"]["replica"] = 2.into();
    assert!(check_typed(&r).unwrap_err().contains(".spec.replica"));
    let mut cj = overlay("dev")
        .into_iter()
        .find(|r| r.kind() == "CronJob")
        .unwrap();
    cj.doc["spec"]["backoffLimit"] = 3.into(); // belongs in jobTemplate.spec
    assert!(check_typed(&cj).unwrap_err().contains(".spec.backoffLimit"));
}

#[test]
fn the_binary_embeds_exactly_the_manifests_directory() {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut on_disk = BTreeSet::new();
    walk(&k8s_dir(), &k8s_dir(), &mut on_disk);
    let embedded: BTreeSet<String> = manifests::EMBEDDED
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(
        embedded, on_disk,
        "update the embed! list in crates/deploy/src/manifests.rs"
    );
    for (p, text) in manifests::EMBEDDED {
        assert_eq!(Embedded.read(p).as_deref(), Some(*text));
        assert_eq!(Disk(k8s_dir()).read(p).as_deref(), Some(*text), "{p}");
    }
}

fn find<'a>(rs: &'a [Resource], kind: &str, name: &str) -> &'a Resource {
    rs.iter()
        .find(|r| r.kind() == kind && r.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn pod_spec(r: &Resource) -> PodSpec {
    match r.kind() {
        "Deployment" => typed::<Deployment>(r)
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap(),
        "CronJob" => typed::<CronJob>(r)
            .unwrap()
            .spec
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap(),
        k => panic!("no pod spec in {k}"),
    }
}

fn template_labels(r: &Resource) -> BTreeMap<String, String> {
    let pointer = if r.kind() == "CronJob" {
        "/spec/jobTemplate/spec/template/metadata/labels"
    } else {
        "/spec/template/metadata/labels"
    };
    serde_json::from_value(r.doc.pointer(pointer).cloned().unwrap_or_default()).unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The config the ConfigMap gives the pods, with the environment a container sets applied.
fn configmap_config(rs: &[Resource], env: &[(String, String)]) -> Config {
    let cm = typed::<ConfigMap>(find(rs, "ConfigMap", "trialflow-config")).unwrap();
    let text = cm.data.unwrap()["config.yaml"].clone();
    Config::from_yaml(&text, "ConfigMap trialflow-config", env).unwrap()
}

fn port_number(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("container {} has no port named {name}", c.name))
                .container_port
        }
    }
}

/// The config file a container is started with must come from a ConfigMap volume that has that key.
fn config_file_is_mounted(spec: &PodSpec, c: &Container, rs: &[Resource]) {
    let args: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect();
    let at = args.iter().position(|a| a == "--config").expect("--config");
    let path = Path::new(&args[at + 1]);
    let (dir, file) = (
        path.parent().unwrap(),
        path.file_name().unwrap().to_str().unwrap(),
    );
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(&m.mount_path) == dir)
        .unwrap_or_else(|| panic!("{}: nothing mounted at {}", c.name, dir.display()));
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let cm_name = &volume.config_map.as_ref().expect("a ConfigMap volume").name;
    let cm = typed::<ConfigMap>(find(rs, "ConfigMap", cm_name)).unwrap();
    assert!(
        cm.data.unwrap().contains_key(file),
        "ConfigMap {cm_name} has no {file}"
    );
}

#[test]
fn manifests_agree_with_the_server_the_cli_and_the_config() {
    let p = Project::sample();
    let server = Server::start(&p, &[]);
    for o in OVERLAYS {
        let rs = overlay(o);
        let cfg = configmap_config(&rs, &[]);

        // The server: port, probes, selectors, hardening.
        let dep_r = find(&rs, "Deployment", "trialflow-server");
        let spec = pod_spec(dep_r);
        let c = &spec.containers[0];
        let http = c.ports.as_ref().unwrap()[0].container_port;
        assert_eq!(
            http,
            i32::from(cfg.serving.port),
            "{o}: containerPort vs serving.port"
        );
        assert_eq!(
            cfg.serving.host, "0.0.0.0",
            "{o}: the server must listen on the pod IP"
        );
        for (kind, probe) in [
            ("readiness", &c.readiness_probe),
            ("liveness", &c.liveness_probe),
            ("startup", &c.startup_probe),
        ] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(port_number(c, &get.port), http, "{o}: {kind} probe port");
            let path = get.path.as_deref().unwrap();
            let (status, _) = server.request("GET", path, "");
            assert_ne!(
                status, 404,
                "{o}: {kind} probe {path} is not a route of the server"
            );
            if kind != "readiness" {
                // Liveness must hold while no model is loaded yet, or pods would be killed while loading.
                assert_eq!(status, 200, "{o}: {kind} probe {path}");
            }
        }
        config_file_is_mounted(&spec, c, &rs);
        let labels = template_labels(dep_r);
        let dep = typed::<Deployment>(dep_r).unwrap();
        let sel = dep.spec.unwrap().selector.match_labels.unwrap();
        assert!(
            selects(&sel, &labels),
            "{o}: Deployment selector vs its pods"
        );
        let svc = typed::<Service>(find(&rs, "Service", "trialflow-server")).unwrap();
        let svc_spec = svc.spec.unwrap();
        assert!(
            selects(&svc_spec.selector.unwrap(), &labels),
            "{o}: Service selector"
        );
        let sp = &svc_spec.ports.unwrap()[0];
        assert_eq!(port_number(c, sp.target_port.as_ref().unwrap()), http);
        let pdb =
            typed::<PodDisruptionBudget>(find(&rs, "PodDisruptionBudget", "trialflow-server"))
                .unwrap();
        let pdb_sel = pdb.spec.unwrap().selector.unwrap().match_labels.unwrap();
        assert!(selects(&pdb_sel, &labels), "{o}: PDB selector");
        let hpa = typed::<HorizontalPodAutoscaler>(find(
            &rs,
            "HorizontalPodAutoscaler",
            "trialflow-server",
        ))
        .unwrap();
        let target = hpa.spec.unwrap().scale_target_ref;
        assert_eq!(
            (target.kind.as_str(), target.name.as_str()),
            ("Deployment", "trialflow-server")
        );

        // Every container: non-root, read-only root filesystem, an image built by one of our Dockerfiles,
        // a command that image has.
        for r in rs
            .iter()
            .filter(|r| matches!(r.kind(), "Deployment" | "CronJob"))
        {
            let spec = pod_spec(r);
            let pod_sc = spec.security_context.clone().unwrap_or_default();
            for c in &spec.containers {
                let sc = c.security_context.clone().unwrap();
                assert_eq!(
                    sc.read_only_root_filesystem,
                    Some(true),
                    "{o}: {} {}",
                    r.name(),
                    c.name
                );
                assert_eq!(sc.allow_privilege_escalation, Some(false));
                assert!(
                    pod_sc.run_as_non_root == Some(true) && pod_sc.run_as_user.unwrap_or(0) != 0,
                    "{o}: {} runs as root",
                    r.name()
                );
                let image = c.image.as_deref().unwrap();
                let (base, _) = manifests::split_image(image);
                let df = dockerfile_for(base);
                let binary = c
                    .command
                    .as_ref()
                    .map(|cmd| cmd[0].clone())
                    .unwrap_or_else(|| df.entrypoint.clone());
                assert!(
                    df.final_files.contains(&binary),
                    "{o}: {} runs {binary}, which {} does not install ({:?})",
                    r.name(),
                    df.file,
                    df.final_files
                );
                if let Some(uid) = pod_sc.run_as_user {
                    assert_eq!(
                        Some(uid.to_string()),
                        df.user_uid(),
                        "{o}: {} user vs {}",
                        r.name(),
                        df.file
                    );
                }
            }
        }

        // The pipeline CronJob runs the real CLI, with the ConfigMap's config, and never retries bad input.
        for (name, container, pipeline) in [
            ("trialflow-pipeline", "pipeline", "full"),
            ("trialflow-train-gpu", "train", "training"),
        ] {
            let Some(r) = rs
                .iter()
                .find(|r| r.kind() == "CronJob" && r.name() == name)
            else {
                assert_eq!(
                    name, "trialflow-train-gpu",
                    "{o}: the pipeline CronJob is missing"
                );
                assert_eq!(o, "dev", "only the prod overlay has the GPU training job");
                continue;
            };
            let cj = typed::<CronJob>(r).unwrap().spec.unwrap();
            assert_eq!(cj.concurrency_policy.as_deref(), Some("Forbid"));
            assert!(cj.starting_deadline_seconds.is_some() && cj.time_zone.is_some());
            let job = cj.job_template.spec.unwrap();
            assert!(job.backoff_limit.is_some() && job.active_deadline_seconds.is_some());
            assert!(job.ttl_seconds_after_finished.is_some());
            let rules = job.pod_failure_policy.unwrap().rules;
            let fail_job = rules.iter().find(|r| r.action == "FailJob").unwrap();
            let codes = fail_job.on_exit_codes.as_ref().unwrap();
            assert_eq!(codes.container_name.as_deref(), Some(container));
            assert_eq!(
                codes.values,
                vec![
                    ErrorKind::Config.exit_code(),
                    ErrorKind::BadData.exit_code(),
                    ErrorKind::GateRefused.exit_code()
                ],
                "config, bad-data and gate-refused exits are not retried; infrastructure ones are"
            );
            let spec = pod_spec(r);
            assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
            let c = spec
                .containers
                .iter()
                .find(|c| c.name == container)
                .unwrap();
            config_file_is_mounted(&spec, c, &rs);
            let args = c.args.clone().unwrap();
            assert_eq!(&args[args.len() - 2..], ["pipeline", pipeline]);
            // The real CLI accepts the arguments (ends in --help so that nothing runs).
            let mut cli_args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli_args.push("--help");
            let out = p.run(&cli_args);
            assert!(out.status.success(), "{o}: {name}: {}", text(&out));
            let env: Vec<(String, String)> = c
                .env
                .iter()
                .flatten()
                .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
                .collect();
            let cfg = configmap_config(&rs, &env);
            let key_from_secret = c.env.iter().flatten().any(|e| {
                e.name == cfg.privacy.key_env
                    && e.value_from
                        .as_ref()
                        .is_some_and(|v| v.secret_key_ref.is_some())
            });
            assert!(
                key_from_secret,
                "{o}: {name}: the pseudonymization key must come from a Secret"
            );
            assert!(
                cfg.privacy.dev_key.is_none(),
                "no development key in the cluster config"
            );
            if name == "trialflow-train-gpu" {
                assert_eq!(
                    cfg.training.device,
                    trialflow_core::config::DeviceChoice::Cuda
                );
                let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
                assert_eq!(limits["nvidia.com/gpu"].0, "1");
            }
        }

        // Ballista: the executors find the scheduler through its Service.
        let sched = find(&rs, "Deployment", "ballista-scheduler");
        let sched_svc = typed::<Service>(find(&rs, "Service", "ballista-scheduler"))
            .unwrap()
            .spec
            .unwrap();
        assert!(selects(
            &sched_svc.selector.unwrap(),
            &template_labels(sched)
        ));
        let sched_port = pod_spec(sched).containers[0].ports.as_ref().unwrap()[0].container_port;
        let exec = pod_spec(find(&rs, "Deployment", "ballista-executor"));
        let args = exec.containers[0].args.clone().unwrap();
        let arg = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(
            arg("--scheduler"),
            format!("ballista-scheduler:{sched_port}")
        );
        let sched_args = pod_spec(sched).containers[0].args.clone().unwrap();
        assert!(
            sched_args.ends_with(&[
                "cluster".into(),
                "scheduler".into(),
                "--bind".into(),
                format!("0.0.0.0:{sched_port}")
            ]),
            "{sched_args:?}"
        );
        // both run the pipeline image's CLI, which accepts the arguments
        for args in [&args, &sched_args] {
            let mut cli_args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli_args.push("--help");
            let out = p.run(&cli_args);
            assert!(out.status.success(), "{o}: {args:?}: {}", text(&out));
        }
        assert_eq!(sched_svc.ports.unwrap()[0].port, sched_port);
    }
}

/// What a Dockerfile's final stage holds.
#[derive(Debug)]
struct Dockerfile {
    file: String,
    text: String,
    final_files: Vec<String>,
    entrypoint: String,
    user: String,
}

impl Dockerfile {
    fn user_uid(&self) -> Option<String> {
        Some(self.user.split(':').next()?.to_string())
    }
}

/// Joins continuation lines.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if let Some(s) = t.strip_suffix('\\') {
            cur.push_str(s);
            cur.push(' ');
        } else {
            cur.push_str(t);
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

fn parse_dockerfile(path: &Path) -> Dockerfile {
    let text = std::fs::read_to_string(path).unwrap();
    let mut final_files = Vec::new();
    let mut entrypoint = String::new();
    let mut user = String::new();
    for ins in instructions(&text) {
        let (op, rest) = ins.split_once(' ').unwrap_or((&ins, ""));
        match op {
            "FROM" => {
                final_files.clear();
                user.clear();
            }
            "COPY" => {
                let parts: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|p| !p.starts_with("--"))
                    .collect();
                final_files.push(parts.last().unwrap().to_string());
            }
            "ENTRYPOINT" => {
                let v: Vec<String> = serde_json::from_str(rest).unwrap();
                entrypoint = v[0].clone();
            }
            "USER" => user = rest.to_string(),
            _ => {}
        }
    }
    Dockerfile {
        file: path.display().to_string(),
        text,
        final_files,
        entrypoint,
        user,
    }
}

fn dockerfile_for(image_base: &str) -> Dockerfile {
    let name = image_base.rsplit('/').next().unwrap();
    let path = repo_root().join(format!("deployment/dockerfiles/{name}.Dockerfile"));
    assert!(
        path.exists(),
        "image {image_base} has no Dockerfile at {}",
        path.display()
    );
    parse_dockerfile(&path)
}

#[test]
fn dockerfiles_build_packages_binaries_and_paths_the_workspace_has() {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: BTreeMap<String, &Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p))
        .collect();
    let dir = repo_root().join("deployment/dockerfiles");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let df = parse_dockerfile(&path);
        seen += 1;
        let mut built: Vec<String> = Vec::new();
        for ins in instructions(&df.text) {
            if let Some(copy) = ins.strip_prefix("COPY ")
                && !copy.contains("--from=")
            {
                let parts: Vec<&str> = copy.split_whitespace().collect();
                for src in &parts[..parts.len() - 1] {
                    assert!(
                        repo_root().join(src).exists(),
                        "{}: COPY {src}: no such path",
                        df.file
                    );
                }
            }
            let words: Vec<&str> = ins.split_whitespace().collect();
            if let Some(i) = words.windows(2).position(|w| w == ["cargo", "build"]) {
                let arg = |flag: &str| {
                    words[i..]
                        .iter()
                        .position(|w| *w == flag)
                        .map(|k| words[i + k + 1].to_string())
                };
                assert!(
                    words.contains(&"--release") && words.contains(&"--locked"),
                    "{}",
                    df.file
                );
                let pkg =
                    arg("-p").unwrap_or_else(|| panic!("{}: cargo build without -p", df.file));
                let p = packages
                    .get(&pkg)
                    .unwrap_or_else(|| panic!("{}: no package {pkg}", df.file));
                let bin = arg("--bin").unwrap();
                let has_bin = p["targets"].as_array().unwrap().iter().any(|t| {
                    t["name"] == bin.as_str()
                        && t["kind"].as_array().unwrap().iter().any(|k| k == "bin")
                });
                assert!(has_bin, "{}: package {pkg} has no binary {bin}", df.file);
                if let Some(f) = arg("--features") {
                    assert!(
                        p["features"].get(&f).is_some(),
                        "{}: {pkg} has no feature {f}",
                        df.file
                    );
                }
                built.push(format!("/src/target/release/{bin}"));
            }
            if let Some(i) = words.windows(2).position(|w| w == ["cargo", "install"]) {
                let root = words[i..]
                    .iter()
                    .position(|w| *w == "--root")
                    .map(|k| words[i + k + 1])
                    .unwrap();
                for w in &words[i + 2..] {
                    if let Some((krate, version)) = w.split_once('@') {
                        // Installed tools must match the workspace's DataFusion major version.
                        let df_major = meta_dep_major(&packages, "datafusion");
                        assert_eq!(
                            version.split('.').next().unwrap(),
                            df_major,
                            "{}: {w}",
                            df.file
                        );
                        built.push(format!("{root}/bin/{krate}"));
                    }
                }
            }
            if let Some(copy) = ins.strip_prefix("COPY --from=build ") {
                let src = copy.split_whitespace().next().unwrap();
                assert!(
                    built.iter().any(|b| b == src),
                    "{}: copies {src}, which no step builds ({built:?})",
                    df.file
                );
            }
        }
        assert!(!built.is_empty(), "{}: builds nothing", df.file);
        assert!(
            df.final_files.contains(&df.entrypoint),
            "{}: ENTRYPOINT {} is not installed",
            df.file,
            df.entrypoint
        );
        let uid = df.user_uid().unwrap();
        assert!(
            !uid.is_empty() && uid != "0" && uid != "root",
            "{}: runs as root",
            df.file
        );
    }
    assert_eq!(seen, 3, "server, pipeline, pipeline-cuda");
    let server = parse_dockerfile(&dir.join("trialflow-server.Dockerfile"));
    let cfg = Config::load_for_serving(Some(&repo_root().join("config/config.yaml"))).unwrap();
    assert!(
        server
            .text
            .contains(&format!("EXPOSE {}", cfg.serving.port))
    );
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    for p in ["target", ".git", "data/lake", "models"] {
        assert!(
            ignore.lines().any(|l| l.trim() == p),
            ".dockerignore must exclude {p}"
        );
    }
}

/// The major version of a dependency of the workspace's packages.
fn meta_dep_major(packages: &BTreeMap<String, &Value>, dep: &str) -> String {
    for p in packages.values() {
        for d in p["dependencies"].as_array().unwrap() {
            if d["name"] == dep {
                let req = d["req"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches(['^', '=', '~']);
                return req.split('.').next().unwrap().to_string();
            }
        }
    }
    panic!("no dependency {dep}")
}

/// Metric names in a PromQL expression or a dashboard: identifiers starting with `trialflow_`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(k) = text[i..].find("trialflow_") {
        let start = i + k;
        let prev_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if prev_ok {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn alerts_and_dashboard_name_metrics_that_are_exported() {
    let p = Project::sample();
    let server = Server::start(&p, &[]);
    let (status, body) = server.request("GET", "/metrics", "");
    assert_eq!(status, 200);
    let mut exported = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            exported.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    assert!(
        exported.contains("trialflow_requests_total"),
        "{exported:?}"
    );
    exported.extend(
        trialflow_deploy::pushgateway::PIPELINE_METRICS
            .iter()
            .map(|s| s.to_string()),
    );
    // The pushed names are the ones the push really sends.
    let mut run = trialflow_deploy::pushgateway::RunSummary {
        exit_code: 0,
        ..Default::default()
    };
    run.tasks.insert("succeeded".into(), 1);
    run.rows.insert("read".into(), 1);
    let pushed: BTreeSet<String> = metric_names(&trialflow_deploy::pushgateway::exposition(&run));
    let declared: BTreeSet<String> = trialflow_deploy::pushgateway::PIPELINE_METRICS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(pushed, declared);

    let mon = repo_root().join("deployment/monitoring");
    let alerts = std::fs::read_to_string(mon.join("alerts.yml")).unwrap();
    let rules: Value = serde_yaml_ng::from_str(&alerts).unwrap();
    let mut n_rules = 0;
    let mut alert_metrics = BTreeSet::new();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            n_rules += 1;
            assert!(
                r["alert"].is_string() && r["annotations"]["summary"].is_string(),
                "{r}"
            );
            assert!(["page", "warn"].contains(&r["labels"]["severity"].as_str().unwrap()));
            alert_metrics.extend(metric_names(r["expr"].as_str().unwrap()));
        }
    }
    assert!(n_rules >= 6);
    let dashboard = std::fs::read_to_string(mon.join("grafana/trialflow-server.json")).unwrap();
    let dash: Value = serde_json::from_str(&dashboard).unwrap();
    let mut dash_metrics = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            dash_metrics.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    for (what, names) in [
        ("alerts.yml", &alert_metrics),
        ("the dashboard", &dash_metrics),
    ] {
        let unknown: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics nobody exports: {unknown:?}"
        );
    }
    for needed in [
        "trialflow_requests_total",
        "trialflow_request_duration_seconds_bucket",
        "trialflow_model_versions_loaded",
        "trialflow_pipeline_success",
        "trialflow_pipeline_last_success_timestamp_seconds",
    ] {
        assert!(alert_metrics.contains(needed), "no alert on {needed}");
    }

    // The ServiceMonitor scrapes the server's Service by its labels and port name.
    let sm: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(mon.join("servicemonitor.yaml")).unwrap())
            .unwrap();
    let rs = overlay("prod");
    let svc = typed::<Service>(find(&rs, "Service", "trialflow-server")).unwrap();
    let labels = svc.metadata.labels.unwrap();
    let sel: BTreeMap<String, String> =
        serde_json::from_value(sm["spec"]["selector"]["matchLabels"].clone()).unwrap();
    assert!(selects(&sel, &labels));
    let ep = &sm["spec"]["endpoints"][0];
    let port_names: Vec<String> = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    assert!(port_names.contains(&ep["port"].as_str().unwrap().to_string()));
    assert_eq!(ep["path"], "/metrics");
    let (status, _) = server.request("GET", ep["path"].as_str().unwrap(), "");
    assert_eq!(status, 200);
    let prom: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(mon.join("prometheus.yml")).unwrap())
            .unwrap();
    for f in prom["rule_files"].as_array().unwrap() {
        assert!(mon.join(f.as_str().unwrap()).exists());
    }
}
