//! Wiring benchmark: how fast the daemon wires containers that declare their LAN with a label,
//! against what users pick instead (Docker's own macvlan driver), and what the Docker side
//! costs at scale.
//!
//! a. Event -> wired, the method: interleaved rounds of `docker run --rm IMAGE sh -c
//!    'until <an IPv4 address on the interface>; do sleep 0.01; done'` for a labelled `--net none`
//!    container (static, and DHCP from dnsmasq `--no-ping`) and for a container on a Docker
//!    macvlan network (`--ip`), minus the same run's `docker run --rm --net none IMAGE sh -c true`.
//!    Beside it the daemon's own figure: from the start event's own timestamp to the interface
//!    wired (`Docker.wire_latencies_ms` in its status). For DHCP that figure stops once the
//!    interface is made and the lease asked for, before it is bound, so DHCP is judged only the
//!    docker-run way.
//! b. N labelled containers (default 100) started at once (created beforehand, then `docker
//!    start` from 8 threads): time from the last start (its `docker start` returned) to all of
//!    them wired in the daemon's status.
//! c. Reconcile at daemon start: N running labelled containers (default 200) started while the
//!    daemon is stopped; time from the daemon's spawn to all wired, and its `last_reconcile_ms`.
//! d. Idle daemon holding N DHCP leases (default 200, of netns guests) with those containers
//!    running and Docker connected: its CPU (utime + stime from /proc/PID/stat) over a window
//!    (default 60 s); reference: the same daemon, same leases, in a window with dockerd stopped.
//! e. The Docker network plugin (issue 9): `docker run --rm --net X IMAGE sh -c true` for X a
//!    Docker macvlan network, a lanyard static network (`-d` this run's plugin, parent up0) and
//!    a lanyard DHCP network (`--ipam-driver` the same, dnsmasq `--no-ping`, the container with a
//!    fixed MAC), minus the same run's `--net none`, interleaved; targets: the static network's
//!    added cost at most Docker macvlan's, the DHCP network's at most the static one's + 30 ms
//!    (the daemon serves the plugin under a name of this run's).
//!
//! Run as root: `cargo bench --bench wiring` (about 6-8 minutes). Knobs:
//! `LANYARD_BENCH_WIRING_ROUNDS` (24), `LANYARD_BENCH_WIRING_BURST` (100),
//! `LANYARD_BENCH_WIRING_RECONCILE` (200), `LANYARD_BENCH_WIRING_LEASES` (200),
//! `LANYARD_BENCH_WIRING_WINDOW` (seconds, 60), `LANYARD_BENCH_WIRING_PARTS` (the parts to run,
//! "abcde"; d needs c). Without cargo bench's `--bench` argument (as under
//! `cargo test --all-targets`) it makes a short smoke pass: 2 rounds, 5 containers, 5 leases,
//! a 2 s window.
//!
//! The world is the test lab's: a "host" namespace H with bridge br0 (198.18.8.1/22), dnsmasq
//! on br0, a veth up0 whose peer is a port of br0 (the "physical NIC" for Docker's macvlan), a
//! private dockerd running inside H (Docker's macvlan needs its parent in dockerd's namespace)
//! and the lanyard daemon in H with `allowed_host_interfaces = ["br0"]`, its state on a tmpfs.
//! Nothing here touches the root network namespace; everything is removed by the lab's `Drop`
//! guards, even on panic.

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
// docker.rs allows dead code itself.
#[path = "../tests/support/docker.rs"]
mod docker;
#[allow(dead_code)]
#[path = "../tests/support/lab.rs"]
mod lab;
#[allow(dead_code)]
#[path = "../tests/support/plugin.rs"]
mod plugin;
#[allow(dead_code)]
#[path = "../tests/support/watcher.rs"]
mod watcher;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::{env_count, fs_type, load_average, median, ms, percentile};
use docker::DockerLab;
use lab::{wait_until, Lan, Netns, TestDir};
use watcher::{
    create_many, daemon_log, daemon_status, ports_of, remove_many, run_many, start_many,
    wired_count, WatchingDaemon,
};

