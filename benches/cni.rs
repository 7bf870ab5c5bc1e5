//! CNI benchmark: lanyard as a CNI plugin against the reference plugins (Debian's
//! containernetworking-plugins in /usr/lib/cni), side by side in one run, each plugin invoked as
//! a runtime invokes it: the binary exec'd in the runtime's (here: the lab "host") namespace with
//! `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and `CNI_PATH` set and the network
//! configuration on stdin, a fresh network namespace per container, every way on the same bridge.
//!
//! - static ADD: lanyard (`addresses`, `gateway`) against `bridge` + `host-local` IPAM;
//! - DHCP ADD until the address is configured: lanyard (`"addressing": "dhcp"`, its daemon
//!   already running) against `bridge` + the `dhcp` IPAM plugin (its daemon already running, on a
//!   private socket: `dhcp daemon -socketpath PATH`, `"daemonSocketPath": PATH` in the conf),
//!   both against the same dnsmasq `--no-ping`;
//! - DEL of each of those attachments.
//!
//! Run as root: `cargo bench --bench cni`. `LANYARD_BENCH_CNI_ROUNDS` (default 30) sets the
//! rounds; in round i every way runs ADD then DEL once, starting from way i, so no way always
//! runs first or after another. Without cargo bench's `--bench` argument (as under
//! `cargo test --all-targets`) it makes a short smoke pass of 3 rounds.
//!
//! Every way must reach the same end state, or the run fails, in smoke and bench mode alike:
//! after ADD the container's namespace holds `eth0` (up) with one IPv4 address of the LAN's /24
//! (the conf's for static ways, one from dnsmasq's pool for DHCP ways) and a default route via
//! the LAN's gateway, and the host has one more port on br0; after DEL the container has no
//! `eth0`, br0 has no port left but its uplink, lanyard holds no record, and for lanyard's DHCP
//! way dnsmasq no lease (the reference's leases left behind are counted).
//!
//! The world is the test lab's (tests/support/lab.rs): a "host" namespace H with bridge br0
//! (198.18.16.1/24) and its uplink (a port that stays, whose peer sits in a namespace of its
//! own), where every plugin, both DHCP daemons and dnsmasq run; lanyard's state,
//! host-local's data directory, the reference dhcp daemon's socket and dnsmasq's files are on
//! tmpfs. Nothing here touches the root network namespace. lanyard's static ADD leaves a
//! detached helper that announces the address; this process is a subreaper, so the helper
//! becomes its child and is waited for (untimed) before the next step. Everything made is
//! removed by the lab's `Drop` guards, even on panic, and a killed run's leftovers by the next
//! run's sweep.

#[allow(dead_code)]
#[path = "../tests/support/bench.rs"]
mod bench;
#[allow(dead_code)]
#[path = "../tests/support/cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "../tests/support/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "../tests/support/dhcp.rs"]
mod dhcp;
#[allow(dead_code)]
#[path = "../tests/support/lab.rs"]
mod lab;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::{env_count, load_average, median, ms, percentile, wait_for_announce_helpers};
use daemon::DaemonGuard;
use serde_json::{json, Value};

/// The lab's LAN number 16: br0 carries 198.18.16.1/24.
const LAN_INDEX: u8 = 16;
const POOL: (&str, &str) = ("198.18.16.50", "198.18.16.250");
const LANYARD_STATIC_OCTET: u8 = 10;
const REFERENCE_STATIC_OCTET: u8 = 20;
const IFNAME: &str = "eth0";
/// br0's port that stays: the uplink to the rest of the LAN.
const UPLINK_PORT: &str = "up0";
/// What both the reference plugins (1.1.1) and podman speak; lanyard speaks it too.
const CNI_VERSION: &str = "1.0.0";
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// The announce helper lanyard's static ADD leaves behind runs two rounds 200 ms apart.
const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

// Targets (printed, not asserted): lanyard's median over the reference's.
const TARGET_STATIC_ADD: f64 = 0.5;
const TARGET_DHCP_ADD: f64 = 0.05;
const TARGET_DEL: f64 = 1.0;

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    // As the integration tests: never skipped quietly, not even as `cargo test`'s smoke run.
    lab::require_root();
    for plugin in ["bridge", "host-local", "dhcp"] {
        let path = Path::new(REFERENCE_PLUGINS).join(plugin);
        assert!(
            path.is_file(),
            "{}: missing (apt-get install containernetworking-plugins, or sudo ./scripts/setup.sh)",
            path.display()
        );
    }
    let rounds = env_count("LANYARD_BENCH_CNI_ROUNDS", if bench_mode { 30 } else { 3 }).max(1);
    // lanyard's static ADD spawns its announce helper detached; as a subreaper this process
    // inherits the orphan and can wait for it before the next timed step and before teardown.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    run(bench_mode, rounds);
}

