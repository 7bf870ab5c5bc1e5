//! lanyard's DNS updates (src/dns) against a real BIND 9 in a lab namespace: records appear and
//! go, ownership (DHCID) is respected, and refusals are reported with what to do.
//!
//! "Owned by someone else" means: the name has records and no DHCID of ours, either a DHCID of
//! another client id or no DHCID at all (a plain A made by hand); RFC 4703 treats both alike.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, RecordType};
use lanyard::dns::{self, Forward, Registration, TsigKey, UpdateServer};
use lanyard::error::ErrorKind;
use sha2::{Digest, Sha256};
use support::bind::{Bind, BindZone, KeaDdns, TsigKeyFile};
use support::{Netns, Stopped, TestDir};

const NAMED: Ipv4Addr = Ipv4Addr::new(198, 18, 53, 1);
const FORWARD: &str = "app.lan";
const REVERSE4: &str = "18.198.in-addr.arpa";
const REVERSE6: &str = "8.b.d.0.1.0.0.2.ip6.arpa";

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 5));
const V4_NEW: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 6));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5));

/// A namespace with named on 198.18.53.1 (on its `lo`) serving `zones`, and the lab's key.
struct DnsLab {
    // Declared first: named dies before its files go.
    bind: Bind,
    key: TsigKeyFile,
    dir: TestDir,
    ns: Netns,
}

impl DnsLab {
    fn new(zones: &[BindZone]) -> DnsLab {
        let ns = Netns::new("dns");
        ns.ip(&["addr", "add", &format!("{NAMED}/32"), "dev", "lo"]);
        let dir = TestDir::new("bind");
        let key = TsigKeyFile::generate(&dir, "ddns.key", "ddns");
        let bind = Bind::start_zones(&ns, &dir, NAMED, zones, Some(&key));
        DnsLab { bind, key, dir, ns }
    }

    fn standard() -> DnsLab {
        DnsLab::new(&[
            BindZone::updatable(FORWARD),
            BindZone::updatable(REVERSE4),
            BindZone::updatable(REVERSE6),
        ])
    }

    fn server(&self) -> UpdateServer {
        UpdateServer {
            server: (NAMED, 53).into(),
            zone: FORWARD.into(),
            key: Some(TsigKey::from_file(&self.key.path).expect("read the lab's key")),
            ttl: 60,
            reverse: true,
            timeout: Duration::from_secs(2),
        }
    }

    /// `register` inside the namespace, which must fail with `kind`; the error's text.
    fn register_refused(
        &self,
        server: &UpdateServer,
        reg: &Registration,
        kind: ErrorKind,
    ) -> String {
        let err = self.ns.run_in(|| dns::register(server, reg)).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        err.to_string()
    }

    fn query(&self, name: &str, rtype: &str) -> Vec<String> {
        self.bind.query(&self.ns, name, rtype)
    }

    /// A, AAAA and DHCID of `fqdn`, for "nothing changed" comparisons.
    fn forward_records(&self, fqdn: &str) -> Vec<Vec<String>> {
        ["A", "AAAA", "DHCID"].iter().map(|t| self.query(fqdn, t)).collect()
    }

    /// nsupdate with the lab's key, run inside the namespace: the way an admin (or another
    /// host's tool) makes records lanyard does not own.
    fn nsupdate(&self, commands: &str) {
        let script = self.dir.join("nsupdate.txt");
        std::fs::write(&script, format!("server {NAMED}\n{commands}\nsend\n")).unwrap();
        let key = self.key.path.to_string_lossy().into_owned();
        self.ns.exec_ok(&["nsupdate", "-k", &key, &script.to_string_lossy()]);
    }
}

fn registration(fqdn: &str, addresses: &[IpAddr], client_id: &[u8]) -> Registration {
    Registration { fqdn: fqdn.into(), addresses: addresses.to_vec(), client_id: client_id.to_vec() }
}

