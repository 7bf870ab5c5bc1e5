//! Shared support for lanyard's integration tests: `lab` builds the network worlds (namespaces,
//! bridges, servers, captures), `docker` runs a private dockerd. Each test file says
//! `mod support;` and uses what it needs, so unused helpers are expected.
#![allow(dead_code, unused_imports)]

pub mod bind;
pub mod cli;
pub mod cni;
pub mod daemon;
pub mod dhcp;
pub mod docker;
pub mod lab;
pub mod monitor;
pub mod plugin;
pub mod watcher;

pub use lab::*;
