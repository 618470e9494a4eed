//! Host and VM configuration, validated once when a [`Host`](crate::Host) or a VM is created.
//!
//! Nothing here comes from a guest: these values are chosen by the VMM (what the physical
//! platform looks like, which devices a VM owns, how many resources it may hold). Invalid
//! configurations are rejected with a [`ConfigError`] that names the offending value.

use core::fmt;

use vir_abi::call::DOORBELL_PORT_COUNT;
use vir_abi::discovery::{CPUID_BASES, CPUID_RANGE_FIRST, CPUID_STRIDE, binding};
use vir_abi::feature::Features;
use vir_abi::hw::ApicMode;
use vir_abi::wire::MSI_MAX_LOG2;

use crate::iommu::IommuKind;

/// How the host delivers the interrupts behind the IRTEs it programs (VIR-FMT-H-003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrMode {
    /// Remapped format (IM = 0): the IRTE carries a host vector and the physical CPU's APIC id;
    /// the host IRQ handler injects the guest vector through the virtual route.
    Remapped,
    /// Posted format (IM = 1): the IRTE carries the guest vector and the address of the target
    /// vCPU's posted-interrupt descriptor; the IOMMU posts without host software.
    Posted,
}

/// Host-wide configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Whether the host's physical interrupt remapping is enabled (VT-d: IRES = 1; AMD-Vi:
    /// the IOMMU enabled with IV = 1 and IntCtl = remapped in the DTE of every vIR device).
    pub physical_ir_enabled: bool,
    /// Whether compatibility-format interrupts are blocked (VT-d: CFIS = 0; AMD-Vi: the INIT,
    /// ExtInt, NMI, LINT0 and LINT1 pass-through bits clear in those DTEs). With either this
    /// or [`HostConfig::physical_ir_enabled`] false, vIR is not offered at all (VIR-DISC-H-001).
    pub compat_format_blocked: bool,
    /// The IOMMU vendor: what the host programs and the message format it returns
    /// ([`crate::iommu`]).
    pub iommu: IommuKind,
    /// Remapped or posted delivery (AMD-Vi: posted is guest virtual APIC mode, and
    /// [`VcpuConfig::pda`] is the vCPU's vAPIC backing page).
    pub ir_mode: IrMode,
    /// Destination format of remapped IRTEs (IRTA.EIME); x2APIC writes the full 32-bit APIC id.
    pub apic_mode: ApicMode,
    /// Features offered in `QUERY`; must be a subset of [`Features::V1_DEFINED`] (VIR-NEG-H-006).
    pub features_offered: Features,
    /// Largest MSI block offered, as log2 of the vector count (0–5).
    pub max_msi_log2: u8,
    /// Base leaf of the vIR CPUID leaves: `0x4000_0000 + k * 0x100` with `k` in `1..256`
    /// (base `0x4000_0000` is left to the hypervisor's own leaves).
    pub cpuid_base: u32,
    /// Register bindings offered in the info leaf ([`binding::VMCALL`], [`binding::VMMCALL`]).
    /// [`binding::PORT_DOORBELL`] is derived from [`HostConfig::doorbell_port`].
    pub register_bindings: u32,
    /// Base port of the doorbell binding (claims [`DOORBELL_PORT_COUNT`] ports), `None` for no
    /// doorbell.
    pub doorbell_port: Option<u16>,
    /// Whether VMs' quotas are reserved at VM creation (VIR-SEC-H-013).
    pub quota_admission: QuotaAdmission,
    /// Host vectors each physical CPU can give to the VMs' vIR interrupts, when the VMM knows
    /// it: with [`QuotaAdmission::Reserve`] the vector quotas of the VMs with a vCPU on a
    /// physical CPU must fit in it. `None`: vector quotas are not admitted against the CPUs.
    pub vectors_per_pcpu: Option<u32>,
}

/// How a host admits VMs' quotas against the resources they share (VIR-SEC-H-013).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QuotaAdmission {
    /// Each VM's quotas are reserved when it is created, and a VM whose quotas do not fit in
    /// what the other VMs' quotas leave is refused ([`ConfigError::QuotaOvercommit`]): the IRTE
    /// quotas of all VMs fit in the remapping table, and (with
    /// [`HostConfig::vectors_per_pcpu`]) the vector quotas of the VMs with a vCPU on a physical
    /// CPU fit in its vectors. No VM can then take, within its quota, what another VM's quota
    /// promises.
    Reserve,
    /// Quotas are limits only and may add up to more than the table or the vectors: one VM can
    /// exhaust what others' quotas promise (TABLE_FULL, VECTORS_EXHAUSTED for them). The
    /// default for now, so that existing configurations (whose default [`Quotas`] equal a
    /// 256-entry table) keep working; a host that wants the guarantee of VIR-SEC-H-013 sets
    /// [`QuotaAdmission::Reserve`].
    #[default]
    Overcommit,
}

