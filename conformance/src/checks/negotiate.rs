//! Negotiation, QUERY, reset, the VM state machine and the legacy scheme (VIR-NEG-H-*,
//! VIR-QRY-H-*, VIR-RST-H-*, VIR-VMS-H-*, VIR-LEG-H-*).

use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{MessageFormat, QueryResponse, StorageKind, vm_state};
use zerocopy::IntoBytes;

use super::discover;
use crate::ctx::{
    Ctx, VECTOR, activate_request, allocate_request, ensure, expect, expect_eq, negotiate_request,
};
use crate::hut::{
    CapRegister, DeviceFixture, DeviceInterrupts, Fault, MSI_ENABLE, MSIX_ENABLE,
    MSIX_FUNCTION_MASK, Scope, VmRef,
};
use crate::outcome::{CheckResult, Stop, harness};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-NEG-H-001"],
        "neg_already_negotiated",
        "NEGOTIATE in NEGOTIATED returns ALREADY_NEGOTIATED (after the reserved-field check, before version and features) until a reset",
        already_negotiated
    ),
    check!(
        ["VIR-NEG-H-002"],
        "neg_unsupported_version",
        "versions outside [min_version, max_version] return UNSUPPORTED_VERSION (before the feature check); version 1 commits",
        unsupported_version
    ),
    check!(
        ["VIR-NEG-H-003"],
        "neg_unsupported_feature",
        "accepting any bit the host did not offer returns UNSUPPORTED_FEATURE; every offered bit is accepted",
        unsupported_feature
    ),
    check!(
        ["VIR-NEG-H-004"],
        "neg_legacy_interrupts_enabled",
        "NEGOTIATE while legacy MSI/MSI-X is enabled on a vIR device returns INVALID_STATE; after disabling it commits",
        legacy_enabled
    ),
    check!(
        ["VIR-NEG-H-005", "VIR-NEG-H-007"],
        "neg_commit_and_session",
        "a commit echoes version and features, moves the VM to NEGOTIATED, and the session number counts 1, 2, 3 across resets",
        commit_and_session
    ),
    check!(
        ["VIR-NEG-H-006"],
        "neg_offers_v1_bits_only",
        "features_offered has no bit outside 0-5, in LEGACY and in NEGOTIATED",
        v1_bits_only
    ),
    check!(
        ["VIR-NEG-H-008"],
        "neg_v1_session_with_higher_versions",
        "a host offering versions above 1 commits version 1 when asked and reports it",
        v1_with_higher
    ),
    check!(
        ["VIR-QRY-H-001"],
        "qry_versions_match_info_leaf",
        "QUERY reports the min_version and max_version of the info leaf",
        versions_match
    ),
    check!(
        ["VIR-QRY-H-002", "VIR-FMT-H-009"],
        "qry_message_format",
        "message_format is VTD_REMAPPABLE or AMD_VI, and every ActivateResponse carries it",
        message_format
    ),
    check!(
        ["VIR-QRY-H-003"],
        "qry_max_msi_log2",
        "max_msi_log2 is at most 5, 0 without MSI, and a block of 2^max_msi_log2 can be allocated",
        max_msi_log2
    ),
    check!(
        ["VIR-QRY-H-004"],
        "qry_state_fields",
        "vm_state, features_active and active_version are 0 in LEGACY and the committed values in NEGOTIATED",
        state_fields
    ),
    check!(
        ["VIR-QRY-H-005"],
        "qry_constant_fields",
        "versions, format, max_msi_log2, features_offered and quotas never change over the VM's life",
        constant_fields
    ),
    check!(
        ["VIR-RST-H-001"],
        "rst_frees_every_allocation",
        "after RESET every handle is stale, every slot and the whole quota are free again",
        reset_frees
    ),
    check!(
        ["VIR-RST-H-001"],
        "rst_entries_not_present",
        "after RESET no IRTE of the VM's former allocations is present and no route or host IRQ remains",
        reset_entries_not_present
    ),
    check!(
        ["VIR-RST-H-002"],
        "rst_back_to_legacy",
        "after RESET QUERY reports LEGACY with no features or version, calls return NOT_NEGOTIATED, MSI-X is trapped again",
        back_to_legacy
    ),
    check!(
        ["VIR-RST-H-003"],
        "rst_renegotiate",
        "after RESET a NEGOTIATE with another feature set commits exactly as for a new VM",
        renegotiate
    ),
    check!(
        ["VIR-RST-H-004"],
        "rst_always_succeeds",
        "RESET with allocations in every state, and with a backend failure pending, returns SUCCESS",
        always_succeeds
    ),
    check!(
        ["VIR-RST-H-005", "VIR-RST-H-001"],
        "rst_platform_reset",
        "a platform reset of a NEGOTIATED VM frees everything and returns it to LEGACY",
        platform_reset
    ),
    check!(
        ["VIR-RST-H-006"],
        "rst_interrupts_presented_disabled",
        "after RESET the guest reads MSI and MSI-X disabled and every emulated MSI-X entry at its reset value",
        reset_presents_disabled
    ),
    check!(
        ["VIR-VMS-H-001"],
        "vms_created_legacy_shared_state",
        "a VM starts in LEGACY; its state is shared by all vCPUs and independent of other VMs",
        shared_state
    ),
    check!(
        ["VIR-VMS-H-002"],
        "vms_failures_keep_state",
        "every failing event of the VM state table leaves vm_state unchanged",
        failures_keep_state
    ),
    check!(
        ["VIR-LEG-H-001"],
        "leg_trapped_until_negotiated",
        "MSI-X tables are trapped at creation and after a refused NEGOTIATE",
        trapped_until_negotiated
    ),
    check!(
        ["VIR-LEG-H-002"],
        "leg_untrapped_after_commit",
        "MSI-X tables of every vIR device are untrapped once NEGOTIATE commits",
        untrapped_after_commit
    ),
    check!(
        ["VIR-LEG-H-003"],
        "leg_msi_enable_needs_issued_message",
        "in NEGOTIATED the device's MSI is enabled only with the message issued for its live MSI allocation",
        msi_enable_needs_issued
    ),
    check!(
        ["VIR-LEG-H-004"],
        "leg_msi_mme_and_changes_refused",
        "an MSI enable with MME above the allocation, and changes of address, data or MME while enabled, are refused",
        msi_mme_and_changes
    ),
    check!(
        ["VIR-LEG-H-005"],
        "leg_msix_control_forwarded",
        "in NEGOTIATED the guest's MSI-X Enable and Function Mask writes reach the device",
        msix_control_forwarded
    ),
];

