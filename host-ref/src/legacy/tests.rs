//! Unit tests of the legacy scheme: register semantics and a random-sequence test of the
//! bookkeeping invariants (B18: no guest input panics or leaks).

use proptest::prelude::*;
use vir_abi::feature::Features;
use vir_abi::hw::ApicMode;
use vir_abi::hw::msi::{CompatMsi, DeliveryMode, MsiMessage};
use vir_abi::hw::vtd::{Irta, RemappableMsi, RemappedIrte, Svt};
use vm_memory::{Bytes, GuestAddress};

use super::emulation::MsiBlock;
use super::viommu::{GCMD_IRE, GCMD_SIRTP, ViommuWrite};
use super::*;
use crate::fixture::{APIC_IDS, DEV, DEV_BRIDGED, DEV_MSIX_ONLY, Fx};
use crate::testing::MockDeviceStorage;
use crate::vm::VmState;

#[test]
fn msix_field_offsets_and_trap_kinds() {
    assert_eq!(MsixField::from_offset(0), Some(MsixField::AddressLo));
    assert_eq!(MsixField::from_offset(12), Some(MsixField::VectorControl));
    assert_eq!(MsixField::from_offset(2), None);
    assert_eq!(MsixField::from_offset(16), None);
    let w = TrapWrite::MsixEntry {
        index: 0,
        field: MsixField::Data,
        value: 0,
    };
    assert_eq!(TrapKind::of_write(&w), TrapKind::MsixData);
    assert_eq!(
        TrapKind::of_read(&TrapRead::MsiMaskBits),
        TrapKind::MsiMaskBits
    );
    for (i, k) in TrapKind::ALL.iter().enumerate() {
        assert_eq!(k.index(), i);
    }
    assert_eq!(TrapKind::ViommuInvalidation.name(), "viommu-invalidation");
}

#[test]
fn emulated_registers_read_back_as_written_with_read_only_bits() {
    let mut fx = Fx::legacy();
    let mut st = MockDeviceStorage::new();
    let mut w = |fx: &mut Fx, write| {
        fx.host
            .trap_write(fx.vm, DEV, write, &fx.mem, &mut st)
            .unwrap()
    };
    w(&mut fx, TrapWrite::Msi(MsiRegister::AddressLo(0xFEE0_1003)));
    w(&mut fx, TrapWrite::Msi(MsiRegister::AddressHi(0x1)));
    // MME 5 on an 8-vector capability reads back as 3; read-only bits ignored.
    w(
        &mut fx,
        TrapWrite::Msi(MsiRegister::Control(0xFF8E | 5 << 4)),
    );
    w(&mut fx, TrapWrite::MsixControl(!(1 << 15)));
    w(
        &mut fx,
        TrapWrite::MsixEntry {
            index: 15,
            field: MsixField::VectorControl,
            value: 0xFFFF_FFFE,
        },
    );
    let r = |fx: &mut Fx, read| fx.host.trap_read(fx.vm, DEV, read).unwrap();
    assert_eq!(r(&mut fx, TrapRead::MsiAddressLo), 0xFEE0_1000);
    assert_eq!(r(&mut fx, TrapRead::MsiAddressHi), 1);
    assert_eq!(
        r(&mut fx, TrapRead::MsiControl),
        3 << 1 | 3 << 4 | 1 << 7 | 1 << 8
    );
    assert_eq!(r(&mut fx, TrapRead::MsixControl), 15 | 1 << 14);
    let entry = |index, field| TrapRead::MsixEntry { index, field };
    assert_eq!(r(&mut fx, entry(15, MsixField::VectorControl)), 0);
    assert_eq!(r(&mut fx, entry(14, MsixField::VectorControl)), 1);
    let c = fx.host.vm(fx.vm).unwrap().legacy_counters().clone();
    assert_eq!(c.reads(TrapKind::MsixVectorControl), 2);
    assert_eq!(c.writes(TrapKind::MsiControl), 1);
    assert_eq!(c.exits(), 5 + 6);
    assert_eq!(
        c.by_kind().map(|(k, _, _)| k).collect::<Vec<_>>(),
        vec![
            TrapKind::MsiControl,
            TrapKind::MsiAddressLo,
            TrapKind::MsiAddressHi,
            TrapKind::MsixControl,
            TrapKind::MsixVectorControl
        ]
    );
}

