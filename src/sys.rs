//! Every `unsafe` block of lanyard, each with the reason it is sound: the few system calls and
//! C structures that `nix` and `socket2` do not wrap. Everything else calls those crates'
//! safe APIs; a new unsafe block belongs here, behind a safe function that cannot be misused.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::socket::{LinkAddr, SockaddrLike};

/// A link-layer address for an AF_PACKET socket: `protocol` (an ethertype, host order) on
/// interface `ifindex`, and for sending, the `destination` MAC. nix can read these but has no
/// constructor for one.
pub fn packet_address(ifindex: u32, protocol: u16, destination: Option<[u8; 6]>) -> LinkAddr {
    let mut address = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::sa_family_t,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex as libc::c_int,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    if let Some(mac) = destination {
        address.sll_halen = 6;
        address.sll_addr[..6].copy_from_slice(&mac);
    }
    let length = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the pointer is to a live, initialised sockaddr_ll of exactly `length` bytes, whose
    // family is AF_PACKET: what from_raw reads (it copies the bytes out).
    unsafe { LinkAddr::from_raw((&address as *const libc::sockaddr_ll).cast(), Some(length)) }
        .expect("an AF_PACKET sockaddr_ll of its own size is a LinkAddr")
}

/// <linux/icmpv6.h> ICMP6_FILTER, not in the libc crate.
const ICMP6_FILTER: libc::c_int = 1;

/// Make a raw ICMPv6 socket receive nothing (an ICMP6_FILTER that blocks every type): a socket
/// that only sends would otherwise queue every ICMPv6 packet on the link until closed.
pub fn block_all_icmpv6(socket: BorrowedFd<'_>) -> io::Result<()> {
    // struct icmp6_filter: 256 bits, a set bit blocks that ICMPv6 type.
    let filter = [u32::MAX; 8];
    // SAFETY: `filter` is a live buffer of the size passed; the kernel only reads it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_ICMPV6,
            ICMP6_FILTER,
            filter.as_ptr().cast(),
            std::mem::size_of_val(&filter) as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for process `pid` (readable once it exits), or the error; nix has no pidfd_open.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open(2) takes a pid and flags by value and touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Start `command`'s child in a session of its own (setsid), so signals meant for the caller's
/// terminal or process group (a Ctrl-C, a test killing its group) never reach it.
pub fn start_in_new_session(command: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: setsid(2) is one, and nix's wrapper and the
    // Errno-to-io::Error conversion allocate nothing.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        })
    }
}

/// Take an exclusive flock(2) on `file`: waiting for it when `wait`, else `Ok(false)` at once
/// when someone else holds it. Released when the file is closed (or the process dies). Not
/// nix's `Flock`, whose drop panics if the explicit unlock fails.
pub fn lock_exclusive(file: &std::fs::File, wait: bool) -> io::Result<bool> {
    let operation = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: flock(2) takes a descriptor, open for the call since `file` is borrowed, and
    // flags by value; it touches no memory of ours.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if !wait && error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_addresses_carry_what_was_asked() {
        let address = packet_address(7, 0x0806, Some([0xff; 6]));
        assert_eq!(address.ifindex(), 7);
        assert_eq!(address.protocol(), 0x0806u16.to_be());
        assert_eq!((address.halen(), address.addr()), (6, Some([0xff; 6])));
        assert_eq!(address.len() as usize, std::mem::size_of::<libc::sockaddr_ll>());
        assert_eq!(packet_address(3, 0x0800, None).halen(), 0);
    }

    #[test]
    fn pidfd_of_this_process_and_of_no_process() {
        assert!(pidfd_open(std::process::id()).is_ok());
        assert!(pidfd_open(u32::MAX).is_err());
    }
}
