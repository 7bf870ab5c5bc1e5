//! lanyard's own DNS updates (config `[dns_update]`): the daemon registers each attachment's
//! addresses under its name and removes them when the addresses go. Every update is sent by
//! one thread of its own ([`DnsUpdater`]) from a queue, so a slow or dead DNS server delays
//! updates, never the lease loop or an attach; a failed update is tried again with backoff,
//! and `lanyard status` shows what is pending and the last error.
//!
//! What was registered is kept in `dns/registered.json` in the state directory (written
//! atomically before each update is sent), so a daemon started after a crash, or after
//! containers went while no daemon ran, removes the names of attachments that are gone. While
//! it runs, the daemon watches the guests of static attachments with names (leases' guests are
//! watched by their slots) and removes a name when its guest goes. SIGHUP moves every name to
//! new `[dns_update]` settings.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{Config, DnsUpdate};
use crate::dns::{NameVars, Registration, TsigKey, UpdateServer};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::host::Host;
use crate::netns::{Netns, NetnsId};
use crate::state::{GuestRef, Record};

use super::{log, watch_fd, Owner};

/// The directory in the state directory with the registered names (not a record: records are
/// the `*.json` files of the state directory itself).
const DIR: &str = "dns";
const FILE: &str = "registered.json";
/// How long one update may take before it counts as failed (and is tried again later).
const UPDATE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first retry of a failed update; each further one waits twice as long, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One registration as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    fqdn: String,
    addresses: Vec<IpAddr>,
    /// The DHCID's client identifier, hex.
    client_id: String,
    /// The server said yes. An unconfirmed one may or may not be in the zone: a new daemon
    /// sends it again (or removes it, when its attachment is gone).
    confirmed: bool,
}

impl Kept {
    fn new(registration: &Registration) -> Kept {
        Kept {
            fqdn: registration.fqdn.clone(),
            addresses: registration.addresses.clone(),
            client_id: registration.client_id.iter().map(|b| format!("{b:02x}")).collect(),
            confirmed: false,
        }
    }

