//! The `host_calls` body: the reference host handling arbitrary sequences of raw calls from two
//! VMs, through all three bindings, with the invariants checked after every step.
//!
//! An input is a [`WorldConfig`] followed by up to [`MAX_STEPS`] steps ([`Step`]). Steps mix
//! well-formed calls (whose handles are picked among the live, stale and foreign ones, so that
//! sequences get deep) with raw ones (any code, GPA, length, register value, port or doorbell
//! block), backend failure injection, platform resets and the legacy hook. After each step:
//!
//! * the status is one that version 1 names and that the call may return (VIR-STA-H-001/002);
//! * a call that failed changed nothing: both VMs' snapshots, the backends and every byte of
//!   guest memory are as before, except the doorbell block's status field (VIR-CALL-H-006/007,
//!   VIR-DB-H-007);
//! * a call that succeeded changed the other VM not at all (VIR-SEC-H-004/010) and wrote only its
//!   response buffer (VIR-MEM-H-008) with zero reserved fields (VIR-CALL-H-008); an ACTIVATE
//!   returned the allocation's VT-d message, the same at every activation (VIR-ACT-H-008/009,
//!   VIR-FMT-H-001/002); QUERY_QUOTA matched the VM's holdings (VIR-QUO-H-001); ALLOCATE never
//!   reissued a handle (VIR-ALC-H-010);
//! * [`check_host`] holds.

use std::collections::{BTreeMap, BTreeSet};

use core::fmt;

use vir_abi::call::{Binding, CallCode, DOORBELL_GPA_HI, DOORBELL_GPA_LO, encode_rax};
use vir_abi::feature::Features;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::RemappableMsi;
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse, DeactivateRequest,
    DoorbellBlock, FreeRequest, MessageFormat, NegotiateRequest, NegotiateResponse, QueryResponse,
    QuotaResponse, SetAffinityRequest, Target, activate_flags, call_layout, vm_state,
};
use vir_host::testing::{MockState, mock_state};
use vir_host::{
    BackendError, BackendOp, HostConfig, PioOutcome, VmId, VmSnapshot, VmState, X86Regs,
};
use vm_memory::{Bytes, GuestAddress, GuestMemory};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::input::{Encoder, Input};
use crate::invariants::{InvariantViolation, check_host};
use crate::world::{
    APIC_IDS, DEV_ABSENT, DEV_BRIDGED, DEV_MAIN, RAM_HIGH_END, RAM_HIGH_START, RAM_LOW_END, World,
    WorldConfig,
};

/// Most steps one input runs.
pub const MAX_STEPS: usize = 96;

/// Where well-formed calls put their request.
pub const REQUEST_GPA: u64 = 0x1000;
/// Where well-formed calls put their response.
pub const RESPONSE_GPA: u64 = 0x2000;
/// Where well-formed doorbell calls put their block.
pub const BLOCK_GPA: u64 = 0x3000;

/// How a call reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// [`vir_host::Host::handle_call`].
    Memory,
    /// [`vir_host::Host::vmcall`].
    Register,
    /// [`vir_host::Host::pio_write`] with a doorbell block.
    Doorbell,
}

/// What a host step found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFinding {
    /// A status version 1 does not name, or one the call may not return (VIR-STA-H-001/002).
    StatusNotAllowed {
        /// The call.
        code: CallCode,
        /// The binding.
        via: Via,
        /// The status.
        status: Status,
    },
    /// A failed call (or an ignored ring, or a non-vIR exit: status `None`) changed a VM's
    /// host state (VIR-CALL-H-006).
    FailureChangedState {
        /// The call.
        code: CallCode,
        /// The status (`None`: nothing was executed).
        status: Option<Status>,
        /// The VM whose snapshot changed.
        vm: VmId,
    },
    /// A failed call (or a step that executed nothing) changed the backends (VIR-CALL-H-006,
    /// VIR-ACT-H-007).
    FailureChangedBackends {
        /// The call.
        code: CallCode,
        /// The status (`None`: nothing was executed).
        status: Option<Status>,
    },
    /// A failed call wrote guest memory (VIR-CALL-H-007, VIR-DB-H-007).
    FailureWroteMemory {
        /// The call.
        code: CallCode,
        /// The status (`None`: nothing was executed).
        status: Option<Status>,
        /// The first GPA written.
        gpa: u64,
    },
    /// A call changed the other VM's state or memory (VIR-SEC-H-004, VIR-SEC-H-010).
    OtherVmChanged {
        /// The call.
        code: CallCode,
        /// The VM that changed.
        vm: VmId,
    },
    /// A successful call wrote guest memory outside its response buffer (VIR-MEM-H-008).
    WroteOutsideResponse {
        /// The call.
        code: CallCode,
        /// The first GPA written.
        gpa: u64,
    },
    /// A response's reserved field is not zero (VIR-CALL-H-008).
    ResponseReservedNonZero {
        /// The call.
        code: CallCode,
    },
    /// An ACTIVATE response is not the allocation's VT-d remappable message (VIR-ACT-H-008,
    /// VIR-FMT-H-001, VIR-FMT-H-002).
    WrongMessage {
        /// The VM.
        vm: VmId,
        /// The handle.
        handle: u32,
        /// The message returned.
        message: MsiMessage,
    },
    /// An allocation's message changed during its life (VIR-ACT-H-009, VIR-AFF-H-005).
    MessageChanged {
        /// The VM.
        vm: VmId,
        /// The handle.
        handle: u32,
        /// First message issued.
        first: MsiMessage,
        /// The later, different one.
        later: MsiMessage,
    },
    /// A handle was issued twice (VIR-ALC-H-010) or is 0.
    HandleReissued {
        /// The VM.
        vm: VmId,
        /// The handle.
        handle: u32,
    },
    /// A QUERY or QUERY_QUOTA response disagrees with the VM's state (VIR-QRY-H-004,
    /// VIR-QUO-H-001/002).
    QueryMismatch {
        /// The call.
        code: CallCode,
        /// The VM.
        vm: VmId,
    },
    /// The register binding changed a register other than RAX, or returned a RAX with bits
    /// 63:32 set, or touched the registers of a non-vIR exit (VIR-REG-H-001/002).
    RegistersClobbered {
        /// RAX after the exit.
        rax: u64,
    },
    /// A broken invariant of the host state after the step.
    Invariant(InvariantViolation),
}

