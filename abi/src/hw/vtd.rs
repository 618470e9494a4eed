//! Intel VT-d interrupt remapping: the remappable MSI, interrupt remapping table entries (IRTEs)
//! in remapped and posted formats, the source-id check, the IRTA register and the fault reasons.
//!
//! Layouts follow the project's `hardware-formats.md` (gathered from Linux `include/linux/dmar.h`,
//! `drivers/iommu/intel/irq_remapping.c` and QEMU `hw/i386/intel_iommu.c`).
//!
//! # Check order
//!
//! An emulated VT-d (QEMU) checks an incoming remappable write in this order, with these fault
//! reasons ([`VtdFaultReason`]):
//!
//! 1. high address ≠ 0 or address 31:20 ≠ `0xFEE` → 0x20 ([`RemappableMsi::decode`]);
//! 2. format bit 4 = 0 → compatibility format: passed through, or blocked with 0x25 by an IOMMU
//!    whose CFI is clear ([`VtdMsiError::CompatibilityFormat`]);
//! 3. index ([`RemappableMsi::irte_index`]) ≥ table size ([`Irta::entries`]) → 0x21;
//! 4. IRTE unreadable → 0x23;
//! 5. P = 0 → 0x22 ([`IrteRaw::present`], checked on the raw entry *before* decoding);
//! 6. reserved bits set → 0x24 ([`IrteError::ReservedBits`] from [`Irte::decode`]);
//! 7. SID check fails or SVT = 3 → 0x26 ([`sid_matches`]);
//! 8. SHV = 1 with data 31:16 ≠ 0 → 0x20.
//!
//! [`RemappableMsi::decode`] reports step 8 eagerly (it has no table to consult); a host that
//! must reproduce the exact order can decode with [`RemappableMsi::decode_address`], which leaves
//! the data check to [`RemappableMsi::check_data`]. FPD = 1 suppresses fault *recording*, not the
//! blocking itself.

use core::fmt;

use bitfield_struct::bitfield;

use super::fields::FieldDesc;
use zerocopy::byteorder::little_endian::{U32, U64, U128};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::msi::MsiMessage;
use super::{ApicMode, MSI_ADDRESS_BASE, MSI_ADDRESS_BASE_MASK};

// ---------------------------------------------------------------------------------------------
// Remappable MSI
// ---------------------------------------------------------------------------------------------

/// Layout of a VT-d remappable-format MSI address (low 32 bits).
///
/// Build it from untrusted bits with [`RemappableAddress::from_u32`] and read it with the
/// getters; never call the `with_*`/`set_*` setters on untrusted values (they panic on overflow).
#[bitfield(u32, repr = U32, from = U32::new, into = U32::get)]
#[derive(PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RemappableAddress {
    /// Bits 1:0: don't care.
    #[bits(2)]
    pub dont_care: u8,
    /// Bit 2: handle bit 15.
    pub handle_15: bool,
    /// Bit 3: SHV (sub-handle valid).
    pub shv: bool,
    /// Bit 4: interrupt format (1 = remappable).
    pub remappable: bool,
    /// Bits 19:5: handle bits 14:0.
    #[bits(15)]
    pub handle_14_0: u16,
    /// Bits 31:20: must be `0xFEE`.
    #[bits(12)]
    pub base: u16,
}

impl RemappableAddress {
    /// Wraps raw address bits.
    pub const fn from_u32(bits: u32) -> Self {
        Self::from_bits(U32::new(bits))
    }

    /// The raw address bits.
    pub const fn to_u32(self) -> u32 {
        self.into_bits().get()
    }

    /// The 16-bit handle (bit 15 from address bit 2, bits 14:0 from address bits 19:5).
    pub const fn handle(self) -> u16 {
        ((self.handle_15() as u16) << 15) | self.handle_14_0()
    }
}

/// Mask of the MSI data bits that must be 0 when SHV = 1 (bits 31:16).
pub const SUBHANDLE_RESERVED_MASK: u32 = 0xFFFF_0000;

/// A decoded VT-d remappable-format MSI: a handle into the interrupt remapping table and an
/// optional sub-handle.
///
/// Linux always sets SHV = 1; for multi-vector MSI the sub-handle is the vector's index within
/// the block (the device ORs it into the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RemappableMsi {
    /// Interrupt handle (bit 15 in address bit 2, bits 14:0 in address bits 19:5).
    pub handle: u16,
    /// Sub-handle valid (address bit 3).
    pub shv: bool,
    /// Sub-handle (data bits 15:0), meaningful only when `shv`; [`RemappableMsi::encode`] writes
    /// data 0 when `shv` is false, and [`RemappableMsi::decode`] then yields 0.
    pub subhandle: u16,
}

impl RemappableMsi {
    /// Encodes the message. Address bits 1:0 (don't care) are written 0; the data is the
    /// sub-handle when `shv`, else 0.
    pub const fn encode(&self) -> MsiMessage {
        // Handle bits 14:0 fit 15 bits and bit 15 is one bit; the base is 0xFEE.
        let address = RemappableAddress::new()
            .with_dont_care(0)
            .with_handle_15(self.handle >> 15 != 0)
            .with_shv(self.shv)
            .with_remappable(true)
            .with_handle_14_0(self.handle & 0x7FFF)
            .with_base((MSI_ADDRESS_BASE >> 20) as u16);
        let data = if self.shv { self.subhandle as u32 } else { 0 };
        MsiMessage::new(address.to_u32(), 0, data)
    }

    /// Decodes a remappable-format message: checks high address 0, address window `0xFEE`,
    /// format bit 4 = 1 and, with SHV = 1, data bits 31:16 = 0. Address bits 1:0 are don't
    /// care; with SHV = 0 the data is ignored and the sub-handle is 0.
    pub fn decode(msg: MsiMessage) -> Result<Self, VtdMsiError> {
        let this = Self::decode_address(msg)?;
        Self::check_data(this.shv, msg.data)?;
        Ok(this)
    }

    /// Decodes the address part only, taking the sub-handle from data bits 15:0 when SHV = 1
    /// and leaving the check of data bits 31:16 to [`RemappableMsi::check_data`] (QEMU checks
    /// them last, after the IRTE lookup).
    pub fn decode_address(msg: MsiMessage) -> Result<Self, VtdMsiError> {
        if msg.address_hi != 0 {
            return Err(VtdMsiError::AddressHighNonZero(msg.address_hi));
        }
        if msg.address_lo & MSI_ADDRESS_BASE_MASK != MSI_ADDRESS_BASE {
            return Err(VtdMsiError::BadAddressBase(msg.address_lo));
        }
        let addr = RemappableAddress::from_u32(msg.address_lo);
        if !addr.remappable() {
            return Err(VtdMsiError::CompatibilityFormat(msg.address_lo));
        }
        let shv = addr.shv();
        Ok(Self {
            handle: addr.handle(),
            shv,
            subhandle: if shv { msg.data as u16 } else { 0 },
        })
    }

    /// Checks the data of a message whose SHV bit is `shv`: with SHV = 1 data bits 31:16 must
    /// be 0 (fault reason 0x20); with SHV = 0 the data is don't care.
    pub const fn check_data(shv: bool, data: u32) -> Result<(), VtdMsiError> {
        if shv && data & SUBHANDLE_RESERVED_MASK != 0 {
            Err(VtdMsiError::SubhandleReservedBits(data))
        } else {
            Ok(())
        }
    }

    /// The interrupt remapping table index: handle + sub-handle (16-bit wrapping) when SHV = 1,
    /// else the handle.
    pub const fn irte_index(&self) -> u16 {
        if self.shv {
            self.handle.wrapping_add(self.subhandle)
        } else {
            self.handle
        }
    }
}

/// Errors decoding a VT-d remappable MSI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VtdMsiError {
    /// The high address (carried) is not 0 (fault reason 0x20).
    AddressHighNonZero(u32),
    /// Address bits 31:20 of the low address (carried) are not `0xFEE` (fault reason 0x20).
    BadAddressBase(u32),
    /// Format bit 4 of the address (carried) is 0: a compatibility-format interrupt (fault
    /// reason 0x25 on an IOMMU that blocks them).
    CompatibilityFormat(u32),
    /// SHV = 1 and data bits 31:16 of the data (carried) are nonzero (fault reason 0x20).
    SubhandleReservedBits(u32),
}

impl VtdMsiError {
    /// The VT-d fault reason an IOMMU records for this error.
    pub const fn fault_reason(&self) -> VtdFaultReason {
        match self {
            Self::AddressHighNonZero(_)
            | Self::BadAddressBase(_)
            | Self::SubhandleReservedBits(_) => VtdFaultReason::MALFORMED_REQUEST,
            Self::CompatibilityFormat(_) => VtdFaultReason::COMPAT_BLOCKED,
        }
    }
}

impl fmt::Display for VtdMsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::AddressHighNonZero(hi) => {
                write!(f, "remappable MSI high address {hi:#010x} is not 0")
            }
            Self::BadAddressBase(lo) => write!(
                f,
                "remappable MSI address {lo:#010x} is outside the 0xFEE interrupt window"
            ),
            Self::CompatibilityFormat(lo) => write!(
                f,
                "MSI address {lo:#010x} has format bit 4 clear (compatibility, not remappable)"
            ),
            Self::SubhandleReservedBits(data) => write!(
                f,
                "remappable MSI data {data:#010x} has bits 31:16 set while SHV = 1"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IRTE
// ---------------------------------------------------------------------------------------------

/// A 128-bit interrupt remapping table entry as stored in memory: two little-endian 64-bit
/// words.
///
/// Linux writes a remapped entry as the low word then the high word (vector and destination share
/// the low word, so a retarget is one store) and a posted entry with one 128-bit
/// compare-and-exchange.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct IrteRaw {
    /// Bits 63:0.
    pub low: U64,
    /// Bits 127:64.
    pub high: U64,
}

