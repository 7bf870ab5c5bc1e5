//! DHCP benchmark: how long `lanyard attach br0 netns:G dhcp` takes until the guest has its lease
//! (daemon already running), against bare busybox udhcpc and against the server's own reply
//! time from a packet capture; and what one daemon costs holding many leases (RSS, and CPU over
//! a window in which every lease renews), against busybox udhcpc processes' PSS.
//!
//! Run as root: `cargo bench --bench dhcp`. `LANYARD_BENCH_DHCP_ROUNDS` (default 50) sets the
//! timed attach rounds (and as many udhcpc rounds), `LANYARD_BENCH_DHCP_GUESTS` (default 1000,
//! at most 1000: a Linux bridge takes 1023 ports) the leases held by one daemon,
//! `LANYARD_BENCH_DHCP_WINDOW` (seconds, default 60) the CPU window, `LANYARD_BENCH_DHCP_UDHCPC`
//! (default 50) the udhcpc processes of the memory reference (0 skips it). Without cargo bench's
//! `--bench` argument (as under `cargo test --all-targets`) it makes a short smoke pass: 3
//! rounds, 5 guests, a 2 s window, 3 udhcpc processes.
//!
//! The compared ways must reach the same end state, or the run fails, in smoke and bench mode
//! alike: after the warm-up, lanyard's guest and udhcpc's have an address from the server with
//! the LAN's prefix and the server's router as their default route; every udhcpc of the memory
//! reference is bound; the daemon holds every lease of part 2.
//!
//! The world is the test lab's (tests/support/lab.rs and dhcp.rs): a "host" namespace H with
//! bridge br0 (198.18.4.1/22) and the lab's dnsmasq on it (`--no-ping`, pool
//! 198.18.4.10-198.18.7.250, 2 min leases, so T1 is 60 s), guest namespaces, all fresh.
//! Nothing here touches the root network namespace: the daemon, the CLI, dnsmasq and tcpdump run
//! inside H and udhcpc inside its guest (setns before exec, no mount namespace change); udhcpc
//! always runs with a script of ours that only configures its own interface, and the host's
//! /etc/resolv.conf is checked byte for byte at the end. lanyard's state directory and dnsmasq's
//! files are each on a tmpfs of their own (a disk's writes are not what is measured). Everything
//! made is removed by the lab's `Drop` guards, even on panic (the daemon and the servers, then
//! namespaces, then directories), and what a killed run left is swept by the next one (the lab's sweep: processes by their pid files, or a daemon a CLI started by the
//! state directory in its command line; then namespaces, mounts and directories).

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

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bench::{env_count, fs_type, load_average, median, ms, percentile};
use daemon::DaemonGuard;
use lanyard::daemon::control::{self, Request};
use lanyard::guest::GuestSpec;
use lanyard::state::DhcpSettings;
use lanyard::{AttachRequest, DhcpWait, Host};

const HOST_ID: &str = "bench";
const BRIDGE: &str = "br0";
/// The lab's LAN number 4, widened to a /22 for 1000 leases: br0 carries 198.18.4.1/22.
const LAN_INDEX: u8 = 4;
const LAN_PREFIX: u8 = 22;
const POOL: (&str, &str) = ("198.18.4.10", "198.18.7.250");
const LEASE: &str = "2m";
const LEASE_MAX: u32 = 2000;
const GUEST_IFNAME: &str = "eth1";
/// At most this many guests on one bridge (a Linux bridge takes 1023 ports).
const MAX_GUESTS: usize = 1000;
/// dnsmasq sets T1 to half of the 2 min lease.
const T1: Duration = Duration::from_secs(60);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// During the bring-up of part 2, H's dynamic ARP entries are flushed every this many guests.
const FLUSH_EVERY: usize = 100;
/// Pings per measurement of the daemon's CPU per event-loop turn.
const PINGS: u32 = 300;

// Targets (printed, not asserted).
const TARGET_ATTACH: Duration = Duration::from_millis(10);
const TARGET_RSS_KB: u64 = 50 * 1024;
const TARGET_CPU_PERCENT: f64 = 1.0;

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    // As the integration tests: never skipped quietly, not even as `cargo test`'s smoke run (a
    // bench that did not run proves nothing).
    lab::require_root();
    let config = Config::from_env(bench_mode);
    // Checked after everything is torn down; written back (and reported) if a panic ends the run.
    let mut resolv_conf = dhcp::HostResolvConf::snapshot();
    run(&config);
    resolv_conf.assert_unchanged();
    println!("host /etc/resolv.conf: byte for byte unchanged");
}

struct Config {
    bench_mode: bool,
    rounds: usize,
    guests: usize,
    window: Duration,
    udhcpc: usize,
    pin_neighbours: bool,
}