impl fmt::Display for HostFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for HostFinding {}

impl From<InvariantViolation> for HostFinding {
    fn from(v: InvariantViolation) -> Self {
        HostFinding::Invariant(v)
    }
}

/// What a `host_calls` run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallsReport {
    /// Steps run.
    pub steps: u32,
    /// Calls the host executed, by status.
    pub statuses: BTreeMap<Status, u32>,
    /// Doorbell rings ignored, port writes not claimed and non-vIR register exits.
    pub not_executed: u32,
}

/// Whether the reference host may return `status` for `code` through `via` (VIR-STA-H-002):
/// the specification's table ([`CallCode::may_return`] in `vir-abi`, the one place the per-call
/// statuses are kept) without BUSY — version 1 hosts that never meet a transient condition never
/// return BUSY (VIR-CALL-H-010), and the reference host does not, so here BUSY is a finding.
pub fn status_allowed(code: CallCode, via: Via, status: Status) -> bool {
    let binding = match via {
        Via::Memory | Via::Register => Binding::Register,
        Via::Doorbell => Binding::Doorbell,
    };
    status != Status::BUSY && code.may_return(status, binding)
}

/// A guest buffer as passed to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Buf {
    /// GPA.
    pub gpa: u64,
    /// Length.
    pub len: u64,
}

/// One call as the harness makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCall {
    /// Calling VM (0 or 1).
    pub vm: usize,
    /// Calling vCPU index (2 is not a vCPU).
    pub vcpu: u32,
    /// Binding.
    pub via: Via,
    /// The code as the binding carries it: RAX for the register binding, the block's `call`
    /// field for the doorbell, the code for the memory binding.
    pub code: u64,
    /// Request buffer.
    pub req: Buf,
    /// Response buffer.
    pub resp: Buf,
    /// Bytes placed at the request GPA before the call (when it lies in RAM).
    pub request: Vec<u8>,
    /// The doorbell block's GPA.
    pub block_gpa: u64,
}

impl RawCall {
    /// The call code this call names.
    pub fn call_code(&self) -> CallCode {
        CallCode(self.code as u16)
    }
}

/// One step of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A call (well-formed or raw).
    Call(RawCall),
    /// A register exit with arbitrary registers.
    Registers {
        /// VM.
        vm: usize,
        /// vCPU index.
        vcpu: u32,
        /// Registers.
        regs: X86Regs,
    },
    /// One port write.
    Port {
        /// VM.
        vm: usize,
        /// vCPU index.
        vcpu: u32,
        /// Port.
        port: u16,
        /// Value.
        value: u32,
    },
    /// Make the next `n` calls of a backend operation fail.
    Fault {
        /// The operation.
        op: BackendOp,
        /// How many.
        n: u32,
        /// The error.
        error: BackendError,
    },
    /// Platform reset of a VM (VIR-RST-H-005).
    PlatformReset {
        /// VM.
        vm: usize,
    },
    /// The legacy trap code reports enabled legacy interrupts (VIR-NEG-H-004).
    Legacy {
        /// VM.
        vm: usize,
        /// Count.
        count: u32,
    },
}

/// Handles a VM has seen, for picking handle values.
#[derive(Debug, Clone, Default)]
pub struct Handles {
    /// Every handle ALLOCATE returned, per VM.
    pub issued: [BTreeSet<u32>; 2],
}

fn live_handles(w: &World, vm: usize) -> Vec<u32> {
    w.host
        .vm(w.vm(vm))
        .map(|v| v.allocations().map(|(h, _)| h).collect())
        .unwrap_or_default()
}

/// A handle value chosen by `sel`: mostly live, sometimes stale, another VM's, or junk.
pub fn pick_handle(w: &World, h: &Handles, vm: usize, sel: u8, junk: u32) -> u32 {
    let live = live_handles(w, vm);
    let stale: Vec<u32> = h.issued[vm % 2]
        .iter()
        .copied()
        .filter(|x| !live.contains(x))
        .collect();
    let foreign = live_handles(w, vm + 1);
    match sel {
        0..=199 if !live.is_empty() => live[usize::from(sel) % live.len()],
        200..=219 if !stale.is_empty() => stale[usize::from(sel) % stale.len()],
        220..=239 if !foreign.is_empty() => foreign[usize::from(sel) % foreign.len()],
        _ => junk,
    }
}

/// Interesting GPAs: aligned, misaligned, page-crossing, in the hole, outside RAM, at the top.
pub const GPAS: [u64; 15] = [
    0,
    REQUEST_GPA,
    REQUEST_GPA + 8,
    0x1ff8,
    0x1ffc,
    RESPONSE_GPA,
    RESPONSE_GPA + 0x10,
    0x3ff0,
    RAM_LOW_END,
    RAM_HIGH_START - 8,
    RAM_HIGH_START,
    RAM_HIGH_END - 8,
    RAM_HIGH_END,
    u64::MAX - 7,
    0x1004,
];

/// Interesting lengths.
pub const LENS: [u64; 11] = [0, 8, 16, 24, 32, 40, 64, 65, 4096, 1 << 32, u64::MAX];

fn gpa(input: &mut Input<'_>) -> u64 {
    let sel = input.u8();
    match GPAS.get(usize::from(sel & 0x1f)) {
        Some(&g) => g,
        None if sel & 0x1f == 31 => input.u64(),
        None => GPAS[usize::from(sel) % GPAS.len()],
    }
}

fn len(input: &mut Input<'_>) -> u64 {
    let sel = input.u8();
    match LENS.get(usize::from(sel & 0xf)) {
        Some(&l) => l,
        None if sel & 0xf == 15 => input.u64(),
        None => LENS[usize::from(sel) % LENS.len()],
    }
}

