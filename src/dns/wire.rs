//! The DNS messages lanyard sends (RFC 2136 updates with RFC 4703 prerequisites, SOA queries),
//! the DHCID ownership record (RFC 4701), and one blocking, time-bounded request/answer
//! exchange over UDP (sent again while unanswered), retried over TCP when the answer is
//! truncated, signed with TSIG.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::rdata::{A, AAAA, NULL, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use sha2::{Digest, Sha256};

use super::TsigKey;

/// RR type 49 (RFC 4701). hickory has no DHCID type of its own; its rdata travels as opaque
/// bytes.
pub const DHCID_TYPE: RecordType = RecordType::Unknown(49);

/// RFC 4701 identifier type 0x0001: the data of a DHCPv4 client identifier option (61), type
/// byte included. Kea's D2 and ISC dhcpd use it for option 61, so a lease Kea registered and
/// lanyard's own record for the same client id and name carry the same DHCID.
const DHCID_IDENTIFIER_CLIENT_ID: u16 = 0x0001;
/// RFC 4701 digest type 1: SHA-256.
const DHCID_DIGEST_SHA256: u8 = 1;

/// How long a UDP request waits for its answer before it is sent again, until the call's
/// deadline (as nsupdate and Kea's D2 retry): one lost datagram costs this, not the whole call.
/// Sending an update twice is safe: a copy applied after the other finds the zone changed and
/// fails its prerequisites or changes nothing more, and lanyard's next step follows from
/// either answer.
const UDP_RESEND: Duration = Duration::from_secs(1);

/// TSIG fudge: how far the server's clock may be from ours (RFC 8945 recommends 300 s).
const TSIG_FUDGE: u16 = 300;

/// The DHCID RDATA for `client_id` (option 61 data) and `fqdn`: identifier type, digest type,
/// SHA-256 over the identifier and the name in canonical (lower-case, uncompressed) wire form.
pub fn dhcid(client_id: &[u8], fqdn: &Name) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(client_id);
    hash.update(canonical_wire(fqdn));
    let mut rdata = Vec::with_capacity(35);
    rdata.extend_from_slice(&DHCID_IDENTIFIER_CLIENT_ID.to_be_bytes());
    rdata.push(DHCID_DIGEST_SHA256);
    rdata.extend_from_slice(&hash.finalize());
    rdata
}

fn canonical_wire(name: &Name) -> Vec<u8> {
    let mut wire = Vec::new();
    for label in name.to_lowercase().iter() {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    }
    wire.push(0);
    wire
}

fn dhcid_record(name: &Name, ttl: u32, dhcid: &[u8]) -> Record {
    Record::from_rdata(
        name.clone(),
        ttl,
        RData::Unknown { code: DHCID_TYPE, rdata: NULL::with(dhcid.to_vec()) },
    )
}

