//! Waiting for a link to reach a state, by netlink notification rather than by sleeping: the
//! bridge port turning to forwarding, a macvlan's parent having carrier, a guest link being up.
//!
//! Notifications can be lost: when the socket's receive buffer is full the kernel drops them
//! and reports ENOBUFS once. Every reader here treats that as "the state may have changed
//! unseen" and reads the state afresh, so no one waits for a state that already came.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::{encode, LinkDetails, Netlink, ANSWER_TIMEOUT};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::netns::Netns;

/// RTMGRP_LINK: link state changes, including a bridge port's STP state.
const LINK_GROUP: u32 = 1;
/// RTMGRP_IPV6_IFADDR: IPv6 addresses added, changed (DAD done, deprecated) and removed.
const IPV6_ADDRESS_GROUP: u32 = 0x100;

/// How often a re-read is started again when notifications overflow during it, before giving up.
const RESYNC_ATTEMPTS: usize = 3;

/// A socket subscribed to link notifications of one namespace.
pub struct LinkWatch {
    socket: Socket,
    /// Sequence number of the last re-read (dump) sent through this socket.
    sequence: u32,
    /// Subscribed to IPv6 address notifications too (see [`LinkChanges::ipv6_addresses`]).
    ipv6_addresses: bool,
}

/// Room for one notification; allocated per read, not kept, because the daemon holds one watch
/// per lease and a thousand idle 32 KiB buffers would be most of its memory.
const NOTIFICATION_BUFFER: usize = 32 * 1024;

/// One state a link was seen in, from a notification or a re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSeen {
    pub index: u32,
    /// Up, with carrier. A deleted link is seen not running.
    pub running: bool,
    /// [`LinkDetails::carrier_down_count`] at that moment (`None` for a deleted link).
    pub carrier_down_count: Option<u32>,
}

/// One state an IPv6 address was seen in, from a notification or a re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6AddressSeen {
    pub index: u32,
    pub address: Ipv6Addr,
    /// Global, made by the kernel from a router advertisement (SLAAC: not permanent, which
    /// addresses added by hand or by lanyard are), not a temporary (privacy) one, and through
    /// duplicate address detection. False for a removed address and any other kind.
    pub autoconfigured: bool,
}

impl Ipv6AddressSeen {
    fn from_message(message: &AddressMessage, removed: bool) -> Option<Ipv6AddressSeen> {
        if message.header.family != AddressFamily::Inet6 {
            return None;
        }
        let mut address = None;
        // IFA_FLAGS carries every flag; the header's byte only the low eight.
        let mut flags = AddressFlags::from_bits_retain(u32::from(message.header.flags.bits()));
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Address(IpAddr::V6(ip)) => address = Some(*ip),
                AddressAttribute::Flags(all) => flags = *all,
                _ => {}
            }
        }
        let unusable = AddressFlags::Secondary // IFA_F_TEMPORARY for IPv6
            | AddressFlags::Permanent
            | AddressFlags::Tentative
            | AddressFlags::Dadfailed;
        let autoconfigured = !removed
            && message.header.scope == AddressScope::Universe
            && !flags.intersects(unusable);
        Some(Ipv6AddressSeen { index: message.header.index, address: address?, autoconfigured })
    }
}

/// What the link notifications read since the last call say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkChanges {
    /// Every state a link was seen in, oldest first. Every notification the kernel sent is here,
    /// so a link reported down and then up between two reads shows both; a carrier loss the
    /// kernel folded into one notification shows only in `carrier_down_count`.
    pub seen: Vec<LinkSeen>,
    /// Notifications were lost (the receive buffer overflowed). `seen` then ends with a fresh
    /// read of every link in the namespace, so each link's last entry is its state now; what
    /// happened in between is unknown (a flap may be among what was lost).
    pub overflowed: bool,
    /// With a watch that asked for them: every state an IPv6 address was seen in, oldest first.
    pub ipv6_addresses: Vec<Ipv6AddressSeen>,
    /// After lost notifications: `ipv6_addresses` from this position on come from a fresh read
    /// of every IPv6 address (with the notifications that came during it, in order), so an
    /// address not seen from here on is gone.
    pub ipv6_reread_from: Option<usize>,
}

