//! Per-interface sysctls, written from a thread inside the guest (a /proc/sys/net file shows the
//! namespace of the thread that opens it). Never `all` or `default`: lanyard changes only its
//! own interface.

use std::fs::OpenOptions;
use std::io::Write;

use crate::error::{ErrorKind, Result, ResultExt};

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    let written = OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()));
    let read_only = matches!(&written, Err(e) if e.raw_os_error() == Some(libc::EROFS));
    written.with_context(ErrorKind::Kernel, || {
        if read_only {
            // What a daemon run as a container meets: Docker mounts /proc/sys read-only.
            format!(
                "write {value} to {path} (/proc/sys is read-only here: run lanyard's container \
                 with --security-opt systempaths=unconfined or --privileged)"
            )
        } else {
            format!("write {value} to {path}")
        }
    })
}

/// Enable IPv6 on one interface (Docker turns it off in `--net none` containers). Without
/// `slaac`, router advertisements are ignored so only the configured addresses and routes apply;
/// with it, RAs are accepted (2: even if the guest forwards) and addresses autoconfigured as
/// EUI-64 from the interface's stable MAC, so they survive restarts.
pub fn enable_ipv6(ifname: &str, slaac: bool) -> Result<()> {
    let conf = format!("/proc/sys/net/ipv6/conf/{ifname}");
    if slaac {
        write_sysctl(&format!("{conf}/addr_gen_mode"), "0")?;
        write_sysctl(&format!("{conf}/autoconf"), "1")?;
        write_sysctl(&format!("{conf}/accept_ra"), "2")?;
    } else {
        write_sysctl(&format!("{conf}/accept_ra"), "0")?;
    }
    write_sysctl(&format!("{conf}/disable_ipv6"), "0")
}

/// Refuse router advertisements on one interface whose IPv6 is left as the guest has it. A
/// kernel without IPv6 (booted with ipv6.disable=1) has no such file and nothing to refuse.
pub fn ignore_router_advertisements(ifname: &str) -> Result<()> {
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    write_sysctl(&format!("/proc/sys/net/ipv6/conf/{ifname}/accept_ra"), "0")
}

/// IPv6 on the host's host-route shim (see [`crate::host_routes`]), written before it comes up:
/// - no router advertisement, so no RA puts addresses or a second default route on it;
/// - no duplicate address detection of its link-local address, which neighbour discovery
///   toward the guests needs at once;
/// - proxy NDP without delay: a guest resolving the host's address (which lives on the parent,
///   where the guest's frames never arrive) gets the shim's answer, as IPv4 ARP gives it
///   unasked. The kernel answers for a proxy entry only on an interface with `forwarding` set;
///   that per-interface flag does not make the host forward packets (the `all` one decides).
///
/// A kernel without IPv6 has nothing to set.
pub fn prepare_host_shim(ifname: &str) -> Result<()> {
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    let conf = format!("/proc/sys/net/ipv6/conf/{ifname}");
    write_sysctl(&format!("{conf}/forwarding"), "1")?;
    write_sysctl(&format!("{conf}/accept_ra"), "0")?;
    write_sysctl(&format!("{conf}/autoconf"), "0")?;
    write_sysctl(&format!("{conf}/accept_dad"), "0")?;
    write_sysctl(&format!("{conf}/proxy_ndp"), "1")?;
    write_sysctl(&format!("/proc/sys/net/ipv6/neigh/{ifname}/proxy_delay"), "0")
}
