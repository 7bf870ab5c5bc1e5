//! `lanyard daemon`: every DHCP exchange and every lease in one event loop — no thread or
//! process per lease. Each lease is a sans-IO [`crate::dhcp::Client`] plus the sockets it talks
//! through, opened once inside the guest's namespace. One epoll set waits on all of them, the
//! control socket, the guests' lives (a pidfd per process guest, inotify on /run/netns for named
//! namespaces) and the signals; the timeout is the earliest lease deadline, so an idle daemon
//! sleeps until the next renewal.
//!
//! The loop never waits on anything else: guests are reached (Docker, namespaces, sockets) and
//! addresses probed on threads whose results wake it through an eventfd ([`reach`]); control
//! clients are read as their bytes arrive ([`requests`]); lease files are written by a writer
//! thread ([`store::Writer`]).

pub mod control;
pub mod dns;
pub mod docker_watch;
mod guest_config;
mod lease;
mod metrics;
mod reach;
mod requests;
pub mod socket;
pub mod store;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::dhcp::{Client, Event, Now};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::host::Host;
use crate::netns::Netns;
use crate::state::Record;
use control::Response;
use requests::reply;
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
    /// The veth's host end as found when the guest was reached: removed by this index when the
    /// guest dies, never by its name, which a re-attach of the same guest may already reuse.
    host_end_index: Option<u32>,
    /// Link notifications of the guest's namespace: carrier loss and return reach the client
    /// as LinkDown / LinkUp (RFC 2131 §3.2: a lease is verified again after the link returns).
    link_watch: crate::netlink::LinkWatch,
    link_up: bool,
    /// The link's carrier-loss counter when last seen: a flap the kernel reported as one
    /// notification shows as a change here.
    carrier_downs: Option<u32>,
    /// With `--slaac`: the link's global IPv6 addresses made from router advertisements (the
    /// watch follows IPv6 addresses too), registered in DNS with the lease's address.
    slaac: std::collections::BTreeSet<std::net::Ipv6Addr>,
}

struct Waiter {
    stream: UnixStream,
    deadline: Duration,
}

/// An acquire request waiting for its guest to be reached.
struct Pending {
    stream: UnixStream,
    wait: bool,
    timeout_ms: u64,
}

/// A guest being reached off the loop (see [`reach`]).
struct Reaching {
    /// Which job: a result for an older one is dropped.
    attempt: u64,
    acquire: Option<Pending>,
    /// A retry of a guest that could not be reached before (logged when it comes back).
    retried: bool,
    /// A release asked for meanwhile: carried out once the guest is reached (or not), so a
    /// lease resumed at start is released with a DHCPRELEASE like any other.
    release: Option<UnixStream>,
}

struct Slot {
    record: Record,
    client: Client,
    live: Option<Live>,
    stored: StoredLease,
    waiters: Vec<Waiter>,
    /// Set while the guest is being reached: the lease is REACHING, its client waits.
    reaching: Option<Reaching>,
    /// The ARP probe in flight for this lease's client, if any.
    probing: Option<u64>,
    /// The resolv.conf write in flight for this lease, if any: those waiting for the lease
    /// are answered when it is done.
    resolving: Option<u64>,
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
    host: Arc<Host>,
    /// The configuration in force, and the file named on the command line (`None`: the default
    /// path) to read again on SIGHUP.
    config: crate::config::Config,
    config_explicit: Option<PathBuf>,
    state_dir: PathBuf,
    epoch: Instant,
    listener: UnixListener,
    signals: nix::sys::signalfd::SignalFd,
    netns_watch: Option<nix::sys::inotify::Inotify>,
    slots: BTreeMap<String, Slot>,
    epoll: Epoll,
    owners: std::collections::HashMap<RawFd, Owner>,
    /// Wires containers from their declarations (threads of its own; never blocks the loop).
    docker: Option<docker_watch::DockerWatch>,
    /// Control connections whose request line is still coming.
    conns: std::collections::HashMap<RawFd, requests::Conn>,
    reacher: reach::Reacher,
    /// Numbers reaching jobs and probes.
    attempts: u64,
    /// The Docker network plugin's socket (config `docker_plugin`), unlinked when dropped.
    plugin: Option<crate::plugin::Served>,
    /// Why the plugin is not served (for `lanyard status`), when it failed to start.
    plugin_error: Option<String>,
    /// Sends lanyard's own DNS updates (config `[dns_update]`), off the loop.
    dns: Option<dns::DnsUpdater>,
    /// The guests of static attachments with registered names, by record file name.
    dns_guests: BTreeMap<String, dns::WatchedGuest>,
    /// Declared before the lock: everything queued is on disk before another daemon may start.
    writer: store::Writer,
    _lock: crate::state::StateLock,
}

