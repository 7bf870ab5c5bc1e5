//! lanyard as the IPAM plugin of another CNI plugin: `"ipam": {"type": "lanyard"}` under the
//! reference `bridge` or `macvlan` plugin, a drop-in for `"ipam": {"type": "dhcp"}`. The main
//! plugin has made the interface (CNI_IFNAME in CNI_NETNS, with its MAC) and configures what
//! IPAM returns; lanyard has its daemon take the DHCP lease on that interface and keep renewing
//! it, and configures nothing itself: the record is marked `ipam_only`, which the daemon (it
//! only keeps the lease) and detach (it removes the record, never the link) honour.
//!
//! This mode is DHCP only: the spec's static-address keys are refused (the `static` and
//! `host-local` IPAM plugins give static addresses).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use serde_json::Value;

use super::conf::NetConf;
use super::{CniError, Code, Invocation};
use crate::attach::DhcpWait;
use crate::netlink::{LinkKind, Netlink};
use crate::netns::Netns;
use crate::spec::{AddressSpec, MacAddr, MacScheme, RouteSpec};
use crate::state::{DhcpSettings, DriverKind, GuestRef, Record, RECORD_VERSION};

/// The keys lanyard reads under `ipam`.
const IPAM_KEYS: [&str; 3] = ["type", "stateDir", "dhcpTimeout"];

/// Keys of the static and host-local IPAM plugins: a conf that gives addresses meant another
/// IPAM plugin, and hears so.
const STATIC_KEYS: [&str; 8] =
    ["addresses", "ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "routes", "dataDir"];

/// Is this conf one where lanyard is the IPAM plugin of another plugin?
pub fn is_ipam_conf(value: &Value) -> bool {
    value["type"].as_str().is_some_and(|t| t != "lanyard") && value["ipam"]["type"] == "lanyard"
}

fn unsupported(key: &str, value: &Value, why: &str) -> CniError {
    CniError::new(
        Code::UnsupportedField,
        "unsupported field in network configuration",
        format!("\"ipam\": {{\"{key}\": {value}}}: {why}"),
    )
}

fn invalid(details: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, "invalid network configuration", details)
}

/// The conf of an IPAM invocation as a [`NetConf`] the shared commands (CHECK, STATUS, GC)
/// understand: the network's name and version, `prevResult`, the valid attachments, and the
/// `ipam` section's `stateDir` and `dhcpTimeout`. The main plugin's own keys are its business
/// and are not read. An unknown key under `ipam` is code 2, a wrong value code 7.
pub fn parse(value: &Value) -> Result<NetConf, CniError> {
    let ipam = value["ipam"].as_object().ok_or_else(|| invalid("\"ipam\" is not an object"))?;
    for (key, value) in ipam {
        if STATIC_KEYS.contains(&key.as_str()) {
            return Err(unsupported(
                key,
                value,
                "lanyard as IPAM plugin takes a DHCP lease; for static addresses use the \
                 \"static\" or \"host-local\" IPAM plugin",
            ));
        }
        if !IPAM_KEYS.contains(&key.as_str()) {
            return Err(unsupported(
                key,
                value,
                &format!("lanyard as IPAM plugin reads only {}", IPAM_KEYS.join(", ")),
            ));
        }
    }
    let field = |name: &str| value.get(name).filter(|v| !v.is_null()).cloned();
    let state_dir = ipam.get("stateDir").map(|v| typed("\"ipam\".\"stateDir\"", v)).transpose()?;
    let dhcp_timeout =
        ipam.get("dhcpTimeout").map(|v| typed("\"ipam\".\"dhcpTimeout\"", v)).transpose()?;
    let valid_attachments = field("cni.dev/valid-attachments")
        .map(|v| typed("\"cni.dev/valid-attachments\"", &v))
        .transpose()?;
    let cni_version = value["cniVersion"].as_str().unwrap_or_default().to_string();
    super::conf::check_version(&cni_version)?;
    let name = value["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(invalid("\"name\" is missing: every network needs one"));
    }
    Ok(NetConf {
        cni_version,
        name,
        plugin_type: "lanyard".into(),
        addressing: Some("dhcp".into()),
        dhcp_timeout,
        state_dir,
        prev_result: field("prevResult"),
        valid_attachments,
        ipam_of: value["type"].as_str().map(str::to_string),
        ..NetConf::default()
    })
}

