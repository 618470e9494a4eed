//! Per-VM handle namespace with generations (VIR-ALC-H-010, VIR-FRE-H-003, VIR-SEC-H-004).
//!
//! A handle is `generation << 16 | (slot + 1)`: bits 15:0 select one of at most 65535 slots
//! (never 0, so the handle is never [`HANDLE_INVALID`](vir_abi::wire::HANDLE_INVALID)), bits
//! 31:16 hold the slot's generation. Freeing an allocation bumps its slot's generation, so the
//! freed handle names nothing until the slot has issued 65535 other handles. The generation
//! wraps from `0xffff` to 0: a value is issued again only after every other generation of its
//! slot has been (VIR-ALC-H-010 asks for at least 65535 other handles in between), so no slot is
//! ever lost, and a VM that has allocated and freed billions of times holds exactly the slots a
//! new VM has. Handles are looked up only in the calling VM's table, so another VM's handle names
//! nothing here, whatever its value.

/// Most slots a VM's table holds (slot numbers 1..=65535 in handle bits 15:0).
pub const MAX_SLOTS: usize = 0xffff;

/// One slot of a handle table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleSlot<T> {
    /// Generation of the handle currently (or next) issued from this slot.
    pub generation: u16,
    /// The live value, if any.
    pub value: Option<T>,
}

/// A table of values named by generation-checked handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleTable<T> {
    slots: Vec<HandleSlot<T>>,
    live: usize,
    /// The lowest slot without a value (`slots.len()` when every slot has one): a function of
    /// `slots`, kept so that finding a free slot does not rescan the live ones.
    lowest_free: usize,
}

impl<T> Default for HandleTable<T> {
    fn default() -> Self {
        HandleTable {
            slots: Vec::new(),
            live: 0,
            lowest_free: 0,
        }
    }
}

fn encode(slot: usize, generation: u16) -> u32 {
    (u32::from(generation) << 16) | (slot as u32 + 1)
}

impl<T> HandleTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot a new value would take: the lowest empty slot, or a new one.
    fn free_slot(&self) -> Option<usize> {
        (self.lowest_free < MAX_SLOTS).then_some(self.lowest_free)
    }

    /// Whether [`HandleTable::insert`] would succeed.
    pub fn can_insert(&self) -> bool {
        self.free_slot().is_some()
    }

    /// The handle [`HandleTable::insert`] would return now.
    pub fn next_handle(&self) -> Option<u32> {
        let i = self.free_slot()?;
        Some(encode(i, self.slots.get(i).map_or(0, |s| s.generation)))
    }

    /// Store `value` under a fresh handle; gives the value back when all [`MAX_SLOTS`] slots are
    /// live.
    pub fn insert(&mut self, value: T) -> Result<u32, T> {
        let Some(i) = self.free_slot() else {
            return Err(value);
        };
        if i == self.slots.len() {
            self.slots.push(HandleSlot {
                generation: 0,
                value: None,
            });
        }
        let slot = &mut self.slots[i];
        slot.value = Some(value);
        let handle = encode(i, slot.generation);
        self.live += 1;
        self.lowest_free = self
            .slots
            .iter()
            .skip(i + 1)
            .position(|s| s.value.is_none())
            .map_or(self.slots.len(), |k| i + 1 + k);
        Ok(handle)
    }

    fn index(&self, handle: u32) -> Option<usize> {
        let low = (handle & 0xffff) as usize;
        let generation = (handle >> 16) as u16;
        let i = low.checked_sub(1)?;
        let slot = self.slots.get(i)?;
        (slot.value.is_some() && slot.generation == generation).then_some(i)
    }

    /// The live value named by `handle`.
    pub fn get(&self, handle: u32) -> Option<&T> {
        let i = self.index(handle)?;
        self.slots[i].value.as_ref()
    }

    /// The live value named by `handle`, mutably.
    pub fn get_mut(&mut self, handle: u32) -> Option<&mut T> {
        let i = self.index(handle)?;
        self.slots[i].value.as_mut()
    }

    /// Remove the value named by `handle`; the handle is stale from now on.
    pub fn remove(&mut self, handle: u32) -> Option<T> {
        let i = self.index(handle)?;
        let slot = &mut self.slots[i];
        let value = slot.value.take();
        slot.generation = slot.generation.wrapping_add(1);
        self.live -= 1;
        self.lowest_free = self.lowest_free.min(i);
        value
    }

    /// Remove every value (in handle order); every handle becomes stale.
    pub fn drain(&mut self) -> Vec<(u32, T)> {
        let handles: Vec<u32> = self.iter().map(|(h, _)| h).collect();
        handles
            .into_iter()
            .filter_map(|h| self.remove(h).map(|v| (h, v)))
            .collect()
    }

    /// Live values with their handles, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.value.as_ref().map(|v| (encode(i, s.generation), v)))
    }

    /// Number of live values.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no value is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every slot, for snapshots.
    pub fn slots(&self) -> &[HandleSlot<T>] {
        &self.slots
    }
}

