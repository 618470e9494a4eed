//! The whole platform: physical CPUs, the VT-d remapping unit, posted-interrupt descriptors, the
//! KVM and VFIO models (with the VMs, their guest memory and vCPUs) and devices, wired so that
//! one call runs an interrupt end to end.
//!
//! # The interrupt path
//!
//! [`Machine::fire`] makes a device raise one source; [`Machine::inject_write`] makes an
//! arbitrary (requester id, address, data) write, as a device with forged storage would. Both go
//! the same way:
//!
//! 1. the device reads its stored message (masked → [`FireOutcome::Masked`], pending bit set);
//! 2. the remapping unit checks and translates it ([`RemappingUnit::remap`]) — a fault ends the
//!    path ([`FireOutcome::Faulted`]);
//! 3. *remapped*: the physical CPU named by the IRTE receives the host vector; the VFIO host IRQ
//!    owning (CPU, vector) signals its eventfd; KVM's irqfd, GSI route and the target vCPU's
//!    local APIC turn it into a guest interrupt ([`FireOutcome::Delivered`]);
//! 4. *posted*: the vector is posted into the descriptor the IRTE names, and the notification
//!    vector goes to its NDST if due ([`FireOutcome::Posted`]); [`Machine::sync_posted`] is the
//!    vCPU processing it (PIR → IRR);
//! 5. *passed through* (remapping off, or CFI set): the message is decoded in compatibility format
//!    and delivered to the physical CPU it names, then as in 3.
//!
//! Anything that stops the path on the way is [`FireOutcome::Dropped`] with the reason. Every
//! outcome is appended to a bounded delivery log.
//!
//! With [`Machine::enable_amd_iommu`] interrupts go through an AMD-Vi IOMMU instead of the VT-d
//! unit (step 2): per-device tables, a target abort ends the path ([`FireOutcome::Aborted`]); a
//! guest virtual APIC mode entry sets the vector in the vCPU's vAPIC backing page (set up with
//! [`Machine::setup_vapic_page`]) and is reported as [`FireOutcome::Posted`] with the doorbell or
//! GA log as its notification; [`Machine::sync_posted`] moves the page's IRR into the vCPU's
//! local APIC.
//!
//! The model delivers fixed and lowest-priority interrupts in physical destination mode to the
//! one CPU named; logical destination mode and the other delivery modes (SMI, NMI, INIT, ExtINT)
//! are dropped with [`DropReason::UnsupportedDelivery`].

use core::fmt;
use std::collections::{BTreeMap, VecDeque};

use vir_abi::hw::msi::{CompatMsi, DeliveryMode, MsiError, MsiMessage};
use vir_abi::hw::vtd::Irta;
use vm_memory::GuestMemoryMmap;

use crate::amd_iommu::{AmdAbort, AmdIommu, AmdOutcome, IrteWidth};
use crate::device::{Device, DeviceConfig, DeviceError, FireAction, StorageRegion};
use crate::ids::{DeviceId, EventFdId, HostApicId, RequesterId, StorageSlot, VcpuRef, VmId};
use crate::iommu::{RemapFault, RemapOutcome, RemappingUnit};
use crate::kvm::{InjectError, Kvm, KvmError, VmConfig};
use crate::lapic::Acceptance;
use crate::pcpu::{DEVICE_VECTORS, PcpuError, Pcpus};
use crate::posted::{DescriptorError, PostResult, PostedRegion};
use crate::vfio::{HostIrq, HostIrqKey, Vfio, VfioError};

/// How many records the delivery log keeps (oldest dropped first).
pub const DELIVERY_LOG_CAPACITY: usize = 65536;

/// The Linux posted-interrupt notification vector (`POSTED_INTR_VECTOR`), a convenient NV (and
/// the vector the model's AVIC doorbell arrives with).
pub const POSTED_INTR_VECTOR: u8 = 0xF2;

/// Where [`Machine::setup_vapic_page`] places vAPIC backing pages.
pub const VAPIC_PAGE_BASE: u64 = 0x3000_0000;

/// How to build a [`Machine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// The physical CPUs' APIC ids.
    pub pcpus: Vec<HostApicId>,
    /// Device vectors each physical CPU hands out (at most 203).
    pub vectors_per_pcpu: u16,
    /// The remapping unit's table register.
    pub irta: Irta,
    /// Base address of the posted-interrupt descriptor region (64-byte aligned).
    pub posted_base: u64,
    /// Number of posted-interrupt descriptors.
    pub posted_descriptors: u32,
    /// Whether the APIC bus accepts the extended destination ID in compatibility-format messages
    /// (address bits 11:5).
    pub ext_dest_id: bool,
}

impl MachineConfig {
    /// `pcpus` physical CPUs with APIC ids 0, 1, …, every device vector available, a 4096-entry
    /// remapping table in x2APIC mode, 256 posted descriptors at 0x1_0000_0000, no extended
    /// destination ID.
    pub fn new(pcpus: u32) -> Self {
        Self {
            pcpus: (0..pcpus).map(HostApicId).collect(),
            vectors_per_pcpu: DEVICE_VECTORS,
            irta: Irta {
                size_s: 11,
                eime: true,
                base: 0x2000_0000,
            },
            posted_base: 0x1_0000_0000,
            posted_descriptors: 256,
            ext_dest_id: false,
        }
    }
}

/// Where an interrupt write came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A device raised one of its sources.
    Device {
        /// The device.
        device: DeviceId,
        /// The source.
        slot: StorageSlot,
    },
    /// An arbitrary write made with [`Machine::inject_write`].
    Injected,
}