/// A value of the conf as the type lanyard reads it (a wrong one is code 7).
fn typed<T: serde::de::DeserializeOwned>(name: &str, value: &Value) -> Result<T, CniError> {
    serde_json::from_value(value.clone()).map_err(|e| invalid(format!("{name}: {e}")))
}

/// The bridge or parent the main plugin put the interface on, as its conf names it (`bridge`
/// for bridge, `master` for macvlan and ipvlan): shown by `lanyard inspect`, and the macvlan
/// parent whose carrier the first DISCOVER waits for.
fn main_plugin_interface(stdin: &Value) -> Option<String> {
    ["bridge", "master"].iter().find_map(|key| stdin[key].as_str().map(str::to_string))
}

/// ADD: the lease on the main plugin's interface, held by the daemon; the result for the main
/// plugin to configure.
pub fn add(invocation: &Invocation, conf: &NetConf, stdin: &Value) -> Result<Value, CniError> {
    let container_id = invocation.container_id()?;
    let ifname = invocation.ifname()?;
    let netns_path = invocation.netns()?;
    let args = invocation.cni_args()?;
    if let Some(ip) = args.pairs.get("IP").filter(|ip| !ip.is_empty()) {
        return Err(CniError::new(
            Code::UnsupportedField,
            "unsupported field in network configuration",
            format!("CNI_ARGS IP={ip}: lanyard as IPAM plugin takes its address from DHCP"),
        ));
    }
    let netns = Netns::open(Path::new(&netns_path)).map_err(|e| {
        CniError::new(Code::InvalidEnv, "invalid CNI_NETNS", format!("CNI_NETNS={netns_path}: {e}"))
    })?;
    let host = super::ops::host(invocation, conf)?;
    let link = the_main_plugins_link(&netns, &ifname, &netns_path)?;
    let guest = GuestRef::Cni {
        container_id: container_id.clone(),
        network: conf.name.clone(),
        netns: netns_path.clone(),
        stable_name: args.stable_name(&container_id),
        ipam_only: true,
    };
    let client_id = crate::naming::client_id(&host.host_id, &guest.identity(), &ifname);
    let main_type = conf.ipam_of.clone().unwrap_or_default();
    let record = Record {
        version: RECORD_VERSION,
        guest,
        netns: netns.id(),
        guest_ifname: ifname.clone(),
        // A veth has its host end on a bridge; anything else (macvlan, ipvlan) sits on a parent.
        driver: if link.kind == LinkKind::Veth { DriverKind::Bridge } else { DriverKind::Macvlan },
        host_interface: main_plugin_interface(stdin)
            .unwrap_or_else(|| format!("(the {main_type} plugin's)")),
        // The main plugin's host end is its own to remove: lanyard records none.
        host_ifname: None,
        created_bridge: false,
        macvlan_mode: None,
        mac: MacAddr(link.mac.unwrap_or_default()),
        mac_scheme: MacScheme::default(),
        mtu: link.mtu,
        addresses: Vec::new(),
        routes: Vec::new(),
        host_addresses: Vec::new(),
        replaced_default_routes: Vec::new(),
        attached_at: crate::attach::now_unix(),
        dhcp: Some(DhcpSettings {
            hostname: args.pod_name().and_then(crate::naming::default_dhcp_hostname),
            client_id,
            ..DhcpSettings::default()
        }),
        declared: None,
        host_route: false,
        dns: Default::default(),
    };
    save_new_record(&host, &record, &container_id)?;
    let wanted_timeout = conf.dhcp_timeout.map(std::time::Duration::from_secs);
    let wait = DhcpWait {
        timeout: wanted_timeout.unwrap_or(super::conf::DEFAULT_DHCP_TIMEOUT),
        wait: true,
    };
    let leased = crate::lease::acquire(&host, &record, None, wait)
        .and_then(|_| crate::daemon::store::load(host.state.path(), &record.file_name()))
        .and_then(|stored| {
            stored.and_then(|s| s.lease).ok_or_else(|| {
                crate::error::Error::new(
                    crate::error::ErrorKind::Io,
                    format!("the daemon answered but stored no lease for {}", record.file_name()),
                )
            })
        });
    match leased {
        Ok(lease) => Ok(super::result::ipam_result(&conf.cni_version, &lease)),
        Err(e) => {
            // Nothing of this ADD stays: the lease (if one came late) and the record.
            let mut leftovers = Vec::new();
            if let Err(kept) = crate::detach::detach_exact(&host, &record) {
                leftovers.push(format!(
                    "record {} and its lease: {kept} (run: lanyard detach {container_id} -i {ifname})",
                    record.file_name()
                ));
            }
            let e = e.with_leftovers(&leftovers);
            Err(CniError::from_lanyard("lanyard could not take a DHCP lease", &e))
        }
    }
}

