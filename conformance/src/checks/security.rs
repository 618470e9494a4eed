//! Security (VIR-SEC-H-*) and statuses (VIR-STA-H-*): source checks, present entries, handle
//! and VM isolation, robustness under random input.

use std::collections::BTreeSet;

use vir_abi::call::{Binding, CallCode};
use vir_abi::feature::Features;
use vir_abi::hw::vtd::{Irte, Svt};
use vir_abi::status::Status;
use vir_abi::wire::{StorageKind, activate_flags, vm_state};
use zerocopy::IntoBytes;

use super::Rng;
use crate::ctx::{
    Alloc, Ctx, VECTOR, activate_request, affinity_request, allocate_request, deactivate_request,
    ensure, expect, expect_eq, free_request, negotiate_request, sizes, value_failure,
};
use crate::hut::{Buffer, IrteFormat, Scope, SourceId, VmRef};
use crate::outcome::{CheckResult, Stop, harness};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-SEC-H-001"],
        "sec_source_check",
        "every active IRTE checks the device's requester id (SVT=1, SQ=0, SID) or its bus range (SVT=2)",
        source_check
    ),
    check!(
        ["VIR-SEC-H-002"],
        "sec_present_only_when_active",
        "an IRTE is present exactly while its vector is ACTIVE (ALLOCATED, RESERVED, deactivated: not present)",
        present_only_when_active
    ),
    check!(
        ["VIR-SEC-H-004"],
        "sec_foreign_handles",
        "handles live only in another VM return INVALID_HANDLE for ACTIVATE, SET_AFFINITY, DEACTIVATE and FREE and leave that VM alone",
        foreign_handles
    ),
    check!(
        ["VIR-SEC-H-005", "VIR-STA-H-001", "VIR-STA-H-002"],
        "sec_random_calls",
        "3000 random calls: no panic, every status is defined and listed for its call, and nothing leaks",
        random_calls
    ),
    check!(
        ["VIR-SEC-H-007"],
        "sec_one_allocation_per_irte",
        "no IRTE backs two allocations, within a VM or across VMs",
        one_allocation_per_irte
    ),
    check!(
        ["VIR-SEC-H-009"],
        "sec_fpd_when_not_present",
        "not-present entries of a VM's allocations have FPD=1 (advisory)",
        fpd_when_not_present
    ),
    check!(
        ["VIR-SEC-H-010"],
        "sec_other_vm_changes_nothing",
        "calls and resets of another VM leave this VM's state and targets unchanged",
        other_vm_changes_nothing
    ),
    check!(
        ["VIR-SEC-H-012"],
        "sec_no_foreign_entry_accepts_device",
        "no present IRTE outside the VM's own allocations accepts a requester id of the VM's devices",
        no_foreign_entry
    ),
];

const P: VmRef = VmRef::Primary;
const S: VmRef = VmRef::Secondary;

fn status_of<T>(r: Result<T, Status>) -> Status {
    r.err().unwrap_or(Status::SUCCESS)
}

fn vtd(ctx: &Ctx<'_>) -> Result<vir_abi::hw::ApicMode, Stop> {
    match ctx.fixture().irte_format {
        Some(IrteFormat::Vtd(m)) => Ok(m),
        Some(IrteFormat::AmdVi) => Err(Stop::NotApplicable(
            "AMD-Vi: the source check is the device's own table".into(),
        )),
        None => Err(Stop::NotTestable(
            "the fixture does not describe the IRTE format".into(),
        )),
    }
}

