//! The host: several VMs sharing one physical remapping table, and the three bindings.

use std::collections::BTreeMap;

use core::fmt;

use vir_abi::call::{
    BUFFER_ALIGN, CallCode, DOORBELL_GPA_HI, DOORBELL_GPA_LO, DOORBELL_PORT_COUNT, PAGE_SIZE,
    decode_rax,
};
use vir_abi::discovery::{InfoLeaf, signature_regs};
use vir_abi::status::Status;
use vir_abi::wire::{DoorbellBlock, call_layout};
use vm_memory::{Bytes, GuestAddress, GuestMemory};
use zerocopy::FromBytes;

use crate::backend::{IrteTable, PhysicalIrqs, VirtualRouting, VmId};
use crate::calls::{self, MAX_VERSION, MIN_VERSION, Phys};
use crate::config::{ConfigError, HostConfig, IrMode, VmConfig};
use crate::counters::{Binding, Counters};
use crate::iommu::IommuKind;
use crate::memory::{self, GuestBuffer};
use crate::snapshot::VmSnapshot;
use crate::table::TableAllocators;
use crate::vm::Vm;

/// The general-purpose registers the register binding reads and writes (x86-64).
///
/// `RAX` = `HYPERCALL_BASE | code`, `RBX` = request GPA, `RCX` = request length, `RDX` =
/// response GPA, `RSI` = response length; on return `RAX` = status, everything else preserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct X86Regs {
    /// `RAX`.
    pub rax: u64,
    /// `RBX`.
    pub rbx: u64,
    /// `RCX`.
    pub rcx: u64,
    /// `RDX`.
    pub rdx: u64,
    /// `RSI`.
    pub rsi: u64,
    /// `RDI`.
    pub rdi: u64,
}

/// A VMM-side mistake in using the host API (never caused by a guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// No VM with this id.
    UnknownVm(VmId),
    /// The VM has no vCPU with this index.
    UnknownVcpu {
        /// The VM.
        vm: VmId,
        /// The vCPU index.
        vcpu_index: u32,
    },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownVm(vm) => write!(f, "no VM {vm}"),
            Self::UnknownVcpu { vm, vcpu_index } => write!(f, "{vm} has no vCPU {vcpu_index}"),
        }
    }
}

impl std::error::Error for HostError {}

/// Why a doorbell ring was ignored: no status can be written back, the write is dropped and
/// counted ([`Counters::doorbell_ignored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DoorbellIgnored {
    /// The block's GPA (carried) is not 8-byte aligned.
    Misaligned(u64),
    /// The block (at the carried GPA) crosses a 4 KiB page.
    CrossesPage(u64),
    /// The block (at the carried GPA) is not backed by guest RAM, or not by memory the guest
    /// can write ([`crate::config::GuestWritable`]).
    Unbacked(u64),
    /// A write to a claimed port offset (carried) that is neither the low nor the high half.
    BadPortOffset(u16),
}

/// What a port write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PioOutcome {
    /// The port is not a vIR doorbell port (or vIR is not offered): the VMM handles it.
    NotClaimed,
    /// The low half of the block GPA was latched for this vCPU.
    Latched,
    /// The doorbell rang and the call completed with this status (written to the block).
    Completed(Status),
    /// The write was claimed but ignored.
    Ignored(DoorbellIgnored),
}

/// The vIR host: VMs, the shared physical remapping table and its allocator, the backends.
///
/// All entry points take `&mut self`: a VMM serialises calls (one lock around the host, or one
/// host per remapping unit). Every call of a guest is bounded: its work is proportional to the
/// entries of the allocation it names, plus table and handle searches bounded by their fixed
/// sizes (VIR-SEC-H-005).
pub struct Host<T, R, P> {
    config: HostConfig,
    table: T,
    routing: R,
    irqs: P,
    alloc: TableAllocators,
    vms: BTreeMap<VmId, Vm>,
    next_vm: u32,
    removed: Counters,
}