/// The interface the main plugin made, up (as the reference dhcp plugin brings it up: the
/// macvlan plugin runs IPAM before it sets the link up).
fn the_main_plugins_link(
    netns: &Netns,
    ifname: &str,
    netns_path: &str,
) -> Result<crate::netlink::LinkDetails, CniError> {
    let mut netlink = Netlink::open(netns, format!("the container's namespace {netns_path}"))
        .map_err(|e| CniError::from_lanyard("cannot open the container's namespace", &e))?;
    let link = netlink
        .link_by_name(ifname)
        .map_err(|e| CniError::from_lanyard("cannot read the container's interface", &e))?
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidEnv,
                "no such interface",
                format!(
                    "CNI_IFNAME={ifname} is not in CNI_NETNS={netns_path}: as an IPAM plugin \
                     lanyard leases an address for the interface the main plugin made"
                ),
            )
        })?;
    if link.mac.is_none() {
        return Err(CniError::new(
            Code::InvalidConfig,
            "invalid network configuration",
            format!("{ifname} has no MAC address: DHCP needs an Ethernet interface"),
        ));
    }
    if !link.up {
        netlink
            .set_up(link.index, ifname)
            .map_err(|e| CniError::from_lanyard("cannot bring the interface up", &e))?;
    }
    Ok(link)
}

/// Save the record of a new IPAM attachment. One for the same slot in the same live namespace
/// is an ADD twice (code 100, the first kept); one whose namespace is gone or another (a
/// container that died without a DEL) is stale and replaced, its lease released.
fn save_new_record(
    host: &crate::host::Host,
    record: &Record,
    container_id: &str,
) -> Result<(), CniError> {
    let load = |host: &crate::host::Host| {
        host.state
            .load(&record.file_name())
            .map_err(|e| CniError::from_lanyard("cannot read the attachment's record", &e))
    };
    if let Some(existing) = load(host)? {
        if existing.netns == record.netns {
            return Err(CniError::new(
                Code::Conflict,
                "already attached",
                format!(
                    "container {container_id} interface {} on network {} already has a lease \
                     from lanyard (DEL it first)",
                    record.guest_ifname,
                    match &record.guest {
                        GuestRef::Cni { network, .. } => network.as_str(),
                        _ => "",
                    }
                ),
            ));
        }
        crate::detach::detach_exact(host, &existing)
            .map_err(|e| CniError::from_lanyard("cannot remove a stale attachment", &e))?;
    }
    let _lock =
        host.state.lock().map_err(|e| CniError::from_lanyard("cannot lock the state", &e))?;
    if load(host)?.is_some() {
        return Err(CniError::new(
            Code::Conflict,
            "already attached",
            format!("another ADD of {} recorded it meanwhile", record.file_name()),
        ));
    }
    host.state.save(record).map_err(|e| CniError::from_lanyard("cannot save the record", &e))?;
    Ok(())
}