/// Whether a posted interrupt's notification went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notification {
    /// ON was clear: the notification vector was sent to the physical CPU.
    Sent {
        /// The physical CPU (NDST).
        pcpu: HostApicId,
        /// The notification vector (NV).
        vector: u8,
    },
    /// ON was already set: no new notification.
    Outstanding,
    /// SN set and not urgent: no notification.
    Suppressed,
    /// AMD-Vi guest mode, vCPU running (IsRun = 1): the AVIC doorbell was rung on its CPU.
    Doorbell {
        /// The physical CPU (the entry's destination).
        pcpu: HostApicId,
    },
    /// AMD-Vi guest mode, vCPU not running: the GA tag went to the GA log (`logged`), or nowhere
    /// when the entry has GALogIntr = 0.
    GaLog {
        /// The entry's GA tag.
        tag: u32,
        /// Whether a GA log record was appended.
        logged: bool,
    },
    /// ON was set but NDST names no physical CPU: the notification was lost.
    NoSuchPcpu(HostApicId),
}

/// A posted interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PostedDelivery {
    /// The IRTE index used.
    pub index: u16,
    /// The descriptor.
    pub pda: u64,
    /// The guest vector set in the PIR.
    pub vector: u8,
    /// Urgent.
    pub urgent: bool,
    /// The vCPU owning the descriptor, if it is set up.
    pub owner: Option<VcpuRef>,
    /// The notification.
    pub notification: Notification,
}

/// Why an interrupt went nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// MSI or MSI-X is disabled at the device.
    Disabled,
    /// The device is not attached to guest memory, so it cannot read a system-memory IMS context.
    NoDmaMemory,
    /// The DMA read of a system-memory IMS context failed.
    DmaFault {
        /// The context address.
        gpa: u64,
    },
    /// A passed-through write is not a valid compatibility-format interrupt.
    BadCompatMessage(MsiError),
    /// Logical destination mode, or a delivery mode other than fixed or lowest priority.
    UnsupportedDelivery {
        /// The delivery mode bits.
        delivery_mode: u8,
        /// Logical destination mode.
        logical: bool,
    },
    /// The destination names no physical CPU.
    NoSuchPcpu(HostApicId),
    /// The host vector has no host IRQ on that CPU (a spurious interrupt on the host).
    NoHostIrq {
        /// The physical CPU.
        pcpu: HostApicId,
        /// The host vector.
        vector: u8,
    },
    /// The host IRQ's eventfd did not reach a local APIC.
    Inject(InjectError),
    /// A posted IRTE names an address that is not a descriptor.
    NoDescriptor(DescriptorError),
    /// AMD-Vi: the write is outside the interrupt window (a DMA write, not modelled).
    NotInterrupt,
}

/// The end-to-end result of one interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FireOutcome {
    /// Set in the IRR of a vCPU.
    Delivered {
        /// The vCPU.
        vcpu: VcpuRef,
        /// The guest vector.
        vector: u8,
        /// Newly pending or coalesced.
        acceptance: Acceptance,
    },
    /// Posted into a descriptor.
    Posted(PostedDelivery),
    /// Blocked by the remapping unit.
    Faulted(RemapFault),
    /// Target aborted by the AMD-Vi IOMMU.
    Aborted(AmdAbort),
    /// Masked at the device: the pending bit is set.
    Masked,
    /// Went nowhere.
    Dropped(DropReason),
}

/// One entry of the delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryRecord {
    /// Where the write came from.
    pub source: Source,
    /// The requester id the IOMMU saw.
    pub requester_id: RequesterId,
    /// The message written (`None` when the device wrote nothing).
    pub message: Option<MsiMessage>,
    /// What came of it.
    pub outcome: FireOutcome,
}

/// Errors of the machine's interface (misuse by the caller, not interrupt outcomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MachineError {
    /// No such device.
    NoSuchDevice(DeviceId),
    /// A device storage operation failed.
    Device {
        /// The device.
        device: DeviceId,
        /// The failure.
        error: DeviceError,
    },
    /// A KVM operation failed.
    Kvm(KvmError),
    /// A physical CPU operation failed.
    Pcpu(PcpuError),
    /// A descriptor operation failed.
    Descriptor(DescriptorError),
    /// The vCPU owns no posted-interrupt descriptor.
    NoDescriptor(VcpuRef),
    /// The operation needs the AMD-Vi IOMMU ([`Machine::enable_amd_iommu`]).
    NoAmdIommu,
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoSuchDevice(d) => write!(f, "no {d}"),
            Self::Device { device, error } => write!(f, "{device}: {error}"),
            Self::Kvm(e) => write!(f, "{e}"),
            Self::Pcpu(e) => write!(f, "{e}"),
            Self::Descriptor(e) => write!(f, "{e}"),
            Self::NoDescriptor(v) => write!(f, "{v} owns no posted-interrupt descriptor"),
            Self::NoAmdIommu => f.write_str("the machine has no AMD-Vi IOMMU"),
        }
    }
}

impl std::error::Error for MachineError {}

/// The simulated platform.
#[derive(Debug)]
pub struct Machine {
    pcpus: Pcpus,
    iommu: RemappingUnit,
    amd: Option<AmdIommu>,
    vapic_pages: BTreeMap<VcpuRef, u64>,
    posted: PostedRegion,
    kvm: Kvm,
    vfio: Vfio,
    devices: BTreeMap<DeviceId, Device>,
    attached: BTreeMap<DeviceId, VmId>,
    next_device: u32,
    ext_dest_id: bool,
    log: VecDeque<DeliveryRecord>,
    log_dropped: u64,
}

