//! End-to-end scenarios on the public API: a host programs the platform the way a vIR host would
//! (routes, irqfds, host IRQs, IRTEs, posted descriptors), devices fire, and the outcome is
//! checked at the vCPUs' local APICs.

use proptest::prelude::*;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::{
    Irta, Irte, IrteError, PostedIrte, RemappableMsi, RemappedIrte, Svt, VtdFaultReason,
};
use vir_platform::device::{DeviceConfig, MsiConfig, StorageRegion};
use vir_platform::iommu::{IommuError, RemapFault};
use vir_platform::kvm::{GsiRoute, KvmError, VmConfig};
use vir_platform::lapic::Acceptance;
use vir_platform::machine::POSTED_INTR_VECTOR;
use vir_platform::pcpu::{PcpuError, VectorError};
use vir_platform::vfio::{HostIrqKey, VfioError};
use vir_platform::{
    DeviceId, DropReason, EventFdId, FireOutcome, Gsi, GuestApicId, HostApicId, Machine,
    MachineConfig, Notification, PostedDelivery, RequesterId, StorageKind, StorageSlot, VcpuRef,
    VmId,
};
use vm_memory::{Bytes, GuestAddress};

const VM1: VmId = VmId(1);
const VM2: VmId = VmId(2);
const RID_A: RequesterId = RequesterId::from_bdf(3, 0, 0);
const RID_B: RequesterId = RequesterId::from_bdf(4, 0, 0);
const A0: VcpuRef = VcpuRef::new(VM1, GuestApicId(0));
const A1: VcpuRef = VcpuRef::new(VM1, GuestApicId(260));
const B0: VcpuRef = VcpuRef::new(VM2, GuestApicId(0));
const P0: HostApicId = HostApicId(0);
const P1: HostApicId = HostApicId(300);

struct Setup {
    m: Machine,
    a: DeviceId,
    b: DeviceId,
}

fn setup_with(config: MachineConfig) -> Setup {
    let mut m = Machine::new(&config).unwrap();
    m.create_vm(
        VM1,
        &VmConfig {
            memory: vec![(0, 0x10_0000)],
            vcpus: vec![(A0.apic_id, P0), (A1.apic_id, P1)],
        },
    )
    .unwrap();
    m.create_vm(
        VM2,
        &VmConfig {
            memory: vec![(0, 0x1_0000)],
            vcpus: vec![(B0.apic_id, P0)],
        },
    )
    .unwrap();
    let dev = |rid| {
        DeviceConfig::new(rid)
            .with_msi(MsiConfig {
                vectors_log2: 3,
                per_vector_masking: true,
                address_64bit: true,
            })
            .with_msix(16)
            .with_ims_device(2048)
            .with_ims_system(4)
    };
    let a = m.add_device(&dev(RID_A)).unwrap();
    let b = m.add_device(&dev(RID_B)).unwrap();
    m.attach_device(a, Some(VM1)).unwrap();
    m.attach_device(b, Some(VM2)).unwrap();
    // A host offering vIR: remapping on, compatibility format blocked (VIR-DISC-H-001).
    m.iommu_mut().enable_remapping(true);
    m.iommu_mut().set_cfi(false);
    for d in [a, b] {
        m.set_msix_control(d, true, false).unwrap();
        for i in 0..16 {
            m.set_masked(d, StorageSlot::msix(i), false).unwrap();
        }
    }
    Setup { m, a, b }
}

fn config() -> MachineConfig {
    let mut c = MachineConfig::new(0);
    c.pcpus = vec![P0, HostApicId(1), P1];
    c
}

fn setup() -> Setup {
    setup_with(config())
}

fn remapped_irte(sid: RequesterId, vector: u8, dest: HostApicId) -> Irte {
    Irte::Remapped(RemappedIrte {
        present: true,
        fpd: false,
        dest_mode_logical: false,
        redirection_hint: false,
        trigger_level: false,
        delivery_mode: 0,
        avail: 0,
        vector,
        dest: dest.0,
        sid: sid.0,
        sq: 0,
        svt: Svt::VerifySid,
    })
}

