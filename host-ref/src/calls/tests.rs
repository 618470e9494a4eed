//! Every validation step and status of every call, in the specification's order.
//! Each negative case also checks VIR-CALL-H-006 (state unchanged) and VIR-CALL-H-007
//! (response untouched) through [`Fx::fails`].

use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::hw::MsiMessage;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, DeactivateRequest, FreeRequest, MessageFormat, NegotiateRequest,
    SetAffinityRequest, StorageKind, Target, activate_flags, vm_state,
};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::backend::{BackendError, BackendOp, Gsi, HostVector, IrteTableId, RouteTarget};
use crate::config::{HostConfig, Quotas};
use crate::fixture::*;
use crate::testing::{Event, MockRouting, activate_request, allocate_request};
use crate::vm::{GuestTarget, VectorState, VmState};

fn negotiate_req(version: u16, features: u64) -> NegotiateRequest {
    NegotiateRequest {
        version: U16::new(version),
        reserved0: U16::ZERO,
        reserved1: U32::ZERO,
        features: U64::new(features),
    }
}

fn affinity_req(handle: u32, sub: u16, apic_id: u32, vector: u8) -> SetAffinityRequest {
    SetAffinityRequest {
        handle: U32::new(handle),
        subhandle: U16::new(sub),
        reserved0: U16::ZERO,
        target: Target::new(apic_id, vector),
    }
}

fn deactivate_req(handle: u32, sub: u16) -> DeactivateRequest {
    DeactivateRequest {
        handle: U32::new(handle),
        subhandle: U16::new(sub),
        reserved0: U16::ZERO,
    }
}

fn free_req(handle: u32) -> FreeRequest {
    FreeRequest {
        handle: U32::new(handle),
        reserved0: U32::ZERO,
    }
}

fn act(handle: u32, sub: u16, apic_id: u32, vector: u8) -> ActivateRequest {
    activate_request(handle, sub, 0, Target::new(apic_id, vector))
}

fn reserve_req(handle: u32, sub: u16) -> ActivateRequest {
    activate_request(handle, sub, activate_flags::RESERVE, Target::new(0, 0))
}

/// VT-d remappable message with handle `base`, SHV = 1, data 0.
fn vtd_message(base: u16) -> MsiMessage {
    MsiMessage::new(
        0xFEE0_0000 | (u32::from(base & 0x7fff) << 5) | 0x18 | (u32::from(base >> 15) << 2),
        0,
        0,
    )
}

// ---------------------------------------------------------------------------------------------
// Common steps 5–7
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_call_h_003_calls_other_than_query_and_negotiate_need_negotiation() {
    let mut fx = Fx::legacy();
    let cases: [(CallCode, Vec<u8>); 7] = [
        (CallCode::RESET, vec![]),
        (
            CallCode::ALLOCATE,
            allocate_request(DEV, StorageKind::MSIX, 0, 0)
                .as_bytes()
                .to_vec(),
        ),
        (CallCode::ACTIVATE, act(1, 0, 0, 0x41).as_bytes().to_vec()),
        (
            CallCode::SET_AFFINITY,
            affinity_req(1, 0, 0, 0x41).as_bytes().to_vec(),
        ),
        (
            CallCode::DEACTIVATE,
            deactivate_req(1, 0).as_bytes().to_vec(),
        ),
        (CallCode::FREE, free_req(1).as_bytes().to_vec()),
        (CallCode::QUERY_QUOTA, vec![]),
    ];
    for (code, req) in cases {
        fx.fails(code, &req, Status::NOT_NEGOTIATED);
    }
    // Step 5 comes before step 7: reserved bits set, still NOT_NEGOTIATED.
    let mut bad = allocate_request(DEV, StorageKind::MSIX, 0, 0);
    bad.reserved0 = U16::new(1);
    fx.fails(CallCode::ALLOCATE, bad.as_bytes(), Status::NOT_NEGOTIATED);
    // QUERY and NEGOTIATE are allowed.
    assert_eq!(
        fx.g.query(&mut fx.host, &fx.mem).map(|q| q.vm_state),
        Ok(vm_state::LEGACY)
    );
}

#[test]
fn vir_call_h_004_query_quota_needs_quota_query() {
    let mut fx = Fx::legacy();
    fx.negotiate(Features::MSIX);
    fx.fails(CallCode::QUERY_QUOTA, &[], Status::FEATURE_NOT_NEGOTIATED);
    let mut fx = Fx::legacy();
    fx.negotiate(Features::MSIX | Features::QUOTA_QUERY);
    let q = fx.g.query_quota(&mut fx.host, &fx.mem).unwrap();
    assert_eq!((q.irtes_total.get(), q.irtes_free.get()), (256, 256));
}

#[test]
fn vir_call_h_005_reserved_fields_and_undefined_flags_rejected_before_call_steps() {
    let mut fx = Fx::negotiated();
    // NEGOTIATE: reserved checked before ALREADY_NEGOTIATED.
    let mut n = negotiate_req(1, 0);
    n.reserved0 = U16::new(1);
    fx.fails(CallCode::NEGOTIATE, n.as_bytes(), Status::INVALID_PARAMETER);
    let mut n = negotiate_req(1, 0);
    n.reserved1 = U32::new(0x8000_0000);
    fx.fails(CallCode::NEGOTIATE, n.as_bytes(), Status::INVALID_PARAMETER);
    // ALLOCATE: reserved checked before the kind (step 1) and the device (step 4).
    let mut a = allocate_request(0xdead, StorageKind(9), 0, 0);
    a.reserved0 = U16::new(1);
    fx.fails(CallCode::ALLOCATE, a.as_bytes(), Status::INVALID_PARAMETER);
    let mut a = allocate_request(DEV, StorageKind::MSIX, 0, 0);
    a.reserved1 = U32::new(1); // the room for an IMS PASID
    fx.fails(CallCode::ALLOCATE, a.as_bytes(), Status::INVALID_PARAMETER);
    // ACTIVATE: undefined flags and target reserved fields, before the handle check.
    for flags in [1 << 1, 1 << 15, 0xffff] {
        fx.fails(
            CallCode::ACTIVATE,
            activate_request(0xdead, 0, flags, Target::new(0, 0x41)).as_bytes(),
            Status::INVALID_PARAMETER,
        );
    }
    let mut t = Target::new(0, 0x41);
    t.reserved0 = 1;
    fx.fails(
        CallCode::ACTIVATE,
        activate_request(0xdead, 0, 0, t).as_bytes(),
        Status::INVALID_PARAMETER,
    );
    let mut t = Target::new(0, 0x41);
    t.reserved1 = U16::new(0x100);
    fx.fails(
        CallCode::ACTIVATE,
        activate_request(0xdead, 0, activate_flags::RESERVE, t).as_bytes(),
        Status::INVALID_PARAMETER,
    );
    // SET_AFFINITY, DEACTIVATE, FREE.
    let mut s = affinity_req(0xdead, 0, 0, 0x41);
    s.reserved0 = U16::new(1);
    fx.fails(
        CallCode::SET_AFFINITY,
        s.as_bytes(),
        Status::INVALID_PARAMETER,
    );
    let mut s = affinity_req(0xdead, 0, 0, 0x41);
    s.target.reserved0 = 0x80;
    fx.fails(
        CallCode::SET_AFFINITY,
        s.as_bytes(),
        Status::INVALID_PARAMETER,
    );
    let mut d = deactivate_req(0xdead, 0);
    d.reserved0 = U16::new(1);
    fx.fails(
        CallCode::DEACTIVATE,
        d.as_bytes(),
        Status::INVALID_PARAMETER,
    );
    let mut f = free_req(0xdead);
    f.reserved0 = U32::new(1);
    fx.fails(CallCode::FREE, f.as_bytes(), Status::INVALID_PARAMETER);
}

