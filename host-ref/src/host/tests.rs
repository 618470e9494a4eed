//! The bindings and the host-level entry points: common steps 1–4, read-once, register and
//! doorbell bindings, discovery, platform reset, counters, VM management.

use vir_abi::call::{CallCode, DOORBELL_GPA_HI, DOORBELL_GPA_LO, encode_rax};
use vir_abi::discovery::{InfoLeaf, binding, signature_regs};
use vir_abi::feature::Features;
use vir_abi::status::Status;
use vir_abi::wire::{DoorbellBlock, QueryResponse, StorageKind, call_layout};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::config::Quotas;
use crate::fixture::*;
use crate::testing::{
    CountingMemory, MockIrteTable, MockPhysicalIrqs, MockRouting, RESPONSE_FILL, allocate_request,
    guest_ram, mock_state,
};
use crate::vm::VmState;

/// Write a wire structure into guest memory.
trait WriteWire {
    fn write_slice_of<T: IntoBytes + zerocopy::Immutable>(
        &self,
        v: T,
        at: GuestAddress,
    ) -> Result<(), vm_memory::GuestMemoryError>;
}

impl<M: vm_memory::GuestMemory> WriteWire for M {
    fn write_slice_of<T: IntoBytes + zerocopy::Immutable>(
        &self,
        v: T,
        at: GuestAddress,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        self.write_slice(v.as_bytes(), at)
    }
}

const REQ: u64 = 0x1000;
const RESP: u64 = 0x2000;
const BLOCK: u64 = 0x3000;

fn lens(code: CallCode) -> (u64, u64) {
    let l = call_layout(code).unwrap();
    (u64::from(l.request_len()), u64::from(l.response_len()))
}

/// Call through the memory binding with explicit buffers and check the status and that
/// nothing changed (host, backends, response bytes).
#[track_caller]
fn fails_raw(fx: &mut Fx, code: CallCode, req: (u64, u64), resp: (u64, u64), expect: Status) {
    if resp.1 != 0 && resp.1 <= 64 && resp.0 == RESP {
        fx.mem
            .write_slice(&[RESPONSE_FILL; 64], GuestAddress(RESP))
            .unwrap();
    }
    let before = fx.state();
    let s = fx
        .host
        .handle_call(fx.vm, &fx.mem, code, req.0, req.1, resp.0, resp.1)
        .unwrap();
    assert_eq!(s, expect, "{code:?} req {req:x?} resp {resp:x?}");
    assert_eq!(fx.state(), before);
    let mut after = [0u8; 64];
    fx.mem.read_slice(&mut after, GuestAddress(RESP)).unwrap();
    if resp.0 == RESP {
        assert!(
            after.iter().all(|&b| b == RESPONSE_FILL),
            "response written"
        );
    }
}

#[test]
fn vir_call_h_002_codes_outside_v1_are_unknown_before_any_other_check() {
    let mut fx = Fx::negotiated();
    for code in [
        0u16, 0x4, 0xf, 0x16, 0x20, 0x7f, 0x80, 0x7fff, 0x8000, 0xffff,
    ] {
        // Garbage lengths and buffers: step 1 comes first.
        fails_raw(
            &mut fx,
            CallCode(code),
            (0x1001, 3),
            (u64::MAX, 1 << 40),
            Status::UNKNOWN_CALL,
        );
    }
    assert_eq!(fx.host.counters().unknown_calls(), 10);
}

#[test]
fn vir_mem_h_001_lengths_must_equal_the_calls_sizes() {
    let mut fx = Fx::negotiated();
    for &code in CallCode::V1 {
        let (rq, rs) = lens(code);
        let req_gpa = if rq == 0 { 0 } else { REQ };
        let resp_gpa = if rs == 0 { 0 } else { RESP };
        for (ql, sl) in [
            (rq + 8, rs),
            (rq, rs + 8),
            (rq.wrapping_sub(8), rs),
            (rq, rs.wrapping_sub(1)),
            (u64::MAX, rs),
            (rq, 1 << 32),
        ] {
            // A misaligned GPA too: the length check (step 2) comes before the buffer checks.
            fails_raw(
                &mut fx,
                code,
                (req_gpa | 1, ql),
                (resp_gpa, sl),
                Status::BAD_LENGTH,
            );
        }
    }
}

