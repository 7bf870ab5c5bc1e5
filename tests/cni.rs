//! lanyard as a CNI plugin, invoked directly as a runtime would: the `lanyard` binary run with
//! `CNI_COMMAND` and the other `CNI_*` variables set and the network configuration on stdin,
//! inside a lab namespace that plays the runtime's host, with a fresh namespace per container as
//! `CNI_NETNS`. Every command (ADD, DEL, CHECK, STATUS, GC, VERSION), every version lanyard
//! speaks (0.4.0, 1.0.0, 1.1.0), static addresses and a DHCP lease from dnsmasq, and the error
//! paths; a lease from Kea kept for five lifetimes; and podman 4.3 running containers on lanyard
//! networks. LANs 234..=248.

mod support;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::cli::{self, record_and_lease_files};
use support::cni::{run_plugin, Call, Run};
use support::daemon::DaemonGuard;
use support::dhcp::{kea_lan, Dnsmasq, Kea, KeaConfig};
use support::lab::{wait_until, Lan, Netns, TestDir};

const VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

fn static_conf(version: &str, lan: &Lan, host_octet: u8) -> Value {
    json!({
        "cniVersion": version,
        "name": "lantest",
        "type": "lanyard",
        "hostInterface": "br0",
        "addresses": [format!("{}/24", lan.addr4(host_octet))],
        "gateway": lan.gateway4.to_string(),
        "routes": [{"dst": "198.19.0.0/16"}],
        "mtu": 1400,
    })
}

/// The guest interface's entry of a result, checked against the spec's shape for `version`.
fn check_add_result(result: &Value, version: &str, sandbox: &Netns, address: &str, gateway: &str) {
    assert_eq!(result["cniVersion"], version, "{result}");
    let interfaces = result["interfaces"].as_array().expect("interfaces");
    let guest_index = interfaces
        .iter()
        .position(|i| i["sandbox"] == sandbox.path.to_str().unwrap())
        .unwrap_or_else(|| panic!("no interface in the sandbox: {result}"));
    let guest = &interfaces[guest_index];
    assert_eq!(guest["name"], "eth0", "{result}");
    assert!(guest["mac"].as_str().is_some_and(|m| m.len() == 17), "{result}");
    assert_eq!(guest.get("mtu").is_some(), version == "1.1.0", "mtu only in 1.1.0: {result}");
    let ip = &result["ips"][0];
    assert_eq!(ip["address"], address, "{result}");
    assert_eq!(ip["gateway"], gateway, "{result}");
    assert_eq!(ip["interface"], guest_index, "{result}");
    assert_eq!(ip.get("version").is_some(), version == "0.4.0", "version only in 0.4.0: {result}");
    if version == "0.4.0" {
        assert_eq!(ip["version"], "4");
    }
    let routes = result["routes"].as_array().expect("routes");
    assert!(routes.contains(&json!({"dst": "0.0.0.0/0", "gw": gateway})), "{result}");
    assert!(result["dns"].is_object(), "{result}");
}

#[test]
fn static_add_check_del_in_every_version_leave_nothing_behind() {
    let lan = Lan::bridge(240);
    let dir = TestDir::new("cni-static");
    let host_before = lan.host.snapshot();
    for (n, version) in VERSIONS.iter().enumerate() {
        let g = lan.guest("c");
        let guest_before = g.snapshot();
        let id = format!("static{n}");
        let octet = 10 + n as u8;
        let conf = static_conf(version, &lan, octet);
        let address = format!("{}/24", lan.addr4(octet));
        let capture = support::lab::capture_filtered(&lan.host, "br0", &["arp"]);
        let result = Call::new("ADD", &id, &g).run(&lan.host, &dir, &conf).result();
        // Announced as the CLI announces a static address.
        let announced = format!("Request who-has {0} tell {0}", lan.addr4(octet));
        capture.expect(&announced, Duration::from_secs(3));
        check_add_result(&result, version, &g, &address, &lan.gateway4.to_string());
        assert!(
            result["routes"]
                .as_array()
                .unwrap()
                .contains(&json!({"dst": "198.19.0.0/16", "gw": lan.gateway4.to_string()})),
            "{result}"
        );
        assert!(g.addresses().iter().any(|a| a.contains(&address)), "{:?}", g.addresses());
        assert!(
            g.routes()
                .iter()
                .any(|r| r.starts_with(&format!("default via {} dev eth0", lan.gateway4))),
            "{:?}",
            g.routes()
        );
        assert!(g.ip(&["link", "show", "eth0"]).contains("mtu 1400"));

        // `lanyard inspect --all` shows it beside any other attachment.
        let inspect = cli::ok(cli::run(&lan.host, &dir, &["inspect", "--all"]));
        assert!(inspect.contains(&format!("cni:lantest:{id}")), "{inspect}");
        let by_id = cli::ok(cli::run(&lan.host, &dir, &["inspect", &id]));
        assert!(by_id.contains(&format!("cni:lantest:{id}")), "{by_id}");

        let mut checked = conf.clone();
        checked["prevResult"] = result.clone();
        Call::new("CHECK", &id, &g).run(&lan.host, &dir, &checked).silent();

        let mut deleted = conf.clone();
        deleted["prevResult"] = result;
        Call::new("DEL", &id, &g).run(&lan.host, &dir, &deleted).silent();
        assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
        assert_eq!(g.snapshot(), guest_before, "{version}: the container as before");
        assert_eq!(lan.host.snapshot(), host_before, "{version}: the host as before");
        // DEL twice: success, nothing to do.
        Call::new("DEL", &id, &g).run(&lan.host, &dir, &conf).silent();
    }
}

