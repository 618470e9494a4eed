//! The IOMMU vendor seam: the one place that composes what the host writes to the physical
//! remapping hardware and what it returns to the guest.
//!
//! Every vendor-specific fact of the host lives behind [`RemappingVendor`]:
//!
//! * which physical table an entry of a device lives in ([`RemappingVendor::table_of`]): VT-d
//!   has one table per remapping unit and checks the source in the entry (SID/SQ/SVT); AMD-Vi
//!   has one table per device (the device table entry's IntTabLen / IntCtl) and the source check
//!   *is* the choice of table;
//! * the present IRTE of an active vector and the not-present IRTE of a reservation
//!   (VIR-FMT-H-003, VIR-FMT-H-006, VIR-SEC-H-001, VIR-SEC-H-002);
//! * the message returned by `ACTIVATE` for an allocation (VIR-FMT-H-001, VIR-FMT-H-005,
//!   VIR-FMT-H-007) and the format `QUERY` reports (VIR-QRY-H-002, VIR-FMT-H-009).
//!
//! [`HostConfig::iommu`] selects the vendor; [`HostConfig::vendor`] hands out the implementation.

use core::fmt;

use vir_abi::hw::amd::{
    AmdGuestIrte, AmdIrte32Entry, AmdIrte128, AmdMsi, AmdRemapIrte, INT_TYPE_FIXED,
};
use vir_abi::hw::vtd::{PostedIrte, RemappableMsi, RemappedIrte, Svt};
use vir_abi::hw::{ApicMode, MsiMessage};
use vir_abi::wire::MessageFormat;

use crate::backend::{HostVector, IrteTableId};
use crate::config::{DeviceConfig, HostConfig, IrMode, SourceValidation, VcpuConfig};
use crate::vm::GuestTarget;

/// The largest AMD-Vi interrupt remapping table: IntTabLen = 11, 2048 entries.
pub const AMD_MAX_TABLE_ENTRIES: u32 = 2048;

/// Which IOMMU the host's physical interrupt remapping is (selected in [`HostConfig::iommu`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IommuKind {
    /// Intel VT-d: one 128-bit IRT per remapping unit, source check in the entry.
    #[default]
    Vtd,
    /// AMD-Vi: one interrupt remapping table per device.
    AmdVi(AmdViConfig),
}

/// Width of the AMD-Vi interrupt remapping table entries (the IOMMU's GA mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdIrteFormat {
    /// The legacy 32-bit entry (8-bit destination, no guest mode). Requires xAPIC host APIC ids
    /// and [`IrMode::Remapped`].
    Bits32,
    /// The 128-bit entry (GA mode): remapped (GuestMode = 0) or guest virtual APIC
    /// (GuestMode = 1) entries.
    Bits128,
}

/// AMD-Vi parameters of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AmdViConfig {
    /// Entry width of the per-device tables.
    pub irte_format: AmdIrteFormat,
    /// Whether the IOMMU supports 2048-entry tables and wants address bit 2 (DM) set in every
    /// remapped message (VIR-FMT-H-005; Linux: `FEATURE_NUM_INT_REMAP_SUP_2K`).
    pub address_dm: bool,
}

impl Default for AmdViConfig {
    /// 128-bit entries, no DM bit.
    fn default() -> Self {
        AmdViConfig {
            irte_format: AmdIrteFormat::Bits128,
            address_dm: false,
        }
    }
}

/// Why the seam could not compose an entry or a message. The host maps it to
/// `BACKEND_FAILURE`; nothing has been written when it is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorError {
    /// A VT-d entry could not be encoded (destination outside the APIC mode, bad descriptor).
    Vtd(vir_abi::hw::vtd::IrteError),
    /// An AMD-Vi entry could not be encoded (misaligned backing page, field out of range).
    Amd(vir_abi::hw::amd::AmdIrteError),
    /// An AMD-Vi message index outside the 2048-entry table.
    AmdIndex(u32),
    /// A VT-d handle above 16 bits.
    VtdHandle(u32),
    /// A destination APIC id that does not fit the entry (AMD-Vi 32-bit entries hold 8 bits).
    Destination(u32),
}