fn handle_msg(handle: u16) -> MsiMessage {
    RemappableMsi {
        handle,
        shv: true,
        subhandle: 0,
    }
    .encode()
}

/// What a host does to activate one remapped interrupt (B14 a, b, c): route + irqfd, host IRQ,
/// then the IRTE; returns the message for the storage.
#[allow(clippy::too_many_arguments)]
fn activate_remapped(
    m: &mut Machine,
    rid: RequesterId,
    slot: StorageSlot,
    index: u16,
    target: VcpuRef,
    vector: u8,
    pcpu: HostApicId,
    n: u32,
) -> MsiMessage {
    let (gsi, efd) = (Gsi(n), EventFdId(n));
    m.kvm_mut()
        .set_route(
            target.vm,
            gsi,
            GsiRoute {
                dest: target.apic_id,
                vector,
            },
        )
        .unwrap();
    m.kvm_mut().assign_irqfd(target.vm, efd, gsi).unwrap();
    let irq = m
        .start_host_irq(
            HostIrqKey {
                requester_id: rid,
                slot,
            },
            pcpu,
            efd,
        )
        .unwrap();
    m.iommu_mut()
        .write_entry(index, &remapped_irte(rid, irq.vector, pcpu))
        .unwrap();
    m.iommu_mut().invalidate_entry(index);
    handle_msg(index)
}

fn lapic_irr(m: &Machine, v: VcpuRef) -> Vec<u8> {
    m.kvm().vcpu(v).unwrap().lapic().irr_vectors()
}

// VIR-ACT-H-006, VIR-FMT-H-001, VIR-FMT-H-003: remapped MSI-X end to end.
#[test]
fn msix_remapped_end_to_end_vir_act_h_006() {
    let Setup { mut m, a, .. } = setup();
    let slot = StorageSlot::msix(5);
    let msg = activate_remapped(&mut m, RID_A, slot, 40, A1, 0x61, P1, 1);
    m.write_message(a, slot, msg).unwrap();
    assert_eq!(
        m.fire(a, slot),
        Ok(FireOutcome::Delivered {
            vcpu: A1,
            vector: 0x61,
            acceptance: Acceptance::Pending
        })
    );
    assert_eq!(lapic_irr(&m, A1), vec![0x61]);
    // The host vector landed on the x2APIC CPU beyond 255.
    assert_eq!(m.pcpus().get(P1).unwrap().received(0x20), 1);
    let log: Vec<_> = m.log().collect();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].message, Some(msg));
    assert_eq!(log[0].requester_id, RID_A);
    // The guest acknowledges and EOIs.
    let lapic = m.kvm_mut().vcpu_mut(A1).unwrap().lapic_mut();
    assert_eq!(lapic.acknowledge(), Some(0x61));
    assert_eq!(lapic.eoi(), Some(0x61));
}

// VIR-AFF-H-004, VIR-AFF-H-005, VIR-AFF-G-001, B12: an affinity change rewrites route, host IRQ
// and IRTE — never the device storage — and the next interrupt arrives at the new target.
#[test]
fn affinity_change_writes_no_storage_vir_aff_h_005() {
    let Setup { mut m, a, .. } = setup();
    let slot = StorageSlot::ims_device(2000);
    let msg = activate_remapped(&mut m, RID_A, slot, 7, A0, 0x41, P0, 1);
    m.write_message(a, slot, msg).unwrap();
    m.set_masked(a, slot, false).unwrap();
    assert!(matches!(
        m.fire(a, slot),
        Ok(FireOutcome::Delivered {
            vcpu: A0,
            vector: 0x41,
            ..
        })
    ));
    let writes = StorageKind::ALL.map(|k| m.device(a).unwrap().storage_writes(k));

    // Host side of SET_AFFINITY: route, physical IRQ, IRTE low half (one store), invalidate.
    m.kvm_mut()
        .set_route(
            VM1,
            Gsi(1),
            GsiRoute {
                dest: A1.apic_id,
                vector: 0x42,
            },
        )
        .unwrap();
    let key = HostIrqKey {
        requester_id: RID_A,
        slot,
    };
    let irq = m.set_host_irq_affinity(key, P1).unwrap();
    let raw = remapped_irte(RID_A, irq.vector, P1)
        .encode(m.iommu().apic_mode())
        .unwrap();
    m.iommu_mut().write_irte_low(7, raw as u64).unwrap();
    m.iommu_mut().invalidate_entry(7);

    assert_eq!(
        m.fire(a, slot),
        Ok(FireOutcome::Delivered {
            vcpu: A1,
            vector: 0x42,
            acceptance: Acceptance::Pending
        })
    );
    assert_eq!(
        StorageKind::ALL.map(|k| m.device(a).unwrap().storage_writes(k)),
        writes
    );
    assert_eq!(m.stored_message(a, slot), Ok(msg));
    // The old CPU's vector was returned.
    assert_eq!(m.pcpus().get(P0).unwrap().vectors().in_use(), 0);
}