/// A target for `vm`: mostly its own vCPUs and good vectors, sometimes another VM's vCPU, an
/// unknown APIC id or a vector below 0x10.
fn target(input: &mut Input<'_>, vm: usize) -> Target {
    let sel = input.u8();
    let vector = input.u8();
    let apic = match sel % 8 {
        0..=2 => APIC_IDS[vm % 2][0],
        3..=5 => APIC_IDS[vm % 2][1],
        6 => APIC_IDS[(vm + 1) % 2][usize::from(sel >> 7)],
        _ => u32::from(sel) << 20 | 0x7,
    };
    let vector = if sel & 0x40 == 0 {
        0x20 | (vector & 0x3f)
    } else {
        vector
    };
    Target::new(apic, vector)
}

fn device(sel: u8) -> u32 {
    match sel % 8 {
        0..=5 => DEV_MAIN,
        6 => DEV_BRIDGED,
        _ => DEV_ABSENT,
    }
}

/// The request bytes of a well-formed call of `code` from VM `vm`, fields read from `input`.
fn well_formed_request(
    w: &World,
    h: &Handles,
    input: &mut Input<'_>,
    vm: usize,
    code: CallCode,
) -> Vec<u8> {
    match code {
        CallCode::NEGOTIATE => {
            let sel = input.u8();
            let features = match sel % 4 {
                0 | 1 => Features::V1_DEFINED.bits(),
                2 => u64::from(input.u8()) & Features::V1_DEFINED.bits(),
                _ => input.u64(),
            };
            let version = if sel & 0x80 == 0 { 1 } else { input.u16() };
            NegotiateRequest {
                version: U16::new(version),
                reserved0: U16::ZERO,
                reserved1: U32::ZERO,
                features: U64::new(features),
            }
            .as_bytes()
            .to_vec()
        }
        CallCode::ALLOCATE => {
            let sel = input.u8();
            let kind = match sel % 8 {
                k @ 0..=3 => k + 1,
                4 => 2,
                5 => 3,
                6 => 1,
                _ => input.u8(),
            };
            let log2 = if kind == 1 { input.u8() % 7 } else { 0 };
            let index = if kind == 1 {
                0
            } else {
                u32::from(input.u8() % 20)
            };
            AllocateRequest {
                device_id: U32::new(device(sel >> 3)),
                kind,
                log2_count: log2,
                reserved0: U16::ZERO,
                index: U32::new(index),
                reserved1: U32::ZERO,
            }
            .as_bytes()
            .to_vec()
        }
        CallCode::ACTIVATE => {
            let sel = input.u8();
            let junk = input.u32();
            let handle = pick_handle(w, h, vm, sel, junk);
            let sub = u16::from(input.u8() % 10);
            let flags = match input.u8() % 8 {
                0..=4 => 0,
                5 | 6 => activate_flags::RESERVE,
                _ => input.u16(),
            };
            ActivateRequest {
                handle: U32::new(handle),
                subhandle: U16::new(sub),
                flags: U16::new(flags),
                target: target(input, vm),
            }
            .as_bytes()
            .to_vec()
        }
        CallCode::SET_AFFINITY => {
            let sel = input.u8();
            let junk = input.u32();
            SetAffinityRequest {
                handle: U32::new(pick_handle(w, h, vm, sel, junk)),
                subhandle: U16::new(u16::from(input.u8() % 10)),
                reserved0: U16::ZERO,
                target: target(input, vm),
            }
            .as_bytes()
            .to_vec()
        }
        CallCode::DEACTIVATE => {
            let sel = input.u8();
            let junk = input.u32();
            DeactivateRequest {
                handle: U32::new(pick_handle(w, h, vm, sel, junk)),
                subhandle: U16::new(u16::from(input.u8() % 10)),
                reserved0: U16::ZERO,
            }
            .as_bytes()
            .to_vec()
        }
        CallCode::FREE => {
            let sel = input.u8();
            let junk = input.u32();
            FreeRequest {
                handle: U32::new(pick_handle(w, h, vm, sel, junk)),
                reserved0: U32::ZERO,
            }
            .as_bytes()
            .to_vec()
        }
        _ => Vec::new(),
    }
}

fn via(sel: u8) -> Via {
    match sel % 4 {
        0 | 1 => Via::Memory,
        2 => Via::Register,
        _ => Via::Doorbell,
    }
}

/// Read a well-formed call of VM `vm` (standard buffers, request fields from `input`, now and
/// then one corrupted byte).
pub fn read_well_formed_call(w: &World, h: &Handles, input: &mut Input<'_>, vm: usize) -> RawCall {
    let code = CallCode::V1[usize::from(input.u8()) % CallCode::V1.len()];
    let via = via(input.u8());
    let mut request = well_formed_request(w, h, input, vm, code);
    // Now and then one byte of the request is corrupted (reserved fields, flags).
    let corrupt = input.u8();
    if corrupt < 24 && !request.is_empty() {
        let at = usize::from(corrupt) % request.len();
        request[at] ^= input.u8() | 1;
    }
    let layout = call_layout(code);
    let req_len = layout.map_or(0, |l| u64::from(l.request_len()));
    let resp_len = layout.map_or(0, |l| u64::from(l.response_len()));
    let code_field = match via {
        Via::Register => encode_rax(code),
        _ => u64::from(code.0),
    };
    RawCall {
        vm,
        vcpu: u32::from(input.u8() & 1),
        via,
        code: code_field,
        req: Buf {
            gpa: if req_len == 0 { 0 } else { REQUEST_GPA },
            len: req_len,
        },
        resp: Buf {
            gpa: if resp_len == 0 { 0 } else { RESPONSE_GPA },
            len: resp_len,
        },
        request,
        block_gpa: BLOCK_GPA,
    }
}

