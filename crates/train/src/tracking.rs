//! Experiment tracking on an MLflow tracking server over its REST API (2.0): experiment (get or create, safe
//! against parallel training tasks creating it at once), run, params, per-epoch and final metrics, tags, and
//! artifacts through the server's artifact proxy (`mlflow server --serve-artifacts`, the default).
//!
//! `log-batch` requests stay within MLflow's limits: at most 1000 metrics, 100 params and 100 tags, and 1000
//! entities in all, per request.

use std::time::Duration;

use serde_json::{Value, json};
use trialflow_core::{Error, Result};

pub const MAX_METRICS: usize = 1000;
pub const MAX_PARAMS: usize = 100;
pub const MAX_TAGS: usize = 100;
pub const MAX_ENTITIES: usize = 1000;
/// MLflow refuses longer parameter values.
const MAX_PARAM_VALUE: usize = 6000;

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub step: i64,
    pub timestamp: i64,
}

/// Splits a run's entities into `log-batch` bodies within MLflow's limits (params and tags first, so that a
/// run shows them even if a later metrics request fails).
pub fn batches(
    metrics: &[Metric],
    params: &[(String, String)],
    tags: &[(String, String)],
) -> Vec<Value> {
    let mut out = Vec::new();
    let (mut m, mut p, mut t) = (0, 0, 0);
    while m < metrics.len() || p < params.len() || t < tags.len() {
        let np = (params.len() - p).min(MAX_PARAMS);
        let nt = (tags.len() - t).min(MAX_TAGS);
        let nm = (metrics.len() - m)
            .min(MAX_METRICS)
            .min(MAX_ENTITIES - np - nt);
        let body = json!({
            "params": params[p..p + np].iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            "tags": tags[t..t + nt].iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            "metrics": metrics[m..m + nm].iter().map(|x| json!({
                "key": x.key, "value": x.value, "step": x.step, "timestamp": x.timestamp,
            })).collect::<Vec<_>>(),
        });
        out.push(body);
        (m, p, t) = (m + nm, p + np, t + nt);
    }
    out
}

#[derive(Debug, Clone)]
pub struct Mlflow {
    base: String,
    http: reqwest::Client,
}

/// What a finished run is called on the server.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRef {
    pub tracking_uri: String,
    pub experiment_id: String,
    pub run_id: String,
    pub artifact_uri: String,
}

/// The `Authorization` header MLflow's own clients send, from MLflow's variables: `MLFLOW_TRACKING_TOKEN` (a
/// bearer token) or `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` (basic auth, as MLflow's
/// basic-auth app and most proxies in front of MLflow take). Marked sensitive: never logged.
fn credentials(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<reqwest::header::HeaderValue>> {
    use base64::Engine as _;
    let value = if let Some(token) = var("MLFLOW_TRACKING_TOKEN").filter(|t| !t.is_empty()) {
        format!("Bearer {token}")
    } else {
        match (
            var("MLFLOW_TRACKING_USERNAME").filter(|u| !u.is_empty()),
            var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(user), Some(password)) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            (Some(_), None) => {
                return Err(Error::config(
                    "MLFLOW_TRACKING_PASSWORD",
                    "tracking",
                    "MLFLOW_TRACKING_USERNAME is set without MLFLOW_TRACKING_PASSWORD",
                ));
            }
            (None, _) => return Ok(None),
        }
    };
    let mut header = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
        Error::config(
            "MLFLOW_TRACKING_TOKEN",
            "tracking",
            "the MLflow credentials hold characters an HTTP header cannot carry",
        )
    })?;
    header.set_sensitive(true);
    Ok(Some(header))
}

impl Mlflow {
    pub fn new(uri: &str) -> Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(auth) = credentials(|k| std::env::var(k).ok())? {
            headers.insert(reqwest::header::AUTHORIZATION, auth);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(Error::bug)?;
        Ok(Self {
            base: uri.trim_end_matches('/').to_string(),
            http,
        })
    }

