//! The vendor seam: VT-d and AMD-Vi entries, messages and tables.

use vir_abi::feature::Features;
use vir_abi::hw::amd::{AmdIrte32Entry, AmdIrte128, AmdMsi};
use vir_abi::hw::{ApicMode, MsiMessage};
use vir_abi::status::Status;
use vir_abi::wire::{MessageFormat, StorageKind};

use super::*;
use crate::backend::IrteTableId;
use crate::config::{ConfigError, Quotas, VmConfig};
use crate::fixture::{APIC_IDS, DEV, DEV_MSIX_ONLY, RID, RID_MSIX_ONLY, vm_config};
use crate::testing::{Caller, Event, Journal, MockHost, guest_ram, mock_host};

const AMD128: IommuKind = IommuKind::AmdVi(AmdViConfig {
    irte_format: AmdIrteFormat::Bits128,
    address_dm: false,
});

/// vAPIC backing page of vCPU `i` (4 KiB aligned).
fn backing_page(i: usize) -> u64 {
    0x20_0000 + 0x1000 * i as u64
}

fn amd_vm() -> VmConfig {
    let mut c = vm_config(Quotas::default());
    for (i, v) in c.vcpus.iter_mut().enumerate() {
        v.pda = backing_page(i);
    }
    c
}

struct Amd {
    host: MockHost,
    journal: Journal,
    mem: vm_memory::GuestMemoryMmap<()>,
    g: Caller,
    vm: crate::VmId,
}

/// A negotiated VM on an AMD-Vi host; pCPU APIC ids `base + cpu`.
fn amd(iommu: IommuKind, ir_mode: IrMode, apic_mode: ApicMode, apic_base: u32) -> Amd {
    let config = HostConfig {
        iommu,
        ir_mode,
        apic_mode,
        ..HostConfig::default()
    };
    let (mut host, journal) = mock_host(config, 256, 4, 200).unwrap();
    for cpu in 0..4 {
        host.irqs_mut().set_apic_id(cpu, apic_base + cpu);
    }
    let vm = host.add_vm(amd_vm()).unwrap();
    let mem = guest_ram(0x40_0000);
    let g = Caller::new(vm);
    g.negotiate(&mut host, &mem, 1, Features::V1_DEFINED)
        .unwrap();
    Amd {
        host,
        journal,
        mem,
        g,
        vm,
    }
}

impl Amd {
    fn alloc(&mut self, device: u32, kind: StorageKind, log2: u8, index: u32) -> u32 {
        self.g
            .allocate(&mut self.host, &self.mem, device, kind, log2, index)
            .unwrap()
            .handle
            .get()
    }
}

#[test]
fn vtd_seam_composes_what_the_host_always_wrote() {
    let v = IommuKind::Vtd.vendor();
    assert_eq!(v.message_format(), MessageFormat::VTD_REMAPPABLE);
    assert_eq!(v.max_table_entries(), 0x1_0000);
    assert_eq!(v.message(8), Ok(MsiMessage::new(0xFEE0_0118, 0, 0)));
    assert_eq!(v.message(0x1_0000), Err(VendorError::VtdHandle(0x1_0000)));
    let dev = vm_config(Quotas::default()).devices[0];
    assert_eq!(v.table_of(&dev), IrteTableId::Unit);
    // Not present, FPD = 1, SID 0x8010, SVT 1.
    assert_eq!(
        v.reserved_irte(&HostConfig::default(), &dev),
        Ok(0x4_8010_0000_0000_0000_0002)
    );
}

#[test]
fn vir_fmt_h_005_amd_message_is_the_first_index() {
    let v = AMD128.vendor();
    assert_eq!(v.message_format(), MessageFormat::AMD_VI);
    assert_eq!(v.max_table_entries(), AMD_MAX_TABLE_ENTRIES);
    assert_eq!(v.message(0), Ok(MsiMessage::new(0xFEE0_0000, 0, 0)));
    assert_eq!(v.message(0x1FF), Ok(MsiMessage::new(0xFEE0_0000, 0, 0x1FF)));
    // From index 0x200 on the host sets DM whatever the configuration (VIR-FMT-H-005).
    assert_eq!(v.message(0x200), Ok(MsiMessage::new(0xFEE0_0004, 0, 0x200)));
    assert_eq!(v.message(0x7FF), Ok(MsiMessage::new(0xFEE0_0004, 0, 0x7FF)));
    assert_eq!(v.message(0x800), Err(VendorError::AmdIndex(0x800)));
    let dm = IommuKind::AmdVi(AmdViConfig {
        irte_format: AmdIrteFormat::Bits128,
        address_dm: true,
    })
    .vendor();
    assert_eq!(dm.message(0x40), Ok(MsiMessage::new(0xFEE0_0004, 0, 0x40)));
    let dev = vm_config(Quotas::default()).devices[0];
    assert_eq!(v.table_of(&dev), IrteTableId::Device(RID));
}

