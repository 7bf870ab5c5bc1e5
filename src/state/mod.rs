//! lanyard's state: one JSON record per attachment in the state directory, written atomically
//! (temporary file, fsync, rename, fsync of the directory) under an exclusive lock, so two
//! concurrent attaches can neither corrupt a record nor pick the same host name or MAC.

mod record;

pub use record::{DhcpSettings, DriverKind, GuestRef, Record, RECORD_VERSION};

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result, ResultExt};

/// Where records live unless `--state-dir` / `LANYARD_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lanyard";

pub struct StateDir {
    path: PathBuf,
}

/// Held while a command reads and changes records; released on drop (the kernel also releases a
/// flock when the process dies, so a crashed attach never wedges the next one).
pub struct StateLock {
    _file: File,
}

impl StateDir {
    /// Open (creating if needed, mode 0700) the state directory.
    pub fn open(path: &Path) -> Result<StateDir> {
        if !path.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .with_context(ErrorKind::Io, || {
                    format!("create state directory {}", path.display())
                })?;
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        }
        // Records say which links to delete and the daemon's socket lives here: a directory
        // others can write to would let them steer root.
        let meta = fs::metadata(path)
            .with_context(ErrorKind::Io, || format!("stat state directory {}", path.display()))?;
        use std::os::unix::fs::MetadataExt;
        if meta.mode() & 0o022 != 0 || (nix::unistd::geteuid().is_root() && meta.uid() != 0) {
            return Err(Error::new(
                ErrorKind::Permission,
                format!(
                    "state directory {} is writable by others or not owned by root: chown root and chmod 700 it",
                    path.display()
                ),
            ));
        }
        Ok(StateDir { path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lock(&self) -> Result<StateLock> {
        lock_file(&self.path.join("lock"))
    }

    fn record_path(&self, record: &Record) -> PathBuf {
        self.path.join(record.file_name())
    }

    /// Every record; unreadable files are reported, not skipped silently.
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        let entries = fs::read_dir(&self.path)
            .with_context(ErrorKind::Io, || format!("read {}", self.path.display()))?;
        for entry in entries {
            let entry =
                entry.with_context(ErrorKind::Io, || format!("read {}", self.path.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.ends_with(".json") || name.starts_with('.') {
                continue;
            }
            records.push(read_record(&entry.path())?);
        }
        records.sort_by_key(Record::file_name);
        Ok(records)
    }

    /// The record stored under `file_name`, if there is one.
    pub fn load(&self, file_name: &str) -> Result<Option<Record>> {
        let path = self.path.join(file_name);
        if !path.exists() {
            return Ok(None);
        }
        read_record(&path).map(Some)
    }

    /// Write a record atomically: a reader sees the old record or the new one, never half.
    pub fn save(&self, record: &Record) -> Result<PathBuf> {
        let path = self.record_path(record);
        let temporary =
            self.path.join(format!(".{}.tmp-{}", record.file_name(), std::process::id()));
        let text =
            serde_json::to_vec_pretty(record).with_context(ErrorKind::Io, || "serialize record")?;
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(&text)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&temporary, &path)?;
            File::open(&self.path)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temporary);
            Error::with_source(ErrorKind::Io, format!("write record {}", path.display()), e)
        })?;
        Ok(path)
    }

    /// Remove a record; one already gone counts as removed.
    pub fn remove(&self, record: &Record) -> Result<()> {
        let path = self.record_path(record);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::with_source(
                ErrorKind::Io,
                format!("remove record {}", path.display()),
                e,
            )),
        }
    }
}

fn read_record(path: &Path) -> Result<Record> {
    let text =
        fs::read(path).with_context(ErrorKind::Io, || format!("read record {}", path.display()))?;
    serde_json::from_slice(&text).with_context(ErrorKind::Io, || {
        format!("parse record {} (move it away if it is damaged)", path.display())
    })
}

/// Take an exclusive flock on `lock_path` (created 0600 if missing), blocking until it is free.
/// The kernel releases it when the process dies, so a crash never wedges the next command.
pub fn lock_file(lock_path: &Path) -> Result<StateLock> {
    flock(lock_path, true)?
        .ok_or_else(|| Error::new(ErrorKind::Io, "a blocking lock returned early"))
}

/// Like [`lock_file`] but fails at once (`None`) when someone else holds it.
pub fn try_lock_file(lock_path: &Path) -> Result<Option<StateLock>> {
    flock(lock_path, false)
}

fn flock(lock_path: &Path, wait: bool) -> Result<Option<StateLock>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(lock_path)
        .with_context(ErrorKind::Io, || format!("open lock {}", lock_path.display()))?;
    match crate::sys::lock_exclusive(&file, wait) {
        Ok(true) => Ok(Some(StateLock { _file: file })),
        Ok(false) => Ok(None),
        Err(error) => {
            Err(Error::with_source(ErrorKind::Io, format!("lock {}", lock_path.display()), error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::NetnsId;
    use crate::spec::{parse_address, MacAddr, MacScheme};

    fn sample(name: &str) -> Record {
        Record {
            version: RECORD_VERSION,
            guest: GuestRef::Netns { name: name.into() },
            netns: NetnsId { dev: 4, ino: 4026532000 },
            guest_ifname: "eth1".into(),
            driver: DriverKind::Bridge,
            host_interface: "br0".into(),
            host_ifname: Some("lyabcdefghijklm".into()),
            created_bridge: false,
            macvlan_mode: None,
            mac: "02:00:00:00:00:01".parse::<MacAddr>().unwrap(),
            mac_scheme: MacScheme::Stable,
            mtu: 1500,
            addresses: vec![parse_address("198.18.0.5/24@198.18.0.1").unwrap()],
            routes: Vec::new(),
            host_addresses: Vec::new(),
            replaced_default_routes: Vec::new(),
            attached_at: 1_795_435_200,
            dhcp: None,
        }
    }

    #[test]
    fn records_round_trip_through_atomic_files() {
        let dir = std::env::temp_dir().join(format!("lanyard-state-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let _lock = state.lock().unwrap();
        let (a, b) = (sample("a"), sample("b"));
        state.save(&a).unwrap();
        state.save(&b).unwrap();
        // Saving again replaces, never duplicates; no temporary file is left.
        state.save(&a).unwrap();
        assert_eq!(state.records().unwrap(), vec![a.clone(), b.clone()]);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
        state.remove(&a).unwrap();
        state.remove(&a).unwrap();
        assert_eq!(state.records().unwrap(), vec![b]);
        // A damaged record is reported with its path, not skipped.
        fs::write(dir.join("netns-x.eth1.json"), b"{not json").unwrap();
        let err = state.records().unwrap_err();
        assert!(err.to_string().contains("netns-x.eth1.json"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
