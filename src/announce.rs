//! Tells the LAN about a freshly configured interface and probes for address conflicts, from
//! inside the guest network namespace.
//!
//! - IPv4: RFC 5227. An ARP announcement (a request with sender = target = our address, sent to
//!   broadcast) makes neighbours and switches drop stale entries; an ARP probe (sender address
//!   0.0.0.0) asks whether anyone already holds an address without polluting caches.
//! - IPv6: RFC 4861 / RFC 4862. An unsolicited Neighbour Advertisement (override flag, to ff02::1)
//!   is the announcement; a Neighbour Solicitation from `::` to the solicited-node group is the
//!   DAD probe, answered by a NA from whoever holds the address.
//!
//! Every function expects the calling thread to be inside the guest's network namespace already.
//!
//! Socket choices (costs measured on a 6.x kernel on a 2-core VM):
//! - ARP and the DAD probe use one AF_PACKET socket per call, opened with protocol 0 and bound to
//!   (protocol, ifindex): that bind costs microseconds where an ETH_P_ALL socket costs ~16 ms.
//!   Its `close()` blocks ~8 ms in `synchronize_net()`, so a call never opens more than one.
//! - The DAD probe needs source `::`, which a raw ICMPv6 socket cannot send (an unspecified
//!   IPV6_PKTINFO source means "kernel, choose one"), so it goes out as a hand-built Ethernet +
//!   IPv6 + ICMPv6 frame on the packet socket, which also receives the answer whatever state the
//!   guest's IPv6 stack is in.
//! - The unsolicited NA uses a raw ICMPv6 socket: cheap to open and close, and the kernel checks
//!   that the source address is really configured (and not tentative) on the interface.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    self as nix_socket, AddressFamily, ControlMessage, LinkAddr, MsgFlags, SockFlag, SockProtocol,
    SockType, SockaddrIn6,
};

use crate::error::{Error, ErrorKind, Result};

/// What to announce for one interface of a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub ifindex: u32,
    pub ifname: String,
    pub mac: [u8; 6],
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

/// Gratuitous ARP (RFC 5227 ARP announcement) for each IPv4 address and an unsolicited Neighbour
/// Advertisement (override flag, to ff02::1, target link-layer option) for each IPv6 address.
/// The IPv6 addresses must already be configured on the interface and usable (added with nodad).
pub fn send_announcements(a: &Announcement) -> Result<()> {
    send_announcements_repeated(a, 1, Duration::ZERO)
}

/// `count` rounds of [`send_announcements`] with `interval` between rounds, on one set of sockets.
/// Every address is tried in a round even if another fails; the first failure is returned and
/// later rounds are skipped, since what failed once (link down, address gone) will fail again.
pub fn send_announcements_repeated(a: &Announcement, count: u32, interval: Duration) -> Result<()> {
    if count == 0 || (a.ipv4.is_empty() && a.ipv6.is_empty()) {
        return Ok(());
    }
    // Opened only when needed: the packet socket's close costs ~8 ms.
    let arp = if a.ipv4.is_empty() {
        None
    } else {
        Some(PacketSocket::open(a.ifindex, libc::ETH_P_ARP as u16).map_err(|e| {
            os_error(e, format!("open packet socket for ARP announcements on {}", a.ifname))
        })?)
    };
    let nd = if a.ipv6.is_empty() {
        None
    } else {
        Some(open_nd_socket(a.ifindex).map_err(|e| {
            os_error(e, format!("open ICMPv6 socket for neighbour advertisements on {}", a.ifname))
        })?)
    };
    let arp_frames: Vec<_> =
        a.ipv4.iter().map(|ip| (*ip, build_arp_announcement(a.mac, *ip))).collect();
    let nas: Vec<_> = a.ipv6.iter().map(|ip| (*ip, build_unsolicited_na(a.mac, *ip))).collect();

    for round in 0..count {
        if round > 0 {
            std::thread::sleep(interval);
        }
        let mut failures = Vec::new();
        if let Some(sock) = &arp {
            for (ip, frame) in &arp_frames {
                if let Err(e) = sock.send(frame) {
                    failures.push((e, format!("send gratuitous ARP for {ip} on {}", a.ifname)));
                }
            }
        }
        if let Some(sock) = &nd {
            for (ip, na) in &nas {
                if let Err(e) = send_na(sock, a.ifindex, *ip, na) {
                    failures.push(na_failure(e, *ip, &a.ifname));
                }
            }
        }
        let failed = failures.len();
        if let Some((e, message)) = failures.into_iter().next() {
            let err = os_error(e, message);
            return Err(if failed == 1 {
                err
            } else {
                err.context(format!("{failed} announcements failed on {}; first", a.ifname))
            });
        }
    }
    Ok(())
}

