//! The NetworkDriver API. Docker's order for one container (checked with Docker 20.10):
//! IPAM RequestAddress -> CreateEndpoint -> Join -> ProgramExternalConnectivity ->
//! EndpointOperInfo; on stop Revoke..., Leave, DeleteEndpoint, ReleaseAddress.
//!
//! Docker moves the interface named in Join's answer from its own namespace (the one this
//! daemon serves as the host) into the container, and gives it the address, the MAC and the
//! routes itself. So CreateEndpoint makes the link with the library's drivers (a veth whose
//! host end joins a bridge parent, or a macvlan child of any other parent) with the guest end
//! left in the host namespace under a temporary name, and records it as a lanyard record.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Value};

use super::store::{Endpoint, Network, Pool};
use super::{no_arguments, parse_body, Plugin};
use crate::driver::{driver_for, LinkRequest};
use crate::error::{Error, Result, ResultExt};
use crate::netlink::{LinkKind, LinkWatch, Netlink};
use crate::netns::Netns;
use crate::spec::{AddressSpec, MacAddr, MacScheme, MacvlanMode};
use crate::state::{DriverKind, GuestRef, Record, RECORD_VERSION};

/// Docker's generic options (`-o KEY=VALUE`) travel under this key.
const GENERIC_OPTIONS: &str = "com.docker.network.generic";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamData {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    gateway: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default)]
    options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Deserialize)]
struct NetworkOnly {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InterfaceData {
    #[serde(default)]
    address: String,
    #[serde(rename = "AddressIPv6", default)]
    address_ipv6: String,
    #[serde(default)]
    mac_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    interface: Option<InterfaceData>,
}

#[derive(Deserialize)]
struct EndpointOnly {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Join {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    sandbox_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Discovery {
    discovery_type: i64,
}

pub fn handle(plugin: &Plugin, call: &str, body: &[u8]) -> Result<Value> {
    let what = format!("NetworkDriver.{call}");
    match call {
        "GetCapabilities" => {
            no_arguments(&what, body)?;
            Ok(json!({ "Scope": "local", "ConnectivityScope": "local" }))
        }
        "CreateNetwork" => create_network(plugin, parse_body(&what, body)?),
        "DeleteNetwork" => delete_network(plugin, parse_body(&what, body)?),
        "CreateEndpoint" => create_endpoint(plugin, parse_body(&what, body)?),
        "DeleteEndpoint" => delete_endpoint(plugin, parse_body(&what, body)?),
        "Join" => join(plugin, parse_body(&what, body)?),
        "Leave" | "ProgramExternalConnectivity" | "RevokeExternalConnectivity" => {
            // Nothing to do: Docker moves the link back itself; lanyard adds no NAT or ports.
            let request: EndpointOnly = parse_body(&what, body)?;
            check_id("network", &request.network_id)?;
            check_id("endpoint", &request.endpoint_id)?;
            Ok(json!({}))
        }
        "EndpointOperInfo" => {
            let request: EndpointOnly = parse_body(&what, body)?;
            check_id("endpoint", &request.endpoint_id)?;
            Ok(json!({ "Value": {} }))
        }
        "DiscoverNew" | "DiscoverDelete" => {
            let request: Discovery = parse_body(&what, body)?;
            let _ = request.discovery_type;
            Ok(json!({}))
        }
        _ => Err(Error::unsupported(format!("{what}: not a call this plugin implements"))),
    }
}

/// Docker's ids are 64 hex digits; the first 12 name the links, so fewer is refused.
fn check_id(what: &str, id: &str) -> Result<()> {
    if id.len() < 12 || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::usage(format!("{what} id {id:?} is not a Docker id (hex digits)")));
    }
    Ok(())
}

fn option_text<'a>(options: &'a BTreeMap<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(Error::usage(format!("-o {key}={other}: expected a string"))),
    }
}

fn pools(network: &str, family: &str, data: Option<Vec<IpamData>>) -> Result<Vec<Pool>> {
    let mut pools = Vec::new();
    for data in data.unwrap_or_default() {
        let pool: IpNet = data.pool.parse().map_err(|_| {
            Error::usage(format!(
                "network {network}: {family} pool {:?} is not a subnet",
                data.pool
            ))
        })?;
        let gateway = match data.gateway.as_str() {
            "" => None,
            // Docker sends the gateway with the pool's prefix length ("198.18.0.1/24").
            text => Some(
                text.parse::<IpNet>()
                    .map(|net| net.addr())
                    .or_else(|_| text.parse::<IpAddr>())
                    .map_err(|_| {
                        Error::usage(format!(
                            "network {network}: {family} gateway {text:?} is not an address"
                        ))
                    })?,
            ),
        };
        pools.push(Pool { pool, gateway });
    }
    Ok(pools)
}

