//! Host routes to macvlan guests (docker-pipework's `host_routes`): the kernel never delivers
//! frames between a macvlan parent and its own macvlan children, so the host cannot reach a
//! guest on a macvlan of its NIC through that NIC. lanyard gives the host a macvlan "shim" on
//! the same parent (mode bridge, so it talks to its sibling guests directly; up; no address but
//! the IPv6 link-local the kernel gives every interface, which neighbour discovery needs) and a
//! /32 (/128) route per guest address:
//! `ADDRESS dev lyh<parent ifindex> src <the host's own address on the parent> proto 108`.
//! The guest answers that source address: over IPv4 the shim answers ARP for it by itself (the
//! kernel answers for any of the host's addresses on any interface); over IPv6 it takes a proxy
//! NDP entry for it, which stays until the shim goes (see [`crate::sysctl::prepare_host_shim`]).
//!
//! Everything happens in the namespace of the [`Host`] handle, never the calling thread's.
//! The routes carry lanyard's own protocol number ([`ROUTE_PROTOCOL`]), so lanyard's routes are
//! known by identity: removal deletes exactly that route (destination, device, protocol), and
//! the shim goes, by its index, when no route of that protocol uses it any more.
//!
//! Concurrency: every add and remove runs under a lock file of its own in the state directory
//! ([`LOCK_FILE`]), so two processes never interleave "last route gone, delete the shim" with
//! "shim found, add a route". It is a lock of its own rather than the state lock because it is
//! held only across a few netlink requests and never while waiting on another process: the
//! daemon may add or remove a route from any path, even while a detach that holds the state lock
//! waits for the daemon's answer. Lock order: the state lock (when held) before this one; nothing
//! takes the state lock while holding this one. A process that dies between creating the shim
//! and adding its route leaves a shim without routes: the next add on that parent uses it, and
//! the next remove on that parent deletes it.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::link::MacVlanMode;

use crate::error::{Error, Result};
use crate::host::Host;
use crate::netlink::{DeviceRoute, LinkDetails, LinkKind, Netlink, NewLink};
use crate::state::StateLock;

/// The route protocol number (`proto`) of lanyard's host routes: unassigned in the kernel's and
/// iproute2's lists (`ip route show proto 108`).
pub const ROUTE_PROTOCOL: u8 = 108;

/// Every shim's name starts with this, followed by its parent's ifindex.
pub const SHIM_PREFIX: &str = "lyh";

/// The lock file, in the state directory, that serialises host-route changes.
pub const LOCK_FILE: &str = "host-routes.lock";

/// The shim's name on the parent with index `parent_index`: stable for as long as the parent
/// exists (and the shim, a child of the parent, cannot outlive it), at most 13 characters.
pub fn shim_name(parent_index: u32) -> String {
    format!("{SHIM_PREFIX}{parent_index}")
}

/// A host route as added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub shim: String,
    pub shim_index: u32,
    /// The guest's address: the route's destination (a /32 or /128).
    pub destination: IpAddr,
    /// The host's own address on the parent that the route sends from.
    pub source: IpAddr,
}

/// Give the host a route to `address` (a guest on a macvlan of `parent`), creating the shim if
/// it is missing. Idempotent: a route already there is kept (its source updated when the host's
/// address changed). Refused with a Conflict when the parent has no address in `address`'s
/// subnet, or when a route to `address` exists that is not lanyard's.
pub fn add(host: &Host, parent: &str, address: IpAddr) -> Result<HostRoute> {
    let mut netlink = Netlink::open(&host.netns, "the host namespace")?;
    add_with(host, &mut netlink, parent, address)
}

/// Remove the host route to `address` through `parent`'s shim, and the shim once no route of
/// lanyard's uses it. Idempotent: a route, shim or parent already gone counts as removed.
pub fn remove(host: &Host, parent: &str, address: IpAddr) -> Result<()> {
    let mut netlink = Netlink::open(&host.netns, "the host namespace")?;
    remove_with(host, &mut netlink, parent, address)
}

/// Remove the host routes of a record's static addresses (when it asked for them) through a
/// socket the caller has: what a detach and a stale record's replacement both do.
pub(crate) fn remove_recorded(
    host: &Host,
    netlink: &mut Netlink,
    record: &crate::state::Record,
) -> Result<()> {
    if record.host_route {
        for address in &record.addresses {
            remove_with(host, netlink, &record.host_interface, address.address.addr())?;
        }
    }
    Ok(())
}

