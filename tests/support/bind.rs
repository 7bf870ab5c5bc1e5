//! BIND 9 (`named`) and Kea's DDNS daemon (`kea-dhcp-ddns`) inside a lab namespace, for the DNS
//! update tests.
//!
//! Each runs as a [`Server`] (own process group, SIGKILL when the test's thread ends, killed on
//! drop) with its config in the caller's [`TestDir`]; the command line names that directory, so a
//! run killed half-way has its named and kea-dhcp-ddns killed by the next run's sweep. Checked on
//! Debian 12 (BIND 9.18, Kea 2.2).

use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;

use super::dhcp::wait_for_file_log;
use super::lab::{Netns, Server, TestDir};

/// How long named or kea-dhcp-ddns may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A TSIG key file made by `tsig-keygen -a hmac-sha256 NAME` (BIND's format, which both named's
/// `include` and lanyard's `tsig_key_file` read).
#[derive(Debug, Clone)]
pub struct TsigKeyFile {
    pub path: PathBuf,
    /// The key's name, e.g. `ddns`.
    pub name: String,
    /// Base64, as in the file.
    pub secret: String,
}

impl TsigKeyFile {
    /// A new random key called `name`, written to `dir/FILE`. Two calls with the same `name`
    /// give two keys of the same name and different secrets (a "wrong key").
    pub fn generate(dir: &TestDir, file: &str, name: &str) -> TsigKeyFile {
        let out = std::process::Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", name])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("run tsig-keygen: {e} (missing? run `sudo ./scripts/setup.sh`)")
            });
        assert!(out.status.success(), "tsig-keygen: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).expect("tsig-keygen prints ASCII");
        let secret = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("secret \"")?.strip_suffix("\";"))
            .unwrap_or_else(|| panic!("no secret in tsig-keygen's output:\n{text}"))
            .to_string();
        let path = dir.join(file);
        fs::write(&path, &text).expect("write the key file");
        TsigKeyFile { path, name: name.to_string(), secret }
    }
}

/// What every zone starts with: its SOA and an NS outside every zone (no glue needed).
const ZONE_START: &str =
    "$TTL 60\n@ IN SOA ns.lab. hostmaster.lab. 1 3600 600 86400 60\n@ IN NS ns.lab.\n";

/// A zone named serves as primary.
#[derive(Debug, Clone)]
pub struct BindZone {
    /// e.g. `app.lan` or `18.198.in-addr.arpa`.
    pub name: String,
    /// Updates allowed (by the key when there is one, else from anyone); else named refuses them
    /// (REFUSED).
    pub updatable: bool,
}

impl BindZone {
    pub fn updatable(name: &str) -> BindZone {
        BindZone { name: name.to_string(), updatable: true }
    }

    pub fn read_only(name: &str) -> BindZone {
        BindZone { name: name.to_string(), updatable: false }
    }
}

/// `named -g` serving primary zones on `listen:53` inside a lab namespace, with no recursion.
pub struct Bind {
    server: Option<Server>,
    pub listen: Ipv4Addr,
    config: PathBuf,
    ns_name: String,
    /// From spawn until named logged "running", for the latest start.
    pub startup: Duration,
}

impl Bind {
    /// Every zone in `zones` updatable (by `key` if given).
    pub fn start(
        ns: &Netns,
        dir: &TestDir,
        listen: Ipv4Addr,
        zones: &[&str],
        key: Option<&TsigKeyFile>,
    ) -> Bind {
        let zones: Vec<BindZone> = zones.iter().map(|z| BindZone::updatable(z)).collect();
        Bind::start_zones(ns, dir, listen, &zones, key)
    }

