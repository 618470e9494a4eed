//! ACTIVATE (VIR-ACT-H-*): validation order, reservation, the physical flow, unwinding, the
//! message.

use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{ActivateResponse, activate_flags};

use crate::ctx::{Ctx, VECTOR, activate_request, ensure, expect, expect_eq};
use crate::hut::{Fault, PhysEvent, Scope, VmRef};
use crate::outcome::{CheckResult, Stop, harness};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-ACT-H-001"],
        "act_invalid_handle",
        "handle 0, never-issued, freed and foreign-generation handles return INVALID_HANDLE, before sub-handle, state and target",
        invalid_handle
    ),
    check!(
        ["VIR-ACT-H-002"],
        "act_invalid_subhandle",
        "a sub-handle at or past count returns INVALID_SUBHANDLE, before the gate, state and target; the last one works",
        invalid_subhandle
    ),
    check!(
        ["VIR-ACT-H-003"],
        "act_reserve_needs_reservation",
        "RESERVE in a session without RESERVATION returns FEATURE_NOT_NEGOTIATED, even for an ACTIVE vector",
        reserve_gate
    ),
    check!(
        ["VIR-ACT-H-004"],
        "act_state_rules",
        "RESERVE only from ALLOCATED, plain only from ALLOCATED or RESERVED; otherwise INVALID_STATE, before the target check",
        state_rules
    ),
    check!(
        ["VIR-ACT-H-005", "VIR-SEC-H-003"],
        "act_invalid_target",
        "an APIC id of no vCPU of the VM (another VM's included) or a vector below 0x10 returns INVALID_TARGET; 0x10, 0xff and every vCPU work",
        invalid_target
    ),
    check!(
        ["VIR-ACT-H-010"],
        "act_reserve_ignores_target",
        "RESERVE ignores target.apic_id and target.vector but still checks the target's reserved fields",
        reserve_ignores_target
    ),
    check!(
        ["VIR-ACT-H-006", "VIR-SEC-H-008"],
        "act_vector_quota",
        "the VM activates exactly vector_quota vectors; one more returns VECTORS_EXHAUSTED (after INVALID_TARGET); RESERVE takes none",
        vector_quota
    ),
    check!(
        ["VIR-ACT-H-006"],
        "act_physical_flow_order",
        "a plain activation installs the route, then starts the host IRQ, then writes the IRTE present (physical-side log)",
        physical_flow
    ),
    check!(
        ["VIR-ACT-H-006"],
        "act_backend_failure_status",
        "an injected route, IRQ or vector failure returns BACKEND_FAILURE or VECTORS_EXHAUSTED and the vector stays activatable",
        backend_failure_status
    ),
    check!(
        ["VIR-ACT-H-007", "VIR-CALL-H-006"],
        "act_failure_unwinds",
        "after an injected failure at each physical step the host state equals the state before the call",
        failure_unwinds
    ),
    check!(
        ["VIR-ACT-H-011"],
        "act_reserve_blocked_entry",
        "RESERVE programs the IRTE not present with FPD=1, takes no vector, installs no route and starts no IRQ",
        reserve_blocked_entry
    ),
    check!(
        ["VIR-ACT-H-008"],
        "act_returns_message",
        "RESERVE and plain activations return a message in the 0xFEE window with the QUERY format",
        returns_message
    ),
    check!(
        ["VIR-ACT-H-009", "VIR-AFF-H-005"],
        "act_message_stable",
        "the message is the same for every sub-handle and across RESERVE->activate, deactivate->activate and affinity changes",
        message_stable
    ),
];

const P: VmRef = VmRef::Primary;

fn status_of<T>(r: Result<T, Status>) -> Status {
    r.err().unwrap_or(Status::SUCCESS)
}

fn act(
    ctx: &mut Ctx<'_>,
    h: u32,
    sub: u16,
    flags: u16,
    apic: u32,
    vector: u8,
) -> Result<Status, Stop> {
    Ok(status_of(ctx.try_activate(
        P,
        &activate_request(h, sub, flags, apic, vector),
    )?))
}

