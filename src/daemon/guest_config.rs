//! A lease's changes inside the guest: its address, MTU, routes (through [`crate::routes`]) and,
//! when asked, the guest's resolv.conf; and taking them away again when the lease is lost.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use crate::dhcp::Lease;
use crate::error::{Error, Result};
use crate::netlink::{Netlink, NewRoute};
use crate::routes;
use crate::state::GuestRef;

use super::Slot;

/// Whether two leases configure the guest identically (only their times differ).
pub(super) fn same_configuration(a: &Lease, b: &Lease) -> bool {
    a.address == b.address
        && a.prefix_len == b.prefix_len
        && a.routes() == b.routes()
        && a.mtu == b.mtu
        && a.dns_servers == b.dns_servers
        && a.domain_name == b.domain_name
        && a.domain_search == b.domain_search
}

pub(super) fn lease_net(lease: &Lease) -> IpNet {
    IpNet::V4(
        Ipv4Net::new(lease.address, lease.prefix_len)
            .unwrap_or_else(|_| Ipv4Net::from(lease.address)),
    )
}

/// A guest's resolv.conf to write. Handed to a thread by the daemon: the write ends with an
/// fsync, which the lease loop does not wait for.
pub(super) struct ResolvWrite {
    target: crate::resolv::GuestFiles,
    conf: crate::resolv::ResolvConf,
    interface: String,
}

impl ResolvWrite {
    pub(super) fn write(&self) -> Result<()> {
        crate::resolv::write_guest_resolv_conf(&self.target, &self.conf, &self.interface)
    }
}

/// A Docker plugin endpoint's lease is configured by Docker (the address from IPAM's answer,
/// the route from Join's gateway), and its link spends time in the host namespace (before Join,
/// after the container stops), where a lease must change nothing; a CNI attachment where
/// lanyard is the IPAM plugin is configured by the main plugin from lanyard's result. The
/// daemon only keeps those leases.
fn runtime_configures(slot: &Slot) -> bool {
    matches!(
        slot.record.guest,
        GuestRef::DockerEndpoint { .. } | GuestRef::Cni { ipam_only: true, .. }
    )
}

/// Apply a lease in the guest, idempotently (every renewal comes here too): the address, the
/// routes (option 121 or a default route via the router, replacing the guest's default route,
/// which is kept to be restored). DNS for the guest's resolv.conf, when asked, is returned to
/// be written off the loop.
pub(super) fn configure(slot: &mut Slot, lease: &Lease) -> Result<Option<ResolvWrite>> {
    if runtime_configures(slot) {
        return Ok(None);
    }
    let Some(live) = &slot.live else { return Ok(None) };
    let ifname = slot.record.guest_ifname.clone();
    let mut netlink = Netlink::open(&live.netns, format!("guest {}", slot.record.guest.display()))?;
    let net = lease_net(lease);
    match netlink.add_address(live.ifindex, &ifname, &net) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    if let Some(mtu) = lease.mtu {
        // Never above what the host side carries (the MTU recorded at attach).
        let mtu = u32::from(mtu).min(slot.record.mtu);
        if mtu >= 68 {
            netlink.set_mtu(live.ifindex, &ifname, mtu)?;
        }
    }
    // A router outside the leased subnet (a /32 lease on a hosting network, RFC 3442 routes via
    // off-subnet gateways) is reached through an on-link host route, as dhclient does.
    let subnets = [net];
    for route in lease.routes() {
        let destination =
            IpNet::V4(Ipv4Net::new(route.destination, route.prefix_len).unwrap_or_default());
        let gateway = (!route.gateway.is_unspecified()).then_some(IpAddr::V4(route.gateway));
        match gateway {
            Some(gateway) if route.prefix_len == 0 => {
                let replaced =
                    routes::take_over_default_route(&mut netlink, gateway, live.ifindex, &subnets)?;
                // Only the first takeover finds the guest's own route; renewals find lanyard's.
                if slot.stored.replaced_default_routes.is_empty() {
                    slot.stored.replaced_default_routes = replaced;
                }
            }
            Some(gateway) => routes::add_gateway_route(
                &mut netlink,
                destination,
                gateway,
                live.ifindex,
                &subnets,
                true,
            )?,
            None => netlink.add_route(
                &NewRoute { destination, gateway: None, device_index: live.ifindex, metric: None },
                true,
            )?,
        }
    }
    let settings = slot.record.dhcp.clone();
    if settings.is_some_and(|s| s.set_resolv) && !lease.dns_servers.is_empty() {
        let target = match (&slot.record.guest, live.pid) {
            (GuestRef::Netns { name }, _) => {
                crate::resolv::GuestFiles::NetnsEtc { name: name.clone() }
            }
            (_, Some(pid)) => crate::resolv::GuestFiles::ProcessRoot { pid },
            _ => {
                return Err(Error::unsupported(
                    "--set-resolv for a guest given as a namespace path",
                ))
            }
        };
        let conf = crate::resolv::ResolvConf {
            nameservers: lease.dns_servers.iter().map(|d| IpAddr::V4(*d)).collect(),
            search: lease.domain_search.clone(),
            domain: lease.domain_name.clone(),
        };
        return Ok(Some(ResolvWrite { target, conf, interface: ifname }));
    }
    Ok(None)
}

/// Remove a lost lease's address and routes, and give the guest its old default route back.
pub(super) fn deconfigure(slot: &mut Slot, lease: &Lease) -> Result<()> {
    if runtime_configures(slot) {
        return Ok(());
    }
    let Some(live) = &slot.live else { return Ok(()) };
    let mut netlink = Netlink::open(&live.netns, format!("guest {}", slot.record.guest.display()))?;
    let net = lease_net(lease);
    let subnets = [net];
    for route in lease.routes() {
        let destination =
            IpNet::V4(Ipv4Net::new(route.destination, route.prefix_len).unwrap_or_default());
        match (!route.gateway.is_unspecified()).then_some(IpAddr::V4(route.gateway)) {
            Some(gateway) => routes::remove_gateway_route(
                &mut netlink,
                destination,
                gateway,
                live.ifindex,
                &subnets,
            )?,
            None => netlink.delete_route(&NewRoute {
                destination,
                gateway: None,
                device_index: live.ifindex,
                metric: None,
            })?,
        }
    }
    netlink.delete_address(live.ifindex, &slot.record.guest_ifname, &net)?;
    // Through the same socket: the lease's routes are gone, so the guest's own default route
    // can come back (see [`restore_routes`]).
    let replaced = std::mem::take(&mut slot.stored.replaced_default_routes);
    routes::restore_default_routes(&mut netlink, &replaced, Some(live.ifindex)).map(|_| ())
}

/// Give the guest back the default routes the lease's router replaced (unless something else
/// set one since: see [`routes::restore_default_routes`]).
pub(super) fn restore_routes(slot: &mut Slot) -> Result<()> {
    let replaced = std::mem::take(&mut slot.stored.replaced_default_routes);
    let Some(live) = &slot.live else { return Ok(()) };
    if replaced.is_empty() {
        return Ok(());
    }
    let mut netlink = Netlink::open(&live.netns, format!("guest {}", slot.record.guest.display()))?;
    routes::restore_default_routes(&mut netlink, &replaced, Some(live.ifindex)).map(|_| ())
}
