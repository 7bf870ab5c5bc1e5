//! Real Docker: a private dockerd per test, a locally imported busybox image, containers named
//! by name and by ID, restarts, and a container that already has Docker's own eth0.

mod support;

use std::process::{Output, Stdio};

use support::cli::ok;
use support::docker::DockerLab;
use support::lab::{self, Lan, Netns, TestDir};

fn cli(ns: &Netns, dir: &TestDir, docker: &DockerLab, args: &[&str]) -> Output {
    let (key, value) = docker.env();
    support::cli::command(ns, dir, args).env(key, value).output().expect("run lanyard")
}

fn fails(out: Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure with {needle:?}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr:?}");
}

fn mac_in(docker: &DockerLab, container: &str) -> String {
    let out = docker.docker_ok(&["exec", container, "cat", "/sys/class/net/eth1/address"]);
    out.trim().to_string()
}

#[test]
fn containers_by_name_and_id_keep_their_mac_across_restarts() {
    lab::require_root();
    let lan = Lan::bridge(30);
    let dir = TestDir::new("docker");
    let docker = DockerLab::start();
    let id = docker.run("web", &["--net", "none"]);
    let host_before = lan.host.snapshot();

    ok(cli(&lan.host, &dir, &docker, &["attach", "br0", "web", "198.18.30.10/24@198.18.30.1"]));
    docker.docker_ok(&["exec", "web", "ping", "-c", "1", "-W", "2", "198.18.30.1"]);
    let mac = mac_in(&docker, "web");
    assert!(mac.starts_with("02:"), "{mac}");
    let view: serde_json::Value =
        serde_json::from_str(&ok(cli(&lan.host, &dir, &docker, &["inspect", "web"]))).unwrap();
    assert_eq!(view["Container"], "web");
    assert_eq!(view["NetworkSettings"]["HWAddr"], mac.as_str());

    // Detach by a short ID, attach again by the full ID: the same container, the same MAC.
    ok(cli(&lan.host, &dir, &docker, &["detach", &id[..12]]));
    assert_eq!(lan.host.snapshot(), host_before);
    ok(cli(&lan.host, &dir, &docker, &["attach", "br0", &id, "198.18.30.10/24"]));
    assert_eq!(mac_in(&docker, "web"), mac);

    // A restart gives the container a new namespace (the old veth dies with the old one); the
    // stale record is replaced and the MAC stays.
    docker.docker_ok(&["restart", "-t", "0", "web"]);
    ok(cli(&lan.host, &dir, &docker, &["attach", "br0", "web", "198.18.30.10/24@198.18.30.1"]));
    assert_eq!(mac_in(&docker, "web"), mac);
    docker.docker_ok(&["exec", "web", "ping", "-c", "1", "-W", "2", "198.18.30.1"]);
    ok(cli(&lan.host, &dir, &docker, &["detach", "web"]));
    assert_eq!(lan.host.snapshot(), host_before);

    // Stopped, missing and --net host containers are refused with a clear line.
    docker.docker_ok(&["stop", "-t", "0", "web"]);
    fails(
        cli(&lan.host, &dir, &docker, &["attach", "br0", "web", "198.18.30.10/24"]),
        "is not running",
    );
    fails(
        cli(&lan.host, &dir, &docker, &["attach", "br0", "nosuch", "198.18.30.10/24"]),
        "no container",
    );
    docker.run("hostnet", &["--net", "host"]);
    fails(
        cli(&lan.host, &dir, &docker, &["attach", "br0", "hostnet", "198.18.30.11/24"]),
        "uses the host's network",
    );
    assert_eq!(lan.host.snapshot(), host_before);
}

#[test]
fn a_container_with_dockers_own_eth0_gets_a_second_interface_and_its_route_back() {
    lab::require_root();
    let lan = Lan::bridge(31);
    let dir = TestDir::new("docker-eth0");
    // dockerd lives in a namespace of its own, so its docker0 never touches the root namespace.
    let docker_ns = Netns::new("dockerd");
    let docker = DockerLab::start_in_netns(&docker_ns.path, "198.19.250.1/24");
    docker.run("app", &[]);
    let routes_before = docker.docker_ok(&["exec", "app", "ip", "route"]);
    assert!(routes_before.contains("default via 198.19.250.1 dev eth0"), "{routes_before}");

    ok(cli(&lan.host, &dir, &docker, &["attach", "br0", "app", "198.18.31.10/24@198.18.31.1"]));
    let routes = docker.docker_ok(&["exec", "app", "ip", "route"]);
    assert!(routes.contains("default via 198.18.31.1 dev eth1"), "{routes}");
    assert!(!routes.contains("default via 198.19.250.1"), "{routes}");
    docker.docker_ok(&["exec", "app", "ping", "-c", "1", "-W", "2", "198.18.31.1"]);

    ok(cli(&lan.host, &dir, &docker, &["detach", "app"]));
    let routes_after = docker.docker_ok(&["exec", "app", "ip", "route"]);
    assert_eq!(routes_after, routes_before);
}