    fn registration(&self) -> Registration {
        let client_id = (0..self.client_id.len() / 2)
            .filter_map(|i| u8::from_str_radix(self.client_id.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        Registration { fqdn: self.fqdn.clone(), addresses: self.addresses.clone(), client_id }
    }
}

/// What `lanyard status` shows.
#[derive(Debug, Default)]
struct Status {
    registered: usize,
    pending: usize,
    /// Per record: why its last update failed (cleared when one succeeds).
    failing: BTreeMap<String, String>,
    last_error: Option<String>,
}

enum Job {
    /// `Some`: the record's name should carry these addresses; `None`: it should be gone.
    Want { key: String, registration: Option<Registration> },
    /// A problem found before anything could be queued (a name that renders to nothing).
    Failed { key: String, error: String },
    /// SIGHUP brought other settings: what is registered leaves the old server and the static
    /// attachments' names are registered again under `namer` (the daemon hands the bound
    /// leases over again itself, after this job).
    Reconfigure { server: UpdateServer, namer: Box<Namer>, config: Box<Config> },
    /// `[dns_update]` is gone: what is registered leaves the server (the thread ends after).
    Retire,
}

/// How a record's name and DHCID are made: the settings in force, and what `{host}` and the
/// client ids of records without one come from.
#[derive(Clone)]
struct Namer {
    settings: DnsUpdate,
    /// Seeds the DHCID client ids of static attachments whose records have none (from before
    /// attach fixed them), as attach seeds DHCP ones.
    host_id: String,
    host_name: String,
}

/// The updater thread's handle: jobs in, status out. Dropping it stops the thread after the
/// update in flight.
pub(super) struct DnsUpdater {
    jobs: Sender<Job>,
    status: Arc<Mutex<Status>>,
    namer: Namer,
    /// The key in force, to tell a new one in the same file at SIGHUP.
    key: Option<TsigKey>,
    /// The records whose names the file listed when the thread started: the daemon watches
    /// their guests (see [`super::Daemon::dns_watch_registered`]).
    registered_at_start: Vec<String>,
}

impl Namer {
    fn registration(
        &self,
        record: &Record,
        config: &Config,
        addresses: Vec<IpAddr>,
    ) -> Result<Registration> {
        let template = record.dns.name.as_deref().unwrap_or(&self.settings.name);
        let label = crate::dns::render_label(template, &self.name_vars(record, config))
            .map_err(|e| e.context(format!("the DNS name of {}", record.guest.display())))?;
        let client_id = match &record.dhcp {
            // The DHCP client's own option 61, as Kea and ISC derive the DHCID from it.
            Some(settings) => super::lease::client_id_bytes(&settings.client_id),
            None if !record.dns.client_id.is_empty() => {
                super::lease::client_id_bytes(&record.dns.client_id)
            }
            // A record from before the attach fixed it.
            None => super::lease::client_id_bytes(&crate::naming::client_id(
                &self.host_id,
                &record.guest.identity(),
                &record.guest_ifname,
            )),
        };
        Ok(Registration { fqdn: format!("{label}.{}", self.settings.zone), addresses, client_id })
    }

    fn name_vars(&self, record: &Record, config: &Config) -> NameVars {
        let (container, container_id) = guest_names(&record.guest);
        let network = config
            .networks
            .iter()
            .find(|(_, network)| network.host_interface == record.host_interface)
            .map_or_else(|| record.host_interface.clone(), |(name, _)| name.clone());
        NameVars {
            container,
            container_id,
            ifname: record.guest_ifname.clone(),
            network,
            host: self.host_name.clone(),
        }
    }
}

/// The guest of a static attachment whose name is registered, watched so that the name goes
/// with the guest (a lease's guest is watched by its slot, which removes the name itself).
pub(super) struct WatchedGuest {
    /// `netns:NAME` guests: the name and the namespace it named at registration (deleted, or
    /// made again under the same name, it is not this guest any more).
    netns: Option<(String, NetnsId)>,
    /// `pid:N` guests: readable when the process exits (closed with this value, which takes it
    /// out of the epoll set).
    pidfd: Option<OwnedFd>,
}

impl DnsUpdater {
    /// Start the thread: first it removes what attachments that are gone had registered (and
    /// sends again what was never confirmed), then it serves the queue.
    pub(super) fn start(host: &Host, settings: &DnsUpdate, state_dir: &Path) -> Result<DnsUpdater> {
        let server = update_server(settings)?;
        let key = server.key.clone();
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(&dir)
            .with_context(ErrorKind::Io, || format!("create {}", dir.display()))?;
        let kept = load(&dir)?;
        let registered_at_start = kept.keys().cloned().collect();
        let status = Arc::new(Mutex::new(Status::default()));
        let (jobs, queue) = std::sync::mpsc::channel();
        let worker = Worker {
            server,
            dir,
            kept,
            wanted: BTreeMap::new(),
            retry: BTreeMap::new(),
            status: status.clone(),
            host: host.try_clone()?,
        };
        std::thread::Builder::new()
            .name("lanyard-dns".into())
            .spawn(move || worker.run(queue))
            .with_context(ErrorKind::Io, || "start the DNS update thread")?;
        // `{host}`: the short hostname (of the daemon's UTS namespace, the host's).
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().split('.').next().unwrap_or("").to_string())
            .unwrap_or_default();
        Ok(DnsUpdater {
            jobs,
            status,
            namer: Namer { settings: settings.clone(), host_id: host.host_id.clone(), host_name },
            key,
            registered_at_start,
        })
    }

    /// SIGHUP: `settings` from now on, when they (or the key in their file) changed; true then.
    /// A key file that cannot be read leaves everything as it was.
    fn reconfigure(&mut self, settings: &DnsUpdate, config: &Config) -> Result<bool> {
        let server = update_server(settings)?;
        if *settings == self.namer.settings && server.key == self.key {
            return Ok(false);
        }
        self.namer.settings = settings.clone();
        self.key = server.key.clone();
        let namer = Box::new(self.namer.clone());
        let _ =
            self.jobs.send(Job::Reconfigure { server, namer, config: Box::new(config.clone()) });
        Ok(true)
    }

    /// `[dns_update]` is gone: the thread removes every name it registered, then ends.
    fn retire(self) {
        let _ = self.jobs.send(Job::Retire);
    }

    /// Register `record`'s name with `addresses` (the lease's and the static ones), replacing
    /// what it had; nothing when the attachment opted out.
    pub(super) fn register(
        &self,
        key: &str,
        record: &Record,
        config: &Config,
        addresses: Vec<IpAddr>,
    ) {
        if record.dns.off {
            return;
        }
        if addresses.is_empty() {
            return self.unregister(key);
        }
        let job = match self.namer.registration(record, config, addresses) {
            Ok(registration) => {
                Job::Want { key: key.to_string(), registration: Some(registration) }
            }
            Err(e) => Job::Failed { key: key.to_string(), error: e.to_string() },
        };
        let _ = self.jobs.send(job);
    }

    /// Remove what `key`'s attachment registered (nothing if it registered nothing).
    pub(super) fn unregister(&self, key: &str) {
        let _ = self.jobs.send(Job::Want { key: key.to_string(), registration: None });
    }

    /// For `lanyard status`.
    pub(super) fn status_json(&self) -> serde_json::Value {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "Server": self.namer.settings.server.to_string(),
            "Zone": self.namer.settings.zone,
            "Registered": status.registered,
            "Pending": status.pending,
            "Failing": status.failing,
            "LastError": status.last_error,
        })
    }
}