/// Read a raw call of VM `vm`: any code, GPAs and lengths from [`GPAS`] and [`LENS`] (or raw),
/// 64 request bytes, a doorbell block GPA and a vCPU index (2 names no vCPU).
pub fn read_raw_call(input: &mut Input<'_>, vm: usize) -> RawCall {
    let via = via(input.u8());
    let raw_code = input.u32();
    let code = match via {
        Via::Register if raw_code & 0x8000_0000 == 0 => encode_rax(CallCode(raw_code as u16)),
        Via::Register => input.u64(),
        Via::Doorbell if raw_code & 0x8000_0000 == 0 => u64::from(raw_code & 0xffff),
        _ => u64::from(raw_code),
    };
    let req = Buf {
        gpa: gpa(input),
        len: len(input),
    };
    let resp = Buf {
        gpa: gpa(input),
        len: len(input),
    };
    let request = input.array::<64>().to_vec();
    let block_gpa = if input.bool() { BLOCK_GPA } else { gpa(input) };
    RawCall {
        vm,
        vcpu: u32::from(input.u8() % 3),
        via,
        code,
        req,
        resp,
        request,
        block_gpa,
    }
}

/// Read one step.
pub fn read_step(w: &World, h: &Handles, input: &mut Input<'_>) -> Step {
    let tag = input.u8();
    let vm = usize::from(tag >> 7);
    match tag % 16 {
        // Well-formed calls: most of the input goes here.
        0..=8 => Step::Call(read_well_formed_call(w, h, input, vm)),
        // Raw calls: any code, any buffers.
        9..=11 => Step::Call(read_raw_call(input, vm)),
        12 => Step::Registers {
            vm,
            vcpu: u32::from(input.u8() % 3),
            regs: X86Regs {
                rax: input.u64(),
                rbx: input.u64(),
                rcx: input.u64(),
                rdx: input.u64(),
                rsi: input.u64(),
                rdi: input.u64(),
            },
        },
        13 => {
            let off = input.u8();
            let port = if off < 0xf0 {
                HostConfig::DEFAULT_DOORBELL_PORT.wrapping_add(u16::from(off % 10))
            } else {
                input.u16()
            };
            Step::Port {
                vm,
                vcpu: u32::from(input.u8() % 3),
                port,
                value: input.u32(),
            }
        }
        14 => {
            let op = BackendOp::ALL[input.below(BackendOp::ALL.len())];
            let n = u32::from(input.u8() % 3) + 1;
            let error = match input.u8() % 3 {
                0 => BackendError::VectorsExhausted { cpu: 0 },
                1 => BackendError::Os { op, errno: 5 },
                _ => BackendError::RoutesExhausted { capacity: 1 },
            };
            Step::Fault { op, n, error }
        }
        _ => {
            if input.bool() {
                Step::PlatformReset { vm }
            } else {
                Step::Legacy {
                    vm,
                    count: u32::from(input.u8() % 2),
                }
            }
        }
    }
}

/// Everything a step may change, captured before it.
struct Before {
    snaps: [VmSnapshot; 2],
    mock: MockState,
    mem: [Vec<u8>; 2],
}

/// Copy of a VM's guest RAM (both ranges, low first).
pub fn ram_image<M: GuestMemory + ?Sized>(mem: &M) -> Vec<u8> {
    let mut out = vec![0u8; (RAM_LOW_END + RAM_HIGH_END - RAM_HIGH_START) as usize];
    let (lo, hi) = out.split_at_mut(RAM_LOW_END as usize);
    // Both ranges are RAM by construction of the world; a failure leaves zeros, which the
    // comparison then reports.
    let _ = mem.read_slice(lo, GuestAddress(0));
    let _ = mem.read_slice(hi, GuestAddress(RAM_HIGH_START));
    out
}

fn offset_to_gpa(offset: usize) -> u64 {
    let o = offset as u64;
    if o < RAM_LOW_END {
        o
    } else {
        o - RAM_LOW_END + RAM_HIGH_START
    }
}

/// The first GPA where `a` and `b` differ outside the `allowed` ranges.
pub fn first_difference(a: &[u8], b: &[u8], allowed: &[Buf]) -> Option<u64> {
    if a == b {
        return None;
    }
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| offset_to_gpa(i))
        .find(|&g| {
            !allowed.iter().any(|r| {
                u128::from(g) >= u128::from(r.gpa)
                    && u128::from(g) < u128::from(r.gpa) + u128::from(r.len)
            })
        })
}

fn capture(w: &World) -> Before {
    let snap = |i: usize| {
        w.host
            .snapshot(w.vm(i))
            .unwrap_or_else(|e| panic!("fuzz world VM {i} vanished: {e}"))
    };
    Before {
        snaps: [snap(0), snap(1)],
        mock: mock_state(&w.host),
        mem: [ram_image(&w.mems[0]), ram_image(&w.mems[1])],
    }
}

/// The outcome of one call step as the host reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The host executed the call with this status.
    Executed(Status),
    /// The host did not execute anything (ignored ring, unclaimed port, non-vIR exit, unknown
    /// vCPU).
    NotExecuted,
}

/// Place a call's request and doorbell block in guest memory (the guest's writes, made before
/// the host is involved).
pub fn prepare_call<M: GuestMemory + ?Sized>(c: &RawCall, mem: &M) {
    if c.req.len != 0 && !c.request.is_empty() {
        let n = c
            .request
            .len()
            .min(usize::try_from(c.req.len).unwrap_or(usize::MAX));
        let _ = mem.write_slice(&c.request[..n], GuestAddress(c.req.gpa));
    }
    if c.via == Via::Doorbell {
        let _ = mem.write_slice(c.block().as_bytes(), GuestAddress(c.block_gpa));
    }
}

impl RawCall {
    /// The doorbell block this call rings with (the status field preset to all ones,
    /// VIR-DB-G-003).
    pub fn block(&self) -> DoorbellBlock {
        DoorbellBlock {
            call: U32::new(self.code as u32),
            status: U32::new(0xffff_ffff),
            request_gpa: U64::new(self.req.gpa),
            request_len: U32::new(self.req.len as u32),
            response_len: U32::new(self.resp.len as u32),
            response_gpa: U64::new(self.resp.gpa),
        }
    }
}

