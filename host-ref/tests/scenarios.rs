//! Public-API scenarios: several VMs on one table, handle isolation, MSI blocks, message
//! stability, failure injection at every backend step.

mod common;

use common::*;
use vir_abi::hw::vtd::{PostedIrte, RemappableMsi, RemappedIrte, Svt};
use vir_abi::hw::{ApicMode, Irte, MsiMessage};
use vir_abi::status::Status;
use vir_abi::wire::StorageKind;
use vir_host::testing::{Event, mock_state};
use vir_host::{BackendError, BackendOp, IrMode, VectorState};

#[test]
fn vir_sec_h_004_a_handle_of_vm_b_is_invalid_for_vm_a() {
    let mut t = Two::new(IrMode::Posted, 256);
    let b1 =
        t.b.allocate(&mut t.host, &t.mem_b, B_DEV, StorageKind::MSIX, 0, 0)
            .unwrap()
            .handle
            .get();
    let b2 =
        t.b.allocate(&mut t.host, &t.mem_b, B_DEV, StorageKind::MSIX, 0, 1)
            .unwrap()
            .handle
            .get();
    let a1 =
        t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::MSIX, 0, 0)
            .unwrap()
            .handle
            .get();
    // Handles are per-VM names: A's first handle has the same value as B's first.
    assert_eq!(a1, b1);
    let before = t.all_state();
    assert_eq!(
        t.a.free(&mut t.host, &t.mem_a, b2),
        Err(Status::INVALID_HANDLE)
    );
    assert_eq!(
        t.a.activate(&mut t.host, &t.mem_a, b2, 0, A_APIC[0], 0x41)
            .map(|_| ()),
        Err(Status::INVALID_HANDLE)
    );
    assert_eq!(
        t.a.deactivate(&mut t.host, &t.mem_a, b2, 0),
        Err(Status::INVALID_HANDLE)
    );
    assert_eq!(
        t.a.set_affinity(&mut t.host, &t.mem_a, b2, 0, A_APIC[0], 0x41),
        Err(Status::INVALID_HANDLE)
    );
    assert_eq!(t.all_state(), before);
    // A's own handle 1 names A's allocation, whose IRTE is not B's.
    t.a.activate(&mut t.host, &t.mem_a, a1, 0, A_APIC[1], 0x41)
        .unwrap();
    let a = t.host.vm(t.a.vm).unwrap().allocation(a1).unwrap().base;
    let b = t.host.vm(t.b.vm).unwrap().allocation(b1).unwrap().base;
    assert_ne!(a, b, "one shared table, distinct entries");
    assert_eq!(t.host.table().entry(b), Some(0), "B's entry untouched");
}

#[test]
fn vir_sec_h_003_a_vm_can_target_only_its_own_vcpus() {
    let mut t = Two::new(IrMode::Posted, 256);
    let h =
        t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::MSIX, 0, 0)
            .unwrap()
            .handle
            .get();
    assert_eq!(
        t.a.activate(&mut t.host, &t.mem_a, h, 0, B_APIC[0], 0x41)
            .map(|_| ()),
        Err(Status::INVALID_TARGET)
    );
    t.a.activate(&mut t.host, &t.mem_a, h, 0, A_APIC[0], 0x41)
        .unwrap();
    assert_eq!(
        t.a.set_affinity(&mut t.host, &t.mem_a, h, 0, B_APIC[1], 0x41),
        Err(Status::INVALID_TARGET)
    );
}

