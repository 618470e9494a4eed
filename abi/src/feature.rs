//! The feature-bit space.
//!
//! Features are a 64-bit set. The host offers a set in the `QUERY` response; the guest accepts a
//! subset in `NEGOTIATE`. Bits are partitioned so that later extensions arrive without breaking
//! anyone: a guest ignores offered bits it does not know, and a host rejects accepted bits it did
//! not offer.
//!
//! | bits  | use |
//! |-------|-----|
//! | 0–5   | version 1 features ([`Features::V1_DEFINED`]) |
//! | 6–31  | reserved for future minor additions; never offered by a version 1 host |
//! | 32–36 | reserved for the planned extensions (batch, storm control, guest-visible posted mode, revocation, IMS PASID) |
//! | 37–55 | reserved |
//! | 56–63 | vendor-specific / experimental; never assigned by the specification |

use core::fmt;

/// A set of vIR features (open newtype: any 64-bit value is representable).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(transparent)]
pub struct Features(pub u64);

impl Features {
    /// The empty set.
    pub const NONE: Features = Features(0);
    /// PCI MSI capability storage (blocks of 1–32 vectors).
    pub const MSI: Features = Features(1 << 0);
    /// PCI MSI-X table storage.
    pub const MSIX: Features = Features(1 << 1);
    /// IMS in device memory (an array indexed by the storage index).
    pub const IMS_DEVICE: Features = Features(1 << 2);
    /// IMS in system memory (storage index chosen by guest software).
    pub const IMS_SYSTEM: Features = Features(1 << 3);
    /// Reservation activation (`ACTIVATE` with the `RESERVE` flag).
    pub const RESERVATION: Features = Features(1 << 4);
    /// The `QUERY_QUOTA` call.
    pub const QUOTA_QUERY: Features = Features(1 << 5);

    /// Every feature version 1 defines.
    pub const V1_DEFINED: Features = Features(0x3f);

    /// Reserved for the planned batch call with per-entry status and restart index.
    pub const RESERVED_BATCH: Features = Features(1 << 32);
    /// Reserved for planned per-interrupt suppress/re-arm and host-initiated quarantine.
    pub const RESERVED_STORM_CONTROL: Features = Features(1 << 33);
    /// Reserved for planned guest-visible posted mode per entry.
    pub const RESERVED_POSTED: Features = Features(1 << 34);
    /// Reserved for planned message revocation with a generation number.
    pub const RESERVED_REVOCATION: Features = Features(1 << 35);
    /// Reserved for carrying a PASID with IMS allocations.
    pub const RESERVED_PASID: Features = Features(1 << 36);
    /// Vendor-specific range (bits 63:56).
    pub const VENDOR_MASK: Features = Features(0xff00_0000_0000_0000);

    /// Names of the defined version 1 bits, indexed by bit number.
    pub const V1_NAMES: [&'static str; 6] = [
        "MSI",
        "MSIX",
        "IMS_DEVICE",
        "IMS_SYSTEM",
        "RESERVATION",
        "QUOTA_QUERY",
    ];

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// Whether every bit of `other` is in `self`.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }
    /// Union.
    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }
    /// Intersection.
    pub const fn intersection(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }
    /// Bits of `self` not in `other`.
    pub const fn difference(self, other: Features) -> Features {
        Features(self.0 & !other.0)
    }
    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        self.union(rhs)
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("(none)");
        }
        let mut first = true;
        for bit in 0..64u32 {
            if self.0 & (1 << bit) == 0 {
                continue;
            }
            if !first {
                f.write_str("|")?;
            }
            first = false;
            match Features::V1_NAMES.get(bit as usize) {
                Some(n) => f.write_str(n)?,
                None => write!(f, "bit{bit}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ranges_disjoint_from_v1() {
        let planned = Features::RESERVED_BATCH
            | Features::RESERVED_STORM_CONTROL
            | Features::RESERVED_POSTED
            | Features::RESERVED_REVOCATION
            | Features::RESERVED_PASID;
        assert!(Features::V1_DEFINED.intersection(planned).is_empty());
        assert!(
            Features::V1_DEFINED
                .intersection(Features::VENDOR_MASK)
                .is_empty()
        );
        assert!(planned.intersection(Features::VENDOR_MASK).is_empty());
        assert_eq!(
            Features::V1_DEFINED.0.count_ones() as usize,
            Features::V1_NAMES.len()
        );
    }

    #[test]
    fn display_names_bits() {
        extern crate alloc;
        use alloc::format;
        assert_eq!(
            format!("{}", Features::MSI | Features::IMS_SYSTEM),
            "MSI|IMS_SYSTEM"
        );
        assert_eq!(format!("{}", Features(1 << 40)), "bit40");
    }
}