const P: VmRef = VmRef::Primary;

fn already_negotiated(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = ctx.offered(P)?;
    ctx.negotiate(P, offered)?;
    for (step, n) in [
        ("NEGOTIATE again", negotiate_request(1, offered)),
        (
            "NEGOTIATE again with version 0xffff",
            negotiate_request(0xffff, offered),
        ),
        (
            "NEGOTIATE again with feature bit 60",
            negotiate_request(1, Features(1 << 60)),
        ),
    ] {
        let x = ctx.exchange_call(P, CallCode::NEGOTIATE, n.as_bytes())?;
        expect(step, Status::ALREADY_NEGOTIATED, x.status)?;
    }
    let mut n = negotiate_request(1, offered);
    n.reserved0.set(1);
    let x = ctx.exchange_call(P, CallCode::NEGOTIATE, n.as_bytes())?;
    expect(
        "NEGOTIATE again with reserved0 set",
        Status::INVALID_PARAMETER,
        x.status,
    )?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, offered)?;
    Ok(())
}

fn unsupported_version(ctx: &mut Ctx<'_>) -> CheckResult {
    let q = ctx.query(P)?;
    let (min, max) = (q.min_version.get(), q.max_version.get());
    let mut bad = vec![0u16, 0xffff];
    if let Some(v) = max.checked_add(1) {
        bad.push(v);
    }
    if min > 1 {
        bad.push(min - 1);
    }
    for v in bad {
        if (min..=max).contains(&v) {
            continue;
        }
        let x = ctx.exchange_call(
            P,
            CallCode::NEGOTIATE,
            negotiate_request(v, Features::NONE).as_bytes(),
        )?;
        expect(
            format!("NEGOTIATE version {v:#x} (offered {min}..={max})"),
            Status::UNSUPPORTED_VERSION,
            x.status,
        )?;
        let x = ctx.exchange_call(
            P,
            CallCode::NEGOTIATE,
            negotiate_request(v, Features(1 << 62)).as_bytes(),
        )?;
        expect(
            format!("NEGOTIATE version {v:#x} with an unoffered feature"),
            Status::UNSUPPORTED_VERSION,
            x.status,
        )?;
    }
    ensure(
        (min..=max).contains(&vir_abi::VIR_VERSION_1),
        "QUERY",
        "offered version range",
        "containing version 1",
        format!("{min}..={max}"),
    )?;
    ctx.negotiate(P, Features::NONE)?;
    Ok(())
}

fn unsupported_feature(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = Features(ctx.query(P)?.features_offered.get());
    for bit in 0..64 {
        let f = Features(1 << bit);
        if offered.contains(f) {
            continue;
        }
        let x = ctx.exchange_call(P, CallCode::NEGOTIATE, negotiate_request(1, f).as_bytes())?;
        expect(
            format!("NEGOTIATE accepting unoffered bit {bit}"),
            Status::UNSUPPORTED_FEATURE,
            x.status,
        )?;
        let x = ctx.exchange_call(
            P,
            CallCode::NEGOTIATE,
            negotiate_request(1, offered | f).as_bytes(),
        )?;
        expect(
            format!("NEGOTIATE accepting every offered bit and bit {bit}"),
            Status::UNSUPPORTED_FEATURE,
            x.status,
        )?;
    }
    // Order against step INVALID_STATE: an unoffered bit with legacy MSI enabled.
    let dev = ctx.vm(P)?.devices.first().map(|d| d.device_id);
    if let Some(dev) = dev
        && ctx.host().set_legacy_interrupt(P, dev, true).is_ok()
    {
        let x = ctx.exchange_call(
            P,
            CallCode::NEGOTIATE,
            negotiate_request(1, Features(1 << 63)).as_bytes(),
        )?;
        expect(
            "NEGOTIATE with bit 63 while legacy MSI is enabled",
            Status::UNSUPPORTED_FEATURE,
            x.status,
        )?;
        ctx.host()
            .set_legacy_interrupt(P, dev, false)
            .map_err(|e| harness("disabling legacy MSI", e))?;
    }
    // Positive: each offered bit alone.
    for bit in 0..64 {
        let f = Features(1 << bit);
        if !offered.contains(f) {
            continue;
        }
        ctx.negotiate(P, f)?;
        expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    }
    Ok(())
}

