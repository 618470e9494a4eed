//! The transport between the suite and a host under test.
//!
//! A host plugs into the suite by implementing [`HostUnderTest`] (one instance = one freshly
//! created host with the VMs its [`Fixture`] describes) and [`HostFactory`] (creates a fresh
//! instance for every check). The required methods are what any VMM test harness can offer: make
//! a call, execute `VMCALL`/`VMMCALL`, do port I/O, read CPUID, read and write guest memory, reset
//! a VM. The provided methods are optional *hooks* (introspection of the physical side, guest
//! memory instrumentation, failure injection); their default implementation answers
//! [`HarnessError::Unsupported`], and a check that needs a hook the host lacks is reported as
//! *not testable*, never as passed.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;

use vir_abi::call::CallCode;
use vir_abi::hw::ApicMode;
use vir_abi::status::Status;

/// Names one of the (at most two) VMs of a fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VmRef {
    /// The VM most checks run in.
    Primary,
    /// A second VM on the same host, for isolation checks.
    Secondary,
}

impl fmt::Display for VmRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Primary => "primary VM",
            Self::Secondary => "secondary VM",
        })
    }
}

/// A guest buffer as a call names it: guest-physical address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Buffer {
    /// Guest-physical address of the first byte.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Buffer {
    /// The zero-length buffer at GPA 0 (a call without request or response).
    pub const NONE: Buffer = Buffer { gpa: 0, len: 0 };

    /// A buffer of `len` bytes at `gpa`.
    pub const fn new(gpa: u64, len: u64) -> Buffer {
        Buffer { gpa, len }
    }

    /// Whether the buffer shares at least one byte with `[gpa, gpa + len)`.
    pub fn overlaps(&self, gpa: u64, len: u64) -> bool {
        let (s, e) = (
            u128::from(self.gpa),
            u128::from(self.gpa) + u128::from(self.len),
        );
        let (os, oe) = (u128::from(gpa), u128::from(gpa) + u128::from(len));
        self.len != 0 && len != 0 && s < oe && os < e
    }
}

/// The hypercall instruction of the register binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HypercallInsn {
    /// Intel `VMCALL` (info leaf EBX bit 0).
    Vmcall,
    /// AMD `VMMCALL` (info leaf EBX bit 1).
    Vmmcall,
}

impl HypercallInsn {
    /// Length of the instruction in bytes (both are three bytes long).
    pub const LEN: u64 = 3;
}

/// The general-purpose registers and `RIP` of a vCPU around a hypercall.
#[allow(missing_docs)] // the register names are their documentation
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
}

/// Width of a port I/O access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoWidth {
    /// 8-bit `IN`/`OUT`.
    Byte,
    /// 16-bit.
    Word,
    /// 32-bit.
    Dword,
}

impl IoWidth {
    /// The all-ones value of this width (what a read of an unclaimed or ignored port returns).
    pub const fn all_ones(self) -> u32 {
        match self {
            Self::Byte => 0xff,
            Self::Word => 0xffff,
            Self::Dword => 0xffff_ffff,
        }
    }
}

/// What a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything a call may change: every VM of the fixture and the shared physical side.
    Host,
    /// What belongs to one VM (its vIR state, allocations, vectors, routes, IRQs and IRTEs),
    /// excluding host-wide bookkeeping that other VMs change too.
    Vm(VmRef),
}

/// A comparable picture of host state, by named component (for example `"routes"`), each
/// rendered as text. Two snapshots are equal when every component is; [`Snapshot::differences`]
/// names the components that are not, which is what a failure report shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot(pub BTreeMap<String, String>);

impl Snapshot {
    /// Names of the components that differ between `self` and `other` (present in one only, or
    /// with different values).
    pub fn differences(&self, other: &Snapshot) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .iter()
            .filter(|(k, v)| other.0.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        names.extend(other.0.keys().filter(|k| !self.0.contains_key(*k)).cloned());
        names
    }
}

/// The physical IRTE behind one vector, as read from the remapping table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IrteView {
    /// Index of the entry in its table.
    pub index: u32,
    /// The raw 128-bit entry (VT-d; an AMD-Vi 128-bit entry likewise).
    pub raw: u128,
}

