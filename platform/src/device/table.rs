//! A table of 16-byte message entries: the MSI-X table in a BAR, and the IMS array in device
//! memory (IDXD-style IMS entries share the MSI-X entry layout).
//!
//! | offset | field |
//! |---|---|
//! | 0x0 | message address, low 32 bits |
//! | 0x4 | message address, high 32 bits |
//! | 0x8 | message data (32 bits) |
//! | 0xC | vector control: bit 0 mask; bits 31:1 reserved, read as 0 |
//!
//! Entries come out of reset masked. An entry that fires while masked (or while the whole
//! function is masked, for MSI-X) sets its pending bit instead; unmasking it sends the message
//! and clears the bit.

use vir_abi::hw::msi::MsiMessage;

use super::error::DeviceError;
use crate::ids::StorageKind;

/// Size of one entry in bytes.
pub const ENTRY_SIZE: usize = 16;

/// Vector control bit 0: the entry is masked.
pub const VECTOR_CONTROL_MASK: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    address_lo: u32,
    address_hi: u32,
    data: u32,
    masked: bool,
    pending: bool,
}

/// What firing an entry came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EntrySend {
    /// Send this message.
    Message(MsiMessage),
    /// Masked: the pending bit is set.
    Masked,
}

/// A table of message entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTable {
    kind: StorageKind,
    entries: Vec<Entry>,
}

impl MessageTable {
    /// A table of `len` entries, all zero and masked, reporting errors as storage `kind`.
    pub(crate) fn new(kind: StorageKind, len: u32) -> Self {
        let e = Entry {
            address_lo: 0,
            address_hi: 0,
            data: 0,
            masked: true,
            pending: false,
        };
        Self {
            kind,
            entries: vec![e; len as usize],
        }
    }

    /// Number of entries.
    pub fn len(&self) -> u32 {
        // Tables are created with a u32 length.
        self.entries.len() as u32
    }

