//! AMD-Vi interrupt remapping: the MSI carrying the IRTE index, and the 32-bit and 128-bit
//! interrupt remapping table entries.
//!
//! Under AMD-Vi remapping the device's MSI address is the plain `0xFEE00000` (high 0) and the
//! data carries the IRTE index in bits 10:0; the table is per device (2^IntTabLen entries, at most
//! 2048, from the device table entry). Layouts follow Linux
//! `drivers/iommu/amd/amd_iommu_types.h` (`union irte`, `union irte_ga_lo`, `union irte_ga_hi`).

use core::fmt;

use bitfield_struct::bitfield;
use zerocopy::byteorder::little_endian::{U32, U128};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::MSI_ADDRESS_BASE;
use super::fields::FieldDesc;
use super::msi::MsiMessage;

// ---------------------------------------------------------------------------------------------
// MSI
// ---------------------------------------------------------------------------------------------

/// Address bit 2, which Linux sets when the IOMMU supports 2048-entry tables.
const ADDRESS_DM: u32 = 1 << 2;

/// An AMD-Vi remapped MSI: the IRTE index in data bits 10:0.
///
/// Linux (`fill_msi_msg` in `drivers/iommu/amd/iommu.c`) writes address `0xFEE00000`, high 0 and
/// data = index with all other bits 0; when the IOMMU supports 2K interrupt remapping
/// (`FEATURE_NUM_INT_REMAP_SUP_2K` in EFR2) it also sets address bit 2 (DM) "regardless of the
/// actual destination mode, which is signified by the IRTE\[DM\]".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AmdMsi {
    /// The IRTE index, at most [`AmdMsi::MAX_INDEX`] (data bits 10:0).
    pub index: u16,
    /// Address bit 2 (DM), set for IOMMUs with 2K interrupt remapping support.
    pub address_dm: bool,
}

impl AmdMsi {
    /// The largest index (2048-entry tables).
    pub const MAX_INDEX: u16 = 0x7FF;
    /// The first index that needs address bit 2 (DM) set: with DM clear the IOMMU reads data
    /// bits 10:8 as the message type (fixed 000b, arbitrated 001b; SMI, NMI, INIT and ExtInt
    /// are not remapped), so only indices below `0x200` are remapped. Linux sets DM on IOMMUs
    /// with 2K interrupt remapping support; QEMU's AMD-Vi passes the message through by type.
    pub const FIRST_DM_INDEX: u16 = 0x200;
    /// Data bits that carry the index (10:0); the rest are treated as reserved.
    pub const DATA_INDEX_MASK: u32 = 0x7FF;

    /// Encodes the message; the index must be ≤ 2047, and an index of
    /// [`AmdMsi::FIRST_DM_INDEX`] or more needs `address_dm`.
    pub const fn encode(&self) -> Result<MsiMessage, AmdMsiError> {
        if self.index > Self::MAX_INDEX {
            return Err(AmdMsiError::IndexOutOfRange(self.index));
        }
        if self.index >= Self::FIRST_DM_INDEX && !self.address_dm {
            return Err(AmdMsiError::IndexNeedsDm(self.index));
        }
        let address = MSI_ADDRESS_BASE | if self.address_dm { ADDRESS_DM } else { 0 };
        Ok(MsiMessage::new(address, 0, self.index as u32))
    }

    /// Decodes a message: high address 0, low address `0xFEE00000` or `0xFEE00004`, data bits
    /// 31:11 clear, and with DM clear an index below [`AmdMsi::FIRST_DM_INDEX`] (data bits 10:8
    /// are then the message type, and only fixed and arbitrated messages are remapped).
    pub const fn decode(msg: MsiMessage) -> Result<Self, AmdMsiError> {
        if msg.address_hi != 0 {
            return Err(AmdMsiError::AddressHighNonZero(msg.address_hi));
        }
        if msg.address_lo & !ADDRESS_DM != MSI_ADDRESS_BASE {
            return Err(AmdMsiError::BadAddress(msg.address_lo));
        }
        let reserved = msg.data & !Self::DATA_INDEX_MASK;
        if reserved != 0 {
            return Err(AmdMsiError::DataReservedBits(reserved));
        }
        let address_dm = msg.address_lo & ADDRESS_DM != 0;
        let index = msg.data as u16;
        if !address_dm && index >= Self::FIRST_DM_INDEX {
            return Err(AmdMsiError::IndexNeedsDm(index));
        }
        Ok(Self { index, address_dm })
    }
}

/// Errors encoding or decoding an AMD-Vi remapped MSI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdMsiError {
    /// The high address (carried) is not 0.
    AddressHighNonZero(u32),
    /// The low address (carried) is neither `0xFEE00000` nor `0xFEE00004`.
    BadAddress(u32),
    /// Data bits 31:11 are set (the set bits are carried).
    DataReservedBits(u32),
    /// Encode: the index (carried) exceeds 2047.
    IndexOutOfRange(u16),
    /// The index (carried) is `0x200` or more and address bit 2 (DM) is clear: data bits 10:8
    /// then give a message type other than fixed or arbitrated, which is not remapped.
    IndexNeedsDm(u16),
}

impl fmt::Display for AmdMsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::AddressHighNonZero(hi) => {
                write!(f, "AMD-Vi MSI high address {hi:#010x} is not 0")
            }
            Self::BadAddress(lo) => write!(
                f,
                "AMD-Vi MSI address {lo:#010x} is not 0xfee00000 (or 0xfee00004)"
            ),
            Self::DataReservedBits(bits) => {
                write!(
                    f,
                    "AMD-Vi MSI data bits {bits:#x} above the 11-bit index are set"
                )
            }
            Self::IndexOutOfRange(index) => {
                write!(f, "AMD-Vi IRTE index {index} exceeds 2047")
            }
            Self::IndexNeedsDm(index) => write!(
                f,
                "AMD-Vi IRTE index {index:#x} is 0x200 or more and address bit 2 (DM) is clear: data bits 10:8 ({}) are read as the message type, not remapped; set address_dm (2048-entry tables)",
                (index >> 8) & 7
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IRTEs
// ---------------------------------------------------------------------------------------------

/// IntType 0: fixed.
pub const INT_TYPE_FIXED: u8 = 0;
/// IntType 1: arbitrated (lowest priority).
pub const INT_TYPE_ARBITRATED: u8 = 1;

/// The name of an IRTE IntType value: `fixed` and `arbitrated` are the only types a remapped
/// entry delivers; 2 (SMI), 4 (NMI), 5 (INIT) and 7 (ExtInt) are message types the IOMMU
/// passes through by the device table entry, not remaps, and 3 and 6 are reserved. QEMU's
/// AMD-Vi aborts an interrupt whose IRTE IntType is neither fixed nor arbitrated; vIR hosts
/// write fixed (VIR-FMT-H-006).
pub const fn int_type_name(int_type: u8) -> &'static str {
    match int_type {
        INT_TYPE_FIXED => "fixed",
        INT_TYPE_ARBITRATED => "arbitrated",
        2 => "smi (not remapped)",
        4 => "nmi (not remapped)",
        5 => "init (not remapped)",
        7 => "extint (not remapped)",
        _ => "reserved",
    }
}

