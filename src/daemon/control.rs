//! The control socket: `control.sock` in the state directory (directory 0700, socket 0600, root
//! only), one JSON request and one JSON answer per line. One daemon per state directory, so a
//! test or a second lab with its own `--state-dir` never meets the system daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::host::Host;

pub const SOCKET_NAME: &str = "control.sock";
/// Held by the running daemon for its whole life: a second daemon on the same state directory
/// sees it taken and exits.
pub const DAEMON_LOCK: &str = "daemon.lock";
/// Taken by CLIs that find no daemon answering, so two attaches never start two daemons.
pub const SPAWN_LOCK: &str = "spawn.lock";
pub const LOG_NAME: &str = "daemon.log";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Ping,
    /// Take over the DHCP client of a recorded attachment; answer once BOUND (or at once with
    /// `wait: false`), or with an error when `timeout_ms` passes without a lease.
    Acquire {
        record: String,
        wait: bool,
        timeout_ms: u64,
        /// The container's pid when the caller knows it (an attach does): the daemon reaches
        /// the guest through it, without asking Docker, once it leads to the recorded
        /// namespace (a wrong or reused pid does not, and Docker is asked instead).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// Send DHCPRELEASE (while the interface exists) and forget the lease.
    Release {
        record: String,
    },
    Leases,
    /// Register a static attachment's addresses in DNS (config `[dns_update]`); answered
    /// once queued, never after the update.
    DnsRegister {
        record: String,
    },
    /// Remove what a detached static attachment registered in DNS (queued likewise).
    DnsUnregister {
        record: String,
    },
    /// How the daemon is: pid, uptime, the config in force, leases by state.
    Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error's kind, so the CLI keeps exit codes and messages as the daemon meant them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    /// Written for daemons and CLIs from before `kind`; read when `kind` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<bool>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response { ok: true, error: None, kind: None, timeout: None, data }
    }

    pub fn error(error: &Error) -> Response {
        Response {
            ok: false,
            error: Some(error.to_string()),
            kind: Some(error.kind()),
            timeout: Some(error.kind() == ErrorKind::Timeout),
            data: serde_json::Value::Null,
        }
    }

    /// The daemon's refusal as an error of the same kind and message.
    pub fn into_error(self) -> Error {
        let kind = self.kind.unwrap_or(if self.timeout == Some(true) {
            ErrorKind::Timeout
        } else {
            ErrorKind::Io
        });
        let message = self.error.unwrap_or_else(|| {
            "the lanyard daemon refused without a reason (see daemon.log)".into()
        });
        Error::new(kind, message)
    }
}

/// A record named in a request is a plain file name in the state directory, never a path.
pub fn check_record_name(record: &str) -> Result<()> {
    let plain = !record.is_empty()
        && record.ends_with(".json")
        && !record.starts_with('.')
        && !record.contains('/')
        && !record.contains('\0');
    if plain {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "record {record:?} is not a record file name of the state directory (see lanyard inspect --all)"
        )))
    }
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Ask the daemon of `state_dir` one question; `None` when no daemon answers.
pub fn try_request(
    state_dir: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Option<Response>> {
    let Ok(mut stream) = UnixStream::connect(socket_path(state_dir)) else { return Ok(None) };
    let deadline = Some(timeout.max(Duration::from_millis(1)));
    stream.set_read_timeout(deadline).with_context(ErrorKind::Io, || "set a read timeout")?;
    let mut line =
        serde_json::to_vec(request).with_context(ErrorKind::Io, || "encode a request")?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .with_context(ErrorKind::Io, || "send a request to the lanyard daemon")?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(|e| {
        let kind =
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                ErrorKind::Timeout
            } else {
                ErrorKind::Io
            };
        Error::with_source(kind, "read the lanyard daemon's answer", e)
    })?;
    if answer.is_empty() {
        return Err(Error::new(ErrorKind::Io, "the lanyard daemon closed the connection without answering (see daemon.log in the state directory)"));
    }
    let response: Response = serde_json::from_str(&answer)
        .with_context(ErrorKind::Io, || "parse the lanyard daemon's answer")?;
    Ok(Some(response))
}