impl super::Daemon {
    /// Whether the DHCP client of `record` leaves DNS to lanyard (option 81 with N).
    pub(super) fn lanyard_updates_dns(&self, record: &Record) -> bool {
        self.dns.is_some() && !record.dns.off
    }

    /// The lease of slot `key` is bound (or renewed), or its SLAAC addresses changed: its name
    /// carries the lease's address, the attachment's static ones (IPv6 beside DHCPv4) and, with
    /// `--slaac`, the addresses the link made from router advertisements.
    pub(super) fn dns_lease_bound(&self, key: &str) {
        let (Some(dns), Some(slot)) = (&self.dns, self.slots.get(key)) else { return };
        let Some(lease) = &slot.stored.lease else { return };
        if awaits_its_container_name(&slot.record) {
            return;
        }
        let mut addresses = vec![IpAddr::V4(lease.address)];
        addresses.extend(slot.record.addresses.iter().map(|a| a.address.addr()));
        let slaac = slot.live.iter().flat_map(|live| live.slaac.iter());
        addresses.extend(slaac.map(|address| IpAddr::V6(*address)));
        dns.register(key, &slot.record, &self.config, addresses);
    }

    /// The addresses of `key`'s attachment are gone (lease lost or released, guest gone,
    /// detached): so is its name.
    pub(super) fn dns_gone(&self, key: &str) {
        if let Some(dns) = &self.dns {
            dns.unregister(key);
        }
    }

    /// At start: watch the guests of the static attachments whose names the last daemon
    /// registered. Those already gone are not watched; the updater removes their names itself.
    pub(super) fn dns_watch_registered(&mut self) {
        let keys = match self.dns.as_mut() {
            Some(dns) => std::mem::take(&mut dns.registered_at_start),
            None => return,
        };
        for key in keys {
            if let Some(record) = self.load_record(&key).filter(|record| record.dhcp.is_none()) {
                self.dns_watch_guest(&key, &record);
            }
        }
    }

