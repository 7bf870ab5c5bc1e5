//! lanyard's state: one JSON record per attachment in the state directory, written atomically
//! (temporary file, fsync, rename, fsync of the directory) under an exclusive lock, so two
//! concurrent attaches can neither corrupt a record nor pick the same host name or MAC.

mod index;
mod record;

pub use index::Index;
pub use record::{
    slot_file_name, Declared, DhcpSettings, DnsChoice, DriverKind, GuestRef, Record, RECORD_VERSION,
};

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

    /// The index of MACs, host names and lanyard-made bridges the records hold, rebuilt first
    /// if it is missing or out of date. Taking the lock is the caller's proof that no other
    /// lanyard changes records meanwhile.
    pub fn index(&self, _lock: &StateLock) -> Result<Index<'_>> {
        Index::open(self)
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
        if file_name.is_empty() || file_name.contains('/') || file_name.starts_with('.') {
            return Err(Error::usage(format!("{file_name:?} is not a record file name")));
        }
        match read_record(&self.path.join(file_name)) {
            Ok(record) => Ok(Some(record)),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The records of exactly this guest's interface (by identity, never by file name alone):
    /// the one under the current file name, and one of format 1 under the old name, where
    /// another guest whose name folds alike may be stored instead. Reads at most two files.
    pub fn slot_records(&self, guest: &GuestRef, guest_ifname: &str) -> Result<Vec<Record>> {
        let mut found = Vec::new();
        for name in [
            Record::file_name_for(guest, guest_ifname),
            Record::legacy_file_name_for(guest, guest_ifname),
        ] {
            if let Some(record) = self.load(&name)? {
                if record.is_slot_of(guest, guest_ifname) {
                    found.push(record);
                }
            }
        }
        Ok(found)
    }

    /// Every record of `guest` (all its interfaces), reading only the files whose names can be
    /// its own: a detach of one guest costs the same with ten records or a thousand.
    pub fn guest_records(&self, guest: &GuestRef) -> Result<Vec<Record>> {
        let mut found = Vec::new();
        let entries = fs::read_dir(&self.path)
            .with_context(ErrorKind::Io, || format!("read {}", self.path.display()))?;
        for entry in entries {
            let entry =
                entry.with_context(ErrorKind::Io, || format!("read {}", self.path.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") || name.starts_with('.') {
                continue;
            }
            if Record::may_belong_to(&name, guest) {
                let record = read_record(&entry.path())?;
                if record.guest.identity() == guest.identity() {
                    found.push(record);
                }
            }
        }
        found.sort_by_key(Record::file_name);
        Ok(found)
    }

    /// Write a record atomically: a reader sees the old record or the new one, never half.
    pub fn save(&self, record: &Record) -> Result<PathBuf> {
        let name = record.file_name();
        let mut text =
            serde_json::to_vec_pretty(record).with_context(ErrorKind::Io, || "serialize record")?;
        text.push(b'\n');
        let index_was_fresh = index::is_fresh(self);
        write_atomically(&self.path, &name, &text)?;
        index::record_saved(self, record, &name, index_was_fresh);
        Ok(self.path.join(name))
    }

    /// Remove a record; one already gone counts as removed.
    pub fn remove(&self, record: &Record) -> Result<()> {
        let path = self.record_path(record);
        let index_was_fresh = index::is_fresh(self);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Io,
                    format!("remove record {}", path.display()),
                    e,
                ))
            }
        }
        index::record_removed(self, record, &record.file_name(), index_was_fresh);
        Ok(())
    }
}

/// Write `bytes` to `dir`/`name` so that a reader (or a crash) sees the old file or the new one,
/// never half: a temporary file, fsync, rename over the name, fsync of the directory. The
/// temporary file is removed when any step fails.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(name);
    // Unique per process and call, so concurrent writers never share a temporary file; the
    // dot hides it from the record and lease scans. Cut to the 255-byte limit of a file name
    // (names are ASCII), keeping the unique part, which comes first.
    let mut temporary_name =
        format!(".tmp-{}-{}-{name}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    temporary_name.truncate(255);
    let temporary = dir.join(temporary_name);
    let write = || -> std::io::Result<()> {
        let mut file =
            OpenOptions::new().create_new(true).write(true).mode(0o600).open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        // The rename is the last step that can leave the temporary file behind; after it the
        // name is gone and this fails harmlessly.
        let _ = fs::remove_file(&temporary);
        Error::with_source(ErrorKind::Io, format!("write {}", path.display()), e)
    })
}

