//! DHCP messages on the wire: building the client's messages with `dhcproto`, and a strict parser
//! for the server's replies.
//!
//! Replies are not decoded with `dhcproto::v4::Message::decode`: with dhcproto 0.15 a hostile
//! packet can make it panic (an `hlen` above 16 panics in `Message::chaddr`; option 81 with a
//! length under 3 and option 80 with a non-zero length hit `debug_assert!`s or a subtraction
//! underflow), it stops at the first malformed option and silently drops every option after it,
//! and it ignores option overload (52). The parser below checks the fixed header against what
//! we expect before looking at options, walks the options of the `options`, `file` and `sname`
//! fields in the RFC 3396 order, and never indexes without a bound.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::Encodable;

use super::client::ClientConfig;
use super::lease::{Lease, Timers};
use super::options;

/// RFC 2131 §3: the first four octets of the options field.
pub(crate) const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// RFC 2131 §2: op, htype, hlen, hops, xid, secs, flags, 4 addresses, chaddr, sname, file.
const FIXED_LEN: usize = 236;
const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;
/// RFC 1542 §2.1: relays may drop BOOTP messages shorter than 300 octets; pad up to it.
const MIN_MESSAGE_LEN: usize = 300;

/// The parameter request list (RFC 2132 §9.8). 121 comes first only for readability; RFC 3442
/// needs it present, not in any place.
const REQUESTED: [u8; 10] = [1, 121, 3, 6, 15, 119, 26, 51, 58, 59];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Discover,
    Request,
    Decline,
    Release,
}

/// The fields of one client message that change between states; RFC 2131 §4.4.1 Table 5 says
/// which must be set where, and the client fills this in accordingly.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outgoing {
    pub kind: Kind,
    pub xid: u32,
    pub secs: u16,
    pub ciaddr: Ipv4Addr,
    pub requested: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
}

/// Builds a client message. `None` only if dhcproto refuses to encode, which the client rules out
/// by building a DISCOVER from the same configuration in `Client::new`.
pub(crate) fn build(config: &ClientConfig, out: &Outgoing) -> Option<Vec<u8>> {
    let mut msg = Message::new_with_id(
        out.xid,
        out.ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &config.mac,
    );
    msg.set_secs(out.secs);
    let negotiating = matches!(out.kind, Kind::Discover | Kind::Request);
    // RFC 2131 §4.1: only a client that cannot receive unicast before it has an address sets
    // BROADCAST, and only while it has none (Table 5: DECLINE and RELEASE have flags 0).
    if config.broadcast_flag && negotiating && out.ciaddr.is_unspecified() {
        msg.set_flags(Flags::default().set_broadcast());
    }
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(match out.kind {
        Kind::Discover => MessageType::Discover,
        Kind::Request => MessageType::Request,
        Kind::Decline => MessageType::Decline,
        Kind::Release => MessageType::Release,
    }));
    opts.insert(DhcpOption::ClientIdentifier(config.effective_client_id()));
    if let Some(addr) = out.requested {
        opts.insert(DhcpOption::RequestedIpAddress(addr));
    }
    if let Some(server) = out.server_id {
        opts.insert(DhcpOption::ServerIdentifier(server));
    }
    // Table 5: DECLINE and RELEASE carry nothing else ("all others MUST NOT").
    if negotiating {
        opts.insert(DhcpOption::ParameterRequestList(
            REQUESTED.iter().map(|&c| OptionCode::from(c)).collect(),
        ));
        opts.insert(DhcpOption::MaxMessageSize(config.max_message_size));
        // RFC 4702 §3.1: a client that sends option 81 must not also send option 12.
        if config.server_must_not_update_dns {
            // N: the server must not update DNS (S must then be 0, RFC 4702 §2.1). The name
            // only informs the server; with none, an empty one (RFC 4702 §3.1 allows it).
            let name = config.fqdn.as_deref().or(config.hostname.as_deref());
            opts.insert(client_fqdn(FQDN_N | FQDN_E, name));
        } else if let Some(fqdn) = &config.fqdn {
            // S: the server updates the A record; E: canonical wire encoding (RFC 4702 §2.1).
            opts.insert(client_fqdn(FQDN_S | FQDN_E, Some(fqdn)));
        } else if let Some(host) = &config.hostname {
            opts.insert(DhcpOption::Hostname(host.clone()));
        }
    } else if out.kind == Kind::Decline {
        // Table 5: "Message SHOULD" for DECLINE; it shows up in the server's log.
        opts.insert(DhcpOption::Message("address in use (ARP probe answered)".into()));
    }
    let mut bytes = msg.to_vec().ok()?;
    if bytes.len() < MIN_MESSAGE_LEN {
        bytes.resize(MIN_MESSAGE_LEN, 0);
    }
    Some(bytes)
}

