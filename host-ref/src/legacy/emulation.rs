//! Emulated MSI and MSI-X state of a VM's devices, and the reconciliation of what the guest
//! wants with the physical side (routes, host IRQs, host IRTEs, physical storage).

use std::collections::{BTreeMap, BTreeSet};

use vir_abi::hw::msi::{CompatMsi, DeliveryMode, MsiMessage};
use vir_abi::wire::StorageKind;

use crate::backend::{
    Gsi, HostIrq, IrqSource, IrteTable, PhysicalIrqs, RouteTarget, VirtualRouting, VmId,
};
use crate::calls::{Phys, active_irte};
use crate::config::{DeviceConfig, VcpuConfig, VmConfig};
use crate::iommu::ga_tag;
use crate::vm::{GuestTarget, Vm};

use super::viommu::{Translation, Viommu};
use super::{
    DeviceStorage, LegacyConfig, LegacyCounters, LegacySetupError, LegacySlot, VectorEvent,
    VirtualTarget,
};

/// MSI Message Control bit 0.
pub(crate) const MSI_ENABLE: u16 = 1;
/// MSI Message Control bit 7: 64-bit address capable.
pub(crate) const MSI_64BIT: u16 = 1 << 7;
/// MSI Message Control bit 8: per-vector masking capable.
pub(crate) const MSI_PVM: u16 = 1 << 8;
/// MSI-X Message Control bit 15.
pub(crate) const MSIX_ENABLE: u16 = 1 << 15;
/// MSI-X Message Control bit 14.
pub(crate) const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// MSI-X Vector Control bit 0.
pub(crate) const MSIX_MASKED: u32 = 1;

/// A vector that is delivered: the physical-side objects behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LiveVector {
    /// Where it is delivered.
    pub target: VirtualTarget,
    /// The virtual route.
    pub gsi: Gsi,
    /// The started physical IRQ.
    pub host_irq: HostIrq,
    /// The host IRTE (index, raw entry) with host remapping on.
    pub irte: Option<(u32, u128)>,
    /// The message programmed into the physical storage for it.
    pub physical_message: MsiMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct VectorSlot {
    pub live: Option<LiveVector>,
    /// The guest remapping-table entry the wanted message names, for re-resolution after an
    /// invalidation.
    pub virte: Option<u16>,
}

/// The host IRTE block and physical enable of an MSI capability with live vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MsiBlock {
    /// First host IRTE (host remapping on).
    pub base: Option<u32>,
    /// log2 of the block size (the Multiple Message Enable programmed).
    pub log2: u8,
}

/// The emulated MSI capability of a device, as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedMsi {
    pub(crate) capable_log2: u8,
    pub(crate) enabled: bool,
    pub(crate) mme: u8,
    pub(crate) address_lo: u32,
    pub(crate) address_hi: u32,
    pub(crate) data: u16,
    pub(crate) mask: u32,
    pub(crate) vectors: Vec<VectorSlot>,
    pub(crate) block: Option<MsiBlock>,
    pub(crate) physical_mask: u32,
}

impl EmulatedMsi {
    fn new(vectors: u8) -> Self {
        EmulatedMsi {
            capable_log2: if vectors == 0 {
                0
            } else {
                vectors.trailing_zeros() as u8
            },
            enabled: false,
            mme: 0,
            address_lo: 0,
            address_hi: 0,
            data: 0,
            mask: 0,
            vectors: vec![VectorSlot::default(); usize::from(vectors)],
            block: None,
            physical_mask: 0,
        }
    }

    /// MSI Enable.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Multiple Message Enable (log2 of the vectors enabled).
    pub fn mme(&self) -> u8 {
        self.mme
    }

    /// The message in the address and data registers.
    pub fn message(&self) -> MsiMessage {
        MsiMessage::new(self.address_lo, self.address_hi, u32::from(self.data))
    }

    /// Mask Bits.
    pub fn mask_bits(&self) -> u32 {
        self.mask
    }

    /// The physical-side objects of vector `vector`, if delivered.
    pub fn live(&self, vector: u8) -> Option<&LiveVector> {
        self.vectors
            .get(usize::from(vector))
            .and_then(|s| s.live.as_ref())
    }

    /// The Message Control register as read by the guest.
    pub fn control(&self) -> u16 {
        u16::from(self.enabled)
            | u16::from(self.capable_log2) << 1
            | u16::from(self.mme) << 4
            | MSI_64BIT
            | MSI_PVM
    }

