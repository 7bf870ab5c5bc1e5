//! Docker, reduced to the one question lanyard asks it: which process (and so which network
//! namespace) is this container, and does it share the host's network? The trait keeps the rest
//! of lanyard testable without a daemon; [`DockerApi`] answers it over the Engine API.
//!
//! The CLI's budget for a whole container attach is a few milliseconds, so a lookup is one HTTP
//! request: the API version is pinned instead of negotiated (a daemon that refuses it costs one
//! more), and the client runs on a current-thread runtime that spawns no worker threads.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::ContainerInspectResponse;
use bollard::{BollardRequest, ClientVersion, Docker};

use crate::error::{Error, ErrorKind, Result};

/// What lanyard needs to know about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The full 64-hex-digit ID.
    pub id: String,
    /// The name without Docker's leading '/'.
    pub name: String,
    /// PID of the container's init process in our PID namespace; 0 when it is not running.
    pub pid: u32,
    pub running: bool,
    /// `HostConfig.NetworkMode`: "none", "bridge", "host", "container:<id>", a network name.
    pub network_mode: String,
}

pub trait ContainerRuntime {
    /// Look a container up by name or by (a prefix of) its ID. `Ok(None)` means Docker knows no
    /// such container; `Err` means Docker could not be asked or gave an unusable answer.
    fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>>;

    /// The container behind `name_or_id`, which must exist and be running: what an attach needs.
    fn inspect_running(&self, name_or_id: &str) -> Result<ContainerInfo> {
        match self.inspect(name_or_id)? {
            None => Err(Error::not_found(format!("no such container \"{name_or_id}\""))),
            Some(info) if !info.running => Err(Error::conflict(format!(
                "container \"{}\" is not running: start it first",
                display_name(name_or_id, &info)
            ))),
            Some(info) => Ok(info),
        }
    }
}

/// The user's own word for the container when it is a name, its name when they gave an ID.
fn display_name<'a>(token: &'a str, info: &'a ContainerInfo) -> &'a str {
    let token = token.strip_prefix('/').unwrap_or(token);
    if token == info.name || info.name.is_empty() {
        token
    } else {
        &info.name
    }
}

/// What the daemon's watcher reads about a container: its [`ContainerInfo`] and what its
/// declarations are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDetails {
    pub info: ContainerInfo,
    /// `Config.Hostname`.
    pub hostname: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// `Config.Env`, "NAME=value" each.
    pub env: Vec<String>,
    /// `HostConfig.RestartPolicy.Name`: "", "no", "always", "unless-stopped", "on-failure".
    pub restart_policy: String,
    /// `State.Error`: why the last start failed ("" when it did not, or it was stopped).
    pub state_error: String,
    /// The IDs of the networks the container is connected to.
    pub network_ids: Vec<String>,
    /// The container's MAC on each of those networks, by network ID (where Docker gives one).
    pub network_macs: std::collections::BTreeMap<String, String>,
}

/// One container event as Docker sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: String,
    /// The container's name as the event gives it (empty if it gives none).
    pub name: String,
    /// "start", "die", "destroy".
    pub action: String,
    /// The event's own time, nanoseconds since the Unix epoch (0 if Docker gave none).
    pub at_nanos: i64,
}

/// Where the daemon listens, as `DOCKER_HOST` spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    Unix(PathBuf),
    /// `host:port` from a `tcp://` or `http://` address (plain HTTP; TLS is not built in).
    Tcp(String),
}

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