fn legacy_enabled(ctx: &mut Ctx<'_>) -> CheckResult {
    let devices: Vec<u32> = ctx.vm(P)?.devices.iter().map(|d| d.device_id).collect();
    let offered = ctx.offered(P)?;
    for dev in devices {
        ctx.host()
            .set_legacy_interrupt(P, dev, true)
            .map_err(|e| harness("enabling legacy MSI", e))?;
        let x = ctx.exchange_call(
            P,
            CallCode::NEGOTIATE,
            negotiate_request(1, offered).as_bytes(),
        )?;
        let step = format!("NEGOTIATE while legacy MSI/MSI-X of device {dev:#x} is enabled");
        expect(&step, Status::INVALID_STATE, x.status)?;
        expect_eq(&step, "vm_state", vm_state::LEGACY, ctx.query(P)?.vm_state)?;
        ctx.host()
            .set_legacy_interrupt(P, dev, false)
            .map_err(|e| harness("disabling legacy MSI", e))?;
    }
    ctx.negotiate(P, offered)?;
    Ok(())
}

fn commit_and_session(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = ctx.offered(P)?;
    let sets = [
        offered,
        offered.intersection(Features::MSIX | Features::QUOTA_QUERY),
        Features::NONE,
    ];
    for (i, f) in sets.into_iter().enumerate() {
        let r = ctx.negotiate(P, f)?;
        let step = format!("NEGOTIATE number {} (features {f})", i + 1);
        expect_eq(&step, "response version", 1, r.version.get())?;
        expect_eq(&step, "response features", f.bits(), r.features.get())?;
        expect_eq(&step, "response session", i as u32 + 1, r.session.get())?;
        let q = ctx.query(P)?;
        expect_eq(&step, "QUERY vm_state", vm_state::NEGOTIATED, q.vm_state)?;
        expect_eq(
            &step,
            "QUERY features_active",
            f.bits(),
            q.features_active.get(),
        )?;
        expect_eq(&step, "QUERY active_version", 1, q.active_version.get())?;
        if i == 0 {
            expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
        } else {
            ctx.reset_vm(P)?;
        }
    }
    Ok(())
}

fn v1_bits_only(ctx: &mut Ctx<'_>) -> CheckResult {
    let check = |q: &QueryResponse, when: &str| {
        let extra = Features(q.features_offered.get()).difference(Features::V1_DEFINED);
        ensure(
            extra.is_empty(),
            format!("QUERY {when}"),
            "features_offered outside bits 0-5",
            "none",
            extra.to_string(),
        )
    };
    let q = ctx.query(P)?;
    check(&q, "in LEGACY")?;
    ctx.negotiate_all(P)?;
    let q = ctx.query(P)?;
    check(&q, "in NEGOTIATED")
}

fn v1_with_higher(ctx: &mut Ctx<'_>) -> CheckResult {
    let q = ctx.query(P)?;
    if q.max_version.get() <= 1 {
        return Err(Stop::NotApplicable(
            "the host offers no version above 1".into(),
        ));
    }
    let f = ctx.negotiate_all(P)?;
    let q = ctx.query(P)?;
    expect_eq(
        "QUERY after committing version 1",
        "active_version",
        1,
        q.active_version.get(),
    )?;
    expect_eq(
        "QUERY after committing version 1",
        "features_active",
        f.bits(),
        q.features_active.get(),
    )?;
    // Version 1 calls behave as specified, e.g. an unknown code stays unknown.
    let x = ctx.exchange(P, CallCode(0x20), &[], 0)?;
    expect(
        "code 0x0020 in a version 1 session",
        Status::UNKNOWN_CALL,
        x.status,
    )
}

fn versions_match(ctx: &mut Ctx<'_>) -> CheckResult {
    let d = discover(ctx, P, 0)?;
    let q = ctx.query(P)?;
    expect_eq(
        "QUERY",
        "min_version (info leaf EAX 15:0)",
        d.info.min_version,
        q.min_version.get(),
    )?;
    expect_eq(
        "QUERY",
        "max_version (info leaf EAX 31:16)",
        d.info.max_version,
        q.max_version.get(),
    )
}

fn message_format(ctx: &mut Ctx<'_>) -> CheckResult {
    let q = ctx.query(P)?;
    let fmt = q.message_format;
    ensure(
        fmt == MessageFormat::VTD_REMAPPABLE.0 || fmt == MessageFormat::AMD_VI.0,
        "QUERY",
        "message_format",
        "1 (VTD_REMAPPABLE) or 2 (AMD_VI)",
        fmt.to_string(),
    )?;
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let a = ctx.allocate(P)?;
    if f.contains(Features::RESERVATION) {
        let m = ctx.reserve(P, a.handle, 0)?;
        expect_eq("ACTIVATE with RESERVE", "format", fmt, m.format)?;
    }
    let m = ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    expect_eq("ACTIVATE", "format", fmt, m.format)?;
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 2)
            .copied()
    {
        let b = ctx.allocate_msi(P, d.device_id, 1)?;
        for sub in 0..2 {
            let m = ctx.activate(P, b.handle, sub, apic, VECTOR + 1 + sub as u8)?;
            expect_eq(
                format!("ACTIVATE of MSI sub-handle {sub}"),
                "format",
                fmt,
                m.format,
            )?;
        }
    }
    Ok(())
}

fn max_msi_log2(ctx: &mut Ctx<'_>) -> CheckResult {
    let q = ctx.query(P)?;
    let max = q.max_msi_log2;
    ensure(max <= 5, "QUERY", "max_msi_log2", "<= 5", max.to_string())?;
    let offered = Features(q.features_offered.get());
    if !offered.contains(Features::MSI) {
        return expect_eq("QUERY of a host without MSI", "max_msi_log2", 0, max);
    }
    ctx.negotiate(P, Features::MSI)?;
    let need = 1u32 << max;
    let Some(d) = ctx
        .vm(P)?
        .devices
        .iter()
        .find(|d| u32::from(d.msi_vectors) >= need)
        .copied()
    else {
        return Err(Stop::NotTestable(format!(
            "no fixture device has an MSI capability of {need} vectors"
        )));
    };
    let a = ctx.allocate_msi(P, d.device_id, max)?;
    expect_eq(
        format!("ALLOCATE MSI 2^{max}"),
        "count",
        need as u16,
        a.count,
    )
}

