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
//! The world: a "host" namespace H with bridge br0 (198.18.4.1/22) and dnsmasq on it (`--no-ping`,
//! pool 198.18.4.10-198.18.7.250, 2 min leases, so T1 is 60 s), guest namespaces, all fresh
//! (`lybench-<pid>-*`). Nothing here touches the root network namespace: the daemon, the CLI,
//! dnsmasq and tcpdump run inside H and udhcpc inside its guest (setns before exec, no mount
//! namespace change); udhcpc always runs with a script of ours that only configures its own
//! interface, and the host's /etc/resolv.conf is checked byte for byte at the end. Everything
//! made is removed by `Drop` guards, even on panic (processes, including the daemon found by
//! its state directory in /proc, then namespaces, then directories); children also get
//! PR_SET_PDEATHSIG, and leftovers of a killed run (dead pid) are swept at start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lanyard::daemon::control::{self, Request};
use lanyard::guest::GuestSpec;
use lanyard::netns::Netns;
use lanyard::state::DhcpSettings;
use lanyard::{AttachRequest, DhcpWait, Host};

const PREFIX: &str = "lybench-";
const HOST_ID: &str = "bench";
const BRIDGE: &str = "br0";
const BRIDGE_ADDRESS: &str = "198.18.4.1/22";
const POOL: (&str, &str) = ("198.18.4.10", "198.18.7.250");
const NETMASK: &str = "255.255.252.0";
const LEASE: &str = "2m";
const LEASE_MAX: u32 = 2000;
const GUEST_IFNAME: &str = "eth1";
/// At most this many guests on one bridge (a Linux bridge takes 1023 ports).
const MAX_GUESTS: usize = 1000;
/// The reference guest's MAC (udhcpc); the memory reference's are 02:00:c6:12:fe:NN.
const REF_MAC: &str = "02:00:c6:12:ff:01";
/// dnsmasq sets T1 to half of the 2 min lease.
const T1: Duration = Duration::from_secs(60);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pings per measurement of the daemon's CPU per event-loop turn.
const PINGS: u32 = 300;

// Targets (printed, not asserted).
const TARGET_ATTACH: Duration = Duration::from_millis(10);
const TARGET_RSS_KB: u64 = 50 * 1024;
const TARGET_CPU_PERCENT: f64 = 1.0;

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    // Never skipped quietly, not even as `cargo test`'s smoke run: a bench that did not run
    // proves nothing, and the integration tests fail the same way without root.
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "dhcp bench: needs root (network namespaces, veths, DHCP servers): run it as root"
        );
        std::process::exit(1);
    }
    for tool in ["ip", "dnsmasq", "tcpdump", "busybox"] {
        if !program_exists(tool) {
            eprintln!(
                "dhcp bench: `{tool}` not found (apt-get install iproute2 dnsmasq-base tcpdump \
                 busybox-static, or ./scripts/setup.sh)"
            );
            std::process::exit(1);
        }
    }
    let config = Config::from_env(bench_mode);
    sweep_leftovers();
    let resolv_before = fs::read("/etc/resolv.conf").ok();
    {
        let mut lab = Lab::new();
        run(&config, &mut lab);
    }
    let resolv_after = fs::read("/etc/resolv.conf").ok();
    assert_eq!(resolv_before, resolv_after, "the host's /etc/resolv.conf changed");
    println!("host /etc/resolv.conf: byte for byte unchanged");
}

struct Config {
    bench_mode: bool,
    rounds: usize,
    guests: usize,
    window: Duration,
    udhcpc: usize,
    pin_neighbours: bool,
    cli: PathBuf,
}

impl Config {
    fn from_env(bench_mode: bool) -> Config {
        let number = |name: &str, default: usize| -> usize {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
                Err(_) => default,
            }
        };
        let (rounds, guests, window, udhcpc) =
            if bench_mode { (50, 1000, 60.0, 50) } else { (3, 5, 2.0, 3) };
        let window = match std::env::var("LANYARD_BENCH_DHCP_WINDOW") {
            Ok(v) => v.trim().parse::<f64>().unwrap_or_else(|_| {
                panic!("LANYARD_BENCH_DHCP_WINDOW={v:?}: not a number of seconds")
            }),
            Err(_) => window,
        };
        let guests = number("LANYARD_BENCH_DHCP_GUESTS", guests);
        if guests > MAX_GUESTS {
            eprintln!("dhcp bench: {guests} guests asked, {MAX_GUESTS} at most on one bridge");
        }
        Config {
            bench_mode,
            rounds: number("LANYARD_BENCH_DHCP_ROUNDS", rounds).max(1),
            guests: guests.min(MAX_GUESTS),
            window: Duration::from_secs_f64(window.max(0.1)),
            udhcpc: number("LANYARD_BENCH_DHCP_UDHCPC", udhcpc).min(200),
            pin_neighbours: number("LANYARD_BENCH_DHCP_PIN_NEIGH", 1) != 0,
            cli: PathBuf::from(env!("CARGO_BIN_EXE_lanyard")),
        }
    }
}

