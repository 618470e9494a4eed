//! The VT-d posted-interrupt descriptor: 64 bytes, 64-byte aligned.
//!
//! | bits    | field |
//! |---------|-------|
//! | 255:0   | PIR, posted interrupt requests, one bit per vector |
//! | 256     | ON, outstanding notification |
//! | 257     | SN, suppress notification |
//! | 271:258 | reserved |
//! | 279:272 | NV, notification vector |
//! | 287:280 | reserved |
//! | 319:288 | NDST, notification destination (x2APIC: APIC ID; xAPIC: APIC ID in bits 15:8) |
//! | 511:320 | reserved |
//!
//! The byte layout matches Linux's `struct pi_desc` (`arch/x86/include/asm/posted_intr.h`).
//! [`PostedDescriptor`] is a *value*: hardware and the CPU update a live descriptor with locked
//! read-modify-write operations, so code sharing one must copy it in and out under its own
//! synchronization (the simulation holds it behind a lock) and must never keep a reference into
//! guest memory.

use core::fmt;

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::{ApicMode, LengthError};

/// The 256 posted-interrupt request bits, one per vector (bit `v % 64` of word `v / 64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Pir(pub [u64; 4]);

impl Pir {
    /// Whether `vector`'s bit is set.
    pub const fn contains(&self, vector: u8) -> bool {
        self.0[(vector / 64) as usize] & (1 << (vector % 64)) != 0
    }

    /// Sets `vector`'s bit.
    pub const fn set(&mut self, vector: u8) {
        self.0[(vector / 64) as usize] |= 1 << (vector % 64);
    }

    /// Clears `vector`'s bit.
    pub const fn clear(&mut self, vector: u8) {
        self.0[(vector / 64) as usize] &= !(1 << (vector % 64));
    }

    /// Whether no bit is set.
    pub const fn is_empty(&self) -> bool {
        (self.0[0] | self.0[1] | self.0[2] | self.0[3]) == 0
    }

    /// The highest pending vector (the one a local APIC would deliver first).
    pub const fn highest(&self) -> Option<u8> {
        let mut i = 4;
        while i > 0 {
            i -= 1;
            let w = self.0[i];
            if w != 0 {
                return Some((i as u32 * 64 + 63 - w.leading_zeros()) as u8);
            }
        }
        None
    }

    /// The pending vectors in ascending order.
    pub const fn vectors(&self) -> PirVectors {
        PirVectors {
            words: self.0,
            word: 0,
        }
    }
}

impl IntoIterator for Pir {
    type Item = u8;
    type IntoIter = PirVectors;

    fn into_iter(self) -> PirVectors {
        self.vectors()
    }
}

/// Iterator over the set vectors of a [`Pir`], ascending.
#[derive(Debug, Clone)]
pub struct PirVectors {
    words: [u64; 4],
    word: usize,
}

impl Iterator for PirVectors {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        while self.word < 4 {
            let w = self.words[self.word];
            if w != 0 {
                let bit = w.trailing_zeros();
                self.words[self.word] = w & (w - 1);
                return Some((self.word as u32 * 64 + bit) as u8);
            }
            self.word += 1;
        }
        None
    }
}

/// The posted-interrupt descriptor as it sits in memory (64 bytes, 64-byte aligned).
///
/// Fields are public for layout descriptors; use the accessors, which keep the reserved bits
/// untouched. [`PostedDescriptor::from_bytes`] rejects reserved bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(64))]
pub struct PostedDescriptor {
    /// Bytes 0..32 (bits 255:0): PIR, little-endian 64-bit words.
    pub pir: [U64; 4],
    /// Bytes 32..34 (bits 271:256): bit 0 ON, bit 1 SN, bits 15:2 reserved.
    pub notifications: U16,
    /// Byte 34 (bits 279:272): NV, notification vector.
    pub nv: u8,
    /// Byte 35 (bits 287:280): reserved.
    pub reserved_35: u8,
    /// Bytes 36..40 (bits 319:288): NDST, notification destination.
    pub ndst: U32,
    /// Bytes 40..64 (bits 511:320): reserved.
    pub reserved_40: [u8; 24],
}

