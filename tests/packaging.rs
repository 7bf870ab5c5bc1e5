//! What lanyard ships for installing it for real, checked without installing anything on this
//! machine:
//! - the systemd unit in packaging/: `systemd-analyze verify` (PID 1 here is not systemd, so the
//!   unit cannot be started for real) and its ExecStart line run directly, in a lab namespace, as
//!   systemd would: it serves, and SIGTERM stops it cleanly;
//! - the Debian package `cargo deb` builds: its contents and control fields (`dpkg-deb`), and an
//!   install, upgrade, remove and purge with `dpkg --root` into a throw-away root whose
//!   `systemctl` and `update-alternatives` only record how the maintainer scripts called them;
//! - the container image of packaging/Containerfile, built from the package's binary by a private
//!   dockerd in a lab namespace (no registry), its daemon serving `lanyard status` through the
//!   mounted state directory and keeping a DHCP lease.
//!
//! Not tested here: a real install on a fresh Debian 12 (systemd as PID 1 running the unit,
//! apt resolving the dependencies).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use support::cli::token;
use support::dhcp::{kea_lan, Kea, KeaConfig};
use support::docker::DockerLab;
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
    // The Docker network plugin's socket should exist when dockerd restores its containers.
    assert!(text.lines().any(|l| l == "Before=docker.service"), "ordered before dockerd");
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

// ---------------------------------------------------------------------------------------------
// The Debian package

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The package under test: `$LANYARD_DEB` when set (scripts/test.sh builds it with `cargo deb`
/// before the tests), else built here once with `cargo deb` in a target directory of its own
/// (target/packaging-test: never contending for a build lock with the cargo that runs these
/// tests; kept, so later runs build incrementally).
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        if let Some(deb) = std::env::var_os("LANYARD_DEB") {
            let deb = PathBuf::from(deb);
            assert!(deb.is_file(), "LANYARD_DEB={} is not a file", deb.display());
            return deb;
        }
        let target = Path::new(MANIFEST_DIR).join("target/packaging-test");
        let deb = target.join("lanyard.deb");
        let out = Command::new("cargo")
            .args(["deb", "--locked", "--quiet", "--output"])
            .arg(&deb)
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(MANIFEST_DIR)
            .stdin(Stdio::null())
            .output()
            .expect("run `cargo deb` (cargo install cargo-deb --locked; scripts/setup.sh does)");
        assert!(out.status.success(), "cargo deb failed: {}", text(&out));
        deb
    })
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `program args`, which must succeed; its stdout.
fn run_ok(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?} failed ({}): {}", out.status, text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dpkg_deb(args: &[&str], deb: &Path, extra: &[&Path]) -> String {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    all.push(deb.as_os_str());
    all.extend(extra.iter().map(|p| p.as_os_str()));
    run_ok("dpkg-deb", &all)
}

