//! lanyard's own DNS updates (RFC 2136, signed with TSIG): an attachment's name gets A/AAAA
//! records in a forward zone, PTR records in the matching reverse zones, and a DHCID record
//! (RFC 4701) that says which client owns the name.
//!
//! Ownership works as in RFC 4703, the way Kea and ISC dhcpd do it:
//! - [`register`] first adds the addresses and the DHCID with the prerequisite "name not in use".
//!   If the name is in use, it replaces the name's A and AAAA records only with the prerequisite
//!   "the name's DHCID is ours". A name with another DHCID, or with records and no DHCID at all
//!   (a plain A someone made by hand or another host registered), belongs to someone else: that
//!   is a [`ErrorKind::Conflict`] error and nothing is changed.
//! - [`unregister`] deletes address records only with the prerequisite "the DHCID is ours", then
//!   the DHCID once no A or AAAA record is left.
//! - PTRs (with [`UpdateServer::reverse`]): an address's PTR is written whatever it held before,
//!   as Kea does (the reverse name belongs to whoever holds the address now), and removed only
//!   while it still names our name and that name was ours or is gone.
//!
//! Every call is blocking and bounded by [`UpdateServer::timeout`] as a whole. Updates are signed
//! with the key; the few queries a call makes (the SOA that names a reverse zone, a name's
//! addresses or DHCID) are not. Requests go over UDP (sent again each second while unanswered),
//! and over TCP when the answer is truncated; nothing here retries a failed call (the caller
//! owns retries and backoff).

mod key;
mod label;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};

use crate::error::{Error, ErrorKind, Result};

pub use key::{TsigAlgorithm, TsigKey};
pub use label::{render_label, NameVars, MAX_LABEL};

use wire::ExchangeError;

/// Where and how to send updates.
#[derive(Debug, Clone)]
pub struct UpdateServer {
    /// The primary server that accepts updates, e.g. `198.18.0.53:53`.
    pub server: SocketAddr,
    /// The forward zone, e.g. `app.lan` (a trailing dot is allowed).
    pub zone: String,
    /// Signs every update; `None` sends them unsigned (only for servers that allow that).
    pub key: Option<TsigKey>,
    /// TTL of the records lanyard adds.
    pub ttl: u32,
    /// Also keep PTR records, in whatever reverse zone `server` is authoritative for (found with
    /// an SOA query for each address's reverse name).
    pub reverse: bool,
    /// Bound on one whole [`register`] or [`unregister`] call.
    pub timeout: Duration,
}

/// One name and the addresses it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The full name, inside [`UpdateServer::zone`], e.g. `web.app.lan`.
    pub fqdn: String,
    /// All the addresses the name should have: [`register`] makes the name's A and AAAA records
    /// exactly these.
    pub addresses: Vec<IpAddr>,
    /// The DHCP client identifier (option 61 data, type byte included) the DHCID is derived
    /// from; static attachments use the same derivation as DHCP ones.
    pub client_id: Vec<u8>,
}

/// How the forward name was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The name was free: addresses and DHCID added.
    Added,
    /// The name was ours already (same DHCID): its addresses replaced.
    Replaced,
}

/// A PTR record written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseRecord {
    pub address: IpAddr,
    /// e.g. `5.0.18.198.in-addr.arpa`
    pub name: String,
    /// The reverse zone the server said holds it, e.g. `18.198.in-addr.arpa`.
    pub zone: String,
}

/// What [`register`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub forward: Forward,
    /// One per address when [`UpdateServer::reverse`] is on, else empty.
    pub reverse: Vec<ReverseRecord>,
    /// With [`UpdateServer::reverse`]: the PTRs removed because their address is no longer the
    /// name's (it had them before this call replaced its addresses).
    pub reverse_removed: Vec<ReverseRecord>,
}

/// A call's names, checked before anything is sent.
struct Target {
    zone: Name,
    fqdn: Name,
    dhcid: Vec<u8>,
}