// ---------------------------------------------------------------------------------------------
// QUERY and NEGOTIATE
// ---------------------------------------------------------------------------------------------

#[test]
fn query_reports_offer_state_and_quotas_vir_neg_h_006() {
    let quotas = Quotas {
        irtes: 40,
        vectors: 30,
    };
    let config = HostConfig {
        features_offered: Features::MSIX | Features::RESERVATION,
        max_msi_log2: 3,
        ..HostConfig::default()
    };
    let mut fx = Fx::with(config, 256, quotas);
    let q = fx.g.query(&mut fx.host, &fx.mem).unwrap();
    assert_eq!((q.min_version.get(), q.max_version.get()), (1, 1));
    assert_eq!(q.message_format, MessageFormat::VTD_REMAPPABLE.0);
    assert_eq!(q.max_msi_log2, 3);
    assert_eq!(q.vm_state, vm_state::LEGACY);
    assert_eq!(
        q.features_offered.get(),
        (Features::MSIX | Features::RESERVATION).bits()
    );
    assert_eq!(q.features_offered.get() & !Features::V1_DEFINED.bits(), 0);
    assert_eq!((q.features_active.get(), q.active_version.get()), (0, 0));
    assert_eq!((q.irte_quota.get(), q.vector_quota.get()), (40, 30));
    assert_eq!(
        (q.reserved0, q.reserved1.get(), q.reserved2.get()),
        (0, 0, 0)
    );
    fx.negotiate(Features::MSIX);
    let q = fx.g.query(&mut fx.host, &fx.mem).unwrap();
    assert_eq!(q.vm_state, vm_state::NEGOTIATED);
    assert_eq!(
        (q.features_active.get(), q.active_version.get()),
        (Features::MSIX.bits(), 1)
    );
}

#[test]
fn vir_neg_h_005_commit_switches_state_and_counts_sessions() {
    let mut fx = Fx::legacy();
    assert!(fx.host.vm(fx.vm).unwrap().msix_trapped()); // VIR-LEG-H-001
    let r =
        fx.g.negotiate(
            &mut fx.host,
            &fx.mem,
            1,
            Features::MSI | Features::QUOTA_QUERY,
        )
        .unwrap();
    assert_eq!(
        (
            r.version.get(),
            r.session.get(),
            r.features.get(),
            r.reserved0.get()
        ),
        (1, 1, 0x21, 0)
    );
    let vm = fx.host.vm(fx.vm).unwrap();
    assert_eq!(
        vm.state(),
        VmState::Negotiated {
            version: 1,
            features: Features(0x21)
        }
    );
    assert!(!vm.msix_trapped()); // VIR-LEG-H-002
    fx.g.reset(&mut fx.host, &fx.mem).unwrap();
    let r =
        fx.g.negotiate(&mut fx.host, &fx.mem, 1, Features::NONE)
            .unwrap();
    assert_eq!(r.session.get(), 2, "session + 1 per negotiation");
    assert_eq!(r.features.get(), 0);
}

#[test]
fn vir_neg_h_001_already_negotiated_before_version_and_features() {
    let mut fx = Fx::negotiated();
    fx.fails(
        CallCode::NEGOTIATE,
        negotiate_req(1, Features::MSI.bits()).as_bytes(),
        Status::ALREADY_NEGOTIATED,
    );
    fx.fails(
        CallCode::NEGOTIATE,
        negotiate_req(7, 1 << 40).as_bytes(),
        Status::ALREADY_NEGOTIATED,
    );
}

#[test]
fn vir_neg_h_002_version_outside_offered_range() {
    let mut fx = Fx::legacy();
    for v in [0, 2, 0xffff] {
        fx.fails(
            CallCode::NEGOTIATE,
            negotiate_req(v, 0).as_bytes(),
            Status::UNSUPPORTED_VERSION,
        );
    }
    // Version is checked before features.
    fx.fails(
        CallCode::NEGOTIATE,
        negotiate_req(2, 1 << 63).as_bytes(),
        Status::UNSUPPORTED_VERSION,
    );
}

#[test]
fn vir_neg_h_003_feature_not_offered() {
    let config = HostConfig {
        features_offered: Features::MSIX | Features::MSI,
        ..HostConfig::default()
    };
    let mut fx = Fx::with(config, 256, Quotas::default());
    for bits in [
        1u64 << 6,
        1 << 32,
        1 << 63,
        Features::IMS_DEVICE.bits(),
        Features::MSIX.bits() | Features::QUOTA_QUERY.bits(),
    ] {
        fx.fails(
            CallCode::NEGOTIATE,
            negotiate_req(1, bits).as_bytes(),
            Status::UNSUPPORTED_FEATURE,
        );
    }
    // Features before the legacy-interrupt check.
    fx.host.set_legacy_interrupts_enabled(fx.vm, 1).unwrap();
    fx.fails(
        CallCode::NEGOTIATE,
        negotiate_req(1, 1 << 33).as_bytes(),
        Status::UNSUPPORTED_FEATURE,
    );
}

#[test]
fn vir_neg_h_004_legacy_interrupts_enabled_is_invalid_state() {
    let mut fx = Fx::legacy();
    fx.host
        .vm_mut(fx.vm)
        .unwrap()
        .set_legacy_interrupts_enabled(3);
    assert_eq!(fx.host.vm(fx.vm).unwrap().legacy_interrupts_enabled(), 3);
    fx.fails(
        CallCode::NEGOTIATE,
        negotiate_req(1, Features::MSIX.bits()).as_bytes(),
        Status::INVALID_STATE,
    );
    fx.host.set_legacy_interrupts_enabled(fx.vm, 0).unwrap();
    fx.negotiate(Features::MSIX);
}

// ---------------------------------------------------------------------------------------------
// RESET
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_rst_h_001_reset_frees_everything_and_returns_to_legacy() {
    let mut fx = Fx::negotiated();
    let free_before = fx.host.table_free();
    let h1 = fx.active_msix(0);
    let h2 = fx.alloc(DEV, StorageKind::MSI, 3, 0);
    fx.g.reserve(&mut fx.host, &fx.mem, h2, 1).unwrap();
    fx.g.activate(&mut fx.host, &fx.mem, h2, 2, APIC_IDS[3], 0x50)
        .unwrap();
    assert_eq!(fx.host.irqs().irqs().len(), 2);
    fx.g.reset(&mut fx.host, &fx.mem).unwrap();
    // VIR-RST-H-001: IRTEs not present, host IRQs stopped, routes removed.
    assert!(fx.host.table().entries().iter().all(|&e| e == 0));
    assert!(fx.host.irqs().irqs().is_empty());
    assert!(fx.host.routing().routes().is_empty());
    assert_eq!(fx.host.table_free(), free_before);
    let vm = fx.host.vm(fx.vm).unwrap();
    assert_eq!(
        (vm.irtes_used(), vm.vectors_used(), vm.allocations().count()),
        (0, 0, 0)
    );
    // VIR-RST-H-002: legacy, MSI-X trapped again.
    assert_eq!(vm.state(), VmState::Legacy);
    assert!(vm.msix_trapped());
    fx.fails(
        CallCode::FREE,
        free_req(h1).as_bytes(),
        Status::NOT_NEGOTIATED,
    );
    // VIR-RST-H-003: a new negotiation is allowed; old handles stay stale.
    fx.negotiate(Features::V1_DEFINED);
    fx.fails(
        CallCode::FREE,
        free_req(h1).as_bytes(),
        Status::INVALID_HANDLE,
    );
    fx.fails(
        CallCode::FREE,
        free_req(h2).as_bytes(),
        Status::INVALID_HANDLE,
    );
}

