//! Ingestion: source files → the lake's raw zone as immutable, content-addressed copies
//! (`raw/<source>/<blake3>.csv`), a manifest line per new object (`raw/_manifest.jsonl`, with the copy's
//! SHA-256) and the current source set (`raw/_current.json`) that the clean stage reads.
//!
//! Invariant: nothing here parses values; the schema check reads the header only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use blake3::hazmat::{
    ChainingValue, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use serde::{Deserialize, Serialize};
use trialflow_core::config::Config;
use trialflow_core::storage::{Entry, local_path_of, split_glob};
use trialflow_core::{Error, Result, Storage};

mod scan;
mod task;

pub use scan::{Scanned, Scanner};
pub use task::TASKS;
pub use trialflow_core::lake::{Current, CurrentObject, SourceFormat};
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
    #[serde(default)]
    pub etag: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub rows: u64,
    pub object: String,
    pub ingested_at: String,
    /// Columns the contract does not use (kept in the raw copy).
    #[serde(default)]
    pub extra_columns: Vec<String>,
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

impl std::fmt::Display for FileReport {
    /// `new        s3://bucket/a.csv (3042 rows, 512000 bytes)`: what the commands print per file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let change = format!("{:?}", self.change).to_lowercase();
        write!(
            f,
            "{change:<10} {} ({} rows, {} bytes)",
            self.url, self.rows, self.bytes
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestReport {
    pub files: Vec<FileReport>,
    pub copied: usize,
}

/// Where one source's files live: a storage root, the folder to list under it, and the glob (relative to
/// that folder) the files must match; without a glob the URL names one object.
struct Located {
    store: Storage,
    /// `scheme://authority` (or the local folder) that object paths are relative to, for building URLs.
    root_url: String,
    folder: String,
    glob: Option<globset::GlobMatcher>,
}

fn locate(cfg: &Config, i: usize, url: &str) -> Result<Located> {
    let key = format!("dataset.sources[{i}].url");
    let glob = |pattern: &str| -> Result<globset::GlobMatcher> {
        Ok(globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::config(&cfg.source_file, &key, format!("bad glob: {e}")))?
            .compile_matcher())
    };
    if let Some(path) = local_path_of(url) {
        let (dir, pattern) = split_glob(&path.display().to_string());
        let (root, folder, glob) = match pattern {
            Some(p) => (PathBuf::from(&dir), String::new(), Some(glob(&p)?)),
            None => {
                let p = PathBuf::from(&dir);
                let parent = p.parent().map(PathBuf::from).unwrap_or_default();
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                (parent, name, None)
            }
        };
        if !root.is_dir() {
            return Err(Error::config(
                &cfg.source_file,
                key,
                format!("no file matches `{}` (no such folder)", path.display()),
            ));
        }
        let root_url = format!("file://{}", root.display());
        return Ok(Located {
            store: Storage::open_with(&root_url, &cfg.storage.client)?,
            root_url,
            folder,
            glob,
        });
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::config(&cfg.source_file, &key, format!("not a URL: {e}")))?;
    let root_url = format!("{}://{}", parsed.scheme(), parsed.authority());
    let path = parsed.path().trim_start_matches('/').to_string();
    let (folder, pattern) = split_glob(&path);
    if pattern.is_some() && matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::config(
            &cfg.source_file,
            key,
            "an http(s) source names one file: a web server cannot be listed for a glob",
        ));
    }
    Ok(Located {
        store: Storage::open_with(&root_url, &cfg.storage.client)?,
        root_url,
        folder,
        glob: pattern.as_deref().map(glob).transpose()?,
    })
}

/// One source object as listed, with where to read it.
struct Found {
    listed: Listed,
    format: SourceFormat,
    delimiter: u8,
    quote: u8,
    store: Storage,
    path: String,
    etag: Option<String>,
    last_modified: String,
}

async fn find(cfg: &Config) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for (i, s) in cfg.dataset.sources.iter().enumerate() {
        let loc = locate(cfg, i, &s.url)?;
        let entries = match &loc.glob {
            None => loc.store.head(&loc.folder).await?.into_iter().collect(),
            Some(g) => {
                let prefix = if loc.folder.is_empty() {
                    String::new()
                } else {
                    format!("{}/", loc.folder)
                };
                let mut v: Vec<_> = loc
                    .store
                    .list(&prefix)
                    .await?
                    .into_iter()
                    .filter(|e| g.is_match(e.path.strip_prefix(&prefix).unwrap_or(&e.path)))
                    .collect();
                v.sort_by(|a, b| a.path.cmp(&b.path));
                v
            }
        };
        if entries.is_empty() {
            return Err(Error::config(
                &cfg.source_file,
                format!("dataset.sources[{i}].url"),
                format!("no file matches `{}`", s.url),
            ));
        }
        for e in entries {
            let url = format!("{}/{}", loc.root_url.trim_end_matches('/'), e.path);
            if let Some(first) = out.iter().find(|f: &&Found| f.listed.url == url) {
                return Err(Error::config(
                    &cfg.source_file,
                    format!("dataset.sources[{i}].url"),
                    format!(
                        "`{url}` is also matched by source `{}`: its rows would be counted twice",
                        first.listed.source
                    ),
                ));
            }
            let format = s.format.resolve(&e.path).map_err(|m| {
                Error::config(&cfg.source_file, format!("dataset.sources[{i}].format"), m)
            })?;
            out.push(Found {
                format,
                delimiter: s.delimiter as u8,
                quote: s.quote as u8,
                listed: Listed {
                    source: s.name.clone(),
                    url,
                    size: e.size,
                    modified: e.e_tag.clone().unwrap_or_else(|| e.last_modified.clone()),
                },
                store: loc.store.clone(),
                path: e.path,
                etag: e.e_tag,
                last_modified: e.last_modified,
            });
        }
    }
    Ok(out)
}

