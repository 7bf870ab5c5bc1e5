//! State machine tests in virtual time. The fake server builds its replies with dhcproto and
//! reads the client's messages with dhcproto, so encoder and parser are checked against an
//! independent implementation on every exchange.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use super::*;

const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);
const WALL_BASE_MS: u64 = 1_700_000_000_000;
const DAY: u64 = 24 * 3600 * 1000;

fn at(ms: u64) -> Now {
    Now { mono: Duration::from_millis(ms), wall: Duration::from_millis(WALL_BASE_MS + ms) }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn config() -> ClientConfig {
    let mut c = ClientConfig::new(MAC, b"\xffweb-eth1".to_vec());
    c.hostname = Some("web".into());
    c
}

/// A client plus the virtual clock and the fake server's view of what it sent.
struct T {
    c: Client,
    now: u64,
}

impl T {
    fn new(config: ClientConfig) -> T {
        T { c: Client::new(config, 42).unwrap(), now: 0 }
    }

    fn ev(&mut self, e: Event<'_>) -> Vec<Action> {
        let actions = self.c.handle(e, at(self.now));
        self.check_invariants();
        actions
    }

    fn check_invariants(&self) {
        let has = self.c.lease().is_some();
        match self.c.state() {
            State::Bound | State::Renewing | State::Rebinding => assert!(has),
            State::Init
            | State::Selecting
            | State::Requesting
            | State::Probing
            | State::Released => {
                assert!(!has, "lease held in {}", self.c.state())
            }
            State::InitReboot | State::Rebooting => {}
        }
    }

    /// Moves the clock to `t` and delivers a timer event there.
    fn timer_at(&mut self, t: u64) -> Vec<Action> {
        self.now = t;
        self.ev(Event::Timer)
    }

    /// Moves to the client's next deadline and fires it.
    fn fire(&mut self) -> Vec<Action> {
        let d = self.c.next_deadline().expect("a deadline");
        self.timer_at(ms(d).max(self.now))
    }

    fn reply(&mut self, bytes: Vec<u8>) -> Vec<Action> {
        self.ev(Event::Packet(&bytes))
    }

    /// Start, OFFER, ACK: ends BOUND with a lease of `lease_secs` acquired at `self.now`.
    fn bind(&mut self, lease_secs: u32) -> Lease {
        let a = self.ev(Event::Start);
        let (discover, _) = only_send(&a);
        let a = self.reply(offer(&discover, ADDR, SERVER, lease_secs));
        let (request, _) = only_send(&a);
        let a = self.reply(ack(&request, ADDR, SERVER, lease_secs));
        assert_eq!(self.c.state(), State::Bound);
        configured(&a)
    }
}

fn sends(actions: &[Action]) -> Vec<(Message, Destination)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { packet, destination } => {
                assert!(packet.len() >= 300, "padded to the BOOTP minimum");
                Some((Message::decode(&mut Decoder::new(packet)).unwrap(), *destination))
            }
            _ => None,
        })
        .collect()
}

fn only_send(actions: &[Action]) -> (Message, Destination) {
    let mut s = sends(actions);
    assert_eq!(s.len(), 1, "{actions:?}");
    s.remove(0)
}

fn configured(actions: &[Action]) -> Lease {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Configure(l) => Some(l.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Configure in {actions:?}"))
}

fn deconfigured(actions: &[Action]) -> Option<(Lease, LossReason)> {
    actions.iter().find_map(|a| match a {
        Action::Deconfigure { lease, reason } => Some((lease.clone(), *reason)),
        _ => None,
    })
}

fn msg_type(m: &Message) -> MessageType {
    m.opts().msg_type().unwrap()
}

fn opt_addr(m: &Message, code: OptionCode) -> Option<Ipv4Addr> {
    match m.opts().get(code)? {
        DhcpOption::RequestedIpAddress(a) | DhcpOption::ServerIdentifier(a) => Some(*a),
        _ => None,
    }
}

/// A server reply to `req`, as dnsmasq or Kea would build it.
fn server_msg(req: &Message, kind: MessageType, yiaddr: Ipv4Addr, server: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        req.chaddr(),
    );
    m.set_opcode(dhcproto::v4::Opcode::BootReply);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    m
}

fn with_lease(mut m: Message, lease_secs: u32) -> Vec<u8> {
    let o = m.opts_mut();
    o.insert(DhcpOption::AddressLeaseTime(lease_secs));
    o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
    o.insert(DhcpOption::Router(vec![SERVER]));
    o.insert(DhcpOption::DomainNameServer(vec![SERVER]));
    o.insert(DhcpOption::DomainName("lab".into()));
    m.to_vec().unwrap()
}

fn offer(req: &Message, yiaddr: Ipv4Addr, server: Ipv4Addr, lease_secs: u32) -> Vec<u8> {
    with_lease(server_msg(req, MessageType::Offer, yiaddr, server), lease_secs)
}

fn ack(req: &Message, yiaddr: Ipv4Addr, server: Ipv4Addr, lease_secs: u32) -> Vec<u8> {
    with_lease(server_msg(req, MessageType::Ack, yiaddr, server), lease_secs)
}

fn nak(req: &Message, server: Ipv4Addr) -> Vec<u8> {
    let mut m = server_msg(req, MessageType::Nak, Ipv4Addr::UNSPECIFIED, server);
    m.opts_mut().insert(DhcpOption::Message("wrong network".into()));
    m.to_vec().unwrap()
}

