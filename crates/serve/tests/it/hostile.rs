//! Clients that misbehave on purpose: headers trickled or never finished, idle connections, more
//! connections than allowed, bodies that stall, keys given twice, a body typed as a browser form or sent
//! by another site's page, a path that does not decode, inputs far outside the training range. Each gets
//! an answer or a closed connection, within the configured time, and the server keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_version(dir.path(), "cv", 1, 11, true);
    dir
}

fn connect(port: u16) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// Reads until the server closes; the bytes read and how long it took.
fn until_closed(c: &mut TcpStream, since: Instant) -> (Vec<u8>, Duration) {
    let mut raw = Vec::new();
    // a reset after the server's close also ends the wait: either way it closed
    let _ = c.read_to_end(&mut raw);
    (raw, since.elapsed())
}

#[test]
fn headers_trickled_a_byte_at_a_time_and_idle_connections_are_closed_at_the_header_timeout() {
    let repo = repo();
    let mut cfg = serving(60);
    cfg.header_read_timeout_ms = 500;
    let s = TestServer::start(cfg, repo.path());

    // one header byte every 50 ms would take 5 s; the server closes at 0.5 s whatever arrives meanwhile
    let mut c = connect(s.port);
    let mut writer = c.try_clone().unwrap();
    let start = Instant::now();
    let trickle = std::thread::spawn(move || {
        let head = format!(
            "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
            "a".repeat(100)
        );
        for b in head.bytes() {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (raw, took) = until_closed(&mut c, start);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    // hyper answers the timeout before it closes
    assert!(
        raw.is_empty() || raw.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    trickle.join().unwrap();

    // a keep-alive connection that stays idle after its response is closed at the same limit
    let mut c = connect(s.port);
    let start = Instant::now();
    c.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (raw, took) = until_closed(&mut c, start);
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert_eq!(s.get("/v2/health/live").status, 200);
}

#[test]
fn a_connection_over_the_cap_is_answered_503_and_a_freed_slot_serves_again() {
    let repo = repo();
    let mut cfg = serving(60);
    cfg.max_connections = 3;
    cfg.max_concurrent_requests = 3;
    let s = TestServer::start(cfg, repo.path());
    let mut idle: Vec<TcpStream> = (0..3).map(|_| connect(s.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = s.get("/v2/health/live");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.error().contains("serving.max_connections"),
        "{}",
        r.error()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(idle.pop());
    wait_until("a freed connection slot", || {
        s.get("/v2/health/live").status == 200
    });
    let mut m = String::new();
    wait_until("metrics through a free slot", || {
        let r = s.get("/metrics");
        m = r.text();
        r.status == 200
    });
    let value = |prefix: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{m}"))
            .parse()
            .unwrap()
    };
    let open = value("trialflow_connections_open ");
    assert_eq!(open, 3, "the two idle connections and this one");
    let refused = value("trialflow_requests_rejected_total{reason=\"connections\"} ");
    assert!(refused >= 1, "{refused}");
}

#[test]
fn a_body_that_stalls_is_answered_408_at_the_body_timeout() {
    let repo = repo();
    let mut cfg = serving(60);
    cfg.body_read_timeout_ms = 300;
    cfg.request_timeout_ms = 5000;
    let s = TestServer::start(cfg, repo.path());
    let body = json!({ "instances": [record(50.0, "F")] }).to_string();
    let mut c = connect(s.port);
    let start = Instant::now();
    write!(
        c,
        "POST /v1/models/cv:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..body.len() / 2]
    )
    .unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(r.error().contains("body_read_timeout_ms"), "{}", r.error());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_key_given_twice_is_a_400_naming_it() {
    let repo = repo();
    let s = TestServer::start(serving(60), repo.path());
    let body = r#"{"instances": [{"age": 50, "weight_kg": 80, "height_cm": 170, "arm": "treatment",
                   "sex": "F", "smoker": "no", "age": 90}]}"#;
    let r = s.post("/v1/models/cv:predict", body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error(), "instances[0].age: the key is given twice");
    let body = json!({"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", "data": [50]}]})
        .to_string()
        .replacen("\"shape\"", "\"datatype\": \"FP32\", \"shape\"", 1);
    let r = s.post("/v2/models/cv/infer", &body);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error(), "inputs[0].datatype: the key is given twice");
    // a free-form object, at any depth, and the top level
    let input = r#"{"name": "age", "shape": [1], "datatype": "FP64", "data": [50]}"#;
    for (body, named) in [
        (
            format!(r#"{{"inputs": [{input}], "parameters": {{"x": {{"y": 1, "y": 2}}}}}}"#),
            "parameters.x.y",
        ),
        (
            format!(
                r#"{{"inputs": [{input}], "outputs": [{{"name": "probability", "parameters": {{"binary_data": true, "binary_data": false}}}}]}}"#
            ),
            "outputs[0].parameters.binary_data",
        ),
        (
            format!(r#"{{"inputs": [{input}], "inputs": []}}"#),
            "inputs",
        ),
    ] {
        let r = s.post("/v2/models/cv/infer", &body);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.error(), format!("{named}: the key is given twice"));
    }
}

/// The request a page on another site can make a browser send without a preflight, and its variants.
#[test]
fn browser_forms_and_other_sites_are_refused_and_clients_without_a_content_type_are_served() {
    let repo = repo();
    let s = TestServer::start(serving(60), repo.path());
    let body = json!({ "instances": [record(50.0, "F")] }).to_string();
    let post = |headers: &[(&str, &str)]| {
        http(
            s.port,
            "POST",
            "/v1/models/cv:predict",
            headers,
            body.as_bytes(),
        )
    };
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = post(&[("Content-Type", ct)]);
        assert_eq!(r.status, 415, "{ct}: {}", r.text());
        assert!(r.error().starts_with("Content-Type:"), "{}", r.error());
    }
    for h in [
        ("Origin", "https://elsewhere.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = post(&[h]);
        assert_eq!(r.status, 403, "{h:?}: {}", r.text());
    }
    assert_eq!(
        post(&[("Content-Type", "application/json; charset=utf-8")]).status,
        200
    );
    assert_eq!(post(&[("Origin", "http://localhost")]).status, 200);
    // no Content-Type at all, as tritonclient sends its JSON requests
    let mut c = connect(s.port);
    write!(
        c,
        "POST /v1/models/cv:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_path_that_is_not_utf8_once_decoded_is_a_json_400() {
    let repo = repo();
    let s = TestServer::start(serving(60), repo.path());
    for path in ["/v1/models/%FF%FE", "/v2/models/%FF%FE/ready"] {
        let r = s.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.error().starts_with("path:"), "{}", r.error());
    }
    let r = s.post("/v1/models/%FF%FE:predict", "{}");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().starts_with("path:"), "{}", r.error());
}

