//! The memory binding (VIR-MEM-H-*): lengths, buffer rules, read-once, write-once.

use vir_abi::call::{CallCode, PAGE_SIZE};
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{StorageKind, vm_state};
use zerocopy::IntoBytes;

use crate::ctx::{
    Ctx, FILL, VECTOR, activate_request, allocate_request, ensure, expect, expect_that,
    negotiate_request, sizes,
};
use crate::hut::{Buffer, MemAccess, VmRef};
use crate::outcome::{CheckResult, Expected, Stop, harness};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-MEM-H-001"],
        "mem_bad_length",
        "every call with a request or response length off by 1, 8, a page, 2^32 or more returns BAD_LENGTH",
        bad_length
    ),
    check!(
        ["VIR-MEM-H-002"],
        "mem_zero_length_nonzero_gpa",
        "a zero-length request or response buffer with a GPA other than 0 returns BAD_BUFFER",
        zero_length
    ),
    check!(
        ["VIR-MEM-H-003"],
        "mem_misaligned_buffer",
        "a request or response buffer at a GPA not a multiple of 8 returns BAD_BUFFER",
        misaligned
    ),
    check!(
        ["VIR-MEM-H-004"],
        "mem_page_crossing",
        "a buffer crossing a 4 KiB page, or ending past 2^64, returns BAD_BUFFER; one ending at a page end works",
        page_crossing
    ),
    check!(
        ["VIR-MEM-H-005"],
        "mem_overlapping_buffers",
        "request and response sharing a byte return BAD_BUFFER; adjacent buffers work",
        overlapping
    ),
    check!(
        ["VIR-MEM-H-006"],
        "mem_not_ram",
        "buffers in a hole, beyond the guest physical address space, or a response in read-only memory return BAD_BUFFER",
        not_ram
    ),
    check!(
        ["VIR-MEM-H-007"],
        "mem_request_read_once",
        "the host reads each request buffer exactly once (guest-memory access log)",
        read_once_log
    ),
    check!(
        ["VIR-MEM-H-007"],
        "mem_request_changed_in_flight",
        "a request changed by the guest after the host's first read is acted upon as first read",
        read_once_mutation
    ),
    check!(
        ["VIR-MEM-H-008"],
        "mem_response_written_once",
        "a successful call writes its response buffer exactly once, after reading the request, and nothing else",
        written_once
    ),
];

const P: VmRef = VmRef::Primary;

fn wrong_lengths(exact: u64) -> Vec<u64> {
    let mut v = vec![
        exact + 1,
        exact + 8,
        64,
        4096,
        1 << 32,
        (1 << 32) + exact,
        u64::MAX,
    ];
    if exact > 0 {
        v.extend([0, exact - 1]);
        if exact >= 8 {
            v.push(exact - 8);
        }
    } else {
        v.push(8);
    }
    v.retain(|&l| l != exact);
    v.sort_unstable();
    v.dedup();
    v
}

fn bad_length(ctx: &mut Ctx<'_>) -> CheckResult {
    ctx.negotiate_all(P)?;
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let buf = |gpa: u64, len: u64| {
        if len == 0 {
            Buffer::NONE
        } else {
            Buffer::new(gpa, len)
        }
    };
    for &code in CallCode::V1 {
        let (rq, rs) = sizes(code);
        for len in wrong_lengths(rq) {
            let s = ctx.call(P, code, buf(req, len), buf(resp, rs))?;
            expect(
                format!("{code} with request length {len:#x}"),
                Status::BAD_LENGTH,
                s,
            )?;
        }
        for len in wrong_lengths(rs) {
            let s = ctx.call(P, code, buf(req, rq), buf(resp, len))?;
            expect(
                format!("{code} with response length {len:#x}"),
                Status::BAD_LENGTH,
                s,
            )?;
        }
    }
    // Positive: exact lengths pass the length step.
    for &code in CallCode::V1 {
        let (rq, rs) = sizes(code);
        ctx.fill(P, req, 64, 0)?;
        let s = ctx.call(P, code, buf(req, rq), buf(resp, rs))?;
        expect_that(
            format!("{code} with its exact lengths"),
            Expected::Not(Status::BAD_LENGTH),
            s,
        )?;
    }
    Ok(())
}