#[test]
fn vir_qry_h_002_fmt_h_009_amd_host_reports_and_returns_amd_vi() {
    let mut a = amd(AMD128, IrMode::Remapped, ApicMode::X2Apic, 0x200);
    let q = a.g.query(&mut a.host, &a.mem).unwrap();
    assert_eq!(q.message_format, MessageFormat::AMD_VI.0);
    let h = a.alloc(DEV, StorageKind::MSIX, 0, 0);
    let r =
        a.g.activate(&mut a.host, &a.mem, h, 0, APIC_IDS[0], 0x41)
            .unwrap();
    assert_eq!(r.format, MessageFormat::AMD_VI.0);
}

#[test]
fn vir_fmt_h_005_007_amd_msi_block_message_data_is_the_aligned_first_index() {
    let mut a = amd(AMD128, IrMode::Remapped, ApicMode::X2Apic, 0x200);
    a.alloc(DEV, StorageKind::MSIX, 0, 0); // entry 0
    let block = a.alloc(DEV, StorageKind::MSI, 3, 0); // entries 8..16
    for sub in 0..8u16 {
        let r =
            a.g.activate(
                &mut a.host,
                &a.mem,
                block,
                sub,
                APIC_IDS[1],
                0x50 + sub as u8,
            )
            .unwrap();
        let msg = MsiMessage::new(r.address_lo.get(), r.address_hi.get(), r.data.get());
        assert_eq!(msg, MsiMessage::new(0xFEE0_0000, 0, 8), "sub-handle {sub}");
        assert_eq!(AmdMsi::decode(msg).map(|m| m.index), Ok(8));
    }
    // The device adds the vector number: data 8 + i selects entry 8 + i, each present.
    let t = a.host.table();
    for i in 8..16 {
        let e = AmdIrte128::decode(t.entry_in(IrteTableId::Device(RID), i).unwrap()).unwrap();
        assert!(e.remap_en());
    }
}

#[test]
fn vir_fmt_h_006_amd_remapped_128_bit_irte_golden() {
    let mut a = amd(AMD128, IrMode::Remapped, ApicMode::X2Apic, 0x200);
    let h = a.alloc(DEV, StorageKind::MSIX, 0, 0);
    a.g.activate(&mut a.host, &a.mem, h, 0, APIC_IDS[2], 0x41)
        .unwrap();
    let raw = a
        .host
        .table()
        .entry_in(IrteTableId::Device(RID), 0)
        .unwrap();
    // RemapEn, IntType fixed, DM 0, GuestMode 0, destination = pCPU 2 (0x202) in 31:8, host
    // vector 0x20 in 71:64.
    assert_eq!(raw, 0x20_0000_0000_0002_0201);
    match AmdIrte128::decode(raw).unwrap() {
        AmdIrte128::Remapped(e) => {
            assert!(e.remap_en && !e.dest_mode_logical);
            assert_eq!((e.int_type, e.destination, e.vector), (0, 0x202, 0x20));
        }
        AmdIrte128::Guest(g) => panic!("guest mode entry {g:?}"),
    }
    assert_eq!(
        a.host.table().entry(0),
        Some(0),
        "the VT-d unit table is not used"
    );
}

#[test]
fn vir_fmt_h_006_amd_guest_mode_irte_holds_guest_vector_and_backing_page() {
    let mut a = amd(AMD128, IrMode::Posted, ApicMode::X2Apic, 0x200);
    let h = a.alloc(DEV, StorageKind::MSIX, 0, 0);
    a.g.activate(&mut a.host, &a.mem, h, 0, APIC_IDS[3], 0x41)
        .unwrap();
    let raw = a
        .host
        .table()
        .entry_in(IrteTableId::Device(RID), 0)
        .unwrap();
    match AmdIrte128::decode(raw).unwrap() {
        AmdIrte128::Guest(e) => {
            assert!(e.remap_en && e.ga_log_intr && !e.is_run);
            assert_eq!(e.vector, 0x41, "the guest vector");
            assert_eq!(e.backing_page, backing_page(3));
            assert_eq!(e.ga_tag, ga_tag(a.vm.0, 3));
            assert_eq!(e.destination, 0x203, "the vCPU's physical CPU");
        }
        AmdIrte128::Remapped(r) => panic!("remapped entry {r:?}"),
    }
    // Retarget: one 128-bit write of the other vCPU's page and vector.
    a.g.set_affinity(&mut a.host, &a.mem, h, 0, APIC_IDS[1], 0x42)
        .unwrap();
    let raw = a
        .host
        .table()
        .entry_in(IrteTableId::Device(RID), 0)
        .unwrap();
    let AmdIrte128::Guest(e) = AmdIrte128::decode(raw).unwrap() else {
        panic!("not guest mode");
    };
    assert_eq!(
        (e.vector, e.backing_page, e.ga_tag),
        (0x42, backing_page(1), ga_tag(a.vm.0, 1))
    );
}

