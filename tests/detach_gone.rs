//! "`lanyard detach` succeeds if already gone" (README, Usage): a record whose veth, namespace or
//! daemon has gone away is still detached to the end (exit 0, nothing left), and when one
//! interface of a guest cannot be detached the others still are and the failure is named.
//! Every test runs the CLI inside a lab "host" namespace of its own (LANs 200..205).

mod support;

use std::time::Duration;

use support::cli::{self, ok, record_and_lease_files, text};
use support::daemon::DaemonGuard;
use support::dhcp::{Dnsmasq, HostResolvConf};
use support::lab::{wait_until, Lan, Netns, TestDir};

fn token(guest: &Netns) -> String {
    format!("netns:{}", guest.name)
}

/// The parsed JSON records in `dir/state` (not the leases).
fn records(dir: &TestDir) -> Vec<(std::path::PathBuf, serde_json::Value)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir.join("state")).expect("state dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let value = serde_json::from_slice(&std::fs::read(&path).expect("read record"))
                .expect("parse record");
            found.push((path, value));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// The host end of the link `guest_ifname` as recorded.
fn recorded_host_end(dir: &TestDir, guest_ifname: &str) -> String {
    records(dir)
        .into_iter()
        .find(|(_, r)| r["guest_ifname"] == guest_ifname)
        .and_then(|(_, r)| r["host_ifname"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no record with a host end for {guest_ifname}"))
}

/// A guest that already has its own uplink and default route (as a container on Docker's
/// bridge has): lanyard's `@GW` replaces that route and must put it back on detach.
fn guest_with_own_default_route(lan: &Lan) -> Netns {
    let g = lan.guest("g");
    g.ip_batch(
        "link add eth0 type veth peer name eth0peer\nlink set eth0 up\nlink set eth0peer up\n\
         addr add 198.19.250.2/24 dev eth0\nroute add default via 198.19.250.1 dev eth0",
    );
    g
}

#[test]
fn detach_succeeds_when_the_host_end_was_deleted_by_hand_and_restores_the_default_route() {
    let lan = Lan::bridge(200);
    let dir = TestDir::new("gone-veth");
    let g = guest_with_own_default_route(&lan);
    let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
    ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&g), "198.18.200.2/24@198.18.200.1"]));
    assert!(g.routes().iter().any(|r| r.starts_with("default via 198.18.200.1 dev eth1")));
    // Someone removes the veth behind lanyard's back: the guest end and lanyard's default route
    // go with it, the record stays.
    let host_end = recorded_host_end(&dir, "eth1");
    lan.host.ip(&["link", "del", &host_end]);
    assert_eq!(records(&dir).len(), 1);

    let out = cli::run(&lan.host, &dir, &["detach", &token(&g)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("detached eth1"), "{}", text(&out));
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before, "host namespace as before the attach");
    assert_eq!(g.snapshot(), guest_before, "guest as before, its own default route restored");
    // Idempotent: once more, nothing to do, still success.
    let again = cli::run(&lan.host, &dir, &["detach", &token(&g)]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("nothing attached"), "{}", text(&again));
}

#[test]
fn detach_succeeds_when_the_namespace_is_gone_and_removes_the_bridge_it_created() {
    let lan = Lan::bridge(201);
    let dir = TestDir::new("gone-netns");
    let host_before = lan.host.snapshot();
    let g = lan.guest("g");
    // `@GW` makes detach look for the guest's namespace (to restore routes there): it must
    // cope with finding none.
    ok(cli::run(
        &lan.host,
        &dir,
        &["attach", "brgone", &token(&g), "198.18.201.2/24@198.18.201.1"],
    ));
    let host_end = recorded_host_end(&dir, "eth1");
    let guest_token = token(&g);
    drop(g);
    // The kernel removes the veth with the namespace, asynchronously: wait for it so that
    // the detach below meets a record whose namespace and link are both gone.
    assert!(
        wait_until(Duration::from_secs(5), || !lan.host.links().contains(&host_end)),
        "the host end {host_end} outlived its namespace"
    );
    assert!(
        lan.host.links().iter().any(|l| l == "brgone"),
        "the bridge lanyard made is still there"
    );

    let out = cli::run(&lan.host, &dir, &["detach", &guest_token]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("removed bridge brgone"), "{}", text(&out));
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before, "bridge and port gone");
}

