//! The default scenario end to end, in both host modes and both bindings, with exact figures.
//!
//! Requirements checked: VIR-ACT-H-006 (the physical flow: posted IRTE → descriptor, remapped
//! host vector → VFIO → irqfd → route), VIR-ACT-H-008/009 and VIR-ACT-G-001 (one message per
//! allocation, written into the storage once), VIR-AFF-H-005 and VIR-AFF-G-001 (affinity changes
//! and hot-unplug never rewrite storage), VIR-SEC-H-001 and VIR-SEC-H-003 (forged messages are
//! blocked and recorded), VIR-NEG-H-005 (session 1 after the first negotiation).
use vir_host::IrMode;
use vir_simvm::CallBinding;
use vir_simvm::scenario::{self, NamedCounts, Report, ScenarioConfig};

fn counts(pairs: &[(&str, u64)]) -> NamedCounts {
    NamedCounts(pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect())
}

/// What does not depend on the host mode or the binding: the guest's decisions are the same.
fn assert_default_figures(r: &Report) {
    assert!(r.passed(), "{r}");
    assert_eq!(
        r.vcpus,
        [
            0, 1, 2, 3, 256, 257, 300, 511, 4, 5, 6, 7, 512, 513, 1000, 4095
        ]
    );
    assert_eq!((r.pcpus, r.irte_table), (16, 8192));
    assert_eq!(r.negotiation.version, 1);
    assert_eq!(r.negotiation.session, 1);
    assert_eq!(r.negotiation.feature_bits, 0x3f);
    assert_eq!(r.negotiation.cpuid_base, 0x4000_0100);
    let groups: Vec<(&str, &str, u32, (u32, u32))> = r
        .interrupts
        .iter()
        .map(|g| (g.device.as_str(), g.storage.as_str(), g.count, g.irqs))
        .collect();
    assert_eq!(
        groups,
        [
            ("nic", "MSI-X", 64, (24, 87)),
            ("accel", "IMS (device memory)", 2048, (88, 2135)),
            ("queues", "IMS (system memory)", 16, (2136, 2151)),
            ("msi", "MSI", 8, (2152, 2159)),
        ]
    );
    assert_eq!(r.total_interrupts, 2136);
    for d in [&r.delivery_initial, &r.delivery_after_changes] {
        assert_eq!(
            (d.checked, d.correct, d.wrong, d.missing),
            (2136, 2136, 0, 0)
        );
        assert_eq!(d.failures, Vec::<String>::new());
    }
    assert_eq!(r.failed_deliveries(), 0);
    // One ALLOCATE per slot (the MSI block is one), a RESERVE and a real ACTIVATE per vector,
    // one SET_AFFINITY per move (random changes plus hot-unplug migrations).
    assert_eq!(
        r.calls,
        counts(&[
            ("QUERY", 1),
            ("NEGOTIATE", 1),
            ("ALLOCATE", 2129),
            ("ACTIVATE", 4272),
            ("SET_AFFINITY", 1022),
        ])
    );
    assert_eq!(r.statuses, counts(&[("SUCCESS", 7425)]));
    assert_eq!(
        (r.affinity.requested, r.affinity.moved, r.affinity.unchanged),
        (1024, 885, 139)
    );
    assert_eq!(r.affinity.refused.total(), 0);
    assert_eq!(r.affinity.moved + r.hotplug.migrated, 1022);
    assert_eq!((r.hotplug.cpu, r.hotplug.apic_id), (15, 4095));
    assert_eq!(
        (
            r.hotplug.migrated,
            r.hotplug.broken_affinity,
            r.hotplug.failed,
            r.hotplug.left_on_cpu
        ),
        (137, 19, 0, 0)
    );
    // MSI: message + enable. MSI-X: enable + mask + message + unmask per entry. IMS, in device
    // memory and in system memory (the queue context): mask + message + unmask per entry
    // (VIR-ALC-G-001).
    let at_activation = counts(&[
        ("MSI", 2),
        ("MSI-X", 193),
        ("IMS (device memory)", 6144),
        ("IMS (system memory)", 48),
    ]);
    assert_eq!(r.storage.at_activation, at_activation);
    assert_eq!(r.storage.after_changes, at_activation);
    assert_eq!(r.storage.rewrites, 0);
    assert_eq!(
        r.storage.guest_messages,
        counts(&[
            ("MSI", 1),
            ("MSI-X", 64),
            ("IMS (device memory)", 2048),
            ("IMS (system memory)", 16),
        ])
    );
    // VIR-ALC-G-001: mask at allocation, unmask at request_irq; every interrupt is requested.
    assert_eq!(
        r.storage.guest_mask_writes,
        counts(&[
            ("MSI-X", 128),
            ("IMS (device memory)", 4096),
            ("IMS (system memory)", 32),
        ])
    );
    // 4 devices × (3 foreign messages + 1 compatibility-format message).
    assert_eq!(
        (r.forged.attempts, r.forged.blocked, r.forged.delivered),
        (16, 16, 0)
    );
    assert_eq!((r.faults.recorded, r.faults.suppressed), (16, 0));
    assert_eq!(r.faults.by_reason, counts(&[("0x25", 4), ("0x26", 12)]));
}