/// RFC 5227 ARP probe for `ip` (sender address 0.0.0.0, so no neighbour caches a half-configured
/// address). Returns the MAC of whoever claims `ip` within `wait`: an ARP packet with `ip` as
/// sender, or another host's probe for `ip` (it is about to take it). `mac` is our own address;
/// frames from it are ignored. The probe is sent twice (at 0 and wait/2) because a single frame
/// is easily lost while a bridge port is not forwarding yet.
pub fn probe_ipv4(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    wait: Duration,
) -> Result<Option<[u8; 6]>> {
    let sock = PacketSocket::open(ifindex, libc::ETH_P_ARP as u16).map_err(|e| {
        os_error(e, format!("open packet socket for ARP probe of {ip} on {}", iface_label(ifindex)))
    })?;
    let probe = build_arp_probe(mac, ip);
    sock.probe(&probe, wait, |frame| parse_arp_conflict(frame, ip).filter(|m| *m != mac)).map_err(
        |(stage, e)| os_error(e, format!("{stage} ARP probe for {ip} on {}", iface_label(ifindex))),
    )
}

/// RFC 4862 duplicate address detection for `ip`: a Neighbour Solicitation from `::` to the
/// solicited-node group. Returns the MAC of whoever claims `ip` within `wait` (a NA for it, or
/// another host's DAD for it). `mac` is our own address; frames from it are ignored. Sent twice
/// like [`probe_ipv4`]. Works whether or not `ip` is configured on the interface yet, and even
/// with IPv6 disabled on it.
pub fn probe_ipv6(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv6Addr,
    wait: Duration,
) -> Result<Option<[u8; 6]>> {
    let sock = PacketSocket::open(ifindex, libc::ETH_P_IPV6 as u16).map_err(|e| {
        os_error(e, format!("open packet socket for DAD probe of {ip} on {}", iface_label(ifindex)))
    })?;
    let ns = build_dad_ns_frame(mac, ip);
    sock.probe(&ns, wait, |frame| parse_ndp_conflict(frame, ip).filter(|m| *m != mac)).map_err(
        |(stage, e)| os_error(e, format!("{stage} DAD probe for {ip} on {}", iface_label(ifindex))),
    )
}

// ---------------------------------------------------------------------------------------------
// Wire formats: pure functions, no I/O.

const BROADCAST: [u8; 6] = [0xff; 6];
const ETH_HDR: usize = 14;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const IPV6_HDR: usize = 40;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_TARGET_LL_ADDR: u8 = 2;
/// RFC 4861: NDP packets with any other hop limit may come from off-link and must be dropped.
const ND_HOP_LIMIT: u8 = 255;
/// Override flag of a NA (RFC 4861 4.4), in the first byte after the ICMPv6 header.
const NA_FLAG_OVERRIDE: u8 = 0x20;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Ethernet frame (42 bytes: 14 header + 28 ARP) of an RFC 5227 ARP announcement.
pub fn build_arp_announcement(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    arp_request(mac, ip, ip)
}

/// Ethernet frame of an RFC 5227 ARP probe: sender address 0.0.0.0, target `ip`.
pub fn build_arp_probe(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    arp_request(mac, Ipv4Addr::UNSPECIFIED, ip)
}

fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&sender.octets());
    // Target hardware address stays zero: RFC 5227 says it is ignored and should be zero.
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// If the Ethernet frame is an ARP packet that claims `ip`, the claimant's MAC (ARP sender
/// hardware address). RFC 5227 2.1.1 counts two things as claims: any ARP request or reply whose
/// sender address is `ip`, and another host's probe (sender 0.0.0.0) for `ip`. Our own probe
/// matches the second rule, so callers drop their own MAC. Never panics on short input.
pub fn parse_arp_conflict(frame: &[u8], ip: Ipv4Addr) -> Option<[u8; 6]> {
    let arp = frame.get(ETH_HDR..ETH_HDR + 28)?;
    if be16(frame, 12)? != ETHERTYPE_ARP
        || be16(arp, 0)? != 1
        || be16(arp, 2)? != 0x0800
        || arp[4] != 6
        || arp[5] != 4
    {
        return None;
    }
    let op = be16(arp, 6)?;
    let sha: [u8; 6] = arp[8..14].try_into().ok()?;
    let spa = Ipv4Addr::from(<[u8; 4]>::try_from(&arp[14..18]).ok()?);
    let tpa = Ipv4Addr::from(<[u8; 4]>::try_from(&arp[24..28]).ok()?);
    let claims = (op == ARP_REQUEST || op == ARP_REPLY) && !ip.is_unspecified() && spa == ip;
    let probes = op == ARP_REQUEST && spa.is_unspecified() && tpa == ip;
    (claims || probes).then_some(sha)
}

