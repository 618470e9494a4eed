//! SET_AFFINITY, DEACTIVATE, FREE, QUERY_QUOTA and the interrupt state machine
//! (VIR-AFF-H-*, VIR-DEA-H-*, VIR-FRE-H-*, VIR-QUO-H-*, VIR-IRQ-H-*).

use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::activate_flags;

use super::{VecState, probe_state};
use crate::ctx::{Alloc, Ctx, VECTOR, activate_request, ensure, expect, expect_eq};
use crate::hut::{Delivery, Fault, PhysEvent, Scope, VmRef};
use crate::outcome::{CheckResult, Stop, harness};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-AFF-H-001"],
        "aff_invalid_handle",
        "SET_AFFINITY of handle 0, a never-issued or a freed handle returns INVALID_HANDLE, before sub-handle, state and target",
        aff_invalid_handle
    ),
    check!(
        ["VIR-AFF-H-006"],
        "aff_invalid_subhandle",
        "SET_AFFINITY of a sub-handle at or past count returns INVALID_SUBHANDLE, before state and target",
        aff_invalid_subhandle
    ),
    check!(
        ["VIR-AFF-H-002"],
        "aff_not_active",
        "SET_AFFINITY of an ALLOCATED, RESERVED or deactivated vector returns INVALID_STATE, before the target check",
        aff_not_active
    ),
    check!(
        ["VIR-AFF-H-003", "VIR-SEC-H-003"],
        "aff_invalid_target",
        "SET_AFFINITY to an APIC id of no vCPU of the VM or a vector below 0x10 returns INVALID_TARGET; every vCPU works",
        aff_invalid_target
    ),
    check!(
        ["VIR-AFF-H-007"],
        "aff_same_target_succeeds",
        "SET_AFFINITY to the target in force returns SUCCESS",
        aff_same_target
    ),
    check!(
        ["VIR-AFF-H-007"],
        "aff_same_target_changes_nothing",
        "SET_AFFINITY to the target in force leaves the host state unchanged (snapshot)",
        aff_same_target_unchanged
    ),
    check!(
        ["VIR-AFF-H-004"],
        "aff_failure_keeps_old_target",
        "after an injected route or IRQ-move failure the old target is in force and nothing changed",
        aff_failure_keeps_old
    ),
    check!(
        ["VIR-AFF-H-008", "VIR-IRQ-H-002"],
        "aff_retarget_in_one_store",
        "a retarget writes the vector's IRTE at most once, never not-present, and interrupts reach the new target on return",
        aff_one_store
    ),
    check!(
        ["VIR-AFF-H-005"],
        "aff_irte_index_unchanged",
        "affinity changes keep the vector's IRTE index, so the message stays valid",
        aff_index_unchanged
    ),
    check!(
        ["VIR-DEA-H-001"],
        "dea_order",
        "DEACTIVATE checks handle, then sub-handle, then state (ACTIVE or RESERVED)",
        dea_order
    ),
    check!(
        ["VIR-DEA-H-002"],
        "dea_returns_vector",
        "a DEACTIVATE returns the host vector to the VM's quota",
        dea_returns_vector
    ),
    check!(
        ["VIR-DEA-H-002", "VIR-SEC-H-002"],
        "dea_entry_not_present_first",
        "DEACTIVATE makes the IRTE not present before stopping the host IRQ and removing the route; delivery is blocked",
        dea_entry_first
    ),
    check!(
        ["VIR-DEA-H-003"],
        "dea_keeps_allocation",
        "after DEACTIVATE the vector is ALLOCATED, the slot and entries stay reserved and the message is unchanged",
        dea_keeps_allocation
    ),
    check!(
        ["VIR-FRE-H-001"],
        "fre_invalid_handle",
        "FREE of handle 0, a never-issued or an already freed handle returns INVALID_HANDLE",
        fre_invalid_handle
    ),
    check!(
        ["VIR-FRE-H-002"],
        "fre_releases_quota_and_slot",
        "FREE of an allocation with ACTIVE, RESERVED and ALLOCATED vectors returns its vectors, entries and slot",
        fre_releases
    ),
    check!(
        ["VIR-FRE-H-002", "VIR-SEC-H-002"],
        "fre_entries_not_present",
        "after FREE no entry of the allocation is present and nothing is delivered",
        fre_entries_not_present
    ),
    check!(
        ["VIR-FRE-H-003"],
        "fre_handle_stale",
        "after FREE every call naming the handle returns INVALID_HANDLE, also after the slot is allocated again",
        fre_handle_stale
    ),
    check!(
        ["VIR-QUO-H-001"],
        "quo_counts",
        "irtes_free and vectors_free follow every ALLOCATE, ACTIVATE, RESERVE, DEACTIVATE, FREE and RESET",
        quo_counts
    ),
    check!(
        ["VIR-QUO-H-002"],
        "quo_totals_match_query",
        "irtes_total and vectors_total equal QUERY's irte_quota and vector_quota",
        quo_totals
    ),
    check!(
        ["VIR-IRQ-H-001"],
        "irq_transition_table",
        "every row of the interrupt state table: status and next state (probed) for ALLOCATED, RESERVED and ACTIVE vectors",
        irq_table
    ),
    check!(
        ["VIR-IRQ-H-002", "VIR-SEC-H-003"],
        "irq_one_target",
        "an ACTIVE vector delivers to exactly its target in the VM; vectors in other states deliver nowhere",
        irq_one_target
    ),
];

