//! The CNI commands, each through the library: ADD is `attach`, DEL and GC are `detach_exact`
//! of a record found by its CNI identity (container id, network name, interface), CHECK is
//! `inspect`'s comparison of the record with the kernel. A chained IPAM plugin runs beside
//! ADD, DEL and CHECK (see [`super::ipam::delegate`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::conf::{Addressing, NetConf, ValidAttachment, LATEST_VERSION, SUPPORTED_VERSIONS};
use super::{CniError, Code, Invocation, Outcome, DEFAULT_STATE_DIR};
use crate::attach::{AttachRequest, DhcpWait};
use crate::guest::GuestSpec;
use crate::host::Host;
use crate::netns::Netns;
use crate::state::{DhcpSettings, GuestRef, Record};

/// How long STATUS waits for the lease daemon to answer (starting it when none runs).
const STATUS_DAEMON_TIMEOUT: Duration = Duration::from_secs(5);
/// How long ADD waits for the daemon to take a static attachment's DNS name (it answers once
/// the update is queued, never after it is sent).
const DNS_HAND_OVER_TIMEOUT: Duration = Duration::from_secs(2);

/// LANYARD_STATE_DIR from the runtime's environment, else the conf's `stateDir`, else the CLI's
/// default: the CLI, the daemon and the plugin see one state.
fn state_dir(invocation: &Invocation, conf: &NetConf) -> PathBuf {
    invocation
        .state_dir
        .clone()
        .or_else(|| conf.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The host is the namespace the runtime runs the plugin in.
pub(super) fn host(invocation: &Invocation, conf: &NetConf) -> Result<Host, CniError> {
    let host_id = crate::naming::read_host_id(invocation.host_id.as_deref())
        .map_err(|e| CniError::from_lanyard("no host id", &e))?;
    let netns = Netns::current()
        .map_err(|e| CniError::from_lanyard("cannot open the host's namespace", &e))?;
    Host::new(netns, &state_dir(invocation, conf), host_id)
        .map_err(|e| CniError::from_lanyard("cannot open the state directory", &e))
}

/// Is `guest` an attachment of this conf's kind? lanyard as the main plugin and lanyard as
/// another plugin's IPAM never take each other's records (a conf that changed type keeps its
/// old attachments for the old plugin's DEL).
fn is_of_this_kind(conf: &NetConf, guest: &GuestRef) -> bool {
    matches!(guest, GuestRef::Cni { ipam_only, .. } if *ipam_only == conf.ipam_of.is_some())
}

/// The record of exactly this attachment, found by its identity; never by a guest's name.
fn find_record(
    host: &Host,
    conf: &NetConf,
    container_id: &str,
    ifname: &str,
) -> Result<Option<Record>, CniError> {
    // The file name derives from the container id and the network alone.
    let slot = GuestRef::Cni {
        container_id: container_id.to_string(),
        network: conf.name.clone(),
        netns: String::new(),
        stable_name: String::new(),
        ipam_only: false,
    };
    let record = host
        .state
        .load(&Record::file_name_for(&slot, ifname))
        .map_err(|e| CniError::from_lanyard("cannot read the attachment's record", &e))?;
    Ok(record.filter(|r| {
        r.guest_ifname == ifname
            && is_of_this_kind(conf, &r.guest)
            && matches!(&r.guest, GuestRef::Cni { container_id: id, network, .. }
                if id == container_id && *network == conf.name)
    }))
}

pub fn add(invocation: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<Value, CniError> {
    let container_id = invocation.container_id()?;
    let ifname = invocation.ifname()?;
    let netns = invocation.netns()?;
    let args = invocation.cni_args()?;
    let mut wanted = conf.wanted(&args)?;
    // A namespace that cannot be opened is the runtime's variable at fault, not the conf.
    Netns::open(Path::new(&netns)).map_err(|e| {
        CniError::new(Code::InvalidEnv, "invalid CNI_NETNS", format!("CNI_NETNS={netns}: {e}"))
    })?;
    let host = host(invocation, conf)?;
    let chained = match conf.chained_ipam() {
        Some(plugin) => {
            let result = super::ipam::delegate(plugin, "ADD", invocation, stdin)?;
            let configured = result
                .as_ref()
                .ok_or_else(|| {
                    CniError::new(
                        Code::Other,
                        "no IPAM result",
                        format!("{plugin} ADD printed nothing"),
                    )
                })
                .and_then(super::ipam::configuration_of);
            match configured {
                Ok((addresses, routes)) => {
                    wanted.addresses = addresses;
                    wanted.routes.extend(routes);
                }
                Err(e) => return Err(undo_ipam(plugin, invocation, stdin, e)),
            }
            Some((plugin, result))
        }
        None => None,
    };
    let guest = GuestSpec::Cni {
        container_id: container_id.clone(),
        network: conf.name.clone(),
        netns: PathBuf::from(&netns),
        stable_name: args.stable_name(&container_id),
    };
    let mut request = AttachRequest::new(&wanted.host_interface, guest);
    request.guest_ifname = ifname;
    request.addresses = wanted.addresses;
    request.routes = wanted.routes;
    request.mtu = wanted.mtu;
    request.mac = wanted.mac;
    request.macvlan_mode = wanted.macvlan_mode;
    request.no_create = !conf.create_bridge;
    if wanted.addressing == Addressing::Dhcp {
        request.dhcp = Some(DhcpSettings {
            hostname: args.pod_name().and_then(crate::naming::default_dhcp_hostname),
            ..DhcpSettings::default()
        });
        request.dhcp_wait = DhcpWait { timeout: wanted.dhcp_timeout, wait: true };
    }
    let attached = crate::attach(&host, &request)
        .map_err(|e| CniError::from_lanyard("lanyard could not attach the container", &e))
        .map_err(|e| match chained {
            Some((plugin, _)) => undo_ipam(plugin, invocation, stdin, e),
            None => e,
        })?;
    if attached.record.dhcp.is_none() {
        // Static addresses are announced (gratuitous ARP, unsolicited NA) as the CLI does, from
        // a detached helper, so neighbours with a stale entry for the address learn the MAC.
        crate::cli::spawn_announcer(host.state.path(), &attached);
        if let Some(warning) = offer_dns_name(&host, &attached.record) {
            // Never an ADD failure: the runtime logs a plugin's stderr.
            eprintln!("lanyard: warning: {warning}");
        }
    }
    let lease = match attached.record.dhcp {
        Some(_) => crate::daemon::store::load(host.state.path(), &attached.record.file_name())
            .map_err(|e| CniError::from_lanyard("cannot read the lease", &e))?
            .and_then(|stored| stored.lease),
        None => None,
    };
    Ok(super::result::add_result(
        &conf.cni_version,
        &attached.record,
        &netns,
        lease.as_ref(),
        conf.dns.as_ref().or(chained.as_ref().and_then(|(_, result)| {
            result.as_ref().map(|r| &r["dns"]).filter(|dns| dns.is_object())
        })),
        conf.prev_result.as_ref(),
    ))
}

/// A static attachment's name goes to the running daemon, which registers it when its config
/// has `[dns_update]` (a lease registers itself when bound). The plugin reads no config file, so
/// the daemon's config decides: no daemon running, or one without `[dns_update]`, registers
/// nothing, and no daemon is started for it (a node that wants names runs the daemon as a
/// service). DEL's detach takes the name back. Returns what went wrong, never fails the ADD.
fn offer_dns_name(host: &Host, record: &Record) -> Option<String> {
    use crate::daemon::control::{try_request, Request};
    if record.dns.off || record.addresses.is_empty() {
        return None;
    }
    let request = Request::DnsRegister { record: record.file_name() };
    match try_request(host.state.path(), &request, DNS_HAND_OVER_TIMEOUT) {
        Ok(None) => None,
        Ok(Some(answer)) if answer.ok => None,
        // The daemon's config has no [dns_update]: names are not wanted here.
        Ok(Some(answer)) if answer.kind == Some(crate::error::ErrorKind::Unsupported) => None,
        Ok(Some(answer)) => Some(format!("not registered in DNS: {}", answer.into_error())),
        Err(e) => Some(format!("not registered in DNS: {e}")),
    }
}

/// A failed ADD after the chained IPAM plugin's ADD: its allocation is released (its DEL), or
/// the error says what is left.
fn undo_ipam(plugin: &str, invocation: &Invocation, stdin: &[u8], mut error: CniError) -> CniError {
    if let Err(left) = super::ipam::delegate(plugin, "DEL", invocation, stdin) {
        error.details.push_str(&format!(
            "\nleft behind: the address {plugin} allocated: {} (run the network's DEL)",
            left.details
        ));
    }
    error
}

/// Idempotent: nothing recorded (DEL twice, an ADD that never finished) is success, and a
/// namespace already gone leaves only the host side to remove.
pub fn del(invocation: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let detached = del_own(invocation, conf);
    // The chained IPAM plugin releases its allocation whatever lanyard found (its DEL is
    // idempotent too), after the interface is gone, as the reference bridge plugin does.
    let released = match conf.chained_ipam() {
        Some(plugin) => super::ipam::delegate(plugin, "DEL", invocation, stdin).map(|_| ()),
        None => Ok(()),
    };
    detached.and(released)
}

fn del_own(invocation: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let container_id = invocation.container_id()?;
    let ifname = invocation.ifname()?;
    // No state directory: nothing was ever recorded there, and a DEL must not create one (a
    // runtime's cleanup process may run without the environment that named the real one).
    if !state_dir(invocation, conf).is_dir() {
        return Ok(());
    }
    let host = host(invocation, conf)?;
    let Some(record) = find_record(&host, conf, &container_id, &ifname)? else {
        return Ok(());
    };
    crate::detach::detach_exact(&host, &record)
        .map(|_| ())
        .map_err(|e| CniError::from_lanyard("lanyard could not detach the container", &e))
}

/// The record against the kernel (inspect's comparison), and the addresses of `prevResult`
/// against the interface's live ones; then the chained IPAM plugin's CHECK.
pub fn check(invocation: &Invocation, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    check_own(invocation, conf)?;
    then_chained_ipam(conf, invocation, stdin)
}

/// The same command for the chained IPAM plugin, if the conf has one (after lanyard's own part
/// succeeded): CHECK, STATUS and GC, as the reference bridge plugin passes them on.
pub(super) fn then_chained_ipam(
    conf: &NetConf,
    invocation: &Invocation,
    stdin: &[u8],
) -> Result<(), CniError> {
    match conf.chained_ipam() {
        Some(plugin) => {
            super::ipam::delegate(plugin, &invocation.command, invocation, stdin).map(|_| ())
        }
        None => Ok(()),
    }
}

fn check_own(invocation: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let container_id = invocation.container_id()?;
    let ifname = invocation.ifname()?;
    invocation.netns()?;
    let host = host(invocation, conf)?;
    let Some(record) = find_record(&host, conf, &container_id, &ifname)? else {
        return Err(CniError::new(
            Code::UnknownContainer,
            "unknown container",
            format!(
                "lanyard has no attachment of container {container_id} interface {ifname} on \
                 network {}",
                conf.name
            ),
        ));
    };
    let views = crate::inspect(&host, Some(&container_id))
        .map_err(|e| CniError::from_lanyard("lanyard could not inspect the container", &e))?;
    let guest = serde_json::to_value(&record.guest).unwrap_or_default();
    let view = views
        .iter()
        .filter(|v| v["Lanyard"]["Guest"] == guest)
        .flat_map(|v| v["Lanyard"]["Interfaces"].as_array().cloned().unwrap_or_default())
        .find(|i| i["Interface"] == json!(ifname))
        .ok_or_else(|| {
            CniError::new(
                Code::UnknownContainer,
                "unknown container",
                format!("the record of {ifname} vanished while it was checked"),
            )
        })?;
    let mut drift: Vec<String> = view["Drift"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let live: Vec<String> = view["LiveAddresses"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if let Some(previous) = &conf.prev_result {
        for ip in previous["ips"].as_array().into_iter().flatten() {
            if let Some(address) = ip["address"].as_str() {
                if !live.iter().any(|l| l == address) {
                    drift.push(format!("address {address} of prevResult is missing"));
                }
            }
        }
    }
    if drift.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        Code::Drift,
        "the interface differs from what lanyard made",
        format!("{ifname} of container {container_id}: {}", drift.join("; ")),
    ))
}

/// Ready for ADD: the state directory can be written and, for a DHCP network, the lease
/// daemon answers (it is started as an ADD would start it). Anything else is code 50.
pub fn status(invocation: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let unavailable =
        |details: String| CniError::new(Code::NotAvailable, "plugin not available", details);
    let host = host(invocation, conf).map_err(|e| unavailable(e.details))?;
    let probe = host.state.path().join(format!(".cni-status-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        unavailable(format!("state directory {} is not writable: {e}", host.state.path().display()))
    })?;
    let _ = std::fs::remove_file(&probe);
    let dhcp = conf.ipam_of.is_some()
        || conf
            .wanted(&super::conf::CniArgs::default())
            .is_ok_and(|w| w.addressing == Addressing::Dhcp);
    if dhcp {
        let request = crate::daemon::control::Request::Ping;
        crate::daemon::control::request(&host, &request, STATUS_DAEMON_TIMEOUT)
            .map_err(|e| unavailable(format!("the lanyard lease daemon does not answer: {e}")))?;
    }
    Ok(())
}

/// Detach every attachment of this network not listed in `cni.dev/valid-attachments` (its
/// lease is released with it), and release this network's leases whose record is gone. Goes on
/// past a failure and reports them all.
pub fn gc(invocation: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "invalid network configuration",
            "GC without \"cni.dev/valid-attachments\": lanyard removes nothing it was not told is stale",
        )
    })?;
    let host = host(invocation, conf)?;
    let records =
        host.state.records().map_err(|e| CniError::from_lanyard("cannot read the records", &e))?;
    let mut failures = Vec::new();
    let mut first_error = None;
    for record in records {
        let GuestRef::Cni { container_id, network, .. } = &record.guest else { continue };
        let attachment = ValidAttachment {
            container_id: container_id.clone(),
            ifname: record.guest_ifname.clone(),
        };
        if *network != conf.name
            || !is_of_this_kind(conf, &record.guest)
            || valid.contains(&attachment)
        {
            continue;
        }
        if let Err(e) = crate::detach::detach_exact(&host, &record) {
            failures.push(format!("{} of {container_id}: {e}", record.guest_ifname));
            first_error.get_or_insert(e);
        }
    }
    release_orphan_leases(&host, conf, &mut failures, &mut first_error);
    match first_error {
        None => Ok(()),
        Some(e) => {
            let mut error =
                CniError::from_lanyard("lanyard could not remove stale attachments", &e);
            error.details = failures.join("; ");
            Err(error)
        }
    }
}