// ---------------------------------------------------------------------------------------------
// ALLOCATE
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_alc_h_001_undefined_kind() {
    let mut fx = Fx::negotiated();
    for kind in [0u8, 5, 0x80, 0xff] {
        fx.fails(
            CallCode::ALLOCATE,
            allocate_request(DEV, StorageKind(kind), 0, 0).as_bytes(),
            Status::INVALID_PARAMETER,
        );
    }
}

#[test]
fn vir_alc_h_002_kind_feature_not_negotiated() {
    let mut fx = Fx::legacy();
    fx.negotiate(Features::MSIX);
    for kind in [
        StorageKind::MSI,
        StorageKind::IMS_DEVICE,
        StorageKind::IMS_SYSTEM,
    ] {
        fx.fails(
            CallCode::ALLOCATE,
            allocate_request(DEV, kind, 0, 0).as_bytes(),
            Status::FEATURE_NOT_NEGOTIATED,
        );
    }
    // Step 2 before step 3 (bad shape) and step 4 (device).
    fx.fails(
        CallCode::ALLOCATE,
        allocate_request(0xdead, StorageKind::MSI, 7, 3).as_bytes(),
        Status::FEATURE_NOT_NEGOTIATED,
    );
}

#[test]
fn vir_alc_h_003_shape_of_the_request() {
    let config = HostConfig {
        max_msi_log2: 2,
        ..HostConfig::default()
    };
    let mut fx = Fx::with(config, 256, Quotas::default());
    fx.negotiate(Features::V1_DEFINED);
    for kind in [
        StorageKind::MSIX,
        StorageKind::IMS_DEVICE,
        StorageKind::IMS_SYSTEM,
    ] {
        fx.fails(
            CallCode::ALLOCATE,
            allocate_request(DEV, kind, 1, 0).as_bytes(),
            Status::INVALID_PARAMETER,
        );
    }
    // MSI: above the host's max_msi_log2 (2), above 5, index != 0.
    for (log2, index) in [(3, 0), (6, 0), (0xff, 0), (0, 1), (1, 0xffff_ffff)] {
        fx.fails(
            CallCode::ALLOCATE,
            allocate_request(DEV, StorageKind::MSI, log2, index).as_bytes(),
            Status::INVALID_PARAMETER,
        );
    }
    // Step 3 before step 4.
    fx.fails(
        CallCode::ALLOCATE,
        allocate_request(0xdead, StorageKind::MSIX, 1, 0).as_bytes(),
        Status::INVALID_PARAMETER,
    );
    assert_eq!(
        fx.g.allocate(&mut fx.host, &fx.mem, DEV, StorageKind::MSI, 2, 0)
            .map(|r| r.count.get()),
        Ok(4)
    );
}

#[test]
fn vir_alc_h_004_device_not_assigned_to_this_vm() {
    let mut fx = Fx::negotiated();
    // A device of another VM is not "yours" either.
    let mut other = vm_config(Quotas::default());
    other.devices.truncate(1);
    other.devices[0].device_id = 0x99;
    other.devices[0].requester_id = 0x9999;
    fx.host.add_vm(other).unwrap();
    for dev in [0x99, 0xdead, 0, u32::MAX, DEV | 0x1_0000] {
        fx.fails(
            CallCode::ALLOCATE,
            allocate_request(dev, StorageKind::MSIX, 0, 0).as_bytes(),
            Status::NOT_YOUR_DEVICE,
        );
    }
}

#[test]
fn vir_alc_h_005_storage_not_present() {
    let mut fx = Fx::negotiated();
    for kind in [
        StorageKind::MSI,
        StorageKind::IMS_DEVICE,
        StorageKind::IMS_SYSTEM,
    ] {
        fx.fails(
            CallCode::ALLOCATE,
            allocate_request(DEV_MSIX_ONLY, kind, 0, 0).as_bytes(),
            Status::STORAGE_NOT_PRESENT,
        );
    }
    // Step 5 before step 6.
    fx.fails(
        CallCode::ALLOCATE,
        allocate_request(DEV_MSIX_ONLY, StorageKind::IMS_DEVICE, 0, 999).as_bytes(),
        Status::STORAGE_NOT_PRESENT,
    );
}

#[test]
fn vir_alc_h_006_index_outside_storage() {
    let mut fx = Fx::negotiated();
    for (kind, index) in [
        (StorageKind::MSIX, 16),
        (StorageKind::MSIX, u32::MAX),
        (StorageKind::IMS_DEVICE, 4),
        (StorageKind::IMS_SYSTEM, 64),
    ] {
        fx.fails(
            CallCode::ALLOCATE,
            allocate_request(DEV, kind, 0, index).as_bytes(),
            Status::INVALID_INDEX,
        );
    }
    // MSI: 16 and 32 vectors exceed the capability's 8.
    for log2 in [4, 5] {
        fx.fails(
            CallCode::ALLOCATE,
            allocate_request(DEV, StorageKind::MSI, log2, 0).as_bytes(),
            Status::INVALID_INDEX,
        );
    }
    // The last index of each storage is fine.
    for (kind, index) in [
        (StorageKind::MSIX, 15),
        (StorageKind::IMS_DEVICE, 3),
        (StorageKind::IMS_SYSTEM, 63),
    ] {
        assert_eq!(
            fx.g.allocate(&mut fx.host, &fx.mem, DEV, kind, 0, index)
                .map(|r| r.count.get()),
            Ok(1)
        );
    }
}

#[test]
fn vir_alc_h_007_slot_in_use() {
    let mut fx = Fx::negotiated();
    fx.alloc(DEV, StorageKind::MSIX, 0, 3);
    fx.fails(
        CallCode::ALLOCATE,
        allocate_request(DEV, StorageKind::MSIX, 0, 3).as_bytes(),
        Status::INDEX_IN_USE,
    );
    // The same index in another storage kind or device is another slot.
    fx.alloc(DEV, StorageKind::IMS_DEVICE, 0, 3);
    fx.alloc(DEV_MSIX_ONLY, StorageKind::MSIX, 0, 3);
    // MSI: any live MSI allocation of the device collides, whatever the size.
    let h = fx.alloc(DEV, StorageKind::MSI, 1, 0);
    for log2 in [0, 1, 3] {
        fx.fails(
            CallCode::ALLOCATE,
            allocate_request(DEV, StorageKind::MSI, log2, 0).as_bytes(),
            Status::INDEX_IN_USE,
        );
    }
    fx.g.free(&mut fx.host, &fx.mem, h).unwrap();
    fx.alloc(DEV, StorageKind::MSI, 3, 0);
}

