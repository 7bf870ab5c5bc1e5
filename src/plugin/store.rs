//! The plugin's networks and endpoints, in `docker-plugin/store.json` of the state directory:
//! written atomically at every change and read back at start, so a restarted daemon serves the
//! networks Docker already has (Docker never repeats CreateNetwork).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::spec::{MacAddr, MacvlanMode};
use crate::state::DriverKind;

/// The store format this lanyard writes; it reads every format up to this one.
pub const STORE_VERSION: u32 = 1;
const FILE: &str = "store.json";

/// One IPv4 or IPv6 pool of a network, as Docker gave it at CreateNetwork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub pool: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    /// `-o parent=`: a bridge gets veth ports, anything else macvlan children.
    pub parent: String,
    pub macvlan_mode: MacvlanMode,
    /// `-o mtu=`; `None`: the parent's.
    pub mtu: Option<u32>,
    /// `-o slaac=`: the container's link takes router advertisements (see Join).
    pub slaac: bool,
    pub ipv4: Vec<Pool>,
    pub ipv6: Vec<Pool>,
    /// A DHCP network (lanyard's IPAM without `--subnet`): the marker its pool gave Docker as
    /// the gateway (see [`super::ipam`]), by which RequestAddress finds the network.
    #[serde(default)]
    pub dhcp_marker: Option<Ipv4Addr>,
}

impl Network {
    pub fn gateway(&self, ipv6: bool) -> Option<IpAddr> {
        let pools = if ipv6 { &self.ipv6 } else { &self.ipv4 };
        pools.iter().find_map(|p| p.gateway)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub id: String,
    pub driver: DriverKind,
    /// The link Docker moves into the container at Join, made in the host namespace under
    /// this name (Docker names it back to this when the container stops).
    pub link_name: String,
    /// The veth's host end on the bridge (bridge parents only).
    pub host_end: Option<String>,
    pub mac: MacAddr,
    pub addresses: Vec<IpNet>,
    /// The lanyard record of this endpoint (`lanyard inspect --all` shows it).
    pub record: String,
    /// Join happened: the link is in the container (or back, named `link_name`, after it).
    /// Written at Join: `lanyard detach` reads it to refuse an interface in a running container.
    pub joined: bool,
    /// On a DHCP network: the link and record were made at RequestAddress (the record outlives
    /// the endpoint, for the next endpoint of the same MAC, until its lease ends).
    #[serde(default)]
    pub dhcp: bool,
    /// The container's namespace, from Join: where the daemon renews the lease once Docker has
    /// moved the link there.
    #[serde(default)]
    pub sandbox_key: Option<String>,
    /// DeleteEndpoint was answered: the reaper removes it (again at the next start, should the
    /// daemon die first). Nothing uses its MAC's lease any more.
    #[serde(default)]
    pub deleting: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    #[serde(default)]
    pub version: u32,
    #[serde(skip)]
    dir: PathBuf,
    pub networks: BTreeMap<String, Network>,
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// Where the store of `state_dir` lives.
pub fn store_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("docker-plugin")
}

/// The container namespace of the Docker endpoint whose lease is `record_file`, as its Join
/// recorded it (read from disk: the daemon's reaching threads do not share the plugin's memory).
pub fn sandbox_of(state_dir: &Path, record_file: &str) -> Option<PathBuf> {
    let store = Store::load(state_dir).ok()?;
    store
        .endpoints
        .values()
        .filter(|endpoint| endpoint.record == record_file)
        .find_map(|endpoint| endpoint.sandbox_key.as_ref().map(PathBuf::from))
}

impl Store {
    /// The store of `state_dir` (empty when there is none yet).
    pub fn load(state_dir: &Path) -> Result<Store> {
        let dir = store_dir(state_dir);
        let mut store: Store = load_file(
            &dir,
            FILE,
            STORE_VERSION,
            "docker plugin store",
            "Docker then needs its lanyard networks created again",
        )?;
        store.dir = dir;
        Ok(store)
    }

    /// Write the store as it is now (atomically: a crash leaves the old or the new one).
    pub fn save(&mut self) -> Result<()> {
        self.version = STORE_VERSION;
        save_file(&self.dir, FILE, self)
    }
}

/// One MAC a container had on a lanyard DHCP network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub network: String,
    pub mac: MacAddr,
}

/// The Docker watcher's note of the containers on lanyard DHCP networks, by container ID, in
/// `docker-plugin/containers.json`: Docker tells IPAM nothing about containers, so this is how
/// a lease is released when its container is removed for good (also while the daemon was
/// down). Written only by the watcher's thread (the plugin's handlers keep [`Store`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpContainers {
    #[serde(default)]
    pub version: u32,
    #[serde(skip)]
    dir: PathBuf,
    pub containers: BTreeMap<String, Vec<Membership>>,
}

const CONTAINERS_FILE: &str = "containers.json";
/// The format of `containers.json` this lanyard writes (its own: the store's may change alone).
const CONTAINERS_VERSION: u32 = 1;

impl DhcpContainers {
    /// The note of `state_dir` (empty when there is none yet).
    pub fn load(state_dir: &Path) -> Result<DhcpContainers> {
        let dir = store_dir(state_dir);
        let mut note: DhcpContainers = load_file(
            &dir,
            CONTAINERS_FILE,
            CONTAINERS_VERSION,
            "docker plugin's containers",
            "the leases of containers removed since then end on their own",
        )?;
        note.dir = dir;
        Ok(note)
    }

    /// Write the note as it is now (atomically).
    pub fn save(&mut self) -> Result<()> {
        self.version = CONTAINERS_VERSION;
        save_file(&self.dir, CONTAINERS_FILE, self)
    }
}

/// Read `dir/file`, of a format up to `newest` (what it holds is `what`; `if_removed` says what
/// removing a damaged one costs); a missing file is the empty default.
fn load_file<T: DeserializeOwned + Default>(
    dir: &Path,
    file: &str,
    newest: u32,
    what: &str,
    if_removed: &str,
) -> Result<T> {
    let path = dir.join(file);
    match std::fs::read(&path) {
        Ok(bytes) => {
            crate::state::check_format(what, &path, &bytes, newest)?;
            serde_json::from_slice::<T>(&bytes).map_err(|e| {
                Error::with_source(
                    ErrorKind::Io,
                    format!(
                        "read the {what} from {} (fix or remove it; {if_removed})",
                        path.display()
                    ),
                    e,
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(Error::with_source(ErrorKind::Io, format!("read {}", path.display()), e)),
    }
}

/// Write `value` to `dir/file` atomically (a crash leaves the old or the new one).
fn save_file<T: Serialize>(dir: &Path, file: &str, value: &T) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(ErrorKind::Io, || format!("create {}", dir.display()))?;
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::with_source(ErrorKind::Io, format!("serialize {file}"), e))?;
    crate::state::write_atomically(dir, file, &bytes)
}