fn zero_length(ctx: &mut Ctx<'_>) -> CheckResult {
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
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
    let s = ctx.call(P, CallCode::QUERY, Buffer::new(8, 0), Buffer::new(resp, 40))?;
    expect(
        "QUERY with a zero-length request at GPA 8",
        Status::BAD_BUFFER,
        s,
    )?;
    let s = ctx.call(P, CallCode::QUERY, Buffer::NONE, Buffer::new(resp, 40))?;
    expect(
        "QUERY with a zero-length request at GPA 0",
        Status::SUCCESS,
        s,
    )?;
    ctx.negotiate_all(P)?;
    let s = ctx.call(P, CallCode::RESET, Buffer::NONE, Buffer::new(resp, 0))?;
    expect(
        "RESET with a zero-length response at a non-zero GPA",
        Status::BAD_BUFFER,
        s,
    )?;
    let s = ctx.call(P, CallCode::RESET, Buffer::new(req, 0), Buffer::NONE)?;
    expect(
        "RESET with a zero-length request at a non-zero GPA",
        Status::BAD_BUFFER,
        s,
    )?;
    let q = ctx.query(P)?;
    ensure(
        q.vm_state == vm_state::NEGOTIATED,
        "QUERY after the refused RESETs",
        "vm_state",
        "1 (NEGOTIATED)",
        q.vm_state.to_string(),
    )?;
    let (a, _) = ctx.allocate_active(P)?;
    let apic = ctx.apic(P, 0)?;
    ctx.write(
        P,
        req,
        crate::ctx::affinity_request(a.handle, 0, apic, VECTOR).as_bytes(),
    )?;
    let s = ctx.call(
        P,
        CallCode::SET_AFFINITY,
        Buffer::new(req, 16),
        Buffer::new(u64::MAX - 7, 0),
    )?;
    expect(
        "SET_AFFINITY with a zero-length response at GPA 2^64-8",
        Status::BAD_BUFFER,
        s,
    )?;
    let s = ctx.call(P, CallCode::RESET, Buffer::NONE, Buffer::NONE)?;
    expect(
        "RESET with both buffers zero-length at GPA 0",
        Status::SUCCESS,
        s,
    )
}

fn misaligned(ctx: &mut Ctx<'_>) -> CheckResult {
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let offered = ctx.offered(P)?;
    let n = negotiate_request(1, offered);
    for off in 1..8u64 {
        ctx.write(P, req + off, n.as_bytes())?;
        let s = ctx.call(
            P,
            CallCode::NEGOTIATE,
            Buffer::new(req + off, 16),
            Buffer::new(resp, 16),
        )?;
        expect(
            format!("NEGOTIATE with the request at page offset {off}"),
            Status::BAD_BUFFER,
            s,
        )?;
        ctx.write(P, req, n.as_bytes())?;
        let s = ctx.call(
            P,
            CallCode::NEGOTIATE,
            Buffer::new(req, 16),
            Buffer::new(resp + off, 16),
        )?;
        expect(
            format!("NEGOTIATE with the response at page offset {off}"),
            Status::BAD_BUFFER,
            s,
        )?;
        let s = ctx.call(
            P,
            CallCode::QUERY,
            Buffer::NONE,
            Buffer::new(resp + 0x100 + off, 40),
        )?;
        expect(
            format!("QUERY with the response at page offset {}", 0x100 + off),
            Status::BAD_BUFFER,
            s,
        )?;
    }
    // Positive: 8-byte aligned, not page aligned.
    ctx.write(P, req + 8, n.as_bytes())?;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(req + 8, 16),
        Buffer::new(resp + 8, 16),
    )?;
    expect(
        "NEGOTIATE with both buffers at page offset 8",
        Status::SUCCESS,
        s,
    )
}

