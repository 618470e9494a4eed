//! Common call rules (VIR-CALL-H-*): validation order, unknown codes, the legacy state, the
//! call-level gate, reserved fields, atomicity of failures, response buffers.

use vir_abi::call::CallCode;
use vir_abi::feature::Features;
use vir_abi::layout::StructDesc;
use vir_abi::status::Status;
use vir_abi::wire::{StorageKind, activate_flags};
use zerocopy::IntoBytes;

use super::{check_response_reserved, request_desc, reserved_bits, response_desc};
use crate::ctx::{
    Ctx, FILL, VECTOR, activate_request, affinity_request, allocate_request, deactivate_request,
    ensure, expect, expect_that, free_request, negotiate_request, sizes,
};
use crate::hut::{Buffer, Fault, Scope, VmRef};
use crate::outcome::{CheckResult, Expected, Stop};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-CALL-H-001"],
        "call_common_order",
        "a call failing several common steps returns the status of the first (unknown code, length, buffer, state, gate, reserved)",
        common_order
    ),
    check!(
        ["VIR-CALL-H-002"],
        "call_unknown_codes",
        "every code outside the version 1 set (all 65527, reserved and vendor ranges included) returns UNKNOWN_CALL",
        unknown_codes
    ),
    check!(
        ["VIR-CALL-H-003"],
        "call_legacy_not_negotiated",
        "RESET, ALLOCATE, ACTIVATE, SET_AFFINITY, DEACTIVATE, FREE, QUERY_QUOTA in LEGACY return NOT_NEGOTIATED; QUERY and NEGOTIATE work",
        legacy_not_negotiated
    ),
    check!(
        ["VIR-CALL-H-004"],
        "call_quota_query_gate",
        "QUERY_QUOTA without QUOTA_QUERY in the session returns FEATURE_NOT_NEGOTIATED; with it SUCCESS",
        quota_gate
    ),
    check!(
        ["VIR-CALL-H-005"],
        "call_reserved_fields",
        "every bit of every reserved request field (nested Target included) and every undefined flag returns INVALID_PARAMETER",
        reserved_fields
    ),
    check!(
        ["VIR-CALL-H-006"],
        "call_failure_changes_nothing",
        "host snapshots before and after failing calls of every kind (backend failures included) are equal",
        failure_changes_nothing
    ),
    check!(
        ["VIR-CALL-H-007"],
        "call_failure_writes_no_response",
        "no byte of the response buffer is written by a call that fails; successful calls write it",
        failure_writes_nothing
    ),
    check!(
        ["VIR-CALL-H-008"],
        "call_response_reserved_zero",
        "every reserved field of every response written is 0",
        response_reserved_zero
    ),
];

const P: VmRef = VmRef::Primary;

