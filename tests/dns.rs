//! lanyard's own DNS updates (config `[dns_update]`) end to end: the `lanyard` binary in a lab
//! "host" namespace, its daemon started on demand, and BIND 9 (`named`) serving the zones on the
//! LAN's gateway address in that namespace. Every answer is asked of named over UDP (in-process, so
//! the timings are named's, not a dig process's start-up).

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use support::bind::{Bind, BindZone, KeaDdns, TsigKeyFile};
use support::cli;
use support::daemon::DaemonGuard;
use support::dhcp::{Kea, KeaConfig, Radvd};
use support::lab::{self, wait_until, Lan, Server, TestDir};

const ZONE: &str = "app.lan";

/// A LAN whose host namespace runs named for `app.lan` and the LAN's reverse zone.
struct World {
    lan: Lan,
    dir: TestDir,
    key: TsigKeyFile,
    bind: Bind,
}

impl World {
    fn new(index: u8, tag: &str, forward: BindZone) -> World {
        World::with_zones(index, tag, vec![forward])
    }

    /// named serves `forward` and the LAN's reverse zone.
    fn with_zones(index: u8, tag: &str, mut zones: Vec<BindZone>) -> World {
        lab::require_root();
        let lan = Lan::bridge(index);
        let dir = TestDir::new(tag);
        let key = TsigKeyFile::generate(&dir, "ddns.key", "ddns");
        zones.push(BindZone::updatable(&format!("{index}.18.198.in-addr.arpa")));
        let bind = Bind::start_zones(&lan.host, &dir, lan.gateway4, &zones, Some(&key));
        World { lan, dir, key, bind }
    }

    /// A config with `[dns_update]` for this world's named, signed with `key_file`.
    fn config(&self, key_file: &std::path::Path) -> PathBuf {
        self.config_for_zone(key_file, ZONE)
    }

    /// [`World::config`] for another zone (the same file, written again).
    fn config_for_zone(&self, key_file: &std::path::Path, zone: &str) -> PathBuf {
        let path = self.dir.join("lanyard.toml");
        std::fs::write(
            &path,
            format!(
                "[dns_update]\nserver = \"{}:53\"\nzone = \"{zone}\"\ntsig_key_file = \"{}\"\n\
                 reverse = true\nttl = 60\n",
                self.lan.gateway4,
                key_file.display()
            ),
        )
        .unwrap();
        path
    }

    fn lanyard(&self, config: &std::path::Path, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        cli::run(&self.lan.host, &self.dir, &all)
    }

    /// `lanyard attach br0 TOKEN ADDRESS --dns-name NAME`, which must succeed.
    fn attach_named(&self, config: &std::path::Path, token: &str, address: &str, name: &str) {
        cli::ok(self.lanyard(config, &["attach", "br0", token, address, "--dns-name", name]));
    }

    fn a(&self, name: &str) -> Vec<String> {
        self.bind.query_udp(&self.lan.host, &format!("{name}.{ZONE}"), RecordType::A)
    }

    fn ptr(&self, address: Ipv4Addr) -> Vec<String> {
        let [a, b, c, d] = address.octets();
        let name = format!("{d}.{c}.{b}.{a}.in-addr.arpa");
        self.bind.query_udp(&self.lan.host, &name, RecordType::PTR)
    }

    /// How long until `check` holds, polled every millisecond or so; `None` after `limit`.
    fn time_until(&self, limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
        let start = Instant::now();
        wait_until(limit, &mut check).then(|| start.elapsed())
    }

    /// A neighbour on br0, plugged and forwarding before Kea starts: Kea skips an interface that
    /// is not running, and a bridge without a port has no carrier (as `support::dhcp::kea_lan`).
    fn neighbour(&self) -> support::lab::Netns {
        let neighbour = self.lan.guest("neighbour");
        self.lan.plug(&neighbour, "neighbour0", "eth0");
        assert!(self.lan.wait_forwarding("neighbour0", Duration::from_secs(3)));
        neighbour
    }

    fn status(&self, config: &std::path::Path) -> serde_json::Value {
        let out = self.lanyard(config, &["status", "--json"]);
        serde_json::from_str(&cli::ok(out)).expect("status --json")
    }
}