    fn fail(&self, what: &str, message: impl std::fmt::Display) -> Error {
        Error::infra(
            format!("MLflow {}", self.base),
            format!("{what}: {message}"),
        )
    }

    /// One REST call; an MLflow error comes back as `Err((error_code, message))` inside `Ok`.
    async fn call(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<std::result::Result<Value, (String, String)>> {
        let res = req.send().await.map_err(|e| self.fail(what, e))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| self.fail(what, e))?;
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"message": String::from_utf8_lossy(&bytes)}));
        if status.is_success() {
            return Ok(Ok(body));
        }
        let code = body["error_code"].as_str().unwrap_or_default().to_string();
        let message = body["message"].as_str().unwrap_or_default();
        // Keep messages short: MLflow echoes SQL for some errors.
        let message = message.lines().next().unwrap_or_default().to_string();
        if code.is_empty() {
            return Err(self.fail(what, format!("HTTP {status}: {message}")));
        }
        Ok(Err((code, message)))
    }

    async fn post(&self, what: &str, path: &str, body: &Value) -> Result<Value> {
        let req = self
            .http
            .post(format!("{}/api/2.0/mlflow/{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        self.call(what, req)
            .await?
            .map_err(|(code, msg)| self.fail(what, format!("{code}: {msg}")))
    }

    async fn experiment_by_name(&self, name: &str) -> Result<Option<String>> {
        let req = self
            .http
            .get(format!(
                "{}/api/2.0/mlflow/experiments/get-by-name",
                self.base
            ))
            .query(&[("experiment_name", name)]);
        match self.call("get experiment", req).await? {
            Ok(v) => Ok(v["experiment"]["experiment_id"]
                .as_str()
                .map(str::to_string)),
            Err((code, _)) if code == "RESOURCE_DOES_NOT_EXIST" => Ok(None),
            Err((code, msg)) => Err(self.fail("get experiment", format!("{code}: {msg}"))),
        }
    }

    /// The experiment's id, creating it if needed. Two creators at once: the loser reads the winner's.
    pub async fn experiment(&self, name: &str) -> Result<String> {
        if let Some(id) = self.experiment_by_name(name).await? {
            return Ok(id);
        }
        let req = self
            .http
            .post(format!("{}/api/2.0/mlflow/experiments/create", self.base))
            .header("content-type", "application/json")
            .body(json!({"name": name}).to_string());
        match self.call("create experiment", req).await? {
            Ok(v) => v["experiment_id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.fail("create experiment", "no experiment_id in the answer")),
            Err((code, _)) if code == "RESOURCE_ALREADY_EXISTS" => {
                self.experiment_by_name(name).await?.ok_or_else(|| {
                    self.fail("get experiment", "created by another run, then not found")
                })
            }
            Err((code, msg)) => Err(self.fail("create experiment", format!("{code}: {msg}"))),
        }
    }

    pub async fn create_run(
        &self,
        experiment_id: &str,
        name: &str,
        start_ms: i64,
    ) -> Result<(String, String)> {
        let v = self
            .post(
                "create run",
                "runs/create",
                &json!({"experiment_id": experiment_id, "run_name": name, "start_time": start_ms}),
            )
            .await?;
        let info = &v["run"]["info"];
        match (info["run_id"].as_str(), info["artifact_uri"].as_str()) {
            (Some(id), Some(uri)) => Ok((id.to_string(), uri.to_string())),
            _ => Err(self.fail("create run", "no run_id or artifact_uri in the answer")),
        }
    }

    pub async fn log(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        for mut body in batches(metrics, params, tags) {
            body["run_id"] = run_id.into();
            self.post("log-batch", "runs/log-batch", &body).await?;
        }
        Ok(())
    }

    /// Uploads through the artifact proxy: `mlflow-artifacts:/<exp>/<run>/artifacts` (optionally with a host)
    /// maps to `PUT /api/2.0/mlflow-artifacts/artifacts/<exp>/<run>/artifacts/<name>`.
    pub async fn upload(&self, artifact_uri: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Err(self.fail(
                "upload artifact",
                format!(
                    "the run's artifact location {artifact_uri} is not served by the tracking server; start it \
                     with --serve-artifacts (MLflow's default) and no --default-artifact-root"
                ),
            ));
        };
        // `//host:port/path` or `/path`
        let path = match rest.strip_prefix("//") {
            Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
            None => rest.trim_start_matches('/'),
        };
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{path}/{name}",
            self.base
        );
        let req = self.http.put(url).body(bytes);
        self.call("upload artifact", req)
            .await?
            .map(drop)
            .map_err(|(code, msg)| self.fail("upload artifact", format!("{code}: {msg}")))
    }

    pub async fn finish(&self, run_id: &str, status: &str, end_ms: i64) -> Result<()> {
        self.post(
            "finish run",
            "runs/update",
            &json!({"run_id": run_id, "status": status, "end_time": end_ms}),
        )
        .await
        .map(drop)
    }
}

