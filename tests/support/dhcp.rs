//! DHCP and router-advertisement servers for the lab, and a reference DHCP client.
//!
//! Every server runs inside a test namespace as a [`Server`] (own process group, SIGKILL when
//! the test's thread ends, killed on drop), keeps its config, log, lease and pid files in a
//! [`TestDir`] named after the run id and pid, and is waited for with bounded polls of its log.
//! The recipes were checked on Debian 12 (dnsmasq 2.90, Kea 2.2); the traps they avoid are
//! noted where they matter.
//!
//! - [`Dnsmasq`]: leases of two minutes and more, DNS options with [`Dnsmasq::start_with_dns`].
//! - [`Kea`]: leases of a few seconds (renewal, rebinding, expiry), RELEASE records, and NAKs by
//!   restarting it authoritative with a subnet that no longer holds the address.
//! - [`Radvd`]: router advertisements for SLAAC: RS answered at once, periodic RAs every 3-4 s.
//! - [`udhcpc`]: busybox udhcpc as a reference client, always with a script of our own (its
//!   default script rewrites /etc/resolv.conf).
//! - [`HostResolvConf`]: proof that the host's /etc/resolv.conf stayed byte for byte the same.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::lab::{wait_until, Lan, Netns, Server, TestDir};

/// How long a server may take to say it is ready before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A command that starts inside the namespace open as `ns` (what [`Netns::command`] does, for a
/// handle that outlives the borrow).
fn command_in(ns: &Arc<File>, program: &str) -> Command {
    let mut command = Command::new(program);
    let fd = Arc::clone(ns);
    // SAFETY: the closure only calls setns, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Waits (bounded) until the file `log` contains `needle`; panics with the log and the server's
/// own output if the server exits first or time runs out.
pub fn wait_for_file_log(server: &mut Server, log: &Path, needle: &str, timeout: Duration) {
    let mut exited = false;
    wait_until(timeout, || {
        if read_lossy(log).contains(needle) {
            return true;
        }
        exited = !server.is_running();
        exited
    });
    if read_lossy(log).contains(needle) {
        return;
    }
    panic!(
        "server {} {} {needle:?} in {}:\n{}\n--- its stdout/stderr:\n{}",
        server.pid(),
        if exited { "exited before printing" } else { "did not print within the timeout" },
        log.display(),
        read_lossy(log),
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// dnsmasq

/// `dnsmasq` serving DHCPv4 on one interface of a lab namespace (authoritative, `--no-ping`).
pub struct Dnsmasq {
    server: Server,
    /// The lease database (`--dhcp-leasefile`), see [`Dnsmasq::leases`].
    pub leases_file: PathBuf,
    /// dnsmasq's own log (`--log-dhcp --log-facility`), see [`Dnsmasq::log_text`].
    pub log: PathBuf,
    /// From spawn until the log said DHCP is up.
    pub startup: Duration,
}

/// One line of dnsmasq's lease file: `EXPIRY MAC IP HOSTNAME CLIENT-ID` (`*` = none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqLease {
    /// Unix time the lease ends (0 = infinite).
    pub expiry: u64,
    /// Lower case, colon separated.
    pub mac: String,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    /// Hex bytes, colon separated, e.g. `01:02:00:c6:12:28:10`.
    pub client_id: Option<String>,
}

impl Dnsmasq {
    /// DHCP only (`--port=0`: no DNS, so no DNS option unless `extra` adds
    /// `--dhcp-option=6,...`). `range` is the pool's first and last address, `lease` dnsmasq's
    /// lease time (`"2m"`, at least 2 minutes). `extra` are further dnsmasq arguments.
    pub fn start(
        ns: &Netns,
        iface: &str,
        range: (&str, &str),
        lease: &str,
        extra: &[&str],
    ) -> Self {
        Dnsmasq::start_in(TestDir::new("dnsmasq"), ns, iface, range, lease, extra)
    }

    /// [`Dnsmasq::start`] with its files (leases, log, pid) in `dir`, which it then owns. For
    /// timings, a [`TestDir::on_tmpfs`]: dnsmasq rewrites its lease file for every new lease, and
    /// with the file on ext4 its DISCOVER->OFFER plus REQUEST->ACK for a new lease took 1.65 ms
    /// instead of 0.30 ms on tmpfs (median of 20, this VM).
    pub fn start_in(
        dir: TestDir,
        ns: &Netns,
        iface: &str,
        range: (&str, &str),
        lease: &str,
        extra: &[&str],
    ) -> Self {
        let mut args = vec!["--port=0".to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Dnsmasq::start_args(dir, ns, iface, range, lease, &args)
    }

    /// DHCP and DNS: dnsmasq answers DNS on `iface`'s address (never reading the host's
    /// resolv.conf or hosts file) and hands out option 6 = that address, option 15 = `domain`
    /// and option 119 (search) = `domain`.
    pub fn start_with_dns(
        ns: &Netns,
        iface: &str,
        range: (&str, &str),
        lease: &str,
        domain: &str,
        extra: &[&str],
    ) -> Self {
        let mut args: Vec<String> = [
            "--no-resolv".to_string(),
            "--no-hosts".to_string(),
            "--no-poll".to_string(),
            format!("--domain={domain}"),
            format!("--dhcp-option=option:domain-search,{domain}"),
        ]
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        Dnsmasq::start_args(TestDir::new("dnsmasq"), ns, iface, range, lease, &args)
    }

    fn start_args(
        dir: TestDir,
        ns: &Netns,
        iface: &str,
        range: (&str, &str),
        lease: &str,
        extra: &[String],
    ) -> Self {
        let leases_file = dir.join("dnsmasq.leases");
        let log = dir.join("dnsmasq.log");
        let pid_file = dir.join("dnsmasq.pid");
        let mut args: Vec<String> = [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--except-interface=lo",
            "--dhcp-authoritative",
            "--no-ping",
            "--log-dhcp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--interface={iface}"));
        args.push(format!("--dhcp-range={},{},{lease}", range.0, range.1));
        args.push(format!("--dhcp-leasefile={}", leases_file.display()));
        args.push(format!("--pid-file={}", pid_file.display()));
        args.push(format!("--log-facility={}", log.display()));
        args.extend(extra.iter().cloned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let mut server = Server::start_with_dir(ns, dir, &argv);
        // "DHCP, IP range A -- B, lease time T" is logged once the DHCP socket is bound.
        wait_for_file_log(&mut server, &log, "DHCP, IP range", READY_TIMEOUT);
        let startup = started.elapsed();
        Dnsmasq { server, leases_file, log, startup }
    }

    /// The lease file as it is now (dnsmasq rewrites it on every change).
    pub fn leases(&self) -> Vec<DnsmasqLease> {
        read_lossy(&self.leases_file)
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 5 || f[0] == "duid" {
                    return None;
                }
                let opt = |s: &str| (s != "*").then(|| s.to_string());
                Some(DnsmasqLease {
                    expiry: f[0].parse().ok()?,
                    mac: f[1].to_ascii_lowercase(),
                    ip: f[2].parse().ok()?,
                    hostname: opt(f[3]),
                    client_id: opt(f[4]),
                })
            })
            .collect()
    }

    /// Waits (bounded) until the lease file holds `ip`, and returns that lease.
    pub fn wait_lease(&self, ip: Ipv4Addr, timeout: Duration) -> DnsmasqLease {
        let mut found = None;
        wait_until(timeout, || {
            found = self.leases().into_iter().find(|l| l.ip == ip);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "dnsmasq's lease file never showed {ip} within {timeout:?}:\n{}\n--- log:\n{}",
                read_lossy(&self.leases_file),
                self.log_text()
            )
        })
    }

    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// Waits (bounded) until dnsmasq logs a DHCPRELEASE of `ip` on `iface`; panics with its log
    /// when none comes within `timeout`.
    pub fn expect_release(&self, iface: &str, ip: Ipv4Addr, timeout: Duration) {
        let released = format!("DHCPRELEASE({iface}) {ip} ");
        assert!(
            wait_until(timeout, || self.log_text().contains(&released)),
            "dnsmasq saw no RELEASE of {ip}:\n{}",
            self.log_text()
        );
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// SIGTERM, then SIGKILL after 2 s; the files are removed.
    pub fn stop(mut self) {
        self.server.stop(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Kea

/// What a [`Kea`] instance serves: one subnet on one interface.
#[derive(Debug, Clone)]
pub struct KeaConfig {
    /// `"198.18.N.0/24"`
    pub subnet: String,
    /// First and last address of the pool.
    pub pool: (Ipv4Addr, Ipv4Addr),
    /// Lease time, T1 and T2 in seconds (options 51, 58, 59).
    pub valid: u32,
    pub renew: u32,
    pub rebind: u32,
    /// NAK requests for addresses it does not know (Kea's `authoritative`).
    pub authoritative: bool,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// Further `option-data` entries of the subnet, e.g.
    /// `json!({"name": "interface-mtu", "data": "1400"})`.
    pub options: Vec<serde_json::Value>,
    /// More top-level `Dhcp4` entries (e.g. [`super::bind::KeaDdns::kea4_settings`]), added
    /// as they are.
    pub dhcp4_extra: serde_json::Map<String, serde_json::Value>,
}

impl KeaConfig {
    /// LAN N's /24 with pool .50 - .250, routers and DNS = 198.18.N.1, lease 10 s, T1 3 s,
    /// T2 7 s, not authoritative.
    /// [`KeaConfig::short`] with these lease times (seconds): valid, T1, T2.
    pub fn timed(index: u8, valid: u32, renew: u32, rebind: u32) -> KeaConfig {
        KeaConfig { valid, renew, rebind, ..KeaConfig::short(index) }
    }

    pub fn short(index: u8) -> KeaConfig {
        let gw = Ipv4Addr::new(198, 18, index, 1);
        KeaConfig {
            subnet: format!("198.18.{index}.0/24"),
            pool: (Ipv4Addr::new(198, 18, index, 50), Ipv4Addr::new(198, 18, index, 250)),
            valid: 10,
            renew: 3,
            rebind: 7,
            authoritative: false,
            routers: vec![gw],
            dns: vec![gw],
            domain: None,
            options: Vec::new(),
            dhcp4_extra: serde_json::Map::new(),
        }
    }

    fn to_json(&self, iface: &str, leases: &Path, log: &Path) -> serde_json::Value {
        let list =
            |addrs: &[Ipv4Addr]| addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        let mut options = Vec::new();
        if !self.routers.is_empty() {
            options.push(json!({"name": "routers", "data": list(&self.routers)}));
        }
        if !self.dns.is_empty() {
            options.push(json!({"name": "domain-name-servers", "data": list(&self.dns)}));
        }
        if let Some(domain) = &self.domain {
            options.push(json!({"name": "domain-name", "data": domain}));
        }
        options.extend(self.options.iter().cloned());
        let mut dhcp4 = json!({
            "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "raw"},
            "lease-database": {
                "type": "memfile", "persist": true, "lfc-interval": 0,
                "name": leases.to_string_lossy(),
            },
            "valid-lifetime": self.valid,
            "renew-timer": self.renew,
            "rebind-timer": self.rebind,
            "authoritative": self.authoritative,
            "subnet4": [{
                "id": 1,
                "subnet": self.subnet,
                "pools": [{"pool": format!("{} - {}", self.pool.0, self.pool.1)}],
                "option-data": options,
            }],
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{"output": log.to_string_lossy(), "flush": true}],
                "severity": "INFO",
            }],
        });
        if let Some(object) = dhcp4.as_object_mut() {
            object.extend(self.dhcp4_extra.clone());
        }
        json!({ "Dhcp4": dhcp4 })
    }
}

/// One line of Kea's memfile lease CSV. Kea appends one per grant and renewal; a RELEASE (or the
/// deletion of a reclaimed lease) appends one with `valid_lifetime` 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeaLeaseLine {
    pub address: Ipv4Addr,
    /// Lower case, colon separated.
    pub hwaddr: String,
    /// Hex bytes, colon separated (empty when the client sent none).
    pub client_id: String,
    pub valid_lifetime: u64,
    /// Unix time.
    pub expire: u64,
    pub hostname: String,
    /// 0 default, 1 declined, 2 expired-reclaimed.
    pub state: u32,
}