#[test]
fn a_static_attach_is_answerable_by_name_and_address_within_200ms_and_detach_removes_it() {
    let world = World::new(61, "dns-static", BindZone::updatable(ZONE));
    let config = world.config(&world.key.path);
    let _daemon = DaemonGuard::new(&world.dir);
    let guest = world.lan.guest("dnsweb");
    let token = cli::token(&guest);
    let address = world.lan.addr4(50);

    cli::ok(world.lanyard(
        &config,
        &["attach", "br0", &token, &format!("{address}/24"), "--dns-name", "Web_1"],
    ));
    // The label is made valid: lower case, `_` to `-`.
    let registered = world.time_until(Duration::from_secs(3), || {
        world.a("web-1") == [address.to_string()]
            && world.ptr(address) == [format!("web-1.{ZONE}.")]
    });
    let registered = registered.unwrap_or_else(|| {
        panic!(
            "A and PTR of web-1.{ZONE} never answered: A {:?} PTR {:?}; status {}",
            world.a("web-1"),
            world.ptr(address),
            world.status(&config)
        )
    });
    println!("A and PTR answerable {registered:?} after the attach returned");
    assert!(registered <= Duration::from_millis(200), "took {registered:?}");

    cli::ok(world.lanyard(&config, &["detach", &token]));
    let removed = world.time_until(Duration::from_secs(3), || {
        world.a("web-1").is_empty() && world.ptr(address).is_empty()
    });
    let removed = removed.unwrap_or_else(|| panic!("still there: {:?}", world.a("web-1")));
    println!("gone {removed:?} after the detach returned");
    assert!(removed <= Duration::from_millis(200), "took {removed:?}");
    // The daemon counts it gone once the server said so (a moment after named answers).
    let mut status = serde_json::Value::Null;
    let counted = wait_until(Duration::from_secs(2), || {
        status = world.status(&config);
        status["Daemon"]["Dns"]["Pending"] == 0 && status["Daemon"]["Dns"]["Registered"] == 0
    });
    assert!(counted, "{status}");
}

#[test]
fn dns_problems_never_fail_an_attach_are_shown_in_status_and_change_nothing_foreign() {
    let world = World::new(62, "dns-problems", BindZone::updatable(ZONE));
    let daemon = DaemonGuard::new(&world.dir);
    // Someone else's name: registered by another client (another DHCID).
    let foreign = world.lan.addr4(99);
    let server = lanyard::dns::UpdateServer {
        server: std::net::SocketAddr::new(world.lan.gateway4.into(), 53),
        zone: ZONE.into(),
        key: Some(lanyard::dns::TsigKey::from_file(&world.key.path).unwrap()),
        ttl: 60,
        reverse: false,
        timeout: Duration::from_secs(2),
    };
    let other = lanyard::dns::Registration {
        fqdn: format!("taken.{ZONE}"),
        addresses: vec![foreign.into()],
        client_id: b"\0someone-else".to_vec(),
    };
    world.lan.host.run_in(|| lanyard::dns::register(&server, &other)).unwrap();

    // A wrong key (same name, another secret): the attach succeeds, status says why.
    let wrong = TsigKeyFile::generate(&world.dir, "wrong.key", "ddns");
    let config = world.config(&wrong.path);
    let wrong_guest = world.lan.guest("dnswrong");
    let out = world.lanyard(
        &config,
        &["attach", "br0", &cli::token(&wrong_guest), "198.18.62.51/24", "--dns-name", "wrong"],
    );
    cli::ok(out);
    let failing = |status: &serde_json::Value, needle: &str| {
        status["Daemon"]["Dns"]["Failing"]
            .as_object()
            .is_some_and(|f| f.values().any(|e| e.as_str().is_some_and(|e| e.contains(needle))))
    };
    let mut status = serde_json::Value::Null;
    let shown = wait_until(Duration::from_secs(5), || {
        status = world.status(&config);
        failing(&status, "TSIG")
    });
    assert!(shown, "the key problem is not in status: {status}");
    assert!(world.a("wrong").is_empty());
    // The human-readable status shows it too.
    let text = cli::ok(world.lanyard(&config, &["status"]));
    assert!(text.contains("failing:") && text.contains("TSIG"), "{text}");
    // The next attach starts a daemon with the right key.
    daemon.kill(libc::SIGTERM);

    // The right key, a name someone else holds: refused, theirs intact.
    let config = world.config(&world.key.path);
    let taker = world.lan.guest("dnstaker");
    cli::ok(world.lanyard(
        &config,
        &["attach", "br0", &cli::token(&taker), "198.18.62.52/24", "--dns-name", "taken"],
    ));
    let shown = wait_until(Duration::from_secs(5), || {
        status = world.status(&config);
        failing(&status, "another client")
    });
    assert!(shown, "the conflict is not in status: {status}");
    assert_eq!(world.a("taken"), [foreign.to_string()], "the foreign record changed");
    // Its detach leaves the foreign name alone too.
    cli::ok(world.lanyard(&config, &["detach", &cli::token(&taker)]));
    assert_eq!(world.a("taken"), [foreign.to_string()], "the foreign record changed");
}

