//! `lanyard daemon`: every DHCP exchange and every lease in one event loop — no thread or
//! process per lease. Each lease is a sans-IO [`crate::dhcp::Client`] plus the sockets it talks
//! through, opened once inside the guest's namespace. One epoll set waits on all of them, the
//! control socket, the guests' lives (a pidfd per process guest, inotify on /run/netns for named
//! namespaces) and the signals; the timeout is the earliest lease deadline, so an idle daemon
//! sleeps until the next renewal.

pub mod control;
pub mod socket;
pub mod store;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use serde_json::json;

use crate::dhcp::{Action, Client, ClientConfig, Destination, Event, Lease, Now};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::host::Host;
use crate::netlink::{LinkChanges, Netlink, NewRoute};
use crate::netns::Netns;
use crate::routes;
use crate::state::{GuestRef, Record};
use control::{Request, Response};
use socket::LeaseSocket;
use store::StoredLease;

/// A guest that is alive: its namespace and the sockets of its lease.
struct Live {
    netns: Netns,
    socket: LeaseSocket,
    ifindex: u32,
    /// Readable when the guest's process exits (process and container guests).
    pidfd: Option<OwnedFd>,
    /// For `netns:NAME` guests: the name whose removal from /run/netns ends the guest.
    netns_name: Option<String>,
    /// For set-resolv: where the guest's files are.
    pid: Option<u32>,
    /// Link notifications of the guest's namespace: carrier loss and return reach the client
    /// as LinkDown / LinkUp (RFC 2131 §3.2: a lease is verified again after the link returns).
    link_watch: crate::netlink::LinkWatch,
    link_up: bool,
    /// The link's carrier-loss counter when last seen: a flap the kernel reported as one
    /// notification shows as a change here.
    carrier_downs: Option<u32>,
}

/// What the daemon last knew of a lease's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkKnown {
    running: bool,
    carrier_down_count: Option<u32>,
}

/// The link transitions for the client (true: up, false: down), in order, from what the link
/// notifications say about link `ifindex`; `known` is updated to the link's state now.
///
/// Every transition counts, not just the last state: a down and an up read in one wake-up are
/// a flap (the cable was out, perhaps moved to another network), and the client must hear both
/// to verify its lease with INIT-REBOOT. A carrier loss the kernel folded into a notification
/// that shows the link running is found by its counter. When notifications were lost, a link
/// running before and after is taken to have flapped: a needless verification costs one
/// exchange, a missed one can keep a lease from another network (a link seen coming up is
/// verified by that already).
fn link_transitions(known: &mut LinkKnown, ifindex: u32, changes: &LinkChanges) -> Vec<bool> {
    let mut transitions = Vec::new();
    for seen in changes.seen.iter().filter(|seen| seen.index == ifindex) {
        // The counter only grows; a notice queued before the daemon's own read of the link can
        // carry a smaller one, which is old news, not a loss.
        let lost_carrier = match (known.carrier_down_count, seen.carrier_down_count) {
            (Some(before), Some(now)) => now > before,
            _ => false,
        };
        if lost_carrier && known.running && seen.running {
            transitions.extend([false, true]);
        } else if seen.running != known.running {
            transitions.push(seen.running);
        }
        known.running = seen.running;
        known.carrier_down_count = known.carrier_down_count.max(seen.carrier_down_count);
    }
    if changes.overflowed && known.running && transitions.is_empty() {
        transitions.extend([false, true]);
    }
    transitions
}

struct Waiter {
    stream: UnixStream,
    deadline: Duration,
}

struct Slot {
    record: Record,
    client: Client,
    live: Option<Live>,
    stored: StoredLease,
    waiters: Vec<Waiter>,
    /// The guest could not be reached when the daemon started (Docker down, too many open
    /// files...): try again at this time rather than declare it dead.
    retry_at: Option<Duration>,
    /// The guest is gone: forget the lease (and its record) at this time, when it expires.
    forget_at: Option<Duration>,
    /// The stored lease is fully applied in the guest; false after a failed configure, so the
    /// next ACK (a renewal) tries again instead of counting as unchanged.
    applied: bool,
}

/// How often a guest that could not be reached at start is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

pub struct Daemon {
    host: Host,
    state_dir: PathBuf,
    epoch: Instant,
    listener: UnixListener,
    signals: nix::sys::signalfd::SignalFd,
    netns_watch: Option<nix::sys::inotify::Inotify>,
    slots: BTreeMap<String, Slot>,
    epoll: Epoll,
    owners: std::collections::HashMap<RawFd, Owner>,
    _lock: crate::state::StateLock,
}

/// One log line, written with one write(2): stderr is unbuffered, and `eprintln!` would write
/// each formatted piece separately.
fn log(line: impl std::fmt::Display) {
    let text = format!("{} {line}\n", crate::inspect::rfc3339(crate::attach::now_unix()));
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The key of a new client's xid generator, from the kernel's random pool. There is no
/// fallback: a predictable xid lets any host on the LAN forge replies (RFC 2131 §7), so a client
/// that cannot get one is not started. getrandom(2) needs no descriptor, so running out of them
/// cannot make this fail.
fn random_seed() -> Result<u64> {
    getrandom::u64().map_err(|e| {
        Error::with_source(
            ErrorKind::Io,
            "get a random DHCP transaction-id key from the kernel (getrandom); refusing to start \
             a DHCP client with a predictable one",
            e,
        )
    })
}

/// A pidfd for the guest's process, or None when the kernel gives none (the process is already
/// gone, or the kernel predates pidfds).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    crate::sys::pidfd_open(pid).ok()
}

