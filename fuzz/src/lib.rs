//! Fuzz target bodies. cargo-fuzz builds them with nightly and libFuzzer (this directory is its
//! own workspace); the main crate's `tests/fuzz_corpus.rs` includes this file as a module and
//! runs the corpus (`corpus/dhcp_packet/`) and [`seed_inputs`] through the same functions on
//! every `cargo test`, so the target cannot rot unseen.

use std::net::Ipv4Addr;
use std::time::Duration;

use lanyard::dhcp::{Action, Client, ClientConfig, Event, Now, State};

const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
const SERVER: [u8; 4] = [192, 168, 1, 1];
const ADDR: [u8; 4] = [192, 168, 1, 50];

fn at(ms: u64) -> Now {
    Now { mono: Duration::from_millis(ms), wall: Duration::from_millis(1_700_000_000_000 + ms) }
}

/// The xid of the last packet the client sent (bytes 4..8 of a BOOTP header).
fn last_xid(actions: &[Action]) -> [u8; 4] {
    actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Send { packet, .. } if packet.len() >= 8 => {
                Some([packet[4], packet[5], packet[6], packet[7]])
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// A server reply laid out by hand (RFC 2131 §2): type 2 OFFER, 5 ACK, 6 NAK; 1 h lease.
fn reply(xid: [u8; 4], kind: u8) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[..4].copy_from_slice(&[2, 1, 6, 0]);
    b[4..8].copy_from_slice(&xid);
    if kind != 6 {
        b[16..20].copy_from_slice(&ADDR);
    }
    b[28..34].copy_from_slice(&MAC);
    b.extend([99, 130, 83, 99, 53, 1, kind, 54, 4]);
    b.extend(SERVER);
    b.extend([51, 4, 0, 0, 0x0e, 0x10, 1, 4, 255, 255, 255, 0, 255]);
    b
}

/// A client driven by a scripted server into state number `which` (0..10), and the xid its
/// current exchange uses.
fn client_in(which: u8) -> (Client, [u8; 4], u64) {
    let mut config = ClientConfig::new(MAC, b"\xfffuzz".to_vec());
    config.hostname = Some("fuzz".into());
    config.probe = which == 3;
    if which == 7 || which == 8 {
        config.requested_address = Some(Ipv4Addr::from(ADDR));
    }
    let mut c = Client::new(config, u64::from(which)).expect("valid config");
    let mut now = 0;
    if which == 0 || which == 7 {
        return (c, [0; 4], now);
    }
    let mut xid = last_xid(&c.handle(Event::Start, at(now)));
    if which == 8 {
        return (c, xid, now);
    }
    if which >= 2 {
        c.handle(Event::Packet(&reply(xid, 2)), at(now));
    }
    if which >= 3 {
        c.handle(Event::Packet(&reply(xid, 5)), at(now));
    }
    match which {
        5 => now = 1_800_000,
        6 => now = 3_150_000,
        9 => {
            c.handle(Event::Release, at(now));
        }
        _ => {}
    }
    if which == 5 || which == 6 {
        xid = last_xid(&c.handle(Event::Timer, at(now)));
    }
    let want = [
        State::Init,
        State::Selecting,
        State::Requesting,
        State::Probing,
        State::Bound,
        State::Renewing,
        State::Rebinding,
        State::InitReboot,
        State::Rebooting,
        State::Released,
    ][usize::from(which)];
    assert_eq!(c.state(), want, "fuzz script drifted from the client");
    (c, xid, now)
}

/// Invariants after every event: what the client sends is a BOOTREQUEST for our MAC with the
/// DHCP cookie, padded to the BOOTP minimum; it holds a lease exactly in the states that have
/// one; a Configure is for a lease it holds; nothing is configured after a Deconfigure in the
/// same batch without a new lease in between.
fn check(c: &Client, actions: &[Action]) {
    let mut configured = None;
    for a in actions {
        match a {
            Action::Send { packet, .. } => {
                assert!(packet.len() >= 300 && packet[0] == 1, "malformed outgoing packet");
                assert_eq!(&packet[28..34], &MAC, "outgoing chaddr is not our MAC");
                assert_eq!(&packet[236..240], &[99, 130, 83, 99], "no DHCP magic cookie");
            }
            Action::Configure(lease) => configured = Some(lease.address),
            Action::Deconfigure { .. } => configured = None,
            _ => {}
        }
    }
    if let Some(address) = configured {
        assert_eq!(
            c.lease().map(|l| l.address),
            Some(address),
            "configured {address} but holds {:?}",
            c.lease().map(|l| l.address)
        );
    }
    let holds = c.lease().is_some();
    match c.state() {
        State::Bound | State::Renewing | State::Rebinding => assert!(holds),
        State::Init | State::Selecting | State::Requesting | State::Probing | State::Released => {
            assert!(!holds)
        }
        State::InitReboot | State::Rebooting => {}
    }
}

/// First byte: which state (low nibble, mod 10) and whether to patch the header so the input
/// passes the xid/chaddr/op checks (high bit) and reaches the option parser. The rest is the
/// packet. Afterwards time jumps ahead and the link flaps, so whatever the packet did, the
/// following transitions run too.
pub fn dhcp_packet(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let (mut c, xid, now) = client_in((selector & 0x0f) % 10);
    let mut packet = rest.to_vec();
    if selector & 0x80 != 0 && packet.len() >= 240 {
        packet[..4].copy_from_slice(&[2, 1, 6, 0]);
        packet[4..8].copy_from_slice(&xid);
        packet[28..34].copy_from_slice(&MAC);
        packet[236..240].copy_from_slice(&[99, 130, 83, 99]);
    }
    let a = c.handle(Event::Packet(&packet), at(now + 1));
    check(&c, &a);
    let later = c.next_deadline().map_or(now + 2, |d| d.as_millis() as u64);
    for event in [Event::Timer, Event::LinkDown, Event::LinkUp, Event::ProbeResult { in_use: true }]
    {
        let a = c.handle(event, at(later));
        check(&c, &a);
    }
    let a = c.handle(Event::Packet(&packet), at(later + 1));
    check(&c, &a);
    let a = c.handle(Event::Release, at(later + 2));
    check(&c, &a);
    assert_eq!(c.state(), State::Released, "a release always ends RELEASED");
    assert!(c.lease().is_none(), "nothing held after a release");
    assert!(!a.iter().any(|a| matches!(a, Action::Configure(_))), "a release configures nothing");
}

/// Inputs that reach every state with well-formed OFFER, ACK and NAK replies (patched and not),
/// each cut at a few lengths: the seeds of the corpus, and a floor for the ordinary test run.
pub fn seed_inputs() -> Vec<Vec<u8>> {
    let mut inputs = vec![Vec::new(), vec![0x80]];
    for which in 0u8..10 {
        for kind in [2u8, 5, 6] {
            let packet = reply([0; 4], kind);
            for patch in [0u8, 0x80] {
                for cut in [packet.len(), 240, 241, 250, packet.len() - 1] {
                    let mut input = vec![which | patch];
                    input.extend(&packet[..cut]);
                    inputs.push(input);
                }
            }
        }
    }
    inputs
}