// The interrupt entry cache: a host that rewrites an IRTE but forgets to invalidate keeps the
// old target in force.
#[test]
fn forgotten_invalidation_keeps_old_entry() {
    let Setup { mut m, a, .. } = setup();
    let slot = StorageSlot::msix(0);
    let msg = activate_remapped(&mut m, RID_A, slot, 3, A0, 0x41, P0, 1);
    m.write_message(a, slot, msg).unwrap();
    // Retarget the IRTE to a vector with no host IRQ, without invalidating.
    m.iommu_mut()
        .write_entry(3, &remapped_irte(RID_A, 0x99, P0))
        .unwrap();
    assert!(matches!(
        m.fire(a, slot),
        Ok(FireOutcome::Delivered { vector: 0x41, .. })
    ));
    m.iommu_mut().invalidate_all();
    assert_eq!(
        m.fire(a, slot),
        Ok(FireOutcome::Dropped(DropReason::NoHostIrq {
            pcpu: P0,
            vector: 0x99
        }))
    );
}

// Multi-vector MSI is one handle plus sub-handles (`spec/vir-v1.md` §8.6), VIR-ACT-H-009: one message
// for the block; vector i arrives through IRTE base + i.
#[test]
fn msi_block_one_message_subhandle_per_vector_vir_act_h_009() {
    let Setup { mut m, a, .. } = setup();
    let base = 16u16;
    let mut msg = None;
    for i in 0..4u16 {
        let slot = StorageSlot::msi(u32::from(i));
        let target = if i % 2 == 0 { A0 } else { A1 };
        let pcpu = if i % 2 == 0 { P0 } else { P1 };
        let mm = activate_remapped(
            &mut m,
            RID_A,
            slot,
            base + i,
            target,
            0x50 + i as u8,
            pcpu,
            u32::from(i) + 10,
        );
        msg.get_or_insert(mm);
    }
    // The host returns the base handle with SHV = 1 and data 0 for every vector.
    m.write_message(a, StorageSlot::msi(0), handle_msg(base))
        .unwrap();
    assert_eq!(msg, Some(handle_msg(base)));
    m.set_msi_control(a, true, 2).unwrap();
    for i in 0..4u32 {
        assert_eq!(
            m.stored_message(a, StorageSlot::msi(i)).unwrap().data,
            i,
            "sub-handle of vector {i}"
        );
        let want = if i % 2 == 0 { A0 } else { A1 };
        assert_eq!(
            m.fire(a, StorageSlot::msi(i)),
            Ok(FireOutcome::Delivered {
                vcpu: want,
                vector: 0x50 + i as u8,
                acceptance: Acceptance::Pending
            })
        );
    }
    assert_eq!(lapic_irr(&m, A0), vec![0x50, 0x52]);
    assert_eq!(lapic_irr(&m, A1), vec![0x51, 0x53]);
    // MSI per-vector mask: pending, then delivered on unmask.
    m.set_masked(a, StorageSlot::msi(3), true).unwrap();
    assert_eq!(m.fire(a, StorageSlot::msi(3)), Ok(FireOutcome::Masked));
    assert_eq!(m.device(a).unwrap().pending(StorageSlot::msi(3)), Ok(true));
    let out = m.set_masked(a, StorageSlot::msi(3), false).unwrap();
    assert_eq!(
        out,
        vec![FireOutcome::Delivered {
            vcpu: A1,
            vector: 0x53,
            acceptance: Acceptance::Coalesced
        }]
    );
}

