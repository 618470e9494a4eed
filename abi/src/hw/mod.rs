//! Hardware formats behind the messages vIR hands out.
//!
//! vIR returns an MSI address/data pair to the guest; what that pair *means* is defined by the
//! platform's interrupt architecture. This module encodes and decodes every such format bit for
//! bit, so that a host model, a guest model and a debugging CLI agree on one implementation:
//!
//! * [`msi`]: the raw [`MsiMessage`] a device writes, the x86 *compatibility* format (with the
//!   extended destination ID) and the [`classify`] helper that tells it from the remappable format;
//! * [`vtd`]: Intel VT-d — the remappable MSI ([`RemappableMsi`]), the 128-bit interrupt remapping
//!   table entry in remapped and posted formats ([`Irte`]), the source-id check ([`sid_matches`]),
//!   the IRTA register ([`Irta`]) and the fault reasons ([`VtdFaultReason`]);
//! * [`posted`]: the 64-byte posted-interrupt descriptor ([`PostedDescriptor`]);
//! * [`amd`]: AMD-Vi — the MSI data carrying the IRTE index ([`AmdMsi`]) and the 32-bit and 128-bit
//!   IRTE formats ([`AmdIrte32Entry`], [`AmdIrte128`]).
//!
//! Conventions, shared by every submodule:
//!
//! * bits are numbered from 0 = least significant; all multi-byte values are little-endian;
//! * register and table-entry layouts are `bitfield-struct` types with an explicit little-endian
//!   representation (`*Bits`, [`CompatAddress`], [`CompatData`], [`AmdIrte32`]); their field
//!   offsets are checked by tests against the tables in the project's `hardware-formats.md`;
//! * the *decoded* types are plain structs and enums with public fields; `decode` is total (it
//!   never panics, whatever the input) and reports reserved bits, unknown encodings and bad lengths
//!   as typed errors carrying the offending value; `encode` range-checks every field and never
//!   panics either;
//! * `decode(encode(x)) == x` for every valid `x`, and a successful `decode` of raw bits
//!   re-encodes to the same bits except for bits documented as *don't care*.

pub mod amd;
pub mod fields;
pub mod msi;
pub mod posted;
pub mod vtd;

use core::fmt;

pub use amd::{
    AmdGuestIrte, AmdIrte32, AmdIrte32Entry, AmdIrte128, AmdIrteError, AmdIrteField, AmdMsi,
    AmdMsiError, AmdRemapIrte,
};
pub use fields::FieldDesc;
pub use msi::{
    CompatAddress, CompatData, CompatMsi, DeliveryMode, DestForm, MessageKind, MsiError,
    MsiMessage, classify,
};
pub use posted::{Pir, PostedDescriptor, PostedError};
pub use vtd::{
    Irta, IrtaError, Irte, IrteError, IrteField, IrteRaw, PostedIrte, RemappableMsi, RemappedIrte,
    Svt, VtdFaultReason, VtdMsiError, sid_matches,
};

/// The x86 MSI address window: address bits 31:20 are `0xFEE` for every interrupt message.
pub const MSI_ADDRESS_BASE: u32 = 0xFEE0_0000;

/// Mask selecting address bits 31:20, which must equal those of [`MSI_ADDRESS_BASE`].
pub const MSI_ADDRESS_BASE_MASK: u32 = 0xFFF0_0000;

/// Which local APIC addressing a destination field uses.
///
/// For VT-d this is selected by IRTA.EIME (extended interrupt mode enable): with x2APIC the IRTE
/// destination and the posted descriptor's NDST hold the full 32-bit APIC ID; with xAPIC they hold
/// an 8-bit APIC ID in bits 15:8 of the 32-bit field, the other bits being reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ApicMode {
    /// xAPIC: 8-bit APIC IDs, placed in bits 15:8 of 32-bit destination fields.
    XApic,
    /// x2APIC: 32-bit APIC IDs, the destination field holds the ID as is.
    X2Apic,
}

impl ApicMode {
    /// The mode selected by the VT-d IRTA.EIME bit (`true` = x2APIC).
    pub const fn from_eime(eime: bool) -> Self {
        if eime { Self::X2Apic } else { Self::XApic }
    }

    /// The largest APIC ID a destination field can hold in this mode.
    pub const fn max_apic_id(self) -> u32 {
        match self {
            Self::XApic => 0xFF,
            Self::X2Apic => u32::MAX,
        }
    }
}

/// A byte slice had the wrong length for the fixed-size format being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LengthError {
    /// The length the format requires, in bytes.
    pub expected: usize,
    /// The length that was supplied, in bytes.
    pub actual: usize,
}

impl fmt::Display for LengthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrong length: expected {} bytes, got {}",
            self.expected, self.actual
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_mode_from_eime_bit_11() {
        assert_eq!(ApicMode::from_eime(false), ApicMode::XApic);
        assert_eq!(ApicMode::from_eime(true), ApicMode::X2Apic);
        assert_eq!(ApicMode::XApic.max_apic_id(), 255);
        assert_eq!(ApicMode::X2Apic.max_apic_id(), u32::MAX);
    }

    #[test]
    fn msi_window_is_fee_in_bits_31_20() {
        assert_eq!(MSI_ADDRESS_BASE >> 20, 0xFEE);
        assert_eq!(MSI_ADDRESS_BASE & !MSI_ADDRESS_BASE_MASK, 0);
        assert_eq!(MSI_ADDRESS_BASE_MASK, 0xFFFu32 << 20);
    }
}
