//! The daemon wires containers by itself: a private dockerd, containers that declare their LAN
//! with labels, and the daemon following Docker's events and reconciling after every restart
//! (the container's, the daemon's, dockerd's).

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::cli::ok;
use support::docker::DockerLab;
use support::lab::{self, wait_until, Lan, Netns, TestDir};
use support::watcher::{daemon_log, ipv4_of, ports_of, write_config, WatchingDaemon};

const WIRED_WITHIN: Duration = Duration::from_secs(15);

/// A LAN on br0 (198.18.INDEX.0/24) with dnsmasq (no ping) leasing .100 to .200, a test
/// directory and a private dockerd.
fn lab_with_dhcp(index: u8, tag: &str) -> (Lan, TestDir, DockerLab, support::dhcp::Dnsmasq) {
    let lan = Lan::bridge(index);
    let dir = TestDir::new(tag);
    let docker = DockerLab::start();
    let range = (format!("198.18.{index}.100"), format!("198.18.{index}.200"));
    let dnsmasq =
        support::dhcp::Dnsmasq::start(&lan.host, "br0", (&range.0, &range.1), "2m", &["--no-ping"]);
    (lan, dir, docker, dnsmasq)
}

/// `cidr` (a wired address) is one of the lab's dnsmasq pool of LAN `index` (.100 to .200).
fn in_pool(cidr: &str, index: u8) -> bool {
    let Some((address, "24")) = cidr.split_once('/') else { return false };
    let Ok(address) = address.parse::<std::net::Ipv4Addr>() else { return false };
    let [a, b, c, d] = address.octets();
    [a, b, c] == [198, 18, index] && (100..=200).contains(&d)
}

fn mac_of(docker: &DockerLab, container: &str, ifname: &str) -> String {
    let path = format!("/sys/class/net/{ifname}/address");
    docker.docker_ok(&["exec", container, "cat", &path]).trim().to_string()
}

/// Waits until the container has an IPv4 address on `ifname`; returns it.
fn wait_wired(docker: &DockerLab, dir: &TestDir, container: &str, ifname: &str) -> String {
    let mut found = None;
    wait_until(WIRED_WITHIN, || {
        found = ipv4_of(docker, container, ifname);
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!("{container} got no address on {ifname}; daemon log:\n{}", daemon_log(dir))
    })
}

fn status_json(ns: &Netns, dir: &TestDir, config: &Path) -> serde_json::Value {
    let out =
        ok(support::cli::run(ns, dir, &["--config", config.to_str().unwrap(), "status", "--json"]));
    serde_json::from_str(&out).expect("status --json is JSON")
}

fn record_files(dir: &TestDir) -> Vec<String> {
    support::cli::record_and_lease_files(dir)
}