// ---------------------------------------------------------------------------------------------
// The ways

#[derive(Clone, Copy, PartialEq, Eq)]
enum Addressing {
    Static,
    Dhcp,
}

/// One plugin configuration, invoked for ADD and DEL.
struct Way {
    label: &'static str,
    lanyard: bool,
    addressing: Addressing,
    conf: Value,
    add: Vec<Duration>,
    del: Vec<Duration>,
    /// VERSION: the plugin's start and exit with no work, for where the time of a command goes
    /// (static ways only: a DHCP way runs the same binary).
    version: Vec<Duration>,
}

/// The world the ways share: H with br0, the directories, the servers.
struct World {
    lan: lab::Lan,
    /// The LAN's other end of br0's uplink port (see [`World::build`]).
    _uplink: lab::Netns,
    /// lanyard's state directory is `dir/state` (tmpfs); host-local's data and the reference
    /// dhcp daemon's socket live here too.
    dir: lab::TestDir,
    dnsmasq: dhcp::Dnsmasq,
    /// The lanyard daemon and the reference dhcp daemon, both inside H.
    _daemons: Vec<lab::Server>,
    /// Stops whatever lanyard daemon serves `dir/state` at the end.
    _lanyard_daemon: DaemonGuard,
}

impl World {
    fn build() -> World {
        let lan = lab::Lan::bridge(LAN_INDEX);
        // br0 gets a port that stays, as a real LAN bridge has its uplink. Without one, br0 has
        // no carrier between a DEL and the next ADD, and the kernel acts on its carrier coming
        // back (operstate up, its queueing discipline attached again) up to a second after the
        // new port comes up (linkwatch's rate limit, which a bridge is subject to): packets sent
        // from H through br0 meanwhile are dropped. Seen: br0 without IFF_RUNNING when dnsmasq
        // sent an OFFER that never left H, and the client sent its DISCOVER again ~4 s later
        // (the DHCP ADD's p90 was 3.9 s). No LAN with an uplink shows this.
        let uplink = lan.guest("uplink");
        lan.plug(&uplink, UPLINK_PORT, "eth0");
        let running = lab::wait_until(Duration::from_secs(5), || {
            lan.host.ip_json(&["link", "show", "dev", "br0"])[0]["operstate"] == "UP"
        });
        assert!(running, "br0 has no carrier 5 s after its uplink port came up");
        let dir = lab::TestDir::on_tmpfs("cni-bench");
        let dnsmasq = dhcp::Dnsmasq::start_in(
            lab::TestDir::on_tmpfs("cni-dnsmasq"),
            &lan.host,
            "br0",
            POOL,
            "2m",
            &[],
        );
        let lanyard_daemon = DaemonGuard::new(&dir);
        // The lanyard daemon as systemd would run it, so that no DHCP ADD starts one.
        let lanyard = lab::Server::spawn(cli::command(&lan.host, &dir, &["daemon"]), "lanyard");
        let answered = lab::wait_until(Duration::from_secs(5), || lanyard_daemon.pid().is_some());
        assert!(answered, "the lanyard daemon does not answer:\n{}", lanyard.log());
        let socket = reference_dhcp_socket(&dir);
        let reference = lab::Server::start(
            &lan.host,
            &[
                &format!("{REFERENCE_PLUGINS}/dhcp"),
                "daemon",
                "-socketpath",
                socket.to_str().expect("utf-8 path"),
            ],
        );
        let listening = lab::wait_until(Duration::from_secs(5), || socket.exists());
        assert!(listening, "the reference dhcp daemon made no socket:\n{}", reference.log());
        World {
            lan,
            _uplink: uplink,
            dir,
            dnsmasq,
            _daemons: vec![lanyard, reference],
            _lanyard_daemon: lanyard_daemon,
        }
    }

