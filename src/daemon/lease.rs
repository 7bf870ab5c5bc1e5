//! The lease lifecycle: starting, resuming and driving each lease's sans-IO client, following
//! its guest's life (exit, deleted namespace, link flaps) and forgetting it when it ends. No
//! event-loop mechanics here: the loop (mod.rs) calls these when a descriptor or a timer fires.
//! Nothing here waits: guests are reached and addresses probed by [`super::reach`], lease files
//! written by [`store::Writer`]; their results come back as events.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::dhcp::{Action, Client, ClientConfig, Destination, Event};
use crate::error::{Error, ErrorKind, Result};
use crate::netlink::{Ipv6AddressSeen, LinkChanges};
use crate::netns::Netns;
use crate::state::{GuestRef, Record};

use super::guest_config::{configure, deconfigure, restore_routes, same_configuration};
use super::reach::{Done, ReachJob};
use super::requests::{lease_view, reply};
use super::store::{self, AfterWrite, StoredLease};
use super::{log, Daemon, Live, Pending, Reaching, Response, Slot, Waiter, RETRY_INTERVAL};

/// The key of a new client's xid generator, from the kernel's random pool. There is no
/// fallback: a predictable xid lets any host on the LAN forge replies (RFC 2131 §7), so a client
/// that cannot get one is not started. getrandom(2) needs no descriptor, so running out of them
/// cannot make this fail.
pub(super) fn random_seed() -> Result<u64> {
    getrandom::u64().map_err(|e| {
        Error::with_source(
            ErrorKind::Io,
            "get a random DHCP transaction-id key from the kernel (getrandom); refusing to start \
             a DHCP client with a predictable one",
            e,
        )
    })
}

/// The client id sent as option 61: type 0 ("not a hardware type", RFC 2132 §9.14) and the
/// stable text lanyard recorded at attach.
pub(super) fn client_id_bytes(text: &str) -> Vec<u8> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// `lanyard_updates_dns`: lanyard registers the name itself, so the server is asked not to.
pub(super) fn client_config(
    record: &Record,
    requested: Option<Ipv4Addr>,
    lanyard_updates_dns: bool,
) -> ClientConfig {
    let settings = record.dhcp.clone().unwrap_or_default();
    let mut config = ClientConfig::new(record.mac.0, client_id_bytes(&settings.client_id));
    config.server_must_not_update_dns = lanyard_updates_dns;
    match settings.hostname {
        Some(name) if settings.fqdn || name.contains('.') => config.fqdn = Some(name),
        Some(name) => config.hostname = Some(name),
        None => {}
    }
    config.requested_address = requested;
    config.probe = settings.probe;
    config.max_message_size = record.mtu.clamp(576, 65535) as u16;
    config
}

/// What the daemon last knew of a lease's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LinkKnown {
    pub(super) running: bool,
    pub(super) carrier_down_count: Option<u32>,
}

impl LinkKnown {
    pub(super) fn new(running: bool, carrier_down_count: Option<u32>) -> LinkKnown {
        LinkKnown { running, carrier_down_count }
    }
}

/// The link transitions for the client (true: up, false: down), in order, from what the link
/// notifications say about link `ifindex`; `known` is updated to the link's state now.
///
/// Every transition counts, not just the last state: a down and an up read in one wake-up are
/// a flap (the cable was out, perhaps moved to another network), and the client must hear both
/// to verify its lease with INIT-REBOOT. A carrier loss the kernel folded into a notification
/// that shows the link running is found by its counter. When notifications were lost, a link
/// running before and after is taken to have flapped: a needless verification costs one
/// exchange, a missed one can keep a lease from another network (a link seen coming up is
/// verified by that already).
pub(super) fn link_transitions(
    known: &mut LinkKnown,
    ifindex: u32,
    changes: &LinkChanges,
) -> Vec<bool> {
    let mut transitions = Vec::new();
    for seen in changes.seen.iter().filter(|seen| seen.index == ifindex) {
        // The counter only grows; a notice queued before the daemon's own read of the link can
        // carry a smaller one, which is old news, not a loss.
        let lost_carrier = match (known.carrier_down_count, seen.carrier_down_count) {
            (Some(before), Some(now)) => now > before,
            _ => false,
        };
        if lost_carrier && known.running && seen.running {
            transitions.extend([false, true]);
        } else if seen.running != known.running {
            transitions.push(seen.running);
        }
        known.running = seen.running;
        known.carrier_down_count = known.carrier_down_count.max(seen.carrier_down_count);
    }
    if changes.overflowed && known.running && transitions.is_empty() {
        transitions.extend([false, true]);
    }
    transitions
}

