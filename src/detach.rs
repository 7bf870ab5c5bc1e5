//! detach: remove what lanyard made for a guest. Idempotent: a guest or link that is already
//! gone counts as detached, and every step runs even when an earlier one fails.

use crate::driver::{driver_for, remove_bridge_if_unused};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::state::{DriverKind, GuestRef, Record};

/// What a detach did, for the CLI to print.
#[derive(Debug, Default)]
pub struct Detached {
    pub interfaces: Vec<String>,
    /// What could not be done but did not stop the detach (e.g. no DHCPRELEASE).
    pub warnings: Vec<String>,
    pub removed_bridges: Vec<String>,
    pub restored_routes: usize,
}

/// The recorded guest's namespace, if it is still the one recorded.
pub(crate) fn live_guest_netns(host: &Host, record: &Record) -> Option<Netns> {
    crate::guest::locate(record, || host.docker()).map(|(netns, _)| netns)
}

/// Detach every lanyard interface of the guest named `token` (or only `guest_ifname`).
pub fn detach(host: &Host, token: &str, guest_ifname: Option<&str>) -> Result<Detached> {
    let _lock = host.state.lock()?;
    let records = host.state.records()?;
    let mut chosen: Vec<Record> = records
        .iter()
        .filter(|r| r.guest.matches(token) && guest_ifname.is_none_or(|i| i == r.guest_ifname))
        .cloned()
        .collect();
    if chosen.is_empty() && !token.starts_with("pid:") && !token.starts_with("netns:") {
        // A container may have been renamed; match by its current ID.
        if let Ok(Some(info)) = host.docker().and_then(|d| d.inspect(token)) {
            chosen = records
                .iter()
                .filter(|r| matches!(&r.guest, GuestRef::Container { id, .. } if *id == info.id))
                .filter(|r| guest_ifname.is_none_or(|i| i == r.guest_ifname))
                .cloned()
                .collect();
        }
    }
    let mut done = Detached::default();
    if chosen.is_empty() {
        return Ok(done);
    }
    let mut host_netlink = Netlink::open(&host.netns, "the host namespace")?;
    let mut errors = Vec::new();
    for record in &chosen {
        match detach_record(host, &mut host_netlink, record, &records, &mut done) {
            Ok(()) => done.interfaces.push(record.guest_ifname.clone()),
            Err(e) => errors.push(format!("{}: {e}", record.guest_ifname)),
        }
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(Error::new(
            crate::error::ErrorKind::Kernel,
            format!("detach {token}: {}", errors.join("; ")),
        ))
    }
}

/// Undo a finished attach whose lease never came (or whose caller gave up): the same steps as a
/// detach of exactly this record. Returns what could not be removed, one line each, for
/// [`crate::error::Error::with_leftovers`].
pub(crate) fn undo_attachment(host: &Host, record: &Record) -> Vec<String> {
    let undo = || -> Result<()> {
        let _lock = host.state.lock()?;
        let records = host.state.records()?;
        let mut host_netlink = Netlink::open(&host.netns, "the host namespace")?;
        detach_record(host, &mut host_netlink, record, &records, &mut Detached::default())
    };
    match undo() {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!(
            "{} of {} ({}): {e} (run: lanyard detach {} -i {})",
            record.guest_ifname,
            record.guest.display(),
            record.file_name(),
            record.guest.display(),
            record.guest_ifname
        )],
    }
}

fn detach_record(
    host: &Host,
    host_netlink: &mut Netlink,
    record: &Record,
    all: &[Record],
    done: &mut Detached,
) -> Result<()> {
    let guest_netns =
        if record.driver == DriverKind::Macvlan || !record.replaced_default_routes.is_empty() {
            live_guest_netns(host, record)
        } else {
            None
        };
    if record.dhcp.is_some() {
        // A daemon that cannot be reached must not keep the interface from going away: the
        // server then simply lets the lease run out.
        if let Err(e) = crate::lease::release(host, record) {
            done.warnings.push(format!("{}: no DHCPRELEASE sent: {e}", record.guest_ifname));
        }
    }
    let mut guest_netlink = match &guest_netns {
        Some(netns) => Some(Netlink::open(netns, format!("guest {}", record.guest.display()))?),
        None => None,
    };
    driver_for(record.driver).teardown(host_netlink, guest_netlink.as_mut(), record)?;
    if let Some(guest) = guest_netlink.as_mut() {
        // The interface, and lanyard's default route with it, is gone now.
        done.restored_routes +=
            crate::routes::restore_default_routes(guest, &record.replaced_default_routes, None)?;
    }
    if record.created_bridge {
        let still_used = all.iter().any(|other| {
            other.file_name() != record.file_name()
                && other.driver == DriverKind::Bridge
                && other.host_interface == record.host_interface
        });
        if !still_used && remove_bridge_if_unused(host_netlink, &record.host_interface)? {
            done.removed_bridges.push(record.host_interface.clone());
        }
    }
    host.state.remove(record)
}
