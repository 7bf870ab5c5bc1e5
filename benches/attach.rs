//! Speed benchmark of a static attach and its detach, ways that reach the same end state: the
//! `lanyard` binary (state on tmpfs and on disk), the in-process library, and the fastest
//! scripted reference (`ip -batch` to attach, `ip link del` to detach), plus the same attach and
//! detach of a Docker container (`--net none`) through the Engine API. Then 200 sequential
//! attaches into 200 namespaces, and 1000 sequential library attaches to see whether an attach
//! slows as attachments grow, followed by library detaches at that size against `ip link del`.
//!
//! Run as root: `cargo bench --bench attach`. `LANYARD_BENCH_ROUNDS` (default 50) sets the
//! attach/detach rounds per way, `LANYARD_BENCH_BATCH` (default 200) the sequential-attach
//! count, `LANYARD_BENCH_SCALE` (default 1000) the growth pass's attachments. The container rows
//! use a private dockerd this run starts and removes (tests/support/docker.rs: its own data
//! root, exec root and socket under a scratch directory, no bridge, no iptables, a busybox image
//! imported locally), or the daemon `LANYARD_BENCH_DOCKER_HOST=unix:///path/to/docker.sock`
//! names (image `LANYARD_BENCH_DOCKER_IMAGE`, default lanyard-test/busybox:latest). Without cargo
//! bench's `--bench` argument (as under `cargo test --all-targets`) it makes a short smoke pass
//! of 3 rounds, container rows included.
//!
//! Every way must reach exactly the same end state: after attach, the host and guest namespaces
//! look the same (links, MACs, addresses, routes) and a lanyard way has its record; after detach
//! both namespaces are as before and the record is gone. This is compared in full for every way
//! before timing, and checked again (host end present, then gone; no record left) in every timed
//! round; a difference fails the run, in smoke and bench mode alike.
//!
//! The world is the test lab's (tests/support/lab.rs): a "host" namespace H with bridge br0
//! (198.18.0.1/24) and guest namespaces, all fresh. Nothing here touches the root network
//! namespace; the CLI and the `ip` reference run inside H (setns before exec), as lanyard treats
//! the namespace it runs in as the host; the private dockerd has no bridge and no iptables. Every
//! namespace, directory, mount, container and daemon made here is removed by `Drop` guards, even
//! on panic; leftovers of a killed run are swept by the next one (the lab's and docker.rs's
//! sweeps).

#[path = "../tests/support/bench.rs"]
mod bench;
#[path = "../tests/support/docker.rs"]
mod docker;
#[allow(dead_code)]
#[path = "../tests/support/lab.rs"]
mod lab;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::{env_count, fs_type, load_average, median, ms, percentile, wait_for_announce_helpers};
use lanyard::docker::DockerHost;
use lanyard::guest::GuestSpec;
use lanyard::netlink::Netlink;
use lanyard::netns::Netns;
use lanyard::{naming, spec, AttachRequest, Host};

const HOST_ID: &str = "bench";
const BRIDGE: &str = "br0";
/// The lab's LAN number 0: br0 carries 198.18.0.1/24.
const LAN_INDEX: u8 = 0;
const GATEWAY: &str = "198.18.0.1";
const GUEST_ADDRESS: &str = "198.18.0.50/24";
const GUEST_IFNAME: &str = "eth1";
const MTU: u32 = 1500;
const DEFAULT_IMAGE: &str = "lanyard-test/busybox:latest";
/// Containers made in an external daemon are named `lybench-<pid>-c`, so that a later run can
/// remove those of a run that was killed.
const CONTAINER_PREFIX: &str = "lybench-";
/// The CLI's detached announce helper (two rounds of announcements 200 ms apart) is waited for
/// after each attach, for at most this long.
const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

// Targets (printed, not asserted).
const TARGET_CLI_NETNS: Duration = Duration::from_millis(5);
const TARGET_CLI_CONTAINER: Duration = Duration::from_millis(8);
const TARGET_LIBRARY: Duration = Duration::from_millis(2);
/// lanyard's detach median minus `ip link del`'s median, same rounds.
const TARGET_DETACH_DIFFERENCE: Duration = Duration::from_micros(500);
const TARGET_BATCH_200: Duration = Duration::from_millis(1500);
/// The growth pass: the median of the last 10 attaches over the median of the first 10.
const TARGET_GROWTH_RATIO: f64 = 1.5;
/// A Linux bridge takes at most 1023 ports; the growth pass spreads its guests over bridges of
/// this many.
const PORTS_PER_BRIDGE: usize = 250;

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    // As the integration tests: never skipped quietly; CI runs as root.
    lab::require_root();
    let config = Config::from_env(bench_mode);
    // The CLI spawns its announce helper detached; as a subreaper this process inherits the
    // orphan, so it can wait for it to finish before the next timed step and before teardown.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    run(&config);
}

