//! Failures: every host status surfaces at the original call with its errno (VIR-STA-G-001),
//! and the guest's state is unchanged afterwards.

mod common;

use common::*;
use vir_abi::call::CallCode;
use vir_abi::status::{Status, errno};
use vir_guest::{
    AllocRequest, CallError, CpuId, CpuMask, DomainError, IrqError, IrqState, StorageError,
    StorageSlot, StorageType, TeardownError, TeardownReport,
};

fn host_error(call: CallCode, status: Status) -> DomainError {
    DomainError::Host(CallError { call, status })
}

#[test]
fn vir_sta_g_001_every_status_at_alloc_irq_vectors_keeps_its_errno() {
    for &status in &Status::ALL[1..] {
        let mut w = World::new();
        w.host.borrow_mut().fail_next(CallCode::ALLOCATE, status);
        let e = w
            .guest
            .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[2] }, None)
            .unwrap_err();
        assert_eq!(
            e,
            IrqError::Domain {
                device: DEV_A,
                slot: StorageSlot::MsiX(2),
                sub: 0,
                error: host_error(CallCode::ALLOCATE, status)
            }
        );
        assert_eq!(e.errno(), status.errno(), "{status:?}");
        assert_eq!(w.guest.irqs().count(), 0);
    }
}

#[test]
fn vir_sta_g_001_unknown_status_is_eio() {
    let mut w = World::new();
    w.host
        .borrow_mut()
        .fail_next(CallCode::ALLOCATE, Status(0x1234));
    let e = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsSystem { indices: &[9] }, None)
        .unwrap_err();
    assert_eq!(e.errno(), errno::EIO);
}

#[test]
fn vir_sta_g_001_host_refusals_from_the_model() {
    // Statuses the host model derives itself (VIR-ALC-H-004..009), not injected.
    let mut w = World::new();
    let cases: [(vir_guest::DeviceId, AllocRequest<'_>, Status, i32); 5] = [
        (
            DEV_FOREIGN,
            AllocRequest::MsiX { indices: &[0] },
            Status::NOT_YOUR_DEVICE,
            errno::ENODEV,
        ),
        (
            DEV_MSIX_ONLY,
            AllocRequest::ImsDevice { indices: &[0] },
            Status::STORAGE_NOT_PRESENT,
            errno::EOPNOTSUPP,
        ),
        (
            DEV_MSIX_ONLY,
            AllocRequest::MsiX { indices: &[8] },
            Status::INVALID_INDEX,
            errno::ERANGE,
        ),
        (
            DEV_MSIX_ONLY,
            AllocRequest::Msi { nvec: 1 },
            Status::STORAGE_NOT_PRESENT,
            errno::EOPNOTSUPP,
        ),
        (
            DEV_A,
            AllocRequest::ImsDevice { indices: &[64] },
            Status::INVALID_INDEX,
            errno::ERANGE,
        ),
    ];
    for (device, req, status, eno) in cases {
        let e = w.guest.alloc_irq_vectors(device, req, None).unwrap_err();
        let IrqError::Domain { error, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*error, host_error(CallCode::ALLOCATE, status));
        assert_eq!(e.errno(), eno);
    }
    assert_eq!(w.guest.irqs().count(), 0);
}

#[test]
fn table_full_and_quota_exceeded_are_enospc() {
    // B10: allocation of remapping entries fails on its own.
    let mut host = HostModel::new();
    host.irte_quota = 4;
    let (mut w, r) = World::build(
        host,
        vir_abi::feature::Features::V1_DEFINED,
        vir_guest::IrqConfig::new(APIC_IDS.to_vec()),
    );
    r.unwrap();
    w.guest
        .alloc_irq_vectors(DEV_A, AllocRequest::Msi { nvec: 4 }, None)
        .unwrap();
    let e = w
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::MsiX { indices: &[0] }, None)
        .unwrap_err();
    assert_eq!(e.errno(), errno::ENOSPC);
    assert!(matches!(
        e,
        IrqError::Domain {
            error: DomainError::Host(CallError {
                status: Status::QUOTA_EXCEEDED,
                ..
            }),
            ..
        }
    ));
    let mut host = HostModel::new();
    host.table = vec![false; 6];
    let (mut w, r) = World::build(
        host,
        vir_abi::feature::Features::V1_DEFINED,
        vir_guest::IrqConfig::new(APIC_IDS.to_vec()),
    );
    r.unwrap();
    w.guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0, 1] }, None)
        .unwrap();
    // 4 free entries remain, but no naturally aligned run of 4.
    let e = w
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::Msi { nvec: 4 }, None)
        .unwrap_err();
    assert!(matches!(
        e,
        IrqError::Domain {
            error: DomainError::Host(CallError {
                status: Status::TABLE_FULL,
                ..
            }),
            ..
        }
    ));
    assert_eq!(e.errno(), errno::ENOSPC);
}