/// Where an interrupt raised now by a vector's storage slot would be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The VM whose vCPU receives it; `None` when it reaches something outside the fixture's VMs
    /// (another VM, or the host itself).
    pub vm: Option<VmRef>,
    /// The receiving vCPU's guest APIC id.
    pub apic_id: u32,
    /// The guest vector injected.
    pub vector: u8,
}

/// One guest-memory access made by the host (logged by the access-log hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemAccess {
    /// A write (`true`) or a read.
    pub write: bool,
    /// First byte.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
}

impl MemAccess {
    /// Whether the access touches `[gpa, gpa + len)`.
    pub fn touches(&self, gpa: u64, len: u64) -> bool {
        Buffer::new(self.gpa, self.len).overlaps(gpa, len)
    }
}

/// An event on the physical side (logged by the physical-log hook), in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhysEvent {
    /// A virtual route (KVM: GSI routing entry with its irqfd) was installed for a VM.
    RouteAdded(Option<VmRef>),
    /// A virtual route was re-targeted.
    RouteUpdated(Option<VmRef>),
    /// A virtual route was removed.
    RouteRemoved(Option<VmRef>),
    /// A physical interrupt was allocated and started (VFIO).
    IrqStarted(Option<VmRef>),
    /// A physical interrupt was stopped.
    IrqStopped,
    /// A physical interrupt was moved (or a move prepared, committed or aborted).
    IrqMoved,
    /// An IRTE was written (and its cached copy invalidated).
    IrteWritten {
        /// Table index.
        index: u32,
        /// Whether the entry written is present.
        present: bool,
    },
}

/// A failure the host's physical side can be made to produce once (failure-injection hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The next installation of a virtual route fails.
    RouteAdd,
    /// The next re-targeting of a virtual route fails.
    RouteUpdate,
    /// The next start of a physical interrupt fails with an OS error.
    IrqStart,
    /// The next start of a physical interrupt finds no free host vector.
    IrqStartNoVector,
    /// The next move of a physical interrupt to another physical CPU fails.
    IrqMove,
}

impl Fault {
    /// The status the failing call must return (VIR-ACT-H-006, VIR-AFF-H-004).
    pub const fn status(self) -> Status {
        match self {
            Self::IrqStartNoVector => Status::VECTORS_EXHAUSTED,
            Self::RouteAdd | Self::RouteUpdate | Self::IrqStart | Self::IrqMove => {
                Status::BACKEND_FAILURE
            }
        }
    }
}

/// A register of a device's MSI capability, MSI-X capability (both in config space) or MSI-X
/// table, as the guest accesses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapRegister {
    /// MSI Message Control: bit 0 MSI Enable, bits 6:4 Multiple Message Enable.
    MsiControl,
    /// MSI Message Address, bits 31:0.
    MsiAddressLo,
    /// MSI Message Upper Address.
    MsiAddressHi,
    /// MSI Message Data.
    MsiData,
    /// MSI Mask Bits.
    MsiMaskBits,
    /// MSI-X Message Control: bit 15 MSI-X Enable, bit 14 Function Mask.
    MsixControl,
    /// A 32-bit field of MSI-X table entry `index`: `offset` 0 address, 4 upper address, 8 data,
    /// 12 vector control (bit 0 Mask).
    MsixEntry {
        /// Table index.
        index: u32,
        /// Byte offset of the field in the 16-byte entry.
        offset: u32,
    },
}

/// MSI Message Control: MSI Enable.
pub const MSI_ENABLE: u32 = 1;
/// MSI-X Message Control: MSI-X Enable.
pub const MSIX_ENABLE: u32 = 1 << 15;
/// MSI-X Message Control: Function Mask.
pub const MSIX_FUNCTION_MASK: u32 = 1 << 14;

/// The interrupt controls a device itself holds (its physical registers, not the emulation the
/// guest sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeviceInterrupts {
    /// MSI Enable.
    pub msi_enabled: bool,
    /// MSI Multiple Message Enable.
    pub msi_mme: u8,
    /// MSI message address.
    pub msi_address: u64,
    /// MSI message data.
    pub msi_data: u32,
    /// MSI-X Enable.
    pub msix_enabled: bool,
    /// MSI-X Function Mask.
    pub msix_function_mask: bool,
}

