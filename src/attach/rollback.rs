//! The undo log of an attach: each change is recorded as it is made and undone in reverse when
//! a later step fails. Every step runs even after one fails; whatever could not be undone is
//! named, with what to do about it, in the error the user sees.

use std::net::IpAddr;

use crate::error::{Error, ErrorKind};
use crate::host::Host;
use crate::netlink::{DefaultRoute, Netlink};
use crate::routes;
use crate::state::Record;

/// Undo steps, run in reverse on failure.
pub(super) enum Undo {
    DeleteHostLink(String),
    DeleteGuestLink(String),
    RemoveBridgeIfUnused(String),
    RestoreDefaultRoutes {
        replaced: Vec<DefaultRoute>,
        own_ifindex: u32,
    },
    /// The host's route to a guest address through its macvlan shim (and the shim once unused).
    RemoveHostRoute {
        parent: String,
        address: IpAddr,
    },
    RemoveRecord(Box<Record>),
}

pub(super) struct Rollback<'a> {
    pub(super) host: &'a Host,
    pub(super) steps: Vec<Undo>,
    /// Test hook: link deletions fail instead of running.
    pub(super) fail_link_deletion: bool,
}

impl Rollback<'_> {
    /// Run every step, even after one fails, and return a line for each thing left behind: which
    /// object, why, and what to do about it.
    pub(super) fn run(
        self,
        host_netlink: &mut Netlink,
        guest_netlink: &mut Netlink,
    ) -> Vec<String> {
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
                Undo::RemoveHostRoute { parent, address } => (
                    crate::host_routes::remove_with(self.host, host_netlink, &parent, address),
                    format!("the host's route to {address} through the shim on {parent}"),
                    crate::host_routes::remedy(&parent, address),
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
