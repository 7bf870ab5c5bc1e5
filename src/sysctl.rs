//! Per-interface sysctls, written from a thread inside the guest (a /proc/sys/net file shows the
//! namespace of the thread that opens it). Never `all` or `default`: lanyard changes only its
//! own interface.

use std::fs::OpenOptions;
use std::io::Write;

use crate::error::{ErrorKind, Result, ResultExt};

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .with_context(ErrorKind::Kernel, || format!("write {value} to {path}"))
}

/// Enable IPv6 on one interface for static addresses: IPv6 on (Docker turns it off in `--net
/// none` containers) and router advertisements ignored, so only the configured addresses and
/// routes apply.
pub fn enable_ipv6_static(ifname: &str) -> Result<()> {
    write_sysctl(&format!("/proc/sys/net/ipv6/conf/{ifname}/accept_ra"), "0")?;
    write_sysctl(&format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"), "0")
}
