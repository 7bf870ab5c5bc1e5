//! `docker network create -d NAME --ipam-driver NAME`: DHCP networks. A private dockerd inside a
//! lab namespace, the DHCP server on its bridge and the lanyard daemon serving the plugin in that
//! same namespace (see tests/plugin.rs), under a plugin name unique to the run and the test.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::dhcp::{Dnsmasq, Kea, KeaConfig};
use support::docker::DockerLab;
use support::lab::{self, wait_until, Lan, Netns, TestDir};
use support::plugin::{
    create_dhcp_network, docker, docker_ok, plugin_name, plugin_store, PluginDaemon,
};

/// Run container `name` on network `net` with `mac`; its command prints eth0's IPv4 address
/// first thing (so the address was there before the application's first instruction).
fn run_printing_address(lab: &DockerLab, dir: &TestDir, name: &str, net: &str, mac: &str) {
    let image = lab.import_busybox();
    docker_ok(
        lab,
        dir,
        &[
            "run",
            "-d",
            "--stop-timeout",
            "1",
            "--net",
            net,
            "--mac-address",
            mac,
            "--name",
            name,
            &image,
            "sh",
            "-c",
            "ip -4 -o addr show eth0; exec sleep 3600",
        ],
    );
}

/// The address the container's command printed at its start (the last start's).
fn address_at_start(lab: &DockerLab, dir: &TestDir, name: &str) -> Ipv4Addr {
    let mut logs = String::new();
    let printed = wait_until(Duration::from_secs(10), || {
        logs = docker_ok(lab, dir, &["logs", name]);
        logs.contains("inet ")
    });
    assert!(printed, "{name} printed no address at start: {logs:?}");
    let last = logs.lines().rev().find(|l| l.contains("inet ")).unwrap();
    let cidr = last.split_whitespace().skip_while(|w| *w != "inet").nth(1).unwrap();
    cidr.split('/').next().unwrap().parse().unwrap_or_else(|_| panic!("{last}"))
}

/// What `docker inspect` shows of `name` on `net`: (IPAddress, Gateway).
fn inspected(lab: &DockerLab, dir: &TestDir, name: &str, net: &str) -> (String, String) {
    let format = format!(
        "{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}} \
         {{{{(index .NetworkSettings.Networks \"{net}\").Gateway}}}}"
    );
    let out = docker_ok(lab, dir, &["inspect", "-f", &format, name]);
    let (address, gateway) = out.split_once(' ').unwrap_or((&out, ""));
    (address.to_string(), gateway.to_string())
}

/// The addresses of `ns` but the IPv6 link-local ones the kernel gives every link it brings up.
fn configured(ns: &Netns) -> Vec<String> {
    ns.addresses().into_iter().filter(|a| !a.contains(" fe80:")).collect()
}

/// Everything gone: no plugin link in the host namespace, no record or lease, an empty store.
fn assert_nothing_left(lan_host: &Netns, links_before: &[String], dir: &TestDir) {
    assert_eq!(lan_host.links(), links_before, "no link left in the host namespace");
    assert_eq!(support::cli::record_and_lease_files(dir), Vec::<String>::new());
    let store = plugin_store(dir);
    assert_eq!(
        (&store["networks"], &store["endpoints"]),
        (&serde_json::json!({}), &serde_json::json!({})),
        "{store}"
    );
}