impl IrteRaw {
    /// Size of an IRTE in bytes.
    pub const SIZE: usize = 16;

    /// From the 128-bit value.
    pub const fn from_u128(v: u128) -> Self {
        Self {
            low: U64::new(v as u64),
            high: U64::new((v >> 64) as u64),
        }
    }

    /// The 128-bit value.
    pub const fn to_u128(self) -> u128 {
        ((self.high.get() as u128) << 64) | self.low.get() as u128
    }

    /// From the 16 bytes in memory order.
    pub const fn from_le_bytes(bytes: [u8; 16]) -> Self {
        Self::from_u128(u128::from_le_bytes(bytes))
    }

    /// The 16 bytes in memory order.
    pub const fn to_le_bytes(self) -> [u8; 16] {
        self.to_u128().to_le_bytes()
    }

    /// Bit 0: present. Check it before [`Irte::decode`] to report fault 0x22 ahead of 0x24.
    pub const fn present(self) -> bool {
        self.low.get() & 1 != 0
    }

    /// Bit 1: fault processing disable. Meaningful also for a not-present entry.
    pub const fn fpd(self) -> bool {
        self.low.get() & 2 != 0
    }

    /// Bit 15: IM, `true` for the posted format.
    pub const fn is_posted(self) -> bool {
        self.low.get() & (1 << 15) != 0
    }
}

impl From<u128> for IrteRaw {
    fn from(v: u128) -> Self {
        Self::from_u128(v)
    }
}

impl From<[u8; 16]> for IrteRaw {
    fn from(bytes: [u8; 16]) -> Self {
        Self::from_le_bytes(bytes)
    }
}

impl From<IrteRaw> for u128 {
    fn from(v: IrteRaw) -> Self {
        v.to_u128()
    }
}

/// Layout of a remapped-format IRTE (IM = 0).
///
/// Build it from untrusted bits with [`RemappedIrteBits::from_u128`]; the getters never panic.
#[bitfield(u128, repr = U128, from = U128::new, into = U128::get)]
#[derive(PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RemappedIrteBits {
    /// Bit 0: P, present.
    pub present: bool,
    /// Bit 1: FPD, fault processing disable.
    pub fpd: bool,
    /// Bit 2: DM, destination mode (1 logical).
    pub dest_mode_logical: bool,
    /// Bit 3: RH, redirection hint.
    pub redirection_hint: bool,
    /// Bit 4: TM, trigger mode (1 level).
    pub trigger_level: bool,
    /// Bits 7:5: DLM, delivery mode.
    #[bits(3)]
    pub delivery_mode: u8,
    /// Bits 11:8: AVAIL, available to software.
    #[bits(4)]
    pub avail: u8,
    /// Bits 14:12: reserved.
    #[bits(3)]
    _reserved_14_12: u8,
    /// Bit 15: IM = 0.
    pub posted: bool,
    /// Bits 23:16: vector.
    pub vector: u8,
    /// Bits 31:24: reserved.
    _reserved_31_24: u8,
    /// Bits 63:32: DST (x2APIC: APIC ID; xAPIC: APIC ID in DST bits 15:8).
    pub dst: u32,
    /// Bits 79:64: SID, source id.
    pub sid: u16,
    /// Bits 81:80: SQ, source-id qualifier.
    #[bits(2)]
    pub sq: u8,
    /// Bits 83:82: SVT, source validation type.
    #[bits(2)]
    pub svt: u8,
    /// Bits 127:84: reserved.
    #[bits(44)]
    _reserved_127_84: u64,
}

impl RemappedIrteBits {
    /// Every named field (reserved bits excluded), lowest first: name, Linux kernel name,
    /// bit range (from the layout) and meaning.
    pub const FIELDS: &'static [FieldDesc] = &[
        FieldDesc::new(
            "present",
            Some("present"),
            Self::PRESENT_OFFSET,
            Self::PRESENT_BITS,
            "P: the entry is valid",
        ),
        FieldDesc::new(
            "fpd",
            Some("fpd"),
            Self::FPD_OFFSET,
            Self::FPD_BITS,
            "FPD: fault processing disable",
        ),
        FieldDesc::new(
            "dest_mode_logical",
            Some("dst_mode"),
            Self::DEST_MODE_LOGICAL_OFFSET,
            Self::DEST_MODE_LOGICAL_BITS,
            "DM: destination mode, 1 logical",
        ),
        FieldDesc::new(
            "redirection_hint",
            Some("redir_hint"),
            Self::REDIRECTION_HINT_OFFSET,
            Self::REDIRECTION_HINT_BITS,
            "RH: redirection hint",
        ),
        FieldDesc::new(
            "trigger_level",
            Some("trigger_mode"),
            Self::TRIGGER_LEVEL_OFFSET,
            Self::TRIGGER_LEVEL_BITS,
            "TM: trigger mode, 1 level",
        ),
        FieldDesc::new(
            "delivery_mode",
            Some("dlvry_mode"),
            Self::DELIVERY_MODE_OFFSET,
            Self::DELIVERY_MODE_BITS,
            "DLM: delivery mode",
        ),
        FieldDesc::new(
            "avail",
            Some("avail"),
            Self::AVAIL_OFFSET,
            Self::AVAIL_BITS,
            "AVAIL: free for software",
        ),
        FieldDesc::new(
            "im",
            Some("pst"),
            Self::POSTED_OFFSET,
            Self::POSTED_BITS,
            "IM: 0 remapped format",
        ),
        FieldDesc::new(
            "vector",
            Some("vector"),
            Self::VECTOR_OFFSET,
            Self::VECTOR_BITS,
            "vector on the destination CPU",
        ),
        FieldDesc::new(
            "dst",
            Some("dest_id"),
            Self::DST_OFFSET,
            Self::DST_BITS,
            "DST: x2APIC ID, or xAPIC ID in bits 15:8",
        ),
        FieldDesc::new(
            "sid",
            Some("sid"),
            Self::SID_OFFSET,
            Self::SID_BITS,
            "SID: source id (requester id)",
        ),
        FieldDesc::new(
            "sq",
            Some("sq"),
            Self::SQ_OFFSET,
            Self::SQ_BITS,
            "SQ: source-id qualifier",
        ),
        FieldDesc::new(
            "svt",
            Some("svt"),
            Self::SVT_OFFSET,
            Self::SVT_BITS,
            "SVT: source validation type",
        ),
    ];

    /// Reserved bits of a remapped IRTE in any mode: 14:12, 31:24, 127:84.
    pub const RESERVED_MASK: u128 = (0x7 << 12) | (0xFF << 24) | (u128::MAX << 84);

    /// Additional reserved bits in xAPIC mode: DST bits 7:0 and 31:16 (IRTE bits 39:32, 63:48).
    pub const XAPIC_DST_RESERVED_MASK: u128 = (0xFF << 32) | (0xFFFF << 48);

    /// The reserved bits for the given APIC mode.
    pub const fn reserved_mask(mode: ApicMode) -> u128 {
        match mode {
            ApicMode::XApic => Self::RESERVED_MASK | Self::XAPIC_DST_RESERVED_MASK,
            ApicMode::X2Apic => Self::RESERVED_MASK,
        }
    }

    /// Wraps raw entry bits.
    pub const fn from_u128(bits: u128) -> Self {
        Self::from_bits(U128::new(bits))
    }

    /// The raw entry bits.
    pub const fn to_u128(self) -> u128 {
        self.into_bits().get()
    }
}

/// Layout of a posted-format IRTE (IM = 1).
///
/// Build it from untrusted bits with [`PostedIrteBits::from_u128`]; the getters never panic.
#[bitfield(u128, repr = U128, from = U128::new, into = U128::get)]
#[derive(PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct PostedIrteBits {
    /// Bit 0: P, present.
    pub present: bool,
    /// Bit 1: FPD, fault processing disable.
    pub fpd: bool,
    /// Bits 7:2: reserved.
    #[bits(6)]
    _reserved_7_2: u8,
    /// Bits 11:8: AVAIL, available to software.
    #[bits(4)]
    pub avail: u8,
    /// Bits 13:12: reserved.
    #[bits(2)]
    _reserved_13_12: u8,
    /// Bit 14: URG, urgent.
    pub urgent: bool,
    /// Bit 15: IM = 1.
    pub posted: bool,
    /// Bits 23:16: vector (the guest vector set in the PIR).
    pub vector: u8,
    /// Bits 37:24: reserved.
    #[bits(14)]
    _reserved_37_24: u16,
    /// Bits 63:38: posted descriptor address bits 31:6.
    #[bits(26)]
    pub pda_31_6: u32,
    /// Bits 79:64: SID, source id.
    pub sid: u16,
    /// Bits 81:80: SQ, source-id qualifier.
    #[bits(2)]
    pub sq: u8,
    /// Bits 83:82: SVT, source validation type.
    #[bits(2)]
    pub svt: u8,
    /// Bits 95:84: reserved.
    #[bits(12)]
    _reserved_95_84: u16,
    /// Bits 127:96: posted descriptor address bits 63:32.
    pub pda_63_32: u32,
}

