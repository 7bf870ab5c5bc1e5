//! The lease daemon never waits on something else (issue 8, "The daemon must never be slow
//! because something else is"): with a private dockerd frozen by SIGSTOP, or with control
//! clients that connect and say nothing, every lease still renews on time, `lanyard status` is
//! answered within 100 ms, and an attach of a `netns:` guest completes.
//!
//! Renewals are read from Kea's lease CSV, which gets a line for every grant and renewal: the
//! time between two grants of one address never exceeds T2 (a renewal missed means REBINDING).
//! The daemon's own view is polled too: those leases never leave BOUND or RENEWING.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lanyard::daemon::control::{try_request, Request};
use support::cli::{self, ok, token};
use support::daemon::DaemonGuard;
use support::dhcp::{kea_lan, Kea, KeaConfig};
use support::docker::DockerLab;
use support::lab::{self, wait_until, Netns, TestDir};

/// Kea's lease lifetime, T1 and T2 in seconds: a renewal every 2 s per lease.
const VALID: u32 = 6;
const T1: u32 = 2;
const T2: u32 = 4;
/// What `lanyard status` may take, whatever else happens.
const STATUS_BUDGET: Duration = Duration::from_millis(100);
/// How long dockerd stays frozen. The issue says 30 s; 20 s is twice the daemon's Docker
/// timeout (10 s), so a loop that waited on Docker would be caught blocked for a whole lookup
/// inside the window, and it holds ten renewal periods of every lease.
const FREEZE: Duration = Duration::from_secs(20);

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One control request, timed from connect to answer.
fn ask(state: &Path, request: &Request) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let answer = try_request(state, request, Duration::from_secs(30))
        .expect("ask the daemon")
        .expect("a daemon answers");
    let took = started.elapsed();
    assert!(answer.ok, "{request:?} refused: {:?}", answer.error);
    (answer.data, took)
}

/// `lanyard status` as the CLI asks it, within the budget.
fn status_in_budget(state: &Path, context: &str) {
    let (data, took) = ask(state, &Request::Status);
    assert!(data["Leases"].as_u64().is_some(), "{data}");
    assert!(took < STATUS_BUDGET, "status took {took:?} ({context}), more than {STATUS_BUDGET:?}");
}

/// The daemon's leases by guest (as `lanyard leases` shows it).
fn leases_by_guest(state: &Path) -> BTreeMap<String, serde_json::Value> {
    let (data, _) = ask(state, &Request::Leases);
    let list = data.as_array().cloned().unwrap_or_default();
    list.into_iter()
        .map(|lease| (lease["Guest"].as_str().unwrap_or("").to_string(), lease))
        .collect()
}

fn address_of(lease: &serde_json::Value) -> Option<Ipv4Addr> {
    lease["Address"].as_str()?.split('/').next()?.parse().ok()
}

/// A request written by hand, for fields this test's own client types may not know.
fn raw_request(state: &Path, line: &serde_json::Value, timeout: Duration) -> serde_json::Value {
    let mut stream =
        UnixStream::connect(lanyard::daemon::control::socket_path(state)).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("read timeout");
    let mut bytes = serde_json::to_vec(line).expect("encode");
    bytes.push(b'\n');
    stream.write_all(&bytes).expect("send the request");
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).expect("read the answer");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
}

/// Every lease in `addresses` was renewed without a gap longer than T2 between `from` and
/// `to` (unix seconds): Kea's grant times (expiry minus lifetime) of each address, with the
/// window's ends, leave no hole of more than T2 seconds.
fn assert_renewed_throughout(kea: &Kea, addresses: &[Ipv4Addr], from: u64, to: u64) {
    let lines = kea.lease_lines();
    for address in addresses {
        let mut grants: Vec<u64> = lines
            .iter()
            .filter(|l| l.address == *address && l.valid_lifetime > 0 && l.state == 0)
            .map(|l| l.expire.saturating_sub(l.valid_lifetime))
            .filter(|at| (from.saturating_sub(u64::from(T2))..=to).contains(at))
            .collect();
        grants.sort_unstable();
        let mut points = vec![from];
        points.extend(grants.iter().copied().filter(|at| *at > from));
        points.push(to);
        let longest = points.windows(2).map(|w| w[1].saturating_sub(w[0])).max().unwrap_or(0);
        assert!(
            longest <= u64::from(T2),
            "{address}: {longest} s without a renewal between {from} and {to} (grants at \
             {grants:?}); T1 is {T1} s, T2 {T2} s\n--- Kea log:\n{}",
            kea.log_text()
        );
    }
}