impl DockerHost {
    /// From `DOCKER_HOST`, or the default socket when it is unset or empty (as the docker CLI
    /// treats an empty one).
    pub fn from_env() -> Result<DockerHost> {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => DockerHost::parse(&host),
            _ => Ok(DockerHost::Unix(PathBuf::from(DEFAULT_SOCKET))),
        }
    }

    pub fn parse(host: &str) -> Result<DockerHost> {
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(Error::usage(format!("DOCKER_HOST {host:?} names no socket")));
            }
            return Ok(DockerHost::Unix(PathBuf::from(path)));
        }
        for scheme in ["tcp://", "http://"] {
            if let Some(addr) = host.strip_prefix(scheme) {
                let addr = addr.trim_end_matches('/');
                if addr.is_empty() {
                    return Err(Error::usage(format!("DOCKER_HOST {host:?} names no address")));
                }
                // bollard does no TLS without its "ssl" feature; sending plain HTTP to a daemon
                // that expects TLS would fail with a confusing protocol error instead.
                if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
                    return Err(Error::unsupported(format!(
                        "DOCKER_TLS_VERIFY for DOCKER_HOST {host:?} (TLS to dockerd)"
                    )));
                }
                return Ok(DockerHost::Tcp(addr.to_string()));
            }
        }
        Err(Error::unsupported(format!(
            "DOCKER_HOST {host:?}: only unix:// and tcp:// addresses are supported"
        )))
    }
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerHost::Unix(path) => write!(f, "unix://{}", path.display()),
            DockerHost::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// The Engine API version spoken first: docker 20.10's, the oldest lanyard targets. A daemon
/// that no longer speaks it says which version it wants, and the client switches once.
const PINNED_VERSION: ClientVersion = ClientVersion { major_version: 1, minor_version: 41 };

/// How long one lookup may take before the daemon counts as hung.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// [`ContainerRuntime`] over the Docker Engine API. The public API blocks; do not call it from
/// inside a tokio runtime (use [`DockerApi::inspect_async`] there).
pub struct DockerApi {
    host: DockerHost,
    runtime: tokio::runtime::Runtime,
    /// Built on first use, because a missing socket is an answer for `inspect` ("Docker is not
    /// reachable"), not a reason to refuse constructing the client; rebuilt when the daemon
    /// asks for another API version.
    client: Mutex<Option<Docker>>,
    first_version: ClientVersion,
    timeout: Duration,
}

impl DockerApi {
    /// A client for the daemon `DOCKER_HOST` names (default `unix:///var/run/docker.sock`). Sends
    /// nothing: a daemon that is down shows up on the first lookup.
    pub fn connect() -> Result<Self> {
        Self::with_host(DockerHost::from_env()?)
    }