impl Machine {
    /// A machine per `config`, with no VMs and no devices; remapping off, CFI clear.
    pub fn new(config: &MachineConfig) -> Result<Self, MachineError> {
        Ok(Self {
            pcpus: Pcpus::new(&config.pcpus, config.vectors_per_pcpu)
                .map_err(MachineError::Pcpu)?,
            iommu: RemappingUnit::new(config.irta),
            amd: None,
            vapic_pages: BTreeMap::new(),
            posted: PostedRegion::new(config.posted_base, config.posted_descriptors)
                .map_err(MachineError::Descriptor)?,
            kvm: Kvm::new(),
            vfio: Vfio::new(),
            devices: BTreeMap::new(),
            attached: BTreeMap::new(),
            next_device: 0,
            ext_dest_id: config.ext_dest_id,
            log: VecDeque::new(),
            log_dropped: 0,
        })
    }

    // ---- components ----

    /// The physical CPUs.
    pub const fn pcpus(&self) -> &Pcpus {
        &self.pcpus
    }

    /// The physical CPUs, mutable.
    pub fn pcpus_mut(&mut self) -> &mut Pcpus {
        &mut self.pcpus
    }

    /// The remapping unit.
    pub const fn iommu(&self) -> &RemappingUnit {
        &self.iommu
    }

    /// The remapping unit, mutable (IRTE writes, invalidations, IRE, CFI).
    pub fn iommu_mut(&mut self) -> &mut RemappingUnit {
        &mut self.iommu
    }

    /// The posted-interrupt descriptors.
    pub const fn posted(&self) -> &PostedRegion {
        &self.posted
    }

    /// The posted-interrupt descriptors, mutable.
    pub fn posted_mut(&mut self) -> &mut PostedRegion {
        &mut self.posted
    }

    /// The KVM model (VMs, vCPUs, guest memory, routes, irqfds).
    pub const fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The KVM model, mutable.
    pub fn kvm_mut(&mut self) -> &mut Kvm {
        &mut self.kvm
    }

    /// The VFIO model.
    pub const fn vfio(&self) -> &Vfio {
        &self.vfio
    }

    /// The VFIO model, mutable (failure injection; use the `*_host_irq*` methods to start, stop
    /// and move IRQs, which need the CPUs' vector spaces too).
    pub fn vfio_mut(&mut self) -> &mut Vfio {
        &mut self.vfio
    }

    /// Starts a host IRQ on `pcpu` ([`Vfio::start_irq`]).
    pub fn start_host_irq(
        &mut self,
        key: HostIrqKey,
        pcpu: HostApicId,
        eventfd: EventFdId,
    ) -> Result<HostIrq, VfioError> {
        self.vfio.start_irq(&mut self.pcpus, key, pcpu, eventfd)
    }

    /// Stops a host IRQ ([`Vfio::stop_irq`]).
    pub fn stop_host_irq(&mut self, key: HostIrqKey) -> Result<HostIrq, VfioError> {
        self.vfio.stop_irq(&mut self.pcpus, key)
    }

    /// Moves a host IRQ to `pcpu` ([`Vfio::set_affinity`]).
    pub fn set_host_irq_affinity(
        &mut self,
        key: HostIrqKey,
        pcpu: HostApicId,
    ) -> Result<HostIrq, VfioError> {
        self.vfio.set_affinity(&mut self.pcpus, key, pcpu)
    }

    // ---- VMs ----

    /// Creates VM `id` ([`Kvm::create_vm`]); every vCPU must run on an existing physical CPU.
    pub fn create_vm(&mut self, id: VmId, config: &VmConfig) -> Result<(), MachineError> {
        for &(_, pcpu) in &config.vcpus {
            if !self.pcpus.contains(pcpu) {
                return Err(MachineError::Pcpu(PcpuError::NoSuchPcpu(pcpu)));
            }
        }
        self.kvm.create_vm(id, config).map_err(MachineError::Kvm)
    }

    /// Guest memory of VM `vm`.
    pub fn guest_memory(&self, vm: VmId) -> Result<&GuestMemoryMmap, MachineError> {
        Ok(self.kvm.vm(vm).map_err(MachineError::Kvm)?.memory())
    }

    /// Sets up a posted-interrupt descriptor for `vcpu`, notifying the physical CPU it runs on
    /// with vector `nv`; NDST is encoded in the remapping unit's APIC mode. Returns its address.
    pub fn setup_posted_descriptor(&mut self, vcpu: VcpuRef, nv: u8) -> Result<u64, MachineError> {
        let pcpu = self.kvm.vcpu(vcpu).map_err(MachineError::Kvm)?.pcpu();
        self.posted
            .setup(vcpu, nv, pcpu, self.iommu.apic_mode())
            .map_err(MachineError::Descriptor)
    }

    /// Moves `vcpu` to physical CPU `pcpu`, updating its posted descriptor's NDST if it has one.
    pub fn migrate_vcpu(&mut self, vcpu: VcpuRef, pcpu: HostApicId) -> Result<(), MachineError> {
        if !self.pcpus.contains(pcpu) {
            return Err(MachineError::Pcpu(PcpuError::NoSuchPcpu(pcpu)));
        }
        self.kvm.vcpu(vcpu).map_err(MachineError::Kvm)?;
        if let Some(pda) = self.posted.pda_of(vcpu) {
            self.posted
                .set_ndst(pda, pcpu, self.iommu.apic_mode())
                .map_err(MachineError::Descriptor)?;
        }
        self.kvm
            .set_vcpu_pcpu(vcpu, pcpu)
            .map_err(MachineError::Kvm)
    }