#[test]
fn version_lists_what_lanyard_speaks_in_the_version_asked() {
    let host = Netns::new("cni-version");
    let dir = TestDir::new("cni-version");
    for version in VERSIONS {
        let out = Call::bare("VERSION").run(&host, &dir, &json!({"cniVersion": version}));
        assert_eq!(
            out.result(),
            json!({"cniVersion": version, "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
        );
    }
    // The binary acts as a plugin whatever its arguments, as a runtime may exec it.
    let out = run_plugin(
        &host,
        &dir,
        &Call::bare("VERSION"),
        b"{\"cniVersion\":\"1.0.0\"}",
        &["attach", "--help"],
        &[],
    );
    assert_eq!(out.result()["supportedVersions"][2], "1.1.0");
}

#[test]
fn check_reports_drift_with_its_code() {
    let lan = Lan::bridge(241);
    let dir = TestDir::new("cni-drift");
    let g = lan.guest("c");
    let conf = static_conf("1.0.0", &lan, 20);
    let result = Call::new("ADD", "drift", &g).run(&lan.host, &dir, &conf).result();
    let mut checked = conf.clone();
    checked["prevResult"] = result;
    Call::new("CHECK", "drift", &g).run(&lan.host, &dir, &checked).silent();
    // Someone removes the address behind lanyard's back.
    g.ip(&["addr", "del", &format!("{}/24", lan.addr4(20)), "dev", "eth0"]);
    let details =
        Call::new("CHECK", "drift", &g).run(&lan.host, &dir, &checked).error(103, "1.0.0");
    assert!(details.contains(&format!("address {}/24 is missing", lan.addr4(20))), "{details}");
    // CHECK of an attachment lanyard never made: unknown container.
    Call::new("CHECK", "never", &g).run(&lan.host, &dir, &checked).error(3, "1.0.0");
    Call::new("DEL", "drift", &g).run(&lan.host, &dir, &conf).silent();
    assert!(record_and_lease_files(&dir).is_empty());
}

#[test]
fn bad_input_is_refused_with_the_spec_codes_and_changes_nothing() {
    let lan = Lan::bridge(242);
    let dir = TestDir::new("cni-bad");
    let g = lan.guest("c");
    let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
    let add = Call::new("ADD", "bad", &g);
    let good = static_conf("1.0.0", &lan, 30);

    let out = run_plugin(&lan.host, &dir, &add, b"{\"cniVersion\": ", &[], &[]);
    out.error(6, "1.1.0");
    let mut old = good.clone();
    old["cniVersion"] = json!("0.3.1");
    add.run(&lan.host, &dir, &old).error(1, "1.1.0");
    // A chained IPAM section gives the addresses: not beside "addresses", and only a plugin
    // CNI_PATH holds.
    let mut ipam = good.clone();
    ipam["ipam"] = json!({"type": "host-local"});
    let details = add.run(&lan.host, &dir, &ipam).error(7, "1.0.0");
    assert!(details.contains("\"ipam\"") && details.contains("host-local"), "{details}");
    let mut not_found = ipam.clone();
    not_found.as_object_mut().unwrap().remove("addresses");
    not_found.as_object_mut().unwrap().remove("gateway");
    not_found.as_object_mut().unwrap().remove("routes");
    let details = add.run(&lan.host, &dir, &not_found).error(7, "1.0.0");
    assert!(details.contains("no executable \"host-local\" in CNI_PATH"), "{details}");
    let mut no_interface = good.clone();
    no_interface.as_object_mut().unwrap().remove("hostInterface");
    assert!(add.run(&lan.host, &dir, &no_interface).error(7, "1.0.0").contains("hostInterface"));
    let mut missing = good.clone();
    missing["hostInterface"] = json!("brmissing0");
    let details = add.run(&lan.host, &dir, &missing).error(7, "1.0.0");
    assert!(details.contains("brmissing0"), "{details}");
    let mut outside = good.clone();
    outside["gateway"] = json!("198.19.9.1");
    add.run(&lan.host, &dir, &outside).error(7, "1.0.0");
    let no_id = Call { container_id: None, ..Call::new("ADD", "x", &g) };
    assert!(no_id.run(&lan.host, &dir, &good).error(4, "1.0.0").contains("CNI_CONTAINERID"));
    let no_netns =
        Call { netns: Some("/run/netns/lanyard-no-such-ns"), ..Call::new("ADD", "x", &g) };
    assert!(no_netns.run(&lan.host, &dir, &good).error(4, "1.0.0").contains("CNI_NETNS"));
    let unknown_arg = Call { args: Some("FOO=1"), ..Call::new("ADD", "x", &g) };
    unknown_arg.run(&lan.host, &dir, &good).error(4, "1.0.0");
    Call::bare("FROB").run(&lan.host, &dir, &good).error(4, "1.0.0");
    // A DEL where nothing was ever recorded creates no state directory.
    let mut elsewhere = good.clone();
    elsewhere["stateDir"] = json!(dir.join("never-made"));
    let del_elsewhere = Call::new("DEL", "x", &g);
    let out = run_plugin(
        &lan.host,
        &dir,
        &del_elsewhere,
        elsewhere.to_string().as_bytes(),
        &[],
        &["LANYARD_STATE_DIR"],
    );
    assert_eq!((out.code, out.stdout.trim()), (0, ""), "{out}");
    assert!(!dir.join("never-made").exists());
    let del_no_ifname = Call { ifname: None, ..Call::new("DEL", "x", &g) };
    assert!(del_no_ifname.run(&lan.host, &dir, &good).error(4, "1.0.0").contains("CNI_IFNAME"));

    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before);
    assert_eq!(g.snapshot(), guest_before);
}

#[test]
fn add_passes_a_prev_result_on_with_its_own_entries_after_it() {
    let lan = Lan::bridge(248);
    let dir = TestDir::new("cni-prev");
    let g = lan.guest("c");
    let mut conf = static_conf("1.0.0", &lan, 80);
    let previous = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth9", "sandbox": g.path.to_str().unwrap()}],
        "ips": [{"address": "198.19.1.2/24", "interface": 0}],
        "routes": [{"dst": "198.19.2.0/24", "gw": "198.19.1.1"}],
        "dns": {"nameservers": ["198.19.1.53"]},
    });
    conf["prevResult"] = previous.clone();
    let result = Call::new("ADD", "prev", &g).run(&lan.host, &dir, &conf).result();
    assert_eq!(result["interfaces"][0], previous["interfaces"][0], "{result}");
    assert_eq!(result["ips"][0], previous["ips"][0], "{result}");
    assert_eq!(result["routes"][0], previous["routes"][0], "{result}");
    assert_eq!(result["dns"], previous["dns"], "{result}");
    // lanyard's own entries follow, indexed into the whole list.
    assert_eq!(result["interfaces"][2]["name"], "eth0", "{result}");
    assert_eq!(result["ips"][1]["address"], format!("{}/24", lan.addr4(80)), "{result}");
    assert_eq!(result["ips"][1]["interface"], 2, "{result}");
    Call::new("DEL", "prev", &g).run(&lan.host, &dir, &conf).silent();
    assert!(record_and_lease_files(&dir).is_empty());
}

