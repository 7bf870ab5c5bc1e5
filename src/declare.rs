//! Container declarations: what a container asks for in its labels (`lanyard.net`,
//! `lanyard.net.NAME`) and in docker-pipework's environment variables (`*pipework_cmd*`),
//! turned into attach requests. Pure: it reads the container's facts and the config, never the
//! kernel or Docker, so the daemon's watcher can call it on every event and in every reconcile.
//! Each declaration is judged alone: a bad one is refused with its reason and never stops the
//! others (except `pipework_key`, which is about the whole container).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::attach::AttachRequest;
use crate::cli::pipework::{parse_pipework, HostInterface, PipeworkCommand};
use crate::cli::{attach_request, parse_attach_args};
use crate::config::{Config, Network, NetworkAddressing, DEFAULT_CONFIG_PATH};
use crate::error::{Error, ErrorKind, Result};
use crate::guest::GuestSpec;

/// The label of a container's one declared interface; `lanyard.net.NAME` declares more.
pub const LABEL: &str = "lanyard.net";
/// Any environment variable whose name contains this is a docker-pipework command line.
pub const PIPEWORK_CMD: &str = "pipework_cmd";
/// `lanyard.dns=NAME`: the DNS name of every interface the container declares (as
/// `--dns-name NAME`, which a declaration's own words override).
pub const DNS_LABEL: &str = "lanyard.dns";
/// docker-pipework's per-container wish for host routes (either spelling).
pub const HOST_ROUTE_ENV: [&str; 2] = ["pipework_host_route", "pipework_host_routes"];
/// The key a container carries when the config sets `pipework_key`.
pub const KEY_ENV: &str = "pipework_key";
/// Compose's labels behind `@INSTANCE@` and `@COMPOSE_PROJECT_NAME@`.
pub const COMPOSE_NUMBER_LABEL: &str = "com.docker.compose.container-number";
pub const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";

/// What Docker says about a container, as declarations read it (the watcher fills it from
/// ContainerInspect: `Id`, `Name` without its '/', `Config.Hostname`, `Config.Labels`,
/// `Config.Env`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFacts {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    /// `K=V`, as Docker gives them.
    pub env: Vec<String>,
}

/// One interface the container asks for.
#[derive(Debug, Clone)]
pub struct Declaration {
    /// Where it was written: `label lanyard.net.backend` or `env pipework_cmd_ip`.
    pub source: String,
    /// The value as written (for env, after macro expansion): a change means rewire.
    pub text: String,
    /// The attach it asks for; the guest is `GuestSpec::Bare(full container id)` and the
    /// daemon never waits for a lease (`dhcp_wait.wait` is false).
    pub request: AttachRequest,
    /// `pipework_host_route(s)` on the container, or `host_routes` in the config. The pure
    /// part cannot tell a bridge from a macvlan parent; the watcher applies it to macvlan
    /// attachments only (a bridge's guests are reachable from the host already).
    pub host_route: bool,
}

/// A declaration that will not be acted on, and why.
#[derive(Debug)]
pub struct Refusal {
    pub source: String,
    pub error: Error,
}

/// Everything a container declares, wanted and refused, each sorted by source.
#[derive(Debug, Default)]
pub struct Declarations {
    pub wanted: Vec<Declaration>,
    pub refused: Vec<Refusal>,
}

/// Cheap pre-filter: whether the container declares anything at all (a `lanyard.net*` label or
/// a `*pipework_cmd*` variable), before any parsing.
pub fn has_declarations(labels: &BTreeMap<String, String>, env: &[String]) -> bool {
    labels.keys().any(|key| is_declaration_label(key))
        || env.iter().any(|entry| env_name(entry).contains(PIPEWORK_CMD))
}

/// The container's declarations, judged against the config.
pub fn declarations(facts: &ContainerFacts, config: &Config) -> Declarations {
    // Docker keeps the last of two equal names; so does this map.
    let env: BTreeMap<&str, &str> =
        facts.env.iter().filter_map(|entry| entry.split_once('=')).collect();
    let host_route = config.host_routes
        || HOST_ROUTE_ENV.iter().any(|name| env.get(name).is_some_and(|value| is_yes(value)));

    // (source, text, request or why not), in source order.
    let mut parsed: Vec<(String, String, Result<AttachRequest>)> = Vec::new();
    for (key, value) in facts.labels.iter().filter(|(key, _)| is_declaration_label(key)) {
        parsed.push((format!("label {key}"), value.clone(), label_request(facts, config, value)));
    }
    for (name, value) in env.iter().filter(|(name, _)| name.contains(PIPEWORK_CMD)) {
        let (text, request) = match expand_macros(value, facts) {
            Ok(text) => {
                let request = pipework_request(facts, config, &text);
                (text, request)
            }
            Err(e) => (value.to_string(), Err(e)),
        };
        parsed.push((format!("env {name}"), text, request));
    }
    parsed.sort_by(|a, b| a.0.cmp(&b.0));

    let mut result = Declarations::default();
    if let Some(why) = key_refusal(config, env.get(KEY_ENV).copied()) {
        for (source, _, _) in parsed {
            result
                .refused
                .push(Refusal { source, error: Error::new(ErrorKind::Permission, why.clone()) });
        }
        return result;
    }
    let dns_name = facts.labels.get(DNS_LABEL);
    for (source, text, request) in parsed {
        let mut request = match request {
            Ok(request) => request,
            Err(error) => {
                result.refused.push(Refusal { source, error });
                continue;
            }
        };
        if let Some(other) =
            result.wanted.iter().find(|d| d.request.guest_ifname == request.guest_ifname)
        {
            let error = Error::conflict(format!(
                "guest interface {} is also declared by {}: give one of them another -i",
                request.guest_ifname, other.source
            ));
            result.refused.push(Refusal { source, error });
            continue;
        }
        if request.dns.name.is_none() && !request.dns.off {
            if let Some(Err(e)) = dns_name.map(|name| crate::config::check_dns_name_template(name))
            {
                let error = Error::usage(format!("label {DNS_LABEL}: {}", e.message()));
                result.refused.push(Refusal { source, error });
                continue;
            }
            request.dns.name = dns_name.cloned();
        }
        result.wanted.push(Declaration { source, text, request, host_route });
    }
    result
}

