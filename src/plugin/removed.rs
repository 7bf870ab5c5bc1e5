//! Leases of containers removed for good. Docker tells IPAM nothing about containers, and
//! ReleaseAddress comes at every stop (the same MAC may come back), so the lease of a DHCP
//! network's MAC is kept after its endpoint goes. The daemon's Docker watcher (never a plugin
//! handler) notes at each start which MACs a container has on lanyard DHCP networks, and when
//! Docker destroys the container (or, at a reconcile, no longer has it) releases each such lease
//! that no other noted container has and no endpoint uses.

use std::collections::BTreeMap;

use super::store::{DhcpContainers, Membership, Store};
use crate::error::Result;
use crate::host::Host;
use crate::netlink::Netlink;
use crate::spec::MacAddr;
use crate::state::Record;

/// How long the DHCPRELEASE's link waits for the daemon to take it (the lease is still valid:
/// the daemon confirms it and then releases it).
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Note container `id`'s MACs on lanyard DHCP networks from `network_macs` (network ID -> MAC,
/// as `docker inspect` shows them); written only when the note changes.
pub fn note_container(
    host: &Host,
    note: &mut DhcpContainers,
    id: &str,
    network_macs: &BTreeMap<String, String>,
) -> Result<()> {
    let store = Store::load(host.state.path())?;
    let mut memberships: Vec<Membership> = network_macs
        .iter()
        .filter(|(network, _)| {
            store.networks.get(*network).is_some_and(|n| n.dhcp_marker.is_some())
        })
        .filter_map(|(network, mac)| {
            Some(Membership { network: network.clone(), mac: mac.parse::<MacAddr>().ok()? })
        })
        .collect();
    memberships.sort_by(|a, b| (&a.network, a.mac.0).cmp(&(&b.network, b.mac.0)));
    if note.containers.get(id).map_or(memberships.is_empty(), |noted| *noted == memberships) {
        return Ok(());
    }
    if memberships.is_empty() {
        note.containers.remove(id);
    } else {
        note.containers.insert(id.to_string(), memberships);
    }
    note.save()
}

/// Container `id` is gone: forget it, and release the leases of its MACs that no other noted
/// container has. Returns a line per lease released, and a line per failure. A lease not
/// released stays noted under `id`, so the next reconcile (which finds `id` gone) tries it
/// again: forgetting it would leave its record, and the daemon renewing the lease, for good.
pub fn container_removed(
    host: &Host,
    note: &mut DhcpContainers,
    id: &str,
) -> (Vec<String>, Vec<String>) {
    let (mut released, mut failed) = (Vec::new(), Vec::new());
    let Some(memberships) = note.containers.remove(id) else { return (released, failed) };
    let mut kept = Vec::new();
    for membership in memberships {
        if note.containers.values().flatten().any(|other| *other == membership) {
            continue;
        }
        match release_unused(host, &membership) {
            Ok(Some(record)) => released.push(format!(
                "{record}: lease released (container {} removed)",
                &id[..id.len().min(12)]
            )),
            Ok(None) => {}
            Err(e) => {
                failed.push(format!(
                    "the lease of MAC {} on network {}: not released (tried again at the \
                     daemon's next reconcile): {e}",
                    membership.mac, membership.network
                ));
                kept.push(membership);
            }
        }
    }
    if !kept.is_empty() {
        note.containers.insert(id.to_string(), kept);
    }
    if let Err(e) = note.save() {
        failed.push(format!("note of container {id}'s DHCP leases: {e}"));
    }
    (released, failed)
}

