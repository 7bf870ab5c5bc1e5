//! The command line: parse, call the library, print, pick the exit code. The kernel is reached
//! only through library calls (the host and guest namespaces are handles the library is given).

pub mod pipework;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::attach::{attach, AttachRequest, Attached, DhcpWait, DEFAULT_GUEST_IFNAME};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::guest::GuestSpec;
use crate::host::Host;
use crate::netns::Netns;
use crate::route_cmd::{change_route, RouteChange};
use crate::spec::{self, MacAddr, MacScheme, MacvlanMode, RouteSpec};
use crate::state::DEFAULT_STATE_DIR;
use pipework::{HostInterface, PipeworkCommand, RouteAction};

#[derive(Parser, Debug)]
#[command(
    name = "lanyard",
    version,
    about = "Put Docker containers and network namespaces directly on a real LAN",
    long_about = "Put Docker containers and network namespaces directly on a real LAN: a second \
NIC on a Linux bridge (veth) or a macvlan on a physical interface, with static addresses.\n\n\
GUEST is a Docker container name or ID (DOCKER_HOST, default /var/run/docker.sock), pid:N (that \
process's network namespace), netns:NAME (/run/netns/NAME) or a path to a namespace file. A bare \
number is a pid only when Docker has no such container.\n\n\
The namespace lanyard runs in is the host: bridges and macvlan parents are looked up there.\n\
State: one JSON record per attachment in the state directory (default: the config's state_dir, \
else /var/lib/lanyard).\n\
Config: /etc/lanyard/lanyard.toml when present, or the file --config / LANYARD_CONFIG names."
)]
pub struct Cli {
    /// Config file (lanyard.toml). Named here or in LANYARD_CONFIG, it must exist; without
    /// either, /etc/lanyard/lanyard.toml is read when present.
    #[arg(long, global = true, env = "LANYARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where attachment records live (default: the config's state_dir, else /var/lib/lanyard).
    #[arg(long, global = true, env = "LANYARD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seed for stable MACs and host interface names (default: /etc/machine-id).
    #[arg(long, global = true, env = "LANYARD_HOST_ID")]
    pub host_id: Option<String>,
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Subcommand, Debug)]
pub enum Commands {
    /// Give GUEST an interface on HOST_IF with static addresses, a DHCP lease, or none.
    ///
    /// HOST_IF: an existing Linux bridge is joined (a missing name starting with "br" is created
    /// as a bridge, unless --no-create); any other existing interface gets a macvlan child inside
    /// the guest; with --host-only, HOST_IF is the name of a new point-to-point veth's host end.
    ///
    /// ADDRESS: CIDR[@GATEWAY], IPv4 and IPv6 together, or "none" for a link without addresses,
    /// or "dhcp" (optionally with static IPv6 addresses): the lanyard daemon acquires a DHCPv4
    /// lease and keeps it renewed for the guest's life (see `lanyard daemon --help`).
    /// @GATEWAY replaces the guest's default route for that family (restored on detach); a
    /// gateway outside the address's subnet is reached through an on-link host route.
    #[command(
        after_help = "Examples:\n  lanyard attach br0 web 198.18.0.50/24@198.18.0.1\n  lanyard attach br0 web 198.18.0.51/24 2001:db8::51/64@fe80::1 -i lan0 --mtu 1400 --route 198.19.0.0/16@198.18.0.254\n  lanyard attach uplink0 pid:4242 198.18.0.60/24@198.18.0.1\n  lanyard attach --host-only vhost0 netns:lab 198.18.5.2/24 --host-address 198.18.5.1/24\n  lanyard attach br0 web none"
    )]
    Attach(Box<AttachArgs>),
    /// Remove the interfaces lanyard gave GUEST (succeeds if they are already gone).
    Detach {
        guest: String,
        /// Only this guest interface.
        #[arg(short = 'i', long = "guest-ifname")]
        guest_ifname: Option<String>,
    },
    /// Print lanyard's records for GUEST (or --all) as JSON, checked against the kernel.
    Inspect {
        guest: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// pipework's own syntax: HOSTIF [-i CIF] [-l LOCALIF] GUEST IP/PREFIX[@GW] [MAC],
    /// route GUEST add|del|replace PREFIX [via GW] [dev IF] [metric N], --wait [-i CIF].
    Pipework {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Keep DHCP leases and wire the containers that declare their LAN.
    ///
    /// Leases: every DHCP exchange and every lease of this state directory in one process,
    /// saved as they change and resumed after a restart, even after SIGKILL.
    ///
    /// Containers: follows Docker's events (DOCKER_HOST, default /var/run/docker.sock; Docker
    /// may come up later) and wires every running container with a `lanyard.net` /
    /// `lanyard.net.NAME` label or a docker-pipework `pipework_cmd` variable, on start, after a
    /// restart of anything, and removes what a removed container had. Declarations are judged
    /// by the config (allowed_host_interfaces, [network.NAME], pipework_key, host_routes): with
    /// no config, none is allowed. `lanyard status` shows every container and why one was
    /// refused. `metrics = "127.0.0.1:9731"` in the config serves Prometheus metrics.
    ///
    /// One daemon per state directory: its control socket is control.sock there (directory
    /// 0700, socket 0600; it answers only root or its own user), so an instance with its own
    /// --state-dir never meets the system one. `attach ... dhcp` starts it when none answers
    /// (a lock keeps two attaches from starting two), detached: new session, output to
    /// daemon.log in the state directory, in the namespace the CLI runs in. Started by hand or
    /// by systemd with the same state directory, it is the same daemon. SIGHUP reads the config
    /// file again (a broken one is refused and the current one kept, said in the log) and
    /// reconciles; SIGTERM or SIGINT stops it cleanly, leaving containers wired and leases
    /// recorded.
    Daemon,
    /// How lanyard is on this host: the state directory and its attachments, the config in
    /// force, and the daemon (running or not, uptime, leases by state, Docker's connection,
    /// containers wired / pending / refused / failed with the reason, last errors). Starts
    /// nothing.
    Status {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Every lease the daemon holds, one line each.
    Leases {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Internal: wait for the port to forward and announce a new attachment (spawned detached by
    /// attach).
    #[command(hide = true)]
    AnnounceHelper {
        #[arg(long)]
        record: String,
        #[arg(long)]
        netns: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    pub host_interface: String,
    pub guest: String,
    /// CIDR[@GATEWAY] ..., "none", or "dhcp" [IPv6 CIDR ...].
    pub addresses: Vec<String>,
    /// Interface name inside the guest.
    #[arg(short = 'i', long = "guest-ifname", default_value = DEFAULT_GUEST_IFNAME)]
    pub guest_ifname: String,
    /// Name of the veth's host end (default: derived, stable, "ly" + 13 characters).
    #[arg(short = 'l', long = "host-ifname")]
    pub host_ifname: Option<String>,
    /// Point-to-point veth: HOST_IF is the new host end, which joins no bridge.
    #[arg(long)]
    pub host_only: bool,
    /// Address for the host end of a --host-only link (repeatable).
    #[arg(long = "host-address")]
    pub host_addresses: Vec<IpNet>,
    /// Extra route in the guest, CIDR@GATEWAY (repeatable).
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// Guest interface MTU (default: the host interface's; never above it).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Guest MAC (default: stable, derived from host id, guest and interface name); refused
    /// when another lanyard attachment or the bridge's forwarding table already has it.
    #[arg(long)]
    pub mac: Option<MacAddr>,
    /// How to derive the MAC: stable (default) or network-wrapper (IPv4 octets + 16 random bits;
    /// collides often: ~26% chance among 200 guests).
    #[arg(long, default_value = "stable")]
    pub mac_scheme: MacScheme,
    /// macvlan mode when HOST_IF is not a bridge.
    #[arg(long, default_value = "bridge")]
    pub macvlan_mode: MacvlanMode,
    /// Never create a missing br* bridge.
    #[arg(long)]
    pub no_create: bool,
    /// macvlan: give the host a route to the guest's addresses through a macvlan shim on the
    /// same parent (the host cannot reach its own macvlan guests otherwise); needs an address
    /// of the host's on the parent in the guest's subnet.
    #[arg(long)]
    pub host_route: bool,
    /// Check first that no one on the segment uses the addresses (ARP probe / DAD), waiting MS
    /// milliseconds for an answer (default 100). With dhcp: the daemon probes each offered
    /// address (200 ms) and declines it if someone answers.
    #[arg(long, value_name = "MS", num_args = 0..=1, require_equals = true, default_missing_value = "100")]
    pub probe: Option<u64>,
    /// With `dhcp`: the hostname sent to the server (option 12; default the container or
    /// namespace name) so the LAN's DNS can register it.
    #[arg(long)]
    pub hostname: Option<String>,
    /// With `dhcp`: send the hostname as a client FQDN (option 81) instead of option 12; implied
    /// when the name has a dot.
    #[arg(long)]
    pub fqdn: bool,
    /// With `dhcp`: the client identifier (option 61); default stable per guest and interface.
    #[arg(long)]
    pub client_id: Option<String>,
    /// With `dhcp`: write the lease's DNS servers and search list into the guest's own
    /// resolv.conf (never the host's).
    #[arg(long)]
    pub set_resolv: bool,
    /// With `dhcp`: IPv6 router advertisements and SLAAC on this interface (EUI-64 from the
    /// stable MAC).
    #[arg(long)]
    pub slaac: bool,
    /// With `dhcp`: give up (and undo the attach) if no lease arrives within SECONDS.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub timeout: u64,
    /// With `dhcp`: hand the interface to the daemon and return at once.
    #[arg(long)]
    pub no_wait: bool,
    /// With `[dns_update]` in the config: register this label (in the config's zone) instead
    /// of the config's `name` template; `{container}` etc. may appear in it too.
    #[arg(long, value_name = "NAME")]
    pub dns_name: Option<String>,
    /// Never register this attachment in DNS (with `dhcp`, the DHCP server may still do it:
    /// see --hostname).
    #[arg(long, conflicts_with = "dns_name")]
    pub no_dns_update: bool,
}

/// What every command runs with: the global options resolved against the config file.
pub struct Settings {
    /// `--state-dir` / LANYARD_STATE_DIR, else the config's `state_dir`, else the default.
    pub state_dir: PathBuf,
    pub host_id: Option<String>,
    pub config: Config,
}

impl Settings {
    /// Loads the config (a broken or missing explicit file fails the command) and applies it.
    pub fn resolve(cli: &Cli) -> Result<Settings> {
        let config = Config::load(cli.config.as_deref())?;
        let state_dir = cli
            .state_dir
            .clone()
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Ok(Settings { state_dir, host_id: cli.host_id.clone(), config })
    }

    /// The options alone, for an internal command whose caller passes everything it needs.
    fn without_config(cli: &Cli) -> Settings {
        Settings {
            state_dir: cli.state_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            host_id: cli.host_id.clone(),
            config: Config::default(),
        }
    }
}

fn host_from(settings: &Settings) -> Result<Host> {
    let host_id = crate::naming::read_host_id(settings.host_id.as_deref())?;
    let host = Host::new(Netns::current()?, &settings.state_dir, host_id)?;
    Ok(match &settings.config.source {
        Some(file) => host.with_config_file(file),
        None => host,
    })
}

fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::new(
            ErrorKind::Permission,
            "lanyard needs root (CAP_NET_ADMIN): run it with sudo",
        ));
    }
    Ok(())
}

/// Run the CLI; returns the process exit code.
pub fn main_with(args: Vec<String>) -> i32 {
    let invoked_as_pipework = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|name| name == "pipework");
    let result = if invoked_as_pipework {
        // Invoked as `pipework` there are no lanyard options, only the environment.
        let from_env =
            |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cli = Cli {
            config: from_env("LANYARD_CONFIG"),
            state_dir: from_env("LANYARD_STATE_DIR"),
            host_id: std::env::var("LANYARD_HOST_ID").ok(),
            command: Commands::Pipework { args: args[1..].to_vec() },
        };
        run(&cli)
    } else {
        match Cli::try_parse_from(&args) {
            Ok(cli) => run(&cli),
            Err(e) => {
                use clap::error::ErrorKind as ClapKind;
                if matches!(e.kind(), ClapKind::DisplayHelp | ClapKind::DisplayVersion) {
                    let _ = e.print();
                    return 0;
                }
                // Bad input gets one line, like every other lanyard error.
                eprintln!("lanyard: {} (see --help)", clap_error_line(&e));
                return 2;
            }
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lanyard: {e}");
            e.exit_code()
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let settings = &match &cli.command {
        // The helper is handed its state directory by the attach that spawned it, which has
        // already read the config; reading it again could only fail on a file edited since.
        Commands::AnnounceHelper { .. } => Settings::without_config(cli),
        _ => Settings::resolve(cli)?,
    };
    match &cli.command {
        Commands::Attach(args) => run_attach(settings, &attach_request(args)?),
        Commands::Detach { guest, guest_ifname } => {
            require_root()?;
            let host = host_from(settings)?;
            let done = crate::detach(&host, guest, guest_ifname.as_deref())?;
            if done.interfaces.is_empty() {
                println!("{guest}: nothing attached by lanyard");
            } else {
                println!("{guest}: detached {}", done.interfaces.join(", "));
            }
            for warning in &done.warnings {
                eprintln!("lanyard: warning: {warning}");
            }
            for bridge in done.removed_bridges {
                println!("removed bridge {bridge} (lanyard created it and nothing uses it now)");
            }
            Ok(())
        }
        Commands::Inspect { guest, all } => {
            require_root()?;
            let token = match (guest, all) {
                (Some(_), true) => return Err(Error::usage("give a guest or --all, not both")),
                (None, false) => {
                    return Err(Error::usage("give a guest, or --all for every guest"))
                }
                (Some(guest), false) => Some(guest.as_str()),
                (None, true) => None,
            };
            let host = host_from(settings)?;
            let views = crate::inspect(&host, token)?;
            if let (Some(token), true) = (token, views.is_empty()) {
                return Err(Error::not_found(format!("lanyard has no record of {token}")));
            }
            let out = if token.is_some() && views.len() == 1 {
                serde_json::to_string_pretty(&views[0])
            } else {
                serde_json::to_string_pretty(&views)
            };
            println!("{}", out.unwrap_or_default());
            Ok(())
        }
        Commands::Pipework { args } => run_pipework(settings, args),
        Commands::Daemon => {
            require_root()?;
            // The daemon derives nothing from the host id; it must start even where there is
            // no /etc/machine-id (the CLI that needs one reports it).
            let host_id =
                crate::naming::read_host_id(settings.host_id.as_deref()).unwrap_or_default();
            crate::daemon::serve(
                Host::new(Netns::current()?, &settings.state_dir, host_id)?,
                settings.config.clone(),
                cli.config.clone(),
            )
        }
        Commands::Status { json } => {
            require_root()?;
            print_status(settings, *json)
        }
        Commands::Leases { json } => {
            require_root()?;
            let response = crate::daemon::control::try_request(
                &settings.state_dir,
                &crate::daemon::control::Request::Leases,
                Duration::from_secs(5),
            )?;
            let leases = match response {
                None => Vec::new(),
                Some(response) if response.ok => {
                    response.data.as_array().cloned().unwrap_or_default()
                }
                Some(response) => return Err(response.into_error()),
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&leases).unwrap_or_default());
            } else if leases.is_empty() {
                println!("no leases (is the daemon running for {}?)", settings.state_dir.display());
            } else {
                for lease in leases {
                    let field = |key: &str| lease[key].as_str().unwrap_or("-").to_string();
                    println!(
                        "{} {} {} {} server {} expires {}",
                        field("Guest"),
                        field("Interface"),
                        field("State"),
                        field("Address"),
                        field("Server"),
                        field("ExpiresAt")
                    );
                }
            }
            Ok(())
        }
        Commands::AnnounceHelper { record, netns } => {
            match crate::ready::announce_from_record(&settings.state_dir, record, netns) {
                Ok(crate::ready::Announced::Sent | crate::ready::Announced::Overtaken) => Ok(()),
                // The helper's stdio is closed; a real failure goes to a log beside the records.
                Err(e) => {
                    log_helper_failure(&settings.state_dir, &format!("announce {record}: {e}"));
                    Err(e)
                }
            }
        }
    }
}

/// Attach (with `dhcp`, the library waits for the lease), announce static addresses from a
/// detached helper, print what was made.
fn run_attach(settings: &Settings, request: &AttachRequest) -> Result<()> {
    require_root()?;
    let host = host_from(settings)?;
    let attached = attach(&host, request)?;
    print_attached(&attached);
    if let Some(warning) = crate::daemon::dns::hand_over(&host, &settings.config, &attached.record)
    {
        eprintln!("lanyard: warning: {warning}");
    }
    match &attached.lease {
        Some(lease) => match lease["Address"].as_str() {
            Some(address) => {
                println!("lease {address} from {}", lease["Server"].as_str().unwrap_or("?"))
            }
            None => println!("lease pending: the daemon keeps asking (lanyard leases)"),
        },
        None => spawn_announcer(&settings.state_dir, &attached),
    }
    Ok(())
}

/// clap's complaint as one line: its first line without the "error: " prefix, so no usage
/// dump and no "For more information" follow. The CLI adds " (see --help)".
pub fn clap_error_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or("bad arguments");
    first.trim_start_matches("error: ").to_string()
}