impl HostConfig {
    /// Default CPUID base of the vIR leaves.
    pub const DEFAULT_CPUID_BASE: u32 = 0x4000_0100;
    /// Default doorbell port base.
    pub const DEFAULT_DOORBELL_PORT: u16 = 0x5650;

    /// The bindings advertised in the info leaf (register bindings plus the doorbell if any).
    pub fn bindings(&self) -> u32 {
        let db = if self.doorbell_port.is_some() {
            binding::PORT_DOORBELL
        } else {
            0
        };
        self.register_bindings | db
    }

    /// Whether vIR may be offered at all (VIR-DISC-H-001).
    pub fn vir_available(&self) -> bool {
        self.physical_ir_enabled && self.compat_format_blocked
    }

    /// Check the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let undefined = self.features_offered.difference(Features::V1_DEFINED);
        if !undefined.is_empty() {
            return Err(ConfigError::UndefinedFeatures(undefined));
        }
        if self.max_msi_log2 > MSI_MAX_LOG2 {
            return Err(ConfigError::MaxMsiLog2(self.max_msi_log2));
        }
        if !crate::iommu::supports(self.iommu, self.apic_mode, self.ir_mode) {
            return Err(ConfigError::IommuMode {
                iommu: self.iommu,
                apic_mode: self.apic_mode,
                ir_mode: self.ir_mode,
            });
        }
        let last = CPUID_RANGE_FIRST + (CPUID_BASES - 1) * CPUID_STRIDE;
        if self.cpuid_base <= CPUID_RANGE_FIRST
            || self.cpuid_base > last
            || !(self.cpuid_base - CPUID_RANGE_FIRST).is_multiple_of(CPUID_STRIDE)
        {
            return Err(ConfigError::CpuidBase(self.cpuid_base));
        }
        let register = binding::VMCALL | binding::VMMCALL;
        if self.register_bindings & !register != 0 {
            return Err(ConfigError::RegisterBindings(self.register_bindings));
        }
        if self.bindings() == 0 {
            return Err(ConfigError::NoBinding);
        }
        if let Some(port) = self.doorbell_port
            && (port == 0 || port.checked_add(DOORBELL_PORT_COUNT - 1).is_none())
        {
            return Err(ConfigError::DoorbellPort(port));
        }
        Ok(())
    }
}

impl Default for HostConfig {
    /// IR on, compatibility format blocked, posted mode, x2APIC, every v1 feature, MSI blocks up
    /// to 32, VT-d, CPUID base `0x4000_0100`, `VMCALL` and a doorbell at port `0x5650`, quotas
    /// over-committed, vectors per physical CPU unknown.
    fn default() -> Self {
        HostConfig {
            physical_ir_enabled: true,
            compat_format_blocked: true,
            iommu: IommuKind::Vtd,
            ir_mode: IrMode::Posted,
            apic_mode: ApicMode::X2Apic,
            features_offered: Features::V1_DEFINED,
            max_msi_log2: MSI_MAX_LOG2,
            cpuid_base: Self::DEFAULT_CPUID_BASE,
            register_bindings: binding::VMCALL,
            doorbell_port: Some(Self::DEFAULT_DOORBELL_PORT),
            quota_admission: QuotaAdmission::Overcommit,
            vectors_per_pcpu: None,
        }
    }
}

/// Per-VM resource limits (VIR-ALC-H-008, VIR-ACT-H-006).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quotas {
    /// Physical remapping-table entries the VM may hold at once.
    pub irtes: u32,
    /// Host vectors the VM may hold at once (one per active vector).
    pub vectors: u32,
}

impl Default for Quotas {
    /// 256 entries and 256 vectors (with [`QuotaAdmission::Reserve`], a table of 256 entries
    /// admits one such VM only).
    fn default() -> Self {
        Quotas {
            irtes: 256,
            vectors: 256,
        }
    }
}

/// One vCPU of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VcpuConfig {
    /// The guest's (virtual) x2APIC id of this vCPU: what a guest names in a target.
    pub apic_id: u32,
    /// Host physical address of this vCPU's posted-interrupt descriptor (64-byte aligned); on an
    /// AMD-Vi host in posted mode, of its vAPIC backing page (4 KiB aligned, checked by
    /// [`Host::add_vm`](crate::Host::add_vm)).
    pub pda: u64,
    /// The physical CPU this vCPU runs on (host IRQs for it are placed there in remapped mode).
    pub pcpu: u32,
}

/// How the IRTEs of a device check the source of an interrupt request (VIR-SEC-H-001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SourceValidation {
    /// SVT = 1, SQ = 0, SID = the device's requester id (all 16 bits compared).
    #[default]
    RequesterId,
    /// SVT = 2: the requester's bus must lie in `start_bus..=end_bus` (a device behind a
    /// PCIe-to-PCI bridge, whose requests carry the bridge's id). SID = start bus in bits 15:8,
    /// end bus in bits 7:0 (the Linux and Xen reading).
    BusRange {
        /// First bus number.
        start_bus: u8,
        /// Last bus number.
        end_bus: u8,
    },
}