#[test]
fn vir_alc_h_008_irte_quota() {
    let mut fx = Fx::with(
        HostConfig::default(),
        256,
        Quotas {
            irtes: 10,
            vectors: 10,
        },
    );
    fx.negotiate(Features::V1_DEFINED);
    fx.alloc(DEV, StorageKind::MSI, 3, 0);
    fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 1);
    assert_eq!(fx.host.vm(fx.vm).unwrap().irtes_used(), 10);
    fx.fails(
        CallCode::ALLOCATE,
        allocate_request(DEV, StorageKind::IMS_SYSTEM, 0, 0).as_bytes(),
        Status::QUOTA_EXCEEDED,
    );
    // Step 7 before step 8.
    fx.fails(
        CallCode::ALLOCATE,
        allocate_request(DEV, StorageKind::MSIX, 0, 1).as_bytes(),
        Status::INDEX_IN_USE,
    );
    fx.g.free(&mut fx.host, &fx.mem, h).unwrap();
    fx.alloc(DEV, StorageKind::IMS_SYSTEM, 0, 0);
}

#[test]
fn vir_alc_h_009_no_naturally_aligned_run_is_table_full() {
    let mut fx = Fx::with(HostConfig::default(), 16, Quotas::default());
    fx.negotiate(Features::V1_DEFINED);
    let single = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    let base = |fx: &Fx, h: u32| fx.host.vm(fx.vm).unwrap().allocation(h).map(|a| a.base);
    assert_eq!(base(&fx, single), Some(0));
    // A block of 8 is naturally aligned: entry 0 is taken, so it lands at 8.
    let block = fx.alloc(DEV, StorageKind::MSI, 3, 0);
    assert_eq!(base(&fx, block), Some(8));
    for i in 0..3 {
        fx.alloc(DEV, StorageKind::IMS_DEVICE, 0, i); // entries 1, 2, 3
    }
    for i in 1..5 {
        fx.alloc(DEV, StorageKind::MSIX, 0, i); // entries 4..8
    }
    assert_eq!(fx.host.table_free(), 0);
    fx.fails(
        CallCode::ALLOCATE,
        allocate_request(DEV, StorageKind::MSIX, 0, 5).as_bytes(),
        Status::TABLE_FULL,
    );
    // Quota (step 8) is checked before the table (step 9).
    let mut fx2 = Fx::with(
        HostConfig::default(),
        1,
        Quotas {
            irtes: 1,
            vectors: 1,
        },
    );
    fx2.negotiate(Features::V1_DEFINED);
    fx2.alloc(DEV, StorageKind::MSIX, 0, 0);
    fx2.fails(
        CallCode::ALLOCATE,
        allocate_request(DEV, StorageKind::MSIX, 0, 1).as_bytes(),
        Status::QUOTA_EXCEEDED,
    );
    // Freeing makes room again; the freed entry is reused.
    fx.g.free(&mut fx.host, &fx.mem, single).unwrap();
    let again = fx.alloc(DEV_MSIX_ONLY, StorageKind::MSIX, 0, 0);
    assert_eq!(base(&fx, again), Some(0));
}

#[test]
fn vir_alc_h_010_011_handle_nonzero_and_entries_reserved_not_present() {
    let mut fx = Fx::negotiated();
    fx.journal.clear();
    let r =
        fx.g.allocate(&mut fx.host, &fx.mem, DEV, StorageKind::MSI, 2, 0)
            .unwrap();
    assert_ne!(r.handle.get(), 0);
    assert_eq!((r.count.get(), r.reserved0.get()), (4, 0));
    let a = fx
        .host
        .vm(fx.vm)
        .unwrap()
        .allocation(r.handle.get())
        .unwrap()
        .clone();
    assert_eq!(
        (a.device_id, a.kind, a.index, a.log2_count, a.base),
        (DEV, StorageKind::MSI, 0, 2, 0)
    );
    assert_eq!(a.vectors, vec![VectorState::Allocated; 4]);
    assert!(!a.message_issued);
    // Programmed not present, and nothing else touched on the physical side.
    let writes: Vec<Event> = (0..4)
        .map(|index| Event::IrteWrite {
            table: IrteTableId::Unit,
            index,
            entry: 0,
        })
        .collect();
    assert_eq!(fx.journal.events(), writes);
    assert_eq!(fx.host.table_free(), 252);
    let s = fx.snapshot();
    assert_eq!(
        s.irtes,
        vec![(0, Some(0)), (1, Some(0)), (2, Some(0)), (3, Some(0))]
    );
    assert_eq!(s.table.bitmap[0], 0xf);
}

// ---------------------------------------------------------------------------------------------
// ACTIVATE
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_act_h_001_handle_not_live() {
    let mut fx = Fx::negotiated();
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    for bad in [0, h + 1, h | 0x0001_0000, u32::MAX, 0xffff] {
        fx.fails(
            CallCode::ACTIVATE,
            act(bad, 0, 0, 0x41).as_bytes(),
            Status::INVALID_HANDLE,
        );
    }
    fx.g.free(&mut fx.host, &fx.mem, h).unwrap();
    fx.fails(
        CallCode::ACTIVATE,
        act(h, 0, 0, 0x41).as_bytes(),
        Status::INVALID_HANDLE,
    );
}

#[test]
fn vir_act_h_002_subhandle_outside_the_block() {
    let mut fx = Fx::negotiated();
    let single = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    let block = fx.alloc(DEV, StorageKind::MSI, 3, 0);
    fx.fails(
        CallCode::ACTIVATE,
        act(single, 1, 0, 0x41).as_bytes(),
        Status::INVALID_SUBHANDLE,
    );
    fx.fails(
        CallCode::ACTIVATE,
        act(block, 8, 0, 0x41).as_bytes(),
        Status::INVALID_SUBHANDLE,
    );
    fx.fails(
        CallCode::ACTIVATE,
        act(block, 0xffff, 0, 0x41).as_bytes(),
        Status::INVALID_SUBHANDLE,
    );
    // Step 2 before step 5 (target).
    fx.fails(
        CallCode::ACTIVATE,
        act(block, 8, 0xdead, 0).as_bytes(),
        Status::INVALID_SUBHANDLE,
    );
    assert_eq!(
        fx.g.activate(&mut fx.host, &fx.mem, block, 7, 0, 0x41)
            .map(|_| ()),
        Ok(())
    );
}

#[test]
fn vir_act_h_003_reserve_needs_reservation_feature() {
    let mut fx = Fx::legacy();
    fx.negotiate(Features::MSIX);
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    fx.fails(
        CallCode::ACTIVATE,
        reserve_req(h, 0).as_bytes(),
        Status::FEATURE_NOT_NEGOTIATED,
    );
    // Plain activation does not need it.
    assert_eq!(
        fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0, 0x41)
            .map(|r| r.data.get()),
        Ok(0)
    );
}

#[test]
fn vir_act_h_004_state_rules() {
    let mut fx = Fx::negotiated();
    let h = fx.alloc(DEV, StorageKind::MSI, 1, 0);
    // RESERVE from ALLOCATED: fine; again from RESERVED: INVALID_STATE.
    fx.g.reserve(&mut fx.host, &fx.mem, h, 0).unwrap();
    fx.fails(
        CallCode::ACTIVATE,
        reserve_req(h, 0).as_bytes(),
        Status::INVALID_STATE,
    );
    // Plain activation from RESERVED: fine; from ACTIVE: INVALID_STATE (plain or RESERVE).
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0, 0x41).unwrap();
    fx.fails(
        CallCode::ACTIVATE,
        act(h, 0, 0, 0x42).as_bytes(),
        Status::INVALID_STATE,
    );
    fx.fails(
        CallCode::ACTIVATE,
        reserve_req(h, 0).as_bytes(),
        Status::INVALID_STATE,
    );
    // Step 4 before step 5: a bad target on an active vector is still INVALID_STATE.
    fx.fails(
        CallCode::ACTIVATE,
        act(h, 0, 0xdead, 0).as_bytes(),
        Status::INVALID_STATE,
    );
    // The other vector of the block is independent.
    fx.g.activate(&mut fx.host, &fx.mem, h, 1, 0, 0x42).unwrap();
}

