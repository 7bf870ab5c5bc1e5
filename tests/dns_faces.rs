//! lanyard's own DNS updates (config `[dns_update]`) for the attachments lanyard makes as a CNI
//! plugin: the main plugin with static addresses and with DHCP, and lanyard as the IPAM plugin
//! of Debian's reference `bridge` plugin. Each plugin is run as a runtime runs it (tests/cni.rs),
//! inside a lab "host" namespace where the daemon runs with the config and BIND 9 (`named`)
//! serves the zones on the LAN's gateway address. LANs 230..=232.

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use support::bind::{Bind, TsigKeyFile};
use support::cli;
use support::cni::{cni_path_with_lanyard, Call};
use support::daemon::DaemonGuard;
use support::dhcp::Dnsmasq;
use support::docker::DockerLab;
use support::lab::{self, wait_until, Lan, TestDir};
use support::plugin::{create_dhcp_network, create_network, docker_ok, plugin_name, PluginDaemon};

const ZONE: &str = "app.lan";
/// How long a name may take to appear or go (the daemon answers a hand-over at once and sends
/// the update from its own thread; tests/dns.rs measures it under 200 ms).
const DNS_WAIT: Duration = Duration::from_secs(3);

/// A bridge LAN whose host namespace runs named for `app.lan` and the LAN's reverse zone.
struct DnsLan {
    lan: Lan,
    dir: TestDir,
    bind: Bind,
    config: PathBuf,
    /// The config's `[dns_update]` table.
    dns_update: String,
}

impl DnsLan {
    fn new(index: u8, tag: &str) -> DnsLan {
        lab::require_root();
        let lan = Lan::bridge(index);
        let dir = TestDir::new(tag);
        let key = TsigKeyFile::generate(&dir, "ddns.key", "ddns");
        let reverse_zone = format!("{index}.18.198.in-addr.arpa");
        let bind = Bind::start(&lan.host, &dir, lan.gateway4, &[ZONE, &reverse_zone], Some(&key));
        let dns_update = format!(
            "[dns_update]\nserver = \"{}:53\"\nzone = \"{ZONE}\"\ntsig_key_file = \"{}\"\n\
             reverse = true\n",
            lan.gateway4,
            key.path.display()
        );
        let config = dir.join("lanyard.toml");
        std::fs::write(&config, &dns_update).expect("write the config");
        DnsLan { lan, dir, bind, config, dns_update }
    }

    /// The daemon of the test's state directory with the config, as a node runs it as a
    /// service; its output goes to `daemon.out` in the test's directory.
    fn start_daemon(&self) -> Daemon {
        self.start_daemon_with(&self.config)
    }

    fn start_daemon_with(&self, config: &std::path::Path) -> Daemon {
        let guard = DaemonGuard::new(&self.dir);
        let out = std::fs::File::create(self.dir.join("daemon.out")).expect("daemon.out");
        let err = out.try_clone().expect("daemon.out");
        let config = config.to_str().expect("utf-8 path");
        let child = cli::command(&self.lan.host, &self.dir, &["--config", config, "daemon"])
            .stdout(out)
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start the daemon");
        let daemon = Daemon { guard, child };
        assert!(
            wait_until(Duration::from_secs(5), || daemon.guard.pid().is_some()),
            "the daemon never answered: {}",
            self.daemon_output()
        );
        daemon
    }

    /// What the daemon logged: `daemon.out` ([`DnsLan::start_daemon`]) or `daemon.log`
    /// ([`PluginDaemon`]).
    fn daemon_output(&self) -> String {
        ["daemon.out", "daemon.log"]
            .iter()
            .filter_map(|file| std::fs::read_to_string(self.dir.join(file)).ok())
            .collect()
    }

    fn a(&self, label: &str) -> Vec<String> {
        self.bind.query_udp(&self.lan.host, &format!("{label}.{ZONE}"), RecordType::A)
    }

    fn ptr(&self, address: Ipv4Addr) -> Vec<String> {
        let [a, b, c, d] = address.octets();
        let name = format!("{d}.{c}.{b}.{a}.in-addr.arpa");
        self.bind.query_udp(&self.lan.host, &name, RecordType::PTR)
    }

