//! Per-VM state: negotiation, allocations and their vectors, quotas, legacy hooks.
//!
//! VM state machine (VIR-VMS): `Legacy` → (`NEGOTIATE`) → `Negotiated` → (`RESET` call or
//! platform reset) → `Legacy`. Interrupt state machine, per vector (VIR-IRQ): `Allocated` →
//! `Reserved` → `Active` → `Allocated` (deactivated, message still issued) → freed with the
//! allocation.

use std::collections::BTreeMap;

use vir_abi::feature::Features;
use vir_abi::hw::MsiMessage;
use vir_abi::wire::StorageKind;

use crate::backend::{Gsi, HostIrq, IrteTableId, VmId};
use crate::config::{DeviceConfig, VcpuConfig, VmConfig};
use crate::counters::Counters;
use crate::handles::HandleTable;
use crate::legacy::viommu::Viommu;
use crate::legacy::{EmulatedMsi, EmulatedMsix, LegacyConfig, LegacyCounters, LegacyState};

/// Negotiation state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmState {
    /// Legacy scheme: MSI capability and MSI-X tables trapped and emulated (VIR-LEG-H-001).
    Legacy,
    /// vIR negotiated.
    Negotiated {
        /// Version committed.
        version: u16,
        /// Features committed.
        features: Features,
    },
}

/// A target as named by the guest: its (virtual) APIC id and vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestTarget {
    /// Guest x2APIC id.
    pub apic_id: u32,
    /// Guest vector.
    pub vector: u8,
}

/// An active vector and the physical-side objects behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActiveVector {
    /// The guest's target.
    pub target: GuestTarget,
    /// Index of the target vCPU.
    pub vcpu_index: u32,
    /// The virtual route (GSI with irqfd).
    pub gsi: Gsi,
    /// The started physical IRQ.
    pub host_irq: HostIrq,
    /// The IRTE programmed for it (raw).
    pub irte: u128,
}

/// State of one vector of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorState {
    /// Allocated (or deactivated): IRTE not present, no physical objects.
    Allocated,
    /// Reservation-activated: IRTE not present with FPD = 1, no physical objects.
    Reserved,
    /// Active.
    Active(ActiveVector),
}

/// One allocation: a storage slot (or MSI block) of a device and its physical IRTEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Guest-visible device id.
    pub device_id: u32,
    /// Storage kind.
    pub kind: StorageKind,
    /// Storage index (0 for MSI).
    pub index: u32,
    /// log2 of the vector count (MSI only; 0 otherwise).
    pub log2_count: u8,
    /// First physical IRTE index (naturally aligned to the count).
    pub base: u32,
    /// The physical table the entries live in (the device's own table on AMD-Vi).
    pub table: IrteTableId,
    /// The message, composed by the vendor seam when the allocation was made.
    pub(crate) message: MsiMessage,
    /// Whether the message was returned by an `ACTIVATE` already.
    pub message_issued: bool,
    /// Per-vector state, indexed by sub-handle.
    pub vectors: Vec<VectorState>,
}

impl Allocation {
    /// Number of vectors (sub-handles `0..count`).
    pub fn count(&self) -> u32 {
        1 << self.log2_count
    }

    /// The message of this allocation (VIR-ACT-H-009, VIR-FMT-H-001, VIR-FMT-H-005), composed
    /// by [`crate::iommu::RemappingVendor::message`] from the first IRTE index (VT-d:
    /// remappable format, handle = first index, SHV = 1, data 0; AMD-Vi: data = first index).
    /// A function of the allocation only: the same for every sub-handle, activation and
    /// affinity.
    pub fn message(&self) -> MsiMessage {
        self.message
    }
}

/// Key of a live storage slot: (device id, kind, index).
pub(crate) type SlotKey = (u32, u8, u32);

/// One VM of a host.
#[derive(Debug, Clone)]
pub struct Vm {
    pub(crate) id: VmId,
    pub(crate) config: VmConfig,
    pub(crate) state: VmState,
    pub(crate) session: u32,
    pub(crate) legacy_enabled: u32,
    pub(crate) allocations: HandleTable<Allocation>,
    pub(crate) slots: BTreeMap<SlotKey, u32>,
    pub(crate) irtes_used: u32,
    pub(crate) vectors_used: u32,
    pub(crate) doorbell_latch: Vec<u32>,
    pub(crate) counters: Counters,
    pub(crate) legacy: LegacyState,
}

impl Vm {
    pub(crate) fn new(id: VmId, config: VmConfig) -> Self {
        let nvcpus = config.vcpus.len();
        Vm {
            id,
            state: VmState::Legacy,
            session: 0,
            legacy_enabled: 0,
            allocations: HandleTable::new(),
            slots: BTreeMap::new(),
            irtes_used: 0,
            vectors_used: 0,
            doorbell_latch: vec![0; nvcpus],
            counters: Counters::default(),
            legacy: LegacyState::new(&config),
            config,
        }
    }