/// Bring `known`, the SLAAC addresses of link `ifindex`, up to date with the IPv6 address
/// states `seen` (oldest first); from `reread_from` on, `seen` is a fresh read of every address
/// (what it does not show is gone). True when `known` changed.
pub(super) fn slaac_changes(
    known: &mut BTreeSet<Ipv6Addr>,
    ifindex: u32,
    seen: &[Ipv6AddressSeen],
    reread_from: Option<usize>,
) -> bool {
    let before = known.clone();
    for (position, seen) in seen.iter().enumerate() {
        if reread_from == Some(position) {
            known.clear();
        }
        if seen.index != ifindex {
            continue;
        }
        if seen.autoconfigured {
            known.insert(seen.address);
        } else {
            known.remove(&seen.address);
        }
    }
    if reread_from.is_some_and(|from| from >= seen.len()) {
        known.clear();
    }
    *known != before
}

impl Daemon {
    /// The DHCP client of a stored lease. With the guest alive and a lease held, it goes on
    /// where the lease's times say (renewing, rebinding); otherwise, or when the lease cannot
    /// be resumed (expired, a clock gone backwards), a new client asks for the last address
    /// (INIT-REBOOT). One place, for the daemon's start, a guest reached again, and acquire.
    pub(super) fn client_for(
        &self,
        record: &Record,
        stored: &StoredLease,
        alive: bool,
    ) -> Result<Client> {
        let config = client_config(record, stored.last_address, self.lanyard_updates_dns(record));
        let seed = random_seed()?;
        match &stored.lease {
            Some(lease) if alive => Client::resume(config.clone(), lease.clone(), self.now(), seed)
                .or_else(|_| Client::new(config, seed)),
            _ => Client::new(config, seed),
        }
    }

    /// Reload every persisted lease. Each guest is reached off the loop; one still alive keeps
    /// its address and its client goes on where the lease's times say (renewing, rebinding, or
    /// INIT-REBOOT when unclear); one that cannot be reached is tried again until its lease ends.
    pub(super) fn resume_all(&mut self) {
        let stored = match store::load_all(&self.state_dir) {
            Ok(stored) => stored,
            Err(e) => {
                log(format_args!("cannot reload leases: {e}"));
                return;
            }
        };
        for stored in stored {
            let record = match self.load_record(&stored.record) {
                Some(record) => record,
                None => {
                    log(format_args!(
                        "lease {} has no record any more: forgetting it",
                        stored.record
                    ));
                    self.writer.remove(&stored.record, Vec::new());
                    continue;
                }
            };
            if record.dhcp.is_none() {
                // The record was replaced by a static attachment of the same guest and name.
                log(format_args!(
                    "lease {} belongs to an older attachment: forgetting it",
                    stored.record
                ));
                self.writer.remove(&stored.record, Vec::new());
                continue;
            }
            // Replaced by the client for a live guest once it is reached.
            let client = match self.client_for(&record, &stored, false) {
                Ok(client) => client,
                Err(e) => {
                    log(format_args!("lease {}: {e}", stored.record));
                    continue;
                }
            };
            let key = stored.record.clone();
            let slot = Slot {
                record,
                client,
                live: None,
                stored,
                waiters: Vec::new(),
                reaching: None,
                probing: None,
                resolving: None,
                retry_at: None,
                forget_at: None,
                applied: true,
            };
            self.slots.insert(key.clone(), slot);
            self.reach(&key, None, None, false);
        }
    }

    /// When a stored lease ends, on the loop's monotonic clock: now when there is none or it has
    /// ended, `None` for an infinite lease (kept until detach).
    pub(super) fn lease_end(&self, stored: &StoredLease) -> Option<Duration> {
        let now = self.epoch.elapsed();
        let Some(lease) = &stored.lease else { return Some(now) };
        let end_ms = lease.expires_unix_ms()?;
        let now_ms = crate::attach::now_unix().saturating_mul(1000);
        Some(now + Duration::from_millis(end_ms.saturating_sub(now_ms)))
    }

