//! `pipework route GUEST add|del|replace PREFIX [via GW] [dev IF] [metric N]`: a route in the
//! guest, by netlink.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::guest::{self, GuestSpec};
use crate::host::Host;
use crate::netlink::{Netlink, NewRoute};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    Add,
    Delete,
    Replace,
}

pub fn change_route(
    host: &Host,
    guest_token: &str,
    change: RouteChange,
    destination: IpNet,
    via: Option<IpAddr>,
    dev: Option<&str>,
    metric: Option<u32>,
) -> Result<()> {
    let guest = guest::resolve(&GuestSpec::parse(guest_token)?, || host.docker())?;
    if guest.netns.id() == host.netns.id() {
        return Err(Error::conflict(format!(
            "{guest_token} shares the host's network namespace: lanyard will not change the host's routes"
        )));
    }
    let mut netlink = Netlink::open(&guest.netns, format!("guest {}", guest.reference.display()))?;
    let device_index = match dev {
        Some(name) => {
            netlink
                .link_by_name(name)?
                .ok_or_else(|| Error::not_found(format!("no interface {name} in {guest_token}")))?
                .index
        }
        None => 0,
    };
    let route = NewRoute { destination: destination.trunc(), gateway: via, device_index, metric };
    match change {
        RouteChange::Add => netlink.add_route(&route, false),
        RouteChange::Replace => netlink.add_route(&route, true),
        RouteChange::Delete => netlink.delete_route(&route),
    }
}
