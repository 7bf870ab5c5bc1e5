//! Prometheus metrics on an opt-in endpoint (config `metrics = "127.0.0.1:9731"` or a unix
//! socket path): attachments and leases by state, Docker's connection and reconnects, events,
//! and the event-to-wired latency histogram. Served by a thread of its own that asks the lease
//! loop through the control socket like any client, so a slow scraper never delays a renewal.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::MetricsListen;
use crate::daemon::control::{try_request, Request};
use crate::error::{ErrorKind, Result, ResultExt};

use super::docker_watch::{WatchStatus, LATENCY_BUCKETS};
use super::log;

/// A scraper that sends nothing (or reads nothing) is dropped after this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_REQUEST: usize = 8192;

/// Bind `listen` (in the daemon's own namespace: the host's) and serve from a new thread.
pub fn start(
    listen: &MetricsListen,
    state_dir: PathBuf,
    watch: Option<Arc<Mutex<WatchStatus>>>,
) -> Result<()> {
    // One socket type for both kinds, so one accept loop serves them.
    let listener: socket2::Socket = match listen {
        MetricsListen::Tcp(address) => std::net::TcpListener::bind(address)
            .with_context(ErrorKind::Io, || format!("serve metrics on {address}"))?
            .into(),
        MetricsListen::Unix(path) => {
            let _ = std::fs::remove_file(path);
            std::os::unix::net::UnixListener::bind(path)
                .with_context(ErrorKind::Io, || format!("serve metrics on {}", path.display()))?
                .into()
        }
    };
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || loop {
            let served = listener.accept().and_then(|(stream, _)| {
                stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
                stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
                serve_one(stream, &state_dir, watch.as_deref())
            });
            if let Err(e) = served {
                log(format_args!("metrics: {e}"));
            }
        })
        .with_context(ErrorKind::Io, || "start the metrics thread")?;
    log(format_args!("metrics served on {listen}"));
    Ok(())
}

/// One HTTP/1.x exchange: GET /metrics gets the text format, anything else a 404.
fn serve_one(
    mut stream: impl Read + Write,
    state_dir: &std::path::Path,
    watch: Option<&Mutex<WatchStatus>>,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let line = line.lines().next().unwrap_or("");
    let (status, body) = if line.starts_with("GET /metrics ") || line == "GET /metrics" {
        ("200 OK", render(state_dir, watch))
    } else {
        ("404 Not Found", "lanyard serves /metrics only\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    Ok(())
}

/// The metrics text: the lease loop's answer to Status plus the watcher's own counters.
pub fn render(state_dir: &std::path::Path, watch: Option<&Mutex<WatchStatus>>) -> String {
    let mut out = String::new();
    let status = try_request(state_dir, &Request::Status, CLIENT_TIMEOUT).ok().flatten();
    let daemon = status.filter(|answer| answer.ok).map(|answer| answer.data);
    family(&mut out, "lanyard_up", "gauge", "1 when the lease loop answered this scrape.");
    out.push_str(&format!("lanyard_up {}\n", u8::from(daemon.is_some())));
    family(&mut out, "lanyard_leases", "gauge", "DHCP leases held by the daemon, by state.");
    if let Some(states) = daemon.as_ref().and_then(|d| d["LeasesByState"].as_object()) {
        for (state, count) in states {
            out.push_str(&format!("lanyard_leases{{state=\"{}\"}} {count}\n", label(state)));
        }
    }
    family(
        &mut out,
        "lanyard_attachments",
        "gauge",
        "Declared container interfaces, by state (wired, pending, refused, failed).",
    );
    let mut by_state = std::collections::BTreeMap::<String, u64>::new();
    for state in ["wired", "pending", "refused", "failed"] {
        by_state.insert(state.to_string(), 0);
    }
    if let Some(containers) = daemon.as_ref().and_then(|d| d["Docker"]["containers"].as_object()) {
        for interface in containers.values().filter_map(|c| c["interfaces"].as_array()).flatten() {
            if let Some(state) = interface["state"].as_str() {
                *by_state.entry(state.to_string()).or_default() += 1;
            }
        }
    }
    for (state, count) in by_state {
        out.push_str(&format!("lanyard_attachments{{state=\"{}\"}} {count}\n", label(&state)));
    }
    let Some(watch) = watch else { return out };
    let watch = watch.lock().unwrap_or_else(|p| p.into_inner()).clone();
    family(
        &mut out,
        "lanyard_docker_connected",
        "gauge",
        "1 while Docker's event stream is followed.",
    );
    out.push_str(&format!("lanyard_docker_connected {}\n", u8::from(watch.connected)));
    family(
        &mut out,
        "lanyard_docker_reconnects_total",
        "counter",
        "Subscriptions to Docker's event stream after the first.",
    );
    out.push_str(&format!("lanyard_docker_reconnects_total {}\n", watch.reconnects));
    family(&mut out, "lanyard_docker_events_total", "counter", "Container events received.");
    out.push_str(&format!("lanyard_docker_events_total {}\n", watch.events));
    family(&mut out, "lanyard_reconciles_total", "counter", "Reconciles run.");
    out.push_str(&format!("lanyard_reconciles_total {}\n", watch.reconciles));
    family(
        &mut out,
        "lanyard_wire_latency_seconds",
        "histogram",
        "From a container's start event (Docker's timestamp) to its declared interfaces wired.",
    );
    for (bound, count) in LATENCY_BUCKETS.iter().zip(watch.wire_latency.counts) {
        out.push_str(&format!("lanyard_wire_latency_seconds_bucket{{le=\"{bound}\"}} {count}\n"));
    }
    let histogram = &watch.wire_latency;
    out.push_str(&format!(
        "lanyard_wire_latency_seconds_bucket{{le=\"+Inf\"}} {}\nlanyard_wire_latency_seconds_sum {}\nlanyard_wire_latency_seconds_count {}\n",
        histogram.count, histogram.sum_seconds, histogram.count
    ));
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
