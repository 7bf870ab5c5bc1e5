//! The state directory against the real kernel and the real CLI: every guest has a record of its
//! own (names that lanyard 0.1 folded alike no longer share one), and a state directory written
//! by lanyard 0.1 (record format 1, unversioned leases, no index) keeps working after an upgrade.

mod support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::cli::{ok, run as cli, token};
use support::dhcp::Dnsmasq;
use support::lab::{self, wait_until, Lan, Netns, Server, TestDir};

/// The record files in the state directory.
fn records(dir: &TestDir) -> Vec<String> {
    let mut names: Vec<String> =
        lab::state_files(dir).into_iter().filter(|n| n.ends_with(".json")).collect();
    names.sort();
    names
}

/// What the index holds besides its stamp: `claim/record` for every entry.
fn index_entries(dir: &TestDir) -> Vec<String> {
    let index = dir.join("state/index");
    let mut entries = Vec::new();
    for claim in std::fs::read_dir(&index).into_iter().flatten().flatten() {
        let claim_name = claim.file_name().to_string_lossy().into_owned();
        if claim_name == "stamp" {
            continue;
        }
        entries.push(format!("{claim_name}/"));
        for entry in std::fs::read_dir(claim.path()).into_iter().flatten().flatten() {
            entries.push(format!("{claim_name}/{}", entry.file_name().to_string_lossy()));
        }
    }
    entries.sort();
    entries
}

fn bridge_ports(lan: &Lan) -> usize {
    lan.host.ip(&["-o", "link", "show", "master", "br0"]).lines().count()
}

#[test]
fn guests_whose_names_lanyard_0_1_folded_alike_are_attached_side_by_side() {
    let lan = Lan::bridge(70);
    let dir = TestDir::new("injective");
    // Both folded to the one file netns-ly-...-kc_1.eth1.json: the second attach tore the
    // first guest down as if it were a stale record of itself.
    let colon = Netns::new_verbatim("kc:1");
    let underscore = Netns::new_verbatim("kc_1");

    ok(cli(&lan.host, &dir, &["attach", "br0", &token(&colon), "198.18.70.2/24"]));
    ok(cli(&lan.host, &dir, &["attach", "br0", &token(&underscore), "198.18.70.3/24"]));
    assert_eq!(colon.ipv4_on("eth1"), Some(Ipv4Addr::new(198, 18, 70, 2)), "first guest intact");
    assert_eq!(underscore.ipv4_on("eth1"), Some(Ipv4Addr::new(198, 18, 70, 3)));
    assert_eq!(bridge_ports(&lan), 2);
    let names = records(&dir);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("-kc%3A1@eth1.json")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("-kc_1@eth1.json")), "{names:?}");
    for (guest, address) in [(&colon, "198.18.70.2"), (&underscore, "198.18.70.3")] {
        let view: serde_json::Value =
            serde_json::from_str(&ok(cli(&lan.host, &dir, &["inspect", &token(guest)]))).unwrap();
        assert_eq!(view["Container"], token(guest));
        assert_eq!(view["NetworkSettings"]["IPAddress"], address);
        assert_eq!(view["Lanyard"]["Interfaces"][0]["InSync"], true, "{view}");
    }
    // Attaching one again is refused as "already attached", never taken for the other.
    let again = cli(&lan.host, &dir, &["attach", "br0", &token(&colon), "198.18.70.4/24"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has eth1"));
    assert_eq!(underscore.ipv4_on("eth1"), Some(Ipv4Addr::new(198, 18, 70, 3)));

    // Detaching one leaves the other.
    ok(cli(&lan.host, &dir, &["detach", &token(&colon)]));
    assert_eq!(colon.ipv4_on("eth1"), None);
    assert_eq!(underscore.ipv4_on("eth1"), Some(Ipv4Addr::new(198, 18, 70, 3)));
    assert_eq!(bridge_ports(&lan), 1);
    assert_eq!(records(&dir).len(), 1);
    ok(cli(&lan.host, &dir, &["detach", &token(&underscore)]));
    assert_eq!(bridge_ports(&lan), 0);
    assert!(lab::state_files(&dir).is_empty(), "{:?}", lab::state_files(&dir));
    assert!(index_entries(&dir).is_empty(), "{:?}", index_entries(&dir));
}

/// lanyard 0.1's record file name: the guest's name with every character outside
/// `[A-Za-z0-9._-]` folded to `_`.
fn format_1_name(netns_name: &str, ifname: &str) -> String {
    let folded: String = netns_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    format!("netns-{folded}.{ifname}.json")
}

/// Rewrite the state directory as lanyard 0.1 left it: records in format 1 under their old
/// names, leases without a version under the same names, no index.
fn downgrade_to_format_1(state: &Path) {
    for entry in std::fs::read_dir(state).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        record["version"] = 1.into();
        let old_name = format_1_name(
            record["guest"]["name"].as_str().unwrap(),
            record["guest_ifname"].as_str().unwrap(),
        );
        std::fs::write(state.join(&old_name), serde_json::to_vec_pretty(&record).unwrap()).unwrap();
        std::fs::remove_file(entry.path()).unwrap();
        let lease = state.join("leases").join(&name);
        if lease.exists() {
            let mut stored: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&lease).unwrap()).unwrap();
            stored.as_object_mut().unwrap().remove("version");
            stored["record"] = old_name.clone().into();
            std::fs::write(state.join("leases").join(&old_name), stored.to_string()).unwrap();
            std::fs::remove_file(&lease).unwrap();
        }
    }
    std::fs::remove_dir_all(state.join("index")).unwrap();
}

