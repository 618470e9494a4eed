//! Device ids and interrupt storage types.

use core::fmt;
use vir_abi::feature::Features;
use vir_abi::wire::StorageKind;

/// A guest-visible PCI device id as vIR carries it: segment in bits 31:16, requester id
/// (bus:device.function) in bits 15:0.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u32);

impl DeviceId {
    /// Builds the id from a PCI segment and a requester id.
    pub const fn new(segment: u16, requester_id: u16) -> Self {
        DeviceId((segment as u32) << 16 | requester_id as u32)
    }

    /// Builds the id from segment, bus, device (0–31) and function (0–7); `None` if device or
    /// function is out of range.
    pub const fn from_bdf(segment: u16, bus: u8, device: u8, function: u8) -> Option<Self> {
        if device > 31 || function > 7 {
            return None;
        }
        let rid = (bus as u16) << 8 | (device as u16) << 3 | function as u16;
        Some(Self::new(segment, rid))
    }

    /// PCI segment (bits 31:16).
    pub const fn segment(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// Requester id (bits 15:0).
    pub const fn requester_id(self) -> u16 {
        self.0 as u16
    }
}

impl fmt::Display for DeviceId {
    /// `ssss:bb:dd.f`, as Linux prints PCI devices.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rid = self.requester_id();
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.segment(),
            rid >> 8,
            (rid >> 3) & 0x1f,
            rid & 7
        )
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// Where a device keeps its interrupt messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StorageType {
    /// PCI MSI capability: one block of 1–32 vectors (a power of two) sharing one message.
    Msi,
    /// PCI MSI-X table: one message per table entry.
    MsiX,
    /// IMS in device memory: an array indexed by the storage index.
    ImsDevice,
    /// IMS in system memory: storage index chosen by guest software.
    ImsSystem,
}

impl StorageType {
    /// Every storage type.
    pub const ALL: [StorageType; 4] = [Self::Msi, Self::MsiX, Self::ImsDevice, Self::ImsSystem];

    /// The wire value of the ALLOCATE request's `kind` field.
    pub const fn wire_kind(self) -> StorageKind {
        match self {
            Self::Msi => StorageKind::MSI,
            Self::MsiX => StorageKind::MSIX,
            Self::ImsDevice => StorageKind::IMS_DEVICE,
            Self::ImsSystem => StorageKind::IMS_SYSTEM,
        }
    }

    /// The feature gating allocations of this type.
    pub const fn feature(self) -> Features {
        match self {
            Self::Msi => Features::MSI,
            Self::MsiX => Features::MSIX,
            Self::ImsDevice => Features::IMS_DEVICE,
            Self::ImsSystem => Features::IMS_SYSTEM,
        }
    }

    /// Whether this is IMS storage (allowed only with the IR capability, `VIR-LEG-G-001`).
    pub const fn is_ims(self) -> bool {
        matches!(self, Self::ImsDevice | Self::ImsSystem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn device_id_layout_segment_31_16_rid_15_0() {
        let d = DeviceId::from_bdf(0x0001, 0x3a, 0x1f, 7).unwrap();
        assert_eq!(d.0, 0x0001_3aff);
        assert_eq!(d.segment(), 1);
        assert_eq!(d.requester_id(), 0x3aff);
        assert_eq!(format!("{d}"), "0001:3a:1f.7");
        assert_eq!(DeviceId::from_bdf(0, 0, 32, 0), None);
        assert_eq!(DeviceId::from_bdf(0, 0, 0, 8), None);
    }

    #[test]
    fn storage_type_wire_kind_and_feature_agree_with_abi() {
        for t in StorageType::ALL {
            assert_eq!(t.wire_kind().gating_feature(), Some(t.feature()));
        }
        assert_eq!(StorageType::ImsSystem.wire_kind(), StorageKind(4));
        assert!(StorageType::ImsDevice.is_ims() && !StorageType::MsiX.is_ims());
    }
}