fn source_check(ctx: &mut Ctx<'_>) -> CheckResult {
    let mode = vtd(ctx)?;
    let mut tried = 0;
    for vm in [P, S] {
        let Ok(fx) = ctx.vm(vm).cloned() else {
            continue;
        };
        let f = ctx.negotiate_all(vm)?;
        let apic = ctx.apic(vm, 0)?;
        let slots = ctx.slots_for(vm, f)?;
        for d in &fx.devices {
            let Some(src) = d.source else { continue };
            let Some(slot) = slots.iter().find(|s| s.device_id == d.device_id).copied() else {
                continue;
            };
            let a = ctx.allocate_slot(vm, slot)?;
            ctx.activate(vm, a.handle, 0, apic, VECTOR)?;
            let raw = ctx.irte(vm, a.handle, 0)?.raw;
            let step = format!("IRTE of device {:#x} of the {vm}", d.device_id);
            let e = Irte::decode(raw, mode).map_err(|e| {
                value_failure(&step, "IRTE", "a valid VT-d entry", format!("{e:?}"))
            })?;
            let (svt, sq, sid) = match e {
                Irte::Posted(p) => (p.svt, p.sq, p.sid),
                Irte::Remapped(r) => (r.svt, r.sq, r.sid),
            };
            match src {
                SourceId::RequesterId(rid) => {
                    expect_eq(&step, "SVT", Svt::VerifySid, svt)?;
                    expect_eq(&step, "SQ", 0, sq)?;
                    expect_eq(&step, "SID", format!("{rid:#06x}"), format!("{sid:#06x}"))?;
                }
                SourceId::BusRange { start_bus, end_bus } => {
                    expect_eq(&step, "SVT", Svt::VerifyBus, svt)?;
                    expect_eq(
                        &step,
                        "SID",
                        format!("{:#06x}", (u16::from(start_bus) << 8) | u16::from(end_bus)),
                        format!("{sid:#06x}"),
                    )?;
                }
            }
            tried += 1;
        }
    }
    if tried == 0 {
        return Err(Stop::NotTestable(
            "the fixture gives no device's requester id".into(),
        ));
    }
    Ok(())
}

fn present(ctx: &mut Ctx<'_>, step: &str, a: &Alloc, sub: u16, want: bool) -> CheckResult {
    let e = ctx.irte(P, a.handle, sub)?;
    expect_eq(step, "IRTE P (present)", want, e.raw & 1 == 1)
}

fn present_only_when_active(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let a = ctx.allocate(P)?;
    present(ctx, "ALLOCATED vector", &a, 0, false)?;
    if f.contains(Features::RESERVATION) {
        ctx.reserve(P, a.handle, 0)?;
        present(ctx, "RESERVED vector", &a, 0, false)?;
    }
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    present(ctx, "ACTIVE vector", &a, 0, true)?;
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    present(ctx, "deactivated vector", &a, 0, false)?;
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 4)
            .copied()
    {
        let m = ctx.allocate_msi(P, d.device_id, 2)?;
        ctx.activate(P, m.handle, 2, apic, VECTOR)?;
        for sub in 0..4 {
            present(
                ctx,
                &format!("sub-handle {sub} of a block with only sub-handle 2 ACTIVE"),
                &m,
                sub,
                sub == 2,
            )?;
        }
    }
    Ok(())
}

