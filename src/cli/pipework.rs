//! pipework's own command line, translated into lanyard requests; nothing here touches the
//! system. The accepted grammar follows jpetazzo/pipework's script (the 2016 version with
//! `route`, `rule`, `tc`, `-l`, `-a` and `--direct-phys`). Whatever pipework can do that lanyard
//! deliberately does not is refused by name with `Error::unsupported`, so a migrated script
//! fails loudly instead of half-working; the two tables below are the source for the README.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::attach::{AttachRequest, DEFAULT_GUEST_IFNAME};
use crate::error::{Error, Result};
use crate::guest::GuestSpec;
use crate::spec::{self, AddressSpec, MacAddr};

/// A command line `lanyard pipework` accepts. Each usage message quotes its own form by name,
/// so reordering or adding forms cannot make one command print another's usage.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PipeworkForm {
    StaticAddress,
    LinkOnly,
    Dhcp,
    DhcpClient,
    Route,
    Wait,
}

impl PipeworkForm {
    pub const ALL: [PipeworkForm; 6] = [
        PipeworkForm::StaticAddress,
        PipeworkForm::LinkOnly,
        PipeworkForm::Dhcp,
        PipeworkForm::DhcpClient,
        PipeworkForm::Route,
        PipeworkForm::Wait,
    ];

    /// The form as the README and the usage messages write it, after `lanyard pipework`.
    pub const fn usage(self) -> &'static str {
        match self {
            PipeworkForm::StaticAddress => {
                "HOSTIF [-i GUESTIF] [-l HOSTSIDEIF] GUEST IP/PREFIX[@GATEWAY] [MAC]"
            }
            PipeworkForm::LinkOnly => {
                "HOSTIF [-i GUESTIF] [-l HOSTSIDEIF] GUEST 0/0 [MAC]  (link only, no address)"
            }
            PipeworkForm::Dhcp => "HOSTIF [-i GUESTIF] [-l HOSTSIDEIF] GUEST dhcp[:CLIENTARGS] [MAC]",
            PipeworkForm::DhcpClient => {
                "HOSTIF [-i GUESTIF] [-l HOSTSIDEIF] GUEST udhcpc|udhcpc-f|dhclient|dhclient-f|dhcpcd[:CLIENTARGS] [MAC]"
            }
            PipeworkForm::Route => {
                "route GUEST add|del|replace PREFIX|default [via GATEWAY] [dev IF] [metric N]"
            }
            PipeworkForm::Wait => "--wait [-i GUESTIF]",
        }
    }
}

/// Every form's usage, in the README's order.
pub const SUPPORTED_FORMS: [&str; 6] = [
    PipeworkForm::ALL[0].usage(),
    PipeworkForm::ALL[1].usage(),
    PipeworkForm::ALL[2].usage(),
    PipeworkForm::ALL[3].usage(),
    PipeworkForm::ALL[4].usage(),
    PipeworkForm::ALL[5].usage(),
];

/// pipework features lanyard refuses, with what to do instead. Each is matched by the parser
/// and answered with `Error::unsupported` (exit status 2).
pub const UNSUPPORTED_FEATURES: &[(&str, &str)] = &[
    (
        "@VLAN suffix",
        "MAC@VLAN or IP@VLAN created an 802.1Q subinterface; create it yourself (ip link add link eth0 name eth0.10 type vlan id 10) and attach to eth0.10",
    ),
    (
        "Open vSwitch bridges",
        "host interfaces named ovs*; attach to a Linux bridge or a physical interface",
    ),
    ("IPoIB", "InfiniBand host interfaces (ib*), including partition keys given as @PKEY"),
    (
        "dummy interfaces",
        "host interfaces named dummy* gave the guest an unconnected dummy interface; lanyard only attaches guests to a LAN",
    ),
    (
        "--direct-phys",
        "moved the host's physical interface itself into the guest; attach through macvlan or a bridge instead",
    ),
    (
        "-a FAMILY",
        "the address family flag; drop it, lanyard takes the family from each address",
    ),
    (
        "U:NAME MAC",
        "an MD5-derived MAC; leave the MAC out and lanyard derives a stable one per guest",
    ),
    (
        "route commands other than add, del and replace",
        "pipework passed anything to ip route (show, flush, change, append, get, ...); inspect or change other routes with ip netns exec or nsenter",
    ),
    (
        "route options other than via, dev and metric",
        "pipework passed them to ip route (table, src, proto, scope, onlink, mtu, route types such as blackhole); set them with ip netns exec or nsenter",
    ),
    ("rule", "pipework rule GUEST ... ran ip rule in the guest; run it with ip netns exec or nsenter"),
    ("tc", "pipework tc GUEST ... ran tc in the guest; run it with ip netns exec or nsenter"),
    (
        "--save and --restore",
        "older pipework's replay files; keep the commands in a script instead",
    ),
];