/// The client id sent as option 61: type 0 ("not a hardware type", RFC 2132 §9.14) and the
/// stable text lanyard recorded at attach.
fn client_id_bytes(text: &str) -> Vec<u8> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

fn client_config(record: &Record, requested: Option<Ipv4Addr>) -> ClientConfig {
    let settings = record.dhcp.clone().unwrap_or_default();
    let mut config = ClientConfig::new(record.mac.0, client_id_bytes(&settings.client_id));
    match settings.hostname {
        Some(name) if settings.fqdn || name.contains('.') => config.fqdn = Some(name),
        Some(name) => config.hostname = Some(name),
        None => {}
    }
    config.requested_address = requested;
    config.probe = settings.probe;
    config.max_message_size = record.mtu.clamp(576, 65535) as u16;
    config
}

impl Daemon {
    /// Start the daemon of `host.state` (one per state directory: a second one exits).
    pub fn start(host: Host) -> Result<Daemon> {
        raise_open_file_limit();
        let state_dir = host.state.path().to_path_buf();
        let lock = crate::state::try_lock_file(&state_dir.join(control::DAEMON_LOCK))?.ok_or_else(
            || Error::conflict(format!("a lanyard daemon already serves {}", state_dir.display())),
        )?;
        let socket_path = control::socket_path(&state_dir);
        let _ = std::fs::remove_file(&socket_path);
        let listener = UnixListener::bind(&socket_path)
            .with_context(ErrorKind::Io, || format!("listen on {}", socket_path.display()))?;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
            .with_context(ErrorKind::Io, || format!("chmod {}", socket_path.display()))?;
        listener
            .set_nonblocking(true)
            .with_context(ErrorKind::Io, || "make the listener non-blocking")?;

        use nix::sys::signal::{SigSet, Signal};
        let mut mask = SigSet::empty();
        for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(signal);
        }
        mask.thread_block().with_context(ErrorKind::Io, || "block signals")?;
        let signals = nix::sys::signalfd::SignalFd::with_flags(
            &mask,
            nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )
        .with_context(ErrorKind::Io, || "open a signalfd")?;

        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        // `ip netns add` creates /run/netns on first use; watching needs it to exist already.
        let _ = std::fs::create_dir_all("/run/netns");
        let netns_watch =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok().filter(|watch| {
                watch
                    .add_watch(
                        "/run/netns",
                        AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM,
                    )
                    .is_ok()
            });

        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .with_context(ErrorKind::Io, || "create the daemon's epoll set")?;
        let mut daemon = Daemon {
            host,
            state_dir,
            epoch: Instant::now(),
            listener,
            signals,
            netns_watch,
            slots: BTreeMap::new(),
            epoll,
            owners: std::collections::HashMap::new(),
            _lock: lock,
        };
        watch_fd(&daemon.epoll, &mut daemon.owners, daemon.listener.as_fd(), Owner::Listener)?;
        watch_fd(&daemon.epoll, &mut daemon.owners, daemon.signals.as_fd(), Owner::Signals)?;
        if let Some(netns_watch) = &daemon.netns_watch {
            watch_fd(&daemon.epoll, &mut daemon.owners, netns_watch.as_fd(), Owner::NetnsWatch)?;
        }
        daemon.resume_all();
        log(format_args!(
            "lanyard daemon serving {} with {} lease(s)",
            daemon.state_dir.display(),
            daemon.slots.len()
        ));
        Ok(daemon)
    }

    fn now(&self) -> Now {
        Now::system(self.epoch)
    }

    /// Reload every persisted lease: a guest still alive keeps its address and the client goes
    /// on where the lease's times say (renewing, rebinding, or INIT-REBOOT when unclear).
    fn resume_all(&mut self) {
        let stored = match store::load_all(&self.state_dir) {
            Ok(stored) => stored,
            Err(e) => {
                log(format_args!("cannot reload leases: {e}"));
                return;
            }
        };
        for stored in stored {
            let record = match self.load_record(&stored.record) {
                Some(record) => record,
                None => {
                    log(format_args!(
                        "lease {} has no record any more: forgetting it",
                        stored.record
                    ));
                    let _ = store::remove(&self.state_dir, &stored.record);
                    continue;
                }
            };
            if record.dhcp.is_none() {
                // The record was replaced by a static attachment of the same guest and name.
                log(format_args!(
                    "lease {} belongs to an older attachment: forgetting it",
                    stored.record
                ));
                let _ = store::remove(&self.state_dir, &stored.record);
                continue;
            }
            let live = self.find_live(&record);
            let now = self.now();
            let mut config = client_config(&record, stored.last_address);
            let client = match &stored.lease {
                Some(lease) if live.is_some() => random_seed()
                    .and_then(|seed| Client::resume(config.clone(), lease.clone(), now, seed)),
                _ => {
                    config.requested_address = stored.last_address;
                    random_seed().and_then(|seed| Client::new(config.clone(), seed))
                }
            };
            let client = match client
                .or_else(|_| random_seed().and_then(|seed| Client::new(config, seed)))
            {
                Ok(client) => client,
                Err(e) => {
                    log(format_args!("lease {}: {e}", stored.record));
                    continue;
                }
            };
            let key = stored.record.clone();
            let alive = live.is_some();
            let forget_at = if alive { None } else { self.lease_end(&stored) };
            let retry_at = (!alive).then(|| self.epoch.elapsed() + RETRY_INTERVAL);
            let slot = Slot {
                record,
                client,
                live,
                stored,
                waiters: Vec::new(),
                retry_at,
                forget_at,
                applied: true,
            };
            self.slots.insert(key.clone(), slot);
            if alive {
                self.watch_live(&key);
                self.drive(&key, Event::Start);
            } else {
                // Not reachable is not dead: a guest that died while the daemon was down took its
                // links along, and one that is only unreachable (Docker restarting) must keep
                // them. Try again until the lease would have ended.
                log(format_args!(
                    "{key}: guest not reachable; trying again every {} s until its lease ends",
                    RETRY_INTERVAL.as_secs()
                ));
            }
        }
    }

    /// When a stored lease ends, on the loop's monotonic clock: now when there is none or it has
    /// ended, `None` for an infinite lease (kept until detach).
    fn lease_end(&self, stored: &StoredLease) -> Option<Duration> {
        let now = self.epoch.elapsed();
        let Some(lease) = &stored.lease else { return Some(now) };
        let end_ms = lease.expires_unix_ms()?;
        let now_ms = crate::attach::now_unix().saturating_mul(1000);
        Some(now + Duration::from_millis(end_ms.saturating_sub(now_ms)))
    }

    /// Try again to reach a guest that was not reachable at start.
    fn reconnect(&mut self, key: &str) {
        let Some(slot) = self.slots.get(key) else { return };
        let record = slot.record.clone();
        match self.open_live(&record) {
            Ok(live) => {
                let now = self.now();
                let slot = self.slots.get_mut(key).expect("present");
                let config = client_config(&slot.record, slot.stored.last_address);
                let client = match &slot.stored.lease {
                    Some(lease) => random_seed()
                        .and_then(|seed| Client::resume(config.clone(), lease.clone(), now, seed)),
                    None => random_seed().and_then(|seed| Client::new(config.clone(), seed)),
                };
                match client.or_else(|_| random_seed().and_then(|seed| Client::new(config, seed))) {
                    Ok(client) => slot.client = client,
                    Err(e) => log(format_args!("{key}: keeping the previous DHCP client: {e}")),
                }
                slot.live = Some(live);
                slot.retry_at = None;
                slot.forget_at = None;
                log(format_args!("{key}: guest reachable again; resuming its lease"));
                self.watch_live(key);
                self.drive(key, Event::Start);
            }
            Err(_) => {
                if let Some(slot) = self.slots.get_mut(key) {
                    slot.retry_at = Some(self.epoch.elapsed() + RETRY_INTERVAL);
                }
            }
        }
    }

    fn load_record(&self, file: &str) -> Option<Record> {
        self.host.state.load(file).ok().flatten()
    }

    /// The guest's namespace, if it is still the recorded one, and the sockets inside it.
    fn find_live(&self, record: &Record) -> Option<Live> {
        match self.open_live(record) {
            Ok(live) => Some(live),
            Err(e) => {
                log(format_args!("{}: {e}", record.file_name()));
                None
            }
        }
    }

    fn open_live(&self, record: &Record) -> Result<Live> {
        let gone = || {
            Error::not_found(format!("the guest of {} is gone or was replaced", record.file_name()))
        };
        let (netns, pid) = crate::guest::locate(record, || self.host.docker()).ok_or_else(gone)?;
        let netns_name = match &record.guest {
            GuestRef::Netns { name } => Some(name.clone()),
            _ => None,
        };
        let ifname = record.guest_ifname.clone();
        let (ifindex, socket, link_watch, link_known) = netns.run(|| {
            let link_watch = crate::netlink::LinkWatch::open_here()?;
            let mut netlink = Netlink::open_here("the guest")?;
            let link = netlink
                .link_by_name(&ifname)?
                .ok_or_else(|| Error::not_found(format!("{ifname} is gone from the guest")))?;
            let socket = LeaseSocket::open_here(link.index, &ifname)?;
            let link_known = LinkKnown {
                running: link.up && link.lower_up,
                carrier_down_count: link.carrier_down_count,
            };
            Ok((link.index, socket, link_watch, link_known))
        })?;
        let pidfd = pid.and_then(pidfd_open);
        Ok(Live {
            netns,
            socket,
            ifindex,
            pidfd,
            netns_name,
            pid,
            link_watch,
            link_up: link_known.running,
            carrier_downs: link_known.carrier_down_count,
        })
    }

    /// Serve until SIGTERM, SIGINT or SIGHUP. Leases are on disk at every change, so a stop (or a kill)
    /// loses nothing: the next daemon resumes them.
    pub fn run(mut self) -> Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let timeout = EpollTimeout::try_from(self.poll_timeout()).unwrap_or(EpollTimeout::NONE);
            let ready = match self.epoll.wait(&mut events, timeout) {
                Ok(ready) => ready,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::with_source(ErrorKind::Io, "epoll_wait", e)),
            };
            let fired: Vec<RawFd> = events[..ready].iter().map(|e| e.data() as RawFd).collect();
            for fd in fired {
                let Some(owner) = self.owners.get(&fd).cloned() else { continue };
                match owner {
                    Owner::Listener => self.accept_all(),
                    Owner::Signals => {
                        if let Ok(Some(info)) = self.signals.read_signal() {
                            log(format_args!(
                                "signal {}: stopping; leases stay on disk",
                                info.ssi_signo
                            ));
                            let _ = std::fs::remove_file(control::socket_path(&self.state_dir));
                            return Ok(());
                        }
                    }
                    Owner::NetnsWatch => self.netns_removed(),
                    Owner::Packets(key) => self.receive(&key),
                    Owner::LinkChange(key) => self.link_changed(&key),
                    Owner::GuestExit(key) => {
                        log(format_args!("{key}: the guest's process exited"));
                        self.guest_gone(&key);
                    }
                }
            }
            self.fire_timers();
        }
    }

    /// Watch a lease's live descriptors: replies, the guest's exit, its link state.
    fn watch_live(&mut self, key: &str) {
        let Some(live) = self.slots.get(key).and_then(|slot| slot.live.as_ref()) else { return };
        let mut fds = vec![
            (live.socket.receive_fd(), Owner::Packets(key.to_string())),
            (live.link_watch.as_fd(), Owner::LinkChange(key.to_string())),
        ];
        if let Some(pidfd) = &live.pidfd {
            fds.push((pidfd.as_fd(), Owner::GuestExit(key.to_string())));
        }
        for (fd, owner) in fds {
            if let Err(e) = watch_fd(&self.epoll, &mut self.owners, fd, owner) {
                log(format_args!("{key}: {e}; this lease will miss those events"));
            }
        }
    }

    fn poll_timeout(&self) -> i32 {
        let now = self.epoch.elapsed();
        let mut earliest: Option<Duration> = None;
        for slot in self.slots.values() {
            let deadlines = slot
                .client
                .next_deadline()
                .filter(|_| slot.live.is_some())
                .into_iter()
                .chain(slot.waiters.iter().map(|w| w.deadline))
                .chain(slot.retry_at)
                .chain(slot.forget_at);
            for deadline in deadlines {
                earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
            }
        }
        match earliest {
            None => -1,
            Some(at) => at.saturating_sub(now).as_millis().clamp(0, 3_600_000) as i32 + 1,
        }
    }

    /// Everything whose time has come, found in one pass over the leases (this runs on every
    /// wakeup, so it allocates only for what is due).
    fn fire_timers(&mut self) {
        let now = self.epoch.elapsed();
        let (mut due, mut ended, mut retry, mut waiting) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (key, slot) in &self.slots {
            if slot.live.is_some() {
                if slot.client.next_deadline().is_some_and(|d| d <= now) {
                    due.push(key.clone());
                }
            } else if slot.forget_at.is_some_and(|at| at <= now) {
                ended.push(key.clone());
            } else if slot.retry_at.is_some_and(|at| at <= now) {
                retry.push(key.clone());
            }
            if slot.waiters.iter().any(|w| w.deadline <= now) {
                waiting.push(key.clone());
            }
        }
        for key in due {
            self.drive(&key, Event::Timer);
        }
        for key in ended {
            log(format_args!("{key}: the lease of a gone guest ended: forgetting it"));
            if let Some(record) = self.slots.get(&key).map(|slot| slot.record.clone()) {
                self.forget(&key, &record);
            }
        }
        for key in retry {
            self.reconnect(&key);
        }
        for key in waiting {
            let Some(slot) = self.slots.get_mut(&key) else { continue };
            let (expired, still): (Vec<Waiter>, Vec<Waiter>) =
                std::mem::take(&mut slot.waiters).into_iter().partition(|w| w.deadline <= now);
            slot.waiters = still;
            for waiter in expired {
                let error = Error::new(
                    ErrorKind::Timeout,
                    format!("no DHCP offer on {} for {key}", slot.record.host_interface),
                );
                reply(waiter.stream, &Response::error(&error));
            }
        }
    }

    fn link_changed(&mut self, key: &str) {
        let Some(live) = self.slots.get_mut(key).and_then(|s| s.live.as_mut()) else { return };
        let changes = match live.link_watch.link_changes() {
            Ok(changes) => changes,
            Err(e) => {
                log(format_args!("{key}: link notifications: {e}"));
                return;
            }
        };
        let mut link = LinkKnown { running: live.link_up, carrier_down_count: live.carrier_downs };
        let transitions = link_transitions(&mut link, live.ifindex, &changes);
        live.link_up = link.running;
        live.carrier_downs = link.carrier_down_count;
        if changes.overflowed {
            log(format_args!("{key}: link notifications were lost; re-read the link"));
        }
        for up in transitions {
            log(format_args!("{key}: link {}", if up { "up" } else { "down" }));
            self.drive(key, if up { Event::LinkUp } else { Event::LinkDown });
        }
    }

    fn receive(&mut self, key: &str) {
        let payloads = match self.slots.get_mut(key).and_then(|s| s.live.as_mut()) {
            Some(live) => live.socket.receive(),
            None => return,
        };
        for payload in payloads {
            self.drive(key, Event::Packet(&payload));
        }
    }

    /// Feed an event to a lease's client and carry out what it asks.
    fn drive(&mut self, key: &str, event: Event<'_>) {
        let now = self.now();
        let Some(slot) = self.slots.get_mut(key) else { return };
        let actions = slot.client.handle(event, now);
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let Some(slot) = self.slots.get_mut(key) else { return };
            match action {
                Action::Send { packet, destination } => {
                    let Some(live) = &slot.live else { continue };
                    let sent = match destination {
                        Destination::Broadcast => live.socket.send_broadcast(&packet),
                        Destination::Unicast(server) => live
                            .socket
                            .send_unicast(server, &packet)
                            .or_else(|_| live.socket.send_broadcast(&packet)),
                    };
                    if let Err(e) = sent {
                        log(format_args!("{key}: send: {e}"));
                    }
                }
                Action::Configure(lease) => {
                    // A renewal that changes nothing but the times needs no netlink work (the
                    // daemon's main cost with a thousand leases): only the new times are saved.
                    let unchanged = slot.applied
                        && slot
                            .stored
                            .lease
                            .as_ref()
                            .is_some_and(|held| same_configuration(held, &lease));
                    let result =
                        if unchanged { Ok(()) } else { configure(slot, &lease, &self.state_dir) };
                    slot.applied = result.is_ok();
                    slot.stored.lease = Some(lease.clone());
                    slot.stored.last_address = Some(lease.address);
                    slot.stored.state = slot.client.state().to_string();
                    if let Err(e) = store::save(&self.state_dir, &slot.stored) {
                        log(format_args!("{key}: {e}"));
                    }
                    match result {
                        Ok(()) => {
                            if !unchanged {
                                log(format_args!(
                                    "{key}: bound {}/{} from {}",
                                    lease.address, lease.prefix_len, lease.server_id
                                ));
                            }
                            let answer = Response::ok(lease_view(slot));
                            for waiter in slot.waiters.drain(..) {
                                reply(waiter.stream, &answer);
                            }
                        }
                        Err(e) => {
                            log(format_args!("{key}: configure {}: {e}", lease.address));
                            // The CLI waiting for this lease hears why, not a timeout.
                            let error = e.context(format!("configure the lease {}", lease.address));
                            for waiter in slot.waiters.drain(..) {
                                reply(waiter.stream, &Response::error(&error));
                            }
                        }
                    }
                }
                Action::Deconfigure { lease, reason } => {
                    log(format_args!("{key}: lost {} ({reason:?})", lease.address));
                    if let Err(e) = deconfigure(slot, &lease) {
                        log(format_args!("{key}: deconfigure {}: {e}", lease.address));
                    }
                    slot.stored.lease = None;
                    slot.stored.state = slot.client.state().to_string();
                    slot.stored.last_loss = Some(format!("{reason:?}"));
                    if slot.live.is_none() {
                        // A dead guest's lease ran out: nothing is left to keep.
                        let record = slot.record.clone();
                        self.forget(key, &record);
                        return;
                    }
                    if let Err(e) = store::save(&self.state_dir, &slot.stored) {
                        log(format_args!("{key}: {e}"));
                    }
                }
                Action::Probe(address) => {
                    let in_use = match &slot.live {
                        Some(live) => {
                            let (ifindex, mac) = (live.ifindex, slot.record.mac.0);
                            live.netns
                                .run(|| {
                                    crate::announce::probe_ipv4(
                                        ifindex,
                                        mac,
                                        address,
                                        Duration::from_millis(200),
                                    )
                                })
                                .map(|owner| owner.is_some())
                                .unwrap_or(false)
                        }
                        None => false,
                    };
                    let now = Now::system(self.epoch);
                    let more = slot.client.handle(Event::ProbeResult { in_use }, now);
                    queue.extend(more);
                }
            }
        }
        // Pure state changes (BOUND -> RENEWING -> BOUND) are not written: the lease file changes
        // when the lease does; `lanyard leases` asks the daemon for the live state.
        if let Some(slot) = self.slots.get_mut(key) {
            slot.stored.state = slot.client.state().to_string();
        }
    }

    fn accept_all(&mut self) {
        for _ in 0..64 {
            match self.listener.accept() {
                Ok((stream, _)) => self.serve(stream),
                Err(_) => break,
            }
        }
    }

    fn serve(&mut self, stream: UnixStream) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut line = String::new();
        let Ok(reader) = stream.try_clone() else { return };
        if BufReader::new(reader).read_line(&mut line).is_err() {
            return;
        }
        let request: Request = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(e) => {
                reply(stream, &Response::error(&Error::usage(format!("bad request: {e}"))));
                return;
            }
        };
        if let Request::Acquire { record, .. } | Request::Release { record } = &request {
            if let Err(e) = control::check_record_name(record) {
                reply(stream, &Response::error(&e));
                return;
            }
        }
        match request {
            Request::Ping => reply(stream, &Response::ok(json!({ "pid": std::process::id() }))),
            Request::Leases => {
                let leases: Vec<serde_json::Value> = self.slots.values().map(lease_view).collect();
                reply(stream, &Response::ok(json!(leases)));
            }
            Request::Acquire { record, wait, timeout_ms } => match self.acquire(&record) {
                Ok(()) => {
                    let slot = self.slots.get_mut(&record).expect("acquired");
                    if !wait || slot.stored.lease.is_some() {
                        let view = lease_view(slot);
                        reply(stream, &Response::ok(view));
                    } else {
                        let deadline = self.epoch.elapsed() + Duration::from_millis(timeout_ms);
                        slot.waiters.push(Waiter { stream, deadline });
                    }
                }
                Err(e) => reply(stream, &Response::error(&e)),
            },
            Request::Release { record } => match self.release(&record) {
                Ok(()) => reply(stream, &Response::ok(serde_json::Value::Null)),
                Err(e) => reply(stream, &Response::error(&e)),
            },
        }
    }

    /// Take over a recorded attachment's DHCP. A slot already there (a restarted container
    /// attached again) is replaced, asking for its last address.
    fn acquire(&mut self, record_file: &str) -> Result<()> {
        let record = self.load_record(record_file).ok_or_else(|| {
            Error::not_found(format!("no record {record_file} in {}", self.state_dir.display()))
        })?;
        let previous = self.slots.remove(record_file);
        let mut stored = previous
            .map(|slot| slot.stored)
            .or_else(|| store::load(&self.state_dir, record_file).ok().flatten())
            .unwrap_or_default();
        stored.record = record_file.to_string();
        stored.lease = None;
        stored.replaced_default_routes.clear();
        let live = self.open_live(&record)?;
        let client = Client::new(client_config(&record, stored.last_address), random_seed()?)?;
        store::save(&self.state_dir, &stored)?;
        self.slots.insert(
            record_file.to_string(),
            Slot {
                record,
                client,
                live: Some(live),
                stored,
                waiters: Vec::new(),
                retry_at: None,
                forget_at: None,
                applied: true,
            },
        );
        self.watch_live(record_file);
        self.drive(record_file, Event::Start);
        Ok(())
    }

    /// DHCPRELEASE while the interface exists, then forget the lease (detach).
    fn release(&mut self, record_file: &str) -> Result<()> {
        if self.slots.get(record_file).is_some_and(|slot| slot.live.is_some()) {
            self.drive(record_file, Event::Release);
        }
        let restored = match self.slots.remove(record_file) {
            Some(mut slot) => restore_routes(&mut slot),
            None => Ok(()),
        };
        store::remove(&self.state_dir, record_file)?;
        restored
    }

    /// The guest died: close every socket and namespace handle held there (a socket keeps a
    /// namespace alive), remove the host side of the link, and keep the lease record until the
    /// lease expires (no renewals: there is no interface to renew for).
    fn guest_gone(&mut self, key: &str) {
        let forget_at = match self.slots.get(key) {
            Some(slot) => self.lease_end(&slot.stored),
            None => return,
        };
        let Some(slot) = self.slots.get_mut(key) else { return };
        slot.live = None;
        slot.retry_at = None;
        slot.forget_at = forget_at;
        for waiter in slot.waiters.drain(..) {
            reply(waiter.stream, &Response::error(&Error::not_found("the guest went away")));
        }
        if let Some(name) = slot.record.host_ifname.clone() {
            if let Ok(mut host) = Netlink::open(&self.host.netns, "the host namespace") {
                let _ = host.delete_link_by_name(&name);
            }
        }
        let now = self.epoch.elapsed();
        if forget_at.is_some_and(|at| at <= now) {
            let record = slot.record.clone();
            self.forget(key, &record);
        }
    }

    fn netns_removed(&mut self) {
        if let Some(watch) = &self.netns_watch {
            let _ = watch.read_events();
        }
        let gone: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, slot)| {
                // Gone, or deleted and made again under the same name: not our guest any more.
                slot.live.as_ref().is_some_and(|live| {
                    live.netns_name.as_ref().is_some_and(|name| {
                        Netns::from_name(name)
                            .map(|now| now.id() != live.netns.id())
                            .unwrap_or(true)
                    })
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            log(format_args!("{key}: its namespace was deleted"));
            self.guest_gone(&key);
        }
    }

    /// Drop a lease and its record: no record outlives its lease.
    fn forget(&mut self, key: &str, record: &Record) {
        self.slots.remove(key);
        let _ = store::remove(&self.state_dir, key);
        if let Some(current) = self.load_record(key) {
            if current.netns == record.netns {
                let _ = self.host.state.remove(&current);
            }
        }
    }
}