/// Whether an IRTE IntType is one a remapped entry delivers (fixed or arbitrated).
pub const fn int_type_is_remappable(int_type: u8) -> bool {
    int_type == INT_TYPE_FIXED || int_type == INT_TYPE_ARBITRATED
}

/// Linux's marker for an allocated but not yet programmed 32-bit IRTE (`IRTE_ALLOCATED`,
/// `~1U` in `drivers/iommu/amd/iommu.c`): RemapEn = 0, so the IOMMU does not remap through
/// it; the other bits are Linux's bookkeeping, not an entry. (Linux marks an allocated 128-bit
/// entry with all-zero words and vector `0xFF`, which decodes as a not-remapping entry.)
pub const IRTE32_LINUX_ALLOCATED: u32 = 0xFFFF_FFFE;

/// Layout of a 32-bit AMD-Vi IRTE (Linux `union irte`).
///
/// Build it from untrusted bits with [`AmdIrte32::from_u32`]; the getters never panic.
#[bitfield(u32, repr = U32, from = U32::new, into = U32::get)]
#[derive(PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct AmdIrte32 {
    /// Bit 0: RemapEn.
    pub remap_en: bool,
    /// Bit 1: SupIOPF, suppress I/O page faults.
    pub sup_iopf: bool,
    /// Bits 4:2: IntType (0 fixed, 1 arbitrated).
    #[bits(3)]
    pub int_type: u8,
    /// Bit 5: RqEoi.
    pub rq_eoi: bool,
    /// Bit 6: DM, destination mode (1 logical).
    pub dest_mode_logical: bool,
    /// Bit 7: GuestMode, must be 0 in the 32-bit format.
    pub guest_mode: bool,
    /// Bits 15:8: destination APIC ID.
    pub destination: u8,
    /// Bits 23:16: vector.
    pub vector: u8,
    /// Bits 31:24: reserved.
    _reserved_31_24: u8,
}

impl AmdIrte32 {
    /// Every named field (reserved bits excluded), lowest first: name, Linux kernel name,
    /// bit range (from the layout) and meaning.
    pub const FIELDS: &'static [FieldDesc] = &[
        FieldDesc::new(
            "remap_en",
            Some("valid"),
            Self::REMAP_EN_OFFSET,
            Self::REMAP_EN_BITS,
            "RemapEn: the entry remaps",
        ),
        FieldDesc::new(
            "sup_iopf",
            Some("no_fault"),
            Self::SUP_IOPF_OFFSET,
            Self::SUP_IOPF_BITS,
            "SupIOPF: suppress I/O page fault logging",
        ),
        FieldDesc::new(
            "int_type",
            Some("int_type"),
            Self::INT_TYPE_OFFSET,
            Self::INT_TYPE_BITS,
            "IntType: 0 fixed, 1 arbitrated",
        ),
        FieldDesc::new(
            "rq_eoi",
            Some("rq_eoi"),
            Self::RQ_EOI_OFFSET,
            Self::RQ_EOI_BITS,
            "RqEoi: request EOI",
        ),
        FieldDesc::new(
            "dest_mode_logical",
            Some("dm"),
            Self::DEST_MODE_LOGICAL_OFFSET,
            Self::DEST_MODE_LOGICAL_BITS,
            "DM: destination mode, 1 logical",
        ),
        FieldDesc::new(
            "guest_mode",
            None,
            Self::GUEST_MODE_OFFSET,
            Self::GUEST_MODE_BITS,
            "GuestMode: must be 0 in the 32-bit format",
        ),
        FieldDesc::new(
            "destination",
            Some("destination"),
            Self::DESTINATION_OFFSET,
            Self::DESTINATION_BITS,
            "destination APIC ID",
        ),
        FieldDesc::new(
            "vector",
            Some("vector"),
            Self::VECTOR_OFFSET,
            Self::VECTOR_BITS,
            "vector",
        ),
    ];

    /// Reserved bits (31:24).
    pub const RESERVED_MASK: u32 = 0xFF00_0000;

    /// Wraps raw entry bits.
    pub const fn from_u32(bits: u32) -> Self {
        Self::from_bits(U32::new(bits))
    }

    /// The raw entry bits.
    pub const fn to_u32(self) -> u32 {
        self.into_bits().get()
    }
}

/// A decoded 32-bit AMD-Vi IRTE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AmdIrte32Entry {
    /// RemapEn (bit 0).
    pub remap_en: bool,
    /// SupIOPF (bit 1).
    pub sup_iopf: bool,
    /// IntType, 3 bits (4:2); see [`INT_TYPE_FIXED`], [`INT_TYPE_ARBITRATED`].
    pub int_type: u8,
    /// RqEoi (bit 5).
    pub rq_eoi: bool,
    /// DM, `true` = logical (bit 6).
    pub dest_mode_logical: bool,
    /// Destination APIC ID (15:8).
    pub destination: u8,
    /// Vector (23:16).
    pub vector: u8,
}

impl AmdIrte32Entry {
    /// Decodes a 32-bit entry: GuestMode (bit 7) and bits 31:24 must be 0; Linux's
    /// [`IRTE32_LINUX_ALLOCATED`] marker is reported as [`AmdIrteError::LinuxAllocated`].
    pub const fn decode(raw: u32) -> Result<Self, AmdIrteError> {
        if raw == IRTE32_LINUX_ALLOCATED {
            return Err(AmdIrteError::LinuxAllocated);
        }
        let b = AmdIrte32::from_u32(raw);
        if b.guest_mode() {
            return Err(AmdIrteError::GuestModeIn32BitIrte(raw));
        }
        let reserved = raw & AmdIrte32::RESERVED_MASK;
        if reserved != 0 {
            return Err(AmdIrteError::ReservedBits {
                mask: reserved as u128,
            });
        }
        Ok(Self {
            remap_en: b.remap_en(),
            sup_iopf: b.sup_iopf(),
            int_type: b.int_type(),
            rq_eoi: b.rq_eoi(),
            dest_mode_logical: b.dest_mode_logical(),
            destination: b.destination(),
            vector: b.vector(),
        })
    }

