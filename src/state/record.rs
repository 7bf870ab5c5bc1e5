//! One attachment's record: enough to find the guest again, notice that its namespace was
//! replaced (a restarted container), and undo exactly what lanyard made.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::netlink::DefaultRoute;
use crate::netns::NetnsId;
use crate::spec::{AddressSpec, MacAddr, MacScheme, MacvlanMode, RouteSpec};

/// The record format this lanyard writes; it reads every format up to this one.
/// 1: the file name folds the guest's name (see `GuestRef::legacy_key`), so two guests could
///    share a file. 2: the file name is injective ([`slot_file_name`]).
pub const RECORD_VERSION: u32 = 2;

/// Longest record file name [`slot_file_name`] makes: leaves room under the 255-byte limit of
/// file names for the temporary name it is written under.
const MAX_FILE_NAME: usize = 200;

/// Hex digits of SHA-256 appended to a file name that had to be shortened.
const SHORTENED_HASH_HEX: usize = 32;

/// How to find the guest again. `Cni` is a CNI attachment, identified as the spec identifies
/// it: the runtime's `container_id` and the `network`'s name (the interface is the record's own
/// `guest_ifname`); `netns` is CNI_NETNS at ADD, where the guest's namespace is found again;
/// `stable_name` is what stable MACs and client ids derive from: `pod:NAMESPACE/NAME` when the
/// runtime passes K8S_POD_NAME (a re-created pod asks for the same address), else
/// `container:ID`; `ipam_only` marks lanyard as the IPAM plugin of another CNI plugin (the
/// reference bridge or macvlan), which made the link and configures it: lanyard only keeps the
/// lease, and neither configures nor removes the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GuestRef {
    Container {
        id: String,
        name: String,
    },
    Netns {
        name: String,
    },
    Pid {
        pid: u32,
    },
    Path {
        path: String,
    },
    // An endpoint the Docker network plugin made (see `crate::plugin`): Docker names no
    // container to a plugin, so the endpoint is known by its network's and its own Docker id.
    DockerEndpoint {
        network: String,
        endpoint: String,
    },
    Cni {
        container_id: String,
        network: String,
        netns: String,
        stable_name: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ipam_only: bool,
    },
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
            GuestRef::DockerEndpoint { network, endpoint } => {
                format!("docker-endpoint:{network}/{endpoint}")
            }
            GuestRef::Cni { network, stable_name, .. } => format!("cni:{network}:{stable_name}"),
        }
    }

    /// The guest's kind and the exact fields its identity is made of: what a record file name
    /// is derived from. Containers are known by name (not id), so a container re-created under
    /// the same name finds (and replaces) its stale record.
    fn identity_fields(&self) -> (&'static str, Vec<String>) {
        match self {
            GuestRef::Container { name, .. } => ("container", vec![name.clone()]),
            GuestRef::Netns { name } => ("netns", vec![name.clone()]),
            GuestRef::Pid { pid } => ("pid", vec![pid.to_string()]),
            GuestRef::Path { path } => ("path", vec![path.clone()]),
            GuestRef::DockerEndpoint { network, endpoint } => {
                ("dockerendpoint", vec![network.clone(), endpoint.clone()])
            }
            GuestRef::Cni { container_id, network, .. } => {
                ("cni", vec![container_id.clone(), network.clone()])
            }
        }
    }

    /// A key that names this guest and no other (see [`slot_file_name`]), readable where the
    /// guest's name is.
    pub fn key(&self) -> String {
        let (kind, fields) = self.identity_fields();
        escaped_key(kind, &fields.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The key format-1 records were stored under. It folds every character outside
    /// `[A-Za-z0-9._-]` to `_`, so two guests can share it (`netns:a:1` and `netns:a_1`): it
    /// is only used to find records written in that format.
    fn legacy_key(&self) -> String {
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
            // Format 1 predates plugin endpoints: no such record exists; this only keeps the
            // lookup of format-1 names total.
            GuestRef::DockerEndpoint { network, endpoint } => {
                format!("dockerendpoint-{}-{}", safe(network), safe(endpoint))
            }
            // No format-1 CNI records exist. A format-1 name has no `@` and every current one
            // has, so the legacy lookup of a CNI slot never finds a file.
            GuestRef::Cni { .. } => self.key(),
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
            GuestRef::DockerEndpoint { endpoint, .. } => {
                token.len() >= 4 && endpoint.starts_with(token)
            }
            GuestRef::Cni { container_id, .. } => {
                token == container_id || (token.len() >= 4 && container_id.starts_with(token))
            }
        }
    }

    pub fn display(&self) -> String {
        match self {
            GuestRef::Container { name, .. } => name.clone(),
            GuestRef::Netns { name } => format!("netns:{name}"),
            GuestRef::Pid { pid } => format!("pid:{pid}"),
            GuestRef::Path { path } => path.clone(),
            GuestRef::DockerEndpoint { network, endpoint } => format!(
                "docker-endpoint:{} (network {})",
                endpoint.chars().take(12).collect::<String>(),
                network.chars().take(12).collect::<String>()
            ),
            GuestRef::Cni { container_id, network, .. } => format!("cni:{network}:{container_id}"),
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
    /// Made by the daemon from a container's declaration (a label or a pipework_cmd variable);
    /// `None` for an attach a person ran, which the daemon never changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<Declared>,
    /// The host has a route to each of the guest's addresses through a macvlan shim on
    /// `host_interface` (see [`crate::host_routes`]); detach removes them. Left out of the file
    /// when false, so a record without host routes reads the same in any lanyard of format 2.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_route: bool,
    /// This attachment's choices for lanyard's own DNS updates (config `[dns_update]`); left
    /// out of the file when it has none, so such a record reads the same in any lanyard of
    /// format 2.
    #[serde(default, skip_serializing_if = "DnsChoice::is_default")]
    pub dns: DnsChoice,
}

/// `--dns-name` / `--no-dns-update` (label `lanyard.dns`): whether and under which name the
/// daemon registers this attachment's addresses when the config has `[dns_update]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsChoice {
    /// The label to register instead of the config's `name` template (rendered as one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `--no-dns-update`: never registered by lanyard (a DHCP server may still register it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub off: bool,
    /// The client identifier of a static attachment's DHCID record (a DHCP one's is its
    /// client's option 61), derived at attach from the attaching host id: a daemon that derived
    /// it from its own host id would hold a name it registered under another one as someone
    /// else's. Empty in records from before it existed: the daemon derives it then.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
}

impl DnsChoice {
    fn is_default(&self) -> bool {
        *self == DnsChoice::default()
    }
}

/// Where an attachment's declaration came from and what it said: the daemon re-wires the
/// interface when the text changes, and leaves it alone while it does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    /// "label lanyard.net.backend", "env pipework_cmd".
    pub source: String,
    /// The value as written (macros expanded).
    pub text: String,
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
    /// The file this record is stored under. Format-1 records keep the name they were written
    /// under, so an upgrade renames nothing: the daemon knows a lease by its record's file name
    /// (and names the lease file after it), and a running daemon would lose track of a renamed
    /// one. New records get the injective name.
    pub fn file_name(&self) -> String {
        if self.version <= 1 {
            format!("{}.{}.json", self.guest.legacy_key(), self.guest_ifname)
        } else {
            Self::file_name_for(&self.guest, &self.guest_ifname)
        }
    }

    /// The file name a record of `guest`'s `guest_ifname` gets in the current format.
    pub fn file_name_for(guest: &GuestRef, guest_ifname: &str) -> String {
        let (kind, fields) = guest.identity_fields();
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        slot_file_name(kind, &fields, guest_ifname)
    }

    /// Where a format-1 record of `guest`'s `guest_ifname` would be. Another guest whose name
    /// folds alike may be stored there: compare identities before taking it for this guest's.
    pub fn legacy_file_name_for(guest: &GuestRef, guest_ifname: &str) -> String {
        format!("{}.{}.json", guest.legacy_key(), guest_ifname)
    }

    /// Is this a record of exactly this guest's interface? A record names its guest by identity
    /// (containers by name, so a re-created container's stale record counts), never by file name.
    pub fn is_slot_of(&self, guest: &GuestRef, guest_ifname: &str) -> bool {
        self.guest.identity() == guest.identity() && self.guest_ifname == guest_ifname
    }

    /// Could the record file `file_name` be one of `guest`'s? Judged from the name alone, to
    /// spare reading other guests' records; never false for one of its records (a shortened
    /// name is kept when its readable part could be), so the caller still compares identities.
    pub fn may_belong_to(file_name: &str, guest: &GuestRef) -> bool {
        let current = format!("{}@", guest.key());
        let readable = match file_name.split_once('~') {
            Some((readable, _)) => readable,
            None => file_name,
        };
        file_name.starts_with(&current)
            || (readable.len() < file_name.len() && current.starts_with(readable))
            || file_name.starts_with(&format!("{}.", guest.legacy_key()))
    }
}