#[test]
fn labelled_containers_are_wired_rewired_after_a_restart_and_cleaned_when_removed() {
    lab::require_root();
    let (lan, dir, docker, _dnsmasq) = lab_with_dhcp(100, "watch");
    let host_before = lan.host.snapshot();
    let config = write_config(&dir, "allowed_host_interfaces = [\"br0\"]\n");
    let daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);

    docker
        .run("web", &["--net", "none", "--label", "lanyard.net=br0 198.18.100.10/24@198.18.100.1"]);
    docker.run("leased", &["--net", "none", "--label", "lanyard.net.lan=br0 dhcp -i lan0"]);
    assert_eq!(wait_wired(&docker, &dir, "web", "eth1"), "198.18.100.10/24");
    docker.docker_ok(&["exec", "web", "ping", "-c", "1", "-W", "2", "198.18.100.1"]);
    let leased = wait_wired(&docker, &dir, "leased", "lan0");
    assert!(leased.starts_with("198.18.100."), "{leased}");
    let (web_mac, leased_mac) = (mac_of(&docker, "web", "eth1"), mac_of(&docker, "leased", "lan0"));

    // A container without declarations is left alone; a refused declaration is reported and
    // touches nothing.
    docker.run("plain", &["--net", "none"]);
    docker.run("denied", &["--net", "none", "--label", "lanyard.net=br9 198.18.100.12/24"]);
    let refused = wait_until(WIRED_WITHIN, || {
        let status = status_json(&lan.host, &dir, &config);
        status["Daemon"]["Docker"]["containers"]
            .as_object()
            .is_some_and(|c| c.values().any(|c| c["interfaces"][0]["state"] == "refused"))
    });
    assert!(refused, "the refusal shows in lanyard status; log:\n{}", daemon_log(&dir));
    let status = status_json(&lan.host, &dir, &config);
    let docker_status = &status["Daemon"]["Docker"];
    assert_eq!(docker_status["connected"], true, "{docker_status}");
    let denied = docker_status["containers"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["name"] == "denied")
        .expect("the refused container is listed");
    let reason = denied["interfaces"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("br9") && reason.contains("allowed_host_interfaces"), "{reason}");
    assert!(ipv4_of(&docker, "denied", "eth1").is_none());
    assert!(ipv4_of(&docker, "plain", "eth1").is_none());
    let human =
        ok(support::cli::run(&lan.host, &dir, &["--config", config.to_str().unwrap(), "status"]));
    assert!(human.contains("docker: connected") && human.contains("refused"), "{human}");

    // Restarts: same MAC, same address, for the static and the leased one.
    docker.docker_ok(&["restart", "-t", "0", "web", "leased"]);
    let rewired = wait_until(WIRED_WITHIN, || {
        ipv4_of(&docker, "web", "eth1").is_some() && ipv4_of(&docker, "leased", "lan0").is_some()
    });
    assert!(rewired, "rewired after docker restart; log:\n{}", daemon_log(&dir));
    assert_eq!(mac_of(&docker, "web", "eth1"), web_mac);
    assert_eq!(mac_of(&docker, "leased", "lan0"), leased_mac);
    assert_eq!(ipv4_of(&docker, "leased", "lan0").unwrap(), leased);

    // A config reload that allows br9 lets the refused declaration through.
    // The reload reconciles everything: what is wired stays exactly as it is (the same links,
    // same ifindexes), so a second reconcile changes nothing.
    let ports_before = lan.host.ip(&["-o", "link", "show", "master", "br0"]);
    let reconciles = |status: serde_json::Value| status["Daemon"]["Docker"]["reconciles"].as_u64();
    let before = reconciles(status_json(&lan.host, &dir, &config)).unwrap();
    write_config(&dir, "allowed_host_interfaces = [\"br0\", \"br9\"]\n");
    daemon.signal(libc::SIGHUP);
    assert_eq!(wait_wired(&docker, &dir, "denied", "eth1"), "198.18.100.12/24");
    let reconciled = wait_until(WIRED_WITHIN, || {
        reconciles(status_json(&lan.host, &dir, &config)) == Some(before + 1)
    });
    assert!(reconciled, "the reload reconciled once");
    assert_eq!(lan.host.ip(&["-o", "link", "show", "master", "br0"]), ports_before);

    // Removed: nothing left on the host, no record, no lease.
    docker.docker_ok(&["rm", "-f", "web", "leased", "denied", "plain"]);
    let clean = wait_until(WIRED_WITHIN, || {
        record_files(&dir).is_empty() && lan.host.snapshot() == host_before
    });
    assert!(
        clean,
        "records left: {:?}; host now {:?}, before {:?}; log:\n{}",
        record_files(&dir),
        lan.host.snapshot(),
        host_before,
        daemon_log(&dir)
    );
}

