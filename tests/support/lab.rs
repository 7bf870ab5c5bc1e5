//! The world each integration test builds: network namespaces, a LAN on a Linux bridge, servers
//! and packet captures running inside them, and the guards that tear all of it down.
//!
//! Nothing here touches the root network namespace: every link, address and route is made inside
//! a fresh namespace named `ly-<runid>-<pid>-<tag>-<n>`, and test addresses come only from
//! 198.18.0.0/15 and 2001:db8::/32. Tests run as threads of one process, several processes may
//! run at once, and a process killed half-way leaves namespaces and scratch directories that the
//! next process sweeps away ([`sweep_leftovers`]).
//!
//! Tests may use `ip` and `bridge` from iproute2 to build and inspect the world; lanyard itself
//! never does.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime};

const NETNS_DIR: &str = "/run/netns";
const NETNS_PREFIX: &str = "ly-";
const DIR_PREFIX: &str = "lanyard-test-";

// ---------------------------------------------------------------------------------------------
// Identity of this test process

/// This process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn proc_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    proc_stat_fields(&stat)?.get(19)?.parse().ok()
}

/// The fields of a `/proc/PID/stat` line after `comm` (which may hold spaces and parentheses):
/// index 0 is the state, 1 the parent pid, 19 the start time.
fn proc_stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().collect())
}

fn base32(mut n: u64) -> String {
    const DIGITS: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 32) as usize]);
        n /= 32;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base32 digits are ASCII")
}

/// The run id of process `pid` started at `start` ticks: unique per process on this boot (a pid
/// is below 2^22 and is not reused within one clock tick), and checkable from outside, which is
/// how [`sweep_leftovers`] tells a live owner from a recycled pid.
fn run_id_of(pid: u32, start: u64) -> String {
    base32((start << 22) | u64::from(pid))
}

/// Unique per test process, e.g. `"9l4e1u0m8"`. Every namespace and scratch directory this
/// process makes carries it together with the pid.
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let pid = std::process::id();
        let start = proc_start_ticks(pid).expect("read /proc/self/stat");
        run_id_of(pid, start)
    })
}

/// Is `pid` alive and the same process that was given `run_id`?
fn owner_alive(pid: u32, run_id: &str) -> bool {
    proc_start_ticks(pid).is_some_and(|start| run_id_of(pid, start) == run_id)
}

/// Panics unless this process runs as root: the lab needs namespaces, veths and bridges.
/// Tests are never skipped quietly.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "lanyard's integration tests need root (they build network namespaces, bridges and \
             veths): run them with `sudo ./scripts/test.sh`"
        );
    }
}

/// Root check and prerequisite check on every call (so every test fails with the clear message),
/// [`sweep_leftovers`] once per process.
fn init() {
    require_root();
    static HAVE_IP: OnceLock<bool> = OnceLock::new();
    let have_ip = *HAVE_IP.get_or_init(|| {
        Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if !have_ip {
        panic!("`ip` (iproute2) is missing: run `sudo ./scripts/setup.sh`");
    }
    sweep_leftovers();
}

fn next_counter() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Keeps `[A-Za-z0-9_.]` and turns anything else into `_` (a tag ends up in file names).
fn clean_tag(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '_' })
        .take(24)
        .collect();
    if tag.is_empty() {
        "x".to_string()
    } else {
        tag
    }
}

/// Polls `cond` (every 5 ms, backing off to 50 ms) until it holds or `timeout` runs out.
/// Returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        text.push_str(&stderr);
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// A fresh network namespace, `/run/netns/NAME`, deleted on drop.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
    fd: Arc<File>,
}

impl Netns {
    /// `ip netns add ly-<runid>-<pid>-<tag>-<n>` with `lo` up.
    pub fn new(tag: &str) -> Netns {
        init();
        let name = format!(
            "{NETNS_PREFIX}{}-{}-{}-{}",
            run_id(),
            std::process::id(),
            clean_tag(tag),
            next_counter()
        );
        Netns::create(name)
    }

    /// `ly-<runid>-<pid>-<tag>` with `tag` kept exactly (no counter): for tests of names that
    /// differ only in characters [`Netns::new`] would clean. The caller keeps tags unique.
    pub fn new_verbatim(tag: &str) -> Netns {
        init();
        assert!(!tag.contains('/') && !tag.is_empty(), "bad namespace tag {tag:?}");
        Netns::create(format!("{NETNS_PREFIX}{}-{}-{tag}", run_id(), std::process::id()))
    }