impl<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs> Host<T, R, P> {
    /// A host over the given backends. The table size is read once from `table`.
    pub fn new(config: HostConfig, table: T, routing: R, irqs: P) -> Result<Self, ConfigError> {
        config.validate()?;
        let size = table.size();
        // AMD-Vi: 2^IntTabLen entries per device.
        let per_device = matches!(config.iommu, IommuKind::AmdVi(_));
        if size == 0
            || size > config.vendor().max_table_entries()
            || (per_device && !size.is_power_of_two())
        {
            return Err(ConfigError::TableSize(size));
        }
        Ok(Host {
            config,
            table,
            routing,
            irqs,
            alloc: TableAllocators::new(size),
            vms: BTreeMap::new(),
            next_vm: 0,
            removed: Counters::default(),
        })
    }

    /// The host configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Whether vIR is offered at all (VIR-DISC-H-001).
    pub fn vir_available(&self) -> bool {
        self.config.vir_available()
    }

    /// Create a VM, after the cross-VM checks of [`crate::config::admit`]: no requester id
    /// accepted by the IRTEs of two VMs' devices (VIR-SEC-H-006), quotas that fit what the
    /// other VMs' quotas leave (VIR-SEC-H-013).
    pub fn add_vm(&mut self, config: VmConfig) -> Result<VmId, ConfigError> {
        config.validate()?;
        if matches!(self.config.iommu, IommuKind::AmdVi(_)) && self.config.ir_mode == IrMode::Posted
        {
            for (i, v) in config.vcpus.iter().enumerate() {
                if v.pda == 0 || !v.pda.is_multiple_of(4096) || v.pda >> 52 != 0 {
                    return Err(ConfigError::BadBackingPage {
                        vcpu: u32::try_from(i).unwrap_or(u32::MAX),
                        address: v.pda,
                    });
                }
            }
        }
        let existing = self.vms.values().map(|v| &v.config);
        crate::config::admit(&config, existing, &self.config, self.table.size())?;
        let id = VmId(self.next_vm);
        self.next_vm = self.next_vm.checked_add(1).ok_or(ConfigError::TooManyVms)?;
        self.vms.insert(id, Vm::new(id, config));
        Ok(id)
    }

    /// Destroy a VM: everything it holds is freed (as by a platform reset) and its id is gone.
    pub fn remove_vm(&mut self, vm: VmId) -> Result<(), HostError> {
        self.reset_vm(vm)?;
        if let Some(v) = self.vms.remove(&vm) {
            self.removed.add(&v.counters);
        }
        Ok(())
    }

    /// A VM.
    pub fn vm(&self, vm: VmId) -> Option<&Vm> {
        self.vms.get(&vm)
    }

    /// A VM, mutably (for the legacy hooks such as [`Vm::set_legacy_interrupts_enabled`]).
    pub fn vm_mut(&mut self, vm: VmId) -> Option<&mut Vm> {
        self.vms.get_mut(&vm)
    }