/// The record file name of one attachment slot: a guest of `kind` identified by `fields` (a
/// container name; later a CNI container id and network name) and its interface `ifname`.
///
/// Injective, so two slots never share a file: every field is escaped reversibly (bytes outside
/// `[A-Za-z0-9._-]` become `%XX`), which leaves `+` (between fields), `@` (before the interface)
/// and `~` free as separators, and kinds contain no `-`; so the name can be parsed back into
/// exactly one (kind, fields, ifname). Escaping rather than hashing keeps the common names
/// readable (`netns-lab@eth1.json`). A name longer than [`MAX_FILE_NAME`] keeps a readable
/// prefix and ends in `~` and 128 bits of SHA-256 over the exact, length-prefixed inputs: no
/// longer strictly injective, but a collision would take a SHA-256 collision. Format-1 names
/// never contain `@`, so a current name never lands on a format-1 record.
pub fn slot_file_name(kind: &str, fields: &[&str], ifname: &str) -> String {
    let name = format!("{}@{}.json", escaped_key(kind, fields), escape(ifname));
    if name.len() <= MAX_FILE_NAME {
        return name;
    }
    let mut hasher = Sha256::new();
    for part in std::iter::once(kind).chain(fields.iter().copied()).chain([ifname]) {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let keep = MAX_FILE_NAME - ".json".len() - 1 - SHORTENED_HASH_HEX;
    // Escaped text is ASCII, so any byte offset is a character boundary.
    format!("{}~{}.json", &name[..keep], &hash[..SHORTENED_HASH_HEX])
}

fn escaped_key(kind: &str, fields: &[&str]) -> String {
    let escaped: Vec<String> = fields.iter().map(|f| escape(f)).collect();
    format!("{kind}-{}", escaped.join("+"))
}

/// Bytes outside `[A-Za-z0-9._-]` as `%XX`: reversible, and never a `/`, `+`, `@` or `~`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"._-".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guests_own_file_names_always_may_belong_to_it() {
        let long = "n".repeat(300);
        let guests = [
            GuestRef::Netns { name: "web".into() },
            GuestRef::Netns { name: "kc:1".into() },
            GuestRef::Netns { name: long.clone() },
            GuestRef::Pid { pid: 42 },
            GuestRef::Container { id: "abc".into(), name: "db".into() },
            GuestRef::Path { path: "/proc/7/ns/net".into() },
            GuestRef::DockerEndpoint { network: "ab".repeat(32), endpoint: "cd".repeat(32) },
            GuestRef::Cni {
                container_id: "c0ffee".into(),
                network: "lan+1".into(),
                netns: "/run/netns/cni-1".into(),
                stable_name: "pod:/web1".into(),
                ipam_only: false,
            },
        ];
        for guest in &guests {
            for ifname in ["eth1", "lan 0"] {
                let current = Record::file_name_for(guest, ifname);
                let legacy = Record::legacy_file_name_for(guest, ifname);
                assert!(Record::may_belong_to(&current, guest), "{current}");
                assert!(Record::may_belong_to(&legacy, guest), "{legacy}");
            }
        }
        // Other guests' files are passed over by name, without being read.
        let web = GuestRef::Netns { name: "web".into() };
        for other in ["webserver", "we", "kc:1"] {
            let name = Record::file_name_for(&GuestRef::Netns { name: other.into() }, "eth1");
            assert!(!Record::may_belong_to(&name, &web), "{name}");
        }
        let pid4 = GuestRef::Pid { pid: 4 };
        assert!(!Record::may_belong_to(
            &Record::file_name_for(&GuestRef::Pid { pid: 42 }, "eth1"),
            &pid4
        ));
    }

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
    }

    fn netns(name: &str) -> GuestRef {
        GuestRef::Netns { name: name.into() }
    }

    #[test]
    fn file_names_are_injective_where_the_old_ones_collided() {
        let name = |guest: &GuestRef, ifname: &str| Record::file_name_for(guest, ifname);
        // Each pair shared one format-1 file.
        let pairs = [
            ((netns("kc:1"), "eth1"), (netns("kc_1"), "eth1")),
            ((netns("a b"), "eth1"), (netns("a_b"), "eth1")),
            ((netns("a.b"), "eth1"), (netns("a"), "b.eth1")),
            (
                (GuestRef::Container { id: "1".into(), name: "a/b".into() }, "eth1"),
                (GuestRef::Container { id: "2".into(), name: "a_b".into() }, "eth1"),
            ),
        ];
        for ((guest_a, if_a), (guest_b, if_b)) in pairs {
            assert_eq!(
                Record::legacy_file_name_for(&guest_a, if_a),
                Record::legacy_file_name_for(&guest_b, if_b),
                "the format-1 names of {guest_a:?} and {guest_b:?} should collide"
            );
            assert_ne!(name(&guest_a, if_a), name(&guest_b, if_b));
        }
        assert_eq!(name(&netns("lab"), "eth1"), "netns-lab@eth1.json");
        let endpoint = GuestRef::DockerEndpoint { network: "n1".into(), endpoint: "e1".into() };
        assert_eq!(name(&endpoint, "lyge1"), "dockerendpoint-n1+e1@lyge1.json");
        // A CNI attachment's name is its container id and network, never the namespace path.
        let cni = |id: &str, network: &str, netns: &str| GuestRef::Cni {
            container_id: id.into(),
            network: network.into(),
            netns: netns.into(),
            stable_name: "pod:/web1".into(),
            ipam_only: false,
        };
        assert_eq!(name(&cni("c0ffee", "lan", "/run/netns/a"), "eth0"), "cni-c0ffee+lan@eth0.json");
        // lanyard as another plugin's IPAM keeps its record under the same key.
        let mut ipam = cni("c0ffee", "lan", "/run/netns/a");
        if let GuestRef::Cni { ipam_only, .. } = &mut ipam {
            *ipam_only = true;
        }
        assert_eq!(name(&ipam, "eth0"), "cni-c0ffee+lan@eth0.json");
        assert_eq!(
            name(&cni("c0ffee", "lan", "/run/netns/a"), "eth0"),
            name(&cni("c0ffee", "lan", ""), "eth0")
        );
        assert_ne!(name(&cni("a+b", "c", ""), "eth0"), name(&cni("a", "b+c", ""), "eth0"));
        assert_eq!(name(&netns("kc:1"), "eth1"), "netns-kc%3A1@eth1.json");
        assert_eq!(
            name(&GuestRef::Path { path: "/proc/7/ns/net".into() }, "eth1"),
            "path-%2Fproc%2F7%2Fns%2Fnet@eth1.json"
        );
        // The separators cannot be forged from inside a field.
        assert_ne!(
            slot_file_name("cni", &["a+b", "c"], "eth0"),
            slot_file_name("cni", &["a", "b+c"], "eth0")
        );
        assert_ne!(slot_file_name("cni", &["a@b"], "c"), slot_file_name("cni", &["a"], "b@c"));
        // A container's key is its name, so its re-creation (a new id) finds the old record.
        let old = GuestRef::Container { id: "old".into(), name: "web".into() };
        let new = GuestRef::Container { id: "new".into(), name: "web".into() };
        assert_eq!(name(&old, "eth1"), name(&new, "eth1"));
    }

    #[test]
    fn long_names_are_shortened_to_a_valid_distinct_file_name() {
        let long_a = "a".repeat(255);
        let mut long_b = "a".repeat(254);
        long_b.push('b');
        let (a, b) = (
            Record::file_name_for(&netns(&long_a), "eth1"),
            Record::file_name_for(&netns(&long_b), "eth1"),
        );
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(name.len() <= MAX_FILE_NAME, "{} bytes", name.len());
            assert!(
                name.starts_with("netns-aaaa") && name.ends_with(".json") && name.contains('~')
            );
            assert!(!name.contains('/'));
        }
        // Escaping multiplies the length by three: still shortened, still valid.
        let wide = Record::file_name_for(&netns(&":".repeat(255)), "eth1");
        assert!(wide.len() <= MAX_FILE_NAME && wide.contains('~'));
        // A name just under the limit is kept whole.
        let fits = "f".repeat(MAX_FILE_NAME - "netns-@eth1.json".len());
        assert_eq!(Record::file_name_for(&netns(&fits), "eth1").len(), MAX_FILE_NAME);
    }

    #[test]
    fn format_1_records_keep_their_file_name() {
        let guest = netns("kc:1");
        assert_eq!(Record::legacy_file_name_for(&guest, "eth1"), "netns-kc_1.eth1.json");
        assert!(Record::legacy_file_name_for(&GuestRef::Path { path: "/x".into() }, "eth1")
            .starts_with("path-"));
    }

    #[test]
    fn dns_choices_without_a_client_id_read_as_before() {
        let old: DnsChoice = serde_json::from_str(r#"{"name":"web"}"#).unwrap();
        assert_eq!(old, DnsChoice { name: Some("web".into()), ..Default::default() });
        assert!(old.client_id.is_empty(), "the daemon derives one for such a record");
        let text = serde_json::to_string(&old).unwrap();
        assert_eq!(text, r#"{"name":"web"}"#, "an empty client id stays out of the file");
    }
}