    /// Routes every interrupt write through an AMD-Vi IOMMU with entries of `width` from now
    /// on (the VT-d unit no longer sees interrupts). Device table entries are set through
    /// [`Machine::amd_iommu_mut`].
    pub fn enable_amd_iommu(&mut self, width: IrteWidth) {
        self.amd = Some(AmdIommu::new(width));
    }

    /// The AMD-Vi IOMMU, if enabled.
    pub const fn amd_iommu(&self) -> Option<&AmdIommu> {
        self.amd.as_ref()
    }

    /// The AMD-Vi IOMMU, mutable (DTEs, IRTE writes, invalidations).
    pub fn amd_iommu_mut(&mut self) -> Option<&mut AmdIommu> {
        self.amd.as_mut()
    }

    /// Gives `vcpu` a vAPIC backing page (4 KiB aligned, `0x3000_0000` + 4 KiB per page) for
    /// AMD-Vi guest mode; returns its address (the same one again if it has one).
    pub fn setup_vapic_page(&mut self, vcpu: VcpuRef) -> Result<u64, MachineError> {
        self.kvm.vcpu(vcpu).map_err(MachineError::Kvm)?;
        if self.amd.is_none() {
            return Err(MachineError::NoAmdIommu);
        }
        if let Some(&p) = self.vapic_pages.get(&vcpu) {
            return Ok(p);
        }
        let n = self.vapic_pages.len() as u64;
        let page = VAPIC_PAGE_BASE + n * 0x1000;
        self.vapic_pages.insert(vcpu, page);
        Ok(page)
    }

    fn vapic_owner(&self, page: u64) -> Option<VcpuRef> {
        self.vapic_pages
            .iter()
            .find(|&(_, &p)| p == page)
            .map(|(&v, _)| v)
    }

    /// The vCPU processes its posted interrupts: ON cleared, PIR moved into its local APIC's IRR
    /// (AMD-Vi: the vAPIC backing page's IRR). Returns the vectors moved, ascending (vectors
    /// below 16 are dropped by the APIC).
    pub fn sync_posted(&mut self, vcpu: VcpuRef) -> Result<Vec<u8>, MachineError> {
        self.kvm.vcpu(vcpu).map_err(MachineError::Kvm)?;
        if let (Some(amd), Some(&page)) = (self.amd.as_mut(), self.vapic_pages.get(&vcpu)) {
            let vectors = amd.vapic_page_mut(page).take_pending();
            for &v in &vectors {
                let _ = self.kvm.inject(vcpu, v);
            }
            return Ok(vectors);
        }
        let pda = self
            .posted
            .pda_of(vcpu)
            .ok_or(MachineError::NoDescriptor(vcpu))?;
        let pir = self
            .posted
            .take_pir(pda)
            .map_err(MachineError::Descriptor)?;
        let vectors: Vec<u8> = pir.vectors().collect();
        for &v in &vectors {
            // The vCPU exists (checked above); an illegal vector is counted by the APIC.
            let _ = self.kvm.inject(vcpu, v);
        }
        Ok(vectors)
    }

    /// Every vCPU whose descriptor has ON set processes it ([`Machine::sync_posted`]); returns
    /// the vectors moved per vCPU.
    pub fn sync_all_posted(&mut self) -> Vec<(VcpuRef, Vec<u8>)> {
        let due: Vec<VcpuRef> = self
            .posted
            .owners()
            .filter(|&(_, pda)| self.posted.descriptor(pda).is_ok_and(|d| d.on()))
            .map(|(o, _)| o)
            .collect();
        due.into_iter()
            .filter_map(|v| self.sync_posted(v).ok().map(|vectors| (v, vectors)))
            .collect()
    }

    // ---- devices ----

    /// Adds a device; ids are handed out 0, 1, 2, …
    pub fn add_device(&mut self, config: &DeviceConfig) -> Result<DeviceId, MachineError> {
        let id = DeviceId(self.next_device);
        let dev =
            Device::new(config).map_err(|error| MachineError::Device { device: id, error })?;
        self.next_device += 1;
        self.devices.insert(id, dev);
        Ok(id)
    }

    /// Attaches `device` to the guest memory of `vm` for its DMA (system-memory IMS contexts), or
    /// detaches it with `None`.
    pub fn attach_device(
        &mut self,
        device: DeviceId,
        vm: Option<VmId>,
    ) -> Result<(), MachineError> {
        self.device(device)?;
        match vm {
            Some(vm) => {
                self.kvm.vm(vm).map_err(MachineError::Kvm)?;
                self.attached.insert(device, vm);
            }
            None => {
                self.attached.remove(&device);
            }
        }
        Ok(())
    }

    /// The VM whose memory `device` is attached to.
    pub fn device_vm(&self, device: DeviceId) -> Option<VmId> {
        self.attached.get(&device).copied()
    }

    /// A device.
    pub fn device(&self, device: DeviceId) -> Result<&Device, MachineError> {
        self.devices
            .get(&device)
            .ok_or(MachineError::NoSuchDevice(device))
    }

    /// The devices, by id.
    pub fn devices(&self) -> impl Iterator<Item = (DeviceId, &Device)> {
        self.devices.iter().map(|(&id, d)| (id, d))
    }