/// Run the IPAM plugin a main lanyard conf chains (`"ipam": {"type": "host-local"}`), as the
/// reference plugins do: the executable of that name in CNI_PATH, with the same CNI variables
/// and stdin. Its result (ADD) is returned; its error is passed on with its own code.
pub(super) fn delegate(
    plugin: &str,
    command: &str,
    invocation: &Invocation,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let path = find_in_cni_path(plugin, invocation.cni_path.as_deref())?;
    let mut child = Command::new(&path);
    child.env("CNI_COMMAND", command).env("CNI_ARGS", &invocation.args);
    for (name, value) in [
        ("CNI_CONTAINERID", &invocation.container_id),
        ("CNI_NETNS", &invocation.netns),
        ("CNI_IFNAME", &invocation.ifname),
        ("CNI_PATH", &invocation.cni_path),
    ] {
        if let Some(value) = value {
            child.env(name, value);
        }
    }
    let io = |what: &str, e: std::io::Error| {
        CniError::new(
            Code::Io,
            "cannot run the IPAM plugin",
            format!("{what} {}: {e}", path.display()),
        )
    };
    let mut child = child
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| io("start", e))?;
    let written = child.stdin.take().map(|mut pipe| pipe.write_all(stdin));
    let output = child.wait_with_output().map_err(|e| io("wait for", e))?;
    // A plugin may exit without reading all of its stdin (an early error): its exit status
    // and output speak for it, not the broken pipe.
    if let Some(Err(e)) =
        written.filter(|w| w.as_ref().is_err_and(|e| e.kind() != std::io::ErrorKind::BrokenPipe))
    {
        return Err(io("write the conf to", e));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let answer: Option<Value> = match text.trim() {
        "" => None,
        json => Some(serde_json::from_str(json).map_err(|e| {
            CniError::new(
                Code::Other,
                "the IPAM plugin's output is not JSON",
                format!("{plugin} {command}: {e}: {json}"),
            )
        })?),
    };
    if output.status.success() {
        return Ok(answer);
    }
    let answer = answer.unwrap_or_default();
    let code = answer["code"].as_u64().and_then(|c| u32::try_from(c).ok()).unwrap_or(999);
    Err(CniError::new(
        Code::Delegated(code),
        answer["msg"].as_str().unwrap_or("the IPAM plugin failed"),
        format!(
            "IPAM plugin {plugin} ({command}, {}): {}",
            output.status,
            answer["details"].as_str().unwrap_or_default()
        ),
    ))
}

/// The executable `plugin` in the CNI_PATH directories, first found first.
fn find_in_cni_path(plugin: &str, cni_path: Option<&str>) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(invalid(format!("\"ipam\": {{\"type\": {plugin:?}}} is not a plugin name")));
    }
    let dirs = cni_path.unwrap_or_default();
    dirs.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(plugin))
        .find(|path| {
            use std::os::unix::fs::PermissionsExt;
            path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                "IPAM plugin not found",
                format!(
                    "no executable {plugin:?} in CNI_PATH={dirs:?}: install the IPAM plugin there"
                ),
            )
        })
}

/// What an IPAM result asks the main plugin to configure: its addresses, and its routes (a
/// route without `gw` goes via the gateway of its family's address). A default route via an
/// address's own gateway becomes that address's gateway, as lanyard's `ADDRESS@GATEWAY` is.
pub(super) fn configuration_of(
    result: &Value,
) -> Result<(Vec<AddressSpec>, Vec<RouteSpec>), CniError> {
    let bad = |details: String| {
        CniError::new(Code::Other, "unusable IPAM result", format!("{details}: {result}"))
    };
    let mut addresses = Vec::new();
    for ip in result["ips"].as_array().into_iter().flatten() {
        let address: IpNet = ip["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad(format!("address {} is not CIDR", ip["address"])))?;
        let gateway: Option<IpAddr> = match ip.get("gateway").and_then(Value::as_str) {
            Some(text) => Some(text.parse().map_err(|_| bad(format!("gateway {text:?}")))?),
            None => None,
        };
        addresses.push((address, gateway));
    }
    let mut specs: Vec<AddressSpec> = addresses
        .iter()
        .map(|(address, _)| AddressSpec { address: *address, gateway: None })
        .collect();
    let mut routes = Vec::new();
    for route in result["routes"].as_array().into_iter().flatten() {
        let destination: IpNet = route["dst"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad(format!("route destination {}", route["dst"])))?;
        let family_gateway = addresses
            .iter()
            .find_map(|(a, g)| g.filter(|_| a.addr().is_ipv4() == destination.addr().is_ipv4()));
        let gateway: IpAddr = match route.get("gw").and_then(Value::as_str) {
            Some(text) => text.parse().map_err(|_| bad(format!("route gateway {text:?}")))?,
            None => family_gateway
                .ok_or_else(|| bad(format!("route to {destination} has no gw and no gateway")))?,
        };
        let owner = addresses.iter().position(|(_, g)| *g == Some(gateway));
        match owner {
            Some(index) if destination.prefix_len() == 0 && specs[index].gateway.is_none() => {
                specs[index].gateway = Some(gateway);
            }
            _ => routes.push(RouteSpec { destination, gateway }),
        }
    }
    Ok((specs, routes))
}
