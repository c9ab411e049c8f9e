//! Kustomize composition, the subset our manifests use, so that rendering and checking them needs no
//! kubectl: `resources` (files and directories), `namespace`, `images`, `replicas`, `labels` and `patches`
//! (strategic merge: maps merge, lists merge on the Kubernetes API's merge key of their field, `merge`). Any other kustomization key is an
//! error, so a manifest change that needs more of kustomize fails here instead of rendering wrongly.

use std::path::PathBuf;

use serde_json::Value;
use trialflow_core::{Error, Result};

#[derive(Debug, Clone)]
pub struct Resource {
    /// The file the resource came from, relative to the manifests' root.
    pub source: String,
    pub doc: Value,
}

/// Where manifests are read from: a directory (`deployment/kubernetes`) or the copies built into the binary.
pub trait Files {
    /// The file at `path` (relative to the root, `/`-separated, normalized), if there is one.
    fn read(&self, path: &str) -> Option<String>;
    /// For messages.
    fn describe(&self, path: &str) -> String;
}

#[derive(Debug, Clone)]
pub struct Disk(pub PathBuf);

impl Files for Disk {
    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.0.join(path)).ok()
    }
    fn describe(&self, path: &str) -> String {
        self.0.join(path).display().to_string()
    }
}

/// `deployment/kubernetes/` as it was when the binary was built, so that the deployment pipeline renders the
/// manifests of its own code version wherever it runs (a test keeps this list equal to the directory).
#[derive(Debug, Clone, Copy)]
pub struct Embedded;

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        pub const EMBEDDED: &[(&str, &str)] = &[
            $(($path, include_str!(concat!("../../../deployment/kubernetes/", $path)))),*
        ];
    };
}

embed!(
    "base/kustomization.yaml",
    "base/serviceaccount.yaml",
    "base/configmap.yaml",
    "base/server-deployment.yaml",
    "base/server-service.yaml",
    "base/server-hpa.yaml",
    "base/server-pdb.yaml",
    "base/pipeline-cronjob.yaml",
    "base/ballista.yaml",
    "base/networkpolicy.yaml",
    "overlays/dev/kustomization.yaml",
    "overlays/dev/patches.yaml",
    "overlays/prod/kustomization.yaml",
    "overlays/prod/patches.yaml",
    "overlays/prod/train-gpu-cronjob.yaml",
);

impl Files for Embedded {
    fn read(&self, path: &str) -> Option<String> {
        EMBEDDED
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, t)| t.to_string())
    }
    fn describe(&self, path: &str) -> String {
        format!("<embedded deployment/kubernetes/{path}>")
    }
}

/// `a/b/../c` → `a/c`; `.` segments dropped.
fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

fn join(dir: &str, rel: &str) -> String {
    normalize(&format!("{dir}/{rel}"))
}

impl Resource {
    pub fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or_default()
    }
}

const KEYS: [&str; 8] = [
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "images",
    "replicas",
    "labels",
    "patches",
];

/// Kinds that live outside namespaces (kustomize leaves their namespace alone).
const CLUSTER_SCOPED: [&str; 4] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
];

/// Every YAML document in a text, `---`-separated; empty documents are dropped.
pub fn parse_docs(text: &str, file: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| Error::config(file, "", format!("not YAML: {e}")))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn read_docs(files: &dyn Files, path: &str) -> Result<Vec<Value>> {
    let text = files
        .read(path)
        .ok_or_else(|| Error::config(files.describe(path), "", "no such file"))?;
    parse_docs(&text, &files.describe(path))
}

