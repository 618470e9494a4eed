//! Devices with interrupt storage.
//!
//! A [`Device`] has a requester id and any of the four storage kinds of
//! `spec/vir-v1.md` §5.1:
//!
//! * [`msi`]: the PCI MSI capability (1–32 vectors, multiple message enable, optional per-vector
//!   mask and pending bits, 32- or 64-bit address);
//! * [`table`]: the MSI-X table in a BAR (with MSI-X enable and function mask), and the IMS array
//!   in device memory — both arrays of 16-byte entries with a per-entry mask;
//! * [`ims_system`]: IMS in system memory — one message per queue context in guest memory, read
//!   by DMA when the queue fires.
//!
//! Every storage write is counted per kind ([`Device::storage_writes`]), so tests can assert that
//! an affinity change writes nothing (VIR-AFF-H-005, VIR-AFF-G-001).
//!
//! A device fires by reading its stored message ([`Device::fire`]): the message comes out the
//! same way whether it is right, stale or forged — the device does not judge it. A masked source
//! sets a pending bit instead, and a write that unmasks it returns it so the caller fires it.

pub mod error;
pub mod ims_system;
pub mod msi;
pub mod table;

use vir_abi::hw::msi::MsiMessage;
use vm_memory::GuestMemoryMmap;

pub use error::{ConfigError, DeviceError};
pub use ims_system::ImsQueues;
pub use msi::{MsiCapability, MsiConfig};
pub use table::MessageTable;

use crate::ids::{RequesterId, StorageKind, StorageSlot};
use ims_system::QueueSend;
use msi::Send;
use table::EntrySend;

/// The largest MSI-X table (PCI: 2048 entries).
pub const MAX_MSIX_ENTRIES: u32 = 2048;
/// The largest IMS array this model supports.
pub const MAX_IMS_ENTRIES: u32 = 65536;
/// The largest number of IMS queues this model supports.
pub const MAX_IMS_QUEUES: u32 = 65536;

/// What a device has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceConfig {
    /// The device's requester id (its identity: host IRQs are keyed by it).
    pub requester_id: RequesterId,
    /// The requester id the IOMMU sees on the device's writes, if different (a device behind a
    /// PCIe-to-PCI bridge is seen with the bridge's id).
    pub source_id: Option<RequesterId>,
    /// An MSI capability.
    pub msi: Option<MsiConfig>,
    /// An MSI-X table of this many entries (1..=2048).
    pub msix_entries: Option<u32>,
    /// An IMS array in device memory of this many entries (1..=65536).
    pub ims_device_entries: Option<u32>,
    /// IMS in system memory for this many queues (1..=65536).
    pub ims_system_queues: Option<u32>,
}

impl DeviceConfig {
    /// A device with requester id `requester_id` and no interrupt storage.
    pub const fn new(requester_id: RequesterId) -> Self {
        Self {
            requester_id,
            source_id: None,
            msi: None,
            msix_entries: None,
            ims_device_entries: None,
            ims_system_queues: None,
        }
    }

    /// With an MSI capability.
    pub const fn with_msi(mut self, msi: MsiConfig) -> Self {
        self.msi = Some(msi);
        self
    }

    /// With an MSI-X table of `entries` entries.
    pub const fn with_msix(mut self, entries: u32) -> Self {
        self.msix_entries = Some(entries);
        self
    }

    /// With an IMS array of `entries` entries in device memory.
    pub const fn with_ims_device(mut self, entries: u32) -> Self {
        self.ims_device_entries = Some(entries);
        self
    }

    /// With IMS in system memory for `queues` queues.
    pub const fn with_ims_system(mut self, queues: u32) -> Self {
        self.ims_system_queues = Some(queues);
        self
    }

    /// Seen by the IOMMU with requester id `source_id`.
    pub const fn with_source_id(mut self, source_id: RequesterId) -> Self {
        self.source_id = Some(source_id);
        self
    }
}

/// A byte-addressable storage region of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageRegion {
    /// The MSI capability in configuration space (offset 0 = capability id).
    MsiCapability,
    /// The MSI-X table (offset 0 = entry 0).
    MsixTable,
    /// The IMS array in device memory (offset 0 = entry 0).
    ImsArray,
    /// The context of IMS queue `n` in guest memory (offset 0 = message address low).
    ImsQueueContext(u32),
}

