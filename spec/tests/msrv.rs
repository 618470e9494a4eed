//! The workspace's `rust-version` is the one clippy checks: it is declared once, in
//! `[workspace.package]`, every member inherits it and the workspace lints (which every member
//! opts into) deny `clippy::incompatible_msrv`, which compares API use against that version.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("spec/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn members(workspace: &str) -> Vec<String> {
    let line = workspace
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members line");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn workspace_declares_a_rust_version_and_denies_incompatible_msrv() {
    let ws = read("Cargo.toml");
    let version = ws
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("workspace.package.rust-version");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        (2..=3).contains(&parts.len()) && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "rust-version {version:?} is not a version"
    );
    assert!(
        ws.contains("[workspace.lints.clippy]") && ws.contains("incompatible_msrv = \"deny\""),
        "the workspace lints must deny clippy::incompatible_msrv"
    );
    for f in ["clippy.toml", ".clippy.toml"] {
        assert!(
            !root().join(f).exists(),
            "{f} could set another msrv than rust-version"
        );
    }
}

#[test]
fn every_member_inherits_the_rust_version_and_the_lints() {
    let ws = read("Cargo.toml");
    let members = members(&ws);
    assert!(members.len() >= 10, "members: {members:?}");
    for m in members {
        let manifest = read(&format!("{m}/Cargo.toml"));
        assert!(
            manifest.contains("rust-version.workspace = true"),
            "{m} does not inherit rust-version"
        );
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{m} does not opt into the workspace lints"
        );
    }
}
