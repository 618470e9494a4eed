//! ALLOCATE (VIR-ALC-H-*): its validation order, quotas, the shared table, handles, entries.

use std::collections::{BTreeMap, BTreeSet};

use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{MSI_MAX_LOG2, StorageKind};

use crate::ctx::{Alloc, Ctx, allocate_request, ensure, expect, expect_eq};
use crate::hut::VmRef;
use crate::outcome::{CheckResult, Stop};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-ALC-H-001"],
        "alc_undefined_kind",
        "an undefined kind returns INVALID_PARAMETER, before the feature, shape and device checks",
        undefined_kind
    ),
    check!(
        ["VIR-ALC-H-002"],
        "alc_kind_not_negotiated",
        "a kind whose feature the session did not accept returns FEATURE_NOT_NEGOTIATED, before the shape and device checks",
        kind_not_negotiated
    ),
    check!(
        ["VIR-ALC-H-003"],
        "alc_bad_shape",
        "log2_count != 0 for non-MSI, log2_count > max_msi_log2, or index != 0 for MSI return INVALID_PARAMETER, before the device check",
        bad_shape
    ),
    check!(
        ["VIR-ALC-H-004"],
        "alc_not_your_device",
        "a device id of no vIR device of the VM (unassigned, another VM's, emulated) returns NOT_YOUR_DEVICE, before the storage checks",
        not_your_device
    ),
    check!(
        ["VIR-ALC-H-005"],
        "alc_storage_not_present",
        "a kind the device has no storage of returns STORAGE_NOT_PRESENT, before the index check",
        storage_not_present
    ),
    check!(
        ["VIR-ALC-H-006"],
        "alc_invalid_index",
        "an index at or past the storage size, or an MSI block larger than the capability, returns INVALID_INDEX; the last index works",
        invalid_index
    ),
    check!(
        ["VIR-ALC-H-007"],
        "alc_index_in_use",
        "a slot covered by a live allocation (for MSI: any live MSI allocation) returns INDEX_IN_USE until freed",
        index_in_use
    ),
    check!(
        ["VIR-ALC-H-008", "VIR-SEC-H-008"],
        "alc_irte_quota",
        "the VM holds exactly irte_quota entries; one more returns QUOTA_EXCEEDED (after INDEX_IN_USE); freeing makes room",
        irte_quota
    ),
    check!(
        ["VIR-ALC-H-009"],
        "alc_table_full",
        "when the shared table is full, an allocation within quota returns TABLE_FULL; freeing makes room",
        table_full
    ),
    check!(
        ["VIR-ALC-H-009", "VIR-FMT-H-007"],
        "alc_table_natural_alignment",
        "an MSI block needs a free run starting at a multiple of its size: two free unaligned entries give TABLE_FULL",
        natural_alignment
    ),
    check!(
        ["VIR-ALC-H-010"],
        "alc_handles_unique",
        "handles are never 0, distinct among live allocations, and not reissued within 65536 allocations",
        handles_unique
    ),
    check!(
        ["VIR-ALC-H-011", "VIR-SEC-H-002"],
        "alc_entries_reserved_not_present",
        "after ALLOCATE every entry of the allocation exists, is not present, and belongs to no other allocation",
        entries_not_present
    ),
    check!(
        ["VIR-ALC-H-012"],
        "alc_count",
        "count is 2^log2_count for MSI and 1 for every other kind",
        count
    ),
];

const P: VmRef = VmRef::Primary;

fn status_of<T>(r: Result<T, Status>) -> Status {
    r.err().unwrap_or(Status::SUCCESS)
}

fn try_alloc(
    ctx: &mut Ctx<'_>,
    vm: VmRef,
    dev: u32,
    kind: StorageKind,
    log2: u8,
    index: u32,
) -> Result<Status, Stop> {
    Ok(status_of(ctx.try_allocate(
        vm,
        &allocate_request(dev, kind, log2, index),
    )?))
}

