//! [`MockDeviceStorage`]: the physical interrupt storage of devices, in memory, with a log of
//! every write the host made.

use std::collections::BTreeMap;

use vir_abi::hw::msi::MsiMessage;

use crate::legacy::DeviceStorage;

/// One write to physical storage, as logged by [`MockDeviceStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageWrite {
    /// MSI message.
    MsiMessage {
        /// Requester id.
        rid: u16,
        /// The message.
        message: MsiMessage,
    },
    /// MSI Mask Bits.
    MsiMask {
        /// Requester id.
        rid: u16,
        /// The mask.
        mask: u32,
    },
    /// MSI Enable and Multiple Message Enable.
    MsiControl {
        /// Requester id.
        rid: u16,
        /// Enable.
        enabled: bool,
        /// Multiple Message Enable.
        mme: u8,
    },
    /// MSI-X entry message.
    MsixMessage {
        /// Requester id.
        rid: u16,
        /// Table index.
        index: u32,
        /// The message.
        message: MsiMessage,
    },
    /// MSI-X entry mask bit.
    MsixMask {
        /// Requester id.
        rid: u16,
        /// Table index.
        index: u32,
        /// Masked.
        masked: bool,
    },
    /// MSI-X Enable and Function Mask.
    MsixControl {
        /// Requester id.
        rid: u16,
        /// Enable.
        enabled: bool,
        /// Function Mask.
        function_mask: bool,
    },
}

/// The physical interrupt state of one device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PhysicalDevice {
    /// MSI message.
    pub msi_message: MsiMessage,
    /// MSI Mask Bits.
    pub msi_mask: u32,
    /// MSI Enable.
    pub msi_enabled: bool,
    /// Multiple Message Enable.
    pub msi_mme: u8,
    /// MSI-X entries written: index → (message, masked). Entries never written are at their
    /// reset value (message 0, masked).
    pub msix: BTreeMap<u32, (MsiMessage, bool)>,
    /// MSI-X Enable.
    pub msix_enabled: bool,
    /// MSI-X Function Mask.
    pub msix_function_mask: bool,
}

impl PhysicalDevice {
    /// Entry `index` of the MSI-X table: (message, masked).
    pub fn msix_entry(&self, index: u32) -> (MsiMessage, bool) {
        self.msix
            .get(&index)
            .copied()
            .unwrap_or((MsiMessage::default(), true))
    }

    /// Whether MSI-X entry `index` can signal: MSI-X enabled, function and entry unmasked.
    pub fn msix_can_signal(&self, index: u32) -> bool {
        self.msix_enabled && !self.msix_function_mask && !self.msix_entry(index).1
    }
}

/// Physical storage of every device, by requester id, with a write log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MockDeviceStorage {
    devices: BTreeMap<u16, PhysicalDevice>,
    log: Vec<StorageWrite>,
}

impl MockDeviceStorage {
    /// Storage with every device at its reset state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of the device with requester id `rid` (reset state if never written).
    pub fn device(&self, rid: u16) -> PhysicalDevice {
        self.devices.get(&rid).cloned().unwrap_or_default()
    }

    /// Every write, in order.
    pub fn log(&self) -> &[StorageWrite] {
        &self.log
    }

    /// Forget the log (the state stays).
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    fn dev(&mut self, rid: u16, w: StorageWrite) -> &mut PhysicalDevice {
        self.log.push(w);
        self.devices.entry(rid).or_default()
    }
}

impl DeviceStorage for MockDeviceStorage {
    fn write_msi_message(&mut self, rid: u16, message: MsiMessage) {
        self.dev(rid, StorageWrite::MsiMessage { rid, message })
            .msi_message = message;
    }
    fn set_msi_mask(&mut self, rid: u16, mask: u32) {
        self.dev(rid, StorageWrite::MsiMask { rid, mask }).msi_mask = mask;
    }
    fn set_msi_control(&mut self, rid: u16, enabled: bool, mme: u8) {
        let d = self.dev(rid, StorageWrite::MsiControl { rid, enabled, mme });
        d.msi_enabled = enabled;
        d.msi_mme = mme;
    }
    fn write_msix_message(&mut self, rid: u16, index: u32, message: MsiMessage) {
        let d = self.dev(
            rid,
            StorageWrite::MsixMessage {
                rid,
                index,
                message,
            },
        );
        let e = d.msix.entry(index).or_insert((MsiMessage::default(), true));
        e.0 = message;
    }
    fn set_msix_masked(&mut self, rid: u16, index: u32, masked: bool) {
        let d = self.dev(rid, StorageWrite::MsixMask { rid, index, masked });
        let e = d.msix.entry(index).or_insert((MsiMessage::default(), true));
        e.1 = masked;
    }
    fn set_msix_control(&mut self, rid: u16, enabled: bool, function_mask: bool) {
        let d = self.dev(
            rid,
            StorageWrite::MsixControl {
                rid,
                enabled,
                function_mask,
            },
        );
        d.msix_enabled = enabled;
        d.msix_function_mask = function_mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_state_and_log() {
        let mut s = MockDeviceStorage::new();
        let m = MsiMessage::new(0xFEE0_0018, 0, 0);
        assert_eq!(s.device(1).msix_entry(3), (MsiMessage::default(), true));
        s.write_msix_message(1, 3, m);
        s.set_msix_masked(1, 3, false);
        assert!(!s.device(1).msix_can_signal(3));
        s.set_msix_control(1, true, false);
        assert!(s.device(1).msix_can_signal(3));
        s.set_msi_control(2, true, 2);
        assert_eq!((s.device(2).msi_enabled, s.device(2).msi_mme), (true, 2));
        assert_eq!(s.log().len(), 4);
        s.clear_log();
        assert!(s.log().is_empty());
        assert_eq!(s.device(1).msix_entry(3), (m, false));
    }
}