#[test]
fn a_zone_the_server_refuses_is_shown_in_status_and_the_attach_succeeds() {
    let world = World::new(63, "dns-refused", BindZone::read_only(ZONE));
    let config = world.config(&world.key.path);
    let _daemon = DaemonGuard::new(&world.dir);
    let guest = world.lan.guest("dnsrefused");
    cli::ok(world.lanyard(
        &config,
        &["attach", "br0", &cli::token(&guest), "198.18.63.50/24", "--dns-name", "web"],
    ));
    let mut status = serde_json::Value::Null;
    let shown = wait_until(Duration::from_secs(5), || {
        status = world.status(&config);
        status["Daemon"]["Dns"]["LastError"].as_str().is_some_and(|e| e.contains("refuses"))
    });
    assert!(shown, "the refusal is not in status: {status}");
    assert!(world.a("web").is_empty());
}

#[test]
fn a_guest_removed_while_the_daemon_was_down_loses_its_name_at_the_next_start() {
    let world = World::new(64, "dns-reconcile", BindZone::updatable(ZONE));
    let config = world.config(&world.key.path);
    let daemon = DaemonGuard::new(&world.dir);
    let gone = world.lan.guest("dnsgone");
    let stays = world.lan.guest("dnsstays");
    for (guest, address, name) in
        [(&gone, "198.18.64.50/24", "gone"), (&stays, "198.18.64.51/24", "stays")]
    {
        cli::ok(
            world.lanyard(
                &config,
                &["attach", "br0", &cli::token(guest), address, "--dns-name", name],
            ),
        );
    }
    assert!(wait_until(Duration::from_secs(3), || {
        !world.a("gone").is_empty() && !world.a("stays").is_empty()
    }));
    assert!(daemon.kill(libc::SIGTERM));
    // The namespace goes while no daemon runs (its record stays: nobody detached it).
    drop(gone);
    assert_eq!(world.a("gone"), ["198.18.64.50"], "nothing removed it yet");

    let again =
        cli::spawn(&world.lan.host, &world.dir, &["--config", config.to_str().unwrap(), "daemon"]);
    let gone_ptr = "198.18.64.50".parse().unwrap();
    let removed = wait_until(Duration::from_secs(5), || {
        world.a("gone").is_empty() && world.ptr(gone_ptr).is_empty()
    });
    let stayed = world.a("stays");
    // The restarted daemon (answering: its start is done) watches the guest it found alive:
    // its name goes with it.
    assert!(wait_until(Duration::from_secs(5), || daemon.pid().is_some()), "no daemon answers");
    drop(stays);
    let went = wait_until(Duration::from_secs(3), || world.a("stays").is_empty());
    daemon.kill(libc::SIGTERM);
    let log = again.wait_with_output().map(|out| cli::text(&out)).unwrap_or_default();
    assert!(removed, "gone.{ZONE} (A or PTR) is still there after the restart; log:\n{log}");
    assert_eq!(stayed, ["198.18.64.51"], "a live guest's name must stay");
    assert!(log.contains("its attachment is gone"), "{log}");
    assert!(went, "stays.{ZONE} outlived its namespace after the restart; log:\n{log}");
}

