//! Routes lanyard puts in a guest on top of an interface's addresses: a route via a gateway
//! (with an on-link host route first when the gateway is outside the interface's subnets, as
//! pipework and dhclient do), taking over the guest's default route (the old one is kept to be
//! put back), and putting the old default route back. One home for attach, detach and the
//! daemon's lease configuration, so the three never disagree on when a route is restored.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Result;
use crate::netlink::{DefaultRoute, Netlink, NewRoute};
use crate::spec;

/// Does the guest need an on-link host route to reach `gateway`? Not when the gateway sits on
/// one of the interface's subnets (the kernel's prefix route covers it) or is IPv6 link-local
/// (reachable on any link with the device given).
pub fn needs_onlink_route(gateway: IpAddr, subnets: &[IpNet]) -> bool {
    !spec::is_ipv6_link_local(gateway) && !subnets.iter().any(|net| net.contains(&gateway))
}

/// The /32 or /128 that makes `gateway` directly reachable through the interface.
pub fn host_route_to(gateway: IpAddr) -> IpNet {
    IpNet::from(gateway)
}

/// Add `destination` via `gateway` on `ifindex`, preceded by an on-link host route to the
/// gateway when `subnets` do not contain it. `replace` replaces a route with the same key (how
/// the default route is taken over; renewals re-apply idempotently).
pub fn add_gateway_route(
    guest: &mut Netlink,
    destination: IpNet,
    gateway: IpAddr,
    ifindex: u32,
    subnets: &[IpNet],
    replace: bool,
) -> Result<()> {
    if needs_onlink_route(gateway, subnets) {
        // Replace: the same gateway may serve several routes, and a renewal re-applies it.
        guest.add_route(
            &NewRoute {
                destination: host_route_to(gateway),
                gateway: None,
                device_index: ifindex,
                metric: None,
            },
            true,
        )?;
    }
    guest.add_route(
        &NewRoute { destination, gateway: Some(gateway), device_index: ifindex, metric: None },
        replace,
    )
}

/// Remove a route added by [`add_gateway_route`] and its on-link host route; what is already
/// gone counts as removed.
pub fn remove_gateway_route(
    guest: &mut Netlink,
    destination: IpNet,
    gateway: IpAddr,
    ifindex: u32,
    subnets: &[IpNet],
) -> Result<()> {
    guest.delete_route(&NewRoute {
        destination,
        gateway: Some(gateway),
        device_index: ifindex,
        metric: None,
    })?;
    if needs_onlink_route(gateway, subnets) {
        guest.delete_route(&NewRoute {
            destination: host_route_to(gateway),
            gateway: None,
            device_index: ifindex,
            metric: None,
        })?;
    }
    Ok(())
}

/// The guest's default routes of one family that are not on `ifindex` (lanyard's own
/// interface): what taking over the default route replaces.
pub fn other_default_routes(
    guest: &mut Netlink,
    ipv6: bool,
    ifindex: u32,
) -> Result<Vec<DefaultRoute>> {
    Ok(guest
        .default_routes(ipv6)?
        .into_iter()
        .filter(|route| route.device_index != Some(ifindex))
        .collect())
}

/// Replace `previous` (from [`other_default_routes`]) by a default route via `gateway` on
/// `ifindex`.
pub fn replace_default_routes(
    guest: &mut Netlink,
    previous: &[DefaultRoute],
    gateway: IpAddr,
    ifindex: u32,
    subnets: &[IpNet],
) -> Result<()> {
    let destination = spec::default_route_for(gateway);
    for route in previous {
        if let Some(device_index) = route.device_index {
            guest.delete_route(&NewRoute {
                destination,
                gateway: route.gateway,
                device_index,
                metric: route.metric,
            })?;
        }
    }
    add_gateway_route(guest, destination, gateway, ifindex, subnets, true)
}

/// Make `gateway` the guest's default route (of its family) through `ifindex`. Returns the
/// default routes it replaced, for [`restore_default_routes`]; routes already on `ifindex`
/// are lanyard's own and are not counted as replaced.
pub fn take_over_default_route(
    guest: &mut Netlink,
    gateway: IpAddr,
    ifindex: u32,
    subnets: &[IpNet],
) -> Result<Vec<DefaultRoute>> {
    let previous = other_default_routes(guest, gateway.is_ipv6(), ifindex)?;
    replace_default_routes(guest, &previous, gateway, ifindex, subnets)?;
    Ok(previous)
}

/// Put back default routes lanyard replaced, for each family only when the guest has no default
/// route of that family left apart from lanyard's own on `own_ifindex` (which is about to go,
/// or already went with its interface): a default route someone else set since is never
/// overwritten. Returns how many were restored.
pub fn restore_default_routes(
    guest: &mut Netlink,
    replaced: &[DefaultRoute],
    own_ifindex: Option<u32>,
) -> Result<usize> {
    let mut restored = 0;
    for ipv6 in [false, true] {
        let routes: Vec<&DefaultRoute> = replaced.iter().filter(|r| r.ipv6 == ipv6).collect();
        if routes.is_empty() {
            continue;
        }
        let taken_over = guest
            .default_routes(ipv6)?
            .iter()
            .any(|current| own_ifindex.is_none() || current.device_index != own_ifindex);
        if taken_over {
            continue;
        }
        for route in routes {
            if guest.restore_default_route(route)? {
                restored += 1;
            }
        }
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onlink_route_only_for_gateways_off_every_subnet() {
        let subnets: Vec<IpNet> = vec!["198.18.0.50/24".parse().unwrap()];
        assert!(!needs_onlink_route("198.18.0.1".parse().unwrap(), &subnets));
        assert!(needs_onlink_route("198.19.0.1".parse().unwrap(), &subnets));
        // A /32 lease: its router is always off the subnet.
        let single: Vec<IpNet> = vec!["198.18.0.50/32".parse().unwrap()];
        assert!(needs_onlink_route("198.18.0.1".parse().unwrap(), &single));
        assert!(!needs_onlink_route("fe80::1".parse().unwrap(), &[]));
        assert!(needs_onlink_route("2001:db8::1".parse().unwrap(), &[]));
        assert_eq!(host_route_to("198.19.0.1".parse().unwrap()).to_string(), "198.19.0.1/32");
        assert_eq!(host_route_to("2001:db8::1".parse().unwrap()).to_string(), "2001:db8::1/128");
    }
}