impl Default for PostedDescriptor {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

/// ON: bit 0 of [`PostedDescriptor::notifications`] (descriptor bit 256).
const ON: u16 = 1 << 0;
/// SN: bit 1 of [`PostedDescriptor::notifications`] (descriptor bit 257).
const SN: u16 = 1 << 1;
/// Reserved bits 15:2 of [`PostedDescriptor::notifications`] (descriptor bits 271:258).
const NOTIFICATIONS_RESERVED: u16 = !(ON | SN);
/// In xAPIC mode only NDST bits 15:8 are defined.
const XAPIC_NDST_RESERVED: u32 = !0x0000_FF00;

impl PostedDescriptor {
    /// Size in bytes.
    pub const SIZE: usize = 64;
    /// Required alignment in bytes.
    pub const ALIGN: usize = 64;

    /// An all-zero descriptor.
    pub fn new() -> Self {
        Self::new_zeroed()
    }

    /// Parses 64 bytes (copying, so any alignment of `bytes` is fine) and checks the reserved
    /// bits (271:258, 287:280, 511:320).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PostedError> {
        let this = Self::read_from_bytes(bytes).map_err(|_| {
            PostedError::Length(LengthError {
                expected: Self::SIZE,
                actual: bytes.len(),
            })
        })?;
        this.check_reserved()?;
        Ok(this)
    }

    /// The 64 bytes in memory order.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.as_bytes());
        out
    }

    /// Checks that the reserved bits (271:258, 287:280, 511:320) are 0; the error names the
    /// lowest offending bit.
    pub fn check_reserved(&self) -> Result<(), PostedError> {
        let n = self.notifications.get() & NOTIFICATIONS_RESERVED;
        if n != 0 {
            return Err(PostedError::ReservedBit(256 + n.trailing_zeros() as u16));
        }
        if self.reserved_35 != 0 {
            return Err(PostedError::ReservedBit(
                280 + self.reserved_35.trailing_zeros() as u16,
            ));
        }
        for (i, &b) in self.reserved_40.iter().enumerate() {
            if b != 0 {
                return Err(PostedError::ReservedBit(
                    320 + 8 * i as u16 + b.trailing_zeros() as u16,
                ));
            }
        }
        Ok(())
    }

    /// [`PostedDescriptor::check_reserved`], plus, in xAPIC mode, NDST bits 7:0 and 31:16 = 0.
    pub fn validate(&self, mode: ApicMode) -> Result<(), PostedError> {
        self.check_reserved()?;
        let ndst = self.ndst.get();
        if mode == ApicMode::XApic && ndst & XAPIC_NDST_RESERVED != 0 {
            return Err(PostedError::XApicNdstReservedBits(ndst));
        }
        Ok(())
    }

    /// Whether `vector`'s PIR bit is set.
    pub fn pir_bit(&self, vector: u8) -> bool {
        self.pir().contains(vector)
    }

    /// Sets `vector`'s PIR bit (posting an interrupt, without touching ON).
    pub fn set_pir(&mut self, vector: u8) {
        let word = &mut self.pir[(vector / 64) as usize];
        word.set(word.get() | 1 << (vector % 64));
    }

    /// Clears `vector`'s PIR bit.
    pub fn clear_pir(&mut self, vector: u8) {
        let word = &mut self.pir[(vector / 64) as usize];
        word.set(word.get() & !(1 << (vector % 64)));
    }

    /// The PIR.
    pub fn pir(&self) -> Pir {
        Pir(self.pir.map(U64::get))
    }

    /// Returns the PIR and clears it (what a CPU does when it processes the notification).
    pub fn take_pir(&mut self) -> Pir {
        let pir = self.pir();
        self.pir = [U64::ZERO; 4];
        pir
    }

    /// ON: outstanding notification (bit 256).
    pub fn on(&self) -> bool {
        self.notifications.get() & ON != 0
    }

    /// Sets or clears ON.
    pub fn set_on(&mut self, on: bool) {
        self.set_notification(ON, on);
    }

    /// SN: suppress notification (bit 257).
    pub fn sn(&self) -> bool {
        self.notifications.get() & SN != 0
    }

    /// Sets or clears SN.
    pub fn set_sn(&mut self, sn: bool) {
        self.set_notification(SN, sn);
    }

    fn set_notification(&mut self, bit: u16, value: bool) {
        let n = self.notifications.get();
        self.notifications
            .set(if value { n | bit } else { n & !bit });
    }

    /// NV: notification vector (bits 279:272).
    pub fn nv(&self) -> u8 {
        self.nv
    }

    /// Sets NV.
    pub fn set_nv(&mut self, nv: u8) {
        self.nv = nv;
    }

    /// The raw 32-bit NDST field (bits 319:288).
    pub fn ndst_raw(&self) -> u32 {
        self.ndst.get()
    }

    /// The notification destination APIC ID: the whole field in x2APIC mode, field bits 15:8 in
    /// xAPIC mode (other bits ignored here; [`PostedDescriptor::validate`] checks them).
    pub fn ndst(&self, mode: ApicMode) -> u32 {
        let raw = self.ndst.get();
        match mode {
            ApicMode::X2Apic => raw,
            ApicMode::XApic => (raw >> 8) & 0xFF,
        }
    }

    /// Sets the notification destination APIC ID; in xAPIC mode it must be ≤ 255 and is stored
    /// in field bits 15:8.
    pub fn set_ndst(&mut self, mode: ApicMode, apic_id: u32) -> Result<(), PostedError> {
        let raw = match mode {
            ApicMode::X2Apic => apic_id,
            ApicMode::XApic if apic_id <= 0xFF => apic_id << 8,
            ApicMode::XApic => return Err(PostedError::XApicDestinationTooLarge(apic_id)),
        };
        self.ndst.set(raw);
        Ok(())
    }
}