    pub fn with_host(host: DockerHost) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::with_source(ErrorKind::Io, "start the Docker client runtime", e))?;
        Ok(DockerApi {
            host,
            runtime,
            client: Mutex::new(None),
            first_version: PINNED_VERSION,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Speak Engine API `major.minor` first instead of 1.41 (a daemon that refuses it still
    /// gets the version it asks for).
    pub fn with_api_version(mut self, major: usize, minor: usize) -> Self {
        self.first_version = ClientVersion { major_version: major, minor_version: minor };
        self.client = Mutex::new(None);
        self
    }

    pub fn host(&self) -> &DockerHost {
        &self.host
    }

    /// [`ContainerRuntime::inspect`] for callers that already run inside a tokio runtime.
    pub async fn inspect_async(&self, name_or_id: &str) -> Result<Option<ContainerInfo>> {
        let token = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        // Anything else cannot name a container, and must not reach the URL path, where "../"
        // or "?" would turn the lookup into another request.
        if !is_container_token(token) {
            return Ok(None);
        }
        self.within(&format!("inspect container \"{token}\""), self.inspect_request(token)).await
    }

    /// `request`, or a Timeout error naming `what` when Docker does not answer in time.
    async fn within<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.timeout, request).await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Timeout,
                format!("{what}: Docker at {} did not answer within {:?}", self.host, self.timeout),
            ))
        })
    }

    async fn inspect_request(&self, token: &str) -> Result<Option<ContainerInfo>> {
        match self.inspect_response(token).await? {
            Some(response) => container_info(response, token).map(Some),
            None => Ok(None),
        }
    }

    /// Everything declarations read about a container (`Ok(None)`: Docker knows no such
    /// container). Blocking, like [`ContainerRuntime::inspect`].
    pub fn inspect_details(&self, id: &str) -> Result<Option<ContainerDetails>> {
        self.runtime.block_on(async {
            if !is_container_token(id) {
                return Ok(None);
            }
            let what = format!("inspect container \"{id}\"");
            match self.within(&what, self.inspect_response(id)).await? {
                None => Ok(None),
                Some(response) => {
                    let config = response.config.clone().unwrap_or_default();
                    let restart_policy = response
                        .host_config
                        .as_ref()
                        .and_then(|hc| hc.restart_policy.as_ref())
                        .and_then(|policy| policy.name)
                        .map(|name| name.to_string())
                        .unwrap_or_default();
                    let state_error = response
                        .state
                        .as_ref()
                        .and_then(|state| state.error.clone())
                        .unwrap_or_default();
                    let network_ids = response
                        .network_settings
                        .as_ref()
                        .and_then(|settings| settings.networks.as_ref())
                        .map(|networks| {
                            networks.values().filter_map(|n| n.network_id.clone()).collect()
                        })
                        .unwrap_or_default();
                    let network_macs = response
                        .network_settings
                        .as_ref()
                        .and_then(|settings| settings.networks.as_ref())
                        .map(|networks| {
                            networks
                                .values()
                                .filter_map(|n| {
                                    Some((n.network_id.clone()?, n.mac_address.clone()?))
                                })
                                .filter(|(_, mac)| !mac.is_empty())
                                .collect()
                        })
                        .unwrap_or_default();
                    let info = container_info(response, id)?;
                    Ok(Some(ContainerDetails {
                        info,
                        hostname: config.hostname.unwrap_or_default(),
                        labels: config.labels.unwrap_or_default().into_iter().collect(),
                        env: config.env.unwrap_or_default(),
                        restart_policy,
                        state_error,
                        network_ids,
                        network_macs,
                    }))
                }
            }
        })
    }

    /// Start a container (blocking, like the rest of this API).
    pub fn start_container(&self, id: &str) -> Result<()> {
        let what = format!("start container \"{id}\"");
        self.runtime.block_on(self.within(&what, async {
            self.client(None)?
                .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
                .await
                .map_err(|e| self.request_error(&what, e))
        }))
    }

    /// Every container Docker has, running or not: (full ID, running).
    pub fn list_containers(&self) -> Result<Vec<(String, bool)>> {
        let what = "list containers";
        self.runtime.block_on(async {
            let options = bollard::query_parameters::ListContainersOptions {
                all: true,
                ..Default::default()
            };
            let request = async {
                self.client(None)?
                    .list_containers(Some(options))
                    .await
                    .map_err(|e| self.request_error(what, e))
            };
            let summaries = self.within(what, request).await?;
            Ok(summaries
                .into_iter()
                .filter_map(|c| {
                    let running = c
                        .state
                        .is_some_and(|s| s == bollard::models::ContainerSummaryStateEnum::RUNNING);
                    c.id.map(|id| (id, running))
                })
                .collect())
        })
    }

    /// Follow Docker's container events (start, die, destroy) until the stream ends or fails,
    /// calling `each` per event; returns why it ended. `connected` is called once the daemon
    /// has accepted the subscription, before any event: events from then on are not missed.
    pub fn follow_container_events(
        &self,
        connected: &mut dyn FnMut(),
        each: &mut dyn FnMut(ContainerEvent),
    ) -> Error {
        use futures_util::StreamExt;
        self.runtime.block_on(async {
            // A ping first: a subscription to a daemon that is down fails only at the first
            // read, and "connected" must mean connected.
            let client = match self.client(None) {
                Ok(client) => client,
                Err(e) => return e,
            };
            let ping = async { client.ping().await.map_err(|e| self.request_error("ping", e)) };
            if let Err(e) = self.within("ping", ping).await {
                return e;
            }
            let filters = std::collections::HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "event".to_string(),
                    vec!["start".to_string(), "die".to_string(), "destroy".to_string()],
                ),
            ]);
            let options = bollard::query_parameters::EventsOptions {
                filters: Some(filters),
                ..Default::default()
            };
            let mut stream = Box::pin(client.events(Some(options)));
            connected();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(message) => {
                        let Some(actor) = message.actor else { continue };
                        let Some(id) = actor.id else { continue };
                        let name = actor
                            .attributes
                            .and_then(|mut attributes| attributes.remove("name"))
                            .unwrap_or_default();
                        let action = message.action.unwrap_or_default();
                        let at_nanos = message.time_nano.unwrap_or(0);
                        each(ContainerEvent { id, name, action, at_nanos });
                    }
                    Err(e) => return self.request_error("follow container events", e),
                }
            }
            Error::new(
                ErrorKind::Docker,
                format!("Docker at {} closed the event stream", self.host),
            )
        })
    }

    /// The container's whole inspect answer; `Ok(None)` when Docker knows no such container.
    async fn inspect_response(&self, token: &str) -> Result<Option<ContainerInspectResponse>> {
        let mut client = self.client(None)?;
        let mut switched = false;
        loop {
            match client.inspect_container(token, None).await {
                Ok(response) => return Ok(Some(response)),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {
                    return Ok(None)
                }
                // 20.10 answers 500 here, later releases 400.
                Err(BollardError::DockerResponseServerError { ref message, .. })
                    if message.to_ascii_lowercase().contains("multiple ids found") =>
                {
                    return Err(Error::usage(format!(
                        "\"{token}\" matches more than one container ID: give more of the ID or the name"
                    )))
                }
                Err(err) => match daemon_wants_version(&err) {
                    Some(version) if !switched => {
                        client = self.client(Some(version))?;
                        switched = true;
                    }
                    _ => {
                        return Err(self.request_error(&format!("inspect container \"{token}\""), err))
                    }
                },
            }
        }
    }

    /// The shared client; `version` replaces it with one that speaks that API version.
    fn client(&self, version: Option<ClientVersion>) -> Result<Docker> {
        let mut slot = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let (Some(client), None) = (slot.as_ref(), version) {
            return Ok(client.clone());
        }
        let version = version.unwrap_or(self.first_version);
        let secs = self.timeout.as_secs().max(1);
        let client = match &self.host {
            DockerHost::Unix(path) => Docker::connect_with_unix(path_str(path)?, secs, &version),
            DockerHost::Tcp(addr) => Docker::connect_with_http(addr, secs, &version),
        }
        .map_err(|err| self.unreachable(err))?
        .with_request_modifier(move |request| with_version_prefix(request, version));
        *slot = Some(client.clone());
        Ok(client)
    }

    fn unreachable(&self, err: BollardError) -> Error {
        let hint = match &self.host {
            DockerHost::Unix(_) => "is dockerd running? DOCKER_HOST chooses another socket",
            DockerHost::Tcp(_) => "is dockerd listening there?",
        };
        let message = format!("Docker is not reachable at {} ({hint})", self.host);
        // hyper's own text for a refused or missing socket is only "client error (Connect)";
        // the errno underneath says which, and lets callers test it.
        match transport_errno(&err) {
            Some(errno) => Error::with_source(
                ErrorKind::Docker,
                message,
                std::io::Error::from_raw_os_error(errno),
            ),
            None => Error::with_source(ErrorKind::Docker, message, err),
        }
    }

    /// The error of request `what` ("inspect container \"web\"", "list containers").
    fn request_error(&self, what: &str, err: BollardError) -> Error {
        match err {
            BollardError::DockerResponseServerError { .. } | BollardError::JsonDataError { .. } => {
                Error::with_source(ErrorKind::Docker, format!("{what} at {}", self.host), err)
            }
            BollardError::RequestTimeoutError => Error::with_source(
                ErrorKind::Timeout,
                format!("{what}: Docker at {} did not answer", self.host),
                err,
            ),
            // Everything else is the transport: no socket, refused, reset, not HTTP.
            _ => self.unreachable(err),
        }
    }
}