// MSI-X per-entry mask and function mask: pending bit, fired on unmask (B16: masking without
// trapping storage).
#[test]
fn msix_mask_pending_fires_on_unmask() {
    let Setup { mut m, a, .. } = setup();
    let slot = StorageSlot::msix(9);
    let msg = activate_remapped(&mut m, RID_A, slot, 100, A0, 0x70, P0, 1);
    m.write_message(a, slot, msg).unwrap();
    m.set_masked(a, slot, true).unwrap();
    assert_eq!(m.fire(a, slot), Ok(FireOutcome::Masked));
    assert!(lapic_irr(&m, A0).is_empty());
    assert_eq!(m.device(a).unwrap().pending(slot), Ok(true));
    // Unmask with a raw vector-control write.
    let out = m
        .write_storage(a, StorageRegion::MsixTable, 9 * 16 + 12, &[0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        out,
        vec![FireOutcome::Delivered {
            vcpu: A0,
            vector: 0x70,
            acceptance: Acceptance::Pending
        }]
    );
    assert_eq!(m.device(a).unwrap().pending(slot), Ok(false));
    // Function mask.
    m.set_msix_control(a, true, true).unwrap();
    assert_eq!(m.fire(a, slot), Ok(FireOutcome::Masked));
    let out = m.set_msix_control(a, true, false).unwrap();
    assert!(matches!(
        out.as_slice(),
        [FireOutcome::Delivered { vector: 0x70, .. }]
    ));
}

// IMS in system memory: the message sits in a queue context in guest memory and the device reads
// it by DMA when it fires — also when the guest rewrote it behind the storage API's back.
#[test]
fn ims_system_memory_message_read_through_guest_memory() {
    let Setup { mut m, a, .. } = setup();
    let slot = StorageSlot::ims_system(2);
    let msg = activate_remapped(&mut m, RID_A, slot, 200, A1, 0x80, P1, 1);
    m.set_ims_queue_context(a, 2, 0x8000).unwrap();
    m.write_message(a, slot, msg).unwrap();
    let mem = m.guest_memory(VM1).unwrap();
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(0x8000)).unwrap(),
        msg.address_lo
    );
    assert_eq!(
        m.fire(a, slot),
        Ok(FireOutcome::Delivered {
            vcpu: A1,
            vector: 0x80,
            acceptance: Acceptance::Pending
        })
    );
    // The guest rewrites the data word straight in memory to a sub-handle 1: the next fire reads
    // it and lands on IRTE 201, which is not present.
    m.guest_memory(VM1)
        .unwrap()
        .write_obj(1u32, GuestAddress(0x8008))
        .unwrap();
    assert_eq!(
        m.fire(a, slot),
        Ok(FireOutcome::Faulted(RemapFault {
            reason: VtdFaultReason::NOT_PRESENT,
            index: Some(201),
            recorded: true
        }))
    );
    assert_eq!(
        m.device(a).unwrap().storage_writes(StorageKind::ImsSystem),
        1
    );
}

