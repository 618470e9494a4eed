//! Identifier newtypes shared by the platform's components.
//!
//! Host and guest APIC ids live in different name spaces (a guest's APIC ids are virtual, see
//! `spec/vir-v1.md` §5.1 and §8.7), so they get different types: [`HostApicId`] names a physical CPU,
//! [`GuestApicId`] names a vCPU of one VM.

use core::fmt;

/// A PCI requester id (bus, device, function), as the IOMMU sees it on an interrupt write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RequesterId(pub u16);

impl RequesterId {
    /// Builds a requester id from bus, device (0..=31) and function (0..=7); out-of-range device
    /// and function bits are masked off, as they are in the 16-bit encoding.
    pub const fn from_bdf(bus: u8, device: u8, function: u8) -> Self {
        Self(((bus as u16) << 8) | (((device & 0x1F) as u16) << 3) | (function & 0x7) as u16)
    }

    /// Bus number (bits 15:8).
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// Device number (bits 7:3).
    pub const fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1F) as u8
    }

    /// Function number (bits 2:0).
    pub const fn function(self) -> u8 {
        (self.0 & 0x7) as u8
    }
}

impl fmt::Display for RequesterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.bus(),
            self.device(),
            self.function()
        )
    }
}

/// The (x2)APIC id of a physical CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostApicId(pub u32);

impl fmt::Display for HostApicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pCPU {}", self.0)
    }
}

/// The (x2)APIC id of a vCPU, in its VM's name space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestApicId(pub u32);

impl fmt::Display for GuestApicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vCPU {}", self.0)
    }
}

/// A virtual machine known to the [`kvm`](crate::kvm) model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VmId(pub u32);

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VM {}", self.0)
    }
}

/// A vCPU: its VM and its APIC id in that VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VcpuRef {
    /// The VM.
    pub vm: VmId,
    /// The vCPU's APIC id in the VM.
    pub apic_id: GuestApicId,
}

impl VcpuRef {
    /// vCPU `apic_id` of `vm`.
    pub const fn new(vm: VmId, apic_id: GuestApicId) -> Self {
        Self { vm, apic_id }
    }
}

impl fmt::Display for VcpuRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.apic_id, self.vm)
    }
}

/// A global system interrupt number in one VM's routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Gsi(pub u32);

impl fmt::Display for Gsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GSI {}", self.0)
    }
}

/// An eventfd, named by the VMM that created it (the simulation does not allocate them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventFdId(pub u32);

impl fmt::Display for EventFdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eventfd {}", self.0)
    }
}

/// A device of the [`Machine`](crate::Machine), in the order it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {}", self.0)
    }
}

/// The four kinds of interrupt storage a device can have (`spec/vir-v1.md` §5.1: MSI and MSI-X
/// are standardised IMS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StorageKind {
    /// PCI MSI: one message in the MSI capability, for a block of 1–32 vectors.
    Msi,
    /// PCI MSI-X: a table of messages in a BAR.
    MsiX,
    /// IMS in device memory: a device-specific array of messages.
    ImsDevice,
    /// IMS in system memory: one message per queue context, in guest memory.
    ImsSystem,
}

impl StorageKind {
    /// All kinds, in declaration order.
    pub const ALL: [StorageKind; 4] = [Self::Msi, Self::MsiX, Self::ImsDevice, Self::ImsSystem];

    /// Index of the kind in [`StorageKind::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Self::Msi => 0,
            Self::MsiX => 1,
            Self::ImsDevice => 2,
            Self::ImsSystem => 3,
        }
    }
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Msi => "MSI",
            Self::MsiX => "MSI-X",
            Self::ImsDevice => "IMS (device memory)",
            Self::ImsSystem => "IMS (system memory)",
        })
    }
}

/// One interrupt source of a device: a storage kind and an index in it.
///
/// The index is the vector index within the MSI block for [`StorageKind::Msi`], the table entry
/// for [`StorageKind::MsiX`], the array entry for [`StorageKind::ImsDevice`], and the queue
/// number for [`StorageKind::ImsSystem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageSlot {
    /// The storage kind.
    pub kind: StorageKind,
    /// The index within that storage.
    pub index: u32,
}

impl StorageSlot {
    /// Vector `index` of the device's MSI block.
    pub const fn msi(index: u32) -> Self {
        Self {
            kind: StorageKind::Msi,
            index,
        }
    }

    /// MSI-X table entry `index`.
    pub const fn msix(index: u32) -> Self {
        Self {
            kind: StorageKind::MsiX,
            index,
        }
    }

    /// Entry `index` of the IMS array in device memory.
    pub const fn ims_device(index: u32) -> Self {
        Self {
            kind: StorageKind::ImsDevice,
            index,
        }
    }

    /// The IMS message of queue `queue` (system memory).
    pub const fn ims_system(queue: u32) -> Self {
        Self {
            kind: StorageKind::ImsSystem,
            index: queue,
        }
    }
}

impl fmt::Display for StorageSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{}", self.kind, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requester_id_bdf_encoding() {
        let rid = RequesterId::from_bdf(0x3A, 0x1F, 7);
        assert_eq!(rid, RequesterId(0x3AFF));
        assert_eq!((rid.bus(), rid.device(), rid.function()), (0x3A, 0x1F, 7));
        assert_eq!(RequesterId::from_bdf(0, 2, 0), RequesterId(0x0010));
        // Out-of-range device/function bits are masked, never spill into the bus.
        assert_eq!(RequesterId::from_bdf(1, 0xFF, 0xFF), RequesterId(0x01FF));
        assert_eq!(rid.to_string(), "3a:1f.7");
    }

    #[test]
    fn storage_kind_index_matches_all() {
        for (i, k) in StorageKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        assert_eq!(StorageSlot::msix(4).to_string(), "MSI-X #4");
    }
}
