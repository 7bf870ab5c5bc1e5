//! The ADD result as the spec lays it out for each version lanyard speaks: 0.4.0 marks each IP
//! with its `version`, 1.0.0 drops it, 1.1.0 adds the interface's `mtu`.

use serde_json::{json, Map, Value};

use crate::dhcp::Lease;
use crate::spec::default_route_for;
use crate::state::Record;

/// The result of an ADD that made `record`, in the namespace at `sandbox` (CNI_NETNS), with the
/// DHCP `lease` when there is one. `conf_dns` is the conf's `dns`, used when no lease brings
/// servers. A `prev_result` (lanyard chained after another plugin) is passed on with lanyard's
/// interfaces, addresses and routes added after its own, as the spec asks.
pub fn add_result(
    version: &str,
    record: &Record,
    sandbox: &str,
    lease: Option<&Lease>,
    conf_dns: Option<&Value>,
    prev_result: Option<&Value>,
) -> Value {
    let previous = |key: &str| -> Vec<Value> {
        prev_result.and_then(|p| p[key].as_array().cloned()).unwrap_or_default()
    };
    let mut interfaces = previous("interfaces");
    // The veth's host end is an interface of the attachment too (the spec lists host-level
    // interfaces); a macvlan has none.
    if let Some(host_end) = &record.host_ifname {
        interfaces.push(json!({ "name": host_end }));
    }
    let mut guest = Map::new();
    guest.insert("name".into(), json!(record.guest_ifname));
    guest.insert("mac".into(), json!(record.mac.to_string()));
    if version == "1.1.0" {
        guest.insert("mtu".into(), json!(record.mtu));
    }
    guest.insert("sandbox".into(), json!(sandbox));
    interfaces.push(Value::Object(guest));
    let guest_index = interfaces.len() - 1;

    let ip = |address: String, gateway: Option<String>, is_ipv4: bool| {
        let mut entry = Map::new();
        if version == "0.4.0" {
            entry.insert("version".into(), json!(if is_ipv4 { "4" } else { "6" }));
        }
        entry.insert("address".into(), json!(address));
        if let Some(gateway) = gateway {
            entry.insert("gateway".into(), json!(gateway));
        }
        entry.insert("interface".into(), json!(guest_index));
        Value::Object(entry)
    };
    let mut ips = previous("ips");
    let mut routes = previous("routes");
    if let Some(lease) = lease {
        let gateway = lease.gateway();
        ips.push(ip(
            format!("{}/{}", lease.address, lease.prefix_len),
            gateway.map(|g| g.to_string()),
            true,
        ));
        if let Some(gateway) = gateway {
            routes.push(json!({ "dst": "0.0.0.0/0", "gw": gateway.to_string() }));
        }
    }
    for address in &record.addresses {
        ips.push(ip(
            address.address.to_string(),
            address.gateway.map(|g| g.to_string()),
            address.address.addr().is_ipv4(),
        ));
        if let Some(gateway) = address.gateway {
            routes.push(json!({
                "dst": default_route_for(gateway).to_string(),
                "gw": gateway.to_string(),
            }));
        }
    }
    for route in &record.routes {
        routes.push(json!({
            "dst": route.destination.to_string(),
            "gw": route.gateway.to_string(),
        }));
    }
    let dns = match lease.filter(|l| !l.dns_servers.is_empty()) {
        Some(lease) => {
            let mut dns = Map::new();
            dns.insert(
                "nameservers".into(),
                json!(lease.dns_servers.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            );
            if let Some(domain) = &lease.domain_name {
                dns.insert("domain".into(), json!(domain));
            }
            if !lease.domain_search.is_empty() {
                dns.insert("search".into(), json!(lease.domain_search));
            }
            Value::Object(dns)
        }
        None => prev_result
            .map(|p| p["dns"].clone())
            .filter(|dns| dns.as_object().is_some_and(|d| !d.is_empty()))
            .or_else(|| conf_dns.cloned())
            .unwrap_or_else(|| json!({})),
    };
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": dns,
    })
}