/// Remove the temporary files of writers that died between creating and renaming them (a
/// SIGKILL mid-write): `.tmp-PID-...` in `dir` and its subdirectories whose PID no longer runs.
/// A live writer's file is left alone (the PID is checked, not the age). Returns the paths removed.
pub fn sweep_dead_temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    // The state directory and one level below it (leases/, docker-plugin/, dns/) is where
    // write_atomically is used; deeper trees are not lanyard's.
    if let Ok(entries) = fs::read_dir(dir) {
        dirs.extend(
            entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()),
        );
    }
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(".tmp-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() && fs::remove_file(entry.path()).is_ok()
            {
                removed.push(entry.path());
            }
        }
    }
    removed
}

/// Refuse a file written in a newer format than this lanyard reads, before reading anything
/// else from it (a newer format may mean the same fields differently). A file without a
/// version is format 1. `what` names the kind of file ("record", "lease").
pub fn check_format(what: &str, path: &Path, bytes: &[u8], newest: u32) -> Result<u32> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: Option<u32>,
    }
    // Text that is not even a JSON object is left to the caller's full parse to report.
    let version = serde_json::from_slice::<Versioned>(bytes).ok().and_then(|v| v.version);
    let version = version.unwrap_or(1);
    if version > newest {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{what} {} was written by a newer lanyard (format {version}, this one reads up \
                 to {newest}): upgrade lanyard",
                path.display()
            ),
        ));
    }
    Ok(version)
}