impl SourceValidation {
    /// The requester ids an IRTE with this source check accepts, for a device whose own
    /// requester id is `requester_id`: an inclusive range (SVT = 1 with SQ = 0 accepts exactly
    /// the device's id; SVT = 2 accepts every device, function and bus of the bus range).
    pub fn accepted_requester_ids(&self, requester_id: u16) -> RequesterIdRange {
        match *self {
            SourceValidation::RequesterId => RequesterIdRange {
                first: requester_id,
                last: requester_id,
            },
            SourceValidation::BusRange { start_bus, end_bus } => RequesterIdRange {
                first: u16::from(start_bus) << 8,
                last: (u16::from(end_bus) << 8) | 0xff,
            },
        }
    }
}

/// An inclusive range of 16-bit requester ids (bus:dev.fn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequesterIdRange {
    /// The lowest requester id of the range.
    pub first: u16,
    /// The highest requester id of the range (at least [`RequesterIdRange::first`]).
    pub last: u16,
}

impl RequesterIdRange {
    /// The lowest requester id both ranges contain, if they share any.
    pub fn first_shared(&self, other: &RequesterIdRange) -> Option<u16> {
        let first = self.first.max(other.first);
        (first <= self.last.min(other.last)).then_some(first)
    }
}

/// The interrupt storage a device has, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StorageSizes {
    /// Vectors of the MSI capability (Multiple Message Capable): 1, 2, 4, 8, 16 or 32; 0 = no
    /// MSI capability.
    pub msi_vectors: u8,
    /// Entries of the MSI-X table (0–2048; 0 = no MSI-X capability).
    pub msix_entries: u32,
    /// Entries of the device-memory IMS array (0 = none).
    pub ims_device_entries: u32,
    /// Number of system-memory IMS entries software may number (0 = none).
    pub ims_system_entries: u32,
}

/// Largest MSI-X table (PCI: table size field is 11 bits, N − 1 encoded).
pub const MSIX_MAX_ENTRIES: u32 = 2048;

/// A device assigned to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceConfig {
    /// Guest-visible device id: PCI segment in bits 31:16, bus:dev.fn in 15:0 (what the guest
    /// passes in `ALLOCATE`).
    pub device_id: u32,
    /// The device's physical requester id (bus:dev.fn on the host).
    pub requester_id: u16,
    /// How its IRTEs check the source.
    pub source_validation: SourceValidation,
    /// Its interrupt storage.
    pub storage: StorageSizes,
}

/// A range of guest-physical addresses: `len` bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GpaRange {
    /// First address.
    pub start: u64,
    /// Length in bytes (not 0; `start + len` at most 2^64).
    pub len: u64,
}

impl GpaRange {
    /// Whether `len` bytes from `gpa` lie inside the range (128-bit arithmetic: a range or a
    /// buffer may end exactly at 2^64).
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        let end = u128::from(self.start) + u128::from(self.len);
        gpa >= self.start && u128::from(gpa) + u128::from(len) <= end
    }
}

/// Which guest memory the guest may write, as the VMM maps it (VIR-MEM-H-006).
///
/// The host writes a response buffer or a doorbell block only inside this memory. It does not
/// rely on the guest-memory object for that: rust-vmm's `GuestMemoryMmap` ignores the
/// permission passed to `check_range`, so memory the VMM maps read-only (a ROM, a read-only
/// memslot) passes as writable and the host's write faults — or, where the host mapping is
/// writable, writes memory the guest itself cannot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GuestWritable {
    /// Every byte the guest-memory object reports as RAM is writable by the guest and mapped
    /// writable in the host: for a VMM without read-only guest memory.
    AllRam,
    /// Only these ranges (which must also be RAM of the guest-memory object).
    Ranges(Vec<GpaRange>),
}

impl GuestWritable {
    /// Whether `len` bytes from `gpa` lie inside guest-writable memory (within one range:
    /// callers ask only about buffers that do not cross a page, and a VMM lists a page in one
    /// range).
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        match self {
            GuestWritable::AllRam => true,
            GuestWritable::Ranges(ranges) => ranges.iter().any(|r| r.contains(gpa, len)),
        }
    }
}

/// Configuration of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The vCPUs, indexed by vCPU index.
    pub vcpus: Vec<VcpuConfig>,
    /// The assigned devices.
    pub devices: Vec<DeviceConfig>,
    /// Resource limits.
    pub quotas: Quotas,
    /// The guest memory the guest can write (where response buffers and doorbell blocks may
    /// be).
    pub guest_writable: GuestWritable,
}

