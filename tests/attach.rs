//! attach / detach / inspect against the real kernel, each test in namespaces of its own.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use lanyard::attach::DEFAULT_GUEST_IFNAME;
use lanyard::error::ErrorKind;
use lanyard::guest::GuestSpec;
use lanyard::netns::Netns as NsHandle;
use lanyard::spec::{parse_address, parse_route, MacAddr};
use lanyard::{AttachRequest, FailPoint, Host};
use support::cli::{run as cli, text, token as guest_token};
use support::lab::{self, Lan, Netns, TestDir};

fn host_for(ns: &Netns, dir: &TestDir) -> Host {
    lab::require_root();
    let handle = NsHandle::open(&ns.path).expect("open host namespace");
    Host::new(handle, &dir.join("state"), format!("test-{}", lab::run_id())).expect("host")
}

fn request(host_if: &str, guest: &Netns, addresses: &[&str]) -> AttachRequest {
    let mut request = AttachRequest::new(host_if, GuestSpec::Netns(guest.name.clone()));
    request.addresses = addresses.iter().map(|a| parse_address(a).expect("address")).collect();
    request
}

/// Whether `to` answers: up to three single pings, since one echo can be lost (a neighbour
/// entry still resolving, a port that just began forwarding) without anything being wrong.
fn ping(from: &Netns, to: IpAddr) -> bool {
    let to = to.to_string();
    (0..3).any(|_| from.exec(&["ping", "-c", "1", "-W", "2", &to]).status.success())
}

#[test]
fn bridge_attach_pings_gateway_and_peer_then_detach_leaves_nothing() {
    let lan = Lan::bridge(1);
    let dir = TestDir::new("bridge");
    let host = host_for(&lan.host, &dir);
    let a = lan.guest("a");
    let b = lan.guest("b");
    let host_before = lan.host.snapshot();
    let a_before = a.snapshot();

    let attached_a =
        lanyard::attach(&host, &request("br0", &a, &["198.18.1.10/24@198.18.1.1"])).unwrap();
    lanyard::attach(&host, &request("br0", &b, &["198.18.1.11/24"])).unwrap();
    assert!(ping(&a, lan.gateway4.into()), "a reaches the gateway");
    assert!(ping(&a, "198.18.1.11".parse().unwrap()), "a reaches b");
    assert!(
        a.routes().iter().any(|r| r.contains("default via 198.18.1.1 dev eth1")),
        "{:?}",
        a.routes()
    );

    // The MAC is stable: detach and attach again gives the same one.
    let mac = attached_a.record.mac;
    assert!(mac.is_locally_administered() && !mac.is_multicast());
    assert_eq!(
        a.ip(&["-br", "link", "show", "eth1"]).split_whitespace().nth(2),
        Some(mac.to_string().as_str())
    );
    let detached = lanyard::detach(&host, &guest_token(&a), None).unwrap();
    assert_eq!(detached.interfaces, vec![DEFAULT_GUEST_IFNAME.to_string()]);
    let again = lanyard::attach(&host, &request("br0", &a, &["198.18.1.10/24"])).unwrap();
    assert_eq!(again.record.mac, mac);

    // A link-only second interface, then detached alone with -i.
    let mut link_only = request("br0", &a, &[]);
    link_only.guest_ifname = "eth2".into();
    lanyard::attach(&host, &link_only).unwrap();
    assert!(a.links().iter().any(|l| l.contains("eth2")));
    assert!(!a.addresses().iter().any(|l| l.contains("eth2") && l.contains("198.18.")));
    let only = lanyard::detach(&host, &guest_token(&a), Some("eth2")).unwrap();
    assert_eq!(only.interfaces, vec!["eth2".to_string()]);
    assert!(a.links().iter().any(|l| l.contains("eth1")), "-i leaves the other interface");
    lanyard::detach(&host, &guest_token(&a), None).unwrap();
    lanyard::detach(&host, &guest_token(&b), None).unwrap();
    // Idempotent: detaching again succeeds and does nothing.
    assert!(lanyard::detach(&host, &guest_token(&a), None).unwrap().interfaces.is_empty());
    assert_eq!(lan.host.snapshot(), host_before);
    assert_eq!(a.snapshot(), a_before);
    assert!(lab::state_files(&dir).is_empty());
}

