//! The library's side of the lease daemon: hand a new DHCP attachment to the daemon and wait for
//! its lease, or ask it to release one. The daemon is started on demand (see
//! [`crate::daemon::control::request`]); every front end (CLI, and the daemon-driven, Docker and
//! CNI faces to come) reaches DHCP through these two calls.

use std::time::Duration;

use crate::attach::DhcpWait;
use crate::daemon::{control, store};
use crate::error::{Error, ErrorKind, Result};
use crate::host::Host;
use crate::state::Record;

/// Extra time the control request gets beyond the lease timeout, so that the daemon's own
/// "no offer" answer (with its reason) arrives before the socket read gives up.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// Have the daemon take over `record`'s DHCP client and, with `wait.wait`, answer once the
/// lease is configured in the guest. Returns the daemon's view of the lease. `pid`: the
/// guest's process when the caller knows it (a container's), so the daemon reaches the guest
/// without asking Docker.
pub fn acquire(
    host: &Host,
    record: &Record,
    pid: Option<u32>,
    wait: DhcpWait,
) -> Result<serde_json::Value> {
    // The first DISCOVER must not go out before the port forwards, or it is lost (the CNI dhcp
    // plugin's 1-3 s delay): wait for it by notification. A port that never forwards is not
    // fatal here: the client retransmits, and the timeout below speaks for the lease.
    let mut host_netlink = crate::netlink::Netlink::open(&host.netns, "the host namespace")?;
    let mut watch = crate::netlink::LinkWatch::open(&host.netns)?;
    let _ = crate::driver::driver_for(record.driver).wait_host_ready(
        &mut host_netlink,
        &mut watch,
        record,
        crate::ready::READY_TIMEOUT,
    );
    let request = control::Request::Acquire {
        record: record.file_name(),
        wait: wait.wait,
        timeout_ms: u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX),
        pid,
    };
    let response = control::request(host, &request, wait.timeout + ANSWER_MARGIN)?;
    if response.ok {
        return Ok(response.data);
    }
    let error = response.into_error();
    if error.kind() == ErrorKind::Timeout {
        return Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "no DHCP offer on {} within {} s (is a DHCP server on that LAN?)",
                record.host_interface,
                wait.timeout.as_secs()
            ),
        ));
    }
    Err(error)
}

/// Ask the daemon to send DHCPRELEASE (while the interface still exists) and forget the lease.
/// A lease left on disk by a stopped daemon brings the daemon up to release it; with no lease
/// anywhere there is nothing to do.
pub fn release(host: &Host, record: &Record) -> Result<()> {
    let request = control::Request::Release { record: record.file_name() };
    let timeout = Duration::from_secs(5);
    let state_dir = host.state.path();
    let answer = match control::try_request(state_dir, &request, timeout)? {
        Some(answer) => answer,
        None if store::load(state_dir, &record.file_name())?.is_some() => {
            control::request(host, &request, timeout)?
        }
        None => return Ok(()),
    };
    if answer.ok {
        Ok(())
    } else {
        Err(answer.into_error())
    }
}

/// A lease as users see it, with the same keys wherever it is shown (`lanyard leases`, the
/// `DHCP` part of `lanyard inspect`, a DHCP attach's answer).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeaseStatus<'a> {
    /// The client's DHCP state (BOUND, RENEWING, ...); `None` before the daemon took over.
    pub state: Option<&'a str>,
    pub lease: Option<&'a crate::dhcp::Lease>,
    /// CIDR of the leased address.
    pub address: Option<String>,
    pub server: Option<String>,
    pub gateway: Option<String>,
    #[serde(rename = "DNS")]
    pub dns: Vec<String>,
    pub renew_at: Option<String>,
    pub rebind_at: Option<String>,
    pub expires_at: Option<String>,
    /// Why the last address went away, if it did.
    pub last_loss: Option<&'a str>,
}

impl<'a> LeaseStatus<'a> {
    pub fn new(
        state: Option<&'a str>,
        lease: Option<&'a crate::dhcp::Lease>,
        last_loss: Option<&'a str>,
    ) -> LeaseStatus<'a> {
        let stamp = |unix_ms: Option<u64>| unix_ms.map(|ms| crate::inspect::rfc3339(ms / 1000));
        LeaseStatus {
            state,
            lease,
            address: lease.map(|l| format!("{}/{}", l.address, l.prefix_len)),
            server: lease.map(|l| l.server_id.to_string()),
            gateway: lease.and_then(|l| l.gateway()).map(|g| g.to_string()),
            dns: lease
                .map(|l| l.dns_servers.iter().map(|d| d.to_string()).collect())
                .unwrap_or_default(),
            renew_at: stamp(lease.and_then(|l| l.renew_unix_ms())),
            rebind_at: stamp(lease.and_then(|l| l.rebind_unix_ms())),
            expires_at: stamp(lease.and_then(|l| l.expires_unix_ms())),
            last_loss,
        }
    }
}
