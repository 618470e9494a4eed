//! Field descriptors: one table per hardware format with each field's name, the Linux kernel's
//! name for it, its bit range and its meaning.
//!
//! The bit ranges are not written down here: each table is built in the module of its
//! `bitfield-struct` layout type from the offsets and widths that `bitfield-struct` derives from
//! the layout (`Self::VECTOR_OFFSET`, `Self::VECTOR_BITS`), so the layout type stays the one
//! place that says where a field is. The encoders build entries through the same layout types.
//! The `vir` tool (positions, kernel-name aliases), the C header generator (`_SHIFT`/`_MASK`
//! macros) and the golden-vector checks read these tables.

/// One field of a hardware format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldDesc {
    /// The field's name in vIR (snake case; the C header's macro uses it in upper case).
    pub name: &'static str,
    /// The Linux kernel's name of the field (`struct irte` in `include/linux/dmar.h`,
    /// `union irte` / `irte_ga_lo` / `irte_ga_hi` in `drivers/iommu/amd/amd_iommu_types.h`,
    /// `arch_msi_msg_*` in `arch/x86/include/asm/msi.h`), where it has one.
    pub kernel: Option<&'static str>,
    /// Lowest bit.
    pub lo: u32,
    /// Number of bits (at least 1).
    pub bits: u32,
    /// What the field means.
    pub meaning: &'static str,
}

impl FieldDesc {
    /// A descriptor from a `bitfield-struct` offset and width (which are `usize` and at most
    /// 128, so they fit `u32`).
    pub const fn new(
        name: &'static str,
        kernel: Option<&'static str>,
        offset: usize,
        bits: usize,
        meaning: &'static str,
    ) -> Self {
        Self {
            name,
            kernel,
            lo: offset as u32,
            bits: bits as u32,
            meaning,
        }
    }

    /// Highest bit.
    pub const fn hi(&self) -> u32 {
        self.lo + self.bits - 1
    }

    /// The field's bits in place.
    pub const fn mask(&self) -> u128 {
        let ones = if self.bits >= 128 {
            u128::MAX
        } else {
            (1u128 << self.bits) - 1
        };
        ones << self.lo
    }

    /// The field's value in `raw`.
    pub const fn get(&self, raw: u128) -> u128 {
        (raw & self.mask()) >> self.lo
    }
}

/// Whether two strings are equal (usable in constants).
const fn str_eq(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.split_first(), b.split_first()) {
            (None, None) => return true,
            (Some((x, ra)), Some((y, rb))) if *x == *y => {
                a = ra;
                b = rb;
            }
            _ => return false,
        }
    }
}