    /// Vector `i`'s message: the device replaces the low `mme` bits of the data by `i`.
    fn vector_message(&self, i: u8) -> MsiMessage {
        let low = (1u32 << self.mme) - 1;
        let data = (u32::from(self.data) & !low) | (u32::from(i) & low);
        MsiMessage::new(self.address_lo, self.address_hi, data)
    }

    fn reset(&mut self) {
        self.enabled = false;
        self.mme = 0;
        self.address_lo = 0;
        self.address_hi = 0;
        self.data = 0;
        self.mask = 0;
    }
}

/// One emulated MSI-X table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulatedMsixEntry {
    pub(crate) address_lo: u32,
    pub(crate) address_hi: u32,
    pub(crate) data: u32,
    pub(crate) vector_control: u32,
    pub(crate) slot: VectorSlot,
}

impl EmulatedMsixEntry {
    /// The reset value: address and data 0, masked (VIR-RST-H-006).
    const RESET: Self = EmulatedMsixEntry {
        address_lo: 0,
        address_hi: 0,
        data: 0,
        vector_control: MSIX_MASKED,
        slot: VectorSlot {
            live: None,
            virte: None,
        },
    };

    /// The message.
    pub fn message(&self) -> MsiMessage {
        MsiMessage::new(self.address_lo, self.address_hi, self.data)
    }

    /// Vector Control.
    pub fn vector_control(&self) -> u32 {
        self.vector_control
    }

    /// The mask bit.
    pub fn masked(&self) -> bool {
        self.vector_control & MSIX_MASKED != 0
    }

    /// The physical-side objects, if delivered.
    pub fn live(&self) -> Option<&LiveVector> {
        self.slot.live.as_ref()
    }
}

/// The emulated MSI-X capability and table of a device, as the guest sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedMsix {
    pub(crate) enabled: bool,
    pub(crate) function_mask: bool,
    pub(crate) entries: Vec<EmulatedMsixEntry>,
}

impl EmulatedMsix {
    fn new(entries: u32) -> Self {
        EmulatedMsix {
            enabled: false,
            function_mask: false,
            entries: vec![EmulatedMsixEntry::RESET; entries as usize],
        }
    }

    /// MSI-X Enable.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Function Mask.
    pub fn function_masked(&self) -> bool {
        self.function_mask
    }