/// Parses `lanyard attach`'s arguments (`words` starts with the subcommand's name, then
/// HOST_IF GUEST ...) with the very definition the CLI uses, so a container declaration gets
/// the same messages as `lanyard attach`. The matches say which options were given (an option
/// with a default cannot tell otherwise). A clap error is a one-line Usage error.
pub fn parse_attach_args(words: &[String]) -> Result<(AttachArgs, clap::ArgMatches)> {
    use clap::FromArgMatches;
    let command = AttachArgs::augment_args(
        clap::Command::new("attach").disable_help_flag(true).disable_version_flag(true),
    );
    let matches =
        command.try_get_matches_from(words).map_err(|e| Error::usage(clap_error_line(&e)))?;
    let args =
        AttachArgs::from_arg_matches(&matches).map_err(|e| Error::usage(clap_error_line(&e)))?;
    Ok((args, matches))
}

/// `lanyard attach`'s arguments as a request: every check that needs no kernel. Shared by the
/// CLI and container declarations ([`crate::declare`]).
pub fn attach_request(args: &AttachArgs) -> Result<AttachRequest> {
    let mut request = AttachRequest::new(&args.host_interface, GuestSpec::parse(&args.guest)?);
    let dhcp = args.addresses.iter().any(|a| a == "dhcp");
    let statics: Vec<String> = args.addresses.iter().filter(|a| *a != "dhcp").cloned().collect();
    request.addresses = spec::parse_addresses(&statics)?;
    if dhcp {
        if args.timeout == 0 || args.timeout > 86_400 {
            return Err(Error::usage("--timeout must be 1 to 86400 seconds"));
        }
        if args.set_resolv && matches!(request.guest, GuestSpec::Path(_)) {
            return Err(Error::usage(
                "--set-resolv needs a container, pid: or netns: guest (a namespace path has no files to write)",
            ));
        }
        if request.addresses.iter().any(|a| a.address.addr().is_ipv4()) {
            return Err(Error::usage(
                "dhcp and a static IPv4 address exclude each other; static IPv6 may go with dhcp",
            ));
        }
        request.dhcp_wait =
            DhcpWait { timeout: Duration::from_secs(args.timeout), wait: !args.no_wait };
        request.dhcp = Some(crate::state::DhcpSettings {
            hostname: args.hostname.clone(),
            fqdn: args.fqdn,
            client_id: args.client_id.clone().unwrap_or_default(),
            set_resolv: args.set_resolv,
            slaac: args.slaac,
            probe: args.probe.is_some(),
        });
        // What the daemon's client would refuse is refused here, before any link exists.
        let mut check = crate::dhcp::ClientConfig::new([0x02, 0, 0, 0, 0, 1], Vec::new());
        if let Some(id) = &args.client_id {
            check.client_id = [&[0u8][..], id.as_bytes()].concat();
        }
        match &args.hostname {
            Some(name) if args.fqdn || name.contains('.') => check.fqdn = Some(name.clone()),
            Some(name) => check.hostname = Some(name.clone()),
            None => {}
        }
        check.validate()?;
    } else if args.hostname.is_some()
        || args.client_id.is_some()
        || args.set_resolv
        || args.slaac
        || args.no_wait
        || args.fqdn
    {
        return Err(Error::usage("--hostname, --fqdn, --client-id, --set-resolv, --slaac and --no-wait need the address dhcp"));
    }
    request.guest_ifname = args.guest_ifname.clone();
    request.host_ifname = args.host_ifname.clone();
    request.host_only = args.host_only;
    request.host_addresses = args.host_addresses.clone();
    request.routes =
        args.routes.iter().map(|r| spec::parse_route(r)).collect::<Result<Vec<RouteSpec>>>()?;
    request.mtu = args.mtu;
    request.mac = args.mac;
    request.mac_scheme = args.mac_scheme;
    request.macvlan_mode = args.macvlan_mode;
    request.no_create = args.no_create;
    request.host_route = args.host_route;
    request.probe = args.probe.map(Duration::from_millis);
    if let Some(name) = &args.dns_name {
        // Checked now as the config's template is, not first by the daemon after the attach.
        crate::config::check_dns_name_template(name)
            .map_err(|e| Error::usage(format!("--dns-name {name:?}: {}", e.message())))?;
    }
    request.dns = crate::state::DnsChoice {
        name: args.dns_name.clone(),
        off: args.no_dns_update,
        ..Default::default()
    };
    request.validate()?;
    Ok(request)
}