/// ICMPv6 message (32 bytes) of an unsolicited Neighbour Advertisement for `ip`: override set,
/// router and solicited clear, target link-layer address option = `mac`. The checksum is filled
/// in for source `ip` and destination ff02::1 (the kernel recomputes the same value on a raw
/// ICMPv6 socket, so it is also right when sent that way).
pub fn build_unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = ND_NEIGHBOR_ADVERT;
    m[4] = NA_FLAG_OVERRIDE;
    m[8..24].copy_from_slice(&ip.octets());
    m[24] = ND_OPT_TARGET_LL_ADDR;
    m[25] = 1; // option length in units of 8 bytes
    m[26..32].copy_from_slice(&mac);
    let sum = icmpv6_checksum(&ip, &ALL_NODES, &m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// ICMPv6 message (24 bytes) of the DAD Neighbour Solicitation for `ip`, checksummed for source
/// `::` and the solicited-node group of `ip`. It carries no source link-layer option: RFC 4861
/// forbids one when the source is unspecified.
pub fn build_dad_ns(ip: Ipv6Addr) -> [u8; 24] {
    let mut m = [0u8; 24];
    m[0] = ND_NEIGHBOR_SOLICIT;
    m[8..24].copy_from_slice(&ip.octets());
    let sum = icmpv6_checksum(&Ipv6Addr::UNSPECIFIED, &solicited_node(ip), &m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// Complete Ethernet frame (78 bytes: 14 + 40 IPv6 + 24 ICMPv6) of the DAD probe for `ip`.
pub fn build_dad_ns_frame(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 78] {
    let group = solicited_node(ip);
    let ns = build_dad_ns(ip);
    let mut f = [0u8; 78];
    f[0..6].copy_from_slice(&ipv6_multicast_mac(group));
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let h = &mut f[ETH_HDR..ETH_HDR + IPV6_HDR];
    h[0] = 0x60; // version 6, traffic class and flow label 0
    h[4..6].copy_from_slice(&(ns.len() as u16).to_be_bytes());
    h[6] = IPPROTO_ICMPV6;
    h[7] = ND_HOP_LIMIT;
    // Source address stays :: (bytes 8..24).
    h[24..40].copy_from_slice(&group.octets());
    f[ETH_HDR + IPV6_HDR..].copy_from_slice(&ns);
    f
}

/// If the Ethernet frame is an NDP message that claims `ip`, the claimant's MAC. RFC 4862 5.4
/// counts a Neighbour Advertisement for `ip` (MAC from its target link-layer option, else the
/// Ethernet source) and another host's DAD solicitation for `ip` (Ethernet source). Only valid
/// NDP counts (RFC 4861 7.1: hop limit 255, code 0, correct checksum); frames with extension
/// headers are ignored. Our own DAD probe matches, so callers drop their own MAC. Never panics.
pub fn parse_ndp_conflict(frame: &[u8], ip: Ipv6Addr) -> Option<[u8; 6]> {
    if be16(frame, 12)? != ETHERTYPE_IPV6 {
        return None;
    }
    let eth_src: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let h = frame.get(ETH_HDR..ETH_HDR + IPV6_HDR)?;
    if h[0] >> 4 != 6 || h[6] != IPPROTO_ICMPV6 || h[7] != ND_HOP_LIMIT {
        return None;
    }
    let len = usize::from(be16(h, 4)?);
    // Ethernet pads short frames, so the frame may be longer than the IPv6 payload, never shorter.
    let m = frame.get(ETH_HDR + IPV6_HDR..ETH_HDR + IPV6_HDR + len)?;
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&h[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&h[24..40]).ok()?);
    if m.len() < 24 || m[1] != 0 || icmpv6_checksum(&src, &dst, m) != 0 {
        return None;
    }
    if Ipv6Addr::from(<[u8; 16]>::try_from(&m[8..24]).ok()?) != ip {
        return None;
    }
    match m[0] {
        ND_NEIGHBOR_ADVERT => Some(target_ll_addr(&m[24..]).unwrap_or(eth_src)),
        ND_NEIGHBOR_SOLICIT if src.is_unspecified() => Some(eth_src),
        _ => None,
    }
}

/// The target link-layer address option among NDP options, if present and well formed.
fn target_ll_addr(mut opts: &[u8]) -> Option<[u8; 6]> {
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        // A zero length is invalid (RFC 4861 4.6) and would never advance.
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == ND_OPT_TARGET_LL_ADDR {
            return opts[2..8].try_into().ok();
        }
        opts = &opts[len..];
    }
    None
}

/// RFC 4443 2.3 checksum of an ICMPv6 message over the IPv6 pseudo-header. Computed over a
/// message whose checksum field is already filled in, it is 0 exactly when that field is right.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |lo| u64::from(*lo));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// RFC 4291 2.7.1: ff02::1:ffXX:XXXX from the low 24 bits of `ip`.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

/// RFC 2464 7: 33:33 followed by the low 32 bits of the group address.
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

// ---------------------------------------------------------------------------------------------
// Sockets.

/// An AF_PACKET SOCK_RAW socket bound to one protocol on one interface.
struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    fn open(ifindex: u32, ethertype: u16) -> io::Result<PacketSocket> {
        // Protocol 0 at socket() time: the socket hears nothing until bind, and binding it then
        // hooks just `ethertype` on one device (~16 us), where an ETH_P_ALL socket's bind
        // costs ~16 ms here.
        let fd =
            nix_socket::socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None)?;
        nix_socket::bind(fd.as_raw_fd(), &crate::sys::packet_address(ifindex, ethertype, None))?;
        Ok(PacketSocket { fd })
    }

    /// Sends a complete Ethernet frame out of the bound interface.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        nix_socket::send(self.fd.as_raw_fd(), frame, MsgFlags::empty())?;
        Ok(())
    }

    /// Receives one frame without blocking: `None` when nothing is queued, `Some(0)` for nothing
    /// worth parsing (our own transmissions, an interrupted call).
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut iov = [io::IoSliceMut::new(buf)];
        let received = nix_socket::recvmsg::<LinkAddr>(
            self.fd.as_raw_fd(),
            &mut iov,
            None,
            MsgFlags::MSG_DONTWAIT,
        );
        let message = match received {
            Ok(message) => message,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => return Ok(Some(0)),
            Err(e) => return Err(e.into()),
        };
        // Our own transmissions are looped back to packet sockets as PACKET_OUTGOING.
        let outgoing = message.address.is_some_and(|from| from.pkttype() == libc::PACKET_OUTGOING);
        Ok(Some(if outgoing { 0 } else { message.bytes }))
    }

    /// Sends `frame` now and again at half of `wait`, and returns the first answer `claim` finds
    /// among received frames before `wait` runs out. On error, says whether sending or receiving
    /// failed.
    fn probe(
        &self,
        frame: &[u8],
        wait: Duration,
        mut claim: impl FnMut(&[u8]) -> Option<[u8; 6]>,
    ) -> std::result::Result<Option<[u8; 6]>, (&'static str, io::Error)> {
        // Capped so that `Instant + wait` cannot overflow (and panic) on an absurd wait.
        let wait = wait.min(Duration::from_secs(86_400));
        let start = Instant::now();
        let deadline = start + wait;
        let mut resend = Some(start + wait / 2);
        self.send(frame).map_err(|e| ("send", e))?;
        // ARP and NDP fit easily; longer frames are truncated, which the parsers reject.
        let mut buf = [0u8; 1536];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if resend.is_some_and(|at| now >= at) {
                resend = None;
                self.send(frame).map_err(|e| ("send", e))?;
            }
            let until = resend.map_or(deadline, |at| at.min(deadline));
            if !poll_readable(&self.fd, until).map_err(|e| ("receive answers to", e))? {
                continue;
            }
            // Drain what is queued, but give up at the deadline even under a flood of frames.
            while Instant::now() < deadline {
                match self.recv(&mut buf).map_err(|e| ("receive answers to", e))? {
                    None => break,
                    Some(0) => {}
                    Some(n) => {
                        if let Some(mac) = claim(&buf[..n]) {
                            return Ok(Some(mac));
                        }
                    }
                }
            }
        }
    }
}