    /// `label` answers with `address` (A and PTR) within [`DNS_WAIT`], else the test fails with
    /// what named and the daemon said.
    fn expect_registered(&self, label: &str, address: Ipv4Addr) {
        let registered = wait_until(DNS_WAIT, || {
            self.a(label) == [address.to_string()]
                && self.ptr(address) == [format!("{label}.{ZONE}.")]
        });
        assert!(
            registered,
            "{label}.{ZONE} -> {address} never answered: A {:?} PTR {:?}\n--- daemon:\n{}",
            self.a(label),
            self.ptr(address),
            self.daemon_output()
        );
    }

    fn expect_gone(&self, label: &str, address: Ipv4Addr) {
        let gone =
            wait_until(DNS_WAIT, || self.a(label).is_empty() && self.ptr(address).is_empty());
        assert!(
            gone,
            "{label}.{ZONE} outlived its attachment: A {:?} PTR {:?}\n--- daemon:\n{}",
            self.a(label),
            self.ptr(address),
            self.daemon_output()
        );
    }
}

/// A daemon this test started: stopped (bounded, by its guard) and reaped at the end.
struct Daemon {
    guard: DaemonGuard,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.child.kill();
        } else {
            self.guard.kill(libc::SIGTERM);
        }
        // Dead by now (the guard waited for it): this only reaps it.
        let _ = self.child.wait();
    }
}

/// The IPv4 address of a result's `ips[0]`, without its prefix.
fn result_ip(result: &Value) -> Ipv4Addr {
    let address = result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("{result}"));
    address.split('/').next().unwrap().parse().unwrap_or_else(|e| panic!("{address}: {e}"))
}

#[test]
fn a_static_cni_add_registers_the_pod_or_container_name_with_the_daemon_and_del_removes_it() {
    let world = DnsLan::new(230, "dns-cni-static");
    let conf = |octet: u8| {
        json!({
            "cniVersion": "1.0.0", "name": "lantest", "type": "lanyard", "hostInterface": "br0",
            "addresses": [format!("{}/24", world.lan.addr4(octet))],
            "gateway": world.lan.gateway4.to_string(),
        })
    };

    // No daemon runs: the plugin reads no config, so nothing registers, no daemon is started
    // for it and the ADD says nothing.
    let early = world.lan.guest("early");
    let early_add = Call {
        args: Some("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=early"),
        ..Call::new("ADD", "early0123456789", &early)
    };
    let run = early_add.run(&world.lan.host, &world.dir, &conf(9));
    run.result();
    assert_eq!(run.stderr.trim(), "", "{run}");
    assert!(DaemonGuard::new(&world.dir).pid().is_none(), "a static ADD started a daemon");
    Call { command: "DEL", ..early_add }.run(&world.lan.host, &world.dir, &conf(9)).silent();
    // A daemon runs without [dns_update] (a node without names): the ADD says nothing either.
    let plain_config = world.dir.join("plain.toml");
    std::fs::write(&plain_config, "").expect("write the config");
    let plain_daemon = world.start_daemon_with(&plain_config);
    let run = early_add.run(&world.lan.host, &world.dir, &conf(9));
    run.result();
    assert_eq!(run.stderr.trim(), "", "{run}");
    Call { command: "DEL", ..early_add }.run(&world.lan.host, &world.dir, &conf(9)).silent();
    drop(plain_daemon);

    let _daemon = world.start_daemon();
    // A pod: its name, made a valid label (lower case, `_` to `-`).
    let pod = world.lan.guest("pod");
    let pod_add = Call {
        args: Some("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=Web_0"),
        ..Call::new("ADD", "podc0ffee0123456789", &pod)
    };
    let run = pod_add.run(&world.lan.host, &world.dir, &conf(10));
    assert_eq!(result_ip(&run.result()), world.lan.addr4(10));
    assert_eq!(run.stderr.trim(), "", "no warning: {run}");
    world.expect_registered("web-0", world.lan.addr4(10));
    // A container without a pod name: its short container id.
    let plain = world.lan.guest("plain");
    let plain_add = Call::new("ADD", "deadbeef0123456789", &plain);
    plain_add.run(&world.lan.host, &world.dir, &conf(11)).result();
    world.expect_registered("deadbeef0123", world.lan.addr4(11));

    Call { command: "DEL", ..pod_add }.run(&world.lan.host, &world.dir, &conf(10)).silent();
    world.expect_gone("web-0", world.lan.addr4(10));
    assert_eq!(world.a("deadbeef0123"), [world.lan.addr4(11).to_string()], "the other stays");
    Call { command: "DEL", ..plain_add }.run(&world.lan.host, &world.dir, &conf(11)).silent();
    world.expect_gone("deadbeef0123", world.lan.addr4(11));
}