fn is_declaration_label(key: &str) -> bool {
    key == LABEL || key.strip_prefix(LABEL).is_some_and(|rest| rest.starts_with('.'))
}

fn env_name(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(name, _)| name)
}

/// docker-pipework's test for `pipework_host_route(s)`: set to anything but a "no".
fn is_yes(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty() && !["0", "false", "no"].iter().any(|no| value.eq_ignore_ascii_case(no))
}

/// Why every declaration of the container is refused for its key, if it is.
fn key_refusal(config: &Config, carried: Option<&str>) -> Option<String> {
    let wanted = config.pipework_key.as_deref()?;
    match carried {
        Some(key) if key == wanted => None,
        Some(_) => Some(format!(
            "pipework_key does not match the daemon's ({}): give the container the key the config sets",
            config_where(config)
        )),
        None => Some(format!(
            "pipework_key missing: the daemon acts only on containers with its key ({}); add -e pipework_key=KEY",
            config_where(config)
        )),
    }
}

fn config_where(config: &Config) -> String {
    match &config.source {
        Some(path) => format!("config {}", path.display()),
        None => format!("no config file: {DEFAULT_CONFIG_PATH} is absent"),
    }
}

/// A label's value: `lanyard attach`'s arguments without the guest, parsed by the CLI's own
/// parser with the container id put in as GUEST.
fn label_request(facts: &ContainerFacts, config: &Config, value: &str) -> Result<AttachRequest> {
    let words = split_words(value)?;
    let Some(first) = words.first() else {
        return Err(Error::usage(
            "empty: give a host interface or a network, then addresses, e.g. \"br0 dhcp\"",
        ));
    };
    if first.starts_with('-') {
        return Err(Error::usage(format!(
            "starts with {first:?}: the first word must be a host interface or a network of the config, then addresses and options, e.g. \"br0 dhcp -i eth2\""
        )));
    }
    let mut argv = vec!["attach".to_string(), first.clone(), facts.id.clone()];
    argv.extend(words[1..].iter().cloned());
    let (mut args, matches) = parse_attach_args(&argv)?;
    // The daemon decides how long a lease may take, and declarations put a container on a LAN.
    for (id, option, why) in [
        ("timeout", "--timeout", "the daemon keeps asking for the lease"),
        ("no_wait", "--no-wait", "the daemon never waits for the lease"),
        ("host_only", "--host-only", "a declaration puts the container on a LAN"),
        ("host_addresses", "--host-address", "a declaration puts the container on a LAN"),
    ] {
        if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            return Err(Error::usage(format!(
                "{option} is for `lanyard attach`, not a declaration ({why}): remove it"
            )));
        }
    }
    match config.network(first) {
        // The config is the admin's explicit word: a network wins over an interface's name.
        Some(network) => apply_network(&mut args, first, network)?,
        None => check_allowed(config, first)?,
    }
    let mut request = attach_request(&args)?;
    request.guest = GuestSpec::Bare(facts.id.clone());
    request.dhcp_wait.wait = false;
    Ok(request)
}

fn check_allowed(config: &Config, host_interface: &str) -> Result<()> {
    if config.is_allowed_host_interface(host_interface) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Permission,
        format!(
            "host interface {host_interface} is not in allowed_host_interfaces ({}): add it there or define a network on it",
            config_where(config)
        ),
    ))
}