fn undefined_kind(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let dev = ctx.vm(P)?.devices.first().map(|d| d.device_id).unwrap_or(0);
    let unassigned = ctx.vm(P)?.unassigned_device_id();
    for kind in [0u8, 5, 6, 0x7f, 0x80, 0xff] {
        let s = try_alloc(ctx, P, dev, StorageKind(kind), 0, 0)?;
        expect(
            format!("ALLOCATE of kind {kind} on device {dev:#x}"),
            Status::INVALID_PARAMETER,
            s,
        )?;
        let s = try_alloc(ctx, P, unassigned, StorageKind(kind), 3, 7)?;
        expect(
            format!(
                "ALLOCATE of kind {kind} with log2_count 3 on unassigned device {unassigned:#x}"
            ),
            Status::INVALID_PARAMETER,
            s,
        )?;
    }
    let slot = ctx.next_slot(P)?;
    ctx.allocate_slot(P, slot)?;
    Ok(())
}

fn kind_not_negotiated(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = ctx.offered(P)?;
    let fx = ctx.vm(P)?.clone();
    let unassigned = fx.unassigned_device_id();
    for (kind, feature) in [
        (StorageKind::MSI, Features::MSI),
        (StorageKind::MSIX, Features::MSIX),
        (StorageKind::IMS_DEVICE, Features::IMS_DEVICE),
        (StorageKind::IMS_SYSTEM, Features::IMS_SYSTEM),
    ] {
        ctx.negotiate(P, offered.difference(feature))?;
        let dev = fx.devices.first().map(|d| d.device_id).unwrap_or(0);
        let s = try_alloc(ctx, P, dev, kind, 0, 0)?;
        expect(
            format!("ALLOCATE {kind:?} in a session without {feature}"),
            Status::FEATURE_NOT_NEGOTIATED,
            s,
        )?;
        let (log2, index) = if kind == StorageKind::MSI {
            (7, 1)
        } else {
            (2, u32::MAX)
        };
        let s = try_alloc(ctx, P, unassigned, kind, log2, index)?;
        expect(
            format!(
                "ALLOCATE {kind:?} with a bad shape on an unassigned device, without {feature}"
            ),
            Status::FEATURE_NOT_NEGOTIATED,
            s,
        )?;
        expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
        if !offered.contains(feature) {
            continue;
        }
        // Positive: with the feature, a device that has the storage allocates.
        ctx.negotiate(P, feature)?;
        let found = fx.devices.iter().find(|d| match kind {
            StorageKind::MSI => d.msi_vectors > 0,
            StorageKind::MSIX => d.msix_entries > 0,
            StorageKind::IMS_DEVICE => d.ims_device_entries > 0,
            _ => d.ims_system_entries > 0,
        });
        if let Some(d) = found {
            let s = try_alloc(ctx, P, d.device_id, kind, 0, 0)?;
            expect(
                format!("ALLOCATE {kind:?} in a session with {feature}"),
                Status::SUCCESS,
                s,
            )?;
        }
        expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    }
    Ok(())
}

fn bad_shape(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let max = ctx.query(P)?.max_msi_log2;
    let fx = ctx.vm(P)?.clone();
    let unassigned = fx.unassigned_device_id();
    let mut tried = 0;
    for d in &fx.devices {
        for (kind, feature, size) in [
            (StorageKind::MSIX, Features::MSIX, d.msix_entries),
            (
                StorageKind::IMS_DEVICE,
                Features::IMS_DEVICE,
                d.ims_device_entries,
            ),
            (
                StorageKind::IMS_SYSTEM,
                Features::IMS_SYSTEM,
                d.ims_system_entries,
            ),
        ] {
            if size == 0 || !f.contains(feature) {
                continue;
            }
            for log2 in [1u8, 5, 0xff] {
                let s = try_alloc(ctx, P, d.device_id, kind, log2, 0)?;
                expect(
                    format!(
                        "ALLOCATE {kind:?} of device {:#x} with log2_count {log2}",
                        d.device_id
                    ),
                    Status::INVALID_PARAMETER,
                    s,
                )?;
                tried += 1;
            }
            let s = try_alloc(ctx, P, unassigned, kind, 1, 0)?;
            expect(
                format!("ALLOCATE {kind:?} with log2_count 1 on an unassigned device"),
                Status::INVALID_PARAMETER,
                s,
            )?;
        }
        if d.msi_vectors > 0 && f.contains(Features::MSI) {
            for log2 in [max + 1, MSI_MAX_LOG2 + 1, 0xff] {
                let s = try_alloc(ctx, P, d.device_id, StorageKind::MSI, log2, 0)?;
                expect(
                    format!(
                        "ALLOCATE MSI of device {:#x} with log2_count {log2} (max {max})",
                        d.device_id
                    ),
                    Status::INVALID_PARAMETER,
                    s,
                )?;
            }
            for index in [1u32, 0x8000_0000] {
                let s = try_alloc(ctx, P, d.device_id, StorageKind::MSI, 0, index)?;
                expect(
                    format!(
                        "ALLOCATE MSI of device {:#x} with index {index:#x}",
                        d.device_id
                    ),
                    Status::INVALID_PARAMETER,
                    s,
                )?;
            }
            let s = try_alloc(ctx, P, unassigned, StorageKind::MSI, 0, 1)?;
            expect(
                "ALLOCATE MSI with index 1 on an unassigned device",
                Status::INVALID_PARAMETER,
                s,
            )?;
            let s = try_alloc(ctx, P, d.device_id, StorageKind::MSI, 0, 0)?;
            expect(
                format!(
                    "ALLOCATE MSI of device {:#x} with log2_count 0, index 0",
                    d.device_id
                ),
                Status::SUCCESS,
                s,
            )?;
            tried += 1;
        }
    }
    if tried == 0 {
        return Err(Stop::NotTestable(
            "no fixture device storage for the negotiated kinds".into(),
        ));
    }
    Ok(())
}

