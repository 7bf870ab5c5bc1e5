//! DHCP against real servers in test namespaces: dnsmasq, and Kea with leases of a few seconds
//! for renewal, rebinding, expiry and NAK; radvd for SLAAC. Holding a lease without a gap
//! (five lifetimes, a daemon SIGKILLed and restarted) is watched as address events in
//! tests/dhcp_promises.rs.
//! Every test checks that the host's /etc/resolv.conf is byte for byte unchanged.

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use std::time::{Duration, Instant};

use support::cli::{ok, record_and_lease_files, run as cli};
use support::daemon::DaemonGuard;
use support::dhcp::{kea_lan, Dnsmasq, HostResolvConf, Kea, KeaConfig, Radvd};
use support::lab::{self, wait_until, Lan, Netns, TestDir};

fn wait_address(
    guest: &Netns,
    ifname: &str,
    timeout: Duration,
    wanted: impl Fn(Option<Ipv4Addr>) -> bool,
) -> Option<Ipv4Addr> {
    let mut last = None;
    wait_until(timeout, || {
        last = guest.ipv4_on(ifname);
        wanted(last)
    });
    last
}

#[test]
fn dnsmasq_lease_is_configured_inspected_and_released_on_detach() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(50);
    let dir = TestDir::new("dhcp-dnsmasq");
    let _daemon = DaemonGuard::new(&dir);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.50.100", "198.18.50.200"), "2m", &[]);
    let g = lan.guest("g");
    let token = format!("netns:{}", g.name);

    let started = Instant::now();
    let printed =
        ok(cli(&lan.host, &dir, &["attach", "br0", &token, "dhcp", "--hostname", "web1"]));
    eprintln!("attach with dhcp (daemon started on demand): {} ms", started.elapsed().as_millis());
    assert!(printed.contains("lease 198.18.50."), "{printed}");
    let ip = g.ipv4_on("eth1").expect("leased address configured when attach returns");
    assert!(
        g.routes().iter().any(|r| r.contains("default via 198.18.50.1 dev eth1")),
        "{:?}",
        g.routes()
    );
    let lease = dnsmasq.wait_lease(ip, Duration::from_secs(2));
    assert_eq!(lease.hostname.as_deref(), Some("web1"));
    assert!(lease.client_id.is_some(), "a client id is sent");

    // A second attach with the daemon already running.
    let started = Instant::now();
    ok(cli(&lan.host, &dir, &["attach", "br0", &token, "dhcp", "2001:db8:50::5/64", "-i", "eth2"]));
    assert!(
        g.addresses().iter().any(|a| a.contains("eth2") && a.contains("2001:db8:50::5/64")),
        "static IPv6 beside DHCPv4"
    );
    eprintln!("attach with dhcp (daemon running): {} ms", started.elapsed().as_millis());
    let ip2 = g.ipv4_on("eth2").expect("second lease");
    assert_ne!(ip, ip2);

    let leases = ok(cli(&lan.host, &dir, &["leases"]));
    assert!(leases.contains(&format!("BOUND {ip}/24")), "{leases}");
    let view: serde_json::Value =
        serde_json::from_str(&ok(cli(&lan.host, &dir, &["inspect", &token]))).unwrap();
    assert_eq!(view["NetworkSettings"]["IPAddress"], ip.to_string());
    assert_eq!(view["NetworkSettings"]["Gateway"], "198.18.50.1");
    assert_eq!(view["Lanyard"]["Interfaces"][0]["DHCP"]["Lease"]["server_id"], "198.18.50.1");

    ok(cli(&lan.host, &dir, &["detach", &token]));
    dnsmasq.expect_release("br0", ip, Duration::from_secs(2));
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    resolv.assert_unchanged();
}

