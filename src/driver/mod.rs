//! The ways a guest reaches the LAN, one file each behind the same trait: a veth whose host end
//! joins a Linux bridge, a macvlan child of a physical interface, or a point-to-point veth.

mod bridge;
pub use bridge::remove_bridge_if_unused;
mod host_only;
mod macvlan;

pub use bridge::BridgeDriver;
pub use host_only::HostOnlyDriver;
pub use macvlan::MacvlanDriver;

use std::time::Duration;

use ipnet::IpNet;

use crate::error::{Error, ErrorKind, Result};
use crate::netlink::{LinkWatch, Netlink};
use crate::netns::Netns;
use crate::spec::MacvlanMode;
use crate::state::{DriverKind, Record};

/// What the driver needs to know to make the link.
pub struct LinkRequest<'a> {
    /// The bridge, the macvlan parent, or (host-only) the host end's name.
    pub host_interface: &'a str,
    /// The veth's host end (bridge) — derived or given with `-l`.
    pub host_ifname: Option<&'a str>,
    pub guest_ifname: &'a str,
    pub guest_mac: [u8; 6],
    pub host_mac: [u8; 6],
    /// `--mtu`; `None` takes the host interface's MTU.
    pub guest_mtu: Option<u32>,
    pub macvlan_mode: MacvlanMode,
    /// Refuse to create a missing `br*` bridge.
    pub no_create: bool,
    /// Host-only: addresses for the host end.
    pub host_addresses: &'a [IpNet],
    /// Tests only: make setup fail after its first change (see [`SetupFailure`]).
    pub fail_in_setup: Option<SetupFailure>,
}

/// How a test makes a driver's setup fail after its first change (a bridge it created, a
/// host-only veth), to prove that setup undoes that change, or names what it could not undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupFailure {
    /// The undo runs as it would after a real failure.
    UndoWorks,
    /// The undo fails too, so the change is left behind and must be reported.
    UndoFails,
}

/// The injected failure, if the request asks for one at this point.
fn injected_failure(request: &LinkRequest, driver: &str) -> Result<()> {
    match request.fail_in_setup {
        Some(_) => Err(Error::new(
            ErrorKind::Injected,
            format!("failure injected inside the {driver} driver's setup"),
        )),
        None => Ok(()),
    }
}

/// Undo one change of a failed setup. An undo that fails becomes a line saying which object was
/// left and how to remove it, for [`Error::with_leftovers`]: a half-made link is never silent.
fn undo(
    request: &LinkRequest,
    object: &str,
    remedy: &str,
    leftovers: &mut Vec<String>,
    step: impl FnOnce() -> Result<()>,
) {
    let result = match request.fail_in_setup {
        Some(SetupFailure::UndoFails) => {
            Err(Error::new(ErrorKind::Injected, "undo failure injected"))
        }
        _ => step(),
    };
    if let Err(e) = result {
        leftovers.push(format!("{object}: {e} ({remedy})"));
    }
}

/// The host side as validated: nothing was changed to find this out.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    /// Index of the bridge or macvlan parent (None when the bridge is still to be created).
    pub host_interface_index: Option<u32>,
    /// MTU of the host interface: the guest's default and its upper bound.
    pub host_mtu: u32,
    pub guest_mtu: u32,
    pub create_bridge: bool,
}

/// What setup made, for rollback and for the record.
#[derive(Debug, Clone, Default)]
pub struct CreatedLink {
    pub created_bridge: bool,
    /// The veth host end, whose deletion also removes the guest end.
    pub host_link: Option<String>,
}

pub trait Driver {
    fn kind(&self) -> DriverKind;

    /// Check the host side against the kernel; change nothing.
    fn validate(&self, host: &mut Netlink, request: &LinkRequest) -> Result<LinkPlan>;

    /// Make the link; afterwards `guest_ifname` exists inside the guest, down: the caller writes
    /// its sysctls and then brings it up, so no router advertisement is accepted in between. On
    /// error, whatever this call made is already removed (or the error names what is left).
    /// `guest` may be the host's own namespace: the Docker plugin ([`crate::plugin`]) makes the
    /// guest end there, and Docker moves it into the container.
    fn setup(
        &self,
        host: &mut Netlink,
        guest: &Netns,
        request: &LinkRequest,
        plan: &LinkPlan,
    ) -> Result<CreatedLink>;

    /// Remove what setup made. Idempotent: what is already gone counts as removed. `guest` is
    /// `None` when the guest namespace no longer exists (its links died with it).
    fn teardown(
        &self,
        host: &mut Netlink,
        guest: Option<&mut Netlink>,
        record: &Record,
    ) -> Result<()>;

    /// Wait (bounded, by notification) until frames from the guest reach the LAN: the bridge
    /// port forwards, or the macvlan parent has carrier.
    fn wait_host_ready(
        &self,
        host: &mut Netlink,
        watch: &mut LinkWatch,
        record: &Record,
        timeout: Duration,
    ) -> Result<()>;
}

/// The driver for a record or a request.
pub fn driver_for(kind: DriverKind) -> Box<dyn Driver + Send + Sync> {
    match kind {
        DriverKind::Bridge => Box::new(BridgeDriver),
        DriverKind::Macvlan => Box::new(MacvlanDriver),
        DriverKind::HostOnly => Box::new(HostOnlyDriver),
    }
}

/// The guest MTU from `--mtu` and the host interface's MTU.
pub(crate) fn guest_mtu(request: &LinkRequest, host_mtu: u32) -> Result<u32> {
    match request.guest_mtu {
        None => Ok(host_mtu),
        Some(mtu) if mtu > host_mtu => Err(Error::usage(format!(
            "--mtu {mtu} exceeds the MTU of {} ({host_mtu}); lanyard never changes the host \
             interface's MTU",
            request.host_interface
        ))),
        Some(mtu) => Ok(mtu),
    }
}
