//! One run at a time per lake.
//!
//! A lake on local disk is locked with an OS file lock (`flock` on `runs/.lock`), so the kernel releases it
//! when the holder dies, even by SIGKILL. A lake on object storage is shared by pods on different machines,
//! where no file lock reaches: it is locked with lock objects under `runs/_lock/`, one per generation
//! (`00000000000000000001.json`, …), each created with a conditional put that only one writer can win. The
//! holder rewrites its object's heartbeat while it runs; a generation whose heartbeat is older than the stale
//! limit was left by a killed or frozen run, and the next run takes the following generation, naming the owner
//! it broke. Breaking never deletes the old object first, so two runs breaking the same stale lock race on the
//! creation of one new object, which exactly one wins.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trialflow_core::Storage;
use trialflow_core::fingerprint::sha256_hex;

use crate::DagError;

const LOCK_PREFIX: &str = "runs/_lock/";
/// What `kind` holds in every lock object: an object without it was not written by trialflow.
const LOCK_KIND: &str = "trialflow-run-lock";

/// How an object-store lock is kept and when it counts as abandoned.
#[derive(Debug, Clone, Copy)]
pub struct LockSettings {
    pub heartbeat: Duration,
    pub stale: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            stale: Duration::from_secs(120),
        }
    }
}

impl LockSettings {
    pub fn from_config(dag: &trialflow_core::config::DagConfig) -> Self {
        Self {
            heartbeat: Duration::from_secs(dag.lock_heartbeat_seconds.max(1)),
            stale: Duration::from_secs(dag.lock_stale_seconds),
        }
    }
}

/// The lock of one run, held until [`RunLock::release`].
#[derive(Debug)]
pub enum RunLock {
    File { _file: File, path: PathBuf },
    Object(ObjectLock),
}

impl RunLock {
    /// Locks the lake: a file lock for a local lake, lock objects for one on object storage.
    pub async fn acquire(lake: &Storage, settings: LockSettings) -> Result<Self, DagError> {
        match lake.local_root() {
            Some(root) => file_lock(root.join("runs").join(".lock")),
            None => Ok(RunLock::Object(ObjectLock::acquire(lake, settings).await?)),
        }
    }

    /// Gives the lock up. An object lock that another run broke while this one held it is an error: both
    /// runs may have written the lake.
    pub async fn release(self) -> Result<(), DagError> {
        match self {
            RunLock::File { .. } => Ok(()),
            RunLock::Object(lock) => lock.release().await,
        }
    }
}

fn file_lock(path: PathBuf) -> Result<RunLock, DagError> {
    let infra = |e: std::io::Error| {
        DagError::Core(trialflow_core::Error::infra(
            path.display().to_string(),
            format!("run lock: {e}"),
        ))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(infra)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(infra)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(DagError::Locked {
                path: path.display().to_string(),
                holder: "a process on this machine".into(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(infra(e)),
    }
    file.set_len(0).map_err(infra)?;
    writeln!(file, "pid {}", std::process::id()).map_err(infra)?;
    Ok(RunLock::File { _file: file, path })
}

/// The body of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Holder {
    kind: String,
    /// Random per acquisition: tells this run's object from one another run wrote.
    token: String,
    host: String,
    pid: u32,
    since_unix: i64,
    heartbeat_unix: i64,
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "pid {} on host {}, since {}, last heartbeat {}",
            self.pid,
            if self.host.is_empty() {
                "?"
            } else {
                &self.host
            },
            rfc3339(self.since_unix),
            rfc3339(self.heartbeat_unix)
        )
    }
}

