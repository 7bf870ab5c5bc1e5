//! Work that waits, done off the lease loop: reaching a guest (a Docker lookup, opening its
//! namespace, the lease's sockets, the host end's index) and ARP-probing an offered address.
//! Each result comes back as a [`Done`] through a channel, with a write to an eventfd that sits
//! in the loop's epoll set; the loop never waits for any of it.
//!
//! Two reaching threads: one for guests found without Docker (a `netns:` name, a pid, a path,
//! or a container whose pid the caller gave) and one for containers that need a Docker lookup.
//! A frozen dockerd holds up only the second (each lookup ends at the Docker client's timeout),
//! never a namespace guest's attach. A slot has at most one job in flight, so retries of an
//! unreachable container cannot pile up behind a slow Docker.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::host::Host;
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::state::{GuestRef, Record};

use super::guest_config::ResolvWrite;
use super::lease::{slaac_changes, LinkKnown};
use super::socket::LeaseSocket;
use super::Live;

/// How long an ARP probe of an offered address listens for an owner (RFC 5227 asks for more;
/// the sans-IO client gives up on the probe at its own deadline anyway).
const PROBE_LISTEN: Duration = Duration::from_millis(200);

/// A result for the loop. `attempt` tells a current job from one whose slot was replaced or
/// forgotten meanwhile (its result is dropped, closing whatever it opened).
pub(super) enum Done {
    Reached { key: String, attempt: u64, result: Result<Live> },
    Probed { key: String, attempt: u64, in_use: bool },
    ResolvWritten { key: String, attempt: u64, result: Result<()> },
}

/// Hands results to the loop: the channel, then the eventfd that wakes it.
#[derive(Clone)]
struct Notifier {
    sender: Sender<Done>,
    wake: Arc<EventFd>,
}