fn address_record(name: &Name, ttl: u32, address: IpAddr) -> Record {
    let data = match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

/// An empty UPDATE for `zone` (the zone section is one `ZONE IN SOA` entry).
fn update(zone: &Name) -> Message {
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    message.add_zone(Query::query(zone.clone(), RecordType::SOA));
    message
}

/// A record without RDATA and TTL 0: RFC 2136's way of naming a whole RRset (or with type ANY,
/// every RRset of the name), its class saying what is meant.
fn rrset_marker(name: &Name, rtype: RecordType, class: DNSClass) -> Record {
    let mut record = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
    record.dns_class = class;
    record
}

/// Prerequisite "name is not in use" (RFC 2136 2.4.5: class NONE, type ANY).
fn name_not_in_use(name: &Name) -> Record {
    rrset_marker(name, RecordType::ANY, DNSClass::NONE)
}

/// Prerequisite "RRset of `rtype` does not exist" (RFC 2136 2.4.3: class NONE).
fn rrset_absent(name: &Name, rtype: RecordType) -> Record {
    rrset_marker(name, rtype, DNSClass::NONE)
}

/// Prerequisite "the RRset is exactly this record" (RFC 2136 2.4.2, value-dependent: class IN,
/// TTL 0, with RDATA; an RRset holding other records too does not match).
fn record_exists(mut record: Record) -> Record {
    record.ttl = 0;
    record
}

/// Update "delete the RRset of `rtype`" (RFC 2136 2.5.2: class ANY, no RDATA).
fn delete_rrset(name: &Name, rtype: RecordType) -> Record {
    rrset_marker(name, rtype, DNSClass::ANY)
}

/// Update "delete this one record" (RFC 2136 2.5.4: class NONE, TTL 0, with RDATA).
fn delete_record(mut record: Record) -> Record {
    record.dns_class = DNSClass::NONE;
    record.ttl = 0;
    record
}

/// RFC 4703's first try at adding a name: add the addresses and our DHCID if nobody uses the name.
pub fn forward_add(
    zone: &Name,
    fqdn: &Name,
    addresses: &[IpAddr],
    dhcid: &[u8],
    ttl: u32,
) -> Message {
    let mut message = update(zone);
    message.add_pre_requisite(name_not_in_use(fqdn));
    for &address in addresses {
        message.add_update(address_record(fqdn, ttl, address));
    }
    message.add_update(dhcid_record(fqdn, ttl, dhcid));
    message
}

/// RFC 4703's second try, when the name is in use: if its DHCID is ours, its address records become
/// `addresses` (both A and AAAA sets are replaced: a registration lists all of a name's
/// addresses).
pub fn forward_replace(
    zone: &Name,
    fqdn: &Name,
    addresses: &[IpAddr],
    dhcid: &[u8],
    ttl: u32,
) -> Message {
    let mut message = update(zone);
    message.add_pre_requisite(record_exists(dhcid_record(fqdn, 0, dhcid)));
    message.add_update(delete_rrset(fqdn, RecordType::A));
    message.add_update(delete_rrset(fqdn, RecordType::AAAA));
    for &address in addresses {
        message.add_update(address_record(fqdn, ttl, address));
    }
    message
}

/// RFC 4703's removal, first step: if the DHCID is ours, delete our address records (`addresses`,
/// or every A and AAAA record of the name when it is empty).
pub fn forward_remove(zone: &Name, fqdn: &Name, addresses: &[IpAddr], dhcid: &[u8]) -> Message {
    let mut message = update(zone);
    message.add_pre_requisite(record_exists(dhcid_record(fqdn, 0, dhcid)));
    if addresses.is_empty() {
        message.add_update(delete_rrset(fqdn, RecordType::A));
        message.add_update(delete_rrset(fqdn, RecordType::AAAA));
    } else {
        for &address in addresses {
            message.add_update(delete_record(address_record(fqdn, 0, address)));
        }
    }
    message
}

/// RFC 4703's removal, second step: delete our DHCID once the name has no address records left.
pub fn forward_remove_dhcid(zone: &Name, fqdn: &Name, dhcid: &[u8]) -> Message {
    let mut message = update(zone);
    message.add_pre_requisite(record_exists(dhcid_record(fqdn, 0, dhcid)));
    message.add_pre_requisite(rrset_absent(fqdn, RecordType::A));
    message.add_pre_requisite(rrset_absent(fqdn, RecordType::AAAA));
    message.add_update(delete_rrset(fqdn, DHCID_TYPE));
    message
}

/// The PTR for an address: whatever the reverse name held is replaced (as Kea does: the reverse
/// name belongs to whoever holds the address now), with our DHCID beside it.
pub fn reverse_replace(
    zone: &Name,
    ptr_name: &Name,
    fqdn: &Name,
    dhcid: &[u8],
    ttl: u32,
) -> Message {
    let mut message = update(zone);
    message.add_update(delete_rrset(ptr_name, RecordType::PTR));
    message.add_update(delete_rrset(ptr_name, DHCID_TYPE));
    message.add_update(Record::from_rdata(ptr_name.clone(), ttl, RData::PTR(PTR(fqdn.clone()))));
    message.add_update(dhcid_record(ptr_name, ttl, dhcid));
    message
}

/// Removes the PTR (and DHCID) of an address if it still points at `fqdn`.
pub fn reverse_remove(zone: &Name, ptr_name: &Name, fqdn: &Name) -> Message {
    let mut message = update(zone);
    message.add_pre_requisite(record_exists(Record::from_rdata(
        ptr_name.clone(),
        0,
        RData::PTR(PTR(fqdn.clone())),
    )));
    message.add_update(delete_rrset(ptr_name, RecordType::PTR));
    message.add_update(delete_rrset(ptr_name, DHCID_TYPE));
    message
}

/// A non-recursive query for `name`'s `rtype` records.
pub fn query(name: &Name, rtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = false;
    message.add_query(Query::query(name.clone(), rtype));
    message
}

/// A non-recursive `NAME SOA` query: an authoritative server answers with its zone's SOA (in the
/// answer at the apex, else in the authority section).
pub fn soa_query(name: &Name) -> Message {
    query(name, RecordType::SOA)
}

/// The zone an authoritative answer to [`soa_query`] names, if it is one.
pub fn zone_of_soa_answer(answer: &Message) -> Option<Name> {
    if !answer.metadata.authoritative {
        return None;
    }
    answer
        .answers
        .iter()
        .chain(&answer.authorities)
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.name.clone())
}