impl fmt::Display for VendorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vtd(e) => write!(f, "VT-d IRTE: {e}"),
            Self::Amd(e) => write!(f, "AMD-Vi IRTE: {e}"),
            Self::AmdIndex(i) => write!(f, "AMD-Vi IRTE index {i} above 2047"),
            Self::VtdHandle(h) => write!(f, "VT-d handle {h} above 65535"),
            Self::Destination(d) => write!(f, "destination APIC id {d:#x} does not fit the IRTE"),
        }
    }
}

impl std::error::Error for VendorError {}

/// What the host needs to compose the present entry of an active vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveEntry<'a> {
    /// The device whose entry it is.
    pub device: &'a DeviceConfig,
    /// The guest's target.
    pub target: GuestTarget,
    /// The target vCPU.
    pub vcpu: &'a VcpuConfig,
    /// The host vector the physical IRQ fires on (remapped mode; in posted / guest mode the
    /// CPU the IOMMU notifies while the vCPU runs).
    pub host: HostVector,
    /// Host-wide tag of the target vCPU (AMD-Vi GA tag, reported in the GA log while the vCPU
    /// is not running; see [`ga_tag`]).
    pub tag: u32,
}

/// The AMD-Vi GA tag of a vCPU: the VM id in bits 31:8, the vCPU index in bits 7:0 (the layout
/// Linux's `AMD_IOMMU_GATAG` uses). Unique host-wide for VM ids below 2^24 and vCPU indices
/// below 256; beyond that the fields wrap and two vCPUs can share a tag.
pub const fn ga_tag(vm: u32, vcpu_index: u32) -> u32 {
    (vm << 8) | (vcpu_index & 0xFF)
}

/// The IOMMU vendor seam (see the module documentation).
pub trait RemappingVendor: fmt::Debug + Send + Sync {
    /// The message format reported by `QUERY` and carried by every `ActivateResponse`.
    fn message_format(&self) -> MessageFormat;

    /// The largest table the vendor can index (VT-d 65536, AMD-Vi 2048).
    fn max_table_entries(&self) -> u32;

    /// The physical table the entries of `device` live in.
    fn table_of(&self, device: &DeviceConfig) -> IrteTableId;

    /// The message of an allocation whose first entry is `base` (a function of the allocation
    /// only: the same for every sub-handle, activation and affinity).
    fn message(&self, base: u32) -> Result<MsiMessage, VendorError>;

    /// The not-present entry of a reservation: faults blocked silently (VT-d FPD = 1, AMD-Vi
    /// SupIOPF = 1), source check kept (VIR-SEC-H-002).
    fn reserved_irte(
        &self,
        config: &HostConfig,
        device: &DeviceConfig,
    ) -> Result<u128, VendorError>;

    /// The present entry of an active vector (VIR-FMT-H-003 / VIR-FMT-H-006, VIR-SEC-H-001).
    fn active_irte(&self, config: &HostConfig, e: &ActiveEntry<'_>) -> Result<u128, VendorError>;
}

/// Intel VT-d.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vtd;

/// AMD-Vi.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AmdVi(pub AmdViConfig);

static VTD: Vtd = Vtd;
static AMD_128: AmdVi = AmdVi(AmdViConfig {
    irte_format: AmdIrteFormat::Bits128,
    address_dm: false,
});
static AMD_128_DM: AmdVi = AmdVi(AmdViConfig {
    irte_format: AmdIrteFormat::Bits128,
    address_dm: true,
});
static AMD_32: AmdVi = AmdVi(AmdViConfig {
    irte_format: AmdIrteFormat::Bits32,
    address_dm: false,
});
static AMD_32_DM: AmdVi = AmdVi(AmdViConfig {
    irte_format: AmdIrteFormat::Bits32,
    address_dm: true,
});

impl IommuKind {
    /// The implementation of this vendor.
    pub fn vendor(self) -> &'static dyn RemappingVendor {
        match self {
            Self::Vtd => &VTD,
            Self::AmdVi(c) => match (c.irte_format, c.address_dm) {
                (AmdIrteFormat::Bits128, false) => &AMD_128,
                (AmdIrteFormat::Bits128, true) => &AMD_128_DM,
                (AmdIrteFormat::Bits32, false) => &AMD_32,
                (AmdIrteFormat::Bits32, true) => &AMD_32_DM,
            },
        }
    }
}