fn not_your_device(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let fx = ctx.fixture().clone();
    let mine: BTreeSet<u32> = fx.primary.devices.iter().map(|d| d.device_id).collect();
    let mut foreign = vec![fx.primary.unassigned_device_id(), 0xffff_ffff];
    foreign.extend(fx.primary.emulated_devices.iter().copied());
    if let Some(s) = &fx.secondary {
        foreign.extend(
            s.devices
                .iter()
                .map(|d| d.device_id)
                .filter(|d| !mine.contains(d)),
        );
    }
    for dev in foreign {
        for kind in [
            StorageKind::MSI,
            StorageKind::MSIX,
            StorageKind::IMS_DEVICE,
            StorageKind::IMS_SYSTEM,
        ] {
            let s = try_alloc(ctx, P, dev, kind, 0, 0)?;
            expect(
                format!("ALLOCATE {kind:?} of device {dev:#x}, not a vIR device of the VM"),
                Status::NOT_YOUR_DEVICE,
                s,
            )?;
        }
        let s = try_alloc(ctx, P, dev, StorageKind::MSIX, 0, u32::MAX)?;
        expect(
            format!("ALLOCATE MSIX index 0xffffffff of device {dev:#x}"),
            Status::NOT_YOUR_DEVICE,
            s,
        )?;
    }
    let slot = ctx.next_slot(P)?;
    ctx.allocate_slot(P, slot)?;
    Ok(())
}

fn storage_not_present(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let fx = ctx.vm(P)?.clone();
    let mut tried = 0;
    for d in &fx.devices {
        for (kind, feature, size) in [
            (StorageKind::MSI, Features::MSI, u32::from(d.msi_vectors)),
            (StorageKind::MSIX, Features::MSIX, d.msix_entries),
            (
                StorageKind::IMS_DEVICE,
                Features::IMS_DEVICE,
                d.ims_device_entries,
            ),
            (
                StorageKind::IMS_SYSTEM,
                Features::IMS_SYSTEM,
                d.ims_system_entries,
            ),
        ] {
            if size != 0 || !f.contains(feature) {
                continue;
            }
            let s = try_alloc(ctx, P, d.device_id, kind, 0, 0)?;
            expect(
                format!(
                    "ALLOCATE {kind:?} of device {:#x}, which has none",
                    d.device_id
                ),
                Status::STORAGE_NOT_PRESENT,
                s,
            )?;
            if kind != StorageKind::MSI {
                let s = try_alloc(ctx, P, d.device_id, kind, 0, u32::MAX)?;
                expect(
                    format!(
                        "ALLOCATE {kind:?} index 0xffffffff of device {:#x}, which has none",
                        d.device_id
                    ),
                    Status::STORAGE_NOT_PRESENT,
                    s,
                )?;
            }
            tried += 1;
        }
    }
    if tried == 0 {
        return Err(Stop::NotTestable(
            "every fixture device has every negotiated kind of storage".into(),
        ));
    }
    Ok(())
}

