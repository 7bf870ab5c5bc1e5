//! Leases on disk: one JSON file per attachment in `leases/` of the state directory, rewritten
//! atomically whenever the lease changes, so a daemon killed even with SIGKILL resumes exactly.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dhcp::Lease;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::netlink::DefaultRoute;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredLease {
    /// The attachment record this lease belongs to (its file name in the state directory).
    pub record: String,
    /// The lease configured in the guest; `None` while acquiring.
    pub lease: Option<Lease>,
    /// The last address held, asked for again (INIT-REBOOT) after a restart.
    pub last_address: Option<std::net::Ipv4Addr>,
    /// The guest's default routes before the lease's router replaced them.
    #[serde(default)]
    pub replaced_default_routes: Vec<DefaultRoute>,
    /// The DHCP state for `leases` and `inspect`.
    #[serde(default)]
    pub state: String,
    /// Why the last address went away, if it did.
    #[serde(default)]
    pub last_loss: Option<String>,
}

pub fn leases_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("leases")
}

fn path_of(state_dir: &Path, record: &str) -> PathBuf {
    leases_dir(state_dir).join(record)
}

pub fn load(state_dir: &Path, record: &str) -> Result<Option<StoredLease>> {
    let path = path_of(state_dir, record);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(ErrorKind::Io, || format!("parse lease {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            Err(Error::with_source(ErrorKind::Io, format!("read lease {}", path.display()), e))
        }
    }
}

pub fn load_all(state_dir: &Path) -> Result<Vec<StoredLease>> {
    let dir = leases_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::with_source(ErrorKind::Io, format!("read {}", dir.display()), e))
        }
    };
    let mut leases = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        // One damaged file must not keep every other lease from being resumed.
        match load(state_dir, &name) {
            Ok(Some(stored)) => leases.push(stored),
            Ok(None) => {}
            Err(e) => eprintln!("{e}; skipping it"),
        }
    }
    Ok(leases)
}

/// Write atomically: temporary file, fsync, rename, fsync of the directory.
pub fn save(state_dir: &Path, stored: &StoredLease) -> Result<()> {
    let dir = leases_dir(state_dir);
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(ErrorKind::Io, || format!("create {}", dir.display()))?;
    }
    let path = path_of(state_dir, &stored.record);
    let temporary = dir.join(format!(".{}.tmp", stored.record));
    let bytes =
        serde_json::to_vec_pretty(stored).with_context(ErrorKind::Io, || "serialize lease")?;
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        fs::File::open(&dir)?.sync_all()
    };
    write().with_context(ErrorKind::Io, || format!("write lease {}", path.display()))
}

pub fn remove(state_dir: &Path, record: &str) -> Result<()> {
    let path = path_of(state_dir, record);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(Error::with_source(ErrorKind::Io, format!("remove lease {}", path.display()), e))
        }
    }
}