impl PostedIrteBits {
    /// Every named field (reserved bits excluded), lowest first: name, Linux kernel name,
    /// bit range (from the layout) and meaning.
    pub const FIELDS: &'static [FieldDesc] = &[
        FieldDesc::new(
            "present",
            Some("p_present"),
            Self::PRESENT_OFFSET,
            Self::PRESENT_BITS,
            "P: the entry is valid",
        ),
        FieldDesc::new(
            "fpd",
            Some("p_fpd"),
            Self::FPD_OFFSET,
            Self::FPD_BITS,
            "FPD: fault processing disable",
        ),
        FieldDesc::new(
            "avail",
            Some("p_avail"),
            Self::AVAIL_OFFSET,
            Self::AVAIL_BITS,
            "AVAIL: free for software",
        ),
        FieldDesc::new(
            "urgent",
            Some("p_urgent"),
            Self::URGENT_OFFSET,
            Self::URGENT_BITS,
            "URG: urgent",
        ),
        FieldDesc::new(
            "im",
            Some("p_pst"),
            Self::POSTED_OFFSET,
            Self::POSTED_BITS,
            "IM: 1 posted format",
        ),
        FieldDesc::new(
            "vector",
            Some("p_vector"),
            Self::VECTOR_OFFSET,
            Self::VECTOR_BITS,
            "the guest vector set in the PIR",
        ),
        FieldDesc::new(
            "pda_31_6",
            Some("pda_l"),
            Self::PDA_31_6_OFFSET,
            Self::PDA_31_6_BITS,
            "posted descriptor address bits 31:6",
        ),
        FieldDesc::new(
            "sid",
            Some("p_sid"),
            Self::SID_OFFSET,
            Self::SID_BITS,
            "SID: source id (requester id)",
        ),
        FieldDesc::new(
            "sq",
            Some("p_sq"),
            Self::SQ_OFFSET,
            Self::SQ_BITS,
            "SQ: source-id qualifier",
        ),
        FieldDesc::new(
            "svt",
            Some("p_svt"),
            Self::SVT_OFFSET,
            Self::SVT_BITS,
            "SVT: source validation type",
        ),
        FieldDesc::new(
            "pda_63_32",
            Some("pda_h"),
            Self::PDA_63_32_OFFSET,
            Self::PDA_63_32_BITS,
            "posted descriptor address bits 63:32",
        ),
    ];

    /// Reserved bits of a posted IRTE: 7:2, 13:12, 37:24, 95:84.
    pub const RESERVED_MASK: u128 = (0x3F << 2) | (0x3 << 12) | (0x3FFF << 24) | (0xFFF << 84);

    /// Wraps raw entry bits.
    pub const fn from_u128(bits: u128) -> Self {
        Self::from_bits(U128::new(bits))
    }

    /// The raw entry bits.
    pub const fn to_u128(self) -> u128 {
        self.into_bits().get()
    }
}

/// Source validation type (IRTE bits 83:82).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum Svt {
    /// 0: no requester-id verification.
    NoCheck = 0,
    /// 1: verify the requester id against SID under the SQ mask.
    VerifySid = 1,
    /// 2: verify the requester's bus number lies in the range in SID (start bus in SID bits
    /// 15:8, end bus in bits 7:0 — the Linux/Xen reading; see [`sid_matches`]).
    VerifyBus = 2,
    /// 3: reserved. Representable so that such an entry decodes; the IOMMU faults (0x26) when it
    /// is used, and [`sid_matches`] returns `false`.
    Reserved = 3,
}

impl Svt {
    /// Decodes the low two bits of `bits` (the field is two bits wide, every value is defined).
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => Self::NoCheck,
            1 => Self::VerifySid,
            2 => Self::VerifyBus,
            _ => Self::Reserved,
        }
    }

    /// The 2-bit field value.
    pub const fn bits(self) -> u8 {
        self as u8
    }
}

/// The SID comparison mask for a source-id qualifier: SQ 0 compares all 16 bits, 1 ignores bit
/// 2, 2 ignores bits 2:1, 3 ignores bits 2:0 (function-number bits). `None` for SQ > 3.
pub const fn sq_mask(sq: u8) -> Option<u16> {
    match sq {
        0 => Some(0xFFFF),
        1 => Some(!0b100),
        2 => Some(!0b110),
        3 => Some(!0b111),
        _ => None,
    }
}

/// The source-id check of an IRTE against the requester id of an interrupt request.
///
/// * SVT 0: no check, `true`.
/// * SVT 1: `sid` and `requester_id` compared under the SQ mask ([`sq_mask`]); SQ > 3 → `false`.
/// * SVT 2: the requester's bus (`requester_id` bits 15:8) must lie in the inclusive range
///   *start bus = `sid` bits 15:8, end bus = `sid` bits 7:0*; `sq` is ignored.
/// * SVT 3: reserved, `false` (fault reason 0x26).
///
/// **Interoperability trap (SVT 2):** Linux (`set_msi_sid`, which programs
/// `PCI_DEVID(alias bus, device bus)`) and Xen put the *start* bus in the high byte, which is what
/// this function implements. QEMU's emulated VT-d reads the high byte as the *maximum* bus and
/// the low byte as the minimum, the opposite way round; the two agree only when start = end. A
/// host relying on QEMU's behaviour for a bridged device sees SID check faults (0x26) for a range
/// Linux considers valid.
pub const fn sid_matches(svt: Svt, sq: u8, sid: u16, requester_id: u16) -> bool {
    match svt {
        Svt::NoCheck => true,
        Svt::VerifySid => match sq_mask(sq) {
            Some(mask) => sid & mask == requester_id & mask,
            None => false,
        },
        Svt::VerifyBus => {
            let start = (sid >> 8) as u8;
            let end = sid as u8;
            let bus = (requester_id >> 8) as u8;
            start <= bus && bus <= end
        }
        Svt::Reserved => false,
    }
}

/// A decoded remapped-format IRTE (IM = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RemappedIrte {
    /// P: present (bit 0).
    pub present: bool,
    /// FPD: fault processing disable (bit 1).
    pub fpd: bool,
    /// DM: destination mode, `true` = logical (bit 2).
    pub dest_mode_logical: bool,
    /// RH: redirection hint (bit 3); Linux sets it.
    pub redirection_hint: bool,
    /// TM: trigger mode, `true` = level (bit 4); Linux uses edge.
    pub trigger_level: bool,
    /// DLM: delivery mode, 3 bits (7:5).
    pub delivery_mode: u8,
    /// AVAIL: available to software, 4 bits (11:8).
    pub avail: u8,
    /// Vector (23:16).
    pub vector: u8,
    /// Destination APIC ID: 32 bits in x2APIC mode (IRTE 63:32); at most 255 in xAPIC mode
    /// (IRTE 47:40).
    pub dest: u32,
    /// SID: source id, the requester id to check (79:64).
    pub sid: u16,
    /// SQ: source-id qualifier, 2 bits (81:80).
    pub sq: u8,
    /// SVT: source validation type (83:82).
    pub svt: Svt,
}

/// A decoded posted-format IRTE (IM = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PostedIrte {
    /// P: present (bit 0).
    pub present: bool,
    /// FPD: fault processing disable (bit 1).
    pub fpd: bool,
    /// AVAIL: available to software, 4 bits (11:8).
    pub avail: u8,
    /// URG: urgent (bit 14).
    pub urgent: bool,
    /// Vector: the guest vector set in the PIR (23:16).
    pub vector: u8,
    /// Posted descriptor address, 64-byte aligned (bits 31:6 in IRTE 63:38, bits 63:32 in IRTE
    /// 127:96).
    pub pda: u64,
    /// SID: source id (79:64).
    pub sid: u16,
    /// SQ: source-id qualifier, 2 bits (81:80).
    pub sq: u8,
    /// SVT: source validation type (83:82).
    pub svt: Svt,
}

/// A decoded VT-d IRTE, keyed on the IM bit (15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Irte {
    /// IM = 0: remapped interrupt.
    Remapped(RemappedIrte),
    /// IM = 1: posted interrupt.
    Posted(PostedIrte),
}

/// An IRTE field whose value did not fit when encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrteField {
    /// DLM, 3 bits.
    DeliveryMode,
    /// AVAIL, 4 bits.
    Avail,
    /// SQ, 2 bits.
    SourceQualifier,
}

impl IrteField {
    const fn name(self) -> &'static str {
        match self {
            Self::DeliveryMode => "delivery mode (3 bits)",
            Self::Avail => "AVAIL (4 bits)",
            Self::SourceQualifier => "SQ (2 bits)",
        }
    }
}

/// Errors decoding or encoding a VT-d IRTE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrteError {
    /// Decode: reserved bits are set; `mask` holds exactly the offending bits (fault reason
    /// 0x24). In xAPIC mode DST bits 7:0 and 31:16 (IRTE 39:32, 63:48) count as reserved.
    ReservedBits {
        /// The set reserved bits.
        mask: u128,
    },
    /// Encode: a field value does not fit its width.
    FieldOutOfRange {
        /// The field.
        field: IrteField,
        /// The value given.
        value: u8,
    },
    /// Encode: the destination APIC ID (carried) exceeds 255 in xAPIC mode.
    XApicDestinationTooLarge(u32),
    /// Encode: the posted descriptor address (carried) is not 64-byte aligned.
    MisalignedPda(u64),
}

impl IrteError {
    /// The VT-d fault reason an IOMMU records for a decode error; `None` for encode errors.
    pub const fn fault_reason(&self) -> Option<VtdFaultReason> {
        match self {
            Self::ReservedBits { .. } => Some(VtdFaultReason::IRTE_RESERVED),
            _ => None,
        }
    }
}