// Posted mode (VIR-FMT-H-003): PIR, ON, SN and the notification; PIR → IRR when the vCPU
// processes it.
#[test]
fn posted_pir_on_sn_notification_and_sync_vir_fmt_h_003() {
    let Setup { mut m, a, .. } = setup();
    let pda = m.setup_posted_descriptor(A1, POSTED_INTR_VECTOR).unwrap();
    let slot = StorageSlot::msix(1);
    let posted = |vector| {
        Irte::Posted(PostedIrte {
            present: true,
            fpd: false,
            avail: 0,
            urgent: false,
            vector,
            pda,
            sid: RID_A.0,
            sq: 0,
            svt: Svt::VerifySid,
        })
    };
    m.iommu_mut().write_entry(50, &posted(0x91)).unwrap();
    m.iommu_mut().invalidate_entry(50);
    m.write_message(a, slot, handle_msg(50)).unwrap();
    let expect = |vector, notification| {
        Ok(FireOutcome::Posted(PostedDelivery {
            index: 50,
            pda,
            vector,
            urgent: false,
            owner: Some(A1),
            notification,
        }))
    };
    assert_eq!(
        m.fire(a, slot),
        expect(
            0x91,
            Notification::Sent {
                pcpu: P1,
                vector: POSTED_INTR_VECTOR
            }
        )
    );
    assert_eq!(m.fire(a, slot), expect(0x91, Notification::Outstanding));
    assert_eq!(m.pcpus().get(P1).unwrap().received(POSTED_INTR_VECTOR), 1);
    assert!(lapic_irr(&m, A1).is_empty());
    let d = m.posted().descriptor(pda).unwrap();
    assert!(d.on() && d.pir_bit(0x91));
    // The vCPU processes the notification.
    assert_eq!(m.sync_posted(A1), Ok(vec![0x91]));
    assert_eq!(lapic_irr(&m, A1), vec![0x91]);
    assert!(!m.posted().descriptor(pda).unwrap().on());
    // Affinity change in posted mode: the vCPU moves; NDST follows; SN suppresses while it is
    // descheduled.
    m.migrate_vcpu(A1, P0).unwrap();
    m.posted_mut().set_sn(pda, true).unwrap();
    assert_eq!(m.fire(a, slot), expect(0x91, Notification::Suppressed));
    m.posted_mut().set_sn(pda, false).unwrap();
    m.iommu_mut().write_entry(50, &posted(0x92)).unwrap();
    m.iommu_mut().invalidate_entry(50);
    assert_eq!(
        m.fire(a, slot),
        expect(
            0x92,
            Notification::Sent {
                pcpu: P0,
                vector: POSTED_INTR_VECTOR
            }
        )
    );
    assert_eq!(m.sync_all_posted(), vec![(A1, vec![0x91, 0x92])]);
    assert_eq!(m.sync_all_posted(), vec![]);
    assert_eq!(m.delivered_to_vm(VM1), 4);
}

// VIR-DISC-H-001 and B5/B6: with remapping on and CFI clear a compatibility-format message is
// blocked (0x25); with remapping off (the legacy scheme without host IR) it goes straight to the
// host CPU and vector it names.
#[test]
fn compat_format_blocked_only_with_remapping_vir_disc_h_001() {
    let Setup { mut m, a, .. } = setup();
    let slot = StorageSlot::msix(2);
    m.kvm_mut()
        .set_route(
            VM1,
            Gsi(1),
            GsiRoute {
                dest: A0.apic_id,
                vector: 0x33,
            },
        )
        .unwrap();
    m.kvm_mut().assign_irqfd(VM1, EventFdId(1), Gsi(1)).unwrap();
    let irq = m
        .start_host_irq(
            HostIrqKey {
                requester_id: RID_A,
                slot,
            },
            HostApicId(1),
            EventFdId(1),
        )
        .unwrap();
    let compat = MsiMessage::new(0xFEE0_1000, 0, u32::from(irq.vector));
    m.write_message(a, slot, compat).unwrap();
    assert_eq!(
        m.fire(a, slot),
        Ok(FireOutcome::Faulted(RemapFault {
            reason: VtdFaultReason::COMPAT_BLOCKED,
            index: None,
            recorded: true
        }))
    );
    let faults: Vec<_> = m.iommu().faults().copied().collect();
    assert_eq!(faults.len(), 1);
    assert_eq!(
        (faults[0].requester_id, faults[0].data),
        (RID_A, u32::from(irq.vector))
    );
    m.iommu_mut().enable_remapping(false);
    assert_eq!(
        m.fire(a, slot),
        Ok(FireOutcome::Delivered {
            vcpu: A0,
            vector: 0x33,
            acceptance: Acceptance::Pending
        })
    );
}