/// The descriptor named `name` (vIR's name) in `fields`.
pub const fn find(fields: &'static [FieldDesc], name: &str) -> Option<&'static FieldDesc> {
    let mut rest = fields;
    while let Some((first, tail)) = rest.split_first() {
        if str_eq(first.name, name) {
            return Some(first);
        }
        rest = tail;
    }
    None
}

/// The descriptor whose kernel name is `kernel` in `fields`.
pub const fn find_kernel(fields: &'static [FieldDesc], kernel: &str) -> Option<&'static FieldDesc> {
    let mut rest = fields;
    while let Some((first, tail)) = rest.split_first() {
        match first.kernel {
            Some(k) if str_eq(k, kernel) => return Some(first),
            _ => {}
        }
        rest = tail;
    }
    None
}

/// The kernel's name of the field `name` in `fields`, if the field exists and has one.
pub const fn kernel_name(fields: &'static [FieldDesc], name: &str) -> Option<&'static str> {
    match find(fields, name) {
        Some(d) => d.kernel,
        None => None,
    }
}

/// Checks a table: fields inside `width` bits, non-empty, disjoint, and disjoint from
/// `reserved`; returns the union of their masks.
pub const fn check(fields: &'static [FieldDesc], width: u32, reserved: u128) -> Option<u128> {
    let mut seen = 0u128;
    let mut rest = fields;
    while let Some((d, tail)) = rest.split_first() {
        if d.bits == 0 || d.lo + d.bits > width {
            return None;
        }
        let m = d.mask();
        if m & (seen | reserved) != 0 {
            return None;
        }
        seen |= m;
        rest = tail;
    }
    Some(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::amd::{AmdIrte32, AmdIrte128GuestBits, AmdIrte128RemapBits};
    use crate::hw::msi::{CompatAddress, CompatData};
    use crate::hw::vtd::{PostedIrteBits, RemappedIrteBits};
    use crate::hw::{AmdIrte128, AmdRemapIrte, ApicMode, PostedIrte, RemappedIrte, Svt};

    fn all_bits(width: u32) -> u128 {
        if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        }
    }

    /// (table, width, reserved bits, whether fields + reserved cover every bit)
    fn tables() -> [(&'static [FieldDesc], u32, u128, bool); 7] {
        [
            (
                RemappedIrteBits::FIELDS,
                128,
                RemappedIrteBits::RESERVED_MASK,
                true,
            ),
            (
                PostedIrteBits::FIELDS,
                128,
                PostedIrteBits::RESERVED_MASK,
                true,
            ),
            (
                AmdIrte32::FIELDS,
                32,
                u128::from(AmdIrte32::RESERVED_MASK),
                true,
            ),
            (
                AmdIrte128RemapBits::FIELDS,
                128,
                AmdIrte128RemapBits::RESERVED_MASK,
                true,
            ),
            (
                AmdIrte128GuestBits::FIELDS,
                128,
                AmdIrte128GuestBits::RESERVED_MASK,
                true,
            ),
            (
                CompatAddress::FIELDS,
                32,
                u128::from(CompatAddress::RESERVED_MASK),
                true,
            ),
            // Data bits 31:16 and 13:11 are reserved; the abi's mask lists them all.
            (
                CompatData::FIELDS,
                32,
                u128::from(CompatData::RESERVED_MASK),
                true,
            ),
        ]
    }

    #[test]
    fn tables_are_disjoint_and_cover_every_bit() {
        for (fields, width, reserved, complete) in tables() {
            let union = check(fields, width, reserved)
                .unwrap_or_else(|| panic!("overlap or out of range in {fields:?}"));
            if complete {
                assert_eq!(union | reserved, all_bits(width), "{fields:?}");
            }
            let mut lo = 0;
            for d in fields {
                assert!(d.lo >= lo, "{} out of order", d.name);
                lo = d.hi();
            }
        }
    }

    #[test]
    fn descriptors_match_the_encoders() {
        let vtd = RemappedIrte {
            present: false,
            fpd: false,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector: 0xFF,
            dest: u32::MAX,
            sid: 0,
            sq: 3,
            svt: Svt::NoCheck,
        };
        let raw = vtd.encode(ApicMode::X2Apic).unwrap();
        let f = RemappedIrteBits::FIELDS;
        let m = |n: &str| find(f, n).map_or(0, FieldDesc::mask);
        assert_eq!(raw, m("vector") | m("dst") | m("sq"));
        assert_eq!(find(f, "dst").map(|d| (d.hi(), d.lo)), Some((63, 32)));
        let posted = PostedIrte {
            present: true,
            fpd: false,
            avail: 0,
            urgent: false,
            vector: 0,
            pda: u64::MAX << 6,
            sid: 0xFFFF,
            sq: 0,
            svt: Svt::NoCheck,
        };
        let f = PostedIrteBits::FIELDS;
        let m = |n: &str| find(f, n).map_or(0, FieldDesc::mask);
        assert_eq!(
            posted.encode().unwrap(),
            m("present") | m("im") | m("pda_31_6") | m("pda_63_32") | m("sid")
        );
        let amd = AmdIrte128::Remapped(AmdRemapIrte {
            remap_en: false,
            sup_iopf: false,
            int_type: 0,
            rq_eoi: false,
            dest_mode_logical: false,
            destination: u32::MAX,
            vector: 0,
        });
        let f = AmdIrte128RemapBits::FIELDS;
        let m = |n: &str| find(f, n).map_or(0, FieldDesc::mask);
        assert_eq!(
            amd.encode().unwrap(),
            m("destination_23_0") | m("destination_31_24")
        );
        assert_eq!(
            find(AmdIrte128GuestBits::FIELDS, "ga_root_ptr").map(|d| (d.hi(), d.lo)),
            Some((115, 76))
        );
    }

    #[test]
    fn kernel_names() {
        assert_eq!(
            kernel_name(RemappedIrteBits::FIELDS, "dest_mode_logical"),
            Some("dst_mode")
        );
        assert_eq!(
            find_kernel(AmdIrte128GuestBits::FIELDS, "ga_root_ptr").map(|d| d.name),
            Some("ga_root_ptr")
        );
        assert_eq!(kernel_name(RemappedIrteBits::FIELDS, "nope"), None);
        assert!(str_eq("", ""));
        assert!(!str_eq("ab", "a"));
        let d = FieldDesc::new("x", None, 3, 2, "");
        assert_eq!((d.mask(), d.hi(), d.get(0b1_1000)), (0b1_1000, 4, 3));
    }
}