    /// Each zone starts with its SOA and an NS (`ns.lab.`, outside every zone so no glue is
    /// needed); updates that named accepts go to a journal beside the zone file in `dir`.
    pub fn start_zones(
        ns: &Netns,
        dir: &TestDir,
        listen: Ipv4Addr,
        zones: &[BindZone],
        key: Option<&TsigKeyFile>,
    ) -> Bind {
        let d = dir.path().display();
        let mut conf = String::new();
        if let Some(key) = key {
            conf.push_str(&format!("include \"{}\";\n", key.path.display()));
        }
        conf.push_str(&format!(
            "options {{\n\tdirectory \"{d}\";\n\tpid-file \"{d}/named.pid\";\n\
             \tsession-keyfile \"{d}/session.key\";\n\tmanaged-keys-directory \"{d}\";\n\
             \tlisten-on port 53 {{ {listen}; }};\n\tlisten-on-v6 {{ none; }};\n\
             \trecursion no;\n\tdnssec-validation no;\n\tnotify no;\n}};\ncontrols {{ }};\n"
        ));
        for zone in zones {
            let file = dir.join(format!("{}.db", zone.name));
            fs::write(&file, ZONE_START).expect("write zone file");
            let allow = match (zone.updatable, key) {
                (false, _) => "none".to_string(),
                (true, Some(key)) => format!("key \"{}\"", key.name),
                (true, None) => "any".to_string(),
            };
            conf.push_str(&format!(
                "zone \"{}\" {{ type primary; file \"{}\"; allow-update {{ {allow}; }}; }};\n",
                zone.name,
                file.display()
            ));
        }
        let config = dir.join("named.conf");
        fs::write(&config, conf).expect("write named.conf");
        let mut bind = Bind {
            server: None,
            listen,
            config,
            ns_name: ns.name.clone(),
            startup: Duration::ZERO,
        };
        bind.spawn(ns);
        bind
    }

    fn spawn(&mut self, ns: &Netns) {
        assert_eq!(ns.name, self.ns_name, "restart named in the namespace it was started in");
        let mut command = ns.command("named");
        // -g: foreground, log to stderr; -c: our config (its path names the test's directory,
        // which lets a sweep find a leftover named).
        command.arg("-g").arg("-c").arg(&self.config);
        let started = Instant::now();
        let mut server = Server::spawn(command, "named");
        // named logs "<date> <time> running" once every zone is loaded and it listens (and
        // "running as: named ..." when it starts, which the line end tells apart).
        server.wait_for_log(" running\n", READY_TIMEOUT);
        self.startup = started.elapsed();
        self.server = Some(server);
    }

    /// Stops named (SIGTERM, then SIGKILL): the server is down until [`Bind::restart`].
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop(Duration::from_secs(5));
        }
    }

    /// Starts named again with the same config; the zones keep what their journals hold.
    pub fn restart(&mut self, ns: &Netns) {
        self.stop();
        self.spawn(ns);
    }

    /// named's pid (while it runs), e.g. for [`super::lab::Stopped`].
    pub fn pid(&self) -> u32 {
        self.server.as_ref().expect("named is running").pid()
    }

    /// named's output so far (empty while stopped).
    pub fn log(&self) -> String {
        self.server.as_ref().map(Server::log).unwrap_or_default()
    }

    /// `dig +short +norecurse @LISTEN NAME TYPE` run inside `ns`: the answer's records, one
    /// string each as dig prints them (e.g. `198.18.0.5`, `web.app.lan.`), sorted. Panics if
    /// dig fails (no answer within 2 s), so "no records" is a real empty answer.
    pub fn query(&self, ns: &Netns, name: &str, rtype: &str) -> Vec<String> {
        let server = format!("@{}", self.listen);
        let out =
            ns.exec(&["dig", "+short", "+norecurse", "+time=2", "+tries=1", &server, name, rtype]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains(";; ") {
            panic!(
                "dig {server} {name} {rtype} in {} failed ({}): {text}{}\n--- named:\n{}",
                ns.name,
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        let mut records: Vec<String> = text.lines().map(str::to_string).collect();
        records.sort();
        records
    }

    /// [`Bind::query`] without starting a process: one UDP query from a thread inside `ns`
    /// (hickory-proto encodes and decodes it), for timings where dig's own start-up (30-100 ms
    /// on this loaded VM) would be most of what is measured. Records as their RDATA prints
    /// (`198.18.0.5`, `web.app.lan.`), sorted; panics without an answer within 2 s.
    pub fn query_udp(&self, ns: &Netns, name: &str, rtype: RecordType) -> Vec<String> {
        let server = std::net::SocketAddr::from((self.listen, 53));
        let mut query = Message::query();
        query.metadata.recursion_desired = false;
        query.add_query(Query::query(Name::from_ascii(name).expect("a DNS name"), rtype));
        let id = query.metadata.id;
        let request = query.to_vec().expect("encode the query");
        let answer = ns.run_in(|| {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind a UDP socket");
            socket.connect(server).expect("connect the UDP socket");
            socket.send(&request).expect("send the query");
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut buf = vec![0u8; 65535];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "no answer from named at {server} to {name} {rtype}");
                socket.set_read_timeout(Some(left)).expect("set a read timeout");
                let n = match socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        panic!("no answer from named at {server} to {name} {rtype} within 2 s")
                    }
                    Err(e) => panic!("receive the answer to {name} {rtype} from {server}: {e}"),
                };
                match Message::from_vec(&buf[..n]) {
                    Ok(answer) if answer.metadata.id == id => return answer,
                    _ => continue,
                }
            }
        });
        let mut records: Vec<String> = answer
            .answers
            .iter()
            .filter(|r| r.record_type() == rtype)
            .map(|r| r.data.to_string())
            .collect();
        records.sort();
        records
    }
}

