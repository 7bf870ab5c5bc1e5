//! The changes of an attach, in order: the link (by its driver), the interface's sysctls, up,
//! addresses, the host's routes to them (`--host-route`, through [`crate::host_routes`]), the
//! default route and extra routes (through [`crate::routes`]), then the record.
//! Each change is logged in the rollback before the next one starts.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::driver::{Driver, LinkPlan, LinkRequest};
use crate::error::{Error, Result};
use crate::guest::Guest;
use crate::host::Host;
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::spec::{AddressSpec, MacAddr, MacScheme};
use crate::state::{DriverKind, Record, RECORD_VERSION};
use crate::{naming, routes, sysctl};

use super::rollback::{Rollback, Undo};
use super::{check_fail, now_unix, AttachRequest, Attached, FailPoint};

/// Everything an attach decided, against the kernel, before changing anything.
pub(super) struct Plan<'a> {
    pub host: &'a Host,
    pub request: &'a AttachRequest,
    pub guest: &'a Guest,
    pub driver: &'a dyn Driver,
    pub link: LinkRequest<'a>,
    pub link_plan: LinkPlan,
    pub mac: MacAddr,
    /// The bridge was created by lanyard for an attachment still recorded: it stays lanyard's,
    /// so the last port to leave removes it, whichever attach created it.
    pub bridge_is_lanyards: bool,
}

/// The netlink sockets an attach works through, one per namespace.
pub(super) struct Sockets {
    pub host: Netlink,
    pub guest: Netlink,
}

