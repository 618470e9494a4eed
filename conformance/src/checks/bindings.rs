//! The register binding (VIR-REG-H-*) and the port-I/O doorbell binding (VIR-DB-H-*).

use vir_abi::call::{CallCode, DOORBELL_GPA_HI, DOORBELL_GPA_LO, PAGE_SIZE, encode_rax};
use vir_abi::discovery::binding;
use vir_abi::status::Status;
use vir_abi::wire::{DoorbellBlock, vm_state};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U32, U64};

use super::discover;
use crate::ctx::{Ctx, FILL, ensure, expect, expect_eq, negotiate_request};
use crate::hut::{Buffer, HypercallInsn, IoWidth, MemAccess, Regs, VmRef};
use crate::outcome::{CheckResult, Stop, harness};
use crate::registry::{Check, check};

/// The checks of this module.
pub const CHECKS: &[Check] = &[
    check!(
        ["VIR-REG-H-001"],
        "reg_rax_selects_vir_calls",
        "only RAX with bits 63:16 = 0x5649 is a vIR call (code in bits 15:0); other values leave vIR state and buffers alone",
        rax_selects
    ),
    check!(
        ["VIR-REG-H-002"],
        "reg_status_and_registers",
        "the status is zero-extended in RAX, every other register is preserved and RIP advances past the instruction",
        status_and_registers
    ),
    check!(
        ["VIR-REG-H-003"],
        "reg_user_mode_refused",
        "a vIR call at CPL 1, 2 or 3 returns UNKNOWN_CALL and does nothing",
        user_mode
    ),
    check!(
        ["VIR-REG-H-004"],
        "reg_offered_instructions_work",
        "every register binding the info leaf offers reaches the vIR implementation",
        offered_instructions
    ),
    check!(
        ["VIR-DB-H-001"],
        "db_every_vcpu",
        "a doorbell rung from every vCPU executes its call",
        every_vcpu
    ),
    check!(
        ["VIR-DB-H-002"],
        "db_latch_per_vcpu",
        "a GPA_LO write of one vCPU does not change another vCPU's latch",
        latch_per_vcpu
    ),
    check!(
        ["VIR-DB-H-003"],
        "db_ring_semantics",
        "GPA_HI rings with HI << 32 | latch, completes before the OUT returns, and the latch keeps its value",
        ring_semantics
    ),
    check!(
        ["VIR-DB-H-004"],
        "db_bad_block_ignored",
        "a block that is misaligned, crosses a page, is not RAM or is read-only is neither executed nor written",
        bad_block
    ),
    check!(
        ["VIR-DB-H-005"],
        "db_call_field_reserved_bits",
        "call bits 31:16 set give INVALID_PARAMETER before any other check, and the call is not executed",
        call_field
    ),
    check!(
        ["VIR-DB-H-005"],
        "db_block_read_once",
        "the host reads the doorbell block exactly once (guest-memory access log)",
        block_read_once
    ),
    check!(
        ["VIR-DB-H-006"],
        "db_buffers_outside_block",
        "a request or response buffer sharing a byte with the block returns BAD_BUFFER",
        buffers_outside_block
    ),
    check!(
        ["VIR-DB-H-007"],
        "db_only_status_written",
        "of the block, only the status field is written, with the call's status",
        only_status_written
    ),
    check!(
        ["VIR-DB-H-007"],
        "db_status_after_response",
        "the status is written after the response (guest-memory access log)",
        status_after_response
    ),
    check!(
        ["VIR-DB-H-008"],
        "db_other_accesses_ignored",
        "reads of the ports return all ones; other offsets and widths neither ring nor change the latch",
        other_accesses
    ),
    check!(
        ["VIR-DB-H-009"],
        "db_vm_reset_clears_latches",
        "a platform reset clears every vCPU's latch",
        vm_reset_clears
    ),
    check!(
        ["VIR-DB-H-009"],
        "db_reset_call_clears_latches",
        "a RESET call clears every vCPU's latch",
        reset_call_clears
    ),
];

const P: VmRef = VmRef::Primary;
/// Status value the guest presets in a block (VIR-DB-G-003).
const PRESET: u32 = 0xffff_ffff;
const BLOCK_LEN: usize = 32;

// ---- register binding ----