/// A host configuration other than the fixture's, for the discovery checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The host's physical interrupt remapping is disabled (VT-d: IRES = 0).
    PhysicalIrDisabled,
    /// Remapping is on but compatibility-format interrupts are not blocked (VT-d: CFIS = 1).
    CompatFormatAllowed,
}

/// An optional capability of a harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// [`HostUnderTest::snapshot`].
    Snapshot,
    /// [`HostUnderTest::irte`].
    Irte,
    /// [`HostUnderTest::present_irtes`].
    TableScan,
    /// [`HostUnderTest::delivery`].
    Delivery,
    /// [`HostUnderTest::start_access_log`] / [`HostUnderTest::take_access_log`].
    AccessLog,
    /// [`HostUnderTest::mutate_after_first_read`].
    MutateAfterRead,
    /// [`HostUnderTest::inject_failure`].
    FailureInjection,
    /// [`HostUnderTest::start_physical_log`] / [`HostUnderTest::take_physical_log`].
    PhysicalLog,
    /// [`HostUnderTest::set_legacy_interrupt`].
    LegacyInterrupts,
    /// [`HostUnderTest::msix_trapped`].
    MsixTrap,
    /// A host variant from [`HostFactory::create_variant`].
    Variant(Variant),
    /// A hypercall instruction the harness cannot execute.
    Instruction(HypercallInsn),
    /// [`HostUnderTest::config_write`] / [`HostUnderTest::config_read`].
    ConfigSpace,
    /// [`HostUnderTest::device_interrupts`].
    DeviceState,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Snapshot => f.write_str("state snapshots"),
            Self::Irte => f.write_str("IRTE introspection"),
            Self::TableScan => f.write_str("remapping-table scan"),
            Self::Delivery => f.write_str("interrupt delivery introspection"),
            Self::AccessLog => f.write_str("guest-memory access log"),
            Self::MutateAfterRead => f.write_str("guest-memory mutation after first read"),
            Self::FailureInjection => f.write_str("backend failure injection"),
            Self::PhysicalLog => f.write_str("physical-side event log"),
            Self::LegacyInterrupts => f.write_str("legacy MSI/MSI-X enable control"),
            Self::MsixTrap => f.write_str("MSI-X trap introspection"),
            Self::Variant(v) => write!(f, "host variant {v:?}"),
            Self::Instruction(i) => write!(f, "{i:?} execution"),
            Self::ConfigSpace => f.write_str("MSI/MSI-X register access"),
            Self::DeviceState => f.write_str("physical device interrupt state"),
        }
    }
}

/// A harness operation that could not be carried out. Never a verdict on the host's vIR
/// behaviour: the call itself did not happen (or the harness could not observe it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HarnessError {
    /// The harness does not offer this optional capability.
    Unsupported(Hook),
    /// The fixture has no such VM.
    UnknownVm(VmRef),
    /// The VM has no vCPU with this index.
    UnknownVcpu {
        /// The VM.
        vm: VmRef,
        /// The vCPU index.
        vcpu: u32,
    },
    /// The harness could not read or write guest memory there (not RAM of the VM).
    GuestMemory {
        /// The VM.
        vm: VmRef,
        /// First byte.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// The device has no such register (no MSI or MSI-X capability, index past the table).
    NoRegister {
        /// The VM.
        vm: VmRef,
        /// Guest-visible device id.
        device_id: u32,
        /// The register.
        register: CapRegister,
    },
    /// The device is not a device of the VM (a hook was asked about it).
    UnknownDevice {
        /// The VM.
        vm: VmRef,
        /// Guest-visible device id.
        device_id: u32,
    },
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported(h) => write!(f, "the harness offers no {h}"),
            Self::UnknownVm(vm) => write!(f, "the fixture has no {vm}"),
            Self::UnknownVcpu { vm, vcpu } => write!(f, "{vm} has no vCPU {vcpu}"),
            Self::GuestMemory { vm, gpa, len } => {
                write!(f, "cannot access {len} bytes at GPA {gpa:#x} of the {vm}")
            }
            Self::UnknownDevice { vm, device_id } => {
                write!(f, "device {device_id:#x} is not a device of the {vm}")
            }
            Self::NoRegister {
                vm,
                device_id,
                register,
            } => write!(
                f,
                "device {device_id:#x} of the {vm} has no register {register:?}"
            ),
        }
    }
}