/// A lock held through lock objects on the lake's store, with its heartbeat task.
#[derive(Debug)]
pub struct ObjectLock {
    lake: Storage,
    rel: String,
    holder: Holder,
    lost: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl ObjectLock {
    pub async fn acquire(lake: &Storage, settings: LockSettings) -> Result<Self, DagError> {
        let now = unix_now();
        let holder = Holder {
            kind: LOCK_KIND.into(),
            token: token(now),
            host: hostname(),
            pid: std::process::id(),
            since_unix: now,
            heartbeat_unix: now,
        };
        // a lost creation race means another run now holds a fresh lock, which the next look reports
        for _ in 0..3 {
            let generation = match newest(lake).await? {
                None => 1,
                Some((generation, rel)) => {
                    let current = read_holder(lake, &rel).await?;
                    let age = unix_now() - current.heartbeat_unix;
                    if age <= settings.stale.as_secs() as i64 {
                        return Err(DagError::Locked {
                            path: lake.display(&rel),
                            holder: current.describe(),
                        });
                    }
                    tracing::warn!(
                        lock = %lake.display(&rel),
                        holder = %current.describe(),
                        silent_seconds = age,
                        "breaking a stale lake lock: its holder stopped its heartbeat"
                    );
                    generation + 1
                }
            };
            let rel = object_name(generation);
            if lake.create(&rel, body(&holder)?).await? {
                remove_older(lake, generation).await;
                let lost = Arc::new(AtomicBool::new(false));
                let heartbeat = tokio::spawn(beat(
                    lake.clone(),
                    rel.clone(),
                    holder.clone(),
                    settings.heartbeat,
                    lost.clone(),
                ));
                return Ok(ObjectLock {
                    lake: lake.clone(),
                    rel,
                    holder,
                    lost,
                    heartbeat,
                });
            }
        }
        Err(DagError::Core(trialflow_core::Error::infra(
            lake.display(LOCK_PREFIX),
            "the lake lock changed hands three times while this run tried to take it",
        )))
    }

    async fn release(self) -> Result<(), DagError> {
        self.heartbeat.abort();
        let taken_over = self.lost.load(Ordering::SeqCst)
            || newest(&self.lake)
                .await?
                .is_some_and(|(_, rel)| rel != self.rel);
        if taken_over {
            return Err(DagError::LockLost {
                path: self.lake.display(&self.rel),
            });
        }
        let current = read_holder(&self.lake, &self.rel).await?;
        if current.token != self.holder.token {
            return Err(DagError::LockLost {
                path: self.lake.display(&self.rel),
            });
        }
        self.lake.delete(&self.rel).await?;
        Ok(())
    }
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// Rewrites the lock object's heartbeat until aborted; stops, flagging the lock lost, once a newer generation
/// exists (another run judged this one dead).
async fn beat(
    lake: Storage,
    rel: String,
    mut holder: Holder,
    every: Duration,
    lost: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        match newest(&lake).await {
            Ok(Some((_, newest_rel))) if newest_rel != rel => {
                tracing::error!(lock = %lake.display(&rel), "another run broke this run's lake lock");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(lock = %lake.display(&rel), error = %e, "lake lock heartbeat: could not list");
                continue;
            }
        }
        holder.heartbeat_unix = unix_now();
        match body(&holder) {
            Ok(b) => {
                if let Err(e) = lake.put(&rel, b).await {
                    tracing::warn!(lock = %lake.display(&rel), error = %e, "lake lock heartbeat failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "lake lock heartbeat"),
        }
    }
}

fn object_name(generation: u64) -> String {
    format!("{LOCK_PREFIX}{generation:020}.json")
}

/// The newest lock generation under `runs/_lock/`. An object there that is not a generation is an error:
/// something else writes where the lock lives.
async fn newest(lake: &Storage) -> Result<Option<(u64, String)>, DagError> {
    let mut best: Option<(u64, String)> = None;
    for e in lake.list(LOCK_PREFIX).await? {
        let name = e.path.strip_prefix(LOCK_PREFIX).unwrap_or(&e.path);
        let generation = name
            .strip_suffix(".json")
            .filter(|g| g.len() == 20 && g.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|g| g.parse::<u64>().ok())
            .ok_or_else(|| DagError::LockObject {
                path: lake.display(&e.path),
                message: "not a trialflow lock object (the lock's folder holds only \
                          <20-digit generation>.json); remove it if no run uses it"
                    .into(),
            })?;
        if best.as_ref().is_none_or(|(g, _)| generation > *g) {
            best = Some((generation, e.path.clone()));
        }
    }
    Ok(best)
}

async fn read_holder(lake: &Storage, rel: &str) -> Result<Holder, DagError> {
    let unreadable = |message: String| DagError::LockObject {
        path: lake.display(rel),
        message,
    };
    let Some(bytes) = lake.get_opt(rel).await? else {
        return Err(unreadable(
            "vanished while it was read (another run released or broke it); retry".into(),
        ));
    };
    let holder: Holder = serde_json::from_slice(&bytes).map_err(|e| {
        unreadable(format!(
            "unreadable lock object ({e}); if no run holds the lake, delete it"
        ))
    })?;
    if holder.kind != LOCK_KIND {
        return Err(unreadable(format!(
            "not a trialflow lock object (kind must be `{LOCK_KIND}`); if no run holds the lake, delete it"
        )));
    }
    Ok(holder)
}

/// Deletes the generations before `generation` (a broken lock's object); a failure only leaves clutter.
async fn remove_older(lake: &Storage, generation: u64) {
    let Ok(entries) = lake.list(LOCK_PREFIX).await else {
        return;
    };
    for e in entries {
        if e.path < object_name(generation)
            && let Err(err) = lake.delete(&e.path).await
        {
            tracing::warn!(lock = %lake.display(&e.path), error = %err, "could not remove a broken lock object");
        }
    }
}

fn body(holder: &Holder) -> Result<Vec<u8>, DagError> {
    serde_json::to_vec(holder).map_err(|e| DagError::Core(trialflow_core::Error::bug(e)))
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn token(now: i64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    sha256_hex(format!("{now}-{nanos}-{}-{}", std::process::id(), hostname()).as_bytes())[..16]
        .to_string()
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn lake() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&format!("file://{}", dir.path().display())).unwrap();
        (dir, s)
    }

    fn settings(stale: u64) -> LockSettings {
        LockSettings {
            heartbeat: Duration::from_millis(200),
            stale: Duration::from_secs(stale),
        }
    }

    #[tokio::test]
    async fn a_second_run_is_refused_naming_the_holder_and_release_frees_the_lake() {
        let (_d, lake) = lake();
        let a = ObjectLock::acquire(&lake, settings(60)).await.unwrap();
        let err = ObjectLock::acquire(&lake, settings(60)).await.unwrap_err();
        assert_eq!(err.exit_code(), 5);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("00000000000000000001.json"), "{msg}");
        a.release().await.unwrap();
        assert!(lake.list(LOCK_PREFIX).await.unwrap().is_empty());
        let b = ObjectLock::acquire(&lake, settings(60)).await.unwrap();
        assert_eq!(b.rel, object_name(1));
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn the_heartbeat_keeps_a_lock_fresh_and_a_silent_one_is_broken() {
        let (_d, lake) = lake();
        let a = ObjectLock::acquire(&lake, settings(1)).await.unwrap();
        // beats every 200 ms: after 2.5 s it is still fresh against a 1 s stale limit
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(ObjectLock::acquire(&lake, settings(1)).await.is_err());
        // a killed holder: its heartbeat stops
        a.heartbeat.abort();
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let b = ObjectLock::acquire(&lake, settings(1)).await.unwrap();
        assert_eq!(b.rel, object_name(2));
        let names: Vec<String> = lake
            .list(LOCK_PREFIX)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            names,
            vec![object_name(2)],
            "the broken generation is removed"
        );
        // the run it judged dead learns it lost the lake when it releases
        assert!(matches!(a.release().await, Err(DagError::LockLost { .. })));
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn foreign_and_unreadable_lock_objects_are_errors_naming_the_object() {
        let (_d, lake) = lake();
        lake.put(&object_name(3), b"{not json".to_vec())
            .await
            .unwrap();
        let err = ObjectLock::acquire(&lake, settings(60)).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("00000000000000000003.json") && msg.contains("unreadable"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), 5);

        lake.put(
            &object_name(3),
            br#"{"kind":"other","token":"t","host":"h","pid":1,"since_unix":0,"heartbeat_unix":0}"#
                .to_vec(),
        )
        .await
        .unwrap();
        let msg = ObjectLock::acquire(&lake, settings(60))
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a trialflow lock object"), "{msg}");

        lake.delete(&object_name(3)).await.unwrap();
        lake.put("runs/_lock/mine.txt", b"x".to_vec())
            .await
            .unwrap();
        let msg = ObjectLock::acquire(&lake, settings(60))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("runs/_lock/mine.txt") && msg.contains("not a trialflow lock"),
            "{msg}"
        );
    }
}
