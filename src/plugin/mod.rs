//! The Docker network and IPAM plugin (`docker network create -d lanyard`), served by
//! `lanyard daemon` on Docker's discovery socket `/run/docker/plugins/NAME.sock`.
//!
//! Docker drives a remote driver with HTTP/1.1 POSTs of JSON on that socket (see
//! [`network`] and [`ipam`] for the calls). The server is a thread of its own that accepts
//! connections and gives each one a thread (bounded in number): no handler ever calls the
//! Engine API or waits on dockerd, so dockerd restoring its containers at boot, which calls
//! the plugin, never waits on something that waits on dockerd.
//!
//! Errors come in the two shapes Docker reads: `{"Err": ...}` for the network driver and
//! `{"Error": ...}` for IPAM (which also carries `Err`: Docker's plugin client takes the
//! message of a non-200 answer from `Err`).

pub mod ipam;
pub mod network;
pub(crate) mod reaper;
pub mod removed;
pub mod store;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::host::Host;

/// Where Docker looks for plugin sockets, whatever its `--exec-root`.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// A request body larger than this is refused (Docker's are a few hundred bytes).
const MAX_BODY: usize = 1 << 20;
/// A header line longer than this is refused.
const MAX_LINE: usize = 8192;
/// Connections served at once; more wait in the listen queue until one ends.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection beyond [`MAX_CONNECTIONS`] waits for a slot before it is closed.
const SLOT_WAIT: Duration = Duration::from_secs(10);
/// Docker keeps connections open between calls; one idle this long is closed (Docker's
/// client opens a new one for the next call).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The socket path of plugin `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(PLUGIN_DIR).join(format!("{name}.sock"))
}

/// What the handlers share: the host (its namespace and state directory) and the plugin's
/// networks and endpoints.
pub struct Plugin {
    pub host: Host,
    pub store: Mutex<store::Store>,
    /// Markers of DHCP pools handed to Docker and not yet a stored network's (see [`ipam`]).
    pub dhcp_pools: Mutex<std::collections::BTreeSet<std::net::Ipv4Addr>>,
    /// Deletes static endpoints' links after DeleteEndpoint answered (see [`reaper`]).
    reaper: reaper::Reaper,
}

/// A served plugin socket; dropping it unlinks the socket if it is still this one (a newer
/// daemon may have replaced it).
pub struct Served {
    path: PathBuf,
    identity: (u64, u64),
}