#[test]
fn happy_path() {
    let mut t = T::new(config());
    assert_eq!(t.c.state(), State::Init);
    assert_eq!(t.c.next_deadline(), None);
    t.now = 1000;
    let a = t.ev(Event::Start);
    let (discover, dest) = only_send(&a);
    assert_eq!(dest, Destination::Broadcast);
    assert_eq!(t.c.state(), State::Selecting);
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert_eq!(discover.chaddr(), MAC);
    assert_eq!(discover.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        discover.opts().get(OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(b"\xffweb-eth1".to_vec()))
    );
    assert_eq!(
        discover.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("web".into()))
    );
    assert!(discover.opts().get(OptionCode::ParameterRequestList).is_some());
    assert_eq!(opt_addr(&discover, OptionCode::ServerIdentifier), None);

    t.now = 1010;
    let a = t.reply(offer(&discover, ADDR, SERVER, 3600));
    let (request, dest) = only_send(&a);
    assert_eq!(dest, Destination::Broadcast);
    assert_eq!(t.c.state(), State::Requesting);
    assert_eq!(msg_type(&request), MessageType::Request);
    assert_eq!(request.xid(), discover.xid(), "RFC 2131 Table 5: xid from the OFFER");
    assert_eq!(request.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(opt_addr(&request, OptionCode::RequestedIpAddress), Some(ADDR));
    assert_eq!(opt_addr(&request, OptionCode::ServerIdentifier), Some(SERVER));

    t.now = 1020;
    let a = t.reply(ack(&request, ADDR, SERVER, 3600));
    assert_eq!(a.len(), 1);
    let lease = configured(&a);
    assert_eq!(t.c.state(), State::Bound);
    assert_eq!(t.c.lease(), Some(&lease));
    assert_eq!(lease.address, ADDR);
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.server_id, SERVER);
    assert_eq!(lease.gateway(), Some(SERVER));
    assert_eq!(lease.dns_servers, vec![SERVER]);
    assert_eq!(lease.domain_name.as_deref(), Some("lab"));
    // The lease counts from the REQUEST (sent at 1010), not from the ACK.
    assert_eq!(lease.acquired_unix_ms, WALL_BASE_MS + 1010);
    assert_eq!(t.c.next_deadline(), Some(Duration::from_millis(1010 + 1_800_000)));
}

#[test]
fn seven_day_lease_renewed_at_t1() {
    let mut t = T::new(config());
    let lease = t.bind(7 * 24 * 3600);
    let t1 = 7 * DAY / 2;
    assert_eq!(lease.renew_unix_ms(), Some(WALL_BASE_MS + t1));
    assert!(t.timer_at(t1 - 1).is_empty(), "nothing before T1");
    assert_eq!(t.c.state(), State::Bound);
    let a = t.timer_at(t1);
    let (req, dest) = only_send(&a);
    assert_eq!(t.c.state(), State::Renewing);
    assert_eq!(dest, Destination::Unicast(SERVER));
    assert_eq!(req.ciaddr(), ADDR);
    assert_eq!(opt_addr(&req, OptionCode::RequestedIpAddress), None, "Table 5: MUST NOT");
    assert_eq!(opt_addr(&req, OptionCode::ServerIdentifier), None, "Table 5: MUST NOT");
    t.now += 5;
    let a = t.reply(ack(&req, ADDR, SERVER, 7 * 24 * 3600));
    let renewed = configured(&a);
    assert!(deconfigured(&a).is_none());
    assert_eq!(t.c.state(), State::Bound);
    assert_eq!(renewed.acquired_unix_ms, WALL_BASE_MS + t1);
    assert_eq!(t.c.next_deadline(), Some(Duration::from_millis(t1 + t1)));
}

/// Every transmission time and destination while the server is silent, down to the expiry.
fn silent_until_expiry(lease_secs: u32) -> (Vec<(u64, Destination)>, u64, Vec<Action>) {
    let mut t = T::new(config());
    t.bind(lease_secs);
    let mut log = Vec::new();
    loop {
        let a = t.fire();
        if deconfigured(&a).is_some() {
            return (log, t.now, a);
        }
        for (_, dest) in sends(&a) {
            log.push((t.now, dest));
        }
        assert!(log.len() < 100, "runaway retransmission");
    }
}

#[test]
fn silent_server_through_renewing_and_rebinding_until_expiry() {
    let (log, end, a) = silent_until_expiry(3600);
    // Deconfigure at exactly the lease end, then a fresh DISCOVER in the same step.
    assert_eq!(end, 3_600_000);
    let (lease, reason) = deconfigured(&a).unwrap();
    assert_eq!((lease.address, reason), (ADDR, LossReason::Expired));
    let (discover, _) = only_send(&a);
    assert_eq!(msg_type(&discover), MessageType::Discover);
    assert_eq!(opt_addr(&discover, OptionCode::RequestedIpAddress), Some(ADDR), "asks for it back");
    let pos = a.iter().position(|x| matches!(x, Action::Send { .. })).unwrap();
    assert!(matches!(a[0], Action::Deconfigure { .. }) && pos == 1, "remove before rediscovering");

    let t1 = 1_800_000;
    let t2 = 3_150_000;
    let renewing: Vec<_> = log.iter().filter(|(_, d)| *d == Destination::Unicast(SERVER)).collect();
    let rebinding: Vec<_> = log.iter().filter(|(_, d)| *d == Destination::Broadcast).collect();
    assert_eq!(renewing[0].0, t1);
    assert!(renewing.iter().all(|(at, _)| *at >= t1 && *at < t2));
    assert_eq!(rebinding[0].0, t2);
    assert!(rebinding.iter().all(|(at, _)| *at >= t2 && *at < 3_600_000));
    // RFC 2131 §4.4.5: half the remaining time, not under 60 s (3 minutes for a 1 h lease / 20
    // would be more, so the RFC floor applies here).
    let mut prev = t1;
    for (at, _) in &renewing[1..] {
        let wait = at - prev;
        assert_eq!(wait, ((t2 - prev) / 2).max(60_000), "renewing wait from {prev}");
        prev = *at;
    }
    assert!(renewing.len() >= 4 && rebinding.len() >= 2, "{log:?}");
}

