//! Ingestion: source files → the lake's raw zone as immutable, content-addressed copies
//! (`raw/<source>/<sha256>.csv`), a manifest line per new object (`raw/_manifest.jsonl`) and the current
//! source set (`raw/_current.json`) that the clean stage reads.
//!
//! Invariant: nothing here parses values; the schema check reads the header only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use trialflow_core::config::Config;
use trialflow_core::fingerprint::sha256_hex;
use trialflow_core::storage::{glob_local, local_path_of, split_glob};
use trialflow_core::{Error, Result, Storage};

pub use trialflow_core::lake::{Current, CurrentObject};
use trialflow_core::lake::{RAW_CURRENT as CURRENT, RAW_MANIFEST as MANIFEST};

/// A file a source pattern matches, as listed (cheap: no content read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    pub source: String,
    pub url: String,
    pub size: u64,
    pub modified: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestLine {
    pub source: String,
    pub url: String,
    pub last_modified: String,
    pub size: u64,
    pub sha256: String,
    pub rows: u64,
    pub object: String,
    pub ingested_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    New,
    Changed,
    Unchanged,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileReport {
    pub source: String,
    pub url: String,
    pub change: Change,
    pub rows: u64,
    pub bytes: u64,
    pub object: String,
    /// Columns present in the file that the dataset contract does not use (kept in the raw copy).
    pub extra_columns: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestReport {
    pub files: Vec<FileReport>,
    pub copied: usize,
}

fn local_files(cfg: &Config) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for (i, s) in cfg.dataset.sources.iter().enumerate() {
        let key = format!("dataset.sources[{i}].url");
        let path = local_path_of(&s.url).ok_or_else(|| {
            Error::config(
                &cfg.source_file,
                &key,
                "only file:// sources are supported by this build",
            )
        })?;
        let (dir, pattern) = split_glob(&path.display().to_string());
        let files = match pattern {
            None => vec![PathBuf::from(&dir)],
            Some(p) => glob_local(std::path::Path::new(&dir), &p)
                .map_err(|e| Error::infra(&dir, format!("listing source directory: {e}")))?,
        };
        if files.is_empty() || !files.iter().all(|f| f.is_file()) {
            return Err(Error::config(
                &cfg.source_file,
                key,
                format!("no file matches `{}`", path.display()),
            ));
        }
        out.extend(files.into_iter().map(|f| (s.name.clone(), f)));
    }
    Ok(out)
}

/// Lists the source files (name, size, modification time): the ingest task's cheap fingerprint material,
/// re-checked on every run so that new or changed data are never missed.
pub fn list_sources(cfg: &Config) -> Result<Vec<Listed>> {
    local_files(cfg)?
        .into_iter()
        .map(|(source, path)| {
            let meta = std::fs::metadata(&path)
                .map_err(|e| Error::infra(path.display().to_string(), format!("stat: {e}")))?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos().to_string())
                .unwrap_or_default();
            Ok(Listed {
                source,
                url: format!("file://{}", path.display()),
                size: meta.len(),
                modified,
            })
        })
        .collect()
}

/// Reads the manifest, tolerating nothing: a corrupt line is reported with its line number.
pub async fn read_manifest(lake: &Storage) -> Result<Vec<ManifestLine>> {
    Ok(load_manifest(lake).await?.0)
}

/// The parsed manifest and its bytes (kept to append to without a second read).
async fn load_manifest(lake: &Storage) -> Result<(Vec<ManifestLine>, Vec<u8>)> {
    let Some(bytes) = lake.get_opt(MANIFEST).await? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::bad_data(
                    format!("{}:{}", lake.display(MANIFEST), i + 1),
                    format!("not a manifest line: {e}"),
                )
            })
        })
        .collect::<Result<_>>()?;
    Ok((lines, bytes.to_vec()))
}

/// Header check against the contract; returns the extra columns. Counts data records (not lines, so quoted
/// newlines count once).
fn inspect_csv(url: &str, bytes: &[u8], required: &[String]) -> Result<(u64, Vec<String>)> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::bad_data(format!("{url}:1"), format!("unreadable CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    for col in required {
        if !headers.iter().any(|h| h == col) {
            return Err(Error::bad_data(
                url,
                format!(
                    "required column `{col}` is missing (the header has {} columns)",
                    headers.len()
                ),
            ));
        }
    }
    let extra = headers
        .iter()
        .filter(|h| !required.contains(h))
        .cloned()
        .collect();
    let mut rows = 0u64;
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => rows += 1,
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Err(Error::bad_data(
                    format!("{url}:{line}"),
                    format!("unreadable CSV: {e}"),
                ));
            }
        }
    }
    Ok((rows, extra))
}