impl DeviceConfig {
    /// Every requester id the IRTEs of this device accept (VIR-SEC-H-006).
    pub fn accepted_requester_ids(&self) -> RequesterIdRange {
        self.source_validation
            .accepted_requester_ids(self.requester_id)
    }
}

impl VmConfig {
    /// The lowest requester id that the IRTEs of a device of this VM and those of a device of
    /// `other` would both accept (exact requester ids, bus ranges), if any. Two VMs sharing
    /// one would let a device of one deliver through the other's IRTEs (VIR-SEC-H-006), so the
    /// host admits a VM only if this is `None` against every VM it already has, whatever the
    /// order in which they are created.
    pub fn shared_requester_id(&self, other: &VmConfig) -> Option<u16> {
        self.devices
            .iter()
            .flat_map(|a| other.devices.iter().map(move |b| (a, b)))
            .filter_map(|(a, b)| {
                a.accepted_requester_ids()
                    .first_shared(&b.accepted_requester_ids())
            })
            .min()
    }

    /// Check the VM's own configuration (cross-VM checks are done by the host).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus.is_empty() {
            return Err(ConfigError::NoVcpus);
        }
        if self.vcpus.len() > u32::MAX as usize {
            return Err(ConfigError::TooManyVcpus(self.vcpus.len()));
        }
        for (i, v) in self.vcpus.iter().enumerate() {
            if v.pda == 0 || !v.pda.is_multiple_of(64) {
                return Err(ConfigError::BadPda {
                    vcpu: i as u32,
                    pda: v.pda,
                });
            }
            if self.vcpus[..i].iter().any(|w| w.apic_id == v.apic_id) {
                return Err(ConfigError::DuplicateApicId(v.apic_id));
            }
        }
        if let GuestWritable::Ranges(ranges) = &self.guest_writable
            && let Some(r) = ranges
                .iter()
                .find(|r| r.len == 0 || u128::from(r.start) + u128::from(r.len) > 1u128 << 64)
        {
            return Err(ConfigError::GuestWritable(*r));
        }
        for (i, d) in self.devices.iter().enumerate() {
            let earlier = &self.devices[..i];
            if earlier.iter().any(|e| e.device_id == d.device_id) {
                return Err(ConfigError::DuplicateDeviceId(d.device_id));
            }
            if earlier.iter().any(|e| e.requester_id == d.requester_id) {
                return Err(ConfigError::RequesterIdInUse(d.requester_id));
            }
            if !matches!(d.storage.msi_vectors, 0 | 1 | 2 | 4 | 8 | 16 | 32) {
                return Err(ConfigError::MsiVectors {
                    device_id: d.device_id,
                    vectors: d.storage.msi_vectors,
                });
            }
            if d.storage.msix_entries > MSIX_MAX_ENTRIES {
                return Err(ConfigError::MsixEntries {
                    device_id: d.device_id,
                    entries: d.storage.msix_entries,
                });
            }
            if let SourceValidation::BusRange { start_bus, end_bus } = d.source_validation
                && start_bus > end_bus
            {
                return Err(ConfigError::BusRange {
                    device_id: d.device_id,
                    start_bus,
                    end_bus,
                });
            }
        }
        Ok(())
    }
}

/// The cross-VM checks a host with configuration `host` and a remapping table of `table_size`
/// entries makes before it admits VM `config` next to the VMs configured as `existing`:
///
/// * no requester id may be accepted by the IRTEs of a device of `config` and of a device of an
///   existing VM (VIR-SEC-H-006); the check is symmetric, so the order in which VMs are created
///   does not matter;
/// * with [`QuotaAdmission::Reserve`] (VIR-SEC-H-013), the IRTE quotas of all VMs must add up to
///   at most `table_size`, and, when [`HostConfig::vectors_per_pcpu`] is known, the vector
///   quotas of the VMs with a vCPU on each physical CPU of `config` to at most that number.
pub fn admit<'a>(
    config: &VmConfig,
    existing: impl IntoIterator<Item = &'a VmConfig>,
    host: &HostConfig,
    table_size: u32,
) -> Result<(), ConfigError> {
    let existing: Vec<&VmConfig> = existing.into_iter().collect();
    for other in &existing {
        if let Some(rid) = config.shared_requester_id(other) {
            return Err(ConfigError::RequesterIdInUse(rid));
        }
    }
    if host.quota_admission == QuotaAdmission::Overcommit {
        return Ok(());
    }
    let all: Vec<&VmConfig> = existing.iter().copied().chain([config]).collect();
    let irtes: u64 = all.iter().map(|c| u64::from(c.quotas.irtes)).sum();
    if irtes > u64::from(table_size) {
        return Err(ConfigError::QuotaOvercommit {
            resource: QuotaResource::Irtes,
            reserved: irtes,
            available: table_size,
        });
    }
    if let Some(per_cpu) = host.vectors_per_pcpu {
        for pcpu in config.vcpus.iter().map(|v| v.pcpu) {
            let vectors: u64 = all
                .iter()
                .filter(|c| c.vcpus.iter().any(|v| v.pcpu == pcpu))
                .map(|c| u64::from(c.quotas.vectors))
                .sum();
            if vectors > u64::from(per_cpu) {
                return Err(ConfigError::QuotaOvercommit {
                    resource: QuotaResource::Vectors { pcpu },
                    reserved: vectors,
                    available: per_cpu,
                });
            }
        }
    }
    Ok(())
}