#[test]
fn short_lease_still_retransmits_in_each_state() {
    // Kea lab leases: 10 s. T1 5 s, T2 8.75 s; the 60 s RFC floor would leave one try each.
    let (log, end, _) = silent_until_expiry(10);
    assert_eq!(end, 10_000);
    let renewing = log.iter().filter(|(_, d)| *d != Destination::Broadcast).count();
    let rebinding = log.iter().filter(|(_, d)| *d == Destination::Broadcast).count();
    assert!(renewing >= 2 && rebinding >= 2, "{log:?}");
    for pair in log.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= 1000 || pair[1].1 != pair[0].1, "floor of 1 s: {log:?}");
    }
}

#[test]
fn late_timer_skips_to_the_right_state() {
    let mut t = T::new(config());
    t.bind(1000);
    // Suspended past T2: straight to REBINDING (broadcast), no stale unicast renewal.
    let a = t.timer_at(900_000);
    let (_, dest) = only_send(&a);
    assert_eq!((t.c.state(), dest), (State::Rebinding, Destination::Broadcast));
    let mut t = T::new(config());
    t.bind(1000);
    // Suspended past the lease end, and the event is a packet rather than a timer.
    t.now = 5_000_000;
    let a = t.ev(Event::Packet(&[1, 2, 3]));
    assert_eq!(deconfigured(&a).unwrap().1, LossReason::Expired);
    assert_eq!(t.c.state(), State::Selecting);
}

#[test]
fn nak_in_requesting() {
    let mut t = T::new(config());
    let (discover, _) = only_send(&t.ev(Event::Start));
    let (request, _) = only_send(&t.reply(offer(&discover, ADDR, SERVER, 3600)));
    // Another server has no say over our selection.
    assert!(t.reply(nak(&request, OTHER)).is_empty());
    assert_eq!(t.c.state(), State::Requesting);
    let a = t.reply(nak(&request, SERVER));
    assert!(deconfigured(&a).is_none(), "nothing was configured");
    let (d2, _) = only_send(&a);
    assert_eq!(msg_type(&d2), MessageType::Discover);
    assert_ne!(d2.xid(), discover.xid());
    assert_eq!(
        opt_addr(&d2, OptionCode::RequestedIpAddress),
        None,
        "refused address not asked again"
    );
    assert_eq!(t.c.state(), State::Selecting);
}

fn renewing(t: &mut T) -> Message {
    t.bind(3600);
    let (req, _) = only_send(&t.timer_at(1_800_000));
    assert_eq!(t.c.state(), State::Renewing);
    req
}

#[test]
fn nak_in_renewing() {
    let mut t = T::new(config());
    let req = renewing(&mut t);
    assert!(t.reply(nak(&req, OTHER)).is_empty(), "NAK from a server we did not ask: ignored");
    assert!(t.reply(ack(&req, ADDR, OTHER, 3600)).is_empty(), "so is its ACK");
    let a = t.reply(nak(&req, SERVER));
    assert_eq!(deconfigured(&a).unwrap().1, LossReason::Nak { server: SERVER });
    assert_eq!(msg_type(&only_send(&a).0), MessageType::Discover);
    assert_eq!(t.c.state(), State::Selecting);
    assert!(t.c.lease().is_none());
}

#[test]
fn nak_in_rebinding_from_any_server() {
    let mut t = T::new(config());
    t.bind(3600);
    let (req, dest) = only_send(&t.timer_at(3_150_000));
    assert_eq!((t.c.state(), dest), (State::Rebinding, Destination::Broadcast));
    assert_eq!(req.ciaddr(), ADDR);
    let a = t.reply(nak(&req, OTHER));
    assert_eq!(deconfigured(&a).unwrap().1, LossReason::Nak { server: OTHER });
    assert_eq!(t.c.state(), State::Selecting);
}

#[test]
fn rebinding_ack_from_another_server_moves_the_lease() {
    let mut t = T::new(config());
    t.bind(3600);
    let (req, _) = only_send(&t.timer_at(3_150_000));
    let lease = configured(&t.reply(ack(&req, ADDR, OTHER, 3600)));
    assert_eq!(lease.server_id, OTHER);
    let (_, dest) = only_send(&t.timer_at(3_150_000 + 1_800_000));
    assert_eq!(dest, Destination::Unicast(OTHER));
}

#[test]
fn init_reboot_success() {
    let mut c = config();
    c.requested_address = Some(ADDR);
    let mut t = T::new(c);
    assert_eq!(t.c.state(), State::InitReboot);
    let (req, dest) = only_send(&t.ev(Event::Start));
    assert_eq!((t.c.state(), dest), (State::Rebooting, Destination::Broadcast));
    assert_eq!(msg_type(&req), MessageType::Request);
    assert_eq!(req.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(opt_addr(&req, OptionCode::RequestedIpAddress), Some(ADDR));
    assert_eq!(opt_addr(&req, OptionCode::ServerIdentifier), None);
    let lease = configured(&t.reply(ack(&req, ADDR, SERVER, 600)));
    assert_eq!((lease.address, t.c.state()), (ADDR, State::Bound));
}

#[test]
fn nak_in_rebooting() {
    let mut c = config();
    c.requested_address = Some(ADDR);
    let mut t = T::new(c);
    let (req, _) = only_send(&t.ev(Event::Start));
    let a = t.reply(nak(&req, OTHER));
    assert!(deconfigured(&a).is_none());
    assert_eq!(msg_type(&only_send(&a).0), MessageType::Discover);
    assert_eq!(t.c.state(), State::Selecting);
}

#[test]
fn init_reboot_silent_server_falls_back_to_discover() {
    let mut c = config();
    c.requested_address = Some(ADDR);
    let mut t = T::new(c);
    only_send(&t.ev(Event::Start));
    let (again, _) = only_send(&t.fire());
    assert_eq!(msg_type(&again), MessageType::Request);
    assert!((1750..=2250).contains(&t.now), "{}", t.now);
    let (d, _) = only_send(&t.fire());
    assert_eq!(msg_type(&d), MessageType::Discover);
    assert_eq!(opt_addr(&d, OptionCode::RequestedIpAddress), Some(ADDR), "still asks for it");
    assert!(t.now <= 4500, "fallback well inside a 10 s attach timeout: {}", t.now);
}

#[test]
fn consecutive_naks_back_off() {
    let mut t = T::new(config());
    let mut discover = only_send(&t.ev(Event::Start)).0;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let (request, _) = only_send(&t.reply(offer(&discover, ADDR, SERVER, 3600)));
        let a = t.reply(nak(&request, SERVER));
        if sends(&a).is_empty() {
            assert_eq!(t.c.state(), State::Init);
            let wait = ms(t.c.next_deadline().unwrap()) - t.now;
            waits.push(wait);
            discover = only_send(&t.fire()).0;
        } else {
            waits.push(0);
            discover = only_send(&a).0;
        }
    }
    assert_eq!(waits, vec![0, 4000, 8000, 16000]);
}