    /// Whether the table has no entries (never true for a configured table).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE as u64
    }

    fn entry(&self, index: u32) -> Result<&Entry, DeviceError> {
        self.entries
            .get(index as usize)
            .ok_or(DeviceError::IndexOutOfRange {
                kind: self.kind,
                index,
                size: self.len(),
            })
    }

    fn entry_mut(&mut self, index: u32) -> Result<&mut Entry, DeviceError> {
        let (kind, size) = (self.kind, self.len());
        self.entries
            .get_mut(index as usize)
            .ok_or(DeviceError::IndexOutOfRange { kind, index, size })
    }

    /// The message stored in entry `index`.
    pub fn message(&self, index: u32) -> Result<MsiMessage, DeviceError> {
        let e = self.entry(index)?;
        Ok(MsiMessage::new(e.address_lo, e.address_hi, e.data))
    }

    /// Whether entry `index` is masked.
    pub fn masked(&self, index: u32) -> Result<bool, DeviceError> {
        Ok(self.entry(index)?.masked)
    }

    /// Whether entry `index` has its pending bit set.
    pub fn pending(&self, index: u32) -> Result<bool, DeviceError> {
        Ok(self.entry(index)?.pending)
    }

    fn check_access(&self, offset: u64, len: usize) -> Result<(u64, u64), DeviceError> {
        let size = self.size();
        let bad = DeviceError::AccessOutOfRange {
            kind: self.kind,
            offset,
            len,
            size,
        };
        let end = offset.checked_add(len as u64).ok_or(bad)?;
        if end > size {
            return Err(bad);
        }
        Ok((offset, end))
    }

    fn entry_bytes(e: &Entry) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[0..4].copy_from_slice(&e.address_lo.to_le_bytes());
        b[4..8].copy_from_slice(&e.address_hi.to_le_bytes());
        b[8..12].copy_from_slice(&e.data.to_le_bytes());
        b[12..16].copy_from_slice(&u32::from(e.masked).to_le_bytes());
        b
    }

    /// Reads raw bytes of the table.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let (start, _) = self.check_access(offset, buf.len())?;
        for (i, out) in buf.iter_mut().enumerate() {
            let at = start + i as u64;
            let e = &self.entries[(at / ENTRY_SIZE as u64) as usize];
            *out = Self::entry_bytes(e)[(at % ENTRY_SIZE as u64) as usize];
        }
        Ok(())
    }

    /// Writes raw bytes of the table (any content; reserved vector-control bits are dropped).
    /// Returns the entries the write unmasked while pending; their pending bits are cleared and
    /// the caller sends them, unless `hold` (the function is masked or disabled), in which case
    /// they stay pending.
    pub(crate) fn write(
        &mut self,
        offset: u64,
        bytes: &[u8],
        hold: bool,
    ) -> Result<Vec<u32>, DeviceError> {
        let (start, end) = self.check_access(offset, bytes.len())?;
        let first = (start / ENTRY_SIZE as u64) as usize;
        let last = if end == start {
            first
        } else {
            ((end - 1) / ENTRY_SIZE as u64) as usize + 1
        };
        let mut released = Vec::new();
        for idx in first..last {
            let base = idx as u64 * ENTRY_SIZE as u64;
            let e = &mut self.entries[idx];
            let mut img = Self::entry_bytes(e);
            for (i, b) in bytes.iter().enumerate() {
                let at = start + i as u64;
                if at >= base && at < base + ENTRY_SIZE as u64 {
                    img[(at - base) as usize] = *b;
                }
            }
            let word = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
            e.address_lo = word(0);
            e.address_hi = word(4);
            e.data = word(8);
            let was_masked = e.masked;
            e.masked = word(12) & VECTOR_CONTROL_MASK != 0;
            if was_masked && !e.masked && e.pending && !hold {
                e.pending = false;
                // `idx` < len, which fits u32.
                released.push(idx as u32);
            }
        }
        Ok(released)
    }

    /// Stores `msg` in entry `index` (address and data, mask untouched).
    pub(crate) fn set_message(&mut self, index: u32, msg: MsiMessage) -> Result<(), DeviceError> {
        let e = self.entry_mut(index)?;
        e.address_lo = msg.address_lo;
        e.address_hi = msg.address_hi;
        e.data = msg.data;
        Ok(())
    }

    /// Masks or unmasks entry `index`; `Ok(true)` when the unmask released a pending interrupt
    /// (pending bit cleared, the caller sends it), never when `hold`.
    pub(crate) fn set_masked(
        &mut self,
        index: u32,
        masked: bool,
        hold: bool,
    ) -> Result<bool, DeviceError> {
        let e = self.entry_mut(index)?;
        let release = e.masked && !masked && e.pending && !hold;
        e.masked = masked;
        if release {
            e.pending = false;
        }
        Ok(release)
    }

    /// Releases every pending, unmasked entry (the function mask was cleared): pending bits
    /// cleared, indices returned.
    pub(crate) fn release_unmasked(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if e.pending && !e.masked {
                e.pending = false;
                out.push(i as u32);
            }
        }
        out
    }

    /// Entry `index` fires; `function_masked` masks every entry (MSI-X function mask).
    pub(crate) fn send(
        &mut self,
        index: u32,
        function_masked: bool,
    ) -> Result<EntrySend, DeviceError> {
        let e = self.entry_mut(index)?;
        if e.masked || function_masked {
            e.pending = true;
            return Ok(EntrySend::Masked);
        }
        Ok(EntrySend::Message(MsiMessage::new(
            e.address_lo,
            e.address_hi,
            e.data,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: u32) -> MessageTable {
        MessageTable::new(StorageKind::MsiX, n)
    }

    fn entry_bytes(lo: u32, hi: u32, data: u32, ctrl: u32) -> Vec<u8> {
        [lo, hi, data, ctrl]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    #[test]
    fn entries_reset_masked_and_layout_is_lo_hi_data_control() {
        let mut t = table(4);
        assert_eq!(t.size(), 64);
        assert!((0..4).all(|i| t.masked(i) == Ok(true)));
        t.write(16, &entry_bytes(0xFEE0_0018, 0, 0x5, 0xFFFF_FFFE), false)
            .unwrap();
        assert_eq!(t.message(1), Ok(MsiMessage::new(0xFEE0_0018, 0, 5)));
        assert_eq!(t.masked(1), Ok(false));
        let mut b = [0u8; 16];
        t.read(16, &mut b).unwrap();
        // Reserved vector-control bits read as zero.
        assert_eq!(b.to_vec(), entry_bytes(0xFEE0_0018, 0, 5, 0));
        assert_eq!(
            t.write(60, &[0; 8], false),
            Err(DeviceError::AccessOutOfRange {
                kind: StorageKind::MsiX,
                offset: 60,
                len: 8,
                size: 64
            })
        );
        assert_eq!(
            t.message(4),
            Err(DeviceError::IndexOutOfRange {
                kind: StorageKind::MsiX,
                index: 4,
                size: 4
            })
        );
    }

    #[test]
    fn unaligned_write_spanning_two_entries() {
        let mut t = table(2);
        // Bytes 12..20: control of entry 0 (unmask) and address_lo of entry 1.
        t.write(12, &[0, 0, 0, 0, 0x18, 0x00, 0xE0, 0xFE], false)
            .unwrap();
        assert_eq!(t.masked(0), Ok(false));
        assert_eq!(t.message(1).unwrap().address_lo, 0xFEE0_0018);
        assert_eq!(t.masked(1), Ok(true));
    }

    #[test]
    fn masked_fire_sets_pending_unmask_releases() {
        let mut t = table(2);
        t.set_message(0, MsiMessage::new(0xFEE0_0018, 0, 0))
            .unwrap();
        assert_eq!(t.send(0, false), Ok(EntrySend::Masked));
        assert_eq!(t.pending(0), Ok(true));
        // Unmask while held (function masked): stays pending.
        assert_eq!(t.set_masked(0, false, true), Ok(false));
        assert_eq!(t.pending(0), Ok(true));
        assert_eq!(t.release_unmasked(), vec![0]);
        assert_eq!(t.pending(0), Ok(false));
        // Function mask makes an unmasked entry pending.
        assert_eq!(t.send(0, true), Ok(EntrySend::Masked));
        assert_eq!(t.release_unmasked(), vec![0]);
        assert_eq!(
            t.send(0, false),
            Ok(EntrySend::Message(MsiMessage::new(0xFEE0_0018, 0, 0)))
        );
        // Raw control write unmasking a pending entry releases it.
        t.set_masked(1, true, false).unwrap();
        assert_eq!(t.send(1, false), Ok(EntrySend::Masked));
        assert_eq!(t.write(16 + 12, &[0, 0, 0, 0], false), Ok(vec![1]));
        // Re-unmasking an unmasked entry releases nothing.
        assert_eq!(t.write(16 + 12, &[0, 0, 0, 0], false), Ok(vec![]));
    }
}