#[test]
fn vir_sec_h_001_bridged_device_gets_a_bus_range_irte() {
    let mut fx = Fx::legacy();
    let mut st = MockDeviceStorage::new();
    let m = CompatMsi {
        dest_id: APIC_IDS[1],
        dest_mode_logical: false,
        redirection_hint: false,
        vector: 0x44,
        delivery_mode: DeliveryMode::Fixed,
        level_assert: false,
        trigger_level: false,
    }
    .encode(false)
    .unwrap();
    for write in [
        TrapWrite::MsixEntry {
            index: 0,
            field: MsixField::AddressLo,
            value: m.address_lo,
        },
        TrapWrite::MsixEntry {
            index: 0,
            field: MsixField::Data,
            value: m.data,
        },
        TrapWrite::MsixControl(1 << 15),
        TrapWrite::MsixEntry {
            index: 0,
            field: MsixField::VectorControl,
            value: 0,
        },
    ] {
        fx.host
            .trap_write(fx.vm, DEV_BRIDGED, write, &fx.mem, &mut st)
            .unwrap();
    }
    let vm = fx.host.vm(fx.vm).unwrap();
    let live = vm
        .emulated_msix(DEV_BRIDGED)
        .unwrap()
        .entry(0)
        .unwrap()
        .live()
        .copied()
        .unwrap();
    let raw = live.irte.unwrap().1;
    let p = vir_abi::hw::vtd::PostedIrte::decode(raw).unwrap();
    assert_eq!((p.svt, p.sid), (Svt::VerifyBus, 0x4047));
}

// ---- random sequences ----

const IRT: u64 = 0x8000;

#[derive(Debug, Clone)]
enum Op {
    Trap { dev: u32, write: TrapWrite },
    Viommu(ViommuWrite),
    Virte { index: u16, raw: u128 },
    Negotiate,
    Reset,
    VmReset,
}

fn message() -> impl Strategy<Value = MsiMessage> {
    prop_oneof![
        (0usize..5, 0u8..=0xFF).prop_map(|(a, vector)| {
            let dest_id = APIC_IDS.get(a).copied().unwrap_or(7).min(0xFF);
            CompatMsi {
                dest_id,
                dest_mode_logical: false,
                redirection_hint: false,
                vector,
                delivery_mode: DeliveryMode::Fixed,
                level_assert: false,
                trigger_level: false,
            }
            .encode(false)
            .unwrap()
        }),
        (0u16..24).prop_map(|handle| RemappableMsi {
            handle,
            shv: true,
            subhandle: 0
        }
        .encode()),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| MsiMessage::new(a, b, c)),
    ]
}

fn trap_write() -> impl Strategy<Value = TrapWrite> {
    let entry = (0u32..16, message(), any::<bool>()).prop_flat_map(|(index, m, masked)| {
        prop_oneof![
            Just(TrapWrite::MsixEntry {
                index,
                field: MsixField::AddressLo,
                value: m.address_lo
            }),
            Just(TrapWrite::MsixEntry {
                index,
                field: MsixField::AddressHi,
                value: m.address_hi
            }),
            Just(TrapWrite::MsixEntry {
                index,
                field: MsixField::Data,
                value: m.data
            }),
            Just(TrapWrite::MsixEntry {
                index,
                field: MsixField::VectorControl,
                value: u32::from(masked)
            }),
        ]
    });
    prop_oneof![
        3 => entry,
        1 => any::<u16>().prop_map(TrapWrite::MsixControl),
        1 => any::<u16>().prop_map(|v| TrapWrite::Msi(MsiRegister::Control(v))),
        1 => message().prop_map(|m| TrapWrite::Msi(MsiRegister::AddressLo(m.address_lo))),
        1 => message().prop_map(|m| TrapWrite::Msi(MsiRegister::Data(m.data as u16))),
        1 => any::<u32>().prop_map(|v| TrapWrite::Msi(MsiRegister::MaskBits(v))),
    ]
}

