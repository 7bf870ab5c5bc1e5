//! A private dockerd per test: its own data, exec root and socket under
//! /tmp/lanyard-test-<runid>-<pid>/docker-<n>, no bridge, no iptables, so the host's network and
//! the host's Docker are never touched. `start_in_netns` runs one inside a test namespace when a
//! test needs Docker's own default bridge (docker0 then lives in that namespace).
//!
//! Lifetime: `Drop` removes the containers, stops dockerd, unmounts and removes the directory.
//! If the test process is killed instead, dockerd dies with it (parent-death signal) and the
//! next run's `sweep_dead_docker_labs` removes what is left (shims, containers, mounts, dirs).
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const BUSYBOX_IMAGE: &str = "lanyard-test/busybox:latest";
/// Applets linked in the test image; `sleep` keeps containers alive, the rest are for probing.
pub const BUSYBOX_APPLETS: &[&str] =
    &["sh", "sleep", "ip", "ifconfig", "cat", "ping", "udhcpc", "ls"];

// A dockerd restoring containers whose network plugin is absent retries it for ~30 s first.
const PING_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

pub struct DockerLab {
    pub socket: PathBuf,
    pub dir: PathBuf,
    pidfile: PathBuf,
    log: PathBuf,
    /// Kept open so a restart enters the same namespace even if its name was removed.
    netns: Option<fs::File>,
    bip: Option<String>,
    dockerd: Option<Child>,
    image: OnceLock<String>,
}

impl DockerLab {
    /// A dockerd in the test process's own network namespace (the main thread's, even when
    /// called inside `Netns::run_in`), with no bridge: containers get `--net none`, `--net host`
    /// or a network a test builds itself.
    pub fn start() -> DockerLab {
        Self::launch(None, None)
    }

    /// A dockerd whose network namespace is `netns_path` (e.g. /run/netns/NAME), so its docker0
    /// (with address `bip`, e.g. "198.19.250.1/24") and containers' Docker-made eth0 live there.
    pub fn start_in_netns(netns_path: &Path, bip: &str) -> DockerLab {
        let netns = fs::File::open(netns_path)
            .unwrap_or_else(|e| panic!("open network namespace {}: {e}", netns_path.display()));
        Self::launch(Some(netns), Some(bip.to_string()))
    }

