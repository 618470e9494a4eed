//! The simulated world: one [`Machine`], one reference [`Host`](vir_host::Host) over it, and one
//! or more VMs, each with its devices and a reference guest ([`SimGuest`]).
//!
//! [`WorldBuilder`] assembles it the way a VMM and a booting guest would:
//!
//! 1. the machine: physical CPUs with a limited number of host vectors each, the VT-d unit with
//!    remapping on and compatibility format blocked (VIR-DISC-H-001), posted descriptors;
//! 2. the host over the three backends of [`crate::host_backends`], in posted or remapped mode;
//! 3. per VM: the KVM VM (guest memory and vCPUs, possibly with APIC ids above 255), a posted
//!    descriptor per vCPU, the devices (assigned to the VM, attached to its memory for the DMA of
//!    system-memory IMS contexts, whose addresses the driver programs at probe), the host's VM
//!    with the same devices and quotas;
//! 4. per guest: discovery through CPUID, the transport of the chosen binding, negotiation, and
//!    the interrupt subsystem over the vIR domain and the devices' storage.
//!
//! The machine and the host are shared ([`SharedMachine`], [`SharedHost`]): the host's backends,
//! the guests' transports and storage and the world all reach them. Borrows are short and never
//! nested across a guest operation; a caller holding [`World::machine`] or [`World::host`] must
//! drop it before driving a guest.
//!
//! [`World::fire`] runs one interrupt from a device through the whole platform and lets the
//! receiving guest handle it: the LAPIC's acknowledge, the guest's vector→irq table
//! ([`vir_guest::IrqSubsystem::handle_interrupt`]), EOI. [`World::check`] compares the result
//! with what the guest's state says.

use std::cell::{Ref, RefCell, RefMut};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use vir_abi::discovery::binding;
use vir_abi::feature::Features;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::hw::vtd::Irta;
use vir_guest::{
    CpuId, DeviceId as GuestDeviceId, DiscoveryError, Irq, IrqConfig, IrqState, IrqSubsystem,
    NegotiationError, Platform, Session, VirDomain, VirInterface, discover,
};
use vir_host::{
    AmdIrteFormat, DeviceConfig as HostDevice, HostConfig, HostError, IommuKind, IrMode, Quotas,
    SourceValidation, StorageSizes, VcpuConfig, VmConfig as HostVmConfig, VmId,
};
use vir_platform::amd_iommu::{DteInterrupt, IrteWidth};
use vir_platform::device::{DeviceConfig, MsiConfig};
use vir_platform::kvm::VmConfig as KvmVmConfig;
use vir_platform::machine::POSTED_INTR_VECTOR;
use vir_platform::{
    DeviceId, FireOutcome, GuestApicId, HostApicId, Machine, MachineConfig, MachineError,
    RequesterId, StorageKind, StorageSlot, VcpuRef,
};

use crate::guest_env::{
    CallBinding, DoorbellTransport, HostCpuid, SharedHost, SimHost, SimStorage, SimTransport,
    VmcallTransport, platform_slot,
};
use crate::host_backends::{
    KVM_MAX_IRQ_ROUTES, SharedMachine, SimIrteTable, SimPhysicalIrqs, SimRouting, platform_vm,
};

/// The vIR domain of a simulated guest.
pub type SimDomain = VirDomain<SimTransport>;

/// A simulated guest's interrupt subsystem.
pub type SimGuest = IrqSubsystem<SimDomain, SimStorage>;

/// Guest-physical page of the register binding's buffers.
pub const HYPERCALL_PAGE: u64 = 0x1000;
/// Guest-physical page of the doorbell block and its buffers.
pub const DOORBELL_PAGE: u64 = 0x2000;
/// Guest-physical base of the system-memory IMS queue contexts; device `i` of a VM (in spec
/// order) has its contexts at `IMS_CONTEXT_BASE + i * IMS_CONTEXT_STRIDE`, 16 bytes per queue.
pub const IMS_CONTEXT_BASE: u64 = 0x10_0000;
/// Guest-physical space reserved for one device's queue contexts (4096 queues).
pub const IMS_CONTEXT_STRIDE: u64 = 0x1_0000;
/// Default guest memory size.
pub const DEFAULT_MEMORY: usize = 0x40_0000;
/// Default host vectors per physical CPU (Linux x86 has about this many device vectors free per
/// CPU once the system vectors and the legacy range are taken).
pub const DEFAULT_VECTORS_PER_PCPU: u16 = 187;

/// One device of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// A name for reports.
    pub name: String,
    /// The id the guest names the device by (segment, bus:dev.fn in the VM).
    pub guest_id: GuestDeviceId,
    /// The physical requester id (host bus:dev.fn), which the IOMMU sees.
    pub requester_id: u16,
    /// MSI capability with 2^`log2` vectors.
    pub msi_log2: Option<u8>,
    /// MSI-X table entries (0: none).
    pub msix_entries: u32,
    /// IMS array entries in device memory (0: none).
    pub ims_device_entries: u32,
    /// IMS queues with their message in system memory (0: none).
    pub ims_system_queues: u32,
    /// How the host's IRTEs for it check the source of its requests.
    pub source_validation: SourceValidation,
}