#[test]
fn a_static_guest_that_goes_while_the_daemon_runs_loses_its_name_then() {
    let world = World::new(68, "dns-live-gone", BindZone::updatable(ZONE));
    let config = world.config(&world.key.path);
    let _daemon = DaemonGuard::new(&world.dir);
    let deleted = world.lan.guest("dnsdeleted");
    let process_home = world.lan.guest("dnsprocess");
    let process = Server::start(&process_home, &["sleep", "600"]);
    let stays = world.lan.guest("dnslivestays");
    let attachments = [
        (cli::token(&deleted), "198.18.68.50", "deleted"),
        (format!("pid:{}", process.pid()), "198.18.68.51", "process"),
        (cli::token(&stays), "198.18.68.52", "stays"),
    ];
    for (token, address, name) in &attachments {
        world.attach_named(&config, token, &format!("{address}/24"), name);
    }
    let named = wait_until(Duration::from_secs(3), || {
        attachments.iter().all(|(_, address, name)| world.a(name) == [address.to_string()])
    });
    assert!(named, "not all registered; status {}", world.status(&config));

    // `ip netns del` while the daemon runs: nobody detaches, the name goes all the same.
    drop(deleted);
    let deleted_ptr = "198.18.68.50".parse().unwrap();
    let removed = world.time_until(Duration::from_secs(3), || {
        world.a("deleted").is_empty() && world.ptr(deleted_ptr).is_empty()
    });
    let removed = removed.unwrap_or_else(|| {
        panic!("deleted.{ZONE} outlived its namespace; status {}", world.status(&config))
    });
    println!("a deleted namespace's name gone after {removed:?}");

    // A pid guest's process exits.
    process.signal(libc::SIGKILL);
    let removed = world.time_until(Duration::from_secs(3), || world.a("process").is_empty());
    let removed = removed.unwrap_or_else(|| {
        panic!("process.{ZONE} outlived its process; status {}", world.status(&config))
    });
    println!("a dead process's name gone after {removed:?}");
    assert_eq!(world.a("stays"), ["198.18.68.52"], "a live guest's name must stay");
    drop(process_home);
}

#[test]
fn a_labelled_containers_name_goes_when_docker_removes_it() {
    let world = World::new(85, "dns-docker", BindZone::updatable(ZONE));
    let config = world.config(&world.key.path);
    let dns_update = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("allowed_host_interfaces = [\"br0\"]\n{dns_update}")).unwrap();
    let docker = support::docker::DockerLab::start();
    let _daemon =
        support::watcher::WatchingDaemon::start(&world.lan.host, &world.dir, &docker, &config);
    docker.run(
        "dnsdocked",
        &[
            "--net",
            "none",
            "--label",
            "lanyard.net=br0 198.18.85.10/24",
            "--label",
            "lanyard.dns=docked",
        ],
    );
    let named = wait_until(Duration::from_secs(15), || world.a("docked") == ["198.18.85.10"]);
    assert!(
        named,
        "docked.{ZONE} never registered; log:\n{}",
        support::watcher::daemon_log(&world.dir)
    );
    docker.docker_ok(&["rm", "-f", "dnsdocked"]);
    let gone = world.time_until(Duration::from_secs(5), || world.a("docked").is_empty());
    let gone = gone.unwrap_or_else(|| {
        panic!(
            "docked.{ZONE} outlived its container; log:\n{}",
            support::watcher::daemon_log(&world.dir)
        )
    });
    println!("gone {gone:?} after docker rm returned");
}

