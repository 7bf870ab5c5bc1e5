//! Links: look up, create (veth with its peer born in the guest, macvlan born in the guest or
//! kept in the host, bridge), change, delete.

use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::link::{
    BridgePortState, InfoBridgePort, InfoData, InfoKind, InfoMacVlan, InfoPortData, InfoVeth,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode, State,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::Netlink;
use crate::error::Result;
use crate::netns::Netns;

/// What kind of device a link is, as far as lanyard cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Veth,
    Macvlan,
    Loopback,
    /// Anything else: a physical NIC, a bond, a vxlan... (`None` when the kernel names no kind).
    Other(Option<String>),
}

/// The facts about a link that attach, detach and inspect decide on.
#[derive(Debug, Clone)]
pub struct LinkDetails {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    pub mtu: u32,
    pub max_mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
    pub lower_up: bool,
    pub oper_up: bool,
    /// Index of the bridge (or bond...) this link is a port of.
    pub controller: Option<u32>,
    /// Set when the link is a bridge port.
    pub bridge_port_state: Option<BridgePortState>,
    /// The link a macvlan/vlan sits on, or a veth's peer index (in the peer's namespace).
    pub parent: Option<u32>,
    /// How often the link lost its carrier since it was made (IFLA_CARRIER_DOWN_COUNT). The
    /// kernel folds carrier changes that come faster than it reports them into one notification,
    /// but counts every loss here: a flap shows as a bigger count even when no notification
    /// showed the link down.
    pub carrier_down_count: Option<u32>,
}

impl LinkDetails {
    pub(super) fn from_message(message: &LinkMessage) -> LinkDetails {
        let mut details = LinkDetails {
            index: message.header.index,
            name: String::new(),
            kind: LinkKind::Other(None),
            mtu: 0,
            max_mtu: None,
            mac: None,
            up: message.header.flags.contains(LinkFlags::Up),
            lower_up: message.header.flags.contains(LinkFlags::LowerUp),
            oper_up: false,
            controller: None,
            bridge_port_state: None,
            parent: None,
            carrier_down_count: None,
        };
        if message.header.flags.contains(LinkFlags::Loopback) {
            details.kind = LinkKind::Loopback;
        }
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => details.name = name.clone(),
                LinkAttribute::Mtu(mtu) => details.mtu = *mtu,
                LinkAttribute::MaxMtu(mtu) => details.max_mtu = Some(*mtu),
                LinkAttribute::Address(mac) if mac.len() == 6 => {
                    let mut octets = [0u8; 6];
                    octets.copy_from_slice(mac);
                    details.mac = Some(octets);
                }
                LinkAttribute::OperState(state) => details.oper_up = *state == State::Up,
                LinkAttribute::Controller(index) => details.controller = Some(*index),
                LinkAttribute::Link(index) => details.parent = Some(*index),
                LinkAttribute::CarrierDownCount(count) => details.carrier_down_count = Some(*count),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => {
                                details.kind = match kind {
                                    InfoKind::Bridge => LinkKind::Bridge,
                                    InfoKind::Veth => LinkKind::Veth,
                                    InfoKind::MacVlan => LinkKind::Macvlan,
                                    other => LinkKind::Other(Some(other.to_string())),
                                }
                            }
                            LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                                for item in port {
                                    if let InfoBridgePort::State(state) = item {
                                        details.bridge_port_state = Some(*state);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        details
    }

    pub fn is_bridge_port(&self) -> bool {
        self.bridge_port_state.is_some()
    }

    pub fn forwarding(&self) -> bool {
        self.bridge_port_state == Some(BridgePortState::Forwarding)
    }
}

/// A link to create. The guest end is always born inside the guest namespace (`IFLA_NET_NS_FD`
/// in the same request): moving a link between namespaces afterwards blocks ~16-20 ms here. It is
/// always born down, so that its per-interface sysctls (`accept_ra`, `disable_ipv6`) are written
/// before IPv6 starts on it; the caller brings it up with [`Netlink::set_up`] afterwards.
pub enum NewLink<'a> {
    Bridge {
        name: &'a str,
    },
    /// A veth whose host end optionally joins `bridge` and comes up; the guest end stays down.
    Veth {
        host_name: &'a str,
        host_mac: [u8; 6],
        host_mtu: u32,
        bridge: Option<u32>,
        guest_name: &'a str,
        guest_mac: [u8; 6],
        guest_mtu: u32,
        guest: &'a Netns,
    },
    Macvlan {
        parent: u32,
        mode: MacVlanMode,
        guest_name: &'a str,
        guest_mac: [u8; 6],
        guest_mtu: u32,
        guest: &'a Netns,
    },
    /// A macvlan child of `parent` that stays in the socket's own namespace (the host's
    /// host-route shim); born down like the others, so its sysctls come first.
    LocalMacvlan {
        name: &'a str,
        parent: u32,
        mode: MacVlanMode,
    },
}

fn up_message() -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.flags = LinkFlags::Up;
    message.header.change_mask = LinkFlags::Up;
    message
}