impl DeviceSpec {
    /// A device without interrupt storage.
    pub fn new(name: impl Into<String>, guest_id: GuestDeviceId, requester_id: u16) -> Self {
        Self {
            name: name.into(),
            guest_id,
            requester_id,
            msi_log2: None,
            msix_entries: 0,
            ims_device_entries: 0,
            ims_system_queues: 0,
            source_validation: SourceValidation::RequesterId,
        }
    }

    /// With IRTEs that check the source this way (a device behind a PCIe-to-PCI bridge:
    /// [`SourceValidation::BusRange`]).
    pub fn with_source_validation(mut self, source_validation: SourceValidation) -> Self {
        self.source_validation = source_validation;
        self
    }

    /// With an MSI capability of 2^`log2` vectors.
    pub fn with_msi(mut self, log2: u8) -> Self {
        self.msi_log2 = Some(log2);
        self
    }

    /// With an MSI-X table of `entries` entries.
    pub fn with_msix(mut self, entries: u32) -> Self {
        self.msix_entries = entries;
        self
    }

    /// With an IMS array of `entries` entries in device memory.
    pub fn with_ims_device(mut self, entries: u32) -> Self {
        self.ims_device_entries = entries;
        self
    }

    /// With `queues` IMS queues whose messages live in guest memory.
    pub fn with_ims_system(mut self, queues: u32) -> Self {
        self.ims_system_queues = queues;
        self
    }

    /// Interrupt sources of every kind.
    pub fn sources(&self) -> u32 {
        self.msi_log2.map_or(0, |l| 1u32 << l.min(5))
            + self.msix_entries
            + self.ims_device_entries
            + self.ims_system_queues
    }
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The guest (x2)APIC id of each vCPU; logical CPU `i` has `apic_ids[i]`.
    pub apic_ids: Vec<u32>,
    /// Its devices.
    pub devices: Vec<DeviceSpec>,
    /// Its quotas on the host.
    pub quotas: Quotas,
    /// The binding its guest calls with.
    pub binding: CallBinding,
    /// The features its guest asks for.
    pub features: Features,
    /// Guest memory in bytes (from GPA 0).
    pub memory: usize,
}

impl VmSpec {
    /// A VM with these vCPUs, no device, 4096 IRTEs and vectors of quota, `VMCALL`, every
    /// version 1 feature, 4 MiB of memory.
    pub fn new(apic_ids: Vec<u32>) -> Self {
        Self {
            apic_ids,
            devices: Vec::new(),
            quotas: Quotas {
                irtes: 4096,
                vectors: 4096,
            },
            binding: CallBinding::Vmcall,
            features: Features::V1_DEFINED,
            memory: DEFAULT_MEMORY,
        }
    }

    /// With a device.
    pub fn with_device(mut self, device: DeviceSpec) -> Self {
        self.devices.push(device);
        self
    }

    /// With quotas.
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// With a binding.
    pub fn with_binding(mut self, binding: CallBinding) -> Self {
        self.binding = binding;
        self
    }

    /// With the features the guest asks for.
    pub fn with_features(mut self, features: Features) -> Self {
        self.features = features;
        self
    }
}

/// A specification the world cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// No physical CPU.
    NoPcpus,
    /// No VM.
    NoVms,
    /// A VM without vCPUs (carries the VM index).
    NoVcpus(usize),
    /// An MSI capability above 32 vectors.
    MsiLog2 {
        /// The device.
        device: String,
        /// The log2 given.
        log2: u8,
    },
    /// More IMS queues than [`IMS_CONTEXT_STRIDE`] holds (4096).
    TooManyImsQueues {
        /// The device.
        device: String,
        /// The queues given.
        queues: u32,
    },
    /// Guest memory too small for the transport pages and the queue contexts.
    MemoryTooSmall {
        /// The VM index.
        vm: usize,
        /// The memory given.
        bytes: usize,
        /// The memory needed.
        needed: u64,
    },
    /// The remapping table size exponent is above 15 (65536 entries).
    TableSize(u8),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPcpus => f.write_str("no physical CPU"),
            Self::NoVms => f.write_str("no VM"),
            Self::NoVcpus(vm) => write!(f, "VM {vm} has no vCPU"),
            Self::MsiLog2 { device, log2 } => {
                write!(f, "{device}: MSI with 2^{log2} vectors exceeds 32")
            }
            Self::TooManyImsQueues { device, queues } => {
                write!(f, "{device}: {queues} IMS queues exceed 4096")
            }
            Self::MemoryTooSmall { vm, bytes, needed } => {
                write!(f, "VM {vm}: {bytes} bytes of memory, {needed} needed")
            }
            Self::TableSize(s) => write!(f, "remapping table size exponent {s} exceeds 15"),
        }
    }
}

