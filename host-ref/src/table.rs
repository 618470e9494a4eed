//! The host-wide index allocators of the physical interrupt remapping tables.
//!
//! Every VM of a host draws its IRTEs from the one table of the remapping unit (VT-d), or from
//! the table of the device the entry is for (AMD-Vi: each device has its own index space). An allocation
//! of `2^n` entries (an MSI block of `2^n` vectors, or a single entry with `n = 0`) is a
//! naturally aligned run: its base is a multiple of `2^n`, so the device can add the vector
//! index to the sub-handle and land on the block's own entries (VIR-ALC-H-009).
//!
//! The allocator is a bitmap of 64-bit words. Runs are at most 32 entries, so an aligned run
//! never straddles a word: finding one costs at most `size / 64` word tests, first fit from
//! index 0.

use std::collections::BTreeMap;

use crate::backend::IrteTableId;

/// Largest `log2` of a run (MSI blocks of 32).
pub const MAX_RUN_LOG2: u8 = 5;

/// A view of the allocator's state, for snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableView {
    /// Number of entries of the table.
    pub size: u32,
    /// Entries not allocated to any VM.
    pub free: u32,
    /// The allocation bitmap, bit `i % 64` of word `i / 64` set when entry `i` is in use.
    pub bitmap: Vec<u64>,
}

/// Bitmap allocator of naturally aligned runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableAllocator {
    size: u32,
    free: u32,
    words: Vec<u64>,
}

impl TableAllocator {
    /// An allocator for a table of `size` entries (`size >= 1`; the host checks ≤ 65536).
    pub(crate) fn new(size: u32) -> Self {
        let nwords = size.div_ceil(64) as usize;
        let mut words = vec![0u64; nwords];
        // Bits past the end of the table are permanently "in use".
        let tail = size % 64;
        if tail != 0
            && let Some(last) = words.last_mut()
        {
            *last = !0u64 << tail;
        }
        TableAllocator {
            size,
            free: size,
            words,
        }
    }

    /// Number of free entries.
    pub(crate) fn free(&self) -> u32 {
        self.free
    }

    /// Find the lowest free naturally aligned run of `2^log2` entries, without taking it.
    pub(crate) fn find(&self, log2: u8) -> Option<u32> {
        if log2 > MAX_RUN_LOG2 {
            return None;
        }
        let n = 1u32 << log2;
        let mask = if n == 64 { !0u64 } else { (1u64 << n) - 1 };
        for (w, &word) in self.words.iter().enumerate() {
            if word == !0u64 {
                continue;
            }
            let mut off = 0u32;
            while off < 64 {
                if word & (mask << off) == 0 {
                    return Some(w as u32 * 64 + off);
                }
                off += n;
            }
        }
        None
    }

    /// Mark `2^log2` entries from `base` in use (a run returned by [`TableAllocator::find`]).
    pub(crate) fn take(&mut self, base: u32, log2: u8) {
        self.set(base, log2, true);
    }

    /// Return a run to the free pool.
    pub(crate) fn release(&mut self, base: u32, log2: u8) {
        self.set(base, log2, false);
    }

    fn set(&mut self, base: u32, log2: u8, used: bool) {
        let n = 1u32 << log2.min(MAX_RUN_LOG2);
        let mask = ((1u64 << n) - 1) << (base % 64);
        let Some(word) = self.words.get_mut((base / 64) as usize) else {
            return;
        };
        let changed = if used { mask & !*word } else { mask & *word };
        let count = changed.count_ones();
        if used {
            *word |= mask;
            self.free = self.free.saturating_sub(count);
        } else {
            *word &= !mask;
            self.free = self.free.saturating_add(count);
        }
    }

    /// Whether entry `index` is in use.
    #[cfg(test)]
    pub(crate) fn is_used(&self, index: u32) -> bool {
        self.words
            .get((index / 64) as usize)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// The snapshot view.
    pub(crate) fn view(&self) -> TableView {
        TableView {
            size: self.size,
            free: self.free,
            bitmap: self.words.clone(),
        }
    }
}

/// The index allocators of every physical table: one for the remapping unit's table (VT-d), or
/// one per device table (AMD-Vi), each over [`IrteTable::size`](crate::IrteTable::size)
/// entries and created on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableAllocators {
    size: u32,
    tables: BTreeMap<IrteTableId, TableAllocator>,
}

impl TableAllocators {
    /// Allocators for tables of `size` entries; the unit's table exists from the start.
    pub(crate) fn new(size: u32) -> Self {
        TableAllocators {
            size,
            tables: BTreeMap::from([(IrteTableId::Unit, TableAllocator::new(size))]),
        }
    }

    /// Find the lowest free naturally aligned run of `2^log2` entries in `table`.
    pub(crate) fn find(&self, table: IrteTableId, log2: u8) -> Option<u32> {
        match self.tables.get(&table) {
            Some(a) => a.find(log2),
            None => TableAllocator::new(self.size).find(log2),
        }
    }

    /// Mark a run of `table` used.
    pub(crate) fn take(&mut self, table: IrteTableId, base: u32, log2: u8) {
        let size = self.size;
        self.tables
            .entry(table)
            .or_insert_with(|| TableAllocator::new(size))
            .take(base, log2);
    }

