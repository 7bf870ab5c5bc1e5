//! The network configuration a CNI runtime hands lanyard on stdin, and the `CNI_ARGS` pairs:
//! decoded (a JSON error is code 6), then checked and turned into what an attach needs (a
//! wrong value is code 7, a field lanyard does not implement code 2).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use super::{CniError, Code};
use crate::spec::{AddressSpec, MacAddr, MacvlanMode, RouteSpec};

/// The spec versions lanyard speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The newest version: what an error says when the input named none lanyard speaks.
pub const LATEST_VERSION: &str = "1.1.0";

/// The longest a DHCP ADD waits for its lease by default (`dhcpTimeout` changes it).
pub(super) const DEFAULT_DHCP_TIMEOUT: Duration = Duration::from_secs(10);

/// The plugin configuration, as the spec and lanyard's own keys name it. Unknown keys are
/// ignored, as the spec asks of plugins (runtimes add their own).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub plugin_type: String,
    /// The bridge (joined by a veth) or the macvlan parent.
    pub host_interface: Option<String>,
    /// `static` (the default) or `dhcp`.
    pub addressing: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The default gateway, given to the address whose subnet holds it.
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub routes: Vec<RouteConf>,
    pub mtu: Option<u32>,
    pub mac: Option<String>,
    pub macvlan_mode: Option<String>,
    /// A missing host interface whose name starts with `br` is created as a bridge only when
    /// this is true: a typo in a cluster-wide conf should fail, not make a lone bridge.
    #[serde(default)]
    pub create_bridge: bool,
    /// Seconds a DHCP ADD waits for its lease.
    pub dhcp_timeout: Option<u64>,
    pub state_dir: Option<PathBuf>,
    /// Passed through to the result when the lease brings no DNS servers.
    pub dns: Option<Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    pub prev_result: Option<Value>,
    /// A chained IPAM section: the IPAM plugin it names gives the addresses.
    pub ipam: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// Set when lanyard runs as the IPAM plugin (`"ipam": {"type": "lanyard"}`) of the main
    /// plugin of this type: see [`super::ipam`].
    #[serde(skip)]
    pub ipam_of: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    /// The `ips` capability.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The `mac` capability.
    pub mac: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RouteConf {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// Decode stdin: malformed JSON is code 6, a well-formed conf with a wrong type code 7, a
/// version lanyard does not speak code 1.
pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(Code::Decode, "cannot decode the network configuration", e.to_string())
    })?;
    let conf: NetConf = serde_json::from_value(value).map_err(|e| {
        CniError::new(Code::InvalidConfig, "invalid network configuration", e.to_string())
    })?;
    check_version(&conf.cni_version)?;
    Ok(conf)
}

pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(());
    }
    Err(CniError::new(
        Code::IncompatibleVersion,
        "incompatible CNI version",
        format!(
            "cniVersion {version:?} is not one lanyard speaks (it speaks {})",
            SUPPORTED_VERSIONS.join(", ")
        ),
    ))
}

/// The `KEY=VALUE;...` pairs of `CNI_ARGS`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pairs: BTreeMap<String, String>,
}

/// Keys lanyard reads from `CNI_ARGS`, or accepts without use (the infra container id and pod
/// uid Kubernetes passes to every plugin).
const KNOWN_ARGS: [&str; 7] = [
    "IgnoreUnknown",
    "IP",
    "MAC",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

impl CniArgs {
    /// As the reference plugins read it: an unknown key is an error unless `IgnoreUnknown` is
    /// `1` or `true`.
    pub fn parse(text: &str) -> Result<CniArgs, CniError> {
        let mut pairs = BTreeMap::new();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                CniError::new(
                    Code::InvalidEnv,
                    "invalid CNI_ARGS",
                    format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                )
            })?;
            pairs.insert(key.to_string(), value.to_string());
        }
        let ignore_unknown =
            pairs.get("IgnoreUnknown").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        if !ignore_unknown {
            if let Some(unknown) = pairs.keys().find(|k| !KNOWN_ARGS.contains(&k.as_str())) {
                return Err(CniError::new(
                    Code::InvalidEnv,
                    "invalid CNI_ARGS",
                    format!("CNI_ARGS: unknown key {unknown:?} (add IgnoreUnknown=1 to pass it)"),
                ));
            }
        }
        Ok(CniArgs { pairs })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// What stable MACs and client ids derive from: the pod (podman passes its container name
    /// as K8S_POD_NAME and no namespace) when given, else the container id.
    pub fn stable_name(&self, container_id: &str) -> String {
        match (self.get("K8S_POD_NAMESPACE"), self.get("K8S_POD_NAME")) {
            (namespace, Some(pod)) => format!("pod:{}/{pod}", namespace.unwrap_or("")),
            _ => format!("container:{container_id}"),
        }
    }

    /// The name a DHCP client presents: the pod's, when it is a valid host name.
    pub fn pod_name(&self) -> Option<&str> {
        self.get("K8S_POD_NAME")
    }
}

