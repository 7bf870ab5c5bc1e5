//! The command line: every bad input gets a non-zero exit and one clear line, and leaves both
//! namespaces and the state directory exactly as they were; pipework's syntax.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};
use std::time::Duration;

use support::lab::{self, Lan, Netns, TestDir};

fn cli_env(ns: &Netns, dir: &TestDir, args: &[&str], as_nobody: bool) -> Output {
    // As nobody the namespace cannot be entered (setns needs CAP_SYS_ADMIN, and std drops the
    // uid before pre_exec): it runs where the test runs, and must refuse before touching anything.
    let mut command = if as_nobody {
        Command::new(env!("CARGO_BIN_EXE_lanyard"))
    } else {
        ns.command(env!("CARGO_BIN_EXE_lanyard"))
    };
    command
        .args(args)
        .env("LANYARD_STATE_DIR", dir.join("state"))
        .env("LANYARD_HOST_ID", format!("test-{}", lab::run_id()))
        .env("DOCKER_HOST", format!("unix://{}", dir.join("no-docker.sock").display()))
        .stdin(Stdio::null());
    if as_nobody {
        command.uid(65534).gid(65534);
    }
    command.output().expect("run lanyard")
}

fn cli(ns: &Netns, dir: &TestDir, args: &[&str]) -> Output {
    cli_env(ns, dir, args, false)
}

