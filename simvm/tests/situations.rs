//! The three situations of `spec/vir-v1.md` §2.2 side by side on the simulated platform, the switch
//! between the legacy scheme and vIR, and a legacy guest that cannot tell a vIR host from one
//! without vIR.

use vir_abi::call::CallCode;
use vir_abi::hw::vtd::VtdFaultReason;
use vir_abi::status::Status;
use vir_guest::{AllocRequest, CallError, CpuId, CpuMask, Irq, NegotiationError, StorageType};
use vir_host::{
    LegacySetupError, MsiRefusal, MsiRegister, MsixField, TrapError, TrapWrite, VectorEvent,
    VmState,
};
use vir_platform::{StorageKind, StorageSlot};
use vir_simvm::compare::{self, CompareConfig, SituationReport};
use vir_simvm::situations::{
    Counts, SituationKind, SituationSpec, SituationVm, SwitchError, VM_DEVICE_ID,
};

fn counts(
    trapped: u64,
    ir_register_exits: u64,
    hypercalls: u64,
    device_writes: u64,
    irte_writes: u64,
    guest_irte_writes: u64,
) -> Counts {
    Counts {
        trapped,
        ir_register_exits,
        hypercalls,
        device_writes,
        irte_writes,
        guest_irte_writes,
        ..Counts::default()
    }
}

/// The figures of a phase that the comparison is about (no time, no guest-side bookkeeping).
fn figures(c: &Counts) -> Counts {
    counts(
        c.trapped,
        c.ir_register_exits,
        c.hypercalls,
        c.device_writes,
        c.irte_writes,
        c.guest_irte_writes,
    )
}

fn phase(r: &SituationReport, name: &str) -> Counts {
    figures(
        &r.phase(name)
            .unwrap_or_else(|| panic!("no phase {name}"))
            .counts,
    )
}

#[test]
fn vir_leg_g_001_the_same_workload_in_the_three_situations() {
    let report = compare::run(&CompareConfig::default()).unwrap();
    assert!(report.passed(), "{report}");
    for s in &report.situations {
        // Every vector delivered where the guest asked after setup, retarget and unplug, and
        // nowhere after teardown.
        for p in &s.phases {
            assert_eq!(
                (p.checked, p.correct),
                (2048, 2048),
                "{} {}",
                s.situation,
                p.phase
            );
        }
        // A quarter of the vectors sat on the four unplugged vCPUs.
        assert_eq!(s.phase("unplug").unwrap().carried, 512);
        assert_eq!(s.phase("unplug").unwrap().moved, 567);
        assert_eq!(s.phase("retarget").unwrap().moved, 2048);
        // B12: retargeting never writes the device (in situation 2 the host's own remapping
        // hides the move too).
        assert_eq!(s.phase("retarget").unwrap().counts.device_writes, 0);
    }
    let bare = report.situation(SituationKind::BareMetal).unwrap();
    let emu = report.situation(SituationKind::Emulated).unwrap();
    let vir = report.situation(SituationKind::Vir).unwrap();
    // VIR-LEG-G-001: IMS allowed on bare metal and with vIR, refused with an emulated unit.
    let ims = |s: &SituationReport| s.ims.clone().map(|p| (p.allowed, p.delivered, p.errno));
    assert_eq!(ims(bare), Some((true, true, None)));
    assert_eq!(ims(emu), Some((false, false, Some(95))));
    assert_eq!(ims(vir), Some((true, true, None)));

    // Situation 1: no exits; the kernel writes its IRTEs (reservation, then activation).
    assert_eq!(figures(&bare.boot), Counts::default());
    assert_eq!(phase(bare, "setup"), counts(0, 0, 0, 6145, 4096, 4096));
    assert_eq!(phase(bare, "retarget"), counts(0, 0, 0, 0, 2048, 2048));
    assert_eq!(phase(bare, "unplug"), counts(0, 0, 0, 0, 567, 567));
    assert_eq!(phase(bare, "teardown"), counts(0, 0, 0, 2049, 2048, 2048));

    // Situation 2: IRTA, SIRTP, IRE and a global invalidation at boot; per vector at setup
    // five trapped storage accesses (mask, three message words, unmask) and two invalidations
    // (reservation, activation); one invalidation per retarget.
    assert_eq!(figures(&emu.boot), counts(0, 4, 0, 0, 0, 0));
    assert_eq!(
        phase(emu, "setup"),
        counts(10241, 4096, 0, 4097, 2048, 4096)
    );
    assert_eq!(phase(emu, "retarget"), counts(0, 2048, 0, 0, 2048, 2048));
    assert_eq!(phase(emu, "unplug"), counts(0, 567, 0, 0, 567, 567));
    assert_eq!(
        phase(emu, "teardown"),
        counts(2049, 2048, 0, 2049, 4096, 2048)
    );
    assert_eq!(emu.workload.exits(), 21049);

    // Situation 3: QUERY and NEGOTIATE at boot; ALLOCATE, ACTIVATE(RESERVE), ACTIVATE per vector,
    // the MSI-X table written with no exit; one SET_AFFINITY per retarget.
    assert_eq!(figures(&vir.boot), counts(0, 0, 2, 0, 0, 0));
    assert_eq!(phase(vir, "setup"), counts(1, 0, 6144, 6145, 10240, 0));
    assert_eq!(phase(vir, "retarget"), counts(0, 0, 2048, 0, 2048, 0));
    assert_eq!(phase(vir, "unplug"), counts(0, 0, 567, 0, 567, 0));
    assert_eq!(phase(vir, "teardown"), counts(1, 0, 4096, 2049, 4096, 0));
    assert_eq!(vir.workload.exits(), 12857);

    let text = report.to_string();
    assert!(
        text.contains(
            "bare-metal: selected bare-metal unit (no hypervisor bit); IMS allowed, delivered; PASS"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "emulated: selected emulated unit (no vIR leaves); IMS refused (errno 95); PASS"
        ),
        "{text}"
    );
}

