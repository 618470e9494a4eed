//! A 256-bit set, one bit per x86 vector (crate-private helper for IRR, ISR and vector spaces).

/// A set of vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub(crate) struct Bitmap256(pub(crate) [u64; 4]);

impl Bitmap256 {
    pub(crate) const fn contains(&self, v: u8) -> bool {
        self.0[(v / 64) as usize] & (1 << (v % 64)) != 0
    }

    pub(crate) fn set(&mut self, v: u8) {
        self.0[(v / 64) as usize] |= 1 << (v % 64);
    }

    pub(crate) fn clear(&mut self, v: u8) {
        self.0[(v / 64) as usize] &= !(1 << (v % 64));
    }

    pub(crate) fn highest(&self) -> Option<u8> {
        (0..4).rev().find_map(|i| {
            let w = self.0[i];
            (w != 0).then(|| (i as u32 * 64 + 63 - w.leading_zeros()) as u8)
        })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|&v| self.contains(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_highest_iter() {
        let mut b = Bitmap256::default();
        assert_eq!(b.highest(), None);
        for v in [0u8, 63, 64, 200, 255] {
            b.set(v);
        }
        assert_eq!(b.highest(), Some(255));
        b.clear(255);
        assert_eq!(b.highest(), Some(200));
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 63, 64, 200]);
        assert!(b.contains(64));
        assert!(!b.contains(65));
    }
}