const P: VmRef = VmRef::Primary;

fn status_of<T>(r: Result<T, Status>) -> Status {
    r.err().unwrap_or(Status::SUCCESS)
}

fn active(ctx: &mut Ctx<'_>, vcpu: usize, vector: u8) -> Result<Alloc, Stop> {
    let a = ctx.allocate(P)?;
    let apic = ctx.apic(P, vcpu)?;
    ctx.activate(P, a.handle, 0, apic, vector)?;
    Ok(a)
}

fn aff_invalid_handle(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    let a = active(ctx, 0, VECTOR)?;
    let freed = active(ctx, 0, VECTOR)?;
    expect("FREE", Status::SUCCESS, ctx.free(P, freed.handle)?)?;
    for h in [
        0u32,
        u32::MAX,
        a.handle.wrapping_add(0x1_0000),
        freed.handle,
    ] {
        expect(
            format!("SET_AFFINITY of handle {h:#x}"),
            Status::INVALID_HANDLE,
            ctx.set_affinity(P, h, 0, apic, VECTOR)?,
        )?;
        expect(
            format!("SET_AFFINITY of handle {h:#x}, sub-handle 5, bad target"),
            Status::INVALID_HANDLE,
            ctx.set_affinity(P, h, 5, foreign, 0)?,
        )?;
    }
    expect(
        "SET_AFFINITY of a live ACTIVE vector",
        Status::SUCCESS,
        ctx.set_affinity(P, a.handle, 0, apic, VECTOR + 1)?,
    )
}

fn aff_invalid_subhandle(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    let a = active(ctx, 0, VECTOR)?;
    for sub in [1u16, 0xffff] {
        expect(
            format!("SET_AFFINITY of sub-handle {sub} of a single-vector allocation"),
            Status::INVALID_SUBHANDLE,
            ctx.set_affinity(P, a.handle, sub, apic, VECTOR)?,
        )?;
        expect(
            format!("SET_AFFINITY of sub-handle {sub} to a bad target"),
            Status::INVALID_SUBHANDLE,
            ctx.set_affinity(P, a.handle, sub, foreign, 0)?,
        )?;
    }
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 2)
            .copied()
    {
        let m = ctx.allocate_msi(P, d.device_id, 1)?;
        ctx.activate(P, m.handle, 1, apic, VECTOR)?;
        expect(
            "SET_AFFINITY of sub-handle 2 of a 2-vector block",
            Status::INVALID_SUBHANDLE,
            ctx.set_affinity(P, m.handle, 2, apic, VECTOR)?,
        )?;
        expect(
            "SET_AFFINITY of sub-handle 1 of a 2-vector block",
            Status::SUCCESS,
            ctx.set_affinity(P, m.handle, 1, apic, VECTOR + 1)?,
        )?;
    }
    Ok(())
}

fn aff_not_active(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let foreign = ctx.vm(P)?.foreign_apic_id();
    let allocated = ctx.allocate(P)?;
    let mut cases = vec![("ALLOCATED", allocated.handle)];
    if f.contains(Features::RESERVATION) {
        let r = ctx.allocate(P)?;
        ctx.reserve(P, r.handle, 0)?;
        cases.push(("RESERVED", r.handle));
    }
    let d = active(ctx, 0, VECTOR)?;
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, d.handle, 0)?,
    )?;
    cases.push(("deactivated", d.handle));
    for (state, h) in cases {
        expect(
            format!("SET_AFFINITY of a {state} vector"),
            Status::INVALID_STATE,
            ctx.set_affinity(P, h, 0, apic, VECTOR)?,
        )?;
        expect(
            format!("SET_AFFINITY of a {state} vector to a bad target"),
            Status::INVALID_STATE,
            ctx.set_affinity(P, h, 0, foreign, 0)?,
        )?;
    }
    ctx.activate(P, d.handle, 0, apic, VECTOR)?;
    expect(
        "SET_AFFINITY of an ACTIVE vector",
        Status::SUCCESS,
        ctx.set_affinity(P, d.handle, 0, apic, VECTOR + 1)?,
    )
}

