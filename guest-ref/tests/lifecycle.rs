//! Interrupt lifecycle scenarios: MSI, MSI-X, IMS, with and without reservation mode.

mod common;

use common::*;
use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::hw::vtd::RemappableMsi;
use vir_abi::wire::{ActivateRequest, AllocateRequest, activate_flags};
use vir_guest::matrix::SHUTDOWN_VECTOR;
use vir_guest::{
    AllocRequest, CpuId, CpuMask, Irq, IrqState, StorageSlot, StorageStats, StorageType,
    TeardownReport, VectorState,
};
use zerocopy::FromBytes;

fn activate_flags_of(w: &World, from: usize) -> Vec<u16> {
    w.host.borrow().log[from..]
        .iter()
        .filter(|c| c.code == CallCode::ACTIVATE)
        .map(|c| {
            ActivateRequest::read_from_bytes(&c.request)
                .unwrap()
                .flags
                .get()
        })
        .collect()
}

#[test]
fn msix_lifecycle_in_reservation_mode() {
    // B11, VIR-ACT-G-001, VIR-IRQ state machine: FREE → ALLOCATED → RESERVED → ACTIVE →
    // ALLOCATED → ACTIVE → FREE.
    let mut w = World::new();
    assert!(w.guest.reservation_mode());
    let n0 = w.log_len();
    let irqs = w
        .guest
        .alloc_irq_vectors(
            DEV_A,
            AllocRequest::MsiX {
                indices: &[0, 3, 5],
            },
            None,
        )
        .unwrap();
    assert_eq!(irqs, [Irq(24), Irq(25), Irq(26)]);
    assert_eq!(
        w.calls_since(n0),
        [
            CallCode::ALLOCATE,
            CallCode::ACTIVATE,
            CallCode::ALLOCATE,
            CallCode::ACTIVATE,
            CallCode::ALLOCATE,
            CallCode::ACTIVATE
        ]
    );
    assert_eq!(activate_flags_of(&w, n0), [activate_flags::RESERVE; 3]);
    // Parked: shutdown vector, no vector consumed, messages written, entries masked.
    for (&irq, index) in irqs.iter().zip([0u32, 3, 5]) {
        let info = w.guest.irq_info(irq).unwrap();
        assert_eq!(info.state, IrqState::Reserved);
        assert_eq!(info.effective_vector(), Some((None, SHUTDOWN_VECTOR)));
        assert_eq!(info.slot, StorageSlot::MsiX(index));
        let stored = w.storage.borrow().messages[&(DEV_A, StorageSlot::MsiX(index))];
        assert_eq!(Some(stored), info.message);
        assert!(w.storage.borrow().masked[&(DEV_A, StorageSlot::MsiX(index))]);
        assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(index), 0), Fire::Masked);
    }
    assert_eq!(w.guest.matrix().reserved(), 3);
    assert_eq!(w.guest.matrix().allocated(CpuId(0)), Ok(0));
    assert_eq!(w.storage_writes(), 3);
    assert_eq!(
        w.guest.storage_stats(),
        StorageStats {
            msix_messages: 3,
            msix_mask_writes: 3,
            ..Default::default()
        }
    );
    // Each allocation's message names its own physical IRTE.
    let handles: Vec<u16> = [0u32, 3, 5]
        .iter()
        .map(|&i| {
            let m = w.storage.borrow().messages[&(DEV_A, StorageSlot::MsiX(i))];
            RemappableMsi::decode(m).unwrap().handle
        })
        .collect();
    assert_eq!(handles, [0, 1, 2]);

    // request_irq: real vector, ACTIVATE without RESERVE, unmask; no message write.
    let n1 = w.log_len();
    w.guest.request_irq(irqs[1]).unwrap();
    assert_eq!(w.calls_since(n1), [CallCode::ACTIVATE]);
    assert_eq!(activate_flags_of(&w, n1), [0]);
    let IrqState::Active { cpu, vector } = w.guest.irq_info(irqs[1]).unwrap().state else {
        panic!("not active");
    };
    assert_eq!((cpu, vector), (CpuId(0), 0x20));
    assert_eq!(w.guest.vector_to_irq(cpu, vector), Some(irqs[1]));
    assert_eq!(
        w.storage_writes(),
        3,
        "VIR-ACT-G-001: no rewrite at request_irq"
    );
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(3), 0), Fire::Irq(irqs[1]));
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(0), 0), Fire::Masked);
    assert_eq!(w.guest.irq_info(irqs[1]).unwrap().count, 1);
    assert_eq!(w.guest.matrix().reserved(), 2);

    // free_irq: mask, DEACTIVATE, vector back; the irq stays allocated.
    let n2 = w.log_len();
    assert_eq!(w.guest.free_irq(irqs[1]), Ok(TeardownReport::default()));
    assert_eq!(w.calls_since(n2), [CallCode::DEACTIVATE]);
    assert_eq!(
        w.guest.irq_info(irqs[1]).unwrap().state,
        IrqState::Deactivated
    );
    assert_eq!(w.guest.vector_to_irq(cpu, vector), None);
    assert!(!w.guest.matrix().is_allocated(cpu, vector));
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(3), 0), Fire::Masked);

    // Request again: the message is still the first one, storage untouched.
    w.guest.request_irq(irqs[1]).unwrap();
    assert_eq!(w.storage_writes(), 3);
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(3), 0), Fire::Irq(irqs[1]));
    assert_eq!(w.guest.free_irq(irqs[1]), Ok(TeardownReport::default()));

    // free_irq_vectors: DEACTIVATE the reserved ones, FREE each allocation.
    let n3 = w.log_len();
    assert_eq!(
        w.guest.free_irq_vectors(DEV_A, StorageType::MsiX),
        Ok(TeardownReport::default())
    );
    assert_eq!(
        w.calls_since(n3),
        [
            CallCode::DEACTIVATE,
            CallCode::FREE,
            CallCode::FREE,
            CallCode::DEACTIVATE,
            CallCode::FREE
        ]
    );
    assert!(w.host.borrow().allocs.is_empty());
    assert_eq!(w.host.borrow().irtes_used(), 0);
    assert_eq!(w.guest.irqs().count(), 0);
    assert_eq!(w.guest.matrix().reserved(), 0);
    assert_eq!(w.guest.domain().live_allocations(), 0);
    assert_eq!(w.failed_calls(), [], "VIR-CALL-G-001: no call refused");
}