#[test]
fn inputs_far_outside_the_training_range_are_scored_with_a_warning_and_counted() {
    let repo = repo();
    let s = TestServer::start(serving(60), repo.path());
    let plain = s.post(
        "/v1/models/cv:predict",
        &json!({ "instances": [record(50.0, "F")] }).to_string(),
    );
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.header("trialflow-warning"), None);
    // both within their valid ranges, yet a BMI of 208 is 45 training standard deviations from the mean
    let mut far = record(50.0, "F");
    far["weight_kg"] = json!(300);
    far["height_cm"] = json!(120);
    let r = s.post(
        "/v1/models/cv:predict",
        &json!({ "instances": [far, record(51.0, "M")] }).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let warning = r.header("trialflow-warning").unwrap_or_default();
    assert!(warning.contains("bmi (1 rows)"), "{warning}");
    assert!(
        !warning.contains("300"),
        "the warning names features, not values: {warning}"
    );
    // transformed rows are checked the same way
    let mut row = encoded(&record(50.0, "F"));
    row[0] = 1e6;
    let r = s.post(
        "/v2/models/cv/infer",
        &json!({"inputs": [{"name": "features", "shape": [1, row.len()], "datatype": "FP32", "data": row}]})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("trialflow-warning")
            .unwrap_or_default()
            .contains("age (1 rows)")
    );
    s.assert_metrics(&[
        "trialflow_inputs_out_of_range_total{feature=\"bmi\"} 1",
        "trialflow_inputs_out_of_range_total{feature=\"age\"} 1",
    ]);
}