/// Which driver a parent gets, as `lanyard attach` decides: a bridge gets veth ports, anything
/// else macvlan children. The parent must exist now: a network that cannot work is refused at
/// create, not at its first container.
fn check_parent(host: &mut Netlink, network: &Network) -> Result<DriverKind> {
    crate::spec::validate_ifname(&network.parent, "-o parent")?;
    let link = host.link_by_name(&network.parent)?.ok_or_else(|| {
        Error::not_found(format!(
            "-o parent={}: no such interface in the host namespace; give an existing bridge or \
             interface",
            network.parent
        ))
    })?;
    let kind = match link.kind {
        LinkKind::Bridge => DriverKind::Bridge,
        _ => DriverKind::Macvlan,
    };
    let has_ipv6 = !network.ipv6.is_empty();
    // The driver's own checks (a loopback or bridge-port parent, the MTU against the
    // parent's), with names that are never used.
    let request = LinkRequest {
        host_interface: &network.parent,
        host_ifname: Some("lyvalidate"),
        guest_ifname: "lyvalidate",
        guest_mac: [0x02, 0, 0, 0, 0, 1],
        host_mac: [0xfe, 0, 0, 0, 0, 1],
        guest_mtu: network.mtu,
        macvlan_mode: network.macvlan_mode,
        no_create: true,
        host_addresses: &[],
        fail_in_setup: None,
    };
    let plan = driver_for(kind).validate(host, &request)?;
    crate::spec::validate_mtu(plan.guest_mtu, has_ipv6)?;
    Ok(kind)
}

fn create_network(plugin: &Plugin, request: CreateNetwork) -> Result<Value> {
    check_id("network", &request.network_id)?;
    let id = request.network_id.clone();
    let generic = match request.options.get(GENERIC_OPTIONS) {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => map.clone().into_iter().collect(),
        Some(other) => return Err(Error::usage(format!("options {other}: expected an object"))),
    };
    for key in generic.keys() {
        if !["parent", "macvlan_mode", "mtu", "slaac"].contains(&key.as_str()) {
            return Err(Error::usage(format!(
                "-o {key}: not an option of lanyard networks (parent, macvlan_mode, mtu, slaac)"
            )));
        }
    }
    let parent = option_text(&generic, "parent")?
        .ok_or_else(|| Error::usage("-o parent=INTERFACE is required (a bridge or an interface)"))?
        .to_string();
    let macvlan_mode = match option_text(&generic, "macvlan_mode")? {
        Some(text) => text.parse::<MacvlanMode>().map_err(|e| e.context("-o macvlan_mode"))?,
        None => MacvlanMode::default(),
    };
    let mtu = match option_text(&generic, "mtu")? {
        Some(text) => Some(
            text.parse::<u32>()
                .map_err(|_| Error::usage(format!("-o mtu={text}: expected a number")))?,
        ),
        None => None,
    };
    let slaac = match option_text(&generic, "slaac")? {
        None | Some("false") => false,
        Some("true") => true,
        Some(text) => return Err(Error::usage(format!("-o slaac={text}: expected true or false"))),
    };
    let mut ipv4 = pools(&id, "IPv4", request.ipv4_data)?;
    let dhcp_marker = super::ipam::dhcp_marker(&ipv4);
    if dhcp_marker.is_some() {
        // Not a router: the gateway of a DHCP network is the lease's, answered at Join.
        ipv4.iter_mut().for_each(|pool| pool.gateway = None);
    }
    let network = Network {
        ipv4,
        ipv6: pools(&id, "IPv6", request.ipv6_data)?,
        id: id.clone(),
        parent,
        macvlan_mode,
        mtu,
        slaac,
        dhcp_marker,
    };
    let mut netlink = Netlink::open(&plugin.host.netns, "the host namespace")?;
    check_parent(&mut netlink, &network).map_err(|e| e.context(format!("network {id}")))?;
    let mut store = plugin.store.lock().unwrap_or_else(|e| e.into_inner());
    store.networks.insert(id.clone(), network);
    if let Err(e) = store.save() {
        store.networks.remove(&id);
        return Err(e);
    }
    Ok(json!({}))
}