#[test]
fn a_static_name_stays_ours_when_the_daemon_restarts_with_another_host_id() {
    use lanyard::daemon::control::{try_request, Request};
    let world = World::new(69, "dns-host-id", BindZone::updatable(ZONE));
    let config = world.config(&world.key.path);
    let daemon = DaemonGuard::new(&world.dir);
    let guest = world.lan.guest("dnshostid");
    let token = cli::token(&guest);
    world.attach_named(&config, &token, "198.18.69.50/24", "hostid");
    assert!(wait_until(Duration::from_secs(3), || world.a("hostid") == ["198.18.69.50"]));
    let fqdn = format!("hostid.{ZONE}");
    let dhcid = world.bind.query_udp(&world.lan.host, &fqdn, RecordType::Unknown(49));
    assert_eq!(dhcid.len(), 1, "one DHCID for {fqdn}: {dhcid:?}");
    assert!(daemon.kill(libc::SIGTERM));

    // The next daemon has another host id (as one started on demand by a CLI given
    // `--host-id`, which it does not pass on), and no memory of what was registered, so that
    // the registration handed over again below is sent, not found done already.
    std::fs::remove_file(world.dir.join("state/dns/registered.json")).expect("the names kept");
    let mut command = cli::command(
        &world.lan.host,
        &world.dir,
        &["--config", config.to_str().unwrap(), "daemon"],
    );
    command.env("LANYARD_HOST_ID", "another-host");
    let _again = Server::spawn(command, "lanyard-daemon");
    assert!(wait_until(Duration::from_secs(5), || daemon.pid().is_some()), "no daemon answers");
    // The registration handed over again (as an attach hands it over): still ours.
    let record = cli::record_and_lease_files(&world.dir)
        .into_iter()
        .find_map(|file| file.strip_prefix("state/").map(str::to_string))
        .expect("the record");
    let request = Request::DnsRegister { record };
    let answer = try_request(daemon.state_dir(), &request, Duration::from_secs(5));
    assert!(answer.as_ref().is_ok_and(|a| a.as_ref().is_some_and(|a| a.ok)), "{answer:?}");
    let mut status = serde_json::Value::Null;
    let settled = wait_until(Duration::from_secs(3), || {
        status = world.status(&config);
        status["Daemon"]["Dns"]["Registered"] == 1
            || status["Daemon"]["Dns"]["Failing"].as_object().is_some_and(|f| !f.is_empty())
    });
    assert!(settled, "the registration was never sent: {status}");
    assert_eq!(status["Daemon"]["Dns"]["Failing"], serde_json::json!({}), "not ours: {status}");
    assert_eq!(world.bind.query_udp(&world.lan.host, &fqdn, RecordType::Unknown(49)), dhcid);

    // And its detach removes it.
    cli::ok(world.lanyard(&config, &["detach", &token]));
    let gone = wait_until(Duration::from_secs(3), || world.a("hostid").is_empty());
    assert!(gone, "{fqdn} stays after the detach; status {}", world.status(&config));
}

