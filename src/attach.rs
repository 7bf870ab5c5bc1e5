//! attach: validate everything, then wire the guest; on any failure undo what was done, so a
//! guest is never left half-wired.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::announce::Announcement;
use crate::driver::{driver_for, Driver, LinkRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::guest::{self, Guest, GuestSpec};
use crate::host::Host;
use crate::netlink::{DefaultRoute, LinkKind, Netlink};
use crate::netns::Netns;
use crate::routes;
use crate::spec::{AddressSpec, MacAddr, MacScheme, MacvlanMode, RouteSpec};
use crate::state::{DhcpSettings, DriverKind, Index, Record, RECORD_VERSION};
use crate::{naming, spec, sysctl};

/// The guest interface name when `-i` is not given, as pipework does.
pub const DEFAULT_GUEST_IFNAME: &str = "eth1";

/// Where a test can make attach fail on purpose, to prove the rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// Inside the driver's setup, after its first change.
    InDriverSetup(crate::driver::SetupFailure),
    AfterLink,
    AfterAddresses,
    AfterRoutes,
    AfterRecord,
}

#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// Bridge, macvlan parent, or (with `host_only`) the new host end's name.
    pub host_interface: String,
    pub guest: GuestSpec,
    pub guest_ifname: String,
    /// `-l`: the veth's host end name instead of a derived one.
    pub host_ifname: Option<String>,
    pub host_only: bool,
    pub host_addresses: Vec<IpNet>,
    pub addresses: Vec<AddressSpec>,
    pub routes: Vec<RouteSpec>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub mac_scheme: MacScheme,
    pub macvlan_mode: MacvlanMode,
    pub no_create: bool,
    /// `--probe`: check that no one uses the addresses first, waiting this long for an answer.
    pub probe: Option<Duration>,
    /// `dhcp`: the daemon acquires and keeps a DHCPv4 lease for this interface.
    pub dhcp: Option<DhcpSettings>,
    /// With `dhcp`: how long attach waits for the lease, or whether it returns at once.
    pub dhcp_wait: DhcpWait,
    pub fail_at: Option<FailPoint>,
    /// Test hook: the rollback's link deletion fails (the link really stays), to prove that an
    /// incomplete rollback is reported.
    #[doc(hidden)]
    pub fail_undo: bool,
}

/// How a DHCP attach waits for its lease (`--timeout`, `--no-wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpWait {
    /// Give up, and undo the attach, when no lease arrives within this time.
    pub timeout: Duration,
    /// `false`: hand the interface to the daemon and return without waiting.
    pub wait: bool,
}

impl Default for DhcpWait {
    fn default() -> Self {
        DhcpWait { timeout: Duration::from_secs(10), wait: true }
    }
}

impl AttachRequest {
    pub fn new(host_interface: &str, guest: GuestSpec) -> AttachRequest {
        AttachRequest {
            host_interface: host_interface.to_string(),
            guest,
            guest_ifname: DEFAULT_GUEST_IFNAME.to_string(),
            host_ifname: None,
            host_only: false,
            host_addresses: Vec::new(),
            addresses: Vec::new(),
            routes: Vec::new(),
            mtu: None,
            mac: None,
            mac_scheme: MacScheme::default(),
            macvlan_mode: MacvlanMode::default(),
            no_create: false,
            probe: None,
            dhcp: None,
            dhcp_wait: DhcpWait::default(),
            fail_at: None,
            fail_undo: false,
        }
    }

    /// Checks that need no kernel: names, MTU, gateways, routes.
    pub fn validate(&self) -> Result<()> {
        spec::validate_ifname(&self.guest_ifname, "guest interface name")?;
        if let Some(name) = &self.host_ifname {
            spec::validate_ifname(name, "host interface name")?;
        }
        spec::validate_ifname(&self.host_interface, "host interface")?;
        if self.host_interface == "lo" {
            return Err(Error::usage(
                "lo is the loopback interface: give a bridge or a physical interface",
            ));
        }
        if self.host_only && self.host_ifname.is_some() {
            return Err(Error::usage("--host-only names the host end itself; drop -l"));
        }
        if !self.host_only && !self.host_addresses.is_empty() {
            return Err(Error::usage("--host-address needs --host-only"));
        }
        let has_ipv6 = self.addresses.iter().any(|a| a.address.addr().is_ipv6());
        if let Some(mtu) = self.mtu {
            spec::validate_mtu(mtu, has_ipv6)?;
        }
        if let Some(mac) = &self.mac {
            if mac.is_multicast() {
                return Err(Error::usage(format!(
                    "--mac {mac}: a multicast MAC cannot be an interface's"
                )));
            }
        }
        spec::validate_routes(&self.routes, &self.addresses)?;
        Ok(())
    }
}