fn offered_insns(ctx: &mut Ctx<'_>) -> Result<Vec<HypercallInsn>, Stop> {
    let d = discover(ctx, P, 0)?;
    let mut v = Vec::new();
    if d.info.bindings & binding::VMCALL != 0 {
        v.push(HypercallInsn::Vmcall);
    }
    if d.info.bindings & binding::VMMCALL != 0 {
        v.push(HypercallInsn::Vmmcall);
    }
    if v.is_empty() {
        return Err(Stop::NotApplicable(
            "the host offers no register binding".into(),
        ));
    }
    Ok(v)
}

fn regs(rax: u64, rbx: u64, rcx: u64, rdx: u64, rsi: u64) -> Regs {
    Regs {
        rax,
        rbx,
        rcx,
        rdx,
        rsi,
        rdi: 0x1111_2222_3333_4444,
        rbp: 0x5555_6666_7777_8888,
        rsp: 0xffff_c900_0001_3f00,
        r8: 0x0808_0808_0808_0808,
        r9: 0x0909_0909_0909_0909,
        r10: 0x1010_1010_1010_1010,
        r11: 0x1111_1111_1111_1111,
        r12: 0x1212_1212_1212_1212,
        r13: 0x1313_1313_1313_1313,
        r14: 0x1414_1414_1414_1414,
        r15: 0x1515_1515_1515_1515,
        rip: 0xffff_ffff_8100_1000,
    }
}

fn hypercall(ctx: &mut Ctx<'_>, insn: HypercallInsn, cpl: u8, before: Regs) -> Result<Regs, Stop> {
    let mut r = before;
    ctx.host()
        .hypercall(P, 0, insn, cpl, &mut r)
        .map_err(|e| harness(&format!("{insn:?}"), e))?;
    Ok(r)
}

fn vm_state_of(ctx: &mut Ctx<'_>) -> Result<u8, Stop> {
    Ok(ctx.query(P)?.vm_state)
}

fn rax_selects(ctx: &mut Ctx<'_>) -> CheckResult {
    let insn = offered_insns(ctx)?[0];
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let offered = ctx.offered(P)?;
    ctx.write(P, req, negotiate_request(1, offered).as_bytes())?;
    let neg = encode_rax(CallCode::NEGOTIATE);
    for rax in [
        neg | 1 << 32,
        neg | 1 << 63,
        0x5648_0000 | 2,
        0x4649_0000 | 2,
        2,
        neg | 0xffff_0000_0000_0000,
    ] {
        ctx.fill(P, resp, 16, FILL)?;
        let after = hypercall(ctx, insn, 0, regs(rax, req, 16, resp, 16))?;
        let step = format!("{insn:?} with RAX {rax:#x} (NEGOTIATE buffers)");
        let r = ctx.read(P, resp, 16)?;
        ensure(
            r.iter().all(|&b| b == FILL),
            &step,
            "response buffer",
            "untouched",
            format!("{r:02x?}"),
        )?;
        ensure(
            after.rax != 0,
            &step,
            "RAX",
            "not SUCCESS (not a vIR call)",
            "0",
        )?;
        expect_eq(
            &step,
            "vm_state after the instruction",
            vm_state::LEGACY,
            vm_state_of(ctx)?,
        )?;
    }
    ctx.fill(P, resp, 16, FILL)?;
    let after = hypercall(ctx, insn, 0, regs(neg, req, 16, resp, 16))?;
    let step = format!("{insn:?} with RAX {neg:#x}");
    expect_eq(&step, "RAX", 0, after.rax)?;
    expect_eq(&step, "vm_state", vm_state::NEGOTIATED, vm_state_of(ctx)?)?;
    let after = hypercall(ctx, insn, 0, regs(encode_rax(CallCode::RESET), 0, 0, 0, 0))?;
    expect_eq(
        format!(
            "{insn:?} with RAX {:#x} (RESET)",
            encode_rax(CallCode::RESET)
        ),
        "RAX",
        0,
        after.rax,
    )?;
    expect_eq(
        "QUERY after RESET through the register binding",
        "vm_state",
        vm_state::LEGACY,
        vm_state_of(ctx)?,
    )
}