#[test]
fn detach_of_a_macvlan_whose_namespace_is_gone_succeeds() {
    let lan = Lan::with_uplink(202);
    let dir = TestDir::new("gone-macvlan");
    let host_before = lan.host.snapshot();
    let g = lan.guest("g");
    ok(cli::run(
        &lan.host,
        &dir,
        &["attach", "uplink0", &token(&g), "198.18.202.2/24@198.18.202.1"],
    ));
    let guest_token = token(&g);
    drop(g);
    let out = cli::run(&lan.host, &dir, &["detach", &guest_token]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("detached eth1"), "{}", text(&out));
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before);
}

#[test]
fn detach_with_the_daemon_down_brings_it_up_to_release_the_lease_on_disk() {
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(203);
    let dir = TestDir::new("gone-daemon");
    let daemon = DaemonGuard::new(&dir);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.203.100", "198.18.203.200"), "2m", &[]);
    let g = lan.guest("g");
    let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
    let printed = ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&g), "dhcp"]));
    assert!(printed.contains("lease 198.18.203."), "{printed}");
    let lease = dnsmasq.leases().into_iter().next().expect("dnsmasq granted a lease");
    assert!(daemon.kill(libc::SIGKILL), "the daemon the attach started was running");
    assert_eq!(record_and_lease_files(&dir).len(), 2, "a record and a lease on disk");

    let out = cli::run(&lan.host, &dir, &["detach", &token(&g)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("warning"), "the release went out: {}", text(&out));
    dnsmasq.expect_release("br0", lease.ip, Duration::from_secs(3));
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before);
    assert_eq!(g.snapshot(), guest_before);
    resolv.assert_unchanged();
}

#[test]
fn detach_with_the_daemon_and_the_namespace_gone_still_removes_record_and_lease() {
    let mut resolv = HostResolvConf::snapshot();
    let lan = Lan::bridge(204);
    let dir = TestDir::new("gone-both");
    let daemon = DaemonGuard::new(&dir);
    let _dnsmasq =
        Dnsmasq::start(&lan.host, "br0", ("198.18.204.100", "198.18.204.200"), "2m", &[]);
    let g = lan.guest("g");
    let host_before = lan.host.snapshot();
    ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&g), "dhcp"]));
    let host_end = recorded_host_end(&dir, "eth1");
    assert!(daemon.kill(libc::SIGKILL));
    let guest_token = token(&g);
    drop(g);
    assert!(
        wait_until(Duration::from_secs(5), || !lan.host.links().contains(&host_end)),
        "the host end {host_end} outlived its namespace"
    );

    let out = cli::run(&lan.host, &dir, &["detach", &guest_token]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before);
    resolv.assert_unchanged();
}

#[test]
fn one_interface_that_cannot_be_detached_is_named_and_the_others_still_go() {
    let lan = Lan::bridge(205);
    let dir = TestDir::new("gone-partial");
    let g = lan.guest("g");
    for (ifname, address) in
        [("eth1", "198.18.205.11/24"), ("eth2", "198.18.205.12/24"), ("eth3", "198.18.205.13/24")]
    {
        ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&g), address, "-i", ifname]));
    }
    // The failure to inject: eth2's record names `lo` as its host end, which the kernel refuses
    // to delete. Whatever order detach takes the records in, one good one comes after it.
    let (path, mut record) =
        records(&dir).into_iter().find(|(_, r)| r["guest_ifname"] == "eth2").expect("eth2");
    let eth2_host_end = record["host_ifname"].as_str().expect("host end").to_string();
    record["host_ifname"] = "lo".into();
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();

    let out = cli::run(&lan.host, &dir, &["detach", &token(&g)]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "a failed step fails the detach: {}", text(&out));
    assert!(stderr.contains("eth2"), "the failing interface is named: {stderr}");
    assert!(stderr.contains(&format!("detach {}", token(&g))), "and the guest: {stderr}");
    assert!(!stderr.contains("eth1") && !stderr.contains("eth3"), "only eth2 failed: {stderr}");
    let links = g.links();
    assert!(
        !links.contains(&"eth1".to_string()) && !links.contains(&"eth3".to_string()),
        "{links:?}"
    );
    assert!(links.contains(&"eth2".to_string()), "{links:?}");
    let left: Vec<serde_json::Value> = records(&dir).into_iter().map(|(_, r)| r).collect();
    assert_eq!(left.len(), 1, "only eth2's record stays: {left:?}");
    assert_eq!(left[0]["guest_ifname"], "eth2");
    assert!(lan.host.links().contains(&eth2_host_end));
}