/// Why a world could not be built or driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorldError {
    /// The specification is unusable.
    Spec(SpecError),
    /// The machine refused a configuration step or an operation.
    Machine(MachineError),
    /// The host refused its or a VM's configuration.
    HostConfig(vir_host::ConfigError),
    /// The host refused an operation of the VMM.
    Host(HostError),
    /// The host numbered a VM differently from the machine.
    VmIdMismatch {
        /// The machine's VM id.
        expected: u32,
        /// The host's.
        got: u32,
    },
    /// Discovery failed.
    Discovery(DiscoveryError),
    /// Discovery found no vIR interface.
    NoVir(Platform),
    /// The host does not offer the binding the VM's guest uses.
    BindingNotOffered {
        /// The binding wanted.
        binding: CallBinding,
        /// The bindings offered (info leaf bits).
        offered: u32,
    },
    /// Negotiation failed.
    Negotiation(NegotiationError),
    /// The guest's interrupt subsystem refused its configuration.
    GuestConfig(vir_guest::ConfigError),
    /// No VM with this index.
    NoSuchVm(usize),
    /// The irq is unknown to the guest or not requested.
    NotRequested {
        /// The VM index.
        vm: usize,
        /// The irq.
        irq: Irq,
    },
}

impl fmt::Display for WorldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spec(e) => e.fmt(f),
            Self::Machine(e) => write!(f, "machine: {e}"),
            Self::HostConfig(e) => write!(f, "host configuration: {e}"),
            Self::Host(e) => write!(f, "host: {e}"),
            Self::VmIdMismatch { expected, got } => {
                write!(f, "host numbered VM {expected} as {got}")
            }
            Self::Discovery(e) => write!(f, "discovery: {e}"),
            Self::NoVir(p) => write!(f, "no vIR interface found ({p:?})"),
            Self::BindingNotOffered { binding, offered } => {
                write!(f, "binding {binding} not offered (bindings {offered:#x})")
            }
            Self::Negotiation(e) => write!(f, "negotiation: {e}"),
            Self::GuestConfig(e) => write!(f, "guest: {e}"),
            Self::NoSuchVm(i) => write!(f, "no VM {i}"),
            Self::NotRequested { vm, irq } => write!(f, "VM {vm}: {irq} is not requested"),
        }
    }
}

impl std::error::Error for WorldError {}

/// Builds a [`World`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldBuilder {
    pcpus: u32,
    vectors_per_pcpu: u16,
    mode: IrMode,
    iommu: IommuKind,
    table_size_s: u8,
    gsis_per_vm: u32,
    register_bindings: u32,
    doorbell_port: Option<u16>,
    vms: Vec<VmSpec>,
}

impl Default for WorldBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl WorldBuilder {
    /// 16 physical CPUs with [`DEFAULT_VECTORS_PER_PCPU`] host vectors each, posted mode, a
    /// 4096-entry remapping table, [`KVM_MAX_IRQ_ROUTES`] GSIs per VM, no VM.
    pub fn new() -> Self {
        Self {
            pcpus: 16,
            vectors_per_pcpu: DEFAULT_VECTORS_PER_PCPU,
            mode: IrMode::Posted,
            iommu: IommuKind::Vtd,
            table_size_s: 11,
            gsis_per_vm: KVM_MAX_IRQ_ROUTES,
            register_bindings: HostConfig::default().register_bindings,
            doorbell_port: HostConfig::default().doorbell_port,
            vms: Vec::new(),
        }
    }

    /// Physical CPUs (APIC ids 0, 1, …).
    pub fn pcpus(mut self, n: u32) -> Self {
        self.pcpus = n;
        self
    }

    /// Host vectors per physical CPU.
    pub fn vectors_per_pcpu(mut self, n: u16) -> Self {
        self.vectors_per_pcpu = n;
        self
    }

    /// Posted or remapped delivery.
    pub fn mode(mut self, mode: IrMode) -> Self {
        self.mode = mode;
        self
    }

    /// The IOMMU of the machine and host (default VT-d). AMD-Vi: the machine's AMD-Vi IOMMU
    /// with per-device tables of 2048 entries (IntTabLen 11), each vCPU with a vAPIC backing
    /// page; [`WorldBuilder::table_size_s`] then sizes only the unused VT-d unit.
    pub fn iommu(mut self, iommu: IommuKind) -> Self {
        self.iommu = iommu;
        self
    }

    /// Remapping table of 2^(`s` + 1) entries (IRTA.S).
    pub fn table_size_s(mut self, s: u8) -> Self {
        self.table_size_s = s;
        self
    }

    /// GSIs per VM in the KVM routing table.
    pub fn gsis_per_vm(mut self, n: u32) -> Self {
        self.gsis_per_vm = n;
        self
    }

    /// The bindings the host offers in the info leaf: `register` of
    /// [`binding::VMCALL`] and [`binding::VMMCALL`], and the doorbell at `doorbell_port` (`None`:
    /// no doorbell). Default: the host's ([`HostConfig::default`]). A guest uses only a binding
    /// offered (VIR-DISC-G-003): a VM whose binding is not offered fails to build with
    /// [`WorldError::BindingNotOffered`].
    pub fn host_bindings(mut self, register: u32, doorbell_port: Option<u16>) -> Self {
        self.register_bindings = register;
        self.doorbell_port = doorbell_port;
        self
    }

    /// Adds a VM.
    pub fn vm(mut self, vm: VmSpec) -> Self {
        self.vms.push(vm);
        self
    }