    /// Encodes the entry, checking the IntType width.
    pub const fn encode(&self) -> Result<u32, AmdIrteError> {
        if self.int_type > 7 {
            return Err(AmdIrteError::FieldOutOfRange {
                field: AmdIrteField::IntType,
                value: self.int_type as u64,
            });
        }
        Ok(AmdIrte32::new()
            .with_remap_en(self.remap_en)
            .with_sup_iopf(self.sup_iopf)
            .with_int_type(self.int_type)
            .with_rq_eoi(self.rq_eoi)
            .with_dest_mode_logical(self.dest_mode_logical)
            .with_guest_mode(false)
            .with_destination(self.destination)
            .with_vector(self.vector)
            .to_u32())
    }
}

/// Layout of a 128-bit AMD-Vi IRTE in remapped (non-guest) mode, GuestMode = 0 (Linux
/// `irte_ga_lo.fields_remap` + `irte_ga_hi`).
#[bitfield(u128, repr = U128, from = U128::new, into = U128::get)]
#[derive(PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct AmdIrte128RemapBits {
    /// Bit 0: RemapEn.
    pub remap_en: bool,
    /// Bit 1: SupIOPF.
    pub sup_iopf: bool,
    /// Bits 4:2: IntType.
    #[bits(3)]
    pub int_type: u8,
    /// Bit 5: RqEoi.
    pub rq_eoi: bool,
    /// Bit 6: DM (1 logical).
    pub dest_mode_logical: bool,
    /// Bit 7: GuestMode = 0.
    pub guest_mode: bool,
    /// Bits 31:8: destination bits 23:0.
    #[bits(24)]
    pub destination_23_0: u32,
    /// Bits 63:32: GA tag, reserved outside guest mode.
    _reserved_63_32: u32,
    /// Bits 71:64: vector.
    pub vector: u8,
    /// Bits 119:72: reserved outside guest mode.
    #[bits(48)]
    _reserved_119_72: u64,
    /// Bits 127:120: destination bits 31:24.
    pub destination_31_24: u8,
}

impl AmdIrte128RemapBits {
    /// Every named field (reserved bits excluded), lowest first: name, Linux kernel name,
    /// bit range (from the layout) and meaning.
    pub const FIELDS: &'static [FieldDesc] = &[
        FieldDesc::new(
            "remap_en",
            Some("valid"),
            Self::REMAP_EN_OFFSET,
            Self::REMAP_EN_BITS,
            "RemapEn: the entry remaps",
        ),
        FieldDesc::new(
            "sup_iopf",
            Some("no_fault"),
            Self::SUP_IOPF_OFFSET,
            Self::SUP_IOPF_BITS,
            "SupIOPF: suppress I/O page fault logging",
        ),
        FieldDesc::new(
            "int_type",
            Some("int_type"),
            Self::INT_TYPE_OFFSET,
            Self::INT_TYPE_BITS,
            "IntType: 0 fixed, 1 arbitrated",
        ),
        FieldDesc::new(
            "rq_eoi",
            Some("rq_eoi"),
            Self::RQ_EOI_OFFSET,
            Self::RQ_EOI_BITS,
            "RqEoi: request EOI",
        ),
        FieldDesc::new(
            "dest_mode_logical",
            Some("dm"),
            Self::DEST_MODE_LOGICAL_OFFSET,
            Self::DEST_MODE_LOGICAL_BITS,
            "DM: destination mode, 1 logical",
        ),
        FieldDesc::new(
            "guest_mode",
            Some("guest_mode"),
            Self::GUEST_MODE_OFFSET,
            Self::GUEST_MODE_BITS,
            "GuestMode: 0 remapped",
        ),
        FieldDesc::new(
            "destination_23_0",
            Some("destination"),
            Self::DESTINATION_23_0_OFFSET,
            Self::DESTINATION_23_0_BITS,
            "destination APIC ID bits 23:0",
        ),
        FieldDesc::new(
            "vector",
            Some("vector"),
            Self::VECTOR_OFFSET,
            Self::VECTOR_BITS,
            "vector",
        ),
        FieldDesc::new(
            "destination_31_24",
            None,
            Self::DESTINATION_31_24_OFFSET,
            Self::DESTINATION_31_24_BITS,
            "destination APIC ID bits 31:24 (irte_ga_hi.destination)",
        ),
    ];

    /// Reserved bits outside guest mode: 63:32, 119:72.
    pub const RESERVED_MASK: u128 = (0xFFFF_FFFF << 32) | (0xFFFF_FFFF_FFFF << 72);

    /// Wraps raw entry bits.
    pub const fn from_u128(bits: u128) -> Self {
        Self::from_bits(U128::new(bits))
    }

    /// The raw entry bits.
    pub const fn to_u128(self) -> u128 {
        self.into_bits().get()
    }
}

/// Layout of a 128-bit AMD-Vi IRTE in guest virtual APIC mode, GuestMode = 1 (Linux
/// `irte_ga_lo.fields_vapic` + `irte_ga_hi`).
#[bitfield(u128, repr = U128, from = U128::new, into = U128::get)]
#[derive(PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct AmdIrte128GuestBits {
    /// Bit 0: RemapEn.
    pub remap_en: bool,
    /// Bit 1: SupIOPF.
    pub sup_iopf: bool,
    /// Bit 2: GALogIntr, log to the GA log (and interrupt) when the vCPU is not running.
    pub ga_log_intr: bool,
    /// Bits 5:3: reserved.
    #[bits(3)]
    _reserved_5_3: u8,
    /// Bit 6: IsRun, the target vCPU is running.
    pub is_run: bool,
    /// Bit 7: GuestMode = 1.
    pub guest_mode: bool,
    /// Bits 31:8: destination bits 23:0 (the physical CPU running the vCPU, for the doorbell).
    #[bits(24)]
    pub destination_23_0: u32,
    /// Bits 63:32: GA tag.
    pub ga_tag: u32,
    /// Bits 71:64: guest vector.
    pub vector: u8,
    /// Bits 75:72: reserved.
    #[bits(4)]
    _reserved_75_72: u8,
    /// Bits 115:76: vAPIC backing page address bits 51:12.
    #[bits(40)]
    pub ga_root_ptr: u64,
    /// Bits 119:116: reserved.
    #[bits(4)]
    _reserved_119_116: u8,
    /// Bits 127:120: destination bits 31:24.
    pub destination_31_24: u8,
}

