//! README promises about DHCP leases, each checked by something that could see it broken:
//! rebinding at T2 against a Kea that ignores unicast renewals (the broadcast REQUEST on the
//! wire, the lease kept), DECLINE as Kea records it, "without a gap" as address events rather
//! than samples, expiry timed against Kea's own expiry time, the guest's own default route
//! given back when a lease is lost and on detach, and a damaged lease file skipped. Every test
//! builds its own LAN (210..219) and checks that the host's /etc/resolv.conf is unchanged.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use support::cli::token;
use support::cli::{self, ok, record_and_lease_files, text};
use support::daemon::DaemonGuard;
use support::dhcp::{kea_lan, HostResolvConf, Kea, KeaConfig};
use support::lab::{self, wait_until, Lan, Netns, Server, TestDir};
use support::monitor::{event_time, AddressMonitor};

/// The host end of the guest's `eth1`, from `lanyard inspect`.
fn host_end(lan: &Lan, dir: &TestDir, guest: &Netns) -> String {
    let view: serde_json::Value =
        serde_json::from_str(&ok(cli::run(&lan.host, dir, &["inspect", &token(guest)])))
            .expect("inspect prints JSON");
    view["Lanyard"]["Interfaces"][0]["HostIfname"].as_str().expect("a host end").to_string()
}

/// `lanyard daemon` started by hand inside the lab host, as after a crash.
fn start_daemon(lan: &Lan, dir: &TestDir) -> Server {
    let mut command = lan.host.command(env!("CARGO_BIN_EXE_lanyard"));
    command
        .args(["daemon"])
        .env("LANYARD_STATE_DIR", dir.join("state"))
        .env("LANYARD_HOST_ID", format!("test-{}", lab::run_id()));
    Server::spawn(command, "lanyard-daemon")
}

fn daemon_log(dir: &TestDir) -> String {
    std::fs::read_to_string(dir.join("state/daemon.log")).unwrap_or_default()
}

#[test]
fn ip_ts_stamps_read_as_unix_times() {
    let t = event_time("[2026-12-01T10:40:01.250000] Deleted 5: eth1 inet 1.2.3.4/24").unwrap();
    let unix = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(unix.as_millis(), 1_796_121_601_250);
}

#[test]
fn a_server_that_ignores_unicast_renewals_is_rebound_by_broadcast_at_t2_and_the_lease_kept() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(210);
    let dir = TestDir::new("dhcp-rebind");
    let _daemon = DaemonGuard::new(&dir);
    let kea = Kea::start(&lan.host, "br0", KeaConfig::timed(210, 8, 2, 5));
    let g = lan.guest("g");
    ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&g), "dhcp"]));
    let ip = g.ipv4_on("eth1").expect("leased");
    let port = host_end(&lan, &dir, &g);
    let monitor = AddressMonitor::start(&g);
    let capture = lab::capture_filtered(&lan.host, &port, &["udp", "port", "67"]);
    // From now on the server never hears a unicast renewal: frames for its own address and
    // port 67 are dropped before they leave the bridge for the server's socket (a bridge
    // netfilter rule inside this test's host namespace; Kea's raw socket sits behind it).
    let gateway = lan.gateway4.to_string();
    let rule =
        ["-p", "IPv4", "--ip-dst", &gateway, "--ip-proto", "udp", "--ip-dport", "67", "-j", "DROP"];
    let mut add = vec!["ebtables", "-A", "INPUT"];
    add.extend(rule);
    lan.host.exec_ok(&add);
    let grants = kea.grants_of(ip);

    // Two rebinds: each needs T2 (5 s) after the last ACK, the lease lasts 8 s.
    kea.wait_lines("two more grants of the address", Duration::from_secs(20), |lines| {
        lines.iter().filter(|l| l.address == ip && l.valid_lifetime > 0 && l.state == 0).count()
            >= grants + 2
    });
    let packets = capture.packets_verbose();
    let wire = capture.stop();
    // RENEWING: REQUESTs unicast to the server. REBINDING: REQUESTs broadcast with the lease's
    // address as ciaddr (§4.4.5, Table 5), which no other state sends.
    let unicast = format!("{ip}.68 > {gateway}.67");
    let client_ip = format!("Client-IP {ip}");
    let is_request = |p: &String| p.contains("DHCP-Message (53), length 1: Request");
    let first_unicast = packets.iter().position(|p| p.contains(&unicast) && is_request(p));
    // From the leased address, not 0.0.0.0: the client holds it while rebinding (§4.1).
    let rebinding_from = format!("{ip}.68 > 255.255.255.255.67:");
    let rebinding = packets
        .iter()
        .position(|p| p.contains(&rebinding_from) && p.contains(&client_ip) && is_request(p));
    let (Some(first_unicast), Some(rebinding)) = (first_unicast, rebinding) else {
        panic!(
            "expected unicast RENEWING and broadcast REBINDING REQUESTs:\n{}",
            packets.join("\n")
        );
    };
    assert!(first_unicast < rebinding, "unicast first, broadcast at T2:\n{wire}");
    let counters = lan.host.exec_ok(&["ebtables", "-L", "INPUT", "--Lc"]);
    let dropped: u64 = counters
        .split("pcnt = ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "the unicast renewals were dropped: {counters}");
    monitor.assert_never_deleted(ip, "rebinding");
    assert_eq!(g.ipv4_on("eth1"), Some(ip));
    let leases = ok(cli::run(&lan.host, &dir, &["leases"]));
    assert!(leases.contains(&ip.to_string()), "{leases}");
    resolv.assert_unchanged();
}

