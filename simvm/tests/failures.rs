//! Failure injection at every backend step, seen from the guest's original call.
//!
//! Each failure must reach the driver-facing call that caused it — `alloc_irq_vectors`,
//! `request_irq` or `irq_set_affinity` — as a typed error carrying the host's status and the
//! errno a kernel returns (VIR-STA-G-001), and leave both sides exactly as they were: the host's
//! state ([`vir_host::Host::snapshot`], VIR-CALL-H-006; unwinding VIR-ACT-H-007,
//! VIR-AFF-H-004), the platform's routes, irqfds, host IRQs and vectors, and the guest's irqs,
//! vector matrix and storage writes.
use vir_abi::call::CallCode;
use vir_abi::status::{Status, errno};
use vir_guest::{
    AllocRequest, CallError, CpuId, CpuMask, DeviceId as GuestDeviceId, DomainError, Irq, IrqError,
    IrqInfo, IrqState, StorageSlot as GuestSlot, StorageStats,
};
use vir_host::{IrMode, Quotas, VmSnapshot};
use vir_simvm::{DeviceSpec, Verdict, VmSpec, World, WorldBuilder};

const NIC: GuestDeviceId = GuestDeviceId::new(0, 0x18);
const ACCEL: GuestDeviceId = GuestDeviceId::new(0, 0x20);
const MODES: [IrMode; 2] = [IrMode::Posted, IrMode::Remapped];

fn builder(mode: IrMode, quotas: Quotas) -> WorldBuilder {
    WorldBuilder::new()
        .mode(mode)
        .vm(VmSpec::new(vec![0, 1, 256, 511])
            .with_quotas(quotas)
            .with_device(DeviceSpec::new("nic", NIC, 0x8100).with_msix(8))
            .with_device(DeviceSpec::new("accel", ACCEL, 0x8200).with_ims_device(4)))
}

fn world(mode: IrMode) -> World {
    builder(
        mode,
        Quotas {
            irtes: 64,
            vectors: 64,
        },
    )
    .build()
    .unwrap()
}

/// Everything a failed call must leave unchanged.
#[derive(Debug, PartialEq, Eq)]
struct State {
    host: VmSnapshot,
    routes: usize,
    irqfds: usize,
    host_irqs: usize,
    host_vectors: Vec<u16>,
    irqs: Vec<IrqInfo>,
    guest_vectors: Vec<u32>,
    reserved: u32,
    storage: StorageStats,
    storage_writes: [u64; 4],
    live_allocations: usize,
}

fn state(w: &World) -> State {
    let vm = w.vm(0).unwrap();
    let g = vm.guest();
    let m = w.machine();
    State {
        host: w.host().snapshot(vm.id()).unwrap(),
        routes: m.kvm().vm(vm.platform_id()).unwrap().route_count(),
        irqfds: m.kvm().irqfd_count(),
        host_irqs: m.vfio().irq_count(),
        host_vectors: m.pcpus().iter().map(|c| c.vectors().in_use()).collect(),
        irqs: g.irqs().filter_map(|i| g.irq_info(i)).collect(),
        guest_vectors: (0..g.nr_cpus())
            .map(|c| g.matrix().allocated(CpuId(c)).unwrap())
            .collect(),
        reserved: g.matrix().reserved(),
        storage: g.storage_stats(),
        storage_writes: w.storage_writes(0).unwrap(),
        live_allocations: g.domain().live_allocations(),
    }
}

fn host_error(device: GuestDeviceId, slot: GuestSlot, call: CallCode, status: Status) -> IrqError {
    IrqError::Domain {
        device,
        slot,
        sub: 0,
        error: DomainError::Host(CallError { call, status }),
    }
}

fn alloc_nic(w: &mut World, indices: &[u32]) -> Vec<Irq> {
    w.guest_mut(0)
        .unwrap()
        .alloc_irq_vectors(NIC, AllocRequest::MsiX { indices }, None)
        .unwrap()
}

#[derive(Debug, Clone, Copy)]
enum ActivateStep {
    /// (a) `KVM_SET_GSI_ROUTING`.
    RouteSet,
    /// (a) `KVM_IRQFD`.
    IrqfdAssign,
    /// (b) VFIO host IRQ start.
    IrqStart,
}

fn arm(w: &World, step: ActivateStep) {
    let mut m = w.machine_mut();
    match step {
        ActivateStep::RouteSet => m.kvm_mut().fail_next_route_sets(1),
        ActivateStep::IrqfdAssign => m.kvm_mut().fail_next_irqfd_assigns(1),
        ActivateStep::IrqStart => m.vfio_mut().fail_next_irq_starts(1),
    }
}