/// `kea-dhcp-ddns` (Kea's D2) listening for name change requests from kea-dhcp4 on
/// `127.0.0.1:PORT` inside the namespace, and sending the updates to a [`Bind`] with a TSIG key.
pub struct KeaDdns {
    server: Server,
    /// Where kea-dhcp4's `dhcp-ddns` section must send its requests.
    pub port: u16,
    /// D2's own log file.
    pub log: PathBuf,
}

impl KeaDdns {
    /// `forward` is the forward zone (e.g. `app.lan`), `reverse` the reverse zones (e.g.
    /// `18.198.in-addr.arpa`); all of them served by `bind` and updated with `key`.
    pub fn start(
        ns: &Netns,
        dir: &TestDir,
        bind: &Bind,
        forward: &str,
        reverse: &[&str],
        key: &TsigKeyFile,
        port: u16,
    ) -> KeaDdns {
        let dns_server = json!([{"ip-address": bind.listen.to_string(), "port": 53}]);
        let domain = |zone: &str| json!({"name": format!("{zone}."), "key-name": key.name, "dns-servers": dns_server});
        let log = dir.join("kea-dhcp-ddns.log");
        let config = json!({"DhcpDdns": {
            "ip-address": "127.0.0.1",
            "port": port,
            "dns-server-timeout": 1000,
            "tsig-keys": [{"name": key.name, "algorithm": "HMAC-SHA256", "secret": key.secret}],
            "forward-ddns": {"ddns-domains": [domain(forward)]},
            "reverse-ddns": {"ddns-domains": reverse.iter().map(|z| domain(z)).collect::<Vec<_>>()},
            "loggers": [{
                "name": "kea-dhcp-ddns",
                "output_options": [{"output": log.to_string_lossy(), "flush": true}],
                "severity": "DEBUG",
                "debuglevel": 40,
            }],
        }});
        let path = dir.join("kea-dhcp-ddns.json");
        fs::write(&path, serde_json::to_string_pretty(&config).expect("d2 json"))
            .expect("write d2 config");
        // Own pid and lock directories (as for kea-dhcp4 in support/dhcp.rs).
        let run = dir.join("d2-run");
        fs::create_dir_all(&run).expect("create d2 run dir");
        let mut command = ns.command("kea-dhcp-ddns");
        command.arg("-c").arg(&path).env("KEA_PIDFILE_DIR", &run).env("KEA_LOCKFILE_DIR", &run);
        let mut server = Server::spawn(command, "kea-dhcp-ddns");
        wait_for_file_log(&mut server, &log, "DHCP_DDNS_STARTED", READY_TIMEOUT);
        KeaDdns { server, port, log }
    }

    /// The `dhcp-ddns` section and the DDNS parameters a kea-dhcp4 config needs to hand its
    /// leases' names to this D2 (the names qualified with `suffix`, e.g. `app.lan`).
    pub fn kea4_settings(&self, suffix: &str) -> serde_json::Value {
        json!({
            "dhcp-ddns": {"enable-updates": true, "server-ip": "127.0.0.1", "server-port": self.port},
            "ddns-send-updates": true,
            "ddns-qualifying-suffix": format!("{suffix}."),
        })
    }

    /// D2's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }
}