#[test]
fn msi_block_one_allocation_one_message_device_adds_the_index() {
    // Design fact: an MSI block is one handle plus sub-handles; VIR-ACT-G-001.
    let mut w = World::new();
    let n0 = w.log_len();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_B, AllocRequest::Msi { nvec: 8 }, None)
        .unwrap();
    assert_eq!(irqs, (24..32).map(Irq).collect::<Vec<_>>());
    let calls = w.calls_since(n0);
    assert_eq!(
        calls.iter().filter(|&&c| c == CallCode::ALLOCATE).count(),
        1
    );
    assert_eq!(
        calls.iter().filter(|&&c| c == CallCode::ACTIVATE).count(),
        8
    );
    let alloc_req = w.host.borrow().log[n0].request.clone();
    let req = AllocateRequest::read_from_bytes(&alloc_req).unwrap();
    assert_eq!((req.kind, req.log2_count, req.index.get()), (1, 3, 0));
    // One message write, MSI enabled with 8 vectors.
    assert_eq!(
        w.storage.borrow().writes,
        [(
            DEV_B,
            StorageSlot::Msi,
            w.guest.irq_info(irqs[0]).unwrap().message.unwrap()
        )]
    );
    assert_eq!(w.storage.borrow().msi_enabled[&DEV_B], 8);
    for (sub, &irq) in irqs.iter().enumerate() {
        let info = w.guest.irq_info(irq).unwrap();
        assert_eq!(info.subhandle as usize, sub);
        assert_eq!(info.slot, StorageSlot::Msi);
    }
    // Request vectors 0, 5 and 7 with distinct affinities and fire them.
    w.guest
        .set_affinity(irqs[5], &CpuMask::single(CpuId(2)))
        .unwrap();
    w.guest
        .set_affinity(irqs[7], &CpuMask::single(CpuId(3)))
        .unwrap();
    for i in [0, 5, 7] {
        w.guest.request_irq(irqs[i]).unwrap();
    }
    assert_eq!(
        w.guest.irq_info(irqs[5]).unwrap().state,
        IrqState::Active {
            cpu: CpuId(2),
            vector: 0x20
        }
    );
    for i in [0u16, 5, 7] {
        assert_eq!(
            w.fire(DEV_B, StorageSlot::Msi, i),
            Fire::Irq(irqs[usize::from(i)])
        );
    }
    assert_eq!(
        w.fire(DEV_B, StorageSlot::Msi, 6),
        Fire::Blocked,
        "reserved: FPD, silent"
    );
    assert_eq!(w.storage_writes(), 1);
    for i in [0, 5, 7] {
        assert_eq!(w.guest.free_irq(irqs[i]), Ok(TeardownReport::default()));
    }
    assert_eq!(
        w.guest.free_irq_vectors(DEV_B, StorageType::Msi),
        Ok(TeardownReport::default())
    );
    assert_eq!(
        w.storage.borrow().msi_enabled.get(&DEV_B),
        None,
        "MSI disabled"
    );
    assert_eq!(w.host.borrow().irtes_used(), 0);
    assert_eq!(
        w.guest.storage_stats(),
        StorageStats {
            msi_messages: 1,
            msi_control_writes: 2,
            ..Default::default()
        }
    );
    assert_eq!(w.failed_calls(), []);
}

