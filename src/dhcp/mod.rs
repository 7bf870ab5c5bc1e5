//! lanyard's DHCPv4 client (RFC 2131) as a sans-IO state machine.
//!
//! [`Client`] does no I/O, reads no clock and starts no thread: the daemon hands it events
//! (a received packet, a timer, a link change, an ARP probe result) with the current [`Now`] and
//! carries out the [`Action`]s it returns (send a packet, configure or remove an address, probe
//! an address). That is what lets one event loop hold a thousand leases: each client is a small
//! struct, timers are one deadline per client ([`Client::next_deadline`]), and every transition
//! is testable in virtual time.
//!
//! Why not mozim (nispor/mozim, the closest Rust client, whose one-file-per-phase layout with the
//! RFC beside the code this module follows): its `DhcpV4Client` owns its raw and UDP sockets and
//! waits on tokio timers inside `run().await` (the renew loop sleeps in
//! `tokio::time::timeout`/`sleep`), so each lease is a future with its own sockets and its own
//! clock. The daemon here needs the socket opened once inside the guest's namespace and kept, one
//! timer structure for all leases, virtual time in tests, and leases persisted in wall-clock
//! time across restarts, none of which fit a client that does its own I/O. mozim also keeps the
//! RFC's 60 s retransmission floor, which leaves a lease of a few seconds one REQUEST per state.
//!
//! Layout: [`client`] the states and transitions, [`lease`] the persisted lease, `packet` the
//! wire format (building with `dhcproto`, a strict parser for replies), `options` the RFC 3442
//! and RFC 3397 decoders.

pub mod client;
pub mod lease;
mod options;
mod packet;

#[cfg(test)]
mod tests;

pub use client::{
    Action, Client, ClientConfig, Destination, Event, LossReason, Now, State, DECLINE_WAIT,
    PROBE_TIMEOUT, REBOOT_WAIT, REQUEST_TRANSMISSIONS,
};
pub use lease::{Lease, Timers, INFINITE_LEASE, MAX_LEASE_SECS, MIN_LEASE_SECS};
pub use options::Route;
// A DNS name lanyard sends or registers (option 81, `[dns_update]` zone): one rule for both.
pub(crate) use options::valid_domain;
