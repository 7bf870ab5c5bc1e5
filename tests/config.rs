//! The config file as the CLI reads it: `--config` (a global option) and LANYARD_CONFIG name
//! it, its state_dir applies below `--state-dir` / LANYARD_STATE_DIR, and a missing or broken
//! file stops every command, the daemon included, with one line naming the file and line.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::cli::{command, ok, text, token};
use support::daemon::DaemonGuard;
use support::lab::{self, Lan, Netns, TestDir};

/// Runs `command` in a mount namespace of its own with an empty tmpfs over /var/lib: these
/// tests take LANYARD_STATE_DIR away, so a build that ignored the config would otherwise
/// write the machine's /var/lib/lanyard.
fn hide_var_lib(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only makes system calls (unshare, mount) with
    // static C strings; it allocates nothing and takes no lock. The mounts live in the child's
    // new mount namespace only.
    unsafe {
        command.pre_exec(|| {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                private,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            if libc::mount(
                c"tmpfs".as_ptr(),
                c"/var/lib".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
}

/// Runs `command` to the end, killing it after `limit`: a build that ignored a broken config
/// would start `lanyard daemon` serving forever instead of refusing.
fn output_within(mut command: Command, limit: Duration) -> Output {
    let child =
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start lanyard");
    let pid = child.id() as i32;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match finished.recv_timeout(limit) {
        Ok(output) => output.expect("wait for lanyard"),
        Err(_) => {
            // SAFETY: kill(2) on our own child, which has not been reaped (its waiter is blocked).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = finished.recv_timeout(Duration::from_secs(5));
            panic!(
                "lanyard {:?} still ran after {limit:?}",
                command.get_args().collect::<Vec<_>>()
            );
        }
    }
}

/// `lanyard ARGS` in `ns` without the lab's LANYARD_STATE_DIR, so the config decides, plus `env`.
fn lanyard(ns: &Netns, dir: &TestDir, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command: Command = command(ns, dir, args);
    command.env_remove("LANYARD_STATE_DIR").env_remove("LANYARD_CONFIG");
    hide_var_lib(&mut command);
    for (name, value) in env {
        command.env(name, value);
    }
    output_within(command, Duration::from_secs(20))
}

fn write_config(dir: &TestDir, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write config");
    path
}

/// The record files (`*.json`) directly in `state_dir`.
fn records_in(state_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The guests `inspect --all` lists.
fn inspected_guests(out: Output) -> Vec<String> {
    let listed: serde_json::Value = serde_json::from_str(&ok(out)).expect("inspect prints JSON");
    listed
        .as_array()
        .expect("inspect --all prints a list")
        .iter()
        .map(|view| view["Container"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Refused with exit 2 and one line on stderr containing every piece.
fn refused(out: &Output, pieces: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for piece in pieces {
        assert!(stderr.contains(piece), "{stderr} lacks {piece:?}");
    }
}

#[test]
fn the_config_state_dir_is_used_below_the_flag_and_the_environment() {
    lab::require_root();
    let lan = Lan::bridge(90);
    let dir = TestDir::new("config");
    let g = lan.guest("g");
    let guest = token(&g);
    let config_state = dir.join("from-config");
    let file = write_config(
        &dir,
        "lanyard.toml",
        &format!(
            "state_dir = {:?}\nallowed_host_interfaces = [\"br0\"]\n[network.lan]\nhost_interface = \"br0\"\naddressing = \"dhcp\"\n",
            config_state.display().to_string()
        ),
    );
    let file_arg = file.to_str().unwrap();
    let address = format!("{}/24", lan.addr4(2));

    // --config before the subcommand: the record goes to the config's state_dir.
    ok(lanyard(&lan.host, &dir, &["--config", file_arg, "attach", "br0", &guest, &address], &[]));
    assert_eq!(records_in(&config_state).len(), 1, "one record under the config's state_dir");
    assert!(!dir.join("state").exists(), "the lab's default state dir was used");
    // --config after the subcommand (a global option) and LANYARD_CONFIG find the same record.
    let by_flag = lanyard(&lan.host, &dir, &["inspect", "--all", "--config", file_arg], &[]);
    assert_eq!(inspected_guests(by_flag), vec![guest.clone()]);
    let by_env = lanyard(&lan.host, &dir, &["inspect", "--all"], &[("LANYARD_CONFIG", &file)]);
    assert_eq!(inspected_guests(by_env), vec![guest.clone()]);
    // The flag and LANYARD_STATE_DIR still win over the config.
    let other = dir.join("other");
    let flag_wins = lanyard(
        &lan.host,
        &dir,
        &["--config", file_arg, "--state-dir", other.to_str().unwrap(), "inspect", "--all"],
        &[],
    );
    assert_eq!(inspected_guests(flag_wins), Vec::<String>::new());
    let env_wins = lanyard(
        &lan.host,
        &dir,
        &["--config", file_arg, "inspect", "--all"],
        &[("LANYARD_STATE_DIR", &other)],
    );
    assert_eq!(inspected_guests(env_wins), Vec::<String>::new());

    ok(lanyard(&lan.host, &dir, &["--config", file_arg, "detach", &guest], &[]));
    assert_eq!(records_in(&config_state), Vec::<String>::new());
}

#[test]
fn pipework_reads_lanyard_config_from_the_environment() {
    lab::require_root();
    let lan = Lan::bridge(91);
    let dir = TestDir::new("config-pw");
    let g = lan.guest("g");
    let guest = token(&g);
    let config_state = dir.join("from-config");
    let file = write_config(
        &dir,
        "lanyard.toml",
        &format!("state_dir = {:?}\n", config_state.display().to_string()),
    );
    // The binary invoked by the name pipework takes no lanyard options, only the environment.
    let pipework = dir.join("pipework");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lanyard"), &pipework).expect("link pipework");
    let run_pipework = |args: &[&str], config: &Path| {
        let mut command = lan.host.command(&pipework);
        command
            .args(args)
            .env_remove("LANYARD_STATE_DIR")
            .env("LANYARD_CONFIG", config)
            .env("LANYARD_HOST_ID", format!("test-{}", lab::run_id()))
            .env("DOCKER_HOST", format!("unix://{}", dir.join("no-docker.sock").display()));
        hide_var_lib(&mut command);
        output_within(command, Duration::from_secs(20))
    };
    let address = format!("{}/24", lan.addr4(3));
    ok(run_pipework(&["br0", &guest, &address], &file));
    assert_eq!(records_in(&config_state).len(), 1, "one record under the config's state_dir");
    assert!(!dir.join("state").exists(), "the lab's default state dir was used");
    let broken = write_config(&dir, "broken.toml", "state_dir = \"/x\"\nhost_routes = 3\n");
    refused(&run_pipework(&["br0", &guest, &address], &broken), &["broken.toml line 2"]);
    ok(lanyard(&lan.host, &dir, &["--config", file.to_str().unwrap(), "detach", &guest], &[]));
}

#[test]
fn a_missing_or_broken_config_stops_every_command_with_the_line() {
    lab::require_root();
    let ns = Netns::new("cfg");
    let dir = TestDir::new("config-bad");
    let missing = dir.join("nope.toml");
    let missing_arg = missing.to_str().unwrap();
    refused(
        &lanyard(&ns, &dir, &["--config", missing_arg, "inspect", "--all"], &[]),
        &[missing_arg, "does not exist"],
    );
    refused(
        &lanyard(&ns, &dir, &["inspect", "--all"], &[("LANYARD_CONFIG", &missing)]),
        &[missing_arg, "does not exist"],
    );
    let broken = write_config(
        &dir,
        "broken.toml",
        "state_dir = \"/var/lib/lanyard\"\n[network.office]\nhost_interface = \"eth1\"\naddressing = \"static\"\nsubnet = \"198.18.8.0/24\"\ngateway = \"198.18.9.1\"\n",
    );
    let broken_arg = broken.to_str().unwrap();
    let line = format!("{broken_arg} line 6");
    for args in [
        vec!["--config", broken_arg, "inspect", "--all"],
        vec!["--config", broken_arg, "leases"],
        vec!["--config", broken_arg, "detach", "netns:nothing"],
        vec!["--config", broken_arg, "attach", "br0", "netns:nothing", "198.18.8.5/24"],
        vec!["daemon", "--config", broken_arg],
    ] {
        refused(&lanyard(&ns, &dir, &args, &[]), &[&line, "outside subnet"]);
    }
    let unknown = write_config(&dir, "unknown.toml", "\nstate_dri = \"/x\"\n");
    refused(
        &lanyard(&ns, &dir, &["inspect", "--all"], &[("LANYARD_CONFIG", &unknown)]),
        &["unknown.toml line 2", "state_dri"],
    );
    // Nothing was started or written: the daemon refused before binding its socket.
    assert!(!dir.join("state").exists(), "a state directory was made");
}

#[test]
fn a_daemon_started_on_demand_reads_the_callers_config_file() {
    lab::require_root();
    let lan = Lan::bridge(92);
    let dir = TestDir::new("config-daemon");
    let daemon = DaemonGuard::new(&dir);
    let g = lan.guest("g");
    let guest = token(&g);
    // An empty file: the lab's LANYARD_STATE_DIR (dir/state) stays in force.
    let file = write_config(&dir, "lanyard.toml", "");
    let file_arg = file.to_str().unwrap();
    ok(command(
        &lan.host,
        &dir,
        &["--config", file_arg, "attach", "br0", &guest, "dhcp", "--no-wait"],
    )
    .output()
    .expect("run lanyard"));
    let pid = daemon.pid().expect("attach dhcp started the daemon");
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .expect("the daemon's command line")
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    assert!(
        argv.windows(2).any(|pair| pair[0] == "--config" && pair[1] == file_arg),
        "the daemon was not given --config {file_arg}: {argv:?}"
    );
    ok(command(&lan.host, &dir, &["detach", &guest]).output().expect("run lanyard"));
}

#[test]
fn status_warns_of_a_network_named_like_an_interface_of_the_host() {
    lab::require_root();
    let lan = Lan::bridge(93);
    let dir = TestDir::new("config-warn");
    let file = write_config(
        &dir,
        "lanyard.toml",
        "[network.br0]\nhost_interface = \"br0\"\naddressing = \"dhcp\"\n\
         [network.lan]\nhost_interface = \"br0\"\naddressing = \"dhcp\"\n",
    );
    let state = dir.join("state");
    let env = [("LANYARD_STATE_DIR", state.as_path())];
    let out = ok(lanyard(&lan.host, &dir, &["--config", file.to_str().unwrap(), "status"], &env));
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "only br0 is also an interface here: {out}");
    assert!(warnings[0].contains("network \"br0\"") && warnings[0].contains("means the network"));
    let json = ok(lanyard(
        &lan.host,
        &dir,
        &["--config", file.to_str().unwrap(), "status", "--json"],
        &env,
    ));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["Warnings"].as_array().map(Vec::len), Some(1), "{json}");
}