/// DHCP methods pipework accepts where the IP goes; `-f` keeps the client running to renew.
const DHCP_CLIENTS: &[&str] = &["dhcp", "udhcpc", "udhcpc-f", "dhclient", "dhclient-f", "dhcpcd"];

/// ip-route words that come before the prefix (`to`, route types); lanyard adds plain unicast
/// routes only.
const ROUTE_PREFIX_WORDS: &[&str] = &[
    "to",
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "throw",
    "unreachable",
    "prohibit",
    "blackhole",
    "nat",
    "anycast",
];

/// `pipework HOSTIF [-i GUESTIF] [-l HOSTSIDEIF] GUEST ADDRESSING [MAC]`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipeworkAttach {
    pub host_if: HostInterface,
    /// `-i`; None means pipework's default, `DEFAULT_GUEST_IFNAME`.
    pub guest_ifname: Option<String>,
    /// `-l`: the host end of the veth pair when attaching to a bridge.
    pub host_ifname: Option<String>,
    pub guest: String,
    pub addressing: PipeworkAddressing,
    pub mac: Option<MacAddr>,
    /// Things accepted but not honoured, for the caller to print.
    pub notices: Vec<String>,
}

impl PipeworkAttach {
    /// The lanyard request this line asks for, once the caller has found the host interface
    /// (`mac:` needs the kernel) and the guest. Shared by `lanyard pipework` and the daemon's
    /// docker-pipework declarations, so a line means the same in both. Every DHCP method
    /// (`dhcp`, `udhcpc`, `dhclient`, `dhcpcd`, with or without `-f`) becomes a lease the
    /// daemon keeps: lanyard runs its own client for all of them.
    pub fn request(&self, host_interface: &str, guest: GuestSpec) -> Result<AttachRequest> {
        let mut request = AttachRequest::new(host_interface, guest);
        match &self.addressing {
            PipeworkAddressing::Static(address) => request.addresses = vec![address.clone()],
            PipeworkAddressing::LinkOnly => {}
            PipeworkAddressing::Dhcp { .. } => {
                request.dhcp = Some(crate::state::DhcpSettings::default())
            }
        }
        if let Some(name) = &self.guest_ifname {
            request.guest_ifname = name.clone();
        }
        request.host_ifname = self.host_ifname.clone();
        request.mac = self.mac;
        request.validate()?;
        Ok(request)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipeworkCommand {
    Attach(PipeworkAttach),
    Route {
        guest: String,
        action: RouteAction,
        destination: IpNet,
        via: Option<IpAddr>,
        dev: Option<String>,
        metric: Option<u32>,
    },
    Wait {
        guest_ifname: String,
    },
}

/// pipework's HOSTIF: an interface name, or `mac:HOSTMAC` for the host interface that has that
/// address (a NIC whose name is not stable). The parser touches no system, so the caller finds
/// the interface ([`crate::host_interface::name_by_mac`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostInterface {
    Name(String),
    ByMac(MacAddr),
}

impl std::fmt::Display for HostInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostInterface::Name(name) => f.write_str(name),
            HostInterface::ByMac(mac) => write!(f, "mac:{mac}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipeworkAddressing {
    /// `0/0`: the link only, no address.
    LinkOnly,
    Static(AddressSpec),
    /// `client` as typed without client arguments, e.g. "udhcpc-f".
    Dhcp {
        client: String,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RouteAction {
    Add,
    Del,
    Replace,
}

impl std::fmt::Display for RouteAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouteAction::Add => "add",
            RouteAction::Del => "del",
            RouteAction::Replace => "replace",
        })
    }
}

/// Translate pipework's arguments (without the program name).
pub fn parse_pipework(args: &[String]) -> Result<PipeworkCommand> {
    let Some(first) = args.first() else {
        return Err(usage(format!("missing arguments; usage: {}", SUPPORTED_FORMS.join(" | "))));
    };
    match first.as_str() {
        "--wait" => parse_wait(&args[1..]),
        "--direct-phys" => Err(unsupported("--direct-phys")),
        "--save" | "--restore" => Err(unsupported("--save and --restore")),
        "route" => parse_route(&args[1..]),
        "rule" => Err(unsupported("rule")),
        "tc" => Err(unsupported("tc")),
        option if option.starts_with('-') => Err(usage(format!(
            "unknown option {option:?}; pipework starts with a host interface, route, or --wait"
        ))),
        _ => parse_attach(args),
    }
}