fn invalid_handle(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let a = ctx.allocate(P)?;
    let freed = ctx.allocate(P)?;
    expect("FREE", Status::SUCCESS, ctx.free(P, freed.handle)?)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    for h in [
        0u32,
        u32::MAX,
        a.handle ^ 0x8000_0000,
        a.handle.wrapping_add(0x1_0000),
        freed.handle,
    ] {
        if h == a.handle {
            continue;
        }
        expect(
            format!("ACTIVATE of handle {h:#x}"),
            Status::INVALID_HANDLE,
            act(ctx, h, 0, 0, apic, VECTOR)?,
        )?;
        expect(
            format!("ACTIVATE of handle {h:#x} with sub-handle 9 to an APIC id of no vCPU"),
            Status::INVALID_HANDLE,
            act(ctx, h, 9, 0, foreign, 0)?,
        )?;
    }
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    Ok(())
}

fn invalid_subhandle(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    let a = ctx.allocate(P)?;
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    for sub in [1u16, 2, 0x8000, 0xffff] {
        expect(
            format!("ACTIVATE of sub-handle {sub} of a single-vector allocation"),
            Status::INVALID_SUBHANDLE,
            act(ctx, a.handle, sub, 0, apic, VECTOR)?,
        )?;
        expect(
            format!("ACTIVATE RESERVE of sub-handle {sub} to an APIC id of no vCPU"),
            Status::INVALID_SUBHANDLE,
            act(ctx, a.handle, sub, activate_flags::RESERVE, foreign, 0)?,
        )?;
    }
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 4)
            .copied()
    {
        let m = ctx.allocate_msi(P, d.device_id, 2)?;
        expect(
            "ACTIVATE of sub-handle 4 of a 4-vector block",
            Status::INVALID_SUBHANDLE,
            act(ctx, m.handle, 4, 0, apic, VECTOR)?,
        )?;
        ctx.activate(P, m.handle, 3, apic, VECTOR)?;
    }
    Ok(())
}

fn reserve_gate(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = ctx.offered(P)?;
    ctx.negotiate(P, offered.difference(Features::RESERVATION))?;
    let apic = ctx.apic(P, 0)?;
    let a = ctx.allocate(P)?;
    expect(
        "ACTIVATE RESERVE of an ALLOCATED vector without RESERVATION",
        Status::FEATURE_NOT_NEGOTIATED,
        act(ctx, a.handle, 0, activate_flags::RESERVE, 0, 0)?,
    )?;
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    expect(
        "ACTIVATE RESERVE of an ACTIVE vector without RESERVATION",
        Status::FEATURE_NOT_NEGOTIATED,
        act(ctx, a.handle, 0, activate_flags::RESERVE, 0, 0)?,
    )?;
    if !offered.contains(Features::RESERVATION) {
        return Ok(());
    }
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, offered)?;
    let a = ctx.allocate(P)?;
    ctx.reserve(P, a.handle, 0)?;
    Ok(())
}

fn state_rules(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    let a = ctx.allocate(P)?;
    if f.contains(Features::RESERVATION) {
        ctx.reserve(P, a.handle, 0)?;
        expect(
            "ACTIVATE RESERVE of a RESERVED vector",
            Status::INVALID_STATE,
            act(ctx, a.handle, 0, activate_flags::RESERVE, 0, 0)?,
        )?;
        // RESERVED -> ACTIVE.
        ctx.activate(P, a.handle, 0, apic, VECTOR)?;
        expect(
            "ACTIVATE RESERVE of an ACTIVE vector",
            Status::INVALID_STATE,
            act(ctx, a.handle, 0, activate_flags::RESERVE, 0, 0)?,
        )?;
    } else {
        ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    }
    expect(
        "ACTIVATE of an ACTIVE vector",
        Status::INVALID_STATE,
        act(ctx, a.handle, 0, 0, apic, VECTOR)?,
    )?;
    expect(
        "ACTIVATE of an ACTIVE vector to an APIC id of no vCPU",
        Status::INVALID_STATE,
        act(ctx, a.handle, 0, 0, foreign, 0)?,
    )?;
    // Deactivated (ALLOCATED again) -> ACTIVE, and -> RESERVED.
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    if f.contains(Features::RESERVATION) {
        ctx.reserve(P, a.handle, 0)?;
    }
    Ok(())
}

