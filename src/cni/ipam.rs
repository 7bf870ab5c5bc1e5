//! lanyard as the IPAM plugin of another CNI plugin: `"ipam": {"type": "lanyard"}` under the
//! reference `bridge` or `macvlan` plugin, a drop-in for `"ipam": {"type": "dhcp"}`. The main
//! plugin has made the interface (CNI_IFNAME in CNI_NETNS, with its MAC) and configures what
//! IPAM returns; lanyard has its daemon take the DHCP lease on that interface and keep renewing
//! it, and configures nothing itself: the record is marked `ipam_only`, which the daemon (it
//! only keeps the lease) and detach (it removes the record, never the link) honour.
//!
//! This mode is DHCP only: the spec's static-address keys are refused (the `static` and
//! `host-local` IPAM plugins give static addresses).

use std::path::Path;

use serde_json::Value;

use super::conf::NetConf;
use super::{CniError, Code, Invocation};
use crate::attach::DhcpWait;
use crate::netlink::{LinkKind, Netlink};
use crate::netns::Netns;
use crate::spec::{MacAddr, MacScheme};
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
