//! The RFC 2131 client state machine (§4.4, Figure 5), without sockets, clocks or threads.
//!
//! The daemon owns the I/O: it feeds [`Event`]s with the current [`Now`], performs the returned
//! [`Action`]s in order, and calls [`Client::handle`] with [`Event::Timer`] once
//! [`Client::next_deadline`] has passed. Every call first catches up with every deadline that
//! has passed, so a late timer (a suspended VM, a busy loop) still renews or expires correctly.
//!
//! Timing choices that the RFC leaves open, or where lanyard deviates on purpose:
//! - No initial 1-10 s random wait before the first DISCOVER (§4.4.1 SHOULD): an attach waits for
//!   its address and the target is under 10 ms; the daemon spreads mass restarts itself.
//! - SELECTING and REQUESTING retransmit after 4, 8, 16, 32, 64, 64... s, each ±1 s (§4.1).
//!   DISCOVER is retransmitted forever (giving up is the caller's `--timeout`); REQUEST gets
//!   [`REQUEST_TRANSMISSIONS`] tries, then the client starts over from INIT (§3.1 step 5).
//! - RENEWING/REBINDING wait half the time left to T2 / expiry (§4.4.5), but the RFC's 60 s
//!   floor is scaled to the lease: `min(60 s, lease / 20)`, at least 1 s. A 10 s lease would
//!   otherwise get a single REQUEST per state and lose its address to one dropped packet.
//! - INIT-REBOOT (§3.2, §4.4.2) waits only [`REBOOT_WAIT`] twice: a server with no record of the
//!   client MUST stay silent (§4.3.2), which is the usual case after a server restart, and a
//!   long wait there would eat the attach timeout before falling back to DISCOVER.
//! - After DHCPDECLINE (§3.1 step 5, "SHOULD wait a minimum of ten seconds"): the first decline
//!   restarts at once, later consecutive ones wait [`DECLINE_WAIT`]. One conflict then costs
//!   milliseconds, not a failed attach, while a loop of conflicts is still paced.
//! - NAKs restart at once; consecutive NAKs back off (4 s doubling to 64 s) so a broken server
//!   cannot drive a packet storm. Not in the RFC, which sets no pace.
//! - A NAK must come from the server we are talking to in REQUESTING (the one we selected) and
//!   RENEWING (the one we unicast to); another server's NAK there is ignored, since it has no
//!   say over that exchange. In REBINDING and REBOOTING the REQUEST is broadcast to all servers
//!   and any of them may answer (§4.4.5, §4.3.2), so any server's NAK counts.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lease::{Lease, Timers};
use super::options;
use super::packet::{self, Kind, Outgoing, ReplyKind};
use crate::error::{Error, Result};

/// How many times a REQUEST in REQUESTING is sent before starting over (about 60 s in all).
pub const REQUEST_TRANSMISSIONS: u32 = 4;
/// Wait between INIT-REBOOT REQUESTs; two tries, then DISCOVER.
pub const REBOOT_WAIT: Duration = Duration::from_secs(2);
const REBOOT_TRANSMISSIONS: u32 = 2;
/// Wait before rediscovering after a second consecutive DHCPDECLINE (RFC 2131 §3.1 step 5).
pub const DECLINE_WAIT: Duration = Duration::from_secs(10);
/// How long the daemon has to report an ARP probe before the address is taken as free (RFC 5227
/// §2.1.1's probe sequence takes at most about 7 s; no answer means no conflict).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(64);
const JITTER_MS: u64 = 1000;

/// What the client sends and how it identifies itself; fixed for the life of the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The guest interface's MAC: chaddr, and what replies must be addressed to.
    pub mac: [u8; 6],
    /// Option 61, sent verbatim (type octet first, RFC 2132 §9.14). It must be stable per
    /// container and interface so the server gives a restarted container the same address.
    /// Empty means the classic form: type 1 followed by the MAC.
    pub client_id: Vec<u8>,
    /// Option 12: a single label, for the LAN's DNS.
    pub hostname: Option<String>,
    /// Option 81 (RFC 4702). When set, option 12 is not sent at all (RFC 4702 §3.1).
    pub fqdn: Option<String>,
    /// lanyard registers this interface in DNS itself (config `[dns_update]`): option 81 goes
    /// with the N flag, so the server updates nothing and the two never fight over one name.
    /// The name (FQDN or hostname) rides along in it, for the server's lease list only.
    pub server_must_not_update_dns: bool,
    /// An address from an earlier lease: the client starts in INIT-REBOOT and asks for it.
    pub requested_address: Option<Ipv4Addr>,
    /// Ask the daemon for an ARP probe ([`Action::Probe`]) of an acknowledged address before
    /// configuring it (RFC 2131 §4.4.1, RFC 5227).
    pub probe: bool,
    /// Set the BROADCAST flag (RFC 2131 §4.1) while the client has no address, for sockets that
    /// cannot receive unicast to an unconfigured address. An AF_PACKET socket does not need it.
    pub broadcast_flag: bool,
    /// Option 57: the largest IP datagram the daemon can receive, normally the link MTU.
    /// At least 576 (RFC 2132 §9.10).
    pub max_message_size: u16,
}