impl StorageRegion {
    /// The storage kind of the region.
    pub const fn kind(self) -> StorageKind {
        match self {
            Self::MsiCapability => StorageKind::Msi,
            Self::MsixTable => StorageKind::MsiX,
            Self::ImsArray => StorageKind::ImsDevice,
            Self::ImsQueueContext(_) => StorageKind::ImsSystem,
        }
    }
}

/// What firing an interrupt source came to at the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FireAction {
    /// The device writes this message (with its source id) towards the IOMMU.
    Send(MsiMessage),
    /// The source is masked: its pending bit is set.
    Masked,
    /// MSI or MSI-X is disabled: nothing is sent.
    Disabled,
    /// The DMA read of a system-memory IMS context failed.
    DmaFault {
        /// The context address.
        gpa: u64,
    },
}

/// MSI-X state: the table and the capability's control bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msix {
    table: MessageTable,
    enabled: bool,
    function_mask: bool,
}

impl Msix {
    /// The table.
    pub const fn table(&self) -> &MessageTable {
        &self.table
    }

    /// MSI-X enable.
    pub const fn enabled(&self) -> bool {
        self.enabled
    }

    /// Function mask.
    pub const fn function_masked(&self) -> bool {
        self.function_mask
    }

    const fn hold(&self) -> bool {
        self.function_mask || !self.enabled
    }
}

/// A device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    requester_id: RequesterId,
    source_id: RequesterId,
    msi: Option<MsiCapability>,
    msix: Option<Msix>,
    ims_device: Option<MessageTable>,
    ims_system: Option<ImsQueues>,
    writes: [u64; 4],
    fires: [u64; 4],
}

fn slots(kind: StorageKind, indices: Vec<u32>) -> Vec<StorageSlot> {
    indices
        .into_iter()
        .map(|index| StorageSlot { kind, index })
        .collect()
}

impl Device {
    /// A device per `config`, its storage in reset state (MSI and MSI-X disabled, table and array
    /// entries masked, no queue contexts).
    pub fn new(config: &DeviceConfig) -> Result<Self, DeviceError> {
        let msi = config
            .msi
            .map(MsiCapability::new)
            .transpose()
            .map_err(DeviceError::Config)?;
        let msix = match config.msix_entries {
            None => None,
            Some(n @ 1..=MAX_MSIX_ENTRIES) => Some(Msix {
                table: MessageTable::new(StorageKind::MsiX, n),
                enabled: false,
                function_mask: false,
            }),
            Some(n) => return Err(DeviceError::Config(ConfigError::MsixEntries(n))),
        };
        let ims_device = match config.ims_device_entries {
            None => None,
            Some(n @ 1..=MAX_IMS_ENTRIES) => Some(MessageTable::new(StorageKind::ImsDevice, n)),
            Some(n) => return Err(DeviceError::Config(ConfigError::ImsEntries(n))),
        };
        let ims_system = match config.ims_system_queues {
            None => None,
            Some(n @ 1..=MAX_IMS_QUEUES) => Some(ImsQueues::new(n)),
            Some(n) => return Err(DeviceError::Config(ConfigError::ImsQueues(n))),
        };
        Ok(Self {
            requester_id: config.requester_id,
            source_id: config.source_id.unwrap_or(config.requester_id),
            msi,
            msix,
            ims_device,
            ims_system,
            writes: [0; 4],
            fires: [0; 4],
        })
    }

    /// The device's requester id.
    pub const fn requester_id(&self) -> RequesterId {
        self.requester_id
    }

    /// The requester id the IOMMU sees on the device's writes.
    pub const fn source_id(&self) -> RequesterId {
        self.source_id
    }

    /// The MSI capability.
    pub const fn msi(&self) -> Option<&MsiCapability> {
        self.msi.as_ref()
    }

    /// The MSI-X state.
    pub const fn msix(&self) -> Option<&Msix> {
        self.msix.as_ref()
    }

    /// The IMS array in device memory.
    pub const fn ims_array(&self) -> Option<&MessageTable> {
        self.ims_device.as_ref()
    }