    fn create(name: String) -> Netns {
        // The first `ip netns add` of a machine turns /run/netns into a shared mount; two racing
        // first calls would stack two such mounts. Serialise this process's first one.
        static FIRST_DONE: AtomicBool = AtomicBool::new(false);
        static FIRST: Mutex<()> = Mutex::new(());
        let guard = if FIRST_DONE.load(Ordering::Acquire) {
            None
        } else {
            Some(FIRST.lock().unwrap_or_else(|e| e.into_inner()))
        };
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .stdin(Stdio::null())
            .output()
            .expect("spawn ip");
        if !out.status.success() {
            panic!("ip netns add {name}: {}", output_text(&out).trim());
        }
        FIRST_DONE.store(true, Ordering::Release);
        drop(guard);
        let path = Path::new(NETNS_DIR).join(&name);
        let fd = match File::open(&path) {
            Ok(file) => Arc::new(file),
            Err(e) => {
                delete_netns(&path);
                panic!("open {}: {e}", path.display());
            }
        };
        let ns = Netns { name, path, fd };
        if let Err(e) = ns.run_in(set_lo_up) {
            panic!("set lo up in {}: {e}", ns.name);
        }
        ns
    }

    /// Runs `f` on a new thread that has entered this namespace (only the network namespace:
    /// the mount namespace, and so /sys, stays the test's). Use it to run library code under
    /// test "inside the host": sockets and netlink handles opened by `f` belong to this
    /// namespace. Panics in `f` propagate. Note: a [`Server`] spawned inside `f` dies when `f`
    /// returns (its parent-death signal follows the spawning thread).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                // SAFETY: fd is an open namespace file kept alive by `self` for the scope.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    panic!("setns into network namespace: {}", io::Error::last_os_error());
                }
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A `Command` whose process starts inside this namespace (setns in `pre_exec`; unlike
    /// `ip netns exec` it keeps the test's mount namespace). stdin defaults to inherited: set it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        // A lanyard daemon started here serves no Docker plugin socket in the machine-wide
        // /run/docker/plugins unless the test asks (tests/plugin.rs removes this).
        cmd.env(lanyard::config::DOCKER_PLUGIN_ENV, "");
        let fd = Arc::clone(&self.fd);
        // SAFETY: the closure only calls setns, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs a command inside this namespace and returns its output (stdin is /dev/null).
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let (program, args) = cmd.split_first().expect("exec: empty command");
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("spawn {program} in {}: {e}", self.name))
    }

    /// Like [`Netns::exec`], panicking with the output unless the command succeeds; returns
    /// stdout.
    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let out = self.exec(cmd);
        if !out.status.success() {
            panic!(
                "`{}` in {} failed ({}): {}",
                cmd.join(" "),
                self.name,
                out.status,
                output_text(&out).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ip_command(&self, global: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(global).arg("-n").arg(&self.name).args(args).stdin(Stdio::null());
        cmd
    }

    fn ip_output(&self, global: &[&str], args: &[&str]) -> Output {
        self.ip_command(global, args).output().expect("spawn ip")
    }

    /// `ip -n NAME ARGS...`; panics with ip's message on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = self.ip_output(&[], args);
        if !out.status.success() {
            panic!("ip -n {} {}: {}", self.name, args.join(" "), output_text(&out).trim());
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n NAME ARGS...`; whether it succeeded.
    pub fn ip_ok(&self, args: &[&str]) -> bool {
        self.ip_output(&[], args).status.success()
    }

    /// `ip -j -n NAME ARGS...`, parsed; `Null` when ip printed nothing. Panics on failure.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ip_output(&["-j"], args);
        if !out.status.success() {
            panic!("ip -j -n {} {}: {}", self.name, args.join(" "), output_text(&out).trim());
        }
        parse_json(&out.stdout)
    }

    /// Several ip commands in one process (`ip -n NAME -batch -`), one per line, e.g.
    /// `"link add br1 type bridge\nlink set br1 up"`. Panics on the first that fails.
    pub fn ip_batch(&self, commands: &str) {
        let mut child = self
            .ip_command(&["-batch", "-"], &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip");
        {
            let mut stdin = child.stdin.take().expect("piped stdin");
            let mut text = commands.trim().to_string();
            text.push('\n');
            // A write error means ip exited early; its status tells why.
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().expect("wait for ip");
        if !out.status.success() {
            panic!(
                "ip -n {} -batch:\n{}\n=> {}",
                self.name,
                commands.trim(),
                output_text(&out).trim()
            );
        }
    }

    /// Interface names, sorted.
    pub fn links(&self) -> Vec<String> {
        let mut names: Vec<String> = as_array(&self.ip_json(&["link", "show"]))
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// One line per interface, sorted: `"NAME KIND up|down mtu N [master M] [ether MAC]
    /// [link PEER] [mode MODE] [id VLAN]"` (no operstate or carrier, which the kernel changes on
    /// its own schedule).
    pub fn link_details(&self) -> Vec<String> {
        link_lines(&self.ip_json(&["-d", "link", "show"]))
    }

    /// `"IFNAME ADDR/PREFIX"` (or `"IFNAME LOCAL peer PEER/PREFIX"`) for every address,
    /// sorted, including kernel-made IPv6 link-local ones.
    pub fn addresses(&self) -> Vec<String> {
        address_lines(&self.ip_json(&["addr", "show"]), false)
    }

    /// The IPv4 and IPv6 routes of every table (`ip -4/-6 route show table all`), sorted, without
    /// the kernel-volatile bits (`linkdown`, `expires N`, offload flags).
    pub fn routes(&self) -> Vec<String> {
        let v4 = self.ip(&["-4", "route", "show", "table", "all"]);
        let v6 = self.ip(&["-6", "route", "show", "table", "all"]);
        route_lines(&v4, &v6, false)
    }

    /// Links, addresses and routes, for "a failed attach leaves everything as it was": three ip
    /// processes run concurrently. Leaves out what the kernel adds or drops by itself as carrier
    /// comes and goes: IPv6 link-local addresses, `fe80::/64`, `local fe80::…` and
    /// `multicast ff00::/8` routes.
    pub fn snapshot(&self) -> Snapshot {
        let spawn = |global: &[&str], args: &[&str]| {
            self.ip_command(global, args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ip")
        };
        let addr = spawn(&["-j", "-d"], &["addr", "show"]);
        let v4 = spawn(&["-4"], &["route", "show", "table", "all"]);
        let v6 = spawn(&["-6"], &["route", "show", "table", "all"]);
        let finish = |child: Child, what: &str| {
            let out = child.wait_with_output().expect("wait for ip");
            if !out.status.success() {
                panic!("snapshot of {}: ip {what}: {}", self.name, output_text(&out).trim());
            }
            out.stdout
        };
        let addr = parse_json(&finish(addr, "addr show"));
        let v4 = finish(v4, "-4 route show");
        let v6 = finish(v6, "-6 route show");
        Snapshot {
            links: link_lines(&addr),
            addresses: address_lines(&addr, true),
            routes: route_lines(&String::from_utf8_lossy(&v4), &String::from_utf8_lossy(&v6), true),
        }
    }

    /// Writes a sysctl of this namespace, e.g. `sysctl("net/ipv6/conf/all/forwarding", "1")`
    /// (path under /proc/sys, dots or slashes).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        if let Err(e) = self.run_in(|| fs::write(&path, value)) {
            panic!("sysctl {} = {value} in {}: {e}", path.display(), self.name);
        }
    }

    /// Reads a sysctl of this namespace (trimmed).
    /// The first IPv4 address on `ifname`, if any.
    pub fn ipv4_on(&self, ifname: &str) -> Option<Ipv4Addr> {
        let out = self.exec(&["ip", "-4", "-o", "addr", "show", "dev", ifname]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|word| *word != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next())
            .and_then(|ip| ip.parse().ok())
    }

    pub fn sysctl_get(&self, key: &str) -> String {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        match self.run_in(|| fs::read_to_string(&path)) {
            Ok(value) => value.trim().to_string(),
            Err(e) => panic!("read sysctl {} in {}: {e}", path.display(), self.name),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.path);
    }
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netns").field("name", &self.name).finish()
    }
}