#[test]
fn vir_act_h_005_target_must_be_a_vcpu_of_this_vm_and_a_valid_vector() {
    let mut fx = Fx::negotiated();
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    for (apic, vector) in [
        (2, 0x41),
        (0xffff_ffff, 0x41),
        (0x1235, 0x41),
        (0, 0x0f),
        (0, 0),
    ] {
        fx.fails(
            CallCode::ACTIVATE,
            act(h, 0, apic, vector).as_bytes(),
            Status::INVALID_TARGET,
        );
    }
    // VIR-SEC-H-003: an APIC id of another VM's vCPU names nothing here.
    let mut other = vm_config(Quotas::default());
    other.devices.clear();
    other.vcpus.truncate(1);
    other.vcpus[0].apic_id = 0x77;
    fx.host.add_vm(other).unwrap();
    fx.fails(
        CallCode::ACTIVATE,
        act(h, 0, 0x77, 0x41).as_bytes(),
        Status::INVALID_TARGET,
    );
    // 0x10 is the lowest vector accepted; 0xff the highest.
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0x1234, 0x10)
        .unwrap();
    let h2 = fx.alloc(DEV, StorageKind::MSIX, 0, 1);
    fx.g.activate(&mut fx.host, &fx.mem, h2, 0, 0x100, 0xff)
        .unwrap();
    // RESERVE ignores the target's APIC id and vector (reserved fields are still checked).
    let h3 = fx.alloc(DEV, StorageKind::MSIX, 0, 2);
    let r = activate_request(h3, 0, activate_flags::RESERVE, Target::new(0xdead, 3));
    let (status, _) =
        fx.g.raw(&mut fx.host, &fx.mem, CallCode::ACTIVATE, r.as_bytes(), 24);
    assert_eq!(status, Status::SUCCESS);
}

#[test]
fn vir_act_h_006_vector_quota_is_vectors_exhausted() {
    let mut fx = Fx::with(
        HostConfig::default(),
        256,
        Quotas {
            irtes: 8,
            vectors: 1,
        },
    );
    fx.negotiate(Features::V1_DEFINED);
    let h = fx.alloc(DEV, StorageKind::MSI, 1, 0);
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0, 0x41).unwrap();
    fx.fails(
        CallCode::ACTIVATE,
        act(h, 1, 0, 0x42).as_bytes(),
        Status::VECTORS_EXHAUSTED,
    );
    // A reservation takes no vector.
    fx.g.reserve(&mut fx.host, &fx.mem, h, 1).unwrap();
    fx.g.deactivate(&mut fx.host, &fx.mem, h, 0).unwrap();
    fx.g.activate(&mut fx.host, &fx.mem, h, 1, 0, 0x42).unwrap();
}

#[test]
fn vir_act_h_006_posted_flow_order_route_then_irq_then_irte() {
    let mut fx = Fx::negotiated();
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 5);
    fx.journal.clear();
    let r =
        fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0x100, 0x41)
            .unwrap();
    let ev = fx.journal.events();
    assert_eq!(ev.len(), 3, "{ev:?}");
    let target = RouteTarget {
        vcpu_index: 2,
        apic_id: 0x100,
        vector: 0x41,
    };
    assert_eq!(
        ev[0],
        Event::AddRoute {
            vm: fx.vm,
            gsi: Gsi(MockRouting::FIRST_GSI),
            target
        }
    );
    let Event::StartIrq {
        source, gsi, irq, ..
    } = ev[1]
    else {
        panic!("{:?}", ev[1])
    };
    assert_eq!(
        (source.requester_id, source.kind, source.slot),
        (RID, StorageKind::MSIX, 5)
    );
    assert_eq!(gsi, Gsi(MockRouting::FIRST_GSI));
    assert_eq!(irq.vector.cpu, 2, "host IRQ on the pCPU of the target vCPU");
    // Posted format: IM = 1, P = 1, guest vector 0x41, PDA of vCPU 2, SVT = 1, SQ = 0, SID.
    let expected =
        1 | 1 << 15 | 0x41 << 16 | ((pda(2) as u128 >> 6) << 38) | (RID as u128) << 64 | 1 << 82;
    assert_eq!(
        ev[2],
        Event::IrteWrite {
            table: IrteTableId::Unit,
            index: 0,
            entry: expected
        }
    );
    assert_eq!(fx.host.table().entry(0), Some(expected));
    assert_eq!(r.format, MessageFormat::VTD_REMAPPABLE.0);
    assert_eq!(fx.host.vm(fx.vm).unwrap().vectors_used(), 1);
}

#[test]
fn vir_fmt_h_003_posted_irte_golden() {
    let mut fx = Fx::negotiated();
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0, 0x41).unwrap();
    // P, IM, vector 0x41, PDA 0x10_0000 (bits 31:6 at 63:38), SID 0x8010, SQ 0, SVT 1.
    assert_eq!(fx.host.table().entry(0), Some(0x4_8010_0010_0000_0041_8001));
}

#[test]
fn vir_fmt_h_003_remapped_irte_golden_host_vector_and_pcpu_x2apic_id() {
    let mut fx = Fx::remapped();
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0, 0x41).unwrap();
    // P, IM 0, DM 0, RH 0, TM 0, DLM 0, host vector 0x20, DST = pCPU 0's x2APIC id 0x200,
    // SID 0x8010, SQ 0, SVT 1.
    assert_eq!(fx.host.table().entry(0), Some(0x4_8010_0000_0200_0020_0001));
    let irq = *fx.host.irqs().irqs().values().next().unwrap();
    assert_eq!(
        irq.vector,
        HostVector {
            cpu: 0,
            apic_id: 0x200,
            vector: 0x20
        }
    );
}

#[test]
fn vir_sec_h_001_bridged_device_uses_bus_range_source_check() {
    let mut fx = Fx::remapped();
    let h = fx.alloc(DEV_BRIDGED, StorageKind::MSIX, 0, 0);
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0, 0x41).unwrap();
    // SVT = 2, SID = start bus 0x40 << 8 | end bus 0x47.
    assert_eq!(fx.host.table().entry(0), Some(0x8_4047_0000_0200_0020_0001));
    let irte = vir_abi::hw::Irte::decode(
        fx.host.table().entry(0).unwrap(),
        vir_abi::hw::ApicMode::X2Apic,
    )
    .unwrap();
    assert!(irte.sid_matches(RID_BRIDGED));
    assert!(!irte.sid_matches(RID), "another bus is refused");
}

