//! What the state lock is for (README, State: "concurrent attaches cannot corrupt records or pick
//! the same name or MAC"), tested with separate `lanyard` processes, as users and scripts run
//! them: the same guest and interface attached several times at once, attach racing the detach
//! that removes a bridge lanyard created, and many processes forced onto colliding host names
//! and MACs. LANs 206..209.

mod support;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use support::cli::{self, ok, record_and_lease_files, text};
use support::lab::{wait_until, Lan, Netns, TestDir};

fn token(guest: &Netns) -> String {
    format!("netns:{}", guest.name)
}

/// Starts every command at once (all spawned before any is waited for) and collects the
/// outputs in the same order.
fn all_at_once(lan: &Lan, dir: &TestDir, commands: &[Vec<String>]) -> Vec<Output> {
    let children: Vec<_> = commands.iter().map(|args| spawn_args(lan, dir, args)).collect();
    children.into_iter().map(|c| c.wait_with_output().expect("wait for lanyard")).collect()
}

fn spawn_args(lan: &Lan, dir: &TestDir, args: &[String]) -> std::process::Child {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli::spawn(&lan.host, dir, &args)
}

/// The parsed records in `dir/state`.
fn records(dir: &TestDir) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir.join("state")) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("parse"))
        .collect()
}

/// `"NAME MAC"` of every port of `bridge` in the host namespace (`ip -j link show master`).
fn ports(lan: &Lan, bridge: &str) -> Vec<String> {
    if !lan.host.links().iter().any(|l| l == bridge) {
        return Vec::new();
    }
    let json = lan.host.ip_json(&["link", "show", "master", bridge]);
    json.as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    format!(
                        "{} {}",
                        p["ifname"].as_str().unwrap_or("?"),
                        p["address"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The MAC of `ifname` in `guest`, `None` when it has no such link.
fn guest_mac(guest: &Netns, ifname: &str) -> Option<String> {
    let json = guest.ip_json(&["link", "show"]);
    json.as_array()?
        .iter()
        .find(|l| l["ifname"] == ifname)
        .and_then(|l| l["address"].as_str().map(str::to_string))
}

/// Every record matches the kernel: its host end exists and is a port of its bridge, its guest
/// has the interface with the recorded MAC. Host ends and MACs are pairwise distinct.
fn assert_records_match_the_kernel(lan: &Lan, guests: &[Netns], dir: &TestDir) {
    let records = records(dir);
    let mut names = BTreeSet::new();
    let mut macs = BTreeSet::new();
    for record in &records {
        let host_end = record["host_ifname"].as_str().expect("a bridge record has a host end");
        let bridge = record["host_interface"].as_str().unwrap();
        assert!(
            ports(lan, bridge).iter().any(|p| p.starts_with(&format!("{host_end} "))),
            "recorded host end {host_end} is a port of {bridge}: {:?}",
            ports(lan, bridge)
        );
        let name = record["guest"]["name"].as_str().unwrap();
        let guest = guests.iter().find(|g| g.name == name).expect("recorded guest exists");
        let ifname = record["guest_ifname"].as_str().unwrap();
        let mac = record["mac"].as_str().unwrap().to_ascii_lowercase();
        assert_eq!(guest_mac(guest, ifname).as_deref(), Some(mac.as_str()), "{record}");
        assert!(names.insert(host_end.to_string()), "host end {host_end} recorded twice");
        assert!(macs.insert(mac.clone()), "MAC {mac} recorded twice: {records:?}");
    }
}

#[test]
fn separate_processes_attaching_the_same_guest_and_interface_one_wins_the_rest_are_refused() {
    let lan = Lan::bridge(206);
    let dir = TestDir::new("race-same");
    let g = lan.guest("g");
    let guests = [g];
    let ports_before = ports(&lan, "br0");
    for round in 0..3 {
        let commands: Vec<Vec<String>> = (0..6)
            .map(|i| {
                ["attach", "br0", &token(&guests[0]), &format!("198.18.206.{}/24", 10 + i)]
                    .map(String::from)
                    .to_vec()
            })
            .collect();
        let outs = all_at_once(&lan, &dir, &commands);
        let winners: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one attach wins: {outs:#?}");
        for loser in outs.iter().filter(|o| !o.status.success()) {
            let stderr = String::from_utf8_lossy(&loser.stderr);
            assert_eq!(loser.status.code(), Some(1), "round {round}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "round {round}: one line: {stderr}");
            assert!(
                stderr.contains("already has eth1 from lanyard: detach it first"),
                "round {round}: a clear conflict, not a kernel error: {stderr}"
            );
        }
        assert_eq!(records(&dir).len(), 1, "round {round}: one record");
        assert_eq!(ports(&lan, "br0").len(), ports_before.len() + 1, "round {round}: one link");
        assert_records_match_the_kernel(&lan, &guests, &dir);
        ok(cli::run(&lan.host, &dir, &["detach", &token(&guests[0])]));
        assert_eq!(ports(&lan, "br0"), ports_before);
    }
}

#[test]
fn attach_racing_the_detach_that_removes_a_created_bridge_leaves_a_consistent_survivor() {
    let lan = Lan::bridge(207);
    let dir = TestDir::new("race-bridge");
    let (a, b) = (lan.guest("a"), lan.guest("b"));
    let host_before = lan.host.snapshot();
    let guests = [a, b];
    let (mut b_won, mut b_lost) = (0, 0);
    // Each command takes a few milliseconds, so which one reaches the lock first depends on
    // when it starts: sweep the second start across that window, both ways round (a deliberate
    // offset, not a wait for anything).
    let offsets_ms: Vec<i64> = (-8..=8).map(|k| k * 2).collect();
    for (round, offset) in offsets_ms.iter().copied().enumerate() {
        ok(cli::run(
            &lan.host,
            &dir,
            &["attach", "brrace", &token(&guests[0]), "198.18.207.10/24"],
        ));
        let detach_a = ["detach", &token(&guests[0])].map(String::from).to_vec();
        let attach_b =
            ["attach", "brrace", &token(&guests[1]), "198.18.207.11/24"].map(String::from).to_vec();
        let (first, second) =
            if offset >= 0 { (&detach_a, &attach_b) } else { (&attach_b, &detach_a) };
        let first_child = spawn_args(&lan, &dir, first);
        std::thread::sleep(Duration::from_millis(offset.unsigned_abs()));
        let second_child = spawn_args(&lan, &dir, second);
        let (first_out, second_out) = (
            first_child.wait_with_output().expect("wait"),
            second_child.wait_with_output().expect("wait"),
        );
        let outs = if offset >= 0 { [first_out, second_out] } else { [second_out, first_out] };
        assert!(outs[0].status.success(), "round {round}: detach of a: {}", text(&outs[0]));
        let left = records(&dir);
        if outs[1].status.success() {
            b_won += 1;
            // b's attach survived: its link is a port of a bridge that exists, and its record
            // is the only one. Whether the bridge counts as b's creation depends on who went
            // first; either way b's detach must leave nothing.
            assert_eq!(left.len(), 1, "round {round}: {left:?}");
            assert_eq!(left[0]["guest"]["name"], guests[1].name.as_str());
            assert_records_match_the_kernel(&lan, &guests, &dir);
            ok(cli::run(&lan.host, &dir, &["detach", &token(&guests[1])]));
        } else {
            b_lost += 1;
            let stderr = String::from_utf8_lossy(&outs[1].stderr);
            assert_eq!(stderr.trim().lines().count(), 1, "round {round}: one line: {stderr}");
            assert!(left.is_empty(), "round {round}: a refused attach leaves no record: {left:?}");
            assert!(guest_mac(&guests[1], "eth1").is_none(), "round {round}: nor a link");
        }
        assert!(record_and_lease_files(&dir).is_empty(), "round {round}");
        assert_eq!(lan.host.snapshot(), host_before, "round {round}: no bridge or port left");
    }
    eprintln!("b's attach won {b_won} of {} rounds, was refused in {b_lost}", offsets_ms.len());
}

#[test]
fn many_processes_given_one_host_side_name_get_it_once_and_clean_refusals() {
    let lan = Lan::bridge(208);
    let dir = TestDir::new("race-name");
    let guests: Vec<Netns> = (0..6).map(|i| lan.guest(&format!("n{i}"))).collect();
    let ports_before = ports(&lan, "br0");
    let commands: Vec<Vec<String>> = guests
        .iter()
        .enumerate()
        .map(|(i, g)| {
            ["attach", "br0", &token(g), &format!("198.18.208.{}/24", 10 + i), "-l", "vethsame"]
                .map(String::from)
                .to_vec()
        })
        .collect();
    let outs = all_at_once(&lan, &dir, &commands);
    let won: Vec<usize> = (0..outs.len()).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one process gets the name: {outs:#?}");
    for (i, out) in outs.iter().enumerate().filter(|(i, _)| *i != won[0]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("host interface name vethsame is taken: pick another with -l"),
            "a clear refusal naming the taken name, not a kernel error: {stderr}"
        );
        assert!(guest_mac(&guests[i], "eth1").is_none(), "a refused guest has no link");
    }
    assert_eq!(records(&dir).len(), 1);
    assert_eq!(ports(&lan, "br0").len(), ports_before.len() + 1);
    assert_records_match_the_kernel(&lan, &guests, &dir);
}

#[test]
fn processes_forced_onto_anothers_derived_host_name_end_with_distinct_names() {
    forced_onto_guest_zeros_derived_values(209, Forced::HostName);
}

/// What the other guests ask for with their own option.
#[derive(Clone, Copy, Debug)]
pub enum Forced {
    /// `-l NAME`: guest 0's derived host-side name.
    HostName,
    /// `--mac MAC`: guest 0's derived MAC.
    Mac,
}

/// Guest 0 attaches with derived values while five other guests, in separate processes at the
/// same moment, ask explicitly for guest 0's derived host name or MAC. Whoever wins, the end
/// state has every name and MAC once, and each refusal is one clear line.
pub fn forced_onto_guest_zeros_derived_values(lan_index: u8, forced: Forced) {
    let lan = Lan::bridge(lan_index);
    let dir = TestDir::new("race-derived");
    let guests: Vec<Netns> = (0..6).map(|i| lan.guest(&format!("d{i}"))).collect();
    // Guest 0's derived host name and MAC (stable per host id, guest and interface): learn them
    // once, then let five other guests ask for exactly those while guest 0 attaches again.
    ok(cli::run(&lan.host, &dir, &["attach", "br0", &token(&guests[0]), "none"]));
    let first = records(&dir).pop().expect("a record");
    let derived_name = first["host_ifname"].as_str().unwrap().to_string();
    let derived_mac = first["mac"].as_str().unwrap().to_string();
    ok(cli::run(&lan.host, &dir, &["detach", &token(&guests[0])]));
    let (option, value) = match forced {
        Forced::HostName => ("-l", &derived_name),
        Forced::Mac => ("--mac", &derived_mac),
    };

    for round in 0..3 {
        let mut commands: Vec<Vec<String>> =
            vec![["attach", "br0", &token(&guests[0]), "none"].map(String::from).to_vec()];
        for g in guests.iter().skip(1) {
            commands.push(
                ["attach", "br0", &token(g), "none", option, value].map(String::from).to_vec(),
            );
        }
        let outs = all_at_once(&lan, &dir, &commands);
        for (i, out) in outs.iter().enumerate() {
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(stderr.trim().lines().count(), 1, "round {round}, guest {i}: {stderr}");
                assert!(
                    stderr.contains(value.as_str()),
                    "round {round}, guest {i}: the refusal names what was taken: {stderr}"
                );
                assert!(guest_mac(&guests[i], "eth1").is_none(), "round {round}, guest {i}");
            }
        }
        assert!(
            outs[0].status.success(),
            "round {round}: derived values give way: {}",
            text(&outs[0])
        );
        // Every MAC on the LAN once, every name once, and the records say what the kernel has.
        assert_records_match_the_kernel(&lan, &guests, &dir);
        let macs: Vec<String> = guests.iter().filter_map(|g| guest_mac(g, "eth1")).collect();
        let distinct: BTreeSet<&String> = macs.iter().collect();
        assert_eq!(distinct.len(), macs.len(), "round {round}: duplicate guest MACs {macs:?}");
        for g in &guests {
            ok(cli::run(&lan.host, &dir, &["detach", &token(g)]));
        }
        assert!(
            wait_until(Duration::from_secs(2), || ports(&lan, "br0").is_empty()),
            "round {round}: {:?}",
            ports(&lan, "br0")
        );
    }
}

#[test]
fn processes_forced_onto_anothers_derived_mac_end_with_distinct_macs_or_refusals() {
    forced_onto_guest_zeros_derived_values(218, Forced::Mac);
}