#[test]
fn ipv6_static_with_link_local_gateway_enables_only_our_interface() {
    let lan = Lan::bridge(2);
    let dir = TestDir::new("v6");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    // What Docker does in a --net none container.
    g.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    g.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
    let mut req = request("br0", &g, &["198.18.2.20/24@198.18.2.1", "2001:db8:2::20/64@fe80::1"]);
    req.routes = vec![parse_route("198.19.0.0/16@198.18.2.254").unwrap()];
    lanyard::attach(&host, &req).unwrap();
    assert_eq!(g.sysctl_get("net.ipv6.conf.all.disable_ipv6"), "1");
    assert_eq!(g.sysctl_get("net.ipv6.conf.default.disable_ipv6"), "1");
    assert_eq!(g.sysctl_get("net.ipv6.conf.eth1.disable_ipv6"), "0");
    let addresses = g.addresses();
    assert!(addresses.iter().any(|a| a.contains("2001:db8:2::20/64")), "{addresses:?}");
    let routes = g.routes();
    assert!(routes.iter().any(|r| r.contains("default via fe80::1 dev eth1")), "{routes:?}");
    assert!(
        routes.iter().any(|r| r.contains("198.19.0.0/16 via 198.18.2.254 dev eth1")),
        "{routes:?}"
    );
    assert!(ping(&g, lan.gateway6.into()), "IPv6 reaches the gateway at once (no DAD wait)");
    lanyard::detach(&host, &guest_token(&g), None).unwrap();
}

#[test]
fn default_route_is_replaced_and_restored_on_detach() {
    let lan = Lan::bridge(3);
    let dir = TestDir::new("defroute");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    // The guest already has an eth0 with a default route (as a Docker container does).
    g.ip_batch(
        "link add eth0 type veth peer name eth0peer\nlink set eth0 up\nlink set eth0peer up\n\
         addr add 198.19.250.2/24 dev eth0\nroute add default via 198.19.250.1 dev eth0",
    );
    let before = g.snapshot();
    let attached =
        lanyard::attach(&host, &request("br0", &g, &["198.18.3.30/24@198.18.3.1"])).unwrap();
    assert_eq!(attached.record.replaced_default_routes.len(), 1);
    let routes = g.routes();
    assert!(routes.iter().any(|r| r.contains("default via 198.18.3.1 dev eth1")), "{routes:?}");
    assert!(!routes.iter().any(|r| r.contains("default via 198.19.250.1")), "{routes:?}");
    lanyard::detach(&host, &guest_token(&g), None).unwrap();
    assert_eq!(g.snapshot(), before, "the old default route is back, nothing else changed");
}

#[test]
fn mtu_defaults_to_the_bridge_and_never_exceeds_it() {
    let lan = Lan::bridge(4);
    lan.host.ip(&["link", "set", "br0", "mtu", "1400"]);
    let dir = TestDir::new("mtu");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let attached = lanyard::attach(&host, &request("br0", &g, &["198.18.4.2/24"])).unwrap();
    assert_eq!(attached.record.mtu, 1400);
    assert!(g.ip(&["link", "show", "eth1"]).contains("mtu 1400"));
    let port = attached.record.host_ifname.clone().unwrap();
    assert!(lan.host.ip(&["link", "show", &port]).contains("mtu 1400"));
    assert!(lan.host.ip(&["link", "show", "br0"]).contains("mtu 1400"), "bridge MTU unchanged");
    lanyard::detach(&host, &guest_token(&g), None).unwrap();

    let mut smaller = request("br0", &g, &["198.18.4.2/24"]);
    smaller.mtu = Some(1300);
    lanyard::attach(&host, &smaller).unwrap();
    assert!(g.ip(&["link", "show", "eth1"]).contains("mtu 1300"));
    lanyard::detach(&host, &guest_token(&g), None).unwrap();

    let mut larger = request("br0", &g, &["198.18.4.2/24"]);
    larger.mtu = Some(1500);
    let err = lanyard::attach(&host, &larger).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    assert!(err.to_string().contains("exceeds the MTU of br0 (1400)"), "{err}");
}