fn aff_invalid_target(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let fx = ctx.fixture().clone();
    let mine: Vec<u32> = fx.primary.vcpus.iter().map(|v| v.apic_id).collect();
    let mut foreign = vec![fx.primary.foreign_apic_id(), u32::MAX];
    if let Some(s) = &fx.secondary {
        foreign.extend(s.vcpus.iter().map(|v| v.apic_id));
    }
    foreign.retain(|a| !mine.contains(a));
    let a = active(ctx, 0, VECTOR)?;
    for apic in foreign {
        expect(
            format!("SET_AFFINITY to APIC id {apic:#x} (no vCPU of the VM)"),
            Status::INVALID_TARGET,
            ctx.set_affinity(P, a.handle, 0, apic, VECTOR)?,
        )?;
    }
    for vector in [0u8, 0x0f] {
        expect(
            format!("SET_AFFINITY to vector {vector:#x}"),
            Status::INVALID_TARGET,
            ctx.set_affinity(P, a.handle, 0, mine[0], vector)?,
        )?;
    }
    for (i, apic) in mine.iter().enumerate() {
        let vector = [0x10u8, 0xff, 0x80, 0x31][i % 4];
        expect(
            format!("SET_AFFINITY to APIC id {apic} vector {vector:#x}"),
            Status::SUCCESS,
            ctx.set_affinity(P, a.handle, 0, *apic, vector)?,
        )?;
    }
    Ok(())
}

fn aff_same_target(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let a = active(ctx, 0, VECTOR)?;
    for _ in 0..3 {
        expect(
            "SET_AFFINITY to the target in force",
            Status::SUCCESS,
            ctx.set_affinity(P, a.handle, 0, apic, VECTOR)?,
        )?;
    }
    Ok(())
}

fn aff_same_target_unchanged(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let apic1 = ctx.apic(P, 1).or_else(|_| ctx.apic(P, 0))?;
    let a = active(ctx, 0, VECTOR)?;
    expect(
        "SET_AFFINITY",
        Status::SUCCESS,
        ctx.set_affinity(P, a.handle, 0, apic1, VECTOR + 3)?,
    )?;
    let before = ctx.snapshot(Scope::Host)?;
    expect(
        "SET_AFFINITY to the target in force",
        Status::SUCCESS,
        ctx.set_affinity(P, a.handle, 0, apic1, VECTOR + 3)?,
    )?;
    ctx.unchanged("SET_AFFINITY to the target in force", &before, Scope::Host)
}

fn expect_delivery(
    ctx: &mut Ctx<'_>,
    step: &str,
    a: &Alloc,
    sub: u16,
    want: Option<(u32, u8)>,
) -> CheckResult {
    let d = ctx.delivery(P, a.handle, sub)?;
    let want = want.map(|(apic_id, vector)| Delivery {
        vm: Some(P),
        apic_id,
        vector,
    });
    expect_eq(step, "delivery of an interrupt raised now", want, d)
}

fn aff_failure_keeps_old(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let n = ctx.vm(P)?.vcpus.len();
    if n < 2 {
        return Err(Stop::NotTestable("the primary VM has one vCPU".into()));
    }
    let apic0 = ctx.apic(P, 0)?;
    let a = active(ctx, 0, VECTOR)?;
    let apic1 = ctx.apic(P, 1)?;
    let before = ctx.snapshot(Scope::Host)?;
    ctx.host()
        .inject_failure(Fault::RouteUpdate)
        .map_err(|e| harness("failure injection", e))?;
    let step = "SET_AFFINITY with an injected RouteUpdate failure";
    expect(
        step,
        Fault::RouteUpdate.status(),
        ctx.set_affinity(P, a.handle, 0, apic1, VECTOR + 1)?,
    )?;
    ctx.unchanged(step, &before, Scope::Host)?;
    expect_delivery(ctx, step, &a, 0, Some((apic0, VECTOR)))?;
    // A move of the host IRQ happens only for some targets: try every other vCPU.
    ctx.host()
        .inject_failure(Fault::IrqMove)
        .map_err(|e| harness("failure injection", e))?;
    let mut current = (apic0, VECTOR);
    for i in 1..n {
        let apic = ctx.apic(P, i)?;
        let before = ctx.snapshot(Scope::Host)?;
        let s = ctx.set_affinity(P, a.handle, 0, apic, VECTOR + i as u8)?;
        if s == Status::SUCCESS {
            current = (apic, VECTOR + i as u8);
            continue;
        }
        let step = format!("SET_AFFINITY to APIC id {apic} with an injected IrqMove failure");
        expect(&step, Fault::IrqMove.status(), s)?;
        ctx.unchanged(&step, &before, Scope::Host)?;
        return expect_delivery(ctx, &step, &a, 0, Some(current));
    }
    Err(Stop::NotTestable(
        "no retarget moved the host interrupt, so the injected IrqMove failure never triggered"
            .into(),
    ))
}