impl Notifier {
    fn send(&self, done: Done) {
        // The loop gone (stopping) is the only failure: nothing is left to tell.
        if self.sender.send(done).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

/// One guest to reach. `pid`: the container's pid as the caller knows it (checked against the
/// recorded namespace, so a wrong or reused pid is never taken for the guest).
pub(super) struct ReachJob {
    pub key: String,
    pub attempt: u64,
    pub record: Record,
    pub pid: Option<u32>,
}

/// A host route to a leased address of a macvlan guest, to add or remove (`--host-route`,
/// `host_routes`, `pipework_host_route`).
pub(super) struct HostRouteChange {
    pub key: String,
    pub add: bool,
    pub parent: String,
    pub address: std::net::IpAddr,
}

/// Work in the host namespace that may wait (a veth deletion takes the kernel ~20 ms, a host
/// route takes a lock another lanyard process may hold): done in order by one thread.
enum HostJob {
    Route(HostRouteChange),
    /// A dead guest's host end, by the index it had while the guest lived.
    DeleteLink {
        key: String,
        index: u32,
        name: String,
    },
    /// A dead guest's sockets and namespace handle: closing a packet socket waits for an RCU
    /// grace period (milliseconds), which a hundred guests dying together make a long stall.
    Close(Box<super::Live>),
}

pub(super) struct Reacher {
    local: Sender<ReachJob>,
    docker: Sender<ReachJob>,
    host_jobs: Sender<HostJob>,
    notifier: Notifier,
    results: Receiver<Done>,
}

impl Reacher {
    pub(super) fn start(host: Arc<Host>) -> Result<Reacher> {
        let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .with_context(ErrorKind::Io, || "create the daemon's wake-up eventfd")?;
        let (sender, results) = mpsc::channel();
        let notifier = Notifier { sender, wake: Arc::new(wake) };
        let (docker, docker_jobs) = mpsc::channel::<ReachJob>();
        let (local, local_jobs) = mpsc::channel::<ReachJob>();
        {
            let (host, notifier) = (host.clone(), notifier.clone());
            // The Docker client runs an async runtime on this thread: a full-size stack.
            spawn("lanyard-docker", 2 * 1024 * 1024, move || {
                for job in docker_jobs {
                    let result = reach_by_docker(&host, &job.record);
                    notifier.send(Done::Reached { key: job.key, attempt: job.attempt, result });
                }
            })?;
        }
        {
            let (host, notifier, docker) = (host.clone(), notifier.clone(), docker.clone());
            spawn("lanyard-reach", SMALL_STACK, move || {
                for job in local_jobs {
                    match reach_without_docker(&host, &job.record, job.pid) {
                        Some(result) => notifier.send(Done::Reached {
                            key: job.key,
                            attempt: job.attempt,
                            result,
                        }),
                        // The pid did not lead to the recorded namespace: ask Docker.
                        None => {
                            let _ = docker.send(ReachJob { pid: None, ..job });
                        }
                    }
                }
            })?;
        }
        let (host_jobs, jobs) = mpsc::channel::<HostJob>();
        {
            let host = host.clone();
            // One thread, so the changes of one address happen in the order they were asked.
            spawn("lanyard-host", SMALL_STACK, move || {
                for job in jobs {
                    match job {
                        HostJob::Route(change) => route_change(&host, change),
                        HostJob::Close(live) => drop(live),
                        HostJob::DeleteLink { key, index, name } => {
                            let deleted = Netlink::open(&host.netns, "the host namespace")
                                .and_then(|mut netlink| netlink.delete_link(index, &name));
                            if let Err(e) = deleted {
                                super::log(format_args!("{key}: remove the host end {name}: {e}"));
                            }
                        }
                    }
                }
            })?;
        }
        Ok(Reacher { local, docker, host_jobs, notifier, results })
    }

    /// The descriptor the loop watches: readable when results wait.
    pub(super) fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.notifier.wake.as_fd()
    }

    pub(super) fn reach(&self, job: ReachJob) {
        let by_docker = matches!(job.record.guest, GuestRef::Container { .. }) && job.pid.is_none();
        let queue = if by_docker { &self.docker } else { &self.local };
        if let Err(mpsc::SendError(job)) = queue.send(job) {
            let error = Error::new(ErrorKind::Io, "the daemon's reaching thread is gone");
            self.notifier.send(Done::Reached {
                key: job.key,
                attempt: job.attempt,
                result: Err(error),
            });
        }
    }

    /// ARP-probe `address` on `ifindex` inside `netns`, on a thread of its own (probes are
    /// rare: only with `probe` set, once per offered address).
    pub(super) fn probe(
        &self,
        key: String,
        attempt: u64,
        netns: Netns,
        ifindex: u32,
        mac: [u8; 6],
        address: Ipv4Addr,
    ) {
        let notifier = self.notifier.clone();
        let spawned = spawn("lanyard-probe", SMALL_STACK, move || {
            let owner =
                netns.run(|| crate::announce::probe_ipv4(ifindex, mac, address, PROBE_LISTEN));
            // A probe that could not run finds no owner: the client's own probe deadline
            // would say the same.
            let in_use = owner.map(|owner| owner.is_some()).unwrap_or(false);
            notifier.send(Done::Probed { key, attempt, in_use });
        });
        if spawned.is_err() {
            // No thread: the client binds at its probe deadline, as if nobody answered.
            super::log(format_args!("cannot start an ARP probe of {address}"));
        }
    }

    /// Write a guest's resolv.conf on a thread of its own (only when a lease's DNS changes).
    pub(super) fn write_resolv(&self, key: String, attempt: u64, job: ResolvWrite) {
        let notifier = self.notifier.clone();
        let (failed_key, failed) = (key.clone(), notifier.clone());
        let spawned = spawn("lanyard-resolv", SMALL_STACK, move || {
            let result = job.write();
            notifier.send(Done::ResolvWritten { key, attempt, result });
        });
        if let Err(e) = spawned {
            failed.send(Done::ResolvWritten { key: failed_key, attempt, result: Err(e) });
        }
    }

    /// Queue a host route change (it takes a lock another lanyard process may hold: never in the
    /// loop).
    pub(super) fn host_route(&self, change: HostRouteChange) {
        if self.host_jobs.send(HostJob::Route(change)).is_err() {
            super::log("the daemon's host thread is gone: host routes are not kept");
        }
    }

    /// Close what a dead guest's lease held, off the loop.
    pub(super) fn close(&self, live: super::Live) {
        // A thread that is gone drops the job, and with it the descriptors, here.
        let _ = self.host_jobs.send(HostJob::Close(Box::new(live)));
    }

    /// Delete a dead guest's host end by the index it had (off the loop: ~20 ms in the kernel
    /// per veth, which a thousand guests dying together would make seconds).
    pub(super) fn delete_host_end(&self, key: String, index: u32, name: String) {
        if self.host_jobs.send(HostJob::DeleteLink { key, index, name }).is_err() {
            super::log("the daemon's host thread is gone: host ends are left to the kernel");
        }
    }

    /// Every result waiting, after clearing the wake-up.
    pub(super) fn results(&self) -> Vec<Done> {
        let _ = self.notifier.wake.read();
        self.results.try_iter().collect()
    }
}

fn route_change(host: &Host, change: HostRouteChange) {
    let done = if change.add {
        crate::host_routes::add(host, &change.parent, change.address).map(|_| ())
    } else {
        crate::host_routes::remove(host, &change.parent, change.address)
    };
    let what = if change.add { "add" } else { "remove" };
    match done {
        Ok(()) => {
            super::log(format_args!("{}: host route to {} {what}ed", change.key, change.address))
        }
        Err(e) => super::log(format_args!(
            "{}: {what} the host route to {}: {e}",
            change.key, change.address
        )),
    }
}

/// For threads that only make system calls (sockets, netlink, setns in a thread of its own).
const SMALL_STACK: usize = 256 * 1024;

fn spawn(name: &str, stack: usize, work: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(stack)
        .spawn(work)
        .map(|_| ())
        .with_context(ErrorKind::Io, || format!("start the daemon's {name} thread"))
}

fn gone(record: &Record) -> Error {
    Error::not_found(format!("the guest of {} is gone or was replaced", record.file_name()))
}

/// A container's namespace from Docker, then the rest of [`open_in`].
fn reach_by_docker(host: &Host, record: &Record) -> Result<Live> {
    let (netns, pid) =
        crate::guest::locate(record, || host.docker()).ok_or_else(|| gone(record))?;
    open_in(host, record, netns, pid)
}

/// A guest reached without Docker. `None`: a container whose given pid does not lead to the
/// recorded namespace (Docker must be asked).
fn reach_without_docker(host: &Host, record: &Record, pid: Option<u32>) -> Option<Result<Live>> {
    if let (GuestRef::Container { .. }, Some(pid)) = (&record.guest, pid) {
        let netns = Netns::from_pid(pid).ok().filter(|netns| netns.id() == record.netns)?;
        return Some(open_in(host, record, netns, Some(pid)));
    }
    if let GuestRef::DockerEndpoint { .. } = &record.guest {
        return Some(reach_docker_endpoint(host, record));
    }
    let no_docker = || Err(Error::new(ErrorKind::Io, "no Docker lookup on this thread"));
    Some(match crate::guest::locate(record, no_docker) {
        Some((netns, pid)) => open_in(host, record, netns, pid),
        None => Err(gone(record)),
    })
}

/// A Docker plugin endpoint's link (by its MAC: Docker renames it in the container), in the
/// container's namespace once Join recorded it, else in the host namespace (before Join, and
/// after the container stopped: Docker moves the link back). Nothing here asks Docker.
fn reach_docker_endpoint(host: &Host, record: &Record) -> Result<Live> {
    let mut tried = Vec::new();
    if let Some(path) = crate::plugin::store::sandbox_of(host.state.path(), &record.file_name()) {
        match Netns::open(&path).and_then(|netns| open_in(host, record, netns, None)) {
            Ok(live) => return Ok(live),
            Err(e) => tried.push(format!("container namespace {}: {e}", path.display())),
        }
    }
    match host.netns.try_clone().and_then(|netns| open_in(host, record, netns, None)) {
        Ok(live) => Ok(live),
        Err(e) => {
            tried.push(format!("host namespace: {e}"));
            Err(Error::not_found(format!(
                "the link of MAC {} is in neither namespace ({})",
                record.mac,
                tried.join("; ")
            )))
        }
    }
}

/// The sockets of the lease inside the guest's namespace, its pidfd and its host end's index.
fn open_in(host: &Host, record: &Record, netns: Netns, pid: Option<u32>) -> Result<Live> {
    let netns_name = match &record.guest {
        GuestRef::Netns { name } => Some(name.clone()),
        _ => None,
    };
    let ifname = record.guest_ifname.clone();
    let slaac = record.dhcp.as_ref().is_some_and(|dhcp| dhcp.slaac);
    let (ifindex, socket, link_watch, link_known, slaac) = netns.run(|| {
        let (link_watch, addresses) = if slaac {
            let mut watch = crate::netlink::LinkWatch::open_here_with_ipv6_addresses()?;
            // Before the link is read: this drops the link notifications queued so far. If it
            // fails, the addresses there now reach DNS only once a notification reports them:
            // the lease itself must not fail for that.
            let addresses = watch.reread_ipv6_addresses().unwrap_or_else(|e| {
                super::log(format_args!("{}: {e}", record.file_name()));
                Vec::new()
            });
            (watch, addresses)
        } else {
            (crate::netlink::LinkWatch::open_here()?, Vec::new())
        };
        let mut netlink = Netlink::open_here("the guest")?;
        let link = match record.guest {
            // Docker renames the link when it moves it into the container: found by its MAC.
            GuestRef::DockerEndpoint { .. } => {
                netlink.links()?.into_iter().find(|link| link.mac == Some(record.mac.0))
            }
            _ => netlink.link_by_name(&ifname)?,
        }
        .ok_or_else(|| Error::not_found(format!("{ifname} is gone from the guest")))?;
        // By the name it has here (a Docker endpoint's is not the recorded one).
        let socket = LeaseSocket::open_here(link.index, &link.name)?;
        let link_known = LinkKnown::new(link.up && link.lower_up, link.carrier_down_count);
        let mut autoconfigured = std::collections::BTreeSet::new();
        slaac_changes(&mut autoconfigured, link.index, &addresses, None);
        Ok((link.index, socket, link_watch, link_known, autoconfigured))
    })?;
    // Without a pidfd (a kernel before 5.3) the guest's exit is noticed by its namespace only.
    let pidfd = pid.and_then(|pid| crate::sys::pidfd_open(pid).ok());
    // Not found (or not readable): nothing is removed by the daemon when the guest dies,
    // and the kernel still deletes the veth with the guest's namespace.
    let host_end_index = record.host_ifname.as_ref().and_then(|name| {
        Netlink::open(&host.netns, "the host namespace")
            .and_then(|mut host| host.link_by_name(name))
            .ok()
            .flatten()
            .map(|link| link.index)
    });
    Ok(Live {
        netns,
        socket,
        ifindex,
        pidfd,
        netns_name,
        host_end_index,
        pid,
        link_watch,
        link_up: link_known.running,
        carrier_downs: link_known.carrier_down_count,
        slaac,
    })
}