#[test]
fn vir_act_h_008_009_fmt_h_001_002_message_is_the_allocations_vtd_message() {
    let mut fx = Fx::negotiated();
    fx.alloc(DEV, StorageKind::MSIX, 0, 0); // entry 0
    let block = fx.alloc(DEV, StorageKind::MSI, 3, 0); // entries 8..16
    let mut messages = Vec::new();
    for sub in 0..8u16 {
        let r =
            fx.g.activate(
                &mut fx.host,
                &fx.mem,
                block,
                sub,
                APIC_IDS[sub as usize % 4],
                0x40 + sub as u8,
            )
            .unwrap();
        assert_eq!(
            r.format,
            MessageFormat::VTD_REMAPPABLE.0,
            "never X86_COMPAT"
        );
        assert_eq!(
            (r.reserved0, r.reserved1.get(), r.reserved2.get()),
            (0, 0, 0)
        );
        messages.push(MsiMessage::new(
            r.address_lo.get(),
            r.address_hi.get(),
            r.data.get(),
        ));
    }
    // Handle = first IRTE index 8, SHV = 1, data 0, high address 0; same for every sub-handle.
    assert!(messages.iter().all(|&m| m == vtd_message(8)));
    assert_eq!(messages[0], MsiMessage::new(0xFEE0_0118, 0, 0));
    let decoded = vir_abi::hw::RemappableMsi::decode(messages[0]).unwrap();
    assert_eq!(
        (decoded.handle, decoded.shv, decoded.subhandle),
        (8, true, 0)
    );
    assert_eq!(
        fx.host
            .vm(fx.vm)
            .unwrap()
            .allocation(block)
            .unwrap()
            .message(),
        vtd_message(8)
    );
}

#[test]
fn vir_act_h_007_route_failure_returns_backend_status_and_leaves_nothing() {
    for (error, status) in [
        (
            BackendError::Os {
                op: BackendOp::AddRoute,
                errno: 12,
            },
            Status::BACKEND_FAILURE,
        ),
        (
            BackendError::RoutesExhausted { capacity: 1 },
            Status::BACKEND_FAILURE,
        ),
        (
            BackendError::VectorsExhausted { cpu: 0 },
            Status::VECTORS_EXHAUSTED,
        ),
    ] {
        let mut fx = Fx::negotiated();
        let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
        fx.host
            .routing_mut()
            .fail_next(BackendOp::AddRoute, 1, error);
        fx.journal.clear();
        fx.fails(CallCode::ACTIVATE, act(h, 0, 0, 0x41).as_bytes(), status);
        assert_eq!(
            fx.journal.events(),
            vec![Event::Failed {
                op: BackendOp::AddRoute,
                error
            }]
        );
    }
}

#[test]
fn vir_act_h_007_irq_failure_unwinds_the_route_and_never_writes_the_irte() {
    for (error, status) in [
        (
            BackendError::Os {
                op: BackendOp::StartIrq,
                errno: 5,
            },
            Status::BACKEND_FAILURE,
        ),
        (
            BackendError::VectorsExhausted { cpu: 1 },
            Status::VECTORS_EXHAUSTED,
        ),
    ] {
        let mut fx = Fx::negotiated();
        let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
        fx.host.irqs_mut().fail_next(BackendOp::StartIrq, 1, error);
        fx.journal.clear();
        fx.fails(CallCode::ACTIVATE, act(h, 0, 1, 0x41).as_bytes(), status);
        let gsi = Gsi(MockRouting::FIRST_GSI);
        let target = RouteTarget {
            vcpu_index: 1,
            apic_id: 1,
            vector: 0x41,
        };
        assert_eq!(
            fx.journal.events(),
            vec![
                Event::AddRoute {
                    vm: fx.vm,
                    gsi,
                    target
                },
                Event::Failed {
                    op: BackendOp::StartIrq,
                    error
                },
                Event::RemoveRoute { vm: fx.vm, gsi },
            ]
        );
        assert_eq!(
            fx.host.routing().invalid_calls() + fx.host.irqs().invalid_calls(),
            0
        );
    }
}

#[test]
fn vir_act_h_006_real_vector_exhaustion_on_the_target_pcpu() {
    let mut fx = Fx::negotiated();
    fx.host.irqs_mut().set_capacity(3, 1);
    let h1 = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    let h2 = fx.alloc(DEV, StorageKind::MSIX, 0, 1);
    fx.g.activate(&mut fx.host, &fx.mem, h1, 0, 0x1234, 0x41)
        .unwrap(); // vCPU 3 on pCPU 3
    fx.fails(
        CallCode::ACTIVATE,
        act(h2, 0, 0x1234, 0x42).as_bytes(),
        Status::VECTORS_EXHAUSTED,
    );
    fx.g.activate(&mut fx.host, &fx.mem, h2, 0, 0x100, 0x42)
        .unwrap();
}

#[test]
fn reserve_programs_not_present_fpd_entry_without_physical_objects() {
    let mut fx = Fx::negotiated();
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    fx.journal.clear();
    let r = fx.g.reserve(&mut fx.host, &fx.mem, h, 0).unwrap();
    assert_eq!(
        MsiMessage::new(r.address_lo.get(), r.address_hi.get(), r.data.get()),
        vtd_message(0)
    );
    // P = 0, FPD = 1, source check kept; no route, no IRQ, no vector.
    assert_eq!(
        fx.journal.events(),
        vec![Event::IrteWrite {
            table: IrteTableId::Unit,
            index: 0,
            entry: 0x4_8010_0000_0000_0000_0002
        }]
    );
    let vm = fx.host.vm(fx.vm).unwrap();
    assert_eq!(vm.vectors_used(), 0);
    assert_eq!(
        vm.allocation(h).unwrap().vectors,
        vec![VectorState::Reserved]
    );
    assert!(vm.allocation(h).unwrap().message_issued);
}

// ---------------------------------------------------------------------------------------------
// SET_AFFINITY
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_aff_h_001_002_003_handle_subhandle_state_target() {
    let mut fx = Fx::negotiated();
    let h = fx.alloc(DEV, StorageKind::MSI, 1, 0);
    fx.fails(
        CallCode::SET_AFFINITY,
        affinity_req(0, 0, 0, 0x41).as_bytes(),
        Status::INVALID_HANDLE,
    );
    fx.fails(
        CallCode::SET_AFFINITY,
        affinity_req(h ^ 0x0001_0000, 0, 0, 0x41).as_bytes(),
        Status::INVALID_HANDLE,
    );
    fx.fails(
        CallCode::SET_AFFINITY,
        affinity_req(h, 2, 0, 0x41).as_bytes(),
        Status::INVALID_SUBHANDLE,
    );
    // VIR-AFF-H-002: only ACTIVE vectors.
    fx.fails(
        CallCode::SET_AFFINITY,
        affinity_req(h, 0, 0, 0x41).as_bytes(),
        Status::INVALID_STATE,
    );
    fx.g.reserve(&mut fx.host, &fx.mem, h, 0).unwrap();
    fx.fails(
        CallCode::SET_AFFINITY,
        affinity_req(h, 0, 0, 0x41).as_bytes(),
        Status::INVALID_STATE,
    );
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0, 0x41).unwrap();
    // VIR-AFF-H-003
    for (apic, vector) in [(7, 0x41), (0, 0x0f)] {
        fx.fails(
            CallCode::SET_AFFINITY,
            affinity_req(h, 0, apic, vector).as_bytes(),
            Status::INVALID_TARGET,
        );
    }
}

#[test]
fn set_affinity_same_target_succeeds_without_backend_calls() {
    let mut fx = Fx::negotiated();
    let h = fx.active_msix(0);
    let before = fx.state();
    fx.journal.clear();
    fx.g.set_affinity(&mut fx.host, &fx.mem, h, 0, APIC_IDS[0], 0x41)
        .unwrap();
    assert_eq!(fx.journal.events(), vec![]);
    assert_eq!(fx.state(), before);
}

