//! Routes: the guest's default route (read, replace, restore) and extra routes; device routes
//! with a preferred source, listed by device (the host's routes to its macvlan guests).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::{Deserialize, Serialize};

use super::Netlink;
use crate::error::Result;

/// A default route as found in the guest before lanyard replaced it, kept in the record so it can
/// be put back on rollback and on detach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRoute {
    pub gateway: Option<IpAddr>,
    /// The device it used; restored by name since indexes are not stable across restarts.
    pub device: Option<String>,
    #[serde(skip)]
    pub device_index: Option<u32>,
    pub metric: Option<u32>,
    pub ipv6: bool,
    pub protocol: u8,
}

/// A route lanyard adds in the guest.
pub struct NewRoute {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub device_index: u32,
    pub metric: Option<u32>,
}

/// A route straight out of a device, `to DESTINATION dev DEVICE src SOURCE proto PROTOCOL`
/// in the main table: how the host reaches a macvlan guest through its shim
/// (see [`crate::host_routes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRoute {
    pub destination: IpNet,
    pub device_index: u32,
    /// The address the host sends from (`src`); `None` on a route read back without one.
    pub source: Option<IpAddr>,
    /// Who made the route (`proto`): lanyard's routes are known by their own number.
    pub protocol: u8,
}

/// A main-table unicast route as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub destination: IpNet,
    pub device_index: Option<u32>,
    pub gateway: Option<IpAddr>,
    pub source: Option<IpAddr>,
    pub protocol: u8,
}

fn family_of(ipv6: bool) -> AddressFamily {
    if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn build(route: &NewRoute, protocol: RouteProtocol) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = family_of(route.destination.addr().is_ipv6());
    message.header.destination_prefix_length = route.destination.prefix_len();
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = protocol;
    message.header.kind = RouteType::Unicast;
    message.header.scope =
        if route.gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
    if route.destination.prefix_len() > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(route_address(route.destination.trunc().addr())));
    }
    if let Some(gateway) = route.gateway {
        message.attributes.push(RouteAttribute::Gateway(route_address(gateway)));
    }
    // Index 0: let the kernel pick the device from the gateway.
    if route.device_index != 0 {
        message.attributes.push(RouteAttribute::Oif(route.device_index));
    }
    if let Some(metric) = route.metric {
        message.attributes.push(RouteAttribute::Priority(metric));
    }
    message
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn device_route_message(route: &DeviceRoute) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = family_of(route.destination.addr().is_ipv6());
    message.header.destination_prefix_length = route.destination.prefix_len();
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::from(route.protocol);
    message.header.kind = RouteType::Unicast;
    message.header.scope = RouteScope::Link;
    message
        .attributes
        .push(RouteAttribute::Destination(route_address(route.destination.trunc().addr())));
    message.attributes.push(RouteAttribute::Oif(route.device_index));
    if let Some(source) = route.source {
        message.attributes.push(RouteAttribute::PrefSource(route_address(source)));
    }
    message
}

impl Netlink {
    /// Add (or, with `replace`, replace: same destination and metric) a device route with its
    /// preferred source and protocol.
    pub fn add_device_route(&mut self, route: &DeviceRoute, replace: bool) -> Result<()> {
        let flags = if replace { NLM_F_CREATE | NLM_F_REPLACE } else { NLM_F_CREATE | NLM_F_EXCL };
        self.request(RouteNetlinkMessage::NewRoute(device_route_message(route)), flags)
            .map(|_| ())
            .map_err(|e| {
                let source = route.source.map(|s| format!(" src {s}")).unwrap_or_default();
                self.kernel_error(
                    format!("add route {} dev #{}{source}", route.destination, route.device_index),
                    e,
                )
            })
    }