/// `[network.NAME]` as the first word: its host interface and MTU, and its addressing: a DHCP
/// network implies `dhcp` and takes no static IPv4; a static one takes the address alone
/// (or with the subnet's prefix) and supplies prefix and gateway.
fn apply_network(args: &mut crate::cli::AttachArgs, name: &str, network: &Network) -> Result<()> {
    args.host_interface = network.host_interface.clone();
    args.mtu = args.mtu.or(network.mtu);
    match &network.addressing {
        NetworkAddressing::Dhcp => {
            for token in &args.addresses {
                if token == "none" {
                    return Err(Error::usage(format!(
                        "network {name} leases addresses by DHCP: \"none\" does not go with it; name a host interface for a link without addresses"
                    )));
                }
                if token_address(token).is_some_and(|a| a.is_ipv4()) {
                    return Err(Error::usage(format!(
                        "network {name} leases IPv4 addresses by DHCP: remove {token} (static IPv6 addresses may go with it)"
                    )));
                }
            }
            if !args.addresses.iter().any(|a| a == "dhcp") {
                args.addresses.push("dhcp".to_string());
            }
        }
        NetworkAddressing::Static { subnet, gateway } => {
            let mut addresses = Vec::new();
            let mut named = false;
            for token in &args.addresses {
                if token == "dhcp" || token == "none" {
                    return Err(Error::usage(format!(
                        "network {name} is static ({subnet}): give an address in it instead of {token}, e.g. \"{name} ADDRESS\""
                    )));
                }
                let (cidr, given_gateway) = match token.split_once('@') {
                    Some((cidr, gateway)) => (cidr, Some(gateway)),
                    None => (token.as_str(), None),
                };
                let (address_text, prefix) = match cidr.split_once('/') {
                    Some((address, prefix)) => (address, Some(prefix)),
                    None => (cidr, None),
                };
                // Not an address of the network's family: the shared parser judges it, as
                // it would in `lanyard attach`.
                let address = match address_text.parse::<IpAddr>() {
                    Ok(address) if address.is_ipv4() == subnet.addr().is_ipv4() => address,
                    _ => {
                        addresses.push(token.clone());
                        continue;
                    }
                };
                if let Some(prefix) = prefix.filter(|p| *p != subnet.prefix_len().to_string()) {
                    return Err(Error::usage(format!(
                        "{token}: network {name} is {subnet}, not /{prefix}: give the address alone ({address})"
                    )));
                }
                if let Some(given) = given_gateway {
                    return Err(Error::usage(format!(
                        "{token}: network {name} sets the gateway ({}): remove @{given}",
                        gateway.map_or("none".to_string(), |g| g.to_string())
                    )));
                }
                if !subnet.contains(&address) {
                    return Err(Error::usage(format!(
                        "{address} is outside network {name} ({subnet}): give an address inside it"
                    )));
                }
                // One default route per family: the gateway goes with the first address.
                let via = match (named, gateway) {
                    (false, Some(gateway)) => format!("@{gateway}"),
                    _ => String::new(),
                };
                addresses.push(format!("{address}/{}{via}", subnet.prefix_len()));
                named = true;
            }
            if !named {
                return Err(Error::usage(format!(
                    "network {name} is static ({subnet}): name the container's address in it, e.g. \"{name} ADDRESS\""
                )));
            }
            args.addresses = addresses;
        }
    }
    Ok(())
}

/// The address in an address token (`CIDR[@GATEWAY]` or a bare address), if it is one.
fn token_address(token: &str) -> Option<IpAddr> {
    token.split(['/', '@']).next()?.parse().ok()
}

/// A docker-pipework line (macros expanded): an attach line for this very container.
fn pipework_request(facts: &ContainerFacts, config: &Config, text: &str) -> Result<AttachRequest> {
    let words = split_words(text)?;
    let line = match parse_pipework(&words)? {
        PipeworkCommand::Attach(line) => line,
        PipeworkCommand::Route { .. } => {
            return Err(Error::usage(
                "a pipework route line is not a declaration (only attach lines are): put the route on the interface's declaration, a lanyard.net label with --route CIDR@GATEWAY",
            ))
        }
        PipeworkCommand::Wait { .. } => {
            return Err(Error::usage(
                "pipework --wait runs inside the container and waits for its interface; it declares none: the line must attach (HOSTIF [-i GUESTIF] GUEST ADDRESS)",
            ))
        }
    };
    if !names_this_container(&line.guest, facts) {
        return Err(Error::usage(format!(
            "the pipework line names container {:?}, not this one ({}, id {}): write @CONTAINER_NAME@ as the guest",
            line.guest,
            facts.name,
            short_id(&facts.id)
        )));
    }
    let host_interface = match &line.host_if {
        HostInterface::Name(name) => name,
        HostInterface::ByMac(_) => {
            return Err(Error::unsupported(format!(
                "host interface {} in a declaration (finding it needs the kernel, and the allowlist is by name): name the interface",
                line.host_if
            )))
        }
    };
    check_allowed(config, host_interface)?;
    let mut request = line.request(host_interface, GuestSpec::Bare(facts.id.clone()))?;
    request.dhcp_wait.wait = false;
    Ok(request)
}