fn invalid_target(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let fx = ctx.fixture().clone();
    let mine: Vec<u32> = fx.primary.vcpus.iter().map(|v| v.apic_id).collect();
    let mut foreign = vec![fx.primary.foreign_apic_id(), u32::MAX, 0xff];
    if let Some(s) = &fx.secondary {
        foreign.extend(s.vcpus.iter().map(|v| v.apic_id));
    }
    foreign.retain(|a| !mine.contains(a));
    let a = ctx.allocate(P)?;
    for apic in foreign {
        expect(
            format!("ACTIVATE to APIC id {apic:#x} (no vCPU of the VM)"),
            Status::INVALID_TARGET,
            act(ctx, a.handle, 0, 0, apic, VECTOR)?,
        )?;
    }
    for vector in [0u8, 1, 2, 0x0f] {
        expect(
            format!("ACTIVATE to vector {vector:#x}"),
            Status::INVALID_TARGET,
            act(ctx, a.handle, 0, 0, mine[0], vector)?,
        )?;
    }
    // Positive: the vector bounds, and every vCPU.
    for (i, apic) in mine.iter().enumerate() {
        let vector = if i % 2 == 0 { 0x10 } else { 0xff };
        expect(
            format!("ACTIVATE to APIC id {apic} vector {vector:#x}"),
            Status::SUCCESS,
            act(ctx, a.handle, 0, 0, *apic, vector)?,
        )?;
        expect(
            "DEACTIVATE",
            Status::SUCCESS,
            ctx.deactivate(P, a.handle, 0)?,
        )?;
    }
    Ok(())
}

fn reserve_ignores_target(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.require_offered(P, Features::RESERVATION)?;
    ctx.negotiate_all(P)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    let a = ctx.allocate(P)?;
    let mut r = activate_request(a.handle, 0, activate_flags::RESERVE, foreign, 0);
    r.target.reserved0 = 1;
    let x = status_of(ctx.try_activate(P, &r)?);
    expect(
        "ACTIVATE RESERVE with target.reserved0 set",
        Status::INVALID_PARAMETER,
        x,
    )?;
    for (apic, vector) in [(foreign, 0u8), (u32::MAX, 0x05)] {
        let b = ctx.allocate(P)?;
        expect(
            format!("ACTIVATE RESERVE to APIC id {apic:#x} vector {vector:#x}"),
            Status::SUCCESS,
            act(ctx, b.handle, 0, activate_flags::RESERVE, apic, vector)?,
        )?;
    }
    expect(
        format!("ACTIVATE RESERVE to APIC id {foreign:#x} vector 0"),
        Status::SUCCESS,
        act(ctx, a.handle, 0, activate_flags::RESERVE, foreign, 0)?,
    )
}

fn vector_quota(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let q = ctx.query(P)?;
    let quota = q.vector_quota.get();
    let apic = ctx.apic(P, 0)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    let mut active = Vec::new();
    for i in 0..quota {
        let a = ctx.allocate(P)?;
        let s = act(
            ctx,
            a.handle,
            0,
            0,
            apic,
            VECTOR.wrapping_add(i as u8) | 0x20,
        )?;
        expect(
            format!("ACTIVATE number {} with vector_quota {quota}", i + 1),
            Status::SUCCESS,
            s,
        )?;
        active.push(a);
    }
    let extra = ctx.allocate(P)?;
    expect(
        format!("ACTIVATE number {} with vector_quota {quota}", quota + 1),
        Status::VECTORS_EXHAUSTED,
        act(ctx, extra.handle, 0, 0, apic, VECTOR)?,
    )?;
    expect(
        "ACTIVATE to an APIC id of no vCPU with the vector quota exhausted",
        Status::INVALID_TARGET,
        act(ctx, extra.handle, 0, 0, foreign, VECTOR)?,
    )?;
    if f.contains(Features::QUOTA_QUERY) {
        let qq = ctx.quota(P)?;
        expect_eq(
            "QUERY_QUOTA with every vector taken",
            "vectors_free",
            0,
            qq.vectors_free.get(),
        )?;
    }
    if f.contains(Features::RESERVATION) {
        ctx.reserve(P, extra.handle, 0)?;
    }
    let Some(first) = active.first().copied() else {
        return Ok(());
    };
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, first.handle, 0)?,
    )?;
    expect(
        "ACTIVATE after a DEACTIVATE returned a vector",
        Status::SUCCESS,
        act(ctx, extra.handle, 0, 0, apic, VECTOR)?,
    )
}