/// What `ip netns del` does: detach the bind mount, remove the file. Errors are ignored.
fn delete_netns(path: &Path) {
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
        // SAFETY: c is a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = fs::remove_file(path);
}

/// Runs on a thread inside the namespace: `ip link set lo up` without spawning ip.
fn set_lo_up() -> io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(raw);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn parse_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip printed invalid JSON ({e}): {text}"))
}

fn as_array(value: &serde_json::Value) -> &[serde_json::Value] {
    value.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn link_lines(json: &serde_json::Value) -> Vec<String> {
    let mut lines: Vec<String> = as_array(json)
        .iter()
        .map(|l| {
            let name = l["ifname"].as_str().unwrap_or("?");
            let kind = l["linkinfo"]["info_kind"].as_str().unwrap_or("-");
            let up = as_array(&l["flags"]).iter().any(|f| f == "UP");
            let mut line = format!(
                "{name} {kind} {} mtu {}",
                if up { "up" } else { "down" },
                l["mtu"].as_u64().unwrap_or(0)
            );
            if let Some(master) = l["master"].as_str() {
                line.push_str(&format!(" master {master}"));
            }
            if l["link_type"] == "ether" {
                if let Some(mac) = l["address"].as_str() {
                    line.push_str(&format!(" ether {mac}"));
                }
            }
            if let Some(peer) = l["link"].as_str() {
                line.push_str(&format!(" link {peer}"));
            }
            let data = &l["linkinfo"]["info_data"];
            if let Some(mode) = data["mode"].as_str() {
                line.push_str(&format!(" mode {mode}"));
            }
            if let Some(id) = data["id"].as_u64() {
                line.push_str(&format!(" id {id}"));
            }
            line
        })
        .collect();
    lines.sort();
    lines
}

fn is_link_local6(addr: &str) -> bool {
    let a = addr.to_ascii_lowercase();
    a.starts_with("fe8") || a.starts_with("fe9") || a.starts_with("fea") || a.starts_with("feb")
}

fn address_lines(json: &serde_json::Value, skip_link_local6: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for link in as_array(json) {
        let name = link["ifname"].as_str().unwrap_or("?");
        for a in as_array(&link["addr_info"]) {
            let Some(local) = a["local"].as_str() else { continue };
            if skip_link_local6 && a["family"] == "inet6" && is_link_local6(local) {
                continue;
            }
            let plen = a["prefixlen"].as_u64().unwrap_or(0);
            match a["address"].as_str() {
                Some(peer) if peer != local => {
                    lines.push(format!("{name} {local} peer {peer}/{plen}"))
                }
                _ => lines.push(format!("{name} {local}/{plen}")),
            }
        }
    }
    lines.sort();
    lines
}

fn route_lines(v4: &str, v6: &str, skip_kernel_link_local6: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for (text, family6) in [(v4, false), (v6, true)] {
        for line in text.lines() {
            let mut tokens = Vec::new();
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                match word {
                    "linkdown" | "offload" | "trap" | "offload_failed" | "rt_offload"
                    | "rt_trap" | "rt_offload_failed" => {}
                    "expires" => {
                        words.next();
                    }
                    _ => tokens.push(word),
                }
            }
            if tokens.is_empty() {
                continue;
            }
            if skip_kernel_link_local6 && family6 {
                let dest = match tokens[0] {
                    "local" | "multicast" | "anycast" | "unicast" | "broadcast" => {
                        tokens.get(1).copied().unwrap_or("")
                    }
                    other => other,
                };
                if dest == "ff00::/8" || is_link_local6(dest) {
                    continue;
                }
            }
            lines.push(tokens.join(" "));
        }
    }
    lines.sort();
    lines
}