    /// Start reaching the guest of slot `key` off the loop; its lease is REACHING until
    /// [`Daemon::reached`] hears back. `acquire`: the request waiting for the answer.
    pub(super) fn reach(
        &mut self,
        key: &str,
        pid: Option<u32>,
        acquire: Option<Pending>,
        retried: bool,
    ) {
        self.attempts += 1;
        let attempt = self.attempts;
        let Some(slot) = self.slots.get_mut(key) else { return };
        slot.reaching = Some(Reaching { attempt, acquire, retried, release: None });
        slot.retry_at = None;
        let job = ReachJob { key: key.to_string(), attempt, record: slot.record.clone(), pid };
        self.reacher.reach(job);
    }

    /// Try again to reach a guest that could not be reached.
    pub(super) fn reconnect(&mut self, key: &str) {
        self.reach(key, None, None, true);
    }

    /// What a reaching thread or a probe found.
    pub(super) fn finished(&mut self, done: Done) {
        match done {
            Done::Reached { key, attempt, result } => self.reached(&key, attempt, result),
            Done::Probed { key, attempt, in_use } => {
                let Some(slot) = self.slots.get_mut(&key) else { return };
                if slot.probing != Some(attempt) || slot.live.is_none() {
                    return;
                }
                slot.probing = None;
                self.drive(&key, Event::ProbeResult { in_use });
            }
            Done::ResolvWritten { key, attempt, result } => {
                let Some(slot) = self.slots.get_mut(&key) else { return };
                if slot.resolving != Some(attempt) {
                    return;
                }
                slot.resolving = None;
                let response = match result {
                    Ok(()) => {
                        slot.applied = true;
                        Response::ok(lease_view(slot))
                    }
                    Err(e) => {
                        let address = slot.stored.lease.as_ref().map(|lease| lease.address);
                        let address = address.map_or_else(String::new, |a| format!(" {a}"));
                        log(format_args!("{key}: configure{address}: {e}"));
                        // The CLI waiting for this lease hears why; the next ACK tries again.
                        Response::error(&e.context(format!("configure the lease{address}")))
                    }
                };
                let after = answers_after_write(slot, &response);
                self.writer.save(&slot.stored, after);
            }
        }
    }