#[test]
fn shared_table_is_drawn_by_every_vm_and_table_full_hits_both() {
    let mut t = Two::new(IrMode::Remapped, 16);
    t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::MSI, 3, 0)
        .unwrap();
    t.b.allocate(&mut t.host, &t.mem_b, B_DEV, StorageKind::MSI, 2, 0)
        .unwrap();
    assert_eq!(t.host.table_free(), 4);
    // VIR-ALC-H-009: 4 free entries, but no aligned run of 8 for either VM.
    assert_eq!(
        t.b.allocate(&mut t.host, &t.mem_b, B_DEV, StorageKind::MSIX, 0, 0)
            .map(|r| r.count.get()),
        Ok(1)
    );
    let before = t.all_state();
    assert_eq!(
        t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::IMS_DEVICE, 0, 0)
            .map(|r| r.count.get()),
        Ok(1)
    );
    assert_ne!(t.all_state(), before);
    t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::IMS_DEVICE, 0, 1)
        .unwrap();
    t.b.allocate(&mut t.host, &t.mem_b, B_DEV, StorageKind::MSIX, 0, 1)
        .unwrap();
    let before = t.all_state();
    assert_eq!(
        t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::IMS_DEVICE, 0, 2)
            .map(|_| ()),
        Err(Status::TABLE_FULL)
    );
    assert_eq!(
        t.b.allocate(&mut t.host, &t.mem_b, B_DEV, StorageKind::MSIX, 0, 2)
            .map(|_| ()),
        Err(Status::TABLE_FULL)
    );
    assert_eq!(t.all_state(), before);
    // A VM's reset gives its entries back to the other.
    t.a.reset(&mut t.host, &t.mem_a).unwrap();
    assert_eq!(t.host.table_free(), 10);
    assert_eq!(
        t.b.allocate(&mut t.host, &t.mem_b, B_DEV, StorageKind::IMS_SYSTEM, 0, 0)
            .map(|r| r.count.get()),
        Ok(1)
    );
}

#[test]
fn vir_fre_h_003_handles_stay_stale_over_many_cycles() {
    let mut t = Two::new(IrMode::Posted, 64);
    let mut seen = Vec::new();
    for round in 0..100u32 {
        let h =
            t.a.allocate(
                &mut t.host,
                &t.mem_a,
                A_DEV,
                StorageKind::IMS_SYSTEM,
                0,
                round % 16,
            )
            .unwrap()
            .handle
            .get();
        assert!(
            !seen.contains(&h),
            "handle {h:#x} reissued in round {round}"
        );
        t.a.activate(&mut t.host, &t.mem_a, h, 0, A_APIC[0], 0x41)
            .unwrap();
        t.a.free(&mut t.host, &t.mem_a, h).unwrap();
        seen.push(h);
        for &old in &seen {
            assert_eq!(
                t.a.free(&mut t.host, &t.mem_a, old),
                Err(Status::INVALID_HANDLE)
            );
        }
    }
    assert_eq!(t.host.table_free(), 64);
}

#[test]
fn msi_block_of_eight_one_message_eight_irtes_each_with_its_own_target() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut t = Two::new(mode, 256);
        // Push the block off 0: one single entry first.
        t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::MSIX, 0, 0)
            .unwrap();
        let r =
            t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::MSI, 3, 0)
                .unwrap();
        assert_eq!(r.count.get(), 8);
        let h = r.handle.get();
        let base = t.host.vm(t.a.vm).unwrap().allocation(h).unwrap().base;
        assert_eq!(base, 8, "naturally aligned base");
        for sub in 0..8u16 {
            let vcpu = usize::from(sub % 2);
            let r =
                t.a.activate(
                    &mut t.host,
                    &t.mem_a,
                    h,
                    sub,
                    A_APIC[vcpu],
                    0x50 + sub as u8,
                )
                .unwrap();
            // One message for the block: handle = base, SHV = 1, data 0 (the device adds sub).
            let m = RemappableMsi::decode(message(&r)).unwrap();
            assert_eq!((m.handle, m.shv, m.subhandle), (8, true, 0));
            assert_eq!(message(&r).data, 0);
        }
        for sub in 0..8u32 {
            let raw = t.host.table().entry(base + sub).unwrap();
            // The device writes data = sub: the IRTE index is base + sub.
            let idx = RemappableMsi::decode(MsiMessage {
                data: sub,
                ..message_of(&t, h)
            })
            .unwrap()
            .irte_index();
            assert_eq!(u32::from(idx), base + sub);
            let vcpu = u64::from(sub % 2);
            match Irte::decode(raw, ApicMode::X2Apic).unwrap() {
                Irte::Posted(p) => {
                    assert_eq!(mode, IrMode::Posted);
                    assert_eq!(
                        p,
                        PostedIrte {
                            present: true,
                            fpd: false,
                            avail: 0,
                            urgent: false,
                            vector: 0x50 + sub as u8,
                            pda: pda(0, vcpu),
                            sid: A_RID,
                            sq: 0,
                            svt: Svt::VerifySid
                        }
                    );
                }
                Irte::Remapped(r) => {
                    assert_eq!(mode, IrMode::Remapped);
                    let VectorState::Active(a) =
                        t.host.vm(t.a.vm).unwrap().allocation(h).unwrap().vectors[sub as usize]
                    else {
                        panic!("sub {sub} not active")
                    };
                    assert_eq!(a.host_irq.vector.cpu, vcpu as u32);
                    assert_eq!(
                        r,
                        RemappedIrte {
                            present: true,
                            fpd: false,
                            dest_mode_logical: false,
                            redirection_hint: false,
                            trigger_level: false,
                            delivery_mode: 0,
                            avail: 0,
                            vector: a.host_irq.vector.vector,
                            dest: 0x1000 + vcpu as u32,
                            sid: A_RID,
                            sq: 0,
                            svt: Svt::VerifySid
                        }
                    );
                }
            }
        }
        // Eight physical IRQs for the eight MSI vectors of the device, slots 0..8.
        let mut slots: Vec<u32> = t
            .host
            .irqs()
            .irqs()
            .values()
            .map(|i| i.source.slot)
            .collect();
        slots.sort();
        assert_eq!(slots, (0..8).collect::<Vec<_>>());
        assert_eq!(
            t.host.vm(t.a.vm).unwrap().msi_message_issued(A_DEV),
            Some(message_of(&t, h))
        );
    }
}

