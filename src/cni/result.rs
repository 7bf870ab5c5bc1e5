//! The ADD result as the spec lays it out for each version lanyard speaks: 0.4.0 marks each IP
//! with its `version`, 1.0.0 drops it, 1.1.0 adds the interface's `mtu`. As a main plugin
//! ([`add_result`]) and as an IPAM plugin ([`ipam_result`]).

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
    let dns = match lease.and_then(lease_dns) {
        Some(dns) => dns,
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

/// The result of lanyard as an IPAM plugin: the leased address with the router as its gateway
/// (no `interface`: the main plugin made the interface and lists it), the lease's routes (its
/// classless static routes, or a default route via the router) and its DNS servers. The main
/// plugin configures all of it.
pub fn ipam_result(version: &str, lease: &Lease) -> Value {
    let mut ip = Map::new();
    if version == "0.4.0" {
        ip.insert("version".into(), json!("4"));
    }
    ip.insert("address".into(), json!(format!("{}/{}", lease.address, lease.prefix_len)));
    if let Some(gateway) = lease.gateway().or(lease.routers.first().copied()) {
        ip.insert("gateway".into(), json!(gateway.to_string()));
    }
    let routes: Vec<Value> = lease
        .routes()
        .iter()
        .map(|route| {
            let destination = format!("{}/{}", route.destination, route.prefix_len);
            match route.gateway.is_unspecified() {
                true => json!({ "dst": destination }),
                false => json!({ "dst": destination, "gw": route.gateway.to_string() }),
            }
        })
        .collect();
    json!({
        "cniVersion": version,
        "ips": [Value::Object(ip)],
        "routes": routes,
        "dns": lease_dns(lease).unwrap_or_else(|| json!({})),
    })
}

/// The lease's DNS servers, domain and search list as the result's `dns`; `None` when the
/// lease brings no servers.
fn lease_dns(lease: &Lease) -> Option<Value> {
    if lease.dns_servers.is_empty() {
        return None;
    }
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
    Some(Value::Object(dns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::Route;
    use std::net::Ipv4Addr;

    fn lease(classless_routes: Vec<Route>) -> Lease {
        Lease {
            address: Ipv4Addr::new(198, 18, 9, 50),
            prefix_len: 24,
            server_id: Ipv4Addr::new(198, 18, 9, 1),
            routers: vec![Ipv4Addr::new(198, 18, 9, 1)],
            classless_routes,
            dns_servers: vec![Ipv4Addr::new(198, 18, 9, 53)],
            domain_name: Some("lab.example".into()),
            domain_search: Vec::new(),
            mtu: None,
            timers: None,
            acquired_unix_ms: 0,
        }
    }

    #[test]
    fn an_ipam_result_carries_the_lease_routes_and_dns() {
        let plain = ipam_result("0.4.0", &lease(Vec::new()));
        assert_eq!(
            plain["ips"],
            json!([{"version": "4", "address": "198.18.9.50/24", "gateway": "198.18.9.1"}])
        );
        assert_eq!(plain["routes"], json!([{"dst": "0.0.0.0/0", "gw": "198.18.9.1"}]));
        assert_eq!(plain["dns"], json!({"nameservers": ["198.18.9.53"], "domain": "lab.example"}));
        // Option 121 replaces the router's default route (RFC 3442); an on-link route has no gw.
        let route = |a: [u8; 4], prefix_len: u8, gw: [u8; 4]| Route {
            destination: Ipv4Addr::from(a),
            prefix_len,
            gateway: Ipv4Addr::from(gw),
        };
        let classless = ipam_result(
            "1.0.0",
            &lease(vec![
                route([0, 0, 0, 0], 0, [198, 18, 9, 254]),
                route([198, 19, 0, 0], 16, [198, 18, 9, 2]),
                route([198, 18, 10, 0], 24, [0, 0, 0, 0]),
            ]),
        );
        assert_eq!(
            classless["ips"],
            json!([{"address": "198.18.9.50/24", "gateway": "198.18.9.254"}])
        );
        assert_eq!(
            classless["routes"],
            json!([
                {"dst": "0.0.0.0/0", "gw": "198.18.9.254"},
                {"dst": "198.19.0.0/16", "gw": "198.18.9.2"},
                {"dst": "198.18.10.0/24"},
            ])
        );
    }
}