fn program_exists(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// The world and its teardown

/// Owns every namespace, directory and process this run makes; `Drop` removes them all.
struct Lab {
    pid: u32,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
    /// Servers, captures and clients we spawned (the daemon too), stopped in reverse order.
    children: Vec<(String, Child)>,
    /// Daemons are also looked for by their state directory in /proc: a CLI may start one.
    daemon_state_dirs: Vec<PathBuf>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            pid: std::process::id(),
            namespaces: Vec::new(),
            dirs: Vec::new(),
            children: Vec::new(),
            daemon_state_dirs: Vec::new(),
        }
    }

    fn name(&self, tag: &str) -> String {
        format!("{PREFIX}{}-{tag}", self.pid)
    }

    /// Create namespaces (one `ip -batch`), recorded first so a half-done batch is cleaned too.
    fn add_namespaces(&mut self, names: &[String]) {
        self.namespaces.extend(names.iter().cloned());
        let lines: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
        let (ok, err) = ip_batch_quiet(&[], &lines);
        assert!(ok, "ip netns add failed: {err}");
    }

    fn remove_namespaces(&mut self, names: &[String]) {
        let lines: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
        let _ = ip_batch_quiet(&["-force"], &lines);
        self.namespaces.retain(|n| !names.contains(n));
    }

    fn dir(&mut self, base: &Path, tag: &str) -> PathBuf {
        let dir = base.join(self.name(tag));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        self.dirs.push(dir.clone());
        dir
    }

    fn adopt(&mut self, label: impl Into<String>, child: Child) -> u32 {
        let pid = child.id();
        self.children.push((label.into(), child));
        pid
    }

    /// Stop one of our children (SIGTERM, then SIGKILL after `grace`).
    fn stop(&mut self, pid: u32, grace: Duration) {
        if let Some(at) = self.children.iter().position(|(_, c)| c.id() == pid) {
            let (_, mut child) = self.children.remove(at);
            stop_child(&mut child, grace);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Nothing here may panic: this also runs while unwinding. Processes first (a socket held
        // in a namespace keeps it alive), then namespaces, then files.
        for state in std::mem::take(&mut self.daemon_state_dirs) {
            kill_by_cmdline(&state.to_string_lossy(), Duration::from_secs(2));
        }
        while let Some((_, mut child)) = self.children.pop() {
            stop_child(&mut child, Duration::from_secs(2));
        }
        let names = std::mem::take(&mut self.namespaces);
        if !names.is_empty() {
            let lines: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
            let _ = ip_batch_quiet(&["-force"], &lines);
        }
        for dir in self.dirs.drain(..) {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill with a pid we own and a signal number.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Processes (not us) whose command line contains `needle`.
fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| pid != me && cmdline(pid).contains(needle))
        .collect()
}

/// SIGTERM every process whose command line contains `needle`, SIGKILL what is left after
/// `grace` (the daemon's state directory is in its command line, whoever started it).
fn kill_by_cmdline(needle: &str, grace: Duration) {
    let pids = pids_with_cmdline(needle);
    if pids.is_empty() {
        return;
    }
    for &pid in &pids {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    // A child of ours stays a zombie (empty cmdline) until reaped: cmdline is the test.
    while Instant::now() < deadline && pids.iter().any(|&pid| cmdline(pid).contains(needle)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in pids {
        if cmdline(pid).contains(needle) {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// The pid in `lybench-<pid>-...`, if the name is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove processes, namespaces and directories left by runs whose process is gone.
fn sweep_leftovers() {
    let dead = |name: &str| owner_pid(name).is_some_and(|pid| !pid_alive(pid));
    // Processes of dead runs: their command lines name a `lybench-<deadpid>-` directory.
    let mut owners = BTreeSet::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for pid in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
            let line = cmdline(pid);
            for (at, _) in line.match_indices(PREFIX) {
                if let Some(owner) = owner_pid(&line[at..]) {
                    if !pid_alive(owner) {
                        owners.insert(owner);
                    }
                }
            }
        }
    }
    for owner in owners {
        eprintln!("dhcp bench: stopping leftover processes of run {owner}");
        kill_by_cmdline(&format!("{PREFIX}{owner}-"), Duration::from_secs(2));
    }
    let mut lines = String::new();
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                lines.push_str(&format!("netns del {name}\n"));
            }
        }
    }
    if !lines.is_empty() {
        eprintln!("dhcp bench: sweeping {} leftover namespaces", lines.lines().count());
        let _ = ip_batch_quiet(&["-force"], &lines);
    }
    for base in ["/run", "/dev/shm", "/var/tmp"] {
        if let Ok(entries) = fs::read_dir(base) {
            for entry in entries.flatten() {
                if dead(&entry.file_name().to_string_lossy()) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

/// Make `cmd` enter the network namespace `netns` between fork and exec, and die with us.
fn enter_netns(cmd: &mut Command, netns: &File) {
    let fd = netns.as_raw_fd();
    // SAFETY: setns, prctl and errno reads are async-signal-safe and the closure allocates
    // nothing; the descriptor is borrowed from a File the caller keeps open until the child has
    // been spawned.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
}

/// `ip` with arguments; panics on failure, returns stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip [global] -batch -` fed `lines`, never panicking (for setup checks and teardown).
fn ip_batch_quiet(global: &[&str], lines: &str) -> (bool, String) {
    let child = Command::new("ip")
        .args(global)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else { return (false, "cannot run ip".into()) };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(lines.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) => (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()),
        Err(e) => (false, e.to_string()),
    }
}

/// `ip -batch` that must succeed.
fn ip_batch(global: &[&str], lines: &str) {
    let (ok, err) = ip_batch_quiet(global, lines);
    assert!(ok, "ip {} -batch failed: {}", global.join(" "), err.trim());
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

fn fs_type(path: &Path) -> &'static str {
    match nix::sys::statfs::statfs(path).map(|s| s.filesystem_type()) {
        Ok(t) if t == nix::sys::statfs::TMPFS_MAGIC => "tmpfs",
        Ok(t) if t == nix::sys::statfs::EXT4_SUPER_MAGIC => "ext4",
        Ok(_) => "other fs",
        Err(_) => "unknown fs",
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Poll `check` every 10 ms until it holds or `timeout` passes; whether it held.
fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Servers and clients

/// dnsmasq on br0 in H, as LAB.md says (`--no-ping`), with a /22 pool and 2 min leases.
struct Dnsmasq {
    pid: u32,
    log: PathBuf,
    leases: PathBuf,
}

fn start_dnsmasq(lab: &mut Lab, host_ns: &File, dir: &Path, tag: &str) -> Dnsmasq {
    let log = dir.join(format!("dnsmasq-{tag}.log"));
    let leases = dir.join(format!("dnsmasq-{tag}.leases"));
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--user=root", // no setuid: keeps PR_SET_PDEATHSIG
        "--bind-interfaces",
        "--except-interface=lo",
        "--port=0",
        "--dhcp-authoritative",
        "--no-ping",
        "--log-dhcp",
    ])
    .arg(format!("--interface={BRIDGE}"))
    .arg(format!("--dhcp-range={},{},{NETMASK},{LEASE}", POOL.0, POOL.1))
    .arg(format!("--dhcp-lease-max={LEASE_MAX}"))
    .arg(format!("--dhcp-leasefile={}", leases.display()))
    .arg(format!("--pid-file={}", dir.join(format!("dnsmasq-{tag}.pid")).display()))
    .arg(format!("--log-facility={}", log.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(File::create(dir.join(format!("dnsmasq-{tag}.err"))).expect("dnsmasq stderr file"));
    enter_netns(&mut cmd, host_ns);
    let child = cmd.spawn().expect("start dnsmasq");
    let pid = lab.adopt("dnsmasq", child);
    let up = wait_until(Duration::from_secs(10), || read_lossy(&log).contains("DHCP, IP range"));
    assert!(
        up,
        "dnsmasq did not start:\n{}\n{}",
        read_lossy(&log),
        read_lossy(&dir.join(format!("dnsmasq-{tag}.err")))
    );
    Dnsmasq { pid, log, leases }
}

impl Dnsmasq {
    /// (MAC, address) of every lease in the lease file.
    fn leases(&self) -> Vec<(String, String)> {
        read_lossy(&self.leases)
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() >= 3 && f[0] != "duid").then(|| (f[1].to_lowercase(), f[2].to_string()))
            })
            .collect()
    }

    fn log_len(&self) -> usize {
        fs::metadata(&self.log).map(|m| m.len() as usize).unwrap_or(0)
    }

    /// DHCPACK lines of the log from byte `from` on: (count, distinct MACs).
    fn acks_since(&self, from: usize) -> (usize, BTreeSet<String>) {
        let text = read_lossy(&self.log);
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
}

/// tcpdump on br0 in H: every DHCP frame, timestamped by the kernel.
fn start_capture(lab: &mut Lab, host_ns: &File, dir: &Path) -> (u32, PathBuf) {
    let pcap = dir.join("dhcp.pcap");
    let err = dir.join("tcpdump.err");
    let mut cmd = Command::new("tcpdump");
    cmd.args(["-i", BRIDGE, "-n", "-U", "--immediate-mode", "-Z", "root", "-s", "1024", "-w"])
        .arg(&pcap)
        .arg("udp and (port 67 or port 68)")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err).expect("tcpdump stderr file"));
    enter_netns(&mut cmd, host_ns);
    let child = cmd.spawn().expect("start tcpdump");
    let pid = lab.adopt("tcpdump", child);
    let up = wait_until(Duration::from_secs(10), || read_lossy(&err).contains("listening on"));
    assert!(up, "tcpdump did not start: {}", read_lossy(&err));
    (pid, pcap)
}

/// The lanyard daemon of `state`, started by hand inside H (as `lanyard daemon` would be by
/// systemd); its pid from its own answer to a ping.
fn start_daemon(lab: &mut Lab, config: &Config, host_ns: &File, state: &Path) -> u32 {
    lab.daemon_state_dirs.push(state.to_path_buf());
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join(control::LOG_NAME))
        .expect("open daemon.log");
    let mut cmd = Command::new(&config.cli);
    cmd.arg("--state-dir")
        .arg(state)
        .arg("daemon")
        .env("LANYARD_HOST_ID", HOST_ID)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup daemon.log"))
        .stderr(log);
    enter_netns(&mut cmd, host_ns);
    let child = cmd.spawn().expect("start lanyard daemon");
    let spawned = lab.adopt("lanyard daemon", child);
    let mut pid = None;
    wait_until(Duration::from_secs(5), || {
        pid = control::try_request(state, &Request::Ping, Duration::from_secs(1))
            .ok()
            .flatten()
            .and_then(|r| r.data["pid"].as_u64())
            .map(|p| p as u32);
        pid.is_some()
    });
    let pid = pid.unwrap_or_else(|| {
        panic!("the daemon does not answer:\n{}", read_lossy(&state.join(control::LOG_NAME)))
    });
    assert_eq!(pid, spawned, "another daemon answers on {}", state.display());
    pid
}

/// The state of a bridge port (`forwarding` once frames pass).
fn port_state(host: &str, port: &str) -> String {
    let out = ip(&["-n", host, "-j", "-d", "link", "show", "dev", port]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v[0]["linkinfo"]["info_slave_data"]["state"].as_str().unwrap_or("").to_string()
}

/// Whether process `pid` has a live child (any of its threads' `children` lists).
fn has_children(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|task| {
        fs::read_to_string(task.path().join("children")).is_ok_and(|c| !c.trim().is_empty())
    })
}

/// The IPv4 default route's gateway and device in namespace `ns`, if it has one.
fn default_route(ns: &str) -> Option<String> {
    let out = ip(&["-n", ns, "-4", "route", "show", "default"]);
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

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// A `Key:   N kB` line of a /proc file, in kB (or the plain number).
fn proc_field(path: &str, key: &str) -> Option<u64> {
    read_lossy(Path::new(path)).lines().find_map(|l| {
        l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok()
    })
}

/// (utime, stime) of a process (all its threads, dead ones included), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = read_lossy(Path::new(&format!("/proc/{pid}/stat")));
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// CPU time of a process's main thread, in nanoseconds (/proc/PID/schedstat, first field).
fn main_thread_cpu_ns(pid: u32) -> u64 {
    read_lossy(Path::new(&format!("/proc/{pid}/schedstat")))
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
fn arp_table_stats(host_name: &str) -> BTreeMap<String, u64> {
    let text = ip(&["-n", host_name, "-s", "ntable", "show", "name", "arp_cache"]);
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

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf with a constant name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

// ---------------------------------------------------------------------------------------------
// The run

fn run(config: &Config, lab: &mut Lab) {
    let total = Instant::now();
    let host_name = lab.name("h");
    lab.add_namespaces(std::slice::from_ref(&host_name));
    ip_batch(
        &["-n", &host_name],
        &format!(
            "link set lo up\nlink add {BRIDGE} type bridge\naddr add {BRIDGE_ADDRESS} dev \
             {BRIDGE}\nlink set {BRIDGE} up\n"
        ),
    );
    let host_path = PathBuf::from(format!("/run/netns/{host_name}"));
    let host_ns = File::open(&host_path).expect("open host namespace");

    let tmpfs_base = if fs_type(Path::new("/run")) == "tmpfs" { "/run" } else { "/dev/shm" };
    let run_dir = lab.dir(Path::new(tmpfs_base), "dhcp");
    let state = run_dir.join("state");
    fs::DirBuilder::new().mode(0o700).create(&state).expect("create the state directory");
    let script = run_dir.join("udhcpc.sh");
    fs::write(&script, UDHCPC_SCRIPT).expect("write the udhcpc script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod the script");

    println!();
    println!(
        "lanyard DHCP benchmark ({} mode), kernel {}, {} CPUs",
        if config.bench_mode { "bench" } else { "smoke" },
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("CLI: {}", config.cli.display());
    println!(
        "world: host netns {host_name}: {BRIDGE} {BRIDGE_ADDRESS}, dnsmasq --no-ping pool {}-{} \
         ({NETMASK}), lease {LEASE} (T1 {} s), lease-max {LEASE_MAX}; state {} ({})",
        POOL.0,
        POOL.1,
        T1.as_secs(),
        state.display(),
        fs_type(&state)
    );

    let dnsmasq = start_dnsmasq(lab, &host_ns, &run_dir, "1");
    let daemon = start_daemon(lab, config, &host_ns, &state);
    let idle = memory(daemon);
    println!("daemon: pid {daemon}, started by hand in {host_name}; idle: {idle}");
    println!();

    part_attach(config, lab, &host_name, &host_ns, &run_dir, &state, &script, daemon);
    lab.stop(dnsmasq.pid, Duration::from_secs(2));
    let reference = (config.udhcpc > 0).then(|| {
        println!();
        part_udhcpc_memory(config, lab, &host_name, &host_ns, &run_dir, &script)
    });
    println!();
    part_many(config, lab, &host_name, &host_path, &host_ns, &run_dir, &state, daemon, reference);
    println!();
    println!("total bench time {:.1} s", total.elapsed().as_secs_f64());
}

/// 1. Attach until the guest has its lease: the CLI against bare udhcpc, with the capture.
#[allow(clippy::too_many_arguments)]
fn part_attach(
    config: &Config,
    lab: &mut Lab,
    host_name: &str,
    host_ns: &File,
    run_dir: &Path,
    state: &Path,
    script: &Path,
    daemon: u32,
) {
    let guest = lab.name("g");
    let reference = lab.name("r");
    lab.add_namespaces(&[guest.clone(), reference.clone()]);
    ip(&["-n", &guest, "link", "set", "lo", "up"]);
    // The reference guest's veth, plugged by hand, forwarding before the first timed run.
    ip_batch(
        &["-n", host_name],
        &format!(
            "link add lyref master {BRIDGE} up type veth peer name {GUEST_IFNAME} netns \
             {reference} address {REF_MAC}\n"
        ),
    );
    ip_batch(&["-n", &reference], &format!("link set lo up\nlink set {GUEST_IFNAME} up\n"));
    let forwarding =
        wait_until(Duration::from_secs(5), || port_state(host_name, "lyref") == "forwarding");
    assert!(forwarding, "the reference port never forwards: {}", port_state(host_name, "lyref"));
    let reference_ns = File::open(format!("/run/netns/{reference}")).expect("open reference ns");
    let (tcpdump, pcap) = start_capture(lab, host_ns, run_dir);

    let token = format!("netns:{guest}");
    let lanyard = |args: &[&str]| {
        let mut cmd = Command::new(&config.cli);
        cmd.args(args)
            .env("LANYARD_STATE_DIR", state)
            .env("LANYARD_HOST_ID", HOST_ID)
            .env_remove("DOCKER_HOST");
        enter_netns(&mut cmd, host_ns);
        timed(cmd)
    };
    let attach = || lanyard(&["attach", BRIDGE, &token, "dhcp"]);
    let detach = || lanyard(&["detach", &token]);
    let udhcpc = || {
        let mut cmd = Command::new("busybox");
        cmd.args(["udhcpc", "-i", GUEST_IFNAME, "-q", "-n", "-f", "-s"]).arg(script);
        enter_netns(&mut cmd, &reference_ns);
        timed(cmd)
    };

    // Warm-up (untimed): learn the guest's MAC and check the lease is really configured.
    attach();
    let link = ip(&["-n", &guest, "-j", "-4", "addr", "show", "dev", GUEST_IFNAME]);
    let link: serde_json::Value = serde_json::from_str(&link).expect("parse ip -j");
    let mac = ip(&["-n", &guest, "-j", "link", "show", "dev", GUEST_IFNAME]);
    let mac: serde_json::Value = serde_json::from_str(&mac).expect("parse ip -j");
    let guest_mac = mac[0]["address"].as_str().unwrap_or_default().to_string();
    let guest_addr = link[0]["addr_info"][0]["local"].as_str().unwrap_or("none").to_string();
    let guest_prefix = link[0]["addr_info"][0]["prefixlen"].as_u64().unwrap_or(0);
    let guest_default = default_route(&guest);
    detach();
    udhcpc();
    let ref_addr = ip(&["-n", &reference, "-4", "-o", "addr", "show", "dev", GUEST_IFNAME]);
    let ref_addr = ref_addr.split_whitespace().nth(3).unwrap_or("none").to_string();
    // The two ways are compared only if they reach the same end state: an address from the
    // server with the same prefix, and the server's router as the default route.
    let ref_prefix = ref_addr.split('/').nth(1).and_then(|p| p.parse::<u64>().ok());
    assert!(
        guest_addr != "none" && ref_prefix == Some(guest_prefix),
        "lanyard configured {guest_addr}/{guest_prefix}, udhcpc {ref_addr}: not the same end state"
    );
    assert!(
        guest_default.is_some() && guest_default == default_route(&reference),
        "default routes differ: lanyard {guest_default:?}, udhcpc {:?}",
        default_route(&reference)
    );
    println!(
        "1. attach until the guest has its lease: {} rounds, daemon already running, interleaved",
        config.rounds
    );
    println!(
        "   guest {guest} ({GUEST_IFNAME} {guest_mac}) got {guest_addr}/{guest_prefix}; reference \
         {reference} ({REF_MAC}, veth plugged by hand) got {ref_addr}"
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
    // stop it. Rounds whose exchange never shows are counted as unmatched below.
    let guest_mac = parse_mac(&guest_mac);
    let last = (attaches.last().copied(), references.last().copied());
    wait_until(Duration::from_secs(2), || {
        let wire = read_capture(&pcap);
        last.0.is_none_or(|span| exchange_in(&wire, guest_mac, span).is_some())
            && last.1.is_none_or(|span| exchange_in(&wire, parse_mac(REF_MAC), span).is_some())
    });
    lab.stop(tcpdump, Duration::from_secs(2));
    let wire = read_capture(&pcap);
    let lanyard_x: Vec<Exchange> =
        attaches.iter().filter_map(|s| exchange_in(&wire, guest_mac, *s)).collect();
    let reference_x: Vec<Exchange> =
        references.iter().filter_map(|s| exchange_in(&wire, parse_mac(REF_MAC), *s)).collect();

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
    drop(reference_ns); // an open namespace handle keeps the namespace and its veth alive
    lab.remove_namespaces(&[guest, reference]);
    wait_no_ports(host_name);
}

/// Namespaces go away asynchronously, and their veths with them: wait (bounded) until the
/// bridge has no ports left, so the next part has all of the 1023 a bridge takes.
fn wait_no_ports(host_name: &str) {
    let empty = wait_until(Duration::from_secs(30), || {
        ip(&["-n", host_name, "-o", "link", "show", "master", BRIDGE]).trim().is_empty()
    });
    assert!(empty, "{BRIDGE} ports did not go away within 30 s");
}

/// Reference for memory: `n` busybox udhcpc processes each holding a lease; (n, total PSS kB).
fn part_udhcpc_memory(
    config: &Config,
    lab: &mut Lab,
    host_name: &str,
    host_ns: &File,
    run_dir: &Path,
    script: &Path,
) -> (usize, u64) {
    let n = config.udhcpc;
    let dnsmasq = start_dnsmasq(lab, host_ns, run_dir, "u");
    let names: Vec<String> = (0..n).map(|i| lab.name(&format!("u{i}"))).collect();
    lab.add_namespaces(&names);
    let mac = |i: usize| format!("02:00:c6:12:{:02x}:{:02x}", 0xfe - i / 256, i % 256);
    let host_lines: String = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "link add lyu{i} master {BRIDGE} up type veth peer name {GUEST_IFNAME} netns \
                 {name} address {}\n",
                mac(i)
            )
        })
        .collect();
    ip_batch(&["-n", host_name], &host_lines);
    for name in &names {
        ip(&["-n", name, "link", "set", GUEST_IFNAME, "up"]);
    }
    wait_until(Duration::from_secs(5), || {
        (0..n).all(|i| port_state(host_name, &format!("lyu{i}")) == "forwarding")
    });
    let mut pids = Vec::new();
    for name in &names {
        let ns = File::open(format!("/run/netns/{name}")).expect("open udhcpc guest");
        let mut cmd = Command::new("busybox");
        // Foreground, keeping the lease (renewing), releasing it on exit (-R, on SIGTERM).
        cmd.args(["udhcpc", "-i", GUEST_IFNAME, "-f", "-R", "-s"])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        enter_netns(&mut cmd, &ns);
        let child = cmd.spawn().expect("start udhcpc");
        pids.push(lab.adopt("udhcpc", child));
    }
    let macs: BTreeSet<String> = (0..n).map(mac).collect();
    let bound = wait_until(Duration::from_secs(20), || {
        dnsmasq.leases().iter().filter(|(m, _)| macs.contains(m)).count() == n
    });
    let leased = dnsmasq.leases().iter().filter(|(m, _)| macs.contains(m)).count();
    // Their scripts may still be running `ip`: measure once none of them has a child left.
    let settled = wait_until(Duration::from_secs(5), || pids.iter().all(|&pid| !has_children(pid)));
    assert!(settled, "memory reference: udhcpc scripts still running after 5 s");
    let pss: u64 = pids.iter().map(|&pid| memory(pid).pss_kb).sum();
    let rss: u64 = pids.iter().map(|&pid| memory(pid).rss_kb).sum();
    println!(
        "memory reference: {n} busybox udhcpc processes (-f -R, own script), {leased} of {n} bound{}: \
         PSS total {} ({:.0} kB each), RSS total {}",
        if bound { "" } else { " (NOT all bound within 20 s)" },
        mb(pss),
        pss as f64 / n as f64,
        mb(rss)
    );
    for pid in pids {
        lab.stop(pid, Duration::from_secs(2));
    }
    lab.stop(dnsmasq.pid, Duration::from_secs(2));
    lab.remove_namespaces(&names);
    // The reference's memory is compared with the daemon's per lease: only when every udhcpc
    // holds one, as every lease of the daemon does.
    assert!(bound, "memory reference: only {leased} of {n} udhcpc processes bound within 20 s");
    wait_no_ports(host_name);
    (n, pss)
}

/// 2. Many leases held by one daemon: bring-up time, RSS, CPU over a window with renewals.
#[allow(clippy::too_many_arguments)]
fn part_many(
    config: &Config,
    lab: &mut Lab,
    host_name: &str,
    host_path: &Path,
    host_ns: &File,
    run_dir: &Path,
    state: &Path,
    daemon: u32,
    reference: Option<(usize, u64)>,
) {
    let n = config.guests;
    let dnsmasq = start_dnsmasq(lab, host_ns, run_dir, "2");
    let names: Vec<String> = (0..n).map(|i| lab.name(&format!("d{i}"))).collect();
    let created = Instant::now();
    lab.add_namespaces(&names);
    let created = created.elapsed();
    println!(
        "2. {n} leases held by one daemon (guests attached with the library + the daemon's \
         Acquire, as the CLI does; {n} namespaces made beforehand in {:.1} s, untimed)",
        created.as_secs_f64()
    );
    let before = memory(daemon);
    let ping_idle = cpu_per_ping(daemon, state, PINGS);
    let arp_before = arp_table_stats(host_name);
    let host = Host::new(Netns::open(host_path).expect("open H"), state, HOST_ID)
        .expect("open the state directory");
    let mut each = Vec::with_capacity(n);
    let start = Instant::now();
    for name in &names {
        let t0 = Instant::now();
        let mut request = AttachRequest::new(BRIDGE, GuestSpec::Netns(name.clone()));
        request.dhcp = Some(DhcpSettings::default());
        request.dhcp_wait = DhcpWait { timeout: ACQUIRE_TIMEOUT, wait: true };
        let attached = lanyard::attach(&host, &request)
            .unwrap_or_else(|e| panic!("lanyard::attach {name}: {e}"));
        let lease = attached.lease.unwrap_or_default();
        assert!(lease["Address"].is_string(), "{name}: no address in {lease}");
        each.push(t0.elapsed());
    }
    let bring_up = start.elapsed();
    let k = each.len().min(10);
    let ends =
        |v: &[Duration]| format!("{} -> {}", ms(median(&v[..k])), ms(median(&v[v.len() - k..])));
    println!(
        "   bring-up: {n} leases in {:.2} s, {} ms/guest (median of the first {k} -> last {k} \
         guests, library attach until BOUND: {} ms)",
        bring_up.as_secs_f64(),
        ms(bring_up / n.max(1) as u32),
        ends(&each),
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
            .map(|(mac, ip)| {
                format!("neigh replace {ip} lladdr {mac} dev {BRIDGE} nud permanent\n")
            })
            .collect();
        ip_batch(&["-n", host_name], &lines);
        let bridge = ip(&["-n", host_name, "-j", "link", "show", "dev", BRIDGE]);
        let bridge: serde_json::Value = serde_json::from_str(&bridge).expect("parse ip -j");
        let bridge_mac = bridge[0]["address"].as_str().unwrap_or_default().to_string();
        let server = BRIDGE_ADDRESS.split('/').next().unwrap_or_default();
        for name in &names {
            ip(&[
                "-n",
                name,
                "neigh",
                "replace",
                server,
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
    let ports = ip(&["-n", host_name, "-o", "link", "show", "master", BRIDGE]).lines().count();
    let with = memory(daemon);
    let ticks = clock_ticks_per_second();
    let switches = |pid: u32| {
        let status = format!("/proc/{pid}/status");
        proc_field(&status, "voluntary_ctxt_switches").unwrap_or(0)
            + proc_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0)
    };

    // The window: CPU (utime + stime, threads included) and renewals seen by the server.
    let log_from = dnsmasq.log_len();
    let arp_window = arp_table_stats(host_name);
    let cpu_before = cpu_ticks(daemon).expect("daemon's /proc stat");
    let udp_before = udp_errors(host_ns);
    let switches_before = switches(daemon);
    let window_start = Instant::now();
    std::thread::sleep(config.window);
    let cpu_after = cpu_ticks(daemon).expect("daemon's /proc stat");
    let window = window_start.elapsed();
    let switches_after = switches(daemon);
    let (acks, renewed) = dnsmasq.acks_since(log_from);
    let after = memory(daemon);
    let arp_after = arp_table_stats(host_name);
    let ping_full = cpu_per_ping(daemon, state, PINGS);

    let leases = control::try_request(state, &Request::Leases, Duration::from_secs(10))
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
        format!("   daemon (pid {daemon})"),
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
    println!(
        "   {:<55} {:>12} {:>14}  < {} {}",
        format!("RSS holding {n} leases"),
        mb(with.rss_kb),
        per_lease(with.rss_kb, before.rss_kb),
        mb(TARGET_RSS_KB),
        verdict(with.rss_kb < TARGET_RSS_KB)
    );
    println!(
        "   {:<55} {:>12} {:>14}  < {} {}",
        "RSS after the window (renewals done)",
        mb(after.rss_kb),
        per_lease(after.rss_kb, before.rss_kb),
        mb(TARGET_RSS_KB),
        verdict(after.rss_kb < TARGET_RSS_KB)
    );
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
    let udp_after = udp_errors(host_ns);
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
        let log = read_lossy(&dnsmasq.log);
        let window_log = log.get(log_from..).unwrap_or("");
        for (mac, ip) in
            dnsmasq.leases().iter().filter(|(mac, _)| !renewed.contains(&mac.to_lowercase()))
        {
            println!("   not renewed: {mac} {ip}; dnsmasq in the window:");
            for line in window_log.lines().filter(|l| {
                l.to_lowercase().contains(&mac.to_lowercase()) || l.contains(&format!(" {ip} "))
            }) {
                println!("     {line}");
            }
        }
        let daemon_log = read_lossy(&state.join(control::LOG_NAME));
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
    kill_by_cmdline(&state.to_string_lossy(), Duration::from_secs(5));
    lab.stop(daemon, Duration::from_secs(2));
    lab.remove_namespaces(&names);
    lab.stop(dnsmasq.pid, Duration::from_secs(2));
    println!("   teardown (untimed): {:.1} s", teardown.elapsed().as_secs_f64());
}

/// (InErrors, RcvbufErrors) of UDP in namespace `ns`, from /proc/net/snmp read inside it.
fn udp_errors(ns: &File) -> (u64, u64) {
    let mut cmd = Command::new("cat");
    cmd.arg("/proc/net/snmp").stdin(Stdio::null());
    enter_netns(&mut cmd, ns);
    let text =
        cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
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
