//! Waiting for a link to reach a state, by netlink notification rather than by sleeping: the
//! bridge port turning to forwarding, a macvlan's parent having carrier, a guest link being up.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{LinkDetails, Netlink};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::netns::Netns;

/// RTMGRP_LINK: link state changes, including a bridge port's STP state.
const LINK_GROUP: u32 = 1;

/// A socket subscribed to link notifications of one namespace.
pub struct LinkWatch {
    socket: Socket,
}

/// Room for one notification; allocated per read, not kept, because the daemon holds one watch
/// per lease and a thousand idle 32 KiB buffers would be most of its memory.
const NOTIFICATION_BUFFER: usize = 32 * 1024;

impl LinkWatch {
    fn subscribe() -> Result<Socket> {
        let mut socket = Socket::new(NETLINK_ROUTE)
            .with_context(ErrorKind::Kernel, || "open a netlink watch socket")?;
        socket
            .bind(&SocketAddr::new(0, LINK_GROUP))
            .with_context(ErrorKind::Kernel, || "subscribe to link notifications")?;
        socket
            .set_non_blocking(true)
            .with_context(ErrorKind::Kernel, || "make the watch socket non-blocking")?;
        Ok(socket)
    }

    pub fn open(netns: &Netns) -> Result<LinkWatch> {
        let socket = netns.run(Self::subscribe)?;
        Ok(LinkWatch { socket })
    }

    pub fn open_here() -> Result<LinkWatch> {
        Ok(LinkWatch { socket: Self::subscribe()? })
    }

    /// Wait until `ready` holds for link `index`, re-checking after every link notification. The
    /// subscription exists before the first check, so a change between check and wait is not
    /// missed. Bounded by `timeout`.
    pub fn wait_for(
        &mut self,
        netlink: &mut Netlink,
        index: u32,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&LinkDetails) -> bool,
    ) -> Result<LinkDetails> {
        let deadline = Instant::now() + timeout;
        loop {
            let link = netlink
                .link_by_index(index)?
                .ok_or_else(|| Error::not_found(format!("{what}: interface #{index} vanished")))?;
            if ready(&link) {
                return Ok(link);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{what}: not ready within {} ms", timeout.as_millis()),
                ));
            }
            let left = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut poll =
                libc::pollfd { fd: self.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for the duration of the call.
            let ready_count = unsafe { libc::poll(&mut poll, 1, left) };
            if ready_count > 0 {
                self.drain();
            }
        }
    }

    /// Wait (at most `timeout`) for any link notification, e.g. an interface appearing.
    pub fn wait_any(&mut self, timeout: Duration) {
        let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut poll =
            libc::pollfd { fd: self.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut poll, 1, millis) } > 0 {
            self.drain();
        }
    }

    /// The links whose state changed, from the queued notifications: (index, carrier and up),
    /// with deleted links reported as down. Bounded per call.
    pub fn link_changes(&mut self) -> Vec<(u32, bool)> {
        use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
        use netlink_packet_route::link::LinkFlags;
        use netlink_packet_route::RouteNetlinkMessage;
        let mut changes = Vec::new();
        let mut buffer = vec![0u8; NOTIFICATION_BUFFER];
        for _ in 0..1024 {
            let received = match self.socket.recv(&mut &mut buffer[..], 0) {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            let mut offset = 0;
            while offset < received {
                let Ok(message) =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer[offset..received])
                else {
                    break;
                };
                let length = message.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += (length + 3) & !3;
                match message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        let flags = link.header.flags;
                        let running =
                            flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
                        changes.push((link.header.index, running));
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                        changes.push((link.header.index, false));
                    }
                    _ => {}
                }
            }
        }
        changes
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }

    /// Discard queued notifications: their content is re-read by the next query anyway.
    fn drain(&mut self) {
        let mut buffer = vec![0u8; NOTIFICATION_BUFFER];
        for _ in 0..1024 {
            match self.socket.recv(&mut &mut buffer[..], 0) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
    }
}
