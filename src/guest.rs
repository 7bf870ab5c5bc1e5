//! Which namespace a guest token names: a Docker container (name or ID), `pid:N`, `netns:NAME`,
//! or a path to a namespace file. Prefixed forms win; a bare token is looked up in Docker first
//! and a bare number is a pid only when Docker has no match; both matching is an error.

use std::path::{Path, PathBuf};

use crate::docker::ContainerRuntime;
use crate::error::{Error, ErrorKind, Result};
use crate::netns::Netns;
use crate::state::GuestRef;

/// A guest as the user typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestSpec {
    Pid(u32),
    Netns(String),
    Path(PathBuf),
    /// A container name or ID, or (when Docker has no match and it is a number) a pid.
    Bare(String),
    /// A CNI runtime's container: its namespace is the path `netns` (CNI_NETNS), its identity
    /// the runtime's (see [`GuestRef::Cni`]). Never parsed from a token: the CNI plugin builds it.
    Cni {
        container_id: String,
        network: String,
        netns: PathBuf,
        stable_name: String,
    },
}

impl GuestSpec {
    pub fn parse(token: &str) -> Result<GuestSpec> {
        if token.is_empty() {
            return Err(Error::usage("empty guest: give a container, pid:N, netns:NAME or a path"));
        }
        if let Some(pid) = token.strip_prefix("pid:") {
            return match pid.parse::<u32>() {
                Ok(pid) if pid > 0 => Ok(GuestSpec::Pid(pid)),
                _ => Err(Error::usage(format!("bad guest {token:?}: pid:N needs a process id"))),
            };
        }
        if let Some(name) = token.strip_prefix("netns:") {
            if name.is_empty() || name.contains('/') {
                return Err(Error::usage(format!("bad guest {token:?}: netns:NAME needs a name")));
            }
            return Ok(GuestSpec::Netns(name.to_string()));
        }
        if token.contains('/') {
            return Ok(GuestSpec::Path(PathBuf::from(token)));
        }
        Ok(GuestSpec::Bare(token.to_string()))
    }
}

/// A recorded guest's namespace, if the guest is alive and its namespace is still the recorded
/// one (a restarted container has a new one), with the pid behind it when there is one.
pub fn locate(
    record: &crate::state::Record,
    docker: impl FnOnce() -> Result<Box<dyn ContainerRuntime>>,
) -> Option<(Netns, Option<u32>)> {
    let (netns, pid) = match &record.guest {
        GuestRef::Netns { name } => (Netns::from_name(name).ok()?, None),
        GuestRef::Path { path } | GuestRef::Cni { netns: path, .. } => {
            (Netns::open(Path::new(path)).ok()?, None)
        }
        GuestRef::Pid { pid } => (Netns::from_pid(*pid).ok()?, Some(*pid)),
        GuestRef::Container { id, .. } => {
            let info = docker().ok()?.inspect(id).ok()??;
            if !info.running || info.pid == 0 {
                return None;
            }
            (Netns::from_pid(info.pid).ok()?, Some(info.pid))
        }
        // Docker holds the container's namespace and tells the plugin nothing to find it by
        // later; the plugin removes what is left of an endpoint itself (DeleteEndpoint).
        GuestRef::DockerEndpoint { .. } => return None,
    };
    (netns.id() == record.netns).then_some((netns, pid))
}

/// A guest found: its namespace (held open) and how to find it again.
#[derive(Debug)]
pub struct Guest {
    pub netns: Netns,
    pub reference: GuestRef,
    /// The pid whose namespace this is, when known (containers and pid: guests).
    pub pid: Option<u32>,
}

impl Guest {
    /// A path another process can open to reach the same namespace (for the announce helper).
    pub fn netns_path(&self) -> PathBuf {
        match (&self.reference, self.pid) {
            (GuestRef::Netns { name }, _) => Path::new("/run/netns").join(name),
            (GuestRef::Path { path } | GuestRef::Cni { netns: path, .. }, _) => PathBuf::from(path),
            (_, Some(pid)) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            _ => self.netns.origin().to_path_buf(),
        }
    }
}

