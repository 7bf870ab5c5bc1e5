//! inspect: the recorded state, checked against the kernel, as JSON. The top level keeps
//! network-wrapper's keys (`Container`, `NetworkSettings` with `HWAddr`, `Bridge`, `IPAddress`,
//! `IPPrefixLen`, `Gateway`, `DNS`) so its users' scripts keep working; `Lanyard` has the rest.

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::detach::live_guest_netns;
use crate::error::Result;
use crate::host::Host;
use crate::netlink::Netlink;
use crate::state::{DriverKind, Record};

/// Records of the guest named `token`, or of every guest when `token` is `None`.
pub fn inspect(host: &Host, token: Option<&str>) -> Result<Vec<Value>> {
    let records: Vec<Record> = host
        .state
        .records()?
        .into_iter()
        .filter(|r| token.is_none_or(|t| r.guest.matches(t)))
        .collect();
    let mut host_netlink = Netlink::open(&host.netns, "the host namespace")?;
    let mut views = Vec::new();
    // One guest, all its interfaces: network-wrapper's view is of the first. Grouped by the
    // guest's exact identity, never by a rendering of its name.
    let mut by_guest: Vec<(crate::state::GuestRef, Vec<Record>)> = Vec::new();
    for record in records {
        match by_guest.iter_mut().find(|(guest, _)| *guest == record.guest) {
            Some((_, list)) => list.push(record),
            None => by_guest.push((record.guest.clone(), vec![record])),
        }
    }
    for (_, records) in by_guest {
        let mut interfaces = Vec::new();
        for record in &records {
            interfaces.push(interface_view(host, &mut host_netlink, record)?);
        }
        let first = &records[0];
        let ipv4 = first.addresses.iter().find(|a| a.address.addr().is_ipv4());
        let lease = crate::daemon::store::load(host.state.path(), &first.file_name())?
            .and_then(|stored| stored.lease);
        views.push(json!({
            "Container": first.guest.display(),
            "NetworkSettings": {
                "HWAddr": first.mac.to_string(),
                "Bridge": if first.driver == DriverKind::Bridge { first.host_interface.clone() } else { String::new() },
                "IPAddress": match &lease {
                    Some(lease) => lease.address.to_string(),
                    None => ipv4.map(|a| a.address.addr().to_string()).unwrap_or_default(),
                },
                "IPPrefixLen": match &lease {
                    Some(lease) => lease.prefix_len,
                    None => ipv4.map(|a| a.address.prefix_len()).unwrap_or(0),
                },
                "Gateway": match &lease {
                    Some(lease) => lease.gateway().map(|g| g.to_string()).unwrap_or_default(),
                    None => ipv4.and_then(|a| a.gateway).map(|g| g.to_string()).unwrap_or_default(),
                },
                "DNS": lease.as_ref().map(|l| l.dns_servers.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
            },
            "Lanyard": { "Guest": first.guest, "Interfaces": interfaces },
        }));
    }
    Ok(views)
}

fn interface_view(host: &Host, host_netlink: &mut Netlink, record: &Record) -> Result<Value> {
    let stored = crate::daemon::store::load(host.state.path(), &record.file_name())?;
    let mut drift = Vec::new();
    if let Some(name) = &record.host_ifname {
        if host_netlink.link_by_name(name)?.is_none() {
            drift.push(format!("host end {name} is missing"));
        }
    }
    if record.driver == DriverKind::HostOnly
        && host_netlink.link_by_name(&record.host_interface)?.is_none()
    {
        drift.push(format!("host end {} is missing", record.host_interface));
    }
    let mut live_addresses = Vec::new();
    // A Docker plugin endpoint's guest side is Docker's (it moves and renames the link, and
    // tells the plugin nothing to find the container by): only the host side is checked.
    let docker_owned = matches!(record.guest, crate::state::GuestRef::DockerEndpoint { .. });
    match live_guest_netns(host, record).filter(|_| !docker_owned) {
        None if docker_owned => {}
        None => drift
            .push("guest namespace is gone or was replaced (guest stopped or restarted)".into()),
        Some(netns) => {
            let mut guest = Netlink::open(&netns, format!("guest {}", record.guest.display()))?;
            match guest.link_by_name(&record.guest_ifname)? {
                None => drift.push(format!("{} is missing in the guest", record.guest_ifname)),
                Some(link) => {
                    if link.mac != Some(record.mac.0) {
                        drift.push(format!("{} has another MAC", record.guest_ifname));
                    }
                    live_addresses = guest
                        .addresses()?
                        .into_iter()
                        .filter(|a| a.index == link.index)
                        .map(|a| a.address)
                        .collect();
                    if let Some(lease) = stored.as_ref().and_then(|s| s.lease.as_ref()) {
                        let net = IpNet::new(std::net::IpAddr::V4(lease.address), lease.prefix_len);
                        if net.is_ok_and(|net| !live_addresses.contains(&net)) {
                            drift.push(format!("leased address {} is missing", lease.address));
                        }
                    }
                    for wanted in &record.addresses {
                        if !live_addresses.contains(&wanted.address) {
                            drift.push(format!("address {} is missing", wanted.address));
                        }
                    }
                }
            }
        }
    }
    let dhcp = record.dhcp.as_ref().map(|settings| {
        #[derive(serde::Serialize)]
        struct DhcpView<'a> {
            #[serde(rename = "Settings")]
            settings: &'a crate::state::DhcpSettings,
            #[serde(flatten)]
            status: crate::lease::LeaseStatus<'a>,
        }
        let status = crate::lease::LeaseStatus::new(
            stored.as_ref().map(|s| s.state.as_str()),
            stored.as_ref().and_then(|s| s.lease.as_ref()),
            stored.as_ref().and_then(|s| s.last_loss.as_deref()),
        );
        serde_json::to_value(DhcpView { settings, status }).unwrap_or_default()
    });
    Ok(json!({
        "Interface": record.guest_ifname,
        "DHCP": dhcp,
        "Mode": record.driver.to_string(),
        "HostInterface": record.host_interface,
        "HostIfname": record.host_ifname,
        "CreatedBridge": record.created_bridge,
        "MacvlanMode": record.macvlan_mode,
        "HWAddr": record.mac.to_string(),
        "MacScheme": record.mac_scheme,
        "MTU": record.mtu,
        "Addresses": record.addresses,
        "Routes": record.routes,
        "HostAddresses": record.host_addresses,
        "ReplacedDefaultRoutes": record.replaced_default_routes,
        "AttachedAt": crate::inspect::rfc3339(record.attached_at),
        "LiveAddresses": live_addresses,
        "InSync": drift.is_empty(),
        "Drift": drift,
    }))
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp, to the second. Times past the end of
/// year 9999, which RFC 3339 cannot write, show as its last second instead of failing.
pub fn rfc3339(seconds: u64) -> String {
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.min(LAST_SECOND_OF_9999));
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_435_200), "2026-11-23T12:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(super::rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }
}