/// Release the lease of `membership` and remove its record, unless something uses it: an
/// endpoint (a container running, or starting, with that MAC) or its link in the host
/// namespace (a new container's RequestAddress made it). Under the state lock, which
/// RequestAddress takes to make the link: a new container either made it before (and it is
/// kept) or makes it after (and takes a new lease for the same client id). Returns the record
/// released.
fn release_unused(host: &Host, membership: &Membership) -> Result<Option<String>> {
    let (guest, link_name) = super::network::dhcp_guest(&membership.network, membership.mac);
    let file = Record::file_name_for(&guest, &link_name);
    // The container's DeleteEndpoint was answered before its links went (see reaper): its
    // endpoint is not "in use" once they are gone. Before the lock, which the reaper takes.
    super::reaper::drain(super::reaper::DRAIN_WAIT);
    let _lock = host.state.lock()?;
    let Some(record) = host.state.load(&file)? else { return Ok(None) };
    let store = Store::load(host.state.path())?;
    if store.endpoints.values().any(|endpoint| endpoint.record == file && !endpoint.deleting) {
        return Ok(None);
    }
    let mut netlink = Netlink::open(&host.netns, "the host namespace")?;
    if netlink.link_by_name(&link_name)?.is_some() {
        return Ok(None);
    }
    // The container's link went with its endpoint: a link with its MAC, made again for a
    // moment, carries the DHCPRELEASE (without one the daemon only forgets the lease, and the
    // server keeps the address for the MAC until the lease ends).
    let mut leftovers = Vec::new();
    let link = match store.networks.get(&membership.network) {
        Some(network) => super::network::make_link(
            host,
            &mut netlink,
            network,
            &guest,
            membership.mac,
            Vec::new(),
            record.dhcp.clone(),
        )
        .and_then(|link| {
            let up = netlink.link_by_name(&link.guest_ifname).and_then(|found| match found {
                Some(found) => netlink.set_up(found.index, &link.guest_ifname),
                None => Ok(()),
            });
            match up {
                Ok(()) => Ok(link),
                Err(e) => {
                    leftovers.extend(super::network::remove_links(&mut netlink, &link));
                    Err(e)
                }
            }
        }),
        None => Err(crate::error::Error::not_found("its network is gone")),
    };
    let mut warnings = Vec::new();
    match &link {
        Ok(_) => {
            let wait = crate::attach::DhcpWait { timeout: RELEASE_TIMEOUT, wait: true };
            if let Err(e) = crate::lease::acquire(host, &record, None, wait) {
                warnings.push(format!("no DHCPRELEASE sent: {e}"));
            }
        }
        Err(e) => warnings.push(format!("no DHCPRELEASE sent: {e}")),
    }
    let released = crate::lease::release(host, &record);
    if let Ok(link) = &link {
        leftovers.extend(super::network::remove_links(&mut netlink, link));
    }
    let removed = released.and_then(|()| host.state.remove(&record));
    for warning in warnings {
        crate::logging::daemon_event(format_args!("{file}: {warning}"));
    }
    match removed {
        Ok(()) if leftovers.is_empty() => Ok(Some(file)),
        Ok(()) => Err(crate::error::Error::new(
            crate::error::ErrorKind::Kernel,
            format!("remove the link that carried the DHCPRELEASE of {file}"),
        )
        .with_leftovers(&leftovers)),
        Err(e) => Err(e.with_leftovers(&leftovers)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::Netns;

    #[test]
    fn a_lease_not_released_stays_noted_for_the_next_reconcile() {
        let dir = std::env::temp_dir().join(format!("lanyard-removed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let host = Host::new(Netns::current().unwrap(), &dir, "test").unwrap();
        let (failing, fine) = (
            Membership { network: "a".repeat(64), mac: MacAddr([2, 0, 0, 0, 0, 1]) },
            Membership { network: "a".repeat(64), mac: MacAddr([2, 0, 0, 0, 0, 2]) },
        );
        // The lease record of the first MAC cannot be read: its release fails before any link
        // is made. The second has no record: nothing to release.
        let (guest, link_name) = super::super::network::dhcp_guest(&failing.network, failing.mac);
        std::fs::write(dir.join(Record::file_name_for(&guest, &link_name)), b"{ damaged").unwrap();
        let mut note = DhcpContainers::load(&dir).unwrap();
        note.containers.insert("c1".into(), vec![failing.clone(), fine]);
        note.save().unwrap();

        let (released, failed) = container_removed(&host, &mut note, "c1");
        let saved = DhcpContainers::load(&dir).map(|saved| saved.containers);
        // Removed before any assertion, so a failing run leaves nothing behind either.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(released.is_empty(), "{released:?}");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("02:00:00:00:00:01") && failed[0].contains("next reconcile"));
        let expected = [("c1".to_string(), vec![failing])].into_iter().collect();
        assert_eq!(note.containers, expected);
        assert_eq!(saved.unwrap(), expected, "saved");
    }
}
