//! What the benches share besides the lab: their knobs (counts from the environment), the
//! statistics they print, and where a state directory lives. Included with
//! `#[path = "../tests/support/bench.rs"]`; nothing here is used by the integration tests.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// The count in environment variable `name`, or `default` when it is not set. Panics on a value
/// that is not a number: a typo must not silently run the default.
pub fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
        Err(_) => default,
    }
}

/// The `p` quantile (0..=1) by the nearest-rank method; zero for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The median (the mean of the middle two for an even count); zero for no samples.
pub fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// Milliseconds with two decimals, the unit of every bench table.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The file system `path` is on, by name: a state directory on tmpfs and one on disk differ by
/// the cost of fsync.
pub fn fs_type(path: &Path) -> &'static str {
    use nix::sys::statfs::{
        statfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC,
        XFS_SUPER_MAGIC,
    };
    match statfs(path).map(|s| s.filesystem_type()) {
        Ok(t) if t == TMPFS_MAGIC => "tmpfs",
        Ok(t) if t == EXT4_SUPER_MAGIC => "ext4",
        Ok(t) if t == XFS_SUPER_MAGIC => "xfs",
        Ok(t) if t == BTRFS_SUPER_MAGIC => "btrfs",
        Ok(t) if t == OVERLAYFS_SUPER_MAGIC => "overlay",
        Ok(_) => "other fs",
        Err(_) => "unknown fs",
    }
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them: how busy the machine was
/// while a bench ran.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Waits until every announce helper lanyard left behind (a child of this process, which must
/// be a subreaper to inherit the detached helper, whose command line has `announce-helper`) has
/// exited, and reaps it. By the time the lanyard process that spawned it has been waited for,
/// its helper is already this process's child. Panics after `timeout`. (Not every bench that
/// includes this file starts lanyard processes that announce.)
#[allow(dead_code)]
pub fn wait_for_announce_helpers(timeout: Duration) {
    let me = std::process::id().to_string();
    let deadline = Instant::now() + timeout;
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let helpers: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.to_string();
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let is_helper = cmdline.split(|b| *b == 0).any(|arg| arg == b"announce-helper");
            (parent == me && is_helper).then_some(pid)
        })
        .collect();
    for pid in helpers {
        // SAFETY: pidfd_open takes a pid and a flags word and returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if raw >= 0 {
            // SAFETY: the kernel just returned this descriptor and nothing else owns it.
            let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            let ready = poll(&mut fds, timeout).unwrap_or(0);
            assert!(ready > 0, "lanyard announce helper {pid} still runs after {timeout:?}");
        }
        // Gone before pidfd_open or exited now: reap it (a zombie until then).
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }
}