/// A namespace's links, addresses and routes at one moment (see [`Netns::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub links: Vec<String>,
    pub addresses: Vec<String>,
    pub routes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// LANs

/// A LAN: a "host" namespace with bridge `br0` carrying the gateway addresses
/// 198.18.N.1/24 (or the prefix [`Lan::bridge_with_prefix`] was given) and 2001:db8:N::1/64
/// (N = the subnet index, written in decimal in both). STP is off (the default) and multicast snooping off, so the bridge floods like a plain switch;
/// br0 has the fixed MAC 02:00:c6:12:NN:01 (so it does not follow its ports).
pub struct Lan {
    pub host: Netns,
    pub bridge: String,
    pub index: u8,
    pub gateway4: Ipv4Addr,
    pub gateway6: Ipv6Addr,
    /// `"198.18.N.0/24"` (or `/prefix4`)
    pub subnet4: &'static str,
    /// `"2001:db8:N::/64"`
    pub subnet6: &'static str,
    pub prefix4: u8,
    pub prefix6: u8,
}

/// The addressing of LAN number `index` with an IPv4 prefix of `prefix4` bits, shared by [`Lan`]
/// and [`MacvlanLan`].
fn lan_addressing(index: u8, prefix4: u8) -> (Ipv4Addr, Ipv6Addr, &'static str, &'static str) {
    let gateway4 = Ipv4Addr::new(198, 18, index, 1);
    let gateway6: Ipv6Addr = format!("2001:db8:{index}::1").parse().expect("valid IPv6");
    let subnet4: &'static str = Box::leak(format!("198.18.{index}.0/{prefix4}").into_boxed_str());
    let subnet6: &'static str = Box::leak(format!("2001:db8:{index}::/64").into_boxed_str());
    (gateway4, gateway6, subnet4, subnet6)
}

/// ip batch lines that make br0 with the gateway addresses (br0 left down).
fn bridge_commands(index: u8, prefix4: u8) -> String {
    format!(
        "link add br0 address 02:00:c6:12:{index:02x}:01 type bridge mcast_snooping 0\n\
         addr add 198.18.{index}.1/{prefix4} dev br0\n\
         addr add 2001:db8:{index}::1/64 dev br0 nodad\n"
    )
}

impl Lan {
    /// Builds the host namespace with br0 up and its gateway addresses (3 ip invocations).
    pub fn bridge(subnet_index: u8) -> Lan {
        Lan::bridge_with_prefix(subnet_index, 24)
    }

    /// [`Lan::bridge`] with a wider IPv4 subnet, 198.18.N.0/`prefix4` (16 to 24 bits), for more
    /// guests than a /24 holds: br0 carries 198.18.N.1/`prefix4`. N must start such a subnet (a
    /// multiple of 4 for a /22); the subnet covers the LAN numbers after N, which other lab LANs
    /// may use too, each in its own namespaces.
    pub fn bridge_with_prefix(subnet_index: u8, prefix4: u8) -> Lan {
        assert!(
            (16..=24).contains(&prefix4) && u32::from(subnet_index) % (1 << (24 - prefix4)) == 0,
            "198.18.{subnet_index}.0/{prefix4} is not a subnet of 198.18.0.0/16"
        );
        let host = Netns::new("host");
        host.ip_batch(&format!("{}link set br0 up", bridge_commands(subnet_index, prefix4)));
        let (gateway4, gateway6, subnet4, subnet6) = lan_addressing(subnet_index, prefix4);
        Lan {
            host,
            bridge: "br0".to_string(),
            index: subnet_index,
            gateway4,
            gateway6,
            subnet4,
            subnet6,
            prefix4,
            prefix6: 64,
        }
    }

