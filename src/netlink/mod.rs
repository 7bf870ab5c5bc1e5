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
pub use route::{DefaultRoute, NewRoute};
pub use watch::LinkWatch;

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::netns::Netns;

/// A route-netlink socket created inside one namespace; every request it sends acts there.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
    /// Which namespace this socket lives in, for error messages ("in guest web", "in host").
    pub(crate) place: String,
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
        let mut socket = Socket::new(NETLINK_ROUTE)
            .with_context(ErrorKind::Kernel, || "open a netlink socket")?;
        socket.bind_auto().with_context(ErrorKind::Kernel, || "bind a netlink socket")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .with_context(ErrorKind::Kernel, || "connect a netlink socket")?;
        // Strict checking makes the kernel filter dumps for us where it can; older kernels
        // without it still answer, unfiltered.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink { socket, sequence: 0, buffer: vec![0; 64 * 1024], place: place.into() })
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
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut answers = Vec::new();
        // Bounded: a kernel answer ends with an ack or NLMSG_DONE; the cap only guards against a
        // kernel bug or a socket shared by mistake.
        for _ in 0..100_000 {
            let received = self.socket.recv(&mut &mut self.buffer[..], 0)?;
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
        } else {
            ErrorKind::Kernel
        };
        Error::with_source(kind, format!("{what} in {}{hint}", self.place), error)
    }
}