#[test]
fn register_is_answered_within_200ms_and_unregister_removes_everything() {
    let lab = DnsLab::standard();
    let server = lab.server();
    let reg = registration("web.app.lan", &[V4, V6], b"\xffweb-eth1");
    let started = Instant::now();
    let done = lab.ns.run_in(|| dns::register(&server, &reg)).expect("register");
    let registered_in = started.elapsed();
    assert_eq!(lab.bind.query_udp(&lab.ns, "web.app.lan", RecordType::A), ["198.18.0.5"]);
    assert_eq!(
        lab.bind.query_udp(&lab.ns, "5.0.18.198.in-addr.arpa", RecordType::PTR),
        ["web.app.lan."]
    );
    let answered_in = started.elapsed();
    assert!(
        answered_in < Duration::from_millis(200),
        "A and PTR answered {answered_in:?} after register started (register: {registered_in:?})"
    );
    assert_eq!(lab.query("web.app.lan", "A"), ["198.18.0.5"], "dig agrees");
    assert_eq!(done.forward, Forward::Added);
    let zones: Vec<&str> = done.reverse.iter().map(|r| r.zone.as_str()).collect();
    assert_eq!(zones, [REVERSE4, REVERSE6]);
    assert_eq!(done.reverse[0].name, "5.0.18.198.in-addr.arpa");
    assert_eq!(lab.query("web.app.lan", "AAAA"), ["2001:db8::5"]);
    assert_eq!(lab.query("5.0.18.198.in-addr.arpa", "PTR"), ["web.app.lan."]);
    assert_eq!(lab.query(&done.reverse[1].name, "PTR"), ["web.app.lan."]);
    assert_eq!(lab.query("web.app.lan", "DHCID").len(), 1);
    let dhcid = lab.query("web.app.lan", "DHCID");

    lab.ns.run_in(|| dns::unregister(&server, &reg)).expect("unregister");
    for rtype in ["A", "AAAA", "DHCID"] {
        assert_eq!(lab.query("web.app.lan", rtype), Vec::<String>::new(), "{rtype} left");
    }
    assert!(lab.query("5.0.18.198.in-addr.arpa", "PTR").is_empty());
    assert!(lab.query(&done.reverse[1].name, "PTR").is_empty());
    assert!(lab.query("5.0.18.198.in-addr.arpa", "DHCID").is_empty());
    // Unregistering again finds nothing of ours: no error.
    lab.ns.run_in(|| dns::unregister(&server, &reg)).expect("unregister again");

    // Without the addresses (a registration whose addresses were not kept): the name's
    // addresses, as the server has them, lose their PTRs too.
    lab.ns.run_in(|| dns::register(&server, &reg)).expect("register again");
    let unknown_addresses = registration("web.app.lan", &[], b"\xffweb-eth1");
    lab.ns.run_in(|| dns::unregister(&server, &unknown_addresses)).expect("unregister all");
    assert!(lab.forward_records("web.app.lan").iter().all(Vec::is_empty));
    assert!(lab.query("5.0.18.198.in-addr.arpa", "PTR").is_empty());
    assert!(lab.query(&done.reverse[1].name, "PTR").is_empty());

    // The name went by other means (removed by hand, or by an unregister cut short) and its
    // PTRs stayed: they are removed.
    lab.ns.run_in(|| dns::register(&server, &reg)).expect("register once more");
    lab.nsupdate("update delete web.app.lan");
    assert!(lab.forward_records("web.app.lan").iter().all(Vec::is_empty));
    lab.ns.run_in(|| dns::unregister(&server, &reg)).expect("unregister a gone name");
    assert!(lab.query("5.0.18.198.in-addr.arpa", "PTR").is_empty());
    assert!(lab.query(&done.reverse[1].name, "PTR").is_empty());
    // The DHCID named held was the RFC 4701 one for this client id and name.
    let fqdn = Name::from_ascii("web.app.lan.").unwrap();
    let expected = data_encoding::BASE64.encode(&dns::wire::dhcid(b"\xffweb-eth1", &fqdn));
    assert_eq!(dhcid, [expected]);
}