/// A driver with an MSI block of 8 in `vm`: set up, checked, retargeted, checked; the sources.
fn msi_and_msix(vm: &mut SituationVm) -> Vec<(Irq, StorageSlot)> {
    let dev = vm.guest_device();
    let irqs = vm
        .guest_mut()
        .alloc_irq_vectors(dev, AllocRequest::Msi { nvec: 8 }, None)
        .unwrap();
    for &irq in &irqs {
        vm.guest_mut().request_irq(irq).unwrap();
    }
    let sources: Vec<(Irq, StorageSlot)> =
        irqs.iter().map(|&i| (i, vm.source(i).unwrap())).collect();
    for &(irq, slot) in &sources {
        assert!(vm.check(irq, slot).unwrap(), "{irq}");
    }
    for (i, &irq) in irqs.iter().enumerate() {
        vm.guest_mut()
            .set_affinity(irq, &CpuMask::single(CpuId(15 - i as u32)))
            .unwrap();
    }
    for &(irq, slot) in &sources {
        assert!(vm.check(irq, slot).unwrap(), "{irq} after retarget");
    }
    sources
}

#[test]
fn msi_blocks_end_to_end_in_every_situation() {
    for kind in SituationKind::ALL {
        let mut vm = SituationVm::build(&SituationSpec::new(kind)).unwrap();
        assert_eq!(vm.kind(), kind);
        let sources = msi_and_msix(&mut vm);
        let dev = vm
            .machine()
            .borrow()
            .device(vm.device())
            .unwrap()
            .msi()
            .map(|c| (c.enabled(), c.mme()));
        assert_eq!(
            dev,
            Some((true, 3)),
            "{kind}: the device's MSI is on with 8 vectors"
        );
        if kind == SituationKind::Vir {
            // VIR-LEG-H-003: the trapped capability admitted the issued message, which the
            // host programmed into the device.
            let (host, id) = vm.host().unwrap().clone();
            let issued = host
                .borrow()
                .vm(id)
                .unwrap()
                .msi_message_issued(VM_DEVICE_ID.0);
            let msg = vm
                .machine()
                .borrow()
                .device(vm.device())
                .unwrap()
                .msi()
                .map(|c| c.message());
            assert_eq!(msg, issued);
            assert_eq!(vm.trap_log().refusals, vec![]);
        }
        for &(irq, _) in &sources {
            assert!(vm.guest_mut().free_irq(irq).unwrap().is_clean());
        }
        let dev = vm.guest_device();
        assert!(
            vm.guest_mut()
                .free_irq_vectors(dev, StorageType::Msi)
                .unwrap()
                .is_clean()
        );
        for &(irq, slot) in &sources {
            assert!(
                vm.check(irq, slot).unwrap(),
                "{kind}: {irq} not delivered after free"
            );
        }
        // Situation 2: MSI has no per-vector mask in use, so the emulated unit sees the guest's
        // not-present entries (reservations, deactivated vectors) while MSI is enabled and
        // blocks them with fault 0x22, as VT-d does; nothing else failed.
        let failures = vm.trap_log().failures;
        assert!(
            failures.iter().all(|f| matches!(
                f,
                VectorEvent::SetupFailed {
                    error: LegacySetupError::Remapping(fault),
                    ..
                } if fault.reason == VtdFaultReason::NOT_PRESENT
            )),
            "{kind}: {failures:?}"
        );
        assert_eq!(failures.is_empty(), kind != SituationKind::Emulated);
        assert_eq!(vm.physical_anomalies(), 0);
    }
}