impl ClientConfig {
    pub fn new(mac: [u8; 6], client_id: Vec<u8>) -> Self {
        ClientConfig {
            mac,
            client_id,
            hostname: None,
            fqdn: None,
            server_must_not_update_dns: false,
            requested_address: None,
            probe: false,
            broadcast_flag: false,
            max_message_size: 1500,
        }
    }

    pub(crate) fn effective_client_id(&self) -> Vec<u8> {
        if self.client_id.is_empty() {
            let mut id = vec![1];
            id.extend(self.mac);
            id
        } else {
            self.client_id.clone()
        }
    }

    /// Refuses what the client could not send correctly. Names follow the rules lanyard applies
    /// to names it receives: letters, digits, '-' and '_' in labels of at most 63 characters.
    pub fn validate(&self) -> Result<()> {
        let mac = self.mac.map(|b| format!("{b:02x}")).join(":");
        if self.mac == [0; 6] || self.mac[0] & 1 != 0 {
            return Err(Error::usage(format!(
                "DHCP client MAC {mac} is not a unicast hardware address"
            )));
        }
        if self.client_id.len() == 1 || self.client_id.len() > 255 {
            return Err(Error::usage(format!(
                "DHCP client id for {mac} is {} bytes long: it must be 2 to 255 bytes (a type \
                 byte and the identifier)",
                self.client_id.len()
            )));
        }
        if let Some(host) = &self.hostname {
            if host.contains('.') || !options::valid_domain(host) {
                return Err(Error::usage(format!(
                    "DHCP hostname {host:?} is not a host name: use one label of letters, \
                     digits, '-' or '_', at most 63 characters (give a name with dots as FQDN)"
                )));
            }
        }
        if let Some(fqdn) = &self.fqdn {
            if !options::valid_domain(fqdn) || dhcproto::Name::from_ascii(fqdn).is_err() {
                return Err(Error::usage(format!(
                    "DHCP FQDN {fqdn:?} is not a domain name: use labels of letters, digits, \
                     '-' or '_' separated by dots, at most 253 characters"
                )));
            }
        }
        if let Some(addr) = self.requested_address {
            if !packet::usable_address(addr, 32) {
                return Err(Error::usage(format!(
                    "DHCP requested address {addr} is not a unicast host address"
                )));
            }
        }
        if self.max_message_size < 576 {
            return Err(Error::usage(format!(
                "DHCP maximum message size {} is below the minimum of 576",
                self.max_message_size
            )));
        }
        Ok(())
    }
}

/// The current time as the client needs it. `mono` drives every timer: any monotonic clock,
/// counted from an epoch the caller picks (the daemon's start; zero in tests). `wall` is Unix
/// time and is used only to stamp leases ([`Lease::acquired_unix_ms`]) so a restarted daemon can
/// tell what is left of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Duration,
    pub wall: Duration,
}

impl Now {
    /// The real clocks, with `epoch` as the monotonic origin.
    pub fn system(epoch: std::time::Instant) -> Now {
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Now { mono: epoch.elapsed(), wall }
    }

    fn wall_ms(&self) -> u64 {
        u64::try_from(self.wall.as_millis()).unwrap_or(u64::MAX)
    }
}