fn state_fields(ctx: &mut Ctx<'_>) -> CheckResult {
    let legacy = |q: &QueryResponse, when: &str| -> CheckResult {
        let step = format!("QUERY {when}");
        expect_eq(&step, "vm_state", vm_state::LEGACY, q.vm_state)?;
        expect_eq(&step, "features_active", 0, q.features_active.get())?;
        expect_eq(&step, "active_version", 0, q.active_version.get())
    };
    let q = ctx.query(P)?;
    legacy(&q, "at creation")?;
    let offered = ctx.offered(P)?;
    let f = offered.difference(Features::IMS_SYSTEM);
    ctx.negotiate(P, f)?;
    let q = ctx.query(P)?;
    expect_eq(
        "QUERY in NEGOTIATED",
        "vm_state",
        vm_state::NEGOTIATED,
        q.vm_state,
    )?;
    expect_eq(
        "QUERY in NEGOTIATED",
        "features_active",
        f.bits(),
        q.features_active.get(),
    )?;
    expect_eq(
        "QUERY in NEGOTIATED",
        "active_version",
        1,
        q.active_version.get(),
    )?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    let q = ctx.query(P)?;
    legacy(&q, "after RESET")
}

fn constant(q: &QueryResponse) -> (u16, u16, u8, u8, u64, u32, u32) {
    (
        q.min_version.get(),
        q.max_version.get(),
        q.message_format,
        q.max_msi_log2,
        q.features_offered.get(),
        q.irte_quota.get(),
        q.vector_quota.get(),
    )
}

fn constant_fields(ctx: &mut Ctx<'_>) -> CheckResult {
    let reference = constant(&ctx.query(P)?);
    let what = "(min, max, format, max_msi_log2, features_offered, irte_quota, vector_quota)";
    let again = |ctx: &mut Ctx<'_>, when: &str| -> CheckResult {
        let n = ctx.vm(P)?.vcpus.len() as u32;
        for vcpu in 0..n {
            let x = ctx.exchange_on(P, vcpu, CallCode::QUERY, &[], 40)?;
            expect(
                format!("QUERY on vCPU {vcpu} {when}"),
                Status::SUCCESS,
                x.status,
            )?;
            let q = zerocopy::FromBytes::read_from_bytes(x.response.as_slice())
                .map_err(|_| Stop::NotTestable("short QUERY response".into()))?;
            expect_eq(
                format!("QUERY on vCPU {vcpu} {when}"),
                what,
                reference,
                constant(&q),
            )?;
        }
        Ok(())
    };
    again(ctx, "at creation")?;
    ctx.negotiate_all(P)?;
    again(ctx, "in NEGOTIATED")?;
    ctx.allocate_active(P)?;
    ctx.allocate(P)?;
    again(ctx, "with allocations")?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    again(ctx, "after RESET")?;
    ctx.negotiate(P, Features::NONE)?;
    ctx.reset_vm(P)?;
    again(ctx, "after a platform reset")
}

/// Allocations in every state the session allows: (handle, count).
fn populate(ctx: &mut Ctx<'_>, f: Features) -> Result<Vec<(u32, u16)>, Stop> {
    let apic = ctx.apic(P, 0)?;
    let mut out = Vec::new();
    let (a, _) = ctx.allocate_active(P)?;
    out.push((a.handle, a.count));
    let b = ctx.allocate(P)?;
    out.push((b.handle, b.count));
    if f.contains(Features::RESERVATION) {
        let c = ctx.allocate(P)?;
        ctx.reserve(P, c.handle, 0)?;
        out.push((c.handle, c.count));
    }
    let d = ctx.allocate(P)?;
    ctx.activate(P, d.handle, 0, apic, VECTOR + 1)?;
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, d.handle, 0)?,
    )?;
    out.push((d.handle, d.count));
    if f.contains(Features::MSI)
        && let Some(dev) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 4)
            .copied()
    {
        let m = ctx.allocate_msi(P, dev.device_id, 2)?;
        ctx.activate(P, m.handle, 1, apic, VECTOR + 2)?;
        out.push((m.handle, m.count));
    }
    Ok(out)
}

fn reset_frees(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let allocs = populate(ctx, f)?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, f)?;
    let apic = ctx.apic(P, 0)?;
    for (h, _) in &allocs {
        let r = ctx.try_activate(P, &activate_request(*h, 0, 0, apic, VECTOR))?;
        expect(
            format!("ACTIVATE of handle {h:#x} issued before RESET"),
            Status::INVALID_HANDLE,
            r.err().unwrap_or(Status::SUCCESS),
        )?;
        expect(
            format!("FREE of handle {h:#x} issued before RESET"),
            Status::INVALID_HANDLE,
            ctx.free(P, *h)?,
        )?;
    }
    if f.contains(Features::QUOTA_QUERY) {
        let q = ctx.quota(P)?;
        expect_eq(
            "QUERY_QUOTA after RESET",
            "irtes_free",
            q.irtes_total.get(),
            q.irtes_free.get(),
        )?;
        expect_eq(
            "QUERY_QUOTA after RESET",
            "vectors_free",
            q.vectors_total.get(),
            q.vectors_free.get(),
        )?;
    }
    // Every slot used before is free again: the helpers restart from the first slot.
    for _ in 0..allocs.len() {
        ctx.allocate(P)?;
    }
    Ok(())
}