fn probing() -> (T, Message) {
    let mut c = config();
    c.probe = true;
    let mut t = T::new(c);
    let (discover, _) = only_send(&t.ev(Event::Start));
    let (request, _) = only_send(&t.reply(offer(&discover, ADDR, SERVER, 3600)));
    let a = t.reply(ack(&request, ADDR, SERVER, 3600));
    assert_eq!(a, vec![Action::Probe(ADDR)]);
    assert_eq!(t.c.state(), State::Probing);
    (t, request)
}

#[test]
fn decline_after_positive_probe() {
    let (mut t, request) = probing();
    assert!(t.reply(ack(&request, ADDR, SERVER, 3600)).is_empty(), "no exchange while probing");
    let a = t.ev(Event::ProbeResult { in_use: true });
    let s = sends(&a);
    assert_eq!(s.len(), 2, "DECLINE then DISCOVER: {a:?}");
    let (decline, dest) = &s[0];
    assert_eq!(*dest, Destination::Broadcast);
    assert_eq!(msg_type(decline), MessageType::Decline);
    assert_ne!(decline.xid(), request.xid());
    assert_eq!(decline.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(opt_addr(decline, OptionCode::RequestedIpAddress), Some(ADDR));
    assert_eq!(opt_addr(decline, OptionCode::ServerIdentifier), Some(SERVER));
    assert!(decline.opts().get(OptionCode::ParameterRequestList).is_none(), "Table 5");
    assert!(decline.opts().get(OptionCode::Hostname).is_none(), "Table 5");
    assert!(!a.iter().any(|x| matches!(x, Action::Configure(_) | Action::Deconfigure { .. })));
    let (discover, _) = &s[1];
    assert_eq!(msg_type(discover), MessageType::Discover);
    assert_eq!(opt_addr(discover, OptionCode::RequestedIpAddress), None);
    assert_eq!(t.c.state(), State::Selecting);

    // A second conflict in a row waits DECLINE_WAIT before rediscovering.
    let (request, _) = only_send(&t.reply(offer(discover, ADDR, SERVER, 3600)));
    assert_eq!(t.reply(ack(&request, ADDR, SERVER, 3600)), vec![Action::Probe(ADDR)]);
    let a = t.ev(Event::ProbeResult { in_use: true });
    assert_eq!(msg_type(&only_send(&a).0), MessageType::Decline);
    assert_eq!(t.c.state(), State::Init);
    assert_eq!(t.c.next_deadline(), Some(Duration::from_millis(t.now) + DECLINE_WAIT));
    assert_eq!(msg_type(&only_send(&t.fire()).0), MessageType::Discover);
}

#[test]
fn probe_free_or_unanswered_binds() {
    let (mut t, _) = probing();
    t.now += 1500;
    let lease = configured(&t.ev(Event::ProbeResult { in_use: false }));
    assert_eq!(lease.acquired_unix_ms, WALL_BASE_MS, "lease still counts from the REQUEST");
    assert_eq!(t.c.state(), State::Bound);
    assert!(t.ev(Event::ProbeResult { in_use: true }).is_empty(), "stale probe result ignored");

    let (mut t, _) = probing();
    let a = t.fire();
    assert_eq!(t.now, ms(PROBE_TIMEOUT));
    configured(&a);
}

fn persisted(lease_secs: u32) -> Lease {
    let mut t = T::new(config());
    t.bind(lease_secs)
}

#[test]
fn resume_valid_lease_stays_bound() {
    let lease = persisted(3600);
    // Daemon restarted 10 minutes later; its monotonic clock starts again near zero.
    let now =
        Now { mono: Duration::from_secs(3), wall: Duration::from_millis(WALL_BASE_MS + 600_000) };
    let mut c = Client::resume(config(), lease.clone(), now, 7).unwrap();
    assert_eq!(c.state(), State::Bound);
    assert!(c.handle(Event::Start, now).is_empty(), "no packet, the address stays");
    assert_eq!(c.lease(), Some(&lease));
    assert_eq!(c.next_deadline(), Some(Duration::from_secs(3) + Duration::from_secs(1200)));
}

#[test]
fn resume_past_t1_renews_past_t2_rebinds() {
    let lease = persisted(3600);
    let now =
        Now { mono: Duration::from_secs(3), wall: Duration::from_millis(WALL_BASE_MS + 2_000_000) };
    let mut c = Client::resume(config(), lease.clone(), now, 7).unwrap();
    let (req, dest) = only_send(&c.handle(Event::Start, now));
    assert_eq!((c.state(), dest), (State::Renewing, Destination::Unicast(SERVER)));
    assert_eq!(req.ciaddr(), ADDR);

    let now =
        Now { mono: Duration::from_secs(3), wall: Duration::from_millis(WALL_BASE_MS + 3_200_000) };
    let mut c = Client::resume(config(), lease, now, 7).unwrap();
    let (_, dest) = only_send(&c.handle(Event::Start, now));
    assert_eq!((c.state(), dest), (State::Rebinding, Destination::Broadcast));
    // The expiry deadline is where the persisted lease said.
    let mut last = Vec::new();
    let mut now = now;
    while c.lease().is_some() {
        now.mono = c.next_deadline().unwrap();
        last = c.handle(Event::Timer, now);
    }
    assert_eq!(deconfigured(&last).unwrap().1, LossReason::Expired);
    assert_eq!(now.mono, Duration::from_secs(3 + 400));
}

#[test]
fn resume_expired_lease_deconfigures_and_discovers() {
    let lease = persisted(3600);
    let now = Now { mono: Duration::ZERO, wall: Duration::from_millis(WALL_BASE_MS + 90 * DAY) };
    let mut c = Client::resume(config(), lease, now, 7).unwrap();
    let a = c.handle(Event::Start, now);
    assert_eq!(deconfigured(&a).unwrap().1, LossReason::Expired);
    assert_eq!(msg_type(&only_send(&a).0), MessageType::Discover);
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn resume_with_clock_behind_verifies_with_init_reboot() {
    let lease = persisted(3600);
    let now = Now { mono: Duration::ZERO, wall: Duration::from_millis(WALL_BASE_MS - DAY) };
    let mut c = Client::resume(config(), lease.clone(), now, 7).unwrap();
    assert_eq!(c.state(), State::InitReboot);
    assert_eq!(c.next_deadline(), None);
    let (req, _) = only_send(&c.handle(Event::Start, now));
    assert_eq!(c.state(), State::Rebooting);
    assert_eq!(opt_addr(&req, OptionCode::RequestedIpAddress), Some(ADDR));
    // Silence: the lease cannot be trusted, so it goes.
    let mut now = now;
    let mut a = Vec::new();
    for _ in 0..2 {
        now.mono = c.next_deadline().unwrap();
        a = c.handle(Event::Timer, now);
    }
    assert_eq!(deconfigured(&a).unwrap().1, LossReason::Unverified);
    assert_eq!(c.state(), State::Selecting);

    let mut c = Client::resume(config(), lease, now, 8).unwrap();
    let (req, _) = only_send(&c.handle(Event::Start, now));
    let l = configured(&c.handle(Event::Packet(&ack(&req, ADDR, SERVER, 3600)), now));
    assert_eq!(l.acquired_unix_ms, WALL_BASE_MS - DAY);
}

#[test]
fn resume_refuses_nonsense_records() {
    let mut lease = persisted(3600);
    lease.address = Ipv4Addr::BROADCAST;
    let err = Client::resume(config(), lease, at(0), 1).unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::Usage);
    assert!(err.message().contains("255.255.255.255"), "{}", err.message());
}

#[test]
fn infinite_lease_never_renews() {
    let mut t = T::new(config());
    let lease = t.bind(INFINITE_LEASE);
    assert_eq!(lease.timers, None);
    assert_eq!(t.c.next_deadline(), None);
    assert!(t.timer_at(u64::from(u32::MAX) * 1000).is_empty());
    assert_eq!(t.c.state(), State::Bound);
}

#[test]
fn absurd_lease_times_are_clamped() {
    let mut t = T::new(config());
    let lease = t.bind(0);
    assert_eq!(lease.timers.unwrap().lease_ms, u64::from(MIN_LEASE_SECS) * 1000);
    assert_eq!(t.c.next_deadline(), Some(Duration::from_millis(1000)));
    let mut t = T::new(config());
    let lease = t.bind(u32::MAX - 1);
    assert_eq!(lease.timers.unwrap().lease_ms, u64::from(MAX_LEASE_SECS) * 1000);
    // T1 > T2 from the server: defaults.
    let mut t = T::new(config());
    let (d, _) = only_send(&t.ev(Event::Start));
    let (r, _) = only_send(&t.reply(offer(&d, ADDR, SERVER, 100)));
    let mut m = server_msg(&r, MessageType::Ack, ADDR, SERVER);
    m.opts_mut().insert(DhcpOption::Renewal(90));
    m.opts_mut().insert(DhcpOption::Rebinding(10));
    let l = configured(&t.reply(with_lease(m, 100)));
    assert_eq!(l.timers.unwrap().t1_ms, 50_000);
}

#[test]
fn retransmission_backoff_with_jitter() {
    for seed in 0..200 {
        let mut c = Client::new(config(), seed).unwrap();
        let mut now = at(0);
        c.handle(Event::Start, now);
        let mut intervals = Vec::new();
        for _ in 0..7 {
            let next = c.next_deadline().unwrap();
            intervals.push(ms(next - now.mono));
            now.mono = next;
            assert_eq!(sends(&c.handle(Event::Timer, now)).len(), 1);
        }
        for (i, base) in [4000u64, 8000, 16000, 32000, 64000, 64000, 64000].iter().enumerate() {
            let got = intervals[i];
            assert!(got + 1000 >= *base && got <= base + 1000, "seed {seed}: {intervals:?}");
        }
        assert_eq!(c.state(), State::Selecting, "DISCOVER goes on until the caller gives up");
    }
    // The jitter is actually there.
    let firsts: std::collections::BTreeSet<_> = (0..50)
        .map(|seed| {
            let mut c = Client::new(config(), seed).unwrap();
            c.handle(Event::Start, at(0));
            c.next_deadline().unwrap()
        })
        .collect();
    assert!(firsts.len() > 40);
}

#[test]
fn request_retransmits_then_starts_over() {
    let mut t = T::new(config());
    let (d, _) = only_send(&t.ev(Event::Start));
    t.now = 2500;
    let (r, _) = only_send(&t.reply(offer(&d, ADDR, SERVER, 3600)));
    let mut seen = vec![(r.xid(), r.secs())];
    loop {
        let (m, _) = only_send(&t.fire());
        if msg_type(&m) == MessageType::Discover {
            break;
        }
        seen.push((m.xid(), m.secs()));
    }
    assert_eq!(seen.len() as u32, REQUEST_TRANSMISSIONS);
    assert!(seen.iter().all(|&(xid, secs)| xid == d.xid() && secs == d.secs()), "{seen:?}");
    assert!((55_500..=64_500).contains(&(t.now - 2500)), "{}", t.now);
    assert_eq!(t.c.state(), State::Selecting);
}

#[test]
fn discover_secs_counts_up() {
    let mut t = T::new(config());
    only_send(&t.ev(Event::Start));
    let (d2, _) = only_send(&t.fire());
    let d2_at = t.now;
    let (d3, _) = only_send(&t.fire());
    assert_eq!(u64::from(d2.secs()), d2_at / 1000);
    assert_eq!(u64::from(d3.secs()), t.now / 1000);
    assert_eq!(d2.xid(), d3.xid(), "one exchange, one xid");
}

#[test]
fn hostile_and_stray_packets_are_ignored() {
    let mut t = T::new(config());
    let (d, _) = only_send(&t.ev(Event::Start));
    let good = offer(&d, ADDR, SERVER, 3600);
    let mut cases: Vec<Vec<u8>> = Vec::new();
    let mut wrong_xid = good.clone();
    wrong_xid[7] ^= 1;
    cases.push(wrong_xid);
    let mut wrong_mac = good.clone();
    wrong_mac[33] ^= 1;
    cases.push(wrong_mac);
    let mut request = good.clone();
    request[0] = 1;
    cases.push(request);
    for len in 0..good.len() {
        // Every truncation that cuts into an option (a cut exactly between options is a
        // complete reply without END, which is accepted).
        let cut = good[..len].to_vec();
        if packet::parse_reply(&cut, &MAC, d.xid()).is_err() {
            cases.push(cut);
        }
    }
    assert!(cases.len() > 250);
    // Overload pointing at a `file` field full of garbage.
    let mut m = server_msg(&d, MessageType::Offer, ADDR, SERVER);
    m.opts_mut().insert(DhcpOption::OptionOverload(1));
    m.set_fname(&[3; 128]);
    cases.push(with_lease(m, 3600));
    // yiaddr 0, broadcast, multicast; no server id; no lease time; bad mask.
    for bad in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 1)] {
        cases.push(offer(&d, bad, SERVER, 3600));
    }
    let mut m = server_msg(&d, MessageType::Offer, ADDR, SERVER);
    m.opts_mut().remove(OptionCode::ServerIdentifier);
    cases.push(with_lease(m, 3600));
    cases.push(server_msg(&d, MessageType::Offer, ADDR, SERVER).to_vec().unwrap());
    let mut m = server_msg(&d, MessageType::Offer, ADDR, SERVER);
    m.opts_mut().insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
    m.opts_mut().insert(DhcpOption::AddressLeaseTime(60));
    cases.push(m.to_vec().unwrap());
    // An ACK while selecting, and our own DISCOVER echoed back.
    cases.push(ack(&d, ADDR, SERVER, 3600));
    cases.push(d.to_vec().unwrap());
    for case in &cases {
        assert!(t.reply(case.clone()).is_empty(), "{case:?}");
        assert_eq!(t.c.state(), State::Selecting);
    }
    // The genuine OFFER still works afterwards, and a duplicate is then ignored.
    let (r, _) = only_send(&t.reply(good.clone()));
    assert!(t.reply(good).is_empty());
    assert!(t.reply(offer(&d, Ipv4Addr::new(192, 168, 1, 77), OTHER, 3600)).is_empty());
    assert_eq!(t.c.state(), State::Requesting);
    // An ACK from a server we did not select is not ours either.
    assert!(t.reply(ack(&r, ADDR, OTHER, 3600)).is_empty());
    assert_eq!(configured(&t.reply(ack(&r, ADDR, SERVER, 3600))).address, ADDR);
    // Nothing is expected in BOUND: even a well-formed ACK is stray.
    assert!(t.reply(ack(&r, ADDR, SERVER, 3600)).is_empty());
}