    fn ways(&self) -> Vec<Way> {
        let gateway = self.lan.gateway4.to_string();
        let way = |label, lanyard, addressing, conf| Way {
            label,
            lanyard,
            addressing,
            conf,
            add: Vec::new(),
            del: Vec::new(),
            version: Vec::new(),
        };
        vec![
            way(
                "bridge + host-local [REF]",
                false,
                Addressing::Static,
                json!({
                    "cniVersion": CNI_VERSION, "name": "ref-static", "type": "bridge",
                    "bridge": "br0",
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.dir.join("host-local"),
                        "ranges": [[{
                            "subnet": self.lan.subnet4,
                            "rangeStart": self.lan.addr4(REFERENCE_STATIC_OCTET).to_string(),
                            "rangeEnd": self.lan.addr4(REFERENCE_STATIC_OCTET).to_string(),
                            "gateway": gateway,
                        }]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                }),
            ),
            way(
                "lanyard, static",
                true,
                Addressing::Static,
                json!({
                    "cniVersion": CNI_VERSION, "name": "lanyard-static", "type": "lanyard",
                    "hostInterface": "br0",
                    "addresses": [format!("{}/24", self.lan.addr4(LANYARD_STATIC_OCTET))],
                    "gateway": gateway,
                }),
            ),
            way(
                "bridge + dhcp (its daemon running) [REF]",
                false,
                Addressing::Dhcp,
                json!({
                    "cniVersion": CNI_VERSION, "name": "ref-dhcp", "type": "bridge",
                    "bridge": "br0",
                    "ipam": {"type": "dhcp", "daemonSocketPath": reference_dhcp_socket(&self.dir)},
                }),
            ),
            way(
                "lanyard, dhcp (its daemon running)",
                true,
                Addressing::Dhcp,
                json!({
                    "cniVersion": CNI_VERSION, "name": "lanyard-dhcp", "type": "lanyard",
                    "hostInterface": "br0", "addressing": "dhcp",
                }),
            ),
        ]
    }

    /// The plugin process for `way`, set up as a runtime sets it up, inside H.
    fn plugin(&self, way: &Way, command: &str, container_id: &str, netns: &Path) -> Command {
        let mut cmd = self.bare_plugin(way, command);
        cmd.env("CNI_CONTAINERID", container_id).env("CNI_NETNS", netns).env("CNI_IFNAME", IFNAME);
        cmd
    }

    /// The plugin process with `CNI_COMMAND` and `CNI_PATH` only (VERSION needs no more).
    fn bare_plugin(&self, way: &Way, command: &str) -> Command {
        let mut cmd = if way.lanyard {
            // The test binary with the lab's state directory and host id (cli::command).
            cli::command(&self.lan.host, &self.dir, &[])
        } else {
            let bridge = Path::new(REFERENCE_PLUGINS).join("bridge");
            self.lan.host.command(bridge)
        };
        cmd.env("CNI_COMMAND", command).env("CNI_PATH", REFERENCE_PLUGINS);
        cmd
    }
}

fn reference_dhcp_socket(dir: &lab::TestDir) -> PathBuf {
    dir.join("cni-dhcp.sock")
}

/// Runs a prepared plugin with `conf` on stdin: the time from spawn to exit, and its stdout.
/// Panics unless it succeeds.
fn timed(mut cmd: Command, conf: &Value) -> (Duration, String) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let input = conf.to_string();
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Dropped after the write: the plugin sees the end of its configuration.
    child.stdin.take().expect("piped stdin").write_all(input.as_bytes()).expect("write the conf");
    let out = child.wait_with_output().expect("wait for the plugin");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} with {input} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    (elapsed, stdout)
}

// ---------------------------------------------------------------------------------------------
// End states

/// The container's `eth0` as the ways must leave it after ADD: up, one IPv4 address of the
/// LAN's /24 (the expected one, when given), and the default route via the LAN's gateway.
fn check_added(world: &World, way: &Way, container: &lab::Netns, expected: Option<&str>) -> String {
    let links = container.ip_json(&["-4", "addr", "show", "dev", IFNAME]);
    let link = &links[0];
    let up = link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"));
    let addresses: Vec<String> = link["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or("?"), i["prefixlen"]))
                .collect()
        })
        .unwrap_or_default();
    let default = container.ip(&["-4", "route", "show", "default"]);
    let gateway = world.lan.gateway4.to_string();
    let ok_address = match (addresses.as_slice(), expected) {
        ([only], Some(expected)) => only == expected,
        ([only], None) => {
            only.starts_with(&format!("198.18.{LAN_INDEX}.")) && only.ends_with("/24")
        }
        _ => false,
    };
    let ok_route = default
        .split_whitespace()
        .collect::<Vec<_>>()
        .starts_with(&["default", "via", &gateway, "dev", IFNAME]);
    assert!(
        up && ok_address && ok_route,
        "{} after ADD: {IFNAME} up {up}, addresses {addresses:?} (expected {}), default route \
         {default:?} (expected via {gateway} dev {IFNAME})",
        way.label,
        expected.unwrap_or("one of the pool")
    );
    let ports = bridge_ports(world);
    assert_eq!(ports, 1, "{} after ADD: br0 has {ports} ports, expected 1", way.label);
    addresses[0].clone()
}