#[test]
fn a_dhcp_cni_add_registers_the_pod_name_at_lease_bind_and_del_removes_it() {
    let world = DnsLan::new(231, "dns-cni-dhcp");
    let _dnsmasq =
        Dnsmasq::start(&world.lan.host, "br0", ("198.18.231.100", "198.18.231.200"), "2m", &[]);
    let _daemon = world.start_daemon();
    let conf = json!({
        "cniVersion": "1.0.0", "name": "lantest", "type": "lanyard",
        "hostInterface": "br0", "addressing": "dhcp",
    });
    let pod = world.lan.guest("pod");
    let add = Call {
        args: Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cache"),
        ..Call::new("ADD", "dhcpc0ffee0123456789", &pod)
    };
    let ip = result_ip(&add.run(&world.lan.host, &world.dir, &conf).result());
    world.expect_registered("cache", ip);
    Call { command: "DEL", ..add }.run(&world.lan.host, &world.dir, &conf).silent();
    world.expect_gone("cache", ip);
}

#[test]
fn lanyard_as_ipam_of_the_reference_bridge_plugin_registers_the_pod_name_and_del_removes_it() {
    let world = DnsLan::new(232, "dns-cni-ipam");
    let _dnsmasq =
        Dnsmasq::start(&world.lan.host, "br0", ("198.18.232.100", "198.18.232.200"), "2m", &[]);
    let _daemon = world.start_daemon();
    let cni_path = cni_path_with_lanyard(&world.dir);
    let conf = json!({
        "cniVersion": "1.0.0", "name": "ipamtest", "type": "bridge", "bridge": "br0",
        "ipam": {"type": "lanyard"},
    });
    let bridge = |call: Call| {
        call.run_program("/usr/lib/cni/bridge", &cni_path, &world.lan.host, &world.dir, &conf)
    };
    let pod = world.lan.guest("pod");
    let add = Call {
        args: Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=queue"),
        ..Call::new("ADD", "ipamc0ffee0123456789", &pod)
    };
    let ip = result_ip(&bridge(add).result());
    world.expect_registered("queue", ip);
    // The bridge plugin deletes the interface, then calls lanyard's DEL: the lease is dropped
    // (no RELEASE can go out), and its name with it.
    bridge(Call { command: "DEL", ..add }).silent();
    world.expect_gone("queue", ip);
}