#[test]
fn add_twice_is_refused_and_keeps_the_first() {
    let lan = Lan::bridge(243);
    let dir = TestDir::new("cni-twice");
    let g = lan.guest("c");
    let conf = static_conf("1.1.0", &lan, 40);
    Call::new("ADD", "twice", &g).run(&lan.host, &dir, &conf).result();
    let details = Call::new("ADD", "twice", &g).run(&lan.host, &dir, &conf).error(100, "1.1.0");
    assert!(details.contains("eth0"), "{details}");
    assert!(g.addresses().iter().any(|a| a.contains(&format!("{}/24", lan.addr4(40)))));
    assert_eq!(record_and_lease_files(&dir).len(), 1);
    Call::new("DEL", "twice", &g).run(&lan.host, &dir, &conf).silent();
    assert!(record_and_lease_files(&dir).is_empty());

    // A missing `br*` host interface is made only when the conf asks, and goes with the last
    // attachment.
    let host_before = lan.host.snapshot();
    let mut created = conf.clone();
    created["hostInterface"] = json!("brcni0");
    created["createBridge"] = json!(true);
    Call::new("ADD", "created", &g).run(&lan.host, &dir, &created).result();
    assert!(lan.host.links().contains(&"brcni0".to_string()), "{:?}", lan.host.links());
    Call::new("DEL", "created", &g).run(&lan.host, &dir, &created).silent();
    assert_eq!(lan.host.snapshot(), host_before);
}

#[test]
fn del_succeeds_when_the_namespace_vanished_after_add() {
    let lan = Lan::bridge(244);
    let dir = TestDir::new("cni-vanished");
    let host_before = lan.host.snapshot();
    let g = lan.guest("c");
    let conf = static_conf("1.0.0", &lan, 50);
    let result = Call::new("ADD", "vanish", &g).run(&lan.host, &dir, &conf).result();
    let host_end = result["interfaces"][0]["name"].as_str().expect("host end").to_string();
    let netns_path = g.path.to_str().unwrap().to_string();
    drop(g);
    assert!(
        wait_until(Duration::from_secs(5), || !lan.host.links().contains(&host_end)),
        "the host end {host_end} outlived its namespace"
    );
    let del = Call {
        command: "DEL",
        container_id: Some("vanish"),
        netns: Some(&netns_path),
        ifname: Some("eth0"),
        args: None,
    };
    del.run(&lan.host, &dir, &conf).silent();
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before);
    // The runtime may also give no CNI_NETNS at all once the namespace is gone.
    Call { netns: None, ..del }.run(&lan.host, &dir, &conf).silent();
}

