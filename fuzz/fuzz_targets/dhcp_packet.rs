//! `cargo +nightly fuzz run dhcp_packet`: arbitrary bytes as a DHCP reply, in every client state.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lanyard_fuzz::dhcp_packet(data));