    /// Table size.
    pub fn len(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Whether the device has no MSI-X table.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `index`.
    pub fn entry(&self, index: u32) -> Option<&EmulatedMsixEntry> {
        self.entries.get(index as usize)
    }

    /// The Message Control register as read by the guest.
    pub fn control(&self) -> u16 {
        let size = (self.entries.len() as u16).saturating_sub(1) & 0x7FF;
        size | if self.enabled { MSIX_ENABLE } else { 0 }
            | if self.function_mask {
                MSIX_FUNCTION_MASK
            } else {
                0
            }
    }

    fn reset(&mut self) {
        self.enabled = false;
        self.function_mask = false;
        for e in &mut self.entries {
            let slot = e.slot;
            *e = EmulatedMsixEntry::RESET;
            e.slot = slot;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceEmulation {
    pub msi: EmulatedMsi,
    pub msix: EmulatedMsix,
    /// The physical MSI-X table may hold entries the host did not write (after an untrapped
    /// session or a reset): disable and mask everything before programming it.
    pub msix_stale: bool,
    /// The physical MSI capability may be enabled with a message the host did not choose.
    pub msi_stale: bool,
}

/// A vector of a device, as the reverse index names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum SlotRef {
    Msi(u8),
    MsiX(u32),
}

/// (device index in the VM's configuration, vector).
pub(crate) type SlotKey = (u32, SlotRef);

/// The legacy state of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LegacyState {
    pub config: LegacyConfig,
    pub devices: Vec<DeviceEmulation>,
    pub viommu: Viommu,
    /// Guest remapping-table index → the wanted vectors whose message names it.
    pub users: BTreeMap<u16, BTreeSet<SlotKey>>,
    pub counters: LegacyCounters,
}

impl LegacyState {
    pub(crate) fn new(config: &VmConfig) -> Self {
        LegacyState {
            config: LegacyConfig::default(),
            devices: config
                .devices
                .iter()
                .map(|d| DeviceEmulation {
                    msi: EmulatedMsi::new(d.storage.msi_vectors),
                    msix: EmulatedMsix::new(d.storage.msix_entries),
                    msix_stale: false,
                    msi_stale: false,
                })
                .collect(),
            viommu: Viommu::default(),
            users: BTreeMap::new(),
            counters: LegacyCounters::default(),
        }
    }

    /// Emulated MSI and MSI-X capabilities enabled (the count behind VIR-NEG-H-004).
    pub(crate) fn enabled_capabilities(&self) -> u32 {
        self.devices
            .iter()
            .map(|d| u32::from(d.msi.enabled) + u32::from(d.msix.enabled))
            .sum()
    }

    /// Vectors delivered.
    pub(crate) fn live_vectors(&self) -> usize {
        self.devices
            .iter()
            .map(|d| {
                d.msi.vectors.iter().filter(|s| s.live.is_some()).count()
                    + d.msix
                        .entries
                        .iter()
                        .filter(|e| e.slot.live.is_some())
                        .count()
            })
            .sum()
    }
}

/// A [`DeviceStorage`] that counts the writes it passes on.
pub(crate) struct Counted<'a> {
    pub inner: &'a mut dyn DeviceStorage,
    pub writes: &'a mut u64,
}

impl DeviceStorage for Counted<'_> {
    fn write_msi_message(&mut self, rid: u16, m: MsiMessage) {
        *self.writes += 1;
        self.inner.write_msi_message(rid, m)
    }
    fn set_msi_mask(&mut self, rid: u16, mask: u32) {
        *self.writes += 1;
        self.inner.set_msi_mask(rid, mask)
    }
    fn set_msi_control(&mut self, rid: u16, enabled: bool, mme: u8) {
        *self.writes += 1;
        self.inner.set_msi_control(rid, enabled, mme)
    }
    fn write_msix_message(&mut self, rid: u16, index: u32, m: MsiMessage) {
        *self.writes += 1;
        self.inner.write_msix_message(rid, index, m)
    }
    fn set_msix_masked(&mut self, rid: u16, index: u32, masked: bool) {
        *self.writes += 1;
        self.inner.set_msix_masked(rid, index, masked)
    }
    fn set_msix_control(&mut self, rid: u16, enabled: bool, fm: bool) {
        *self.writes += 1;
        self.inner.set_msix_control(rid, enabled, fm)
    }
}

/// Everything reconciliation touches.
pub(crate) struct Cx<'a, 'p, T, R, P> {
    pub phys: &'a mut Phys<'p, T, R, P>,
    pub vm_id: VmId,
    pub negotiated: bool,
    pub vm_config: &'a VmConfig,
    pub legacy: &'a mut LegacyState,
    pub storage: &'a mut dyn DeviceStorage,
    pub read_virte: &'a dyn Fn(u64) -> Option<u128>,
    pub events: Vec<VectorEvent>,
}

fn legacy_slot(dev: &DeviceConfig, slot: SlotRef) -> LegacySlot {
    match slot {
        SlotRef::Msi(vector) => LegacySlot::Msi {
            device_id: dev.device_id,
            vector,
        },
        SlotRef::MsiX(index) => LegacySlot::MsiX {
            device_id: dev.device_id,
            index,
        },
    }
}

fn vector_slot(d: &mut DeviceEmulation, slot: SlotRef) -> Option<&mut VectorSlot> {
    match slot {
        SlotRef::Msi(i) => d.msi.vectors.get_mut(usize::from(i)),
        SlotRef::MsiX(i) => d.msix.entries.get_mut(i as usize).map(|e| &mut e.slot),
    }
}

/// The message of `slot` if the guest wants it delivered now.
fn wanted_message(d: &DeviceEmulation, slot: SlotRef, negotiated: bool) -> Option<MsiMessage> {
    if negotiated {
        return None;
    }
    match slot {
        SlotRef::Msi(i) => {
            let in_block = u32::from(i) < (1u32 << d.msi.mme);
            let unmasked = d.msi.mask & (1u32 << (i & 31)) == 0;
            (d.msi.enabled && in_block && unmasked).then(|| d.msi.vector_message(i))
        }
        SlotRef::MsiX(i) => {
            let e = d.msix.entries.get(i as usize)?;
            (d.msix.enabled && !d.msix.function_mask && !e.masked()).then(|| e.message())
        }
    }
}