/// VT-d source id and validation type of a device's entries (VIR-SEC-H-001).
fn vtd_source_id(dev: &DeviceConfig) -> (u16, Svt) {
    match dev.source_validation {
        SourceValidation::RequesterId => (dev.requester_id, Svt::VerifySid),
        SourceValidation::BusRange { start_bus, end_bus } => (
            (u16::from(start_bus) << 8) | u16::from(end_bus),
            Svt::VerifyBus,
        ),
    }
}

impl RemappingVendor for Vtd {
    fn message_format(&self) -> MessageFormat {
        MessageFormat::VTD_REMAPPABLE
    }

    fn max_table_entries(&self) -> u32 {
        0x1_0000
    }

    fn table_of(&self, _device: &DeviceConfig) -> IrteTableId {
        IrteTableId::Unit
    }

    /// Remappable format, handle = first IRTE index, SHV = 1, data = 0, high address 0.
    fn message(&self, base: u32) -> Result<MsiMessage, VendorError> {
        let handle = u16::try_from(base).map_err(|_| VendorError::VtdHandle(base))?;
        Ok(RemappableMsi {
            handle,
            shv: true,
            subhandle: 0,
        }
        .encode())
    }

    fn reserved_irte(
        &self,
        config: &HostConfig,
        device: &DeviceConfig,
    ) -> Result<u128, VendorError> {
        let (sid, svt) = vtd_source_id(device);
        RemappedIrte {
            present: false,
            fpd: true,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector: 0,
            dest: 0,
            sid,
            sq: 0,
            svt,
        }
        .encode(config.apic_mode)
        .map_err(VendorError::Vtd)
    }

    fn active_irte(&self, config: &HostConfig, e: &ActiveEntry<'_>) -> Result<u128, VendorError> {
        let (sid, svt) = vtd_source_id(e.device);
        match config.ir_mode {
            IrMode::Posted => PostedIrte {
                present: true,
                fpd: false,
                avail: 0,
                urgent: false,
                vector: e.target.vector,
                pda: e.vcpu.pda,
                sid,
                sq: 0,
                svt,
            }
            .encode(),
            IrMode::Remapped => RemappedIrte {
                present: true,
                fpd: false,
                dest_mode_logical: false,
                redirection_hint: false,
                trigger_level: false,
                delivery_mode: 0,
                avail: 0,
                vector: e.host.vector,
                dest: e.host.apic_id,
                sid,
                sq: 0,
                svt,
            }
            .encode(config.apic_mode),
        }
        .map_err(VendorError::Vtd)
    }
}

impl RemappingVendor for AmdVi {
    fn message_format(&self) -> MessageFormat {
        MessageFormat::AMD_VI
    }

    fn max_table_entries(&self) -> u32 {
        AMD_MAX_TABLE_ENTRIES
    }

    /// The device's own table: a device can only index the table of its device table entry, so
    /// the entry is bound to the device by where it lies (VIR-SEC-H-001).
    fn table_of(&self, device: &DeviceConfig) -> IrteTableId {
        IrteTableId::Device(device.requester_id)
    }

    /// Address `0xFEE0_0000` (bit 2 set when the IOMMU wants DM, and always from index
    /// [`AmdMsi::FIRST_DM_INDEX`] on, where data bits 10:8 would otherwise read as a message
    /// type), high 0, data = first index (VIR-FMT-H-005, VIR-FMT-H-007).
    fn message(&self, base: u32) -> Result<MsiMessage, VendorError> {
        let index = u16::try_from(base)
            .ok()
            .filter(|&i| i <= AmdMsi::MAX_INDEX)
            .ok_or(VendorError::AmdIndex(base))?;
        AmdMsi {
            index,
            address_dm: self.0.address_dm || index >= AmdMsi::FIRST_DM_INDEX,
        }
        .encode()
        .map_err(|_| VendorError::AmdIndex(base))
    }

