//! Pipeline files (`pipelines/*.yaml`): named tasks with a kind (`run`), arguments (`with`) and
//! dependencies (`after`: must succeed; `after_done`: waited for, whatever their outcome); `include` pulls in
//! other pipelines. A dependency on a task defined in another
//! pipeline file is allowed and means "read its outputs from the lake"; a name defined nowhere is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::{DagError, def_err};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    tasks: BTreeMap<String, TaskDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskDef {
    run: String,
    #[serde(default)]
    with: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    after: Vec<String>,
    /// Tasks to wait for whatever their outcome: their outputs are used when they exist (the report's
    /// model section), and their failure does not skip this task.
    #[serde(default)]
    after_done: Vec<String>,
}

/// One task of a resolved pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub name: String,
    pub run: String,
    pub with: BTreeMap<String, serde_json::Value>,
    /// Every task this one waits for (`after` and `after_done`).
    pub after: Vec<String>,
    /// The part of `after` that need not succeed (`after_done`).
    pub after_done: Vec<String>,
    /// The pipeline file that defines it, for messages.
    pub file: String,
}

/// Every pipeline file, parsed; the universe of task names.
#[derive(Debug, Clone)]
pub struct PipelineSet {
    files: BTreeMap<String, (String, PipelineFile)>,
}

/// A pipeline with its includes expanded, in a dependency-respecting order.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub description: String,
    pub tasks: Vec<TaskSpec>,
}

impl PipelineSet {
    /// Parses `(name, file label, yaml text)` triples.
    pub fn parse(sources: &[(String, String, String)]) -> Result<Self, DagError> {
        let mut files = BTreeMap::new();
        for (name, label, text) in sources {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            let file: PipelineFile = serde_path_to_error::deserialize(de).map_err(|e| {
                let key = e.path().to_string();
                def_err(label, key, e.into_inner().to_string())
            })?;
            files.insert(name.clone(), (label.clone(), file));
        }
        Ok(Self { files })
    }

    /// Reads every `*.yaml` in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, DagError> {
        let label = dir.display().to_string();
        let rd = std::fs::read_dir(dir)
            .map_err(|e| def_err(&label, "<dir>", format!("cannot read: {e}")))?;
        let mut sources = Vec::new();
        for entry in rd {
            let path = entry
                .map_err(|e| def_err(&label, "<dir>", e.to_string()))?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                def_err(
                    &path.display().to_string(),
                    "<file>",
                    format!("cannot read: {e}"),
                )
            })?;
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            sources.push((name, path.display().to_string(), text));
        }
        Self::parse(&sources)
    }

    pub fn names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// Expands `name` and checks it: known kinds, known dependencies, no cycles.
    pub fn resolve(&self, name: &str, known_kinds: &[&str]) -> Result<Pipeline, DagError> {
        let universe = self.universe()?;
        for (task, spec) in &universe {
            if !known_kinds.contains(&spec.run.as_str()) {
                return Err(def_err(
                    &spec.file,
                    format!("tasks.{task}.run"),
                    format!(
                        "unknown task kind `{}`, expected one of {known_kinds:?}",
                        spec.run
                    ),
                ));
            }
            for (i, dep) in spec.after.iter().enumerate() {
                if !universe.contains_key(dep) {
                    return Err(def_err(
                        &spec.file,
                        format!("tasks.{task}.after[{i}]"),
                        format!("unknown task `{dep}` (defined in no pipeline file)"),
                    ));
                }
            }
        }
        check_acyclic(&universe)?;
        let mut selected = BTreeSet::new();
        let mut stack = vec![(name.to_string(), Vec::<String>::new())];
        while let Some((p, trail)) = stack.pop() {
            let Some((label, file)) = self.files.get(&p) else {
                return Err(def_err(
                    trail.last().map(String::as_str).unwrap_or("pipelines"),
                    "include",
                    format!("unknown pipeline `{p}`, expected one of {:?}", self.names()),
                ));
            };
            if trail.contains(&p) {
                return Err(def_err(
                    label,
                    "include",
                    format!("include cycle through `{p}`"),
                ));
            }
            selected.extend(file.tasks.keys().cloned());
            let mut t = trail.clone();
            t.push(p.clone());
            stack.extend(file.include.iter().map(|i| (i.clone(), t.clone())));
        }
        let description = self
            .files
            .get(name)
            .map(|(_, f)| f.description.clone())
            .unwrap_or_default();
        let order = topo_order(&universe, &selected);
        Ok(Pipeline {
            name: name.to_string(),
            description,
            tasks: order.into_iter().map(|n| universe[&n].clone()).collect(),
        })
    }

    fn universe(&self) -> Result<BTreeMap<String, TaskSpec>, DagError> {
        let mut all: BTreeMap<String, TaskSpec> = BTreeMap::new();
        for (label, file) in self.files.values() {
            for (name, def) in &file.tasks {
                if let Some(prev) = all.get(name) {
                    return Err(def_err(
                        label,
                        format!("tasks.{name}"),
                        format!("task name already defined in {}", prev.file),
                    ));
                }
                all.insert(
                    name.clone(),
                    TaskSpec {
                        name: name.clone(),
                        run: def.run.clone(),
                        with: def.with.clone(),
                        after: def.after.iter().chain(&def.after_done).cloned().collect(),
                        after_done: def.after_done.clone(),
                        file: label.clone(),
                    },
                );
            }
        }
        Ok(all)
    }
}