impl Netlink {
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<LinkDetails>> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(message, &format!("look up interface {name}"))
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<LinkDetails>> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.get_link(message, &format!("look up interface #{index}"))
    }

    fn get_link(&mut self, message: LinkMessage, what: &str) -> Result<Option<LinkDetails>> {
        match self.request(RouteNetlinkMessage::GetLink(message), 0) {
            Ok(answers) => Ok(answers.iter().find_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(LinkDetails::from_message(link)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.kernel_error(what, e)),
        }
    }

    pub fn links(&mut self) -> Result<Vec<LinkDetails>> {
        let answers = self
            .request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)
            .map_err(|e| self.kernel_error("list interfaces", e))?;
        Ok(answers
            .iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(LinkDetails::from_message(link)),
                _ => None,
            })
            .collect())
    }

    /// Create a link; EEXIST is returned as an error with that errno for callers that treat
    /// a concurrent creator as success (bridges).
    pub fn create_link(&mut self, link: &NewLink<'_>) -> Result<()> {
        let (message, what) = match link {
            NewLink::Bridge { name } => {
                let mut message = up_message();
                message.attributes.push(LinkAttribute::IfName(name.to_string()));
                message
                    .attributes
                    .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
                (message, format!("create bridge {name}"))
            }
            NewLink::Veth {
                host_name,
                host_mac,
                host_mtu,
                bridge,
                guest_name,
                guest_mac,
                guest_mtu,
                guest,
            } => {
                // The peer cannot be brought up in this request: the kernel configures it before
                // linking the pair and answers ENOTCONN. The caller brings it up in the guest.
                let mut peer = LinkMessage::default();
                peer.attributes.push(LinkAttribute::IfName(guest_name.to_string()));
                peer.attributes.push(LinkAttribute::Address(guest_mac.to_vec()));
                peer.attributes.push(LinkAttribute::Mtu(*guest_mtu));
                peer.attributes.push(LinkAttribute::NetNsFd(guest.as_raw_fd()));
                let mut message = up_message();
                message.attributes.push(LinkAttribute::IfName(host_name.to_string()));
                message.attributes.push(LinkAttribute::Address(host_mac.to_vec()));
                message.attributes.push(LinkAttribute::Mtu(*host_mtu));
                if let Some(bridge) = bridge {
                    message.attributes.push(LinkAttribute::Controller(*bridge));
                }
                message.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Veth),
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
                ]));
                (message, format!("create veth {host_name} with peer {guest_name} in the guest"))
            }
            NewLink::Macvlan { parent, mode, guest_name, guest_mac, guest_mtu, guest } => {
                // Down, like a veth's guest end: up only once the guest's sysctls are written.
                let mut message = LinkMessage::default();
                message.attributes.push(LinkAttribute::IfName(guest_name.to_string()));
                message.attributes.push(LinkAttribute::Address(guest_mac.to_vec()));
                message.attributes.push(LinkAttribute::Mtu(*guest_mtu));
                message.attributes.push(LinkAttribute::Link(*parent));
                message.attributes.push(LinkAttribute::NetNsFd(guest.as_raw_fd()));
                message.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::MacVlan),
                    LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(*mode)])),
                ]));
                (message, format!("create macvlan {guest_name} in the guest on parent #{parent}"))
            }
            NewLink::LocalMacvlan { name, parent, mode } => {
                let mut message = LinkMessage::default();
                message.attributes.push(LinkAttribute::IfName(name.to_string()));
                message.attributes.push(LinkAttribute::Link(*parent));
                message.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::MacVlan),
                    LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(*mode)])),
                ]));
                (message, format!("create macvlan {name} on parent #{parent}"))
            }
        };
        self.request(RouteNetlinkMessage::NewLink(message), NLM_F_CREATE | NLM_F_EXCL)
            .map(|_| ())
            .map_err(|e| self.kernel_error(what, e))
    }

    /// Delete a link by index; a link already gone counts as deleted.
    pub fn delete_link(&mut self, index: u32, name: &str) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(message), 0) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(self.kernel_error(format!("delete interface {name}"), e)),
        }
    }

    /// Delete a link by name; a link already gone counts as deleted.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<()> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(message), 0) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(self.kernel_error(format!("delete interface {name}"), e)),
        }
    }

    /// Bring a link up: a guest interface, once its sysctls are written (every guest interface
    /// is created down).
    pub fn set_up(&mut self, index: u32, name: &str) -> Result<()> {
        let mut message = up_message();
        message.header.index = index;
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(|_| ())
            .map_err(|e| self.kernel_error(format!("bring up {name}"), e))
    }

    /// Set a link's MTU (a DHCP server's option 26).
    pub fn set_mtu(&mut self, index: u32, name: &str, mtu: u32) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(|_| ())
            .map_err(|e| self.kernel_error(format!("set the MTU of {name} to {mtu}"), e))
    }

    /// Names of the ports of a bridge (links whose controller is `bridge`).
    pub fn bridge_ports(&mut self, bridge: u32) -> Result<Vec<String>> {
        Ok(self
            .links()?
            .into_iter()
            .filter(|link| link.controller == Some(bridge))
            .map(|link| link.name)
            .collect())
    }
}