    /// Watch the guest of static attachment `key` while its name is registered; false when
    /// the guest is gone already. Containers are not watched: a stopped one keeps its name
    /// (Docker may start it again), and the Docker watcher detaches a destroyed one, which
    /// removes the name. Namespaces given by path (and CNI's) are left to their owner's detach.
    fn dns_watch_guest(&mut self, key: &str, record: &Record) -> bool {
        let watched = match &record.guest {
            GuestRef::Netns { name } => match Netns::from_name(name) {
                Ok(netns) if netns.id() == record.netns => {
                    WatchedGuest { netns: Some((name.clone(), record.netns)), pidfd: None }
                }
                _ => return false,
            },
            GuestRef::Pid { pid } => {
                // The pidfd first: a process that dies before its namespace is read is then
                // reported by the pidfd at once, not missed.
                match (crate::sys::pidfd_open(*pid), Netns::from_pid(*pid)) {
                    (Ok(pidfd), Ok(netns)) if netns.id() == record.netns => {
                        WatchedGuest { netns: None, pidfd: Some(pidfd) }
                    }
                    _ => return false,
                }
            }
            _ => return true,
        };
        if let Some(pidfd) = &watched.pidfd {
            let owner = Owner::DnsGuestExit(key.to_string());
            if let Err(e) = watch_fd(&self.epoll, &mut self.owners, pidfd.as_fd(), owner) {
                log(format_args!("{key}: {e}; its name stays in DNS when its process exits"));
            }
        }
        self.dns_guests.insert(key.to_string(), watched);
        true
    }

