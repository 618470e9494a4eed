//! The reference guest's environment over the reference host and the simulated platform.
//!
//! * [`HostCpuid`] ([`Cpuid`]): CPUID as the VM sees it — leaf 1 with the hypervisor bit, the
//!   hypervisor's own leaf `0x4000_0000` (KVM's signature) and the vIR leaves answered by
//!   [`Host::cpuid`](vir_host::Host::cpuid); every other leaf reads as zero.
//! * [`VmcallTransport`] ([`Hypervisor`], register binding): the request and response live in a
//!   reserved page of guest memory; the transport writes the request bytes there, loads
//!   `RAX`/`RBX`/`RCX`/`RDX`/`RSI` and exits to [`Host::vmcall`](vir_host::Host::vmcall), then
//!   reads the status from `RAX` (a value with bits 63:32 set is no status, VIR-REG-G-003) and,
//!   on success, the response from guest memory.
//! * [`DoorbellTransport`] ([`Hypervisor`], port-I/O doorbell binding): fills a
//!   [`DoorbellBlock`] in its page and writes the block's GPA to the doorbell ports
//!   ([`Host::pio_write`](vir_host::Host::pio_write)); the status is read back from the block.
//! * [`SimTransport`]: either of the two, chosen per VM.
//! * [`SimStorage`] ([`InterruptStorage`]): the guest's storage writes go to the machine's
//!   devices ([`Machine::write_message`](vir_platform::Machine::write_message), masks, MSI
//!   enable, IMS queue contexts in guest memory).
//!
//! Buffers obey VIR-MEM-G-001: 8-byte aligned, inside one page, not overlapping, and untouched
//! while the call is in flight.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use vir_abi::call::{CallCode, DOORBELL_GPA_HI, DOORBELL_GPA_LO, PAGE_SIZE, encode_rax};
use vir_abi::discovery::CPUID1_ECX_HYPERVISOR;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::status::Status;
use vir_abi::wire::DoorbellBlock;
use vir_guest::hypercall::status_from_rax;
use vir_guest::{
    Cpuid, CpuidResult, DeviceId as GuestDeviceId, Hypervisor, InterruptStorage, StorageError,
    StorageSlot as GuestSlot, StorageType,
};
use vir_host::{Host, PioOutcome, VmId, X86Regs};
use vir_platform::device::DeviceError;
use vir_platform::{DeviceId, MachineError, StorageKind, StorageSlot};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::host_backends::{SharedMachine, SimIrteTable, SimPhysicalIrqs, SimRouting};

/// The reference host over the simulated platform.
pub type SimHost = Host<SimIrteTable, SimRouting, SimPhysicalIrqs>;

/// The host shared by the guests' transports and the world.
pub type SharedHost = Rc<RefCell<SimHost>>;

/// KVM's answer to a hypercall it does not handle: `RAX = -KVM_ENOSYS` (-1000).
pub const KVM_ENOSYS_RAX: u64 = (-1000i64) as u64;

/// What a doorbell block's status holds until the host writes it: a value no status has, so a
/// ring the host ignored reads back as an unknown status (errno `EIO`).
pub const STATUS_PENDING: u32 = u32::MAX;

/// Which binding a guest uses for its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallBinding {
    /// x86 `VMCALL` (register binding).
    Vmcall,
    /// Port-I/O doorbell.
    Doorbell,
}

impl core::fmt::Display for CallBinding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Vmcall => "vmcall",
            Self::Doorbell => "doorbell",
        })
    }
}

// ---------------------------------------------------------------------------------------------
// CPUID
// ---------------------------------------------------------------------------------------------

/// The hypervisor's own CPUID base leaf.
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;

/// CPUID of a vCPU of one VM.
#[derive(Debug, Clone)]
pub struct HostCpuid {
    host: SharedHost,
    vm: VmId,
}

impl HostCpuid {
    /// CPUID of VM `vm` of `host`.
    pub fn new(host: SharedHost, vm: VmId) -> Self {
        Self { host, vm }
    }
}