fn dns_name(what: &str, text: &str) -> Result<Name> {
    let mut name = Name::from_ascii(text)
        .map_err(|e| Error::usage(format!("{what} {text:?} is not a valid DNS name: {e}")))?;
    if name.is_root() {
        return Err(Error::usage(format!("{what} {text:?} is the root, not a name")));
    }
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

fn target(server: &UpdateServer, reg: &Registration) -> Result<Target> {
    let zone = dns_name("zone", &server.zone)?;
    let fqdn = dns_name("name", &reg.fqdn)?;
    if !zone.zone_of(&fqdn) || zone == fqdn {
        return Err(Error::usage(format!(
            "name {} is not inside zone {} (lanyard updates names below the configured zone)",
            show(&fqdn),
            show(&zone)
        )));
    }
    if reg.client_id.is_empty() {
        return Err(Error::usage(format!(
            "name {}: no client id to derive its DHCID from",
            show(&fqdn)
        )));
    }
    let dhcid = wire::dhcid(&reg.client_id, &fqdn);
    Ok(Target { zone, fqdn, dhcid })
}

/// A name as users write it: no trailing dot.
fn show(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_string()
}

/// Error context: "DNS update of NAME in zone ZONE at SERVER".
fn update_context(server: &UpdateServer, name: &Name, zone: &Name) -> String {
    format!("DNS update of {} in zone {} at {}", show(name), show(zone), server.server)
}

/// Sends one update and returns its RCODE, or the error a user should see for a failed exchange
/// or an RCODE that is neither success nor a prerequisite outcome.
fn send_update(
    server: &UpdateServer,
    message: hickory_proto::op::Message,
    name: &Name,
    zone: &Name,
    deadline: Instant,
) -> Result<ResponseCode> {
    let context = || update_context(server, name, zone);
    let answer = wire::exchange(server.server, server.key.as_ref(), message, deadline)
        .map_err(|e| e.context(context()))?;
    let code = answer.message.metadata.response_code;
    if let Some(tsig_error) = answer.tsig_error {
        return Err(Error::new(
            ErrorKind::Permission,
            format!(
                "{}: the TSIG key {} is not accepted ({} {}){}",
                context(),
                key_name(server),
                wire::rcode_name(code),
                wire::tsig_error_name(tsig_error),
                if tsig_error == hickory_proto::rr::rdata::tsig::TsigError::BadTime {
                    ": the clocks of this host and the server differ by more than 5 minutes"
                } else {
                    ": check that the key file matches the server's key (name, algorithm, secret)"
                }
            ),
        ));
    }
    match code {
        ResponseCode::NoError
        | ResponseCode::YXDomain
        | ResponseCode::YXRRSet
        | ResponseCode::NXRRSet
        | ResponseCode::NXDomain => Ok(code),
        ResponseCode::Refused => Err(Error::new(
            ErrorKind::Permission,
            format!(
                "{}: the server refuses updates to zone {} (REFUSED){}",
                context(),
                show(zone),
                if server.key.is_some() {
                    format!(
                        ": allow key {} in the zone's allow-update or update-policy",
                        key_name(server)
                    )
                } else {
                    ": the server may want a TSIG key (tsig_key_file)".to_string()
                }
            ),
        )),
        ResponseCode::NotAuth => Err(Error::new(
            ErrorKind::Permission,
            format!(
                "{}: the server is not authoritative for zone {} or does not accept the TSIG key \
                 (NOTAUTH): check the zone and the key",
                context(),
                show(zone)
            ),
        )),
        other => Err(Error::new(
            ErrorKind::Io,
            format!("{}: the server answered {}", context(), wire::rcode_name(other)),
        )),
    }
}

fn key_name(server: &UpdateServer) -> String {
    server.key.as_ref().map(|k| format!("\"{}\"", k.name)).unwrap_or_else(|| "(none)".into())
}

impl ExchangeError {
    fn context(self, prefix: String) -> Error {
        match self {
            ExchangeError::Timeout => {
                Error::new(ErrorKind::Timeout, format!("{prefix}: no answer"))
            }
            // ICMP port unreachable on the connected UDP socket, or a TCP reset.
            ExchangeError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Error::with_source(
                    ErrorKind::Io,
                    format!("{prefix}: nothing serves DNS there (is the server running?)"),
                    e,
                )
            }
            ExchangeError::Io(e) => Error::with_source(ErrorKind::Io, prefix, e),
            ExchangeError::BadAnswer(why) => Error::new(ErrorKind::Io, format!("{prefix}: {why}")),
        }
    }
}