fn check_acyclic(g: &BTreeMap<String, TaskSpec>) -> Result<(), DagError> {
    // 0 = unvisited, 1 = on the current path, 2 = done
    fn visit(
        n: &str,
        g: &BTreeMap<String, TaskSpec>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Result<(), DagError> {
        match state.get(n).copied().unwrap_or(0) {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Err(def_err(
                    &g[n].file,
                    format!("tasks.{n}.after"),
                    format!("dependency cycle: {}", cycle.join(" → ")),
                ));
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for d in &g[n].after {
            visit(d, g, state, path)?;
        }
        path.pop();
        state.insert(n.to_string(), 2);
        Ok(())
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        visit(n, g, &mut state, &mut Vec::new())?;
    }
    Ok(())
}

/// Kahn's algorithm over the selected tasks, ties broken by name for a stable plan.
fn topo_order(g: &BTreeMap<String, TaskSpec>, selected: &BTreeSet<String>) -> Vec<String> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < selected.len() {
        let ready: Vec<String> = selected
            .iter()
            .filter(|n| !done.contains(*n))
            .filter(|n| {
                g[*n]
                    .after
                    .iter()
                    .all(|d| done.contains(d) || !selected.contains(d))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            break; // unreachable: cycles were rejected before
        }
        for n in ready {
            done.insert(n.clone());
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> Result<PipelineSet, DagError> {
        let v: Vec<(String, String, String)> = files
            .iter()
            .map(|(n, t)| (n.to_string(), format!("pipelines/{n}.yaml"), t.to_string()))
            .collect();
        PipelineSet::parse(&v)
    }

    const KINDS: &[&str] = &["a", "b"];

    #[test]
    fn cycle_is_a_definition_error_naming_the_path() {
        let s = set(&[(
            "p",
            "tasks:\n  x: {run: a, after: [y]}\n  y: {run: a, after: [x]}\n",
        )])
        .unwrap();
        let e = s.resolve("p", KINDS).unwrap_err().to_string();
        assert!(e.contains("dependency cycle"), "{e}");
        assert!(e.contains("x → y → x") || e.contains("y → x → y"), "{e}");
    }

    #[test]
    fn unknown_dependency_and_kind_are_errors() {
        let s = set(&[("p", "tasks:\n  x: {run: a, after: [nope]}\n")]).unwrap();
        let e = s.resolve("p", KINDS).unwrap_err().to_string();
        assert!(
            e.contains("pipelines/p.yaml: tasks.x.after[0]: unknown task `nope`"),
            "{e}"
        );
        let s = set(&[("p", "tasks:\n  x: {run: zzz}\n")]).unwrap();
        let e = s.resolve("p", KINDS).unwrap_err().to_string();
        assert!(e.contains("tasks.x.run: unknown task kind `zzz`"), "{e}");
    }

    #[test]
    fn unknown_key_names_the_path() {
        let e = set(&[("p", "tasks:\n  x: {run: a, afterr: [y]}\n")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("pipelines/p.yaml: tasks.x.afterr: ")
                && e.contains("unknown field `afterr`"),
            "{e}"
        );
    }

    #[test]
    fn include_expands_and_orders_topologically() {
        let s = set(&[
            (
                "data",
                "tasks:\n  load: {run: a}\n  clean: {run: a, after: [load]}\n",
            ),
            ("train", "tasks:\n  fit: {run: b, after: [clean]}\n"),
            (
                "full",
                "include: [data, train]\ntasks:\n  report: {run: a, after: [clean]}\n",
            ),
        ])
        .unwrap();
        let p = s.resolve("full", KINDS).unwrap();
        let names: Vec<&str> = p.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["load", "clean", "fit", "report"]);
        // a pipeline may depend on another file's task without running it
        let p = s.resolve("train", KINDS).unwrap();
        assert_eq!(p.tasks.len(), 1);
        assert!(s.resolve("nope", KINDS).is_err());
    }
}