/// The lines of a maintainer script that are commands, not comments.
fn commands_of(script: &str) -> Vec<&str> {
    script.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

#[test]
fn the_package_ships_the_binary_the_unit_a_commented_sample_and_no_active_config() {
    lab::require_root();
    let deb = package();
    let listing = dpkg_deb(&["--contents"], deb, &[]);
    // "MODE OWNER SIZE DATE TIME PATH" per entry.
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((*fields.first()?, *fields.get(5)?))
        })
        .collect();
    let mode_of = |path: &str| entries.iter().find(|(_, p)| *p == path).map(|(mode, _)| *mode);
    assert_eq!(mode_of("./usr/bin/lanyard"), Some("-rwxr-xr-x"), "{listing}");
    for file in [
        "./lib/systemd/system/lanyard.service",
        "./usr/share/doc/lanyard/examples/lanyard.toml",
        "./usr/share/doc/lanyard/README.md",
        "./usr/share/doc/lanyard/copyright",
    ] {
        assert_eq!(mode_of(file), Some("-rw-r--r--"), "{file} in\n{listing}");
    }
    // An active config would open host interfaces to declarations before the admin said so; the
    // pipework name is the admin's choice (update-alternatives, README "Install").
    for (_, path) in &entries {
        assert!(!path.starts_with("./etc/"), "the package installs nothing in /etc: {path}");
        assert!(!path.contains("pipework"), "no pipework link in the package: {path}");
    }

    let fields = dpkg_deb(&["--field"], deb, &[]);
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} field in\n{fields}"))
            .to_string()
    };
    assert_eq!(field("Package"), "lanyard");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    let depends = field("Depends");
    assert!(depends.contains("libc6"), "{depends}");
    assert!(!depends.contains("systemd") && !depends.contains("docker"), "{depends}");

    let dir = TestDir::new("deb-contents");
    let tree = dir.join("tree");
    dpkg_deb(&["-x"], deb, &[&tree]);
    assert_eq!(
        std::fs::read_to_string(tree.join("lib/systemd/system/lanyard.service")).unwrap(),
        std::fs::read_to_string(UNIT).unwrap(),
        "the unit shipped is packaging/lanyard.service"
    );
    let binary = tree.join("usr/bin/lanyard");
    let version = run_ok(binary.to_str().unwrap(), &["--version".as_ref()]);
    assert_eq!(version.trim(), format!("lanyard {}", env!("CARGO_PKG_VERSION")));

    // The sample, as shipped, is all comments: lanyard reads it as the defaults. With its
    // example lines uncommented it is a valid config too (so the examples do not rot).
    let sample = tree.join("usr/share/doc/lanyard/examples/lanyard.toml");
    let status = |config: &Path| {
        let out = Command::new(&binary)
            .arg("--config")
            .arg(config)
            .args(["status", "--json"])
            .env("LANYARD_STATE_DIR", dir.join("state"))
            .stdin(Stdio::null())
            .output()
            .expect("run the packaged lanyard");
        assert!(out.status.success(), "lanyard --config {}: {}", config.display(), text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("status --json")
    };
    let sample_text = std::fs::read_to_string(&sample).unwrap();
    assert!(commands_of(&sample_text).is_empty(), "every line a comment:\n{sample_text}");
    assert_eq!(status(&sample)["Config"], sample.to_str().unwrap());
    let uncommented: String = sample_text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(setting) if setting.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                setting
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let example = dir.join("uncommented.toml");
    std::fs::write(&example, &uncommented).unwrap();
    assert!(uncommented.contains("\n[network.office]\n"), "{uncommented}");
    assert_eq!(status(&example)["Config"], example.to_str().unwrap());

    // Maintainer scripts: present, executable, valid sh, and none starts or enables anything.
    let control = dir.join("control");
    dpkg_deb(&["-e"], deb, &[&control]);
    for name in ["postinst", "prerm", "postrm"] {
        let path = control.join(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name} in the package: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is executable");
        run_ok("sh", &["-n".as_ref(), path.as_os_str()]);
        let script = std::fs::read_to_string(&path).unwrap();
        for line in commands_of(&script) {
            for forbidden in ["systemctl enable", "systemctl start", "systemctl restart", "--now"] {
                assert!(!line.contains(forbidden), "{name} runs `{line}`");
            }
            assert!(!line.contains("deb-systemd"), "{name}: no cargo-deb/debhelper unit logic");
            assert!(!line.contains("update-alternatives --install"), "{name} runs `{line}`");
        }
    }
}

/// A root directory for `dpkg --root`: an empty dpkg database that knows this machine's libc6
/// (what the package depends on, as on Debian 12), a busybox shell for the maintainer scripts
/// (dpkg runs them chrooted into the root), and `systemctl` and `update-alternatives` stand-ins
/// that append each call to `/calls`. `update-alternatives --list pipework` prints the content
/// of `/pipework-alternatives` when that exists.
struct ThrowAwayRoot {
    root: PathBuf,
}