/// The guest of a pipework line is this container: its name, its id, or a prefix of the id.
fn names_this_container(guest: &str, facts: &ContainerFacts) -> bool {
    let guest = guest.strip_prefix('/').unwrap_or(guest);
    (!facts.name.is_empty() && guest == facts.name)
        || (!guest.is_empty()
            && guest.bytes().all(|b| b.is_ascii_hexdigit())
            && facts.id.starts_with(guest))
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// docker-pipework's macros, replaced by what they stand for. A macro whose source the
/// container lacks, or an `@NAME@` that is no macro, refuses the line: left in, it would make
/// a guest or interface name that fails later with a worse message. Only `@` + capitals +
/// `@` is macro-shaped, so `198.18.0.50/24@198.18.0.1` and `MAC@VLAN` pass untouched.
fn expand_macros(value: &str, facts: &ContainerFacts) -> Result<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let candidate = after.find('@').map(|end| &after[..end]).filter(|name| is_macro_name(name));
        let Some(name) = candidate else {
            out.push('@');
            rest = after;
            continue;
        };
        out.push_str(&macro_value(name, facts)?);
        rest = &after[name.len() + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_macro_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn macro_value(name: &str, facts: &ContainerFacts) -> Result<String> {
    let (value, source) = match name {
        "CONTAINER_NAME" => (Some(facts.name.as_str()), "a container name"),
        "CONTAINER_ID" => (Some(facts.id.as_str()), "a container id"),
        "HOSTNAME" => (Some(facts.hostname.as_str()), "a Config.Hostname"),
        "INSTANCE" => (
            facts.labels.get(COMPOSE_NUMBER_LABEL).map(String::as_str),
            "the label com.docker.compose.container-number (docker compose sets it)",
        ),
        "COMPOSE_PROJECT_NAME" => (
            facts.labels.get(COMPOSE_PROJECT_LABEL).map(String::as_str),
            "the label com.docker.compose.project (docker compose sets it)",
        ),
        _ => {
            return Err(Error::usage(format!(
                "unknown macro @{name}@: the macros are @CONTAINER_NAME@, @CONTAINER_ID@, @HOSTNAME@, @INSTANCE@ and @COMPOSE_PROJECT_NAME@"
            )))
        }
    };
    match value {
        Some(value) if !value.is_empty() => Ok(value.to_string()),
        _ => {
            Err(Error::usage(format!("macro @{name}@ needs {source}, which this container lacks")))
        }
    }
}

/// Words as a shell splits a simple line: on whitespace, with '...' and "..." grouping
/// (no escapes, no expansion); `''` is an empty word.
fn split_words(text: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(open) if c == open => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(open) = quote {
        return Err(Error::usage(format!("unterminated {open} quote in {text:?}: close it")));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AddressSpec;
    use std::path::Path;

    const ID: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
    const CONFIG_FILE: &str = "/etc/test/lanyard.toml";

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new(CONFIG_FILE)).unwrap()
    }

    /// br0 and eth1 allowed; a DHCP network on br0, a static one on eth1, and a network named
    /// like an interface (br1) that lives on eth2.
    fn sample_config() -> Config {
        config(
            r#"allowed_host_interfaces = ["br0", "eth1", "br1"]
[network.lan]
host_interface = "br0"
addressing = "dhcp"
mtu = 1500
[network.office]
host_interface = "eth1"
addressing = "static"
subnet = "198.18.8.0/24"
gateway = "198.18.8.1"
[network.br1]
host_interface = "eth2"
addressing = "dhcp"
"#,
        )
    }

    fn facts(labels: &[(&str, &str)], env: &[&str]) -> ContainerFacts {
        ContainerFacts {
            id: ID.to_string(),
            name: "test1".to_string(),
            hostname: "4f1e2d3c4b5a".to_string(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            env: env.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn label(value: &str) -> Declarations {
        declarations(&facts(&[("lanyard.net", value)], &[]), &sample_config())
    }

    fn env(line: &str) -> Declarations {
        declarations(&facts(&[], &[line]), &sample_config())
    }

    fn wanted(found: Declarations) -> Declaration {
        assert!(found.refused.is_empty(), "{:?}", found.refused);
        assert_eq!(found.wanted.len(), 1, "{:?}", found.wanted);
        found.wanted.into_iter().next().unwrap()
    }

    /// The one refusal's message, after checking it is the only outcome, one line, of `kind`.
    fn refused(found: Declarations, kind: ErrorKind) -> String {
        assert!(found.wanted.is_empty(), "{:?}", found.wanted);
        assert_eq!(found.refused.len(), 1, "{:?}", found.refused);
        let error = &found.refused[0].error;
        assert_eq!(error.kind(), kind, "{error}");
        let message = error.to_string();
        assert!(!message.contains('\n'), "one line: {message:?}");
        message
    }

    fn addresses(request: &AttachRequest) -> Vec<String> {
        request.addresses.iter().map(AddressSpec::to_string).collect()
    }

    #[test]
    fn the_dns_label_names_every_interface_unless_its_own_words_say_otherwise() {
        let found = declarations(
            &facts(
                &[
                    ("lanyard.net", "br0 dhcp"),
                    ("lanyard.net.b", "br0 dhcp -i eth2 --dns-name other"),
                    ("lanyard.net.c", "br0 dhcp -i eth3 --no-dns-update"),
                    (DNS_LABEL, "shop-web"),
                ],
                &[],
            ),
            &sample_config(),
        );
        let choices: Vec<_> = found.wanted.iter().map(|d| d.request.dns.clone()).collect();
        let choice = |name: Option<&str>, off| crate::state::DnsChoice {
            name: name.map(str::to_string),
            off,
            ..Default::default()
        };
        assert_eq!(
            choices,
            [choice(Some("shop-web"), false), choice(Some("other"), false), choice(None, true)]
        );
        assert!(wanted(label("br0 dhcp")).request.dns.name.is_none(), "no label, no name");
        // A name that can never render is refused before anything is wired.
        let error = refused(label("br0 dhcp --dns-name {nope}"), ErrorKind::Usage);
        assert!(error.contains("--dns-name \"{nope}\"") && error.contains("unknown"), "{error}");
        let error = refused(label("br0 dhcp --dns-name x --no-dns-update"), ErrorKind::Usage);
        assert!(error.contains("--no-dns-update"), "{error}");
        let found = declarations(
            &facts(&[("lanyard.net", "br0 dhcp"), (DNS_LABEL, "{nope}")], &[]),
            &sample_config(),
        );
        assert!(found.wanted.is_empty());
        assert!(found.refused[0].error.to_string().contains("label lanyard.dns"), "{found:?}");
    }

    #[test]
    fn a_label_is_attach_without_the_guest() {
        let found = wanted(label("br0 dhcp -i eth2 --hostname web --set-resolv"));
        assert_eq!(found.source, "label lanyard.net");
        assert_eq!(found.text, "br0 dhcp -i eth2 --hostname web --set-resolv");
        assert!(!found.host_route);
        let request = &found.request;
        assert_eq!(request.host_interface, "br0");
        assert!(matches!(&request.guest, GuestSpec::Bare(id) if id == ID));
        assert_eq!(request.guest_ifname, "eth2");
        let dhcp = request.dhcp.as_ref().expect("dhcp");
        assert_eq!(dhcp.hostname.as_deref(), Some("web"));
        assert!(dhcp.set_resolv);
        assert!(!request.dhcp_wait.wait, "the daemon never waits for the lease");

        let request = wanted(label(
            "eth1 198.18.4.70/24@198.18.4.1 2001:db8::70/64 --mtu 1400 --route 198.19.0.0/16@198.18.4.254 -l vethweb",
        ))
        .request;
        assert_eq!(request.host_interface, "eth1");
        assert_eq!(addresses(&request), ["198.18.4.70/24@198.18.4.1", "2001:db8::70/64"]);
        assert_eq!(request.mtu, Some(1400));
        assert_eq!(request.routes.len(), 1);
        assert_eq!(request.host_ifname.as_deref(), Some("vethweb"));
        assert!(request.dhcp.is_none());

        let request = wanted(label("br0")).request;
        assert!(request.addresses.is_empty() && request.dhcp.is_none(), "link only");
        let request = wanted(label("  br0   'none'  ")).request;
        assert!(request.addresses.is_empty() && request.dhcp.is_none(), "link only");
    }

    #[test]
    fn every_lanyard_net_label_is_one_interface_and_nothing_else_is() {
        let labels = [
            ("lanyard.net", "br0 dhcp"),
            ("lanyard.net.backend", "br0 dhcp -i eth2"),
            ("lanyard.net.a.b", "eth1 198.18.4.5/24 -i eth3"),
            ("lanyard.network", "br0 dhcp -i eth4"),
            ("lanyard.netx", "br0 dhcp -i eth5"),
            ("com.docker.compose.project", "shop"),
        ];
        let found = declarations(&facts(&labels, &[]), &sample_config());
        assert!(found.refused.is_empty(), "{:?}", found.refused);
        let sources: Vec<&str> = found.wanted.iter().map(|d| d.source.as_str()).collect();
        assert_eq!(
            sources,
            ["label lanyard.net", "label lanyard.net.a.b", "label lanyard.net.backend"]
        );

        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let none: [String; 0] = [];
        assert!(has_declarations(&map(&[("lanyard.net", "x")]), &none));
        assert!(has_declarations(&map(&[("lanyard.net.x", "x")]), &none));
        assert!(!has_declarations(&map(&[("lanyard.network", "x"), ("a", "b")]), &none));
        for var in [
            "pipework_cmd=x",
            "pipework_cmd_ip=x",
            "apache_pipework_cmd=x",
            "pipework_cmd_for_eth1=",
        ] {
            assert!(has_declarations(&map(&[]), &[var.to_string()]), "{var}");
        }
        assert!(!has_declarations(&map(&[]), &["pipework_key=k".into(), "PATH=/bin".into()]));
    }

    #[test]
    fn label_errors_are_the_clis_in_one_line() {
        let message = refused(label("br0 --mtu x"), ErrorKind::Usage);
        assert!(message.starts_with("invalid value 'x' for '--mtu <MTU>'"), "{message}");
        let message = refused(label("br0 dhcp --bogus"), ErrorKind::Usage);
        assert!(message.starts_with("unexpected argument '--bogus' found"), "{message}");
        assert!(!message.contains("Usage") && !message.contains("For more information"));
        // `--help` is no escape hatch into a help text.
        let message = refused(label("br0 --help"), ErrorKind::Usage);
        assert!(message.starts_with("unexpected argument '--help' found"), "{message}");
        let message = refused(label("br0 dhcp 198.18.4.5/24"), ErrorKind::Usage);
        assert!(message.starts_with("dhcp and a static IPv4 address exclude each other"));
        let message = refused(label("br0 198.18.4.5/24 --set-resolv"), ErrorKind::Usage);
        assert!(message.contains("need the address dhcp"), "{message}");
        let message = refused(label("br0 198.18.4.5"), ErrorKind::Usage);
        assert!(message.starts_with("bad address \"198.18.4.5\""), "{message}");
    }

    #[test]
    fn label_words_and_quotes() {
        assert_eq!(
            split_words(" a 'b c'  \"d e\"f '' g\t").unwrap(),
            ["a", "b c", "d ef", "", "g"]
        );
        assert!(split_words("").unwrap().is_empty());
        let message = refused(label("br0 dhcp --hostname 'web"), ErrorKind::Usage);
        assert_eq!(message, "unterminated ' quote in \"br0 dhcp --hostname 'web\": close it");
        let request = wanted(label("br0 dhcp --hostname \"web\"")).request;
        assert_eq!(request.dhcp.unwrap().hostname.as_deref(), Some("web"));
        let message = refused(label("br0 dhcp --hostname 'a b'"), ErrorKind::Usage);
        assert!(message.contains("hostname"), "{message}");
    }

    #[test]
    fn label_refuses_what_a_declaration_must_not_say() {
        for (value, piece) in [
            ("br0 dhcp --timeout 5", "--timeout is for `lanyard attach`, not a declaration"),
            ("br0 dhcp --no-wait", "--no-wait is for `lanyard attach`, not a declaration"),
            ("br0 198.18.4.5/24 --host-only", "--host-only is for `lanyard attach`"),
            ("br0 198.18.4.5/24 --host-address 198.18.4.1/24", "--host-address is for"),
        ] {
            let message = refused(label(value), ErrorKind::Usage);
            assert!(message.starts_with(piece), "{value}: {message}");
            assert!(message.ends_with(": remove it"), "{value}: {message}");
        }
        assert_eq!(
            refused(label("  "), ErrorKind::Usage),
            "empty: give a host interface or a network, then addresses, e.g. \"br0 dhcp\""
        );
        let message = refused(label("-i eth2 br0 dhcp"), ErrorKind::Usage);
        assert!(message.starts_with("starts with \"-i\": the first word must be"), "{message}");
    }

    #[test]
    fn a_host_interface_must_be_allowed() {
        assert_eq!(
            refused(label("eth0 dhcp"), ErrorKind::Permission),
            "host interface eth0 is not in allowed_host_interfaces (config /etc/test/lanyard.toml): add it there or define a network on it"
        );
        let found = declarations(&facts(&[("lanyard.net", "br0 dhcp")], &[]), &Config::default());
        assert_eq!(
            refused(found, ErrorKind::Permission),
            "host interface br0 is not in allowed_host_interfaces (no config file: /etc/lanyard/lanyard.toml is absent): add it there or define a network on it"
        );
        // A network's interface is allowed by the network alone.
        let only_network =
            config("[network.lan]\nhost_interface = \"br9\"\naddressing = \"dhcp\"\n");
        let found = declarations(&facts(&[("lanyard.net", "br9 dhcp")], &[]), &only_network);
        assert_eq!(wanted(found).request.host_interface, "br9");
    }

    #[test]
    fn a_dhcp_network_implies_dhcp_and_takes_no_static_ipv4() {
        let request = wanted(label("lan")).request;
        assert_eq!(request.host_interface, "br0");
        assert!(request.dhcp.is_some());
        assert_eq!(request.mtu, Some(1500), "the network's MTU");
        let request = wanted(label("lan dhcp 2001:db8::5/64 --mtu 1400 -i eth2")).request;
        assert_eq!(request.mtu, Some(1400), "--mtu wins");
        assert_eq!(addresses(&request), ["2001:db8::5/64"]);
        assert_eq!(
            refused(label("lan 198.18.4.5/24"), ErrorKind::Usage),
            "network lan leases IPv4 addresses by DHCP: remove 198.18.4.5/24 (static IPv6 addresses may go with it)"
        );
        let message = refused(label("lan none"), ErrorKind::Usage);
        assert!(message.starts_with("network lan leases addresses by DHCP: \"none\""), "{message}");
        // A network named like an interface means the network.
        let request = wanted(label("br1")).request;
        assert_eq!(request.host_interface, "eth2");
        assert!(request.dhcp.is_some());
    }

    #[test]
    fn a_static_network_takes_the_address_and_gives_prefix_and_gateway() {
        let request = wanted(label("office 198.18.8.70")).request;
        assert_eq!(request.host_interface, "eth1");
        assert_eq!(addresses(&request), ["198.18.8.70/24@198.18.8.1"]);
        assert!(request.dhcp.is_none());
        assert_eq!(request.mtu, None);
        let request =
            wanted(label("office 198.18.8.70/24 198.18.8.71 2001:db8::70/64 -i eth2")).request;
        assert_eq!(
            addresses(&request),
            ["198.18.8.70/24@198.18.8.1", "198.18.8.71/24", "2001:db8::70/64"],
            "one default route: the gateway goes with the first address"
        );
        for (value, expected) in [
            (
                "office 198.18.8.70/16",
                "198.18.8.70/16: network office is 198.18.8.0/24, not /16: give the address alone (198.18.8.70)",
            ),
            (
                "office 198.18.9.70",
                "198.18.9.70 is outside network office (198.18.8.0/24): give an address inside it",
            ),
            (
                "office 198.18.8.70@198.18.8.2",
                "198.18.8.70@198.18.8.2: network office sets the gateway (198.18.8.1): remove @198.18.8.2",
            ),
            (
                "office",
                "network office is static (198.18.8.0/24): name the container's address in it, e.g. \"office ADDRESS\"",
            ),
            (
                "office 2001:db8::70/64",
                "network office is static (198.18.8.0/24): name the container's address in it, e.g. \"office ADDRESS\"",
            ),
            (
                "office dhcp",
                "network office is static (198.18.8.0/24): give an address in it instead of dhcp, e.g. \"office ADDRESS\"",
            ),
        ] {
            assert_eq!(refused(label(value), ErrorKind::Usage), expected, "{value}");
        }
        // The shared parser still judges the address: the subnet's broadcast is no host's.
        let message = refused(label("office 198.18.8.255"), ErrorKind::Usage);
        assert!(message.starts_with("bad address \"198.18.8.255/24@198.18.8.1\""), "{message}");
    }

    #[test]
    fn docker_pipeworks_seed_lines_verbatim() {
        let found = wanted(env("pipework_cmd=br0 -i eth0 @CONTAINER_NAME@ udhcpc "));
        assert_eq!(found.source, "env pipework_cmd");
        assert_eq!(found.text, "br0 -i eth0 test1 udhcpc ");
        assert_eq!(found.request.host_interface, "br0");
        assert_eq!(found.request.guest_ifname, "eth0");
        assert!(matches!(&found.request.guest, GuestSpec::Bare(id) if id == ID));
        assert!(found.request.dhcp.is_some());
        assert!(!found.request.dhcp_wait.wait);

        let found = wanted(env("pipework_cmd_ip=br0 -i eth0 @CONTAINER_NAME@ 198.18.4.70/24 "));
        assert_eq!(found.source, "env pipework_cmd_ip");
        assert_eq!(addresses(&found.request), ["198.18.4.70/24"]);
        assert!(found.request.dhcp.is_none());

        for method in ["dhcp", "udhcpc", "udhcpc-f", "dhclient", "dhclient-f", "dhcpcd"] {
            let found = wanted(env(&format!("pipework_cmd=br0 test1 {method}")));
            assert!(found.request.dhcp.is_some(), "{method}");
            assert_eq!(found.request.guest_ifname, "eth1", "{method}: pipework's default");
        }
        let found = wanted(env("pipework_cmd=eth1 -l vethweb test1 0/0 02:42:c6:12:00:32"));
        assert!(found.request.addresses.is_empty() && found.request.dhcp.is_none());
        assert_eq!(found.request.host_ifname.as_deref(), Some("vethweb"));
        assert_eq!(found.request.mac.map(|m| m.to_string()).as_deref(), Some("02:42:c6:12:00:32"));
    }

    #[test]
    fn every_variable_named_pipework_cmd_is_a_line() {
        let lines = [
            "apache_pipework_cmd=br0 -i eth2 test1 dhcp",
            "pipework_cmd_for_eth1=br0 test1 dhcp",
            "pipework_cmd=eth1 -i eth3 test1 198.18.4.5/24@198.18.4.1",
            "PIPEWORK_CMD=br0 -i eth4 test1 dhcp",
            "pipework_key=ignored-without-a-config-key",
        ];
        let found = declarations(&facts(&[], &lines), &sample_config());
        assert!(found.refused.is_empty(), "{:?}", found.refused);
        let sources: Vec<&str> = found.wanted.iter().map(|d| d.source.as_str()).collect();
        assert_eq!(
            sources,
            ["env apache_pipework_cmd", "env pipework_cmd", "env pipework_cmd_for_eth1"]
        );
    }

    #[test]
    fn every_macro_is_expanded() {
        let mut container =
            facts(&[(COMPOSE_NUMBER_LABEL, "3"), (COMPOSE_PROJECT_LABEL, "shop")], &[]);
        assert_eq!(
            expand_macros(
                "@CONTAINER_NAME@ @CONTAINER_ID@ @HOSTNAME@ @INSTANCE@ @COMPOSE_PROJECT_NAME@",
                &container
            )
            .unwrap(),
            format!("test1 {ID} 4f1e2d3c4b5a 3 shop")
        );
        // '@' that starts no macro is left alone: gateways, VLANs, lower case.
        for text in ["198.18.0.50/24@198.18.0.1", "02:42:c6:12:00:32@10", "a@b@c", "@", "@@"] {
            assert_eq!(expand_macros(text, &container).unwrap(), text);
        }
        // End to end: macros in the guest, an address and the interface name.
        container.env = vec![
            "pipework_cmd=br0 -i @COMPOSE_PROJECT_NAME@@INSTANCE@ @CONTAINER_ID@ 198.18.4.@INSTANCE@/24".into(),
        ];
        let found = wanted(declarations(&container, &sample_config()));
        assert_eq!(found.text, format!("br0 -i shop3 {ID} 198.18.4.3/24"));
        assert_eq!(found.request.guest_ifname, "shop3");
        assert_eq!(addresses(&found.request), ["198.18.4.3/24"]);
        container.hostname = "test1".into();
        container.env = vec!["pipework_cmd=br0 @HOSTNAME@ dhcp".into()];
        wanted(declarations(&container, &sample_config()));
    }

    #[test]
    fn a_macro_without_its_source_refuses_that_line() {
        let mut container = facts(&[], &[]);
        container.hostname.clear();
        for (line, expected) in [
            (
                "pipework_cmd=br0 @CONTAINER_NAME@ 198.18.4.@INSTANCE@/24",
                "macro @INSTANCE@ needs the label com.docker.compose.container-number (docker compose sets it), which this container lacks",
            ),
            (
                "pipework_cmd=br0 -i @COMPOSE_PROJECT_NAME@ @CONTAINER_NAME@ dhcp",
                "macro @COMPOSE_PROJECT_NAME@ needs the label com.docker.compose.project (docker compose sets it), which this container lacks",
            ),
            (
                "pipework_cmd=br0 @HOSTNAME@ dhcp",
                "macro @HOSTNAME@ needs a Config.Hostname, which this container lacks",
            ),
            (
                "pipework_cmd=br0 @CONTAINER_NAMES@ dhcp",
                "unknown macro @CONTAINER_NAMES@: the macros are @CONTAINER_NAME@, @CONTAINER_ID@, @HOSTNAME@, @INSTANCE@ and @COMPOSE_PROJECT_NAME@",
            ),
        ] {
            container.env = vec![line.to_string()];
            let found = declarations(&container, &sample_config());
            assert_eq!(found.refused[0].source, "env pipework_cmd");
            assert_eq!(refused(found, ErrorKind::Usage), expected, "{line}");
        }
        container.name.clear();
        container.env = vec!["pipework_cmd=br0 @CONTAINER_NAME@ dhcp".into()];
        assert_eq!(
            refused(declarations(&container, &sample_config()), ErrorKind::Usage),
            "macro @CONTAINER_NAME@ needs a container name, which this container lacks"
        );
    }

    #[test]
    fn a_malformed_or_foreign_line_is_refused() {
        for (line, kind, expected) in [
            (
                "pipework_cmd=br0 -i eth0 @CONTAINER_NAME@ ",
                ErrorKind::Usage,
                "pipework: missing IP/PREFIX[@GATEWAY] or dhcp after guest \"test1\"",
            ),
            (
                "pipework_cmd=br0 -z x test1 dhcp",
                ErrorKind::Usage,
                "pipework: unknown option \"-z\"; options before GUEST are -i GUESTIF and -l HOSTSIDEIF",
            ),
            (
                "pipework_cmd=",
                ErrorKind::Usage,
                "pipework: missing arguments; usage: ",
            ),
            (
                "pipework_cmd=br0 test1 198.18.4.5/24@10",
                ErrorKind::Unsupported,
                "unsupported by lanyard: pipework @VLAN suffix",
            ),
            (
                "pipework_cmd=br0 -i eth0 web udhcpc",
                ErrorKind::Usage,
                "the pipework line names container \"web\", not this one (test1, id 4f1e2d3c4b5a): write @CONTAINER_NAME@ as the guest",
            ),
            (
                "pipework_cmd=route test1 add 198.19.0.0/16 via 198.18.4.1",
                ErrorKind::Usage,
                "a pipework route line is not a declaration (only attach lines are)",
            ),
            (
                "pipework_cmd=--wait -i eth0",
                ErrorKind::Usage,
                "pipework --wait runs inside the container",
            ),
            (
                "pipework_cmd=mac:02:00:c6:12:15:01 test1 dhcp",
                ErrorKind::Unsupported,
                "unsupported by lanyard: host interface mac:02:00:c6:12:15:01 in a declaration",
            ),
            (
                "pipework_cmd=eth0 test1 dhcp",
                ErrorKind::Permission,
                "host interface eth0 is not in allowed_host_interfaces (config /etc/test/lanyard.toml)",
            ),
        ] {
            let message = refused(env(line), kind);
            assert!(message.starts_with(expected), "{line}: {message}");
        }
        // The guest may be the name (with Docker's '/'), the id, or a prefix of the id.
        for guest in ["test1", "/test1", ID, "4f1e2d3c4b5a", "4f1e"] {
            wanted(env(&format!("pipework_cmd=br0 {guest} dhcp")));
        }
        refused(env("pipework_cmd=br0 4f1f dhcp"), ErrorKind::Usage);
    }

    #[test]
    fn host_routes_from_the_container_or_the_config() {
        let line = "pipework_cmd=eth1 test1 dhcp";
        for (value, expected) in [
            ("1", true),
            ("yes", true),
            ("true", true),
            ("anything", true),
            ("0", false),
            ("false", false),
            ("No", false),
            ("", false),
        ] {
            for name in HOST_ROUTE_ENV {
                let setting = format!("{name}={value}");
                let found = declarations(
                    &facts(&[("lanyard.net.x", "eth1 dhcp -i eth2")], &[line, &setting]),
                    &sample_config(),
                );
                assert_eq!(found.wanted.len(), 2, "{:?}", found.refused);
                for declaration in &found.wanted {
                    assert_eq!(
                        declaration.host_route, expected,
                        "{setting}: {}",
                        declaration.source
                    );
                }
            }
        }
        let mut everywhere = sample_config();
        everywhere.host_routes = true;
        let found = declarations(&facts(&[("lanyard.net", "br0 dhcp")], &[]), &everywhere);
        assert!(wanted(found).host_route);
    }

    #[test]
    fn pipework_key_when_the_config_sets_one() {
        let mut keyed = sample_config();
        keyed.pipework_key = Some("k1".into());
        let labels = [("lanyard.net", "br0 dhcp"), ("lanyard.net.bad", "eth0 dhcp -i eth3")];
        let line = "pipework_cmd=br0 -i eth2 test1 dhcp";
        for (key, expected) in [
            (None, "pipework_key missing: the daemon acts only on containers with its key (config /etc/test/lanyard.toml); add -e pipework_key=KEY"),
            (Some("pipework_key=k2"), "pipework_key does not match the daemon's (config /etc/test/lanyard.toml): give the container the key the config sets"),
            (Some("pipework_key="), "pipework_key does not match the daemon's"),
        ] {
            let env: Vec<&str> = [line].into_iter().chain(key).collect();
            let found = declarations(&facts(&labels, &env), &keyed);
            assert!(found.wanted.is_empty(), "{key:?}: {:?}", found.wanted);
            let sources: Vec<&str> = found.refused.iter().map(|r| r.source.as_str()).collect();
            assert_eq!(sources, ["env pipework_cmd", "label lanyard.net", "label lanyard.net.bad"]);
            for refusal in &found.refused {
                assert_eq!(refusal.error.kind(), ErrorKind::Permission);
                assert!(refusal.error.to_string().starts_with(expected), "{key:?}: {}", refusal.error);
            }
        }
        let found = declarations(&facts(&labels, &[line, "pipework_key=k1"]), &keyed);
        assert_eq!(found.wanted.len(), 2);
        assert_eq!(found.refused.len(), 1, "only the bad label");
        assert_eq!(found.refused[0].source, "label lanyard.net.bad");
    }

    #[test]
    fn one_guest_interface_twice_refuses_the_later_only() {
        let labels = [
            ("lanyard.net", "br0 dhcp"),
            ("lanyard.net.again", "eth1 198.18.4.5/24"),
            ("lanyard.net.other", "eth1 198.18.4.6/24 -i eth2"),
            ("lanyard.net.broken", "br0 --mtu x -i eth2"),
        ];
        let env = ["pipework_cmd=br0 -i eth2 test1 udhcpc "];
        let found = declarations(&facts(&labels, &env), &sample_config());
        let wanted: Vec<&str> = found.wanted.iter().map(|d| d.source.as_str()).collect();
        assert_eq!(wanted, ["env pipework_cmd", "label lanyard.net"]);
        let refused: Vec<(&str, String)> =
            found.refused.iter().map(|r| (r.source.as_str(), r.error.to_string())).collect();
        assert_eq!(
            refused,
            [
                (
                    "label lanyard.net.again",
                    "guest interface eth1 is also declared by label lanyard.net: give one of them another -i".to_string()
                ),
                (
                    "label lanyard.net.broken",
                    "invalid value 'x' for '--mtu <MTU>': invalid digit found in string".to_string()
                ),
                (
                    "label lanyard.net.other",
                    "guest interface eth2 is also declared by env pipework_cmd: give one of them another -i".to_string()
                ),
            ]
        );
        assert_eq!(found.refused[0].error.kind(), ErrorKind::Conflict);
    }
}