#[test]
fn a_dhcp_network_gives_containers_a_lease_before_they_start_and_the_same_one_per_mac() {
    lab::require_root();
    let lan = Lan::bridge(163);
    let dir = TestDir::new("plugin-dhcp");
    let name = plugin_name("dhcp");
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.163.100", "198.18.163.200"), "2m", &[]);
    // Started before dockerd, so that it is dropped after it: a failed test's containers are
    // removed while the plugin still answers.
    let _daemon = PluginDaemon::for_plugin(&lan.host, &dir, &name);
    let lab = DockerLab::start_in_netns(&lan.host.path, "198.19.163.1/24");
    lab.import_busybox();
    let links_before = lan.host.links();
    // A default route of the host namespace's own, which a lease configured there would
    // replace (and lose with the link when Docker moves it).
    lan.host.ip_batch("route add default via 198.18.163.254 dev br0 onlink\n");
    // Without the carrier flag: br0 gets one with its first port.
    let routes = || lan.host.ip(&["-4", "route", "show", "table", "all"]).replace(" linkdown", "");
    let (addresses_before, routes_before) = (configured(&lan.host), routes());

    create_dhcp_network(&lab, &dir, &name, "br0", "n");
    let mac = "02:00:c6:12:a3:07";
    run_printing_address(&lab, &dir, "c1", "n", mac);
    let address = address_at_start(&lab, &dir, "c1");
    // The lease was taken on the link while it was in the host namespace: nothing of it was
    // configured there (Docker configures the container).
    assert_eq!(configured(&lan.host), addresses_before, "no address added in the host namespace");
    assert_eq!(routes(), routes_before, "no IPv4 route added in the host namespace");
    let lease = dnsmasq.wait_lease(address, Duration::from_secs(5));
    assert_eq!(lease.mac, mac, "dnsmasq leased {address} to the container's MAC");
    assert_eq!(
        inspected(&lab, &dir, "c1", "n"),
        (address.to_string(), "198.18.163.1".to_string()),
        "docker inspect shows the lease and its router"
    );
    let links = docker_ok(&lab, &dir, &["exec", "c1", "ls", "/sys/class/net"]);
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["eth0", "lo"]);
    let routes = docker_ok(&lab, &dir, &["exec", "c1", "ip", "-4", "route"]);
    assert!(routes.contains("default via 198.18.163.1 dev eth0"), "{routes}");
    docker_ok(&lab, &dir, &["exec", "c1", "ping", "-c", "1", "-W", "2", "198.18.163.1"]);

    // --ip has no place on a DHCP network (Docker refuses it before asking IPAM).
    let image = lab.import_busybox();
    let refused =
        docker(&lab, &["run", "--rm", "--net", "n", "--ip", "198.18.163.9", &image, "true"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("user specified IP address"), "{stderr}");

    // The lease follows the MAC: after a restart, and in a new container with the same MAC.
    docker_ok(&lab, &dir, &["restart", "-t", "1", "c1"]);
    assert_eq!(address_at_start(&lab, &dir, "c1"), address, "the same address after a restart");
    docker_ok(&lab, &dir, &["rm", "-f", "c1"]);
    run_printing_address(&lab, &dir, "c1", "n", mac);
    assert_eq!(address_at_start(&lab, &dir, "c1"), address, "the same address for the same MAC");
    // Another MAC, another address.
    run_printing_address(&lab, &dir, "c2", "n", "02:00:c6:12:a3:08");
    assert_ne!(address_at_start(&lab, &dir, "c2"), address);

    docker_ok(&lab, &dir, &["rm", "-f", "c1", "c2"]);
    docker_ok(&lab, &dir, &["network", "rm", "n"]);
    assert_nothing_left(&lan.host, &links_before, &dir);
}

