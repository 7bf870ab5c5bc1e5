//! `docker network create -d lanyard`: a private dockerd inside a lab namespace and the lanyard
//! daemon serving the plugin in that same namespace (Docker looks up the interface a plugin
//! names in its own namespace), under a plugin name unique to the run and the test. Docker's
//! CLI is Debian's /usr/bin/docker (20.10, matching dockerd's API; see LAB.md).

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::docker::DockerLab;
use support::lab::{self, wait_until, Lan, Netns, TestDir};
use support::plugin::{create_network, docker, docker_ok, plugin_name, plugin_store, PluginDaemon};

/// One HTTP POST on the plugin socket: (status, JSON body).
fn post(socket: &Path, call: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = UnixStream::connect(socket).expect("connect to the plugin socket");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        stream,
        "POST /{call} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

/// Links in `ns` that the plugin makes (lyg* guest ends, lyh* host ends).
fn plugin_links(ns: &Netns) -> Vec<String> {
    ns.links().into_iter().filter(|l| l.starts_with("lyg") || l.starts_with("lyh")).collect()
}

/// Everything a container on the network should have: eth0 only, the address and MAC Docker
/// shows, the default route via the gateway, and the gateway answering.
fn check_container(lab: &DockerLab, dir: &TestDir, name: &str, ipv4: &str, gateway: &str) {
    let links = docker_ok(lab, dir, &["exec", name, "ls", "/sys/class/net"]);
    let mut links: Vec<&str> = links.split_whitespace().collect();
    links.sort();
    assert_eq!(links, ["eth0", "lo"], "one interface of the plugin, no second one");
    let addresses = docker_ok(lab, dir, &["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(addresses.contains(&format!("inet {ipv4}/24")), "{addresses}");
    let mac = docker_ok(lab, dir, &["exec", name, "cat", "/sys/class/net/eth0/address"]);
    let shown = docker_ok(
        lab,
        dir,
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.MacAddress}}{{end}}",
            name,
        ],
    );
    assert_eq!(shown, format!("{ipv4} {mac}"), "docker inspect shows what the container has");
    let routes = docker_ok(lab, dir, &["exec", name, "ip", "-4", "route"]);
    assert!(routes.contains(&format!("default via {gateway} dev eth0")), "{routes}");
    docker_ok(lab, dir, &["exec", name, "ping", "-c", "1", "-W", "3", gateway]);
}