/// Composes the kustomization in `dir` (a directory holding `kustomization.yaml`, relative to the root).
pub fn build(files: &dyn Files, dir: &str) -> Result<Vec<Resource>> {
    let dir = normalize(dir);
    let kpath = join(&dir, "kustomization.yaml");
    let kfile = files.describe(&kpath);
    let bad = |message: String| Error::config(&kfile, "kustomization", message);
    let k = read_docs(files, &kpath)?
        .into_iter()
        .next()
        .ok_or_else(|| bad("empty kustomization".into()))?;
    let obj = k
        .as_object()
        .ok_or_else(|| bad("expected a mapping".into()))?;
    if let Some(key) = obj.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(bad(format!(
            "`{key}` is not supported by trialflow's kustomize subset (supported: {})",
            KEYS.join(", ")
        )));
    }
    let mut out = Vec::new();
    for r in list(&k["resources"]) {
        let rel = r
            .as_str()
            .ok_or_else(|| bad("resources: expected paths".into()))?;
        let path = join(&dir, rel);
        if files.read(&join(&path, "kustomization.yaml")).is_some() {
            out.extend(build(files, &path)?);
        } else if files.read(&path).is_some() {
            for doc in read_docs(files, &path)? {
                out.push(Resource {
                    source: path.clone(),
                    doc,
                });
            }
        } else {
            return Err(bad(format!("resource `{rel}` does not exist")));
        }
    }
    for p in list(&k["patches"]) {
        let rel = p["path"]
            .as_str()
            .ok_or_else(|| bad("patches: expected `path`".into()))?;
        for patch in read_docs(files, &join(&dir, rel))? {
            let kind = p["target"]["kind"].as_str().or(patch["kind"].as_str());
            let name = p["target"]["name"]
                .as_str()
                .or(patch["metadata"]["name"].as_str());
            let mut hit = false;
            for r in out.iter_mut() {
                if Some(r.kind()) == kind && Some(r.name()) == name {
                    merge(&mut r.doc, &patch).map_err(|m| {
                        bad(format!("patch `{rel}` on {} `{}`: {m}", r.kind(), r.name()))
                    })?;
                    hit = true;
                }
            }
            if !hit {
                return Err(bad(format!(
                    "patch `{rel}` matches no resource (kind {kind:?}, name {name:?})"
                )));
            }
        }
    }
    for rep in list(&k["replicas"]) {
        let (Some(name), Some(count)) = (rep["name"].as_str(), rep["count"].as_u64()) else {
            return Err(bad("replicas: expected `name` and `count`".into()));
        };
        let mut hit = false;
        // As kustomize: only workloads with a replica count.
        for r in out.iter_mut().filter(|r| {
            r.name() == name
                && [
                    "Deployment",
                    "StatefulSet",
                    "ReplicaSet",
                    "ReplicationController",
                ]
                .contains(&r.kind())
        }) {
            r.doc["spec"]["replicas"] = count.into();
            hit = true;
        }
        if !hit {
            return Err(bad(format!("replicas: no resource named `{name}`")));
        }
    }
    for l in list(&k["labels"]) {
        let pairs = l["pairs"].as_object().cloned().unwrap_or_default();
        for r in out.iter_mut() {
            for (key, v) in &pairs {
                r.doc["metadata"]["labels"][key] = v.clone();
            }
        }
    }
    for img in list(&k["images"]) {
        let name = img["name"]
            .as_str()
            .ok_or_else(|| bad("images: expected `name`".into()))?;
        for r in out.iter_mut() {
            for_each_container(&mut r.doc, &mut |c| {
                let Some(image) = c["image"].as_str() else {
                    return;
                };
                let (base, tag) = split_image(image);
                if base == name {
                    let new_base = img["newName"].as_str().unwrap_or(base);
                    let new_tag = img["newTag"].as_str().unwrap_or(tag);
                    c["image"] = if new_tag.is_empty() {
                        new_base.into()
                    } else {
                        format!("{new_base}:{new_tag}").into()
                    };
                }
            });
        }
    }
    if let Some(ns) = k["namespace"].as_str() {
        for r in out.iter_mut() {
            if !CLUSTER_SCOPED.contains(&r.kind()) {
                r.doc["metadata"]["namespace"] = ns.into();
            }
        }
    }
    Ok(out)
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// `repo/name:tag` → (`repo/name`, `tag`); a port in the registry host is not a tag.
pub fn split_image(image: &str) -> (&str, &str) {
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, ""),
    }
}

/// The pod template of a workload (Deployment, StatefulSet, Job, CronJob), if it has one.
pub fn pod_spec_mut(doc: &mut Value) -> Option<&mut Value> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let spec = match kind.as_str() {
        "CronJob" => doc.pointer_mut("/spec/jobTemplate/spec/template/spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
            doc.pointer_mut("/spec/template/spec")
        }
        "Pod" => doc.pointer_mut("/spec"),
        _ => None,
    };
    spec.filter(|s| s.is_object())
}