#[test]
fn bad_input_is_refused_with_one_line_and_changes_nothing() {
    lab::require_root();
    let lan = Lan::bridge(20);
    let dir = TestDir::new("badinput");
    let g = lan.guest("g");
    let holder = lan.guest("holder");
    let token = format!("netns:{}", g.name);
    // A port of br0 (a bridge port cannot carry a macvlan) and an address owner for --probe.
    lan.plug(&holder, "holderport", "eth0");
    holder.ip(&["addr", "add", "198.18.20.77/24", "dev", "eth0"]);
    g.ip_batch("link add taken type veth peer name takenpeer");
    // Two host interfaces sharing one MAC: `mac:` cannot tell which one is meant.
    lan.host.ip_batch(
        "link add dupa address 02:00:00:00:14:aa type veth peer name dupb address 02:00:00:00:14:aa",
    );
    assert!(lan.wait_forwarding("holderport", Duration::from_secs(3)));
    let host_path = lan.host.path.display().to_string();
    let long_name = "abcdefghijklmnop";

    // (args, expected exit code, a piece of the message)
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["attach", "br0", "nosuchcontainer", "198.18.20.5/24"], 1, "Docker"),
        (vec!["attach", "br0", &token, "dhcp", "--hostname", "bad name"], 2, "hostname"),
        (vec!["attach", "br0", &token, "dhcp", "--timeout", "0"], 2, "--timeout"),
        (
            vec!["attach", "br0", &token, "198.18.20.5/24", "--set-resolv"],
            2,
            "need the address dhcp",
        ),
        (vec!["attach", "br0", &token, "dhcp", "198.18.20.5/24"], 2, "exclude each other"),
        (vec!["attach", "br0", &host_path, "dhcp", "--set-resolv"], 2, "--set-resolv needs"),
        (vec!["attach", "br0", "pid:999999999", "198.18.20.5/24"], 1, "no process 999999999"),
        (
            vec!["attach", "br0", "netns:nosuchns-lanyard", "198.18.20.5/24"],
            1,
            "no network namespace named",
        ),
        (vec!["attach", "eth9", &token, "198.18.20.5/24"], 1, "host interface eth9 does not exist"),
        (vec!["attach", "lo", &token, "198.18.20.5/24"], 2, "loopback"),
        (vec!["attach", "holderport", &token, "198.18.20.5/24"], 2, "is a port of a bridge"),
        (
            vec!["attach", "br0", &token, "198.18.20.5/24", "-i", "taken"],
            1,
            "interface taken already exists",
        ),
        (
            vec!["attach", "br0", &token, "198.18.20.5/24", "-i", long_name],
            2,
            "guest interface name",
        ),
        (
            vec!["attach", "br0", &token, "198.18.20.5/24", "-l", long_name],
            2,
            "host interface name",
        ),
        (vec!["attach", "br0", &token, "198.18.20.300/24"], 2, "not an IP address"),
        (vec!["attach", "br0", &token, "198.18.20.5"], 2, "prefix"),
        (
            vec!["attach", "br0", &token, "198.18.20.5/24", "--mac", "01:00:5e:00:00:01"],
            2,
            "multicast",
        ),
        (vec!["attach", "br0", &token, "198.18.20.5/24", "--mac", "02:00:zz:00:00:01"], 2, "MAC"),
        (vec!["attach", "br0", &token, "198.18.20.5/24", "--mtu", "50"], 2, "MTU"),
        (vec!["attach", "br0", &token, "198.18.20.5/24", "--mtu", "70000"], 2, "MTU"),
        (
            vec!["attach", "br0", &token, "198.18.20.5/24", "--mtu", "9000"],
            2,
            "exceeds the MTU of br0",
        ),
        (vec!["attach", "br0", &token, "198.18.20.5/24@198.18.20.5"], 2, "the address itself"),
        (
            vec!["attach", "br0", &token, "198.18.20.5/24", "--route", "198.19.0.0/16@198.18.99.1"],
            2,
            "neither inside an address given",
        ),
        (
            vec!["attach", "br0", &host_path, "198.18.20.5/24"],
            1,
            "shares the host's network namespace",
        ),
        (vec!["attach", "br0", &token, "198.18.20.77/24", "--probe=200"], 1, "already in use"),
        (vec!["attach", "br0", &token, "none", "198.18.20.5/24"], 2, "none"),
        (vec!["attach", "--host-only", "br0", &token, "198.18.20.5/24"], 1, "already exists"),
        (
            vec!["pipework", "br0", &token, "198.18.20.5/24@198.18.20.1", "02:00:00:00:00:01@10"],
            2,
            "unsupported by lanyard",
        ),
        (vec!["pipework", "ovsbr0", &token, "198.18.20.5/24"], 2, "unsupported by lanyard"),
        (
            vec!["pipework", "mac:02:00:00:00:14:bb", &token, "198.18.20.5/24"],
            1,
            "no interface in the host namespace has MAC address 02:00:00:00:14:bb",
        ),
        (
            vec!["pipework", "mac:02:00:00:00:14:aa", &token, "198.18.20.5/24"],
            1,
            "several host interfaces have MAC address 02:00:00:00:14:aa: dupa, dupb",
        ),
        (vec!["pipework", "mac:02:00:00:00:14", &token, "198.18.20.5/24"], 2, "bad MAC address"),
        (
            vec!["pipework", "route", &token, "add", "198.19.5.6/24", "via", "198.18.20.1"],
            2,
            "Invalid prefix for given prefix length",
        ),
        (
            vec!["pipework", "route"],
            2,
            "usage: route GUEST add|del|replace PREFIX|default [via GATEWAY]",
        ),
        (vec!["pipework", "rule", &token, "add", "from", "all"], 2, "unsupported by lanyard"),
        (vec!["pipework", "tc", &token, "qdisc", "add"], 2, "unsupported by lanyard"),
        (
            vec!["pipework", "--direct-phys", "eth9", &token, "198.18.20.5/24"],
            2,
            "unsupported by lanyard",
        ),
    ];
    for (args, code, needle) in cases {
        let host_before = lan.host.snapshot();
        let guest_before = g.snapshot();
        let state_before = lab::state_files(&dir);
        let out = cli(&lan.host, &dir, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: expected {needle:?} in {stderr:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: one line, got {stderr:?}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(lan.host.snapshot(), host_before, "{args:?}: host changed");
        assert_eq!(g.snapshot(), guest_before, "{args:?}: guest changed");
        assert_eq!(lab::state_files(&dir), state_before, "{args:?}: state changed");
    }

    // Not root.
    let out = cli_env(&lan.host, &dir, &["attach", "br0", &token, "198.18.20.5/24"], true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}

#[test]
fn pipework_syntax_attaches_routes_and_waits() {
    lab::require_root();
    let lan = Lan::bridge(21);
    let dir = TestDir::new("pipework");
    let g = lan.guest("g");
    let token = format!("netns:{}", g.name);

    // --wait, run inside the guest before the interface exists, returns once it is up.
    let waiter = g
        .command(env!("CARGO_BIN_EXE_lanyard"))
        .args(["pipework", "--wait", "-i", "eth1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = cli(
        &lan.host,
        &dir,
        &[
            "pipework",
            "br0",
            "-i",
            "eth1",
            &token,
            "198.18.21.5/24@198.18.21.1",
            "02:42:c6:12:15:05",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let waited = waiter.wait_with_output().unwrap();
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));
    assert!(g.ip(&["link", "show", "eth1"]).contains("02:42:c6:12:15:05"));

    let out = cli(
        &lan.host,
        &dir,
        &["pipework", "route", &token, "add", "198.19.5.0/24", "via", "198.18.21.254"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        g.routes().iter().any(|r| r.contains("198.19.5.0/24 via 198.18.21.254 dev eth1")),
        "{:?}",
        g.routes()
    );
    let out = cli(
        &lan.host,
        &dir,
        &["pipework", "route", &token, "del", "198.19.5.0/24", "via", "198.18.21.254"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!g.routes().iter().any(|r| r.contains("198.19.5.0/24")));

    // The binary invoked as `pipework`.
    let link = dir.join("pipework");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lanyard"), &link).unwrap();
    let out = lan
        .host
        .command(&link)
        .args(["br0", "-i", "eth2", &token, "198.18.21.6/24"])
        .env("LANYARD_STATE_DIR", dir.join("state"))
        .env("LANYARD_HOST_ID", "pipework-test")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(g.addresses().iter().any(|a| a.contains("eth2") && a.contains("198.18.21.6/24")));

    // The host interface named by its MAC, as pipework's `mac:HOSTMAC` (br0's, set by the lab).
    let bridge_ports = || lan.host.ip(&["-o", "link", "show", "master", "br0"]).lines().count();
    let ports_before = bridge_ports();
    let out = cli(
        &lan.host,
        &dir,
        &["pipework", "mac:02:00:C6:12:15:01", "-i", "eth3", &token, "198.18.21.7/24"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(g.addresses().iter().any(|a| a.contains("eth3") && a.contains("198.18.21.7/24")));
    assert_eq!(bridge_ports(), ports_before + 1, "eth3's host end joined br0");

    let out = cli(&lan.host, &dir, &["detach", &token]);
    assert!(out.status.success());
    assert!(lab::state_files(&dir).is_empty());

    // --wait gives up (bounded) rather than hanging forever... checked with a short timeout
    // through the library, since the CLI's is 60 s.
    let err = g
        .run_in(|| lanyard::cli::wait_for_interface("nothere0", Duration::from_millis(200)))
        .unwrap_err();
    assert!(err.to_string().contains("did not appear"), "{err}");
    // Stricter than pipework, which returned once the interface existed: present but down is
    // not ready (README, migration table).
    g.ip_batch("link add downa type veth peer name downb");
    let err = g
        .run_in(|| lanyard::cli::wait_for_interface("downa", Duration::from_millis(200)))
        .unwrap_err();
    assert!(err.to_string().contains("downa up: not ready"), "{err}");
}

#[test]
fn help_explains_guests_and_state() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["attach", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "pid:N",
        "netns:NAME",
        "--host-only",
        "--probe",
        "--mac-scheme",
        "CIDR[@GATEWAY]",
        "lanyard attach br0 web",
    ] {
        assert!(
            help.contains(needle)
                || String::from_utf8_lossy(
                    &Command::new(env!("CARGO_BIN_EXE_lanyard"))
                        .arg("--help")
                        .output()
                        .unwrap()
                        .stdout
                )
                .contains(needle),
            "--help lacks {needle}"
        );
    }
}

use std::process::Command;