fn common_order(ctx: &mut Ctx<'_>) -> CheckResult {
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    // 1 before 2: a reserved-range code with wrong lengths.
    let s = ctx.call(P, CallCode(0x20), Buffer::new(req, 8), Buffer::new(resp, 8))?;
    expect("code 0x0020 with 8-byte buffers", Status::UNKNOWN_CALL, s)?;
    // 2 before 3: QUERY with an 8-byte request at a misaligned GPA.
    let s = ctx.call(
        P,
        CallCode::QUERY,
        Buffer::new(req + 4, 8),
        Buffer::new(resp, 40),
    )?;
    expect(
        "QUERY with an 8-byte request at a misaligned GPA",
        Status::BAD_LENGTH,
        s,
    )?;
    // 3 before 5: ALLOCATE in LEGACY with a misaligned request.
    let a = allocate_request(0, StorageKind::MSIX, 0, 0);
    ctx.write(P, req + 4, a.as_bytes())?;
    let s = ctx.call(
        P,
        CallCode::ALLOCATE,
        Buffer::new(req + 4, 16),
        Buffer::new(resp, 8),
    )?;
    expect(
        "ALLOCATE in LEGACY with a misaligned request",
        Status::BAD_BUFFER,
        s,
    )?;
    // 5 before 7: ALLOCATE in LEGACY with a reserved field set.
    let mut a = allocate_request(0, StorageKind::MSIX, 0, 0);
    a.reserved1.set(1);
    let x = ctx.exchange_call(P, CallCode::ALLOCATE, a.as_bytes())?;
    expect(
        "ALLOCATE in LEGACY with reserved1 set",
        Status::NOT_NEGOTIATED,
        x.status,
    )?;
    // 5 before 6: QUERY_QUOTA in LEGACY.
    let x = ctx.exchange_call(P, CallCode::QUERY_QUOTA, &[])?;
    expect("QUERY_QUOTA in LEGACY", Status::NOT_NEGOTIATED, x.status)?;
    // 6 before 8 for QUERY_QUOTA needs a session without QUOTA_QUERY.
    let offered = ctx.offered(P)?;
    ctx.negotiate(P, offered.difference(Features::QUOTA_QUERY))?;
    let x = ctx.exchange_call(P, CallCode::QUERY_QUOTA, &[])?;
    expect(
        "QUERY_QUOTA in a session without QUOTA_QUERY",
        Status::FEATURE_NOT_NEGOTIATED,
        x.status,
    )?;
    // 7 before 8: reserved field set with a call-specific fault too.
    let unassigned = ctx.vm(P)?.unassigned_device_id();
    let mut a = allocate_request(unassigned, StorageKind(0), 3, u32::MAX);
    a.reserved0.set(0x8000);
    let x = ctx.exchange_call(P, CallCode::ALLOCATE, a.as_bytes())?;
    expect(
        "ALLOCATE with reserved0 set, undefined kind and an unassigned device",
        Status::INVALID_PARAMETER,
        x.status,
    )?;
    let mut r = activate_request(0, 7, 0, u32::MAX, 0);
    r.target.reserved1.set(1);
    let x = ctx.exchange_call(P, CallCode::ACTIVATE, r.as_bytes())?;
    expect(
        "ACTIVATE of handle 0 with target.reserved1 set",
        Status::INVALID_PARAMETER,
        x.status,
    )?;
    let mut f = free_request(0);
    f.reserved0.set(1);
    let x = ctx.exchange_call(P, CallCode::FREE, f.as_bytes())?;
    expect(
        "FREE of handle 0 with reserved0 set",
        Status::INVALID_PARAMETER,
        x.status,
    )
}

fn unknown_codes(ctx: &mut Ctx<'_>) -> CheckResult {
    // Every code that is not a version 1 call, in LEGACY, with zero-length buffers.
    let mut first_bad = None;
    let mut bad = 0u32;
    for code in 0..=u16::MAX {
        let code = CallCode(code);
        if code.is_v1() {
            continue;
        }
        let s = ctx.call(P, code, Buffer::NONE, Buffer::NONE)?;
        if s != Status::UNKNOWN_CALL {
            bad += 1;
            first_bad.get_or_insert((code, s));
        }
    }
    if let Some((code, s)) = first_bad {
        return expect(
            format!(
                "call code {:#06x} in LEGACY ({bad} codes wrong in all)",
                code.0
            ),
            Status::UNKNOWN_CALL,
            s,
        );
    }
    // In NEGOTIATED, with buffers of plausible sizes, in every range.
    ctx.negotiate_all(P)?;
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    for code in [
        0x0000u16, 0x0004, 0x000f, 0x0016, 0x001f, 0x0020, 0x0040, 0x007f, 0x0080, 0x1234, 0x7fff,
        0x8000, 0x8001, 0xc000, 0xffff,
    ] {
        for (rq, rs) in [(0, 0), (16, 16), (16, 24), (64, 64)] {
            let rq_b = if rq == 0 {
                Buffer::NONE
            } else {
                Buffer::new(req, rq)
            };
            let rs_b = if rs == 0 {
                Buffer::NONE
            } else {
                Buffer::new(resp, rs)
            };
            let s = ctx.call(P, CallCode(code), rq_b, rs_b)?;
            expect(
                format!("call code {code:#06x} in NEGOTIATED with {rq}/{rs}-byte buffers"),
                Status::UNKNOWN_CALL,
                s,
            )?;
        }
    }
    // Positive: no version 1 call is unknown.
    for &code in CallCode::V1 {
        let (rq, rs) = sizes(code);
        let rq_b = if rq == 0 {
            Buffer::NONE
        } else {
            Buffer::new(req, rq)
        };
        let rs_b = if rs == 0 {
            Buffer::NONE
        } else {
            Buffer::new(resp, rs)
        };
        ctx.fill(P, req, 64, 0)?;
        let s = ctx.call(P, code, rq_b, rs_b)?;
        expect_that(
            format!("{code} with its exact sizes"),
            Expected::Not(Status::UNKNOWN_CALL),
            s,
        )?;
    }
    Ok(())
}