/// Lists the source files (name, size, etag or modification time): the ingest task's cheap fingerprint
/// material, re-checked on every run so that new or changed data are never missed.
pub async fn list_sources(cfg: &Config) -> Result<Vec<Listed>> {
    Ok(find(cfg).await?.into_iter().map(|f| f.listed).collect())
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

/// What one read of a source's bytes learnt.
struct Streamed {
    sha256: String,
    /// BLAKE3 of the bytes, hex: the copy's name in the raw zone.
    address: String,
    size: u64,
    scanned: Scanned,
}

/// Streams a source object once: sha256, content address and size computed and records counted as the
/// bytes pass, the header checked against the contract, and (unless `dest` is `None`) the bytes written to
/// the lake with a multipart upload. Memory stays bounded by the chunk size whatever the file size.
async fn stream_object(
    found: &Found,
    required: &[String],
    lake: &Storage,
    dest: Option<&str>,
) -> Result<(Streamed, (u64, Option<String>))> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    let url = &found.listed.url;
    let src_err = |e: object_store::Error| Error::Storage {
        location: url.clone(),
        source: e,
    };
    let got = found
        .store
        .object_store()
        .get(&object_store::path::Path::from(found.path.as_str()))
        .await
        .map_err(src_err)?;
    // The version being read, as the store describes it on this same request path (listings may spell
    // etags differently from object requests).
    let read_meta = (got.meta.size, got.meta.e_tag.clone());
    // object_store reads local files in 8 KiB pieces, one blocking task each; a local source is read
    // directly in large chunks instead (the same bytes, an order of magnitude fewer steps).
    let mut stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>> =
        match found.store.local_root() {
            Some(root) => {
                drop(got);
                local_chunks(root.join(&found.path))
            }
            None => got.into_stream(),
        };
    let mut upload = match dest {
        Some(rel) => Some(object_store::WriteMultipart::new_with_chunk_size(
            lake.object_store()
                .put_multipart(&object_store::path::Path::from(rel))
                .await
                .map_err(|e| Error::Storage {
                    location: lake.display(rel),
                    source: e,
                })?,
            UPLOAD_PART_BYTES,
        )),
        None => None,
    };
    let sha256 = Hasher::start::<sha2::Sha256>();
    let address = Hasher::start::<blake3::Hasher>();
    let mut size = 0u64;
    let progress = trialflow_core::progress::Progress::new(
        format!(
            "ingest {}",
            found.path.rsplit('/').next().unwrap_or_default()
        ),
        read_meta.0,
        trialflow_core::progress::Unit::Bytes,
    );
    let mut scan = Scanner::new(found.format, url, required, found.delimiter, found.quote)?;
    let result: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(src_err)?;
            sha256.update(chunk.clone()).await?;
            address.update(chunk.clone()).await?;
            size += chunk.len() as u64;
            progress.set(size);
            scan.feed(&chunk)?;
            if let Some(w) = upload.as_mut() {
                // Backpressure: a bounded number of parts in flight (memory ≈ parts × part size).
                w.wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| Error::Storage {
                        location: lake.display(dest.unwrap_or_default()),
                        source: e,
                    })?;
                w.put(chunk.clone());
            }
        }
        Ok(())
    }
    .await;
    let (sha256, address) = (sha256.finish().await, address.finish().await);
    // Every check, the hashes included, before the upload completes: a failed run publishes nothing.
    let result = result.and_then(|()| {
        Ok(Streamed {
            sha256: sha256?,
            address: address?,
            size,
            scanned: scan.finish()?,
        })
    });
    let streamed = match (result, upload) {
        (Ok(s), Some(w)) => {
            finish_upload(w, lake, dest.unwrap_or_default(), size).await?;
            s
        }
        (Ok(s), None) => s,
        (Err(e), Some(w)) => {
            let _ = w.abort().await;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    Ok((streamed, read_meta))
}

/// Completes a multipart upload of `size` bytes to `rel`.
async fn finish_upload(
    w: object_store::WriteMultipart,
    lake: &Storage,
    rel: &str,
    size: u64,
) -> Result<()> {
    let Err(e) = w.finish().await else {
        return Ok(());
    };
    // A completion whose answer was lost (timed out, then retried against an upload the store had already
    // completed; object_store then aborts and reports the abort's 404) is an error although the object is
    // there. Trust the object when it is whole: its size is what was streamed. The first completion may still
    // be assembling the object on a loaded server, so look a few times (about 15 s in all) before calling the
    // copy failed.
    for wait_ms in [0u64, 250, 500, 1000, 2000, 4000, 8000] {
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        if matches!(lake.head(rel).await, Ok(Some(entry)) if entry.size == size) {
            tracing::warn!(object = %lake.display(rel), error = %e, "multipart completion reported an error but the object is complete; continuing");
            return Ok(());
        }
    }
    Err(Error::Storage {
        location: lake.display(rel),
        source: e,
    })
}

fn progress_of(url: &str, what: &str, size: u64) -> trialflow_core::progress::Progress {
    trialflow_core::progress::Progress::new(
        format!("{what} {}", url.rsplit('/').next().unwrap_or_default()),
        size,
        trialflow_core::progress::Unit::Bytes,
    )
}

/// What the first read of a local source learnt: its content address and size.
struct FirstRead {
    /// BLAKE3 of the bytes, hex.
    address: String,
    size: u64,
}

/// The first read of a local source: its content address (BLAKE3) and size, nothing else. The address is
/// what the upload must name before its first byte is sent, so this read is all the upload waits for: it
/// uses every core ([`blake3_of_file`]) and leaves the record scan to the second read, which waits on the
/// store anyway. BLAKE3 is the faster hash wherever it was measured: per GiB on one core, 0.5 s against
/// SHA-256's 0.8 s on an AMD VM with SHA-NI, 0.1 s against 0.5 s on an Intel one (docs/benchmarks.md).
async fn address_local(url: &str, path: PathBuf, expected_size: u64) -> Result<FirstRead> {
    let url_owned = url.to_string();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_ADDRESS_THREADS);
    tokio::task::spawn_blocking(move || {
        let progress = progress_of(&url_owned, "address", expected_size);
        blake3_of_file(&path, ADDRESS_BLOCK_BYTES, threads, &|done| {
            progress.set(done)
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("the hashing thread failed: {e}")))?
    .map(|(address, size)| FirstRead { address, size })
    .map_err(|e| address_error(url, e))
}

/// A failed first read as this crate reports it: a file cut shorter while it was read changed.
fn address_error(url: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return changed_while_read(url);
    }
    Error::Storage {
        location: url.to_string(),
        source: object_store::Error::Generic {
            store: "LocalFileSystem",
            source: e.into(),
        },
    }
}

/// Threads of [`blake3_of_file`] at most, one piece buffer each: 8 hash faster than a disk reads (BLAKE3 takes
/// about 0.5 s per GiB and core), and memory stays bounded on a machine with many cores.
const MAX_ADDRESS_THREADS: usize = 8;

/// Bytes per piece of [`blake3_of_file`]: a power of two of BLAKE3's 1 KiB chunks, so that the pieces at
/// multiples of it are whole subtrees of the file's hash tree.
const ADDRESS_BLOCK_BYTES: u64 = 4 << 20;

/// The BLAKE3 (hex) and size of the file at `path`, its `block`-byte pieces hashed on up to `threads`
/// threads, each piece as the subtree it is in BLAKE3's tree, then the subtrees merged: the same hash as one
/// pass (`update_rayon` without rayon). Each thread reads its own pieces, so the reads spread over the cores
/// too. A file cut shorter while it is read is an error; one that grows is hashed to the size it had at the
/// start, which its caller compares with the listing.
fn blake3_of_file(
    path: &std::path::Path,
    block: u64,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<(String, u64)> {
    use blake3::hazmat::HasherExt;
    use std::io::{Read, Seek};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    debug_assert!(block.is_power_of_two() && block >= blake3::CHUNK_LEN as u64);
    let size = std::fs::metadata(path)?.len();
    let pieces = usize::try_from(size.div_ceil(block)).unwrap_or(usize::MAX);
    if pieces <= 1 {
        let mut bytes = Vec::with_capacity(size as usize);
        std::fs::File::open(path)?
            .take(size)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 != size {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        return Ok((blake3::hash(&bytes).to_hex().to_string(), size));
    }
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let hash_pieces = || -> std::io::Result<Vec<(usize, ChainingValue)>> {
        let mut file = std::fs::File::open(path)?;
        let mut buf = vec![0u8; block as usize];
        let mut cvs = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= pieces {
                return Ok(cvs);
            }
            let start = i as u64 * block;
            let len = block.min(size - start) as usize;
            file.seek(std::io::SeekFrom::Start(start))?;
            file.read_exact(&mut buf[..len])?;
            let cv = blake3::Hasher::new()
                .set_input_offset(start)
                .update(&buf[..len])
                .finalize_non_root();
            cvs.push((i, cv));
            progress(done.fetch_add(len as u64, Ordering::Relaxed) + len as u64);
        }
    };
    let mut cvs: Vec<(usize, ChainingValue)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, pieces))
            .map(|_| scope.spawn(hash_pieces))
            .collect();
        let mut all = Vec::with_capacity(pieces);
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| std::io::Error::other("a hashing thread panicked"))??,
            );
        }
        Ok::<_, std::io::Error>(all)
    })?;
    cvs.sort_unstable_by_key(|(i, _)| *i);
    let cvs: Vec<ChainingValue> = cvs.into_iter().map(|(_, cv)| cv).collect();
    Ok((merged_root(&cvs, block, size).to_hex().to_string(), size))
}