impl Error for HarnessError {}

/// A host could not be created for a check.
#[derive(Debug)]
pub struct SetupError(pub Box<dyn Error + Send + Sync>);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot create the host under test: {}", self.0)
    }
}

impl Error for SetupError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// How the source check of a device's IRTEs must look (physical knowledge of the fixture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceId {
    /// The device's own requester id (VT-d: SVT = 1, SQ = 0, SID = this value).
    RequesterId(u16),
    /// A bus range, for a device behind a PCIe-to-PCI bridge (VT-d: SVT = 2, SID = start bus in
    /// bits 15:8, end bus in bits 7:0).
    BusRange {
        /// First bus.
        start_bus: u8,
        /// Last bus.
        end_bus: u8,
    },
}

impl SourceId {
    /// A requester id the device's interrupt requests carry (the one the IOMMU checks).
    pub const fn requester_id(self) -> u16 {
        match self {
            Self::RequesterId(r) => r,
            Self::BusRange { start_bus, .. } => (start_bus as u16) << 8,
        }
    }
}

/// A vIR device assigned to a fixture VM, with the sizes of its interrupt storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceFixture {
    /// Guest-visible device id (what ALLOCATE names).
    pub device_id: u32,
    /// Vectors of the MSI capability (0 = none).
    pub msi_vectors: u8,
    /// MSI-X table entries (0 = none).
    pub msix_entries: u32,
    /// IMS entries in device memory (0 = none).
    pub ims_device_entries: u32,
    /// The host's IMS_SYSTEM limit for the device (0 = none).
    pub ims_system_entries: u32,
    /// The source check its IRTEs must carry, if the harness knows it.
    pub source: Option<SourceId>,
}

/// A vCPU of a fixture VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VcpuFixture {
    /// Guest (x2)APIC id.
    pub apic_id: u32,
    /// Host physical address of its posted-interrupt descriptor, if the harness knows it.
    pub posted_descriptor: Option<u64>,
}

/// Number of pages at [`VmFixture::scratch`] the suite may use freely.
pub const SCRATCH_PAGES: u64 = 8;

/// One VM of the fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFixture {
    /// vCPUs, by vCPU index.
    pub vcpus: Vec<VcpuFixture>,
    /// vIR devices assigned to the VM.
    pub devices: Vec<DeviceFixture>,
    /// Guest-visible ids of emulated (non-vIR) devices of the VM: ALLOCATE must refuse them.
    pub emulated_devices: Vec<u32>,
    /// The VM's IRTE quota, as configured.
    pub irte_quota: u32,
    /// The VM's host-vector quota, as configured.
    pub vector_quota: u32,
    /// Page-aligned GPA of [`SCRATCH_PAGES`] pages of guest RAM the suite may overwrite.
    pub scratch: u64,
    /// An 8-aligned GPA starting at least one page that is not guest RAM (a hole or MMIO).
    pub unbacked_gpa: Option<u64>,
    /// A page-aligned GPA of a page of guest memory the guest cannot write (ROM).
    pub readonly_gpa: Option<u64>,
    /// Inclusive port ranges decoded by other devices of the VM (VIR-DISC-H-005).
    pub io_ports_in_use: Vec<(u16, u16)>,
}

impl VmFixture {
    /// The device with the most MSI-X entries, if any has MSI-X.
    pub fn msix_device(&self) -> Option<&DeviceFixture> {
        self.devices
            .iter()
            .filter(|d| d.msix_entries > 0)
            .max_by_key(|d| d.msix_entries)
    }

    /// A guest-visible device id that names no vIR or emulated device of this VM.
    pub fn unassigned_device_id(&self) -> u32 {
        (0xffff_0000u32..)
            .find(|id| {
                !self.devices.iter().any(|d| d.device_id == *id)
                    && !self.emulated_devices.contains(id)
            })
            .unwrap_or(0xffff_ffff)
    }

    /// A guest APIC id that names no vCPU of this VM.
    pub fn foreign_apic_id(&self) -> u32 {
        (0x7000u32..)
            .find(|id| !self.vcpus.iter().any(|v| v.apic_id == *id))
            .unwrap_or(u32::MAX)
    }
}

