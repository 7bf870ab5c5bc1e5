//! lanyard.toml: where state lives, which host interfaces declarations may use, and named
//! networks. Loaded and checked whole before anything uses it, so a broken file is refused
//! with the line to fix instead of half-applied.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, ErrorKind, Result};

/// Read when neither `--config` nor `LANYARD_CONFIG` names a file; its absence means defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/lanyard/lanyard.toml";

/// A loaded, checked configuration. `Config::default()` is what a host without a config file
/// gets: no state directory of its own, no allowed host interface, no networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from; `None` for the defaults.
    pub source: Option<PathBuf>,
    /// Where records live, when neither `--state-dir` nor `LANYARD_STATE_DIR` says otherwise.
    pub state_dir: Option<PathBuf>,
    /// Host interfaces a declaration may name (besides those of the networks).
    pub allowed_host_interfaces: Vec<String>,
    /// When set, the daemon acts only on containers that carry the same key.
    pub pipework_key: Option<String>,
    /// Give the host a route to each macvlan container.
    pub host_routes: bool,
    /// Where the daemon serves Prometheus metrics (`metrics = "127.0.0.1:9731"` or a unix
    /// socket path); `None`: nowhere.
    pub metrics: Option<MetricsListen>,
    /// The Docker network plugin's name (`docker_plugin`): the daemon serves
    /// `/run/docker/plugins/NAME.sock`. Default [`DEFAULT_DOCKER_PLUGIN`]; `None`
    /// (`docker_plugin = ""`): no plugin.
    pub docker_plugin: Option<String>,
    /// Named networks, by name.
    pub networks: BTreeMap<String, Network>,
    /// `[dns_update]`: the daemon registers attachments' addresses itself (RFC 2136).
    pub dns_update: Option<DnsUpdate>,
}

/// `[dns_update]`: where and how the daemon registers each attachment's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsUpdate {
    /// The primary server of `zone` (port 53 when the value has none).
    pub server: std::net::SocketAddr,
    /// Lower case, without the final dot.
    pub zone: String,
    /// The label template (`{container}` by default; see [`crate::dns::render_label`]).
    pub name: String,
    /// BIND's `tsig-keygen` format; read and checked when the config is loaded.
    pub tsig_key_file: Option<PathBuf>,
    /// PTR records in the matching reverse zone too.
    pub reverse: bool,
    pub ttl: u32,
}

/// `name` when `[dns_update]` gives none.
pub const DEFAULT_DNS_NAME: &str = "{container}";
/// `ttl` when `[dns_update]` gives none: short, since a container's address can change soon.
pub const DEFAULT_DNS_TTL: u32 = 60;
/// Largest `ttl`: a day; a record outliving its container longer than that helps no one.
const MAX_DNS_TTL: u32 = 86_400;

/// The environment variable that overrides `docker_plugin` (see [`Config::load`]).
pub const DOCKER_PLUGIN_ENV: &str = "LANYARD_DOCKER_PLUGIN";

/// The plugin name `docker network create -d NAME` uses when the config names none.
pub const DEFAULT_DOCKER_PLUGIN: &str = "lanyard";

/// Longest plugin name: `/run/docker/plugins/NAME.sock` must fit a unix socket address (108
/// bytes with its terminating NUL).
const MAX_DOCKER_PLUGIN_NAME: usize = 80;

impl Default for Config {
    fn default() -> Self {
        Config {
            source: None,
            state_dir: None,
            allowed_host_interfaces: Vec::new(),
            pipework_key: None,
            host_routes: false,
            metrics: None,
            docker_plugin: Some(DEFAULT_DOCKER_PLUGIN.to_string()),
            networks: BTreeMap::new(),
            dns_update: None,
        }
    }
}

