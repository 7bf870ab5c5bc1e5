//! The library as every front end uses it: a rollback that cannot undo everything says so, a
//! gateway off the subnet, DHCP inside `attach()`, daemon refusals that keep their kind, and the
//! announce helper overtaken by a detach. Each test builds its own namespaces.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;

use std::time::Duration;

use lanyard::daemon::control::{self, Request};
use lanyard::error::ErrorKind;
use lanyard::guest::GuestSpec;
use lanyard::netns::Netns as NsHandle;
use lanyard::spec::parse_address;
use lanyard::state::DhcpSettings;
use lanyard::{AttachRequest, DhcpWait, FailPoint, Host};
use support::cli::{run as cli, text};
use support::daemon::DaemonGuard;
use support::dhcp::Dnsmasq;
use support::lab::{self, wait_until, Lan, Netns, TestDir};

fn host_for(ns: &Netns, dir: &TestDir) -> Host {
    lab::require_root();
    let handle = NsHandle::open(&ns.path).expect("open host namespace");
    Host::new(handle, &dir.join("state"), format!("test-{}", lab::run_id()))
        .expect("host")
        .with_daemon_exe(env!("CARGO_BIN_EXE_lanyard"))
}

fn request(host_if: &str, guest: &Netns, addresses: &[&str]) -> AttachRequest {
    let mut request = AttachRequest::new(host_if, GuestSpec::Netns(guest.name.clone()));
    request.addresses = addresses.iter().map(|a| parse_address(a).expect("address")).collect();
    request
}

fn ping(from: &Netns, to: &str) -> bool {
    // One retry: a first echo can meet an ARP exchange still in flight.
    (0..2).any(|_| from.exec(&["ping", "-c", "1", "-W", "2", to]).status.success())
}

#[test]
fn a_rollback_that_leaves_a_link_behind_names_it_and_fails() {
    let lan = Lan::bridge(70);
    let dir = TestDir::new("undo-fails");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let state_before = lab::state_files(&dir);

    let mut req = request("br0", &g, &["198.18.70.2/24@198.18.70.1"]);
    req.fail_at = Some(FailPoint::AfterAddresses);
    req.fail_undo = true;
    let err = lanyard::attach(&host, &req).unwrap_err();
    let message = err.to_string();
    // The original failure keeps its kind; the leftover is named with what to do.
    assert_eq!(err.kind(), ErrorKind::Injected, "{message}");
    assert!(message.contains("rollback incomplete, left behind: link ly"), "{message}");
    assert!(message.contains("in the host namespace"), "{message}");
    let leftover = message
        .split("left behind: link ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the link's name")
        .to_string();
    assert!(message.contains(&format!("ip link del {leftover}")), "{message}");
    // It is really there, and it is the only thing left: the record was never written.
    assert!(lan.host.links().iter().any(|l| l.contains(&leftover)), "{:?}", lan.host.links());
    assert_eq!(lab::state_files(&dir), state_before);

    // The same request without the injected undo failure leaves nothing (the control case).
    lan.host.ip(&["link", "del", &leftover]);
    let host_before = lan.host.snapshot();
    let guest_before = g.snapshot();
    req.fail_undo = false;
    let err = lanyard::attach(&host, &req).unwrap_err();
    assert!(!err.to_string().contains("rollback incomplete"), "{err}");
    assert_eq!(lan.host.snapshot(), host_before);
    assert_eq!(g.snapshot(), guest_before);
}

