//! The systemd unit shipped in packaging/: checked by `systemd-analyze verify` (PID 1 here is not
//! systemd, so the unit cannot be started for real) and by running its ExecStart line directly,
//! in a lab namespace, as systemd would: it serves, and SIGTERM stops it cleanly.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::lab::{self, wait_until, Netns, TestDir};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/lanyard.service");
const INSTALLED_BINARY: &str = "/usr/bin/lanyard";

/// The unit with its binary path pointed at the one this build made.
fn unit_for_this_build() -> String {
    let text = std::fs::read_to_string(UNIT).expect("read the unit");
    assert!(text.contains(INSTALLED_BINARY), "the unit runs {INSTALLED_BINARY}");
    text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_lanyard"))
}

/// Whether the daemon of `state` answers a ping (within 1 s).
fn answers(state: &Path) -> bool {
    lanyard::daemon::control::try_request(
        state,
        &lanyard::daemon::control::Request::Ping,
        Duration::from_secs(1),
    )
    .ok()
    .flatten()
    .is_some_and(|answer| answer.ok)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    lab::require_root();
    let dir = TestDir::new("unit-verify");
    let unit = dir.join("lanyard.service");
    std::fs::write(&unit, unit_for_this_build()).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    // It must not wait for Docker: at boot the daemon may well start first.
    let text = std::fs::read_to_string(UNIT).unwrap();
    for line in text.lines().filter(|l| l.starts_with("Requires=") || l.starts_with("After=")) {
        assert!(!line.contains("docker"), "the unit must not depend on Docker: {line}");
    }
    assert!(text.contains("Restart=on-failure"), "restarted when it fails");
}

#[test]
fn the_units_exec_start_serves_and_stops_cleanly_on_sigterm() {
    lab::require_root();
    let host = Netns::new("unit-host");
    let dir = TestDir::new("unit-exec");
    let unit = unit_for_this_build();
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line")
        .to_string();
    let mut words = exec_start.split_whitespace();
    let program = words.next().expect("a program");
    let mut command = host.command(program);
    command
        .args(words)
        .env("LANYARD_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut daemon = command.spawn().expect("start the ExecStart line");
    let state = dir.join("state");
    let ping = || answers(&state);
    assert!(wait_until(Duration::from_secs(5), ping), "the daemon answers");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(5), || {
        status = daemon.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap_or_else(|| {
        let _ = daemon.kill();
        panic!("the daemon did not stop within 5 s of SIGTERM")
    });
    assert!(status.success(), "a clean stop: {status}");
    let socket = lanyard::daemon::control::socket_path(Path::new(&state));
    assert!(!socket.exists(), "its control socket is removed at exit");
}

#[test]
fn sighup_reloads_the_config_and_a_broken_one_is_refused_and_the_old_kept() {
    lab::require_root();
    let host = Netns::new("hup-host");
    let dir = TestDir::new("daemon-hup");
    let config = dir.join("lanyard.toml");
    let good = "allowed_host_interfaces = [\"br0\"]\n";
    std::fs::write(&config, good).unwrap();
    let log = dir.join("daemon.err");
    let mut command = host.command(env!("CARGO_BIN_EXE_lanyard"));
    command
        .arg("--config")
        .arg(&config)
        .arg("daemon")
        .env("LANYARD_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut daemon = command.spawn().expect("start the daemon");
    let stop = KillOnDrop(daemon.id());
    let state = dir.join("state");
    let ping = || answers(&state);
    let logged = |needle: &str| {
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains(needle))
        })
    };
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    assert!(wait_until(Duration::from_secs(5), ping), "the daemon answers");

    std::fs::write(&config, "allowed_host_interfaces = [\"br0\"]\nstate_dir = 5\n").unwrap();
    hup();
    assert!(
        logged("configuration refused, the previous one kept"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(logged("line 2"), "the refusal names the line");
    assert!(ping(), "a broken config does not stop the daemon");

    std::fs::write(&config, good).unwrap();
    hup();
    assert!(
        logged(&format!("configuration reloaded from {}", config.display())),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(ping(), "still serving after the reload");
    assert!(daemon.try_wait().unwrap().is_none(), "SIGHUP never stops it");
    drop(stop);
    let _ = daemon.wait();
}

/// SIGTERM to the daemon when the test ends, however it ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}