fn foreign_handles(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.vm(S)?;
    let fs = ctx.negotiate_all(S)?;
    let apic_s = ctx.apic(S, 0)?;
    let mut theirs = Vec::new();
    for i in 0..3u8 {
        let a = ctx.allocate(S)?;
        if i == 0 {
            ctx.activate(S, a.handle, 0, apic_s, VECTOR)?;
        } else if i == 1 && fs.contains(Features::RESERVATION) {
            ctx.reserve(S, a.handle, 0)?;
        }
        theirs.push(a);
    }
    ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let before = ctx.snapshot(Scope::Vm(S)).ok();
    for a in &theirs {
        let h = a.handle;
        let s = status_of(ctx.try_activate(P, &activate_request(h, 0, 0, apic, VECTOR))?);
        expect(
            format!("ACTIVATE in the primary VM of the secondary's handle {h:#x}"),
            Status::INVALID_HANDLE,
            s,
        )?;
        let s =
            status_of(ctx.try_activate(P, &activate_request(h, 0, activate_flags::RESERVE, 0, 0))?);
        expect(
            format!("ACTIVATE RESERVE in the primary VM of the secondary's handle {h:#x}"),
            Status::INVALID_HANDLE,
            s,
        )?;
        expect(
            format!("SET_AFFINITY in the primary VM of the secondary's handle {h:#x}"),
            Status::INVALID_HANDLE,
            ctx.set_affinity(P, h, 0, apic, VECTOR)?,
        )?;
        expect(
            format!("DEACTIVATE in the primary VM of the secondary's handle {h:#x}"),
            Status::INVALID_HANDLE,
            ctx.deactivate(P, h, 0)?,
        )?;
        expect(
            format!("FREE in the primary VM of the secondary's handle {h:#x}"),
            Status::INVALID_HANDLE,
            ctx.free(P, h)?,
        )?;
    }
    if let Some(before) = before {
        ctx.unchanged(
            "the primary VM naming the secondary's handles",
            &before,
            Scope::Vm(S),
        )?;
    }
    // The secondary's allocations are intact.
    let first = theirs[0];
    expect(
        "SET_AFFINITY in the secondary VM to the target in force",
        Status::SUCCESS,
        ctx.set_affinity(S, first.handle, 0, apic_s, VECTOR)?,
    )?;
    for a in &theirs {
        expect(
            "FREE in the secondary VM of its own handle",
            Status::SUCCESS,
            ctx.free(S, a.handle)?,
        )?;
    }
    Ok(())
}

/// A random request for `code`: mostly plausible values from the fixture and earlier results.
fn random_request(
    rng: &mut Rng,
    code: CallCode,
    devices: &[u32],
    apics: &[u32],
    handles: &[u32],
    offered: Features,
) -> Vec<u8> {
    let dev = if rng.chance(9, 10) {
        rng.pick(devices).unwrap_or(0)
    } else {
        rng.next_u64() as u32
    };
    let apic = if rng.chance(9, 10) {
        rng.pick(apics).unwrap_or(0)
    } else {
        rng.next_u64() as u32
    };
    let handle = if rng.chance(8, 10) {
        rng.pick(handles).unwrap_or(1)
    } else {
        rng.next_u64() as u32
    };
    let sub = if rng.chance(8, 10) {
        rng.below(4) as u16
    } else {
        rng.next_u64() as u16
    };
    let vector = rng.next_u64() as u8;
    let mut bytes = match code {
        CallCode::NEGOTIATE => {
            let version = *[1u16, 1, 1, 0, 2, 0xffff]
                .get(rng.below(6) as usize)
                .unwrap_or(&1);
            let features = if rng.chance(8, 10) {
                Features(offered.bits() & rng.next_u64())
            } else {
                Features(rng.next_u64())
            };
            negotiate_request(version, features).as_bytes().to_vec()
        }
        CallCode::ALLOCATE => {
            let kind = if rng.chance(9, 10) {
                1 + rng.below(4) as u8
            } else {
                rng.next_u64() as u8
            };
            let log2 = if rng.chance(7, 10) {
                0
            } else {
                rng.below(8) as u8
            };
            let index = if rng.chance(9, 10) {
                rng.below(80) as u32
            } else {
                rng.next_u64() as u32
            };
            allocate_request(dev, StorageKind(kind), log2, index)
                .as_bytes()
                .to_vec()
        }
        CallCode::ACTIVATE => {
            let flags = match rng.below(10) {
                0..=5 => 0,
                6..=8 => activate_flags::RESERVE,
                _ => rng.next_u64() as u16,
            };
            activate_request(handle, sub, flags, apic, vector)
                .as_bytes()
                .to_vec()
        }
        CallCode::SET_AFFINITY => affinity_request(handle, sub, apic, vector)
            .as_bytes()
            .to_vec(),
        CallCode::DEACTIVATE => deactivate_request(handle, sub).as_bytes().to_vec(),
        CallCode::FREE => free_request(handle).as_bytes().to_vec(),
        _ => Vec::new(),
    };
    // Sometimes a random reserved bit or byte anywhere.
    if !bytes.is_empty() && rng.chance(1, 15) {
        let i = rng.below(bytes.len() as u64) as usize;
        if let Some(b) = bytes.get_mut(i) {
            *b ^= 1 << rng.below(8);
        }
    }
    bytes
}