    /// The macvlan world: see [`MacvlanLan`].
    pub fn with_uplink(subnet_index: u8) -> MacvlanLan {
        MacvlanLan::new(subnet_index)
    }

    /// An empty guest namespace (lo up).
    pub fn guest(&self, tag: &str) -> Netns {
        Netns::new(tag)
    }

    /// 198.18.N.`host`
    pub fn addr4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, host)
    }

    /// 2001:db8:N::`host` (host written in hex, as in an IPv6 literal)
    pub fn addr6(&self, host: u16) -> Ipv6Addr {
        format!("2001:db8:{}::{host:x}", self.index).parse().expect("valid IPv6")
    }

    /// Plugs `guest` into the bridge the way a test would by hand: a veth `port` on br0 (up) in
    /// the host namespace whose peer `ifname` (up) sits in the guest. Addresses are the
    /// caller's business. 2 ip invocations.
    pub fn plug(&self, guest: &Netns, port: &str, ifname: &str) {
        self.host.ip_batch(&format!(
            "link add {port} type veth peer name {ifname} netns {}\n\
             link set {port} master {} up",
            guest.name, self.bridge
        ));
        guest.ip(&["link", "set", ifname, "up"]);
    }

    /// Waits (bounded) until bridge port `port` is forwarding; a frame sent earlier may be lost.
    pub fn wait_forwarding(&self, port: &str, timeout: Duration) -> bool {
        port_forwarding_wait(&self.host, port, timeout)
    }
}

fn port_forwarding_wait(ns: &Netns, port: &str, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let out = Command::new("bridge")
            .args(["-j", "-n", &ns.name, "link", "show", "dev", port])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let json = parse_json(&out.stdout);
                as_array(&json).iter().any(|p| p["state"] == "forwarding")
            }
            _ => false,
        }
    })
}

/// The world for macvlan tests: a "host" namespace owning the "physical NIC" `uplink0` (up, no
/// address, MAC 02:00:c6:12:NN:02), a veth whose peer `lanport0` is a port of `br0` in a
/// separate "lan" namespace that carries the gateway addresses 198.18.N.1/24 and
/// 2001:db8:N::1/64. The host namespace has no bridge. Servers of the LAN (DHCP, radvd, a
/// reference neighbour) run in `lan`.
pub struct MacvlanLan {
    pub host: Netns,
    pub lan: Netns,
    /// `"uplink0"`, in `host`
    pub uplink: String,
    /// `"br0"`, in `lan`
    pub bridge: String,
    /// `"lanport0"`, uplink's peer on br0, in `lan`
    pub lan_port: String,
    pub index: u8,
    pub gateway4: Ipv4Addr,
    pub gateway6: Ipv6Addr,
    pub subnet4: &'static str,
    pub subnet6: &'static str,
    pub prefix4: u8,
    pub prefix6: u8,
}

impl MacvlanLan {
    /// 2 namespaces, 3 ip invocations.
    pub fn new(subnet_index: u8) -> MacvlanLan {
        let host = Netns::new("host");
        let lan = Netns::new("lan");
        lan.ip_batch(&format!(
            "{}link add lanport0 type veth peer name uplink0 address 02:00:c6:12:{subnet_index:02x}:02 netns {}\n\
             link set lanport0 master br0 up\n\
             link set br0 up",
            bridge_commands(subnet_index, 24),
            host.name
        ));
        host.ip(&["link", "set", "uplink0", "up"]);
        let (gateway4, gateway6, subnet4, subnet6) = lan_addressing(subnet_index, 24);
        MacvlanLan {
            host,
            lan,
            uplink: "uplink0".to_string(),
            bridge: "br0".to_string(),
            lan_port: "lanport0".to_string(),
            index: subnet_index,
            gateway4,
            gateway6,
            subnet4,
            subnet6,
            prefix4: 24,
            prefix6: 64,
        }
    }

    /// An empty guest namespace (lo up).
    pub fn guest(&self, tag: &str) -> Netns {
        Netns::new(tag)
    }

    /// 198.18.N.`host`
    pub fn addr4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, host)
    }

    /// 2001:db8:N::`host`
    pub fn addr6(&self, host: u16) -> Ipv6Addr {
        format!("2001:db8:{}::{host:x}", self.index).parse().expect("valid IPv6")
    }

    /// Waits (bounded) until `lanport0` forwards on br0.
    pub fn wait_forwarding(&self, timeout: Duration) -> bool {
        port_forwarding_wait(&self.lan, &self.lan_port, timeout)
    }
}

// ---------------------------------------------------------------------------------------------
// Scratch directories

/// The files in `dir`/state (lanyard's state directory in a test) but its lock and its index
/// (a cache of what the records claim, see tests/state.rs), sorted: tests compare them before
/// and after to prove nothing was left.
pub fn state_files(dir: &TestDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("state"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| n != "lock" && n != "index");
    names.sort();
    names
}