fn same_except_rax_rip(step: &str, before: &Regs, after: &Regs) -> CheckResult {
    let mut b = *before;
    b.rax = after.rax;
    b.rip = after.rip;
    expect_eq(step, "registers other than RAX and RIP", b, *after)?;
    expect_eq(
        step,
        "RIP",
        before.rip.wrapping_add(HypercallInsn::LEN),
        after.rip,
    )
}

fn status_and_registers(ctx: &mut Ctx<'_>) -> CheckResult {
    let resp = ctx.page(P, 1)?;
    for insn in offered_insns(ctx)? {
        let before = regs(encode_rax(CallCode::QUERY), 0, 0, resp, 40);
        let after = hypercall(ctx, insn, 0, before)?;
        let step = format!("QUERY through {insn:?}");
        expect_eq(&step, "RAX", 0u64, after.rax)?;
        same_except_rax_rip(&step, &before, &after)?;
        for (len, what) in [
            (8u64, "8"),
            (1 << 32, "2^32"),
            ((1 << 32) + 40, "2^32 + 40"),
        ] {
            let before = regs(encode_rax(CallCode::QUERY), 0, 0, resp, len);
            let after = hypercall(ctx, insn, 0, before)?;
            let step = format!("QUERY through {insn:?} with response length {what}");
            expect_eq(&step, "RAX", u64::from(Status::BAD_LENGTH.0), after.rax)?;
            same_except_rax_rip(&step, &before, &after)?;
        }
    }
    Ok(())
}

fn user_mode(ctx: &mut Ctx<'_>) -> CheckResult {
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let offered = ctx.offered(P)?;
    ctx.write(P, req, negotiate_request(1, offered).as_bytes())?;
    for insn in offered_insns(ctx)? {
        for cpl in [3u8, 1, 2] {
            ctx.fill(P, resp, 16, FILL)?;
            let after = hypercall(
                ctx,
                insn,
                cpl,
                regs(encode_rax(CallCode::NEGOTIATE), req, 16, resp, 16),
            )?;
            let step = format!("NEGOTIATE through {insn:?} at CPL {cpl}");
            let r = ctx.read(P, resp, 16)?;
            ensure(
                r.iter().all(|&b| b == FILL),
                &step,
                "response buffer",
                "untouched",
                format!("{r:02x?}"),
            )?;
            expect(&step, Status::UNKNOWN_CALL, Status(after.rax as u32))?;
            expect_eq(&step, "RAX bits 63:32", 0, after.rax >> 32)?;
            expect_eq(&step, "vm_state", vm_state::LEGACY, vm_state_of(ctx)?)?;
        }
    }
    let insn = offered_insns(ctx)?[0];
    let after = hypercall(
        ctx,
        insn,
        0,
        regs(encode_rax(CallCode::NEGOTIATE), req, 16, resp, 16),
    )?;
    expect_eq(
        format!("NEGOTIATE through {insn:?} at CPL 0"),
        "RAX",
        0,
        after.rax,
    )
}

fn offered_instructions(ctx: &mut Ctx<'_>) -> CheckResult {
    let resp = ctx.page(P, 1)?;
    let reference = ctx.query(P)?;
    for insn in offered_insns(ctx)? {
        ctx.fill(P, resp, 40, FILL)?;
        let after = hypercall(
            ctx,
            insn,
            0,
            regs(encode_rax(CallCode::QUERY), 0, 0, resp, 40),
        )?;
        let step = format!("QUERY through the offered {insn:?}");
        expect_eq(&step, "RAX", 0, after.rax)?;
        let r = ctx.read(P, resp, 40)?;
        expect_eq(&step, "response", reference.as_bytes(), r.as_slice())?;
    }
    Ok(())
}

// ---- doorbell ----

fn doorbell_port(ctx: &mut Ctx<'_>) -> Result<u16, Stop> {
    let d = discover(ctx, P, 0)?;
    if d.info.bindings & binding::PORT_DOORBELL == 0 {
        return Err(Stop::NotApplicable(
            "the host does not offer the doorbell binding".into(),
        ));
    }
    Ok(d.info.doorbell_port)
}

fn block(call: u32, req: Buffer, resp: Buffer) -> DoorbellBlock {
    DoorbellBlock {
        call: U32::new(call),
        status: U32::new(PRESET),
        request_gpa: U64::new(req.gpa),
        request_len: U32::new(req.len as u32),
        response_len: U32::new(resp.len as u32),
        response_gpa: U64::new(resp.gpa),
    }
}

