//! IMS in system memory: one message per queue, stored in a queue context in guest memory.
//!
//! The driver tells the device where each queue's context lives (a guest physical address); the
//! message sits at the start of the context:
//!
//! | offset | field |
//! |---|---|
//! | 0x0 | message address, low 32 bits |
//! | 0x4 | message address, high 32 bits |
//! | 0x8 | message data |
//! | 0xC | control: bit 0 mask |
//!
//! When a queue fires, the device reads the 16 bytes by DMA — at that moment, so whatever the
//! guest last wrote is what is sent — and sends the message unless the mask bit is set, in which
//! case it remembers the interrupt as pending until the context is unmasked through
//! [`Device::write_storage`](super::Device::write_storage).

use std::collections::{BTreeMap, BTreeSet};

use vir_abi::hw::msi::MsiMessage;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::error::DeviceError;

/// Size of the message part of a queue context.
pub const CONTEXT_SIZE: usize = 16;

/// Control bit 0: the queue's interrupt is masked.
pub const CONTEXT_CONTROL_MASK: u32 = 1;

/// What firing a queue came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum QueueSend {
    /// Send this message.
    Message(MsiMessage),
    /// Masked: remembered as pending.
    Masked,
    /// The DMA read of the context failed.
    DmaFault(u64),
}

/// The queue contexts of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImsQueues {
    queues: u32,
    contexts: BTreeMap<u32, u64>,
    pending: BTreeSet<u32>,
}

impl ImsQueues {
    pub(crate) fn new(queues: u32) -> Self {
        Self {
            queues,
            contexts: BTreeMap::new(),
            pending: BTreeSet::new(),
        }
    }

    /// Number of queues.
    pub const fn queues(&self) -> u32 {
        self.queues
    }

    fn check_queue(&self, queue: u32) -> Result<(), DeviceError> {
        if queue >= self.queues {
            return Err(DeviceError::IndexOutOfRange {
                kind: crate::ids::StorageKind::ImsSystem,
                index: queue,
                size: self.queues,
            });
        }
        Ok(())
    }

    /// Sets the guest physical address of `queue`'s context (a device register write by the
    /// driver, not a storage write). Clears the queue's pending interrupt.
    pub(crate) fn set_context(&mut self, queue: u32, gpa: u64) -> Result<(), DeviceError> {
        self.check_queue(queue)?;
        if gpa & 0x3 != 0 || gpa.checked_add(CONTEXT_SIZE as u64).is_none() {
            return Err(DeviceError::BadContextAddress { queue, gpa });
        }
        self.contexts.insert(queue, gpa);
        self.pending.remove(&queue);
        Ok(())
    }

    /// Forgets `queue`'s context address.
    pub(crate) fn clear_context(&mut self, queue: u32) -> Result<(), DeviceError> {
        self.check_queue(queue)?;
        self.contexts.remove(&queue);
        self.pending.remove(&queue);
        Ok(())
    }

    /// The context address of `queue`.
    pub fn context(&self, queue: u32) -> Result<u64, DeviceError> {
        self.check_queue(queue)?;
        self.contexts
            .get(&queue)
            .copied()
            .ok_or(DeviceError::NoQueueContext(queue))
    }

    /// Whether `queue` has a pending interrupt.
    pub fn pending(&self, queue: u32) -> bool {
        self.pending.contains(&queue)
    }

    fn read_context(mem: &GuestMemoryMmap, gpa: u64) -> Option<[u8; CONTEXT_SIZE]> {
        let mut b = [0u8; CONTEXT_SIZE];
        mem.read_slice(&mut b, GuestAddress(gpa)).ok()?;
        Some(b)
    }

    fn decode(b: &[u8; CONTEXT_SIZE]) -> (MsiMessage, bool) {
        let word = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        (
            MsiMessage::new(word(0), word(4), word(8)),
            word(12) & CONTEXT_CONTROL_MASK != 0,
        )
    }

    /// The message `queue`'s context holds now, and its mask bit.
    pub fn message(
        &self,
        queue: u32,
        mem: &GuestMemoryMmap,
    ) -> Result<(MsiMessage, bool), DeviceError> {
        let gpa = self.context(queue)?;
        let b = Self::read_context(mem, gpa).ok_or(DeviceError::Dma {
            gpa,
            len: CONTEXT_SIZE,
        })?;
        Ok(Self::decode(&b))
    }

    /// `queue` fires: DMA-read its context and send, or remember it as pending.
    pub(crate) fn send(
        &mut self,
        queue: u32,
        mem: &GuestMemoryMmap,
    ) -> Result<QueueSend, DeviceError> {
        let gpa = self.context(queue)?;
        let Some(b) = Self::read_context(mem, gpa) else {
            return Ok(QueueSend::DmaFault(gpa));
        };
        let (msg, masked) = Self::decode(&b);
        if masked {
            self.pending.insert(queue);
            return Ok(QueueSend::Masked);
        }
        Ok(QueueSend::Message(msg))
    }