impl Config {
    fn from_env(bench_mode: bool) -> Config {
        let (rounds, guests, window, udhcpc) =
            if bench_mode { (50, 1000, 60.0, 50) } else { (3, 5, 2.0, 3) };
        let window = match std::env::var("LANYARD_BENCH_DHCP_WINDOW") {
            Ok(v) => v.trim().parse::<f64>().unwrap_or_else(|_| {
                panic!("LANYARD_BENCH_DHCP_WINDOW={v:?}: not a number of seconds")
            }),
            Err(_) => window,
        };
        let guests = env_count("LANYARD_BENCH_DHCP_GUESTS", guests);
        if guests > MAX_GUESTS {
            eprintln!("dhcp bench: {guests} guests asked, {MAX_GUESTS} at most on one bridge");
        }
        Config {
            bench_mode,
            rounds: env_count("LANYARD_BENCH_DHCP_ROUNDS", rounds).max(1),
            guests: guests.min(MAX_GUESTS),
            window: Duration::from_secs_f64(window.max(0.1)),
            udhcpc: env_count("LANYARD_BENCH_DHCP_UDHCPC", udhcpc).min(200),
            pin_neighbours: env_count("LANYARD_BENCH_DHCP_PIN_NEIGH", 1) != 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// `lanyard ARGS` inside H with the bench's state directory: the lab's CLI runner, with the host
/// id the library side of part 2 uses too.
fn lanyard(host: &lab::Netns, state: &lab::TestDir, args: &[&str]) -> Command {
    let mut cmd = cli::command(host, state, args);
    cmd.env("LANYARD_HOST_ID", HOST_ID);
    cmd
}

fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// A timed process: spawn to exit, wall clock (and the realtime clock at both ends, to line it
/// up with the capture). Panics if it fails.
fn timed(mut cmd: Command) -> Span {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let wall_start = SystemTime::now();
    let start = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = child.wait_with_output().expect("wait for child");
    let elapsed = start.elapsed();
    let wall_end = SystemTime::now();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Span { elapsed, start_us: unix_micros(wall_start), end_us: unix_micros(wall_end) }
}

#[derive(Clone, Copy)]
struct Span {
    elapsed: Duration,
    start_us: i64,
    end_us: i64,
}

// ---------------------------------------------------------------------------------------------
// Servers and clients

/// The lab's dnsmasq on br0 in H with the bench's /22 pool (the netmask comes from br0's
/// address), 2 min leases and room for more leases than guests. Its files are on a tmpfs of
/// their own: on disk, rewriting the lease file would add ~1.3 ms to the server's reply time
/// for every new lease, lanyard's included.
fn start_dnsmasq(host: &lab::Netns) -> dhcp::Dnsmasq {
    let dir = lab::TestDir::on_tmpfs("dnsmasq");
    let lease_max = format!("--dhcp-lease-max={LEASE_MAX}");
    dhcp::Dnsmasq::start_in(dir, host, BRIDGE, POOL, LEASE, &[&lease_max])
}

/// How many bytes dnsmasq has logged so far: where a window's lines start.
fn log_len(dnsmasq: &dhcp::Dnsmasq) -> usize {
    fs::metadata(&dnsmasq.log).map(|m| m.len() as usize).unwrap_or(0)
}

/// DHCPACK lines of dnsmasq's log from byte `from` on: (count, distinct MACs).
fn acks_since(dnsmasq: &dhcp::Dnsmasq, from: usize) -> (usize, BTreeSet<String>) {
    let text = dnsmasq.log_text();
    let mut count = 0;
    let mut macs = BTreeSet::new();
    for line in text.get(from..).unwrap_or("").lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| w.starts_with("DHCPACK(")) {
            count += 1;
            if let Some(mac) = words.get(at + 2) {
                macs.insert(mac.to_lowercase());
            }
        }
    }
    (count, macs)
}

/// The lanyard daemon of `state`, started by hand inside H (as `lanyard daemon` would be by
/// systemd), so that every timed attach finds it running. Its pid is checked against its own
/// answer to a ping: `guard` (which stops whatever daemon serves `state` at the end) asks.
fn start_daemon(host: &lab::Netns, state: &lab::TestDir, guard: &DaemonGuard) -> lab::Server {
    let daemon = lab::Server::spawn(lanyard(host, state, &["daemon"]), "lanyard-daemon");
    let mut answered = None;
    lab::wait_until(Duration::from_secs(5), || {
        answered = guard.pid();
        answered.is_some()
    });
    let Some(pid) = answered else {
        panic!("the daemon does not answer:\n{}", daemon.log());
    };
    assert_eq!(pid as u32, daemon.pid(), "another daemon answers on {}", state.path().display());
    daemon
}

/// The MAC of `ifname` in `ns`, as ip prints it (lower case).
fn mac_of(ns: &lab::Netns, ifname: &str) -> String {
    let link = ns.ip_json(&["link", "show", "dev", ifname]);
    link[0]["address"].as_str().unwrap_or_default().to_string()
}

/// Whether process `pid` has a live child (any of its threads' `children` lists).
fn has_children(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|task| {
        fs::read_to_string(task.path().join("children")).is_ok_and(|c| !c.trim().is_empty())
    })
}

