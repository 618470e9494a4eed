//! The guest image booted on real KVM. Every test skips, printing why, when `/dev/kvm` cannot be
//! used — unless `REQUIRE_KVM=1` is set (CI on a machine with KVM), when a missing KVM fails.

use vir_kvm::image::{Elf, build};
use vir_kvm::kvm_available;
use vir_kvm::machine::{MachineConfig, RunEnd, RunReport, run_image};

fn kvm_or_skip() -> bool {
    match kvm_available() {
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

fn image() -> Elf {
    let path = build().unwrap_or_else(|e| panic!("{e}"));
    Elf::read(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn boot(config: MachineConfig) -> RunReport {
    let report = run_image(&image(), &config).unwrap_or_else(|e| panic!("{e}"));
    println!("{}", report.console);
    println!("exits: {:?}", report.exits);
    report
}

#[test]
fn image_has_a_64_bit_entry_and_a_pvh_note() {
    let elf = image();
    assert_eq!(elf.entry64, 0x10_0000);
    let pvh = elf.pvh_entry.expect("XEN_ELFNOTE_PHYS32_ENTRY note");
    assert!(
        elf.segments
            .iter()
            .any(|s| (s.paddr..s.paddr + s.data.len() as u64).contains(&u64::from(pvh))),
        "the PVH entry {pvh:#x} is inside a loaded segment"
    );
}

/// The checks the image must report, each passed.
fn assert_passed(report: &RunReport, names: &[&str]) {
    let checks = report.checks();
    for name in names {
        assert!(
            checks.iter().any(|c| c.0 == *name && c.1),
            "check {name} missing or failed: {checks:?}"
        );
    }
    assert!(checks.iter().all(|c| c.1), "{checks:?}");
}

#[test]
fn image_boots_on_four_vcpus_takes_ipis_and_negotiates_vir() {
    if !kvm_or_skip() {
        return;
    }
    let report = boot(MachineConfig::default());
    assert_eq!(report.end, RunEnd::Exit(0), "console:\n{}", report.console);
    let checks = report.checks();
    let ipis: Vec<_> = checks.iter().filter(|c| c.0 == "ipi").collect();
    assert_eq!(ipis.len(), 4, "one IPI per vCPU");
    assert!(ipis.iter().all(|c| c.1));
    assert_passed(
        &report,
        &[
            "cpus-online",
            "negotiate",
            "setup",
            "deliver-after-setup",
            "retarget-all",
            "deliver-after-retarget",
            "vcpu-offline-migrated",
            "deliver-after-offline",
        ],
    );
    assert!(report.exits.doorbell > 0);
    // 17 vectors (MSI, MSI-X, IMS in device and in system memory) fired in three phases, each
    // through an irqfd and a KVM MSI route.
    assert_eq!(report.exits.fired, 3 * 17);
    assert_eq!(report.exits.fired_unrouted, 0);
    // The MSI capability, 8 MSI-X entries, 4 IMS entries in device memory and 4 in guest RAM
    // hold the messages ACTIVATE returned; every interrupt was remapped by the VT-d model with
    // the device's requester id, before and after retargeting.
    assert_eq!(report.exits.remapped, 3 * 17);
    assert_eq!(report.exits.blocked, 0);
    // One KVM_SET_GSI_ROUTING per ACTIVATE and per SET_AFFINITY, none for other calls.
    assert_eq!(report.gsi_routing_ioctls.len(), 17 + 17 + 5);
}

#[test]
fn image_without_vir_uses_the_trapped_msix_table() {
    if !kvm_or_skip() {
        return;
    }
    let report = boot(MachineConfig {
        vir: false,
        vcpus: 2,
        ..MachineConfig::default()
    });
    assert_eq!(report.end, RunEnd::Exit(0), "console:\n{}", report.console);
    assert!(report.lines().any(|l| l.starts_with("LEGACY ")));
    assert_eq!(report.exits.doorbell, 0);
    // The MSI-X table and capability are trapped and emulated by the host's legacy code; its
    // routes are KVM MSI routes with irqfds like vIR's.
    assert_passed(
        &report,
        &[
            "legacy-device",
            "legacy-msix-enabled",
            "legacy-deliver-after-setup",
            "legacy-deliver-after-retarget",
            "legacy-deliver-after-offline",
        ],
    );
    assert_eq!(report.exits.fired, 3 * 8);
    assert_eq!(report.exits.fired_unrouted, 0);
    // The host's legacy code programmed remappable messages and IRTEs (host remapping on).
    assert_eq!(report.exits.remapped, 3 * 8);
    assert_eq!(report.exits.blocked, 0);
    assert!(report.exits.mmio >= 8 * 5, "every table write trapped");
}

#[test]
fn image_boots_at_its_pvh_entry_in_32_bit_protected_mode() {
    if !kvm_or_skip() {
        return;
    }
    let report = boot(MachineConfig {
        vcpus: 1,
        pvh: true,
        ..MachineConfig::default()
    });
    assert_eq!(report.end, RunEnd::Exit(0), "console:\n{}", report.console);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("vir-guest-image: 1 vCPU(s)")),
        "{}",
        report.console
    );
    assert_passed(
        &report,
        &["cpus-online", "negotiate", "deliver-after-setup"],
    );
}
