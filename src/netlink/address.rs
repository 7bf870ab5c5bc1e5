//! Addresses on a link.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Netlink;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressDetails {
    pub index: u32,
    pub address: IpNet,
}

fn address_message(index: u32, address: &IpNet) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.index = index;
    message.header.prefix_len = address.prefix_len();
    match address.addr() {
        IpAddr::V4(v4) => {
            message.header.family = AddressFamily::Inet;
            message.attributes.push(AddressAttribute::Local(IpAddr::V4(v4)));
            message.attributes.push(AddressAttribute::Address(IpAddr::V4(v4)));
            if address.prefix_len() < 31 {
                if let IpNet::V4(net) = address {
                    message.attributes.push(AddressAttribute::Broadcast(net.broadcast()));
                }
            }
        }
        IpAddr::V6(v6) => {
            message.header.family = AddressFamily::Inet6;
            message.attributes.push(AddressAttribute::Address(IpAddr::V6(v6)));
            // Static addresses are usable at once: DAD would hold them "tentative" for ~1 s and
            // lanyard's own --probe covers conflict detection when asked for.
            message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    message
}

impl Netlink {
    pub fn add_address(&mut self, index: u32, ifname: &str, address: &IpNet) -> Result<()> {
        self.request(
            RouteNetlinkMessage::NewAddress(address_message(index, address)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(|_| ())
        .map_err(|e| self.kernel_error(format!("add address {address} to {ifname}"), e))
    }

    /// Remove an address; one already gone counts as removed.
    pub fn delete_address(&mut self, index: u32, ifname: &str, address: &IpNet) -> Result<()> {
        match self.request(RouteNetlinkMessage::DelAddress(address_message(index, address)), 0) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) => {
                Ok(())
            }
            Err(e) => Err(self.kernel_error(format!("remove address {address} from {ifname}"), e)),
        }
    }

    /// Every address in the namespace (both families).
    pub fn addresses(&mut self) -> Result<Vec<AddressDetails>> {
        let answers = self
            .request(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP)
            .map_err(|e| self.kernel_error("list addresses", e))?;
        Ok(answers
            .iter()
            .filter_map(|answer| {
                let RouteNetlinkMessage::NewAddress(message) = answer else { return None };
                // IFA_LOCAL is the interface's own address on point-to-point links; prefer it.
                let mut found = None;
                for attribute in &message.attributes {
                    match attribute {
                        AddressAttribute::Local(ip) => found = Some(*ip),
                        AddressAttribute::Address(ip) if found.is_none() => found = Some(*ip),
                        _ => {}
                    }
                }
                let address = IpNet::new(found?, message.header.prefix_len).ok()?;
                Some(AddressDetails { index: message.header.index, address })
            })
            .collect())
    }
}