/// The vCPU and vector a decoded destination names (VIR-SEC-H-003: only this VM's vCPUs).
fn virtual_target(
    vcpus: &[VcpuConfig],
    apic_id: u32,
    vector: u8,
    logical: bool,
    delivery_mode: u8,
) -> Result<VirtualTarget, LegacySetupError> {
    if logical || delivery_mode > 1 {
        return Err(LegacySetupError::UnsupportedDelivery {
            delivery_mode,
            logical,
        });
    }
    if vector < 0x10 {
        return Err(LegacySetupError::IllegalVector(vector));
    }
    let i = vcpus
        .iter()
        .position(|v| v.apic_id == apic_id)
        .ok_or(LegacySetupError::NoSuchVcpu(apic_id))?;
    Ok(VirtualTarget {
        vcpu_index: i as u32,
        apic_id,
        vector,
    })
}

/// Decodes a wanted message into a target (through the emulated remapping unit when it is on).
/// Returns the guest remapping-table index the message names, when there is one.
fn resolve<T, R, P>(
    cx: &mut Cx<'_, '_, T, R, P>,
    guest_rid: u16,
    msg: MsiMessage,
) -> (Result<VirtualTarget, LegacySetupError>, Option<u16>) {
    let vcpus = &cx.vm_config.vcpus;
    let (translation, index) = if cx.legacy.config.viommu {
        let LegacyState {
            viommu, counters, ..
        } = &mut *cx.legacy;
        viommu.translate(msg, guest_rid, cx.read_virte, &mut counters.virte_reads)
    } else {
        (Translation::Compat, None)
    };
    let r = match translation {
        Translation::Compat => CompatMsi::decode(msg, cx.legacy.config.ext_dest_id)
            .map_err(LegacySetupError::Message)
            .and_then(|c| {
                virtual_target(
                    vcpus,
                    c.dest_id,
                    c.vector,
                    c.dest_mode_logical,
                    c.delivery_mode.bits(),
                )
            }),
        Translation::Remapped { irte, .. } => virtual_target(
            vcpus,
            irte.dest,
            irte.vector,
            irte.dest_mode_logical,
            irte.delivery_mode,
        ),
        Translation::Fault(f) => Err(LegacySetupError::Remapping(f)),
    };
    (r, index)
}

/// Brings `slot` of device `di` in line with what the guest wants.
pub(crate) fn reconcile<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    cx: &mut Cx<'_, '_, T, R, P>,
    di: usize,
    slot: SlotRef,
) {
    let Some(dev) = cx.vm_config.devices.get(di).copied() else {
        return;
    };
    let Some(d) = cx.legacy.devices.get(di) else {
        return;
    };
    let wanted = wanted_message(d, slot, cx.negotiated);
    let (desired, virte) = match wanted {
        None => (None, None),
        Some(msg) => {
            let (r, i) = resolve(cx, dev.device_id as u16, msg);
            (Some(r), i)
        }
    };
    let Some(vs) = cx
        .legacy
        .devices
        .get_mut(di)
        .and_then(|d| vector_slot(d, slot))
    else {
        return;
    };
    let old_virte = core::mem::replace(&mut vs.virte, virte);
    let live = vs.live;
    let key = (di as u32, slot);
    if old_virte != virte {
        if let Some(o) = old_virte
            && let Some(set) = cx.legacy.users.get_mut(&o)
        {
            set.remove(&key);
            if set.is_empty() {
                cx.legacy.users.remove(&o);
            }
        }
        if let Some(n) = virte {
            cx.legacy.users.entry(n).or_default().insert(key);
        }
    }
    let ls = legacy_slot(&dev, slot);
    let mut events = Vec::new();
    match (live, desired) {
        (None, None) => {}
        (None, Some(Ok(t))) => match setup(cx, di, &dev, slot, t) {
            Ok(()) => events.push(VectorEvent::SetUp {
                slot: ls,
                target: t,
            }),
            Err(error) => events.push(VectorEvent::SetupFailed { slot: ls, error }),
        },
        (None, Some(Err(error))) => events.push(VectorEvent::SetupFailed { slot: ls, error }),
        (Some(l), None) => {
            teardown(cx, di, &dev, slot);
            events.push(VectorEvent::TornDown {
                slot: ls,
                was: l.target,
            });
        }
        (Some(l), Some(Err(error))) => {
            teardown(cx, di, &dev, slot);
            events.push(VectorEvent::TornDown {
                slot: ls,
                was: l.target,
            });
            events.push(VectorEvent::SetupFailed { slot: ls, error });
        }
        (Some(l), Some(Ok(t))) if l.target == t => {}
        (Some(l), Some(Ok(t))) => match retarget(cx, di, &dev, slot, t) {
            Ok(()) => events.push(VectorEvent::Retargeted {
                slot: ls,
                from: l.target,
                to: t,
            }),
            Err(error) => events.push(VectorEvent::RetargetFailed {
                slot: ls,
                kept: l.target,
                error,
            }),
        },
    }
    for e in events {
        cx.legacy.counters.count_event(&e);
        cx.events.push(e);
    }
}

