//! A bound lease: what the server gave and when, in a form the daemon persists as JSON.
//!
//! Times are stored as wall-clock (Unix milliseconds for the moment the winning DHCPREQUEST was
//! first sent, RFC 2131 §4.4.1) plus durations, because monotonic clocks do not survive a daemon
//! restart: the restarted daemon compares `acquired_unix_ms` with the current wall clock to know
//! what is left ([`super::Client::resume`]). While running, the client drives its timers from the
//! monotonic clock only, so a wall-clock step (NTP) never shortens or stretches a live lease.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::options::{prefix_mask, Route};

/// Renewal (T1), rebinding (T2) and lease duration in milliseconds, counted from
/// `acquired_unix_ms`. Milliseconds, not seconds, because the defaults of a short lease are
/// fractional (a 5 s lease has T2 = 4.375 s). Invariant: `0 < t1_ms < t2_ms < lease_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub lease_ms: u64,
}

/// Shortest lease lanyard holds. A server offering 0 s (or 1 s) would make every lease renew in a
/// tight loop; 2 s keeps that to one renewal a second while still honouring "a few seconds"
/// test leases. Documented deviation: such a lease is used for up to 2 s.
pub const MIN_LEASE_SECS: u32 = 2;
/// Longest finite lease: a server saying "0xfffffffe seconds" (136 years) is clamped to a year,
/// so the client still renews twice a year instead of never.
pub const MAX_LEASE_SECS: u32 = 365 * 24 * 3600;
/// RFC 2131 §3.3: 0xffffffff means infinity.
pub const INFINITE_LEASE: u32 = u32::MAX;

impl Timers {
    /// Effective timers from options 51, 58 and 59 (RFC 2131 §4.4.5). The lease is clamped to
    /// [`MIN_LEASE_SECS`, `MAX_LEASE_SECS`]; T1/T2 are used only when `0 < T1 < T2 < lease`,
    /// otherwise both fall back to the defaults 0.5 and 0.875 of the lease (a server sending
    /// T1 >= T2 or T2 >= lease has one of them wrong, and we cannot know which).
    /// Returns `None` for an infinite lease: no renewal at all.
    pub(crate) fn from_options(lease: u32, t1: Option<u32>, t2: Option<u32>) -> Option<Timers> {
        if lease == INFINITE_LEASE {
            return None;
        }
        let lease_ms = u64::from(lease.clamp(MIN_LEASE_SECS, MAX_LEASE_SECS)) * 1000;
        let defaults = Timers { t1_ms: lease_ms / 2, t2_ms: lease_ms * 7 / 8, lease_ms };
        let t2_ms = t2.map_or(defaults.t2_ms, |t| u64::from(t) * 1000);
        let t1_ms = t1.map_or(defaults.t1_ms, |t| u64::from(t) * 1000);
        if 0 < t1_ms && t1_ms < t2_ms && t2_ms < lease_ms {
            Some(Timers { t1_ms, t2_ms, lease_ms })
        } else {
            Some(defaults)
        }
    }

    pub(crate) fn is_valid(&self) -> bool {
        0 < self.t1_ms && self.t1_ms < self.t2_ms && self.t2_ms < self.lease_ms
    }
}

/// Everything lanyard needs from an ACK to configure the guest and renew later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    /// From option 1, or the classful default when the server sent no mask.
    pub prefix_len: u8,
    /// Option 54: where renewals go (unicast) and whose NAK counts while renewing.
    pub server_id: Ipv4Addr,
    /// Option 3, in the server's order of preference. Ignored for routing when
    /// `classless_routes` is not empty (RFC 3442 §2); kept for `inspect`.
    #[serde(default)]
    pub routers: Vec<Ipv4Addr>,
    /// Option 121.
    #[serde(default)]
    pub classless_routes: Vec<Route>,
    /// Option 6.
    #[serde(default)]
    pub dns_servers: Vec<Ipv4Addr>,
    /// Option 15.
    #[serde(default)]
    pub domain_name: Option<String>,
    /// Option 119.
    #[serde(default)]
    pub domain_search: Vec<String>,
    /// Option 26; values below 68 (RFC 2132 §5.1 minimum) are dropped at parse time.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// `None` for an infinite lease.
    pub timers: Option<Timers>,
    /// Wall-clock time the DHCPREQUEST that obtained this lease was first sent; RFC 2131 §4.4.1
    /// counts the lease from there, not from the ACK, so a slow answer can only shorten it.
    pub acquired_unix_ms: u64,
}

impl Lease {
    /// The routes to install: option 121 when present (RFC 3442 §2: "the DHCP client MUST
    /// ignore the Router option"), otherwise a default route via the first router.
    pub fn routes(&self) -> Vec<Route> {
        if !self.classless_routes.is_empty() {
            return self.classless_routes.clone();
        }
        self.routers
            .first()
            .map(|&gateway| {
                vec![Route { destination: Ipv4Addr::UNSPECIFIED, prefix_len: 0, gateway }]
            })
            .unwrap_or_default()
    }

