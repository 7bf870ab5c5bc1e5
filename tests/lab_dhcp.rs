//! The lab's DHCP and RA servers (tests/support/dhcp.rs) proven with plain clients, without
//! lanyard: busybox udhcpc (always with our own script), a hand-made DHCPREQUEST, and the
//! kernel's own SLAAC; and the resolv.conf guard the DHCP tests rely on. Each test builds its
//! own LAN (subnets 40..49) and checks that the host's /etc/resolv.conf is byte for byte
//! unchanged.
//!
//! NOT lanyard coverage: nothing here runs lanyard's code. These tests prove the test servers
//! and guards behave as the lanyard tests (tests/dhcp.rs, tests/dhcp_promises.rs, ...) assume,
//! so that a failure there points at lanyard and not at the lab. Do not count them when saying
//! what lanyard's tests cover.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use support::dhcp::{udhcpc, Dnsmasq, HostResolvConf, Kea, KeaConfig, Radvd};
use support::lab::{wait_until, Lan, Netns};

/// A LAN with one guest namespace plugged in as `eth0` (port `port0`, forwarding).
fn lan_with_guest(index: u8) -> (Lan, Netns) {
    let lan = Lan::bridge(index);
    let guest = lan.guest("guest");
    lan.plug(&guest, "port0", "eth0");
    assert!(lan.wait_forwarding("port0", Duration::from_secs(5)), "port0 never forwarded");
    (lan, guest)
}

fn mac_of(ns: &Netns, ifname: &str) -> String {
    let json = ns.ip_json(&["link", "show", "dev", ifname]);
    json[0]["address"].as_str().expect("link address").to_ascii_lowercase()
}

fn in_range(ip: Ipv4Addr, first: Ipv4Addr, last: Ipv4Addr) -> bool {
    (u32::from(first)..=u32::from(last)).contains(&u32::from(ip))
}

#[test]
fn dnsmasq_hands_out_an_address_and_records_it() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, guest) = lan_with_guest(40);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.40.50", "198.18.40.99"), "2m", &[]);
    eprintln!("dnsmasq ready in {:?}", dnsmasq.startup);

    let lease = udhcpc(&guest, "eth0", false, &["-x", "hostname:g40"])
        .unwrap_or_else(|e| panic!("no lease from dnsmasq: {e}\n{}", dnsmasq.log_text()));
    eprintln!("udhcpc bound in {:?}", lease.elapsed);
    let ip = lease.ip();
    assert!(in_range(ip, lan.addr4(50), lan.addr4(99)), "{ip} outside the range");
    assert_eq!(lease.get("router"), Some("198.18.40.1"));
    assert_eq!(lease.get("lease"), Some("120"));
    assert_eq!(lease.get("dns"), None, "--port=0 must not hand out DNS");

    let recorded = dnsmasq.wait_lease(ip, Duration::from_secs(3));
    assert_eq!(recorded.mac, mac_of(&guest, "eth0"));
    assert_eq!(recorded.hostname.as_deref(), Some("g40"));
    assert!(recorded.client_id.is_some(), "udhcpc sends a client id: {recorded:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(recorded.expiry > now && recorded.expiry <= now + 121, "{recorded:?}");
    dnsmasq.stop();
    resolv.assert_unchanged();
}

#[test]
fn dnsmasq_with_dns_hands_out_dns_options() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, guest) = lan_with_guest(41);
    let dnsmasq = Dnsmasq::start_with_dns(
        &lan.host,
        "br0",
        ("198.18.41.50", "198.18.41.99"),
        "2m",
        "lab.test",
        &[],
    );
    eprintln!("dnsmasq (DNS on) ready in {:?}", dnsmasq.startup);
    // udhcpc asks for the search list (119) only when told to.
    let lease = udhcpc(&guest, "eth0", false, &["-O", "search"])
        .unwrap_or_else(|e| panic!("no lease from dnsmasq: {e}\n{}", dnsmasq.log_text()));
    assert_eq!(lease.get("dns").map(str::trim), Some("198.18.41.1"));
    assert_eq!(lease.get("domain"), Some("lab.test"));
    assert_eq!(lease.get("search").map(str::trim), Some("lab.test"));
    dnsmasq.wait_lease(lease.ip(), Duration::from_secs(3));
    resolv.assert_unchanged();
}