fn host_state(vm: &SituationVm) -> (VmState, bool, u32) {
    let (host, id) = vm.host().unwrap();
    let h = host.borrow();
    let v = h.vm(*id).unwrap();
    (v.state(), v.msix_trapped(), v.legacy_interrupts_enabled())
}

/// MSI-X entries 0..n requested by the current guest; their sources.
fn request_msix(vm: &mut SituationVm, n: u32) -> Vec<(Irq, StorageSlot)> {
    let dev = vm.guest_device();
    let indices: Vec<u32> = (0..n).collect();
    let irqs = vm
        .guest_mut()
        .alloc_irq_vectors(dev, AllocRequest::MsiX { indices: &indices }, None)
        .unwrap();
    for &irq in &irqs {
        vm.guest_mut().request_irq(irq).unwrap();
    }
    let sources: Vec<(Irq, StorageSlot)> =
        irqs.iter().map(|&i| (i, vm.source(i).unwrap())).collect();
    for &(irq, slot) in &sources {
        assert!(vm.check(irq, slot).unwrap(), "{irq}");
    }
    sources
}

fn free_msix(vm: &mut SituationVm, sources: &[(Irq, StorageSlot)]) {
    for &(irq, _) in sources {
        assert!(vm.guest_mut().free_irq(irq).unwrap().is_clean());
    }
    let dev = vm.guest_device();
    assert!(
        vm.guest_mut()
            .free_irq_vectors(dev, StorageType::MsiX)
            .unwrap()
            .is_clean()
    );
    vm.msix_disable().unwrap();
}