/// Waits until `fd` is readable or `until` passes; false on timeout or a signal.
fn poll_readable(fd: &OwnedFd, until: Instant) -> io::Result<bool> {
    let left = until.saturating_duration_since(Instant::now());
    // Round up: a 0 ms timeout for 0.4 ms left would spin until the deadline.
    let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, timeout) {
        // POLLERR (say, the link went down) also counts: the next recv reports the error.
        Ok(ready) => Ok(ready > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A raw ICMPv6 socket for sending NAs out of `ifindex` only.
fn open_nd_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let fd = nix_socket::socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::IcmpV6,
    )?;
    let options = socket2::SockRef::from(&fd);
    // Receivers drop NDP with any other hop limit (RFC 4861 7.1.2).
    options.set_multicast_hops_v6(255)?;
    options.set_unicast_hops_v6(255)?;
    options.set_multicast_if_v6(ifindex)?;
    // By index rather than name: the index is what the caller resolved and cannot be renamed
    // under us.
    options.bind_device_by_index_v6(NonZeroU32::new(ifindex))?;
    // The socket only sends; without a filter every ICMPv6 packet on the link would queue up on
    // it until close.
    crate::sys::block_all_icmpv6(fd.as_fd())?;
    Ok(fd)
}

/// Sends a NA to ff02::1 from `src` (which must be configured on `ifindex`); the kernel fills in
/// the checksum for raw ICMPv6 sockets.
fn send_na(fd: &OwnedFd, ifindex: u32, src: Ipv6Addr, na: &[u8]) -> io::Result<()> {
    let destination = SockaddrIn6::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
    // The source address rides on IPV6_PKTINFO so one socket serves every address.
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr { s6_addr: src.octets() },
        ipi6_ifindex: ifindex,
    };
    nix_socket::sendmsg(
        fd.as_raw_fd(),
        &[io::IoSlice::new(na)],
        &[ControlMessage::Ipv6PacketInfo(&info)],
        MsgFlags::empty(),
        Some(&destination),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors.

fn os_error(e: io::Error, message: String) -> Error {
    let kind = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => ErrorKind::Permission,
        Some(libc::ENODEV | libc::ENXIO) => ErrorKind::NotFound,
        _ => ErrorKind::Kernel,
    };
    Error::with_source(kind, message, e)
}

fn na_failure(e: io::Error, ip: Ipv6Addr, ifname: &str) -> (io::Error, String) {
    let mut message = format!("send unsolicited neighbour advertisement for {ip} on {ifname}");
    // The kernel refuses a source address that is not on the interface or still tentative.
    if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EADDRNOTAVAIL)) {
        message.push_str(&format!(
            " ({ip} must be configured on {ifname} and not tentative: add it with nodad)"
        ));
    }
    (e, message)
}