fn page_crossing(ctx: &mut Ctx<'_>) -> CheckResult {
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let offered = ctx.offered(P)?;
    let n = negotiate_request(1, offered);
    let end = req + PAGE_SIZE;
    ctx.write(P, end - 8, n.as_bytes())?;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(end - 8, 16),
        Buffer::new(resp, 16),
    )?;
    expect(
        "NEGOTIATE with the request crossing a page",
        Status::BAD_BUFFER,
        s,
    )?;
    let s = ctx.call(
        P,
        CallCode::QUERY,
        Buffer::NONE,
        Buffer::new(resp + PAGE_SIZE - 32, 40),
    )?;
    expect(
        "QUERY with the response crossing a page",
        Status::BAD_BUFFER,
        s,
    )?;
    let s = ctx.call(
        P,
        CallCode::QUERY,
        Buffer::NONE,
        Buffer::new(u64::MAX - 7, 40),
    )?;
    expect(
        "QUERY with a response ending past 2^64",
        Status::BAD_BUFFER,
        s,
    )?;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(u64::MAX - 7, 16),
        Buffer::new(resp, 16),
    )?;
    expect(
        "NEGOTIATE with a request ending past 2^64",
        Status::BAD_BUFFER,
        s,
    )?;
    let s = ctx.call(
        P,
        CallCode::QUERY,
        Buffer::NONE,
        Buffer::new(resp + PAGE_SIZE - 40, 40),
    )?;
    expect(
        "QUERY with the response ending exactly at a page end",
        Status::SUCCESS,
        s,
    )?;
    ctx.write(P, end - 16, n.as_bytes())?;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(end - 16, 16),
        Buffer::new(resp, 16),
    )?;
    expect(
        "NEGOTIATE with the request ending exactly at a page end",
        Status::SUCCESS,
        s,
    )
}

fn overlapping(ctx: &mut Ctx<'_>) -> CheckResult {
    let req = ctx.page(P, 0)?;
    let offered = ctx.offered(P)?;
    let n = negotiate_request(1, offered);
    for (step, r, w) in [
        ("NEGOTIATE with identical buffers", req, req),
        (
            "NEGOTIATE with the response 8 bytes into the request",
            req,
            req + 8,
        ),
        (
            "NEGOTIATE with the request 8 bytes into the response",
            req + 8,
            req,
        ),
    ] {
        ctx.write(P, r, n.as_bytes())?;
        let s = ctx.call(
            P,
            CallCode::NEGOTIATE,
            Buffer::new(r, 16),
            Buffer::new(w, 16),
        )?;
        expect(step, Status::BAD_BUFFER, s)?;
    }
    let q = ctx.query(P)?;
    ensure(
        q.vm_state == vm_state::LEGACY,
        "QUERY after the refused NEGOTIATEs",
        "vm_state",
        "0 (LEGACY)",
        q.vm_state.to_string(),
    )?;
    ctx.write(P, req, n.as_bytes())?;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(req, 16),
        Buffer::new(req + 16, 16),
    )?;
    expect(
        "NEGOTIATE with the response right after the request",
        Status::SUCCESS,
        s,
    )?;
    // ALLOCATE (16/8) and ACTIVATE (16/24) overlaps in NEGOTIATED.
    let slots = ctx.slots_for(P, offered)?;
    let Some(slot) = slots.first().copied() else {
        return Ok(());
    };
    let a = allocate_request(slot.device_id, slot.kind, 0, slot.index);
    ctx.write(P, req, a.as_bytes())?;
    let s = ctx.call(
        P,
        CallCode::ALLOCATE,
        Buffer::new(req, 16),
        Buffer::new(req + 8, 8),
    )?;
    expect(
        "ALLOCATE with the response on the request's last 8 bytes",
        Status::BAD_BUFFER,
        s,
    )?;
    let apic = ctx.apic(P, 0)?;
    let r = activate_request(1, 0, 0, apic, VECTOR);
    ctx.write(P, req + 0x100, r.as_bytes())?;
    let s = ctx.call(
        P,
        CallCode::ACTIVATE,
        Buffer::new(req + 0x100, 16),
        Buffer::new(req + 0xf0, 24),
    )?;
    expect(
        "ACTIVATE with the response overlapping the request's first 8 bytes",
        Status::BAD_BUFFER,
        s,
    )
}