fn delete_network(plugin: &Plugin, request: NetworkOnly) -> Result<Value> {
    check_id("network", &request.network_id)?;
    // Endpoints whose DeleteEndpoint was answered are gone before their network (an endpoint
    // the reaper could not finish stays stored, and is removed below as one Docker forgot).
    super::reaper::drain(super::reaper::DRAIN_WAIT);
    let host = &plugin.host;
    let mut store = plugin.store.lock().unwrap_or_else(|e| e.into_inner());
    // Docker deletes a network only once it has no endpoints left, and forgets an endpoint
    // even when its DeleteEndpoint failed (this daemon was down then: Docker logs a warning
    // and goes on). So an endpoint still stored here is one Docker forgot: removed now, or
    // its links and record would outlive the network.
    let forgotten: Vec<Endpoint> =
        store.endpoints.values().filter(|e| e.network == request.network_id).cloned().collect();
    if !forgotten.is_empty() {
        let lock = host.state.lock()?;
        let mut netlink = Netlink::open(&host.netns, "the host namespace")?;
        let mut leftovers = Vec::new();
        for endpoint in &forgotten {
            let left = remove_endpoint_parts(host, &mut netlink, endpoint, None);
            if left.is_empty() {
                store.endpoints.remove(&endpoint.id);
            }
            leftovers.extend(left);
        }
        drop(lock);
        store.save()?;
        if !leftovers.is_empty() {
            return Err(Error::new(
                crate::error::ErrorKind::Kernel,
                format!("remove the endpoints Docker forgot on network {}", request.network_id),
            )
            .with_leftovers(&leftovers));
        }
    }
    if store.networks.get(&request.network_id).is_some_and(|n| n.dhcp_marker.is_some()) {
        // The leases kept for MACs that may come back: no container of this network is left.
        let leftovers = release_dhcp_records(host, &request.network_id);
        if !leftovers.is_empty() {
            return Err(Error::new(
                crate::error::ErrorKind::Kernel,
                format!("release the DHCP leases of network {}", request.network_id),
            )
            .with_leftovers(&leftovers));
        }
    }
    // Unknown: already deleted (idempotent, as Docker retries).
    if let Some(network) = store.networks.remove(&request.network_id) {
        if let Err(e) = store.save() {
            store.networks.insert(network.id.clone(), network);
            return Err(e);
        }
    }
    Ok(json!({}))
}

/// The names of an endpoint's links: the first 12 hex digits of its id, unique among the
/// endpoints Docker has at once.
fn link_names(endpoint_id: &str) -> (String, String) {
    (format!("lyg{}", &endpoint_id[..12]), format!("lyh{}", &endpoint_id[..12]))
}

fn parse_net(text: &str, what: &str) -> Result<Option<IpNet>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        Error::usage(format!("{what} {text:?} is not an address with a prefix length"))
    })
}

fn create_endpoint(plugin: &Plugin, request: CreateEndpoint) -> Result<Value> {
    check_id("network", &request.network_id)?;
    check_id("endpoint", &request.endpoint_id)?;
    // A new link never meets one still being deleted (the same MAC on the same parent, when
    // Docker derives the MAC from a reused address). Usually nothing is pending.
    super::reaper::drain(super::reaper::DRAIN_WAIT);
    let host = &plugin.host;
    let mut store = plugin.store.lock().unwrap_or_else(|e| e.into_inner());
    let network = store.networks.get(&request.network_id).cloned().ok_or_else(|| {
        Error::not_found(format!(
            "network {} is not one of lanyard's (its CreateNetwork never reached this daemon's \
             state directory): remove it and create it again",
            request.network_id
        ))
    })?;
    if store.endpoints.contains_key(&request.endpoint_id) {
        return Ok(json!({}));
    }
    let interface = request.interface.unwrap_or_default();
    if network.dhcp_marker.is_some() {
        return adopt_dhcp_link(host, &mut store, &network, &request.endpoint_id, &interface);
    }
    let mut addresses = Vec::new();
    for (text, ipv6) in [(&interface.address, false), (&interface.address_ipv6, true)] {
        if let Some(address) = parse_net(text, "Interface.Address")? {
            addresses.push(AddressSpec { address, gateway: network.gateway(ipv6) });
        }
    }
    let guest = GuestRef::DockerEndpoint {
        network: request.network_id.clone(),
        endpoint: request.endpoint_id.clone(),
    };
    let (given_mac, mac) = match interface.mac_address.as_str() {
        "" => (false, crate::naming::stable_mac(&host.host_id, &guest.identity(), "eth0", 0)),
        text => (true, text.parse::<MacAddr>()?),
    };
    let link_name = link_names(&request.endpoint_id).0;

    let lock = host.state.lock()?;
    let mut netlink = Netlink::open(&host.netns, "the host namespace")?;
    let record = make_link(host, &mut netlink, &network, &guest, mac, addresses.clone(), None)?;
    let kind = record.driver;
    let endpoint = Endpoint {
        network: network.id.clone(),
        id: request.endpoint_id.clone(),
        driver: kind,
        link_name: link_name.clone(),
        host_end: record.host_ifname.clone(),
        mac,
        addresses: addresses.iter().map(|a| a.address).collect(),
        record: record.file_name(),
        joined: false,
        dhcp: false,
        sandbox_key: None,
        deleting: false,
    };
    let saved = host.state.save(&record).and_then(|_| {
        store.endpoints.insert(endpoint.id.clone(), endpoint.clone());
        store.save().inspect_err(|_| {
            store.endpoints.remove(&endpoint.id);
        })
    });
    if let Err(e) = saved {
        let leftovers = remove_endpoint_parts(host, &mut netlink, &endpoint, Some(&record));
        return Err(e.with_leftovers(&leftovers));
    }
    drop(lock);
    Ok(match given_mac {
        true => json!({}),
        false => json!({ "Interface": { "MacAddress": mac.to_string() } }),
    })
}