    /// The system-memory IMS queues.
    pub const fn ims_queues(&self) -> Option<&ImsQueues> {
        self.ims_system.as_ref()
    }

    /// Whether the device has storage of `kind`.
    pub const fn has_storage(&self, kind: StorageKind) -> bool {
        match kind {
            StorageKind::Msi => self.msi.is_some(),
            StorageKind::MsiX => self.msix.is_some(),
            StorageKind::ImsDevice => self.ims_device.is_some(),
            StorageKind::ImsSystem => self.ims_system.is_some(),
        }
    }

    /// Number of interrupt sources of `kind`: MSI vectors capable, MSI-X entries, IMS array
    /// entries, IMS queues (0 without that storage).
    pub fn storage_size(&self, kind: StorageKind) -> u32 {
        match kind {
            StorageKind::Msi => self.msi.as_ref().map_or(0, |m| m.capable_vectors()),
            StorageKind::MsiX => self.msix.as_ref().map_or(0, |m| m.table.len()),
            StorageKind::ImsDevice => self.ims_device.as_ref().map_or(0, |t| t.len()),
            StorageKind::ImsSystem => self.ims_system.as_ref().map_or(0, |q| q.queues()),
        }
    }

    /// Storage writes of `kind` so far (each successful write call counts one).
    pub const fn storage_writes(&self, kind: StorageKind) -> u64 {
        self.writes[kind.index()]
    }

    /// Storage writes of every kind so far.
    pub fn total_storage_writes(&self) -> u64 {
        self.writes.iter().sum()
    }

    /// Fires of `kind` so far (each [`Device::fire`] that reached the storage counts one).
    pub const fn fires(&self, kind: StorageKind) -> u64 {
        self.fires[kind.index()]
    }

    fn msi_mut(&mut self) -> Result<&mut MsiCapability, DeviceError> {
        self.msi
            .as_mut()
            .ok_or(DeviceError::NoStorage(StorageKind::Msi))
    }

    fn msix_mut(&mut self) -> Result<&mut Msix, DeviceError> {
        self.msix
            .as_mut()
            .ok_or(DeviceError::NoStorage(StorageKind::MsiX))
    }

    fn ims_device_mut(&mut self) -> Result<&mut MessageTable, DeviceError> {
        self.ims_device
            .as_mut()
            .ok_or(DeviceError::NoStorage(StorageKind::ImsDevice))
    }

    fn ims_system_mut(&mut self) -> Result<&mut ImsQueues, DeviceError> {
        self.ims_system
            .as_mut()
            .ok_or(DeviceError::NoStorage(StorageKind::ImsSystem))
    }

    fn count_write(&mut self, kind: StorageKind) {
        let n = &mut self.writes[kind.index()];
        *n = n.saturating_add(1);
    }

    /// Writes raw bytes into a storage region (guest memory for a queue context). Returns the
    /// sources the write unmasked while pending; their pending bits are cleared and the caller
    /// fires them.
    pub fn write_storage(
        &mut self,
        region: StorageRegion,
        offset: u64,
        bytes: &[u8],
        mem: Option<&GuestMemoryMmap>,
    ) -> Result<Vec<StorageSlot>, DeviceError> {
        let kind = region.kind();
        let released = match region {
            StorageRegion::MsiCapability => self.msi_mut()?.write(offset, bytes)?,
            StorageRegion::MsixTable => {
                let m = self.msix_mut()?;
                let hold = m.hold();
                m.table.write(offset, bytes, hold)?
            }
            StorageRegion::ImsArray => self.ims_device_mut()?.write(offset, bytes, false)?,
            StorageRegion::ImsQueueContext(q) => {
                let mem = mem.ok_or(DeviceError::NoDmaMemory)?;
                let queues = self.ims_system_mut()?;
                if queues.write(q, offset, bytes, mem)? {
                    vec![q]
                } else {
                    vec![]
                }
            }
        };
        self.count_write(kind);
        Ok(slots(kind, released))
    }