#[test]
fn default_scenario_posted_vmcall_vir_act_h_006_vir_aff_g_001() {
    let r = scenario::run(&ScenarioConfig::default()).unwrap();
    assert_default_figures(&r);
    assert_eq!(
        (r.mode.as_str(), r.binding),
        ("posted", CallBinding::Vmcall)
    );
    assert!(r.interrupts.iter().all(|g| g.mode == "posted"));
    // Posted: IRTE → descriptor → PIR → notification → IRR; no host vector fires.
    assert_eq!(
        (
            r.path.posted,
            r.path.remapped,
            r.path.host_irqs_fired,
            r.path.irqfd_signals
        ),
        (4272, 0, 0, 0)
    );
    assert_eq!(r.path.lapic_injections, 4272);
}

#[test]
fn default_scenario_remapped_vmcall_vir_act_h_006_vir_aff_h_005() {
    let r = scenario::run(&ScenarioConfig {
        mode: IrMode::Remapped,
        ..ScenarioConfig::default()
    })
    .unwrap();
    assert_default_figures(&r);
    assert_eq!(r.mode, "remapped");
    // Remapped: host vector → VFIO host IRQ → irqfd → GSI route → LAPIC.
    assert_eq!(
        (
            r.path.posted,
            r.path.remapped,
            r.path.host_irqs_fired,
            r.path.irqfd_signals
        ),
        (0, 4272, 4272, 4272)
    );
    assert_eq!(r.path.lapic_injections, 4272);
}

#[test]
fn default_scenario_over_the_doorbell_binding_in_both_modes() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let r = scenario::run(&ScenarioConfig {
            mode,
            binding: CallBinding::Doorbell,
            ..ScenarioConfig::default()
        })
        .unwrap();
        assert_default_figures(&r);
        assert_eq!(r.binding, CallBinding::Doorbell);
    }
}

#[test]
fn seed_changes_the_affinity_walk_but_not_correctness() {
    let a = scenario::run(&ScenarioConfig {
        seed: 7,
        ..ScenarioConfig::default()
    })
    .unwrap();
    let b = scenario::run(&ScenarioConfig {
        seed: 7,
        ..ScenarioConfig::default()
    })
    .unwrap();
    assert_eq!(a, b, "same seed, same run");
    assert!(a.passed(), "{a}");
    let c = scenario::run(&ScenarioConfig::default()).unwrap();
    assert_ne!(
        (a.affinity.moved, a.hotplug.cpu, a.hotplug.migrated),
        (c.affinity.moved, c.hotplug.cpu, c.hotplug.migrated)
    );
}

#[test]
fn eight_vcpus_cannot_hold_2136_vectors_and_request_irq_says_enospc_vir_sta_g_001() {
    let e = scenario::run(&ScenarioConfig {
        vcpus: 8,
        ..ScenarioConfig::default()
    })
    .unwrap_err();
    match e {
        scenario::ScenarioError::Request { device, irq, error } => {
            assert_eq!(device, "accel");
            // 8 CPUs × 186 device vectors = 1488 vectors: 64 MSI-X irqs, then 1424 IMS ones.
            assert_eq!(irq.0, 24 + 1488);
            assert_eq!(error.errno(), vir_abi::status::errno::ENOSPC);
        }
        other => panic!("{other:?}"),
    }
}