fn reset_entries_not_present(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let allocs = populate(ctx, f)?;
    let mut indices = Vec::new();
    for (h, count) in &allocs {
        for sub in 0..*count {
            indices.push(ctx.irte(P, *h, sub)?.index);
        }
    }
    let vm_before = ctx.snapshot(Scope::Vm(P)).ok();
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    let present = ctx
        .host()
        .present_irtes()
        .map_err(|e| harness("table scan", e))?;
    let still: Vec<u32> = present
        .iter()
        .map(|e| e.index)
        .filter(|i| indices.contains(i))
        .collect();
    ensure(
        still.is_empty(),
        "table scan after RESET",
        "present entries of the VM's former allocations",
        "none",
        format!("{still:?}"),
    )?;
    if vm_before.is_some() {
        let after = ctx.snapshot(Scope::Vm(P))?;
        for part in ["routes", "host_irqs"] {
            if let Some((k, v)) = after.0.iter().find(|(k, _)| k.ends_with(part)) {
                ensure(v == "[]", "snapshot after RESET", k, "empty", v.clone())?;
            }
        }
    }
    Ok(())
}

fn back_to_legacy(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    ctx.allocate_active(P)?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    let q = ctx.query(P)?;
    expect_eq(
        "QUERY after RESET",
        "vm_state",
        vm_state::LEGACY,
        q.vm_state,
    )?;
    expect_eq(
        "QUERY after RESET",
        "features_active",
        0,
        q.features_active.get(),
    )?;
    expect_eq(
        "QUERY after RESET",
        "active_version",
        0,
        q.active_version.get(),
    )?;
    let dev = ctx.vm(P)?.msix_device().map(|d| d.device_id).unwrap_or(0);
    let x = ctx.exchange_call(
        P,
        CallCode::ALLOCATE,
        allocate_request(dev, StorageKind::MSIX, 0, 0).as_bytes(),
    )?;
    expect("ALLOCATE after RESET", Status::NOT_NEGOTIATED, x.status)?;
    let devices: Vec<u32> = ctx.vm(P)?.devices.iter().map(|d| d.device_id).collect();
    for d in devices {
        let trapped = ctx
            .host()
            .msix_trapped(P, d)
            .map_err(|e| harness("MSI-X trap introspection", e))?;
        expect_eq(
            format!("MSI-X table of device {d:#x} after RESET"),
            "trapped",
            true,
            trapped,
        )?;
    }
    Ok(())
}

fn renegotiate(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = ctx.offered(P)?;
    ctx.negotiate(P, offered)?;
    ctx.allocate_active(P)?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    // Errors first, exactly as for a new VM.
    let x = ctx.exchange_call(
        P,
        CallCode::NEGOTIATE,
        negotiate_request(0, offered).as_bytes(),
    )?;
    expect(
        "NEGOTIATE version 0 after RESET",
        Status::UNSUPPORTED_VERSION,
        x.status,
    )?;
    let second = offered.difference(Features::MSIX);
    let r = ctx.negotiate(P, second)?;
    expect_eq(
        "NEGOTIATE after RESET",
        "features",
        second.bits(),
        r.features.get(),
    )?;
    if offered.contains(Features::MSIX)
        && let Some(d) = ctx.vm(P)?.msix_device().copied()
    {
        let x = ctx.exchange_call(
            P,
            CallCode::ALLOCATE,
            allocate_request(d.device_id, StorageKind::MSIX, 0, 0).as_bytes(),
        )?;
        expect(
            "ALLOCATE MSIX in a session without MSIX",
            Status::FEATURE_NOT_NEGOTIATED,
            x.status,
        )?;
    }
    Ok(())
}

fn always_succeeds(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    populate(ctx, f)?;
    let _ = ctx.host().inject_failure(Fault::RouteAdd);
    let _ = ctx.host().inject_failure(Fault::IrqStart);
    expect(
        "RESET with allocations in every state",
        Status::SUCCESS,
        ctx.reset(P)?,
    )?;
    ctx.negotiate(P, f)?;
    expect("RESET of an empty session", Status::SUCCESS, ctx.reset(P)?)?;
    expect("RESET in LEGACY", Status::NOT_NEGOTIATED, ctx.reset(P)?)
}

fn platform_reset(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let allocs = populate(ctx, f)?;
    ctx.reset_vm(P)?;
    let q = ctx.query(P)?;
    expect_eq(
        "QUERY after a platform reset",
        "vm_state",
        vm_state::LEGACY,
        q.vm_state,
    )?;
    expect_eq(
        "QUERY after a platform reset",
        "features_active",
        0,
        q.features_active.get(),
    )?;
    ctx.negotiate(P, f)?;
    let apic = ctx.apic(P, 0)?;
    for (h, _) in &allocs {
        let r = ctx.try_activate(P, &activate_request(*h, 0, 0, apic, VECTOR))?;
        expect(
            format!("ACTIVATE of handle {h:#x} issued before the platform reset"),
            Status::INVALID_HANDLE,
            r.err().unwrap_or(Status::SUCCESS),
        )?;
    }
    if f.contains(Features::QUOTA_QUERY) {
        let q = ctx.quota(P)?;
        expect_eq(
            "QUERY_QUOTA after a platform reset",
            "irtes_free",
            q.irtes_total.get(),
            q.irtes_free.get(),
        )?;
        expect_eq(
            "QUERY_QUOTA after a platform reset",
            "vectors_free",
            q.vectors_total.get(),
            q.vectors_free.get(),
        )?;
    }
    for _ in 0..allocs.len() {
        ctx.allocate(P)?;
    }
    Ok(())
}

