//! Batch runs report to a Prometheus Pushgateway: a pipeline run is over before any scrape could see it.
//!
//! One group per job and pipeline (`/metrics/job/<job>/pipeline/<name>`), pushed with POST so that only the
//! metrics in the body are replaced: a failed run leaves the last success's timestamp where it was, which is
//! what a "pipeline stale" alert needs.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use trialflow_core::{Error, Result};

/// Every metric a push can carry: the alert rules may reference these and nothing else from batch runs.
pub const PIPELINE_METRICS: [&str; 7] = [
    "trialflow_pipeline_last_run_timestamp_seconds",
    "trialflow_pipeline_last_success_timestamp_seconds",
    "trialflow_pipeline_success",
    "trialflow_pipeline_exit_code",
    "trialflow_pipeline_duration_seconds",
    "trialflow_pipeline_tasks",
    "trialflow_pipeline_rows",
];

pub const DEFAULT_JOB: &str = "trialflow_pipeline";

#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub pipeline: String,
    pub exit_code: i32,
    pub finished_unix: f64,
    pub duration_seconds: f64,
    /// Task count by final status (`succeeded`, `up_to_date`, `failed`, `skipped`).
    pub tasks: BTreeMap<String, usize>,
    /// Row counts of the clean stage when it ran: `read`, `accepted`, `quarantined`.
    pub rows: BTreeMap<String, u64>,
}

/// The Prometheus text exposition of a run.
pub fn exposition(s: &RunSummary) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    gauge(
        "trialflow_pipeline_last_run_timestamp_seconds",
        "When the last run finished (Unix time).",
        &one(s.finished_unix),
    );
    if s.exit_code == 0 {
        gauge(
            "trialflow_pipeline_last_success_timestamp_seconds",
            "When the last successful run finished (Unix time).",
            &one(s.finished_unix),
        );
    }
    gauge(
        "trialflow_pipeline_success",
        "1 if the last run succeeded, else 0.",
        &one(f64::from(u8::from(s.exit_code == 0))),
    );
    gauge(
        "trialflow_pipeline_exit_code",
        "Exit code of the last run (2 config, 3 bad data, 4 infrastructure, 5 locked).",
        &one(f64::from(s.exit_code)),
    );
    gauge(
        "trialflow_pipeline_duration_seconds",
        "Wall time of the last run.",
        &one(s.duration_seconds),
    );
    let labelled = |key: &str, m: &BTreeMap<String, f64>| -> Vec<(String, f64)> {
        m.iter()
            .map(|(k, v)| (format!("{{{key}=\"{k}\"}}"), *v))
            .collect()
    };
    let tasks: BTreeMap<String, f64> = s
        .tasks
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64))
        .collect();
    gauge(
        "trialflow_pipeline_tasks",
        "Tasks of the last run by final status.",
        &labelled("status", &tasks),
    );
    if !s.rows.is_empty() {
        let rows: BTreeMap<String, f64> =
            s.rows.iter().map(|(k, v)| (k.clone(), *v as f64)).collect();
        gauge(
            "trialflow_pipeline_rows",
            "Rows of the last run's clean stage: read = accepted + quarantined.",
            &labelled("kind", &rows),
        );
    }
    out
}

/// A grouping-key value as a path segment: Pushgateway's base64 form (`@base64`) whenever the value is not
/// plain, so that any pipeline name is safe in the URL.
fn segment(label: &str, value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        format!("{label}/{value}")
    } else {
        use base64::Engine;
        format!(
            "{label}@base64/{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value)
        )
    }
}

/// POSTs the run's metrics to `<base>/metrics/job/<job>/pipeline/<pipeline>`.
pub async fn push(base: &str, job: &str, s: &RunSummary) -> Result<()> {
    let url = format!(
        "{}/metrics/{}/{}",
        base.trim_end_matches('/'),
        segment("job", job),
        segment("pipeline", &s.pipeline)
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(Error::bug)?;
    let res = client
        .post(&url)
        .header("content-type", "text/plain; version=0.0.4")
        .body(exposition(s))
        .send()
        .await
        .map_err(|e| Error::infra(&url, format!("pushgateway: {e}")))?;
    if !res.status().is_success() {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        return Err(Error::infra(
            &url,
            format!(
                "pushgateway answered {status}: {}",
                body.chars().take(200).collect::<String>()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_runs_carry_no_success_timestamp() {
        let mut s = RunSummary {
            pipeline: "full".into(),
            exit_code: 3,
            finished_unix: 1.7e9,
            ..Default::default()
        };
        s.tasks.insert("failed".into(), 1);
        let text = exposition(&s);
        assert!(!text.contains("last_success"));
        assert!(text.contains("trialflow_pipeline_success 0\n"));
        assert!(text.contains("trialflow_pipeline_tasks{status=\"failed\"} 1\n"));
        s.exit_code = 0;
        assert!(
            exposition(&s)
                .contains("trialflow_pipeline_last_success_timestamp_seconds 1700000000\n")
        );
        assert_eq!(segment("pipeline", "full"), "pipeline/full");
        assert_eq!(segment("pipeline", "a/b"), "pipeline@base64/YS9i");
    }
}