/// How the IRTE-introspection hook's raw entries are to be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrteFormat {
    /// 128-bit VT-d entries; remapped-format destinations in this APIC mode (IRTA.EIME).
    Vtd(ApicMode),
    /// 128-bit AMD-Vi entries.
    AmdVi,
}

/// What a host under test was set up with: the VMs, their devices, vCPUs, quotas and memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    /// The VM most checks use.
    pub primary: VmFixture,
    /// A second VM on the same host, for the isolation checks (`None`: those are not testable).
    pub secondary: Option<VmFixture>,
    /// Free entries of the one physical remapping table that serves every device of both VMs,
    /// at creation (`None` when unknown or when the VMs are served by different tables).
    pub shared_table_free: Option<u32>,
    /// Format of the entries the IRTE hooks return (`None`: no IRTE hooks).
    pub irte_format: Option<IrteFormat>,
}

impl Fixture {
    /// The description of one VM.
    pub fn vm(&self, vm: VmRef) -> Option<&VmFixture> {
        match vm {
            VmRef::Primary => Some(&self.primary),
            VmRef::Secondary => self.secondary.as_ref(),
        }
    }
}

/// A freshly created host with the VMs of its [`Fixture`], driven by the suite.
///
/// Every VM starts as at creation: never negotiated, nothing allocated. `vcpu` arguments are
/// vCPU indices into [`VmFixture::vcpus`]. Guest-memory accesses made by the suite through
/// [`HostUnderTest::read_guest`] and [`HostUnderTest::write_guest`] are not host accesses: they
/// never appear in the access log and never trigger a mutation.
pub trait HostUnderTest {
    /// A short name for reports (for example `reference (posted)`).
    fn name(&self) -> String;

    /// The fixture this host was created with.
    fn fixture(&self) -> &Fixture;

    /// Make vIR call `code` from vCPU `vcpu` of `vm` with the given buffers, through the host's
    /// usual binding, and return the status. The buffers are passed exactly as given, even when
    /// they violate the memory binding rules.
    fn call(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        code: CallCode,
        request: Buffer,
        response: Buffer,
    ) -> Result<Status, HarnessError>;

    /// Execute `insn` on vCPU `vcpu` of `vm` at current privilege level `cpl` with `regs`, as
    /// the guest would, and leave in `regs` what the guest sees afterwards (including `RIP`).
    /// [`HarnessError::Unsupported`] with [`Hook::Instruction`] when the harness cannot execute
    /// that instruction.
    fn hypercall(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        insn: HypercallInsn,
        cpl: u8,
        regs: &mut Regs,
    ) -> Result<(), HarnessError>;

    /// An `OUT` of `width` to `port` from vCPU `vcpu` of `vm`.
    fn pio_write(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        port: u16,
        width: IoWidth,
        value: u32,
    ) -> Result<(), HarnessError>;

    /// An `IN` of `width` from `port` on vCPU `vcpu` of `vm`.
    fn pio_read(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        port: u16,
        width: IoWidth,
    ) -> Result<u32, HarnessError>;

    /// `CPUID` with `EAX = leaf`, `ECX = subleaf` on vCPU `vcpu` of `vm`: `[EAX, EBX, ECX, EDX]`.
    fn cpuid(
        &mut self,
        vm: VmRef,
        vcpu: u32,
        leaf: u32,
        subleaf: u32,
    ) -> Result<[u32; 4], HarnessError>;

    /// Read guest memory of `vm` (not a host access).
    fn read_guest(&mut self, vm: VmRef, gpa: u64, buf: &mut [u8]) -> Result<(), HarnessError>;

    /// Write guest memory of `vm` (not a host access).
    fn write_guest(&mut self, vm: VmRef, gpa: u64, bytes: &[u8]) -> Result<(), HarnessError>;

    /// A platform reset of `vm` (reboot), as the VMM performs it.
    fn reset_vm(&mut self, vm: VmRef) -> Result<(), HarnessError>;

    /// Hook: a snapshot of the host state in `scope`, to prove that a failed call changed
    /// nothing (VIR-CALL-H-006).
    fn snapshot(&mut self, scope: Scope) -> Result<Snapshot, HarnessError> {
        let _ = scope;
        Err(HarnessError::Unsupported(Hook::Snapshot))
    }