#[test]
fn vir_mem_h_002_to_006_buffer_rules_through_the_core() {
    let mut fx = Fx::negotiated();
    let (q, s) = lens(CallCode::ALLOCATE); // 16, 8
    let qresp = lens(CallCode::QUERY).1;
    // H-002: zero length with a GPA.
    fails_raw(
        &mut fx,
        CallCode::QUERY,
        (REQ, 0),
        (RESP, qresp),
        Status::BAD_BUFFER,
    );
    fails_raw(
        &mut fx,
        CallCode::RESET,
        (0, 0),
        (RESP, 0),
        Status::BAD_BUFFER,
    );
    // H-003: alignment, request then response.
    fails_raw(
        &mut fx,
        CallCode::ALLOCATE,
        (REQ + 4, q),
        (RESP, s),
        Status::BAD_BUFFER,
    );
    fails_raw(
        &mut fx,
        CallCode::ALLOCATE,
        (REQ, q),
        (RESP + 1, s),
        Status::BAD_BUFFER,
    );
    // H-004: page crossing.
    fails_raw(
        &mut fx,
        CallCode::ALLOCATE,
        (0x1ff8, q),
        (RESP, s),
        Status::BAD_BUFFER,
    );
    fails_raw(
        &mut fx,
        CallCode::QUERY,
        (0, 0),
        (0x2fe0, qresp),
        Status::BAD_BUFFER,
    );
    // H-005: overlap.
    fails_raw(
        &mut fx,
        CallCode::ALLOCATE,
        (REQ, q),
        (REQ + 8, s),
        Status::BAD_BUFFER,
    );
    fails_raw(
        &mut fx,
        CallCode::ALLOCATE,
        (REQ, q),
        (REQ, s),
        Status::BAD_BUFFER,
    );
    // H-006: not RAM (guest RAM ends at 4 MiB).
    fails_raw(
        &mut fx,
        CallCode::ALLOCATE,
        (0x40_0000, q),
        (RESP, s),
        Status::BAD_BUFFER,
    );
    fails_raw(
        &mut fx,
        CallCode::ALLOCATE,
        (REQ, q),
        (0xffff_ffff_ffff_f000, s),
        Status::BAD_BUFFER,
    );
    // Step 3 comes before step 5: a legacy VM gets BAD_BUFFER, not NOT_NEGOTIATED.
    let mut legacy = Fx::legacy();
    fails_raw(
        &mut legacy,
        CallCode::ALLOCATE,
        (REQ + 4, q),
        (RESP, s),
        Status::BAD_BUFFER,
    );
    fails_raw(
        &mut legacy,
        CallCode::ALLOCATE,
        (REQ, q),
        (RESP, s),
        Status::NOT_NEGOTIATED,
    );
}

