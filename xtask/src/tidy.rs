//! Tidy checks of the tree, run as tests (`cargo xtask test` runs them with the rest): the dependency
//! invariants of ARCHITECTURE.md read from cargo itself, a module doc on every source file, no `unwrap` or
//! `expect` outside tests in library code, and no test update mode under CI.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use crate::root;

    /// The workspace crates and the internal crates each may depend on (directly).
    const LAYERS: &[(&str, &[&str])] = &[
        ("trialflow-core", &[]),
        ("trialflow-dag", &["trialflow-core"]),
        ("trialflow-model", &["trialflow-core"]),
        // stage crates: the shared libraries only, never another stage
        ("trialflow-ingest", &["trialflow-core", "trialflow-dag"]),
        ("trialflow-preprocess", &["trialflow-core", "trialflow-dag"]),
        (
            "trialflow-train",
            &["trialflow-core", "trialflow-dag", "trialflow-model"],
        ),
        ("trialflow-analysis", &["trialflow-core", "trialflow-dag"]),
        (
            "trialflow-deploy",
            &["trialflow-core", "trialflow-dag", "trialflow-model"],
        ),
        ("trialflow-serve", &["trialflow-core", "trialflow-model"]),
        // test support, a dev-dependency of the crates whose tests start servers
        ("trialflow-testkit", &[]),
    ];

    /// External crates (by name prefix) and the only workspace crates whose dependency closure may hold them.
    /// The cli, which knows every stage, holds them all.
    const CONFINED: &[(&str, &[&str])] = &[
        ("datafusion", &["trialflow-preprocess"]),
        ("ballista", &["trialflow-preprocess"]),
        (
            "candle-",
            &["trialflow-model", "trialflow-train", "trialflow-serve"],
        ),
        ("axum", &["trialflow-serve"]),
    ];

    fn cargo(args: &[&str]) -> String {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root())
            .args(args)
            .output()
            .expect("running cargo");
        assert!(
            out.status.success(),
            "cargo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("cargo's output is UTF-8")
    }

    /// Each workspace member's direct normal dependencies, by name.
    fn direct_dependencies() -> BTreeMap<String, BTreeSet<String>> {
        let meta: serde_json::Value = serde_json::from_str(&cargo(&[
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ]))
        .expect("cargo metadata's JSON");
        let mut out = BTreeMap::new();
        for p in meta["packages"].as_array().into_iter().flatten() {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str().map(String::from))
                .collect();
            out.insert(p["name"].as_str().unwrap_or_default().to_string(), deps);
        }
        out
    }

    /// The crates a build of `package` alone compiles (normal edges, its own features resolved).
    fn closure(package: &str) -> BTreeSet<String> {
        cargo(&[
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
    }

    /// Internal dependencies outside each crate's layer, and xtask's dependencies beyond its own.
    fn layer_violations(deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
        let mut wrong = Vec::new();
        for (krate, allowed) in LAYERS {
            let Some(d) = deps.get(*krate) else {
                wrong.push(format!("{krate} is not a workspace member"));
                continue;
            };
            for dep in d.iter().filter(|d| d.starts_with("trialflow-")) {
                if !allowed.contains(&dep.as_str()) {
                    wrong.push(format!(
                        "{krate} depends on {dep}; it may depend on {allowed:?} only"
                    ));
                }
            }
        }
        if let Some(x) = deps.get("xtask") {
            wrong.extend(
                x.iter()
                    .filter(|d| !["anyhow", "serde_json"].contains(&d.as_str()))
                    .map(|d| format!("xtask depends on {d}: std + anyhow + serde_json only")),
            );
        }
        wrong
    }

    /// Crates in `closure` (what `krate` builds) that only other crates may hold.
    fn confinement_violations(krate: &str, closure: &BTreeSet<String>) -> Vec<String> {
        let mut wrong = Vec::new();
        for (prefix, owners) in CONFINED {
            if owners.contains(&krate) {
                continue;
            }
            for dep in closure.iter().filter(|d| d.starts_with(prefix)) {
                wrong.push(format!(
                    "{krate} builds {dep}; only {owners:?} may depend on {prefix}*"
                ));
            }
        }
        wrong
    }

    #[test]
    fn crates_depend_only_on_the_layers_below_them() {
        let wrong = layer_violations(&direct_dependencies());
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn heavy_dependencies_stay_in_their_crates() {
        let mut wrong = Vec::new();
        for (krate, _) in LAYERS {
            let all = closure(krate);
            assert!(all.contains(*krate), "cargo tree of {krate}: {all:?}");
            wrong.extend(confinement_violations(krate, &all));
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_dependency_rules_catch_what_they_forbid() {
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };
        let mut deps: BTreeMap<String, BTreeSet<String>> = LAYERS
            .iter()
            .map(|(k, allowed)| (k.to_string(), set(allowed)))
            .collect();
        assert!(layer_violations(&deps).is_empty());
        // a stage depending on another stage (the gate once used train for its types)
        deps.insert(
            "trialflow-deploy".into(),
            set(&["trialflow-core", "trialflow-train"]),
        );
        let wrong = layer_violations(&deps);
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(wrong[0].contains("trialflow-deploy depends on trialflow-train"));
        // candle reached through another crate
        let wrong = confinement_violations("trialflow-deploy", &set(&["candle-core", "serde"]));
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(confinement_violations("trialflow-train", &set(&["candle-core"])).is_empty());
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    fn sources() -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in std::fs::read_dir(root().join("crates"))
            .expect("crates/")
            .flatten()
        {
            rust_files(&dir.path().join("src"), &mut files);
        }
        rust_files(&root().join("xtask/src"), &mut files);
        files.sort();
        assert!(files.len() > 50, "found only {} source files", files.len());
        files
    }

    #[test]
    fn every_source_file_says_what_it_is_for() {
        let missing: Vec<String> = sources()
            .into_iter()
            .filter(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                !text.trim_start().starts_with("//!")
            })
            .map(|f| f.display().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "source files without a module doc (`//!` first):\n{}",
            missing.join("\n")
        );
    }

    /// The code of a source file before its test module; none in a file compiled for tests only (an inner
    /// `#![cfg(test)]`, a crate's shared test helpers).
    fn production_part(text: &str) -> &str {
        let test_only = text.lines().any(|l| l.trim() == "#![cfg(test)]");
        if test_only {
            return "";
        }
        text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
    }

    #[test]
    fn library_code_does_not_unwrap() {
        let mut found = Vec::new();
        for f in sources() {
            let p = f.to_string_lossy();
            // binaries and the build tool report with anyhow; tests and their support crate may panic
            if p.contains("/src/bin/")
                || p.contains("/xtask/")
                || p.contains("/crates/testkit/")
                || p.ends_with("cli/src/main.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for (n, line) in production_part(&text).lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                if code.contains(".unwrap()") || code.contains(".expect(") {
                    found.push(format!("{p}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "unwrap/expect in library code (return an error naming the input instead):\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn production_part_stops_at_the_test_module() {
        let text = "fn a() {}\n#[cfg(test)]\nmod tests { fn b() { x.unwrap(); } }\n";
        assert!(!production_part(text).contains("unwrap"));
        let helpers = "//! Test helpers.\n#![cfg(test)]\nfn b() { x.unwrap(); }\n";
        assert_eq!(production_part(helpers), "");
        let library = "//! A library.\nfn a() { x.unwrap(); }\n";
        assert!(production_part(library).contains("unwrap"));
    }

    /// Environment variables that make a test rewrite its expectations.
    const UPDATE_MODES: &[&str] = &["UPDATE_EXPECT", "UPDATE_GOLDEN", "INSTA_UPDATE", "BLESS"];

    #[test]
    fn no_update_mode_under_ci() {
        if std::env::var_os("CI").is_some() {
            for m in UPDATE_MODES {
                assert!(
                    std::env::var_os(m).is_none(),
                    "{m} is set under CI: expectations are never rewritten by a CI run"
                );
            }
        }
        // and every test that has an update mode refuses it under CI itself
        let mut tests = Vec::new();
        for dir in std::fs::read_dir(root().join("crates"))
            .expect("crates/")
            .flatten()
        {
            rust_files(&dir.path().join("tests"), &mut tests);
        }
        let mut unguarded = Vec::new();
        for f in tests {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let uses = UPDATE_MODES.iter().any(|m| {
                text.contains(&format!("var_os(\"{m}\")"))
                    || text.contains(&format!("var(\"{m}\")"))
            });
            if uses && !text.contains("var_os(\"CI\")") {
                unguarded.push(f.display().to_string());
            }
        }
        assert!(
            unguarded.is_empty(),
            "tests with an update mode that CI does not refuse:\n{}",
            unguarded.join("\n")
        );
    }
}