/// Why a received packet was ignored; the client drops it either way, tests check the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    Truncated,
    NotReply,
    NotEthernet,
    WrongXid,
    WrongChaddr,
    BadCookie,
    BadOptions,
    BadOverload,
    NoMessageType,
    UnexpectedType,
    BadServerId,
    BadAddress,
    BadMask,
    NoLeaseTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    Offer,
    Ack,
    Nak,
}

/// A reply that passed every check. `options` holds each option once, RFC 3396 concatenation
/// already applied.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub kind: ReplyKind,
    pub yiaddr: Ipv4Addr,
    pub server_id: Ipv4Addr,
    pub options: BTreeMap<u8, Vec<u8>>,
}

fn addr_at(bytes: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
}

/// Parses a server's reply meant for `mac` within the exchange `xid` (RFC 2131 §4.4.1: replies
/// are matched by xid and chaddr). The header checks come first, so stray traffic costs only a
/// few comparisons.
pub(crate) fn parse_reply(bytes: &[u8], mac: &[u8; 6], xid: u32) -> Result<Reply, Reject> {
    if bytes.len() < FIXED_LEN + MAGIC_COOKIE.len() {
        return Err(Reject::Truncated);
    }
    if bytes[0] != 2 {
        return Err(Reject::NotReply);
    }
    if bytes[1] != 1 || bytes[2] != 6 {
        return Err(Reject::NotEthernet);
    }
    if bytes[4..8] != xid.to_be_bytes() {
        return Err(Reject::WrongXid);
    }
    if bytes[28..34] != mac[..] {
        return Err(Reject::WrongChaddr);
    }
    if bytes[FIXED_LEN..FIXED_LEN + 4] != MAGIC_COOKIE {
        return Err(Reject::BadCookie);
    }
    let options = collect_options(bytes)?;
    let single = |code: u8, len: usize| options.get(&code).filter(|v| v.len() == len);

    let kind = match single(53, 1).map(|v| v[0]) {
        None => return Err(Reject::NoMessageType),
        Some(2) => ReplyKind::Offer,
        Some(5) => ReplyKind::Ack,
        Some(6) => ReplyKind::Nak,
        Some(_) => return Err(Reject::UnexpectedType),
    };
    // RFC 2131 §4.3.1 and Table 3: OFFER, ACK and NAK all MUST carry the server identifier; it
    // is what a renewal is addressed to and how a NAK is attributed.
    let server_id = single(54, 4).map(|v| addr_at(v, 0)).ok_or(Reject::BadServerId)?;
    if !usable_server(server_id) {
        return Err(Reject::BadServerId);
    }
    let yiaddr = addr_at(bytes, 16);
    if kind != ReplyKind::Nak {
        // Table 3: lease time MUST be in OFFER and in ACK to a REQUEST. Guessing one would be
        // guessing when the server hands the address to someone else.
        single(51, 4).ok_or(Reject::NoLeaseTime)?;
        let prefix = prefix_of(&options, yiaddr)?;
        if !usable_address(yiaddr, prefix) {
            return Err(Reject::BadAddress);
        }
    }
    Ok(Reply { kind, yiaddr, server_id, options })
}

/// Walks the options field, then `file` and `sname` when option 52 says they hold options
/// (RFC 2131 §4.1), in that order (RFC 3396 §5). Repeated codes are concatenated (RFC 3396 §7).
/// Any option running past its field, or a bad overload value, rejects the packet: a server
/// that cannot frame options cannot be trusted for the values inside them.
fn collect_options(bytes: &[u8]) -> Result<BTreeMap<u8, Vec<u8>>, Reject> {
    let mut options: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    walk(&bytes[FIXED_LEN + 4..], &mut options, true)?;
    let overload = match options.get(&52).map(Vec::as_slice) {
        None => 0,
        Some([v @ 1..=3]) => *v,
        Some(_) => return Err(Reject::BadOverload),
    };
    if overload & 1 != 0 {
        walk(&bytes[FILE], &mut options, false)?;
    }
    if overload & 2 != 0 {
        walk(&bytes[SNAME], &mut options, false)?;
    }
    Ok(options)
}

