//! The IpamDriver API. Static networks use Docker's own IPAM (`--ipam-driver default`, the
//! default); this one hands out DHCP leases (`--ipam-driver lanyard` without `--subnet`).
//!
//! What Docker 20.10 does (checked): an IPAM answer without an address fails the call ("No
//! address returned"), for the gateway at network create as for a container, so the lease is
//! taken at RequestAddress. RequestAddress names only the pool and the MAC, and CreateNetwork
//! is told the pool and gateway but not the pool id; so each DHCP pool gets its own marker, a
//! `0.x.y.z` address (RFC 1122 "this network": never a host's), answered as the pool's gateway
//! in RequestPool's data (Docker then asks no gateway address) and handed to CreateNetwork as
//! the network's gateway: that is how RequestAddress finds the network, its parent and its
//! links.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Value};

use super::store::Pool;
use super::{no_arguments, parse_body, Plugin};
use crate::error::{Error, Result};
use crate::spec::MacAddr;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPool {
    #[serde(default)]
    address_space: String,
    #[serde(default)]
    pool: String,
    #[serde(default)]
    sub_pool: String,
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6")]
    v6: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolId {
    #[serde(rename = "PoolID")]
    pool_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddressRequest {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
}

const POOL_PREFIX: &str = "lanyard/";
/// Pool ids of DHCP pools: this, then the pool's marker.
const DHCP_POOL_PREFIX: &str = "lanyard-dhcp/";
/// Where Docker puts the MAC it gives the container (with `RequiresMACAddress`).
const MAC_OPTION: &str = "com.docker.network.endpoint.macaddress";
/// Where Docker 29.0 and later put the endpoint's name, the container's name (moby
/// c6717f4387, daemon/libnetwork/network.go `ep.ipamOptions = {netlabel.EndpointName: name}`);
/// Docker 20.10 to 28.x send no name to a plugin.
const ENDPOINT_NAME_OPTION: &str = "com.docker.network.endpoint.name";
/// RequestPool data key whose value Docker takes as the pool's gateway.
const GATEWAY_DATA: &str = "com.docker.network.gateway";

/// Which pool a pool id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolKind {
    Static(IpNet),
    Dhcp(Ipv4Addr),
}

fn is_marker(address: Ipv4Addr) -> bool {
    address.octets()[0] == 0 && !address.is_unspecified()
}

/// The marker of a DHCP network's pools as CreateNetwork received them (see the module's
/// comment); `None` for any other network.
pub fn dhcp_marker(ipv4: &[Pool]) -> Option<Ipv4Addr> {
    match ipv4 {
        [Pool { pool, gateway: Some(IpAddr::V4(marker)) }] if pool.prefix_len() == 0 => {
            is_marker(*marker).then_some(*marker)
        }
        _ => None,
    }
}

/// A marker no stored network and no pool handed out by this process has.
fn new_marker(plugin: &Plugin) -> Result<Ipv4Addr> {
    let store = plugin.store.lock().unwrap_or_else(|e| e.into_inner());
    let mut handed = plugin.dhcp_pools.lock().unwrap_or_else(|e| e.into_inner());
    let taken = |m: &Ipv4Addr| {
        handed.contains(m) || store.networks.values().any(|n| n.dhcp_marker == Some(*m))
    };
    let marker = (1u32..1 << 24).map(Ipv4Addr::from).find(|m| !taken(m)).ok_or_else(|| {
        Error::conflict("every DHCP pool marker is taken: remove unused lanyard networks")
    })?;
    handed.insert(marker);
    Ok(marker)
}

pub fn handle(plugin: &Plugin, call: &str, body: &[u8]) -> Result<Value> {
    let what = format!("IpamDriver.{call}");
    match call {
        "GetCapabilities" => {
            no_arguments(&what, body)?;
            // The MAC is what a DHCP lease follows (Docker names no container to IPAM).
            Ok(json!({ "RequiresMACAddress": true, "RequiresRequestReplay": false }))
        }
        "GetDefaultAddressSpaces" => {
            no_arguments(&what, body)?;
            Ok(json!({
                "LocalDefaultAddressSpace": "lanyard-local",
                "GlobalDefaultAddressSpace": "lanyard-global",
            }))
        }
        "RequestPool" => {
            let request: RequestPool = parse_body(&what, body)?;
            let _ = (&request.address_space, &request.sub_pool, &request.options);
            // Without --subnet the addresses come from the LAN's DHCP server: answer "any", as
            // Docker's null IPAM does. Answering a guess of the LAN's subnet made libnetwork
            // ask again forever (checked with Docker 20.10).
            let pool: IpNet = if request.pool.is_empty() {
                if !request.v6 {
                    let marker = new_marker(plugin)?;
                    return Ok(json!({
                        "PoolID": format!("{DHCP_POOL_PREFIX}{marker}"),
                        "Pool": "0.0.0.0/0",
                        "Data": { GATEWAY_DATA: format!("{marker}/0") },
                    }));
                }
                "::/0".parse().expect("constant")
            } else {
                let pool: IpNet = request.pool.parse().map_err(|_| {
                    Error::usage(format!("{what}: pool {:?} is not a CIDR subnet", request.pool))
                })?;
                if pool.addr().is_ipv6() != request.v6 {
                    return Err(Error::usage(format!(
                        "{what}: pool {pool} is not of the family asked for (V6: {})",
                        request.v6
                    )));
                }
                pool.trunc()
            };
            Ok(
                json!({ "PoolID": format!("{POOL_PREFIX}{pool}"), "Pool": pool.to_string(), "Data": {} }),
            )
        }
        "ReleasePool" => {
            let request: PoolId = parse_body(&what, body)?;
            if let PoolKind::Dhcp(marker) = check_pool_id(&what, &request.pool_id)? {
                plugin.dhcp_pools.lock().unwrap_or_else(|e| e.into_inner()).remove(&marker);
            }
            Ok(json!({}))
        }
        "RequestAddress" => {
            let request: AddressRequest = parse_body(&what, body)?;
            let marker = match check_pool_id(&what, &request.pool_id)? {
                PoolKind::Dhcp(marker) => marker,
                PoolKind::Static(pool) if pool.addr().is_ipv6() && pool.prefix_len() == 0 => {
                    return Err(Error::unsupported(format!(
                        "{what}: IPv6 addresses on a lanyard DHCP network are not served (no \
                         DHCPv6): leave --ipv6 out, or give --ipv6 --subnet with Docker's IPAM"
                    )))
                }
                PoolKind::Static(_) => {
                    return Err(Error::unsupported(format!(
                        "{what}: lanyard's IPAM serves DHCP networks only (no --subnet); for \
                         static addresses leave --ipam-driver out and give --subnet, --gateway \
                         and docker run --ip"
                    )))
                }
            };
            let options = request.options.unwrap_or_default();
            if options.get("RequestAddressType").is_some_and(|t| t == GATEWAY_DATA) {
                // Not asked while RequestPool's data names the gateway (checked with 20.10);
                // should a Docker ask anyway, the marker is the answer.
                return Ok(json!({ "Address": format!("{marker}/0"), "Data": {} }));
            }
            if !request.address.is_empty() {
                return Err(Error::usage(format!(
                    "{what}: docker run --ip {} on a lanyard DHCP network: its addresses come \
                     from the LAN's DHCP server; leave --ip out (a fixed --mac-address keeps \
                     the same lease)",
                    request.address
                )));
            }
            let mac = options.get(MAC_OPTION).ok_or_else(|| {
                Error::usage(format!("{what}: no MAC ({MAC_OPTION}) in the request"))
            })?;
            let mac: MacAddr =
                mac.parse().map_err(|e: Error| e.context(format!("{what}: {MAC_OPTION}")))?;
            // An empty name is no name (the option is Docker's, the value the container's).
            let name =
                options.get(ENDPOINT_NAME_OPTION).map(String::as_str).filter(|n| !n.is_empty());
            let address = super::network::take_lease(plugin, marker, mac, name)
                .map_err(|e| e.context(what.clone()))?;
            Ok(json!({ "Address": address.to_string(), "Data": {} }))
        }
        "ReleaseAddress" => {
            let request: AddressRequest = parse_body(&what, body)?;
            check_pool_id(&what, &request.pool_id)?;
            // No DHCPRELEASE: Docker releases at every stop, and the same MAC may come back
            // (docker restart, or rm and run again); the lease's record stays until the
            // network is removed or the lease ends.
            Ok(json!({}))
        }
        _ => Err(Error::unsupported(format!("{what}: not a call this plugin implements"))),
    }
}

fn check_pool_id(what: &str, pool_id: &str) -> Result<PoolKind> {
    if let Some(Ok(pool)) = pool_id.strip_prefix(POOL_PREFIX).map(str::parse::<IpNet>) {
        return Ok(PoolKind::Static(pool));
    }
    match pool_id.strip_prefix(DHCP_POOL_PREFIX).map(str::parse::<Ipv4Addr>) {
        Some(Ok(marker)) if is_marker(marker) => Ok(PoolKind::Dhcp(marker)),
        _ => Err(Error::usage(format!("{what}: pool id {pool_id:?} is not one this plugin gave"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_pools_are_told_by_their_marker_and_other_pools_are_not() {
        let pool = |pool: &str, gateway: Option<&str>| Pool {
            pool: pool.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
        };
        let marker = Ipv4Addr::new(0, 0, 1, 2);
        assert_eq!(dhcp_marker(&[pool("0.0.0.0/0", Some("0.0.1.2"))]), Some(marker));
        for not_dhcp in [
            vec![pool("0.0.0.0/0", None)],                   // Docker's null IPAM
            vec![pool("0.0.0.0/0", Some("0.0.0.0"))],        // not a marker
            vec![pool("198.18.0.0/24", Some("198.18.0.1"))], // static
            vec![pool("0.0.0.0/0", Some("0.0.1.2")), pool("0.0.0.0/0", Some("0.0.1.3"))],
        ] {
            assert_eq!(dhcp_marker(&not_dhcp), None, "{not_dhcp:?}");
        }
        assert_eq!(check_pool_id("X", "lanyard-dhcp/0.0.1.2").unwrap(), PoolKind::Dhcp(marker));
        assert_eq!(
            check_pool_id("X", "lanyard/198.18.0.0/24").unwrap(),
            PoolKind::Static("198.18.0.0/24".parse().unwrap())
        );
        for bad in ["lanyard-dhcp/198.18.0.1", "lanyard-dhcp/0.0.0.0", "lanyard-dhcp/x", "other"] {
            assert_eq!(check_pool_id("X", bad).unwrap_err().kind(), crate::error::ErrorKind::Usage);
        }
    }
}