#[test]
fn kea_grants_short_leases_and_records_grants_renewals_and_releases() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, guest) = lan_with_guest(42);
    let config = KeaConfig::short(42);
    assert_eq!((config.valid, config.renew, config.rebind), (10, 3, 7));
    let kea = Kea::start(&lan.host, "br0", config);
    eprintln!("kea ready in {:?}", kea.startup);

    let lease = udhcpc(&guest, "eth0", true, &[])
        .unwrap_or_else(|e| panic!("no lease from Kea: {e}\n{}", kea.log_text()));
    eprintln!("udhcpc bound in {:?}", lease.elapsed);
    let ip = lease.ip();
    assert!(in_range(ip, lan.addr4(50), lan.addr4(250)), "{ip} outside the pool");
    assert_eq!(lease.get("lease"), Some("10"));
    assert_eq!(lease.get("router"), Some("198.18.42.1"));
    assert_eq!(lease.get("dns").map(str::trim), Some("198.18.42.1"));
    let mac = mac_of(&guest, "eth0");
    kea.wait_lines("the grant", Duration::from_secs(3), |lines| {
        lines.iter().any(|l| l.address == ip && l.valid_lifetime == 10 && l.hwaddr == mac)
    });
    assert_eq!(kea.grants_of(ip), 1);
    assert_eq!(kea.renewals_of(ip), 0);
    assert!(!kea.released(ip));

    // A renewal adds a line; a RELEASE adds one with valid lifetime 0.
    assert_eq!(renew(&guest, &mac, ip, lan.gateway4), Some(5), "{}", kea.log_text());
    kea.wait_lines("the renewal", Duration::from_secs(3), |_| kea.renewals_of(ip) == 1);
    send_dhcp(&guest, &mac, ip, lan.gateway4, RELEASE, Duration::ZERO);
    kea.wait_lines("the release", Duration::from_secs(3), |lines| {
        lines.iter().rev().find(|l| l.address == ip).is_some_and(|l| l.valid_lifetime == 0)
    });
    assert_eq!(kea.renewals_of(ip), 1);
    assert!(kea.released(ip));
    resolv.assert_unchanged();
}

/// DHCPREQUEST (3) in RENEWING state: ciaddr set, no server id or requested address.
const REQUEST: u8 = 3;
/// DHCPRELEASE (7): ciaddr and server id; no answer.
const RELEASE: u8 = 7;

/// Sends a DHCP message of type `kind` from the guest (which must hold `ciaddr`) to `server`,
/// unicast, with client id 01:MAC as udhcpc sends it; returns the DHCP message type of the
/// answer (5 ACK, 6 NAK), or `None` after `wait` of silence.
fn send_dhcp(
    guest: &Netns,
    mac: &str,
    ciaddr: Ipv4Addr,
    server: Ipv4Addr,
    kind: u8,
    wait: Duration,
) -> Option<u8> {
    let mac: Vec<u8> =
        mac.split(':').map(|b| u8::from_str_radix(b, 16).expect("mac byte")).collect();
    let xid: u32 = 0x4c59_0000 | (std::process::id() & 0xffff);
    let mut packet = vec![0u8; 240];
    packet[0] = 1; // BOOTREQUEST
    packet[1] = 1; // Ethernet
    packet[2] = 6;
    packet[4..8].copy_from_slice(&xid.to_be_bytes());
    packet[12..16].copy_from_slice(&ciaddr.octets());
    packet[28..34].copy_from_slice(&mac);
    packet[236..240].copy_from_slice(&[99, 130, 83, 99]);
    packet.extend_from_slice(&[53, 1, kind]);
    packet.extend_from_slice(&[61, 7, 1]);
    packet.extend_from_slice(&mac);
    if kind == RELEASE {
        packet.extend_from_slice(&[54, 4]);
        packet.extend_from_slice(&server.octets());
    }
    packet.push(255);
    packet.resize(300, 0);
    guest.run_in(|| {
        let socket =
            UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).expect("bind :68");
        socket.set_broadcast(true).expect("SO_BROADCAST");
        socket.send_to(&packet, SocketAddrV4::new(server, 67)).expect("send DHCP message");
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1500];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("timeout");
            let Ok((n, _)) = socket.recv_from(&mut buf) else { return None };
            let reply = &buf[..n];
            if n < 240 || reply[0] != 2 || reply[4..8] != xid.to_be_bytes() {
                continue;
            }
            let mut options = &reply[240..];
            while let [code, rest @ ..] = options {
                match *code {
                    0 => options = rest,
                    255 => break,
                    _ => {
                        let [len, rest @ ..] = rest else { break };
                        let len = usize::from(*len);
                        if rest.len() < len {
                            break;
                        }
                        if *code == 53 && len == 1 {
                            return Some(rest[0]);
                        }
                        options = &rest[len..];
                    }
                }
            }
        }
        None
    })
}

fn renew(guest: &Netns, mac: &str, ciaddr: Ipv4Addr, server: Ipv4Addr) -> Option<u8> {
    send_dhcp(guest, mac, ciaddr, server, REQUEST, Duration::from_secs(3))
}

