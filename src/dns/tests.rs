//! Message building, parsed back with hickory; DHCID against RFC 4701's own example.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, UpdateMessage};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::wire::{self, DHCID_TYPE};
use super::*;

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

/// Encodes and decodes `message`, as the server would see it.
fn round_trip(message: &Message) -> Message {
    Message::from_vec(&message.to_vec().unwrap()).unwrap()
}

/// `"NAME CLASS TYPE TTL RDATA"` per record, RDATA as hickory prints it ("-" when empty).
fn lines(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let data = match &r.data {
                RData::Update0(_) => "-".to_string(),
                RData::Unknown { rdata, .. } => {
                    format!(
                        "0x{}",
                        rdata.anything.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    )
                }
                other => other.to_string(),
            };
            format!("{} {} {} {} {}", r.name, r.dns_class, r.record_type(), r.ttl, data)
        })
        .collect()
}

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 5));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5));

fn dhcid_hex(dhcid: &[u8]) -> String {
    format!("0x{}", dhcid.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[test]
fn dhcid_matches_rfc_4701_example() {
    // RFC 4701 3.6.2: client identifier option data 01:07:08:09:0a:0b:0c, name chi.example.com,
    // DHCID "AAEBOSD+XR3Os/0LozeXVqcNc7FwCfQdWL3b/NaiUDlW2No=".
    let dhcid = wire::dhcid(&[1, 7, 8, 9, 10, 11, 12], &name("chi.example.com."));
    assert_eq!(
        data_encoding::BASE64.encode(&dhcid),
        "AAEBOSD+XR3Os/0LozeXVqcNc7FwCfQdWL3b/NaiUDlW2No="
    );
    // Canonical form: case does not change the DHCID.
    assert_eq!(wire::dhcid(&[1, 7, 8, 9, 10, 11, 12], &name("CHI.Example.com.")), dhcid);
}

#[test]
fn first_add_requires_a_free_name() {
    let dhcid = wire::dhcid(b"\xffweb", &name("web.app.lan."));
    let message = round_trip(&wire::forward_add(
        &name("app.lan."),
        &name("web.app.lan."),
        &[V4, V6],
        &dhcid,
        60,
    ));
    assert_eq!(message.metadata.op_code, OpCode::Update);
    assert_eq!(message.zones().len(), 1);
    assert_eq!(message.zones()[0].name(), &name("app.lan."));
    assert_eq!(message.zones()[0].query_type(), RecordType::SOA);
    assert_eq!(lines(message.prerequisites()), ["web.app.lan. NONE ANY 0 -"]);
    assert_eq!(
        lines(message.updates()),
        [
            "web.app.lan. IN A 60 198.18.0.5".to_string(),
            "web.app.lan. IN AAAA 60 2001:db8::5".to_string(),
            format!("web.app.lan. IN {DHCID_TYPE} 60 {}", dhcid_hex(&dhcid)),
        ]
    );
}

#[test]
fn replace_requires_our_dhcid_and_swaps_both_address_sets() {
    let dhcid = wire::dhcid(b"\xffweb", &name("web.app.lan."));
    let message = round_trip(&wire::forward_replace(
        &name("app.lan."),
        &name("web.app.lan."),
        &[V4],
        &dhcid,
        60,
    ));
    assert_eq!(
        lines(message.prerequisites()),
        [format!("web.app.lan. IN {DHCID_TYPE} 0 {}", dhcid_hex(&dhcid))]
    );
    assert_eq!(
        lines(message.updates()),
        ["web.app.lan. ANY A 0 -", "web.app.lan. ANY AAAA 0 -", "web.app.lan. IN A 60 198.18.0.5"]
    );
}

#[test]
fn removal_requires_our_dhcid_and_the_dhcid_goes_last() {
    let (zone, fqdn) = (name("app.lan."), name("web.app.lan."));
    let dhcid = wire::dhcid(b"\xffweb", &fqdn);
    let ours = format!("web.app.lan. IN {DHCID_TYPE} 0 {}", dhcid_hex(&dhcid));
    let listed = round_trip(&wire::forward_remove(&zone, &fqdn, &[V4, V6], &dhcid));
    assert_eq!(lines(listed.prerequisites()), std::slice::from_ref(&ours));
    assert_eq!(
        lines(listed.updates()),
        ["web.app.lan. NONE A 0 198.18.0.5", "web.app.lan. NONE AAAA 0 2001:db8::5"]
    );
    let all = round_trip(&wire::forward_remove(&zone, &fqdn, &[], &dhcid));
    assert_eq!(lines(all.updates()), ["web.app.lan. ANY A 0 -", "web.app.lan. ANY AAAA 0 -"]);
    let last = round_trip(&wire::forward_remove_dhcid(&zone, &fqdn, &dhcid));
    assert_eq!(
        lines(last.prerequisites()),
        [ours, "web.app.lan. NONE A 0 -".to_string(), "web.app.lan. NONE AAAA 0 -".to_string()]
    );
    assert_eq!(lines(last.updates()), [format!("web.app.lan. ANY {DHCID_TYPE} 0 -")]);
}

#[test]
fn reverse_records_point_at_the_name() {
    let fqdn = name("web.app.lan.");
    let dhcid = wire::dhcid(b"\xffweb", &fqdn);
    let ptr = Name::from(V4);
    assert_eq!(ptr.to_ascii(), "5.0.18.198.in-addr.arpa.");
    let zone = name("18.198.in-addr.arpa.");
    let add = round_trip(&wire::reverse_replace(&zone, &ptr, &fqdn, &dhcid, 60));
    assert_eq!(add.zones()[0].name(), &zone);
    assert!(add.prerequisites().is_empty());
    assert_eq!(
        lines(add.updates()),
        [
            "5.0.18.198.in-addr.arpa. ANY PTR 0 -".to_string(),
            format!("5.0.18.198.in-addr.arpa. ANY {DHCID_TYPE} 0 -"),
            "5.0.18.198.in-addr.arpa. IN PTR 60 web.app.lan.".to_string(),
            format!("5.0.18.198.in-addr.arpa. IN {DHCID_TYPE} 60 {}", dhcid_hex(&dhcid)),
        ]
    );
    let remove = round_trip(&wire::reverse_remove(&zone, &ptr, &fqdn));
    assert_eq!(lines(remove.prerequisites()), ["5.0.18.198.in-addr.arpa. IN PTR 0 web.app.lan."]);
    assert_eq!(remove.updates().len(), 2);
    assert!(remove.updates().iter().all(|r| r.dns_class == DNSClass::ANY));
}

#[test]
fn soa_answers_name_the_zone_only_when_authoritative() {
    let ptr = Name::from(V4);
    let query = round_trip(&wire::soa_query(&ptr));
    assert!(!query.metadata.recursion_desired);
    assert_eq!(query.queries[0].query_type(), RecordType::SOA);
    let mut answer = Message::response(query.metadata.id, OpCode::Query);
    answer.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
    let soa = hickory_proto::rr::rdata::SOA::new(
        name("ns.lab."),
        name("root.lab."),
        1,
        3600,
        600,
        86400,
        60,
    );
    answer.add_authority(Record::from_rdata(name("18.198.in-addr.arpa."), 60, RData::SOA(soa)));
    assert_eq!(wire::zone_of_soa_answer(&answer), None, "not authoritative");
    answer.metadata.authoritative = true;
    assert_eq!(wire::zone_of_soa_answer(&answer), Some(name("18.198.in-addr.arpa.")));
}

fn server() -> UpdateServer {
    UpdateServer {
        server: "198.18.0.53:53".parse().unwrap(),
        zone: "app.lan".into(),
        key: None,
        ttl: 60,
        reverse: false,
        timeout: std::time::Duration::from_millis(100),
    }
}

fn registration(fqdn: &str) -> Registration {
    Registration { fqdn: fqdn.into(), addresses: vec![V4], client_id: b"\xffweb".to_vec() }
}

#[test]
fn names_outside_the_zone_and_empty_inputs_are_refused_before_sending() {
    // 198.18.0.53 is not reachable from the unit test: a request would time out, not refuse.
    let refusal = |reg: &Registration| register(&server(), reg).unwrap_err();
    let outside = refusal(&registration("web.other.lan"));
    assert_eq!(outside.kind(), ErrorKind::Usage);
    assert!(outside.to_string().contains("not inside zone app.lan"), "{outside}");
    assert_eq!(refusal(&registration("app.lan")).kind(), ErrorKind::Usage);
    assert_eq!(refusal(&registration("bad..name.app.lan")).kind(), ErrorKind::Usage);
    let mut no_id = registration("web.app.lan");
    no_id.client_id.clear();
    assert!(refusal(&no_id).to_string().contains("no client id"));
    let mut no_addresses = registration("web.app.lan");
    no_addresses.addresses.clear();
    assert!(refusal(&no_addresses).to_string().contains("no addresses"));
    assert_eq!(
        unregister(&server(), &registration("web.other.lan.")).unwrap_err().kind(),
        ErrorKind::Usage
    );
}

/// A one-request DNS server on loopback: answers the UDP request with `udp_answer(request)`;
/// when `tcp_reply` is given, also takes one TCP connection on the same port number and has it
/// answer the request read there (see [`whole`]).
struct FakeServer {
    addr: std::net::SocketAddr,
    thread: std::thread::JoinHandle<()>,
}

type Answerer = Box<dyn FnOnce(&Message) -> Message + Send>;
/// Writes the answer to the TCP request onto the connection.
type TcpReply = Box<dyn FnOnce(&Message, &mut std::net::TcpStream) + Send>;

/// `message` as DNS over TCP sends it: its length, then itself.
fn framed(message: &Message) -> Vec<u8> {
    let bytes = message.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend(bytes);
    framed
}

/// A TCP reply of `answer(request)`, framed and written at once.
fn whole(answer: Answerer) -> TcpReply {
    Box::new(move |request, stream| {
        use std::io::Write;
        stream.write_all(&framed(&answer(request))).unwrap();
    })
}

impl FakeServer {
    fn start(udp_answer: Answerer, tcp_reply: Option<TcpReply>) -> FakeServer {
        FakeServer::start_ignoring(0, udp_answer, tcp_reply)
    }

    /// [`FakeServer::start`] that leaves the first `ignored` UDP requests unanswered (lost).
    fn start_ignoring(
        ignored: usize,
        udp_answer: Answerer,
        tcp_reply: Option<TcpReply>,
    ) -> FakeServer {
        use std::io::Read;
        // A TCP listener on the UDP socket's port number: retried if that port is taken.
        let (udp, tcp) = (0..20)
            .find_map(|_| {
                let udp = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = std::net::TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a free UDP+TCP port on loopback");
        let addr = udp.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            udp.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut buf = vec![0u8; 65535];
            for _ in 0..ignored {
                udp.recv_from(&mut buf).expect("a UDP request to ignore");
            }
            let (n, from) = udp.recv_from(&mut buf).expect("a UDP request");
            let request = Message::from_vec(&buf[..n]).unwrap();
            udp.send_to(&udp_answer(&request).to_vec().unwrap(), from).unwrap();
            if let Some(tcp_reply) = tcp_reply {
                // Bounded: a client that never comes over TCP must not hang the test.
                tcp.set_nonblocking(true).unwrap();
                let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
                let mut stream = loop {
                    match tcp.accept() {
                        Ok((stream, _)) => break stream,
                        Err(_) if std::time::Instant::now() < until => {
                            std::thread::sleep(std::time::Duration::from_millis(5))
                        }
                        Err(e) => {
                            eprintln!("fake server: no TCP connection: {e}");
                            return;
                        }
                    }
                };
                stream.set_nonblocking(false).unwrap();
                let mut length = [0u8; 2];
                stream.read_exact(&mut length).unwrap();
                let mut request = vec![0u8; usize::from(u16::from_be_bytes(length))];
                stream.read_exact(&mut request).unwrap();
                tcp_reply(&Message::from_vec(&request).unwrap(), &mut stream);
            }
        });
        FakeServer { addr, thread }
    }

    fn join(self) {
        self.thread.join().expect("the fake server's thread");
    }
}

fn answer_to(request: &Message, code: hickory_proto::op::ResponseCode) -> Message {
    let mut answer = Message::response(request.metadata.id, request.metadata.op_code);
    answer.metadata.response_code = code;
    answer.queries = request.queries.clone();
    answer
}

fn deadline() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(5)
}

#[test]
fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let server =
        FakeServer::start(Box::new(truncated), Some(whole(Box::new(answer_with_an_address))));
    let query = wire::soa_query(&name("web.app.lan."));
    let answer = wire::exchange(server.addr, None, query, deadline()).expect("answer over TCP");
    server.join();
    assert!(!answer.message.metadata.truncation);
    assert_eq!(lines(&answer.message.answers), ["web.app.lan. IN A 60 198.18.0.5"]);
}

