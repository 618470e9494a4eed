//! Interrupt storage: where a device keeps the messages it writes.
//!
//! [`InterruptStorage`] is implemented by the platform (a simulated one in tests, config space
//! and MMIO accessors in a kernel). The interrupt subsystem writes a message exactly once per
//! allocation, at its first activation (`VIR-ACT-G-001`), masks and unmasks MSI-X entries and
//! IMS entries (in device memory and in system memory) so that a slot generates interrupts only
//! while a live allocation's message is in it (`VIR-ALC-G-001`), and enables MSI with the number
//! of vectors of the block.

use core::fmt;
use vir_abi::hw::msi::MsiMessage;
use vir_abi::status::errno;

use crate::device::{DeviceId, StorageType};

/// One place holding a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StorageSlot {
    /// The MSI capability (one message for the whole block; the device adds the vector index
    /// to the data).
    Msi,
    /// MSI-X table entry.
    MsiX(u32),
    /// IMS entry in device memory (array index).
    ImsDevice(u32),
    /// IMS entry in system memory (software-chosen number).
    ImsSystem(u32),
}

impl StorageSlot {
    /// The slot of `storage` at `index` (`index` is ignored for MSI).
    pub const fn new(storage: StorageType, index: u32) -> Self {
        match storage {
            StorageType::Msi => Self::Msi,
            StorageType::MsiX => Self::MsiX(index),
            StorageType::ImsDevice => Self::ImsDevice(index),
            StorageType::ImsSystem => Self::ImsSystem(index),
        }
    }

    /// The storage type.
    pub const fn storage_type(self) -> StorageType {
        match self {
            Self::Msi => StorageType::Msi,
            Self::MsiX(_) => StorageType::MsiX,
            Self::ImsDevice(_) => StorageType::ImsDevice,
            Self::ImsSystem(_) => StorageType::ImsSystem,
        }
    }

    /// The storage index (0 for MSI).
    pub const fn index(self) -> u32 {
        match self {
            Self::Msi => 0,
            Self::MsiX(i) | Self::ImsDevice(i) | Self::ImsSystem(i) => i,
        }
    }
}

/// Why a storage access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// No such device.
    NoSuchDevice(DeviceId),
    /// The device has no storage of that type.
    NoStorage {
        /// The device.
        device: DeviceId,
        /// The storage type.
        storage: StorageType,
    },
    /// The index is beyond the device's storage.
    IndexOutOfRange {
        /// The device.
        device: DeviceId,
        /// The slot addressed.
        slot: StorageSlot,
        /// The storage size.
        size: u32,
    },
    /// A mask operation on a slot that has no mask of its own through
    /// [`InterruptStorage::set_masked`] (the MSI capability: its per-vector mask bits are
    /// optional and not driven by the interrupt subsystem).
    NotMaskable {
        /// The device.
        device: DeviceId,
        /// The slot addressed.
        slot: StorageSlot,
    },
    /// MSI enable with a vector count the capability does not support.
    InvalidVectorCount {
        /// The device.
        device: DeviceId,
        /// The count requested.
        nvec: u32,
        /// The capability's largest count.
        max: u32,
    },
}

impl StorageError {
    /// The errno a kernel reports (positive).
    pub const fn errno(&self) -> i32 {
        match self {
            Self::NoSuchDevice(_) => errno::ENODEV,
            Self::NoStorage { .. } | Self::NotMaskable { .. } => errno::EOPNOTSUPP,
            Self::IndexOutOfRange { .. } | Self::InvalidVectorCount { .. } => errno::EINVAL,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchDevice(d) => write!(f, "no device {d}"),
            Self::NoStorage { device, storage } => write!(f, "{device} has no {storage:?} storage"),
            Self::IndexOutOfRange { device, slot, size } => {
                write!(f, "{device} {slot:?} beyond storage of {size}")
            }
            Self::NotMaskable { device, slot } => {
                write!(f, "{device} {slot:?} cannot be masked on its own")
            }
            Self::InvalidVectorCount { device, nvec, max } => {
                write!(
                    f,
                    "{device} MSI enable with {nvec} vectors, capability has {max}"
                )
            }
        }
    }
}

/// Access to devices' interrupt storage.
pub trait InterruptStorage {
    /// Writes `message` into `slot` of `device`.
    fn write_message(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        message: MsiMessage,
    ) -> Result<(), StorageError>;

    /// Sets (`true`) or clears the mask bit of `slot` of `device`: the vector control of an
    /// MSI-X entry, the mask of an IMS entry in device memory, or the mask of an IMS entry in
    /// system memory (queue context). A masked slot does not generate interrupts: the device
    /// holds them pending and sends them when the slot is unmasked. [`StorageSlot::Msi`] is
    /// refused with [`StorageError::NotMaskable`].
    fn set_masked(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        masked: bool,
    ) -> Result<(), StorageError>;

    /// Enables MSI on `device` with `nvec` vectors (a power of two, 1–32: Multiple Message
    /// Enable = log2 `nvec`).
    fn msi_enable(&mut self, device: DeviceId, nvec: u32) -> Result<(), StorageError>;

