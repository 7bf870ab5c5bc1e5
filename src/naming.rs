//! Where MAC addresses and host-side interface names come from. Both are derived, not random,
//! so that re-attaching the same guest reproduces them: the DHCP server hands back the same
//! lease, and a leftover host interface from a crash is recognisably the one to clean up.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::spec::MacAddr;

const MACHINE_ID_PATH: &str = "/etc/machine-id";

/// Domain tags keep the MAC and the interface name independent even for identical inputs, and
/// the version lets a future scheme change without silently renaming existing attachments.
const MAC_DOMAIN: &str = "lanyard-mac-v1";
const HOST_IFNAME_DOMAIN: &str = "lanyard-host-ifname-v1";

const HOST_IFNAME_PREFIX: &str = "ly";
const HOST_IFNAME_HASH_CHARS: usize = 13;

/// The host identity from the contents of /etc/machine-id. systemd writes "uninitialized" there
/// during first boot; using it would give every freshly booted machine the same MACs.
pub fn host_id_from_machine_id(contents: &str) -> Result<String> {
    let id = contents.trim();
    if id.is_empty() || id == "uninitialized" {
        return Err(Error::not_found(format!(
            "{MACHINE_ID_PATH} holds no machine id; set --host-id or LANYARD_HOST_ID"
        )));
    }
    Ok(id.to_string())
}

/// The host identity that seeds every derived name: `explicit` (from --host-id or
/// LANYARD_HOST_ID) when given, else /etc/machine-id.
pub fn read_host_id(explicit: Option<&str>) -> Result<String> {
    read_host_id_from(explicit, Path::new(MACHINE_ID_PATH))
}

fn read_host_id_from(explicit: Option<&str>, machine_id_path: &Path) -> Result<String> {
    if let Some(id) = explicit {
        let id = id.trim();
        if id.is_empty() {
            return Err(Error::usage("the host id given by --host-id or LANYARD_HOST_ID is empty"));
        }
        return Ok(id.to_string());
    }
    match std::fs::read_to_string(machine_id_path) {
        Ok(contents) => host_id_from_machine_id(&contents),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::not_found(format!(
            "{} does not exist; set --host-id or LANYARD_HOST_ID",
            machine_id_path.display()
        ))),
        Err(e) => Err(Error::with_source(
            ErrorKind::Io,
            format!("read {} (or set --host-id or LANYARD_HOST_ID)", machine_id_path.display()),
            e,
        )),
    }
}

/// The default guest MAC: 0x02 (locally administered, unicast) and then 40 bits of SHA-256
/// over the inputs, so it is the same on every attach of the same guest interface on the same
/// host. `counter` 0 is the first choice; on a collision callers try 1, 2, ...
pub fn stable_mac(
    host_id: &str,
    guest_identity: &str,
    guest_ifname: &str,
    counter: u32,
) -> MacAddr {
    let digest = derive(MAC_DOMAIN, host_id, guest_identity, guest_ifname, counter);
    MacAddr([0x02, digest[0], digest[1], digest[2], digest[3], digest[4]])
}

/// network-wrapper's MAC layout, for sites whose DHCP reservations or switch port filters were
/// built around it.
///
/// network-wrapper (zenvdeluca/network-wrapper, a pipework derivative) built
/// `RR:b:c:d:XX:YY`, where `b.c.d` are the last three octets of the worker's IPv4 address (read
/// from br0 and printed in hex by `gethostip`), `XX:YY` are two bytes from /dev/urandom, and
/// `RR` was one more random byte forced to locally administered unicast (`& 0xFE | 0x02`).
/// lanyard keeps the worker octets and the two random bytes in the same places and pins `RR` to
/// 0x02: that keeps the address locally administered unicast, makes it reproducible from
/// exactly (worker IP, random) so a recorded attachment can be re-created bit for bit, and
/// leaves the worker part readable in switch tables, which was the point of the layout. The
/// first IPv4 octet is dropped, as network-wrapper dropped it, because workers on one LAN share
/// it in practice.
///
/// It is not the default because 16 random bits per worker collide quickly. By the birthday
/// bound, the chance that `n` guests on one worker share a MAC is
/// `P(n) = 1 - prod_{i=0}^{n-1} (1 - i/65536)`, about 26% at n = 200 (network-wrapper retried
/// against the bridge's CAM and ARP tables, which only sees guests currently up). The stable
/// scheme has 40 bits and rehashes on collision.
pub fn network_wrapper_mac(worker_ipv4: Ipv4Addr, random: [u8; 2]) -> MacAddr {
    let [_, b, c, d] = worker_ipv4.octets();
    MacAddr([0x02, b, c, d, random[0], random[1]])
}