/// Add a descriptor to the epoll set. Registered once, not rebuilt every turn: with a
/// thousand leases a poll(2) over every descriptor was most of the daemon's CPU. A closed
/// descriptor leaves the set by itself; a reused number is re-registered here. A free function
/// over the two fields it needs, so a descriptor borrowed from another field can be passed.
fn watch_fd(
    epoll: &Epoll,
    owners: &mut std::collections::HashMap<RawFd, Owner>,
    fd: BorrowedFd<'_>,
    owner: Owner,
) -> Result<()> {
    let number = fd.as_raw_fd();
    let mut event = EpollEvent::new(EpollFlags::EPOLLIN, number as u64);
    match epoll.add(fd, event) {
        Err(nix::errno::Errno::EEXIST) => epoll.modify(fd, &mut event),
        added => added,
    }
    .with_context(ErrorKind::Io, || {
        format!("watch descriptor {number} in the daemon's epoll set")
    })?;
    owners.insert(number, owner);
    Ok(())
}

#[derive(Clone)]
enum Owner {
    Listener,
    Signals,
    NetnsWatch,
    Packets(String),
    GuestExit(String),
    LinkChange(String),
}

fn reply(mut stream: UnixStream, response: &Response) {
    // A client that does not read must not stall every lease.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if let Ok(mut line) = serde_json::to_vec(response) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

fn lease_view(slot: &Slot) -> serde_json::Value {
    /// The attachment a lease belongs to, beside the lease as users see it everywhere.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct View<'a> {
        record: &'a str,
        guest: String,
        interface: &'a str,
        host_interface: &'a str,
        alive: bool,
        #[serde(flatten)]
        status: crate::lease::LeaseStatus<'a>,
    }
    let state = slot.client.state().to_string();
    let view = View {
        record: &slot.stored.record,
        guest: slot.record.guest.display(),
        interface: &slot.record.guest_ifname,
        host_interface: &slot.record.host_interface,
        alive: slot.live.is_some(),
        status: crate::lease::LeaseStatus::new(
            Some(&state),
            slot.stored.lease.as_ref(),
            slot.stored.last_loss.as_deref(),
        ),
    };
    serde_json::to_value(view).unwrap_or_default()
}

