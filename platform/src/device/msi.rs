//! The PCI MSI capability: one message for a block of 1–32 vectors.
//!
//! Register layout (offsets within the capability, little-endian):
//!
//! | offset | 32-bit address | 64-bit address | register |
//! |---|---|---|---|
//! | 0x00 | ✓ | ✓ | capability id (0x05), next pointer — read-only |
//! | 0x02 | ✓ | ✓ | message control: 0 enable, 3:1 MMC (ro), 6:4 MME, 7 64-bit (ro), 8 per-vector masking (ro) |
//! | 0x04 | ✓ | ✓ | message address, bits 1:0 hard-wired 0 |
//! | —    | — | 0x08 | message upper address |
//! | data | 0x08 | 0x0C | message data (16 bits) |
//! | mask | 0x0C | 0x10 | mask bits (per-vector masking only) |
//! | pending | 0x10 | 0x14 | pending bits, read-only (per-vector masking only) |
//!
//! Sending vector `i` of the block, the function replaces the low MME bits of the data with `i`
//! (PCI: "the function modifies the low order bits of the message data"), so a block whose data
//! has those bits clear — as Linux and VT-d's sub-handles require — sends `data + i`. The 32-bit
//! data word written has bits 31:16 zero. A value of MME above MMC is stored as MMC (PCI leaves
//! the result undefined).

use vir_abi::hw::msi::MsiMessage;

use super::error::{ConfigError, DeviceError};
use crate::ids::StorageKind;

/// The MSI capability id.
pub const MSI_CAP_ID: u8 = 0x05;

/// The largest block: 2^5 = 32 vectors.
pub const MAX_VECTORS_LOG2: u8 = 5;

/// What the function implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiConfig {
    /// Multiple message capable: the function supports 2^this vectors (0..=5).
    pub vectors_log2: u8,
    /// Per-vector masking capable (mask and pending bits).
    pub per_vector_masking: bool,
    /// 64-bit address capable.
    pub address_64bit: bool,
}

/// What sending a vector came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Send {
    /// Send this message.
    Message(MsiMessage),
    /// Masked: the pending bit is set.
    Masked,
    /// MSI is disabled.
    Disabled,
}

/// The state of an MSI capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsiCapability {
    config: MsiConfig,
    enable: bool,
    mme: u8,
    address_lo: u32,
    address_hi: u32,
    data: u16,
    mask: u32,
    pending: u32,
}

struct Layout {
    address_hi: Option<usize>,
    data: usize,
    mask: Option<usize>,
    pending: Option<usize>,
    size: usize,
}

impl MsiCapability {
    /// A capability in its reset state (disabled, MME 0, registers zero).
    pub fn new(config: MsiConfig) -> Result<Self, ConfigError> {
        if config.vectors_log2 > MAX_VECTORS_LOG2 {
            return Err(ConfigError::MsiVectorsLog2(config.vectors_log2));
        }
        Ok(Self {
            config,
            enable: false,
            mme: 0,
            address_lo: 0,
            address_hi: 0,
            data: 0,
            mask: 0,
            pending: 0,
        })
    }

    const fn layout(&self) -> Layout {
        let (address_hi, data) = if self.config.address_64bit {
            (Some(0x08), 0x0C)
        } else {
            (None, 0x08)
        };
        if self.config.per_vector_masking {
            Layout {
                address_hi,
                data,
                mask: Some(data + 4),
                pending: Some(data + 8),
                size: data + 12,
            }
        } else {
            Layout {
                address_hi,
                data,
                mask: None,
                pending: None,
                size: data + 2,
            }
        }
    }

    /// The function's configuration.
    pub const fn config(&self) -> MsiConfig {
        self.config
    }

    /// Size of the capability in bytes.
    pub const fn size(&self) -> usize {
        self.layout().size
    }

    /// Vectors the function supports (2^MMC).
    pub const fn capable_vectors(&self) -> u32 {
        1 << self.config.vectors_log2
    }

    /// Vectors enabled (2^MME).
    pub const fn enabled_vectors(&self) -> u32 {
        1 << self.mme
    }

    /// MSI enable.
    pub const fn enabled(&self) -> bool {
        self.enable
    }

    /// Multiple message enable (log2 of the vectors enabled).
    pub const fn mme(&self) -> u8 {
        self.mme
    }

    /// The block's message as programmed (data bits 31:16 zero).
    pub const fn message(&self) -> MsiMessage {
        MsiMessage::new(self.address_lo, self.address_hi, self.data as u32)
    }

    /// Mask bits (0 without per-vector masking).
    pub const fn mask_bits(&self) -> u32 {
        self.mask
    }

    /// Pending bits.
    pub const fn pending_bits(&self) -> u32 {
        self.pending
    }

    const fn implemented_bits(&self) -> u32 {
        if self.config.vectors_log2 >= 5 {
            u32::MAX
        } else {
            (1 << self.capable_vectors()) - 1
        }
    }

    fn control(&self) -> u16 {
        u16::from(self.enable)
            | u16::from(self.config.vectors_log2) << 1
            | u16::from(self.mme) << 4
            | u16::from(self.config.address_64bit) << 7
            | u16::from(self.config.per_vector_masking) << 8
    }