/// The host end of a veth pair: "ly" and 13 characters of lowercase base32 of SHA-256, exactly
/// 15 bytes, the longest name Linux accepts, so 65 bits of hash make accidental collisions
/// negligible. Callers rehash with counter 1, 2, ... if the name is taken anyway.
pub fn host_ifname(
    host_id: &str,
    guest_identity: &str,
    guest_ifname: &str,
    counter: u32,
) -> String {
    let digest = derive(HOST_IFNAME_DOMAIN, host_id, guest_identity, guest_ifname, counter);
    let mut name = String::with_capacity(HOST_IFNAME_PREFIX.len() + HOST_IFNAME_HASH_CHARS);
    name.push_str(HOST_IFNAME_PREFIX);
    name.extend(base32_lower(&digest).take(HOST_IFNAME_HASH_CHARS));
    name
}

/// SHA-256 over a length-prefixed encoding, so that ("ab", "c") and ("a", "bc") cannot hash
/// alike however the inputs are chosen.
fn derive(
    domain: &str,
    host_id: &str,
    guest_identity: &str,
    guest_ifname: &str,
    counter: u32,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for field in [domain, host_id, guest_identity, guest_ifname] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(counter.to_be_bytes());
    hasher.finalize().into()
}

/// RFC 4648 base32 with the lowercase alphabet and no padding. Lowercase letters and digits
/// 2-7 are valid in interface names and unambiguous to read aloud (no 0/O, 1/l).
fn base32_lower(bytes: &[u8]) -> impl Iterator<Item = char> + '_ {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let total_bits = bytes.len() * 8;
    (0..total_bits.div_ceil(5)).map(move |index| {
        let bit = index * 5;
        let byte = bit / 8;
        let high = u16::from(bytes[byte]) << 8;
        let low = bytes.get(byte + 1).copied().map_or(0, u16::from);
        let window = high | low;
        let shift = 16 - 5 - (bit % 8);
        ALPHABET[usize::from((window >> shift) & 0x1f)] as char
    })
}

/// The DHCP client identifier (option 61) lanyard sends when none is given: stable per host,
/// guest and interface, so a restarted container asks as the same client and the server gives
/// it the same address; short and printable so it reads well in a server's lease table.
pub fn client_id(host_id: &str, guest_identity: &str, guest_ifname: &str) -> String {
    let digest = Sha256::digest(
        [
            b"lanyard-client-id-v1".as_slice(),
            host_id.as_bytes(),
            b"\0",
            guest_identity.as_bytes(),
            b"\0",
            guest_ifname.as_bytes(),
        ]
        .concat(),
    );
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("lanyard-{hex}")
}