/// Replays a scripted client into each state, for the random-input tests.
fn in_each_state() -> Vec<(T, Option<Message>)> {
    let mut out = Vec::new();
    out.push((T::new(config()), None));
    let mut t = T::new(config());
    let (d, _) = only_send(&t.ev(Event::Start));
    out.push((t, Some(d.clone())));
    let mut t = T::new(config());
    let (d, _) = only_send(&t.ev(Event::Start));
    let (r, _) = only_send(&t.reply(offer(&d, ADDR, SERVER, 3600)));
    out.push((t, Some(r)));
    let (t, r) = probing();
    out.push((t, Some(r)));
    let mut t = T::new(config());
    t.bind(3600);
    out.push((t, None));
    let mut t = T::new(config());
    let r = renewing(&mut t);
    out.push((t, Some(r)));
    let mut t = T::new(config());
    t.bind(3600);
    let (r, _) = only_send(&t.timer_at(3_150_000));
    out.push((t, Some(r)));
    let mut c = config();
    c.requested_address = Some(ADDR);
    let mut t = T::new(c.clone());
    out.push((T::new(c), None));
    let (r, _) = only_send(&t.ev(Event::Start));
    out.push((t, Some(r)));
    let mut t = T::new(config());
    t.bind(3600);
    t.ev(Event::Release);
    out.push((t, None));
    let states: std::collections::BTreeSet<_> =
        out.iter().map(|(t, _)| t.c.state().to_string()).collect();
    assert_eq!(states.len(), 10, "{states:?}");
    out
}