fn invalid_index(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let max = ctx.query(P)?.max_msi_log2;
    let fx = ctx.vm(P)?.clone();
    let mut tried = 0;
    for d in &fx.devices {
        for (kind, feature, size) in [
            (StorageKind::MSIX, Features::MSIX, d.msix_entries),
            (
                StorageKind::IMS_DEVICE,
                Features::IMS_DEVICE,
                d.ims_device_entries,
            ),
            (
                StorageKind::IMS_SYSTEM,
                Features::IMS_SYSTEM,
                d.ims_system_entries,
            ),
        ] {
            if size == 0 || !f.contains(feature) {
                continue;
            }
            for index in [size, size + 1, u32::MAX] {
                let s = try_alloc(ctx, P, d.device_id, kind, 0, index)?;
                expect(
                    format!(
                        "ALLOCATE {kind:?} index {index:#x} of device {:#x} (size {size})",
                        d.device_id
                    ),
                    Status::INVALID_INDEX,
                    s,
                )?;
            }
            let s = try_alloc(ctx, P, d.device_id, kind, 0, size - 1)?;
            expect(
                format!(
                    "ALLOCATE {kind:?} index {} of device {:#x} (the last)",
                    size - 1,
                    d.device_id
                ),
                Status::SUCCESS,
                s,
            )?;
            tried += 1;
        }
        if d.msi_vectors > 0 && f.contains(Features::MSI) {
            let cap = u32::from(d.msi_vectors);
            for log2 in 0..=max {
                if (1u32 << log2) > cap {
                    let s = try_alloc(ctx, P, d.device_id, StorageKind::MSI, log2, 0)?;
                    expect(
                        format!(
                            "ALLOCATE MSI 2^{log2} of device {:#x} (capability {cap})",
                            d.device_id
                        ),
                        Status::INVALID_INDEX,
                        s,
                    )?;
                    tried += 1;
                }
            }
        }
    }
    if tried == 0 {
        return Err(Stop::NotTestable(
            "no fixture device storage for the negotiated kinds".into(),
        ));
    }
    Ok(())
}

fn index_in_use(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let slot = ctx.next_slot(P)?;
    let a = ctx.allocate_slot(P, slot)?;
    let s = try_alloc(ctx, P, slot.device_id, slot.kind, 0, slot.index)?;
    expect(
        format!("ALLOCATE of {:?} index {} again", slot.kind, slot.index),
        Status::INDEX_IN_USE,
        s,
    )?;
    let apic = ctx.apic(P, 0)?;
    ctx.activate(P, a.handle, 0, apic, crate::ctx::VECTOR)?;
    let s = try_alloc(ctx, P, slot.device_id, slot.kind, 0, slot.index)?;
    expect(
        "ALLOCATE of a slot whose vector is ACTIVE",
        Status::INDEX_IN_USE,
        s,
    )?;
    // Same index, other kinds of the same device are other slots.
    let d = ctx
        .vm(P)?
        .devices
        .iter()
        .find(|d| d.device_id == slot.device_id)
        .copied();
    if let Some(d) = d {
        for (kind, feature, size) in [
            (StorageKind::MSIX, Features::MSIX, d.msix_entries),
            (
                StorageKind::IMS_DEVICE,
                Features::IMS_DEVICE,
                d.ims_device_entries,
            ),
            (
                StorageKind::IMS_SYSTEM,
                Features::IMS_SYSTEM,
                d.ims_system_entries,
            ),
        ] {
            if kind == slot.kind || size <= slot.index || !f.contains(feature) {
                continue;
            }
            let s = try_alloc(ctx, P, d.device_id, kind, 0, slot.index)?;
            expect(
                format!(
                    "ALLOCATE {kind:?} index {} (same index, other storage)",
                    slot.index
                ),
                Status::SUCCESS,
                s,
            )?;
        }
    }
    expect("FREE", Status::SUCCESS, ctx.free(P, a.handle)?)?;
    let s = try_alloc(ctx, P, slot.device_id, slot.kind, 0, slot.index)?;
    expect("ALLOCATE of the slot after FREE", Status::SUCCESS, s)?;
    // MSI: any live MSI allocation of the device covers the slot.
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 2)
            .copied()
    {
        let m = ctx.allocate_msi(P, d.device_id, 0)?;
        for log2 in [0u8, 1] {
            let s = try_alloc(ctx, P, d.device_id, StorageKind::MSI, log2, 0)?;
            expect(
                format!("ALLOCATE MSI 2^{log2} while an MSI allocation of the device is live"),
                Status::INDEX_IN_USE,
                s,
            )?;
        }
        expect(
            "FREE of the MSI allocation",
            Status::SUCCESS,
            ctx.free(P, m.handle)?,
        )?;
        ctx.allocate_msi(P, d.device_id, 1)?;
    }
    Ok(())
}