    fn validate(&self) -> Result<(), SpecError> {
        if self.pcpus == 0 {
            return Err(SpecError::NoPcpus);
        }
        if self.vms.is_empty() {
            return Err(SpecError::NoVms);
        }
        if self.table_size_s > 15 {
            return Err(SpecError::TableSize(self.table_size_s));
        }
        for (i, vm) in self.vms.iter().enumerate() {
            if vm.apic_ids.is_empty() {
                return Err(SpecError::NoVcpus(i));
            }
            for d in &vm.devices {
                if let Some(log2) = d.msi_log2.filter(|&l| l > 5) {
                    return Err(SpecError::MsiLog2 {
                        device: d.name.clone(),
                        log2,
                    });
                }
                if u64::from(d.ims_system_queues) * 16 > IMS_CONTEXT_STRIDE {
                    return Err(SpecError::TooManyImsQueues {
                        device: d.name.clone(),
                        queues: d.ims_system_queues,
                    });
                }
            }
            let needed = IMS_CONTEXT_BASE + IMS_CONTEXT_STRIDE * vm.devices.len() as u64;
            if (vm.memory as u64) < needed {
                return Err(SpecError::MemoryTooSmall {
                    vm: i,
                    bytes: vm.memory,
                    needed,
                });
            }
        }
        Ok(())
    }

    /// Builds the world: machine, host, VMs, devices, and booted guests (discovered,
    /// negotiated, interrupt subsystem ready).
    pub fn build(self) -> Result<World, WorldError> {
        self.validate().map_err(WorldError::Spec)?;
        let total_vcpus: usize = self.vms.iter().map(|v| v.apic_ids.len()).sum();
        let mut mc = MachineConfig::new(self.pcpus);
        mc.vectors_per_pcpu = self.vectors_per_pcpu;
        mc.irta = Irta {
            size_s: self.table_size_s,
            eime: true,
            base: 0x2000_0000,
        };
        mc.posted_descriptors = u32::try_from(total_vcpus.max(256)).unwrap_or(u32::MAX);
        let mut machine = Machine::new(&mc).map_err(WorldError::Machine)?;
        {
            let iommu = machine.iommu_mut();
            iommu.enable_remapping(true);
            iommu.set_cfi(false);
            iommu.invalidate_all();
        }
        if let IommuKind::AmdVi(c) = self.iommu {
            machine.enable_amd_iommu(match c.irte_format {
                AmdIrteFormat::Bits32 => IrteWidth::Bits32,
                AmdIrteFormat::Bits128 => IrteWidth::Bits128,
            });
        }
        let machine: SharedMachine = Rc::new(RefCell::new(machine));
        let host_config = HostConfig {
            ir_mode: self.mode,
            iommu: self.iommu,
            physical_ir_enabled: machine.borrow().iommu().remapping_enabled(),
            compat_format_blocked: machine.borrow().iommu().compat_blocked(),
            register_bindings: self.register_bindings,
            doorbell_port: self.doorbell_port,
            ..HostConfig::default()
        };
        let host = SimHost::new(
            host_config,
            SimIrteTable::new(Rc::clone(&machine)),
            SimRouting::new(Rc::clone(&machine), self.gsis_per_vm),
            SimPhysicalIrqs::new(Rc::clone(&machine)),
        )
        .map_err(WorldError::HostConfig)?;
        let host: SharedHost = Rc::new(RefCell::new(host));
        let pcpu_ids: Vec<HostApicId> = machine
            .borrow()
            .pcpus()
            .iter()
            .map(|c| c.apic_id())
            .collect();
        let mut world = World {
            machine,
            host,
            vms: Vec::new(),
            mode: self.mode,
            iommu: self.iommu,
        };
        let mut next_pcpu = 0usize;
        for (index, spec) in self.vms.into_iter().enumerate() {
            let vm = world.add_vm(index, spec, &pcpu_ids, &mut next_pcpu)?;
            world.vms.push(vm);
        }
        Ok(world)
    }
}

/// A device of a simulated VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDevice {
    /// What it was built from.
    pub spec: DeviceSpec,
    /// The machine's device.
    pub device: DeviceId,
}

/// One simulated VM: its ids, devices and guest.
#[derive(Debug)]
pub struct SimVm {
    id: VmId,
    apic_ids: Vec<u32>,
    vcpu_pcpus: Vec<HostApicId>,
    devices: Vec<SimDevice>,
    interface: VirInterface,
    session: Session,
    guest: SimGuest,
}

impl SimVm {
    /// The host's id of the VM (the machine's is the same number).
    pub const fn id(&self) -> VmId {
        self.id
    }

    /// The machine's id of the VM.
    pub const fn platform_id(&self) -> vir_platform::VmId {
        platform_vm(self.id)
    }

    /// The vCPUs' guest APIC ids, by logical CPU.
    pub fn apic_ids(&self) -> &[u32] {
        &self.apic_ids
    }

    /// The physical CPU each vCPU runs on, by logical CPU.
    pub fn vcpu_pcpus(&self) -> &[HostApicId] {
        &self.vcpu_pcpus
    }

