//! The sockets one lease talks through, opened inside the guest's namespace once and kept open
//! for the life of the lease: each AF_PACKET close blocks ~8 ms here and a bind with ETH_P_ALL
//! ~16 ms, which busybox udhcpc pays for every packet.
//!
//! - Receive: an AF_PACKET datagram socket bound to (ETH_P_IP, ifindex) with a classic BPF filter
//!   that passes only unfragmented UDP to port 68, so DHCP replies arrive whatever the
//!   interface's address state (a server may unicast an OFFER to an address not configured yet).
//! - Send while unconfigured: the same packet socket, with an IPv4/UDP header built here
//!   (source 0.0.0.0, destination broadcast), since no UDP socket can send from 0.0.0.0.
//! - Send once bound (RENEWING, RELEASE): a UDP socket bound to port 68 on this interface, so
//!   the kernel picks the leased source address and resolves the server's MAC.

use std::ffi::OsStr;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{
    self as nix_socket, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn,
};
use socket2::SockFilter;

use crate::error::{Error, ErrorKind, Result};

const DHCP_CLIENT_PORT: u16 = 68;
const DHCP_SERVER_PORT: u16 = 67;
const ETH_P_IP: u16 = 0x0800;

pub struct LeaseSocket {
    packet: OwnedFd,
    udp: OwnedFd,
    ifindex: u32,
}

/// For `map_err`: what failed on which interface, with the errno (from nix or socket2).
fn socket_error<E: Into<io::Error>>(what: &str, ifname: &str) -> impl FnOnce(E) -> Error {
    let message = format!("{what} on {ifname}");
    move |error| Error::with_source(ErrorKind::Kernel, message, error.into())
}

/// Classic BPF over the IPv4 header (SOCK_DGRAM packet sockets start at the network header):
/// accept unfragmented UDP whose destination port is 68.
fn client_port_filter() -> [SockFilter; 9] {
    let op = SockFilter::new;
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LDX_MSH: u16 = 0xb1; // BPF_LDX | BPF_B | BPF_MSH: X = 4 * (P[k] & 0xf)
    const LD_H_IND: u16 = 0x48; // BPF_LD | BPF_H | BPF_IND
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    [
        op(LD_B_ABS, 0, 0, 9),                      // 0: protocol
        op(JEQ, 0, 6, libc::IPPROTO_UDP as u32),    // 1: UDP, else reject
        op(LD_H_ABS, 0, 0, 6),                      // 2: flags + fragment offset
        op(JSET, 4, 0, 0x1fff),                     // 3: a fragment: reject
        op(LDX_MSH, 0, 0, 0),                       // 4: X = IP header length
        op(LD_H_IND, 0, 0, 2),                      // 5: UDP destination port
        op(JEQ, 0, 1, u32::from(DHCP_CLIENT_PORT)), // 6: port 68: accept, else reject
        op(RET, 0, 0, 0xffff_ffff),                 // 7: accept
        op(RET, 0, 0, 0),                           // 8: reject
    ]
}