    /// Disables MSI on `device`.
    fn msi_disable(&mut self, device: DeviceId) -> Result<(), StorageError>;
}

impl<S: InterruptStorage + ?Sized> InterruptStorage for &mut S {
    fn write_message(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        message: MsiMessage,
    ) -> Result<(), StorageError> {
        (**self).write_message(device, slot, message)
    }
    fn set_masked(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        masked: bool,
    ) -> Result<(), StorageError> {
        (**self).set_masked(device, slot, masked)
    }
    fn msi_enable(&mut self, device: DeviceId, nvec: u32) -> Result<(), StorageError> {
        (**self).msi_enable(device, nvec)
    }
    fn msi_disable(&mut self, device: DeviceId) -> Result<(), StorageError> {
        (**self).msi_disable(device)
    }
}

/// Successful storage accesses made by the interrupt subsystem, counted by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StorageStats {
    /// Messages written into MSI capabilities.
    pub msi_messages: u64,
    /// Messages written into MSI-X entries.
    pub msix_messages: u64,
    /// Messages written into IMS entries in device memory.
    pub ims_device_messages: u64,
    /// Messages written into IMS entries in system memory.
    pub ims_system_messages: u64,
    /// Mask and unmask writes to MSI-X entries.
    pub msix_mask_writes: u64,
    /// Mask and unmask writes to IMS entries in device memory.
    pub ims_device_mask_writes: u64,
    /// Mask and unmask writes to IMS entries in system memory.
    pub ims_system_mask_writes: u64,
    /// MSI enable and disable writes.
    pub msi_control_writes: u64,
}

impl StorageStats {
    /// Messages written, all storage types together.
    pub const fn message_writes(&self) -> u64 {
        self.msi_messages + self.msix_messages + self.ims_device_messages + self.ims_system_messages
    }

    /// Mask and unmask writes, all storage types together.
    pub const fn mask_writes(&self) -> u64 {
        self.msix_mask_writes + self.ims_device_mask_writes + self.ims_system_mask_writes
    }

    /// Every storage access counted.
    pub const fn total_writes(&self) -> u64 {
        self.message_writes() + self.mask_writes() + self.msi_control_writes
    }

    pub(crate) fn count_message(&mut self, slot: StorageSlot) {
        let c = match slot {
            StorageSlot::Msi => &mut self.msi_messages,
            StorageSlot::MsiX(_) => &mut self.msix_messages,
            StorageSlot::ImsDevice(_) => &mut self.ims_device_messages,
            StorageSlot::ImsSystem(_) => &mut self.ims_system_messages,
        };
        *c = c.saturating_add(1);
    }

    /// Counts one mask or unmask write to `slot` (MSI has no mask write: nothing counted).
    pub(crate) fn count_mask(&mut self, slot: StorageSlot) {
        let c = match slot {
            StorageSlot::Msi => return,
            StorageSlot::MsiX(_) => &mut self.msix_mask_writes,
            StorageSlot::ImsDevice(_) => &mut self.ims_device_mask_writes,
            StorageSlot::ImsSystem(_) => &mut self.ims_system_mask_writes,
        };
        *c = c.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips_type_and_index() {
        for t in StorageType::ALL {
            let s = StorageSlot::new(t, 7);
            assert_eq!(s.storage_type(), t);
            assert_eq!(s.index(), if t == StorageType::Msi { 0 } else { 7 });
        }
    }

    #[test]
    fn stats_count_per_type() {
        let mut s = StorageStats::default();
        s.count_message(StorageSlot::Msi);
        s.count_message(StorageSlot::ImsSystem(3));
        s.count_message(StorageSlot::ImsSystem(4));
        s.count_mask(StorageSlot::MsiX(0));
        s.count_mask(StorageSlot::MsiX(0));
        s.count_mask(StorageSlot::ImsDevice(1));
        s.count_mask(StorageSlot::ImsSystem(2));
        s.count_mask(StorageSlot::Msi);
        assert_eq!(s.msi_messages, 1);
        assert_eq!(s.ims_system_messages, 2);
        assert_eq!(s.message_writes(), 3);
        assert_eq!(
            (
                s.msix_mask_writes,
                s.ims_device_mask_writes,
                s.ims_system_mask_writes
            ),
            (2, 1, 1)
        );
        assert_eq!(s.mask_writes(), 4);
        assert_eq!(s.total_writes(), 7);
    }

    #[test]
    fn errno_of_storage_errors() {
        let d = DeviceId(1);
        assert_eq!(StorageError::NoSuchDevice(d).errno(), errno::ENODEV);
        assert_eq!(
            StorageError::NoStorage {
                device: d,
                storage: StorageType::ImsDevice
            }
            .errno(),
            errno::EOPNOTSUPP
        );
        assert_eq!(
            StorageError::IndexOutOfRange {
                device: d,
                slot: StorageSlot::MsiX(9),
                size: 8
            }
            .errno(),
            errno::EINVAL
        );
        assert_eq!(
            StorageError::NotMaskable {
                device: d,
                slot: StorageSlot::Msi
            }
            .errno(),
            errno::EOPNOTSUPP
        );
    }
}
