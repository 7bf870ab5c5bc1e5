//! detach: remove what lanyard made for a guest. Idempotent: a guest or link that is already
//! gone counts as detached, and every step runs even when an earlier one fails.

use crate::driver::{driver_for, remove_bridge_if_unused};
use crate::error::{Error, ErrorKind, Result};
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
    let lock = host.state.lock()?;
    let chosen = chosen_records(host, token, guest_ifname)?;
    let mut done = Detached::default();
    if chosen.is_empty() {
        return Ok(done);
    }
    let mut host_netlink = Netlink::open(&host.netns, "the host namespace")?;
    let mut errors = Vec::new();
    for record in &chosen {
        match detach_record(host, &lock, &mut host_netlink, record, &mut done) {
            Ok(()) => done.interfaces.push(record.guest_ifname.clone()),
            Err(e) => errors.push(format!("{}: {e}", record.guest_ifname)),
        }
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(Error::new(ErrorKind::Kernel, format!("detach {token}: {}", errors.join("; "))))
    }
}

/// Detach exactly `record` (the caller holds the state lock): what a declaration that changed,
/// or a container Docker no longer has, leaves to remove.
pub(crate) fn detach_locked(
    host: &Host,
    lock: &crate::state::StateLock,
    host_netlink: &mut Netlink,
    record: &Record,
) -> Result<()> {
    detach_record(host, lock, host_netlink, record, &mut Detached::default())
}

/// Detach exactly `record` if it is still recorded as it was read: a record replaced meanwhile
/// (the same container name re-created and attached again) is someone else's now and stays.
/// Returns whether it was detached.
pub fn detach_exact(host: &Host, record: &Record) -> Result<bool> {
    let lock = host.state.lock()?;
    let current = host.state.slot_records(&record.guest, &record.guest_ifname)?;
    if !current.iter().any(|r| r == record) {
        return Ok(false);
    }
    let mut host_netlink = Netlink::open(&host.netns, "the host namespace")?;
    detach_record(host, &lock, &mut host_netlink, record, &mut Detached::default())?;
    Ok(true)
}

/// Undo a finished attach whose lease never came (or whose caller gave up): the same steps as a
/// detach of exactly this record. Returns what could not be removed, one line each, for
/// [`crate::error::Error::with_leftovers`].
pub(crate) fn undo_attachment(host: &Host, record: &Record) -> Vec<String> {
    let undo = || -> Result<()> {
        let lock = host.state.lock()?;
        let mut host_netlink = Netlink::open(&host.netns, "the host namespace")?;
        detach_record(host, &lock, &mut host_netlink, record, &mut Detached::default())
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

/// The records `token` names. `netns:NAME` and `pid:N` name exactly one guest, whose records are
/// found by their file names; any other token may be a container's name or ID (prefix), a
/// namespace name or a pid, so every record is read.
fn chosen_records(host: &Host, token: &str, guest_ifname: Option<&str>) -> Result<Vec<Record>> {
    let wanted = |r: &Record| guest_ifname.is_none_or(|i| i == r.guest_ifname);
    let exact = match (token.strip_prefix("netns:"), token.strip_prefix("pid:")) {
        (Some(name), _) => Some(GuestRef::Netns { name: name.to_string() }),
        (_, Some(pid)) => pid.parse().ok().map(|pid| GuestRef::Pid { pid }),
        _ => None,
    };
    if let Some(guest) = exact {
        return Ok(host.state.guest_records(&guest)?.into_iter().filter(wanted).collect());
    }
    let records = host.state.records()?;
    let chosen: Vec<Record> =
        records.iter().filter(|r| r.guest.matches(token) && wanted(r)).cloned().collect();
    if !chosen.is_empty() {
        return Ok(chosen);
    }
    // A container may have been renamed; match by its current ID.
    match host.docker().and_then(|d| d.inspect(token)) {
        Ok(Some(info)) => Ok(records
            .into_iter()
            .filter(|r| matches!(&r.guest, GuestRef::Container { id, .. } if *id == info.id))
            .filter(wanted)
            .collect()),
        _ => Ok(Vec::new()),
    }
}

fn detach_record(
    host: &Host,
    lock: &crate::state::StateLock,
    host_netlink: &mut Netlink,
    record: &Record,
    done: &mut Detached,
) -> Result<()> {
    let plugin_guest_end = match &record.guest {
        GuestRef::DockerEndpoint { .. } => plugin_guest_end(host, host_netlink, record)?,
        _ => None,
    };
    let guest_netns =
        if record.driver == DriverKind::Macvlan || !record.replaced_default_routes.is_empty() {
            live_guest_netns(host, record)
        } else {
            None
        };
    crate::daemon::dns::take_back(host, record);
    if record.dhcp.is_some() {
        // A daemon that cannot be reached must not keep the interface from going away: the
        // server then simply lets the lease run out.
        if let Err(e) = crate::lease::release(host, record) {
            done.warnings.push(format!("{}: no DHCPRELEASE sent: {e}", record.guest_ifname));
        }
    }
    if matches!(record.guest, GuestRef::Cni { ipam_only: true, .. }) {
        // lanyard was the IPAM plugin: the link and its configuration are the main plugin's,
        // which removes them on its own DEL. Only the lease (released above) was lanyard's.
        return host.state.remove(record);
    }
    let mut guest_netlink = match &guest_netns {
        Some(netns) => Some(Netlink::open(netns, format!("guest {}", record.guest.display()))?),
        None => None,
    };
    // Another record on a bridge lanyard made keeps it, even when that guest's link is gone for
    // now. Asked before the removal starts, so the index is read while nothing changes it.
    let bridge_still_used = record.created_bridge
        && host
            .state
            .index(lock)?
            .created_bridge_ports(&record.host_interface)?
            .iter()
            .any(|other| other.file_name() != record.file_name());
    // The record's removal (a few journalled file operations on a disk state directory) runs
    // beside the kernel's link deletion (~20 ms for a veth) instead of after it. The state lock
    // is held, so nobody sees the record gone before the link; if the kernel part fails, the
    // record is written back, so the detach can be retried.
    let (changes, removal) = std::thread::scope(|scope| {
        let removal = scope.spawn(|| host.state.remove(record));
        let changes = undo_in_kernel(
            host,
            host_netlink,
            guest_netlink.as_mut(),
            record,
            plugin_guest_end,
            bridge_still_used,
            done,
        );
        let removal = removal
            .join()
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "removing the record panicked")));
        (changes, removal)
    });
    match (changes, removal) {
        (Ok(()), removal) => removal,
        (Err(e), Ok(())) => match host.state.save(record) {
            Ok(_) => Err(e),
            Err(kept) => Err(e.with_leftovers(&[format!(
                "the record {} could not be written back: {kept} (lanyard forgot this attachment)",
                record.file_name()
            )])),
        },
        (Err(e), Err(_)) => Err(e),
    }
}