fn aff_one_store(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let n = ctx.vm(P)?.vcpus.len();
    let a = active(ctx, 0, VECTOR)?;
    let index = ctx.irte(P, a.handle, 0)?.index;
    for i in (1..n).chain([0]) {
        let apic = ctx.apic(P, i)?;
        let vector = 0x50 + i as u8;
        ctx.host()
            .start_physical_log()
            .map_err(|e| harness("starting the physical-side log", e))?;
        expect(
            "SET_AFFINITY",
            Status::SUCCESS,
            ctx.set_affinity(P, a.handle, 0, apic, vector)?,
        )?;
        let log = ctx
            .host()
            .take_physical_log()
            .map_err(|e| harness("reading the physical-side log", e))?;
        let step = format!("SET_AFFINITY to APIC id {apic} vector {vector:#x}");
        let writes: Vec<&PhysEvent> = log
            .iter()
            .filter(|e| matches!(e, PhysEvent::IrteWritten { index: i, .. } if *i == index))
            .collect();
        ensure(
            writes.len() <= 1,
            &step,
            "writes of the vector's IRTE",
            "at most one",
            format!("{writes:?}"),
        )?;
        ensure(
            writes
                .iter()
                .all(|e| matches!(e, PhysEvent::IrteWritten { present: true, .. })),
            &step,
            "IRTE written",
            "present",
            format!("{writes:?}"),
        )?;
        expect_delivery(ctx, &step, &a, 0, Some((apic, vector)))?;
    }
    Ok(())
}

fn aff_index_unchanged(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let n = ctx.vm(P)?.vcpus.len();
    let a = active(ctx, 0, VECTOR)?;
    let index = ctx.irte(P, a.handle, 0)?.index;
    for i in 0..n {
        let apic = ctx.apic(P, i)?;
        expect(
            "SET_AFFINITY",
            Status::SUCCESS,
            ctx.set_affinity(P, a.handle, 0, apic, 0x60 + i as u8)?,
        )?;
        expect_eq(
            format!("SET_AFFINITY to APIC id {apic}"),
            "IRTE index",
            index,
            ctx.irte(P, a.handle, 0)?.index,
        )?;
    }
    Ok(())
}