/// Why `name` cannot be a Docker plugin name: it becomes a file name under
/// /run/docker/plugins, and Docker looks it up by the exact `-d` word.
pub fn bad_docker_plugin_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_string());
    }
    if name.len() > MAX_DOCKER_PLUGIN_NAME {
        return Some(format!("is longer than {MAX_DOCKER_PLUGIN_NAME} bytes"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Some("starts with '.' or '-'".to_string());
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
        .map(|c| format!("contains {c:?} (allowed: A-Z a-z 0-9 . _ -)"))
}

/// Where metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl MetricsListen {
    /// "HOST:PORT", "/path/to.sock" or "unix:/path/to.sock"; the error says why not.
    pub fn parse(value: &str) -> std::result::Result<MetricsListen, &'static str> {
        let path = value.strip_prefix("unix:").unwrap_or(value);
        if path.starts_with('/') {
            return Ok(MetricsListen::Unix(PathBuf::from(path)));
        }
        if value.starts_with("unix:") {
            return Err("is not an absolute socket path");
        }
        value
            .parse::<std::net::SocketAddr>()
            .map(MetricsListen::Tcp)
            .map_err(|_| "is neither an IP address with a port nor a socket path")
    }
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Tcp(address) => write!(f, "http://{address}/metrics"),
            MetricsListen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `[network.NAME]`: a host interface and how its guests get addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub host_interface: String,
    pub addressing: NetworkAddressing,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkAddressing {
    Dhcp,
    /// A declaration names only the address; its prefix and gateway come from here.
    Static {
        subnet: IpNet,
        gateway: Option<IpAddr>,
    },
}

impl Config {
    /// The configuration for this run: `explicit` (from `--config` or `LANYARD_CONFIG`) must
    /// exist; without it, [`DEFAULT_CONFIG_PATH`] is read if present, defaults otherwise.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let config = match explicit {
            Some(path) => Self::load_file(path, true),
            None => Self::load_file(Path::new(DEFAULT_CONFIG_PATH), false),
        }?;
        config.with_docker_plugin_override(std::env::var(DOCKER_PLUGIN_ENV).ok().as_deref())
    }

    /// [`DOCKER_PLUGIN_ENV`], when set, replaces `docker_plugin` ("" turns the plugin off), as
    /// LANYARD_STATE_DIR replaces `state_dir`: a daemon run by a test suite, or a second daemon
    /// on one host, then stays off Docker's machine-wide plugin directory without a config file.
    pub fn with_docker_plugin_override(mut self, value: Option<&str>) -> Result<Config> {
        match value {
            None => {}
            Some("") => self.docker_plugin = None,
            Some(name) => match bad_docker_plugin_name(name) {
                Some(why) => {
                    return Err(Error::usage(format!(
                        "{DOCKER_PLUGIN_ENV}={name:?}: the name {why}"
                    )))
                }
                None => self.docker_plugin = Some(name.to_string()),
            },
        }
        Ok(self)
    }

    /// Reads `path`; a missing file is an error when the user named it (`required`), defaults
    /// otherwise. Any other read failure is an error either way: a config that exists but
    /// cannot be read must not be silently ignored.
    pub fn load_file(path: &Path, required: bool) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::usage(format!(
                    "config file {} does not exist: give an existing file to --config or \
                     LANYARD_CONFIG, or leave both out for {DEFAULT_CONFIG_PATH}",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Io,
                    format!("read config file {} (check its permissions)", path.display()),
                    e,
                ))
            }
        };
        Self::parse(&text, path)
    }

    /// Parses and checks `text`, read from `path` (named in errors, with the line).
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let refuse = |offset: usize, what: &str| -> Error {
            Error::usage(format!(
                "config file {} line {}: {what}",
                path.display(),
                line_of(text, offset)
            ))
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let message = e.message().trim_end().replace('\n', " ");
            // toml's message names the expected type, not the key: quote the line itself.
            let line = text.lines().nth(line_of(text, offset) - 1).unwrap_or("").trim();
            refuse(
                offset,
                &format!(
                    "{message} (in `{line}`); correct it (the README's Config section lists every key)"
                ),
            )
        })?;

        let state_dir = match raw.state_dir {
            None => None,
            Some(dir) => {
                let value = PathBuf::from(dir.get_ref());
                if !value.is_absolute() {
                    return Err(refuse(
                        dir.span().start,
                        &format!(
                            "state_dir {:?} is not an absolute path; give one starting with /",
                            dir.get_ref()
                        ),
                    ));
                }
                Some(value)
            }
        };
        let mut allowed_host_interfaces = Vec::new();
        for name in raw.allowed_host_interfaces {
            crate::spec::validate_ifname(
                name.get_ref(),
                "interface name in allowed_host_interfaces",
            )
            .map_err(|e| refuse(name.span().start, e.message()))?;
            allowed_host_interfaces.push(name.into_inner());
        }
        let pipework_key = match raw.pipework_key {
            Some(key) if key.get_ref().is_empty() => return Err(refuse(
                key.span().start,
                "pipework_key is empty; give a key, or remove the line to act on every container",
            )),
            key => key.map(Spanned::into_inner),
        };
        let mut networks = BTreeMap::new();
        for (name, network) in raw.network {
            let network_at = network.span().start;
            let network = network.into_inner();
            if let Some(why) = bad_network_name(name.get_ref()) {
                return Err(refuse(
                    name.span().start,
                    &format!(
                        "network name {:?} {why}; rename the [network.NAME] table",
                        name.get_ref()
                    ),
                ));
            }
            let context = format!("network {}", name.get_ref());
            let host_interface = network.host_interface.ok_or_else(|| {
                refuse(
                    network_at,
                    &format!(
                        "{context}: host_interface is missing; add host_interface = \"IFNAME\""
                    ),
                )
            })?;
            crate::spec::validate_ifname(host_interface.get_ref(), "host_interface").map_err(
                |e| refuse(host_interface.span().start, &format!("{context}: {}", e.message())),
            )?;
            let addressing = match network.addressing {
                None => {
                    return Err(refuse(
                        network_at,
                        &format!(
                        "{context}: addressing is missing; add addressing = \"dhcp\" or \"static\""
                    ),
                    ))
                }
                Some(kind) => {
                    match kind.get_ref() {
                        RawAddressing::Dhcp => {
                            if let Some(key) =
                                network.subnet.as_ref().map(|s| ("subnet", s.span().start)).or(
                                    network.gateway.as_ref().map(|g| ("gateway", g.span().start)),
                                )
                            {
                                return Err(refuse(
                                key.1,
                                &format!("{context}: {} is for static networks (the DHCP server gives it); remove it or set addressing = \"static\"", key.0),
                            ));
                            }
                            NetworkAddressing::Dhcp
                        }
                        RawAddressing::Static => {
                            let subnet = network.subnet.ok_or_else(|| {
                            refuse(
                                network_at,
                                &format!("{context}: a static network needs a subnet; add subnet = \"CIDR\""),
                            )
                        })?;
                            let parsed: IpNet = subnet.get_ref().parse().map_err(|_| {
                            refuse(
                                subnet.span().start,
                                &format!("{context}: subnet {:?} is not a CIDR such as 198.18.8.0/24", subnet.get_ref()),
                            )
                        })?;
                            if parsed.trunc() != parsed {
                                return Err(refuse(
                                subnet.span().start,
                                &format!("{context}: subnet {parsed} has host bits set; did you mean {}?", parsed.trunc()),
                            ));
                            }
                            let gateway = match network.gateway {
                                None => None,
                                Some(gateway) => {
                                    let address: IpAddr =
                                        gateway.get_ref().parse().map_err(|_| {
                                            refuse(
                                                gateway.span().start,
                                                &format!(
                                                    "{context}: gateway {:?} is not an IP address",
                                                    gateway.get_ref()
                                                ),
                                            )
                                        })?;
                                    if !parsed.contains(&address) {
                                        return Err(refuse(
                                        gateway.span().start,
                                        &format!("{context}: gateway {address} is outside subnet {parsed}; give a gateway inside it"),
                                    ));
                                    }
                                    Some(address)
                                }
                            };
                            NetworkAddressing::Static { subnet: parsed, gateway }
                        }
                    }
                }
            };
            let mtu = match network.mtu {
                None => None,
                Some(mtu) => {
                    let has_ipv6 = matches!(
                        addressing,
                        NetworkAddressing::Static { subnet: IpNet::V6(_), .. }
                    );
                    crate::spec::validate_mtu(*mtu.get_ref(), has_ipv6).map_err(|e| {
                        refuse(mtu.span().start, &format!("{context}: {}", e.message()))
                    })?;
                    Some(mtu.into_inner())
                }
            };
            networks.insert(
                name.into_inner(),
                Network { host_interface: host_interface.into_inner(), addressing, mtu },
            );
        }
        let metrics = match raw.metrics {
            None => None,
            Some(value) => Some(MetricsListen::parse(value.get_ref()).map_err(|why| {
                refuse(
                    value.span().start,
                    &format!(
                        "metrics {:?} {why}; give HOST:PORT (e.g. \"127.0.0.1:9731\") or an absolute unix socket path",
                        value.get_ref()
                    ),
                )
            })?),
        };
        let docker_plugin = match raw.docker_plugin {
            None => Some(DEFAULT_DOCKER_PLUGIN.to_string()),
            Some(value) if value.get_ref().is_empty() => None,
            Some(value) => match bad_docker_plugin_name(value.get_ref()) {
                Some(why) => {
                    return Err(refuse(
                        value.span().start,
                        &format!(
                            "docker_plugin {:?} {why}; give a name such as \"lanyard\", or \"\" to serve no plugin",
                            value.get_ref()
                        ),
                    ))
                }
                None => Some(value.into_inner()),
            },
        };
        let dns_update = match raw.dns_update {
            None => None,
            Some(table) => Some(parse_dns_update(table, path, &refuse)?),
        };
        Ok(Config {
            dns_update,
            source: Some(path.to_path_buf()),
            state_dir,
            allowed_host_interfaces,
            pipework_key,
            host_routes: raw.host_routes,
            metrics,
            docker_plugin,
            networks,
        })
    }

    /// Whether a declaration may put a container on `name`: listed in
    /// `allowed_host_interfaces`, or the host interface of a defined network. Nothing is
    /// allowed by default, so a label can never reach the host's management NIC unasked.
    pub fn is_allowed_host_interface(&self, name: &str) -> bool {
        self.allowed_host_interfaces.iter().any(|allowed| allowed == name)
            || self.networks.values().any(|network| network.host_interface == name)
    }

    /// The network called `name`, if the config defines one.
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.get(name)
    }
}

