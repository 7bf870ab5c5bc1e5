//! The `lanyard` binary run as a separate process inside a lab namespace (which it then treats
//! as the host), with the test's own state directory and host id, and Docker pointed at a
//! socket that does not exist (so a bare guest token never reaches the machine's dockerd).

use std::process::{Child, Command, Output, Stdio};

use super::lab::{run_id, Netns, TestDir};

/// The prepared command: `lanyard ARGS` inside `ns`, state in `dir/state`, stdin /dev/null.
pub fn command(ns: &Netns, dir: &TestDir, args: &[&str]) -> Command {
    let mut command = command_of(env!("CARGO_BIN_EXE_lanyard"), ns, dir);
    command.args(args);
    command
}

/// `program` inside `ns` with the environment [`command`] gives lanyard: for a program that
/// runs lanyard in turn (a CNI plugin calling its IPAM plugin passes its environment on).
pub fn command_of(program: &str, ns: &Netns, dir: &TestDir) -> Command {
    let mut command = ns.command(program);
    command
        .env("LANYARD_STATE_DIR", dir.join("state"))
        .env("LANYARD_HOST_ID", format!("test-{}", run_id()))
        .env("DOCKER_HOST", format!("unix://{}", dir.join("no-docker.sock").display()))
        .stdin(Stdio::null());
    command
}

/// Runs `lanyard ARGS` to the end.
pub fn run(ns: &Netns, dir: &TestDir, args: &[&str]) -> Output {
    command(ns, dir, args).output().expect("run lanyard")
}

/// Starts `lanyard ARGS` with stdout and stderr piped; collect it with `wait_with_output`.
pub fn spawn(ns: &Netns, dir: &TestDir, args: &[&str]) -> Child {
    command(ns, dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lanyard")
}

/// stdout and stderr together, for assertion messages.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Panics with the output unless the command succeeded; returns stdout.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "lanyard failed ({}): {}", out.status, text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The record and lease files of `dir/state` (`state/NAME.json`, `state/leases/NAME.json`),
/// sorted: what a detach must leave empty.
pub fn record_and_lease_files(dir: &TestDir) -> Vec<String> {
    let mut files = Vec::new();
    for sub in ["state", "state/leases"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") {
                    files.push(format!("{sub}/{name}"));
                }
            }
        }
    }
    files.sort();
    files
}

/// How a test names a lab namespace to lanyard: `netns:NAME`.
pub fn token(guest: &Netns) -> String {
    format!("netns:{}", guest.name)
}