    /// /run/netns changed: the static attachments whose namespace was deleted lose their names.
    pub(super) fn dns_netns_changed(&mut self) {
        let gone: Vec<String> = self
            .dns_guests
            .iter()
            .filter(|(_, watched)| {
                watched.netns.as_ref().is_some_and(|(name, id)| {
                    Netns::from_name(name).map(|now| now.id() != *id).unwrap_or(true)
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            self.dns_guest_gone(&key, "its namespace was deleted");
        }
    }

    /// The guest of static attachment `key` is gone: so is its name (its record stays until
    /// a detach, as for a lease's guest).
    pub(super) fn dns_guest_gone(&mut self, key: &str, why: &str) {
        self.dns_guests.remove(key);
        if let Some(dns) = &self.dns {
            log(format_args!("{key}: {why}: removing its name from DNS"));
            dns.unregister(key);
        }
    }

    /// SIGHUP (the new config is in force): `[dns_update]` changed, or the key in its file did.
    /// The names lanyard registered leave the old server and are registered under the new
    /// settings, those of bound leases included; without `[dns_update]` they are removed and
    /// updates stop; a new `[dns_update]` starts them.
    pub(super) fn dns_reconfigure(&mut self) {
        let Some(settings) = self.config.dns_update.clone() else {
            if let Some(dns) = self.dns.take() {
                log("SIGHUP: [dns_update] removed: removing the names lanyard registered");
                dns.retire();
                self.dns_guests.clear();
            }
            return;
        };
        match self.dns.as_mut() {
            Some(dns) => match dns.reconfigure(&settings, &self.config) {
                Ok(false) => return,
                Ok(true) => log(format_args!(
                    "SIGHUP: [dns_update] changed: the names lanyard registered move to zone {} \
                     at {}",
                    settings.zone, settings.server
                )),
                Err(e) => {
                    return log(format_args!(
                        "SIGHUP: [dns_update] not applied, the names stay where they are: {e}"
                    ))
                }
            },
            None => match DnsUpdater::start(&self.host, &settings, &self.state_dir) {
                Ok(updater) => {
                    log(format_args!(
                        "SIGHUP: [dns_update] added: names go to zone {} at {}",
                        settings.zone, settings.server
                    ));
                    self.dns = Some(updater);
                    self.dns_watch_registered();
                }
                Err(e) => return log(format_args!("SIGHUP: no DNS updates: {e}")),
            },
        }
        let bound: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.live.is_some() && slot.stored.lease.is_some())
            .map(|(key, _)| key.clone())
            .collect();
        for key in bound {
            self.dns_lease_bound(&key);
        }
    }

    /// A control request: register a static attachment's addresses (`register`) or remove
    /// them. Answered at once; the update itself is queued.
    pub(super) fn serve_dns(
        &mut self,
        stream: std::os::unix::net::UnixStream,
        record_file: &str,
        register: bool,
    ) {
        let response = match self.dns_request(record_file, register) {
            Ok(data) => super::Response::ok(data),
            Err(e) => super::Response::error(&e),
        };
        super::requests::reply(stream, &response);
    }

    fn dns_request(&mut self, record_file: &str, register: bool) -> Result<serde_json::Value> {
        let Some(dns) = &self.dns else {
            if !register {
                return Ok(serde_json::Value::Null);
            }
            let config = self.config.source.as_ref().map_or_else(
                || "no config file".to_string(),
                |file| format!("config {}", file.display()),
            );
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the lanyard daemon of {} sends no DNS updates ({config} has no usable \
                     [dns_update]; see daemon.log): restart it with the config that has one",
                    self.state_dir.display()
                ),
            ));
        };
        if !register {
            dns.unregister(record_file);
            self.dns_guests.remove(record_file);
            return Ok(serde_json::Value::Null);
        }
        let record = self.load_record(record_file).ok_or_else(|| {
            Error::not_found(format!("no record {record_file} in {}", self.state_dir.display()))
        })?;
        if record.dhcp.is_some() {
            // Its lease registers it when bound. A name given since (the Docker watcher names a
            // Docker DHCP endpoint's record once its container runs) applies now and at every
            // renewal.
            if let Some(slot) = self.slots.get_mut(record_file) {
                slot.record.dns = record.dns.clone();
            }
            self.dns_lease_bound(record_file);
            return Ok(serde_json::Value::Null);
        }
        let addresses = record.addresses.iter().map(|a| a.address.addr()).collect();
        dns.register(record_file, &record, &self.config, addresses);
        if !record.dns.off && !self.dns_watch_guest(record_file, &record) {
            self.dns_guest_gone(record_file, "its guest went before its name was registered");
        }
        Ok(json!({ "Queued": !record.dns.off }))
    }
}

/// Where `settings` send updates, with the key read from its file.
fn update_server(settings: &DnsUpdate) -> Result<UpdateServer> {
    let key =
        match &settings.tsig_key_file {
            Some(file) => Some(TsigKey::from_file(file).map_err(|e| {
                e.context(format!("dns_update: read the TSIG key {}", file.display()))
            })?),
            None => None,
        };
    Ok(UpdateServer {
        server: settings.server,
        zone: settings.zone.clone(),
        key,
        ttl: settings.ttl,
        reverse: settings.reverse,
        timeout: UPDATE_TIMEOUT,
    })
}

/// Hand a new static attachment's addresses to the daemon, which registers them (started on
/// demand, as for DHCP). Never fails the attach: what went wrong is returned as a warning.
pub fn hand_over(host: &Host, config: &Config, record: &Record) -> Option<String> {
    if config.dns_update.is_none() || record.dns.off || record.dhcp.is_some() {
        return None;
    }
    if record.addresses.is_empty() {
        return None;
    }
    let request = super::control::Request::DnsRegister { record: record.file_name() };
    match super::control::request(host, &request, Duration::from_secs(5)) {
        Ok(answer) if answer.ok => None,
        Ok(answer) => Some(format!("not registered in DNS: {}", answer.into_error())),
        Err(e) => Some(format!("not registered in DNS: {e}")),
    }
}