#[test]
fn no_server_times_out_and_leaves_nothing() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(51);
    let dir = TestDir::new("dhcp-none");
    let _daemon = DaemonGuard::new(&dir);
    let g = lan.guest("g");
    let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
    let out = cli(
        &lan.host,
        &dir,
        &["attach", "br0", &format!("netns:{}", g.name), "dhcp", "--timeout", "2"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no DHCP offer on br0 within 2 s"), "{stderr}");
    assert_eq!(lan.host.snapshot(), host_before);
    assert_eq!(g.snapshot(), guest_before);
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    resolv.assert_unchanged();
}

#[test]
fn a_silent_server_means_rebinding_then_expiry_and_the_address_returns_with_it() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(53);
    let dir = TestDir::new("dhcp-expiry");
    let _daemon = DaemonGuard::new(&dir);
    let mut kea = Kea::start(&lan.host, "br0", KeaConfig::timed(53, 6, 2, 4));
    let g = lan.guest("g");
    ok(cli(&lan.host, &dir, &["attach", "br0", &format!("netns:{}", g.name), "dhcp"]));
    let ip = g.ipv4_on("eth1").expect("leased");
    kea.stop();
    // When it goes (at the lease's end, not later) is bounded by the kernel's own event time
    // against Kea's expire time in tests/dhcp_promises.rs, not by a stopwatch here.
    let gone = wait_address(&g, "eth1", Duration::from_secs(10), |a| a.is_none());
    assert_eq!(gone, None, "the address must go when the lease expires");
    assert!(!g.routes().iter().any(|r| r.contains("default via 198.18.53.1")), "routes go with it");
    let leases = ok(cli(&lan.host, &dir, &["leases"]));
    assert!(leases.contains("SELECTING") || leases.contains("INIT"), "{leases}");
    kea.restart(KeaConfig::timed(53, 6, 2, 4));
    let back = wait_address(&g, "eth1", Duration::from_secs(15), |a| a.is_some());
    assert_eq!(back, Some(ip), "the server is back: the same address again");
    resolv.assert_unchanged();
}

#[test]
fn a_nak_removes_the_address_and_a_new_one_is_acquired() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(54);
    let dir = TestDir::new("dhcp-nak");
    let _daemon = DaemonGuard::new(&dir);
    let mut first = KeaConfig::timed(54, 6, 2, 4);
    first.pool = ("198.18.54.150".parse().unwrap(), "198.18.54.199".parse().unwrap());
    let mut kea = Kea::start(&lan.host, "br0", first);
    let g = lan.guest("g");
    ok(cli(&lan.host, &dir, &["attach", "br0", &format!("netns:{}", g.name), "dhcp"]));
    let ip = g.ipv4_on("eth1").expect("leased");
    assert!(ip.octets()[3] >= 150, "{ip}");
    // The server now says that address is not on this network any more.
    let mut second = KeaConfig::timed(54, 6, 2, 4);
    second.subnet = "198.18.54.0/25".into();
    second.pool = ("198.18.54.50".parse().unwrap(), "198.18.54.99".parse().unwrap());
    second.authoritative = true;
    kea.restart(second);
    let renewed = wait_address(&g, "eth1", Duration::from_secs(15), |a| {
        a.is_some_and(|a| a.octets()[3] < 100)
    });
    let renewed = renewed.expect("a new address after the NAK");
    assert!((50..100).contains(&renewed.octets()[3]), "{renewed}");
    let view: serde_json::Value =
        serde_json::from_str(&ok(cli(&lan.host, &dir, &["inspect", &format!("netns:{}", g.name)])))
            .unwrap();
    assert!(
        view["Lanyard"]["Interfaces"][0]["DHCP"]["LastLoss"].to_string().contains("Nak"),
        "{view}"
    );
    resolv.assert_unchanged();
}

#[test]
fn slaac_gives_a_stable_eui64_address_beside_the_dhcp_lease() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(56);
    let dir = TestDir::new("dhcp-slaac");
    let _daemon = DaemonGuard::new(&dir);
    let _dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.56.100", "198.18.56.200"), "2m", &[]);
    let _radvd = Radvd::start(&lan.host, "br0", "2001:db8:56::/64");
    let g = lan.guest("g");
    g.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    g.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
    let token = format!("netns:{}", g.name);
    ok(cli(&lan.host, &dir, &["attach", "br0", &token, "dhcp", "--slaac"]));
    let mac = g.ip(&["-br", "link", "show", "eth1"]).split_whitespace().nth(2).unwrap().to_string();
    let octets: Vec<u8> = mac.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    let eui64 = format!(
        "2001:db8:56:0:{:x}:{:x}:{:x}:{:x}",
        u16::from_be_bytes([octets[0] ^ 0x02, octets[1]]),
        u16::from_be_bytes([octets[2], 0xff]),
        u16::from_be_bytes([0xfe, octets[3]]),
        u16::from_be_bytes([octets[4], octets[5]])
    );
    let found = wait_until(Duration::from_secs(10), || {
        g.addresses().iter().any(|a| a.contains(&format!("{eui64}/64")))
    });
    assert!(found, "expected {eui64}/64 in {:?}", g.addresses());
    assert_eq!(
        g.sysctl_get("net.ipv6.conf.all.disable_ipv6"),
        "1",
        "only lanyard's interface changes"
    );
    let view = ok(cli(&lan.host, &dir, &["inspect", &token]));
    assert!(view.contains(&eui64), "inspect shows the SLAAC address: {view}");
    assert!(g.ipv4_on("eth1").is_some(), "and the DHCPv4 lease");
    resolv.assert_unchanged();
}

