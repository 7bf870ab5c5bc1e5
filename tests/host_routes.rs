//! Host routes to macvlan guests (`--host-route`, `lanyard::host_routes`): the host cannot
//! reach its own macvlan guests through their parent; a macvlan shim on the same parent and a
//! /32 (/128) route per guest address `dev shim src <the host's address>` make it. Each test
//! runs in the lab's macvlan world (LANs 141..149): a "host" namespace owning the uplink, its
//! peer on a bridge in a "lan" namespace; the host's own address on the uplink is 198.18.N.2.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use lanyard::error::ErrorKind;
use lanyard::guest::GuestSpec;
use lanyard::host_routes::{self, ROUTE_PROTOCOL};
use lanyard::netns::Netns as NsHandle;
use lanyard::spec::parse_address;
use lanyard::{AttachRequest, FailPoint, Host};
use support::cli::{self, text, token};
use support::lab::{self, Lan, MacvlanLan, Netns, TestDir};

fn host_for(ns: &Netns, dir: &TestDir) -> Host {
    lab::require_root();
    let handle = NsHandle::open(&ns.path).expect("open host namespace");
    Host::new(handle, &dir.join("state"), format!("test-{}", lab::run_id())).expect("host")
}

fn request(host_if: &str, guest: &Netns, addresses: &[&str], host_route: bool) -> AttachRequest {
    let mut request = AttachRequest::new(host_if, GuestSpec::Netns(guest.name.clone()));
    request.addresses = addresses.iter().map(|a| parse_address(a).expect("address")).collect();
    request.host_route = host_route;
    request
}

/// The macvlan world with the host's own addresses on the uplink: 198.18.N.2/24 and
/// 2001:db8:N::2/64.
fn lan_with_host_address(index: u8) -> MacvlanLan {
    let lan = Lan::with_uplink(index);
    lan.host.ip_batch(&format!(
        "addr add 198.18.{index}.2/24 dev uplink0\naddr add 2001:db8:{index}::2/64 dev uplink0 nodad"
    ));
    // Settled before a test takes its "before" picture: the port forwards, and the kernel has
    // made the IPv6 address's local route (it does once the uplink has carrier).
    assert!(lan.wait_forwarding(Duration::from_secs(3)), "lanport0 forwards");
    let local6 = format!("local 2001:db8:{index}::2 ");
    assert!(
        lab::wait_until(Duration::from_secs(3), || lan
            .host
            .routes()
            .iter()
            .any(|r| r.starts_with(&local6))),
        "the host's IPv6 address is in place"
    );
    lan
}

/// Whether `to` answers a ping from `from`: up to three single pings of at most 2 s each (a
/// first echo may be lost while a neighbour entry resolves).
fn reaches(from: &Netns, to: &str) -> bool {
    (0..3).any(|_| from.exec(&["ping", "-c", "1", "-W", "2", to]).status.success())
}

/// One ping of at most 1 s: for "cannot reach", where waiting longer proves nothing more.
fn answers_once(from: &Netns, to: &str) -> bool {
    from.exec(&["ping", "-c", "1", "-W", "1", to]).status.success()
}

/// The shim's name: "lyh" and the uplink's ifindex.
fn shim_of(lan: &MacvlanLan) -> String {
    let link = lan.host.ip_json(&["link", "show", "uplink0"]);
    format!("lyh{}", link[0]["ifindex"].as_u64().expect("ifindex"))
}

/// lanyard's host routes in the host namespace, both families, as `ip` prints them.
fn lanyard_routes(ns: &Netns) -> Vec<String> {
    let proto = ROUTE_PROTOCOL.to_string();
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        let out = ns.ip(&[family, "route", "show", "proto", &proto]);
        routes.extend(out.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
    }
    routes.sort();
    routes
}

/// The state directory's files but its locks and index (the host-route lock file stays once
/// made, as the state lock does).
fn state_files(dir: &TestDir) -> Vec<String> {
    let mut files = lab::state_files(dir);
    files.retain(|f| f != host_routes::LOCK_FILE);
    files
}