/// A static attachment is detached: the daemon, if one runs, removes its name now. With none
/// running, the next daemon does it when it starts (it finds the record gone).
pub fn take_back(host: &Host, record: &Record) {
    if record.dns.off || record.dhcp.is_some() || record.addresses.is_empty() {
        return;
    }
    let request = super::control::Request::DnsUnregister { record: record.file_name() };
    let _ = super::control::try_request(host.state.path(), &request, Duration::from_secs(2));
}

/// A Docker DHCP network's lease is taken before Docker says whose it is (its record is named
/// by the network and MAC): its name waits until the daemon's Docker watcher names the record
/// after the container's start.
fn awaits_its_container_name(record: &Record) -> bool {
    matches!(record.guest, GuestRef::DockerEndpoint { .. }) && record.dns.name.is_none()
}

/// `{container}` and `{container_id}` of a guest: the container's name and id, a namespace's
/// name, a CNI pod's name (or its container id); what else a guest has.
fn guest_names(guest: &GuestRef) -> (String, String) {
    match guest {
        GuestRef::Container { id, name } => (name.clone(), id.chars().take(12).collect()),
        GuestRef::Netns { name } => (name.clone(), String::new()),
        GuestRef::Pid { pid } => (format!("pid-{pid}"), String::new()),
        GuestRef::Path { path } => (
            Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            String::new(),
        ),
        GuestRef::DockerEndpoint { endpoint, .. } => {
            let short: String = endpoint.chars().take(12).collect();
            (short.clone(), short)
        }
        GuestRef::Cni { container_id, stable_name, .. } => {
            let pod = stable_name
                .strip_prefix("pod:")
                .map(|pod| pod.rsplit('/').next().unwrap_or(pod).to_string());
            let short: String = container_id.chars().take(12).collect();
            (pod.unwrap_or_else(|| short.clone()), short)
        }
    }
}

/// The thread's own state.
struct Worker {
    server: UpdateServer,
    dir: PathBuf,
    /// What may be in the zone, by record file name (persisted).
    kept: BTreeMap<String, Kept>,
    /// Changes still to make, by record file name.
    wanted: BTreeMap<String, Option<Registration>>,
    /// When a failed change is tried again, and the wait after that.
    retry: BTreeMap<String, (Instant, Duration)>,
    status: Arc<Mutex<Status>>,
    host: Host,
}

