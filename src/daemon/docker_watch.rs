//! The daemon's Docker face: containers that declare their LAN (labels, docker-pipework's
//! variables) are wired when they start, rewired when anything restarted, and cleaned up when
//! they go. Two threads beside the lease loop, which they never block: the follower reads
//! Docker's event stream (and reconnects with backoff when it breaks or Docker is not up yet);
//! the wirer does what the events ask with the library's own attach and detach, exactly as
//! the CLI does (a DHCP declaration reaches the lease loop through the control socket).
//!
//! Reconcile (at start, after every reconnect, after a config reload) compares every running
//! container's declarations with the records and fixes the difference; a second run changes
//! nothing. Records of containers Docker no longer has are collected.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::declare::{declarations, has_declarations, ContainerFacts};
use crate::docker::{ContainerDetails, ContainerEvent, DockerApi, DockerHost};
use crate::error::Result;
use crate::host::Host;
use crate::state::{Declared, GuestRef, Record};

use super::log;

/// What the wirer is asked to do, in arrival order.
pub enum Work {
    /// The event stream is (again) subscribed: reconcile everything.
    Connected,
    /// The event stream broke (or Docker is not up yet), and why.
    Lost(String),
    Event(ContainerEvent),
    /// SIGHUP loaded a new configuration: declarations are judged again.
    Config(Box<Config>),
}

/// What `lanyard status` shows of the Docker side.
#[derive(Debug, Default, Clone, Serialize)]
pub struct WatchStatus {
    pub docker_host: String,
    pub connected: bool,
    /// Seconds since the Unix epoch of the last (re)connection.
    pub connected_since: Option<u64>,
    /// Subscriptions after the first one.
    pub reconnects: u64,
    /// Why the connection is down, while it is.
    pub connection_error: Option<String>,
    pub reconciles: u64,
    /// The last reconcile: containers looked at, and how long it took.
    pub last_reconcile_containers: usize,
    pub last_reconcile_ms: u64,
    /// Per running container with declarations, by ID.
    pub containers: BTreeMap<String, ContainerStatus>,
    /// The newest errors, oldest first, each with its time.
    pub last_errors: VecDeque<String>,
    /// From a start event's own time to the container's interfaces wired, milliseconds: the
    /// most recent ones, oldest first (for the benchmark and the metrics). A DHCP interface
    /// counts as wired here once it is made and its lease asked for, not once it is bound.
    pub wire_latencies_ms: VecDeque<f64>,
    /// The same, all of them, as a Prometheus histogram.
    #[serde(skip)]
    pub wire_latency: Histogram,
    /// Container events received.
    pub events: u64,
}

/// Cumulative buckets, in seconds, as Prometheus histograms count.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub counts: [u64; LATENCY_BUCKETS.len()],
    pub sum_seconds: f64,
    pub count: u64,
}

/// Upper bounds of the event-to-wired histogram (the target is a median under 50 ms).
pub const LATENCY_BUCKETS: [f64; 11] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        for (count, bound) in self.counts.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub interfaces: Vec<InterfaceStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    /// "label lanyard.net", "env pipework_cmd".
    pub source: String,
    pub guest_ifname: Option<String>,
    /// "wired", "refused" (the declaration is wrong), "failed" (the attach did not work).
    pub state: &'static str,
    pub reason: Option<String>,
    /// The record's file name, for the lease's state.
    pub record: Option<String>,
}

const MAX_ERRORS: usize = 20;
/// How long the daemon's loop may take to queue a DNS registration (it answers at once).
const DNS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_LATENCIES: usize = 1024;
/// Reconnect backoff: the first retry is quick (dockerd restarting), then it slows down.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The running watcher: where to send work, and its status.
pub struct DockerWatch {
    sender: mpsc::Sender<Work>,
    pub status: Arc<Mutex<WatchStatus>>,
}