/// RFC 2131 Figure 5 states, plus the two lanyard needs around them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// No lease; waiting for [`Event::Start`] or for the pause before the next DISCOVER.
    Init,
    Selecting,
    Requesting,
    /// Acknowledged, waiting for the daemon's ARP probe before configuring (RFC 2131 §4.4.1).
    Probing,
    Bound,
    Renewing,
    Rebinding,
    /// Knows an address from an earlier lease; waiting for [`Event::Start`].
    InitReboot,
    Rebooting,
    /// After [`Event::Release`]: silent until the next [`Event::Start`].
    Released,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Init => "INIT",
            State::Selecting => "SELECTING",
            State::Requesting => "REQUESTING",
            State::Probing => "PROBING",
            State::Bound => "BOUND",
            State::Renewing => "RENEWING",
            State::Rebinding => "REBINDING",
            State::InitReboot => "INIT-REBOOT",
            State::Rebooting => "REBOOTING",
            State::Released => "RELEASED",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Begin: DISCOVER, or INIT-REBOOT's REQUEST when an address is known. Also restarts a
    /// released client. Ignored while an exchange or a lease is running.
    Start,
    /// A UDP payload received on port 68 of the guest interface.
    Packet(&'a [u8]),
    /// [`Client::next_deadline`] has passed.
    Timer,
    /// The guest link went down: nothing is sent until it is up again. Lease timers keep
    /// running, and an expired lease is still deconfigured.
    LinkDown,
    /// The link is back: a held lease is verified with INIT-REBOOT (RFC 2131 §3.2, the link may
    /// now be another network), and a running exchange restarts at once.
    LinkUp,
    /// The daemon's answer to [`Action::Probe`].
    ProbeResult { in_use: bool },
    /// Give the lease back (detach): DHCPRELEASE, deconfigure, then stay silent.
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255, from the message's `ciaddr`: 0.0.0.0 until the client holds an
    /// address, the leased address while rebinding.
    Broadcast,
    /// The server, from the leased address (RENEWING and RELEASE).
    Unicast(Ipv4Addr),
}

/// Why a configured address had to go; for the daemon's log and `inspect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossReason {
    /// RFC 2131 §4.4.5: no ACK before the lease ran out.
    Expired,
    /// The server refused the lease.
    Nak { server: Ipv4Addr },
    /// [`Event::Release`].
    Released,
    /// INIT-REBOOT after a restart whose lease times could not be trusted got no answer.
    Unverified,
    /// The server acknowledged a different address; the new one follows in a Configure.
    Replaced,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this UDP payload from port 68 to port 67.
    Send { packet: Vec<u8>, destination: Destination },
    /// Configure the lease's address, routes ([`Lease::routes`]), MTU and DNS, and persist it.
    /// Comes on every ACK, renewals included: apply it idempotently (the renewed lease has new
    /// times, and the server may have changed routes or DNS).
    Configure(Lease),
    /// Remove the lease's address and the routes that came with it, and drop the record.
    Deconfigure { lease: Lease, reason: LossReason },
    /// ARP-probe this address (RFC 5227) and answer with [`Event::ProbeResult`].
    Probe(Ipv4Addr),
}

/// Lease deadlines on the monotonic clock.
#[derive(Clone, Copy, Debug)]
struct Deadlines {
    t1: Duration,
    t2: Duration,
    expiry: Duration,
}

#[derive(Clone, Copy, Debug)]
enum Times {
    Infinite,
    Finite(Deadlines),
    /// Resumed from a record whose age cannot be known (the wall clock is before the time the
    /// lease was acquired): only the server can say whether it still holds.
    Unknown,
}

/// The lease whose address is configured in the guest (or, after a restart, assumed to be).
#[derive(Clone, Debug)]
struct Held {
    lease: Lease,
    times: Times,
}

/// One request/reply exchange: one xid, retransmitted on a schedule.
#[derive(Clone, Copy, Debug)]
struct Tx {
    xid: u32,
    started: Duration,
    started_wall_ms: u64,
    sent: u32,
    next: Duration,
    /// `secs` of the latest transmission; REQUEST repeats DISCOVER's (§4.4.1).
    secs: u16,
}

impl Tx {
    fn secs(&self, now: Now) -> u16 {
        u16::try_from(now.mono.saturating_sub(self.started).as_secs()).unwrap_or(u16::MAX)
    }
}

#[derive(Clone, Debug)]
enum Phase {
    Idle,
    Waiting { until: Duration },
    Selecting(Tx),
    Requesting { tx: Tx, server: Ipv4Addr, address: Ipv4Addr, secs: u16 },
    Probing { lease: Lease, started: Duration, until: Duration },
    Bound,
    Renewing(Tx),
    Rebinding(Tx),
    InitReboot { address: Ipv4Addr },
    Rebooting { tx: Tx, address: Ipv4Addr },
    Released,
}

/// Randomness for xids and jitter: SipHash-2-4 keyed with the caller's seed, over a counter.
/// Not a plain PRNG on purpose: the DISCOVER's xid is broadcast, and with a generator whose
/// output reveals its state (SplitMix64, xorshift) any host on the LAN could compute the xid of
/// the next unicast renewal and forge a NAK for it. A keyed PRF leaks nothing about later
/// outputs, and stays deterministic for tests.
#[derive(Clone, Debug)]
struct Rng {
    key: u64,
    counter: u64,
}

impl Rng {
    fn next(&mut self) -> u64 {
        use std::hash::Hasher;
        self.counter = self.counter.wrapping_add(1);
        let mut h = siphasher::sip::SipHasher24::new_with_keys(self.key, 0x6c61_6e79_6172_6421);
        h.write_u64(self.counter);
        h.finish()
    }