fn cli_with_docker(ns: &Netns, dir: &TestDir, docker: &DockerLab, args: &[&str]) -> String {
    let (key, value) = docker.env();
    ok(cli::command(ns, dir, args).env(key, value).output().expect("run lanyard"))
}

#[test]
fn a_frozen_dockerd_delays_no_renewal_no_status_and_no_attach() {
    lab::require_root();
    let (lan, _neighbour) = kea_lan(96);
    let dir = TestDir::new("frozen-dockerd");
    let daemon = DaemonGuard::new(&dir);
    let state = daemon.state_dir().to_path_buf();
    let kea = Kea::start(&lan.host, "br0", KeaConfig::timed(96, VALID, T1, T2));
    let docker = DockerLab::start();

    // Twenty leases: three containers and seventeen namespaces.
    let containers = ["frozen-c1", "frozen-c2", "frozen-c3"];
    for name in containers {
        docker.run(name, &["--net", "none"]);
        cli_with_docker(&lan.host, &dir, &docker, &["attach", "br0", name, "dhcp"]);
    }
    let guests: Vec<Netns> = (0..17).map(|i| lan.guest(&format!("g{i}"))).collect();
    for guest in &guests {
        cli_with_docker(&lan.host, &dir, &docker, &["attach", "br0", &token(guest), "dhcp"]);
    }
    let before = leases_by_guest(&state);
    assert_eq!(before.len(), 20, "{before:#?}");
    let lease_of = |name: &str| {
        before
            .iter()
            .find(|(guest, _)| guest.contains(name))
            .map(|(_, lease)| lease.clone())
            .unwrap_or_else(|| panic!("no lease of {name}: {before:#?}"))
    };
    // The leases nothing in this test touches: each must renew throughout.
    let held: Vec<String> = before
        .keys()
        .filter(|guest| !containers.iter().any(|c| guest.contains(c)))
        .cloned()
        .collect();
    let held_addresses: Vec<Ipv4Addr> =
        held.iter().map(|guest| address_of(&before[guest]).expect("an address")).collect();
    let pid_of = |name: &str| -> i32 {
        docker.docker_ok(&["inspect", "-f", "{{.State.Pid}}", name]).parse().expect("a pid")
    };
    let (c1_pid, c3_pid) = (pid_of("frozen-c1"), pid_of("frozen-c3"));
    let c2 = lease_of("frozen-c2");
    let c3 = lease_of("frozen-c3");
    let ports = || lan.host.ip(&["-o", "link", "show", "master", "br0"]).lines().count();

    let docker_events = |state: &Path| {
        ask(state, &Request::Status).0["Docker"]["events"].as_u64().expect("the watcher's count")
    };
    let events_before = docker_events(&state);
    let frozen_at = unix_now();
    let started = Instant::now();
    let frozen = support::lab::Stopped::new(docker.dockerd_pid().expect("dockerd runs") as i32);

    // c1's process killed by pid: the daemon notices by its pidfd and removes the host end.
    let ports_before = ports();
    // SAFETY: kill(2) on the pid of a container of the test's own dockerd.
    assert_eq!(unsafe { libc::kill(c1_pid, libc::SIGKILL) }, 0);
    assert!(
        wait_until(Duration::from_secs(3), || ports() < ports_before),
        "the host end of the killed container goes, Docker frozen or not"
    );
    let c1 = leases_by_guest(&state).into_iter().find(|(guest, _)| guest.contains("frozen-c1"));
    let c1 = c1.expect("c1's lease is kept until it ends").1;
    assert_eq!(c1["Alive"], false, "{c1}");
    status_in_budget(&state, "after a container died");

    // c3 taken over again with its pid, as the CLI's attach does: no Docker call at all.
    let request = serde_json::json!({
        "op": "acquire", "record": c3["Record"], "wait": true, "timeout_ms": 10_000u64,
        "pid": c3_pid,
    });
    let answer = raw_request(&state, &request, Duration::from_secs(15));
    assert_eq!(answer["ok"], true, "c3 with its pid, Docker frozen: {answer}");
    assert_eq!(answer["data"]["Address"], c3["Address"], "the same address again: {answer}");

    // A new namespace attached with DHCP through the CLI completes meanwhile.
    let late = lan.guest("late");
    let attached = Instant::now();
    cli_with_docker(&lan.host, &dir, &docker, &["attach", "br0", &token(&late), "dhcp"]);
    assert!(late.ipv4_on("eth1").is_some(), "the late guest has its lease");
    assert!(started.elapsed() < FREEZE, "the attach took {:?}", attached.elapsed());

    // Through the rest of the freeze: status within budget, held leases bound or renewing.
    // Late in it, c2 is taken over again without its pid, as after a restart: reaching it
    // needs Docker, whose answer comes only after SIGCONT (the lookup is still within the
    // Docker client's 10 s). Asked from a thread; the daemon must not wait with it.
    let mut c2_acquire = None;
    let mut checks = 0;
    while started.elapsed() < FREEZE {
        if c2_acquire.is_none() && started.elapsed() >= FREEZE - Duration::from_secs(6) {
            let (record, socket_dir) = (c2["Record"].clone(), state.clone());
            c2_acquire = Some(std::thread::spawn(move || {
                let request = serde_json::json!({
                    "op": "acquire", "record": record, "wait": true, "timeout_ms": 30_000u64,
                });
                raw_request(&socket_dir, &request, Duration::from_secs(60))
            }));
            let reaching = wait_until(Duration::from_secs(2), || {
                let leases = leases_by_guest(&state);
                leases.iter().any(|(guest, lease)| {
                    guest.contains("frozen-c2") && lease["State"] == "REACHING"
                })
            });
            assert!(
                reaching,
                "c2 is REACHING while Docker is frozen: {:#?}",
                leases_by_guest(&state)
            );
            status_in_budget(&state, "with an acquire waiting on the frozen Docker");
            // The CLI's own `lanyard status` says the same.
            let printed = cli_with_docker(&lan.host, &dir, &docker, &["status", "--json"]);
            let status: serde_json::Value = serde_json::from_str(&printed).expect("status JSON");
            assert_eq!(status["Daemon"]["LeasesByState"]["REACHING"], 1, "{printed}");
        }
        status_in_budget(
            &state,
            &format!("check {checks}, {:?} into the freeze", started.elapsed()),
        );
        let now = leases_by_guest(&state);
        for guest in &held {
            let state = now[guest]["State"].as_str().unwrap_or("");
            assert!(
                matches!(state, "BOUND" | "RENEWING"),
                "{guest}: {state} {:?} into the freeze: {}",
                started.elapsed(),
                now[guest]
            );
        }
        checks += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let thawed_at = unix_now();
    drop(frozen);
    assert_renewed_throughout(&kea, &held_addresses, frozen_at, thawed_at);

    // Docker answers again: the acquire that needed it completes, with c2's address.
    let answer = c2_acquire.expect("c2 was asked for").join().expect("the c2 request thread");
    assert_eq!(answer["ok"], true, "c2 after SIGCONT: {answer}");
    assert_eq!(answer["data"]["Address"], c2["Address"], "the same address again: {answer}");
    // The daemon's Docker watcher gets what Docker queued while frozen: c1's death.
    let handled = wait_until(Duration::from_secs(10), || docker_events(&state) > events_before);
    assert!(handled, "the events queued during the freeze reach the watcher");
    let after = leases_by_guest(&state);
    // c1's lease ended during the freeze (6 s): forgotten with its record.
    assert!(!after.keys().any(|guest| guest.contains("frozen-c1")), "{after:#?}");
    assert_eq!(after.len(), 20, "{after:#?}");

    for name in ["frozen-c2", "frozen-c3"] {
        cli_with_docker(&lan.host, &dir, &docker, &["detach", name]);
    }
    for guest in guests.iter().chain([&late]) {
        cli_with_docker(&lan.host, &dir, &docker, &["detach", &token(guest)]);
    }
    assert!(support::cli::record_and_lease_files(&dir).is_empty());
}

#[test]
fn silent_control_clients_delay_no_renewal_and_no_other_answer() {
    lab::require_root();
    let (lan, _neighbour) = kea_lan(97);
    let dir = TestDir::new("silent-client");
    let daemon = DaemonGuard::new(&dir);
    let state = daemon.state_dir().to_path_buf();
    let kea = Kea::start(&lan.host, "br0", KeaConfig::timed(97, VALID, T1, T2));
    let guest = lan.guest("g");
    ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&guest), "dhcp"]));
    let address = guest.ipv4_on("eth1").expect("an address");

    // Clients that connect and send nothing (or half a line), a new one every 300 ms, all
    // held open: a daemon that read them in its loop would be stuck for good.
    const WINDOW: Duration = Duration::from_secs(10);
    let from = unix_now();
    let started = Instant::now();
    let socket = lanyard::daemon::control::socket_path(&state);
    let silent = std::thread::spawn(move || {
        let mut held = Vec::new();
        while started.elapsed() < WINDOW {
            let mut stream = UnixStream::connect(&socket).expect("connect");
            if held.len() % 2 == 1 {
                stream.write_all(b"{\"op\":").expect("half a request");
            }
            held.push(stream);
            std::thread::sleep(Duration::from_millis(300));
        }
        held.len()
    });
    let mut checks = 0;
    while started.elapsed() < WINDOW {
        status_in_budget(&state, &format!("check {checks} with silent clients connected"));
        checks += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let opened = silent.join().expect("the silent clients' thread");
    assert!(opened >= 20, "{opened} silent clients");
    assert_renewed_throughout(&kea, &[address], from, unix_now());
    ok(cli::run(&lan.host, &dir, &["detach", &token(&guest)]));
}