fn parse_wait(args: &[String]) -> Result<PipeworkCommand> {
    let guest_ifname = match args {
        [] => DEFAULT_GUEST_IFNAME.to_string(),
        [flag, name] if flag == "-i" => {
            spec::validate_ifname(name, "guest interface name")?;
            name.clone()
        }
        [flag] if flag == "-i" => return Err(usage("-i needs a guest interface name")),
        _ => {
            return Err(usage(format!(
                "unexpected arguments after --wait: {:?}; usage: {}",
                args.join(" "),
                PipeworkForm::Wait.usage()
            )))
        }
    };
    Ok(PipeworkCommand::Wait { guest_ifname })
}

fn parse_attach(args: &[String]) -> Result<PipeworkCommand> {
    let host_if = parse_host_interface(&args[0])?;

    let mut guest_ifname: Option<String> = None;
    let mut host_ifname: Option<String> = None;
    let mut rest = &args[1..];
    // pipework only takes -i, -l, -a in that order; any order is accepted here since no guest
    // name can start with '-', so nothing that worked in pipework changes meaning.
    while let Some(option) = rest.first().filter(|a| a.starts_with('-')) {
        let (slot, what) = match option.as_str() {
            "-i" => (&mut guest_ifname, "guest interface name"),
            "-l" => (&mut host_ifname, "host-side interface name"),
            "-a" => return Err(unsupported("-a FAMILY")),
            _ => {
                return Err(usage(format!(
                "unknown option {option:?}; options before GUEST are -i GUESTIF and -l HOSTSIDEIF"
            )))
            }
        };
        let value = rest.get(1).ok_or_else(|| usage(format!("{option} needs a {what}")))?;
        if slot.is_some() {
            return Err(usage(format!("{option} given twice")));
        }
        spec::validate_ifname(value, what)?;
        *slot = Some(value.clone());
        rest = &rest[2..];
    }

    let (guest, address_token, mac_token) = match rest {
        [] => {
            return Err(usage(format!(
                "missing GUEST after {host_if}; usage: {}",
                PipeworkForm::StaticAddress.usage()
            )))
        }
        [guest] => {
            return Err(usage(format!("missing IP/PREFIX[@GATEWAY] or dhcp after guest {guest:?}")))
        }
        [guest, address] => (guest, address, None),
        [guest, address, mac] => (guest, address, Some(mac)),
        [_, _, _, extra @ ..] => {
            return Err(usage(format!(
                "unexpected arguments after the MAC address: {:?}",
                extra.join(" ")
            )))
        }
    };
    if guest.is_empty() {
        return Err(usage("empty GUEST; give a container name or id, or a network namespace"));
    }

    let mut notices = Vec::new();
    let addressing = parse_addressing(address_token, &mut notices)?;
    let mac = mac_token.map(|token| parse_mac(token)).transpose()?;
    Ok(PipeworkCommand::Attach(PipeworkAttach {
        host_if,
        guest_ifname,
        host_ifname,
        guest: guest.clone(),
        addressing,
        mac,
        notices,
    }))
}

fn parse_host_interface(token: &str) -> Result<HostInterface> {
    if let Some(mac) = token.strip_prefix("mac:") {
        let mac = mac
            .parse()
            .map_err(|e: Error| e.context(format!("pipework: host interface {token}")))?;
        return Ok(HostInterface::ByMac(mac));
    }
    check_host_if_kind(token)?;
    spec::validate_ifname(token, "host interface name")?;
    Ok(HostInterface::Name(token.to_string()))
}

/// pipework decided by name what a missing host interface should become; these are the kinds
/// lanyard will not drive. IPoIB is recognised by the kernel's default ib<N> naming here; a
/// renamed InfiniBand link has to be caught at attach time by its link type.
fn check_host_if_kind(host_if: &str) -> Result<()> {
    if host_if.starts_with("ovs") {
        return Err(unsupported_with("Open vSwitch bridges", host_if));
    }
    if host_if.starts_with("dummy") {
        return Err(unsupported_with("dummy interfaces", host_if));
    }
    let base = host_if.split('.').next().unwrap_or(host_if);
    if let Some(number) = base.strip_prefix("ib") {
        if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unsupported_with("IPoIB", host_if));
        }
    }
    Ok(())
}