    fn launch(netns: Option<fs::File>, bip: Option<String>) -> DockerLab {
        static SWEPT: OnceLock<()> = OnceLock::new();
        SWEPT.get_or_init(sweep_dead_docker_labs);
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = run_dir().join(format!("docker-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // An empty config keeps the host's /etc/docker/daemon.json (registry mirrors, a bridge,
        // iptables) out of the lab.
        fs::write(dir.join("daemon.json"), "{}\n").expect("write daemon.json");
        let mut lab = DockerLab {
            socket: dir.join("docker.sock"),
            pidfile: dir.join("docker.pid"),
            log: dir.join("dockerd.log"),
            dir,
            netns,
            bip,
            dockerd: None,
            image: OnceLock::new(),
        };
        lab.start_dockerd();
        lab.wait_for_ping();
        lab
    }

    fn start_dockerd(&mut self) {
        let d = &self.dir;
        let mut cmd = Command::new("dockerd");
        cmd.arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--pidfile")
            .arg(&self.pidfile)
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .args(["--iptables=false", "--ip6tables=false", "--ip-forward=false"])
            .args(["--ip-masq=false", "--userland-proxy=false"]);
        match &self.bip {
            Some(bip) => cmd.args(["--bip", bip]),
            // No docker0 in the namespace the tests share with each other (and maybe the host).
            None => cmd.arg("--bridge=none"),
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("dup dockerd log")).stderr(log);
        let netns = self.netns.as_ref().map(|f| f.try_clone().expect("dup netns fd"));
        let parent = std::process::id();
        // SAFETY: between fork and exec the closure makes only async-signal-safe system calls
        // (prctl, getppid, setns) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The parent may have died before the signal was armed.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::other("test process exited"));
                }
                if let Some(ns) = &netns {
                    setns(ns, CloneFlags::CLONE_NEWNET)?;
                }
                Ok(())
            });
        }
        let child = spawn_from_long_lived_thread(cmd)
            .unwrap_or_else(|e| panic!("start dockerd for {}: {e}", self.dir.display()));
        self.dockerd = Some(child);
    }

    /// Start dockerd again (after [`DockerLab::stop_dockerd`]), run `meanwhile` while it comes
    /// up (a boot where something else starts beside it), then wait until it answers.
    pub fn start_dockerd_with(&mut self, meanwhile: impl FnOnce()) {
        self.start_dockerd();
        meanwhile();
        self.wait_for_ping();
    }

    /// The lines of dockerd's log so far.
    pub fn dockerd_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_ping(&mut self) {
        let deadline = Instant::now() + PING_TIMEOUT;
        loop {
            if ping(&self.socket) {
                return;
            }
            let child = self.dockerd.as_mut().expect("dockerd started");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("dockerd exited with {status} before answering:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                panic!(
                    "dockerd did not answer /_ping within {PING_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// PID of the running dockerd.
    pub fn dockerd_pid(&self) -> Option<u32> {
        self.dockerd.as_ref().map(Child::id)
    }

    /// Stop dockerd (its containers stop with it) and start it again on the same directories:
    /// the "dockerd restarted" case.
    pub fn restart_dockerd(&mut self) {
        self.stop_dockerd();
        self.start_dockerd();
        self.wait_for_ping();
    }

    /// SIGTERM, then SIGKILL after a bounded wait; Docker leaves its containers stopped.
    pub fn stop_dockerd(&mut self) {
        let Some(mut child) = self.dockerd.take() else { return };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("dockerd {pid} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The `DOCKER_HOST` that reaches this lab's dockerd.
    pub fn env(&self) -> (&'static str, String) {
        ("DOCKER_HOST", format!("unix://{}", self.socket.display()))
    }

    /// The docker CLI against this lab, bounded in time.
    pub fn docker(&self, args: &[&str]) -> Output {
        let (key, value) = self.env();
        let mut cmd = Command::new("docker");
        cmd.args(args)
            .env(key, value)
            // The CLI's config dir holds contexts and credentials: keep the host's out.
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY");
        output_within(cmd, CLI_TIMEOUT).unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")))
    }

    /// `docker` that must succeed; its trimmed stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Import the static busybox as BUSYBOX_IMAGE (no registry is reachable); once per lab.
    pub fn import_busybox(&self) -> String {
        self.image
            .get_or_init(|| {
                let rootfs = self.dir.join("rootfs");
                for sub in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
                    fs::create_dir_all(rootfs.join(sub)).expect("create rootfs dirs");
                }
                let busybox = which_busybox();
                fs::copy(&busybox, rootfs.join("bin/busybox"))
                    .unwrap_or_else(|e| panic!("copy {}: {e}", busybox.display()));
                for applet in BUSYBOX_APPLETS {
                    let link = rootfs.join("bin").join(applet);
                    if !link.exists() {
                        std::os::unix::fs::symlink("busybox", &link).expect("link applet");
                    }
                }
                let tarball = self.dir.join("busybox.tar");
                let tar = Command::new("tar")
                    .arg("-C")
                    .arg(&rootfs)
                    .arg("-cf")
                    .arg(&tarball)
                    .arg(".")
                    .status()
                    .expect("run tar");
                assert!(tar.success(), "tar of the busybox rootfs failed");
                self.docker_ok(&["import", tarball.to_str().unwrap(), BUSYBOX_IMAGE]);
                BUSYBOX_IMAGE.to_string()
            })
            .clone()
    }

    /// `docker run -d --name NAME ARGS... busybox sleep 3600`; the full container ID.
    pub fn run(&self, name: &str, args: &[&str]) -> String {
        let image = self.import_busybox();
        // `sleep` as a container's init ignores SIGTERM, so every stop (and every dockerd
        // shutdown with the container running) would wait out Docker's default 10 s. Later
        // flags in `args` win.
        let mut argv = vec!["run", "-d", "--stop-timeout", "1", "--name", name];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&[image.as_str(), "sleep", "3600"]);
        self.docker_ok(&argv)
    }

    fn remove_all_containers(&self) {
        let ids = self.docker(&["ps", "-aq", "--no-trunc"]);
        let ids = String::from_utf8_lossy(&ids.stdout);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut argv = vec!["rm", "-f", "-v"];
            argv.extend(ids);
            let out = self.docker(&argv);
            if !out.status.success() {
                eprintln!(
                    "docker rm -f in {}: {}",
                    self.dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        // Never panic here: a panic while a failed test unwinds aborts the whole test binary.
        if self.dockerd.is_some() && ping(&self.socket) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.remove_all_containers()
            }));
        }
        self.stop_dockerd();
        clean_lab_dir(&self.dir);
        // The run directory may hold other labs or other servers' files; only an empty one goes.
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// /tmp/lanyard-test-<runid>-<pid>, where runid is this process's start time (clock ticks since
/// boot) so a later process that reuses the PID gets another directory.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let pid = std::process::id();
        let start = process_start_ticks(pid).unwrap_or(0);
        PathBuf::from(format!("/tmp/lanyard-test-{start}-{pid}"))
    })
}