#[test]
fn vir_fmt_h_006_amd_32_bit_irte_golden() {
    let kind = IommuKind::AmdVi(AmdViConfig {
        irte_format: AmdIrteFormat::Bits32,
        address_dm: false,
    });
    let mut a = amd(kind, IrMode::Remapped, ApicMode::XApic, 0x20);
    let h = a.alloc(DEV, StorageKind::MSIX, 0, 0);
    a.g.activate(&mut a.host, &a.mem, h, 0, APIC_IDS[1], 0x41)
        .unwrap();
    let raw = a
        .host
        .table()
        .entry_in(IrteTableId::Device(RID), 0)
        .unwrap();
    // RemapEn, destination 0x21 in 15:8, host vector 0x20 in 23:16.
    assert_eq!(raw, 0x20_2101);
    let e = AmdIrte32Entry::decode(raw as u32).unwrap();
    assert_eq!((e.remap_en, e.destination, e.vector), (true, 0x21, 0x20));
}

#[test]
fn vir_sec_h_001_amd_entries_lie_in_the_devices_own_table() {
    let mut a = amd(AMD128, IrMode::Remapped, ApicMode::X2Apic, 0x200);
    let h0 = a.alloc(DEV, StorageKind::MSIX, 0, 0);
    let h1 = a.alloc(DEV_MSIX_ONLY, StorageKind::MSIX, 0, 0);
    a.g.activate(&mut a.host, &a.mem, h0, 0, APIC_IDS[0], 0x41)
        .unwrap();
    a.g.activate(&mut a.host, &a.mem, h1, 0, APIC_IDS[0], 0x42)
        .unwrap();
    let t = a.host.table();
    let own = |rid, i| t.entry_in(IrteTableId::Device(rid), i).unwrap();
    // Each device has its own index space: both entries are index 0, each in its own table.
    let e0 = AmdIrte128::decode(own(RID, 0)).unwrap();
    let e1 = AmdIrte128::decode(own(RID_MSIX_ONLY, 0)).unwrap();
    assert!(e0.remap_en() && e1.remap_en());
    assert_ne!(e0.vector(), e1.vector(), "two host IRQs, two host vectors");
    assert_eq!(own(RID, 1), 0);
    for e in a.journal.events() {
        if let Event::IrteWrite { table, .. } = e {
            assert_ne!(table, IrteTableId::Unit, "{e:?}");
        }
    }
}

#[test]
fn vir_alc_h_009_amd_index_space_is_per_device() {
    let config = HostConfig {
        iommu: AMD128,
        ir_mode: IrMode::Remapped,
        ..HostConfig::default()
    };
    let (mut host, _) = mock_host(config, 16, 4, 200).unwrap();
    let vm = host.add_vm(amd_vm()).unwrap();
    let mem = guest_ram(0x40_0000);
    let g = Caller::new(vm);
    g.negotiate(&mut host, &mem, 1, Features::V1_DEFINED)
        .unwrap();
    // DEV fills its 16-entry table ...
    for i in 0..16 {
        let r = g
            .allocate(&mut host, &mem, DEV, StorageKind::MSIX, 0, i)
            .unwrap();
        let m = host
            .vm(vm)
            .unwrap()
            .allocation(r.handle.get())
            .unwrap()
            .message();
        assert_eq!(m.data, i, "index {i} of DEV's own table");
    }
    assert_eq!(
        g.allocate(&mut host, &mem, DEV, StorageKind::IMS_DEVICE, 0, 0)
            .err(),
        Some(Status::TABLE_FULL)
    );
    // ... and another device still has all of its own.
    let r = g
        .allocate(&mut host, &mem, DEV_MSIX_ONLY, StorageKind::MSIX, 0, 0)
        .unwrap();
    let m = host
        .vm(vm)
        .unwrap()
        .allocation(r.handle.get())
        .unwrap()
        .message();
    assert_eq!(m, MsiMessage::new(0xFEE0_0000, 0, 0));
    // 2^IntTabLen: a table size that is not a power of two is refused.
    let c = HostConfig {
        iommu: AMD128,
        ..HostConfig::default()
    };
    assert_eq!(
        mock_host(c, 24, 1, 8).err(),
        Some(ConfigError::TableSize(24))
    );
}