/// Make an endpoint's link in the host namespace (Docker moves it into the container at Join):
/// a veth whose host end joins a bridge parent, or a macvlan child of any other parent, named
/// by [`link_names`] of the guest's endpoint (Docker's endpoint id, or the MAC of a DHCP
/// network's link); and its record, not yet saved.
pub(super) fn make_link(
    host: &crate::host::Host,
    netlink: &mut Netlink,
    network: &Network,
    guest: &GuestRef,
    mac: MacAddr,
    addresses: Vec<AddressSpec>,
    dhcp: Option<crate::state::DhcpSettings>,
) -> Result<Record> {
    let (link_name, host_end) = match guest {
        GuestRef::DockerEndpoint { endpoint, .. } => link_names(endpoint),
        _ => return Err(Error::usage("a Docker endpoint's link needs a Docker endpoint guest")),
    };
    let kind = check_parent(netlink, network)?;
    if netlink.link_by_name(&link_name)?.is_some() {
        return Err(Error::conflict(format!(
            "interface {link_name} already exists in the host namespace (another endpoint with \
             the same id prefix or MAC?): remove it with ip link del {link_name}"
        )));
    }
    let request_link = LinkRequest {
        host_interface: &network.parent,
        host_ifname: (kind == DriverKind::Bridge).then_some(host_end.as_str()),
        guest_ifname: &link_name,
        guest_mac: mac.0,
        host_mac: crate::attach::host_end_mac(&host.host_id, &guest.identity(), &link_name),
        guest_mtu: network.mtu,
        macvlan_mode: network.macvlan_mode,
        no_create: true,
        host_addresses: &[],
        fail_in_setup: None,
    };
    let driver = driver_for(kind);
    let plan = driver.validate(netlink, &request_link)?;
    // The guest namespace is the host's own: Docker moves the link into the container at Join.
    let created = driver.setup(netlink, &host.netns, &request_link, &plan)?;
    Ok(Record {
        version: RECORD_VERSION,
        guest: guest.clone(),
        netns: host.netns.id(),
        guest_ifname: link_name,
        driver: kind,
        host_interface: network.parent.clone(),
        host_ifname: created.host_link,
        created_bridge: false,
        macvlan_mode: (kind == DriverKind::Macvlan).then_some(network.macvlan_mode),
        mac,
        mac_scheme: MacScheme::default(),
        mtu: plan.guest_mtu,
        addresses,
        routes: Vec::new(),
        host_addresses: Vec::new(),
        replaced_default_routes: Vec::new(),
        attached_at: crate::attach::now_unix(),
        dhcp,
        declared: None,
        host_route: false,
        dns: Default::default(),
    })
}

/// The guest of a DHCP network's link: named by the MAC, which is all RequestAddress knows (the
/// endpoint id comes later), and which the lease follows.
pub(super) fn dhcp_guest(network_id: &str, mac: MacAddr) -> (GuestRef, String) {
    let hex: String = mac.0.iter().map(|b| format!("{b:02x}")).collect();
    let link_name = link_names(&hex).0;
    (GuestRef::DockerEndpoint { network: network_id.to_string(), endpoint: hex }, link_name)
}

/// How long RequestAddress waits for a lease (Docker waits for the answer; a LAN without a
/// DHCP server fails the container's start with this daemon's reason).
const LEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The DHCP client id of a DHCP network's link, which the server's lease follows:
/// - the one already recorded for this network and MAC (a fixed `--mac-address` keeps its lease
///   whatever the container is called);
/// - else, when Docker names the endpoint (29.0 and later pass the container's name to IPAM),
///   one derived from the network and that name, as [`crate::naming::client_id`] derives every
///   stable client id: a container that keeps its name asks as the same client under the random
///   MAC Docker draws at each start. (The MAC itself cannot follow the name: Docker draws it
///   before asking IPAM, sets it on the link in the container and refuses a driver's other one.)
/// - else one from the MAC.
fn dhcp_client_id(
    host_id: &str,
    network_id: &str,
    mac: MacAddr,
    endpoint_name: Option<&str>,
    recorded: Option<&str>,
) -> String {
    match (recorded, endpoint_name) {
        (Some(recorded), _) => recorded.to_string(),
        (None, Some(name)) => {
            crate::naming::client_id(host_id, &format!("docker-network:{network_id}/{name}"), "")
        }
        (None, None) => format!("docker-{mac}"),
    }
}