/// SO_BINDTOIFINDEX: by index, which a rename cannot change under the caller (Docker renames a
/// plugin endpoint's link right after moving it into the container).
fn bind_to_ifindex(socket: &OwnedFd, ifindex: u32) -> nix::Result<()> {
    let index = ifindex as libc::c_int;
    // SAFETY: setsockopt(2) on a socket this function borrows, with a pointer to a c_int that
    // lives across the call and its exact size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTOIFINDEX,
            (&index as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    nix::errno::Errno::result(result).map(drop)
}

impl LeaseSocket {
    /// Open the sockets for `ifname` (index `ifindex`). Must run on a thread inside the guest's
    /// namespace: sockets belong to the namespace they were created in.
    pub fn open_here(ifindex: u32, ifname: &str) -> Result<LeaseSocket> {
        let nonblocking = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let packet =
            nix_socket::socket(AddressFamily::Packet, SockType::Datagram, nonblocking, None)
                .map_err(socket_error("open a DHCP packet socket", ifname))?;
        socket2::SockRef::from(&packet)
            .attach_filter(&client_port_filter())
            .map_err(socket_error("attach the DHCP packet filter", ifname))?;
        // Opened with protocol 0 and bound with the protocol and ifindex: microseconds, where an
        // ETH_P_ALL bind costs ~16 ms on this kernel.
        nix_socket::bind(packet.as_raw_fd(), &crate::sys::packet_address(ifindex, ETH_P_IP, None))
            .map_err(socket_error("bind the DHCP packet socket", ifname))?;

        let udp = nix_socket::socket(AddressFamily::Inet, SockType::Datagram, nonblocking, None)
            .map_err(socket_error("open a DHCP UDP socket", ifname))?;
        nix_socket::setsockopt(&udp, nix_socket::sockopt::ReuseAddr, &true)
            .and_then(|()| match bind_to_ifindex(&udp, ifindex) {
                // Kernels before 5.0 bind by name only.
                Err(nix::errno::Errno::ENOPROTOOPT) => nix_socket::setsockopt(
                    &udp,
                    nix_socket::sockopt::BindToDevice,
                    &OsStr::new(ifname).to_os_string(),
                ),
                bound => bound,
            })
            .map_err(socket_error("bind a DHCP UDP socket to the interface", ifname))?;
        let local = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT));
        nix_socket::bind(udp.as_raw_fd(), &local)
            .map_err(socket_error("bind UDP port 68", ifname))?;
        // The UDP socket only sends; replies are read from the packet socket. A drop-all filter
        // keeps unicast replies from queueing here (and the daemon from polling it).
        const BPF_RET_K: u16 = 0x06;
        socket2::SockRef::from(&udp)
            .attach_filter(&[SockFilter::new(BPF_RET_K, 0, 0, 0)])
            .map_err(socket_error("attach a drop-all filter to the DHCP UDP socket", ifname))?;
        Ok(LeaseSocket { packet, udp, ifindex })
    }

    /// The descriptor to poll: every reply arrives on the packet socket.
    pub fn receive_fd(&self) -> BorrowedFd<'_> {
        self.packet.as_fd()
    }

    /// Broadcast a DHCP message from 0.0.0.0:68 to 255.255.255.255:67.
    pub fn send_broadcast(&self, payload: &[u8]) -> io::Result<()> {
        let datagram = build_ipv4_udp(broadcast_source(payload), Ipv4Addr::BROADCAST, payload);
        let broadcast = crate::sys::packet_address(self.ifindex, ETH_P_IP, Some([0xff; 6]));
        nix_socket::sendto(self.packet.as_raw_fd(), &datagram, &broadcast, MsgFlags::empty())?;
        Ok(())
    }

    /// Unicast to a server from the leased address (RENEWING, RELEASE).
    pub fn send_unicast(&self, server: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let server = SockaddrIn::from(SocketAddrV4::new(server, DHCP_SERVER_PORT));
        nix_socket::sendto(self.udp.as_raw_fd(), payload, &server, MsgFlags::empty())?;
        Ok(())
    }

    /// Every DHCP payload queued on the packet socket (UDP payloads to port 68). Bounded per call.
    pub fn receive(&self) -> Vec<Vec<u8>> {
        let mut payloads = Vec::new();
        // Allocated per call: a thousand idle leases keep no receive buffers.
        let mut buffer = vec![0u8; 4096];
        for _ in 0..64 {
            let n = match nix_socket::recv(self.packet.as_raw_fd(), &mut buffer, MsgFlags::empty())
            {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            if let Some(payload) = udp_payload(&buffer[..n]) {
                payloads.push(payload.to_vec());
            }
        }
        payloads
    }
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        let mut pairs = chunk.chunks_exact(2);
        for pair in &mut pairs {
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        if let [last] = pairs.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header and a UDP header (68 -> 67) around `payload`, checksums filled in.
pub fn build_ipv4_udp(source: Ipv4Addr, destination: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_length = 8 + payload.len();
    let total = 20 + udp_length;
    let mut packet = Vec::with_capacity(total);
    packet.extend_from_slice(&[0x45, 0x10]); // IPv4, IHL 5; TOS low delay, as dhclient sends
    packet.extend_from_slice(&(total as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0]); // id, flags, fragment offset
    packet.extend_from_slice(&[64, libc::IPPROTO_UDP as u8, 0, 0]);
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    let header_sum = checksum(&[&packet[..20]]);
    packet[10..12].copy_from_slice(&header_sum.to_be_bytes());
    let mut udp = Vec::with_capacity(udp_length);
    udp.extend_from_slice(&DHCP_CLIENT_PORT.to_be_bytes());
    udp.extend_from_slice(&DHCP_SERVER_PORT.to_be_bytes());
    udp.extend_from_slice(&(udp_length as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let pseudo = [
        &source.octets()[..],
        &destination.octets()[..],
        &[0, libc::IPPROTO_UDP as u8],
        &(udp_length as u16).to_be_bytes()[..],
    ]
    .concat();
    let mut udp_sum = checksum(&[&pseudo, &udp]);
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
    packet.extend_from_slice(&udp);
    packet
}

/// The UDP payload of an IPv4 datagram to port 68, or None for anything else or anything short.
/// The IP source of a broadcast DHCP message: the message's own `ciaddr`, which the client fills
/// in only while it holds an address it answers ARP for (BOUND, RENEWING, REBINDING: a
/// rebinding REQUEST); 0.0.0.0 before it has one (RFC 2131 §4.1), as for DISCOVER and DECLINE.
fn broadcast_source(payload: &[u8]) -> Ipv4Addr {
    match payload.get(12..16) {
        Some(&[a, b, c, d]) => Ipv4Addr::new(a, b, c, d),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

pub fn udp_payload(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header = usize::from(first & 0x0f) * 4;
    if header < 20 || packet.get(9) != Some(&(libc::IPPROTO_UDP as u8)) {
        return None;
    }
    // The lengths the headers claim must be there: a datagram cut short (a frame bigger than
    // the receive buffer) is dropped, not read as a shorter message.
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
    let packet = packet.get(..total)?;
    let udp = packet.get(header..)?;
    let port = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let length = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    if port != DHCP_CLIENT_PORT || length < 8 {
        return None;
    }
    udp.get(8..length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_comes_from_ciaddr_once_the_client_has_an_address() {
        let mut message = vec![0u8; 240];
        assert_eq!(broadcast_source(&message), Ipv4Addr::UNSPECIFIED);
        message[12..16].copy_from_slice(&[198, 18, 0, 57]);
        assert_eq!(broadcast_source(&message), Ipv4Addr::new(198, 18, 0, 57));
        let datagram = build_ipv4_udp(broadcast_source(&message), Ipv4Addr::BROADCAST, &message);
        assert_eq!(&datagram[12..16], &[198, 18, 0, 57], "the IP header's source");
        assert_eq!(broadcast_source(&[0u8; 8]), Ipv4Addr::UNSPECIFIED, "a runt");
    }

    #[test]
    fn built_datagrams_parse_back_and_checksums_verify() {
        let payload = b"dhcp payload, odd length!";
        let packet = build_ipv4_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, payload);
        assert_eq!(checksum(&[&packet[..20]]), 0, "IPv4 header checksum verifies");
        let udp = &packet[20..];
        let pseudo = [
            &[0u8, 0, 0, 0][..],
            &[255, 255, 255, 255],
            &[0, 17],
            &(udp.len() as u16).to_be_bytes(),
        ]
        .concat();
        assert_eq!(checksum(&[&pseudo, udp]), 0, "UDP checksum verifies");
        // What the client sends goes to port 67; flip the ports to check the receive side.
        let mut reply = packet.clone();
        reply[20..22].copy_from_slice(&67u16.to_be_bytes());
        reply[22..24].copy_from_slice(&68u16.to_be_bytes());
        assert_eq!(udp_payload(&reply), Some(&payload[..]));
        assert_eq!(udp_payload(&packet), None, "to port 67: not ours");
        for cut in 0..reply.len() {
            // A cut datagram is never taken for a whole one.
            assert_eq!(udp_payload(&reply[..cut]), None, "cut at {cut}");
        }
    }
}
