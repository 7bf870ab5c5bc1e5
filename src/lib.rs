//! lanyard: put Docker containers and network namespaces directly on a real LAN.
//!
//! The library does the work; the `lanyard` binary is a thin front. Every entry point takes a
//! [`host::Host`], an explicit handle on the namespace lanyard treats as the host.
//!
//! Every `unsafe` block lives in [`sys`], each with the reason it is sound.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod announce;
pub mod attach;
pub mod cli;
pub mod cni;
pub mod config;
pub mod daemon;
pub mod declare;
pub mod detach;
pub mod dhcp;
pub mod dns;
pub mod docker;
pub mod driver;
pub mod error;
pub mod guest;
pub mod host;
pub mod host_interface;
pub mod host_routes;
pub mod inspect;
pub mod lease;
pub mod logging;
pub mod naming;
pub mod netlink;
pub mod netns;
pub mod plugin;
pub mod ready;
pub mod resolv;
pub mod route_cmd;
pub mod routes;
pub mod spec;
pub mod state;
pub mod sys;
pub mod sysctl;

pub use attach::{attach, AttachRequest, Attached, DhcpWait, FailPoint};
pub use detach::{detach, Detached};
pub use host::Host;
pub use inspect::inspect;