#[test]
fn vir_sec_h_002_amd_reserved_and_deactivated_entries_are_not_present() {
    let mut a = amd(AMD128, IrMode::Posted, ApicMode::X2Apic, 0x200);
    let h = a.alloc(DEV, StorageKind::MSIX, 0, 0);
    a.g.reserve(&mut a.host, &a.mem, h, 0).unwrap();
    let raw = a
        .host
        .table()
        .entry_in(IrteTableId::Device(RID), 0)
        .unwrap();
    match AmdIrte128::decode(raw).unwrap() {
        AmdIrte128::Remapped(e) => assert!(!e.remap_en && e.sup_iopf),
        AmdIrte128::Guest(g) => panic!("{g:?}"),
    }
    a.g.activate(&mut a.host, &a.mem, h, 0, APIC_IDS[0], 0x41)
        .unwrap();
    a.g.deactivate(&mut a.host, &a.mem, h, 0).unwrap();
    assert_eq!(
        a.host.table().entry_in(IrteTableId::Device(RID), 0),
        Some(0)
    );
}

#[test]
fn amd_configurations_the_hardware_cannot_serve_are_rejected() {
    // 32-bit entries: 8-bit destinations, no guest mode.
    for (apic_mode, ir_mode) in [
        (ApicMode::X2Apic, IrMode::Remapped),
        (ApicMode::XApic, IrMode::Posted),
    ] {
        let iommu = IommuKind::AmdVi(AmdViConfig {
            irte_format: AmdIrteFormat::Bits32,
            address_dm: false,
        });
        let c = HostConfig {
            iommu,
            apic_mode,
            ir_mode,
            ..HostConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::IommuMode {
                iommu,
                apic_mode,
                ir_mode
            })
        );
    }
    // Tables above 2048 entries.
    let c = HostConfig {
        iommu: AMD128,
        ..HostConfig::default()
    };
    assert_eq!(
        mock_host(c.clone(), 4096, 1, 8).err(),
        Some(ConfigError::TableSize(4096))
    );
    // Guest mode needs 4 KiB aligned backing pages (the VT-d descriptors of the fixture are not).
    let (mut host, _) = mock_host(c, 2048, 4, 8).unwrap();
    assert_eq!(
        host.add_vm(vm_config(Quotas::default())).err(),
        // vCPU 0's descriptor at 0x10_0000 happens to be page aligned; vCPU 1's is not.
        Some(ConfigError::BadBackingPage {
            vcpu: 1,
            address: 0x10_0040
        })
    );
    assert!(host.add_vm(amd_vm()).is_ok());
}

#[test]
fn amd_destination_outside_a_32_bit_entry_fails_the_activation_cleanly() {
    let kind = IommuKind::AmdVi(AmdViConfig {
        irte_format: AmdIrteFormat::Bits32,
        address_dm: false,
    });
    // pCPU APIC ids 0x200.. do not fit 8 bits: BACKEND_FAILURE, nothing left behind.
    let mut a = amd(kind, IrMode::Remapped, ApicMode::XApic, 0x200);
    let h = a.alloc(DEV, StorageKind::MSIX, 0, 0);
    let before = a.host.snapshot(a.vm).unwrap();
    assert_eq!(
        a.g.activate(&mut a.host, &a.mem, h, 0, APIC_IDS[0], 0x41),
        Err(Status::BACKEND_FAILURE)
    );
    assert_eq!(a.host.snapshot(a.vm).unwrap(), before);
    assert!(a.host.irqs().irqs().is_empty());
}

/// The data bytes of a golden vector of `spec/vectors/` (comment lines skipped).
fn vector_bytes(text: &str) -> Vec<u8> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[test]
fn vir_fmt_h_005_009_amd_activate_responses_match_the_golden_vectors() {
    use zerocopy::IntoBytes;
    let cases = [
        (
            AmdViConfig::default(),
            0x123,
            include_str!("../../../spec/vectors/activate_response_amd.hex"),
        ),
        (
            AmdViConfig {
                irte_format: AmdIrteFormat::Bits128,
                address_dm: true,
            },
            0x40,
            include_str!("../../../spec/vectors/activate_response_amd_msi_dm.hex"),
        ),
    ];
    for (c, base, golden) in cases {
        let v = IommuKind::AmdVi(c).vendor();
        let m = v.message(base).unwrap();
        // What ACTIVATE returns (calls.rs builds the response from these values).
        let r = vir_abi::wire::ActivateResponse {
            address_lo: zerocopy::little_endian::U32::new(m.address_lo),
            address_hi: zerocopy::little_endian::U32::new(m.address_hi),
            data: zerocopy::little_endian::U32::new(m.data),
            format: v.message_format().0,
            reserved0: 0,
            reserved1: zerocopy::little_endian::U16::ZERO,
            reserved2: zerocopy::little_endian::U64::ZERO,
        };
        assert_eq!(
            r.as_bytes(),
            vector_bytes(golden).as_slice(),
            "{c:?} {base:#x}"
        );
    }
}
