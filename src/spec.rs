//! What the user asked for, validated before anything touches the kernel. Everything here is
//! pure: a bad request fails with a one-line Usage error naming the offending input, so a
//! half-configured guest is never the way a typo gets reported.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Linux refuses interface names of IFNAMSIZ (16) bytes or more, counting the NUL.
pub const IFNAME_MAX_BYTES: usize = 15;

/// The smallest MTU IPv4 must carry (RFC 791) and the largest a Linux link takes.
pub const MTU_MIN: u32 = 68;
pub const MTU_MAX: u32 = 65535;
/// IPv6 links must carry at least this much (RFC 8200); the kernel drops IPv6 below it.
pub const MTU_MIN_IPV6: u32 = 1280;

/// An Ethernet address that may be put on a guest interface: unicast and neither all-zero nor
/// broadcast, because the kernel either refuses those or the LAN silently drops the traffic.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Set when the address was not assigned by a vendor (IEEE "U/L" bit), which is what every
    /// MAC lanyard makes up must be, so it cannot collide with a real NIC's burned-in address.
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// Multicast addresses can never be a source address on Ethernet.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let malformed = || {
            Error::usage(format!(
                "bad MAC address {text:?}: expected six two-digit hex octets separated by ':' or '-', e.g. 02:42:c6:12:00:32"
            ))
        };
        let separator = if text.contains(':') { ':' } else { '-' };
        let mut octets = [0u8; 6];
        let mut parts = text.split(separator);
        for octet in octets.iter_mut() {
            let part = parts.next().ok_or_else(malformed)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(malformed());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| malformed())?;
        }
        if parts.next().is_some() {
            return Err(malformed());
        }
        let mac = MacAddr(octets);
        if octets == [0xff; 6] {
            return Err(Error::usage(format!(
                "bad MAC address {text:?}: the broadcast address cannot be an interface address"
            )));
        }
        if mac.is_multicast() {
            return Err(Error::usage(format!(
                "bad MAC address {text:?}: multicast (lowest bit of the first octet is set); \
                 use an even first octet, e.g. {:02x}{}",
                octets[0] & !0x01,
                &mac.to_string()[2..]
            )));
        }
        if octets == [0; 6] {
            return Err(Error::usage(format!(
                "bad MAC address {text:?}: the all-zero address cannot be an interface address"
            )));
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|e: Error| serde::de::Error::custom(e.message()))
    }
}

/// One address for the guest interface. `address` keeps its host bits (198.18.0.50/24), since
/// that is what gets configured; `gateway` becomes that family's default route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressSpec {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

impl fmt::Display for AddressSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gateway {
            Some(gateway) => write!(f, "{}@{gateway}", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

/// An extra route in the guest, written `CIDR@GW` on the command line. The destination is
/// stored as its network (198.19.0.0/16) because that is the only form the kernel accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteSpec {
    pub destination: IpNet,
    pub gateway: IpAddr,
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.destination, self.gateway)
    }
}

impl FromStr for RouteSpec {
    type Err = Error;

    /// `CIDR@GW`, or `default@GW` for the default route of the gateway's family.
    fn from_str(token: &str) -> Result<Self> {
        let bad = |why: &str| Error::usage(format!("bad route {token:?}: {why}"));
        let (destination_text, gateway_text) = token.split_once('@').ok_or_else(|| {
            bad("expected DESTINATION/PREFIX@GATEWAY, e.g. 198.19.0.0/16@198.18.0.254")
        })?;
        if gateway_text.contains('@') {
            return Err(bad("more than one '@'"));
        }
        let gateway: IpAddr = gateway_text
            .parse()
            .map_err(|_| bad(&format!("gateway {gateway_text:?} is not an IP address")))?;
        check_gateway_kind(gateway).map_err(|why| bad(&why))?;
        let destination = if destination_text == "default" {
            default_route_for(gateway)
        } else {
            parse_cidr(destination_text).map_err(|why| bad(&why))?.trunc()
        };
        if family(destination.addr()) != family(gateway) {
            return Err(bad(&format!(
                "destination is {} but gateway {gateway} is {}",
                family(destination.addr()),
                family(gateway)
            )));
        }
        Ok(RouteSpec { destination, gateway })
    }
}