#[test]
fn sighup_moves_the_registered_names_to_a_new_zone_and_removes_them_with_dns_update() {
    const NEW_ZONE: &str = "new.lan";
    let zones = vec![BindZone::updatable(ZONE), BindZone::updatable(NEW_ZONE)];
    let world = World::with_zones(84, "dns-sighup", zones);
    let _neighbour = world.neighbour();
    let (_kea, _) = kea_for(&world, KeaConfig::timed(84, 60, 20, 40), false);
    let config = world.config(&world.key.path);
    let daemon = DaemonGuard::new(&world.dir);
    let fixed = world.lan.guest("dnssighup");
    let fixed_address: Ipv4Addr = "198.18.84.20".parse().unwrap();
    world.attach_named(&config, &cli::token(&fixed), "198.18.84.20/24", "fixed");
    let leased = world.lan.guest("dnssighupdhcp");
    world.attach_named(&config, &cli::token(&leased), "dhcp", "leased");
    let leased_address = leased.ipv4_on("eth1").expect("leased");
    let names = [("fixed", fixed_address), ("leased", leased_address)];
    let a_in = |zone: &str, name: &str| {
        world.bind.query_udp(&world.lan.host, &format!("{name}.{zone}"), RecordType::A)
    };
    // Where every name is: (A in app.lan, A in new.lan, PTR).
    let places = || {
        names
            .iter()
            .map(|(name, address)| (a_in(ZONE, name), a_in(NEW_ZONE, name), world.ptr(*address)))
            .collect::<Vec<_>>()
    };
    let all_in = |zone: &str| {
        names.iter().all(|(name, address)| {
            a_in(zone, name) == [address.to_string()]
                && world.ptr(*address) == [format!("{name}.{zone}.")]
        })
    };
    assert!(wait_until(Duration::from_secs(3), || all_in(ZONE)), "not registered: {:?}", places());
    let sighup = || {
        let pid = daemon.pid().expect("the daemon runs");
        // SAFETY: kill(2) on the pid the daemon itself reported.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    };

    world.config_for_zone(&world.key.path, NEW_ZONE);
    sighup();
    let moved = world.time_until(Duration::from_secs(3), || {
        all_in(NEW_ZONE) && names.iter().all(|(name, _)| a_in(ZONE, name).is_empty())
    });
    let moved = moved
        .unwrap_or_else(|| panic!("not moved: {:?}; status {}", places(), world.status(&config)));
    println!("moved to {NEW_ZONE} {moved:?} after the SIGHUP");

    // No [dns_update] any more: the names go.
    std::fs::write(&config, "").unwrap();
    sighup();
    let removed = world.time_until(Duration::from_secs(3), || {
        names.iter().all(|(name, address)| {
            a_in(NEW_ZONE, name).is_empty() && world.ptr(*address).is_empty()
        })
    });
    let removed = removed.unwrap_or_else(|| panic!("not removed: {:?}", places()));
    println!("removed {removed:?} after the SIGHUP");
}

/// A Kea serving `world`'s LAN as `config` says, with its DDNS daemon (D2) in front of the
/// world's named when `ddns` is set.
fn kea_for(world: &World, mut config: KeaConfig, ddns: bool) -> (Kea, Option<KeaDdns>) {
    let d2 = ddns.then(|| {
        let reverse = format!("{}.18.198.in-addr.arpa", world.lan.index);
        let d2 = KeaDdns::start(
            &world.lan.host,
            &world.dir,
            &world.bind,
            ZONE,
            &[&reverse],
            &world.key,
            53001,
        );
        if let Some(settings) = d2.kea4_settings(ZONE).as_object() {
            config.dhcp4_extra.extend(settings.clone());
        }
        d2
    });
    (Kea::start(&world.lan.host, "br0", config), d2)
}

#[test]
fn kea_registers_a_dhcp_attachment_by_option_12_or_81_and_removes_it_at_release() {
    let world = World::new(65, "dns-kea", BindZone::updatable(ZONE));
    let _neighbour = world.neighbour();
    let (_kea, d2) = kea_for(&world, KeaConfig::timed(65, 60, 20, 40), true);
    let d2 = d2.expect("D2");
    // No [dns_update]: the server registers, from option 12 (plain hostname) or option 81 with
    // S (a dotted name, or --fqdn).
    let empty = world.dir.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let _daemon = DaemonGuard::new(&world.dir);
    let plain = world.lan.guest("kplain");
    let dotted = world.lan.guest("kdotted");
    for (guest, flags) in
        [(&plain, vec!["--hostname", "kplain"]), (&dotted, vec!["--hostname", "kdotted", "--fqdn"])]
    {
        let token = cli::token(guest);
        let mut args = vec!["attach", "br0", token.as_str(), "dhcp"];
        args.extend(flags);
        cli::ok(world.lanyard(&empty, &args));
    }
    let plain_ip = plain.ipv4_on("eth1").expect("leased").to_string();
    let dotted_ip = dotted.ipv4_on("eth1").expect("leased").to_string();
    let named = wait_until(Duration::from_secs(5), || {
        world.a("kplain") == [plain_ip.clone()] && world.a("kdotted") == [dotted_ip.clone()]
    });
    assert!(
        named,
        "Kea did not register both: kplain {:?} kdotted {:?}\n--- D2:\n{}",
        world.a("kplain"),
        world.a("kdotted"),
        d2.log_text()
    );
    for (guest, name) in [(&plain, "kplain"), (&dotted, "kdotted")] {
        cli::ok(world.lanyard(&empty, &["detach", &cli::token(guest)]));
        let gone = wait_until(Duration::from_secs(5), || world.a(name).is_empty());
        assert!(gone, "{name} still there after the RELEASE\n--- D2:\n{}", d2.log_text());
    }
}

#[test]
fn lanyards_own_updates_follow_a_short_lease_through_renewals_and_end_with_it() {
    let world = World::new(66, "dns-lease", BindZone::updatable(ZONE));
    let _neighbour = world.neighbour();
    // Kea's own DDNS is on too: lanyard's option 81 with N must keep it out.
    let (mut kea, d2) = kea_for(&world, KeaConfig::timed(66, 6, 2, 4), true);
    let d2 = d2.expect("D2");
    let config = world.config(&world.key.path);
    let _daemon = DaemonGuard::new(&world.dir);
    let guest = world.lan.guest("kown");
    cli::ok(world.lanyard(
        &config,
        &["attach", "br0", &cli::token(&guest), "dhcp", "--hostname", "kown", "--dns-name", "own"],
    ));
    let ip = guest.ipv4_on("eth1").expect("leased");
    // The A and the PTR are two updates: both are waited for.
    let registered = wait_until(Duration::from_secs(3), || {
        world.a("own") == [ip.to_string()] && world.ptr(ip) == [format!("own.{ZONE}.")]
    });
    assert!(
        registered,
        "own.{ZONE} not registered: A {:?} PTR {:?}; status {}",
        world.a("own"),
        world.ptr(ip),
        world.status(&config)
    );
    // Two renewals (T1 = 2 s): the record stays with the lease.
    kea.wait_lines("two renewals", Duration::from_secs(10), |_| kea.renewals_of(ip) >= 2);
    assert_eq!(world.a("own"), [ip.to_string()], "the record must stay through renewals");
    assert!(!d2.log_text().contains("kown"), "Kea updated DNS itself:\n{}", d2.log_text());
    // The server stops: the lease runs out (6 s at most from the last renewal), the name goes.
    kea.stop();
    let stopped = Instant::now();
    let gone = wait_until(Duration::from_secs(10), || world.a("own").is_empty());
    assert!(gone, "own.{ZONE} outlived its lease: {:?}", world.a("own"));
    println!("removed {:?} after Kea stopped", stopped.elapsed());
    assert!(guest.ipv4_on("eth1").is_none(), "the address went with the lease");
    let ptr_gone = wait_until(Duration::from_secs(2), || world.ptr(ip).is_empty());
    assert!(ptr_gone, "the PTR outlived the lease: {:?}", world.ptr(ip));
}

#[test]
fn a_lease_that_comes_back_with_another_address_moves_its_name_along() {
    let world = World::new(67, "dns-moved", BindZone::updatable(ZONE));
    let _neighbour = world.neighbour();
    let mut first = KeaConfig::timed(67, 6, 2, 4);
    first.pool = ("198.18.67.150".parse().unwrap(), "198.18.67.199".parse().unwrap());
    let (mut kea, _) = kea_for(&world, first, false);
    let config = world.config(&world.key.path);
    let _daemon = DaemonGuard::new(&world.dir);
    let guest = world.lan.guest("kmoved");
    cli::ok(
        world.lanyard(
            &config,
            &["attach", "br0", &cli::token(&guest), "dhcp", "--dns-name", "moved"],
        ),
    );
    let old = guest.ipv4_on("eth1").expect("leased");
    assert!(wait_until(Duration::from_secs(3), || world.a("moved") == [old.to_string()]));
    // The server now NAKs that address (as in tests/dhcp.rs): the next lease has another one.
    let mut second = KeaConfig::timed(67, 6, 2, 4);
    second.subnet = "198.18.67.0/25".into();
    second.pool = ("198.18.67.50".parse().unwrap(), "198.18.67.99".parse().unwrap());
    second.authoritative = true;
    kea.restart(second);
    let moved = wait_until(Duration::from_secs(15), || {
        guest.ipv4_on("eth1").is_some_and(|new| new != old && world.a("moved") == [new.to_string()])
    });
    assert!(
        moved,
        "the name did not follow: {:?} on eth1, A {:?}",
        guest.ipv4_on("eth1"),
        world.a("moved")
    );
    let new = guest.ipv4_on("eth1").expect("leased");
    assert!(wait_until(Duration::from_secs(2), || world.ptr(old).is_empty()), "old PTR stays");
    let ptr = wait_until(Duration::from_secs(2), || world.ptr(new) == [format!("moved.{ZONE}.")]);
    assert!(ptr, "PTR of {new}: {:?}", world.ptr(new));
}

/// The `ip6.arpa` name of `address` (nibbles, lowest first).
fn ptr_name6(address: std::net::Ipv6Addr) -> String {
    let hex: String = address.octets().iter().map(|b| format!("{b:02x}")).collect();
    let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
    format!("{}.ip6.arpa", nibbles.join("."))
}

/// The guest's global addresses on eth1 in 2001:db8:87::/48 (from radvd).
fn slaac_on(guest: &support::lab::Netns) -> Vec<std::net::Ipv6Addr> {
    let lines = guest.addresses();
    let found = lines.iter().filter_map(|line| {
        let address = line.strip_prefix("eth1 2001:db8:87:")?.strip_suffix("/64")?;
        format!("2001:db8:87:{address}").parse().ok()
    });
    found.collect()
}

#[test]
fn a_slaac_address_is_registered_with_the_lease_and_replaced_or_removed_as_prefixes_go() {
    // Prefixes 2001:db8:87::/64, then 2001:db8:87:1::/64; the reverse zone is their /48. Valid
    // for 8 s: an address lives at most that long after the last advertisement of its prefix.
    let zones =
        vec![BindZone::updatable(ZONE), BindZone::updatable("7.8.0.0.8.b.d.0.1.0.0.2.ip6.arpa")];
    let world = World::with_zones(87, "dns-slaac", zones);
    let short = Some((8, 4));
    let radvd = Radvd::start_with_lifetimes(&world.lan.host, "br0", "2001:db8:87::/64", short);
    let _neighbour = world.neighbour();
    let (_kea, _) = kea_for(&world, KeaConfig::timed(87, 60, 30, 45), false);
    let config = world.config(&world.key.path);
    let _daemon = DaemonGuard::new(&world.dir);
    let guest = world.lan.guest("kslaac");
    let token = cli::token(&guest);
    let attach = ["attach", "br0", &token, "dhcp", "--slaac", "--dns-name", "v6"];
    cli::ok(world.lanyard(&config, &attach));
    let ip = guest.ipv4_on("eth1").expect("leased");
    let autoconfigured = wait_until(Duration::from_secs(10), || slaac_on(&guest).len() == 1);
    assert!(autoconfigured, "no SLAAC address: {:?}\n{}", guest.addresses(), radvd.log_text());
    let first = slaac_on(&guest)[0];
    let aaaa = || world.bind.query_udp(&world.lan.host, &format!("v6.{ZONE}"), RecordType::AAAA);
    let ptr6 =
        |address| world.bind.query_udp(&world.lan.host, &ptr_name6(address), RecordType::PTR);
    let name = format!("v6.{ZONE}.");
    let registered = wait_until(Duration::from_secs(3), || {
        aaaa() == [first.to_string()]
            && ptr6(first) == [name.clone()]
            && world.a("v6") == [ip.to_string()]
            && world.ptr(ip) == [name.clone()]
    });
    assert!(
        registered,
        "v6.{ZONE}: A {:?} AAAA {:?} PTR6 {:?}; status {}",
        world.a("v6"),
        aaaa(),
        ptr6(first),
        world.status(&config)
    );
    // The prefix changes: the new address is registered, the old one's AAAA and PTR go when it
    // expires.
    radvd.stop();
    let radvd = Radvd::start_with_lifetimes(&world.lan.host, "br0", "2001:db8:87:1::/64", short);
    let changed = Instant::now();
    let mut second = None;
    let replaced = wait_until(Duration::from_secs(20), || {
        second = slaac_on(&guest).into_iter().find(|address| address.segments()[3] == 1);
        second.is_some_and(|second| aaaa() == [second.to_string()] && ptr6(first).is_empty())
    });
    assert!(
        replaced,
        "AAAA {:?} with addresses {:?}; old PTR {:?}\n{}",
        aaaa(),
        slaac_on(&guest),
        ptr6(first),
        radvd.log_text()
    );
    println!("AAAA replaced {:?} after the prefix changed", changed.elapsed());
    let second = second.expect("found");
    assert_eq!(ptr6(second), [name]);
    // No more advertisements: the address expires and its AAAA and PTR go; the A stays.
    radvd.stop();
    let stopped = Instant::now();
    let gone = wait_until(Duration::from_secs(12), || aaaa().is_empty() && ptr6(second).is_empty());
    assert!(gone, "AAAA {:?} PTR {:?}; addresses {:?}", aaaa(), ptr6(second), slaac_on(&guest));
    println!("AAAA removed {:?} after radvd stopped", stopped.elapsed());
    assert!(slaac_on(&guest).is_empty(), "the address expired");
    assert_eq!(world.a("v6"), [ip.to_string()], "the A stays with the lease");
    cli::ok(world.lanyard(&config, &["detach", &token]));
    assert!(wait_until(Duration::from_secs(3), || world.a("v6").is_empty()), "A after detach");
}