    fn image(&self) -> [u8; 0x18] {
        let l = self.layout();
        let mut img = [0u8; 0x18];
        img[0] = MSI_CAP_ID;
        img[2..4].copy_from_slice(&self.control().to_le_bytes());
        img[4..8].copy_from_slice(&self.address_lo.to_le_bytes());
        if let Some(o) = l.address_hi {
            img[o..o + 4].copy_from_slice(&self.address_hi.to_le_bytes());
        }
        img[l.data..l.data + 2].copy_from_slice(&self.data.to_le_bytes());
        if let Some(o) = l.mask {
            img[o..o + 4].copy_from_slice(&self.mask.to_le_bytes());
        }
        if let Some(o) = l.pending {
            img[o..o + 4].copy_from_slice(&self.pending.to_le_bytes());
        }
        img
    }

    fn check_access(&self, offset: u64, len: usize) -> Result<(usize, usize), DeviceError> {
        let size = self.size();
        let bad = DeviceError::AccessOutOfRange {
            kind: StorageKind::Msi,
            offset,
            len,
            size: size as u64,
        };
        let start = usize::try_from(offset).map_err(|_| bad)?;
        let end = start.checked_add(len).ok_or(bad)?;
        if end > size {
            return Err(bad);
        }
        Ok((start, end))
    }