fn walk(field: &[u8], options: &mut BTreeMap<u8, Vec<u8>>, main: bool) -> Result<(), Reject> {
    let mut i = 0;
    while let Some(&code) = field.get(i) {
        match code {
            0 => i += 1,
            255 => return Ok(()),
            _ => {
                let len = usize::from(*field.get(i + 1).ok_or(Reject::BadOptions)?);
                let value = field.get(i + 2..i + 2 + len).ok_or(Reject::BadOptions)?;
                // Option 52 is only meaningful in the options field itself (RFC 2131 §4.1).
                if main || code != 52 {
                    options.entry(code).or_default().extend_from_slice(value);
                }
                i += 2 + len;
            }
        }
    }
    // A field that ends without END is accepted: several servers omit it when the options
    // exactly fill the field, and every option read so far was complete.
    Ok(())
}

/// The prefix length from option 1, or the classful default (RFC 1122 §3.3.1.1 behaviour, as
/// dhclient and systemd-networkd do) when the server sent no mask.
fn prefix_of(options: &BTreeMap<u8, Vec<u8>>, yiaddr: Ipv4Addr) -> Result<u8, Reject> {
    match options.get(&1) {
        Some(v) if v.len() == 4 => options::mask_to_prefix(addr_at(v, 0)).ok_or(Reject::BadMask),
        Some(_) => Err(Reject::BadMask),
        None => Ok(match yiaddr.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        }),
    }
}

/// An address a host may configure as its own: unicast, not loopback or "this network", and not
/// the network or broadcast address of its subnet when the subnet has them (/31 and /32 do not,
/// RFC 3021).
pub(crate) fn usable_address(addr: Ipv4Addr, prefix: u8) -> bool {
    let o = addr.octets();
    if addr.is_unspecified()
        || addr.is_broadcast()
        || addr.is_multicast()
        || addr.is_loopback()
        || o[0] == 0
        || o[0] >= 240
    {
        return false;
    }
    if prefix <= 30 {
        let host = u32::from(addr) & !options::prefix_mask(prefix);
        let all_ones = !options::prefix_mask(prefix);
        if host == 0 || host == all_ones {
            return false;
        }
    }
    true
}

pub(crate) fn usable_server(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback())
}