    fn xid(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }

    /// `base` ± `spread_ms` milliseconds, uniformly.
    fn jitter(&mut self, base: Duration, spread_ms: u64) -> Duration {
        let offset = self.next() % (2 * spread_ms + 1);
        (base + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(spread_ms))
    }
}

/// A DHCPv4 client for one interface. Cheap (a few hundred bytes plus the lease), `Send`, and
/// passive: it only changes in [`Client::handle`].
#[derive(Clone, Debug)]
pub struct Client {
    config: ClientConfig,
    rng: Rng,
    phase: Phase,
    held: Option<Held>,
    link_up: bool,
    /// Hint for DISCOVER's option 50: the last address we had, unless it was declined.
    last_address: Option<Ipv4Addr>,
    naks: u32,
    declines: u32,
}

impl Client {
    /// A client in INIT (or INIT-REBOOT when `config.requested_address` is set); nothing happens
    /// until [`Event::Start`]. `random_seed` should come from the OS: xids are what keep an
    /// off-path host from forging replies (RFC 2131 §7).
    pub fn new(config: ClientConfig, random_seed: u64) -> Result<Client> {
        config.validate()?;
        let probe = Outgoing {
            kind: Kind::Discover,
            xid: 0,
            secs: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: config.requested_address,
            server_id: None,
        };
        if packet::build(&config, &probe).is_none() {
            return Err(Error::usage(format!(
                "DHCP client settings {config:?} cannot be encoded in a DHCP message"
            )));
        }
        let phase = match config.requested_address {
            Some(address) => Phase::InitReboot { address },
            None => Phase::Idle,
        };
        Ok(Client {
            last_address: config.requested_address,
            config,
            rng: Rng { key: random_seed, counter: 0 },
            phase,
            held: None,
            link_up: true,
            naks: 0,
            declines: 0,
        })
    }