/// Ask `host`'s daemon, starting it first when none answers: a lock keeps two CLIs from starting
/// two daemons; it is started detached (new session, stdio to `daemon.log` in the state
/// directory, never our stdout, or a caller capturing our output would wait for it) from
/// [`Host::daemon_exe`], inside the host's namespace (whatever namespace the caller's thread
/// is in), since the daemon treats the namespace it runs in as the host.
pub fn request(host: &Host, request: &Request, timeout: Duration) -> Result<Response> {
    let state_dir = host.state.path();
    if let Some(response) = try_request(state_dir, request, timeout)? {
        return Ok(response);
    }
    ensure_daemon(host)?;
    try_request(state_dir, request, timeout)?
        .ok_or_else(|| Error::new(ErrorKind::Io, "the lanyard daemon started but does not answer (see daemon.log in the state directory)"))
}

fn ensure_daemon(host: &Host) -> Result<()> {
    let state_dir = host.state.path();
    let exe = host.daemon_exe()?;
    let _lock = crate::state::lock_file(&state_dir.join(SPAWN_LOCK))?;
    if try_request(state_dir, &Request::Ping, Duration::from_secs(2))?.is_some() {
        return Ok(());
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join(LOG_NAME))
        .with_context(ErrorKind::Io, || format!("open {}", state_dir.join(LOG_NAME).display()))?;
    let _ =
        std::fs::set_permissions(state_dir.join(LOG_NAME), std::fs::Permissions::from_mode(0o600));
    let log_err = log.try_clone().with_context(ErrorKind::Io, || "duplicate the log handle")?;
    let mut command = Command::new(&exe);
    command
        .arg("--state-dir")
        .arg(state_dir)
        .args(
            host.config_file
                .iter()
                .flat_map(|file| [std::ffi::OsStr::new("--config"), file.as_os_str()]),
        )
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // The child leaves our session and process group so a terminal's or a test's signals to us
    // do not reach it.
    crate::sys::start_in_new_session(&mut command);
    // A child inherits the network namespace of the thread that forks it.
    host.netns.run(move || {
        command
            .spawn()
            .map(|_| ())
            .with_context(ErrorKind::Io, || format!("start the lanyard daemon ({})", exe.display()))
    })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if try_request(state_dir, &Request::Ping, Duration::from_secs(1))?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(Error::new(
        ErrorKind::Timeout,
        format!(
            "the lanyard daemon did not start within 5 s (see {})",
            state_dir.join(LOG_NAME).display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_its_kind_and_message_across_the_socket() {
        for kind in [ErrorKind::Usage, ErrorKind::NotFound, ErrorKind::Timeout, ErrorKind::Kernel] {
            let sent = Error::new(kind, "refused: because");
            let line = serde_json::to_string(&Response::error(&sent)).unwrap();
            let received: Response = serde_json::from_str(&line).unwrap();
            let error = received.into_error();
            assert_eq!((error.kind(), error.to_string()), (kind, "refused: because".to_string()));
            assert_eq!(error.exit_code(), sent.exit_code());
        }
        // An answer from a daemon that predates `kind` still maps its timeout.
        let old: Response =
            serde_json::from_str(r#"{"ok":false,"error":"late","timeout":true}"#).unwrap();
        assert_eq!(old.into_error().kind(), ErrorKind::Timeout);
    }

    #[test]
    fn record_names_are_plain_file_names() {
        check_record_name("netns-a.eth1.json").unwrap();
        for bad in ["", "../etc/passwd.json", "a/b.json", ".hidden.json", "x.txt"] {
            assert_eq!(check_record_name(bad).unwrap_err().kind(), ErrorKind::Usage, "{bad:?}");
        }
    }
}
