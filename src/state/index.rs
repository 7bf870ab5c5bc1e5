//! The index of what the records claim: MACs, host-side interface names, and bridges lanyard
//! created. Attach must keep MACs and host names unique among all records; reading and parsing
//! every record for that made each attach slower as attachments grew (1 ms at none, 13 ms at
//! 1000). The index answers "which record holds X" with one directory lookup instead.
//!
//! Layout: `index/<claim>/<record file name>`, an empty file per (claim, record), e.g.
//! `index/mac-02a1b2c3d4e5/netns-web@eth1.json`; a claim held by several records (a MAC given
//! twice with `--mac`) simply has several entries. `index/stamp` says which state of the state
//! directory the index describes.
//!
//! The index is a cache: the records stay the truth, and every path that could leave the index
//! wrong leads back to them.
//! - An entry is believed only after reading the record it names and finding the claim there;
//!   an entry whose record is gone (removed by hand, or by a daemon that forgot a lease) or no
//!   longer holds the claim is dropped. So a stale entry costs one read, never a wrong answer.
//! - A missing entry would be a wrong answer ("free" when taken). Entries are added by
//!   [`record_saved`] whenever lanyard writes a record; a record written any other way (by
//!   hand, by an older lanyard that knows no index) changes the state directory's modification
//!   time, which the stamp records; a stamp that does not match the directory, a lost stamp or
//!   index, or another boot (entries are not fsynced: a crash may lose them) makes
//!   [`Index::open`] rebuild the index from every record. The stamp is taken by a `stat` of
//!   the directory; on Linux 6.13 and later (fine-grained "multigrain" timestamps on ext4,
//!   tmpfs and others; measured on 6.18) any file created or renamed into the directory after
//!   such a `stat` moves the time. On older kernels, a file added by something other than
//!   lanyard within the same clock tick as lanyard's own last change goes unnoticed until the
//!   directory changes again.

use std::fs;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::spec::MacAddr;

use super::{DriverKind, Record, StateDir};

const INDEX_DIR: &str = "index";
const STAMP: &str = "stamp";
/// Bump when the layout changes: an index of another layout is rebuilt, never misread.
const INDEX_FORMAT: &str = "lanyard-index 1";
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Something a record holds that no other attachment may take (or, for a bridge, that must be
/// known without reading every record).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    Mac(MacAddr),
    HostIfname(String),
    /// A port of this bridge, which lanyard created (the last port to leave removes it).
    CreatedBridge(String),
}

impl Claim {
    fn of(record: &Record) -> Vec<Claim> {
        let mut claims = vec![Claim::Mac(record.mac)];
        if let Some(name) = &record.host_ifname {
            claims.push(Claim::HostIfname(name.clone()));
        }
        if record.created_bridge && record.driver == DriverKind::Bridge {
            claims.push(Claim::CreatedBridge(record.host_interface.clone()));
        }
        claims
    }

    /// The entry directory's name. Interface names are at most 15 bytes and hold no `/`, so
    /// every claim makes a valid, distinct file name.
    fn dir_name(&self) -> String {
        match self {
            Claim::Mac(mac) => {
                let hex: String = mac.0.iter().map(|b| format!("{b:02x}")).collect();
                format!("mac-{hex}")
            }
            Claim::HostIfname(name) => format!("host-ifname-{name}"),
            Claim::CreatedBridge(name) => format!("created-bridge-{name}"),
        }
    }

    fn held_by(&self, record: &Record) -> bool {
        Claim::of(record).contains(self)
    }
}

/// The index, known to be up to date with the records (see the module comment).
pub struct Index<'a> {
    state: &'a StateDir,
    dir: PathBuf,
}