#[test]
fn partial_allocation_failure_undoes_the_whole_call() {
    let mut w = World::new();
    // Only two table entries are free: the third ALLOCATE of the call gets TABLE_FULL.
    for e in &mut w.host.borrow_mut().table[2..] {
        *e = true;
    }
    let e = w
        .guest
        .alloc_irq_vectors(
            DEV_A,
            AllocRequest::MsiX {
                indices: &[0, 1, 2],
            },
            None,
        )
        .unwrap_err();
    assert_eq!(
        e,
        IrqError::Domain {
            device: DEV_A,
            slot: StorageSlot::MsiX(2),
            sub: 0,
            error: host_error(CallCode::ALLOCATE, Status::TABLE_FULL)
        }
    );
    let h = w.host.borrow();
    assert!(
        h.allocs.is_empty(),
        "the two earlier allocations were freed"
    );
    assert_eq!(h.count(CallCode::FREE), 2);
    assert_eq!(
        h.count(CallCode::DEACTIVATE),
        2,
        "their reservations were undone first"
    );
    drop(h);
    assert_eq!(w.guest.irqs().count(), 0);
    assert_eq!(w.guest.matrix().reserved(), 0);
    assert_eq!(w.guest.domain().live_allocations(), 0);
    // The two messages had been written (first activation) before the failure.
    assert_eq!(w.storage_writes(), 2);
    assert_eq!(w.guest.stats().rollback_failures, 0);
    // Nothing is left behind: the same slots can be allocated once the table has room.
    for e in &mut w.host.borrow_mut().table[2..] {
        *e = false;
    }
    let irqs = w
        .guest
        .alloc_irq_vectors(
            DEV_A,
            AllocRequest::MsiX {
                indices: &[0, 1, 2],
            },
            None,
        )
        .unwrap();
    assert_eq!(irqs.len(), 3);
}

#[test]
fn vir_sta_g_001_request_irq_failure_returns_the_vector() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[4] }, None)
        .unwrap();
    for (status, eno) in [
        (Status::VECTORS_EXHAUSTED, errno::ENOSPC),
        (Status::BACKEND_FAILURE, errno::EIO),
        (Status::BUSY, errno::EAGAIN),
        (Status::INVALID_TARGET, errno::EINVAL),
    ] {
        w.host.borrow_mut().fail_next(CallCode::ACTIVATE, status);
        let e = w.guest.request_irq(irqs[0]).unwrap_err();
        assert_eq!(
            e,
            IrqError::Domain {
                device: DEV_A,
                slot: StorageSlot::MsiX(4),
                sub: 0,
                error: host_error(CallCode::ACTIVATE, status)
            }
        );
        assert_eq!(e.errno(), eno);
        assert_eq!(w.guest.irq_info(irqs[0]).unwrap().state, IrqState::Reserved);
        for cpu in 0..4 {
            assert_eq!(w.guest.matrix().allocated(CpuId(cpu)), Ok(0));
        }
        assert_eq!(w.guest.matrix().reserved(), 1);
        assert!(w.storage.borrow().masked[&(DEV_A, StorageSlot::MsiX(4))]);
    }
    // And then it works.
    w.guest.request_irq(irqs[0]).unwrap();
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(4), 0), Fire::Irq(irqs[0]));
}

