//! An endpoint's links are deleted after DeleteEndpoint has answered. Deleting a macvlan or veth
//! waits for the kernel's RCU grace period (15-30 ms here), and Docker waits for DeleteEndpoint
//! before a stopped container counts as removed (`docker run --rm`, `docker rm`); nothing
//! Docker does next needs those links gone (a new endpoint's links are named by its own id, or
//! by its MAC on a DHCP network, whose RequestAddress waits for this). Until its links (and, on
//! a static network, its record) are removed the endpoint stays in the store, marked
//! `deleting` before the answer, so a daemon that dies meanwhile finishes it at its start. Whatever makes
//! links (CreateEndpoint, RequestAddress), DeleteNetwork, the release of a removed container's
//! lease and the plugin's stop wait for the deletions queued before them.

use std::collections::BTreeSet;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::network::remove_endpoint_parts;
use super::store::Endpoint;
use super::Plugin;
use crate::netlink::Netlink;

/// How long a caller waits for queued deletions (each is one or two link deletions).
pub const DRAIN_WAIT: Duration = Duration::from_secs(5);

pub struct Reaper {
    jobs: Sender<Endpoint>,
}

/// Endpoint ids queued and not yet done, process-wide (a daemon serves one plugin), so that the
/// Docker watcher's lease release, which has no handle on the plugin, can wait for them too.
static PENDING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static DONE: Condvar = Condvar::new();

/// Wait until every deletion queued so far is done, at most `timeout`; false if some are not.
pub fn drain(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        pending = DONE.wait_timeout(pending, left).unwrap_or_else(|e| e.into_inner()).0;
    }
    true
}

impl Reaper {
    pub fn new() -> (Reaper, Receiver<Endpoint>) {
        let (jobs, receiver) = channel();
        (Reaper { jobs }, receiver)
    }

    /// Queue `endpoint`'s removal; false if it is already queued (Docker retries a call).
    pub fn queue(&self, endpoint: Endpoint) -> bool {
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.insert(endpoint.id.clone()) {
            return false;
        }
        let id = endpoint.id.clone();
        if self.jobs.send(endpoint).is_err() {
            // The reaper's thread is gone (it never panics on its own): nothing would finish it.
            pending.remove(&id);
            return false;
        }
        true
    }
}

fn finished(id: &str) {
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    DONE.notify_all();
}

/// The reaper's thread: remove each queued endpoint's links (and a static one's record), then
/// its store entry.
pub fn run(plugin: Arc<Plugin>, jobs: Receiver<Endpoint>) {
    for endpoint in jobs {
        let host = &plugin.host;
        let leftovers = match host.state.lock().and_then(|lock| {
            Netlink::open(&host.netns, "the host namespace").map(|netlink| (lock, netlink))
        }) {
            Ok((_lock, mut netlink)) => remove_endpoint_parts(host, &mut netlink, &endpoint, None),
            Err(e) => vec![e.to_string()],
        };
        if leftovers.is_empty() {
            let mut store = plugin.store.lock().unwrap_or_else(|e| e.into_inner());
            store.endpoints.remove(&endpoint.id);
            if let Err(e) = store.save() {
                crate::logging::daemon_event(format_args!(
                    "docker plugin: endpoint {} removed, but not from the store: {e}",
                    endpoint.id
                ));
            }
        } else {
            // Kept in the store: DeleteNetwork tries again (Docker has forgotten it by now).
            crate::logging::daemon_event(format_args!(
                "docker plugin: endpoint {}: left behind: {}",
                endpoint.id,
                leftovers.join("; ")
            ));
        }
        finished(&endpoint.id);
    }
}