#[test]
fn kea_restarted_with_a_smaller_subnet_naks_the_old_address_and_serves_the_new_one() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, guest) = lan_with_guest(43);
    let mut config = KeaConfig::short(43);
    config.pool = (lan.addr4(150), lan.addr4(199));
    let mut kea = Kea::start(&lan.host, "br0", config.clone());
    let first_start = kea.startup;

    let lease = udhcpc(&guest, "eth0", true, &[])
        .unwrap_or_else(|e| panic!("no lease from Kea: {e}\n{}", kea.log_text()));
    let ip = lease.ip();
    assert!(in_range(ip, lan.addr4(150), lan.addr4(199)), "{ip} outside the pool");
    assert!(
        guest.addresses().contains(&format!("eth0 {ip}/24")),
        "our script configures the address: {:?}",
        guest.addresses()
    );
    let mac = mac_of(&guest, "eth0");
    // The unchanged server ACKs a renewal (and records it).
    assert_eq!(renew(&guest, &mac, ip, lan.gateway4), Some(5), "{}", kea.log_text());
    kea.wait_lines("the renewal", Duration::from_secs(3), |_| kea.renewals_of(ip) == 1);

    // Authoritative, /25 that holds the gateway but not the address: NAK.
    config.subnet = "198.18.43.0/25".to_string();
    config.pool = (lan.addr4(50), lan.addr4(99));
    config.authoritative = true;
    let restarted = Instant::now();
    kea.restart(config);
    eprintln!(
        "kea ready in {first_start:?}; restart (stop + start) {:?}, start {:?}",
        restarted.elapsed(),
        kea.startup
    );
    assert!(kea.is_running());
    assert_eq!(renew(&guest, &mac, ip, lan.gateway4), Some(6), "{}", kea.log_text());

    // A new client gets an address of the new pool.
    let guest2 = lan.guest("guest2");
    lan.plug(&guest2, "port1", "eth0");
    assert!(lan.wait_forwarding("port1", Duration::from_secs(5)));
    let lease2 = udhcpc(&guest2, "eth0", false, &[])
        .unwrap_or_else(|e| panic!("no lease from restarted Kea: {e}\n{}", kea.log_text()));
    assert!(in_range(lease2.ip(), lan.addr4(50), lan.addr4(99)), "{}", lease2.ip());
    kea.stop();
    assert!(!kea.is_running());
    resolv.assert_unchanged();
}

#[test]
fn radvd_gives_a_guest_a_slaac_address() {
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(44);
    let radvd = Radvd::start(&lan.host, "br0", lan.subnet6);
    eprintln!("radvd ready in {:?}", radvd.startup);
    assert_eq!(lan.host.sysctl_get("net.ipv6.conf.all.forwarding"), "1");

    let guest = lan.guest("guest");
    guest.sysctl("net.ipv6.conf.default.accept_ra", "1");
    let plugged = Instant::now();
    lan.plug(&guest, "port0", "eth0");
    guest.sysctl("net.ipv6.conf.eth0.accept_ra", "1");
    let mut addresses = Vec::new();
    let got = wait_until(Duration::from_secs(10), || {
        addresses = guest.addresses();
        addresses.iter().any(|a| a.starts_with("eth0 2001:db8:44:") && a.ends_with("/64"))
    });
    assert!(got, "no SLAAC address within 10 s: {addresses:?}\n--- radvd:\n{}", radvd.log_text());
    eprintln!("SLAAC address {:?} after {:?}", addresses, plugged.elapsed());
    radvd.stop();
    resolv.assert_unchanged();
}

#[test]
fn the_resolv_conf_guard_writes_back_what_a_failing_test_changed() {
    // A file of our own stands in for the host's /etc/resolv.conf, which is never written here.
    let dir = support::lab::TestDir::new("resolv-guard");
    let file = dir.join("resolv.conf");
    std::fs::write(&file, b"nameserver 192.0.2.1\n").unwrap();
    // The guard trips in its own assertion...
    let caught = std::panic::catch_unwind(|| {
        let mut guard = HostResolvConf::snapshot_of(&file);
        std::fs::write(&file, b"nameserver 203.0.113.66\n").unwrap();
        guard.assert_unchanged();
    });
    let message = caught
        .expect_err("a changed file fails the test")
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("its old bytes were written back"), "{message}");
    assert_eq!(std::fs::read(&file).unwrap(), b"nameserver 192.0.2.1\n");
    // ...and on drop while the test fails for another reason.
    let caught = std::panic::catch_unwind(|| {
        let _guard = HostResolvConf::snapshot_of(&file);
        std::fs::write(&file, b"nameserver 203.0.113.67\n").unwrap();
        panic!("the test failed for another reason");
    });
    assert!(caught.is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"nameserver 192.0.2.1\n");
}