impl fmt::Display for IrteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ReservedBits { mask } => write!(
                f,
                "IRTE reserved bits {mask:#034x} are set (lowest: bit {})",
                mask.trailing_zeros()
            ),
            Self::FieldOutOfRange { field, value } => {
                write!(f, "IRTE {} value {value} out of range", field.name())
            }
            Self::XApicDestinationTooLarge(dest) => {
                write!(
                    f,
                    "IRTE destination APIC ID {dest} exceeds 255 in xAPIC mode"
                )
            }
            Self::MisalignedPda(pda) => write!(
                f,
                "posted descriptor address {pda:#x} is not 64-byte aligned"
            ),
        }
    }
}

fn check_width(field: IrteField, value: u8, bits: u32) -> Result<u8, IrteError> {
    if (value as u32) >> bits != 0 {
        Err(IrteError::FieldOutOfRange { field, value })
    } else {
        Ok(value)
    }
}

impl RemappedIrte {
    /// Decodes raw bits as a remapped entry (the IM bit is not looked at; use [`Irte::decode`]
    /// to dispatch on it). Not-present entries decode too.
    pub fn decode(raw: u128, mode: ApicMode) -> Result<Self, IrteError> {
        let mask = raw & RemappedIrteBits::reserved_mask(mode);
        if mask != 0 {
            return Err(IrteError::ReservedBits { mask });
        }
        let b = RemappedIrteBits::from_u128(raw);
        let dest = match mode {
            ApicMode::X2Apic => b.dst(),
            ApicMode::XApic => (b.dst() >> 8) & 0xFF,
        };
        Ok(Self {
            present: b.present(),
            fpd: b.fpd(),
            dest_mode_logical: b.dest_mode_logical(),
            redirection_hint: b.redirection_hint(),
            trigger_level: b.trigger_level(),
            delivery_mode: b.delivery_mode(),
            avail: b.avail(),
            vector: b.vector(),
            dest,
            sid: b.sid(),
            sq: b.sq(),
            svt: Svt::from_bits(b.svt()),
        })
    }

    /// Encodes the entry (IM = 0), checking field widths and, in xAPIC mode, `dest` ≤ 255.
    pub fn encode(&self, mode: ApicMode) -> Result<u128, IrteError> {
        let dlm = check_width(IrteField::DeliveryMode, self.delivery_mode, 3)?;
        let avail = check_width(IrteField::Avail, self.avail, 4)?;
        let sq = check_width(IrteField::SourceQualifier, self.sq, 2)?;
        let dst = match mode {
            ApicMode::X2Apic => self.dest,
            ApicMode::XApic if self.dest <= 0xFF => self.dest << 8,
            ApicMode::XApic => return Err(IrteError::XApicDestinationTooLarge(self.dest)),
        };
        // Every value fits its field: the widths were checked above and the rest are exact.
        Ok(RemappedIrteBits::new()
            .with_present(self.present)
            .with_fpd(self.fpd)
            .with_dest_mode_logical(self.dest_mode_logical)
            .with_redirection_hint(self.redirection_hint)
            .with_trigger_level(self.trigger_level)
            .with_delivery_mode(dlm)
            .with_avail(avail)
            .with_posted(false)
            .with_vector(self.vector)
            .with_dst(dst)
            .with_sid(self.sid)
            .with_sq(sq)
            .with_svt(self.svt.bits())
            .to_u128())
    }

    /// The source-id check of this entry for `requester_id` ([`sid_matches`]).
    pub const fn sid_matches(&self, requester_id: u16) -> bool {
        sid_matches(self.svt, self.sq, self.sid, requester_id)
    }
}

impl PostedIrte {
    /// Decodes raw bits as a posted entry (the IM bit is not looked at; use [`Irte::decode`]).
    pub fn decode(raw: u128) -> Result<Self, IrteError> {
        let mask = raw & PostedIrteBits::RESERVED_MASK;
        if mask != 0 {
            return Err(IrteError::ReservedBits { mask });
        }
        let b = PostedIrteBits::from_u128(raw);
        Ok(Self {
            present: b.present(),
            fpd: b.fpd(),
            avail: b.avail(),
            urgent: b.urgent(),
            vector: b.vector(),
            pda: ((b.pda_63_32() as u64) << 32) | ((b.pda_31_6() as u64) << 6),
            sid: b.sid(),
            sq: b.sq(),
            svt: Svt::from_bits(b.svt()),
        })
    }

    /// Encodes the entry (IM = 1), checking field widths and the PDA's 64-byte alignment.
    pub fn encode(&self) -> Result<u128, IrteError> {
        let avail = check_width(IrteField::Avail, self.avail, 4)?;
        let sq = check_width(IrteField::SourceQualifier, self.sq, 2)?;
        if self.pda & 0x3F != 0 {
            return Err(IrteError::MisalignedPda(self.pda));
        }
        // Every value fits its field: the widths were checked above, the PDA halves are cut to
        // 26 and 32 bits, the rest are exact.
        Ok(PostedIrteBits::new()
            .with_present(self.present)
            .with_fpd(self.fpd)
            .with_avail(avail)
            .with_urgent(self.urgent)
            .with_posted(true)
            .with_vector(self.vector)
            .with_pda_31_6((self.pda as u32) >> 6)
            .with_sid(self.sid)
            .with_sq(sq)
            .with_svt(self.svt.bits())
            .with_pda_63_32((self.pda >> 32) as u32)
            .to_u128())
    }

    /// The source-id check of this entry for `requester_id` ([`sid_matches`]).
    pub const fn sid_matches(&self, requester_id: u16) -> bool {
        sid_matches(self.svt, self.sq, self.sid, requester_id)
    }
}

impl Irte {
    /// Decodes an IRTE, dispatching on IM (bit 15). Total: any input gives an entry or
    /// [`IrteError::ReservedBits`]. Not-present entries decode (their FPD matters); a host that
    /// wants VT-d's fault order checks [`IrteRaw::present`] first.
    pub fn decode(raw: impl Into<IrteRaw>, mode: ApicMode) -> Result<Self, IrteError> {
        let raw: IrteRaw = raw.into();
        let bits = raw.to_u128();
        if raw.is_posted() {
            PostedIrte::decode(bits).map(Self::Posted)
        } else {
            RemappedIrte::decode(bits, mode).map(Self::Remapped)
        }
    }

    /// Encodes the entry; `mode` matters only for the remapped format's destination.
    pub fn encode(&self, mode: ApicMode) -> Result<u128, IrteError> {
        match self {
            Self::Remapped(r) => r.encode(mode),
            Self::Posted(p) => p.encode(),
        }
    }

    /// P, present.
    pub const fn present(&self) -> bool {
        match self {
            Self::Remapped(r) => r.present,
            Self::Posted(p) => p.present,
        }
    }

    /// FPD, fault processing disable.
    pub const fn fpd(&self) -> bool {
        match self {
            Self::Remapped(r) => r.fpd,
            Self::Posted(p) => p.fpd,
        }
    }

    /// The vector (host vector when remapped, guest vector when posted).
    pub const fn vector(&self) -> u8 {
        match self {
            Self::Remapped(r) => r.vector,
            Self::Posted(p) => p.vector,
        }
    }

    /// The source-id check for `requester_id` ([`sid_matches`]).
    pub const fn sid_matches(&self, requester_id: u16) -> bool {
        match self {
            Self::Remapped(r) => r.sid_matches(requester_id),
            Self::Posted(p) => p.sid_matches(requester_id),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IRTA register
// ---------------------------------------------------------------------------------------------

/// Layout of the IRTA register (interrupt remapping table address).
#[bitfield(u64, repr = U64, from = U64::new, into = U64::get)]
#[derive(PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct IrtaBits {
    /// Bits 3:0: S, the table has 2^(S+1) entries.
    #[bits(4)]
    pub size: u8,
    /// Bits 10:4: reserved.
    #[bits(7)]
    _reserved_10_4: u8,
    /// Bit 11: EIME, extended interrupt mode enable (x2APIC destination format).
    pub eime: bool,
    /// Bits 63:12: table address bits 63:12.
    #[bits(52)]
    pub base_page: u64,
}

impl IrtaBits {
    /// Reserved bits (10:4).
    pub const RESERVED_MASK: u64 = 0x7F << 4;

    /// Wraps raw register bits.
    pub const fn from_u64(bits: u64) -> Self {
        Self::from_bits(U64::new(bits))
    }

    /// The raw register bits.
    pub const fn to_u64(self) -> u64 {
        self.into_bits().get()
    }
}

/// The decoded IRTA register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Irta {
    /// S (bits 3:0): the table has 2^(S+1) entries; at most 15 (65536 entries).
    pub size_s: u8,
    /// EIME (bit 11): x2APIC destination format in IRTEs.
    pub eime: bool,
    /// Table physical address, 4 KiB aligned (register bits 63:12).
    pub base: u64,
}

impl Irta {
    /// The largest S value (65536 entries).
    pub const MAX_SIZE_S: u8 = 15;

    /// Number of table entries, 2^(S+1). Only the low four bits of `size_s` are used, as in the
    /// register, so the result is at most 65536.
    pub const fn entries(&self) -> u32 {
        1 << ((self.size_s & 0xF) + 1)
    }

    /// The APIC mode IRTE destinations use ([`ApicMode::from_eime`]).
    pub const fn apic_mode(&self) -> ApicMode {
        ApicMode::from_eime(self.eime)
    }