/// After DEL: no `eth0` in the container, no port on br0, no lanyard record; for lanyard's DHCP
/// way no lease of `address` at dnsmasq (the reference's releases are counted at the end: see
/// [`unreleased`]).
fn check_deleted(world: &World, way: &Way, container: &lab::Netns, address: &str) {
    assert!(
        !container.ip_ok(&["link", "show", "dev", IFNAME]),
        "{} after DEL: {IFNAME} still in the container",
        way.label
    );
    let ports = bridge_ports(world);
    assert_eq!(ports, 0, "{} after DEL: br0 still has {ports} ports", way.label);
    let records = cli::record_and_lease_files(&world.dir);
    assert!(records.is_empty(), "{} after DEL: lanyard still has {records:?}", way.label);
    if way.addressing == Addressing::Dhcp && way.lanyard {
        let ip = address.split('/').next().unwrap_or_default();
        // dnsmasq drops a lease when it logs the RELEASE, which the plugin's exit does not wait
        // for (the reference daemon sends it after answering): wait for it, bounded.
        let released = lab::wait_until(Duration::from_secs(3), || {
            !world.dnsmasq.leases().iter().any(|l| l.ip.to_string() == ip)
        });
        assert!(released, "{} after DEL: dnsmasq still leases {ip}", way.label);
    }
}

/// br0's ports but the uplink: the containers'.
fn bridge_ports(world: &World) -> usize {
    let ports = world.lan.host.ip_json(&["link", "show", "master", "br0"]);
    ports.as_array().into_iter().flatten().filter(|p| p["ifname"] != UPLINK_PORT).count()
}

// ---------------------------------------------------------------------------------------------
// The run

fn run(bench_mode: bool, rounds: usize) {
    let started = Instant::now();
    let load_at_start = load_average();
    let world = World::build();
    let mut ways = world.ways();
    let host_before = world.lan.host.snapshot();
    // Round 0 warms every way up (page cache, the daemons' first lease), untimed.
    let mut reference_leases = Vec::new();
    for round in 0..=rounds {
        for k in 0..ways.len() {
            let index = (round + k) % ways.len();
            let way = &mut ways[index];
            let container = world.lan.guest("c");
            let id = format!("bench{round}-{index}");
            let expected = match (way.addressing, way.lanyard) {
                (Addressing::Static, true) => {
                    Some(format!("{}/24", world.lan.addr4(LANYARD_STATIC_OCTET)))
                }
                (Addressing::Static, false) => {
                    Some(format!("{}/24", world.lan.addr4(REFERENCE_STATIC_OCTET)))
                }
                (Addressing::Dhcp, _) => None,
            };
            let add = world.plugin(way, "ADD", &id, &container.path);
            let (add_time, result) = timed(add, &way.conf);
            let address = check_added(&world, way, &container, expected.as_deref());
            assert!(
                result.contains(&address),
                "{}: {address} not in the result {result}",
                way.label
            );
            wait_for_announce_helpers(HELPER_TIMEOUT);
            // The runtime hands the ADD's result back with DEL as prevResult.
            let mut conf = way.conf.clone();
            conf["prevResult"] = serde_json::from_str(&result).expect("the ADD result is JSON");
            let del = world.plugin(way, "DEL", &id, &container.path);
            let (del_time, _) = timed(del, &conf);
            check_deleted(&world, way, &container, &address);
            if way.addressing == Addressing::Dhcp && !way.lanyard {
                reference_leases.push(address);
            }
            let version_time = (way.addressing == Addressing::Static).then(|| {
                let version = world.bare_plugin(way, "VERSION");
                let (time, answer) = timed(version, &json!({"cniVersion": CNI_VERSION}));
                assert!(answer.contains("supportedVersions"), "{} VERSION: {answer}", way.label);
                time
            });
            if round > 0 {
                way.add.push(add_time);
                way.del.push(del_time);
                way.version.extend(version_time);
            }
        }
    }
    wait_for_announce_helpers(HELPER_TIMEOUT);
    assert_eq!(world.lan.host.snapshot(), host_before, "H differs from before the rounds");
    let unreleased = unreleased(&world, &reference_leases);
    report(bench_mode, rounds, &ways, started, &load_at_start);
    println!(
        "leases left at dnsmasq after DEL: lanyard none (checked every round); the reference \
         {unreleased} of {}",
        reference_leases.len()
    );
}