#[test]
fn request_irq_backend_failures_reach_the_caller_unchanged_vir_act_h_007_vir_sta_g_001() {
    for mode in MODES {
        for step in [
            ActivateStep::RouteSet,
            ActivateStep::IrqfdAssign,
            ActivateStep::IrqStart,
        ] {
            let mut w = world(mode);
            let irq = alloc_nic(&mut w, &[0])[0];
            let before = state(&w);
            assert_eq!(before.irqs[0].state, IrqState::Reserved);
            arm(&w, step);
            let err = w.guest_mut(0).unwrap().request_irq(irq).unwrap_err();
            assert_eq!(
                err,
                host_error(
                    NIC,
                    GuestSlot::MsiX(0),
                    CallCode::ACTIVATE,
                    Status::BACKEND_FAILURE
                ),
                "{mode:?} {step:?}"
            );
            assert_eq!(err.errno(), errno::EIO);
            assert_eq!(state(&w), before, "{mode:?} {step:?}");
            // The failure was consumed: the same call now succeeds and delivers.
            w.guest_mut(0).unwrap().request_irq(irq).unwrap();
            assert_eq!(
                w.check(0, irq).unwrap(),
                Verdict::Correct,
                "{mode:?} {step:?}"
            );
        }
    }
}

/// A single-CPU mask other than the irq's current CPU.
fn other_cpu(w: &World, irq: Irq) -> CpuMask {
    let IrqState::Active { cpu, .. } = w.vm(0).unwrap().guest().irq_info(irq).unwrap().state else {
        panic!("{irq} not active");
    };
    CpuMask::single(CpuId((cpu.0 + 1) % 4))
}

#[test]
fn set_affinity_backend_failures_keep_the_old_target_vir_aff_h_004_vir_aff_g_001() {
    for mode in MODES {
        for route in [true, false] {
            let mut w = world(mode);
            let irq = alloc_nic(&mut w, &[0])[0];
            w.guest_mut(0).unwrap().request_irq(irq).unwrap();
            let mask = other_cpu(&w, irq);
            let before = state(&w);
            if route {
                w.machine_mut().kvm_mut().fail_next_route_sets(1);
            } else {
                w.host_mut().irqs_mut().fail_next_affinity_prepares(1);
            }
            let err = w
                .guest_mut(0)
                .unwrap()
                .set_affinity(irq, &mask)
                .unwrap_err();
            assert_eq!(
                err,
                host_error(
                    NIC,
                    GuestSlot::MsiX(0),
                    CallCode::SET_AFFINITY,
                    Status::BACKEND_FAILURE
                ),
                "{mode:?} route={route}"
            );
            assert_eq!(err.errno(), errno::EIO);
            assert_eq!(state(&w), before, "{mode:?} route={route}");
            // The old target is still in force.
            assert_eq!(w.check(0, irq).unwrap(), Verdict::Correct);
            // Retried, it moves; the storage is not touched (VIR-AFF-G-001).
            w.guest_mut(0).unwrap().set_affinity(irq, &mask).unwrap();
            let info = w.vm(0).unwrap().guest().irq_info(irq).unwrap();
            assert!(matches!(info.state, IrqState::Active { cpu, .. } if mask.contains(cpu)));
            assert_eq!(w.check(0, irq).unwrap(), Verdict::Correct);
            assert_eq!(w.storage_writes(0).unwrap(), before.storage_writes);
        }
    }
}

#[test]
fn irte_quota_fails_alloc_irq_vectors_with_enospc_vir_alc_h_008() {
    for mode in MODES {
        let mut w = builder(
            mode,
            Quotas {
                irtes: 8,
                vectors: 64,
            },
        )
        .build()
        .unwrap();
        alloc_nic(&mut w, &[0, 1, 2, 3, 4, 5, 6, 7]);
        let before = state(&w);
        let err = w
            .guest_mut(0)
            .unwrap()
            .alloc_irq_vectors(ACCEL, AllocRequest::ImsDevice { indices: &[0] }, None)
            .unwrap_err();
        assert_eq!(
            err,
            host_error(
                ACCEL,
                GuestSlot::ImsDevice(0),
                CallCode::ALLOCATE,
                Status::QUOTA_EXCEEDED
            )
        );
        assert_eq!(err.errno(), errno::ENOSPC);
        assert_eq!(state(&w), before);
    }
}