#[test]
fn a_declined_address_is_declined_in_keas_lease_file() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, neighbour) = kea_lan(211);
    // The neighbour uses the pool's first address without the server knowing.
    let taken: Ipv4Addr = "198.18.211.50".parse().unwrap();
    neighbour.ip(&["addr", "add", "198.18.211.50/24", "dev", "eth0"]);
    let dir = TestDir::new("dhcp-decline-kea");
    let _daemon = DaemonGuard::new(&dir);
    let mut config = KeaConfig::timed(211, 30, 10, 20);
    config.pool = (taken, "198.18.211.60".parse().unwrap());
    let kea = Kea::start(&lan.host, "br0", config);
    let g = lan.guest("g");
    ok(cli::run(
        &lan.host,
        &dir,
        &["attach", "br0", &token(&g), "dhcp", "--probe", "--timeout", "20"],
    ));
    let address = g.ipv4_on("eth1").expect("a lease");
    assert_ne!(address, taken, "the address in use is not used");
    // Kea marks a DHCPDECLINEd address "declined" (state 1) for its probation period.
    kea.wait_lines("the taken address declined (state 1)", Duration::from_secs(3), |lines| {
        lines.iter().any(|l| l.address == taken && l.state == 1)
    });
    assert!(
        !kea.lease_lines().iter().any(|l| l.address == address && l.state != 0),
        "the address the guest has is an ordinary lease"
    );
    resolv.assert_unchanged();
}

#[test]
fn a_short_lease_is_held_five_lifetimes_with_no_address_event_lost() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(212);
    let dir = TestDir::new("dhcp-hold-events");
    let _daemon = DaemonGuard::new(&dir);
    let kea = Kea::start(&lan.host, "br0", KeaConfig::timed(212, 4, 1, 3));
    let g = lan.guest("g");
    ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&g), "dhcp"]));
    let ip = g.ipv4_on("eth1").expect("leased");
    let monitor = AddressMonitor::start(&g);
    let renewals = kea.renewals_of(ip);
    // The observation window itself (five 4 s lifetimes), not a wait for an event: every
    // address change in it is recorded by the monitor.
    std::thread::sleep(Duration::from_secs(20));
    monitor.assert_never_deleted(ip, "five lifetimes");
    let renewed = kea.renewals_of(ip) - renewals;
    assert!(renewed >= 8, "a renewal about every second for 20 s, Kea saw {renewed}");
    assert_eq!(g.ipv4_on("eth1"), Some(ip));
    resolv.assert_unchanged();
}

#[test]
fn a_daemon_killed_with_sigkill_and_restarted_leaves_no_address_event_gap() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(213);
    let dir = TestDir::new("dhcp-kill-events");
    let daemon = DaemonGuard::new(&dir);
    let kea = Kea::start(&lan.host, "br0", KeaConfig::timed(213, 6, 2, 4));
    let g = lan.guest("g");
    ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&g), "dhcp"]));
    let ip = g.ipv4_on("eth1").expect("leased");
    let monitor = AddressMonitor::start(&g);
    assert!(daemon.kill(libc::SIGKILL), "the daemon was running");
    // Down for a second (a crash and a restart), then resumed from the lease on disk.
    std::thread::sleep(Duration::from_secs(1));
    let grants = kea.grants_of(ip);
    let _restarted = start_daemon(&lan, &dir);
    // Four renewals by the restarted daemon (T1 = 2 s): about 8 s, more than a lifetime (6 s)
    // since the kill, so a resumed lease that was not really renewed would have expired.
    kea.wait_lines("renewals by the restarted daemon", Duration::from_secs(16), |lines| {
        lines.iter().filter(|l| l.address == ip && l.valid_lifetime > 0 && l.state == 0).count()
            >= grants + 4
    });
    monitor.assert_never_deleted(ip, "SIGKILL and restart");
    assert_eq!(g.ipv4_on("eth1"), Some(ip));
    let leases = ok(cli::run(&lan.host, &dir, &["leases"]));
    assert!(leases.contains(&format!("BOUND {ip}/24")), "the restarted daemon holds it: {leases}");
    resolv.assert_unchanged();
}

/// A guest that already has its own uplink and default route (as a container on Docker's
/// bridge has).
fn guest_with_own_default_route(lan: &Lan) -> Netns {
    let g = lan.guest("g");
    g.ip_batch(
        "link add eth0 type veth peer name eth0peer\nlink set eth0 up\nlink set eth0peer up\n\
         addr add 198.19.250.2/24 dev eth0\nroute add default via 198.19.250.1 dev eth0",
    );
    g
}

