//! Leases on disk: one JSON file per attachment in `leases/` of the state directory, rewritten
//! atomically whenever the lease changes, by the daemon's writer thread ([`Writer`]) so the
//! lease loop never waits for the disk.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

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

// ---------------------------------------------------------------------------------------------
// The writer thread

/// An answer to send once a lease's change is on disk: a client told "bound" or "released"
/// finds the files saying the same (`lanyard inspect` reads them).
pub(super) struct AfterWrite {
    pub stream: std::os::unix::net::UnixStream,
    pub response: super::control::Response,
    /// On a failed write, answer with that error instead (a lease not saved is not taken over).
    pub fail_on_error: bool,
}

enum Change {
    Save(Box<StoredLease>),
    Remove,
}

#[derive(Default)]
struct Queue {
    /// The latest change of each lease not written yet, and the answers waiting for it.
    pending: HashMap<String, (Change, Vec<AfterWrite>)>,
    /// Leases in the order their first pending change came.
    order: VecDeque<String>,
    /// The change being written now (its file may still show the one before).
    writing: Option<(String, Option<StoredLease>)>,
    stopping: bool,
}

/// Lease files are written on a thread of their own, so the lease loop never waits for a disk
/// (each save is write-tmp, fsync, rename, fsync of the directory). Changes to one lease are
/// coalesced: only its latest is written. A SIGKILL right after a change may lose that change;
/// DHCP allows it: the server still holds the lease, and the next daemon resumes from the save
/// before (the same address, a renewal or an INIT-REBOOT asking for it). SIGTERM writes
/// everything queued before the daemon exits.
pub struct Writer {
    shared: Arc<(Mutex<Queue>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    state_dir: PathBuf,
}

impl Writer {
    pub fn start(state_dir: &Path) -> Result<Writer> {
        let shared = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let (queue, dir) = (shared.clone(), state_dir.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("lanyard-writer".into())
            .stack_size(256 * 1024)
            .spawn(move || write_until_stopped(&queue, &dir))
            .with_context(ErrorKind::Io, || "start the daemon's lease writer thread")?;
        Ok(Writer { shared, thread: Some(thread), state_dir: state_dir.to_path_buf() })
    }

    fn queue(&self, record: &str, change: Change, mut after: Vec<AfterWrite>) {
        let (lock, wake) = &*self.shared;
        let mut queue = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match queue.pending.remove(record) {
            Some((_, mut earlier)) => {
                earlier.append(&mut after);
                after = earlier;
            }
            None => queue.order.push_back(record.to_string()),
        }
        queue.pending.insert(record.to_string(), (change, after));
        wake.notify_one();
    }

    /// Write `stored` (replacing any change of the same lease not written yet), then send
    /// `after`.
    pub(super) fn save(&self, stored: &StoredLease, after: Vec<AfterWrite>) {
        self.queue(&stored.record, Change::Save(Box::new(stored.clone())), after);
    }

    /// Remove the lease file of `record`, then send `after`.
    pub(super) fn remove(&self, record: &str, after: Vec<AfterWrite>) {
        self.queue(record, Change::Remove, after);
    }

    /// The lease of `record` as it will be once the queue is written: a change not yet on
    /// disk wins over the file.
    pub fn load(&self, record: &str) -> Result<Option<StoredLease>> {
        {
            let queue = self.shared.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match queue.pending.get(record) {
                Some((Change::Save(stored), _)) => return Ok(Some((**stored).clone())),
                Some((Change::Remove, _)) => return Ok(None),
                None => {}
            }
            if let Some((writing, stored)) = &queue.writing {
                if writing == record {
                    return Ok(stored.clone());
                }
            }
        }
        load(&self.state_dir, record)
    }
}

impl Drop for Writer {
    /// Everything queued is written before the daemon exits.
    fn drop(&mut self) {
        {
            let (lock, wake) = &*self.shared;
            lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).stopping = true;
            wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_until_stopped(shared: &(Mutex<Queue>, Condvar), state_dir: &Path) {
    let (lock, wake) = shared;
    let mut queue = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let Some(record) = queue.order.pop_front() else {
            if queue.stopping {
                return;
            }
            queue = wake.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
            continue;
        };
        let Some((change, after)) = queue.pending.remove(&record) else { continue };
        let shown = match &change {
            Change::Save(stored) => Some((**stored).clone()),
            Change::Remove => None,
        };
        queue.writing = Some((record.clone(), shown));
        drop(queue);
        let written = match change {
            Change::Save(stored) => save(state_dir, &stored),
            Change::Remove => remove(state_dir, &record),
        };
        if let Err(e) = &written {
            super::log(format_args!("{record}: {e}"));
        }
        for answer in after {
            let response = match &written {
                Err(e) if answer.fail_on_error => super::control::Response::error(e),
                _ => answer.response,
            };
            super::requests::reply(answer.stream, &response);
        }
        queue = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queue.writing = None;
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
    fn the_writer_coalesces_and_reads_back_what_is_queued() {
        let dir = scratch("writer");
        let lease = |record: &str, address: [u8; 4]| StoredLease {
            record: record.into(),
            last_address: Some(address.into()),
            ..StoredLease::default()
        };
        let writer = Writer::start(&dir).unwrap();
        for last in 1..=50u8 {
            writer.save(&lease("a.json", [198, 18, 0, last]), Vec::new());
            // Whether the thread has written it yet or not, the latest change is what is read.
            let read = writer.load("a.json").unwrap().unwrap();
            assert_eq!(read.last_address, Some([198, 18, 0, last].into()));
        }
        writer.save(&lease("b.json", [198, 18, 0, 1]), Vec::new());
        writer.remove("b.json", Vec::new());
        assert!(writer.load("b.json").unwrap().is_none(), "a queued removal wins");
        writer.save(&lease("c.json", [198, 18, 0, 3]), Vec::new());
        // Stopping writes everything queued.
        drop(writer);
        let a = load(&dir, "a.json").unwrap().unwrap();
        assert_eq!(a.last_address, Some([198, 18, 0, 50].into()));
        assert!(load(&dir, "b.json").unwrap().is_none());
        assert!(load(&dir, "c.json").unwrap().is_some());
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