/// Turns a timeout error into "no answer from S within T".
fn with_timeout_text(server: &UpdateServer, err: Error) -> Error {
    if err.kind() == ErrorKind::Timeout {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "{} from {} within {:?} (is the server up and reachable?)",
                err.message(),
                server.server,
                server.timeout
            ),
        )
    } else {
        err
    }
}

/// Gives `reg.fqdn` exactly `reg.addresses` (A and AAAA) and our DHCID, unless another client
/// owns the name; with [`UpdateServer::reverse`], a PTR per address too, and the PTRs of the
/// addresses the name had before and no longer has are removed (if they still point at it). The
/// forward name is written first; then each PTR on its own (a reverse zone missing for one
/// address does not keep the others from theirs), a failure being an error that says the
/// forward records were written, with any later failures appended.
pub fn register(server: &UpdateServer, reg: &Registration) -> Result<Registered> {
    let deadline = Instant::now() + server.timeout;
    let target = target(server, reg)?;
    if reg.addresses.is_empty() {
        return Err(Error::usage(format!(
            "register {}: no addresses (use unregister to remove a name)",
            show(&target.fqdn)
        )));
    }
    let (forward, previous) = register_forward(server, reg, &target, deadline)
        .map_err(|e| with_timeout_text(server, e))?;
    let mut done = Registered { forward, reverse: Vec::new(), reverse_removed: Vec::new() };
    if !server.reverse {
        return Ok(done);
    }
    let mut errors: Vec<Error> = Vec::new();
    // Past the deadline every further request would only time out too.
    let out_of_time = |errors: &[Error]| errors.iter().any(|e| e.kind() == ErrorKind::Timeout);
    for &address in &reg.addresses {
        if out_of_time(&errors) {
            break;
        }
        match register_reverse(server, &target, address, deadline) {
            Ok(record) => done.reverse.push(record),
            Err(e) => errors.push(e.context(format!(
                "the address records of {} are in place, but the PTR of {address} is not",
                show(&target.fqdn)
            ))),
        }
    }
    for address in previous.into_iter().filter(|a| !reg.addresses.contains(a)) {
        if out_of_time(&errors) {
            break;
        }
        match unregister_reverse(server, &target, address, deadline) {
            Ok(record) => done.reverse_removed.extend(record),
            Err(e) => errors.push(e.context(format!(
                "{} is registered, but the PTR of {address}, an address it no longer has, may \
                 still point at it",
                show(&target.fqdn)
            ))),
        }
    }
    match combined(server, errors) {
        None => Ok(done),
        Some(e) => Err(e),
    }
}

/// The first of `errors`, with the text of the others appended (each timeout saying which
/// server did not answer); `None` when there are none.
fn combined(server: &UpdateServer, errors: Vec<Error>) -> Option<Error> {
    let mut errors = errors.into_iter().map(|e| with_timeout_text(server, e));
    let first = errors.next()?;
    let rest: Vec<String> = errors.map(|e| e.to_string()).collect();
    if rest.is_empty() {
        Some(first)
    } else {
        Some(Error::new(first.kind(), format!("{first}; and: {}", rest.join("; "))))
    }
}

/// The forward records, and (when they were replaced and PTRs are kept) the addresses the name
/// had before.
fn register_forward(
    server: &UpdateServer,
    reg: &Registration,
    target: &Target,
    deadline: Instant,
) -> Result<(Forward, Vec<IpAddr>)> {
    let (zone, fqdn) = (&target.zone, &target.fqdn);
    let add = wire::forward_add(zone, fqdn, &reg.addresses, &target.dhcid, server.ttl);
    match send_update(server, add, fqdn, zone, deadline)? {
        ResponseCode::NoError => return Ok((Forward::Added, Vec::new())),
        ResponseCode::YXDomain => {}
        other => return Err(unexpected(server, fqdn, zone, other)),
    }
    // Read before the replace: which PTRs may be left pointing at the name afterwards. What
    // these unsigned answers say only selects PTRs, each removed only if it names this name.
    let previous = if server.reverse { addresses_of(server, fqdn, deadline)? } else { Vec::new() };
    let replace = wire::forward_replace(zone, fqdn, &reg.addresses, &target.dhcid, server.ttl);
    match send_update(server, replace, fqdn, zone, deadline)? {
        ResponseCode::NoError => Ok((Forward::Replaced, previous)),
        ResponseCode::NXRRSet => Err(Error::conflict(format!(
            "{}: name {} is held by another client ({}): not changed",
            update_context(server, fqdn, zone),
            show(fqdn),
            foreign_owner(server, fqdn, deadline)
        ))),
        other => Err(unexpected(server, fqdn, zone, other)),
    }
}