impl AmdIrte128GuestBits {
    /// Every named field (reserved bits excluded), lowest first: name, Linux kernel name,
    /// bit range (from the layout) and meaning.
    pub const FIELDS: &'static [FieldDesc] = &[
        FieldDesc::new(
            "remap_en",
            Some("valid"),
            Self::REMAP_EN_OFFSET,
            Self::REMAP_EN_BITS,
            "RemapEn: the entry remaps",
        ),
        FieldDesc::new(
            "sup_iopf",
            Some("no_fault"),
            Self::SUP_IOPF_OFFSET,
            Self::SUP_IOPF_BITS,
            "SupIOPF: suppress I/O page fault logging",
        ),
        FieldDesc::new(
            "ga_log_intr",
            Some("ga_log_intr"),
            Self::GA_LOG_INTR_OFFSET,
            Self::GA_LOG_INTR_BITS,
            "GALogIntr: log to the GA log when not running",
        ),
        FieldDesc::new(
            "is_run",
            Some("is_run"),
            Self::IS_RUN_OFFSET,
            Self::IS_RUN_BITS,
            "IsRun: the vCPU is running",
        ),
        FieldDesc::new(
            "guest_mode",
            Some("guest_mode"),
            Self::GUEST_MODE_OFFSET,
            Self::GUEST_MODE_BITS,
            "GuestMode: 1 guest virtual APIC",
        ),
        FieldDesc::new(
            "destination_23_0",
            Some("destination"),
            Self::DESTINATION_23_0_OFFSET,
            Self::DESTINATION_23_0_BITS,
            "physical APIC ID bits 23:0 for the doorbell",
        ),
        FieldDesc::new(
            "ga_tag",
            Some("ga_tag"),
            Self::GA_TAG_OFFSET,
            Self::GA_TAG_BITS,
            "GA tag, logged in the GA log",
        ),
        FieldDesc::new(
            "vector",
            Some("vector"),
            Self::VECTOR_OFFSET,
            Self::VECTOR_BITS,
            "guest vector",
        ),
        FieldDesc::new(
            "ga_root_ptr",
            Some("ga_root_ptr"),
            Self::GA_ROOT_PTR_OFFSET,
            Self::GA_ROOT_PTR_BITS,
            "vAPIC backing page address bits 51:12",
        ),
        FieldDesc::new(
            "destination_31_24",
            None,
            Self::DESTINATION_31_24_OFFSET,
            Self::DESTINATION_31_24_BITS,
            "physical APIC ID bits 31:24 (irte_ga_hi.destination)",
        ),
    ];

    /// Reserved bits in guest mode: 5:3, 75:72, 119:116.
    pub const RESERVED_MASK: u128 = (0x7 << 3) | (0xF << 72) | (0xF << 116);

    /// Wraps raw entry bits.
    pub const fn from_u128(bits: u128) -> Self {
        Self::from_bits(U128::new(bits))
    }

    /// The raw entry bits.
    pub const fn to_u128(self) -> u128 {
        self.into_bits().get()
    }
}

/// A decoded 128-bit AMD-Vi IRTE in remapped (non-guest) mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AmdRemapIrte {
    /// RemapEn (bit 0).
    pub remap_en: bool,
    /// SupIOPF (bit 1).
    pub sup_iopf: bool,
    /// IntType, 3 bits (4:2).
    pub int_type: u8,
    /// RqEoi (bit 5).
    pub rq_eoi: bool,
    /// DM, `true` = logical (bit 6).
    pub dest_mode_logical: bool,
    /// Destination APIC ID, 32 bits (23:0 in IRTE 31:8, 31:24 in IRTE 127:120).
    pub destination: u32,
    /// Vector (71:64).
    pub vector: u8,
}

/// A decoded 128-bit AMD-Vi IRTE in guest virtual APIC mode (AVIC posting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AmdGuestIrte {
    /// RemapEn (bit 0).
    pub remap_en: bool,
    /// SupIOPF (bit 1).
    pub sup_iopf: bool,
    /// GALogIntr (bit 2).
    pub ga_log_intr: bool,
    /// IsRun (bit 6).
    pub is_run: bool,
    /// Destination APIC ID of the physical CPU running the vCPU, 32 bits (23:0 in IRTE 31:8,
    /// 31:24 in IRTE 127:120).
    pub destination: u32,
    /// GA tag (63:32), reported in the GA log.
    pub ga_tag: u32,
    /// Guest vector (71:64).
    pub vector: u8,
    /// vAPIC backing page physical address, 4 KiB aligned, below 2^52 (bits 51:12 in IRTE
    /// 115:76).
    pub backing_page: u64,
}

/// A decoded 128-bit AMD-Vi IRTE, keyed on GuestMode (bit 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AmdIrte128 {
    /// GuestMode = 0: remapped interrupt.
    Remapped(AmdRemapIrte),
    /// GuestMode = 1: guest virtual APIC mode.
    Guest(AmdGuestIrte),
}

const GUEST_MODE: u128 = 1 << 7;

