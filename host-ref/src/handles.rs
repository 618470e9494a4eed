//! Per-VM handle namespace with generations (VIR-ALC-H-010, VIR-FRE-H-003, VIR-SEC-H-004).
//!
//! A handle is `generation << 16 | (slot + 1)`: bits 15:0 select one of at most 65535 slots
//! (never 0, so the handle is never [`HANDLE_INVALID`](vir_abi::wire::HANDLE_INVALID)), bits
//! 31:16 hold the slot's generation. Freeing an allocation bumps its slot's generation, so the
//! freed handle never names a live allocation again. A slot whose generation would wrap is
//! retired for good. Handles are looked up only in the calling VM's table, so another VM's
//! handle names nothing here, whatever its value.

/// Most slots a VM's table holds (slot numbers 1..=65535 in handle bits 15:0).
pub const MAX_SLOTS: usize = 0xffff;

/// One slot of a handle table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleSlot<T> {
    /// Generation of the handle currently (or next) issued from this slot.
    pub generation: u16,
    /// The slot's generations are used up; it is never issued again.
    pub retired: bool,
    /// The live value, if any.
    pub value: Option<T>,
}

/// A table of values named by generation-checked handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleTable<T> {
    slots: Vec<HandleSlot<T>>,
    live: usize,
}

impl<T> Default for HandleTable<T> {
    fn default() -> Self {
        HandleTable {
            slots: Vec::new(),
            live: 0,
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

    /// The slot a new value would take: the lowest empty, not retired slot, or a new one.
    fn free_slot(&self) -> Option<usize> {
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.value.is_none() && !s.retired)
        {
            return Some(i);
        }
        (self.slots.len() < MAX_SLOTS).then_some(self.slots.len())
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

    /// Store `value` under a fresh handle; gives the value back when every slot is live or
    /// retired.
    pub fn insert(&mut self, value: T) -> Result<u32, T> {
        let Some(i) = self.free_slot() else {
            return Err(value);
        };
        if i == self.slots.len() {
            self.slots.push(HandleSlot {
                generation: 0,
                retired: false,
                value: None,
            });
        }
        let slot = &mut self.slots[i];
        slot.value = Some(value);
        self.live += 1;
        Ok(encode(i, slot.generation))
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
        match slot.generation.checked_add(1) {
            Some(g) => slot.generation = g,
            None => slot.retired = true,
        }
        self.live -= 1;
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
    fn slot_retired_when_generation_would_wrap() {
        let mut t = HandleTable::new();
        let mut h = t.insert(0u8).unwrap();
        for _ in 0..0xffff {
            assert_eq!(t.remove(h), Some(0));
            h = t.insert(0u8).unwrap();
            assert_eq!(h & 0xffff, 1);
        }
        assert_eq!(h, 0xffff_0001);
        assert_eq!(t.remove(h), Some(0));
        assert!(t.slots()[0].retired);
        let next = t.insert(1u8).unwrap();
        assert_eq!(next, 0x0000_0002, "retired slot 1 is skipped");
        for old in [0x0000_0001, 0xffff_0001] {
            assert_eq!(t.get(old), None);
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
}
