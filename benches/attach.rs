//! Speed benchmark of a static attach and its detach, three ways that reach the same end state:
//! the release `lanyard` binary, the in-process library, and the fastest scripted reference
//! (`ip -batch`). Plus 200 sequential attaches into 200 namespaces, 1000 sequential library
//! attaches to see whether an attach slows as attachments grow, and a Docker container row
//! when `LANYARD_BENCH_DOCKER_HOST=unix:///path/to/docker.sock` names a daemon.
//!
//! Run as root: `cargo bench --bench attach`. `LANYARD_BENCH_ROUNDS` (default 50) sets the
//! attach/detach rounds per way, `LANYARD_BENCH_BATCH` (default 200) the sequential-attach
//! count, `LANYARD_BENCH_SCALE` (default 1000) the growth pass's attachments,
//! `LANYARD_BENCH_DOCKER_IMAGE` (default lanyard-test/busybox:latest) the container
//! image. Without cargo bench's `--bench` argument (as under `cargo test --all-targets`) it makes
//! a short smoke pass instead.
//!
//! The world: a "host" namespace H with bridge br0 (198.18.0.1/24) and a guest namespace G,
//! both fresh (`lybench-<pid>-*`). Nothing here touches the root network namespace; the CLI and
//! the `ip` reference run inside H (setns before exec), as lanyard treats the namespace it runs
//! in as the host. Everything made is removed by `Drop` guards, even on panic; leftovers of a
//! killed run (dead pid) are swept at start.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lanyard::docker::DockerHost;
use lanyard::guest::GuestSpec;
use lanyard::netlink::Netlink;
use lanyard::netns::Netns;
use lanyard::{naming, spec, AttachRequest, Host};

const PREFIX: &str = "lybench-";
const HOST_ID: &str = "bench";
const BRIDGE: &str = "br0";
const BRIDGE_ADDRESS: &str = "198.18.0.1/24";
const GATEWAY: &str = "198.18.0.1";
const GUEST_ADDRESS: &str = "198.18.0.50/24";
const GUEST_IFNAME: &str = "eth1";
const MTU: u32 = 1500;
const DEFAULT_IMAGE: &str = "lanyard-test/busybox:latest";
const DOCKER_API: &str = "/v1.41";

// Targets (printed, not asserted).
const TARGET_CLI_NETNS: Duration = Duration::from_millis(5);
const TARGET_CLI_CONTAINER: Duration = Duration::from_millis(8);
const TARGET_LIBRARY: Duration = Duration::from_millis(2);
const TARGET_BATCH_200: Duration = Duration::from_millis(1500);
/// The growth pass: the median of the last 10 attaches over the median of the first 10.
const TARGET_GROWTH_RATIO: f64 = 1.5;
/// A Linux bridge takes at most 1023 ports; the growth pass spreads its guests over bridges of
/// this many.
const PORTS_PER_BRIDGE: usize = 250;

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("attach bench: needs root (network namespaces, veths); skipped");
        if bench_mode {
            std::process::exit(1);
        }
        return;
    }
    let config = Config::from_env(bench_mode);
    // Orphaned `lanyard announce-helper` processes (the CLI spawns them detached) are reparented
    // to us, so we can wait for them before tearing the world down.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    sweep_leftovers(config.docker.as_ref());
    let mut lab = Lab::new();
    run(&config, &mut lab);
}

struct Config {
    bench_mode: bool,
    rounds: usize,
    batch: usize,
    scale: usize,
    docker: Option<DockerConfig>,
    cli: PathBuf,
}

struct DockerConfig {
    url: String,
    socket: PathBuf,
    image: String,
}