#[test]
fn a_gateway_outside_the_subnet_is_reached_through_an_onlink_route() {
    let lan = Lan::bridge(71);
    let dir = TestDir::new("offlink-gw");
    // A router whose address is outside the /25 the second guest gets.
    lan.host.ip(&["addr", "add", "198.18.71.200/24", "dev", "br0"]);
    let single = lan.guest("single");
    let half = lan.guest("half");
    let single_token = format!("netns:{}", single.name);
    let half_token = format!("netns:{}", half.name);
    // The guest had a default route of its own, to be put back on detach.
    half.ip_batch(
        "link add eth0 type veth peer name eth0peer\nlink set eth0 up\nlink set eth0peer up\n\
         addr add 198.19.251.2/24 dev eth0\nroute add default via 198.19.251.1 dev eth0",
    );

    // A /32 address (hosting networks): its router is off the subnet by construction.
    let out =
        cli(&lan.host, &dir, &["attach", "br0", &single_token, "198.18.71.10/32@198.18.71.1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(
        &lan.host,
        &dir,
        &[
            "attach",
            "br0",
            &half_token,
            "198.18.71.20/25@198.18.71.200",
            "--route",
            "198.19.60.0/24@198.18.71.200",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let routes = single.routes();
    assert!(
        routes.iter().any(|r| r.starts_with("198.18.71.1 dev eth1") && r.contains("scope link")),
        "{routes:?}"
    );
    assert!(routes.iter().any(|r| r.starts_with("default via 198.18.71.1 dev eth1")), "{routes:?}");
    assert!(ping(&single, "198.18.71.1"), "the /32 guest reaches its router");
    let routes = half.routes();
    assert!(
        routes.iter().any(|r| r.starts_with("198.18.71.200 dev eth1") && r.contains("scope link")),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r.starts_with("default via 198.18.71.200 dev eth1")),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r.starts_with("198.19.60.0/24 via 198.18.71.200 dev eth1")),
        "{routes:?}"
    );
    assert!(ping(&half, "198.18.71.200"), "the /25 guest reaches its off-subnet router");

    for token in [&single_token, &half_token] {
        let out = cli(&lan.host, &dir, &["detach", token]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(!single.routes().iter().any(|r| r.contains("198.18.71.")), "{:?}", single.routes());
    let routes = half.routes();
    assert!(
        routes.iter().any(|r| r.starts_with("default via 198.19.251.1 dev eth0")),
        "restored: {routes:?}"
    );
    assert!(!routes.iter().any(|r| r.contains("198.18.71.")), "{routes:?}");
}

#[test]
fn library_attach_with_dhcp_returns_with_the_lease_and_undoes_without_one() {
    let mut resolv = support::dhcp::HostResolvConf::snapshot();
    let lan = Lan::bridge(72);
    let dir = TestDir::new("lib-dhcp");
    let daemon = DaemonGuard::new(&dir);
    let host = host_for(&lan.host, &dir);
    let leased = lan.guest("leased");
    let _dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.72.100", "198.18.72.150"), "2m", &[]);

    let mut req = request("br0", &leased, &[]);
    req.dhcp = Some(DhcpSettings::default());
    req.dhcp_wait = DhcpWait { timeout: Duration::from_secs(10), wait: true };
    let attached = lanyard::attach(&host, &req).expect("attach with a lease");
    let lease = attached.lease.expect("the daemon's view of the lease");
    let address = lease["Address"].as_str().expect("an address").to_string();
    assert!(address.starts_with("198.18.72.1"), "{lease}");
    let ip = address.split('/').next().unwrap().to_string();
    // Configured in the guest by the time attach returned.
    assert!(leased.addresses().iter().any(|a| a.contains(&ip)), "{:?}", leased.addresses());
    // The daemon runs in the host namespace the library was given, not the test's.
    let pid = daemon.pid().expect("the daemon answers");
    let daemon_netns = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino()
    };
    assert_eq!(daemon_netns, host.netns.id().ino, "the daemon's namespace");
    lanyard::detach(&host, &format!("netns:{}", leased.name), None).unwrap();

    // No server on this LAN: a timeout, and nothing of the attach is left.
    let quiet = Lan::bridge(73);
    let dir2 = TestDir::new("lib-dhcp-none");
    let _daemon2 = DaemonGuard::new(&dir2);
    let host2 = host_for(&quiet.host, &dir2);
    let g = quiet.guest("g");
    let (host_before, guest_before) = (quiet.host.snapshot(), g.snapshot());
    let mut req = request("br0", &g, &[]);
    req.dhcp = Some(DhcpSettings::default());
    req.dhcp_wait = DhcpWait { timeout: Duration::from_secs(2), wait: true };
    let err = lanyard::attach(&host2, &req).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("no DHCP offer on br0 within 2 s"), "{err}");
    assert!(!err.to_string().contains("left behind"), "{err}");
    assert_eq!(quiet.host.snapshot(), host_before);
    assert_eq!(g.snapshot(), guest_before);
    let records: Vec<String> =
        lab::state_files(&dir2).into_iter().filter(|f| f.ends_with(".json")).collect();
    assert!(records.is_empty(), "{records:?}");
    resolv.assert_unchanged();
}

#[test]
fn a_refusal_from_the_daemon_keeps_its_kind_and_exit_code() {
    let lan = Lan::bridge(74);
    let dir = TestDir::new("daemon-kind");
    let _daemon = DaemonGuard::new(&dir);
    let host = host_for(&lan.host, &dir);
    // Bad input the daemon itself refuses (a record name that is a path).
    let response = control::request(
        &host,
        &Request::Acquire {
            record: "../../etc/x.json".into(),
            wait: true,
            timeout_ms: 1000,
            pid: None,
        },
        Duration::from_secs(5),
    )
    .expect("the daemon answers");
    assert!(!response.ok);
    let error = response.into_error();
    assert_eq!(error.kind(), ErrorKind::Usage, "{error}");
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("not a record file name"), "{error}");
    // Not found stays not found (exit 1), with the daemon's message.
    let response = control::request(
        &host,
        &Request::Acquire {
            record: "netns-nobody.eth1.json".into(),
            wait: true,
            timeout_ms: 1000,
            pid: None,
        },
        Duration::from_secs(5),
    )
    .unwrap();
    let error = response.into_error();
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    assert!(error.to_string().contains("no record netns-nobody.eth1.json"), "{error}");
}