/// Whether two leases configure the guest identically (only their times differ).
fn same_configuration(a: &Lease, b: &Lease) -> bool {
    a.address == b.address
        && a.prefix_len == b.prefix_len
        && a.routes() == b.routes()
        && a.mtu == b.mtu
        && a.dns_servers == b.dns_servers
        && a.domain_name == b.domain_name
        && a.domain_search == b.domain_search
}

fn lease_net(lease: &Lease) -> IpNet {
    IpNet::V4(
        Ipv4Net::new(lease.address, lease.prefix_len)
            .unwrap_or_else(|_| Ipv4Net::from(lease.address)),
    )
}

/// Apply a lease in the guest, idempotently (every renewal comes here too): the address, the
/// routes (option 121 or a default route via the router, replacing the guest's default route,
/// which is kept to be restored), and DNS into the guest's resolv.conf when asked.
fn configure(slot: &mut Slot, lease: &Lease, _state_dir: &Path) -> Result<()> {
    let Some(live) = &slot.live else { return Ok(()) };
    let ifname = slot.record.guest_ifname.clone();
    let mut netlink = Netlink::open(&live.netns, format!("guest {}", slot.record.guest.display()))?;
    match netlink.add_address(live.ifindex, &ifname, &lease_net(lease)) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    if let Some(mtu) = lease.mtu {
        // Never above what the host side carries (the MTU recorded at attach).
        let mtu = u32::from(mtu).min(slot.record.mtu);
        if mtu >= 68 {
            netlink.set_mtu(live.ifindex, &ifname, mtu)?;
        }
    }
    // A router outside the leased subnet (a /32 lease on a hosting network, RFC 3442 routes via
    // off-subnet gateways) is reached through an on-link host route, as dhclient does.
    let subnets = [lease_net(lease)];
    for route in lease.routes() {
        let destination =
            IpNet::V4(Ipv4Net::new(route.destination, route.prefix_len).unwrap_or_default());
        let gateway = (!route.gateway.is_unspecified()).then_some(IpAddr::V4(route.gateway));
        match gateway {
            Some(gateway) if route.prefix_len == 0 => {
                let replaced =
                    routes::take_over_default_route(&mut netlink, gateway, live.ifindex, &subnets)?;
                // Only the first takeover finds the guest's own route; renewals find lanyard's.
                if slot.stored.replaced_default_routes.is_empty() {
                    slot.stored.replaced_default_routes = replaced;
                }
            }
            Some(gateway) => routes::add_gateway_route(
                &mut netlink,
                destination,
                gateway,
                live.ifindex,
                &subnets,
                true,
            )?,
            None => netlink.add_route(
                &NewRoute { destination, gateway: None, device_index: live.ifindex, metric: None },
                true,
            )?,
        }
    }
    let settings = slot.record.dhcp.clone();
    if settings.is_some_and(|s| s.set_resolv) && !lease.dns_servers.is_empty() {
        let target = match (&slot.record.guest, live.pid) {
            (GuestRef::Netns { name }, _) => {
                crate::resolv::GuestFiles::NetnsEtc { name: name.clone() }
            }
            (_, Some(pid)) => crate::resolv::GuestFiles::ProcessRoot { pid },
            _ => {
                return Err(Error::unsupported(
                    "--set-resolv for a guest given as a namespace path",
                ))
            }
        };
        let conf = crate::resolv::ResolvConf {
            nameservers: lease.dns_servers.iter().map(|d| IpAddr::V4(*d)).collect(),
            search: lease.domain_search.clone(),
            domain: lease.domain_name.clone(),
        };
        crate::resolv::write_guest_resolv_conf(&target, &conf, &ifname)?;
    }
    Ok(())
}

