//! Finding a host interface by its MAC address: pipework's `mac:HOSTMAC` names a NIC whose
//! name is not stable (it moves with udev rules, PCI slots, kernel versions) by its address.

use crate::error::{Error, Result};
use crate::host::Host;
use crate::netlink::Netlink;
use crate::spec::MacAddr;

/// The name of the one interface in the host namespace whose address is `mac`.
///
/// pipework took the first match; lanyard refuses a MAC that several interfaces share (a bridge
/// that took its port's address, VLAN subinterfaces of one NIC), because which one was meant
/// decides between a veth on a bridge and a macvlan on a NIC.
pub fn name_by_mac(host: &Host, mac: MacAddr) -> Result<String> {
    let mut netlink = Netlink::open(&host.netns, "the host")?;
    let mut names: Vec<String> = netlink
        .links()?
        .into_iter()
        .filter(|link| link.mac == Some(mac.0))
        .map(|link| link.name)
        .collect();
    names.sort();
    match names.len() {
        0 => Err(Error::not_found(format!(
            "no interface in the host namespace has MAC address {mac} (mac:{mac}); \
             check it with ip link, or name the interface"
        ))),
        1 => Ok(names.remove(0)),
        _ => Err(Error::conflict(format!(
            "several host interfaces have MAC address {mac}: {}; name the one to attach to \
             instead of mac:{mac}",
            names.join(", ")
        ))),
    }
}