impl AmdIrte128 {
    /// Decodes a 128-bit entry, dispatching on GuestMode (bit 7). Total: any input gives an
    /// entry or [`AmdIrteError::ReservedBits`] with exactly the offending bits.
    pub const fn decode(raw: u128) -> Result<Self, AmdIrteError> {
        if raw & GUEST_MODE == 0 {
            let mask = raw & AmdIrte128RemapBits::RESERVED_MASK;
            if mask != 0 {
                return Err(AmdIrteError::ReservedBits { mask });
            }
            let b = AmdIrte128RemapBits::from_u128(raw);
            Ok(Self::Remapped(AmdRemapIrte {
                remap_en: b.remap_en(),
                sup_iopf: b.sup_iopf(),
                int_type: b.int_type(),
                rq_eoi: b.rq_eoi(),
                dest_mode_logical: b.dest_mode_logical(),
                destination: (b.destination_31_24() as u32) << 24 | b.destination_23_0(),
                vector: b.vector(),
            }))
        } else {
            let mask = raw & AmdIrte128GuestBits::RESERVED_MASK;
            if mask != 0 {
                return Err(AmdIrteError::ReservedBits { mask });
            }
            let b = AmdIrte128GuestBits::from_u128(raw);
            Ok(Self::Guest(AmdGuestIrte {
                remap_en: b.remap_en(),
                sup_iopf: b.sup_iopf(),
                ga_log_intr: b.ga_log_intr(),
                is_run: b.is_run(),
                destination: (b.destination_31_24() as u32) << 24 | b.destination_23_0(),
                ga_tag: b.ga_tag(),
                vector: b.vector(),
                backing_page: b.ga_root_ptr() << 12,
            }))
        }
    }

    /// Encodes the entry, checking the IntType width and the backing page (4 KiB aligned,
    /// below 2^52).
    pub const fn encode(&self) -> Result<u128, AmdIrteError> {
        match self {
            Self::Remapped(e) => {
                if e.int_type > 7 {
                    return Err(AmdIrteError::FieldOutOfRange {
                        field: AmdIrteField::IntType,
                        value: e.int_type as u64,
                    });
                }
                Ok(AmdIrte128RemapBits::new()
                    .with_remap_en(e.remap_en)
                    .with_sup_iopf(e.sup_iopf)
                    .with_int_type(e.int_type)
                    .with_rq_eoi(e.rq_eoi)
                    .with_dest_mode_logical(e.dest_mode_logical)
                    .with_guest_mode(false)
                    .with_destination_23_0(e.destination & 0xFF_FFFF)
                    .with_vector(e.vector)
                    .with_destination_31_24((e.destination >> 24) as u8)
                    .to_u128())
            }
            Self::Guest(e) => {
                if e.backing_page & 0xFFF != 0 {
                    return Err(AmdIrteError::MisalignedBackingPage(e.backing_page));
                }
                if e.backing_page >> 52 != 0 {
                    return Err(AmdIrteError::FieldOutOfRange {
                        field: AmdIrteField::BackingPage,
                        value: e.backing_page,
                    });
                }
                // The page is below 2^52 (checked above), so page >> 12 fits 40 bits.
                Ok(AmdIrte128GuestBits::new()
                    .with_remap_en(e.remap_en)
                    .with_sup_iopf(e.sup_iopf)
                    .with_ga_log_intr(e.ga_log_intr)
                    .with_is_run(e.is_run)
                    .with_guest_mode(true)
                    .with_destination_23_0(e.destination & 0xFF_FFFF)
                    .with_ga_tag(e.ga_tag)
                    .with_vector(e.vector)
                    .with_ga_root_ptr(e.backing_page >> 12)
                    .with_destination_31_24((e.destination >> 24) as u8)
                    .to_u128())
            }
        }
    }

    /// RemapEn.
    pub const fn remap_en(&self) -> bool {
        match self {
            Self::Remapped(e) => e.remap_en,
            Self::Guest(e) => e.remap_en,
        }
    }

    /// The destination APIC ID (32 bits).
    pub const fn destination(&self) -> u32 {
        match self {
            Self::Remapped(e) => e.destination,
            Self::Guest(e) => e.destination,
        }
    }

    /// The vector (host vector when remapped, guest vector in guest mode).
    pub const fn vector(&self) -> u8 {
        match self {
            Self::Remapped(e) => e.vector,
            Self::Guest(e) => e.vector,
        }
    }
}

/// An AMD-Vi IRTE field whose value did not fit when encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdIrteField {
    /// IntType, 3 bits.
    IntType,
    /// vAPIC backing page address, below 2^52.
    BackingPage,
}

/// Errors decoding or encoding an AMD-Vi IRTE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdIrteError {
    /// Decode: reserved bits are set; `mask` holds exactly the offending bits.
    ReservedBits {
        /// The set reserved bits.
        mask: u128,
    },
    /// Decode: GuestMode (bit 7) is set in a 32-bit entry (carried), where it must be 0.
    GuestModeIn32BitIrte(u32),
    /// Encode: a field value does not fit.
    FieldOutOfRange {
        /// The field.
        field: AmdIrteField,
        /// The value given.
        value: u64,
    },
    /// Encode: the vAPIC backing page address (carried) is not 4 KiB aligned.
    MisalignedBackingPage(u64),
    /// Decode: the 32-bit entry is Linux's [`IRTE32_LINUX_ALLOCATED`] marker (allocated, not
    /// programmed, RemapEn = 0), not an entry.
    LinuxAllocated,
}