/// LAN number 8 as a /22: br0 carries 198.18.8.1/22. DHCP hands out 198.18.8.10-198.18.9.250;
/// static addresses come from 198.18.10.0/24 (rounds of part a, burst of part b) and
/// 198.18.11.0/24 (the reconcile of part c).
const LAN_INDEX: u8 = 8;
const LAN_PREFIX: u8 = 22;
const POOL: (&str, &str) = ("198.18.8.10", "198.18.9.250");
const GATEWAY: &str = "198.18.8.1";
const STATIC_ROUND: &str = "198.18.10.240/22";
const MACVLAN_ROUND: &str = "198.18.10.250";
/// Docker's docker0 in H (dockerd in a namespace makes one); no container here uses it.
const DOCKER_BIP: &str = "198.19.250.1/24";
/// `docker run -d` at once in parts b and c.
const THREADS: usize = 8;
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
const WIRED_TIMEOUT: Duration = Duration::from_secs(120);

// Targets (printed, not asserted).
const TARGET_RATIO: f64 = 0.5;
const TARGET_DAEMON_MEDIAN: Duration = Duration::from_millis(50);
const TARGET_BURST: Duration = Duration::from_secs(5);
const TARGET_RECONCILE: Duration = Duration::from_secs(2);
const TARGET_CPU_PERCENT: f64 = 1.0;

struct Config {
    bench_mode: bool,
    /// The parts to run, by letter (`LANYARD_BENCH_WIRING_PARTS`, default all: "abcde"); d
    /// needs c.
    parts: String,
    rounds: usize,
    burst: usize,
    reconcile: usize,
    leases: usize,
    window: Duration,
}

impl Config {
    fn from_env(bench_mode: bool) -> Config {
        let (rounds, burst, reconcile, leases, window) =
            if bench_mode { (24, 100, 200, 200, 60) } else { (2, 5, 5, 5, 2) };
        Config {
            bench_mode,
            parts: std::env::var("LANYARD_BENCH_WIRING_PARTS").unwrap_or_else(|_| "abcde".into()),
            rounds: env_count("LANYARD_BENCH_WIRING_ROUNDS", rounds).max(1),
            // 198.18.10.10-.209 and 198.18.11.10-.209 hold at most 200 each.
            burst: env_count("LANYARD_BENCH_WIRING_BURST", burst).clamp(1, 200),
            reconcile: env_count("LANYARD_BENCH_WIRING_RECONCILE", reconcile).clamp(1, 200),
            // With the reconcile's containers, under a bridge's 1023 ports.
            leases: env_count("LANYARD_BENCH_WIRING_LEASES", leases).min(400),
            window: Duration::from_secs(
                env_count("LANYARD_BENCH_WIRING_WINDOW", window).max(1) as u64
            ),
        }
    }
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    // As the integration tests: never skipped quietly.
    lab::require_root();
    let config = Config::from_env(bench_mode);
    run(&config);
}

fn run(config: &Config) {
    let total = Instant::now();
    let load_at_start = load_average();
    let lan = Lan::bridge_with_prefix(LAN_INDEX, LAN_PREFIX);
    let host = &lan.host;
    host.ip_batch(
        "link add up0 type veth peer name up0p\nlink set up0p master br0 up\nlink set up0 up",
    );
    // lanyard's state on tmpfs: the times are not fsync's.
    let dir = TestDir::on_tmpfs("wiring-bench");
    assert_eq!(fs_type(dir.path()), "tmpfs", "the state directory is not on a tmpfs");
    let mut docker = DockerLab::start_in_netns(&host.path, DOCKER_BIP);
    let image = docker.import_busybox();
    let dnsmasq = dhcp::Dnsmasq::start_in(
        TestDir::on_tmpfs("wiring-dnsmasq"),
        host,
        "br0",
        POOL,
        "2m",
        &["--no-ping", "--dhcp-lease-max=2000"],
    );
    let config_file = watcher::write_config(&dir, "allowed_host_interfaces = [\"br0\"]\n");
    // The daemon also serves the Docker network plugin (part e), under a name of this run's.
    let plugin = format!("lanyard-bench-{}-{}", lab::run_id(), std::process::id());
    let plugin_env = [("LANYARD_DOCKER_PLUGIN", plugin.as_str())];
    let daemon = WatchingDaemon::start_with_env(host, &dir, &docker, &config_file, &plugin_env);

    println!();
    println!(
        "lanyard wiring benchmark ({} mode), kernel {}, {} CPUs, {} MB RAM, {}, load average {load_at_start}",
        if config.bench_mode { "bench" } else { "smoke" },
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        meminfo_mb("MemTotal"),
        docker.docker_ok(&["version", "--format", "dockerd {{.Server.Version}} (API {{.Server.APIVersion}})"]),
    );
    println!(
        "world: host netns {}: br0 {GATEWAY}/{LAN_PREFIX}, dnsmasq --no-ping pool {}-{} (2 min \
         leases), up0 (veth, peer on br0) for Docker's macvlan, dockerd and the lanyard daemon \
         in that namespace; state on {}",
        host.name,
        POOL.0,
        POOL.1,
        fs_type(dir.path())
    );

    if config.parts.contains('a') {
        part_a(config, &docker, &image, &lan, &dir);
    }
    if config.parts.contains('e') {
        part_e(config, &docker, &image, &plugin);
    }
    if config.parts.contains('b') {
        part_b(config, &docker, &lan, &dir);
    }
    daemon.stop();
    // d measures the daemon c started, with c's containers running.
    let daemon =
        config.parts.contains('c').then(|| part_c(config, &docker, &lan, &dir, &config_file));
    if let Some(daemon) = daemon.as_ref().filter(|_| config.parts.contains('d')) {
        part_d(config, &mut docker, &lan, &dir, daemon, &dnsmasq);
    }

    println!();
    println!(
        "total bench time {:.1} s; load average at start {load_at_start}, at end {}",
        total.elapsed().as_secs_f64(),
        load_average()
    );
    drop(daemon);
}