    fn dev_mem(
        &mut self,
        device: DeviceId,
    ) -> Result<(&mut Device, Option<&GuestMemoryMmap>), MachineError> {
        let dev = self
            .devices
            .get_mut(&device)
            .ok_or(MachineError::NoSuchDevice(device))?;
        let mem = self
            .attached
            .get(&device)
            .and_then(|vm| self.kvm.vm(*vm).ok())
            .map(|vm| vm.memory());
        Ok((dev, mem))
    }

    fn fire_released(&mut self, device: DeviceId, released: Vec<StorageSlot>) -> Vec<FireOutcome> {
        released
            .into_iter()
            .filter_map(|slot| self.fire(device, slot).ok())
            .collect()
    }

    /// Writes raw bytes into a storage region of `device` ([`Device::write_storage`]); sources
    /// the write unmasked while pending fire at once, and their outcomes are returned.
    pub fn write_storage(
        &mut self,
        device: DeviceId,
        region: StorageRegion,
        offset: u64,
        bytes: &[u8],
    ) -> Result<Vec<FireOutcome>, MachineError> {
        let (dev, mem) = self.dev_mem(device)?;
        let released = dev
            .write_storage(region, offset, bytes, mem)
            .map_err(|error| MachineError::Device { device, error })?;
        Ok(self.fire_released(device, released))
    }

