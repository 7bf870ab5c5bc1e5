//! lanyard as the IPAM plugin of the reference CNI plugins (Debian's containernetworking-plugins
//! in /usr/lib/cni): `/usr/lib/cni/bridge` and `/usr/lib/cni/macvlan` run as a runtime runs
//! them, with `"ipam": {"type": "lanyard"}` and a CNI_PATH where they find lanyard, against a
//! DHCP server in a lab namespace, and beside the reference `dhcp` IPAM plugin when both daemons
//! are SIGKILLed. The reference plugins speak at most 1.0.0: 0.4.0 and 1.0.0
//! here; the commands they do not know (GC, STATUS) and the error paths run lanyard directly
//! with the same conf. LANs 225..=229.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{json, Value};
use support::cli::record_and_lease_files;
use support::cni::{cni_path_with_lanyard, Call};
use support::daemon::DaemonGuard;
use support::dhcp::{kea_lan, Dnsmasq, Kea, KeaConfig};
use support::lab::{wait_until, Lan, Netns, Server, TestDir};

/// The versions both lanyard and the reference plugins (1.1.1) speak.
const REFERENCE_VERSIONS: [&str; 2] = ["0.4.0", "1.0.0"];

/// dnsmasq's lease time is at least two minutes; T1 and T2 of a few seconds make the daemon
/// renew within the test.
const SHORT_TIMERS: [&str; 2] = ["--dhcp-option=option:T1,2", "--dhcp-option=option:T2,4"];

/// The IPv4 address of a result's `ips[0]`, without its prefix.
fn leased_ip(result: &Value) -> Ipv4Addr {
    let address = result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("{result}"));
    address.split('/').next().unwrap().parse().unwrap_or_else(|e| panic!("{address}: {e}"))
}

/// What one reference plugin run shows: `ADD` through `plugin` gives the container a lease
/// from dnsmasq on the interface the plugin made, the lanyard daemon renews it, CHECK passes,
/// DEL ends it and leaves no record, lease or link.
struct Attachment<'a> {
    /// The plugin calls IPAM DEL while the interface exists, so dnsmasq sees a RELEASE
    /// (macvlan). The reference bridge plugin (1.1.1) deletes the interface first: nothing can
    /// carry a RELEASE then, and the lease is dropped (no renewal follows) to expire at the
    /// server, as the reference dhcp plugin's would.
    releases: bool,
    plugin: &'a str,
    host: &'a Netns,
    dir: &'a TestDir,
    cni_path: &'a str,
    dnsmasq: &'a Dnsmasq,
    /// dnsmasq's interface, for its log lines.
    server_iface: &'a str,
    gateway: Ipv4Addr,
}