/// `kea-dhcp4` with a memfile lease CSV that survives [`Kea::stop`] / [`Kea::restart`].
pub struct Kea {
    // Declared before `dir`: the process dies before its files go.
    server: Option<Server>,
    /// The namespace, held open so that [`Kea::restart`] can enter it again.
    ns_file: Arc<File>,
    ns_name: String,
    iface: String,
    dir: TestDir,
    pub config: KeaConfig,
    /// The memfile lease CSV (kept across restarts).
    pub leases_file: PathBuf,
    /// Kea's log (all starts append to it).
    pub log: PathBuf,
    /// From spawn until the log said DHCP4_STARTED, for the latest start.
    pub startup: Duration,
    starts: u32,
}

impl Kea {
    pub fn start(ns: &Netns, iface: &str, config: KeaConfig) -> Kea {
        let dir = TestDir::new("kea");
        let mut kea = Kea {
            server: None,
            ns_file: Arc::new(
                File::open(&ns.path).unwrap_or_else(|e| panic!("open {}: {e}", ns.path.display())),
            ),
            ns_name: ns.name.clone(),
            iface: iface.to_string(),
            leases_file: dir.join("kea-leases4.csv"),
            log: dir.join("kea.log"),
            dir,
            config,
            startup: Duration::ZERO,
            starts: 0,
        };
        kea.spawn();
        kea
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let config = self.dir.join(format!("kea-dhcp4-{}.json", self.starts));
        let json = self.config.to_json(&self.iface, &self.leases_file, &self.log);
        fs::write(&config, serde_json::to_string_pretty(&json).expect("kea json"))
            .expect("write kea config");
        // Own pid and lock directories: instances whose configs share a file name would
        // otherwise collide on one pid file and the second would exit.
        let run = self.dir.join(format!("run-{}", self.starts));
        fs::create_dir(&run).expect("create kea run dir");
        let mut command = command_in(&self.ns_file, "kea-dhcp4");
        command.arg("-c").arg(&config).env("KEA_PIDFILE_DIR", &run).env("KEA_LOCKFILE_DIR", &run);
        // Everything logged before this start is history.
        let before = read_lossy(&self.log).matches("DHCP4_STARTED").count();
        let started = Instant::now();
        let mut server = Server::spawn(command, "kea-dhcp4");
        self.dir.write_pidfile(&format!("kea-{}", self.starts), server.pid());
        let log = self.log.clone();
        let mut exited = false;
        wait_until(READY_TIMEOUT, || {
            if read_lossy(&log).matches("DHCP4_STARTED").count() > before {
                return true;
            }
            exited = !server.is_running();
            exited
        });
        if read_lossy(&log).matches("DHCP4_STARTED").count() <= before {
            panic!(
                "kea-dhcp4 in {} {} (start {}):\n{}\n--- its stdout/stderr:\n{}",
                self.ns_name,
                if exited { "exited before DHCP4_STARTED" } else { "not started in time" },
                self.starts,
                read_lossy(&log),
                server.log()
            );
        }
        self.startup = started.elapsed();
        self.server = Some(server);
    }