/// The root hash of `len` bytes whose `block`-byte pieces have the chaining values `cvs` (at least two).
fn merged_root(cvs: &[ChainingValue], block: u64, len: u64) -> blake3::Hash {
    let (left, right) = split_subtree(cvs, block, len);
    merge_subtrees_root(&left, &right, Mode::Hash)
}

/// The chaining values of the two children of the subtree of `len` bytes whose pieces are `cvs`: the left
/// one takes the largest power of two of bytes under `len` (a whole number of pieces, as `block` is a power
/// of two), as BLAKE3's tree does.
fn split_subtree(cvs: &[ChainingValue], block: u64, len: u64) -> (ChainingValue, ChainingValue) {
    let left = left_subtree_len(len);
    let n = (left / block) as usize;
    (
        subtree(&cvs[..n], block, left),
        subtree(&cvs[n..], block, len - left),
    )
}

fn subtree(cvs: &[ChainingValue], block: u64, len: u64) -> ChainingValue {
    if let [one] = cvs {
        return *one;
    }
    let (left, right) = split_subtree(cvs, block, len);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// The second read of a local source whose `first` read gave its address: the record scan, and the SHA-256
/// the manifest records, taken while the bytes go (unless `upload` is `None`: the lake holds them already)
/// straight to the content address `object` in the lake. The second read's BLAKE3 must be the address: a
/// file rewritten since the first read no longer matches. A failed check or scan aborts the upload before it
/// completes, so no object ever holds bytes other than its address says, nor a file that failed its checks.
async fn second_read(
    url: &str,
    path: PathBuf,
    first: &FirstRead,
    mut scan: Scanner,
    upload: Option<(&Storage, &str)>,
) -> Result<(String, Scanned)> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    let mut writer = match upload {
        Some((lake, object)) => {
            let parts = lake
                .object_store()
                .put_multipart(&object_store::path::Path::from(object))
                .await
                .map_err(lake_error(lake, object))?;
            let w = object_store::WriteMultipart::new_with_chunk_size(parts, UPLOAD_PART_BYTES);
            Some((w, lake, object))
        }
        None => None,
    };
    let what = if upload.is_some() { "upload" } else { "scan" };
    let progress = progress_of(url, what, first.size);
    let mut stream = local_chunks(path);
    let sha256 = Hasher::start::<sha2::Sha256>();
    let mut address = blake3::Hasher::new();
    let mut read = 0u64;
    let streamed: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Storage {
                location: url.to_string(),
                source: e,
            })?;
            sha256.update(chunk.clone()).await?;
            address.update(&chunk);
            scan.feed(&chunk)?;
            read += chunk.len() as u64;
            progress.set(read);
            if let Some((w, lake, object)) = writer.as_mut() {
                w.wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(lake_error(lake, object))?;
                w.put(chunk);
            }
        }
        Ok(())
    }
    .await;
    let sha256 = sha256.finish().await;
    let unchanged = read == first.size && address.finalize().to_hex().as_str() == first.address;
    // Every check, the SHA-256 and the scan included, before the upload completes.
    let checked = streamed
        .and_then(|()| {
            if unchanged {
                Ok(())
            } else {
                Err(changed_while_read(url))
            }
        })
        .and_then(|()| Ok((sha256?, scan.finish()?)));
    match (checked, writer) {
        (Ok(read), Some((w, lake, object))) => {
            finish_upload(w, lake, object, first.size).await?;
            Ok(read)
        }
        (Ok(read), None) => Ok(read),
        (Err(e), Some((w, ..))) => {
            let _ = w.abort().await;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// An object store error about `object` in `lake`, as this crate reports it.
fn lake_error<'a>(
    lake: &'a Storage,
    object: &'a str,
) -> impl Fn(object_store::Error) -> Error + 'a {
    move |e| Error::Storage {
        location: lake.display(object),
        source: e,
    }
}