#[test]
fn the_host_reaches_its_macvlan_guests_through_one_shim_until_the_last_one_leaves() {
    let lan = lan_with_host_address(141);
    let dir = TestDir::new("hostroute");
    let host = host_for(&lan.host, &dir);
    let (a, b) = (lan.guest("a"), lan.guest("b"));
    let host_before = lan.host.snapshot();
    let shim = shim_of(&lan);
    assert!(lan.wait_forwarding(Duration::from_secs(3)));

    // Before: a macvlan guest is on the LAN, but the host cannot reach it through the parent.
    lanyard::attach(&host, &request("uplink0", &a, &["198.18.141.60/24"], false)).unwrap();
    assert!(reaches(&a, "198.18.141.1"), "the guest reaches the LAN's gateway");
    assert!(!answers_once(&lan.host, "198.18.141.60"), "the host reaches its macvlan guest");
    lanyard::detach(&host, &token(&a), None).unwrap();

    // After: with host routes, it can, both families.
    let attached = lanyard::attach(
        &host,
        &request("uplink0", &a, &["198.18.141.60/24", "2001:db8:141::60/64"], true),
    )
    .unwrap();
    assert!(attached.record.host_route);
    assert!(reaches(&lan.host, "198.18.141.60"), "the host reaches a over IPv4");
    assert!(reaches(&lan.host, "2001:db8:141::60"), "the host reaches a over IPv6");
    assert_eq!(
        lanyard_routes(&lan.host),
        [
            format!("198.18.141.60 dev {shim} scope link src 198.18.141.2"),
            format!("2001:db8:141::60 dev {shim} src 2001:db8:141::2 metric 1024 pref medium"),
        ]
    );
    let details = lan.host.ip(&["-d", "link", "show", &shim]);
    assert!(details.contains(&format!("{shim}@uplink0")), "{details}");
    assert!(details.contains("macvlan mode bridge"), "{details}");
    assert!(
        !lan.host.snapshot().addresses.iter().any(|a| a.starts_with(&shim)),
        "the shim has no address of its own: {:?}",
        lan.host.snapshot().addresses
    );

    // A second guest shares the shim.
    lanyard::attach(&host, &request("uplink0", &b, &["198.18.141.61/24"], true)).unwrap();
    assert_eq!(lan.host.links().iter().filter(|l| l.starts_with("lyh")).count(), 1);
    assert!(reaches(&lan.host, "198.18.141.61"), "the host reaches b");
    assert_eq!(lanyard_routes(&lan.host).len(), 3, "{:?}", lanyard_routes(&lan.host));

    // Detaching a takes its routes and keeps the shim for b.
    lanyard::detach(&host, &token(&a), None).unwrap();
    assert_eq!(
        lanyard_routes(&lan.host),
        [format!("198.18.141.61 dev {shim} scope link src 198.18.141.2")]
    );
    assert!(lan.host.links().contains(&shim));
    assert!(reaches(&lan.host, "198.18.141.61"), "the host still reaches b");

    // The last one takes the shim too: the host is as it was.
    lanyard::detach(&host, &token(&b), None).unwrap();
    assert!(lanyard_routes(&lan.host).is_empty(), "{:?}", lanyard_routes(&lan.host));
    assert_eq!(lan.host.snapshot(), host_before, "no shim, no route left");
}