#[cfg(test)]
impl<T> HandleTable<T> {
    /// A table of `slots` empty slots, each at `generation`: the state of a table whose every
    /// slot has been used and freed `generation` times (about 2^32 allocations for
    /// `MAX_SLOTS` slots at `0xffff`), without making them.
    pub(crate) fn aged(slots: usize, generation: u16) -> Self {
        HandleTable {
            slots: (0..slots)
                .map(|_| HandleSlot {
                    generation,
                    value: None,
                })
                .collect(),
            live: 0,
            lowest_free: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_nonzero_and_stale_after_remove() {
        // VIR-ALC-H-010, VIR-FRE-H-003
        let mut t = HandleTable::new();
        let a = t.insert('a').unwrap();
        assert_eq!(a, 0x0000_0001);
        let b = t.insert('b').unwrap();
        assert_eq!(b, 0x0000_0002);
        assert_eq!(t.remove(a), Some('a'));
        assert_eq!(t.get(a), None);
        assert_eq!(t.remove(a), None);
        let c = t.insert('c').unwrap();
        assert_eq!(c, 0x0001_0001, "slot reused with the next generation");
        assert_eq!(
            t.get(a),
            None,
            "the stale handle does not name the new value"
        );
        assert_eq!(t.get(c), Some(&'c'));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn junk_handles_name_nothing() {
        let mut t = HandleTable::new();
        let a = t.insert(1u8).unwrap();
        for h in [
            0,
            0xffff,
            0x0001_0001,
            a | 0x8000_0000,
            0x0000_0002,
            u32::MAX,
        ] {
            assert_eq!(t.get(h), None, "{h:#x}");
            assert_eq!(t.get_mut(h), None, "{h:#x}");
        }
    }

    #[test]
    fn vir_alc_h_010_generation_wraps_and_a_value_returns_only_after_65535_others() {
        // VIR-ALC-H-010
        let mut t = HandleTable::new();
        let first = t.insert(0u8).unwrap();
        let mut h = first;
        let mut issued_since = 0u32;
        for _ in 0..0xffff {
            assert_eq!(t.remove(h), Some(0));
            h = t.insert(0u8).unwrap();
            issued_since += 1;
            assert_ne!(h, first, "reissued after only {issued_since} others");
            assert_eq!(h & 0xffff, 1);
        }
        assert_eq!(h, 0xffff_0001);
        assert_eq!(t.remove(h), Some(0));
        // The slot is not lost: it wraps to generation 0, 65535 handles after `first`.
        let again = t.insert(1u8).unwrap();
        assert_eq!(again, first);
        assert!(issued_since >= 0xffff);
        assert_eq!(t.get(0xffff_0001), None);
        assert_eq!(t.get(again), Some(&1));
    }

    #[test]
    fn vir_alc_h_013_vir_rst_h_003_aged_table_holds_as_many_as_a_new_one() {
        // VIR-ALC-H-013
        // Every slot used, freed and aged to its last generation: as after 2^32 allocations.
        let mut t = HandleTable::new();
        for i in 0..MAX_SLOTS {
            t.insert(i).unwrap();
        }
        t.drain();
        for s in &mut t.slots {
            s.generation = 0xffff;
        }
        let stale: Vec<u32> = (0..MAX_SLOTS).map(|i| encode(i, 0xffff)).collect();
        let fresh = HandleTable::<usize>::new();
        assert!(fresh.can_insert());
        for i in 0..MAX_SLOTS {
            assert!(t.can_insert(), "slot {i}");
            let h = t.insert(i).unwrap();
            assert_eq!(h, encode(i, 0xffff));
        }
        assert!(!t.can_insert());
        assert_eq!(t.len(), MAX_SLOTS);
        t.drain();
        // Generation 0xffff was issued; the next round wraps to 0 in every slot.
        assert_eq!(t.next_handle(), Some(1));
        for h in stale {
            assert_eq!(t.get(h), None);
        }
    }

    #[test]
    fn table_full_gives_value_back() {
        let mut t = HandleTable::new();
        for i in 0..MAX_SLOTS {
            assert_eq!(t.insert(i as u32), Ok(i as u32 + 1));
        }
        assert!(!t.can_insert());
        assert_eq!(t.next_handle(), None);
        assert_eq!(t.insert(7), Err(7));
        let drained = t.drain();
        assert_eq!(drained.len(), MAX_SLOTS);
        assert_eq!(drained[0], (1, 0));
        assert!(t.is_empty());
        assert_eq!(t.next_handle(), Some(0x0001_0001));
    }

    #[test]
    fn vir_alc_h_013_vir_rst_h_003_an_aged_vm_allocates_after_reset_as_a_new_one() {
        // VIR-ALC-H-013, VIR-RST-H-003
        use crate::fixture::{DEV, Fx};
        use vir_abi::feature::Features;
        use vir_abi::wire::StorageKind;
        let mut fx = Fx::negotiated();
        let fresh_quota = fx.g.query_quota(&mut fx.host, &fx.mem).unwrap();
        // Every handle value of every slot used once: about 4.3e9 allocations and frees.
        fx.host.vm_mut(fx.vm).unwrap().allocations = HandleTable::aged(MAX_SLOTS, 0xffff);
        for round in 0..3 {
            let handles: Vec<u32> = (0..16)
                .map(|i| fx.alloc(DEV, StorageKind::MSIX, 0, i))
                .collect();
            let generation = [0xffff, 0, 1][round];
            assert_eq!(handles[0], encode(0, generation), "round {round}");
            for &h in &handles {
                fx.g.free(&mut fx.host, &fx.mem, h).unwrap();
            }
            // A fresh VM's capacity: quota free, every slot issuable.
            let q = fx.g.query_quota(&mut fx.host, &fx.mem).unwrap();
            assert_eq!(q, fresh_quota, "round {round}");
            assert!(fx.host.vm(fx.vm).unwrap().allocations.can_insert());
            match round {
                0 => fx.g.reset(&mut fx.host, &fx.mem).unwrap(),
                _ => fx.host.reset_vm(fx.vm).unwrap(),
            }
            fx.negotiate(Features::V1_DEFINED);
        }
    }
}