#[test]
fn vir_mem_h_007_008_request_read_once_response_written_once_after_success() {
    let mut fx = Fx::negotiated();
    let mem = CountingMemory::new(guest_ram(0x10000));
    let req = allocate_request(DEV, StorageKind::MSIX, 0, 2);
    mem.write_slice(req.as_bytes(), GuestAddress(REQ)).unwrap();
    mem.clear();
    let s = fx
        .host
        .handle_call(fx.vm, &mem, CallCode::ALLOCATE, REQ, 16, RESP, 8)
        .unwrap();
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(mem.reads_of(REQ, 16), 1, "exactly one read of the request");
    assert_eq!(
        mem.writes_to(RESP, 8),
        1,
        "exactly one write of the response"
    );
    assert_eq!(mem.accesses().len(), 2, "{:?}", mem.accesses());
    // A failing call reads the request once and writes nothing (VIR-CALL-H-007).
    mem.clear();
    let s = fx
        .host
        .handle_call(fx.vm, &mem, CallCode::ALLOCATE, REQ, 16, RESP, 8)
        .unwrap();
    assert_eq!(s, Status::INDEX_IN_USE);
    assert_eq!(
        (
            mem.reads_of(REQ, 16),
            mem.writes_to(RESP, 8),
            mem.accesses().len()
        ),
        (1, 0, 1)
    );
    // A buffer failure reads nothing at all.
    mem.clear();
    let s = fx
        .host
        .handle_call(fx.vm, &mem, CallCode::ALLOCATE, REQ, 16, REQ + 8, 8)
        .unwrap();
    assert_eq!(s, Status::BAD_BUFFER);
    assert_eq!(mem.accesses(), vec![]);
    // A call without a request reads nothing.
    mem.clear();
    let s = fx
        .host
        .handle_call(fx.vm, &mem, CallCode::QUERY, 0, 0, RESP, 40)
        .unwrap();
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(mem.accesses().len(), 1);
    assert_eq!(mem.writes_to(RESP, 40), 1);
}

#[test]
fn vir_disc_h_001_002_cpuid_leaves_only_with_host_ir_and_cfi_blocked() {
    let fx = Fx::legacy();
    let base = HostConfig::DEFAULT_CPUID_BASE;
    let [eax, ebx, ecx, edx] = fx.host.cpuid(fx.vm, base).unwrap().unwrap();
    assert_eq!([ebx, ecx, edx], signature_regs());
    assert!(vir_abi::discovery::is_vir_base(eax, ebx, ecx, edx, base));
    assert_eq!(eax, base + 1);
    let [a, b, c, d] = fx.host.cpuid(fx.vm, base + 1).unwrap().unwrap();
    let info = InfoLeaf::decode(a, b, c, d).unwrap();
    assert_eq!(
        info,
        InfoLeaf {
            min_version: 1,
            max_version: 1,
            bindings: binding::VMCALL | binding::PORT_DOORBELL,
            doorbell_port: 0x5650
        }
    );
    assert_eq!(fx.host.cpuid(fx.vm, base + 2).unwrap(), None);
    assert_eq!(fx.host.cpuid(fx.vm, 0x4000_0000).unwrap(), None);
    for (ir, cfi_blocked) in [(false, true), (true, false), (false, false)] {
        let config = HostConfig {
            physical_ir_enabled: ir,
            compat_format_blocked: cfi_blocked,
            ..HostConfig::default()
        };
        let mut fx = Fx::with(config, 256, Quotas::default());
        assert_eq!(fx.host.cpuid(fx.vm, base).unwrap(), None);
        assert_eq!(fx.host.cpuid(fx.vm, base + 1).unwrap(), None);
        assert!(!fx.host.vir_available());
        // The interface does not exist: every call is UNKNOWN_CALL, the bindings claim nothing.
        fails_raw(
            &mut fx,
            CallCode::QUERY,
            (0, 0),
            (RESP, 40),
            Status::UNKNOWN_CALL,
        );
        let mut regs = X86Regs {
            rax: encode_rax(CallCode::QUERY),
            ..X86Regs::default()
        };
        assert_eq!(fx.host.vmcall(fx.vm, 0, &mut regs, &fx.mem), Ok(false));
        assert_eq!(
            fx.host.pio_write(fx.vm, 0, 0x5654, 0, &fx.mem),
            Ok(PioOutcome::NotClaimed)
        );
    }
    // Another base, VMMCALL and no doorbell.
    let config = HostConfig {
        cpuid_base: 0x4000_0200,
        register_bindings: binding::VMMCALL,
        doorbell_port: None,
        ..HostConfig::default()
    };
    let fx = Fx::with(config, 256, Quotas::default());
    assert_eq!(fx.host.cpuid(fx.vm, base).unwrap(), None);
    let [a, b, c, d] = fx.host.cpuid(fx.vm, 0x4000_0201).unwrap().unwrap();
    assert_eq!(
        InfoLeaf::decode(a, b, c, d).map(|i| (i.bindings, i.doorbell_port)),
        Ok((binding::VMMCALL, 0))
    );
}