// ---------------------------------------------------------------------------------------------
// a. Event -> wired

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Baseline,
    Static,
    Dhcp,
    Macvlan,
}

const WAYS: [Way; 4] = [Way::Baseline, Way::Static, Way::Dhcp, Way::Macvlan];

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Baseline => "--net none, `sh -c true`  [REF]",
            Way::Static => "lanyard label, --net none, static",
            Way::Dhcp => "lanyard label, --net none, DHCP (dnsmasq --no-ping)",
            Way::Macvlan => "Docker macvlan network (--ip)",
        }
    }
}

/// The container's loop: until its interface has an IPv4 address (bounded: 30 s).
fn wait_script(ifname: &str) -> String {
    format!(
        "i=0; until [ -n \"$(ip -o -4 addr show dev {ifname} 2>/dev/null)\" ]; do \
         i=$((i+1)); [ $i -gt 3000 ] && exit 1; sleep 0.01; done"
    )
}

/// Docker's own macvlan network "mv" on up0, the LAN's subnet: what users pick instead.
fn create_docker_macvlan(docker: &DockerLab) {
    docker.docker_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=up0",
        "--subnet",
        &format!("198.18.8.0/{LAN_PREFIX}"),
        "--gateway",
        GATEWAY,
        "mv",
    ]);
}