#[test]
fn macvlan_on_a_physical_interface_reaches_the_lan() {
    let lan = Lan::with_uplink(5);
    let dir = TestDir::new("macvlan");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let host_before = lan.host.snapshot();
    let attached =
        lanyard::attach(&host, &request("uplink0", &g, &["198.18.5.60/24@198.18.5.1"])).unwrap();
    assert_eq!(attached.record.driver.to_string(), "macvlan");
    assert!(g.ip(&["-d", "link", "show", "eth1"]).contains("macvlan mode bridge"));
    assert!(lan.wait_forwarding(Duration::from_secs(3)));
    assert!(ping(&g, lan.gateway4.into()), "macvlan guest reaches the gateway");
    assert_eq!(lan.host.snapshot(), host_before, "nothing new in the host namespace");
    lanyard::detach(&host, &guest_token(&g), None).unwrap();
    assert!(!g.links().iter().any(|l| l.contains("eth1")), "{:?}", g.links());

    // A bridge port cannot carry a macvlan: clear error, nothing changed.
    let lan_host = host_for(&lan.lan, &dir);
    let err =
        lanyard::attach(&lan_host, &request("lanport0", &g, &["198.18.5.61/24"])).unwrap_err();
    assert!(err.to_string().contains("is a port of a bridge"), "{err}");
}

#[test]
fn host_only_point_to_point_link() {
    let lan = Lan::bridge(6);
    let dir = TestDir::new("hostonly");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let mut req = request("vhost0", &g, &["198.18.106.2/24"]);
    req.host_only = true;
    req.host_addresses = vec!["198.18.106.1/24".parse().unwrap()];
    lanyard::attach(&host, &req).unwrap();
    assert!(lan
        .host
        .addresses()
        .iter()
        .any(|a| a.contains("vhost0") && a.contains("198.18.106.1/24")));
    assert!(ping(&g, "198.18.106.1".parse().unwrap()));
    // One guest per link: the name is taken now.
    let other = lan.guest("other");
    let mut again = request("vhost0", &other, &["198.18.106.3/24"]);
    again.host_only = true;
    assert_eq!(lanyard::attach(&host, &again).unwrap_err().kind(), ErrorKind::Conflict);
    lanyard::detach(&host, &guest_token(&g), None).unwrap();
    assert!(!lan.host.links().iter().any(|l| l.contains("vhost0")));
}

#[test]
fn a_missing_br_bridge_is_created_and_removed_with_its_last_port() {
    let lan = Lan::bridge(7);
    let dir = TestDir::new("newbridge");
    let host = host_for(&lan.host, &dir);
    let a = lan.guest("a");
    let b = lan.guest("b");
    let before = lan.host.snapshot();
    let first = lanyard::attach(&host, &request("brlab", &a, &["198.18.7.10/24"])).unwrap();
    assert!(first.record.created_bridge);
    lanyard::attach(&host, &request("brlab", &b, &["198.18.7.11/24"])).unwrap();
    assert!(ping(&a, "198.18.7.11".parse().unwrap()));
    lanyard::detach(&host, &guest_token(&a), None).unwrap();
    assert!(lan.host.links().iter().any(|l| l.contains("brlab")), "b still uses it");
    lanyard::detach(&host, &guest_token(&b), None).unwrap();
    assert_eq!(lan.host.snapshot(), before, "bridge removed with its last port");

    let mut no_create = request("brother", &a, &["198.18.7.10/24"]);
    no_create.no_create = true;
    assert_eq!(lanyard::attach(&host, &no_create).unwrap_err().kind(), ErrorKind::NotFound);
    let err = lanyard::attach(&host, &request("eth9", &a, &["198.18.7.10/24"])).unwrap_err();
    assert!(err.to_string().contains("host interface eth9 does not exist"), "{err}");
}

#[test]
fn failure_at_every_step_rolls_back_everything() {
    let lan = Lan::bridge(8);
    let dir = TestDir::new("rollback");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    g.ip_batch(
        "link add eth0 type veth peer name eth0peer\nlink set eth0 up\nlink set eth0peer up\n\
         addr add 198.19.250.2/24 dev eth0\nroute add default via 198.19.250.1 dev eth0",
    );
    for bridge in ["br0", "brfresh"] {
        for point in [
            FailPoint::AfterLink,
            FailPoint::AfterAddresses,
            FailPoint::AfterRoutes,
            FailPoint::AfterRecord,
        ] {
            let host_before = lan.host.snapshot();
            let guest_before = g.snapshot();
            let state_before = lab::state_files(&dir);
            let mut req = request(bridge, &g, &["198.18.8.2/24@198.18.8.1", "2001:db8:8::2/64"]);
            req.routes = vec![parse_route("198.19.0.0/16@198.18.8.254").unwrap()];
            req.fail_at = Some(point);
            let err = lanyard::attach(&host, &req).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Injected, "{bridge} {point:?}: {err}");
            assert_eq!(lan.host.snapshot(), host_before, "{bridge} {point:?}: host side");
            assert_eq!(g.snapshot(), guest_before, "{bridge} {point:?}: guest side");
            assert_eq!(lab::state_files(&dir), state_before, "{bridge} {point:?}: state");
        }
    }
}