/// Remove what killed test runs left: every /tmp/lanyard-test-*-<pid> whose process is gone.
/// Kills its dockerd (if the parent-death signal missed it), containerd, shims and container
/// processes, unmounts what they mounted under it and removes it.
pub fn sweep_dead_docker_labs() {
    let Ok(entries) = fs::read_dir("/tmp") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("lanyard-test-") else { continue };
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        // Only a PID that is gone: a live one may be another run whose directory uses another
        // run-id scheme, and a reused PID merely delays the sweep.
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let run = entry.path();
        kill_leftover_processes(&run);
        clean_lab_dir(&run);
    }
}

/// SIGKILL what a dead run left running under `run`: a dockerd that the parent-death signal
/// missed (by its pidfile), everything whose command line names the directory (dockerd,
/// containerd, the shims, which outlive dockerd by design, other servers), and the processes
/// of the containers it ran (found by their IDs in each lab's data root and their cgroups).
fn kill_leftover_processes(run: &Path) {
    let mut container_ids = Vec::new();
    let labs: Vec<PathBuf> = fs::read_dir(run)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    for lab in &labs {
        if let Some(pid) = fs::read_to_string(lab.join("docker.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            // A recycled PID belongs to someone else: only a dockerd that names this lab dies.
            if cmdline_mentions(pid, lab) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        if let Ok(ids) = fs::read_dir(lab.join("data/containers")) {
            container_ids.extend(ids.flatten().filter_map(|e| e.file_name().into_string().ok()));
        }
    }
    // Twice: a container process found only through its cgroup may have been mid-fork.
    for _ in 0..2 {
        for pid in all_pids() {
            if pid != std::process::id()
                && (cmdline_mentions(pid, run) || in_container_cgroup(pid, &container_ids))
            {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// Unmount what dockerd left under the lab (overlay layers, shm, netns bind mounts), deepest
/// first, then remove the directory. Errors are reported, never raised: this runs in `Drop`.
fn clean_lab_dir(dir: &Path) {
    unmount_under(dir);
    let mut last = None;
    // Mounts detached lazily can keep a directory busy for a moment.
    for _ in 0..50 {
        match fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => last = Some(e),
        }
        thread::sleep(Duration::from_millis(20));
        unmount_under(dir);
    }
    if let Some(e) = last {
        eprintln!("remove {}: {e}", dir.display());
    }
}

fn unmount_under(dir: &Path) {
    let mut targets = mounts_under(dir);
    targets.sort_by_key(|t| std::cmp::Reverse(t.as_os_str().len()));
    for target in targets {
        let Ok(c) = std::ffi::CString::new(target.as_os_str().as_bytes()) else { continue };
        // SAFETY: a valid NUL-terminated path; MNT_DETACH never blocks on busy mounts.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Mount points at or under `dir` in this mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Processes whose command line names `dir`: the lab's dockerd, containerd and shims.
pub fn processes_under(dir: &Path) -> Vec<u32> {
    all_pids().into_iter().filter(|&pid| cmdline_mentions(pid, dir)).collect()
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn cmdline_mentions(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let needle = dir.as_os_str().as_bytes();
    cmdline.windows(needle.len()).any(|w| w == needle)
}

fn in_container_cgroup(pid: u32, container_ids: &[String]) -> bool {
    if container_ids.is_empty() {
        return false;
    }
    let Ok(cgroup) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return false };
    container_ids.iter().any(|id| id.len() == 64 && cgroup.contains(id.as_str()))
}

fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is dead for our purposes: it holds nothing but its exit status.
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name before it may contain spaces, so count from its closing ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

fn which_busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox not installed (apt-get install busybox-static)")
}

/// GET /_ping over the socket; true on "200 ... OK".
fn ping(socket: &Path) -> bool {
    let attempt = || -> io::Result<bool> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply.starts_with("HTTP/1.") && reply.contains(" 200 ") && reply.ends_with("OK"))
    };
    attempt().unwrap_or(false)
}

/// Run `cmd` and collect its output, killing it after `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no exit within {limit:?}"),
            ));
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Spawn `cmd` from a thread that lives as long as the test process. The parent-death signal
/// fires when the spawning *thread* exits, and a cargo test thread ends with its test, which
/// would kill a dockerd that a lab handed to another test or that outlives one.
fn spawn_from_long_lived_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        thread::Builder::new()
            .name("dockerd-spawner".into())
            .spawn(move || {
                // A thread starts in its creator's network namespace, which may be a test's
                // (inside `Netns::run_in`); `start()` promises the process's own, the main
                // thread's, which /proc/self names.
                if let Ok(own) = fs::File::open("/proc/self/ns/net") {
                    let _ = setns(&own, CloneFlags::CLONE_NEWNET);
                }
                for job in rx {
                    job();
                }
            })
            .expect("start the dockerd spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    let mut cmd = cmd;
    let job: SpawnJob = Box::new(move || {
        let _ = tx.send(cmd.spawn());
    });
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| io::Error::other("dockerd spawner thread is gone"))?;
    rx.recv().map_err(|_| io::Error::other("dockerd spawner thread dropped the request"))?
}