impl Attachment<'_> {
    /// With `ipam_del_first`, lanyard's DEL runs on its own before the plugin's DEL (as the
    /// plugin's DEL calls it): it must release the lease and leave the interface as it is.
    fn add_renew_check_del(&self, conf: &Value, id: &str, ipam_del_first: bool) {
        let version = conf["cniVersion"].as_str().unwrap().to_string();
        let g = Netns::new("pod");
        let guest_before = g.snapshot();
        let add =
            Call { args: Some("IgnoreUnknown=1;K8S_POD_NAME=web1"), ..Call::new("ADD", id, &g) };
        let run = |call: Call, conf: &Value| {
            call.run_program(self.plugin, self.cni_path, self.host, self.dir, conf)
        };
        let result = run(add, conf).result();
        assert_eq!(result["cniVersion"], version.as_str(), "{result}");
        let ip = leased_ip(&result);
        let ip_entry = &result["ips"][0];
        assert_eq!(ip_entry["gateway"], self.gateway.to_string(), "{result}");
        assert_eq!(ip_entry.get("version").is_some(), version == "0.4.0", "{result}");
        // The main plugin configured what lanyard returned.
        let address = ip_entry["address"].as_str().unwrap();
        assert!(g.addresses().iter().any(|a| a.contains(address)), "{:?}", g.addresses());
        let default = format!("default via {} dev eth0", self.gateway);
        assert!(g.routes().iter().any(|r| r.starts_with(&default)), "{:?}", g.routes());
        let lease = self.dnsmasq.wait_lease(ip, Duration::from_secs(2));
        assert_eq!(lease.hostname.as_deref(), Some("web1"), "{lease:?}");
        let link = g.ip_json(&["link", "show", "eth0"]);
        assert_eq!(lease.mac, link[0]["address"], "the lease is the main plugin's link's");

        // The daemon keeps the lease: a renewal (T1 = 2 s) reaches the server.
        let acked = format!("DHCPACK({}) {ip} ", self.server_iface);
        let acks_at_add = self.dnsmasq.log_text().matches(&acked).count();
        let renewed = wait_until(Duration::from_secs(8), || {
            self.dnsmasq.log_text().matches(&acked).count() > acks_at_add
        });
        assert!(renewed, "no renewal of {ip}:\n{}", self.dnsmasq.log_text());

        let mut with_result = conf.clone();
        with_result["prevResult"] = result;
        run(Call { command: "CHECK", ..add }, &with_result).silent();
        if ipam_del_first {
            let before = g.snapshot();
            Call { command: "DEL", ..add }.run(self.host, self.dir, &with_result).silent();
            self.dnsmasq.expect_release(self.server_iface, ip, Duration::from_secs(3));
            assert_eq!(g.snapshot(), before, "lanyard's DEL left the interface alone");
        }
        run(Call { command: "DEL", ..add }, &with_result).silent();
        if self.releases {
            self.dnsmasq.expect_release(self.server_iface, ip, Duration::from_secs(3));
        } else {
            // Past T1 again: no renewal of a dropped lease.
            let requested = format!("DHCPREQUEST({}) {ip} ", self.server_iface);
            let before = self.dnsmasq.log_text().matches(&requested).count();
            let renewed_after_del = wait_until(Duration::from_secs(4), || {
                self.dnsmasq.log_text().matches(&requested).count() > before
            });
            assert!(!renewed_after_del, "{ip} renewed after DEL:\n{}", self.dnsmasq.log_text());
        }
        assert!(
            record_and_lease_files(self.dir).is_empty(),
            "{:?}",
            record_and_lease_files(self.dir)
        );
        assert_eq!(g.snapshot(), guest_before, "{version}: the container as before");
        // DEL twice: success, nothing to do.
        run(Call { command: "DEL", ..add }, &with_result).silent();
    }
}

/// The reference `plugin` (with its own keys `plugin_keys`) and lanyard as its IPAM, in each
/// version, run in `host` on LAN `index`, whose dnsmasq serves from br0 in `server_ns`.
/// `ipam_del_first`: the version in which lanyard's DEL runs on its own before the plugin's.
struct ReferenceWorld<'a> {
    plugin: &'a str,
    plugin_keys: Value,
    host: &'a Netns,
    server_ns: &'a Netns,
    index: u8,
    gateway: Ipv4Addr,
    releases: bool,
    ipam_del_first: Option<&'a str>,
}

impl ReferenceWorld<'_> {
    fn each_version(&self) {
        let dir = TestDir::new(&format!("cni-ipam-{}", self.plugin));
        let _daemon = DaemonGuard::new(&dir);
        let pool = (format!("198.18.{}.100", self.index), format!("198.18.{}.200", self.index));
        let dnsmasq =
            Dnsmasq::start(self.server_ns, "br0", (&pool.0, &pool.1), "2m", &SHORT_TIMERS);
        let cni_path = cni_path_with_lanyard(&dir);
        let host_before = self.host.snapshot();
        let attachment = Attachment {
            plugin: &format!("/usr/lib/cni/{}", self.plugin),
            releases: self.releases,
            host: self.host,
            dir: &dir,
            cni_path: &cni_path,
            dnsmasq: &dnsmasq,
            server_iface: "br0",
            gateway: self.gateway,
        };
        for version in REFERENCE_VERSIONS {
            let mut conf = json!({
                "cniVersion": version, "name": "ipamtest", "type": self.plugin,
                "ipam": {"type": "lanyard"},
            });
            for (key, value) in self.plugin_keys.as_object().expect("keys") {
                conf[key] = value.clone();
            }
            let id = format!("{}-{version}", self.plugin);
            attachment.add_renew_check_del(&conf, &id, self.ipam_del_first == Some(version));
        }
        assert_eq!(self.host.snapshot(), host_before, "the host as before");
    }
}

#[test]
fn the_reference_bridge_plugin_gets_its_lease_from_lanyard() {
    let lan = Lan::bridge(225);
    ReferenceWorld {
        plugin: "bridge",
        plugin_keys: json!({"bridge": "br0"}),
        host: &lan.host,
        server_ns: &lan.host,
        index: 225,
        gateway: lan.gateway4,
        releases: false,
        ipam_del_first: None,
    }
    .each_version();
}