    /// The VM's id.
    pub fn id(&self) -> VmId {
        self.id
    }

    /// Its configuration.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Negotiation state.
    pub fn state(&self) -> VmState {
        self.state
    }

    /// Number of successful negotiations so far (the current session's number when negotiated).
    pub fn session(&self) -> u32 {
        self.session
    }

    /// Features committed (none in the legacy state).
    pub fn features(&self) -> Features {
        match self.state {
            VmState::Legacy => Features::NONE,
            VmState::Negotiated { features, .. } => features,
        }
    }

    /// Whether the MSI-X tables of the VM's devices are trapped: yes in the legacy state, no once
    /// vIR is negotiated (VIR-LEG-H-001, VIR-LEG-H-002). The MSI capability stays trapped always
    /// (VIR-LEG-H-003).
    pub fn msix_trapped(&self) -> bool {
        self.state == VmState::Legacy
    }

    /// Number of legacy (trapped) MSI/MSI-X interrupts the guest has enabled, as last reported
    /// by [`Vm::set_legacy_interrupts_enabled`].
    pub fn legacy_interrupts_enabled(&self) -> u32 {
        self.legacy_enabled
    }

    /// Report how many legacy (trapped, emulated) MSI/MSI-X interrupts of this VM are enabled.
    ///
    /// The legacy trap-and-emulate code ([`Host::trap_write`](crate::Host::trap_write)) sets it
    /// to the number of enabled MSI and MSI-X capabilities after every trapped write. While the count is non-zero, `NEGOTIATE` fails with
    /// `INVALID_STATE` (VIR-NEG-H-004): the guest must disable them before switching. A platform
    /// reset sets it back to 0.
    pub fn set_legacy_interrupts_enabled(&mut self, count: u32) {
        self.legacy_enabled = count;
    }

    /// The allocation named by `handle`, if live.
    pub fn allocation(&self, handle: u32) -> Option<&Allocation> {
        self.allocations.get(handle)
    }

    /// Live allocations with their handles.
    pub fn allocations(&self) -> impl Iterator<Item = (u32, &Allocation)> {
        self.allocations.iter()
    }

    /// IRTEs held.
    pub fn irtes_used(&self) -> u32 {
        self.irtes_used
    }

    /// Host vectors held.
    pub fn vectors_used(&self) -> u32 {
        self.vectors_used
    }

    /// This VM's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The message issued for the device's live MSI allocation, if any: in the negotiated state
    /// the trapped MSI capability accepts only this message (VIR-LEG-H-003).
    pub fn msi_message_issued(&self, device_id: u32) -> Option<MsiMessage> {
        let handle = *self.slots.get(&(device_id, StorageKind::MSI.0, 0))?;
        let a = self.allocations.get(handle)?;
        a.message_issued.then(|| a.message())
    }

    /// The device with guest-visible id `device_id`.
    pub fn device(&self, device_id: u32) -> Option<&DeviceConfig> {
        self.config
            .devices
            .iter()
            .find(|d| d.device_id == device_id)
    }

    /// The vCPU with guest APIC id `apic_id`, with its index.
    pub fn vcpu_by_apic_id(&self, apic_id: u32) -> Option<(u32, &VcpuConfig)> {
        self.config
            .vcpus
            .iter()
            .enumerate()
            .find(|(_, v)| v.apic_id == apic_id)
            .map(|(i, v)| (i as u32, v))
    }

    /// The legacy configuration ([`Host::set_legacy_config`](crate::Host::set_legacy_config)).
    pub fn legacy_config(&self) -> LegacyConfig {
        self.legacy.config
    }

    /// The emulated MSI capability of device `device_id` (`None` for an unknown device).
    pub fn emulated_msi(&self, device_id: u32) -> Option<&EmulatedMsi> {
        let i = self
            .config
            .devices
            .iter()
            .position(|d| d.device_id == device_id)?;
        self.legacy.devices.get(i).map(|d| &d.msi)
    }

    /// The emulated MSI-X capability and table of device `device_id`.
    pub fn emulated_msix(&self, device_id: u32) -> Option<&EmulatedMsix> {
        let i = self
            .config
            .devices
            .iter()
            .position(|d| d.device_id == device_id)?;
        self.legacy.devices.get(i).map(|d| &d.msix)
    }

    /// The emulated remapping unit.
    pub fn viommu(&self) -> &Viommu {
        &self.legacy.viommu
    }

    /// Exit and event counters of the legacy scheme.
    pub fn legacy_counters(&self) -> &LegacyCounters {
        &self.legacy.counters
    }

    /// Vectors the legacy scheme delivers now.
    pub fn legacy_live_vectors(&self) -> usize {
        self.legacy.live_vectors()
    }
}