fn u32_opt(options: &BTreeMap<u8, Vec<u8>>, code: u8) -> Option<u32> {
    let v = options.get(&code).filter(|v| v.len() == 4)?;
    Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// Non-empty lists of usable addresses; a list with a bad length is dropped whole (a length
/// that is not a multiple of 4 means the server framed it wrongly).
fn addr_list(options: &BTreeMap<u8, Vec<u8>>, code: u8) -> Vec<Ipv4Addr> {
    match options.get(&code) {
        Some(v) if v.len() % 4 == 0 => {
            v.chunks_exact(4).map(|c| addr_at(c, 0)).filter(|&a| usable_server(a)).collect()
        }
        _ => Vec::new(),
    }
}

/// Turns a validated OFFER or ACK into a lease. Options other than 1, 51, 53 and 54 are not worth
/// refusing an address over: a malformed one is simply left out.
pub(crate) fn lease_from_reply(reply: &Reply, acquired_unix_ms: u64) -> Lease {
    let o = &reply.options;
    let lease_secs = u32_opt(o, 51).unwrap_or(0);
    Lease {
        address: reply.yiaddr,
        // parse_reply has already refused a reply whose prefix would fail here.
        prefix_len: prefix_of(o, reply.yiaddr).unwrap_or(32),
        server_id: reply.server_id,
        routers: addr_list(o, 3),
        classless_routes: o
            .get(&121)
            .and_then(|v| options::decode_classless_routes(v))
            .unwrap_or_default(),
        dns_servers: addr_list(o, 6),
        domain_name: o.get(&15).and_then(|v| options::decode_domain_name(v)),
        domain_search: o
            .get(&119)
            .and_then(|v| options::decode_domain_search(v))
            .unwrap_or_default(),
        mtu: o
            .get(&26)
            .filter(|v| v.len() == 2)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
            .filter(|&mtu| mtu >= 68),
        timers: Timers::from_options(lease_secs, u32_opt(o, 58), u32_opt(o, 59)),
        acquired_unix_ms,
    }
}

/// Option 81 flags (RFC 4702 §2.1): the server updates A (S), canonical wire encoding (E), the
/// server must not update (N).
const FQDN_S: u8 = 0x01;
const FQDN_E: u8 = 0x04;
const FQDN_N: u8 = 0x08;

/// Option 81 with `flags` and `name` in canonical wire encoding (RFC 4702 §2.3.1). A dotted
/// name is fully qualified (it ends with the root label); a single label is a partial name,
/// sent without the root label so the server completes it with its own suffix (sent as
/// `web.`, Kea takes it as complete and registers no `web.app.lan`); none is the empty name.
/// RCODE1/2 are deprecated and SHOULD be 0 (§2.2). Encoded here because dhcproto always ends
/// a name with the root label. The name was checked by [`ClientConfig::validate`].
fn client_fqdn(flags: u8, name: Option<&str>) -> DhcpOption {
    let mut data = vec![flags, 0, 0];
    match name.map(|name| name.strip_suffix('.').unwrap_or(name)) {
        Some(name) if !name.is_empty() => {
            for label in name.split('.') {
                data.push(label.len() as u8);
                data.extend_from_slice(label.as_bytes());
            }
            if name.contains('.') {
                data.push(0);
            }
        }
        _ => data.push(0),
    }
    DhcpOption::Unknown(v4::UnknownOption::new(v4::OptionCode::ClientFQDN, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        let mut c =
            ClientConfig::new([0x02, 0x42, 0xac, 0x11, 0x00, 0x02], b"\xffweb-eth1".to_vec());
        c.hostname = Some("web".into());
        c
    }

    /// The DISCOVER, derived field by field from RFC 2131 §2 and RFC 2132, in the order
    /// dhcproto writes options (ascending code).
    #[test]
    fn golden_discover() {
        let out = Outgoing {
            kind: Kind::Discover,
            xid: 0x1234_5678,
            secs: 3,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: Some(Ipv4Addr::new(192, 168, 1, 50)),
            server_id: None,
        };
        let bytes = build(&config(), &out).unwrap();
        let mut want = vec![
            1, 1, 6, 0, // op BOOTREQUEST, htype Ethernet, hlen 6, hops 0
            0x12, 0x34, 0x56, 0x78, // xid
            0, 3, 0, 0, // secs 3, flags 0
        ];
        want.extend([0; 16]); // ciaddr yiaddr siaddr giaddr
        want.extend([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        want.extend([0; 10]); // rest of chaddr
        want.extend([0; 64 + 128]); // sname, file
        want.extend(MAGIC_COOKIE);
        want.extend([12, 3, b'w', b'e', b'b']); // hostname
        want.extend([50, 4, 192, 168, 1, 50]); // requested address
        want.extend([53, 1, 1]); // DHCPDISCOVER
        want.extend([55, 10, 1, 121, 3, 6, 15, 119, 26, 51, 58, 59]); // parameter request list
        want.extend([57, 2, 0x05, 0xdc]); // max message size 1500
        want.extend([61, 9, 0xff, b'w', b'e', b'b', b'-', b'e', b't', b'h', b'1']); // client id
        want.push(255);
        want.resize(300, 0);
        assert_eq!(bytes, want);
    }

    #[test]
    fn fqdn_replaces_hostname_and_release_is_bare() {
        let mut c = config();
        c.fqdn = Some("web.lab.example".into());
        let out = Outgoing {
            kind: Kind::Request,
            xid: 1,
            secs: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server_id: None,
        };
        let bytes = build(&c, &out).unwrap();
        let opts = collect_options(&bytes).unwrap();
        assert!(!opts.contains_key(&12));
        let fqdn = &opts[&81];
        assert_eq!(&fqdn[..3], &[0x05, 0, 0]); // flags S|E, RCODE1/2 = 0
        assert_eq!(&fqdn[3..], b"\x03web\x03lab\x07example\x00");

        // A single label with --fqdn is a partial name (no root label): the server completes it.
        let mut partial = config();
        partial.fqdn = Some("web".into());
        let opts = collect_options(&build(&partial, &out).unwrap()).unwrap();
        assert_eq!(opts[&81], b"\x05\x00\x00\x03web");

        // lanyard's own DNS updates: N|E, no S, and still no option 12, with either kind of name.
        for (fqdn, hostname, wire) in [
            (Some("web.lab.example"), None, &b"\x03web\x03lab\x07example\x00"[..]),
            (None, Some("web"), &b"\x03web"[..]),
            (None, None, &b"\x00"[..]),
        ] {
            let mut own = config();
            own.fqdn = fqdn.map(str::to_string);
            own.hostname = hostname.map(str::to_string);
            own.server_must_not_update_dns = true;
            let opts = collect_options(&build(&own, &out).unwrap()).unwrap();
            assert!(!opts.contains_key(&12), "{hostname:?}");
            assert_eq!(&opts[&81][..3], &[0x0c, 0, 0], "flags N|E for {fqdn:?} {hostname:?}");
            assert_eq!(&opts[&81][3..], wire, "{fqdn:?} {hostname:?}");
        }

        let out = Outgoing { kind: Kind::Release, ciaddr: Ipv4Addr::new(10, 0, 0, 5), ..out };
        let opts = collect_options(&build(&c, &out).unwrap()).unwrap();
        let codes: Vec<u8> = opts.keys().copied().collect();
        assert_eq!(codes, vec![53, 61]);
    }

    fn reply(options: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; FIXED_LEN];
        b[0] = 2;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&7u32.to_be_bytes());
        b[16..20].copy_from_slice(&[192, 168, 1, 50]);
        b[28..34].copy_from_slice(&config().mac);
        b.extend(MAGIC_COOKIE);
        b.extend(options);
        b
    }

    const ACK: &[u8] =
        &[53, 1, 5, 54, 4, 192, 168, 1, 1, 51, 4, 0, 0, 14, 16, 1, 4, 255, 255, 255, 0];

    #[test]
    fn header_checks() {
        let mac = config().mac;
        let good = reply(ACK);
        assert!(parse_reply(&good, &mac, 7).is_ok());
        assert_eq!(parse_reply(&good, &mac, 8).unwrap_err(), Reject::WrongXid);
        assert_eq!(parse_reply(&good, &[0; 6], 7).unwrap_err(), Reject::WrongChaddr);
        let mut b = good.clone();
        b[0] = 1;
        assert_eq!(parse_reply(&b, &mac, 7).unwrap_err(), Reject::NotReply);
        let mut b = good.clone();
        b[2] = 200; // the hlen that makes dhcproto's chaddr() panic
        assert_eq!(parse_reply(&b, &mac, 7).unwrap_err(), Reject::NotEthernet);
        let mut b = good.clone();
        b[FIXED_LEN] = 0;
        assert_eq!(parse_reply(&b, &mac, 7).unwrap_err(), Reject::BadCookie);
        for len in 0..good.len() {
            // Every cut ends in a clean refusal; one short of the fixed part is always Truncated.
            let cut = parse_reply(&good[..len], &mac, 7);
            if len < FIXED_LEN + MAGIC_COOKIE.len() {
                assert_eq!(cut.unwrap_err(), Reject::Truncated, "len {len}");
            }
        }
        assert_eq!(parse_reply(&good[..239], &mac, 7).unwrap_err(), Reject::Truncated);
    }

    #[test]
    fn option_checks() {
        let mac = config().mac;
        let with = |extra: &[u8]| {
            let mut o = ACK.to_vec();
            o.extend(extra);
            parse_reply(&reply(&o), &mac, 7)
        };
        assert_eq!(with(&[3, 8, 1, 2, 3]).unwrap_err(), Reject::BadOptions);
        assert_eq!(with(&[3]).unwrap_err(), Reject::BadOptions);
        assert_eq!(with(&[52, 1, 4]).unwrap_err(), Reject::BadOverload);
        assert_eq!(with(&[52, 2, 1, 1]).unwrap_err(), Reject::BadOverload);
        // A second message type concatenates into a 2-byte one (RFC 3396): not a valid reply.
        assert_eq!(with(&[53, 1, 5]).unwrap_err(), Reject::NoMessageType);
        // dhcproto panics on these; here they are just unknown options.
        assert!(with(&[81, 0, 80, 1, 0]).is_ok());
        let nomask = parse_reply(&reply(&ACK[..15]), &mac, 7).unwrap();
        assert_eq!(lease_from_reply(&nomask, 0).prefix_len, 24);
        let badmask = [53, 1, 5, 54, 4, 192, 168, 1, 1, 51, 4, 0, 0, 14, 16, 1, 4, 255, 0, 255, 0];
        assert_eq!(parse_reply(&reply(&badmask), &mac, 7).unwrap_err(), Reject::BadMask);
        let nolease = [53, 1, 5, 54, 4, 192, 168, 1, 1];
        assert_eq!(parse_reply(&reply(&nolease), &mac, 7).unwrap_err(), Reject::NoLeaseTime);
        let noserver = [53, 1, 5, 51, 4, 0, 0, 14, 16];
        assert_eq!(parse_reply(&reply(&noserver), &mac, 7).unwrap_err(), Reject::BadServerId);
        let inform = [53, 1, 8, 54, 4, 192, 168, 1, 1];
        assert_eq!(parse_reply(&reply(&inform), &mac, 7).unwrap_err(), Reject::UnexpectedType);
        let mut b = reply(ACK);
        b[16..20].copy_from_slice(&[192, 168, 1, 255]);
        assert_eq!(parse_reply(&b, &mac, 7).unwrap_err(), Reject::BadAddress);
        b[16..20].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse_reply(&b, &mac, 7).unwrap_err(), Reject::BadAddress);
        // A NAK has no address and no lease time.
        let nak = [53, 1, 6, 54, 4, 192, 168, 1, 1];
        let mut b = reply(&nak);
        b[16..20].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse_reply(&b, &mac, 7).unwrap().kind, ReplyKind::Nak);
    }

    #[test]
    fn overload_and_concatenation() {
        let mac = config().mac;
        // Options field says: file and sname hold options. The router list is split between
        // the options field and `file`, the DNS server sits in `sname`.
        let mut b = reply(&[53, 1, 5, 52, 1, 3, 3, 4, 192, 168, 1, 1, 255]);
        let file = [54, 4, 192, 168, 1, 1, 51, 4, 0, 0, 0, 60, 3, 4, 192, 168, 1, 2, 255];
        b[FILE.start..FILE.start + file.len()].copy_from_slice(&file);
        let sname = [6, 4, 9, 9, 9, 9, 52, 1, 1, 255];
        b[SNAME.start..SNAME.start + sname.len()].copy_from_slice(&sname);
        let r = parse_reply(&b, &mac, 7).unwrap();
        let lease = lease_from_reply(&r, 0);
        assert_eq!(
            lease.routers,
            vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(192, 168, 1, 2)]
        );
        assert_eq!(lease.dns_servers, vec![Ipv4Addr::new(9, 9, 9, 9)]);
        assert_eq!(lease.timers.unwrap().lease_ms, 60_000);
        // An option in `file` running past the field rejects the packet.
        let mut b = reply(&[53, 1, 5, 52, 1, 1, 54, 4, 192, 168, 1, 1, 51, 4, 0, 0, 0, 60, 255]);
        b[FILE.end - 2] = 3;
        b[FILE.end - 1] = 10;
        assert_eq!(parse_reply(&b, &mac, 7).unwrap_err(), Reject::BadOptions);
        // Without option 52 the same bytes in `file` are just a boot file name.
        let mut b = reply(&[53, 1, 5, 54, 4, 192, 168, 1, 1, 51, 4, 0, 0, 0, 60, 255]);
        b[FILE.end - 2] = 3;
        b[FILE.end - 1] = 10;
        assert!(parse_reply(&b, &mac, 7).is_ok());
    }

    #[test]
    fn lease_options() {
        let mac = config().mac;
        let mut o = ACK.to_vec();
        o.extend([3, 4, 192, 168, 1, 1]);
        o.extend([121, 5, 0, 192, 168, 1, 254]);
        o.extend([6, 9, 1, 1, 1, 1, 8, 8, 8, 8, 0]); // bad length: dropped, lease kept
        o.extend([15, 4, b'l', b'a', b'b', 0]);
        o.extend([26, 2, 0, 67]); // below 68: ignored
        o.extend([58, 4, 0, 0, 0, 100, 59, 4, 0, 0, 0, 200]);
        let r = parse_reply(&reply(&o), &mac, 7).unwrap();
        let l = lease_from_reply(&r, 1000);
        assert_eq!(l.gateway(), Some(Ipv4Addr::new(192, 168, 1, 254)));
        assert!(l.dns_servers.is_empty());
        assert_eq!(l.domain_name.as_deref(), Some("lab"));
        assert_eq!(l.mtu, None);
        let t = l.timers.unwrap();
        assert_eq!((t.t1_ms, t.t2_ms, t.lease_ms), (100_000, 200_000, 3_600_000));
        assert_eq!(l.acquired_unix_ms, 1000);
    }
}