fn shared_state(ctx: &mut Ctx<'_>) -> CheckResult {
    let n = ctx.vm(P)?.vcpus.len() as u32;
    let state_on = |ctx: &mut Ctx<'_>, vcpu: u32| -> Result<u8, Stop> {
        let x = ctx.exchange_on(P, vcpu, CallCode::QUERY, &[], 40)?;
        expect(format!("QUERY on vCPU {vcpu}"), Status::SUCCESS, x.status)?;
        Ok(x.response.get(6).copied().unwrap_or(0xff))
    };
    for vcpu in 0..n {
        expect_eq(
            format!("QUERY on vCPU {vcpu} of a new VM"),
            "vm_state",
            vm_state::LEGACY,
            state_on(ctx, vcpu)?,
        )?;
    }
    if ctx.fixture().secondary.is_some() {
        expect_eq(
            "QUERY in the secondary VM at creation",
            "vm_state",
            vm_state::LEGACY,
            ctx.query(VmRef::Secondary)?.vm_state,
        )?;
    }
    let offered = ctx.offered(P)?;
    let last = n.saturating_sub(1);
    let x = ctx.exchange_on(
        P,
        last,
        CallCode::NEGOTIATE,
        negotiate_request(1, offered).as_bytes(),
        16,
    )?;
    expect(
        format!("NEGOTIATE on vCPU {last}"),
        Status::SUCCESS,
        x.status,
    )?;
    for vcpu in 0..n {
        expect_eq(
            format!("QUERY on vCPU {vcpu} after NEGOTIATE on vCPU {last}"),
            "vm_state",
            vm_state::NEGOTIATED,
            state_on(ctx, vcpu)?,
        )?;
    }
    if ctx.fixture().secondary.is_some() {
        expect_eq(
            "QUERY in the secondary VM after the primary negotiated",
            "vm_state",
            vm_state::LEGACY,
            ctx.query(VmRef::Secondary)?.vm_state,
        )?;
    }
    let x = ctx.exchange_on(P, 0, CallCode::RESET, &[], 0)?;
    expect("RESET on vCPU 0", Status::SUCCESS, x.status)?;
    for vcpu in 0..n {
        expect_eq(
            format!("QUERY on vCPU {vcpu} after RESET"),
            "vm_state",
            vm_state::LEGACY,
            state_on(ctx, vcpu)?,
        )?;
    }
    Ok(())
}

fn failures_keep_state(ctx: &mut Ctx<'_>) -> CheckResult {
    let state = |ctx: &mut Ctx<'_>| -> Result<u8, Stop> { Ok(ctx.query(P)?.vm_state) };
    let offered = ctx.offered(P)?;
    let mut n = negotiate_request(1, offered);
    n.reserved0.set(2);
    let legacy_events: [(&str, CallCode, Vec<u8>); 6] = [
        (
            "NEGOTIATE with reserved0 set",
            CallCode::NEGOTIATE,
            n.as_bytes().to_vec(),
        ),
        (
            "NEGOTIATE version 0",
            CallCode::NEGOTIATE,
            negotiate_request(0, offered).as_bytes().to_vec(),
        ),
        (
            "NEGOTIATE with bit 50",
            CallCode::NEGOTIATE,
            negotiate_request(1, Features(1 << 50)).as_bytes().to_vec(),
        ),
        ("RESET", CallCode::RESET, vec![]),
        ("QUERY_QUOTA", CallCode::QUERY_QUOTA, vec![]),
        (
            "FREE",
            CallCode::FREE,
            crate::ctx::free_request(1).as_bytes().to_vec(),
        ),
    ];
    for (step, code, req) in &legacy_events {
        let x = ctx.exchange_call(P, *code, req)?;
        ensure(
            x.status != Status::SUCCESS,
            format!("{step} in LEGACY"),
            "status",
            "a failure",
            x.status.to_string(),
        )?;
        expect_eq(
            format!("{step} in LEGACY"),
            "vm_state",
            vm_state::LEGACY,
            state(ctx)?,
        )?;
    }
    ctx.reset_vm(P)?;
    expect_eq(
        "a platform reset in LEGACY",
        "vm_state",
        vm_state::LEGACY,
        state(ctx)?,
    )?;
    ctx.negotiate(P, offered)?;
    let negotiated_events: [(&str, CallCode, Vec<u8>); 4] = [
        (
            "NEGOTIATE",
            CallCode::NEGOTIATE,
            negotiate_request(1, offered).as_bytes().to_vec(),
        ),
        (
            "NEGOTIATE with reserved0 set",
            CallCode::NEGOTIATE,
            n.as_bytes().to_vec(),
        ),
        (
            "ALLOCATE of kind 0",
            CallCode::ALLOCATE,
            allocate_request(0, StorageKind(0), 0, 0)
                .as_bytes()
                .to_vec(),
        ),
        (
            "FREE of handle 0",
            CallCode::FREE,
            crate::ctx::free_request(0).as_bytes().to_vec(),
        ),
    ];
    for (step, code, req) in &negotiated_events {
        let x = ctx.exchange_call(P, *code, req)?;
        ensure(
            x.status != Status::SUCCESS,
            format!("{step} in NEGOTIATED"),
            "status",
            "a failure",
            x.status.to_string(),
        )?;
        expect_eq(
            format!("{step} in NEGOTIATED"),
            "vm_state",
            vm_state::NEGOTIATED,
            state(ctx)?,
        )?;
    }
    Ok(())
}