/// The hostname a guest presents over DHCP by default: its container or namespace name when that
/// is a valid host name (one label of letters, digits, '-', '_'), a dotted name as an FQDN.
pub fn default_dhcp_hostname(name: &str) -> Option<String> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    (name.len() <= 253 && name.split('.').all(valid_label)).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::validate_ifname;

    #[test]
    fn machine_id_is_trimmed_and_required() {
        assert_eq!(
            host_id_from_machine_id("0123456789abcdef0123456789abcdef\n").unwrap(),
            "0123456789abcdef0123456789abcdef"
        );
        for contents in ["", " \n", "uninitialized\n"] {
            let err = host_id_from_machine_id(contents).unwrap_err();
            assert!(err.to_string().contains("set --host-id or LANYARD_HOST_ID"), "{err}");
        }
    }

    #[test]
    fn explicit_host_id_wins_and_missing_file_says_what_to_do() {
        let missing = Path::new("/nonexistent/lanyard-test/machine-id");
        assert_eq!(read_host_id_from(Some(" web-7 "), missing).unwrap(), "web-7");
        assert_eq!(read_host_id_from(Some(""), missing).unwrap_err().kind(), ErrorKind::Usage);
        let err = read_host_id_from(None, missing).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("set --host-id or LANYARD_HOST_ID"), "{err}");

        let dir = std::env::temp_dir().join(format!("lanyard-naming-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("machine-id");
        std::fs::write(&file, "abc123\n").unwrap();
        assert_eq!(read_host_id_from(None, &file).unwrap(), "abc123");
        let err = read_host_id_from(None, &dir).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stable_mac_is_deterministic_and_sensitive_to_every_input() {
        let base = stable_mac("host-a", "web", "eth1", 0);
        assert_eq!(base, stable_mac("host-a", "web", "eth1", 0));
        let variants = [
            stable_mac("host-a", "web", "eth1", 1),
            stable_mac("host-b", "web", "eth1", 0),
            stable_mac("host-a", "db", "eth1", 0),
            stable_mac("host-a", "web", "eth2", 0),
            // Length prefixes keep shifted boundaries apart.
            stable_mac("host-aw", "eb", "eth1", 0),
            stable_mac("host-a", "webeth1", "", 0),
        ];
        for variant in variants {
            assert_ne!(variant, base);
        }
    }

    #[test]
    fn stable_mac_is_locally_administered_unicast() {
        for counter in 0..256 {
            let mac = stable_mac("host", "guest", "eth1", counter);
            assert_eq!(mac.0[0], 0x02);
            assert!(mac.is_locally_administered());
            assert!(!mac.is_multicast());
            assert!(mac.to_string().parse::<MacAddr>().is_ok());
        }
    }

    #[test]
    fn network_wrapper_mac_layout() {
        let mac = network_wrapper_mac(Ipv4Addr::new(10, 20, 30, 40), [0xab, 0xcd]);
        assert_eq!(mac.to_string(), "02:14:1e:28:ab:cd");
        assert!(mac.is_locally_administered());
        assert!(!mac.is_multicast());
        let zero = network_wrapper_mac(Ipv4Addr::new(0, 0, 0, 0), [0, 0]);
        assert!(zero.to_string().parse::<MacAddr>().is_ok());
    }

    /// Why network-wrapper's scheme is not the default: P(collision) among n guests drawing 16
    /// random bits.
    #[test]
    fn network_wrapper_birthday_bound_at_200_guests() {
        let space = 65536.0_f64;
        let no_collision: f64 = (0..200).map(|i| 1.0 - f64::from(i) / space).product();
        let collision = 1.0 - no_collision;
        assert!((0.25..0.27).contains(&collision), "{collision}");
    }

    #[test]
    fn host_ifname_is_15_valid_bytes_and_deterministic() {
        let name = host_ifname("host-a", "web", "eth1", 0);
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("ly"));
        assert!(name[2..].bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(name, host_ifname("host-a", "web", "eth1", 0));
        for other in [
            host_ifname("host-a", "web", "eth1", 1),
            host_ifname("host-b", "web", "eth1", 0),
            host_ifname("host-a", "db", "eth1", 0),
            host_ifname("host-a", "web", "eth2", 0),
        ] {
            assert_ne!(other, name);
        }
        for counter in 0..256 {
            let name = host_ifname("h", "g", "eth1", counter);
            assert_eq!(name.len(), 15);
            validate_ifname(&name, "host interface name").unwrap();
        }
    }

    #[test]
    fn mac_and_ifname_hash_domains_differ() {
        let digest_mac = derive(MAC_DOMAIN, "h", "g", "i", 0);
        let digest_if = derive(HOST_IFNAME_DOMAIN, "h", "g", "i", 0);
        assert_ne!(digest_mac, digest_if);
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        let encode = |s: &str| base32_lower(s.as_bytes()).collect::<String>();
        assert_eq!(encode(""), "");
        assert_eq!(encode("f"), "my");
        assert_eq!(encode("fo"), "mzxq");
        assert_eq!(encode("foo"), "mzxw6");
        assert_eq!(encode("foob"), "mzxw6yq");
        assert_eq!(encode("fooba"), "mzxw6ytb");
        assert_eq!(encode("foobar"), "mzxw6ytboi");
    }

    #[test]
    fn dhcp_identity_is_stable_and_names_are_checked() {
        let a = client_id("host", "container:web", "eth1");
        assert_eq!(a, client_id("host", "container:web", "eth1"));
        assert_ne!(a, client_id("host", "container:web", "eth2"));
        assert_ne!(a, client_id("other", "container:web", "eth1"));
        assert!(a.starts_with("lanyard-") && a.len() == 24);
        assert_eq!(default_dhcp_hostname("web"), Some("web".into()));
        assert_eq!(default_dhcp_hostname("web.lab.example"), Some("web.lab.example".into()));
        assert_eq!(default_dhcp_hostname("bad name"), None);
        assert_eq!(default_dhcp_hostname(""), None);
    }
}
