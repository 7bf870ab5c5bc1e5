//! Control requests: one JSON line in, one JSON line out, answered from the daemon's state
//! (a DHCP attach's answer may wait in the lease's slot until the lease comes).
//!
//! No client can hold up the loop: an accepted connection is read without blocking as its
//! bytes arrive (epoll), and one that has not sent a whole line by its deadline is dropped;
//! answers are written without blocking, the rest of a long one (a client slow to read) by a
//! thread of its own.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::json;

use crate::error::{Error, ErrorKind, Result, ResultExt};

use super::control::{self, Request, Response};
use super::{log, watch_fd, Daemon, Owner, Pending, Slot};

/// How long a client may take to send its request line.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// A request line is a few hundred bytes; anything longer is not one.
const MAX_REQUEST: usize = 64 * 1024;
/// How long a client may take to read the rest of an answer that did not fit its socket.
const ANSWER_DEADLINE: Duration = Duration::from_secs(1);

/// A connection whose request line is still coming.
pub(super) struct Conn {
    stream: UnixStream,
    line: Vec<u8>,
    pub(super) deadline: Duration,
}

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

/// Send one answer without waiting for the client: what its socket takes now, the rest (a
/// long list to a client slow to read) from a thread of its own, given up after
/// [`ANSWER_DEADLINE`].
pub(super) fn reply(mut stream: UnixStream, response: &Response) {
    let Ok(mut line) = serde_json::to_vec(response) else { return };
    line.push(b'\n');
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut sent = 0;
    while sent < line.len() {
        match stream.write(&line[sent..]) {
            Ok(0) => return,
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return,
        }
    }
    if sent == line.len() {
        return;
    }
    let rest = line.split_off(sent);
    let spawned = std::thread::Builder::new().name("lanyard-answer".into()).spawn(move || {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(ANSWER_DEADLINE));
        let _ = stream.write_all(&rest);
    });
    if spawned.is_err() {
        log("cannot start a thread to finish a long answer; the client gets it cut short");
    }
}

/// The lease's DHCP state, or REACHING while its guest is being reached (its client waits).
pub(super) fn slot_state(slot: &Slot) -> String {
    if slot.reaching.is_some() {
        "REACHING".to_string()
    } else {
        slot.client.state().to_string()
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
    let state = slot_state(slot);
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
    /// Take every waiting connection into the epoll set; each is read as its bytes arrive.
    pub(super) fn accept_all(&mut self) {
        for _ in 0..64 {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(_) => break,
            };
            // A second lock behind the socket's 0600 mode: only root or the user the daemon
            // runs as (the socket's owner) may ask it anything.
            if let Err(e) = peer_allowed(&stream) {
                reply(stream, &Response::error(&e));
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = stream.as_raw_fd();
            if let Err(e) = watch_fd(&self.epoll, &mut self.owners, stream.as_fd(), Owner::Control)
            {
                reply(stream, &Response::error(&e));
                continue;
            }
            let deadline = self.epoch.elapsed() + REQUEST_DEADLINE;
            self.conns.insert(fd, Conn { stream, line: Vec::new(), deadline });
            // A client usually sends its line right after connecting: served in this turn
            // when it is already there, without waiting for the next wakeup.
            self.conn_readable(fd);
        }
    }

    /// Read what a connection sent; a whole line is served, a closed or oversized one dropped.
    pub(super) fn conn_readable(&mut self, fd: RawFd) {
        let Some(conn) = self.conns.get_mut(&fd) else { return };
        let mut chunk = [0u8; 4096];
        let complete = loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => break false,
                Ok(n) => {
                    conn.line.extend_from_slice(&chunk[..n]);
                    if conn.line.contains(&b'\n') {
                        break true;
                    }
                    if conn.line.len() > MAX_REQUEST {
                        break false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => break false,
            }
        };
        let Some(conn) = self.drop_conn(fd) else { return };
        if !complete {
            return;
        }
        let end = conn.line.iter().position(|b| *b == b'\n').unwrap_or(conn.line.len());
        match std::str::from_utf8(&conn.line[..end]) {
            Ok(line) => {
                let line = line.to_string();
                self.serve(conn.stream, &line)
            }
            Err(e) => {
                reply(conn.stream, &Response::error(&Error::usage(format!("bad request: {e}"))))
            }
        }
    }

    /// Take a connection out of the epoll set (closing it when the caller drops it).
    pub(super) fn drop_conn(&mut self, fd: RawFd) -> Option<Conn> {
        let conn = self.conns.remove(&fd)?;
        let _ = self.epoll.delete(conn.stream.as_fd());
        self.owners.remove(&fd);
        Some(conn)
    }

    /// Drop the connections that sent no whole request in time: a silent client costs a
    /// descriptor for [`REQUEST_DEADLINE`], never the loop's time.
    pub(super) fn expire_conns(&mut self, now: Duration) {
        let late: Vec<RawFd> =
            self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(fd, _)| *fd).collect();
        for fd in late {
            self.drop_conn(fd);
        }
    }

    pub(super) fn serve(&mut self, stream: UnixStream, line: &str) {
        let request: Request = match serde_json::from_str(line) {
            Ok(request) => request,
            Err(e) => {
                reply(stream, &Response::error(&Error::usage(format!("bad request: {e}"))));
                return;
            }
        };
        if let Request::Acquire { record, .. }
        | Request::Release { record }
        | Request::DnsRegister { record }
        | Request::DnsUnregister { record } = &request
        {
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
                    *by_state.entry(slot_state(slot)).or_default() += 1;
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
                let plugin_leases: Vec<(String, String)> = self
                    .slots
                    .values()
                    .filter_map(|slot| match &slot.record.guest {
                        crate::state::GuestRef::DockerEndpoint { network, .. } => {
                            Some((network.clone(), slot_state(slot)))
                        }
                        _ => None,
                    })
                    .collect();
                let plugin = crate::plugin::status_view(
                    self.config.docker_plugin.as_deref(),
                    self.plugin.as_ref(),
                    self.plugin_error.as_deref(),
                    &self.state_dir,
                    &plugin_leases,
                );
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
                        "DockerPlugin": plugin,
                        "Dns": self.dns.as_ref().map(|dns| dns.status_json()),
                    })),
                );
            }
            Request::Acquire { record, wait, timeout_ms, pid } => {
                self.acquire(&record, pid, Pending { stream, wait, timeout_ms })
            }
            Request::Release { record } => self.release(&record, stream),
            Request::DnsRegister { record } => self.serve_dns(stream, &record, true),
            Request::DnsUnregister { record } => self.serve_dns(stream, &record, false),
        }
    }
}