/// A NEGOTIATE block at `at` with its request on page 0 and response on page 1.
fn negotiate_block(ctx: &mut Ctx<'_>, at: u64) -> Result<DoorbellBlock, Stop> {
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let offered = ctx.offered(P)?;
    ctx.write(P, req, negotiate_request(1, offered).as_bytes())?;
    let b = block(
        u32::from(CallCode::NEGOTIATE.0),
        Buffer::new(req, 16),
        Buffer::new(resp, 16),
    );
    ctx.write(P, at, b.as_bytes())?;
    Ok(b)
}

/// A QUERY block at `at` with its response at `resp`.
fn query_block(ctx: &mut Ctx<'_>, at: u64, resp: u64) -> Result<DoorbellBlock, Stop> {
    let b = block(
        u32::from(CallCode::QUERY.0),
        Buffer::NONE,
        Buffer::new(resp, 40),
    );
    ctx.write(P, at, b.as_bytes())?;
    ctx.fill(P, resp, 40, FILL)?;
    Ok(b)
}

fn out(ctx: &mut Ctx<'_>, vcpu: u32, port: u16, width: IoWidth, value: u32) -> CheckResult {
    ctx.host()
        .pio_write(P, vcpu, port, width, value)
        .map_err(|e| harness(&format!("OUT to port {port:#x}"), e))
}

fn latch(ctx: &mut Ctx<'_>, vcpu: u32, port: u16, gpa: u64) -> CheckResult {
    out(
        ctx,
        vcpu,
        port + DOORBELL_GPA_LO,
        IoWidth::Dword,
        gpa as u32,
    )
}

fn ring_hi(ctx: &mut Ctx<'_>, vcpu: u32, port: u16, hi: u32) -> CheckResult {
    out(ctx, vcpu, port + DOORBELL_GPA_HI, IoWidth::Dword, hi)
}

fn ring(ctx: &mut Ctx<'_>, vcpu: u32, port: u16, gpa: u64) -> CheckResult {
    latch(ctx, vcpu, port, gpa)?;
    ring_hi(ctx, vcpu, port, (gpa >> 32) as u32)
}