/// RequestAddress on a DHCP network: make the container's link in the host namespace with
/// Docker's MAC, have the daemon take a lease on it (client id from [`dhcp_client_id`], so the
/// same MAC, or the same container name where Docker gives it, gets the same lease back), and
/// answer the leased address. CreateEndpoint adopts the link.
pub(super) fn take_lease(
    plugin: &Plugin,
    marker: std::net::Ipv4Addr,
    mac: MacAddr,
    endpoint_name: Option<&str>,
) -> Result<IpNet> {
    super::reaper::drain(super::reaper::DRAIN_WAIT);
    let host = &plugin.host;
    let network = {
        let store = plugin.store.lock().unwrap_or_else(|e| e.into_inner());
        store.networks.values().find(|n| n.dhcp_marker == Some(marker)).cloned()
    }
    .ok_or_else(|| {
        Error::not_found(format!(
            "no lanyard network has the DHCP pool of gateway {marker} (its CreateNetwork never \
             reached this daemon's state directory): remove the network and create it again"
        ))
    })?;
    let (guest, link_name) = dhcp_guest(&network.id, mac);
    let recorded = host.state.load(&Record::file_name_for(&guest, &link_name))?;
    let recorded_id = recorded.as_ref().and_then(|r| r.dhcp.as_ref()).map(|d| d.client_id.as_str());
    let settings = crate::state::DhcpSettings {
        hostname: None,
        fqdn: false,
        client_id: dhcp_client_id(&host.host_id, &network.id, mac, endpoint_name, recorded_id),
        set_resolv: false,
        // Written on the link once Docker moved it into the container (see Join).
        slaac: network.slaac,
        probe: false,
    };
    let record = {
        let _lock = host.state.lock()?;
        let mut netlink = Netlink::open(&host.netns, "the host namespace")?;
        let record =
            make_link(host, &mut netlink, &network, &guest, mac, Vec::new(), Some(settings))?;
        // Up for DHCP before Join (Docker brings it up again inside the container); nothing
        // else is configured on it in the host namespace, where no router advertisement may
        // give it an address or the host a default route through it either (refused before it
        // comes up; the container's namespace gives it its own settings when Docker moves it).
        let ifname = record.guest_ifname.clone();
        let up = host
            .netns
            .run(move || crate::sysctl::ignore_router_advertisements(&ifname))
            .and_then(|()| netlink.link_by_name(&record.guest_ifname))
            .and_then(|link| match link {
                Some(link) => netlink.set_up(link.index, &record.guest_ifname),
                None => Err(Error::not_found(format!("{} vanished", record.guest_ifname))),
            });
        if let Err(e) = up.and_then(|()| host.state.save(&record)) {
            let leftovers = remove_links(&mut netlink, &record);
            return Err(e.with_leftovers(&leftovers));
        }
        record
    };
    // Without the locks: the daemon's lease loop answers through its control socket, and
    // other containers' calls go on meanwhile.
    let wait = crate::attach::DhcpWait { timeout: LEASE_TIMEOUT, wait: true };
    let leased = crate::lease::acquire(host, &record, None, wait).and_then(|view| {
        view["Address"].as_str().and_then(|a| a.parse::<IpNet>().ok()).ok_or_else(|| {
            Error::new(
                crate::error::ErrorKind::Io,
                format!("the daemon's lease has no address: {view}"),
            )
        })
    });
    match leased {
        Ok(address) => Ok(address),
        Err(e) => {
            let mut leftovers = Vec::new();
            if let Err(released) = crate::lease::release(host, &record) {
                leftovers.push(format!("the lease of {}: {released}", record.file_name()));
            }
            let _lock = host.state.lock();
            match Netlink::open(&host.netns, "the host namespace") {
                Ok(mut netlink) => leftovers.extend(remove_links(&mut netlink, &record)),
                Err(open) => leftovers.push(format!(
                    "link {} in the host namespace: {open} (remove it: ip link del {})",
                    record.guest_ifname, record.guest_ifname
                )),
            }
            if let Err(removed) = host.state.remove(&record) {
                leftovers.push(format!(
                    "record {}: {removed} (delete it from {})",
                    record.file_name(),
                    host.state.path().display()
                ));
            }
            Err(e
                .context(format!("a DHCP lease for MAC {mac} on {}", network.parent))
                .with_leftovers(&leftovers))
        }
    }
}

/// Name the record of a container's endpoint in DNS (`[dns_update]`): Docker names no
/// container to the network driver, so the daemon's Docker watcher, which inspects each started
/// container, writes `template` (the container's names already filled in) into the record of
/// its endpoint on `network_id` with `mac` (a static network's endpoint, or a DHCP network's
/// lease record, which the lease then registers under). Returns the record, for the caller to
/// hand to the daemon's DNS updates (again after a daemon restart, whose DNS reconcile cannot
/// tell a Docker endpoint alive); `None` when no such endpoint is lanyard's.
pub fn name_endpoint(
    host: &crate::host::Host,
    network_id: &str,
    mac: MacAddr,
    template: &str,
) -> Result<Option<Record>> {
    let _lock = host.state.lock()?;
    let store = super::store::Store::load(host.state.path())?;
    // A DHCP network's endpoint names the record of its network and MAC, the lease's.
    let Some(endpoint) = store.endpoints.values().find(|e| e.network == network_id && e.mac == mac)
    else {
        return Ok(None);
    };
    let record_file = &endpoint.record;
    let Some(mut record) = host.state.load(record_file)? else { return Ok(None) };
    if record.dns.name.as_deref() != Some(template) {
        record.dns.name = Some(template.to_string());
        host.state.save(&record)?;
    }
    Ok(Some(record))
}

