//! Affinity changes (B7b, B12, VIR-AFF-G-001) and CPU hot-unplug.

mod common;

use common::*;
use vir_abi::call::CallCode;
use vir_abi::status::{Status, errno};
use vir_abi::wire::SetAffinityRequest;
use vir_guest::{
    AllocRequest, CallError, CpuId, CpuMask, DomainError, Irq, IrqError, IrqState, Migration,
    StorageSlot, VectorError,
};
use zerocopy::FromBytes;

fn mask(cpus: &[u32]) -> CpuMask {
    cpus.iter().copied().map(CpuId).collect()
}

fn active(w: &World, irq: Irq) -> (CpuId, u8) {
    match w.guest.irq_info(irq).unwrap().state {
        IrqState::Active { cpu, vector } => (cpu, vector),
        s => panic!("{irq:?} is {s:?}"),
    }
}

#[test]
fn vir_aff_g_001_affinity_change_never_touches_the_storage() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0, 1] }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    w.guest.request_irq(irqs[1]).unwrap();
    assert_eq!(active(&w, irqs[0]), (CpuId(0), 0x20));
    let writes = w.storage.borrow().writes.clone();
    let stats = w.guest.storage_stats();
    let message = w.storage.borrow().messages[&(DEV_A, StorageSlot::MsiX(0))];

    let n = w.log_len();
    w.guest.set_affinity(irqs[0], &mask(&[3])).unwrap();
    assert_eq!(w.calls_since(n), [CallCode::SET_AFFINITY]);
    let req = w.host.borrow().log[n].request.clone();
    let req = SetAffinityRequest::read_from_bytes(&req).unwrap();
    assert_eq!((req.target.apic_id.get(), req.target.vector), (6, 0x20));
    assert_eq!(active(&w, irqs[0]), (CpuId(3), 0x20));
    // Old vector freed and unmapped, new one mapped.
    assert!(!w.guest.matrix().is_allocated(CpuId(0), 0x20));
    assert_eq!(w.guest.vector_to_irq(CpuId(0), 0x20), None);
    assert_eq!(w.guest.vector_to_irq(CpuId(3), 0x20), Some(irqs[0]));
    // B12: the next interrupt arrives at the new target with the same stored message.
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(0), 0), Fire::Irq(irqs[0]));
    assert_eq!(w.storage.borrow().writes, writes);
    assert_eq!(w.guest.storage_stats(), stats);
    assert_eq!(
        w.storage.borrow().messages[&(DEV_A, StorageSlot::MsiX(0))],
        message
    );
    assert_eq!(w.guest.irq_info(irqs[0]).unwrap().affinity, mask(&[3]));

    // A mask that contains the current CPU: recorded, no call (Linux keeps the vector).
    let n = w.log_len();
    w.guest.set_affinity(irqs[0], &mask(&[1, 3])).unwrap();
    assert_eq!(w.log_len(), n);
    assert_eq!(active(&w, irqs[0]), (CpuId(3), 0x20));
    assert_eq!(w.guest.irq_info(irqs[0]).unwrap().affinity, mask(&[1, 3]));
}

#[test]
fn affinity_of_an_unrequested_irq_is_recorded_and_used_at_request() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsDevice { indices: &[3] }, None)
        .unwrap();
    let n = w.log_len();
    w.guest.set_affinity(irqs[0], &mask(&[2])).unwrap();
    assert_eq!(w.log_len(), n, "reserved: nothing to retarget");
    w.guest.request_irq(irqs[0]).unwrap();
    assert_eq!(active(&w, irqs[0]), (CpuId(2), 0x20));
    assert_eq!(
        w.fire(DEV_A, StorageSlot::ImsDevice(3), 0),
        Fire::Irq(irqs[0])
    );
}