fn not_ram(ctx: &mut Ctx<'_>) -> CheckResult {
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let offered = ctx.offered(P)?;
    let n = negotiate_request(1, offered);
    ctx.write(P, req, n.as_bytes())?;
    // Beyond any guest physical address space (x86 MAXPHYADDR <= 52).
    let beyond = 1u64 << 56;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(beyond, 16),
        Buffer::new(resp, 16),
    )?;
    expect(
        "NEGOTIATE with the request at GPA 2^56",
        Status::BAD_BUFFER,
        s,
    )?;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(req, 16),
        Buffer::new(beyond, 16),
    )?;
    expect(
        "NEGOTIATE with the response at GPA 2^56",
        Status::BAD_BUFFER,
        s,
    )?;
    let fx = ctx.vm(P)?.clone();
    let mut tested_hole = false;
    if let Some(hole) = fx.unbacked_gpa {
        let s = ctx.call(
            P,
            CallCode::NEGOTIATE,
            Buffer::new(hole, 16),
            Buffer::new(resp, 16),
        )?;
        expect(
            format!("NEGOTIATE with the request in a hole at {hole:#x}"),
            Status::BAD_BUFFER,
            s,
        )?;
        let s = ctx.call(P, CallCode::QUERY, Buffer::NONE, Buffer::new(hole, 40))?;
        expect(
            format!("QUERY with the response in a hole at {hole:#x}"),
            Status::BAD_BUFFER,
            s,
        )?;
        tested_hole = true;
    }
    let mut tested_rom = false;
    if let Some(rom) = fx.readonly_gpa {
        let s = ctx.call(P, CallCode::QUERY, Buffer::NONE, Buffer::new(rom, 40))?;
        expect(
            format!("QUERY with the response in read-only memory at {rom:#x}"),
            Status::BAD_BUFFER,
            s,
        )?;
        tested_rom = true;
    }
    let q = ctx.query(P)?;
    ensure(
        q.vm_state == vm_state::LEGACY,
        "QUERY after the refused calls",
        "vm_state",
        "0 (LEGACY)",
        q.vm_state.to_string(),
    )?;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(req, 16),
        Buffer::new(resp, 16),
    )?;
    expect("NEGOTIATE with both buffers in RAM", Status::SUCCESS, s)?;
    if !tested_hole || !tested_rom {
        return Err(Stop::NotTestable(
            "the fixture names no unbacked GPA or no read-only page".into(),
        ));
    }
    Ok(())
}

fn reads_of(log: &[MemAccess], b: Buffer) -> usize {
    log.iter()
        .filter(|a| !a.write && a.touches(b.gpa, b.len))
        .count()
}

fn writes_to(log: &[MemAccess], b: Buffer) -> usize {
    log.iter()
        .filter(|a| a.write && a.touches(b.gpa, b.len))
        .count()
}

fn logged_call(
    ctx: &mut Ctx<'_>,
    code: CallCode,
    request: &[u8],
) -> Result<(Status, Vec<MemAccess>, Buffer, Buffer), Stop> {
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let (rq, rs) = sizes(code);
    ctx.write(P, req, request)?;
    ctx.fill(P, resp, rs as usize, FILL)?;
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
    ctx.host()
        .start_access_log(P)
        .map_err(|e| harness("starting the access log", e))?;
    let s = ctx.call(P, code, rq_b, rs_b)?;
    let log = ctx
        .host()
        .take_access_log(P)
        .map_err(|e| harness("reading the access log", e))?;
    Ok((s, log, rq_b, rs_b))
}