/// [`add`] through a socket the caller already has in the host namespace.
pub(crate) fn add_with(
    host: &Host,
    netlink: &mut Netlink,
    parent: &str,
    address: IpAddr,
) -> Result<HostRoute> {
    let _lock = lock(host)?;
    let parent_link = parent_link(netlink, parent)?;
    let source = source_address(netlink, &parent_link, address)?;
    let (shim, created) = ensure_shim(host, netlink, &parent_link)?;
    let route = DeviceRoute {
        destination: IpNet::from(address),
        device_index: shim.index,
        source: Some(source),
        protocol: ROUTE_PROTOCOL,
    };
    let result = match source {
        // The guest's answers go to the host's address, which it resolves by neighbour
        // discovery: the shim answers for it (see sysctl::prepare_host_shim).
        IpAddr::V6(v6) => netlink.add_proxy_neighbour(shim.index, &shim.name, v6),
        IpAddr::V4(_) => Ok(()),
    }
    .and_then(|()| put_route(netlink, &route, &shim.name));
    if let Err(e) = result {
        // A shim this call made and nothing uses goes again; one that was there stays.
        if created {
            if let Err(undo) = remove_shim_if_unused(netlink, &shim) {
                return Err(e.with_leftovers(&[format!(
                    "shim {} in the host namespace: {undo} (remove it: ip link del {})",
                    shim.name, shim.name
                )]));
            }
        }
        return Err(e);
    }
    Ok(HostRoute { shim: shim.name, shim_index: shim.index, destination: address, source })
}

/// [`remove`] through a socket the caller already has in the host namespace.
pub(crate) fn remove_with(
    host: &Host,
    netlink: &mut Netlink,
    parent: &str,
    address: IpAddr,
) -> Result<()> {
    let _lock = lock(host)?;
    // A parent that is gone took its macvlans, the shim and its routes with it.
    let Some(parent_link) = netlink.link_by_name(parent)? else { return Ok(()) };
    let Some(shim) = netlink.link_by_name(&shim_name(parent_link.index))? else { return Ok(()) };
    if !is_shim_of(&shim, &parent_link) {
        // Someone else's interface under that name: lanyard never made a route on it.
        return Ok(());
    }
    netlink.delete_device_route(&DeviceRoute {
        destination: IpNet::from(address),
        device_index: shim.index,
        source: None,
        protocol: ROUTE_PROTOCOL,
    })?;
    remove_shim_if_unused(netlink, &shim)?;
    Ok(())
}

/// Check, changing nothing, that the host can have a route to `address` through `parent`: the
/// parent exists, is no bridge, and has the host's own address in `address`'s subnet. Returns
/// that source address. Attach calls it before wiring anything.
pub(crate) fn check(netlink: &mut Netlink, parent: &str, address: IpAddr) -> Result<IpAddr> {
    let parent_link = parent_link(netlink, parent)?;
    source_address(netlink, &parent_link, address)
}

/// The text of a leftover line for a host route that could not be removed.
pub(crate) fn remedy(parent: &str, address: IpAddr) -> String {
    format!(
        "remove it: ip route del {} proto {ROUTE_PROTOCOL}, then ip link del the {SHIM_PREFIX}* \
         shim on {parent} once no route uses it",
        IpNet::from(address)
    )
}

fn lock(host: &Host) -> Result<StateLock> {
    crate::state::lock_file(&host.state.path().join(LOCK_FILE))
}

fn parent_link(netlink: &mut Netlink, parent: &str) -> Result<LinkDetails> {
    let link = netlink.link_by_name(parent)?.ok_or_else(|| {
        Error::not_found(format!("host route: host interface {parent} does not exist"))
    })?;
    match link.kind {
        LinkKind::Loopback | LinkKind::Bridge => Err(Error::usage(format!(
            "host route via {parent}: only a macvlan parent needs one (the host reaches a \
             bridge's ports through the bridge's own address)"
        ))),
        _ => Ok(link),
    }
}

/// The host's own address on `parent` in a subnet that holds `address` (the longest prefix
/// wins): the source the host's packets to the guest carry, and the address the guest answers.
fn source_address(netlink: &mut Netlink, parent: &LinkDetails, address: IpAddr) -> Result<IpAddr> {
    let family = if address.is_ipv6() { "IPv6" } else { "IPv4" };
    let mut own: Vec<IpNet> = netlink
        .addresses()?
        .into_iter()
        .filter(|a| a.index == parent.index && a.address.contains(&address))
        .map(|a| a.address)
        .collect();
    own.sort_by_key(|net| std::cmp::Reverse(net.prefix_len()));
    match own.first() {
        Some(net) if net.addr() == address => Err(Error::conflict(format!(
            "host route to {address}: {address} is the host's own address on {}: give the guest \
             another one",
            parent.name
        ))),
        Some(net) => Ok(net.addr()),
        None => Err(Error::conflict(format!(
            "host route to {address}: the host has no {family} address on {} in a subnet holding \
             {address}, so it has nothing to reach the guest from: add one to {} (ip addr add \
             ADDRESS/PREFIX dev {}) or attach without --host-route",
            parent.name, parent.name, parent.name
        ))),
    }
}