/// What an attach made: the record, and what to announce once the port forwards.
#[derive(Debug)]
pub struct Attached {
    pub record: Record,
    pub announcement: Announcement,
    /// A path to the guest namespace another process can open (for the announce helper).
    pub guest_netns_path: PathBuf,
    /// With `dhcp`: the daemon's view of the lease (`Address` is absent with `wait: false`).
    pub lease: Option<serde_json::Value>,
}

/// Undo steps, run in reverse on failure.
enum Undo {
    DeleteHostLink(String),
    DeleteGuestLink(String),
    RemoveBridgeIfUnused(String),
    RestoreDefaultRoutes { replaced: Vec<DefaultRoute>, own_ifindex: u32 },
    RemoveRecord(Box<Record>),
}

struct Rollback<'a> {
    host: &'a Host,
    steps: Vec<Undo>,
    /// Test hook: link deletions fail instead of running.
    fail_link_deletion: bool,
}

impl Rollback<'_> {
    /// Run every step, even after one fails, and return a line for each thing left behind: which
    /// object, why, and what to do about it.
    fn run(self, host_netlink: &mut Netlink, guest_netlink: &mut Netlink) -> Vec<String> {
        let injected = || Err(Error::new(ErrorKind::Injected, "link deletion failure injected"));
        let mut leftovers = Vec::new();
        for step in self.steps.into_iter().rev() {
            let (result, object, remedy) = match step {
                Undo::DeleteHostLink(name) => (
                    if self.fail_link_deletion {
                        injected()
                    } else {
                        host_netlink.delete_link_by_name(&name)
                    },
                    format!("link {name} in the host namespace"),
                    format!("remove it: ip link del {name}"),
                ),
                Undo::DeleteGuestLink(name) => (
                    if self.fail_link_deletion {
                        injected()
                    } else {
                        guest_netlink.delete_link_by_name(&name)
                    },
                    format!("link {name} in the guest"),
                    format!("remove it inside the guest: ip link del {name}"),
                ),
                Undo::RemoveBridgeIfUnused(name) => (
                    crate::driver::remove_bridge_if_unused(host_netlink, &name).map(|_| ()),
                    format!("bridge {name}, created by this attach"),
                    format!("remove it if nothing uses it: ip link del {name}"),
                ),
                Undo::RestoreDefaultRoutes { replaced, own_ifindex } => (
                    routes::restore_default_routes(guest_netlink, &replaced, Some(own_ifindex))
                        .map(|_| ()),
                    "the guest's previous default route".to_string(),
                    format!(
                        "put it back by hand: {}",
                        replaced
                            .iter()
                            .map(|r| format!(
                                "{} via {} dev {}",
                                if r.ipv6 { "::/0" } else { "0.0.0.0/0" },
                                r.gateway.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
                                r.device.as_deref().unwrap_or("?")
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Undo::RemoveRecord(record) => (
                    self.host.state.remove(&record),
                    format!("record {}", record.file_name()),
                    format!("delete it from {}", self.host.state.path().display()),
                ),
            };
            if let Err(e) = result {
                leftovers.push(format!("{object}: {e} ({remedy})"));
            }
        }
        leftovers
    }
}

fn check_fail(request: &AttachRequest, point: FailPoint) -> Result<()> {
    if request.fail_at == Some(point) {
        return Err(Error::new(ErrorKind::Injected, format!("failure injected {point:?}")));
    }
    Ok(())
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Put the guest on the LAN. Returns once the link, addresses, routes and record exist, and with
/// `dhcp` once the lanyard daemon holds the lease (or, with `dhcp_wait.wait` off, has taken the
/// interface over); when no lease comes, the attach is undone. The caller sends the
/// announcement of static addresses (in-process with [`crate::ready::announce_when_ready`], or
/// from a detached helper as the CLI does).
pub fn attach(host: &Host, request: &AttachRequest) -> Result<Attached> {
    request.validate()?;
    let guest = guest::resolve(&request.guest, || host.docker())?;
    let label = guest.reference.display();
    let mut attached =
        attach_guest(host, request, guest).map_err(|e| e.context(format!("attach {label}")))?;
    if attached.record.dhcp.is_some() {
        match crate::lease::acquire(host, &attached.record, request.dhcp_wait) {
            Ok(view) => attached.lease = Some(view),
            Err(e) => {
                // Nothing half-wired stays behind: the link without a lease goes too.
                let leftovers = crate::detach::undo_attachment(host, &attached.record);
                return Err(e.with_leftovers(&leftovers).context(format!("attach {label}")));
            }
        }
    }
    Ok(attached)
}

fn attach_guest(host: &Host, request: &AttachRequest, guest: Guest) -> Result<Attached> {
    if guest.netns.id() == host.netns.id() {
        return Err(Error::conflict(format!(
            "{} shares the host's network namespace (a --net host container or a host process): \
             attaching it would rewire the host itself",
            guest.reference.display()
        )));
    }
    let lock = host.state.lock()?;
    let mut host_netlink = Netlink::open(&host.netns, "the host namespace")?;
    let mut guest_netlink =
        Netlink::open(&guest.netns, format!("guest {}", guest.reference.display()))?;

    // A record of this guest's interface, found by the guest's identity (two guests never
    // share one): live means attached already; stale (the guest's namespace was replaced, as
    // when a container restarts) is cleaned up and replaced. Only this slot's own files are
    // read, not every record.
    for record in host.state.slot_records(&guest.reference, &request.guest_ifname)? {
        if record.netns == guest.netns.id() {
            return Err(Error::conflict(format!(
                "{} already has {} from lanyard: detach it first",
                guest.reference.display(),
                record.guest_ifname
            )));
        }
        remove_stale(host, &mut host_netlink, &record)?;
    }
    // MACs and host names stay unique among all records through the index, which answers
    // without reading every record.
    let index = host.state.index(&lock)?;
    // All wire() needs of the other records: a recorded port of this bridge, if lanyard made it.
    let others: Vec<Record> =
        index.created_bridge_port(&request.host_interface)?.into_iter().collect();

    // Validate against the kernel before changing anything.
    if guest_netlink.link_by_name(&request.guest_ifname)?.is_some() {
        return Err(Error::conflict(format!(
            "interface {} already exists in {}: pick another name with -i",
            request.guest_ifname,
            guest.reference.display()
        )));
    }
    let driver_kind = choose_driver(&mut host_netlink, request)?;
    let driver = driver_for(driver_kind);
    let identity = guest.reference.identity();
    let host_ifname = match driver_kind {
        DriverKind::Bridge => Some(match &request.host_ifname {
            Some(name) => name.clone(),
            None => free_host_ifname(host, &mut host_netlink, &index, &identity, request)?,
        }),
        DriverKind::HostOnly => Some(request.host_interface.clone()),
        DriverKind::Macvlan => None,
    };
    let bridge_index = match driver_kind {
        DriverKind::Bridge => host_netlink.link_by_name(&request.host_interface)?.map(|l| l.index),
        _ => None,
    };
    let mac = match request.mac {
        Some(mac) => mac,
        None => choose_mac(host, &mut host_netlink, &index, bridge_index, &identity, request)?,
    };
    let host_mac = host_end_mac(&host.host_id, &identity, &request.guest_ifname);
    let link_request = LinkRequest {
        host_interface: &request.host_interface,
        host_ifname: host_ifname.as_deref(),
        guest_ifname: &request.guest_ifname,
        guest_mac: mac.0,
        host_mac,
        guest_mtu: request.mtu,
        macvlan_mode: request.macvlan_mode,
        no_create: request.no_create,
        host_addresses: &request.host_addresses,
        fail_in_setup: match request.fail_at {
            Some(FailPoint::InDriverSetup(how)) => Some(how),
            _ => None,
        },
    };
    let plan = driver.validate(&mut host_netlink, &link_request)?;
    let has_ipv6 = request.addresses.iter().any(|a| a.address.addr().is_ipv6());
    spec::validate_mtu(plan.guest_mtu, has_ipv6)?;

    // Change things, remembering how to undo each.
    let mut rollback = Rollback { host, steps: Vec::new(), fail_link_deletion: request.fail_undo };
    let result = wire(
        host,
        request,
        &guest,
        driver.as_ref(),
        &link_request,
        &plan,
        &mut host_netlink,
        &mut guest_netlink,
        &mut rollback,
        mac,
        &others,
    );
    match result {
        Ok(attached) => Ok(attached),
        Err(e) => {
            let leftovers = rollback.run(&mut host_netlink, &mut guest_netlink);
            Err(e.with_leftovers(&leftovers))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn wire(
    host: &Host,
    request: &AttachRequest,
    guest: &Guest,
    driver: &dyn Driver,
    link_request: &LinkRequest,
    plan: &crate::driver::LinkPlan,
    host_netlink: &mut Netlink,
    guest_netlink: &mut Netlink,
    rollback: &mut Rollback,
    mac: MacAddr,
    others: &[Record],
) -> Result<Attached> {
    let created = driver.setup(host_netlink, &guest.netns, link_request, plan)?;
    if created.created_bridge {
        rollback.steps.push(Undo::RemoveBridgeIfUnused(request.host_interface.clone()));
    }
    match &created.host_link {
        Some(name) => rollback.steps.push(Undo::DeleteHostLink(name.clone())),
        None => rollback.steps.push(Undo::DeleteGuestLink(request.guest_ifname.clone())),
    }
    check_fail(request, FailPoint::AfterLink)?;

    let link = guest_netlink.link_by_name(&request.guest_ifname)?.ok_or_else(|| {
        Error::not_found(format!("{} vanished from the guest after creation", request.guest_ifname))
    })?;
    let has_ipv6 = request.addresses.iter().any(|a| a.address.addr().is_ipv6());
    let slaac = request.dhcp.as_ref().is_some_and(|d| d.slaac);
    // Written inside the guest (sysctls are per namespace), on lanyard's own interface only.
    // Docker sets disable_ipv6=1 for all/default in --net none containers: enabled here only
    // when IPv6 is asked for. Either way no router advertisement is accepted unless --slaac
    // asks for it, so an IPv4-only interface never picks up a stray RA's addresses or route.
    let ifname = request.guest_ifname.clone();
    guest.netns.run(move || {
        if has_ipv6 || slaac {
            sysctl::enable_ipv6(&ifname, slaac)
        } else {
            sysctl::ignore_router_advertisements(&ifname)
        }
    })?;
    // Up only now: IPv6 starts (router solicitation, link-local) with the settings above.
    if !link.up {
        guest_netlink.set_up(link.index, &request.guest_ifname)?;
    }
    if let Some(wait) = request.probe {
        probe_addresses(&guest.netns, link.index, mac, &request.addresses, wait)?;
    }
    for address in &request.addresses {
        guest_netlink.add_address(link.index, &request.guest_ifname, &address.address)?;
    }
    check_fail(request, FailPoint::AfterAddresses)?;

    let subnets: Vec<IpNet> = request.addresses.iter().map(|a| a.address).collect();
    let mut replaced = Vec::new();
    for ipv6 in [false, true] {
        let Some(gateway) = request
            .addresses
            .iter()
            .filter(|a| a.address.addr().is_ipv6() == ipv6)
            .find_map(|a| a.gateway)
        else {
            continue;
        };
        let previous = guest_netlink
            .default_routes(ipv6)?
            .into_iter()
            .filter(|r| r.device_index != Some(link.index))
            .collect::<Vec<_>>();
        rollback.steps.push(Undo::RestoreDefaultRoutes {
            replaced: previous.clone(),
            own_ifindex: link.index,
        });
        replaced.extend(routes::take_over_default_route(
            guest_netlink,
            gateway,
            link.index,
            &subnets,
        )?);
    }
    for route in &request.routes {
        routes::add_gateway_route(
            guest_netlink,
            route.destination,
            route.gateway,
            link.index,
            &subnets,
            false,
        )?;
    }
    check_fail(request, FailPoint::AfterRoutes)?;

    let record = Record {
        version: RECORD_VERSION,
        guest: guest.reference.clone(),
        netns: guest.netns.id(),
        guest_ifname: request.guest_ifname.clone(),
        driver: driver.kind(),
        host_interface: request.host_interface.clone(),
        host_ifname: if driver.kind() == DriverKind::Bridge {
            created.host_link.clone()
        } else {
            None
        },
        // A bridge lanyard made stays lanyard's while any of its ports is recorded, so the last
        // port to leave removes it, whichever attach created it.
        created_bridge: created.created_bridge
            || others.iter().any(|r| {
                r.created_bridge
                    && r.driver == DriverKind::Bridge
                    && r.host_interface == request.host_interface
            }),
        macvlan_mode: (driver.kind() == DriverKind::Macvlan).then_some(request.macvlan_mode),
        mac,
        mac_scheme: if request.mac.is_some() { MacScheme::default() } else { request.mac_scheme },
        mtu: plan.guest_mtu,
        addresses: request.addresses.clone(),
        routes: request.routes.clone(),
        host_addresses: request.host_addresses.clone(),
        replaced_default_routes: replaced,
        attached_at: now_unix(),
        dhcp: request.dhcp.clone().map(|mut settings| {
            let identity = guest.reference.identity();
            if settings.client_id.is_empty() {
                settings.client_id =
                    naming::client_id(&host.host_id, &identity, &request.guest_ifname);
            }
            if settings.hostname.is_none() {
                settings.hostname = match &guest.reference {
                    crate::state::GuestRef::Container { name, .. }
                    | crate::state::GuestRef::Netns { name } => naming::default_dhcp_hostname(name),
                    _ => None,
                };
            }
            settings
        }),
    };
    host.state.save(&record)?;
    rollback.steps.push(Undo::RemoveRecord(Box::new(record.clone())));
    check_fail(request, FailPoint::AfterRecord)?;

    let announcement = crate::ready::announcement_for(&record, link.index);
    Ok(Attached { record, announcement, guest_netns_path: guest.netns_path(), lease: None })
}

/// Which driver a request needs, from what the host interface is.
fn choose_driver(host: &mut Netlink, request: &AttachRequest) -> Result<DriverKind> {
    if request.host_only {
        return Ok(DriverKind::HostOnly);
    }
    if request.host_interface.starts_with("ovs") {
        return Err(Error::unsupported(format!(
            "Open vSwitch bridge {} (lanyard drives Linux bridges and macvlan)",
            request.host_interface
        )));
    }
    match host.link_by_name(&request.host_interface)? {
        Some(link) if link.kind == LinkKind::Bridge => Ok(DriverKind::Bridge),
        Some(link) if link.kind == LinkKind::Loopback => Err(Error::usage(format!(
            "{} is the loopback interface: give a bridge or a physical interface",
            link.name
        ))),
        Some(_) => Ok(DriverKind::Macvlan),
        None if request.host_interface.starts_with("br") => Ok(DriverKind::Bridge),
        None => Err(Error::not_found(format!(
            "host interface {} does not exist (only names starting with br are created, as bridges)",
            request.host_interface
        ))),
    }
}

fn free_host_ifname(
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

fn choose_mac(
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

fn random_pair() -> Result<[u8; 2]> {
    let mut bytes = [0u8; 2];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::new(ErrorKind::Io, format!("get random bytes for a network-wrapper MAC: {e}"))
    })?;
    Ok(bytes)
}

/// The veth's host end gets a stable MAC starting with 0xfe: a Linux bridge without a MAC of
/// its own takes its ports' lowest MAC, so a high one never changes the bridge's address (the
/// trick libvirt uses for its tap devices).
fn host_end_mac(host_id: &str, identity: &str, guest_ifname: &str) -> [u8; 6] {
    let mut mac = naming::stable_mac(host_id, &format!("host-end:{identity}"), guest_ifname, 0).0;
    mac[0] = 0xfe;
    mac
}

fn probe_addresses(
    guest: &Netns,
    index: u32,
    mac: MacAddr,
    addresses: &[AddressSpec],
    wait: Duration,
) -> Result<()> {
    let addresses = addresses.to_vec();
    guest.run(move || {
        // Frames sent before the link settles are lost; wait for our own link to be up.
        let mut netlink = Netlink::open_here("the guest")?;
        let mut watch = crate::netlink::LinkWatch::open_here()?;
        watch.wait_for(&mut netlink, index, "guest link up", Duration::from_secs(2), |l| {
            l.oper_up
        })?;
        for address in &addresses {
            let owner = match address.address.addr() {
                IpAddr::V4(v4) => crate::announce::probe_ipv4(index, mac.0, v4, wait)?,
                IpAddr::V6(v6) => crate::announce::probe_ipv6(index, mac.0, v6, wait)?,
            };
            if let Some(owner) = owner {
                return Err(Error::conflict(format!(
                    "address {} is already in use on the segment by {}",
                    address.address.addr(),
                    MacAddr(owner)
                )));
            }
        }
        Ok(())
    })
}

/// Remove what a stale record (its guest's namespace was replaced) left on the host side.
fn remove_stale(host: &Host, netlink: &mut Netlink, record: &Record) -> Result<()> {
    let driver = driver_for(record.driver);
    driver.teardown(netlink, None, record)?;
    host.state.remove(record)
}