/// How the interface is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    Static,
    Dhcp,
}

/// The conf, the runtime's capabilities and `CNI_ARGS` resolved into what one ADD asks for.
#[derive(Debug)]
pub struct Wanted {
    pub host_interface: String,
    pub addressing: Addressing,
    pub addresses: Vec<AddressSpec>,
    pub routes: Vec<RouteSpec>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub macvlan_mode: MacvlanMode,
    pub dhcp_timeout: Duration,
}

fn invalid(details: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, "invalid network configuration", details)
}

impl NetConf {
    /// The fields every command needs: a name, and `type` lanyard (a conf meant for another
    /// plugin would otherwise be applied as if it were lanyard's).
    pub fn check_common(&self) -> Result<(), CniError> {
        if self.name.is_empty() {
            return Err(invalid("\"name\" is missing: every network needs one"));
        }
        if self.plugin_type != "lanyard" {
            return Err(invalid(format!(
                "\"type\" is {:?}: this is the lanyard plugin (\"type\": \"lanyard\")",
                self.plugin_type
            )));
        }
        if let Some(ipam) = &self.ipam {
            let plugin = self.chained_ipam().ok_or_else(|| {
                invalid(format!("\"ipam\": {ipam}: name the IPAM plugin as \"type\""))
            })?;
            if plugin == "lanyard" {
                return Err(invalid(
                    "\"ipam\": {\"type\": \"lanyard\"} under lanyard: give \"addressing\": \"dhcp\" instead",
                ));
            }
            if self.addressing.is_some() || !self.addresses.is_empty() {
                return Err(invalid(format!(
                    "\"ipam\" ({plugin}) gives the addresses: leave out \"addressing\" and \"addresses\""
                )));
            }
        }
        Ok(())
    }

    /// The IPAM plugin a chained `ipam` section names (the reference plugins' way to address
    /// the interface): lanyard runs it from CNI_PATH and configures its result.
    pub fn chained_ipam(&self) -> Option<&str> {
        self.ipam.as_ref().and_then(|ipam| ipam["type"].as_str())
    }