fn legacy_not_negotiated(ctx: &mut Ctx<'_>) -> CheckResult {
    let dev = ctx.vm(P)?.msix_device().map(|d| d.device_id).unwrap_or(0);
    let apic = ctx.apic(P, 0)?;
    let requests: [(CallCode, Vec<u8>); 7] = [
        (CallCode::RESET, vec![]),
        (
            CallCode::ALLOCATE,
            allocate_request(dev, StorageKind::MSIX, 0, 0)
                .as_bytes()
                .to_vec(),
        ),
        (
            CallCode::ACTIVATE,
            activate_request(1, 0, 0, apic, VECTOR).as_bytes().to_vec(),
        ),
        (
            CallCode::SET_AFFINITY,
            affinity_request(1, 0, apic, VECTOR).as_bytes().to_vec(),
        ),
        (
            CallCode::DEACTIVATE,
            deactivate_request(1, 0).as_bytes().to_vec(),
        ),
        (CallCode::FREE, free_request(1).as_bytes().to_vec()),
        (CallCode::QUERY_QUOTA, vec![]),
    ];
    for (code, req) in &requests {
        let x = ctx.exchange_call(P, *code, req)?;
        expect(
            format!("{code} in LEGACY"),
            Status::NOT_NEGOTIATED,
            x.status,
        )?;
    }
    // Positive: QUERY and NEGOTIATE are allowed in LEGACY.
    ctx.query(P)?;
    ctx.negotiate_all(P)?;
    // And after RESET the VM is back in LEGACY, where the gate applies again.
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    for (code, req) in &requests {
        let x = ctx.exchange_call(P, *code, req)?;
        expect(
            format!("{code} in LEGACY after RESET"),
            Status::NOT_NEGOTIATED,
            x.status,
        )?;
    }
    Ok(())
}

fn quota_gate(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = ctx.offered(P)?;
    ctx.negotiate(P, offered.difference(Features::QUOTA_QUERY))?;
    let x = ctx.exchange_call(P, CallCode::QUERY_QUOTA, &[])?;
    expect(
        "QUERY_QUOTA in a session without QUOTA_QUERY",
        Status::FEATURE_NOT_NEGOTIATED,
        x.status,
    )?;
    if !offered.contains(Features::QUOTA_QUERY) {
        return Ok(());
    }
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, Features::QUOTA_QUERY)?;
    let x = ctx.exchange_call(P, CallCode::QUERY_QUOTA, &[])?;
    expect(
        "QUERY_QUOTA in a session with QUOTA_QUERY",
        Status::SUCCESS,
        x.status,
    )
}

/// Send `base` with each reserved bit of `desc` set in turn (and each undefined bit of the
/// 16-bit flags field at `flags_at`, if any), expecting INVALID_PARAMETER.
fn each_reserved_bit(
    ctx: &mut Ctx<'_>,
    code: CallCode,
    desc: &StructDesc,
    base: &[u8],
    flags_at: Option<(usize, u16)>,
    situation: &str,
) -> CheckResult {
    for b in reserved_bits(desc) {
        let mut req = base.to_vec();
        if let Some(byte) = req.get_mut(b.byte) {
            *byte |= 1 << b.bit;
        }
        let x = ctx.exchange_call(P, code, &req)?;
        expect(
            format!(
                "{code} ({situation}) with {}.{} set (byte {} bit {})",
                desc.name, b.field, b.byte, b.bit
            ),
            Status::INVALID_PARAMETER,
            x.status,
        )?;
    }
    if let Some((at, defined)) = flags_at {
        for bit in 0..16u16 {
            let mask = 1u16 << bit;
            if defined & mask != 0 {
                continue;
            }
            let mut req = base.to_vec();
            if let Some(f) = req.get_mut(at..at + 2) {
                let v = u16::from_le_bytes([f[0], f[1]]) | mask;
                f.copy_from_slice(&v.to_le_bytes());
            }
            let x = ctx.exchange_call(P, code, &req)?;
            expect(
                format!("{code} ({situation}) with undefined flag bit {bit} set"),
                Status::INVALID_PARAMETER,
                x.status,
            )?;
        }
    }
    // Positive: the same request with every reserved bit clear is accepted.
    let x = ctx.exchange_call(P, code, base)?;
    expect(
        format!("{code} ({situation}) with every reserved field 0"),
        Status::SUCCESS,
        x.status,
    )
}