fn random_calls(ctx: &mut Ctx<'_>) -> CheckResult {
    let mut rng = Rng::new(0x5649_5200_0000_0001);
    let fx = ctx.vm(P)?.clone();
    let devices: Vec<u32> = fx.devices.iter().map(|d| d.device_id).collect();
    let apics: Vec<u32> = fx.vcpus.iter().map(|v| v.apic_id).collect();
    let offered = ctx.offered(P)?;
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let mut handles: Vec<u32> = vec![1];
    let weighted = [
        CallCode::QUERY,
        CallCode::NEGOTIATE,
        CallCode::NEGOTIATE,
        CallCode::RESET,
        CallCode::ALLOCATE,
        CallCode::ALLOCATE,
        CallCode::ALLOCATE,
        CallCode::ACTIVATE,
        CallCode::ACTIVATE,
        CallCode::ACTIVATE,
        CallCode::SET_AFFINITY,
        CallCode::SET_AFFINITY,
        CallCode::DEACTIVATE,
        CallCode::DEACTIVATE,
        CallCode::FREE,
        CallCode::FREE,
        CallCode::QUERY_QUOTA,
    ];
    let odd_gpas = |rng: &mut Rng, base: u64| -> u64 {
        match rng.below(6) {
            0 => base + 1 + rng.below(7),
            1 => base + 4096 - 8,
            2 => fx.unbacked_gpa.unwrap_or(1 << 56),
            3 => 1 << 56,
            4 => 0,
            _ => u64::MAX - 7,
        }
    };
    for i in 0..3000u32 {
        let code = if rng.chance(1, 25) {
            CallCode(rng.next_u64() as u16)
        } else {
            rng.pick(&weighted).unwrap_or(CallCode::QUERY)
        };
        let request = random_request(&mut rng, code, &devices, &apics, &handles, offered);
        let (rq, rs) = sizes(code);
        let mut rq_len = if request.is_empty() {
            rq
        } else {
            request.len() as u64
        };
        let mut rs_len = rs;
        if rng.chance(1, 20) {
            rq_len = *[0u64, 8, 16, 24, 64, 4096, 1 << 32]
                .get(rng.below(7) as usize)
                .unwrap_or(&0);
        }
        if rng.chance(1, 20) {
            rs_len = *[0u64, 8, 16, 40, 64, 1 << 33]
                .get(rng.below(6) as usize)
                .unwrap_or(&0);
        }
        let mut rq_gpa = if rq_len == 0 { 0 } else { req };
        let mut rs_gpa = if rs_len == 0 { 0 } else { resp };
        if rng.chance(1, 25) {
            rq_gpa = odd_gpas(&mut rng, req);
        }
        if rng.chance(1, 25) {
            rs_gpa = odd_gpas(&mut rng, resp);
        }
        if !request.is_empty() {
            ctx.write(P, req, &request)?;
        }
        let status = ctx.call(
            P,
            code,
            Buffer::new(rq_gpa, rq_len),
            Buffer::new(rs_gpa, rs_len),
        )?;
        let step = format!(
            "random call {i}: {code} with {} request bytes {:02x?}",
            rq_len, request
        );
        ensure(
            status.is_known(),
            &step,
            "status",
            "a status version 1 defines",
            status.to_string(),
        )?;
        // `call` takes a 16-bit code, so the doorbell-only INVALID_PARAMETER (VIR-DB-H-005,
        // bits 31:16 of the block's `call` field) cannot arise: the register binding's set.
        ensure(
            code.may_return(status, Binding::Register),
            &step,
            "status",
            format!(
                "SUCCESS, BUSY or one listed for {code}: {:?}",
                code.listed_statuses()
            ),
            status.to_string(),
        )?;
        if code == CallCode::ALLOCATE && status == Status::SUCCESS && rs_gpa == resp {
            let h = ctx.read(P, resp, 4)?;
            handles.push(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
            if handles.len() > 64 {
                handles.remove(0);
            }
        }
    }
    // Nothing leaked: after a reset the whole quota is free and every slot allocatable.
    if ctx.query(P)?.vm_state == vm_state::NEGOTIATED {
        expect(
            "RESET after the random calls",
            Status::SUCCESS,
            ctx.reset(P)?,
        )?;
    }
    let f = ctx.negotiate_all(P)?;
    if f.contains(Features::QUOTA_QUERY) {
        let q = ctx.quota(P)?;
        expect_eq(
            "QUERY_QUOTA after the random calls and a RESET",
            "irtes_free",
            q.irtes_total.get(),
            q.irtes_free.get(),
        )?;
        expect_eq(
            "QUERY_QUOTA after the random calls and a RESET",
            "vectors_free",
            q.vectors_total.get(),
            q.vectors_free.get(),
        )?;
    }
    let q = ctx.query(P)?;
    let apic = ctx.apic(P, 0)?;
    for _ in 0..q.vector_quota.get().min(q.irte_quota.get()) {
        let a = ctx.allocate(P)?;
        ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    }
    Ok(())
}

fn one_allocation_per_irte(ctx: &mut Ctx<'_>) -> CheckResult {
    // VT-d: one table, an entry is its index. AMD-Vi: one table per device, an entry is the
    // device's source id and the index (a device can only reach its own table).
    let per_device = matches!(ctx.fixture().irte_format, Some(IrteFormat::AmdVi));
    let mut seen: BTreeSet<(Option<(VmRef, u32)>, u32)> = BTreeSet::new();
    let mut tried = 0;
    for vm in [P, S] {
        if ctx.vm(vm).is_err() {
            continue;
        }
        let f = ctx.negotiate_all(vm)?;
        let mut allocs = Vec::new();
        for _ in 0..16 {
            let slot = ctx.next_slot(vm)?;
            allocs.push((ctx.allocate_slot(vm, slot)?, slot.device_id));
        }
        if f.contains(Features::MSI) {
            let devs: Vec<_> = ctx
                .vm(vm)?
                .devices
                .iter()
                .filter(|d| d.msi_vectors >= 4)
                .copied()
                .collect();
            for d in devs {
                allocs.push((ctx.allocate_msi(vm, d.device_id, 2)?, d.device_id));
            }
        }
        for (a, device_id) in allocs {
            let table = per_device.then_some((vm, device_id));
            for sub in 0..a.count {
                let index = ctx
                    .host()
                    .irte(vm, a.handle, sub)
                    .map_err(|e| harness("IRTE introspection", e))?;
                let Some(e) = index else {
                    return Err(value_failure(
                        format!("IRTE of handle {:#x}", a.handle),
                        "IRTE hook answer",
                        "an entry",
                        "none",
                    ));
                };
                ensure(
                    seen.insert((table, e.index)),
                    format!(
                        "entry of handle {:#x} sub-handle {sub} in the {vm}",
                        a.handle
                    ),
                    "IRTE index",
                    "not backing any other allocation",
                    format!("{} already taken", e.index),
                )?;
                tried += 1;
            }
        }
    }
    ensure(
        tried > 0,
        "allocations in both VMs",
        "entries looked at",
        "some",
        "none",
    )
}

fn fpd_when_not_present(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let a = ctx.allocate(P)?;
    let e = ctx.irte(P, a.handle, 0)?;
    ensure(
        e.raw & 2 == 2,
        "IRTE of an ALLOCATED vector",
        "FPD",
        "1",
        "0",
    )?;
    if f.contains(Features::RESERVATION) {
        ctx.reserve(P, a.handle, 0)?;
        let e = ctx.irte(P, a.handle, 0)?;
        ensure(e.raw & 2 == 2, "IRTE of a RESERVED vector", "FPD", "1", "0")?;
    }
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    let e = ctx.irte(P, a.handle, 0)?;
    ensure(
        e.raw & 2 == 2,
        "IRTE of a deactivated vector",
        "FPD",
        "1",
        "0",
    )
}

fn other_vm_changes_nothing(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.vm(S)?;
    let f = ctx.negotiate_all(P)?;
    ctx.allocate_active(P)?;
    ctx.allocate(P)?;
    if f.contains(Features::RESERVATION) {
        let r = ctx.allocate(P)?;
        ctx.reserve(P, r.handle, 0)?;
    }
    let before = ctx.snapshot(Scope::Vm(P))?;
    let fs = ctx.negotiate_all(S)?;
    let apic = ctx.apic(S, 0)?;
    let apic1 = ctx.apic(S, 1).unwrap_or(apic);
    let a = ctx.allocate(S)?;
    ctx.activate(S, a.handle, 0, apic, VECTOR)?;
    ctx.unchanged(
        "the secondary VM allocating and activating",
        &before,
        Scope::Vm(P),
    )?;
    expect(
        "SET_AFFINITY in the secondary VM",
        Status::SUCCESS,
        ctx.set_affinity(S, a.handle, 0, apic1, VECTOR + 1)?,
    )?;
    expect(
        "DEACTIVATE in the secondary VM",
        Status::SUCCESS,
        ctx.deactivate(S, a.handle, 0)?,
    )?;
    expect(
        "FREE in the secondary VM",
        Status::SUCCESS,
        ctx.free(S, a.handle)?,
    )?;
    ctx.unchanged(
        "the secondary VM retargeting, deactivating and freeing",
        &before,
        Scope::Vm(P),
    )?;
    if fs.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(S)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 2)
            .copied()
    {
        let m = ctx.allocate_msi(S, d.device_id, 1)?;
        ctx.activate(S, m.handle, 1, apic, VECTOR)?;
    }
    expect("RESET in the secondary VM", Status::SUCCESS, ctx.reset(S)?)?;
    ctx.unchanged("the secondary VM calling RESET", &before, Scope::Vm(P))?;
    ctx.negotiate_all(S)?;
    ctx.allocate_active(S)?;
    ctx.reset_vm(S)?;
    ctx.unchanged(
        "a platform reset of the secondary VM",
        &before,
        Scope::Vm(P),
    )
}