/// A scratch directory `/tmp/lanyard-test-<tag>-<runid>-<n>-<pid>`, removed on drop (mounts
/// under it are detached first; removal never crosses into another file system). A dead
/// owner's directory is swept by [`sweep_leftovers`], after killing every process whose command
/// line names it or whose pidfile in it (`*.pid`, "PID" or "PID STARTTICKS") says so.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        init();
        let path = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}-{}-{}",
            clean_tag(tag),
            run_id(),
            next_counter(),
            std::process::id()
        ));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TestDir { path }
    }

    /// [`TestDir::new`] with a tmpfs of its own mounted on it (unmounted on drop, and by the sweep
    /// after a killed run), whatever file system the temporary directory is on: for lanyard state
    /// where fsync costs nothing, as in a bench that times something else.
    pub fn on_tmpfs(tag: &str) -> TestDir {
        let dir = TestDir::new(tag);
        let target = std::ffi::CString::new(dir.path.as_os_str().as_encoded_bytes())
            .expect("no NUL in a scratch directory's path");
        let (source, fstype, data) = (c"tmpfs", c"tmpfs", c"mode=0700,size=256m");
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast())
        };
        if rc != 0 {
            panic!("mount a tmpfs on {}: {}", dir.path.display(), io::Error::last_os_error());
        }
        dir
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Records `pid` in `NAME.pid` as "PID STARTTICKS", which lets a sweep kill it safely.
    pub fn write_pidfile(&self, name: &str, pid: u32) {
        let start = proc_start_ticks(pid).unwrap_or(0);
        let _ = fs::write(self.path.join(format!("{name}.pid")), format!("{pid} {start}\n"));
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        remove_dir_tree(&self.path);
    }
}

/// Detaches every mount at or under `dir` (deepest first), then removes the tree without
/// crossing into other file systems.
fn remove_dir_tree(dir: &Path) {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in mounts {
        if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    if let Ok(meta) = fs::symlink_metadata(dir) {
        remove_same_fs(dir, meta.dev());
    }
}

fn remove_same_fs(path: &Path, dev: u64) {
    let Ok(meta) = fs::symlink_metadata(path) else { return };
    if meta.is_dir() {
        if meta.dev() != dev {
            return;
        }
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                remove_same_fs(&entry.path(), dev);
            }
        }
        let _ = fs::remove_dir(path);
    } else {
        let _ = fs::remove_file(path);
    }
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let dir = dir.as_os_str().as_encoded_bytes();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|m| {
            let b = m.as_os_str().as_encoded_bytes();
            b.starts_with(dir) && (b.len() == dir.len() || b[dir.len()] == b'/')
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

// ---------------------------------------------------------------------------------------------
// Sweeping what dead test processes left behind

/// Once per process (the lab calls it on first use): deletes namespaces `ly-<runid>-<pid>-*`
/// whose owner is gone (no such pid, or the pid now belongs to another process), kills the
/// processes of `/tmp/lanyard-test-*-<pid>` directories whose owner is gone (those whose
/// command line names the directory or whose pidfile there matches, and their descendants),
/// then removes those directories. Never touches anything of a live test process.
pub fn sweep_leftovers() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        sweep_namespaces();
        sweep_dirs();
    });
}

fn sweep_namespaces() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else { continue };
        let mut parts = rest.split('-');
        let (Some(run), Some(pid)) = (parts.next(), parts.next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !owner_alive(pid, run) {
            delete_netns(&entry.path());
        }
    }
}

/// Whether the process `pid` exists and started before `dir` was made (else the pid was
/// recycled and the directory's owner is dead).
fn dir_owner_alive(pid: u32, dir: &Path) -> bool {
    let Some(start) = proc_start_ticks(pid) else { return false };
    let Ok(created) = fs::metadata(dir).and_then(|m| m.created()) else { return true };
    let Some(started) =
        boot_time().map(|boot| boot + Duration::from_millis(start * 1000 / clock_ticks()))
    else {
        return true;
    };
    // Tick and boot-time rounding: allow a couple of seconds of slack.
    started <= created + Duration::from_secs(2)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of the times in `/proc/PID/stat`.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

fn boot_time() -> Option<SystemTime> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

struct ProcInfo {
    pid: u32,
    ppid: u32,
    start: u64,
    cmdline: Vec<u8>,
}

fn all_processes() -> Vec<ProcInfo> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields = proc_stat_fields(&stat)?;
            let ppid = fields.get(1)?.parse().ok()?;
            let start = fields.get(19)?.parse().ok()?;
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            Some(ProcInfo { pid, ppid, start, cmdline })
        })
        .collect()
}

/// `(pid, start ticks if recorded)` from `*.pid` / `pid` files up to 4 levels under `dir`.
fn pidfiles(dir: &Path, depth: u32, out: &mut Vec<(u32, Option<u64>)>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() && depth > 0 {
            pidfiles(&path, depth - 1, out);
        } else if kind.is_file() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.ends_with(".pid") || name == "pid") {
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else { continue };
            let mut words = text.split_whitespace();
            if let Some(Ok(pid)) = words.next().map(str::parse::<u32>) {
                out.push((pid, words.next().and_then(|s| s.parse().ok())));
            }
        }
    }
}

