//! Harness for the end-to-end tests: a scratch project folder with the sample data, the real binary, and a
//! minimal HTTP/1.1 client (no client library: the tests should exercise the server, not a client's quirks).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use std::time::Duration;

pub use trialflow_testkit::{Moto, block_on, free_port, repo_root, test_python, wait_for_port};

pub struct Project {
    pub dir: tempfile::TempDir,
}

/// A pseudonymization key for tests (public: test data only).
pub const TEST_KEY: &str = "trialflow-test-key-for-public-example-data-only";

impl Project {
    /// A scratch folder with `config/config.yaml` and the bundled sample under `data/raw/`.
    pub fn sample() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = repo_root();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::create_dir_all(dir.path().join("data/raw")).unwrap();
        std::fs::copy(
            root.join("config/config.yaml"),
            dir.path().join("config/config.yaml"),
        )
        .unwrap();
        for f in ["clinical_trial_data_1.csv", "clinical_trial_data_2.csv"] {
            std::fs::copy(
                root.join("data/raw").join(f),
                dir.path().join("data/raw").join(f),
            )
            .unwrap();
        }
        Self { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_trialflow"));
        c.current_dir(self.dir.path())
            .args(args)
            .env_remove("TRIALFLOW_PSEUDONYM_KEY");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// [`Project::run`] with a pseudonymization key in the environment, as the example configs (which carry
    /// no development key) need.
    pub fn run_keyed(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .env("TRIALFLOW_PSEUDONYM_KEY", TEST_KEY)
            .output()
            .unwrap()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The newest `reports/<run>/` folder of the lake at `lake_rel` (a run that analysed writes one).
    pub fn latest_report(&self, lake_rel: &str) -> PathBuf {
        let dir = self.path(lake_rel).join("reports");
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("analysis.json").exists())
            .max_by_key(|p| {
                std::fs::metadata(p.join("analysis.json"))
                    .unwrap()
                    .modified()
                    .unwrap()
            })
            .expect("no report folder")
    }

    pub fn report_json(&self, lake_rel: &str) -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(self.latest_report(lake_rel).join("analysis.json")).unwrap(),
        )
        .unwrap()
    }

    pub fn read_json(&self, rel: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path(rel)).unwrap()).unwrap()
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running `trialflow serve` on an ephemeral port.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(p: &Project, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--port", "0"];
        args.extend(extra);
        let (child, port) = trialflow_testkit::spawn_announced(p.cmd(&args));
        Self { child, port }
    }

    /// A server started elsewhere (its process is the caller's), listening on `port`.
    pub fn attach(port: u16) -> Self {
        let child = Command::new("true").spawn().unwrap();
        Self { child, port }
    }

    /// Sends one request and returns (status, body).
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, body)
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record batch of a Parquet file.
pub fn parquet_batches(path: &Path) -> Vec<arrow::array::RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A numeric column of every batch, as f32.
pub fn f32_column(batches: &[arrow::array::RecordBatch], name: &str) -> Vec<f32> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"));
            let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Float32).unwrap();
            c.as_any()
                .downcast_ref::<arrow::array::Float32Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}