    /// A guest reached (or not). A result for a slot replaced or forgotten meanwhile is
    /// dropped, and with it the sockets it opened.
    fn reached(&mut self, key: &str, attempt: u64, result: Result<Live>) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        if slot.reaching.as_ref().map(|r| r.attempt) != Some(attempt) {
            return;
        }
        let Some(mut reaching) = slot.reaching.take() else { return };
        let release = reaching.release.take();
        self.reached_as(key, reaching, result);
        if let Some(stream) = release {
            self.release(key, stream);
        }
    }

    /// Carry out a reaching job's result: the lease resumed (and an acquire answered), or a
    /// retry planned (or the acquire refused with the reason).
    fn reached_as(&mut self, key: &str, reaching: Reaching, result: Result<Live>) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        let live = match result {
            Ok(live) => live,
            Err(e) => {
                if let Some(acquire) = reaching.acquire {
                    // Nothing was taken over: the request hears why.
                    self.slots.remove(key);
                    reply(acquire.stream, &Response::error(&e));
                    return;
                }
                if !reaching.retried {
                    // Not reachable is not dead: a guest that died while the daemon was down
                    // took its links along, and one that is only unreachable (Docker
                    // restarting) must keep them. Try again until the lease would have ended.
                    log(format_args!(
                        "{key}: {e}; trying again every {} s until its lease ends",
                        RETRY_INTERVAL.as_secs()
                    ));
                }
                let stored = slot.stored.clone();
                let forget_at = self.lease_end(&stored);
                let Some(slot) = self.slots.get_mut(key) else { return };
                slot.forget_at = slot.forget_at.or(forget_at);
                slot.retry_at = Some(self.epoch.elapsed() + RETRY_INTERVAL);
                return;
            }
        };
        let (record, stored) = (slot.record.clone(), slot.stored.clone());
        match self.client_for(&record, &stored, true) {
            Ok(client) => {
                if let Some(slot) = self.slots.get_mut(key) {
                    slot.client = client;
                }
            }
            Err(e) => log(format_args!("{key}: keeping the previous DHCP client: {e}")),
        }
        let Some(slot) = self.slots.get_mut(key) else { return };
        slot.live = Some(live);
        slot.retry_at = None;
        slot.forget_at = None;
        if reaching.retried {
            log(format_args!("{key}: guest reachable again; resuming its lease"));
        }
        self.watch_live(key);
        self.drive(key, Event::Start);
        let Some(acquire) = reaching.acquire else { return };
        let Some(slot) = self.slots.get_mut(key) else {
            reply(acquire.stream, &Response::error(&Error::not_found("the guest went away")));
            return;
        };
        // The lease file exists before the request hears of it; a lease that failed to be
        // saved is not taken over.
        let mut after = Vec::new();
        if !acquire.wait || slot.stored.lease.is_some() {
            let response = Response::ok(lease_view(slot));
            after.push(AfterWrite { stream: acquire.stream, response, fail_on_error: true });
        } else {
            let deadline = self.epoch.elapsed() + Duration::from_millis(acquire.timeout_ms);
            slot.waiters.push(Waiter { stream: acquire.stream, deadline });
        }
        self.writer.save(&slot.stored, after);
    }

    pub(super) fn load_record(&self, file: &str) -> Option<Record> {
        self.host.state.load(file).ok().flatten()
    }

    pub(super) fn link_changed(&mut self, key: &str) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        let docker_endpoint = matches!(slot.record.guest, GuestRef::DockerEndpoint { .. });
        let Some(live) = slot.live.as_mut() else { return };
        let changes = match live.link_watch.link_changes() {
            Ok(changes) => changes,
            Err(e) => {
                log(format_args!("{key}: link notifications: {e}"));
                return;
            }
        };
        // A Docker plugin endpoint's link leaves the namespace when Docker moves it (into the
        // container after Join, back to the host when it stops): a move, not a loss. The lease
        // goes on from wherever the link is now, reached again at once (off the loop).
        let moved = docker_endpoint
            && changes.seen.iter().any(|seen| {
                seen.index == live.ifindex && !seen.running && seen.carrier_down_count.is_none()
            });
        if moved {
            log(format_args!("{key}: its link left the namespace; following it"));
            if let Some(live) = self.slots.get_mut(key).and_then(|slot| slot.live.take()) {
                self.close_live(live);
            }
            self.reconnect(key);
            return;
        }
        let mut link = LinkKnown { running: live.link_up, carrier_down_count: live.carrier_downs };
        let transitions = link_transitions(&mut link, live.ifindex, &changes);
        live.link_up = link.running;
        live.carrier_downs = link.carrier_down_count;
        if changes.overflowed {
            log(format_args!("{key}: link notifications were lost; re-read the link"));
        }
        let slaac = slaac_changes(
            &mut live.slaac,
            live.ifindex,
            &changes.ipv6_addresses,
            changes.ipv6_reread_from,
        );
        if slaac {
            let addresses: Vec<String> = live.slaac.iter().map(|a| a.to_string()).collect();
            log(format_args!("{key}: SLAAC addresses now [{}]", addresses.join(" ")));
            // The name carries them with the lease's address (nothing while no lease is held).
            self.dns_lease_bound(key);
        }
        for up in transitions {
            log(format_args!("{key}: link {}", if up { "up" } else { "down" }));
            self.drive(key, if up { Event::LinkUp } else { Event::LinkDown });
        }
    }

    pub(super) fn receive(&mut self, key: &str) {
        let payloads = match self.slots.get_mut(key).and_then(|s| s.live.as_mut()) {
            Some(live) => live.socket.receive(),
            None => return,
        };
        for payload in payloads {
            self.drive(key, Event::Packet(&payload));
        }
    }

    /// Feed an event to a lease's client and carry out what it asks.
    pub(super) fn drive(&mut self, key: &str, event: Event<'_>) {
        let now = self.now();
        let Some(slot) = self.slots.get_mut(key) else { return };
        let actions = slot.client.handle(event, now);
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let Some(slot) = self.slots.get_mut(key) else { return };
            match action {
                Action::Send { packet, destination } => {
                    let Some(live) = &slot.live else { continue };
                    let sent = match destination {
                        Destination::Broadcast => live.socket.send_broadcast(&packet),
                        Destination::Unicast(server) => live
                            .socket
                            .send_unicast(server, &packet)
                            .or_else(|_| live.socket.send_broadcast(&packet)),
                    };
                    if let Err(e) = sent {
                        log(format_args!("{key}: send: {e}"));
                    }
                }
                Action::Configure(lease) => {
                    // A renewal that changes nothing but the times needs no netlink work (the
                    // daemon's main cost with a thousand leases): only the new times are saved.
                    let unchanged = slot.applied
                        && slot
                            .stored
                            .lease
                            .as_ref()
                            .is_some_and(|held| same_configuration(held, &lease));
                    let result = if unchanged { Ok(None) } else { configure(slot, &lease) };
                    let previous = slot.stored.lease.as_ref().map(|held| held.address);
                    if !unchanged && result.is_ok() && previous != Some(lease.address) {
                        if let Some(previous) = previous {
                            queue_host_route(&self.reacher, key, &slot.record, previous, false);
                        }
                        queue_host_route(&self.reacher, key, &slot.record, lease.address, true);
                    }
                    // With a resolv.conf still to write, applied once it is written.
                    slot.applied = matches!(result, Ok(None));
                    slot.stored.lease = Some(lease.clone());
                    slot.stored.last_address = Some(lease.address);
                    slot.stored.state = slot.client.state().to_string();
                    let response = match result {
                        Ok(resolv) => {
                            if !unchanged {
                                log(format_args!(
                                    "{key}: bound {}/{} from {}",
                                    lease.address, lease.prefix_len, lease.server_id
                                ));
                            }
                            if let Some(resolv) = resolv {
                                // Those waiting hear of the lease once resolv.conf is written.
                                self.attempts += 1;
                                slot.resolving = Some(self.attempts);
                                self.reacher.write_resolv(key.to_string(), self.attempts, resolv);
                                self.writer.save(&slot.stored, Vec::new());
                                self.dns_lease_bound(key);
                                continue;
                            }
                            Response::ok(lease_view(slot))
                        }
                        Err(e) => {
                            log(format_args!("{key}: configure {}: {e}", lease.address));
                            // The CLI waiting for this lease hears why, not a timeout.
                            let error = e.context(format!("configure the lease {}", lease.address));
                            Response::error(&error)
                        }
                    };
                    // Those waiting hear of the lease once it is on disk.
                    let after = answers_after_write(slot, &response);
                    self.writer.save(&slot.stored, after);
                    self.dns_lease_bound(key);
                }
                Action::Deconfigure { lease, reason } => {
                    log(format_args!("{key}: lost {} ({reason:?})", lease.address));
                    self.dns_gone(key);
                    let Some(slot) = self.slots.get_mut(key) else { return };
                    if let Err(e) = deconfigure(slot, &lease) {
                        log(format_args!("{key}: deconfigure {}: {e}", lease.address));
                    }
                    queue_host_route(&self.reacher, key, &slot.record, lease.address, false);
                    slot.stored.lease = None;
                    slot.stored.state = slot.client.state().to_string();
                    slot.stored.last_loss = Some(format!("{reason:?}"));
                    if slot.live.is_none() {
                        // A dead guest's lease ran out: nothing is left to keep.
                        let record = slot.record.clone();
                        self.forget(key, &record);
                        return;
                    }
                    self.writer.save(&slot.stored, Vec::new());
                }
                Action::Probe(address) => {
                    // Off the loop: the client hears the result as an event, and binds at its
                    // own probe deadline if none comes.
                    let Some(live) = &slot.live else { continue };
                    let netns = match live.netns.try_clone() {
                        Ok(netns) => netns,
                        Err(e) => {
                            log(format_args!("{key}: cannot probe {address}: {e}"));
                            continue;
                        }
                    };
                    self.attempts += 1;
                    slot.probing = Some(self.attempts);
                    let (ifindex, mac) = (live.ifindex, slot.record.mac.0);
                    self.reacher.probe(
                        key.to_string(),
                        self.attempts,
                        netns,
                        ifindex,
                        mac,
                        address,
                    );
                }
            }
        }
        // Pure state changes (BOUND -> RENEWING -> BOUND) are not written: the lease file changes
        // when the lease does; `lanyard leases` asks the daemon for the live state.
        if let Some(slot) = self.slots.get_mut(key) {
            slot.stored.state = slot.client.state().to_string();
        }
    }

    /// Take over a recorded attachment's DHCP. A slot already there (a restarted container
    /// attached again) is replaced, asking for its last address. The guest is reached off the
    /// loop; `pending` hears the answer once it is (or at once, on a refusal).
    pub(super) fn acquire(&mut self, record_file: &str, pid: Option<u32>, pending: Pending) {
        let Some(record) = self.load_record(record_file) else {
            let error = Error::not_found(format!(
                "no record {record_file} in {}",
                self.state_dir.display()
            ));
            return reply(pending.stream, &Response::error(&error));
        };
        // A lease file this lanyard cannot read (damaged, or from a newer lanyard) is reported,
        // never overwritten.
        let stored = match self.slots.get(record_file) {
            Some(slot) => Ok(Some(slot.stored.clone())),
            None => self.writer.load(record_file),
        };
        let mut stored = match stored {
            Ok(stored) => stored.unwrap_or_default(),
            Err(e) => return reply(pending.stream, &Response::error(&e)),
        };
        self.slots.remove(record_file);
        stored.record = record_file.to_string();
        stored.lease = None;
        stored.replaced_default_routes.clear();
        let client = match self.client_for(&record, &stored, true) {
            Ok(client) => client,
            Err(e) => return reply(pending.stream, &Response::error(&e)),
        };
        self.slots.insert(
            record_file.to_string(),
            Slot {
                record,
                client,
                live: None,
                stored,
                waiters: Vec::new(),
                reaching: None,
                probing: None,
                resolving: None,
                retry_at: None,
                forget_at: None,
                applied: true,
            },
        );
        self.reach(record_file, pid, Some(pending), false);
    }

    /// DHCPRELEASE while the interface exists, then forget the lease (detach); `stream` hears
    /// the answer once the lease file is gone.
    pub(super) fn release(&mut self, record_file: &str, stream: std::os::unix::net::UnixStream) {
        if !self.slots.contains_key(record_file) {
            // A lease file this lanyard cannot read (damaged, or a newer lanyard's) is reported
            // and left as it is, never removed unread.
            if let Err(e) = self.writer.load(record_file) {
                return reply(stream, &Response::error(&e));
            }
        }
        if let Some(reaching) = self.slots.get_mut(record_file).and_then(|s| s.reaching.as_mut()) {
            if let Some(earlier) = reaching.release.replace(stream) {
                reply(earlier, &Response::error(&Error::conflict("released again meanwhile")));
            }
            return;
        }
        if self.slots.get(record_file).is_some_and(|slot| slot.live.is_some()) {
            self.drive(record_file, Event::Release);
        }
        self.dns_gone(record_file);
        let restored = match self.slots.remove(record_file) {
            Some(mut slot) => {
                if let Some(held) = &slot.stored.lease {
                    queue_host_route(&self.reacher, record_file, &slot.record, held.address, false);
                }
                let restored = restore_routes(&mut slot);
                // The RELEASE is out. Closing the lease's packet socket waits for the kernel's
                // RCU grace period (~12-15 ms here), which held up the loop and the detach
                // waiting for this answer: the host thread closes it, out of the epoll set first.
                if let Some(live) = slot.live.take() {
                    self.close_live(live);
                }
                restored
            }
            None => Ok(()),
        };
        let response = match restored {
            Ok(()) => Response::ok(serde_json::Value::Null),
            Err(e) => Response::error(&e),
        };
        self.writer.remove(record_file, vec![AfterWrite { stream, response, fail_on_error: true }]);
    }

    /// The guest died: close every socket and namespace handle held there (a socket keeps a
    /// namespace alive), remove the host side of the link, and keep the lease record until the
    /// lease expires (no renewals: there is no interface to renew for).
    pub(super) fn guest_gone(&mut self, key: &str) {
        let forget_at = match self.slots.get(key) {
            Some(slot) => self.lease_end(&slot.stored),
            None => return,
        };
        self.dns_gone(key);
        let Some(slot) = self.slots.get_mut(key) else { return };
        let live = slot.live.take();
        slot.retry_at = None;
        slot.forget_at = forget_at;
        for waiter in slot.waiters.drain(..) {
            reply(waiter.stream, &Response::error(&Error::not_found("the guest went away")));
        }
        // By identity: the index the host end had while this guest lived. Its name may already
        // be the host end of the same guest attached again (a restarted container).
        let host_end = live.as_ref().and_then(|live| live.host_end_index);
        // Nothing behind the address any more: the host's route to it goes now, not at expiry.
        if let Some(held) = slot.stored.lease.as_ref().map(|lease| lease.address) {
            let record = slot.record.clone();
            queue_host_route(&self.reacher, key, &record, held, false);
        }
        if let Some(live) = live {
            self.close_live(live);
        }
        let Some(slot) = self.slots.get_mut(key) else { return };
        if let (Some(index), Some(name)) = (host_end, slot.record.host_ifname.clone()) {
            self.reacher.delete_host_end(key.to_string(), index, name);
        }
        let now = self.epoch.elapsed();
        if forget_at.is_some_and(|at| at <= now) {
            let record = slot.record.clone();
            self.forget(key, &record);
        }
    }

    pub(super) fn netns_removed(&mut self) {
        if let Some(watch) = &self.netns_watch {
            let _ = watch.read_events();
        }
        let gone: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                // Gone, or deleted and made again under the same name: not our guest any more.
                slot.live.as_ref().is_some_and(|live| {
                    live.netns_name.as_ref().is_some_and(|name| {
                        Netns::from_name(name)
                            .map(|now| now.id() != live.netns.id())
                            .unwrap_or(true)
                    })
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            log(format_args!("{key}: its namespace was deleted"));
            self.guest_gone(&key);
        }
    }

    /// Drop a lease and its record: no record outlives its lease.
    pub(super) fn forget(&mut self, key: &str, record: &Record) {
        self.dns_gone(key);
        if let Some(held) = self.slots.get(key).and_then(|slot| slot.stored.lease.as_ref()) {
            queue_host_route(&self.reacher, key, record, held.address, false);
        }
        self.slots.remove(key);
        self.writer.remove(key, Vec::new());
        if let Some(current) = self.load_record(key) {
            if current.netns == record.netns {
                let _ = self.host.state.remove(&current);
            }
        }
    }
}