    /// The lease CSV, one entry per line Kea appended (grants, renewals, releases).
    pub fn lease_lines(&self) -> Vec<KeaLeaseLine> {
        let text = read_lossy(&self.leases_file);
        let mut lines = text.lines();
        let Some(header) = lines.next() else { return Vec::new() };
        let cols: Vec<&str> = header.split(',').collect();
        let col = |name: &str| cols.iter().position(|c| *c == name);
        let (Some(address), Some(hwaddr), Some(client_id), Some(valid), Some(expire)) =
            (col("address"), col("hwaddr"), col("client_id"), col("valid_lifetime"), col("expire"))
        else {
            panic!("unexpected Kea lease CSV header: {header}");
        };
        let (hostname, state) = (col("hostname"), col("state"));
        lines
            .filter_map(|line| {
                // Kea escapes commas inside fields as "&#x2c".
                let f: Vec<&str> = line.split(',').collect();
                let get = |i: Option<usize>| i.and_then(|i| f.get(i)).copied().unwrap_or("");
                Some(KeaLeaseLine {
                    address: get(Some(address)).parse().ok()?,
                    hwaddr: get(Some(hwaddr)).to_ascii_lowercase(),
                    client_id: get(Some(client_id)).to_ascii_lowercase(),
                    valid_lifetime: get(Some(valid)).parse().ok()?,
                    expire: get(Some(expire)).parse().ok()?,
                    hostname: get(hostname).replace("&#x2c", ","),
                    state: get(state).parse().unwrap_or(0),
                })
            })
            .collect()
    }