#[test]
fn a_daemon_killed_while_containers_change_finds_everything_at_its_next_start() {
    lab::require_root();
    let (lan, dir, docker, _dnsmasq) = lab_with_dhcp(101, "watch-kill");
    let config = write_config(&dir, "allowed_host_interfaces = [\"br0\"]\n");
    let daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);
    docker.run("stays", &["--net", "none", "--label", "lanyard.net=br0 198.18.101.20/24"]);
    docker.run("restarted", &["--net", "none", "--label", "lanyard.net=br0 dhcp"]);
    docker.run("removed", &["--net", "none", "--label", "lanyard.net=br0 198.18.101.22/24"]);
    wait_wired(&docker, &dir, "stays", "eth1");
    let leased = wait_wired(&docker, &dir, "restarted", "eth1");
    wait_wired(&docker, &dir, "removed", "eth1");
    assert_eq!(ports_of(&lan.host, "br0"), 3);

    daemon.kill();
    docker.docker_ok(&["rm", "-f", "removed"]);
    docker.docker_ok(&["restart", "-t", "0", "restarted"]);
    docker.run("new", &["--net", "none", "--label", "lanyard.net=br0 198.18.101.23/24"]);
    // Nothing wires them while no daemon runs.
    assert!(ipv4_of(&docker, "new", "eth1").is_none());

    let _daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);
    assert_eq!(wait_wired(&docker, &dir, "new", "eth1"), "198.18.101.23/24");
    assert_eq!(wait_wired(&docker, &dir, "restarted", "eth1"), leased, "same address");
    assert_eq!(ipv4_of(&docker, "stays", "eth1").as_deref(), Some("198.18.101.20/24"));
    let collected = wait_until(WIRED_WITHIN, || {
        ports_of(&lan.host, "br0") == 3 && record_files(&dir).iter().all(|f| !f.contains("removed"))
    });
    assert!(
        collected,
        "one port per wired container ({}), no record of the removed one: {:?}; log:\n{}",
        ports_of(&lan.host, "br0"),
        record_files(&dir),
        daemon_log(&dir)
    );
}

#[test]
fn dockerd_restarts_and_a_simulated_reboot_rewire_with_the_same_addresses() {
    lab::require_root();
    let (lan, dir, mut docker, _dnsmasq) = lab_with_dhcp(102, "watch-reboot");
    let config = write_config(&dir, "allowed_host_interfaces = [\"br0\"]\n");
    let always = ["--restart", "always", "--net", "none", "--label"];
    docker
        .run("fixed", &[&always[..], &["lanyard.net=br0 198.18.102.30/24@198.18.102.1"]].concat());
    docker.run("leased", &[&always[..], &["lanyard.net=br0 dhcp"]].concat());
    let daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);
    // Already running when the daemon started: wired by the first reconcile.
    assert_eq!(wait_wired(&docker, &dir, "fixed", "eth1"), "198.18.102.30/24");
    let leased = wait_wired(&docker, &dir, "leased", "eth1");

    // dockerd restarts (its containers with it): the event stream breaks, the daemon subscribes
    // again and reconciles.
    docker.restart_dockerd();
    assert_eq!(wait_wired(&docker, &dir, "fixed", "eth1"), "198.18.102.30/24");
    assert_eq!(wait_wired(&docker, &dir, "leased", "eth1"), leased);
    docker.docker_ok(&["exec", "fixed", "ping", "-c", "1", "-W", "2", "198.18.102.1"]);

    // A reboot: both stop, the containers' links die with them; dockerd comes back first.
    daemon.kill();
    docker.stop_dockerd();
    assert_eq!(ports_of(&lan.host, "br0"), 0, "the links died with the containers");
    docker.restart_dockerd();
    let daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);
    assert_eq!(wait_wired(&docker, &dir, "fixed", "eth1"), "198.18.102.30/24");
    assert_eq!(wait_wired(&docker, &dir, "leased", "eth1"), leased);

    // The other order: lanyard first (Docker down is normal at boot), then dockerd.
    daemon.kill();
    docker.stop_dockerd();
    let _daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);
    docker.restart_dockerd();
    assert_eq!(wait_wired(&docker, &dir, "fixed", "eth1"), "198.18.102.30/24");
    assert_eq!(wait_wired(&docker, &dir, "leased", "eth1"), leased);
    assert_eq!(ports_of(&lan.host, "br0"), 2, "no duplicate links");
}

