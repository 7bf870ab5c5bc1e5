//! A small synchronous rtnetlink client bound to one network namespace.
//!
//! Messages are the typed ones of netlink-packet-route; this module only frames requests, reads
//! acknowledgements and dumps, and turns kernel errors into lanyard errors. It is synchronous on
//! purpose: attach is a short sequence of dependent requests, and a blocking socket per namespace
//! (as netavark does) costs less than an async runtime on the CLI's critical path.

mod address;
mod link;
mod route;
mod watch;

pub use address::AddressDetails;
pub use link::{LinkDetails, LinkKind, NewLink};
pub use route::{DefaultRoute, DeviceRoute, NewRoute, RouteEntry};
pub use watch::{Ipv6AddressSeen, LinkChanges, LinkSeen, LinkWatch};

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::netns::Netns;

/// How long the kernel may take to answer one read of a request: far more than any answer needs
/// (a dump of a thousand links takes milliseconds), small enough that a kernel that never
/// answers fails a CLI command instead of hanging it.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A route-netlink socket created inside one namespace; every request it sends acts there.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
    /// How long one read of an answer may block (SO_RCVTIMEO), to name it in the error.
    answer_timeout: Duration,
    /// Which namespace this socket lives in, for error messages ("in guest web", "in host").
    pub(crate) place: String,
}

/// One request as bytes: `message` with the request flags, `flags` and `sequence`.
fn encode(message: RouteNetlinkMessage, flags: u16, sequence: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut out = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut out);
    out
}

/// Bound every blocking read of `socket` by `timeout` (SO_RCVTIMEO); a read that runs out fails
/// with EAGAIN.
fn set_answer_timeout(socket: &Socket, timeout: Duration) -> Result<()> {
    let timeval = nix::sys::time::TimeVal::new(
        timeout.as_secs() as libc::time_t,
        timeout.subsec_micros() as libc::suseconds_t,
    );
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeval)
        .with_context(ErrorKind::Kernel, || "set a receive timeout on a netlink socket")
}

impl Netlink {
    /// Open a socket inside `netns`: a netlink socket belongs to the namespace of the thread that
    /// created it, so it is created on a short-lived thread that entered the namespace.
    pub fn open(netns: &Netns, place: impl Into<String>) -> Result<Netlink> {
        let place = place.into();
        netns.run(move || Self::open_here(place))
    }

    /// Open a socket in the namespace the calling thread is in. Only for callers that are
    /// already on a thread inside the right namespace (a namespace worker, a helper process).
    pub fn open_here(place: impl Into<String>) -> Result<Netlink> {
        Self::open_to(0, ANSWER_TIMEOUT, place.into())
    }

    /// A socket whose requests go to netlink port `peer` (0: the kernel) and whose reads of an
    /// answer block at most `answer_timeout` each.
    fn open_to(peer: u32, answer_timeout: Duration, place: String) -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)
            .with_context(ErrorKind::Kernel, || "open a netlink socket")?;
        socket.bind_auto().with_context(ErrorKind::Kernel, || "bind a netlink socket")?;
        socket
            .connect(&SocketAddr::new(peer, 0))
            .with_context(ErrorKind::Kernel, || "connect a netlink socket")?;
        set_answer_timeout(&socket, answer_timeout)?;
        // Strict checking makes the kernel filter dumps for us where it can; older kernels
        // without it still answer, unfiltered.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink { socket, sequence: 0, buffer: vec![0; 64 * 1024], answer_timeout, place })
    }

    /// Send one request and collect every message of the answer; an error answer becomes an
    /// `io::Error` carrying the kernel's errno, for the caller to put into context.
    pub(crate) fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        self.socket.send(&encode(message, NLM_F_ACK | flags, sequence), 0)?;

        let mut answers = Vec::new();
        // Bounded: a kernel answer ends with an ack or NLMSG_DONE; the cap only guards against a
        // kernel bug or a socket shared by mistake.
        for _ in 0..100_000 {
            let received = match self.socket.recv(&mut &mut self.buffer[..], 0) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the kernel did not answer within {} s",
                            self.answer_timeout.as_secs_f32()
                        ),
                    ))
                }
                Err(e) => return Err(e),
            };
            let mut offset = 0;
            while offset < received {
                let bytes = &self.buffer[offset..received];
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = parsed.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += (length + 3) & !3;
                if parsed.header.sequence_number != sequence {
                    continue;
                }
                match parsed.payload {
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(answers),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "netlink answer never ended"))
    }

    /// Wrap a failed request with what was being done and where.
    pub(crate) fn kernel_error(&self, what: impl std::fmt::Display, error: io::Error) -> Error {
        let hint = match error.raw_os_error() {
            Some(libc::EPERM) => " (lanyard needs root: CAP_NET_ADMIN)",
            Some(libc::EXFULL) => " (a Linux bridge takes at most 1023 ports)",
            _ => "",
        };
        let kind = if error.raw_os_error() == Some(libc::EPERM) {
            ErrorKind::Permission
        } else if error.kind() == io::ErrorKind::TimedOut {
            ErrorKind::Timeout
        } else {
            ErrorKind::Kernel
        };
        Error::with_source(kind, format!("{what} in {}{hint}", self.place), error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A peer that never answers stands for a kernel that never does: the request must fail
    /// with a timeout naming it, not hang. (Connecting to a userspace netlink port needs
    /// CAP_NET_ADMIN, as every test of lanyard does.)
    #[test]
    fn a_request_nobody_answers_times_out_with_its_name() {
        let mut silent = Socket::new(NETLINK_ROUTE).expect("open the silent peer");
        let port = silent.bind_auto().expect("bind the silent peer").port_number();
        let timeout = Duration::from_millis(200);
        let mut netlink =
            Netlink::open_to(port, timeout, "the test namespace".into()).expect("connect");
        let started = Instant::now();
        let error = netlink.links().expect_err("nobody answers");
        let waited = started.elapsed();
        assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
        assert!(
            error.to_string().starts_with(
                "list interfaces in the test namespace: the kernel did not answer within 0.2 s"
            ),
            "{error}"
        );
        assert!(waited >= timeout && waited < Duration::from_secs(3), "waited {waited:?}");
        // The request did reach the peer: it was the answer that never came.
        let mut buffer = vec![0u8; 4096];
        silent.set_non_blocking(true).expect("non-blocking");
        assert!(silent.recv(&mut &mut buffer[..], 0).expect("the request arrived") > 0);
    }
}