/// `lanyard status`: what is recorded, the config, and the daemon if one answers.
fn print_status(settings: &Settings, json: bool) -> Result<()> {
    use crate::daemon::control::{try_request, Request};
    let daemon = match try_request(&settings.state_dir, &Request::Status, Duration::from_secs(5))? {
        None => None,
        Some(answer) if answer.ok => Some(answer.data),
        Some(answer) => return Err(answer.into_error()),
    };
    // Reading, never creating: a host that never attached anything has no state directory.
    let attachments = if settings.state_dir.is_dir() {
        crate::state::StateDir::open(&settings.state_dir)?.records()?.len()
    } else {
        0
    };
    let config = settings.config.source.as_ref().map(|p| p.display().to_string());
    let warnings = config_warnings(&settings.config);
    if json {
        let status = serde_json::json!({
            "StateDir": settings.state_dir,
            "Attachments": attachments,
            "Config": config,
            "Warnings": warnings,
            "Daemon": daemon,
        });
        println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
        return Ok(());
    }
    println!("state dir {}: {attachments} attachment(s) recorded", settings.state_dir.display());
    match &config {
        Some(file) => println!("config: {file}"),
        None => println!("config: defaults (no {})", crate::config::DEFAULT_CONFIG_PATH),
    }
    for warning in &warnings {
        println!("warning: {warning}");
    }
    match daemon {
        None => {
            println!(
                "daemon: not running (attach ... dhcp starts it; `lanyard daemon` or the systemd unit keeps it)"
            );
            match &settings.config.docker_plugin {
                Some(name) => println!(
                    "docker plugin: not serving {} (the daemon serves it)",
                    crate::plugin::socket_path(name).display()
                ),
                None => println!("docker plugin: off (docker_plugin = \"\" in the config)"),
            }
        }
        Some(data) => {
            let by_state: Vec<String> = data["LeasesByState"]
                .as_object()
                .map(|states| states.iter().map(|(state, n)| format!("{state} {n}")).collect())
                .unwrap_or_default();
            let uptime = humantime::format_duration(Duration::from_secs(
                data["UptimeSeconds"].as_u64().unwrap_or(0),
            ));
            println!(
                "daemon: running (pid {}, up {uptime}), {} lease(s){}; {} guest(s) reachable",
                data["Pid"],
                data["Leases"],
                if by_state.is_empty() {
                    String::new()
                } else {
                    format!(": {}", by_state.join(", "))
                },
                data["GuestsAlive"],
            );
            print_docker_status(&data["Docker"]);
            print_plugin_status(&data["DockerPlugin"]);
            print_dns_status(&data["Dns"]);
        }
    }
    Ok(())
}