fn parse_addressing(token: &str, notices: &mut Vec<String>) -> Result<PipeworkAddressing> {
    // IPv6 addresses contain ':' too, so only a known client name before the first ':' makes
    // this a DHCP token.
    let (method, client_args) = token.split_once(':').unwrap_or((token, ""));
    if DHCP_CLIENTS.contains(&method) {
        if !client_args.is_empty() {
            notices.push(format!(
                "ignoring DHCP client arguments {client_args:?}: lanyard runs its own DHCP client"
            ));
        }
        return Ok(PipeworkAddressing::Dhcp { client: method.to_string() });
    }
    if let Some((word, _)) = method.split_once('@') {
        if DHCP_CLIENTS.contains(&word) {
            return Err(unsupported_with("@VLAN suffix", token));
        }
    }
    if let Some(word) = method.strip_suffix("-f") {
        if DHCP_CLIENTS.contains(&word) {
            return Err(usage(format!(
                "pipework has no DHCP method {method:?}; use one of {}",
                DHCP_CLIENTS.join(", ")
            )));
        }
    }

    if token.rsplit_once('@').is_some_and(|(_, tail)| is_vlan_id(tail)) {
        return Err(unsupported_with("@VLAN suffix", token));
    }
    let address_part = token.split(['/', '@']).next().unwrap_or(token);
    // pipework's documented way to ask for an interface without an address.
    if address_part == "0" || address_part.parse::<IpAddr>().is_ok_and(|a| a.is_unspecified()) {
        return Ok(PipeworkAddressing::LinkOnly);
    }

    // A gateway off the subnet is pipework's on-link case: attach adds the host route first.
    Ok(PipeworkAddressing::Static(spec::parse_address(token)?))
}

fn parse_mac(token: &str) -> Result<MacAddr> {
    if token.starts_with("U:") {
        return Err(unsupported_with("U:NAME MAC", token));
    }
    if token.contains('@') {
        return Err(unsupported_with("@VLAN suffix", token));
    }
    MacAddr::from_str(token)
}

fn parse_route(args: &[String]) -> Result<PipeworkCommand> {
    let Some((guest, words)) = args.split_first() else {
        return Err(usage(format!(
            "missing GUEST after route; usage: {}",
            PipeworkForm::Route.usage()
        )));
    };
    let Some((command, words)) = words.split_first() else {
        return Err(usage(format!(
            "route {guest} needs a command; usage: {}",
            PipeworkForm::Route.usage()
        )));
    };
    let action = match command.as_str() {
        "add" => RouteAction::Add,
        "del" | "delete" => RouteAction::Del,
        "replace" => RouteAction::Replace,
        other => {
            return Err(unsupported_with(
                "route commands other than add, del and replace",
                &format!("route {guest} {other}"),
            ))
        }
    };
    let Some((destination_text, mut words)) = words.split_first() else {
        return Err(usage(format!("route {guest} {action} needs a PREFIX or default")));
    };
    if ROUTE_PREFIX_WORDS.contains(&destination_text.as_str()) {
        return Err(unsupported_with(
            "route options other than via, dev and metric",
            destination_text,
        ));
    }

    let mut via: Option<IpAddr> = None;
    let mut dev: Option<String> = None;
    let mut metric: Option<u32> = None;
    while let Some((keyword, after)) = words.split_first() {
        let value =
            after.first().ok_or_else(|| usage(format!("route {guest}: {keyword} needs a value")));
        let is_duplicate = match keyword.as_str() {
            "via" => via.replace(parse_route_gateway(value?)?).is_some(),
            "dev" => {
                let name = value?;
                spec::validate_ifname(name, "route device name")?;
                dev.replace(name.clone()).is_some()
            }
            // iproute2 takes all three spellings for the same attribute.
            "metric" | "preference" | "priority" => {
                let number = value?;
                let parsed = number.parse::<u32>().map_err(|_| {
                    usage(format!(
                        "route {guest}: {keyword} {number:?} is not a number from 0 to {}",
                        u32::MAX
                    ))
                })?;
                metric.replace(parsed).is_some()
            }
            other => {
                return Err(unsupported_with("route options other than via, dev and metric", other))
            }
        };
        if is_duplicate {
            return Err(usage(format!("route {guest}: {keyword} given twice")));
        }
        words = after.get(1..).unwrap_or_default();
    }

    let destination = parse_route_destination(destination_text, via)?;
    let subject = format!("route {guest} {action} {destination}");
    if let Some(gateway) = via {
        if is_v4(gateway) != is_v4(destination.addr()) {
            return Err(usage(format!(
                "{subject}: via {gateway} is not in the destination's address family"
            )));
        }
        if spec::is_ipv6_link_local(gateway) && dev.is_none() {
            return Err(usage(format!(
                "{subject}: link-local gateway {gateway} needs dev IF to say which link"
            )));
        }
    }
    if action != RouteAction::Del && via.is_none() && dev.is_none() {
        return Err(usage(format!("{subject}: give via GATEWAY or dev IF")));
    }
    Ok(PipeworkCommand::Route { guest: guest.clone(), action, destination, via, dev, metric })
}