    /// The devices, in spec order.
    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// The device named `name`.
    pub fn device(&self, name: &str) -> Option<&SimDevice> {
        self.devices.iter().find(|d| d.spec.name == name)
    }

    /// The vIR interface discovery found.
    pub const fn interface(&self) -> VirInterface {
        self.interface
    }

    /// The negotiated session.
    pub const fn session(&self) -> Session {
        self.session
    }

    /// The guest.
    pub const fn guest(&self) -> &SimGuest {
        &self.guest
    }

    /// The guest, mutably (to drive its interrupt API).
    pub fn guest_mut(&mut self) -> &mut SimGuest {
        &mut self.guest
    }
}

/// A guest's handling of one interrupt a vCPU acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handled {
    /// The index of the VM whose vCPU took it (`None`: a VM the world does not drive).
    pub vm: Option<usize>,
    /// The vCPU's guest APIC id.
    pub apic_id: u32,
    /// The guest's logical CPU of that vCPU.
    pub cpu: Option<CpuId>,
    /// The vector acknowledged.
    pub vector: u8,
    /// The irq the guest's vector→irq table maps it to (`None`: spurious).
    pub irq: Option<Irq>,
}

/// The end-to-end result of one interrupt write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// What the platform did with it.
    pub outcome: FireOutcome,
    /// What the receiving vCPU's guest handled (empty when nothing reached a vCPU).
    pub handled: Vec<Handled>,
}

/// Where the guest expects an irq to arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expected {
    /// The VM index.
    pub vm: usize,
    /// The irq.
    pub irq: Irq,
    /// The logical CPU.
    pub cpu: CpuId,
    /// That CPU's APIC id.
    pub apic_id: u32,
    /// The vector.
    pub vector: u8,
}

/// The verdict on one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It arrived exactly where the guest expects it and mapped back to the right irq.
    Correct,
    /// It arrived somewhere else, or as something else.
    Wrong {
        /// What the guest expected.
        expected: Expected,
        /// What was handled.
        got: Vec<Handled>,
    },
    /// It arrived nowhere.
    Missing {
        /// What the guest expected.
        expected: Expected,
        /// What the platform did.
        outcome: FireOutcome,
    },
}

/// Tallies of delivery checks.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct DeliveryCheck {
    /// Interrupts fired and checked.
    pub checked: u64,
    /// Delivered to the expected vCPU and vector, mapped back to the right irq.
    pub correct: u64,
    /// Delivered elsewhere.
    pub wrong: u64,
    /// Not delivered.
    pub missing: u64,
    /// The first few failures, described.
    pub failures: Vec<String>,
}

impl DeliveryCheck {
    /// How many failures are described at most.
    pub const MAX_DESCRIBED: usize = 8;

    /// Adds one verdict.
    pub fn record(&mut self, verdict: &Verdict) {
        self.checked += 1;
        let text = match verdict {
            Verdict::Correct => {
                self.correct += 1;
                return;
            }
            Verdict::Wrong { expected, got } => {
                self.wrong += 1;
                format!(
                    "{} expected on APIC {} vector {:#04x}, got {got:?}",
                    expected.irq, expected.apic_id, expected.vector
                )
            }
            Verdict::Missing { expected, outcome } => {
                self.missing += 1;
                format!(
                    "{} expected on APIC {} vector {:#04x}, not delivered: {outcome:?}",
                    expected.irq, expected.apic_id, expected.vector
                )
            }
        };
        if self.failures.len() < Self::MAX_DESCRIBED {
            self.failures.push(text);
        }
    }

    /// Whether every check was correct.
    pub fn all_correct(&self) -> bool {
        self.correct == self.checked
    }
}

/// The simulated world.
#[derive(Debug)]
pub struct World {
    machine: SharedMachine,
    host: SharedHost,
    vms: Vec<SimVm>,
    mode: IrMode,
    iommu: IommuKind,
}