/// The daemon's Docker network plugin: its socket, then each network.
fn print_plugin_status(plugin: &serde_json::Value) {
    // A daemon older than this CLI (upgraded, not yet restarted) reports no plugin section.
    if plugin.is_null() {
        println!("docker plugin: not reported by this daemon (restart it to see the plugin)");
        return;
    }
    let socket = plugin["Socket"].as_str().unwrap_or("-");
    match (plugin["Serving"].as_bool(), plugin["Why"].as_str()) {
        (Some(true), _) => println!("docker plugin: serving {socket}"),
        (_, Some(why)) if plugin["Name"].is_null() => println!("docker plugin: off ({why})"),
        (_, why) => println!("docker plugin: not serving {socket}: {}", why.unwrap_or("?")),
    }
    if let Some(error) = plugin["StoreError"].as_str() {
        println!("  error: {error}");
    }
    for network in plugin["Networks"].as_array().into_iter().flatten() {
        let leases = match network["Leases"].as_u64() {
            None => String::new(),
            Some(n) => {
                let states: Vec<String> = network["LeasesByState"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(state, count)| format!("{state} {count}"))
                    .collect();
                let states = if states.is_empty() {
                    String::new()
                } else {
                    format!(": {}", states.join(", "))
                };
                format!(", {n} lease(s){states}")
            }
        };
        println!(
            "  network {} on {}: {}, {} endpoint(s){leases}",
            network["Id"].as_str().unwrap_or("?"),
            network["Parent"].as_str().unwrap_or("?"),
            network["Addressing"].as_str().unwrap_or("?"),
            network["Endpoints"],
        );
    }
}

