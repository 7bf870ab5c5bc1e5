//! The daemon following a lab dockerd, as the scale test and the wiring bench drive it: a
//! `lanyard daemon` started in a lab namespace with a config file and the lab's DOCKER_HOST,
//! its `status --json` read through the control socket, and many labelled containers started
//! at once with the docker CLI from a few threads.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::daemon::DaemonGuard;
use super::docker::DockerLab;
use super::lab::{wait_until, Netns, TestDir};

/// A daemon started here: stopped (SIGTERM, or SIGKILL when the caller panics) and reaped on
/// drop.
pub struct WatchingDaemon {
    child: Child,
    guard: DaemonGuard,
    pub started: Instant,
}

impl WatchingDaemon {
    /// `lanyard --config CONFIG daemon` in `ns`, talking to `docker`, its log appended to
    /// dir/daemon.log; returns once its control socket answers (bounded: 10 s).
    pub fn start(ns: &Netns, dir: &TestDir, docker: &DockerLab, config: &Path) -> WatchingDaemon {
        Self::start_with_env(ns, dir, docker, config, &[])
    }

    /// [`WatchingDaemon::start`] with more environment (e.g. a Docker plugin name in
    /// `LANYARD_DOCKER_PLUGIN`, which the lab's commands otherwise set to "": no plugin).
    pub fn start_with_env(
        ns: &Netns,
        dir: &TestDir,
        docker: &DockerLab,
        config: &Path,
        env: &[(&str, &str)],
    ) -> WatchingDaemon {
        let (key, value) = docker.env();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .expect("open daemon.log");
        let started = Instant::now();
        let child = super::cli::command(ns, dir, &["--config", config.to_str().unwrap(), "daemon"])
            .env(key, value)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn lanyard daemon");
        let daemon = WatchingDaemon { child, guard: DaemonGuard::new(dir), started };
        let answers = || daemon.guard.pid().is_some();
        assert!(wait_until(Duration::from_secs(10), answers), "the daemon answers");
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` to the daemon (our own child, not yet reaped).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGKILL, and reap it: what a crash leaves (leases and records on disk).
    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM (the daemon leaves containers wired and leases recorded) and wait until it is gone.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// SIGTERM to our child (not through the control socket: a daemon busy for a moment may
    /// not answer it), reaped within 10 s or SIGKILLed.
    fn terminate(&mut self) {
        // Already reaped (stopped before): its pid may be someone else's by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let gone = wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))
        });
        if !gone {
            eprintln!("the lanyard daemon (pid {pid}) ignored SIGTERM for 10 s; killing it");
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for WatchingDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        } else {
            self.terminate();
        }
    }
}

pub fn write_config(dir: &TestDir, text: &str) -> PathBuf {
    let path = dir.join("lanyard.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

pub fn daemon_log(dir: &TestDir) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

/// The daemon's status (`Pid`, `Leases`, `Docker`, ...) straight from its control socket, as
/// `lanyard status --json` shows it under `Daemon`; `None` while no daemon answers.
pub fn daemon_status(dir: &TestDir) -> Option<serde_json::Value> {
    let response = lanyard::daemon::control::try_request(
        &dir.join("state"),
        &lanyard::daemon::control::Request::Status,
        Duration::from_secs(5),
    )
    .ok()??;
    Some(response.data)
}

/// How many of `ids` the status shows with every interface "wired" (a DHCP one only once its
/// lease is bound).
pub fn wired_count(status: &serde_json::Value, ids: &[String]) -> usize {
    let containers = &status["Docker"]["containers"];
    ids.iter()
        .filter(|id| {
            containers[id.as_str()]["interfaces"].as_array().is_some_and(|interfaces| {
                !interfaces.is_empty() && interfaces.iter().all(|i| i["state"] == "wired")
            })
        })
        .count()
}

/// `docker.run(name, args)` for every `(name, args)`, from `threads` threads at once; the
/// container IDs in the order given, and the moment the last `docker run -d` returned.
pub fn run_many(
    docker: &DockerLab,
    containers: &[(String, Vec<String>)],
    threads: usize,
) -> (Vec<String>, Instant) {
    let next = AtomicUsize::new(0);
    let ids = Mutex::new(vec![String::new(); containers.len()]);
    let last = Mutex::new(Instant::now());
    docker.import_busybox();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((name, args)) = containers.get(i) else { break };
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let id = docker.run(name, &args);
                let now = Instant::now();
                let mut last = last.lock().unwrap();
                *last = (*last).max(now);
                drop(last);
                ids.lock().unwrap()[i] = id;
            });
        }
    });
    (ids.into_inner().unwrap(), last.into_inner().unwrap())
}

/// `docker create` for every `(name, args)` (as [`DockerLab::run`] would run it: busybox
/// `sleep 3600`, stop timeout 1 s), from `threads` threads; the container IDs in the order given.
/// Started later with [`start_many`], so that the starts come as close together as Docker
/// allows.
pub fn create_many(
    docker: &DockerLab,
    containers: &[(String, Vec<String>)],
    threads: usize,
) -> Vec<String> {
    let image = docker.import_busybox();
    let next = AtomicUsize::new(0);
    let ids = Mutex::new(vec![String::new(); containers.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((name, args)) = containers.get(i) else { break };
                let mut argv = vec!["create", "--stop-timeout", "1", "--name", name];
                argv.extend(args.iter().map(String::as_str));
                argv.extend([image.as_str(), "sleep", "3600"]);
                let id = docker.docker_ok(&argv);
                ids.lock().unwrap()[i] = id;
            });
        }
    });
    ids.into_inner().unwrap()
}

/// `docker start` of every one of `ids`, from `threads` threads at once (one CLI call per
/// container); the moments the first call began and the last one returned.
pub fn start_many(docker: &DockerLab, ids: &[String], threads: usize) -> (Instant, Instant) {
    let next = AtomicUsize::new(0);
    let first = Instant::now();
    let last = Mutex::new(first);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                docker.docker_ok(&["start", id]);
                let now = Instant::now();
                let mut last = last.lock().unwrap();
                *last = (*last).max(now);
            });
        }
    });
    (first, last.into_inner().unwrap())
}

/// `docker rm -f` of every one of `names`, 10 per CLI call from `threads` threads (one call for
/// them all can outlast the CLI's 60 s bound on a loaded machine).
pub fn remove_many(docker: &DockerLab, names: &[&str], threads: usize) {
    let chunks: Vec<&[&str]> = names.chunks(10).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(chunk) = chunks.get(i) else { break };
                docker.docker_ok(&[&["rm", "-f"][..], chunk].concat());
            });
        }
    });
}

/// Host ends of veths on `bridge` in `ns` (lanyard's, and any other port).
pub fn ports_of(ns: &Netns, bridge: &str) -> usize {
    ns.ip(&["-o", "link", "show", "master", bridge]).lines().count()
}

/// The IPv4 address (CIDR) on `ifname` in the container, if any.
pub fn ipv4_of(docker: &DockerLab, container: &str, ifname: &str) -> Option<String> {
    let out = docker.docker(&["exec", container, "ip", "-4", "-o", "addr", "show", "dev", ifname]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next().map(str::to_string)
}