#[test]
fn ims_device_and_system_storage_take_the_same_path() {
    // B4: one path for MSI, MSI-X and IMS; B8: IMS system index is software-chosen.
    let mut w = World::new();
    let dev = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsDevice { indices: &[63, 0] }, None)
        .unwrap();
    let sys = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::ImsSystem { indices: &[4000] }, None)
        .unwrap();
    assert_eq!(dev, [Irq(24), Irq(25)]);
    assert_eq!(sys, [Irq(26)]);
    assert_eq!(w.storage_type_allocs(StorageType::ImsDevice), 2);
    assert_eq!(w.storage_type_allocs(StorageType::ImsSystem), 1);
    for &irq in dev.iter().chain(&sys) {
        w.guest.request_irq(irq).unwrap();
    }
    assert_eq!(
        w.fire(DEV_A, StorageSlot::ImsDevice(63), 0),
        Fire::Irq(dev[0])
    );
    assert_eq!(
        w.fire(DEV_A, StorageSlot::ImsDevice(0), 0),
        Fire::Irq(dev[1])
    );
    assert_eq!(
        w.fire(DEV_A, StorageSlot::ImsSystem(4000), 0),
        Fire::Irq(sys[0])
    );
    assert_eq!(
        w.guest.storage_stats(),
        StorageStats {
            ims_device_messages: 2,
            ims_system_messages: 1,
            // VIR-ALC-G-001: masked at allocation, unmasked at request_irq, like MSI-X.
            ims_device_mask_writes: 4,
            ims_system_mask_writes: 2,
            ..Default::default()
        }
    );
    for &irq in dev.iter().chain(&sys) {
        assert_eq!(w.guest.free_irq(irq), Ok(TeardownReport::default()));
    }
    assert_eq!(
        w.guest.free_irq_vectors(DEV_A, StorageType::ImsDevice),
        Ok(TeardownReport::default())
    );
    assert_eq!(
        w.storage_type_allocs(StorageType::ImsSystem),
        1,
        "only IMS device freed"
    );
    assert_eq!(
        w.guest.free_irq_vectors(DEV_A, StorageType::ImsSystem),
        Ok(TeardownReport::default())
    );
    assert!(w.host.borrow().allocs.is_empty());
}