#[test]
fn vir_sta_g_001_affinity_failure_keeps_the_old_target() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0] }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    let before = active(&w, irqs[0]);
    for (status, eno) in [
        (Status::VECTORS_EXHAUSTED, errno::ENOSPC),
        (Status::BACKEND_FAILURE, errno::EIO),
        (Status::INVALID_TARGET, errno::EINVAL),
    ] {
        w.host
            .borrow_mut()
            .fail_next(CallCode::SET_AFFINITY, status);
        let e = w.guest.set_affinity(irqs[0], &mask(&[1])).unwrap_err();
        assert_eq!(
            e,
            IrqError::Domain {
                device: DEV_A,
                slot: StorageSlot::MsiX(0),
                sub: 0,
                error: DomainError::Host(CallError {
                    call: CallCode::SET_AFFINITY,
                    status
                })
            }
        );
        assert_eq!(e.errno(), eno);
        assert_eq!(active(&w, irqs[0]), before);
        assert_eq!(
            w.guest.matrix().allocated(CpuId(1)),
            Ok(0),
            "new vector freed"
        );
        assert_eq!(w.guest.vector_to_irq(before.0, before.1), Some(irqs[0]));
        assert_eq!(
            w.guest.irq_info(irqs[0]).unwrap().affinity,
            mask(&[0, 1, 2, 3])
        );
        assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(0), 0), Fire::Irq(irqs[0]));
    }
}

#[test]
fn affinity_argument_errors() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0] }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    let e = w.guest.set_affinity(irqs[0], &CpuMask::new()).unwrap_err();
    assert_eq!(
        e,
        IrqError::Vector(VectorError::NoOnlineCpu(CpuMask::new()))
    );
    assert_eq!(e.errno(), errno::EINVAL);
    assert_eq!(
        w.guest.set_affinity(irqs[0], &mask(&[4])),
        Err(IrqError::Vector(VectorError::CpuOutOfRange {
            cpu: CpuId(4),
            nr_cpus: 4
        }))
    );
    let r = w.guest.cpu_offline(CpuId(2)).unwrap();
    assert_eq!(r.migrated, []);
    assert_eq!(
        w.guest.set_affinity(irqs[0], &mask(&[2])),
        Err(IrqError::Vector(VectorError::NoOnlineCpu(mask(&[2]))))
    );
    assert_eq!(
        w.guest.set_affinity(Irq(500), &mask(&[0])),
        Err(IrqError::UnknownIrq(Irq(500)))
    );
}

#[test]
fn affinity_exhaustion_on_the_new_cpu_is_enospc_without_a_call() {
    let mut cfg = vir_guest::IrqConfig::new(vec![0, 2]);
    cfg.vectors.system_reserved = vir_guest::VectorSet::from_range(0x21..=0xEA);
    let (mut w, r) = World::build(
        HostModel::new(),
        vir_abi::feature::Features::V1_DEFINED,
        cfg,
    );
    r.unwrap();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0, 1] }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    w.guest.request_irq(irqs[1]).unwrap();
    assert_eq!(active(&w, irqs[1]), (CpuId(1), 0x20));
    let n = w.log_len();
    let e = w.guest.set_affinity(irqs[0], &mask(&[1])).unwrap_err();
    assert_eq!(e, IrqError::Vector(VectorError::Exhausted(mask(&[1]))));
    assert_eq!(e.errno(), errno::ENOSPC);
    assert_eq!(w.log_len(), n);
    assert_eq!(active(&w, irqs[0]), (CpuId(0), 0x20));
}