fn no_foreign_entry(ctx: &mut Ctx<'_>) -> CheckResult {
    let mode = vtd(ctx)?;
    let fx = ctx.fixture().clone();
    let rids: Vec<(u32, u16)> = fx
        .primary
        .devices
        .iter()
        .filter_map(|d| d.source.map(|s| (d.device_id, s.requester_id())))
        .collect();
    if rids.is_empty() {
        return Err(Stop::NotTestable(
            "the fixture gives no device's requester id".into(),
        ));
    }
    // Present entries in both VMs.
    let mut mine = BTreeSet::new();
    for vm in [P, S] {
        if ctx.vm(vm).is_err() {
            continue;
        }
        let f = ctx.negotiate_all(vm)?;
        let apic = ctx.apic(vm, 0)?;
        let slots = ctx.slots_for(vm, f)?;
        let devs: BTreeSet<u32> = slots.iter().map(|s| s.device_id).collect();
        for dev in devs {
            let Some(slot) = slots.iter().find(|s| s.device_id == dev).copied() else {
                continue;
            };
            let a = ctx.allocate_slot(vm, slot)?;
            ctx.activate(vm, a.handle, 0, apic, VECTOR)?;
            if vm == P {
                mine.insert(ctx.irte(P, a.handle, 0)?.index);
            }
        }
    }
    let present = ctx
        .host()
        .present_irtes()
        .map_err(|e| harness("table scan", e))?;
    for e in present {
        let Ok(irte) = Irte::decode(e.raw, mode) else {
            continue;
        };
        for &(dev, rid) in &rids {
            if irte.sid_matches(rid) {
                ensure(
                    mine.contains(&e.index),
                    format!("present IRTE {} of the table", e.index),
                    &format!("source check accepting requester id {rid:#06x} of device {dev:#x}"),
                    "only in the primary VM's own allocations",
                    "an entry of no allocation of the VM accepts it",
                )?;
            }
        }
    }
    Ok(())
}