#[test]
fn host_routes_are_refused_without_a_host_address_in_the_subnet_and_nothing_is_left() {
    let lan = Lan::with_uplink(142);
    let dir = TestDir::new("hostroute-refused");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    // An address of the host's on the parent, but in another subnet.
    lan.host.ip(&["addr", "add", "198.18.99.2/24", "dev", "uplink0"]);
    let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
    let state_before = state_files(&dir);

    for addresses in [&["198.18.142.60/24"][..], &["2001:db8:142::60/64"][..]] {
        let err = lanyard::attach(&host, &request("uplink0", &g, addresses, true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        let family = if addresses[0].contains(':') { "IPv6" } else { "IPv4" };
        assert!(
            err.to_string().contains(&format!("the host has no {family} address on uplink0"))
                && err.to_string().contains("attach without --host-route"),
            "{err}"
        );
        assert_eq!(lan.host.snapshot(), host_before, "{addresses:?}: host side");
        assert_eq!(g.snapshot(), guest_before, "{addresses:?}: guest side");
        assert_eq!(state_files(&dir), state_before, "{addresses:?}: state");
    }
    // The library call refuses the same way, and makes no shim.
    let err = host_routes::add(&host, "uplink0", "198.18.142.60".parse().unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(lan.host.snapshot(), host_before);

    // A macvlan mode whose guests the shim cannot reach: refused as bad input.
    lan.host.ip(&["addr", "add", "198.18.142.2/24", "dev", "uplink0"]);
    let host_with_address = lan.host.snapshot();
    let mut private = request("uplink0", &g, &["198.18.142.60/24"], true);
    private.macvlan_mode = lanyard::spec::MacvlanMode::Private;
    let err = lanyard::attach(&host, &private).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    assert!(err.to_string().contains("--host-route needs --macvlan-mode bridge (not private)"));
    assert_eq!(lan.host.snapshot(), host_with_address);
    assert_eq!(g.snapshot(), guest_before);

    // Not a macvlan: refused as bad input before anything changes.
    let bridged = Lan::bridge(143);
    let bridge_host = host_for(&bridged.host, &dir);
    // (Links and lanyard's routes: the kernel adds br0's IPv6 local route on its own time.)
    let bridge_before = bridged.host.links();
    let err = lanyard::attach(&bridge_host, &request("br0", &g, &["198.18.143.60/24"], true))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    assert!(err.to_string().contains("--host-route is for a macvlan parent"), "{err}");
    assert_eq!(bridged.host.links(), bridge_before);
    assert!(lanyard_routes(&bridged.host).is_empty());
    assert_eq!(g.snapshot(), guest_before);
}

#[test]
fn a_rollback_after_the_host_route_leaves_nothing_and_keeps_a_neighbours_route() {
    let lan = lan_with_host_address(144);
    let dir = TestDir::new("hostroute-rollback");
    let host = host_for(&lan.host, &dir);
    let g = lan.guest("g");
    let shim = shim_of(&lan);
    for with_neighbour in [false, true] {
        let neighbour = lan.guest("n");
        if with_neighbour {
            lanyard::attach(&host, &request("uplink0", &neighbour, &["198.18.144.70/24"], true))
                .unwrap();
        }
        for point in [FailPoint::AfterAddresses, FailPoint::AfterRoutes, FailPoint::AfterRecord] {
            let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
            let state_before = state_files(&dir);
            let mut req = request(
                "uplink0",
                &g,
                &["198.18.144.60/24@198.18.144.1", "2001:db8:144::60/64"],
                true,
            );
            req.fail_at = Some(point);
            let err = lanyard::attach(&host, &req).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Injected, "{point:?}: {err}");
            assert_eq!(lan.host.snapshot(), host_before, "{point:?} {with_neighbour}: host side");
            assert_eq!(g.snapshot(), guest_before, "{point:?}: guest side");
            assert_eq!(state_files(&dir), state_before, "{point:?}: state");
        }
        if with_neighbour {
            assert_eq!(
                lanyard_routes(&lan.host),
                [format!("198.18.144.70 dev {shim} scope link src 198.18.144.2")]
            );
            assert!(reaches(&lan.host, "198.18.144.70"), "the neighbour's route still works");
            lanyard::detach(&host, &token(&neighbour), None).unwrap();
        }
    }
    assert!(!lan.host.links().contains(&shim));
}

#[test]
fn detach_removes_the_host_route_when_the_guest_is_already_gone() {
    let lan = lan_with_host_address(145);
    let dir = TestDir::new("hostroute-gone");
    let host = host_for(&lan.host, &dir);
    let host_before = lan.host.snapshot();
    let g = lan.guest("g");
    let guest_token = token(&g);
    lanyard::attach(&host, &request("uplink0", &g, &["198.18.145.60/24"], true)).unwrap();
    assert_eq!(lanyard_routes(&lan.host).len(), 1);
    // The guest goes away with its macvlan; the host's route stays, pointing at nobody.
    drop(g);
    lanyard::detach(&host, &guest_token, None).unwrap();
    assert_eq!(lan.host.snapshot(), host_before, "the route and the shim are gone");
    assert!(state_files(&dir).is_empty(), "{:?}", state_files(&dir));
}

#[test]
fn a_stale_record_replaced_by_a_new_attach_takes_its_host_route_along() {
    let lan = lan_with_host_address(149);
    let dir = TestDir::new("hostroute-stale");
    let host = host_for(&lan.host, &dir);
    let host_before = lan.host.snapshot();
    let tag = format!("hrstale{}", std::process::id());
    let g = Netns::new_verbatim(&tag);
    lanyard::attach(&host, &request("uplink0", &g, &["198.18.149.60/24"], true)).unwrap();
    assert_eq!(lanyard_routes(&lan.host).len(), 1);
    // The namespace is replaced under the same name (as a restarted container's is): its
    // record is stale, and the attach that replaces it removes what it left in the host.
    drop(g);
    let g = Netns::new_verbatim(&tag);
    lanyard::attach(&host, &request("uplink0", &g, &["198.18.149.61/24"], false)).unwrap();
    assert!(lanyard_routes(&lan.host).is_empty(), "{:?}", lanyard_routes(&lan.host));
    assert_eq!(lan.host.snapshot(), host_before, "the shim went with its last route");
    lanyard::detach(&host, &token(&g), None).unwrap();
}

#[test]
fn the_library_calls_are_idempotent_and_never_take_a_route_that_is_not_lanyards() {
    let lan = lan_with_host_address(146);
    let dir = TestDir::new("hostroute-lib");
    let host = host_for(&lan.host, &dir);
    let host_before = lan.host.snapshot();
    let shim = shim_of(&lan);
    let guest: IpAddr = "198.18.146.60".parse().unwrap();

    let first = host_routes::add(&host, "uplink0", guest).unwrap();
    assert_eq!(
        (first.shim.as_str(), first.source),
        (shim.as_str(), "198.18.146.2".parse().unwrap())
    );
    assert_eq!(host_routes::add(&host, "uplink0", guest).unwrap(), first, "a second add");
    assert_eq!(lanyard_routes(&lan.host).len(), 1);
    host_routes::remove(&host, "uplink0", guest).unwrap();
    assert_eq!(lan.host.snapshot(), host_before);
    host_routes::remove(&host, "uplink0", guest).unwrap();
    host_routes::remove(&host, "nosuch0", guest).unwrap();

    // Someone else's route to the address: refused, left alone, and no shim made.
    lan.host.ip(&["route", "add", "198.18.146.70/32", "dev", "uplink0"]);
    let with_foreign = lan.host.snapshot();
    let err = host_routes::add(&host, "uplink0", "198.18.146.70".parse().unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("not lanyard's"), "{err}");
    assert_eq!(lan.host.snapshot(), with_foreign);
    // ... and removing "lanyard's route" there touches nothing either.
    host_routes::add(&host, "uplink0", guest).unwrap();
    host_routes::remove(&host, "uplink0", "198.18.146.70".parse().unwrap()).unwrap();
    assert!(lan.host.routes().iter().any(|r| r.starts_with("198.18.146.70 dev uplink0")));
    host_routes::remove(&host, "uplink0", guest).unwrap();
    assert_eq!(lan.host.snapshot(), with_foreign);
}

/// Threads stand for processes here: each call opens the lock file anew, and flock excludes
/// another open file as it excludes another process.
#[test]
fn concurrent_adds_and_removes_on_one_shim_never_leave_a_route_without_shim_or_a_stale_shim() {
    let lan = lan_with_host_address(147);
    let dir = TestDir::new("hostroute-race");
    let host = host_for(&lan.host, &dir);
    let host_before = lan.host.snapshot();
    let shim = shim_of(&lan);
    for round in 0..5 {
        std::thread::scope(|scope| {
            for worker in 0..4u8 {
                let host = &host;
                scope.spawn(move || {
                    let guest: IpAddr = format!("198.18.147.{}", 60 + worker).parse().unwrap();
                    for _ in 0..10 {
                        host_routes::add(host, "uplink0", guest).unwrap();
                        host_routes::remove(host, "uplink0", guest).unwrap();
                    }
                    // The last worker keeps its route in odd rounds.
                    if worker == 3 && round % 2 == 1 {
                        host_routes::add(host, "uplink0", guest).unwrap();
                    }
                });
            }
        });
        if round % 2 == 1 {
            assert_eq!(
                lanyard_routes(&lan.host),
                [format!("198.18.147.63 dev {shim} scope link src 198.18.147.2")],
                "round {round}"
            );
            assert!(lan.host.links().contains(&shim), "round {round}");
            host_routes::remove(&host, "uplink0", "198.18.147.63".parse().unwrap()).unwrap();
        }
        assert_eq!(lan.host.snapshot(), host_before, "round {round}: nothing left");
    }
}

#[test]
fn the_cli_flag_asks_for_the_host_route() {
    let lan = lan_with_host_address(148);
    let dir = TestDir::new("hostroute-cli");
    let g = lan.guest("g");
    let host_before = lan.host.snapshot();
    let out = cli::run(
        &lan.host,
        &dir,
        &["attach", "uplink0", &token(&g), "198.18.148.60/24", "--host-route"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lanyard_routes(&lan.host),
        [format!("198.18.148.60 dev {} scope link src 198.18.148.2", shim_of(&lan))]
    );
    let out = cli::run(&lan.host, &dir, &["detach", &token(&g)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(lan.host.snapshot(), host_before);
}
