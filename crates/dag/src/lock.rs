//! One run at a time per lake. The lock is an OS file lock (`flock`), so the kernel releases it when the
//! holder dies, even by SIGKILL: a crashed run never leaves the lake locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::PathBuf;

use trialflow_core::Storage;
use trialflow_core::fingerprint::sha256_hex;

use crate::DagError;

#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

impl RunLock {
    /// Locks `<lake>/runs/.lock` for a local lake. A remote lake is locked through a local file keyed by its
    /// URL, which serializes runs from this machine only (a CronJob with `concurrencyPolicy: Forbid` covers
    /// the cluster).
    pub fn acquire(lake: &Storage) -> Result<Self, DagError> {
        let path = match lake.local_root() {
            Some(root) => root.join("runs").join(".lock"),
            None => PathBuf::from(".trialflow/locks")
                .join(format!("{}.lock", &sha256_hex(lake.url().as_bytes())[..16])),
        };
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
                });
            }
            Err(TryLockError::Error(e)) => return Err(infra(e)),
        }
        file.set_len(0).map_err(infra)?;
        writeln!(file, "pid {}", std::process::id()).map_err(infra)?;
        Ok(Self { _file: file, path })
    }
}