    /// Hook: the physical IRTE backing sub-handle `subhandle` of allocation `handle` of `vm`
    /// (`None` when the handle is not live or the sub-handle out of range).
    fn irte(
        &mut self,
        vm: VmRef,
        handle: u32,
        subhandle: u16,
    ) -> Result<Option<IrteView>, HarnessError> {
        let _ = (vm, handle, subhandle);
        Err(HarnessError::Unsupported(Hook::Irte))
    }

    /// Hook: every present entry of the remapping table(s) serving the fixture's devices.
    fn present_irtes(&mut self) -> Result<Vec<IrteView>, HarnessError> {
        Err(HarnessError::Unsupported(Hook::TableScan))
    }

    /// Hook: where an interrupt raised now from the storage slot of sub-handle `subhandle` of
    /// allocation `handle` of `vm` would arrive, following the physical path (IRTE, source
    /// check, posted descriptor or host IRQ and virtual route). `None`: blocked (or not live).
    fn delivery(
        &mut self,
        vm: VmRef,
        handle: u32,
        subhandle: u16,
    ) -> Result<Option<Delivery>, HarnessError> {
        let _ = (vm, handle, subhandle);
        Err(HarnessError::Unsupported(Hook::Delivery))
    }

    /// Hook: start (or restart, discarding older entries) logging the host's accesses to the
    /// guest memory of `vm`.
    fn start_access_log(&mut self, vm: VmRef) -> Result<(), HarnessError> {
        let _ = vm;
        Err(HarnessError::Unsupported(Hook::AccessLog))
    }

    /// Hook: the host's accesses to the guest memory of `vm` since the log was started, in order.
    fn take_access_log(&mut self, vm: VmRef) -> Result<Vec<MemAccess>, HarnessError> {
        let _ = vm;
        Err(HarnessError::Unsupported(Hook::AccessLog))
    }

    /// Hook: once the host has read any byte of `watch` in the memory of `vm` during the next
    /// call (of any binding), overwrite guest memory at `gpa` with `bytes` before any later host
    /// access to `watch` — a concurrent vCPU changing a request in flight. It fires at the latest
    /// when that call returns (if the host read `watch` at all) and is disarmed then.
    fn mutate_after_first_read(
        &mut self,
        vm: VmRef,
        watch: Buffer,
        gpa: u64,
        bytes: &[u8],
    ) -> Result<(), HarnessError> {
        let _ = (vm, watch, gpa, bytes);
        Err(HarnessError::Unsupported(Hook::MutateAfterRead))
    }

    /// Hook: make the next physical-side operation of this kind fail once.
    fn inject_failure(&mut self, fault: Fault) -> Result<(), HarnessError> {
        let _ = fault;
        Err(HarnessError::Unsupported(Hook::FailureInjection))
    }

    /// Hook: start (or restart) logging physical-side events.
    fn start_physical_log(&mut self) -> Result<(), HarnessError> {
        Err(HarnessError::Unsupported(Hook::PhysicalLog))
    }

    /// Hook: the physical-side events since the log was started, in order.
    fn take_physical_log(&mut self) -> Result<Vec<PhysEvent>, HarnessError> {
        Err(HarnessError::Unsupported(Hook::PhysicalLog))
    }

    /// Hook: the guest enables (or disables) legacy, trapped MSI or MSI-X on `device_id` of `vm`
    /// through the emulated capability, as a guest that has not negotiated would.
    fn set_legacy_interrupt(
        &mut self,
        vm: VmRef,
        device_id: u32,
        enabled: bool,
    ) -> Result<(), HarnessError> {
        let _ = (vm, device_id, enabled);
        Err(HarnessError::Unsupported(Hook::LegacyInterrupts))
    }

    /// Hook: whether the MSI-X table of `device_id` of `vm` is trapped and emulated right now.
    fn msix_trapped(&mut self, vm: VmRef, device_id: u32) -> Result<bool, HarnessError> {
        let _ = (vm, device_id);
        Err(HarnessError::Unsupported(Hook::MsixTrap))
    }