#[test]
fn without_reservation_activation_and_the_write_happen_at_request_irq() {
    // B11 negative: RESERVATION not offered, so no RESERVE flag ever; VIR-ACT-G-001 still
    // one write per allocation, at its first activation.
    let mut w = World::offering(Features::V1_DEFINED.difference(Features::RESERVATION));
    assert!(!w.guest.reservation_mode());
    let n0 = w.log_len();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[1, 2] }, None)
        .unwrap();
    assert_eq!(w.calls_since(n0), [CallCode::ALLOCATE, CallCode::ALLOCATE]);
    assert_eq!(w.storage_writes(), 0);
    assert_eq!(
        w.guest.irq_info(irqs[0]).unwrap().state,
        IrqState::Allocated
    );
    assert_eq!(w.guest.irq_info(irqs[0]).unwrap().message, None);
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(1), 0), Fire::NoMessage);
    assert_eq!(w.guest.matrix().reserved(), 0);

    w.guest.request_irq(irqs[0]).unwrap();
    assert_eq!(activate_flags_of(&w, n0), [0]);
    assert_eq!(w.storage_writes(), 1);
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(1), 0), Fire::Irq(irqs[0]));
    assert_eq!(w.guest.free_irq(irqs[0]), Ok(TeardownReport::default()));
    w.guest.request_irq(irqs[0]).unwrap();
    assert_eq!(w.storage_writes(), 1, "second activation: no rewrite");
    assert_eq!(w.fire(DEV_A, StorageSlot::MsiX(2), 0), Fire::NoMessage);
    assert_eq!(w.guest.free_irq(irqs[0]), Ok(TeardownReport::default()));
    let n1 = w.log_len();
    assert_eq!(
        w.guest.free_irq_vectors(DEV_A, StorageType::MsiX),
        Ok(TeardownReport::default())
    );
    assert_eq!(w.calls_since(n1), [CallCode::FREE, CallCode::FREE]);
    assert_eq!(w.failed_calls(), []);
}

#[test]
fn msi_without_reservation_enables_at_first_request() {
    let mut w = World::offering(Features::V1_DEFINED.difference(Features::RESERVATION));
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::Msi { nvec: 2 }, None)
        .unwrap();
    assert_eq!(w.storage.borrow().msi_enabled.get(&DEV_A), None);
    w.guest.request_irq(irqs[1]).unwrap();
    assert_eq!(w.storage.borrow().msi_enabled[&DEV_A], 2);
    assert_eq!(w.fire(DEV_A, StorageSlot::Msi, 1), Fire::Irq(irqs[1]));
    assert_eq!(w.fire(DEV_A, StorageSlot::Msi, 0), Fire::Blocked);
    w.guest.request_irq(irqs[0]).unwrap();
    assert_eq!(w.fire(DEV_A, StorageSlot::Msi, 0), Fire::Irq(irqs[0]));
    assert_eq!(w.guest.storage_stats().msi_messages, 1);
    assert_eq!(w.guest.storage_stats().msi_control_writes, 1);
}

#[test]
fn freeing_requested_vectors_is_refused_and_changes_nothing() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::MsiX { indices: &[0, 1] }, None)
        .unwrap();
    w.guest.request_irq(irqs[1]).unwrap();
    let n = w.log_len();
    let e = w
        .guest
        .free_irq_vectors(DEV_A, StorageType::MsiX)
        .unwrap_err();
    assert_eq!(e, vir_guest::IrqError::StillRequested(irqs[1]));
    assert_eq!(e.errno(), vir_abi::status::errno::EBUSY);
    assert_eq!(w.log_len(), n);
    assert_eq!(w.guest.irqs().count(), 2);
    assert_eq!(
        w.guest.request_irq(irqs[1]),
        Err(vir_guest::IrqError::AlreadyRequested(irqs[1]))
    );
    assert_eq!(
        w.guest.free_irq(irqs[0]),
        Err(vir_guest::IrqError::NotRequested(irqs[0]))
    );
    assert_eq!(
        w.guest.free_irq_vectors(DEV_A, StorageType::Msi),
        Err(vir_guest::IrqError::NoVectors {
            device: DEV_A,
            storage: StorageType::Msi
        })
    );
    assert_eq!(
        w.guest.request_irq(Irq(99)),
        Err(vir_guest::IrqError::UnknownIrq(Irq(99)))
    );
}

#[test]
fn domain_state_mirrors_the_host() {
    let mut w = World::new();
    let irqs = w
        .guest
        .alloc_irq_vectors(DEV_A, AllocRequest::Msi { nvec: 2 }, None)
        .unwrap();
    w.guest.request_irq(irqs[1]).unwrap();
    let id = w.guest.irq_info(irqs[1]).unwrap().allocation;
    let d = w.guest.domain();
    assert_eq!(d.vector_state(id, 0), Some(VectorState::Reserved));
    let Some(VectorState::Active(t)) = d.vector_state(id, 1) else {
        panic!("vector 1 not active");
    };
    let host = w.host.borrow();
    let a = &host.allocs[&id.0];
    assert_eq!(a.subs[0], HostVec::Reserved);
    assert_eq!(
        a.subs[1],
        HostVec::Active {
            apic_id: t.apic_id,
            vector: t.vector
        }
    );
}