/// Leases of this network whose record is gone (removed by hand, or lost in a crash between
/// the two): a running daemon would keep renewing them for nobody, so it is asked to release
/// them. With no daemon running there is nothing to do: the next one forgets a lease without a
/// record when it starts.
fn release_orphan_leases(
    host: &Host,
    conf: &NetConf,
    failures: &mut Vec<String>,
    first_error: &mut Option<crate::error::Error>,
) {
    use crate::daemon::control::{try_request, Request};
    let leases = match crate::daemon::store::load_all(host.state.path()) {
        Ok(leases) => leases,
        Err(e) => {
            failures.push(format!("leases: {e}"));
            first_error.get_or_insert(e);
            return;
        }
    };
    for lease in leases {
        if !is_record_of_network(&lease.record, &conf.name)
            || host.state.load(&lease.record).ok().flatten().is_some()
        {
            continue;
        }
        let request = Request::Release { record: lease.record.clone() };
        let answer = try_request(host.state.path(), &request, STATUS_DAEMON_TIMEOUT);
        let error = match answer {
            Ok(None) => continue,
            Ok(Some(answer)) if answer.ok => continue,
            Ok(Some(answer)) => answer.into_error(),
            Err(e) => e,
        };
        failures.push(format!("lease {}: {error}", lease.record));
        first_error.get_or_insert(error);
    }
}