pub fn for_each_container(doc: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    if let Some(spec) = pod_spec_mut(doc) {
        for key in ["initContainers", "containers"] {
            if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
                cs.iter_mut().for_each(&mut *f);
            }
        }
    }
}

/// Strategic merge as kustomize applies it: maps merge key by key, lists merge item by item on the merge key
/// the Kubernetes API declares for their field (`containers` by `name`, `volumeMounts` by `mountPath`,
/// container `ports` by `containerPort`, …), lists the API declares atomic are replaced. A list of objects
/// whose field is in neither table, and any `$patch`/`$setElementOrder` directive, is an error naming the
/// path: rendering it by guesswork could silently drop an item that real kustomize keeps.
pub fn merge(base: &mut Value, patch: &Value) -> std::result::Result<(), String> {
    merge_at(base, patch, "")
}

fn merge_at(base: &mut Value, patch: &Value, at: &str) -> std::result::Result<(), String> {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                let here = format!("{at}.{k}");
                if k.starts_with('$') {
                    return Err(format!(
                        "{here}: strategic-merge directives are not supported by trialflow's kustomize subset"
                    ));
                }
                match b.get_mut(k) {
                    Some(existing) if !v.is_null() => merge_at(existing, v, &here)?,
                    Some(_) => {
                        b.remove(k);
                    }
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
            Ok(())
        }
        (Value::Array(b), Value::Array(p)) => {
            let field = at.rsplit('.').next().unwrap_or_default();
            match list_rule(field, b.iter().chain(p)) {
                ListRule::Atomic => {
                    *b = p.clone();
                    Ok(())
                }
                ListRule::Key(key) => {
                    for (i, item) in p.iter().enumerate() {
                        if item.get(key).is_none() {
                            return Err(format!(
                                "{at}[{i}]: an item without its merge key `{key}`"
                            ));
                        }
                        match b.iter_mut().find(|x| x[key] == item[key]) {
                            Some(existing) => merge_at(existing, item, &format!("{at}[{i}]"))?,
                            None => b.push(item.clone()),
                        }
                    }
                    Ok(())
                }
                ListRule::Unknown => Err(format!(
                    "{at}: a list whose merge key trialflow's kustomize subset does not know; add the field \
                     to `list_rule` (deploy/src/manifests.rs) with the key the Kubernetes API declares"
                )),
            }
        }
        (b, p) => {
            *b = p.clone();
            Ok(())
        }
    }
}

enum ListRule {
    Key(&'static str),
    Atomic,
    Unknown,
}

/// The Kubernetes API's `patchMergeKey` (or atomic replacement) of the list fields our manifests use.
fn list_rule<'a>(field: &str, mut items: impl Iterator<Item = &'a Value>) -> ListRule {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => ListRule::Key("name"),
        "volumeMounts" => ListRule::Key("mountPath"),
        "volumeDevices" => ListRule::Key("devicePath"),
        "hostAliases" => ListRule::Key("ip"),
        "topologySpreadConstraints" => ListRule::Key("topologyKey"),
        // a container's ports merge on containerPort, a Service's on port
        "ports" => {
            if items.any(|i| i.get("containerPort").is_some()) {
                ListRule::Key("containerPort")
            } else {
                ListRule::Key("port")
            }
        }
        "args" | "command" | "envFrom" | "tolerations" | "rules" | "metrics"
        | "onPodConditions" | "values" | "matchExpressions" | "ingress" | "egress" | "from"
        | "to" | "policyTypes" | "nodeSelectorTerms" | "policies" => ListRule::Atomic,
        _ if items.all(|i| !i.is_object() && !i.is_array()) => ListRule::Atomic,
        _ => ListRule::Unknown,
    }
}

/// The resources as one multi-document YAML stream (what `kubectl apply -f` takes).
pub fn to_yaml(resources: &[Resource]) -> Result<String> {
    let mut out = String::new();
    for r in resources {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&r.doc).map_err(Error::bug)?);
    }
    Ok(out)
}