#[test]
fn many_guests_dying_at_once_delay_no_answer() {
    lab::require_root();
    let lan = support::lab::Lan::bridge(98);
    let dir = TestDir::new("mass-death");
    let daemon = DaemonGuard::new(&dir);
    let state = daemon.state_dir().to_path_buf();
    let _dnsmasq = support::dhcp::Dnsmasq::start(
        &lan.host,
        "br0",
        ("198.18.98.10", "198.18.98.250"),
        "2m",
        &["--no-ping"],
    );
    let guests: Vec<Netns> = (0..60).map(|i| lan.guest(&format!("d{i}"))).collect();
    for guest in &guests {
        ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(guest), "--no-wait", "dhcp"]));
    }
    let bound = wait_until(Duration::from_secs(30), || {
        ask(&state, &Request::Status).0["LeasesByState"]["BOUND"] == 60
    });
    assert!(bound, "{}", ask(&state, &Request::Status).0);
    let ports = || lan.host.ip(&["-o", "link", "show", "master", "br0"]).lines().count();
    assert_eq!(ports(), 60);

    // Every guest goes at once; meanwhile the daemon answers within budget.
    let asking = std::thread::spawn({
        let state = state.clone();
        move || {
            let mut slowest = Duration::ZERO;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(4) {
                slowest = slowest.max(ask(&state, &Request::Status).1);
                std::thread::sleep(Duration::from_millis(10));
            }
            slowest
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(guests);
    let slowest = asking.join().expect("the asking thread");
    assert!(ports() == 0, "every host end went with its guest");
    let alive = ask(&state, &Request::Status).0["GuestsAlive"].as_u64();
    assert_eq!(alive, Some(0));
    assert!(slowest < STATUS_BUDGET, "status took {slowest:?} while 60 guests died");
}
