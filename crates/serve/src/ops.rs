//! Operations around every model request: bearer-token auth, the concurrency and time limits (refuse with
//! 503 rather than queue), the access log (no row values), and the Prometheus metrics.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::AppState;
use crate::error::ApiError;

/// Attached to a model response by its handler, read by the metrics layer.
#[derive(Debug, Clone)]
pub struct Served {
    pub model: Arc<str>,
    pub version: u64,
    pub rows: usize,
}

/// A model handler's answer with the version it used attached for the metrics layer; rows count only when
/// the request succeeded.
pub fn served(
    loaded: &crate::repository::LoadedVersion,
    result: crate::error::ApiResult<(Response, usize)>,
) -> Response {
    let (mut resp, rows) = result.unwrap_or_else(|e| (e.into_response(), 0));
    resp.extensions_mut().insert(Served {
        model: loaded.model_key.clone(),
        version: loaded.version,
        rows,
    });
    resp
}

/// Counts the rows of `rows` with an input far outside the training distribution and names those inputs in
/// a `Trialflow-Warning` header of `resp` (no values: only feature names and row counts).
pub fn flag_out_of_range(
    s: &AppState,
    loaded: &crate::repository::LoadedVersion,
    rows: &crate::input::Rows,
    resp: &mut Response,
) {
    let far = crate::input::out_of_range(loaded, rows, s.limits.out_of_range_sd);
    if far.is_empty() {
        return;
    }
    let mut names = Vec::with_capacity(far.len());
    for (feature, n) in &far {
        s.metrics.out_of_range(feature, *n);
        names.push(format!("{feature} ({n} rows)"));
    }
    let warning = format!(
        "inputs beyond {} training standard deviations, scored by extrapolation: {}",
        s.limits.out_of_range_sd,
        names.join(", ")
    );
    if let Ok(v) = HeaderValue::from_str(&warning) {
        resp.headers_mut().insert(WARNING_HEADER, v);
    }
}

pub const WARNING_HEADER: &str = "trialflow-warning";

const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const ROW_BUCKETS: [f64; 9] = [1.0, 2.0, 8.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in micro-units (µs for latency, rows for sizes), to stay atomic.
    sum_micro: AtomicU64,
    count: AtomicU64,
    scale: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64], scale: f64) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micro
            .fetch_add((v * self.scale) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / self.scale;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// (api, model and version when one was resolved, HTTP status code); no allocation per request.
type RequestKey = (usize, Option<(Arc<str>, u64)>, u16);

#[derive(Debug)]
pub struct Metrics {
    /// Keyed by what the server resolved (never by client text), so a fast unkeyed hash is safe here.
    requests: Mutex<HashMap<RequestKey, u64, foldhash::fast::FixedState>>,
    latency: [Histogram; 2],
    rows: Histogram,
    rows_total: AtomicU64,
    in_flight: AtomicI64,
    /// busy, timeout, unauthorized, connections (over `serving.max_connections`)
    pub(crate) rejected: [AtomicU64; 4],
    pub(crate) connections_open: AtomicI64,
    /// Numeric inputs far outside the training distribution, by feature.
    out_of_range: Mutex<HashMap<String, u64>>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(HashMap::default()),
            latency: [
                Histogram::new(&LATENCY_BUCKETS, 1e6),
                Histogram::new(&LATENCY_BUCKETS, 1e6),
            ],
            rows: Histogram::new(&ROW_BUCKETS, 1.0),
            rows_total: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            rejected: Default::default(),
            connections_open: AtomicI64::new(0),
            out_of_range: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }
}

const APIS: [&str; 2] = ["v1", "v2"];
const REJECT_REASONS: [&str; 4] = ["busy", "timeout", "unauthorized", "connections"];

impl Metrics {
    /// Counts rows whose `feature` lay far outside the training distribution.
    pub fn out_of_range(&self, feature: &str, rows: u64) {
        if let Ok(mut m) = self.out_of_range.lock() {
            *m.entry(feature.to_string()).or_default() += rows;
        }
    }
}

fn api_of(path: &str) -> usize {
    usize::from(path.starts_with("/v2/"))
}