// ---------------------------------------------------------------------------------------------
// Register binding
// ---------------------------------------------------------------------------------------------

#[test]
fn register_binding_performs_the_call_and_preserves_other_registers() {
    let mut fx = Fx::legacy();
    let mut regs = X86Regs {
        rax: encode_rax(CallCode::QUERY),
        rbx: 0,
        rcx: 0,
        rdx: RESP,
        rsi: 40,
        rdi: 0xdead,
    };
    assert_eq!(fx.host.vmcall(fx.vm, 3, &mut regs, &fx.mem), Ok(true));
    assert_eq!(
        regs,
        X86Regs {
            rax: 0,
            rbx: 0,
            rcx: 0,
            rdx: RESP,
            rsi: 40,
            rdi: 0xdead
        }
    );
    let mut raw = [0u8; 40];
    fx.mem.read_slice(&mut raw, GuestAddress(RESP)).unwrap();
    let q = QueryResponse::read_from_bytes(&raw).unwrap();
    assert_eq!(q.max_version.get(), 1);
    // A status other than success is zero-extended into RAX.
    let mut regs = X86Regs {
        rax: encode_rax(CallCode::FREE),
        rbx: REQ,
        rcx: 8,
        ..X86Regs::default()
    };
    assert_eq!(fx.host.vmcall(fx.vm, 0, &mut regs, &fx.mem), Ok(true));
    assert_eq!(regs.rax, u64::from(Status::NOT_NEGOTIATED.0));
    // RCX above 32 bits is a bad length, not a truncation.
    let mut regs = X86Regs {
        rax: encode_rax(CallCode::FREE),
        rbx: REQ,
        rcx: (1 << 32) | 8,
        ..X86Regs::default()
    };
    assert_eq!(fx.host.vmcall(fx.vm, 0, &mut regs, &fx.mem), Ok(true));
    assert_eq!(regs.rax, u64::from(Status::BAD_LENGTH.0));
    // A vIR-range code version 1 does not define.
    let mut regs = X86Regs {
        rax: encode_rax(CallCode(0x20)),
        ..X86Regs::default()
    };
    assert_eq!(fx.host.vmcall(fx.vm, 0, &mut regs, &fx.mem), Ok(true));
    assert_eq!(regs.rax, u64::from(Status::UNKNOWN_CALL.0));
    assert_eq!(fx.host.counters().by_binding(Binding::Register), 4);
}

#[test]
fn register_binding_leaves_other_hypercalls_alone() {
    let mut fx = Fx::legacy();
    for rax in [1u64, 0x5649_0000 | 1 << 32, 0x5648_ffff, 0] {
        let mut regs = X86Regs {
            rax,
            rbx: 1,
            rcx: 2,
            rdx: 3,
            rsi: 4,
            rdi: 5,
        };
        let copy = regs;
        assert_eq!(fx.host.vmcall(fx.vm, 0, &mut regs, &fx.mem), Ok(false));
        assert_eq!(regs, copy);
    }
    assert_eq!(fx.host.counters().total_calls(), 0);
    let mut regs = X86Regs {
        rax: encode_rax(CallCode::QUERY),
        ..X86Regs::default()
    };
    assert_eq!(
        fx.host.vmcall(fx.vm, 4, &mut regs, &fx.mem),
        Err(HostError::UnknownVcpu {
            vm: fx.vm,
            vcpu_index: 4
        })
    );
    assert_eq!(
        fx.host.vmcall(VmId(9), 0, &mut regs, &fx.mem),
        Err(HostError::UnknownVm(VmId(9)))
    );
}

// ---------------------------------------------------------------------------------------------
// Doorbell binding
// ---------------------------------------------------------------------------------------------

const PORT: u16 = HostConfig::DEFAULT_DOORBELL_PORT;