#[test]
fn vir_neg_h_004_vir_leg_h_002_003_vir_rst_the_switch_and_back() {
    // A kernel without vIR support boots on a host that offers vIR: legacy scheme.
    let spec = SituationSpec {
        guest_looks_for_vir: false,
        ..SituationSpec::new(SituationKind::Vir)
    };
    let mut vm = SituationVm::build(&spec).unwrap();
    assert_eq!((vm.kind(), vm.selected()), (SituationKind::Emulated, None));
    let legacy = request_msix(&mut vm, 4);
    assert_eq!(host_state(&vm), (VmState::Legacy, true, 1));

    // VIR-NEG-H-004: a vIR kernel kexec'd with MSI-X still enabled is refused; nothing changes.
    let (host, id) = vm.host().unwrap().clone();
    let before = host.borrow().snapshot(id).unwrap();
    let refused = NegotiationError::Negotiate(CallError {
        call: CallCode::NEGOTIATE,
        status: Status::INVALID_STATE,
    });
    assert_eq!(vm.switch_to_vir(), Err(SwitchError::Negotiation(refused)));
    assert_eq!(host.borrow().snapshot(id).unwrap(), before);
    for &(irq, slot) in &legacy {
        assert!(vm.check(irq, slot).unwrap(), "the legacy guest still runs");
    }

    // The legacy driver disables its interrupts first (VIR-NEG-G-004); now the switch is granted.
    free_msix(&mut vm, &legacy);
    assert_eq!(host_state(&vm), (VmState::Legacy, true, 0));
    let session = vm.switch_to_vir().unwrap();
    assert_eq!((session.session, vm.kind()), (1, SituationKind::Vir));
    let (state, trapped, _) = host_state(&vm);
    assert!(matches!(state, VmState::Negotiated { version: 1, .. }));
    assert!(!trapped, "VIR-LEG-H-002: MSI-X tables untrapped");

    // The MSI-X table is mapped: the vIR guest's writes reach the device with no exit (only the
    // MSI-X Enable in config space exits).
    let log = vm.trap_log();
    let vir = request_msix(&mut vm, 4);
    let after = vm.trap_log();
    assert_eq!(after.trapped - log.trapped, 1);
    assert_eq!(
        after.direct - log.direct,
        12,
        "4 masks, 4 messages, 4 unmasks"
    );
    // A table access reaching the trap code now is a VMM bug.
    let mem = vm.memory().unwrap().clone();
    let mut phys = vir_host::testing::MockDeviceStorage::new();
    let w = TrapWrite::MsixEntry {
        index: 0,
        field: MsixField::Data,
        value: 0,
    };
    assert_eq!(
        host.borrow_mut()
            .trap_write(id, VM_DEVICE_ID.0, w, &mem, &mut phys),
        Err(TrapError::MsixNotTrapped {
            device_id: VM_DEVICE_ID.0,
            index: 0
        })
    );

    free_msix(&mut vm, &vir);

    // VIR-LEG-H-003/004: MSI admitted with the issued message; a change while enabled refused.
    let dev = vm.guest_device();
    let msi = vm
        .guest_mut()
        .alloc_irq_vectors(dev, AllocRequest::Msi { nvec: 2 }, None)
        .unwrap();
    for &irq in &msi {
        vm.guest_mut().request_irq(irq).unwrap();
        let slot = vm.source(irq).unwrap();
        assert!(vm.check(irq, slot).unwrap());
    }
    let device_msi = |vm: &SituationVm| {
        vm.machine()
            .borrow()
            .device(vm.device())
            .unwrap()
            .msi()
            .map(|c| (c.enabled(), c.message()))
    };
    let admitted = device_msi(&vm);
    assert_eq!(admitted.map(|m| m.0), Some(true));
    let forged = TrapWrite::Msi(MsiRegister::Data(0x41));
    assert_eq!(
        host.borrow_mut()
            .trap_write(id, VM_DEVICE_ID.0, forged, &mem, &mut phys),
        Ok(vir_host::TrapOutcome::Refused(
            MsiRefusal::ChangeWhileEnabled(MsiRegister::Data(0x41))
        ))
    );
    assert_eq!(device_msi(&vm), admitted, "the device is untouched");
    for &irq in &msi {
        assert!(vm.guest_mut().free_irq(irq).unwrap().is_clean());
    }
    assert!(
        vm.guest_mut()
            .free_irq_vectors(dev, StorageType::Msi)
            .unwrap()
            .is_clean()
    );
    // With the allocation gone there is no issued message to enable.
    let enable = TrapWrite::Msi(MsiRegister::Control(1));
    assert_eq!(
        host.borrow_mut()
            .trap_write(id, VM_DEVICE_ID.0, enable, &mem, &mut phys),
        Ok(vir_host::TrapOutcome::Refused(MsiRefusal::NoIssuedMessage))
    );
    assert_eq!(
        device_msi(&vm).map(|m| m.0),
        Some(false),
        "MSI stays disabled"
    );

    // RESET: legacy again, trapped again (VIR-RST-H-002), entries at reset values
    // (VIR-RST-H-006), and a legacy kernel's interrupts work through the trap.
    vm.reset_to_legacy().unwrap();
    assert_eq!(host_state(&vm), (VmState::Legacy, true, 0));
    {
        let h = host.borrow();
        let msix = h.vm(id).unwrap().emulated_msix(VM_DEVICE_ID.0).unwrap();
        assert!((0..msix.len()).all(|i| {
            msix.entry(i).is_some_and(|e| {
                e.masked() && e.message() == vir_abi::hw::msi::MsiMessage::default()
            })
        }));
    }
    let again = request_msix(&mut vm, 4);
    free_msix(&mut vm, &again);
    // VIR-RST-H-003: a new negotiation is accepted.
    assert_eq!(vm.switch_to_vir().map(|s| s.session), Ok(2));
    assert_eq!(vm.trap_log().errors, vec![]);
    assert_eq!(vm.trap_log().failures, vec![]);
}