fn read_record(path: &Path) -> Result<Record> {
    let text =
        fs::read(path).with_context(ErrorKind::Io, || format!("read record {}", path.display()))?;
    check_format("record", path, &text, RECORD_VERSION)?;
    let record: Record = serde_json::from_slice(&text).with_context(ErrorKind::Io, || {
        format!("parse record {} (move it away if it is damaged)", path.display())
    })?;
    // Every lookup goes by the name a record derives for itself: one stored under another name
    // could be neither found again nor removed by detach.
    let expected = record.file_name();
    if path.file_name().is_none_or(|name| name != expected.as_str()) {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "record {} belongs under the name {expected} (was it renamed or copied by hand?): \
                 rename it back",
                path.display()
            ),
        ));
    }
    Ok(record)
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
            declared: None,
            host_route: false,
            dns: Default::default(),
        }
    }

    #[test]
    fn temporaries_of_dead_writers_are_swept_and_a_live_writers_kept() {
        let dir = std::env::temp_dir().join(format!("lanyard-sweep-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("leases")).unwrap();
        // A pid that ran and is gone: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let own = std::process::id();
        let dead_record = dir.join(format!(".tmp-{dead}-0-netns-a@eth1.json"));
        let dead_lease = dir.join("leases").join(format!(".tmp-{dead}-1-lease.json"));
        let live = dir.join("leases").join(format!(".tmp-{own}-2-lease.json"));
        let plain = dir.join("leases").join("tmp-not-ours.json");
        for path in [&dead_record, &dead_lease, &live, &plain] {
            fs::write(path, b"{").unwrap();
        }
        let mut removed = sweep_dead_temporaries(&dir);
        removed.sort();
        assert_eq!(removed, vec![dead_record.clone(), dead_lease.clone()]);
        assert!(!dead_record.exists() && !dead_lease.exists());
        assert!(live.exists() && plain.exists());
        fs::remove_dir_all(&dir).unwrap();
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

    fn scratch(tag: &str) -> (PathBuf, StateDir) {
        let dir = std::env::temp_dir().join(format!("lanyard-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        (dir, state)
    }

    /// A record as lanyard 0.1 (format 1) wrote it, under the name it gave it.
    fn write_format_1(dir: &Path, record: &Record) -> String {
        let record = Record { version: 1, ..record.clone() };
        let name = Record::legacy_file_name_for(&record.guest, &record.guest_ifname);
        fs::write(dir.join(&name), serde_json::to_vec_pretty(&record).unwrap()).unwrap();
        name
    }

    #[test]
    fn a_record_of_a_newer_format_is_refused_by_name() {
        let (dir, state) = scratch("newer");
        let mut value = serde_json::to_value(sample("n")).unwrap();
        value["version"] = (RECORD_VERSION + 1).into();
        // Renamed fields would not parse; the version is checked before they are read.
        value["mac"] = "something new".into();
        let name = "netns-n@eth1.json";
        fs::write(dir.join(name), value.to_string()).unwrap();
        let err = state.load(name).unwrap_err().to_string();
        let expected = format!(
            "was written by a newer lanyard (format {}, this one reads up to {RECORD_VERSION}): \
             upgrade lanyard",
            RECORD_VERSION + 1
        );
        assert!(err.contains(name) && err.contains(&expected), "{err}");
        assert!(state.records().unwrap_err().to_string().contains(&expected));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn format_1_records_are_found_under_their_old_name_and_only_by_their_own_guest() {
        let (dir, state) = scratch("format1");
        let old = sample("kc:1");
        let name = write_format_1(&dir, &old);
        assert_eq!(name, "netns-kc_1.eth1.json");
        let loaded = state.load(&name).unwrap().unwrap();
        assert_eq!((loaded.version, loaded.file_name()), (1, name.clone()));
        // kc:1 finds it; kc_1, whose old name is the same file, does not take it for its own.
        assert_eq!(state.slot_records(&old.guest, "eth1").unwrap(), vec![loaded.clone()]);
        let other = GuestRef::Netns { name: "kc_1".into() };
        assert!(state.slot_records(&other, "eth1").unwrap().is_empty());
        assert!(state.slot_records(&old.guest, "eth2").unwrap().is_empty());
        // kc_1 is saved beside it, under its own new name; removing one keeps the other.
        let new = sample("kc_1");
        state.save(&new).unwrap();
        assert_eq!(state.records().unwrap().len(), 2);
        state.remove(&loaded).unwrap();
        assert_eq!(state.records().unwrap(), vec![new]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_under_a_name_it_does_not_derive_is_reported() {
        let (dir, state) = scratch("renamed");
        state.save(&sample("a")).unwrap();
        fs::rename(dir.join("netns-a@eth1.json"), dir.join("netns-b@eth1.json")).unwrap();
        let err = state.records().unwrap_err().to_string();
        assert!(
            err.contains("netns-b@eth1.json")
                && err.contains("belongs under the name netns-a@eth1.json"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_index_answers_like_the_records_even_when_edited_behind_its_back() {
        let (dir, state) = scratch("index");
        let lock = state.lock().unwrap();
        let a = sample("a");
        let b = Record {
            mac: "02:00:00:00:00:02".parse().unwrap(),
            host_ifname: Some("lybbbbbbbbbbbbb".into()),
            created_bridge: true,
            ..sample("b")
        };
        state.save(&a).unwrap();
        state.save(&b).unwrap();
        let taken = |state: &StateDir| {
            let index = state.index(&lock).unwrap();
            (
                index.mac_taken(a.mac).unwrap(),
                index.mac_taken(b.mac).unwrap(),
                index.host_ifname_taken("lybbbbbbbbbbbbb").unwrap(),
                index.created_bridge_port("br0").unwrap().map(|r| r.file_name()),
            )
        };
        let all = (true, true, true, Some(b.file_name()));
        assert_eq!(taken(&state), all);
        assert!(!state
            .index(&lock)
            .unwrap()
            .mac_taken("02:00:00:00:00:09".parse().unwrap())
            .unwrap());
        assert!(!state.index(&lock).unwrap().host_ifname_taken("lyzzzzzzzzzzzzz").unwrap());
        assert!(state.index(&lock).unwrap().created_bridge_port("br1").unwrap().is_none());

        // The index is lost: rebuilt from the records.
        fs::remove_dir_all(dir.join("index")).unwrap();
        assert_eq!(taken(&state), all);
        // A record removed by hand: its entries are not believed.
        fs::remove_file(dir.join(b.file_name())).unwrap();
        assert_eq!(taken(&state), (true, false, false, None));
        // A record added by hand (or by a lanyard that knows no index): found.
        fs::write(dir.join(b.file_name()), serde_json::to_vec(&b).unwrap()).unwrap();
        assert_eq!(taken(&state), all);
        // Removed through lanyard: gone from the index at once.
        state.remove(&b).unwrap();
        assert_eq!(taken(&state), (true, false, false, None));
        // A record replaced under the same name by one with another MAC: the old MAC is free.
        let a2 = Record { mac: "02:00:00:00:00:03".parse().unwrap(), ..a.clone() };
        state.save(&a2).unwrap();
        let index = state.index(&lock).unwrap();
        assert!(!index.mac_taken(a.mac).unwrap() && index.mac_taken(a2.mac).unwrap());
        // Format-1 records are indexed too.
        let old = Record { mac: "02:00:00:00:00:04".parse().unwrap(), ..sample("old:1") };
        write_format_1(&dir, &old);
        assert!(state.index(&lock).unwrap().mac_taken(old.mac).unwrap());
        drop(lock);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_atomically_leaves_nothing_behind_when_it_fails() {
        let (dir, _state) = scratch("atomic");
        write_atomically(&dir, "x.json", b"one").unwrap();
        write_atomically(&dir, "x.json", b"two").unwrap();
        assert_eq!(fs::read(dir.join("x.json")).unwrap(), b"two");
        fs::create_dir(dir.join("busy.json")).unwrap();
        fs::write(dir.join("busy.json").join("keep"), b"x").unwrap();
        let err = write_atomically(&dir, "busy.json", b"three").unwrap_err().to_string();
        assert!(err.contains("busy.json"), "{err}");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["busy.json", "x.json"]);
        // A name near the file-name limit still gets a valid temporary name.
        let long = format!("{}.json", "l".repeat(245));
        write_atomically(&dir, &long, b"long").unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