fn block(call: u32, req: (u64, u32), resp: (u64, u32)) -> DoorbellBlock {
    DoorbellBlock {
        call: U32::new(call),
        status: U32::new(0xffff_ffff),
        request_gpa: U64::new(req.0),
        request_len: U32::new(req.1),
        response_len: U32::new(resp.1),
        response_gpa: U64::new(resp.0),
    }
}

fn status_in_block(mem: &GuestMemoryMmap<()>, gpa: u64) -> u32 {
    mem.read_obj::<u32>(GuestAddress(gpa + 4)).unwrap()
}

fn ring<M: vm_memory::GuestMemory>(fx: &mut Fx, vcpu: u32, gpa: u64, mem: &M) -> PioOutcome {
    assert_eq!(
        fx.host
            .pio_write(fx.vm, vcpu, PORT + DOORBELL_GPA_LO, gpa as u32, mem),
        Ok(PioOutcome::Latched)
    );
    fx.host
        .pio_write(fx.vm, vcpu, PORT + DOORBELL_GPA_HI, (gpa >> 32) as u32, mem)
        .unwrap()
}

#[test]
fn doorbell_performs_the_call_and_writes_the_status_back() {
    let mut fx = Fx::legacy();
    let mem = fx.mem.clone();
    let b = block(u32::from(CallCode::QUERY.0), (0, 0), (RESP, 40));
    fx.mem.write_slice_of(b, GuestAddress(BLOCK)).unwrap();
    assert_eq!(
        ring(&mut fx, 1, BLOCK, &mem),
        PioOutcome::Completed(Status::SUCCESS)
    );
    assert_eq!(status_in_block(&fx.mem, BLOCK), 0);
    let mut raw = [0u8; 40];
    fx.mem.read_slice(&mut raw, GuestAddress(RESP)).unwrap();
    let q = QueryResponse::read_from_bytes(&raw).unwrap();
    assert_eq!(q.vm_state, vir_abi::wire::vm_state::LEGACY);
    // A failing call: status written, response untouched.
    let b = block(u32::from(CallCode::QUERY_QUOTA.0), (0, 0), (RESP, 16));
    fx.mem.write_slice_of(b, GuestAddress(BLOCK)).unwrap();
    fx.mem
        .write_slice(&[RESPONSE_FILL; 16], GuestAddress(RESP))
        .unwrap();
    assert_eq!(
        ring(&mut fx, 1, BLOCK, &mem),
        PioOutcome::Completed(Status::NOT_NEGOTIATED)
    );
    assert_eq!(status_in_block(&fx.mem, BLOCK), Status::NOT_NEGOTIATED.0);
    let mut r = [0u8; 16];
    fx.mem.read_slice(&mut r, GuestAddress(RESP)).unwrap();
    assert_eq!(r, [RESPONSE_FILL; 16]);
    assert_eq!(fx.host.counters().by_binding(Binding::Doorbell), 2);
}

#[test]
fn doorbell_reserved_call_bits_are_invalid_parameter() {
    let mut fx = Fx::legacy();
    let mem = fx.mem.clone();
    let b = block(
        0x0001_0000 | u32::from(CallCode::QUERY.0),
        (0, 0),
        (RESP, 40),
    );
    fx.mem.write_slice_of(b, GuestAddress(BLOCK)).unwrap();
    fx.mem
        .write_slice(&[RESPONSE_FILL; 40], GuestAddress(RESP))
        .unwrap();
    let before = fx.state();
    assert_eq!(
        ring(&mut fx, 0, BLOCK, &mem),
        PioOutcome::Completed(Status::INVALID_PARAMETER)
    );
    assert_eq!(status_in_block(&fx.mem, BLOCK), Status::INVALID_PARAMETER.0);
    assert_eq!(fx.state(), before);
    let mut r = [0u8; 40];
    fx.mem.read_slice(&mut r, GuestAddress(RESP)).unwrap();
    assert_eq!(r, [RESPONSE_FILL; 40]);
    assert_eq!(fx.host.counters().statuses(Status::INVALID_PARAMETER), 1);
}