/// Composes `overlays/<overlay>` with our images tagged `tag` (the code version a pipeline run was built from)
/// where the manifests leave the tag open (`latest`).
pub fn render(files: &dyn Files, overlay: &str, tag: &str) -> Result<String> {
    let mut resources = build(files, &format!("overlays/{overlay}"))?;
    for r in resources.iter_mut() {
        for_each_container(&mut r.doc, &mut |c| {
            if let Some(image) = c["image"].as_str() {
                let (base, current) = split_image(image);
                // Only our own images (deployment/dockerfiles/trialflow-*.Dockerfile) follow the code version;
                // pinned third-party images stay as written.
                if base
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("trialflow-"))
                {
                    let t = if current.is_empty() || current == "latest" {
                        image_tag(tag)
                    } else {
                        current.to_string()
                    };
                    c["image"] = format!("{base}:{t}").into();
                }
            }
        });
    }
    to_yaml(&resources)
}

/// A code version as an image tag: `[A-Za-z0-9_.-]`, at most 128 characters (`0.1.0+abc` → `0.1.0-abc`).
pub fn image_tag(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

/// Keys of `original` that a typed round trip dropped: the fields the Kubernetes API would reject as unknown.
pub fn unknown_fields(original: &Value, typed: &Value, at: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                let here = format!("{at}.{k}");
                match t.get(k) {
                    Some(tv) => unknown_fields(v, tv, &here, out),
                    // Empty values may be dropped by the round trip without meaning anything.
                    None if is_empty(v) => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            for (i, (ov, tv)) in o.iter().zip(t).enumerate() {
                unknown_fields(ov, tv, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_named_lists_and_replaces_others() {
        let mut base = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "server", "image": "a:1", "args": ["x"], "resources": {"limits": {"cpu": "1"}}},
            {"name": "sidecar", "image": "b:1"}
        ]}}}});
        merge(
            &mut base,
            &json!({"spec": {"template": {"spec": {"containers": [
                {"name": "server", "args": ["y"], "resources": {"limits": {"memory": "1Gi"}}}
            ]}}}}),
        )
        .unwrap();
        let c = &base["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["args"], json!(["y"]));
        assert_eq!(
            c[0]["resources"]["limits"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(c[0]["image"], "a:1");
        assert_eq!(c[1]["name"], "sidecar");
        assert_eq!(
            split_image("localhost:5000/x/y:2"),
            ("localhost:5000/x/y", "2")
        );
        assert_eq!(
            split_image("localhost:5000/x/y"),
            ("localhost:5000/x/y", "")
        );
        let mut missing = Vec::new();
        unknown_fields(
            &json!({"spec": {"replicas": 2, "replica": 3, "x": {}}}),
            &json!({"spec": {"replicas": 2}}),
            "",
            &mut missing,
        );
        assert_eq!(missing, vec![".spec.replica"]);
    }

    #[test]
    fn lists_merge_on_the_api_merge_key_and_directives_are_refused() {
        // two mounts of one volume: kustomize keys volumeMounts by mountPath, so both stay
        let mut base = json!({"containers": [{"name": "c", "volumeMounts": [
            {"name": "work", "mountPath": "/a"}
        ], "ports": [{"name": "http", "containerPort": 80}]}]});
        merge(
            &mut base,
            &json!({"containers": [{"name": "c", "volumeMounts": [
                {"name": "work", "mountPath": "/b", "subPath": "b"}
            ], "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}),
        )
        .unwrap();
        assert_eq!(
            base["containers"][0]["volumeMounts"],
            json!([{"name": "work", "mountPath": "/a"}, {"name": "work", "mountPath": "/b", "subPath": "b"}])
        );
        assert_eq!(
            base["containers"][0]["ports"],
            json!([{"name": "http", "containerPort": 80, "protocol": "TCP"}])
        );
        let err = merge(
            &mut base,
            &json!({"containers": [{"name": "c", "$patch": "delete"}]}),
        )
        .unwrap_err();
        assert!(err.contains(".containers[0].$patch"), "{err}");
        let err = merge(
            &mut json!({"spec": {"widgets": [{"id": 1}]}}),
            &json!({"spec": {"widgets": [{"id": 2}]}}),
        )
        .unwrap_err();
        assert!(err.contains(".spec.widgets"), "{err}");
        // atomic lists are replaced whole
        let mut b = json!({"tolerations": [{"key": "a"}], "args": ["x", "y"]});
        merge(
            &mut b,
            &json!({"tolerations": [{"key": "b"}], "args": ["z"]}),
        )
        .unwrap();
        assert_eq!(b, json!({"tolerations": [{"key": "b"}], "args": ["z"]}));
    }
}