impl fmt::Display for AmdIrteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ReservedBits { mask } => write!(
                f,
                "AMD-Vi IRTE reserved bits {mask:#x} are set (lowest: bit {})",
                mask.trailing_zeros()
            ),
            Self::GuestModeIn32BitIrte(raw) => write!(
                f,
                "AMD-Vi 32-bit IRTE {raw:#010x} has GuestMode (bit 7) set"
            ),
            Self::FieldOutOfRange { field, value } => match field {
                AmdIrteField::IntType => {
                    write!(f, "AMD-Vi IRTE IntType {value} does not fit 3 bits")
                }
                AmdIrteField::BackingPage => {
                    write!(f, "AMD-Vi vAPIC backing page {value:#x} is not below 2^52")
                }
            },
            Self::MisalignedBackingPage(addr) => write!(
                f,
                "AMD-Vi vAPIC backing page {addr:#x} is not 4 KiB aligned"
            ),
            Self::LinuxAllocated => f.write_str(
                "AMD-Vi 32-bit IRTE 0xfffffffe is Linux's IRTE_ALLOCATED marker: allocated, not programmed (RemapEn = 0, nothing is remapped through it)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn remap() -> AmdRemapIrte {
        AmdRemapIrte {
            remap_en: false,
            sup_iopf: false,
            int_type: 0,
            rq_eoi: false,
            dest_mode_logical: false,
            destination: 0,
            vector: 0,
        }
    }

    fn guest() -> AmdGuestIrte {
        AmdGuestIrte {
            remap_en: false,
            sup_iopf: false,
            ga_log_intr: false,
            is_run: false,
            destination: 0,
            ga_tag: 0,
            vector: 0,
            backing_page: 0,
        }
    }

    fn entry32() -> AmdIrte32Entry {
        AmdIrte32Entry {
            remap_en: false,
            sup_iopf: false,
            int_type: 0,
            rq_eoi: false,
            dest_mode_logical: false,
            destination: 0,
            vector: 0,
        }
    }

    fn enc(e: AmdRemapIrte) -> u128 {
        AmdIrte128::Remapped(e).encode().unwrap()
    }

    fn enc_g(e: AmdGuestIrte) -> u128 {
        AmdIrte128::Guest(e).encode().unwrap()
    }

    // --- MSI ---

    #[test]
    fn amd_msi_index_in_data_bits_10_0() {
        let m = AmdMsi {
            index: 0x1FF,
            address_dm: false,
        };
        assert_eq!(m.encode(), Ok(MsiMessage::new(0xFEE0_0000, 0, 0x1FF)));
        assert_eq!(
            AmdMsi::decode(MsiMessage::new(0xFEE0_0000, 0, 0x1FF)),
            Ok(m)
        );
        let m = AmdMsi {
            index: 0x7FF,
            address_dm: true,
        };
        assert_eq!(m.encode(), Ok(MsiMessage::new(0xFEE0_0004, 0, 0x7FF)));
        assert_eq!(
            AmdMsi::decode(MsiMessage::new(0xFEE0_0004, 0, 0x7FF)),
            Ok(m)
        );
    }

    #[test]
    fn amd_msi_index_0x200_and_up_needs_dm() {
        let m = AmdMsi {
            index: 0x345,
            address_dm: false,
        };
        assert_eq!(m.encode(), Err(AmdMsiError::IndexNeedsDm(0x345)));
        assert_eq!(
            AmdMsi::decode(MsiMessage::new(0xFEE0_0000, 0, 0x345)),
            Err(AmdMsiError::IndexNeedsDm(0x345))
        );
        let m = AmdMsi {
            address_dm: true,
            ..m
        };
        assert_eq!(m.encode(), Ok(MsiMessage::new(0xFEE0_0004, 0, 0x345)));
    }

    #[test]
    fn irte32_linux_allocated_marker_and_int_types() {
        assert_eq!(
            AmdIrte32Entry::decode(IRTE32_LINUX_ALLOCATED),
            Err(AmdIrteError::LinuxAllocated)
        );
        assert!(int_type_is_remappable(INT_TYPE_FIXED));
        assert!(int_type_is_remappable(INT_TYPE_ARBITRATED));
        for t in 2..8 {
            assert!(!int_type_is_remappable(t));
        }
        assert_eq!(int_type_name(3), "reserved");
        assert_eq!(int_type_name(6), "reserved");
        assert_eq!(int_type_name(4), "nmi (not remapped)");
    }

    #[test]
    fn amd_msi_2k_dm_at_address_bit_2() {
        let m = AmdMsi {
            index: 5,
            address_dm: true,
        };
        assert_eq!(m.encode(), Ok(MsiMessage::new(0xFEE0_0004, 0, 5)));
        assert_eq!(AmdMsi::decode(MsiMessage::new(0xFEE0_0004, 0, 5)), Ok(m));
    }

    #[test]
    fn amd_msi_errors() {
        assert_eq!(
            AmdMsi {
                index: 0x800,
                address_dm: false
            }
            .encode(),
            Err(AmdMsiError::IndexOutOfRange(0x800))
        );
        assert_eq!(
            AmdMsi::decode(MsiMessage::new(0xFEE0_0000, 1, 0)),
            Err(AmdMsiError::AddressHighNonZero(1))
        );
        assert_eq!(
            AmdMsi::decode(MsiMessage::new(0xFEE0_1000, 0, 0)),
            Err(AmdMsiError::BadAddress(0xFEE0_1000))
        );
        assert_eq!(
            AmdMsi::decode(MsiMessage::new(0xFEE0_0010, 0, 0)),
            Err(AmdMsiError::BadAddress(0xFEE0_0010))
        );
        assert_eq!(
            AmdMsi::decode(MsiMessage::new(0xFEE0_0000, 0, 0x4801)),
            Err(AmdMsiError::DataReservedBits(0x4800))
        );
    }

    // --- 32-bit IRTE ---

    #[test]
    fn irte32_field_offsets_match_spec_table() {
        assert_eq!(AmdIrte32::REMAP_EN_OFFSET, 0);
        assert_eq!(AmdIrte32::SUP_IOPF_OFFSET, 1);
        assert_eq!(
            (AmdIrte32::INT_TYPE_OFFSET, AmdIrte32::INT_TYPE_BITS),
            (2, 3)
        );
        assert_eq!(AmdIrte32::RQ_EOI_OFFSET, 5);
        assert_eq!(AmdIrte32::DEST_MODE_LOGICAL_OFFSET, 6);
        assert_eq!(AmdIrte32::GUEST_MODE_OFFSET, 7);
        assert_eq!(
            (AmdIrte32::DESTINATION_OFFSET, AmdIrte32::DESTINATION_BITS),
            (8, 8)
        );
        assert_eq!((AmdIrte32::VECTOR_OFFSET, AmdIrte32::VECTOR_BITS), (16, 8));
    }

    #[test]
    fn irte32_each_field_at_its_bits() {
        let one = |e: AmdIrte32Entry| e.encode().unwrap();
        assert_eq!(
            one(AmdIrte32Entry {
                remap_en: true,
                ..entry32()
            }),
            1 << 0
        );
        assert_eq!(
            one(AmdIrte32Entry {
                sup_iopf: true,
                ..entry32()
            }),
            1 << 1
        );
        assert_eq!(
            one(AmdIrte32Entry {
                int_type: 7,
                ..entry32()
            }),
            7 << 2
        );
        assert_eq!(
            one(AmdIrte32Entry {
                rq_eoi: true,
                ..entry32()
            }),
            1 << 5
        );
        assert_eq!(
            one(AmdIrte32Entry {
                dest_mode_logical: true,
                ..entry32()
            }),
            1 << 6
        );
        assert_eq!(
            one(AmdIrte32Entry {
                destination: 0xAB,
                ..entry32()
            }),
            0xAB << 8
        );
        assert_eq!(
            one(AmdIrte32Entry {
                vector: 0xCD,
                ..entry32()
            }),
            0xCD << 16
        );
    }

    #[test]
    fn golden_irte32_linux_fixed_vector_0x22_apic_1() {
        // irte_prepare: valid, int_type fixed, dm physical, destination 1, vector 0x22.
        let e = AmdIrte32Entry {
            remap_en: true,
            destination: 1,
            vector: 0x22,
            ..entry32()
        };
        assert_eq!(e.encode(), Ok(0x0022_0101));
        assert_eq!(AmdIrte32Entry::decode(0x0022_0101), Ok(e));
    }

    #[test]
    fn irte32_errors() {
        assert_eq!(
            AmdIrte32Entry::decode(0x80),
            Err(AmdIrteError::GuestModeIn32BitIrte(0x80))
        );
        assert_eq!(
            AmdIrte32Entry::decode(0x0100_0000),
            Err(AmdIrteError::ReservedBits { mask: 0x0100_0000 })
        );
        assert_eq!(
            AmdIrte32Entry {
                int_type: 8,
                ..entry32()
            }
            .encode(),
            Err(AmdIrteError::FieldOutOfRange {
                field: AmdIrteField::IntType,
                value: 8
            })
        );
    }

    // --- 128-bit IRTE ---

    #[test]
    fn irte128_field_offsets_match_spec_table() {
        use AmdIrte128GuestBits as G;
        use AmdIrte128RemapBits as R;
        assert_eq!((R::INT_TYPE_OFFSET, R::INT_TYPE_BITS), (2, 3));
        assert_eq!(R::GUEST_MODE_OFFSET, 7);
        assert_eq!(
            (R::DESTINATION_23_0_OFFSET, R::DESTINATION_23_0_BITS),
            (8, 24)
        );
        assert_eq!((R::VECTOR_OFFSET, R::VECTOR_BITS), (64, 8));
        assert_eq!(
            (R::DESTINATION_31_24_OFFSET, R::DESTINATION_31_24_BITS),
            (120, 8)
        );
        assert_eq!(G::GA_LOG_INTR_OFFSET, 2);
        assert_eq!(G::IS_RUN_OFFSET, 6);
        assert_eq!(G::GUEST_MODE_OFFSET, 7);
        assert_eq!((G::GA_TAG_OFFSET, G::GA_TAG_BITS), (32, 32));
        assert_eq!((G::GA_ROOT_PTR_OFFSET, G::GA_ROOT_PTR_BITS), (76, 40));
        assert_eq!(
            (G::DESTINATION_31_24_OFFSET, G::DESTINATION_31_24_BITS),
            (120, 8)
        );
        let used_r: u128 = 0xFF | (0xFF_FFFF << 8) | (0xFF << 64) | (0xFF << 120);
        assert_eq!(R::RESERVED_MASK, !used_r);
        let used_g: u128 = 0xC7
            | (0xFF_FFFF << 8)
            | (0xFFFF_FFFF << 32)
            | (0xFF << 64)
            | (0xFF_FFFF_FFFF << 76)
            | (0xFF << 120);
        assert_eq!(G::RESERVED_MASK, !used_g);
    }

    #[test]
    fn irte128_remap_flags_at_bits_0_6() {
        assert_eq!(
            enc(AmdRemapIrte {
                remap_en: true,
                ..remap()
            }),
            1
        );
        assert_eq!(
            enc(AmdRemapIrte {
                sup_iopf: true,
                ..remap()
            }),
            1 << 1
        );
        assert_eq!(
            enc(AmdRemapIrte {
                int_type: 1,
                ..remap()
            }),
            1 << 2
        );
        assert_eq!(
            enc(AmdRemapIrte {
                rq_eoi: true,
                ..remap()
            }),
            1 << 5
        );
        assert_eq!(
            enc(AmdRemapIrte {
                dest_mode_logical: true,
                ..remap()
            }),
            1 << 6
        );
    }

    #[test]
    fn irte128_vector_at_bits_71_64() {
        assert_eq!(
            enc(AmdRemapIrte {
                vector: 0x31,
                ..remap()
            }),
            0x31 << 64
        );
        assert_eq!(
            enc_g(AmdGuestIrte {
                vector: 0x31,
                ..guest()
            }),
            GUEST_MODE | 0x31 << 64
        );
    }

    #[test]
    fn irte128_destination_23_0_at_bits_31_8_and_31_24_at_bits_127_120() {
        let e = AmdRemapIrte {
            destination: 0x12AB_CDEF,
            ..remap()
        };
        let raw = (0xAB_CDEFu128 << 8) | (0x12u128 << 120);
        assert_eq!(enc(e), raw);
        assert_eq!(AmdIrte128::decode(raw), Ok(AmdIrte128::Remapped(e)));
        let g = AmdGuestIrte {
            destination: 0x12AB_CDEF,
            ..guest()
        };
        assert_eq!(enc_g(g), GUEST_MODE | raw);
    }

    #[test]
    fn irte128_guest_mode_bit_7_ga_log_intr_bit_2_is_run_bit_6() {
        assert_eq!(enc_g(guest()), 1 << 7);
        assert_eq!(
            enc_g(AmdGuestIrte {
                ga_log_intr: true,
                ..guest()
            }),
            GUEST_MODE | 1 << 2
        );
        assert_eq!(
            enc_g(AmdGuestIrte {
                is_run: true,
                ..guest()
            }),
            GUEST_MODE | 1 << 6
        );
    }

    #[test]
    fn irte128_ga_tag_at_bits_63_32_backing_page_at_115_76() {
        assert_eq!(
            enc_g(AmdGuestIrte {
                ga_tag: 0xDEAD_BEEF,
                ..guest()
            }),
            GUEST_MODE | 0xDEAD_BEEF << 32
        );
        let page = 0x000F_FFFF_FFFF_F000u64; // address bits 51:12 all set
        assert_eq!(
            enc_g(AmdGuestIrte {
                backing_page: page,
                ..guest()
            }),
            GUEST_MODE | (0xFF_FFFF_FFFFu128 << 76)
        );
        assert_eq!(
            AmdIrte128::Guest(AmdGuestIrte {
                backing_page: 0x1_0800,
                ..guest()
            })
            .encode(),
            Err(AmdIrteError::MisalignedBackingPage(0x1_0800))
        );
        assert_eq!(
            AmdIrte128::Guest(AmdGuestIrte {
                backing_page: 1 << 52,
                ..guest()
            })
            .encode(),
            Err(AmdIrteError::FieldOutOfRange {
                field: AmdIrteField::BackingPage,
                value: 1 << 52
            })
        );
    }

    #[test]
    fn golden_linux_irte_ga_remap_x2apic_0x100_vector_0x23() {
        // irte_ga_prepare: valid, int_type fixed, dm 0, dest 0x100, vector 0x23.
        // lo = 0x0000_0000_0001_0001 (dest 0x100 << 8), hi = 0x23.
        let e = AmdRemapIrte {
            remap_en: true,
            destination: 0x100,
            vector: 0x23,
            ..remap()
        };
        let raw = (0x23u128 << 64) | 0x0000_0000_0001_0001;
        assert_eq!(enc(e), raw);
        assert_eq!(AmdIrte128::decode(raw), Ok(AmdIrte128::Remapped(e)));
    }

    #[test]
    fn irte128_reserved_bits_by_mode() {
        // GA tag is reserved outside guest mode but valid in it.
        assert_eq!(
            AmdIrte128::decode(1u128 << 32),
            Err(AmdIrteError::ReservedBits { mask: 1 << 32 })
        );
        assert!(
            matches!(AmdIrte128::decode(GUEST_MODE | 1u128 << 32), Ok(AmdIrte128::Guest(g)) if g.ga_tag == 1)
        );
        // Bits 5:3 are IntType/RqEoi outside guest mode, reserved in it.
        assert_eq!(
            AmdIrte128::decode(GUEST_MODE | 1u128 << 3),
            Err(AmdIrteError::ReservedBits { mask: 1 << 3 })
        );
        for bit in [72u32, 75, 116, 119] {
            assert_eq!(
                AmdIrte128::decode(GUEST_MODE | 1u128 << bit),
                Err(AmdIrteError::ReservedBits { mask: 1 << bit }),
                "guest-mode bit {bit}"
            );
            assert_eq!(
                AmdIrte128::decode(1u128 << bit),
                Err(AmdIrteError::ReservedBits { mask: 1 << bit }),
                "remap-mode bit {bit}"
            );
        }
    }

    // --- property tests ---

    prop_compose! {
        fn remap_entry()(flags in any::<[bool; 4]>(), int_type in 0u8..8, destination in any::<u32>(),
                         vector in any::<u8>()) -> AmdRemapIrte {
            AmdRemapIrte {
                remap_en: flags[0], sup_iopf: flags[1], rq_eoi: flags[2], dest_mode_logical: flags[3],
                int_type, destination, vector,
            }
        }
    }

    prop_compose! {
        fn guest_entry()(flags in any::<[bool; 4]>(), destination in any::<u32>(), ga_tag in any::<u32>(),
                         vector in any::<u8>(), page in 0u64..(1 << 40)) -> AmdGuestIrte {
            AmdGuestIrte {
                remap_en: flags[0], sup_iopf: flags[1], ga_log_intr: flags[2], is_run: flags[3],
                destination, ga_tag, vector, backing_page: page << 12,
            }
        }
    }

    proptest! {
        #[test]
        fn amd_msi_round_trip(index in 0u16..=0x7FF, address_dm in any::<bool>()) {
            let m = AmdMsi { index, address_dm: address_dm || index >= AmdMsi::FIRST_DM_INDEX };
            prop_assert_eq!(AmdMsi::decode(m.encode().unwrap()), Ok(m));
        }

        #[test]
        fn amd_msi_decode_total(lo in prop_oneof![any::<u32>(), (0u32..8).prop_map(|b| 0xFEE0_0000 | b)],
                                hi in 0u32..2, data in prop_oneof![any::<u32>(), 0u32..0x1000]) {
            let msg = MsiMessage::new(lo, hi, data);
            match AmdMsi::decode(msg) {
                Ok(m) => prop_assert_eq!(m.encode(), Ok(msg)),
                Err(AmdMsiError::AddressHighNonZero(v)) => prop_assert!(v == hi && v != 0),
                Err(AmdMsiError::BadAddress(v)) => prop_assert!(v == lo && lo & !4 != 0xFEE0_0000),
                Err(AmdMsiError::DataReservedBits(v)) => prop_assert!(v != 0 && v == data & !0x7FF),
                Err(AmdMsiError::IndexNeedsDm(v)) => prop_assert!(lo & 4 == 0 && v >= 0x200 && u32::from(v) == data),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }

        #[test]
        fn irte32_round_trip(e in (any::<[bool; 4]>(), 0u8..8, any::<u8>(), any::<u8>()).prop_map(|(f, t, d, v)| AmdIrte32Entry {
            remap_en: f[0], sup_iopf: f[1], rq_eoi: f[2], dest_mode_logical: f[3], int_type: t, destination: d, vector: v,
        })) {
            prop_assert_eq!(AmdIrte32Entry::decode(e.encode().unwrap()), Ok(e));
        }

        #[test]
        fn irte32_decode_total(raw in any::<u32>()) {
            match AmdIrte32Entry::decode(raw) {
                Ok(e) => prop_assert_eq!(e.encode(), Ok(raw)),
                Err(AmdIrteError::GuestModeIn32BitIrte(v)) => prop_assert!(v == raw && raw & 0x80 != 0),
                Err(AmdIrteError::ReservedBits { mask }) => {
                    prop_assert!(raw & 0x80 == 0 && mask != 0);
                    prop_assert_eq!(mask, (raw & 0xFF00_0000) as u128);
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }

        #[test]
        fn irte128_round_trip(e in prop_oneof![
            remap_entry().prop_map(AmdIrte128::Remapped),
            guest_entry().prop_map(AmdIrte128::Guest),
        ]) {
            prop_assert_eq!(AmdIrte128::decode(e.encode().unwrap()), Ok(e));
        }

        #[test]
        fn irte128_decode_total(raw in any::<u128>(), clean in any::<bool>()) {
            let reserved = if raw & GUEST_MODE != 0 {
                AmdIrte128GuestBits::RESERVED_MASK
            } else {
                AmdIrte128RemapBits::RESERVED_MASK
            };
            let raw = if clean { raw & !reserved } else { raw };
            match AmdIrte128::decode(raw) {
                Ok(e) => prop_assert_eq!(e.encode(), Ok(raw)),
                Err(AmdIrteError::ReservedBits { mask }) => {
                    prop_assert!(mask != 0);
                    prop_assert_eq!(mask, raw & reserved);
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