#[test]
fn registering_again_replaces_the_addresses_and_a_gone_address_loses_its_ptr() {
    let lab = DnsLab::standard();
    let server = lab.server();
    let first = registration("web.app.lan", &[V4, V6], b"\xffweb-eth1");
    lab.ns.run_in(|| dns::register(&server, &first)).expect("register");
    let dhcid = lab.query("web.app.lan", "DHCID");
    let v6_ptr = Name::from(V6).to_ascii();

    let second = registration("web.app.lan", &[V4_NEW, V6], b"\xffweb-eth1");
    let done = lab.ns.run_in(|| dns::register(&server, &second)).expect("register again");
    assert_eq!(done.forward, Forward::Replaced);
    assert_eq!(lab.query("web.app.lan", "A"), ["198.18.0.6"]);
    assert_eq!(lab.query("web.app.lan", "AAAA"), ["2001:db8::5"]);
    assert_eq!(lab.query("web.app.lan", "DHCID"), dhcid, "the owner record stays");
    assert_eq!(lab.query("6.0.18.198.in-addr.arpa", "PTR"), ["web.app.lan."]);
    assert_eq!(lab.query(&v6_ptr, "PTR"), ["web.app.lan."]);
    // The address that went loses its PTR.
    let removed: Vec<&str> = done.reverse_removed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(removed, ["5.0.18.198.in-addr.arpa"]);
    assert!(lab.query("5.0.18.198.in-addr.arpa", "PTR").is_empty());

    // 198.18.0.6 moves to another host, whose PTR it now is: when web drops that address, the
    // PTR (not pointing at web any more) stays.
    let db = registration("db.app.lan", &[V4_NEW], b"\xffdb-eth1");
    lab.ns.run_in(|| dns::register(&server, &db)).expect("register db");
    let third = registration("web.app.lan", &[V6], b"\xffweb-eth1");
    let done = lab.ns.run_in(|| dns::register(&server, &third)).expect("register web once more");
    assert!(done.reverse_removed.is_empty(), "{:?}", done.reverse_removed);
    assert_eq!(lab.query("6.0.18.198.in-addr.arpa", "PTR"), ["db.app.lan."]);
    assert!(lab.query("web.app.lan", "A").is_empty());
    assert_eq!(lab.query("web.app.lan", "AAAA"), ["2001:db8::5"]);
}

#[test]
fn a_wrong_key_is_reported_and_changes_nothing() {
    let lab = DnsLab::standard();
    let wrong = TsigKeyFile::generate(&lab.dir, "wrong.key", "ddns");
    let mut server = lab.server();
    server.key = Some(TsigKey::from_file(&wrong.path).unwrap());
    let reg = registration("web.app.lan", &[V4], b"\xffweb-eth1");
    let text = lab.register_refused(&server, &reg, ErrorKind::Permission);
    assert!(text.contains("the TSIG key \"ddns\" is not accepted"), "{text}");
    assert!(text.contains("BADSIG"), "{text}");
    assert!(text.contains("web.app.lan") && text.contains("zone app.lan"), "{text}");
    assert!(text.contains("198.18.53.1:53"), "{text}");
    assert!(lab.forward_records("web.app.lan").iter().all(Vec::is_empty));
    assert!(lab.query("5.0.18.198.in-addr.arpa", "PTR").is_empty());

    // A key the server does not know at all (another name): BADKEY.
    let unknown = TsigKeyFile::generate(&lab.dir, "unknown.key", "other");
    server.key = Some(TsigKey::from_file(&unknown.path).unwrap());
    let text = lab.register_refused(&server, &reg, ErrorKind::Permission);
    assert!(text.contains("the TSIG key \"other\" is not accepted (NOTAUTH BADKEY)"), "{text}");
    assert!(lab.forward_records("web.app.lan").iter().all(Vec::is_empty));
}

#[test]
fn a_zone_the_server_does_not_serve_is_reported() {
    let lab = DnsLab::standard();
    let mut server = lab.server();
    server.zone = "other.lan".into();
    let reg = registration("web.other.lan", &[V4], b"\xffweb-eth1");
    let text = lab.register_refused(&server, &reg, ErrorKind::Permission);
    assert!(
        text.contains("DNS update of web.other.lan in zone other.lan at 198.18.53.1:53: the server is not authoritative for zone other.lan"),
        "{text}"
    );
}

