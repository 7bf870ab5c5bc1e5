//! One parser: a `lanyard.net` label is refused with the very message `lanyard attach` prints
//! for the same words (the CLI adds "lanyard: " and, for clap's complaints, " (see --help)").
//! Every case fails before attach needs root or touches the kernel, so this runs anywhere.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use lanyard::config::Config;
use lanyard::declare::{declarations, ContainerFacts};

/// An empty config file of this test's own, so the host's /etc/lanyard cannot interfere;
/// removed when dropped, even when the test fails.
struct EmptyConfig(PathBuf);

impl EmptyConfig {
    fn new() -> EmptyConfig {
        let path =
            std::env::temp_dir().join(format!("lanyard-declare-cli-{}.toml", std::process::id()));
        std::fs::write(&path, "").expect("write the test config");
        EmptyConfig(path)
    }
}

impl Drop for EmptyConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_label_and_lanyard_attach_say_the_same() {
    let config_file = EmptyConfig::new();
    let config = Config { allowed_host_interfaces: vec!["br0".to_string()], ..Config::default() };
    // (the label's words after the host interface, whether clap is the one complaining)
    let cases: [(&[&str], bool); 9] = [
        (&["--mtu", "x"], true),
        (&["dhcp", "--bogus"], true),
        (&["dhcp", "--mac-scheme", "random"], true),
        (&["dhcp", "198.18.20.5/24"], false),
        (&["198.18.20.5/24", "--set-resolv"], false),
        (&["198.18.20.300/24"], false),
        (&["none", "198.18.20.5/24"], false),
        (&["198.18.20.5/24", "-i", "abcdefghijklmnop"], false),
        (&["dhcp", "--hostname", "bad name"], false),
    ];
    for (words, from_clap) in cases {
        let value = std::iter::once("br0".to_string())
            .chain(
                words
                    .iter()
                    .map(|w| if w.contains(' ') { format!("'{w}'") } else { w.to_string() }),
            )
            .collect::<Vec<_>>()
            .join(" ");
        let facts = ContainerFacts {
            id: "0123456789abcdef".to_string(),
            name: "web".to_string(),
            labels: BTreeMap::from([("lanyard.net".to_string(), value.clone())]),
            ..ContainerFacts::default()
        };
        let found = declarations(&facts, &config);
        assert!(found.wanted.is_empty(), "{value}: accepted");
        assert_eq!(found.refused.len(), 1, "{value}");
        let refusal = found.refused[0].error.to_string();

        let out = Command::new(env!("CARGO_BIN_EXE_lanyard"))
            .arg("--config")
            .arg(&config_file.0)
            .args(["attach", "br0", "web"])
            .args(words)
            .stdin(Stdio::null())
            .output()
            .expect("run lanyard attach");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{words:?}: {stderr}");
        let expected = if from_clap {
            format!("lanyard: {refusal} (see --help)\n")
        } else {
            format!("lanyard: {refusal}\n")
        };
        assert_eq!(stderr, expected, "{words:?}: the CLI and the label differ");
    }
}
