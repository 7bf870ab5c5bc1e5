//! Leases on disk: one JSON file per attachment in `leases/` of the state directory, rewritten
//! atomically whenever the lease changes, so a daemon killed even with SIGKILL resumes exactly.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dhcp::Lease;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::netlink::DefaultRoute;
use crate::state::{check_format, write_atomically};

/// The lease format this lanyard writes; it reads every format up to this one. Leases written
/// before formats were numbered carry no version: they are format 1, this one.
pub const LEASE_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLease {
    /// The format, checked before anything else is read (see [`LEASE_VERSION`]).
    #[serde(default = "first_format")]
    pub version: u32,
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

fn first_format() -> u32 {
    1
}

impl Default for StoredLease {
    fn default() -> StoredLease {
        StoredLease {
            version: LEASE_VERSION,
            record: String::new(),
            lease: None,
            last_address: None,
            replaced_default_routes: Vec::new(),
            state: String::new(),
            last_loss: None,
        }
    }
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
        Ok(bytes) => {
            check_format("lease", &path, &bytes, LEASE_VERSION)?;
            serde_json::from_slice(&bytes).map(Some).with_context(ErrorKind::Io, || {
                format!("parse lease {} (move it away if it is damaged)", path.display())
            })
        }
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

/// Write atomically ([`write_atomically`]), in this lanyard's format.
pub fn save(state_dir: &Path, stored: &StoredLease) -> Result<()> {
    let dir = leases_dir(state_dir);
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(ErrorKind::Io, || format!("create {}", dir.display()))?;
    }
    // A lease read in an older format is written back in this one.
    let stored = StoredLease { version: LEASE_VERSION, ..stored.clone() };
    let bytes =
        serde_json::to_vec_pretty(&stored).with_context(ErrorKind::Io, || "serialize lease")?;
    write_atomically(&dir, &stored.record, &bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lanyard-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(leases_dir(&dir)).unwrap();
        dir
    }

    #[test]
    fn leases_are_versioned_and_a_newer_format_is_refused() {
        let dir = scratch("version");
        let stored = StoredLease { record: "netns-a@eth1.json".into(), ..StoredLease::default() };
        save(&dir, &stored).unwrap();
        let text = fs::read_to_string(leases_dir(&dir).join("netns-a@eth1.json")).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        assert_eq!(load(&dir, "netns-a@eth1.json").unwrap().unwrap().version, LEASE_VERSION);

        // Written before leases had a version: format 1, read as before.
        fs::write(
            leases_dir(&dir).join("old.json"),
            r#"{"record": "old.json", "lease": null, "last_address": "198.18.0.9"}"#,
        )
        .unwrap();
        let old = load(&dir, "old.json").unwrap().unwrap();
        assert_eq!((old.version, old.last_address), (1, Some("198.18.0.9".parse().unwrap())));

        // A newer format is refused by name, even where its fields would parse.
        fs::write(
            leases_dir(&dir).join("new.json"),
            r#"{"version": 2, "record": "new.json", "lease": null, "last_address": null}"#,
        )
        .unwrap();
        let err = load(&dir, "new.json").unwrap_err().to_string();
        assert!(
            err.contains("new.json")
                && err.contains("written by a newer lanyard (format 2, this one reads up to 1)")
                && err.contains("upgrade lanyard"),
            "{err}"
        );
        // The daemon's scan skips it and keeps the rest.
        let mut all: Vec<String> = load_all(&dir).unwrap().into_iter().map(|s| s.record).collect();
        all.sort();
        assert_eq!(all, ["netns-a@eth1.json", "old.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_file() {
        let dir = scratch("fail");
        // A directory where the lease file should go makes the rename fail.
        fs::create_dir(leases_dir(&dir).join("busy.json")).unwrap();
        fs::write(leases_dir(&dir).join("busy.json").join("keep"), b"x").unwrap();
        let stored = StoredLease { record: "busy.json".into(), ..StoredLease::default() };
        let err = save(&dir, &stored).unwrap_err().to_string();
        assert!(err.contains("busy.json"), "{err}");
        let names: Vec<String> = fs::read_dir(leases_dir(&dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["busy.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