fn message_of(t: &Two, h: u32) -> MsiMessage {
    t.host.vm(t.a.vm).unwrap().allocation(h).unwrap().message()
}

#[test]
fn vir_act_h_009_message_stable_across_reserve_deactivate_and_affinity() {
    for mode in [IrMode::Posted, IrMode::Remapped] {
        let mut t = Two::new(mode, 256);
        t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::IMS_SYSTEM, 0, 0)
            .unwrap();
        let h =
            t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::IMS_DEVICE, 0, 5)
                .unwrap()
                .handle
                .get();
        let first = message(&t.a.reserve(&mut t.host, &t.mem_a, h, 0).unwrap());
        let m = message(
            &t.a.activate(&mut t.host, &t.mem_a, h, 0, A_APIC[0], 0x41)
                .unwrap(),
        );
        assert_eq!(m, first, "reserve -> activate");
        t.journal.clear();
        t.a.set_affinity(&mut t.host, &t.mem_a, h, 0, A_APIC[1], 0x42)
            .unwrap();
        t.a.set_affinity(&mut t.host, &t.mem_a, h, 0, A_APIC[0], 0x43)
            .unwrap();
        // Affinity rewrites only the IRTE, route and host IRQ: nothing returns a message and
        // the allocation's message is unchanged (VIR-AFF-H-005).
        assert_eq!(message_of(&t, h), first);
        assert!(t.journal.events().iter().all(|e| matches!(
            e,
            Event::IrteWrite { index: 1, .. }
                | Event::UpdateRoute { .. }
                | Event::PrepareAffinity { .. }
                | Event::CommitAffinity { .. }
        )));
        t.a.deactivate(&mut t.host, &t.mem_a, h, 0).unwrap();
        let m = message(
            &t.a.activate(&mut t.host, &t.mem_a, h, 0, A_APIC[1], 0x44)
                .unwrap(),
        );
        assert_eq!(m, first, "deactivate -> activate");
        t.a.deactivate(&mut t.host, &t.mem_a, h, 0).unwrap();
        let m = message(&t.a.reserve(&mut t.host, &t.mem_a, h, 0).unwrap());
        assert_eq!(m, first, "deactivate -> reserve");
        assert_eq!(
            first,
            RemappableMsi {
                handle: 1,
                shv: true,
                subhandle: 0
            }
            .encode()
        );
    }
}