/// What in the config is legal but probably not meant: a network named like an interface of
/// this host (a declaration naming it means the network).
fn config_warnings(config: &crate::config::Config) -> Vec<String> {
    let Ok(mut netlink) =
        Netns::current().and_then(|netns| crate::netlink::Netlink::open(&netns, "this host"))
    else {
        return Vec::new();
    };
    config
        .networks
        .iter()
        .filter(|(name, _)| netlink.link_by_name(name).ok().flatten().is_some())
        .map(|(name, network)| {
            format!(
                "network \"{name}\" has the name of an interface of this host: a declaration \
                 naming {name} means the network (on {}), not the interface",
                network.host_interface
            )
        })
        .collect()
}

/// The daemon's DNS updates: where, how many names, what waits and why.
fn print_dns_status(dns: &serde_json::Value) {
    if dns.is_null() {
        println!("dns updates: off (no [dns_update] in the daemon's config)");
        return;
    }
    println!(
        "dns updates: zone {} on {}: {} name(s) registered, {} update(s) pending",
        dns["Zone"].as_str().unwrap_or("?"),
        dns["Server"].as_str().unwrap_or("?"),
        dns["Registered"],
        dns["Pending"],
    );
    for (record, error) in dns["Failing"].as_object().into_iter().flatten() {
        println!("  failing: {record}: {}", error.as_str().unwrap_or(""));
    }
    if let Some(error) = dns["LastError"].as_str() {
        println!("  last error: {error}");
    }
}

