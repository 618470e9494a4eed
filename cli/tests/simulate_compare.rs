//! `vir simulate --compare` through the binary: the three situations side by side.
//!
//! VIR-LEG-G-001: IMS allowed on bare metal and with vIR, refused with an emulated unit;
//! VIR-LEG-H-001/002: the emulated situation's MSI-X accesses are trapped (exits), vIR's are not.
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

fn vir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vir"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vir")
}

const SMALL: [&str; 8] = [
    "simulate",
    "--compare",
    "--vectors",
    "64",
    "--vcpus",
    "8",
    "--unplug",
    "2",
];

#[test]
fn compare_prints_the_table_and_exits_0() {
    let out = vir(&SMALL);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(
        text.starts_with("vIR compare: 64 MSI-X vectors, 8 vCPUs (2 unplugged), posted mode\n"),
        "{text}"
    );
    for line in [
        "bare-metal: selected bare-metal unit (no hypervisor bit); IMS allowed, delivered; PASS",
        "emulated: selected emulated unit (no vIR leaves); IMS refused (errno 95); PASS",
        "  unplug: 16 vectors on the unplugged vCPUs, 17 migrations",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("vir: selected vIR (version 1, session 1")
                && l.ends_with("IMS allowed, delivered; PASS"))
    );
    // Every phase row checks all 64 vectors.
    let checked = text.lines().filter(|l| l.ends_with(" 64/64")).count();
    assert_eq!(checked, 12, "{text}");
}

#[test]
fn compare_json_has_every_situation_and_phase() {
    let mut args = SMALL.to_vec();
    args.extend(["--json", "--mode", "remapped"]);
    let out = vir(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Json = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(j["mode"], "remapped");
    let names: Vec<&str> = j["situations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["situation"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bare-metal", "emulated", "vir"]);
    for s in j["situations"].as_array().unwrap() {
        let phases: Vec<&str> = s["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        assert_eq!(phases, ["setup", "retarget", "unplug", "teardown"]);
        for p in s["phases"].as_array().unwrap() {
            assert_eq!(
                (p["checked"].as_u64(), p["correct"].as_u64()),
                (Some(64), Some(64))
            );
        }
        assert_eq!(s["failures"].as_array().map(Vec::len), Some(0));
    }
    let setup = |i: usize, field: &str| j["situations"][i]["phases"][0]["counts"][field].as_u64();
    // 64 vectors: 5 trapped accesses each plus the MSI-X enable; 3 vIR calls each plus the
    // MSI-X enable (config space stays trapped).
    assert_eq!(setup(1, "trapped"), Some(321));
    assert_eq!(setup(1, "hypercalls"), Some(0));
    assert_eq!(setup(2, "trapped"), Some(1));
    assert_eq!(setup(2, "hypercalls"), Some(192));
    assert_eq!(setup(0, "trapped"), Some(0));
}

#[test]
fn compare_on_amd_vi_passes_every_situation() {
    let mut args = SMALL.to_vec();
    args.extend(["--iommu", "amd"]);
    let out = vir(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with(
            "vIR compare: 64 MSI-X vectors, 8 vCPUs (2 unplugged), posted mode, AMD-Vi host"
        ),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.ends_with("; PASS")).count(),
        3,
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.ends_with(" 64/64")).count(),
        12,
        "{text}"
    );
}

#[test]
fn compare_refuses_bad_and_conflicting_options() {
    for (args, message) in [
        (
            vec!["simulate", "--compare", "--vectors", "0"],
            "vir: error: invalid value '0' for --vectors (expected 1 to 2048)\n",
        ),
        (
            vec!["simulate", "--compare", "--vectors", "4096"],
            "vir: error: invalid value '4096' for --vectors (expected 1 to 2048)\n",
        ),
        (
            vec!["simulate", "--compare", "--vcpus", "2", "--unplug", "2"],
            "vir: error: invalid value '2' for --unplug (expected fewer than --vcpus)\n",
        ),
        (
            vec!["simulate", "--compare", "--iommu", "arm"],
            "vir: error: invalid value 'arm' for --iommu (expected vtd or amd)\n",
        ),
        (
            vec!["simulate", "--compare", "--seed", "3"],
            "vir: error: option --seed cannot be combined with --compare\n",
        ),
    ] {
        let out = vir(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), message, "{args:?}");
        assert!(out.stdout.is_empty());
    }
}