/// Make the changes the plan says, in order, recording how to undo each in `rollback`.
pub(super) fn wire(
    plan: &Plan,
    sockets: &mut Sockets,
    rollback: &mut Rollback,
) -> Result<Attached> {
    let (host, request, guest, driver, mac) =
        (plan.host, plan.request, plan.guest, plan.driver, plan.mac);
    let (host_netlink, guest_netlink) = (&mut sockets.host, &mut sockets.guest);
    let created = driver.setup(host_netlink, &guest.netns, &plan.link, &plan.link_plan)?;
    if created.created_bridge {
        rollback.steps.push(Undo::RemoveBridgeIfUnused(request.host_interface.clone()));
    }
    match &created.host_link {
        Some(name) => rollback.steps.push(Undo::DeleteHostLink(name.clone())),
        None => rollback.steps.push(Undo::DeleteGuestLink(request.guest_ifname.clone())),
    }
    check_fail(request, FailPoint::AfterLink)?;

    let link = guest_netlink.link_by_name(&request.guest_ifname)?.ok_or_else(|| {
        Error::not_found(format!("{} vanished from the guest after creation", request.guest_ifname))
    })?;
    let has_ipv6 = request.addresses.iter().any(|a| a.address.addr().is_ipv6());
    let slaac = request.dhcp.as_ref().is_some_and(|d| d.slaac);
    // Written inside the guest (sysctls are per namespace), on lanyard's own interface only.
    // Docker sets disable_ipv6=1 for all/default in --net none containers: enabled here only
    // when IPv6 is asked for. Either way no router advertisement is accepted unless --slaac
    // asks for it, so an IPv4-only interface never picks up a stray RA's addresses or route.
    let ifname = request.guest_ifname.clone();
    guest.netns.run(move || {
        if has_ipv6 || slaac {
            sysctl::enable_ipv6(&ifname, slaac)
        } else {
            sysctl::ignore_router_advertisements(&ifname)
        }
    })?;
    // Up only now: IPv6 starts (router solicitation, link-local) with the settings above.
    if !link.up {
        guest_netlink.set_up(link.index, &request.guest_ifname)?;
    }
    if let Some(wait) = request.probe {
        probe_addresses(&guest.netns, link.index, mac, &request.addresses, wait)?;
    }
    for address in &request.addresses {
        guest_netlink.add_address(link.index, &request.guest_ifname, &address.address)?;
    }
    if request.host_route {
        for address in &request.addresses {
            let ip = address.address.addr();
            crate::host_routes::add_with(host, host_netlink, &request.host_interface, ip)?;
            rollback.steps.push(Undo::RemoveHostRoute {
                parent: request.host_interface.clone(),
                address: ip,
            });
        }
    }
    check_fail(request, FailPoint::AfterAddresses)?;

    let subnets: Vec<IpNet> = request.addresses.iter().map(|a| a.address).collect();
    let mut replaced = Vec::new();
    for ipv6 in [false, true] {
        let Some(gateway) = request
            .addresses
            .iter()
            .filter(|a| a.address.addr().is_ipv6() == ipv6)
            .find_map(|a| a.gateway)
        else {
            continue;
        };
        let previous = routes::other_default_routes(guest_netlink, ipv6, link.index)?;
        // Recorded before the change: a takeover that fails halfway is undone too.
        rollback.steps.push(Undo::RestoreDefaultRoutes {
            replaced: previous.clone(),
            own_ifindex: link.index,
        });
        routes::replace_default_routes(guest_netlink, &previous, gateway, link.index, &subnets)?;
        replaced.extend(previous);
    }
    for route in &request.routes {
        routes::add_gateway_route(
            guest_netlink,
            route.destination,
            route.gateway,
            link.index,
            &subnets,
            false,
        )?;
    }
    check_fail(request, FailPoint::AfterRoutes)?;

    let record = Record {
        version: RECORD_VERSION,
        guest: guest.reference.clone(),
        netns: guest.netns.id(),
        guest_ifname: request.guest_ifname.clone(),
        driver: driver.kind(),
        host_interface: request.host_interface.clone(),
        host_ifname: if driver.kind() == DriverKind::Bridge {
            created.host_link.clone()
        } else {
            None
        },
        created_bridge: created.created_bridge || plan.bridge_is_lanyards,
        macvlan_mode: (driver.kind() == DriverKind::Macvlan).then_some(request.macvlan_mode),
        mac,
        mac_scheme: if request.mac.is_some() { MacScheme::default() } else { request.mac_scheme },
        mtu: plan.link_plan.guest_mtu,
        addresses: request.addresses.clone(),
        routes: request.routes.clone(),
        host_addresses: request.host_addresses.clone(),
        replaced_default_routes: replaced,
        attached_at: now_unix(),
        dhcp: request.dhcp.clone().map(|mut settings| {
            let identity = guest.reference.identity();
            if settings.client_id.is_empty() {
                settings.client_id =
                    naming::client_id(&host.host_id, &identity, &request.guest_ifname);
            }
            if settings.hostname.is_none() {
                settings.hostname = match &guest.reference {
                    crate::state::GuestRef::Container { name, .. }
                    | crate::state::GuestRef::Netns { name } => naming::default_dhcp_hostname(name),
                    _ => None,
                };
            }
            settings
        }),
        declared: request.declared.clone(),
        host_route: request.host_route,
        dns: crate::state::DnsChoice {
            client_id: match &request.dhcp {
                None if !request.dns.off && request.dns.client_id.is_empty() => naming::client_id(
                    &host.host_id,
                    &guest.reference.identity(),
                    &request.guest_ifname,
                ),
                _ => request.dns.client_id.clone(),
            },
            ..request.dns.clone()
        },
    };
    host.state.save(&record)?;
    rollback.steps.push(Undo::RemoveRecord(Box::new(record.clone())));
    check_fail(request, FailPoint::AfterRecord)?;

    let announcement = crate::ready::announcement_for(&record, link.index);
    Ok(Attached {
        record,
        announcement,
        guest_netns_path: guest.netns_path(),
        lease: None,
        unchanged: false,
    })
}

pub(super) fn probe_addresses(
    guest: &Netns,
    index: u32,
    mac: MacAddr,
    addresses: &[AddressSpec],
    wait: Duration,
) -> Result<()> {
    let addresses = addresses.to_vec();
    guest.run(move || {
        // Frames sent before the link settles are lost; wait for our own link to be up.
        let mut netlink = Netlink::open_here("the guest")?;
        let mut watch = crate::netlink::LinkWatch::open_here()?;
        watch.wait_for(&mut netlink, index, "guest link up", Duration::from_secs(2), |l| {
            l.oper_up
        })?;
        for address in &addresses {
            let owner = match address.address.addr() {
                IpAddr::V4(v4) => crate::announce::probe_ipv4(index, mac.0, v4, wait)?,
                IpAddr::V6(v6) => crate::announce::probe_ipv6(index, mac.0, v6, wait)?,
            };
            if let Some(owner) = owner {
                return Err(Error::conflict(format!(
                    "address {} is already in use on the segment by {}",
                    address.address.addr(),
                    MacAddr(owner)
                )));
            }
        }
        Ok(())
    })
}