/// `default`, `NETWORK/PREFIX` or a bare address, which ip route reads as a host route.
/// `default` follows the gateway's family and is IPv4 without one, as in `ip route`. A prefix
/// with host bits set is refused as `ip route` (and so pipework) refuses it, rather than
/// quietly widened to its network.
fn parse_route_destination(text: &str, via: Option<IpAddr>) -> Result<IpNet> {
    if text == "default" {
        return Ok(match via {
            Some(gateway) => spec::default_route_for(gateway),
            None => IpNet::V4(ipnet::Ipv4Net::default()),
        });
    }
    if let Ok(net) = text.parse::<IpNet>() {
        if net != net.trunc() {
            return Err(usage(format!(
                "bad route destination {text:?}: Invalid prefix for given prefix length \
                 (host bits are set; the network is {})",
                net.trunc()
            )));
        }
        return Ok(net);
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    Err(usage(format!(
        "bad route destination {text:?}: expected PREFIX such as 198.19.0.0/16, an address, or default"
    )))
}

fn parse_route_gateway(text: &str) -> Result<IpAddr> {
    let gateway: IpAddr = text
        .parse()
        .map_err(|_| usage(format!("bad route gateway {text:?}: not an IP address")))?;
    if gateway.is_unspecified() || gateway.is_multicast() || gateway.is_loopback() {
        return Err(usage(format!(
            "bad route gateway {text:?}: not a unicast address of a neighbour"
        )));
    }
    Ok(gateway)
}

fn is_v4(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V4(_))
}