/// A DHCP link's links in the host namespace, removed (the host end takes a veth's guest end
/// along); a line per one left behind.
pub(super) fn remove_links(netlink: &mut Netlink, record: &Record) -> Vec<String> {
    let mut leftovers = Vec::new();
    let names = record.host_ifname.iter().chain(std::iter::once(&record.guest_ifname));
    for name in names {
        let result = netlink.link_by_name(name).and_then(|link| match link {
            Some(link) => netlink.delete_link(link.index, name),
            None => Ok(()),
        });
        if let Err(e) = result {
            leftovers.push(format!(
                "link {name} in the host namespace: {e} (remove it: ip link del {name})"
            ));
        }
    }
    leftovers
}

/// CreateEndpoint on a DHCP network: the link RequestAddress made for this MAC becomes the
/// endpoint's.
fn adopt_dhcp_link(
    host: &crate::host::Host,
    store: &mut super::store::Store,
    network: &Network,
    endpoint_id: &str,
    interface: &InterfaceData,
) -> Result<Value> {
    let mac: MacAddr = interface.mac_address.parse().map_err(|_| {
        Error::usage(format!(
            "endpoint {endpoint_id}: Interface.MacAddress {:?} is not a MAC (Docker sends the \
             one it gave IPAM)",
            interface.mac_address
        ))
    })?;
    let (guest, link_name) = dhcp_guest(&network.id, mac);
    let record_file = Record::file_name_for(&guest, &link_name);
    let record = host.state.load(&record_file)?.ok_or_else(|| {
        Error::not_found(format!(
            "endpoint {endpoint_id}: no lease was taken for MAC {mac} (RequestAddress comes \
             first)"
        ))
    })?;
    let address = parse_net(&interface.address, "Interface.Address")?;
    let endpoint = Endpoint {
        network: network.id.clone(),
        id: endpoint_id.to_string(),
        driver: record.driver,
        link_name,
        host_end: record.host_ifname.clone(),
        mac,
        addresses: address.into_iter().collect(),
        record: record_file,
        joined: false,
        dhcp: true,
        sandbox_key: None,
        deleting: false,
    };
    store.endpoints.insert(endpoint.id.clone(), endpoint);
    if let Err(e) = store.save() {
        store.endpoints.remove(endpoint_id);
        return Err(e);
    }
    Ok(json!({}))
}

/// Release (DHCPRELEASE where the link still exists) and remove the records of a DHCP
/// network; a line per thing left behind.
fn release_dhcp_records(host: &crate::host::Host, network_id: &str) -> Vec<String> {
    let records = match host.state.records() {
        Ok(records) => records,
        Err(e) => return vec![format!("the records in {}: {e}", host.state.path().display())],
    };
    let mut leftovers = Vec::new();
    for record in records {
        if !matches!(&record.guest, GuestRef::DockerEndpoint { network, .. } if network == network_id)
            || record.dhcp.is_none()
        {
            continue;
        }
        if let Err(e) = crate::lease::release(host, &record) {
            leftovers.push(format!("the lease of {}: {e}", record.file_name()));
            continue;
        }
        if let Err(e) = host.state.remove(&record) {
            leftovers.push(format!(
                "record {}: {e} (delete it from {})",
                record.file_name(),
                host.state.path().display()
            ));
        }
    }
    leftovers
}