/// Make the call (after [`prepare_call`]): the host reads everything from `mem`.
pub fn perform_call<M: GuestMemory + ?Sized>(
    w: &mut World,
    c: &RawCall,
    mem: &M,
) -> Result<CallOutcome, HostFinding> {
    let vm = w.vm(c.vm);
    match c.via {
        Via::Memory => Ok(
            match w.host.handle_call(
                vm,
                mem,
                c.call_code(),
                c.req.gpa,
                c.req.len,
                c.resp.gpa,
                c.resp.len,
            ) {
                Ok(s) => CallOutcome::Executed(s),
                Err(_) => CallOutcome::NotExecuted,
            },
        ),
        Via::Register => {
            let mut regs = X86Regs {
                rax: c.code,
                rbx: c.req.gpa,
                rcx: c.req.len,
                rdx: c.resp.gpa,
                rsi: c.resp.len,
                rdi: 0x5a5a_5a5a,
            };
            let before = regs;
            match w.host.vmcall(vm, c.vcpu, &mut regs, mem) {
                Ok(true) => {
                    // VIR-REG-H-002: status zero-extended, every other register preserved.
                    if regs.rax >> 32 != 0
                        || (X86Regs {
                            rax: before.rax,
                            ..regs
                        }) != before
                    {
                        return Err(HostFinding::RegistersClobbered { rax: regs.rax });
                    }
                    Ok(CallOutcome::Executed(Status(regs.rax as u32)))
                }
                Ok(false) => {
                    if regs != before {
                        return Err(HostFinding::RegistersClobbered { rax: regs.rax });
                    }
                    Ok(CallOutcome::NotExecuted)
                }
                Err(_) => Ok(CallOutcome::NotExecuted),
            }
        }
        Via::Doorbell => {
            let port = HostConfig::DEFAULT_DOORBELL_PORT;
            let lo = w
                .host
                .pio_write(vm, c.vcpu, port + DOORBELL_GPA_LO, c.block_gpa as u32, mem);
            if lo != Ok(PioOutcome::Latched) {
                return Ok(CallOutcome::NotExecuted);
            }
            Ok(
                match w.host.pio_write(
                    vm,
                    c.vcpu,
                    port + DOORBELL_GPA_HI,
                    (c.block_gpa >> 32) as u32,
                    mem,
                ) {
                    Ok(PioOutcome::Completed(s)) => CallOutcome::Executed(s),
                    _ => CallOutcome::NotExecuted,
                },
            )
        }
    }
}

/// The buffers a call step may write on success (response, doorbell status) and on failure
/// (doorbell status only).
fn writable(c: &RawCall, outcome: CallOutcome) -> (Vec<Buf>, Vec<Buf>) {
    let status_field = Buf {
        gpa: c.block_gpa.wrapping_add(4),
        len: 4,
    };
    let doorbell_ran = c.via == Via::Doorbell && matches!(outcome, CallOutcome::Executed(_));
    let mut fail = Vec::new();
    if doorbell_ran {
        fail.push(status_field);
    }
    let mut ok = fail.clone();
    ok.push(c.resp);
    (ok, fail)
}

/// State tracked across steps: handles issued and messages returned.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Handles issued.
    pub handles: Handles,
    /// The message each (VM, handle) got at its first activation.
    pub messages: BTreeMap<(usize, u32), MsiMessage>,
}

fn check_success(
    w: &World,
    t: &mut Tracker,
    c: &RawCall,
    mem_req: &[u8],
    mem_resp: &[u8],
) -> Result<(), HostFinding> {
    let vm_id = w.vm(c.vm);
    let code = c.call_code();
    let Some(vm) = w.host.vm(vm_id) else {
        return Ok(());
    };
    let reserved_bad = HostFinding::ResponseReservedNonZero { code };
    match code {
        CallCode::QUERY => {
            let q = QueryResponse::read_from_bytes(mem_resp).map_err(|_| reserved_bad)?;
            if q.reserved0 != 0 || q.reserved1.get() != 0 || q.reserved2.get() != 0 {
                return Err(reserved_bad);
            }
            let (state, version) = match vm.state() {
                VmState::Legacy => (vm_state::LEGACY, 0),
                VmState::Negotiated { version, .. } => (vm_state::NEGOTIATED, version),
            };
            if q.vm_state != state
                || q.active_version.get() != version
                || q.features_active.get() != vm.features().bits()
                || q.features_offered.get() != w.host.config().features_offered.bits()
                || q.message_format != MessageFormat::VTD_REMAPPABLE.0
                || q.irte_quota.get() != vm.config().quotas.irtes
                || q.vector_quota.get() != vm.config().quotas.vectors
            {
                return Err(HostFinding::QueryMismatch { code, vm: vm_id });
            }
        }
        CallCode::NEGOTIATE => {
            let n = NegotiateResponse::read_from_bytes(mem_resp).map_err(|_| reserved_bad)?;
            if n.reserved0.get() != 0 {
                return Err(reserved_bad);
            }
            if n.session.get() != vm.session() || Features(n.features.get()) != vm.features() {
                return Err(HostFinding::QueryMismatch { code, vm: vm_id });
            }
        }
        CallCode::ALLOCATE => {
            let a = AllocateResponse::read_from_bytes(mem_resp).map_err(|_| reserved_bad)?;
            if a.reserved0.get() != 0 {
                return Err(reserved_bad);
            }
            let handle = a.handle.get();
            if handle == 0 || !t.handles.issued[c.vm % 2].insert(handle) {
                return Err(HostFinding::HandleReissued { vm: vm_id, handle });
            }
        }
        CallCode::ACTIVATE => {
            let r = ActivateResponse::read_from_bytes(mem_resp).map_err(|_| reserved_bad)?;
            if r.reserved0 != 0 || r.reserved1.get() != 0 || r.reserved2.get() != 0 {
                return Err(reserved_bad);
            }
            let req = ActivateRequest::read_from_bytes(mem_req).map_err(|_| reserved_bad)?;
            let handle = req.handle.get();
            let message = MsiMessage::new(r.address_lo.get(), r.address_hi.get(), r.data.get());
            let wrong = HostFinding::WrongMessage {
                vm: vm_id,
                handle,
                message,
            };
            let alloc = vm.allocation(handle).ok_or(wrong)?;
            let expected = RemappableMsi {
                handle: alloc.base as u16,
                shv: true,
                subhandle: 0,
            }
            .encode();
            if r.format != MessageFormat::VTD_REMAPPABLE.0 || message != expected {
                return Err(wrong);
            }
            let first = *t.messages.entry((c.vm % 2, handle)).or_insert(message);
            if first != message {
                return Err(HostFinding::MessageChanged {
                    vm: vm_id,
                    handle,
                    first,
                    later: message,
                });
            }
        }
        CallCode::QUERY_QUOTA => {
            let q = QuotaResponse::read_from_bytes(mem_resp).map_err(|_| reserved_bad)?;
            let quotas = vm.config().quotas;
            let irtes: u32 = vm.allocations().map(|(_, a)| a.count()).sum();
            let active = vm
                .allocations()
                .flat_map(|(_, a)| a.vectors.iter())
                .filter(|s| matches!(s, vir_host::VectorState::Active(_)))
                .count() as u32;
            if q.irtes_total.get() != quotas.irtes
                || q.vectors_total.get() != quotas.vectors
                || Some(q.irtes_free.get()) != quotas.irtes.checked_sub(irtes)
                || Some(q.vectors_free.get()) != quotas.vectors.checked_sub(active)
            {
                return Err(HostFinding::QueryMismatch { code, vm: vm_id });
            }
        }
        _ => {}
    }
    Ok(())
}