/// Limits, auth, access log and metrics for the model routes (outermost first).
pub async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let api = api_of(req.uri().path());
    let access_log = tracing::enabled!(target: "trialflow::access", tracing::Level::INFO);
    let request_line = access_log.then(|| (req.method().clone(), req.uri().path().to_string()));
    let m = &s.metrics;
    m.in_flight.fetch_add(1, Ordering::Relaxed);
    let resp = limited(&s, req, next).await;
    m.in_flight.fetch_sub(1, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let code = resp.status().as_u16();
    let served = resp.extensions().get::<Served>();
    let rows = served.map(|s| s.rows).unwrap_or(0);
    m.latency[api].observe(secs);
    if rows > 0 {
        m.rows.observe(rows as f64);
        m.rows_total.fetch_add(rows as u64, Ordering::Relaxed);
    }
    let key = (api, served.map(|s| (s.model.clone(), s.version)), code);
    if let Ok(mut r) = m.requests.lock() {
        *r.entry(key).or_default() += 1;
    }
    if let Some((method, path)) = request_line {
        let (model, version) = served
            .map(|s| (s.model.to_string(), s.version.to_string()))
            .unwrap_or_default();
        tracing::info!(target: "trialflow::access", %method, %path, status = code, model = %model, version = %version, rows, micros = (secs * 1e6) as u64, "request");
    }
    resp
}

async fn limited(s: &AppState, req: Request, next: Next) -> Response {
    if let Some(token) = &s.limits.token
        && !authorized(&req, token)
    {
        s.metrics.rejected[2].fetch_add(1, Ordering::Relaxed);
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authorization: expected the header `Authorization: Bearer <token>` with the server's token",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    if let Err(refused) = browser_safe(&req) {
        return refused.into_response();
    }
    let Ok(_permit) = s.limits.concurrency.clone().try_acquire_owned() else {
        s.metrics.rejected[0].fetch_add(1, Ordering::Relaxed);
        return busy(format!(
            "server busy: {} requests in flight (serving.max_concurrent_requests); retry later",
            s.limits.max_concurrent
        ));
    };
    match tokio::time::timeout(s.limits.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            s.metrics.rejected[1].fetch_add(1, Ordering::Relaxed);
            busy(format!(
                "request timed out after {} ms (serving.request_timeout_ms)",
                s.limits.timeout.as_millis()
            ))
        }
    }
}

/// Refuses what a page on another site could make a visitor's browser send without asking (a CORS
/// "simple request"): a body typed as a form or plain text (415), or a request a browser marks as coming
/// from another site (403). Clients that send no Content-Type at all (tritonclient) are not browsers' forms.
fn browser_safe(req: &Request) -> Result<(), ApiError> {
    let h = req.headers();
    let text = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && !site.eq_ignore_ascii_case("same-origin")
        && !site.eq_ignore_ascii_case("none")
    {
        return Err(cross_site());
    }
    if let Some(origin) = text(header::ORIGIN) {
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        if origin_host.is_none() || origin_host != text(header::HOST) {
            return Err(cross_site());
        }
    }
    if req.method() == axum::http::Method::POST
        && let Some(ct) = h.get(header::CONTENT_TYPE)
    {
        let media = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json = media == "application/json"
            || (media.starts_with("application/") && media.ends_with("+json"));
        if !json && media != "application/octet-stream" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type: expected application/json (or application/octet-stream for binary tensors)",
            ));
        }
    }
    Ok(())
}

fn cross_site() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "origin: requests a browser sends from another site are refused",
    )
}