/// Reconciles every vector of the MSI capability of device `di`; a live block whose size no
/// longer matches Multiple Message Enable is torn down first.
pub(crate) fn reconcile_msi<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    cx: &mut Cx<'_, '_, T, R, P>,
    di: usize,
) {
    let Some(d) = cx.legacy.devices.get(di) else {
        return;
    };
    let n = d.msi.vectors.len();
    if let Some(b) = d.msi.block
        && b.log2 != d.msi.mme
        && let Some(dev) = cx.vm_config.devices.get(di).copied()
    {
        for i in 0..n as u8 {
            let live = cx
                .legacy
                .devices
                .get(di)
                .and_then(|d| d.msi.vectors.get(usize::from(i)))
                .and_then(|s| s.live);
            if let Some(l) = live {
                teardown(cx, di, &dev, SlotRef::Msi(i));
                let e = VectorEvent::TornDown {
                    slot: legacy_slot(&dev, SlotRef::Msi(i)),
                    was: l.target,
                };
                cx.legacy.counters.count_event(&e);
                cx.events.push(e);
            }
        }
    }
    for i in 0..n as u8 {
        reconcile(cx, di, SlotRef::Msi(i));
    }
}

/// Reconciles every entry of the MSI-X table of device `di`.
pub(crate) fn reconcile_msix<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    cx: &mut Cx<'_, '_, T, R, P>,
    di: usize,
) {
    let n = cx
        .legacy
        .devices
        .get(di)
        .map_or(0, |d| d.msix.entries.len());
    for i in 0..n as u32 {
        reconcile(cx, di, SlotRef::MsiX(i));
    }
}

fn storage_kind(slot: SlotRef) -> (StorageKind, u32) {
    match slot {
        SlotRef::Msi(i) => (StorageKind::MSI, u32::from(i)),
        SlotRef::MsiX(i) => (StorageKind::MSIX, i),
    }
}

fn compat_message(apic_id: u32, vector: u8) -> Result<MsiMessage, LegacySetupError> {
    CompatMsi {
        dest_id: apic_id,
        dest_mode_logical: false,
        redirection_hint: false,
        vector,
        delivery_mode: DeliveryMode::Fixed,
        level_assert: false,
        trigger_level: false,
    }
    .encode(false)
    .map_err(|_| LegacySetupError::HostDestination(apic_id))
}