#[test]
fn gc_removes_what_the_valid_list_leaves_out_and_only_on_its_network() {
    let lan = Lan::bridge(245);
    let dir = TestDir::new("cni-gc");
    let host_before = lan.host.snapshot();
    let guests: Vec<Netns> = (0..3).map(|_| lan.guest("c")).collect();
    let ids = ["gc0", "gc1", "gc2"];
    for (n, (id, g)) in ids.iter().zip(&guests).enumerate() {
        let conf = static_conf("1.1.0", &lan, 60 + n as u8);
        Call::new("ADD", id, g).run(&lan.host, &dir, &conf).result();
    }
    // Another network's attachment is not this GC's business.
    let other = lan.guest("other");
    let mut other_conf = static_conf("1.1.0", &lan, 70);
    other_conf["name"] = json!("othernet");
    Call::new("ADD", "gc0", &other).run(&lan.host, &dir, &other_conf).result();
    assert_eq!(record_and_lease_files(&dir).len(), 4);

    let mut gc = static_conf("1.1.0", &lan, 0);
    gc.as_object_mut().unwrap().remove("addresses");
    Call::bare("GC").run(&lan.host, &dir, &gc).error(7, "1.1.0");
    assert_eq!(record_and_lease_files(&dir).len(), 4, "GC without a list removes nothing");

    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc1", "ifname": "eth0"}]);
    Call::bare("GC").run(&lan.host, &dir, &gc).silent();
    let left = record_and_lease_files(&dir);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|f| f.contains("gc1+lantest")), "{left:?}");
    assert!(left.iter().any(|f| f.contains("gc0+othernet")), "{left:?}");
    assert!(!guests[0].links().contains(&"eth0".to_string()));
    assert!(guests[1].links().contains(&"eth0".to_string()));
    assert!(!guests[2].links().contains(&"eth0".to_string()));

    gc["cni.dev/valid-attachments"] = json!([]);
    Call::bare("GC").run(&lan.host, &dir, &gc).silent();
    let left = record_and_lease_files(&dir);
    assert_eq!(left.len(), 1, "{left:?}");
    Call::new("DEL", "gc0", &other).run(&lan.host, &dir, &other_conf).silent();
    assert!(record_and_lease_files(&dir).is_empty());
    assert_eq!(lan.host.snapshot(), host_before);
}

#[test]
fn status_is_50_when_the_state_dir_cannot_be_written() {
    let host = Netns::new("cni-status");
    let dir = TestDir::new("cni-status");
    let conf = json!({"cniVersion": "1.1.0", "name": "lantest", "type": "lanyard", "hostInterface": "br0"});
    Call::bare("STATUS").run(&host, &dir, &conf).silent();
    // The same state directory read-only, in a mount namespace of the plugin's own (the
    // test's mounts stay as they are).
    let state = dir.join("state");
    let mut command = host.command("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind -o ro \"$1\" \"$1\" && exec \"$2\"")
        .arg("sh")
        .arg(&state)
        .arg(env!("CARGO_BIN_EXE_lanyard"))
        .env("LANYARD_STATE_DIR", &state)
        .env("LANYARD_HOST_ID", "test-status")
        .env("CNI_COMMAND", "STATUS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn unshare");
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let details = run.error(50, "1.1.0");
    assert!(details.contains("not writable"), "{details}");
}

#[test]
fn dhcp_add_takes_a_lease_through_the_daemon_and_a_recreated_pod_gets_it_again() {
    let lan = Lan::bridge(246);
    let dir = TestDir::new("cni-dhcp");
    let _daemon = DaemonGuard::new(&dir);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.246.100", "198.18.246.200"), "2m", &[]);
    let host_before = lan.host.snapshot();
    for version in VERSIONS {
        let conf = json!({
            "cniVersion": version, "name": "lantest", "type": "lanyard",
            "hostInterface": "br0", "addressing": "dhcp",
        });
        Call::bare("STATUS").run(&lan.host, &dir, &conf).silent();
        let mut leased = Vec::new();
        // Two containers in turn for the same pod (re-created): the same stable client id and
        // MAC, so the same address.
        for attempt in ["a", "b"] {
            let g = lan.guest("pod");
            let id = format!("dhcp-{version}-{attempt}");
            let add = Call {
                args: Some("IgnoreUnknown=1;K8S_POD_NAME=web1"),
                ..Call::new("ADD", &id, &g)
            };
            let result = add.run(&lan.host, &dir, &conf).result();
            let address = result["ips"][0]["address"].as_str().expect("address").to_string();
            assert!(address.starts_with("198.18.246.") && address.ends_with("/24"), "{result}");
            check_add_result(&result, version, &g, &address, &lan.gateway4.to_string());
            assert!(g.addresses().iter().any(|a| a.contains(&address)), "{:?}", g.addresses());
            let lease = dnsmasq
                .leases()
                .into_iter()
                .find(|l| address.starts_with(&format!("{}/", l.ip)))
                .expect("dnsmasq knows the lease");
            assert_eq!(lease.hostname.as_deref(), Some("web1"));
            let mut checked = conf.clone();
            checked["prevResult"] = result;
            Call { command: "CHECK", ..add }.run(&lan.host, &dir, &checked).silent();
            Call { command: "DEL", ..add }.run(&lan.host, &dir, &checked).silent();
            dnsmasq.expect_release("br0", lease.ip, Duration::from_secs(3));
            assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
            leased.push(address);
        }
        assert_eq!(leased[0], leased[1], "{version}: the re-created pod asked for its address");
    }
    assert_eq!(lan.host.snapshot(), host_before);
}

