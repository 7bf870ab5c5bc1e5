//! Decoders for the options whose formats need more than a length check: classless static
//! routes (RFC 3442), the domain search list (RFC 3397, with RFC 1035 name compression) and the
//! domain name (RFC 2132 §3.17). Everything they return ends up in the kernel's routing table or
//! in a guest's resolv.conf, so they are strict: a malformed route option is dropped whole, and a
//! name with anything but letters, digits, '-' and '_' in its labels is dropped (a newline or a
//! space in a "domain" must never reach resolv.conf).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// One route from the lease. `gateway` 0.0.0.0 means the destination is on-link (RFC 3442 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// RFC 3442 §2: a sequence of (width, significant octets of the destination, router). Returns
/// `None` for a malformed option (width over 32, truncated entry, empty), which RFC 3442 §2 asks
/// clients to ignore entirely rather than install half of.
pub(crate) fn decode_classless_routes(data: &[u8]) -> Option<Vec<Route>> {
    if data.is_empty() {
        return None;
    }
    let mut routes = Vec::new();
    let mut rest = data;
    while let Some((&width, tail)) = rest.split_first() {
        if width > 32 {
            return None;
        }
        let significant = usize::from(width).div_ceil(8);
        if tail.len() < significant + 4 {
            return None;
        }
        let mut dest = [0u8; 4];
        dest[..significant].copy_from_slice(&tail[..significant]);
        // Bits past the width are not part of the destination; a server that leaves garbage
        // there must not produce a route the kernel refuses ("invalid prefix").
        let dest = u32::from_be_bytes(dest) & prefix_mask(width);
        let gateway = Ipv4Addr::new(
            tail[significant],
            tail[significant + 1],
            tail[significant + 2],
            tail[significant + 3],
        );
        routes.push(Route { destination: Ipv4Addr::from(dest), prefix_len: width, gateway });
        rest = &tail[significant + 4..];
    }
    Some(routes)
}

pub(crate) fn prefix_mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n if n >= 32 => u32::MAX,
        n => u32::MAX << (32 - u32::from(n)),
    }
}

/// A subnet mask is valid only when its ones are contiguous; returns the prefix length.
/// A /0 mask would make the whole Internet on-link, so it is refused too.
pub(crate) fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    if ones == 0 || bits != prefix_mask(ones as u8) {
        return None;
    }
    Some(ones as u8)
}

/// RFC 3397 §2: the option holds a sequence of RFC 1035 names; compression pointers are offsets
/// into the option's (concatenated, RFC 3396) data. Structural errors drop the whole option;
/// names with unsafe characters are skipped one by one.
pub(crate) fn decode_domain_search(data: &[u8]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let (labels, next) = read_name(data, pos)?;
        if let Some(name) = join_labels(&labels) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        pos = next;
    }
    Some(names)
}

/// Reads one possibly compressed name starting at `start`; returns its labels and where the next
/// name begins. Every pointer must point strictly before the previous jump target (or before
/// itself for the first one), so the walk terminates whatever the input: a loop of pointers
/// would need a target to repeat.
fn read_name(data: &[u8], start: usize) -> Option<(Vec<&[u8]>, usize)> {
    // RFC 1035 §2.3.4: a name is at most 255 octets on the wire.
    const MAX_NAME: usize = 255;
    let mut labels = Vec::new();
    let mut wire_len = 0usize;
    let mut pos = start;
    let mut next = None;
    let mut bound = start;
    loop {
        let len = *data.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                let next = next.unwrap_or(pos + 1);
                return Some((labels, next));
            }
            0x00 => {
                let len = usize::from(len);
                let label = data.get(pos + 1..pos + 1 + len)?;
                wire_len += len + 1;
                if wire_len >= MAX_NAME {
                    return None;
                }
                labels.push(label);
                pos += 1 + len;
            }
            0xC0 => {
                let low = *data.get(pos + 1)?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                if next.is_none() {
                    next = Some(pos + 2);
                    bound = pos;
                }
                if target >= bound {
                    return None;
                }
                bound = target;
                pos = target;
            }
            // 0x40 and 0x80 are reserved label types (RFC 6891 retired the extended ones).
            _ => return None,
        }
    }
}

fn join_labels(labels: &[&[u8]]) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let mut name = String::new();
    for label in labels {
        if !valid_label(label) {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        // valid_label admits ASCII only, so this is lossless.
        name.extend(label.iter().map(|&b| char::from(b)));
    }
    Some(name)
}

fn valid_label(label: &[u8]) -> bool {
    (1..=63).contains(&label.len())
        && label.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Option 15 (RFC 2132 §3.17) is plain text. Some servers append a NUL or a trailing dot;
/// both are tolerated, anything else unusual drops the option.
pub(crate) fn decode_domain_name(data: &[u8]) -> Option<String> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let text = &data[..end];
    let text = text.strip_suffix(b".").unwrap_or(text);
    if text.is_empty() || text.len() > 253 {
        return None;
    }
    let labels: Vec<&[u8]> = text.split(|&b| b == b'.').collect();
    join_labels(&labels)
}