#[test]
fn set_resolv_writes_the_namespace_resolv_conf_never_the_hosts() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(57);
    let dir = TestDir::new("dhcp-resolv");
    let _daemon = DaemonGuard::new(&dir);
    let _dnsmasq = Dnsmasq::start_with_dns(
        &lan.host,
        "br0",
        ("198.18.57.100", "198.18.57.200"),
        "2m",
        "lab.example",
        &[],
    );
    let g = lan.guest("g");
    let etc = PathBuf::from("/etc/netns").join(&g.name);
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveDir(etc.clone());
    ok(cli(
        &lan.host,
        &dir,
        &["attach", "br0", &format!("netns:{}", g.name), "dhcp", "--set-resolv"],
    ));
    let written =
        std::fs::read_to_string(etc.join("resolv.conf")).expect("the namespace's resolv.conf");
    assert!(written.contains("nameserver 198.18.57.1"), "{written}");
    assert!(written.contains("lab.example"), "{written}");
    resolv.assert_unchanged();
}

#[test]
fn pipeworks_dhcp_forms_reach_lanyards_own_client() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(58);
    let dir = TestDir::new("dhcp-pipework");
    let _daemon = DaemonGuard::new(&dir);
    let _dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.58.100", "198.18.58.200"), "2m", &[]);
    let g = lan.guest("g");
    let token = format!("netns:{}", g.name);
    let out = cli(&lan.host, &dir, &["pipework", "br0", &token, "udhcpc-f:-x hostname:web"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(stderr.contains("notice"), "client arguments are ignored with a notice: {stderr}");
    assert!(g.ipv4_on("eth1").is_some());
    ok(cli(
        &lan.host,
        &dir,
        &["pipework", "br0", "-i", "eth2", &token, "dhclient", "02:42:c6:12:3a:02"],
    ));
    assert!(g.ipv4_on("eth2").is_some());
    assert!(g.ip(&["link", "show", "eth2"]).contains("02:42:c6:12:3a:02"));
    ok(cli(&lan.host, &dir, &["detach", &token]));
    resolv.assert_unchanged();
}

#[test]
fn no_wait_hands_the_interface_to_the_daemon_and_returns() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(59);
    let dir = TestDir::new("dhcp-nowait");
    let _daemon = DaemonGuard::new(&dir);
    let g = lan.guest("g");
    let token = format!("netns:{}", g.name);
    // No server yet: the attach returns at once anyway, and the daemon keeps asking.
    let printed = ok(cli(&lan.host, &dir, &["attach", "br0", &token, "dhcp", "--no-wait"]));
    assert!(printed.contains("pending"), "{printed}");
    let _dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.59.100", "198.18.59.200"), "2m", &[]);
    let leased = wait_address(&g, "eth1", Duration::from_secs(15), |a| a.is_some());
    assert!(leased.is_some(), "the daemon got the lease later");
    resolv.assert_unchanged();
}

#[test]
fn a_deleted_namespace_releases_its_host_end_and_its_record_dies_with_the_lease() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(60);
    let dir = TestDir::new("dhcp-netns-gone");
    let _daemon = DaemonGuard::new(&dir);
    let _kea = Kea::start(&lan.host, "br0", KeaConfig::timed(60, 4, 1, 3));
    let g = lan.guest("g");
    ok(cli(&lan.host, &dir, &["attach", "br0", &format!("netns:{}", g.name), "dhcp"]));
    let ports = || lan.host.ip(&["-o", "link", "show", "master", "br0"]).lines().count();
    let before = ports();
    assert_eq!(record_and_lease_files(&dir).len(), 2, "a record and a lease");
    // The daemon holds sockets in the namespace, which would keep it (and the veth) alive: it
    // must notice the name going and let go.
    drop(g);
    assert!(
        wait_until(Duration::from_secs(3), || ports() < before),
        "the host end goes with the guest"
    );
    assert!(
        wait_until(Duration::from_secs(8), || record_and_lease_files(&dir).is_empty()),
        "no record outlives its lease: {:?}",
        record_and_lease_files(&dir)
    );
    resolv.assert_unchanged();
}