fn dea_order(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let allocated = ctx.allocate(P)?;
    let a = active(ctx, 0, VECTOR)?;
    expect(
        "DEACTIVATE of handle 0",
        Status::INVALID_HANDLE,
        ctx.deactivate(P, 0, 0)?,
    )?;
    expect(
        "DEACTIVATE of a never-issued handle with sub-handle 9",
        Status::INVALID_HANDLE,
        ctx.deactivate(P, a.handle.wrapping_add(0x1_0000), 9)?,
    )?;
    expect(
        "DEACTIVATE of sub-handle 1 of a single-vector ALLOCATED allocation",
        Status::INVALID_SUBHANDLE,
        ctx.deactivate(P, allocated.handle, 1)?,
    )?;
    expect(
        "DEACTIVATE of an ALLOCATED vector",
        Status::INVALID_STATE,
        ctx.deactivate(P, allocated.handle, 0)?,
    )?;
    expect(
        "DEACTIVATE of an ACTIVE vector",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    expect(
        "DEACTIVATE of a deactivated vector",
        Status::INVALID_STATE,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    if f.contains(Features::RESERVATION) {
        ctx.reserve(P, allocated.handle, 0)?;
        expect(
            "DEACTIVATE of a RESERVED vector",
            Status::SUCCESS,
            ctx.deactivate(P, allocated.handle, 0)?,
        )?;
    }
    Ok(())
}

fn dea_returns_vector(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let quota = ctx.query(P)?.vector_quota.get();
    let apic = ctx.apic(P, 0)?;
    let mut live = Vec::new();
    for _ in 0..quota {
        live.push(active(ctx, 0, VECTOR)?);
    }
    let spare = ctx.allocate(P)?;
    let s = status_of(ctx.try_activate(P, &activate_request(spare.handle, 0, 0, apic, VECTOR))?);
    expect(
        "ACTIVATE with the vector quota used up",
        Status::VECTORS_EXHAUSTED,
        s,
    )?;
    for round in 0..3 {
        let victim = live[round % live.len().max(1)];
        expect(
            "DEACTIVATE",
            Status::SUCCESS,
            ctx.deactivate(P, victim.handle, 0)?,
        )?;
        ctx.activate(P, spare.handle, 0, apic, VECTOR)?;
        expect(
            "DEACTIVATE",
            Status::SUCCESS,
            ctx.deactivate(P, spare.handle, 0)?,
        )?;
        ctx.activate(P, victim.handle, 0, apic, VECTOR)?;
    }
    Ok(())
}

fn dea_entry_first(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let a = active(ctx, 0, VECTOR)?;
    let index = ctx.irte(P, a.handle, 0)?.index;
    ctx.host()
        .start_physical_log()
        .map_err(|e| harness("starting the physical-side log", e))?;
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    let log = ctx
        .host()
        .take_physical_log()
        .map_err(|e| harness("reading the physical-side log", e))?;
    let step = "DEACTIVATE of an ACTIVE vector";
    let off = log.iter().position(|e| {
        *e == PhysEvent::IrteWritten {
            index,
            present: false,
        }
    });
    let stop = log.iter().position(|e| *e == PhysEvent::IrqStopped);
    let unroute = log
        .iter()
        .position(|e| matches!(e, PhysEvent::RouteRemoved(_)));
    ensure(
        off.is_some() && stop.is_some() && unroute.is_some(),
        step,
        "events",
        "IRTE not present, IRQ stopped, route removed",
        format!("{log:?}"),
    )?;
    ensure(
        off < stop && off < unroute,
        step,
        "order",
        "the IRTE made not present first",
        format!("{log:?}"),
    )?;
    let e = ctx.irte(P, a.handle, 0)?;
    ensure(e.raw & 1 == 0, step, "IRTE P", "0", "1")?;
    expect_delivery(ctx, step, &a, 0, None)
}

fn dea_keeps_allocation(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let slot = ctx.next_slot(P)?;
    let a = ctx.allocate_slot(P, slot)?;
    let apic = ctx.apic(P, 0)?;
    let m1 = ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    let irtes_before = if f.contains(Features::QUOTA_QUERY) {
        Some(ctx.quota(P)?.irtes_free.get())
    } else {
        None
    };
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    let step = "after DEACTIVATE";
    expect(
        format!("SET_AFFINITY {step}"),
        Status::INVALID_STATE,
        ctx.set_affinity(P, a.handle, 0, apic, VECTOR)?,
    )?;
    expect(
        format!("DEACTIVATE {step}"),
        Status::INVALID_STATE,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    let again = status_of(ctx.try_allocate(
        P,
        &crate::ctx::allocate_request(slot.device_id, slot.kind, 0, slot.index),
    )?);
    expect(
        format!("ALLOCATE of the same slot {step}"),
        Status::INDEX_IN_USE,
        again,
    )?;
    if let Some(b) = irtes_before {
        expect_eq(
            format!("QUERY_QUOTA {step}"),
            "irtes_free",
            b,
            ctx.quota(P)?.irtes_free.get(),
        )?;
    }
    let m2 = ctx.activate(P, a.handle, 0, apic, VECTOR + 1)?;
    expect_eq(
        format!("ACTIVATE {step}"),
        "message",
        (m1.address_lo, m1.address_hi, m1.data),
        (m2.address_lo, m2.address_hi, m2.data),
    )
}

fn fre_invalid_handle(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let a = ctx.allocate(P)?;
    expect("FREE of handle 0", Status::INVALID_HANDLE, ctx.free(P, 0)?)?;
    expect(
        "FREE of a never-issued handle",
        Status::INVALID_HANDLE,
        ctx.free(P, a.handle.wrapping_add(0x1_0000))?,
    )?;
    expect(
        "FREE of a live handle",
        Status::SUCCESS,
        ctx.free(P, a.handle)?,
    )?;
    expect(
        "FREE of the same handle again",
        Status::INVALID_HANDLE,
        ctx.free(P, a.handle)?,
    )
}

/// An allocation with vectors in ACTIVE, RESERVED (if offered) and ALLOCATED states: an MSI block
/// of 4 if possible, otherwise one ACTIVE single-vector allocation.
fn mixed(ctx: &mut Ctx<'_>, f: Features) -> Result<Alloc, Stop> {
    let apic = ctx.apic(P, 0)?;
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 4)
            .copied()
    {
        let m = ctx.allocate_msi(P, d.device_id, 2)?;
        ctx.activate(P, m.handle, 0, apic, VECTOR)?;
        ctx.activate(P, m.handle, 3, apic, VECTOR + 3)?;
        if f.contains(Features::RESERVATION) {
            ctx.reserve(P, m.handle, 1)?;
        }
        return Ok(m);
    }
    active(ctx, 0, VECTOR)
}

fn fre_releases(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let quota = ctx.query(P)?;
    let (iq, vq) = (quota.irte_quota.get(), quota.vector_quota.get());
    // Use up the vector quota with one mixed allocation plus singles, then FREE the mixed one.
    let m = mixed(ctx, f)?;
    let apic = ctx.apic(P, 0)?;
    let mut singles = Vec::new();
    loop {
        let a = ctx.allocate(P)?;
        let s = status_of(ctx.try_activate(P, &activate_request(a.handle, 0, 0, apic, VECTOR))?);
        if s == Status::VECTORS_EXHAUSTED {
            singles.push(a);
            break;
        }
        expect("ACTIVATE", Status::SUCCESS, s)?;
        singles.push(a);
        if singles.len() as u32 > vq {
            return Err(Stop::NotTestable(
                "the vector quota is never exhausted".into(),
            ));
        }
    }
    expect(
        "FREE of an allocation with ACTIVE, RESERVED and ALLOCATED vectors",
        Status::SUCCESS,
        ctx.free(P, m.handle)?,
    )?;
    let last = singles
        .last()
        .copied()
        .ok_or_else(|| Stop::NotTestable("no spare allocation".into()))?;
    expect(
        "ACTIVATE after FREE returned vectors",
        Status::SUCCESS,
        status_of(ctx.try_activate(P, &activate_request(last.handle, 0, 0, apic, VECTOR))?),
    )?;
    if f.contains(Features::QUOTA_QUERY) {
        let q = ctx.quota(P)?;
        let active_now = singles.len() as u32;
        expect_eq(
            "QUERY_QUOTA after FREE",
            "vectors_free",
            i64::from(vq) - i64::from(active_now),
            i64::from(q.vectors_free.get()),
        )?;
        expect_eq(
            "QUERY_QUOTA after FREE",
            "irtes_free",
            i64::from(iq) - singles.len() as i64,
            i64::from(q.irtes_free.get()),
        )?;
    }
    // The slot is free again.
    if m.count > 1 {
        let d = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 4)
            .copied();
        if let Some(d) = d {
            ctx.allocate_msi(P, d.device_id, 2)?;
        }
    }
    Ok(())
}

fn fre_entries_not_present(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let m = mixed(ctx, f)?;
    let mut indices = Vec::new();
    for sub in 0..m.count {
        indices.push(ctx.irte(P, m.handle, sub)?.index);
    }
    expect("FREE", Status::SUCCESS, ctx.free(P, m.handle)?)?;
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
        "table scan after FREE",
        "present entries of the freed allocation",
        "none",
        format!("{still:?}"),
    )?;
    for sub in 0..m.count {
        let d = ctx.delivery(P, m.handle, sub)?;
        ensure(
            d.is_none(),
            "after FREE",
            "delivery",
            "nowhere",
            format!("{d:?}"),
        )?;
    }
    Ok(())
}