impl<'a> Index<'a> {
    /// The index of `state`, rebuilt from every record first if it is not up to date. The
    /// caller holds the state lock.
    pub(super) fn open(state: &'a StateDir) -> Result<Index<'a>> {
        let index = Index { state, dir: index_dir(state) };
        if !is_fresh(state) {
            index.rebuild()?;
        }
        Ok(index)
    }

    /// Is `mac` held by a record?
    pub fn mac_taken(&self, mac: MacAddr) -> Result<bool> {
        Ok(self.holder(&Claim::Mac(mac))?.is_some())
    }

    /// Is `name` the recorded host end of some attachment?
    pub fn host_ifname_taken(&self, name: &str) -> Result<bool> {
        Ok(self.holder(&Claim::HostIfname(name.to_string()))?.is_some())
    }

    /// A recorded port of `bridge`, when lanyard created that bridge.
    pub fn created_bridge_port(&self, bridge: &str) -> Result<Option<Record>> {
        Ok(self.holders(&Claim::CreatedBridge(bridge.to_string()), true)?.pop())
    }

    /// Every recorded port of `bridge`, when lanyard created that bridge.
    pub fn created_bridge_ports(&self, bridge: &str) -> Result<Vec<Record>> {
        self.holders(&Claim::CreatedBridge(bridge.to_string()), false)
    }

    fn holder(&self, claim: &Claim) -> Result<Option<Record>> {
        Ok(self.holders(claim, true)?.pop())
    }

    /// The records that hold `claim` (with `first_only`, at most one), each read and checked;
    /// entries that turn out stale are dropped.
    fn holders(&self, claim: &Claim, first_only: bool) -> Result<Vec<Record>> {
        let dir = self.dir.join(claim.dir_name());
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == IoKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::with_source(ErrorKind::Io, format!("read {}", dir.display()), e))
            }
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.with_context(ErrorKind::Io, || format!("read {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match self.state.load(&name)? {
                Some(record) if claim.held_by(&record) => {
                    found.push(record);
                    if first_only {
                        return Ok(found);
                    }
                }
                // Stale: dropping it is tidying only (the answer does not depend on it).
                _ => {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        if found.is_empty() {
            // Empty now, unless someone added an entry meanwhile (then this fails, as it should).
            let _ = fs::remove_dir(&dir);
        }
        Ok(found)
    }

    /// Throw the index away and make it again from every record.
    fn rebuild(&self) -> Result<()> {
        static DISCARDED: AtomicU64 = AtomicU64::new(0);
        let records = self.state.records()?;
        // Moved aside in one step, so that a daemon removing a record meanwhile (it takes no
        // lock) only ever sees a whole index or none.
        let discarded = self.state.path().join(format!(
            ".index-discarded-{}-{}",
            std::process::id(),
            DISCARDED.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(&self.dir, &discarded) {
            Ok(()) => fs::remove_dir_all(&discarded).with_context(ErrorKind::Io, || {
                format!("remove the outdated index {} (remove it by hand)", discarded.display())
            })?,
            Err(e) if e.kind() == IoKind::NotFound => {}
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Io,
                    format!("move the outdated index {} aside", self.dir.display()),
                    e,
                ))
            }
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .with_context(ErrorKind::Io, || format!("create {}", self.dir.display()))?;
        for record in &records {
            add_entries(&self.dir, record, &record.file_name())
                .with_context(ErrorKind::Io, || format!("add to {}", self.dir.display()))?;
        }
        write_stamp(self.state)
            .with_context(ErrorKind::Io, || format!("write {}", self.dir.join(STAMP).display()))
    }
}

fn index_dir(state: &StateDir) -> PathBuf {
    state.path().join(INDEX_DIR)
}

/// What the stamp says when the index matches the state directory as it is now; `None` when
/// that cannot be told (then the index is never trusted).
fn current_stamp(state: &StateDir) -> Option<String> {
    let boot = fs::read_to_string(BOOT_ID_PATH).ok()?;
    let meta = fs::metadata(state.path()).ok()?;
    Some(format!(
        "{INDEX_FORMAT}\nboot {}\nstate-dir-mtime {}.{:09}\n",
        boot.trim(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// Does the index describe the records as they are?
pub(super) fn is_fresh(state: &StateDir) -> bool {
    let Some(current) = current_stamp(state) else { return false };
    fs::read_to_string(index_dir(state).join(STAMP)).is_ok_and(|stamp| stamp == current)
}

/// Record the state directory's present state as the one the index describes. Written in
/// place, neither renamed nor fsynced: a stamp torn by a crash or by two writers at once (the
/// daemon forgets a dead guest's record without the state lock), like one from another boot,
/// only fails to match, which rebuilds the index; and a stamp is written only after the
/// entries it vouches for. A rename would cost every attach and detach a journalled change.
fn write_stamp(state: &StateDir) -> std::io::Result<()> {
    let Some(stamp) = current_stamp(state) else {
        return Err(std::io::Error::other(format!("cannot read {BOOT_ID_PATH}")));
    };
    fs::write(index_dir(state).join(STAMP), stamp)
}

fn add_entries(index: &Path, record: &Record, file_name: &str) -> std::io::Result<()> {
    for claim in Claim::of(record) {
        let dir = index.join(claim.dir_name());
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == IoKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(file_name))?;
    }
    Ok(())
}

/// Keep the index in step with a record lanyard just wrote. When the index was up to date
/// before, it is again after (stamp renewed); when anything here fails, the stamp is removed
/// so that the next [`Index::open`] rebuilds: the index heals itself, so its upkeep never fails
/// the command that changed a record.
pub(super) fn record_saved(state: &StateDir, record: &Record, file_name: &str, was_fresh: bool) {
    let dir = index_dir(state);
    let kept =
        was_fresh && add_entries(&dir, record, file_name).is_ok() && write_stamp(state).is_ok();
    if !kept {
        let _ = fs::remove_file(dir.join(STAMP));
    }
}

/// Keep the index in step with a record lanyard just removed (same rules as [`record_saved`]).
pub(super) fn record_removed(state: &StateDir, record: &Record, file_name: &str, was_fresh: bool) {
    let dir = index_dir(state);
    for claim in Claim::of(record) {
        let claim_dir = dir.join(claim.dir_name());
        // An entry left behind is harmless: it is checked before it is believed.
        let _ = fs::remove_file(claim_dir.join(file_name));
        // Fails while other records still hold the claim, as it should.
        let _ = fs::remove_dir(&claim_dir);
    }
    let kept = was_fresh && write_stamp(state).is_ok();
    if !kept {
        let _ = fs::remove_file(dir.join(STAMP));
    }
}