fn part_a(config: &Config, docker: &DockerLab, image: &str, lan: &Lan, dir: &TestDir) {
    create_docker_macvlan(docker);
    let static_label = format!("lanyard.net=br0 {STATIC_ROUND}@{GATEWAY}");
    let argv = |way: Way| -> Vec<String> {
        let mut argv: Vec<String> = ["run", "--rm"].iter().map(|s| s.to_string()).collect();
        let (net, extra, command): (&str, Vec<String>, Vec<String>) = match way {
            Way::Baseline => ("none", vec![], vec!["sh".into(), "-c".into(), "true".into()]),
            Way::Static => (
                "none",
                vec!["--label".into(), static_label.clone()],
                vec!["sh".into(), "-c".into(), wait_script("eth1")],
            ),
            Way::Dhcp => (
                "none",
                vec!["--label".into(), "lanyard.net=br0 dhcp".into()],
                vec!["sh".into(), "-c".into(), wait_script("eth1")],
            ),
            Way::Macvlan => (
                "mv",
                vec!["--ip".into(), MACVLAN_ROUND.into()],
                vec!["sh".into(), "-c".into(), wait_script("eth0")],
            ),
        };
        argv.extend(["--net".to_string(), net.to_string()]);
        argv.extend(extra);
        argv.push(image.to_string());
        argv.extend(command);
        argv
    };
    // Untimed warm-up: one of each.
    for way in WAYS {
        timed_docker_run(docker, &argv(way));
        wait_collected(lan, dir);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); WAYS.len()];
    let mut daemon_static = Vec::new();
    let mut daemon_dhcp = Vec::new();
    for round in 0..config.rounds {
        for k in 0..WAYS.len() {
            let w = (round + k) % WAYS.len();
            let way = WAYS[w];
            let before = latencies(dir).len();
            times[w].push(timed_docker_run(docker, &argv(way)));
            if matches!(way, Way::Static | Way::Dhcp) {
                // The next round starts from a clean host: the daemon has detached this one.
                wait_collected(lan, dir);
                let after = latencies(dir);
                let newest = after[before.min(after.len())..].last().copied();
                let newest = newest.unwrap_or_else(|| {
                    panic!("no wiring latency for the round; log:\n{}", daemon_log(dir))
                });
                let sample = Duration::from_secs_f64(newest.max(0.0) / 1e3);
                if way == Way::Static {
                    daemon_static.push(sample);
                } else {
                    daemon_dhcp.push(sample);
                }
            }
        }
    }
    docker.docker_ok(&["network", "rm", "mv"]);

    let table = AddedCosts { times: &times, label_width: 55 };
    let macvlan_added = table.added(3);
    println!();
    println!(
        "a. event -> wired: `docker run --rm IMAGE sh -c 'until <IPv4 on the interface>; do sleep \
         0.01; done'`, {} rounds, interleaved",
        config.rounds
    );
    table.print_header(12);
    for (w, way) in WAYS.iter().enumerate() {
        let ratio = table.added(w) / macvlan_added;
        let (ratio_text, target) = match way {
            Way::Baseline => ("-".to_string(), String::new()),
            Way::Macvlan => ("1.00x".to_string(), String::new()),
            _ => (
                format!("{ratio:.2}x"),
                format!("<= {TARGET_RATIO:.1}x {}", verdict(ratio <= TARGET_RATIO)),
            ),
        };
        table.print_row(w, way.label(), &ratio_text, &target);
    }
    println!(
        "med - REF = the way's added cost (difference of the medians), per-round = median of the \
         same-round differences, /macvlan = added cost over Docker macvlan's added cost"
    );
    println!(
        "the same ratios from the per-round differences: static {:.2}x, DHCP {:.2}x",
        table.per_round(1) / table.per_round(3),
        table.per_round(2) / table.per_round(3)
    );
    println!();
    println!(
        "   the daemon's own figure: start event's timestamp -> wired (Docker.wire_latencies_ms)"
    );
    let header =
        format!("   {:<52} {:>8} {:>8} {:>6}  target", "(times in ms)", "median", "p90", "count");
    println!("{header}");
    println!("   {}", "-".repeat(header.len() + 10));
    let target_median = |samples: &[Duration]| {
        format!(
            "< {} ms {}",
            TARGET_DAEMON_MEDIAN.as_millis(),
            verdict(median(samples) < TARGET_DAEMON_MEDIAN)
        )
    };
    println!(
        "   {:<52} {:>8} {:>8} {:>6}  {}",
        "static: address configured in the container",
        ms(median(&daemon_static)),
        ms(percentile(&daemon_static, 0.9)),
        daemon_static.len(),
        target_median(&daemon_static)
    );
    println!(
        "   {:<52} {:>8} {:>8} {:>6}  (not \"wired\": see below)",
        "DHCP: interface made, lease asked (not yet bound)",
        ms(median(&daemon_dhcp)),
        ms(percentile(&daemon_dhcp, 0.9)),
        daemon_dhcp.len(),
    );
    println!(
        "   the daemon's DHCP figure stops before the lease is bound, so DHCP's time to an address \
         is judged only the docker-run way (table above)"
    );
}

/// The median of the same-round differences `times[r] - reference[r]`, in seconds: steadier
/// than the difference of the medians on a busy machine.
fn per_round_difference(times: &[Duration], reference: &[Duration]) -> f64 {
    let mut diffs: Vec<f64> =
        times.iter().zip(reference).map(|(x, r)| x.as_secs_f64() - r.as_secs_f64()).collect();
    diffs.sort_by(f64::total_cmp);
    diffs[diffs.len() / 2]
}

/// The `docker run` tables of parts a and e: way 0 is the reference (`--net none`), and each
/// way's added cost is over it, as the difference of the medians and as the median of the
/// same-round differences.
struct AddedCosts<'a> {
    times: &'a [Vec<Duration>],
    /// Width of the way column.
    label_width: usize,
}