fn physical_log(ctx: &mut Ctx<'_>) -> Result<Vec<PhysEvent>, Stop> {
    ctx.host()
        .take_physical_log()
        .map_err(|e| harness("reading the physical-side log", e))
}

fn start_log(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.host()
        .start_physical_log()
        .map_err(|e| harness("starting the physical-side log", e))
}

fn physical_flow(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let a = ctx.allocate(P)?;
    start_log(ctx)?;
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    let log = physical_log(ctx)?;
    let index = ctx.irte(P, a.handle, 0)?.index;
    let route = log
        .iter()
        .position(|e| matches!(e, PhysEvent::RouteAdded(Some(VmRef::Primary))));
    let irq = log
        .iter()
        .position(|e| matches!(e, PhysEvent::IrqStarted(Some(VmRef::Primary))));
    let irte = log.iter().position(|e| {
        *e == PhysEvent::IrteWritten {
            index,
            present: true,
        }
    });
    let step = "plain ACTIVATE";
    ensure(
        route.is_some(),
        step,
        "virtual route installed",
        "yes",
        format!("{log:?}"),
    )?;
    ensure(
        irq.is_some(),
        step,
        "host IRQ started",
        "yes",
        format!("{log:?}"),
    )?;
    ensure(
        irte.is_some(),
        step,
        "IRTE written present",
        "yes",
        format!("{log:?}"),
    )?;
    ensure(
        route < irq && irq < irte,
        step,
        "order",
        "route, host IRQ, IRTE",
        format!("{log:?}"),
    )
}

fn backend_failure_status(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let a = ctx.allocate(P)?;
    let before = if f.contains(Features::QUOTA_QUERY) {
        Some(ctx.quota(P)?)
    } else {
        None
    };
    for fault in [Fault::RouteAdd, Fault::IrqStart, Fault::IrqStartNoVector] {
        ctx.host()
            .inject_failure(fault)
            .map_err(|e| harness("failure injection", e))?;
        let step = format!("ACTIVATE with an injected {fault:?} failure");
        expect(
            &step,
            fault.status(),
            act(ctx, a.handle, 0, 0, apic, VECTOR)?,
        )?;
        if let Some(b) = before {
            expect_eq(&step, "QUERY_QUOTA", b, ctx.quota(P)?)?;
        }
    }
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    Ok(())
}

fn failure_unwinds(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    ctx.snapshot(Scope::Host)?;
    let apic = ctx.apic(P, 0)?;
    let apic1 = ctx.apic(P, 1).unwrap_or(apic);
    // Some live state around: an ACTIVE vector on another vCPU.
    let (_, _) = ctx.allocate_active(P)?;
    let a = ctx.allocate(P)?;
    let b = ctx.allocate(P)?;
    if f.contains(Features::RESERVATION) {
        ctx.reserve(P, b.handle, 0)?;
    }
    for (handle, from) in [(a.handle, "ALLOCATED"), (b.handle, "RESERVED or ALLOCATED")] {
        for fault in [Fault::RouteAdd, Fault::IrqStart, Fault::IrqStartNoVector] {
            let before = ctx.snapshot(Scope::Host)?;
            ctx.host()
                .inject_failure(fault)
                .map_err(|e| harness("failure injection", e))?;
            let step = format!("ACTIVATE of a {from} vector with an injected {fault:?} failure");
            expect(
                &step,
                fault.status(),
                act(ctx, handle, 0, 0, apic1, VECTOR)?,
            )?;
            ctx.unchanged(&step, &before, Scope::Host)?;
        }
    }
    ctx.activate(P, a.handle, 0, apic1, VECTOR)?;
    Ok(())
}