impl Worker {
    fn run(mut self, queue: Receiver<Job>) {
        self.reconcile();
        loop {
            self.publish();
            let now = Instant::now();
            let next =
                self.wanted.keys().map(|key| self.retry.get(key).map_or(now, |(at, _)| *at)).min();
            let job = match next {
                None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) if at <= now => queue.try_recv().map_err(|e| match e {
                    std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
                Some(at) => queue.recv_timeout(at - now),
            };
            match job {
                Ok(job) => {
                    self.take(job);
                    // Everything queued meanwhile first: a register and an unregister of one
                    // record in quick succession end as the last says.
                    while let Ok(job) = queue.try_recv() {
                        self.take(job);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            let due: Vec<String> = self
                .wanted
                .keys()
                .filter(|key| self.retry.get(*key).is_none_or(|(at, _)| *at <= now))
                .cloned()
                .collect();
            for key in due {
                self.carry_out(&key);
            }
        }
    }

    fn take(&mut self, job: Job) {
        match job {
            Job::Want { key, registration } => {
                // A new wish is tried at once, whatever the backoff of the old one.
                self.retry.remove(&key);
                self.wanted.insert(key, registration);
            }
            Job::Failed { key, error } => self.failed(key, error),
            Job::Reconfigure { server, namer, config } => self.reconfigure(server, &namer, &config),
            Job::Retire => self.remove_all(),
        }
    }

    fn failed(&self, key: String, error: String) {
        log(format_args!("{key}: DNS: {error}"));
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.failing.insert(key, error.clone());
        status.last_error = Some(error);
    }

    /// New settings: every registered name leaves the old server, then the static
    /// attachments' names are registered at the new one under their new names. Leases' names
    /// come as the daemon hands the bound leases over again.
    fn reconfigure(&mut self, server: UpdateServer, namer: &Namer, config: &Config) {
        // What should have a name: registered or about to be, and not on its way out.
        let again: std::collections::BTreeSet<String> = self
            .kept
            .keys()
            .chain(self.wanted.keys())
            .filter(|key| !matches!(self.wanted.get(*key), Some(None)))
            .cloned()
            .collect();
        self.remove_all();
        self.server = server;
        for key in again {
            let Some(record) = self.host.state.load(&key).ok().flatten() else { continue };
            if record.dhcp.is_some() || record.dns.off || record.addresses.is_empty() {
                continue;
            }
            let addresses = record.addresses.iter().map(|a| a.address.addr()).collect();
            match namer.registration(&record, config, addresses) {
                Ok(registration) => {
                    self.wanted.insert(key, Some(registration));
                }
                Err(e) => self.failed(key, e.to_string()),
            }
        }
    }

    /// Remove every registered name from the server in force, one try each: what it does not
    /// take back is left there (the log and status say so) and forgotten, since nothing here
    /// will send to that server again.
    fn remove_all(&mut self) {
        self.wanted.clear();
        self.retry.clear();
        self.status.lock().unwrap_or_else(|e| e.into_inner()).failing.clear();
        let keys: Vec<String> = self.kept.keys().cloned().collect();
        for key in keys {
            if let Err(e) = self.unregister(&key) {
                let fqdn = self.kept.remove(&key).map(|kept| kept.fqdn).unwrap_or_default();
                let error =
                    format!("{fqdn} left at {}: {e} (remove it there by hand)", self.server.server);
                log(format_args!("{key}: DNS: {error}"));
                self.status.lock().unwrap_or_else(|e| e.into_inner()).last_error =
                    Some(format!("{key}: {error}"));
            }
        }
        if let Err(e) = self.save() {
            log(format_args!("DNS: {e}"));
        }
    }

    /// At start: what attachments that are gone (record removed, or its guest no longer
    /// there) registered is removed; what was never confirmed is sent again.
    fn reconcile(&mut self) {
        for (key, kept) in &self.kept {
            let record = self.host.state.load(key).ok().flatten();
            // A Docker plugin endpoint's record lives exactly as long as the endpoint (its
            // DeleteEndpoint, or the lease's end, removes it): its link moves between Docker's
            // namespaces, so no namespace of its own tells whether it is alive.
            let alive = record.as_ref().is_some_and(|record| {
                matches!(record.guest, crate::state::GuestRef::DockerEndpoint { .. })
                    || crate::detach::live_guest_netns(&self.host, record).is_some()
            });
            if !alive {
                log(format_args!("{key}: its attachment is gone: removing {} from DNS", kept.fqdn));
                self.wanted.insert(key.clone(), None);
            } else if !kept.confirmed {
                self.wanted.insert(key.clone(), Some(kept.registration()));
            }
        }
    }

    /// Make the zone say what `key` wants; on failure, plan a retry.
    fn carry_out(&mut self, key: &str) {
        let Some(wanted) = self.wanted.get(key).cloned() else { return };
        let result = match &wanted {
            Some(registration) => self.register(key, registration),
            None => self.unregister(key),
        };
        match result {
            Ok(()) => {
                self.wanted.remove(key);
                self.retry.remove(key);
                self.status.lock().unwrap_or_else(|e| e.into_inner()).failing.remove(key);
            }
            Err(e) => {
                let wait = self.retry.get(key).map_or(FIRST_BACKOFF, |(_, wait)| *wait);
                log(format_args!("{key}: DNS: {e}; trying again in {} s", wait.as_secs()));
                self.retry
                    .insert(key.to_string(), (Instant::now() + wait, (wait * 2).min(MAX_BACKOFF)));
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                status.failing.insert(key.to_string(), e.to_string());
                status.last_error = Some(format!("{key}: {e}"));
            }
        }
    }

    fn register(&mut self, key: &str, registration: &Registration) -> Result<()> {
        if let Some(kept) = self.kept.get(key) {
            if kept.confirmed && kept.registration() == *registration {
                return Ok(());
            }
            // Renamed: the old name goes first (the new one may be refused; the old one
            // would then stay behind with no attachment asking for it). Readdressed, the
            // register itself replaces the addresses and removes the PTRs of those that went.
            if kept.fqdn != registration.fqdn {
                self.unregister(key)?;
            }
        }
        // On disk before it is sent: a crash after the server took it must not lose it.
        self.kept.insert(key.to_string(), Kept::new(registration));
        self.save()?;
        crate::dns::register(&self.server, registration)?;
        log(format_args!(
            "{key}: registered {} -> {}",
            registration.fqdn,
            registration.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ")
        ));
        if let Some(kept) = self.kept.get_mut(key) {
            kept.confirmed = true;
        }
        self.save()
    }

    fn unregister(&mut self, key: &str) -> Result<()> {
        let Some(kept) = self.kept.get(key) else { return Ok(()) };
        let registration = kept.registration();
        match crate::dns::unregister(&self.server, &registration) {
            Ok(()) => log(format_args!("{key}: removed {} from DNS", registration.fqdn)),
            // Someone else holds the name now: nothing of ours is left to remove.
            Err(e) if e.kind() == ErrorKind::Conflict => {
                log(format_args!("{key}: {e}; forgetting it"))
            }
            Err(e) => return Err(e),
        }
        self.kept.remove(key);
        self.save()
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_vec_pretty(&self.kept)
            .with_context(ErrorKind::Io, || "encode the registered DNS names")?;
        crate::state::write_atomically(&self.dir, FILE, &text)
    }

    fn publish(&self) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.registered = self.kept.values().filter(|kept| kept.confirmed).count();
        status.pending = self.wanted.len();
    }
}

fn load(dir: &Path) -> Result<BTreeMap<String, Kept>> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!(
                    "read {} (the DNS names lanyard registered): fix or remove it; names it \
                     lists are then left in the zone",
                    path.display()
                ),
                e,
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::with_source(ErrorKind::Io, format!("read {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_registration_reads_back_as_it_was() {
        let registration = Registration {
            fqdn: "web.app.lan".into(),
            addresses: vec!["198.18.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()],
            client_id: vec![0, 0xab, 0x01, 0xff],
        };
        let kept = Kept::new(&registration);
        assert_eq!(kept.client_id, "00ab01ff");
        let text = serde_json::to_string(&kept).unwrap();
        let back: Kept = serde_json::from_str(&text).unwrap();
        assert_eq!(back.registration(), registration);
    }

    #[test]
    fn template_variables_come_from_the_guest() {
        let container = GuestRef::Container { id: "4f1e2d3c4b5a6978".into(), name: "web".into() };
        assert_eq!(guest_names(&container), ("web".into(), "4f1e2d3c4b5a".into()));
        assert_eq!(guest_names(&GuestRef::Netns { name: "lab".into() }).0, "lab");
        let pod = GuestRef::Cni {
            container_id: "abcdef0123456789".into(),
            network: "lan".into(),
            netns: "/run/netns/x".into(),
            stable_name: "pod:shop/web-0".into(),
            ipam_only: false,
        };
        assert_eq!(guest_names(&pod), ("web-0".into(), "abcdef012345".into()));
        let plain = GuestRef::Cni {
            container_id: "abcdef0123456789".into(),
            network: "lan".into(),
            netns: "/run/netns/x".into(),
            stable_name: "container:abcdef0123456789".into(),
            ipam_only: false,
        };
        assert_eq!(guest_names(&plain).0, "abcdef012345");
    }
}
