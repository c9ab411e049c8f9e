//! What the integration tests of several crates share (dev-dependency only): the repository root, free ports,
//! the Python environment `cargo xtask test` installs, processes that announce their port on stderr, and
//! moto's S3 API server on 127.0.0.1 with a client for it. A missing tool fails the test with what to run.

#![allow(clippy::unwrap_used)] // test support: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (30 s at most) until something listens on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Python of the test tools' environment (`cargo xtask test` makes it under target/py/serve:
/// tritonclient, kserve, prometheus_client, moto, …).
pub fn test_python() -> PathBuf {
    let p = std::env::var_os("TRIALFLOW_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/py/serve/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test` (it installs the test tools into target/py/serve)",
        p.display()
    );
    p
}

pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Spawns `c` (a trialflow server with `--port 0`) and waits for the port it announces on stderr
/// (`serving on http://HOST:PORT`); the rest of stderr is drained so the server never blocks on it.
pub fn spawn_announced(mut c: Command) -> (Child, u16) {
    let mut child = c
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        // a plain line, or the message of a JSON one (`--json-logs`)
        if let Some((_, addr)) = line.split_once("serving on http://") {
            let port: String = addr
                .rsplit_once(':')
                .unwrap()
                .1
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            break port.parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

/// moto's S3 API server on 127.0.0.1 (from the test tools' environment); stopped when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// On a given port (to restart a stopped server where clients expect it).
    pub fn start_on(port: u16) -> Self {
        let bin = test_python().parent().unwrap().join("moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo xtask test` (it installs moto into target/py/serve)",
            bin.display()
        );
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "moto");
        Self { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard AWS environment pointing at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Sends one request without a body (headers, no blank line) and returns the whole answer.
    fn request(&self, head: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "{head}\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    }

    pub fn create_bucket(&self, bucket: &str) {
        let resp = self.request(&format!("PUT /{bucket} HTTP/1.1"));
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }

    /// The SHA-256 checksum the server stored with `bucket/key` (`x-amz-checksum-sha256`, asked for with
    /// `x-amz-checksum-mode: ENABLED`), if it stored one.
    pub fn checksum_sha256(&self, bucket: &str, key: &str) -> Option<String> {
        let resp = self.request(&format!(
            "HEAD /{bucket}/{key} HTTP/1.1\r\nx-amz-checksum-mode: ENABLED"
        ));
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        resp.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-amz-checksum-sha256")
                .then(|| value.trim().to_string())
        })
    }

    pub fn store(&self, bucket: &str) -> Arc<dyn object_store::ObjectStore> {
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id("testing")
                .with_secret_access_key("testing")
                .build()
                .unwrap(),
        )
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let store = self.store(bucket);
        block_on(store.put(&object_store::path::Path::from(key), bytes.into())).unwrap();
    }

    /// Uploads every file under `dir` to `bucket` under `prefix/`, `BLESSED` files last (as a promotion
    /// writes them).
    pub fn upload(&self, dir: &Path, bucket: &str, prefix: &str) {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        files.sort_by_key(|p| p.ends_with("BLESSED"));
        for f in files {
            let rel = f.strip_prefix(dir).unwrap().display().to_string();
            self.put(
                bucket,
                &format!("{prefix}/{rel}"),
                std::fs::read(&f).unwrap(),
            );
        }
    }

    /// Keys under `prefix` in `bucket`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let store = self.store(bucket);
        let p = object_store::path::Path::from(prefix);
        let mut keys: Vec<String> = block_on(store.list(Some(&p)).try_collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        keys.sort();
        keys
    }

    /// Stops the server (as a crash would: no goodbye).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