/// No announce helper of `state` still runs (they are detached; bounded wait).
fn helpers_done(state: &Path) -> bool {
    let needle = state.to_string_lossy().into_owned();
    wait_until(Duration::from_secs(10), || {
        !std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("announce-helper") && cmdline.contains(&needle)
            })
        })
    })
}

#[test]
fn an_announcement_overtaken_by_a_detach_ends_quietly() {
    let lan = Lan::bridge(75);
    let dir = TestDir::new("announce-overtaken");
    let state = dir.join("state");
    let g = lan.guest("g");
    // The record is gone by the time the helper looks (what a fast detach does).
    let out = cli(
        &lan.host,
        &dir,
        &[
            "announce-helper",
            "--record",
            "netns-gone.eth1.json",
            "--netns",
            &g.path.to_string_lossy(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!state.join("announce.log").exists(), "nothing logged");

    // The real race, many times over: attach then detach at once, 24 guests in parallel.
    let guests: Vec<Netns> = (0..24).map(|i| lan.guest(&format!("r{i}"))).collect();
    std::thread::scope(|scope| {
        for (i, guest) in guests.iter().enumerate() {
            let (lan, dir) = (&lan, &dir);
            scope.spawn(move || {
                let token = format!("netns:{}", guest.name);
                let address = format!("198.18.75.{}/24", 10 + i);
                let out = cli(&lan.host, dir, &["attach", "br0", &token, &address]);
                assert!(out.status.success(), "{}", text(&out));
                let out = cli(&lan.host, dir, &["detach", &token]);
                assert!(out.status.success(), "{}", text(&out));
            });
        }
    });
    assert!(helpers_done(&state), "announce helpers still running after 10 s");
    let log = std::fs::read_to_string(state.join("announce.log")).unwrap_or_default();
    assert!(log.is_empty(), "an overtaken announcement logged: {log}");
    assert!(lab::state_files(&dir).iter().all(|f| !f.ends_with(".json")));
}

#[test]
fn an_ipv4_only_interface_accepts_no_router_advertisement() {
    let lan = Lan::bridge(76);
    let dir = TestDir::new("v4-no-ra");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    // The guest's own default says accept (1), as a plain namespace's does.
    assert_eq!(g.sysctl_get("net.ipv6.conf.default.accept_ra"), "1");
    lanyard::attach(&host, &request("br0", &g, &["198.18.76.2/24"])).unwrap();
    assert_eq!(g.sysctl_get("net.ipv6.conf.eth1.accept_ra"), "0");
    // Only lanyard's interface: the guest's defaults are untouched.
    assert_eq!(g.sysctl_get("net.ipv6.conf.default.accept_ra"), "1");
}

#[test]
fn a_lease_file_from_a_newer_lanyard_is_refused_never_overwritten() {
    let lan = Lan::bridge(77);
    let dir = TestDir::new("lease-newer");
    let _daemon = DaemonGuard::new(&dir);
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let _dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.77.100", "198.18.77.150"), "2m", &[]);
    let record = lanyard::state::Record::file_name_for(
        &lanyard::state::GuestRef::Netns { name: g.name.clone() },
        "eth1",
    );
    let leases = dir.join("state/leases");
    std::fs::create_dir_all(&leases).unwrap();
    let newer = format!(r#"{{"version": 99, "record": "{record}", "meaning": "changed"}}"#);
    std::fs::write(leases.join(&record), &newer).unwrap();
    let guest_before = g.snapshot();

    let mut req = request("br0", &g, &[]);
    req.dhcp = Some(DhcpSettings::default());
    req.dhcp_wait = DhcpWait { timeout: Duration::from_secs(5), wait: true };
    let err = lanyard::attach(&host, &req).unwrap_err();
    assert!(err.to_string().contains("written by a newer lanyard (format 99"), "{err}");
    assert_eq!(std::fs::read_to_string(leases.join(&record)).unwrap(), newer, "untouched");
    assert_eq!(g.snapshot(), guest_before, "the attach was undone");
}

#[test]
fn macvlan_and_host_only_attaches_roll_back_at_every_step() {
    let points = [
        FailPoint::AfterLink,
        FailPoint::AfterAddresses,
        FailPoint::AfterRoutes,
        FailPoint::AfterRecord,
    ];
    // A guest with a default route of its own, which each failed attach must leave in place.
    let with_default_route = |g: &Netns| {
        g.ip_batch(
            "link add eth0 type veth peer name eth0peer\nlink set eth0 up\nlink set eth0peer up\n\
             addr add 198.19.252.2/24 dev eth0\nroute add default via 198.19.252.1 dev eth0",
        )
    };

    let wire = Lan::with_uplink(78);
    let dir = TestDir::new("rollback-macvlan");
    let host = host_for(&wire.host, &dir);
    let g = wire.guest("mv");
    with_default_route(&g);
    for point in points {
        let (host_before, guest_before) = (wire.host.snapshot(), g.snapshot());
        let state_before = lab::state_files(&dir);
        let mut req = request("uplink0", &g, &["198.18.78.2/24@198.18.78.1", "2001:db8:78::2/64"]);
        req.routes = vec![lanyard::spec::parse_route("198.19.0.0/16@198.18.78.254").unwrap()];
        req.fail_at = Some(point);
        let err = lanyard::attach(&host, &req).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Injected, "macvlan {point:?}: {err}");
        assert!(!err.to_string().contains("left behind"), "macvlan {point:?}: {err}");
        assert_eq!(wire.host.snapshot(), host_before, "macvlan {point:?}: host side");
        assert_eq!(g.snapshot(), guest_before, "macvlan {point:?}: guest side");
        assert_eq!(lab::state_files(&dir), state_before, "macvlan {point:?}: state");
    }

    let lan = Lan::bridge(79);
    let dir = TestDir::new("rollback-hostonly");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("ho");
    with_default_route(&g);
    for point in points {
        let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
        let state_before = lab::state_files(&dir);
        let mut req = request("vho79", &g, &["198.18.79.2/24@198.18.79.1"]);
        req.host_only = true;
        req.host_addresses = vec!["198.18.79.1/24".parse().unwrap()];
        req.fail_at = Some(point);
        let err = lanyard::attach(&host, &req).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Injected, "host-only {point:?}: {err}");
        assert!(!err.to_string().contains("left behind"), "host-only {point:?}: {err}");
        assert_eq!(lan.host.snapshot(), host_before, "host-only {point:?}: host side");
        assert_eq!(g.snapshot(), guest_before, "host-only {point:?}: guest side");
        assert_eq!(lab::state_files(&dir), state_before, "host-only {point:?}: state");
    }
}

#[test]
fn a_record_whose_interface_is_gone_is_stale_even_in_a_namespace_with_the_same_identity() {
    // The kernel reuses a freed namespace's inode number, so a restarted container's new
    // namespace can carry the old one's identity (seen with `docker restart` here). What makes
    // a record live is its interface, with its MAC, in that namespace; this test keeps the
    // namespace and removes the interface behind lanyard's back.
    let lan = Lan::bridge(80);
    let dir = TestDir::new("stale-same-ns");
    let g = lan.guest("g");
    let token = format!("netns:{}", g.name);
    let out = cli(&lan.host, &dir, &["attach", "br0", &token, "198.18.80.2/24"]);
    assert!(out.status.success(), "{}", text(&out));
    let again = cli(&lan.host, &dir, &["attach", "br0", &token, "198.18.80.2/24"]);
    assert!(text(&again).contains("already has eth1 from lanyard"), "{}", text(&again));
    g.ip(&["link", "del", "eth1"]);
    let out = cli(&lan.host, &dir, &["attach", "br0", &token, "198.18.80.3/24"]);
    assert!(out.status.success(), "a stale record is replaced: {}", text(&out));
    assert!(g.addresses().iter().any(|a| a.contains("198.18.80.3/24")), "{:?}", g.addresses());
    let records: Vec<String> =
        lab::state_files(&dir).into_iter().filter(|f| f.ends_with(".json")).collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let out = cli(&lan.host, &dir, &["detach", &token]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Set for the child run of `the_control_socket_answers_only_root_or_its_owner`: the socket
/// to ask, as an unprivileged user.
const PEER_CHILD_SOCKET: &str = "LANYARD_TEST_PEER_CHILD_SOCKET";

#[test]
fn the_control_socket_answers_only_root_or_its_owner() {
    use std::io::{BufRead, BufReader, Write};
    if let Some(socket) = std::env::var_os(PEER_CHILD_SOCKET) {
        // The child: uid nobody, asking the daemon for a ping; prints the answer.
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        // The daemon may answer (and close) before reading: a refused send is no failure.
        let _ = stream.write_all(b"{\"op\":\"ping\"}\n");
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).expect("read");
        println!("ANSWER {answer}");
        return;
    }
    let lan = Lan::bridge(81);
    let dir = TestDir::new("peercred");
    let daemon = DaemonGuard::new(&dir);
    let host = host_for(&lan.host, &dir);
    let pong = control::request(&host, &Request::Ping, Duration::from_secs(5)).unwrap();
    assert!(pong.ok, "root is answered");
    assert!(daemon.pid().is_some());
    // Loosen the locks the files give (socket 0600 in a 0700 directory), as a mistaken chmod
    // would, so that only the daemon's own check is left between nobody and the daemon.
    use std::os::unix::fs::PermissionsExt;
    let socket = lanyard::daemon::control::socket_path(&dir.join("state"));
    std::fs::set_permissions(dir.join("state"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let name = format!(
        "{}::the_control_socket_answers_only_root_or_its_owner",
        module_path!().split_once("::").map_or("", |(_, rest)| rest)
    );
    let name = name.trim_start_matches("::").to_string();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--test-threads=1", "--nocapture"])
        .env(PEER_CHILD_SOCKET, &socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let answer = stdout
        .lines()
        .find_map(|l| l.split_once("ANSWER ").map(|(_, answer)| answer))
        .unwrap_or_else(|| panic!("no answer from the child: {stdout}"));
    let response: lanyard::daemon::control::Response = serde_json::from_str(answer).unwrap();
    assert!(!response.ok, "nobody is refused: {answer}");
    let error = response.into_error();
    assert_eq!(error.kind(), ErrorKind::Permission, "{error}");
    assert!(error.to_string().contains("uid 65534"), "{error}");
    std::fs::set_permissions(dir.join("state"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_dead_guests_host_end_is_removed_by_identity_not_by_a_name_reused_meanwhile() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let lan = Lan::bridge(82);
    let dir = TestDir::new("gone-by-identity");
    let daemon = DaemonGuard::new(&dir);
    let _dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.82.100", "198.18.82.150"), "2m", &[]);
    let tag = format!("reborn{}", std::process::id());
    let first = Netns::new_verbatim(&tag);
    let token = format!("netns:{}", first.name);
    let out = cli(&lan.host, &dir, &["attach", "br0", &token, "dhcp"]);
    assert!(out.status.success(), "{}", text(&out));
    let pid = Pid::from_raw(daemon.pid().expect("the daemon runs"));

    // The daemon is held still while the guest dies and the same guest is attached again: the
    // new host end gets the same (derived) name before the daemon hears of the death.
    kill(pid, Signal::SIGSTOP).unwrap();
    let resumed = scopeguard(pid);
    drop(first);
    let second = Netns::new_verbatim(&tag);
    let out = cli(&lan.host, &dir, &["attach", "br0", &token, "198.18.82.20/24"]);
    assert!(out.status.success(), "{}", text(&out));
    let host_end = lab::state_files(&dir)
        .into_iter()
        .find(|f| f.ends_with(".json"))
        .map(|f| std::fs::read_to_string(dir.join("state").join(f)).unwrap())
        .map(|text| serde_json::from_str::<serde_json::Value>(&text).unwrap())
        .and_then(|record| record["host_ifname"].as_str().map(str::to_string))
        .expect("the new record's host end");
    let index_of = |name: &str| {
        let links = lan.host.ip_json(&["link", "show"]);
        let links = links.as_array().cloned().unwrap_or_default();
        links.iter().find(|l| l["ifname"] == name).and_then(|l| l["ifindex"].as_u64())
    };
    let index = index_of(&host_end).expect("the new host end exists");
    drop(resumed);

    // The daemon now handles the old guest's death; the new link must survive it.
    let log = dir.join("state/daemon.log");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains("its namespace was deleted"))),
        "the daemon noticed the death: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // One more round trip: the turn that handled the death is over.
    control::request(&host_for(&lan.host, &dir), &Request::Ping, Duration::from_secs(5)).unwrap();
    assert_eq!(index_of(&host_end), Some(index), "the re-attached guest keeps its host end");
    assert!(second.addresses().iter().any(|a| a.contains("198.18.82.20/24")));
    let out = cli(&lan.host, &dir, &["detach", &token]);
    assert!(out.status.success(), "{}", text(&out));
}

/// SIGCONT to `pid` when dropped, so a failing assertion never leaves the daemon stopped.
fn scopeguard(pid: nix::unistd::Pid) -> impl Drop {
    struct Resume(nix::unistd::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
        }
    }
    Resume(pid)
}

#[test]
fn status_shows_attachments_and_the_daemons_leases_and_starts_nothing() {
    let lan = Lan::bridge(83);
    let dir = TestDir::new("status");
    let daemon = DaemonGuard::new(&dir);
    let status = |args: &[&str]| {
        let out = cli(&lan.host, &dir, &[&["status"], args].concat());
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Nothing yet: no daemon is started and no state directory is made.
    let json: serde_json::Value = serde_json::from_str(&status(&["--json"])).unwrap();
    assert_eq!(json["Attachments"], 0, "{json}");
    assert!(json["Daemon"].is_null(), "{json}");
    assert!(daemon.pid().is_none(), "status starts no daemon");
    assert!(!dir.join("state").exists(), "status makes no state directory");
    assert!(status(&[]).contains("daemon: not running"));

    let _dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.83.100", "198.18.83.150"), "2m", &[]);
    let leased = lan.guest("leased");
    let fixed = lan.guest("fixed");
    for (guest, address) in [(&leased, "dhcp"), (&fixed, "198.18.83.5/24")] {
        let out =
            cli(&lan.host, &dir, &["attach", "br0", &format!("netns:{}", guest.name), address]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let json: serde_json::Value = serde_json::from_str(&status(&["--json"])).unwrap();
    assert_eq!(json["Attachments"], 2, "{json}");
    assert_eq!(json["Daemon"]["Pid"].as_i64(), daemon.pid().map(i64::from), "{json}");
    assert_eq!(json["Daemon"]["Leases"], 1, "{json}");
    assert_eq!(json["Daemon"]["LeasesByState"]["BOUND"], 1, "{json}");
    assert_eq!(json["Daemon"]["GuestsAlive"], 1, "{json}");
    let text_status = status(&[]);
    assert!(text_status.contains("2 attachment(s) recorded"), "{text_status}");
    assert!(text_status.contains("1 lease(s): BOUND 1"), "{text_status}");
}