fn read_buf<M: GuestMemory + ?Sized>(mem: &M, b: Buf) -> Vec<u8> {
    let len = usize::try_from(b.len).unwrap_or(0).min(64);
    let mut out = vec![0u8; len];
    let _ = mem.read_slice(&mut out, GuestAddress(b.gpa));
    out
}

/// Run one step against `w` and check everything listed in the module documentation.
pub fn run_step(
    w: &mut World,
    t: &mut Tracker,
    step: &Step,
    report: &mut CallsReport,
) -> Result<(), HostFinding> {
    report.steps += 1;
    match step {
        Step::Call(c) => {
            let mem = w.mems[c.vm % 2].clone();
            // The guest's own writes come first; the host's effects are measured after.
            prepare_call(c, &mem);
            let before = capture(w);
            let outcome = perform_call(w, c, &mem)?;
            let after_mem = ram_image(&mem);
            let other_mem = ram_image(&w.mems[(c.vm + 1) % 2]);
            let code = c.call_code();
            let me = c.vm % 2;
            let (ok_ranges, fail_ranges) = writable(c, outcome);
            match outcome {
                CallOutcome::NotExecuted => {
                    report.not_executed += 1;
                    unchanged(w, &before, code, None)?;
                    if let Some(gpa) = first_difference(&before.mem[me], &after_mem, &[]) {
                        return Err(HostFinding::FailureWroteMemory {
                            code,
                            status: None,
                            gpa,
                        });
                    }
                }
                CallOutcome::Executed(status) => {
                    *report.statuses.entry(status).or_default() += 1;
                    if !status_allowed(code, c.via, status) {
                        return Err(HostFinding::StatusNotAllowed {
                            code,
                            via: c.via,
                            status,
                        });
                    }
                    if status == Status::SUCCESS {
                        let other = (me + 1) % 2;
                        let mut now = w.host.snapshot(w.vm(other)).map_err(|_| {
                            HostFinding::OtherVmChanged {
                                code,
                                vm: w.vm(other),
                            }
                        })?;
                        // The host-wide table allocator is shared; everything else is the VM's.
                        now.table = before.snaps[other].table.clone();
                        if now != before.snaps[other] {
                            return Err(HostFinding::OtherVmChanged {
                                code,
                                vm: w.vm(other),
                            });
                        }
                        if let Some(gpa) = first_difference(&before.mem[me], &after_mem, &ok_ranges)
                        {
                            return Err(HostFinding::WroteOutsideResponse { code, gpa });
                        }
                        let resp = read_buf(&mem, c.resp);
                        let req = read_buf(&mem, c.req);
                        check_success(w, t, c, &req, &resp)?;
                    } else {
                        unchanged(w, &before, code, Some(status))?;
                        if let Some(gpa) =
                            first_difference(&before.mem[me], &after_mem, &fail_ranges)
                        {
                            return Err(HostFinding::FailureWroteMemory {
                                code,
                                status: Some(status),
                                gpa,
                            });
                        }
                    }
                }
            }
            if first_difference(&before.mem[(me + 1) % 2], &other_mem, &[]).is_some() {
                return Err(HostFinding::OtherVmChanged {
                    code,
                    vm: w.vm(me + 1),
                });
            }
        }
        Step::Registers { vm, vcpu, regs } => {
            let c = RawCall {
                vm: *vm,
                vcpu: *vcpu,
                via: Via::Register,
                code: regs.rax,
                req: Buf {
                    gpa: regs.rbx,
                    len: regs.rcx,
                },
                resp: Buf {
                    gpa: regs.rdx,
                    len: regs.rsi,
                },
                request: Vec::new(),
                block_gpa: 0,
            };
            return run_step(w, t, &Step::Call(c), report);
        }
        Step::Port {
            vm,
            vcpu,
            port,
            value,
        } => {
            let mem = w.mems[vm % 2].clone();
            let before = capture(w);
            let vm_id = w.vm(*vm);
            let outcome = w.host.pio_write(vm_id, *vcpu, *port, *value, &mem);
            let after = ram_image(&mem);
            match outcome {
                Ok(PioOutcome::Completed(status)) => {
                    // A ring through a raw port write: whatever block the latch named. Only
                    // the status field of that block and a response may change; the precise
                    // checks belong to call steps, here the state must at least satisfy the
                    // invariants and a failure must change nothing.
                    *report.statuses.entry(status).or_default() += 1;
                    if !status.is_known() {
                        return Err(HostFinding::StatusNotAllowed {
                            code: CallCode(0),
                            via: Via::Doorbell,
                            status,
                        });
                    }
                    if status != Status::SUCCESS {
                        unchanged(w, &before, CallCode(0), Some(status))?;
                    }
                }
                _ => {
                    report.not_executed += 1;
                    unchanged(w, &before, CallCode(0), None)?;
                    if let Some(gpa) = first_difference(&before.mem[vm % 2], &after, &[]) {
                        return Err(HostFinding::FailureWroteMemory {
                            code: CallCode(0),
                            status: None,
                            gpa,
                        });
                    }
                }
            }
        }
        Step::Fault { op, n, error } => match op {
            BackendOp::AddRoute | BackendOp::UpdateRoute => {
                w.host.routing_mut().fail_next(*op, *n, *error)
            }
            BackendOp::StartIrq | BackendOp::PrepareAffinity => {
                w.host.irqs_mut().fail_next(*op, *n, *error)
            }
        },
        Step::PlatformReset { vm } => {
            let id = w.vm(*vm);
            let _ = w.host.reset_vm(id);
            let live = live_handles(w, *vm);
            t.messages
                .retain(|(v, h), _| *v != vm % 2 || live.contains(h));
        }
        Step::Legacy { vm, count } => {
            let id = w.vm(*vm);
            let _ = w.host.set_legacy_interrupts_enabled(id, *count);
        }
    }
    check_host(&w.host)?;
    Ok(())
}