fn read_once_log(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = ctx.offered(P)?;
    let mut calls: Vec<(String, CallCode, Vec<u8>)> = vec![(
        "NEGOTIATE".into(),
        CallCode::NEGOTIATE,
        negotiate_request(1, offered).as_bytes().to_vec(),
    )];
    let (s, log, rq, _) = logged_call(ctx, CallCode::NEGOTIATE, &calls[0].2)?;
    expect("NEGOTIATE", Status::SUCCESS, s)?;
    ensure(
        reads_of(&log, rq) == 1,
        "NEGOTIATE",
        "host reads of the request buffer",
        "1",
        reads_of(&log, rq).to_string(),
    )?;
    // The helpers' session: RESET and negotiate again through them.
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, offered)?;
    let slot = ctx.next_slot(P)?;
    calls.clear();
    calls.push((
        "ALLOCATE".into(),
        CallCode::ALLOCATE,
        allocate_request(slot.device_id, slot.kind, 0, slot.index)
            .as_bytes()
            .to_vec(),
    ));
    let unassigned = ctx.vm(P)?.unassigned_device_id();
    calls.push((
        "ALLOCATE of an unassigned device (failing)".into(),
        CallCode::ALLOCATE,
        allocate_request(unassigned, StorageKind::MSIX, 0, 0)
            .as_bytes()
            .to_vec(),
    ));
    let a = ctx.allocate(P)?;
    let apic = ctx.apic(P, 0)?;
    calls.push((
        "ACTIVATE".into(),
        CallCode::ACTIVATE,
        activate_request(a.handle, 0, 0, apic, VECTOR)
            .as_bytes()
            .to_vec(),
    ));
    for (step, code, request) in calls {
        let (_, log, rq, _) = logged_call(ctx, code, &request)?;
        ensure(
            reads_of(&log, rq) == 1,
            &step,
            "host reads of the request buffer",
            "1",
            reads_of(&log, rq).to_string(),
        )?;
    }
    Ok(())
}

fn read_once_mutation(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = ctx.offered(P)?;
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    // NEGOTIATE: the version becomes 0xffff after the host's first read.
    let n = negotiate_request(1, offered);
    ctx.write(P, req, n.as_bytes())?;
    ctx.host()
        .mutate_after_first_read(P, Buffer::new(req, 16), req, &0xffffu16.to_le_bytes())
        .map_err(|e| harness("arming the mutation", e))?;
    let s = ctx.call(
        P,
        CallCode::NEGOTIATE,
        Buffer::new(req, 16),
        Buffer::new(resp, 16),
    )?;
    expect(
        "NEGOTIATE version 1, changed to 0xffff after the host's first read",
        Status::SUCCESS,
        s,
    )?;
    let r = ctx.read(P, resp, 2)?;
    ensure(
        r == [1, 0],
        "NEGOTIATE changed in flight",
        "response version",
        "1",
        format!("{r:02x?}"),
    )?;
    let now = ctx.read(P, req, 2)?;
    ensure(
        now == [0xff, 0xff],
        "NEGOTIATE changed in flight",
        "request version in guest memory after the call",
        "0xffff (the mutation happened)",
        format!("{now:02x?}"),
    )?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, offered)?;
    // ALLOCATE: the index becomes another slot's after the first read.
    let first = ctx.next_slot(P)?;
    let second = ctx.next_slot(P)?;
    if first.device_id != second.device_id || first.kind != second.kind {
        return Err(Stop::NotTestable(
            "no device with two single-vector slots".into(),
        ));
    }
    let a = allocate_request(first.device_id, first.kind, 0, first.index);
    ctx.write(P, req, a.as_bytes())?;
    let index_at = req + 8;
    ctx.host()
        .mutate_after_first_read(
            P,
            Buffer::new(req, 16),
            index_at,
            &second.index.to_le_bytes(),
        )
        .map_err(|e| harness("arming the mutation", e))?;
    ctx.fill(P, resp, 8, FILL)?;
    let s = ctx.call(
        P,
        CallCode::ALLOCATE,
        Buffer::new(req, 16),
        Buffer::new(resp, 8),
    )?;
    expect(
        format!(
            "ALLOCATE of index {}, changed to {} after the host's first read",
            first.index, second.index
        ),
        Status::SUCCESS,
        s,
    )?;
    let now = ctx.read(P, index_at, 4)?;
    ensure(
        now == second.index.to_le_bytes(),
        "ALLOCATE changed in flight",
        "request index in guest memory after the call",
        second.index.to_string(),
        format!("{now:02x?}"),
    )?;
    // The slot first read must be the one allocated.
    let again = ctx.try_allocate(
        P,
        &allocate_request(first.device_id, first.kind, 0, first.index),
    )?;
    expect(
        format!(
            "ALLOCATE of index {} again (allocated by the changed request)",
            first.index
        ),
        Status::INDEX_IN_USE,
        again.err().unwrap_or(Status::SUCCESS),
    )?;
    let other = ctx.try_allocate(
        P,
        &allocate_request(second.device_id, second.kind, 0, second.index),
    )?;
    expect(
        format!(
            "ALLOCATE of index {} (only written by the guest in flight)",
            second.index
        ),
        Status::SUCCESS,
        other.err().unwrap_or(Status::SUCCESS),
    )?;
    Ok(())
}