/// Allocate single-vector slots in `vm` until a call fails; returns the allocations and the
/// failing status.
fn fill(ctx: &mut Ctx<'_>, vm: VmRef, limit: u32) -> Result<(Vec<Alloc>, Status), Stop> {
    let mut out = Vec::new();
    for _ in 0..=limit {
        let slot = ctx.next_slot(vm)?;
        match ctx.try_allocate(
            vm,
            &allocate_request(slot.device_id, slot.kind, 0, slot.index),
        )? {
            Ok(r) => out.push(Alloc {
                handle: r.handle.get(),
                count: r.count.get(),
            }),
            Err(s) => return Ok((out, s)),
        }
    }
    Err(Stop::NotTestable(format!(
        "more than {limit} allocations succeeded in the {vm}"
    )))
}

fn irte_quota(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let q = ctx.query(P)?;
    let quota = q.irte_quota.get();
    if let Some(t) = ctx.fixture().shared_table_free
        && t <= quota
    {
        return Err(Stop::NotTestable(format!(
            "the table ({t} free) is not larger than the quota ({quota})"
        )));
    }
    let (allocs, s) = fill(ctx, P, quota)?;
    expect(
        format!(
            "ALLOCATE number {} with irte_quota {quota}",
            allocs.len() + 1
        ),
        Status::QUOTA_EXCEEDED,
        s,
    )?;
    expect_eq(
        "ALLOCATE until QUOTA_EXCEEDED",
        "successful single-vector allocations",
        quota as usize,
        allocs.len(),
    )?;
    // INDEX_IN_USE comes before QUOTA_EXCEEDED: slot 0 of the session is live.
    let first = ctx.slots_for(P, f)?.first().copied();
    if let Some(s0) = first {
        let s = try_alloc(ctx, P, s0.device_id, s0.kind, 0, s0.index)?;
        expect(
            "ALLOCATE of a slot in use with the quota exhausted",
            Status::INDEX_IN_USE,
            s,
        )?;
    }
    let Some(last) = allocs.last().copied() else {
        return Ok(());
    };
    expect("FREE", Status::SUCCESS, ctx.free(P, last.handle)?)?;
    ctx.allocate(P)?;
    // A block that needs two entries with one left.
    expect("FREE", Status::SUCCESS, ctx.free(P, allocs[0].handle)?)?;
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 2)
            .copied()
    {
        let s = try_alloc(ctx, P, d.device_id, StorageKind::MSI, 1, 0)?;
        expect(
            "ALLOCATE MSI 2^1 with one entry of quota left",
            Status::QUOTA_EXCEEDED,
            s,
        )?;
        let s = try_alloc(ctx, P, d.device_id, StorageKind::MSI, 0, 0)?;
        expect(
            "ALLOCATE MSI 2^0 with one entry of quota left",
            Status::SUCCESS,
            s,
        )?;
    }
    Ok(())
}