/// A resource that VMs' quotas are reserved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaResource {
    /// Entries of the remapping table.
    Irtes,
    /// Host vectors of one physical CPU.
    Vectors {
        /// The physical CPU (as in [`VcpuConfig::pcpu`]).
        pcpu: u32,
    },
}

impl fmt::Display for QuotaResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Irtes => f.write_str("remapping-table entries"),
            Self::Vectors { pcpu } => write!(f, "host vectors of physical CPU {pcpu}"),
        }
    }
}

/// Why a host or VM configuration was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Offered features outside [`Features::V1_DEFINED`] (VIR-NEG-H-006).
    UndefinedFeatures(Features),
    /// `max_msi_log2` above 5.
    MaxMsiLog2(u8),
    /// CPUID base not of the form `0x4000_0000 + k * 0x100`, `k` in `1..256`.
    CpuidBase(u32),
    /// Register bindings with bits other than `VMCALL` / `VMMCALL`.
    RegisterBindings(u32),
    /// No binding at all is offered.
    NoBinding,
    /// Doorbell port 0, or the port range wraps past `0xffff`.
    DoorbellPort(u16),
    /// The remapping table size reported by the backend is 0 or above the vendor's largest
    /// table (VT-d 65536, AMD-Vi 2048).
    TableSize(u32),
    /// A VM without vCPUs.
    NoVcpus,
    /// More vCPUs than a 32-bit index can name.
    TooManyVcpus(usize),
    /// Posted-descriptor address 0 or not 64-byte aligned (an aligned 64-byte descriptor never
    /// crosses a page).
    BadPda {
        /// vCPU index.
        vcpu: u32,
        /// The address.
        pda: u64,
    },
    /// Two vCPUs of a VM with the same APIC id.
    DuplicateApicId(u32),
    /// Two devices of a VM with the same guest-visible id.
    DuplicateDeviceId(u32),
    /// A physical requester id already assigned (to this or another VM), or one that the
    /// IRTEs of a device of this VM would accept while those of another VM's device accept it
    /// too (an exact requester id inside a bus range, two overlapping bus ranges); the lowest
    /// such id.
    RequesterIdInUse(u16),
    /// MSI vector count not 0 or a power of two up to 32.
    MsiVectors {
        /// Guest-visible device id.
        device_id: u32,
        /// The count.
        vectors: u8,
    },
    /// MSI-X table larger than 2048 entries.
    MsixEntries {
        /// Guest-visible device id.
        device_id: u32,
        /// The entry count.
        entries: u32,
    },
    /// A bus range whose start is above its end.
    BusRange {
        /// Guest-visible device id.
        device_id: u32,
        /// Start bus.
        start_bus: u8,
        /// End bus.
        end_bus: u8,
    },
    /// The host has no more VM ids.
    TooManyVms,
    /// A guest-writable range that is empty or ends beyond 2^64.
    GuestWritable(GpaRange),
    /// With [`QuotaAdmission::Reserve`]: the quotas of the VMs, this one included, would need
    /// more of a shared resource than there is.
    QuotaOvercommit {
        /// The resource.
        resource: QuotaResource,
        /// What the quotas would reserve.
        reserved: u64,
        /// What there is.
        available: u32,
    },
    /// An IOMMU that cannot serve the APIC or delivery mode (AMD-Vi 32-bit entries: xAPIC
    /// destinations and remapped mode only).
    IommuMode {
        /// The IOMMU.
        iommu: IommuKind,
        /// The APIC mode asked for.
        apic_mode: ApicMode,
        /// The delivery mode asked for.
        ir_mode: IrMode,
    },
    /// AMD-Vi guest virtual APIC mode: a vAPIC backing page address 0, not 4 KiB aligned or
    /// above 2^52.
    BadBackingPage {
        /// vCPU index.
        vcpu: u32,
        /// The address.
        address: u64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UndefinedFeatures(x) => {
                write!(f, "offered features {x} are not defined by version 1")
            }
            Self::MaxMsiLog2(v) => write!(f, "max_msi_log2 {v} exceeds 5"),
            Self::CpuidBase(b) => write!(f, "CPUID base {b:#x} is not a vIR base leaf"),
            Self::RegisterBindings(b) => {
                write!(f, "register bindings {b:#x} hold non-register bits")
            }
            Self::NoBinding => f.write_str("no binding offered"),
            Self::DoorbellPort(p) => write!(f, "doorbell port {p:#x} is 0 or its range wraps"),
            Self::TableSize(s) => write!(
                f,
                "remapping table size {s} is 0 or too large for the IOMMU"
            ),
            Self::NoVcpus => f.write_str("VM has no vCPU"),
            Self::TooManyVcpus(n) => write!(f, "{n} vCPUs exceed a 32-bit index"),
            Self::BadPda { vcpu, pda } => {
                write!(
                    f,
                    "vCPU {vcpu}: posted descriptor address {pda:#x} is 0 or not 64-byte aligned"
                )
            }
            Self::DuplicateApicId(a) => write!(f, "APIC id {a} used by two vCPUs"),
            Self::DuplicateDeviceId(d) => write!(f, "device id {d:#x} assigned twice"),
            Self::RequesterIdInUse(r) => write!(f, "requester id {r:#06x} already assigned"),
            Self::MsiVectors { device_id, vectors } => {
                write!(
                    f,
                    "device {device_id:#x}: {vectors} MSI vectors is not 0 or a power of two up to 32"
                )
            }
            Self::MsixEntries { device_id, entries } => {
                write!(
                    f,
                    "device {device_id:#x}: {entries} MSI-X entries exceed 2048"
                )
            }
            Self::BusRange {
                device_id,
                start_bus,
                end_bus,
            } => {
                write!(
                    f,
                    "device {device_id:#x}: bus range {start_bus:#x}..={end_bus:#x} is empty"
                )
            }
            Self::TooManyVms => f.write_str("no VM id left"),
            Self::QuotaOvercommit {
                resource,
                reserved,
                available,
            } => write!(
                f,
                "quotas would reserve {reserved} {resource}, {available} available"
            ),
            Self::GuestWritable(r) => write!(
                f,
                "guest-writable range of {:#x} bytes at {:#x} is empty or wraps",
                r.len, r.start
            ),
            Self::IommuMode {
                iommu,
                apic_mode,
                ir_mode,
            } => write!(
                f,
                "{iommu:?} cannot serve {apic_mode:?} destinations in {ir_mode:?} mode"
            ),
            Self::BadBackingPage { vcpu, address } => write!(
                f,
                "vCPU {vcpu}: vAPIC backing page {address:#x} is 0, not 4 KiB aligned or above 2^52"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> VmConfig {
        VmConfig {
            vcpus: vec![VcpuConfig {
                apic_id: 0,
                pda: 0x1000,
                pcpu: 0,
            }],
            devices: vec![DeviceConfig {
                device_id: 0x10,
                requester_id: 0x0100,
                source_validation: SourceValidation::RequesterId,
                storage: StorageSizes {
                    msi_vectors: 8,
                    msix_entries: 16,
                    ..Default::default()
                },
            }],
            quotas: Quotas::default(),
            guest_writable: GuestWritable::AllRam,
        }
    }

    #[test]
    fn default_host_config_is_valid_and_offers_only_v1_bits() {
        // VIR-NEG-H-006
        let c = HostConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.features_offered, Features::V1_DEFINED);
        assert_eq!(c.bindings(), binding::VMCALL | binding::PORT_DOORBELL);
        let bad = HostConfig {
            features_offered: Features(1 << 32),
            ..HostConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::UndefinedFeatures(Features(1 << 32)))
        );
    }

    #[test]
    fn host_config_rejects_each_bad_value() {
        let d = HostConfig::default();
        assert_eq!(
            HostConfig {
                max_msi_log2: 6,
                ..d.clone()
            }
            .validate(),
            Err(ConfigError::MaxMsiLog2(6))
        );
        for base in [0x4000_0000, 0x4000_0180, 0x3fff_ff00, 0x4001_0000] {
            assert_eq!(
                HostConfig {
                    cpuid_base: base,
                    ..d.clone()
                }
                .validate(),
                Err(ConfigError::CpuidBase(base))
            );
        }
        assert_eq!(
            HostConfig {
                cpuid_base: 0x4000_ff00,
                ..d.clone()
            }
            .validate(),
            Ok(())
        );
        assert_eq!(
            HostConfig {
                register_bindings: binding::PORT_DOORBELL,
                ..d.clone()
            }
            .validate(),
            Err(ConfigError::RegisterBindings(binding::PORT_DOORBELL))
        );
        assert_eq!(
            HostConfig {
                register_bindings: 0,
                doorbell_port: None,
                ..d.clone()
            }
            .validate(),
            Err(ConfigError::NoBinding)
        );
        assert_eq!(
            HostConfig {
                doorbell_port: Some(0),
                ..d.clone()
            }
            .validate(),
            Err(ConfigError::DoorbellPort(0))
        );
        assert_eq!(
            HostConfig {
                doorbell_port: Some(0xfffa),
                ..d.clone()
            }
            .validate(),
            Err(ConfigError::DoorbellPort(0xfffa))
        );
        assert_eq!(
            HostConfig {
                doorbell_port: Some(0xfff8),
                ..d
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn vm_config_rejects_each_bad_value() {
        assert_eq!(vm().validate(), Ok(()));
        let mut c = vm();
        c.vcpus.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoVcpus));
        for pda in [0, 0x1010, 0x1fc8] {
            let mut c = vm();
            c.vcpus[0].pda = pda;
            assert_eq!(c.validate(), Err(ConfigError::BadPda { vcpu: 0, pda }));
        }
        let mut c = vm();
        c.vcpus.push(VcpuConfig {
            apic_id: 0,
            pda: 0x2000,
            pcpu: 1,
        });
        assert_eq!(c.validate(), Err(ConfigError::DuplicateApicId(0)));
        let mut c = vm();
        let mut d2 = c.devices[0];
        d2.requester_id = 0x200;
        c.devices.push(d2);
        assert_eq!(c.validate(), Err(ConfigError::DuplicateDeviceId(0x10)));
        let mut c = vm();
        let mut d2 = c.devices[0];
        d2.device_id = 0x11;
        c.devices.push(d2);
        assert_eq!(c.validate(), Err(ConfigError::RequesterIdInUse(0x100)));
        for v in [3u8, 5, 33, 64] {
            let mut c = vm();
            c.devices[0].storage.msi_vectors = v;
            assert_eq!(
                c.validate(),
                Err(ConfigError::MsiVectors {
                    device_id: 0x10,
                    vectors: v
                })
            );
        }
        let mut c = vm();
        c.devices[0].storage.msix_entries = 2049;
        assert_eq!(
            c.validate(),
            Err(ConfigError::MsixEntries {
                device_id: 0x10,
                entries: 2049
            })
        );
        let mut c = vm();
        c.devices[0].source_validation = SourceValidation::BusRange {
            start_bus: 3,
            end_bus: 2,
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::BusRange {
                device_id: 0x10,
                start_bus: 3,
                end_bus: 2
            })
        );
    }

    fn with_device(rid: u16, sv: SourceValidation) -> VmConfig {
        let mut c = vm();
        c.devices[0].requester_id = rid;
        c.devices[0].source_validation = sv;
        c
    }

    fn admit_rids<'a>(
        c: &VmConfig,
        existing: impl IntoIterator<Item = &'a VmConfig>,
    ) -> Result<(), ConfigError> {
        admit(c, existing, &HostConfig::default(), 0x1_0000)
    }

    fn bus(start_bus: u8, end_bus: u8) -> SourceValidation {
        SourceValidation::BusRange { start_bus, end_bus }
    }

    #[test]
    fn vir_sec_h_006_admission_rejects_any_shared_requester_id_in_either_order() {
        // VIR-SEC-H-006
        let exact = SourceValidation::RequesterId;
        // (first VM, second VM, lowest id both accept)
        let overlapping = [
            ((0x0100, exact), (0x0100, exact), 0x0100),
            ((0x0100, bus(0, 0xff)), (0x0200, exact), 0x0200),
            ((0x0100, bus(1, 1)), (0x01ff, exact), 0x01ff),
            ((0x0300, bus(3, 5)), (0x0500, bus(5, 9)), 0x0500),
            ((0x0300, bus(0, 0xff)), (0x0000, exact), 0x0000),
            ((0xff00, bus(0xff, 0xff)), (0xffff, exact), 0xffff),
        ];
        for ((ra, sa), (rb, sb), shared) in overlapping {
            let a = with_device(ra, sa);
            let b = with_device(rb, sb);
            assert_eq!(a.shared_requester_id(&b), Some(shared), "{sa:?} {sb:?}");
            assert_eq!(b.shared_requester_id(&a), Some(shared), "{sb:?} {sa:?}");
            assert_eq!(
                admit_rids(&b, [&a]),
                Err(ConfigError::RequesterIdInUse(shared))
            );
            assert_eq!(
                admit_rids(&a, [&b]),
                Err(ConfigError::RequesterIdInUse(shared))
            );
        }
        let disjoint = [
            ((0x0100, exact), (0x0101, exact)),
            ((0x0100, bus(1, 1)), (0x0200, exact)),
            ((0x0100, bus(1, 1)), (0x00ff, exact)),
            ((0x0300, bus(3, 5)), (0x0600, bus(6, 9))),
        ];
        for ((ra, sa), (rb, sb)) in disjoint {
            let a = with_device(ra, sa);
            let b = with_device(rb, sb);
            assert_eq!(a.shared_requester_id(&b), None, "{sa:?} {sb:?}");
            assert_eq!(admit_rids(&b, [&a]), Ok(()));
            assert_eq!(admit_rids(&a, [&b]), Ok(()));
        }
        // A VM without devices shares nothing; the check runs against every existing VM.
        let none = VmConfig {
            devices: Vec::new(),
            ..vm()
        };
        let a = with_device(0x0100, bus(0, 0xff));
        assert_eq!(admit_rids(&none, [&a]), Ok(()));
        let b = with_device(0x0700, exact);
        let c = with_device(0x0800, exact);
        assert_eq!(
            admit_rids(&a, [&none, &c, &b]),
            Err(ConfigError::RequesterIdInUse(0x0800))
        );
    }

    fn on_pcpus(quotas: Quotas, pcpus: &[u32]) -> VmConfig {
        VmConfig {
            vcpus: pcpus
                .iter()
                .enumerate()
                .map(|(i, &pcpu)| VcpuConfig {
                    apic_id: i as u32,
                    pda: 0x1000 * (i as u64 + 1),
                    pcpu,
                })
                .collect(),
            devices: Vec::new(),
            quotas,
            guest_writable: GuestWritable::AllRam,
        }
    }

    #[test]
    fn vir_sec_h_013_reserve_admits_only_quotas_that_fit_the_table_and_the_cpus() {
        // VIR-SEC-H-013
        let reserve = HostConfig {
            quota_admission: QuotaAdmission::Reserve,
            vectors_per_pcpu: Some(100),
            ..HostConfig::default()
        };
        let q = |irtes, vectors| Quotas { irtes, vectors };
        let a = on_pcpus(q(600, 60), &[0, 1]);
        let b = on_pcpus(q(400, 40), &[1, 2]);
        // 600 + 400 entries fit a table of 1000, not of 999.
        assert_eq!(admit(&b, [&a], &reserve, 1000), Ok(()));
        assert_eq!(
            admit(&b, [&a], &reserve, 999),
            Err(ConfigError::QuotaOvercommit {
                resource: QuotaResource::Irtes,
                reserved: 1000,
                available: 999
            })
        );
        // CPU 1 carries both VMs: 60 + 40 vectors fit 100; one more does not, in either order.
        let b41 = on_pcpus(q(400, 41), &[1, 2]);
        let cpu1 = Err(ConfigError::QuotaOvercommit {
            resource: QuotaResource::Vectors { pcpu: 1 },
            reserved: 101,
            available: 100,
        });
        assert_eq!(admit(&b41, [&a], &reserve, 1000), cpu1);
        assert_eq!(admit(&a, [&b41], &reserve, 1000), cpu1);
        // On disjoint CPUs each VM has its CPUs' vectors to itself.
        let c = on_pcpus(q(0, 100), &[3]);
        assert_eq!(admit(&c, [&a, &b], &reserve, 1000), Ok(()));
        // Without a known vector budget only the table is reserved.
        let table_only = HostConfig {
            vectors_per_pcpu: None,
            ..reserve.clone()
        };
        assert_eq!(admit(&b41, [&a], &table_only, 1000), Ok(()));
        // The default over-commits: limits only.
        assert_eq!(
            HostConfig::default().quota_admission,
            QuotaAdmission::Overcommit
        );
        assert_eq!(admit(&b41, [&a], &HostConfig::default(), 1), Ok(()));
    }

    #[test]
    fn vir_sec_h_013_host_refuses_a_vm_whose_quota_is_not_left() {
        // VIR-SEC-H-013
        let config = HostConfig {
            quota_admission: QuotaAdmission::Reserve,
            vectors_per_pcpu: Some(200),
            ..HostConfig::default()
        };
        let (mut host, _journal) = crate::testing::mock_host(config, 512, 4, 200).unwrap();
        let q = |irtes, vectors| Quotas { irtes, vectors };
        let a = host.add_vm(on_pcpus(q(256, 100), &[0, 1])).unwrap();
        host.add_vm(on_pcpus(q(256, 100), &[1])).unwrap();
        let ids: Vec<_> = host.vm_ids().collect();
        assert_eq!(
            host.add_vm(on_pcpus(q(1, 0), &[2])),
            Err(ConfigError::QuotaOvercommit {
                resource: QuotaResource::Irtes,
                reserved: 513,
                available: 512
            })
        );
        assert_eq!(host.vm_ids().collect::<Vec<_>>(), ids, "nothing created");
        // Removing a VM gives its reservation back.
        host.remove_vm(a).unwrap();
        assert_eq!(
            host.add_vm(on_pcpus(q(256, 101), &[1])),
            Err(ConfigError::QuotaOvercommit {
                resource: QuotaResource::Vectors { pcpu: 1 },
                reserved: 201,
                available: 200
            })
        );
        host.add_vm(on_pcpus(q(256, 100), &[1])).unwrap();
    }
}