    /// Decodes the register; reserved bits 10:4 must be 0.
    pub const fn decode(raw: u64) -> Result<Self, IrtaError> {
        let reserved = raw & IrtaBits::RESERVED_MASK;
        if reserved != 0 {
            return Err(IrtaError::ReservedBits(reserved));
        }
        let b = IrtaBits::from_u64(raw);
        Ok(Self {
            size_s: b.size(),
            eime: b.eime(),
            base: b.base_page() << 12,
        })
    }

    /// Encodes the register, checking S ≤ 15 and a 4 KiB aligned base.
    pub const fn encode(&self) -> Result<u64, IrtaError> {
        if self.size_s > Self::MAX_SIZE_S {
            return Err(IrtaError::SizeOutOfRange(self.size_s));
        }
        if self.base & 0xFFF != 0 {
            return Err(IrtaError::MisalignedBase(self.base));
        }
        // size_s ≤ 15 and base is page aligned (checked above), so base >> 12 fits 52 bits.
        Ok(IrtaBits::new()
            .with_size(self.size_s)
            .with_eime(self.eime)
            .with_base_page(self.base >> 12)
            .to_u64())
    }
}

/// Errors decoding or encoding the IRTA register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrtaError {
    /// Decode: reserved bits 10:4 are set (the set bits are carried).
    ReservedBits(u64),
    /// Encode: S (carried) exceeds 15.
    SizeOutOfRange(u8),
    /// Encode: the table address (carried) is not 4 KiB aligned.
    MisalignedBase(u64),
}

impl fmt::Display for IrtaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ReservedBits(bits) => write!(f, "IRTA reserved bits {bits:#x} are set"),
            Self::SizeOutOfRange(s) => write!(f, "IRTA size S = {s} exceeds 15"),
            Self::MisalignedBase(base) => {
                write!(f, "IRTA table address {base:#x} is not 4 KiB aligned")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fault reasons
// ---------------------------------------------------------------------------------------------

/// A VT-d fault reason code, as recorded in a fault record. Open: any `u8` is representable;
/// the interrupt-remapping reasons 0x20..=0x26 have named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(transparent)]
pub struct VtdFaultReason(pub u8);

impl VtdFaultReason {
    /// 0x20: reserved fields set in the interrupt request — high address ≠ 0, address 31:20 ≠
    /// `0xFEE`, or SHV = 1 with data 31:16 ≠ 0 (MSI address/data malformed).
    pub const MALFORMED_REQUEST: Self = Self(0x20);
    /// 0x21: the interrupt index exceeds the interrupt remapping table size.
    pub const INDEX_OUT_OF_RANGE: Self = Self(0x21);
    /// 0x22: the IRTE's present bit is clear.
    pub const NOT_PRESENT: Self = Self(0x22);
    /// 0x23: the interrupt remapping table (IRTA) could not be read.
    pub const TABLE_UNREADABLE: Self = Self(0x23);
    /// 0x24: reserved bits set in the IRTE.
    pub const IRTE_RESERVED: Self = Self(0x24);
    /// 0x25: a compatibility-format interrupt was blocked (CFI clear).
    pub const COMPAT_BLOCKED: Self = Self(0x25);
    /// 0x26: the source-id check failed (or SVT = 3).
    pub const SID_CHECK_FAILED: Self = Self(0x26);

    /// A one-line description for the interrupt-remapping reasons, `None` for other codes.
    pub const fn description(self) -> Option<&'static str> {
        Some(match self.0 {
            0x20 => "malformed interrupt request (MSI address/data)",
            0x21 => "interrupt index beyond the remapping table",
            0x22 => "IRTE not present",
            0x23 => "interrupt remapping table unreadable",
            0x24 => "reserved bits set in IRTE",
            0x25 => "compatibility-format interrupt blocked",
            0x26 => "source-id check failed",
            _ => return None,
        })
    }
}

impl fmt::Display for VtdFaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(d) => write!(f, "VT-d fault {:#04x}: {d}", self.0),
            None => write!(f, "VT-d fault {:#04x}", self.0),
        }
    }
}

/// Global command register (GCMD) bit 25: interrupt remapping enable (status GSTS.IRES).
pub const GCMD_IRE: u32 = 1 << 25;
/// Global command register bit 24: set interrupt remapping table pointer (latches IRTA).
pub const GCMD_SIRTP: u32 = 1 << 24;
/// Global command register bit 23: compatibility format interrupts pass (status GSTS.CFIS);
/// clear means compatibility-format interrupts are blocked once remapping is on.
pub const GCMD_CFI: u32 = 1 << 23;

#[cfg(test)]
mod tests {

    #[test]
    fn gcmd_bits_ire_25_sirtp_24_cfi_23() {
        assert_eq!(GCMD_IRE, 0x0200_0000);
        assert_eq!(GCMD_SIRTP, 0x0100_0000);
        assert_eq!(GCMD_CFI, 0x0080_0000);
    }

    use super::*;
    use proptest::prelude::*;

    const X2: ApicMode = ApicMode::X2Apic;
    const XA: ApicMode = ApicMode::XApic;

    fn remapped() -> RemappedIrte {
        RemappedIrte {
            present: false,
            fpd: false,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector: 0,
            dest: 0,
            sid: 0,
            sq: 0,
            svt: Svt::NoCheck,
        }
    }

    fn posted() -> PostedIrte {
        PostedIrte {
            present: false,
            fpd: false,
            avail: 0,
            urgent: false,
            vector: 0,
            pda: 0,
            sid: 0,
            sq: 0,
            svt: Svt::NoCheck,
        }
    }

    const IM: u128 = 1 << 15;

    // --- remappable MSI ---

    #[test]
    fn remappable_address_field_offsets_match_spec_table() {
        assert_eq!(
            (
                RemappableAddress::DONT_CARE_OFFSET,
                RemappableAddress::DONT_CARE_BITS
            ),
            (0, 2)
        );
        assert_eq!(RemappableAddress::HANDLE_15_OFFSET, 2);
        assert_eq!(RemappableAddress::SHV_OFFSET, 3);
        assert_eq!(RemappableAddress::REMAPPABLE_OFFSET, 4);
        assert_eq!(
            (
                RemappableAddress::HANDLE_14_0_OFFSET,
                RemappableAddress::HANDLE_14_0_BITS
            ),
            (5, 15)
        );
        assert_eq!(
            (RemappableAddress::BASE_OFFSET, RemappableAddress::BASE_BITS),
            (20, 12)
        );
    }

    #[test]
    fn remappable_shv_at_address_bit_3() {
        let m = RemappableMsi {
            handle: 0,
            shv: true,
            subhandle: 0,
        };
        assert_eq!(m.encode().address_lo, 0xFEE0_0000 | 0x10 | 0x08);
    }

    #[test]
    fn remappable_handle_bit_15_at_address_bit_2() {
        let m = RemappableMsi {
            handle: 0x8000,
            shv: false,
            subhandle: 0,
        };
        assert_eq!(m.encode().address_lo, 0xFEE0_0000 | 0x10 | 0x04);
    }

    #[test]
    fn remappable_handle_14_0_at_address_bits_19_5() {
        let m = RemappableMsi {
            handle: 0x7FFF,
            shv: false,
            subhandle: 0,
        };
        assert_eq!(m.encode().address_lo, 0xFEE0_0000 | 0x10 | (0x7FFF << 5));
        assert_eq!(m.encode().address_lo, 0xFEEF_FFF0);
    }

    #[test]
    fn remappable_format_bit_4_always_set() {
        let m = RemappableMsi {
            handle: 0,
            shv: false,
            subhandle: 0,
        };
        assert_eq!(m.encode(), MsiMessage::new(0xFEE0_0010, 0, 0));
    }

    #[test]
    fn golden_linux_handle_0x1234_shv_subhandle_0() {
        // Linux fill_msi_msg: base | index 14:0 << 5 | index 15 << 2 | format | SHV; data = 0.
        // 0x1234 << 5 = 0x24680; 0xFEE00000 | 0x24680 | 0x10 | 0x08 = 0xFEE24698.
        let m = RemappableMsi {
            handle: 0x1234,
            shv: true,
            subhandle: 0,
        };
        let msg = m.encode();
        assert_eq!(msg, MsiMessage::new(0xFEE2_4698, 0, 0));
        assert_eq!(RemappableMsi::decode(msg), Ok(m));
        assert_eq!(m.irte_index(), 0x1234);
        assert_eq!(
            crate::hw::classify(msg),
            Ok(crate::hw::MessageKind::Remappable)
        );
    }

    #[test]
    fn golden_handle_0xffff_shv_subhandle_3() {
        // handle 0xFFFF: bit 15 -> address bit 2, 0x7FFF << 5 = 0xFFFE0.
        let m = RemappableMsi {
            handle: 0xFFFF,
            shv: true,
            subhandle: 3,
        };
        let msg = m.encode();
        assert_eq!(msg, MsiMessage::new(0xFEEF_FFFC, 0, 3));
        // 16-bit wrapping index.
        assert_eq!(m.irte_index(), 2);
    }