#[test]
fn a_bare_number_is_a_pid_only_when_docker_has_no_such_container() {
    lab::require_root();
    let lan = Lan::bridge(32);
    let dir = TestDir::new("docker-pid");
    let docker = DockerLab::start();
    let g = lan.guest("g");
    let mut sleeper = g.command("sleep").arg("120").stdin(Stdio::null()).spawn().unwrap();
    let pid = sleeper.id().to_string();

    ok(cli(&lan.host, &dir, &docker, &["attach", "br0", &pid, "198.18.32.5/24"]));
    assert!(g.addresses().iter().any(|a| a.contains("198.18.32.5/24")));
    ok(cli(&lan.host, &dir, &docker, &["detach", &format!("pid:{pid}")]));

    // A container named like the pid: the bare token is ambiguous and refused; pid:N is not.
    docker.run(&pid, &["--net", "none"]);
    fails(
        cli(&lan.host, &dir, &docker, &["attach", "br0", &pid, "198.18.32.5/24"]),
        "is both container",
    );
    ok(cli(&lan.host, &dir, &docker, &["attach", "br0", &format!("pid:{pid}"), "198.18.32.5/24"]));
    ok(cli(&lan.host, &dir, &docker, &["detach", &format!("pid:{pid}")]));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

fn ipv4_in(docker: &DockerLab, container: &str) -> String {
    let out =
        docker.docker_ok(&["exec", container, "ip", "-4", "-o", "addr", "show", "dev", "eth1"]);
    out.split_whitespace().skip_while(|w| *w != "inet").nth(1).unwrap_or_default().to_string()
}

/// An image whose /etc/resolv.conf is an absolute symlink (as systemd-resolved images have).
fn import_symlinked_image(docker: &DockerLab, dir: &TestDir) -> String {
    let rootfs = dir.join("symlinked-rootfs");
    for sub in ["bin", "etc/real", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "cat", "ip", "ls", "readlink", "umount", "rm", "ln"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/real/resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
    std::os::unix::fs::symlink("/etc/real/resolv.conf", rootfs.join("etc/resolv.conf")).unwrap();
    let tarball = dir.join("symlinked.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    docker.docker_ok(&["import", tarball.to_str().unwrap(), "lanyard-test/symlinked:latest"]);
    "lanyard-test/symlinked:latest".to_string()
}

#[test]
fn containers_get_leases_and_dns_and_the_same_address_after_a_restart() {
    lab::require_root();
    let mut resolv = support::dhcp::HostResolvConf::snapshot();
    let lan = Lan::bridge(33);
    let dir = TestDir::new("docker-dhcp");
    let docker = DockerLab::start();
    let _dnsmasq = support::dhcp::Dnsmasq::start_with_dns(
        &lan.host,
        "br0",
        ("198.18.33.100", "198.18.33.200"),
        "2m",
        "lab.example",
        &[],
    );
    struct StopDaemon(std::path::PathBuf);
    impl Drop for StopDaemon {
        fn drop(&mut self) {
            let ping = lanyard::daemon::control::Request::Ping;
            if let Ok(Some(answer)) = lanyard::daemon::control::try_request(
                &self.0,
                &ping,
                std::time::Duration::from_secs(2),
            ) {
                if let Some(pid) = answer.data["pid"].as_i64() {
                    // SAFETY: kill(2) on the pid the daemon reported.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
            }
        }
    }
    let _daemon = StopDaemon(dir.join("state"));

    docker.run("web", &["--net", "none"]);
    ok(cli(&lan.host, &dir, &docker, &["attach", "br0", "web", "dhcp", "--set-resolv"]));
    let first = ipv4_in(&docker, "web");
    assert!(first.starts_with("198.18.33."), "{first}");
    let conf = docker.docker_ok(&["exec", "web", "cat", "/etc/resolv.conf"]);
    assert!(conf.contains("nameserver 198.18.33.1") && conf.contains("lab.example"), "{conf}");

    // A guest whose resolv.conf is an absolute symlink: followed inside the container's root.
    // Docker's init layer and bind mount shadow an image's symlink, so the container makes the
    // symlink itself at start (CAP_SYS_ADMIN only to unmount Docker's file; --net none).
    let image = import_symlinked_image(&docker, &dir);
    let script = "umount /etc/resolv.conf; rm -f /etc/resolv.conf; \
                  ln -s /etc/real/resolv.conf /etc/resolv.conf; exec sleep 3600";
    docker.docker_ok(&[
        "run",
        "-d",
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        "apparmor=unconfined",
        "--net",
        "none",
        "--name",
        "linked",
        &image,
        "sh",
        "-c",
        script,
    ]);
    let linked = lab::wait_until(std::time::Duration::from_secs(5), || {
        docker.docker(&["exec", "linked", "readlink", "/etc/resolv.conf"]).status.success()
    });
    assert!(linked, "the container made its symlink");
    ok(cli(&lan.host, &dir, &docker, &["attach", "br0", "linked", "dhcp", "--set-resolv"]));
    let conf = docker.docker_ok(&["exec", "linked", "cat", "/etc/resolv.conf"]);
    assert!(conf.contains("nameserver 198.18.33.1"), "{conf}");
    let link = docker.docker_ok(&["exec", "linked", "readlink", "/etc/resolv.conf"]);
    assert_eq!(link.trim(), "/etc/real/resolv.conf", "the symlink itself is left alone");

    // A restart: the daemon sees the container's process exit and removes the host end; the
    // lease stays recorded, and attaching again gets the same address.
    let ports_before = lan.host.ip(&["-o", "link", "show", "master", "br0"]).lines().count();
    docker.docker_ok(&["restart", "-t", "0", "web"]);
    let shrunk = lab::wait_until(std::time::Duration::from_secs(5), || {
        lan.host.ip(&["-o", "link", "show", "master", "br0"]).lines().count() < ports_before
    });
    assert!(shrunk, "the host end of the dead container's link is removed");
    ok(cli(&lan.host, &dir, &docker, &["attach", "br0", "web", "dhcp"]));
    assert_eq!(ipv4_in(&docker, "web"), first, "same container, same address after a restart");

    ok(cli(&lan.host, &dir, &docker, &["detach", "web"]));
    ok(cli(&lan.host, &dir, &docker, &["detach", "linked"]));
    resolv.assert_unchanged();
}

/// The host end lanyard recorded for `guest_ifname` of the container named `name`.
fn recorded_host_end(dir: &TestDir, name: &str) -> String {
    std::fs::read_dir(dir.join("state"))
        .expect("state dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).ok()?).ok()
        })
        .find(|r| r["guest"]["name"] == name)
        .and_then(|r| r["host_ifname"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no record for container {name}"))
}

#[test]
fn detach_succeeds_when_the_container_was_removed_or_dockerd_is_down() {
    lab::require_root();
    let lan = Lan::bridge(217);
    let dir = TestDir::new("docker-gone");
    let mut docker = DockerLab::start();
    docker.run("web", &["--net", "none"]);
    docker.run("db", &["--net", "none"]);
    let host_before = lan.host.snapshot();
    // `@GW` makes detach look for the container's namespace (to give routes back): it must
    // cope with a container Docker no longer knows, and with no Docker at all.
    for (name, address) in
        [("web", "198.18.217.10/24@198.18.217.1"), ("db", "198.18.217.11/24@198.18.217.1")]
    {
        ok(cli(&lan.host, &dir, &docker, &["attach", "br0", name, address]));
    }
    let (web_end, db_end) = (recorded_host_end(&dir, "web"), recorded_host_end(&dir, "db"));
    let gone = |end: &str| {
        lab::wait_until(std::time::Duration::from_secs(10), || {
            !lan.host.links().iter().any(|l| l == end)
        })
    };

    // Removed for good: the namespace and its veth go with the container; the record stays.
    docker.docker_ok(&["rm", "-f", "web"]);
    assert!(gone(&web_end), "{web_end} outlived its container");
    let detached = ok(cli(&lan.host, &dir, &docker, &["detach", "web"]));
    assert!(detached.contains("detached eth1"), "{detached}");

    // dockerd stopped (its containers stop with it): detach by the recorded name, no Docker.
    docker.stop_dockerd();
    assert!(gone(&db_end), "{db_end} outlived its stopped container");
    let detached = ok(cli(&lan.host, &dir, &docker, &["detach", "db"]));
    assert!(detached.contains("detached eth1"), "{detached}");

    assert!(lab::state_files(&dir).is_empty(), "{:?}", lab::state_files(&dir));
    assert_eq!(lan.host.snapshot(), host_before);
}