impl AddedCosts<'_> {
    /// Way `w`'s added cost (difference of the medians), in seconds.
    fn added(&self, w: usize) -> f64 {
        median(&self.times[w]).as_secs_f64() - median(&self.times[0]).as_secs_f64()
    }

    /// Way `w`'s added cost (median of the same-round differences), in seconds.
    fn per_round(&self, w: usize) -> f64 {
        per_round_difference(&self.times[w], &self.times[0])
    }

    /// The header line and its rule (`rule_extra` dashes past the header's own width).
    fn print_header(&self, rule_extra: usize) {
        let header = format!(
            "{:<width$} {:>8} {:>8} {:>10} {:>10} {:>10}  target",
            "way (times in ms)",
            "median",
            "p90",
            "med - REF",
            "per-round",
            "/macvlan",
            width = self.label_width
        );
        println!("{header}");
        println!("{}", "-".repeat(header.len() + rule_extra));
    }

    fn print_row(&self, w: usize, label: &str, ratio_text: &str, target: &str) {
        println!(
            "{:<width$} {:>8} {:>8} {:>+10.2} {:>+10.2} {:>10}  {target}",
            label,
            ms(median(&self.times[w])),
            ms(percentile(&self.times[w], 0.9)),
            self.added(w) * 1e3,
            self.per_round(w) * 1e3,
            ratio_text,
            width = self.label_width
        );
    }
}

/// A target's verdict in the tables.
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

// ---------------------------------------------------------------------------------------------
// e. The Docker network plugin: `docker run --rm --net X IMAGE sh -c true`

/// The target for a lanyard static network: no more added cost than Docker's macvlan.
const TARGET_PLUGIN_RATIO: f64 = 1.0;
/// The target for a lanyard DHCP network: at most the static network's added cost plus
/// this (dnsmasq `--no-ping`).
const TARGET_PLUGIN_DHCP_OVER_STATIC_MS: f64 = 30.0;
/// The DHCP network's container MAC: fixed, as the README asks of DHCP networks' containers, so
/// every round asks for the same lease (as a restarted container does).
const PLUGIN_DHCP_MAC: &str = "02:00:c6:12:08:e0";

fn part_e(config: &Config, docker: &DockerLab, image: &str, plugin: &str) {
    // All on up0. Docker's IPAM refuses two networks with one subnet, so lanyard's static one
    // gets its own (the container runs `true`: its address is never used); the DHCP one leases
    // from the LAN's dnsmasq through up0.
    create_docker_macvlan(docker);
    docker.docker_ok(&[
        "network",
        "create",
        "-d",
        plugin,
        "-o",
        "parent=up0",
        "--subnet",
        "198.18.12.0/24",
        "--gateway",
        "198.18.12.1",
        "lynet",
    ]);
    docker.docker_ok(&[
        "network",
        "create",
        "-d",
        plugin,
        "--ipam-driver",
        plugin,
        "-o",
        "parent=up0",
        "lydhcp",
    ]);
    let ways: [(&str, &[&str], &str); 4] = [
        ("none", &[], "--net none  [REF]"),
        ("mv", &[], "Docker macvlan network (Docker's IPAM)"),
        ("lynet", &[], "lanyard network (-d lanyard, static, macvlan on up0)"),
        (
            "lydhcp",
            &["--mac-address", PLUGIN_DHCP_MAC],
            "lanyard network (--ipam-driver lanyard, DHCP, fixed MAC)",
        ),
    ];
    let argv = |(net, extra, _): (&str, &[&str], &str)| -> Vec<String> {
        let mut argv = vec!["run", "--rm", "--net", net];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&[image, "sh", "-c", "true"]);
        argv.into_iter().map(String::from).collect()
    };
    for way in ways {
        timed_docker_run(docker, &argv(way));
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    for round in 0..config.rounds {
        for k in 0..ways.len() {
            let w = (round + k) % ways.len();
            times[w].push(timed_docker_run(docker, &argv(ways[w])));
        }
    }
    docker.docker_ok(&["network", "rm", "mv", "lynet", "lydhcp"]);
    let table = AddedCosts { times: &times, label_width: 57 };
    println!();
    println!(
        "e. Docker network plugin: `docker run --rm --net X IMAGE sh -c true`, {} rounds, \
         interleaved",
        config.rounds
    );
    table.print_header(22);
    let over_static_ms = (table.added(3) - table.added(2)) * 1e3;
    for (w, (_, _, label)) in ways.iter().enumerate() {
        let ratio = table.added(w) / table.added(1);
        let (ratio_text, target) = match w {
            0 => ("-".to_string(), String::new()),
            1 => ("1.00x".to_string(), String::new()),
            2 => (
                format!("{ratio:.2}x"),
                format!("<= {TARGET_PLUGIN_RATIO:.1}x {}", verdict(ratio <= TARGET_PLUGIN_RATIO)),
            ),
            _ => (
                format!("{ratio:.2}x"),
                format!(
                    "static {over_static_ms:+.1} ms, <= +{TARGET_PLUGIN_DHCP_OVER_STATIC_MS:.0} \
                     ms {}",
                    verdict(over_static_ms <= TARGET_PLUGIN_DHCP_OVER_STATIC_MS)
                ),
            ),
        };
        table.print_row(w, label, &ratio_text, &target);
    }
    println!(
        "med - REF = the way's added cost (difference of the medians), per-round = median of the \
         same-round differences; the DHCP row's target is against the static row's added cost"
    );
    println!(
        "the same from the per-round differences: static {:.2}x of macvlan, DHCP {:+.1} ms over \
         static",
        table.per_round(2) / table.per_round(1),
        (table.per_round(3) - table.per_round(2)) * 1e3
    );
}