/// Inject a failure at one backend step of ACTIVATE or SET_AFFINITY and check that the call
/// fails with the mapped status, both VMs and every backend are exactly as before, and the
/// same call succeeds once the failure is gone.
#[test]
fn failure_injection_at_each_backend_step_unwinds_everything() {
    let errors = [
        BackendError::VectorsExhausted { cpu: 1 },
        BackendError::Os {
            op: BackendOp::StartIrq,
            errno: 5,
        },
        BackendError::RoutesExhausted { capacity: 8 },
    ];
    for mode in [IrMode::Posted, IrMode::Remapped] {
        for op in BackendOp::ALL {
            for error in errors {
                let mut t = Two::new(mode, 256);
                // B has live state that must not be disturbed either.
                let hb =
                    t.b.allocate(&mut t.host, &t.mem_b, B_DEV, StorageKind::MSI, 2, 0)
                        .unwrap()
                        .handle
                        .get();
                t.b.activate(&mut t.host, &t.mem_b, hb, 1, B_APIC[1], 0x70)
                    .unwrap();
                let h =
                    t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::MSI, 1, 0)
                        .unwrap()
                        .handle
                        .get();
                let affinity = matches!(op, BackendOp::UpdateRoute | BackendOp::PrepareAffinity);
                if affinity {
                    t.a.activate(&mut t.host, &t.mem_a, h, 1, A_APIC[0], 0x41)
                        .unwrap();
                }
                match op {
                    BackendOp::AddRoute | BackendOp::UpdateRoute => {
                        t.host.routing_mut().fail_next(op, 1, error)
                    }
                    BackendOp::StartIrq | BackendOp::PrepareAffinity => {
                        t.host.irqs_mut().fail_next(op, 1, error)
                    }
                }
                let before = t.all_state();
                let result = if affinity {
                    t.a.set_affinity(&mut t.host, &t.mem_a, h, 1, A_APIC[1], 0x42)
                } else {
                    t.a.activate(&mut t.host, &t.mem_a, h, 1, A_APIC[1], 0x42)
                        .map(|_| ())
                };
                assert_eq!(result, Err(error.status()), "{mode:?} {op:?} {error:?}");
                assert_eq!(t.all_state(), before, "{mode:?} {op:?} {error:?}");
                assert_eq!(
                    t.host.routing().invalid_calls() + t.host.irqs().invalid_calls(),
                    0
                );
                assert_eq!(t.host.table().invalid_writes(), 0);
                // The injected failure was consumed; the same call now succeeds.
                let retry = if affinity {
                    t.a.set_affinity(&mut t.host, &t.mem_a, h, 1, A_APIC[1], 0x42)
                } else {
                    t.a.activate(&mut t.host, &t.mem_a, h, 1, A_APIC[1], 0x42)
                        .map(|_| ())
                };
                assert_eq!(retry, Ok(()), "{mode:?} {op:?}");
            }
        }
    }
}

#[test]
fn failure_injection_on_one_vector_of_a_block_leaves_the_others() {
    let mut t = Two::new(IrMode::Posted, 256);
    let h =
        t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::MSI, 2, 0)
            .unwrap()
            .handle
            .get();
    for sub in 0..2 {
        t.a.activate(&mut t.host, &t.mem_a, h, sub, A_APIC[0], 0x41 + sub as u8)
            .unwrap();
    }
    t.host.irqs_mut().fail_next(
        BackendOp::StartIrq,
        2,
        BackendError::Os {
            op: BackendOp::StartIrq,
            errno: 16,
        },
    );
    let before = t.all_state();
    for sub in 2..4 {
        assert_eq!(
            t.a.activate(&mut t.host, &t.mem_a, h, sub, A_APIC[1], 0x60)
                .map(|_| ()),
            Err(Status::BACKEND_FAILURE)
        );
    }
    assert_eq!(t.all_state(), before);
    assert_eq!(t.host.routing().routes_of(t.a.vm), 2);
    assert_eq!(t.host.irqs().failures_pending(BackendOp::StartIrq), 0);
}

#[test]
fn vir_sec_h_002_only_active_vectors_have_present_entries() {
    let mut t = Two::new(IrMode::Remapped, 64);
    let h =
        t.a.allocate(&mut t.host, &t.mem_a, A_DEV, StorageKind::MSI, 2, 0)
            .unwrap()
            .handle
            .get();
    t.a.activate(&mut t.host, &t.mem_a, h, 0, A_APIC[0], 0x41)
        .unwrap();
    t.a.reserve(&mut t.host, &t.mem_a, h, 1).unwrap();
    t.a.activate(&mut t.host, &t.mem_a, h, 2, A_APIC[1], 0x42)
        .unwrap();
    t.a.deactivate(&mut t.host, &t.mem_a, h, 2).unwrap();
    let present: Vec<bool> = (0..4)
        .map(|i| t.host.table().entry(i).unwrap() & 1 == 1)
        .collect();
    assert_eq!(present, vec![true, false, false, false]);
    let fpd: Vec<bool> = (0..4)
        .map(|i| t.host.table().entry(i).unwrap() & 2 == 2)
        .collect();
    assert_eq!(
        fpd,
        vec![false, true, false, false],
        "the reservation blocks silently"
    );
    assert_eq!(mock_state(&t.host).irqs.len(), 1);
}