/// What one non-blocking read of the watch socket gave.
enum Read {
    /// Messages (their link states are recorded); `dump_done` once the awaited dump ended.
    Messages { dump_done: bool },
    /// Nothing queued.
    Empty,
    /// Notifications were lost (ENOBUFS, reported once per overflow).
    Overflow,
}

impl LinkWatch {
    fn subscribe(groups: u32) -> Result<Socket> {
        let mut socket = Socket::new(NETLINK_ROUTE)
            .with_context(ErrorKind::Kernel, || "open a netlink watch socket")?;
        socket
            .bind(&SocketAddr::new(0, groups))
            .with_context(ErrorKind::Kernel, || "subscribe to link notifications")?;
        socket
            .set_non_blocking(true)
            .with_context(ErrorKind::Kernel, || "make the watch socket non-blocking")?;
        Ok(socket)
    }

    pub fn open(netns: &Netns) -> Result<LinkWatch> {
        let socket = netns.run(|| Self::subscribe(LINK_GROUP))?;
        Ok(LinkWatch { socket, sequence: 0, ipv6_addresses: false })
    }

    pub fn open_here() -> Result<LinkWatch> {
        Ok(LinkWatch { socket: Self::subscribe(LINK_GROUP)?, sequence: 0, ipv6_addresses: false })
    }

    /// A watch of links and IPv6 addresses; [`LinkWatch::reread_ipv6_addresses`] says which
    /// addresses are there when it starts.
    pub fn open_here_with_ipv6_addresses() -> Result<LinkWatch> {
        let socket = Self::subscribe(LINK_GROUP | IPV6_ADDRESS_GROUP)?;
        Ok(LinkWatch { socket, sequence: 0, ipv6_addresses: true })
    }

    /// Every IPv6 address of the namespace now, read through this socket after the
    /// subscription: applied in order, the entries (and the notifications after them) give
    /// each address's state. Link notifications queued meanwhile are dropped: call this before
    /// reading the links. Waits for the kernel (at most [`ANSWER_TIMEOUT`] per answer).
    pub fn reread_ipv6_addresses(&mut self) -> Result<Vec<Ipv6AddressSeen>> {
        let mut changes = LinkChanges::default();
        let mut buffer = vec![0u8; NOTIFICATION_BUFFER];
        self.resync_with(&mut buffer, &mut changes, false)?;
        Ok(changes.ipv6_addresses)
    }