    /// Reads raw bytes of a storage region of `device`.
    pub fn read_storage(
        &mut self,
        device: DeviceId,
        region: StorageRegion,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MachineError> {
        let (dev, mem) = self.dev_mem(device)?;
        dev.read_storage(region, offset, buf, mem)
            .map_err(|error| MachineError::Device { device, error })
    }

    /// Stores `msg` in the storage of `slot` ([`Device::write_message`]).
    pub fn write_message(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        msg: MsiMessage,
    ) -> Result<(), MachineError> {
        let (dev, mem) = self.dev_mem(device)?;
        dev.write_message(slot, msg, mem)
            .map_err(|error| MachineError::Device { device, error })
    }

    /// Masks or unmasks source `slot` ([`Device::set_masked`]); a released pending interrupt
    /// fires at once and its outcome is returned.
    pub fn set_masked(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
        masked: bool,
    ) -> Result<Vec<FireOutcome>, MachineError> {
        let (dev, mem) = self.dev_mem(device)?;
        let released = dev
            .set_masked(slot, masked, mem)
            .map_err(|error| MachineError::Device { device, error })?;
        Ok(self.fire_released(device, released))
    }

    /// Writes MSI-X enable and function mask ([`Device::set_msix_control`]); released pending
    /// interrupts fire at once.
    pub fn set_msix_control(
        &mut self,
        device: DeviceId,
        enabled: bool,
        function_mask: bool,
    ) -> Result<Vec<FireOutcome>, MachineError> {
        let released = self
            .devices
            .get_mut(&device)
            .ok_or(MachineError::NoSuchDevice(device))?
            .set_msix_control(enabled, function_mask)
            .map_err(|error| MachineError::Device { device, error })?;
        Ok(self.fire_released(device, released))
    }

    /// Enables or disables MSI with 2^`mme` vectors ([`Device::set_msi_control`]).
    pub fn set_msi_control(
        &mut self,
        device: DeviceId,
        enabled: bool,
        mme: u8,
    ) -> Result<(), MachineError> {
        self.devices
            .get_mut(&device)
            .ok_or(MachineError::NoSuchDevice(device))?
            .set_msi_control(enabled, mme)
            .map_err(|error| MachineError::Device { device, error })
    }

    /// Sets the context address of IMS queue `queue` ([`Device::set_ims_queue_context`]).
    pub fn set_ims_queue_context(
        &mut self,
        device: DeviceId,
        queue: u32,
        gpa: u64,
    ) -> Result<(), MachineError> {
        self.devices
            .get_mut(&device)
            .ok_or(MachineError::NoSuchDevice(device))?
            .set_ims_queue_context(queue, gpa)
            .map_err(|error| MachineError::Device { device, error })
    }

    /// The message source `slot` of `device` would send now ([`Device::stored_message`]).
    pub fn stored_message(
        &self,
        device: DeviceId,
        slot: StorageSlot,
    ) -> Result<MsiMessage, MachineError> {
        let dev = self.device(device)?;
        let mem = self
            .attached
            .get(&device)
            .and_then(|vm| self.kvm.vm(*vm).ok())
            .map(|vm| vm.memory());
        dev.stored_message(slot, mem)
            .map_err(|error| MachineError::Device { device, error })
    }

    // ---- interrupts ----

    /// `device` raises source `slot`; runs the whole path (see the module documentation).
    /// Errors only for a missing device or a source the device does not have.
    pub fn fire(
        &mut self,
        device: DeviceId,
        slot: StorageSlot,
    ) -> Result<FireOutcome, MachineError> {
        let (dev, mem) = self.dev_mem(device)?;
        let requester_id = dev.source_id();
        let source = Source::Device { device, slot };
        let action = match dev.fire(slot, mem) {
            Ok(a) => a,
            Err(DeviceError::NoDmaMemory) => {
                return Ok(self.record(
                    source,
                    requester_id,
                    None,
                    FireOutcome::Dropped(DropReason::NoDmaMemory),
                ));
            }
            Err(error) => return Err(MachineError::Device { device, error }),
        };
        let outcome = match action {
            FireAction::Send(msg) => {
                let outcome = self.deliver(requester_id, msg);
                return Ok(self.record(source, requester_id, Some(msg), outcome));
            }
            FireAction::Masked => FireOutcome::Masked,
            FireAction::Disabled => FireOutcome::Dropped(DropReason::Disabled),
            FireAction::DmaFault { gpa } => FireOutcome::Dropped(DropReason::DmaFault { gpa }),
        };
        Ok(self.record(source, requester_id, None, outcome))
    }

    /// An arbitrary interrupt write (forged or otherwise) from `requester_id`; runs the path
    /// from the remapping unit on.
    pub fn inject_write(&mut self, requester_id: RequesterId, msg: MsiMessage) -> FireOutcome {
        let outcome = self.deliver(requester_id, msg);
        self.record(Source::Injected, requester_id, Some(msg), outcome)
    }

    fn record(
        &mut self,
        source: Source,
        requester_id: RequesterId,
        message: Option<MsiMessage>,
        outcome: FireOutcome,
    ) -> FireOutcome {
        if self.log.len() == DELIVERY_LOG_CAPACITY {
            self.log.pop_front();
            self.log_dropped += 1;
        }
        self.log.push_back(DeliveryRecord {
            source,
            requester_id,
            message,
            outcome,
        });
        outcome
    }

    fn deliver_amd(&mut self, requester_id: RequesterId, msg: MsiMessage) -> Option<FireOutcome> {
        let outcome = self.amd.as_mut()?.remap(requester_id, msg);
        Some(match outcome {
            AmdOutcome::Abort(a) => FireOutcome::Aborted(a),
            AmdOutcome::NotInterrupt => FireOutcome::Dropped(DropReason::NotInterrupt),
            AmdOutcome::Remapped(r) => {
                if r.dest_mode_logical {
                    return Some(FireOutcome::Dropped(DropReason::UnsupportedDelivery {
                        delivery_mode: u8::from(r.arbitrated),
                        logical: true,
                    }));
                }
                self.host_vector(r.dest, r.vector)
            }
            AmdOutcome::Guest(g) => {
                let notification = match g.doorbell {
                    Some(pcpu) => match self.pcpus.receive(pcpu, POSTED_INTR_VECTOR) {
                        Ok(()) => Notification::Doorbell { pcpu },
                        Err(_) => Notification::NoSuchPcpu(pcpu),
                    },
                    None => Notification::GaLog {
                        tag: g.ga_tag,
                        logged: g.ga_logged,
                    },
                };
                FireOutcome::Posted(PostedDelivery {
                    index: g.index,
                    pda: g.backing_page,
                    vector: g.vector,
                    urgent: false,
                    owner: self.vapic_owner(g.backing_page),
                    notification,
                })
            }
            AmdOutcome::PassThrough(m) => self.pass_through(m),
        })
    }

    fn deliver(&mut self, requester_id: RequesterId, msg: MsiMessage) -> FireOutcome {
        if let Some(o) = self.deliver_amd(requester_id, msg) {
            return o;
        }
        match self.iommu.remap(requester_id, msg) {
            RemapOutcome::Fault(f) => FireOutcome::Faulted(f),
            RemapOutcome::Remapped(r) => {
                if r.dest_mode_logical || r.delivery_mode > 1 {
                    return FireOutcome::Dropped(DropReason::UnsupportedDelivery {
                        delivery_mode: r.delivery_mode,
                        logical: r.dest_mode_logical,
                    });
                }
                self.host_vector(r.dest, r.vector)
            }
            RemapOutcome::Posted(p) => {
                let mode = self.iommu.apic_mode();
                let result = match self.posted.post(p.pda, p.vector, p.urgent, mode) {
                    Ok(r) => r,
                    Err(e) => return FireOutcome::Dropped(DropReason::NoDescriptor(e)),
                };
                let notification = match result {
                    PostResult::Notify { ndst, nv } => match self.pcpus.receive(ndst, nv) {
                        Ok(()) => Notification::Sent {
                            pcpu: ndst,
                            vector: nv,
                        },
                        Err(_) => Notification::NoSuchPcpu(ndst),
                    },
                    PostResult::AlreadyOutstanding => Notification::Outstanding,
                    PostResult::Suppressed => Notification::Suppressed,
                };
                FireOutcome::Posted(PostedDelivery {
                    index: p.index,
                    pda: p.pda,
                    vector: p.vector,
                    urgent: p.urgent,
                    owner: self.posted.owner(p.pda).ok().flatten(),
                    notification,
                })
            }
            RemapOutcome::PassThrough(m) => self.pass_through(m),
        }
    }

    /// A write passed through untranslated: compatibility format to the CPU it names.
    fn pass_through(&mut self, m: MsiMessage) -> FireOutcome {
        let c = match CompatMsi::decode(m, self.ext_dest_id) {
            Ok(c) => c,
            Err(e) => return FireOutcome::Dropped(DropReason::BadCompatMessage(e)),
        };
        if c.dest_mode_logical
            || !matches!(
                c.delivery_mode,
                DeliveryMode::Fixed | DeliveryMode::LowestPriority
            )
        {
            return FireOutcome::Dropped(DropReason::UnsupportedDelivery {
                delivery_mode: c.delivery_mode.bits(),
                logical: c.dest_mode_logical,
            });
        }
        self.host_vector(HostApicId(c.dest_id), c.vector)
    }

    /// A host vector arrives at a physical CPU: host IRQ → eventfd → irqfd → route → LAPIC.
    fn host_vector(&mut self, pcpu: HostApicId, vector: u8) -> FireOutcome {
        if self.pcpus.receive(pcpu, vector).is_err() {
            return FireOutcome::Dropped(DropReason::NoSuchPcpu(pcpu));
        }
        let Some(irq) = self.vfio.handle(pcpu, vector) else {
            return FireOutcome::Dropped(DropReason::NoHostIrq { pcpu, vector });
        };
        match self.kvm.signal(irq.eventfd) {
            Ok(inj) => FireOutcome::Delivered {
                vcpu: inj.vcpu,
                vector: inj.vector,
                acceptance: inj.acceptance,
            },
            Err(e) => FireOutcome::Dropped(DropReason::Inject(e)),
        }
    }

    // ---- log ----

    /// The delivery log, oldest first.
    pub fn log(&self) -> impl Iterator<Item = &DeliveryRecord> {
        self.log.iter()
    }

    /// Removes and returns the delivery log.
    pub fn take_log(&mut self) -> Vec<DeliveryRecord> {
        self.log.drain(..).collect()
    }

    /// Records dropped from the full delivery log.
    pub const fn log_dropped(&self) -> u64 {
        self.log_dropped
    }

    /// Interrupts in the log delivered (remapped or posted) to a vCPU of `vm`.
    pub fn delivered_to_vm(&self, vm: VmId) -> usize {
        self.log
            .iter()
            .filter(|r| match r.outcome {
                FireOutcome::Delivered { vcpu, .. } => vcpu.vm == vm,
                FireOutcome::Posted(p) => p.owner.is_some_and(|o| o.vm == vm),
                _ => false,
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MsiConfig;
    use crate::ids::{Gsi, GuestApicId};
    use crate::iommu::RemapFault;
    use crate::kvm::GsiRoute;
    use vir_abi::hw::vtd::{Irte, PostedIrte, RemappableMsi, RemappedIrte, Svt, VtdFaultReason};

    const VM: VmId = VmId(1);
    const RID: RequesterId = RequesterId(0x0300);
    const V0: VcpuRef = VcpuRef::new(VM, GuestApicId(0));

    fn machine() -> (Machine, DeviceId) {
        let mut m = Machine::new(&MachineConfig::new(2)).unwrap();
        m.create_vm(
            VM,
            &VmConfig {
                memory: vec![(0, 0x10000)],
                vcpus: vec![(GuestApicId(0), HostApicId(1))],
            },
        )
        .unwrap();
        let d = m
            .add_device(
                &DeviceConfig::new(RID)
                    .with_msix(4)
                    .with_ims_system(2)
                    .with_msi(MsiConfig {
                        vectors_log2: 0,
                        per_vector_masking: false,
                        address_64bit: false,
                    }),
            )
            .unwrap();
        m.iommu_mut().enable_remapping(true);
        m.set_msix_control(d, true, false).unwrap();
        m.set_masked(d, StorageSlot::msix(0), false).unwrap();
        (m, d)
    }

    fn remapped(vector: u8, dest: u32) -> Irte {
        Irte::Remapped(RemappedIrte {
            present: true,
            fpd: false,
            dest_mode_logical: false,
            redirection_hint: false,
            trigger_level: false,
            delivery_mode: 0,
            avail: 0,
            vector,
            dest,
            sid: RID.0,
            sq: 0,
            svt: Svt::VerifySid,
        })
    }

    fn program(m: &mut Machine, index: u16, e: Irte) -> MsiMessage {
        m.iommu_mut().write_entry(index, &e).unwrap();
        m.iommu_mut().invalidate_entry(index);
        RemappableMsi {
            handle: index,
            shv: true,
            subhandle: 0,
        }
        .encode()
    }

    #[test]
    fn drop_reasons_along_the_remapped_path() {
        let (mut m, d) = machine();
        let s = StorageSlot::msix(0);
        // Host vector with no host IRQ.
        let msg = program(&mut m, 1, remapped(0x20, 1));
        m.write_message(d, s, msg).unwrap();
        assert_eq!(
            m.fire(d, s),
            Ok(FireOutcome::Dropped(DropReason::NoHostIrq {
                pcpu: HostApicId(1),
                vector: 0x20
            }))
        );
        // No such physical CPU.
        program(&mut m, 1, remapped(0x20, 7));
        assert_eq!(
            m.fire(d, s),
            Ok(FireOutcome::Dropped(DropReason::NoSuchPcpu(HostApicId(7))))
        );
        // Host IRQ but no irqfd.
        let key = HostIrqKey {
            requester_id: RID,
            slot: s,
        };
        let irq = m.start_host_irq(key, HostApicId(1), EventFdId(3)).unwrap();
        program(&mut m, 1, remapped(irq.vector, 1));
        assert_eq!(
            m.fire(d, s),
            Ok(FireOutcome::Dropped(DropReason::Inject(
                InjectError::NoIrqfd(EventFdId(3))
            )))
        );
        m.kvm_mut().assign_irqfd(VM, EventFdId(3), Gsi(1)).unwrap();
        m.kvm_mut()
            .set_route(
                VM,
                Gsi(1),
                GsiRoute {
                    dest: GuestApicId(0),
                    vector: 0x55,
                },
            )
            .unwrap();
        assert_eq!(
            m.fire(d, s),
            Ok(FireOutcome::Delivered {
                vcpu: V0,
                vector: 0x55,
                acceptance: Acceptance::Pending
            })
        );
        // Logical destination mode / NMI delivery are not modelled.
        let mut e = remapped(irq.vector, 1);
        if let Irte::Remapped(r) = &mut e {
            r.delivery_mode = 4;
        }
        program(&mut m, 1, e);
        assert_eq!(
            m.fire(d, s),
            Ok(FireOutcome::Dropped(DropReason::UnsupportedDelivery {
                delivery_mode: 4,
                logical: false
            }))
        );
        assert_eq!(m.log().count(), 5);
        assert_eq!(m.delivered_to_vm(VM), 1);
        assert_eq!(
            m.pcpus().get(HostApicId(1)).unwrap().received(irq.vector),
            3
        );
    }

    #[test]
    fn drop_reasons_at_the_device_and_descriptor() {
        let (mut m, d) = machine();
        // MSI disabled.
        assert_eq!(
            m.fire(d, StorageSlot::msi(0)),
            Ok(FireOutcome::Dropped(DropReason::Disabled))
        );
        // System-memory IMS without attached guest memory.
        assert_eq!(
            m.fire(d, StorageSlot::ims_system(0)),
            Ok(FireOutcome::Dropped(DropReason::NoDmaMemory))
        );
        m.attach_device(d, Some(VM)).unwrap();
        assert_eq!(m.device_vm(d), Some(VM));
        // Context outside guest memory.
        m.set_ims_queue_context(d, 0, 0x10_0000).unwrap();
        assert_eq!(
            m.fire(d, StorageSlot::ims_system(0)),
            Ok(FireOutcome::Dropped(DropReason::DmaFault {
                gpa: 0x10_0000
            }))
        );
        // A posted IRTE naming no descriptor.
        let msg = program(
            &mut m,
            2,
            Irte::Posted(PostedIrte {
                present: true,
                fpd: false,
                avail: 0,
                urgent: false,
                vector: 0x40,
                pda: 0x40,
                sid: RID.0,
                sq: 0,
                svt: Svt::VerifySid,
            }),
        );
        assert_eq!(
            m.inject_write(RID, msg),
            FireOutcome::Dropped(DropReason::NoDescriptor(DescriptorError::OutsideRegion(
                0x40
            )))
        );
        // Storage/slot misuse is an error, not an outcome.
        assert_eq!(
            m.fire(d, StorageSlot::ims_device(0)),
            Err(MachineError::Device {
                device: d,
                error: DeviceError::NoStorage(crate::ids::StorageKind::ImsDevice)
            })
        );
        assert_eq!(
            m.fire(DeviceId(9), StorageSlot::msix(0)),
            Err(MachineError::NoSuchDevice(DeviceId(9)))
        );
        assert_eq!(m.sync_posted(V0), Err(MachineError::NoDescriptor(V0)));
    }

    #[test]
    fn pass_through_decodes_compat_format() {
        let (mut m, _) = machine();
        m.iommu_mut().enable_remapping(false);
        // Reserved address bits: not a valid compatibility-format interrupt.
        let bad = MsiMessage::new(0xFEE0_1001, 0, 0x30);
        assert_eq!(
            m.inject_write(RID, bad),
            FireOutcome::Dropped(DropReason::BadCompatMessage(MsiError::AddressReservedBits(
                1
            )))
        );
        // Extended destination id without the feature.
        let ext = MsiMessage::new(0xFEE0_0020, 0, 0x30);
        assert_eq!(
            m.inject_write(RID, ext),
            FireOutcome::Dropped(DropReason::BadCompatMessage(MsiError::ExtDestIdNotEnabled(
                1
            )))
        );
        // Logical destination.
        let logical = MsiMessage::new(0xFEE0_1004, 0, 0x30);
        assert_eq!(
            m.inject_write(RID, logical),
            FireOutcome::Dropped(DropReason::UnsupportedDelivery {
                delivery_mode: 0,
                logical: true
            })
        );
        // Physical, fixed, to CPU 1 vector 0x30: reaches the CPU, no host IRQ there.
        let ok = MsiMessage::new(0xFEE0_1000, 0, 0x30);
        assert_eq!(
            m.inject_write(RID, ok),
            FireOutcome::Dropped(DropReason::NoHostIrq {
                pcpu: HostApicId(1),
                vector: 0x30
            })
        );
        // Remapping back on with CFI clear: blocked, recorded.
        m.iommu_mut().enable_remapping(true);
        assert_eq!(
            m.inject_write(RID, ok),
            FireOutcome::Faulted(RemapFault {
                reason: VtdFaultReason::COMPAT_BLOCKED,
                index: None,
                recorded: true
            })
        );
        let log = m.take_log();
        assert_eq!(log.len(), 5);
        assert!(
            log.iter()
                .all(|r| r.source == Source::Injected && r.requester_id == RID)
        );
        assert_eq!(log[4].message, Some(ok));
    }

    #[test]
    fn machine_config_errors() {
        let mut c = MachineConfig::new(1);
        c.pcpus.push(HostApicId(0));
        assert_eq!(
            Machine::new(&c).err(),
            Some(MachineError::Pcpu(PcpuError::DuplicateApicId(HostApicId(
                0
            ))))
        );
        let mut c = MachineConfig::new(1);
        c.posted_base = 0x20;
        assert_eq!(
            Machine::new(&c).err(),
            Some(MachineError::Descriptor(DescriptorError::MisalignedBase(
                0x20
            )))
        );
        let mut m = Machine::new(&MachineConfig::new(1)).unwrap();
        assert_eq!(
            m.create_vm(
                VM,
                &VmConfig {
                    memory: vec![(0, 0x1000)],
                    vcpus: vec![(GuestApicId(0), HostApicId(5))],
                }
            ),
            Err(MachineError::Pcpu(PcpuError::NoSuchPcpu(HostApicId(5))))
        );
        assert_eq!(
            m.attach_device(DeviceId(0), Some(VM)),
            Err(MachineError::NoSuchDevice(DeviceId(0)))
        );
    }
}