impl DockerWatch {
    /// Start following `docker_host` (`None`: DOCKER_HOST or the default socket) for `host`.
    pub fn start(host: Host, config: Config) -> Result<DockerWatch> {
        let docker_host = match &host.docker_host {
            Some(docker_host) => docker_host.clone(),
            None => DockerHost::from_env()?,
        };
        let status = Arc::new(Mutex::new(WatchStatus {
            docker_host: docker_host.to_string(),
            ..Default::default()
        }));
        let (sender, receiver) = mpsc::channel();
        let follower_api = DockerApi::with_host(docker_host.clone())?;
        let wirer_api = DockerApi::with_host(docker_host)?;
        let follower_sender = sender.clone();
        std::thread::Builder::new()
            .name("docker-events".into())
            .spawn(move || follow(follower_api, follower_sender))
            .map_err(|e| {
                crate::error::Error::with_source(
                    crate::error::ErrorKind::Io,
                    "start the Docker event thread",
                    e,
                )
            })?;
        let wirer = Wirer {
            host,
            config,
            api: wirer_api,
            status: status.clone(),
            connected: false,
            reconcile_at: None,
            retry: BTreeSet::new(),
            dhcp_containers: None,
        };
        std::thread::Builder::new()
            .name("docker-wirer".into())
            .spawn(move || wirer.run(receiver))
            .map_err(|e| {
                crate::error::Error::with_source(
                    crate::error::ErrorKind::Io,
                    "start the Docker wiring thread",
                    e,
                )
            })?;
        Ok(DockerWatch { sender, status })
    }

    pub fn reload(&self, config: Config) {
        let _ = self.sender.send(Work::Config(Box::new(config)));
    }

    /// The status as JSON (a copy: the lock is held only to clone).
    pub fn status_json(&self) -> serde_json::Value {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        serde_json::to_value(status).unwrap_or_default()
    }
}