fn is_zombie_or_gone(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| proc_stat_fields(&s).map(|f| f.first() == Some(&"Z")))
        .unwrap_or(true)
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn sweep_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&tmp) else { return };
    let stale: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            let pid: u32 = name.strip_prefix(DIR_PREFIX)?.rsplit('-').next()?.parse().ok()?;
            let path = entry.path();
            (entry.file_type().ok()?.is_dir() && !dir_owner_alive(pid, &path)).then_some(path)
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    let me = std::process::id();
    let recorded: Vec<Vec<(u32, Option<u64>)>> = stale
        .iter()
        .map(|dir| {
            let mut found = Vec::new();
            pidfiles(dir, 4, &mut found);
            found
        })
        .collect();
    // Freeze first, pass by pass, so that nothing forks or gets reparented to init while we look
    // for descendants (containers under a leftover dockerd's shims, a shell's children); then
    // kill the frozen set.
    let mut doomed: Vec<u32> = Vec::new();
    for _pass in 0..10 {
        let procs = all_processes();
        let mut targets: Vec<u32> = doomed.clone();
        for (dir, recorded) in stale.iter().zip(&recorded) {
            let needle = dir.as_os_str().as_encoded_bytes();
            for p in &procs {
                let names_dir = contains_bytes(&p.cmdline, needle);
                let recorded_here =
                    recorded.iter().any(|&(pid, start)| pid == p.pid && start == Some(p.start));
                if (names_dir || recorded_here) && p.pid != me && !targets.contains(&p.pid) {
                    targets.push(p.pid);
                }
            }
        }
        loop {
            let before = targets.len();
            for p in &procs {
                if targets.contains(&p.ppid) && !targets.contains(&p.pid) && p.pid != me {
                    targets.push(p.pid);
                }
            }
            if targets.len() == before {
                break;
            }
        }
        let new: Vec<u32> = targets.into_iter().filter(|pid| !doomed.contains(pid)).collect();
        if new.is_empty() {
            break;
        }
        for &pid in &new {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        }
        doomed.extend(new);
    }
    for &pid in &doomed {
        // SAFETY: as above.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    wait_until(Duration::from_secs(3), || doomed.iter().all(|&pid| is_zombie_or_gone(pid)));
    for dir in &stale {
        remove_dir_tree(dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Background servers

/// A background process (dnsmasq, kea, radvd, tcpdump, a reference neighbour...) started inside
/// a namespace. It leads its own process group, gets SIGKILL when the spawning thread exits
/// (PR_SET_PDEATHSIG: in `cargo test` that is the end of the test), writes stdout and stderr to
/// `dir/server.log`, and is recorded in `dir/server.pid`. Drop kills the whole group and waits.
pub struct Server {
    child: Child,
    name: String,
    dir: TestDir,
}

impl Server {
    /// Starts `cmd` inside `ns` (stdin /dev/null) with a fresh scratch directory.
    pub fn start(ns: &Netns, cmd: &[&str]) -> Server {
        let name = cmd.first().map(|p| program_name(p)).unwrap_or_default();
        let dir = TestDir::new(&format!("srv-{name}"));
        Server::start_with_dir(ns, dir, cmd)
    }

    /// Starts `cmd` inside `ns` with `dir` (made beforehand, holding its config) as its scratch
    /// directory; the server owns and removes it.
    pub fn start_with_dir(ns: &Netns, dir: TestDir, cmd: &[&str]) -> Server {
        let (program, args) = cmd.split_first().expect("Server::start: empty command");
        let mut command = ns.command(program);
        command.args(args);
        Server::spawn_with_dir(command, &program_name(program), dir)
    }

    /// Starts a prepared command (e.g. from [`Netns::command`] with env set). Its stdin,
    /// stdout and stderr are replaced (null, log, log); process group and death signal added.
    pub fn spawn(command: Command, name: &str) -> Server {
        let dir = TestDir::new(&format!("srv-{name}"));
        Server::spawn_with_dir(command, name, dir)
    }

    /// [`Server::spawn`] with a scratch directory made beforehand.
    pub fn spawn_with_dir(mut command: Command, name: &str, dir: TestDir) -> Server {
        let log = File::create(dir.join("server.log")).expect("create server log");
        let log2 = log.try_clone().expect("dup server log");
        command.stdin(Stdio::null()).stdout(log).stderr(log2).process_group(0);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("start {name}: {e} (missing? run `sudo ./scripts/setup.sh`)")
        });
        dir.write_pidfile("server", child.id());
        Server { child, name: name.to_string(), dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's own scratch directory (put its config, lease and pid files here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        fs::read(self.dir.join("server.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`; panics with the log if the server
    /// exits or time runs out.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let mut exited = None;
        let found = wait_until(timeout, || {
            if self.log().contains(needle) {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return true;
            }
            false
        });
        if self.log().contains(needle) {
            return;
        }
        match exited {
            Some(status) => panic!(
                "{} exited ({status}) before printing {needle:?}:\n{}",
                self.name,
                self.log()
            ),
            None if !found => {
                panic!("{} did not print {needle:?} within {timeout:?}:\n{}", self.name, self.log())
            }
            None => unreachable!(),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` to the server's process group.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), signal) };
    }

    /// SIGTERM to the group, wait up to `timeout`, then SIGKILL. Returns the exit status.
    /// The server stays stopped (e.g. to test lease rebinding and expiry).
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        self.signal(libc::SIGTERM);
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        match status {
            Some(status) => status,
            None => {
                self.signal(libc::SIGKILL);
                self.child.wait().expect("wait for server")
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.kill();
        let child = &mut self.child;
        wait_until(Duration::from_secs(5), || !matches!(child.try_wait(), Ok(None)));
    }
}

// ---------------------------------------------------------------------------------------------
// Packet captures

fn program_name(program: &str) -> String {
    Path::new(program).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A running `tcpdump` inside a namespace writing a pcap file.
pub struct Capture {
    server: Server,
    file: PathBuf,
}

/// Starts `tcpdump -i IFNAME -n -e -U --immediate-mode -w FILE` inside `ns` and returns once
/// tcpdump says it is listening (bounded: 5 s). Used to assert e.g. "a gratuitous ARP for X
/// was seen on br0".
pub fn capture(ns: &Netns, ifname: &str) -> Capture {
    capture_filtered(ns, ifname, &[])
}

/// [`capture`] with a pcap filter, e.g. `&["arp", "or", "icmp6"]`.
pub fn capture_filtered(ns: &Netns, ifname: &str, filter: &[&str]) -> Capture {
    let dir = TestDir::new("cap");
    let file = dir.join("capture.pcap");
    let mut command = ns.command("tcpdump");
    command
        .args(["-i", ifname, "-n", "-e", "-l", "-U", "--immediate-mode", "-Z", "root", "-w"])
        .arg(&file)
        .args(filter);
    let mut server = Server::spawn_with_dir(command, "tcpdump", dir);
    server.wait_for_log("listening on", Duration::from_secs(5));
    Capture { server, file }
}

impl Capture {
    /// The pcap file tcpdump writes (removed with the capture), for a reader of its own.
    pub fn pcap(&self) -> &Path {
        &self.file
    }

    /// Decodes what was captured so far (`tcpdump -r FILE -n -e`); a half-written last packet
    /// is tolerated.
    pub fn text(&self) -> String {
        let out = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-n", "-e"])
            .stdin(Stdio::null())
            .output()
            .expect("spawn tcpdump -r");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Decodes what was captured so far verbosely (`tcpdump -r FILE -n -e -v`), one string per
    /// packet (its first line and the indented lines that follow), e.g. to see a DHCP packet's
    /// `Client-IP` and message type.
    pub fn packets_verbose(&self) -> Vec<String> {
        let out = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-n", "-e", "-v"])
            .stdin(Stdio::null())
            .output()
            .expect("spawn tcpdump -r");
        let mut packets: Vec<String> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            match packets.last_mut() {
                Some(packet) if line.starts_with(char::is_whitespace) => {
                    packet.push('\n');
                    packet.push_str(line);
                }
                _ => packets.push(line.to_string()),
            }
        }
        packets
    }

    /// When each captured packet whose line contains `needle` was seen, as a Unix time (the
    /// capture's own timestamps, `tcpdump -tt`): for bounds on when something happened that do
    /// not depend on how often the test looked.
    pub fn times_of(&self, needle: &str) -> Vec<SystemTime> {
        let out = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-n", "-e", "-tt"])
            .stdin(Stdio::null())
            .output()
            .expect("spawn tcpdump -r");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| line.contains(needle))
            .filter_map(|line| line.split_whitespace().next()?.parse::<f64>().ok())
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
            .collect()
    }

    /// Whether some captured line contains `needle`.
    pub fn seen(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }

    /// Waits (bounded) until some captured line contains `needle`, returning all text; panics
    /// with what was captured if it never shows up.
    pub fn expect(&self, needle: &str, timeout: Duration) -> String {
        let mut text = String::new();
        if wait_until(timeout, || {
            text = self.text();
            text.contains(needle)
        }) {
            return text;
        }
        panic!("capture never showed {needle:?} within {timeout:?}; captured:\n{text}");
    }

    /// Stops tcpdump (after a 50 ms grace for frames in flight) and returns the decoded text.
    pub fn stop(mut self) -> String {
        std::thread::sleep(Duration::from_millis(50));
        self.server.signal(libc::SIGINT);
        let _ = self.server.stop(Duration::from_secs(2));
        self.text()
    }
}

/// A process of the test's own (a server, a dockerd) stopped by SIGSTOP until this is dropped,
/// even when the test fails.
pub struct Stopped(i32);

impl Stopped {
    pub fn new(pid: i32) -> Stopped {
        // SAFETY: kill(2) on the pid of a process the test started itself.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "stop {pid}");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid stopped above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