impl ContainerRuntime for DockerApi {
    fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>> {
        self.runtime.block_on(self.inspect_async(name_or_id))
    }
}

/// bollard 0.21 builds ".../v1.41/containers/x/json" and then joins the absolute API path onto
/// it, which drops the prefix: requests go out unversioned and the daemon answers in the shape
/// of its newest API, which a newer daemon may change under bollard's typed models. Put the
/// pinned version back (unless a fixed bollard already sent one).
fn with_version_prefix(mut request: BollardRequest, version: ClientVersion) -> BollardRequest {
    let uri = request.uri();
    let path = uri.path();
    if path.strip_prefix("/v").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())) {
        return request;
    }
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return request;
    };
    let tail = uri.path_and_query().map_or(path, |pq| pq.as_str());
    let versioned = format!(
        "{scheme}://{authority}/v{}.{}{tail}",
        version.major_version, version.minor_version
    );
    if let Ok(versioned) = versioned.parse() {
        *request.uri_mut() = versioned;
    }
    request
}

fn transport_errno(err: &BollardError) -> Option<i32> {
    if let BollardError::SocketNotFoundError(_) = err {
        return Some(libc::ENOENT);
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(errno) = e.downcast_ref::<std::io::Error>().and_then(|io| io.raw_os_error()) {
            return Some(errno);
        }
        cause = e.source();
    }
    None
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        Error::usage(format!("Docker socket path {} is not valid UTF-8", path.display()))
    })
}