/// RCODE as DNS people write it.
pub fn rcode_name(code: ResponseCode) -> String {
    match u16::from(code) {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        other => format!("RCODE {other}"),
    }
}

pub fn tsig_error_name(error: TsigError) -> String {
    match error {
        TsigError::BadSig => "BADSIG".into(),
        TsigError::BadKey => "BADKEY".into(),
        TsigError::BadTime => "BADTIME".into(),
        TsigError::BadTrunc => "BADTRUNC".into(),
        TsigError::Unknown(code) => format!("TSIG error {code}"),
    }
}

/// How one exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// No (matching) answer before the deadline.
    Timeout,
    /// A socket error, or a message lanyard could not build.
    Io(io::Error),
    /// The answer could not be read or failed its TSIG check.
    BadAnswer(String),
}

/// An answer to one request.
pub struct Answer {
    pub message: Message,
    /// The TSIG error the server put in its (unsigned) answer: it did not accept our key.
    pub tsig_error: Option<TsigError>,
}

/// Sends `message` (signed with `key` if there is one) to `server` and waits until `deadline`
/// for its answer: UDP first (sent again every `UDP_RESEND` without an answer), TCP when the
/// answer comes back truncated. Answers with another id, from elsewhere, or that do not parse
/// are ignored until the deadline. A signed request's answer must carry a valid signature,
/// except a failure without one (servers send BADSIG and BADKEY unsigned): success and the
/// prerequisite outcomes decide what lanyard does next, so they must be the server's, while a
/// forged failure can only cause a reported error and a retry.
pub fn exchange(
    server: SocketAddr,
    key: Option<&TsigKey>,
    mut message: Message,
    deadline: Instant,
) -> Result<Answer, ExchangeError> {
    let mut verifier = None;
    if let Some(key) = key {
        let signer = signer(key)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        verifier = message
            .finalize(&signer, now)
            .map_err(|e| ExchangeError::Io(io::Error::other(format!("sign the request: {e}"))))?;
    }
    let request = message
        .to_vec()
        .map_err(|e| ExchangeError::Io(io::Error::other(format!("encode the request: {e}"))))?;
    let id = message.metadata.id;
    let mut bytes = udp_exchange(server, &request, id, deadline)?;
    if parse(&bytes, id).is_some_and(|m| m.metadata.truncation) {
        bytes = tcp_exchange(server, &request, id, deadline)?;
    }
    let answer = parse(&bytes, id)
        .ok_or_else(|| ExchangeError::BadAnswer("the answer does not parse".into()))?;
    let tsig_error = answer.signature().and_then(|s| s.data.error);
    if let Some(verifier) = verifier.as_mut() {
        let unsigned = answer.signature().is_none_or(|s| s.data.mac.is_empty());
        if !(unsigned && is_failure(answer.metadata.response_code)) {
            verifier.verify(&bytes).map_err(|e| {
                ExchangeError::BadAnswer(format!(
                    "the answer's TSIG signature does not verify: {e}"
                ))
            })?;
        }
    }
    Ok(Answer { message: answer, tsig_error })
}