    /// Mark a run of `table` free.
    pub(crate) fn release(&mut self, table: IrteTableId, base: u32, log2: u8) {
        if let Some(a) = self.tables.get_mut(&table) {
            a.release(base, log2);
        }
    }

    /// Free entries of the unit's table and of every device table in use.
    pub(crate) fn free(&self) -> u32 {
        self.tables
            .values()
            .fold(0u32, |n, a| n.saturating_add(a.free()))
    }

    /// Whether entry `index` of `table` is in use.
    #[cfg(test)]
    pub(crate) fn is_used(&self, table: IrteTableId, index: u32) -> bool {
        self.tables.get(&table).is_some_and(|a| a.is_used(index))
    }

    /// The snapshot view: the unit's table, followed by every device table in use in
    /// requester-id order (sizes and free counts added, bitmaps concatenated).
    pub(crate) fn view(&self) -> TableView {
        let mut v = TableView {
            size: 0,
            free: 0,
            bitmap: Vec::new(),
        };
        for a in self.tables.values() {
            let w = a.view();
            v.size = v.size.saturating_add(w.size);
            v.free = v.free.saturating_add(w.free);
            v.bitmap.extend(w.bitmap);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allocators_keep_each_device_table_apart() {
        let (a, b) = (IrteTableId::Device(1), IrteTableId::Device(2));
        let mut t = TableAllocators::new(64);
        assert_eq!((t.find(a, 0), t.find(b, 5)), (Some(0), Some(0)));
        t.take(a, 0, 5);
        assert!(t.is_used(a, 31) && !t.is_used(b, 0) && !t.is_used(IrteTableId::Unit, 0));
        assert_eq!((t.find(a, 5), t.find(b, 5)), (Some(32), Some(0)));
        t.take(b, 0, 0);
        // The unit's table and both device tables are counted; their bitmaps concatenated.
        assert_eq!(t.free(), 64 + 32 + 63);
        let v = t.view();
        assert_eq!(
            (v.size, v.free, v.bitmap),
            (192, 159, vec![0, 0xFFFF_FFFF, 1])
        );
        t.release(a, 0, 5);
        t.release(IrteTableId::Device(9), 0, 0); // a table never used: nothing happens
        assert_eq!(t.free(), 64 + 64 + 63);
    }

    #[test]
    fn runs_are_naturally_aligned_first_fit() {
        // VIR-ALC-H-009
        let mut t = TableAllocator::new(256);
        assert_eq!(t.find(0), Some(0));
        t.take(0, 0);
        assert_eq!(
            t.find(3),
            Some(8),
            "a block of 8 skips the partly used run 0..8"
        );
        t.take(8, 3);
        assert_eq!(t.find(0), Some(1));
        assert_eq!(t.find(5), Some(32));
        assert_eq!(t.free(), 256 - 9);
        t.release(8, 3);
        assert_eq!(t.find(3), Some(8));
        assert_eq!(t.free(), 255);
    }

    #[test]
    fn table_smaller_than_a_word_and_full_table() {
        let mut t = TableAllocator::new(6);
        assert_eq!(t.find(3), None, "a run of 8 does not fit in 6 entries");
        assert_eq!(t.find(2), Some(0));
        t.take(0, 2);
        assert_eq!(t.find(2), None, "entries 4..8 run past the end");
        assert_eq!(t.find(1), Some(4));
        t.take(4, 1);
        assert_eq!(t.find(0), None);
        assert_eq!(t.free(), 0);
        assert_eq!(t.view().bitmap, vec![!0u64]);
    }

    #[test]
    fn largest_table_last_entry() {
        let mut t = TableAllocator::new(65536);
        for i in 0..1024u32 {
            t.take(i * 64, 5);
            t.take(i * 64 + 32, 5);
        }
        assert_eq!(t.free(), 0);
        t.release(65535, 0);
        assert_eq!(t.find(0), Some(65535));
        assert_eq!(t.find(1), None);
        assert!(!t.is_used(65535));
        assert!(t.is_used(65534));
    }

    proptest! {
        #[test]
        fn allocations_never_overlap_and_free_count_is_exact(ops in proptest::collection::vec((0u8..=5, any::<bool>()), 1..200)) {
            let mut t = TableAllocator::new(200);
            let mut live: Vec<(u32, u8)> = Vec::new();
            for (log2, release) in ops {
                if release && !live.is_empty() {
                    let (b, l) = live.remove(0);
                    t.release(b, l);
                } else if let Some(b) = t.find(log2) {
                    prop_assert_eq!(b % (1 << log2), 0);
                    prop_assert!(b + (1 << log2) <= 200);
                    for &(ob, ol) in &live {
                        prop_assert!(b + (1 << log2) <= ob || ob + (1 << ol) <= b);
                    }
                    t.take(b, log2);
                    live.push((b, log2));
                }
                let used: u32 = live.iter().map(|&(_, l)| 1u32 << l).sum();
                prop_assert_eq!(t.free(), 200 - used);
            }
        }
    }
}