impl Cpuid for HostCpuid {
    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> CpuidResult {
        if let Ok(Some([eax, ebx, ecx, edx])) = self.host.borrow().cpuid(self.vm, leaf) {
            return CpuidResult { eax, ebx, ecx, edx };
        }
        match leaf {
            // VIR-DISC-G-001: the hypervisor-present bit the guest checks first.
            1 => CpuidResult {
                ecx: CPUID1_ECX_HYPERVISOR,
                ..CpuidResult::default()
            },
            // "KVMKVMKVM\0\0\0": a hypervisor base without the vIR signature, scanned past.
            KVM_CPUID_SIGNATURE => CpuidResult {
                eax: KVM_CPUID_SIGNATURE + 1,
                ebx: u32::from_le_bytes(*b"KVMK"),
                ecx: u32::from_le_bytes(*b"VMKV"),
                edx: u32::from_le_bytes(*b"M\0\0\0"),
            },
            _ => CpuidResult::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

/// Counters of a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransportStats {
    /// Calls made.
    pub calls: u64,
    /// Calls the host did not claim (it answered as a VMM without vIR would).
    pub not_claimed: u64,
    /// Calls whose buffers did not fit the transport's page (answered `BAD_LENGTH` locally).
    pub refused: u64,
    /// Guest-memory accesses of the transport that failed (answered `BAD_BUFFER` locally).
    pub memory_errors: u64,
}

/// Offset of the response buffer in a transport page (the request starts at offset 0 for the
/// register binding, at [`DOORBELL_REQUEST_OFFSET`] for the doorbell).
pub const RESPONSE_OFFSET: u64 = 0x800;

/// Offset of the request buffer in a doorbell page (the block is at offset 0).
pub const DOORBELL_REQUEST_OFFSET: u64 = 0x100;

fn fits(len: usize, room: u64) -> bool {
    u64::try_from(len).is_ok_and(|l| l <= room)
}

/// The register binding of one vCPU (`VMCALL`).
#[derive(Debug, Clone)]
pub struct VmcallTransport {
    host: SharedHost,
    vm: VmId,
    vcpu_index: u32,
    mem: GuestMemoryMmap,
    page: u64,
    stats: TransportStats,
}

impl VmcallTransport {
    /// Calls of vCPU `vcpu_index` of `vm`, with buffers in the page at `page` of `mem`.
    pub fn new(
        host: SharedHost,
        vm: VmId,
        vcpu_index: u32,
        mem: GuestMemoryMmap,
        page: u64,
    ) -> Self {
        Self {
            host,
            vm,
            vcpu_index,
            mem,
            page: page & !(PAGE_SIZE - 1),
            stats: TransportStats::default(),
        }
    }

    /// Counters.
    pub const fn stats(&self) -> TransportStats {
        self.stats
    }
}

impl Hypervisor for VmcallTransport {
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
        self.stats.calls += 1;
        if !fits(request.len(), RESPONSE_OFFSET) || !fits(response.len(), RESPONSE_OFFSET) {
            self.stats.refused += 1;
            return Status::BAD_LENGTH;
        }
        // VIR-MEM-H-002: a zero-length buffer has GPA 0.
        let req_gpa = if request.is_empty() { 0 } else { self.page };
        let resp_gpa = if response.is_empty() {
            0
        } else {
            self.page + RESPONSE_OFFSET
        };
        if !request.is_empty()
            && self
                .mem
                .write_slice(request, GuestAddress(req_gpa))
                .is_err()
        {
            self.stats.memory_errors += 1;
            return Status::BAD_BUFFER;
        }
        let mut regs = X86Regs {
            rax: encode_rax(code),
            rbx: req_gpa,
            rcx: request.len() as u64,
            rdx: resp_gpa,
            rsi: response.len() as u64,
            rdi: 0,
        };
        let claimed = self
            .host
            .borrow_mut()
            .vmcall(self.vm, self.vcpu_index, &mut regs, &self.mem);
        if claimed != Ok(true) {
            self.stats.not_claimed += 1;
            regs.rax = KVM_ENOSYS_RAX;
        }
        // VIR-REG-G-003: RAX with bits 63:32 set (KVM's -ENOSYS included) is no status.
        let status = status_from_rax(regs.rax);
        if status == Status::SUCCESS
            && !response.is_empty()
            && self
                .mem
                .read_slice(response, GuestAddress(resp_gpa))
                .is_err()
        {
            self.stats.memory_errors += 1;
            return Status::BAD_BUFFER;
        }
        status
    }
}

/// The port-I/O doorbell binding of one vCPU.
#[derive(Debug, Clone)]
pub struct DoorbellTransport {
    host: SharedHost,
    vm: VmId,
    vcpu_index: u32,
    mem: GuestMemoryMmap,
    port: u16,
    page: u64,
    stats: TransportStats,
    last_outcome: Option<PioOutcome>,
}

impl DoorbellTransport {
    /// Calls of vCPU `vcpu_index` of `vm` through the doorbell at `port` (from the info leaf),
    /// with the block and buffers in the page at `page` of `mem`.
    pub fn new(
        host: SharedHost,
        vm: VmId,
        vcpu_index: u32,
        mem: GuestMemoryMmap,
        port: u16,
        page: u64,
    ) -> Self {
        Self {
            host,
            vm,
            vcpu_index,
            mem,
            port,
            page: page & !(PAGE_SIZE - 1),
            stats: TransportStats::default(),
            last_outcome: None,
        }
    }