/// Copies new or changed source files into the raw zone. With `dry_run`, reports what would be copied.
pub async fn ingest(cfg: &Config, lake: &Storage, dry_run: bool) -> Result<IngestReport> {
    let (manifest, mut manifest_bytes) = load_manifest(lake).await?;
    let mut latest: BTreeMap<&str, &ManifestLine> = BTreeMap::new();
    for m in &manifest {
        latest.insert(m.url.as_str(), m);
    }
    let required = cfg.source_columns();
    let mut files = Vec::new();
    let mut new_lines = Vec::new();
    let mut current = Current::default();
    for (source, path) in local_files(cfg)? {
        let url = format!("file://{}", path.display());
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| Error::infra(&url, format!("read: {e}")))?;
        let sha = sha256_hex(&bytes);
        let (rows, extra_columns) = inspect_csv(&url, &bytes, &required)?;
        let object = format!("raw/{source}/{sha}.csv");
        let change = match latest.get(url.as_str()) {
            Some(m) if m.sha256 == sha => Change::Unchanged,
            Some(_) => Change::Changed,
            None => Change::New,
        };
        if !dry_run && change != Change::Unchanged {
            // Content-addressed: an object that exists already holds exactly these bytes.
            if lake.head(&object).await?.is_none() {
                lake.put(&object, bytes.clone()).await?;
            }
            let modified = std::fs::metadata(&path)
                .ok()
                .and_then(|m| m.modified().ok())
                .map(|t| {
                    time::OffsetDateTime::from(t)
                        .format(&time::format_description::well_known::Rfc3339)
                })
                .and_then(|r| r.ok())
                .unwrap_or_default();
            new_lines.push(ManifestLine {
                source: source.clone(),
                url: url.clone(),
                last_modified: modified,
                size: bytes.len() as u64,
                sha256: sha.clone(),
                rows,
                object: object.clone(),
                ingested_at: time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            });
        }
        tracing::info!(source = %source, url = %url, change = ?change, rows, "source file");
        current.objects.push(CurrentObject {
            source: source.clone(),
            url: url.clone(),
            object: object.clone(),
            sha256: sha,
            rows,
        });
        files.push(FileReport {
            source,
            url,
            change,
            rows,
            bytes: bytes.len() as u64,
            object,
            extra_columns,
        });
    }
    let copied = new_lines.len();
    if !dry_run {
        if !new_lines.is_empty() {
            for l in &new_lines {
                manifest_bytes
                    .extend(serde_json::to_vec(l).map_err(|e| Error::Internal(e.to_string()))?);
                manifest_bytes.push(b'\n');
            }
            lake.put(MANIFEST, manifest_bytes).await?;
        }
        // Rewriting identical bytes would only churn the object's etag for the runner's hash cache.
        let mut current_bytes =
            serde_json::to_vec_pretty(&current).map_err(|e| Error::Internal(e.to_string()))?;
        current_bytes.push(b'\n');
        if lake.get_opt(CURRENT).await?.as_deref() != Some(current_bytes.as_slice()) {
            lake.put(CURRENT, current_bytes).await?;
        }
    }
    Ok(IngestReport { files, copied })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_required_column_names_source_and_column() {
        let e = inspect_csv("file:///x.csv", b"a,b\n1,2\n", &["a".into(), "c".into()]).unwrap_err();
        assert_eq!(e.kind(), trialflow_core::ErrorKind::BadData);
        let m = e.to_string();
        assert!(m.contains("file:///x.csv") && m.contains("`c`"), "{m}");
    }

    #[test]
    fn counts_records_not_lines_and_reports_extras() {
        let (rows, extra) = inspect_csv(
            "u",
            b"\xef\xbb\xbfa,b,z\r\n1,\"two\nlines\",3\r\n4,5,6\r\n",
            &["a".into()],
        )
        .unwrap();
        assert_eq!(rows, 2);
        assert_eq!(extra, vec!["b".to_string(), "z".to_string()]);
    }
}
