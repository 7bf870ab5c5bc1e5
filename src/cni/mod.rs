//! lanyard as a CNI plugin (the spec of containernetworking/cni, versions 0.4.0, 1.0.0 and
//! 1.1.0): a runtime execs the binary named by `"type"` with `CNI_COMMAND` and the other
//! `CNI_*` variables set and the network configuration on stdin, and reads a result or an error
//! from stdout. The work is the library's (`attach`, `detach_exact`, `inspect`), on the host
//! namespace the plugin runs in, with the same state directory as the CLI and the daemon.
//! lanyard is the main plugin (`"type": "lanyard"`, possibly with a chained IPAM plugin), or
//! the IPAM plugin of another one (`"ipam": {"type": "lanyard"}`: see [`ipam`]).

pub mod conf;
pub mod ipam;
mod ops;
pub mod result;

use std::io::Read;
use std::path::PathBuf;

use serde_json::json;

use crate::error::{Error, ErrorKind};
use conf::{CniArgs, NetConf, LATEST_VERSION};

/// The CNI variables a plugin reads. They are taken out of the process environment when read,
/// so a lease daemon this process starts does not inherit `CNI_COMMAND` (which would make it a
/// plugin run instead of a daemon).
const CNI_VARIABLES: [&str; 6] =
    ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"];

/// The state directory when neither LANYARD_STATE_DIR nor `"stateDir"` names one: the CLI's.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lanyard";

/// The CNI error codes lanyard uses: the spec's, and 100 up for lanyard's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion,
    UnsupportedField,
    UnknownContainer,
    InvalidEnv,
    Io,
    Decode,
    InvalidConfig,
    TryAgainLater,
    NotAvailable,
    /// 100: the attachment collides with what exists (already attached, a name or MAC taken).
    Conflict,
    /// 101: the kernel refused a change.
    Kernel,
    /// 102: not root, or a permission check failed.
    Permission,
    /// 103: the interface differs from its record (CHECK).
    Drift,
    /// 104: any other failure.
    Other,
    /// A chained IPAM plugin's own code, passed on as it gave it.
    Delegated(u32),
}

impl Code {
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::Conflict => 100,
            Code::Kernel => 101,
            Code::Permission => 102,
            Code::Drift => 103,
            Code::Other => 104,
            Code::Delegated(code) => code,
        }
    }
}

/// An error as the spec lays it out: a code, a short `msg` and the `details`.
#[derive(Debug)]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: details.into() }
    }

    /// A library error under the code that tells the runtime what to do: bad input is the
    /// conf's fault (7), a DHCP server that did not answer may answer later (11).
    pub fn from_lanyard(msg: &str, error: &Error) -> CniError {
        let code = match error.kind() {
            ErrorKind::Usage | ErrorKind::Unsupported | ErrorKind::NotFound => Code::InvalidConfig,
            ErrorKind::Io => Code::Io,
            ErrorKind::Timeout => Code::TryAgainLater,
            ErrorKind::Conflict => Code::Conflict,
            ErrorKind::Kernel => Code::Kernel,
            ErrorKind::Permission => Code::Permission,
            ErrorKind::Docker | ErrorKind::Injected => Code::Other,
        };
        CniError::new(code, msg, error.to_string())
    }

    fn to_json(&self, version: &str) -> serde_json::Value {
        json!({
            "cniVersion": version,
            "code": self.code.number(),
            "msg": self.msg,
            "details": self.details,
        })
    }
}

/// One invocation's environment.
#[derive(Debug, Default)]
pub struct Invocation {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: String,
    /// Where a chained IPAM plugin is looked for.
    pub cni_path: Option<String>,
    /// LANYARD_STATE_DIR, which wins over the conf's `stateDir`.
    pub state_dir: Option<PathBuf>,
    /// LANYARD_HOST_ID, else /etc/machine-id.
    pub host_id: Option<String>,
}

impl Invocation {
    /// Read (and take out of the environment) the CNI variables. Changing the environment is
    /// only sound while no other thread reads it: call this first, before any thread starts,
    /// as [`main`] does.
    pub fn from_env() -> Invocation {
        let mut values: Vec<Option<String>> = Vec::new();
        for name in CNI_VARIABLES {
            values.push(std::env::var(name).ok().filter(|v| !v.is_empty()));
            std::env::remove_var(name);
        }
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Invocation {
            command: values[0].clone().unwrap_or_default(),
            container_id: values[1].clone(),
            netns: values[2].clone(),
            ifname: values[3].clone(),
            args: values[4].clone().unwrap_or_default(),
            cni_path: values[5].clone(),
            state_dir: from_env("LANYARD_STATE_DIR").map(PathBuf::from),
            host_id: from_env("LANYARD_HOST_ID"),
        }
    }

