//! `vir kvm`: the guest image booted on real KVM reports every check passed and its figures;
//! without `/dev/kvm` the command says why it cannot run (these tests then skip, printing why,
//! unless `REQUIRE_KVM=1`).

use std::process::{Command, Output};

use serde_json::Value as Json;

fn vir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vir"))
        .args(args)
        .output()
        .expect("vir runs")
}

fn kvm_usable() -> bool {
    match vir_kvm::kvm_available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("REQUIRE_KVM").is_none_or(|v| v != "1"),
                "REQUIRE_KVM=1 but KVM cannot be used: {why}"
            );
            println!("skipped: {why}");
            false
        }
    }
}

#[test]
fn kvm_refuses_a_vcpu_count_out_of_range() {
    let o = vir(&["kvm", "--vcpus", "17"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--vcpus"), "{err}");
}

#[test]
fn kvm_without_dev_kvm_says_why() {
    if vir_kvm::kvm_available().is_ok() {
        println!("skipped: /dev/kvm is usable here, the message cannot be seen");
        return;
    }
    let o = vir(&["kvm"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/dev/kvm"), "{err}");
}

#[test]
fn kvm_json_reports_every_check_passed_with_figures() {
    if !kvm_usable() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vir-kvm-junit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junit = dir.join("kvm.xml");
    let o = vir(&["kvm", "--json", "--junit", junit.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: Json = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(j["passed"], true);
    assert_eq!(j["situation"], "vir");
    let checks = j["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["passed"] == true));
    for name in [
        "deliver-after-setup",
        "deliver-after-retarget",
        "deliver-after-offline",
    ] {
        assert!(checks.iter().any(|c| c["name"] == name), "{name}");
    }
    let figures: Vec<&str> = j["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for f in [
        "noop-ring",
        "query",
        "allocate",
        "activate",
        "set-affinity",
        "latency-vir",
    ] {
        assert!(figures.contains(&f), "{f} in {figures:?}");
    }
    assert_eq!(j["exits"]["fired"], 51);
    assert_eq!(j["exits"]["remapped"], 51);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(&format!("tests=\"{}\" failures=\"0\"", checks.len())));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn kvm_legacy_stays_off_vir() {
    if !kvm_usable() {
        return;
    }
    let o = vir(&["kvm", "--legacy", "--vcpus", "2"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("guest: LEGACY "), "{out}");
    assert!(out.contains("doorbell: 0"), "{out}");
    assert!(
        out.contains("guest: CHECK legacy-deliver-after-retarget pass"),
        "{out}"
    );
    assert!(out.contains("legacy: "), "{out}");
}

/// The per-requirement verdicts of a `--json` conformance report.
fn verdicts(j: &Json) -> Vec<(String, String)> {
    j["requirements"]
        .as_array()
        .expect("requirements")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The image's in-guest conformance report on real KVM has the shape of `vir conform`'s and
/// agrees with it on every requirement both check.
#[test]
fn kvm_conform_report_matches_vir_conform_where_both_check() {
    if !kvm_usable() {
        return;
    }
    let image = vir(&["kvm", "--conform", "--json"]);
    let text = String::from_utf8_lossy(&image.stdout);
    assert_eq!(image.status.code(), Some(0), "{text}");
    let image: Json = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(image["passed"], true);
    let suite = vir(&["conform", "--json"]);
    let suite: Json = serde_json::from_slice(&suite.stdout).expect("JSON report");
    let suite = verdicts(&suite);
    let checked: Vec<(String, String)> = verdicts(&image)
        .into_iter()
        .filter(|(_, v)| v != "no check")
        .collect();
    assert!(checked.len() >= 8, "{checked:?}");
    let mut both = 0;
    for (id, verdict) in &checked {
        assert_eq!(verdict, "pass", "{id}");
        let theirs = suite.iter().find(|(i, _)| i == id).map(|(_, v)| v.as_str());
        if theirs.is_some_and(|v| v != "no check" && v != "not testable") {
            both += 1;
            assert_eq!(
                theirs,
                Some("pass"),
                "{id}: image pass, vir conform {theirs:?}"
            );
        }
    }
    assert!(both > 0, "no requirement checked by both");
}