#[test]
fn doorbell_bad_blocks_are_ignored_and_counted() {
    let mut fx = Fx::legacy();
    let mem = fx.mem.clone();
    assert_eq!(
        ring(&mut fx, 0, BLOCK + 4, &mem),
        PioOutcome::Ignored(DoorbellIgnored::Misaligned(BLOCK + 4))
    );
    assert_eq!(
        ring(&mut fx, 0, BLOCK + 0xfe8, &mem),
        PioOutcome::Ignored(DoorbellIgnored::CrossesPage(BLOCK + 0xfe8))
    );
    assert_eq!(
        ring(&mut fx, 0, 0x40_0000, &mem),
        PioOutcome::Ignored(DoorbellIgnored::Unbacked(0x40_0000))
    );
    let high = 0x1_0000_3000;
    assert_eq!(
        ring(&mut fx, 0, high, &mem),
        PioOutcome::Ignored(DoorbellIgnored::Unbacked(high))
    );
    for off in [1u16, 2, 3, 5, 6, 7] {
        assert_eq!(
            fx.host.pio_write(fx.vm, 0, PORT + off, 0, &mem),
            Ok(PioOutcome::Ignored(DoorbellIgnored::BadPortOffset(off)))
        );
    }
    assert_eq!(fx.host.counters().doorbell_ignored(), 10);
    assert_eq!(fx.host.counters().total_calls(), 0);
    for port in [PORT - 1, PORT + 8, 0x80, 0xcf8] {
        assert_eq!(
            fx.host.pio_write(fx.vm, 0, port, 0, &mem),
            Ok(PioOutcome::NotClaimed)
        );
    }
}

#[test]
fn doorbell_latch_is_per_vcpu() {
    let mut fx = Fx::legacy();
    let mem = fx.mem.clone();
    let b = block(u32::from(CallCode::QUERY.0), (0, 0), (RESP, 40));
    mem.write_slice_of(b, GuestAddress(BLOCK)).unwrap();
    assert_eq!(
        fx.host.pio_write(fx.vm, 0, PORT, BLOCK as u32, &mem),
        Ok(PioOutcome::Latched)
    );
    assert_eq!(
        fx.host.pio_write(fx.vm, 1, PORT, 0x5004, &mem),
        Ok(PioOutcome::Latched)
    );
    assert_eq!(
        fx.host.pio_write(fx.vm, 0, PORT + 4, 0, &mem),
        Ok(PioOutcome::Completed(Status::SUCCESS))
    );
    assert_eq!(
        fx.host.pio_write(fx.vm, 1, PORT + 4, 0, &mem),
        Ok(PioOutcome::Ignored(DoorbellIgnored::Misaligned(0x5004)))
    );
    // A platform reset clears the latches.
    fx.host.reset_vm(fx.vm).unwrap();
    // vCPU 0 now rings at GPA 0 (zeroed RAM: call code 0), not at its old block.
    assert_eq!(
        fx.host.pio_write(fx.vm, 0, PORT + 4, 0, &mem),
        Ok(PioOutcome::Completed(Status::UNKNOWN_CALL))
    );
}

