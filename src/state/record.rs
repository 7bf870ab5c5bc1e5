//! One attachment's record: enough to find the guest again, notice that its namespace was
//! replaced (a restarted container), and undo exactly what lanyard made.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::netlink::DefaultRoute;
use crate::netns::NetnsId;
use crate::spec::{AddressSpec, MacAddr, MacScheme, MacvlanMode, RouteSpec};

pub const RECORD_VERSION: u32 = 1;

/// How to find the guest again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GuestRef {
    Container { id: String, name: String },
    Netns { name: String },
    Pid { pid: u32 },
    Path { path: String },
}

impl GuestRef {
    /// The identity that MACs and host names derive from: stable across restarts of the same
    /// container or namespace.
    pub fn identity(&self) -> String {
        match self {
            GuestRef::Container { name, .. } => format!("container:{name}"),
            GuestRef::Netns { name } => format!("netns:{name}"),
            GuestRef::Pid { pid } => format!("pid:{pid}"),
            GuestRef::Path { path } => format!("path:{path}"),
        }
    }

    /// A file-name-safe key; containers use their name, so a container re-created under the
    /// same name finds (and replaces) its stale record.
    pub fn key(&self) -> String {
        let safe = |s: &str| {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
                .collect::<String>()
        };
        match self {
            GuestRef::Container { name, .. } => format!("container-{}", safe(name)),
            GuestRef::Netns { name } => format!("netns-{}", safe(name)),
            GuestRef::Pid { pid } => format!("pid-{pid}"),
            GuestRef::Path { path } => {
                let digest = Sha256::digest(path.as_bytes());
                let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
                format!("path-{hex}")
            }
        }
    }

    /// Does a user's token (as typed to detach/inspect) name this guest?
    pub fn matches(&self, token: &str) -> bool {
        match self {
            GuestRef::Container { id, name } => {
                token == name || (token.len() >= 4 && id.starts_with(token))
            }
            GuestRef::Netns { name } => token == name || token.strip_prefix("netns:") == Some(name),
            GuestRef::Pid { pid } => {
                token.strip_prefix("pid:").unwrap_or(token).parse::<u32>().ok() == Some(*pid)
            }
            GuestRef::Path { path } => token == path,
        }
    }

    pub fn display(&self) -> String {
        match self {
            GuestRef::Container { name, .. } => name.clone(),
            GuestRef::Netns { name } => format!("netns:{name}"),
            GuestRef::Pid { pid } => format!("pid:{pid}"),
            GuestRef::Path { path } => path.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverKind {
    Bridge,
    Macvlan,
    HostOnly,
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DriverKind::Bridge => "bridge",
            DriverKind::Macvlan => "macvlan",
            DriverKind::HostOnly => "host-only",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub guest: GuestRef,
    /// The guest namespace's identity when attached; a different one now means the guest was
    /// restarted and this record is stale.
    pub netns: NetnsId,
    pub guest_ifname: String,
    pub driver: DriverKind,
    /// The bridge (bridge), the parent interface (macvlan) or the host end (host-only).
    pub host_interface: String,
    /// The host end of the veth (bridge and host-only); macvlan has none.
    pub host_ifname: Option<String>,
    /// lanyard created the bridge, so detach removes it once its last port leaves.
    #[serde(default)]
    pub created_bridge: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan_mode: Option<MacvlanMode>,
    pub mac: MacAddr,
    pub mac_scheme: MacScheme,
    pub mtu: u32,
    pub addresses: Vec<AddressSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub host_addresses: Vec<IpNet>,
    /// Default routes the guest had before `@GW` replaced them; restored on detach.
    #[serde(default)]
    pub replaced_default_routes: Vec<DefaultRoute>,
    /// Seconds since the Unix epoch.
    pub attached_at: u64,
    /// Set when the daemon keeps a DHCPv4 lease for this interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpSettings>,
}

/// How the daemon's DHCP client presents this interface; fixed at attach so a restarted daemon
/// (or container) asks exactly as before and the server gives the same address.
/// `Default` is pipework's plain `dhcp`: the name and client id are filled in at attach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpSettings {
    /// Option 12 (or 81 with `fqdn`): default the container or netns name.
    pub hostname: Option<String>,
    /// Send the name as a client FQDN (option 81) instead of option 12 (RFC 4702: never both).
    #[serde(default)]
    pub fqdn: bool,
    /// Option 61, stable per guest and interface.
    pub client_id: String,
    /// Write DNS servers and search list into the guest's resolv.conf.
    #[serde(default)]
    pub set_resolv: bool,
    /// IPv6 router advertisements and autoconfiguration on this interface.
    #[serde(default)]
    pub slaac: bool,
    /// ARP-probe an acknowledged address before using it; DHCPDECLINE if someone answers.
    #[serde(default)]
    pub probe: bool,
}

impl Record {
    pub fn file_name(&self) -> String {
        format!("{}.{}.json", self.guest.key(), self.guest_ifname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_refs_match_what_users_type() {
        let container = GuestRef::Container { id: "abcdef0123456789".into(), name: "web".into() };
        assert!(container.matches("web"));
        assert!(container.matches("abcdef"));
        assert!(!container.matches("abc"), "ID prefixes shorter than 4 are too ambiguous");
        assert!(!container.matches("db"));
        let netns = GuestRef::Netns { name: "lab".into() };
        assert!(netns.matches("lab") && netns.matches("netns:lab"));
        let pid = GuestRef::Pid { pid: 42 };
        assert!(pid.matches("42") && pid.matches("pid:42") && !pid.matches("4"));
        assert_eq!(
            GuestRef::Container { id: "x".into(), name: "a/b c".into() }.key(),
            "container-a_b_c"
        );
        assert!(GuestRef::Path { path: "/proc/1/ns/net".into() }.key().starts_with("path-"));
    }
}