/// The name's A and AAAA records as the server answers them now.
fn addresses_of(server: &UpdateServer, fqdn: &Name, deadline: Instant) -> Result<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        let answer = wire::exchange(server.server, None, wire::query(fqdn, rtype), deadline)
            .map_err(|e| {
                e.context(format!(
                    "query the {rtype} records of {} at {}",
                    show(fqdn),
                    server.server
                ))
            })?;
        addresses.extend(answer.message.answers.iter().filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        }));
    }
    Ok(addresses)
}

/// Why a name in use is not ours, for the conflict message: asks the server for the name's
/// DHCID (one query, within the call's deadline).
fn foreign_owner(server: &UpdateServer, fqdn: &Name, deadline: Instant) -> &'static str {
    let query = wire::query(fqdn, wire::DHCID_TYPE);
    match wire::exchange(server.server, None, query, deadline) {
        Ok(answer)
            if answer.message.answers.iter().any(|r| r.record_type() == wire::DHCID_TYPE) =>
        {
            "its DHCID differs"
        }
        Ok(answer) if answer.message.metadata.response_code == ResponseCode::NoError => {
            "it has records but no DHCID: made by hand or by a tool that does not mark ownership"
        }
        _ => "its DHCID is not ours",
    }
}

fn unexpected(server: &UpdateServer, name: &Name, zone: &Name, code: ResponseCode) -> Error {
    Error::new(
        ErrorKind::Io,
        format!(
            "{}: unexpected answer {} to a prerequisite",
            update_context(server, name, zone),
            wire::rcode_name(code)
        ),
    )
}

/// The reverse zone `server` is authoritative for that holds `ptr_name`, from an SOA query for
/// that name (its answer or authority section names the zone apex). Asking the server rather than
/// deriving the zone from the address finds a zone on any label boundary (a /16 such as
/// `18.198.in-addr.arpa`, a /24, any nibble of ip6.arpa) without guessing.
fn reverse_zone(server: &UpdateServer, ptr_name: &Name, deadline: Instant) -> Result<Name> {
    let context =
        || format!("find the reverse zone of {} at {} (SOA query)", show(ptr_name), server.server);
    let answer = wire::exchange(server.server, None, wire::soa_query(ptr_name), deadline)
        .map_err(|e| e.context(context()))?;
    match wire::zone_of_soa_answer(&answer.message) {
        Some(zone) if zone.zone_of(ptr_name) => Ok(zone.to_lowercase()),
        _ => Err(Error::not_found(format!(
            "{}: the server is not authoritative for a zone holding it (answer {}{}): add a \
             reverse zone there or set reverse = false",
            context(),
            wire::rcode_name(answer.message.metadata.response_code),
            if answer.message.metadata.authoritative { "" } else { ", not authoritative" }
        ))),
    }
}

fn register_reverse(
    server: &UpdateServer,
    target: &Target,
    address: IpAddr,
    deadline: Instant,
) -> Result<ReverseRecord> {
    let ptr_name = Name::from(address).to_lowercase();
    let zone = reverse_zone(server, &ptr_name, deadline)?;
    let message = wire::reverse_replace(&zone, &ptr_name, &target.fqdn, &target.dhcid, server.ttl);
    match send_update(server, message, &ptr_name, &zone, deadline)? {
        ResponseCode::NoError => {
            Ok(ReverseRecord { address, name: show(&ptr_name), zone: show(&zone) })
        }
        other => Err(unexpected(server, &ptr_name, &zone, other)),
    }
}