#[test]
fn doorbell_buffers_must_not_overlap_the_block_and_are_read_once() {
    let mut fx = Fx::negotiated();
    let mem = CountingMemory::new(fx.mem.clone());
    let req = allocate_request(DEV, StorageKind::MSIX, 0, 0);
    // Request inside the block's page right after it: fine; overlapping the block: BAD_BUFFER.
    mem.write_slice(req.as_bytes(), GuestAddress(BLOCK + 0x20))
        .unwrap();
    mem.write_slice_of(
        block(
            u32::from(CallCode::ALLOCATE.0),
            (BLOCK + 0x18, 16),
            (RESP, 8),
        ),
        GuestAddress(BLOCK),
    )
    .unwrap();
    let before = fx.state();
    assert_eq!(
        ring(&mut fx, 0, BLOCK, &mem),
        PioOutcome::Completed(Status::BAD_BUFFER)
    );
    assert_eq!(fx.state(), before);
    mem.write_slice_of(
        block(
            u32::from(CallCode::ALLOCATE.0),
            (BLOCK + 0x20, 16),
            (BLOCK, 8),
        ),
        GuestAddress(BLOCK),
    )
    .unwrap();
    assert_eq!(
        ring(&mut fx, 0, BLOCK, &mem),
        PioOutcome::Completed(Status::BAD_BUFFER)
    );
    mem.write_slice_of(
        block(
            u32::from(CallCode::ALLOCATE.0),
            (BLOCK + 0x20, 16),
            (RESP, 8),
        ),
        GuestAddress(BLOCK),
    )
    .unwrap();
    mem.clear();
    assert_eq!(
        ring(&mut fx, 0, BLOCK, &mem),
        PioOutcome::Completed(Status::SUCCESS)
    );
    assert_eq!(mem.reads_of(BLOCK, 32), 1, "block read once");
    assert_eq!(mem.reads_of(BLOCK + 0x20, 16), 1, "request read once");
    assert_eq!(mem.writes_to(RESP, 8), 1);
    assert_eq!(mem.writes_to(BLOCK + 4, 4), 1, "status written once");
    assert_eq!(mem.accesses().len(), 4);
    assert_eq!(fx.host.vm(fx.vm).unwrap().irtes_used(), 1);
}