impl Config {
    fn from_env(bench_mode: bool) -> Config {
        let number = |name: &str, default: usize| -> usize {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
                Err(_) => default,
            }
        };
        let (rounds, batch, scale) = if bench_mode { (50, 200, 1000) } else { (3, 5, 20) };
        let docker =
            std::env::var("LANYARD_BENCH_DOCKER_HOST").ok().filter(|v| !v.is_empty()).map(|url| {
                let socket = url.strip_prefix("unix://").unwrap_or_else(|| {
                    panic!("LANYARD_BENCH_DOCKER_HOST={url:?}: only unix:// sockets")
                });
                DockerConfig {
                    socket: PathBuf::from(socket),
                    url: url.clone(),
                    image: std::env::var("LANYARD_BENCH_DOCKER_IMAGE")
                        .unwrap_or_else(|_| DEFAULT_IMAGE.to_string()),
                }
            });
        Config {
            bench_mode,
            rounds: number("LANYARD_BENCH_ROUNDS", rounds).max(1),
            batch: number("LANYARD_BENCH_BATCH", batch),
            scale: number("LANYARD_BENCH_SCALE", scale),
            docker,
            cli: PathBuf::from(env!("CARGO_BIN_EXE_lanyard")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The world and its teardown

/// Owns every namespace, directory and container this run makes; `Drop` removes them all.
struct Lab {
    pid: u32,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
    containers: Vec<(PathBuf, String)>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            pid: std::process::id(),
            namespaces: Vec::new(),
            dirs: Vec::new(),
            containers: Vec::new(),
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
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        self.dirs.push(dir.clone());
        dir
    }

    fn remove_dir(&mut self, dir: &Path) {
        let _ = fs::remove_dir_all(dir);
        self.dirs.retain(|d| d != dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Nothing here may panic: this also runs while unwinding.
        reap_orphans(Duration::from_secs(5));
        for (socket, name) in self.containers.drain(..) {
            let _ =
                docker_request(&socket, "DELETE", &format!("/containers/{name}?force=true"), None);
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

/// The pid in `lybench-<pid>-...`, if the name is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove namespaces, directories and containers left by runs whose process is gone.
fn sweep_leftovers(docker: Option<&DockerConfig>) {
    let dead = |name: &str| owner_pid(name).is_some_and(|pid| !pid_alive(pid));
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
        eprintln!("attach bench: sweeping leftover namespaces:\n{lines}");
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
    if let Some(docker) = docker {
        let Ok((200, body)) = docker_request(&docker.socket, "GET", "/containers/json?all=1", None)
        else {
            return;
        };
        let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        for container in list.as_array().into_iter().flatten() {
            for name in container["Names"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or("").trim_start_matches('/');
                if dead(name) {
                    let path = format!("/containers/{name}?force=true");
                    let _ = docker_request(&docker.socket, "DELETE", &path, None);
                }
            }
        }
    }
}

/// Wait (bounded) for orphaned helpers that were reparented to this process.
fn reap_orphans(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child; no std::process::Child is outstanding when this runs.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        if pid < 0 || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Make `cmd` enter the network namespace `netns` between fork and exec.
fn enter_netns(cmd: &mut Command, netns: &File) {
    let fd = netns.as_raw_fd();
    // SAFETY: setns and errno reads are async-signal-safe and the closure allocates nothing; the
    // descriptor is borrowed from a File the caller keeps open until the child has been spawned.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
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

/// A timed process: spawn to exit, wall clock. Panics if it fails.
fn timed(mut cmd: Command, input: Option<&str>) -> Duration {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes()).expect("feed ip -batch");
    }
    let out = child.wait_with_output().expect("wait for child");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    elapsed
}

fn fs_type(path: &Path) -> &'static str {
    match nix::sys::statfs::statfs(path).map(|s| s.filesystem_type()) {
        Ok(t) if t == nix::sys::statfs::TMPFS_MAGIC => "tmpfs",
        Ok(t) if t == nix::sys::statfs::EXT4_SUPER_MAGIC => "ext4",
        Ok(t) if t == nix::sys::statfs::XFS_SUPER_MAGIC => "xfs",
        Ok(t) if t == nix::sys::statfs::BTRFS_SUPER_MAGIC => "btrfs",
        Ok(t) if t == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC => "overlay",
        Ok(_) => "other fs",
        Err(_) => "unknown fs",
    }
}

// ---------------------------------------------------------------------------------------------
// The three ways

/// What lanyard derives for a guest, so the `ip` reference builds exactly the same link.
struct Derived {
    host_ifname: String,
    host_mac: String,
    guest_mac: String,
}

fn derived(guest_identity: &str) -> Derived {
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let mut host_mac =
        naming::stable_mac(HOST_ID, &format!("host-end:{guest_identity}"), GUEST_IFNAME, 0).0;
    host_mac[0] = 0xfe;
    Derived {
        host_ifname: naming::host_ifname(HOST_ID, guest_identity, GUEST_IFNAME, 0),
        host_mac: mac(host_mac),
        guest_mac: mac(naming::stable_mac(HOST_ID, guest_identity, GUEST_IFNAME, 0).0),
    }
}

/// The scripted reference: one `ip -batch` in the host namespace creates the veth with its peer
/// born in G, one `ip -n G -batch` configures the guest end; detach is one `ip link del`.
struct IpReference<'a> {
    host_ns: &'a File,
    host_name: &'a str,
    /// Spell the host side `ip -n H` instead of running ip inside H.
    dash_n: bool,
    guest: String,
    derived: Derived,
}

impl IpReference<'_> {
    fn host_cmd(&self) -> Command {
        let mut cmd = Command::new("ip");
        if self.dash_n {
            cmd.args(["-n", self.host_name]);
        } else {
            enter_netns(&mut cmd, self.host_ns);
        }
        cmd
    }

    fn attach(&self) -> Duration {
        let d = &self.derived;
        let host_lines = format!(
            "link add {} address {} mtu {MTU} master {BRIDGE} up type veth peer name \
             {GUEST_IFNAME} netns {} address {} mtu {MTU}\n",
            d.host_ifname, d.host_mac, self.guest, d.guest_mac
        );
        let guest_lines = format!(
            "link set {GUEST_IFNAME} up\naddr add {GUEST_ADDRESS} dev {GUEST_IFNAME}\n\
             route replace default via {GATEWAY} dev {GUEST_IFNAME} proto static\n"
        );
        let mut host = self.host_cmd();
        host.args(["-batch", "-"]);
        let mut guest = Command::new("ip");
        guest.args(["-n", &self.guest, "-batch", "-"]);
        timed(host, Some(&host_lines)) + timed(guest, Some(&guest_lines))
    }

    fn detach(&self) -> Duration {
        let mut cmd = self.host_cmd();
        cmd.args(["link", "del", &self.derived.host_ifname]);
        timed(cmd, None)
    }
}

/// The release binary, run inside H.
struct Cli<'a> {
    exe: &'a Path,
    host_ns: &'a File,
    state: &'a Path,
    docker_url: Option<&'a str>,
}

impl<'a> Cli<'a> {
    fn new(exe: &'a Path, host_ns: &'a File, state: &'a Path) -> Cli<'a> {
        Cli { exe, host_ns, state, docker_url: None }
    }

    fn run(&self, args: &[&str]) -> Duration {
        let mut cmd = Command::new(self.exe);
        cmd.args(args)
            .env("LANYARD_STATE_DIR", self.state)
            .env("LANYARD_HOST_ID", HOST_ID)
            .env_remove("DOCKER_HOST");
        if let Some(url) = self.docker_url {
            cmd.env("DOCKER_HOST", url);
        }
        enter_netns(&mut cmd, self.host_ns);
        timed(cmd, None)
    }

    fn attach(&self, guest: &str, address: &str) -> Duration {
        self.run(&["attach", BRIDGE, guest, &format!("{address}@{GATEWAY}")])
    }

    fn detach(&self, guest: &str) -> Duration {
        self.run(&["detach", guest])
    }
}

fn request(guest: GuestSpec, address: &str) -> AttachRequest {
    let mut request = AttachRequest::new(BRIDGE, guest);
    request.addresses =
        spec::parse_addresses(&[format!("{address}@{GATEWAY}")]).expect("parse address");
    request
}

fn lib_attach(host: &Host, request: &AttachRequest) -> Duration {
    let start = Instant::now();
    let attached = lanyard::attach(host, request);
    let elapsed = start.elapsed();
    if let Err(e) = attached {
        panic!("lanyard::attach: {e}");
    }
    elapsed
}

fn lib_detach(host: &Host, token: &str) -> Duration {
    let start = Instant::now();
    let done = lanyard::detach(host, token, None);
    let elapsed = start.elapsed();
    match done {
        Ok(done) => {
            assert!(!done.interfaces.is_empty(), "lanyard::detach {token}: nothing detached")
        }
        Err(e) => panic!("lanyard::detach {token}: {e}"),
    }
    elapsed
}

fn library_host(host_path: &Path, state: &Path) -> Host {
    let netns = Netns::open(host_path).expect("open host namespace");
    Host::new(netns, state, HOST_ID).expect("open state directory")
}

// ---------------------------------------------------------------------------------------------
// Measurement and the table

struct Row {
    label: String,
    attach: Vec<Duration>,
    detach: Vec<Duration>,
    target: Option<Duration>,
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// One way of doing the attach and the detach, each call timed by the closure itself.
struct Way<'a> {
    label: String,
    target: Option<Duration>,
    attach: Box<dyn FnMut() -> Duration + 'a>,
    detach: Box<dyn FnMut() -> Duration + 'a>,
}

impl<'a> Way<'a> {
    fn new(
        label: impl Into<String>,
        target: Option<Duration>,
        attach: impl FnMut() -> Duration + 'a,
        detach: impl FnMut() -> Duration + 'a,
    ) -> Way<'a> {
        Way { label: label.into(), target, attach: Box::new(attach), detach: Box::new(detach) }
    }
}

/// One untimed warm-up round per way, then `rounds` rounds in which every way attaches and
/// detaches once. Interleaving (with a rotating start) spreads the noise of a shared machine
/// over all ways instead of letting one burst land on one way's block.
fn measure_interleaved(mut ways: Vec<Way>, rounds: usize) -> Vec<Row> {
    for way in &mut ways {
        (way.attach)();
        (way.detach)();
    }
    let mut rows: Vec<Row> = ways
        .iter()
        .map(|way| Row {
            label: way.label.clone(),
            attach: Vec::with_capacity(rounds),
            detach: Vec::with_capacity(rounds),
            target: way.target,
        })
        .collect();
    for round in 0..rounds {
        for k in 0..ways.len() {
            let i = (round + k) % ways.len();
            rows[i].attach.push((ways[i].attach)());
            rows[i].detach.push((ways[i].detach)());
        }
    }
    rows
}

fn print_table(rows: &[Row], reference: &Row) {
    let ref_attach = median(&reference.attach);
    let ref_detach = median(&reference.detach);
    println!(
        "{:<54} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}  targets (attach median; detach <= REF)",
        "way (times in ms)", "att med", "att p90", "det med", "det p90", "att/REF", "det/REF",
    );
    println!("{}", "-".repeat(154));
    for row in rows {
        let (a, d) = (median(&row.attach), median(&row.detach));
        let mut targets = Vec::new();
        if let Some(target) = row.target {
            let verdict = if a < target { "met" } else { "MISSED" };
            targets.push(format!("< {} ms {verdict}", target.as_millis()));
        }
        if !std::ptr::eq(row, reference) {
            targets.push(if d <= ref_detach {
                "detach met".to_string()
            } else {
                format!("detach MISSED (+{} ms)", ms(d - ref_detach))
            });
        }
        println!(
            "{:<54} {:>8} {:>8} {:>8} {:>8} {:>8.2}x {:>8.2}x  {}",
            row.label,
            ms(a),
            ms(percentile(&row.attach, 0.9)),
            ms(d),
            ms(percentile(&row.detach, 0.9)),
            a.as_secs_f64() / ref_attach.as_secs_f64(),
            d.as_secs_f64() / ref_detach.as_secs_f64(),
            targets.join("; ")
        );
    }
}

/// The end state of an attachment, as `ip -j` shows it, without ifindexes: compared across ways.
fn end_state(host: &str, guest: &str, host_ifname: &str) -> String {
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&ip(args)).expect("parse ip -j output")
    };
    // Strings without their JSON quotes, absent fields as "-".
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let link = |v: &serde_json::Value| {
        let v = &v[0];
        let up = v["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"));
        format!(
            "{} {} mtu {} master {} up {up}",
            text(&v["ifname"]),
            text(&v["address"]),
            text(&v["mtu"]),
            text(&v["master"])
        )
    };
    let host_end = json(&["-n", host, "-j", "link", "show", "dev", host_ifname]);
    let guest_end = json(&["-n", guest, "-j", "link", "show", "dev", GUEST_IFNAME]);
    let addrs = json(&["-n", guest, "-j", "-4", "addr", "show", "dev", GUEST_IFNAME]);
    let routes = json(&["-n", guest, "-j", "-4", "route", "show", "table", "main"]);
    let addrs: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}/{}", text(&a["local"]), text(&a["prefixlen"])))
        .collect();
    let routes: Vec<String> = routes
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} via {} dev {} proto {}",
                text(&r["dst"]),
                text(&r["gateway"]),
                text(&r["dev"]),
                text(&r["protocol"])
            )
        })
        .collect();
    format!(
        "host end: {}\nguest end: {}\naddresses: {}\nroutes: {}",
        link(&host_end),
        link(&guest_end),
        addrs.join(", "),
        routes.join("; ")
    )
}