/// Stops the daemon the test's attach started on demand (it runs in its own session).
struct StopDaemon(PathBuf);

impl StopDaemon {
    fn stop(&self) -> bool {
        let request = lanyard::daemon::control::Request::Ping;
        let Ok(Some(response)) =
            lanyard::daemon::control::try_request(&self.0, &request, Duration::from_secs(2))
        else {
            return false;
        };
        let Some(pid) = response.data["pid"].as_i64() else { return false };
        // SAFETY: kill(2) on the pid the daemon itself reported.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        wait_until(Duration::from_secs(5), || !Path::new(&format!("/proc/{pid}")).exists())
    }
}

impl Drop for StopDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_state_directory_of_lanyard_0_1_keeps_working_after_the_upgrade() {
    let lan = Lan::bridge(71);
    let dir = TestDir::new("upgrade");
    let daemon = StopDaemon(dir.join("state"));
    let dnsmasq = Dnsmasq::start(&lan.host, "br0", ("198.18.71.100", "198.18.71.200"), "2m", &[]);
    let leased = Netns::new_verbatim("up:1");
    let plain = lan.guest("plain");

    // Made with this lanyard, then turned into what lanyard 0.1 would have left.
    ok(cli(&lan.host, &dir, &["attach", "br0", &token(&leased), "dhcp"]));
    let ip = leased.ipv4_on("eth1").expect("leased address");
    ok(cli(&lan.host, &dir, &["attach", "br0", &token(&plain), "198.18.71.5/24"]));
    assert!(daemon.stop(), "the daemon was running");
    downgrade_to_format_1(&dir.join("state"));
    let old_leased = format_1_name(&leased.name, "eth1");
    let old_plain = format_1_name(&plain.name, "eth1");
    let mut expected = vec![old_leased.clone(), old_plain.clone()];
    expected.sort();
    assert_eq!(records(&dir), expected);