#[test]
fn doorbell_absent_when_not_configured() {
    let config = HostConfig {
        doorbell_port: None,
        ..HostConfig::default()
    };
    let mut fx = Fx::with(config, 16, Quotas::default());
    let mem = fx.mem.clone();
    assert_eq!(
        fx.host.pio_write(fx.vm, 0, PORT, 0, &mem),
        Ok(PioOutcome::NotClaimed)
    );
    assert_eq!(
        fx.host.pio_write(fx.vm, 9, PORT, 0, &mem),
        Err(HostError::UnknownVcpu {
            vm: fx.vm,
            vcpu_index: 9
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Platform reset, VM management, counters
// ---------------------------------------------------------------------------------------------

#[test]
fn vir_rst_h_001_platform_reset_frees_everything_and_disables_legacy_interrupts() {
    let mut fx = Fx::negotiated();
    let h = fx.active_msix(1);
    let b = fx.alloc(DEV, StorageKind::MSI, 3, 0);
    fx.g.activate(&mut fx.host, &fx.mem, b, 5, 0x100, 0x60)
        .unwrap();
    fx.g.reserve(&mut fx.host, &fx.mem, b, 6).unwrap();
    fx.host.set_legacy_interrupts_enabled(fx.vm, 2).unwrap();
    fx.host.reset_vm(fx.vm).unwrap();
    let vm = fx.host.vm(fx.vm).unwrap();
    assert_eq!(vm.state(), VmState::Legacy);
    assert_eq!(
        (
            vm.irtes_used(),
            vm.vectors_used(),
            vm.legacy_interrupts_enabled(),
            vm.session()
        ),
        (0, 0, 0, 1)
    );
    assert!(fx.host.table().entries().iter().all(|&e| e == 0));
    assert!(fx.host.irqs().irqs().is_empty());
    assert!(fx.host.routing().routes().is_empty());
    assert_eq!(fx.host.table_free(), 256);
    fx.negotiate(Features::V1_DEFINED);
    assert_eq!(fx.host.vm(fx.vm).unwrap().session(), 2);
    for handle in [h, b] {
        assert_eq!(
            fx.g.free(&mut fx.host, &fx.mem, handle),
            Err(Status::INVALID_HANDLE)
        );
    }
}

#[test]
fn remove_vm_releases_its_entries_and_keeps_its_counters() {
    let mut fx = Fx::negotiated();
    fx.active_msix(0);
    let vm = fx.vm;
    fx.host.remove_vm(vm).unwrap();
    assert_eq!(fx.host.table_free(), 256);
    assert!(fx.host.irqs().irqs().is_empty());
    assert_eq!(fx.host.vm(vm).map(|v| v.id()), None);
    assert_eq!(fx.host.counters().calls(CallCode::ACTIVATE), 1);
    assert_eq!(fx.host.remove_vm(vm), Err(HostError::UnknownVm(vm)));
    assert_eq!(
        fx.host.snapshot(vm).map(|s| s.session),
        Err(HostError::UnknownVm(vm))
    );
    assert_eq!(
        fx.host.cpuid(vm, 0x4000_0100),
        Err(HostError::UnknownVm(vm))
    );
    assert_eq!(
        fx.host
            .handle_call(vm, &fx.mem, CallCode::QUERY, 0, 0, RESP, 40),
        Err(HostError::UnknownVm(vm))
    );
    // The requester ids are free for a new VM now.
    let id = fx.host.add_vm(vm_config(Quotas::default())).unwrap();
    assert_ne!(id, vm);
}

#[test]
fn requester_ids_are_assigned_to_one_vm_only() {
    let mut fx = Fx::legacy();
    let mut other = vm_config(Quotas::default());
    other.devices.truncate(1);
    assert_eq!(
        fx.host.add_vm(other.clone()),
        Err(ConfigError::RequesterIdInUse(RID))
    );
    other.devices[0].requester_id = 0x1234;
    assert_eq!(
        fx.host.add_vm(other).map(|v| v.0),
        Ok(1),
        "same guest-visible id in another VM is fine"
    );
}

#[test]
fn host_rejects_bad_table_sizes() {
    for size in [0u32, 0x1_0001] {
        let r = Host::new(
            HostConfig::default(),
            MockIrteTable::new(size),
            MockRouting::new(),
            MockPhysicalIrqs::new(1, 1),
        );
        assert_eq!(
            r.map(|h| h.table_free()).err(),
            Some(ConfigError::TableSize(size))
        );
    }
    let r = Host::new(
        HostConfig::default(),
        MockIrteTable::new(0x1_0000),
        MockRouting::new(),
        MockPhysicalIrqs::new(1, 1),
    );
    assert_eq!(r.map(|h| h.table_free()).ok(), Some(0x1_0000));
    let bad = HostConfig {
        max_msi_log2: 9,
        ..HostConfig::default()
    };
    let r = Host::new(
        bad,
        MockIrteTable::new(8),
        MockRouting::new(),
        MockPhysicalIrqs::new(1, 1),
    );
    assert_eq!(
        r.map(|h| h.table_free()).err(),
        Some(ConfigError::MaxMsiLog2(9))
    );
}

#[test]
fn counters_per_code_status_and_vm() {
    let mut fx = Fx::legacy();
    let second = {
        let mut c = vm_config(Quotas::default());
        c.devices.clear();
        fx.host.add_vm(c).unwrap()
    };
    fx.g.query(&mut fx.host, &fx.mem).unwrap();
    fx.negotiate(Features::V1_DEFINED);
    assert_eq!(
        fx.g.free(&mut fx.host, &fx.mem, 7),
        Err(Status::INVALID_HANDLE)
    );
    crate::testing::Caller::new(second)
        .query(&mut fx.host, &fx.mem)
        .unwrap();
    let vm = fx.host.vm(fx.vm).unwrap().counters().clone();
    assert_eq!(
        (
            vm.calls(CallCode::QUERY),
            vm.calls(CallCode::NEGOTIATE),
            vm.calls(CallCode::FREE)
        ),
        (1, 1, 1)
    );
    assert_eq!(
        (
            vm.statuses(Status::SUCCESS),
            vm.statuses(Status::INVALID_HANDLE)
        ),
        (2, 1)
    );
    let all = fx.host.counters();
    assert_eq!(
        (
            all.calls(CallCode::QUERY),
            all.total_calls(),
            all.by_binding(Binding::Memory)
        ),
        (2, 4, 4)
    );
    assert_eq!(mock_state(&fx.host).irtes.len(), 256);
}