/// Subscribe, forward every event, and when the stream ends, subscribe again with backoff.
/// Never returns: the thread ends with the process.
fn follow(api: DockerApi, sender: mpsc::Sender<Work>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut connected = || {
            backoff = FIRST_BACKOFF;
            let _ = sender.send(Work::Connected);
        };
        let mut each = |event: ContainerEvent| {
            let _ = sender.send(Work::Event(event));
        };
        let why = api.follow_container_events(&mut connected, &mut each);
        if sender.send(Work::Lost(why.to_string())).is_err() {
            return;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Wirer {
    host: Host,
    config: Config,
    api: DockerApi,
    status: Arc<Mutex<WatchStatus>>,
    connected: bool,
    /// When a reconcile is owed: now when the stream (re)connected or the config changed,
    /// later when Docker did not answer the last one.
    reconcile_at: Option<Instant>,
    /// Containers whose wiring failed (an attach error, Docker not answering): tried again
    /// every RETRY_INTERVAL, and by every reconcile. Refusals are not retried: only a new
    /// configuration changes their verdict, and a reload reconciles.
    retry: BTreeSet<String>,
    /// Containers on lanyard DHCP networks and their MACs (see [`crate::plugin::removed`]),
    /// read at the first use; `None` when the plugin is off.
    dhcp_containers: Option<crate::plugin::store::DhcpContainers>,
}

/// How often failed wirings and unfinished reconciles are tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

impl Wirer {
    fn run(mut self, receiver: mpsc::Receiver<Work>) {
        let mut ever_connected = false;
        let mut next_retry = Instant::now();
        loop {
            // Something to try again (a container whose wiring failed, a reconcile Docker did
            // not finish): wake up for it; otherwise sleep until work comes.
            let now = Instant::now();
            let due = [self.reconcile_at, (!self.retry.is_empty()).then_some(next_retry)]
                .into_iter()
                .flatten()
                .min();
            let timeout = match due {
                Some(at) if self.connected => at.saturating_duration_since(now),
                _ => Duration::from_secs(3600),
            };
            let work = match receiver.recv_timeout(timeout) {
                Ok(work) => Some(work),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            match work {
                None => {}
                Some(Work::Connected) => {
                    if ever_connected {
                        log("Docker event stream subscribed again: reconciling");
                    } else {
                        log("Docker connected: reconciling");
                    }
                    self.with_status(|s| {
                        s.connected = true;
                        s.connected_since = Some(crate::attach::now_unix());
                        s.connection_error = None;
                        if ever_connected {
                            s.reconnects += 1;
                        }
                    });
                    ever_connected = true;
                    self.connected = true;
                    self.reconcile_at = Some(Instant::now());
                }
                Some(Work::Lost(why)) => {
                    if self.connected {
                        log(format_args!("Docker event stream lost: {why}"));
                        self.error(format!("Docker event stream lost: {why}"));
                    }
                    self.connected = false;
                    self.with_status(|s| {
                        s.connected = false;
                        s.connection_error = Some(why);
                    });
                }
                Some(Work::Event(event)) => self.event(event),
                Some(Work::Config(config)) => {
                    self.config = *config;
                    if self.connected {
                        log("configuration reloaded: reconciling");
                        self.reconcile_at = Some(Instant::now());
                    }
                }
            }
            if !self.connected {
                continue;
            }
            let now = Instant::now();
            if self.reconcile_at.is_some_and(|at| at <= now) {
                self.reconcile_all();
                next_retry = Instant::now() + RETRY_INTERVAL;
            } else if !self.retry.is_empty() && next_retry <= now {
                for id in std::mem::take(&mut self.retry) {
                    self.wire(&id);
                }
                next_retry = Instant::now() + RETRY_INTERVAL;
            }
        }
    }

    fn with_status(&self, change: impl FnOnce(&mut WatchStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn error(&self, line: String) {
        let stamped = format!("{} {line}", crate::inspect::rfc3339(crate::attach::now_unix()));
        self.with_status(|s| {
            s.last_errors.push_back(stamped);
            while s.last_errors.len() > MAX_ERRORS {
                s.last_errors.pop_front();
            }
        });
    }

    fn event(&mut self, event: ContainerEvent) {
        log(format_args!(
            "docker event: {} container {} ({})",
            event.action,
            event.name,
            short(&event.id)
        ));
        self.with_status(|s| s.events += 1);
        match event.action.as_str() {
            "start" => {
                let wired = self.wire(&event.id);
                if wired == Some(true) && event.at_nanos > 0 {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as i64)
                        .unwrap_or(0);
                    let latency_ms = (now - event.at_nanos) as f64 / 1e6;
                    self.with_status(|s| {
                        s.wire_latency.observe(latency_ms / 1000.0);
                        s.wire_latencies_ms.push_back(latency_ms);
                        while s.wire_latencies_ms.len() > MAX_LATENCIES {
                            s.wire_latencies_ms.pop_front();
                        }
                    });
                }
            }
            // The lease loop notices the exit itself (pidfd) and closes the sockets it held in
            // the container; the records stay, since Docker may start it again.
            "die" => {
                let was_known =
                    self.status.lock().map(|mut s| s.containers.remove(&event.id).is_some());
                if was_known.unwrap_or(false) {
                    log(format_args!("container {}: stopped", event.name));
                }
            }
            "destroy" => {
                self.collect_container(&event.id);
                self.release_dhcp_leases(&event.id);
            }
            _ => {}
        }
    }

    /// Compare every running container with its records and fix the difference; collect the
    /// records of containers Docker no longer has.
    fn reconcile_all(&mut self) {
        let started = Instant::now();
        self.reconcile_at = None;
        self.retry.clear();
        let containers = match self.api.list_containers() {
            Ok(containers) => containers,
            Err(e) => {
                log(format_args!("reconcile: {e}; trying again in {RETRY_INTERVAL:?}"));
                self.error(format!("reconcile: {e}"));
                self.reconcile_at = Some(Instant::now() + RETRY_INTERVAL);
                return;
            }
        };
        let records = match self.host.state.records() {
            Ok(records) => records,
            Err(e) => {
                // As when Docker does not answer: nothing was compared yet, so the whole
                // reconcile is owed (a damaged record file fixed by hand, a full disk freed).
                log(format_args!(
                    "reconcile: read the records: {e}; trying again in {RETRY_INTERVAL:?}"
                ));
                self.error(format!("reconcile: read the records: {e}"));
                self.reconcile_at = Some(Instant::now() + RETRY_INTERVAL);
                return;
            }
        };
        // Read once, not once per container: a reconcile of n containers stays O(n).
        let mut by_container = BTreeMap::<&str, Vec<Record>>::new();
        for record in &records {
            if let GuestRef::Container { id, .. } = &record.guest {
                by_container.entry(id.as_str()).or_default().push(record.clone());
            }
        }
        let running: Vec<&String> =
            containers.iter().filter(|(_, running)| *running).map(|(id, _)| id).collect();
        for id in &running {
            let recorded = by_container.get(id.as_str()).cloned().unwrap_or_default();
            self.wire_with(id, Some(recorded));
            if self.reconcile_at.is_some() {
                // Docker stopped answering: the rest waits for the next try, not a timeout each.
                log(format_args!(
                    "reconcile: Docker does not answer; trying again in {RETRY_INTERVAL:?}"
                ));
                return;
            }
        }
        let stopped: Vec<&String> =
            containers.iter().filter(|(_, running)| !*running).map(|(id, _)| id).collect();
        self.start_stranded(&stopped);
        let known: BTreeSet<&str> = containers.iter().map(|(id, _)| id.as_str()).collect();
        for record in &records {
            if let GuestRef::Container { id, .. } = &record.guest {
                if !known.contains(id.as_str()) {
                    self.collect_record(record, "Docker no longer has its container");
                }
            }
        }
        let gone: Vec<String> = self
            .dhcp_note()
            .map(|note| {
                note.containers.keys().filter(|id| !known.contains(id.as_str())).cloned().collect()
            })
            .unwrap_or_default();
        for id in gone {
            self.release_dhcp_leases(&id);
        }
        let running_ids: BTreeSet<&str> = running.iter().map(|id| id.as_str()).collect();
        let elapsed = started.elapsed();
        self.with_status(|s| {
            s.containers.retain(|id, _| running_ids.contains(id.as_str()));
            s.reconciles += 1;
            s.last_reconcile_containers = containers.len();
            s.last_reconcile_ms = elapsed.as_millis() as u64;
        });
        log(format_args!(
            "reconcile: {} container(s), {} running, in {} ms",
            containers.len(),
            running_ids.len(),
            elapsed.as_millis()
        ));
    }

    /// Start the containers Docker gave up on because lanyard's network plugin was not there
    /// yet: dockerd restores restart-policy containers once, at its start, and does not retry a
    /// plugin that was absent (a boot where lanyard came up after dockerd). Only containers on
    /// a network of lanyard's plugin, with a restart policy, whose last start failed (a
    /// container someone stopped has no start error and stays stopped). Called from the wirer
    /// thread, never from a plugin handler.
    fn start_stranded(&mut self, stopped: &[&String]) {
        if self.config.docker_plugin.is_none() || stopped.is_empty() {
            return;
        }
        let networks = match crate::plugin::store::Store::load(self.host.state.path()) {
            Ok(store) => store.networks.into_keys().collect::<BTreeSet<String>>(),
            Err(e) => {
                self.error(format!("restart stranded containers: {e}"));
                return;
            }
        };
        if networks.is_empty() {
            return;
        }
        for id in stopped {
            let Ok(Some(details)) = self.api.inspect_details(id) else { continue };
            let stranded = !details.info.running
                && matches!(
                    details.restart_policy.as_str(),
                    "always" | "unless-stopped" | "on-failure"
                )
                && !details.state_error.is_empty()
                && details.network_ids.iter().any(|network| networks.contains(network));
            if !stranded {
                continue;
            }
            let name = &details.info.name;
            match self.api.start_container(id) {
                Ok(()) => log(format_args!(
                    "container {name}: started (restart policy {}; Docker gave up on it: {})",
                    details.restart_policy, details.state_error
                )),
                Err(e) => {
                    log(format_args!("container {name}: could not start it again: {e}"));
                    self.error(format!("container {name}: could not start it again: {e}"));
                }
            }
        }
    }

    /// Make a running container's interfaces what its declarations say. Returns whether every
    /// wanted interface is wired; `None` when the container declares nothing (and had nothing
    /// declared), so only containers lanyard wires count in the latency figures.
    fn wire(&mut self, id: &str) -> Option<bool> {
        self.wire_with(id, None)
    }

    /// [`Wirer::wire`] with the container's records when the caller has read them already.
    fn wire_with(&mut self, id: &str, recorded: Option<Vec<Record>>) -> Option<bool> {
        let details = match self.api.inspect_details(id) {
            Ok(Some(details)) => details,
            Ok(None) => {
                self.collect_container(id);
                return Some(false);
            }
            Err(e) => {
                log(format_args!("container {}: {e}", short(id)));
                self.error(format!("container {}: {e}", short(id)));
                self.retry.insert(id.to_string());
                if matches!(
                    e.kind(),
                    crate::error::ErrorKind::Timeout | crate::error::ErrorKind::Docker
                ) {
                    self.reconcile_at = Some(Instant::now() + RETRY_INTERVAL);
                }
                return Some(false);
            }
        };
        if !details.info.running {
            return Some(false);
        }
        self.note_dhcp_macs(id, &details);
        self.name_plugin_endpoints(id, &details);
        let name = details.info.name.clone();
        let recorded = match recorded {
            Some(records) => Ok(records),
            None => self.container_records(id),
        };
        let declared_records: Vec<Record> = match recorded {
            Ok(records) => records.into_iter().filter(|r| r.declared.is_some()).collect(),
            Err(e) => {
                self.error(format!("container {name}: read its records: {e}"));
                return Some(false);
            }
        };
        if !has_declarations(&details.labels, &details.env) && declared_records.is_empty() {
            return None;
        }
        let declarations = declarations(&facts(&details), &self.config);
        let mut interfaces = Vec::new();
        let mut all_wired = true;
        for refusal in &declarations.refused {
            log(format_args!("container {name}: {} refused: {}", refusal.source, refusal.error));
            self.error(format!("container {name}: {} refused: {}", refusal.source, refusal.error));
            interfaces.push(InterfaceStatus {
                source: refusal.source.clone(),
                guest_ifname: None,
                state: "refused",
                reason: Some(refusal.error.to_string()),
                record: None,
            });
        }
        let wanted_sources: BTreeSet<&str> =
            declarations.wanted.iter().map(|d| d.source.as_str()).collect();
        // What is no longer declared (or now refused) goes first: its interface name may be
        // the one a new declaration wants.
        for record in &declared_records {
            let source = record.declared.as_ref().map(|d| d.source.as_str()).unwrap_or("");
            if !wanted_sources.contains(source) {
                self.collect_record(record, "no longer declared");
            }
        }
        for declaration in &declarations.wanted {
            let mut request = declaration.request.clone();
            // Asked per container (or by the config for all): only a macvlan needs it, a bridge
            // port is reached through the bridge.
            request.host_route = declaration.host_route
                && crate::attach::driver_for_request(&self.host, &request)
                    .is_ok_and(|driver| driver == crate::state::DriverKind::Macvlan);
            request.declared = Some(Declared {
                source: declaration.source.clone(),
                text: declaration.text.clone(),
            });
            let ifname = request.guest_ifname.clone();
            match crate::attach(&self.host, &request) {
                Ok(attached) => {
                    if !attached.unchanged {
                        log(format_args!(
                            "container {name}: {ifname} wired on {} ({})",
                            request.host_interface, declaration.source
                        ));
                        announce(&self.host, &attached);
                        let record = &attached.record;
                        if let Some(warning) =
                            super::dns::hand_over(&self.host, &self.config, record)
                        {
                            log(format_args!("container {name}: {warning}"));
                        }
                    }
                    interfaces.push(InterfaceStatus {
                        source: declaration.source.clone(),
                        guest_ifname: Some(ifname),
                        state: "wired",
                        reason: None,
                        record: Some(attached.record.file_name()),
                    });
                }
                Err(e) => {
                    all_wired = false;
                    self.retry.insert(id.to_string());
                    log(format_args!("container {name}: {} failed: {e}", declaration.source));
                    self.error(format!("container {name}: {} failed: {e}", declaration.source));
                    interfaces.push(InterfaceStatus {
                        source: declaration.source.clone(),
                        guest_ifname: Some(ifname),
                        state: "failed",
                        reason: Some(e.to_string()),
                        record: None,
                    });
                }
            }
        }
        let id = id.to_string();
        self.with_status(|s| {
            if interfaces.is_empty() {
                s.containers.remove(&id);
            } else {
                s.containers.insert(id, ContainerStatus { name, interfaces });
            }
        });
        Some(all_wired && declarations.refused.is_empty())
    }

    /// This container's records (found by its ID: a record of another container that had the
    /// same name is not this one's).
    fn container_records(&self, id: &str) -> Result<Vec<Record>> {
        Ok(self
            .host
            .state
            .records()?
            .into_iter()
            .filter(|r| matches!(&r.guest, GuestRef::Container { id: rid, .. } if rid == id))
            .collect())
    }

    /// The container is gone for good: remove every record of it and what they made.
    fn collect_container(&mut self, id: &str) {
        self.with_status(|s| {
            s.containers.remove(id);
        });
        match self.container_records(id) {
            Ok(records) => {
                for record in records {
                    self.collect_record(&record, "its container was removed");
                }
            }
            Err(e) => self.error(format!("container {}: read its records: {e}", short(id))),
        }
    }

    /// The note of containers on lanyard DHCP networks, read at the first use; `None` when the
    /// plugin is off or the note cannot be read (said in the status's errors).
    fn dhcp_note(&mut self) -> Option<&mut crate::plugin::store::DhcpContainers> {
        self.config.docker_plugin.as_ref()?;
        if self.dhcp_containers.is_none() {
            match crate::plugin::store::DhcpContainers::load(self.host.state.path()) {
                Ok(note) => self.dhcp_containers = Some(note),
                Err(e) => {
                    self.error(format!("docker plugin: {e}"));
                    return None;
                }
            }
        }
        self.dhcp_containers.as_mut()
    }

    /// A running container's MACs on lanyard DHCP networks, noted for when it is removed.
    fn note_dhcp_macs(&mut self, id: &str, details: &ContainerDetails) {
        if self.dhcp_note().is_none() {
            return;
        }
        let Some(note) = self.dhcp_containers.as_mut() else { return };
        let noted =
            crate::plugin::removed::note_container(&self.host, note, id, &details.network_macs);
        if let Err(e) = noted {
            self.error(format!("container {}: note its DHCP networks: {e}", short(id)));
        }
    }

    /// With `[dns_update]`: a running container's endpoints on lanyard's Docker networks are
    /// registered under its name (the template, or its `lanyard.dns` label, with `{container}`
    /// and `{container_id}` filled in), which only this inspection knows. A static endpoint's
    /// name goes at its DeleteEndpoint (the container's stop); a DHCP network's lease carries
    /// the name from now on, and it goes with the lease (README, "Docker network plugin").
    fn name_plugin_endpoints(&mut self, id: &str, details: &ContainerDetails) {
        let Some(settings) = &self.config.dns_update else { return };
        if self.config.docker_plugin.is_none() || details.network_macs.is_empty() {
            return;
        }
        let template = details
            .labels
            .get(crate::declare::DNS_LABEL)
            .unwrap_or(&settings.name)
            .replace("{container}", &details.info.name)
            .replace("{container_id}", short(id));
        for (network, mac) in &details.network_macs {
            let Ok(mac) = mac.parse() else { continue };
            let named = crate::plugin::network::name_endpoint(&self.host, network, mac, &template)
                .and_then(|named| match named {
                    Some(record) => register_name(&self.host, &record),
                    None => Ok(()),
                });
            if let Err(e) = named {
                let line = format!("container {}: its name in DNS: {e}", details.info.name);
                log(format_args!("{line}"));
                self.error(line);
            }
        }
    }

    /// Container `id` is gone for good: the leases of its MACs on lanyard DHCP networks that no
    /// other container has are released.
    fn release_dhcp_leases(&mut self, id: &str) {
        if self.dhcp_note().is_none() {
            return;
        }
        let Some(note) = self.dhcp_containers.as_mut() else { return };
        let (released, failed) = crate::plugin::removed::container_removed(&self.host, note, id);
        for line in released {
            log(format_args!("{line}"));
        }
        for line in failed {
            log(format_args!("{line}"));
            self.error(line);
        }
    }

    fn collect_record(&self, record: &Record, why: &str) {
        match crate::detach::detach_exact(&self.host, record) {
            Ok(true) => log(format_args!("{}: detached ({why})", record.file_name())),
            Ok(false) => {}
            Err(e) => {
                log(format_args!("{}: detach ({why}) failed: {e}", record.file_name()));
                self.error(format!("{}: detach ({why}) failed: {e}", record.file_name()));
            }
        }
    }
}

/// Ask the daemon (this process's own loop) to register `record`'s name: a static endpoint's
/// addresses at once, a DHCP lease's with its address now and at every renewal.
fn register_name(host: &Host, record: &Record) -> Result<()> {
    use super::control::{try_request, Request};
    let request = Request::DnsRegister { record: record.file_name() };
    match try_request(host.state.path(), &request, DNS_REQUEST_TIMEOUT)? {
        Some(answer) if !answer.ok => Err(answer.into_error()),
        _ => Ok(()),
    }
}

fn facts(details: &ContainerDetails) -> ContainerFacts {
    ContainerFacts {
        id: details.info.id.clone(),
        name: details.info.name.clone(),
        hostname: details.hostname.clone(),
        labels: details.labels.clone(),
        env: details.env.clone(),
    }
}

/// Static addresses are announced (gratuitous ARP / unsolicited NA) once the port forwards,
/// on a thread of its own: the wirer goes on with the next container meanwhile.
fn announce(host: &Host, attached: &crate::Attached) {
    if attached.announcement.ipv4.is_empty() && attached.announcement.ipv6.is_empty() {
        return;
    }
    let (Ok(host_netns), Ok(guest_netns)) =
        (host.netns.try_clone(), crate::netns::Netns::open(&attached.guest_netns_path))
    else {
        return;
    };
    let record = attached.record.clone();
    let announcement = attached.announcement.clone();
    let _ = std::thread::Builder::new().name("announce".into()).spawn(move || {
        if let Err(e) = crate::ready::announce_when_ready(
            &host_netns,
            &guest_netns,
            &record,
            &announcement,
            crate::ready::ROUNDS,
        ) {
            log(format_args!("{}: announcement: {e}", record.file_name()));
        }
    });
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Docker API on a Unix socket that answers one request, `GET /containers/json`, with no
    /// containers.
    fn docker_with_no_containers(socket: &std::path::Path) -> std::thread::JoinHandle<()> {
        use std::io::{Read, Write};
        let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            // Bounded: a client that never comes must not hang the test.
            let until = Instant::now() + Duration::from_secs(10);
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(_) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("fake Docker: no connection: {e}"),
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "fake Docker: the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&request);
            assert!(head.contains("/containers/json"), "fake Docker: asked {head}");
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
                      Connection: close\r\n\r\n[]",
                )
                .unwrap();
        })
    }

    #[test]
    fn a_reconcile_that_cannot_read_the_records_is_tried_again() {
        let dir = std::env::temp_dir().join(format!("lanyard-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let host = Host::new(crate::netns::Netns::current().unwrap(), &dir, "test").unwrap();
        std::fs::write(dir.join("damaged.json"), b"{ damaged").unwrap();
        let socket = dir.join("docker.sock");
        let docker = docker_with_no_containers(&socket);
        let mut wirer = Wirer {
            host,
            config: Config::default(),
            api: DockerApi::with_host(DockerHost::Unix(socket)).unwrap(),
            status: Arc::new(Mutex::new(WatchStatus::default())),
            connected: true,
            reconcile_at: None,
            retry: BTreeSet::new(),
            dhcp_containers: None,
        };
        wirer.reconcile_all();
        // Removed before any assertion, so a failing run leaves nothing behind either.
        std::fs::remove_dir_all(&dir).unwrap();
        docker.join().unwrap();
        let errors = wirer.status.lock().unwrap().last_errors.clone();
        assert!(errors.iter().any(|e| e.contains("read the records")), "{errors:?}");
        let due = wirer.reconcile_at.expect("the reconcile is owed again");
        assert!(
            due > Instant::now() + RETRY_INTERVAL / 2,
            "tried again in about {RETRY_INTERVAL:?}"
        );
    }
}