// VIR-ACT-H-006 (RESERVE): a reserved entry is not present with FPD = 1 — interrupts are
// blocked silently, nothing is recorded.
#[test]
fn reserved_entry_blocks_silently_with_fpd() {
    let Setup { mut m, a, .. } = setup();
    let slot = StorageSlot::msix(4);
    m.iommu_mut().write_irte(60, 0b10).unwrap();
    m.iommu_mut().invalidate_entry(60);
    m.write_message(a, slot, handle_msg(60)).unwrap();
    assert_eq!(
        m.fire(a, slot),
        Ok(FireOutcome::Faulted(RemapFault {
            reason: VtdFaultReason::NOT_PRESENT,
            index: Some(60),
            recorded: false
        }))
    );
    assert_eq!(m.iommu().faults().count(), 0);
    assert_eq!(m.iommu().stats().faults_suppressed, 1);
}

// VIR-SEC-H-001: a device behind a PCIe-to-PCI bridge is seen with the bridge's requester id;
// an SVT = 2 bus range (start bus in the high byte, Linux) accepts it.
#[test]
fn bridged_device_bus_range_vir_sec_h_001() {
    let Setup { mut m, .. } = setup();
    let bridged = m
        .add_device(
            &DeviceConfig::new(RequesterId::from_bdf(6, 1, 0))
                .with_source_id(RequesterId::from_bdf(6, 0, 0))
                .with_msix(1),
        )
        .unwrap();
    m.set_msix_control(bridged, true, false).unwrap();
    m.set_masked(bridged, StorageSlot::msix(0), false).unwrap();
    let slot = StorageSlot::msix(0);
    let msg = activate_remapped(
        &mut m,
        RequesterId::from_bdf(6, 1, 0),
        slot,
        70,
        A0,
        0x44,
        P0,
        1,
    );
    m.write_message(bridged, slot, msg).unwrap();
    // SVT = 1 with the device's own id: the bridge id fails the check.
    assert_eq!(
        m.fire(bridged, slot),
        Ok(FireOutcome::Faulted(RemapFault {
            reason: VtdFaultReason::SID_CHECK_FAILED,
            index: Some(70),
            recorded: true
        }))
    );
    let Irte::Remapped(mut e) =
        Irte::decode(m.iommu().irte(70).unwrap(), m.iommu().apic_mode()).unwrap()
    else {
        panic!("remapped entry expected");
    };
    e.svt = Svt::VerifyBus;
    e.sid = 0x0606; // buses 6..=6
    m.iommu_mut().write_entry(70, &Irte::Remapped(e)).unwrap();
    m.iommu_mut().invalidate_entry(70);
    assert!(matches!(
        m.fire(bridged, slot),
        Ok(FireOutcome::Delivered {
            vcpu: A0,
            vector: 0x44,
            ..
        })
    ));
}

// xAPIC mode (IRTA.EIME = 0): the IRTE destination is in DST bits 15:8.
#[test]
fn xapic_mode_destination_placement() {
    let mut c = config();
    c.pcpus = vec![P0, HostApicId(1), HostApicId(200)];
    c.irta = Irta {
        size_s: 7,
        eime: false,
        base: 0,
    };
    let mut m = Machine::new(&c).unwrap();
    m.create_vm(
        VM1,
        &VmConfig {
            memory: vec![(0, 0x1000)],
            vcpus: vec![(A0.apic_id, HostApicId(200))],
        },
    )
    .unwrap();
    m.iommu_mut().enable_remapping(true);
    let slot = StorageSlot::msix(0);
    let msg = activate_remapped(&mut m, RID_A, slot, 9, A0, 0x45, HostApicId(200), 1);
    assert_eq!((m.iommu().irte(9).unwrap() >> 32) as u32, 200 << 8);
    assert_eq!(
        m.inject_write(RID_A, msg),
        FireOutcome::Delivered {
            vcpu: A0,
            vector: 0x45,
            acceptance: Acceptance::Pending
        }
    );
    // A host that cannot place an x2APIC id in xAPIC mode gets an encode error, not a bad IRTE.
    assert_eq!(
        m.iommu_mut()
            .write_entry(9, &remapped_irte(RID_A, 0x20, P1)),
        Err(IommuError::Encode(IrteError::XApicDestinationTooLarge(300)))
    );
    // Posted descriptors too: NDST in bits 15:8.
    let pda = m.setup_posted_descriptor(A0, POSTED_INTR_VECTOR).unwrap();
    assert_eq!(m.posted().descriptor(pda).unwrap().ndst_raw(), 200 << 8);
}