/// The daemon's Docker side: the connection, then each container with declarations.
fn print_docker_status(docker: &serde_json::Value) {
    if docker.is_null() {
        println!("docker: not watched");
        return;
    }
    let host = docker["docker_host"].as_str().unwrap_or("?");
    if docker["connected"].as_bool() == Some(true) {
        println!(
            "docker: connected to {host} ({} reconnect(s); last reconcile: {} container(s) in {} ms)",
            docker["reconnects"], docker["last_reconcile_containers"], docker["last_reconcile_ms"]
        );
    } else {
        println!(
            "docker: not connected to {host}: {} (retrying)",
            docker["connection_error"].as_str().unwrap_or("not tried yet")
        );
    }
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    let mut lines = Vec::new();
    for (id, container) in docker["containers"].as_object().into_iter().flatten() {
        let name = container["name"].as_str().unwrap_or("");
        for interface in container["interfaces"].as_array().into_iter().flatten() {
            let state = interface["state"].as_str().unwrap_or("?");
            *counts.entry(state.to_string()).or_default() += 1;
            let reason = interface["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
            lines.push(format!(
                "  {name} ({}) {} {}: {state}{reason}",
                &id[..id.len().min(12)],
                interface["source"].as_str().unwrap_or(""),
                interface["guest_ifname"].as_str().unwrap_or("-"),
            ));
        }
    }
    let summary: Vec<String> = counts.iter().map(|(state, n)| format!("{n} {state}")).collect();
    println!(
        "containers: {}",
        if summary.is_empty() { "none declared".to_string() } else { summary.join(", ") }
    );
    for line in lines {
        println!("{line}");
    }
    for error in docker["last_errors"].as_array().into_iter().flatten() {
        println!("  error: {}", error.as_str().unwrap_or(""));
    }
}

fn print_attached(attached: &Attached) {
    let record = &attached.record;
    let addresses: Vec<String> = record.addresses.iter().map(|a| a.to_string()).collect();
    println!(
        "{}: {} {} on {} ({}, mac {}, mtu {}){}",
        record.guest.display(),
        record.guest_ifname,
        match (addresses.is_empty(), record.dhcp.is_some()) {
            (true, true) => "dhcp".to_string(),
            (true, false) => "link only".to_string(),
            (false, true) => format!("dhcp {}", addresses.join(" ")),
            (false, false) => addresses.join(" "),
        },
        record.host_interface,
        record.driver,
        record.mac,
        record.mtu,
        record.host_ifname.as_ref().map(|h| format!(", host end {h}")).unwrap_or_default(),
    );
}

/// Announce from a detached helper process: the packet socket's close (~8 ms) and the exit of a
/// process holding one (~16 ms) stay off this command's critical path. Its stdio is closed so
/// a caller capturing our output never waits for it (the CNI plugin's runtime reads its stdout
/// to the end).
pub(crate) fn spawn_announcer(state_dir: &std::path::Path, attached: &Attached) {
    if attached.announcement.ipv4.is_empty() && attached.announcement.ipv6.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let spawned = Command::new(exe)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("announce-helper")
        .arg("--record")
        .arg(attached.record.file_name())
        .arg("--netns")
        .arg(&attached.guest_netns_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!("lanyard: warning: could not start the announcer ({e}); neighbours learn the address on first traffic");
    }
}

fn log_helper_failure(state_dir: &std::path::Path, line: &str) {
    use std::io::Write;
    let path = state_dir.join("announce.log");
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{} {line}", crate::inspect::rfc3339(crate::attach::now_unix()));
    }
}