    /// A client for a lease persisted before a daemon restart, whose address is still
    /// configured in the guest. Where the lease's times say it is: BOUND until T1, then
    /// RENEWING, REBINDING, or expired (deconfigured and rediscovered) — the transitions happen
    /// on the first [`Client::handle`], so call it with [`Event::Start`] right away. When the
    /// wall clock is earlier than the lease's acquisition, its age is unknown and the client
    /// verifies it with INIT-REBOOT (RFC 2131 §3.2) instead.
    pub fn resume(
        config: ClientConfig,
        lease: Lease,
        now: Now,
        random_seed: u64,
    ) -> Result<Client> {
        if !lease.is_plausible() {
            return Err(Error::usage(format!(
                "persisted DHCP lease for {} from server {} is not usable (address, prefix or \
                 lease times out of range)",
                lease.address, lease.server_id
            )));
        }
        let mut client = Client::new(config, random_seed)?;
        let now_ms = now.wall_ms();
        let times = match lease.timers {
            None => Times::Infinite,
            Some(_) if now_ms < lease.acquired_unix_ms => Times::Unknown,
            Some(t) => {
                let age = now_ms - lease.acquired_unix_ms;
                let at = |ms: u64| now.mono + Duration::from_millis(ms.saturating_sub(age));
                Times::Finite(Deadlines {
                    t1: at(t.t1_ms),
                    t2: at(t.t2_ms),
                    expiry: at(t.lease_ms),
                })
            }
        };
        client.phase = match times {
            Times::Unknown => Phase::InitReboot { address: lease.address },
            _ => Phase::Bound,
        };
        client.last_address = Some(lease.address);
        client.held = Some(Held { lease, times });
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Idle | Phase::Waiting { .. } => State::Init,
            Phase::Selecting(_) => State::Selecting,
            Phase::Requesting { .. } => State::Requesting,
            Phase::Probing { .. } => State::Probing,
            Phase::Bound => State::Bound,
            Phase::Renewing(_) => State::Renewing,
            Phase::Rebinding(_) => State::Rebinding,
            Phase::InitReboot { .. } => State::InitReboot,
            Phase::Rebooting { .. } => State::Rebooting,
            Phase::Released => State::Released,
        }
    }

    /// The lease whose address is configured in the guest, if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.held.as_ref().map(|h| &h.lease)
    }

    /// When to deliver [`Event::Timer`]; `None` when nothing is scheduled (not started, an
    /// infinite lease, released). May already be in the past after [`Client::resume`].
    pub fn next_deadline(&self) -> Option<Duration> {
        let phase = match &self.phase {
            Phase::Waiting { until } | Phase::Probing { until, .. } => Some(*until),
            Phase::Selecting(tx)
            | Phase::Requesting { tx, .. }
            | Phase::Renewing(tx)
            | Phase::Rebinding(tx)
            | Phase::Rebooting { tx, .. } => Some(tx.next),
            Phase::Bound => self.deadlines().map(|d| d.t1),
            Phase::Idle | Phase::InitReboot { .. } | Phase::Released => None,
        };
        let expiry = self.deadlines().map(|d| d.expiry);
        match (phase, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Processes one event; returns what the daemon must do, in order.
    pub fn handle(&mut self, event: Event<'_>, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        // Release ends the client: catching up first could send a retransmission or a fresh
        // DISCOVER (after an expiry) just before going silent, making a server hold an offer.
        if event != Event::Release {
            self.catch_up(now, &mut out);
        }
        match event {
            Event::Start => self.on_start(now, &mut out),
            Event::Packet(bytes) => self.on_packet(bytes, now, &mut out),
            Event::Timer => {}
            Event::LinkDown => self.link_up = false,
            Event::LinkUp => self.on_link_up(now, &mut out),
            Event::ProbeResult { in_use } => self.on_probe_result(in_use, now, &mut out),
            Event::Release => self.on_release(now, &mut out),
        }
        out
    }

    fn deadlines(&self) -> Option<Deadlines> {
        match self.held.as_ref()?.times {
            Times::Finite(d) => Some(d),
            Times::Infinite | Times::Unknown => None,
        }
    }

    /// Runs every deadline that has passed. Each step either moves the deadline past `now` or
    /// changes the phase toward one that has none; the bound only guards against a bug turning
    /// into a hang.
    fn catch_up(&mut self, now: Now, out: &mut Vec<Action>) {
        for _ in 0..16 {
            match self.next_deadline() {
                Some(deadline) if deadline <= now.mono => self.on_deadline(now, out),
                _ => return,
            }
        }
    }

    fn on_deadline(&mut self, now: Now, out: &mut Vec<Action>) {
        // RFC 2131 §4.4.5: "If the lease expires before the client receives a DHCPACK, the
        // client moves to INIT state, MUST immediately stop any other network processing and
        // requests network initialization parameters as if the client were uninitialized."
        if let Some(d) = self.deadlines() {
            if now.mono >= d.expiry {
                self.lose(LossReason::Expired, out);
                self.discover(now, out);
                return;
            }
        }
        match self.phase.clone() {
            Phase::Waiting { .. } => self.discover(now, out),
            // §4.1: retransmit with exponential backoff; xid unchanged so a late OFFER for an
            // earlier copy still counts.
            Phase::Selecting(mut tx) => {
                tx.secs = tx.secs(now);
                self.send(Kind::Discover, &tx, tx.secs, None, self.last_address, out);
                tx.next = now.mono + self.backoff(tx.sent);
                tx.sent += 1;
                self.phase = Phase::Selecting(tx);
            }
            // §3.1 step 5 / §4.4.1: no ACK or NAK after the retransmissions: back to INIT.
            Phase::Requesting { mut tx, server, address, secs } => {
                if tx.sent >= REQUEST_TRANSMISSIONS {
                    self.discover(now, out);
                } else {
                    self.send(Kind::Request, &tx, secs, Some(server), Some(address), out);
                    tx.next = now.mono + self.backoff(tx.sent);
                    tx.sent += 1;
                    self.phase = Phase::Requesting { tx, server, address, secs };
                }
            }
            // No probe answer in time: RFC 5227 treats silence as "not in use".
            Phase::Probing { lease, started, .. } => self.bind(lease, started, out),
            // §4.4.5: T1 → RENEWING, T2 → REBINDING. Checking T2 first covers a timer delivered
            // after both have passed.
            Phase::Bound => match self.deadlines() {
                Some(d) if now.mono >= d.t2 => self.rebind(now, out),
                Some(d) if now.mono >= d.t1 => self.renew(now, out),
                _ => {}
            },
            Phase::Renewing(mut tx) => match self.deadlines() {
                Some(d) if now.mono >= d.t2 => self.rebind(now, out),
                Some(d) => {
                    let server = self.held.as_ref().map(|h| h.lease.server_id);
                    self.send_renewal(&tx, now, server, out);
                    tx.next = self.reacquire_next(now, d.t2);
                    tx.sent += 1;
                    self.phase = Phase::Renewing(tx);
                }
                None => self.phase = Phase::Bound,
            },
            Phase::Rebinding(mut tx) => match self.deadlines() {
                Some(d) => {
                    self.send_renewal(&tx, now, None, out);
                    tx.next = self.reacquire_next(now, d.expiry);
                    tx.sent += 1;
                    self.phase = Phase::Rebinding(tx);
                }
                None => self.phase = Phase::Bound,
            },
            Phase::Rebooting { mut tx, address } => {
                if tx.sent >= REBOOT_TRANSMISSIONS {
                    self.reboot_failed(now, out);
                } else {
                    self.send(Kind::Request, &tx, tx.secs(now), None, Some(address), out);
                    tx.next = now.mono + self.rng.jitter(REBOOT_WAIT, 250);
                    tx.sent += 1;
                    self.phase = Phase::Rebooting { tx, address };
                }
            }
            Phase::Idle | Phase::InitReboot { .. } | Phase::Released => {}
        }
    }

    /// §4.1: 4 s before the first retransmission, doubling up to 64 s, each ±1 s.
    fn backoff(&mut self, sent_before: u32) -> Duration {
        let base = Duration::from_secs(4u64 << sent_before.min(4)).min(MAX_BACKOFF);
        self.rng.jitter(base, JITTER_MS)
    }

    /// §4.4.5: wait half the time left until `until`, not less than the floor (60 s in the RFC,
    /// scaled down for short leases; see the module notes), and never past `until`, which the
    /// caller's next step handles (REBINDING at T2, expiry at the lease end).
    fn reacquire_next(&self, now: Now, until: Duration) -> Duration {
        let lease_ms =
            self.held.as_ref().and_then(|h| h.lease.timers).map_or(60_000, |t: Timers| t.lease_ms);
        let floor = Duration::from_millis((lease_ms / 20).clamp(1000, 60_000));
        let left = until.saturating_sub(now.mono);
        now.mono + (left / 2).max(floor).min(left)
    }

    fn send(
        &mut self,
        kind: Kind,
        tx: &Tx,
        secs: u16,
        server_id: Option<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
        out: &mut Vec<Action>,
    ) {
        let msg = Outgoing {
            kind,
            xid: tx.xid,
            secs,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested,
            server_id,
        };
        self.emit(&msg, Destination::Broadcast, out);
    }

    /// §4.4.5 and Table 5: REQUEST from BOUND/RENEWING/REBINDING has `ciaddr` set and neither
    /// server id nor requested address; unicast to the server while renewing, broadcast while
    /// rebinding.
    fn send_renewal(
        &mut self,
        tx: &Tx,
        now: Now,
        unicast: Option<Ipv4Addr>,
        out: &mut Vec<Action>,
    ) {
        let Some(held) = &self.held else { return };
        let msg = Outgoing {
            kind: Kind::Request,
            xid: tx.xid,
            secs: tx.secs(now),
            ciaddr: held.lease.address,
            requested: None,
            server_id: None,
        };
        let dest = unicast.map_or(Destination::Broadcast, Destination::Unicast);
        self.emit(&msg, dest, out);
    }

    fn emit(&self, msg: &Outgoing, destination: Destination, out: &mut Vec<Action>) {
        if !self.link_up {
            return;
        }
        if let Some(packet) = packet::build(&self.config, msg) {
            out.push(Action::Send { packet, destination });
        }
    }

    fn new_tx(&mut self, now: Now) -> Tx {
        Tx {
            xid: self.rng.xid(),
            started: now.mono,
            started_wall_ms: now.wall_ms(),
            sent: 0,
            next: now.mono,
            secs: 0,
        }
    }

    /// INIT → SELECTING (§4.4.1): a new xid and an immediate DISCOVER, asking for the last
    /// address we held (option 50 is a MAY in Table 5; servers use it to keep addresses stable).
    fn discover(&mut self, now: Now, out: &mut Vec<Action>) {
        let mut tx = self.new_tx(now);
        self.send(Kind::Discover, &tx, 0, None, self.last_address, out);
        tx.next = now.mono + self.backoff(0);
        tx.sent = 1;
        self.phase = Phase::Selecting(tx);
    }

    /// INIT-REBOOT → REBOOTING (§3.2, §4.4.2): broadcast REQUEST for the known address, with no
    /// server id and `ciaddr` 0.
    fn reboot(&mut self, address: Ipv4Addr, now: Now, out: &mut Vec<Action>) {
        let mut tx = self.new_tx(now);
        self.send(Kind::Request, &tx, 0, None, Some(address), out);
        tx.next = now.mono + self.rng.jitter(REBOOT_WAIT, 250);
        tx.sent = 1;
        self.phase = Phase::Rebooting { tx, address };
    }

    /// BOUND → RENEWING at T1 (§4.4.5).
    fn renew(&mut self, now: Now, out: &mut Vec<Action>) {
        let Some(d) = self.deadlines() else { return };
        let mut tx = self.new_tx(now);
        let server = self.held.as_ref().map(|h| h.lease.server_id);
        self.send_renewal(&tx, now, server, out);
        tx.next = self.reacquire_next(now, d.t2);
        tx.sent = 1;
        self.phase = Phase::Renewing(tx);
    }

    /// RENEWING (or BOUND, when T1 was missed) → REBINDING at T2 (§4.4.5): a new xid, since the
    /// REQUEST now goes to every server.
    fn rebind(&mut self, now: Now, out: &mut Vec<Action>) {
        let Some(d) = self.deadlines() else { return };
        let mut tx = self.new_tx(now);
        self.send_renewal(&tx, now, None, out);
        tx.next = self.reacquire_next(now, d.expiry);
        tx.sent = 1;
        self.phase = Phase::Rebinding(tx);
    }

    /// REBOOTING got neither ACK nor NAK. §3.2 lets a client keep using an unexpired lease; we
    /// do when we know its times (a link flap), and go back to where the times say. A lease of
    /// unknown age is given up: using it could mean using someone else's address.
    fn reboot_failed(&mut self, now: Now, out: &mut Vec<Action>) {
        match self.held.as_ref().map(|h| h.times) {
            Some(Times::Finite(_)) | Some(Times::Infinite) => self.phase = Phase::Bound,
            Some(Times::Unknown) => {
                self.lose(LossReason::Unverified, out);
                self.discover(now, out);
            }
            None => self.discover(now, out),
        }
    }

    /// Drops the held lease, telling the daemon to remove its address.
    fn lose(&mut self, reason: LossReason, out: &mut Vec<Action>) {
        if let Some(held) = self.held.take() {
            out.push(Action::Deconfigure { lease: held.lease, reason });
        }
    }

    fn restart_after(&mut self, delay: Duration, now: Now, out: &mut Vec<Action>) {
        if delay.is_zero() {
            self.discover(now, out);
        } else {
            self.phase = Phase::Waiting { until: now.mono + delay };
        }
    }

    /// → BOUND (§4.4.1 after REQUESTING, §4.4.5 after RENEWING/REBINDING, §4.4.2 after
    /// REBOOTING). `sent` is when the REQUEST that won this ACK was first sent: the lease counts
    /// from there (§4.4.1), so a slow answer shortens it rather than stretching it.
    fn bind(&mut self, lease: Lease, sent: Duration, out: &mut Vec<Action>) {
        let times = match lease.timers {
            None => Times::Infinite,
            Some(t) => Times::Finite(Deadlines {
                t1: sent + Duration::from_millis(t.t1_ms),
                t2: sent + Duration::from_millis(t.t2_ms),
                expiry: sent + Duration::from_millis(t.lease_ms),
            }),
        };
        if self.held.as_ref().is_some_and(|h| h.lease.address != lease.address) {
            self.lose(LossReason::Replaced, out);
        }
        self.last_address = Some(lease.address);
        self.naks = 0;
        self.declines = 0;
        out.push(Action::Configure(lease.clone()));
        self.held = Some(Held { lease, times });
        self.phase = Phase::Bound;
    }

    fn on_start(&mut self, now: Now, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Idle | Phase::Released => self.discover(now, out),
            Phase::InitReboot { address } => self.reboot(address, now, out),
            _ => {}
        }
    }

    fn on_packet(&mut self, bytes: &[u8], now: Now, out: &mut Vec<Action>) {
        let xid = match &self.phase {
            Phase::Selecting(tx)
            | Phase::Requesting { tx, .. }
            | Phase::Renewing(tx)
            | Phase::Rebinding(tx)
            | Phase::Rebooting { tx, .. } => tx.xid,
            // No exchange running: nothing can be a reply (FORCERENEW needs authentication,
            // RFC 6704, which lanyard does not do).
            _ => return,
        };
        let Ok(reply) = packet::parse_reply(bytes, &self.config.mac, xid) else { return };
        let bound_server = self.held.as_ref().map(|h| h.lease.server_id);
        match (self.phase.clone(), reply.kind) {
            // §4.4.1: take the first acceptable OFFER; REQUEST it with the same xid and secs,
            // naming the server (option 54) and the address (option 50).
            (Phase::Selecting(tx), ReplyKind::Offer) => {
                let secs = tx.secs;
                let mut tx = self.new_tx(now);
                tx.xid = xid;
                let (server, address) = (reply.server_id, reply.yiaddr);
                self.send(Kind::Request, &tx, secs, Some(server), Some(address), out);
                tx.next = now.mono + self.backoff(0);
                tx.sent = 1;
                self.phase = Phase::Requesting { tx, server, address, secs };
            }
            (Phase::Requesting { tx, server, .. }, ReplyKind::Ack) if reply.server_id == server => {
                let lease = packet::lease_from_reply(&reply, tx.started_wall_ms);
                if self.config.probe {
                    out.push(Action::Probe(lease.address));
                    self.phase = Phase::Probing {
                        lease,
                        started: tx.started,
                        until: now.mono + PROBE_TIMEOUT,
                    };
                } else {
                    self.bind(lease, tx.started, out);
                }
            }
            (Phase::Renewing(tx), ReplyKind::Ack) if Some(reply.server_id) == bound_server => {
                let lease = packet::lease_from_reply(&reply, tx.started_wall_ms);
                self.bind(lease, tx.started, out);
            }
            (Phase::Rebinding(tx), ReplyKind::Ack)
            | (Phase::Rebooting { tx, .. }, ReplyKind::Ack) => {
                let lease = packet::lease_from_reply(&reply, tx.started_wall_ms);
                self.bind(lease, tx.started, out);
            }
            (Phase::Requesting { server, .. }, ReplyKind::Nak) if reply.server_id == server => {
                self.nak(reply.server_id, now, out)
            }
            (Phase::Renewing(_), ReplyKind::Nak) if Some(reply.server_id) == bound_server => {
                self.nak(reply.server_id, now, out)
            }
            (Phase::Rebinding(_), ReplyKind::Nak) | (Phase::Rebooting { .. }, ReplyKind::Nak) => {
                self.nak(reply.server_id, now, out)
            }
            // Later OFFERs while REQUESTING, ACKs in SELECTING, replies from the wrong server.
            _ => {}
        }
    }

    /// §3.1 step 5, §3.2 step 4 and §4.4.5: a NAK means the address is no longer ours; remove it
    /// and start over from INIT. The "Requested address" hint goes too: the server just said no
    /// to it.
    fn nak(&mut self, server: Ipv4Addr, now: Now, out: &mut Vec<Action>) {
        self.lose(LossReason::Nak { server }, out);
        self.last_address = None;
        self.naks += 1;
        let delay = match self.naks {
            0 | 1 => Duration::ZERO,
            n => Duration::from_secs(4u64 << (n - 2).min(4)).min(MAX_BACKOFF),
        };
        self.restart_after(delay, now, out);
    }

    fn on_probe_result(&mut self, in_use: bool, now: Now, out: &mut Vec<Action>) {
        let Phase::Probing { lease, started, .. } = self.phase.clone() else { return };
        if !in_use {
            self.bind(lease, started, out);
            return;
        }
        // §3.1 step 5 and §4.4.1: DHCPDECLINE (broadcast, new xid, server id and the address in
        // option 50, Table 5), then back to INIT.
        let tx = self.new_tx(now);
        let msg = Outgoing {
            kind: Kind::Decline,
            xid: tx.xid,
            secs: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: Some(lease.address),
            server_id: Some(lease.server_id),
        };
        self.emit(&msg, Destination::Broadcast, out);
        self.last_address = None;
        self.declines += 1;
        let delay = if self.declines > 1 { DECLINE_WAIT } else { Duration::ZERO };
        self.restart_after(delay, now, out);
    }

    fn on_link_up(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.link_up {
            return;
        }
        self.link_up = true;
        match self.phase.clone() {
            Phase::Selecting(_) | Phase::Requesting { .. } => self.discover(now, out),
            Phase::Rebooting { address, .. } => self.reboot(address, now, out),
            Phase::Bound | Phase::Renewing(_) | Phase::Rebinding(_) => {
                if let Some(address) = self.held.as_ref().map(|h| h.lease.address) {
                    self.reboot(address, now, out);
                }
            }
            _ => {}
        }
    }

    /// §4.4.6: DHCPRELEASE, unicast to the server, `ciaddr` = the address, server id, no
    /// requested address; then the address goes and the client stays quiet.
    fn on_release(&mut self, now: Now, out: &mut Vec<Action>) {
        let lease = match &self.phase {
            Phase::Probing { lease, .. } => Some(lease.clone()),
            _ => self.held.as_ref().map(|h| h.lease.clone()),
        };
        if let Some(lease) = lease {
            let tx = self.new_tx(now);
            let msg = Outgoing {
                kind: Kind::Release,
                xid: tx.xid,
                secs: 0,
                ciaddr: lease.address,
                requested: None,
                server_id: Some(lease.server_id),
            };
            self.emit(&msg, Destination::Unicast(lease.server_id), out);
        }
        self.lose(LossReason::Released, out);
        self.phase = Phase::Released;
    }
}
