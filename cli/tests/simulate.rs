//! `vir simulate`: the default scenario end to end through the binary.
//!
//! VIR-ACT-H-006, VIR-AFF-G-001, VIR-SEC-H-001: the report the binary prints is the scenario's
//! (every delivery correct, no storage rewritten, forged messages blocked), and its exit status
//! says whether it passed.
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

fn vir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vir"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vir")
}

fn json(args: &[&str]) -> Json {
    let out = vir(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "vir {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn n(j: &Json, path: &[&str]) -> u64 {
    let mut v = j;
    for p in path {
        v = &v[*p];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {v}"))
}

#[test]
fn default_run_exits_0_with_a_readable_summary() {
    let out = vir(&["simulate"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(text.starts_with("vIR simulation: PASS\n"), "{text}");
    for line in [
        "  vCPUs (16): APIC ids 0,1,2,3,256,257,300,511,4,5,6,7,512,513,1000,4095",
        "  deliveries after request_irq: 2136 checked, 2136 correct, 0 wrong, 0 missing",
        "  deliveries after affinity + unplug: 2136 checked, 2136 correct, 0 wrong, 0 missing",
        "  storage rewrites after activation: 0",
        "  forged messages: 16 written, 16 blocked and recorded, 0 delivered",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn json_report_has_zero_wrong_deliveries_and_the_expected_counts() {
    for (mode, posted, remapped) in [("posted", 4272, 0), ("remapped", 0, 4272)] {
        let j = json(&["simulate", "--json", "--mode", mode]);
        assert_eq!(j["mode"], mode);
        assert_eq!(j["binding"], "vmcall");
        assert_eq!(n(&j, &["total_interrupts"]), 2136);
        for phase in ["delivery_initial", "delivery_after_changes"] {
            assert_eq!(n(&j, &[phase, "checked"]), 2136);
            assert_eq!(n(&j, &[phase, "correct"]), 2136);
            assert_eq!(n(&j, &[phase, "wrong"]), 0);
            assert_eq!(n(&j, &[phase, "missing"]), 0);
        }
        assert_eq!(n(&j, &["calls", "ALLOCATE"]), 2129);
        assert_eq!(n(&j, &["calls", "ACTIVATE"]), 4272);
        assert_eq!(n(&j, &["calls", "SET_AFFINITY"]), 1022);
        assert_eq!(n(&j, &["statuses", "SUCCESS"]), 7425);
        assert_eq!(n(&j, &["storage", "rewrites"]), 0);
        // Mask, message, unmask per IMS entry (VIR-ALC-G-001).
        assert_eq!(
            n(&j, &["storage", "at_activation", "IMS (device memory)"]),
            6144
        );
        assert_eq!(
            n(&j, &["storage", "guest_mask_writes", "IMS (device memory)"]),
            4096
        );
        assert_eq!(n(&j, &["forged", "delivered"]), 0);
        assert_eq!(n(&j, &["faults", "recorded"]), 16);
        assert_eq!(n(&j, &["path", "posted"]), posted);
        assert_eq!(n(&j, &["path", "remapped"]), remapped);
        let groups: Vec<(String, u64)> = j["interrupts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["storage"].as_str().unwrap().to_string(),
                    g["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            groups,
            [
                ("MSI-X".to_string(), 64),
                ("IMS (device memory)".to_string(), 2048),
                ("IMS (system memory)".to_string(), 16),
                ("MSI".to_string(), 8),
            ]
        );
    }
}

#[test]
fn options_shape_the_scenario() {
    let j = json(&[
        "simulate",
        "--json",
        "--vcpus",
        "4",
        "--msix",
        "8",
        "--ims",
        "32",
        "--ims-sys",
        "2",
        "--msi-log2",
        "1",
        "--seed",
        "9",
        "--binding",
        "doorbell",
    ]);
    assert_eq!(j["binding"], "doorbell");
    assert_eq!(n(&j, &["seed"]), 9);
    assert_eq!(j["vcpus"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(n(&j, &["total_interrupts"]), 44);
    assert_eq!(n(&j, &["delivery_after_changes", "correct"]), 44);
    assert_eq!(n(&j, &["calls", "ALLOCATE"]), 43);
}

#[test]
fn too_few_vcpus_for_the_vectors_fails_with_one_line() {
    // 8 vCPUs × 186 guest vectors cannot hold 2136 interrupts: request_irq says ENOSPC.
    let out = vir(&["simulate", "--vcpus", "8"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with("vir: error: simulation: request_irq irq 1512 of accel"),
        "{stderr}"
    );
    assert!(stderr.ends_with("(errno 28)\n"), "{stderr:?}");
}

#[test]
fn bad_option_values_give_one_line_usage_errors() {
    for (args, message) in [
        (
            &["simulate", "--mode", "warp"][..],
            "invalid value 'warp' for --mode (expected posted or remapped)",
        ),
        (
            &["simulate", "--binding", "hvc"][..],
            "invalid value 'hvc' for --binding (expected vmcall or doorbell)",
        ),
        (
            &["simulate", "--vcpus", "0"][..],
            "invalid value '0' for --vcpus (expected 1 to 4096)",
        ),
        (
            &["simulate", "--vcpus", "many"][..],
            "invalid value 'many' for --vcpus (expected 1 to 4096)",
        ),
        (
            &["simulate", "--msi-log2", "6"][..],
            "invalid value '6' for --msi-log2 (expected 0 to 5)",
        ),
        (
            &["simulate", "--msix", "4096"][..],
            "invalid value '4096' for --msix (expected 0 to 2048)",
        ),
    ] {
        let out = vir(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr, format!("vir: error: {message}\n"), "{args:?}");
        assert_eq!(out.stdout, b"");
    }
}

#[test]
fn iommu_amd_runs_the_scenario_on_amd_vi_in_both_modes() {
    for mode in ["posted", "remapped"] {
        let args = [
            "simulate",
            "--iommu",
            "amd",
            "--mode",
            mode,
            "--msix",
            "8",
            "--ims",
            "16",
            "--ims-sys",
            "4",
            "--msi-log2",
            "2",
            "--json",
        ];
        let j = json(&args);
        assert_eq!(j["iommu"], "AMD-Vi", "{mode}");
        assert_eq!(n(&j, &["delivery_initial", "correct"]), 32, "{mode}");
        assert_eq!(n(&j, &["delivery_after_changes", "correct"]), 32, "{mode}");
        assert_eq!(n(&j, &["forged", "delivered"]), 0, "{mode}");
    }
    let out = vir(&["simulate", "--iommu", "arm"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vir: error: invalid value 'arm' for --iommu (expected vtd or amd)\n"
    );
}