fn reserve_blocked_entry(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    ctx.require_offered(P, Features::RESERVATION)?;
    let a = ctx.allocate(P)?;
    let before_quota = if f.contains(Features::QUOTA_QUERY) {
        Some(ctx.quota(P)?)
    } else {
        None
    };
    start_log(ctx)?;
    ctx.reserve(P, a.handle, 0)?;
    let log = physical_log(ctx)?;
    let step = "ACTIVATE RESERVE";
    let bad: Vec<&PhysEvent> = log
        .iter()
        .filter(|e| {
            matches!(
                e,
                PhysEvent::RouteAdded(_)
                    | PhysEvent::IrqStarted(_)
                    | PhysEvent::IrteWritten { present: true, .. }
            )
        })
        .collect();
    ensure(
        bad.is_empty(),
        step,
        "routes, host IRQs or present IRTEs",
        "none",
        format!("{bad:?}"),
    )?;
    let e = ctx.irte(P, a.handle, 0)?;
    ensure(e.raw & 1 == 0, step, "IRTE P", "0", "1")?;
    ensure(e.raw & 2 == 2, step, "IRTE FPD", "1", "0")?;
    if let Some(b) = before_quota {
        expect_eq(step, "QUERY_QUOTA", b, ctx.quota(P)?)?;
    }
    let d = ctx.delivery(P, a.handle, 0)?;
    ensure(d.is_none(), step, "delivery", "blocked", format!("{d:?}"))
}

fn check_message(step: &str, m: &ActivateResponse, format: u8) -> CheckResult {
    ensure(
        m.address_lo.get() & 0xfff0_0000 == 0xfee0_0000,
        step,
        "address_lo bits 31:20",
        "0xfee",
        format!("{:#x}", m.address_lo.get() >> 20),
    )?;
    expect_eq(step, "format", format, m.format)
}

fn returns_message(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let format = ctx.query(P)?.message_format;
    let apic = ctx.apic(P, 0)?;
    let a = ctx.allocate(P)?;
    if f.contains(Features::RESERVATION) {
        let m = ctx.reserve(P, a.handle, 0)?;
        check_message("ACTIVATE RESERVE", &m, format)?;
    }
    let m = ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    check_message("ACTIVATE", &m, format)
}

fn message_stable(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let apic0 = ctx.apic(P, 0)?;
    let apic1 = ctx.apic(P, 1).unwrap_or(apic0);
    let a = ctx.allocate(P)?;
    let mut seen = Vec::new();
    if f.contains(Features::RESERVATION) {
        seen.push(("RESERVE", ctx.reserve(P, a.handle, 0)?));
    }
    seen.push((
        "first plain activation",
        ctx.activate(P, a.handle, 0, apic0, VECTOR)?,
    ));
    expect(
        "SET_AFFINITY",
        Status::SUCCESS,
        ctx.set_affinity(P, a.handle, 0, apic1, VECTOR + 1)?,
    )?;
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    seen.push((
        "activation after SET_AFFINITY and DEACTIVATE",
        ctx.activate(P, a.handle, 0, apic0, VECTOR + 2)?,
    ));
    let first = seen[0].1;
    for (when, m) in &seen {
        expect_eq(
            format!("ACTIVATE ({when})"),
            "message (address_lo, address_hi, data)",
            (first.address_lo, first.address_hi, first.data),
            (m.address_lo, m.address_hi, m.data),
        )?;
    }
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 4)
            .copied()
    {
        let b = ctx.allocate_msi(P, d.device_id, 2)?;
        let m0 = ctx.activate(P, b.handle, 0, apic0, VECTOR)?;
        for sub in 1..4u16 {
            let m = ctx.activate(P, b.handle, sub, apic1, VECTOR + sub as u8)?;
            expect_eq(
                format!("ACTIVATE of MSI sub-handle {sub}"),
                "message (address_lo, address_hi, data)",
                (m0.address_lo, m0.address_hi, m0.data),
                (m.address_lo, m.address_hi, m.data),
            )?;
        }
    }
    Ok(())
}