#[test]
fn dhcp_add_without_a_server_is_try_again_later_and_leaves_nothing() {
    let lan = Lan::bridge(247);
    let dir = TestDir::new("cni-dhcp-none");
    let _daemon = DaemonGuard::new(&dir);
    let g = lan.guest("c");
    let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
    let conf = json!({
        "cniVersion": "1.0.0", "name": "lantest", "type": "lanyard",
        "hostInterface": "br0", "addressing": "dhcp", "dhcpTimeout": 1,
    });
    let details = Call::new("ADD", "noserver", &g).run(&lan.host, &dir, &conf).error(11, "1.0.0");
    assert!(details.contains("no DHCP offer on br0"), "{details}");
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before);
    assert_eq!(g.snapshot(), guest_before);
}

#[test]
fn a_chained_host_local_ipam_gives_the_addresses_and_releases_them_at_del() {
    let lan = Lan::bridge(234);
    let dir = TestDir::new("cni-host-local");
    let g = lan.guest("c");
    let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
    let data_dir = dir.join("host-local");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "lantest", "type": "lanyard", "hostInterface": "br0",
        "ipam": {
            "type": "host-local", "dataDir": data_dir,
            "ranges": [[{"subnet": "198.18.234.0/24", "rangeStart": "198.18.234.20",
                         "gateway": "198.18.234.1"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "198.19.0.0/16", "gw": "198.18.234.2"}],
        },
    });
    let lanyard = env!("CARGO_BIN_EXE_lanyard");
    let run =
        |call: Call, conf: &Value| call.run_program(lanyard, "/usr/lib/cni", &lan.host, &dir, conf);
    let add = Call::new("ADD", "hostlocal", &g);
    let result = run(add, &conf).result();
    check_add_result(&result, "1.0.0", &g, "198.18.234.20/24", "198.18.234.1");
    let routes = result["routes"].as_array().unwrap();
    assert!(routes.contains(&json!({"dst": "198.19.0.0/16", "gw": "198.18.234.2"})), "{result}");
    assert!(g.addresses().iter().any(|a| a.contains("198.18.234.20/24")), "{:?}", g.addresses());
    let guest_routes = g.routes();
    assert!(guest_routes.iter().any(|r| r.starts_with("default via 198.18.234.1 dev eth0")));
    assert!(guest_routes.iter().any(|r| r.starts_with("198.19.0.0/16 via 198.18.234.2 dev eth0")));
    let allocation = data_dir.join("lantest").join("198.18.234.20");
    assert!(allocation.exists(), "host-local recorded the allocation");

    let mut with_result = conf.clone();
    with_result["prevResult"] = result;
    run(Call { command: "CHECK", ..add }, &with_result).silent();
    run(Call { command: "DEL", ..add }, &with_result).silent();
    assert!(!allocation.exists(), "host-local released the address at DEL");
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(g.snapshot(), guest_before);
    assert_eq!(lan.host.snapshot(), host_before);

    // An attach that fails after the IPAM ADD gives the address back.
    let mut missing = conf.clone();
    missing["hostInterface"] = json!("brmissing0");
    let details = run(add, &missing).error(7, "1.0.0");
    assert!(details.contains("brmissing0"), "{details}");
    // host-local names an allocation by its address (the next ADD takes the next one).
    let allocations: Vec<String> = std::fs::read_dir(data_dir.join("lantest"))
        .expect("host-local's directory")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(allocations.is_empty(), "the failed ADD released its address: {allocations:?}");
    assert_eq!(g.snapshot(), guest_before);
}

#[test]
fn status_and_gc_are_passed_on_to_a_chained_ipam_plugin() {
    let host = Netns::new("host");
    let dir = TestDir::new("cni-ipam-passed");
    // An IPAM plugin that notes each command it is run for, and fails STATUS when told to.
    let bin = dir.join("cni-bin");
    std::fs::create_dir(&bin).expect("create the plugin directory");
    let plugin = bin.join("noting-ipam");
    std::fs::write(
        &plugin,
        "#!/bin/sh\n\
         echo \"$CNI_COMMAND\" >> \"$(dirname \"$0\")/calls\"\n\
         if [ \"$CNI_COMMAND\" = STATUS ] && [ -e \"$(dirname \"$0\")/down\" ]; then\n\
         echo '{\"cniVersion\": \"1.1.0\", \"code\": 50, \"msg\": \"down\", \"details\": \"told to be down\"}'\n\
         exit 1\n\
         fi\n",
    )
    .expect("write the plugin");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make it executable");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "lantest", "type": "lanyard", "hostInterface": "br0",
        "ipam": {"type": "noting-ipam"}, "cni.dev/valid-attachments": [],
    });
    let run = |call: Call| {
        call.run_program(env!("CARGO_BIN_EXE_lanyard"), bin.to_str().unwrap(), &host, &dir, &conf)
    };
    run(Call::bare("STATUS")).silent();
    run(Call::bare("GC")).silent();
    let calls = std::fs::read_to_string(bin.join("calls")).unwrap_or_default();
    assert_eq!(calls, "STATUS\nGC\n");
    std::fs::write(bin.join("down"), b"").expect("tell it to be down");
    let details = run(Call::bare("STATUS")).error(50, "1.1.0");
    assert!(details.contains("noting-ipam") && details.contains("told to be down"), "{details}");
}