fn busy(message: String) -> Response {
    let mut r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from response times.
fn authorized(req: &Request, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // the scheme is case-insensitive (RFC 9110 §11.1)
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token)
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_rows: usize,
    pub max_body_bytes: usize,
    pub max_concurrent: usize,
    pub timeout: Duration,
    pub body_timeout: Duration,
    pub out_of_range_sd: f64,
    pub token: Option<Arc<str>>,
    pub concurrency: Arc<Semaphore>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: Prometheus text exposition format 0.0.4.
pub async fn metrics(State(s): State<AppState>) -> Response {
    let m = &s.metrics;
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP trialflow_requests_total Model API requests by API, model, version and HTTP status code.\n# TYPE trialflow_requests_total counter\n");
    if let Ok(r) = m.requests.lock() {
        let mut rows: Vec<(&str, String, String, u16, u64)> = r
            .iter()
            .map(|((api, mv, code), n)| {
                let (model, version) = mv
                    .as_ref()
                    .map(|(m, v)| (m.to_string(), v.to_string()))
                    .unwrap_or_default();
                (APIS[*api], model, version, *code, *n)
            })
            .collect();
        rows.sort();
        for (api, model, version, code, n) in rows {
            let _ = writeln!(
                out,
                "trialflow_requests_total{{api=\"{api}\",model=\"{}\",version=\"{version}\",code=\"{code}\"}} {n}",
                escape(&model),
            );
        }
    }
    out.push_str("# HELP trialflow_request_duration_seconds Model API request latency, by API.\n# TYPE trialflow_request_duration_seconds histogram\n");
    for (i, api) in APIS.iter().enumerate() {
        m.latency[i].render(
            &mut out,
            "trialflow_request_duration_seconds",
            &format!("api=\"{api}\""),
        );
    }
    out.push_str("# HELP trialflow_batch_rows Rows per scored request.\n# TYPE trialflow_batch_rows histogram\n");
    m.rows.render(&mut out, "trialflow_batch_rows", "");
    let _ = write!(
        out,
        "# HELP trialflow_rows_scored_total Rows scored.\n# TYPE trialflow_rows_scored_total counter\ntrialflow_rows_scored_total {}\n",
        m.rows_total.load(Ordering::Relaxed)
    );
    let _ = write!(
        out,
        "# HELP trialflow_requests_in_flight Model API requests being handled.\n# TYPE trialflow_requests_in_flight gauge\ntrialflow_requests_in_flight {}\n",
        m.in_flight.load(Ordering::Relaxed)
    );
    let _ = write!(
        out,
        "# HELP trialflow_connections_open Client connections open.\n# TYPE trialflow_connections_open gauge\ntrialflow_connections_open {}\n",
        m.connections_open.load(Ordering::Relaxed)
    );
    out.push_str("# HELP trialflow_inputs_out_of_range_total Rows scored with a numeric input more than serving.out_of_range_sd training standard deviations from the training mean, by feature.\n# TYPE trialflow_inputs_out_of_range_total counter\n");
    if let Ok(r) = m.out_of_range.lock() {
        let mut rows: Vec<_> = r.iter().collect();
        rows.sort();
        for (feature, n) in rows {
            let _ = writeln!(
                out,
                "trialflow_inputs_out_of_range_total{{feature=\"{}\"}} {n}",
                escape(feature)
            );
        }
    }
    out.push_str("# HELP trialflow_requests_rejected_total Requests refused by a limit or auth, by reason.\n# TYPE trialflow_requests_rejected_total counter\n");
    for (i, reason) in REJECT_REASONS.iter().enumerate() {
        let _ = writeln!(
            out,
            "trialflow_requests_rejected_total{{reason=\"{reason}\"}} {}",
            m.rejected[i].load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP trialflow_model_version_loaded Model versions loaded and serving (1 per version).\n# TYPE trialflow_model_version_loaded gauge\n");
    for (model, v) in s.repo.loaded() {
        let _ = writeln!(
            out,
            "trialflow_model_version_loaded{{model=\"{}\",version=\"{v}\"}} 1",
            escape(&model)
        );
    }
    let c = &s.repo.counters;
    let _ = write!(
        out,
        "# HELP trialflow_model_versions_loaded Model versions loaded.\n# TYPE trialflow_model_versions_loaded gauge\ntrialflow_model_versions_loaded {}\n\
         # HELP trialflow_model_loads_total Model version loads, by result.\n# TYPE trialflow_model_loads_total counter\n\
         trialflow_model_loads_total{{result=\"ok\"}} {}\ntrialflow_model_loads_total{{result=\"failed\"}} {}\n\
         # HELP trialflow_model_unloads_total Model versions retired.\n# TYPE trialflow_model_unloads_total counter\ntrialflow_model_unloads_total {}\n\
         # HELP trialflow_repository_scan_failures_total Model repository scans that failed.\n# TYPE trialflow_repository_scan_failures_total counter\ntrialflow_repository_scan_failures_total {}\n\
         # HELP trialflow_ready Whether the server is ready (a model is loaded and it is not shutting down).\n# TYPE trialflow_ready gauge\ntrialflow_ready {}\n\
         # HELP trialflow_uptime_seconds Seconds since the server started.\n# TYPE trialflow_uptime_seconds gauge\ntrialflow_uptime_seconds {:.3}\n\
         # HELP trialflow_build_info Build of the running server.\n# TYPE trialflow_build_info gauge\ntrialflow_build_info{{version=\"{}\"}} 1\n",
        s.repo.loaded_count(),
        c.loads_ok.load(Ordering::Relaxed),
        c.loads_failed.load(Ordering::Relaxed),
        c.unloads.load(Ordering::Relaxed),
        c.scans_failed.load(Ordering::Relaxed),
        u8::from(s.is_ready()),
        m.started.elapsed().as_secs_f64(),
        escape(trialflow_core::CODE_VERSION),
    );
    crate::process::write_metrics(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
