//! attach: validate everything, then wire the guest; on any failure undo what was done, so a
//! guest is never left half-wired. This file decides (request, validation against the kernel,
//! the plan); `identity` picks names and MACs, `wire` makes the changes, `rollback` undoes them.

mod identity;
mod rollback;
mod wire;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::announce::Announcement;
use crate::driver::{driver_for, LinkRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::guest::{self, Guest, GuestSpec};
use crate::host::Host;
use crate::netlink::{LinkKind, Netlink};
use crate::spec::{self, AddressSpec, MacAddr, MacScheme, MacvlanMode, RouteSpec};
use crate::state::{DhcpSettings, DriverKind, Record};
pub(crate) use identity::host_end_mac;
use identity::{check_given_mac, choose_mac, free_host_ifname};
use rollback::Rollback;
use wire::{wire, Plan, Sockets};

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
    /// Set by the daemon's watcher: the container declaration this interface comes from. A live
    /// attachment with the same declaration is left as it is (the attach reports `unchanged`);
    /// one with another declaration is replaced; one a person made is never taken over.
    pub declared: Option<crate::state::Declared>,
    /// `--host-route` (macvlan only): give the host a route to each static address through a
    /// macvlan shim on the same parent (see [`crate::host_routes`]). With `dhcp` it is only
    /// recorded: the daemon adds the route when the lease binds.
    pub host_route: bool,
    /// `--dns-name` / `--no-dns-update`: recorded for the daemon's DNS updates.
    pub dns: crate::state::DnsChoice,
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
            declared: None,
            host_route: false,
            dns: Default::default(),
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
    /// A declared attach found the same declaration already wired: nothing was changed.
    pub unchanged: bool,
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
    let guest_pid = guest.pid;
    let mut attached =
        attach_guest(host, request, guest).map_err(|e| e.context(format!("attach {label}")))?;
    if attached.record.dhcp.is_some() && !attached.unchanged {
        match crate::lease::acquire(host, &attached.record, guest_pid, request.dhcp_wait) {
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
    // when a container restarts) is cleaned up and replaced. Live takes the same namespace AND
    // the recorded interface with its MAC in it: the kernel reuses a freed namespace's inode
    // number, so a restarted container's new namespace can carry the old one's identity. Only
    // this slot's own files are read, not every record.
    for record in host.state.slot_records(&guest.reference, &request.guest_ifname)? {
        let live = record.netns == guest.netns.id()
            && guest_netlink
                .link_by_name(&record.guest_ifname)?
                .is_some_and(|link| link.mac == Some(record.mac.0));
        if !live {
            remove_stale(host, &mut host_netlink, &record)?;
            continue;
        }
        match (&request.declared, &record.declared) {
            (Some(wanted), Some(made)) if wanted == made => {
                return Ok(Attached {
                    announcement: Announcement {
                        ifindex: 0,
                        ifname: record.guest_ifname.clone(),
                        mac: record.mac.0,
                        ipv4: Vec::new(),
                        ipv6: Vec::new(),
                    },
                    guest_netns_path: guest.netns_path(),
                    lease: None,
                    unchanged: true,
                    record,
                })
            }
            // The declaration changed: its old wiring goes, the new one is made below.
            (Some(_), Some(_)) => {
                crate::detach::detach_locked(host, &lock, &mut host_netlink, &record)?
            }
            _ => {
                return Err(Error::conflict(format!(
                    "{} already has {} from lanyard: detach it first",
                    guest.reference.display(),
                    record.guest_ifname
                )))
            }
        }
    }
    // MACs and host names stay unique among all records through the index, which answers
    // without reading every record.
    let index = host.state.index(&lock)?;
    // A recorded port of this bridge whose record says lanyard created the bridge.
    let bridge_is_lanyards = index.created_bridge_port(&request.host_interface)?.is_some_and(|r| {
        r.created_bridge
            && r.driver == DriverKind::Bridge
            && r.host_interface == request.host_interface
    });

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
    if request.host_route {
        check_host_routes(&mut host_netlink, request, driver_kind)?;
    }
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
        Some(mac) => {
            check_given_mac(&mut host_netlink, &index, bridge_index, &request.host_interface, mac)?;
            mac
        }
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

    let wiring = Plan {
        host,
        request,
        guest: &guest,
        driver: driver.as_ref(),
        link: link_request,
        link_plan: plan,
        mac,
        bridge_is_lanyards,
    };
    let mut sockets = Sockets { host: host_netlink, guest: guest_netlink };

    // Change things, remembering how to undo each.
    let mut rollback = Rollback { host, steps: Vec::new(), fail_link_deletion: request.fail_undo };
    wire(&wiring, &mut sockets, &mut rollback).map_err(|e| {
        let leftovers = rollback.run(&mut sockets.host, &mut sockets.guest);
        e.with_leftovers(&leftovers)
    })
}

/// The driver `request` would get on `host` now (bridge, macvlan or host-only), from what its
/// host interface is: the daemon asks it to give host routes to macvlan declarations only.
pub fn driver_for_request(host: &Host, request: &AttachRequest) -> Result<DriverKind> {
    choose_driver(&mut Netlink::open(&host.netns, "the host namespace")?, request)
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

/// `--host-route`, checked before anything changes: only on a macvlan in bridge mode (the shim
/// reaches its sibling guests only through the parent's internal bridge), and the host needs
/// its own address on the parent in each static address's subnet.
fn check_host_routes(
    host: &mut Netlink,
    request: &AttachRequest,
    driver: DriverKind,
) -> Result<()> {
    if driver != DriverKind::Macvlan {
        return Err(Error::usage(format!(
            "--host-route is for a macvlan parent, and {} makes a {driver} attachment: the host \
             reaches a bridge's ports through an address of the bridge itself (give it one in \
             the guests' subnet) and a host-only link directly; drop --host-route",
            request.host_interface
        )));
    }
    if request.macvlan_mode != MacvlanMode::Bridge {
        return Err(Error::usage(format!(
            "--host-route needs --macvlan-mode bridge (not {}): the host's shim reaches the \
             guest only through the parent's internal bridge",
            request.macvlan_mode
        )));
    }
    for address in &request.addresses {
        crate::host_routes::check(host, &request.host_interface, address.address.addr())?;
    }
    Ok(())
}

/// Remove what a stale record (its guest's namespace was replaced) left on the host side.
fn remove_stale(host: &Host, netlink: &mut Netlink, record: &Record) -> Result<()> {
    crate::host_routes::remove_recorded(host, netlink, record)?;
    let driver = driver_for(record.driver);
    driver.teardown(netlink, None, record)?;
    host.state.remove(record)
}
