//! The byte format of fuzz inputs: a reader over [`arbitrary::Unstructured`] and its inverse.
//!
//! Every target reads its input with [`Input`]: fixed-width little-endian integers taken from the
//! front of the data (`arbitrary`'s encoding of `u8`..`u64`), and zeros once the data is used up,
//! so every byte string is a valid input and a short one simply means "zeros from here on".
//! [`Encoder`] writes the same format, which is how the seed corpora of [`crate::corpus`] are
//! built from readable descriptions instead of opaque blobs.

use arbitrary::Unstructured;

/// Reads a fuzz input front to back; never fails, yields zeros past the end.
#[derive(Debug)]
pub struct Input<'a> {
    u: Unstructured<'a>,
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input {
            u: Unstructured::new(data),
        }
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.u.len()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        self.u.arbitrary().unwrap_or(0)
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        self.u.arbitrary().unwrap_or(0)
    }

    /// The next four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        self.u.arbitrary().unwrap_or(0)
    }

    /// The next eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        self.u.arbitrary().unwrap_or(0)
    }

    /// The next sixteen bytes, little-endian.
    pub fn u128(&mut self) -> u128 {
        self.u.arbitrary().unwrap_or(0)
    }

    /// The next byte's low bit.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// The next `N` bytes, zero-padded past the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let take = N.min(self.u.len());
        if let Ok(b) = self.u.bytes(take) {
            out[..take].copy_from_slice(b);
        }
        out
    }

    /// The next byte reduced modulo `n` (`n` = 0 gives 0).
    pub fn below(&mut self, n: usize) -> usize {
        let b = usize::from(self.u8());
        b.checked_rem(n).unwrap_or(0)
    }
}

/// Writes bytes that [`Input`] reads back as the same values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    /// An empty input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    /// Append a little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Append a little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Append a little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Append a little-endian `u128`.
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Append a bool (one byte).
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// Append raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }

    /// The input built so far.
    pub fn finish(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_and_input_agree() {
        let bytes = Encoder::new()
            .u8(7)
            .u16(0x1234)
            .u32(0xdead_beef)
            .u64(0x0102_0304_0506_0708)
            .u128(u128::MAX - 1)
            .bool(true)
            .bytes(&[9, 8, 7])
            .finish();
        let mut i = Input::new(&bytes);
        assert_eq!(i.u8(), 7);
        assert_eq!(i.u16(), 0x1234);
        assert_eq!(i.u32(), 0xdead_beef);
        assert_eq!(i.u64(), 0x0102_0304_0506_0708);
        assert_eq!(i.u128(), u128::MAX - 1);
        assert!(i.bool());
        assert_eq!(i.array::<4>(), [9, 8, 7, 0], "zero-padded past the end");
        assert!(i.is_empty());
        assert_eq!((i.u64(), i.below(5)), (0, 0), "zeros once exhausted");
    }

    #[test]
    fn short_integers_are_zero_padded() {
        let mut i = Input::new(&[0x34, 0x12]);
        assert_eq!(i.u32(), 0x1234);
        assert_eq!(i.remaining(), 0);
        let mut j = Input::new(&[200]);
        assert_eq!(j.below(7), 200 % 7);
        assert_eq!(Input::new(&[5]).below(0), 0);
    }
}