/// One log line, as a `tracing` event: [`crate::logging`] prints it as one line, timestamp
/// first, and makes a leading record key (`KEY: ...`) the event's `key` field.
fn log(line: impl std::fmt::Display) {
    crate::logging::daemon_event(line);
}

impl Daemon {
    /// Start the daemon of `host.state` (one per state directory: a second one exits).
    pub fn start(
        host: Host,
        config: crate::config::Config,
        config_explicit: Option<PathBuf>,
    ) -> Result<Daemon> {
        raise_open_file_limit();
        let state_dir = host.state.path().to_path_buf();
        let lock = crate::state::try_lock_file(&state_dir.join(control::DAEMON_LOCK))?.ok_or_else(
            || Error::conflict(format!("a lanyard daemon already serves {}", state_dir.display())),
        )?;
        // A writer SIGKILLed mid-write (this daemon's last run, or a CLI) left its temporary
        // file; nothing else would ever remove it.
        for path in crate::state::sweep_dead_temporaries(&state_dir) {
            crate::logging::daemon_event(format_args!(
                "removed {}, left by a writer that died mid-write",
                path.display()
            ));
        }
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
        let host = Arc::new(host);
        let reacher = reach::Reacher::start(host.clone())?;
        let writer = store::Writer::start(&state_dir)?;
        let mut daemon = Daemon {
            host,
            config,
            config_explicit,
            state_dir,
            epoch: Instant::now(),
            listener,
            signals,
            netns_watch,
            slots: BTreeMap::new(),
            epoll,
            owners: std::collections::HashMap::new(),
            docker: None,
            conns: std::collections::HashMap::new(),
            reacher,
            attempts: 0,
            plugin: None,
            plugin_error: None,
            dns: None,
            dns_guests: BTreeMap::new(),
            writer,
            _lock: lock,
        };
        watch_fd(&daemon.epoll, &mut daemon.owners, daemon.listener.as_fd(), Owner::Listener)?;
        watch_fd(&daemon.epoll, &mut daemon.owners, daemon.signals.as_fd(), Owner::Signals)?;
        watch_fd(&daemon.epoll, &mut daemon.owners, daemon.reacher.wake_fd(), Owner::Finished)?;
        if let Some(netns_watch) = &daemon.netns_watch {
            watch_fd(&daemon.epoll, &mut daemon.owners, netns_watch.as_fd(), Owner::NetnsWatch)?;
        }
        if let Some(settings) = daemon.config.dns_update.clone() {
            // Not fatal: the leases do not need DNS; the log says why names are not updated.
            match dns::DnsUpdater::start(&daemon.host, &settings, &daemon.state_dir) {
                Ok(updater) => daemon.dns = Some(updater),
                Err(e) => log(format_args!("no DNS updates: {e}")),
            }
            daemon.dns_watch_registered();
        }
        daemon.resume_all();
        if let Some(name) = daemon.config.docker_plugin.clone() {
            // Not fatal: leases and labelled containers do not need the plugin.
            match daemon.host.try_clone().and_then(|host| crate::plugin::start(host, &name)) {
                Ok(served) => {
                    log(format_args!("docker plugin {name} on {}", served.path().display()));
                    daemon.plugin = Some(served);
                }
                Err(e) => {
                    log(format_args!("no docker plugin {name}: {e}"));
                    daemon.plugin_error = Some(e.to_string());
                }
            }
        }
        // After the listener (the wirer's DHCP attaches ask this loop through the socket) and
        // the plugin (the first reconcile starts containers Docker gave up on for want of it).
        match daemon
            .host
            .try_clone()
            .and_then(|host| docker_watch::DockerWatch::start(host, daemon.config.clone()))
        {
            Ok(watch) => daemon.docker = Some(watch),
            Err(e) => log(format_args!("containers will not be wired from Docker events: {e}")),
        }
        if let Some(listen) = &daemon.config.metrics {
            let watch = daemon.docker.as_ref().map(|docker| docker.status.clone());
            // Not fatal: the daemon's job is the leases; the log says why there are no metrics.
            if let Err(e) = metrics::start(listen, daemon.state_dir.clone(), watch) {
                log(format_args!("no metrics: {e}"));
            }
        }
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

    /// SIGHUP: read the configuration again. A file that does not load is refused and the one in
    /// force kept, said in the log; a new `state_dir` takes effect at the next start (this daemon
    /// holds the lock and socket of its own).
    fn reload_config(&mut self) {
        match crate::config::Config::load(self.config_explicit.as_deref()) {
            Ok(config) => {
                let from = config.source.as_ref().map_or_else(
                    || "defaults (no config file)".to_string(),
                    |f| f.display().to_string(),
                );
                log(format_args!("SIGHUP: configuration reloaded from {from}"));
                if config.state_dir != self.config.state_dir {
                    log(format_args!(
                        "SIGHUP: state_dir changed; this daemon keeps serving {} until restarted",
                        self.state_dir.display()
                    ));
                }
                if let Some(docker) = &self.docker {
                    docker.reload(config.clone());
                }
                self.config = config;
                self.dns_reconfigure();
            }
            Err(e) => {
                log(format_args!("SIGHUP: configuration refused, the previous one kept: {e}"))
            }
        }
    }

    /// Serve until SIGTERM or SIGINT (SIGHUP reloads the configuration). Leases are written at
    /// every change and a stop writes what is queued, so the next daemon resumes them (a
    /// SIGKILL may lose the last change: see [`store::Writer`]).
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
                    Owner::Control => self.conn_readable(fd),
                    Owner::Finished => {
                        for done in self.reacher.results() {
                            self.finished(done);
                        }
                    }
                    Owner::Signals => {
                        if let Ok(Some(info)) = self.signals.read_signal() {
                            if info.ssi_signo == nix::sys::signal::Signal::SIGHUP as u32 {
                                self.reload_config();
                                continue;
                            }
                            log(format_args!(
                                "signal {}: stopping; leases stay on disk",
                                info.ssi_signo
                            ));
                            let _ = std::fs::remove_file(control::socket_path(&self.state_dir));
                            // Unlinked now, not at drop: Docker must not find a dead socket.
                            drop(self.plugin.take());
                            return Ok(());
                        }
                    }
                    Owner::NetnsWatch => {
                        self.netns_removed();
                        self.dns_netns_changed();
                    }
                    Owner::Packets(key) => self.receive(&key),
                    Owner::LinkChange(key) => self.link_changed(&key),
                    Owner::GuestExit(key) => {
                        log(format_args!("{key}: the guest's process exited"));
                        self.guest_gone(&key);
                    }
                    Owner::DnsGuestExit(key) => {
                        self.dns_guest_gone(&key, "the guest's process exited")
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

    /// Hand a lease's live descriptors to the host thread to close (a packet socket's close
    /// waits for an RCU grace period), out of the epoll set first: level-triggered, a readable
    /// descriptor without a slot (a dead guest's pidfd) would wake the loop until it is closed,
    /// and its number, once closed, may come back for something else still listed as its owner.
    fn close_live(&mut self, live: Live) {
        self.unwatch_live(&live);
        self.reacher.close(live);
    }

    /// The loop stops watching a lease's live descriptors (their owner goes away while they
    /// stay open a little longer, closed off the loop): level-triggered, a readable descriptor
    /// without a slot would wake the loop until it is closed.
    fn unwatch_live(&mut self, live: &Live) {
        let mut fds = vec![live.socket.receive_fd(), live.link_watch.as_fd()];
        fds.extend(live.pidfd.as_ref().map(|pidfd| pidfd.as_fd()));
        for fd in fds {
            // Only ENOENT can come back (a descriptor never watched): nothing to undo then.
            let _ = self.epoll.delete(fd);
            self.owners.remove(&fd.as_raw_fd());
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
                .chain(slot.retry_at.filter(|_| slot.reaching.is_none()))
                .chain(slot.forget_at);
            for deadline in deadlines {
                earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
            }
        }
        for conn in self.conns.values() {
            earliest = Some(earliest.map_or(conn.deadline, |e| e.min(conn.deadline)));
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
            } else if slot.reaching.is_none() && slot.retry_at.is_some_and(|at| at <= now) {
                retry.push(key.clone());
            }
            if slot.waiters.iter().any(|w| w.deadline <= now) {
                waiting.push(key.clone());
            }
        }
        self.expire_conns(now);
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
    /// A control connection whose request is still coming (the descriptor says which).
    Control,
    /// Results of reaching threads and probes are waiting.
    Finished,
    Signals,
    NetnsWatch,
    Packets(String),
    GuestExit(String),
    LinkChange(String),
    /// A static attachment's guest process exited (its name is registered in DNS).
    DnsGuestExit(String),
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
pub fn serve(
    host: Host,
    config: crate::config::Config,
    config_explicit: Option<PathBuf>,
) -> Result<()> {
    crate::logging::install();
    Daemon::start(host, config, config_explicit)?.run()
}