fn is_vlan_id(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn usage(message: impl std::fmt::Display) -> Error {
    Error::usage(format!("pipework: {message}"))
}

/// Looks the note up in UNSUPPORTED_FEATURES so the error and the README never disagree.
fn unsupported(feature: &str) -> Error {
    let note =
        UNSUPPORTED_FEATURES.iter().find(|(name, _)| *name == feature).map_or("", |(_, note)| note);
    Error::unsupported(format!("pipework {feature}: {note}"))
}

fn unsupported_with(feature: &str, input: &str) -> Error {
    let note =
        UNSUPPORTED_FEATURES.iter().find(|(name, _)| *name == feature).map_or("", |(_, note)| note);
    Error::unsupported(format!("pipework {feature} ({input:?}): {note}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn parse(line: &str) -> Result<PipeworkCommand> {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        parse_pipework(&args)
    }

    fn unsupported_message(line: &str) -> String {
        let err = parse(line).expect_err(line);
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{line}: {err}");
        assert_eq!(err.exit_code(), 2);
        let message = err.to_string();
        assert!(message.starts_with("unsupported by lanyard: "), "{message}");
        message
    }

    fn usage_message(line: &str) -> String {
        let err = parse(line).expect_err(line);
        assert_eq!(err.kind(), ErrorKind::Usage, "{line}: {err}");
        assert_eq!(err.exit_code(), 2);
        err.to_string()
    }

    fn named(name: &str) -> HostInterface {
        HostInterface::Name(name.to_string())
    }

    fn attach(line: &str) -> PipeworkAttach {
        match parse(line).unwrap_or_else(|e| panic!("{line}: {e}")) {
            PipeworkCommand::Attach(attach) => attach,
            other => panic!("{line}: expected Attach, got {other:?}"),
        }
    }

    #[test]
    fn zero_slash_zero_is_link_only() {
        for token in ["0/0", "0.0.0.0/0", "::/0"] {
            let args: Vec<String> = ["eth0", "web", token].iter().map(|s| s.to_string()).collect();
            match parse_pipework(&args).unwrap() {
                PipeworkCommand::Attach(attach) => {
                    assert_eq!(attach.addressing, PipeworkAddressing::LinkOnly, "{token}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    fn static_address(addressing: &PipeworkAddressing) -> &AddressSpec {
        match addressing {
            PipeworkAddressing::Static(spec) => spec,
            other => panic!("expected a static address, got {other:?}"),
        }
    }

    #[test]
    fn static_address_minimal() {
        let attached = attach("br1 web 198.18.0.50/24");
        assert_eq!(attached.host_if, named("br1"));
        assert_eq!(attached.guest_ifname, None);
        assert_eq!(attached.host_ifname, None);
        assert_eq!(attached.guest, "web");
        let address = static_address(&attached.addressing);
        assert_eq!(address.address.to_string(), "198.18.0.50/24");
        assert_eq!(address.gateway, None);
        assert_eq!(attached.mac, None);
        assert!(attached.notices.is_empty());
    }

    #[test]
    fn static_address_with_everything() {
        let attached =
            attach("eth0 -i eth2 -l vethweb web 198.18.0.50/24@198.18.0.1 02:42:c6:12:00:32");
        assert_eq!(attached.host_if, named("eth0"));
        assert_eq!(attached.guest_ifname.as_deref(), Some("eth2"));
        assert_eq!(attached.host_ifname.as_deref(), Some("vethweb"));
        assert_eq!(attached.guest, "web");
        assert_eq!(
            static_address(&attached.addressing).gateway,
            Some("198.18.0.1".parse().unwrap())
        );
        assert_eq!(attached.mac.map(|m| m.to_string()).as_deref(), Some("02:42:c6:12:00:32"));

        // -l before -i is accepted too.
        let attached = attach("br1 -l vethweb -i eth2 web 198.18.0.50/24");
        assert_eq!(attached.guest_ifname.as_deref(), Some("eth2"));
        assert_eq!(attached.host_ifname.as_deref(), Some("vethweb"));
    }

    #[test]
    fn static_ipv6_and_link_local_gateway() {
        let attached = attach("br1 web 2001:db8::50/64@fe80::1");
        assert_eq!(static_address(&attached.addressing).gateway, Some("fe80::1".parse().unwrap()));
        let attached = attach("br1 web 2001:db8::50/64@2001:db8::1");
        assert_eq!(static_address(&attached.addressing).address.to_string(), "2001:db8::50/64");
    }

    #[test]
    fn a_gateway_off_the_subnet_is_accepted_as_pipework_does() {
        // pipework added an on-link host route to such a gateway; attach does the same.
        let attached = attach("eth0 web 198.18.0.50/24@198.19.0.1");
        assert_eq!(
            static_address(&attached.addressing).gateway,
            Some("198.19.0.1".parse().unwrap())
        );
    }

    #[test]
    fn every_dhcp_method() {
        for client in DHCP_CLIENTS {
            let expected = PipeworkAddressing::Dhcp { client: client.to_string() };
            let attached = attach(&format!("eth0 web {client} 02:42:c6:12:00:32"));
            assert_eq!(attached.addressing, expected);
            assert!(attached.mac.is_some());
            assert!(attached.notices.is_empty());

            let attached = attach(&format!("eth0 -i eth3 web {client}:-x:hostname:web"));
            assert_eq!(attached.addressing, expected);
            assert_eq!(attached.mac, None);
            assert_eq!(attached.notices.len(), 1);
            assert!(attached.notices[0].contains("\"-x:hostname:web\""), "{}", attached.notices[0]);
        }
        assert!(attach("eth0 web udhcpc:").notices.is_empty());
    }

    #[test]
    fn wait_forms() {
        assert_eq!(parse("--wait").unwrap(), PipeworkCommand::Wait { guest_ifname: "eth1".into() });
        assert_eq!(
            parse("--wait -i eth2").unwrap(),
            PipeworkCommand::Wait { guest_ifname: "eth2".into() }
        );
        assert!(usage_message("--wait -i").contains("-i needs"));
        assert!(usage_message("--wait eth2").contains("unexpected arguments"));
        assert!(usage_message("--wait -i bad/name").contains("bad guest interface name"));
    }

    #[test]
    fn route_forms() {
        assert_eq!(
            parse("route web add 198.19.0.0/16 via 198.18.0.254").unwrap(),
            PipeworkCommand::Route {
                guest: "web".into(),
                action: RouteAction::Add,
                destination: "198.19.0.0/16".parse().unwrap(),
                via: Some("198.18.0.254".parse().unwrap()),
                dev: None,
                metric: None,
            }
        );
        assert_eq!(
            parse("route web replace default via 2001:db8::1 dev eth1 metric 100").unwrap(),
            PipeworkCommand::Route {
                guest: "web".into(),
                action: RouteAction::Replace,
                destination: "::/0".parse().unwrap(),
                via: Some("2001:db8::1".parse().unwrap()),
                dev: Some("eth1".into()),
                metric: Some(100),
            }
        );
        match parse("route web del default").unwrap() {
            PipeworkCommand::Route { action, destination, via, .. } => {
                assert_eq!(action, RouteAction::Del);
                assert_eq!(destination.to_string(), "0.0.0.0/0");
                assert_eq!(via, None);
            }
            other => panic!("{other:?}"),
        }
        match parse("route web delete 198.19.0.7 dev eth1 priority 5").unwrap() {
            PipeworkCommand::Route { action, destination, dev, metric, .. } => {
                assert_eq!(action, RouteAction::Del);
                assert_eq!(destination.to_string(), "198.19.0.7/32");
                assert_eq!(dev.as_deref(), Some("eth1"));
                assert_eq!(metric, Some(5));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse("route web add fd00::/8 via fe80::1 dev eth1").is_ok());
    }

    #[test]
    fn route_usage_errors() {
        let cases = [
            ("route", "missing GUEST"),
            ("route web", "needs a command"),
            ("route web add", "needs a PREFIX"),
            ("route web add 198.19.0.0/16", "give via GATEWAY or dev IF"),
            ("route web add 198.19.0.0/16 via", "via needs a value"),
            ("route web add 198.19.0.0/16 via x", "not an IP address"),
            ("route web add 198.19.0.0/16 via 224.0.0.1", "not a unicast address"),
            (
                "route web add 198.19.0.0/16 via 2001:db8::1",
                "not in the destination's address family",
            ),
            ("route web add fd00::/8 via fe80::1", "needs dev IF"),
            ("route web add 198.19.0.0/16 dev eth1 dev eth2", "dev given twice"),
            ("route web add 198.19.0.0/16 dev eth1 metric -1", "not a number"),
            ("route web add 198.19.0.0/16 dev a/b", "bad route device name"),
            ("route web add 198.19.0.300/16 dev eth1", "bad route destination"),
            // Host bits set: ip route (and so pipework) refuses these; nothing is widened.
            (
                "route web add 198.19.5.6/24 via 198.18.0.1",
                "Invalid prefix for given prefix length",
            ),
            ("route web add 198.19.1.0/16 dev eth1", "the network is 198.19.0.0/16"),
            ("route web del 2001:db8:5::1/48 dev eth1", "Invalid prefix for given prefix length"),
        ];
        for (line, expected) in cases {
            let message = usage_message(line);
            assert!(message.starts_with("pipework: ") || message.starts_with("bad "), "{message}");
            assert!(message.contains(expected), "{line}: {message}");
        }
    }

    #[test]
    fn attach_usage_errors() {
        let cases = [
            ("", "missing arguments"),
            ("-x", "unknown option \"-x\""),
            ("br1", "missing GUEST"),
            ("br1 web", "missing IP/PREFIX"),
            ("br1 -i", "-i needs a guest interface name"),
            ("br1 -i eth2 -i eth3 web dhcp", "-i given twice"),
            ("br1 -z x web dhcp", "unknown option \"-z\""),
            ("br1 web 198.18.0.50/24 02:42:c6:12:00:32 extra", "unexpected arguments"),
            ("br1 web 198.18.0.50", "add one, e.g. 198.18.0.50/24"),
            ("br1 web 198.18.0.50/24 01:00:5e:00:00:01", "multicast"),
            ("br1 web 198.18.0.50/24 nonsense", "bad MAC address"),
            ("br1 web dhcpcd-f", "pipework has no DHCP method \"dhcpcd-f\""),
            ("br1 web dhcp-f", "pipework has no DHCP method"),
            ("averyveryverylongname web dhcp", "bad host interface name"),
            ("br1 -i eth:1 web dhcp", "bad guest interface name"),
            ("br1 -l a/b web dhcp", "bad host-side interface name"),
            ("br1 web 198.18.0.50/24@2001:db8::1", "IPv6 but the address is IPv4"),
        ];
        for (line, expected) in cases {
            let message = usage_message(line);
            assert!(message.contains(expected), "{line:?}: {message}");
        }
    }

    #[test]
    fn every_unsupported_feature_is_refused() {
        let cases = [
            ("br1 web 198.18.0.50/24 02:42:c6:12:00:32@10", "@VLAN suffix"),
            ("eth0 web dhcp @10", "@VLAN suffix"),
            ("eth0 web 198.18.0.50/24@10", "@VLAN suffix"),
            ("eth0 web 198.18.0.50/24@198.18.0.1@10", "@VLAN suffix"),
            ("eth0 web dhcp@10", "@VLAN suffix"),
            ("ovsbr0 web 198.18.0.50/24", "Open vSwitch bridges"),
            ("ib0 web 198.18.0.50/24", "IPoIB"),
            ("ib1.8001 web dhcp", "IPoIB"),
            ("dummy0 web 198.18.0.50/24", "dummy interfaces"),
            ("--direct-phys eth2 web 198.18.0.50/24", "--direct-phys"),
            ("eth0 -a 6 web 2001:db8::5/64", "-a FAMILY"),
            ("eth0 web dhcp U:web", "U:NAME MAC"),
            ("route web show", "route commands other than add, del and replace"),
            ("route web flush all", "route commands other than add, del and replace"),
            (
                "route web add 198.19.0.0/16 via 198.18.0.1 table 5",
                "route options other than via, dev and metric",
            ),
            (
                "route web add blackhole 198.19.0.0/16",
                "route options other than via, dev and metric",
            ),
            (
                "route web add to 198.19.0.0/16 dev eth1",
                "route options other than via, dev and metric",
            ),
            ("rule web add from 198.18.0.5 table 5", "rule"),
            ("tc web qdisc add dev eth1 root netem delay 10ms", "tc"),
            ("--save /tmp/x br1 web 198.18.0.5/24", "--save and --restore"),
            ("--restore /tmp/x", "--save and --restore"),
        ];
        for (line, feature) in cases {
            let message = unsupported_message(line);
            assert!(
                message.starts_with(&format!("unsupported by lanyard: pipework {feature}")),
                "{line}: {message}"
            );
        }
        // Every listed feature is exercised above, so the README table cannot drift.
        for (feature, note) in UNSUPPORTED_FEATURES {
            assert!(!note.is_empty());
            assert!(cases.iter().any(|(_, f)| f == feature), "untested: {feature}");
        }
    }

    #[test]
    fn each_usage_message_quotes_its_own_form() {
        let route = PipeworkForm::Route.usage();
        for line in ["route", "route web"] {
            let message = usage_message(line);
            assert!(message.ends_with(&format!("usage: {route}")), "{line}: {message}");
        }
        let message = usage_message("br1");
        assert!(message.ends_with(PipeworkForm::StaticAddress.usage()), "{message}");
        let message = usage_message("--wait eth2");
        assert!(message.ends_with(PipeworkForm::Wait.usage()), "{message}");
        // Every form in the README's list, once, in the enum's order.
        assert_eq!(SUPPORTED_FORMS.len(), PipeworkForm::ALL.len());
        for (form, text) in PipeworkForm::ALL.iter().zip(SUPPORTED_FORMS) {
            assert_eq!(form.usage(), text);
        }
        assert!(SUPPORTED_FORMS[4].starts_with("route "), "{:?}", SUPPORTED_FORMS);
    }

    #[test]
    fn host_interface_by_mac() {
        let attached = attach("mac:02:00:C6:12:15:01 -i eth2 web 198.18.0.50/24");
        assert_eq!(
            attached.host_if,
            HostInterface::ByMac(MacAddr([0x02, 0, 0xc6, 0x12, 0x15, 0x01]))
        );
        assert_eq!(attached.host_if.to_string(), "mac:02:00:c6:12:15:01");
        assert_eq!(attached.guest_ifname.as_deref(), Some("eth2"));
        assert_eq!(
            attach("mac:00-1b-21-3a-4f-10 web dhcp").host_if.to_string(),
            "mac:00:1b:21:3a:4f:10"
        );
        for (line, expected) in [
            ("mac:02:00:c6:12:15 web dhcp", "bad MAC address"),
            ("mac: web dhcp", "bad MAC address"),
            ("mac:01:00:5e:00:00:01 web dhcp", "multicast"),
        ] {
            let message = usage_message(line);
            assert!(message.starts_with("pipework: host interface mac:"), "{line}: {message}");
            assert!(message.contains(expected), "{line}: {message}");
        }
    }

    #[test]
    fn host_interface_names_near_refused_kinds_are_fine() {
        for host_if in ["ib", "ibx0", "eth0.10", "bond0", "enp3s0"] {
            attach(&format!("{host_if} web dhcp"));
        }
    }
}