#[test]
fn vir_leg_h_001_legacy_kernel_sees_no_difference_on_a_vir_host() {
    let config = CompareConfig {
        vectors: 256,
        vcpus: 8,
        unplug: 2,
        ims_probe: true,
        ..CompareConfig::default()
    };
    let run = |host_offers_vir: bool| {
        let spec = SituationSpec {
            host_offers_vir,
            guest_looks_for_vir: false,
            ..compare::spec(SituationKind::Emulated, &config)
        };
        let mut vm = SituationVm::build(&spec).unwrap();
        let (host, id) = vm.host().unwrap().clone();
        let offered = host
            .borrow()
            .cpuid(id, vir_host::HostConfig::DEFAULT_CPUID_BASE)
            .unwrap()
            .is_some();
        let mut report = compare::run_workload(&mut vm, &config).unwrap();
        for p in &mut report.phases {
            p.counts = p.counts.without_time();
            p.wall_ns = 0;
        }
        report.boot = report.boot.without_time();
        report.workload = report.workload.without_time();
        report.ims_counts = report.ims_counts.map(Counts::without_time);
        let mut log = vm.trap_log();
        log.host_time = Default::default();
        let m = vm.machine().borrow();
        let deliveries: Vec<_> = m.log().copied().collect();
        let device = m.device(vm.device()).unwrap();
        let writes: Vec<u64> = StorageKind::ALL
            .iter()
            .map(|&k| device.storage_writes(k))
            .collect();
        let h = host.borrow();
        let v = h.vm(id).unwrap();
        (
            offered,
            report,
            log,
            deliveries,
            writes,
            v.legacy_counters().clone(),
            h.snapshot(id).unwrap(),
        )
    };
    let with = run(true);
    let without = run(false);
    assert!(
        with.0 && !without.0,
        "one host offers vIR, the other does not"
    );
    assert!(with.1.passed(), "{:?}", with.1.failures);
    assert_eq!(
        with.1, without.1,
        "same report: exits, device writes, IRTE writes, checks"
    );
    assert_eq!(with.2, without.2, "same trapped accesses");
    assert_eq!(with.3, without.3, "same deliveries, record for record");
    assert!(with.3.len() > 1000);
    assert_eq!(with.4, without.4, "same device storage writes");
    assert_eq!(with.5, without.5, "same host counters");
    assert_eq!(with.6, without.6, "same host state");
    // The guest never asked: no vIR call, IMS refused as on any legacy host.
    assert_eq!(with.1.workload.hypercalls, 0);
    assert_eq!(with.1.ims.as_ref().map(|p| p.allowed), Some(false));
}