/// A hash [`Hasher`] can run.
trait Digest: Default + Send + 'static {
    fn update(&mut self, bytes: &[u8]);
    fn hex(self) -> String;
}

impl Digest for sha2::Sha256 {
    fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self, bytes);
    }
    fn hex(self) -> String {
        hex::encode(sha2::Digest::finalize(self))
    }
}

impl Digest for blake3::Hasher {
    fn update(&mut self, bytes: &[u8]) {
        blake3::Hasher::update(self, bytes);
    }
    fn hex(self) -> String {
        self.finalize().to_hex().to_string()
    }
}

/// A hash on a thread of its own, fed the chunks as they are read: the hashes and the record scan use the
/// cores at once instead of taking turns on one.
struct Hasher {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    done: tokio::task::JoinHandle<String>,
}

impl Hasher {
    fn start<D: Digest>() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
        let done = tokio::task::spawn_blocking(move || {
            let mut h = D::default();
            while let Some(chunk) = rx.blocking_recv() {
                h.update(&chunk);
            }
            h.hex()
        });
        Self { tx, done }
    }

    async fn update(&self, chunk: bytes::Bytes) -> Result<()> {
        self.tx
            .send(chunk)
            .await
            .map_err(|_| Error::Internal("the hashing thread stopped".into()))
    }

    async fn finish(self) -> Result<String> {
        drop(self.tx);
        self.done
            .await
            .map_err(|e| Error::Internal(format!("the hashing thread failed: {e}")))
    }
}

