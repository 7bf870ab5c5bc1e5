//! The lease daemon a test started (through the CLI or the library): found by asking its control
//! socket, stopped at the end of the test (it runs in a session of its own, so nothing else
//! would stop it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lab::{wait_until, TestDir};

pub struct DaemonGuard {
    state: PathBuf,
}

impl DaemonGuard {
    /// The daemon of `dir/state`, whether or not it runs yet.
    pub fn new(dir: &TestDir) -> DaemonGuard {
        DaemonGuard { state: dir.join("state") }
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The pid the daemon reports, `None` when none answers.
    pub fn pid(&self) -> Option<i32> {
        let response = lanyard::daemon::control::try_request(
            &self.state,
            &lanyard::daemon::control::Request::Ping,
            Duration::from_secs(2),
        )
        .ok()??;
        response.data["pid"].as_i64().map(|pid| pid as i32)
    }

    /// Send `signal` and wait (bounded) until the process is gone. Returns false when no daemon
    /// answered; panics when one answered but did not die within 5 s.
    pub fn kill(&self, signal: libc::c_int) -> bool {
        let Some(pid) = self.pid() else { return false };
        // SAFETY: kill(2) on a pid the daemon itself reported.
        unsafe { libc::kill(pid, signal) };
        // A zombie main thread is not enough: the daemon's other threads may still be exiting,
        // and its descriptors (the control socket) close with the last of them. Gone, or a
        // zombie with no other thread left.
        let died = wait_until(Duration::from_secs(5), || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || (std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"))
                    && std::fs::read_dir(format!("/proc/{pid}/task"))
                        .map_or(true, |threads| threads.count() <= 1))
        });
        assert!(died, "the lanyard daemon (pid {pid}) did not die within 5 s of signal {signal}");
        true
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Never panic twice: the test's own failure is the one to see.
            if let Some(pid) = self.pid() {
                // SAFETY: kill(2) on a pid the daemon itself reported.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            return;
        }
        self.kill(libc::SIGTERM);
    }
}