fn trapped_until_negotiated(ctx: &mut Ctx<'_>) -> CheckResult {
    let devices: Vec<u32> = ctx.vm(P)?.devices.iter().map(|d| d.device_id).collect();
    let check = |ctx: &mut Ctx<'_>, when: &str| -> CheckResult {
        for &d in &devices {
            let t = ctx
                .host()
                .msix_trapped(P, d)
                .map_err(|e| harness("MSI-X trap introspection", e))?;
            expect_eq(
                format!("MSI-X table of device {d:#x} {when}"),
                "trapped",
                true,
                t,
            )?;
        }
        Ok(())
    };
    check(ctx, "at creation")?;
    let x = ctx.exchange_call(
        P,
        CallCode::NEGOTIATE,
        negotiate_request(0, Features::NONE).as_bytes(),
    )?;
    expect("NEGOTIATE version 0", Status::UNSUPPORTED_VERSION, x.status)?;
    check(ctx, "after a refused NEGOTIATE")?;
    ctx.query(P)?;
    check(ctx, "after QUERY")
}

fn untrapped_after_commit(ctx: &mut Ctx<'_>) -> CheckResult {
    let devices: Vec<u32> = ctx.vm(P)?.devices.iter().map(|d| d.device_id).collect();
    ctx.negotiate_all(P)?;
    for d in devices {
        let t = ctx
            .host()
            .msix_trapped(P, d)
            .map_err(|e| harness("MSI-X trap introspection", e))?;
        expect_eq(
            format!("MSI-X table of device {d:#x} after NEGOTIATE"),
            "trapped",
            false,
            t,
        )?;
    }
    Ok(())
}

fn cw(ctx: &mut Ctx<'_>, dev: u32, reg: CapRegister, value: u32) -> CheckResult {
    ctx.host()
        .config_write(P, dev, reg, value)
        .map_err(|e| harness(&format!("guest write of {value:#x} to {reg:?}"), e))
}

fn cr(ctx: &mut Ctx<'_>, dev: u32, reg: CapRegister) -> Result<u32, Stop> {
    ctx.host()
        .config_read(P, dev, reg)
        .map_err(|e| harness(&format!("guest read of {reg:?}"), e))
}

fn device_state(ctx: &mut Ctx<'_>, dev: u32) -> Result<DeviceInterrupts, Stop> {
    ctx.host()
        .device_interrupts(P, dev)
        .map_err(|e| harness("device interrupt state", e))
}

fn write_msi_message(ctx: &mut Ctx<'_>, dev: u32, lo: u32, hi: u32, data: u32) -> CheckResult {
    cw(ctx, dev, CapRegister::MsiAddressLo, lo)?;
    cw(ctx, dev, CapRegister::MsiAddressHi, hi)?;
    cw(ctx, dev, CapRegister::MsiData, data)
}

fn msi_device(ctx: &mut Ctx<'_>, vectors: u8) -> Result<DeviceFixture, Stop> {
    ctx.require_offered(P, Features::MSI)?;
    ctx.vm(P)?
        .devices
        .iter()
        .find(|d| d.msi_vectors >= vectors)
        .copied()
        .ok_or_else(|| Stop::NotTestable(format!("no fixture device has {vectors} MSI vectors")))
}

fn expect_msi_enabled(ctx: &mut Ctx<'_>, dev: u32, step: &str, enabled: bool) -> CheckResult {
    let d = device_state(ctx, dev)?;
    expect_eq(step, "the device's MSI Enable", enabled, d.msi_enabled)?;
    let c = cr(ctx, dev, CapRegister::MsiControl)?;
    expect_eq(
        step,
        "MSI Enable read by the guest",
        enabled,
        c & MSI_ENABLE != 0,
    )
}

fn msi_enable_needs_issued(ctx: &mut Ctx<'_>) -> CheckResult {
    let d = msi_device(ctx, 2)?;
    ctx.negotiate_all(P)?;
    let dev = d.device_id;
    write_msi_message(ctx, dev, 0xfee0_0018, 0, 0)?;
    cw(ctx, dev, CapRegister::MsiControl, MSI_ENABLE)?;
    expect_msi_enabled(ctx, dev, "MSI enable with no MSI allocation", false)?;
    let a = ctx.allocate_msi(P, dev, 1)?;
    cw(ctx, dev, CapRegister::MsiControl, MSI_ENABLE)?;
    expect_msi_enabled(
        ctx,
        dev,
        "MSI enable with an allocation whose message was never issued",
        false,
    )?;
    let apic = ctx.apic(P, 0)?;
    let m = ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    let (lo, hi, data) = (m.address_lo.get(), m.address_hi.get(), m.data.get());
    for (step, l, dt) in [
        (
            "MSI enable with another remapping handle in the address",
            lo ^ (1 << 5),
            data,
        ),
        ("MSI enable with other data", lo, data ^ 1),
        (
            "MSI enable with a compatibility-format address",
            0xfee0_1000,
            data,
        ),
    ] {
        write_msi_message(ctx, dev, l, hi, dt)?;
        cw(ctx, dev, CapRegister::MsiControl, MSI_ENABLE)?;
        expect_msi_enabled(ctx, dev, step, false)?;
    }
    write_msi_message(ctx, dev, lo, hi, data)?;
    cw(ctx, dev, CapRegister::MsiControl, MSI_ENABLE)?;
    let step = "MSI enable with the issued message";
    expect_msi_enabled(ctx, dev, step, true)?;
    let s = device_state(ctx, dev)?;
    expect_eq(
        step,
        "the device's MSI address",
        u64::from(lo) | u64::from(hi) << 32,
        s.msi_address,
    )?;
    expect_eq(step, "the device's MSI data", data, s.msi_data)
}