/// Parse `--route CIDR@GW`; the same as `str::parse`, named for symmetry with `parse_address`.
pub fn parse_route(token: &str) -> Result<RouteSpec> {
    token.parse()
}

/// The default route (0.0.0.0/0 or ::/0) in the family of `gateway`.
pub fn default_route_for(gateway: IpAddr) -> IpNet {
    match gateway {
        IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
        IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
    }
}

/// Parse `CIDR[@GATEWAY]` for one guest address, refusing what the kernel would accept but the
/// LAN would not work with (a subnet's broadcast address, a gateway in the other family).
pub fn parse_address(token: &str) -> Result<AddressSpec> {
    let bad = |why: &str| Error::usage(format!("bad address {token:?}: {why}"));
    let (cidr_text, gateway_text) = match token.split_once('@') {
        Some((cidr, gateway)) => (cidr, Some(gateway)),
        None => (token, None),
    };
    let address = parse_cidr(cidr_text).map_err(|why| bad(&why))?;
    check_host_address(&address).map_err(|why| bad(&why))?;

    let gateway = match gateway_text {
        None => None,
        Some(text) if text.contains('@') => return Err(bad("more than one '@'")),
        Some(text) => {
            let gateway: IpAddr =
                text.parse().map_err(|_| bad(&format!("gateway {text:?} is not an IP address")))?;
            check_gateway_kind(gateway).map_err(|why| bad(&why))?;
            if family(gateway) != family(address.addr()) {
                return Err(bad(&format!(
                    "gateway {gateway} is {} but the address is {}",
                    family(gateway),
                    family(address.addr())
                )));
            }
            if gateway == address.addr() {
                return Err(bad("the gateway is the address itself"));
            }
            if let (IpNet::V4(net), IpAddr::V4(gateway_v4)) = (address, gateway) {
                if net.prefix_len() < 31
                    && (gateway_v4 == net.network() || gateway_v4 == net.broadcast())
                {
                    return Err(bad(&format!(
                        "gateway {gateway} is the network or broadcast address of {}",
                        net.trunc()
                    )));
                }
            }
            Some(gateway)
        }
    };
    Ok(AddressSpec { address, gateway })
}

/// Parse every `--address` token at once, because the checks that matter span them: no address
/// twice, one default gateway per family, and each gateway reachable on one of the subnets.
/// A lone `none` asks for the link only.
pub fn parse_addresses(tokens: &[String]) -> Result<Vec<AddressSpec>> {
    if tokens.iter().any(|t| t == "none") {
        if tokens.len() == 1 {
            return Ok(Vec::new());
        }
        return Err(Error::usage(
            "address \"none\" (link only) cannot be combined with other addresses; give either none or addresses",
        ));
    }
    let specs = tokens.iter().map(|t| parse_address(t)).collect::<Result<Vec<_>>>()?;

    for (index, spec) in specs.iter().enumerate() {
        if let Some(earlier) =
            specs[..index].iter().find(|s| s.address.addr() == spec.address.addr())
        {
            return Err(Error::usage(format!(
                "address {} given twice ({} and {})",
                spec.address.addr(),
                earlier.address,
                spec.address
            )));
        }
    }

    for (index, spec) in specs.iter().enumerate() {
        let Some(gateway) = spec.gateway else {
            continue;
        };
        if let Some(earlier) =
            specs[..index].iter().find(|s| s.gateway.is_some_and(|g| family(g) == family(gateway)))
        {
            return Err(Error::usage(format!(
                "two {} default gateways ({earlier} and {spec}); give @GATEWAY on one address only",
                family(gateway)
            )));
        }
        if let Some(owner) = specs.iter().find(|s| s.address.addr() == gateway) {
            return Err(Error::usage(format!(
                "address {spec}: the gateway is the guest's own address {}",
                owner.address
            )));
        }
        // A gateway outside every given subnet is allowed, as pipework and dhclient allow it
        // (hosting networks hand out /32 addresses with such a router): attach reaches it
        // through an on-link host route (see `routes::needs_onlink_route`).
    }
    Ok(specs)
}

