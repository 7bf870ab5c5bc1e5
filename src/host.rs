//! "The host": an explicit namespace handle plus lanyard's state directory and identity. Every
//! library entry point takes one; the CLI builds it from the namespace it runs in, tests from a
//! test namespace. Nothing in the library assumes the calling thread's namespace.

use std::path::{Path, PathBuf};

use crate::docker::{ContainerRuntime, DockerApi, DockerHost};
use crate::error::Result;
use crate::netns::Netns;
use crate::state::StateDir;

pub struct Host {
    pub netns: Netns,
    pub state: StateDir,
    /// Seeds stable MACs and host interface names (machine-id or --host-id).
    pub host_id: String,
    /// Where Docker listens; `None` reads DOCKER_HOST (default /var/run/docker.sock).
    pub docker_host: Option<DockerHost>,
    /// The `lanyard` binary that runs the lease daemon when none answers; `None` is this
    /// process's own executable (right for the CLI; a program embedding the library names it).
    pub daemon_exe: Option<PathBuf>,
    /// The config file a daemon started on demand reads (`--config`), so it is the file the
    /// caller read; `None` leaves the daemon to its own lookup.
    pub config_file: Option<PathBuf>,
}

impl Host {
    pub fn new(netns: Netns, state_dir: &Path, host_id: impl Into<String>) -> Result<Host> {
        Ok(Host {
            netns,
            state: StateDir::open(state_dir)?,
            host_id: host_id.into(),
            docker_host: None,
            daemon_exe: None,
            config_file: None,
        })
    }

    /// The same host for another thread (the namespace handle is duplicated).
    pub fn try_clone(&self) -> Result<Host> {
        Ok(Host {
            netns: self.netns.try_clone()?,
            state: StateDir::open(self.state.path())?,
            host_id: self.host_id.clone(),
            docker_host: self.docker_host.clone(),
            daemon_exe: self.daemon_exe.clone(),
            config_file: self.config_file.clone(),
        })
    }

    pub fn with_docker(mut self, docker_host: DockerHost) -> Host {
        self.docker_host = Some(docker_host);
        self
    }

    /// Start the lease daemon from `exe` when none answers (see [`Host::daemon_exe`]).
    pub fn with_daemon_exe(mut self, exe: impl Into<PathBuf>) -> Host {
        self.daemon_exe = Some(exe.into());
        self
    }

    /// Start the lease daemon (when none answers) with `--config FILE`.
    pub fn with_config_file(mut self, file: impl Into<PathBuf>) -> Host {
        self.config_file = Some(file.into());
        self
    }

    /// The binary that runs `lanyard daemon`.
    pub fn daemon_exe(&self) -> Result<PathBuf> {
        match &self.daemon_exe {
            Some(exe) => Ok(exe.clone()),
            None => std::env::current_exe().map_err(|e| {
                crate::error::Error::with_source(
                    crate::error::ErrorKind::Io,
                    "find the lanyard binary to start the lease daemon",
                    e,
                )
            }),
        }
    }

    /// A Docker client, built only when a bare guest token needs it.
    pub fn docker(&self) -> Result<Box<dyn ContainerRuntime>> {
        let api = match &self.docker_host {
            Some(host) => DockerApi::with_host(host.clone())?,
            None => DockerApi::connect()?,
        };
        Ok(Box::new(api))
    }
}