struct Config {
    bench_mode: bool,
    rounds: usize,
    batch: usize,
    scale: usize,
    /// `LANYARD_BENCH_DOCKER_HOST` and the image to use there; `None`: a private dockerd.
    external_docker: Option<(String, String)>,
    cli: PathBuf,
}

impl Config {
    fn from_env(bench_mode: bool) -> Config {
        let (rounds, batch, scale) = if bench_mode { (50, 200, 1000) } else { (3, 5, 20) };
        let external_docker =
            std::env::var("LANYARD_BENCH_DOCKER_HOST").ok().filter(|v| !v.is_empty()).map(|url| {
                let image = std::env::var("LANYARD_BENCH_DOCKER_IMAGE")
                    .unwrap_or_else(|_| DEFAULT_IMAGE.to_string());
                (url, image)
            });
        Config {
            bench_mode,
            rounds: env_count("LANYARD_BENCH_ROUNDS", rounds).max(1),
            batch: env_count("LANYARD_BENCH_BATCH", batch),
            scale: env_count("LANYARD_BENCH_SCALE", scale),
            external_docker,
            cli: PathBuf::from(env!("CARGO_BIN_EXE_lanyard")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Docker: where the container rows' container lives

enum ContainerHost {
    /// A dockerd of this run's own; its `Drop` removes its containers, the daemon and its files.
    Private(docker::DockerLab),
    /// The daemon `LANYARD_BENCH_DOCKER_HOST` names; `Drop` removes the containers made here.
    External { url: String, image: String, made: Vec<String> },
}

impl ContainerHost {
    fn start(config: &Config) -> ContainerHost {
        match &config.external_docker {
            None => ContainerHost::Private(docker::DockerLab::start()),
            Some((url, image)) => {
                let host = ContainerHost::External {
                    url: url.clone(),
                    image: image.clone(),
                    made: vec![],
                };
                host.remove_containers_of_dead_runs();
                host
            }
        }
    }

    fn url(&self) -> String {
        match self {
            ContainerHost::Private(lab) => lab.env().1,
            ContainerHost::External { url, .. } => url.clone(),
        }
    }

    /// The docker CLI against this daemon; panics unless it succeeds; trimmed stdout.
    fn docker(&self, args: &[&str]) -> String {
        match self {
            ContainerHost::Private(lab) => lab.docker_ok(args),
            ContainerHost::External { url, .. } => {
                let out = Command::new("docker")
                    .arg("-H")
                    .arg(url)
                    .args(args)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap_or_else(|e| panic!("run docker (apt-get install docker.io): {e}"));
                assert!(
                    out.status.success(),
                    "docker -H {url} {} failed ({}): {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
        }
    }

    /// A running `--net none` busybox container named `name`; its init's pid.
    fn run_container(&mut self, name: &str) -> u32 {
        match self {
            ContainerHost::Private(lab) => {
                lab.run(name, &["--net", "none"]);
            }
            ContainerHost::External { image, made, .. } => {
                let image = image.clone();
                made.push(name.to_string());
                let args = ["run", "-d", "--stop-timeout", "1", "--net", "none", "--name", name];
                self.docker(&[&args[..], &[&image, "sleep", "3600"]].concat());
            }
        }
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", name]);
        pid.parse().unwrap_or_else(|_| panic!("docker inspect {name}: pid {pid:?}"))
    }

    fn remove_containers_of_dead_runs(&self) {
        let names =
            self.docker(&["ps", "-a", "--filter", "name=lybench-", "--format", "{{.Names}}"]);
        for name in names.lines() {
            let owner = name.strip_prefix(CONTAINER_PREFIX).and_then(|r| r.split('-').next());
            if owner.and_then(|p| p.parse::<u32>().ok()).is_some_and(|pid| !pid_alive(pid)) {
                self.docker(&["rm", "-f", name]);
            }
        }
    }
}

impl Drop for ContainerHost {
    fn drop(&mut self) {
        // Never panics: this also runs while unwinding.
        if let ContainerHost::External { url, made, .. } = self {
            for name in made.drain(..) {
                let _ = Command::new("docker").args(["-H", url, "rm", "-f", &name]).output();
            }
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Gives a namespace that is not the lab's (a container's) a name under /run/netns for `ip -n`,
/// the way `ip netns attach` does; the name goes on drop (the namespace stays its owner's). The
/// name has the lab's form, so the lab's sweep removes it if this run is killed.
struct NamedNetns {
    name: String,
}

impl NamedNetns {
    fn attach(tag: &str, pid: u32) -> NamedNetns {
        let name = format!("ly-{}-{}-{tag}", lab::run_id(), std::process::id());
        let out = Command::new("ip")
            .args(["netns", "attach", &name, &pid.to_string()])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip netns attach {name} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        NamedNetns { name }
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

// ---------------------------------------------------------------------------------------------
// Processes and directories

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

/// A scratch directory with a tmpfs of its own mounted on it (the lab's `TestDir` unmounts it
/// on drop, and the lab's sweep does for a killed run): lanyard's state on tmpfs, where fsync
/// costs nothing, whatever file system /tmp is.
fn tmpfs_dir(tag: &str) -> lab::TestDir {
    let dir = lab::TestDir::new(tag);
    let target = CString::new(dir.path().as_os_str().as_encoded_bytes()).expect("no NUL in path");
    let (source, fstype, data) = (c"tmpfs", c"tmpfs", c"mode=0700,size=256m");
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast())
    };
    assert!(
        rc == 0,
        "mount tmpfs on {}: {}",
        dir.path().display(),
        std::io::Error::last_os_error()
    );
    dir
}

// ---------------------------------------------------------------------------------------------
// The ways

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
    host: &'a lab::Netns,
    /// Spell the host side `ip -n H` instead of running ip inside H.
    dash_n: bool,
    guest: &'a str,
    derived: Derived,
}

impl IpReference<'_> {
    fn host_cmd(&self) -> Command {
        if self.dash_n {
            let mut cmd = Command::new("ip");
            cmd.args(["-n", &self.host.name]);
            cmd
        } else {
            self.host.command("ip")
        }
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
        guest.args(["-n", self.guest, "-batch", "-"]);
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
    host: &'a lab::Netns,
    state: PathBuf,
    docker_url: Option<&'a str>,
}

impl<'a> Cli<'a> {
    fn new(exe: &'a Path, host: &'a lab::Netns, state: &'a lab::TestDir) -> Cli<'a> {
        Cli { exe, host, state: state_dir(state), docker_url: None }
    }

    fn run(&self, args: &[&str]) -> Duration {
        let mut cmd = self.host.command(self.exe);
        cmd.args(args)
            .env("LANYARD_STATE_DIR", &self.state)
            .env("LANYARD_HOST_ID", HOST_ID)
            .env_remove("DOCKER_HOST");
        if let Some(url) = self.docker_url {
            cmd.env("DOCKER_HOST", url);
        }
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

fn library_host(host_path: &Path, state: &lab::TestDir) -> Host {
    let netns = Netns::open(host_path).expect("open host namespace");
    Host::new(netns, &state_dir(state), HOST_ID).expect("open state directory")
}

/// lanyard's state directory in a scratch directory: `state`, where the lab's `state_files`
/// looks.
fn state_dir(dir: &lab::TestDir) -> PathBuf {
    dir.join("state")
}

// ---------------------------------------------------------------------------------------------
// End states

/// A guest some ways attach: ways with the same guest must reach the same end state.
struct Guest<'a> {
    /// Its name under /run/netns, for `ip -n`.
    netns_name: &'a str,
    /// The lab namespace itself, when the guest is one: then its full snapshot is compared.
    lab_netns: Option<&'a lab::Netns>,
}

fn snapshot_text(title: &str, snapshot: &lab::Snapshot) -> String {
    let mut text = String::new();
    for (what, lines) in
        [("link", &snapshot.links), ("address", &snapshot.addresses), ("route", &snapshot.routes)]
    {
        for line in lines {
            text.push_str(&format!("{title} {what} {line}\n"));
        }
    }
    text
}

/// A namespace the lab does not own (a container's), as `ip -j` shows it: every link but `lo`
/// (MAC, MTU, up), its addresses but IPv6 link-local ones, and the main table's routes but the
/// kernel's `fe80::/64`.
fn guest_view(netns_name: &str) -> String {
    let json = |args: &[&str]| -> serde_json::Value {
        let out = Command::new("ip").args(["-n", netns_name, "-j"]).args(args).output();
        let out = out.expect("run ip");
        assert!(out.status.success(), "ip -n {netns_name} -j {}", args.join(" "));
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    // Strings without their JSON quotes, absent fields as "-".
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let list = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
    let mut lines = Vec::new();
    for link in list(&json(&["addr", "show"])) {
        if link["ifname"] == "lo" {
            continue;
        }
        let up = list(&link["flags"]).iter().any(|f| f == "UP");
        lines.push(format!(
            "guest link {} {} mtu {} up {up}",
            text(&link["ifname"]),
            text(&link["address"]),
            text(&link["mtu"])
        ));
        for a in list(&link["addr_info"]) {
            if !text(&a["local"]).starts_with("fe80:") {
                lines.push(format!(
                    "guest address {} {}/{}",
                    text(&link["ifname"]),
                    text(&a["local"]),
                    text(&a["prefixlen"])
                ));
            }
        }
    }
    for family in ["-4", "-6"] {
        for r in list(&json(&[family, "route", "show", "table", "main"])) {
            if !text(&r["dst"]).starts_with("fe80:") {
                lines.push(format!(
                    "guest route {} via {} dev {} proto {}",
                    text(&r["dst"]),
                    text(&r["gateway"]),
                    text(&r["dev"]),
                    text(&r["protocol"])
                ));
            }
        }
    }
    lines.sort();
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// Both namespaces of a way: the host's and the guest's.
fn world_state(host: &lab::Netns, guest: &Guest) -> String {
    let guest_text = match guest.lab_netns {
        Some(netns) => snapshot_text("guest", &netns.snapshot()),
        None => guest_view(guest.netns_name),
    };
    format!("{}{guest_text}", snapshot_text("host", &host.snapshot()))
}

/// The lines only in `a` (`-`) and only in `b` (`+`).
fn diff(a: &str, b: &str) -> String {
    let only = |x: &str, y: &str, mark: char| -> Vec<String> {
        let y: Vec<&str> = y.lines().collect();
        x.lines().filter(|l| !y.contains(l)).map(|l| format!("{mark} {l}")).collect()
    };
    [only(a, b, '-'), only(b, a, '+')].concat().join("\n")
}

/// One attach and detach per way, untimed, each compared in full: after attach, every way with
/// the same guest leaves the same namespaces and a lanyard way exactly one record; after detach
/// both namespaces are as before and no record is left. Panics with the difference. Returns
/// each way's host end name (the one link its attach added to the host namespace).
fn check_end_states(ways: &mut [Way], host: &lab::Netns) -> Vec<String> {
    let mut host_ifnames = Vec::new();
    // (guest, the first way's label, what its attach changed, the whole attached state)
    let mut attached_by_guest: Vec<(&str, String, String, String)> = Vec::new();
    for way in ways.iter_mut() {
        let before = world_state(host, way.guest);
        let links_before = host.links();
        (way.attach)();
        wait_for_announce_helpers(HELPER_TIMEOUT);
        let attached = world_state(host, way.guest);
        let added: Vec<String> =
            host.links().into_iter().filter(|l| !links_before.contains(l)).collect();
        assert!(
            added.len() == 1,
            "[{}] attach added {added:?} to the host namespace, not one host end",
            way.label
        );
        let records_attached = way.state.map(lab::state_files);
        (way.detach)();
        wait_for_announce_helpers(HELPER_TIMEOUT);
        let detached = world_state(host, way.guest);
        assert!(
            detached == before,
            "[{}] detach does not restore the namespaces as they were before attach:\n{}",
            way.label,
            diff(&before, &detached)
        );
        if let Some(dir) = way.state {
            let left = lab::state_files(dir);
            let records = records_attached.unwrap_or_default();
            assert!(records.len() == 1, "[{}] attach left records {records:?}", way.label);
            assert!(left.is_empty(), "[{}] detach left records {left:?}", way.label);
        }
        match attached_by_guest.iter().find(|(guest, ..)| *guest == way.guest.netns_name) {
            None => attached_by_guest.push((
                way.guest.netns_name,
                way.label.clone(),
                diff(&before, &attached),
                attached,
            )),
            Some((_, model, _, state)) => assert!(
                *state == attached,
                "the ways reach different end states after attach ([{model}] -, [{}] +):\n{}",
                way.label,
                diff(state, &attached)
            ),
        }
        host_ifnames.extend(added);
    }
    for (_, model, added, _) in &attached_by_guest {
        println!("end state after attach, the same for every way with this guest ([{model}]):");
        println!("{added}");
    }
    println!("end state after detach: both namespaces as before attach, no record (every way)");
    host_ifnames
}

// ---------------------------------------------------------------------------------------------
// Measurement and the tables

/// One way of doing the attach and the detach, each call timed by the closure itself.
struct Way<'a> {
    label: String,
    guest: &'a Guest<'a>,
    /// A lanyard way's state directory (its record is part of the end state).
    state: Option<&'a lab::TestDir>,
    attach_target: Option<Duration>,
    attach: Box<dyn FnMut() -> Duration + 'a>,
    detach: Box<dyn FnMut() -> Duration + 'a>,
}

struct Row {
    label: String,
    lanyard: bool,
    attach_target: Option<Duration>,
    /// In round order, so that row[i] and the reference's row[i] come from the same round.
    attach: Vec<Duration>,
    detach: Vec<Duration>,
}

/// `rounds` rounds in which every way attaches and detaches once, round i starting at way i
/// (rotating), so a burst of noise on this shared machine spreads over all ways instead of
/// landing on one way's block. Between a way's attach and its detach the CLI's announce helper
/// is waited for (untimed), so nothing of one step runs in the background of the next. Every
/// round checks the end state: the host end exists after attach, and after detach it is gone
/// and a lanyard way has no record left.
fn measure_interleaved(
    ways: &mut [Way],
    host_ifnames: &[String],
    host_netlink: &mut Netlink,
    rounds: usize,
) -> Vec<Row> {
    let mut rows: Vec<Row> = ways
        .iter()
        .map(|way| Row {
            label: way.label.clone(),
            lanyard: way.state.is_some(),
            attach_target: way.attach_target,
            attach: Vec::with_capacity(rounds),
            detach: Vec::with_capacity(rounds),
        })
        .collect();
    let mut host_end_exists = |name: &str| {
        host_netlink.link_by_name(name).expect("look up the host end in the bench host").is_some()
    };
    for round in 0..rounds {
        for k in 0..ways.len() {
            let i = (round + k) % ways.len();
            let (way, host_ifname) = (&mut ways[i], &host_ifnames[i]);
            let attach = (way.attach)();
            wait_for_announce_helpers(HELPER_TIMEOUT);
            assert!(host_end_exists(host_ifname), "[{}] round {round}: no host end", way.label);
            let detach = (way.detach)();
            assert!(
                !host_end_exists(host_ifname),
                "[{}] round {round}: host end {host_ifname} still there after detach",
                way.label
            );
            if let Some(left) = way.state.map(lab::state_files).filter(|l| !l.is_empty()) {
                panic!("[{}] round {round}: detach left records {left:?}", way.label);
            }
            rows[i].attach.push(attach);
            rows[i].detach.push(detach);
        }
    }
    rows
}

fn signed_ms(later: Duration, earlier: Duration) -> f64 {
    (later.as_secs_f64() - earlier.as_secs_f64()) * 1e3
}

fn print_attach_table(rows: &[Row]) {
    let reference = median(&rows[0].attach);
    println!(
        "{:<58} {:>8} {:>8} {:>8}  target (median)",
        "attach: way (times in ms)", "median", "p90", "/REF"
    );
    println!("{}", "-".repeat(104));
    for row in rows {
        let a = median(&row.attach);
        let target = row.attach_target.map(|target| {
            let verdict = if a < target { "met" } else { "MISSED" };
            format!("< {} ms {verdict}", target.as_millis())
        });
        println!(
            "{:<58} {:>8} {:>8} {:>7.2}x  {}",
            row.label,
            ms(a),
            ms(percentile(&row.attach, 0.9)),
            a.as_secs_f64() / reference.as_secs_f64(),
            target.unwrap_or_default()
        );
    }
}

/// The detach table: each way against `ip link del` in H (`rows[0]`): the difference of the
/// medians, the median of the per-round differences, and the ratio of the medians.
fn print_detach_table(rows: &[Row]) {
    let reference = &rows[0];
    let ref_median = median(&reference.detach);
    println!(
        "{:<58} {:>8} {:>8} {:>10} {:>10} {:>8}  target (lanyard - ip <= {} ms)",
        "detach: way (times in ms)",
        "median",
        "p90",
        "med - REF",
        "per-round",
        "/REF",
        ms(TARGET_DETACH_DIFFERENCE)
    );
    println!("{}", "-".repeat(138));
    for row in rows {
        let d = median(&row.detach);
        let mut per_round: Vec<f64> =
            row.detach.iter().zip(&reference.detach).map(|(&x, &r)| signed_ms(x, r)).collect();
        per_round.sort_by(f64::total_cmp);
        let per_round = per_round[per_round.len() / 2];
        let difference = signed_ms(d, ref_median);
        let verdict = if !row.lanyard {
            String::new()
        } else if difference <= TARGET_DETACH_DIFFERENCE.as_secs_f64() * 1e3 {
            "met".to_string()
        } else {
            "MISSED".to_string()
        };
        println!(
            "{:<58} {:>8} {:>8} {:>+10.2} {:>+10.2} {:>7.2}x  {verdict}",
            row.label,
            ms(d),
            ms(percentile(&row.detach, 0.9)),
            difference,
            per_round,
            d.as_secs_f64() / ref_median.as_secs_f64(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The run

fn run(config: &Config) {
    let total = Instant::now();
    let load_at_start = load_average();
    let lan = lab::Lan::bridge(LAN_INDEX);
    let host = &lan.host;
    let guest = lan.guest("g");
    let state_tmpfs = tmpfs_dir("state-tmpfs");
    let state_disk = lab::TestDir::new("state-disk");
    let tmpfs_label = format!("tmpfs, {}", fs_type(state_tmpfs.path()));
    let disk_label = format!("{}, {}", std::env::temp_dir().display(), fs_type(state_disk.path()));
    let mut containers = ContainerHost::start(config);
    let docker_url = containers.url();
    let container_name = format!("{CONTAINER_PREFIX}{}-c", std::process::id());
    let container_pid = containers.run_container(&container_name);
    let container_netns = NamedNetns::attach("container", container_pid);

    println!();
    println!(
        "lanyard attach/detach benchmark ({} mode): {} rounds per way, kernel {}, {} CPUs, load \
         average {load_at_start}",
        if config.bench_mode { "bench" } else { "smoke" },
        config.rounds,
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("CLI: {}; containers: {docker_url}", config.cli.display());
    println!(
        "world: host netns {} ({BRIDGE} {GATEWAY}/24), guest netns {}, container {container_name}",
        host.name, guest.name
    );
    println!(
        "attach: veth, host end on {BRIDGE}, guest {GUEST_IFNAME} mtu {MTU}, {GUEST_ADDRESS}, \
         default via {GATEWAY}; detach: delete the veth (and lanyard's record)"
    );

    let guest_token = format!("netns:{}", guest.name);
    let netns_guest = Guest { netns_name: &guest.name, lab_netns: Some(&guest) };
    let container_guest = Guest { netns_name: &container_netns.name, lab_netns: None };
    let reference = |dash_n: bool| IpReference {
        host,
        dash_n,
        guest: &guest.name,
        derived: derived(&guest_token),
    };
    // Everything the ways borrow lives here, before the ways themselves.
    let (ref_in_h, ref_dash_n) = (reference(false), reference(true));
    let cli_tmpfs = Cli::new(&config.cli, host, &state_tmpfs);
    let cli_disk = Cli::new(&config.cli, host, &state_disk);
    let cli_container =
        Cli { docker_url: Some(&docker_url), ..Cli::new(&config.cli, host, &state_tmpfs) };
    let lib_host = library_host(&host.path, &state_tmpfs);
    let lib_request = request(GuestSpec::Netns(guest.name.clone()), GUEST_ADDRESS);
    let lib_host_docker = library_host(&host.path, &state_tmpfs)
        .with_docker(DockerHost::parse(&docker_url).expect("parse the Docker URL"));
    let container_request = request(GuestSpec::Bare(container_name.clone()), GUEST_ADDRESS);

    let mut ways = vec![
        Way {
            label: "ip -batch (in H) + ip -n G -batch; ip link del (in H)  [REF]".into(),
            guest: &netns_guest,
            state: None,
            attach_target: None,
            attach: Box::new(|| ref_in_h.attach()),
            detach: Box::new(|| ref_in_h.detach()),
        },
        Way {
            label: "ip -n H -batch + ip -n G -batch; ip -n H link del".into(),
            guest: &netns_guest,
            state: None,
            attach_target: None,
            attach: Box::new(|| ref_dash_n.attach()),
            detach: Box::new(|| ref_dash_n.detach()),
        },
        Way {
            label: format!("in-process library (state {tmpfs_label})"),
            guest: &netns_guest,
            state: Some(&state_tmpfs),
            attach_target: Some(TARGET_LIBRARY),
            attach: Box::new(|| lib_attach(&lib_host, &lib_request)),
            detach: Box::new(|| lib_detach(&lib_host, &guest_token)),
        },
        Way {
            label: format!("CLI (state {tmpfs_label})"),
            guest: &netns_guest,
            state: Some(&state_tmpfs),
            attach_target: Some(TARGET_CLI_NETNS),
            attach: Box::new(|| cli_tmpfs.attach(&guest_token, GUEST_ADDRESS)),
            detach: Box::new(|| cli_tmpfs.detach(&guest_token)),
        },
        Way {
            label: format!("CLI (state {disk_label})"),
            guest: &netns_guest,
            state: Some(&state_disk),
            attach_target: Some(TARGET_CLI_NETNS),
            attach: Box::new(|| cli_disk.attach(&guest_token, GUEST_ADDRESS)),
            detach: Box::new(|| cli_disk.detach(&guest_token)),
        },
        Way {
            label: format!("CLI, container via Engine API (state {tmpfs_label})"),
            guest: &container_guest,
            state: Some(&state_tmpfs),
            attach_target: Some(TARGET_CLI_CONTAINER),
            attach: Box::new(|| cli_container.attach(&container_name, GUEST_ADDRESS)),
            detach: Box::new(|| cli_container.detach(&container_name)),
        },
        Way {
            label: format!("library, container via Engine API (state {tmpfs_label})"),
            guest: &container_guest,
            state: Some(&state_tmpfs),
            attach_target: None,
            attach: Box::new(|| lib_attach(&lib_host_docker, &container_request)),
            detach: Box::new(|| lib_detach(&lib_host_docker, &container_name)),
        },
    ];
    println!();
    let host_ifnames = check_end_states(&mut ways, host);
    println!();

    let mut host_netlink =
        Netlink::open(&lib_host.netns, "the bench host").expect("netlink in the bench host");
    let rows = measure_interleaved(&mut ways, &host_ifnames, &mut host_netlink, config.rounds);
    drop(ways);
    // The container and its dockerd are done with: gone before the passes below, so that an
    // idle dockerd and containerd are no background load there.
    drop(container_netns);
    drop(containers);
    print_attach_table(&rows);
    println!(
        "attach ratios are medians over the [REF] row; the CLI also spawns its detached announce \
         helper (ARP), the library and ip do not announce"
    );
    println!();
    print_detach_table(&rows);
    println!(
        "detach: {} rounds, interleaved (round i: every way attaches and detaches once, from way \
         i on); med - REF = difference of the medians, per-round = median of the same-round \
         differences; the CLI's announce helper is waited for (untimed) before each detach",
        config.rounds
    );

    if config.batch > 0 {
        println!();
        println!(
            "{n} sequential attaches into {n} distinct guest namespaces (created beforehand, \
             untimed; state {tmpfs_label}):",
            n = config.batch
        );
        batch_pass(config, host, true);
        batch_pass(config, host, false);
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
        growth_pass(config, host);
    }
    println!();
    println!(
        "total bench time {:.1} s; load average at start {load_at_start}, at end {}",
        total.elapsed().as_secs_f64(),
        load_average()
    );
}

/// Attach `config.batch` fresh namespaces one after the other; print the total.
fn batch_pass(config: &Config, host: &lab::Netns, library: bool) {
    let tag = if library { "lib" } else { "cli" };
    let guests: Vec<lab::Netns> =
        (0..config.batch).map(|i| lab::Netns::new(&format!("{tag}{i}"))).collect();
    let state = tmpfs_dir(&format!("state-{tag}"));
    let address = |i: usize| format!("198.18.{}.{}/16", 1 + i / 250, 1 + i % 250);
    let mut each = Vec::with_capacity(guests.len());
    let mut diagnosis = None;
    let start = Instant::now();
    if library {
        let lib = library_host(&host.path, &state);
        for (i, guest) in guests.iter().enumerate() {
            each.push(lib_attach(
                &lib,
                &request(GuestSpec::Netns(guest.name.clone()), &address(i)),
            ));
        }
        diagnosis = Some(per_attach_reads(&lib));
    } else {
        let c = Cli::new(&config.cli, host, &state);
        for (i, guest) in guests.iter().enumerate() {
            each.push(c.attach(&format!("netns:{}", guest.name), &address(i)));
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
    wait_for_announce_helpers(HELPER_TIMEOUT);
    drop(guests);
    let no_ports = || host.ip(&["-o", "link", "show", "master", BRIDGE]).trim().is_empty();
    assert!(lab::wait_until(Duration::from_secs(30), no_ports), "br0 kept ports for 30 s");
}

/// Attach `config.scale` guests one after the other through the library, round robin over
/// enough bridges; print how much slower the last 10 attaches are than the first 10.
fn growth_pass(config: &Config, host: &lab::Netns) {
    let n = config.scale;
    let bridges: Vec<String> =
        (0..n.div_ceil(PORTS_PER_BRIDGE)).map(|b| format!("brs{b}")).collect();
    host.ip_batch(
        &bridges
            .iter()
            .map(|b| format!("link add {b} type bridge\nlink set {b} up\n"))
            .collect::<String>(),
    );
    let guests: Vec<lab::Netns> = (0..n).map(|i| lab::Netns::new(&format!("grow{i}"))).collect();
    disable_ipv6(std::iter::once(host).chain(&guests));
    let state = tmpfs_dir("state-grow");
    let lib = library_host(&host.path, &state);
    let mut each = Vec::with_capacity(n);
    let start = Instant::now();
    for (i, guest) in guests.iter().enumerate() {
        let mut request = request(
            GuestSpec::Netns(guest.name.clone()),
            &format!("198.18.{}.{}/16", 1 + i / 250, 1 + i % 250),
        );
        request.host_interface = bridges[i % bridges.len()].clone();
        each.push(lib_attach(&lib, &request));
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
    println!("    {}", per_attach_reads(&lib));
    if !config.bench_mode && ratio > TARGET_GROWTH_RATIO {
        println!("    (smoke mode: {n} attaches say little about growth; `cargo bench` runs 1000)");
    }
    // What a detach costs once the state directory is full: the library detaches the first
    // guests while `ip link del` removes the host ends of the last ones, in turns.
    let k = k.min(n / 2);
    let (mut by_library, mut by_ip) = (Vec::with_capacity(k), Vec::with_capacity(k));
    for j in 0..k {
        let library = || lib_detach(&lib, &format!("netns:{}", guests[j].name));
        let ip = || {
            let host_end = derived(&format!("netns:{}", guests[n - 1 - j].name)).host_ifname;
            let mut cmd = host.command("ip");
            cmd.args(["link", "del", &host_end]);
            timed(cmd, None)
        };
        if j % 2 == 0 {
            by_library.push(library());
            by_ip.push(ip());
        } else {
            by_ip.push(ip());
            by_library.push(library());
        }
    }
    if k > 0 {
        let (library, ip) = (median(&by_library), median(&by_ip));
        println!(
            "  detach at {n} records ({k} each, in turns): library median {} ms, ip link del \
             median {} ms, difference {:+.2} ms, {:.2}x",
            ms(library),
            ms(ip),
            signed_ms(library, ip),
            library.as_secs_f64() / ip.as_secs_f64()
        );
    }
    // Teardown (untimed): the namespaces take their veths along; then the bridges.
    drop(guests);
    host.ip_batch(&bridges.iter().map(|b| format!("link del {b}\n")).collect::<String>());
}

/// Turn IPv6 off (all and default) in these namespaces. With it on, every new interface sends
/// router solicitations, DAD probes and MLD reports for seconds, and a bridge floods each to
/// all its ports: background work that grows with the guests already attached and would
/// swamp what the growth pass measures (lanyard's own cost per attach).
fn disable_ipv6<'a>(namespaces: impl Iterator<Item = &'a lab::Netns>) {
    for netns in namespaces {
        netns.sysctl("net/ipv6/conf/all/disable_ipv6", "1");
        netns.sysctl("net/ipv6/conf/default/disable_ipv6", "1");
    }
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
