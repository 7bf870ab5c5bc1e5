//! Control requests: one JSON line in, one JSON line out, answered from the daemon's state
//! (a DHCP attach's answer may wait in the lease's slot until the lease comes).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::json;

use crate::error::{Error, ErrorKind, Result, ResultExt};

use super::control::{self, Request, Response};
use super::{Daemon, Slot, Waiter};

fn peer_allowed(stream: &UnixStream) -> Result<()> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let peer = getsockopt(stream, PeerCredentials)
        .with_context(ErrorKind::Permission, || "read the control client's credentials")?;
    let owner = nix::unistd::geteuid().as_raw();
    if peer.uid() == 0 || peer.uid() == owner {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Permission,
        format!(
            "uid {} (pid {}) may not use the lanyard daemon's control socket: only root or uid \
             {owner} may; run lanyard with sudo",
            peer.uid(),
            peer.pid()
        ),
    ))
}

pub(super) fn reply(mut stream: UnixStream, response: &Response) {
    // A client that does not read must not stall every lease.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if let Ok(mut line) = serde_json::to_vec(response) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

pub(super) fn lease_view(slot: &Slot) -> serde_json::Value {
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

impl Daemon {
    pub(super) fn accept_all(&mut self) {
        for _ in 0..64 {
            match self.listener.accept() {
                Ok((stream, _)) => self.serve(stream),
                Err(_) => break,
            }
        }
    }

    pub(super) fn serve(&mut self, stream: UnixStream) {
        // A second lock behind the socket's 0600 mode: only root or the user the daemon runs
        // as (the socket's owner) may ask it anything.
        if let Err(e) = peer_allowed(&stream) {
            reply(stream, &Response::error(&e));
            return;
        }
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
            Request::Status => {
                let mut by_state = std::collections::BTreeMap::<String, usize>::new();
                for slot in self.slots.values() {
                    *by_state.entry(slot.client.state().to_string()).or_default() += 1;
                }
                let alive = self.slots.values().filter(|slot| slot.live.is_some()).count();
                let docker = self.docker.as_ref().map(|docker| {
                    let mut view = docker.status_json();
                    // A DHCP interface is wired once its lease is bound; before, it is pending.
                    if let Some(containers) = view["containers"].as_object_mut() {
                        for container in containers.values_mut() {
                            let Some(interfaces) = container["interfaces"].as_array_mut() else {
                                continue;
                            };
                            for interface in interfaces {
                                let Some(slot) =
                                    interface["record"].as_str().and_then(|r| self.slots.get(r))
                                else {
                                    continue;
                                };
                                if slot.stored.lease.is_none() {
                                    interface["state"] = json!("pending");
                                }
                                interface["lease_state"] = json!(slot.client.state().to_string());
                            }
                        }
                    }
                    view
                });
                reply(
                    stream,
                    &Response::ok(json!({
                        "Pid": std::process::id(),
                        "UptimeSeconds": self.epoch.elapsed().as_secs(),
                        "StateDir": self.state_dir,
                        "Config": self.config.source,
                        "Leases": self.slots.len(),
                        "LeasesByState": by_state,
                        "GuestsAlive": alive,
                        "Docker": docker,
                    })),
                );
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
}