    #[test]
    fn remappable_decode_errors() {
        let ok = MsiMessage::new(0xFEE2_4698, 0, 0);
        assert_eq!(
            RemappableMsi::decode(MsiMessage {
                address_hi: 2,
                ..ok
            }),
            Err(VtdMsiError::AddressHighNonZero(2))
        );
        assert_eq!(
            RemappableMsi::decode(MsiMessage {
                address_lo: 0xFED2_4698,
                ..ok
            }),
            Err(VtdMsiError::BadAddressBase(0xFED2_4698))
        );
        assert_eq!(
            RemappableMsi::decode(MsiMessage {
                address_lo: 0xFEE2_4688,
                ..ok
            }),
            Err(VtdMsiError::CompatibilityFormat(0xFEE2_4688))
        );
        assert_eq!(
            RemappableMsi::decode(MsiMessage {
                data: 0x1_0001,
                ..ok
            }),
            Err(VtdMsiError::SubhandleReservedBits(0x1_0001))
        );
        assert_eq!(
            RemappableMsi::decode_address(MsiMessage {
                data: 0x1_0001,
                ..ok
            }),
            Ok(RemappableMsi {
                handle: 0x1234,
                shv: true,
                subhandle: 1
            })
        );
        assert_eq!(
            VtdMsiError::SubhandleReservedBits(0).fault_reason(),
            VtdFaultReason::MALFORMED_REQUEST
        );
        assert_eq!(
            VtdMsiError::CompatibilityFormat(0).fault_reason(),
            VtdFaultReason::COMPAT_BLOCKED
        );
    }

    #[test]
    fn remappable_address_bits_1_0_and_shv0_data_are_dont_care() {
        // SHV = 0: data ignored, subhandle 0; address bits 1:0 accepted.
        let msg = MsiMessage::new(0xFEE2_4693, 0, 0xDEAD_BEEF);
        assert_eq!(
            RemappableMsi::decode(msg),
            Ok(RemappableMsi {
                handle: 0x1234,
                shv: false,
                subhandle: 0
            })
        );
        // SHV = 1: data 15:0 is the sub-handle.
        let msg = MsiMessage::new(0xFEE2_469B, 0, 0xBEEF);
        assert_eq!(
            RemappableMsi::decode(msg),
            Ok(RemappableMsi {
                handle: 0x1234,
                shv: true,
                subhandle: 0xBEEF
            })
        );
    }

    // --- IRTE layouts ---

    #[test]
    fn irte_remapped_field_offsets_match_spec_table() {
        use RemappedIrteBits as B;
        assert_eq!(B::PRESENT_OFFSET, 0);
        assert_eq!(B::FPD_OFFSET, 1);
        assert_eq!(B::DEST_MODE_LOGICAL_OFFSET, 2);
        assert_eq!(B::REDIRECTION_HINT_OFFSET, 3);
        assert_eq!(B::TRIGGER_LEVEL_OFFSET, 4);
        assert_eq!((B::DELIVERY_MODE_OFFSET, B::DELIVERY_MODE_BITS), (5, 3));
        assert_eq!((B::AVAIL_OFFSET, B::AVAIL_BITS), (8, 4));
        assert_eq!(B::POSTED_OFFSET, 15);
        assert_eq!((B::VECTOR_OFFSET, B::VECTOR_BITS), (16, 8));
        assert_eq!((B::DST_OFFSET, B::DST_BITS), (32, 32));
        assert_eq!((B::SID_OFFSET, B::SID_BITS), (64, 16));
        assert_eq!((B::SQ_OFFSET, B::SQ_BITS), (80, 2));
        assert_eq!((B::SVT_OFFSET, B::SVT_BITS), (82, 2));
        // Reserved = complement of the named fields.
        let used: u128 = 0xFF
            | (0xF << 8)
            | (1 << 15)
            | (0xFF << 16)
            | (0xFFFF_FFFF << 32)
            | (0xFFFF << 64)
            | (0xF << 80);
        assert_eq!(B::RESERVED_MASK, !used);
        assert_eq!(core::mem::size_of::<B>(), 16);
    }

    #[test]
    fn irte_posted_field_offsets_match_spec_table() {
        use PostedIrteBits as B;
        assert_eq!(B::PRESENT_OFFSET, 0);
        assert_eq!(B::FPD_OFFSET, 1);
        assert_eq!((B::AVAIL_OFFSET, B::AVAIL_BITS), (8, 4));
        assert_eq!(B::URGENT_OFFSET, 14);
        assert_eq!(B::POSTED_OFFSET, 15);
        assert_eq!((B::VECTOR_OFFSET, B::VECTOR_BITS), (16, 8));
        assert_eq!((B::PDA_31_6_OFFSET, B::PDA_31_6_BITS), (38, 26));
        assert_eq!((B::SID_OFFSET, B::SID_BITS), (64, 16));
        assert_eq!((B::SQ_OFFSET, B::SQ_BITS), (80, 2));
        assert_eq!((B::SVT_OFFSET, B::SVT_BITS), (82, 2));
        assert_eq!((B::PDA_63_32_OFFSET, B::PDA_63_32_BITS), (96, 32));
        let used: u128 = 0x3
            | (0xF << 8)
            | (0x3 << 14)
            | (0xFF << 16)
            | (0x3FF_FFFF << 38)
            | (0xFFFF << 64)
            | (0xF << 80)
            | (0xFFFF_FFFF << 96);
        assert_eq!(B::RESERVED_MASK, !used);
    }

    #[test]
    fn irte_raw_is_two_little_endian_words() {
        let raw = IrteRaw::from_u128(0x0011_2233_4455_6677_8899_AABB_CCDD_EEFF);
        assert_eq!(raw.low.get(), 0x8899_AABB_CCDD_EEFF);
        assert_eq!(raw.high.get(), 0x0011_2233_4455_6677);
        assert_eq!(
            raw.as_bytes(),
            &[
                0xFF, 0xEE, 0xDD, 0xCC, 0xBB, 0xAA, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22,
                0x11, 0x00
            ]
        );
        assert_eq!(
            raw.to_le_bytes(),
            *<&[u8; 16]>::try_from(raw.as_bytes()).unwrap()
        );
        assert_eq!(IrteRaw::from_le_bytes(raw.to_le_bytes()), raw);
        assert_eq!(IrteRaw::from(raw.to_le_bytes()), raw);
        assert_eq!(u128::from(raw), 0x0011_2233_4455_6677_8899_AABB_CCDD_EEFF);
        assert_eq!(core::mem::offset_of!(IrteRaw, low), 0);
        assert_eq!(core::mem::offset_of!(IrteRaw, high), 8);
        assert_eq!(core::mem::size_of::<IrteRaw>(), IrteRaw::SIZE);
    }

    #[test]
    fn irte_remapped_present_bit_0_fpd_bit_1() {
        let e = RemappedIrte {
            present: true,
            ..remapped()
        };
        assert_eq!(e.encode(X2), Ok(1));
        let e = RemappedIrte {
            fpd: true,
            ..remapped()
        };
        assert_eq!(e.encode(X2), Ok(2));
    }

    #[test]
    fn irte_remapped_dm_bit_2_rh_bit_3_tm_bit_4() {
        assert_eq!(
            RemappedIrte {
                dest_mode_logical: true,
                ..remapped()
            }
            .encode(X2),
            Ok(1 << 2)
        );
        assert_eq!(
            RemappedIrte {
                redirection_hint: true,
                ..remapped()
            }
            .encode(X2),
            Ok(1 << 3)
        );
        assert_eq!(
            RemappedIrte {
                trigger_level: true,
                ..remapped()
            }
            .encode(X2),
            Ok(1 << 4)
        );
    }

    #[test]
    fn irte_remapped_dlm_bits_7_5_avail_bits_11_8() {
        assert_eq!(
            RemappedIrte {
                delivery_mode: 7,
                ..remapped()
            }
            .encode(X2),
            Ok(0x7 << 5)
        );
        assert_eq!(
            RemappedIrte {
                avail: 0xF,
                ..remapped()
            }
            .encode(X2),
            Ok(0xF << 8)
        );
    }

    #[test]
    fn irte_remapped_vector_at_bits_23_16() {
        assert_eq!(
            RemappedIrte {
                vector: 0xEF,
                ..remapped()
            }
            .encode(X2),
            Ok(0xEF << 16)
        );
    }

    #[test]
    fn irte_x2apic_dst_at_bits_63_32() {
        let e = RemappedIrte {
            dest: 0xDEAD_BEEF,
            ..remapped()
        };
        assert_eq!(e.encode(X2), Ok(0xDEAD_BEEF << 32));
        assert_eq!(RemappedIrte::decode(0xDEAD_BEEF << 32, X2), Ok(e));
    }

    #[test]
    fn irte_xapic_dst_at_bits_47_40() {
        let e = RemappedIrte {
            dest: 0xAB,
            ..remapped()
        };
        assert_eq!(e.encode(XA), Ok(0xAB << 40));
        assert_eq!(RemappedIrte::decode(0xAB << 40, XA), Ok(e));
        assert_eq!(
            RemappedIrte {
                dest: 0x100,
                ..remapped()
            }
            .encode(XA),
            Err(IrteError::XApicDestinationTooLarge(0x100))
        );
    }

    #[test]
    fn irte_xapic_dst_bits_39_32_and_63_48_reserved() {
        assert_eq!(
            Irte::decode(1u128 << 32, XA),
            Err(IrteError::ReservedBits { mask: 1 << 32 })
        );
        assert_eq!(
            Irte::decode(1u128 << 48, XA),
            Err(IrteError::ReservedBits { mask: 1 << 48 })
        );
        // Same bits are a valid x2APIC ID.
        assert!(
            matches!(Irte::decode(1u128 << 48, X2), Ok(Irte::Remapped(r)) if r.dest == 0x1_0000)
        );
    }