#[test]
fn vir_aff_h_004_005_retarget_rewrites_irte_route_and_host_irq_only() {
    let mut fx = Fx::remapped();
    let h = fx.active_msix(3);
    let msg_before = fx.host.vm(fx.vm).unwrap().allocation(h).unwrap().message();
    let VectorState::Active(old) = fx.host.vm(fx.vm).unwrap().allocation(h).unwrap().vectors[0]
    else {
        panic!()
    };
    fx.journal.clear();
    fx.g.set_affinity(&mut fx.host, &fx.mem, h, 0, 0x1234, 0x77)
        .unwrap();
    let new_vec = HostVector {
        cpu: 3,
        apic_id: 0x203,
        vector: 0x20,
    };
    let irte = 1 | 0x20 << 16 | 0x203u128 << 32 | (RID as u128) << 64 | 1 << 82;
    assert_eq!(
        fx.journal.events(),
        vec![
            Event::PrepareAffinity {
                irq: old.host_irq.id,
                vector: new_vec
            },
            Event::UpdateRoute {
                vm: fx.vm,
                gsi: old.gsi,
                target: RouteTarget {
                    vcpu_index: 3,
                    apic_id: 0x1234,
                    vector: 0x77
                }
            },
            Event::IrteWrite {
                table: IrteTableId::Unit,
                index: 0,
                entry: irte
            },
            Event::CommitAffinity {
                irq: old.host_irq.id
            },
        ]
    );
    let a = fx.host.vm(fx.vm).unwrap().allocation(h).unwrap().clone();
    let VectorState::Active(new) = a.vectors[0] else {
        panic!()
    };
    assert_eq!(
        new.target,
        GuestTarget {
            apic_id: 0x1234,
            vector: 0x77
        }
    );
    assert_eq!(
        (
            new.vcpu_index,
            new.gsi,
            new.host_irq.id,
            new.host_irq.vector,
            new.irte
        ),
        (3, old.gsi, old.host_irq.id, new_vec, irte)
    );
    assert_eq!(
        a.message(),
        msg_before,
        "VIR-AFF-H-005: the message never changes"
    );
    assert_eq!(
        fx.host.irqs().vectors_in_use(0).len(),
        0,
        "old vector released"
    );
}

#[test]
fn set_affinity_posted_same_pcpu_rewrites_pda_and_vector_without_moving_the_irq() {
    let mut fx = Fx::negotiated();
    // Two vCPUs on the same pCPU: vCPU 1 moved onto pCPU 0.
    let h = fx.active_msix(0);
    fx.journal.clear();
    fx.g.set_affinity(&mut fx.host, &fx.mem, h, 0, APIC_IDS[0], 0x99)
        .unwrap();
    let irte =
        1 | 1 << 15 | 0x99 << 16 | ((pda(0) as u128 >> 6) << 38) | (RID as u128) << 64 | 1 << 82;
    let ev = fx.journal.events();
    assert!(matches!(ev[0], Event::UpdateRoute { .. }), "{ev:?}");
    assert_eq!(
        ev[1..],
        [Event::IrteWrite {
            table: IrteTableId::Unit,
            index: 0,
            entry: irte
        }]
    );
}

#[test]
fn set_affinity_remapped_same_pcpu_only_moves_the_route() {
    let mut fx = Fx::remapped();
    let h = fx.active_msix(0);
    let before = fx.host.table().entry(0);
    fx.journal.clear();
    fx.g.set_affinity(&mut fx.host, &fx.mem, h, 0, APIC_IDS[0], 0x99)
        .unwrap();
    let ev = fx.journal.events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let target = RouteTarget {
        vcpu_index: 0,
        apic_id: APIC_IDS[0],
        vector: 0x99,
    };
    assert!(
        matches!(ev[0], Event::UpdateRoute { target: t, .. } if t == target),
        "{ev:?}"
    );
    assert_eq!(
        fx.host.table().entry(0),
        before,
        "host vector and pCPU unchanged"
    );
}

#[test]
fn xapic_mode_puts_the_destination_in_bits_47_40_and_rejects_wide_apic_ids() {
    let config = HostConfig {
        ir_mode: crate::IrMode::Remapped,
        apic_mode: vir_abi::hw::ApicMode::XApic,
        ..HostConfig::default()
    };
    let mut fx = Fx::with(config, 256, Quotas::default());
    fx.negotiate(Features::V1_DEFINED);
    fx.host.irqs_mut().set_apic_id(1, 0x21);
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, APIC_IDS[1], 0x41)
        .unwrap();
    assert_eq!(
        fx.host.table().entry(0),
        Some(1 | 0x20 << 16 | 0x21 << 40 | (RID as u128) << 64 | 1 << 82)
    );
    // pCPU 0's APIC id 0x200 does not fit an xAPIC destination: the IRTE cannot be built, and
    // the route and the IRQ are unwound (VIR-ACT-H-007).
    let h2 = fx.alloc(DEV, StorageKind::MSIX, 0, 1);
    fx.journal.clear();
    fx.fails(
        CallCode::ACTIVATE,
        act(h2, 0, APIC_IDS[0], 0x41).as_bytes(),
        Status::BACKEND_FAILURE,
    );
    let ev = fx.journal.events();
    assert!(
        matches!(
            ev[..],
            [
                Event::AddRoute { .. },
                Event::StartIrq { .. },
                Event::StopIrq { .. },
                Event::RemoveRoute { .. }
            ]
        ),
        "{ev:?}"
    );
    // Same for a move onto that pCPU: the prepared vector is aborted, the old target stays.
    fx.journal.clear();
    fx.fails(
        CallCode::SET_AFFINITY,
        affinity_req(h, 0, APIC_IDS[0], 0x41).as_bytes(),
        Status::BACKEND_FAILURE,
    );
    let ev = fx.journal.events();
    assert!(
        matches!(
            ev[..],
            [Event::PrepareAffinity { .. }, Event::AbortAffinity { .. }]
        ),
        "{ev:?}"
    );
}

#[test]
fn vir_aff_h_004_failure_leaves_the_old_target_in_force() {
    for (op, error, status) in [
        (
            BackendOp::PrepareAffinity,
            BackendError::VectorsExhausted { cpu: 2 },
            Status::VECTORS_EXHAUSTED,
        ),
        (
            BackendOp::PrepareAffinity,
            BackendError::Os {
                op: BackendOp::PrepareAffinity,
                errno: 5,
            },
            Status::BACKEND_FAILURE,
        ),
        (
            BackendOp::UpdateRoute,
            BackendError::Os {
                op: BackendOp::UpdateRoute,
                errno: 12,
            },
            Status::BACKEND_FAILURE,
        ),
        (
            BackendOp::UpdateRoute,
            BackendError::VectorsExhausted { cpu: 2 },
            Status::VECTORS_EXHAUSTED,
        ),
    ] {
        for posted in [true, false] {
            let mut fx = if posted {
                Fx::negotiated()
            } else {
                Fx::remapped()
            };
            let h = fx.active_msix(0);
            match op {
                BackendOp::UpdateRoute => fx.host.routing_mut().fail_next(op, 1, error),
                _ => fx.host.irqs_mut().fail_next(op, 1, error),
            }
            fx.fails(
                CallCode::SET_AFFINITY,
                affinity_req(h, 0, 0x100, 0x55).as_bytes(),
                status,
            );
            assert_eq!(
                fx.host.irqs().vectors_in_use(2).len(),
                0,
                "prepared vector aborted"
            );
            assert_eq!(fx.host.irqs().invalid_calls(), 0);
        }
    }
}