fn reserved_fields(ctx: &mut Ctx<'_>) -> CheckResult {
    let desc = |c| request_desc(c).ok_or_else(|| Stop::NotTestable(format!("{c} has no request")));
    // NEGOTIATE in LEGACY (the positive case commits the session).
    let offered = ctx.offered(P)?;
    let n = negotiate_request(vir_abi::VIR_VERSION_1, offered);
    each_reserved_bit(
        ctx,
        CallCode::NEGOTIATE,
        &desc(CallCode::NEGOTIATE)?,
        n.as_bytes(),
        None,
        "LEGACY",
    )?;
    // The helpers' session bookkeeping: the positive NEGOTIATE above committed `offered`.
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, offered)?;
    let apic0 = ctx.apic(P, 0)?;
    let apic1 = ctx.apic(P, 1).unwrap_or(apic0);
    // ALLOCATE of a fresh slot.
    let slot = ctx.next_slot(P)?;
    let a = allocate_request(slot.device_id, slot.kind, 0, slot.index);
    each_reserved_bit(
        ctx,
        CallCode::ALLOCATE,
        &desc(CallCode::ALLOCATE)?,
        a.as_bytes(),
        None,
        "free slot",
    )?;
    let allocated = ctx.allocate(P)?;
    // ACTIVATE of an ALLOCATED vector (flags field at offset 6, RESERVE defined).
    let r = activate_request(allocated.handle, 0, 0, apic0, VECTOR);
    each_reserved_bit(
        ctx,
        CallCode::ACTIVATE,
        &desc(CallCode::ACTIVATE)?,
        r.as_bytes(),
        Some((6, activate_flags::V1_DEFINED)),
        "ALLOCATED vector",
    )?;
    // SET_AFFINITY of the now ACTIVE vector to another vCPU.
    let r = affinity_request(allocated.handle, 0, apic1, VECTOR + 1);
    each_reserved_bit(
        ctx,
        CallCode::SET_AFFINITY,
        &desc(CallCode::SET_AFFINITY)?,
        r.as_bytes(),
        None,
        "ACTIVE vector",
    )?;
    // DEACTIVATE of the ACTIVE vector.
    let r = deactivate_request(allocated.handle, 0);
    each_reserved_bit(
        ctx,
        CallCode::DEACTIVATE,
        &desc(CallCode::DEACTIVATE)?,
        r.as_bytes(),
        None,
        "ACTIVE vector",
    )?;
    // FREE of the allocation.
    let r = free_request(allocated.handle);
    each_reserved_bit(
        ctx,
        CallCode::FREE,
        &desc(CallCode::FREE)?,
        r.as_bytes(),
        None,
        "live allocation",
    )
}

/// Make a call that must fail with `expected` and prove that the host state did not change.
fn failing(
    ctx: &mut Ctx<'_>,
    step: &str,
    code: CallCode,
    request: &[u8],
    expected: Status,
) -> CheckResult {
    let before = ctx.snapshot(Scope::Host)?;
    let x = ctx.exchange_call(P, code, request)?;
    expect(step, expected, x.status)?;
    ctx.unchanged(step, &before, Scope::Host)
}

