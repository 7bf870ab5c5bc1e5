//! A point-to-point veth: the host end keeps its own addresses and joins no bridge; one guest
//! per link.

use std::time::Duration;

use super::{guest_mtu, injected_failure, undo, CreatedLink, Driver, LinkPlan, LinkRequest};
use crate::error::{Error, Result};
use crate::netlink::{LinkWatch, Netlink, NewLink};
use crate::netns::Netns;
use crate::state::{DriverKind, Record};

/// A veth's default MTU, which the point-to-point link keeps unless --mtu says otherwise.
const DEFAULT_MTU: u32 = 1500;

pub struct HostOnlyDriver;

impl Driver for HostOnlyDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::HostOnly
    }

    fn validate(&self, host: &mut Netlink, request: &LinkRequest) -> Result<LinkPlan> {
        if host.link_by_name(request.host_interface)?.is_some() {
            return Err(Error::conflict(format!(
                "{} already exists: --host-only needs a new host interface name",
                request.host_interface
            )));
        }
        let mtu = request.guest_mtu.unwrap_or(DEFAULT_MTU);
        Ok(LinkPlan {
            host_interface_index: None,
            host_mtu: mtu,
            guest_mtu: guest_mtu(request, mtu.max(DEFAULT_MTU))?,
            create_bridge: false,
        })
    }

    fn setup(
        &self,
        host: &mut Netlink,
        guest: &Netns,
        request: &LinkRequest,
        plan: &LinkPlan,
    ) -> Result<CreatedLink> {
        host.create_link(&NewLink::Veth {
            host_name: request.host_interface,
            host_mac: request.host_mac,
            host_mtu: plan.host_mtu,
            bridge: None,
            guest_name: request.guest_ifname,
            guest_mac: request.guest_mac,
            guest_mtu: plan.guest_mtu,
            guest,
        })?;
        let created =
            CreatedLink { created_bridge: false, host_link: Some(request.host_interface.into()) };
        let mut configure = || -> Result<()> {
            injected_failure(request, "host-only")?;
            let link = host.link_by_name(request.host_interface)?.ok_or_else(|| {
                Error::not_found(format!("{} vanished after creation", request.host_interface))
            })?;
            for address in request.host_addresses {
                host.add_address(link.index, request.host_interface, address)?;
            }
            Ok(())
        };
        if let Err(e) = configure() {
            let name = request.host_interface;
            let mut leftovers = Vec::new();
            undo(
                request,
                &format!("link {name} in {}", host.place),
                &format!("remove it: ip link del {name}"),
                &mut leftovers,
                || host.delete_link_by_name(name),
            );
            return Err(e.with_leftovers(&leftovers));
        }
        Ok(created)
    }

    fn teardown(
        &self,
        host: &mut Netlink,
        _guest: Option<&mut Netlink>,
        record: &Record,
    ) -> Result<()> {
        host.delete_link_by_name(&record.host_interface)
    }

    fn wait_host_ready(
        &self,
        host: &mut Netlink,
        watch: &mut LinkWatch,
        record: &Record,
        timeout: Duration,
    ) -> Result<()> {
        let link = host
            .link_by_name(&record.host_interface)?
            .ok_or_else(|| Error::not_found(format!("{} vanished", record.host_interface)))?;
        watch.wait_for(
            host,
            link.index,
            &format!("{} up", record.host_interface),
            timeout,
            |l| l.oper_up,
        )?;
        Ok(())
    }
}