#[test]
fn a_dhcp_lease_is_renewed_from_inside_the_container_and_survives_a_daemon_crash() {
    lab::require_root();
    let lan = Lan::bridge(164);
    let dir = TestDir::new("plugin-dhcp-kea");
    let name = plugin_name("kea");
    // Kea listens only on a running interface: a bridge without ports has no carrier.
    lan.host.ip_batch(
        "link add kport0 type veth peer name kport1\nlink set kport0 master br0 up\nlink set kport1 up\n",
    );
    // Leases of 4 s, renewed after 1 s.
    const VALID: u64 = 4;
    let kea = Kea::start(&lan.host, "br0", KeaConfig::timed(164, VALID as u32, 1, 3));
    // Started before dockerd: see the test above.
    let mut daemon = PluginDaemon::for_plugin(&lan.host, &dir, &name);
    let lab = DockerLab::start_in_netns(&lan.host.path, "198.19.164.1/24");
    lab.import_busybox();
    let links_before = lan.host.links();

    create_dhcp_network(&lab, &dir, &name, "br0", "n");
    run_printing_address(&lab, &dir, "c1", "n", "02:00:c6:12:a4:07");
    let address = address_at_start(&lab, &dir, "c1");

    // Five lifetimes: renewed all along (from inside the container: the link is there), and
    // the container keeps its address.
    let renewed = |at_least: usize| {
        wait_until(Duration::from_secs(5 * VALID + 10), || kea.renewals_of(address) >= at_least)
    };
    let started = std::time::Instant::now();
    let five_lifetimes = wait_until(Duration::from_secs(5 * VALID + 10), || {
        started.elapsed() >= Duration::from_secs(5 * VALID) && kea.renewals_of(address) >= 8
    });
    assert!(
        five_lifetimes,
        "renewals of {address}: {}\ndaemon log:\n{}",
        kea.renewals_of(address),
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );
    let shown = docker_ok(&lab, &dir, &["exec", "c1", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(shown.contains(&format!("inet {address}/")), "{shown}");
    docker_ok(&lab, &dir, &["exec", "c1", "ping", "-c", "1", "-W", "2", "198.18.164.1"]);

    // The daemon crashes and comes back: renewals resume, the container keeps its address.
    daemon.crash();
    let before = kea.renewals_of(address);
    let _daemon = PluginDaemon::for_plugin(&lan.host, &dir, &name);
    assert!(renewed(before + 3), "renewals resumed after the crash");
    let shown = docker_ok(&lab, &dir, &["exec", "c1", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(shown.contains(&format!("inet {address}/")), "{shown}");

    docker_ok(&lab, &dir, &["rm", "-f", "c1"]);
    docker_ok(&lab, &dir, &["network", "rm", "n"]);
    assert_nothing_left(&lan.host, &links_before, &dir);
}

#[test]
fn a_dhcp_network_on_a_macvlan_parent_leases_through_the_uplink() {
    lab::require_root();
    let lan = Lan::with_uplink(165);
    let dir = TestDir::new("plugin-dhcp-macvlan");
    let name = plugin_name("dhcp-macvlan");
    let dnsmasq = Dnsmasq::start(&lan.lan, "br0", ("198.18.165.100", "198.18.165.200"), "2m", &[]);
    // Started before dockerd: see the first test.
    let _daemon = PluginDaemon::for_plugin(&lan.host, &dir, &name);
    let lab = DockerLab::start_in_netns(&lan.host.path, "198.19.165.1/24");
    lab.import_busybox();
    let links_before = lan.host.links();
    assert!(lan.wait_forwarding(Duration::from_secs(5)), "the uplink's port forwards");

    create_dhcp_network(&lab, &dir, &name, "uplink0", "w");
    let mac = "02:00:c6:12:a5:07";
    run_printing_address(&lab, &dir, "c1", "w", mac);
    let address = address_at_start(&lab, &dir, "c1");
    assert_eq!(dnsmasq.wait_lease(address, Duration::from_secs(5)).mac, mac);
    assert_eq!(inspected(&lab, &dir, "c1", "w"), (address.to_string(), "198.18.165.1".to_string()));
    // A macvlan child, now in the container: no veth host end in the host namespace.
    assert_eq!(lan.host.links(), links_before, "no veth for a macvlan parent");
    docker_ok(&lab, &dir, &["exec", "c1", "ping", "-c", "1", "-W", "2", "198.18.165.1"]);

    docker_ok(&lab, &dir, &["rm", "-f", "c1"]);
    docker_ok(&lab, &dir, &["network", "rm", "w"]);
    assert_nothing_left(&lan.host, &links_before, &dir);
}

/// How many DHCPRELEASEs of `address` dnsmasq has logged.
fn releases_of(dnsmasq: &Dnsmasq, address: Ipv4Addr) -> usize {
    dnsmasq.log_text().matches(&format!("DHCPRELEASE(br0) {address} ")).count()
}

#[test]
fn network_rm_with_containers_changes_nothing_and_a_removed_containers_lease_is_released() {
    lab::require_root();
    // The server in a namespace of its own, as on a LAN (reached through the macvlan parent):
    // in the daemon's namespace it would take the DHCPRELEASE's unicast as its own traffic.
    let lan = Lan::with_uplink(168);
    let dir = TestDir::new("plugin-dhcp-release");
    let name = plugin_name("release");
    let socket = lanyard::plugin::socket_path(&name);
    let config = format!("docker_plugin = \"{name}\"\n");
    let dnsmasq = Dnsmasq::start(&lan.lan, "br0", ("198.18.168.100", "198.18.168.200"), "2m", &[]);
    // Declared before the lab, so dropped after it (see the first test); started after dockerd,
    // whose socket its Docker watcher follows (it sees the containers start and go).
    let mut daemon: Option<PluginDaemon>;
    let lab = DockerLab::start_in_netns(&lan.host.path, "198.19.168.1/24");
    daemon =
        Some(PluginDaemon::start_with(&lan.host, &dir, &config, socket.clone(), Some(lab.env())));
    lab.import_busybox();
    let links_before = lan.host.links();
    assert!(lan.wait_forwarding(Duration::from_secs(5)), "the uplink's port forwards");
    create_dhcp_network(&lab, &dir, &name, "uplink0", "n");
    let network_id = docker_ok(&lab, &dir, &["network", "inspect", "-f", "{{.Id}}", "n"]);
    let (mac1, mac2) = ("02:00:c6:12:a8:07", "02:00:c6:12:a8:08");
    run_printing_address(&lab, &dir, "c1", "n", mac1);
    run_printing_address(&lab, &dir, "c2", "n", mac2);
    let (address1, address2) =
        (address_at_start(&lab, &dir, "c1"), address_at_start(&lab, &dir, "c2"));

    // `docker network rm` with containers attached: Docker refuses, and lanyard's links,
    // records, leases and store are as they were; the containers keep working.
    let files = support::cli::record_and_lease_files(&dir);
    let (links, store) = (lan.host.links(), plugin_store(&dir));
    let refused = docker(&lab, &["network", "rm", "n"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("active endpoints"), "{stderr}");
    assert_eq!(support::cli::record_and_lease_files(&dir), files);
    assert_eq!((lan.host.links(), plugin_store(&dir)), (links, store));
    for (container, address) in [("c1", address1), ("c2", address2)] {
        let shown =
            docker_ok(&lab, &dir, &["exec", container, "ip", "-4", "-o", "addr", "show", "eth0"]);
        assert!(shown.contains(&format!("inet {address}/")), "{shown}");
        docker_ok(&lab, &dir, &["exec", container, "ping", "-c", "1", "-W", "2", "198.18.168.1"]);
    }

    // `lanyard status` shows the plugin: its socket served, the network and its leases.
    let status = support::cli::ok(support::cli::run(&lan.host, &dir, &["status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let plugin = &status["Daemon"]["DockerPlugin"];
    assert_eq!(plugin["Serving"], true, "{plugin}");
    assert_eq!(plugin["Socket"], socket.to_str().unwrap(), "{plugin}");
    let network = &plugin["Networks"][0];
    assert_eq!(
        (&network["Id"], &network["Parent"], &network["Addressing"], &network["Endpoints"]),
        (
            &serde_json::json!(&network_id[..12]),
            &serde_json::json!("uplink0"),
            &serde_json::json!("dhcp"),
            &serde_json::json!(2)
        ),
        "{plugin}"
    );
    let bound = || {
        let status = support::cli::ok(support::cli::run(&lan.host, &dir, &["status", "--json"]));
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["Daemon"]["DockerPlugin"]["Networks"][0]["LeasesByState"]["BOUND"] == 2
    };
    assert!(wait_until(Duration::from_secs(5), bound), "{plugin}");
    let text = support::cli::ok(support::cli::run(&lan.host, &dir, &["status"]));
    let line = format!(
        "  network {} on uplink0: dhcp, 2 endpoint(s), 2 lease(s): BOUND 2",
        &network_id[..12]
    );
    assert!(text.contains(&format!("docker plugin: serving {}", socket.display())), "{text}");
    assert!(text.contains(&line), "{text}");

    // `docker rm` and `docker run` with the same MAC: the same address (a lease released at
    // the removal is asked for again by the same client).
    docker_ok(&lab, &dir, &["rm", "-f", "c1"]);
    run_printing_address(&lab, &dir, "c1", "n", mac1);
    assert_eq!(address_at_start(&lab, &dir, "c1"), address1, "the same address for the same MAC");

    // Removed for good: the daemon's Docker watcher sees the container destroyed, releases the
    // lease (dnsmasq hears the DHCPRELEASE) and removes its record.
    let record_of = |mac: &str| mac.replace(':', "");
    let released_before = releases_of(&dnsmasq, address1);
    docker_ok(&lab, &dir, &["rm", "-f", "c1"]);
    let released = || {
        releases_of(&dnsmasq, address1) > released_before
            && !support::cli::record_and_lease_files(&dir)
                .iter()
                .any(|f| f.contains(&record_of(mac1)))
    };
    assert!(
        wait_until(Duration::from_secs(15), released),
        "the lease of the removed container was released: {:?}\ndnsmasq:\n{}\ndaemon log:\n{}",
        support::cli::record_and_lease_files(&dir),
        dnsmasq.log_text(),
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );

    // A stopped container keeps its MAC's lease: another container with that MAC runs and is
    // removed meanwhile, and the first one starts again with its address.
    docker_ok(&lab, &dir, &["stop", "-t", "1", "c2"]);
    run_printing_address(&lab, &dir, "c3", "n", mac2);
    assert_eq!(address_at_start(&lab, &dir, "c3"), address2);
    let c3 = docker_ok(&lab, &dir, &["inspect", "-f", "{{.Id}}", "c3"]);
    let released_before = releases_of(&dnsmasq, address2);
    docker_ok(&lab, &dir, &["rm", "-f", "c3"]);
    let noted = || std::fs::read_to_string(dir.join("state/docker-plugin/containers.json"));
    let forgotten = || noted().is_ok_and(|text| !text.contains(&c3));
    assert!(wait_until(Duration::from_secs(10), forgotten), "{:?}", noted());
    docker_ok(&lab, &dir, &["start", "c2"]);
    assert_eq!(address_at_start(&lab, &dir, "c2"), address2);
    assert_eq!(releases_of(&dnsmasq, address2), released_before, "no DHCPRELEASE of {address2}");

    // Removed while the daemon was down: released at its start (the reconcile finds it gone).
    docker_ok(&lab, &dir, &["stop", "-t", "1", "c2"]);
    let mut crashed = daemon.take().expect("the daemon");
    crashed.crash();
    drop(crashed);
    docker_ok(&lab, &dir, &["rm", "c2"]);
    let released_before = releases_of(&dnsmasq, address2);
    daemon =
        Some(PluginDaemon::start_with(&lan.host, &dir, &config, socket.clone(), Some(lab.env())));
    let released = || {
        releases_of(&dnsmasq, address2) > released_before
            && support::cli::record_and_lease_files(&dir).is_empty()
    };
    assert!(
        wait_until(Duration::from_secs(15), released),
        "the lease of the container removed meanwhile was released: {:?}\ndaemon log:\n{}",
        support::cli::record_and_lease_files(&dir),
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );

    docker_ok(&lab, &dir, &["network", "rm", "n"]);
    assert_nothing_left(&lan.host, &links_before, &dir);
    drop(lab);
    drop(daemon);
}