/// Errors parsing or updating a posted-interrupt descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostedError {
    /// The byte slice was not 64 bytes long.
    Length(LengthError),
    /// A reserved bit is set; carries the lowest offending descriptor bit number.
    ReservedBit(u16),
    /// xAPIC mode: NDST (carried) has bits outside 15:8 set.
    XApicNdstReservedBits(u32),
    /// xAPIC mode: the destination APIC ID (carried) exceeds 255.
    XApicDestinationTooLarge(u32),
}

impl fmt::Display for PostedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Length(e) => write!(f, "posted-interrupt descriptor: {e}"),
            Self::ReservedBit(bit) => {
                write!(f, "posted-interrupt descriptor reserved bit {bit} is set")
            }
            Self::XApicNdstReservedBits(ndst) => write!(
                f,
                "posted-interrupt descriptor NDST {ndst:#010x} has bits outside 15:8 set in xAPIC mode"
            ),
            Self::XApicDestinationTooLarge(id) => write!(
                f,
                "notification destination APIC ID {id} exceeds 255 in xAPIC mode"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};
    use proptest::prelude::*;

    #[test]
    fn layout_matches_spec_table() {
        assert_eq!(size_of::<PostedDescriptor>(), 64);
        assert_eq!(align_of::<PostedDescriptor>(), 64);
        assert_eq!(offset_of!(PostedDescriptor, pir), 0); // bits 255:0
        assert_eq!(offset_of!(PostedDescriptor, notifications), 32); // bits 256, 257
        assert_eq!(offset_of!(PostedDescriptor, nv), 34); // bits 279:272
        assert_eq!(offset_of!(PostedDescriptor, reserved_35), 35); // bits 287:280
        assert_eq!(offset_of!(PostedDescriptor, ndst), 36); // bits 319:288
        assert_eq!(offset_of!(PostedDescriptor, reserved_40), 40); // bits 511:320
    }

    fn bit_is_set(bytes: &[u8; 64], bit: usize) -> bool {
        bytes[bit / 8] & (1 << (bit % 8)) != 0
    }

    fn only_bits(d: &PostedDescriptor) -> impl Iterator<Item = usize> + '_ {
        let bytes = d.to_bytes();
        (0..512).filter(move |&b| bit_is_set(&bytes, b))
    }

    #[test]
    fn pir_vector_v_at_bit_v() {
        for v in [0u8, 1, 63, 64, 0x41, 0xEF, 255] {
            let mut d = PostedDescriptor::new();
            d.set_pir(v);
            assert!(
                only_bits(&d).eq([v as usize]),
                "vector {v} at descriptor bit {v}"
            );
            assert!(d.pir_bit(v));
            d.clear_pir(v);
            assert_eq!(d, PostedDescriptor::new());
        }
    }

    #[test]
    fn on_at_bit_256_sn_at_bit_257() {
        let mut d = PostedDescriptor::new();
        d.set_on(true);
        assert!(only_bits(&d).eq([256]));
        assert!(d.on() && !d.sn());
        let mut d = PostedDescriptor::new();
        d.set_sn(true);
        assert!(only_bits(&d).eq([257]));
        assert!(d.sn() && !d.on());
        d.set_sn(false);
        assert_eq!(d, PostedDescriptor::new());
    }

    #[test]
    fn nv_at_bits_279_272() {
        let mut d = PostedDescriptor::new();
        d.set_nv(0xF2);
        assert_eq!(d.to_bytes()[34], 0xF2);
        assert!(only_bits(&d).eq([273, 276, 277, 278, 279]));
        assert_eq!(d.nv(), 0xF2);
    }

    #[test]
    fn x2apic_ndst_at_bits_319_288() {
        let mut d = PostedDescriptor::new();
        d.set_ndst(ApicMode::X2Apic, 0x1234_5678).unwrap();
        assert_eq!(&d.to_bytes()[36..40], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(d.ndst(ApicMode::X2Apic), 0x1234_5678);
    }

    #[test]
    fn xapic_ndst_at_field_bits_15_8_descriptor_bits_303_296() {
        let mut d = PostedDescriptor::new();
        d.set_ndst(ApicMode::XApic, 0x80).unwrap();
        assert_eq!(d.ndst_raw(), 0x8000);
        assert!(only_bits(&d).eq([303]));
        assert_eq!(d.ndst(ApicMode::XApic), 0x80);
        assert_eq!(d.validate(ApicMode::XApic), Ok(()));
        assert_eq!(
            d.set_ndst(ApicMode::XApic, 256),
            Err(PostedError::XApicDestinationTooLarge(256))
        );
        d.ndst.set(0x8001);
        assert_eq!(
            d.validate(ApicMode::XApic),
            Err(PostedError::XApicNdstReservedBits(0x8001))
        );
        assert_eq!(d.validate(ApicMode::X2Apic), Ok(()));
    }

    #[test]
    fn golden_linux_pi_desc() {
        // ON set, NV = 0xF2 (POSTED_INTR_VECTOR), NDST = x2APIC 3, vector 0x41 pending.
        let mut d = PostedDescriptor::new();
        d.set_pir(0x41);
        d.set_on(true);
        d.set_nv(0xF2);
        d.set_ndst(ApicMode::X2Apic, 3).unwrap();
        let bytes = d.to_bytes();
        let control = u64::from_le_bytes(bytes[32..40].try_into().unwrap());
        // Linux's pi_desc.control: notifications 15:0, nv 23:16, rsvd 31:24, ndst 63:32.
        assert_eq!(control, 0x0000_0003_00F2_0001);
        let pir1 = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        assert_eq!(pir1, 1 << 1);
        assert_eq!(PostedDescriptor::from_bytes(&bytes), Ok(d));
    }

    #[test]
    fn take_pir_returns_and_clears() {
        let mut d = PostedDescriptor::new();
        for v in [0x20u8, 0x41, 0xEF] {
            d.set_pir(v);
        }
        let pir = d.take_pir();
        assert!(pir.vectors().eq([0x20, 0x41, 0xEF]));
        assert_eq!(pir.highest(), Some(0xEF));
        assert!(d.pir().is_empty());
        assert_eq!(Pir::default().highest(), None);
        assert_eq!(Pir::default().vectors().next(), None);
    }

    #[test]
    fn reserved_bits_rejected_with_lowest_bit() {
        for bit in [258usize, 271, 280, 287, 320, 400, 511] {
            let mut bytes = [0u8; 64];
            bytes[bit / 8] |= 1 << (bit % 8);
            assert_eq!(
                PostedDescriptor::from_bytes(&bytes),
                Err(PostedError::ReservedBit(bit as u16)),
                "reserved bit {bit}"
            );
        }
        let mut bytes = [0u8; 64];
        bytes[63] = 0x80;
        bytes[45] = 0x10;
        assert_eq!(
            PostedDescriptor::from_bytes(&bytes),
            Err(PostedError::ReservedBit(45 * 8 + 4))
        );
    }

    #[test]
    fn from_bytes_checks_length() {
        assert_eq!(
            PostedDescriptor::from_bytes(&[0u8; 63]),
            Err(PostedError::Length(LengthError {
                expected: 64,
                actual: 63
            }))
        );
        assert_eq!(
            PostedDescriptor::from_bytes(&[0u8; 65]),
            Err(PostedError::Length(LengthError {
                expected: 64,
                actual: 65
            }))
        );
    }

    proptest! {
        #[test]
        fn descriptor_round_trip(words in any::<[u64; 4]>(), on in any::<bool>(), sn in any::<bool>(),
                                 nv in any::<u8>(), ndst in any::<u32>(), x2 in any::<bool>()) {
            let mode = if x2 { ApicMode::X2Apic } else { ApicMode::XApic };
            let ndst = if x2 { ndst } else { ndst & 0xFF };
            let mut d = PostedDescriptor::new();
            for v in Pir(words).vectors() {
                d.set_pir(v);
            }
            d.set_on(on);
            d.set_sn(sn);
            d.set_nv(nv);
            d.set_ndst(mode, ndst).unwrap();
            prop_assert_eq!(d.validate(mode), Ok(()));
            let back = PostedDescriptor::from_bytes(&d.to_bytes()).unwrap();
            prop_assert_eq!(back.pir(), Pir(words));
            prop_assert_eq!((back.on(), back.sn(), back.nv(), back.ndst(mode)), (on, sn, nv, ndst));
            prop_assert_eq!(back, d);
        }

        #[test]
        fn pir_oracle(vectors in proptest::collection::btree_set(any::<u8>(), 0..40)) {
            let mut pir = Pir::default();
            for &v in &vectors {
                pir.set(v);
            }
            prop_assert!(pir.vectors().eq(vectors.iter().copied()));
            prop_assert_eq!(pir.highest(), vectors.iter().next_back().copied());
            for v in 0..=255u8 {
                prop_assert_eq!(pir.contains(v), vectors.contains(&v));
            }
        }

        #[test]
        fn from_bytes_total_and_exact(bytes in any::<[u8; 64]>(), clean in any::<bool>()) {
            let mut bytes = bytes;
            if clean {
                bytes[32] &= 0x03;
                bytes[33] = 0;
                bytes[35] = 0;
                bytes[40..].fill(0);
            }
            // Oracle: the lowest set reserved bit.
            let reserved = (258..272).chain(280..288).chain(320..512);
            let expected = reserved.into_iter().find(|&b| bit_is_set(&bytes, b));
            match PostedDescriptor::from_bytes(&bytes) {
                Ok(d) => {
                    prop_assert_eq!(expected, None);
                    prop_assert_eq!(d.to_bytes(), bytes);
                }
                Err(PostedError::ReservedBit(b)) => prop_assert_eq!(Some(b as usize), expected),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}
