//! A command refused for want of privilege leaves everything as it was. The refusal runs inside
//! a lab "host" namespace (entered as root, then the process drops to nobody with `setpriv`), so
//! even a broken check could only reach the lab, and the lab, the guest and the state directory
//! are compared before and after. LAN 216.

mod support;

use std::process::Stdio;

use support::lab::{self, Lan, TestDir};

#[test]
fn not_root_is_refused_with_one_line_and_changes_nothing() {
    let lan = Lan::bridge(216);
    let dir = TestDir::new("not-root");
    let g = lan.guest("g");
    let token = format!("netns:{}", g.name);
    let (host_before, guest_before) = (lan.host.snapshot(), g.snapshot());
    let state_before = lab::state_files(&dir);
    // A bridge name lanyard would create, and an address with a gateway: if the root check
    // were gone, this attach would have the most to change.
    for args in [
        vec!["attach", "brnew", token.as_str(), "198.18.216.5/24@198.18.216.1"],
        vec!["detach", token.as_str()],
        vec!["attach", "br0", token.as_str(), "dhcp", "--timeout", "1"],
    ] {
        let out = lan
            .host
            .command("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_lanyard"))
            .args(&args)
            .env("LANYARD_STATE_DIR", dir.join("state"))
            .env("LANYARD_HOST_ID", format!("test-{}", lab::run_id()))
            .env("DOCKER_HOST", format!("unix://{}", dir.join("no-docker.sock").display()))
            .stdin(Stdio::null())
            .output()
            .expect("run setpriv lanyard");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            "lanyard: lanyard needs root (CAP_NET_ADMIN): run it with sudo",
            "{args:?}: the one line that says what to do"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(lan.host.snapshot(), host_before, "{args:?}: host changed");
        assert_eq!(g.snapshot(), guest_before, "{args:?}: guest changed");
        assert_eq!(lab::state_files(&dir), state_before, "{args:?}: state changed");
    }
}
