//! The legacy scheme through the public API: trap-and-emulate of MSI and MSI-X, the emulated
//! remapping unit, the switch to vIR and back (spec §4.4, §4.5, §9).

use vir_abi::feature::Features;
use vir_abi::hw::ApicMode;
use vir_abi::hw::msi::{CompatMsi, DeliveryMode, MsiError, MsiMessage};
use vir_abi::hw::vtd::{Irta, PostedIrte, RemappableMsi, RemappedIrte, Svt, VtdFaultReason};
use vir_abi::status::Status;
use vir_abi::wire::StorageKind;
use vir_host::legacy::viommu::{GCMD_CFI, GCMD_IRE, GCMD_SIRTP};
use vir_host::testing::{
    Caller, MockDeviceStorage, MockHost, MockState, StorageWrite, guest_ram, mock_host, mock_state,
};
use vir_host::{
    BackendError, BackendOp, DeviceConfig, Gsi, HostConfig, IrMode, IrqSource, LegacyConfig,
    LegacySetupError, LegacySlot, MsiRefusal, MsiRegister, MsixField, Quotas, RouteTarget,
    SourceValidation, StorageSizes, TrapError, TrapKind, TrapOutcome, TrapRead, TrapWrite,
    VcpuConfig, VectorEvent, ViommuWrite, VirtualTarget, VmConfig, VmId, VmState,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const DEV: u32 = 0x0000_0010;
const RID: u16 = 0x8010;
const DEV2: u32 = 0x0000_0018;
const RID2: u16 = 0x8018;
const APIC: [u32; 4] = [0, 1, 0x100, 0x1234];
const IRT_GPA: u64 = 0x10000;

fn pda(i: usize) -> u64 {
    0x10_0000 + 0x40 * i as u64
}

fn vm_config() -> VmConfig {
    VmConfig {
        vcpus: APIC
            .iter()
            .enumerate()
            .map(|(i, &apic_id)| VcpuConfig {
                apic_id,
                pda: pda(i),
                pcpu: i as u32,
            })
            .collect(),
        devices: vec![
            DeviceConfig {
                device_id: DEV,
                requester_id: RID,
                source_validation: SourceValidation::RequesterId,
                storage: StorageSizes {
                    msi_vectors: 8,
                    msix_entries: 16,
                    ..Default::default()
                },
            },
            DeviceConfig {
                device_id: DEV2,
                requester_id: RID2,
                source_validation: SourceValidation::RequesterId,
                storage: StorageSizes {
                    msix_entries: 4,
                    ..Default::default()
                },
            },
        ],
        quotas: Quotas::default(),
        guest_writable: vir_host::GuestWritable::AllRam,
    }
}

/// One VM on a mock host, its memory, a vIR caller and the physical storage.
struct Lx {
    host: MockHost,
    mem: GuestMemoryMmap<()>,
    vm: VmId,
    g: Caller,
    st: MockDeviceStorage,
}

impl Lx {
    fn with(config: HostConfig, table: u32, legacy: LegacyConfig) -> Lx {
        let (mut host, _) = mock_host(config, table, 4, 200).unwrap();
        let vm = host.add_vm(vm_config()).unwrap();
        host.set_legacy_config(vm, legacy).unwrap();
        Lx {
            host,
            mem: guest_ram(0x40_0000),
            vm,
            g: Caller::new(vm),
            st: MockDeviceStorage::new(),
        }
    }

    fn new() -> Lx {
        Lx::with(HostConfig::default(), 256, LegacyConfig::default())
    }

    fn viommu() -> Lx {
        let mut lx = Lx::with(
            HostConfig::default(),
            256,
            LegacyConfig {
                viommu: true,
                ext_dest_id: false,
            },
        );
        // 16 entries at IRT_GPA, x2APIC format; remapping on, compatibility format blocked.
        let irta = Irta {
            size_s: 3,
            eime: true,
            base: IRT_GPA,
        }
        .encode()
        .unwrap();
        lx.v(ViommuWrite::Irta(irta));
        lx.v(ViommuWrite::GlobalCommand(GCMD_SIRTP | GCMD_IRE));
        lx
    }

    #[track_caller]
    fn w(&mut self, dev: u32, write: TrapWrite) -> TrapOutcome {
        self.host
            .trap_write(self.vm, dev, write, &self.mem, &mut self.st)
            .unwrap()
    }

    #[track_caller]
    fn v(&mut self, write: ViommuWrite) -> TrapOutcome {
        self.host
            .viommu_write(self.vm, write, &self.mem, &mut self.st)
            .unwrap()
    }

    /// The three message writes of an MSI-X entry; returns their events.
    fn msix_message(&mut self, dev: u32, index: u32, m: MsiMessage) -> Vec<VectorEvent> {
        let mut ev = Vec::new();
        for (field, value) in [
            (MsixField::AddressLo, m.address_lo),
            (MsixField::AddressHi, m.address_hi),
            (MsixField::Data, m.data),
        ] {
            ev.extend_from_slice(
                self.w(
                    dev,
                    TrapWrite::MsixEntry {
                        index,
                        field,
                        value,
                    },
                )
                .events(),
            );
        }
        ev
    }

    fn msix_mask(&mut self, dev: u32, index: u32, masked: bool) -> Vec<VectorEvent> {
        self.w(
            dev,
            TrapWrite::MsixEntry {
                index,
                field: MsixField::VectorControl,
                value: u32::from(masked),
            },
        )
        .events()
        .to_vec()
    }

    fn msix_enable(&mut self, dev: u32, on: bool) -> Vec<VectorEvent> {
        self.w(dev, TrapWrite::MsixControl(if on { 1 << 15 } else { 0 }))
            .events()
            .to_vec()
    }

    fn virte(&self, index: u16, raw: u128) {
        self.mem
            .write_slice(
                &raw.to_le_bytes(),
                GuestAddress(IRT_GPA + 16 * u64::from(index)),
            )
            .unwrap();
    }

    fn legacy_enabled(&self) -> u32 {
        self.host.vm(self.vm).unwrap().legacy_interrupts_enabled()
    }

    fn backends(&self) -> MockState {
        mock_state(&self.host)
    }
}

fn compat(apic: u32, vector: u8, ext: bool) -> MsiMessage {
    CompatMsi {
        dest_id: apic,
        dest_mode_logical: false,
        redirection_hint: false,
        vector,
        delivery_mode: DeliveryMode::Fixed,
        level_assert: false,
        trigger_level: false,
    }
    .encode(ext)
    .unwrap()
}

fn remappable(handle: u16) -> MsiMessage {
    RemappableMsi {
        handle,
        shv: true,
        subhandle: 0,
    }
    .encode()
}

fn virte(vector: u8, dest: u32, sid: u16) -> RemappedIrte {
    RemappedIrte {
        present: true,
        fpd: false,
        dest_mode_logical: false,
        redirection_hint: false,
        trigger_level: false,
        delivery_mode: 0,
        avail: 0,
        vector,
        dest,
        sid,
        sq: 0,
        svt: Svt::VerifySid,
    }
}

fn target(vcpu: u32, vector: u8) -> VirtualTarget {
    VirtualTarget {
        vcpu_index: vcpu,
        apic_id: APIC[vcpu as usize],
        vector,
    }
}

const fn msix(device_id: u32, index: u32) -> LegacySlot {
    LegacySlot::MsiX { device_id, index }
}

#[test]
fn vir_leg_h_001_msix_entry_is_set_up_on_unmask_and_torn_down_on_mask() {
    let mut lx = Lx::new();
    // Masked entry: the message is only stored.
    assert_eq!(lx.msix_message(DEV, 3, compat(1, 0x45, false)), vec![]);
    assert_eq!(lx.msix_enable(DEV, true), vec![]);
    assert_eq!(
        lx.legacy_enabled(),
        1,
        "VIR-NEG-H-004 hook follows the trap code"
    );
    assert_eq!(
        lx.msix_mask(DEV, 3, false),
        vec![VectorEvent::SetUp {
            slot: msix(DEV, 3),
            target: target(1, 0x45)
        }]
    );
    // Virtual route, physical IRQ on the vCPU's physical CPU, posted IRTE bound to the device.
    let b = lx.backends();
    assert_eq!(
        b.routes.values().copied().collect::<Vec<_>>(),
        vec![RouteTarget {
            vcpu_index: 1,
            apic_id: 1,
            vector: 0x45
        }]
    );
    let irq = *b.irqs.values().next().unwrap();
    assert_eq!(
        irq.source,
        IrqSource {
            requester_id: RID,
            kind: StorageKind::MSIX,
            slot: 3
        }
    );
    assert_eq!(irq.vector.cpu, 1);
    let live = *lx
        .host
        .vm(lx.vm)
        .unwrap()
        .emulated_msix(DEV)
        .unwrap()
        .entry(3)
        .unwrap()
        .live()
        .unwrap();
    let (index, raw) = live.irte.unwrap();
    // VIR-FMT-H-003, VIR-SEC-H-001: same format and source check as the vIR path.
    assert_eq!(
        PostedIrte::decode(raw).unwrap(),
        PostedIrte {
            present: true,
            fpd: false,
            avail: 0,
            urgent: false,
            vector: 0x45,
            pda: pda(1),
            sid: RID,
            sq: 0,
            svt: Svt::VerifySid,
        }
    );
    assert_eq!(lx.host.table().entry(index), Some(raw));
    // The physical entry holds the host's message naming that IRTE, unmasked.
    assert_eq!(
        lx.st.device(RID).msix_entry(3),
        (remappable(index as u16), false)
    );
    assert!(lx.st.device(RID).msix_can_signal(3));
    let free = lx.host.table_free();
    // Every trapped access is an exit: 3 message writes, 1 vector control write, 1 control.
    let c = lx.host.vm(lx.vm).unwrap().legacy_counters().clone();
    assert_eq!(c.exits(), 5);
    assert_eq!(c.writes(TrapKind::MsixData), 1);
    assert_eq!(c.writes(TrapKind::MsixVectorControl), 1);
    assert_eq!(c.writes(TrapKind::MsixControl), 1);

    assert_eq!(
        lx.msix_mask(DEV, 3, true),
        vec![VectorEvent::TornDown {
            slot: msix(DEV, 3),
            was: target(1, 0x45)
        }]
    );
    let b = lx.backends();
    assert!(b.routes.is_empty() && b.irqs.is_empty());
    assert_eq!(lx.host.table().entry(index), Some(0));
    assert_eq!(lx.host.table_free(), free + 1);
    assert!(lx.st.device(RID).msix_entry(3).1, "physically masked again");
    assert_eq!(lx.host.vm(lx.vm).unwrap().legacy_live_vectors(), 0);
}

#[test]
fn vir_leg_h_001_message_change_while_unmasked_retargets_without_touching_the_device() {
    let mut lx = Lx::with(
        HostConfig {
            ir_mode: IrMode::Remapped,
            ..HostConfig::default()
        },
        256,
        LegacyConfig::default(),
    );
    lx.msix_message(DEV, 0, compat(0, 0x40, false));
    lx.msix_enable(DEV, true);
    lx.msix_mask(DEV, 0, false);
    lx.st.clear_log();
    // Another vCPU (another physical CPU): the host IRQ moves, the IRTE is rewritten.
    let ev = lx.w(
        DEV,
        TrapWrite::MsixEntry {
            index: 0,
            field: MsixField::AddressLo,
            value: compat(1, 0x40, false).address_lo,
        },
    );
    assert_eq!(
        ev.events(),
        &[VectorEvent::Retargeted {
            slot: msix(DEV, 0),
            from: target(0, 0x40),
            to: target(1, 0x40)
        }]
    );
    let live = *lx
        .host
        .vm(lx.vm)
        .unwrap()
        .emulated_msix(DEV)
        .unwrap()
        .entry(0)
        .unwrap()
        .live()
        .unwrap();
    let r = RemappedIrte::decode(live.irte.unwrap().1, ApicMode::X2Apic).unwrap();
    assert_eq!((r.dest, r.vector), (1, live.host_irq.vector.vector));
    assert_eq!(live.host_irq.vector.cpu, 1);
    assert_eq!(
        lx.backends().routes.values().next(),
        Some(&RouteTarget {
            vcpu_index: 1,
            apic_id: 1,
            vector: 0x40
        })
    );
    assert_eq!(lx.st.log(), &[], "host remapping on: no device write");
}

#[test]
fn vir_leg_h_001_msi_block_with_mask_bits() {
    let mut lx = Lx::new();
    let m = compat(0x1, 0x50, false);
    lx.w(DEV, TrapWrite::Msi(MsiRegister::AddressLo(m.address_lo)));
    lx.w(DEV, TrapWrite::Msi(MsiRegister::AddressHi(0)));
    lx.w(DEV, TrapWrite::Msi(MsiRegister::Data(m.data as u16)));
    lx.w(DEV, TrapWrite::Msi(MsiRegister::MaskBits(0b0010)));
    // Enable with Multiple Message Enable 2 (4 vectors).
    let ev = lx.w(DEV, TrapWrite::Msi(MsiRegister::Control(1 | 2 << 4)));
    let slot = |vector| LegacySlot::Msi {
        device_id: DEV,
        vector,
    };
    assert_eq!(
        ev.events(),
        &[
            VectorEvent::SetUp {
                slot: slot(0),
                target: target(1, 0x50)
            },
            VectorEvent::SetUp {
                slot: slot(2),
                target: target(1, 0x52)
            },
            VectorEvent::SetUp {
                slot: slot(3),
                target: target(1, 0x53)
            },
        ]
    );
    let vm = lx.host.vm(lx.vm).unwrap();
    let msi = vm.emulated_msi(DEV).unwrap();
    let base = msi.live(0).unwrap().irte.unwrap().0;
    assert_eq!(base % 4, 0, "naturally aligned block (VIR-ALC-H-009 rule)");
    assert_eq!(msi.live(3).unwrap().irte.unwrap().0, base + 3);
    let p = lx.st.device(RID);
    assert_eq!(p.msi_message, remappable(base as u16));
    assert_eq!((p.msi_enabled, p.msi_mme), (true, 2));
    assert_eq!(p.msi_mask & 0xF, 0b0010);
    assert_eq!(
        lx.host.trap_read(lx.vm, DEV, TrapRead::MsiControl),
        Ok(1 | 3 << 1 | 2 << 4 | 1 << 7 | 1 << 8)
    );
    // Unmask vector 1, then disable: everything released, physical MSI off.
    let ev = lx.w(DEV, TrapWrite::Msi(MsiRegister::MaskBits(0)));
    assert_eq!(
        ev.events(),
        &[VectorEvent::SetUp {
            slot: slot(1),
            target: target(1, 0x51)
        }]
    );
    let free = lx.host.table_free();
    let ev = lx.w(DEV, TrapWrite::Msi(MsiRegister::Control(2 << 4)));
    assert_eq!(ev.events().len(), 4);
    assert_eq!(lx.host.table_free(), free + 4);
    assert!(!lx.st.device(RID).msi_enabled);
    assert_eq!(lx.legacy_enabled(), 0);
}

#[test]
fn vir_leg_h_001_without_host_remapping_messages_name_host_vectors() {
    let config = HostConfig {
        physical_ir_enabled: false,
        ir_mode: IrMode::Remapped,
        ..HostConfig::default()
    };
    let mut lx = Lx::with(config, 256, LegacyConfig::default());
    lx.msix_message(DEV, 1, compat(0, 0x41, false));
    lx.msix_enable(DEV, true);
    lx.msix_mask(DEV, 1, false);
    let live = *lx
        .host
        .vm(lx.vm)
        .unwrap()
        .emulated_msix(DEV)
        .unwrap()
        .entry(1)
        .unwrap()
        .live()
        .unwrap();
    assert_eq!(live.irte, None);
    let hv = live.host_irq.vector;
    assert_eq!(
        lx.st.device(RID).msix_entry(1).0,
        compat(hv.apic_id, hv.vector, false)
    );
    assert_eq!(lx.host.table_free(), 256);
    // Moving to another physical CPU rewrites the device's message (no remapping to hide it).
    lx.st.clear_log();
    lx.w(
        DEV,
        TrapWrite::MsixEntry {
            index: 1,
            field: MsixField::AddressLo,
            value: compat(1, 0x41, false).address_lo,
        },
    );
    assert_eq!(lx.st.log().len(), 1);
    // A multi-vector MSI block cannot be delivered without host remapping.
    let m = compat(0, 0x60, false);
    lx.w(DEV, TrapWrite::Msi(MsiRegister::AddressLo(m.address_lo)));
    lx.w(DEV, TrapWrite::Msi(MsiRegister::Data(m.data as u16)));
    let ev = lx.w(DEV, TrapWrite::Msi(MsiRegister::Control(1 | 1 << 4)));
    assert_eq!(
        ev.events()[0],
        VectorEvent::SetupFailed {
            slot: LegacySlot::Msi {
                device_id: DEV,
                vector: 0
            },
            error: LegacySetupError::MultiMessageWithoutHostIr(1)
        }
    );
}

#[test]
fn vir_sec_h_003_bad_messages_are_not_delivered_and_change_nothing() {
    let mut lx = Lx::new();
    lx.msix_enable(DEV, true);
    let before = lx.backends();
    let mut logical = compat(1, 0x41, false);
    logical.address_lo |= 1 << 2;
    let mut nmi = compat(1, 0x41, false);
    nmi.data |= 4 << 8;
    let cases = [
        (
            logical,
            LegacySetupError::UnsupportedDelivery {
                delivery_mode: 0,
                logical: true,
            },
        ),
        (
            nmi,
            LegacySetupError::UnsupportedDelivery {
                delivery_mode: 4,
                logical: false,
            },
        ),
        (compat(1, 0x05, false), LegacySetupError::IllegalVector(5)),
        (compat(7, 0x41, false), LegacySetupError::NoSuchVcpu(7)),
        // APIC id 0x100 needs the extended destination id, not offered here.
        (
            compat(0x100, 0x41, true),
            LegacySetupError::Message(MsiError::ExtDestIdNotEnabled(1)),
        ),
        (
            remappable(3),
            LegacySetupError::Message(MsiError::RemappableFormat(remappable(3).address_lo)),
        ),
        (
            MsiMessage::new(0xFED0_0000, 0, 0x41),
            LegacySetupError::Message(MsiError::BadAddressBase(0xFED0_0000)),
        ),
    ];
    for (i, (m, error)) in cases.into_iter().enumerate() {
        let i = i as u32;
        lx.msix_message(DEV, i, m);
        assert_eq!(
            lx.msix_mask(DEV, i, false),
            vec![VectorEvent::SetupFailed {
                slot: msix(DEV, i),
                error
            }]
        );
    }
    assert_eq!(lx.backends(), before);
    assert_eq!(
        lx.host.vm(lx.vm).unwrap().legacy_counters().setup_failures,
        7
    );
    // With the extended destination id the same message reaches vCPU 2.
    lx.host
        .set_legacy_config(
            lx.vm,
            LegacyConfig {
                viommu: false,
                ext_dest_id: true,
            },
        )
        .unwrap();
    assert_eq!(
        lx.msix_mask(DEV, 4, true).len() + lx.msix_mask(DEV, 4, false).len(),
        1
    );
    assert_eq!(
        lx.host
            .vm(lx.vm)
            .unwrap()
            .emulated_msix(DEV)
            .unwrap()
            .entry(4)
            .unwrap()
            .live()
            .map(|l| l.target),
        Some(target(2, 0x41))
    );
}

#[test]
fn vir_act_h_007_backend_failures_unwind_and_are_reported() {
    let mut lx = Lx::new();
    lx.msix_message(DEV, 0, compat(0, 0x41, false));
    lx.msix_enable(DEV, true);
    let before = lx.backends();
    let busy = BackendError::Os {
        op: BackendOp::StartIrq,
        errno: 16,
    };
    lx.host.irqs_mut().fail_next(BackendOp::StartIrq, 1, busy);
    assert_eq!(
        lx.msix_mask(DEV, 0, false),
        vec![VectorEvent::SetupFailed {
            slot: msix(DEV, 0),
            error: LegacySetupError::Backend(busy)
        }]
    );
    assert_eq!(lx.backends(), before, "the route was removed again");
    assert_eq!(lx.host.table_free(), 256);
    // Retarget failure keeps the old target.
    lx.msix_mask(DEV, 0, true);
    lx.msix_mask(DEV, 0, false);
    let full = BackendError::RoutesExhausted { capacity: 1 };
    lx.host
        .routing_mut()
        .fail_next(BackendOp::UpdateRoute, 1, full);
    let ev = lx.w(
        DEV,
        TrapWrite::MsixEntry {
            index: 0,
            field: MsixField::Data,
            value: 0x42,
        },
    );
    assert_eq!(
        ev.events(),
        &[VectorEvent::RetargetFailed {
            slot: msix(DEV, 0),
            kept: target(0, 0x41),
            error: LegacySetupError::Backend(full)
        }]
    );
    assert_eq!(
        lx.backends()
            .routes
            .get(&(lx.vm, Gsi(24)))
            .map(|r| r.vector),
        Some(0x41)
    );
}

#[test]
fn host_table_full_is_a_setup_failure() {
    let mut lx = Lx::with(HostConfig::default(), 2, LegacyConfig::default());
    lx.msix_enable(DEV, true);
    for i in 0..3 {
        lx.msix_message(DEV, i, compat(0, 0x41 + i as u8, false));
    }
    assert_eq!(lx.msix_mask(DEV, 0, false).len(), 1);
    assert_eq!(lx.msix_mask(DEV, 1, false).len(), 1);
    assert_eq!(
        lx.msix_mask(DEV, 2, false),
        vec![VectorEvent::SetupFailed {
            slot: msix(DEV, 2),
            error: LegacySetupError::TableFull { log2: 0 }
        }]
    );
}

#[test]
fn trap_errors_for_vmm_mistakes() {
    let mut lx = Lx::new();
    let mem = guest_ram(0x1000);
    let e = |lx: &mut Lx, dev, w| lx.host.trap_write(lx.vm, dev, w, &mem, &mut lx.st);
    assert_eq!(
        e(&mut lx, 0x99, TrapWrite::MsixControl(0)),
        Err(TrapError::UnknownDevice {
            vm: lx.vm,
            device_id: 0x99
        })
    );
    assert_eq!(
        e(&mut lx, DEV2, TrapWrite::Msi(MsiRegister::Control(1))),
        Err(TrapError::NoMsi(DEV2))
    );
    assert_eq!(
        e(
            &mut lx,
            DEV2,
            TrapWrite::MsixEntry {
                index: 4,
                field: MsixField::Data,
                value: 0
            }
        ),
        Err(TrapError::MsixIndexOutOfRange {
            device_id: DEV2,
            index: 4,
            entries: 4
        })
    );
    assert_eq!(
        lx.host
            .viommu_write(lx.vm, ViommuWrite::InvalidateAll, &mem, &mut lx.st),
        Err(TrapError::NoViommu(lx.vm))
    );
    assert_eq!(
        lx.host
            .trap_write(VmId(9), DEV, TrapWrite::MsixControl(0), &mem, &mut lx.st),
        Err(TrapError::UnknownVm(VmId(9)))
    );
    assert_eq!(
        lx.host.vm(lx.vm).unwrap().legacy_counters().exits(),
        0,
        "refused accesses are not exits"
    );
}

// ---- the emulated remapping unit (situation 2) ----

#[test]
fn vir_leg_h_001_viommu_decodes_through_the_guest_table_and_retargets_on_invalidation() {
    let mut lx = Lx::viommu();
    let sid = DEV as u16;
    lx.virte(5, virte(0x61, 0x100, sid).encode(ApicMode::X2Apic).unwrap());
    lx.msix_message(DEV, 2, remappable(5));
    lx.msix_enable(DEV, true);
    assert_eq!(
        lx.msix_mask(DEV, 2, false),
        vec![VectorEvent::SetUp {
            slot: msix(DEV, 2),
            target: target(2, 0x61)
        }]
    );
    let reads = |lx: &Lx| lx.host.vm(lx.vm).unwrap().legacy_counters().virte_reads;
    assert_eq!(reads(&lx), 1);
    lx.st.clear_log();
    // The guest changes the entry; without invalidation the cached entry stays in force.
    lx.virte(
        5,
        virte(0x62, 0x1234, sid).encode(ApicMode::X2Apic).unwrap(),
    );
    lx.msix_mask(DEV, 2, true);
    lx.msix_mask(DEV, 2, false);
    let live = |lx: &Lx| {
        lx.host
            .vm(lx.vm)
            .unwrap()
            .emulated_msix(DEV)
            .unwrap()
            .entry(2)
            .unwrap()
            .live()
            .map(|l| l.target)
    };
    assert_eq!(live(&lx), Some(target(2, 0x61)));
    assert_eq!(reads(&lx), 1);
    lx.st.clear_log();
    let ev = lx.v(ViommuWrite::InvalidateEntries {
        index: 5,
        index_mask: 0,
    });
    assert_eq!(
        ev.events(),
        &[VectorEvent::Retargeted {
            slot: msix(DEV, 2),
            from: target(2, 0x61),
            to: target(3, 0x62)
        }]
    );
    assert_eq!(reads(&lx), 2);
    assert_eq!(lx.st.log(), &[], "the device is not touched");
    // An invalidation of other entries re-resolves nothing.
    assert_eq!(
        lx.v(ViommuWrite::InvalidateEntries {
            index: 8,
            index_mask: 3
        }),
        TrapOutcome::Emulated(vec![])
    );
    let c = lx.host.vm(lx.vm).unwrap().legacy_counters().clone();
    assert_eq!(c.writes(TrapKind::ViommuInvalidation), 2);
    assert_eq!(c.writes(TrapKind::ViommuIrta), 1);
    assert_eq!(c.writes(TrapKind::ViommuCommand), 1);
}

#[test]
fn viommu_faults_block_and_are_recorded_unless_fpd() {
    let mut lx = Lx::viommu();
    let sid = DEV as u16;
    lx.msix_enable(DEV, true);
    let fault = |reason: u8, index: Option<u16>, message: MsiMessage, recorded: bool| {
        LegacySetupError::Remapping(vir_host::VirtualFault {
            reason: VtdFaultReason(reason),
            index,
            requester_id: sid,
            message,
            recorded,
        })
    };
    let mut wrong_sid = virte(0x61, 1, sid + 1);
    lx.virte(1, wrong_sid.encode(ApicMode::X2Apic).unwrap());
    lx.virte(2, 2); // not present, FPD
    lx.virte(3, 0); // not present
    let mut hi = remappable(1);
    hi.address_hi = 1;
    let cases = [
        (remappable(1), fault(0x26, Some(1), remappable(1), true)),
        (remappable(2), fault(0x22, Some(2), remappable(2), false)),
        (remappable(3), fault(0x22, Some(3), remappable(3), true)),
        (remappable(16), fault(0x21, Some(16), remappable(16), true)),
        (hi, fault(0x20, None, hi, true)),
        (
            compat(0, 0x41, false),
            fault(0x25, None, compat(0, 0x41, false), true),
        ),
    ];
    for (i, (m, error)) in cases.into_iter().enumerate() {
        lx.msix_message(DEV, i as u32, m);
        assert_eq!(
            lx.msix_mask(DEV, i as u32, false),
            vec![VectorEvent::SetupFailed {
                slot: msix(DEV, i as u32),
                error
            }],
            "case {i}"
        );
    }
    let vm = lx.host.vm(lx.vm).unwrap();
    let reasons: Vec<u8> = vm.viommu().faults().map(|f| f.reason.0).collect();
    assert_eq!(reasons, vec![0x26, 0x22, 0x21, 0x20, 0x25]);
    assert_eq!(vm.viommu().faults_suppressed(), 1);
    // The guest fixes entry 1 and invalidates it: the waiting vector is set up.
    wrong_sid.sid = sid;
    lx.virte(1, wrong_sid.encode(ApicMode::X2Apic).unwrap());
    assert_eq!(
        lx.v(ViommuWrite::InvalidateEntries {
            index: 1,
            index_mask: 0
        })
        .events(),
        &[VectorEvent::SetUp {
            slot: msix(DEV, 0),
            target: target(1, 0x61)
        }]
    );
    // CFI set: the compatibility message passes; IRE off: every remappable message stops.
    let ev = lx.v(ViommuWrite::GlobalCommand(GCMD_IRE | GCMD_CFI));
    assert!(ev.events().contains(&VectorEvent::SetUp {
        slot: msix(DEV, 5),
        target: target(0, 0x41)
    }));
    let ev = lx.v(ViommuWrite::GlobalCommand(0));
    assert!(ev.events().contains(&VectorEvent::TornDown {
        slot: msix(DEV, 0),
        was: target(1, 0x61)
    }));
    assert_eq!(lx.host.vm(lx.vm).unwrap().legacy_live_vectors(), 1);
}

// ---- the switch ----

#[test]
fn vir_neg_h_004_negotiate_with_legacy_interrupts_enabled_changes_nothing() {
    let mut lx = Lx::new();
    lx.msix_message(DEV, 0, compat(0, 0x41, false));
    lx.msix_enable(DEV, true);
    lx.msix_mask(DEV, 0, false);
    let (snap, backends) = (lx.host.snapshot(lx.vm).unwrap(), lx.backends());
    assert_eq!(
        lx.g.negotiate(&mut lx.host, &lx.mem, 1, Features::V1_DEFINED)
            .map(|r| r.session.get()),
        Err(Status::INVALID_STATE)
    );
    assert_eq!(lx.host.snapshot(lx.vm).unwrap(), snap);
    assert_eq!(lx.backends(), backends);
    assert!(lx.host.vm(lx.vm).unwrap().msix_trapped());
    // MSI enabled counts too.
    lx.msix_enable(DEV, false);
    lx.w(DEV, TrapWrite::Msi(MsiRegister::Control(1)));
    assert_eq!(lx.legacy_enabled(), 1);
    assert_eq!(
        lx.g.negotiate(&mut lx.host, &lx.mem, 1, Features::V1_DEFINED)
            .map(|r| r.session.get()),
        Err(Status::INVALID_STATE)
    );
    lx.w(DEV, TrapWrite::Msi(MsiRegister::Control(0)));
    assert_eq!(lx.legacy_enabled(), 0);
    assert_eq!(
        lx.g.negotiate(&mut lx.host, &lx.mem, 1, Features::V1_DEFINED)
            .map(|r| r.session.get()),
        Ok(1)
    );
}

#[test]
fn vir_leg_h_002_and_005_msix_untrapped_after_negotiation_control_forwarded() {
    let mut lx = Lx::new();
    lx.g.negotiate(&mut lx.host, &lx.mem, 1, Features::V1_DEFINED)
        .unwrap();
    assert!(!lx.host.vm(lx.vm).unwrap().msix_trapped());
    let w = TrapWrite::MsixEntry {
        index: 1,
        field: MsixField::Data,
        value: 0,
    };
    assert_eq!(
        lx.host.trap_write(lx.vm, DEV, w, &lx.mem, &mut lx.st),
        Err(TrapError::MsixNotTrapped {
            device_id: DEV,
            index: 1
        })
    );
    assert_eq!(
        lx.host.trap_read(
            lx.vm,
            DEV,
            TrapRead::MsixEntry {
                index: 1,
                field: MsixField::Data
            }
        ),
        Err(TrapError::MsixNotTrapped {
            device_id: DEV,
            index: 1
        })
    );
    // VIR-LEG-H-005: Enable and Function Mask reach the device.
    assert_eq!(
        lx.w(DEV, TrapWrite::MsixControl(1 << 15 | 1 << 14)),
        TrapOutcome::Forwarded
    );
    assert_eq!(
        lx.st.log(),
        &[StorageWrite::MsixControl {
            rid: RID,
            enabled: true,
            function_mask: true
        }]
    );
    assert_eq!(
        lx.host.vm(lx.vm).unwrap().legacy_counters().exits(),
        1,
        "the MSI-X capability stays trapped"
    );
}

#[test]
fn vir_leg_h_003_and_004_msi_accepts_only_the_issued_message() {
    let mut lx = Lx::new();
    lx.g.negotiate(&mut lx.host, &lx.mem, 1, Features::V1_DEFINED)
        .unwrap();
    let msi = |lx: &mut Lx, r| lx.w(DEV, TrapWrite::Msi(r));
    // No allocation yet.
    assert_eq!(
        msi(&mut lx, MsiRegister::Control(1)),
        TrapOutcome::Refused(MsiRefusal::NoIssuedMessage)
    );
    let h =
        lx.g.allocate(&mut lx.host, &lx.mem, DEV, StorageKind::MSI, 2, 0)
            .unwrap()
            .handle
            .get();
    let issued = lx.g.activate(&mut lx.host, &lx.mem, h, 0, 0, 0x41).unwrap();
    let issued = MsiMessage::new(
        issued.address_lo.get(),
        issued.address_hi.get(),
        issued.data.get(),
    );
    assert_eq!(
        lx.host.vm(lx.vm).unwrap().msi_message_issued(DEV),
        Some(issued)
    );
    // A forged message.
    let forged = compat(0, 0x41, false);
    msi(&mut lx, MsiRegister::AddressLo(forged.address_lo));
    msi(&mut lx, MsiRegister::Data(forged.data as u16));
    assert_eq!(
        msi(&mut lx, MsiRegister::Control(1 | 2 << 4)),
        TrapOutcome::Refused(MsiRefusal::MessageMismatch {
            written: forged,
            issued
        })
    );
    // The issued message with too many vectors.
    msi(&mut lx, MsiRegister::AddressLo(issued.address_lo));
    msi(&mut lx, MsiRegister::Data(issued.data as u16));
    assert_eq!(
        msi(&mut lx, MsiRegister::Control(1 | 3 << 4)),
        TrapOutcome::Refused(MsiRefusal::MmeTooLarge {
            mme: 3,
            log2_count: 2
        })
    );
    let vm = lx.host.vm(lx.vm).unwrap();
    assert!(
        !vm.emulated_msi(DEV).unwrap().enabled(),
        "MSI stays disabled"
    );
    assert_eq!(vm.legacy_counters().msi_refused, 3);
    assert!(!lx.st.device(RID).msi_enabled);
    assert!(lx.st.log().is_empty(), "refused writes are dropped");
    // Accepted: the host enables MSI on the device with the issued message.
    assert_eq!(
        msi(&mut lx, MsiRegister::Control(1 | 2 << 4)),
        TrapOutcome::Forwarded
    );
    let p = lx.st.device(RID);
    assert_eq!((p.msi_message, p.msi_enabled, p.msi_mme), (issued, true, 2));
    // Changes while enabled are refused (VIR-LEG-H-004).
    assert_eq!(
        msi(&mut lx, MsiRegister::Data(1)),
        TrapOutcome::Refused(MsiRefusal::ChangeWhileEnabled(MsiRegister::Data(1)))
    );
    assert_eq!(
        msi(&mut lx, MsiRegister::Control(1 | 1 << 4)),
        TrapOutcome::Refused(MsiRefusal::ChangeWhileEnabled(MsiRegister::Control(
            1 | 1 << 4
        )))
    );
    // Same values are no change.
    assert_eq!(
        msi(&mut lx, MsiRegister::Data(issued.data as u16)),
        TrapOutcome::Emulated(vec![])
    );
    // Mask bits are applied to the device; disable is always accepted.
    assert_eq!(
        msi(&mut lx, MsiRegister::MaskBits(4)),
        TrapOutcome::Forwarded
    );
    assert_eq!(lx.st.device(RID).msi_mask, 4);
    assert_eq!(
        msi(&mut lx, MsiRegister::Control(0)),
        TrapOutcome::Forwarded
    );
    assert!(!lx.st.device(RID).msi_enabled);
    assert_eq!(lx.host.vm(lx.vm).unwrap().legacy_counters().msi_refused, 5);
}

#[test]
fn vir_rst_h_002_003_006_reset_traps_again_and_renegotiation_works() {
    let mut lx = Lx::new();
    lx.g.negotiate(&mut lx.host, &lx.mem, 1, Features::V1_DEFINED)
        .unwrap();
    lx.w(DEV, TrapWrite::MsixControl(1 << 15));
    let h =
        lx.g.allocate(&mut lx.host, &lx.mem, DEV, StorageKind::MSI, 0, 0)
            .unwrap()
            .handle
            .get();
    let m = lx.g.activate(&mut lx.host, &lx.mem, h, 0, 0, 0x41).unwrap();
    lx.w(
        DEV,
        TrapWrite::Msi(MsiRegister::AddressLo(m.address_lo.get())),
    );
    assert_eq!(
        lx.w(DEV, TrapWrite::Msi(MsiRegister::Control(1))),
        TrapOutcome::Forwarded
    );
    assert_eq!(lx.g.reset(&mut lx.host, &lx.mem), Ok(()));
    let vm = lx.host.vm(lx.vm).unwrap();
    // VIR-RST-H-002: legacy, trapped again.
    assert_eq!(vm.state(), VmState::Legacy);
    assert!(vm.msix_trapped());
    // VIR-RST-H-006: MSI and MSI-X disabled, every entry at its reset value.
    let msix = vm.emulated_msix(DEV).unwrap();
    assert!(!msix.enabled() && !msix.function_masked());
    for i in 0..msix.len() {
        let e = msix.entry(i).unwrap();
        assert_eq!(
            (e.message(), e.vector_control()),
            (MsiMessage::default(), 1)
        );
    }
    assert!(!vm.emulated_msi(DEV).unwrap().enabled());
    assert_eq!(
        vm.emulated_msi(DEV).unwrap().message(),
        MsiMessage::default()
    );
    assert_eq!(vm.legacy_interrupts_enabled(), 0);
    assert_eq!(
        lx.host.trap_read(
            lx.vm,
            DEV,
            TrapRead::MsixEntry {
                index: 7,
                field: MsixField::VectorControl
            }
        ),
        Ok(1)
    );
    // The first trapped write resynchronises the physical device the guest owned: MSI-X
    // disabled and all 16 entries masked, MSI disabled; once only.
    lx.st.clear_log();
    lx.msix_message(DEV, 0, compat(0, 0x41, false));
    let log = lx.st.log().to_vec();
    assert_eq!(
        log.iter()
            .filter(|w| matches!(w, StorageWrite::MsixMask { masked: true, .. }))
            .count(),
        16 + 4,
        "both devices' tables"
    );
    assert!(log.contains(&StorageWrite::MsiControl {
        rid: RID,
        enabled: false,
        mme: 0
    }));
    lx.st.clear_log();
    lx.msix_message(DEV, 1, compat(0, 0x42, false));
    assert!(lx.st.log().is_empty());
    // Legacy delivery works again, and a new negotiation is accepted (VIR-RST-H-003).
    lx.msix_enable(DEV, true);
    assert_eq!(lx.msix_mask(DEV, 0, false).len(), 1);
    lx.msix_mask(DEV, 0, true);
    lx.msix_enable(DEV, false);
    assert_eq!(
        lx.g.negotiate(&mut lx.host, &lx.mem, 1, Features::V1_DEFINED)
            .map(|r| r.session.get()),
        Ok(2)
    );
}

#[test]
fn vir_rst_h_001_vm_reset_releases_legacy_vectors_and_the_viommu() {
    let mut lx = Lx::viommu();
    lx.virte(
        0,
        virte(0x61, 1, DEV as u16).encode(ApicMode::X2Apic).unwrap(),
    );
    lx.msix_enable(DEV, true);
    for i in 0..4 {
        lx.msix_message(DEV, i, remappable(0));
        lx.msix_mask(DEV, i, false);
    }
    assert_eq!(lx.host.vm(lx.vm).unwrap().legacy_live_vectors(), 4);
    lx.host.reset_vm(lx.vm).unwrap();
    let b = lx.backends();
    assert!(b.routes.is_empty() && b.irqs.is_empty());
    assert!(b.irtes.iter().all(|&e| e == 0));
    assert_eq!(lx.host.table_free(), 256);
    let vm = lx.host.vm(lx.vm).unwrap();
    assert_eq!(vm.legacy_live_vectors(), 0);
    assert!(!vm.viommu().remapping_enabled());
    assert_eq!(vm.viommu().irta(), None);
    assert_eq!(vm.viommu().cached_entries(), 0);
}

// ---- VIR-LEG-H-001: a guest that never negotiates sees no difference ----

/// One legacy workload: MSI-X and an MSI block through the emulated remapping unit, retargets,
/// masking and teardown. Returns every outcome.
fn legacy_workload(lx: &mut Lx) -> Vec<TrapOutcome> {
    let sid = DEV as u16;
    let mut out = Vec::new();
    for i in 0..16u16 {
        let e = virte(0x40 + i as u8, APIC[usize::from(i % 4)], sid);
        lx.virte(i, e.encode(ApicMode::X2Apic).unwrap());
    }
    out.push(lx.w(DEV, TrapWrite::MsixControl(1 << 15 | 1 << 14)));
    for i in 0..8 {
        let m = remappable(i as u16);
        for (field, value) in [
            (MsixField::AddressLo, m.address_lo),
            (MsixField::AddressHi, 0),
            (MsixField::Data, m.data),
            (MsixField::VectorControl, 0),
        ] {
            out.push(lx.w(
                DEV,
                TrapWrite::MsixEntry {
                    index: i,
                    field,
                    value,
                },
            ));
        }
    }
    out.push(lx.w(DEV, TrapWrite::MsixControl(1 << 15)));
    for i in 0..8u16 {
        let e = virte(0x80 + i as u8, APIC[usize::from((i + 1) % 4)], sid);
        lx.virte(i, e.encode(ApicMode::X2Apic).unwrap());
        out.push(lx.v(ViommuWrite::InvalidateEntries {
            index: i,
            index_mask: 0,
        }));
    }
    // MSI block of 8 on entries 8..16 (SHV: the device adds the vector index).
    let m = remappable(8);
    out.push(lx.w(DEV, TrapWrite::Msi(MsiRegister::AddressLo(m.address_lo))));
    out.push(lx.w(DEV, TrapWrite::Msi(MsiRegister::Data(0))));
    out.push(lx.w(DEV, TrapWrite::Msi(MsiRegister::Control(1 | 3 << 4))));
    out.push(lx.w(DEV, TrapWrite::Msi(MsiRegister::MaskBits(0xF0))));
    for i in 0..8 {
        out.push(lx.w(
            DEV,
            TrapWrite::MsixEntry {
                index: i,
                field: MsixField::VectorControl,
                value: 1,
            },
        ));
    }
    out.push(lx.w(DEV, TrapWrite::MsixControl(0)));
    out.push(lx.w(DEV, TrapWrite::Msi(MsiRegister::Control(0))));
    out
}

#[test]
fn vir_leg_h_001_legacy_guest_identical_with_and_without_vir_on_the_host() {
    let with_vir = HostConfig {
        ir_mode: IrMode::Remapped,
        ..HostConfig::default()
    };
    // The same host hardware, but compatibility-format interrupts not blocked: no vIR offered.
    let without_vir = HostConfig {
        compat_format_blocked: false,
        ..with_vir.clone()
    };
    let legacy = LegacyConfig {
        viommu: true,
        ext_dest_id: false,
    };
    let run = |config: HostConfig| {
        let mut lx = Lx::with(config, 256, legacy);
        let irta = Irta {
            size_s: 3,
            eime: true,
            base: IRT_GPA,
        }
        .encode()
        .unwrap();
        lx.v(ViommuWrite::Irta(irta));
        lx.v(ViommuWrite::GlobalCommand(GCMD_SIRTP | GCMD_IRE));
        let mid = lx.backends();
        let outcomes = legacy_workload(&mut lx);
        let vm = lx.host.vm(lx.vm).unwrap();
        (
            outcomes,
            mid,
            lx.backends(),
            lx.st.log().to_vec(),
            vm.legacy_counters().clone(),
            lx.host.snapshot(lx.vm).unwrap(),
            lx.host
                .cpuid(lx.vm, HostConfig::DEFAULT_CPUID_BASE)
                .unwrap()
                .is_some(),
        )
    };
    let a = run(with_vir);
    let b = run(without_vir);
    assert!(a.6 && !b.6, "one host offers vIR, the other does not");
    assert_eq!(a.0, b.0, "same outcomes for every trapped write");
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2, "same backend state");
    assert_eq!(a.3, b.3, "same physical storage writes");
    assert_eq!(a.4, b.4, "same exits and events");
    assert_eq!(a.5, b.5, "same host state");
    // The workload did real work: 8 MSI-X and 8 MSI vectors set up (4 of them masked again
    // at once), 8 retargets, everything torn down.
    assert_eq!((a.4.set_up, a.4.retargeted, a.4.torn_down), (16, 8, 16));
    assert_eq!(a.4.setup_failures, 0);
}