/// Whether process `pid` holds a descriptor of the network namespace `ns`: one whose file is
/// the namespace's (same device and inode), whatever path it was opened by.
fn holds_namespace(pid: i32, ns: &Netns) -> bool {
    use std::os::unix::fs::MetadataExt;
    let wanted = std::fs::metadata(&ns.path).expect("stat the namespace");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| {
        std::fs::metadata(fd.path())
            .is_ok_and(|m| (m.dev(), m.ino()) == (wanted.dev(), wanted.ino()))
    })
}

#[test]
fn detach_releases_and_the_daemon_then_closes_what_it_held_in_the_guest() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(52);
    let dir = TestDir::new("dhcp-release-close");
    let daemon = DaemonGuard::new(&dir);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.52.100", "198.18.52.200"), "2m", &[]);
    let g = lan.guest("g");
    let token = format!("netns:{}", g.name);
    ok(cli(&lan.host, &dir, &["attach", "br0", &token, "dhcp"]));
    let ip = g.ipv4_on("eth1").expect("leased address configured when attach returns");
    let pid = daemon.pid().expect("the attach started the daemon");
    assert!(holds_namespace(pid, &g), "the daemon holds the guest's namespace with the lease");
    ok(cli(&lan.host, &dir, &["detach", &token]));
    dnsmasq.expect_release("br0", ip, Duration::from_secs(2));
    // The release answers before the lease's sockets and namespace handle are closed (off the
    // daemon's loop: a packet socket's close waits for the kernel's RCU grace period), but
    // they are closed all the same.
    assert!(
        wait_until(Duration::from_secs(2), || !holds_namespace(pid, &g)),
        "the daemon still holds the guest's namespace 2 s after the detach"
    );
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    resolv.assert_unchanged();
}

#[test]
fn probe_declines_an_offered_address_someone_already_uses() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let (lan, neighbour) = kea_lan(61);
    // The neighbour uses the pool's first address without the server knowing.
    neighbour.ip(&["addr", "add", "198.18.61.50/24", "dev", "eth0"]);
    let dir = TestDir::new("dhcp-decline");
    let _daemon = DaemonGuard::new(&dir);
    let mut config = KeaConfig::timed(61, 30, 10, 20);
    config.pool = ("198.18.61.50".parse().unwrap(), "198.18.61.60".parse().unwrap());
    let _kea = Kea::start(&lan.host, "br0", config);
    let g = lan.guest("g");
    ok(cli(
        &lan.host,
        &dir,
        &["attach", "br0", &format!("netns:{}", g.name), "dhcp", "--probe", "--timeout", "20"],
    ));
    let address = g.ipv4_on("eth1").expect("a lease");
    assert_ne!(
        address,
        "198.18.61.50".parse::<Ipv4Addr>().unwrap(),
        "the address in use was declined"
    );
    resolv.assert_unchanged();
}