impl Netlink {
    /// Answer neighbour solicitations for `address` on the link `index` (a proxy NDP entry, as
    /// `ip -6 neigh add proxy ADDRESS dev NAME`); one already there is kept. The entry goes with
    /// the link.
    pub fn add_proxy_neighbour(
        &mut self,
        index: u32,
        name: &str,
        address: std::net::Ipv6Addr,
    ) -> Result<()> {
        use netlink_packet_core::NLM_F_REPLACE;
        use netlink_packet_route::neighbour::{
            NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        };
        use netlink_packet_route::AddressFamily;
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet6;
        message.header.ifindex = index;
        message.header.flags = NeighbourFlags::Proxy;
        message.header.state = NeighbourState::Permanent;
        message.attributes.push(NeighbourAttribute::Destination(address.into()));
        self.request(RouteNetlinkMessage::NewNeighbour(message), NLM_F_CREATE | NLM_F_REPLACE)
            .map(|_| ())
            .map_err(|e| self.kernel_error(format!("add proxy NDP entry {address} on {name}"), e))
    }

    /// Whether a bridge's forwarding table knows `mac` (learned or static): a new guest MAC must
    /// not collide with a machine already seen on the segment. One targeted get, not a dump,
    /// so the cost does not grow with the number of ports.
    pub fn bridge_fdb_has(&mut self, bridge: u32, mac: [u8; 6]) -> Result<bool> {
        use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage};
        use netlink_packet_route::AddressFamily;
        let mut query = NeighbourMessage::default();
        query.header.family = AddressFamily::Bridge;
        query.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        query.attributes.push(NeighbourAttribute::Controller(bridge));
        match self.request(RouteNetlinkMessage::GetNeighbour(query), 0) {
            Ok(answers) => Ok(!answers.is_empty()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(self.kernel_error("look up a MAC in the bridge forwarding table", e)),
        }
    }
}