/// Remove a lost lease's address and routes, and give the guest its old default route back.
fn deconfigure(slot: &mut Slot, lease: &Lease) -> Result<()> {
    let Some(live) = &slot.live else { return Ok(()) };
    let mut netlink = Netlink::open(&live.netns, format!("guest {}", slot.record.guest.display()))?;
    let subnets = [lease_net(lease)];
    for route in lease.routes() {
        let destination =
            IpNet::V4(Ipv4Net::new(route.destination, route.prefix_len).unwrap_or_default());
        match (!route.gateway.is_unspecified()).then_some(IpAddr::V4(route.gateway)) {
            Some(gateway) => routes::remove_gateway_route(
                &mut netlink,
                destination,
                gateway,
                live.ifindex,
                &subnets,
            )?,
            None => netlink.delete_route(&NewRoute {
                destination,
                gateway: None,
                device_index: live.ifindex,
                metric: None,
            })?,
        }
    }
    netlink.delete_address(live.ifindex, &slot.record.guest_ifname, &lease_net(lease))?;
    restore_routes(slot)
}

/// Give the guest back the default routes the lease's router replaced (unless something else
/// set one since: see [`routes::restore_default_routes`]).
fn restore_routes(slot: &mut Slot) -> Result<()> {
    let replaced = std::mem::take(&mut slot.stored.replaced_default_routes);
    let Some(live) = &slot.live else { return Ok(()) };
    if replaced.is_empty() {
        return Ok(());
    }
    let mut netlink = Netlink::open(&live.netns, format!("guest {}", slot.record.guest.display()))?;
    routes::restore_default_routes(&mut netlink, &replaced, Some(live.ifindex)).map(|_| ())
}

