//! `docker network create -d NAME -o slaac=true`: the container's interface takes the LAN's
//! router advertisements (radvd on the lab's bridge) and autoconfigures its address, on a
//! static IPv4 network and on a DHCP one. A private dockerd inside a lab namespace and the
//! lanyard daemon serving the plugin in that same namespace (see tests/plugin.rs), under a
//! plugin name unique to the run and the test.

mod support;

use std::net::Ipv6Addr;
use std::time::Duration;

use support::dhcp::{Dnsmasq, Radvd};
use support::docker::DockerLab;
use support::lab::{self, wait_until, Lan, TestDir};
use support::plugin::{create_network, docker_ok, plugin_name, PluginDaemon};

/// The EUI-64 address of `mac` in the /64 `prefix` ("2001:db8:N::"), as the kernel forms it
/// (addr_gen_mode 0), written as `ip` shows it.
fn eui64(prefix: &str, mac: &str) -> String {
    let o: Vec<u8> = mac.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    let mut bytes = prefix.parse::<Ipv6Addr>().unwrap().octets();
    bytes[8..].copy_from_slice(&[o[0] ^ 0x02, o[1], o[2], 0xff, 0xfe, o[3], o[4], o[5]]);
    Ipv6Addr::from(bytes).to_string()
}

/// Wait until container `name`'s eth0 has the SLAAC address of its MAC in `prefix`; returns
/// that address. radvd answers the container's router solicitation at once and advertises
/// every 3-4 s anyway, so 10 s is two periodic advertisements beyond the answer.
fn wait_slaac_address(lab: &DockerLab, dir: &TestDir, name: &str, prefix: &str) -> String {
    let mac = docker_ok(lab, dir, &["exec", name, "cat", "/sys/class/net/eth0/address"]);
    let expected = format!("inet6 {}/64", eui64(prefix, &mac));
    let mut shown = String::new();
    let found = wait_until(Duration::from_secs(10), || {
        shown = docker_ok(lab, dir, &["exec", name, "ip", "-6", "-o", "addr", "show", "eth0"]);
        shown.contains(&expected)
    });
    assert!(
        found,
        "{name}: no {expected} within 10 s: {shown}\ndaemon log:\n{}",
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );
    expected
}

/// What Docker knows of `name` on `net`: (IPAddress, GlobalIPv6Address).
fn inspected(lab: &DockerLab, dir: &TestDir, name: &str, net: &str) -> (String, String) {
    let networks =
        docker_ok(lab, dir, &["inspect", "-f", "{{json .NetworkSettings.Networks}}", name]);
    let networks: serde_json::Value = serde_json::from_str(&networks).expect("JSON");
    let field = |key: &str| networks[net][key].as_str().unwrap_or_default().to_string();
    (field("IPAddress"), field("GlobalIPv6Address"))
}

/// A lab for plugin `tag`: LAN `index` with radvd advertising 2001:db8:INDEX::/64 on its bridge,
/// the plugin's daemon, and dockerd (started after the daemon, so that it is dropped before it:
/// see tests/plugin_dhcp.rs), with the test image imported.
struct SlaacLab {
    lab: DockerLab,
    image: String,
    plugin: String,
    _daemon: PluginDaemon,
    _radvd: Radvd,
    dir: TestDir,
    lan: Lan,
}

impl SlaacLab {
    fn start(index: u8, tag: &str, before_daemon: impl FnOnce(&Lan)) -> SlaacLab {
        let lan = Lan::bridge(index);
        let dir = TestDir::new(&format!("plugin-{tag}"));
        let plugin = plugin_name(tag);
        before_daemon(&lan);
        let radvd = Radvd::start(&lan.host, "br0", &format!("2001:db8:{index}::/64"));
        let daemon = PluginDaemon::for_plugin(&lan.host, &dir, &plugin);
        let lab = DockerLab::start_in_netns(&lan.host.path, &format!("198.19.{index}.1/24"));
        let image = lab.import_busybox();
        SlaacLab { lab, image, plugin, _daemon: daemon, _radvd: radvd, dir, lan }
    }

    /// `docker network create -d PLUGIN ARGS -o parent=br0 -o slaac=true n`
    fn create_network(&self, args: &[&str]) {
        let args = [args, &["-o", "slaac=true"]].concat();
        create_network(&self.lab, &self.dir, &self.plugin, "br0", &args, "n");
    }

    /// `docker run -d --net n ARGS --name c1 IMAGE sleep 3600`
    fn run(&self, args: &[&str]) {
        let mut run = vec!["run", "-d", "--net", "n"];
        run.extend_from_slice(args);
        run.extend_from_slice(&["--name", "c1", &self.image, "sleep", "3600"]);
        docker_ok(&self.lab, &self.dir, &run);
    }
}