fn unchanged(
    w: &World,
    before: &Before,
    code: CallCode,
    status: Option<Status>,
) -> Result<(), HostFinding> {
    for (i, snap) in before.snaps.iter().enumerate() {
        let now = w.host.snapshot(w.vm(i)).ok();
        if now.as_ref() != Some(snap) {
            return Err(HostFinding::FailureChangedState {
                code,
                status,
                vm: w.vm(i),
            });
        }
    }
    if mock_state(&w.host) != before.mock {
        return Err(HostFinding::FailureChangedBackends { code, status });
    }
    Ok(())
}

/// The `host_calls` body.
pub fn host_calls(data: &[u8]) -> Result<CallsReport, HostFinding> {
    let mut input = Input::new(data);
    let config = WorldConfig::read(&mut input);
    let mut w = World::new(config);
    let mut t = Tracker::default();
    let mut report = CallsReport::default();
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let step = read_step(&w, &t.handles, &mut input);
        run_step(&mut w, &mut t, &step, &mut report)?;
    }
    Ok(report)
}

/// Builders for seed inputs of `host_calls` (and of the targets that reuse its steps).
pub mod seed {
    use super::*;

    /// Tag of a well-formed call from VM `vm`.
    pub fn call_tag(vm: usize) -> u8 {
        (vm as u8 & 1) << 7
    }

    /// Index of `code` in [`CallCode::V1`].
    pub fn code_index(code: CallCode) -> u8 {
        CallCode::V1.iter().position(|&c| c == code).unwrap_or(0) as u8
    }

    /// Binding selector byte.
    pub fn via_byte(via: Via) -> u8 {
        match via {
            Via::Memory => 0,
            Via::Register => 2,
            Via::Doorbell => 3,
        }
    }

    /// A well-formed NEGOTIATE of every offered feature, version 1.
    pub fn negotiate(enc: &mut Encoder, vm: usize, via: Via) {
        enc.u8(call_tag(vm))
            .u8(code_index(CallCode::NEGOTIATE))
            .u8(via_byte(via))
            .u8(0) // features: all
            .u8(0xff) // no corruption
            .u8(0); // vCPU 0
    }

    /// A well-formed call without request fields (QUERY, RESET, QUERY_QUOTA).
    pub fn bare(enc: &mut Encoder, vm: usize, code: CallCode, via: Via) {
        enc.u8(call_tag(vm))
            .u8(code_index(code))
            .u8(via_byte(via))
            .u8(0xff)
            .u8(0);
    }

    /// ALLOCATE of `kind` (1..=4) on the main device; `log2` for MSI, `index` otherwise.
    pub fn allocate(enc: &mut Encoder, vm: usize, kind: u8, log2_or_index: u8, via: Via) {
        enc.u8(call_tag(vm))
            .u8(code_index(CallCode::ALLOCATE))
            .u8(via_byte(via))
            .u8(kind.saturating_sub(1) & 3) // kind selector, main device
            .u8(log2_or_index)
            .u8(0xff)
            .u8(0);
    }

    /// ACTIVATE (or RESERVE) of the `live`-th live handle, sub-handle `sub`, to vCPU `vcpu` of
    /// the VM at vector `0x20 | vector`.
    #[allow(clippy::too_many_arguments)]
    pub fn activate(
        enc: &mut Encoder,
        vm: usize,
        live: u8,
        sub: u8,
        reserve: bool,
        vcpu: u8,
        vector: u8,
        via: Via,
    ) {
        enc.u8(call_tag(vm))
            .u8(code_index(CallCode::ACTIVATE))
            .u8(via_byte(via))
            .u8(live)
            .u32(0)
            .u8(sub)
            .u8(if reserve { 5 } else { 0 })
            .u8(if vcpu == 0 { 0 } else { 3 })
            .u8(vector & 0x3f)
            .u8(0xff)
            .u8(0);
    }

    /// SET_AFFINITY of the `live`-th live handle.
    pub fn set_affinity(enc: &mut Encoder, vm: usize, live: u8, sub: u8, vcpu: u8, vector: u8) {
        enc.u8(call_tag(vm))
            .u8(code_index(CallCode::SET_AFFINITY))
            .u8(0)
            .u8(live)
            .u32(0)
            .u8(sub)
            .u8(if vcpu == 0 { 0 } else { 3 })
            .u8(vector & 0x3f)
            .u8(0xff)
            .u8(0);
    }

