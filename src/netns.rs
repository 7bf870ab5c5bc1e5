//! A network namespace handle: an open file descriptor on the namespace, plus its identity
//! (device and inode) so a replaced namespace is noticed. Work inside a namespace happens on a
//! dedicated thread that enters it and ends, so no other thread (an async worker, a cargo test
//! thread) ever changes namespace.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, ResultExt};

/// The identity of a namespace: two handles name the same namespace exactly when these match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl std::fmt::Display for NetnsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}] on dev {}", self.ino, self.dev)
    }
}

#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    id: NetnsId,
    /// Where it was opened from, for messages.
    origin: PathBuf,
}

impl Netns {
    /// The namespace the calling thread is in (the CLI's notion of "the host").
    pub fn current() -> Result<Netns> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn open(path: &Path) -> Result<Netns> {
        let file = File::open(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Io
            };
            Error::with_source(kind, format!("open network namespace {}", path.display()), e)
        })?;
        let meta = file
            .metadata()
            .with_context(ErrorKind::Io, || format!("stat network namespace {}", path.display()))?;
        // A path to anything but an nsfs file would make setns fail later with a vague EINVAL.
        const NSFS_MAGIC: i64 = 0x6e73_6673;
        let fs = nix::sys::statfs::fstatfs(&file)
            .with_context(ErrorKind::Io, || format!("statfs {}", path.display()))?;
        if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
            return Err(Error::usage(format!(
                "{} is not a network namespace file (expected /run/netns/NAME or /proc/PID/ns/net)",
                path.display()
            )));
        }
        Ok(Netns {
            fd: file.into(),
            id: NetnsId { dev: meta.dev(), ino: meta.ino() },
            origin: path.to_path_buf(),
        })
    }

    pub fn from_pid(pid: u32) -> Result<Netns> {
        Self::open(&PathBuf::from(format!("/proc/{pid}/ns/net")))
            .map_err(|e| e.context(format!("process {pid}")))
    }

    pub fn from_name(name: &str) -> Result<Netns> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::usage(format!("bad namespace name {name:?}")));
        }
        Self::open(&Path::new("/run/netns").join(name))
    }

    pub fn id(&self) -> NetnsId {
        self.id
    }

    pub fn origin(&self) -> &Path {
        &self.origin
    }

    pub fn try_clone(&self) -> Result<Netns> {
        let fd = self
            .fd
            .try_clone()
            .with_context(ErrorKind::Io, || format!("dup handle of {}", self.origin.display()))?;
        Ok(Netns { fd, id: self.id, origin: self.origin.clone() })
    }

    /// Is the calling thread already inside this namespace? Checked, never assumed.
    fn is_calling_threads(&self) -> bool {
        std::fs::metadata("/proc/thread-self/ns/net")
            .is_ok_and(|meta| NetnsId { dev: meta.dev(), ino: meta.ino() } == self.id)
    }

    /// Run `work` inside this namespace: directly when the calling thread is already in it (the
    /// CLI working on its own host namespace skips a thread per netlink socket), otherwise on a
    /// fresh thread that has entered the namespace; the thread ends afterwards,
    /// so the namespace switch never leaks into the caller or a thread pool.
    pub fn run<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send,
        T: Send,
    {
        if self.is_calling_threads() {
            return work();
        }
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("lanyard-netns".into())
                .spawn_scoped(scope, || {
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)
                        .with_context(ErrorKind::Kernel, || {
                            format!("enter network namespace {}", self.origin.display())
                        })?;
                    work()
                })
                .with_context(ErrorKind::Io, || "spawn a thread to enter a namespace")?;
            handle
                .join()
                .map_err(|_| Error::new(ErrorKind::Io, "a namespace worker thread panicked"))?
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_namespace_has_an_identity_and_rejects_non_nsfs_paths() {
        let here = Netns::current().unwrap();
        let again = Netns::open(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(here.id(), again.id());
        let err = Netns::open(Path::new("/proc/self/status")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
        let err = Netns::from_name("../etc").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
    }

    #[test]
    fn work_in_the_callers_own_namespace_runs_on_the_callers_thread() {
        let here = Netns::current().unwrap();
        let caller = std::thread::current().id();
        let ran_on = here.run(|| Ok(std::thread::current().id())).unwrap();
        assert_eq!(ran_on, caller, "no thread is spawned to enter a namespace we are in");
    }
}