    /// The default gateway as `inspect` shows it, following the same precedence as `routes`.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.routes()
            .iter()
            .find(|r| r.prefix_len == 0 && !r.gateway.is_unspecified())
            .map(|r| r.gateway)
    }

    /// The subnet mask in dotted form, for tools that want it.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix_len))
    }

    pub fn renew_unix_ms(&self) -> Option<u64> {
        self.timers.map(|t| self.acquired_unix_ms.saturating_add(t.t1_ms))
    }

    pub fn rebind_unix_ms(&self) -> Option<u64> {
        self.timers.map(|t| self.acquired_unix_ms.saturating_add(t.t2_ms))
    }

    /// When the address must be gone from the guest; `None` for an infinite lease.
    pub fn expires_unix_ms(&self) -> Option<u64> {
        self.timers.map(|t| self.acquired_unix_ms.saturating_add(t.lease_ms))
    }

    /// Whether the lease has run out at `now_unix_ms` (never, when infinite).
    pub fn is_expired(&self, now_unix_ms: u64) -> bool {
        self.expires_unix_ms().is_some_and(|end| now_unix_ms >= end)
    }

    /// Sanity check for leases read back from disk: an edited or corrupted file must not make
    /// the daemon configure a broadcast address or loop on zero timers.
    pub(crate) fn is_plausible(&self) -> bool {
        super::packet::usable_address(self.address, self.prefix_len)
            && (1..=32).contains(&self.prefix_len)
            && super::packet::usable_server(self.server_id)
            && self.timers.is_none_or(|t| t.is_valid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_defaults_and_clamps() {
        let t = Timers::from_options(3600, None, None).unwrap();
        assert_eq!((t.t1_ms, t.t2_ms, t.lease_ms), (1_800_000, 3_150_000, 3_600_000));
        let t = Timers::from_options(3600, Some(600), Some(1200)).unwrap();
        assert_eq!((t.t1_ms, t.t2_ms), (600_000, 1_200_000));
        // T1 >= T2, T2 >= lease, T1 = 0: all fall back to the defaults.
        for (t1, t2) in [(1200, 600), (600, 3600), (0, 1200), (600, 0), (1200, 1200)] {
            let t = Timers::from_options(3600, Some(t1), Some(t2)).unwrap();
            assert_eq!((t.t1_ms, t.t2_ms), (1_800_000, 3_150_000), "{t1} {t2}");
        }
        // Only T2 given, below the default T1: defaults for both.
        let t = Timers::from_options(3600, None, Some(100)).unwrap();
        assert_eq!((t.t1_ms, t.t2_ms), (1_800_000, 3_150_000));
        // Zero, tiny and huge leases.
        assert_eq!(Timers::from_options(0, None, None).unwrap().lease_ms, 2000);
        assert_eq!(Timers::from_options(1, Some(5), Some(9)).unwrap().t1_ms, 1000);
        let huge = Timers::from_options(u32::MAX - 1, None, None).unwrap();
        assert_eq!(huge.lease_ms, u64::from(MAX_LEASE_SECS) * 1000);
        assert_eq!(Timers::from_options(INFINITE_LEASE, Some(1), Some(2)), None);
        // A 5 s lease keeps its fractional defaults.
        let t = Timers::from_options(5, None, None).unwrap();
        assert_eq!((t.t1_ms, t.t2_ms), (2500, 4375));
    }

    fn lease() -> Lease {
        Lease {
            address: Ipv4Addr::new(192, 168, 1, 50),
            prefix_len: 24,
            server_id: Ipv4Addr::new(192, 168, 1, 1),
            routers: vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(192, 168, 1, 2)],
            classless_routes: vec![],
            dns_servers: vec![Ipv4Addr::new(192, 168, 1, 1)],
            domain_name: Some("lab".into()),
            domain_search: vec!["lab".into(), "example.com".into()],
            mtu: Some(1400),
            timers: Timers::from_options(600, None, None),
            acquired_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn routes_prefer_classless() {
        let mut l = lease();
        assert_eq!(l.gateway(), Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(l.routes().len(), 1);
        l.classless_routes = vec![
            Route {
                destination: Ipv4Addr::new(10, 0, 0, 0),
                prefix_len: 8,
                gateway: Ipv4Addr::new(192, 168, 1, 9),
            },
            Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Ipv4Addr::new(192, 168, 1, 7),
            },
        ];
        assert_eq!(l.gateway(), Some(Ipv4Addr::new(192, 168, 1, 7)));
        assert_eq!(l.routes(), l.classless_routes);
        l.classless_routes.truncate(1);
        assert_eq!(l.gateway(), None, "121 without a default route means no default route");
        assert_eq!(l.netmask(), Ipv4Addr::new(255, 255, 255, 0));
    }

    #[test]
    fn json_round_trip_and_times() {
        let l = lease();
        let text = serde_json::to_string(&l).unwrap();
        let back: Lease = serde_json::from_str(&text).unwrap();
        assert_eq!(back, l);
        assert_eq!(l.renew_unix_ms(), Some(1_700_000_300_000));
        assert_eq!(l.rebind_unix_ms(), Some(1_700_000_525_000));
        assert_eq!(l.expires_unix_ms(), Some(1_700_000_600_000));
        assert!(!l.is_expired(1_700_000_599_999));
        assert!(l.is_expired(1_700_000_600_000));
        assert!(l.is_plausible());
        // Optional fields may be missing from an older record.
        let minimal = r#"{"address":"10.0.0.5","prefix_len":24,"server_id":"10.0.0.1",
            "timers":null,"acquired_unix_ms":5}"#;
        let m: Lease = serde_json::from_str(minimal).unwrap();
        assert!(m.routers.is_empty() && m.timers.is_none() && !m.is_expired(u64::MAX));
        let mut bad = l.clone();
        bad.address = Ipv4Addr::new(192, 168, 1, 255);
        assert!(!bad.is_plausible());
        bad = l;
        bad.timers = Some(Timers { t1_ms: 0, t2_ms: 0, lease_ms: 0 });
        assert!(!bad.is_plausible());
    }
}