/// The refusal reason `lanyard status --json` gives for `container`, once there is one.
fn refusal_of(ns: &Netns, dir: &TestDir, config: &Path, container: &str) -> String {
    let mut reason = None;
    wait_until(WIRED_WITHIN, || {
        let status = status_json(ns, dir, config);
        reason = status["Daemon"]["Docker"]["containers"]
            .as_object()
            .into_iter()
            .flat_map(|c| c.values())
            .find(|c| c["name"] == container)
            .and_then(|c| {
                c["interfaces"]
                    .as_array()?
                    .iter()
                    .find(|i| i["state"] == "refused")?
                    .get("reason")?
                    .as_str()
                    .map(str::to_string)
            });
        reason.is_some()
    });
    reason.unwrap_or_else(|| panic!("no refusal for {container}; log:\n{}", daemon_log(dir)))
}

#[test]
fn docker_pipework_lines_verbatim_every_macro_networks_and_the_key() {
    lab::require_root();
    let (lan, dir, docker, _dnsmasq) = lab_with_dhcp(103, "watch-pipework");
    let config = write_config(
        &dir,
        "allowed_host_interfaces = [\"br0\"]\npipework_key = \"site-a\"\n\
         [network.office]\nhost_interface = \"br0\"\naddressing = \"static\"\n\
         subnet = \"198.18.103.0/24\"\ngateway = \"198.18.103.1\"\n",
    );
    let _daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);
    let key = ["-e", "pipework_key=site-a"];
    // docker-pipework's seed lines, verbatim (trailing space included).
    docker.run(
        "test1",
        &[
            &["--restart=always", "--net=none"][..],
            &["-e", "pipework_cmd=br0 -i eth0 @CONTAINER_NAME@ udhcpc "],
            &key,
        ]
        .concat(),
    );
    docker.run(
        "test2",
        &[
            &["--net=none", "-e", "pipework_cmd_ip=br0 -i eth0 @CONTAINER_NAME@ 198.18.103.70/24 "]
                [..],
            &key,
        ]
        .concat(),
    );
    // Every other macro: @HOSTNAME@ (Config.Hostname), @COMPOSE_PROJECT_NAME@, @INSTANCE@,
    // @CONTAINER_ID@.
    docker.run(
        "macros",
        &[
            &["--net=none", "--hostname", "macros"][..],
            &["--label", "com.docker.compose.project=proj"],
            &["--label", "com.docker.compose.container-number=3"],
            &[
                "-e",
                "pipework_cmd=br0 -i @COMPOSE_PROJECT_NAME@ @HOSTNAME@ 198.18.103.8@INSTANCE@/24",
            ],
            &["-e", "apache_pipework_cmd_for_eth1=br0 -i eth1 @CONTAINER_ID@ 198.18.103.84/24"],
            &key,
        ]
        .concat(),
    );
    // A static network: the label names only the address. The key applies to labels too.
    docker.run(
        "office",
        &[&["--net=none", "--label", "lanyard.net=office 198.18.103.90"][..], &key].concat(),
    );
    // Refused: a malformed line, a missing key, a key that differs.
    docker.run(
        "malformed",
        &[&["--net=none", "-e", "pipework_cmd=br0 -i eth0 @CONTAINER_NAME@ 198.18.103.300/24"][..], &key]
            .concat(),
    );
    docker
        .run("nokey", &["--net=none", "-e", "pipework_cmd=br0 @CONTAINER_NAME@ 198.18.103.75/24"]);
    docker.run(
        "otherkey",
        &[
            "--net=none",
            "-e",
            "pipework_cmd=br0 @CONTAINER_NAME@ 198.18.103.76/24",
            "-e",
            "pipework_key=site-b",
        ],
    );

    let leased = wait_wired(&docker, &dir, "test1", "eth0");
    assert!(in_pool(&leased, 103), "{leased}");
    assert_eq!(wait_wired(&docker, &dir, "test2", "eth0"), "198.18.103.70/24");
    assert_eq!(wait_wired(&docker, &dir, "macros", "proj"), "198.18.103.83/24");
    assert_eq!(wait_wired(&docker, &dir, "macros", "eth1"), "198.18.103.84/24");
    assert_eq!(wait_wired(&docker, &dir, "office", "eth1"), "198.18.103.90/24");
    let route = docker.docker_ok(&["exec", "office", "ip", "route", "show", "default"]);
    assert!(route.contains("via 198.18.103.1"), "the network's gateway: {route}");
    docker.docker_ok(&["exec", "office", "ping", "-c", "1", "-W", "2", "198.18.103.1"]);

    let malformed = refusal_of(&lan.host, &dir, &config, "malformed");
    assert!(malformed.contains("198.18.103.300"), "{malformed}");
    for container in ["nokey", "otherkey"] {
        let reason = refusal_of(&lan.host, &dir, &config, container);
        assert!(reason.contains("pipework_key"), "{container}: {reason}");
        assert!(ipv4_of(&docker, container, "eth1").is_none());
    }
    assert_eq!(status_json(&lan.host, &dir, &config)["Daemon"]["Docker"]["connected"], true);
}