    /// A variable this command needs (code 4 names it when it is missing).
    fn required(&self, name: &str, value: &Option<String>) -> Result<String, CniError> {
        value.clone().ok_or_else(|| {
            CniError::new(
                Code::InvalidEnv,
                "missing environment variable",
                format!("{name} is not set: CNI_COMMAND={} needs it", self.command),
            )
        })
    }

    pub fn container_id(&self) -> Result<String, CniError> {
        self.required("CNI_CONTAINERID", &self.container_id)
    }

    pub fn ifname(&self) -> Result<String, CniError> {
        self.required("CNI_IFNAME", &self.ifname)
    }

    pub fn netns(&self) -> Result<String, CniError> {
        self.required("CNI_NETNS", &self.netns)
    }

    pub fn cni_args(&self) -> Result<CniArgs, CniError> {
        CniArgs::parse(&self.args)
    }
}

/// Run as a CNI plugin: the binary's whole life when `CNI_COMMAND` is set. Returns the exit
/// status; the result or the error is on stdout, anything else on stderr.
pub fn main() -> i32 {
    let invocation = Invocation::from_env();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match read {
        Ok(_) => run(&invocation, &stdin),
        Err(e) => Outcome {
            version: LATEST_VERSION.to_string(),
            result: Err(CniError::new(
                Code::Io,
                "cannot read the network configuration",
                format!("read stdin: {e}"),
            )),
        },
    };
    match outcome.result {
        Ok(Some(output)) => {
            println!("{output}");
            0
        }
        Ok(None) => 0,
        Err(error) => {
            println!("{}", error.to_json(&outcome.version));
            1
        }
    }
}

/// What a command produced, with the version its output speaks.
pub struct Outcome {
    pub version: String,
    /// `Some` output for ADD and VERSION, `None` for the silent commands.
    pub result: Result<Option<serde_json::Value>, CniError>,
}

/// One command on a decoded environment and stdin.
pub fn run(invocation: &Invocation, stdin: &[u8]) -> Outcome {
    if invocation.command == "VERSION" {
        return ops::version(stdin);
    }
    let decoded = serde_json::from_slice::<serde_json::Value>(stdin).unwrap_or_default();
    let as_ipam = ipam::is_ipam_conf(&decoded);
    let parsed = match as_ipam {
        true => ipam::parse(&decoded),
        false => conf::parse(stdin).and_then(|conf| conf.check_common().map(|()| conf)),
    };
    let conf = match parsed {
        Ok(conf) => conf,
        Err(error) => {
            // An error speaks the version asked for when lanyard speaks it.
            let version = serde_json::from_slice::<serde_json::Value>(stdin)
                .ok()
                .and_then(|v| v.get("cniVersion").and_then(|v| v.as_str()).map(str::to_string))
                .filter(|v| conf::check_version(v).is_ok())
                .unwrap_or_else(|| LATEST_VERSION.to_string());
            return Outcome { version, result: Err(error) };
        }
    };
    let result = dispatch(invocation, &conf, stdin, &decoded);
    Outcome { version: conf.cni_version.clone(), result }
}

fn dispatch(
    invocation: &Invocation,
    conf: &NetConf,
    stdin: &[u8],
    decoded: &serde_json::Value,
) -> Result<Option<serde_json::Value>, CniError> {
    match invocation.command.as_str() {
        "ADD" if conf.ipam_of.is_some() => ipam::add(invocation, conf, decoded).map(Some),
        "ADD" => ops::add(invocation, conf, stdin).map(Some),
        "DEL" => ops::del(invocation, conf, stdin).map(|()| None),
        "CHECK" => ops::check(invocation, conf, stdin).map(|()| None),
        "STATUS" => ops::status(invocation, conf)
            .and_then(|()| ops::then_chained_ipam(conf, invocation, stdin))
            .map(|()| None),
        "GC" => ops::gc(invocation, conf)
            .and_then(|()| ops::then_chained_ipam(conf, invocation, stdin))
            .map(|()| None),
        other => Err(CniError::new(
            Code::InvalidEnv,
            "unknown CNI_COMMAND",
            format!(
                "CNI_COMMAND={other:?}: lanyard answers ADD, DEL, CHECK, STATUS, GC and VERSION"
            ),
        )),
    }
}