    /// Lines granting `address` (valid lifetime > 0, state default): the first grant plus
    /// every renewal.
    pub fn grants_of(&self, address: Ipv4Addr) -> usize {
        self.lease_lines()
            .iter()
            .filter(|l| l.address == address && l.valid_lifetime > 0 && l.state == 0)
            .count()
    }

    /// Renewals of `address` recorded so far (grants after the first).
    pub fn renewals_of(&self, address: Ipv4Addr) -> usize {
        self.grants_of(address).saturating_sub(1)
    }

    /// Whether the latest line for `address` has valid lifetime 0 (RELEASE, or deletion).
    pub fn released(&self, address: Ipv4Addr) -> bool {
        self.lease_lines()
            .iter()
            .rev()
            .find(|l| l.address == address)
            .is_some_and(|l| l.valid_lifetime == 0)
    }

    /// Waits (bounded) until `cond` holds for the lease lines; panics with the CSV and log.
    pub fn wait_lines(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&[KeaLeaseLine]) -> bool,
    ) {
        if !wait_until(timeout, || cond(&self.lease_lines())) {
            panic!(
                "Kea's lease CSV never showed {what} within {timeout:?}:\n{}\n--- log:\n{}",
                read_lossy(&self.leases_file),
                self.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    pub fn is_running(&mut self) -> bool {
        self.server.as_mut().is_some_and(Server::is_running)
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Server::pid)
    }

    /// Stops the server (SIGTERM, SIGKILL after 2 s); the lease CSV stays. Mid-lease, this is
    /// how to send a client into REBINDING and expiry.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop(Duration::from_secs(2));
        }
    }

    /// Stops (if running) and starts again with `config` and the same lease CSV. For a NAK:
    /// `authoritative: true` and a subnet that no longer holds the client's address (an empty
    /// lease file with another pool is not enough: Kea 2.2 silently drops that RENEW).
    pub fn restart(&mut self, config: KeaConfig) {
        self.stop();
        self.config = config;
        self.spawn();
    }
}