/// The IPv4 default route's gateway and device in `ns`, if it has one.
fn default_route(ns: &lab::Netns) -> Option<String> {
    let out = ns.ip(&["-4", "route", "show", "default"]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let via = words.iter().position(|w| *w == "via").and_then(|i| words.get(i + 1))?;
    let dev = words.iter().position(|w| *w == "dev").and_then(|i| words.get(i + 1))?;
    Some(format!("{via} dev {dev}"))
}

/// The script udhcpc runs: it configures the lease on its own interface, as lanyard does
/// (address, default route), and touches no file.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# lanyard dhcp bench: udhcpc's event script. Never writes resolv.conf.
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr replace "$ip/$mask" dev "$interface"
    if [ -n "$router" ]; then ip route replace default via "${router%% *}" dev "$interface"; fi ;;
esac
exit 0
"#;

// ---------------------------------------------------------------------------------------------
// The capture: DHCP messages on br0

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;

struct Wire {
    at_us: i64,
    xid: u32,
    mac: [u8; 6],
    kind: u8,
}

/// Every DHCP message in a pcap file (Ethernet, IPv4, UDP) in capture order.
fn read_capture(path: &Path) -> Vec<Wire> {
    let bytes = fs::read(path).unwrap_or_default();
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let nanos = match word(0) {
        Some(0xa1b2_c3d4) => false,
        Some(0xa1b2_3c4d) => true,
        _ => return Vec::new(),
    };
    if word(20) != Some(1) {
        return Vec::new(); // not Ethernet
    }
    let mut out = Vec::new();
    let mut at = 24;
    while let (Some(sec), Some(frac), Some(len)) = (word(at), word(at + 4), word(at + 8)) {
        let Some(frame) = bytes.get(at + 16..at + 16 + len as usize) else { break };
        at += 16 + len as usize;
        let frac = if nanos { i64::from(frac) / 1000 } else { i64::from(frac) };
        if let Some((xid, mac, kind)) = parse_dhcp_frame(frame) {
            out.push(Wire { at_us: i64::from(sec) * 1_000_000 + frac, xid, mac, kind });
        }
    }
    out
}

fn parse_dhcp_frame(frame: &[u8]) -> Option<(u32, [u8; 6], u8)> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let header = usize::from(ip.first()? & 0x0f) * 4;
    if *ip.get(9)? != 17 {
        return None;
    }
    let bootp = ip.get(header + 8..)?;
    if bootp.get(236..240)? != [99, 130, 83, 99] {
        return None;
    }
    let xid = u32::from_be_bytes(bootp.get(4..8)?.try_into().ok()?);
    let mac: [u8; 6] = bootp.get(28..34)?.try_into().ok()?;
    let options = bootp.get(240..)?;
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(*options.get(i + 1)?);
                if code == 53 && len >= 1 {
                    return Some((xid, mac, *options.get(i + 2)?));
                }
                i += 2 + len;
            }
        }
    }
    None
}

fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    mac
}

/// One exchange as seen on br0, inside a timed run of a client.
#[derive(Default, Clone, Copy)]
struct Exchange {
    /// Spawn -> first DISCOVER.
    before: Duration,
    /// First DISCOVER -> ACK.
    on_wire: Duration,
    /// The server's share: DISCOVER -> OFFER plus REQUEST -> ACK.
    server: Duration,
    /// The client's share on the wire: OFFER -> REQUEST.
    client_turn: Duration,
    /// ACK -> the client's exit.
    after: Duration,
    discovers: usize,
}

fn exchange_in(wire: &[Wire], mac: [u8; 6], span: Span) -> Option<Exchange> {
    let ours: Vec<&Wire> = wire
        .iter()
        .filter(|w| w.mac == mac && w.at_us >= span.start_us && w.at_us <= span.end_us)
        .collect();
    let first_discover = ours.iter().find(|w| w.kind == DISCOVER)?;
    let offer = ours.iter().find(|w| w.kind == OFFER && w.at_us >= first_discover.at_us)?;
    let discover = ours.iter().rfind(|w| w.kind == DISCOVER && w.at_us <= offer.at_us)?;
    let request =
        ours.iter().find(|w| w.kind == REQUEST && w.xid == offer.xid && w.at_us >= offer.at_us)?;
    let ack =
        ours.iter().find(|w| w.kind == ACK && w.xid == offer.xid && w.at_us >= request.at_us)?;
    let us = |a: i64, b: i64| Duration::from_micros((b - a).max(0) as u64);
    Some(Exchange {
        before: us(span.start_us, first_discover.at_us),
        on_wire: us(first_discover.at_us, ack.at_us),
        server: us(discover.at_us, offer.at_us) + us(request.at_us, ack.at_us),
        client_turn: us(offer.at_us, request.at_us),
        after: us(ack.at_us, span.end_us),
        discovers: ours.iter().filter(|w| w.kind == DISCOVER && w.at_us <= ack.at_us).count(),
    })
}

// ---------------------------------------------------------------------------------------------
// Numbers

fn us(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// A `Key:   N kB` line of a /proc file, in kB (or the plain number).
fn proc_field(path: &str, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok()
    })
}

/// (utime, stime) of a process (all its threads, dead ones included), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// CPU time of a process's main thread, in nanoseconds (/proc/PID/schedstat, first field).
fn main_thread_cpu_ns(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The daemon's CPU per turn of its event loop: `count` pings (each one wakeup: accept, read,
/// answer), main thread's CPU time divided by the count.
fn cpu_per_ping(daemon: u32, state: &Path, count: u32) -> Duration {
    let before = main_thread_cpu_ns(daemon);
    for _ in 0..count {
        let answer = control::try_request(state, &Request::Ping, Duration::from_secs(5));
        assert!(matches!(answer, Ok(Some(_))), "the daemon did not answer a ping");
    }
    Duration::from_nanos((main_thread_cpu_ns(daemon) - before) / u64::from(count.max(1)))
}

/// The kernel's ARP table counters (one table for all namespaces, read from inside H).
fn arp_table_stats(host: &lab::Netns) -> BTreeMap<String, u64> {
    let text = host.ip(&["-s", "ntable", "show", "name", "arp_cache"]);
    let mut stats = BTreeMap::new();
    // The table's own block comes first; per-device blocks follow.
    let table = text.split("\n\n").next().unwrap_or("");
    let words: Vec<&str> = table.split_whitespace().collect();
    for pair in words.windows(2) {
        if let Ok(value) = pair[1].parse::<u64>() {
            stats.insert(pair[0].to_string(), value);
        }
    }
    stats
}

/// (InErrors, RcvbufErrors) of UDP in namespace `ns`, from /proc/net/snmp read inside it.
fn udp_errors(ns: &lab::Netns) -> (u64, u64) {
    let text = ns.exec_ok(&["cat", "/proc/net/snmp"]);
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() < 2 {
        return (0, 0);
    }
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let values: Vec<&str> = udp[1].split_whitespace().collect();
    let field = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("InErrors"), field("RcvbufErrors"))
}

struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
    pss_kb: u64,
    threads: u64,
    fds: usize,
}

fn memory(pid: u32) -> Memory {
    let status = format!("/proc/{pid}/status");
    Memory {
        rss_kb: proc_field(&status, "VmRSS").unwrap_or(0),
        hwm_kb: proc_field(&status, "VmHWM").unwrap_or(0),
        pss_kb: proc_field(&format!("/proc/{pid}/smaps_rollup"), "Pss").unwrap_or(0),
        threads: proc_field(&status, "Threads").unwrap_or(0),
        fds: fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0),
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {} (peak {}), PSS {}, {} thread(s), {} fds",
            mb(self.rss_kb),
            mb(self.hwm_kb),
            mb(self.pss_kb),
            self.threads,
            self.fds
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The run

fn run(config: &Config) {
    let total = Instant::now();
    let load_at_start = load_average();
    // Declared in this order so that they go in the reverse one: the daemon, then the LAN's
    // namespaces, then the directories.
    let scratch = lab::TestDir::new("dhcp-bench");
    let script = scratch.join("udhcpc.sh");
    fs::write(&script, UDHCPC_SCRIPT).expect("write the udhcpc script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod the script");
    // lanyard's state on tmpfs, whatever /tmp is: the attach times are not fsync's.
    let state = lab::TestDir::on_tmpfs("dhcp-state");
    assert_eq!(fs_type(state.path()), "tmpfs", "the state directory is not on a tmpfs");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(state.join("state"))
        .expect("create the state directory");
    let lan = lab::Lan::bridge_with_prefix(LAN_INDEX, LAN_PREFIX);
    let host = &lan.host;

    println!();
    println!(
        "lanyard DHCP benchmark ({} mode), kernel {}, {} CPUs, load average {load_at_start}",
        if config.bench_mode { "bench" } else { "smoke" },
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("CLI: {}", env!("CARGO_BIN_EXE_lanyard"));
    println!(
        "world: host netns {}: {BRIDGE} {}/{}, dnsmasq --no-ping pool {}-{}, lease {LEASE} (T1 {} \
         s), lease-max {LEASE_MAX}; state {} ({})",
        host.name,
        lan.gateway4,
        lan.prefix4,
        POOL.0,
        POOL.1,
        T1.as_secs(),
        state.join("state").display(),
        fs_type(state.path())
    );

    let dnsmasq = start_dnsmasq(host);
    let guard = DaemonGuard::new(&state);
    let daemon = start_daemon(host, &state, &guard);
    let idle = memory(daemon.pid());
    println!("daemon: pid {}, started by hand in {}; idle: {idle}", daemon.pid(), host.name);
    println!();

    part_attach(config, &lan, &state, &script, daemon.pid());
    dnsmasq.stop();
    let reference = (config.udhcpc > 0).then(|| {
        println!();
        part_udhcpc_memory(config, &lan, &script)
    });
    println!();
    part_many(config, &lan, &state, daemon, reference);
    println!();
    println!(
        "total bench time {:.1} s; load average at start {load_at_start}, at end {}",
        total.elapsed().as_secs_f64(),
        load_average()
    );
}

/// 1. Attach until the guest has its lease: the CLI against bare udhcpc, with the capture.
fn part_attach(config: &Config, lan: &lab::Lan, state: &lab::TestDir, script: &Path, daemon: u32) {
    let host = &lan.host;
    let guest = lan.guest("g");
    let reference = lan.guest("r");
    // The reference guest's veth, plugged by hand, forwarding before the first timed run.
    lan.plug(&reference, "lyref", GUEST_IFNAME);
    assert!(
        lan.wait_forwarding("lyref", Duration::from_secs(5)),
        "the reference port lyref never forwards"
    );
    let ref_mac = mac_of(&reference, GUEST_IFNAME);
    let capture = lab::capture_filtered(host, BRIDGE, &["udp and (port 67 or port 68)"]);

    let token = format!("netns:{}", guest.name);
    let attach = || timed(lanyard(host, state, &["attach", BRIDGE, &token, "dhcp"]));
    let detach = || timed(lanyard(host, state, &["detach", &token]));
    let udhcpc = || {
        let mut cmd = reference.command("busybox");
        cmd.args(["udhcpc", "-i", GUEST_IFNAME, "-q", "-n", "-f", "-s"]).arg(script);
        timed(cmd)
    };

    // Warm-up (untimed): learn the guest's MAC and check the lease is really configured.
    attach();
    let link = guest.ip_json(&["-4", "addr", "show", "dev", GUEST_IFNAME]);
    let guest_mac = mac_of(&guest, GUEST_IFNAME);
    let guest_addr = link[0]["addr_info"][0]["local"].as_str().unwrap_or("none").to_string();
    let guest_prefix = link[0]["addr_info"][0]["prefixlen"].as_u64().unwrap_or(0);
    let guest_default = default_route(&guest);
    detach();
    udhcpc();
    let ref_addr = reference.ip(&["-4", "-o", "addr", "show", "dev", GUEST_IFNAME]);
    let ref_addr = ref_addr.split_whitespace().nth(3).unwrap_or("none").to_string();
    // The two ways are compared only if they reach the same end state: an address from the
    // server with the LAN's prefix, and the server's router as the default route.
    let ref_prefix = ref_addr.split('/').nth(1).and_then(|p| p.parse::<u64>().ok());
    assert!(
        guest_addr != "none"
            && guest_prefix == u64::from(lan.prefix4)
            && ref_prefix == Some(guest_prefix),
        "lanyard configured {guest_addr}/{guest_prefix}, udhcpc {ref_addr}: not the same end state \
         (the LAN is a /{})",
        lan.prefix4
    );
    let ref_default = default_route(&reference);
    assert!(
        guest_default.is_some() && guest_default == ref_default,
        "default routes differ: lanyard {guest_default:?}, udhcpc {ref_default:?}"
    );
    println!(
        "1. attach until the guest has its lease: {} rounds, daemon already running, interleaved",
        config.rounds
    );
    println!(
        "   guest {} ({GUEST_IFNAME} {guest_mac}) got {guest_addr}/{guest_prefix}; reference {} \
         ({ref_mac}, veth plugged by hand) got {ref_addr}",
        guest.name, reference.name
    );

    let mut attaches = Vec::new();
    let mut detaches = Vec::new();
    let mut references = Vec::new();
    for round in 0..config.rounds {
        if round % 2 == 0 {
            attaches.push(attach());
            detaches.push(detach());
            references.push(udhcpc());
        } else {
            references.push(udhcpc());
            attaches.push(attach());
            detaches.push(detach());
        }
    }
    // Both clients exit only after their ACK crossed the bridge, but tcpdump may not have
    // written it yet: wait (bounded) until the capture holds the last exchange of each, then
    // read it. Rounds whose exchange never shows are counted as unmatched below.
    let (guest_mac, ref_mac) = (parse_mac(&guest_mac), parse_mac(&ref_mac));
    let last = (attaches.last().copied(), references.last().copied());
    lab::wait_until(Duration::from_secs(2), || {
        let wire = read_capture(capture.pcap());
        last.0.is_none_or(|span| exchange_in(&wire, guest_mac, span).is_some())
            && last.1.is_none_or(|span| exchange_in(&wire, ref_mac, span).is_some())
    });
    let wire = read_capture(capture.pcap());
    drop(capture);
    let lanyard_x: Vec<Exchange> =
        attaches.iter().filter_map(|s| exchange_in(&wire, guest_mac, *s)).collect();
    let reference_x: Vec<Exchange> =
        references.iter().filter_map(|s| exchange_in(&wire, ref_mac, *s)).collect();

    let times = |spans: &[Span]| spans.iter().map(|s| s.elapsed).collect::<Vec<_>>();
    let (attach_t, detach_t, ref_t) = (times(&attaches), times(&detaches), times(&references));
    let ref_median = median(&ref_t);
    let server_of = |x: &[Exchange]| x.iter().map(|e| e.server).collect::<Vec<_>>();
    println!();
    println!(
        "{:<58} {:>8} {:>8} {:>9} {:>14}  target",
        "way (times in ms)", "median", "p90", "/REF", "server med/p90"
    );
    println!("{}", "-".repeat(118));
    let row = |label: &str, samples: &[Duration], server: &[Duration], target: Option<Duration>| {
        let m = median(samples);
        let verdict = target
            .map(|t| format!("< {} ms {}", t.as_millis(), if m < t { "met" } else { "MISSED" }))
            .unwrap_or_default();
        let server = if server.is_empty() {
            "-".to_string()
        } else {
            format!("{}/{}", ms(median(server)), ms(percentile(server, 0.9)))
        };
        println!(
            "{:<58} {:>8} {:>8} {:>8.2}x {:>14}  {verdict}",
            label,
            ms(m),
            ms(percentile(samples, 0.9)),
            m.as_secs_f64() / ref_median.as_secs_f64(),
            server
        );
    };
    row(
        "busybox udhcpc -q -n -f -s OWN (veth by hand) [REF]",
        &ref_t,
        &server_of(&reference_x),
        None,
    );
    row(
        "lanyard attach br0 netns:G dhcp (CLI, until BOUND)",
        &attach_t,
        &server_of(&lanyard_x),
        Some(TARGET_ATTACH),
    );
    row("lanyard detach netns:G (CLI: RELEASE, veth deleted)", &detach_t, &[], None);
    println!(
        "server = dnsmasq's own reply time from the capture on {BRIDGE}: DISCOVER->OFFER + \
         REQUEST->ACK (matched in {} of {} lanyard rounds, {} of {} udhcpc rounds)",
        lanyard_x.len(),
        attaches.len(),
        reference_x.len(),
        references.len()
    );
    let breakdown = |label: &str, x: &[Exchange]| {
        if x.is_empty() {
            println!("   {label}: no exchange found in the capture");
            return;
        }
        let pick = |f: fn(&Exchange) -> Duration| median(&x.iter().map(f).collect::<Vec<_>>());
        let retried = x.iter().filter(|e| e.discovers > 1).count();
        println!(
            "   {label:<8} medians: spawn->DISCOVER {}, DISCOVER->ACK {} (server {}, client \
             OFFER->REQUEST {}), ACK->exit {}; rounds with a DISCOVER resent: {retried}",
            ms(pick(|e| e.before)),
            ms(pick(|e| e.on_wire)),
            ms(pick(|e| e.server)),
            ms(pick(|e| e.client_turn)),
            ms(pick(|e| e.after)),
        );
    };
    println!(
        "where the time goes (realtime clock at spawn/exit against the capture's timestamps):"
    );
    breakdown("lanyard", &lanyard_x);
    breakdown("udhcpc", &reference_x);
    let overhead = median(&attach_t).saturating_sub(median(&server_of(&lanyard_x)));
    println!("   lanyard's own overhead (median total - median server time): {} ms", ms(overhead));
    println!("   daemon after part 1: {}", memory(daemon));
    // The namespaces take their veths along (the lanyard guest's is already gone).
    drop(reference);
    drop(guest);
    wait_no_ports(host);
}

/// Namespaces go away asynchronously, and their veths with them: wait (bounded) until the
/// bridge has no ports left, so the next part has all of the 1023 a bridge takes.
fn wait_no_ports(host: &lab::Netns) {
    let empty = lab::wait_until(Duration::from_secs(30), || {
        host.ip(&["-o", "link", "show", "master", BRIDGE]).trim().is_empty()
    });
    assert!(empty, "{BRIDGE} ports did not go away within 30 s");
}

/// Reference for memory: `n` busybox udhcpc processes each holding a lease; (n, total PSS kB).
fn part_udhcpc_memory(config: &Config, lan: &lab::Lan, script: &Path) -> (usize, u64) {
    let n = config.udhcpc;
    let dnsmasq = start_dnsmasq(&lan.host);
    let guests: Vec<lab::Netns> = (0..n).map(|i| lan.guest(&format!("u{i}"))).collect();
    for (i, guest) in guests.iter().enumerate() {
        lan.plug(guest, &format!("lyu{i}"), GUEST_IFNAME);
    }
    for i in 0..n {
        let port = format!("lyu{i}");
        assert!(lan.wait_forwarding(&port, Duration::from_secs(5)), "{port} never forwards");
    }
    let macs: BTreeSet<String> = guests.iter().map(|g| mac_of(g, GUEST_IFNAME)).collect();
    let clients: Vec<lab::Server> = guests
        .iter()
        .map(|guest| {
            let mut cmd = guest.command("busybox");
            // Foreground, keeping the lease (renewing), releasing it on exit (-R, on SIGTERM).
            cmd.args(["udhcpc", "-i", GUEST_IFNAME, "-f", "-R", "-s"]).arg(script);
            lab::Server::spawn(cmd, "udhcpc")
        })
        .collect();
    let ours = || dnsmasq.leases().iter().filter(|l| macs.contains(&l.mac)).count();
    let bound = lab::wait_until(Duration::from_secs(20), || ours() == n);
    let leased = ours();
    // Their scripts may still be running `ip`: measure once none of them has a child left.
    let settled = lab::wait_until(Duration::from_secs(5), || {
        clients.iter().all(|client| !has_children(client.pid()))
    });
    assert!(settled, "memory reference: udhcpc scripts still running after 5 s");
    let pss: u64 = clients.iter().map(|client| memory(client.pid()).pss_kb).sum();
    let rss: u64 = clients.iter().map(|client| memory(client.pid()).rss_kb).sum();
    println!(
        "memory reference: {n} busybox udhcpc processes (-f -R, own script), {leased} of {n} bound{}: \
         PSS total {} ({:.0} kB each), RSS total {}",
        if bound { "" } else { " (NOT all bound within 20 s)" },
        mb(pss),
        pss as f64 / n as f64,
        mb(rss)
    );
    drop(clients);
    dnsmasq.stop();
    drop(guests);
    // The reference's memory is compared with the daemon's per lease: only when every udhcpc
    // holds one, as every lease of the daemon does.
    assert!(bound, "memory reference: only {leased} of {n} udhcpc processes bound within 20 s");
    wait_no_ports(&lan.host);
    (n, pss)
}

/// 2. Many leases held by one daemon: bring-up time, RSS, CPU over a window with renewals.
fn part_many(
    config: &Config,
    lan: &lab::Lan,
    state: &lab::TestDir,
    mut daemon: lab::Server,
    reference: Option<(usize, u64)>,
) {
    let n = config.guests;
    let host = &lan.host;
    let state_path = state.join("state");
    let daemon_pid = daemon.pid();
    let dnsmasq = start_dnsmasq(host);
    let created = Instant::now();
    let guests: Vec<lab::Netns> = (0..n).map(|i| lan.guest(&format!("d{i}"))).collect();
    let created = created.elapsed();
    println!(
        "2. {n} leases held by one daemon (guests attached with the library + the daemon's \
         Acquire, as the CLI does; {n} namespaces made beforehand in {:.1} s, untimed)",
        created.as_secs_f64()
    );
    let before = memory(daemon_pid);
    let ping_idle = cpu_per_ping(daemon_pid, &state_path, PINGS);
    let arp_before = arp_table_stats(host);
    let library_host =
        Host::new(lanyard::netns::Netns::open(&host.path).expect("open H"), &state_path, HOST_ID)
            .expect("open the state directory");
    let mut each = Vec::with_capacity(n);
    // The kernel has one ARP table for all namespaces, capped at 1024 dynamic entries (see the
    // pinning below), and here the server shares it with its clients, which a real DHCP server
    // does not: H's entry for each client dnsmasq answered goes on to DELAY and PROBE (seen: 572
    // of 798 at once; forced garbage collection skips entries in those states), and H's probe
    // gives that guest an entry for the server too. Without a flush the table filled up (about
    // 1000 `table_fulls` per bring-up) and an attach near the 800th failed with no offer in 2 of
    // 4 runs, so H's dynamic entries on br0 are flushed every FLUSH_EVERY guests (untimed).
    // (Before the bench used the lab's bridge, whose MAC is fixed, br0 took the MAC of its lowest
    // port: each time a new port had a lower one, the kernel flushed these entries by itself.)
    let (mut flushes, mut flushing) = (0, Duration::ZERO);
    let start = Instant::now();
    for (i, guest) in guests.iter().enumerate() {
        if config.pin_neighbours && i > 0 && i % FLUSH_EVERY == 0 {
            let flush = Instant::now();
            host.ip(&["-4", "neigh", "flush", "dev", BRIDGE]);
            flushing += flush.elapsed();
            flushes += 1;
        }
        let t0 = Instant::now();
        let mut request = AttachRequest::new(BRIDGE, GuestSpec::Netns(guest.name.clone()));
        request.dhcp = Some(DhcpSettings::default());
        request.dhcp_wait = DhcpWait { timeout: ACQUIRE_TIMEOUT, wait: true };
        let attached = lanyard::attach(&library_host, &request)
            .unwrap_or_else(|e| panic!("lanyard::attach {}: {e}", guest.name));
        let lease = attached.lease.unwrap_or_default();
        assert!(lease["Address"].is_string(), "{}: no address in {lease}", guest.name);
        each.push(t0.elapsed());
    }
    let bring_up = start.elapsed() - flushing;
    let k = each.len().min(10);
    let ends =
        |v: &[Duration]| format!("{} -> {}", ms(median(&v[..k])), ms(median(&v[v.len() - k..])));
    println!(
        "   bring-up: {n} leases in {:.2} s, {} ms/guest (median of the first {k} -> last {k} \
         guests, library attach until BOUND: {} ms); {flushes} flushes of H's dynamic ARP \
         entries on {BRIDGE} in between, {} ms in all, untimed",
        bring_up.as_secs_f64(),
        ms(bring_up / n.max(1) as u32),
        ends(&each),
        ms(flushing),
    );
    // The kernel has one ARP table for all namespaces (gc_thresh3 1024, a sysctl of the root
    // namespace, which the bench leaves alone). Renewals are unicast: each guest needs an entry
    // for the server and the server one per guest, ~2 per lease; past 1024 new entries fail and
    // renewals are lost. Permanent entries do not count against the limit: pin them (untimed).
    let pinned = if config.pin_neighbours {
        let pin = Instant::now();
        let leases = dnsmasq.leases();
        let lines: String = leases
            .iter()
            .map(|l| {
                format!("neigh replace {} lladdr {} dev {BRIDGE} nud permanent\n", l.ip, l.mac)
            })
            .collect();
        host.ip_batch(&lines);
        let bridge_mac = mac_of(host, BRIDGE);
        let server = lan.gateway4.to_string();
        for guest in &guests {
            guest.ip(&[
                "neigh",
                "replace",
                &server,
                "lladdr",
                &bridge_mac,
                "dev",
                GUEST_IFNAME,
                "nud",
                "permanent",
            ]);
        }
        format!(
            "pinned permanent ARP entries (server in each guest, {} guests in H) in {:.1} s",
            leases.len(),
            pin.elapsed().as_secs_f64()
        )
    } else {
        "ARP entries left dynamic (LANYARD_BENCH_DHCP_PIN_NEIGH=0)".to_string()
    };
    println!("   {pinned}");
    let held = dnsmasq.leases().len();
    let ports = host.ip(&["-o", "link", "show", "master", BRIDGE]).lines().count();
    let with = memory(daemon_pid);
    let ticks = lab::clock_ticks();
    let switches = |pid: u32| {
        let status = format!("/proc/{pid}/status");
        proc_field(&status, "voluntary_ctxt_switches").unwrap_or(0)
            + proc_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0)
    };

    // The window: CPU (utime + stime, threads included) and renewals seen by the server.
    let log_from = log_len(&dnsmasq);
    let arp_window = arp_table_stats(host);
    let cpu_before = cpu_ticks(daemon_pid).expect("daemon's /proc stat");
    let udp_before = udp_errors(host);
    let switches_before = switches(daemon_pid);
    let window_start = Instant::now();
    std::thread::sleep(config.window);
    let cpu_after = cpu_ticks(daemon_pid).expect("daemon's /proc stat");
    let window = window_start.elapsed();
    let switches_after = switches(daemon_pid);
    let (acks, renewed) = acks_since(&dnsmasq, log_from);
    let after = memory(daemon_pid);
    let arp_after = arp_table_stats(host);
    let ping_full = cpu_per_ping(daemon_pid, &state_path, PINGS);

    let leases = control::try_request(&state_path, &Request::Leases, Duration::from_secs(10))
        .ok()
        .flatten()
        .map(|r| r.data.as_array().cloned().unwrap_or_default())
        .unwrap_or_default();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for lease in &leases {
        *states.entry(lease["State"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    let states: Vec<String> = states.iter().map(|(s, c)| format!("{c} {s}")).collect();

    let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let cpu = Duration::from_secs_f64((user + system) as f64 / ticks as f64);
    let percent = cpu.as_secs_f64() * 100.0 / window.as_secs_f64();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "   {BRIDGE} has {ports} ports; dnsmasq holds {held} leases; the daemon reports {} ({})",
        leases.len(),
        states.join(", ")
    );
    // Memory and CPU per lease are compared with the udhcpc reference: only meaningful when the
    // daemon really holds all of them.
    let holding = leases
        .iter()
        .filter(|l| matches!(l["State"].as_str(), Some("BOUND" | "RENEWING" | "REBINDING")))
        .count();
    assert_eq!(holding, n, "the daemon holds {holding} of {n} leases ({})", states.join(", "));
    println!(
        "{:<58} {:>12} {:>14}  target",
        format!("   daemon (pid {daemon_pid})"),
        "value",
        "per lease"
    );
    println!("   {}", "-".repeat(100));
    let per_lease =
        |kb: u64, base: u64| format!("{:.1} kB", kb.saturating_sub(base) as f64 / n.max(1) as f64);
    println!(
        "   {:<55} {:>12} {:>14}",
        "RSS idle, 0 leases (before bring-up)",
        mb(before.rss_kb),
        ""
    );
    for (label, rss_kb) in [
        (format!("RSS holding {n} leases"), with.rss_kb),
        ("RSS after the window (renewals done)".to_string(), after.rss_kb),
    ] {
        println!(
            "   {:<55} {:>12} {:>14}  < {} {}",
            label,
            mb(rss_kb),
            per_lease(rss_kb, before.rss_kb),
            mb(TARGET_RSS_KB),
            verdict(rss_kb < TARGET_RSS_KB)
        );
    }
    println!(
        "   {:<55} {:>12} {:>14}",
        format!("PSS holding {n} leases"),
        mb(with.pss_kb),
        per_lease(with.pss_kb, 0)
    );
    if let Some((count, pss)) = reference {
        let each = pss as f64 / count.max(1) as f64;
        println!(
            "   {:<55} {:>12} {:>14}  ({:.2}x the daemon's PSS)",
            format!("[REF] {count} udhcpc PSS, scaled to {n} leases"),
            mb((each * n as f64) as u64),
            format!("{each:.1} kB"),
            each * n as f64 / with.pss_kb.max(1) as f64
        );
    }
    println!(
        "   {:<55} {:>12} {:>14}  < {TARGET_CPU_PERCENT}% {}",
        format!("CPU over {:.1} s (utime+stime, {ticks} ticks/s)", window.as_secs_f64()),
        format!("{percent:.3}%"),
        format!("{:.0} us", cpu.as_secs_f64() * 1e6 / n.max(1) as f64),
        verdict(percent < TARGET_CPU_PERCENT)
    );
    println!(
        "   {:<55} {:>12}",
        "CPU time in the window (user + system)",
        format!("{}+{} ms", user * 1000 / ticks, system * 1000 / ticks)
    );
    println!(
        "   {:<55} {:>12} {:>14}",
        format!("CPU per event-loop turn (a ping), 0 leases -> {n}"),
        format!("{} -> {}", us(ping_idle), us(ping_full)),
        format!(
            "{:.2} us",
            ping_full.saturating_sub(ping_idle).as_secs_f64() * 1e6 / n.max(1) as f64
        )
    );
    println!(
        "   {:<55} {:>12} {:>14}",
        "context switches in the window (~ wakeups)",
        switches_after - switches_before,
        format!("{:.1}", (switches_after - switches_before) as f64 / n.max(1) as f64)
    );
    println!("   memory holding {n} leases: {with}");
    let arp = |stats: &BTreeMap<String, u64>, key: &str| stats.get(key).copied().unwrap_or(0);
    println!(
        "   kernel ARP table (all namespaces; thresh3 {}): entries {} at the end; table_fulls +{} \
         during bring-up, +{} during the window",
        arp(&arp_after, "thresh3"),
        arp(&arp_after, "entries"),
        arp(&arp_window, "table_fulls") - arp(&arp_before, "table_fulls"),
        arp(&arp_after, "table_fulls") - arp(&arp_window, "table_fulls"),
    );
    let udp_after = udp_errors(host);
    println!(
        "   UDP receive errors in H during the window (dnsmasq's side; RcvbufErrors = a full socket buffer): {} ({} buffer)",
        udp_after.0.saturating_sub(udp_before.0),
        udp_after.1.saturating_sub(udp_before.1)
    );
    let expect_renewals = window >= T1;
    println!(
        "   renewals in the window (dnsmasq's log): {acks} DHCPACKs for {} of {n} leases{}",
        renewed.len(),
        if expect_renewals {
            if renewed.len() == n {
                ": every lease renewed inside the window"
            } else {
                ": NOT every lease renewed inside the window"
            }
        } else {
            " (window shorter than T1: no renewal expected)"
        }
    );
    if expect_renewals && renewed.len() < n {
        // Say which leases did not renew and what both sides logged about them.
        let log = dnsmasq.log_text();
        let window_log = log.get(log_from..).unwrap_or("");
        for lease in dnsmasq.leases().iter().filter(|l| !renewed.contains(&l.mac)) {
            let (mac, ip) = (&lease.mac, lease.ip);
            println!("   not renewed: {mac} {ip}; dnsmasq in the window:");
            for line in window_log
                .lines()
                .filter(|l| l.to_lowercase().contains(mac) || l.contains(&format!(" {ip} ")))
            {
                println!("     {line}");
            }
        }
        let daemon_log = daemon.log();
        let interesting = |l: &&str| {
            !l.contains(": bound ") && !l.contains("serving") && !l.contains("(Released)")
        };
        for line in daemon_log.lines().filter(interesting).take(20) {
            println!("   daemon: {line}");
        }
    }
    // Teardown (untimed): the daemon first (its sockets keep the namespaces alive), then the
    // namespaces (their veths go with them).
    let teardown = Instant::now();
    daemon.stop(Duration::from_secs(5));
    drop(guests);
    dnsmasq.stop();
    println!("   teardown (untimed): {:.1} s", teardown.elapsed().as_secs_f64());
}
