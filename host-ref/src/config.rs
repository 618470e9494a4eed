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
    /// to 32, VT-d, CPUID base `0x4000_0100`, `VMCALL` and a doorbell at port `0x5650`.
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
    /// 256 entries and 256 vectors.
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

/// Configuration of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The vCPUs, indexed by vCPU index.
    pub vcpus: Vec<VcpuConfig>,
    /// The assigned devices.
    pub devices: Vec<DeviceConfig>,
    /// Resource limits.
    pub quotas: Quotas,
}

impl VmConfig {
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
    /// A physical requester id already assigned (to this or another VM).
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
}