#[test]
fn the_reference_macvlan_plugin_gets_its_lease_from_lanyard() {
    let lan = Lan::with_uplink(226);
    ReferenceWorld {
        plugin: "macvlan",
        plugin_keys: json!({"master": "uplink0", "mode": "bridge"}),
        host: &lan.host,
        server_ns: &lan.lan,
        index: 226,
        gateway: lan.gateway4,
        releases: true,
        ipam_del_first: Some("1.0.0"),
    }
    .each_version();
}

#[test]
fn lanyard_as_ipam_answers_del_check_gc_status_and_refusals_per_the_spec() {
    let lan = Lan::bridge(227);
    let dir = TestDir::new("cni-ipam-direct");
    let _daemon = DaemonGuard::new(&dir);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.227.100", "198.18.227.200"), "2m", &[]);
    let cni_path = cni_path_with_lanyard(&dir);
    let conf = |version: &str| {
        json!({
            "cniVersion": version, "name": "ipamtest", "type": "bridge", "bridge": "br0",
            "ipam": {"type": "lanyard"},
        })
    };
    let (v10, v11) = (conf("1.0.0"), conf("1.1.0"));
    let bridge = |call: Call, conf: &Value| {
        call.run_program("/usr/lib/cni/bridge", &cni_path, &lan.host, &dir, conf)
    };
    let lanyard = |call: Call, conf: &Value| call.run(&lan.host, &dir, conf);
    let host_before = lan.host.snapshot();

    // STATUS (1.1.0, which a runtime passes on to the IPAM plugin): the daemon answers.
    lanyard(Call::bare("STATUS"), &v11).silent();

    let (a, b) = (lan.guest("a"), lan.guest("b"));
    let (add_a, add_b) = (Call::new("ADD", "pod-a", &a), Call::new("ADD", "pod-b", &b));
    let result_a = bridge(add_a, &v10).result();
    let result_b = bridge(add_b, &v10).result();
    let (ip_a, ip_b) = (leased_ip(&result_a), leased_ip(&result_b));
    assert_ne!(ip_a, ip_b);

    // ADD twice: 100, the first lease kept.
    lanyard(add_a, &v10).error(100, "1.0.0");
    assert!(dnsmasq.leases().iter().any(|l| l.ip == ip_a));

    // CHECK of a container lanyard holds no lease for: 3. ADD where the main plugin made no
    // interface: 4, nothing recorded.
    let c = lan.guest("c");
    lanyard(Call::new("CHECK", "pod-c", &c), &v10).error(3, "1.0.0");
    let details = lanyard(Call::new("ADD", "pod-c", &c), &v10).error(4, "1.0.0");
    assert!(details.contains("CNI_IFNAME=eth0"), "{details}");

    // IPAM DEL releases the lease and leaves the main plugin's interface as it configured it
    // (address, routes): the main plugin removes it on its own DEL.
    let a_before = a.snapshot();
    let mut del_a = v10.clone();
    del_a["prevResult"] = result_a;
    lanyard(Call { command: "DEL", ..add_a }, &del_a).silent();
    dnsmasq.expect_release("br0", ip_a, Duration::from_secs(3));
    assert_eq!(a.snapshot(), a_before, "lanyard's DEL left the interface alone");
    bridge(Call { command: "DEL", ..add_a }, &del_a).silent();

    // GC with a list that leaves b out: its lease released, its interface left alone.
    let b_before = b.snapshot();
    let mut gc = v11.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "pod-other", "ifname": "eth0"}]);
    lanyard(Call::bare("GC"), &gc).silent();
    dnsmasq.expect_release("br0", ip_b, Duration::from_secs(3));
    assert_eq!(b.snapshot(), b_before, "GC left the interface alone");
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    let mut del_b = v10.clone();
    del_b["prevResult"] = result_b;
    bridge(Call { command: "DEL", ..add_b }, &del_b).silent();

    // Refusals: a key under "ipam" lanyard does not read (the dhcp plugin's socket, a static
    // plugin's range) is 2 with the key and its value; a wrong value is 7. Through the bridge
    // plugin the runtime sees lanyard's error, and nothing is left after its DEL.
    let c_before = c.snapshot();
    let mut unknown = v10.clone();
    unknown["ipam"]["daemonSocketPath"] = json!("/run/cni/dhcp.sock");
    let details = lanyard(Call::new("ADD", "pod-c", &c), &unknown).error(2, "1.0.0");
    assert!(details.contains("daemonSocketPath") && details.contains("dhcp.sock"), "{details}");
    let mut ranges = v10.clone();
    ranges["ipam"]["ranges"] = json!([[{"subnet": "198.18.227.0/24"}]]);
    let details = lanyard(Call::new("ADD", "pod-c", &c), &ranges).error(2, "1.0.0");
    assert!(details.contains("host-local"), "{details}");
    let mut wrong = v10.clone();
    wrong["ipam"]["dhcpTimeout"] = json!("ten");
    lanyard(Call::new("ADD", "pod-c", &c), &wrong).error(7, "1.0.0");
    let refused = bridge(Call::new("ADD", "pod-c", &c), &unknown);
    assert_ne!(refused.code, 0, "{refused}");
    assert!(refused.stdout.contains("daemonSocketPath"), "{refused}");
    // The bridge plugin leaves its interface to the DEL a runtime sends after a failed ADD.
    bridge(Call { command: "DEL", ..Call::new("ADD", "pod-c", &c) }, &v10).silent();
    assert_eq!(c.snapshot(), c_before);
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before, "the host as before");
}