#[test]
fn a_missing_reverse_zone_is_reported_after_the_forward_records_and_the_other_ptrs() {
    let lab = DnsLab::new(&[BindZone::updatable(FORWARD), BindZone::updatable(REVERSE4)]);
    let server = lab.server();
    // The address without a reverse zone first: the other still gets its PTR.
    let reg = registration("web.app.lan", &[V6, V4], b"\xffweb-eth1");
    let text = lab.register_refused(&server, &reg, ErrorKind::NotFound);
    assert!(
        text.contains(
            "the address records of web.app.lan are in place, but the PTR of 2001:db8::5 is not"
        ),
        "{text}"
    );
    assert!(text.contains("the server is not authoritative for a zone holding it"), "{text}");
    assert!(text.contains("set reverse = false"), "{text}");
    assert!(!text.contains("198.18.0.5"), "{text}");
    assert_eq!(lab.query("web.app.lan", "AAAA"), ["2001:db8::5"]);
    assert_eq!(lab.query("5.0.18.198.in-addr.arpa", "PTR"), ["web.app.lan."]);
}

#[test]
fn a_zone_that_refuses_updates_is_reported() {
    let lab = DnsLab::new(&[BindZone::read_only(FORWARD), BindZone::updatable(REVERSE4)]);
    let server = lab.server();
    let reg = registration("web.app.lan", &[V4], b"\xffweb-eth1");
    let text = lab.register_refused(&server, &reg, ErrorKind::Permission);
    assert!(text.contains("the server refuses updates to zone app.lan (REFUSED)"), "{text}");
    assert!(lab.forward_records("web.app.lan").iter().all(Vec::is_empty));
    assert!(lab.query("5.0.18.198.in-addr.arpa", "PTR").is_empty(), "no PTR without the name");
}

#[test]
fn a_name_held_by_another_client_is_never_overwritten() {
    let lab = DnsLab::standard();
    let server = lab.server();
    // Another client registered the name first (its own client id, so its own DHCID).
    let theirs = registration("web.app.lan", &[V4], b"\xffother-host");
    lab.ns.run_in(|| dns::register(&server, &theirs)).expect("their register");
    let before = lab.forward_records("web.app.lan");
    let ours = registration("web.app.lan", &[V4_NEW], b"\xffweb-eth1");
    let text = lab.register_refused(&server, &ours, ErrorKind::Conflict);
    assert!(
        text.contains(
            "name web.app.lan is held by another client (its DHCID differs): not changed"
        ),
        "{text}"
    );
    assert_eq!(lab.forward_records("web.app.lan"), before);
    assert!(lab.query("6.0.18.198.in-addr.arpa", "PTR").is_empty(), "no PTR for a name not ours");
    // Removing "our" registration of a name that is not ours leaves it alone, and the PTR of
    // its address too (which names the same name), listed or not.
    let their_ptr = lab.query("5.0.18.198.in-addr.arpa", "PTR");
    assert_eq!(their_ptr, ["web.app.lan."]);
    for addresses in [vec![V4], vec![]] {
        let ours = registration("web.app.lan", &addresses, b"\xffweb-eth1");
        lab.ns.run_in(|| dns::unregister(&server, &ours)).expect("unregister: nothing of ours");
        assert_eq!(lab.forward_records("web.app.lan"), before);
        assert_eq!(lab.query("5.0.18.198.in-addr.arpa", "PTR"), their_ptr, "{addresses:?}");
    }

    // A plain A record without any DHCID (made by hand) is someone else's too.
    lab.nsupdate("update add db.app.lan 300 IN A 198.18.0.99");
    let by_hand = registration("db.app.lan", &[V4], b"\xffdb-eth1");
    let text = lab.register_refused(&server, &by_hand, ErrorKind::Conflict);
    assert!(
        text.contains(
            "name db.app.lan is held by another client (it has records but no DHCID: made by \
             hand or by a tool that does not mark ownership): not changed"
        ),
        "{text}"
    );
    assert_eq!(lab.query("db.app.lan", "A"), ["198.18.0.99"]);
    assert!(lab.query("db.app.lan", "DHCID").is_empty());
}