    /// Wait until `ready` holds for link `index`, re-checking after every link notification. The
    /// subscription exists before the first check, so a change between check and wait is not
    /// missed; every wake-up (a notification, or the error that reports lost ones) re-reads the
    /// link from the kernel, so a lost notification cannot hide a state. Bounded by `timeout`.
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
            if self.poll(deadline - now)? {
                self.drain();
            }
        }
    }

    /// Wait (at most `timeout`) for any link notification, e.g. an interface appearing. A lost
    /// notification wakes this too (the overflow is reported as an error on the socket). The
    /// caller re-reads what it waits for after this returns, for whatever reason it returned; a
    /// failed poll (it needs memory) just returns early.
    pub fn wait_any(&mut self, timeout: Duration) {
        if self.poll(timeout).unwrap_or(true) {
            self.drain();
        }
    }

    /// Whether the socket has something to read (a notification or an overflow) within
    /// `timeout`. EINTR counts as a wake-up: the caller re-checks its state anyway.
    fn poll(&self, timeout: Duration) -> Result<bool> {
        let millis = timeout.as_millis().clamp(1, i32::MAX as u128);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(count) => Ok(count > 0),
            Err(nix::errno::Errno::EINTR) => Ok(true),
            Err(e) => Err(Error::with_source(ErrorKind::Kernel, "wait for link notifications", e)),
        }
    }

    /// The links whose state changed, from the queued notifications. On overflow, the state of
    /// every link is read afresh through the same socket (see [`LinkChanges::overflowed`]).
    /// Non-blocking for the notifications; the re-read waits at most [`ANSWER_TIMEOUT`] per
    /// answer, and its failure is returned (the notifications read so far are then lost too,
    /// but the overflow that caused it is already consumed: callers must not assume the state).
    pub fn link_changes(&mut self) -> Result<LinkChanges> {
        let mut changes = LinkChanges::default();
        let mut buffer = vec![0u8; NOTIFICATION_BUFFER];
        // Bounded: a namespace changing links faster than this loop reads overflows the buffer,
        // which the re-read below covers.
        for _ in 0..1024 {
            match self.read(&mut buffer, &mut changes, None)? {
                Read::Messages { .. } => {}
                Read::Empty => break,
                Read::Overflow => changes.overflowed = true,
            }
        }
        if changes.overflowed {
            self.resync_with(&mut buffer, &mut changes, true)?;
        }
        Ok(changes)
    }

    /// Dump every link (with `links`) and, on a watch of IPv6 addresses, every IPv6 address
    /// through the watch socket and add each one's state to `changes`, in the order the answers
    /// and any notifications arrive: the socket queues them in the order the kernel observed
    /// them, so the last entry per link or address is its state now. An overflow during a dump
    /// starts it again (bounded).
    fn resync_with(
        &mut self,
        buffer: &mut [u8],
        changes: &mut LinkChanges,
        links: bool,
    ) -> Result<()> {
        for _ in 0..RESYNC_ATTEMPTS {
            let mut overflowed = false;
            if links {
                let dump = RouteNetlinkMessage::GetLink(LinkMessage::default());
                overflowed |= self.dump(buffer, changes, dump, "the links")?;
            }
            if self.ipv6_addresses {
                changes.ipv6_reread_from = Some(changes.ipv6_addresses.len());
                let mut message = AddressMessage::default();
                message.header.family = AddressFamily::Inet6;
                let dump = RouteNetlinkMessage::GetAddress(message);
                overflowed |= self.dump(buffer, changes, dump, "the IPv6 addresses")?;
            }
            if !overflowed {
                return Ok(());
            }
        }
        Err(Error::new(
            ErrorKind::Kernel,
            format!(
                "re-read the links and addresses: notifications overflowed again \
                 {RESYNC_ATTEMPTS} times; they change faster than they can be read"
            ),
        ))
    }

    /// Send one dump request through the watch socket and read until its end; true when
    /// notifications overflowed meanwhile.
    fn dump(
        &mut self,
        buffer: &mut [u8],
        changes: &mut LinkChanges,
        request: RouteNetlinkMessage,
        what: &str,
    ) -> Result<bool> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let request = encode(request, NLM_F_DUMP, sequence);
        self.socket
            .send_to(&request, &SocketAddr::new(0, 0), 0)
            .with_context(ErrorKind::Kernel, || format!("re-read {what}"))?;
        let mut overflowed = false;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            match self.read(buffer, changes, Some(sequence))? {
                Read::Messages { dump_done: false } => {}
                Read::Messages { dump_done: true } => break,
                Read::Overflow => overflowed = true,
                Read::Empty => {
                    let now = Instant::now();
                    if now >= deadline || !self.poll(deadline - now)? {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "re-read {what}: the kernel did not answer within {} s",
                                ANSWER_TIMEOUT.as_secs()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(overflowed)
    }

    /// One non-blocking read: link and address states go to `changes`. With `done_of`, the
    /// sequence number of a dump being awaited, reports when that dump's end was read.
    fn read(
        &mut self,
        buffer: &mut [u8],
        changes: &mut LinkChanges,
        done_of: Option<u32>,
    ) -> Result<Read> {
        let received = match self.socket.recv(&mut &mut buffer[..], 0) {
            Ok(0) => return Ok(Read::Empty),
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Read::Empty),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Read::Overflow),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                return Ok(Read::Messages { dump_done: false })
            }
            Err(e) => {
                return Err(Error::with_source(ErrorKind::Kernel, "read link notifications", e))
            }
        };
        let mut done = false;
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
            let ours = done_of.is_some_and(|sequence| message.header.sequence_number == sequence);
            match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    let details = LinkDetails::from_message(&link);
                    changes.seen.push(LinkSeen {
                        index: details.index,
                        running: details.up && details.lower_up,
                        carrier_down_count: details.carrier_down_count,
                    });
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    changes.seen.push(LinkSeen {
                        index: link.header.index,
                        running: false,
                        carrier_down_count: None,
                    });
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(address)) => {
                    changes.ipv6_addresses.extend(Ipv6AddressSeen::from_message(&address, false));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(address)) => {
                    changes.ipv6_addresses.extend(Ipv6AddressSeen::from_message(&address, true));
                }
                NetlinkPayload::Done(_) if ours => done = true,
                NetlinkPayload::Error(error) if ours => match error.code {
                    None => done = true,
                    Some(code) => {
                        return Err(Error::with_source(
                            ErrorKind::Kernel,
                            "re-read the links or addresses",
                            io::Error::from_raw_os_error(-code.get()),
                        ))
                    }
                },
                _ => {}
            }
        }
        Ok(Read::Messages { dump_done: done })
    }

    /// Discard queued notifications, and the report of lost ones: their content is re-read by
    /// the caller's next query anyway.
    fn drain(&mut self) {
        let mut buffer = vec![0u8; NOTIFICATION_BUFFER];
        for _ in 0..1024 {
            match self.socket.recv(&mut &mut buffer[..], 0) {
                Ok(n) if n > 0 => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                _ => break,
            }
        }
    }
}