    /// Reads raw bytes of a storage region.
    pub fn read_storage(
        &self,
        region: StorageRegion,
        offset: u64,
        buf: &mut [u8],
        mem: Option<&GuestMemoryMmap>,
    ) -> Result<(), DeviceError> {
        let kind = region.kind();
        match region {
            StorageRegion::MsiCapability => self
                .msi
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .read(offset, buf),
            StorageRegion::MsixTable => self
                .msix
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .table
                .read(offset, buf),
            StorageRegion::ImsArray => self
                .ims_device
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .read(offset, buf),
            StorageRegion::ImsQueueContext(q) => self
                .ims_system
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .read(q, offset, buf, mem.ok_or(DeviceError::NoDmaMemory)?),
        }
    }

    /// Stores `msg` in the storage of `slot` (one storage write). For MSI the message is the
    /// block's, so `slot.index` must be 0; its data is 16 bits and, without a 64-bit capable
    /// capability, its address 32 bits: what does not fit is dropped, as the registers have no
    /// room for it.
    pub fn write_message(
        &mut self,
        slot: StorageSlot,
        msg: MsiMessage,
        mem: Option<&GuestMemoryMmap>,
    ) -> Result<(), DeviceError> {
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&msg.address_lo.to_le_bytes());
        bytes[4..8].copy_from_slice(&msg.address_hi.to_le_bytes());
        bytes[8..12].copy_from_slice(&msg.data.to_le_bytes());
        match slot.kind {
            StorageKind::Msi => {
                if slot.index != 0 {
                    return Err(DeviceError::MsiMessageIndex(slot.index));
                }
                let cap = self.msi_mut()?;
                let mut img = [0u8; 0x18];
                let size = cap.size();
                cap.read(0, &mut img[..size])?;
                img[4..8].copy_from_slice(&bytes[0..4]);
                if let Some(o) = cap.address_hi_offset() {
                    img[o..o + 4].copy_from_slice(&bytes[4..8]);
                }
                let d = cap.data_offset();
                img[d..d + 2].copy_from_slice(&bytes[8..10]);
                // Rewriting the rest of the image with its own value changes nothing else.
                cap.write(0, &img[..size])?;
                self.count_write(StorageKind::Msi);
                Ok(())
            }
            StorageKind::MsiX => {
                self.msix_mut()?.table.set_message(slot.index, msg)?;
                self.count_write(StorageKind::MsiX);
                Ok(())
            }
            StorageKind::ImsDevice => {
                self.ims_device_mut()?.set_message(slot.index, msg)?;
                self.count_write(StorageKind::ImsDevice);
                Ok(())
            }
            StorageKind::ImsSystem => self
                .write_storage(StorageRegion::ImsQueueContext(slot.index), 0, &bytes, mem)
                .map(|_| ()),
        }
    }

    /// Masks or unmasks the source `slot` (one storage write): the MSI per-vector mask bit, the
    /// entry's vector control, or the queue context's control word. Returns the sources released
    /// by unmasking (at most `slot`).
    pub fn set_masked(
        &mut self,
        slot: StorageSlot,
        masked: bool,
        mem: Option<&GuestMemoryMmap>,
    ) -> Result<Vec<StorageSlot>, DeviceError> {
        let kind = slot.kind;
        let index = slot.index;
        let released = match kind {
            StorageKind::Msi => {
                let cap = self.msi_mut()?;
                let off = cap.mask_offset().ok_or(DeviceError::NoMaskBits)?;
                if index >= cap.capable_vectors() {
                    return Err(DeviceError::IndexOutOfRange {
                        kind,
                        index,
                        size: cap.capable_vectors(),
                    });
                }
                let bits = if masked {
                    cap.mask_bits() | 1 << index
                } else {
                    cap.mask_bits() & !(1 << index)
                };
                cap.write(off as u64, &bits.to_le_bytes())?
            }
            StorageKind::MsiX => {
                let m = self.msix_mut()?;
                let hold = m.hold();
                if m.table.set_masked(index, masked, hold)? {
                    vec![index]
                } else {
                    vec![]
                }
            }
            StorageKind::ImsDevice => {
                if self.ims_device_mut()?.set_masked(index, masked, false)? {
                    vec![index]
                } else {
                    vec![]
                }
            }
            StorageKind::ImsSystem => {
                return self.write_storage(
                    StorageRegion::ImsQueueContext(index),
                    12,
                    &u32::from(masked).to_le_bytes(),
                    mem,
                );
            }
        };
        self.count_write(kind);
        Ok(slots(kind, released))
    }

    /// Writes the MSI-X enable and function mask bits (one MSI-X storage write). Returns the
    /// entries released: pending and unmasked, once the function is enabled and not masked.
    pub fn set_msix_control(
        &mut self,
        enabled: bool,
        function_mask: bool,
    ) -> Result<Vec<StorageSlot>, DeviceError> {
        let m = self.msix_mut()?;
        m.enabled = enabled;
        m.function_mask = function_mask;
        let released = if m.hold() {
            vec![]
        } else {
            m.table.release_unmasked()
        };
        self.count_write(StorageKind::MsiX);
        Ok(slots(StorageKind::MsiX, released))
    }

    /// Enables or disables MSI with 2^`mme` vectors (a write of the message control register;
    /// one MSI storage write).
    pub fn set_msi_control(&mut self, enabled: bool, mme: u8) -> Result<(), DeviceError> {
        let control = u16::from(enabled) | u16::from(mme & 0x7) << 4;
        self.msi_mut()?.write(2, &control.to_le_bytes())?;
        self.count_write(StorageKind::Msi);
        Ok(())
    }

    /// Sets the guest physical address of IMS queue `queue`'s context (a device register, not
    /// storage: not counted).
    pub fn set_ims_queue_context(&mut self, queue: u32, gpa: u64) -> Result<(), DeviceError> {
        self.ims_system_mut()?.set_context(queue, gpa)
    }

    /// Forgets IMS queue `queue`'s context address.
    pub fn clear_ims_queue_context(&mut self, queue: u32) -> Result<(), DeviceError> {
        self.ims_system_mut()?.clear_context(queue)
    }

    /// The message source `slot` would send now (MSI: the block's message with the vector index
    /// in the low data bits).
    pub fn stored_message(
        &self,
        slot: StorageSlot,
        mem: Option<&GuestMemoryMmap>,
    ) -> Result<MsiMessage, DeviceError> {
        let kind = slot.kind;
        match kind {
            StorageKind::Msi => self
                .msi
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .vector_message(slot.index),
            StorageKind::MsiX => self
                .msix
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .table
                .message(slot.index),
            StorageKind::ImsDevice => self
                .ims_device
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .message(slot.index),
            StorageKind::ImsSystem => Ok(self
                .ims_system
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .message(slot.index, mem.ok_or(DeviceError::NoDmaMemory)?)?
                .0),
        }
    }

    /// Whether source `slot` has its pending bit set.
    pub fn pending(&self, slot: StorageSlot) -> Result<bool, DeviceError> {
        let kind = slot.kind;
        match kind {
            StorageKind::Msi => {
                let cap = self.msi.as_ref().ok_or(DeviceError::NoStorage(kind))?;
                if slot.index >= cap.capable_vectors() {
                    return Err(DeviceError::IndexOutOfRange {
                        kind,
                        index: slot.index,
                        size: cap.capable_vectors(),
                    });
                }
                Ok(cap.pending_bits() & (1 << slot.index) != 0)
            }
            StorageKind::MsiX => self
                .msix
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .table
                .pending(slot.index),
            StorageKind::ImsDevice => self
                .ims_device
                .as_ref()
                .ok_or(DeviceError::NoStorage(kind))?
                .pending(slot.index),
            StorageKind::ImsSystem => {
                let q = self
                    .ims_system
                    .as_ref()
                    .ok_or(DeviceError::NoStorage(kind))?;
                q.context(slot.index)?;
                Ok(q.pending(slot.index))
            }
        }
    }

    /// The device raises source `slot`: reads its stored message (by DMA for a system-memory
    /// queue context) and returns what to send, or records it as pending when masked.
    pub fn fire(
        &mut self,
        slot: StorageSlot,
        mem: Option<&GuestMemoryMmap>,
    ) -> Result<FireAction, DeviceError> {
        let kind = slot.kind;
        let action = match kind {
            StorageKind::Msi => match self.msi_mut()?.send(slot.index)? {
                Send::Message(m) => FireAction::Send(m),
                Send::Masked => FireAction::Masked,
                Send::Disabled => FireAction::Disabled,
            },
            StorageKind::MsiX => {
                let m = self.msix_mut()?;
                let (enabled, fmask) = (m.enabled, m.function_mask);
                if !enabled {
                    // Still check the index.
                    m.table.message(slot.index)?;
                    FireAction::Disabled
                } else {
                    match m.table.send(slot.index, fmask)? {
                        EntrySend::Message(msg) => FireAction::Send(msg),
                        EntrySend::Masked => FireAction::Masked,
                    }
                }
            }
            StorageKind::ImsDevice => match self.ims_device_mut()?.send(slot.index, false)? {
                EntrySend::Message(msg) => FireAction::Send(msg),
                EntrySend::Masked => FireAction::Masked,
            },
            StorageKind::ImsSystem => {
                let mem = mem.ok_or(DeviceError::NoDmaMemory)?;
                match self.ims_system_mut()?.send(slot.index, mem)? {
                    QueueSend::Message(msg) => FireAction::Send(msg),
                    QueueSend::Masked => FireAction::Masked,
                    QueueSend::DmaFault(gpa) => FireAction::DmaFault { gpa },
                }
            }
        };
        let n = &mut self.fires[kind.index()];
        *n = n.saturating_add(1);
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    const RID: RequesterId = RequesterId(0x0310);

    fn full() -> Device {
        Device::new(
            &DeviceConfig::new(RID)
                .with_msi(MsiConfig {
                    vectors_log2: 2,
                    per_vector_masking: true,
                    address_64bit: true,
                })
                .with_msix(8)
                .with_ims_device(2048)
                .with_ims_system(4),
        )
        .unwrap()
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    const MSG: MsiMessage = MsiMessage::new(0xFEE0_0218, 0, 0);

    #[test]
    fn config_limits() {
        let c = DeviceConfig::new(RID);
        assert_eq!(
            Device::new(&c.with_msix(0)),
            Err(DeviceError::Config(ConfigError::MsixEntries(0)))
        );
        assert_eq!(
            Device::new(&c.with_msix(2049)),
            Err(DeviceError::Config(ConfigError::MsixEntries(2049)))
        );
        assert_eq!(
            Device::new(&c.with_ims_device(65537)),
            Err(DeviceError::Config(ConfigError::ImsEntries(65537)))
        );
        assert_eq!(
            Device::new(&c.with_ims_system(0)),
            Err(DeviceError::Config(ConfigError::ImsQueues(0)))
        );
        let mut d = Device::new(&c.with_source_id(RequesterId(0x0500))).unwrap();
        assert_eq!(
            (d.requester_id(), d.source_id()),
            (RID, RequesterId(0x0500))
        );
        assert_eq!(
            d.fire(StorageSlot::msix(0), None).err(),
            Some(DeviceError::NoStorage(StorageKind::MsiX))
        );
        assert!(!d.has_storage(StorageKind::Msi));
        let d = full();
        assert_eq!(StorageKind::ALL.map(|k| d.storage_size(k)), [4, 8, 2048, 4]);
    }

    #[test]
    fn msix_enable_function_mask_entry_mask_pending() {
        let mut d = full();
        let s = StorageSlot::msix(3);
        d.write_message(s, MSG, None).unwrap();
        // Disabled: nothing sent, nothing pending.
        assert_eq!(d.fire(s, None), Ok(FireAction::Disabled));
        assert_eq!(d.pending(s), Ok(false));
        assert_eq!(d.set_msix_control(true, false), Ok(vec![]));
        // Entry masked out of reset: pending.
        assert_eq!(d.fire(s, None), Ok(FireAction::Masked));
        assert_eq!(d.pending(s), Ok(true));
        assert_eq!(d.set_masked(s, false, None), Ok(vec![s]));
        assert_eq!(d.pending(s), Ok(false));
        assert_eq!(d.fire(s, None), Ok(FireAction::Send(MSG)));
        // Function mask: pending; clearing it releases.
        d.set_msix_control(true, true).unwrap();
        assert_eq!(d.fire(s, None), Ok(FireAction::Masked));
        assert_eq!(d.set_msix_control(true, false), Ok(vec![s]));
        assert_eq!(d.storage_writes(StorageKind::MsiX), 5);
        assert_eq!(d.fires(StorageKind::MsiX), 4);
        assert_eq!(
            d.fire(StorageSlot::msix(8), None),
            Err(DeviceError::IndexOutOfRange {
                kind: StorageKind::MsiX,
                index: 8,
                size: 8
            })
        );
    }

    #[test]
    fn msi_message_block_and_mask_via_device() {
        let mut d = full();
        assert_eq!(
            d.write_message(StorageSlot::msi(1), MSG, None),
            Err(DeviceError::MsiMessageIndex(1))
        );
        d.write_message(
            StorageSlot::msi(0),
            MsiMessage::new(0xFEE0_0218, 0x12, 0xFFFF_0004),
            None,
        )
        .unwrap();
        d.set_msi_control(true, 2).unwrap();
        // Upper address kept, data truncated to 16 bits, vector index in the low 2 bits.
        assert_eq!(
            d.stored_message(StorageSlot::msi(3), None),
            Ok(MsiMessage::new(0xFEE0_0218, 0x12, 0x0007))
        );
        d.set_masked(StorageSlot::msi(2), true, None).unwrap();
        assert_eq!(d.fire(StorageSlot::msi(2), None), Ok(FireAction::Masked));
        assert_eq!(d.pending(StorageSlot::msi(2)), Ok(true));
        assert_eq!(
            d.set_masked(StorageSlot::msi(2), false, None),
            Ok(vec![StorageSlot::msi(2)])
        );
        assert_eq!(d.storage_writes(StorageKind::Msi), 4);
        let no_mask = Device::new(&DeviceConfig::new(RID).with_msi(MsiConfig {
            vectors_log2: 0,
            per_vector_masking: false,
            address_64bit: false,
        }));
        assert_eq!(
            no_mask.unwrap().set_masked(StorageSlot::msi(0), true, None),
            Err(DeviceError::NoMaskBits)
        );
    }

    #[test]
    fn ims_array_and_queue_contexts() {
        let m = mem();
        let mut d = full();
        let a = StorageSlot::ims_device(2047);
        d.write_message(a, MSG, None).unwrap();
        assert_eq!(d.fire(a, None), Ok(FireAction::Masked));
        assert_eq!(d.set_masked(a, false, None), Ok(vec![a]));
        assert_eq!(d.fire(a, None), Ok(FireAction::Send(MSG)));

        let q = StorageSlot::ims_system(1);
        assert_eq!(
            d.write_message(q, MSG, Some(&m)),
            Err(DeviceError::NoQueueContext(1))
        );
        d.set_ims_queue_context(1, 0x800).unwrap();
        assert_eq!(d.write_message(q, MSG, None), Err(DeviceError::NoDmaMemory));
        d.write_message(q, MSG, Some(&m)).unwrap();
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x800)).unwrap(), 0xFEE0_0218);
        assert_eq!(d.fire(q, Some(&m)), Ok(FireAction::Send(MSG)));
        d.set_masked(q, true, Some(&m)).unwrap();
        assert_eq!(d.fire(q, Some(&m)), Ok(FireAction::Masked));
        assert_eq!(d.pending(q), Ok(true));
        assert_eq!(d.set_masked(q, false, Some(&m)), Ok(vec![q]));
        assert_eq!(d.storage_writes(StorageKind::ImsSystem), 3);
        assert_eq!(d.storage_writes(StorageKind::ImsDevice), 2);
        assert_eq!(d.total_storage_writes(), 5);
        let mut buf = [0u8; 4];
        d.read_storage(StorageRegion::ImsQueueContext(1), 0, &mut buf, Some(&m))
            .unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xFEE0_0218);
    }

    #[test]
    fn failed_writes_are_not_counted() {
        let mut d = full();
        assert_eq!(
            d.write_storage(StorageRegion::MsixTable, 8 * 16, &[0], None),
            Err(DeviceError::AccessOutOfRange {
                kind: StorageKind::MsiX,
                offset: 128,
                len: 1,
                size: 128
            })
        );
        assert_eq!(
            d.write_storage(StorageRegion::ImsQueueContext(0), 0, &[0], None),
            Err(DeviceError::NoDmaMemory)
        );
        assert_eq!(d.total_storage_writes(), 0);
    }
}