struct Fuzz(u64);
impl Fuzz {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_in_every_state() {
    let mut rng = Fuzz(0x1234_5678_9abc_def1);
    for (mut t, _) in in_each_state() {
        let state = t.c.state();
        let deadline = t.c.next_deadline();
        for _ in 0..3000 {
            let len = (rng.next() % 700) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert!(t.reply(bytes).is_empty());
        }
        assert_eq!((t.c.state(), t.c.next_deadline()), (state, deadline));
    }
}

#[test]
fn mutated_replies_in_every_state_never_panic() {
    // Valid replies with the right xid and chaddr, then bytes flipped, inserted and cut: these
    // get past the header checks and exercise the option walker and the transitions.
    let mut rng = Fuzz(0x0dd_ba11);
    for (t, req) in in_each_state() {
        let Some(req) = req else { continue };
        let seeds = [
            offer(&req, ADDR, SERVER, 3600),
            ack(&req, ADDR, SERVER, 3600),
            nak(&req, SERVER),
            ack(&req, ADDR, OTHER, 1),
        ];
        for i in 0..4000 {
            let mut t = T { c: t.c.clone(), now: t.now };
            let mut bytes = seeds[i % seeds.len()].clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = 236 + (rng.next() as usize % (bytes.len() - 236));
                match rng.next() % 3 {
                    0 => bytes[at] = rng.next() as u8,
                    1 => bytes.insert(at, rng.next() as u8),
                    _ => bytes.truncate(at.max(240)),
                }
            }
            // Mutations start past the fixed header, so whatever is configured is the yiaddr
            // the seeds carry, with timers in their order (T1 <= T2 <= lease).
            for action in t.reply(bytes) {
                if let Action::Configure(lease) = action {
                    assert_eq!(lease.address, ADDR, "round {i}");
                    if let Some(timers) = lease.timers {
                        assert!(
                            timers.t1_ms <= timers.t2_ms && timers.t2_ms <= timers.lease_ms,
                            "round {i}: {timers:?}"
                        );
                    }
                }
            }
            t.now += 10_000_000;
            t.ev(Event::Timer);
        }
    }
}

