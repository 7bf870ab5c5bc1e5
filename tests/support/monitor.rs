//! Address events of a namespace, watched as they happen (`ip -ts -o monitor address` as a
//! child process), so that "the address was never missing" is a statement about every change
//! the kernel announced, not about samples taken every so often: a gap between two samples is
//! still a `Deleted` event here.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use super::lab::{wait_until, Netns, Server};

/// A running `ip monitor address` inside one namespace; killed on drop.
pub struct AddressMonitor {
    server: Server,
}

/// The loopback address the monitor adds and removes to prove it is listening.
const PROBE: &str = "127.0.0.77/8";

impl AddressMonitor {
    /// Starts the monitor inside `ns` and returns once it has reported an address change made
    /// for that purpose (bounded: 5 s), so nothing after this call can be missed.
    pub fn start(ns: &Netns) -> AddressMonitor {
        let mut command = ns.command("ip");
        // UTC, so that the timestamps read back as Unix times (see [`event_time`]).
        command.env("TZ", "UTC").args(["-ts", "-o", "monitor", "address"]);
        let mut server = Server::spawn(command, "ip-monitor");
        // `ip` subscribes some time after it starts, and a change made before that is never
        // printed: add the probe until the monitor reports it (bounded: 20 tries, ~5 s).
        let mut heard = false;
        for _ in 0..20 {
            ns.ip(&["addr", "add", PROBE, "dev", "lo"]);
            heard = wait_until(Duration::from_millis(250), || server.log().contains(PROBE));
            if heard {
                break;
            }
            ns.ip(&["addr", "del", PROBE, "dev", "lo"]);
        }
        assert!(heard, "ip-monitor never reported the probe address:\n{}", server.log());
        ns.ip(&["addr", "del", PROBE, "dev", "lo"]);
        server.wait_for_log("Deleted", Duration::from_secs(5));
        AddressMonitor { server }
    }

    /// Every event line so far (the probe's included).
    pub fn lines(&self) -> Vec<String> {
        self.server.log().lines().map(str::to_string).collect()
    }

    /// The `Deleted` events for `address` (any prefix length) seen so far.
    pub fn deletions_of(&self, address: Ipv4Addr) -> Vec<String> {
        let needle = format!("inet {address}/");
        self.lines().into_iter().filter(|l| l.contains("Deleted") && l.contains(&needle)).collect()
    }

    /// Events (added or deleted) for `address` seen so far.
    pub fn events_of(&self, address: Ipv4Addr) -> Vec<String> {
        let needle = format!("inet {address}/");
        self.lines().into_iter().filter(|l| l.contains(&needle)).collect()
    }

    /// Panics, with every event seen, if `address` was ever deleted.
    pub fn assert_never_deleted(&self, address: Ipv4Addr, what: &str) {
        let deleted = self.deletions_of(address);
        assert!(
            deleted.is_empty(),
            "{what}: {address} was deleted (a gap) : {deleted:#?}\nall events:\n{}",
            self.lines().join("\n")
        );
    }
}

/// When the kernel's event was printed: the `[YYYY-MM-DDTHH:MM:SS.ffffff]` prefix of `ip -ts`
/// (run with TZ=UTC) as a Unix time. `None` for a line without one.
pub fn event_time(line: &str) -> Option<SystemTime> {
    let stamp = line.strip_prefix('[')?.split(']').next()?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (t.next()?.parse::<u64>().ok()?, t.next()?.parse::<u64>().ok()?);
    let secs: f64 = t.next()?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let whole = days * 86_400 + hh * 3600 + mm * 60;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(whole) + Duration::from_secs_f64(secs))
}