    // The upgraded daemon resumes the lease it finds under the old record name.
    let mut command = lan.host.command(env!("CARGO_BIN_EXE_lanyard"));
    command
        .args(["daemon"])
        .env("LANYARD_STATE_DIR", dir.join("state"))
        .env("LANYARD_HOST_ID", format!("test-{}", lab::run_id()))
        .stdin(Stdio::null());
    let _upgraded = Server::spawn(command, "lanyard-daemon");
    let mut leases = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            leases = String::from_utf8_lossy(&cli(&lan.host, &dir, &["leases"]).stdout).into();
            leases.contains(&ip.to_string())
        }),
        "the resumed lease is not listed: {leases:?}"
    );
    assert_eq!(leased.ipv4_on("eth1"), Some(ip));

    // inspect sees both old records, and the lease by the old name.
    let all: serde_json::Value =
        serde_json::from_str(&ok(cli(&lan.host, &dir, &["inspect", "--all"]))).unwrap();
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    let view: serde_json::Value =
        serde_json::from_str(&ok(cli(&lan.host, &dir, &["inspect", &token(&leased)]))).unwrap();
    assert_eq!(view["NetworkSettings"]["IPAddress"], ip.to_string(), "{view}");

    // A new guest whose name folds onto the old record's name gets a record of its own and
    // leaves the old one alone.
    let newcomer = Netns::new_verbatim("up_1");
    ok(cli(&lan.host, &dir, &["attach", "br0", &token(&newcomer), "198.18.71.6/24"]));
    assert_eq!(leased.ipv4_on("eth1"), Some(ip), "the old guest keeps its link and address");
    assert_eq!(records(&dir).len(), 3, "{:?}", records(&dir));
    assert!(records(&dir).contains(&old_leased));
    // Re-attaching an old guest's interface is refused as attached (its old record is found).
    let again = cli(&lan.host, &dir, &["attach", "br0", &token(&plain), "198.18.71.7/24"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has eth1"), "{again:?}");

    // Detach through the old names: the lease is released and both files go.
    ok(cli(&lan.host, &dir, &["detach", &token(&leased)]));
    dnsmasq.expect_release("br0", ip, Duration::from_secs(2));
    assert!(!dir.join("state/leases").join(&old_leased).exists());
    assert_eq!(newcomer.ipv4_on("eth1"), Some(Ipv4Addr::new(198, 18, 71, 6)));
    ok(cli(&lan.host, &dir, &["detach", &token(&plain)]));
    ok(cli(&lan.host, &dir, &["detach", &token(&newcomer)]));
    assert_eq!(bridge_ports(&lan), 0);
    assert!(
        lab::state_files(&dir).iter().all(|n| !n.ends_with(".json")),
        "{:?}",
        lab::state_files(&dir)
    );
    assert!(index_entries(&dir).is_empty(), "{:?}", index_entries(&dir));
}

fn library_host(lan: &Lan, dir: &TestDir) -> lanyard::Host {
    let handle = lanyard::netns::Netns::open(&lan.host.path).expect("open host namespace");
    lanyard::Host::new(handle, &dir.join("state"), format!("test-{}", lab::run_id())).expect("host")
}

fn attach_static(host: &lanyard::Host, guest: &Netns, address: &str) -> lanyard::state::Record {
    let mut request =
        lanyard::AttachRequest::new("br0", lanyard::guest::GuestSpec::Netns(guest.name.clone()));
    request.addresses = vec![lanyard::spec::parse_address(address).unwrap()];
    lanyard::attach(host, &request).unwrap().record
}

/// A MAC or host name held by any record is not handed out again, even when its link is gone,
/// whether the index was kept by lanyard, lost, or the record was written or removed by hand.
#[test]
fn names_and_macs_held_by_records_stay_taken_whatever_happened_to_the_index() {
    let lan = Lan::bridge(72);
    let dir = TestDir::new("index");
    let host = library_host(&lan, &dir);
    let holder = lan.guest("holder");
    let guest = lan.guest("g");
    let identity = format!("netns:{}", guest.name);
    let mac = |counter| lanyard::naming::stable_mac(&host.host_id, &identity, "eth1", counter);
    let ifname = |counter| lanyard::naming::host_ifname(&host.host_id, &identity, "eth1", counter);

    // A record claims the MAC and host name `guest` would get first; no link carries them.
    let mut held = attach_static(&host, &holder, "198.18.72.2/24");
    held.mac = mac(0);
    held.host_ifname = Some(ifname(0));
    host.state.save(&held).unwrap();
    let held_path = dir.join("state").join(held.file_name());
    let held_text = std::fs::read(&held_path).unwrap();

    let check = |expected_counter: u32, what: &str| {
        let record = attach_static(&host, &guest, "198.18.72.3/24");
        assert_eq!(
            (record.mac, record.host_ifname.clone()),
            (mac(expected_counter), Some(ifname(expected_counter))),
            "{what}"
        );
        lanyard::detach(&host, &format!("netns:{}", guest.name), None).unwrap();
    };
    check(1, "record saved by lanyard");
    std::fs::remove_dir_all(dir.join("state/index")).unwrap();
    check(1, "index lost");
    std::fs::remove_file(&held_path).unwrap();
    check(0, "record removed by hand");
    std::fs::write(&held_path, &held_text).unwrap();
    check(1, "record written back by hand");
    host.state.remove(&held).unwrap();
    check(0, "record removed by lanyard");
    assert!(index_entries(&dir).is_empty(), "{:?}", index_entries(&dir));
}