/// `[dns_update]`, checked whole: the key file is read now, so a daemon never starts with a
/// key it cannot use.
fn parse_dns_update(
    table: Spanned<RawDnsUpdate>,
    path: &Path,
    refuse: &dyn Fn(usize, &str) -> Error,
) -> Result<DnsUpdate> {
    let table_at = table.span().start;
    let raw = table.into_inner();
    let server = raw.server.ok_or_else(|| {
        refuse(table_at, "dns_update: server is missing; add server = \"ADDRESS:53\"")
    })?;
    let server_at = server.span().start;
    let server_text = server.into_inner();
    let server = server_text
        .parse::<std::net::SocketAddr>()
        .or_else(|_| server_text.parse::<IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
        .map_err(|_| {
            refuse(
                server_at,
                &format!(
                    "dns_update: server {server_text:?} is not an IP address (with an optional \
                     port), e.g. \"198.18.0.53:53\"; give the zone's primary by address"
                ),
            )
        })?;
    let zone = raw.zone.ok_or_else(|| {
        refuse(table_at, "dns_update: zone is missing; add zone = \"ZONE\" (e.g. \"app.lan\")")
    })?;
    let zone_at = zone.span().start;
    let zone_text = zone.into_inner().trim_end_matches('.').to_ascii_lowercase();
    if zone_text.is_empty() || !crate::dhcp::valid_domain(&zone_text) {
        return Err(refuse(
            zone_at,
            &format!(
                "dns_update: zone {zone_text:?} is not a domain name; give one such as \"app.lan\""
            ),
        ));
    }
    let name = match raw.name {
        None => DEFAULT_DNS_NAME.to_string(),
        Some(name) => {
            let at = name.span().start;
            let name = name.into_inner();
            check_dns_name_template(&name)
                .map_err(|e| refuse(at, &format!("dns_update: name {name:?}: {}", e.message())))?;
            name
        }
    };
    let tsig_key_file = match raw.tsig_key_file {
        None => None,
        Some(file) => {
            let at = file.span().start;
            let file = PathBuf::from(file.into_inner());
            // Relative to the config file, as a person reading it would take it.
            let file = match path.parent() {
                Some(dir) if file.is_relative() => dir.join(file),
                _ => file,
            };
            crate::dns::TsigKey::from_file(&file).map_err(|e| {
                refuse(
                    at,
                    &format!("dns_update: tsig_key_file {}: {}", file.display(), e.message()),
                )
            })?;
            Some(file)
        }
    };
    let ttl = match raw.ttl {
        None => DEFAULT_DNS_TTL,
        Some(ttl) if (1..=MAX_DNS_TTL).contains(ttl.get_ref()) => ttl.into_inner(),
        Some(ttl) => {
            return Err(refuse(
                ttl.span().start,
                &format!(
                    "dns_update: ttl {} is out of range; give 1 to {MAX_DNS_TTL} seconds",
                    ttl.get_ref()
                ),
            ))
        }
    };
    Ok(DnsUpdate { server, zone: zone_text, name, tsig_key_file, reverse: raw.reverse, ttl })
}

/// Whether `template` renders to a label for some guest: every `{...}` is a known variable.
pub fn check_dns_name_template(template: &str) -> Result<()> {
    crate::dns::render_label(template, &sample_name_vars()).map(|_| ())
}

/// Values for checking a template: each variable non-empty, as any real guest has them.
fn sample_name_vars() -> crate::dns::NameVars {
    crate::dns::NameVars {
        container: "web".into(),
        container_id: "4f1e2d3c4b5a".into(),
        ifname: "eth1".into(),
        network: "lan".into(),
        host: "host".into(),
    }
}

/// Why `name` cannot name a network (it appears as the first word of a declaration).
fn bad_network_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.chars().any(char::is_whitespace) {
        Some("contains whitespace")
    } else if name.contains('/') {
        Some("contains '/'")
    } else {
        None
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    #[serde(default)]
    allowed_host_interfaces: Vec<Spanned<String>>,
    pipework_key: Option<Spanned<String>>,
    #[serde(default)]
    host_routes: bool,
    metrics: Option<Spanned<String>>,
    docker_plugin: Option<Spanned<String>>,
    #[serde(default)]
    network: BTreeMap<Spanned<String>, Spanned<RawNetwork>>,
    dns_update: Option<Spanned<RawDnsUpdate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsUpdate {
    server: Option<Spanned<String>>,
    zone: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    tsig_key_file: Option<Spanned<String>>,
    #[serde(default)]
    reverse: bool,
    ttl: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    host_interface: Option<Spanned<String>>,
    addressing: Option<Spanned<RawAddressing>>,
    mtu: Option<Spanned<u32>>,
    subnet: Option<Spanned<String>>,
    gateway: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawAddressing {
    Dhcp,
    Static,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"state_dir = "/var/lib/lanyard"
allowed_host_interfaces = ["br0", "eth1"]
pipework_key = "k1"
host_routes = true
[network.lan]
host_interface = "br0"
addressing = "dhcp"
mtu = 1500
[network.office]
host_interface = "eth1"
addressing = "static"
subnet = "198.18.8.0/24"
gateway = "198.18.8.1"
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/test/lanyard.toml"))
    }

    /// The refusal for `text`: Usage, naming the file and `line`, containing `piece`.
    fn refused(text: &str, line: usize, piece: &str) {
        let err = parse(text).expect_err(text);
        assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("config file /etc/test/lanyard.toml line {line}: ")),
            "{message}"
        );
        assert!(message.contains(piece), "{message} lacks {piece:?}");
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn every_key_is_read() {
        let config = parse(SAMPLE).unwrap();
        assert_eq!(config.source.as_deref(), Some(Path::new("/etc/test/lanyard.toml")));
        assert_eq!(config.state_dir.as_deref(), Some(Path::new("/var/lib/lanyard")));
        assert_eq!(config.allowed_host_interfaces, ["br0", "eth1"]);
        assert_eq!(config.pipework_key.as_deref(), Some("k1"));
        assert!(config.host_routes);
        assert_eq!(
            config.network("lan"),
            Some(&Network {
                host_interface: "br0".into(),
                addressing: NetworkAddressing::Dhcp,
                mtu: Some(1500)
            })
        );
        assert_eq!(
            config.network("office"),
            Some(&Network {
                host_interface: "eth1".into(),
                addressing: NetworkAddressing::Static {
                    subnet: "198.18.8.0/24".parse().unwrap(),
                    gateway: Some("198.18.8.1".parse().unwrap()),
                },
                mtu: None
            })
        );
        assert_eq!(config.network("br0"), None);
        assert_eq!(config.metrics, None);
        for (value, listen) in [
            ("127.0.0.1:9731", MetricsListen::Tcp("127.0.0.1:9731".parse().unwrap())),
            ("[::1]:9731", MetricsListen::Tcp("[::1]:9731".parse().unwrap())),
            ("/run/lanyard/metrics.sock", MetricsListen::Unix("/run/lanyard/metrics.sock".into())),
            ("unix:/run/m.sock", MetricsListen::Unix("/run/m.sock".into())),
        ] {
            let config = parse(&format!("metrics = \"{value}\"\n")).unwrap();
            assert_eq!(config.metrics, Some(listen), "{value}");
        }
    }

    #[test]
    fn the_docker_plugin_is_on_by_default_named_by_the_key_and_off_when_empty() {
        assert_eq!(Config::default().docker_plugin.as_deref(), Some("lanyard"));
        assert_eq!(parse(SAMPLE).unwrap().docker_plugin.as_deref(), Some("lanyard"));
        let named = parse("docker_plugin = \"lanyard-test-1.a_b\"\n").unwrap();
        assert_eq!(named.docker_plugin.as_deref(), Some("lanyard-test-1.a_b"));
        assert_eq!(parse("docker_plugin = \"\"\n").unwrap().docker_plugin, None);
        refused("\ndocker_plugin = \"a/b\"\n", 2, "docker_plugin \"a/b\" contains '/'");
        refused("docker_plugin = \"../x\"\n", 1, "starts with '.'");
        refused("docker_plugin = \"has space\"\n", 1, "contains ' '");
        refused(&format!("docker_plugin = \"{}\"\n", "p".repeat(81)), 1, "longer than 80");
        refused("docker_plugin = 1\n", 1, "docker_plugin");
        // LANYARD_DOCKER_PLUGIN replaces the key: "" turns the plugin off, a bad name is refused.
        let over = |value| named.clone().with_docker_plugin_override(value);
        assert_eq!(over(None).unwrap().docker_plugin.as_deref(), Some("lanyard-test-1.a_b"));
        assert_eq!(over(Some("")).unwrap().docker_plugin, None);
        assert_eq!(over(Some("other")).unwrap().docker_plugin.as_deref(), Some("other"));
        let err = over(Some("a/b")).unwrap_err();
        assert!(err.kind() == ErrorKind::Usage && err.to_string().contains(DOCKER_PLUGIN_ENV));
    }

    /// A directory of this test run's own, removed when dropped.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            let dir = std::env::temp_dir()
                .join(format!("lanyard-config-test-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TestDir(dir)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn dns_update_is_read_with_defaults_and_its_key_file_checked() {
        let dir = TestDir::new("dns-update-read");
        let key = dir.0.join("ddns.key");
        std::fs::write(
            &key,
            "key \"ddns\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\";\n};\n",
        )
        .unwrap();
        let config_path = dir.0.join("lanyard.toml");
        let text = "[dns_update]\nserver = \"198.18.0.53:5353\"\nzone = \"App.LAN.\"\nname = \"{container}-{ifname}\"\ntsig_key_file = \"ddns.key\"\nreverse = true\nttl = 30\n";
        let dns = Config::parse(text, &config_path).unwrap().dns_update.unwrap();
        assert_eq!(
            dns,
            DnsUpdate {
                server: "198.18.0.53:5353".parse().unwrap(),
                zone: "app.lan".into(),
                name: "{container}-{ifname}".into(),
                tsig_key_file: Some(key.clone()),
                reverse: true,
                ttl: 30,
            }
        );
        let plain = parse("[dns_update]\nserver = \"198.18.0.53\"\nzone = \"app.lan\"\n").unwrap();
        let plain = plain.dns_update.unwrap();
        assert_eq!(plain.server, "198.18.0.53:53".parse().unwrap());
        assert_eq!((plain.name.as_str(), plain.ttl, plain.reverse), ("{container}", 60, false));
        assert_eq!(plain.tsig_key_file, None);
        assert_eq!(parse("").unwrap().dns_update, None);
    }

    #[test]
    fn a_bad_dns_update_is_refused_with_its_line() {
        let table = |body: &str| format!("state_dir = \"/x\"\n[dns_update]\n{body}");
        refused(&table("zone = \"app.lan\"\n"), 2, "server is missing");
        refused(&table("server = \"198.18.0.53\"\n"), 2, "zone is missing");
        refused(&table("server = \"ns1\"\nzone = \"a\"\n"), 3, "not an IP address");
        refused(&table("server = \"198.18.0.53\"\nzone = \"a b\"\n"), 4, "not a domain name");
        let ok = "server = \"198.18.0.53\"\nzone = \"app.lan\"\n";
        refused(&table(&format!("{ok}name = \"{{nope}}\"\n")), 5, "dns_update: name");
        refused(&table(&format!("{ok}ttl = 0\n")), 5, "ttl 0 is out of range");
        refused(&table(&format!("{ok}ttl = 86401\n")), 5, "out of range");
        refused(
            &table(&format!("{ok}tsig_key_file = \"/nonexistent/k.key\"\n")),
            5,
            "tsig_key_file /nonexistent/k.key",
        );
        refused(&table(&format!("{ok}secret = \"x\"\n")), 5, "secret");
        // A key file that is not one: the key file's own complaint, on the config's line.
        let dir = TestDir::new("dns-update-bad");
        let bad = dir.0.join("bad.key");
        std::fs::write(&bad, "not a key\n").unwrap();
        refused(
            &table(&format!("{ok}tsig_key_file = \"{}\"\n", bad.display())),
            5,
            &format!("tsig_key_file {}", bad.display()),
        );
    }

    #[test]
    fn an_empty_file_and_a_missing_default_file_give_the_defaults() {
        let empty = parse("").unwrap();
        assert_eq!(empty, Config { source: empty.source.clone(), ..Config::default() });
        assert!(!empty.host_routes);
        assert!(empty.state_dir.is_none() && empty.pipework_key.is_none());
        let missing = Path::new("/nonexistent-lanyard-test/lanyard.toml");
        assert_eq!(Config::load_file(missing, false).unwrap(), Config::default());
        let err = Config::load_file(missing, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
        assert!(err.to_string().contains("/nonexistent-lanyard-test/lanyard.toml does not exist"));
    }

    #[test]
    fn allowed_means_listed_or_the_interface_of_a_network() {
        let config = parse(
            "allowed_host_interfaces = [\"eth1\"]\n[network.lan]\nhost_interface = \"br0\"\naddressing = \"dhcp\"\n",
        )
        .unwrap();
        assert!(config.is_allowed_host_interface("eth1"));
        assert!(config.is_allowed_host_interface("br0"));
        assert!(!config.is_allowed_host_interface("eth0"));
        assert!(!config.is_allowed_host_interface("lan"));
        assert!(!Config::default().is_allowed_host_interface("eth0"));
    }

    #[test]
    fn static_network_without_gateway_is_accepted() {
        let config = parse(
            "[network.v6]\nhost_interface = \"br0\"\naddressing = \"static\"\nsubnet = \"2001:db8:8::/64\"\nmtu = 1400\n",
        )
        .unwrap();
        assert_eq!(
            config.network("v6").unwrap().addressing,
            NetworkAddressing::Static { subnet: "2001:db8:8::/64".parse().unwrap(), gateway: None }
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_the_key_and_its_line() {
        refused("state_dir = \"/x\"\nstatedir = \"/y\"\n", 2, "statedir");
        refused(
            "[network.lan]\nhost_interface = \"br0\"\naddressing = \"dhcp\"\nmtuu = 1500\n",
            4,
            "mtuu",
        );
    }

    #[test]
    fn each_bad_value_is_refused_with_its_line() {
        // Syntax and type errors, as toml reports them.
        refused("state_dir = \n", 1, "correct it");
        refused("\n\nhost_routes = \"yes\"\n", 3, "host_routes");
        refused("state_dir = \"var/lib/lanyard\"\n", 1, "not an absolute path");
        refused(
            "\nallowed_host_interfaces = [\"br0\", \"has space\"]\n",
            2,
            "allowed_host_interfaces",
        );
        refused("allowed_host_interfaces = [\"abcdefghijklmnop\"]\n", 1, "at most 15");
        refused("\npipework_key = \"\"\n", 2, "pipework_key is empty");
        refused("metrics = \"9731\"\n", 1, "neither an IP address with a port");
        refused("\nmetrics = \"unix:run/m.sock\"\n", 2, "not an absolute socket path");
        let net = |body: &str| format!("state_dir = \"/x\"\n[network.n]\n{body}");
        refused(
            &net("host_interface = \"a/b\"\naddressing = \"dhcp\"\n"),
            3,
            "network n: bad host_interface",
        );
        refused(&net("addressing = \"dhcp\"\n"), 2, "host_interface is missing");
        refused(&net("host_interface = \"br0\"\n"), 2, "addressing is missing");
        refused(&net("host_interface = \"br0\"\naddressing = \"dynamic\"\n"), 4, "dynamic");
        refused(
            &net("host_interface = \"br0\"\naddressing = \"dhcp\"\nsubnet = \"198.18.8.0/24\"\n"),
            5,
            "subnet is for static networks",
        );
        refused(
            &net("host_interface = \"br0\"\naddressing = \"dhcp\"\ngateway = \"198.18.8.1\"\n"),
            5,
            "gateway is for static networks",
        );
        refused(&net("host_interface = \"br0\"\naddressing = \"static\"\n"), 2, "needs a subnet");
        refused(
            &net("host_interface = \"br0\"\naddressing = \"static\"\nsubnet = \"198.18.8.0\"\n"),
            5,
            "not a CIDR",
        );
        refused(
            &net("host_interface = \"br0\"\naddressing = \"static\"\nsubnet = \"198.18.8.1/24\"\n"),
            5,
            "did you mean 198.18.8.0/24",
        );
        refused(
            &net("host_interface = \"br0\"\naddressing = \"static\"\nsubnet = \"198.18.8.0/24\"\ngateway = \"198.18.9.1\"\n"),
            6,
            "gateway 198.18.9.1 is outside subnet 198.18.8.0/24",
        );
        refused(
            &net("host_interface = \"br0\"\naddressing = \"static\"\nsubnet = \"198.18.8.0/24\"\ngateway = \"2001:db8::1\"\n"),
            6,
            "outside subnet",
        );
        refused(
            &net("host_interface = \"br0\"\naddressing = \"static\"\nsubnet = \"198.18.8.0/24\"\ngateway = \"nope\"\n"),
            6,
            "not an IP address",
        );
        refused(
            &net("host_interface = \"br0\"\naddressing = \"dhcp\"\nmtu = 50\n"),
            5,
            "bad MTU 50",
        );
        refused(&net("host_interface = \"br0\"\naddressing = \"dhcp\"\nmtu = -1\n"), 5, "mtu");
        refused(
            "[network.\"has space\"]\nhost_interface = \"br0\"\naddressing = \"dhcp\"\n",
            1,
            "contains whitespace",
        );
        refused(
            "[network.\"a/b\"]\nhost_interface = \"br0\"\naddressing = \"dhcp\"\n",
            1,
            "contains '/'",
        );
        refused("[network.\"\"]\nhost_interface = \"br0\"\naddressing = \"dhcp\"\n", 1, "is empty");
    }
}