fn failure_changes_nothing(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.snapshot(Scope::Host)?;
    let req = ctx.page(P, 0)?;
    // Common steps.
    let before = ctx.snapshot(Scope::Host)?;
    let s = ctx.call(P, CallCode(0x8000), Buffer::NONE, Buffer::NONE)?;
    expect("vendor code 0x8000", Status::UNKNOWN_CALL, s)?;
    let s = ctx.call(P, CallCode::NEGOTIATE, Buffer::new(req, 8), Buffer::NONE)?;
    expect("NEGOTIATE with an 8-byte request", Status::BAD_LENGTH, s)?;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(req + 4, 16),
        Buffer::new(req + 0x800, 16),
    )?;
    expect("NEGOTIATE with a misaligned request", Status::BAD_BUFFER, s)?;
    ctx.unchanged("calls failing the common steps", &before, Scope::Host)?;
    let offered = ctx.offered(P)?;
    let mut n = negotiate_request(vir_abi::VIR_VERSION_1, offered);
    n.reserved1.set(1);
    failing(
        ctx,
        "NEGOTIATE with reserved1 set",
        CallCode::NEGOTIATE,
        n.as_bytes(),
        Status::INVALID_PARAMETER,
    )?;
    let n = negotiate_request(0xffff, offered);
    failing(
        ctx,
        "NEGOTIATE version 0xffff",
        CallCode::NEGOTIATE,
        n.as_bytes(),
        Status::UNSUPPORTED_VERSION,
    )?;
    let n = negotiate_request(vir_abi::VIR_VERSION_1, Features(1 << 63));
    failing(
        ctx,
        "NEGOTIATE with feature bit 63",
        CallCode::NEGOTIATE,
        n.as_bytes(),
        Status::UNSUPPORTED_FEATURE,
    )?;
    failing(
        ctx,
        "RESET in LEGACY",
        CallCode::RESET,
        &[],
        Status::NOT_NEGOTIATED,
    )?;
    ctx.negotiate(P, offered)?;
    // Some state to protect: an ACTIVE, an ALLOCATED vector.
    let (active, _) = ctx.allocate_active(P)?;
    let idle = ctx.allocate(P)?;
    let apic = ctx.apic(P, 0)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    let dev = ctx.vm(P)?.devices.first().map(|d| d.device_id).unwrap_or(0);
    let unassigned = ctx.vm(P)?.unassigned_device_id();
    failing(
        ctx,
        "NEGOTIATE in NEGOTIATED",
        CallCode::NEGOTIATE,
        negotiate_request(1, offered).as_bytes(),
        Status::ALREADY_NEGOTIATED,
    )?;
    failing(
        ctx,
        "ALLOCATE of an undefined kind",
        CallCode::ALLOCATE,
        allocate_request(dev, StorageKind(9), 0, 0).as_bytes(),
        Status::INVALID_PARAMETER,
    )?;
    failing(
        ctx,
        "ALLOCATE on an unassigned device",
        CallCode::ALLOCATE,
        allocate_request(unassigned, StorageKind::MSIX, 0, 0).as_bytes(),
        Status::NOT_YOUR_DEVICE,
    )?;
    if let Some(d) = ctx.vm(P)?.msix_device().copied() {
        failing(
            ctx,
            "ALLOCATE of an MSI-X index past the table",
            CallCode::ALLOCATE,
            allocate_request(d.device_id, StorageKind::MSIX, 0, d.msix_entries).as_bytes(),
            Status::INVALID_INDEX,
        )?;
    }
    failing(
        ctx,
        "ACTIVATE of an unknown handle",
        CallCode::ACTIVATE,
        activate_request(idle.handle ^ 0x5a5a_0000, 0, 0, apic, VECTOR).as_bytes(),
        Status::INVALID_HANDLE,
    )?;
    failing(
        ctx,
        "ACTIVATE of sub-handle 1 of a single-vector allocation",
        CallCode::ACTIVATE,
        activate_request(idle.handle, 1, 0, apic, VECTOR).as_bytes(),
        Status::INVALID_SUBHANDLE,
    )?;
    failing(
        ctx,
        "ACTIVATE of an ACTIVE vector",
        CallCode::ACTIVATE,
        activate_request(active.handle, 0, 0, apic, VECTOR).as_bytes(),
        Status::INVALID_STATE,
    )?;
    failing(
        ctx,
        "ACTIVATE to an APIC id of no vCPU",
        CallCode::ACTIVATE,
        activate_request(idle.handle, 0, 0, foreign, VECTOR).as_bytes(),
        Status::INVALID_TARGET,
    )?;
    failing(
        ctx,
        "ACTIVATE to vector 0x0f",
        CallCode::ACTIVATE,
        activate_request(idle.handle, 0, 0, apic, 0x0f).as_bytes(),
        Status::INVALID_TARGET,
    )?;
    failing(
        ctx,
        "SET_AFFINITY of an ALLOCATED vector",
        CallCode::SET_AFFINITY,
        affinity_request(idle.handle, 0, apic, VECTOR).as_bytes(),
        Status::INVALID_STATE,
    )?;
    failing(
        ctx,
        "SET_AFFINITY to an APIC id of no vCPU",
        CallCode::SET_AFFINITY,
        affinity_request(active.handle, 0, foreign, VECTOR).as_bytes(),
        Status::INVALID_TARGET,
    )?;
    failing(
        ctx,
        "DEACTIVATE of an ALLOCATED vector",
        CallCode::DEACTIVATE,
        deactivate_request(idle.handle, 0).as_bytes(),
        Status::INVALID_STATE,
    )?;
    failing(
        ctx,
        "FREE of an unknown handle",
        CallCode::FREE,
        free_request(idle.handle ^ 0x5a5a_0000).as_bytes(),
        Status::INVALID_HANDLE,
    )?;
    // Physical-side failures (if the harness can inject them).
    let apic1 = ctx.apic(P, 1).unwrap_or(apic);
    for (fault, code, request) in [
        (
            Fault::RouteAdd,
            CallCode::ACTIVATE,
            activate_request(idle.handle, 0, 0, apic, VECTOR)
                .as_bytes()
                .to_vec(),
        ),
        (
            Fault::IrqStart,
            CallCode::ACTIVATE,
            activate_request(idle.handle, 0, 0, apic, VECTOR)
                .as_bytes()
                .to_vec(),
        ),
        (
            Fault::IrqStartNoVector,
            CallCode::ACTIVATE,
            activate_request(idle.handle, 0, 0, apic, VECTOR)
                .as_bytes()
                .to_vec(),
        ),
        (
            Fault::RouteUpdate,
            CallCode::SET_AFFINITY,
            affinity_request(active.handle, 0, apic1, VECTOR + 1)
                .as_bytes()
                .to_vec(),
        ),
    ] {
        match ctx.host().inject_failure(fault) {
            Ok(()) => {}
            Err(crate::hut::HarnessError::Unsupported(_)) => break,
            Err(e) => return Err(crate::outcome::harness("failure injection", e)),
        }
        failing(
            ctx,
            &format!("{code} with an injected {fault:?} failure"),
            code,
            &request,
            fault.status(),
        )?;
    }
    Ok(())
}