impl Drop for Kea {
    fn drop(&mut self) {
        // Server's own drop kills the group and waits; it must go before `dir`.
        self.server.take();
    }
}

// ---------------------------------------------------------------------------------------------
// radvd

/// `radvd` advertising one /64 (on-link, autonomous) on one interface, every 1-3 s.
pub struct Radvd {
    server: Server,
    pub prefix: String,
    pub log: PathBuf,
    /// From spawn until radvd wrote its pid file (it has read its config and opened its socket).
    pub startup: Duration,
}

impl Radvd {
    /// Turns IPv6 forwarding on inside `ns` (radvd wants it; only that namespace) and DAD off
    /// on `iface`, then starts radvd on `iface` with `prefix` (`"2001:db8:N::/64"`).
    /// Ready means radvd has read its config and written its pid file; on a bridge without
    /// ports (no carrier) it starts advertising once the first port comes up, and it answers
    /// router solicitations at once (at most one RA per 3 s, radvd's MinDelayBetweenRAs).
    pub fn start(ns: &Netns, iface: &str, prefix: &str) -> Radvd {
        Radvd::start_with_lifetimes(ns, iface, prefix, None)
    }

    /// [`Radvd::start`] advertising the prefix with `(valid, preferred)` lifetimes in seconds
    /// (radvd's defaults otherwise): a guest's address from it expires that long after radvd
    /// stops.
    pub fn start_with_lifetimes(
        ns: &Netns,
        iface: &str,
        prefix: &str,
        lifetimes: Option<(u32, u32)>,
    ) -> Radvd {
        let lifetimes = lifetimes.map_or_else(String::new, |(valid, preferred)| {
            format!("\t\tAdvValidLifetime {valid};\n\t\tAdvPreferredLifetime {preferred};\n")
        });
        ns.sysctl("net/ipv6/conf/all/forwarding", "1");
        // No DAD on the advertising interface (the lab's global addresses are `nodad` too):
        // while its link-local address is tentative radvd cannot send (sendmsg EINVAL), so an
        // RS answered then is lost and the guest waits for the next periodic RA, 3-4 s later.
        // A bridge gets its link-local address with its first port, so this takes effect when
        // radvd starts before the guests are plugged.
        ns.sysctl(&format!("net/ipv6/conf/{iface}/accept_dad"), "0");
        let dir = TestDir::new("radvd");
        let conf = dir.join("radvd.conf");
        let log = dir.join("radvd.log");
        let pid_file = dir.join("radvd.pidfile");
        fs::write(
            &conf,
            format!(
                "interface {iface} {{\n\
                 \tAdvSendAdvert on;\n\
                 \tMinRtrAdvInterval 3;\n\
                 \tMaxRtrAdvInterval 4;\n\
                 \tprefix {prefix} {{\n\
                 \t\tAdvOnLink on;\n\
                 \t\tAdvAutonomous on;\n\
                 {lifetimes}\
                 \t}};\n\
                 }};\n"
            ),
        )
        .expect("write radvd.conf");
        // radvd never reaps its privsep child, which so ends as a zombie of init (reaped only
        // seconds later, and `pgrep -x radvd` sees it). As init of a PID namespace of its own,
        // its exit makes the kernel kill and reap that child; `unshare` reaps radvd.
        // (Not `radvd.pid`: inside the namespace radvd writes pid 1.)
        let mut command = ns.command("unshare");
        command
            .args(["--pid", "--fork", "--kill-child", "radvd", "-n", "-C"])
            .arg(&conf)
            .arg("-p")
            .arg(&pid_file)
            .args(["-m", "logfile", "-l"])
            .arg(&log)
            .args(["-d", "3"]);
        let started = Instant::now();
        let mut server = Server::spawn_with_dir(command, "radvd", dir);
        let mut exited = false;
        let ready = |p: &Path| read_lossy(p).trim().parse::<u32>().is_ok();
        wait_until(READY_TIMEOUT, || {
            if ready(&pid_file) {
                return true;
            }
            exited = !server.is_running();
            exited
        });
        if !ready(&pid_file) {
            panic!(
                "radvd {}:\n{}\n--- its stdout/stderr:\n{}",
                if exited { "exited before writing its pid file" } else { "not ready in time" },
                read_lossy(&log),
                server.log()
            );
        }
        Radvd { server, prefix: prefix.to_string(), log, startup: started.elapsed() }
    }

    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// The pid of the `unshare` that runs radvd.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// SIGTERM (radvd exits, the kernel reaps its privsep child, `unshare` reaps radvd), SIGKILL
    /// after 2 s. Drop does the same.
    pub fn stop(mut self) {
        self.server.stop(Duration::from_secs(2));
    }
}