#[test]
fn link_down_silences_and_link_up_verifies() {
    let mut t = T::new(config());
    t.bind(3600);
    assert!(t.ev(Event::LinkDown).is_empty());
    // T1 passes while down: RENEWING, but nothing on the wire.
    assert!(t.timer_at(1_800_000).is_empty());
    assert_eq!(t.c.state(), State::Renewing);
    t.now = 1_900_000;
    let (req, dest) = only_send(&t.ev(Event::LinkUp));
    assert_eq!((t.c.state(), dest), (State::Rebooting, Destination::Broadcast));
    assert_eq!(opt_addr(&req, OptionCode::RequestedIpAddress), Some(ADDR));
    assert!(t.ev(Event::LinkUp).is_empty(), "already up");
    // Unanswered: the lease (times known) is kept and renewal resumes.
    only_send(&t.fire());
    let a = t.fire();
    assert!(deconfigured(&a).is_none());
    let (renew, dest) = only_send(&a);
    assert_eq!((t.c.state(), dest), (State::Renewing, Destination::Unicast(SERVER)));
    assert_eq!(renew.ciaddr(), ADDR);

    // Answered on the new link with another address: old one out, new one in.
    let mut t = T::new(config());
    t.bind(3600);
    t.ev(Event::LinkDown);
    let (req, _) = only_send(&t.ev(Event::LinkUp));
    let a = t.reply(ack(&req, Ipv4Addr::new(192, 168, 1, 60), SERVER, 3600));
    let (old, reason) = deconfigured(&a).unwrap();
    assert_eq!((old.address, reason), (ADDR, LossReason::Replaced));
    assert!(matches!(a[0], Action::Deconfigure { .. }), "old address out first");
    assert_eq!(configured(&a).address, Ipv4Addr::new(192, 168, 1, 60));
    assert_eq!(t.c.lease().unwrap().address, Ipv4Addr::new(192, 168, 1, 60));
}

#[test]
fn a_flap_told_in_one_instant_is_verified_like_a_long_one() {
    // The daemon tells the client a down and an up it read in one wake-up at the same instant.
    let mut t = T::new(config());
    t.bind(3600);
    t.now = 100_000;
    assert!(t.ev(Event::LinkDown).is_empty());
    let (req, dest) = only_send(&t.ev(Event::LinkUp));
    assert_eq!(msg_type(&req), MessageType::Request);
    assert_eq!((t.c.state(), dest), (State::Rebooting, Destination::Broadcast));
    assert_eq!(opt_addr(&req, OptionCode::RequestedIpAddress), Some(ADDR));
}

#[test]
fn link_down_during_selecting_restarts_on_link_up() {
    let mut t = T::new(config());
    t.ev(Event::LinkDown);
    assert!(t.ev(Event::Start).is_empty());
    assert_eq!(t.c.state(), State::Selecting);
    assert!(t.fire().is_empty());
    t.now += 1;
    let (d, _) = only_send(&t.ev(Event::LinkUp));
    assert_eq!(msg_type(&d), MessageType::Discover);
    assert!(ms(t.c.next_deadline().unwrap()) - t.now <= 5000, "backoff restarted");
}

#[test]
fn release_then_silence_then_restart() {
    let mut t = T::new(config());
    t.bind(3600);
    let a = t.ev(Event::Release);
    let (rel, dest) = only_send(&a);
    assert_eq!(dest, Destination::Unicast(SERVER));
    assert_eq!(msg_type(&rel), MessageType::Release);
    assert_eq!(rel.ciaddr(), ADDR);
    assert_eq!(opt_addr(&rel, OptionCode::ServerIdentifier), Some(SERVER));
    assert_eq!(opt_addr(&rel, OptionCode::RequestedIpAddress), None, "Table 5: MUST NOT");
    assert_eq!(deconfigured(&a).unwrap().1, LossReason::Released);
    let send_pos = a.iter().position(|x| matches!(x, Action::Send { .. })).unwrap();
    assert_eq!(send_pos, 0, "RELEASE goes out while the address still exists");
    assert_eq!((t.c.state(), t.c.next_deadline()), (State::Released, None));
    assert!(t.timer_at(10 * DAY).is_empty());
    assert!(t.ev(Event::Release).is_empty());
    let (d, _) = only_send(&t.ev(Event::Start));
    assert_eq!(msg_type(&d), MessageType::Discover);

    // Releasing before any lease just stops, even with a retransmission due.
    let mut t = T::new(config());
    t.ev(Event::Start);
    t.now = 60_000;
    assert!(t.ev(Event::Release).is_empty());
    assert_eq!(t.c.state(), State::Released);
}