    /// Counters.
    pub const fn stats(&self) -> TransportStats {
        self.stats
    }

    /// What the ringing port write of the last call did.
    pub const fn last_outcome(&self) -> Option<PioOutcome> {
        self.last_outcome
    }

    fn out(&mut self, offset: u16, value: u32) -> Option<PioOutcome> {
        let port = self.port.checked_add(offset)?;
        self.host
            .borrow_mut()
            .pio_write(self.vm, self.vcpu_index, port, value, &self.mem)
            .ok()
    }
}

impl Hypervisor for DoorbellTransport {
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
        self.stats.calls += 1;
        let room = RESPONSE_OFFSET - DOORBELL_REQUEST_OFFSET;
        let (Ok(req_len), Ok(resp_len)) =
            (u32::try_from(request.len()), u32::try_from(response.len()))
        else {
            self.stats.refused += 1;
            return Status::BAD_LENGTH;
        };
        if !fits(request.len(), room) || !fits(response.len(), PAGE_SIZE - RESPONSE_OFFSET) {
            self.stats.refused += 1;
            return Status::BAD_LENGTH;
        }
        let req_gpa = if request.is_empty() {
            0
        } else {
            self.page + DOORBELL_REQUEST_OFFSET
        };
        let resp_gpa = if response.is_empty() {
            0
        } else {
            self.page + RESPONSE_OFFSET
        };
        let block = DoorbellBlock {
            call: U32::new(u32::from(code.0)),
            status: U32::new(STATUS_PENDING),
            request_gpa: U64::new(req_gpa),
            request_len: U32::new(req_len),
            response_len: U32::new(resp_len),
            response_gpa: U64::new(resp_gpa),
        };
        let written = self
            .mem
            .write_slice(block.as_bytes(), GuestAddress(self.page))
            .and_then(|()| {
                if request.is_empty() {
                    Ok(())
                } else {
                    self.mem.write_slice(request, GuestAddress(req_gpa))
                }
            });
        if written.is_err() {
            self.stats.memory_errors += 1;
            return Status::BAD_BUFFER;
        }
        let lo = self.out(DOORBELL_GPA_LO, self.page as u32);
        let rang = self.out(DOORBELL_GPA_HI, (self.page >> 32) as u32);
        self.last_outcome = rang;
        if !matches!(lo, Some(PioOutcome::Latched))
            || !matches!(rang, Some(PioOutcome::Completed(_)))
        {
            self.stats.not_claimed += 1;
        }
        // The guest reads the status from the block, as after a real OUT.
        let mut raw = [0u8; core::mem::size_of::<DoorbellBlock>()];
        if self
            .mem
            .read_slice(&mut raw, GuestAddress(self.page))
            .is_err()
        {
            self.stats.memory_errors += 1;
            return Status::BAD_BUFFER;
        }
        let Ok(block) = DoorbellBlock::read_from_bytes(&raw) else {
            self.stats.memory_errors += 1;
            return Status::BAD_BUFFER;
        };
        let status = Status(block.status.get());
        if status == Status::SUCCESS
            && !response.is_empty()
            && self
                .mem
                .read_slice(response, GuestAddress(resp_gpa))
                .is_err()
        {
            self.stats.memory_errors += 1;
            return Status::BAD_BUFFER;
        }
        status
    }
}