/// Each lease holds four descriptors (packet and UDP sockets, a link watch, a pidfd): the usual
/// soft limit of 1024 would stop at about 250 leases, so take the hard limit.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let raised = getrlimit(Resource::RLIMIT_NOFILE).and_then(|(soft, hard)| {
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        }
        Ok(())
    });
    // Not fatal: the daemon serves fewer leases, and says so.
    if let Err(e) = raised {
        log(format_args!("cannot raise the open-file limit: {e}; fewer leases fit"));
    }
}

/// `lanyard daemon`: serve the state directory of `host` until stopped.
pub fn serve(host: Host) -> Result<()> {
    Daemon::start(host)?.run()
}

#[cfg(test)]
mod link_tests {
    use super::*;
    use crate::netlink::LinkSeen;

    const IF: u32 = 7;

    fn seen(running: bool, downs: u32) -> LinkSeen {
        LinkSeen { index: IF, running, carrier_down_count: Some(downs) }
    }

    fn changes(seen: &[LinkSeen], overflowed: bool) -> LinkChanges {
        LinkChanges { seen: seen.to_vec(), overflowed }
    }

    fn up_with(downs: u32) -> LinkKnown {
        LinkKnown { running: true, carrier_down_count: Some(downs) }
    }

    #[test]
    fn a_down_and_an_up_read_together_are_both_told() {
        let mut known = up_with(0);
        let flap = changes(&[seen(false, 1), seen(true, 1)], false);
        assert_eq!(link_transitions(&mut known, IF, &flap), [false, true]);
        assert_eq!(known, up_with(1));
    }

