//! Many labelled containers started at once: the daemon's wirer gets their start events in a
//! burst, every one must end up wired on an address of its own with exactly one host link, and
//! when they are all removed at once nothing may be left. No timing thresholds here: the
//! targets belong to `cargo bench --bench wiring`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::docker::DockerLab;
use support::lab::{self, wait_until, Lan, TestDir};
use support::watcher::{
    create_many, daemon_log, daemon_status, ipv4_of, ports_of, remove_many, start_many,
    wired_count, write_config, WatchingDaemon,
};

/// Half static, half DHCP. The whole test takes ~10 s on this loaded 2-core VM.
const CONTAINERS: usize = 40;
/// `docker create` / `docker start` at once (dockerd serialises much of it anyway).
const THREADS: usize = 8;
const ALL_WIRED_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn forty_labelled_containers_started_at_once_are_all_wired_and_all_cleaned() {
    lab::require_root();
    let lan = Lan::bridge(103);
    let dir = TestDir::new("scale");
    let docker = DockerLab::start();
    let _dnsmasq = support::dhcp::Dnsmasq::start(
        &lan.host,
        "br0",
        ("198.18.103.100", "198.18.103.250"),
        "2m",
        &["--no-ping"],
    );
    let host_before = lan.host.snapshot();
    let config = write_config(&dir, "allowed_host_interfaces = [\"br0\"]\n");
    let _daemon = WatchingDaemon::start(&lan.host, &dir, &docker, &config);

    let static_address = |i: usize| format!("198.18.103.{}/24", 10 + i);
    let containers: Vec<(String, Vec<String>)> = (0..CONTAINERS)
        .map(|i| {
            let label = if i % 2 == 0 {
                format!("lanyard.net=br0 {}", static_address(i))
            } else {
                "lanyard.net=br0 dhcp".to_string()
            };
            (format!("c{i:02}"), vec!["--net".into(), "none".into(), "--label".into(), label])
        })
        .collect();
    // Created first, then started together: the start events come in a burst.
    let ids = create_many(&docker, &containers, THREADS);
    start_many(&docker, &ids, THREADS);

    let mut wired = 0;
    let all_wired = wait_until(ALL_WIRED_WITHIN, || {
        wired = daemon_status(&dir).map_or(0, |status| wired_count(&status, &ids));
        wired == CONTAINERS
    });
    assert!(all_wired, "{wired} of {CONTAINERS} wired; log:\n{}", daemon_log(&dir));

    // Every one on an address of its own (the static ones on theirs), one host link each.
    let addresses: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = containers
            .iter()
            .map(|(name, _)| scope.spawn(|| ipv4_of(&docker, name, "eth1")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap_or_default()).collect()
    });
    for (i, address) in addresses.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(address, &static_address(i), "c{i:02}");
        } else {
            assert!(address.starts_with("198.18.103."), "c{i:02} leased {address:?}");
        }
    }
    let distinct: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(distinct.len(), CONTAINERS, "addresses: {addresses:?}");
    assert_eq!(ports_of(&lan.host, "br0"), CONTAINERS, "one host link per container");
    assert_eq!(support::cli::record_and_lease_files(&dir).len(), CONTAINERS + CONTAINERS / 2);
    // The daemon's own event-to-wired figures are in its status, one per started container.
    let status = daemon_status(&dir).expect("the daemon answers");
    let latencies = status["Docker"]["wire_latencies_ms"].as_array().map_or(0, Vec::len);
    assert_eq!(latencies, CONTAINERS, "{}", status["Docker"]);

    // All removed at once: no record, no lease, no host link left.
    let names: Vec<&str> = containers.iter().map(|(name, _)| name.as_str()).collect();
    remove_many(&docker, &names, 4);
    let clean = wait_until(ALL_WIRED_WITHIN, || {
        support::cli::record_and_lease_files(&dir).is_empty() && lan.host.snapshot() == host_before
    });
    assert!(
        clean,
        "records left: {:?}; {} host links on br0; log:\n{}",
        support::cli::record_and_lease_files(&dir),
        ports_of(&lan.host, "br0"),
        daemon_log(&dir)
    );
}