/// "eth1 (ifindex 7)" for error messages, or just "ifindex 7" when the index has no name (gone).
fn iface_label(ifindex: u32) -> String {
    match nix::net::if_::if_indextoname(ifindex) {
        Ok(name) => format!("{} (ifindex {ifindex})", name.to_string_lossy()),
        Err(_) => format!("ifindex {ifindex}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);
    const V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

    #[rustfmt::skip]
    const ARP_ANNOUNCEMENT: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06, // Ethernet
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,  // Ethernet/IPv4, request
        0x02, 0, 0, 0, 0, 0x01, 198, 18, 0, 50,    // sender
        0, 0, 0, 0, 0, 0, 198, 18, 0, 50,          // target
    ];

    // Checksum by hand: pseudo-header 2dc9 (src) + ff03 (dst) + 0020 (len) + 003a (next header),
    // message 8800 + 2000 + 2dc9 (target) + 0201 + 0200 + 0000 + 0001 = 0x206f1 -> 06f3 -> !f90c.
    #[rustfmt::skip]
    const NA: [u8; 32] = [
        136, 0, 0xf9, 0x0c, 0x20, 0, 0, 0,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        2, 1, 0x02, 0, 0, 0, 0, 0x01,
    ];

    // Checksum by hand: pseudo-header 0 (src) + ff02 + 0001 + ff00 + 0010 (dst) + 0018 + 003a,
    // message 8700 + 2dc9 = 0x2b32e -> b330 -> !4ccf.
    #[rustfmt::skip]
    const DAD_FRAME: [u8; 78] = [
        0x33, 0x33, 0xff, 0, 0, 0x10, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd,
        0x60, 0, 0, 0, 0, 24, 58, 255,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0, 0x10,
        135, 0, 0x4c, 0xcf, 0, 0, 0, 0,
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    #[test]
    fn arp_announcement_matches_rfc5227_layout() {
        assert_eq!(build_arp_announcement(MAC, V4), ARP_ANNOUNCEMENT);
    }

    #[test]
    fn arp_probe_has_unspecified_sender() {
        let mut want = ARP_ANNOUNCEMENT;
        want[28..32].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(build_arp_probe(MAC, V4), want);
    }

    #[test]
    fn unsolicited_na_matches_golden_bytes_and_checksum_verifies() {
        let na = build_unsolicited_na(MAC, V6);
        assert_eq!(na, NA);
        assert_eq!(icmpv6_checksum(&V6, &ALL_NODES, &na), 0);
        // A wrong pseudo-header must not verify.
        assert_ne!(icmpv6_checksum(&Ipv6Addr::LOCALHOST, &ALL_NODES, &na), 0);
    }

    #[test]
    fn dad_frame_matches_golden_bytes_and_checksum_verifies() {
        assert_eq!(build_dad_ns_frame(MAC, V6), DAD_FRAME);
        let group = solicited_node(V6);
        assert_eq!(group, "ff02::1:ff00:10".parse::<Ipv6Addr>().unwrap());
        assert_eq!(icmpv6_checksum(&Ipv6Addr::UNSPECIFIED, &group, &build_dad_ns(V6)), 0);
    }

    #[test]
    fn checksum_handles_odd_length_and_carries() {
        // One byte is padded with a zero byte on the right (RFC 1071).
        let odd = icmpv6_checksum(&Ipv6Addr::UNSPECIFIED, &Ipv6Addr::UNSPECIFIED, &[0xab]);
        let even = icmpv6_checksum(&Ipv6Addr::UNSPECIFIED, &Ipv6Addr::UNSPECIFIED, &[0xab, 0]);
        // Lengths differ (1 vs 2) in the pseudo-header, so the sums differ by exactly 1.
        assert_eq!(odd, even.wrapping_add(1));
        let ones = Ipv6Addr::from([0xff; 16]);
        for len in [0usize, 1, 31, 1000] {
            let mut m = vec![0xffu8; len.max(4)];
            m[2] = 0;
            m[3] = 0;
            let sum = icmpv6_checksum(&ones, &ones, &m);
            m[2..4].copy_from_slice(&sum.to_be_bytes());
            assert_eq!(icmpv6_checksum(&ones, &ones, &m), 0, "len {len}");
        }
    }

    #[test]
    fn multicast_mac_of_solicited_node_group() {
        let ip: Ipv6Addr = "fe80::1234:5678:9abc:def0".parse().unwrap();
        let group = solicited_node(ip);
        assert_eq!(group, "ff02::1:ffbc:def0".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ipv6_multicast_mac(group), [0x33, 0x33, 0xff, 0xbc, 0xde, 0xf0]);
    }

    fn arp_reply(from: [u8; 6], sender: Ipv4Addr, to: [u8; 6], target: Ipv4Addr) -> [u8; 42] {
        let mut f = arp_request(from, sender, target);
        f[0..6].copy_from_slice(&to);
        f[20..22].copy_from_slice(&ARP_REPLY.to_be_bytes());
        f[32..38].copy_from_slice(&to);
        f
    }

    #[test]
    fn arp_conflicts_per_rfc5227() {
        // The owner answers our probe (Linux replies with target 0.0.0.0).
        let reply = arp_reply(OTHER, V4, MAC, Ipv4Addr::UNSPECIFIED);
        assert_eq!(parse_arp_conflict(&reply, V4), Some(OTHER));
        // Any request from the owner claims it too.
        assert_eq!(parse_arp_conflict(&arp_request(OTHER, V4, V4), V4), Some(OTHER));
        // Another host probing for the same address at the same time.
        assert_eq!(parse_arp_conflict(&build_arp_probe(OTHER, V4), V4), Some(OTHER));
        // Our own probe looks the same; the caller drops its own MAC.
        assert_eq!(parse_arp_conflict(&build_arp_probe(MAC, V4), V4), Some(MAC));
        // Not about this address.
        let elsewhere = Ipv4Addr::new(198, 18, 0, 51);
        assert_eq!(parse_arp_conflict(&reply, elsewhere), None);
        // A host merely asking for the address is no claim.
        let asks = arp_request(OTHER, elsewhere, V4);
        assert_eq!(parse_arp_conflict(&asks, V4), None);
        // A reply with sender 0.0.0.0 does not claim 0.0.0.0.
        let zero = arp_reply(OTHER, Ipv4Addr::UNSPECIFIED, MAC, Ipv4Addr::UNSPECIFIED);
        assert_eq!(parse_arp_conflict(&zero, Ipv4Addr::UNSPECIFIED), None);
        // Ethernet padding to 60 bytes is fine.
        let mut padded = reply.to_vec();
        padded.resize(60, 0);
        assert_eq!(parse_arp_conflict(&padded, V4), Some(OTHER));
        // Wrong ethertype, opcode, or address sizes.
        for (at, value) in [(12, 0x08u8), (21, 3), (18, 8), (19, 16), (15, 6)] {
            let mut bad = reply;
            bad[at] = value;
            if at == 12 {
                bad[13] = 0x00;
            }
            assert_eq!(parse_arp_conflict(&bad, V4), None, "byte {at} = {value}");
        }
    }

    /// A NA as Linux sends it when defending `ip` against DAD: to ff02::1, override set.
    fn defending_na(from: [u8; 6], ip: Ipv6Addr, with_option: bool) -> Vec<u8> {
        let mut m = build_unsolicited_na(from, ip).to_vec();
        if !with_option {
            m.truncate(24);
        }
        m[2..4].copy_from_slice(&[0, 0]);
        let src: Ipv6Addr = "fe80::2".parse().unwrap();
        let sum = icmpv6_checksum(&src, &ALL_NODES, &m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        ipv6_frame(from, src, ALL_NODES, &m)
    }

    fn ipv6_frame(from: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&ipv6_multicast_mac(dst));
        f.extend_from_slice(&from);
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[IPPROTO_ICMPV6, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(icmp);
        f
    }

    #[test]
    fn ndp_conflicts_per_rfc4862() {
        let lladdr = [0x02, 0, 0, 0, 0, 0x99];
        // The MAC comes from the target link-layer option when there is one...
        let mut na = defending_na(OTHER, V6, true);
        na[ETH_HDR + IPV6_HDR + 26..ETH_HDR + IPV6_HDR + 32].copy_from_slice(&lladdr);
        let m = &mut na[ETH_HDR + IPV6_HDR..];
        m[2..4].copy_from_slice(&[0, 0]);
        let sum = icmpv6_checksum(&"fe80::2".parse().unwrap(), &ALL_NODES, m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(parse_ndp_conflict(&na, V6), Some(lladdr));
        // ...and from the Ethernet source otherwise.
        assert_eq!(parse_ndp_conflict(&defending_na(OTHER, V6, false), V6), Some(OTHER));
        // Another host's DAD for the same address.
        let mut dad = build_dad_ns_frame(OTHER, V6).to_vec();
        assert_eq!(parse_ndp_conflict(&dad, V6), Some(OTHER));
        dad.resize(90, 0); // Ethernet padding after the IPv6 payload
        assert_eq!(parse_ndp_conflict(&dad, V6), Some(OTHER));
        // Not about this address.
        assert_eq!(parse_ndp_conflict(&dad, "2001:db8::11".parse().unwrap()), None);
        // Our own unsolicited NA, sent through a raw socket, as seen on the wire.
        let ours = ipv6_frame(MAC, V6, ALL_NODES, &build_unsolicited_na(MAC, V6));
        assert_eq!(parse_ndp_conflict(&ours, V6), Some(MAC));
    }

    #[test]
    fn ndp_rejects_invalid_messages() {
        let good = defending_na(OTHER, V6, true);
        assert!(parse_ndp_conflict(&good, V6).is_some());
        let icmp = ETH_HDR + IPV6_HDR;
        let cases: [(usize, u8, &str); 6] = [
            (ETH_HDR + 7, 64, "hop limit below 255 (off-link)"),
            (ETH_HDR + 6, 0, "extension header"),
            (ETH_HDR, 0x40, "not IPv6"),
            (icmp + 1, 1, "nonzero code"),
            (icmp + 3, good[icmp + 3] ^ 1, "bad checksum"),
            (icmp, 137, "redirect"),
        ];
        for (at, value, why) in cases {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(parse_ndp_conflict(&bad, V6), None, "{why}");
        }
        // A solicitation from a real address is address resolution, not DAD.
        let ns = build_dad_ns(V6);
        let src: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let mut m = ns.to_vec();
        m[2..4].copy_from_slice(&[0, 0]);
        let sum = icmpv6_checksum(&src, &solicited_node(V6), &m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        let resolution = ipv6_frame(OTHER, src, solicited_node(V6), &m);
        assert_eq!(parse_ndp_conflict(&resolution, V6), None);
        // Payload length beyond the frame.
        let mut long = good.clone();
        long[ETH_HDR + 5] += 8;
        assert_eq!(parse_ndp_conflict(&long, V6), None);
    }

    #[test]
    fn options_with_zero_length_stop_parsing() {
        assert_eq!(target_ll_addr(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 1, 2, 3, 4, 5, 6]), None);
        assert_eq!(
            target_ll_addr(&[1, 1, 0, 0, 0, 0, 0, 0, 2, 1, 1, 2, 3, 4, 5, 6]),
            Some([1, 2, 3, 4, 5, 6])
        );
        assert_eq!(target_ll_addr(&[2, 2, 1, 2, 3, 4, 5, 6]), None);
        assert_eq!(target_ll_addr(&[2, 1, 1, 2, 3]), None);
    }

    #[test]
    fn parsers_never_panic_on_short_or_garbage_input() {
        let frames: [Vec<u8>; 4] = [
            ARP_ANNOUNCEMENT.to_vec(),
            DAD_FRAME.to_vec(),
            defending_na(OTHER, V6, true),
            arp_reply(OTHER, V4, MAC, V4).to_vec(),
        ];
        for frame in &frames {
            for len in 0..=frame.len() {
                let _ = parse_arp_conflict(&frame[..len], V4);
                let _ = parse_ndp_conflict(&frame[..len], V6);
                if len < frame.len() && frame[12] == 0x86 {
                    assert_eq!(parse_ndp_conflict(&frame[..len], V6), None, "len {len}");
                }
                if len < 42 {
                    assert_eq!(parse_arp_conflict(&frame[..len], V4), None, "len {len}");
                }
            }
        }
        // Pseudo-random garbage, with the ethertypes forced so the deeper checks run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000 {
            let mut buf = [0u8; 128];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let len = (x as usize >> 8) % buf.len();
            let f = &mut buf[..len];
            if f.len() > 22 {
                f[12..14].copy_from_slice(if round % 2 == 0 {
                    &[0x08, 0x06]
                } else {
                    &[0x86, 0xdd]
                });
                f[20] = 58;
                f[21] = 255;
            }
            // What is found must come from the frame itself, of the right kind.
            if let Some(owner) = parse_arp_conflict(f, V4) {
                assert_eq!(&f[12..14], &[0x08, 0x06], "round {round}: ARP from a non-ARP frame");
                assert_eq!(&f[22..28], &owner, "round {round}: the sender hardware address");
            }
            if let Some(owner) = parse_ndp_conflict(f, V6) {
                assert_eq!(&f[12..14], &[0x86, 0xdd], "round {round}: NDP from a non-IPv6 frame");
                assert!(f.windows(6).any(|w| w == owner), "round {round}: a MAC from nowhere");
            }
            if let Some(mac) = target_ll_addr(f) {
                assert!(f.windows(6).any(|w| w == mac), "round {round}: a MAC from nowhere");
            }
        }
    }
}