    /// Everything an ADD asks for, checked. Addresses come from the `ips` capability, else
    /// `IP=` in `CNI_ARGS`, else the conf; an address without a prefix length takes the one of
    /// the conf's address whose subnet holds it. The MAC from the `mac` capability, else
    /// `MAC=`, else the conf.
    pub fn wanted(&self, args: &CniArgs) -> Result<Wanted, CniError> {
        let host_interface =
            self.host_interface.clone().filter(|name| !name.is_empty()).ok_or_else(|| {
                invalid("\"hostInterface\" is missing: name the bridge or the macvlan parent")
            })?;
        let addressing = match self.addressing.as_deref() {
            None | Some("static") => Addressing::Static,
            Some("dhcp") => Addressing::Dhcp,
            Some(other) => {
                return Err(invalid(format!(
                    "\"addressing\": {other:?}: give \"static\" or \"dhcp\""
                )))
            }
        };
        let conf_addresses = self
            .addresses
            .iter()
            .map(|text| parse_cidr(text, "\"addresses\""))
            .collect::<Result<Vec<_>, _>>()?;
        let runtime: Vec<String> = if self.ipam.is_some() {
            // The chained IPAM plugin reads the runtime's addresses itself.
            Vec::new()
        } else if !self.runtime_config.ips.is_empty() {
            self.runtime_config.ips.clone()
        } else {
            args.get("IP")
                .map(|ips| ips.split(',').map(str::to_string).collect())
                .unwrap_or_default()
        };
        let networks = if runtime.is_empty() {
            // An address with no host part names a subnet: it only gives bare runtime
            // addresses their prefix, and would be a wrong address for the container itself.
            if let Some(subnet) = conf_addresses.iter().find(|a| names_subnet(a)) {
                return Err(invalid(format!(
                    "\"addresses\": {subnet} is a subnet, not an address: the runtime gave the \
                     container no address (podman --ip, the ips capability) to take its prefix"
                )));
            }
            conf_addresses
        } else {
            runtime
                .iter()
                .map(|text| with_prefix(text, &conf_addresses))
                .collect::<Result<Vec<_>, _>>()?
        };
        if addressing == Addressing::Dhcp && networks.iter().any(|n| n.addr().is_ipv4()) {
            return Err(invalid(
                "\"addressing\": \"dhcp\" takes its IPv4 address from the lease: give only IPv6 addresses beside it",
            ));
        }
        let mut addresses: Vec<AddressSpec> =
            networks.into_iter().map(|address| AddressSpec { address, gateway: None }).collect();
        if let Some(gateway) = self.gateway {
            // Only an address whose subnet holds the gateway (or, for an IPv6 link-local
            // router, any IPv6 address): a gateway elsewhere is a typo that would leave the
            // container without a working default route.
            let link_local =
                matches!(gateway, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
            let holder = addresses
                .iter_mut()
                .find(|a| {
                    a.address.contains(&gateway) || (link_local && a.address.addr().is_ipv6())
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "\"gateway\": {gateway} is in the subnet of none of the addresses"
                    ))
                })?;
            holder.gateway = Some(gateway);
        }
        let mut routes = Vec::new();
        for route in &self.routes {
            let gateway = route
                .gw
                .or(self.gateway.filter(|g| g.is_ipv4() == route.dst.addr().is_ipv4()))
                .ok_or_else(|| {
                    invalid(format!(
                        "route to {} has no \"gw\" and the conf no \"gateway\" of its family",
                        route.dst
                    ))
                })?;
            routes.push(RouteSpec { destination: route.dst, gateway });
        }
        let mac_text =
            self.runtime_config.mac.as_deref().or(args.get("MAC")).or(self.mac.as_deref());
        let mac = mac_text
            .map(|text| text.parse::<MacAddr>().map_err(|e| invalid(e.to_string())))
            .transpose()?;
        let macvlan_mode = match &self.macvlan_mode {
            Some(text) => text.parse().map_err(|e: crate::error::Error| invalid(e.to_string()))?,
            None => MacvlanMode::default(),
        };
        Ok(Wanted {
            host_interface,
            addressing,
            addresses,
            routes,
            mtu: self.mtu,
            mac,
            macvlan_mode,
            dhcp_timeout: self
                .dhcp_timeout
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_DHCP_TIMEOUT),
        })
    }
}

/// An address whose host part is all zero, in a subnet big enough for that to be the subnet's
/// own name (not a /31 or /32, /127 or /128, where every address is a host's).
fn names_subnet(net: &IpNet) -> bool {
    net.max_prefix_len() - net.prefix_len() >= 2 && net.addr() == net.network()
}

fn parse_cidr(text: &str, what: &str) -> Result<IpNet, CniError> {
    text.trim().parse::<IpNet>().map_err(|e| {
        invalid(format!("{what}: {text:?} is not an address with a prefix length: {e}"))
    })
}

