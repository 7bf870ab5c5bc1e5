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
    // Checked before anything is looked up: a prefix with host bits set is a typo or a
    // misunderstanding, and silently widening it would route more than was asked for.
    if destination != destination.trunc() {
        return Err(Error::usage(format!(
            "route destination {destination} has host bits set (Invalid prefix for given prefix \
             length); the network is {}",
            destination.trunc()
        )));
    }
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
    let route = NewRoute { destination, gateway: via, device_index, metric };
    match change {
        RouteChange::Add => netlink.add_route(&route, false),
        RouteChange::Replace => netlink.add_route(&route, true),
        RouteChange::Delete => netlink.delete_route(&route),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::netns::Netns;

    #[test]
    fn a_destination_with_host_bits_is_refused_before_anything_is_looked_up() {
        let dir = std::env::temp_dir().join(format!("lanyard-route-cmd-{}", std::process::id()));
        let host = Host::new(Netns::current().unwrap(), &dir, "test").unwrap();
        // The guest does not exist: reaching the lookup would fail with NotFound instead.
        let err = change_route(
            &host,
            "netns:lanyard-no-such-namespace",
            RouteChange::Add,
            "198.19.5.6/24".parse().unwrap(),
            Some("198.18.0.1".parse().unwrap()),
            None,
            None,
        )
        .unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
        assert!(err.to_string().contains("Invalid prefix for given prefix length"), "{err}");
        assert!(err.to_string().contains("198.19.5.0/24"), "{err}");
    }
}