fn table_full(ctx: &mut Ctx<'_>) -> CheckResult {
    let Some(table) = ctx.fixture().shared_table_free else {
        return Err(Stop::NotTestable(
            "the fixture does not say how many entries the shared table has free".into(),
        ));
    };
    ctx.vm(VmRef::Secondary)?;
    let (qp, qs) = (
        ctx.query(P)?.irte_quota.get(),
        ctx.query(VmRef::Secondary)?.irte_quota.get(),
    );
    if u64::from(qp) + u64::from(qs) <= u64::from(table) {
        return Err(Stop::NotTestable(format!(
            "the two VMs' quotas ({qp} + {qs}) cannot fill the table ({table} free)"
        )));
    }
    ctx.negotiate_all(P)?;
    ctx.negotiate_all(VmRef::Secondary)?;
    let (a, s) = fill(ctx, P, qp)?;
    let mut total = a.len() as u32;
    if total == table {
        expect(
            format!("ALLOCATE with the table full ({total} entries taken)"),
            Status::TABLE_FULL,
            s,
        )?;
    } else {
        expect(
            format!("ALLOCATE number {} in the primary VM", total + 1),
            Status::QUOTA_EXCEEDED,
            s,
        )?;
    }
    let (b, s) = fill(ctx, VmRef::Secondary, qs)?;
    total += b.len() as u32;
    expect(
        format!(
            "ALLOCATE in the secondary VM ({} of its {qs} entries held) with {total} of {table} entries taken",
            b.len()
        ),
        Status::TABLE_FULL,
        s,
    )?;
    expect_eq(
        "filling the shared table",
        "entries allocated before TABLE_FULL",
        table,
        total,
    )?;
    let Some(victim) = b.first().copied() else {
        return Err(Stop::NotTestable("the secondary VM got no entry".into()));
    };
    expect(
        "FREE in the secondary VM",
        Status::SUCCESS,
        ctx.free(VmRef::Secondary, victim.handle)?,
    )?;
    ctx.allocate(VmRef::Secondary)?;
    Ok(())
}

fn natural_alignment(ctx: &mut Ctx<'_>) -> CheckResult {
    let Some(table) = ctx.fixture().shared_table_free else {
        return Err(Stop::NotTestable(
            "the fixture does not say how many entries the shared table has free".into(),
        ));
    };
    let s_dev = ctx
        .vm(VmRef::Secondary)?
        .devices
        .iter()
        .find(|d| d.msi_vectors >= 2)
        .copied()
        .ok_or_else(|| {
            Stop::NotTestable("the secondary VM has no device with 2 MSI vectors".into())
        })?;
    let fp = ctx.negotiate_all(P)?;
    let fs = ctx.negotiate_all(VmRef::Secondary)?;
    if !fs.contains(Features::MSI) || !fp.contains(Features::MSIX) {
        return Err(Stop::NotApplicable("MSI or MSI-X is not offered".into()));
    }
    let qp = ctx.query(P)?.irte_quota.get();
    let qs = ctx.query(VmRef::Secondary)?.irte_quota.get();
    let (a, _) = fill(ctx, P, qp)?;
    let (b, s) = fill(ctx, VmRef::Secondary, qs)?;
    if s != Status::TABLE_FULL || (a.len() + b.len()) as u32 != table {
        return Err(Stop::NotTestable(
            "the fixture's VMs cannot fill the shared table".into(),
        ));
    }
    // Who holds which entry.
    let mut owner: BTreeMap<u32, (VmRef, u32)> = BTreeMap::new();
    for (vm, list) in [(P, &a), (VmRef::Secondary, &b)] {
        for al in list {
            let e = ctx.irte(vm, al.handle, 0)?;
            owner.insert(e.index, (vm, al.handle));
        }
    }
    // Free entries 2k+1 and 2k+2: two free entries, no free aligned pair.
    let Some(k) = (0..table / 2 - 1).find(|k| {
        owner.contains_key(&(2 * k + 1))
            && owner.contains_key(&(2 * k + 2))
            && owner.contains_key(&(2 * k + 3))
    }) else {
        return Err(Stop::NotTestable("no suitable entries to free".into()));
    };
    for i in [2 * k + 1, 2 * k + 2] {
        if let Some(&(vm, h)) = owner.get(&i) {
            expect(
                format!("FREE of the allocation at entry {i}"),
                Status::SUCCESS,
                ctx.free(vm, h)?,
            )?;
        }
    }
    let s = try_alloc(
        ctx,
        VmRef::Secondary,
        s_dev.device_id,
        StorageKind::MSI,
        1,
        0,
    )?;
    expect(
        format!(
            "ALLOCATE MSI 2^1 with only entries {} and {} free",
            2 * k + 1,
            2 * k + 2
        ),
        Status::TABLE_FULL,
        s,
    )?;
    if let Some(&(vm, h)) = owner.get(&(2 * k + 3)) {
        expect(
            format!("FREE of the allocation at entry {}", 2 * k + 3),
            Status::SUCCESS,
            ctx.free(vm, h)?,
        )?;
    }
    let m = ctx.allocate_msi(VmRef::Secondary, s_dev.device_id, 1)?;
    for sub in 0..2u16 {
        let e = ctx.irte(VmRef::Secondary, m.handle, sub)?;
        expect_eq(
            format!(
                "MSI 2^1 allocated with entries {}..={} free",
                2 * k + 2,
                2 * k + 3
            ),
            &format!("entry of sub-handle {sub}"),
            2 * k + 2 + u32::from(sub),
            e.index,
        )?;
    }
    Ok(())
}