fn failure_writes_nothing(ctx: &mut Ctx<'_>) -> CheckResult {
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let untouched = |ctx: &mut Ctx<'_>, step: &str, len: usize| -> CheckResult {
        let after = ctx.read(P, resp, len)?;
        ensure(
            after.iter().all(|&b| b == FILL),
            step,
            "response buffer",
            "untouched",
            format!("written ({:02x?})", after),
        )
    };
    // Unknown code with a response buffer.
    ctx.fill(P, resp, 64, FILL)?;
    let s = ctx.call(P, CallCode(0x21), Buffer::NONE, Buffer::new(resp, 64))?;
    expect(
        "code 0x0021 with a 64-byte response buffer",
        Status::UNKNOWN_CALL,
        s,
    )?;
    untouched(ctx, "code 0x0021 with a 64-byte response buffer", 64)?;
    // QUERY failing the common steps.
    ctx.fill(P, resp, 40, FILL)?;
    let s = ctx.call(
        P,
        CallCode::QUERY,
        Buffer::new(req, 8),
        Buffer::new(resp, 40),
    )?;
    expect("QUERY with an 8-byte request", Status::BAD_LENGTH, s)?;
    untouched(ctx, "QUERY with an 8-byte request", 40)?;
    ctx.fill(P, resp, 40, FILL)?;
    let s = ctx.call(
        P,
        CallCode::QUERY,
        Buffer::new(req, 0),
        Buffer::new(resp, 40),
    )?;
    expect(
        "QUERY with a zero-length request at a non-zero GPA",
        Status::BAD_BUFFER,
        s,
    )?;
    untouched(
        ctx,
        "QUERY with a zero-length request at a non-zero GPA",
        40,
    )?;
    // QUERY_QUOTA in LEGACY.
    let x = ctx.exchange_call(P, CallCode::QUERY_QUOTA, &[])?;
    expect("QUERY_QUOTA in LEGACY", Status::NOT_NEGOTIATED, x.status)?;
    ensure(
        !x.response_written(),
        "QUERY_QUOTA in LEGACY",
        "response buffer",
        "untouched",
        "written",
    )?;
    // NEGOTIATE failures.
    let offered = ctx.offered(P)?;
    for (step, n, status) in [
        (
            "NEGOTIATE version 0",
            negotiate_request(0, offered),
            Status::UNSUPPORTED_VERSION,
        ),
        (
            "NEGOTIATE with feature bit 40",
            negotiate_request(1, Features(1 << 40)),
            Status::UNSUPPORTED_FEATURE,
        ),
    ] {
        let x = ctx.exchange_call(P, CallCode::NEGOTIATE, n.as_bytes())?;
        expect(step, status, x.status)?;
        ensure(
            !x.response_written(),
            step,
            "response buffer",
            "untouched",
            format!("{:02x?}", x.response),
        )?;
    }
    // Positive: a successful NEGOTIATE writes its response.
    let x = ctx.exchange_call(
        P,
        CallCode::NEGOTIATE,
        negotiate_request(1, offered).as_bytes(),
    )?;
    expect("NEGOTIATE", Status::SUCCESS, x.status)?;
    ensure(
        x.response_written(),
        "NEGOTIATE",
        "response buffer",
        "written",
        "untouched",
    )?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, offered.difference(Features::QUOTA_QUERY))?;
    let x = ctx.exchange_call(
        P,
        CallCode::NEGOTIATE,
        negotiate_request(1, offered).as_bytes(),
    )?;
    expect(
        "NEGOTIATE in NEGOTIATED",
        Status::ALREADY_NEGOTIATED,
        x.status,
    )?;
    ensure(
        !x.response_written(),
        "NEGOTIATE in NEGOTIATED",
        "response buffer",
        "untouched",
        format!("{:02x?}", x.response),
    )?;
    let x = ctx.exchange_call(P, CallCode::QUERY_QUOTA, &[])?;
    expect(
        "QUERY_QUOTA without QUOTA_QUERY",
        Status::FEATURE_NOT_NEGOTIATED,
        x.status,
    )?;
    ensure(
        !x.response_written(),
        "QUERY_QUOTA without QUOTA_QUERY",
        "response buffer",
        "untouched",
        format!("{:02x?}", x.response),
    )?;
    // ALLOCATE failures.
    let unassigned = ctx.vm(P)?.unassigned_device_id();
    let x = ctx.exchange_call(
        P,
        CallCode::ALLOCATE,
        allocate_request(unassigned, StorageKind::MSIX, 0, 0).as_bytes(),
    )?;
    expect(
        "ALLOCATE on an unassigned device",
        Status::NOT_YOUR_DEVICE,
        x.status,
    )?;
    ensure(
        !x.response_written(),
        "ALLOCATE on an unassigned device",
        "response buffer",
        "untouched",
        format!("{:02x?}", x.response),
    )?;
    let slot = ctx.next_slot(P)?;
    let a = ctx.allocate_slot(P, slot)?;
    let x = ctx.exchange_call(
        P,
        CallCode::ALLOCATE,
        allocate_request(slot.device_id, slot.kind, 0, slot.index).as_bytes(),
    )?;
    expect("ALLOCATE of a slot in use", Status::INDEX_IN_USE, x.status)?;
    ensure(
        !x.response_written(),
        "ALLOCATE of a slot in use",
        "response buffer",
        "untouched",
        format!("{:02x?}", x.response),
    )?;
    // ACTIVATE failures.
    let apic = ctx.apic(P, 0)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    for (step, r, status) in [
        (
            "ACTIVATE of an unknown handle",
            activate_request(a.handle ^ 0x00ff_0000, 0, 0, apic, VECTOR),
            Status::INVALID_HANDLE,
        ),
        (
            "ACTIVATE to an APIC id of no vCPU",
            activate_request(a.handle, 0, 0, foreign, VECTOR),
            Status::INVALID_TARGET,
        ),
        (
            "ACTIVATE with undefined flag bit 15",
            activate_request(a.handle, 0, 0x8000, apic, VECTOR),
            Status::INVALID_PARAMETER,
        ),
    ] {
        let x = ctx.exchange_call(P, CallCode::ACTIVATE, r.as_bytes())?;
        expect(step, status, x.status)?;
        ensure(
            !x.response_written(),
            step,
            "response buffer",
            "untouched",
            format!("{:02x?}", x.response),
        )?;
    }
    if ctx.host().inject_failure(Fault::IrqStart).is_ok() {
        let step = "ACTIVATE with an injected IrqStart failure";
        let x = ctx.exchange_call(
            P,
            CallCode::ACTIVATE,
            activate_request(a.handle, 0, 0, apic, VECTOR).as_bytes(),
        )?;
        expect(step, Fault::IrqStart.status(), x.status)?;
        ensure(
            !x.response_written(),
            step,
            "response buffer",
            "untouched",
            format!("{:02x?}", x.response),
        )?;
    }
    // Positive: a successful ACTIVATE writes the response.
    let x = ctx.exchange_call(
        P,
        CallCode::ACTIVATE,
        activate_request(a.handle, 0, 0, apic, VECTOR).as_bytes(),
    )?;
    expect("ACTIVATE", Status::SUCCESS, x.status)?;
    ensure(
        x.response_written(),
        "ACTIVATE",
        "response buffer",
        "written",
        "untouched",
    )
}