/// Remove an endpoint's links and record, each step even when one before failed; returns a
/// line per thing left behind. A link is taken only when it is still the endpoint's (its name
/// and, for the guest end, its MAC), and removed by the index found for it.
pub(super) fn remove_endpoint_parts(
    host: &crate::host::Host,
    netlink: &mut Netlink,
    endpoint: &Endpoint,
    record: Option<&Record>,
) -> Vec<String> {
    let mut leftovers = Vec::new();
    let mut remove = |name: &str, check_mac: Option<MacAddr>| {
        let result = netlink.link_by_name(name).and_then(|link| match link {
            Some(link) if check_mac.is_none_or(|mac| link.mac == Some(mac.0)) => {
                netlink.delete_link(link.index, name)
            }
            _ => Ok(()),
        });
        if let Err(e) = result {
            leftovers.push(format!(
                "link {name} in the host namespace: {e} (remove it: ip link del {name})"
            ));
        }
    };
    if let Some(host_end) = &endpoint.host_end {
        // Deleting the veth's host end takes the guest end along, wherever it is.
        remove(host_end, None);
    }
    // The guest end while still (or again, after the container stopped) in the host namespace;
    // in a container's namespace it dies with it.
    remove(&endpoint.link_name, Some(endpoint.mac));
    if endpoint.dhcp {
        // The record stays with its lease, for the next endpoint of the same MAC (Docker makes
        // a new endpoint at every restart); DeleteNetwork or the lease's end removes it.
        return leftovers;
    }
    let record = match record {
        Some(record) => Ok(Some(record.clone())),
        None => host.state.load(&endpoint.record),
    };
    let removed = record.and_then(|r| match r {
        Some(r) => {
            // Its name in DNS (`[dns_update]`) goes with it: the daemon, which serves this
            // request, queues the removal.
            crate::daemon::dns::take_back(host, &r);
            host.state.remove(&r)
        }
        None => Ok(()),
    });
    match removed {
        Ok(()) => {}
        Err(e) => leftovers.push(format!(
            "record {}: {e} (delete it from {})",
            endpoint.record,
            host.state.path().display()
        )),
    }
    leftovers
}

fn delete_endpoint(plugin: &Plugin, request: EndpointOnly) -> Result<Value> {
    check_id("network", &request.network_id)?;
    check_id("endpoint", &request.endpoint_id)?;
    let mut store = plugin.store.lock().unwrap_or_else(|e| e.into_inner());
    // Unknown: already deleted (idempotent).
    let Some(endpoint) = store.endpoints.get_mut(&request.endpoint_id) else {
        return Ok(json!({}));
    };
    // Answered now; the links go on the reaper's thread (Docker is waiting on this answer to
    // finish a container's stop, and nothing it does next needs them gone). Marked on disk
    // first, so that a daemon that dies before the reaper is done finishes it at its start.
    if !endpoint.deleting {
        endpoint.deleting = true;
        if let Err(e) = store.save() {
            if let Some(endpoint) = store.endpoints.get_mut(&request.endpoint_id) {
                endpoint.deleting = false;
            }
            return Err(e);
        }
    }
    let endpoint = store.endpoints[&request.endpoint_id].clone();
    drop(store);
    plugin.reaper.queue(endpoint);
    Ok(json!({}))
}

fn join(plugin: &Plugin, request: Join) -> Result<Value> {
    check_id("network", &request.network_id)?;
    check_id("endpoint", &request.endpoint_id)?;
    if request.sandbox_key.is_empty() {
        return Err(Error::usage("Join: SandboxKey is empty"));
    }
    let mut store = plugin.store.lock().unwrap_or_else(|e| e.into_inner());
    let network = store.networks.get(&request.network_id).cloned().ok_or_else(|| {
        Error::not_found(format!("network {} is not one of lanyard's", request.network_id))
    })?;
    let endpoint = store.endpoints.get_mut(&request.endpoint_id).ok_or_else(|| {
        Error::not_found(format!(
            "endpoint {} was never created by lanyard (CreateEndpoint first)",
            request.endpoint_id
        ))
    })?;
    let mut netlink = Netlink::open(&plugin.host.netns, "the host namespace")?;
    let link = netlink.link_by_name(&endpoint.link_name)?;
    if link.is_none_or(|l| l.mac != Some(endpoint.mac.0)) {
        return Err(Error::not_found(format!(
            "endpoint {}: its link {} is not in the host namespace (removed by hand?): remove \
             the container and run it again",
            endpoint.id, endpoint.link_name
        )));
    }
    let (src_name, mac, endpoint_id) =
        (endpoint.link_name.clone(), endpoint.mac, endpoint.id.clone());
    let lease_gateway = match endpoint.dhcp {
        true => crate::daemon::store::load(plugin.host.state.path(), &endpoint.record)?
            .and_then(|stored| stored.lease)
            .and_then(|lease| lease.gateway()),
        false => None,
    };
    let sandbox_key = endpoint.dhcp.then(|| request.sandbox_key.clone());
    // Written at once: the daemon's reaching threads read the namespace from disk to renew a
    // DHCP lease there, and `lanyard detach` (another process) reads `joined` to refuse taking
    // an interface out of a running container.
    if !endpoint.joined || endpoint.sandbox_key != sandbox_key {
        endpoint.joined = true;
        endpoint.sandbox_key = sandbox_key;
        store.save()?;
    }
    if network.slaac {
        enable_slaac_after_move(&plugin.host, &request.sandbox_key, mac, &endpoint_id)?;
    }
    let mut answer = json!({
        "InterfaceName": { "SrcName": src_name, "DstPrefix": "eth" },
        // Without it Docker adds docker_gwbridge and a second interface with the default route.
        "DisableGatewayService": true,
    });
    if let Some(gateway) = lease_gateway.map(IpAddr::V4).or(network.gateway(false)) {
        answer["Gateway"] = json!(gateway.to_string());
    }
    if let Some(gateway) = network.gateway(true) {
        answer["GatewayIPv6"] = json!(gateway.to_string());
    }
    Ok(answer)
}