/// A Docker plugin endpoint's macvlan child, to remove with the record: found in the host
/// namespace (the daemon's, where the plugin makes it) by its name and MAC, where it is before
/// Join, after its container stopped, or when Docker forgot the endpoint. A veth needs nothing
/// here: its host end takes it along. An endpoint whose link Docker has moved into a running
/// container is Docker's: refused, with what to do, rather than pulled out from under it.
fn plugin_guest_end(
    host: &Host,
    host_netlink: &mut Netlink,
    record: &Record,
) -> Result<Option<u32>> {
    let link = host_netlink
        .link_by_name(&record.guest_ifname)?
        .filter(|link| link.mac == Some(record.mac.0));
    if let Some(link) = link {
        return Ok((record.driver == DriverKind::Macvlan).then_some(link.index));
    }
    let store = crate::plugin::store::Store::load(host.state.path())?;
    let file = record.file_name();
    if let Some(endpoint) = store.endpoints.values().find(|e| e.record == file && e.joined) {
        return Err(Error::conflict(format!(
            "Docker endpoint {} (network {}) is in use: its interface is in a container Docker \
             runs; remove the container (docker rm -f) or disconnect it (docker network \
             disconnect), and Docker removes the endpoint itself (lanyard detach is for \
             endpoints Docker no longer uses)",
            &endpoint.id[..endpoint.id.len().min(12)],
            &endpoint.network[..endpoint.network.len().min(12)]
        )));
    }
    Ok(None)
}

/// The kernel side of a detach: the host's routes to the guest (`--host-route`, also when the
/// guest is gone: they live in the host), the link, the guest's default routes, and a bridge
/// lanyard made once nothing uses it.
fn undo_in_kernel(
    host: &Host,
    host_netlink: &mut Netlink,
    mut guest_netlink: Option<&mut Netlink>,
    record: &Record,
    plugin_guest_end: Option<u32>,
    bridge_still_used: bool,
    done: &mut Detached,
) -> Result<()> {
    crate::host_routes::remove_recorded(host, host_netlink, record)?;
    if let Some(index) = plugin_guest_end {
        // A macvlan child has no host end to take it along.
        host_netlink.delete_link(index, &record.guest_ifname)?;
    }
    driver_for(record.driver).teardown(host_netlink, guest_netlink.as_deref_mut(), record)?;
    if let Some(guest) = guest_netlink {
        // The interface, and lanyard's default route with it, is gone now.
        done.restored_routes +=
            crate::routes::restore_default_routes(guest, &record.replaced_default_routes, None)?;
    }
    if record.created_bridge
        && !bridge_still_used
        && remove_bridge_if_unused(host_netlink, &record.host_interface)?
    {
        done.removed_bridges.push(record.host_interface.clone());
    }
    Ok(())
}