impl Drop for Radvd {
    fn drop(&mut self) {
        // Gracefully first: a group SIGKILL could leave radvd a zombie of init.
        self.server.stop(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Reference client: busybox udhcpc, with a script of our own

/// What busybox udhcpc got: the environment its script saw on `bound`.
#[derive(Debug, Clone)]
pub struct UdhcpcLease {
    /// `ip`, `subnet`, `mask`, `router`, `dns`, `domain`, `search`, `lease`, `serverid`,
    /// `interface`, ... as udhcpc passes them.
    pub env: BTreeMap<String, String>,
    /// Wall time of the whole udhcpc run.
    pub elapsed: Duration,
}

impl UdhcpcLease {
    pub fn ip(&self) -> Ipv4Addr {
        self.env.get("ip").and_then(|s| s.parse().ok()).expect("udhcpc gave no ip")
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }
}

/// Runs `busybox udhcpc -f -q -n -t 3 -T 2 -i IFNAME -s OUR_SCRIPT EXTRA...` inside `guest`
/// (never its default script, which rewrites /etc/resolv.conf) with a minimal environment. The
/// script only records its environment; with `configure` it also adds the address
/// (`ip addr add IP/SUBNET`) on `bound`. Without a lease (no answer within ~6 s, a NAK...)
/// the error holds udhcpc's exit status and output. Extra arguments: `-x hostname:NAME`,
/// `-r IP` (ask for IP), `-O search` (request option 119), `-C` (no client id)...
pub fn udhcpc(
    guest: &Netns,
    ifname: &str,
    configure: bool,
    extra: &[&str],
) -> Result<UdhcpcLease, String> {
    let dir = TestDir::new("udhcpc");
    let script = dir.join("script.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             # Records the environment per event; never touches resolv.conf.\n\
             env > '{dir}'/\"$1\".env\n\
             if [ \"$1\" = bound ] && [ '{configure}' = 1 ]; then\n\
             \tip addr add \"$ip/$subnet\" dev \"$interface\" || exit 1\n\
             fi\n\
             exit 0\n",
            dir = dir.path().display(),
            configure = u8::from(configure),
        ),
    )
    .expect("write udhcpc script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).expect("chmod script");
    let mut command: Command = guest.command("busybox");
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args(["udhcpc", "-f", "-q", "-n", "-t", "3", "-T", "2", "-i", ifname, "-s"])
        .arg(&script)
        .args(extra)
        .stdin(Stdio::null());
    let started = Instant::now();
    let out = command.output().expect("spawn busybox udhcpc");
    let elapsed = started.elapsed();
    let bound = read_lossy(&dir.join("bound.env"));
    if !out.status.success() || bound.is_empty() {
        return Err(format!(
            "udhcpc in {} got no lease ({}, {elapsed:?}):\n{}{}",
            guest.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let env = bound
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(UdhcpcLease { env, elapsed })
}

// ---------------------------------------------------------------------------------------------
// The host's /etc/resolv.conf

/// The host's /etc/resolv.conf at one moment: its bytes, and its symlink target if it is one.
/// [`HostResolvConf::assert_unchanged`] (also run on drop unless the test is already
/// panicking) fails the test if either changed. Changed bytes are written back first (in
/// place, through the symlink), also when the test fails for another reason: a broken test must
/// not leave the machine with a damaged resolver configuration.
pub struct HostResolvConf {
    path: PathBuf,
    link: Option<PathBuf>,
    bytes: Option<Vec<u8>>,
    checked: bool,
}

const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

impl HostResolvConf {
    pub fn snapshot() -> HostResolvConf {
        HostResolvConf::snapshot_of(Path::new(HOST_RESOLV_CONF))
    }

    /// The same guard over another file (to test the guard without touching the host's).
    pub fn snapshot_of(path: &Path) -> HostResolvConf {
        HostResolvConf {
            path: path.to_path_buf(),
            link: fs::read_link(path).ok(),
            bytes: fs::read(path).ok(),
            checked: false,
        }
    }

    /// Writes the old bytes back if they changed; says what it did, `None` if nothing changed.
    fn restore(&self) -> Option<String> {
        let now = fs::read(&self.path).ok();
        if now == self.bytes {
            return None;
        }
        let what = match &self.bytes {
            Some(bytes) => match fs::write(&self.path, bytes) {
                Ok(()) => "its old bytes were written back".to_string(),
                Err(e) => format!("writing its old bytes back FAILED ({e}): restore it by hand"),
            },
            None => "it did not exist before: remove it by hand".to_string(),
        };
        Some(format!(
            "{} changed!\nbefore:\n{}\nnow:\n{}\n({what})",
            self.path.display(),
            String::from_utf8_lossy(self.bytes.as_deref().unwrap_or(b"<missing>")),
            String::from_utf8_lossy(now.as_deref().unwrap_or(b"<missing>"))
        ))
    }

    pub fn assert_unchanged(&mut self) {
        self.checked = true;
        if let Some(report) = self.restore() {
            panic!("{report}");
        }
        let link = fs::read_link(&self.path).ok();
        assert_eq!(link, self.link, "the symlink {} changed", self.path.display());
    }
}

impl Drop for HostResolvConf {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_unchanged();
        } else if let Some(report) = self.restore() {
            // Still restore and say so when the test failed for another reason.
            eprintln!("ALSO: {report}");
        }
    }
}

/// A LAN whose bridge already has a port (and so carrier): Kea skips an interface that is not
/// running when it starts. The neighbour namespace must live as long as the LAN is used.
pub fn kea_lan(index: u8) -> (Lan, Netns) {
    let lan = Lan::bridge(index);
    let neighbour = lan.guest("neighbour");
    lan.plug(&neighbour, "neighbour0", "eth0");
    assert!(lan.wait_forwarding("neighbour0", Duration::from_secs(3)));
    (lan, neighbour)
}
