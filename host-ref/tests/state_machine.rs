//! Stateful property test: a reference model of two VMs' vIR state beside the real host.
//!
//! The model ([`Model`]) is written from the specification alone — the common validation order
//! (VIR-CALL-H-001), each call's own order (VIR-NEG-H-*, VIR-ALC-H-*, VIR-ACT-H-*, VIR-AFF-H-*,
//! VIR-DEA-H-*, VIR-FRE-H-*, VIR-QUO-H-*), the interrupt state machine (VIR-IRQ-H-001) and the
//! reset rules (VIR-RST-H-*) — plus three documented policies of this host that a prediction
//! needs: the table allocator takes the lowest free naturally aligned run (`table.rs`), handles
//! are `generation << 16 | slot + 1` with the lowest free slot (`handles.rs`, so that the model
//! knows when another VM's handle value is also live in the caller), and the mock backends fail
//! exactly where failure was injected or a physical CPU ran out of vectors.
//!
//! `proptest-state-machine` drives random sequences of calls from both VMs, from either vCPU,
//! through the memory binding, the register binding and the doorbell (with another vCPU's latch
//! written in between, VIR-DB-H-002), interleaved with backend failure injection, platform resets
//! and the legacy hook. For every call the host's status must equal the model's prediction, a
//! successful call's response must equal the predicted response, and a failed call must leave
//! both VMs' snapshots, the backends and the response buffer exactly as they were
//! (VIR-CALL-H-006, VIR-CALL-H-007). After every step:
//!
//! * every live handle of each VM is exactly one of the model's allocations, with the same
//!   device, kind, index, size, table entries and per-vector states and targets (VIR-ALC-H-010,
//!   VIR-IRQ-H-001, VIR-IRQ-H-002, VIR-SEC-H-004);
//! * every ACTIVE vector's IRTE is present, with the device's source check (SVT=1, SQ=0, SID =
//!   requester id, or SVT=2 with the bridge's bus range) and the target vCPU's descriptor and
//!   guest vector (posted) or the host vector on the target vCPU's physical CPU (remapped)
//!   (VIR-SEC-H-001, VIR-SEC-H-003, VIR-FMT-H-003, VIR-FMT-H-004);
//! * every entry of an ALLOCATED vector is zero, every RESERVED one not present with FPD = 1, and
//!   every entry outside the model's allocations zero (VIR-SEC-H-002, VIR-ACT-H-011,
//!   VIR-FRE-H-002);
//! * the VM's IRTE and vector counts equal the model's, within the quotas (VIR-QUO-H-001,
//!   VIR-SEC-H-008), and QUERY_QUOTA, when called, reports exactly them.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use vir_abi::call::{CallCode, DOORBELL_GPA_HI, DOORBELL_GPA_LO, encode_rax};
use vir_abi::feature::Features;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::{Irte, RemappableMsi, Svt};
use vir_abi::hw::{ApicMode, IrteRaw};
use vir_abi::status::Status;
use vir_abi::wire::{
    ActivateRequest, ActivateResponse, AllocateRequest, AllocateResponse, DeactivateRequest,
    DoorbellBlock, FreeRequest, MessageFormat, NegotiateRequest, NegotiateResponse, QueryResponse,
    QuotaResponse, SetAffinityRequest, Target, call_layout,
};
use vir_host::testing::{MockHost, MockState, mock_host, mock_state};
use vir_host::{
    BackendError, BackendOp, DeviceConfig, HostConfig, IrMode, PioOutcome, Quotas,
    SourceValidation, StorageSizes, VcpuConfig, VectorState, VmConfig, VmId, VmSnapshot, X86Regs,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

// ---------------------------------------------------------------------------------------------
// The fixed platform
// ---------------------------------------------------------------------------------------------

const TABLE: usize = 12;
const PCPUS: usize = 3;
const VECTORS_PER_PCPU: u32 = 2;
const MAX_MSI_LOG2: u8 = 3;
const QUOTAS: Quotas = Quotas {
    irtes: 8,
    vectors: 4,
};
/// Guest APIC ids of the two vCPUs of each VM, and the physical CPU each runs on.
const APIC: [[u32; 2]; 2] = [[0, 1], [0x10, 0x11]];
const VCPU_PCPU: [[usize; 2]; 2] = [[0, 1], [1, 2]];
/// Device ids (the same in both VMs) and requester ids.
const DEV_IDS: [u32; 3] = [0x100, 0x1_0808, 0x200];
const RIDS: [u16; 2] = [0x3a00, 0x3b00];
const BUSES: [(u8, u8); 2] = [(0x40, 0x41), (0x50, 0x50)];
const MAIN: StorageSizes = StorageSizes {
    msi_vectors: 8,
    msix_entries: 8,
    ims_device_entries: 4,
    ims_system_entries: 4,
};
const BRIDGED: StorageSizes = StorageSizes {
    msi_vectors: 0,
    msix_entries: 2,
    ims_device_entries: 0,
    ims_system_entries: 0,
};
const REQ_GPA: u64 = 0x1000;
const RESP_GPA: u64 = 0x2000;
const BLOCK_GPA: u64 = 0x3000;
const FILL: u8 = 0xa5;

fn pda(vm: usize, vcpu: usize) -> u64 {
    0x20_0000 + vm as u64 * 0x1000 + vcpu as u64 * 0x40
}

fn storage(dev: usize) -> Option<StorageSizes> {
    match dev {
        0 => Some(MAIN),
        1 => Some(BRIDGED),
        _ => None,
    }
}

fn vm_config(vm: usize) -> VmConfig {
    let (start_bus, end_bus) = BUSES[vm];
    VmConfig {
        vcpus: (0..2)
            .map(|i| VcpuConfig {
                apic_id: APIC[vm][i],
                pda: pda(vm, i),
                pcpu: VCPU_PCPU[vm][i] as u32,
            })
            .collect(),
        devices: vec![
            DeviceConfig {
                device_id: DEV_IDS[0],
                requester_id: RIDS[vm],
                source_validation: SourceValidation::RequesterId,
                storage: MAIN,
            },
            DeviceConfig {
                device_id: DEV_IDS[1],
                requester_id: u16::from(end_bus) << 8 | 0x08,
                source_validation: SourceValidation::BusRange { start_bus, end_bus },
                storage: BRIDGED,
            },
        ],
        quotas: QUOTAS,
        guest_writable: vir_host::GuestWritable::AllRam,
    }
}

// ---------------------------------------------------------------------------------------------
// Transitions
// ---------------------------------------------------------------------------------------------

/// Which handle a call names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandleRef {
    /// The i-th live allocation of the caller (modulo their number).
    Live(u8),
    /// The i-th handle the caller freed.
    Stale(u8),
    /// The i-th live allocation of the other VM (VIR-SEC-H-004).
    Foreign(u8),
    /// A value with bits 15:0 zero, which no handle has.
    Junk(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tgt {
    /// 0, 1: the caller's vCPUs; 2: the other VM's first vCPU; 3: no vCPU at all.
    vcpu: u8,
    vector: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Query,
    Negotiate {
        version: u16,
        features: u64,
    },
    Reset,
    Allocate {
        dev: u8,
        kind: u8,
        log2: u8,
        index: u32,
    },
    Activate {
        h: HandleRef,
        sub: u16,
        reserve: bool,
        target: Tgt,
    },
    SetAffinity {
        h: HandleRef,
        sub: u16,
        target: Tgt,
    },
    Deactivate {
        h: HandleRef,
        sub: u16,
    },
    Free {
        h: HandleRef,
    },
    QueryQuota,
}

impl Call {
    fn code(&self) -> CallCode {
        match self {
            Call::Query => CallCode::QUERY,
            Call::Negotiate { .. } => CallCode::NEGOTIATE,
            Call::Reset => CallCode::RESET,
            Call::Allocate { .. } => CallCode::ALLOCATE,
            Call::Activate { .. } => CallCode::ACTIVATE,
            Call::SetAffinity { .. } => CallCode::SET_AFFINITY,
            Call::Deactivate { .. } => CallCode::DEACTIVATE,
            Call::Free { .. } => CallCode::FREE,
            Call::QueryQuota => CallCode::QUERY_QUOTA,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Memory,
    Register(usize),
    Doorbell(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Vectors,
    Os,
}

impl FaultKind {
    fn error(self, op: BackendOp) -> BackendError {
        match self {
            FaultKind::Vectors => BackendError::VectorsExhausted { cpu: 0 },
            FaultKind::Os => BackendError::Os { op, errno: 5 },
        }
    }

    fn status(self) -> Status {
        match self {
            FaultKind::Vectors => Status::VECTORS_EXHAUSTED,
            FaultKind::Os => Status::BACKEND_FAILURE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Call {
        vm: usize,
        via: Via,
        call: Call,
        /// A reserved field or undefined flag bit set (VIR-CALL-H-005).
        corrupt: bool,
    },
    PlatformReset {
        vm: usize,
    },
    Legacy {
        vm: usize,
        enabled: bool,
    },
    Fault {
        op: BackendOp,
        kind: FaultKind,
    },
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    Allocated,
    Reserved,
    Active {
        vcpu: usize,
        vector: u8,
        pcpu: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Alloc {
    dev: usize,
    kind: u8,
    index: u32,
    log2: u8,
    base: u32,
    vectors: Vec<V>,
}

impl Alloc {
    fn count(&self) -> u32 {
        1 << self.log2
    }

    fn message(&self) -> MsiMessage {
        RemappableMsi {
            handle: self.base as u16,
            shv: true,
            subhandle: 0,
        }
        .encode()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Slot {
    generation: u16,
    alloc: Option<Alloc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct VmModel {
    features: Option<Features>,
    session: u32,
    legacy: bool,
    slots: Vec<Slot>,
    freed: Vec<u32>,
}

impl VmModel {
    fn live(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alloc.is_some())
            .map(|(i, s)| u32::from(s.generation) << 16 | (i as u32 + 1))
            .collect()
    }

    fn lookup(&self, handle: u32) -> Option<usize> {
        let i = ((handle & 0xffff) as usize).checked_sub(1)?;
        let s = self.slots.get(i)?;
        (s.alloc.is_some() && u32::from(s.generation) == handle >> 16).then_some(i)
    }

    fn allocs(&self) -> impl Iterator<Item = &Alloc> {
        self.slots.iter().filter_map(|s| s.alloc.as_ref())
    }

    fn irtes(&self) -> u32 {
        self.allocs().map(Alloc::count).sum()
    }

    fn vectors(&self) -> u32 {
        self.allocs()
            .flat_map(|a| a.vectors.iter())
            .filter(|v| matches!(v, V::Active { .. }))
            .count() as u32
    }
}

/// What the host must answer to the last transition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Nothing,
    Status {
        status: Status,
        /// The handle value the call names (for the SUT to send).
        handle: u32,
        response: Option<Vec<u8>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    posted: bool,
    x2apic: bool,
    vms: [VmModel; 2],
    table: Vec<bool>,
    pcpu_used: [u32; PCPUS],
    faults: BTreeMap<BackendOp, FaultKind>,
    expect: Expect,
}

fn kind_size(dev: usize, kind: u8) -> u32 {
    let Some(s) = storage(dev) else { return 0 };
    match kind {
        1 => u32::from(s.msi_vectors),
        2 => s.msix_entries,
        3 => s.ims_device_entries,
        4 => s.ims_system_entries,
        _ => 0,
    }
}

fn gating(kind: u8) -> Option<Features> {
    match kind {
        1 => Some(Features::MSI),
        2 => Some(Features::MSIX),
        3 => Some(Features::IMS_DEVICE),
        4 => Some(Features::IMS_SYSTEM),
        _ => None,
    }
}

impl Model {
    fn new(posted: bool, x2apic: bool) -> Self {
        Model {
            posted,
            x2apic,
            vms: Default::default(),
            table: vec![false; TABLE],
            pcpu_used: [0; PCPUS],
            faults: BTreeMap::new(),
            expect: Expect::Nothing,
        }
    }

    fn resolve(&self, vm: usize, h: HandleRef) -> u32 {
        let pick = |v: &[u32], i: u8| {
            if v.is_empty() {
                0
            } else {
                v[usize::from(i) % v.len()]
            }
        };
        match h {
            HandleRef::Live(i) => pick(&self.vms[vm].live(), i),
            HandleRef::Stale(i) => pick(&self.vms[vm].freed, i),
            HandleRef::Foreign(i) => pick(&self.vms[1 - vm].live(), i),
            HandleRef::Junk(x) => u32::from(x) << 16,
        }
    }

    /// The lowest free naturally aligned run of 2^log2 entries.
    fn find(&self, log2: u8) -> Option<u32> {
        let n = 1usize << log2;
        (0..TABLE)
            .step_by(n)
            .find(|&b| b + n <= TABLE && self.table[b..b + n].iter().all(|u| !u))
            .map(|b| b as u32)
    }

    fn take_fault(&mut self, op: BackendOp) -> Option<Status> {
        self.faults.remove(&op).map(FaultKind::status)
    }

    /// Tear one vector down (VIR-DEA-H-002).
    fn teardown(&mut self, v: V) {
        if let V::Active { pcpu, .. } = v {
            self.pcpu_used[pcpu] -= 1;
        }
    }

    fn release(&mut self, vm: usize, slot: usize) {
        let Some(a) = self.vms[vm].slots[slot].alloc.take() else {
            return;
        };
        let s = &mut self.vms[vm].slots[slot];
        let freed = u32::from(s.generation) << 16 | (slot as u32 + 1);
        s.generation = s.generation.wrapping_add(1);
        self.vms[vm].freed.push(freed);
        for v in &a.vectors {
            self.teardown(*v);
        }
        for i in a.base..a.base + a.count() {
            self.table[i as usize] = false;
        }
    }

    /// Free everything and return to legacy (VIR-RST-H-001, VIR-RST-H-002).
    fn reset(&mut self, vm: usize) {
        for slot in 0..self.vms[vm].slots.len() {
            self.release(vm, slot);
        }
        self.vms[vm].features = None;
        // VIR-RST-H-006: MSI and MSI-X are presented disabled afterwards.
        self.vms[vm].legacy = false;
    }

    /// Target check (VIR-ACT-H-005, VIR-AFF-H-003): the caller's vCPU index, or None.
    fn target(vm: usize, t: Tgt) -> Option<usize> {
        if t.vector < 0x10 {
            return None;
        }
        match t.vcpu {
            0 | 1 => Some(usize::from(t.vcpu)),
            // The other VM's vCPU 0 — unless its APIC id is also one of the caller's.
            2 => APIC[vm].iter().position(|&a| a == APIC[1 - vm][0]),
            _ => None,
        }
    }

    fn apic(vm: usize, t: Tgt) -> u32 {
        match t.vcpu {
            0 | 1 => APIC[vm][usize::from(t.vcpu)],
            2 => APIC[1 - vm][0],
            _ => 0x7777,
        }
    }

    /// Predict and apply one call; returns the status and the response bytes on success.
    fn call(
        &mut self,
        vm: usize,
        call: Call,
        corrupt: bool,
        handle: u32,
    ) -> (Status, Option<Vec<u8>>) {
        let negotiated = self.vms[vm].features;
        // Step 5 (VIR-CALL-H-003).
        if !call.code().allowed_in_legacy() && negotiated.is_none() {
            return (Status::NOT_NEGOTIATED, None);
        }
        let features = negotiated.unwrap_or(Features::NONE);
        // Step 6 (VIR-CALL-H-004).
        if call == Call::QueryQuota && !features.contains(Features::QUOTA_QUERY) {
            return (Status::FEATURE_NOT_NEGOTIATED, None);
        }
        // Step 7 (VIR-CALL-H-005): calls with a request.
        let has_request = !matches!(call, Call::Query | Call::Reset | Call::QueryQuota);
        if corrupt && has_request {
            return (Status::INVALID_PARAMETER, None);
        }
        match call {
            Call::Query => {
                let q = QueryResponse {
                    min_version: U16::new(1),
                    max_version: U16::new(1),
                    message_format: MessageFormat::VTD_REMAPPABLE.0,
                    max_msi_log2: MAX_MSI_LOG2,
                    vm_state: u8::from(negotiated.is_some()),
                    reserved0: 0,
                    features_offered: U64::new(Features::V1_DEFINED.bits()),
                    features_active: U64::new(features.bits()),
                    active_version: U16::new(u16::from(negotiated.is_some())),
                    reserved1: U16::ZERO,
                    irte_quota: U32::new(QUOTAS.irtes),
                    vector_quota: U32::new(QUOTAS.vectors),
                    reserved2: U32::ZERO,
                };
                (Status::SUCCESS, Some(q.as_bytes().to_vec()))
            }
            Call::Negotiate {
                version,
                features: f,
            } => {
                let v = &mut self.vms[vm];
                if v.features.is_some() {
                    return (Status::ALREADY_NEGOTIATED, None); // VIR-NEG-H-001
                }
                if version != 1 {
                    return (Status::UNSUPPORTED_VERSION, None); // VIR-NEG-H-002
                }
                if !Features::V1_DEFINED.contains(Features(f)) {
                    return (Status::UNSUPPORTED_FEATURE, None); // VIR-NEG-H-003
                }
                if v.legacy {
                    return (Status::INVALID_STATE, None); // VIR-NEG-H-004
                }
                v.features = Some(Features(f));
                v.session = v.session.wrapping_add(1); // VIR-NEG-H-005
                let r = NegotiateResponse {
                    version: U16::new(1),
                    reserved0: U16::ZERO,
                    session: U32::new(v.session),
                    features: U64::new(f),
                };
                (Status::SUCCESS, Some(r.as_bytes().to_vec()))
            }
            Call::Reset => {
                self.reset(vm); // VIR-RST-H-004
                (Status::SUCCESS, None)
            }
            Call::Allocate {
                dev,
                kind,
                log2,
                index,
            } => {
                let dev = usize::from(dev);
                // VIR-ALC-H-001..009, in order.
                let Some(gate) = gating(kind) else {
                    return (Status::INVALID_PARAMETER, None);
                };
                if !features.contains(gate) {
                    return (Status::FEATURE_NOT_NEGOTIATED, None);
                }
                let bad_shape = if kind == 1 {
                    log2 > MAX_MSI_LOG2 || index != 0
                } else {
                    log2 != 0
                };
                if bad_shape {
                    return (Status::INVALID_PARAMETER, None);
                }
                if storage(dev).is_none() {
                    return (Status::NOT_YOUR_DEVICE, None);
                }
                let size = kind_size(dev, kind);
                if size == 0 {
                    return (Status::STORAGE_NOT_PRESENT, None);
                }
                let count = 1u32 << log2;
                if (kind == 1 && count > size) || (kind != 1 && index >= size) {
                    return (Status::INVALID_INDEX, None);
                }
                let v = &self.vms[vm];
                if v.allocs()
                    .any(|a| a.dev == dev && a.kind == kind && a.index == index)
                {
                    return (Status::INDEX_IN_USE, None);
                }
                if v.irtes() + count > QUOTAS.irtes {
                    return (Status::QUOTA_EXCEEDED, None);
                }
                let Some(base) = self.find(log2) else {
                    return (Status::TABLE_FULL, None);
                };
                for i in base..base + count {
                    self.table[i as usize] = true;
                }
                let v = &mut self.vms[vm];
                let slot = match v.slots.iter().position(|s| s.alloc.is_none()) {
                    Some(i) => i,
                    None => {
                        v.slots.push(Slot::default());
                        v.slots.len() - 1
                    }
                };
                let s = &mut v.slots[slot];
                s.alloc = Some(Alloc {
                    dev,
                    kind,
                    index,
                    log2,
                    base,
                    vectors: vec![V::Allocated; count as usize],
                });
                let r = AllocateResponse {
                    handle: U32::new(u32::from(s.generation) << 16 | (slot as u32 + 1)),
                    count: U16::new(count as u16),
                    reserved0: U16::ZERO,
                };
                (Status::SUCCESS, Some(r.as_bytes().to_vec()))
            }
            Call::Activate {
                sub,
                reserve,
                target,
                ..
            } => {
                let Some(slot) = self.vms[vm].lookup(handle) else {
                    return (Status::INVALID_HANDLE, None); // VIR-ACT-H-001
                };
                let a = self.vms[vm].slots[slot]
                    .alloc
                    .clone()
                    .unwrap_or_else(|| unreachable!("lookup returned a live slot"));
                let Some(&state) = a.vectors.get(usize::from(sub)) else {
                    return (Status::INVALID_SUBHANDLE, None); // VIR-ACT-H-002
                };
                if reserve && !features.contains(Features::RESERVATION) {
                    return (Status::FEATURE_NOT_NEGOTIATED, None); // VIR-ACT-H-003
                }
                let ok = match state {
                    V::Allocated => true,
                    V::Reserved => !reserve,
                    V::Active { .. } => false,
                };
                if !ok {
                    return (Status::INVALID_STATE, None); // VIR-ACT-H-004
                }
                let new = if reserve {
                    V::Reserved // VIR-ACT-H-010, VIR-ACT-H-011
                } else {
                    let Some(vcpu) = Self::target(vm, target) else {
                        return (Status::INVALID_TARGET, None); // VIR-ACT-H-005
                    };
                    // VIR-ACT-H-006: quota, route, IRQ, IRTE; VIR-ACT-H-007: unwinding.
                    if self.vms[vm].vectors() >= QUOTAS.vectors {
                        return (Status::VECTORS_EXHAUSTED, None);
                    }
                    if let Some(s) = self.take_fault(BackendOp::AddRoute) {
                        return (s, None);
                    }
                    if let Some(s) = self.take_fault(BackendOp::StartIrq) {
                        return (s, None);
                    }
                    let pcpu = VCPU_PCPU[vm][vcpu];
                    if self.pcpu_used[pcpu] >= VECTORS_PER_PCPU {
                        return (Status::VECTORS_EXHAUSTED, None);
                    }
                    self.pcpu_used[pcpu] += 1;
                    V::Active {
                        vcpu,
                        vector: target.vector,
                        pcpu,
                    }
                };
                if let Some(a) = self.vms[vm].slots[slot].alloc.as_mut() {
                    a.vectors[usize::from(sub)] = new;
                }
                // VIR-ACT-H-008, VIR-ACT-H-009, VIR-FMT-H-001.
                let m = a.message();
                let r = ActivateResponse {
                    address_lo: U32::new(m.address_lo),
                    address_hi: U32::new(m.address_hi),
                    data: U32::new(m.data),
                    format: MessageFormat::VTD_REMAPPABLE.0,
                    reserved0: 0,
                    reserved1: U16::ZERO,
                    reserved2: U64::ZERO,
                };
                (Status::SUCCESS, Some(r.as_bytes().to_vec()))
            }
            Call::SetAffinity { sub, target, .. } => {
                let Some(slot) = self.vms[vm].lookup(handle) else {
                    return (Status::INVALID_HANDLE, None); // VIR-AFF-H-001
                };
                let vectors = match &self.vms[vm].slots[slot].alloc {
                    Some(a) => a.vectors.clone(),
                    None => unreachable!("lookup returned a live slot"),
                };
                let Some(&state) = vectors.get(usize::from(sub)) else {
                    return (Status::INVALID_SUBHANDLE, None); // VIR-AFF-H-006
                };
                let V::Active {
                    vcpu: old_vcpu,
                    vector: old_vector,
                    pcpu: old_pcpu,
                } = state
                else {
                    return (Status::INVALID_STATE, None); // VIR-AFF-H-002
                };
                let Some(vcpu) = Self::target(vm, target) else {
                    return (Status::INVALID_TARGET, None); // VIR-AFF-H-003
                };
                if vcpu == old_vcpu && target.vector == old_vector {
                    return (Status::SUCCESS, None); // VIR-AFF-H-007
                }
                // VIR-AFF-H-004: move the host IRQ first if the pCPU changes, then the route.
                let pcpu = VCPU_PCPU[vm][vcpu];
                let moving = pcpu != old_pcpu;
                if moving {
                    if let Some(s) = self.take_fault(BackendOp::PrepareAffinity) {
                        return (s, None);
                    }
                    if self.pcpu_used[pcpu] >= VECTORS_PER_PCPU {
                        return (Status::VECTORS_EXHAUSTED, None);
                    }
                }
                if let Some(s) = self.take_fault(BackendOp::UpdateRoute) {
                    return (s, None);
                }
                if moving {
                    self.pcpu_used[pcpu] += 1;
                    self.pcpu_used[old_pcpu] -= 1;
                }
                if let Some(a) = self.vms[vm].slots[slot].alloc.as_mut() {
                    a.vectors[usize::from(sub)] = V::Active {
                        vcpu,
                        vector: target.vector,
                        pcpu,
                    };
                }
                (Status::SUCCESS, None)
            }
            Call::Deactivate { sub, .. } => {
                // VIR-DEA-H-001..003.
                let Some(slot) = self.vms[vm].lookup(handle) else {
                    return (Status::INVALID_HANDLE, None);
                };
                let state = match &self.vms[vm].slots[slot].alloc {
                    Some(a) => a.vectors.get(usize::from(sub)).copied(),
                    None => unreachable!("lookup returned a live slot"),
                };
                let Some(state) = state else {
                    return (Status::INVALID_SUBHANDLE, None);
                };
                if state == V::Allocated {
                    return (Status::INVALID_STATE, None);
                }
                self.teardown(state);
                if let Some(a) = self.vms[vm].slots[slot].alloc.as_mut() {
                    a.vectors[usize::from(sub)] = V::Allocated;
                }
                (Status::SUCCESS, None)
            }
            Call::Free { .. } => {
                // VIR-FRE-H-001..003.
                let Some(slot) = self.vms[vm].lookup(handle) else {
                    return (Status::INVALID_HANDLE, None);
                };
                self.release(vm, slot);
                (Status::SUCCESS, None)
            }
            Call::QueryQuota => {
                let v = &self.vms[vm];
                let q = QuotaResponse {
                    irtes_total: U32::new(QUOTAS.irtes),
                    irtes_free: U32::new(QUOTAS.irtes - v.irtes()),
                    vectors_total: U32::new(QUOTAS.vectors),
                    vectors_free: U32::new(QUOTAS.vectors - v.vectors()),
                };
                (Status::SUCCESS, Some(q.as_bytes().to_vec()))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn handle_ref() -> impl Strategy<Value = HandleRef> {
    prop_oneof![
        12 => any::<u8>().prop_map(HandleRef::Live),
        2 => any::<u8>().prop_map(HandleRef::Stale),
        2 => any::<u8>().prop_map(HandleRef::Foreign),
        1 => any::<u16>().prop_map(HandleRef::Junk),
    ]
}

fn tgt() -> impl Strategy<Value = Tgt> {
    (
        prop_oneof![10 => 0u8..2, 1 => Just(2u8), 1 => Just(3u8)],
        prop_oneof![10 => 0x20u8..0x28, 1 => any::<u8>()],
    )
        .prop_map(|(vcpu, vector)| Tgt { vcpu, vector })
}

fn sub() -> impl Strategy<Value = u16> {
    prop_oneof![8 => Just(0u16), 4 => 0u16..8, 1 => any::<u16>()]
}

/// Calls for a VM in the given state: mostly NEGOTIATE while it is in LEGACY, mostly ALLOCATE
/// while it holds nothing, mostly ACTIVATE and SET_AFFINITY once it holds allocations — and
/// every call now and then in every state, so that each status is reachable.
fn call(negotiated: bool, live: usize) -> impl Strategy<Value = Call> {
    let w = |on: bool, hi: u32, lo: u32| if on { hi } else { lo };
    let holds = live > 0;
    prop_oneof![
        1 => Just(Call::Query),
        w(negotiated, 1, 20) => (
            prop_oneof![10 => Just(1u16), 1 => any::<u16>()],
            prop_oneof![
                12 => Just(Features::V1_DEFINED.bits()),
                2 => 0u64..64,
                1 => any::<u64>(),
            ]
        )
            .prop_map(|(version, features)| Call::Negotiate { version, features }),
        1 => Just(Call::Reset),
        w(holds, 8, 20) => (
            prop_oneof![8 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
            prop_oneof![3 => Just(1u8), 3 => Just(2u8), 2 => Just(3u8), 2 => Just(4u8), 1 => any::<u8>()],
            any::<u8>(),
            prop_oneof![6 => 0u32..4, 3 => 0u32..10, 1 => any::<u32>()],
        )
            .prop_map(|(dev, kind, shape, index)| {
                // As a guest asks: MSI blocks of 1 to 8 with index 0, single entries otherwise;
                // one request in ten breaks the shape rules (VIR-ALC-H-003).
                let odd = shape % 10 == 9;
                let (log2, index) = match (kind, odd) {
                    (1, false) => (shape % 4, 0),
                    (1, true) => (shape % 7, index % 2),
                    (_, false) => (0, index),
                    (_, true) => (1 + shape % 3, index),
                };
                Call::Allocate { dev, kind, log2, index }
            }),
        w(holds, 16, 2) => (handle_ref(), sub(), prop::bool::weighted(0.25), tgt())
            .prop_map(|(h, sub, reserve, target)| Call::Activate { h, sub, reserve, target }),
        w(holds, 10, 1) => (handle_ref(), sub(), tgt())
            .prop_map(|(h, sub, target)| Call::SetAffinity { h, sub, target }),
        w(holds, 4, 1) => (handle_ref(), sub()).prop_map(|(h, sub)| Call::Deactivate { h, sub }),
        w(holds, 3, 1) => handle_ref().prop_map(|h| Call::Free { h }),
        2 => Just(Call::QueryQuota),
    ]
}

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![
        4 => Just(Via::Memory),
        2 => (0usize..2).prop_map(Via::Register),
        2 => (0usize..2).prop_map(Via::Doorbell),
    ]
}

struct Machine;

impl ReferenceStateMachine for Machine {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        (any::<bool>(), any::<bool>())
            .prop_map(|(posted, x2apic)| Model::new(posted, x2apic))
            .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let calls = |vm: usize| {
            let v = &state.vms[vm];
            (
                via(),
                call(v.features.is_some(), v.live().len()),
                prop::bool::weighted(0.05),
            )
                .prop_map(move |(via, call, corrupt)| Transition::Call {
                    vm,
                    via,
                    call,
                    corrupt,
                })
        };
        prop_oneof![
            30 => calls(0),
            30 => calls(1),
            1 => (0usize..2).prop_map(|vm| Transition::PlatformReset { vm }),
            1 => (0usize..2, any::<bool>()).prop_map(|(vm, enabled)| Transition::Legacy { vm, enabled }),
            3 => (
                prop::sample::select(BackendOp::ALL.to_vec()),
                prop_oneof![Just(FaultKind::Vectors), Just(FaultKind::Os)]
            )
                .prop_map(|(op, kind)| Transition::Fault { op, kind }),
        ]
        .boxed()
    }

    fn apply(mut state: Model, t: &Transition) -> Model {
        state.expect = Expect::Nothing;
        match *t {
            Transition::Call {
                vm, call, corrupt, ..
            } => {
                let handle = match call {
                    Call::Activate { h, .. }
                    | Call::SetAffinity { h, .. }
                    | Call::Deactivate { h, .. }
                    | Call::Free { h } => state.resolve(vm, h),
                    _ => 0,
                };
                let (status, response) = state.call(vm, call, corrupt, handle);
                state.expect = Expect::Status {
                    status,
                    handle,
                    response,
                };
            }
            Transition::PlatformReset { vm } => state.reset(vm),
            Transition::Legacy { vm, enabled } => state.vms[vm].legacy = enabled,
            Transition::Fault { op, kind } => {
                state.faults.insert(op, kind);
            }
        }
        state
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------------------------

struct Sut {
    host: MockHost,
    vms: [VmId; 2],
    mems: [GuestMemoryMmap<()>; 2],
    apic_mode: ApicMode,
}

fn request_bytes(vm: usize, call: Call, corrupt: bool, handle: u32) -> Vec<u8> {
    let target = |t: Tgt| {
        let mut x = Target::new(Model::apic(vm, t), t.vector);
        if corrupt {
            x.reserved1 = U16::new(0x100);
        }
        x
    };
    match call {
        Call::Query | Call::Reset | Call::QueryQuota => Vec::new(),
        Call::Negotiate { version, features } => NegotiateRequest {
            version: U16::new(version),
            reserved0: U16::new(u16::from(corrupt)),
            reserved1: U32::ZERO,
            features: U64::new(features),
        }
        .as_bytes()
        .to_vec(),
        Call::Allocate {
            dev,
            kind,
            log2,
            index,
        } => AllocateRequest {
            device_id: U32::new(DEV_IDS[usize::from(dev)]),
            kind,
            log2_count: log2,
            reserved0: U16::ZERO,
            index: U32::new(index),
            reserved1: U32::new(u32::from(corrupt) << 4),
        }
        .as_bytes()
        .to_vec(),
        Call::Activate {
            sub,
            reserve,
            target: t,
            ..
        } => {
            let mut x = ActivateRequest {
                handle: U32::new(handle),
                subhandle: U16::new(sub),
                flags: U16::new(u16::from(reserve)),
                target: target(t),
            };
            if reserve {
                // VIR-ACT-G-003 / VIR-ACT-H-010: a reservation's target is ignored.
                x.target.apic_id = U32::new(0xdead);
                x.target.vector = 3;
            }
            x.as_bytes().to_vec()
        }
        Call::SetAffinity { sub, target: t, .. } => SetAffinityRequest {
            handle: U32::new(handle),
            subhandle: U16::new(sub),
            reserved0: U16::ZERO,
            target: target(t),
        }
        .as_bytes()
        .to_vec(),
        Call::Deactivate { sub, .. } => DeactivateRequest {
            handle: U32::new(handle),
            subhandle: U16::new(sub),
            reserved0: U16::new(u16::from(corrupt) << 3),
        }
        .as_bytes()
        .to_vec(),
        Call::Free { .. } => FreeRequest {
            handle: U32::new(handle),
            reserved0: U32::new(u32::from(corrupt)),
        }
        .as_bytes()
        .to_vec(),
    }
}

impl Sut {
    fn snapshots(&self) -> ([VmSnapshot; 2], MockState) {
        let s = |i: usize| self.host.snapshot(self.vms[i]).expect("known VM");
        ([s(0), s(1)], mock_state(&self.host))
    }

    /// Make the call through `via`; returns the status and the response buffer afterwards.
    fn call(&mut self, vm: usize, via: Via, code: CallCode, request: &[u8]) -> (Status, Vec<u8>) {
        let layout = call_layout(code).expect("v1 call");
        let resp_len = layout.response_len() as usize;
        let mem = &self.mems[vm];
        let id = self.vms[vm];
        if !request.is_empty() {
            mem.write_slice(request, GuestAddress(REQ_GPA)).unwrap();
        }
        mem.write_slice(&[FILL; 64], GuestAddress(RESP_GPA))
            .unwrap();
        let req_gpa = if request.is_empty() { 0 } else { REQ_GPA };
        let resp_gpa = if resp_len == 0 { 0 } else { RESP_GPA };
        let status = match via {
            Via::Memory => self
                .host
                .handle_call(
                    id,
                    mem,
                    code,
                    req_gpa,
                    request.len() as u64,
                    resp_gpa,
                    resp_len as u64,
                )
                .expect("known VM"),
            Via::Register(vcpu) => {
                let mut regs = X86Regs {
                    rax: encode_rax(code),
                    rbx: req_gpa,
                    rcx: request.len() as u64,
                    rdx: resp_gpa,
                    rsi: resp_len as u64,
                    rdi: 0x1234,
                };
                let before = regs;
                assert_eq!(self.host.vmcall(id, vcpu as u32, &mut regs, mem), Ok(true));
                // VIR-REG-H-002: RAX = status zero-extended; everything else preserved.
                assert_eq!(regs.rax >> 32, 0);
                assert_eq!(
                    X86Regs {
                        rax: before.rax,
                        ..regs
                    },
                    before
                );
                Status(regs.rax as u32)
            }
            Via::Doorbell(vcpu) => {
                let block = DoorbellBlock {
                    call: U32::new(u32::from(code.0)),
                    status: U32::new(0xffff_ffff),
                    request_gpa: U64::new(req_gpa),
                    request_len: U32::new(request.len() as u32),
                    response_len: U32::new(resp_len as u32),
                    response_gpa: U64::new(resp_gpa),
                };
                mem.write_slice(block.as_bytes(), GuestAddress(BLOCK_GPA))
                    .unwrap();
                let port = HostConfig::DEFAULT_DOORBELL_PORT;
                let other = 1 - vcpu as u32;
                let pio = |h: &mut MockHost, vcpu: u32, off: u16, value: u32| {
                    h.pio_write(id, vcpu, port + off, value, mem)
                        .expect("known vCPU")
                };
                // VIR-DB-H-002: another vCPU's latch never leaks into this ring.
                assert_eq!(
                    pio(&mut self.host, other, DOORBELL_GPA_LO, 0x0bad_0008),
                    PioOutcome::Latched
                );
                assert_eq!(
                    pio(
                        &mut self.host,
                        vcpu as u32,
                        DOORBELL_GPA_LO,
                        BLOCK_GPA as u32
                    ),
                    PioOutcome::Latched
                );
                let PioOutcome::Completed(status) =
                    pio(&mut self.host, vcpu as u32, DOORBELL_GPA_HI, 0)
                else {
                    panic!("a well-formed ring completes")
                };
                // VIR-DB-H-007: the status lands in the block.
                let mut b = [0u8; 4];
                mem.read_slice(&mut b, GuestAddress(BLOCK_GPA + 4)).unwrap();
                assert_eq!(u32::from_le_bytes(b), status.0);
                status
            }
        };
        let mut resp = vec![0u8; 64];
        mem.read_slice(&mut resp, GuestAddress(RESP_GPA)).unwrap();
        (status, resp)
    }
}

fn entry_ok_for_device(irte: &Irte, vm: usize, dev: usize) -> bool {
    let (svt, sq, sid) = match irte {
        Irte::Remapped(r) => (r.svt, r.sq, r.sid),
        Irte::Posted(p) => (p.svt, p.sq, p.sid),
    };
    match dev {
        // VIR-SEC-H-001: SVT=1, SQ=0, SID = requester id.
        0 => (svt, sq, sid) == (Svt::VerifySid, 0, RIDS[vm]),
        // VIR-FMT-H-004: SVT=2, start bus in 15:8, end bus in 7:0.
        _ => {
            let (s, e) = BUSES[vm];
            (svt, sq, sid) == (Svt::VerifyBus, 0, u16::from(s) << 8 | u16::from(e))
        }
    }
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Self;
    type Reference = Machine;

    fn init_test(m: &Model) -> Self {
        let config = HostConfig {
            ir_mode: if m.posted {
                IrMode::Posted
            } else {
                IrMode::Remapped
            },
            apic_mode: if m.x2apic {
                ApicMode::X2Apic
            } else {
                ApicMode::XApic
            },
            max_msi_log2: MAX_MSI_LOG2,
            ..HostConfig::default()
        };
        let apic_mode = config.apic_mode;
        let (mut host, _) =
            mock_host(config, TABLE as u32, PCPUS as u32, VECTORS_PER_PCPU).unwrap();
        let vms = [
            host.add_vm(vm_config(0)).unwrap(),
            host.add_vm(vm_config(1)).unwrap(),
        ];
        let mem = || GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).expect("guest RAM");
        Sut {
            host,
            vms,
            mems: [mem(), mem()],
            apic_mode,
        }
    }

    fn apply(mut sut: Self, m: &Model, t: Transition) -> Self {
        match t {
            Transition::Call {
                vm,
                via,
                call,
                corrupt,
            } => {
                let Expect::Status {
                    status: expected,
                    handle,
                    response,
                } = &m.expect
                else {
                    panic!("the model predicts every call")
                };
                let request = request_bytes(vm, call, corrupt, *handle);
                let before = sut.snapshots();
                let (status, resp) = sut.call(vm, via, call.code(), &request);
                assert_eq!(status, *expected, "{call:?} via {via:?} from VM {vm}");
                if status == Status::SUCCESS {
                    if let Some(r) = response {
                        assert_eq!(&resp[..r.len()], &r[..], "response of {call:?}");
                        assert!(resp[r.len()..].iter().all(|&b| b == FILL));
                    } else {
                        assert!(resp.iter().all(|&b| b == FILL), "no response expected");
                    }
                } else {
                    // VIR-CALL-H-006 and VIR-CALL-H-007.
                    assert_eq!(sut.snapshots(), before, "{call:?} failed with {status:?}");
                    assert!(
                        resp.iter().all(|&b| b == FILL),
                        "failed call wrote a response"
                    );
                }
            }
            Transition::PlatformReset { vm } => sut.host.reset_vm(sut.vms[vm]).unwrap(),
            Transition::Legacy { vm, enabled } => sut
                .host
                .set_legacy_interrupts_enabled(sut.vms[vm], u32::from(enabled))
                .unwrap(),
            Transition::Fault { op, kind } => match op {
                BackendOp::AddRoute | BackendOp::UpdateRoute => {
                    sut.host.routing_mut().fail_next(op, 1, kind.error(op))
                }
                BackendOp::StartIrq | BackendOp::PrepareAffinity => {
                    sut.host.irqs_mut().fail_next(op, 1, kind.error(op))
                }
            },
        }
        sut
    }

    fn check_invariants(sut: &Self, m: &Model) {
        let table = sut.host.table().entries();
        let mut owned = vec![false; TABLE];
        for (vm, mv) in m.vms.iter().enumerate() {
            let v = sut.host.vm(sut.vms[vm]).unwrap();
            // VIR-VMS-H-001, VIR-NEG-H-005.
            assert_eq!(v.features(), mv.features.unwrap_or(Features::NONE));
            assert_eq!(v.session(), mv.session);
            // Handles: exactly the model's (VIR-ALC-H-010, VIR-SEC-H-004).
            let live: Vec<u32> = v.allocations().map(|(h, _)| h).collect();
            assert_eq!(live, mv.live(), "live handles of VM {vm}");
            for (h, a) in v.allocations() {
                let ma = mv.slots[mv.lookup(h).unwrap()].alloc.as_ref().unwrap();
                assert_eq!(
                    (a.device_id, a.kind.0, a.index, a.log2_count, a.base),
                    (DEV_IDS[ma.dev], ma.kind, ma.index, ma.log2, ma.base),
                    "allocation {h:#x} of VM {vm}"
                );
                assert_eq!(a.message(), ma.message());
                for (sub, (state, mstate)) in a.vectors.iter().zip(&ma.vectors).enumerate() {
                    let index = (a.base as usize) + sub;
                    owned[index] = true;
                    let raw = table[index];
                    match (state, mstate) {
                        (VectorState::Allocated, V::Allocated) => {
                            assert_eq!(raw, 0, "VIR-SEC-H-002: entry {index}");
                        }
                        (VectorState::Reserved, V::Reserved) => {
                            // VIR-ACT-H-011, VIR-SEC-H-009.
                            let r = IrteRaw::from_u128(raw);
                            assert!(!r.present() && r.fpd(), "entry {index}: {raw:#x}");
                        }
                        (VectorState::Active(av), V::Active { vcpu, vector, pcpu }) => {
                            assert_eq!(
                                (av.target.apic_id, av.target.vector, av.vcpu_index),
                                (APIC[vm][*vcpu], *vector, *vcpu as u32),
                                "VIR-IRQ-H-002: target of entry {index}"
                            );
                            let irte = Irte::decode(raw, sut.apic_mode).expect("valid IRTE");
                            assert!(irte.present(), "entry {index}");
                            assert!(entry_ok_for_device(&irte, vm, ma.dev), "{irte:?}");
                            // The IRQ runs on the target vCPU's pCPU (VIR-AFF-H-004).
                            assert_eq!(av.host_irq.vector.cpu, *pcpu as u32);
                            let irq = sut.host.irqs().irq(av.host_irq.id).expect("started IRQ");
                            assert_eq!((irq.vm, irq.vector), (sut.vms[vm], av.host_irq.vector));
                            let route = sut.host.routing().route(sut.vms[vm], av.gsi).unwrap();
                            assert_eq!((route.apic_id, route.vector), (APIC[vm][*vcpu], *vector));
                            match irte {
                                // VIR-FMT-H-003, VIR-SEC-H-003.
                                Irte::Posted(p) => {
                                    assert!(m.posted);
                                    assert_eq!((p.vector, p.pda), (*vector, pda(vm, *vcpu)));
                                }
                                Irte::Remapped(r) => {
                                    assert!(!m.posted);
                                    assert_eq!(
                                        (r.vector, r.dest),
                                        (av.host_irq.vector.vector, *pcpu as u32)
                                    );
                                }
                            }
                        }
                        (s, ms) => panic!("entry {index}: host {s:?}, model {ms:?}"),
                    }
                }
            }
            // VIR-QUO-H-001, VIR-SEC-H-008.
            assert_eq!(
                (v.irtes_used(), v.vectors_used()),
                (mv.irtes(), mv.vectors())
            );
            assert!(v.irtes_used() <= QUOTAS.irtes && v.vectors_used() <= QUOTAS.vectors);
        }
        for (i, (&raw, &o)) in table.iter().zip(&owned).enumerate() {
            if !o {
                assert_eq!(raw, 0, "VIR-SEC-H-002: free entry {i}");
            }
        }
        assert_eq!(
            sut.host.table_free() as usize,
            m.table.iter().filter(|u| !**u).count()
        );
        // No leaked route or IRQ; no misuse of a backend.
        let active = (m.vms[0].vectors() + m.vms[1].vectors()) as usize;
        assert_eq!(sut.host.routing().routes().len(), active);
        assert_eq!(sut.host.irqs().irqs().len(), active);
        for cpu in 0..PCPUS {
            assert_eq!(
                sut.host.irqs().vectors_in_use(cpu as u32).len() as u32,
                m.pcpu_used[cpu]
            );
        }
        assert_eq!(sut.host.table().invalid_writes(), 0);
        assert_eq!(sut.host.routing().invalid_calls(), 0);
        assert_eq!(sut.host.irqs().invalid_calls(), 0);
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        cases: 256,
        max_shrink_iters: 4096,
        failure_persistence: None,
        .. Config::default()
    })]

    /// VIR-CALL-H-001..007, VIR-NEG-H-001..005, VIR-RST-H-001..004, VIR-ALC-H-001..012,
    /// VIR-ACT-H-001..011, VIR-AFF-H-001..007, VIR-DEA-H-001..003, VIR-FRE-H-001..003,
    /// VIR-QUO-H-001/002, VIR-IRQ-H-001/002, VIR-SEC-H-001..004/008, VIR-DB-H-002/007,
    /// VIR-REG-H-002: the host equals the model after every step of random two-VM sequences.
    #[test]
    fn host_follows_the_reference_model(sequential 1..160 => Sut);
}

#[test]
fn the_model_itself_predicts_a_known_sequence() {
    // A fixed sequence through the model alone, so that a wrong model cannot pass silently:
    // VIR-ALC-H-007 (INDEX_IN_USE), VIR-ALC-H-008 (QUOTA_EXCEEDED), VIR-ALC-H-009 (TABLE_FULL
    // only when no naturally aligned run is left), VIR-CALL-H-003 (NOT_NEGOTIATED).
    let mut m = Model::new(true, true);
    let alloc = |m: &mut Model, vm: usize, kind: u8, log2: u8, index: u32| {
        let call = Call::Allocate {
            dev: 0,
            kind,
            log2,
            index,
        };
        m.call(vm, call, false, 0).0
    };
    let base =
        |m: &Model, vm: usize, slot: usize| m.vms[vm].slots[slot].alloc.as_ref().map(|a| a.base);
    assert_eq!(alloc(&mut m, 0, 2, 0, 0), Status::NOT_NEGOTIATED);
    let neg = Call::Negotiate {
        version: 1,
        features: Features::V1_DEFINED.bits(),
    };
    assert_eq!(m.call(0, neg, false, 0).0, Status::SUCCESS);
    assert_eq!(m.call(1, neg, false, 0).0, Status::SUCCESS);
    assert_eq!(alloc(&mut m, 0, 2, 0, 0), Status::SUCCESS);
    assert_eq!(base(&m, 0, 0), Some(0));
    assert_eq!(alloc(&mut m, 0, 2, 0, 0), Status::INDEX_IN_USE);
    // 0..8 holds entry 0 and 8..16 runs past the 12 entries: no run of 8.
    assert_eq!(alloc(&mut m, 1, 1, 3, 0), Status::TABLE_FULL);
    assert_eq!(alloc(&mut m, 1, 1, 2, 0), Status::SUCCESS);
    assert_eq!(base(&m, 1, 0), Some(4));
    assert_eq!(alloc(&mut m, 0, 1, 2, 0), Status::SUCCESS);
    assert_eq!(base(&m, 0, 1), Some(8));
    assert_eq!(alloc(&mut m, 0, 3, 0, 0), Status::SUCCESS);
    assert_eq!(
        base(&m, 0, 2),
        Some(1),
        "single entries fill the lowest hole"
    );
    assert_eq!(alloc(&mut m, 0, 4, 0, 0), Status::SUCCESS);
    assert_eq!(alloc(&mut m, 0, 2, 0, 1), Status::SUCCESS);
    assert_eq!(m.vms[0].irtes(), 8);
    assert_eq!(alloc(&mut m, 0, 2, 0, 2), Status::QUOTA_EXCEEDED);
    assert_eq!(alloc(&mut m, 1, 2, 0, 0), Status::TABLE_FULL);
    assert!(m.table.iter().all(|&u| u));
}