    #[test]
    fn irte_sid_bits_79_64_sq_81_80_svt_83_82() {
        assert_eq!(
            RemappedIrte {
                sid: 0xBEEF,
                ..remapped()
            }
            .encode(X2),
            Ok(0xBEEF << 64)
        );
        assert_eq!(
            RemappedIrte {
                sq: 3,
                ..remapped()
            }
            .encode(X2),
            Ok(3 << 80)
        );
        assert_eq!(
            RemappedIrte {
                svt: Svt::Reserved,
                ..remapped()
            }
            .encode(X2),
            Ok(3 << 82)
        );
        assert_eq!(
            PostedIrte {
                sid: 0xBEEF,
                ..posted()
            }
            .encode(),
            Ok(IM | 0xBEEF << 64)
        );
        assert_eq!(PostedIrte { sq: 2, ..posted() }.encode(), Ok(IM | 2 << 80));
        assert_eq!(
            PostedIrte {
                svt: Svt::VerifyBus,
                ..posted()
            }
            .encode(),
            Ok(IM | 2 << 82)
        );
    }

    #[test]
    fn irte_im_bit_15_selects_posted() {
        assert_eq!(posted().encode(), Ok(IM));
        assert_eq!(Irte::decode(IM, XA), Ok(Irte::Posted(posted())));
        assert_eq!(Irte::decode(0u128, XA), Ok(Irte::Remapped(remapped())));
    }

    #[test]
    fn irte_posted_urgent_bit_14_vector_23_16_avail_11_8() {
        assert_eq!(
            PostedIrte {
                urgent: true,
                ..posted()
            }
            .encode(),
            Ok(IM | 1 << 14)
        );
        assert_eq!(
            PostedIrte {
                vector: 0x41,
                ..posted()
            }
            .encode(),
            Ok(IM | 0x41 << 16)
        );
        assert_eq!(
            PostedIrte {
                avail: 0xA,
                ..posted()
            }
            .encode(),
            Ok(IM | 0xA << 8)
        );
    }

    #[test]
    fn irte_posted_pda_split_63_38_and_127_96() {
        // PDA bits 31:6 -> IRTE 63:38, PDA bits 63:32 -> IRTE 127:96.
        let e = PostedIrte {
            pda: 0x1234_5678_9ABC_DEC0,
            ..posted()
        };
        let expected: u128 = IM | ((0x9ABC_DEC0u128 >> 6) << 38) | (0x1234_5678u128 << 96);
        assert_eq!(e.encode(), Ok(expected));
        assert_eq!(PostedIrte::decode(expected), Ok(e));
        let low_only = PostedIrte {
            pda: 0x40,
            ..posted()
        };
        assert_eq!(low_only.encode(), Ok(IM | 1 << 38));
        let high_only = PostedIrte {
            pda: 1 << 32,
            ..posted()
        };
        assert_eq!(high_only.encode(), Ok(IM | 1 << 96));
        assert_eq!(
            PostedIrte {
                pda: 0x1020,
                ..posted()
            }
            .encode(),
            Err(IrteError::MisalignedPda(0x1020))
        );
    }

    #[test]
    fn golden_linux_remapped_irte_x2apic() {
        // Linux prepare_irte: P=1, RH=1 (redir hint), DM physical, TM edge, DLM fixed,
        // vector 0x22, dest APIC 5, SVT=1 SQ=0 SID=0x0010 (00:02.0).
        let e = RemappedIrte {
            present: true,
            redirection_hint: true,
            vector: 0x22,
            dest: 5,
            sid: 0x0010,
            svt: Svt::VerifySid,
            ..remapped()
        };
        // low = 0x0000_0005_0022_0009, high = 0x0004_0010.
        let raw: u128 = (0x0000_0000_0004_0010u128 << 64) | 0x0000_0005_0022_0009;
        assert_eq!(e.encode(X2), Ok(raw));
        assert_eq!(Irte::decode(raw, X2), Ok(Irte::Remapped(e)));
        // xAPIC: dest in 47:40 -> low = 0x0000_0500_0022_0009.
        let raw_x: u128 = (0x0004_0010u128 << 64) | 0x0000_0500_0022_0009;
        assert_eq!(e.encode(XA), Ok(raw_x));
        assert_eq!(
            Irte::decode(IrteRaw::from_u128(raw_x), XA),
            Ok(Irte::Remapped(e))
        );
    }

    #[test]
    fn irte_reserved_bits_report_exact_mask_fault_0x24() {
        for bit in [12u32, 13, 14, 24, 31, 84, 100, 127] {
            let err = Irte::decode(1u128 << bit, X2);
            assert_eq!(
                err,
                Err(IrteError::ReservedBits { mask: 1 << bit }),
                "remapped bit {bit}"
            );
            assert_eq!(
                err.unwrap_err().fault_reason(),
                Some(VtdFaultReason::IRTE_RESERVED)
            );
        }
        for bit in [2u32, 7, 12, 13, 24, 37, 84, 95] {
            assert_eq!(
                Irte::decode(IM | 1u128 << bit, X2),
                Err(IrteError::ReservedBits { mask: 1 << bit }),
                "posted bit {bit}"
            );
        }
        // Posted-only reserved bits that are fields in the remapped format, and vice versa.
        assert!(matches!(
            Irte::decode(1u128 << 2, X2),
            Ok(Irte::Remapped(_))
        ));
        assert!(matches!(
            Irte::decode(IM | 1u128 << 100, X2),
            Ok(Irte::Posted(_))
        ));
    }

    #[test]
    fn irte_not_present_still_decodes_with_fpd() {
        let raw = IrteRaw::from_u128(0x2 | 0x41 << 16);
        assert!(!raw.present());
        assert!(raw.fpd());
        let e = Irte::decode(raw, X2).unwrap();
        assert!(!e.present());
        assert!(e.fpd());
        assert_eq!(e.vector(), 0x41);
    }

    #[test]
    fn irte_encode_checks_field_widths() {
        assert_eq!(
            RemappedIrte {
                delivery_mode: 8,
                ..remapped()
            }
            .encode(X2),
            Err(IrteError::FieldOutOfRange {
                field: IrteField::DeliveryMode,
                value: 8
            })
        );
        assert_eq!(
            RemappedIrte {
                avail: 16,
                ..remapped()
            }
            .encode(X2),
            Err(IrteError::FieldOutOfRange {
                field: IrteField::Avail,
                value: 16
            })
        );
        assert_eq!(
            PostedIrte { sq: 4, ..posted() }.encode(),
            Err(IrteError::FieldOutOfRange {
                field: IrteField::SourceQualifier,
                value: 4
            })
        );
        assert_eq!(IrteError::MisalignedPda(1).fault_reason(), None);
    }

    // --- SID check ---

    #[test]
    fn sid_check_svt0_always_matches() {
        assert!(sid_matches(Svt::NoCheck, 0, 0x1234, 0xFFFF));
    }

    #[test]
    fn sid_check_svt1_sq_masks() {
        let sid = 0x0010; // 00:02.0
        assert!(sid_matches(Svt::VerifySid, 0, sid, 0x0010));
        assert!(!sid_matches(Svt::VerifySid, 0, sid, 0x0011));
        // SQ 1 ignores bit 2.
        assert!(sid_matches(Svt::VerifySid, 1, sid, 0x0014));
        assert!(!sid_matches(Svt::VerifySid, 1, sid, 0x0012));
        // SQ 2 ignores bits 2:1.
        assert!(sid_matches(Svt::VerifySid, 2, sid, 0x0016));
        assert!(!sid_matches(Svt::VerifySid, 2, sid, 0x0011));
        // SQ 3 ignores bits 2:0.
        assert!(sid_matches(Svt::VerifySid, 3, sid, 0x0017));
        assert!(!sid_matches(Svt::VerifySid, 3, sid, 0x0018));
        // SQ > 3 is not a valid qualifier: fail closed.
        assert!(!sid_matches(Svt::VerifySid, 4, sid, sid));
        assert_eq!(sq_mask(0), Some(0xFFFF));
        assert_eq!(sq_mask(1), Some(0xFFFB));
        assert_eq!(sq_mask(2), Some(0xFFF9));
        assert_eq!(sq_mask(3), Some(0xFFF8));
    }

    #[test]
    fn sid_check_svt2_start_bus_high_byte_end_bus_low_byte() {
        // Linux: PCI_DEVID(start bus 0x02, end bus 0x05) = 0x0205.
        let sid = 0x0205;
        assert!(sid_matches(Svt::VerifyBus, 0, sid, 0x0200));
        assert!(sid_matches(Svt::VerifyBus, 0, sid, 0x03FF));
        assert!(sid_matches(Svt::VerifyBus, 3, sid, 0x0507));
        assert!(!sid_matches(Svt::VerifyBus, 0, sid, 0x0100));
        assert!(!sid_matches(Svt::VerifyBus, 0, sid, 0x0600));
        // 0x0502 is what QEMU's reading (high byte = max) needs for buses 2..=5; in the Linux
        // reading it is start 5 > end 2 and matches nothing.
        assert!(!sid_matches(Svt::VerifyBus, 0, 0x0502, 0x0300));
    }

    #[test]
    fn sid_check_svt3_never_matches() {
        assert!(!sid_matches(Svt::Reserved, 0, 0x10, 0x10));
        let e = RemappedIrte {
            svt: Svt::Reserved,
            sid: 0x10,
            ..remapped()
        };
        let raw = e.encode(X2).unwrap();
        assert_eq!(Irte::decode(raw, X2), Ok(Irte::Remapped(e)));
        assert!(!Irte::Remapped(e).sid_matches(0x10));
    }

    // --- IRTA ---