    /// Delete exactly this device route: destination, device and protocol must match (the
    /// kernel compares a non-zero protocol), so a route someone else made to the same place
    /// stays. One already gone counts as deleted.
    pub fn delete_device_route(&mut self, route: &DeviceRoute) -> Result<()> {
        let mut message = device_route_message(route);
        message.header.scope = RouteScope::NoWhere;
        message.attributes.retain(|a| !matches!(a, RouteAttribute::PrefSource(_)));
        match self.request(RouteNetlinkMessage::DelRoute(message), 0) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENODEV)) => Ok(()),
            Err(e) => Err(self.kernel_error(
                format!("delete route {} dev #{}", route.destination, route.device_index),
                e,
            )),
        }
    }

    /// Every unicast route of the main table for one family.
    pub fn main_routes(&mut self, ipv6: bool) -> Result<Vec<RouteEntry>> {
        let mut query = RouteMessage::default();
        query.header.address_family = family_of(ipv6);
        let answers = self
            .request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)
            .map_err(|e| self.kernel_error("list routes", e))?;
        let unspecified = if ipv6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        };
        let mut routes = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewRoute(message) = answer else { continue };
            if message.header.kind != RouteType::Unicast {
                continue;
            }
            let mut table = u32::from(message.header.table);
            let mut destination = unspecified;
            let mut entry = RouteEntry {
                destination: IpNet::from(unspecified),
                device_index: None,
                gateway: None,
                source: None,
                protocol: message.header.protocol.into(),
            };
            for attribute in &message.attributes {
                match attribute {
                    RouteAttribute::Destination(address) => {
                        destination = ip_of(address).unwrap_or(unspecified)
                    }
                    RouteAttribute::Gateway(address) => entry.gateway = ip_of(address),
                    RouteAttribute::PrefSource(address) => entry.source = ip_of(address),
                    RouteAttribute::Oif(index) => entry.device_index = Some(*index),
                    RouteAttribute::Table(id) => table = *id,
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            let Ok(net) = IpNet::new(destination, message.header.destination_prefix_length) else {
                continue;
            };
            entry.destination = net;
            routes.push(entry);
        }
        Ok(routes)
    }

    /// The main table's unicast routes out of one device, both families.
    pub fn routes_on_device(&mut self, device_index: u32) -> Result<Vec<RouteEntry>> {
        let mut routes = self.main_routes(false)?;
        routes.extend(self.main_routes(true)?);
        routes.retain(|route| route.device_index == Some(device_index));
        Ok(routes)
    }

    /// Add a route; with `replace` an existing route with the same key (destination, metric) is
    /// replaced, which is how `@GW` takes over the default route.
    pub fn add_route(&mut self, route: &NewRoute, replace: bool) -> Result<()> {
        let flags = if replace { NLM_F_CREATE | NLM_F_REPLACE } else { NLM_F_CREATE | NLM_F_EXCL };
        let what = match route.gateway {
            Some(gateway) => format!("add route {} via {gateway}", route.destination),
            None => format!("add route {}", route.destination),
        };
        self.request(RouteNetlinkMessage::NewRoute(build(route, RouteProtocol::Static)), flags)
            .map(|_| ())
            .map_err(|e| self.kernel_error(what, e))
    }

    /// Delete a route; one already gone counts as deleted.
    pub fn delete_route(&mut self, route: &NewRoute) -> Result<()> {
        let mut message = build(route, RouteProtocol::Unspec);
        message.header.scope = RouteScope::NoWhere;
        match self.request(RouteNetlinkMessage::DelRoute(message), 0) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENODEV)) => Ok(()),
            Err(e) => Err(self.kernel_error(format!("delete route {}", route.destination), e)),
        }
    }

    /// The default routes of the main table for one family.
    pub fn default_routes(&mut self, ipv6: bool) -> Result<Vec<DefaultRoute>> {
        let mut query = RouteMessage::default();
        query.header.address_family = family_of(ipv6);
        let answers = self
            .request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)
            .map_err(|e| self.kernel_error("list routes", e))?;
        let mut routes = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewRoute(message) = answer else { continue };
            if message.header.destination_prefix_length != 0
                || message.header.table != RouteHeader::RT_TABLE_MAIN
                || message.header.kind != RouteType::Unicast
            {
                continue;
            }
            let mut route = DefaultRoute {
                gateway: None,
                device: None,
                device_index: None,
                metric: None,
                ipv6,
                protocol: message.header.protocol.into(),
            };
            let mut table_main = true;
            for attribute in &message.attributes {
                match attribute {
                    RouteAttribute::Gateway(RouteAddress::Inet(v4)) => {
                        route.gateway = Some(IpAddr::V4(*v4))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => {
                        route.gateway = Some(IpAddr::V6(*v6))
                    }
                    RouteAttribute::Oif(index) => route.device_index = Some(*index),
                    RouteAttribute::Priority(metric) => route.metric = Some(*metric),
                    RouteAttribute::Table(table) => table_main = *table == 254,
                    _ => {}
                }
            }
            if table_main {
                routes.push(route);
            }
        }
        for route in &mut routes {
            if let Some(index) = route.device_index {
                route.device = self.link_by_index(index)?.map(|link| link.name);
            }
        }
        Ok(routes)
    }

    /// Put a recorded default route back (after lanyard's interface, and with it lanyard's own
    /// default route, is gone). Skipped when its device no longer exists.
    pub fn restore_default_route(&mut self, route: &DefaultRoute) -> Result<bool> {
        let Some(device) = &route.device else { return Ok(false) };
        let Some(link) = self.link_by_name(device)? else { return Ok(false) };
        let destination = if route.ipv6 {
            IpNet::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
        } else {
            IpNet::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)
        }
        .expect("prefix 0 is valid");
        let new = NewRoute {
            destination,
            gateway: route.gateway,
            device_index: link.index,
            metric: route.metric,
        };
        let mut message = build(&new, RouteProtocol::from(route.protocol));
        if route.gateway.is_none() {
            message.header.scope = RouteScope::Link;
        }
        self.request(RouteNetlinkMessage::NewRoute(message), NLM_F_CREATE | NLM_F_REPLACE)
            .map(|_| true)
            .map_err(|e| self.kernel_error(format!("restore the default route via {device}"), e))
    }
}