#[test]
fn slaac_on_a_static_ipv4_network_gives_the_container_its_eui64_address() {
    lab::require_root();
    let world = SlaacLab::start(186, "slaac", |_| {});
    let (lab, dir) = (&world.lab, &world.dir);
    let links_before = world.lan.host.links();

    world.create_network(&["--subnet", "198.18.186.0/24", "--gateway", "198.18.186.1"]);
    world.run(&["--ip", "198.18.186.50"]);
    wait_slaac_address(lab, dir, "c1", "2001:db8:186::");
    // Docker knows the address it gave, not the autoconfigured one.
    assert_eq!(inspected(lab, dir, "c1", "n"), ("198.18.186.50".into(), String::new()));
    let routes = docker_ok(lab, dir, &["exec", "c1", "ip", "-6", "route"]);
    assert!(routes.contains("default via fe80:"), "the RA's default route: {routes}");
    // Only the container's own interface takes router advertisements.
    let lo = docker_ok(lab, dir, &["exec", "c1", "cat", "/proc/sys/net/ipv6/conf/lo/accept_ra"]);
    assert_ne!(lo, "2", "lo left as Docker made it");
    // Every start is a new move into the container: SLAAC again after a restart.
    docker_ok(lab, dir, &["restart", "-t", "0", "c1"]);
    wait_slaac_address(lab, dir, "c1", "2001:db8:186::");

    docker_ok(lab, dir, &["rm", "-f", "c1"]);
    docker_ok(lab, dir, &["network", "rm", "n"]);
    assert_eq!(world.lan.host.links(), links_before, "no link left in the host namespace");
    assert_eq!(support::cli::record_and_lease_files(dir), Vec::<String>::new());
}

#[test]
fn slaac_on_a_dhcp_network_gives_the_container_both_addresses() {
    lab::require_root();
    let mut dnsmasq = None;
    let world = SlaacLab::start(187, "slaac-dhcp", |lan| {
        let range = ("198.18.187.100", "198.18.187.200");
        dnsmasq = Some(Dnsmasq::start(&lan.host, "br0", range, "2m", &[]));
    });
    let (lab, dir, dnsmasq) = (&world.lab, &world.dir, dnsmasq.unwrap());

    world.create_network(&["--ipam-driver", &world.plugin]);
    let mac = "02:00:c6:12:bb:07";
    world.run(&["--mac-address", mac]);
    let expected = wait_slaac_address(lab, dir, "c1", "2001:db8:187::");
    assert!(expected.contains(&eui64("2001:db8:187::", mac)), "{expected}");
    let (ipv4, ipv6) = inspected(lab, dir, "c1", "n");
    let leased = ipv4.parse().unwrap_or_else(|_| panic!("docker inspect: {ipv4:?}"));
    assert_eq!(dnsmasq.wait_lease(leased, Duration::from_secs(5)).mac, mac);
    assert_eq!(ipv6, "", "Docker knows the lease, not the autoconfigured address");

    docker_ok(lab, dir, &["rm", "-f", "c1"]);
    docker_ok(lab, dir, &["network", "rm", "n"]);
    assert_eq!(support::cli::record_and_lease_files(dir), Vec::<String>::new());
}

/// One plugin call the way Docker makes it (an HTTP POST on the plugin's socket, here by
/// curl): the answer's JSON body, whatever its status.
fn call(socket: &std::path::Path, call: &str, body: serde_json::Value) -> serde_json::Value {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "30", "--unix-socket", socket.to_str().unwrap()])
        .args(["-X", "POST", "--data-binary", &body.to_string()])
        .arg(format!("http://plugin/{call}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{call}: {e}: {text:?}"))
}

/// What Docker sends for `docker network create -d NAME --ipam-driver NAME -o parent=br0`:
/// RequestPool, then CreateNetwork `network` with the pool's marker as its gateway; the pool id.
fn create_dhcp_network_by_hand(socket: &std::path::Path, network: &str) -> serde_json::Value {
    use serde_json::json;
    let request = json!({"AddressSpace": "lanyard-local", "Pool": "", "V6": false});
    let pool = call(socket, "IpamDriver.RequestPool", request);
    let gateway = &pool["Data"]["com.docker.network.gateway"];
    let generic = json!({"com.docker.network.generic": {"parent": "br0"}});
    let ipv4_data = json!([{"Pool": "0.0.0.0/0", "Gateway": gateway}]);
    let create = json!({"NetworkID": network, "Options": generic, "IPv4Data": ipv4_data});
    assert_eq!(call(socket, "NetworkDriver.CreateNetwork", create), json!({}));
    pool["PoolID"].clone()
}