fn process_guest(pid: u32) -> Result<Guest> {
    let netns = Netns::from_pid(pid).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::not_found(format!("no process {pid}"))
        } else {
            e
        }
    })?;
    Ok(Guest { netns, reference: GuestRef::Pid { pid }, pid: Some(pid) })
}

/// Resolve a guest. `docker` is called only for bare tokens, so pid:/netns: guests never pay for
/// a Docker connection.
pub fn resolve(
    spec: &GuestSpec,
    docker: impl FnOnce() -> Result<Box<dyn ContainerRuntime>>,
) -> Result<Guest> {
    match spec {
        GuestSpec::Pid(pid) => process_guest(*pid),
        GuestSpec::Netns(name) => {
            let netns = Netns::from_name(name).map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::not_found(format!("no network namespace named {name} in /run/netns"))
                } else {
                    e
                }
            })?;
            Ok(Guest { netns, reference: GuestRef::Netns { name: name.clone() }, pid: None })
        }
        GuestSpec::Path(path) => {
            let netns = Netns::open(path)?;
            Ok(Guest {
                netns,
                reference: GuestRef::Path { path: path.display().to_string() },
                pid: None,
            })
        }
        GuestSpec::Cni { container_id, network, netns, stable_name } => {
            let handle = Netns::open(netns)?;
            Ok(Guest {
                netns: handle,
                reference: GuestRef::Cni {
                    container_id: container_id.clone(),
                    network: network.clone(),
                    netns: netns.display().to_string(),
                    stable_name: stable_name.clone(),
                    ipam_only: false,
                },
                pid: None,
            })
        }
        GuestSpec::Bare(token) => {
            let numeric = token.parse::<u32>().ok().filter(|pid| *pid > 0);
            let container = match docker().and_then(|runtime| runtime.inspect(token)) {
                Ok(found) => found,
                // Docker unreachable: a bare number can still be a pid, a name cannot be anything.
                Err(e) if numeric.is_some() && e.kind() == ErrorKind::Docker => None,
                Err(e) => return Err(e),
            };
            match (container, numeric) {
                (Some(container), Some(pid)) if Path::new(&format!("/proc/{pid}")).exists() => {
                    Err(Error::conflict(format!(
                        "{token:?} is both container {} and process {pid}: write pid:{pid} or the \
                         container's full ID",
                        container.name
                    )))
                }
                (Some(container), _) => {
                    // Refused by name as well as by namespace identity: the host lanyard is given
                    // need not be the namespace a --net host container shares.
                    if container.network_mode == "host" {
                        return Err(Error::conflict(format!(
                            "container {} uses the host's network (--net host): attaching it would \
                             rewire the host itself",
                            container.name
                        )));
                    }
                    if !container.running || container.pid == 0 {
                        return Err(Error::conflict(format!(
                            "container {} is not running: start it first",
                            container.name
                        )));
                    }
                    let netns = Netns::from_pid(container.pid)
                        .map_err(|e| e.context(format!("container {}", container.name)))?;
                    Ok(Guest {
                        netns,
                        reference: GuestRef::Container { id: container.id, name: container.name },
                        pid: Some(container.pid),
                    })
                }
                (None, Some(pid)) => process_guest(pid),
                (None, None) => Err(Error::not_found(format!(
                    "no container {token:?} (for a named namespace write netns:{token}, for a \
                     process pid:N)"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_forms_win() {
        assert_eq!(GuestSpec::parse("pid:42").unwrap(), GuestSpec::Pid(42));
        assert_eq!(GuestSpec::parse("netns:lab").unwrap(), GuestSpec::Netns("lab".into()));
        assert_eq!(
            GuestSpec::parse("/run/netns/x").unwrap(),
            GuestSpec::Path("/run/netns/x".into())
        );
        assert_eq!(GuestSpec::parse("web").unwrap(), GuestSpec::Bare("web".into()));
        assert_eq!(GuestSpec::parse("4242").unwrap(), GuestSpec::Bare("4242".into()));
        for bad in ["", "pid:", "pid:x", "pid:0", "netns:", "netns:a/b"] {
            assert_eq!(GuestSpec::parse(bad).unwrap_err().kind(), ErrorKind::Usage, "{bad}");
        }
    }
}