fn virte() -> impl Strategy<Value = u128> {
    prop_oneof![
        (
            0usize..5,
            0u8..=0xFF,
            prop_oneof![Just(DEV as u16), Just(0x18u16), any::<u16>()]
        )
            .prop_map(|(a, vector, sid)| {
                RemappedIrte {
                    present: true,
                    fpd: false,
                    dest_mode_logical: false,
                    redirection_hint: false,
                    trigger_level: false,
                    delivery_mode: 0,
                    avail: 0,
                    vector,
                    dest: APIC_IDS.get(a).copied().unwrap_or(9),
                    sid,
                    sq: 0,
                    svt: Svt::VerifySid,
                }
                .encode(ApicMode::X2Apic)
                .unwrap()
            }),
        any::<u128>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let irta = Irta {
        size_s: 3,
        eime: true,
        base: IRT,
    }
    .encode()
    .unwrap();
    prop_oneof![
        12 => (prop_oneof![Just(DEV), Just(DEV_MSIX_ONLY), Just(DEV_BRIDGED)], trap_write())
            .prop_map(|(dev, write)| Op::Trap { dev, write }),
        2 => (0u16..20, virte()).prop_map(|(index, raw)| Op::Virte { index, raw }),
        2 => prop_oneof![
            Just(ViommuWrite::Irta(irta)),
            any::<u64>().prop_map(ViommuWrite::Irta),
            Just(ViommuWrite::GlobalCommand(GCMD_IRE | GCMD_SIRTP)),
            any::<u32>().prop_map(ViommuWrite::GlobalCommand),
            (any::<u16>(), 0u8..20).prop_map(|(index, index_mask)| {
                ViommuWrite::InvalidateEntries { index, index_mask }
            }),
            Just(ViommuWrite::InvalidateAll),
        ].prop_map(Op::Viommu),
        1 => Just(Op::Negotiate),
        1 => Just(Op::Reset),
        1 => Just(Op::VmReset),
    ]
}

/// Every live vector has exactly its route, its started IRQ and its IRTE; the host table holds
/// exactly the live entries; physical MSI-X entries are unmasked exactly when live.
fn check_invariants(fx: &Fx, st: &MockDeviceStorage) -> Result<(), TestCaseError> {
    let vm = fx.host.vm(fx.vm).unwrap();
    let live = vm.legacy_live_vectors();
    prop_assert_eq!(fx.host.routing().routes_of(fx.vm), live);
    prop_assert_eq!(fx.host.irqs().irqs().len(), live);
    let mut used = 0u32;
    for (d, dev) in vm.legacy.devices.iter().zip(&vm.config.devices) {
        for e in &d.msix.entries {
            if let Some(l) = e.slot.live {
                let (i, raw) = l.irte.unwrap();
                prop_assert_eq!(fx.host.table().entry(i), Some(raw));
                used += 1;
            }
        }
        match d.msi.block {
            Some(MsiBlock {
                base: Some(_),
                log2,
            }) => {
                prop_assert!(d.msi.vectors.iter().any(|s| s.live.is_some()));
                used += 1 << log2;
            }
            Some(MsiBlock { base: None, .. }) => prop_assert!(false, "host IR is on"),
            None => prop_assert!(d.msi.vectors.iter().all(|s| s.live.is_none())),
        }
        if vm.state == VmState::Legacy && !d.msix_stale {
            let p = st.device(dev.requester_id);
            for (i, e) in d.msix.entries.iter().enumerate() {
                prop_assert_eq!(!p.msix_entry(i as u32).1, e.slot.live.is_some());
                if let Some(l) = e.slot.live {
                    prop_assert_eq!(p.msix_entry(i as u32).0, l.physical_message);
                }
            }
        }
    }
    prop_assert_eq!(256 - fx.host.table_free(), used);
    prop_assert_eq!(vm.legacy_enabled, vm.legacy.enabled_capabilities());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_trapped_accesses_keep_the_books_exact(ops in proptest::collection::vec(op(), 1..60)) {
        let mut fx = Fx::legacy();
        fx.host
            .set_legacy_config(fx.vm, LegacyConfig { viommu: true, ext_dest_id: true })
            .unwrap();
        let mut st = MockDeviceStorage::new();
        for op in ops {
            match op {
                Op::Trap { dev, write } => {
                    let r = fx.host.trap_write(fx.vm, dev, write, &fx.mem, &mut st);
                    let negotiated = fx.host.vm(fx.vm).unwrap().state() != VmState::Legacy;
                    match (r, write) {
                        (Err(TrapError::MsixNotTrapped { .. }), TrapWrite::MsixEntry { .. }) => {
                            prop_assert!(negotiated)
                        }
                        (Err(TrapError::NoMsi(d)), TrapWrite::Msi(_)) => prop_assert_ne!(d, DEV),
                        (
                            Err(TrapError::MsixIndexOutOfRange { device_id, index, entries: 4 }),
                            TrapWrite::MsixEntry { .. },
                        ) => prop_assert!(device_id != DEV && index >= 4),
                        (Ok(_), _) => {}
                        (Err(e), w) => prop_assert!(false, "{e:?} for {w:?}"),
                    }
                }
                Op::Viommu(w) => {
                    prop_assert!(fx.host.viommu_write(fx.vm, w, &fx.mem, &mut st).is_ok());
                }
                Op::Virte { index, raw } => {
                    fx.mem
                        .write_slice(&raw.to_le_bytes(), GuestAddress(IRT + 16 * u64::from(index)))
                        .unwrap();
                }
                Op::Negotiate => {
                    let enabled = fx.host.vm(fx.vm).unwrap().legacy_interrupts_enabled();
                    let legacy = fx.host.vm(fx.vm).unwrap().state() == VmState::Legacy;
                    let r = fx.g.negotiate(&mut fx.host, &fx.mem, 1, Features::V1_DEFINED);
                    if legacy && enabled != 0 {
                        prop_assert_eq!(r.map(|_| ()), Err(vir_abi::status::Status::INVALID_STATE));
                    }
                }
                Op::Reset => {
                    let _ = fx.g.reset(&mut fx.host, &fx.mem);
                }
                Op::VmReset => fx.host.reset_vm(fx.vm).unwrap(),
            }
            check_invariants(&fx, &st)?;
        }
        fx.host.reset_vm(fx.vm).unwrap();
        prop_assert_eq!(fx.host.table_free(), 256);
        prop_assert_eq!(fx.host.routing().routes_of(fx.vm), 0);
        prop_assert!(fx.host.irqs().irqs().is_empty());
        prop_assert_eq!(fx.host.irqs().invalid_calls(), 0);
        prop_assert_eq!(fx.host.routing().invalid_calls(), 0);
        prop_assert_eq!(fx.host.table().invalid_writes(), 0);
    }
}