/// The reference `dhcp` IPAM plugin's daemon on a private socket, in the namespace the
/// runtime runs plugins in (it enters each container's namespace itself).
fn reference_dhcp_daemon(host: &Netns, socket: &std::path::Path) -> Server {
    // A killed daemon leaves its socket file behind; the new one binds it afresh, as a
    // restarted service would.
    let _ = std::fs::remove_file(socket);
    let socket_text = socket.to_str().expect("utf-8 path");
    let mut server =
        Server::start(host, &["/usr/lib/cni/dhcp", "daemon", "-socketpath", socket_text]);
    let listening = wait_until(Duration::from_secs(5), || socket.exists() || !server.is_running());
    assert!(
        listening && socket.exists(),
        "the reference dhcp daemon did not listen: {}",
        server.log()
    );
    server
}

#[test]
fn leases_outlive_a_sigkilled_lanyard_daemon_and_not_a_sigkilled_reference_dhcp_daemon() {
    let (lan, _neighbour) = kea_lan(228);
    // Leases of 4 s, renewed after 1 s, rebinding after 3 s.
    const VALID: u64 = 4;
    let kea = Kea::start(&lan.host, "br0", KeaConfig::timed(228, VALID as u32, 1, 3));
    let dir = TestDir::new("cni-ipam-sigkill");
    let daemon = DaemonGuard::new(&dir);
    let cni_path = cni_path_with_lanyard(&dir);
    let socket = dir.join("reference-dhcp.sock");
    let mut reference = reference_dhcp_daemon(&lan.host, &socket);
    // The same main plugin on the same LAN; only the IPAM plugin differs.
    let conf = |name: &str, ipam: Value| json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": "br0", "ipam": ipam});
    let lanyard_conf = conf("lanyardnet", json!({"type": "lanyard"}));
    let reference_conf =
        conf("dhcpnet", json!({"type": "dhcp", "daemonSocketPath": socket.to_str().unwrap()}));
    let bridge = |call: Call, conf: &Value| {
        call.run_program("/usr/lib/cni/bridge", &cni_path, &lan.host, &dir, conf)
    };
    let (ly, rf) = (lan.guest("lanyard"), lan.guest("reference"));
    let (add_ly, add_rf) = (Call::new("ADD", "pod-ly", &ly), Call::new("ADD", "pod-rf", &rf));
    let result_ly = bridge(add_ly, &lanyard_conf).result();
    let result_rf = bridge(add_rf, &reference_conf).result();
    let (ip_ly, ip_rf) = (leased_ip(&result_ly), leased_ip(&result_rf));
    // Both renew while their daemons live.
    let renewing = wait_until(Duration::from_secs(3 * VALID), || {
        kea.renewals_of(ip_ly) >= 2 && kea.renewals_of(ip_rf) >= 2
    });
    assert!(
        renewing,
        "renewals before the kill: lanyard {} reference {}\n{}",
        kea.renewals_of(ip_ly),
        kea.renewals_of(ip_rf),
        reference.log()
    );

    // Both daemons SIGKILLed and started again (lanyard's by STATUS, as a runtime's STATUS
    // would; the reference one as its service would be).
    assert!(daemon.kill(libc::SIGKILL));
    reference.signal(libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || !reference.is_running()));
    let killed_at = std::time::SystemTime::now();
    let ly_before = kea.renewals_of(ip_ly);
    let mut status_conf = lanyard_conf.clone();
    status_conf["cniVersion"] = json!("1.1.0");
    Call::bare("STATUS").run(&lan.host, &dir, &status_conf).silent();
    let _reference = reference_dhcp_daemon(&lan.host, &socket);

    // Two lifetimes on: lanyard's lease renewed again and again; the reference plugin's not
    // once, so Kea's lease of it has expired while the container still uses the address.
    let started = std::time::Instant::now();
    let two_lifetimes = wait_until(Duration::from_secs(2 * VALID + 10), || {
        started.elapsed() >= Duration::from_secs(2 * VALID)
            && kea.renewals_of(ip_ly) >= ly_before + 4
    });
    assert!(
        two_lifetimes,
        "lanyard's renewals after the kill: {}",
        kea.renewals_of(ip_ly) - ly_before
    );
    // A grant Kea records later than the kill (a renewal in flight then is granted at once)
    // would end after killed + VALID: none does, and the last one has ended.
    let killed = killed_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let granted_after_kill: Vec<_> = kea
        .lease_lines()
        .into_iter()
        .filter(|l| l.address == ip_rf && l.valid_lifetime > 0 && l.expire > killed + VALID)
        .collect();
    assert!(
        granted_after_kill.is_empty(),
        "the reference lease was renewed: {granted_after_kill:?}"
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let last_rf = kea.lease_lines().into_iter().rfind(|l| l.address == ip_rf).unwrap();
    assert!(last_rf.expire < now, "Kea's lease of {ip_rf} expired: {last_rf:?}");
    let rf_address = result_rf["ips"][0]["address"].as_str().unwrap();
    assert!(rf.addresses().iter().any(|a| a.contains(rf_address)), "{:?}", rf.addresses());
    let ly_address = result_ly["ips"][0]["address"].as_str().unwrap();
    assert!(ly.addresses().iter().any(|a| a.contains(ly_address)), "{:?}", ly.addresses());

    for (add, conf, result) in
        [(add_ly, &lanyard_conf, result_ly), (add_rf, &reference_conf, result_rf)]
    {
        let mut del = conf.clone();
        del["prevResult"] = result;
        bridge(Call { command: "DEL", ..add }, &del).silent();
    }
    // A daemon SIGKILLed while it wrote a lease file leaves that write's hidden temporary file
    // (`.tmp-PID-N-NAME`), which every scan skips: only the records and leases count here.
    let left: Vec<String> = record_and_lease_files(&dir)
        .into_iter()
        .filter(|file| !file.rsplit('/').next().is_some_and(|name| name.starts_with(".tmp-")))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_add_replaces_the_lease_of_a_container_that_went_without_del() {
    let lan = Lan::bridge(229);
    let dir = TestDir::new("cni-ipam-stale");
    let _daemon = DaemonGuard::new(&dir);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.229.100", "198.18.229.200"), "2m", &[]);
    let cni_path = cni_path_with_lanyard(&dir);
    let conf = json!({
        "cniVersion": "1.0.0", "name": "ipamtest", "type": "bridge", "bridge": "br0",
        "ipam": {"type": "lanyard"},
    });
    let bridge = |call: Call, conf: &Value| {
        call.run_program("/usr/lib/cni/bridge", &cni_path, &lan.host, &dir, conf)
    };
    let first = lan.guest("first");
    bridge(Call::new("ADD", "pod-x", &first), &conf).result();
    // The namespace goes away without a DEL (a runtime that crashed), and the same container
    // id is added again in a new one: the stale record is replaced, not a conflict.
    drop(first);
    let second = lan.guest("second");
    let add = Call::new("ADD", "pod-x", &second);
    let result = bridge(add, &conf).result();
    let ip = leased_ip(&result);
    dnsmasq.wait_lease(ip, Duration::from_secs(2));
    let address = result["ips"][0]["address"].as_str().unwrap();
    assert!(second.addresses().iter().any(|a| a.contains(address)), "{:?}", second.addresses());
    let files = record_and_lease_files(&dir);
    assert_eq!(files.len(), 2, "one record and its lease: {files:?}");
    let mut del = conf.clone();
    del["prevResult"] = result;
    bridge(Call { command: "DEL", ..add }, &del).silent();
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
}