    /// Reads configuration bytes of the capability.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let (start, end) = self.check_access(offset, buf.len())?;
        buf.copy_from_slice(&self.image()[start..end]);
        Ok(())
    }

    /// Writes configuration bytes; read-only bits keep their value. Returns the vectors whose
    /// pending bit the write released by unmasking them (their pending bits are now clear; the
    /// caller sends them).
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<Vec<u32>, DeviceError> {
        let (start, end) = self.check_access(offset, bytes.len())?;
        let l = self.layout();
        let mut img = self.image();
        img[start..end].copy_from_slice(bytes);
        let word = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
        let control = u16::from_le_bytes([img[2], img[3]]);
        self.enable = control & 1 != 0;
        self.mme = (((control >> 4) & 0x7) as u8).min(self.config.vectors_log2);
        self.address_lo = word(4) & !0x3;
        if let Some(o) = l.address_hi {
            self.address_hi = word(o);
        }
        self.data = u16::from_le_bytes([img[l.data], img[l.data + 1]]);
        let mut released = Vec::new();
        if let Some(o) = l.mask {
            let new_mask = word(o) & self.implemented_bits();
            let unmasked = self.mask & !new_mask & self.pending;
            self.mask = new_mask;
            self.pending &= !unmasked;
            released.extend((0..32).filter(|i| unmasked & (1 << i) != 0));
        }
        Ok(released)
    }

    /// The message vector `index` of the block is sent with: the low MME bits of the data
    /// replaced by `index`.
    pub fn vector_message(&self, index: u32) -> Result<MsiMessage, DeviceError> {
        let enabled = self.enabled_vectors();
        if index >= self.capable_vectors() {
            return Err(DeviceError::IndexOutOfRange {
                kind: StorageKind::Msi,
                index,
                size: self.capable_vectors(),
            });
        }
        if index >= enabled {
            return Err(DeviceError::MsiVectorNotEnabled { index, enabled });
        }
        let data = (u32::from(self.data) & !(enabled - 1)) | index;
        Ok(MsiMessage::new(self.address_lo, self.address_hi, data))
    }

    /// The function raises vector `index`.
    pub(crate) fn send(&mut self, index: u32) -> Result<Send, DeviceError> {
        let msg = self.vector_message(index)?;
        if !self.enable {
            return Ok(Send::Disabled);
        }
        if self.mask & (1 << index) != 0 {
            self.pending |= 1 << index;
            return Ok(Send::Masked);
        }
        Ok(Send::Message(msg))
    }

    /// Offset of the mask bits register, with per-vector masking.
    pub const fn mask_offset(&self) -> Option<usize> {
        self.layout().mask
    }

    /// Offset of the message data register.
    pub const fn data_offset(&self) -> usize {
        self.layout().data
    }

    /// Offset of the upper address register, for a 64-bit capability.
    pub const fn address_hi_offset(&self) -> Option<usize> {
        self.layout().address_hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(log2: u8, pvm: bool, a64: bool) -> MsiCapability {
        MsiCapability::new(MsiConfig {
            vectors_log2: log2,
            per_vector_masking: pvm,
            address_64bit: a64,
        })
        .unwrap()
    }

    fn program(c: &mut MsiCapability, lo: u32, data: u16, mme: u8) {
        c.write(4, &lo.to_le_bytes()).unwrap();
        let d = c.data_offset() as u64;
        c.write(d, &data.to_le_bytes()).unwrap();
        let control = 1u16 | u16::from(mme) << 4;
        c.write(2, &control.to_le_bytes()).unwrap();
    }

    #[test]
    fn layout_sizes_and_offsets() {
        assert_eq!(cap(0, false, false).size(), 0x0A);
        assert_eq!(cap(0, false, true).size(), 0x0E);
        assert_eq!(cap(0, true, false).size(), 0x14);
        assert_eq!(cap(0, true, true).size(), 0x18);
        let c = cap(3, true, true);
        assert_eq!(
            (c.data_offset(), c.mask_offset(), c.address_hi_offset()),
            (0x0C, Some(0x10), Some(0x08))
        );
        let mut b = [0u8; 4];
        c.read(0, &mut b).unwrap();
        // id 0x05, next 0, control: MMC 3 (bits 3:1), 64-bit (bit 7), PVM (bit 8).
        assert_eq!(b, [0x05, 0x00, 0x86, 0x01]);
        assert_eq!(
            MsiCapability::new(MsiConfig {
                vectors_log2: 6,
                per_vector_masking: false,
                address_64bit: false
            }),
            Err(ConfigError::MsiVectorsLog2(6))
        );
    }

    #[test]
    fn read_only_bits_keep_their_value() {
        let mut c = cap(2, false, false);
        // Try to set MMC, 64-bit and PVM; set enable and MME 7 (clamped to MMC 2).
        c.write(2, &[0xFF, 0xFF]).unwrap();
        assert!(c.enabled());
        assert_eq!(c.mme(), 2);
        let mut b = [0u8; 2];
        c.read(2, &mut b).unwrap();
        assert_eq!(u16::from_le_bytes(b), 1 | 2 << 1 | 2 << 4);
        // Address bits 1:0 are hard-wired zero; id is read-only.
        c.write(0, &[0xAA, 0xBB, 0x01, 0x00, 0xFF, 0x00, 0xE0, 0xFE])
            .unwrap();
        assert_eq!(c.message().address_lo, 0xFEE0_00FC);
        let mut id = [0u8; 2];
        c.read(0, &mut id).unwrap();
        assert_eq!(id, [0x05, 0x00]);
        assert_eq!(
            c.write(0x09, &[0, 0]),
            Err(DeviceError::AccessOutOfRange {
                kind: StorageKind::Msi,
                offset: 9,
                len: 2,
                size: 0x0A
            })
        );
        assert_eq!(
            c.read(u64::MAX, &mut [0u8; 1]),
            Err(DeviceError::AccessOutOfRange {
                kind: StorageKind::Msi,
                offset: u64::MAX,
                len: 1,
                size: 0x0A
            })
        );
    }

    // VIR-ACT-H-009 (device side): every vector of an MSI block sends the block's data with the
    // vector index in the low MME bits — on VT-d the sub-handle.
    #[test]
    fn multi_vector_index_in_low_data_bits() {
        let mut c = cap(5, false, true);
        program(&mut c, 0xFEE0_0218, 0x0000, 3); // SHV = 1 remappable, 8 vectors
        assert_eq!(c.enabled_vectors(), 8);
        for i in 0..8 {
            assert_eq!(
                c.send(i),
                Ok(Send::Message(MsiMessage::new(0xFEE0_0218, 0, i)))
            );
        }
        assert_eq!(
            c.send(8),
            Err(DeviceError::MsiVectorNotEnabled {
                index: 8,
                enabled: 8
            })
        );
        assert_eq!(
            c.send(32),
            Err(DeviceError::IndexOutOfRange {
                kind: StorageKind::Msi,
                index: 32,
                size: 32
            })
        );
        // Data with low bits set: PCI replaces them.
        program(&mut c, 0xFEE0_1000, 0x4127, 2);
        assert_eq!(c.vector_message(0).unwrap().data, 0x4124);
        assert_eq!(c.vector_message(3).unwrap().data, 0x4127);
        // Data bits 31:16 are always zero: the capability data register is 16 bits.
        assert!((0..4).all(|i| c.vector_message(i).unwrap().data >> 16 == 0));
    }

    #[test]
    fn disabled_sends_nothing() {
        let mut c = cap(0, false, false);
        assert_eq!(c.send(0), Ok(Send::Disabled));
    }

    #[test]
    fn per_vector_mask_sets_pending_and_unmask_releases() {
        let mut c = cap(2, true, false);
        program(&mut c, 0xFEE0_0018, 0, 2);
        let mask = c.mask_offset().unwrap() as u64;
        c.write(mask, &0b0110u32.to_le_bytes()).unwrap();
        assert_eq!(c.send(1), Ok(Send::Masked));
        assert_eq!(c.send(2), Ok(Send::Masked));
        assert!(matches!(c.send(0), Ok(Send::Message(_))));
        assert_eq!(c.pending_bits(), 0b0110);
        // Pending bits are read-only.
        c.write(mask + 4, &0u32.to_le_bytes()).unwrap();
        assert_eq!(c.pending_bits(), 0b0110);
        // Unmask vector 2 only; bits beyond the 4 implemented vectors stay 0.
        assert_eq!(c.write(mask, &0xFFFF_FFF2u32.to_le_bytes()), Ok(vec![2]));
        assert_eq!(c.mask_bits(), 0b0010);
        assert_eq!(c.pending_bits(), 0b0010);
        assert_eq!(c.write(mask, &0u32.to_le_bytes()), Ok(vec![1]));
        assert_eq!(c.pending_bits(), 0);
    }
}