#[test]
fn resume_infinite_lease() {
    let lease = persisted(INFINITE_LEASE);
    let now = Now { mono: Duration::ZERO, wall: Duration::from_millis(WALL_BASE_MS + 400 * DAY) };
    let mut c = Client::resume(config(), lease, now, 7).unwrap();
    assert!(c.handle(Event::Start, now).is_empty());
    assert_eq!((c.state(), c.next_deadline()), (State::Bound, None));
}

#[test]
fn start_is_ignored_while_running() {
    let mut t = T::new(config());
    t.bind(3600);
    assert!(t.ev(Event::Start).is_empty());
    assert_eq!(t.c.state(), State::Bound);
}

#[test]
fn config_validation() {
    let check = |f: &dyn Fn(&mut ClientConfig)| {
        let mut c = config();
        f(&mut c);
        Client::new(c, 0).map(|_| ()).map_err(|e| (e.kind(), e.to_string()))
    };
    assert!(check(&|_| {}).is_ok());
    assert!(check(&|c| c.client_id.clear()).is_ok());
    let err = check(&|c| c.mac = [1, 0, 0, 0, 0, 1]).unwrap_err();
    assert_eq!(err.0, crate::error::ErrorKind::Usage);
    assert!(err.1.contains("01:00:00:00:00:01"), "{}", err.1);
    assert!(check(&|c| c.client_id = vec![1]).is_err());
    assert!(check(&|c| c.client_id = vec![1; 256]).is_err());
    assert!(check(&|c| c.hostname = Some("web.lab".into())).unwrap_err().1.contains("FQDN"));
    assert!(check(&|c| c.hostname = Some("we b".into())).is_err());
    assert!(check(&|c| c.fqdn = Some("web.lab.example".into())).is_ok());
    assert!(check(&|c| c.fqdn = Some("web..lab".into())).is_err());
    assert!(check(&|c| c.requested_address = Some(Ipv4Addr::BROADCAST)).is_err());
    assert!(check(&|c| c.max_message_size = 575).is_err());
}

#[test]
fn empty_client_id_defaults_to_mac_form() {
    let mut c = config();
    c.client_id.clear();
    let mut t = T::new(c);
    let (d, _) = only_send(&t.ev(Event::Start));
    let mut want = vec![1];
    want.extend(MAC);
    assert_eq!(
        d.opts().get(OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(want))
    );
}

#[test]
fn broadcast_flag_only_without_address() {
    let mut c = config();
    c.broadcast_flag = true;
    let mut t = T::new(c);
    let (d, _) = only_send(&t.ev(Event::Start));
    assert!(d.flags().broadcast());
    let (r, _) = only_send(&t.reply(offer(&d, ADDR, SERVER, 3600)));
    assert!(r.flags().broadcast());
    t.reply(ack(&r, ADDR, SERVER, 3600));
    let (renew, _) = only_send(&t.timer_at(1_800_000));
    assert!(!renew.flags().broadcast());
}

/// A DHCPOFFER laid out the way dnsmasq 2.9x sends one, written out byte by byte from RFC 2131
/// §2 and RFC 2132 rather than produced by any library.
#[test]
fn parses_hand_built_dnsmasq_offer() {
    let mut t = T::new(config());
    let (d, _) = only_send(&t.ev(Event::Start));
    let x = d.xid().to_be_bytes();
    let mut b = vec![2, 1, 6, 0, x[0], x[1], x[2], x[3], 0, 0, 0, 0];
    b.extend([0, 0, 0, 0, 192, 168, 1, 50, 192, 168, 1, 1, 0, 0, 0, 0]); // ci yi si gi
    b.extend(MAC);
    b.extend([0; 10]);
    b.extend([0; 192]);
    b.extend([99, 130, 83, 99]);
    b.extend([53, 1, 2]);
    b.extend([54, 4, 192, 168, 1, 1]);
    b.extend([51, 4, 0, 0, 0x0e, 0x10]); // 3600
    b.extend([58, 4, 0, 0, 0x07, 0x08]); // 1800
    b.extend([59, 4, 0, 0, 0x0c, 0x4e]); // 3150
    b.extend([1, 4, 255, 255, 255, 0]);
    b.extend([28, 4, 192, 168, 1, 255]);
    b.extend([3, 4, 192, 168, 1, 1]);
    b.extend([6, 4, 192, 168, 1, 1]);
    b.extend([15, 3, b'l', b'a', b'b']);
    b.extend([119, 9, 3, b'l', b'a', b'b', 0, 3, b'o', b'r', b'g']);
    b.extend([0, 255]);
    let a = t.reply(b);
    assert_eq!(t.c.state(), State::Requesting);
    let (r, _) = only_send(&a);
    assert_eq!(opt_addr(&r, OptionCode::RequestedIpAddress), Some(ADDR));
}

#[test]
fn search_list_and_classless_routes_reach_the_lease() {
    let mut t = T::new(config());
    let (d, _) = only_send(&t.ev(Event::Start));
    let (r, _) = only_send(&t.reply(offer(&d, ADDR, SERVER, 3600)));
    let mut m = server_msg(&r, MessageType::Ack, ADDR, SERVER);
    m.opts_mut().insert(DhcpOption::DomainSearch(vec![
        dhcproto::Name::from_ascii("lab.example.").unwrap(),
        dhcproto::Name::from_ascii("example.").unwrap(),
    ]));
    m.opts_mut().insert(DhcpOption::ClasslessStaticRoute(vec![
        ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(192, 168, 1, 254)),
        ("10.0.0.0/8".parse().unwrap(), Ipv4Addr::new(192, 168, 1, 9)),
    ]));
    m.opts_mut().insert(DhcpOption::InterfaceMtu(1400));
    let l = configured(&t.reply(with_lease(m, 3600)));
    assert_eq!(l.domain_search, vec!["lab.example".to_string(), "example".to_string()]);
    assert_eq!(l.gateway(), Some(Ipv4Addr::new(192, 168, 1, 254)), "121 wins over 3");
    assert_eq!(l.routes().len(), 2);
    assert_eq!(l.mtu, Some(1400));
}