#[test]
fn host_vector_quota_exhaustion_is_enospc_at_request_irq() {
    let mut host = HostModel::new();
    host.vector_quota = 1;
    let (mut w, r) = World::build(
        host,
        vir_abi::feature::Features::V1_DEFINED,
        vir_guest::IrqConfig::new(APIC_IDS.to_vec()),
    );
    r.unwrap();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0, 1] }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    let e = w.guest.request_irq(irqs[1]).unwrap_err();
    assert_eq!(e.errno(), errno::ENOSPC);
    assert_eq!(w.guest.irq_info(irqs[1]).unwrap().state, IrqState::Reserved);
}

#[test]
fn storage_failure_at_request_irq_rolls_back_to_the_reservation() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[6] }, None)
        .unwrap();
    w.storage.borrow_mut().fail_next_mask = true;
    let n = w.log_len();
    let e = w.guest.request_irq(irqs[0]).unwrap_err();
    assert_eq!(e, IrqError::Storage(StorageError::NoSuchDevice(DEV_A)));
    assert_eq!(e.errno(), errno::ENODEV);
    // ACTIVATE, then undone: DEACTIVATE and RESERVE again.
    assert_eq!(
        w.calls_since(n),
        [CallCode::ACTIVATE, CallCode::DEACTIVATE, CallCode::ACTIVATE]
    );
    assert_eq!(w.guest.irq_info(irqs[0]).unwrap().state, IrqState::Reserved);
    let id = w.guest.irq_info(irqs[0]).unwrap().allocation;
    assert_eq!(w.host.borrow().allocs[&id.0].subs[0], HostVec::Reserved);
    assert_eq!(w.guest.matrix().allocated(CpuId(0)), Ok(0));
    w.guest.request_irq(irqs[0]).unwrap();
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(6), 0), Fire::Irq(irqs[0]));
}

#[test]
fn storage_failure_at_first_write_without_reservation_deactivates() {
    let mut w = World::offering(
        vir_abi::feature::Features::V1_DEFINED.difference(vir_abi::feature::Features::RESERVATION),
    );
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsDevice { indices: &[1] }, None)
        .unwrap();
    w.storage.borrow_mut().fail_next_write = true;
    let e = w.guest.request_irq(irqs[0]).unwrap_err();
    assert_eq!(e, IrqError::Storage(StorageError::NoSuchDevice(DEV_A)));
    assert_eq!(
        w.guest.irq_info(irqs[0]).unwrap().state,
        IrqState::Allocated
    );
    assert_eq!(w.guest.irq_info(irqs[0]).unwrap().message, None);
    assert_eq!(w.host.borrow().vectors_used, 0);
    w.guest.request_irq(irqs[0]).unwrap();
    assert_eq!(w.storage_writes(), 1);
    assert_eq!(
        w.fire(DEV_A, StorageSlot::ImsDevice(1), 0),
        Fire::Irq(irqs[0])
    );
}

#[test]
fn guest_vector_exhaustion_is_enospc_and_no_call_is_made() {
    // Only two device vectors per CPU, two CPUs.
    let mut cfg = vir_guest::IrqConfig::new(vec![0, 2]);
    cfg.vectors.system_reserved = vir_guest::VectorSet::from_range(0x22..=0xEA);
    let (mut w, r) = World::build(
        HostModel::new(),
        vir_abi::feature::Features::V1_DEFINED,
        cfg,
    );
    r.unwrap();
    assert_eq!(w.guest.matrix().capacity(), 2);
    let idx: Vec<u32> = (0..5).collect();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &idx }, None)
        .unwrap();
    // Reservation mode: five interrupts allocated with four vectors in the machine.
    for &irq in &irqs[..4] {
        w.guest.request_irq(irq).unwrap();
    }
    let n = w.log_len();
    let e = w.guest.request_irq(irqs[4]).unwrap_err();
    assert_eq!(
        e,
        IrqError::Vector(vir_guest::VectorError::Exhausted(CpuMask::first_n(2)))
    );
    assert_eq!(e.errno(), errno::ENOSPC);
    assert_eq!(w.log_len(), n, "no hypercall without a vector");
    assert_eq!(w.guest.irq_info(irqs[4]).unwrap().state, IrqState::Reserved);
    // Freeing one makes room.
    assert_eq!(w.guest.free_irq(irqs[0]), Ok(TeardownReport::default()));
    w.guest.request_irq(irqs[4]).unwrap();
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(4), 0), Fire::Irq(irqs[4]));
}

