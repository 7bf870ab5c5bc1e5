//! TEMPORARY coordinator stub: replaced by helper-decl's module at merge.
use std::collections::BTreeMap;

use crate::attach::AttachRequest;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::guest::GuestSpec;

pub struct ContainerFacts {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub env: Vec<String>,
}

pub struct Declaration {
    pub source: String,
    pub text: String,
    pub request: AttachRequest,
    pub host_route: bool,
}

pub struct Refusal {
    pub source: String,
    pub error: Error,
}

#[derive(Default)]
pub struct Declarations {
    pub wanted: Vec<Declaration>,
    pub refused: Vec<Refusal>,
}

pub fn has_declarations(labels: &BTreeMap<String, String>, env: &[String]) -> bool {
    labels.keys().any(|k| k == "lanyard.net" || k.starts_with("lanyard.net."))
        || env.iter().any(|e| e.split('=').next().unwrap_or("").contains("pipework_cmd"))
}

pub fn declarations(facts: &ContainerFacts, config: &Config) -> Declarations {
    let mut out = Declarations::default();
    for (key, value) in &facts.labels {
        if key != "lanyard.net" && !key.starts_with("lanyard.net.") {
            continue;
        }
        let source = format!("label {key}");
        match parse(facts, config, value) {
            Ok(request) => out.wanted.push(Declaration {
                source,
                text: value.clone(),
                request,
                host_route: config.host_routes,
            }),
            Err(error) => out.refused.push(Refusal { source, error }),
        }
    }
    out
}

fn parse(facts: &ContainerFacts, config: &Config, value: &str) -> Result<AttachRequest> {
    let tokens: Vec<String> = value.split_whitespace().map(str::to_string).collect();
    let Some(host_if) = tokens.first() else { return Err(Error::usage("empty declaration")) };
    if !config.is_allowed_host_interface(host_if) {
        return Err(Error::usage(format!(
            "host interface {host_if} is not in allowed_host_interfaces"
        )));
    }
    let mut request = AttachRequest::new(host_if, GuestSpec::Bare(facts.id.clone()));
    let mut addresses = Vec::new();
    let mut rest = tokens[1..].iter();
    while let Some(token) = rest.next() {
        match token.as_str() {
            "-i" => request.guest_ifname = rest.next().cloned().unwrap_or_default(),
            "dhcp" => {
                request.dhcp = Some(Default::default());
                request.dhcp_wait.wait = false;
            }
            other => addresses.push(other.to_string()),
        }
    }
    request.addresses = crate::spec::parse_addresses(&addresses)?;
    request.validate()?;
    Ok(request)
}