#[test]
fn set_affinity_real_vector_exhaustion_on_the_new_pcpu() {
    let mut fx = Fx::remapped();
    fx.host.irqs_mut().set_capacity(1, 0);
    let h = fx.active_msix(0);
    fx.fails(
        CallCode::SET_AFFINITY,
        affinity_req(h, 0, 1, 0x55).as_bytes(),
        Status::VECTORS_EXHAUSTED,
    );
}

// ---------------------------------------------------------------------------------------------
// DEACTIVATE, FREE, QUERY_QUOTA
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_dea_h_001_002_handle_subhandle_and_state() {
    let mut fx = Fx::negotiated();
    let h = fx.alloc(DEV, StorageKind::MSIX, 0, 0);
    fx.fails(
        CallCode::DEACTIVATE,
        deactivate_req(0, 0).as_bytes(),
        Status::INVALID_HANDLE,
    );
    fx.fails(
        CallCode::DEACTIVATE,
        deactivate_req(h, 1).as_bytes(),
        Status::INVALID_SUBHANDLE,
    );
    fx.fails(
        CallCode::DEACTIVATE,
        deactivate_req(h, 0).as_bytes(),
        Status::INVALID_STATE,
    );
}

#[test]
fn vir_dea_h_003_deactivate_tears_down_and_keeps_the_message() {
    let mut fx = Fx::negotiated();
    let h = fx.active_msix(0);
    let VectorState::Active(a) = fx.host.vm(fx.vm).unwrap().allocation(h).unwrap().vectors[0]
    else {
        panic!()
    };
    fx.journal.clear();
    fx.g.deactivate(&mut fx.host, &fx.mem, h, 0).unwrap();
    assert_eq!(
        fx.journal.events(),
        vec![
            Event::IrteWrite {
                table: IrteTableId::Unit,
                index: 0,
                entry: 0
            },
            Event::StopIrq { irq: a.host_irq.id },
            Event::RemoveRoute {
                vm: fx.vm,
                gsi: a.gsi
            }
        ]
    );
    let vm = fx.host.vm(fx.vm).unwrap();
    assert_eq!(vm.vectors_used(), 0);
    let alloc = vm.allocation(h).unwrap();
    assert_eq!(alloc.vectors, vec![VectorState::Allocated]);
    assert!(
        alloc.message_issued,
        "deactivated = allocated with the message issued"
    );
    assert_eq!(vm.irtes_used(), 1, "entry still reserved");
    // Reserved → deactivated only clears the entry.
    fx.g.reserve(&mut fx.host, &fx.mem, h, 0).unwrap();
    fx.journal.clear();
    fx.g.deactivate(&mut fx.host, &fx.mem, h, 0).unwrap();
    assert_eq!(
        fx.journal.events(),
        vec![Event::IrteWrite {
            table: IrteTableId::Unit,
            index: 0,
            entry: 0
        }]
    );
}

#[test]
fn vir_fre_h_001_002_003_free_from_any_state_releases_and_stales_the_handle() {
    let mut fx = Fx::negotiated();
    fx.fails(
        CallCode::FREE,
        free_req(0).as_bytes(),
        Status::INVALID_HANDLE,
    );
    fx.fails(
        CallCode::FREE,
        free_req(0x0001_0001).as_bytes(),
        Status::INVALID_HANDLE,
    );
    let h = fx.alloc(DEV, StorageKind::MSI, 2, 0);
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0, 0x41).unwrap();
    fx.g.reserve(&mut fx.host, &fx.mem, h, 1).unwrap();
    fx.g.activate(&mut fx.host, &fx.mem, h, 3, 1, 0x42).unwrap();
    let free_before = fx.host.table_free();
    fx.g.free(&mut fx.host, &fx.mem, h).unwrap();
    assert!(fx.host.table().entries()[..4].iter().all(|&e| e == 0));
    assert!(fx.host.irqs().irqs().is_empty());
    assert!(fx.host.routing().routes().is_empty());
    assert_eq!(fx.host.table_free(), free_before + 4);
    let vm = fx.host.vm(fx.vm).unwrap();
    assert_eq!((vm.irtes_used(), vm.vectors_used()), (0, 0));
    assert_eq!(vm.msi_message_issued(DEV), None);
    // VIR-FRE-H-003: stale for every call, even after the slot is reused.
    let h2 = fx.alloc(DEV, StorageKind::MSI, 2, 0);
    assert_ne!(h2, h);
    fx.fails(
        CallCode::FREE,
        free_req(h).as_bytes(),
        Status::INVALID_HANDLE,
    );
    fx.fails(
        CallCode::ACTIVATE,
        act(h, 0, 0, 0x41).as_bytes(),
        Status::INVALID_HANDLE,
    );
    fx.fails(
        CallCode::DEACTIVATE,
        deactivate_req(h, 0).as_bytes(),
        Status::INVALID_HANDLE,
    );
    fx.fails(
        CallCode::SET_AFFINITY,
        affinity_req(h, 0, 0, 0x41).as_bytes(),
        Status::INVALID_HANDLE,
    );
}

#[test]
fn vir_quo_h_001_quota_totals_and_free_counts_match_the_state() {
    let mut fx = Fx::with(
        HostConfig::default(),
        256,
        Quotas {
            irtes: 20,
            vectors: 5,
        },
    );
    fx.negotiate(Features::V1_DEFINED);
    let q = |fx: &mut Fx| {
        let q = fx.g.query_quota(&mut fx.host, &fx.mem).unwrap();
        (
            q.irtes_total.get(),
            q.irtes_free.get(),
            q.vectors_total.get(),
            q.vectors_free.get(),
        )
    };
    assert_eq!(q(&mut fx), (20, 20, 5, 5));
    let h = fx.alloc(DEV, StorageKind::MSI, 3, 0);
    fx.g.activate(&mut fx.host, &fx.mem, h, 0, 0, 0x41).unwrap();
    fx.g.activate(&mut fx.host, &fx.mem, h, 1, 0, 0x42).unwrap();
    fx.g.reserve(&mut fx.host, &fx.mem, h, 2).unwrap();
    fx.active_msix(0);
    assert_eq!(q(&mut fx), (20, 11, 5, 2));
    fx.g.free(&mut fx.host, &fx.mem, h).unwrap();
    assert_eq!(q(&mut fx), (20, 19, 5, 4));
}

#[test]
fn msi_message_issued_hook_for_the_trapped_msi_capability_vir_leg_h_003() {
    let mut fx = Fx::negotiated();
    let h = fx.alloc(DEV, StorageKind::MSI, 1, 0);
    assert_eq!(
        fx.host.vm(fx.vm).unwrap().msi_message_issued(DEV),
        None,
        "not issued before ACTIVATE"
    );
    fx.g.reserve(&mut fx.host, &fx.mem, h, 0).unwrap();
    assert_eq!(
        fx.host.vm(fx.vm).unwrap().msi_message_issued(DEV),
        Some(vtd_message(0))
    );
    assert_eq!(
        fx.host.vm(fx.vm).unwrap().msi_message_issued(DEV_MSIX_ONLY),
        None
    );
}