fn fre_handle_stale(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let slot = ctx.next_slot(P)?;
    let a = ctx.allocate_slot(P, slot)?;
    let apic = ctx.apic(P, 0)?;
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    expect("FREE", Status::SUCCESS, ctx.free(P, a.handle)?)?;
    let stale = |ctx: &mut Ctx<'_>, when: &str| -> CheckResult {
        let s = status_of(ctx.try_activate(P, &activate_request(a.handle, 0, 0, apic, VECTOR))?);
        expect(
            format!("ACTIVATE of a freed handle {when}"),
            Status::INVALID_HANDLE,
            s,
        )?;
        let s = status_of(ctx.try_activate(
            P,
            &activate_request(a.handle, 0, activate_flags::RESERVE, 0, 0),
        )?);
        expect(
            format!("ACTIVATE RESERVE of a freed handle {when}"),
            Status::INVALID_HANDLE,
            s,
        )?;
        expect(
            format!("SET_AFFINITY of a freed handle {when}"),
            Status::INVALID_HANDLE,
            ctx.set_affinity(P, a.handle, 0, apic, VECTOR)?,
        )?;
        expect(
            format!("DEACTIVATE of a freed handle {when}"),
            Status::INVALID_HANDLE,
            ctx.deactivate(P, a.handle, 0)?,
        )?;
        expect(
            format!("FREE of a freed handle {when}"),
            Status::INVALID_HANDLE,
            ctx.free(P, a.handle)?,
        )
    };
    stale(ctx, "right after FREE")?;
    let b = ctx.allocate_slot(P, slot)?;
    ensure(
        b.handle != a.handle,
        "ALLOCATE of the freed slot",
        "handle",
        format!("not {:#x} (stale)", a.handle),
        format!("{:#x}", b.handle),
    )?;
    stale(ctx, "after the slot was allocated again")
}

