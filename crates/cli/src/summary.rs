//! The end-of-run summary: what came in, what was kept, how the models did, what was promoted, where it all is.

use std::time::Duration;

use serde_json::Value;
use trialflow_core::{Storage, lake};
use trialflow_dag::{RunRecord, TaskStatus};

fn f(v: &Value, path: &[&str]) -> Value {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.clone()
}

pub fn print(r: &RunRecord, lake: &Storage, models: &Storage, elapsed: Duration) {
    let count = |s: TaskStatus| r.tasks.iter().filter(|t| t.status == s).count();
    let verdict = if r.exit_code == 0 {
        "finished"
    } else {
        "FAILED"
    };
    println!(
        "\ntrialflow: pipeline {} {verdict} in {:.2}s — {} ran, {} up to date, {} failed, {} skipped{}",
        r.pipeline,
        elapsed.as_secs_f64(),
        count(TaskStatus::Succeeded),
        count(TaskStatus::UpToDate),
        count(TaskStatus::Failed),
        count(TaskStatus::Skipped),
        if r.dry_run {
            format!(", {} would run (dry run)", count(TaskStatus::WouldRun))
        } else {
            String::new()
        }
    );
    if r.dry_run {
        for t in &r.tasks {
            println!("  {:<16} {}", t.name, t.reason);
        }
        return;
    }
    if let Some(t) = r.task("clean").filter(|t| !t.summary.is_null()) {
        println!("Rows (read / accepted / quarantined):");
        if let Some(srcs) = t.summary["per_source"].as_array() {
            for s in srcs {
                println!(
                    "  {:<60} {} / {} / {}",
                    s["source"].as_str().unwrap_or(""),
                    s["rows_in"],
                    s["accepted"],
                    s["quarantined"]
                );
            }
        }
        let s = &t.summary;
        println!(
            "  {:<60} {} / {} / {}  (filter {}, exact duplicates {}, repeated ids {})",
            "total",
            s["rows_in"],
            s["accepted"],
            s["quarantined"],
            s["excluded_by_filter"],
            s["exact_duplicates"],
            s["repeated_ids"]
        );
    }
    if let Some(t) = r.task("features").filter(|t| !t.summary.is_null()) {
        let parts: Vec<String> = t.summary["splits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| format!("{} {}", s["split"].as_str().unwrap_or(""), s["rows"]))
                    .collect()
            })
            .unwrap_or_default();
        println!("Splits: {}", parts.join(" · "));
    }
    let models_line: Vec<String> = r
        .tasks
        .iter()
        .filter(|t| t.run == "train" && !t.summary.is_null())
        .map(|t| {
            let auc = f(&t.summary, &["metrics", "roc_auc"])
                .as_f64()
                .map(|a| format!("{a:.3}"))
                .unwrap_or("n/a".into());
            format!("{} {auc}", t.summary["model"].as_str().unwrap_or(&t.name))
        })
        .collect();
    if !models_line.is_empty() {
        println!("Models (test ROC AUC): {}", models_line.join(" · "));
    }
    if let Some(t) = r.task("gate").filter(|t| !t.summary.is_null()) {
        let s = &t.summary;
        let checks = s["checks"].as_array().cloned().unwrap_or_default();
        if let Some(chosen) = s["chosen"].as_str() {
            let mine = checks.iter().filter(|c| c["model"] == chosen).count();
            let vs = s["served_version"]
                .as_u64()
                .map(|v| format!(", compared with served version {v}"))
                .unwrap_or_default();
            println!("Gate: {chosen} blessed, {mine} checks passed{vs}");
        }
    }
    if let Some(t) = r.task("promote").filter(|t| !t.summary.is_null()) {
        let s = &t.summary;
        if let Some(note) = s["note"].as_str() {
            println!("Promotion: {note}");
        } else {
            println!(
                "Promoted: {} version {} (from {}{}) → {}",
                s["model_name"].as_str().unwrap_or(""),
                s["version"],
                s["source"].as_str().unwrap_or(""),
                if s["new_version"].as_bool() == Some(false) {
                    ", already served"
                } else {
                    ""
                },
                s["location"].as_str().unwrap_or("")
            );
        }
    }
    for t in r.tasks.iter().filter(|t| t.error.is_some()) {
        if let Some(e) = &t.error {
            println!("Failed: {} — {} error: {}", t.name, e.kind, e.message);
        }
    }
    println!("Outputs:");
    println!("  lake              {}", lake.display(""));
    let ok = |name: &str| {
        r.task(name)
            .is_some_and(|t| matches!(t.status, TaskStatus::Succeeded | TaskStatus::UpToDate))
    };
    if ok("quality") {
        println!("  quality report    {}", lake.display(lake::QUALITY_REPORT));
    }
    if let Some(report) = r
        .task("analyze")
        .filter(|_| ok("analyze"))
        .and_then(|t| t.summary["report"].as_str())
    {
        println!("  analysis report   {report}");
    }
    println!("  model repository  {}", models.display(""));
    println!(
        "  run record        {}",
        lake.display(&format!("runs/{}/run.json", r.run_id))
    );
}