/// Sets up a wanted vector: host IRTE room first, then (a) route, (b) physical IRQ, (c) IRTE,
/// then the physical message and unmask; any failure undoes the earlier steps.
fn setup<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    cx: &mut Cx<'_, '_, T, R, P>,
    di: usize,
    dev: &DeviceConfig,
    slot: SlotRef,
    t: VirtualTarget,
) -> Result<(), LegacySetupError> {
    let Some(vcpu) = cx.vm_config.vcpus.get(t.vcpu_index as usize).copied() else {
        return Err(LegacySetupError::NoSuchVcpu(t.apic_id));
    };
    let host_ir = cx.phys.config.physical_ir_enabled;
    let Some(d) = cx.legacy.devices.get(di) else {
        return Err(LegacySetupError::NoSuchVcpu(t.apic_id));
    };
    let mme = d.msi.mme;
    let block = d.msi.block;
    // Room in the host table (nothing taken yet).
    let (irte_index, new_block) = match (slot, host_ir) {
        (SlotRef::MsiX(_), true) => {
            let i = cx
                .phys
                .alloc
                .find(cx.phys.config.vendor().table_of(dev), 0)
                .ok_or(LegacySetupError::TableFull { log2: 0 })?;
            (Some(i), None)
        }
        (SlotRef::MsiX(_), false) => (None, None),
        (SlotRef::Msi(i), _) => match block {
            Some(b) => (b.base.map(|base| base + u32::from(i)), None),
            None if host_ir => {
                let base = cx
                    .phys
                    .alloc
                    .find(cx.phys.config.vendor().table_of(dev), mme)
                    .ok_or(LegacySetupError::TableFull { log2: mme })?;
                let b = MsiBlock {
                    base: Some(base),
                    log2: mme,
                };
                (Some(base + u32::from(i)), Some(b))
            }
            None if mme != 0 => return Err(LegacySetupError::MultiMessageWithoutHostIr(mme)),
            None => (
                None,
                Some(MsiBlock {
                    base: None,
                    log2: 0,
                }),
            ),
        },
    };
    // (a)
    let route = RouteTarget {
        vcpu_index: t.vcpu_index,
        apic_id: t.apic_id,
        vector: t.vector,
    };
    let gsi = cx
        .phys
        .routing
        .add_route(cx.vm_id, route)
        .map_err(LegacySetupError::Backend)?;
    // (b)
    let (kind, index) = storage_kind(slot);
    let source = IrqSource {
        requester_id: dev.requester_id,
        kind,
        slot: index,
    };
    let host_irq = match cx.phys.irqs.start(cx.vm_id, source, gsi, vcpu.pcpu) {
        Ok(irq) => irq,
        Err(e) => {
            cx.phys.routing.remove_route(cx.vm_id, gsi);
            return Err(LegacySetupError::Backend(e));
        }
    };
    let undo = |cx: &mut Cx<'_, '_, T, R, P>| {
        cx.phys.irqs.stop(host_irq.id);
        cx.phys.routing.remove_route(cx.vm_id, gsi);
    };
    // (c) the entry, or the compatibility message without host remapping.
    let guest = GuestTarget {
        apic_id: t.apic_id,
        vector: t.vector,
    };
    let (irte, physical_message) = match irte_index {
        Some(i) => {
            let tag = ga_tag(cx.vm_id.0, t.vcpu_index);
            let Ok(raw) = active_irte(cx.phys.config, dev, guest, &vcpu, host_irq.vector, tag)
            else {
                undo(cx);
                return Err(LegacySetupError::IrteEncode);
            };
            // MSI: the block's first entry; the device adds the vector index (sub-handle).
            let handle = match slot {
                SlotRef::MsiX(_) => i,
                SlotRef::Msi(_) => new_block.or(block).and_then(|b| b.base).unwrap_or(i),
            };
            let Ok(msg) = cx.phys.config.vendor().message(handle) else {
                undo(cx);
                return Err(LegacySetupError::IrteEncode);
            };
            (Some((i, raw)), msg)
        }
        None => match compat_message(host_irq.vector.apic_id, host_irq.vector.vector) {
            Ok(m) => (None, m),
            Err(e) => {
                undo(cx);
                return Err(e);
            }
        },
    };
    // Commit: nothing below fails.
    let rid = dev.requester_id;
    let Cx {
        phys,
        legacy,
        storage,
        ..
    } = cx;
    let mut st = Counted {
        inner: &mut **storage,
        writes: &mut legacy.counters.physical_writes,
    };
    if let Some((i, raw)) = irte {
        if let SlotRef::MsiX(_) = slot {
            phys.alloc.take(phys.config.vendor().table_of(dev), i, 0);
        }
        if let Some(MsiBlock {
            base: Some(base),
            log2,
        }) = new_block
        {
            phys.alloc
                .take(phys.config.vendor().table_of(dev), base, log2);
        }
        phys.table.write(phys.config.vendor().table_of(dev), i, raw);
    }
    let Some(d) = legacy.devices.get_mut(di) else {
        return Ok(());
    };
    match slot {
        SlotRef::MsiX(index) => {
            st.write_msix_message(rid, index, physical_message);
            st.set_msix_masked(rid, index, false);
        }
        SlotRef::Msi(i) => {
            if let Some(b) = new_block {
                d.msi.block = Some(b);
                st.write_msi_message(rid, physical_message);
                d.msi.physical_mask = u32::MAX;
                st.set_msi_mask(rid, d.msi.physical_mask);
                st.set_msi_control(rid, true, b.log2);
            } else if irte.is_none() {
                // One vector without host remapping: its own message.
                st.write_msi_message(rid, physical_message);
            }
            d.msi.physical_mask &= !(1u32 << (i & 31));
            st.set_msi_mask(rid, d.msi.physical_mask);
        }
    }
    if let Some(vs) = vector_slot(d, slot) {
        vs.live = Some(LiveVector {
            target: t,
            gsi,
            host_irq,
            irte,
            physical_message,
        });
    }
    Ok(())
}