#[test]
fn host_routes_reach_macvlan_containers_and_go_with_them() {
    lab::require_root();
    let lan = support::lab::MacvlanLan::new(104);
    lan.host.ip(&["addr", "add", "198.18.104.2/24", "dev", "uplink0"]);
    let _dnsmasq = support::dhcp::Dnsmasq::start(
        &lan.lan,
        "br0",
        ("198.18.104.100", "198.18.104.200"),
        "2m",
        &["--no-ping"],
    );
    let dir = TestDir::new("watch-routes");
    let docker = DockerLab::start();
    let config = write_config(&dir, "allowed_host_interfaces = [\"uplink0\"]\n");
    let _daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);
    let host_before = lan.host.snapshot();
    let ping =
        |address: &str| lan.host.exec(&["ping", "-c", "1", "-W", "1", address]).status.success();

    // Asked per container with docker-pipework's variable; its neighbour did not ask.
    docker.run(
        "routed",
        &[
            "--net",
            "none",
            "--label",
            "lanyard.net=uplink0 198.18.104.70/24",
            "-e",
            "pipework_host_routes=1",
        ],
    );
    docker.run("unrouted", &["--net", "none", "--label", "lanyard.net=uplink0 198.18.104.71/24"]);
    // A leased address gets its route when the lease binds (from the daemon's route thread).
    docker.run(
        "leased",
        &["--net", "none", "--label", "lanyard.net=uplink0 dhcp", "-e", "pipework_host_route=yes"],
    );
    wait_wired(&docker, &dir, "routed", "eth1");
    wait_wired(&docker, &dir, "unrouted", "eth1");
    let leased = wait_wired(&docker, &dir, "leased", "eth1");
    let leased = leased.split('/').next().unwrap().to_string();
    assert!(
        wait_until(WIRED_WITHIN, || ping(&leased)),
        "the host reaches the leased macvlan container; log:\n{}",
        daemon_log(&dir)
    );
    assert!(ping("198.18.104.70"), "the host reaches its macvlan container through the shim");
    assert!(!ping("198.18.104.71"), "no route was asked for this one");
    let routes = lan.host.routes();
    let route = routes.iter().find(|r| r.starts_with("198.18.104.70 ")).expect("a /32 route");
    assert!(route.contains("src 198.18.104.2"), "{route}");

    docker.docker_ok(&["rm", "-f", "routed", "unrouted", "leased"]);
    let gone = wait_until(WIRED_WITHIN, || lan.host.snapshot() == host_before);
    assert!(gone, "shim and route go with the container: {:?}", lan.host.snapshot());
}

/// GET /metrics from inside `ns` (the daemon's metrics port lives in its namespace).
fn scrape(ns: &Netns, port: u16) -> String {
    use std::io::{Read, Write};
    ns.run_in(|| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read the answer");
        answer
    })
}