    /// Hook: a guest write of `value` to `register` of device `device_id` of `vm`, handled as
    /// the VMM handles it in the VM's current state (trapped and emulated, forwarded, or —
    /// for an untrapped MSI-X table — reaching the device directly). A refused write is not an
    /// error: the guest just sees its effect (or none).
    fn config_write(
        &mut self,
        vm: VmRef,
        device_id: u32,
        register: CapRegister,
        value: u32,
    ) -> Result<(), HarnessError> {
        let _ = (vm, device_id, register, value);
        Err(HarnessError::Unsupported(Hook::ConfigSpace))
    }

    /// Hook: a guest read of `register` of device `device_id` of `vm`.
    fn config_read(
        &mut self,
        vm: VmRef,
        device_id: u32,
        register: CapRegister,
    ) -> Result<u32, HarnessError> {
        let _ = (vm, device_id, register);
        Err(HarnessError::Unsupported(Hook::ConfigSpace))
    }

    /// Hook: the physical interrupt controls of device `device_id` of `vm`.
    fn device_interrupts(
        &mut self,
        vm: VmRef,
        device_id: u32,
    ) -> Result<DeviceInterrupts, HarnessError> {
        let _ = (vm, device_id);
        Err(HarnessError::Unsupported(Hook::DeviceState))
    }
}

/// Creates hosts under test: a fresh one for every check.
pub trait HostFactory {
    /// A short name of the host implementation, for reports.
    fn name(&self) -> String;

    /// A freshly created host with its fixture VMs.
    fn create(&mut self) -> Result<Box<dyn HostUnderTest>, SetupError>;

    /// A freshly created host in a different configuration (`Ok(None)`: the harness cannot
    /// create it, and checks that need it are not testable).
    fn create_variant(
        &mut self,
        variant: Variant,
    ) -> Result<Option<Box<dyn HostUnderTest>>, SetupError> {
        let _ = variant;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_overlap_is_half_open_and_ignores_empty_buffers() {
        let b = Buffer::new(0x1000, 16);
        assert!(b.overlaps(0x100f, 1));
        assert!(!b.overlaps(0x1010, 8));
        assert!(!b.overlaps(0x0ff8, 8));
        assert!(b.overlaps(0x0ff8, 9));
        assert!(!b.overlaps(0x1000, 0));
        assert!(!Buffer::new(0x1000, 0).overlaps(0x1000, 8));
        assert!(Buffer::new(u64::MAX - 7, 8).overlaps(u64::MAX, 1));
    }

    #[test]
    fn snapshot_differences_name_changed_added_and_removed_components() {
        let a = Snapshot(BTreeMap::from([
            ("routes".to_string(), "1".to_string()),
            ("irtes".to_string(), "x".to_string()),
            ("gone".to_string(), "y".to_string()),
        ]));
        let b = Snapshot(BTreeMap::from([
            ("routes".to_string(), "2".to_string()),
            ("irtes".to_string(), "x".to_string()),
            ("new".to_string(), "z".to_string()),
        ]));
        assert_eq!(a.differences(&b), vec!["gone", "routes", "new"]);
        assert_eq!(a.differences(&a), Vec::<String>::new());
    }

    #[test]
    fn fixture_picks_unassigned_ids() {
        let vm = VmFixture {
            vcpus: vec![VcpuFixture {
                apic_id: 0x7000,
                posted_descriptor: None,
            }],
            devices: vec![DeviceFixture {
                device_id: 0xffff_0000,
                msi_vectors: 0,
                msix_entries: 4,
                ims_device_entries: 0,
                ims_system_entries: 0,
                source: None,
            }],
            emulated_devices: vec![0xffff_0001],
            irte_quota: 1,
            vector_quota: 1,
            scratch: 0,
            unbacked_gpa: None,
            readonly_gpa: None,
            io_ports_in_use: vec![],
        };
        assert_eq!(vm.unassigned_device_id(), 0xffff_0002);
        assert_eq!(vm.foreign_apic_id(), 0x7001);
        assert_eq!(vm.msix_device().map(|d| d.device_id), Some(0xffff_0000));
        assert_eq!(IoWidth::Word.all_ones(), 0xffff);
        assert_eq!(Fault::IrqStartNoVector.status(), Status::VECTORS_EXHAUSTED);
        assert_eq!(
            SourceId::BusRange {
                start_bus: 3,
                end_bus: 4
            }
            .requester_id(),
            0x300
        );
    }
}