#[test]
fn cpu_hot_unplug_migrates_every_interrupt_off_the_cpu() {
    let mut w = World::new();
    let idx: Vec<u32> = (0..6).collect();
    let irqs = w
        .guest
        .alloc_irq_vectors(
            DEV_A,
            AllocRequest::MsiX { indices: &idx },
            Some(&mask(&[1, 2])),
        )
        .unwrap();
    for &irq in &irqs {
        w.guest.request_irq(irq).unwrap();
    }
    // Spread: 24→cpu1, 25→cpu2, 26→cpu1, ...
    let on_cpu1: Vec<Irq> = irqs
        .iter()
        .copied()
        .filter(|&i| active(&w, i).0 == CpuId(1))
        .collect();
    assert_eq!(on_cpu1, [Irq(24), Irq(26), Irq(28)]);
    let writes = w.storage_writes();
    let n = w.log_len();

    let report = w.guest.cpu_offline(CpuId(1)).unwrap();
    assert_eq!(w.calls_since(n), [CallCode::SET_AFFINITY; 3]);
    assert_eq!(
        report.migrated,
        [
            Migration {
                irq: Irq(24),
                from: (CpuId(1), 0x20),
                to: (CpuId(2), 0x23)
            },
            Migration {
                irq: Irq(26),
                from: (CpuId(1), 0x21),
                to: (CpuId(2), 0x24)
            },
            Migration {
                irq: Irq(28),
                from: (CpuId(1), 0x22),
                to: (CpuId(2), 0x25)
            },
        ]
    );
    assert_eq!(report.broken_affinity, []);
    assert_eq!(report.failed, []);
    assert_eq!(w.guest.matrix().allocated(CpuId(1)), Ok(0));
    for (i, &irq) in irqs.iter().enumerate() {
        assert_eq!(active(&w, irq).0, CpuId(2));
        assert_eq!(
            w.fire(DEV_A, StorageSlot::MsiX(i as u32), 0),
            Fire::Irq(irq)
        );
    }
    assert_eq!(
        w.storage_writes(),
        writes,
        "VIR-AFF-G-001 during hot-unplug"
    );

    // The offline CPU is never chosen again.
    let more = w
        .guest
        .alloc_irq_vectors(
            DEV_A,
            AllocRequest::MsiX { indices: &[7] },
            Some(&mask(&[1, 2])),
        )
        .unwrap();
    w.guest.request_irq(more[0]).unwrap();
    assert_eq!(active(&w, more[0]).0, CpuId(2));
    // Back online: a candidate again (interrupts are not moved back).
    w.guest.cpu_online(CpuId(1)).unwrap();
    assert_eq!(active(&w, irqs[0]).0, CpuId(2));
    w.guest.set_affinity(more[0], &mask(&[1])).unwrap();
    assert_eq!(active(&w, more[0]), (CpuId(1), 0x20));
}

#[test]
fn hot_unplug_is_best_effort_and_reports_each_failure() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::Msi { nvec: 4 }, Some(&mask(&[3])))
        .unwrap();
    for &irq in &irqs {
        w.guest.request_irq(irq).unwrap();
    }
    assert_eq!(active(&w, irqs[1]), (CpuId(3), 0x21));
    // The second of the four moves is refused by the host.
    w.host.borrow_mut().pass_next(CallCode::SET_AFFINITY);
    w.host
        .borrow_mut()
        .fail_next(CallCode::SET_AFFINITY, Status::BACKEND_FAILURE);
    let n = w.log_len();
    let report = w.guest.cpu_offline(CpuId(3)).unwrap();
    assert_eq!(w.calls_since(n), [CallCode::SET_AFFINITY; 4]);
    assert_eq!(
        report.failed,
        [(
            irqs[1],
            IrqError::Domain {
                device: DEV_B,
                slot: StorageSlot::Msi,
                sub: 1,
                error: DomainError::Host(CallError {
                    call: CallCode::SET_AFFINITY,
                    status: Status::BACKEND_FAILURE
                })
            }
        )]
    );
    // The others moved, to the least loaded online CPUs; their affinity (CPU 3 only) had no
    // online CPU left, so it is broken and becomes the online mask.
    assert_eq!(
        report.migrated,
        [
            Migration {
                irq: irqs[0],
                from: (CpuId(3), 0x20),
                to: (CpuId(0), 0x20)
            },
            Migration {
                irq: irqs[2],
                from: (CpuId(3), 0x22),
                to: (CpuId(1), 0x20)
            },
            Migration {
                irq: irqs[3],
                from: (CpuId(3), 0x23),
                to: (CpuId(2), 0x20)
            },
        ]
    );
    assert_eq!(report.broken_affinity, [irqs[0], irqs[2], irqs[3]]);
    for &irq in &[irqs[0], irqs[2], irqs[3]] {
        assert_eq!(w.guest.irq_info(irq).unwrap().affinity, mask(&[0, 1, 2]));
    }
    for sub in [0u16, 2, 3] {
        assert_eq!(
            w.fire(DEV_B, StorageSlot::Msi, sub),
            Fire::Irq(irqs[usize::from(sub)])
        );
    }
    // The failed one stays on the offline CPU, its vector still allocated and mapped there.
    assert_eq!(active(&w, irqs[1]), (CpuId(3), 0x21));
    assert_eq!(w.guest.vector_to_irq(CpuId(3), 0x21), Some(irqs[1]));
    assert_eq!(w.guest.irq_info(irqs[1]).unwrap().affinity, mask(&[3]));
    assert_eq!(w.guest.matrix().allocated(CpuId(3)), Ok(1));
    // It can be moved later.
    w.guest.set_affinity(irqs[1], &mask(&[0])).unwrap();
    assert_eq!(active(&w, irqs[1]), (CpuId(0), 0x21));
    assert_eq!(w.fire(DEV_B, StorageSlot::Msi, 1), Fire::Irq(irqs[1]));
    assert_eq!(w.guest.matrix().allocated(CpuId(3)), Ok(0));
}