fn response_reserved_zero(ctx: &mut Ctx<'_>) -> CheckResult {
    let check = |ctx: &mut Ctx<'_>, step: &str, code: CallCode, req: &[u8]| -> CheckResult {
        let x = ctx.exchange_call(P, code, req)?;
        expect(step, Status::SUCCESS, x.status)?;
        let desc = response_desc(code)
            .ok_or_else(|| Stop::NotTestable(format!("{code} has no response")))?;
        check_response_reserved(step, &desc, &x.response)
    };
    check(ctx, "QUERY in LEGACY", CallCode::QUERY, &[])?;
    let offered = ctx.offered(P)?;
    check(
        ctx,
        "NEGOTIATE",
        CallCode::NEGOTIATE,
        negotiate_request(1, offered).as_bytes(),
    )?;
    // Keep the helpers' session bookkeeping in step with the NEGOTIATE just made.
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, offered)?;
    check(ctx, "QUERY in NEGOTIATED", CallCode::QUERY, &[])?;
    let slot = ctx.next_slot(P)?;
    check(
        ctx,
        "ALLOCATE",
        CallCode::ALLOCATE,
        allocate_request(slot.device_id, slot.kind, 0, slot.index).as_bytes(),
    )?;
    let a = ctx.allocate(P)?;
    if offered.contains(Features::RESERVATION) {
        check(
            ctx,
            "ACTIVATE with RESERVE",
            CallCode::ACTIVATE,
            activate_request(a.handle, 0, activate_flags::RESERVE, 0, 0).as_bytes(),
        )?;
    }
    let apic = ctx.apic(P, 0)?;
    check(
        ctx,
        "ACTIVATE",
        CallCode::ACTIVATE,
        activate_request(a.handle, 0, 0, apic, VECTOR).as_bytes(),
    )?;
    if offered.contains(Features::QUOTA_QUERY) {
        // QuotaResponse has no reserved field; the call must still succeed.
        check(ctx, "QUERY_QUOTA", CallCode::QUERY_QUOTA, &[])?;
    }
    Ok(())
}