/// Runs the docker CLI to the end, timed from spawn to exit (polled every millisecond, bounded);
/// panics unless it succeeded.
fn timed_docker_run(docker: &DockerLab, argv: &[String]) -> Duration {
    let (key, value) = docker.env();
    // Debian's CLI, matching dockerd 20.10's API (a newer one refuses --mac-address there).
    let mut command = Command::new(plugin::DOCKER_CLI);
    command
        .args(argv)
        .env(key, value)
        .env("DOCKER_CONFIG", docker.dir.join("cli"))
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn docker");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for docker") {
            break status;
        }
        if started.elapsed() > ROUND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("docker {} did not exit within {ROUND_TIMEOUT:?}", argv.join(" "));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let elapsed = started.elapsed();
    if !status.success() {
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
        panic!("docker {} failed ({status}): {}", argv.join(" "), stderr.trim());
    }
    elapsed
}

/// Waits (bounded) until the daemon has detached every container: no record, and br0's only
/// port is up0p.
fn wait_collected(lan: &Lan, dir: &TestDir) {
    let collected = wait_until(Duration::from_secs(20), || {
        cli::record_and_lease_files(dir).is_empty() && ports_of(&lan.host, "br0") == 1
    });
    assert!(
        collected,
        "not collected: {:?}, {} ports on br0; log:\n{}",
        cli::record_and_lease_files(dir),
        ports_of(&lan.host, "br0"),
        daemon_log(dir)
    );
}

