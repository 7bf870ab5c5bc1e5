//! A veth whose host end joins a Linux bridge; the guest end is born in the guest namespace.

use std::time::Duration;

use super::{guest_mtu, injected_failure, undo, CreatedLink, Driver, LinkPlan, LinkRequest};
use crate::error::{Error, Result};
use crate::netlink::{LinkKind, LinkWatch, Netlink, NewLink};
use crate::netns::Netns;
use crate::state::{DriverKind, Record};

/// A new bridge starts with the kernel's default MTU.
const NEW_BRIDGE_MTU: u32 = 1500;

pub struct BridgeDriver;

impl Driver for BridgeDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Bridge
    }

    fn validate(&self, host: &mut Netlink, request: &LinkRequest) -> Result<LinkPlan> {
        let host_ifname = request
            .host_ifname
            .ok_or_else(|| Error::usage("bridge attach needs a host interface name"))?;
        if host.link_by_name(host_ifname)?.is_some() {
            return Err(Error::conflict(format!(
                "host interface name {host_ifname} is taken: pick another with -l"
            )));
        }
        match host.link_by_name(request.host_interface)? {
            Some(bridge) if bridge.kind == LinkKind::Bridge => Ok(LinkPlan {
                host_interface_index: Some(bridge.index),
                host_mtu: bridge.mtu,
                guest_mtu: guest_mtu(request, bridge.mtu)?,
                create_bridge: false,
            }),
            Some(_) => Err(Error::usage(format!(
                "{} is not a bridge (the macvlan driver handles other interfaces)",
                request.host_interface
            ))),
            None if request.no_create => Err(Error::not_found(format!(
                "bridge {} does not exist (--no-create forbids creating it)",
                request.host_interface
            ))),
            None => Ok(LinkPlan {
                host_interface_index: None,
                host_mtu: NEW_BRIDGE_MTU,
                guest_mtu: guest_mtu(request, NEW_BRIDGE_MTU)?,
                create_bridge: true,
            }),
        }
    }

    fn setup(
        &self,
        host: &mut Netlink,
        guest: &Netns,
        request: &LinkRequest,
        plan: &LinkPlan,
    ) -> Result<CreatedLink> {
        let mut created = CreatedLink::default();
        let bridge_index = match plan.host_interface_index {
            Some(index) => index,
            None => {
                match host.create_link(&NewLink::Bridge { name: request.host_interface }) {
                    Ok(()) => {}
                    // Another attach created it between our check and now: that is success.
                    Err(e) if e.errno() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                created.created_bridge = true;
                host.link_by_name(request.host_interface)?
                    .filter(|link| link.kind == LinkKind::Bridge)
                    .ok_or_else(|| {
                        Error::conflict(format!(
                            "{} appeared but is not a bridge",
                            request.host_interface
                        ))
                    })?
                    .index
            }
        };
        let host_ifname = request.host_ifname.unwrap_or_default();
        let result = injected_failure(request, "bridge").and_then(|()| {
            host.create_link(&NewLink::Veth {
                host_name: host_ifname,
                host_mac: request.host_mac,
                host_mtu: plan.host_mtu,
                bridge: Some(bridge_index),
                guest_name: request.guest_ifname,
                guest_mac: request.guest_mac,
                guest_mtu: plan.guest_mtu,
                guest,
            })
        });
        if let Err(e) = result {
            let mut leftovers = Vec::new();
            if created.created_bridge {
                let bridge = request.host_interface;
                undo(
                    request,
                    &format!("bridge {bridge} in {}", host.place),
                    &format!("remove it once it has no ports: ip link del {bridge}"),
                    &mut leftovers,
                    || remove_bridge_if_unused(host, bridge).map(|_| ()),
                );
            }
            return Err(e.with_leftovers(&leftovers));
        }
        created.host_link = Some(host_ifname.to_string());
        Ok(created)
    }

    fn teardown(
        &self,
        host: &mut Netlink,
        _guest: Option<&mut Netlink>,
        record: &Record,
    ) -> Result<()> {
        if let Some(name) = &record.host_ifname {
            host.delete_link_by_name(name)?;
        }
        Ok(())
    }

    fn wait_host_ready(
        &self,
        host: &mut Netlink,
        watch: &mut LinkWatch,
        record: &Record,
        timeout: Duration,
    ) -> Result<()> {
        let Some(name) = &record.host_ifname else { return Ok(()) };
        let port = host
            .link_by_name(name)?
            .ok_or_else(|| Error::not_found(format!("bridge port {name} vanished")))?;
        watch.wait_for(
            host,
            port.index,
            &format!("bridge port {name} forwarding"),
            timeout,
            |l| l.forwarding(),
        )?;
        Ok(())
    }
}

/// Remove a bridge lanyard created once nothing uses it: no ports and no addresses.
pub fn remove_bridge_if_unused(host: &mut Netlink, name: &str) -> Result<bool> {
    let Some(bridge) = host.link_by_name(name)? else { return Ok(false) };
    if bridge.kind != LinkKind::Bridge {
        return Ok(false);
    }
    if !host.bridge_ports(bridge.index)?.is_empty() {
        return Ok(false);
    }
    if host
        .addresses()?
        .iter()
        .any(|a| a.index == bridge.index && !crate::spec::is_ipv6_link_local(a.address.addr()))
    {
        return Ok(false);
    }
    host.delete_link(bridge.index, name)?;
    Ok(true)
}