/// RCODEs that end a call as an error; the others (NOERROR, NXDOMAIN and the prerequisite
/// outcomes YXDOMAIN, YXRRSET, NXRRSET) are answers lanyard acts on.
fn is_failure(code: ResponseCode) -> bool {
    !matches!(
        code,
        ResponseCode::NoError
            | ResponseCode::NXDomain
            | ResponseCode::YXDomain
            | ResponseCode::YXRRSet
            | ResponseCode::NXRRSet
    )
}

fn signer(key: &TsigKey) -> Result<TSigner, ExchangeError> {
    let name = Name::from_ascii(&key.name).map_err(|e| {
        ExchangeError::Io(io::Error::other(format!("key name {:?}: {e}", key.name)))
    })?;
    TSigner::new(key.secret.clone(), key.algorithm.to_hickory(), name, TSIG_FUDGE)
        .map_err(|e| ExchangeError::Io(io::Error::other(format!("TSIG key {}: {e}", key.name))))
}

/// The message in `bytes` if it is a response to request `id`.
fn parse(bytes: &[u8], id: u16) -> Option<Message> {
    let message = Message::from_vec(bytes).ok()?;
    (message.metadata.id == id && message.metadata.message_type == MessageType::Response)
        .then_some(message)
}

fn remaining(deadline: Instant) -> Result<Duration, ExchangeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ExchangeError::Timeout)
    } else {
        Ok(left)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn udp_exchange(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    deadline: Instant,
) -> Result<Vec<u8>, ExchangeError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(ExchangeError::Io)?;
    // connect(): the kernel drops datagrams from anyone but the server.
    socket.connect(server).map_err(ExchangeError::Io)?;
    socket.send(request).map_err(ExchangeError::Io)?;
    let mut resend_at = Instant::now() + UDP_RESEND;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = remaining(deadline)?;
        let until_resend = resend_at.saturating_duration_since(Instant::now());
        if until_resend.is_zero() {
            // The same message, id and signature: the server answers whichever copy it gets.
            socket.send(request).map_err(ExchangeError::Io)?;
            resend_at = Instant::now() + UDP_RESEND;
            continue;
        }
        socket.set_read_timeout(Some(left.min(until_resend))).map_err(ExchangeError::Io)?;
        match socket.recv(&mut buf) {
            Ok(n) if parse(&buf[..n], id).is_some() => return Ok(buf[..n].to_vec()),
            // Timed out: resend, or end at the deadline, at the top of the loop.
            Ok(_) => continue,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
}

fn tcp_exchange(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    deadline: Instant,
) -> Result<Vec<u8>, ExchangeError> {
    let io_err =
        |e: io::Error| if is_timeout(&e) { ExchangeError::Timeout } else { ExchangeError::Io(e) };
    let mut stream = TcpStream::connect_timeout(&server, remaining(deadline)?).map_err(io_err)?;
    stream.set_write_timeout(Some(remaining(deadline)?)).map_err(io_err)?;
    let length = u16::try_from(request.len())
        .map_err(|_| ExchangeError::Io(io::Error::other("request longer than 65535 bytes")))?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(request);
    stream.write_all(&framed).map_err(io_err)?;
    // One request on this connection: the first answer is its answer.
    let mut length = [0u8; 2];
    read_exact_by(&mut stream, &mut length, deadline)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    read_exact_by(&mut stream, &mut answer, deadline)?;
    if parse(&answer, id).is_none() {
        return Err(ExchangeError::BadAnswer(
            "the TCP answer is not a response to the request".into(),
        ));
    }
    Ok(answer)
}

/// Fills `buf` from `stream` by `deadline`. `read_exact` with a read timeout bounds each read,
/// not the whole: a server sending a byte now and then would hold the call far past its
/// deadline.
fn read_exact_by(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), ExchangeError> {
    let mut filled = 0;
    while filled < buf.len() {
        stream.set_read_timeout(Some(remaining(deadline)?)).map_err(ExchangeError::Io)?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(ExchangeError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the TCP connection before its whole answer",
                )))
            }
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) => return Err(ExchangeError::Timeout),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
    Ok(())
}