#[test]
fn hot_unplug_refusals_change_nothing() {
    let mut w = World::new();
    assert_eq!(
        w.guest.cpu_offline(CpuId(9)),
        Err(IrqError::Vector(VectorError::CpuOutOfRange {
            cpu: CpuId(9),
            nr_cpus: 4
        }))
    );
    for c in [0, 1, 2] {
        w.guest.cpu_offline(CpuId(c)).unwrap();
    }
    assert_eq!(
        w.guest.cpu_offline(CpuId(1)),
        Err(IrqError::Vector(VectorError::AlreadyOffline(CpuId(1))))
    );
    let e = w.guest.cpu_offline(CpuId(3)).unwrap_err();
    assert_eq!(e, IrqError::LastOnlineCpu(CpuId(3)));
    assert_eq!(e.errno(), errno::EBUSY);
    assert_eq!(w.guest.online_cpus(), mask(&[3]));
    assert_eq!(
        w.guest.cpu_online(CpuId(3)),
        Err(IrqError::Vector(VectorError::AlreadyOnline(CpuId(3))))
    );
}

#[test]
fn hot_unplug_with_full_affinity_cpus_breaks_affinity_to_any_online_cpu() {
    // Linux's fixup: ENOSPC on the affinity → retry with every online CPU.
    let mut cfg = vir_guest::IrqConfig::new(vec![0, 2, 4]);
    cfg.vectors.system_reserved = vir_guest::VectorSet::from_range(0x21..=0xEA);
    let (mut w, r) = World::build(
        HostModel::new(),
        vir_abi::feature::Features::V1_DEFINED,
        cfg,
    );
    r.unwrap();
    let irqs = w
        .guest
        .alloc_irq_vectors(
            DEV_A,
            AllocRequest::MsiX { indices: &[0, 1] },
            Some(&mask(&[0, 1])),
        )
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    w.guest.request_irq(irqs[1]).unwrap();
    assert_eq!(active(&w, irqs[1]), (CpuId(1), 0x20));
    let report = w.guest.cpu_offline(CpuId(1)).unwrap();
    assert_eq!(
        report.migrated,
        [Migration {
            irq: irqs[1],
            from: (CpuId(1), 0x20),
            to: (CpuId(2), 0x20)
        }]
    );
    assert_eq!(report.broken_affinity, [irqs[1]]);
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(1), 0), Fire::Irq(irqs[1]));
}
