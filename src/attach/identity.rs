//! Names and MACs for a new attachment: stable ones derived from (host id, guest identity,
//! interface), rehashed with a counter while a record (through the state index) or the bridge's
//! forwarding table already has them.

use std::net::IpAddr;

use crate::error::{Error, ErrorKind, Result};
use crate::host::Host;
use crate::naming;
use crate::netlink::Netlink;
use crate::spec::{MacAddr, MacScheme};
use crate::state::Index;

use super::AttachRequest;

pub(super) fn free_host_ifname(
    host: &Host,
    netlink: &mut Netlink,
    index: &Index,
    identity: &str,
    request: &AttachRequest,
) -> Result<String> {
    for counter in 0..64 {
        let name = naming::host_ifname(&host.host_id, identity, &request.guest_ifname, counter);
        // A recorded name whose link is gone (its guest died) stays taken: detaching that
        // record deletes the link by this name.
        if !index.host_ifname_taken(&name)? && netlink.link_by_name(&name)?.is_none() {
            return Ok(name);
        }
    }
    Err(Error::conflict("no free host interface name after 64 tries: give one with -l"))
}

/// A MAC given with `--mac` must be free as well: claimed by no other record and not seen in the
/// bridge's forwarding table. Two guests with one MAC on a LAN would steal each other's frames.
pub(super) fn check_given_mac(
    netlink: &mut Netlink,
    index: &Index,
    bridge_index: Option<u32>,
    bridge: &str,
    mac: MacAddr,
) -> Result<()> {
    if index.mac_taken(mac)? {
        return Err(Error::conflict(format!(
            "--mac {mac} is already the MAC of another lanyard attachment (lanyard inspect --all \
             shows which): give another MAC, or leave --mac out for a stable derived one"
        )));
    }
    if let Some(bridge_index) = bridge_index {
        if netlink.bridge_fdb_has(bridge_index, mac.0)? {
            return Err(Error::conflict(format!(
                "--mac {mac} is already in use on bridge {bridge} (in its forwarding table): give \
                 another MAC, or leave --mac out for a stable derived one"
            )));
        }
    }
    Ok(())
}

pub(super) fn choose_mac(
    host: &Host,
    netlink: &mut Netlink,
    index: &Index,
    bridge_index: Option<u32>,
    identity: &str,
    request: &AttachRequest,
) -> Result<MacAddr> {
    let taken = |netlink: &mut Netlink, mac: &MacAddr| -> Result<bool> {
        if index.mac_taken(*mac)? {
            return Ok(true);
        }
        match bridge_index {
            Some(bridge) => netlink.bridge_fdb_has(bridge, mac.0),
            None => Ok(false),
        }
    };
    match request.mac_scheme {
        MacScheme::Stable => {
            for counter in 0..64 {
                let mac =
                    naming::stable_mac(&host.host_id, identity, &request.guest_ifname, counter);
                if !taken(netlink, &mac)? {
                    return Ok(mac);
                }
            }
            Err(Error::conflict("no free MAC after 64 tries: give one with --mac"))
        }
        MacScheme::NetworkWrapper => {
            let worker = netlink
                .addresses()?
                .into_iter()
                .find_map(|a| match a.address.addr() {
                    IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => Some(v4),
                    _ => None,
                })
                .ok_or_else(|| {
                    Error::not_found(
                        "--mac-scheme network-wrapper needs an IPv4 address in the host namespace",
                    )
                })?;
            for _ in 0..64 {
                let mac = naming::network_wrapper_mac(worker, random_pair()?);
                if !taken(netlink, &mac)? {
                    return Ok(mac);
                }
            }
            Err(Error::conflict("no free network-wrapper MAC after 64 tries"))
        }
    }
}

pub(super) fn random_pair() -> Result<[u8; 2]> {
    let mut bytes = [0u8; 2];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::new(ErrorKind::Io, format!("get random bytes for a network-wrapper MAC: {e}"))
    })?;
    Ok(bytes)
}

/// The veth's host end gets a stable MAC starting with 0xfe: a Linux bridge without a MAC of
/// its own takes its ports' lowest MAC, so a high one never changes the bridge's address (the
/// trick libvirt uses for its tap devices).
pub(crate) fn host_end_mac(host_id: &str, identity: &str, guest_ifname: &str) -> [u8; 6] {
    let mut mac = naming::stable_mac(host_id, &format!("host-end:{identity}"), guest_ifname, 0).0;
    mac[0] = 0xfe;
    mac
}