/// Every route needs a next hop the guest can reach directly: on one of its own subnets, or an
/// IPv6 link-local router. Also refuses routes the kernel would reject as duplicates.
pub fn validate_routes(routes: &[RouteSpec], addresses: &[AddressSpec]) -> Result<()> {
    for (index, route) in routes.iter().enumerate() {
        let subject = format!("route {} via {}", route.destination, route.gateway);
        if family(route.destination.addr()) != family(route.gateway) {
            return Err(Error::usage(format!(
                "{subject}: destination is {} but the gateway is {}",
                family(route.destination.addr()),
                family(route.gateway)
            )));
        }
        if routes[..index].iter().any(|r| r.destination == route.destination) {
            return Err(Error::usage(format!(
                "{subject}: destination {} given twice",
                route.destination
            )));
        }
        if route.destination.prefix_len() == 0 {
            if let Some(owner) = addresses
                .iter()
                .find(|a| a.gateway.is_some_and(|g| family(g) == family(route.gateway)))
            {
                return Err(Error::usage(format!(
                    "{subject}: conflicts with the default gateway of address {owner}; give only one of them"
                )));
            }
        }
        if let Some(owner) = addresses.iter().find(|a| a.address.addr() == route.gateway) {
            return Err(Error::usage(format!(
                "{subject}: the gateway is the guest's own address {}",
                owner.address
            )));
        }
        let default_gateway = addresses.iter().any(|a| a.gateway == Some(route.gateway));
        if !default_gateway && !is_reachable(route.gateway, addresses) {
            return Err(Error::usage(format!(
                "{subject}: gateway is neither inside an address given ({}) nor the default gateway @GATEWAY",
                same_family_list(route.gateway, addresses)
            )));
        }
    }
    Ok(())
}

/// Check an interface name against what the kernel accepts (`dev_valid_name`), plus printable
/// ASCII so that names survive logs, shells and the state file unchanged.
pub fn validate_ifname(name: &str, what: &str) -> Result<()> {
    let bad = |why: &str| Error::usage(format!("bad {what} {name:?}: {why}"));
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > IFNAME_MAX_BYTES {
        return Err(bad(&format!(
            "{} bytes long; Linux allows at most {IFNAME_MAX_BYTES}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(bad("\".\" and \"..\" are not allowed"));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(bad(&format!("contains {c:?}; use printable ASCII without whitespace")));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':') {
        return Err(bad(&format!("contains {c:?}, which Linux does not allow")));
    }
    Ok(())
}

/// The MTU range any link takes; IPv6 needs more, and the kernel would silently disable IPv6
/// on the interface below that, so it is refused here instead.
pub fn validate_mtu(mtu: u32, has_ipv6: bool) -> Result<()> {
    if !(MTU_MIN..=MTU_MAX).contains(&mtu) {
        return Err(Error::usage(format!("bad MTU {mtu}: must be from {MTU_MIN} to {MTU_MAX}")));
    }
    if has_ipv6 && mtu < MTU_MIN_IPV6 {
        return Err(Error::usage(format!(
            "bad MTU {mtu}: IPv6 needs at least {MTU_MIN_IPV6}; raise the MTU or drop the IPv6 addresses"
        )));
    }
    Ok(())
}

/// How the guest interface's MAC address is chosen when the user gives none.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MacScheme {
    /// Derived from host, guest and interface name: the same guest gets the same MAC (and so the
    /// same DHCP lease) every time it is attached.
    #[default]
    Stable,
    /// network-wrapper's layout (worker IP octets plus 16 random bits), for sites whose DHCP
    /// reservations or switch filters were built around it.
    NetworkWrapper,
}