// VIR-ACT-H-006: host vectors run out per physical CPU (VECTORS_EXHAUSTED for the host).
#[test]
fn host_vector_exhaustion_vir_act_h_006() {
    let mut c = config();
    c.vectors_per_pcpu = 2;
    let Setup { mut m, .. } = setup_with(c);
    let key = |i| HostIrqKey {
        requester_id: RID_A,
        slot: StorageSlot::msix(i),
    };
    assert_eq!(
        m.start_host_irq(key(0), P0, EventFdId(0)).map(|i| i.vector),
        Ok(0x20)
    );
    assert_eq!(
        m.start_host_irq(key(1), P0, EventFdId(1)).map(|i| i.vector),
        Ok(0x21)
    );
    assert_eq!(
        m.start_host_irq(key(2), P0, EventFdId(2)),
        Err(VfioError::Pcpu(PcpuError::Vector {
            pcpu: P0,
            error: VectorError::Exhausted { capacity: 2 }
        }))
    );
    // Another CPU still has vectors; freeing one makes room again.
    assert_eq!(
        m.start_host_irq(key(2), P1, EventFdId(2)).map(|i| i.pcpu),
        Ok(P1)
    );
    m.stop_host_irq(key(0)).unwrap();
    assert_eq!(
        m.start_host_irq(key(3), P0, EventFdId(3)).map(|i| i.vector),
        Ok(0x20)
    );
}

// VIR-ACT-H-007: failure injection on the backends; a failed step leaves earlier state for the
// caller to unwind and changes nothing itself.
#[test]
fn backend_failure_injection_vir_act_h_007() {
    let Setup { mut m, .. } = setup();
    m.kvm_mut().fail_next_route_sets(1);
    m.vfio_mut().fail_next_irq_starts(1);
    m.vfio_mut().fail_next_affinity_changes(1);
    let route = GsiRoute {
        dest: A0.apic_id,
        vector: 0x30,
    };
    assert_eq!(
        m.kvm_mut().set_route(VM1, Gsi(1), route),
        Err(KvmError::InjectedRouteFailure {
            vm: VM1,
            gsi: Gsi(1)
        })
    );
    assert_eq!(m.kvm_mut().set_route(VM1, Gsi(1), route), Ok(None));
    let key = HostIrqKey {
        requester_id: RID_A,
        slot: StorageSlot::msix(0),
    };
    assert_eq!(
        m.start_host_irq(key, P0, EventFdId(1)),
        Err(VfioError::InjectedStartFailure(key))
    );
    assert_eq!(m.pcpus().get(P0).unwrap().vectors().in_use(), 0);
    m.start_host_irq(key, P0, EventFdId(1)).unwrap();
    assert_eq!(
        m.set_host_irq_affinity(key, P1),
        Err(VfioError::InjectedAffinityFailure(key))
    );
    assert_eq!(m.vfio().irq(key).map(|i| i.pcpu), Some(P0));
    assert_eq!(m.set_host_irq_affinity(key, P1).map(|i| i.pcpu), Ok(P1));
}