fn latencies(dir: &TestDir) -> Vec<f64> {
    let status = daemon_status(dir).expect("the daemon answers");
    status["Docker"]["wire_latencies_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// b. A burst of starts

/// `count` static labelled containers, `prefix`NNN, on 198.18.`subnet`.(10 + i).
fn labelled(prefix: &str, subnet: u8, count: usize) -> Vec<(String, Vec<String>)> {
    (0..count)
        .map(|i| {
            let label =
                format!("lanyard.net=br0 198.18.{subnet}.{}/{LAN_PREFIX}@{GATEWAY}", 10 + i);
            let args = vec!["--net".into(), "none".into(), "--label".into(), label];
            (format!("{prefix}{i:03}"), args)
        })
        .collect()
}

/// Polls the daemon's status (bounded) until every one of `ids` is wired; the moment it saw it.
fn wait_all_wired(dir: &TestDir, ids: &[String]) -> Instant {
    let mut wired = 0;
    let done = wait_until(WIRED_TIMEOUT, || {
        wired = daemon_status(dir).map_or(0, |status| wired_count(&status, ids));
        wired == ids.len()
    });
    assert!(done, "{wired} of {} wired; log:\n{}", ids.len(), daemon_log(dir));
    Instant::now()
}

fn part_b(config: &Config, docker: &DockerLab, lan: &Lan, dir: &TestDir) {
    let containers = labelled("burst", 10, config.burst);
    let creating = Instant::now();
    let ids = create_many(docker, &containers, THREADS);
    let create_time = creating.elapsed();
    let before = latencies(dir).len();
    let (first_start, last_start) = start_many(docker, &ids, THREADS);
    let all_wired = wait_all_wired(dir, &ids);
    let after = latencies(dir);
    let burst: Vec<Duration> = after[before.min(after.len())..]
        .iter()
        .map(|v| Duration::from_secs_f64(v.max(0.0) / 1e3))
        .collect();
    let wired_after_last = all_wired.saturating_duration_since(last_start);
    println!();
    println!(
        "b. {} labelled containers (static) started at once: created beforehand ({:.1} s, \
         untimed), then `docker start` from {THREADS} threads",
        config.burst,
        create_time.as_secs_f64()
    );
    println!(
        "   starting them took {:.2} s; last start (its `docker start` returned) -> all wired in \
         the daemon's status: {:.3} s   target < {} s {}",
        last_start.duration_since(first_start).as_secs_f64(),
        wired_after_last.as_secs_f64(),
        TARGET_BURST.as_secs(),
        verdict(wired_after_last < TARGET_BURST)
    );
    println!(
        "   the daemon's own figure for these {}: start event -> wired median {} ms, p90 {} ms, \
         max {} ms",
        burst.len(),
        ms(median(&burst)),
        ms(percentile(&burst, 0.9)),
        ms(percentile(&burst, 1.0))
    );
    assert_eq!(ports_of(&lan.host, "br0"), config.burst + 1, "one host link each, and up0p");
    let names: Vec<&str> = containers.iter().map(|(name, _)| name.as_str()).collect();
    let removing = Instant::now();
    remove_many(docker, &names, 4);
    wait_collected(lan, dir);
    println!(
        "   `docker rm -f` of all {} -> no record and no host link left: {:.2} s (no target)",
        config.burst,
        removing.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// c. Reconcile at daemon start

fn part_c(
    config: &Config,
    docker: &DockerLab,
    lan: &Lan,
    dir: &TestDir,
    config_file: &std::path::Path,
) -> WatchingDaemon {
    let available_before = meminfo_mb("MemAvailable");
    let containers = labelled("rec", 11, config.reconcile);
    let starting = Instant::now();
    let (ids, _) = run_many(docker, &containers, THREADS);
    let start_time = starting.elapsed();
    let available_after = meminfo_mb("MemAvailable");
    let daemon = WatchingDaemon::start(&lan.host, dir, docker, config_file);
    let answering = daemon.started.elapsed();
    let all_wired = wait_all_wired(dir, &ids).duration_since(daemon.started);
    let status = daemon_status(dir).expect("the daemon answers");
    let docker_status = &status["Docker"];
    let reconcile_ms = docker_status["last_reconcile_ms"].as_u64().unwrap_or(0);
    println!();
    println!(
        "c. reconcile at daemon start: {} running labelled containers (static) started while the \
         daemon was stopped ({:.1} s; MemAvailable {} -> {} MB)",
        config.reconcile,
        start_time.as_secs_f64(),
        available_before,
        available_after
    );
    println!(
        "   daemon spawned -> control socket answers {:.3} s; -> all {} wired in its status {:.3} s   \
         target < {} s {}",
        answering.as_secs_f64(),
        config.reconcile,
        all_wired.as_secs_f64(),
        TARGET_RECONCILE.as_secs(),
        verdict(all_wired < TARGET_RECONCILE)
    );
    println!(
        "   the daemon's last_reconcile_ms {reconcile_ms} ({} containers looked at, {} reconcile(s))",
        docker_status["last_reconcile_containers"], docker_status["reconciles"]
    );
    assert_eq!(ports_of(&lan.host, "br0"), config.reconcile + 1, "one host link each, and up0p");
    daemon
}

// ---------------------------------------------------------------------------------------------
// d. Idle CPU

fn part_d(
    config: &Config,
    docker: &mut DockerLab,
    lan: &Lan,
    dir: &TestDir,
    daemon: &WatchingDaemon,
    dnsmasq: &dhcp::Dnsmasq,
) {
    let bring_up = Instant::now();
    let guests: Vec<Netns> = (0..config.leases).map(|i| Netns::new(&format!("g{i}"))).collect();
    for guest in &guests {
        let token = cli::token(guest);
        cli::ok(cli::run(&lan.host, dir, &["attach", "br0", &token, "dhcp"]));
    }
    let bring_up = bring_up.elapsed();
    let status = daemon_status(dir).expect("the daemon answers");
    let bound = status["LeasesByState"]["BOUND"].as_u64().unwrap_or(0) as usize;
    assert_eq!(bound, config.leases, "every lease bound: {}", status["LeasesByState"]);
    let pid = daemon.pid();
    println!();
    println!(
        "d. idle daemon (pid {pid}) holding {} DHCP leases (netns guests, attached by the CLI in \
         {:.1} s) with the {} containers of c running; 2 min leases, so every one renews once \
         in a 60 s window{}",
        config.leases,
        bring_up.as_secs_f64(),
        config.reconcile,
        if config.window < Duration::from_secs(60) { " (this window is shorter)" } else { "" }
    );
    std::thread::sleep(Duration::from_secs(2));
    let connected = cpu_window(pid, dnsmasq, config.window);
    assert_eq!(daemon_status(dir).unwrap()["Docker"]["connected"], true);

    // The reference: the same daemon and leases, dockerd stopped (its containers stop with it;
    // the daemon then retries the connection with backoff, at most every 10 s).
    docker.stop_dockerd();
    let down = wait_until(Duration::from_secs(30), || {
        daemon_status(dir).is_some_and(|s| s["Docker"]["connected"] == false)
    });
    assert!(down, "the daemon saw dockerd go");
    std::thread::sleep(Duration::from_secs(2));
    let disconnected = cpu_window(pid, dnsmasq, config.window);
    let status = daemon_status(dir).expect("the daemon answers");
    let header = format!(
        "   {:<48} {:>9} {:>12} {:>9} {:>8}  target",
        "daemon CPU over the window", "CPU", "user+sys ms", "renewals", "/REF"
    );
    println!("{header}");
    println!("   {}", "-".repeat(header.len() + 6));
    for (label, window, is_ref) in [
        ("Docker connected, containers running", &connected, false),
        ("dockerd stopped (not connected)  [REF]", &disconnected, true),
    ] {
        let target = if is_ref {
            String::new()
        } else {
            format!("< {TARGET_CPU_PERCENT:.0}% {}", verdict(window.percent < TARGET_CPU_PERCENT))
        };
        println!(
            "   {:<48} {:>8.3}% {:>12} {:>9} {:>7.2}x  {target}",
            format!("{label}, {:.0} s", window.seconds),
            window.percent,
            format!("{}+{}", window.user_ms, window.system_ms),
            window.renewals,
            window.percent / disconnected.percent.max(1e-9),
        );
    }
    println!(
        "   renewals = DHCPACKs in dnsmasq's log during the window; the daemon reports {} leases \
         ({})",
        status["Leases"], status["LeasesByState"]
    );
}

struct CpuWindow {
    seconds: f64,
    percent: f64,
    user_ms: u64,
    system_ms: u64,
    renewals: usize,
}

fn cpu_window(pid: u32, dnsmasq: &dhcp::Dnsmasq, window: Duration) -> CpuWindow {
    let acks = || dnsmasq.log_text().matches("DHCPACK(").count();
    let (acks_before, (user0, system0)) = (acks(), cpu_ticks(pid).expect("the daemon's stat"));
    let started = Instant::now();
    std::thread::sleep(window);
    let (user1, system1) = cpu_ticks(pid).expect("the daemon's stat");
    let seconds = started.elapsed().as_secs_f64();
    let ticks = lab::clock_ticks() as f64;
    let (user, system) = ((user1 - user0) as f64, (system1 - system0) as f64);
    CpuWindow {
        seconds,
        percent: (user + system) / ticks / seconds * 100.0,
        user_ms: (user / ticks * 1e3) as u64,
        system_ms: (system / ticks * 1e3) as u64,
        renewals: acks() - acks_before,
    }
}

/// (utime, stime) of a process (all its threads, dead ones included), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// A /proc/meminfo figure in MB.
fn meminfo_mb(key: &str) -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok()
        })
        .map_or(0, |kb: u64| kb / 1024)
}