#[test]
fn a_link_flap_is_verified_with_init_reboot_and_option_26_sets_the_mtu() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(62);
    let dir = TestDir::new("dhcp-flap");
    let _daemon = DaemonGuard::new(&dir);
    let mut config = KeaConfig::timed(62, 30, 10, 20);
    config.options = vec![serde_json::json!({"name": "interface-mtu", "data": "1400"})];
    let kea = Kea::start(&lan.host, "br0", config);
    let g = lan.guest("g");
    let token = format!("netns:{}", g.name);
    ok(cli(&lan.host, &dir, &["attach", "br0", &token, "dhcp", "--client-id", "flap-eth1"]));
    let ip = g.ipv4_on("eth1").expect("leased");
    let daemon_log = std::fs::read_to_string(dir.join("state/daemon.log")).unwrap_or_default();
    assert!(
        g.ip(&["link", "show", "eth1"]).contains("mtu 1400"),
        "option 26 applied: {daemon_log}\n{}",
        kea.log_text()
    );
    let view: serde_json::Value =
        serde_json::from_str(&ok(cli(&lan.host, &dir, &["inspect", &token]))).unwrap();
    let host_end = view["Lanyard"]["Interfaces"][0]["HostIfname"].as_str().unwrap().to_string();
    assert_eq!(view["Lanyard"]["Interfaces"][0]["DHCP"]["Settings"]["client_id"], "flap-eth1");
    // Carrier goes away and comes back: the client checks its lease (INIT-REBOOT) at once. First
    // with no pause at all, while the daemon is busy (stopped, as a daemon serving a thousand
    // leases can be for a moment): it reads the down and the up in one wake-up, or a single
    // notice if the kernel folded them. Then with the link up again only once the daemon logged
    // it down. The lease's T1 is 10 s, so no renewal can pass for the verification.
    let log = || std::fs::read_to_string(dir.join("state/daemon.log")).unwrap_or_default();
    let daemon_pid = _daemon.pid().expect("the daemon answers");
    for back_to_back in [true, false] {
        let grants = kea.grants_of(ip);
        if back_to_back {
            let _busy = support::lab::Stopped::new(daemon_pid);
            lan.host.ip_batch(&format!("link set {host_end} down\nlink set {host_end} up"));
            assert!(
                wait_until(Duration::from_secs(5), || {
                    g.ip(&["link", "show", "eth1"]).contains("LOWER_UP")
                }),
                "the guest link has its carrier back"
            );
        } else {
            let downs = log().matches("link down").count();
            lan.host.ip(&["link", "set", &host_end, "down"]);
            assert!(
                wait_until(Duration::from_secs(5), || log().matches("link down").count() > downs),
                "the daemon saw the link down: {}",
                log()
            );
            lan.host.ip(&["link", "set", &host_end, "up"]);
        }
        assert!(
            wait_until(Duration::from_secs(5), || kea.grants_of(ip) > grants),
            "a REQUEST after the flap (back to back: {back_to_back}): {}",
            log()
        );
        assert_eq!(g.ipv4_on("eth1"), Some(ip), "the same address, verified");
        let log = log();
        assert!(log.contains("link down") && log.contains("link up"), "{log}");
    }
    resolv.assert_unchanged();
}

#[test]
fn concurrent_dhcp_attaches_start_exactly_one_daemon() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(63);
    let dir = TestDir::new("dhcp-one-daemon");
    let daemon = DaemonGuard::new(&dir);
    let _dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.63.100", "198.18.63.200"), "2m", &[]);
    let guests: Vec<Netns> = (0..4).map(|i| lan.guest(&format!("c{i}"))).collect();
    std::thread::scope(|scope| {
        for guest in &guests {
            let (lan, dir) = (&lan, &dir);
            scope.spawn(move || {
                ok(cli(
                    &lan.host,
                    dir,
                    &["attach", "br0", &format!("netns:{}", guest.name), "dhcp"],
                ))
            });
        }
    });
    for guest in &guests {
        assert!(guest.ipv4_on("eth1").is_some(), "{} has a lease", guest.name);
    }
    let state = dir.join("state").display().to_string();
    let daemons = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&state) && cmdline.trim_end().ends_with(" daemon"))
        .count();
    assert_eq!(daemons, 1, "one daemon per state directory");
    assert!(daemon.pid().is_some());
    let leases = ok(cli(&lan.host, &dir, &["leases"]));
    assert_eq!(leases.lines().filter(|l| l.contains("BOUND")).count(), 4, "{leases}");
    resolv.assert_unchanged();
}

#[test]
fn a_guest_that_died_while_the_daemon_was_down_is_forgotten_when_its_lease_ends() {
    lab::require_root();
    let mut resolv = HostResolvConf::snapshot();
    let (lan, _neighbour) = kea_lan(64);
    let dir = TestDir::new("dhcp-died-offline");
    let daemon = DaemonGuard::new(&dir);
    let _kea = Kea::start(&lan.host, "br0", KeaConfig::timed(64, 6, 2, 4));
    let g = lan.guest("g");
    ok(cli(&lan.host, &dir, &["attach", "br0", &format!("netns:{}", g.name), "dhcp"]));
    assert_eq!(record_and_lease_files(&dir).len(), 2);
    assert!(daemon.kill(libc::SIGKILL));
    drop(g);
    let mut command = lan.host.command(env!("CARGO_BIN_EXE_lanyard"));
    command
        .args(["daemon"])
        .env("LANYARD_STATE_DIR", dir.join("state"))
        .env("LANYARD_HOST_ID", format!("test-{}", lab::run_id()));
    let _restarted = support::lab::Server::spawn(command, "lanyard-daemon");
    assert!(
        wait_until(Duration::from_secs(10), || record_and_lease_files(&dir).is_empty()),
        "the lease and record of a guest gone while the daemon was down end with the lease: {:?}",
        record_and_lease_files(&dir)
    );
    resolv.assert_unchanged();
}