fn is_shim_of(link: &LinkDetails, parent: &LinkDetails) -> bool {
    link.kind == LinkKind::Macvlan && link.parent == Some(parent.index)
}

/// The parent's shim, made (down, its sysctls written, then up) when missing. Returns it and
/// whether this call made it.
fn ensure_shim(
    host: &Host,
    netlink: &mut Netlink,
    parent: &LinkDetails,
) -> Result<(LinkDetails, bool)> {
    let name = shim_name(parent.index);
    if let Some(link) = netlink.link_by_name(&name)? {
        if !is_shim_of(&link, parent) {
            return Err(Error::conflict(format!(
                "host route via {}: interface {name} exists and is not lanyard's macvlan shim on \
                 {}: rename or remove it",
                parent.name, parent.name
            )));
        }
        if !link.up {
            netlink.set_up(link.index, &name)?;
        }
        return Ok((link, false));
    }
    netlink.create_link(&NewLink::LocalMacvlan {
        name: &name,
        parent: parent.index,
        mode: MacVlanMode::Bridge,
    })?;
    let configure = |netlink: &mut Netlink| -> Result<LinkDetails> {
        let link = netlink.link_by_name(&name)?.ok_or_else(|| {
            Error::not_found(format!("shim {name} vanished from the host right after creation"))
        })?;
        let sysctl_name = name.clone();
        host.netns.run(move || crate::sysctl::prepare_host_shim(&sysctl_name))?;
        netlink.set_up(link.index, &name)?;
        Ok(link)
    };
    match configure(netlink) {
        Ok(link) => Ok((link, true)),
        Err(e) => match netlink.delete_link_by_name(&name) {
            Ok(()) => Err(e),
            Err(undo) => Err(e.with_leftovers(&[format!(
                "shim {name} in the host namespace: {undo} (remove it: ip link del {name})"
            )])),
        },
    }
}

/// Add `route`, or keep lanyard's own route to the same destination (replacing it when its
/// device or source differ); refuse a route to the destination that is someone else's.
fn put_route(netlink: &mut Netlink, route: &DeviceRoute, shim: &str) -> Result<()> {
    let existing: Vec<_> = netlink
        .main_routes(route.destination.addr().is_ipv6())?
        .into_iter()
        .filter(|r| r.destination == route.destination)
        .collect();
    if let Some(other) = existing.iter().find(|r| r.protocol != ROUTE_PROTOCOL) {
        let device = match other.device_index {
            Some(index) => {
                netlink.link_by_index(index)?.map(|l| l.name).unwrap_or_else(|| format!("#{index}"))
            }
            None => "?".to_string(),
        };
        return Err(Error::conflict(format!(
            "host route to {}: the host already has a route there (dev {device}, proto {}), not \
             lanyard's: remove it or attach without --host-route",
            route.destination, other.protocol
        )));
    }
    let same = existing
        .iter()
        .any(|r| r.device_index == Some(route.device_index) && r.source == route.source);
    if same {
        return Ok(());
    }
    // Replace: a route of lanyard's to the same guest through an older shim or from a former
    // address of the host is brought up to date instead of refused.
    netlink
        .add_device_route(route, !existing.is_empty())
        .map_err(|e| e.context(format!("host route via {shim}")))
}

/// Delete the shim when no route of lanyard's uses it any more; says whether it did.
fn remove_shim_if_unused(netlink: &mut Netlink, shim: &LinkDetails) -> Result<bool> {
    if netlink.routes_on_device(shim.index)?.iter().any(|r| r.protocol == ROUTE_PROTOCOL) {
        return Ok(false);
    }
    netlink.delete_link(shim.index, &shim.name)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_names_fit_an_interface_name_for_every_index() {
        assert_eq!(shim_name(7), "lyh7");
        let longest = shim_name(u32::MAX);
        assert!(longest.len() <= 15, "{longest}");
        crate::spec::validate_ifname(&longest, "shim").expect("a valid interface name");
    }
}