/// An address from the runtime: CIDR as given, or bare with the prefix of the conf address
/// whose subnet holds it (podman's `IP=` is bare).
fn with_prefix(text: &str, conf: &[IpNet]) -> Result<IpNet, CniError> {
    if text.contains('/') {
        return parse_cidr(text, "the runtime's address");
    }
    let address: IpAddr =
        text.trim().parse().map_err(|e| invalid(format!("the runtime's address {text:?}: {e}")))?;
    conf.iter()
        .find(|net| net.contains(&address))
        .and_then(|net| IpNet::new(address, net.prefix_len()).ok())
        .ok_or_else(|| {
            invalid(format!(
                "the runtime's address {address} has no prefix length and no address in \
                 \"addresses\" has its subnet: add one (e.g. {address}/24) to the conf"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> NetConf {
        parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn decode_errors_have_their_codes() {
        assert_eq!(parse(b"{not json").unwrap_err().code, Code::Decode);
        assert_eq!(
            parse(br#"{"cniVersion":"1.0.0","mtu":"big"}"#).unwrap_err().code,
            Code::InvalidConfig
        );
        assert_eq!(
            parse(br#"{"cniVersion":"0.3.1"}"#).unwrap_err().code,
            Code::IncompatibleVersion
        );
        let ipam =
            conf(r#"{"cniVersion":"1.0.0","name":"n","type":"lanyard","ipam":{"type":"x"}}"#);
        assert!(ipam.check_common().is_ok());
        assert_eq!(ipam.chained_ipam(), Some("x"));
        for refused in [
            r#"{"cniVersion":"1.0.0","name":"n","type":"lanyard","ipam":{"subnet":"x"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"lanyard","ipam":{"type":"lanyard"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"lanyard","ipam":{"type":"x"},"addressing":"dhcp"}"#,
        ] {
            let err = conf(refused).check_common().unwrap_err();
            assert_eq!(err.code, Code::InvalidConfig, "{refused}");
            assert!(err.details.contains("\"ipam\""), "{}", err.details);
        }
    }

    #[test]
    fn runtime_addresses_win_and_bare_ones_take_the_conf_prefix() {
        let c = conf(
            r#"{"cniVersion":"1.0.0","name":"n","type":"lanyard","hostInterface":"br0",
                "addresses":["198.18.4.10/24"],"gateway":"198.18.4.1",
                "routes":[{"dst":"198.19.0.0/16"}]}"#,
        );
        let plain = c.wanted(&CniArgs::default()).unwrap();
        assert_eq!(plain.addresses[0].to_string(), "198.18.4.10/24@198.18.4.1");
        assert_eq!(plain.routes[0].gateway.to_string(), "198.18.4.1");
        let podman = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAME=web1;MAC=02:00:00:00:00:07;IP=198.18.4.77",
        )
        .unwrap();
        let wanted = c.wanted(&podman).unwrap();
        assert_eq!(wanted.addresses[0].address.to_string(), "198.18.4.77/24");
        assert_eq!(wanted.mac.unwrap().to_string(), "02:00:00:00:00:07");
        assert_eq!(podman.stable_name("abc"), "pod:/web1");
        let v6 = conf(
            r#"{"cniVersion":"1.0.0","name":"n","type":"lanyard","hostInterface":"br0",
                "addresses":["2001:db8:4::10/64"],"gateway":"fe80::1"}"#,
        );
        let wanted = v6.wanted(&CniArgs::default()).unwrap();
        assert_eq!(wanted.addresses[0].to_string(), "2001:db8:4::10/64@fe80::1");
        let mut elsewhere = v6;
        elsewhere.gateway = Some("2001:db8:5::1".parse().unwrap());
        assert_eq!(elsewhere.wanted(&CniArgs::default()).unwrap_err().code, Code::InvalidConfig);
        // A subnet in "addresses" is a template for the runtime's bare address, never an address.
        let template = conf(
            r#"{"cniVersion":"1.0.0","name":"n","type":"lanyard","hostInterface":"br0",
                "addresses":["198.18.4.0/24"]}"#,
        );
        assert_eq!(template.wanted(&CniArgs::default()).unwrap_err().code, Code::InvalidConfig);
        let given = CniArgs::parse("IP=198.18.4.9").unwrap();
        assert_eq!(template.wanted(&given).unwrap().addresses[0].to_string(), "198.18.4.9/24");
        let point_to_point = conf(
            r#"{"cniVersion":"1.0.0","name":"n","type":"lanyard","hostInterface":"br0",
                "addresses":["198.18.4.0/31"]}"#,
        );
        assert!(point_to_point.wanted(&CniArgs::default()).is_ok());
        let outside = CniArgs::parse("IP=198.18.9.9").unwrap();
        assert_eq!(c.wanted(&outside).unwrap_err().code, Code::InvalidConfig);
    }

    #[test]
    fn cni_args_refuse_unknown_keys_unless_told() {
        assert_eq!(CniArgs::parse("FOO=1").unwrap_err().code, Code::InvalidEnv);
        assert!(CniArgs::parse("IgnoreUnknown=1;FOO=1").is_ok());
        assert_eq!(CniArgs::parse("nonsense").unwrap_err().code, Code::InvalidEnv);
        let k8s = CniArgs::parse("K8S_POD_NAMESPACE=prod;K8S_POD_NAME=db-0").unwrap();
        assert_eq!(k8s.stable_name("abc"), "pod:prod/db-0");
        assert_eq!(CniArgs::default().stable_name("abc"), "container:abc");
    }
}