/// Tears a live vector down: physical mask, host IRTE not present, physical IRQ stopped, route
/// removed, host table entries released.
pub(crate) fn teardown<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    cx: &mut Cx<'_, '_, T, R, P>,
    di: usize,
    dev: &DeviceConfig,
    slot: SlotRef,
) {
    let Cx {
        phys,
        legacy,
        storage,
        vm_id,
        ..
    } = cx;
    let mut st = Counted {
        inner: &mut **storage,
        writes: &mut legacy.counters.physical_writes,
    };
    release(
        phys,
        *vm_id,
        legacy.devices.get_mut(di),
        dev,
        slot,
        Some(&mut st),
    );
}

fn release<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm_id: VmId,
    d: Option<&mut DeviceEmulation>,
    dev: &DeviceConfig,
    slot: SlotRef,
    mut storage: Option<&mut dyn DeviceStorage>,
) {
    let Some(d) = d else {
        return;
    };
    let Some(l) = vector_slot(d, slot).and_then(|vs| vs.live.take()) else {
        return;
    };
    let rid = dev.requester_id;
    match (slot, storage.as_deref_mut()) {
        (SlotRef::MsiX(index), Some(s)) => s.set_msix_masked(rid, index, true),
        (SlotRef::Msi(i), Some(s)) => {
            d.msi.physical_mask |= 1u32 << (i & 31);
            s.set_msi_mask(rid, d.msi.physical_mask);
        }
        (SlotRef::MsiX(_), None) => d.msix_stale = true,
        (SlotRef::Msi(_), None) => d.msi_stale = true,
    }
    if let Some((i, _)) = l.irte {
        phys.table.write(phys.config.vendor().table_of(dev), i, 0);
        if let SlotRef::MsiX(_) = slot {
            phys.alloc.release(phys.config.vendor().table_of(dev), i, 0);
        }
    }
    phys.irqs.stop(l.host_irq.id);
    phys.routing.remove_route(vm_id, l.gsi);
    if let SlotRef::Msi(_) = slot
        && d.msi.vectors.iter().all(|s| s.live.is_none())
        && let Some(b) = d.msi.block.take()
    {
        if let Some(s) = storage {
            s.set_msi_control(rid, false, 0);
        }
        if let Some(base) = b.base {
            phys.alloc
                .release(phys.config.vendor().table_of(dev), base, b.log2);
        }
    }
}

/// Moves a live vector to `t`: every fallible step (vector on the new physical CPU, route)
/// before the IRTE rewrite; on failure the old target stays in force. With host remapping on
/// the device is not touched.
fn retarget<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    cx: &mut Cx<'_, '_, T, R, P>,
    di: usize,
    dev: &DeviceConfig,
    slot: SlotRef,
    t: VirtualTarget,
) -> Result<(), LegacySetupError> {
    let Some(vcpu) = cx.vm_config.vcpus.get(t.vcpu_index as usize).copied() else {
        return Err(LegacySetupError::NoSuchVcpu(t.apic_id));
    };
    let Some(l) = cx
        .legacy
        .devices
        .get_mut(di)
        .and_then(|d| vector_slot(d, slot))
        .and_then(|vs| vs.live)
    else {
        return Err(LegacySetupError::NoSuchVcpu(t.apic_id));
    };
    let moving = vcpu.pcpu != l.host_irq.vector.cpu;
    let host_vector = if moving {
        cx.phys
            .irqs
            .prepare_affinity(l.host_irq.id, vcpu.pcpu)
            .map_err(LegacySetupError::Backend)?
    } else {
        l.host_irq.vector
    };
    let abort = |cx: &mut Cx<'_, '_, T, R, P>| {
        if moving {
            cx.phys.irqs.abort_affinity(l.host_irq.id);
        }
    };
    let guest = GuestTarget {
        apic_id: t.apic_id,
        vector: t.vector,
    };
    let irte = match l.irte {
        Some((i, _)) => match active_irte(
            cx.phys.config,
            dev,
            guest,
            &vcpu,
            host_vector,
            ga_tag(cx.vm_id.0, t.vcpu_index),
        ) {
            Ok(raw) => Some((i, raw)),
            Err(_) => {
                abort(cx);
                return Err(LegacySetupError::IrteEncode);
            }
        },
        None => None,
    };
    let physical_message = if irte.is_none() && moving {
        match compat_message(host_vector.apic_id, host_vector.vector) {
            Ok(m) => m,
            Err(e) => {
                abort(cx);
                return Err(e);
            }
        }
    } else {
        l.physical_message
    };
    let route = RouteTarget {
        vcpu_index: t.vcpu_index,
        apic_id: t.apic_id,
        vector: t.vector,
    };
    if let Err(e) = cx.phys.routing.update_route(cx.vm_id, l.gsi, route) {
        abort(cx);
        return Err(LegacySetupError::Backend(e));
    }
    if let Some((i, raw)) = irte
        && Some((i, raw)) != l.irte
    {
        cx.phys
            .table
            .write(cx.phys.config.vendor().table_of(dev), i, raw);
    }
    if physical_message != l.physical_message {
        let rid = dev.requester_id;
        let Cx {
            legacy, storage, ..
        } = &mut *cx;
        let mut st = Counted {
            inner: &mut **storage,
            writes: &mut legacy.counters.physical_writes,
        };
        match slot {
            SlotRef::MsiX(index) => st.write_msix_message(rid, index, physical_message),
            SlotRef::Msi(_) => st.write_msi_message(rid, physical_message),
        }
    }
    if moving {
        cx.phys.irqs.commit_affinity(l.host_irq.id);
    }
    if let Some(vs) = cx
        .legacy
        .devices
        .get_mut(di)
        .and_then(|d| vector_slot(d, slot))
    {
        let mut host_irq = l.host_irq;
        host_irq.vector = host_vector;
        vs.live = Some(LiveVector {
            target: t,
            gsi: l.gsi,
            host_irq,
            irte,
            physical_message,
        });
    }
    Ok(())
}