fn quo_counts(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.require_offered(P, Features::QUOTA_QUERY)?;
    let f = ctx.negotiate_all(P)?;
    let apic = ctx.apic(P, 0)?;
    let q0 = ctx.quota(P)?;
    let (it, vt) = (q0.irtes_total.get(), q0.vectors_total.get());
    let expect_q = |ctx: &mut Ctx<'_>, when: &str, irtes: u32, vectors: u32| -> CheckResult {
        let q = ctx.quota(P)?;
        expect_eq(
            format!("QUERY_QUOTA {when}"),
            "(irtes_free, vectors_free)",
            (
                i64::from(it) - i64::from(irtes),
                i64::from(vt) - i64::from(vectors),
            ),
            (
                i64::from(q.irtes_free.get()),
                i64::from(q.vectors_free.get()),
            ),
        )
    };
    expect_q(ctx, "at the start of the session", 0, 0)?;
    let a = ctx.allocate(P)?;
    expect_q(ctx, "after one ALLOCATE", 1, 0)?;
    let mut irtes = 1;
    let mut block = None;
    if f.contains(Features::MSI)
        && let Some(d) = ctx
            .vm(P)?
            .devices
            .iter()
            .find(|d| d.msi_vectors >= 4)
            .copied()
    {
        block = Some(ctx.allocate_msi(P, d.device_id, 2)?);
        irtes += 4;
        expect_q(ctx, "after an MSI block of 4", irtes, 0)?;
    }
    if f.contains(Features::RESERVATION) {
        ctx.reserve(P, a.handle, 0)?;
        expect_q(ctx, "after RESERVE", irtes, 0)?;
    }
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    expect_q(ctx, "after ACTIVATE", irtes, 1)?;
    if let Some(b) = block {
        ctx.activate(P, b.handle, 2, apic, VECTOR)?;
        expect_q(ctx, "after ACTIVATE of an MSI sub-handle", irtes, 2)?;
        expect("FREE of the block", Status::SUCCESS, ctx.free(P, b.handle)?)?;
        irtes -= 4;
        expect_q(ctx, "after FREE of the block", irtes, 1)?;
    }
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    expect_q(ctx, "after DEACTIVATE", irtes, 0)?;
    ctx.activate(P, a.handle, 0, apic, VECTOR)?;
    ctx.allocate(P)?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, f)?;
    expect_q(ctx, "after RESET", 0, 0)
}

fn quo_totals(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.require_offered(P, Features::QUOTA_QUERY)?;
    ctx.negotiate_all(P)?;
    let q = ctx.query(P)?;
    let qq = ctx.quota(P)?;
    expect_eq(
        "QUERY_QUOTA",
        "irtes_total (QUERY irte_quota)",
        q.irte_quota.get(),
        qq.irtes_total.get(),
    )?;
    expect_eq(
        "QUERY_QUOTA",
        "vectors_total (QUERY vector_quota)",
        q.vector_quota.get(),
        qq.vectors_total.get(),
    )?;
    ctx.allocate_active(P)?;
    let qq = ctx.quota(P)?;
    expect_eq(
        "QUERY_QUOTA with an active vector",
        "irtes_total",
        q.irte_quota.get(),
        qq.irtes_total.get(),
    )?;
    expect_eq(
        "QUERY_QUOTA with an active vector",
        "vectors_total",
        q.vector_quota.get(),
        qq.vectors_total.get(),
    )
}

/// An event of the interrupt state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Reserve,
    Activate,
    ActivateBadTarget,
    Affinity,
    AffinityBadTarget,
    Deactivate,
    Free,
}

