//! The DNS label of an attachment, rendered from the `[dns_update] name` template.

use crate::error::{Error, Result};

/// The most a DNS label may hold (RFC 1035 2.3.4).
pub const MAX_LABEL: usize = 63;

/// What a name template may refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameVars {
    /// `{container}`: the container's name (the namespace name for `netns:` guests, the pod or
    /// container name for CNI).
    pub container: String,
    /// `{container_id}`: the container's id (empty for `netns:` guests).
    pub container_id: String,
    /// `{ifname}`: the interface's name inside the guest.
    pub ifname: String,
    /// `{network}`: the configured network's name, or else the host interface.
    pub network: String,
    /// `{host}`: the host's short hostname.
    pub host: String,
}

/// Renders `template` (e.g. `"{container}"`, `"{container}-{ifname}"`) into one DNS label:
///
/// - `{container}`, `{container_id}`, `{ifname}`, `{network}`, `{host}` are replaced by their
///   values; any other `{...}` (or a `{` without `}`) is a usage error naming it.
/// - ASCII letters are lower-cased; `_`, `.` and every character other than `a-z`, `0-9` and
///   `-` (spaces, `@`, non-ASCII letters...) become `-`, one `-` per character.
/// - Leading and trailing `-` are dropped (a host name label starts and ends with a letter or
///   digit), then the label is cut to 63 characters and any `-` left at the cut dropped too.
/// - An empty result (an empty template or value, or one of only `-`-like characters) is a usage
///   error: no record is better than a record under a made-up name.
pub fn render_label(template: &str, vars: &NameVars) -> Result<String> {
    let mut rendered = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        rendered.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(Error::usage(format!(
                "DNS name template {template:?}: `{{` without a closing `}}`"
            )));
        };
        let value = match &after[..close] {
            "container" => &vars.container,
            "container_id" => &vars.container_id,
            "ifname" => &vars.ifname,
            "network" => &vars.network,
            "host" => &vars.host,
            other => {
                return Err(Error::usage(format!(
                    "DNS name template {template:?}: unknown placeholder {{{other}}} (known: \
                     {{container}} {{container_id}} {{ifname}} {{network}} {{host}})"
                )))
            }
        };
        rendered.push_str(value);
        rest = &after[close + 1..];
    }
    rendered.push_str(rest);
    let label: String = rendered
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let label: String = label.trim_matches('-').chars().take(MAX_LABEL).collect();
    let label = label.trim_end_matches('-').to_string();
    if label.is_empty() {
        return Err(Error::usage(format!(
            "DNS name template {template:?} gives an empty DNS label for {rendered:?} (a label \
             needs at least one letter or digit): set a name with --dns-name or lanyard.dns"
        )));
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn vars() -> NameVars {
        NameVars {
            container: "Web_App.1".into(),
            container_id: "0123abcd".into(),
            ifname: "eth1".into(),
            network: "lan".into(),
            host: "node7".into(),
        }
    }

    #[test]
    fn placeholders_are_replaced_and_the_result_made_a_label() {
        assert_eq!(render_label("{container}", &vars()).unwrap(), "web-app-1");
        assert_eq!(
            render_label("{container}-{ifname}.{network}@{host}", &vars()).unwrap(),
            "web-app-1-eth1-lan-node7"
        );
        assert_eq!(render_label("c{container_id}", &vars()).unwrap(), "c0123abcd");
        assert_eq!(render_label("plain", &vars()).unwrap(), "plain");
    }

    #[test]
    fn other_characters_become_dashes_and_edges_are_trimmed() {
        let mut v = vars();
        v.container = "_Café du Monde_".into();
        // One `-` per character: é is one character.
        assert_eq!(render_label("{container}", &v).unwrap(), "caf--du-monde");
        v.container = "/web".into();
        assert_eq!(render_label("{container}", &v).unwrap(), "web");
    }

    #[test]
    fn long_names_are_cut_to_63_without_a_trailing_dash() {
        let mut v = vars();
        v.container = "a".repeat(70);
        assert_eq!(render_label("{container}", &v).unwrap(), "a".repeat(63));
        v.container = format!("{}_b", "a".repeat(62));
        // Character 63 is the `-` from `_`: cut, then trimmed.
        assert_eq!(render_label("{container}", &v).unwrap(), "a".repeat(62));
    }

    #[test]
    fn empty_results_and_bad_templates_are_usage_errors() {
        let mut v = vars();
        v.container_id = String::new();
        let empty = render_label("{container_id}", &v).unwrap_err();
        assert_eq!(empty.kind(), ErrorKind::Usage);
        assert!(empty.to_string().contains("empty DNS label"), "{empty}");
        assert!(render_label("__..", &v).is_err());
        assert!(render_label("", &v).is_err());
        let unknown = render_label("{pod}", &v).unwrap_err();
        assert!(unknown.to_string().contains("unknown placeholder {pod}"), "{unknown}");
        let open = render_label("{container", &v).unwrap_err();
        assert!(open.to_string().contains("without a closing"), "{open}");
    }
}
