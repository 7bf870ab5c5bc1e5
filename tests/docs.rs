//! The README is the user's contract: it must match the code it describes.

use lanyard::cli::pipework::{SUPPORTED_FORMS, UNSUPPORTED_FEATURES};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

#[test]
fn readme_lists_every_pipework_form_and_every_refused_feature() {
    let readme = readme();
    for form in SUPPORTED_FORMS {
        assert!(readme.contains(&format!("`lanyard pipework {form}`")), "README lacks form {form}");
    }
    for (feature, _) in UNSUPPORTED_FEATURES {
        assert!(
            readme.contains(&format!("| {feature} |")),
            "README lacks refused feature {feature}"
        );
    }
}

#[test]
fn ci_runs_the_test_command_the_readme_gives() {
    let readme = readme();
    assert!(readme.contains("./scripts/test.sh"), "README names the test command");
    assert!(readme.contains("./scripts/demo.sh"), "README names the demo command");
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(ci.lines().any(|l| l.trim() == "./scripts/test.sh"), ".ci/run runs ./scripts/test.sh");
}

#[test]
fn the_readme_config_sample_loads_with_every_key() {
    let readme = readme();
    let section = readme.split("**Config.**").nth(1).expect("README has a Config paragraph");
    let sample = section.split("```").nth(1).expect("the Config paragraph has a sample");
    let config = lanyard::config::Config::parse(sample, std::path::Path::new("README.md"))
        .unwrap_or_else(|e| panic!("the README's config sample is refused: {e}"));
    assert!(config.state_dir.is_some() && config.pipework_key.is_some());
    assert_eq!(config.allowed_host_interfaces.len(), 2);
    assert!(config.network("lan").is_some() && config.network("office").is_some());
}