#[test]
fn concurrent_attaches_get_distinct_names_and_macs() {
    let lan = Lan::bridge(9);
    let dir = TestDir::new("concurrent");
    let guests: Vec<Netns> = (0..8).map(|i| lan.guest(&format!("c{i}"))).collect();
    let records: Vec<lanyard::state::Record> = std::thread::scope(|scope| {
        let handles: Vec<_> = guests
            .iter()
            .enumerate()
            .map(|(i, guest)| {
                let (lan, dir) = (&lan, &dir);
                scope.spawn(move || {
                    let host = host_for(&lan.host, dir);
                    // Half of them race to create the same new bridge.
                    let bridge = if i % 2 == 0 { "br0" } else { "brrace" };
                    let address = format!("198.18.9.{}/24", 10 + i);
                    lanyard::attach(&host, &request(bridge, guest, &[&address])).unwrap().record
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut macs: Vec<MacAddr> = records.iter().map(|r| r.mac).collect();
    let mut names: Vec<String> = records.iter().filter_map(|r| r.host_ifname.clone()).collect();
    macs.sort_by_key(|m| m.0);
    macs.dedup();
    names.sort();
    names.dedup();
    assert_eq!((macs.len(), names.len()), (8, 8));
    assert_eq!(lab::state_files(&dir).len(), 8);
    let host = host_for(&lan.host, &dir);
    for guest in &guests {
        lanyard::detach(&host, &guest_token(guest), None).unwrap();
    }
    assert!(!lan.host.links().iter().any(|l| l.contains("brrace")));
}

#[test]
fn a_stale_record_of_a_replaced_namespace_is_replaced() {
    let lan = Lan::bridge(10);
    let dir = TestDir::new("stale");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let name = g.name.clone();
    let first = lanyard::attach(&host, &request("br0", &g, &["198.18.10.2/24"])).unwrap();
    // The "container" restarts: its namespace is deleted (taking the veth along) and re-made
    // under the same name while something still holds the old one open.
    let keep_old = std::fs::File::open(&g.path).unwrap();
    drop(g);
    let status = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
    assert!(status.success());
    let g2_path = Path::new("/run/netns").join(&name);
    let mut req = AttachRequest::new("br0", GuestSpec::Netns(name.clone()));
    req.addresses = vec![parse_address("198.18.10.2/24").unwrap()];
    let second = lanyard::attach(&host, &req).unwrap();
    assert_ne!(first.record.netns, second.record.netns);
    assert_eq!(first.record.mac, second.record.mac, "same guest, same MAC");
    assert_eq!(lab::state_files(&dir).len(), 1);
    drop(keep_old);
    lanyard::detach(&host, &format!("netns:{name}"), None).unwrap();
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    assert!(!g2_path.exists());
}

#[test]
fn inspect_reports_records_and_drift() {
    let lan = Lan::bridge(11);
    let dir = TestDir::new("inspect");
    let g = lan.guest("g");
    let token = guest_token(&g);
    let out = cli(
        &lan.host,
        &dir,
        &["attach", "br0", &token, "198.18.11.5/24@198.18.11.1", "2001:db8:11::5/64"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&lan.host, &dir, &["inspect", &token]);
    assert!(out.status.success(), "{}", text(&out));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let settings = &view["NetworkSettings"];
    assert_eq!(settings["IPAddress"], "198.18.11.5");
    assert_eq!(settings["IPPrefixLen"], 24);
    assert_eq!(settings["Gateway"], "198.18.11.1");
    assert_eq!(settings["Bridge"], "br0");
    assert!(settings["HWAddr"].as_str().unwrap().starts_with("02:"));
    assert!(settings["DNS"].is_array());
    assert_eq!(view["Container"], token);
    assert_eq!(view["Lanyard"]["Interfaces"][0]["InSync"], true);
    // Reality drifts: someone removes the address by hand.
    g.ip(&["addr", "del", "198.18.11.5/24", "dev", "eth1"]);
    let out = cli(&lan.host, &dir, &["inspect", "--all"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let drift = all[0]["Lanyard"]["Interfaces"][0]["Drift"].to_string();
    assert!(drift.contains("address 198.18.11.5/24 is missing"), "{drift}");
    let out = cli(&lan.host, &dir, &["detach", &token]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&lan.host, &dir, &["inspect", &token]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn announcements_are_on_the_wire_right_after_the_command_returns() {
    let lan = Lan::bridge(12);
    let dir = TestDir::new("announce");
    let g = lan.guest("g");
    let capture = lab::capture_filtered(&lan.host, "br0", &["arp", "or", "icmp6"]);
    let token = guest_token(&g);
    let out =
        cli(&lan.host, &dir, &["attach", "br0", &token, "198.18.12.7/24", "2001:db8:12::7/64"]);
    let returned = SystemTime::now();
    assert!(out.status.success(), "{}", text(&out));
    let garp = "Request who-has 198.18.12.7 tell 198.18.12.7";
    capture.expect("neighbor advertisement, tgt is 2001:db8:12::7", Duration::from_secs(2));
    // Two rounds (README, Announcements), each from the guest's own MAC.
    let mac = g.ip(&["-br", "link", "show", "eth1"]).split_whitespace().nth(2).unwrap().to_string();
    let from_guest =
        format!("{mac} > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: {garp}");
    assert!(
        lab::wait_until(Duration::from_secs(2), || capture.times_of(&from_guest).len() >= 2),
        "two gratuitous ARPs from {mac}:\n{}",
        capture.text()
    );
    // By the capture's own clock: the first one on the wire within half a second of the
    // command's return (the detached helper waits only for the port to forward, which here is
    // at once), and the second a round later, not a duplicate of the first.
    let times = capture.times_of(&from_guest);
    let after = times[0].duration_since(returned).unwrap_or(Duration::ZERO);
    assert!(after < Duration::from_millis(500), "first gratuitous ARP {after:?} after the return");
    let round = times[1].duration_since(times[0]).unwrap_or(Duration::ZERO);
    assert!(round >= Duration::from_millis(100), "the rounds are {round:?} apart: {times:?}");
    let out = cli(&lan.host, &dir, &["detach", &token]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn probe_refuses_an_address_already_in_use() {
    let lan = Lan::bridge(13);
    let dir = TestDir::new("probe");
    let host = host_for(&lan.host, &dir);
    let owner = lan.guest("owner");
    lanyard::attach(&host, &request("br0", &owner, &["198.18.13.9/24"])).unwrap();
    let g = lan.guest("g");
    let before = g.snapshot();
    let mut req = request("br0", &g, &["198.18.13.9/24"]);
    req.probe = Some(Duration::from_millis(300));
    let err = lanyard::attach(&host, &req).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("already in use"), "{err}");
    assert_eq!(g.snapshot(), before);
    // IPv6: our own DAD finds the owner too.
    owner.sysctl("net.ipv6.conf.eth1.disable_ipv6", "0");
    owner.ip(&["addr", "add", "2001:db8:13::9/64", "dev", "eth1", "nodad"]);
    let mut req6 = request("br0", &g, &["2001:db8:13::9/64"]);
    req6.probe = Some(Duration::from_millis(300));
    let err = lanyard::attach(&host, &req6).unwrap_err();
    assert!(err.to_string().contains("2001:db8:13::9 is already in use"), "{err}");
    assert_eq!(g.snapshot(), before);
    let mut free = request("br0", &g, &["198.18.13.10/24", "2001:db8:13::10/64"]);
    free.probe = Some(Duration::from_millis(100));
    lanyard::attach(&host, &free).unwrap();
}

#[test]
fn the_library_announces_in_process_once_the_port_forwards() {
    let lan = Lan::bridge(15);
    let dir = TestDir::new("announce-lib");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let capture = lab::capture_filtered(&lan.host, "br0", &["arp", "or", "icmp6"]);
    let attached =
        lanyard::attach(&host, &request("br0", &g, &["198.18.15.3/24", "2001:db8:15::3/64"]))
            .unwrap();
    let guest = NsHandle::open(&g.path).unwrap();
    lanyard::ready::announce_when_ready(
        &host.netns,
        &guest,
        &attached.record,
        &attached.announcement,
        1,
    )
    .unwrap();
    capture.expect("Request who-has 198.18.15.3 tell 198.18.15.3", Duration::from_secs(2));
    capture.expect("neighbor advertisement, tgt is 2001:db8:15::3", Duration::from_secs(2));
}

#[test]
fn macvlan_announcements_wait_for_the_parents_carrier() {
    let lan = Lan::with_uplink(16);
    let dir = TestDir::new("announce-macvlan");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    assert!(lan.wait_forwarding(Duration::from_secs(3)));
    let capture = lab::capture_filtered(&lan.lan, "br0", &["arp"]);
    let attached = lanyard::attach(&host, &request("uplink0", &g, &["198.18.16.3/24"])).unwrap();
    let guest = NsHandle::open(&g.path).unwrap();
    lanyard::ready::announce_when_ready(
        &host.netns,
        &guest,
        &attached.record,
        &attached.announcement,
        1,
    )
    .unwrap();
    capture.expect("Request who-has 198.18.16.3 tell 198.18.16.3", Duration::from_secs(2));
}

#[test]
fn network_wrapper_mac_scheme_uses_the_hosts_ipv4_octets() {
    let lan = Lan::bridge(17);
    let dir = TestDir::new("nwmac");
    let g = lan.guest("g");
    let token = guest_token(&g);
    let out = cli(
        &lan.host,
        &dir,
        &["attach", "br0", &token, "198.18.17.9/24", "--mac-scheme", "network-wrapper"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mac = g.ip(&["-br", "link", "show", "eth1"]).split_whitespace().nth(2).unwrap().to_string();
    // 02:<last three octets of the host's IPv4 198.18.17.1>:<two random bytes>
    assert!(mac.starts_with("02:12:11:01:"), "{mac}");
    let out = cli(&lan.host, &dir, &["inspect", &token]);
    assert!(text(&out).contains("network-wrapper"), "{}", text(&out));
}

#[test]
fn a_mac_already_in_the_bridge_forwarding_table_is_rehashed() {
    let lan = Lan::bridge(14);
    let dir = TestDir::new("fdb");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let other = lan.guest("other");
    lan.plug(&other, "otherport", "eth0");
    // Someone on the segment already uses the MAC lanyard would pick first.
    let identity = format!("netns:{}", g.name);
    let first_choice = lanyard::naming::stable_mac(&host.host_id, &identity, "eth1", 0);
    let second_choice = lanyard::naming::stable_mac(&host.host_id, &identity, "eth1", 1);
    lan.host.exec_ok(&[
        "bridge",
        "fdb",
        "add",
        &first_choice.to_string(),
        "dev",
        "otherport",
        "master",
        "static",
    ]);
    let attached = lanyard::attach(&host, &request("br0", &g, &["198.18.14.2/24"])).unwrap();
    assert_eq!(attached.record.mac, second_choice);
    // Recorded MACs count as taken too, and the choice is stable from then on.
    lanyard::detach(&host, &guest_token(&g), None).unwrap();
    let again = lanyard::attach(&host, &request("br0", &g, &["198.18.14.2/24"])).unwrap();
    assert_eq!(again.record.mac, second_choice);
}

/// A link-notification socket (RTNLGRP_LINK) opened inside a namespace: it hears every change of
/// every link there, in the order the kernel made them.
struct LinkMonitor {
    socket: netlink_sys::Socket,
}

/// One RTM_NEWLINK notification about a link: its IFF_UP flag and the IPv6 `accept_ra` and
/// `disable_ipv6` the kernel reported with it (IFLA_INET6_CONF travels with every notice).
#[derive(Debug, Clone, Copy)]
struct LinkNotice {
    up: bool,
    accept_ra: Option<i32>,
    disable_ipv6: Option<i32>,
}

impl LinkMonitor {
    fn open(ns: &Netns) -> LinkMonitor {
        let socket = ns.run_in(|| {
            let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)
                .expect("netlink socket");
            socket.bind(&netlink_sys::SocketAddr::new(0, 1)).expect("join RTNLGRP_LINK");
            socket.set_non_blocking(true).expect("non-blocking");
            socket
        });
        LinkMonitor { socket }
    }

    /// Every notice queued so far about the link named `ifname`, oldest first.
    fn notices_for(&self, ifname: &str) -> Vec<LinkNotice> {
        use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
        use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, LinkAttribute, LinkFlags};
        use netlink_packet_route::RouteNetlinkMessage;
        let mut notices = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        for _ in 0..10_000 {
            let received = match self.socket.recv(&mut &mut buffer[..], 0) {
                Ok(n) if n > 0 => n,
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("link monitor: {e} (a lost notice would make this test blind)"),
            };
            let mut offset = 0;
            while offset < received {
                let message =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer[offset..received])
                        .expect("parse a link notice");
                let length = message.header.length as usize;
                assert!(length > 0);
                offset += (length + 3) & !3;
                let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) =
                    message.payload
                else {
                    continue;
                };
                let mut name = None;
                let mut notice = LinkNotice {
                    up: link.header.flags.contains(LinkFlags::Up),
                    accept_ra: None,
                    disable_ipv6: None,
                };
                for attribute in &link.attributes {
                    match attribute {
                        LinkAttribute::IfName(n) => name = Some(n.clone()),
                        LinkAttribute::AfSpecUnspec(specs) => {
                            for spec in specs {
                                let AfSpecUnspec::Inet6(inet6) = spec else { continue };
                                for item in inet6 {
                                    if let AfSpecInet6::DevConf(conf) = item {
                                        notice.accept_ra = Some(conf.accept_ra);
                                        notice.disable_ipv6 = Some(conf.disable_ipv6);
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if name.as_deref() == Some(ifname) {
                    notices.push(notice);
                }
            }
        }
        notices
    }
}

/// Checks what the guest heard while lanyard made `ifname`: born down, and IPv6 already set up
/// (accept_ra 0, IPv6 enabled) by the first time it was up, so no router advertisement could be
/// taken in between.
fn assert_born_down_and_configured_before_up(notices: &[LinkNotice], ifname: &str) {
    let first = notices.first().unwrap_or_else(|| panic!("no notice about {ifname}"));
    assert!(!first.up, "{ifname} was created up: {notices:?}");
    let first_up = notices
        .iter()
        .find(|n| n.up)
        .unwrap_or_else(|| panic!("{ifname} never came up: {notices:?}"));
    assert_eq!(first_up.accept_ra, Some(0), "accept_ra when {ifname} first came up: {notices:?}");
    assert_eq!(first_up.disable_ipv6, Some(0), "IPv6 off when {ifname} first came up");
}

#[test]
fn guest_links_are_created_down_and_come_up_with_their_sysctls_written() {
    // macvlan: the driver that used to create its link up.
    let lan = Lan::with_uplink(70);
    let dir = TestDir::new("borndown-mv");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    // A fresh namespace accepts RAs by default (accept_ra 1): the value must be lanyard's 0.
    assert_eq!(g.sysctl_get("net.ipv6.conf.default.accept_ra"), "1");
    let monitor = LinkMonitor::open(&g);
    lanyard::attach(&host, &request("uplink0", &g, &["198.18.70.60/24", "2001:db8:70::60/64"]))
        .unwrap();
    assert_born_down_and_configured_before_up(&monitor.notices_for("eth1"), "macvlan eth1");

    // bridge: the veth's guest end.
    let lan = Lan::bridge(71);
    let dir = TestDir::new("borndown-br");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let monitor = LinkMonitor::open(&g);
    lanyard::attach(&host, &request("br0", &g, &["198.18.71.60/24", "2001:db8:71::60/64"]))
        .unwrap();
    assert_born_down_and_configured_before_up(&monitor.notices_for("eth1"), "veth eth1");

    // host-only: the same veth peer, without a bridge.
    let g = lan.guest("h");
    let monitor = LinkMonitor::open(&g);
    let mut req = request("vhost71", &g, &["198.18.171.2/24", "2001:db8:171::2/64"]);
    req.host_only = true;
    lanyard::attach(&host, &req).unwrap();
    assert_born_down_and_configured_before_up(&monitor.notices_for("eth1"), "host-only eth1");
}

#[test]
fn a_failure_inside_driver_setup_is_undone_or_names_what_it_left() {
    use lanyard::driver::SetupFailure;
    let lan = Lan::bridge(72);
    let dir = TestDir::new("setupfail");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let host_only = |point| {
        let mut req = request("vhost72", &g, &["198.18.172.2/24"]);
        req.host_only = true;
        req.host_addresses = vec!["198.18.172.1/24".parse().unwrap()];
        req.fail_at = Some(point);
        req
    };
    let bridge_made_by_setup = |point| {
        let mut req = request("brsetup72", &g, &["198.18.72.2/24"]);
        req.fail_at = Some(point);
        req
    };

    // The undo works: both namespaces and the state directory are as before.
    for req in [
        host_only(FailPoint::InDriverSetup(SetupFailure::UndoWorks)),
        bridge_made_by_setup(FailPoint::InDriverSetup(SetupFailure::UndoWorks)),
    ] {
        let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
        let state_before = lab::state_files(&dir);
        let err = lanyard::attach(&host, &req).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Injected, "{err}");
        assert!(!err.to_string().contains("left behind"), "{err}");
        assert_eq!(lan.host.snapshot(), host_before, "{}: host side", req.host_interface);
        assert_eq!(g.snapshot(), guest_before, "{}: guest side", req.host_interface);
        assert_eq!(lab::state_files(&dir), state_before);
    }

    // The undo fails: the error says which object is left and how to remove it, and says so
    // truly (the object is there); the exit status is a failure's.
    let err = lanyard::attach(&host, &host_only(FailPoint::InDriverSetup(SetupFailure::UndoFails)))
        .unwrap_err();
    assert_ne!(err.exit_code(), 0);
    let message = err.to_string();
    assert!(
        message.contains(
            "rollback incomplete, left behind: link vhost72 in the host namespace: undo failure \
             injected (remove it: ip link del vhost72)"
        ),
        "{message}"
    );
    assert!(lan.host.links().iter().any(|l| l.contains("vhost72")), "{:?}", lan.host.links());
    lan.host.ip(&["link", "del", "vhost72"]);

    let err = lanyard::attach(
        &host,
        &bridge_made_by_setup(FailPoint::InDriverSetup(SetupFailure::UndoFails)),
    )
    .unwrap_err();
    assert_ne!(err.exit_code(), 0);
    let message = err.to_string();
    assert!(
        message.contains("left behind: bridge brsetup72 in the host namespace: undo failure"),
        "{message}"
    );
    assert!(message.contains("ip link del brsetup72"), "{message}");
    assert!(lan.host.links().iter().any(|l| l.contains("brsetup72")), "{:?}", lan.host.links());
}

#[test]
fn lost_link_notifications_are_reported_and_the_links_read_again() {
    use lanyard::netlink::{LinkWatch, Netlink};
    use std::os::fd::AsFd;
    lab::require_root();
    let ns = Netns::new("overflow");
    ns.ip_batch("link add flapa type veth peer name flapb\nlink set flapb up\nlink set flapa up");
    let handle = NsHandle::open(&ns.path).expect("open the namespace");
    let mut netlink = Netlink::open(&handle, "the test namespace").expect("netlink");
    let index = netlink.link_by_name("flapa").unwrap().expect("flapa").index;
    let mut watch = LinkWatch::open(&handle).expect("watch");
    // The smallest receive buffer the kernel allows: a notice or two fit, the rest are dropped.
    nix::sys::socket::setsockopt(&watch.as_fd(), nix::sys::socket::sockopt::RcvBuf, &1)
        .expect("SO_RCVBUF");

    // 100 carrier losses, ending down: the notices that fit are the oldest, so the end of the
    // story is among the lost ones.
    let mut batch = String::new();
    for _ in 0..100 {
        batch.push_str("link set flapa down\nlink set flapa up\n");
    }
    batch.push_str("link set flapa down\n");
    ns.ip_batch(&batch);
    let now = netlink.link_by_name("flapa").unwrap().expect("flapa");
    assert!(!now.up);
    let downs_now = now.carrier_down_count.expect("the kernel counts carrier losses");
    assert!(downs_now >= 100, "{downs_now}");

    let changes = watch.link_changes().expect("read the notices");
    assert!(changes.overflowed, "the buffer overflowed: {changes:?}");
    let last = changes.seen.iter().rev().find(|seen| seen.index == index).copied();
    let last = last.unwrap_or_else(|| panic!("flapa was read again: {changes:?}"));
    assert!(!last.running, "flapa's last state is its state now: {changes:?}");
    assert_eq!(last.carrier_down_count, Some(downs_now), "{changes:?}");

    // A waiter for a state that came during an overflow sees it at once.
    ns.ip_batch(&format!("{batch}link set flapa up"));
    let waited = std::time::Instant::now();
    let link = watch
        .wait_for(&mut netlink, index, "flapa up", Duration::from_secs(2), |link| {
            link.up && link.lower_up
        })
        .expect("flapa is up");
    assert!(waited.elapsed() < Duration::from_secs(1), "{:?}", waited.elapsed());
    assert!(link.carrier_down_count > Some(downs_now));
}