fn status_at(ctx: &mut Ctx<'_>, at: u64) -> Result<u32, Stop> {
    let b = ctx.read(P, at + 4, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn block_page(ctx: &Ctx<'_>) -> Result<u64, Stop> {
    ctx.page(P, 2)
}

fn every_vcpu(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    let resp = ctx.page(P, 1)?;
    let reference = ctx.query(P)?;
    let n = ctx.vm(P)?.vcpus.len() as u32;
    for vcpu in 0..n {
        query_block(ctx, at, resp)?;
        ring(ctx, vcpu, port, at)?;
        let step = format!("QUERY through the doorbell from vCPU {vcpu}");
        expect(&step, Status::SUCCESS, Status(status_at(ctx, at)?))?;
        let r = ctx.read(P, resp, 40)?;
        expect_eq(&step, "response", reference.as_bytes(), r.as_slice())?;
    }
    Ok(())
}

fn latch_per_vcpu(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    if ctx.vm(P)?.vcpus.len() < 2 {
        return Err(Stop::NotTestable("the primary VM has one vCPU".into()));
    }
    let a = block_page(ctx)?;
    let b = a + 0x100;
    let resp_b = ctx.page(P, 1)? + 0x100;
    negotiate_block(ctx, a)?;
    query_block(ctx, b, resp_b)?;
    latch(ctx, 0, port, a)?;
    latch(ctx, 1, port, b)?;
    ring_hi(ctx, 0, port, 0)?;
    let step = "vCPU 0 latched block A, vCPU 1 latched block B, vCPU 0 rang";
    expect(step, Status::SUCCESS, Status(status_at(ctx, a)?))?;
    expect_eq(step, "block B status", PRESET, status_at(ctx, b)?)?;
    expect_eq(
        step,
        "vm_state (block A is a NEGOTIATE)",
        vm_state::NEGOTIATED,
        vm_state_of(ctx)?,
    )?;
    ring_hi(ctx, 1, port, 0)?;
    expect(
        "then vCPU 1 rang",
        Status::SUCCESS,
        Status(status_at(ctx, b)?),
    )
}

fn ring_semantics(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    let resp = ctx.page(P, 1)?;
    query_block(ctx, at, resp)?;
    latch(ctx, 0, port, at)?;
    // GPA bits 63:32 come from the GPA_HI value: 2^52 and up is beyond any guest.
    ring_hi(ctx, 0, port, 0x0010_0000)?;
    let step = "a ring with GPA_HI 0x100000 (block at 2^52 + the latch)";
    expect_eq(
        step,
        "status of the block at the latched low half",
        PRESET,
        status_at(ctx, at)?,
    )?;
    let r = ctx.read(P, resp, 40)?;
    ensure(
        r.iter().all(|&b| b == FILL),
        step,
        "response buffer",
        "untouched",
        "written",
    )?;
    // The latch kept its value: a ring with GPA_HI 0 reaches the block, synchronously.
    ring_hi(ctx, 0, port, 0)?;
    expect(
        "a ring with GPA_HI 0 after the first ring",
        Status::SUCCESS,
        Status(status_at(ctx, at)?),
    )?;
    // And again, without a new GPA_LO write.
    query_block(ctx, at, resp)?;
    ring_hi(ctx, 0, port, 0)?;
    expect(
        "a second ring without a new GPA_LO write",
        Status::SUCCESS,
        Status(status_at(ctx, at)?),
    )
}

fn bad_block(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let page = block_page(ctx)?;
    let fx = ctx.vm(P)?.clone();
    let mut cases: Vec<(String, u64, bool)> = vec![
        ("a block at a GPA 4 mod 8".into(), page + 0x104, true),
        (
            "a block crossing a page".into(),
            page + PAGE_SIZE - 24,
            true,
        ),
        ("a block at GPA 2^52".into(), 1 << 52, false),
    ];
    if let Some(h) = fx.unbacked_gpa {
        cases.push((format!("a block in a hole at {h:#x}"), h, false));
    }
    if let Some(rom) = fx.readonly_gpa {
        cases.push((
            format!("a block in read-only memory at {rom:#x}"),
            rom,
            true,
        ));
    }
    for (step, at, in_ram) in cases {
        let mut before = None;
        if in_ram {
            negotiate_block(ctx, at)?;
            before = Some(ctx.read(P, at, BLOCK_LEN)?);
        } else {
            negotiate_block(ctx, page)?;
        }
        ring(ctx, 0, port, at)?;
        expect_eq(
            format!("ringing {step}"),
            "vm_state (the block is a NEGOTIATE)",
            vm_state::LEGACY,
            vm_state_of(ctx)?,
        )?;
        if let Some(before) = before {
            let after = ctx.read(P, at, BLOCK_LEN)?;
            expect_eq(format!("ringing {step}"), "block bytes", before, after)?;
        }
    }
    if fx.unbacked_gpa.is_none() || fx.readonly_gpa.is_none() {
        return Err(Stop::NotTestable(
            "the fixture names no unbacked GPA or no read-only page".into(),
        ));
    }
    Ok(())
}

fn call_field(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    let cases = [
        (
            "NEGOTIATE with call bit 16 set",
            (1u32 << 16) | 2,
            Buffer::new(req, 16),
            Buffer::new(resp, 16),
        ),
        (
            "NEGOTIATE with call bit 31 set",
            (1u32 << 31) | 2,
            Buffer::new(req, 16),
            Buffer::new(resp, 16),
        ),
        (
            "unknown code 0x20 with call bits 31:16 set and bad lengths",
            0xffff_0020,
            Buffer::new(req, 3),
            Buffer::new(resp + 1, 5),
        ),
        (
            "QUERY with call bit 20 set and a misaligned response",
            (1 << 20) | 1,
            Buffer::NONE,
            Buffer::new(resp + 4, 40),
        ),
    ];
    for (step, call, rq, rs) in cases {
        negotiate_block(ctx, at)?;
        let b = block(call, rq, rs);
        ctx.write(P, at, b.as_bytes())?;
        ring(ctx, 0, port, at)?;
        let step = format!("doorbell {step}");
        expect(
            &step,
            Status::INVALID_PARAMETER,
            Status(status_at(ctx, at)?),
        )?;
        expect_eq(&step, "vm_state", vm_state::LEGACY, vm_state_of(ctx)?)?;
    }
    negotiate_block(ctx, at)?;
    ring(ctx, 0, port, at)?;
    expect(
        "doorbell NEGOTIATE with call bits 31:16 clear",
        Status::SUCCESS,
        Status(status_at(ctx, at)?),
    )
}

fn block_read_once(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    let resp = ctx.page(P, 1)?;
    query_block(ctx, at, resp)?;
    ctx.host()
        .start_access_log(P)
        .map_err(|e| harness("starting the access log", e))?;
    ring(ctx, 0, port, at)?;
    let log = ctx
        .host()
        .take_access_log(P)
        .map_err(|e| harness("reading the access log", e))?;
    expect(
        "QUERY through the doorbell",
        Status::SUCCESS,
        Status(status_at(ctx, at)?),
    )?;
    let reads = log
        .iter()
        .filter(|a| !a.write && a.touches(at, BLOCK_LEN as u64))
        .count();
    ensure(
        reads == 1,
        "QUERY through the doorbell",
        "host reads of the block",
        "1",
        reads.to_string(),
    )
}

fn buffers_outside_block(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    let req = ctx.page(P, 0)?;
    let resp = ctx.page(P, 1)?;
    negotiate_block(ctx, at)?;
    let cases = [
        (
            "NEGOTIATE with its request inside the block",
            CallCode::NEGOTIATE,
            Buffer::new(at + 8, 16),
            Buffer::new(resp, 16),
        ),
        (
            "NEGOTIATE with its response on the block's last 8 bytes",
            CallCode::NEGOTIATE,
            Buffer::new(req, 16),
            Buffer::new(at + 24, 16),
        ),
        (
            "QUERY with its response over the block",
            CallCode::QUERY,
            Buffer::NONE,
            Buffer::new(at, 40),
        ),
    ];
    for (step, code, rq, rs) in cases {
        let b = block(u32::from(code.0), rq, rs);
        ctx.write(P, at, b.as_bytes())?;
        ring(ctx, 0, port, at)?;
        let step = format!("doorbell {step}");
        expect(&step, Status::BAD_BUFFER, Status(status_at(ctx, at)?))?;
        expect_eq(&step, "vm_state", vm_state::LEGACY, vm_state_of(ctx)?)?;
    }
    let b = block(
        u32::from(CallCode::NEGOTIATE.0),
        Buffer::new(req, 16),
        Buffer::new(at + 32, 16),
    );
    ctx.write(P, at, b.as_bytes())?;
    ring(ctx, 0, port, at)?;
    expect(
        "doorbell NEGOTIATE with its response right after the block",
        Status::SUCCESS,
        Status(status_at(ctx, at)?),
    )
}

fn only_status_written(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    let resp = ctx.page(P, 1)?;
    for (step, len, status) in [
        ("QUERY through the doorbell", 40u32, Status::SUCCESS),
        (
            "QUERY through the doorbell with response length 8",
            8,
            Status::BAD_LENGTH,
        ),
    ] {
        let mut b = query_block(ctx, at, resp)?;
        b.response_len = U32::new(len);
        ctx.write(P, at, b.as_bytes())?;
        ring(ctx, 0, port, at)?;
        b.status = U32::new(status.0);
        let after = ctx.read(P, at, BLOCK_LEN)?;
        expect_eq(
            step,
            "block bytes (only status may change)",
            b.as_bytes(),
            after.as_slice(),
        )?;
    }
    Ok(())
}

fn status_after_response(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    let resp = ctx.page(P, 1)?;
    query_block(ctx, at, resp)?;
    latch(ctx, 0, port, at)?;
    ctx.host()
        .start_access_log(P)
        .map_err(|e| harness("starting the access log", e))?;
    ring_hi(ctx, 0, port, 0)?;
    let log = ctx
        .host()
        .take_access_log(P)
        .map_err(|e| harness("reading the access log", e))?;
    let step = "QUERY through the doorbell";
    expect(step, Status::SUCCESS, Status(status_at(ctx, at)?))?;
    let resp_write = log.iter().position(|a| a.write && a.touches(resp, 40));
    let status_write = log.iter().rposition(|a| a.write && a.touches(at + 4, 4));
    let block_writes: Vec<&MemAccess> = log
        .iter()
        .filter(|a| a.write && a.touches(at, BLOCK_LEN as u64) && !(a.gpa == at + 4 && a.len == 4))
        .collect();
    ensure(
        block_writes.is_empty(),
        step,
        "writes to the block other than status",
        "none",
        format!("{block_writes:?}"),
    )?;
    ensure(
        resp_write.is_some() && status_write > resp_write,
        step,
        "order of the writes",
        "response, then status",
        format!("{log:?}"),
    )
}

fn other_accesses(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    for off in 0..8u16 {
        for width in [IoWidth::Byte, IoWidth::Word, IoWidth::Dword] {
            let v = ctx
                .host()
                .pio_read(P, 0, port + off, width)
                .map_err(|e| harness("IN from a doorbell port", e))?;
            expect_eq(
                format!("IN {width:?} from port base+{off}"),
                "value",
                width.all_ones(),
                v,
            )?;
        }
    }
    negotiate_block(ctx, at)?;
    let before = ctx.read(P, at, BLOCK_LEN)?;
    latch(ctx, 0, port, at)?;
    let junk = [
        (DOORBELL_GPA_HI, IoWidth::Word, 0u32),
        (DOORBELL_GPA_HI, IoWidth::Byte, 0),
        (DOORBELL_GPA_LO, IoWidth::Word, 0x1230),
        (DOORBELL_GPA_LO, IoWidth::Byte, 0x40),
        (1, IoWidth::Dword, 0),
        (2, IoWidth::Dword, 0),
        (3, IoWidth::Dword, 0),
        (5, IoWidth::Dword, 0),
        (6, IoWidth::Dword, 0),
        (7, IoWidth::Dword, 0),
    ];
    for (off, width, value) in junk {
        out(ctx, 0, port + off, width, value)?;
        let step = format!("OUT {width:?} {value:#x} to port base+{off}");
        expect_eq(
            &step,
            "vm_state (the latched block is a NEGOTIATE)",
            vm_state::LEGACY,
            vm_state_of(ctx)?,
        )?;
        expect_eq(
            &step,
            "block bytes",
            before.as_slice(),
            ctx.read(P, at, BLOCK_LEN)?.as_slice(),
        )?;
    }
    // The latch still holds the block's GPA.
    ring_hi(ctx, 0, port, 0)?;
    expect(
        "a ring after the ignored accesses",
        Status::SUCCESS,
        Status(status_at(ctx, at)?),
    )
}

fn vm_reset_clears(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    let n = ctx.vm(P)?.vcpus.len() as u32;
    for vcpu in 0..n {
        latch(ctx, vcpu, port, at)?;
    }
    ctx.negotiate_all(P)?;
    ctx.reset_vm(P)?;
    negotiate_block(ctx, at)?;
    for vcpu in 0..n {
        ring_hi(ctx, vcpu, port, 0)?;
        let step =
            format!("a ring from vCPU {vcpu} after a platform reset, without a new GPA_LO write");
        expect_eq(
            &step,
            "status of the block latched before the reset",
            PRESET,
            status_at(ctx, at)?,
        )?;
        expect_eq(&step, "vm_state", vm_state::LEGACY, vm_state_of(ctx)?)?;
    }
    Ok(())
}

fn reset_call_clears(ctx: &mut Ctx<'_>) -> CheckResult {
    let port = doorbell_port(ctx)?;
    let at = block_page(ctx)?;
    let n = ctx.vm(P)?.vcpus.len() as u32;
    ctx.negotiate_all(P)?;
    for vcpu in 0..n {
        latch(ctx, vcpu, port, at)?;
    }
    expect("RESET", Status::SUCCESS, ctx.reset(P)?)?;
    negotiate_block(ctx, at)?;
    for vcpu in 0..n {
        ring_hi(ctx, vcpu, port, 0)?;
        let step =
            format!("a ring from vCPU {vcpu} after a RESET call, without a new GPA_LO write");
        expect_eq(
            &step,
            "status of the block latched before the reset",
            PRESET,
            status_at(ctx, at)?,
        )?;
        expect_eq(&step, "vm_state", vm_state::LEGACY, vm_state_of(ctx)?)?;
    }
    Ok(())
}