#[test]
fn request_irq_falls_back_to_any_online_cpu_when_the_affinity_is_full() {
    let mut cfg = vir_guest::IrqConfig::new(vec![0, 2]);
    cfg.vectors.system_reserved = vir_guest::VectorSet::from_range(0x21..=0xEA);
    let (mut w, r) = World::build(
        HostModel::new(),
        vir_abi::feature::Features::V1_DEFINED,
        cfg,
    );
    r.unwrap();
    let cpu0 = CpuMask::single(CpuId(0));
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0, 1] }, Some(&cpu0))
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    w.guest.request_irq(irqs[1]).unwrap();
    assert_eq!(
        w.guest.irq_info(irqs[1]).unwrap().state,
        IrqState::Active {
            cpu: CpuId(1),
            vector: 0x20
        }
    );
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(1), 0), Fire::Irq(irqs[1]));
}

#[test]
fn teardown_completes_and_reports_host_refusals() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0] }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    let IrqState::Active { cpu, vector } = w.guest.irq_info(irqs[0]).unwrap().state else {
        panic!()
    };
    w.host
        .borrow_mut()
        .fail_next(CallCode::DEACTIVATE, Status::BUSY);
    let report = w.guest.free_irq(irqs[0]).unwrap();
    assert_eq!(
        report.errors,
        [TeardownError::Deactivate {
            irq: irqs[0],
            error: host_error(CallCode::DEACTIVATE, Status::BUSY)
        }]
    );
    assert_eq!(
        w.guest.irq_info(irqs[0]).unwrap().state,
        IrqState::Deactivated
    );
    // The host may still deliver there: the vector is kept out of use, unmapped.
    assert!(w.guest.matrix().is_allocated(cpu, vector));
    assert_eq!(w.guest.vector_to_irq(cpu, vector), None);
    assert_eq!(w.guest.stats().leaked_vectors, 1);
    w.host.borrow_mut().fail_next(CallCode::FREE, Status::BUSY);
    let report = w.guest.free_irq_vectors(DEV_A, StorageType::MsiX).unwrap();
    assert_eq!(
        report.errors,
        [TeardownError::Free {
            device: DEV_A,
            slot: StorageSlot::MsiX(0),
            error: host_error(CallCode::FREE, Status::BUSY)
        }]
    );
    assert_eq!(w.guest.irqs().count(), 0);
}

#[test]
fn free_irq_mask_failure_is_reported_and_teardown_completes() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[3] }, None)
        .unwrap();
    w.guest.request_irq(irqs[0]).unwrap();
    let IrqState::Active { cpu, vector } = w.guest.irq_info(irqs[0]).unwrap().state else {
        panic!()
    };
    w.storage.borrow_mut().fail_next_mask = true;
    let report = w.guest.free_irq(irqs[0]).unwrap();
    assert_eq!(
        report.errors,
        [TeardownError::Storage {
            device: DEV_A,
            slot: StorageSlot::MsiX(3),
            error: StorageError::NoSuchDevice(DEV_A)
        }]
    );
    // The domain deactivated it, so the vector is free again.
    assert_eq!(
        w.guest.irq_info(irqs[0]).unwrap().state,
        IrqState::Deactivated
    );
    assert!(!w.guest.matrix().is_allocated(cpu, vector));
    assert_eq!(w.guest.stats().leaked_vectors, 0);
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(3), 0), Fire::Blocked);
}
