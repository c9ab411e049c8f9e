//! Storage roots (`storage.lake`, `storage.models`, sources) as `object_store` stores.
//!
//! Every read and write of the pipeline goes through [`Storage`]; local disk is just the `file://` backend.
//! Writes are whole-object puts: `object_store` stages local files and renames them into place, and object
//! stores publish an object only when its upload completes, so a reader never sees half a file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};

/// A storage root: an object store plus a prefix inside it.
#[derive(Clone)]
pub struct Storage {
    url: String,
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("url", &self.url).finish()
    }
}

/// One object under a storage root, its path relative to that root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub e_tag: Option<String>,
    pub last_modified: String,
}

/// Resolves `file://relative/dir`, `file:///abs/dir` or a bare path to an absolute local path.
/// Relative paths are relative to the working directory, as on a shell.
pub fn local_path_of(url: &str) -> Option<PathBuf> {
    let rest = if let Some(rest) = url.strip_prefix("file://") {
        rest
    } else if url.contains("://") {
        return None;
    } else {
        url
    };
    let p = Path::new(rest);
    Some(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

impl Storage {
    /// Opens a storage root: `file://…` (or a bare path), `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (also `abfs://`, `azure://`), or `http(s)://…` (read-only WebDAV-style).
    /// Credentials, endpoints and options come from each cloud's standard environment variables
    /// (`AWS_*` — e.g. `AWS_ENDPOINT`, `AWS_ALLOW_HTTP` for an S3-compatible server —, `GOOGLE_*`,
    /// `AZURE_*`), as object_store's `from_env` builders read them.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &crate::config::StorageClientConfig::default())
    }

    /// [`Storage::open`] with the configured timeouts and retries for object stores.
    pub fn open_with(url: &str, client: &crate::config::StorageClientConfig) -> Result<Self> {
        let Some(root) = local_path_of(url) else {
            return Self::open_cloud(url, client);
        };
        std::fs::create_dir_all(&root).map_err(|e| {
            Error::infra(
                root.display().to_string(),
                format!("cannot create storage root: {e}"),
            )
        })?;
        let store = LocalFileSystem::new_with_prefix(&root).map_err(|source| Error::Storage {
            location: url.to_string(),
            source,
        })?;
        Ok(Self {
            url: url.to_string(),
            store: Arc::new(store),
            local_root: Some(root),
        })
    }

    fn open_cloud(url: &str, client: &crate::config::StorageClientConfig) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::config("storage", url, format!("not a URL: {e}")))?;
        let secs = std::time::Duration::from_secs;
        // Set key by key: replacing the builders' client options would drop what `from_env` read
        // (e.g. AWS_ALLOW_HTTP).
        use object_store::ClientConfigKey as K;
        let timeouts = [
            (K::Timeout, format!("{}s", client.timeout_seconds)),
            (
                K::ConnectTimeout,
                format!("{}s", client.connect_timeout_seconds),
            ),
        ];
        let retry = object_store::RetryConfig {
            max_retries: client.retries,
            retry_timeout: secs(client.retry_timeout_seconds),
            ..Default::default()
        };
        let bad = |e: object_store::Error| Error::Storage {
            location: url.to_string(),
            source: e,
        };
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match parsed.scheme() {
            "s3" | "s3a" => {
                let builder = timeouts
                    .iter()
                    .fold(
                        object_store::aws::AmazonS3Builder::from_env(),
                        |b, (k, v)| {
                            b.with_config(object_store::aws::AmazonS3ConfigKey::Client(*k), v)
                        },
                    )
                    .with_retry(retry)
                    .with_url(url);
                let builder = if client.s3_checksum_sha256 {
                    builder.with_checksum_algorithm(object_store::aws::Checksum::SHA256)
                } else {
                    builder
                };
                (
                    Arc::new(builder.build().map_err(bad)?),
                    parsed.path().to_string(),
                )
            }
            "gs" => (
                Arc::new(
                    timeouts
                        .iter()
                        .fold(
                            object_store::gcp::GoogleCloudStorageBuilder::from_env(),
                            |b, (k, v)| {
                                b.with_config(object_store::gcp::GoogleConfigKey::Client(*k), v)
                            },
                        )
                        .with_retry(retry)
                        .with_url(url)
                        .build()
                        .map_err(bad)?,
                ),
                parsed.path().to_string(),
            ),
            "az" | "adl" | "azure" | "abfs" | "abfss" => (
                Arc::new(
                    timeouts
                        .iter()
                        .fold(
                            object_store::azure::MicrosoftAzureBuilder::from_env(),
                            |b, (k, v)| {
                                b.with_config(object_store::azure::AzureConfigKey::Client(*k), v)
                            },
                        )
                        .with_retry(retry)
                        .with_url(url)
                        .build()
                        .map_err(bad)?,
                ),
                parsed.path().to_string(),
            ),
            "http" | "https" => {
                let base = format!("{}://{}", parsed.scheme(), parsed.authority());
                (
                    Arc::new(
                        object_store::http::HttpBuilder::new()
                            .with_url(base)
                            .with_client_options(
                                object_store::ClientOptions::new()
                                    .with_allow_http(true)
                                    .with_timeout(secs(client.timeout_seconds))
                                    .with_connect_timeout(secs(client.connect_timeout_seconds)),
                            )
                            .with_retry(retry)
                            .build()
                            .map_err(bad)?,
                    ),
                    parsed.path().to_string(),
                )
            }
            other => {
                return Err(Error::config(
                    "storage",
                    url,
                    format!(
                        "the `{other}://` scheme is not supported (expected file, s3, gs, az, abfs, http or https)"
                    ),
                ));
            }
        };
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            store
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                store,
                ObjectPath::from(prefix),
            ))
        };
        Ok(Self {
            url: url.to_string(),
            store,
            local_root: None,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The same root with every object access recorded, all through the object store (a local root is then
    /// read like a remote one, so that no access bypasses the record).
    pub fn recording(&self) -> (Self, Arc<crate::recording::Recorder>) {
        let recorder = Arc::new(crate::recording::Recorder::default());
        let store = crate::recording::RecordingStore {
            inner: self.store.clone(),
            recorder: recorder.clone(),
        };
        (
            Self {
                url: self.url.clone(),
                store: Arc::new(store),
                local_root: None,
            },
            recorder,
        )
    }

    /// The store itself, for engines (DataFusion) that register it under a URL of their own.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The local directory behind a `file://` root (used for the run lock).
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// A human-readable location of `rel` for messages and summaries.
    pub fn display(&self, rel: &str) -> String {
        match &self.local_root {
            Some(root) => root.join(rel).display().to_string(),
            None => format!("{}/{}", self.url.trim_end_matches('/'), rel),
        }
    }

    pub(crate) fn path(&self, rel: &str) -> Result<ObjectPath> {
        ObjectPath::parse(rel)
            .map_err(|e| Error::config("storage", rel, format!("invalid object path: {e}")))
    }

    fn err(&self, rel: &str, source: object_store::Error) -> Error {
        Error::Storage {
            location: self.display(rel),
            source,
        }
    }

    pub async fn get(&self, rel: &str) -> Result<Bytes> {
        let path = self.path(rel)?;
        let res = self.store.get(&path).await.map_err(|e| self.err(rel, e))?;
        res.bytes().await.map_err(|e| self.err(rel, e))
    }

    /// Bytes `range` of `rel`; an answer of another length than asked is an error.
    pub async fn get_range(&self, rel: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        let path = self.path(rel)?;
        let want = range.end.saturating_sub(range.start);
        let bytes = self
            .store
            .get_range(&path, range)
            .await
            .map_err(|e| self.err(rel, e))?;
        if bytes.len() as u64 != want {
            return Err(Error::infra(
                self.display(rel),
                format!("asked for {want} bytes, got {}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// A blocking `Read` over `rel`: the file itself on local disk, else fed by a task that streams the object
    /// (a few chunks in flight, so memory does not grow with the object). Read it on a blocking thread
    /// (`spawn_blocking`), never in async code.
    pub async fn blocking_reader(&self, rel: &str) -> Result<ObjectReader> {
        let path = self.path(rel)?;
        if let Some(root) = &self.local_root {
            // Local disk: read the file itself (object_store streams it in 8 KiB chunks, each a task hand-off).
            let file = std::fs::File::open(root.join(path.as_ref()))
                .map_err(|e| Error::infra(self.display(rel), format!("cannot open: {e}")))?;
            return Ok(ObjectReader::Local(file));
        }
        let res = self.store.get(&path).await.map_err(|e| self.err(rel, e))?;
        let mut stream = res.into_stream();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let location = self.display(rel);
        tokio::spawn(async move {
            while let Some(chunk) = stream.next().await {
                let item = chunk.map_err(|e| std::io::Error::other(format!("{location}: {e}")));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(ObjectReader::Streamed {
            rx,
            current: Bytes::new(),
        })
    }

    /// The sha256 of `rel`'s bytes, hex encoded, read a megabyte at a time: memory does not grow with the
    /// object (the pipeline fingerprints tables of gigabytes).
    pub async fn sha256_hex(&self, rel: &str) -> Result<String> {
        use sha2::Digest;
        use std::io::Read;
        let mut reader = self.blocking_reader(rel).await?;
        let location = self.display(rel);
        tokio::task::spawn_blocking(move || {
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return Ok(hex::encode(hasher.finalize())),
                    Ok(n) => hasher.update(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::infra(location, format!("reading: {e}"))),
                }
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("hashing {}: {e}", self.display(rel))))?
    }

    /// `Ok(None)` when the object does not exist.
    pub async fn get_opt(&self, rel: &str) -> Result<Option<Bytes>> {
        match self.get(rel).await {
            Ok(b) => Ok(Some(b)),
            Err(Error::Storage {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Atomic whole-object write.
    pub async fn put(&self, rel: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let path = self.path(rel)?;
        self.store
            .put(&path, PutPayload::from_bytes(bytes.into()))
            .await
            .map_err(|e| self.err(rel, e))?;
        Ok(())
    }

    pub async fn put_json<T: serde::Serialize>(&self, rel: &str, value: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(Error::bug)?;
        bytes.push(b'\n');
        self.put(rel, bytes).await
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, rel: &str) -> Result<T> {
        let bytes = self.get(rel).await?;
        crate::contracts::parse(&self.display(rel), &bytes)
    }

    pub async fn head(&self, rel: &str) -> Result<Option<Entry>> {
        let path = self.path(rel)?;
        match self.store.head(&path).await {
            // object_store 0.13's PrefixStore answers a head with the inner store's full location (its
            // get_opts does not strip the prefix, as list does): the path asked for is the one to keep
            Ok(meta) => Ok(Some(Entry {
                path: rel.to_string(),
                ..entry(meta)
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Every object under `prefix` (recursively), sorted by path. A `prefix` that names an object (no
    /// trailing `/`) lists just that object.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        if !prefix.is_empty()
            && !prefix.ends_with('/')
            && let Some(e) = self.head(prefix).await?
        {
            return Ok(vec![e]);
        }
        let p = if prefix.is_empty() {
            None
        } else {
            Some(self.path(prefix)?)
        };
        let mut out: Vec<Entry> = self
            .store
            .list(p.as_ref())
            .map_ok(entry)
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes staging files (`name#123`) that a killed writer left in a local root. They are invisible to
    /// listings already; this only reclaims the space. Call it while holding the run lock.
    pub fn sweep_staged(&self) -> Result<usize> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let mut removed = 0;
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::infra(
                        dir.display().to_string(),
                        format!("listing: {e}"),
                    ));
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let staged = name.rsplit_once('#').is_some_and(|(_, suffix)| {
                    !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
                });
                if staged && std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Moves `from` to `to` (a rename on local disk, copy + delete on object stores), replacing `to`.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (self.path(from)?, self.path(to)?);
        self.store
            .rename(&a, &b)
            .await
            .map_err(|e| self.err(from, e))
    }

    /// Writes `rel` only if no object is there: `Ok(false)` when one already is. The primitive behind
    /// locks that must hold across machines (local disk, S3, GCS and Azure support it).
    pub async fn create(&self, rel: &str, bytes: impl Into<Bytes>) -> Result<bool> {
        let path = self.path(rel)?;
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from_bytes(bytes.into()), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    pub async fn delete(&self, rel: &str) -> Result<()> {
        let path = self.path(rel)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(rel, e)),
        }
    }
}

/// See [`Storage::blocking_reader`].
pub enum ObjectReader {
    Local(std::fs::File),
    Streamed {
        rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
        current: Bytes,
    },
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (rx, current) = match self {
            ObjectReader::Local(f) => return f.read(buf),
            ObjectReader::Streamed { rx, current } => (rx, current),
        };
        while current.is_empty() {
            match rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => *current = chunk?,
            }
        }
        let n = buf.len().min(current.len());
        buf[..n].copy_from_slice(&current.split_to(n));
        Ok(n)
    }
}

fn entry(meta: ObjectMeta) -> Entry {
    Entry {
        path: meta.location.to_string(),
        size: meta.size,
        e_tag: meta.e_tag,
        last_modified: meta.last_modified.to_rfc3339(),
    }
}

/// Splits `dir/sub/*.csv` into the directory before the first glob character and the remaining pattern.
pub fn split_glob(path: &str) -> (String, Option<String>) {
    let Some(first) = path.find(['*', '?', '[', '{']) else {
        return (path.to_string(), None);
    };
    let cut = path[..first].rfind('/').map(|i| i + 1).unwrap_or(0);
    (
        path[..cut].trim_end_matches('/').to_string(),
        Some(path[cut..].to_string()),
    )
}

/// Files under `dir` whose path relative to `dir` matches `pattern`, sorted.
pub fn glob_local(dir: &Path, pattern: &str) -> std::io::Result<Vec<PathBuf>> {
    let matcher = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
        .compile_matcher();
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir)
                && matcher.is_match(rel)
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        s.put("a/b.txt", Bytes::from_static(b"hi")).await.unwrap();
        assert_eq!(&s.get("a/b.txt").await.unwrap()[..], b"hi");
        assert!(s.get_opt("a/missing").await.unwrap().is_none());
        let l = s.list("a").await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].path, "a/b.txt");
        assert_eq!(l[0].size, 2);
        assert_eq!(
            s.list("a/b.txt").await.unwrap(),
            l,
            "a prefix naming an object lists that object"
        );
        // a writer killed mid-put leaves `name#N`: invisible to listings, removed by the sweep
        std::fs::write(dir.path().join("a/c.txt#17"), b"half").unwrap();
        assert_eq!(s.list("a").await.unwrap().len(), 1);
        assert_eq!(s.sweep_staged().unwrap(), 1);
        assert!(!dir.path().join("a/c.txt#17").exists());
    }

    #[tokio::test]
    async fn an_object_hashed_in_chunks_has_the_hash_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        // Over two of the megabyte reads, and not a multiple of one.
        let bytes: Vec<u8> = (0..(5u32 << 19) + 7)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        s.put("t/part-0.parquet", bytes.clone()).await.unwrap();
        assert_eq!(
            s.sha256_hex("t/part-0.parquet").await.unwrap(),
            crate::fingerprint::sha256_hex(&bytes)
        );
        assert!(s.sha256_hex("t/missing").await.is_err());
    }

    #[test]
    fn an_unknown_scheme_is_a_config_error_naming_the_url() {
        let e = Storage::open("ftp://host/lake").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(e.to_string().contains("ftp://host/lake"), "{e}");
        assert!(
            Storage::open("s3://bucket/lake").is_ok(),
            "S3 roots open lazily"
        );
    }
}