impl World {
    fn add_vm(
        &mut self,
        index: usize,
        spec: VmSpec,
        pcpu_ids: &[HostApicId],
        next_pcpu: &mut usize,
    ) -> Result<SimVm, WorldError> {
        let number = u32::try_from(index).map_err(|_| WorldError::NoSuchVm(index))?;
        let pvm = vir_platform::VmId(number);
        let vcpu_pcpus: Vec<(HostApicId, u32)> = spec
            .apic_ids
            .iter()
            .map(|_| {
                let i = *next_pcpu % pcpu_ids.len();
                *next_pcpu += 1;
                (pcpu_ids[i], i as u32)
            })
            .collect();
        let mut m = self.machine.borrow_mut();
        m.create_vm(
            pvm,
            &KvmVmConfig {
                memory: vec![(0, spec.memory)],
                vcpus: spec
                    .apic_ids
                    .iter()
                    .zip(&vcpu_pcpus)
                    .map(|(&a, &(p, _))| (GuestApicId(a), p))
                    .collect(),
            },
        )
        .map_err(WorldError::Machine)?;
        let mut vcpus = Vec::with_capacity(spec.apic_ids.len());
        for (&apic_id, &(_, pcpu)) in spec.apic_ids.iter().zip(&vcpu_pcpus) {
            let vcpu = VcpuRef::new(pvm, GuestApicId(apic_id));
            let pda = match self.iommu {
                IommuKind::Vtd => m.setup_posted_descriptor(vcpu, POSTED_INTR_VECTOR),
                IommuKind::AmdVi(_) => m.setup_vapic_page(vcpu),
            }
            .map_err(WorldError::Machine)?;
            vcpus.push(VcpuConfig { apic_id, pda, pcpu });
        }
        let mut devices = Vec::with_capacity(spec.devices.len());
        let mut host_devices = Vec::with_capacity(spec.devices.len());
        for (i, d) in spec.devices.iter().enumerate() {
            let mut cfg = DeviceConfig::new(RequesterId(d.requester_id));
            if let Some(log2) = d.msi_log2 {
                cfg = cfg.with_msi(MsiConfig {
                    vectors_log2: log2,
                    per_vector_masking: true,
                    address_64bit: true,
                });
            }
            if d.msix_entries > 0 {
                cfg = cfg.with_msix(d.msix_entries);
            }
            if d.ims_device_entries > 0 {
                cfg = cfg.with_ims_device(d.ims_device_entries);
            }
            if d.ims_system_queues > 0 {
                cfg = cfg.with_ims_system(d.ims_system_queues);
            }
            let dev = m.add_device(&cfg).map_err(WorldError::Machine)?;
            // AMD-Vi: the device's table entry remaps every interrupt through its own table
            // (VIR-DISC-H-001).
            if let Some(amd) = m.amd_iommu_mut() {
                amd.set_dte(RequesterId(d.requester_id), DteInterrupt::remapped(11))
                    .map_err(|_| WorldError::Machine(MachineError::NoAmdIommu))?;
            }
            m.attach_device(dev, Some(pvm))
                .map_err(WorldError::Machine)?;
            // Driver probe: the queue contexts live in guest memory.
            let base = IMS_CONTEXT_BASE + IMS_CONTEXT_STRIDE * i as u64;
            for q in 0..d.ims_system_queues {
                m.set_ims_queue_context(dev, q, base + 16 * u64::from(q))
                    .map_err(WorldError::Machine)?;
            }
            host_devices.push(HostDevice {
                device_id: d.guest_id.0,
                requester_id: d.requester_id,
                source_validation: d.source_validation,
                storage: StorageSizes {
                    msi_vectors: d.msi_log2.map_or(0, |l| 1u8 << l),
                    msix_entries: d.msix_entries,
                    ims_device_entries: d.ims_device_entries,
                    ims_system_entries: d.ims_system_queues,
                },
            });
            devices.push(SimDevice {
                spec: d.clone(),
                device: dev,
            });
        }
        let mem = m.guest_memory(pvm).map_err(WorldError::Machine)?.clone();
        drop(m);
        let id = self
            .host
            .borrow_mut()
            .add_vm(HostVmConfig {
                vcpus,
                devices: host_devices,
                quotas: spec.quotas,
                // The KVM model's memory is one writable slot from GPA 0.
                guest_writable: vir_host::GuestWritable::Ranges(vec![vir_host::GpaRange {
                    start: 0,
                    len: spec.memory as u64,
                }]),
            })
            .map_err(WorldError::HostConfig)?;
        if id.0 != number {
            return Err(WorldError::VmIdMismatch {
                expected: number,
                got: id.0,
            });
        }
        // The guest boots: discovery (VIR-DISC-G-001), the transport of an offered binding
        // (VIR-DISC-G-003, VIR-REG-G-001), negotiation.
        let platform = discover(&mut HostCpuid::new(Rc::clone(&self.host), id))
            .map_err(WorldError::Discovery)?;
        let Platform::Vir(interface) = platform else {
            return Err(WorldError::NoVir(platform));
        };
        let transport = match spec.binding {
            CallBinding::Vmcall if interface.info.bindings & binding::VMCALL != 0 => {
                SimTransport::Vmcall(VmcallTransport::new(
                    Rc::clone(&self.host),
                    id,
                    0,
                    mem,
                    HYPERCALL_PAGE,
                ))
            }
            CallBinding::Doorbell if interface.info.bindings & binding::PORT_DOORBELL != 0 => {
                SimTransport::Doorbell(DoorbellTransport::new(
                    Rc::clone(&self.host),
                    id,
                    0,
                    mem,
                    interface.info.doorbell_port,
                    DOORBELL_PAGE,
                ))
            }
            binding => {
                return Err(WorldError::BindingNotOffered {
                    binding,
                    offered: interface.info.bindings,
                });
            }
        };
        let mut domain = VirDomain::new(transport);
        let session = domain
            .negotiate(spec.features)
            .map_err(WorldError::Negotiation)?;
        let storage = SimStorage::new(
            Rc::clone(&self.machine),
            devices
                .iter()
                .map(|d| (d.spec.guest_id, d.device))
                .collect(),
        );
        let guest = IrqSubsystem::new(domain, storage, IrqConfig::new(spec.apic_ids.clone()))
            .map_err(WorldError::GuestConfig)?;
        Ok(SimVm {
            id,
            apic_ids: spec.apic_ids,
            vcpu_pcpus: vcpu_pcpus.into_iter().map(|(p, _)| p).collect(),
            devices,
            interface,
            session,
            guest,
        })
    }