#[test]
fn a_named_endpoint_keeps_its_dhcp_address_under_a_new_mac() {
    use serde_json::json;
    lab::require_root();
    let lan = Lan::bridge(188);
    let dir = TestDir::new("plugin-named");
    let name = plugin_name("named");
    let socket = lanyard::plugin::socket_path(&name);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.188.100", "198.18.188.200"), "2m", &[]);
    let _daemon = PluginDaemon::for_plugin(&lan.host, &dir, &name);
    let links_before = lan.host.links();

    // What Docker 29 sends at `docker network create` and, per container start, RequestAddress
    // with its (random) MAC and its name.
    let network = "7e".repeat(32);
    let pool_id = create_dhcp_network_by_hand(&socket, &network);
    let request_address = |mac: &str, container: &str| {
        let answer = call(
            &socket,
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": "", "Options": {
                "com.docker.network.endpoint.macaddress": mac,
                "com.docker.network.endpoint.name": container}}),
        );
        let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        let dnsmasq_log = dnsmasq.log_text();
        let address = answer["Address"].as_str();
        address
            .unwrap_or_else(|| panic!("RequestAddress: {answer}\n{}\n{dnsmasq_log}", log()))
            .to_string()
    };
    // A container's life on the network: its endpoint adopts the link, and at its stop the
    // endpoint goes (the link with it; the lease's record stays).
    let live_and_stop = |mac: &str, address: &str, endpoint: &str| {
        let ids = json!({"NetworkID": network, "EndpointID": endpoint});
        let mut create = ids.clone();
        create["Interface"] = json!({"Address": address, "MacAddress": mac});
        assert_eq!(call(&socket, "NetworkDriver.CreateEndpoint", create), json!({}));
        assert_eq!(call(&socket, "NetworkDriver.DeleteEndpoint", ids), json!({}));
    };

    let first = request_address("02:00:c6:12:bc:a1", "web");
    live_and_stop("02:00:c6:12:bc:a1", &first, &"e1".repeat(32));
    // The restart: another random MAC, the same name, the same address.
    let again = request_address("02:00:c6:12:bc:a2", "web");
    assert_eq!(again, first, "the same name keeps its address under a new MAC");
    live_and_stop("02:00:c6:12:bc:a2", &again, &"e2".repeat(32));
    // Another container: another address.
    let other = request_address("02:00:c6:12:bc:a3", "db");
    assert_ne!(other, first, "another name, another address");
    live_and_stop("02:00:c6:12:bc:a3", &other, &"e3".repeat(32));

    // A fixed MAC keeps the lease it was recorded with, whatever the container is called now.
    let fixed = request_address("02:00:c6:12:bc:a1", "renamed");
    assert_eq!(fixed, first, "the recorded MAC's lease wins over a new name");
    live_and_stop("02:00:c6:12:bc:a1", &fixed, &"e4".repeat(32));

    // docker network rm: the leases are released and nothing is left.
    assert_eq!(
        call(&socket, "NetworkDriver.DeleteNetwork", json!({"NetworkID": network})),
        json!({})
    );
    assert_eq!(lan.host.links(), links_before, "no link left in the host namespace");
    assert_eq!(support::cli::record_and_lease_files(&dir), Vec::<String>::new());
}

#[test]
fn a_dhcp_link_takes_no_router_advertisement_while_it_is_in_the_host_namespace() {
    use serde_json::json;
    lab::require_root();
    let lan = Lan::bridge(189);
    let dir = TestDir::new("plugin-host-ra");
    let name = plugin_name("host-ra");
    let socket = lanyard::plugin::socket_path(&name);
    let _dnsmasq =
        Dnsmasq::start(&lan.host, "br0", ("198.18.189.100", "198.18.189.200"), "2m", &[]);
    let _radvd = Radvd::start(&lan.host, "br0", "2001:db8:189::/64");
    // A host that takes router advertisements on new links even while it forwards (radvd
    // needs forwarding on here): what the container's link must not pick up before Docker
    // moves it into the container.
    lan.host.sysctl("net/ipv6/conf/default/accept_ra", "2");
    let _daemon = PluginDaemon::for_plugin(&lan.host, &dir, &name);

    // RequestAddress makes the link and leases on it in the host namespace (Docker would
    // move it into the container after CreateEndpoint and Join).
    let network = "7f".repeat(32);
    let pool_id = create_dhcp_network_by_hand(&socket, &network);
    let options = json!({"com.docker.network.endpoint.macaddress": "02:00:c6:12:bd:a1"});
    let request = json!({"PoolID": pool_id, "Address": "", "Options": options});
    let answer = call(&socket, "IpamDriver.RequestAddress", request);
    assert!(answer["Address"].is_string(), "{answer}");

    // radvd answers a router solicitation at once and advertises every 3-4 s: two periods.
    let link = "lyg0200c612bda1";
    let picked_up = wait_until(Duration::from_secs(8), || {
        let addresses = lan.host.ip(&["-6", "addr", "show", "dev", link, "scope", "global"]);
        let routes = lan.host.ip(&["-6", "route", "show", "default"]);
        addresses.contains("2001:db8:189:") || routes.contains(link)
    });
    assert!(!picked_up, "the host namespace took an RA on {link}: {:?}", lan.host.addresses());

    assert_eq!(
        call(&socket, "NetworkDriver.DeleteNetwork", json!({"NetworkID": network})),
        json!({})
    );
}