/// Docker names are `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; IDs and their prefixes are hex, a subset.
fn is_container_token(token: &str) -> bool {
    let mut chars = token.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The version a daemon asks for when it refuses ours with a 400.
fn daemon_wants_version(err: &BollardError) -> Option<ClientVersion> {
    match err {
        BollardError::DockerResponseServerError { status_code: 400, message } => {
            version_the_daemon_wants(message)
        }
        _ => None,
    }
}

/// From "client version 1.41 is too old. Minimum supported API version is 1.44, ..." or
/// "client version 1.53 is too new. Maximum supported API version is 1.41".
fn version_the_daemon_wants(message: &str) -> Option<ClientVersion> {
    const MARK: &str = "supported API version is ";
    if !message.starts_with("client version ") {
        return None;
    }
    let rest = &message[message.find(MARK)? + MARK.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
    let (major, minor) = rest[..end].trim_end_matches('.').split_once('.')?;
    Some(ClientVersion { major_version: major.parse().ok()?, minor_version: minor.parse().ok()? })
}

fn container_info(response: ContainerInspectResponse, token: &str) -> Result<ContainerInfo> {
    let id = response.id.filter(|id| !id.is_empty()).ok_or_else(|| {
        Error::new(
            ErrorKind::Docker,
            format!("inspect container \"{token}\": Docker's answer has no container ID"),
        )
    })?;
    let name = response.name.unwrap_or_default();
    let name = name.strip_prefix('/').unwrap_or(&name).to_string();
    let state = response.state.unwrap_or_default();
    let pid = state.pid.and_then(|pid| u32::try_from(pid).ok()).unwrap_or(0);
    // A restarting container reports Running with no process yet: nothing to attach to.
    let running = state.running.unwrap_or(false) && pid != 0;
    let network_mode = response.host_config.and_then(|hc| hc.network_mode).unwrap_or_default();
    Ok(ContainerInfo { id, name, pid: if running { pid } else { 0 }, running, network_mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_host() {
        assert_eq!(
            DockerHost::parse("unix:///tmp/x/docker.sock").unwrap(),
            DockerHost::Unix(PathBuf::from("/tmp/x/docker.sock"))
        );
        assert_eq!(
            DockerHost::parse("tcp://127.0.0.1:2375").unwrap(),
            DockerHost::Tcp("127.0.0.1:2375".into())
        );
        assert_eq!(DockerHost::parse("ssh://me@box").unwrap_err().kind(), ErrorKind::Unsupported);
        assert_eq!(DockerHost::parse("unix://").unwrap_err().kind(), ErrorKind::Usage);
        assert_eq!(
            DockerHost::Unix(PathBuf::from("/run/d.sock")).to_string(),
            "unix:///run/d.sock"
        );
    }

    #[test]
    fn reads_the_version_out_of_the_daemons_complaint() {
        let old = "client version 1.41 is too old. Minimum supported API version is 1.44, \
                   please upgrade your client to a newer version";
        let v = version_the_daemon_wants(old).unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 44));
        let new = "client version 1.53 is too new. Maximum supported API version is 1.41";
        let v = version_the_daemon_wants(new).unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(version_the_daemon_wants("invalid reference format").is_none());
    }

    #[test]
    fn only_name_and_id_shapes_reach_the_daemon() {
        for ok in ["web", "c1", "a", "0f3e", "my_app.v2-1"] {
            assert!(is_container_token(ok), "{ok}");
        }
        for bad in ["", "-x", "../info", "a/b", "x?all=1", "web ", "_a", "é"] {
            assert!(!is_container_token(bad), "{bad}");
        }
    }

    #[test]
    fn puts_the_version_prefix_back() {
        let v = ClientVersion { major_version: 1, minor_version: 41 };
        let request = |uri: &str| {
            let mut request = BollardRequest::new(bollard::body_full(Default::default()));
            *request.uri_mut() = uri.parse().unwrap();
            request
        };
        let out = with_version_prefix(request("unix://2f612e736f636b/containers/web/json"), v);
        assert_eq!(out.uri().to_string(), "unix://2f612e736f636b/v1.41/containers/web/json");
        let out = with_version_prefix(request("http://127.0.0.1:2375/volumes?x=1"), v);
        assert_eq!(out.uri().to_string(), "http://127.0.0.1:2375/v1.41/volumes?x=1");
        let out = with_version_prefix(request("http://127.0.0.1:2375/v1.44/_ping"), v);
        assert_eq!(out.uri().to_string(), "http://127.0.0.1:2375/v1.44/_ping");
    }

    struct Fixed(Option<ContainerInfo>);
    impl ContainerRuntime for Fixed {
        fn inspect(&self, _: &str) -> Result<Option<ContainerInfo>> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn inspect_running_explains_missing_and_stopped() {
        let err = Fixed(None).inspect_running("web").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "no such container \"web\"");
        let stopped = ContainerInfo {
            id: "f".repeat(64),
            name: "web".into(),
            pid: 0,
            running: false,
            network_mode: "none".into(),
        };
        let err = Fixed(Some(stopped.clone())).inspect_running("fff").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(err.to_string(), "container \"web\" is not running: start it first");
        let running = ContainerInfo { pid: 42, running: true, ..stopped };
        assert_eq!(Fixed(Some(running.clone())).inspect_running("/web").unwrap(), running);
    }

    #[test]
    fn a_failed_request_is_named_in_its_error() {
        let api = DockerApi::with_host(DockerHost::Unix("/run/x.sock".into())).unwrap();
        let refused =
            || BollardError::DockerResponseServerError { status_code: 500, message: "boom".into() };
        for what in ["list containers", "start container \"web\"", "ping"] {
            let error = api.request_error(what, refused());
            assert_eq!(error.kind(), ErrorKind::Docker);
            assert!(
                error.to_string().starts_with(&format!("{what} at unix:///run/x.sock")),
                "{error}"
            );
        }
    }

    #[test]
    fn maps_an_inspect_answer() {
        let json = r#"{"Id":"abc","Name":"/web","State":{"Running":true,"Pid":1234},
                      "HostConfig":{"NetworkMode":"host"}}"#;
        let info = container_info(serde_json::from_str(json).unwrap(), "web").unwrap();
        assert_eq!(info.name, "web");
        assert_eq!((info.pid, info.running), (1234, true));
        assert_eq!(info.network_mode, "host");
        let json =
            r#"{"Id":"abc","Name":"/web","State":{"Running":true,"Restarting":true,"Pid":0}}"#;
        let info = container_info(serde_json::from_str(json).unwrap(), "web").unwrap();
        assert_eq!((info.pid, info.running), (0, false));
    }
}