fn handles_unique(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    // Live handles: 32 allocations.
    let mut live = BTreeSet::new();
    let mut allocs = Vec::new();
    for _ in 0..32 {
        let a = ctx.allocate(P)?;
        ensure(a.handle != 0, "ALLOCATE", "handle", "not 0", "0")?;
        ensure(
            live.insert(a.handle),
            "ALLOCATE",
            "handle",
            "distinct from every live handle",
            format!("{:#x} again", a.handle),
        )?;
        allocs.push(a);
    }
    for a in &allocs[1..] {
        expect("FREE", Status::SUCCESS, ctx.free(P, a.handle)?)?;
    }
    // One slot allocated and freed 65536 times: no handle comes back, none is 0 or live.
    let slot = ctx.next_slot(P)?;
    let mut seen = BTreeSet::new();
    for i in 0..65536u32 {
        let a = ctx.allocate_slot(P, slot)?;
        ensure(
            a.handle != 0,
            format!("ALLOCATE number {i} of one slot"),
            "handle",
            "not 0",
            "0",
        )?;
        ensure(
            a.handle != allocs[0].handle && seen.insert(a.handle),
            format!("ALLOCATE number {i} of one slot"),
            "handle",
            "not issued among the previous 65535",
            format!("{:#x} reissued", a.handle),
        )?;
        let s = ctx.free(P, a.handle)?;
        expect(format!("FREE number {i}"), Status::SUCCESS, s)?;
    }
    Ok(())
}

fn entries_not_present(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let mut all: Vec<(Alloc, Vec<u32>)> = Vec::new();
    for _ in 0..4 {
        all.push((ctx.allocate(P)?, Vec::new()));
    }
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 4)
            .copied()
    {
        all.push((ctx.allocate_msi(P, d.device_id, 2)?, Vec::new()));
    }
    let mut taken = BTreeSet::new();
    for (a, idx) in &mut all {
        for sub in 0..a.count {
            let e = ctx.irte(P, a.handle, sub)?;
            let step = format!(
                "entry of handle {:#x} sub-handle {sub} after ALLOCATE",
                a.handle
            );
            ensure(e.raw & 1 == 0, &step, "P (present)", "0", "1")?;
            ensure(
                taken.insert(e.index),
                &step,
                "index",
                "used by no other allocation",
                format!("{} twice", e.index),
            )?;
            idx.push(e.index);
            let d = ctx.delivery(P, a.handle, sub).ok().flatten();
            ensure(d.is_none(), &step, "delivery", "blocked", format!("{d:?}"))?;
        }
    }
    Ok(())
}

fn count(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let max = ctx.query(P)?.max_msi_log2;
    for (kind, feature) in [
        (StorageKind::MSIX, Features::MSIX),
        (StorageKind::IMS_DEVICE, Features::IMS_DEVICE),
        (StorageKind::IMS_SYSTEM, Features::IMS_SYSTEM),
    ] {
        if !f.contains(feature) {
            continue;
        }
        let slot = ctx.slots_for(P, feature)?.first().copied();
        if let Some(slot) = slot {
            let a = ctx.allocate_slot(P, slot)?;
            expect_eq(format!("ALLOCATE {kind:?}"), "count", 1, a.count)?;
        }
    }
    if f.contains(Features::MSI) {
        let devs: Vec<_> = ctx
            .vm(P)?
            .devices
            .iter()
            .filter(|d| d.msi_vectors > 0)
            .copied()
            .collect();
        for d in devs {
            for log2 in 0..=max {
                if (1u32 << log2) > u32::from(d.msi_vectors) {
                    break;
                }
                let a = ctx.allocate_msi(P, d.device_id, log2)?;
                expect_eq(
                    format!("ALLOCATE MSI 2^{log2} of device {:#x}", d.device_id),
                    "count",
                    1u16 << log2,
                    a.count,
                )?;
                expect("FREE", Status::SUCCESS, ctx.free(P, a.handle)?)?;
            }
        }
    }
    Ok(())
}