    /// The ids of every VM.
    pub fn vm_ids(&self) -> impl Iterator<Item = VmId> + '_ {
        self.vms.keys().copied()
    }

    /// The remapping table backend.
    pub fn table(&self) -> &T {
        &self.table
    }

    /// The remapping table backend, mutably (test and failure-injection access; the host's own
    /// bookkeeping assumes nobody else writes the entries it allocated).
    pub fn table_mut(&mut self) -> &mut T {
        &mut self.table
    }

    /// The routing backend.
    pub fn routing(&self) -> &R {
        &self.routing
    }

    /// The routing backend, mutably (for failure injection).
    pub fn routing_mut(&mut self) -> &mut R {
        &mut self.routing
    }

    /// The physical IRQ backend.
    pub fn irqs(&self) -> &P {
        &self.irqs
    }

    /// The physical IRQ backend, mutably (for failure injection).
    pub fn irqs_mut(&mut self) -> &mut P {
        &mut self.irqs
    }

    /// Remapping-table entries not allocated to any VM: of the unit's table (VT-d), plus those
    /// of every device table in use (AMD-Vi; a device table is in use once an entry of it was
    /// allocated).
    pub fn table_free(&self) -> u32 {
        self.alloc.free()
    }

    /// Counters summed over every VM (including removed ones).
    pub fn counters(&self) -> Counters {
        let mut sum = self.removed.clone();
        for vm in self.vms.values() {
            sum.add(&vm.counters);
        }
        sum
    }

    fn vm_checked(&self, vm: VmId) -> Result<&Vm, HostError> {
        self.vms.get(&vm).ok_or(HostError::UnknownVm(vm))
    }

    fn check_vcpu(&self, vm: VmId, vcpu_index: u32) -> Result<(), HostError> {
        let v = self.vm_checked(vm)?;
        if (vcpu_index as usize) < v.config.vcpus.len() {
            Ok(())
        } else {
            Err(HostError::UnknownVcpu { vm, vcpu_index })
        }
    }

    /// The memory-binding core: perform call `code` of VM `vm` with its buffers in `mem`, in the
    /// order of VIR-CALL-H-001, and return the status (also counted). The request is read from
    /// `mem` exactly once; the response is written once, only on `SUCCESS`.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_call<M: GuestMemory + ?Sized>(
        &mut self,
        vm: VmId,
        mem: &M,
        code: CallCode,
        req_gpa: u64,
        req_len: u64,
        resp_gpa: u64,
        resp_len: u64,
    ) -> Result<Status, HostError> {
        let req = GuestBuffer {
            gpa: req_gpa,
            len: req_len,
        };
        let resp = GuestBuffer {
            gpa: resp_gpa,
            len: resp_len,
        };
        self.call(vm, mem, code, req, resp, None, Binding::Memory)
    }

    #[allow(clippy::too_many_arguments)]
    fn call<M: GuestMemory + ?Sized>(
        &mut self,
        vm: VmId,
        mem: &M,
        code: CallCode,
        req: GuestBuffer,
        resp: GuestBuffer,
        exclude: Option<GuestBuffer>,
        binding: Binding,
    ) -> Result<Status, HostError> {
        let Host {
            config,
            table,
            routing,
            irqs,
            alloc,
            vms,
            ..
        } = self;
        let v = vms.get_mut(&vm).ok_or(HostError::UnknownVm(vm))?;
        let mut phys = Phys {
            config,
            table,
            routing,
            irqs,
            alloc,
        };
        let status = match Self::call_steps(&mut phys, v, mem, code, req, resp, exclude) {
            Ok(response) => {
                if memory::write_response(mem, resp, response.bytes()) {
                    Status::SUCCESS
                } else {
                    // Only with a guest memory that refused a write to a range both it and the
                    // VMM's guest-writable map (checked in step 3, before any change) declared
                    // writable: a VMM bug. The call's state change stands.
                    v.counters.record_response_write_failure();
                    Status::BAD_BUFFER
                }
            }
            Err(status) => status,
        };
        v.counters.record(binding, code, status);
        Ok(status)
    }

    fn call_steps<M: GuestMemory + ?Sized>(
        phys: &mut Phys<'_, T, R, P>,
        vm: &mut Vm,
        mem: &M,
        code: CallCode,
        req: GuestBuffer,
        resp: GuestBuffer,
        exclude: Option<GuestBuffer>,
    ) -> Result<calls::Response, Status> {
        // 1. VIR-CALL-H-002 (and no interface at all without host IR: VIR-DISC-H-001).
        let layout = match call_layout(code) {
            Some(l) if phys.config.vir_available() => l,
            _ => return Err(Status::UNKNOWN_CALL),
        };
        // 2. VIR-MEM-H-001
        if req.len != u64::from(layout.request_len())
            || resp.len != u64::from(layout.response_len())
        {
            return Err(Status::BAD_LENGTH);
        }
        // 3. VIR-MEM-H-002..006
        memory::check_buffers(mem, req, resp, exclude, &vm.config.guest_writable)?;
        // 4. VIR-MEM-H-007: one copy; nothing below looks at guest memory again.
        let copy = memory::read_request(mem, req)?;
        // 5–8.
        calls::dispatch(phys, vm, code, copy.bytes())
    }

    /// The register binding (x86 `VMCALL` / `VMMCALL` exit of vCPU `vcpu_index`).
    ///
    /// Returns `Ok(false)` and leaves `regs` untouched when `RAX` is not a vIR call (or vIR is
    /// not offered); the VMM then handles the hypercall as before. Otherwise performs the call
    /// and sets `RAX` to the status, zero-extended.
    pub fn vmcall<M: GuestMemory + ?Sized>(
        &mut self,
        vm: VmId,
        vcpu_index: u32,
        regs: &mut X86Regs,
        mem: &M,
    ) -> Result<bool, HostError> {
        self.check_vcpu(vm, vcpu_index)?;
        let Some(code) = decode_rax(regs.rax) else {
            return Ok(false);
        };
        if !self.vir_available() {
            return Ok(false);
        }
        let req = GuestBuffer {
            gpa: regs.rbx,
            len: regs.rcx,
        };
        let resp = GuestBuffer {
            gpa: regs.rdx,
            len: regs.rsi,
        };
        let status = self.call(vm, mem, code, req, resp, None, Binding::Register)?;
        regs.rax = u64::from(status.0);
        Ok(true)
    }

    /// The port-I/O doorbell binding: a 32-bit `OUT` of vCPU `vcpu_index` to `port`.
    ///
    /// A write to `base + DOORBELL_GPA_LO` latches GPA bits 31:0 for this vCPU; a write to
    /// `base + DOORBELL_GPA_HI` rings: the [`DoorbellBlock`] at `value << 32 | latch` is read
    /// once, checked (reserved `call` bits 31:16 → `INVALID_PARAMETER`), the call performed
    /// (its buffers must not overlap the block) and the status stored in the block's `status`
    /// field. A block that is misaligned, crosses a page or is not RAM is ignored and counted.
    pub fn pio_write<M: GuestMemory + ?Sized>(
        &mut self,
        vm: VmId,
        vcpu_index: u32,
        port: u16,
        value: u32,
        mem: &M,
    ) -> Result<PioOutcome, HostError> {
        self.check_vcpu(vm, vcpu_index)?;
        let Some(base) = self.config.doorbell_port else {
            return Ok(PioOutcome::NotClaimed);
        };
        if !self.vir_available() || port < base || port - base >= DOORBELL_PORT_COUNT {
            return Ok(PioOutcome::NotClaimed);
        }
        let offset = port - base;
        let v = self.vms.get_mut(&vm).ok_or(HostError::UnknownVm(vm))?;
        let ignored = |v: &mut Vm, why| {
            v.counters.record_doorbell_ignored();
            Ok(PioOutcome::Ignored(why))
        };
        if offset == DOORBELL_GPA_LO {
            if let Some(latch) = v.doorbell_latch.get_mut(vcpu_index as usize) {
                *latch = value;
            }
            return Ok(PioOutcome::Latched);
        }
        if offset != DOORBELL_GPA_HI {
            return ignored(v, DoorbellIgnored::BadPortOffset(offset));
        }
        let low = v
            .doorbell_latch
            .get(vcpu_index as usize)
            .copied()
            .unwrap_or(0);
        let gpa = (u64::from(value) << 32) | u64::from(low);
        const BLOCK: u64 = core::mem::size_of::<DoorbellBlock>() as u64;
        if !gpa.is_multiple_of(BUFFER_ALIGN) {
            return ignored(v, DoorbellIgnored::Misaligned(gpa));
        }
        if gpa % PAGE_SIZE + BLOCK > PAGE_SIZE {
            return ignored(v, DoorbellIgnored::CrossesPage(gpa));
        }
        let addr = GuestAddress(gpa);
        if !memory::block_usable(mem, &v.config.guest_writable, gpa, BLOCK) {
            return ignored(v, DoorbellIgnored::Unbacked(gpa));
        }
        let mut raw = [0u8; BLOCK as usize];
        if mem.read_slice(&mut raw, addr).is_err() {
            return ignored(v, DoorbellIgnored::Unbacked(gpa));
        }
        let Ok(block) = DoorbellBlock::read_from_bytes(&raw) else {
            return ignored(v, DoorbellIgnored::Unbacked(gpa));
        };
        let call = block.call.get();
        let code = CallCode(call as u16);
        let status = if call >> 16 != 0 {
            v.counters
                .record(Binding::Doorbell, code, Status::INVALID_PARAMETER);
            Status::INVALID_PARAMETER
        } else {
            let req = GuestBuffer {
                gpa: block.request_gpa.get(),
                len: u64::from(block.request_len.get()),
            };
            let resp = GuestBuffer {
                gpa: block.response_gpa.get(),
                len: u64::from(block.response_len.get()),
            };
            let this = GuestBuffer { gpa, len: BLOCK };
            self.call(vm, mem, code, req, resp, Some(this), Binding::Doorbell)?
        };
        let status_addr = GuestAddress(gpa + core::mem::offset_of!(DoorbellBlock, status) as u64);
        if mem
            .write_slice(&status.0.to_le_bytes(), status_addr)
            .is_err()
            && let Some(v) = self.vms.get_mut(&vm)
        {
            v.counters.record_response_write_failure();
        }
        Ok(PioOutcome::Completed(status))
    }

    /// The vIR CPUID leaves as seen by VM `vm`: `Some([eax, ebx, ecx, edx])` for the base leaf
    /// (highest vIR leaf, signature) and the info leaf (versions, bindings, doorbell port);
    /// `None` for any other leaf, and for every leaf when vIR is not offered (VIR-DISC-H-001).
    pub fn cpuid(&self, vm: VmId, leaf: u32) -> Result<Option<[u32; 4]>, HostError> {
        self.vm_checked(vm)?;
        if !self.vir_available() {
            return Ok(None);
        }
        let base = self.config.cpuid_base;
        let info = base + vir_abi::discovery::CPUID_INFO_OFFSET;
        if leaf == base {
            let [b, c, d] = signature_regs();
            Ok(Some([info, b, c, d]))
        } else if leaf == info {
            // VIR-DISC-H-002: 1 <= min <= max, at least one binding, doorbell port != 0.
            let leaf = InfoLeaf {
                min_version: MIN_VERSION,
                max_version: MAX_VERSION,
                bindings: self.config.bindings(),
                doorbell_port: self.config.doorbell_port.unwrap_or(0),
            };
            Ok(Some(leaf.encode()))
        } else {
            Ok(None)
        }
    }

    /// Platform reset of VM `vm` (reboot, host-initiated): every allocation freed (IRTEs not
    /// present, host IRQs stopped, routes removed), state back to legacy with MSI-X trapping,
    /// legacy interrupts disabled, doorbell latches cleared (VIR-RST-H-001..003). Handles issued
    /// before stay stale until VIR-ALC-H-010 lets their values be issued again; the session
    /// counter keeps counting.
    pub fn reset_vm(&mut self, vm: VmId) -> Result<(), HostError> {
        let Host {
            config,
            table,
            routing,
            irqs,
            alloc,
            vms,
            ..
        } = self;
        let v = vms.get_mut(&vm).ok_or(HostError::UnknownVm(vm))?;
        let mut phys = Phys {
            config,
            table,
            routing,
            irqs,
            alloc,
        };
        calls::reset(&mut phys, v);
        // A platform reset also resets the emulated remapping unit.
        v.legacy.viommu = crate::legacy::viommu::Viommu::default();
        v.legacy_enabled = 0;
        v.doorbell_latch.iter_mut().for_each(|l| *l = 0);
        Ok(())
    }

    /// The physical side and VM `vm`, for the legacy trap code.
    pub(crate) fn split(&mut self, vm: VmId) -> Option<(Phys<'_, T, R, P>, &mut Vm)> {
        let Host {
            config,
            table,
            routing,
            irqs,
            alloc,
            vms,
            ..
        } = self;
        let v = vms.get_mut(&vm)?;
        Some((
            Phys {
                config,
                table,
                routing,
                irqs,
                alloc,
            },
            v,
        ))
    }

    /// Convenience for [`Vm::set_legacy_interrupts_enabled`].
    pub fn set_legacy_interrupts_enabled(&mut self, vm: VmId, count: u32) -> Result<(), HostError> {
        self.vms
            .get_mut(&vm)
            .ok_or(HostError::UnknownVm(vm))?
            .set_legacy_interrupts_enabled(count);
        Ok(())
    }

    /// A complete, comparable picture of the host state a call of VM `vm` may change.
    pub fn snapshot(&self, vm: VmId) -> Result<VmSnapshot, HostError> {
        let v = self.vm_checked(vm)?;
        Ok(VmSnapshot::capture(v, &self.alloc, &self.table))
    }
}

impl<T, R, P> fmt::Debug for Host<T, R, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("config", &self.config)
            .field("table_free", &self.alloc.free())
            .field("vms", &self.vms.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
