//! A macvlan child of a physical (non-bridge) interface, born inside the guest namespace.

use std::time::Duration;

use netlink_packet_route::link::MacVlanMode;

use super::{guest_mtu, CreatedLink, Driver, LinkPlan, LinkRequest};
use crate::error::{Error, Result};
use crate::netlink::{LinkKind, LinkWatch, Netlink, NewLink};
use crate::netns::Netns;
use crate::spec::MacvlanMode;
use crate::state::{DriverKind, Record};

pub struct MacvlanDriver;

fn kernel_mode(mode: MacvlanMode) -> MacVlanMode {
    match mode {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
        MacvlanMode::Source => MacVlanMode::Source,
    }
}

impl Driver for MacvlanDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Macvlan
    }

    fn validate(&self, host: &mut Netlink, request: &LinkRequest) -> Result<LinkPlan> {
        let parent = host.link_by_name(request.host_interface)?.ok_or_else(|| {
            Error::not_found(format!("host interface {} does not exist", request.host_interface))
        })?;
        match parent.kind {
            LinkKind::Loopback => {
                return Err(Error::usage(format!(
                    "{} is the loopback interface: give a bridge or a physical interface",
                    parent.name
                )))
            }
            LinkKind::Bridge => {
                return Err(Error::usage(format!(
                    "{} is a bridge: use the bridge driver",
                    parent.name
                )))
            }
            _ => {}
        }
        if parent.is_bridge_port() {
            return Err(Error::usage(format!(
                "{} is a port of a bridge, and the kernel refuses a macvlan on it (EBUSY): \
                 attach to that bridge instead",
                parent.name
            )));
        }
        Ok(LinkPlan {
            host_interface_index: Some(parent.index),
            host_mtu: parent.mtu,
            guest_mtu: guest_mtu(request, parent.mtu)?,
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
        let parent = plan
            .host_interface_index
            .ok_or_else(|| Error::usage("macvlan needs an existing parent"))?;
        host.create_link(&NewLink::Macvlan {
            parent,
            mode: kernel_mode(request.macvlan_mode),
            guest_name: request.guest_ifname,
            guest_mac: request.guest_mac,
            guest_mtu: plan.guest_mtu,
            guest,
        })?;
        Ok(CreatedLink::default())
    }

    fn teardown(
        &self,
        _host: &mut Netlink,
        guest: Option<&mut Netlink>,
        record: &Record,
    ) -> Result<()> {
        // The macvlan lives only in the guest; a guest that is gone took it along.
        if let Some(guest) = guest {
            guest.delete_link_by_name(&record.guest_ifname)?;
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
        let parent = host.link_by_name(&record.host_interface)?.ok_or_else(|| {
            Error::not_found(format!("macvlan parent {} vanished", record.host_interface))
        })?;
        watch.wait_for(
            host,
            parent.index,
            &format!("carrier on {}", record.host_interface),
            timeout,
            |l| l.lower_up,
        )?;
        Ok(())
    }
}
