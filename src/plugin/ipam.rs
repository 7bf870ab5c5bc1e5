//! The IpamDriver API. Static networks use Docker's own IPAM (`--ipam-driver default`, the
//! default); this one will hand out DHCP leases (`--ipam-driver lanyard`, the next slice). Until
//! then it answers pools, and refuses addresses with a message saying what to use instead.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{no_arguments, parse_body, Plugin};
use crate::error::{Error, Result};

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

pub fn handle(_plugin: &Plugin, call: &str, body: &[u8]) -> Result<Value> {
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
                if request.v6 { "::/0" } else { "0.0.0.0/0" }.parse().expect("constant")
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
            check_pool_id(&what, &request.pool_id)?;
            Ok(json!({}))
        }
        "RequestAddress" => {
            let request: AddressRequest = parse_body(&what, body)?;
            check_pool_id(&what, &request.pool_id)?;
            let _ = (&request.address, &request.options);
            Err(Error::unsupported(format!(
                "{what}: DHCP addresses from lanyard's IPAM (--ipam-driver lanyard) are not \
                 served yet; create the network with Docker's IPAM (leave --ipam-driver out) and \
                 give --subnet, --gateway and docker run --ip"
            )))
        }
        "ReleaseAddress" => {
            let request: AddressRequest = parse_body(&what, body)?;
            check_pool_id(&what, &request.pool_id)?;
            // Nothing was handed out (see RequestAddress): nothing to release.
            Ok(json!({}))
        }
        _ => Err(Error::unsupported(format!("{what}: not a call this plugin implements"))),
    }
}

fn check_pool_id(what: &str, pool_id: &str) -> Result<()> {
    match pool_id.strip_prefix(POOL_PREFIX).map(str::parse::<IpNet>) {
        Some(Ok(_)) => Ok(()),
        _ => Err(Error::usage(format!("{what}: pool id {pool_id:?} is not one this plugin gave"))),
    }
}