    /// DEACTIVATE or FREE of a handle chosen by `sel` ([`pick_handle`]).
    pub fn handle_call(enc: &mut Encoder, vm: usize, code: CallCode, sel: u8, sub: u8) {
        enc.u8(call_tag(vm))
            .u8(code_index(code))
            .u8(0)
            .u8(sel)
            .u32(0xdead_0001);
        if code == CallCode::DEACTIVATE {
            enc.u8(sub);
        }
        enc.u8(0xff).u8(0);
    }

    /// A raw memory-binding call with explicit GPA and length selectors ([`GPAS`], [`LENS`]).
    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        enc: &mut Encoder,
        vm: usize,
        via: Via,
        code: u16,
        req: (u8, u8),
        resp: (u8, u8),
        request: &[u8; 64],
    ) {
        enc.u8((vm as u8 & 1) << 7 | 9)
            .u8(via_byte(via))
            .u32(u32::from(code))
            .u8(req.0)
            .u8(req.1)
            .u8(resp.0)
            .u8(resp.1)
            .bytes(request)
            .u8(1)
            .u8(0);
    }

    /// A register exit with arbitrary registers.
    pub fn registers(enc: &mut Encoder, vm: usize, vcpu: u8, regs: [u64; 6]) {
        enc.u8((vm as u8 & 1) << 7 | 12).u8(vcpu);
        for r in regs {
            enc.u64(r);
        }
    }

    /// A port write at offset `off` from the doorbell base.
    pub fn port(enc: &mut Encoder, vm: usize, off: u8, value: u32) {
        enc.u8((vm as u8 & 1) << 7 | 13).u8(off).u8(0).u32(value);
    }

    /// Fail the next `n` calls of backend operation `op` (index in [`BackendOp::ALL`]).
    pub fn fault(enc: &mut Encoder, op: u8, n: u8, error: u8) {
        enc.u8(14).u8(op).u8(n).u8(error);
    }

    /// Platform reset of VM `vm`.
    pub fn platform_reset(enc: &mut Encoder, vm: usize) {
        enc.u8((vm as u8 & 1) << 7 | 15).u8(1);
    }

    /// Legacy interrupts of VM `vm` enabled (`true`) or disabled.
    pub fn legacy(enc: &mut Encoder, vm: usize, enabled: bool) {
        enc.u8((vm as u8 & 1) << 7 | 15).u8(0).u8(u8::from(enabled));
    }
}

#[cfg(test)]
mod tests {
    use super::seed::*;
    use super::*;

    fn run(build: impl FnOnce(&mut Encoder)) -> CallsReport {
        let mut enc = Encoder::new();
        WorldConfig::default().write(&mut enc);
        build(&mut enc);
        host_calls(&enc.finish()).unwrap_or_else(|f| panic!("finding: {f}"))
    }

    #[test]
    fn a_lifecycle_through_every_binding_succeeds() {
        // VIR-ACT-H-008/009 and the invariants after each step.
        let r = run(|e| {
            negotiate(e, 0, Via::Memory);
            allocate(e, 0, 2, 3, Via::Register);
            activate(e, 0, 0, 0, true, 0, 0x11, Via::Doorbell);
            activate(e, 0, 0, 0, false, 1, 0x12, Via::Memory);
            set_affinity(e, 0, 0, 0, 0, 0x13);
            bare(e, 0, CallCode::QUERY_QUOTA, Via::Memory);
            handle_call(e, 0, CallCode::DEACTIVATE, 0, 0);
            handle_call(e, 0, CallCode::FREE, 0, 0);
        });
        assert_eq!(r.steps, 8);
        assert_eq!(r.statuses.get(&Status::SUCCESS), Some(&8));
    }

    #[test]
    fn failures_are_counted_and_change_nothing() {
        // VIR-CALL-H-003 (legacy), VIR-FRE-H-001 (stale handle), VIR-MEM-H-003 (misaligned).
        let r = run(|e| {
            bare(e, 1, CallCode::RESET, Via::Memory);
            negotiate(e, 1, Via::Memory);
            handle_call(e, 1, CallCode::FREE, 250, 0);
            raw(e, 1, Via::Memory, 0x0002, (14, 2), (5, 2), &[0; 64]);
        });
        assert_eq!(r.statuses.get(&Status::NOT_NEGOTIATED), Some(&1));
        assert_eq!(r.statuses.get(&Status::INVALID_HANDLE), Some(&1));
        assert_eq!(r.statuses.get(&Status::BAD_BUFFER), Some(&1));
    }

    #[test]
    fn vir_sta_h_002_status_allowed_follows_the_abi_table_without_busy() {
        let unknown = CallCode(0x20);
        assert!(status_allowed(unknown, Via::Memory, Status::UNKNOWN_CALL));
        assert!(!status_allowed(
            unknown,
            Via::Memory,
            Status::INVALID_PARAMETER
        ));
        assert!(status_allowed(
            unknown,
            Via::Doorbell,
            Status::INVALID_PARAMETER
        ));
        assert!(!status_allowed(
            CallCode::QUERY,
            Via::Memory,
            Status::NOT_NEGOTIATED
        ));
        assert!(status_allowed(
            CallCode::FREE,
            Via::Register,
            Status::INVALID_HANDLE
        ));
        // Allowed by the specification, but the reference host never meets a transient condition.
        assert!(CallCode::FREE.may_return(Status::BUSY, Binding::Register));
        assert!(!status_allowed(CallCode::FREE, Via::Memory, Status::BUSY));
    }

    #[test]
    fn first_difference_skips_allowed_ranges() {
        let a = vec![0u8; 0x5000];
        let mut b = a.clone();
        b[0x2004] = 1;
        assert_eq!(first_difference(&a, &b, &[]), Some(0x2004));
        assert_eq!(
            first_difference(
                &a,
                &b,
                &[Buf {
                    gpa: 0x2000,
                    len: 8
                }]
            ),
            None
        );
        b[0x4010] = 1;
        assert_eq!(
            first_difference(
                &a,
                &b,
                &[Buf {
                    gpa: 0x2000,
                    len: 8
                }]
            ),
            Some(RAM_HIGH_START + 0x10)
        );
    }
}