/// Is `file_name` the record file name of an attachment to `network`? CNI record names are
/// `cni-ID+NETWORK@IFNAME.json` with every field escaped so that none holds `+` or `@`.
fn is_record_of_network(file_name: &str, network: &str) -> bool {
    let probe = GuestRef::Cni {
        container_id: String::new(),
        network: network.to_string(),
        netns: String::new(),
        stable_name: String::new(),
        ipam_only: false,
    };
    // "cni-+NETWORK@x.json": the network's escaped form sits between `+` and `@`.
    let probe_name = Record::file_name_for(&probe, "x");
    let Some(escaped_network) =
        probe_name.strip_prefix("cni-+").and_then(|rest| rest.split_once('@')).map(|(n, _)| n)
    else {
        return false;
    };
    file_name
        .strip_prefix("cni-")
        .and_then(|rest| rest.split_once('@'))
        .and_then(|(fields, _)| fields.split_once('+'))
        .is_some_and(|(_, network)| network == escaped_network)
}

/// The versions lanyard speaks, answering in the version asked (or the newest).
pub fn version(stdin: &[u8]) -> Outcome {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| LATEST_VERSION.to_string());
    Outcome {
        version: asked.clone(),
        result: Ok(Some(json!({ "cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_are_told_apart_by_network() {
        let name = |id: &str, network: &str| {
            let guest = GuestRef::Cni {
                container_id: id.into(),
                network: network.into(),
                netns: String::new(),
                stable_name: String::new(),
                ipam_only: false,
            };
            Record::file_name_for(&guest, "eth0")
        };
        assert!(is_record_of_network(&name("abc", "lan"), "lan"));
        assert!(is_record_of_network(&name("a+b", "l@n"), "l@n"));
        assert!(!is_record_of_network(&name("abc", "lan"), "lan2"));
        assert!(!is_record_of_network(&name("abc", "lan2"), "lan"));
        assert!(!is_record_of_network("netns-lan@eth0.json", "lan"));
    }
}