impl MacScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            MacScheme::Stable => "stable",
            MacScheme::NetworkWrapper => "network-wrapper",
        }
    }
}

impl fmt::Display for MacScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MacScheme {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        [MacScheme::Stable, MacScheme::NetworkWrapper]
            .into_iter()
            .find(|scheme| scheme.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                Error::usage(format!(
                    "unknown MAC scheme {text:?}: expected stable or network-wrapper"
                ))
            })
    }
}

/// The kernel's macvlan modes; see `ip-link(8)`. Bridge lets guests on the same parent talk to
/// each other, which is what people attaching several containers to one LAN expect.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    #[default]
    Bridge,
    Private,
    Vepa,
    Passthru,
    Source,
}

impl MacvlanMode {
    pub const ALL: [MacvlanMode; 5] = [
        MacvlanMode::Bridge,
        MacvlanMode::Private,
        MacvlanMode::Vepa,
        MacvlanMode::Passthru,
        MacvlanMode::Source,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
            MacvlanMode::Source => "source",
        }
    }
}

impl fmt::Display for MacvlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MacvlanMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        MacvlanMode::ALL
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                Error::usage(format!(
                    "unknown macvlan mode {text:?}: expected bridge, private, vepa, passthru or source"
                ))
            })
    }
}

fn family(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// IPv6 link-local (fe80::/10): reachable on any link, but only with an explicit device.
pub fn is_ipv6_link_local(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// A next hop is usable without an extra on-link route when it sits on one of the guest's
/// subnets; IPv6 link-local routers are reachable on any link by definition.
fn is_reachable(gateway: IpAddr, addresses: &[AddressSpec]) -> bool {
    is_ipv6_link_local(gateway) || addresses.iter().any(|a| a.address.contains(&gateway))
}

fn same_family_list(addr: IpAddr, addresses: &[AddressSpec]) -> String {
    let listed: Vec<String> = addresses
        .iter()
        .filter(|a| family(a.address.addr()) == family(addr))
        .map(|a| a.address.to_string())
        .collect();
    if listed.is_empty() {
        format!("no {} address given", family(addr))
    } else {
        listed.join(", ")
    }
}

/// `ADDR/PREFIX` with messages that say which half is wrong; returns the reason only, so each
/// caller can name its own token.
fn parse_cidr(text: &str) -> std::result::Result<IpNet, String> {
    let Some((addr_text, prefix_text)) = text.split_once('/') else {
        return Err(match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => "no prefix length; add one, e.g. 198.18.0.50/24".to_string(),
            Ok(IpAddr::V6(_)) => "no prefix length; add one, e.g. 2001:db8::50/64".to_string(),
            Err(_) => {
                format!("{text:?} is not an IP address with a prefix length, e.g. 198.18.0.50/24")
            }
        });
    };
    let addr: IpAddr =
        addr_text.parse().map_err(|_| format!("{addr_text:?} is not an IP address"))?;
    let max_prefix = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix = prefix_text
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= max_prefix && prefix_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!("prefix length {prefix_text:?} is not a number from 0 to {max_prefix}")
        })?;
    IpNet::new(addr, prefix).map_err(|e| e.to_string())
}