/// Params longer than MLflow accepts are cut (and say so).
pub fn param(key: &str, value: impl ToString) -> (String, String) {
    let mut v = value.to_string();
    if v.len() > MAX_PARAM_VALUE {
        let mut cut = MAX_PARAM_VALUE - 20;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        v.truncate(cut);
        v.push_str("…(truncated)");
    }
    (key.to_string(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_mlflows_own_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(credentials(env(&[])).unwrap().is_none());
        let bearer = credentials(env(&[("MLFLOW_TRACKING_TOKEN", "t0k")]))
            .unwrap()
            .unwrap();
        assert_eq!(bearer.to_str().unwrap(), "Bearer t0k");
        assert!(bearer.is_sensitive());
        let basic = credentials(env(&[
            ("MLFLOW_TRACKING_USERNAME", "admin"),
            ("MLFLOW_TRACKING_PASSWORD", "password1234"),
        ]))
        .unwrap()
        .unwrap();
        // base64("admin:password1234")
        assert_eq!(basic.to_str().unwrap(), "Basic YWRtaW46cGFzc3dvcmQxMjM0");
        let err = credentials(env(&[("MLFLOW_TRACKING_USERNAME", "admin")])).unwrap_err();
        assert!(
            err.to_string().contains("MLFLOW_TRACKING_PASSWORD"),
            "{err}"
        );
    }

    #[test]
    fn log_batch_bodies_respect_mlflows_limits_and_lose_nothing() {
        let metrics: Vec<Metric> = (0..2500)
            .map(|i| Metric {
                key: format!("m{}", i % 7),
                value: i as f64,
                step: i,
                timestamp: 0,
            })
            .collect();
        let params: Vec<(String, String)> = (0..230).map(|i| param(&format!("p{i}"), i)).collect();
        let tags: Vec<(String, String)> = (0..120).map(|i| param(&format!("t{i}"), i)).collect();
        let bodies = batches(&metrics, &params, &tags);
        let count = |b: &Value, k: &str| b[k].as_array().unwrap().len();
        for b in &bodies {
            assert!(count(b, "metrics") <= MAX_METRICS);
            assert!(count(b, "params") <= MAX_PARAMS);
            assert!(count(b, "tags") <= MAX_TAGS);
            assert!(count(b, "metrics") + count(b, "params") + count(b, "tags") <= MAX_ENTITIES);
        }
        let total = |k: &str| bodies.iter().map(|b| count(b, k)).sum::<usize>();
        assert_eq!(
            (total("metrics"), total("params"), total("tags")),
            (2500, 230, 120)
        );
        assert_eq!(
            bodies[0]["params"].as_array().unwrap().len(),
            100,
            "params go first"
        );
        assert!(batches(&[], &[], &[]).is_empty());
        let long = param("k", "x".repeat(10_000));
        assert!(long.1.len() <= MAX_PARAM_VALUE && long.1.ends_with("(truncated)"));
    }
}