fn irq_table(ctx: &mut Ctx<'_>) -> CheckResult {
    use Event as E;
    use VecState as S;
    let f = ctx.negotiate_all(P)?;
    let reserve = f.contains(Features::RESERVATION);
    let apic0 = ctx.apic(P, 0)?;
    let apic1 = ctx.apic(P, 1).unwrap_or(apic0);
    let foreign = ctx.vm(P)?.foreign_apic_id();
    let t0 = (apic0, VECTOR);
    let t1 = (apic1, VECTOR + 7);
    // (state, event, status, next state)
    let rows: Vec<(S, E, Status, S)> = vec![
        (S::Allocated, E::Reserve, Status::SUCCESS, S::Reserved),
        (
            S::Allocated,
            E::Activate,
            Status::SUCCESS,
            S::Active(t1.0, t1.1),
        ),
        (
            S::Allocated,
            E::ActivateBadTarget,
            Status::INVALID_TARGET,
            S::Allocated,
        ),
        (
            S::Allocated,
            E::Affinity,
            Status::INVALID_STATE,
            S::Allocated,
        ),
        (
            S::Allocated,
            E::Deactivate,
            Status::INVALID_STATE,
            S::Allocated,
        ),
        (S::Allocated, E::Free, Status::SUCCESS, S::Free),
        (S::Reserved, E::Reserve, Status::INVALID_STATE, S::Reserved),
        (
            S::Reserved,
            E::Activate,
            Status::SUCCESS,
            S::Active(t1.0, t1.1),
        ),
        (
            S::Reserved,
            E::ActivateBadTarget,
            Status::INVALID_TARGET,
            S::Reserved,
        ),
        (S::Reserved, E::Affinity, Status::INVALID_STATE, S::Reserved),
        (S::Reserved, E::Deactivate, Status::SUCCESS, S::Allocated),
        (S::Reserved, E::Free, Status::SUCCESS, S::Free),
        (
            S::Active(t0.0, t0.1),
            E::Reserve,
            Status::INVALID_STATE,
            S::Active(t0.0, t0.1),
        ),
        (
            S::Active(t0.0, t0.1),
            E::Activate,
            Status::INVALID_STATE,
            S::Active(t0.0, t0.1),
        ),
        (
            S::Active(t0.0, t0.1),
            E::Affinity,
            Status::SUCCESS,
            S::Active(t1.0, t1.1),
        ),
        (
            S::Active(t0.0, t0.1),
            E::AffinityBadTarget,
            Status::INVALID_TARGET,
            S::Active(t0.0, t0.1),
        ),
        (
            S::Active(t0.0, t0.1),
            E::Deactivate,
            Status::SUCCESS,
            S::Allocated,
        ),
        (S::Active(t0.0, t0.1), E::Free, Status::SUCCESS, S::Free),
    ];
    for (from, event, status, next) in rows {
        let uses_reserve = from == S::Reserved || event == E::Reserve;
        if uses_reserve && !reserve {
            continue;
        }
        let a = ctx.allocate(P)?;
        match from {
            S::Reserved => {
                ctx.reserve(P, a.handle, 0)?;
            }
            S::Active(apic, vector) => {
                ctx.activate(P, a.handle, 0, apic, vector)?;
            }
            S::Allocated | S::Free => {}
        }
        let s = match event {
            E::Reserve => status_of(ctx.try_activate(
                P,
                &activate_request(a.handle, 0, activate_flags::RESERVE, 0, 0),
            )?),
            E::Activate => {
                status_of(ctx.try_activate(P, &activate_request(a.handle, 0, 0, t1.0, t1.1))?)
            }
            E::ActivateBadTarget => {
                status_of(ctx.try_activate(P, &activate_request(a.handle, 0, 0, foreign, t1.1))?)
            }
            E::Affinity => ctx.set_affinity(P, a.handle, 0, t1.0, t1.1)?,
            E::AffinityBadTarget => ctx.set_affinity(P, a.handle, 0, foreign, t1.1)?,
            E::Deactivate => ctx.deactivate(P, a.handle, 0)?,
            E::Free => ctx.free(P, a.handle)?,
        };
        let step = format!("{event:?} of a vector in state {from:?}");
        expect(&step, status, s)?;
        let known = match next {
            S::Active(apic, vector) => (apic, vector),
            _ => t0,
        };
        let got = probe_state(ctx, P, a.handle, 0, known)?;
        expect_eq(&step, "next state", next, got)?;
        if got != S::Free {
            expect("FREE", Status::SUCCESS, ctx.free(P, a.handle)?)?;
        }
    }
    Ok(())
}

fn irq_one_target(ctx: &mut Ctx<'_>) -> CheckResult {
    let f = ctx.negotiate_all(P)?;
    let n = ctx.vm(P)?.vcpus.len();
    let a = ctx.allocate(P)?;
    expect_delivery(ctx, "an ALLOCATED vector", &a, 0, None)?;
    if f.contains(Features::RESERVATION) {
        ctx.reserve(P, a.handle, 0)?;
        expect_delivery(ctx, "a RESERVED vector", &a, 0, None)?;
    }
    for i in 0..n {
        let apic = ctx.apic(P, i)?;
        let vector = 0x70 + i as u8;
        if i == 0 {
            ctx.activate(P, a.handle, 0, apic, vector)?;
        } else {
            expect(
                "SET_AFFINITY",
                Status::SUCCESS,
                ctx.set_affinity(P, a.handle, 0, apic, vector)?,
            )?;
        }
        expect_delivery(
            ctx,
            &format!("an ACTIVE vector targeting APIC id {apic} vector {vector:#x}"),
            &a,
            0,
            Some((apic, vector)),
        )?;
    }
    expect(
        "DEACTIVATE",
        Status::SUCCESS,
        ctx.deactivate(P, a.handle, 0)?,
    )?;
    expect_delivery(ctx, "a deactivated vector", &a, 0, None)
}