    fn check_access(offset: u64, len: usize) -> Result<u64, DeviceError> {
        offset
            .checked_add(len as u64)
            .filter(|&end| end <= CONTEXT_SIZE as u64)
            .ok_or(DeviceError::AccessOutOfRange {
                kind: crate::ids::StorageKind::ImsSystem,
                offset,
                len,
                size: CONTEXT_SIZE as u64,
            })
    }

    /// Reads bytes of `queue`'s context.
    pub(crate) fn read(
        &self,
        queue: u32,
        offset: u64,
        buf: &mut [u8],
        mem: &GuestMemoryMmap,
    ) -> Result<(), DeviceError> {
        Self::check_access(offset, buf.len())?;
        let gpa = self.context(queue)? + offset;
        mem.read_slice(buf, GuestAddress(gpa))
            .map_err(|_| DeviceError::Dma {
                gpa,
                len: buf.len(),
            })
    }

    /// Writes bytes of `queue`'s context into guest memory; `Ok(true)` when the write unmasked a
    /// pending interrupt (now no longer pending; the caller fires the queue).
    pub(crate) fn write(
        &mut self,
        queue: u32,
        offset: u64,
        bytes: &[u8],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        Self::check_access(offset, bytes.len())?;
        let base = self.context(queue)?;
        let gpa = base + offset;
        mem.write_slice(bytes, GuestAddress(gpa))
            .map_err(|_| DeviceError::Dma {
                gpa,
                len: bytes.len(),
            })?;
        if !self.pending.contains(&queue) {
            return Ok(false);
        }
        let (_, masked) = self.message(queue, mem)?;
        if masked {
            return Ok(false);
        }
        self.pending.remove(&queue);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap()
    }

    fn ctx(lo: u32, hi: u32, data: u32, ctrl: u32) -> Vec<u8> {
        [lo, hi, data, ctrl]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    #[test]
    fn message_read_by_dma_at_fire_time() {
        let m = mem();
        let mut q = ImsQueues::new(4);
        assert_eq!(q.send(1, &m), Err(DeviceError::NoQueueContext(1)));
        q.set_context(1, 0x1000).unwrap();
        q.write(1, 0, &ctx(0xFEE0_0058, 0, 0, 0), &m).unwrap();
        assert_eq!(
            q.send(1, &m),
            Ok(QueueSend::Message(MsiMessage::new(0xFEE0_0058, 0, 0)))
        );
        // A guest write straight into memory (no storage API) is seen at the next fire.
        m.write_obj(0x1234u32, GuestAddress(0x1008)).unwrap();
        assert_eq!(
            q.send(1, &m),
            Ok(QueueSend::Message(MsiMessage::new(0xFEE0_0058, 0, 0x1234)))
        );
    }

    #[test]
    fn mask_pending_unmask() {
        let m = mem();
        let mut q = ImsQueues::new(2);
        q.set_context(0, 0x100).unwrap();
        q.write(0, 0, &ctx(0xFEE0_0018, 0, 7, 1), &m).unwrap();
        assert_eq!(q.send(0, &m), Ok(QueueSend::Masked));
        assert!(q.pending(0));
        // A write that leaves it masked releases nothing.
        assert_eq!(q.write(0, 8, &[8, 0, 0, 0], &m), Ok(false));
        assert_eq!(q.write(0, 12, &[0, 0, 0, 0], &m), Ok(true));
        assert!(!q.pending(0));
        assert_eq!(
            q.message(0, &m),
            Ok((MsiMessage::new(0xFEE0_0018, 0, 8), false))
        );
    }

    #[test]
    fn bad_addresses_and_accesses() {
        let m = mem();
        let mut q = ImsQueues::new(2);
        assert_eq!(
            q.set_context(2, 0),
            Err(DeviceError::IndexOutOfRange {
                kind: crate::ids::StorageKind::ImsSystem,
                index: 2,
                size: 2
            })
        );
        assert_eq!(
            q.set_context(0, 0x102),
            Err(DeviceError::BadContextAddress {
                queue: 0,
                gpa: 0x102
            })
        );
        assert_eq!(
            q.set_context(0, u64::MAX - 3),
            Err(DeviceError::BadContextAddress {
                queue: 0,
                gpa: u64::MAX - 3
            })
        );
        // Context outside guest memory: the fire is a DMA fault, a write is an error.
        q.set_context(0, 0x1_0000).unwrap();
        assert_eq!(q.send(0, &m), Ok(QueueSend::DmaFault(0x1_0000)));
        assert_eq!(
            q.write(0, 0, &[1], &m),
            Err(DeviceError::Dma {
                gpa: 0x1_0000,
                len: 1
            })
        );
        q.set_context(0, 0x1000).unwrap();
        assert_eq!(
            q.write(0, 14, &[0; 4], &m),
            Err(DeviceError::AccessOutOfRange {
                kind: crate::ids::StorageKind::ImsSystem,
                offset: 14,
                len: 4,
                size: 16
            })
        );
        q.clear_context(0).unwrap();
        assert_eq!(q.context(0), Err(DeviceError::NoQueueContext(0)));
    }
}