/// Removes our records of `reg.fqdn`: its `reg.addresses` (every A and AAAA record of the name
/// when the list is empty) only if the name's DHCID is ours, then the DHCID once no address
/// record is left; with [`UpdateServer::reverse`] and when the name was ours or no longer exists,
/// each address's PTR if it still points at the name (with an empty list: the PTRs of the
/// addresses the name has when the call starts). A name that is gone, or is now another
/// client's, is left as it is and is no error: nothing of ours remains there; another client's
/// name also keeps the PTRs that point at it. The first failure is returned, with any later
/// ones appended.
///
/// When an attachment's addresses change, [`register`] the new set: it removes the PTRs of the
/// addresses that went by itself.
pub fn unregister(server: &UpdateServer, reg: &Registration) -> Result<()> {
    let deadline = Instant::now() + server.timeout;
    let target = target(server, reg)?;
    let mut errors: Vec<Error> = Vec::new();
    let mut ptr_addresses = reg.addresses.clone();
    if server.reverse && ptr_addresses.is_empty() {
        // Read before the forward records go; each PTR is removed only if it names the name.
        match addresses_of(server, &target.fqdn, deadline) {
            Ok(found) => ptr_addresses = found,
            Err(e) => errors.push(e),
        }
    }
    // PTRs go only when the name was ours or is gone: a name held by another client keeps the
    // PTRs that name it, and after a failure it is not known which it is.
    let name_freed = match unregister_forward(server, reg, &target, deadline) {
        Ok(owner) => owner != NameOwner::Other,
        Err(e) => {
            errors.push(e);
            false
        }
    };
    if server.reverse && name_freed {
        for &address in &ptr_addresses {
            if let Err(e) = unregister_reverse(server, &target, address, deadline) {
                errors.push(e);
            }
        }
    }
    match combined(server, errors) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Whose the name was when [`unregister`] came to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameOwner {
    /// Our DHCID was there: our records are removed.
    Us,
    /// The name does not exist (any more).
    Nobody,
    /// The name exists without our DHCID.
    Other,
}

fn unregister_forward(
    server: &UpdateServer,
    reg: &Registration,
    target: &Target,
    deadline: Instant,
) -> Result<NameOwner> {
    let (zone, fqdn) = (&target.zone, &target.fqdn);
    let remove = wire::forward_remove(zone, fqdn, &reg.addresses, &target.dhcid);
    match send_update(server, remove, fqdn, zone, deadline)? {
        ResponseCode::NoError => {}
        // No DHCID of ours: the name is gone or someone else's.
        ResponseCode::NXRRSet | ResponseCode::NXDomain => {
            let query = wire::query(fqdn, wire::DHCID_TYPE);
            let answer = wire::exchange(server.server, None, query, deadline)
                .map_err(|e| e.context(format!("look up {} at {}", show(fqdn), server.server)))?;
            return Ok(match answer.message.metadata.response_code {
                ResponseCode::NXDomain => NameOwner::Nobody,
                _ => NameOwner::Other,
            });
        }
        other => return Err(unexpected(server, fqdn, zone, other)),
    }
    let remove_dhcid = wire::forward_remove_dhcid(zone, fqdn, &target.dhcid);
    match send_update(server, remove_dhcid, fqdn, zone, deadline)? {
        // YXRRSET: the name still has addresses that were not listed: the DHCID stays.
        ResponseCode::NoError | ResponseCode::YXRRSet | ResponseCode::NXRRSet => Ok(NameOwner::Us),
        other => Err(unexpected(server, fqdn, zone, other)),
    }
}

/// Removes the PTR of `address` if it points at the name; what was removed, if anything.
fn unregister_reverse(
    server: &UpdateServer,
    target: &Target,
    address: IpAddr,
    deadline: Instant,
) -> Result<Option<ReverseRecord>> {
    let ptr_name = Name::from(address).to_lowercase();
    let zone = reverse_zone(server, &ptr_name, deadline)?;
    let message = wire::reverse_remove(&zone, &ptr_name, &target.fqdn);
    match send_update(server, message, &ptr_name, &zone, deadline)? {
        ResponseCode::NoError => {
            Ok(Some(ReverseRecord { address, name: show(&ptr_name), zone: show(&zone) }))
        }
        // No PTR, or one that names something else: not ours to remove.
        ResponseCode::NXRRSet | ResponseCode::NXDomain => Ok(None),
        other => Err(unexpected(server, &ptr_name, &zone, other)),
    }
}

#[cfg(test)]
mod tests;