/// VM1's device A has live remapped and posted interrupts; VM2's device B gets forged storage.
fn forged_setup() -> Setup {
    let mut s = setup();
    let m = &mut s.m;
    for i in 0..8u16 {
        let slot = StorageSlot::msix(u32::from(i));
        activate_remapped(m, RID_A, slot, i * 3, A0, 0x40 + i as u8, P0, u32::from(i));
    }
    let pda = m.setup_posted_descriptor(A1, POSTED_INTR_VECTOR).unwrap();
    m.iommu_mut()
        .write_entry(
            1,
            &Irte::Posted(PostedIrte {
                present: true,
                fpd: false,
                avail: 0,
                urgent: false,
                vector: 0x90,
                pda,
                sid: RID_A.0,
                sq: 0,
                svt: Svt::VerifySid,
            }),
        )
        .unwrap();
    m.iommu_mut().invalidate_all();
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    // B17, VIR-SEC-H-001, VIR-SEC-H-003: whatever address/data VM2 stores in its device's
    // storage, its interrupts never reach VM1's vCPUs: the IRTEs of VM1 carry device A's source
    // id, so a forged message naming them faults (0x26).
    #[test]
    fn forged_storage_never_reaches_other_vm_vir_sec_h_003(
        writes in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>(), 0u32..16), 1..24),
    ) {
        let Setup { mut m, b, .. } = forged_setup();
        for (lo, hi, data, fee, entry) in writes {
            // Half the addresses are in the interrupt window, remappable, with a small handle,
            // so they hit VM1's present entries.
            let lo = if fee { 0xFEE0_0018 | ((lo & 0x7) << 5) } else { lo };
            let hi = if fee { 0 } else { hi };
            let data = if fee { data & 0x7 } else { data };
            let slot = StorageSlot::msix(entry);
            m.write_message(b, slot, MsiMessage::new(lo, hi, data)).unwrap();
            let out = m.fire(b, slot).unwrap();
            match out {
                FireOutcome::Faulted(_) | FireOutcome::Dropped(_) => {}
                other => prop_assert!(false, "forged write delivered: {:?}", other),
            }
            // The same as a raw write with device B's requester id.
            let out = m.inject_write(RID_B, MsiMessage::new(lo, hi, data));
            prop_assert!(matches!(out, FireOutcome::Faulted(_) | FireOutcome::Dropped(_)), "{:?}", out);
        }
        prop_assert_eq!(m.delivered_to_vm(VM1), 0);
        prop_assert_eq!(m.kvm().vcpu(A0).unwrap().lapic().total_accepted(), 0);
        prop_assert_eq!(m.kvm().vcpu(A1).unwrap().lapic().total_accepted(), 0);
        prop_assert!(m.posted().descriptor(m.posted().pda_of(A1).unwrap()).unwrap().pir().is_empty());
        // And device A's own interrupts still work.
        let a_msg = handle_msg(3);
        prop_assert_eq!(
            m.inject_write(RID_A, a_msg),
            FireOutcome::Delivered { vcpu: A0, vector: 0x41, acceptance: Acceptance::Pending }
        );
    }
}

// The same guarantee, for fault reason 0x26 specifically, on a hand-made forged message that
// names VM1's entry exactly.
#[test]
fn forged_message_naming_other_vms_irte_faults_0x26_vir_sec_h_001() {
    let Setup { mut m, b, .. } = forged_setup();
    let slot = StorageSlot::ims_device(7);
    m.write_message(b, slot, handle_msg(3)).unwrap();
    m.set_masked(b, slot, false).unwrap();
    assert_eq!(
        m.fire(b, slot),
        Ok(FireOutcome::Faulted(RemapFault {
            reason: VtdFaultReason::SID_CHECK_FAILED,
            index: Some(3),
            recorded: true
        }))
    );
    let f = m.iommu().faults().last().copied().unwrap();
    assert_eq!(
        (f.requester_id, f.index, f.address),
        (RID_B, Some(3), u64::from(handle_msg(3).address_lo))
    );
    assert_eq!(m.kvm().vcpu(B0).unwrap().lapic().total_accepted(), 0);
}