fn msi_mme_and_changes(ctx: &mut Ctx<'_>) -> CheckResult {
    let d = msi_device(ctx, 4)?;
    ctx.negotiate_all(P)?;
    let dev = d.device_id;
    let a = ctx.allocate_msi(P, dev, 1)?;
    let apic = ctx.apic(P, 0)?;
    let m = ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    let (lo, hi, data) = (m.address_lo.get(), m.address_hi.get(), m.data.get());
    write_msi_message(ctx, dev, lo, hi, data)?;
    cw(ctx, dev, CapRegister::MsiControl, MSI_ENABLE | 2 << 4)?;
    expect_msi_enabled(
        ctx,
        dev,
        "MSI enable with Multiple Message Enable 2 for a 2-vector allocation",
        false,
    )?;
    cw(ctx, dev, CapRegister::MsiControl, MSI_ENABLE | 1 << 4)?;
    expect_msi_enabled(ctx, dev, "MSI enable with Multiple Message Enable 1", true)?;
    let before = device_state(ctx, dev)?;
    expect_eq(
        "MSI enable with Multiple Message Enable 1",
        "the device's MME",
        1,
        before.msi_mme,
    )?;
    for (step, reg, value) in [
        (
            "a data change while MSI is enabled",
            CapRegister::MsiData,
            data ^ 5,
        ),
        (
            "an address change while MSI is enabled",
            CapRegister::MsiAddressLo,
            lo ^ (1 << 5),
        ),
        (
            "an upper address change while MSI is enabled",
            CapRegister::MsiAddressHi,
            1,
        ),
        (
            "a Multiple Message Enable change while MSI is enabled",
            CapRegister::MsiControl,
            MSI_ENABLE,
        ),
    ] {
        cw(ctx, dev, reg, value)?;
        expect_eq(
            step,
            "the device's MSI state",
            before,
            device_state(ctx, dev)?,
        )?;
    }
    cw(ctx, dev, CapRegister::MsiControl, 0)?;
    expect_msi_enabled(ctx, dev, "MSI disable", false)
}

fn msix_control_forwarded(ctx: &mut Ctx<'_>) -> CheckResult {
    let d = ctx
        .vm(P)?
        .msix_device()
        .copied()
        .ok_or_else(|| Stop::NotTestable("no fixture device has MSI-X".into()))?;
    let dev = d.device_id;
    ctx.negotiate_all(P)?;
    for (step, value, enabled, masked) in [
        ("MSI-X Enable", MSIX_ENABLE, true, false),
        (
            "MSI-X Enable with Function Mask",
            MSIX_ENABLE | MSIX_FUNCTION_MASK,
            true,
            true,
        ),
        ("Function Mask alone", MSIX_FUNCTION_MASK, false, true),
        ("MSI-X disable", 0, false, false),
    ] {
        cw(ctx, dev, CapRegister::MsixControl, value)?;
        let s = device_state(ctx, dev)?;
        let step = format!("a guest write of {step} in NEGOTIATED");
        expect_eq(&step, "the device's MSI-X Enable", enabled, s.msix_enabled)?;
        expect_eq(
            &step,
            "the device's Function Mask",
            masked,
            s.msix_function_mask,
        )?;
    }
    Ok(())
}

fn reset_presents_disabled(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.offered(P)?;
    let d = ctx
        .vm(P)?
        .devices
        .iter()
        .find(|d| d.msix_entries > 1 && (d.msi_vectors > 0 || !f.contains(Features::MSI)))
        .copied()
        .ok_or_else(|| Stop::NotTestable("no fixture device has MSI-X".into()))?;
    let dev = d.device_id;
    let last = d.msix_entries - 1;
    // LEGACY: the guest programs emulated MSI-X entries (MSI-X stays disabled).
    for index in [0, last] {
        let entry = |offset| CapRegister::MsixEntry { index, offset };
        cw(ctx, dev, entry(0), 0xfee0_1000)?;
        cw(ctx, dev, entry(8), 0x41)?;
        cw(ctx, dev, entry(12), 0)?;
        expect_eq(
            "an emulated MSI-X entry in LEGACY",
            "data read back",
            0x41,
            cr(ctx, dev, entry(8))?,
        )?;
    }
    ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    if f.contains(Features::MSI) && d.msi_vectors > 0 {
        let a = ctx.allocate_msi(P, dev, 0)?;
        let m = ctx.activate(P, a.handle, 0, apic, VECTOR)?;
        write_msi_message(
            ctx,
            dev,
            m.address_lo.get(),
            m.address_hi.get(),
            m.data.get(),
        )?;
        cw(ctx, dev, CapRegister::MsiControl, MSI_ENABLE)?;
        expect_msi_enabled(ctx, dev, "MSI enable with the issued message", true)?;
    }
    cw(ctx, dev, CapRegister::MsixControl, MSIX_ENABLE)?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    let step = "after RESET";
    let c = cr(ctx, dev, CapRegister::MsiControl);
    if d.msi_vectors > 0 {
        expect_eq(step, "MSI Enable read by the guest", 0, c? & MSI_ENABLE)?;
    }
    expect_eq(
        step,
        "MSI-X Enable read by the guest",
        0,
        cr(ctx, dev, CapRegister::MsixControl)? & MSIX_ENABLE,
    )?;
    for index in [0, 1, last] {
        let entry = |offset| CapRegister::MsixEntry { index, offset };
        let read = (
            cr(ctx, dev, entry(0))?,
            cr(ctx, dev, entry(4))?,
            cr(ctx, dev, entry(8))?,
            cr(ctx, dev, entry(12))? & 1,
        );
        expect_eq(
            step,
            &format!("MSI-X entry {index} (address, upper address, data, mask)"),
            (0, 0, 0, 1),
            read,
        )?;
    }
    Ok(())
}