impl Served {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Deletions Docker was told are done are finished before the daemon goes.
        reaper::drain(reaper::DRAIN_WAIT);
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serve plugin `name` for `host` from a new thread. A socket left by a dead process is
/// removed first; one that a live process answers on is refused (two daemons would take each
/// other's requests).
pub fn start(host: Host, name: &str) -> Result<Served> {
    if let Some(why) = crate::config::bad_docker_plugin_name(name) {
        return Err(Error::usage(format!("docker plugin name {name:?} {why}")));
    }
    let store = store::Store::load(host.state.path())?;
    let path = socket_path(name);
    std::fs::create_dir_all(PLUGIN_DIR)
        .with_context(ErrorKind::Io, || format!("create {PLUGIN_DIR}"))?;
    remove_stale_socket(&path)?;
    let listener = UnixListener::bind(&path)
        .with_context(ErrorKind::Io, || format!("listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(ErrorKind::Io, || format!("chmod {}", path.display()))?;
    let meta = std::fs::symlink_metadata(&path)
        .with_context(ErrorKind::Io, || format!("stat {}", path.display()))?;
    let (reaper, jobs) = reaper::Reaper::new();
    let plugin = Arc::new(Plugin {
        host,
        store: Mutex::new(store),
        dhcp_pools: Mutex::new(Default::default()),
        reaper,
    });
    std::thread::Builder::new()
        .name("docker-plugin-reaper".into())
        .spawn({
            let plugin = plugin.clone();
            move || reaper::run(plugin, jobs)
        })
        .with_context(ErrorKind::Io, || "start the docker plugin's reaper thread")?;
    // Endpoints whose DeleteEndpoint a previous daemon answered but did not finish.
    let unfinished: Vec<store::Endpoint> = {
        let store = plugin.store.lock().unwrap_or_else(|e| e.into_inner());
        store.endpoints.values().filter(|e| e.deleting).cloned().collect()
    };
    for endpoint in unfinished {
        plugin.reaper.queue(endpoint);
    }
    let served = Served { path: path.clone(), identity: (meta.dev(), meta.ino()) };
    let slots: Slots = Arc::new((Mutex::new(0), Condvar::new()));
    std::thread::Builder::new()
        .name("docker-plugin".into())
        .spawn(move || accept_loop(listener, plugin, slots))
        .with_context(ErrorKind::Io, || "start the docker plugin's thread")?;
    Ok(served)
}

/// What `lanyard status` shows of the plugin: its socket and whether it is served (and why
/// not), and each network (Docker names none to a plugin: by its ID) with its parent, its
/// addressing, its endpoints and, on a DHCP network, the leases the daemon holds for it.
/// `leases` is (network ID, lease state) per lease of a Docker endpoint.
pub fn status_view(
    name: Option<&str>,
    served: Option<&Served>,
    error: Option<&str>,
    state_dir: &Path,
    leases: &[(String, String)],
) -> Value {
    let Some(name) = name else {
        return json!({ "Serving": false, "Why": "docker_plugin = \"\" in the config" });
    };
    let why = match (served, error) {
        (Some(_), _) => None,
        (None, Some(error)) => Some(error.to_string()),
        (None, None) => Some("stopped".to_string()),
    };
    let (networks, store_error) = match store::Store::load(state_dir) {
        Ok(store) => (network_views(&store, leases), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    json!({
        "Name": name,
        "Socket": socket_path(name),
        "Serving": served.is_some(),
        "Why": why,
        "Networks": networks,
        "StoreError": store_error,
    })
}

fn network_views(store: &store::Store, leases: &[(String, String)]) -> Vec<Value> {
    store
        .networks
        .values()
        .map(|network| {
            let endpoints = store.endpoints.values().filter(|e| e.network == network.id).count();
            let mut view = json!({
                "Id": &network.id[..network.id.len().min(12)],
                "Parent": network.parent,
                "Addressing": if network.dhcp_marker.is_some() { "dhcp" } else { "static" },
                "Endpoints": endpoints,
            });
            if network.dhcp_marker.is_some() {
                let mut by_state = std::collections::BTreeMap::<&str, usize>::new();
                for (_, state) in leases.iter().filter(|(id, _)| *id == network.id) {
                    *by_state.entry(state).or_default() += 1;
                }
                view["Leases"] = json!(by_state.values().sum::<usize>());
                view["LeasesByState"] = json!(by_state);
            }
            view
        })
        .collect()
}

fn remove_stale_socket(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        return Err(Error::conflict(format!(
            "{} exists and is not a socket: remove it, or pick another docker_plugin name",
            path.display()
        )));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(Error::conflict(format!(
            "{} is served by another live process (another lanyard daemon?): stop it, or give \
             this daemon another docker_plugin name",
            path.display()
        )));
    }
    std::fs::remove_file(path)
        .with_context(ErrorKind::Io, || format!("remove the stale socket {}", path.display()))
}

/// Connections being served, and the wake-up for the accept loop when one ends.
type Slots = Arc<(Mutex<usize>, Condvar)>;

fn accept_loop(listener: UnixListener, plugin: Arc<Plugin>, slots: Slots) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // Bounded: wait for a slot (a connection ending frees one) instead of spawning without
        // limit; a connection still without one after the wait is closed unanswered.
        {
            let (count, freed) = &*slots;
            let count = count.lock().unwrap_or_else(|e| e.into_inner());
            let (mut count, _) = freed
                .wait_timeout_while(count, SLOT_WAIT, |count| *count >= MAX_CONNECTIONS)
                .unwrap_or_else(|e| e.into_inner());
            if *count >= MAX_CONNECTIONS {
                continue;
            }
            *count += 1;
        }
        let (plugin, done) = (plugin.clone(), slots.clone());
        let release = move || {
            let (count, freed) = &*done;
            *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            freed.notify_one();
        };
        let spawned = std::thread::Builder::new().name("docker-plugin-conn".into()).spawn({
            let release = release.clone();
            move || {
                let _ = serve_connection(stream, &plugin);
                release();
            }
        });
        if spawned.is_err() {
            release();
        }
    }
}

/// One HTTP/1.1 request, as much of it as the plugin API needs.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

fn read_line_bounded(reader: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = reader.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE || !line.ends_with(b"\n") {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
    }
    let text = String::from_utf8(line)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let Some(line) = read_line_bounded(reader)? else { return Ok(None) };
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    let mut close = version == "HTTP/1.0";
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for _ in 0..100 {
        let line = read_line_bounded(reader)?.ok_or_else(|| bad("headers cut short"))?;
        if line.is_empty() {
            let body = if chunked {
                read_chunked(reader)?
            } else {
                let length = length.unwrap_or(0);
                if length > MAX_BODY {
                    return Err(bad("body too large"));
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body)?;
                body
            };
            return Ok(Some(Request {
                method: method.to_string(),
                path: path.to_string(),
                body,
                close,
            }));
        }
        let Some((name, value)) = line.split_once(':') else { return Err(bad("bad header")) };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(value.parse().map_err(|_| bad("bad Content-Length"))?)
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close |= value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    Err(bad("too many headers"))
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    for _ in 0..10_000 {
        let line = read_line_bounded(reader)?.ok_or_else(|| bad("chunk cut short"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while read_line_bounded(reader)?.is_some_and(|l| !l.is_empty()) {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        read_line_bounded(reader)?;
    }
    Err(bad("too many chunks"))
}

fn serve_connection(stream: UnixStream, plugin: &Plugin) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let body = json!({ "Err": format!("bad HTTP request: {e}") }).to_string();
                write_response(&mut writer, 400, &body, true)?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let (status, body) = if request.method == "POST" {
            route(plugin, &request.path, &request.body)
        } else {
            (
                405,
                json!({ "Err": format!("{} {}: the plugin API takes POST", request.method, request.path) }),
            )
        };
        write_response(&mut writer, status, &body.to_string(), request.close)?;
        if request.close {
            return Ok(());
        }
    }
}

fn write_response(
    writer: &mut impl Write,
    status: u16,
    body: &str,
    close: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    // One write: formatted straight onto the socket it took one send(2) per piece (ten per
    // answer, measured with strace), each a wake-up of dockerd's reader.
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\n\
         Content-Length: {}\r\n{connection}\r\n{body}",
        body.len()
    );
    writer.write_all(response.as_bytes())?;
    writer.flush()
}

/// Which error shape a call answers with.
#[derive(Clone, Copy)]
enum Api {
    Driver,
    Ipam,
}

/// Answer one call: (HTTP status, JSON body).
pub fn route(plugin: &Plugin, path: &str, body: &[u8]) -> (u16, Value) {
    let (api, result) = match path {
        "/Plugin.Activate" => (
            Api::Driver,
            no_arguments(path, body)
                .map(|()| json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
        ),
        p if p.starts_with("/NetworkDriver.") => {
            (Api::Driver, network::handle(plugin, &p["/NetworkDriver.".len()..], body))
        }
        p if p.starts_with("/IpamDriver.") => {
            (Api::Ipam, ipam::handle(plugin, &p["/IpamDriver.".len()..], body))
        }
        _ => return (404, json!({ "Err": format!("{path}: not a call this plugin implements") })),
    };
    match result {
        Ok(value) => (200, value),
        Err(e) => {
            let status = if e.kind() == ErrorKind::Usage { 400 } else { 500 };
            let message = format!("lanyard: {e}");
            crate::logging::daemon_event(format_args!("docker plugin {path}: {message}"));
            match api {
                Api::Driver => (status, json!({ "Err": message })),
                Api::Ipam => (status, json!({ "Error": message, "Err": message })),
            }
        }
    }
}

/// The request body of a call that takes data: missing, empty or unparsable is an error, never
/// defaults (Docker sends `{}` after a plugin restart for calls it replays).
pub(crate) fn parse_body<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::usage(format!("{call}: the request has no body")));
    }
    serde_json::from_slice(body).map_err(|e| {
        Error::usage(format!("{call}: the request body is not what Docker sends: {e}"))
    })
}

/// Calls that take no data (Docker sends an empty body): anything else is refused, so a client
/// that meant something else hears about it.
pub(crate) fn no_arguments(call: &str, body: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(body).unwrap_or("?").trim();
    match text {
        "" | "null" | "{}" => Ok(()),
        _ => Err(Error::usage(format!("{call} takes no arguments, got {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(bytes: &str) -> std::io::Result<Option<Request>> {
        read_request(&mut BufReader::new(bytes.as_bytes()))
    }

    #[test]
    fn the_status_counts_each_networks_endpoints_and_a_dhcp_networks_leases_by_state() {
        let network = |id: &str, dhcp: bool| store::Network {
            id: id.to_string(),
            parent: "br0".into(),
            macvlan_mode: Default::default(),
            mtu: None,
            slaac: false,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            dhcp_marker: dhcp.then_some(std::net::Ipv4Addr::new(0, 0, 0, 1)),
        };
        let endpoint = |network: &str, id: &str| store::Endpoint {
            network: network.into(),
            id: id.into(),
            driver: crate::state::DriverKind::Bridge,
            link_name: format!("lyg{id}"),
            host_end: None,
            mac: crate::spec::MacAddr([2, 0, 0, 0, 0, 1]),
            addresses: Vec::new(),
            record: format!("{id}.json"),
            joined: true,
            dhcp: false,
            sandbox_key: None,
            deleting: false,
        };
        let (static_id, dhcp_id) = ("a".repeat(64), "b".repeat(64));
        let mut store = store::Store::default();
        store.networks.insert(static_id.clone(), network(&static_id, false));
        store.networks.insert(dhcp_id.clone(), network(&dhcp_id, true));
        for (net, id) in [(&static_id, "e1"), (&dhcp_id, "e2"), (&dhcp_id, "e3")] {
            store.endpoints.insert(id.into(), endpoint(net, id));
        }
        let leases = [
            (dhcp_id.clone(), "BOUND".to_string()),
            (dhcp_id.clone(), "REACHING".to_string()),
            (dhcp_id.clone(), "BOUND".to_string()),
            ("c".repeat(64), "BOUND".to_string()),
        ];
        let views = network_views(&store, &leases);
        assert_eq!(
            views,
            [
                json!({"Id": "aaaaaaaaaaaa", "Parent": "br0", "Addressing": "static", "Endpoints": 1}),
                json!({"Id": "bbbbbbbbbbbb", "Parent": "br0", "Addressing": "dhcp", "Endpoints": 2,
                       "Leases": 3, "LeasesByState": {"BOUND": 2, "REACHING": 1}}),
            ]
        );
    }

    #[test]
    fn requests_are_read_by_length_chunks_and_one_after_another() {
        let two = "POST /A HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}\
                   POST /B HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n3;x=y\r\n\":1\r\n2\r\n}\n\r\n0\r\n\r\n";
        let mut reader = BufReader::new(two.as_bytes());
        let first = read_request(&mut reader).unwrap().unwrap();
        assert_eq!(
            (first.method.as_str(), first.path.as_str(), first.body.as_slice()),
            ("POST", "/A", &b"{}"[..])
        );
        assert!(!first.close);
        let second = read_request(&mut reader).unwrap().unwrap();
        assert_eq!((second.path.as_str(), second.body.as_slice()), ("/B", &b"{\"a\":1}\n"[..]));
        assert!(read_request(&mut reader).unwrap().is_none(), "the end of the connection");
        let closing = request("POST /C HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(closing.close && closing.body.is_empty());
    }

    #[test]
    fn an_answer_is_written_in_one_piece() {
        struct Writes(Vec<Vec<u8>>);
        impl Write for Writes {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.push(bytes.to_vec());
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut writes = Writes(Vec::new());
        write_response(&mut writes, 200, "{}", false).unwrap();
        assert_eq!(writes.0.len(), 1, "{:?}", writes.0);
        let text = String::from_utf8(writes.0.concat()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\n{}"), "{text}");
    }

    #[test]
    fn malformed_requests_are_refused_not_guessed() {
        for bad in [
            "POST\r\n\r\n",
            "POST /A HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "POST /A HTTP/1.1\r\nno colon\r\n\r\n",
            "POST /A HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            "POST /A HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let err = request(bad).err().unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{bad:?}");
        }
        let long = format!("POST /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE));
        assert!(request(&long).is_err());
        // A body shorter than announced is an error too (the connection ended).
        assert!(request("POST /A HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}").is_err());
    }

    #[test]
    fn bodies_that_are_not_dockers_are_errors_and_argument_free_calls_take_none() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct NeedsId {
            #[serde(rename = "NetworkID")]
            id: String,
        }
        for body in ["", "  \n", "{}", "nonsense", "null", "[]"] {
            let err = parse_body::<NeedsId>("X.Call", body.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Usage, "{body:?}");
            assert!(err.to_string().starts_with("X.Call: "), "{err}");
        }
        assert_eq!(parse_body::<NeedsId>("X", br#"{"NetworkID":"n"}"#).unwrap().id, "n");
        for body in ["", "null", "{}", " {} \n"] {
            no_arguments("X", body.as_bytes()).unwrap();
        }
        assert!(no_arguments("X", b"{\"a\":1}").is_err());
    }
}