#[test]
fn docker_networks_register_containers_by_name_static_while_running_dhcp_while_leased() {
    let world = DnsLan::new(233, "dns-docker");
    let _dnsmasq =
        Dnsmasq::start(&world.lan.host, "br0", ("198.18.233.100", "198.18.233.200"), "2m", &[]);
    let name = plugin_name("dns");
    let config = format!("docker_plugin = \"{name}\"\n{}", world.dns_update);
    // Declared before the lab, so dropped after it: dockerd removes its containers (and their
    // endpoints, through the plugin) when the lab goes.
    let mut daemon: Option<PluginDaemon>;
    let lab = DockerLab::start_in_netns(&world.lan.host.path, "198.19.233.1/24");
    let start_daemon = || {
        let socket = lanyard::plugin::socket_path(&name);
        PluginDaemon::start_with(&world.lan.host, &world.dir, &config, socket, Some(lab.env()))
    };
    daemon = Some(start_daemon());
    let docker = |args: &[&str]| docker_ok(&lab, &world.dir, args);
    let subnet = "--subnet=198.18.233.0/24";
    create_network(&lab, &world.dir, &name, "br0", &[subnet], "lan");
    let (web, api) = (world.lan.addr4(50), world.lan.addr4(51));
    // The template's `{container}`: the container's name, made a valid label.
    lab.run("Web_1", &["--net", "lan", "--ip", &web.to_string()]);
    world.expect_registered("web-1", web);
    // The container's `lanyard.dns` label replaces the template.
    let label = "lanyard.dns=svc-{container}";
    lab.run("api", &["--net", "lan", "--ip", &api.to_string(), "--label", label]);
    world.expect_registered("svc-api", api);

    // The daemon SIGKILLed and started again: the names stay (an endpoint's record is alive as
    // long as it exists), and the Docker watcher's reconcile confirms them.
    let reconciles = || world.daemon_output().matches("reconcile: ").count();
    let before = reconciles();
    let mut crashed = daemon.take().expect("the daemon");
    crashed.crash();
    // Dropped before the next one starts: it removes the socket path they share.
    drop(crashed);
    daemon = Some(start_daemon());
    let reconciled = wait_until(Duration::from_secs(10), || reconciles() > before);
    assert!(reconciled, "no reconcile after the restart:\n{}", world.daemon_output());
    let status_args = ["--config", world.config.to_str().unwrap(), "status", "--json"];
    let settled = wait_until(DNS_WAIT, || {
        let out = cli::run(&world.lan.host, &world.dir, &status_args);
        let status: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        status["Daemon"]["Dns"]["Pending"] == 0
    });
    assert!(settled, "DNS updates still pending:\n{}", world.daemon_output());
    world.expect_registered("web-1", web);
    world.expect_registered("svc-api", api);
    let log = world.daemon_output();
    assert!(
        !log.contains("removing web-1."),
        "a restart removed a running container's name:\n{log}"
    );

    // Stopped: Docker deletes the endpoint, and the name goes; started again, it is back.
    docker(&["stop", "-t", "1", "Web_1"]);
    world.expect_gone("web-1", web);
    docker(&["start", "Web_1"]);
    world.expect_registered("web-1", web);
    docker(&["rm", "-f", "Web_1"]);
    world.expect_gone("web-1", web);
    assert_eq!(world.a("svc-api"), [api.to_string()], "the other container's name stays");
    docker(&["rm", "-f", "api"]);
    world.expect_gone("svc-api", api);
    docker(&["network", "rm", "lan"]);

    // A DHCP network: the lease is taken before Docker says whose it is, and carries the
    // container's name once the watcher saw it start; never a name made of the MAC.
    create_dhcp_network(&lab, &world.dir, &name, "br0", "dhcpnet");
    let mac = "02:00:c6:12:e9:07";
    // Debian's CLI (API 1.41, as the lab's dockerd): a newer one sends the MAC per network.
    let image = lab.import_busybox();
    let run = ["run", "-d", "--stop-timeout", "1", "--name", "cache", "--net", "dhcpnet"];
    docker(&[&run[..], &["--mac-address", mac, &image, "sleep", "3600"]].concat());
    let format = "{{(index .NetworkSettings.Networks \"dhcpnet\").IPAddress}}";
    let leased: Ipv4Addr = docker(&["inspect", "-f", format, "cache"]).parse().expect("leased");
    world.expect_registered("cache", leased);
    let log = world.daemon_output();
    assert!(!log.contains(&format!("0200c612e907.{ZONE}")), "a name made of the MAC:\n{log}");
    // Stopped and started again: the same lease (the same MAC), the same name.
    docker(&["stop", "-t", "1", "cache"]);
    docker(&["start", "cache"]);
    assert_eq!(docker(&["inspect", "-f", format, "cache"]), leased.to_string());
    world.expect_registered("cache", leased);
    // Removed for good: the lease is released, and the name goes with it.
    docker(&["rm", "-f", "cache"]);
    world.expect_gone("cache", leased);
    docker(&["network", "rm", "dhcpnet"]);
    // The lab first: its dockerd still talks to the plugin while it stops.
    drop(lab);
    drop(daemon);
}
