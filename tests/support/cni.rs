//! A CNI plugin run as a runtime runs it: `CNI_*` variables and the network configuration on
//! stdin, the result or error read from stdout. The plugin is lanyard itself, or a reference
//! plugin (bridge, macvlan) that runs lanyard as its IPAM plugin through `CNI_PATH`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::cli;
use super::lab::{Netns, TestDir};

/// One plugin run: what the runtime sees.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }

    /// Success with a result on stdout.
    pub fn result(&self) -> Value {
        assert_eq!(self.code, 0, "the plugin failed: {self}");
        self.json()
    }

    /// Success with nothing on stdout (DEL, CHECK, STATUS, GC).
    pub fn silent(&self) {
        assert_eq!(self.code, 0, "the plugin failed: {self}");
        assert_eq!(self.stdout.trim(), "", "nothing on stdout: {self}");
    }

    /// An error result with `code`, in the spec's shape; returns its details.
    pub fn error(&self, code: u64, version: &str) -> String {
        assert_ne!(self.code, 0, "the plugin should have failed: {self}");
        let error = self.json();
        assert_eq!(error["code"], code, "{self}");
        assert_eq!(error["cniVersion"], version, "{self}");
        assert!(error["msg"].as_str().is_some_and(|m| !m.is_empty()), "{self}");
        error["details"].as_str().expect("details").to_string()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\nstdout: {}\nstderr: {}", self.code, self.stdout, self.stderr)
    }
}

/// The runtime's side of one invocation.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: Option<&'a str>,
    pub netns: Option<&'a str>,
    pub ifname: Option<&'a str>,
    pub args: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, container_id: &'a str, netns: &'a Netns) -> Call<'a> {
        Call {
            command,
            container_id: Some(container_id),
            netns: Some(netns.path.to_str().expect("utf-8 path")),
            ifname: Some("eth0"),
            args: None,
        }
    }

    /// A command that takes no container (STATUS, GC, VERSION).
    pub fn bare(command: &'a str) -> Call<'a> {
        Call { command, container_id: None, netns: None, ifname: None, args: None }
    }

    /// lanyard as the plugin.
    pub fn run(&self, host: &Netns, dir: &TestDir, conf: &Value) -> Run {
        run_plugin(host, dir, self, conf.to_string().as_bytes(), &[], &[])
    }

    /// The plugin `program` (a reference plugin's path) with `cni_path` as CNI_PATH, where it
    /// finds its IPAM plugin.
    pub fn run_program(
        &self,
        program: &str,
        cni_path: &str,
        host: &Netns,
        dir: &TestDir,
        conf: &Value,
    ) -> Run {
        let mut command = cli::command_of(program, host, dir);
        command.env("CNI_PATH", cni_path);
        self.run_command(command, conf.to_string().as_bytes())
    }

    fn run_command(&self, mut command: Command, stdin: &[u8]) -> Run {
        command.env("CNI_COMMAND", self.command);
        for (name, value) in [
            ("CNI_CONTAINERID", self.container_id),
            ("CNI_NETNS", self.netns),
            ("CNI_IFNAME", self.ifname),
            ("CNI_ARGS", self.args),
        ] {
            if let Some(value) = value {
                command.env(name, value);
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the plugin");
        child.stdin.take().expect("stdin").write_all(stdin).expect("write the conf");
        let out: Output = child.wait_with_output().expect("wait for the plugin");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// lanyard run as the plugin with `argv`, without the environment variables `unset`
/// (cli::command sets LANYARD_STATE_DIR, which wins over the conf's `stateDir`).
pub fn run_plugin(
    host: &Netns,
    dir: &TestDir,
    call: &Call,
    stdin: &[u8],
    argv: &[&str],
    unset: &[&str],
) -> Run {
    let mut command = cli::command(host, dir, argv);
    for name in unset {
        command.env_remove(name);
    }
    command.env("CNI_PATH", "/nonexistent");
    call.run_command(command, stdin)
}

/// A CNI_PATH directory holding `lanyard` (a link to the binary under test), for a reference
/// plugin to find it as its IPAM plugin; the reference plugins follow in /usr/lib/cni.
pub fn cni_path_with_lanyard(dir: &TestDir) -> String {
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).expect("create the CNI_PATH directory");
    let link = bin.join("lanyard");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_lanyard"), &link)
            .expect("link lanyard into CNI_PATH");
    }
    format!("{}:{}", bin.display(), Path::new("/usr/lib/cni").display())
}