fn default_routes(guest: &Netns) -> Vec<String> {
    guest.routes().into_iter().filter(|r| r.starts_with("default")).collect()
}

#[test]
fn a_lost_lease_gives_back_the_guests_own_default_route_at_expiry_and_so_does_detach() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(214);
    let dir = TestDir::new("dhcp-route-back");
    let _daemon = DaemonGuard::new(&dir);
    let mut kea = Kea::start(&lan.host, "br0", KeaConfig::timed(214, 6, 2, 4));
    let g = guest_with_own_default_route(&lan);
    let guest_before = g.snapshot();
    let own = default_routes(&g);
    assert_eq!(own, vec!["default via 198.19.250.1 dev eth0".to_string()]);
    ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&g), "dhcp"]));
    let ip = g.ipv4_on("eth1").expect("leased");
    assert!(
        default_routes(&g).iter().any(|r| r.starts_with("default via 198.18.214.1 dev eth1")),
        "the lease's router replaced the guest's route: {:?}",
        default_routes(&g)
    );
    let monitor = AddressMonitor::start(&g);

    // The server goes away: no renewal, no rebind, the lease runs out.
    kea.stop();
    let expiry = kea
        .lease_lines()
        .iter()
        .filter(|l| l.address == ip && l.valid_lifetime > 0)
        .map(|l| l.expire)
        .max()
        .expect("Kea recorded the lease");
    assert!(
        wait_until(Duration::from_secs(10), || !monitor.deletions_of(ip).is_empty()),
        "the address must go when the lease expires"
    );
    // Removed at the lease's end (Kea's expire time), by the event's own timestamp: within a
    // second and a half after it (the client counts from when it got the ACK, Kea from when it
    // sent it, in whole seconds), and not before it (half a second of slack for that rounding).
    let deleted = event_time(&monitor.deletions_of(ip)[0]).expect("a timestamped event");
    let deleted = deleted.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    let late = deleted - expiry as f64;
    assert!((-0.5..=1.5).contains(&late), "removed {late:.3} s after Kea's expiry time");
    assert!(
        wait_until(Duration::from_secs(2), || default_routes(&g) == own),
        "the guest's own default route is back once the lease is gone: {:?}",
        default_routes(&g)
    );

    // The server is back, the lease too, and its router again.
    kea.restart(KeaConfig::timed(214, 6, 2, 4));
    assert!(
        wait_until(Duration::from_secs(15), || g.ipv4_on("eth1") == Some(ip)),
        "the lease returns"
    );
    assert!(
        wait_until(Duration::from_secs(2), || default_routes(&g)
            .iter()
            .any(|r| r.starts_with("default via 198.18.214.1 dev eth1"))),
        "{:?}",
        default_routes(&g)
    );
    ok(cli::run(&lan.host, &dir, &["detach", &token(&g)]));
    assert_eq!(g.snapshot(), guest_before, "detach gives the guest's own route back");
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    resolv.assert_unchanged();
}

#[test]
fn a_damaged_lease_file_is_skipped_said_in_daemon_log_and_the_rest_served() {
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(215);
    let dir = TestDir::new("dhcp-damaged");
    let daemon = DaemonGuard::new(&dir);
    let kea = Kea::start(&lan.host, "br0", KeaConfig::timed(215, 6, 2, 4));
    let (g, h) = (lan.guest("g"), lan.guest("h"));
    ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&g), "dhcp"]));
    let ip = g.ipv4_on("eth1").expect("leased");
    assert!(daemon.kill(libc::SIGKILL));
    let monitor = AddressMonitor::start(&g);
    let damaged = dir.join("state/leases/netns-damaged.eth1.json");
    std::fs::write(&damaged, b"{\"record\": \"netns-damaged.eth1.json\", \"lease\": ").unwrap();
    let renewals = kea.renewals_of(ip);

    // The next DHCP attach starts the daemon on demand (stderr into daemon.log): it must skip
    // the damaged file, resume g's lease and serve h.
    let out = cli::run(&lan.host, &dir, &["attach", "br0", &token(&h), "dhcp"]);
    assert!(out.status.success(), "{}\n--- daemon.log:\n{}", text(&out), daemon_log(&dir));
    assert!(h.ipv4_on("eth1").is_some(), "the new guest is served");
    let log = daemon_log(&dir);
    assert!(
        log.lines().any(|l| l.contains("netns-damaged.eth1.json") && l.contains("skipping")),
        "daemon.log names the damaged file and says it is skipped:\n{log}"
    );
    kea.wait_lines("g's lease renewed by the new daemon", Duration::from_secs(8), |lines| {
        lines.iter().filter(|l| l.address == ip && l.valid_lifetime > 0 && l.state == 0).count()
            > renewals + 1
    });
    let leases = ok(cli::run(&lan.host, &dir, &["leases"]));
    assert_eq!(leases.lines().filter(|l| l.contains("BOUND")).count(), 2, "{leases}");
    monitor.assert_never_deleted(ip, "restart with a damaged lease file beside");
    assert!(damaged.exists(), "a damaged file is left for a human to look at, not deleted");
    resolv.assert_unchanged();
}