#[test]
fn a_static_network_on_a_bridge_wires_containers_and_leaves_nothing_behind() {
    lab::require_root();
    let lan = Lan::bridge(160);
    let dir = TestDir::new("plugin-bridge");
    let name = plugin_name("bridge");
    let socket = lanyard::plugin::socket_path(&name);
    let lab = DockerLab::start_in_netns(&lan.host.path, "198.19.160.1/24");
    let image = lab.import_busybox();
    let links_before = lan.host.links();
    let _daemon = PluginDaemon::start(
        &lan.host,
        &dir,
        &format!("docker_plugin = \"{name}\"\n"),
        socket.clone(),
    );
    assert!(socket.exists(), "the daemon serves {}", socket.display());

    // The plugin API by hand: what Docker asks first, and bodies that are not Docker's.
    let (status, answer) = post(&socket, "Plugin.Activate", "");
    assert_eq!(
        (status, answer["Implements"].clone()),
        (200, serde_json::json!(["NetworkDriver", "IpamDriver"]))
    );
    for body in ["", "{}", "nonsense"] {
        let (status, answer) = post(&socket, "NetworkDriver.CreateNetwork", body);
        assert_ne!(status, 200, "{body:?}: {answer}");
        assert!(answer["Err"].as_str().is_some_and(|e| e.contains("CreateNetwork")), "{answer}");
        let (status, answer) = post(&socket, "IpamDriver.RequestPool", body);
        assert_ne!(status, 200, "{body:?}: {answer}");
        assert!(answer["Error"].as_str().is_some_and(|e| e.contains("RequestPool")), "{answer}");
    }
    let (_, pool) =
        post(&socket, "IpamDriver.RequestPool", r#"{"AddressSpace":"x","Pool":"","V6":false}"#);
    assert_eq!(pool["Pool"], "0.0.0.0/0", "{pool}");

    // A missing parent is refused at create, with its name.
    let refused = docker(
        &lab,
        &[
            "network",
            "create",
            "-d",
            &name,
            "-o",
            "parent=nosuch0",
            "--subnet",
            "198.18.160.0/24",
            "n0",
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("nosuch0"), "{stderr}");
    assert!(stderr.contains("no such interface"), "{stderr}");

    // Lanyard's IPAM with a subnet (static addresses are Docker's IPAM's job) is refused at
    // create, saying what to use instead, and leaves no network behind.
    let refused = docker(
        &lab,
        &[
            "network",
            "create",
            "-d",
            &name,
            "--ipam-driver",
            &name,
            "--subnet",
            "198.18.160.0/24",
            "-o",
            "parent=br0",
            "nd",
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a static network on lanyard's IPAM was created: {stderr}");
    assert!(stderr.contains("DHCP networks only") && stderr.contains("--subnet"), "{stderr}");
    let networks = docker_ok(&lab, &dir, &["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.lines().any(|n| n == "nd"), "{networks}");

    let dual_stack = [
        "--ipv6",
        "--subnet",
        "198.18.160.0/24",
        "--gateway",
        "198.18.160.1",
        "--subnet",
        "2001:db8:160::/64",
        "--gateway",
        "2001:db8:160::1",
    ];
    create_network(&lab, &dir, &name, "br0", &dual_stack, "n1");
    docker_ok(
        &lab,
        &dir,
        &[
            "run",
            "-d",
            "--stop-timeout",
            "1",
            "--net",
            "n1",
            "--ip",
            "198.18.160.50",
            "--ip6",
            "2001:db8:160::50",
            "--name",
            "c1",
            &image,
            "sleep",
            "3600",
        ],
    );
    check_container(&lab, &dir, "c1", "198.18.160.50", "198.18.160.1");
    let ipv6 = docker_ok(&lab, &dir, &["exec", "c1", "ip", "-6", "-o", "addr", "show", "eth0"]);
    assert!(ipv6.contains("2001:db8:160::50/64"), "{ipv6}");
    let routes6 = docker_ok(&lab, &dir, &["exec", "c1", "ip", "-6", "route"]);
    assert!(routes6.contains("default via 2001:db8:160::1 dev eth0"), "{routes6}");
    let pinged6 = wait_until(Duration::from_secs(5), || {
        docker(&lab, &["exec", "c1", "ping", "-6", "-c", "1", "-W", "1", "2001:db8:160::1"])
            .status
            .success()
    });
    assert!(pinged6, "the container reaches the IPv6 gateway");
    // The veth's host end is a port of br0; lanyard knows the endpoint.
    let ports = lan.host.ip(&["-o", "link", "show", "master", "br0"]);
    assert!(ports.contains("lyh"), "{ports}");
    let inspect = support::cli::run(&lan.host, &dir, &["inspect", "--all"]);
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.contains("docker-endpoint"), "lanyard inspect --all shows it: {inspect}");
    let views: serde_json::Value = serde_json::from_str(&inspect).expect("inspect JSON");
    for view in views.as_array().unwrap() {
        let interface = &view["Lanyard"]["Interfaces"][0];
        assert_eq!(interface["InSync"], true, "{interface}");
    }

    // A network without a gateway (Docker's null IPAM: no address either): still exactly one
    // interface, no docker_gwbridge.
    docker_ok(
        &lab,
        &dir,
        &["network", "create", "-d", &name, "--ipam-driver", "null", "-o", "parent=br0", "n2"],
    );
    docker_ok(
        &lab,
        &dir,
        &[
            "run",
            "-d",
            "--stop-timeout",
            "1",
            "--net",
            "n2",
            "--name",
            "c2",
            &image,
            "sleep",
            "3600",
        ],
    );
    let links = docker_ok(&lab, &dir, &["exec", "c2", "ls", "/sys/class/net"]);
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["eth0", "lo"]);
    assert!(!lan.host.links().iter().any(|l| l.contains("docker_gwbridge")));

    let status = support::cli::run(&lan.host, &dir, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["Attachments"], 2, "lanyard status counts both endpoints: {status}");

    docker_ok(&lab, &dir, &["rm", "-f", "c1", "c2"]);
    docker_ok(&lab, &dir, &["network", "rm", "n1", "n2"]);
    assert_eq!(plugin_links(&lan.host), Vec::<String>::new());
    assert_eq!(lan.host.links(), links_before, "no link left in the host namespace");
    assert_eq!(support::cli::record_and_lease_files(&dir), Vec::<String>::new());
    let store = plugin_store(&dir);
    assert_eq!(store["endpoints"], serde_json::json!({}), "{store}");
    assert_eq!(store["networks"], serde_json::json!({}), "{store}");
}

#[test]
fn a_static_network_on_a_macvlan_parent_wires_containers_and_leaves_nothing_behind() {
    lab::require_root();
    let lan = Lan::with_uplink(161);
    let dir = TestDir::new("plugin-macvlan");
    let name = plugin_name("macvlan");
    let socket = lanyard::plugin::socket_path(&name);
    let lab = DockerLab::start_in_netns(&lan.host.path, "198.19.161.1/24");
    let image = lab.import_busybox();
    let links_before = lan.host.links();
    let config = format!("docker_plugin = \"{name}\"\n");
    let mut daemon = PluginDaemon::start(&lan.host, &dir, &config, socket.clone());
    assert!(lan.wait_forwarding(Duration::from_secs(5)), "the uplink's port forwards");
    let options = ["-o", "macvlan_mode=bridge", "-o", "mtu=1400"];
    let subnet = ["--subnet", "198.18.161.0/24", "--gateway", "198.18.161.1"];
    create_network(&lab, &dir, &name, "uplink0", &[&options[..], &subnet].concat(), "m1");
    // The networks outlive the daemon: a restarted one serves what Docker already has.
    drop(daemon);
    daemon = PluginDaemon::start(&lan.host, &dir, &config, socket.clone());
    docker_ok(
        &lab,
        &dir,
        &[
            "run",
            "-d",
            "--stop-timeout",
            "1",
            "--net",
            "m1",
            "--ip",
            "198.18.161.50",
            "--name",
            "c1",
            &image,
            "sleep",
            "3600",
        ],
    );
    check_container(&lab, &dir, "c1", "198.18.161.50", "198.18.161.1");
    assert_eq!(docker_ok(&lab, &dir, &["exec", "c1", "cat", "/sys/class/net/eth0/mtu"]), "1400");
    // docker restart redoes every call with a new endpoint: the old one leaves nothing.
    docker_ok(&lab, &dir, &["restart", "-t", "0", "c1"]);
    check_container(&lab, &dir, "c1", "198.18.161.50", "198.18.161.1");
    assert_eq!(plugin_store(&dir)["endpoints"].as_object().map(|e| e.len()), Some(1));
    assert_eq!(support::cli::record_and_lease_files(&dir).len(), 1);
    assert!(plugin_links(&lan.host).is_empty(), "{:?}", lan.host.links());
    // Options lanyard does not know, or does not do yet, are refused at create, not ignored.
    for option in ["parnet=uplink0", "slaac=yes", "mtu=9999", "macvlan_mode=sideways"] {
        let create =
            ["network", "create", "-d", &name, "-o", "parent=uplink0", "-o", option, "bad"];
        let out = docker(&lab, &create);
        let key = option.split('=').next().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(key), "{option}: {stderr}");
    }
    // A crashed daemon's successor still knows the endpoint, and removes it.
    daemon.crash();
    // Dropped first: dropping it after its successor started would remove the new socket.
    drop(daemon);
    daemon = PluginDaemon::start(&lan.host, &dir, &config, socket.clone());
    docker_ok(&lab, &dir, &["rm", "-f", "c1"]);
    docker_ok(&lab, &dir, &["network", "rm", "m1"]);
    drop(daemon);
    assert_eq!(lan.host.links(), links_before, "no link left in the host namespace");
    assert_eq!(support::cli::record_and_lease_files(&dir), Vec::<String>::new());
    assert_eq!(plugin_store(&dir)["endpoints"], serde_json::json!({}));
}

#[test]
fn an_empty_docker_plugin_name_serves_no_socket() {
    lab::require_root();
    let ns = Netns::new("plugin-off");
    let dir = TestDir::new("plugin-off");
    let daemon = PluginDaemon::start(
        &ns,
        &dir,
        "docker_plugin = \"\"\n",
        lanyard::plugin::socket_path(&plugin_name("off")),
    );
    // Unix sockets are listed per network namespace: the daemon's namespace holds its own.
    let sockets = std::fs::read_to_string(format!("/proc/{}/net/unix", daemon.child.id()))
        .expect("read the daemon's unix sockets");
    let control = lanyard::daemon::control::socket_path(&dir.join("state"));
    assert!(sockets.contains(control.to_str().unwrap()), "the daemon serves: {sockets}");
    assert!(!sockets.contains(lanyard::plugin::PLUGIN_DIR), "{sockets}");
    let status = support::cli::ok(support::cli::run(&ns, &dir, &["status"]));
    assert!(status.contains("docker plugin: off (docker_plugin = \"\" in the config)"), "{status}");
    // Without a daemon, the CLI says so from the config: here, a plugin named there.
    drop(daemon);
    let config = dir.join("named.toml");
    std::fs::write(&config, "docker_plugin = \"named\"\n").unwrap();
    let mut command =
        support::cli::command(&ns, &dir, &["--config", config.to_str().unwrap(), "status"]);
    command.env_remove(lanyard::config::DOCKER_PLUGIN_ENV);
    let status = support::cli::ok(command.output().unwrap());
    let socket = lanyard::plugin::socket_path("named");
    let line = format!("docker plugin: not serving {} (the daemon serves it)", socket.display());
    assert!(status.contains("daemon: not running") && status.contains(&line), "{status}");
}

#[test]
fn a_stale_socket_is_replaced_a_live_one_kept_and_the_own_one_unlinked_at_sigterm() {
    lab::require_root();
    let ns = Netns::new("plugin-socket");
    let (dir, other_dir) = (TestDir::new("plugin-socket"), TestDir::new("plugin-socket-2"));
    let name = plugin_name("socket");
    let socket = lanyard::plugin::socket_path(&name);
    std::fs::create_dir_all(lanyard::plugin::PLUGIN_DIR).unwrap();
    // A socket nobody listens on any more: what a killed daemon leaves.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind the stale socket"));
    assert!(UnixStream::connect(&socket).is_err(), "the stale socket answers nobody");
    let mut daemon =
        PluginDaemon::start(&ns, &dir, &format!("docker_plugin = \"{name}\"\n"), socket.clone());
    assert_eq!(post(&socket, "Plugin.Activate", "").0, 200, "the daemon replaced the stale socket");

    // A second daemon (another state directory) with the same name leaves the live one alone.
    let second = PluginDaemon::start(
        &ns,
        &other_dir,
        &format!("docker_plugin = \"{name}\"\n"),
        PathBuf::new(),
    );
    let log = std::fs::read_to_string(other_dir.join("daemon.log")).unwrap_or_default();
    assert!(log.contains("served by another live process"), "{log}");
    // `lanyard status` says so, and why; the first daemon's says it serves.
    let status = support::cli::ok(support::cli::run(&ns, &other_dir, &["status"]));
    let line = format!("docker plugin: not serving {}: ", socket.display());
    assert!(
        status.contains(&line) && status.contains("served by another live process"),
        "{status}"
    );
    let status = support::cli::ok(support::cli::run(&ns, &dir, &["status"]));
    assert!(status.contains(&format!("docker plugin: serving {}", socket.display())), "{status}");
    drop(second);
    assert_eq!(post(&socket, "Plugin.Activate", "").0, 200, "the first daemon still serves");

    // SIGTERM: the daemon unlinks its socket before it exits.
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let _ = daemon.child.wait();
    assert!(!socket.exists(), "{} was unlinked at exit", socket.display());
    daemon.socket = PathBuf::new();
}

#[test]
fn deleting_a_network_removes_the_endpoints_docker_forgot_and_detach_removes_one() {
    lab::require_root();
    let lan = Lan::bridge(162);
    let dir = TestDir::new("plugin-forgot");
    let name = plugin_name("forgot");
    let socket = lanyard::plugin::socket_path(&name);
    let links_before = lan.host.links();
    let _daemon = PluginDaemon::start(
        &lan.host,
        &dir,
        &format!("docker_plugin = \"{name}\"\n"),
        socket.clone(),
    );
    // Docker's calls by hand: a network, an endpoint whose DeleteEndpoint never arrives (the
    // daemon was down when the container went), then DeleteNetwork.
    let (network, endpoint) = ("ab".repeat(32), "cd".repeat(32));
    let create = format!(
        r#"{{"NetworkID":"{network}","Options":{{"com.docker.network.generic":{{"parent":"br0"}}}},
            "IPv4Data":[{{"AddressSpace":"x","Pool":"198.18.162.0/24","Gateway":"198.18.162.1/24"}}],"IPv6Data":[]}}"#
    );
    assert_eq!(post(&socket, "NetworkDriver.CreateNetwork", &create).0, 200);
    let endpoint_body = format!(
        r#"{{"NetworkID":"{network}","EndpointID":"{endpoint}",
            "Interface":{{"Address":"198.18.162.50/24","MacAddress":"02:00:c6:12:a2:32"}}}}"#
    );
    let (status, answer) = post(&socket, "NetworkDriver.CreateEndpoint", &endpoint_body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(plugin_links(&lan.host).len(), 2, "a veth: {:?}", lan.host.links());
    assert_eq!(support::cli::record_and_lease_files(&dir).len(), 1);

    let (status, answer) =
        post(&socket, "NetworkDriver.DeleteNetwork", &format!(r#"{{"NetworkID":"{network}"}}"#));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(lan.host.links(), links_before, "the forgotten endpoint's veth is gone");
    assert_eq!(support::cli::record_and_lease_files(&dir), Vec::<String>::new());
    let store = plugin_store(&dir);
    assert_eq!(
        (&store["networks"], &store["endpoints"]),
        (&serde_json::json!({}), &serde_json::json!({}))
    );
    // `lanyard detach` by the endpoint's id removes its veth and record; Docker's
    // DeleteEndpoint afterwards finds nothing left and succeeds.
    assert_eq!(post(&socket, "NetworkDriver.CreateNetwork", &create).0, 200);
    let second = endpoint_body.replace(&endpoint, &"ef".repeat(32));
    assert_eq!(post(&socket, "NetworkDriver.CreateEndpoint", &second).0, 200);
    let detached = support::cli::run(&lan.host, &dir, &["detach", "efefefef"]);
    assert!(detached.status.success(), "{}", String::from_utf8_lossy(&detached.stderr));
    assert_eq!(lan.host.links(), links_before, "detach removed the veth");
    assert_eq!(support::cli::record_and_lease_files(&dir), Vec::<String>::new());
    let delete = format!(r#"{{"NetworkID":"{network}","EndpointID":"{}"}}"#, "ef".repeat(32));
    assert_eq!(post(&socket, "NetworkDriver.DeleteEndpoint", &delete).0, 200);
    assert_eq!(post(&socket, "NetworkDriver.DeleteNetwork", &delete).0, 200);
    assert_eq!(plugin_store(&dir)["endpoints"], serde_json::json!({}));

    // Docker retries: a second DeleteNetwork and DeleteEndpoint of what is gone succeed.
    let again = format!(r#"{{"NetworkID":"{network}","EndpointID":"{endpoint}"}}"#);
    assert_eq!(post(&socket, "NetworkDriver.DeleteEndpoint", &again).0, 200);
    assert_eq!(post(&socket, "NetworkDriver.DeleteNetwork", &again).0, 200);
}

/// A lab LAN `index` with a veth `up0` in its host namespace as a macvlan parent, a daemon
/// serving the plugin there, and the body of Docker's CreateNetwork for a static network on up0
/// (network id `ab...`): what the tests that call the plugin by hand start from.
struct ByHand {
    lan: Lan,
    dir: TestDir,
    name: String,
    socket: PathBuf,
    links_before: Vec<String>,
    network: String,
    create: String,
    daemon: Option<PluginDaemon>,
}

impl ByHand {
    fn new(index: u8, tag: &str) -> ByHand {
        let lan = Lan::bridge(index);
        let dir = TestDir::new(&format!("plugin-{tag}"));
        let name = plugin_name(tag);
        let socket = lanyard::plugin::socket_path(&name);
        // A parent that is not a bridge: the endpoints are macvlan children.
        lan.host
            .ip_batch("link add up0 type veth peer name up1\nlink set up0 up\nlink set up1 up\n");
        let links_before = lan.host.links();
        let daemon = Some(PluginDaemon::for_plugin(&lan.host, &dir, &name));
        let network = "ab".repeat(32);
        let create = format!(
            r#"{{"NetworkID":"{network}","Options":{{"com.docker.network.generic":{{"parent":"up0"}}}},
                "IPv4Data":[{{"AddressSpace":"x","Pool":"198.18.{index}.0/24","Gateway":"198.18.{index}.1/24"}}],"IPv6Data":[]}}"#
        );
        assert_eq!(post(&socket, "NetworkDriver.CreateNetwork", &create).0, 200);
        ByHand { lan, dir, name, socket, links_before, network, create, daemon }
    }
}

#[test]
fn detach_removes_a_plugin_macvlan_endpoint_and_refuses_one_in_a_container() {
    lab::require_root();
    let ByHand { lan, dir, socket, links_before, network, daemon: _daemon, .. } =
        ByHand::new(172, "detach");
    let endpoint = |id: &str, mac: &str| {
        let body = format!(
            r#"{{"NetworkID":"{network}","EndpointID":"{id}",
                "Interface":{{"Address":"198.18.172.50/24","MacAddress":"{mac}"}}}}"#
        );
        let (status, answer) = post(&socket, "NetworkDriver.CreateEndpoint", &body);
        assert_eq!(status, 200, "{answer}");
    };

    // Not joined (or back from a stopped container, or forgotten by Docker): the macvlan child
    // is in the daemon's namespace, and detach removes it with the record.
    let first = "cd".repeat(32);
    endpoint(&first, "02:00:c6:12:ac:32");
    assert_eq!(plugin_links(&lan.host), [format!("lyg{}", &first[..12])]);
    let detached = support::cli::run(&lan.host, &dir, &["detach", &first[..8]]);
    assert!(detached.status.success(), "{}", support::cli::text(&detached));
    assert_eq!(lan.host.links(), links_before, "detach removed the macvlan child");
    assert_eq!(support::cli::record_and_lease_files(&dir), Vec::<String>::new());

    // Joined, its link moved into a container's namespace (Docker's doing): refused, with what
    // to do, and nothing changed; back in the daemon's namespace, it is removed.
    let second = "ef".repeat(32);
    endpoint(&second, "02:00:c6:12:ac:33");
    let link = format!("lyg{}", &second[..12]);
    let container = Netns::new("plugin-detach-c");
    let join = format!(
        r#"{{"NetworkID":"{network}","EndpointID":"{second}","SandboxKey":"{}","Options":{{}}}}"#,
        container.path.display()
    );
    assert_eq!(post(&socket, "NetworkDriver.Join", &join).0, 200);
    lan.host.ip(&["link", "set", &link, "netns", container.path.to_str().unwrap()]);
    let files = support::cli::record_and_lease_files(&dir);
    let refused = support::cli::run(&lan.host, &dir, &["detach", &second[..8]]);
    let text = support::cli::text(&refused);
    assert!(!refused.status.success(), "{text}");
    assert!(
        text.contains("is in a container Docker runs") && text.contains("docker rm -f"),
        "{text}"
    );
    assert_eq!(support::cli::record_and_lease_files(&dir), files, "the record stays");
    assert!(container.links().contains(&link), "the container keeps its interface");
    container.ip(&["link", "set", &link, "netns", lan.host.path.to_str().unwrap()]);
    let detached = support::cli::run(&lan.host, &dir, &["detach", &second[..8]]);
    assert!(detached.status.success(), "{}", support::cli::text(&detached));
    assert_eq!(lan.host.links(), links_before, "detach removed the macvlan child");
    assert_eq!(support::cli::record_and_lease_files(&dir), Vec::<String>::new());
    let delete = format!(r#"{{"NetworkID":"{network}","EndpointID":"{second}"}}"#);
    assert_eq!(post(&socket, "NetworkDriver.DeleteEndpoint", &delete).0, 200);
    assert_eq!(post(&socket, "NetworkDriver.DeleteNetwork", &delete).0, 200);
    assert_eq!(plugin_store(&dir)["endpoints"], serde_json::json!({}));
}

#[test]
fn a_static_endpoints_links_go_after_delete_endpoint_answered_and_before_delete_network_or_exit() {
    lab::require_root();
    let ByHand { lan, dir, name, socket, links_before, network, create, mut daemon } =
        ByHand::new(173, "reaper");
    // Docker's calls for one container on a macvlan parent: its link made, joined, left (Docker
    // moves it in and back), deleted.
    let container = |id: &str, mac: &str| {
        let endpoint = format!(
            r#"{{"NetworkID":"{network}","EndpointID":"{id}",
                "Interface":{{"Address":"198.18.173.50/24","MacAddress":"{mac}"}}}}"#
        );
        assert_eq!(post(&socket, "NetworkDriver.CreateEndpoint", &endpoint).0, 200);
        let join = format!(
            r#"{{"NetworkID":"{network}","EndpointID":"{id}","SandboxKey":"/run/netns/none","Options":{{}}}}"#
        );
        assert_eq!(post(&socket, "NetworkDriver.Join", &join).0, 200);
        let only = format!(r#"{{"NetworkID":"{network}","EndpointID":"{id}"}}"#);
        assert_eq!(post(&socket, "NetworkDriver.Leave", &only).0, 200);
        assert_eq!(post(&socket, "NetworkDriver.DeleteEndpoint", &only).0, 200);
        // Docker may send it again: still answered, nothing queued twice.
        assert_eq!(post(&socket, "NetworkDriver.DeleteEndpoint", &only).0, 200);
    };

    // Answered, then removed off the request: link, record and store entry all go.
    container(&"c1".repeat(32), "02:00:c6:12:ad:01");
    let gone = wait_until(Duration::from_secs(5), || {
        lan.host.links() == links_before
            && support::cli::record_and_lease_files(&dir).is_empty()
            && plugin_store(&dir)["endpoints"] == serde_json::json!({})
    });
    assert!(
        gone,
        "links {:?}, files {:?}",
        lan.host.links(),
        support::cli::record_and_lease_files(&dir)
    );

    // The same address (Docker derives the MAC from it) at once: the new link waits for none.
    container(&"c2".repeat(32), "02:00:c6:12:ad:02");
    container(&"c3".repeat(32), "02:00:c6:12:ad:02");
    // DeleteNetwork right after: every deletion answered before it is done when it answers.
    let only = format!(r#"{{"NetworkID":"{network}"}}"#);
    assert_eq!(post(&socket, "NetworkDriver.DeleteNetwork", &only).0, 200);
    assert_eq!(lan.host.links(), links_before, "links left after DeleteNetwork");
    assert_eq!(support::cli::record_and_lease_files(&dir), Vec::<String>::new());
    assert_eq!(plugin_store(&dir)["endpoints"], serde_json::json!({}));

    // The daemon stopped (SIGTERM) right after a DeleteEndpoint: done before it exits.
    assert_eq!(post(&socket, "NetworkDriver.CreateNetwork", &create).0, 200);
    container(&"c4".repeat(32), "02:00:c6:12:ad:04");
    drop(daemon.take());
    assert_eq!(lan.host.links(), links_before, "links left by a daemon that stopped");
    assert_eq!(support::cli::record_and_lease_files(&dir), Vec::<String>::new());
    assert_eq!(plugin_store(&dir)["endpoints"], serde_json::json!({}));

    // SIGKILLed right after a DeleteEndpoint: the next daemon finishes the removal at its start.
    let mut crashing = PluginDaemon::for_plugin(&lan.host, &dir, &name);
    container(&"c5".repeat(32), "02:00:c6:12:ad:05");
    crashing.crash();
    drop(crashing);
    let _restarted = PluginDaemon::for_plugin(&lan.host, &dir, &name);
    let finished = wait_until(Duration::from_secs(5), || {
        lan.host.links() == links_before
            && support::cli::record_and_lease_files(&dir).is_empty()
            && plugin_store(&dir)["endpoints"] == serde_json::json!({})
    });
    assert!(finished, "links {:?}, store {}", lan.host.links(), plugin_store(&dir)["endpoints"]);
}

/// The IPv4 address (CIDR) on eth0 of a running container, `None` when it is not running.
fn eth0_of(lab: &DockerLab, name: &str) -> Option<String> {
    let out = docker(lab, &["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next().map(str::to_string)
}

#[test]
fn restart_policy_containers_run_again_whichever_of_dockerd_and_lanyard_comes_first() {
    lab::require_root();
    let lan = Lan::bridge(170);
    let dir = TestDir::new("plugin-boot");
    let name = plugin_name("boot");
    let socket = lanyard::plugin::socket_path(&name);
    let dnsmasq = support::dhcp::Dnsmasq::start(
        &lan.host,
        "br0",
        ("198.18.170.100", "198.18.170.200"),
        "2m",
        &[],
    );
    let mut lab = DockerLab::start_in_netns(&lan.host.path, "198.19.170.1/24");
    let config = format!("docker_plugin = \"{name}\"\n");
    let daemon =
        PluginDaemon::start_with(&lan.host, &dir, &config, socket.clone(), Some(lab.env()));
    let subnet = ["--subnet", "198.18.170.0/24", "--gateway", "198.18.170.1"];
    create_network(&lab, &dir, &name, "br0", &subnet, "boot");
    let names: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    for (i, container) in names.iter().enumerate() {
        let ip = format!("198.18.170.{}", 10 + i);
        lab.run(container, &["--restart=always", "--net", "boot", "--ip", &ip]);
    }
    // Beside them, a few on a DHCP network, each with a fixed MAC (the lease follows it).
    support::plugin::create_dhcp_network(&lab, &dir, &name, "br0", "boot-dhcp");
    let dhcp_names: Vec<String> = (0..3).map(|i| format!("d{i}")).collect();
    for (i, container) in dhcp_names.iter().enumerate() {
        let mac = format!("02:00:c6:12:aa:{:02x}", 16 + i);
        let mut argv = vec!["run", "-d", "--stop-timeout", "1", "--name", container];
        argv.extend(["--restart=always", "--net", "boot-dhcp", "--mac-address", &mac]);
        let image = lab.import_busybox();
        argv.extend([image.as_str(), "sleep", "3600"]);
        docker_ok(&lab, &dir, &argv);
    }
    let mut dhcp_addresses = Vec::new();
    for container in &dhcp_names {
        let mut address = None;
        wait_until(Duration::from_secs(10), || {
            address = eth0_of(&lab, container);
            address.is_some()
        });
        let address = address.unwrap_or_else(|| panic!("{container} has no address"));
        dnsmasq.wait_lease(
            address.split('/').next().unwrap().parse().unwrap(),
            Duration::from_secs(5),
        );
        dhcp_addresses.push(address);
    }
    let all_back = |lab: &DockerLab| {
        names.iter().enumerate().all(|(i, container)| {
            eth0_of(lab, container).as_deref() == Some(&format!("198.18.170.{}/24", 10 + i))
        }) && dhcp_names
            .iter()
            .zip(&dhcp_addresses)
            .all(|(container, address)| eth0_of(lab, container).as_ref() == Some(address))
    };
    assert!(wait_until(Duration::from_secs(30), || all_back(&lab)), "all thirteen run");

    // lanyard first: dockerd restarts and restores them itself, the plugin answering.
    lab.restart_dockerd();
    assert!(
        wait_until(Duration::from_secs(60), || all_back(&lab)),
        "dockerd restored them with the plugin there; daemon log:\n{}",
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );

    // A reboot where dockerd comes first and lanyard a moment later: both stop (dockerd first:
    // stopping containers asks the plugin); dockerd, restoring, retries the absent plugin, and
    // finds it once the daemon serves.
    lab.stop_dockerd();
    drop(daemon);
    let mut daemon = None;
    let docker_host = lab.env();
    lab.start_dockerd_with(|| {
        std::thread::sleep(Duration::from_secs(2));
        let started =
            PluginDaemon::start_with(&lan.host, &dir, &config, socket.clone(), Some(docker_host));
        daemon = Some(started);
    });
    assert!(
        wait_until(Duration::from_secs(60), || all_back(&lab)),
        "restored once the plugin came; daemon log:\n{}",
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );

    // lanyard long after dockerd: Docker gave up on the container (Exited, with the start
    // error), and the daemon, once it serves, starts it itself. One container: dockerd keeps
    // its API down while it retries the plugin (about 30 s per container here).
    for container in names[1..].iter().chain(&dhcp_names) {
        docker_ok(&lab, &dir, &["rm", "-f", container]);
    }
    docker_ok(&lab, &dir, &["network", "rm", "boot-dhcp"]);
    lab.stop_dockerd();
    drop(daemon);
    lab.start_dockerd_with(|| {});
    let state =
        docker_ok(&lab, &dir, &["inspect", "-f", "{{.State.Running}} {{.State.Error}}", "r0"]);
    assert!(state.starts_with("false ") && state.len() > "false ".len(), "Docker gave up: {state}");
    let _daemon =
        PluginDaemon::start_with(&lan.host, &dir, &config, socket.clone(), Some(lab.env()));
    let back = || eth0_of(&lab, "r0").as_deref() == Some("198.18.170.10/24");
    assert!(
        wait_until(Duration::from_secs(30), back),
        "the daemon started it again with its address; daemon log:\n{}",
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );
    // A container someone stopped stays stopped: no start error, no restart by lanyard.
    docker_ok(&lab, &dir, &["stop", "-t", "1", "r0"]);
    drop(_daemon);
    let _daemon =
        PluginDaemon::start_with(&lan.host, &dir, &config, socket.clone(), Some(lab.env()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(docker_ok(&lab, &dir, &["inspect", "-f", "{{.State.Running}}", "r0"]), "false");
    docker_ok(&lab, &dir, &["rm", "-f", "r0"]);
    docker_ok(&lab, &dir, &["network", "rm", "boot"]);
    assert!(plugin_links(&lan.host).is_empty(), "{:?}", plugin_links(&lan.host));
}

#[test]
fn compose_brings_a_container_up_on_two_lanyard_networks_and_down_twice() {
    lab::require_root();
    let lan = Lan::bridge(171);
    lan.host
        .ip_batch("link add br1 type bridge\naddr add 198.18.172.1/24 dev br1\nlink set br1 up\n");
    let dir = TestDir::new("plugin-compose");
    let name = plugin_name("compose");
    let socket = lanyard::plugin::socket_path(&name);
    let lab = DockerLab::start_in_netns(&lan.host.path, "198.19.171.1/24");
    let image = lab.import_busybox();
    let links_before = lan.host.links();
    let _daemon =
        PluginDaemon::start(&lan.host, &dir, &format!("docker_plugin = \"{name}\"\n"), socket);
    let compose_file = dir.join("docker-compose.yml");
    std::fs::write(
        &compose_file,
        format!(
            r#"version: "2.4"
services:
  web:
    image: {image}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    networks:
      front:
        ipv4_address: 198.18.171.10
      back:
        ipv4_address: 198.18.172.10
networks:
  front:
    driver: {name}
    driver_opts: {{parent: br0}}
    ipam: {{config: [{{subnet: 198.18.171.0/24, gateway: 198.18.171.1}}]}}
  back:
    driver: {name}
    driver_opts: {{parent: br1}}
    ipam: {{config: [{{subnet: 198.18.172.0/24, gateway: 198.18.172.1}}]}}
"#
        ),
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let (key, value) = lab.env();
        let out = Command::new("docker-compose")
            .args(["-p", "lyc", "-f", compose_file.to_str().unwrap()])
            .args(args)
            .env(key, value)
            .env("DOCKER_CONFIG", lab.dir.join("cli"))
            .stdin(Stdio::null())
            .output()
            .expect("run docker-compose (Debian package docker-compose)");
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
    };
    for round in 0..2 {
        compose(&["up", "-d"]);
        let container = docker_ok(&lab, &dir, &["ps", "-q", "--filter", "name=lyc_web"]);
        assert!(!container.is_empty(), "round {round}: the service runs");
        let addresses = docker_ok(&lab, &dir, &["exec", &container, "ip", "-4", "-o", "addr"]);
        for expected in ["198.18.171.10/24", "198.18.172.10/24"] {
            assert!(addresses.contains(expected), "round {round}: {expected} in {addresses}");
        }
        for gateway in ["198.18.171.1", "198.18.172.1"] {
            docker_ok(&lab, &dir, &["exec", &container, "ping", "-c", "1", "-W", "2", gateway]);
        }
        compose(&["down"]);
        assert_eq!(lan.host.links(), links_before, "round {round}: nothing left after down");
        assert_eq!(plugin_store(&dir)["endpoints"], serde_json::json!({}), "round {round}");
    }
}