/// Disables and masks the physical storage of devices the host no longer knows the state of.
pub(crate) fn resync(
    legacy: &mut LegacyState,
    devices: &[DeviceConfig],
    storage: &mut dyn DeviceStorage,
) {
    let LegacyState {
        devices: emu,
        counters,
        ..
    } = legacy;
    let mut st = Counted {
        inner: storage,
        writes: &mut counters.physical_writes,
    };
    for (d, dev) in emu.iter_mut().zip(devices) {
        let rid = dev.requester_id;
        if d.msix_stale {
            st.set_msix_control(rid, false, false);
            for (i, e) in d.msix.entries.iter().enumerate() {
                // Live entries only exist when the host programmed them itself.
                if e.slot.live.is_none() {
                    st.set_msix_masked(rid, i as u32, true);
                }
            }
            if d.msix.enabled {
                st.set_msix_control(rid, true, false);
            }
            d.msix_stale = false;
        }
        if d.msi_stale {
            if d.msi.block.is_none() {
                st.set_msi_control(rid, false, 0);
            }
            d.msi_stale = false;
        }
    }
}

/// Tears every live vector down without physical storage access (the devices are marked
/// stale) and brings the emulated capabilities to their reset values (VIR-RST-H-001,
/// VIR-RST-H-006). Used by every reset; the VM's state is set by the caller.
pub(crate) fn reset_emulation<T: IrteTable, R: VirtualRouting, P: PhysicalIrqs>(
    phys: &mut Phys<'_, T, R, P>,
    vm: &mut Vm,
) {
    let Vm {
        id, config, legacy, ..
    } = vm;
    for (d, dev) in legacy.devices.iter_mut().zip(&config.devices) {
        for i in 0..d.msi.vectors.len() as u8 {
            release(phys, *id, Some(d), dev, SlotRef::Msi(i), None);
        }
        for i in 0..d.msix.entries.len() as u32 {
            release(phys, *id, Some(d), dev, SlotRef::MsiX(i), None);
        }
        for s in &mut d.msi.vectors {
            s.virte = None;
        }
        for e in &mut d.msix.entries {
            e.slot.virte = None;
        }
        d.msi.reset();
        d.msix.reset();
        d.msi_stale |= dev.storage.msi_vectors != 0;
        d.msix_stale |= dev.storage.msix_entries != 0;
    }
    legacy.users.clear();
    vm.legacy_enabled = 0;
}

/// `NEGOTIATE` committed: the guest owns the physical MSI-X tables from now on
/// (VIR-LEG-H-002).
pub(crate) fn on_negotiated(vm: &mut Vm) {
    for (d, dev) in vm.legacy.devices.iter_mut().zip(&vm.config.devices) {
        d.msix_stale |= dev.storage.msix_entries != 0;
    }
}