impl ThrowAwayRoot {
    fn new(dir: &TestDir) -> ThrowAwayRoot {
        let root = dir.join("root");
        let admin = root.join("var/lib/dpkg");
        for sub in ["info", "updates", "triggers"] {
            std::fs::create_dir_all(admin.join(sub)).unwrap();
        }
        std::fs::create_dir_all(root.join("var/log")).unwrap();
        let libc_version =
            run_ok("dpkg-query", &["-W".as_ref(), "-f=${Version}".as_ref(), "libc6".as_ref()]);
        std::fs::write(
            admin.join("status"),
            format!(
                "Package: libc6\nStatus: install ok installed\nPriority: optional\n\
                 Section: libs\nMaintainer: stand-in\nArchitecture: amd64\nMulti-Arch: same\n\
                 Version: {libc_version}\nDescription: stand-in for this machine's libc6\n\n"
            ),
        )
        .unwrap();
        std::fs::write(admin.join("info/libc6:amd64.list"), "").unwrap();
        std::fs::write(admin.join("available"), "").unwrap();

        for sub in ["bin", "usr/bin", "dev"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let null = root.join("dev/null");
        nix::sys::stat::mknod(
            &null,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", null.display()));
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox (Debian package busybox-static)");
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "grep", "rm", "echo", "cat", "mkdir"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let stand_ins = [
            ("systemctl", "echo \"systemctl $*\" >> /calls\n"),
            (
                "update-alternatives",
                "echo \"update-alternatives $*\" >> /calls\n\
                 if [ \"$1\" = --list ] && [ -e /pipework-alternatives ]; then\n\
                 \tcat /pipework-alternatives\nfi\n",
            ),
        ];
        for (name, body) in stand_ins {
            let path = root.join("usr/bin").join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        ThrowAwayRoot { root }
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// `dpkg --root=ROOT ARGS`, which must succeed; its stderr (warnings, the scripts' notes).
    fn dpkg(&self, args: &[&std::ffi::OsStr]) -> String {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", self.root.display()))
            // --root does not move dpkg's log: without this it would write the host's.
            .arg(format!("--log={}", self.path("/var/log/dpkg.log").display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run dpkg");
        assert!(out.status.success(), "dpkg {args:?} in {}: {}", self.root.display(), text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The stand-ins' calls since the last `take_calls`.
    fn take_calls(&self) -> Vec<String> {
        let path = self.path("/calls");
        let calls = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        calls.lines().map(str::to_string).collect()
    }

    fn installed(&self) -> bool {
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", self.path("/var/lib/dpkg").display()))
            .args(["-W", "-f=${db:Status-Status}", "lanyard"])
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout == b"installed")
    }
}

#[test]
fn the_package_installs_starts_nothing_and_removes_and_purges_cleanly_in_a_throw_away_root() {
    lab::require_root();
    let deb = package();
    let dir = TestDir::new("deb-root");
    let root = ThrowAwayRoot::new(&dir);
    let install = || root.dpkg(&["--install".as_ref(), deb.as_os_str()]);

    // Under systemd: the unit is made known, nothing is enabled or started.
    std::fs::create_dir_all(root.path("/run/systemd/system")).unwrap();
    install();
    assert!(root.installed());
    assert_eq!(root.take_calls(), ["systemctl daemon-reload"]);
    assert!(root.path("/usr/bin/lanyard").is_file());
    assert!(root.path("/lib/systemd/system/lanyard.service").is_file());
    assert!(root.path("/usr/share/doc/lanyard/examples/lanyard.toml").is_file());
    assert!(!root.path("/etc/lanyard").exists(), "no config until the admin writes one");
    assert!(!root.path("/usr/bin/pipework").exists(), "the pipework name is left to the admin");
    assert!(
        !root.path("/etc/systemd/system/multi-user.target.wants").exists(),
        "the unit is not enabled"
    );

    // An upgrade restarts the daemon only if it runs (try-restart), and starts nothing else.
    install();
    assert_eq!(
        root.take_calls(),
        ["systemctl daemon-reload", "systemctl try-restart lanyard.service"]
    );

    // The admin enabled the unit, installed the pipework alternative, and the daemon ran (its
    // lock, log and index, no attachment left).
    let wants = root.path("/etc/systemd/system/multi-user.target.wants/lanyard.service");
    std::fs::create_dir_all(wants.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/lib/systemd/system/lanyard.service", &wants).unwrap();
    std::fs::write(root.path("/pipework-alternatives"), "/usr/bin/lanyard\n").unwrap();
    std::fs::create_dir_all(root.path("/var/lib/lanyard/index")).unwrap();
    std::fs::write(root.path("/var/lib/lanyard/lock"), "").unwrap();
    std::fs::write(root.path("/var/lib/lanyard/daemon.log"), "a line\n").unwrap();

    root.dpkg(&["--remove".as_ref(), "lanyard".as_ref()]);
    assert_eq!(
        root.take_calls(),
        [
            "systemctl stop lanyard.service",
            "update-alternatives --list pipework",
            "update-alternatives --remove pipework /usr/bin/lanyard",
            "systemctl daemon-reload",
        ]
    );
    assert!(!root.path("/usr/bin/lanyard").exists());
    assert!(!root.path("/lib/systemd/system/lanyard.service").exists());
    assert!(root.path("/var/lib/lanyard").is_dir(), "remove keeps the state");
    assert!(wants.symlink_metadata().is_ok(), "remove keeps the admin's enablement");

    root.dpkg(&["--purge".as_ref(), "lanyard".as_ref()]);
    assert_eq!(root.take_calls(), ["systemctl daemon-reload"]);
    assert!(wants.symlink_metadata().is_err(), "purge removes the dangling enablement link");
    assert!(!root.path("/var/lib/lanyard").exists(), "purge removes a state with no attachment");
    assert!(!root.installed());

    // Without systemd (a chroot, a container) the scripts call nothing of it; a state that still
    // records a lease survives a purge, which says so.
    std::fs::remove_dir_all(root.path("/run/systemd")).unwrap();
    std::fs::remove_file(root.path("/pipework-alternatives")).unwrap();
    install();
    assert_eq!(root.take_calls(), Vec::<String>::new());
    std::fs::create_dir_all(root.path("/var/lib/lanyard/leases")).unwrap();
    std::fs::write(root.path("/var/lib/lanyard/leases/netns-g@eth1.json"), "{}").unwrap();
    let said = root.dpkg(&["--purge".as_ref(), "lanyard".as_ref()]);
    assert_eq!(root.take_calls(), ["update-alternatives --list pipework"]);
    assert!(root.path("/var/lib/lanyard/leases/netns-g@eth1.json").exists());
    assert!(said.contains("/var/lib/lanyard kept"), "{said}");
    assert!(!root.installed());
    assert!(!root.path("/usr/bin/lanyard").exists());
    let log = std::fs::read_to_string(root.path("/var/log/dpkg.log")).unwrap_or_default();
    assert!(log.contains("purge lanyard"), "dpkg logged into the throw-away root:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// The container image

/// Debian's docker CLI, which matches the lab's dockerd (20.10); the newer one some machines
/// also have in /usr/local/bin wants BuildKit for `docker build`.
const DOCKER_CLI: &str = "/usr/bin/docker";
const IMAGE: &str = "lanyard-test/lanyard:latest";

/// `docker ARGS` against `lab` with the Debian CLI and the classic builder, bounded in time.
fn docker_cli(lab: &DockerLab, args: &[&str]) -> Output {
    let (key, value) = lab.env();
    let mut command = Command::new(DOCKER_CLI);
    command
        .args(args)
        .env(key, value)
        .env("DOCKER_CONFIG", lab.dir.join("cli"))
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("DOCKER_CONTEXT");
    support::docker::output_within(command, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{DOCKER_CLI} {}: {e}", args.join(" ")))
}

/// [`docker_cli`], which must succeed; its trimmed stdout.
fn docker_ok(lab: &DockerLab, args: &[&str]) -> String {
    let out = docker_cli(lab, args);
    assert!(out.status.success(), "docker {} failed: {}", args.join(" "), text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The daemon's status as `lanyard status --json` prints it from the host (the lab namespace),
/// through the state directory the container has mounted; `Null` while no daemon answers.
fn daemon_status(host: &Netns, dir: &TestDir) -> serde_json::Value {
    let out = support::cli::run(host, dir, &["status", "--json"]);
    assert!(out.status.success(), "lanyard status: {}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    status["Daemon"].clone()
}

#[test]
fn the_image_built_from_the_package_runs_the_daemon_which_serves_status_and_keeps_a_lease() {
    lab::require_root();
    let (lan, _neighbour) = kea_lan(140);
    let kea = Kea::start(&lan.host, "br0", KeaConfig::short(140));
    let dir = TestDir::new("image");
    // The lab's dockerd runs in the LAN's host namespace: the container's "host network" is that
    // namespace, never the machine's own.
    let docker = DockerLab::start_in_netns(&lan.host.path, "198.19.240.1/24");

    // The image: the package's (release) binary staged with its libraries, FROM scratch.
    let tree = dir.join("deb");
    dpkg_deb(&["-x"], package(), &[&tree]);
    let context = dir.join("context");
    run_ok(
        concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/stage-image"),
        &[tree.join("usr/bin/lanyard").as_os_str(), context.as_os_str()],
    );
    let containerfile = context.join("Containerfile");
    docker_ok(
        &docker,
        &[
            "build",
            "-q",
            "-t",
            IMAGE,
            "-f",
            containerfile.to_str().unwrap(),
            context.to_str().unwrap(),
        ],
    );

    // Run as packaging/Containerfile says: host network and pid namespaces, the state directory,
    // /run/netns and the Docker socket mounted.
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let volume = |from: &Path, to: &str| format!("{}:{to}", from.display());
    let config = dir.join("lanyard.toml");
    std::fs::write(&config, "allowed_host_interfaces = [\"br0\"]\n").unwrap();
    let container = docker_ok(
        &docker,
        &[
            "run",
            "-d",
            "--name",
            "lanyard",
            "--network",
            "host",
            "--pid",
            "host",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "NET_RAW",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "SYS_PTRACE",
            "--security-opt",
            "systempaths=unconfined",
            "-v",
            &volume(&state, "/var/lib/lanyard"),
            "-v",
            "/run/netns:/run/netns:rslave",
            "-v",
            &volume(&docker.socket, "/var/run/docker.sock"),
            "-v",
            &volume(&config, "/etc/lanyard/lanyard.toml:ro"),
            IMAGE,
        ],
    );
    let container_pid: i64 =
        docker_ok(&docker, &["inspect", "-f", "{{.State.Pid}}", &container]).parse().unwrap();
    // The daemon logs to stderr, which Docker keeps as the container's log.
    let logs = || text(&docker_cli(&docker, &["logs", &container]));
    let serving = wait_until(Duration::from_secs(10), || !daemon_status(&lan.host, &dir).is_null());
    assert!(serving, "the daemon in the container answers `lanyard status`; its log:\n{}", logs());
    let status = daemon_status(&lan.host, &dir);
    assert_eq!(
        status["Pid"], container_pid,
        "the daemon that answers is the container's: {status}"
    );

    // A netns: guest on the LAN by DHCP: the attach hands the lease to the container's daemon
    // (it answers, so the attach starts none of its own), which renews it.
    let guest = lan.guest("guest");
    support::cli::ok(support::cli::run(
        &lan.host,
        &dir,
        &["attach", "br0", &token(&guest), "dhcp"],
    ));
    let ip = guest.ipv4_on("eth1").expect("leased address configured when attach returns");
    let status = daemon_status(&lan.host, &dir);
    assert_eq!(status["Pid"], container_pid, "still the container's daemon: {status}");
    assert_eq!(status["LeasesByState"]["BOUND"], 1, "{status}");
    kea.wait_lines("a renewal by the daemon in the container", Duration::from_secs(10), |_| {
        kea.renewals_of(ip) >= 1
    });
    assert_eq!(guest.ipv4_on("eth1"), Some(ip), "the guest keeps its address");
    assert!(logs().contains(&format!("bound {ip}/24")), "{}", logs());

    // The daemon in the container follows the mounted Docker socket and wires a labelled
    // container (the config mounted at /etc/lanyard allows br0).
    let image = docker.import_busybox();
    docker_ok(
        &docker,
        &[
            "run",
            "-d",
            "--name",
            "labelled",
            "--net",
            "none",
            "--label",
            "lanyard.net=br0 198.18.140.70/24",
            &image,
            "sleep",
            "3600",
        ],
    );
    let wired = wait_until(Duration::from_secs(15), || {
        let out =
            docker_cli(&docker, &["exec", "labelled", "ip", "-4", "-o", "addr", "show", "eth1"]);
        String::from_utf8_lossy(&out.stdout).contains("198.18.140.70/24")
    });
    assert!(wired, "the containerised daemon wired the labelled container; its log:\n{}", logs());
    let status = daemon_status(&lan.host, &dir);
    assert_eq!(status["Docker"]["connected"], true, "{status}");
    docker_ok(&docker, &["exec", "labelled", "ping", "-c", "1", "-W", "2", "198.18.140.1"]);
    docker_ok(&docker, &["rm", "-f", "labelled"]);

    support::cli::ok(support::cli::run(&lan.host, &dir, &["detach", &token(&guest)]));
    kea.wait_lines("the RELEASE", Duration::from_secs(5), |_| kea.released(ip));
    assert!(daemon_status(&lan.host, &dir)["Leases"] == 0, "the daemon let the lease go");
}
