//! The lanyard daemon serving the Docker network plugin, and Debian's docker CLI, as the plugin
//! tests drive them (tests/plugin.rs, tests/plugin_dhcp.rs): a private dockerd inside a lab
//! namespace and the daemon in that same namespace, under a plugin name unique to the run and
//! the test.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::docker::DockerLab;
use super::lab::{run_id, wait_until, Netns, TestDir};

pub const DOCKER_CLI: &str = "/usr/bin/docker";

/// The lanyard daemon of a test, serving plugin `name`: killed at the end, and its socket
/// removed even when the test failed (the path is shared by every dockerd on the machine).
pub struct PluginDaemon {
    pub child: Child,
    pub socket: PathBuf,
}

impl PluginDaemon {
    pub fn start(ns: &Netns, dir: &TestDir, config_text: &str, socket: PathBuf) -> PluginDaemon {
        Self::start_with(ns, dir, config_text, socket, None)
    }

    /// A daemon whose config only names the plugin.
    pub fn for_plugin(ns: &Netns, dir: &TestDir, name: &str) -> PluginDaemon {
        let config = format!("docker_plugin = \"{name}\"\n");
        Self::start(ns, dir, &config, lanyard::plugin::socket_path(name))
    }

    /// [`PluginDaemon::start`] with the daemon following the dockerd at `docker_host` (a lab's
    /// `DockerLab::env`): its watcher then reconciles and starts stranded containers.
    pub fn start_with(
        ns: &Netns,
        dir: &TestDir,
        config_text: &str,
        socket: PathBuf,
        docker_host: Option<(&str, String)>,
    ) -> PluginDaemon {
        let config = dir.join("lanyard.toml");
        std::fs::write(&config, config_text).expect("write the config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .expect("open daemon.log");
        let mut command =
            super::cli::command(ns, dir, &["--config", config.to_str().unwrap(), "daemon"]);
        // Netns::command turns the plugin off; these daemons are for it.
        command.env_remove(lanyard::config::DOCKER_PLUGIN_ENV).stdout(Stdio::null()).stderr(log);
        if let Some((key, value)) = docker_host {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn lanyard daemon");
        let daemon = PluginDaemon { child, socket };
        let state = dir.join("state");
        let answers = || {
            let ping = lanyard::daemon::control::Request::Ping;
            matches!(
                lanyard::daemon::control::try_request(&state, &ping, Duration::from_secs(2)),
                Ok(Some(_))
            )
        };
        assert!(wait_until(Duration::from_secs(10), answers), "the daemon answers");
        daemon
    }
}

impl PluginDaemon {
    /// SIGKILL, as a crash would: the socket stays behind, for the next daemon to replace.
    pub fn crash(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped (reaped just below).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for PluginDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

pub fn plugin_name(tag: &str) -> String {
    format!("lanyard-test-{}-{}-{tag}", run_id(), std::process::id())
}

/// Debian's docker CLI against the lab's dockerd.
pub fn docker(lab: &DockerLab, args: &[&str]) -> Output {
    let (key, value) = lab.env();
    Command::new(DOCKER_CLI)
        .args(args)
        .env(key, value)
        .env("DOCKER_CONFIG", lab.dir.join("cli"))
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

pub fn docker_ok(lab: &DockerLab, dir: &TestDir, args: &[&str]) -> String {
    let out = docker(lab, args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn plugin_store(dir: &TestDir) -> serde_json::Value {
    let path = dir.join("state/docker-plugin/store.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|_| "{}".into())).unwrap()
}

/// `docker network create -d PLUGIN -o parent=PARENT ARGS NET` (ARGS: more options, subnets
/// and gateways), which must succeed.
pub fn create_network(
    lab: &DockerLab,
    dir: &TestDir,
    plugin: &str,
    parent: &str,
    args: &[&str],
    net: &str,
) {
    let parent = format!("parent={parent}");
    let mut create = vec!["network", "create", "-d", plugin, "-o", &parent];
    create.extend_from_slice(args);
    create.push(net);
    docker_ok(lab, dir, &create);
}

/// `docker network create -d PLUGIN --ipam-driver PLUGIN -o parent=PARENT NET`: a DHCP network.
pub fn create_dhcp_network(lab: &DockerLab, dir: &TestDir, plugin: &str, parent: &str, net: &str) {
    create_network(lab, dir, plugin, parent, &["--ipam-driver", plugin], net);
}