/// A guest's transport: one of the two bindings.
#[derive(Debug, Clone)]
pub enum SimTransport {
    /// Register binding.
    Vmcall(VmcallTransport),
    /// Port-I/O doorbell binding.
    Doorbell(DoorbellTransport),
}

impl SimTransport {
    /// The binding.
    pub const fn binding(&self) -> CallBinding {
        match self {
            Self::Vmcall(_) => CallBinding::Vmcall,
            Self::Doorbell(_) => CallBinding::Doorbell,
        }
    }

    /// Counters.
    pub const fn stats(&self) -> TransportStats {
        match self {
            Self::Vmcall(t) => t.stats(),
            Self::Doorbell(t) => t.stats(),
        }
    }
}

impl Hypervisor for SimTransport {
    fn call(&mut self, code: CallCode, request: &[u8], response: &mut [u8]) -> Status {
        match self {
            Self::Vmcall(t) => t.call(code, request, response),
            Self::Doorbell(t) => t.call(code, request, response),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------

/// Counters of [`SimStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimStorageStats {
    /// MSI-X functions enabled on the first entry mask (the `InterruptStorage` trait has no MSI-X
    /// enable).
    pub msix_enables: u64,
    /// Pending interrupts released by an unmask (they fired at once).
    pub released: u64,
    /// Device errors without an exact `StorageError` counterpart (reported as `NoStorage`).
    pub unmapped_errors: u64,
}

/// The platform's slot for a guest slot (for MSI, the vector index `msi_vector`).
pub const fn platform_slot(slot: GuestSlot, msi_vector: u32) -> StorageSlot {
    match slot {
        GuestSlot::Msi => StorageSlot::msi(msi_vector),
        GuestSlot::MsiX(i) => StorageSlot::msix(i),
        GuestSlot::ImsDevice(i) => StorageSlot::ims_device(i),
        GuestSlot::ImsSystem(i) => StorageSlot::ims_system(i),
    }
}

const fn storage_type(kind: StorageKind) -> StorageType {
    match kind {
        StorageKind::Msi => StorageType::Msi,
        StorageKind::MsiX => StorageType::MsiX,
        StorageKind::ImsDevice => StorageType::ImsDevice,
        StorageKind::ImsSystem => StorageType::ImsSystem,
    }
}

/// [`InterruptStorage`] over the machine's devices, for the devices of one VM.
#[derive(Debug)]
pub struct SimStorage {
    machine: SharedMachine,
    devices: BTreeMap<GuestDeviceId, DeviceId>,
    stats: SimStorageStats,
}

impl SimStorage {
    /// Storage of the devices in `devices` (guest-visible id → machine device).
    pub fn new(machine: SharedMachine, devices: BTreeMap<GuestDeviceId, DeviceId>) -> Self {
        Self {
            machine,
            devices,
            stats: SimStorageStats::default(),
        }
    }

    /// Counters.
    pub const fn stats(&self) -> SimStorageStats {
        self.stats
    }

    /// The machine device behind guest device `device`.
    pub fn device(&self, device: GuestDeviceId) -> Option<DeviceId> {
        self.devices.get(&device).copied()
    }

    fn lookup(&self, device: GuestDeviceId) -> Result<DeviceId, StorageError> {
        self.device(device)
            .ok_or(StorageError::NoSuchDevice(device))
    }

    fn map_error(
        &mut self,
        device: GuestDeviceId,
        slot: GuestSlot,
        e: MachineError,
    ) -> StorageError {
        match e {
            MachineError::NoSuchDevice(_) => StorageError::NoSuchDevice(device),
            MachineError::Device {
                error: DeviceError::NoStorage(kind),
                ..
            } => StorageError::NoStorage {
                device,
                storage: storage_type(kind),
            },
            MachineError::Device {
                error: DeviceError::IndexOutOfRange { size, .. },
                ..
            } => StorageError::IndexOutOfRange { device, slot, size },
            _ => {
                self.stats.unmapped_errors += 1;
                StorageError::NoStorage {
                    device,
                    storage: slot.storage_type(),
                }
            }
        }
    }
}

impl InterruptStorage for SimStorage {
    fn write_message(
        &mut self,
        device: GuestDeviceId,
        slot: GuestSlot,
        message: MsiMessage,
    ) -> Result<(), StorageError> {
        let dev = self.lookup(device)?;
        let pslot = platform_slot(slot, 0);
        let machine = Rc::clone(&self.machine);
        let mut m = machine.borrow_mut();
        m.write_message(dev, pslot, message)
            .map_err(|e| self.map_error(device, slot, e))
    }

    fn set_masked(
        &mut self,
        device: GuestDeviceId,
        slot: GuestSlot,
        masked: bool,
    ) -> Result<(), StorageError> {
        let dev = self.lookup(device)?;
        if slot == GuestSlot::Msi {
            return Err(StorageError::NotMaskable { device, slot });
        }
        let machine = Rc::clone(&self.machine);
        let mut m = machine.borrow_mut();
        let enabled = match slot {
            GuestSlot::MsiX(_) => m
                .device(dev)
                .map_err(|e| self.map_error(device, slot, e))?
                .msix()
                .map(|x| x.enabled()),
            _ => None,
        };
        if enabled == Some(false) {
            // Linux enables MSI-X when it sets the vectors up, every entry masked.
            let released = m
                .set_msix_control(dev, true, false)
                .map_err(|e| self.map_error(device, slot, e))?;
            self.stats.msix_enables += 1;
            self.stats.released += released.len() as u64;
        }
        let released = m
            .set_masked(dev, platform_slot(slot, 0), masked)
            .map_err(|e| self.map_error(device, slot, e))?;
        self.stats.released += released.len() as u64;
        Ok(())
    }

    fn msi_enable(&mut self, device: GuestDeviceId, nvec: u32) -> Result<(), StorageError> {
        let dev = self.lookup(device)?;
        let machine = Rc::clone(&self.machine);
        let mut m = machine.borrow_mut();
        let capable = m
            .device(dev)
            .map_err(|e| self.map_error(device, GuestSlot::Msi, e))?
            .msi()
            .map(|c| c.capable_vectors())
            .ok_or(StorageError::NoStorage {
                device,
                storage: StorageType::Msi,
            })?;
        if !nvec.is_power_of_two() || nvec > capable {
            return Err(StorageError::InvalidVectorCount {
                device,
                nvec,
                max: capable,
            });
        }
        m.set_msi_control(dev, true, nvec.trailing_zeros() as u8)
            .map_err(|e| self.map_error(device, GuestSlot::Msi, e))
    }

    fn msi_disable(&mut self, device: GuestDeviceId) -> Result<(), StorageError> {
        let dev = self.lookup(device)?;
        let machine = Rc::clone(&self.machine);
        let mut m = machine.borrow_mut();
        m.set_msi_control(dev, false, 0)
            .map_err(|e| self.map_error(device, GuestSlot::Msi, e))
    }
}