fn changed_while_read(url: &str) -> Error {
    Error::infra(
        url,
        "the file changed while it was being read; run again to ingest the new version",
    )
}

/// Multipart part size for raw copies.
const UPLOAD_PART_BYTES: usize = 8 << 20;
/// Parts uploading at once: object stores answer parts concurrently, so more in flight means more
/// throughput; memory stays near this many parts.
const PARTS_IN_FLIGHT: usize = 8;
/// Read size for local sources.
const LOCAL_READ_BYTES: usize = 4 << 20;
/// Chunks a local source's reader thread holds ready ahead of the consumer: the next read overlaps the
/// hashing, scanning or sending of the last one.
const LOCAL_READ_AHEAD: usize = 2;

/// A local file as a stream of [`LOCAL_READ_BYTES`] chunks, read on a blocking thread of its own straight
/// into each chunk's buffer (tokio's file reads go through a 2 MiB buffer of its own and one blocking task per
/// read). The thread stops when the stream is dropped.
fn local_chunks(
    path: PathBuf,
) -> futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>> {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(LOCAL_READ_AHEAD);
    tokio::task::spawn_blocking(move || read_chunks(&path, &tx));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
    .boxed()
}

/// The reader thread of [`local_chunks`]: sends each full chunk (the last one shorter), then ends the stream;
/// a read error is sent as the stream's last item.
fn read_chunks(
    path: &std::path::Path,
    tx: &tokio::sync::mpsc::Sender<object_store::Result<bytes::Bytes>>,
) {
    use std::io::Read;
    let err = |e: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {e}", path.display()).into(),
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(Err(err(e)));
            return;
        }
    };
    loop {
        let mut buf = Vec::with_capacity(LOCAL_READ_BYTES);
        let read = (&mut file)
            .take(LOCAL_READ_BYTES as u64)
            .read_to_end(&mut buf);
        let item = match read {
            Ok(0) => return,
            Ok(_) => Ok(bytes::Bytes::from(buf)),
            Err(e) => Err(err(e)),
        };
        let last = item.is_err();
        if tx.blocking_send(item).is_err() || last {
            return;
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Folder (under `raw/<source>/`) of copies whose content address is not known yet.
const STAGING: &str = "_staging";

/// The content-addressed raw copy of a source file, named by the BLAKE3 of its bytes (`address`, hex).
fn raw_object(source: &str, address: &str, format: SourceFormat) -> String {
    format!("raw/{source}/{address}.{}", format.name())
}

/// What copying a source in gave: its SHA-256, its copy in the raw zone, its size and record scan.
#[derive(Debug)]
struct Copied {
    sha256: String,
    object: String,
    size: u64,
    scanned: Scanned,
}

/// Streams `found` once; unless `staging` is `None` (dry run), publishes the copy under its content address
/// (a copy that exists already holds exactly these bytes). A source rewritten while it was read would give
/// a copy that matches neither version: refused, nothing published. A local file going to a lake in a bucket
/// takes [`copy_in_direct`] instead.
async fn copy_in(
    found: &Found,
    required: &[String],
    lake: &Storage,
    staging: Option<&str>,
) -> Result<Copied> {
    if let (Some(_), Some(root), None) = (staging, found.store.local_root(), lake.local_root()) {
        return copy_in_direct(found, required, lake, root.join(&found.path)).await;
    }
    let (streamed, read_meta) = stream_object(found, required, lake, staging).await?;
    let after = found.store.head(&found.path).await?;
    if after.is_none_or(|a| (a.size, a.e_tag) != read_meta) || streamed.size != read_meta.0 {
        if let Some(staging) = staging {
            lake.delete(staging).await?;
        }
        return Err(changed_while_read(&found.listed.url));
    }
    let object = raw_object(&found.listed.source, &streamed.address, found.format);
    if let Some(staging) = staging {
        if lake.head(&object).await?.is_none() {
            lake.rename(staging, &object).await?;
        } else {
            lake.delete(staging).await?;
        }
    }
    Ok(Copied {
        sha256: streamed.sha256,
        object,
        size: streamed.size,
        scanned: streamed.scanned,
    })
}

/// A local file going to a lake in a bucket: addressed first (one read on every core, all the upload has
/// to wait for), then, unless the lake holds its content address already, uploaded straight there, scanned
/// and its SHA-256 taken on the way. A second local read instead of the store's server-side copy of the
/// whole object from a staging name.
async fn copy_in_direct(
    found: &Found,
    required: &[String],
    lake: &Storage,
    path: PathBuf,
) -> Result<Copied> {
    let url = &found.listed.url;
    let version = |e: Option<Entry>| e.map(|e| (e.size, e.e_tag));
    let before = version(found.store.head(&found.path).await?);
    // Made first so that a bad delimiter or quote fails before any read.
    let scan = Scanner::new(found.format, url, required, found.delimiter, found.quote)?;
    let first = address_local(url, path.clone(), found.listed.size).await?;
    let after = version(found.store.head(&found.path).await?);
    if before.is_none() || after != before || before.is_some_and(|b| b.0 != first.size) {
        return Err(changed_while_read(url));
    }
    let object = raw_object(&found.listed.source, &first.address, found.format);
    let upload = lake.head(&object).await?.is_none();
    let (sha256, scanned) =
        second_read(url, path, &first, scan, upload.then_some((lake, &object))).await?;
    Ok(Copied {
        sha256,
        object,
        size: first.size,
        scanned,
    })
}

/// Copies new or changed source files into the raw zone. With `dry_run`, reports what would be copied.
/// A source whose size and etag (or modification time) match its last manifest line is unchanged without
/// being read; any other is streamed once (hashed, scanned and, unless dry, copied).
pub async fn ingest(cfg: &Config, lake: &Storage, dry_run: bool) -> Result<IngestReport> {
    let (manifest, mut manifest_bytes) = load_manifest(lake).await?;
    if !dry_run {
        // Copies a killed run completed but never renamed: ingest runs under the lake's lock, so any
        // staging object is an orphan.
        for src in &cfg.dataset.sources {
            for e in lake.list(&format!("raw/{}/{STAGING}/", src.name)).await? {
                lake.delete(&e.path).await?;
            }
        }
    }
    let mut latest: BTreeMap<&str, &ManifestLine> = BTreeMap::new();
    for m in &manifest {
        latest.insert(m.url.as_str(), m);
    }
    let mut files = Vec::new();
    let mut new_lines = Vec::new();
    let mut current = Current::default();
    for found in find(cfg).await? {
        let url = found.listed.url.clone();
        let source = found.listed.source.clone();
        let previous = latest.get(url.as_str()).copied();
        let same_listing = previous.is_some_and(|m| {
            m.size == found.listed.size
                && m.etag == found.etag
                && m.last_modified == found.last_modified
        });
        let (sha, object, size, rows, extra_columns, change) = match previous {
            Some(m) if same_listing => (
                m.sha256.clone(),
                m.object.clone(),
                m.size,
                m.rows,
                m.extra_columns.clone(),
                Change::Unchanged,
            ),
            _ => {
                let staging = format!(
                    "raw/{source}/{STAGING}/{}-{}.{}",
                    std::process::id(),
                    files.len(),
                    found.format.name()
                );
                let Copied {
                    sha256: sha,
                    object,
                    size,
                    scanned: scan,
                } = copy_in(
                    &found,
                    &cfg.required_columns(&source),
                    lake,
                    (!dry_run).then_some(staging.as_str()),
                )
                .await?;
                let change = match previous {
                    Some(m) if m.sha256 == sha => Change::Unchanged,
                    Some(_) => Change::Changed,
                    None => Change::New,
                };
                // A touched but identical source gets a line too, so the next run need not read it.
                if !dry_run && (change != Change::Unchanged || !same_listing) {
                    new_lines.push(ManifestLine {
                        source: source.clone(),
                        url: url.clone(),
                        last_modified: found.last_modified.clone(),
                        etag: found.etag.clone(),
                        size,
                        sha256: sha.clone(),
                        rows: scan.rows,
                        object: object.clone(),
                        ingested_at: now_rfc3339(),
                        extra_columns: scan.extra_columns.clone(),
                    });
                }
                (sha, object, size, scan.rows, scan.extra_columns, change)
            }
        };
        // (files without records, a header alone, may well be alike)
        if let Some(twin) = current.objects.iter().find(|o| o.sha256 == sha && rows > 0) {
            return Err(Error::bad_data(
                &url,
                format!(
                    "the same bytes as `{}` (sha256 {sha}): one file reached twice, its rows would be counted twice; remove one of them from the sources",
                    twin.url
                ),
            ));
        }
        tracing::info!(source = %source, url = %url, change = ?change, rows, "source file");
        current.objects.push(CurrentObject {
            source: source.clone(),
            url: url.clone(),
            object: object.clone(),
            format: found.format,
            delimiter: char::from(found.delimiter),
            quote: char::from(found.quote),
            sha256: sha,
            rows,
        });
        files.push(FileReport {
            source,
            url,
            change,
            rows,
            bytes: size,
            object,
            extra_columns,
        });
    }
    let copied = files
        .iter()
        .filter(|f| f.change != Change::Unchanged)
        .count();
    if !dry_run {
        if !new_lines.is_empty() {
            for l in &new_lines {
                manifest_bytes.extend(serde_json::to_vec(l).map_err(Error::bug)?);
                manifest_bytes.push(b'\n');
            }
            lake.put(MANIFEST, manifest_bytes).await?;
        }
        // Rewriting identical bytes would only churn the object's etag for the runner's hash cache.
        let mut current_bytes = serde_json::to_vec_pretty(&current).map_err(Error::bug)?;
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
    use sha2::Digest;

    #[tokio::test]
    async fn a_local_file_streams_as_full_chunks_then_its_tail() {
        use futures::StreamExt;
        let bytes: Vec<u8> = (0..2 * LOCAL_READ_BYTES + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let (_dir, _lake, file) = lake_and_file(&bytes);
        let chunks: Vec<bytes::Bytes> = local_chunks(file).map(|c| c.unwrap()).collect().await;
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [LOCAL_READ_BYTES, LOCAL_READ_BYTES, 12_345]);
        assert!(
            chunks.concat() == bytes,
            "the chunks are not the file's bytes"
        );
    }

    #[tokio::test]
    async fn a_local_file_that_cannot_be_read_ends_its_stream_with_an_error_naming_it() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.csv");
        let items: Vec<_> = local_chunks(missing.clone()).collect().await;
        assert_eq!(items.len(), 1);
        let e = items.into_iter().next().unwrap().unwrap_err().to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
    }

    fn lake_and_file(bytes: &[u8]) -> (tempfile::TempDir, Storage, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Storage::open(dir.path().join("lake").to_str().unwrap()).unwrap();
        let file = dir.path().join("source.csv");
        std::fs::write(&file, bytes).unwrap();
        (dir, lake, file)
    }

    /// `bytes` as a local source file going to the lake (local here; the direct path is the same): the
    /// result, the lake and the temporary folder that holds both.
    async fn direct_copy(
        bytes: &[u8],
        required: &[&str],
    ) -> (Result<Copied>, Storage, tempfile::TempDir) {
        let (dir, lake, _) = lake_and_file(bytes);
        let result = direct_copy_into(&dir, &lake, required).await;
        (result, lake, dir)
    }

    /// Copies `dir`'s `source.csv` into `lake` by the direct route.
    async fn direct_copy_into(
        dir: &tempfile::TempDir,
        lake: &Storage,
        required: &[&str],
    ) -> Result<Copied> {
        direct_copy_as(dir, lake, required, SourceFormat::Csv).await
    }

    /// Copies `dir`'s `source.csv` into `lake` by the direct route, read as `format`.
    async fn direct_copy_as(
        dir: &tempfile::TempDir,
        lake: &Storage,
        required: &[&str],
        format: SourceFormat,
    ) -> Result<Copied> {
        let file = dir.path().join("source.csv");
        let store = Storage::open(dir.path().to_str().unwrap()).unwrap();
        let entry = store.head("source.csv").await.unwrap().unwrap();
        let found = Found {
            listed: Listed {
                source: "trial".into(),
                url: "file:///source.csv".into(),
                size: entry.size,
                modified: entry.last_modified.clone(),
            },
            format,
            delimiter: b',',
            quote: b'"',
            store,
            path: "source.csv".into(),
            etag: entry.e_tag,
            last_modified: entry.last_modified,
        };
        let required: Vec<String> = required.iter().map(|c| c.to_string()).collect();
        copy_in_direct(&found, &required, lake, file).await
    }

    fn trial_csv() -> Vec<u8> {
        trial_csv_of(1000)
    }

    fn trial_csv_of(rows: usize) -> Vec<u8> {
        [b"subject_id,age\n".to_vec(), b"A,50\n".repeat(rows)].concat()
    }

    /// One piece of the parallel address, and several (the file over [`ADDRESS_BLOCK_BYTES`]).
    #[tokio::test]
    async fn a_direct_upload_lands_at_its_content_address() {
        for rows in [1000, 1_000_000] {
            let bytes = trial_csv_of(rows);
            let (copied, lake, _dir) = direct_copy(&bytes, &["age"]).await;
            let copied = copied.unwrap();
            assert_eq!(copied.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
            assert_eq!(copied.size, bytes.len() as u64);
            assert_eq!(
                copied.scanned.rows, rows as u64,
                "the records were scanned on the way"
            );
            let object = format!("raw/trial/{}.csv", blake3::hash(&bytes).to_hex());
            assert_eq!(copied.object, object);
            assert_eq!(lake.get(&object).await.unwrap().as_ref(), bytes.as_slice());
        }
    }

    /// The lake holds the address already (the same bytes under another name, or a file touched since it
    /// was copied): nothing is sent, yet the manifest still gets the bytes' SHA-256, from a second read.
    #[tokio::test]
    async fn a_file_whose_address_the_lake_holds_is_hashed_not_sent_again() {
        let bytes = trial_csv();
        let (first, lake, dir) = direct_copy(&bytes, &["age"]).await;
        let first = first.unwrap();
        let sent = lake.head(&first.object).await.unwrap().unwrap();
        let again = direct_copy_into(&dir, &lake, &["age"]).await.unwrap();
        assert_eq!(again.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
        assert_eq!(
            (again.object.as_str(), again.size),
            (first.object.as_str(), first.size)
        );
        assert_eq!(again.scanned.rows, 1000);
        let kept = lake.head(&first.object).await.unwrap().unwrap();
        assert_eq!(kept.e_tag, sent.e_tag, "the copy was sent again");
        assert_eq!(lake.list("raw/").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_file_that_fails_its_scan_is_never_published() {
        let bytes = trial_csv();
        let (copied, lake, _dir) = direct_copy(&bytes, &["age", "sex"]).await;
        let err = copied.unwrap_err();
        assert!(err.to_string().contains("sex"), "{err}");
        assert!(lake.list("raw/").await.unwrap().is_empty());
    }

    /// The scan runs beside the upload, so a file found bad only at its end has parts sent by then: the
    /// upload is aborted, never completed.
    #[tokio::test]
    async fn a_file_that_fails_its_scan_at_the_end_is_never_published() {
        let bytes = vec![b'x'; 2 * UPLOAD_PART_BYTES + 1];
        let (dir, lake, _) = lake_and_file(&bytes);
        let err = direct_copy_as(&dir, &lake, &[], SourceFormat::Parquet)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("PAR1"), "{err}");
        assert!(lake.list("raw/").await.unwrap().is_empty());
    }

    /// Hashing a file in pieces on threads gives BLAKE3's hash of the whole, whatever the size, the piece
    /// size and the number of threads; a size on a piece or chunk boundary, one byte either side, and the
    /// empty file included.
    #[test]
    fn a_file_hashed_in_pieces_has_the_hash_of_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let chunk = blake3::CHUNK_LEN;
        let bytes: Vec<u8> = (0..40 * chunk + 3).map(|i| (i * 31 % 251) as u8).collect();
        for block in [chunk as u64, 2 * chunk as u64, 8 * chunk as u64] {
            let b = block as usize;
            let sizes = [
                0,
                1,
                chunk - 1,
                chunk,
                chunk + 1,
                b - 1,
                b,
                b + 1,
                2 * b,
                3 * b + 7,
            ];
            let sizes = sizes.into_iter().chain([5 * b - 1, bytes.len()]);
            for size in sizes.filter(|&n| n <= bytes.len()) {
                std::fs::write(&path, &bytes[..size]).unwrap();
                for threads in [1, 2, 3] {
                    let seen = std::sync::atomic::AtomicU64::new(0);
                    let (hash, n) = blake3_of_file(&path, block, threads, &|d| {
                        seen.fetch_max(d, std::sync::atomic::Ordering::Relaxed);
                    })
                    .unwrap();
                    let want = blake3::hash(&bytes[..size]).to_hex().to_string();
                    assert_eq!(hash, want, "size {size}, block {block}, {threads} threads");
                    assert_eq!(n, size as u64);
                    if size as u64 > block {
                        assert_eq!(seen.into_inner(), size as u64, "progress");
                    }
                }
            }
        }
    }

    /// A file cut shorter while its pieces are hashed (here by the first piece's progress report) is
    /// reported as changed, not as a read error.
    #[test]
    fn a_file_cut_shorter_while_it_is_addressed_has_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let block = 4 * blake3::CHUNK_LEN as u64;
        std::fs::write(&path, vec![7u8; 3 * block as usize]).unwrap();
        let cut = || {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(block)
                .unwrap()
        };
        let e = blake3_of_file(&path, block, 1, &|_| cut()).unwrap_err();
        let err = address_error("file:///f", e).to_string();
        assert!(err.contains("changed while it was being read"), "{err}");
    }

    /// Uploads `now` (the file's bytes at upload time) as if `hashed` had been hashed: the error, and whether
    /// the content address then holds an object.
    async fn upload_after_change(hashed: &[u8], now: &[u8]) -> (String, bool) {
        let (_dir, lake, file) = lake_and_file(now);
        let first = FirstRead {
            address: blake3::hash(hashed).to_hex().to_string(),
            size: hashed.len() as u64,
        };
        let object = raw_object("trial", &first.address, SourceFormat::Csv);
        let url = "file:///source.csv";
        let scan = Scanner::new(SourceFormat::Csv, url, &[], b',', b'"').unwrap();
        let uploaded = second_read(url, file, &first, scan, Some((&lake, &object))).await;
        let err = uploaded.unwrap_err();
        (err.to_string(), lake.head(&object).await.unwrap().is_some())
    }

    #[tokio::test]
    async fn a_file_changed_since_it_was_hashed_is_never_published() {
        let hashed = b"subject_id,age\nA,50\n".repeat(1000);
        let mut grown = hashed.clone();
        grown.extend_from_slice(b"B,61\n");
        // grown, and the same size with other bytes (the hash decides)
        for now in [grown, hashed.to_ascii_uppercase()] {
            let (err, published) = upload_after_change(&hashed, &now).await;
            assert!(err.contains("changed while it was being read"), "{err}");
            assert!(!published);
        }
    }
}