    #[test]
    fn irta_size_bits_3_0_eime_bit_11_base_63_12() {
        assert_eq!((IrtaBits::SIZE_OFFSET, IrtaBits::SIZE_BITS), (0, 4));
        assert_eq!(IrtaBits::EIME_OFFSET, 11);
        assert_eq!(
            (IrtaBits::BASE_PAGE_OFFSET, IrtaBits::BASE_PAGE_BITS),
            (12, 52)
        );
        let irta = Irta {
            size_s: 0xF,
            eime: true,
            base: 0x1234_5000,
        };
        assert_eq!(irta.encode(), Ok(0x1234_580F));
        assert_eq!(Irta::decode(0x1234_580F), Ok(irta));
        assert_eq!(irta.entries(), 65536);
        assert_eq!(irta.apic_mode(), X2);
        assert_eq!(
            Irta {
                size_s: 0,
                eime: false,
                base: 0
            }
            .entries(),
            2
        );
        assert_eq!(
            Irta {
                size_s: 7,
                eime: false,
                base: 0
            }
            .entries(),
            256
        );
    }

    #[test]
    fn irta_errors() {
        assert_eq!(Irta::decode(1 << 4), Err(IrtaError::ReservedBits(1 << 4)));
        assert_eq!(Irta::decode(0x7F0), Err(IrtaError::ReservedBits(0x7F0)));
        assert_eq!(
            Irta {
                size_s: 16,
                eime: false,
                base: 0
            }
            .encode(),
            Err(IrtaError::SizeOutOfRange(16))
        );
        assert_eq!(
            Irta {
                size_s: 0,
                eime: false,
                base: 0x800
            }
            .encode(),
            Err(IrtaError::MisalignedBase(0x800))
        );
    }

    #[test]
    fn fault_reason_codes() {
        assert_eq!(VtdFaultReason::MALFORMED_REQUEST.0, 0x20);
        assert_eq!(VtdFaultReason::INDEX_OUT_OF_RANGE.0, 0x21);
        assert_eq!(VtdFaultReason::NOT_PRESENT.0, 0x22);
        assert_eq!(VtdFaultReason::TABLE_UNREADABLE.0, 0x23);
        assert_eq!(VtdFaultReason::IRTE_RESERVED.0, 0x24);
        assert_eq!(VtdFaultReason::COMPAT_BLOCKED.0, 0x25);
        assert_eq!(VtdFaultReason::SID_CHECK_FAILED.0, 0x26);
        assert_eq!(VtdFaultReason(0x1F).description(), None);
        assert_eq!(
            VtdFaultReason::NOT_PRESENT.description(),
            Some("IRTE not present")
        );
    }

    // --- property tests ---

    fn svt() -> impl Strategy<Value = Svt> {
        (0u8..4).prop_map(Svt::from_bits)
    }

    prop_compose! {
        fn remapped_irte(mode: ApicMode)(
            flags in any::<[bool; 5]>(),
            delivery_mode in 0u8..8,
            avail in 0u8..16,
            vector in any::<u8>(),
            dest in 0..=mode.max_apic_id(),
            sid in any::<u16>(),
            sq in 0u8..4,
            svt in svt(),
        ) -> RemappedIrte {
            RemappedIrte {
                present: flags[0],
                fpd: flags[1],
                dest_mode_logical: flags[2],
                redirection_hint: flags[3],
                trigger_level: flags[4],
                delivery_mode, avail, vector, dest, sid, sq, svt,
            }
        }
    }

    prop_compose! {
        fn posted_irte()(
            flags in any::<[bool; 3]>(),
            avail in 0u8..16,
            vector in any::<u8>(),
            pda_units in any::<u64>(),
            sid in any::<u16>(),
            sq in 0u8..4,
            svt in svt(),
        ) -> PostedIrte {
            PostedIrte {
                present: flags[0], fpd: flags[1], urgent: flags[2],
                avail, vector, pda: pda_units << 6, sid, sq, svt,
            }
        }
    }

    fn mode() -> impl Strategy<Value = ApicMode> {
        prop_oneof![Just(XA), Just(X2)]
    }

    proptest! {
        #[test]
        fn remappable_msi_round_trip(handle in any::<u16>(), shv in any::<bool>(), sub in any::<u16>()) {
            let m = RemappableMsi { handle, shv, subhandle: if shv { sub } else { 0 } };
            prop_assert_eq!(RemappableMsi::decode(m.encode()), Ok(m));
        }

        #[test]
        fn remappable_msi_decode_total(lo in any::<u32>(), hi in 0u32..2, data in any::<u32>()) {
            for lo in [lo, (lo & 0x000F_FFFF) | 0xFEE0_0010] {
                let msg = MsiMessage::new(lo, hi, data);
                match RemappableMsi::decode(msg) {
                    Ok(m) => {
                        let again = m.encode();
                        // Equal modulo don't care: address bits 1:0, data when SHV = 0.
                        prop_assert_eq!(again.address_lo, lo & !3);
                        prop_assert_eq!(again.address_hi, 0);
                        if m.shv { prop_assert_eq!(again.data, data); }
                    }
                    Err(VtdMsiError::AddressHighNonZero(v)) => prop_assert!(v == hi && v != 0),
                    Err(VtdMsiError::BadAddressBase(v)) => prop_assert!(v == lo && v >> 20 != 0xFEE),
                    Err(VtdMsiError::CompatibilityFormat(v)) => prop_assert!(v == lo && v & 0x10 == 0),
                    Err(VtdMsiError::SubhandleReservedBits(v)) => {
                        prop_assert!(v == data && v >> 16 != 0 && lo & 0x8 != 0)
                    }
                }
            }
        }

        #[test]
        fn remapped_irte_round_trip_x2apic(e in remapped_irte(X2)) {
            let raw = e.encode(X2).unwrap();
            prop_assert_eq!(Irte::decode(raw, X2), Ok(Irte::Remapped(e)));
        }

        #[test]
        fn remapped_irte_round_trip_xapic(e in remapped_irte(XA)) {
            let raw = e.encode(XA).unwrap();
            prop_assert_eq!(Irte::decode(raw, XA), Ok(Irte::Remapped(e)));
        }

        #[test]
        fn posted_irte_round_trip(e in posted_irte(), mode in mode()) {
            let raw = e.encode().unwrap();
            prop_assert_eq!(Irte::decode(raw, mode), Ok(Irte::Posted(e)));
            prop_assert_eq!(Irte::Posted(e).encode(mode), Ok(raw));
        }

        #[test]
        fn irte_decode_total_and_exact(raw in any::<u128>(), clean in any::<bool>(), mode in mode()) {
            // Half the inputs have the reserved bits cleared so that decoding succeeds often.
            let raw = if clean {
                let reserved = if raw & IM != 0 {
                    PostedIrteBits::RESERVED_MASK
                } else {
                    RemappedIrteBits::reserved_mask(mode)
                };
                raw & !reserved
            } else {
                raw
            };
            match Irte::decode(raw, mode) {
                Ok(e) => prop_assert_eq!(e.encode(mode), Ok(raw)),
                Err(IrteError::ReservedBits { mask }) => {
                    let reserved = if raw & IM != 0 {
                        PostedIrteBits::RESERVED_MASK
                    } else {
                        RemappedIrteBits::reserved_mask(mode)
                    };
                    prop_assert!(mask != 0);
                    prop_assert_eq!(mask, raw & reserved);
                }
                Err(e) => prop_assert!(false, "decode returned an encode error {e:?}"),
            }
        }

        #[test]
        fn irte_encode_total(e in any::<(u8, u8, u8, u32)>().prop_map(|(dlm, avail, sq, dest)| RemappedIrte {
            delivery_mode: dlm, avail, sq, dest, ..remapped()
        }), mode in mode()) {
            match e.encode(mode) {
                Ok(raw) => prop_assert_eq!(Irte::decode(raw, mode), Ok(Irte::Remapped(e))),
                Err(IrteError::FieldOutOfRange { field: IrteField::DeliveryMode, value }) => prop_assert!(value > 7),
                Err(IrteError::FieldOutOfRange { field: IrteField::Avail, value }) => prop_assert!(value > 15),
                Err(IrteError::FieldOutOfRange { field: IrteField::SourceQualifier, value }) => prop_assert!(value > 3),
                Err(IrteError::XApicDestinationTooLarge(d)) => prop_assert!(mode == XA && d > 255),
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }

        #[test]
        fn sid_check_svt1_oracle(sq in 0u8..4, sid in any::<u16>(), rid in any::<u16>()) {
            // Oracle: the ignored function bits per SQ.
            let ignored: u16 = [0, 0b100, 0b110, 0b111][sq as usize];
            prop_assert_eq!(sid_matches(Svt::VerifySid, sq, sid, rid), (sid | ignored) == (rid | ignored));
        }

        #[test]
        fn sid_check_svt2_oracle(start in any::<u8>(), end in any::<u8>(), bus in any::<u8>(), devfn in any::<u8>()) {
            let sid = u16::from_be_bytes([start, end]);
            let rid = u16::from_be_bytes([bus, devfn]);
            prop_assert_eq!(sid_matches(Svt::VerifyBus, 0, sid, rid), (start..=end).contains(&bus));
        }

        #[test]
        fn irta_round_trip(size_s in 0u8..16, eime in any::<bool>(), page in 0u64..(1 << 52)) {
            let irta = Irta { size_s, eime, base: page << 12 };
            prop_assert_eq!(Irta::decode(irta.encode().unwrap()), Ok(irta));
        }

        #[test]
        fn irta_decode_total(raw in any::<u64>()) {
            match Irta::decode(raw) {
                Ok(irta) => prop_assert_eq!(irta.encode(), Ok(raw)),
                Err(IrtaError::ReservedBits(v)) => prop_assert!(v != 0 && v == raw & 0x7F0),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