#[test]
fn vector_quota_fails_request_irq_with_enospc_vir_act_h_006() {
    for mode in MODES {
        let mut w = builder(
            mode,
            Quotas {
                irtes: 64,
                vectors: 2,
            },
        )
        .build()
        .unwrap();
        let irqs = alloc_nic(&mut w, &[0, 1, 2]);
        for &irq in &irqs[..2] {
            w.guest_mut(0).unwrap().request_irq(irq).unwrap();
        }
        let before = state(&w);
        let err = w.guest_mut(0).unwrap().request_irq(irqs[2]).unwrap_err();
        assert_eq!(
            err,
            host_error(
                NIC,
                GuestSlot::MsiX(2),
                CallCode::ACTIVATE,
                Status::VECTORS_EXHAUSTED
            )
        );
        assert_eq!(err.errno(), errno::ENOSPC);
        assert_eq!(state(&w), before);
    }
}

#[test]
fn host_cpu_vectors_exhausted_in_the_backend_vir_act_h_006() {
    for mode in MODES {
        let mut w = builder(
            mode,
            Quotas {
                irtes: 64,
                vectors: 64,
            },
        )
        .pcpus(1)
        .vectors_per_pcpu(2)
        .build()
        .unwrap();
        let irqs = alloc_nic(&mut w, &[0, 1, 2]);
        for &irq in &irqs[..2] {
            w.guest_mut(0).unwrap().request_irq(irq).unwrap();
        }
        let before = state(&w);
        let err = w.guest_mut(0).unwrap().request_irq(irqs[2]).unwrap_err();
        assert_eq!(
            err,
            host_error(
                NIC,
                GuestSlot::MsiX(2),
                CallCode::ACTIVATE,
                Status::VECTORS_EXHAUSTED
            )
        );
        assert_eq!(err.errno(), errno::ENOSPC);
        assert_eq!(state(&w), before);
        assert_eq!(w.check(0, irqs[0]).unwrap(), Verdict::Correct);
    }
}

#[test]
fn table_full_fails_alloc_irq_vectors_with_enospc_vir_alc_h_009() {
    for mode in MODES {
        // IRTA.S = 2: 8 entries, all taken by the NIC.
        let mut w = builder(
            mode,
            Quotas {
                irtes: 64,
                vectors: 64,
            },
        )
        .table_size_s(2)
        .build()
        .unwrap();
        alloc_nic(&mut w, &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(w.host().table_free(), 0);
        let before = state(&w);
        let err = w
            .guest_mut(0)
            .unwrap()
            .alloc_irq_vectors(ACCEL, AllocRequest::ImsDevice { indices: &[3] }, None)
            .unwrap_err();
        assert_eq!(
            err,
            host_error(
                ACCEL,
                GuestSlot::ImsDevice(3),
                CallCode::ALLOCATE,
                Status::TABLE_FULL
            )
        );
        assert_eq!(err.errno(), errno::ENOSPC);
        assert_eq!(state(&w), before);
    }
}

#[test]
fn a_failure_in_the_middle_of_alloc_irq_vectors_undoes_the_whole_call_vir_sta_g_001() {
    // Four IMS entries asked, quota for two more: the third ALLOCATE fails, the two done are
    // freed again; host and guest hold exactly what they held before.
    let mut w = builder(
        IrMode::Posted,
        Quotas {
            irtes: 3,
            vectors: 64,
        },
    )
    .build()
    .unwrap();
    alloc_nic(&mut w, &[5]);
    let before = state(&w);
    let err = w
        .guest_mut(0)
        .unwrap()
        .alloc_irq_vectors(
            ACCEL,
            AllocRequest::ImsDevice {
                indices: &[0, 1, 2, 3],
            },
            None,
        )
        .unwrap_err();
    assert_eq!(
        err,
        host_error(
            ACCEL,
            GuestSlot::ImsDevice(2),
            CallCode::ALLOCATE,
            Status::QUOTA_EXCEEDED
        )
    );
    let after = state(&w);
    assert_eq!(after.irqs, before.irqs);
    assert_eq!(after.live_allocations, before.live_allocations);
    assert_eq!(after.host.irtes_used, before.host.irtes_used);
    assert_eq!(after.host.storage_slots, before.host.storage_slots);
    assert_eq!(after.host.table, before.host.table);
    assert_eq!(after.routes, before.routes);
    let c = w.host().counters();
    assert_eq!(c.statuses(Status::QUOTA_EXCEEDED), 1);
    assert_eq!(c.calls(CallCode::FREE), 2);
}