impl std::os::fd::AsFd for LinkWatch {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(scope: AddressScope, flags: AddressFlags) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet6;
        message.header.index = 3;
        message.header.scope = scope;
        message.attributes.push(AddressAttribute::Address("2001:db8::1".parse().unwrap()));
        message.attributes.push(AddressAttribute::Flags(flags));
        message
    }

    fn autoconfigured(scope: AddressScope, flags: AddressFlags, removed: bool) -> bool {
        let seen = Ipv6AddressSeen::from_message(&message(scope, flags), removed).unwrap();
        assert_eq!((seen.index, seen.address), (3, "2001:db8::1".parse().unwrap()));
        seen.autoconfigured
    }

    #[test]
    fn only_global_slaac_addresses_through_dad_count() {
        let universe = AddressScope::Universe;
        assert!(autoconfigured(universe, AddressFlags::empty(), false));
        // Deprecated (preferred lifetime over) is still valid: it stays registered.
        assert!(autoconfigured(universe, AddressFlags::Deprecated, false));
        assert!(!autoconfigured(universe, AddressFlags::empty(), true), "removed");
        assert!(!autoconfigured(universe, AddressFlags::Permanent, false), "added by hand");
        assert!(!autoconfigured(universe, AddressFlags::Secondary, false), "temporary");
        assert!(!autoconfigured(universe, AddressFlags::Tentative, false), "in DAD");
        assert!(!autoconfigured(universe, AddressFlags::Dadfailed, false), "duplicate");
        assert!(!autoconfigured(AddressScope::Link, AddressFlags::empty(), false), "link-local");
        // IPv4 is not followed.
        let mut v4 = message(universe, AddressFlags::empty());
        v4.header.family = AddressFamily::Inet;
        assert!(Ipv6AddressSeen::from_message(&v4, false).is_none());
    }
}