// ---------------------------------------------------------------------------------------------
// The run

fn run(config: &Config, lab: &mut Lab) {
    let total = Instant::now();
    let host_name = lab.name("h");
    let guest_name = lab.name("g");
    lab.add_namespaces(&[host_name.clone(), guest_name.clone()]);
    for args in [
        vec!["-n", &host_name, "link", "set", "lo", "up"],
        vec!["-n", &host_name, "link", "add", BRIDGE, "type", "bridge"],
        vec!["-n", &host_name, "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE],
        vec!["-n", &host_name, "link", "set", BRIDGE, "up"],
        vec!["-n", &guest_name, "link", "set", "lo", "up"],
    ] {
        ip(&args);
    }
    let host_path = PathBuf::from(format!("/run/netns/{host_name}"));
    let host_ns = File::open(&host_path).expect("open host namespace");

    // State directories: tmpfs (/run if it is tmpfs here, else /dev/shm) and disk (/var/tmp).
    let tmpfs_base = if fs_type(Path::new("/run")) == "tmpfs" { "/run" } else { "/dev/shm" };
    let state_tmpfs = lab.dir(Path::new(tmpfs_base), "state");
    let state_disk = lab.dir(Path::new("/var/tmp"), "state");
    let tmpfs_label = format!("{tmpfs_base}, {}", fs_type(&state_tmpfs));
    let disk_label = format!("/var/tmp, {}", fs_type(&state_disk));

    println!();
    println!(
        "lanyard attach/detach benchmark ({} mode): {} rounds per way, kernel {}, {} CPUs",
        if config.bench_mode { "bench" } else { "smoke" },
        config.rounds,
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("CLI: {}", config.cli.display());
    println!("world: host netns {host_name} ({BRIDGE} {BRIDGE_ADDRESS}), guest netns {guest_name}");
    println!(
        "attach: veth, host end on {BRIDGE}, guest {GUEST_IFNAME} mtu {MTU}, \
         {GUEST_ADDRESS}, default via {GATEWAY}; detach: delete the veth"
    );
    if tmpfs_base != "/run" {
        println!(
            "note: /run is not tmpfs on this machine ({}); tmpfs state dir is under /dev/shm",
            fs_type(Path::new("/run"))
        );
    }

    let guest_token = format!("netns:{guest_name}");
    let cli = |state| Cli::new(&config.cli, &host_ns, state);
    let reference = |dash_n: bool| IpReference {
        host_ns: &host_ns,
        host_name: &host_name,
        dash_n,
        guest: guest_name.clone(),
        derived: derived(&guest_token),
    };

    // Same end state, checked once before timing.
    let mut states = Vec::new();
    {
        let r = reference(false);
        r.attach();
        states.push(("ip -batch", end_state(&host_name, &guest_name, &r.derived.host_ifname)));
        r.detach();
        let c = cli(state_tmpfs.as_path());
        c.attach(&guest_token, GUEST_ADDRESS);
        states.push(("CLI", end_state(&host_name, &guest_name, &r.derived.host_ifname)));
        c.detach(&guest_token);
        let host = library_host(&host_path, &state_tmpfs);
        lib_attach(&host, &request(GuestSpec::Netns(guest_name.clone()), GUEST_ADDRESS));
        states.push(("library", end_state(&host_name, &guest_name, &r.derived.host_ifname)));
        lib_detach(&host, &guest_token);
        reap_orphans(Duration::from_secs(5));
    }
    if states.iter().all(|(_, s)| *s == states[0].1) {
        println!("end state: identical for all three ways:");
        for line in states[0].1.lines() {
            println!("  {line}");
        }
    } else {
        println!("WARNING: the ways reach different end states:");
        for (way, state) in &states {
            println!("  [{way}]\n    {}", state.replace('\n', "\n    "));
        }
    }
    println!();

    // Everything the ways borrow lives here, before the ways themselves.
    let ref_in_h = reference(false);
    let ref_dash_n = reference(true);
    let lib_host = library_host(&host_path, &state_tmpfs);
    let lib_request = request(GuestSpec::Netns(guest_name.clone()), GUEST_ADDRESS);
    let cli_tmpfs = cli(state_tmpfs.as_path());
    let cli_disk = cli(state_disk.as_path());
    let mut notes = Vec::new();
    let container = match &config.docker {
        None => {
            notes.push(
                "container rows skipped: set LANYARD_BENCH_DOCKER_HOST=unix:///path/docker.sock \
                 (image LANYARD_BENCH_DOCKER_IMAGE, default lanyard-test/busybox:latest)"
                    .to_string(),
            );
            None
        }
        Some(docker) => match start_container(lab, docker) {
            Err(why) => {
                notes.push(format!("container rows skipped: {why}"));
                None
            }
            Ok(name) => {
                let cli = Cli { docker_url: Some(&docker.url), ..cli(state_tmpfs.as_path()) };
                let host = library_host(&host_path, &state_tmpfs).with_docker(
                    DockerHost::parse(&docker.url).expect("parse LANYARD_BENCH_DOCKER_HOST"),
                );
                let req = request(GuestSpec::Bare(name.clone()), GUEST_ADDRESS);
                Some((name, cli, host, req))
            }
        },
    };

    let mut ways = vec![
        Way::new(
            "ip -batch (in H) + ip -n G -batch  [REF]",
            None,
            || ref_in_h.attach(),
            || ref_in_h.detach(),
        ),
        Way::new(
            "ip -n H -batch + ip -n G -batch",
            None,
            || ref_dash_n.attach(),
            || ref_dash_n.detach(),
        ),
        Way::new(
            format!("in-process library (state {tmpfs_label})"),
            Some(TARGET_LIBRARY),
            || lib_attach(&lib_host, &lib_request),
            || lib_detach(&lib_host, &guest_token),
        ),
        Way::new(
            format!("CLI (state {tmpfs_label})"),
            Some(TARGET_CLI_NETNS),
            || cli_tmpfs.attach(&guest_token, GUEST_ADDRESS),
            || cli_tmpfs.detach(&guest_token),
        ),
        Way::new(
            format!("CLI (state {disk_label})"),
            Some(TARGET_CLI_NETNS),
            || cli_disk.attach(&guest_token, GUEST_ADDRESS),
            || cli_disk.detach(&guest_token),
        ),
    ];
    if let Some((name, cli, host, req)) = &container {
        ways.push(Way::new(
            format!("CLI, container via Engine API (state {tmpfs_label})"),
            Some(TARGET_CLI_CONTAINER),
            || cli.attach(name, GUEST_ADDRESS),
            || cli.detach(name),
        ));
        ways.push(Way::new(
            format!("library, container via Engine API (state {tmpfs_label})"),
            None,
            || lib_attach(host, req),
            || lib_detach(host, name),
        ));
    }
    let rows = measure_interleaved(ways, config.rounds);
    reap_orphans(Duration::from_secs(5));

    print_table(&rows, &rows[0]);
    println!(
        "ratios are medians over the [REF] row; the CLI also spawns its detached announce helper \
         (ARP), the library and ip do not announce"
    );
    for note in &notes {
        println!("note: {note}");
    }

    if config.batch > 0 {
        println!();
        println!(
            "{n} sequential attaches into {n} distinct guest namespaces (created beforehand, \
             untimed; state {tmpfs_label}):",
            n = config.batch
        );
        batch_pass(config, lab, &host_path, &host_ns, tmpfs_base, true);
        batch_pass(config, lab, &host_path, &host_ns, tmpfs_base, false);
    }
    if config.scale > 0 {
        println!();
        println!(
            "{n} sequential in-process library attaches into {n} distinct guest namespaces over \
             {b} bridge(s) (a bridge takes at most 1023 ports; created beforehand, untimed; state \
             {tmpfs_label}):",
            n = config.scale,
            b = config.scale.div_ceil(PORTS_PER_BRIDGE)
        );
        growth_pass(config, lab, &host_path, tmpfs_base);
    }
    println!();
    println!("total bench time {:.1} s", total.elapsed().as_secs_f64());
}

/// Attach `config.batch` fresh namespaces one after the other; print the total.
fn batch_pass(
    config: &Config,
    lab: &mut Lab,
    host_path: &Path,
    host_ns: &File,
    tmpfs_base: &str,
    library: bool,
) {
    let tag = if library { "lib" } else { "cli" };
    let names: Vec<String> = (0..config.batch).map(|i| lab.name(&format!("{tag}{i}"))).collect();
    lab.add_namespaces(&names);
    let state = lab.dir(Path::new(tmpfs_base), &format!("state-{tag}"));
    let address = |i: usize| format!("198.18.{}.{}/16", 1 + i / 250, 1 + i % 250);
    let mut each = Vec::with_capacity(names.len());
    let mut diagnosis = None;
    let start = Instant::now();
    if library {
        let host = library_host(host_path, &state);
        for (i, name) in names.iter().enumerate() {
            each.push(lib_attach(&host, &request(GuestSpec::Netns(name.clone()), &address(i))));
        }
        diagnosis = Some(per_attach_reads(&host));
    } else {
        let c = Cli { exe: &config.cli, host_ns, state: &state, docker_url: None };
        for (i, name) in names.iter().enumerate() {
            each.push(c.attach(&format!("netns:{name}"), &address(i)));
        }
    }
    let total = start.elapsed();
    let k = each.len().min(10);
    let verdict = if total < TARGET_BATCH_200 { "met" } else { "MISSED" };
    let target = if config.batch == 200 {
        format!("target < {:.1} s {verdict}", TARGET_BATCH_200.as_secs_f64())
    } else {
        format!("(target < {:.1} s is for 200)", TARGET_BATCH_200.as_secs_f64())
    };
    println!(
        "  {:<20} total {:>7.3} s   {:.2} ms/attach   median first {k} {} ms, last {k} {} ms   {target}",
        if library { "in-process library" } else { "CLI" },
        total.as_secs_f64(),
        total.as_secs_f64() * 1e3 / each.len().max(1) as f64,
        ms(median(&each[..k])),
        ms(median(&each[each.len() - k..])),
    );
    if let Some(diagnosis) = diagnosis {
        println!("    {diagnosis}");
    }
    // Teardown (untimed): helpers first, then the namespaces (their veths go with them), then
    // wait until the bridge has no ports left so the next pass starts from the same bridge.
    reap_orphans(Duration::from_secs(10));
    lab.remove_namespaces(&names);
    lab.remove_dir(&state);
    let host_name = host_path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ip(&["-n", &host_name, "-o", "link", "show", "master", BRIDGE]).trim().is_empty() {
        assert!(Instant::now() < deadline, "bridge ports did not go away within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Attach `config.scale` guests one after the other through the library, round robin over
/// enough bridges; print how much slower the last 10 attaches are than the first 10.
fn growth_pass(config: &Config, lab: &mut Lab, host_path: &Path, tmpfs_base: &str) {
    let n = config.scale;
    let host_name = host_path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let bridges: Vec<String> =
        (0..n.div_ceil(PORTS_PER_BRIDGE)).map(|b| format!("brs{b}")).collect();
    let lines: String =
        bridges.iter().map(|b| format!("link add {b} type bridge\nlink set {b} up\n")).collect();
    let (ok, err) = ip_batch_quiet(&["-n", &host_name], &lines);
    assert!(ok, "create the growth pass's bridges: {err}");
    let names: Vec<String> = (0..n).map(|i| lab.name(&format!("grow{i}"))).collect();
    lab.add_namespaces(&names);
    disable_ipv6(std::iter::once(&host_name).chain(&names));
    let state = lab.dir(Path::new(tmpfs_base), "state-grow");
    let host = library_host(host_path, &state);
    let mut each = Vec::with_capacity(n);
    let start = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let mut request = request(
            GuestSpec::Netns(name.clone()),
            &format!("198.18.{}.{}/16", 1 + i / 250, 1 + i % 250),
        );
        request.host_interface = bridges[i % bridges.len()].clone();
        each.push(lib_attach(&host, &request));
    }
    let total = start.elapsed();
    let k = each.len().min(10);
    let (first, last) = (median(&each[..k]), median(&each[each.len() - k..]));
    let ratio = last.as_secs_f64() / first.as_secs_f64().max(1e-9);
    let verdict = if ratio <= TARGET_GROWTH_RATIO { "met" } else { "MISSED" };
    println!(
        "  {:<20} total {:>7.3} s   {:.2} ms/attach   median first {k} {} ms, last {k} {} ms   \
         last/first {ratio:.2}x   target <= {TARGET_GROWTH_RATIO:.1}x {verdict}",
        "in-process library",
        total.as_secs_f64(),
        total.as_secs_f64() * 1e3 / n.max(1) as f64,
        ms(first),
        ms(last),
    );
    println!("    {}", per_attach_reads(&host));
    if !config.bench_mode && ratio > TARGET_GROWTH_RATIO {
        println!("    (smoke mode: {n} attaches say little about growth; `cargo bench` runs 1000)");
    }
    // Teardown (untimed): the namespaces take their veths along; then the bridges.
    lab.remove_namespaces(&names);
    lab.remove_dir(&state);
    let lines: String = bridges.iter().map(|b| format!("link del {b}\n")).collect();
    let (ok, err) = ip_batch_quiet(&["-n", &host_name, "-force"], &lines);
    assert!(ok, "remove the growth pass's bridges: {err}");
}

/// Turn IPv6 off (all and default) in these namespaces. With it on, every new interface sends
/// router solicitations, DAD probes and MLD reports for seconds, and a bridge floods each to
/// all its ports: background work that grows with the guests already attached and would
/// swamp what the growth pass measures (lanyard's own cost per attach).
fn disable_ipv6<'a>(namespaces: impl Iterator<Item = &'a String>) {
    let paths: Vec<PathBuf> = namespaces.map(|n| Path::new("/run/netns").join(n)).collect();
    std::thread::spawn(move || {
        for path in paths {
            let netns =
                File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: setns on a descriptor we own, on this short-lived thread only.
            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns {}: {}", path.display(), io::Error::last_os_error());
            }
            // /proc/sys/net is the opening thread's namespace's.
            for which in ["all", "default"] {
                let key = format!("/proc/sys/net/ipv6/conf/{which}/disable_ipv6");
                fs::write(&key, "1").unwrap_or_else(|e| panic!("{key} in {}: {e}", path.display()));
            }
        }
    })
    .join()
    .expect("disable IPv6 in the growth pass's namespaces");
}

/// Untimed diagnosis after a library pass: the state lookups an attach makes (the lock, its
/// slot's own files, the index for a MAC, a host name and a created bridge), what reading every
/// record would cost instead (attach no longer does), and one lookup of a MAC in the bridge's
/// forwarding table (which every attach makes).
fn per_attach_reads(host: &Host) -> String {
    let start = Instant::now();
    let lookups = host.state.lock().and_then(|lock| {
        let guest = lanyard::state::GuestRef::Netns { name: "lybench-not-attached".into() };
        host.state.slot_records(&guest, "eth1")?;
        let index = host.state.index(&lock)?;
        index.mac_taken(spec::MacAddr([0x02, 0, 0, 0, 0, 1]))?;
        index.host_ifname_taken("lynotattached00")?;
        index.created_bridge_port(BRIDGE)?;
        Ok(())
    });
    let lookups = match lookups {
        Ok(()) => format!("state lookups of one attach {} ms", ms(start.elapsed())),
        Err(e) => format!("state lookups failed: {e}"),
    };
    let start = Instant::now();
    let records = host.state.records().map(|r| r.len()).unwrap_or(0);
    let records_time = start.elapsed();
    let fdb = Netlink::open(&host.netns, "the bench host").and_then(|mut netlink| {
        let bridge = netlink.link_by_name(BRIDGE)?.map(|l| l.index).unwrap_or(0);
        let start = Instant::now();
        netlink.bridge_fdb_has(bridge, [0x02, 0, 0, 0, 0, 1])?;
        Ok(start.elapsed())
    });
    let fdb = match fdb {
        Ok(time) => format!("one bridge FDB lookup {} ms", ms(time)),
        Err(e) => format!("bridge FDB lookup failed: {e}"),
    };
    format!(
        "(at {records} records: {lookups}; reading them all {} ms, which attach no longer \
         does; {fdb})",
        ms(records_time)
    )
}

// ---------------------------------------------------------------------------------------------
// Docker: a `--net none` container made through the Engine API, removed by the Lab guard

fn start_container(lab: &mut Lab, docker: &DockerConfig) -> Result<String, String> {
    let name = lab.name("c");
    let _ =
        docker_request(&docker.socket, "DELETE", &format!("/containers/{name}?force=true"), None);
    let body = serde_json::json!({
        "Image": docker.image,
        "Cmd": ["sleep", "3600"],
        "HostConfig": {"NetworkMode": "none"},
    })
    .to_string();
    let (status, text) = docker_request(
        &docker.socket,
        "POST",
        &format!("/containers/create?name={name}"),
        Some(&body),
    )
    .map_err(|e| format!("{}: {e}", docker.url))?;
    if status != 201 {
        return Err(format!(
            "create container from {}: HTTP {status} {}",
            docker.image,
            text.trim()
        ));
    }
    lab.containers.push((docker.socket.clone(), name.clone()));
    let (status, text) =
        docker_request(&docker.socket, "POST", &format!("/containers/{name}/start"), None)
            .map_err(|e| e.to_string())?;
    if status != 204 {
        return Err(format!("start container: HTTP {status} {}", text.trim()));
    }
    Ok(name)
}

/// One HTTP/1.0 request over the daemon's unix socket: (status, body).
fn docker_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> io::Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {DOCKER_API}{path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad HTTP response {response:?}")))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