#[test]
fn a_dhcp_attachment_keeps_its_kea_lease_for_five_lifetimes() {
    let (lan, _neighbour) = kea_lan(235);
    // Leases of 4 s, renewed after 1 s.
    const VALID: u64 = 4;
    let kea = Kea::start(&lan.host, "br0", KeaConfig::timed(235, VALID as u32, 1, 3));
    let dir = TestDir::new("cni-kea");
    let _daemon = DaemonGuard::new(&dir);
    let g = lan.guest("pod");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "lantest", "type": "lanyard",
        "hostInterface": "br0", "addressing": "dhcp",
    });
    let add = Call::new("ADD", "kea", &g);
    let result = add.run(&lan.host, &dir, &conf).result();
    let cidr = result["ips"][0]["address"].as_str().expect("address").to_string();
    let address: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    let started = std::time::Instant::now();
    let five_lifetimes = wait_until(Duration::from_secs(5 * VALID + 10), || {
        started.elapsed() >= Duration::from_secs(5 * VALID) && kea.renewals_of(address) >= 8
    });
    assert!(five_lifetimes, "renewals of {address}: {}", kea.renewals_of(address));
    assert!(g.addresses().iter().any(|a| a.contains(&cidr)), "{:?}", g.addresses());
    let mut checked = conf.clone();
    checked["prevResult"] = result;
    Call { command: "CHECK", ..add }.run(&lan.host, &dir, &checked).silent();
    Call { command: "DEL", ..add }.run(&lan.host, &dir, &checked).silent();
    assert!(wait_until(Duration::from_secs(3), || kea.released(address)), "Kea saw no RELEASE");
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
}

#[test]
fn the_documented_conflists_are_accepted_by_the_plugin() {
    for file in ["lanyard.conflist", "lanyard-static.conflist", "lanyard-ipam.conflist"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cni").join(file);
        let list: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read it"))
            .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        // The runtime copies the list's name and version into each plugin's conf.
        let mut conf = list["plugins"][0].clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        if lanyard::cni::ipam::is_ipam_conf(&conf) {
            match lanyard::cni::ipam::parse(&conf) {
                Ok(parsed) => assert_eq!(parsed.ipam_of.as_deref(), Some("bridge"), "{file}"),
                Err(e) => panic!("{file} is refused: {e:?}"),
            }
            continue;
        }
        let conf = lanyard::cni::conf::parse(conf.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{file} is refused: {e:?}"));
        conf.check_common().unwrap_or_else(|e| panic!("{file} is refused: {e:?}"));
        if let Err(e) = conf.wanted(&lanyard::cni::conf::CniArgs::default()) {
            panic!("{file} is refused: {e:?}");
        }
    }
}

#[test]
fn a_cni_lease_is_resumed_by_a_restarted_daemon_and_released_by_del() {
    let lan = Lan::bridge(239);
    let dir = TestDir::new("cni-resume");
    let daemon = DaemonGuard::new(&dir);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.239.100", "198.18.239.200"), "2m", &[]);
    let g = lan.guest("pod");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "lantest", "type": "lanyard",
        "hostInterface": "br0", "addressing": "dhcp",
    });
    let add = Call::new("ADD", "resume", &g);
    let result = add.run(&lan.host, &dir, &conf).result();
    let address = result["ips"][0]["address"].as_str().expect("address").to_string();
    let first = daemon.pid().expect("the ADD started the daemon");
    assert!(daemon.kill(libc::SIGKILL));
    // STATUS of a DHCP network brings a daemon up again; it finds the guest by its recorded
    // namespace path and keeps the lease.
    Call::bare("STATUS").run(&lan.host, &dir, &conf).silent();
    let second = daemon.pid().expect("a daemon answers after STATUS");
    assert_ne!(first, second);
    let leases = |dir: &TestDir| -> Value {
        serde_json::from_str(&cli::ok(cli::run(&lan.host, dir, &["leases", "--json"])))
            .expect("leases JSON")
    };
    let bound = wait_until(Duration::from_secs(5), || {
        leases(&dir).as_array().is_some_and(|all| {
            all.iter().any(|l| l["State"] == "BOUND" && l["Address"] == address.as_str())
        })
    });
    assert!(bound, "the restarted daemon holds {address}: {}", leases(&dir));
    assert!(g.addresses().iter().any(|a| a.contains(&address)), "{:?}", g.addresses());
    Call { command: "DEL", ..add }.run(&lan.host, &dir, &conf).silent();
    let ip = address.split('/').next().unwrap().parse().unwrap();
    dnsmasq.expect_release("br0", ip, Duration::from_secs(3));
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
}