    /// The machine (drop the borrow before driving a guest).
    pub fn machine(&self) -> Ref<'_, Machine> {
        self.machine.borrow()
    }

    /// The machine, mutably (failure injection, forged storage writes).
    pub fn machine_mut(&self) -> RefMut<'_, Machine> {
        self.machine.borrow_mut()
    }

    /// The shared machine itself, for a VMM building its own backends, transports or storage
    /// over the same machine (borrows follow the rule of the module documentation).
    pub fn shared_machine(&self) -> SharedMachine {
        Rc::clone(&self.machine)
    }

    /// The shared host itself (likewise).
    pub fn shared_host(&self) -> SharedHost {
        Rc::clone(&self.host)
    }

    /// The host (drop the borrow before driving a guest).
    pub fn host(&self) -> Ref<'_, SimHost> {
        self.host.borrow()
    }

    /// The host, mutably (failure injection in its backends).
    pub fn host_mut(&self) -> RefMut<'_, SimHost> {
        self.host.borrow_mut()
    }

    /// The host's delivery mode.
    pub const fn mode(&self) -> IrMode {
        self.mode
    }

    /// The machine's and host's IOMMU.
    pub const fn iommu(&self) -> IommuKind {
        self.iommu
    }

    /// The VMs.
    pub fn vms(&self) -> &[SimVm] {
        &self.vms
    }

    /// VM `index`.
    pub fn vm(&self, index: usize) -> Result<&SimVm, WorldError> {
        self.vms.get(index).ok_or(WorldError::NoSuchVm(index))
    }

    /// VM `index`, mutably.
    pub fn vm_mut(&mut self, index: usize) -> Result<&mut SimVm, WorldError> {
        self.vms.get_mut(index).ok_or(WorldError::NoSuchVm(index))
    }

    /// The guest of VM `index`, mutably.
    pub fn guest_mut(&mut self, index: usize) -> Result<&mut SimGuest, WorldError> {
        Ok(&mut self.vm_mut(index)?.guest)
    }

    /// The device and source that raise `irq` of VM `vm`.
    pub fn source_of(&self, vm: usize, irq: Irq) -> Option<(DeviceId, StorageSlot)> {
        let v = self.vms.get(vm)?;
        let info = v.guest.irq_info(irq)?;
        let dev = v.devices.iter().find(|d| d.spec.guest_id == info.device)?;
        Some((
            dev.device,
            platform_slot(info.slot, u32::from(info.subhandle)),
        ))
    }

    /// Where the guest of VM `vm` expects `irq` to arrive (`None` unless it is requested).
    pub fn expected(&self, vm: usize, irq: Irq) -> Option<Expected> {
        let g = &self.vms.get(vm)?.guest;
        let IrqState::Active { cpu, vector } = g.irq_info(irq)?.state else {
            return None;
        };
        Some(Expected {
            vm,
            irq,
            cpu,
            apic_id: g.apic_id(cpu)?,
            vector,
        })
    }

    /// `device` raises source `slot`: the platform runs it end to end and the receiving vCPU's
    /// guest handles whatever arrived.
    pub fn fire(&mut self, device: DeviceId, slot: StorageSlot) -> Result<Delivery, WorldError> {
        let outcome = self
            .machine
            .borrow_mut()
            .fire(device, slot)
            .map_err(WorldError::Machine)?;
        Ok(self.service(outcome))
    }

    /// An arbitrary interrupt write from `requester_id`, handled like [`World::fire`].
    pub fn inject_write(&mut self, requester_id: RequesterId, msg: MsiMessage) -> Delivery {
        let outcome = self.machine.borrow_mut().inject_write(requester_id, msg);
        self.service(outcome)
    }

    /// Masks or unmasks source `slot` of `device` (as the device's own mask bit, behind the
    /// guest's back) and services whatever the unmask releases, as [`World::fire`] does: each
    /// interrupt pending at the source goes through the platform and the receiving vCPU's guest
    /// handles it. Empty when masking, or when nothing was pending.
    pub fn set_masked(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        masked: bool,
    ) -> Result<Vec<Delivery>, WorldError> {
        let released = self
            .machine
            .borrow_mut()
            .set_masked(device, slot, masked)
            .map_err(WorldError::Machine)?;
        Ok(released.into_iter().map(|o| self.service(o)).collect())
    }

    /// Lets the receiving vCPU of `outcome` (if any) take it: posted interrupts are synced
    /// (PIR → IRR), then everything pending in the vCPU's LAPIC is acknowledged, handled by its
    /// guest and EOIed. For outcomes the machine returned directly ([`Machine::set_masked`],
    /// [`Machine::inject_write`] called on [`World::machine_mut`]).
    pub fn service(&mut self, outcome: FireOutcome) -> Delivery {
        let vcpu = match outcome {
            FireOutcome::Delivered { vcpu, .. } => Some(vcpu),
            FireOutcome::Posted(p) => {
                if let Some(owner) = p.owner {
                    // The vCPU processes its posted interrupts (PIR → IRR).
                    let _ = self.machine.borrow_mut().sync_posted(owner);
                }
                p.owner
            }
            FireOutcome::Faulted(_)
            | FireOutcome::Aborted(_)
            | FireOutcome::Masked
            | FireOutcome::Dropped(_) => None,
        };
        let handled = vcpu.map(|v| self.drain(v)).unwrap_or_default();
        Delivery { outcome, handled }
    }

    /// vCPU `vcpu` acknowledges, handles (through its guest, when the world drives its VM) and
    /// EOIs everything pending in its LAPIC, at most every vector once.
    pub fn drain(&mut self, vcpu: VcpuRef) -> Vec<Handled> {
        let index = self.vms.iter().position(|v| v.platform_id() == vcpu.vm);
        let mut handled = Vec::new();
        // At most every vector once: the loop is bounded whatever the LAPIC holds.
        for _ in 0..256 {
            let acked = self
                .machine
                .borrow_mut()
                .kvm_mut()
                .vcpu_mut(vcpu)
                .ok()
                .and_then(|v| v.lapic_mut().acknowledge());
            let Some(vector) = acked else {
                break;
            };
            let apic_id = vcpu.apic_id.0;
            let (cpu, irq) = match index.and_then(|i| self.vms.get_mut(i)) {
                Some(v) => {
                    let cpu = v.guest.cpu_of_apic(apic_id);
                    (cpu, cpu.and_then(|c| v.guest.handle_interrupt(c, vector)))
                }
                None => (None, None),
            };
            if let Ok(v) = self.machine.borrow_mut().kvm_mut().vcpu_mut(vcpu) {
                v.lapic_mut().eoi();
            }
            handled.push(Handled {
                vm: index,
                apic_id,
                cpu,
                vector,
                irq,
            });
        }
        handled
    }

    /// Fires requested `irq` of VM `vm` from its device and judges where it arrived.
    pub fn check(&mut self, vm: usize, irq: Irq) -> Result<Verdict, WorldError> {
        let expected = self
            .expected(vm, irq)
            .ok_or(WorldError::NotRequested { vm, irq })?;
        let (device, slot) = self
            .source_of(vm, irq)
            .ok_or(WorldError::NotRequested { vm, irq })?;
        let d = self.fire(device, slot)?;
        let want = Handled {
            vm: Some(vm),
            apic_id: expected.apic_id,
            cpu: Some(expected.cpu),
            vector: expected.vector,
            irq: Some(irq),
        };
        Ok(if d.handled == [want] {
            Verdict::Correct
        } else if d.handled.is_empty() {
            Verdict::Missing {
                expected,
                outcome: d.outcome,
            }
        } else {
            Verdict::Wrong {
                expected,
                got: d.handled,
            }
        })
    }

    /// Checks every requested irq of VM `vm`, in irq order.
    pub fn check_all(&mut self, vm: usize) -> Result<DeliveryCheck, WorldError> {
        let irqs: Vec<Irq> = self.vm(vm)?.guest.irqs().collect();
        let mut tally = DeliveryCheck::default();
        for irq in irqs {
            if self.expected(vm, irq).is_some() {
                tally.record(&self.check(vm, irq)?);
            }
        }
        Ok(tally)
    }

    /// Storage writes the devices of VM `vm` have seen, per kind in [`StorageKind::ALL`] order.
    pub fn storage_writes(&self, vm: usize) -> Result<[u64; 4], WorldError> {
        let v = self.vm(vm)?;
        let m = self.machine.borrow();
        let mut sum = [0u64; 4];
        for d in &v.devices {
            let dev = m.device(d.device).map_err(WorldError::Machine)?;
            for k in StorageKind::ALL {
                sum[k.index()] += dev.storage_writes(k);
            }
        }
        Ok(sum)
    }

    /// Interrupts the LAPICs of VM `vm`'s vCPUs have accepted so far.
    pub fn accepted(&self, vm: usize) -> Result<u64, WorldError> {
        let pvm = self.vm(vm)?.platform_id();
        let m = self.machine.borrow();
        let kvm_vm = m
            .kvm()
            .vm(pvm)
            .map_err(|e| WorldError::Machine(MachineError::Kvm(e)))?;
        Ok(kvm_vm
            .vcpus()
            .map(|(_, v)| v.lapic().total_accepted())
            .sum())
    }

    /// Faults the remapping unit recorded and suppressed (FPD) so far.
    pub fn faults(&self) -> (u64, u64) {
        let m = self.machine.borrow();
        if let Some(amd) = m.amd_iommu() {
            let s = amd.stats();
            return (s.events_logged, s.events_suppressed);
        }
        let s = m.iommu().stats();
        (s.faults_recorded, s.faults_suppressed)
    }

    /// The storage slots of every irq of VM `vm`, by irq (for forged-write tests).
    pub fn sources(&self, vm: usize) -> Result<BTreeMap<Irq, (DeviceId, StorageSlot)>, WorldError> {
        let v = self.vm(vm)?;
        Ok(v.guest
            .irqs()
            .filter_map(|irq| self.source_of(vm, irq).map(|s| (irq, s)))
            .collect())
    }
}