    #[test]
    fn a_flap_folded_into_one_notice_is_found_by_the_carrier_counter() {
        let mut known = up_with(3);
        assert_eq!(
            link_transitions(&mut known, IF, &changes(&[seen(true, 4)], false)),
            [false, true]
        );
        assert_eq!(known, up_with(4));
        // Nothing lost: a notice about something else (an MTU, a name) is no flap, nor is an
        // older notice still queued from before the daemon read the link.
        assert!(link_transitions(&mut known, IF, &changes(&[seen(true, 4)], false)).is_empty());
        assert!(link_transitions(&mut known, IF, &changes(&[seen(true, 2)], false)).is_empty());
        assert_eq!(known, up_with(4));
    }

    #[test]
    fn other_links_and_plain_transitions() {
        let mut known = up_with(0);
        let other = LinkSeen { index: IF + 1, running: false, carrier_down_count: Some(9) };
        assert!(link_transitions(&mut known, IF, &changes(&[other], false)).is_empty());
        assert_eq!(link_transitions(&mut known, IF, &changes(&[seen(false, 1)], false)), [false]);
        assert_eq!(link_transitions(&mut known, IF, &changes(&[seen(true, 1)], false)), [true]);
        // A deleted link has no counter: down, and the last counter is kept.
        let deleted = LinkSeen { index: IF, running: false, carrier_down_count: None };
        assert_eq!(link_transitions(&mut known, IF, &changes(&[deleted], false)), [false]);
        assert_eq!(known, LinkKnown { running: false, carrier_down_count: Some(1) });
    }