/// How many of the reference DHCP way's addresses dnsmasq still leases after their DEL. Seen with
/// plugins 1.1.1: no RELEASE goes out at all, the dhcp daemon logs "failed to release DHCP lease:
/// no such device" (the container's interface is already gone when it tries). A second's grace
/// lets a release still in flight arrive.
fn unreleased(world: &World, addresses: &[String]) -> usize {
    let held = || {
        let leases = world.dnsmasq.leases();
        addresses
            .iter()
            .filter(|a| leases.iter().any(|l| a.split('/').next() == Some(&l.ip.to_string())))
            .count()
    };
    lab::wait_until(Duration::from_secs(1), || held() == 0);
    held()
}

/// Which of a way's samples a table row shows.
type Times = fn(&Way) -> &Vec<Duration>;

fn report(bench_mode: bool, rounds: usize, ways: &[Way], started: Instant, load_at_start: &str) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "lanyard CNI benchmark ({}), kernel {}, {} CPUs, load average at start {load_at_start}",
        if bench_mode {
            "bench mode"
        } else {
            "smoke pass: under cargo test lanyard is the debug build, the targets are for cargo \
             bench's release build"
        },
        kernel.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    );
    println!(
        "each plugin exec'd as a runtime does (env + conf on stdin) in the host namespace H, \
         a fresh netns per container, all on br0; {rounds} rounds, interleaved (round i: every \
         way ADDs and DELs once, from way i on), after one untimed warm-up round"
    );
    println!();
    println!(
        "{:<52} {:>9} {:>9} {:>7} {:>10}  target (median /REF)",
        "command: way (times in ms)", "median", "p90", "/REF", "per-round"
    );
    println!("{}", "-".repeat(112));
    let find = |addressing: Addressing, lanyard: bool| {
        ways.iter()
            .find(|w| w.addressing == addressing && w.lanyard == lanyard)
            .expect("every way is there")
    };
    let rows: [(&str, Addressing, Times, Option<f64>); 5] = [
        ("ADD static", Addressing::Static, |w| &w.add, Some(TARGET_STATIC_ADD)),
        ("ADD DHCP", Addressing::Dhcp, |w| &w.add, Some(TARGET_DHCP_ADD)),
        ("DEL static", Addressing::Static, |w| &w.del, Some(TARGET_DEL)),
        ("DEL DHCP", Addressing::Dhcp, |w| &w.del, Some(TARGET_DEL)),
        ("VERSION (start, no work)", Addressing::Static, |w| &w.version, None),
    ];
    for (command, addressing, times, target) in rows {
        let (reference, ours) = (find(addressing, false), find(addressing, true));
        let label = |way: &Way| {
            let plugin = if way.lanyard { "lanyard" } else { "bridge [REF]" };
            match target {
                Some(_) => format!("{command}: {}", way.label),
                None => format!("{command}: {plugin}"),
            }
        };
        let (reference_times, our_times) = (times(reference), times(ours));
        let ratio =
            median(our_times).as_secs_f64() / median(reference_times).as_secs_f64().max(1e-9);
        // The same round's ratios, whose median is steadier against slow phases of the machine.
        let per_round: Vec<f64> = our_times
            .iter()
            .zip(reference_times)
            .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64().max(1e-9))
            .collect();
        println!(
            "{:<52} {:>9} {:>9} {:>6.2}x",
            label(reference),
            ms(median(reference_times)),
            ms(percentile(reference_times, 0.9)),
            1.0,
        );
        let verdict = match target {
            Some(target) => {
                format!("<= {target}x {}", if ratio <= target { "met" } else { "MISSED" })
            }
            None => String::new(),
        };
        println!(
            "{:<52} {:>9} {:>9} {:>6.3}x {:>9.3}x  {verdict}",
            label(ours),
            ms(median(our_times)),
            ms(percentile(our_times, 0.9)),
            ratio,
            median_f64(&per_round),
        );
    }
    println!(
        "/REF = median over the reference's median; per-round = median of the same-round ratios"
    );
    println!(
        "total bench time {:.1} s; load average at start {load_at_start}, at end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
