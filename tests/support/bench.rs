//! What the benches share besides the lab: their knobs (counts from the environment), the
//! statistics they print, and where a state directory lives. Included with
//! `#[path = "../tests/support/bench.rs"]`; nothing here is used by the integration tests.

use std::path::Path;
use std::time::Duration;

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