#[test]
fn concurrent_adds_as_a_node_starting_pods_all_succeed_with_distinct_macs() {
    let lan = Lan::bridge(238);
    let dir = TestDir::new("cni-parallel");
    let host_before = lan.host.snapshot();
    let guests: Vec<Netns> = (0..8).map(|_| lan.guest("c")).collect();
    let ids: Vec<String> = (0..8).map(|n| format!("par{n}")).collect();
    let results: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = guests
            .iter()
            .zip(&ids)
            .enumerate()
            .map(|(n, (g, id))| {
                let (lan, dir) = (&lan, &dir);
                scope.spawn(move || {
                    let conf = static_conf("1.1.0", lan, 100 + n as u8);
                    Call::new("ADD", id, g).run(&lan.host, dir, &conf)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("ADD thread")).collect()
    });
    let mut macs: Vec<String> = results
        .iter()
        .map(|run| {
            let result = run.result();
            let guest = result["interfaces"].as_array().unwrap().last().unwrap().clone();
            guest["mac"].as_str().expect("mac").to_string()
        })
        .collect();
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), 8, "distinct MACs: {macs:?}");
    assert_eq!(record_and_lease_files(&dir).len(), 8);
    let mut gc = static_conf("1.1.0", &lan, 100);
    gc["cni.dev/valid-attachments"] = json!([]);
    Call::bare("GC").run(&lan.host, &dir, &gc).silent();
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before);
}

#[test]
fn gc_releases_a_lease_whose_record_was_lost() {
    let lan = Lan::bridge(237);
    let dir = TestDir::new("cni-gc-orphan");
    let _daemon = DaemonGuard::new(&dir);
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.237.100", "198.18.237.200"), "2m", &[]);
    let g = lan.guest("pod");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "lantest", "type": "lanyard",
        "hostInterface": "br0", "addressing": "dhcp",
    });
    let result = Call::new("ADD", "orphan", &g).run(&lan.host, &dir, &conf).result();
    let address = result["ips"][0]["address"].as_str().expect("address").to_string();
    // The record goes behind lanyard's back; the daemon still holds (and would renew) the lease.
    let record = dir.join("state/cni-orphan+lantest@eth0.json");
    std::fs::remove_file(&record).expect("remove the record");
    assert_eq!(record_and_lease_files(&dir), ["state/leases/cni-orphan+lantest@eth0.json"]);
    // A GC of another network leaves it alone.
    let mut other = conf.clone();
    other["name"] = json!("othernet");
    other["cni.dev/valid-attachments"] = json!([]);
    Call::bare("GC").run(&lan.host, &dir, &other).silent();
    assert_eq!(record_and_lease_files(&dir).len(), 1);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    Call::bare("GC").run(&lan.host, &dir, &gc).silent();
    let ip = address.split('/').next().unwrap().parse().unwrap();
    dnsmasq.expect_release("br0", ip, Duration::from_secs(3));
    assert!(record_and_lease_files(&dir).is_empty(), "{:?}", record_and_lease_files(&dir));
}

/// Podman 4.3 with its CNI backend, everything under a test directory (LAB.md's recipe), every
/// command run inside the lab host namespace so the root namespace is never touched.
struct Podman<'a> {
    host: &'a Netns,
    dir: TestDir,
    /// /var/lib/cni and /var/lib/containers, which podman writes whatever the config says:
    /// removed at the end when this test made them, else only what it added there.
    made_var_lib: Vec<std::path::PathBuf>,
}