fn written_once(ctx: &mut Ctx<'_>) -> CheckResult {
    let offered = ctx.offered(P)?;
    let check = |step: &str, log: &[MemAccess], rq: Buffer, rs: Buffer| -> CheckResult {
        let w = writes_to(log, rs);
        ensure(
            w == 1,
            step,
            "host writes to the response buffer",
            "1",
            w.to_string(),
        )?;
        let stray: Vec<&MemAccess> = log
            .iter()
            .filter(|a| a.write && !a.touches(rs.gpa, rs.len))
            .collect();
        ensure(
            stray.is_empty(),
            step,
            "host writes outside the response buffer",
            "none",
            format!("{stray:?}"),
        )?;
        let last_read = log
            .iter()
            .rposition(|a| !a.write && a.touches(rq.gpa, rq.len));
        let write = log
            .iter()
            .position(|a| a.write && a.touches(rs.gpa, rs.len));
        ensure(
            rq.len == 0 || last_read < write,
            step,
            "order of accesses",
            "request read before the response is written",
            format!("{log:?}"),
        )
    };
    let (s, log, rq, rs) = logged_call(ctx, CallCode::QUERY, &[])?;
    expect("QUERY", Status::SUCCESS, s)?;
    check("QUERY", &log, rq, rs)?;
    let (s, log, rq, rs) = logged_call(
        ctx,
        CallCode::NEGOTIATE,
        negotiate_request(1, offered).as_bytes(),
    )?;
    expect("NEGOTIATE", Status::SUCCESS, s)?;
    check("NEGOTIATE", &log, rq, rs)?;
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    ctx.negotiate(P, offered)?;
    let slot = ctx.next_slot(P)?;
    let (s, log, rq, rs) = logged_call(
        ctx,
        CallCode::ALLOCATE,
        allocate_request(slot.device_id, slot.kind, 0, slot.index).as_bytes(),
    )?;
    expect("ALLOCATE", Status::SUCCESS, s)?;
    check("ALLOCATE", &log, rq, rs)?;
    let handle = u32::from_le_bytes(
        ctx.read(P, rs.gpa, 4)?
            .try_into()
            .map_err(|_| Stop::NotTestable("short read".into()))?,
    );
    let apic = ctx.apic(P, 0)?;
    let (s, log, rq, rs) = logged_call(
        ctx,
        CallCode::ACTIVATE,
        activate_request(handle, 0, 0, apic, VECTOR).as_bytes(),
    )?;
    expect("ACTIVATE", Status::SUCCESS, s)?;
    check("ACTIVATE", &log, rq, rs)?;
    if offered.contains(Features::QUOTA_QUERY) {
        let (s, log, rq, rs) = logged_call(ctx, CallCode::QUERY_QUOTA, &[])?;
        expect("QUERY_QUOTA", Status::SUCCESS, s)?;
        check("QUERY_QUOTA", &log, rq, rs)?;
    }
    // A failing call writes nothing at all.
    let (s, log, _, _) = logged_call(
        ctx,
        CallCode::ACTIVATE,
        activate_request(handle, 0, 0, apic, VECTOR).as_bytes(),
    )?;
    expect("ACTIVATE of an ACTIVE vector", Status::INVALID_STATE, s)?;
    let writes: Vec<&MemAccess> = log.iter().filter(|a| a.write).collect();
    ensure(
        writes.is_empty(),
        "ACTIVATE of an ACTIVE vector",
        "host writes to guest memory",
        "none",
        format!("{writes:?}"),
    )
}