/// An empty answer with TC set: "ask again over TCP".
fn truncated(request: &Message) -> Message {
    let mut answer = answer_to(request, hickory_proto::op::ResponseCode::NoError);
    answer.metadata.truncation = true;
    answer
}

fn answer_with_an_address(request: &Message) -> Message {
    let mut answer = answer_to(request, hickory_proto::op::ResponseCode::NoError);
    answer.add_answer(Record::from_rdata(
        name("web.app.lan."),
        60,
        RData::A(hickory_proto::rr::rdata::A(Ipv4Addr::new(198, 18, 0, 5))),
    ));
    answer
}

#[test]
fn a_tcp_answer_sent_a_byte_at_a_time_ends_at_the_deadline() {
    // Each byte comes well within the time left, so only a bound on the whole read stops it:
    // the answer (about 60 bytes) would take some 3 s.
    let server = FakeServer::start(
        Box::new(truncated),
        Some(Box::new(|request, stream| {
            use std::io::Write;
            for byte in framed(&answer_with_an_address(request)) {
                // The client gave up and closed: stop.
                if stream.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })),
    );
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_millis(500);
    let result =
        wire::exchange(server.addr, None, wire::soa_query(&name("web.app.lan.")), deadline);
    let took = started.elapsed();
    server.join();
    assert!(matches!(result, Err(wire::ExchangeError::Timeout)), "{:?}", result.map(|_| ()));
    assert!(took < std::time::Duration::from_millis(1500), "returned after {took:?}");
}

#[test]
fn an_unanswered_udp_request_is_sent_again_before_the_deadline() {
    let server = FakeServer::start_ignoring(1, Box::new(answer_with_an_address), None);
    let started = std::time::Instant::now();
    let query = wire::query(&name("web.app.lan."), RecordType::A);
    let answer = wire::exchange(server.addr, None, query, started + Duration::from_secs(4))
        .expect("the second copy answered");
    let took = started.elapsed();
    server.join();
    assert_eq!(lines(&answer.message.answers), ["web.app.lan. IN A 60 198.18.0.5"]);
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
}

fn lab_key() -> TsigKey {
    TsigKey { name: "ddns".into(), algorithm: TsigAlgorithm::HmacSha256, secret: vec![7; 32] }
}

#[test]
fn an_unsigned_success_or_prerequisite_outcome_to_a_signed_update_is_not_believed() {
    use hickory_proto::op::ResponseCode;
    for code in [ResponseCode::NoError, ResponseCode::NXRRSet, ResponseCode::YXDomain] {
        let server = FakeServer::start(Box::new(move |request| answer_to(request, code)), None);
        let update =
            wire::forward_add(&name("app.lan."), &name("web.app.lan."), &[V4], &[0, 1, 1], 60);
        let err = match wire::exchange(server.addr, Some(&lab_key()), update, deadline()) {
            Err(wire::ExchangeError::BadAnswer(why)) => why,
            Err(other) => panic!("expected a bad answer, got {other:?}"),
            Ok(_) => panic!("an unsigned {code:?} was accepted for a signed update"),
        };
        server.join();
        assert!(err.contains("TSIG signature does not verify"), "{code:?}: {err}");
    }
}

#[test]
fn a_signed_request_is_signed_with_the_key() {
    use hickory_proto::op::ResponseCode;
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let server = FakeServer::start(
        Box::new(move |request| {
            seen_tx.send(request.signature().map(|s| (s.name.clone(), s.data.mac.len()))).unwrap();
            // An unsigned refusal, as a server sends when it does not know the key.
            answer_to(request, ResponseCode::Refused)
        }),
        None,
    );
    let update = wire::forward_add(&name("app.lan."), &name("web.app.lan."), &[V4], &[0, 1, 1], 60);
    let answer = wire::exchange(server.addr, Some(&lab_key()), update, deadline())
        .unwrap_or_else(|e| panic!("an unsigned refusal is an answer: {e:?}"));
    server.join();
    assert_eq!(answer.message.metadata.response_code, ResponseCode::Refused);
    // HMAC-SHA256: a 32-byte MAC under the key's name.
    assert_eq!(seen_rx.recv().unwrap(), Some((name("ddns."), 32)));
}