fn run_pipework(settings: &Settings, args: &[String]) -> Result<()> {
    match pipework::parse_pipework(args)? {
        PipeworkCommand::Attach(line) => {
            for notice in &line.notices {
                eprintln!("lanyard: notice: {notice}");
            }
            let host_if = match &line.host_if {
                HostInterface::Name(name) => name.clone(),
                HostInterface::ByMac(mac) => {
                    require_root()?;
                    crate::host_interface::name_by_mac(&host_from(settings)?, *mac)?
                }
            };
            let request = line.request(&host_if, GuestSpec::parse(&line.guest)?)?;
            run_attach(settings, &request)
        }
        PipeworkCommand::Route { guest, action, destination, via, dev, metric } => {
            require_root()?;
            let host = host_from(settings)?;
            let change = match action {
                RouteAction::Add => RouteChange::Add,
                RouteAction::Del => RouteChange::Delete,
                RouteAction::Replace => RouteChange::Replace,
            };
            change_route(&host, &guest, change, destination, via, dev.as_deref(), metric)
        }
        PipeworkCommand::Wait { guest_ifname } => wait_for_interface(&guest_ifname, WAIT_TIMEOUT),
    }
}

/// `pipework --wait` waited forever; lanyard waits this long and then fails, so a boot script
/// never hangs silently.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Inside a guest: wait until `ifname` exists and is up.
pub fn wait_for_interface(ifname: &str, timeout: Duration) -> Result<()> {
    use crate::netlink::{LinkWatch, Netlink};
    let mut netlink = Netlink::open_here("this namespace")?;
    let mut watch = LinkWatch::open_here()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(link) = netlink.link_by_name(ifname)? {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            watch.wait_for(&mut netlink, link.index, &format!("{ifname} up"), left, |l| {
                l.up && l.lower_up
            })?;
            return Ok(());
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("{ifname} did not appear within {} s", timeout.as_secs()),
            ));
        }
        watch.wait_any((deadline - now).min(Duration::from_millis(500)));
    }
}