/// Checks a name lanyard will send (option 12 or 81) with the same rules as received names.
pub(crate) fn valid_domain(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| valid_label(label.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classless_routes_rfc3442_examples() {
        // RFC 3442 §2 encodings: 0/0 via 10.0.0.1, 10/8 via 10.0.0.2, 10.17/16 on-link,
        // 10.27.129/24 via 10.0.0.3, 10.229.0.128/25 via 10.0.0.4.
        let data = [
            0, 10, 0, 0, 1, //
            8, 10, 10, 0, 0, 2, //
            16, 10, 17, 0, 0, 0, 0, //
            24, 10, 27, 129, 10, 0, 0, 3, //
            25, 10, 229, 0, 128, 10, 0, 0, 4,
        ];
        let routes = decode_classless_routes(&data).unwrap();
        let r = |d: [u8; 4], p, g: [u8; 4]| Route {
            destination: d.into(),
            prefix_len: p,
            gateway: g.into(),
        };
        assert_eq!(
            routes,
            vec![
                r([0, 0, 0, 0], 0, [10, 0, 0, 1]),
                r([10, 0, 0, 0], 8, [10, 0, 0, 2]),
                r([10, 17, 0, 0], 16, [0, 0, 0, 0]),
                r([10, 27, 129, 0], 24, [10, 0, 0, 3]),
                r([10, 229, 0, 128], 25, [10, 0, 0, 4]),
            ]
        );
    }

    #[test]
    fn classless_routes_malformed_dropped_whole() {
        assert_eq!(decode_classless_routes(&[]), None);
        assert_eq!(decode_classless_routes(&[33, 1, 2, 3, 4, 5, 6, 7, 8]), None);
        assert_eq!(decode_classless_routes(&[24, 10, 0, 0, 10, 0, 0]), None);
        // First route fine, second truncated: nothing is installed.
        assert_eq!(decode_classless_routes(&[0, 10, 0, 0, 1, 8, 10]), None);
        // Host bits past the width are masked off.
        let routes = decode_classless_routes(&[9, 10, 255, 1, 1, 1, 1]).unwrap();
        assert_eq!(routes[0].destination, Ipv4Addr::new(10, 128, 0, 0));
    }

    #[test]
    fn masks() {
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(128, 0, 0, 0)), Some(1));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), None);
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 255, 255, 255)), None);
    }

    #[test]
    fn domain_search_rfc3397_example() {
        // RFC 3397 §3: "eng.apple.com." and "marketing.apple.com." with a pointer to offset 4.
        let data = [
            3, b'e', b'n', b'g', 5, b'a', b'p', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 9, b'm',
            b'a', b'r', b'k', b'e', b't', b'i', b'n', b'g', 0xC0, 4,
        ];
        assert_eq!(
            decode_domain_search(&data).unwrap(),
            vec!["eng.apple.com".to_string(), "marketing.apple.com".to_string()]
        );
    }

    #[test]
    fn domain_search_pointer_loops_and_garbage() {
        // Pointer to itself, forward pointer, two pointers pointing at each other.
        assert_eq!(decode_domain_search(&[0xC0, 0]), None);
        assert_eq!(decode_domain_search(&[0xC0, 2, 0]), None);
        assert_eq!(decode_domain_search(&[1, b'a', 0xC0, 0]), None);
        assert_eq!(decode_domain_search(&[1, b'a', 0, 0xC0, 4, 0xC0, 3]), None);
        // Truncated label, reserved label type.
        assert_eq!(decode_domain_search(&[5, b'a']), None);
        assert_eq!(decode_domain_search(&[0x40, 0]), None);
        // A name that would put a newline into resolv.conf is skipped, the rest kept.
        let data = [3, b'a', b'\n', b'b', 0, 1, b'c', 0];
        assert_eq!(decode_domain_search(&data).unwrap(), vec!["c".to_string()]);
        // Over-long names are refused rather than truncated.
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend([b'x'; 63]);
        }
        long.push(0);
        assert_eq!(decode_domain_search(&long), None);
    }

    #[test]
    fn domain_search_exhaustive_small_inputs_terminate() {
        // Every 3-byte input over a small alphabet: exercises pointer and label edge cases.
        let alphabet = [0u8, 1, 2, 0x3F, 0x40, 0x80, 0xC0, 0xC1, b'a'];
        for &a in &alphabet {
            for &b in &alphabet {
                for &c in &alphabet {
                    let _ = decode_domain_search(&[a, b, c]);
                    // Whatever decodes is a route the kernel could take.
                    for route in decode_classless_routes(&[a, b, c]).unwrap_or_default() {
                        assert!(route.prefix_len <= 32, "{a} {b} {c}: {route:?}");
                        assert_eq!(
                            u32::from(route.destination)
                                .checked_shl(u32::from(route.prefix_len))
                                .unwrap_or(0),
                            0,
                            "{a} {b} {c}: host bits set in {route:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn domain_name() {
        assert_eq!(decode_domain_name(b"example.com"), Some("example.com".into()));
        assert_eq!(decode_domain_name(b"example.com.\0"), Some("example.com".into()));
        assert_eq!(decode_domain_name(b"example.com\nnameserver 6.6.6.6"), None);
        assert_eq!(decode_domain_name(b"a..b"), None);
        assert_eq!(decode_domain_name(b""), None);
        assert!(valid_domain("web.lab.example"));
        assert!(!valid_domain("web lab"));
        assert!(!valid_domain(&"a".repeat(64)));
    }
}