/// Everyone waiting on the slot gets `response` once its lease file is written.
fn answers_after_write(slot: &mut Slot, response: &Response) -> Vec<AfterWrite> {
    slot.waiters
        .drain(..)
        .map(|waiter| AfterWrite {
            stream: waiter.stream,
            response: response.clone(),
            fail_on_error: false,
        })
        .collect()
}

/// Ask the route thread to add or remove the host's route to `address`, when the record wants
/// host routes (only macvlan guests can). A free function: callers hold a slot mutably.
fn queue_host_route(
    reacher: &super::reach::Reacher,
    key: &str,
    record: &Record,
    address: Ipv4Addr,
    add: bool,
) {
    if record.host_route && record.driver == crate::state::DriverKind::Macvlan {
        reacher.host_route(super::reach::HostRouteChange {
            key: key.to_string(),
            add,
            parent: record.host_interface.clone(),
            address: address.into(),
        });
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;
    use crate::netlink::LinkSeen;

    const IF: u32 = 7;

    fn seen(running: bool, downs: u32) -> LinkSeen {
        LinkSeen { index: IF, running, carrier_down_count: Some(downs) }
    }

    fn changes(seen: &[LinkSeen], overflowed: bool) -> LinkChanges {
        LinkChanges { seen: seen.to_vec(), overflowed, ..LinkChanges::default() }
    }

    fn up_with(downs: u32) -> LinkKnown {
        LinkKnown { running: true, carrier_down_count: Some(downs) }
    }

    #[test]
    fn a_down_and_an_up_read_together_are_both_told() {
        let mut known = up_with(0);
        let flap = changes(&[seen(false, 1), seen(true, 1)], false);
        assert_eq!(link_transitions(&mut known, IF, &flap), [false, true]);
        assert_eq!(known, up_with(1));
    }

    #[test]
    fn a_flap_folded_into_one_notice_is_found_by_the_carrier_counter() {
        let mut known = up_with(3);
        assert_eq!(
            link_transitions(&mut known, IF, &changes(&[seen(true, 4)], false)),
            [false, true]
        );
        assert_eq!(known, up_with(4));
        // Nothing lost: a notice about something else (an MTU, a name) is no flap, nor is an
        // older notice still queued from before the daemon read the link.
        assert!(link_transitions(&mut known, IF, &changes(&[seen(true, 4)], false)).is_empty());
        assert!(link_transitions(&mut known, IF, &changes(&[seen(true, 2)], false)).is_empty());
        assert_eq!(known, up_with(4));
    }

    #[test]
    fn other_links_and_plain_transitions() {
        let mut known = up_with(0);
        let other = LinkSeen { index: IF + 1, running: false, carrier_down_count: Some(9) };
        assert!(link_transitions(&mut known, IF, &changes(&[other], false)).is_empty());
        assert_eq!(link_transitions(&mut known, IF, &changes(&[seen(false, 1)], false)), [false]);
        assert_eq!(link_transitions(&mut known, IF, &changes(&[seen(true, 1)], false)), [true]);
        // A deleted link has no counter: down, and the last counter is kept.
        let deleted = LinkSeen { index: IF, running: false, carrier_down_count: None };
        assert_eq!(link_transitions(&mut known, IF, &changes(&[deleted], false)), [false]);
        assert_eq!(known, LinkKnown { running: false, carrier_down_count: Some(1) });
    }

    #[test]
    fn lost_notifications_count_as_a_flap_when_the_link_is_up() {
        let mut known = up_with(0);
        // The re-read shows it up with the same counter: verified anyway, since what was lost
        // is unknown (an administrative down and up leaves the counter alone on some links).
        assert_eq!(
            link_transitions(&mut known, IF, &changes(&[seen(true, 0)], true)),
            [false, true]
        );
        let mut known = up_with(0);
        assert_eq!(link_transitions(&mut known, IF, &changes(&[seen(false, 1)], true)), [false]);
        assert!(link_transitions(&mut known, IF, &changes(&[seen(false, 1)], true)).is_empty());
    }
}

#[cfg(test)]
mod slaac_tests {
    use super::*;

    const IF: u32 = 7;

    fn seen(address: &str, autoconfigured: bool) -> Ipv6AddressSeen {
        Ipv6AddressSeen { index: IF, address: address.parse().unwrap(), autoconfigured }
    }

    #[test]
    fn addresses_come_and_go_in_order_and_other_links_do_not_count() {
        let mut known = BTreeSet::new();
        let other = Ipv6AddressSeen { index: IF + 1, ..seen("2001:db8::9", true) };
        assert!(!slaac_changes(&mut known, IF, &[other], None));
        // Tentative first, then through DAD: one address.
        let appear = [seen("2001:db8::1", false), seen("2001:db8::1", true)];
        assert!(slaac_changes(&mut known, IF, &appear, None));
        assert_eq!(known, BTreeSet::from(["2001:db8::1".parse().unwrap()]));
        // A renewed lifetime changes nothing; a new prefix adds one; the old one goes.
        assert!(!slaac_changes(&mut known, IF, &[seen("2001:db8::1", true)], None));
        let moved = [seen("2001:db8:1::1", true), seen("2001:db8::1", false)];
        assert!(slaac_changes(&mut known, IF, &moved, None));
        assert_eq!(known, BTreeSet::from(["2001:db8:1::1".parse().unwrap()]));
    }

    #[test]
    fn a_reread_after_lost_notifications_forgets_what_it_does_not_show() {
        let mut known = BTreeSet::from(["2001:db8::1".parse().unwrap()]);
        // Read before the loss: one added; the re-read shows only that one.
        let seen_now = [seen("2001:db8::2", true), seen("2001:db8::2", true)];
        assert!(slaac_changes(&mut known, IF, &seen_now, Some(1)));
        assert_eq!(known, BTreeSet::from(["2001:db8::2".parse().unwrap()]));
        // A re-read that shows none.
        assert!(slaac_changes(&mut known, IF, &[], Some(0)));
        assert!(known.is_empty());
    }
}

#[cfg(test)]
mod tests {
    /// Set for the child run of `xid_keys_need_no_file_descriptor`.
    const NO_FD_CHILD: &str = "LANYARD_TEST_NO_FD_CHILD";

    /// The daemon raises its fd limit because it can run out; when it had, the old seed fell
    /// back to the pid, the same key for every client. Descriptors are a per-process limit, so
    /// they are exhausted in a child run of this test, not in the harness running other tests.
    #[test]
    fn xid_keys_need_no_file_descriptor() {
        if std::env::var_os(NO_FD_CHILD).is_some() {
            keys_with_every_descriptor_taken();
            return;
        }
        // The harness names tests by module path without the crate.
        let path = module_path!();
        let name = format!(
            "{}::xid_keys_need_no_file_descriptor",
            path.split_once("::").map_or(path, |(_, rest)| rest)
        );
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--test-threads=1", "--nocapture"])
            .env(NO_FD_CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child run failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "the child ran the test:\n{stdout}");
    }

    fn keys_with_every_descriptor_taken() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        const LIMIT: u64 = 256;
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, LIMIT.min(hard), hard).unwrap();
        let mut held = Vec::new();
        for _ in 0..LIMIT {
            match std::fs::File::open("/dev/null") {
                Ok(file) => held.push(file),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                    break;
                }
            }
        }
        assert!(std::fs::File::open("/dev/urandom").is_err(), "every descriptor is taken");
        let first = super::random_seed();
        let second = super::random_seed();
        drop(held);
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_ne!(first, second, "two keys from the kernel; equal keys mean a fixed fallback");
    }
}