/// Refuse addresses no LAN host can use as its own.
fn check_host_address(net: &IpNet) -> std::result::Result<(), String> {
    let addr = net.addr();
    if addr.is_unspecified() {
        return Err(
            "the unspecified address cannot be assigned; for a link without addresses use none"
                .into(),
        );
    }
    if addr.is_loopback() {
        return Err("loopback addresses belong on lo, not on a LAN interface".into());
    }
    if addr.is_multicast() {
        return Err("multicast addresses cannot be assigned to an interface".into());
    }
    if let IpNet::V4(v4) = net {
        if v4.addr().is_broadcast() {
            return Err("the limited broadcast address cannot be assigned".into());
        }
        if v4.prefix_len() < 31 {
            if v4.addr() == v4.network() {
                return Err(format!(
                    "{} is the network address of {}; pick a host address inside it",
                    v4.addr(),
                    v4.trunc()
                ));
            }
            if v4.addr() == v4.broadcast() {
                return Err(format!(
                    "{} is the broadcast address of {}; pick a host address inside it",
                    v4.addr(),
                    v4.trunc()
                ));
            }
        }
    }
    Ok(())
}

fn check_gateway_kind(gateway: IpAddr) -> std::result::Result<(), String> {
    let kind = if gateway.is_unspecified() {
        "unspecified"
    } else if gateway.is_loopback() {
        "loopback"
    } else if gateway.is_multicast() {
        "multicast"
    } else if gateway == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        "broadcast"
    } else {
        return Ok(());
    };
    Err(format!("gateway {gateway} is a {kind} address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn strings(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|t| t.to_string()).collect()
    }

    fn usage_message<T: fmt::Debug>(result: Result<T>) -> String {
        let err = result.expect_err("expected a usage error");
        assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
        assert_eq!(err.exit_code(), 2);
        err.to_string()
    }

    #[test]
    fn mac_parses_both_separators_any_case() {
        let colon: MacAddr = "02:AB:cd:00:11:22".parse().unwrap();
        let dash: MacAddr = "02-ab-CD-00-11-22".parse().unwrap();
        assert_eq!(colon, dash);
        assert_eq!(colon.0, [0x02, 0xab, 0xcd, 0x00, 0x11, 0x22]);
        assert_eq!(colon.to_string(), "02:ab:cd:00:11:22");
        assert!(colon.is_locally_administered());
        let vendor: MacAddr = "00:1b:21:3a:4f:10".parse().unwrap();
        assert!(!vendor.is_locally_administered());
    }

    #[test]
    fn mac_rejects_malformed() {
        for text in [
            "",
            "02:ab:cd:00:11",
            "02:ab:cd:00:11:22:33",
            "02:ab:cd:00:11:2",
            "02:ab:cd:00:11:zz",
            "02ab.cd00.1122",
            "02:ab-cd:00:11:22",
            "02:ab:cd:00:11:22:",
            "+2:ab:cd:00:11:22",
            "02:ab:cd:00:11:22 ",
            "0é:ab:cd:00:11:22",
        ] {
            let message = usage_message(text.parse::<MacAddr>());
            assert!(message.starts_with("bad MAC address"), "{message}");
        }
    }

    #[test]
    fn mac_rejects_multicast_zero_broadcast() {
        assert!(usage_message("01:00:5e:00:00:01".parse::<MacAddr>()).contains("multicast"));
        assert!(usage_message("03:00:00:00:00:01".parse::<MacAddr>())
            .contains("e.g. 02:00:00:00:00:01"));
        assert!(usage_message("00:00:00:00:00:00".parse::<MacAddr>()).contains("all-zero"));
        assert!(usage_message("ff:ff:ff:ff:ff:ff".parse::<MacAddr>()).contains("broadcast"));
    }

    #[test]
    fn mac_serde_round_trips_as_string() {
        let mac: MacAddr = "02:42:c6:12:00:32".parse().unwrap();
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"02:42:c6:12:00:32\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
        assert!(serde_json::from_str::<MacAddr>("\"01:00:5e:00:00:01\"").is_err());
    }

    #[test]
    fn address_keeps_host_bits_and_gateway() {
        let spec = parse_address("198.18.0.50/24@198.18.0.1").unwrap();
        assert_eq!(spec.address.to_string(), "198.18.0.50/24");
        assert_eq!(spec.gateway, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(spec.to_string(), "198.18.0.50/24@198.18.0.1");
        let v6 = parse_address("2001:db8::50/64@fe80::1").unwrap();
        assert_eq!(v6.gateway, Some("fe80::1".parse().unwrap()));
        assert!(parse_address("198.18.0.0/31").is_ok());
        assert!(parse_address("198.18.0.1/31").is_ok());
        assert!(parse_address("198.18.0.7/32").is_ok());
    }

    #[test]
    fn address_without_prefix_says_how_to_fix() {
        let message = usage_message(parse_address("198.18.0.50"));
        assert_eq!(
            message,
            "bad address \"198.18.0.50\": no prefix length; add one, e.g. 198.18.0.50/24"
        );
        assert!(usage_message(parse_address("2001:db8::5")).contains("2001:db8::50/64"));
    }

    #[test]
    fn address_rejects_bad_tokens() {
        let cases = [
            ("198.18.0.300/24", "not an IP address"),
            ("198.18.0.5/33", "prefix length \"33\""),
            ("198.18.0.5/+8", "prefix length"),
            ("198.18.0.5/", "prefix length"),
            ("2001:db8::5/129", "0 to 128"),
            ("198.18.0.0/24", "network address of 198.18.0.0/24"),
            ("198.18.0.255/24", "broadcast address of 198.18.0.0/24"),
            ("255.255.255.255/32", "limited broadcast"),
            ("224.0.0.5/24", "multicast"),
            ("ff02::1/64", "multicast"),
            ("0.0.0.0/0", "unspecified"),
            ("::/0", "unspecified"),
            ("127.0.0.2/8", "loopback"),
            ("::1/128", "loopback"),
            ("198.18.0.50/24@2001:db8::1", "gateway 2001:db8::1 is IPv6 but the address is IPv4"),
            ("198.18.0.50/24@198.18.0.50", "the gateway is the address itself"),
            ("198.18.0.50/24@198.18.0.255", "network or broadcast"),
            ("198.18.0.50/24@gw", "gateway \"gw\" is not an IP address"),
            ("198.18.0.50/24@198.18.0.1@10", "more than one '@'"),
            ("198.18.0.50/24@0.0.0.0", "unspecified"),
            ("", "not an IP address"),
            ("@", "not an IP address"),
        ];
        for (token, expected) in cases {
            let message = usage_message(parse_address(token));
            assert!(message.starts_with(&format!("bad address {token:?}: ")), "{message}");
            assert!(message.contains(expected), "{token}: {message}");
        }
    }

    #[test]
    fn addresses_none_and_empty_mean_link_only() {
        assert!(parse_addresses(&[]).unwrap().is_empty());
        assert!(parse_addresses(&strings(&["none"])).unwrap().is_empty());
        let message = usage_message(parse_addresses(&strings(&["none", "198.18.0.5/24"])));
        assert!(message.contains("cannot be combined"), "{message}");
    }

    #[test]
    fn addresses_accept_dual_stack_with_one_gateway_each() {
        let specs = parse_addresses(&strings(&[
            "198.18.0.50/24@198.18.0.1",
            "198.18.1.50/24",
            "2001:db8::50/64@2001:db8::1",
        ]))
        .unwrap();
        assert_eq!(specs.len(), 3);
        // A gateway may sit in another given subnet of the same family.
        assert!(parse_addresses(&strings(&["198.18.0.50/24@198.18.1.1", "198.18.1.50/24"])).is_ok());
        // IPv6 link-local routers need no matching subnet.
        assert!(parse_addresses(&strings(&["2001:db8::50/64@fe80::1"])).is_ok());
    }

    #[test]
    fn addresses_reject_cross_token_problems() {
        let message =
            usage_message(parse_addresses(&strings(&["198.18.0.50/24", "198.18.0.50/16"])));
        assert!(message.contains("address 198.18.0.50 given twice"), "{message}");

        let message = usage_message(parse_addresses(&strings(&[
            "198.18.0.50/24@198.18.0.1",
            "198.18.1.50/24@198.18.1.1",
        ])));
        assert!(message.contains("two IPv4 default gateways"), "{message}");

        // Off-subnet gateways are pipework's and dhclient's on-link case, not an error.
        let off = parse_addresses(&strings(&["198.18.0.50/24@198.18.5.1"])).unwrap();
        assert_eq!(off[0].gateway, Some("198.18.5.1".parse().unwrap()));
        let host_route = parse_addresses(&strings(&["198.18.0.50/32@198.18.0.1"])).unwrap();
        assert_eq!(host_route[0].gateway, Some("198.18.0.1".parse().unwrap()));

        let message = usage_message(parse_addresses(&strings(&[
            "198.18.0.50/24@198.18.0.51",
            "198.18.0.51/24",
        ])));
        assert!(message.contains("guest's own address"), "{message}");

        parse_addresses(&strings(&["2001:db8::5/64@2001:db9::1"])).unwrap();
    }

    #[test]
    fn route_parses_and_normalises() {
        let route: RouteSpec = "198.19.1.2/16@198.18.0.254".parse().unwrap();
        assert_eq!(route.destination.to_string(), "198.19.0.0/16");
        assert_eq!(route.to_string(), "198.19.0.0/16@198.18.0.254");
        let default = parse_route("default@2001:db8::1").unwrap();
        assert_eq!(default.destination.to_string(), "::/0");
        for (token, expected) in [
            ("198.19.0.0/16", "expected DESTINATION/PREFIX@GATEWAY"),
            ("198.19.0.0/16@2001:db8::1", "destination is IPv4 but gateway 2001:db8::1 is IPv6"),
            ("198.19.0.0@198.18.0.1", "no prefix length"),
            ("198.19.0.0/16@x", "not an IP address"),
            ("198.19.0.0/16@224.0.0.1", "multicast"),
            ("198.19.0.0/16@1.2.3.4@5", "more than one '@'"),
        ] {
            let message = usage_message(parse_route(token));
            assert!(message.starts_with(&format!("bad route {token:?}: ")), "{message}");
            assert!(message.contains(expected), "{token}: {message}");
        }
    }

    #[test]
    fn routes_need_a_reachable_gateway() {
        let addresses = parse_addresses(&strings(&["198.18.0.50/24", "2001:db8::50/64"])).unwrap();
        let ok = [
            parse_route("198.19.0.0/16@198.18.0.254").unwrap(),
            parse_route("2001:db9::/48@fe80::1").unwrap(),
            parse_route("2001:dba::/48@2001:db8::1").unwrap(),
        ];
        validate_routes(&ok, &addresses).unwrap();

        let unreachable = [parse_route("198.19.0.0/16@198.20.0.1").unwrap()];
        assert_eq!(
            usage_message(validate_routes(&unreachable, &addresses)),
            "route 198.19.0.0/16 via 198.20.0.1: gateway is neither inside an address given (198.18.0.50/24) nor the default gateway @GATEWAY"
        );
        // The off-subnet default gateway gets an on-link route, so routes may use it too.
        let off_subnet = parse_addresses(&strings(&["198.18.0.50/32@198.20.0.1"])).unwrap();
        validate_routes(&unreachable, &off_subnet).unwrap();
        let no_family = [parse_route("198.19.0.0/16@198.20.0.1").unwrap()];
        let v6_only = parse_addresses(&strings(&["2001:db8::50/64"])).unwrap();
        assert!(
            usage_message(validate_routes(&no_family, &v6_only)).contains("no IPv4 address given")
        );

        let twice = [
            parse_route("198.19.0.0/16@198.18.0.254").unwrap(),
            parse_route("198.19.0.0/16@198.18.0.253").unwrap(),
        ];
        assert!(usage_message(validate_routes(&twice, &addresses)).contains("given twice"));

        let own = [parse_route("198.19.0.0/16@198.18.0.50").unwrap()];
        assert!(usage_message(validate_routes(&own, &addresses)).contains("guest's own address"));

        let with_gateway = parse_addresses(&strings(&["198.18.0.50/24@198.18.0.1"])).unwrap();
        let default = [parse_route("default@198.18.0.2").unwrap()];
        assert!(usage_message(validate_routes(&default, &with_gateway))
            .contains("conflicts with the default gateway"));

        let mixed = [RouteSpec {
            destination: "198.19.0.0/16".parse().unwrap(),
            gateway: "2001:db8::1".parse().unwrap(),
        }];
        assert!(usage_message(validate_routes(&mixed, &addresses)).contains("destination is IPv4"));
    }

    #[test]
    fn ifname_rules() {
        for good in ["eth1", "a", "lanyard0123456", "ly-abc_def.9@x", "123456789012345"] {
            validate_ifname(good, "guest interface name").unwrap();
        }
        let cases = [
            ("", "empty"),
            ("1234567890123456", "16 bytes long"),
            (".", "not allowed"),
            ("..", "not allowed"),
            ("eth 1", "whitespace"),
            ("eth\t1", "whitespace"),
            ("eth/1", "'/'"),
            ("eth:1", "':'"),
            ("ethé", "printable ASCII"),
            ("eth\u{7f}", "printable ASCII"),
        ];
        for (name, expected) in cases {
            let message = usage_message(validate_ifname(name, "guest interface name"));
            assert!(message.starts_with("bad guest interface name "), "{message}");
            assert!(message.contains(expected), "{name:?}: {message}");
        }
        // Multi-byte characters count in bytes, as the kernel counts them.
        assert!(validate_ifname("éééééééé", "x").is_err());
    }

    #[test]
    fn mtu_bounds() {
        validate_mtu(68, false).unwrap();
        validate_mtu(65535, true).unwrap();
        validate_mtu(1280, true).unwrap();
        assert!(usage_message(validate_mtu(67, false)).contains("from 68 to 65535"));
        assert!(usage_message(validate_mtu(65536, false)).contains("from 68 to 65535"));
        assert!(usage_message(validate_mtu(1279, true)).contains("IPv6 needs at least 1280"));
        validate_mtu(1279, false).unwrap();
    }

    #[test]
    fn enums_parse_display_and_serialize() {
        assert_eq!(MacScheme::default(), MacScheme::Stable);
        assert_eq!("network-wrapper".parse::<MacScheme>().unwrap(), MacScheme::NetworkWrapper);
        assert_eq!("Stable".parse::<MacScheme>().unwrap(), MacScheme::Stable);
        assert_eq!(MacScheme::NetworkWrapper.to_string(), "network-wrapper");
        assert_eq!(
            serde_json::to_string(&MacScheme::NetworkWrapper).unwrap(),
            "\"network-wrapper\""
        );
        assert_eq!(serde_json::from_str::<MacScheme>("\"stable\"").unwrap(), MacScheme::Stable);
        assert!(usage_message("random".parse::<MacScheme>())
            .contains("expected stable or network-wrapper"));

        assert_eq!(MacvlanMode::default(), MacvlanMode::Bridge);
        for mode in MacvlanMode::ALL {
            assert_eq!(mode.to_string().parse::<MacvlanMode>().unwrap(), mode);
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{mode}\""));
        }
        assert!(usage_message("passthrough".parse::<MacvlanMode>()).contains("expected bridge"));
    }

    #[test]
    fn specs_serialize_as_strings() {
        let spec = parse_address("198.18.0.50/24@198.18.0.1").unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, r#"{"address":"198.18.0.50/24","gateway":"198.18.0.1"}"#);
        assert_eq!(serde_json::from_str::<AddressSpec>(&json).unwrap(), spec);
        let route = parse_route("198.19.0.0/16@198.18.0.254").unwrap();
        let json = serde_json::to_string(&route).unwrap();
        assert_eq!(serde_json::from_str::<RouteSpec>(&json).unwrap(), route);
    }
}