impl<'a> Podman<'a> {
    fn new(host: &'a Netns, state: &std::path::Path, conflists: &[(&str, Value)]) -> Podman<'a> {
        let made_var_lib = ["/var/lib/cni", "/var/lib/containers"]
            .iter()
            .map(std::path::PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        let dir = TestDir::new("podman");
        let p = dir.path().display().to_string();
        for sub in ["plugins", "cni", "tmp", "root", "runroot", "rootfs/bin"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lanyard"), dir.join("plugins/lanyard"))
            .unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_subnet = \"198.19.201.0/24\"\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [network]\nnetwork_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{p}/plugins\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{p}/cni\"\ndefault_network = \"testdefault\"\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\nevents_logfile_path = \"{p}/events.log\"\n\
                 tmp_dir = \"{p}/tmp\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!("[storage]\ndriver = \"vfs\"\nrunroot = \"{p}/runroot\"\ngraphroot = \"{p}/root\"\n"),
        )
        .unwrap();
        for (name, conflist) in conflists {
            std::fs::write(dir.join(format!("cni/{name}.conflist")), conflist.to_string()).unwrap();
        }
        std::fs::copy("/bin/busybox", dir.join("rootfs/bin/busybox")).expect("busybox-static");
        for tool in ["sh", "sleep", "ip"] {
            std::os::unix::fs::symlink("busybox", dir.join(format!("rootfs/bin/{tool}"))).unwrap();
        }
        let tar = std::process::Command::new("tar")
            .args(["-C", &format!("{p}/rootfs"), "-cf", &format!("{p}/rootfs.tar"), "."])
            .status()
            .unwrap();
        assert!(tar.success());
        let podman = Podman { host, dir, made_var_lib };
        podman.ok(&["import", &format!("{p}/rootfs.tar"), "localhost/test/busybox"], state);
        podman
    }

    fn run(&self, args: &[&str], state: &std::path::Path) -> Output {
        self.host
            .command("podman")
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("LANYARD_STATE_DIR", state)
            .env("LANYARD_HOST_ID", format!("test-{}", support::lab::run_id()))
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str], state: &std::path::Path) -> String {
        let out = self.run(args, state);
        assert!(out.status.success(), "podman {args:?}: {}", cli::text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The container's IPv4 address on eth0, as the container sees it.
    fn address(&self, name: &str, state: &std::path::Path) -> String {
        let shown = self.ok(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"], state);
        shown
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap_or_else(|| panic!("no IPv4 address on eth0: {shown}"))
            .to_string()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["system", "reset", "--force"], &self.dir.join("state"));
        for made in &self.made_var_lib {
            let _ = std::fs::remove_dir_all(made);
        }
    }
}

/// Podman runs a stopped container's DEL from its cleanup process, which may finish after the
/// podman command returns: wait (bounded) for the records and leases to go.
fn no_records(dir: &TestDir) -> bool {
    wait_until(Duration::from_secs(5), || record_and_lease_files(dir).is_empty())
}

#[test]
fn podman_runs_containers_on_lanyard_networks_static_and_dhcp() {
    let lan = Lan::bridge(236);
    let dir = TestDir::new("cni-podman");
    let daemon = DaemonGuard::new(&dir);
    let state = dir.join("state");
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.236.100", "198.18.236.200"), "2m", &[]);
    let host_before = lan.host.snapshot();
    let network = |name: &str, plugin: Value| json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
    let static_net = format!("lystatic{}", support::lab::run_id());
    let dhcp_net = format!("lydhcp{}", support::lab::run_id());
    let podman = Podman::new(
        &lan.host,
        &state,
        &[
            (
                &static_net,
                network(
                    &static_net,
                    json!({"type": "lanyard", "hostInterface": "br0", "stateDir": state,
                           "addresses": ["198.18.236.0/24"], "gateway": "198.18.236.1"}),
                ),
            ),
            (
                &dhcp_net,
                network(
                    &dhcp_net,
                    json!({"type": "lanyard", "hostInterface": "br0", "addressing": "dhcp",
                           "stateDir": state}),
                ),
            ),
        ],
    );
    let image = "localhost/test/busybox";

    // Static: podman passes --ip as IP= in CNI_ARGS; the conf's subnet gives its prefix.
    let web = format!("lyweb{}", support::lab::run_id());
    podman.ok(
        &[
            "run",
            "-d",
            "--name",
            &web,
            "--network",
            &static_net,
            "--ip",
            "198.18.236.77",
            image,
            "sleep",
            "300",
        ],
        &state,
    );
    assert_eq!(podman.address(&web, &state), "198.18.236.77/24");
    assert_eq!(record_and_lease_files(&dir).len(), 1);
    podman.ok(&["stop", "-t", "0", &web], &state);
    assert!(no_records(&dir), "stop is a DEL: {:?}", record_and_lease_files(&dir));
    podman.ok(&["start", &web], &state);
    assert_eq!(podman.address(&web, &state), "198.18.236.77/24");
    podman.ok(&["rm", "-f", "-t", "0", &web], &state);
    assert!(no_records(&dir), "{:?}", record_and_lease_files(&dir));

    // DHCP: podman passes its container name as K8S_POD_NAME, so stop/start asks for (and gets)
    // the same address, and the server knows the container by name.
    let db = format!("lydb{}", support::lab::run_id());
    podman.ok(&["run", "-d", "--name", &db, "--network", &dhcp_net, image, "sleep", "300"], &state);
    let first = podman.address(&db, &state);
    assert!(first.starts_with("198.18.236.1"), "{first}");
    let ip: std::net::Ipv4Addr = first.split('/').next().unwrap().parse().unwrap();
    let lease = dnsmasq.leases().into_iter().find(|l| l.ip == ip).expect("dnsmasq's lease");
    assert_eq!(lease.hostname.as_deref(), Some(db.as_str()));
    podman.ok(&["stop", "-t", "0", &db], &state);
    dnsmasq.expect_release("br0", ip, Duration::from_secs(3));
    podman.ok(&["start", &db], &state);
    assert_eq!(podman.address(&db, &state), first, "the same address after stop and start");
    podman.ok(&["rm", "-f", "-t", "0", &db], &state);
    assert!(no_records(&dir), "{:?}", record_and_lease_files(&dir));
    assert!(daemon.pid().is_some(), "the plugin started the lease daemon");
    assert_eq!(lan.host.snapshot(), host_before, "podman rm leaves the host as before");
}