#[test]
fn a_server_that_does_not_answer_is_a_timeout_naming_it() {
    let lab = DnsLab::standard();
    let mut server = lab.server();
    server.timeout = Duration::from_millis(300);
    let _frozen = Stopped::new(lab.bind.pid() as i32);
    let reg = registration("web.app.lan", &[V4], b"\xffweb-eth1");
    let started = Instant::now();
    let text = lab.register_refused(&server, &reg, ErrorKind::Timeout);
    let took = started.elapsed();
    assert!(text.contains("no answer from 198.18.53.1:53 within 300ms"), "{text}");
    assert!(took < Duration::from_millis(600), "the 300 ms bound took {took:?}");
}

/// Kea's D2 (what DHCP-side DDNS uses) registers a name the way lanyard reads ownership: a
/// name it added with the DHCID of client id X is replaced by lanyard's `register` for X, and
/// refused for any other client id.
#[test]
fn a_name_kea_registered_is_ours_only_for_the_same_client_id() {
    let lab = DnsLab::standard();
    let d2 = KeaDdns::start(&lab.ns, &lab.dir, &lab.bind, FORWARD, &[REVERSE4], &lab.key, 53001);
    let client_id = b"\x01\x02\x00\x00\x5e\x00\x53\x07".to_vec();
    // The DHCID kea-dhcp4 computes for option 61 (RFC 4701 identifier type 1, SHA-256 over the
    // client id and the name in wire form), spelled out here rather than taken from lanyard.
    let mut hashed = client_id.clone();
    hashed.extend_from_slice(b"\x03kea\x03app\x03lan\x00");
    let mut dhcid = vec![0x00, 0x01, 0x01];
    dhcid.extend_from_slice(&Sha256::digest(&hashed));
    // A NameChangeRequest as kea-dhcp4 sends it: 2-byte length, then JSON.
    let ncr = serde_json::json!({
        "change-type": 0,
        "forward-change": true,
        "reverse-change": true,
        "fqdn": "kea.app.lan.",
        "ip-address": "198.18.0.7",
        "dhcid": dhcid.iter().map(|b| format!("{b:02X}")).collect::<String>(),
        "lease-expires-on": "20991231000000",
        "lease-length": 3600,
        "use-conflict-resolution": true,
    })
    .to_string();
    let mut datagram = (ncr.len() as u16).to_be_bytes().to_vec();
    datagram.extend_from_slice(ncr.as_bytes());
    lab.ns.run_in(|| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(&datagram, ("127.0.0.1", d2.port)).unwrap();
    });
    let registered = support::wait_until(Duration::from_secs(5), || {
        !lab.bind.query_udp(&lab.ns, "kea.app.lan", RecordType::A).is_empty()
    });
    assert!(registered, "D2 did not register kea.app.lan:\n{}", d2.log_text());
    assert_eq!(lab.query("kea.app.lan", "A"), ["198.18.0.7"]);
    assert_eq!(lab.query("7.0.18.198.in-addr.arpa", "PTR"), ["kea.app.lan."]);

    let server = lab.server();
    let other = registration("kea.app.lan", &[V4], b"\x01\x02\x00\x00\x5e\x00\x53\x08");
    lab.register_refused(&server, &other, ErrorKind::Conflict);
    assert_eq!(lab.query("kea.app.lan", "A"), ["198.18.0.7"]);
    let same = registration("kea.app.lan", &[V4], &client_id);
    let done = lab.ns.run_in(|| dns::register(&server, &same)).expect("register over Kea's name");
    assert_eq!(done.forward, Forward::Replaced);
    assert_eq!(lab.query("kea.app.lan", "A"), ["198.18.0.5"]);
}

#[test]
fn a_stopped_server_is_reported_at_once() {
    let mut lab = DnsLab::standard();
    lab.bind.stop();
    let server = lab.server();
    let reg = registration("web.app.lan", &[V4], b"\xffweb-eth1");
    let started = Instant::now();
    let text = lab.register_refused(&server, &reg, ErrorKind::Io);
    let took = started.elapsed();
    assert!(
        text.contains("at 198.18.53.1:53: nothing serves DNS there (is the server running?)"),
        "{text}"
    );
    // The port-unreachable answer ends the wait; the 2 s bound is not spent.
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // Back up: the same call goes through.
    lab.bind.restart(&lab.ns);
    lab.ns.run_in(|| dns::register(&server, &reg)).expect("register once named is back");
    assert_eq!(lab.query("web.app.lan", "A"), ["198.18.0.5"]);
}
