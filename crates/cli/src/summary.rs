//! The end-of-run summary: what came in, what was kept, how the models did, what was promoted, where it all is.
//!
//! Task summaries are read back as the stage contracts their tasks returned; one that does not read is
//! reported as such (naming the task and the field), never printed as zeros.

use std::time::Duration;

use serde::de::DeserializeOwned;
use trialflow_core::contracts::{
    self, AnalysisSummary, CleanReport, FeaturesReport, GateDecision, Promotion, TrainReport,
};
use trialflow_core::{Storage, lake};
use trialflow_dag::{RunRecord, TaskRecord, TaskStatus};

/// Summaries of the tasks of kind `run` that produced one, read as `T`.
fn summaries<'a, T: DeserializeOwned>(
    r: &'a RunRecord,
    run: &'a str,
) -> impl Iterator<Item = (&'a TaskRecord, T)> + 'a {
    r.tasks
        .iter()
        .filter(move |t| t.run == run && !t.summary.is_null())
        .filter_map(
            |t| match contracts::from_summary::<T>(&t.name, &t.summary) {
                Ok(s) => Some((t, s)),
                Err(e) => {
                    println!("Unreadable summary: {e}");
                    None
                }
            },
        )
}

pub fn print(r: &RunRecord, lake: &Storage, models: &Storage, elapsed: Duration) {
    print_verdict(r, elapsed);
    if r.dry_run {
        for t in &r.tasks {
            println!("  {:<16} {}", t.name, t.reason);
        }
        return;
    }
    print_results(r);
    for t in r.tasks.iter().filter(|t| t.error.is_some()) {
        if let Some(e) = &t.error {
            println!("Failed: {} — {} error: {}", t.name, e.kind, e.message);
        }
    }
    print_outputs(r, lake, models);
}

fn print_verdict(r: &RunRecord, elapsed: Duration) {
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
}

/// Rows, splits, models, the gate and the promotion, from the tasks' summaries.
fn print_results(r: &RunRecord) {
    for (_, s) in summaries::<CleanReport>(r, "clean") {
        print_rows(&s);
    }
    for (_, s) in summaries::<FeaturesReport>(r, "features") {
        let parts: Vec<String> = s
            .splits
            .iter()
            .map(|c| format!("{} {}", c.split, c.rows))
            .collect();
        println!("Splits: {}", parts.join(" · "));
    }
    let models_line: Vec<String> = summaries::<TrainReport>(r, "train")
        .map(|(_, s)| {
            let (name, value) = s.metrics.ranking();
            let value = value.map(|a| format!("{a:.3}")).unwrap_or("n/a".into());
            format!("{} {name} {value}", s.model)
        })
        .collect();
    if !models_line.is_empty() {
        println!("Models (test): {}", models_line.join(" · "));
    }
    for (_, s) in summaries::<GateDecision>(r, "gate") {
        if let Some(chosen) = &s.chosen {
            let mine = s.checks.iter().filter(|c| &c.model == chosen).count();
            let vs = s
                .served_version
                .map(|v| format!(", compared with served version {v}"))
                .unwrap_or_default();
            println!("Gate: {chosen} blessed, {mine} checks passed{vs}");
        }
    }
    for (_, s) in summaries::<Promotion>(r, "promote") {
        print_promotion(&s);
    }
}

fn print_outputs(r: &RunRecord, lake: &Storage, models: &Storage) {
    println!("Outputs:");
    println!("  lake              {}", lake.display(""));
    let ok = |t: &TaskRecord| matches!(t.status, TaskStatus::Succeeded | TaskStatus::UpToDate);
    if r.tasks.iter().any(|t| t.run == "quality" && ok(t)) {
        println!("  quality report    {}", lake.display(lake::QUALITY_REPORT));
    }
    for (t, s) in summaries::<AnalysisSummary>(r, "analyze") {
        if ok(t) {
            println!("  analysis report   {}", s.report);
        }
    }
    println!("  model repository  {}", models.display(""));
    println!(
        "  run record        {}",
        lake.display(&contracts::run_record(&r.run_id))
    );
}

fn print_rows(s: &CleanReport) {
    println!("Rows (read / accepted / quarantined):");
    for src in &s.per_source {
        println!(
            "  {:<60} {} / {} / {}",
            src.source, src.rows_in, src.accepted, src.quarantined
        );
    }
    println!(
        "  {:<60} {} / {} / {}  (filter {}, exact duplicates {}, repeated ids {})",
        "total",
        s.rows_in,
        s.accepted,
        s.quarantined,
        s.excluded_by_filter,
        s.exact_duplicates,
        s.repeated_ids
    );
    for t in &s.tables {
        let rules: Vec<String> = t
            .quarantine_rules
            .iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect();
        let why = if rules.is_empty() {
            String::new()
        } else {
            format!("  ({})", rules.join(", "))
        };
        println!(
            "  {:<60} {} / {} / {}{why}",
            format!("table {} (processed/tables/{}/)", t.table, t.table),
            t.rows_in,
            t.accepted,
            t.quarantined
        );
    }
    if s.normalized_values > 0 {
        println!(
            "  {} values NFC-normalized or stripped of invisible characters",
            s.normalized_values
        );
    }
    println!("Pseudonyms keyed by {}", s.key_source);
}

fn print_promotion(s: &Promotion) {
    if let Some(note) = &s.note {
        println!("Promotion: {note}");
    } else {
        println!(
            "Promoted: {} version {} (from {}{}) → {}",
            s.model_name,
            s.version,
            s.source,
            if s.new_version {
                ""
            } else {
                ", already served"
            },
            s.location
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(summary: serde_json::Value) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            pipeline: "data".into(),
            code_version: "test".into(),
            started_at: String::new(),
            finished_at: String::new(),
            dry_run: false,
            exit_code: 0,
            tasks: vec![TaskRecord {
                name: "clean".into(),
                run: "clean".into(),
                status: TaskStatus::Succeeded,
                reason: String::new(),
                fingerprint: None,
                attempts: 1,
                duration_ms: 0,
                error: None,
                summary,
            }],
        }
    }

    #[test]
    fn a_summary_is_read_as_its_contract_and_a_renamed_field_is_not_a_zero() {
        let report = CleanReport {
            rows_in: 10,
            accepted: 9,
            quarantined: 1,
            ..Default::default()
        };
        let good = record(serde_json::to_value(&report).unwrap_or_default());
        let read: Vec<CleanReport> = summaries::<CleanReport>(&good, "clean")
            .map(|(_, s)| s)
            .collect();
        assert_eq!(read, vec![report.clone()]);
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(o) = v.as_object_mut()
            && let Some(x) = o.remove("accepted")
        {
            o.insert("kept".into(), x);
        }
        assert_eq!(summaries::<CleanReport>(&record(v), "clean").count(), 0);
    }
}