    /// RemapEn = 0 with SupIOPF = 1: the IOMMU aborts the request without logging.
    fn reserved_irte(
        &self,
        _config: &HostConfig,
        _device: &DeviceConfig,
    ) -> Result<u128, VendorError> {
        match self.0.irte_format {
            AmdIrteFormat::Bits32 => Ok(u128::from(
                AmdIrte32Entry {
                    remap_en: false,
                    sup_iopf: true,
                    int_type: INT_TYPE_FIXED,
                    rq_eoi: false,
                    dest_mode_logical: false,
                    destination: 0,
                    vector: 0,
                }
                .encode()
                .map_err(VendorError::Amd)?,
            )),
            AmdIrteFormat::Bits128 => AmdIrte128::Remapped(AmdRemapIrte {
                remap_en: false,
                sup_iopf: true,
                int_type: INT_TYPE_FIXED,
                rq_eoi: false,
                dest_mode_logical: false,
                destination: 0,
                vector: 0,
            })
            .encode()
            .map_err(VendorError::Amd),
        }
    }

    fn active_irte(&self, config: &HostConfig, e: &ActiveEntry<'_>) -> Result<u128, VendorError> {
        match (self.0.irte_format, config.ir_mode) {
            (AmdIrteFormat::Bits32, _) => {
                let destination = u8::try_from(e.host.apic_id)
                    .map_err(|_| VendorError::Destination(e.host.apic_id))?;
                Ok(u128::from(
                    AmdIrte32Entry {
                        remap_en: true,
                        sup_iopf: false,
                        int_type: INT_TYPE_FIXED,
                        rq_eoi: false,
                        dest_mode_logical: false,
                        destination,
                        vector: e.host.vector,
                    }
                    .encode()
                    .map_err(VendorError::Amd)?,
                ))
            }
            (AmdIrteFormat::Bits128, IrMode::Remapped) => {
                if e.host.apic_id > config.apic_mode.max_apic_id() {
                    return Err(VendorError::Destination(e.host.apic_id));
                }
                AmdIrte128::Remapped(AmdRemapIrte {
                    remap_en: true,
                    sup_iopf: false,
                    int_type: INT_TYPE_FIXED,
                    rq_eoi: false,
                    dest_mode_logical: false,
                    destination: e.host.apic_id,
                    vector: e.host.vector,
                })
                .encode()
                .map_err(VendorError::Amd)
            }
            // Guest virtual APIC mode: the guest vector and the vCPU's backing page; while the
            // vCPU is not running (IsRun = 0) the IOMMU logs the tag in the GA log and raises
            // the GA log interrupt (GALogIntr = 1) so the host can wake it.
            (AmdIrteFormat::Bits128, IrMode::Posted) => AmdIrte128::Guest(AmdGuestIrte {
                remap_en: true,
                sup_iopf: false,
                ga_log_intr: true,
                is_run: false,
                destination: e.host.apic_id,
                ga_tag: e.tag,
                vector: e.target.vector,
                backing_page: e.vcpu.pda,
            })
            .encode()
            .map_err(VendorError::Amd),
        }
    }
}

impl HostConfig {
    /// The IOMMU vendor implementation selected by [`HostConfig::iommu`].
    pub fn vendor(&self) -> &'static dyn RemappingVendor {
        self.iommu.vendor()
    }
}

/// Whether `apic_mode` and `ir_mode` can be served by `kind` (checked by
/// [`HostConfig::validate`]): AMD-Vi 32-bit entries hold 8-bit destinations and have no guest
/// mode.
pub(crate) fn supports(kind: IommuKind, apic_mode: ApicMode, ir_mode: IrMode) -> bool {
    match kind {
        IommuKind::Vtd => true,
        IommuKind::AmdVi(c) => match c.irte_format {
            AmdIrteFormat::Bits128 => true,
            AmdIrteFormat::Bits32 => apic_mode == ApicMode::XApic && ir_mode == IrMode::Remapped,
        },
    }
}

#[cfg(test)]
mod tests;