/// How long an endpoint of a `-o slaac=true` network waits for Docker to bring its link up
/// in the container (Docker 20.10 does it in runc's prestart hook, soon after Join answers).
const SLAAC_MOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// `-o slaac=true`: router advertisements accepted and addresses autoconfigured on the
/// endpoint's link, with the same sysctls as `lanyard attach --slaac` ([`crate::sysctl`]).
/// They cannot be written before Join answers: Docker moves the link into the container only
/// after it, and the kernel gives an interface that changes namespace a fresh IPv6
/// configuration (the new namespace's defaults, where Docker 20.10 has disabled IPv6). Docker
/// 20.10 does not even have the container's namespace at Join: its SandboxKey file is made
/// (bound to the namespace runc created) just before the links are moved in. So a thread of its
/// own, woken by link notifications (subscribed before Join answers, so no change is missed):
/// first from the host namespace until the SandboxKey opens as a namespace (it does before the
/// link leaves the host namespace, which notifies), then from the container's namespace until
/// the link (found by its MAC: Docker renames it) is up, which Docker does after renaming and
/// addressing it. Then it writes the sysctls there; IPv6 starts (router solicitation, EUI-64
/// address from the MAC) when `disable_ipv6` turns 0.
fn enable_slaac_after_move(
    host: &crate::host::Host,
    sandbox_key: &str,
    mac: MacAddr,
    endpoint_id: &str,
) -> Result<()> {
    let what = format!("SLAAC on endpoint {endpoint_id} in {sandbox_key}");
    let mut host_watch = LinkWatch::open(&host.netns).map_err(|e| e.context(what.clone()))?;
    let sandbox = std::path::PathBuf::from(sandbox_key);
    let thread_what = what.clone();
    let mut wait_and_enable = move || -> Result<()> {
        let deadline = Instant::now() + SLAAC_MOVE_TIMEOUT;
        let timed_out = |waited_for: &str| {
            Error::new(
                crate::error::ErrorKind::Timeout,
                format!(
                    "{waited_for} within {} s (the container did not start?)",
                    SLAAC_MOVE_TIMEOUT.as_secs()
                ),
            )
        };
        let netns = loop {
            if let Ok(netns) = Netns::open(&sandbox) {
                break netns;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(timed_out("Docker made no namespace at the SandboxKey"));
            }
            host_watch.wait_any(deadline - now);
        };
        let mut watch = LinkWatch::open(&netns)?;
        let mut netlink = Netlink::open(&netns, "the container's namespace")?;
        loop {
            let links = netlink.links()?;
            if let Some(link) = links.into_iter().find(|l| l.mac == Some(mac.0) && l.up) {
                let name = link.name;
                return netns.run(move || crate::sysctl::enable_ipv6(&name, true));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(timed_out(&format!(
                    "Docker did not bring the link of MAC {mac} up in the container"
                )));
            }
            watch.wait_any(deadline - now);
        }
    };
    let spawned = std::thread::Builder::new().name("docker-plugin-slaac".into()).spawn(move || {
        if let Err(e) = wait_and_enable() {
            crate::logging::daemon_event(format_args!("docker plugin: {thread_what}: {e}"));
        }
    });
    spawned
        .map(|_| ())
        .with_context(crate::error::ErrorKind::Io, || format!("{what}: start its thread"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dhcp_client_id_follows_the_recorded_lease_then_the_endpoint_name_then_the_mac() {
        let (mac1, mac2): (MacAddr, MacAddr) =
            ("02:00:c6:12:00:01".parse().unwrap(), "02:00:c6:12:00:02".parse().unwrap());
        let id = |network: &str, mac, name, recorded| {
            dhcp_client_id("host-a", network, mac, name, recorded)
        };
        // Docker 29's random MAC changes at every start; the name does not.
        let web = id("net1", mac1, Some("web"), None);
        assert_eq!(id("net1", mac2, Some("web"), None), web, "the same name, another MAC");
        assert_ne!(id("net1", mac1, Some("db"), None), web, "another name");
        assert_ne!(id("net2", mac1, Some("web"), None), web, "another network");
        assert_ne!(dhcp_client_id("host-b", "net1", mac1, Some("web"), None), web, "another host");
        // A fixed MAC keeps the client id it was recorded with, whatever the name now.
        assert_eq!(id("net1", mac1, Some("db"), Some(web.as_str())), web);
        // Docker before 29 names nothing: the MAC is the identity.
        assert_eq!(id("net1", mac1, None, None), "docker-02:00:c6:12:00:01");
        assert!(web.len() <= 255 && web.is_ascii(), "{web}");
    }
}