    #[test]
    fn lost_notifications_count_as_a_flap_when_the_link_is_up() {
        let mut known = up_with(0);
        // The re-read shows it up with the same counter: verified anyway, since what was lost
        // is unknown (an administrative down and up leaves the counter alone on some links).
        assert_eq!(
            link_transitions(&mut known, IF, &changes(&[seen(true, 0)], true)),
            [false, true]
        );
        let mut known = up_with(0);
        assert_eq!(link_transitions(&mut known, IF, &changes(&[seen(false, 1)], true)), [false]);
        assert!(link_transitions(&mut known, IF, &changes(&[seen(false, 1)], true)).is_empty());
    }
}

#[cfg(test)]
mod tests {
    /// Set for the child run of `xid_keys_need_no_file_descriptor`.
    const NO_FD_CHILD: &str = "LANYARD_TEST_NO_FD_CHILD";

    /// The daemon raises its fd limit because it can run out; when it had, the old seed fell
    /// back to the pid, the same key for every client. Descriptors are a per-process limit, so
    /// they are exhausted in a child run of this test, not in the harness running other tests.
    #[test]
    fn xid_keys_need_no_file_descriptor() {
        if std::env::var_os(NO_FD_CHILD).is_some() {
            keys_with_every_descriptor_taken();
            return;
        }
        let name = "daemon::tests::xid_keys_need_no_file_descriptor";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(NO_FD_CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child run failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "the child ran the test:\n{stdout}");
    }

    fn keys_with_every_descriptor_taken() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        const LIMIT: u64 = 256;
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, LIMIT.min(hard), hard).unwrap();
        let mut held = Vec::new();
        for _ in 0..LIMIT {
            match std::fs::File::open("/dev/null") {
                Ok(file) => held.push(file),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                    break;
                }
            }
        }
        assert!(std::fs::File::open("/dev/urandom").is_err(), "every descriptor is taken");
        let first = super::random_seed();
        let second = super::random_seed();
        drop(held);
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_ne!(first, second, "two keys from the kernel; equal keys mean a fixed fallback");
    }
}
