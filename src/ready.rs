//! After attach: wait until frames from the guest reach the LAN, then announce its addresses.
//! A frame sent the instant a veth comes up is often dropped (the bridge port is not forwarding
//! yet), so the wait is on netlink notifications, bounded, never a sleep.

use std::path::Path;
use std::time::Duration;

use crate::announce::{send_announcements_repeated, Announcement};
use crate::driver::driver_for;
use crate::error::{Error, Result};
use crate::netlink::{LinkWatch, Netlink};
use crate::netns::Netns;
use crate::state::Record;

/// How long to wait for the port to forward before giving up on announcing.
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// Announcement rounds and their spacing: a second round covers a frame lost anyway.
pub const ROUNDS: u32 = 2;
pub const ROUND_INTERVAL: Duration = Duration::from_millis(200);

/// Wait for the host side and the guest link, then send the announcement. Blocking.
pub fn announce_when_ready(
    host: &Netns,
    guest: &Netns,
    record: &Record,
    announcement: &Announcement,
    rounds: u32,
) -> Result<()> {
    if announcement.ipv4.is_empty() && announcement.ipv6.is_empty() {
        return Ok(());
    }
    let mut host_netlink = Netlink::open(host, "the host namespace")?;
    let mut watch = LinkWatch::open(host)?;
    driver_for(record.driver).wait_host_ready(
        &mut host_netlink,
        &mut watch,
        record,
        READY_TIMEOUT,
    )?;
    guest.run(|| {
        let mut netlink = Netlink::open_here("the guest")?;
        let mut watch = LinkWatch::open_here()?;
        watch.wait_for(
            &mut netlink,
            announcement.ifindex,
            &format!("{} up in the guest", announcement.ifname),
            READY_TIMEOUT,
            |link| link.oper_up,
        )?;
        send_announcements_repeated(announcement, rounds, ROUND_INTERVAL)
    })
}

/// How the detached helper's work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    Sent,
    /// A detach (or a re-attach) overtook the announcement: the record, the guest's namespace
    /// or the link is no longer the one to announce. A normal end: nothing to log.
    Overtaken,
}

/// The detached helper's work: the CLI spawns `lanyard announce-helper` so that the ~8 ms close
/// of a packet socket (and ~16 ms exit of a process holding one) stay off the command's path.
/// The helper runs in the CLI's namespace, which is the host.
pub fn announce_from_record(
    state_dir: &Path,
    record_file: &str,
    guest_netns: &Path,
) -> Result<Announced> {
    let state = crate::state::StateDir::open(state_dir)?;
    let Some(record) = state.load(record_file)? else { return Ok(Announced::Overtaken) };
    let result = announce_record(&record, guest_netns);
    match result {
        Ok(()) => Ok(Announced::Sent),
        // Whatever failed, a record that is gone or was replaced meanwhile explains it.
        Err(_) if still_attached(&state, record_file, &record) != Some(true) => {
            Ok(Announced::Overtaken)
        }
        Err(e) => Err(e),
    }
}

/// Is `record` still the recorded attachment, with its guest link present? `None` when that
/// cannot be told.
fn still_attached(
    state: &crate::state::StateDir,
    record_file: &str,
    record: &Record,
) -> Option<bool> {
    // A detach holds the state lock from deleting the link to removing the record: taking it
    // here waits for one in progress, so a half-done detach is never mistaken for a failure.
    let _lock = state.lock().ok()?;
    let current = state.load(record_file).ok()?;
    let Some(current) = current else { return Some(false) };
    if current.netns != record.netns || current.attached_at != record.attached_at {
        return Some(false);
    }
    Some(true)
}

fn announce_record(record: &Record, guest_netns: &Path) -> Result<()> {
    let host = Netns::current()?;
    let guest = Netns::open(guest_netns)?;
    if guest.id() != record.netns {
        return Err(Error::conflict("the guest's namespace changed before it could be announced"));
    }
    let ifindex = {
        let mut netlink = Netlink::open(&guest, "the guest")?;
        netlink
            .link_by_name(&record.guest_ifname)?
            .ok_or_else(|| Error::not_found(format!("{} vanished", record.guest_ifname)))?
            .index
    };
    let announcement = announcement_for(record, ifindex);
    announce_when_ready(&host, &guest, record, &announcement, ROUNDS)
}

pub fn announcement_for(record: &Record, ifindex: u32) -> Announcement {
    let mut announcement = Announcement {
        ifindex,
        ifname: record.guest_ifname.clone(),
        mac: record.mac.0,
        ipv4: Vec::new(),
        ipv6: Vec::new(),
    };
    for address in &record.addresses {
        match address.address.addr() {
            std::net::IpAddr::V4(v4) => announcement.ipv4.push(v4),
            std::net::IpAddr::V6(v6) => announcement.ipv6.push(v6),
        }
    }
    announcement
}