/// `promtool check metrics` on `text`: its verdict and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (package prometheus; scripts/setup.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), support::cli::text(&out))
}

#[test]
fn metrics_pass_promtool_and_count_what_the_daemon_does() {
    lab::require_root();
    let lan = Lan::bridge(105);
    lan.host.ip(&["link", "set", "lo", "up"]);
    let dir = TestDir::new("watch-metrics");
    let docker = DockerLab::start();
    let _dnsmasq = support::dhcp::Dnsmasq::start(
        &lan.host,
        "br0",
        ("198.18.105.100", "198.18.105.200"),
        "2m",
        &["--no-ping"],
    );
    let config =
        write_config(&dir, "allowed_host_interfaces = [\"br0\"]\nmetrics = \"127.0.0.1:9731\"\n");
    let _daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);
    docker.run("static", &["--net", "none", "--label", "lanyard.net=br0 198.18.105.10/24"]);
    docker.run("leased", &["--net", "none", "--label", "lanyard.net=br0 dhcp"]);
    docker.run("refused", &["--net", "none", "--label", "lanyard.net=eth0 198.18.105.11/24"]);
    wait_wired(&docker, &dir, "static", "eth1");
    wait_wired(&docker, &dir, "leased", "eth1");
    refusal_of(&lan.host, &dir, &config, "refused");
    // A container that declares nothing is not counted as wired (nor in the latency).
    docker.run("plain", &["--net", "none"]);
    let seen = wait_until(WIRED_WITHIN, || {
        scrape(&lan.host, 9731).lines().any(|l| l == "lanyard_docker_events_total 4")
    });
    assert!(seen, "the plain container's start reached the daemon");

    let answer = scrape(&lan.host, 9731);
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (valid, said) = promtool_check(body);
    assert!(valid, "promtool refused the metrics: {said}\n{body}");
    for line in [
        "lanyard_up 1",
        "lanyard_attachments{state=\"wired\"} 2",
        "lanyard_attachments{state=\"refused\"} 1",
        "lanyard_docker_connected 1",
        "lanyard_docker_reconnects_total 0",
        "lanyard_wire_latency_seconds_count 2",
    ] {
        assert!(body.lines().any(|l| l == line), "no line {line:?} in:\n{body}");
    }
    let bound = body.lines().find(|l| l.starts_with("lanyard_leases{")).unwrap_or("");
    assert!(bound.ends_with(" 1"), "one lease: {bound}\n{body}");
    // promtool can say no: a broken exposition is refused.
    let (valid, _) = promtool_check("lanyard_up{ 1\n");
    assert!(!valid, "promtool accepts anything");
    assert!(scrape(&lan.host, 9731).starts_with("HTTP/1.1 200"), "served again");
}

#[test]
fn a_declaration_that_failed_is_tried_again_until_it_works() {
    lab::require_root();
    let lan = Lan::bridge(106);
    let dir = TestDir::new("watch-retry");
    let docker = DockerLab::start();
    let config = write_config(&dir, "allowed_host_interfaces = [\"up9\"]\n");
    let _daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);
    docker.run("early", &["--net", "none", "--label", "lanyard.net=up9 198.18.106.20/24"]);
    let failed = wait_until(WIRED_WITHIN, || {
        let status = status_json(&lan.host, &dir, &config);
        status["Daemon"]["Docker"]["containers"].as_object().is_some_and(|c| {
            c.values().any(|c| {
                c["interfaces"][0]["state"] == "failed"
                    && c["interfaces"][0]["reason"].as_str().is_some_and(|r| r.contains("up9"))
            })
        })
    });
    assert!(failed, "the missing interface is reported; log:\n{}", daemon_log(&dir));
    // The admin brings the interface up later (a NIC that appears, a bridge made by hand).
    lan.host.ip(&["link", "add", "up9", "type", "veth", "peer", "name", "up9p"]);
    lan.host.ip(&["link", "set", "up9", "up"]);
    assert_eq!(wait_wired(&docker, &dir, "early", "eth1"), "198.18.106.20/24");
}
